"""``DistillationTrainer`` (a ``transformers.Trainer``) and the TRL GKD hook, on tiny models built from
configs and a corpus generated here: gradient accumulation is exact, a 50-step run lowers the
distillation loss and the student's cross-entropy, and the GKD hook equals TRL's own ``compute_loss``."""

from __future__ import annotations

import os
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kldiv.transformers import DistillationTrainer  # noqa: E402

VOCAB, SEQ = 64, 16


def tiny(seed: int, hidden: int = 48) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def corpus(rows: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Counting sequences ``x_{i+1} = (x_i + s) mod 64`` with a stride ``s ∈ {1, 2, 3, 5}`` read from
    the context; some rows right-padded (label -100, attention 0)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        start = int(torch.randint(0, VOCAB, (1,), generator=generator))
        stride = (1, 2, 3, 5)[int(torch.randint(0, 4, (1,), generator=generator))]
        ids = (start + stride * torch.arange(SEQ)) % VOCAB
        mask = torch.ones(SEQ, dtype=torch.long)
        pad = int(torch.randint(0, 4, (1,), generator=generator))
        if pad:
            mask[-pad:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def arguments(tmp_path, **overrides) -> transformers.TrainingArguments:
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 5,
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        "max_grad_norm": 1e9,
    }
    settings.update(overrides)
    return transformers.TrainingArguments(**settings)


def cross_entropy(model, rows) -> float:
    data = transformers.default_data_collator(rows)
    with torch.no_grad():
        return float(model.eval()(**data).loss)


@pytest.mark.parametrize(("alpha", "with_labels"), [(0.0, True), (0.5, True), (0.0, False)])
def test_gradient_accumulation_equals_one_big_batch(tmp_path, alpha, with_labels):
    """One SGD step of batch 4 equals batch 2 × 2 accumulation steps, in float64 (uneven token counts
    between the micro-batches: a mean of per-batch means would differ by ~30 %)."""
    rows = corpus(4, seed=1)
    rows[0]["labels"][: SEQ - 3] = -100  # few tokens in the first micro-batch
    if not with_labels:  # the labels come from input_ids and the attention mask
        rows[0]["attention_mask"][3:] = 0
        rows = [{k: v for k, v in row.items() if k != "labels"} for row in rows]
    teacher = tiny(7).double()
    updated = []
    for batch_size, steps in ((4, 1), (2, 2)):
        student = tiny(3).double()
        before = {n: p.detach().clone() for n, p in student.named_parameters()}
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            alpha=alpha,
            temperature=1.5,
            args=arguments(
                tmp_path,
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=steps,
                max_steps=1,
                optim="sgd",
                learning_rate=0.5,
            ),
            train_dataset=rows,
            data_collator=transformers.default_data_collator,
        )
        trainer.train()
        updated.append({n: p.detach() - before[n] for n, p in student.named_parameters()})
    for name, delta in updated[0].items():
        error = float((updated[1][name] - delta).norm() / delta.norm().clamp(min=1e-30))
        assert error <= 1e-10, (name, error)


def test_fifty_steps_lower_the_distillation_loss_and_the_students_cross_entropy(tmp_path):
    train, held_out = corpus(512, seed=2), corpus(64, seed=3)
    teacher = tiny(11, hidden=64)
    transformers.Trainer(
        model=teacher,
        args=arguments(tmp_path / "teacher", max_steps=150),
        train_dataset=train,
        data_collator=transformers.default_data_collator,
    ).train()
    teacher_ce = cross_entropy(teacher, held_out)
    student = tiny(12)
    student_ce_before = cross_entropy(student, held_out)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        temperature=1.0,
        args=arguments(tmp_path / "student", max_steps=50, eval_strategy="no"),
        train_dataset=train,
        eval_dataset=held_out,
        data_collator=transformers.default_data_collator,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0], losses
    student_ce_after = cross_entropy(student, held_out)
    assert student_ce_after < student_ce_before - 1.0, (student_ce_before, student_ce_after, teacher_ce)
    assert "eval_loss" in trainer.evaluate()  # Trainer's evaluation runs the same loss


def test_stored_top_k_columns_reach_the_loss(tmp_path):
    """With ``teacher_model=None`` the dataset's top-k columns survive ``remove_unused_columns`` and feed
    the loss (a datasets.Dataset, as users store them)."""
    datasets = pytest.importorskip("datasets")
    from kldiv.fused.torch import topk_teacher

    rows = corpus(8, seed=4)
    teacher = tiny(5)
    data = transformers.default_data_collator(rows)
    with torch.no_grad():
        logits = teacher(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    indices, values = topk_teacher(logits, k=8)
    columns = {k: v.tolist() for k, v in data.items()}
    columns.update(teacher_topk_indices=indices.tolist(), teacher_topk_values=values.tolist(), unused=[0] * 8)
    dataset = datasets.Dataset.from_dict(columns).with_format("torch")
    student = tiny(6)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=None,
        args=arguments(tmp_path, max_steps=2, per_device_train_batch_size=4),
        train_dataset=dataset,
    )
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.state.log_history[-1]["train_loss"] > 0


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gkd_hook_equals_trls_own_compute_loss(beta):
    """kldiv's ``GKDTrainer.compute_loss`` against TRL's ``GKDTrainer.compute_loss`` (materialized logits
    and ``generalized_jsd_loss``), on the same trainer state: value and every student gradient."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trl_gkd = pytest.importorskip("trl.experimental.gkd")
    from kldiv.transformers import GKDTrainer

    student, teacher = tiny(0), tiny(1)
    rows = corpus(3, seed=5)
    rows[1]["labels"][:5] = -100  # a prompt
    inputs = transformers.default_data_collator(rows)
    state = types.SimpleNamespace(
        teacher_model=teacher, beta=beta, generalized_jsd_loss=trl_gkd.GKDTrainer.generalized_jsd_loss
    )
    results = []
    for trainer_type in (GKDTrainer, trl_gkd.GKDTrainer):
        for count in (None, torch.tensor(50)):
            loss = trainer_type.compute_loss(state, student, inputs, num_items_in_batch=count)
            grads = torch.autograd.grad(loss, list(student.parameters()))
            results.append((loss.detach(), grads))
    for (ours, our_grads), (theirs, their_grads) in zip(results[:2], results[2:], strict=True):
        assert abs(float(ours) - float(theirs)) <= 1e-5 * abs(float(theirs))
        for got, want in zip(our_grads, their_grads, strict=True):
            assert float((got - want).norm()) <= 1e-5 * float(want.norm()) + 1e-12
