"""Turn parsed arguments into the library calls: per-sample values and the reduced value."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np

from .. import losses
from . import inputs


@dataclasses.dataclass(frozen=True)
class Result:
    """What the command prints: ``per_sample`` (unweighted) and ``value`` (weighted, reduced)."""

    per_sample: np.ndarray
    value: np.ndarray
    reduction: str
    options: dict[str, Any]


def library_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments shared by ``kldiv.kl_divergence`` and ``kldiv.KLDivergence``."""
    return {
        "y_true_format": args.y_true_format,
        "y_pred_format": args.y_pred_format,
        "from_logits": args.from_logits,
        "epsilon": args.epsilon,
        "axis": args.axis,
        "dtype": args.dtype,
    }


def run(args: argparse.Namespace) -> Result:
    """Read the inputs and compute; raises ``ValueError`` / ``TypeError`` / ``OSError``."""
    options = library_options(args)
    loss = losses.KLDivergence(reduction=args.reduction, **options)  # validates options first
    options["epsilon"] = loss.options.epsilon  # reported as resolved (None: by the inputs' formats)
    y_true = inputs.read_value(args.y_true, "y_true")
    y_pred = inputs.read_value(args.y_pred, "y_pred", float_integers=args.dtype is None)
    if args.normalize:
        _check_normalizable(options)
        y_true = inputs.normalize(y_true, "y_true", args.axis)
        y_pred = inputs.normalize(y_pred, "y_pred", args.axis)
    weight = None if args.sample_weight is None else inputs.read_value(args.sample_weight, "sample_weight")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf/nan are results here
        per_sample = losses.kl_divergence(y_true, y_pred, **options)
        value = loss(y_true, y_pred, sample_weight=weight)
    return Result(np.asarray(per_sample), np.asarray(value), args.reduction, options)


def _check_normalizable(options: dict[str, Any]) -> None:
    """``--normalize`` makes probabilities: both inputs must be given as probabilities."""
    formats = {"y_true": options["y_true_format"], "y_pred": options["y_pred_format"]}
    if options["from_logits"]:
        formats["y_pred"] = "logits"
    for argument, given in formats.items():
        if given != "probs":
            raise ValueError(
                f"--normalize divides each distribution by its sum, which needs probabilities or "
                f"counts; {argument} is given as {given} (drop --normalize or the format option)"
            )
