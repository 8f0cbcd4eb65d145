"""The options of every kldiv loss: one frozen dataclass, validated at construction.

Every entry point — :class:`kldiv.KLDivergence` and its functional form, the Keras, tf_keras, PyTorch
and JAX adapters, the chunked and fused-linear losses, the vocabulary-parallel losses — takes the
options as ``**options`` typed :class:`OptionArguments`, builds one :class:`Options` with
:meth:`Options.of` and hands that object down; nothing forwards options by hand, and a loss's config
is :meth:`Options.config` (the fields themselves).

One rule for ``epsilon`` everywhere: ``None`` (the default) means Keras' clip ``1e-7`` when both
inputs are probabilities — the ``tf.keras.losses.KLDivergence`` contract — and exact mode (``0``)
as soon as either input is given as log-probabilities or logits, which Keras never takes and where
the clip would be a bias (on peaked distillation logits it lowers the KL by a third). An explicit
value is always honoured.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from . import _validate, errors
from .core.logit_maps import LogitMap

KERAS_EPSILON = 1e-7
"""Keras' ``backend.epsilon()``: the clip of Keras mode."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Options shared by every kldiv loss (same names and defaults in every form).

    Attributes:
        y_true_format: ``"probs"`` | ``"log_probs"`` | ``"logits"``: how ``y_true`` is given.
        y_pred_format: the same for ``y_pred``; ``from_logits=True`` is shorthand for ``"logits"``.
        epsilon: the Keras clip ``[epsilon, 1]`` (``> 0``) or exact mode (``0``), resolved from
            ``None`` by the rule of the module docstring.
        axis: the axis that holds the distribution (Keras: ``-1``).
        dtype: ``None`` (return ``y_pred``'s float dtype, as tf_keras) or a dtype name that both
            inputs are cast to first (as the Keras 3 loss ``dtype``). float16 and bfloat16 are
            always computed in float32 and rounded once at the end, on every path.
        direction: ``"forward"`` KL(y_true‖y_pred), ``"reverse"`` KL(y_pred‖y_true) or
            ``"symmetric"`` (their sum). Jensen–Shannon losses do not use it.
        beta: ``None`` for a KL divergence; a float in ``[0, 1]`` selects the generalized
            Jensen–Shannon divergence with mixture ``beta·P + (1−beta)·Q``.
        temperature: ``T > 0`` dividing the log-probabilities / logits of both inputs.
        scale_by_temperature_squared: multiply the per-sample loss by ``T²`` (Hinton et al., 2015).
        ignore_index: positions whose ``labels`` equal it are masked out (PyTorch's ``-100``).
        validate: check the input values (eager only): no NaN, probabilities in ``[0, 1]`` summing
            to 1, log-probabilities whose ``logsumexp`` is 0, equal shapes.
        backend: ``"auto"``, ``"core"``, ``"numba"`` or ``"triton"`` (:mod:`kldiv.kernels.dispatch`).
        student_softcap, student_logit_scale: the map ``φ(z) = c·tanh(s·z / c)`` (or ``s·z`` without a
            cap) that the student's model applies to its logits after the output projection (Gemma's
            ``final_logit_softcapping`` ``c``, Cohere's ``logit_scale`` ``s``;
            :mod:`kldiv.core.logit_maps`), applied to ``y_pred`` before the temperature, gradients
            through it; a logit of ``−inf`` stays ``−inf``. None: not applied. Only for
            ``y_pred_format="logits"``.
        teacher_softcap, teacher_logit_scale: the same for ``y_true`` (``y_true_format="logits"``).
    """

    y_true_format: str = "probs"
    y_pred_format: str = "probs"
    epsilon: float = KERAS_EPSILON
    axis: int = -1
    dtype: str | None = None
    direction: str = "forward"
    beta: float | None = None
    temperature: float = 1.0
    scale_by_temperature_squared: bool = False
    ignore_index: int = -100
    validate: bool = False
    backend: str = "auto"
    student_softcap: float | None = None
    teacher_softcap: float | None = None
    student_logit_scale: float | None = None
    teacher_logit_scale: float | None = None

    @classmethod
    def create(
        cls,
        *,
        y_true_format: str = "probs",
        y_pred_format: str = "probs",
        from_logits: bool = False,
        epsilon: float | None = None,
        axis: int = -1,
        dtype: Any = None,
        direction: str = "forward",
        beta: float | None = None,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        validate: bool = False,
        backend: str = "auto",
        student_softcap: float | None = None,
        teacher_softcap: float | None = None,
        student_logit_scale: float | None = None,
        teacher_logit_scale: float | None = None,
    ) -> Options:
        """Validate and build; raises ``ValueError`` / ``TypeError`` naming the bad argument."""
        true_format, pred_format = _validate.formats(y_true_format, y_pred_format, from_logits)
        student = _validate.logit_map(
            "student", "y_pred_format", pred_format, student_logit_scale, student_softcap
        )
        teacher = _validate.logit_map(
            "teacher", "y_true_format", true_format, teacher_logit_scale, teacher_softcap
        )
        if epsilon is None:
            epsilon = KERAS_EPSILON if true_format == pred_format == "probs" else 0.0
        return cls(
            y_true_format=true_format,
            y_pred_format=pred_format,
            epsilon=_validate.epsilon(epsilon),
            axis=_validate.integer("axis", axis),
            dtype=_validate.dtype(dtype),
            direction=_validate.direction(direction),
            beta=None if beta is None else _validate.beta(beta),
            temperature=_validate.temperature(temperature),
            scale_by_temperature_squared=_validate.flag(
                "scale_by_temperature_squared", scale_by_temperature_squared
            ),
            ignore_index=_validate.integer("ignore_index", ignore_index),
            validate=_validate.flag("validate", validate),
            backend=_validate.backend(backend),
            student_softcap=student.softcap,
            teacher_softcap=teacher.softcap,
            student_logit_scale=student.scale,
            teacher_logit_scale=teacher.scale,
        )

    @classmethod
    def of(
        cls, divergence: str, arguments: Mapping[str, Any], *, fixed: Mapping[str, Any] | None = None
    ) -> Options:
        """:meth:`create` for a loss of one ``divergence``: ``"kl"`` takes no ``beta``; ``"js"`` takes
        no ``direction`` and defaults ``beta`` to 0.5. ``fixed`` options are the loss's own (e.g. the
        logits formats of the fused losses) and may not be given.

        Raises:
            TypeError: an option this loss does not take.
        """
        refused = dict(_REFUSED[divergence])
        refused.update(
            {name: f"no `{name}`: this loss fixes it to {value!r}" for name, value in (fixed or {}).items()}
        )
        for name, expected in refused.items():
            if name in arguments:
                raise TypeError(errors.message(name, expected, arguments[name]))
        extra = {"beta": 0.5} if divergence == "js" else {}
        options = cls.create(**{**extra, **arguments, **(fixed or {})})
        if options.beta in (0.0, 1.0):
            warnings.warn(
                f"Argument `beta`: JS_β at beta={options.beta} is 0 for every input (the mixture equals "
                "one of the two distributions). TRL's and Liger's beta=0 / beta=1 mean the forward / "
                "reverse KL: use a KL loss with direction='forward' / 'reverse' for that.",
                UserWarning,
                stacklevel=_validate.user_stacklevel(),
            )
        return options

    def config(self, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options as a dict of their fields (a loss's ``get_config``), without ``exclude``."""
        skip = set(exclude)
        return {field.name: getattr(self, field.name) for field in FIELDS if field.name not in skip}

    def as_dict(self) -> dict[str, Any]:
        return self.config()

    def formula_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the per-sample formula — :func:`kldiv.core.divergences.divergence`
        and the kernels' ``fused_rows`` / ``fused_rows_triton``, which must equal it — on inputs
        that went through the logit maps already (:attr:`student_map`, :attr:`teacher_map`: the
        core's ``divergence`` takes them as ``pred_map`` / ``true_map``, the kernels' callers apply
        them first)."""
        return {
            "true_format": self.y_true_format,
            "pred_format": self.y_pred_format,
            "direction": self.direction,
            "beta": self.beta,
            "epsilon": self.epsilon,
            "temperature": self.temperature,
        }

    @property
    def loss_scale(self) -> float:
        """``T²`` with ``scale_by_temperature_squared`` (Hinton et al.), else 1: the one factor every
        path multiplies the per-sample divergence (and its gradient) by."""
        return self.temperature**2 if self.scale_by_temperature_squared else 1.0

    def without_maps(self) -> Options:
        """These options with no logit maps (for a caller that has applied them itself)."""
        return dataclasses.replace(self, **dict.fromkeys(LOGIT_MAP_FIELDS))

    def __post_init__(self) -> None:
        # The two logit maps are made once per options object, as every kernel call asks for them
        # (plain attributes, not functools.cached_property: its lock breaks torch.compile's tracing).
        object.__setattr__(
            self, "_student_map", LogitMap(self.student_logit_scale, self.student_softcap, name="student")
        )
        object.__setattr__(
            self, "_teacher_map", LogitMap(self.teacher_logit_scale, self.teacher_softcap, name="teacher")
        )

    @property
    def student_map(self) -> LogitMap:
        """The student's (``y_pred``'s) logit map φ (the identity when neither option is set)."""
        return self._student_map

    @property
    def teacher_map(self) -> LogitMap:
        """The teacher's (``y_true``'s) logit map."""
        return self._teacher_map

    @property
    def divergence(self) -> str:
        """``"js"`` (``beta`` given), else the KL ``direction``."""
        return "js" if self.beta is not None else self.direction


FIELDS = dataclasses.fields(Options)
LOGIT_MAP_FIELDS = ("student_softcap", "teacher_softcap", "student_logit_scale", "teacher_logit_scale")
"""The :class:`Options` fields of the two logit maps (:attr:`Options.student_map`, ``teacher_map``)."""

_REFUSED = {
    "kl": {"beta": "no `beta` for a KL divergence (it selects the Jensen–Shannon divergence)"},
    "js": {"direction": "no `direction` for the Jensen–Shannon divergence (use a KL loss for it)"},
}
NOT_OPTIONS = {divergence: tuple(refused) for divergence, refused in _REFUSED.items()}
"""The :class:`Options` field a loss of each divergence does not take (the other one's parameter)."""


class LogitMapArguments(TypedDict, total=False):
    """What each model does to its logits after the projection (:mod:`kldiv.core.logit_maps`): options
    of every loss whose side is given as logits (:class:`Options`).

    Keys:
        student_softcap, teacher_softcap: Gemma's ``final_logit_softcapping`` ``c``: ``z → c·tanh(z / c)``.
        student_logit_scale, teacher_logit_scale: Cohere's ``logit_scale`` ``s``: ``z → s·z`` (before a cap).
    """

    student_softcap: float | None
    teacher_softcap: float | None
    student_logit_scale: float | None
    teacher_logit_scale: float | None


class OptionArguments(LogitMapArguments, total=False):
    """The keyword options of every kldiv loss, for ``**options: Unpack[OptionArguments]`` signatures
    (IDEs list them); meanings and defaults: :class:`Options` and :meth:`Options.create`."""

    y_true_format: str
    y_pred_format: str
    from_logits: bool
    epsilon: float | None
    axis: int
    dtype: Any
    direction: str
    beta: float | None
    temperature: float
    scale_by_temperature_squared: bool
    ignore_index: int
    validate: bool
    backend: str


def changed(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``"key=value, ..."`` for the entries of ``config`` that differ from ``defaults`` (a default
    object's config): what a module's ``repr`` shows. ``epsilon`` is compared with the default of
    ``config``'s own formats (the rule of the module docstring), so that an unset ``epsilon`` is
    never shown."""
    if "y_true_format" in config:  # a loss whose formats are options (fixed ones fix epsilon's default)
        formats = (config["y_true_format"], config["y_pred_format"])
        defaults = {**defaults, "epsilon": KERAS_EPSILON if formats == ("probs", "probs") else 0.0}
    return ", ".join(
        f"{key}={value!r}" for key, value in config.items() if defaults.get(key, object()) != value
    )
