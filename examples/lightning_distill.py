"""Knowledge distillation in PyTorch Lightning with kldiv's fused loss.

A ``LightningModule`` holds a tiny ``transformers`` Llama student and a frozen teacher (both built from
configs, nothing downloaded); its ``training_step`` is :func:`kldiv.transformers.distillation_loss` —
``T²·KL(teacher‖student)`` mixed with the student's cross-entropy, from the last hidden states, without
either model's ``[B, T, V]`` logits. The teacher is first trained briefly on a generated corpus
(counting sequences ``x_{i+1} = (x_i + s) mod V`` whose stride ``s`` must be read from the context),
then ``lightning.Trainer`` distils the student; the example checks that the distillation loss and the
student's held-out cross-entropy both fall.

    python examples/lightning_distill.py
"""

from __future__ import annotations

import lightning
import torch
import transformers

from kldiv.transformers import distillation_loss

VOCAB, SEQ, ROWS = 64, 16, 512


def llama(hidden: int, seed: int) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def corpus(rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (rows, 1), generator=generator)
    stride = torch.tensor([1, 2, 3, 5])[torch.randint(0, 4, (rows, 1), generator=generator)]
    return (start + stride * torch.arange(SEQ)) % VOCAB


class Distillation(lightning.LightningModule):
    """The student, its frozen teacher and the loss; Lightning runs the loop."""

    def __init__(self, teacher: torch.nn.Module, temperature: float = 2.0, alpha: float = 0.3) -> None:
        super().__init__()
        self.student = llama(32, seed=1)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        (ids,) = batch
        loss = distillation_loss(
            self.student,
            self.teacher,
            {"input_ids": ids, "labels": ids},
            temperature=self.temperature,
            scale_by_temperature_squared=True,
            alpha=self.alpha,
        )
        self.log("distillation_loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.student.parameters(), lr=3e-3)


def cross_entropy(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.eval()(input_ids=ids, labels=ids).loss)


def main() -> None:
    train, held_out = corpus(ROWS, seed=0), corpus(64, seed=1)
    teacher = llama(64, seed=0)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for step in range(150):
        ids = train[(step * 16) % ROWS : (step * 16) % ROWS + 16]
        teacher(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    module = Distillation(teacher)
    before = cross_entropy(module.student, held_out)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train), batch_size=16, shuffle=True)
    trainer = lightning.Trainer(
        max_steps=60,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    losses = []

    class Record(lightning.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(module, loader)
    after = cross_entropy(module.student, held_out)
    teacher_ce = cross_entropy(teacher, held_out)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"distillation loss: first 5 steps {first:.3f}, last 5 steps {last:.3f} ({len(losses)} steps)")
    print(f"held-out cross-entropy: teacher {teacher_ce:.3f}, student {before:.3f} → {after:.3f}")
    assert last < 0.7 * first, losses
    assert after < before - 0.5, (before, after)


if __name__ == "__main__":
    main()
