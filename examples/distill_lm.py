"""Distil a small causal LM from a larger one, with kldiv's fused path and with the naive one.

Both models are ``transformers`` Llama models built from configs (nothing is downloaded). The corpus is
generated: sentences of a random Markov chain over a few hundred of the vocabulary's ids, each with a
few likely successors, so the best achievable perplexity is known (the chain's entropy rate). The
teacher is trained on it first with its own cross-entropy; then a smaller student is distilled from
it twice, from the same initial weights and batches:

* ``naive``: both models' ``[B, T, V]`` logits, shifted, ``T²·KL(teacher‖student)`` by ``F.kl_div`` plus
  ``α·CE`` — the program users write;
* ``kldiv``: :func:`kldiv.transformers.distillation_loss` — the same objective from the last hidden
  states, never forming either model's logits.

It prints the time per step, the peak memory of the steps (resident memory above the state before
them, Linux) and the perplexity of the teacher and of both students on held-out text, and checks that
the two students agree.

    python examples/distill_lm.py            # V = 32000: about 6 minutes on 2 cores
    python examples/distill_lm.py --tiny     # seconds (CI)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from kldiv.bench.machine import reset_peak, status_kib
from kldiv.transformers import distillation_loss

SIZES = {
    "full": {
        "vocab": 32000,
        "active": 512,
        "teacher_hidden": 256,
        "student_hidden": 128,
        "seq": 128,
        "batch": 8,
        "teacher_steps": 200,
        "steps": 40,
        "layers": 2,
    },
    "tiny": {
        "vocab": 512,
        "active": 64,
        "teacher_hidden": 64,
        "student_hidden": 32,
        "seq": 32,
        "batch": 4,
        "teacher_steps": 60,
        "steps": 12,
        "layers": 2,
    },
}
TEMPERATURE, ALPHA, FANOUT = 2.0, 0.5, 4


class MarkovCorpus:
    """Token ``x_{t+1}`` drawn from ``FANOUT`` successors of ``x_t`` with Dirichlet(0.5) weights; the
    text uses ``active`` of the ``vocab`` token ids (as real text uses few of a large vocabulary's)."""

    def __init__(self, vocab: int, active: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tokens = rng.choice(vocab, size=active, replace=False)
        self.successors = rng.integers(0, active, size=(active, FANOUT))  # positions in self.tokens
        self.weights = rng.dirichlet([0.5] * FANOUT, size=active)
        self.active, self.rng = active, rng

    def entropy_rate(self) -> float:
        """Nats per token of the chain under its stationary distribution (estimated from a long walk)."""
        walk = self._walk(1, 20000)[0]
        p = self.weights[walk]
        return float(np.mean(-(p * np.log(np.clip(p, 1e-300, None))).sum(-1)))

    def _walk(self, rows: int, length: int) -> np.ndarray:
        out = np.empty((rows, length), dtype=np.int64)
        out[:, 0] = self.rng.integers(0, self.active, rows)
        for t in range(1, length):
            choice = (self.rng.random(rows)[:, None] > np.cumsum(self.weights[out[:, t - 1]], -1)).sum(-1)
            out[:, t] = self.successors[out[:, t - 1], np.minimum(choice, FANOUT - 1)]
        return out

    def sample(self, rows: int, length: int) -> np.ndarray:
        """``[rows, length]`` token ids."""
        return self.tokens[self._walk(rows, length)]


def llama(vocab: int, hidden: int, layers: int, seq: int, seed: int) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=seq,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def batches(corpus: MarkovCorpus, count: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    ids = torch.from_numpy(corpus.sample(count * batch, seq)).reshape(count, batch, seq)
    return [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in ids]


def perplexity(model: torch.nn.Module, held_out: list[dict[str, torch.Tensor]]) -> float:
    model.eval()
    with torch.no_grad():
        losses = [float(model(**b).loss) for b in held_out]
    model.train()
    return math.exp(sum(losses) / len(losses))


def naive_loss(student, teacher, batch) -> torch.Tensor:
    s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    with torch.no_grad():
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    kd = F.kl_div(
        F.log_softmax(s / TEMPERATURE, -1),
        F.log_softmax(t / TEMPERATURE, -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    kd = kd[keep].sum() * TEMPERATURE**2
    ce = F.cross_entropy(s[keep], labels[keep], reduction="sum")
    return ((1 - ALPHA) * kd + ALPHA * ce) / keep.sum()


def kldiv_loss(student, teacher, batch) -> torch.Tensor:
    return distillation_loss(
        student, teacher, batch, temperature=TEMPERATURE, scale_by_temperature_squared=True, alpha=ALPHA
    )


def distil(path, loss_fn, sizes, teacher, train, held_out) -> dict[str, float]:
    student = llama(sizes["vocab"], sizes["student_hidden"], sizes["layers"], sizes["seq"], seed=1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    loss_fn(student, teacher, train[0]).backward()  # warm-up: first-call costs out of the timing
    optimizer.zero_grad(set_to_none=True)
    baseline = status_kib("VmRSS")
    reset_peak()
    times, losses = [], []
    for batch in train[: sizes["steps"]]:
        start = time.perf_counter()
        loss = loss_fn(student, teacher, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    peak = status_kib("VmHWM")
    return {
        "path": path,
        "ms_per_step": 1000 * statistics.median(times),
        "peak_mib": (peak - baseline) / 1024 if peak and baseline else float("nan"),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "perplexity": perplexity(student, held_out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the CI size (seconds)")
    sizes = SIZES["tiny" if parser.parse_args().tiny else "full"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    corpus = MarkovCorpus(sizes["vocab"], sizes["active"])
    floor = math.exp(corpus.entropy_rate())
    teacher_data = batches(corpus, sizes["teacher_steps"], sizes["batch"], sizes["seq"])
    train = batches(corpus, sizes["steps"] + 1, sizes["batch"], sizes["seq"])
    held_out = batches(corpus, 4, sizes["batch"], sizes["seq"])

    teacher = llama(sizes["vocab"], sizes["teacher_hidden"], sizes["layers"], sizes["seq"], seed=0)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    start = time.perf_counter()
    for batch in teacher_data:
        teacher(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    teacher.eval().requires_grad_(False)
    teacher_ppl = perplexity(teacher, held_out)
    initial = perplexity(
        llama(sizes["vocab"], sizes["student_hidden"], sizes["layers"], sizes["seq"], seed=1), held_out
    )
    print(
        f"V = {sizes['vocab']}, BT = {sizes['batch']}×{sizes['seq']}, teacher H = {sizes['teacher_hidden']} "
        f"({sizes['teacher_steps']} steps, {time.perf_counter() - start:.0f} s), "
        f"student H = {sizes['student_hidden']}, {sizes['steps']} distillation steps, "
        f"T = {TEMPERATURE}, α = {ALPHA}"
    )
    print(f"perplexity: corpus floor {floor:.1f}, teacher {teacher_ppl:.1f}, student before {initial:.1f}")

    results = [
        distil(name, fn, sizes, teacher, train[1:], held_out)
        for name, fn in (("naive", naive_loss), ("kldiv", kldiv_loss))
    ]
    print(
        f"{'path':<6} {'ms/step':>9} {'peak MiB':>9} {'first loss':>11} {'last loss':>10} {'student ppl':>12}"
    )
    for r in results:
        print(
            f"{r['path']:<6} {r['ms_per_step']:>9.1f} {r['peak_mib']:>9.1f} {r['first_loss']:>11.5f} "
            f"{r['last_loss']:>10.5f} {r['perplexity']:>12.2f}"
        )
    naive, fused = results
    print(
        f"kldiv / naive: time {fused['ms_per_step'] / naive['ms_per_step']:.2f}×, "
        f"peak memory {fused['peak_mib'] / naive['peak_mib']:.2f}×"
    )
    assert abs(fused["first_loss"] - naive["first_loss"]) <= 1e-4 * abs(naive["first_loss"]), results
    assert abs(math.log(fused["perplexity"] / naive["perplexity"])) <= 0.02, results  # same training
    assert fused["perplexity"] < initial and fused["last_loss"] < fused["first_loss"], results


if __name__ == "__main__":
    main()
