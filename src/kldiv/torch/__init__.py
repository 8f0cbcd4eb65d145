"""kldiv for PyTorch: ``nn.Module`` losses and functional forms over kldiv's core.

``KLDivergence`` / ``JSDivergence`` are ``torch.nn.Module`` wrappers of :class:`kldiv.KLDivergence` /
:class:`kldiv.JSDivergence` (same options, same defaults, same reductions); ``kl_divergence`` /
``js_divergence`` are their functional forms. Tensors stay on their device (CPU, CUDA, MPS, ...);
NumPy or list targets are moved to ``y_pred``'s device. Autograd flows to ``y_pred`` (and to
``y_true`` when it requires a gradient)::

    import kldiv.torch

    loss_fn = kldiv.torch.KLDivergence(reduction="batchmean", from_logits=True, y_true_format="logits",
                                       temperature=2.0, scale_by_temperature_squared=True)
    loss = loss_fn(teacher_logits, student_logits)   # (y_true, y_pred) = KL(teacher ‖ student)
    loss.backward()

Two PyTorch-specific rules (decided per call, nothing is probed at import):

* ``torch.compile``: while Dynamo traces, ``backend="auto"`` means the core (a graph of plain torch
  ops that Inductor fuses; no graph break), not the Numba kernel, which Dynamo cannot trace
  (:func:`kldiv.kernels.dispatch.plan` decides it, as every other kernel choice).
* ``torch.autocast``: with autocast enabled for ``y_pred``'s device and ``dtype=None``, the loss is
  computed and returned in float32, as PyTorch's own losses are autocast to float32 (``kl_div`` is on
  CUDA autocast's float32 list). Outside autocast, float16 / bfloat16 inputs accumulate in float32
  and return their own dtype (kldiv's rule).

``return_stats=True`` (constructor or functional keyword) returns ``(loss, stats)``: per-sample
``per_token``, ``teacher_lse``, ``student_lse`` and ``student_entropy``, detached, the names and
definitions of the fused losses' statistics (:mod:`kldiv.torch._stats`).

Data parallel (DDP): the loss holds no parameters and no state. Ranks whose batches count different
numbers of items (masked tokens) pass a mean reduction ``num_items = global_count / world_size``
(``global_count`` from an ``all_reduce`` of the local counts): DDP *averages* the ranks' gradients,
and the result is exactly the gradient of the mean over the whole batch on one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from kldiv import _validate
from kldiv import losses as _losses
from kldiv._extras import require
from kldiv.arguments import CallArguments
from kldiv.fused._torch_stats import Stats
from kldiv.fused.torch import (
    FusedLinearJSDivergence,
    FusedLinearKLDivergence,
    chunked_js_divergence,
    chunked_kl_divergence,
)
from kldiv.options import changed

from ._stats import Collector

if TYPE_CHECKING:
    from typing_extensions import Unpack

torch = require("torch", "kldiv.torch")

__all__ = [
    "FusedLinearJSDivergence",
    "FusedLinearKLDivergence",
    "JSDivergence",
    "KLDivergence",
    "chunked_js_divergence",
    "chunked_kl_divergence",
    "js_divergence",
    "kl_divergence",
]

Tensor = Any


def _autocast(y_pred: Tensor) -> bool:
    """Whether autocast is enabled for ``y_pred``'s device (False for a device without autocast,
    such as ``"meta"``, where ``torch.is_autocast_enabled`` raises)."""
    device_type = y_pred.device.type if isinstance(y_pred, torch.Tensor) else "cpu"
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device_type):
        return False
    return torch.is_autocast_enabled(device_type)


def _call_overrides(options: dict[str, Any], y_pred: Tensor) -> dict[str, Any]:
    """The overrides of one functional call on ``y_pred``."""
    return _overrides(options, _autocast(y_pred))


def _overrides(options: dict[str, Any], autocast: bool) -> dict[str, Any]:
    """The per-call option override of the module docstring (autocast: float32 results)."""
    return {"dtype": "float32"} if autocast and options.get("dtype") is None else {}


class _TorchDivergence(torch.nn.Module, _losses.Wrapper):
    """An ``nn.Module`` whose ``forward`` is a framework-agnostic kldiv loss object's ``__call__``."""

    _agnostic: ClassVar[type[_losses._DivergenceLoss]]

    def __init__(
        self,
        reduction: str | None = "auto",
        name: str | None = None,
        *,
        return_stats: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        self.return_stats = _validate.flag("return_stats", return_stats)
        self.loss = self._agnostic(reduction=reduction, name=name, **options)
        # The loss with and without the autocast override, built here so that nothing is
        # constructed while torch.compile traces.
        config = self.loss.get_config()
        self._variants: dict[bool, _losses._DivergenceLoss] = {False: self.loss, True: self.loss}
        if _overrides(config, True):
            self._variants[True] = self._agnostic.from_config({**config, **_overrides(config, True)})

    def forward(
        self,
        y_true: Tensor,
        y_pred: Tensor,
        sample_weight: Tensor | None = None,
        **arguments: Unpack[CallArguments],
    ) -> Tensor | tuple[Tensor, Stats]:
        """The weighted, reduced loss (see :meth:`kldiv.KLDivergence.__call__`); with
        ``return_stats=True``, ``(loss, stats)`` (:mod:`kldiv.torch._stats`)."""
        loss = self._variants[_autocast(y_pred)]
        if not self.return_stats:
            return loss(y_true, y_pred, sample_weight, **arguments)
        stats = Collector()
        return loss._call(y_true, y_pred, sample_weight, arguments, stats), stats.result()

    def get_config(self) -> dict[str, Any]:
        """``reduction``, ``name``, every option and ``return_stats``; ``from_config`` rebuilds an
        equal module."""
        return {**self.loss.get_config(), "return_stats": self.return_stats}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**config)

    def extra_repr(self) -> str:
        return changed(self.get_config(), {**self._agnostic().get_config(), "return_stats": False})


class KLDivergence(_TorchDivergence):
    r"""Kullback–Leibler divergence KL(y_true ‖ y_pred) as a ``torch.nn.Module``.

    ``forward(y_true, y_pred, sample_weight=None, *, mask=None, labels=None, num_items=None)``;
    options and reductions as :class:`kldiv.KLDivergence` (``"batchmean"`` is PyTorch's
    ``F.kl_div(reduction="batchmean")``: per sample of the leading axis).

    ``return_stats=True`` (keyword-only; the functional forms take it too): ``forward`` returns
    ``(loss, stats)``, ``stats`` a dict with attribute access of detached tensors of the per-sample
    shape, the fused path's names and definitions (:mod:`kldiv.torch._stats`, with the math):
    ``per_token`` (the divergence before ``sample_weight``, ``T²`` and the reduction), ``teacher_lse``
    and ``student_lse`` (:math:`\log\sum_i e^{s_i}` of the row ``s`` = ``x / T`` of logits and
    log-probabilities, ``log(x) / T`` of probabilities), ``student_entropy`` (:math:`H(Q)` of the
    student's distribution as the formula forms it); 0 at masked positions. The loss and its
    gradients are those of the call without statistics.

    Example:
        >>> import torch, kldiv.torch
        >>> loss = kldiv.torch.KLDivergence(reduction="sum")
        >>> print(f"{loss(torch.tensor([[0., 1.]]), torch.tensor([[0.6, 0.4]])).item():.4f}")
        0.9163
        >>> with_stats = kldiv.torch.KLDivergence(reduction="sum", epsilon=0, return_stats=True)
        >>> value, stats = with_stats(torch.tensor([[0., 1.]]), torch.tensor([[0.6, 0.4]]))
        >>> print(f"{stats.per_token[0]:.4f} {stats.student_entropy[0]:.4f} {stats.teacher_lse[0]:.1f}")
        0.9163 0.6730 0.0
    """

    _agnostic = _losses.KLDivergence


class JSDivergence(_TorchDivergence):
    """Generalized Jensen–Shannon divergence ``JS_β(y_true, y_pred)`` as a ``torch.nn.Module``.

    Options as :class:`kldiv.JSDivergence` (``beta=0.5`` by default); ``forward`` as :class:`KLDivergence`.
    """

    _agnostic = _losses.JSDivergence


kl_divergence = _losses.functional(
    _losses.KLDivergence,
    "kl_divergence",
    """Functional :class:`KLDivergence`; with the default ``reduction="none"`` and no weight it is
    the per-sample loss of :func:`kldiv.kl_divergence` (same options). ``return_stats=True`` returns
    ``(loss, stats)`` (:mod:`kldiv.torch._stats`).""",
    _call_overrides,
    Collector,
)
kl_divergence.__module__ = __name__

js_divergence = _losses.functional(
    _losses.JSDivergence,
    "js_divergence",
    """Functional :class:`JSDivergence` (per-sample by default, like :func:`kldiv.js_divergence`);
    ``return_stats=True`` returns ``(loss, stats)`` (:mod:`kldiv.torch._stats`).""",
    _call_overrides,
    Collector,
)
js_divergence.__module__ = __name__
