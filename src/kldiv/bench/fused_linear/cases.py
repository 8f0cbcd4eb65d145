"""The programs of ``kldiv bench fused-linear``: inputs, the naive loss, kldiv's and Liger's modules."""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable
from typing import Any

IMPLS = ("naive-kl", "kldiv-kl", "naive-jsd", "kldiv-jsd", "liger-jsd", "naive-topk", "kldiv-topk")
TOPK_IMPLS = ("naive-topk", "kldiv-topk")
"""Forward KL against a sparse teacher (its top ``k`` log-probabilities, ``--top-k``)."""
BETA = 0.5


def label_of(record: dict[str, Any]) -> str:
    """The implementation of a record as the tables name it: ``kldiv-topk k=128`` for a sparse case."""
    return record["impl"] if record.get("k") is None else f"{record['impl']} k={record['k']}"


def liger_jsd() -> tuple[Any, str]:
    """Liger-Kernel's ``LigerFusedLinearJSD`` class and its version, or None and why not."""
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD
    except Exception as error:  # any import failure means "not available here"
        return None, f"liger_kernel is not importable ({type(error).__name__}: {error})"
    try:
        version = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        version = "installed"
    return LigerFusedLinearJSD, version


def make_inputs(
    bt: int,
    hidden: int,
    vocab: int,
    dtype: Any,
    device: str,
    teacher: str,
    seed: int,
    need_grad: bool = True,
    k: int | None = None,
) -> dict[str, Any]:
    """Student hidden states ``[BT, H]`` (std 1) and weight ``[V, H]`` (std ``1/√H``: logits of std
    about 1), and the teacher: logits ``[BT, V]`` (std 2) or hidden states + weight (logits of std
    about 2). Drawn directly in ``dtype`` on ``device`` (no float32 copy of the large tensors). With
    ``k``, the same teacher stored as its top ``k`` (int32 indices, float32 log-probabilities:
    :func:`kldiv.fused.torch.topk_teacher`; the dense teacher is dropped before measuring)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)

    def draw(*shape: int, scale: float) -> Any:
        return torch.randn(*shape, generator=generator, dtype=dtype, device=device).mul_(scale)

    inputs = {
        "hidden": draw(bt, hidden, scale=1.0).requires_grad_(need_grad),
        "weight": draw(vocab, hidden, scale=hidden**-0.5).requires_grad_(need_grad),
    }
    if teacher == "logits":
        inputs["teacher_logits"] = draw(bt, vocab, scale=2.0)
    else:
        inputs["teacher_hidden"] = draw(bt, hidden, scale=1.0)
        inputs["teacher_weight"] = draw(vocab, hidden, scale=2.0 * hidden**-0.5)
    if k is not None:
        from kldiv.fused.torch import topk_teacher

        dense = {name: inputs.pop(name) for name in list(inputs) if name.startswith("teacher_")}
        if "teacher_logits" in dense:
            indices, values = topk_teacher(dense["teacher_logits"], k=k)
        else:
            indices, values = topk_teacher(
                teacher_hidden=dense["teacher_hidden"], teacher_weight=dense["teacher_weight"], k=k
            )
        inputs["teacher_topk_indices"], inputs["teacher_topk_values"] = indices, values
    return inputs


def _teacher_logits(inputs: dict[str, Any]) -> Any:
    import torch

    if "teacher_logits" in inputs:
        return inputs["teacher_logits"]
    with torch.no_grad():
        return inputs["teacher_hidden"] @ inputs["teacher_weight"].T


def naive_loss(kind: str, inputs: dict[str, Any], compute_dtype: Any = None) -> Any:
    """The naive program: logits in the inputs' dtype, log-softmax in float32 (float64 for float64
    inputs, or ``compute_dtype``), then KL (``F.kl_div`` batchmean) or JS_0.5 (mean over tokens)."""
    import torch
    import torch.nn.functional as F

    wide = compute_dtype or (torch.float64 if inputs["hidden"].dtype == torch.float64 else torch.float32)
    logits = inputs["hidden"] @ inputs["weight"].T
    log_q = torch.log_softmax(logits.to(wide), dim=-1)
    log_p = torch.log_softmax(_teacher_logits(inputs).to(wide), dim=-1)
    if kind == "kl":
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    # JS_β(P, Q) = β KL(P‖M) + (1 − β) KL(Q‖M), M = β P + (1 − β) Q (P: teacher), as the naive
    # program a user would write; kldiv's own formula lives in its core.
    log_m = torch.logaddexp(log_p + math.log(BETA), log_q + math.log(1 - BETA))
    teacher_part = (log_p.exp() * (log_p - log_m)).sum(-1)
    student_part = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (BETA * teacher_part + (1 - BETA) * student_part).mean()


def naive_topk_loss(inputs: dict[str, Any]) -> Any:
    """The naive program of top-k distillation: the student's logits materialised, their log-softmax
    (float32; float64 for float64 inputs), coarsened to the teacher's ``k`` entries plus the tail
    bucket, forward KL, mean over tokens (what a PyTorch user writes; kldiv's own formula is
    :func:`kldiv.core.topk.sparse_log_probs`)."""
    import torch

    wide = torch.float64 if inputs["hidden"].dtype == torch.float64 else torch.float32
    indices = inputs["teacher_topk_indices"].long()
    teacher = inputs["teacher_topk_values"].to(wide)
    logits = inputs["hidden"] @ inputs["weight"].T
    log_q = torch.log_softmax(logits.to(wide), dim=-1)
    student = log_q.gather(-1, indices)
    if indices.shape[-1] == log_q.shape[-1]:  # k = V: no tail (kldiv's convention)
        return (teacher.exp() * (teacher - student)).sum(-1).mean()
    student_tail = torch.logsumexp(log_q.scatter(-1, indices, -math.inf), dim=-1, keepdim=True)
    teacher_tail = torch.log1p(-teacher.exp().sum(-1, keepdim=True).clamp(max=1.0))
    log_p, log_s = torch.cat([teacher, teacher_tail], -1), torch.cat([student, student_tail], -1)
    return torch.where(log_p > -math.inf, log_p.exp() * (log_p - log_s), 0.0).sum(-1).mean()


def make_loss(impl: str) -> Callable[[dict[str, Any]], Any]:
    """``inputs → scalar loss`` of one implementation (see :data:`IMPLS`)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {', '.join(IMPLS)}")
    if impl == "naive-topk":
        return naive_topk_loss
    if impl.startswith("naive"):
        kind = impl.split("-")[1]
        return lambda inputs: naive_loss(kind, inputs)
    if impl.startswith("kldiv"):
        import kldiv.torch

        if impl in ("kldiv-kl", "kldiv-topk"):
            module = kldiv.torch.FusedLinearKLDivergence(reduction="token_mean")
        else:
            module = kldiv.torch.FusedLinearJSDivergence(reduction="token_mean", beta=BETA)

        def fused(inputs: dict[str, Any]) -> Any:
            teacher = {k: v for k, v in inputs.items() if k.startswith("teacher_")}
            return module(inputs["hidden"], inputs["weight"], **teacher)

        return fused
    liger, why = liger_jsd()
    if liger is None:
        raise RuntimeError(why)
    module = liger(jsd_beta=BETA, ignore_index=-100, temperature=1.0)

    def liger_loss(inputs: dict[str, Any]) -> Any:
        if "teacher_hidden" not in inputs:
            raise ValueError("liger-jsd needs the teacher as hidden states + weight (--teacher hidden)")
        return module(
            inputs["hidden"], inputs["weight"], inputs["teacher_hidden"], inputs["teacher_weight"], None
        )

    return liger_loss
