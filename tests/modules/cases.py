"""The ``nn.Module`` classes of kldiv, each default-constructed and with options that differ from the
defaults; fixed inputs, the call that computes a value and the student's gradient, and an independent
float64 reference (``torch.nn.functional.kl_div`` and the JS mixture written out, never kldiv)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

import kldiv.torch as kt
from kldiv.distributed.torch import (
    VocabParallelFusedLinearJSDivergence,
    VocabParallelFusedLinearKLDivergence,
    VocabParallelJSDivergence,
    VocabParallelKLDivergence,
)

ROWS, VOCAB, HIDDEN = 24, 64, 16
LOSS, FUSED, VOCAB_PARALLEL = "loss", "fused", "vocab"


@dataclass(frozen=True)
class Case:
    id: str
    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    repr: str = ""

    @property
    def family(self) -> str:
        if issubclass(self.cls, (kt.FusedLinearKLDivergence, kt.FusedLinearJSDivergence)):
            return FUSED
        if issubclass(self.cls, (VocabParallelKLDivergence, VocabParallelJSDivergence)):
            return VOCAB_PARALLEL
        return LOSS

    @property
    def collective(self) -> bool:
        """A vocabulary-parallel class: it needs a process group and real data (its collectives); on the
        one-rank test group a fused one is the fused loss on the full head."""
        parallel = (VocabParallelKLDivergence, VocabParallelJSDivergence)
        fused = (VocabParallelFusedLinearKLDivergence, VocabParallelFusedLinearJSDivergence)
        return issubclass(self.cls, (*parallel, *fused))

    @property
    def is_js(self) -> bool:
        return issubclass(self.cls, (kt.JSDivergence, kt.FusedLinearJSDivergence, VocabParallelJSDivergence))

    def make(self) -> torch.nn.Module:
        return self.cls(**self.kwargs)

    def option(self, name: str) -> Any:
        """The option's value in this case (the class's own default when not given)."""
        defaults = {
            "reduction": "token_mean" if self.family == FUSED else "auto",
            "direction": "forward",
            "beta": 0.5,
            "temperature": 1.0,
            "scale_by_temperature_squared": False,
            "y_true_format": "probs" if self.family == LOSS else "logits",
            "y_pred_format": "probs" if self.family == LOSS else "logits",
        }
        return self.kwargs.get(name, defaults[name])


CASES = [
    Case("kl-default", kt.KLDivergence, {}, "KLDivergence()"),
    Case(
        "kl-options",
        kt.KLDivergence,
        dict(
            reduction="batchmean",
            y_true_format="logits",
            y_pred_format="logits",
            direction="reverse",
            temperature=2.0,
            scale_by_temperature_squared=True,
        ),
        "KLDivergence(reduction='batchmean', y_true_format='logits', y_pred_format='logits', "
        "direction='reverse', temperature=2.0, scale_by_temperature_squared=True)",
    ),
    Case("js-default", kt.JSDivergence, {}, "JSDivergence()"),
    Case(
        "js-options",
        kt.JSDivergence,
        dict(reduction="sum", name="js", y_true_format="logits", y_pred_format="logits", beta=0.3),
        "JSDivergence(reduction='sum', name='js', y_true_format='logits', y_pred_format='logits', beta=0.3)",
    ),
    Case(
        "kl-stats",
        kt.KLDivergence,
        dict(y_true_format="logits", y_pred_format="logits", temperature=1.5, return_stats=True),
        "KLDivergence(y_true_format='logits', y_pred_format='logits', temperature=1.5, return_stats=True)",
    ),
    Case(
        "js-stats",
        kt.JSDivergence,
        dict(reduction="sum", beta=0.3, return_stats=True),
        "JSDivergence(reduction='sum', beta=0.3, return_stats=True)",
    ),
    Case("fused-kl-default", kt.FusedLinearKLDivergence, {}, "FusedLinearKLDivergence()"),
    Case(
        "fused-kl-options",
        kt.FusedLinearKLDivergence,
        dict(temperature=2.0, chunk_size=8),
        "FusedLinearKLDivergence(temperature=2.0, chunk_size=8)",
    ),
    Case(
        "fused-kl-reverse",
        kt.FusedLinearKLDivergence,
        dict(reduction="sum", direction="reverse", scale_by_temperature_squared=True, temperature=3.0),
        "FusedLinearKLDivergence(reduction='sum', direction='reverse', temperature=3.0, "
        "scale_by_temperature_squared=True)",
    ),
    Case("fused-js-default", kt.FusedLinearJSDivergence, {}, "FusedLinearJSDivergence()"),
    Case(
        "fused-js-options",
        kt.FusedLinearJSDivergence,
        dict(beta=0.3, reduction="sum", chunk_size=5),
        "FusedLinearJSDivergence(reduction='sum', beta=0.3, chunk_size=5)",
    ),
    Case("vocab-kl-default", VocabParallelKLDivergence, {}, "VocabParallelKLDivergence()"),
    Case(
        "vocab-kl-options",
        VocabParallelKLDivergence,
        dict(reduction="sum", direction="reverse", temperature=2.0),
        "VocabParallelKLDivergence(reduction='sum', direction='reverse', temperature=2.0)",
    ),
    Case("vocab-js-default", VocabParallelJSDivergence, {}, "VocabParallelJSDivergence()"),
    Case(
        "vocab-js-options",
        VocabParallelJSDivergence,
        dict(reduction="batchmean", beta=0.3),
        "VocabParallelJSDivergence(reduction='batchmean', beta=0.3)",
    ),
    Case(
        "vocab-fused-kl-default",
        VocabParallelFusedLinearKLDivergence,
        {},
        "VocabParallelFusedLinearKLDivergence()",
    ),
    Case(
        "vocab-fused-kl-options",
        VocabParallelFusedLinearKLDivergence,
        dict(direction="reverse", temperature=2.0, chunk_size=8),
        "VocabParallelFusedLinearKLDivergence(direction='reverse', temperature=2.0, chunk_size=8)",
    ),
    Case(
        "vocab-fused-js-default",
        VocabParallelFusedLinearJSDivergence,
        {},
        "VocabParallelFusedLinearJSDivergence()",
    ),
    Case(
        "vocab-fused-js-options",
        VocabParallelFusedLinearJSDivergence,
        dict(beta=0.3, reduction="sum", chunk_size=5),
        "VocabParallelFusedLinearJSDivergence(reduction='sum', beta=0.3, chunk_size=5)",
    ),
]


def ensure_process_group() -> None:
    """A one-rank gloo group (in-memory store), for the vocabulary-parallel classes."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def inputs(case: Case, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> dict:
    """Fixed inputs of ``case`` (every probability > 1e-4, every log-probability > log 1e-7, so that
    the Keras clip of the default ``epsilon`` never acts and the exact reference applies)."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)

    if case.family == FUSED:
        tensors = {
            "hidden": normal(ROWS, HIDDEN),
            "weight": normal(VOCAB, HIDDEN, scale=0.3),
            "teacher": normal(ROWS, VOCAB),
        }
    else:
        tensors = {}
        for side in ("y_true", "y_pred"):
            logits = normal(ROWS, VOCAB)
            tensors[side] = logits.softmax(-1) if case.option(f"{side}_format") == "probs" else logits
    return {k: v.to(dtype=dtype, device=device) for k, v in tensors.items()}


def compute(loss: torch.nn.Module, case: Case, tensors: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss`` on ``tensors`` (as ``case`` calls it): the value and the gradient w.r.t. the student's
    input (``y_pred``, or the hidden states of the fused classes), both detached."""
    if case.family == FUSED:
        student = tensors["hidden"].clone().requires_grad_(True)
        value = loss(student, tensors["weight"], teacher_logits=tensors["teacher"])
    else:
        student = tensors["y_pred"].clone().requires_grad_(True)
        value = loss(tensors["y_true"], student)
    if getattr(loss, "return_stats", False):  # (loss, stats): the statistics are tested on their own
        value, stats = value
        assert set(stats) >= {"per_token", "student_lse", "student_entropy"}
    (grad,) = torch.autograd.grad(value, student)
    return value.detach(), grad


def _log_probs(x: torch.Tensor, form: str, temperature: float) -> torch.Tensor:
    if form == "probs" and temperature == 1.0:
        return x.log()
    return torch.log_softmax((x.log() if form == "probs" else x) / temperature, -1)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per row, by ``torch.nn.functional.kl_div``."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def reference(case: Case, tensors: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of ``case`` on ``tensors`` and its gradient w.r.t. the student's input, in float64,
    without kldiv (autograd through ``F.kl_div`` and ``log_softmax``)."""
    t = {k: v.detach().cpu().to(torch.float64) for k, v in tensors.items()}
    student = "hidden" if case.family == FUSED else "y_pred"
    t[student].requires_grad_(True)
    value = _reference_value(case, t)
    (grad,) = torch.autograd.grad(value, t[student])
    return value.detach(), grad


def _reference_value(case: Case, t: dict) -> torch.Tensor:
    temperature = case.option("temperature")
    if case.family == FUSED:
        true, pred = t["teacher"], t["hidden"] @ t["weight"].T
    else:
        true, pred = t["y_true"], t["y_pred"]
    log_p = _log_probs(true, case.option("y_true_format"), temperature)
    log_q = _log_probs(pred, case.option("y_pred_format"), temperature)
    if case.is_js:
        beta = case.option("beta")
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
        rows = beta * _kl_rows(log_p, log_m) + (1 - beta) * _kl_rows(log_q, log_m)
    elif case.option("direction") == "reverse":
        rows = _kl_rows(log_q, log_p)
    else:
        rows = _kl_rows(log_p, log_q)
    if case.option("scale_by_temperature_squared"):
        rows = rows * temperature**2
    reduction = case.option("reduction")
    if reduction == "sum":
        return rows.sum()
    if reduction in ("auto", "token_mean", "batchmean"):  # one leading axis: per row = per sample
        return rows.mean()
    raise AssertionError(f"no reference for reduction {reduction!r}")


class Holder(torch.nn.Module):
    """A model that holds a loss as a submodule next to a layer with parameters."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.loss = loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LossDataset(torch.utils.data.Dataset):
    """Item ``i``: ``compute`` of ``losses[i]`` (the loss of ``CASES[i]``) on that case's inputs, in
    whichever process reads it (a DataLoader worker receives the losses pickled)."""

    def __init__(self, losses: list[torch.nn.Module]) -> None:
        self.losses = losses

    def __len__(self) -> int:
        return len(self.losses)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case = CASES[index]
        if case.collective:
            ensure_process_group()
        return compute(self.losses[index], case, inputs(case))
