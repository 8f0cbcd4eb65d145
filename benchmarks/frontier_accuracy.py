"""Largest error against float64 of each path of issue #17 (LLM distillation frontier), float32 inputs.

Each case runs a kldiv loss on float32 tensors and the same program written out by hand in float64
(logits materialised, the logit map, ``log_softmax``, the divergence; top-k: the coarsened
distributions with the tail bucket), and prints ``max |kldiv − float64|`` of the loss and of every
gradient relative to the largest float64 entry (``max |g − g64| / max |g64|``), per case and the
largest over all of them. Small sizes (BT = 64, H = 32, V = 1000): this measures the arithmetic,
not the speed (``kldiv bench fused-linear`` does that).

    python benchmarks/frontier_accuracy.py            # CPU: Numba kernels and the autograd path

(The Triton kernels run on CUDA only through the public API; on a CPU their interpreter is reached by
the tests' hook, ``tests/fused/test_fused_triton.py``.)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import torch

import kldiv.torch as kt
from kldiv.fused.torch import topk_teacher

BT, H, V, K = 64, 32, 1000, 32


def _divergence64(log_p: torch.Tensor, log_q: torch.Tensor, direction: str, beta: float | None):
    """Per-row divergence of teacher ``log_p`` and student ``log_q`` (last axis), float64."""

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > -math.inf, a.exp() * (a - b), 0.0).sum(-1)

    if beta is not None:
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
        return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)
    if direction == "forward":
        return kl(log_p, log_q)
    if direction == "reverse":
        return kl(log_q, log_p)
    return kl(log_p, log_q) + kl(log_q, log_p)


def _softcap(z: torch.Tensor, cap: float | None, scale: float | None) -> torch.Tensor:
    z = z * (scale or 1.0)
    return z if cap is None else cap * torch.tanh(z / cap)


def _tail(log_s: torch.Tensor, indices: torch.Tensor, values: torch.Tensor):
    """Teacher and student over the ``k`` entries + tail bucket (``"log_probs"`` values)."""
    student = log_s.gather(-1, indices)
    student_tail = torch.logsumexp(log_s.scatter(-1, indices, -math.inf), -1, keepdim=True)
    teacher_tail = torch.log1p(-values.exp().sum(-1, keepdim=True).clamp(max=1.0))
    return torch.cat([values, teacher_tail], -1), torch.cat([student, student_tail], -1)


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden": torch.randn(BT, H, generator=g),
        "weight": torch.randn(V, H, generator=g) * H**-0.5 * 3,
        "bias": torch.randn(V, generator=g),
        "teacher": torch.randn(BT, V, generator=g) * 3,
        "labels": torch.where(
            torch.rand(BT, generator=g) < 0.2, -100, torch.randint(0, V, (BT,), generator=g)
        ),
    }


def _errors(loss: torch.Tensor, grads: list[torch.Tensor], loss64, grads64) -> dict[str, float]:
    out = {"loss": abs(float(loss) - float(loss64)) / max(abs(float(loss64)), 1e-30)}
    for name, g, g64 in zip(("hidden", "weight", "bias"), grads, grads64, strict=True):
        scale = float(g64.abs().max())
        out[f"grad_{name}"] = float((g.double() - g64).abs().max()) / max(scale, 1e-30)
    return out


Case = tuple[str, Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], Any]]


def _support_mask(x: dict[str, Any], support: str) -> torch.Tensor:
    """``[BT, V]`` membership of the top-k support, chosen on the float32 logits kldiv sees (the choice
    is invariant to the temperature; the float64 program compares the same entries)."""
    with torch.no_grad():
        student = (x["hidden"] @ x["weight"].T + x["bias"]).topk(K, -1).indices
        teacher = x["teacher"].topk(K, -1).indices
    mask = torch.zeros(BT, V, dtype=torch.bool)
    if support in ("student", "union"):
        mask.scatter_(1, student, True)
    if support in ("teacher", "union"):
        mask.scatter_(1, teacher, True)
    return mask


def _coarsen(log_p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log_p`` on the support (``-inf`` elsewhere) and the tail bucket ``log Σ_{j ∉ S} p_j``."""
    inside = torch.where(mask, log_p, -math.inf)
    tail = torch.logsumexp(torch.where(mask, -math.inf, log_p), -1, keepdim=True)
    return torch.cat([inside, tail], -1)


def _fused_case(
    name: str,
    backend: str,
    divergence: dict[str, Any],
    maps: dict[str, Any],
    topk: str | None,
    extra: dict[str, Any] | None = None,
):
    """A case: kldiv's fused loss and its float64 program, on the same inputs. ``topk``: a stored
    top-k teacher's format; ``extra``: ``weight_hard_loss`` / ``weight_soft_loss`` (the cross-entropy
    term) or ``support`` (with ``topk=K``: a dense teacher on a top-k support)."""
    extra = extra or {}
    temperature = divergence.get("temperature", 1.0)
    direction, beta = divergence.get("direction", "forward"), divergence.get("beta")
    hard, soft = extra.get("weight_hard_loss", 0.0), extra.get("weight_soft_loss", 1.0)
    support = extra.get("support")

    def run(x: dict[str, Any]) -> Any:
        cls = kt.FusedLinearJSDivergence if beta is not None else kt.FusedLinearKLDivergence
        options = {k: v for k, v in divergence.items() if k != "beta" or beta is not None}
        if beta is None:
            options.pop("beta", None)
        loss_fn = cls(
            reduction="token_mean",
            backend=backend,
            teacher_topk_format=topk or "log_probs",
            **maps,
            **options,
            **extra,
        )
        if support is not None:
            x["support_mask"] = _support_mask(x, support)
        teacher = {"teacher_logits": x["teacher"]}
        if topk == "log_probs":
            indices, values = topk_teacher(
                x["teacher"], k=K, temperature=temperature, teacher_softcap=maps.get("teacher_softcap")
            )
            teacher = {"teacher_topk_indices": indices, "teacher_topk_values": values}
            x["stored"] = (indices, values)
        return loss_fn(x["hidden"], x["weight"], x["bias"], labels=x["labels"], **teacher)

    def reference(x: dict[str, Any]) -> Any:
        s = _softcap(
            x["hidden"] @ x["weight"].T + x["bias"],
            maps.get("student_softcap"),
            maps.get("student_logit_scale"),
        )
        log_q = torch.log_softmax(s / temperature, -1)
        if topk == "log_probs":
            indices, values = x["stored"]
            log_p, log_q = _tail(log_q, indices.long(), values.double())
        else:
            t = _softcap(x["teacher"], maps.get("teacher_softcap"), maps.get("teacher_logit_scale"))
            log_p = torch.log_softmax(t / temperature, -1)
        if support is not None:
            log_p, log_q = _coarsen(log_p, x["support_mask"]), _coarsen(log_q, x["support_mask"])
        per_token = _divergence64(log_p, log_q, direction, beta)
        if divergence.get("scale_by_temperature_squared"):
            per_token = per_token * temperature**2
        kept = x["labels"] != -100
        loss = soft * per_token[kept].sum() / kept.sum()
        if hard:  # Liger's normalisation: both terms over the tokens whose label is kept
            cross_entropy = torch.logsumexp(s, -1) - s.gather(-1, x["labels"].clamp(min=0)[:, None])[:, 0]
            loss = loss + hard * cross_entropy[kept].sum() / kept.sum()
        return loss

    return name, run, reference


def cases(backends: list[str]) -> list[Case]:
    out = []
    for backend in backends:
        for direction in ("forward", "reverse", "symmetric"):
            out.append(
                _fused_case(
                    f"{backend} dense KL {direction} T=2",
                    backend,
                    {"direction": direction, "temperature": 2.0},
                    {},
                    None,
                )
            )
        out.append(_fused_case(f"{backend} dense JS beta=0.3", backend, {"beta": 0.3}, {}, None))
        maps = {"student_softcap": 5.0, "teacher_softcap": 4.0, "student_logit_scale": 1.5}
        out.append(_fused_case(f"{backend} softcap + logit scale KL", backend, {}, maps, None))
        out.append(_fused_case(f"{backend} softcap JS", backend, {"beta": 0.5}, maps, None))
        for direction in ("forward", "reverse"):
            out.append(
                _fused_case(
                    f"{backend} top-{K} log_probs KL {direction}",
                    backend,
                    {"direction": direction},
                    {},
                    "log_probs",
                )
            )
        out.append(_fused_case(f"{backend} top-{K} log_probs JS", backend, {"beta": 0.5}, {}, "log_probs"))
        hard = {"weight_hard_loss": 0.3, "weight_soft_loss": 0.7}
        out.append(_fused_case(f"{backend} hard labels 0.3 CE + 0.7 KL", backend, {}, {}, None, hard))
        out.append(_fused_case(f"{backend} hard labels + softcap", backend, {}, maps, None, hard))
        out.append(
            _fused_case(
                f"{backend} hard labels + top-{K}", backend, {"temperature": 2.0}, {}, "log_probs", hard
            )
        )
        if backend == "core":  # student / union supports run by autograd (no kernel)
            for support in ("teacher", "student", "union"):
                for label, divergence in (("KL reverse", {"direction": "reverse"}), ("JS", {"beta": 0.5})):
                    extra = {"support": support, "topk": K}
                    out.append(
                        _fused_case(f"core support={support} {label}", backend, divergence, {}, None, extra)
                    )
    return out


def measure(case: Case, seed: int = 0) -> dict[str, float]:
    _, run, reference = case
    x = _inputs(seed)
    leaves = [x[k].requires_grad_() for k in ("hidden", "weight", "bias")]
    loss = run(x)
    grads = torch.autograd.grad(loss, leaves)
    x64 = {
        k: (v.detach().double().requires_grad_() if k in ("hidden", "weight", "bias") else v)
        for k, v in x.items()
    }
    x64["teacher"] = x["teacher"].double()
    leaves64 = [x64[k] for k in ("hidden", "weight", "bias")]
    loss64 = reference(x64)
    grads64 = torch.autograd.grad(loss64, leaves64)
    return _errors(loss.detach(), grads, loss64.detach(), grads64)


def _stats64(teacher: torch.Tensor, student: torch.Tensor, direction: str) -> dict[str, torch.Tensor]:
    """The statistics' definitions in float64 on logits (``T = 1``): log-sum-exps, student entropy and
    the per-token divergence."""
    log_p, log_q = torch.log_softmax(teacher, -1), torch.log_softmax(student, -1)
    return {
        "per_token": _divergence64(log_p, log_q, direction, None),
        "teacher_lse": torch.logsumexp(teacher, -1),
        "student_lse": torch.logsumexp(student, -1),
        "student_entropy": -(log_q.exp() * log_q).sum(-1),
    }


def stats_errors(backends: list[str]) -> list[tuple[str, dict[str, float]]]:
    """``return_stats`` of the ``kldiv.torch`` losses and of the fused loss against their float64
    definitions: ``max |s − s64| / max |s64|`` per statistic."""
    x = _inputs(1)
    logits = x["hidden"] @ x["weight"].T + x["bias"]
    expected = _stats64(x["teacher"].double(), logits.double(), "reverse")
    out = []
    for backend in backends:
        loss = kt.KLDivergence(
            y_true_format="logits", from_logits=True, direction="reverse", backend=backend, return_stats=True
        )
        _, stats = loss(x["teacher"], logits)
        fused = kt.FusedLinearKLDivergence(direction="reverse", backend=backend, return_stats=True)
        _, fused_stats = fused(x["hidden"], x["weight"], x["bias"], teacher_logits=x["teacher"])
        for name, found in ((f"kldiv.torch {backend}", stats), (f"fused {backend}", fused_stats)):
            out.append(
                (
                    name,
                    {
                        key: float((found[key].double() - value).abs().max() / value.abs().max())
                        for key, value in expected.items()
                    },
                )
            )
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    backends = ["numba", "core"]
    worst: dict[str, float] = {}
    print(f"float32 inputs, BT={BT} H={H} V={V} k={K}; max |x − x64| / max |x64| (loss: relative)")
    print(f"{'case':45s} {'loss':>9s} {'grad_h':>9s} {'grad_w':>9s} {'grad_b':>9s}")
    for case in cases(backends):
        errors = measure(case)
        print(
            f"{case[0]:45s} "
            + " ".join(f"{errors[k]:9.1e}" for k in ("loss", "grad_hidden", "grad_weight", "grad_bias"))
        )
        for k, v in errors.items():
            worst[k] = max(worst.get(k, 0.0), v)
    print("largest: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    print("\nreturn_stats (reverse KL of logits), max |s − s64| / max |s64|")
    for name, errors in stats_errors(backends):
        print(f"{name:24s} " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


if __name__ == "__main__":
    main()
