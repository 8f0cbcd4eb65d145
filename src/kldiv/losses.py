"""``KLDivergence``, ``JSDivergence`` and their functional forms, framework-agnostic.

The result has the caller's array type: NumPy in, NumPy out; PyTorch in, PyTorch out with autograd
intact; JAX in, JAX out under ``jit`` and ``grad``; any array-API array likewise. Python lists and
scalars are converted as Keras converts them (Python floats become float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from . import _distribute, _evaluate, _validate
from ._prepare import Prepared, prepare
from .arguments import CallArguments, PerSampleArguments, SampleArguments, check, split
from .core.reductions import KERAS3_REDUCTIONS, host_gradient, reduce_weighted
from .kernels import dispatch
from .options import NOT_OPTIONS, OptionArguments, Options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .arguments import FunctionalArguments

Array = Any


def per_sample(
    options: Options,
    y_true: Array,
    y_pred: Array,
    *,
    keras3_shapes: bool | None = None,
    mask: Array | None = None,
    labels: Array | None = None,
) -> Array:
    """The per-sample divergence in the output dtype: prepare, plan, evaluate (the functional forms
    and the Keras adapters' ``call``)."""
    prepared = prepare(options, y_true, y_pred, keras3_shapes=keras3_shapes, mask=mask, labels=labels)
    plan = _plan(options, prepared)
    return prepared.output(_evaluate.per_sample(options, prepared, plan))


def _plan(options: Options, prepared: Prepared, reduction_gradient: Any = None) -> dispatch.Plan:
    """The call's :class:`~kldiv.kernels.dispatch.Plan`, and the inputs widened as it says."""
    request = dispatch.describe(prepared.xp, prepared.y_true, prepared.y_pred)
    plan = dispatch.plan(options, request, reduction_gradient)
    if plan.widen:
        prepared.widen()
    return plan


def kl_divergence(y_true: Array, y_pred: Array, **keywords: Unpack[PerSampleArguments]) -> Array:
    r"""Per-sample Kullback–Leibler divergence :math:`\sum_i t_i \log(t_i / p_i)` along ``axis``.

    With the defaults this is ``tf.keras.losses.kl_divergence`` (aliases ``kld``, ``KLD``,
    ``kullback_leibler_divergence``): ``y_true`` is cast to ``y_pred``'s dtype, both are clipped to
    ``[1e-7, 1]``, and the naive program is ``sum(y_true * log(y_true / y_pred), axis=-1)``.

    Args:
        y_true: target (teacher) distribution P, shape ``[batch, d0, .., dN]``.
        y_pred: predicted (student) distribution Q, same shape (or broadcastable).
        y_true_format: ``"probs"``, ``"log_probs"`` or ``"logits"``.
        y_pred_format: the same for ``y_pred``.
        from_logits: Keras-style shorthand for ``y_pred_format="logits"``.
        epsilon: ``1e-7`` (Keras clip) or ``0`` (exact: ``0·log 0 = 0``, ``+inf`` where ``p = 0 < t``).
        axis: the distribution axis.
        dtype: ``None`` (``y_pred``'s float dtype) or a float dtype name both inputs are cast to.
            float16 and bfloat16 are accumulated in float32 and returned in their own dtype.
        direction: ``"forward"`` KL(P‖Q), ``"reverse"`` KL(Q‖P), ``"symmetric"`` (their sum). The
            gradient reaches ``y_pred`` in every direction.
        temperature: ``T > 0``; both inputs become ``log_softmax(log x / T)``.
        scale_by_temperature_squared: multiply by ``T²`` (Hinton et al.).
        mask: boolean, broadcastable to the per-sample loss; ``False`` positions give exactly 0
            and receive exactly 0 gradient.
        labels: integer labels of the per-sample loss shape; positions equal to ``ignore_index``
            are masked out (token-level distillation).
        ignore_index: the label value to mask (``-100``, as PyTorch and Hugging Face).
        validate: check the input values (NaN, range, rows summing to 1, equal shapes).
        backend: ``"auto"`` (a fused kernel for large inputs: Numba for NumPy / CPU torch, Triton
            for CUDA torch, when installed; else the core), ``"numba"``, ``"triton"`` or
            ``"core"``; see :mod:`kldiv.kernels.dispatch`. Results agree to float32 rounding.

    Returns:
        The per-sample loss, shape ``[batch, d0, .., dN-1]``, in the caller's array type.

    Raises:
        TypeError: ``y_pred`` is not floating point (as tf_keras), or an option has the wrong type.
        ValueError: an option is out of range, the shapes do not broadcast, or (``validate=True``)
            an input is not a valid distribution.

    Example:
        >>> import kldiv
        >>> print(kldiv.kl_divergence([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]))
        [ 9.1628921e-01 -3.0809074e-06]
        >>> print(kldiv.kl_divergence([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]], epsilon=0))
        [0.9162907 0.       ]
    """
    check(keywords, PerSampleArguments, "kl_divergence()")
    call, options = split(keywords, SampleArguments)
    return per_sample(Options.of("kl", options), y_true, y_pred, **call)


kld = KLD = kullback_leibler_divergence = kl_divergence


def js_divergence(y_true: Array, y_pred: Array, **keywords: Unpack[PerSampleArguments]) -> Array:
    r"""Per-sample generalized Jensen–Shannon divergence along ``axis``.

    .. math:: \mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),
              \qquad M = \beta P + (1-\beta) Q

    ``P`` is ``y_true`` (teacher), ``Q`` is ``y_pred`` (student). ``JS_β`` is 0 at ``β ∈ {0, 1}``;
    ``JS_β / β → KL(P‖Q)`` as ``β → 0`` and ``JS_β / (1−β) → KL(Q‖P)`` as ``β → 1``. For
    ``0 < β < 1`` it equals TRL's ``generalized_jsd_loss`` and Liger-Kernel's JSD with the same
    ``beta`` (both return the unscaled KL at the endpoints instead). ``β = 1/2`` is the symmetric
    Jensen–Shannon divergence, bounded by ``log 2``. Other arguments as :func:`kl_divergence`.

    Example:
        >>> import kldiv
        >>> print(kldiv.js_divergence([[1.0, 0.0]], [[0.0, 1.0]], epsilon=0))
        [0.6931472]
    """
    check(keywords, PerSampleArguments, "js_divergence()")
    call, options = split(keywords, SampleArguments)
    return per_sample(Options.of("js", options), y_true, y_pred, **call)


class _DivergenceLoss:
    """A Keras-style loss object: options at construction, ``__call__`` weights and reduces."""

    _DIVERGENCE: ClassVar[str]
    """``"kl"`` or ``"js"`` (:meth:`Options.of`)."""
    _DEFAULT_NAME: ClassVar[str]

    def __init__(
        self, reduction: str | None = "auto", name: str | None = None, **options: Unpack[OptionArguments]
    ) -> None:
        """``reduction`` (a :class:`kldiv.Reduction` value, default ``"auto"``), ``name`` (default
        ``"kl_divergence"`` / ``"js_divergence"``) and the options of :func:`kl_divergence` /
        :func:`js_divergence`, the same names and defaults."""
        self.reduction = _validate.reduction(reduction)
        self.name = _validate.name(self._DEFAULT_NAME if name is None else name)
        self.options = Options.of(self._DIVERGENCE, options)

    def __call__(
        self,
        y_true: Array,
        y_pred: Array,
        sample_weight: Array | None = None,
        **arguments: Unpack[CallArguments],
    ) -> Array:
        """Weighted, reduced loss: a scalar for every reduction but ``"none"`` / ``None``.

        Args:
            y_true, y_pred: the two distributions (see :func:`kl_divergence`).
            sample_weight: Keras ``sample_weight``: a scalar, ``[batch]``, the per-sample loss
                shape, or anything broadcastable to it (a trailing size-1 axis is squeezed and a
                missing trailing axis added, as Keras does).
            **arguments: ``mask``, ``labels``, ``num_items`` (:class:`kldiv.arguments.CallArguments`):
                a boolean keep-mask broadcastable to the per-sample loss; labels that mask the
                positions equal to the ``ignore_index`` option; the global denominator of the mean
                reductions (gradient accumulation, data parallel), a positive number or scalar array.

        Raises:
            ValueError: ``sample_weight`` has a shape that cannot be aligned with the per-sample
                loss (the message names both shapes), ``num_items`` with a reduction that does
                not divide, or ``reduction`` is ``"auto"`` / ``"sum_over_batch_size"`` under an
                active ``tf.distribute`` strategy (outside ``compile``/``fit``).
        """
        return self._call(y_true, y_pred, sample_weight, arguments)

    def _call(
        self, y_true: Array, y_pred: Array, sample_weight: Array | None, arguments: dict, stats: Any = None
    ) -> Array:
        """:meth:`__call__`; ``stats``, a collector of the call's statistics (``return_stats`` of the
        PyTorch losses, :class:`kldiv.torch._stats.Collector`), is filled on the way."""
        check(arguments, CallArguments, f"A {type(self).__name__} loss call", also=("sample_weight",))
        _distribute.check_reduction(self.reduction, y_pred)
        num_items = _validate.num_items(arguments.get("num_items"), self.reduction)
        keras3 = self.reduction in KERAS3_REDUCTIONS
        mask, labels = arguments.get("mask"), arguments.get("labels")
        prepared = prepare(self.options, y_true, y_pred, keras3_shapes=keras3, mask=mask, labels=labels)
        weight = None if sample_weight is None else prepared.cast(sample_weight)
        if num_items is not None and not isinstance(num_items, (int, float)):
            num_items = prepared.cast(num_items)

        def reduction_gradient() -> float | None:
            return host_gradient(
                self.reduction,
                prepared.loss_shape,
                has_weight=weight is not None,
                num_items=num_items,
                count=prepared.count_kept,
            )

        def reduce(losses: Array) -> Array:
            return reduce_weighted(
                prepared.xp, losses, weight, self.reduction, mask=prepared.keep, num_items=num_items
            )

        plan = _plan(self.options, prepared, reduction_gradient)
        return prepared.output(_evaluate.reduced(self.options, prepared, plan, reduce, stats))

    def get_config(self) -> dict[str, Any]:
        """Every option: ``type(loss).from_config(loss.get_config())`` is an equal loss."""
        return {
            "reduction": self.reduction,
            "name": self.name,
            **self.options.config(NOT_OPTIONS[self._DIVERGENCE]),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """The loss described by ``config`` (the output of :meth:`get_config`)."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        # Equal losses have equal configs, hence equal (type, name, reduction); reading attributes
        # with defaults keeps hashing a half-built object (TorchDynamo does that) from raising.
        return hash((type(self).__name__, getattr(self, "name", None), getattr(self, "reduction", None)))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({options})"


class KLDivergence(_DivergenceLoss):
    """Computes the Kullback–Leibler divergence loss between ``y_true`` and ``y_pred``.

    ``loss = y_true * log(y_true / y_pred)``, summed over the last axis, then weighted and reduced
    exactly as ``tf.keras.losses.KLDivergence`` (tf_keras 2.x; Keras 3 with the Keras 3 reduction
    spellings ``"mean"``, ``"mean_with_sample_weight"`` and ``None``). Every option of
    :func:`kl_divergence` is an option here too, with the same name and default.

    Args:
        reduction: a :class:`kldiv.Reduction` value; default ``"auto"`` (= ``"sum_over_batch_size"``).
            ``"batchmean"`` divides the sum by the leading axis (PyTorch), ``"token_mean"`` by
            the number of unmasked positions.
        name: the loss name (Keras: ``"kl_divergence"``).

    Raises:
        ValueError: unknown ``reduction`` or another bad option, at construction.

    Example:
        >>> import kldiv
        >>> kl = kldiv.KLDivergence()
        >>> print(f"{kl([.4, .9, .2], [.5, .8, .12]):.8f}")
        0.11891246
        >>> y_true, y_pred = [[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]
        >>> print(f"{kl(y_true, y_pred):.3f}")
        0.458
        >>> print(f"{kl(y_true, y_pred, sample_weight=[0.8, 0.2]):.5f}")
        0.36652
        >>> print(f"{kldiv.KLDivergence(reduction=kldiv.Reduction.SUM)(y_true, y_pred):.3f}")
        0.916
    """

    _DIVERGENCE = "kl"
    _DEFAULT_NAME = "kl_divergence"


class JSDivergence(_DivergenceLoss):
    """The generalized Jensen–Shannon divergence loss ``JS_β(y_true, y_pred)`` (see
    :func:`js_divergence`), weighted and reduced like :class:`KLDivergence`.

    Example:
        >>> import kldiv
        >>> jsd = kldiv.JSDivergence(beta=0.5, epsilon=0)
        >>> print(f"{jsd([[1.0, 0.0]], [[0.0, 1.0]]):.6f}")
        0.693147
    """

    _DIVERGENCE = "js"
    _DEFAULT_NAME = "js_divergence"


class Wrapper:
    """A framework's loss object that holds a kldiv loss as ``self.loss`` (the ``nn.Module`` losses):
    its options and reduction are that loss's."""

    __slots__ = ()
    loss: _DivergenceLoss

    @property
    def options(self) -> Options:
        """The validated :class:`kldiv.Options`."""
        return self.loss.options

    @property
    def reduction(self) -> str | None:
        return self.loss.reduction


def functional(
    loss_type: type[_DivergenceLoss],
    name: str,
    doc: str,
    overrides: Callable[[dict[str, Any], Array], dict[str, Any]] | None = None,
    statistics: Callable[[], Any] | None = None,
) -> Callable[..., Array]:
    """The functional form of ``loss_type`` that the framework adapters export as ``name``:
    ``name(y_true, y_pred, sample_weight=None, **keywords)`` is
    ``loss_type(reduction, **options)(y_true, y_pred, sample_weight, **call)``, where ``keywords``
    (:class:`kldiv.arguments.FunctionalArguments`) hold ``reduction`` (default ``"none"``: per
    sample), the call arguments and the options. ``overrides(options, y_pred)`` adds the adapter's
    per-call options (PyTorch's autocast rule). With ``statistics`` (a collector factory) the form
    also takes ``return_stats=False``; ``True`` returns ``(loss, collector.result())``."""

    def divergence(
        y_true: Array,
        y_pred: Array,
        sample_weight: Array | None = None,
        **keywords: Unpack[FunctionalArguments],
    ) -> Array:
        stats = None
        if statistics is not None and _validate.flag("return_stats", keywords.pop("return_stats", False)):
            stats = statistics()
        call, options = split(keywords, CallArguments)
        if overrides is not None:
            options = {**options, **overrides(options, y_pred)}
        loss = loss_type(**{"reduction": "none", **options})
        # Through the class: Dynamo before PyTorch 2.13 hashes a called object that it is still
        # constructing symbolically (and its __hash__ reads unset attributes).
        value = type(loss)._call(loss, y_true, y_pred, sample_weight, call, stats)
        return value if stats is None else (value, stats.result())

    divergence.__name__ = divergence.__qualname__ = name
    divergence.__doc__ = doc
    return divergence
