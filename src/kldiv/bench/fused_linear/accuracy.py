"""Accuracy of ``kldiv bench fused-linear``: relative errors against the float64 naive program.

For each implementation and dtype, on the same inputs rounded to the dtype: the relative error of the
loss, and of the gradients w.r.t. the hidden states and the weight, norm-wise ``‖g − g64‖ / ‖g64‖``
and elementwise ``max |g − g64| / |g64|`` over the entries with ``|g64| > 1e-3 · max |g64|`` (entries
near that threshold lose digits to cancellation in any float32 program). ``worst_rel_error`` is the
largest of the loss error and the two norm-wise errors. A sparse top-k case (``k`` given) compares
with the naive top-k program in float64 on the same stored teacher (its indices, and its float32
log-probabilities widened).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .cases import TOPK_IMPLS, make_inputs, make_loss, naive_loss, naive_topk_loss
from .run import ACCURACY_IMPLS, impl_cases, jsonable, machine


def relative_errors(value: Any, reference: Any) -> dict[str, float]:
    """``{"norm": ‖v − r‖ / ‖r‖, "max": max |v − r| / |r| over |r| > 1e-3 max |r|}`` in float64."""
    import torch

    value, reference = value.detach().to(torch.float64), reference.detach().to(torch.float64)
    difference = value - reference
    norm = float(reference.norm())
    large = reference.abs() > 1e-3 * float(reference.abs().max())
    elementwise = (difference.abs()[large] / reference.abs()[large]).max() if bool(large.any()) else 0.0
    return {
        "norm": float(difference.norm()) / norm if norm else float(difference.norm()),
        "max": float(elementwise),
    }


def accuracy_case(
    impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str, seed: int, k: int | None = None
) -> dict[str, Any]:
    """Relative errors of one implementation's loss and gradients against the float64 naive program
    evaluated on the same inputs (rounded to ``dtype`` first); ``k``: a top-k implementation's."""
    import torch

    inputs = make_inputs(bt, hidden, vocab, getattr(torch, dtype), "cpu", teacher, seed, k=k)
    reference = {
        name: v.detach().to(torch.float64).requires_grad_(v.requires_grad) if v.is_floating_point() else v
        for name, v in inputs.items()
    }
    reference_loss = (
        naive_topk_loss(reference) if impl in TOPK_IMPLS else naive_loss(impl.split("-")[1], reference)
    )
    reference_loss.backward()
    loss = make_loss(impl)(inputs)
    loss.backward()
    loss, reference_loss = loss.detach(), reference_loss.detach()
    loss_error = abs(float(loss) - float(reference_loss)) / abs(float(reference_loss))
    record = {"impl": impl, "size": [bt, hidden, vocab], "dtype": dtype, "teacher": teacher, "k": k}
    record |= {"loss": float(loss), "loss_float64": float(reference_loss), "loss_rel_error": loss_error}
    for name, key in (("grad_hidden", "hidden"), ("grad_weight", "weight")):
        errors = relative_errors(inputs[key].grad, reference[key].grad)
        record[f"{name}_norm_rel_error"] = errors["norm"]
        record[f"{name}_max_rel_error"] = errors["max"]
    record["worst_rel_error"] = max(
        loss_error, record["grad_hidden_norm_rel_error"], record["grad_weight_norm_rel_error"]
    )
    return record


def run_accuracy(config: dict[str, Any], stream: TextIO = sys.stderr) -> dict[str, Any]:
    """Every accuracy case of ``config`` (its implementations among :data:`ACCURACY_IMPLS`), in this
    process."""
    records = []
    cases = [(impl, k) for impl, k in impl_cases(config) if impl in ACCURACY_IMPLS]
    for bt, hidden, vocab in config["sizes"]:
        for dtype in config["dtypes"]:
            for impl, k in cases:
                name = impl if k is None else f"{impl} k={k}"
                print(f"accuracy {name} [{bt}, {hidden}, {vocab}] {dtype}", file=stream, flush=True)
                records.append(
                    accuracy_case(impl, bt, hidden, vocab, dtype, config["teacher"], config["seed"], k=k)
                )
    return {"config": jsonable(config), "machine": machine("cpu"), "accuracy": records}
