r"""Chunked and fused-linear divergences for PyTorch, with memory bounded by a chunk.

The naive program these functions equal (``y_true`` = teacher, ``y_pred`` = student)::

    student_logits = student_hidden @ student_weight.T + student_bias      # [BT, V]  (never formed)
    teacher_logits = teacher_hidden @ teacher_weight.T + teacher_bias      # or given, or sparse top-k
    per_token = kldiv.kl_divergence(teacher_logits, student_logits,
                                    y_true_format="logits", from_logits=True, **options)
    ce = F.cross_entropy(φ(student_logits), labels, reduction="none")      # with weight_hard_loss > 0
    loss = weight_soft_loss * reduce(per_token) + weight_hard_loss * reduce(ce)  # "token_mean", "sum", ...

The tokens are processed in chunks of ``c`` rows (:func:`kldiv.core.chunking.rows_per_chunk`, from a
memory budget or ``chunk_size``) by :mod:`kldiv.fused._torch_chunks`: peak extra memory is one chunk
of logits and its temporaries plus the gradients themselves.

Options are kldiv's one option set (:class:`kldiv.Options`, the same names and defaults as
:class:`kldiv.KLDivergence`; both inputs are logits, so ``epsilon`` defaults to exact mode), plus
``chunk_size``, ``memory_budget`` and ``teacher_topk_format``. Which kernel computes the chunks is
:func:`kldiv.kernels.dispatch.plan`'s decision (``backend=`` as everywhere).

float16 / bfloat16 inputs: the divergence is computed in float32 (kldiv's rule) and the loss is
returned in the input dtype (``dtype="float32"`` keeps float32); the parameter gradients are
accumulated in float32 and returned in the parameters' dtype (``accumulation_dtype=`` chooses).

Sparse teacher (top-k): ``teacher_topk_indices [BT, k]`` with ``teacher_topk_values`` given as
``"log_probs"`` (their missing mass ``1 − Σ exp`` is the teacher's *tail bucket*, compared with the
student's probability mass outside the top-k: the divergence of the two distributions coarsened to
``k + 1`` outcomes, a lower bound of the full divergence and equal to it when ``k = V``) or as
``"logits"`` (renormalised over the k entries; the student is then restricted and renormalised to
the same k entries, the convention of top-k distillation in the literature).

Chosen top-k support (``support=``, ``topk=k``, a dense teacher): both sides coarsened to the teacher's
top-k (``"teacher"``), the student's (``"student"``) or their union (``"union"``) plus a tail bucket
(:func:`kldiv.core.topk.support_log_probs`) — e.g. reverse KL on the student's top-k.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kldiv._extras import require

from .. import _validate
from ..arguments import FusedCallArguments, TeacherArguments, TokenArguments, check, split, teacher_form
from ..core import chunking
from ..core.logit_maps import LogitMap
from ..options import NOT_OPTIONS, OptionArguments, Options, changed
from . import _torch_chunks
from ._torch_chunks import Inputs

torch = require("torch", "kldiv.fused.torch")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..arguments import ChunkedArguments

__all__ = [
    "FusedLinearJSDivergence",
    "FusedLinearKLDivergence",
    "chunked_js_divergence",
    "chunked_kl_divergence",
    "topk_teacher",
]

REDUCTIONS = ("auto", "token_mean", "mean", "sum_over_batch_size", "sum", "batchmean", "none")
TOPK_FORMATS = ("log_probs", "logits")
VOCAB_ALIGNMENTS = (None, "truncate_teacher", "pad_student")
"""How a teacher with more vocabulary entries than the student is aligned to it (None: it is an error)."""
_CHUNKING = (
    "chunk_size",
    "memory_budget",
    "teacher_topk_format",
    "student_softcap",
    "teacher_softcap",
    "student_logit_scale",
    "teacher_logit_scale",
    "vocab_alignment",
    "return_stats",
    "weight_hard_loss",
    "weight_soft_loss",
    "accumulation_dtype",
    "support",
    "topk",
)
_FIXED = {
    "y_true_format": "logits",
    "y_pred_format": "logits",
    "from_logits": True,
    "axis": -1,
    "validate": False,
}
"""Options these losses fix: both inputs are logits, the vocabulary is last."""


class _Divergence(torch.nn.Module):
    _DIVERGENCE = "kl"

    def __init__(
        self,
        reduction: str = "auto",
        *,
        chunk_size: int | None = None,
        memory_budget: int = chunking.DEFAULT_MEMORY_BUDGET,
        teacher_topk_format: str = "log_probs",
        student_softcap: float | None = None,
        teacher_softcap: float | None = None,
        student_logit_scale: float | None = None,
        teacher_logit_scale: float | None = None,
        vocab_alignment: str | None = None,
        return_stats: bool = False,
        weight_hard_loss: float = 0.0,
        weight_soft_loss: float = 1.0,
        accumulation_dtype: str | None = None,
        support: str = "teacher",
        topk: int | None = None,
        **options: Unpack[OptionArguments],
    ) -> None:
        super().__init__()
        self.support, self.topk = _validate.support(support, topk)
        self.weight_hard_loss = _weight("weight_hard_loss", weight_hard_loss)
        self.weight_soft_loss = _weight("weight_soft_loss", weight_soft_loss)
        if not (self.weight_hard_loss or self.weight_soft_loss):
            raise ValueError(
                "Arguments `weight_hard_loss`, `weight_soft_loss`: expected at least one positive; "
                "received 0.0 and 0.0."
            )
        if accumulation_dtype not in _torch_chunks.ACCUMULATION_DTYPES:
            raise ValueError(
                f"Argument `accumulation_dtype`: expected one of {_torch_chunks.ACCUMULATION_DTYPES}; "
                f"received {accumulation_dtype!r}."
            )
        self.accumulation_dtype = accumulation_dtype
        if vocab_alignment not in VOCAB_ALIGNMENTS:
            raise ValueError(
                f"Argument `vocab_alignment`: expected one of {VOCAB_ALIGNMENTS}; "
                f"received {vocab_alignment!r}."
            )
        if reduction not in REDUCTIONS:
            raise ValueError(f"Argument `reduction`: expected one of {REDUCTIONS}; received {reduction!r}.")
        if teacher_topk_format not in TOPK_FORMATS:
            raise ValueError(
                f"Argument `teacher_topk_format`: expected one of {TOPK_FORMATS}; "
                f"received {teacher_topk_format!r}."
            )
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(
                f"Argument `chunk_size`: expected a positive integer or None; received {chunk_size!r}."
            )
        self.options = Options.of(self._DIVERGENCE, options, fixed=_FIXED)
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.teacher_topk_format = teacher_topk_format
        self.vocab_alignment = vocab_alignment
        if not isinstance(return_stats, bool):
            raise TypeError(f"Argument `return_stats`: expected True or False; received {return_stats!r}.")
        self.return_stats = return_stats
        self.student_map = LogitMap(student_logit_scale, student_softcap, name="student")
        self.teacher_map = LogitMap(teacher_logit_scale, teacher_softcap, name="teacher")
        self.student_softcap, self.teacher_softcap = self.student_map.softcap, self.teacher_map.softcap
        self.student_logit_scale, self.teacher_logit_scale = self.student_map.scale, self.teacher_map.scale

    def get_config(self) -> dict[str, Any]:
        """``reduction``, every option and the chunking settings; ``type(m)(**m.get_config())`` is equal."""
        chunks = {key: getattr(self, key) for key in _CHUNKING}
        return {
            "reduction": self.reduction,
            **self.options.config((*_FIXED, *NOT_OPTIONS[self._DIVERGENCE])),
            **chunks,
        }

    def extra_repr(self) -> str:
        return changed(self.get_config(), type(self)().get_config())

    def _loss(
        self,
        inputs: Inputs,
        tokens: TokenArguments,
        batch_size: int,
        lead: tuple[int, ...],
        collective: Any = None,
    ) -> Any:
        source = inputs.student_logits if inputs.student_logits is not None else inputs.student_hidden
        vocab = source.shape[-1] if inputs.student_logits is not None else inputs.student_weight.shape[0]
        _validate.support_teacher(self.support, self.topk, inputs.topk_indices is not None, vocab)
        recorder = None
        if self.return_stats:
            from ._torch_stats import Recorder

            accumulate = torch.float64 if source.dtype == torch.float64 else torch.float32
            sparse = inputs.topk_indices is not None
            recorder = Recorder(
                source.shape[0],
                sparse,
                accumulate,
                source.device,
                self.options.temperature,
                support=self.topk is not None,
            )
        value = _torch_chunks.loss(
            self.options,
            self.reduction,
            inputs,
            tokens,
            batch_size=batch_size,
            chunk_size=self.chunk_size,
            memory_budget=self.memory_budget,
            topk_format=self.teacher_topk_format,
            student_map=self.student_map,
            teacher_map=self.teacher_map,
            recorder=recorder,
            weight_hard_loss=self.weight_hard_loss,
            weight_soft_loss=self.weight_soft_loss,
            accumulation_dtype=self.accumulation_dtype,
            support=self.support,
            topk=self.topk,
            collective=collective,
        )
        dtype = getattr(torch, self.options.dtype) if self.options.dtype is not None else source.dtype
        value = value if value.dtype == dtype else value.to(dtype)
        if recorder is None:
            return value
        return value, recorder.result(recorder.per_token, lead)


def _weight(name: str, value: Any) -> float:
    """A term's weight: a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"Argument `{name}`: expected a finite number ≥ 0; received {value!r}.")
    return float(value)


class FusedLinearKLDivergence(_Divergence):
    """KL divergence of the teacher and ``student_hidden @ student_weight.T (+ bias)``, without the
    ``tokens × vocab`` student logits (see the module docstring for the program it equals).

    Args:
        reduction: ``"auto"`` (default, as every kldiv loss; = ``"token_mean"``, ``"mean"``,
            ``"sum_over_batch_size"``: sum over unmasked tokens / their count), ``"sum"``,
            ``"batchmean"`` (sum / batch size: the leading axis of 3-D hidden states) or ``"none"``
            (per-token values).
        direction, epsilon, dtype, temperature, scale_by_temperature_squared, ignore_index, backend:
            as :class:`kldiv.KLDivergence`, the same defaults (``epsilon=None`` is exact mode here:
            both inputs are logits).
        chunk_size: tokens per chunk; default from ``memory_budget`` bytes of chunk temporaries, and at
            least :data:`MATMUL_MIN_ROWS` (512) tokens when the logits are formed from hidden states.
        teacher_topk_format: ``"log_probs"`` or ``"logits"`` for a sparse teacher.
        student_softcap, teacher_softcap, student_logit_scale, teacher_logit_scale: what each model
            does to its logits after the projection (:class:`kldiv.arguments.LogitMapArguments`):
            ``z → c·tanh(s·z / c)``, applied to each chunk before the temperature, with the gradient
            through it (Gemma's ``final_logit_softcapping``, Cohere's ``logit_scale``). A sparse
            teacher's values are taken as they are (store them after the model's own map).
        vocab_alignment: a dense teacher with ``V_t > V`` entries (a padded vocabulary, extra tokens):
            ``None`` (default) raises a ``ValueError`` naming both sizes; ``"truncate_teacher"`` drops
            the teacher's entries ``≥ V`` (its distribution renormalised over the student's ids);
            ``"pad_student"`` gives the student logit ``−inf`` (probability 0, no gradient) at ids
            ``≥ V``, so teacher mass there makes the forward KL ``+inf``. Padded slots never receive
            probability or gradient.
        return_stats: return ``(loss, stats)``: a dict of detached per-token ``[BT]`` (or ``[B, T]``)
            tensors recorded in the same chunked pass (:mod:`kldiv.fused._torch_stats`): ``per_token``,
            ``student_lse``, ``teacher_lse``, ``student_entropy``; with a sparse teacher
            ``teacher_mass``, ``student_mass``, ``topk_overlap`` instead of ``teacher_lse`` (with
            ``topk``: all seven, the masses on the chosen support); with
            ``labels``, ``cross_entropy`` (``CE_t`` below, whatever ``weight_hard_loss``).
        weight_hard_loss, weight_soft_loss: the loss is ``weight_hard_loss · CE + weight_soft_loss · D``
            (Liger-Kernel's names; defaults 0 and 1: the divergence alone), ``D`` this loss's
            divergence and ``CE`` the cross-entropy of the student with ``labels`` (required when
            ``weight_hard_loss > 0``), ``CE_t = logsumexp(u_t) − u_t[label_t]`` with ``u`` the
            student's logits after its logit map at temperature 1 (no ``T²``), each reduced by
            ``reduction`` over the same kept tokens (Liger's normalisation with ``"token_mean"``:
            both sums divided by the tokens whose label is not ``ignore_index``). It is computed from
            the divergence's chunk, its gradient ``softmax(u) − onehot`` added into the chunk's
            ``∂/∂logits`` before the products back to the hidden states and weights: no second pass
            over the head (:mod:`kldiv.fused._torch_hard`). ``weight_soft_loss=0`` computes the
            cross-entropy alone and the teacher may then be omitted (unless ``return_stats``).
        accumulation_dtype: the dtype the gradients of the hidden states, weights and biases are
            accumulated in across chunks, cast to each tensor's dtype once at the end: None (default,
            kldiv's rule: float32 for float16 / bfloat16 tensors, float64 for float64), ``"float32"``,
            ``"float64"`` or ``"weight"`` (each tensor's own dtype: half the gradient memory for
            bfloat16 parameters, at bfloat16 precision — Liger's ``accum_dtype=None``).
        support, topk: compare a dense teacher with the student on a top-k support ``S`` of ``topk = k``
            entries per token: ``"teacher"`` (its top-k), ``"student"`` (the student's: reverse KL on the
            student's top-k) or ``"union"`` (both, deduplicated). Both sides are coarsened to ``S`` plus a
            tail bucket (the mass outside ``S``), so the value is a divergence of two distributions: ``≥ 0``,
            0 at equality, at most the dense value and equal to it at ``k = V`` — never clamped. The
            gradient flows through the values at ``S`` and the tails, not through the choice of ``S``
            (piecewise constant). ``topk=None`` (default): the whole vocabulary (a stored top-k teacher:
            its own k; ``"student"`` / ``"union"`` raise a ``ValueError`` there). Chunks run by autograd
            through the core (:mod:`kldiv.fused._torch_support`), memory still one chunk's.

    Call ``loss(student_hidden, student_weight, student_bias=None, *, teacher_logits=... |
    teacher_hidden=..., teacher_weight=..., teacher_bias=... | teacher_topk_indices=...,
    teacher_topk_values=..., labels=None, mask=None, sample_weight=None, num_items=None)``.
    Hidden states are ``[BT, H]`` or ``[B, T, H]``; gradients reach the student's hidden states,
    weight and bias, and the teacher's tensors when they require a gradient.
    """

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        student_bias: torch.Tensor | None = None,
        **arguments: Unpack[FusedCallArguments],
    ) -> torch.Tensor:
        check(arguments, FusedCallArguments, f"{type(self).__name__}.forward()")
        teacher, tokens = split(arguments, TeacherArguments)
        teacher_logits, teacher_hidden = teacher.get("teacher_logits"), teacher.get("teacher_hidden")
        teacher_weight, teacher_bias = teacher.get("teacher_weight"), teacher.get("teacher_bias")
        teacher_topk_indices = teacher.get("teacher_topk_indices")
        teacher_topk_values = teacher.get("teacher_topk_values")
        batch_size = student_hidden.shape[0]
        hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
        rows, vocab = hidden.shape[0], student_weight.shape[0]
        if student_bias is not None and student_bias.ndim != 1:
            raise TypeError(
                f"Argument `student_bias`: expected a [V] bias (the third positional argument); received "
                f"shape {tuple(student_bias.shape)}. The teacher is keyword-only: pass "
                "`teacher_logits=...` (or `teacher_hidden=`, `teacher_topk_indices=`)."
            )
        given = any(value is not None for value in teacher.values())
        form = teacher_form(teacher) if given or self.weight_soft_loss or self.return_stats else None
        if student_weight.shape[-1] != hidden.shape[-1]:
            raise ValueError(
                f"Argument `student_weight`: expected shape [V, {hidden.shape[-1]}] to match the hidden "
                f"size; received {tuple(student_weight.shape)}."
            )
        if form == "teacher_logits":
            teacher_logits = teacher_logits.reshape(rows, -1)
            teacher_vocab = teacher_logits.shape[-1]
        elif form == "teacher_hidden":
            teacher_vocab = teacher_weight.shape[0]
        if form in ("teacher_logits", "teacher_hidden") and teacher_vocab != vocab:
            aligned = self._align(student_weight, student_bias, teacher_vocab, form)
            student_weight, student_bias, vocab = aligned
            if self.vocab_alignment == "truncate_teacher":
                teacher_logits = None if teacher_logits is None else teacher_logits[:, :vocab]
                teacher_weight = None if teacher_weight is None else teacher_weight[:vocab]
                teacher_bias = None if teacher_bias is None else teacher_bias[:vocab]
        inputs = Inputs(student_hidden=hidden, student_weight=student_weight, student_bias=student_bias)
        if form == "teacher_logits":
            inputs.teacher_logits = teacher_logits
        elif form == "teacher_hidden":
            inputs.teacher_hidden = teacher_hidden.reshape(rows, -1)
            inputs.teacher_weight, inputs.teacher_bias = teacher_weight, teacher_bias
        elif form is not None:
            inputs.topk_indices = teacher_topk_indices.reshape(rows, -1)
            inputs.topk_values = teacher_topk_values.reshape(rows, -1)
        return self._loss(inputs, tokens, batch_size, tuple(student_hidden.shape[:-1]))

    def _align(
        self, weight: torch.Tensor, bias: torch.Tensor | None, teacher_vocab: int, form: str
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The student's head for a teacher of ``teacher_vocab`` entries (see ``vocab_alignment``)."""
        vocab = weight.shape[0]
        if self.vocab_alignment is None or teacher_vocab < vocab:
            hint = (
                ""
                if teacher_vocab < vocab
                else " (or pass vocab_alignment='truncate_teacher' / 'pad_student')"
            )
            name = "teacher_weight" if form == "teacher_hidden" else "teacher_logits"
            raise ValueError(
                f"Argument `{name}`: expected the student's vocabulary size {vocab}; received a teacher of "
                f"{teacher_vocab} entries{hint}."
            )
        if self.vocab_alignment == "truncate_teacher":
            return weight, bias, vocab
        # pad_student: rows of zeros with bias −inf give logits exactly −inf; autograd through the
        # concatenation hands the real rows their gradient and drops the padded ones'.
        pad = teacher_vocab - vocab
        weight = torch.cat([weight, weight.new_zeros(pad, weight.shape[1])])
        base = bias if bias is not None else weight.new_zeros(vocab)
        bias = torch.cat([base, base.new_full((pad,), -math.inf)])
        return weight, bias, teacher_vocab


class FusedLinearJSDivergence(FusedLinearKLDivergence):
    """:class:`FusedLinearKLDivergence` for the generalized Jensen–Shannon divergence ``JS_β``
    (``beta`` as :func:`kldiv.js_divergence`, default 0.5)."""

    _DIVERGENCE = "js"


def _chunked(
    module_type: type[_Divergence], teacher_logits: torch.Tensor, student_logits: torch.Tensor, keywords: dict
) -> torch.Tensor:
    tokens, construction = split(keywords, TokenArguments)
    module = module_type(**construction)
    batch_size = student_logits.shape[0]
    vocab, teacher_vocab = student_logits.shape[-1], teacher_logits.shape[-1]
    same_rows = tuple(teacher_logits.shape[:-1]) == tuple(student_logits.shape[:-1])
    if same_rows and teacher_vocab > vocab and module.vocab_alignment == "truncate_teacher":
        teacher_logits = teacher_logits[..., :vocab]
    elif same_rows and teacher_vocab > vocab and module.vocab_alignment == "pad_student":
        # A copy of the student's logits with −inf columns: probability 0 there, and no gradient.
        student_logits = torch.nn.functional.pad(student_logits, (0, teacher_vocab - vocab), value=-math.inf)
    logits = student_logits.reshape(-1, student_logits.shape[-1])
    rows, vocab = logits.shape
    if tuple(teacher_logits.shape) != tuple(student_logits.shape):
        hint = " (vocab_alignment= aligns a larger teacher vocabulary)" if same_rows else ""
        raise ValueError(
            f"Arguments `teacher_logits` and `student_logits`: expected equal shapes{hint}; received "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}."
        )
    inputs = Inputs(student_logits=logits, teacher_logits=teacher_logits.reshape(rows, vocab))
    return module._loss(inputs, tokens, batch_size, tuple(student_logits.shape[:-1]))


def chunked_kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, **keywords: Unpack[ChunkedArguments]
) -> torch.Tensor:
    """KL divergence of logits ``[..., V]`` computed chunk by chunk over tokens: forward and backward
    never hold more than a chunk of temporaries besides the gradient itself. Keyword arguments
    (:class:`kldiv.arguments.ChunkedArguments`) as :class:`FusedLinearKLDivergence` plus ``labels``,
    ``mask``, ``sample_weight``, ``num_items``; gradients reach both logits (the teacher's when it
    requires one)."""
    return _chunked(FusedLinearKLDivergence, teacher_logits, student_logits, keywords)


def chunked_js_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, **keywords: Unpack[ChunkedArguments]
) -> torch.Tensor:
    """:func:`chunked_kl_divergence` for ``JS_β``."""
    return _chunked(FusedLinearJSDivergence, teacher_logits, student_logits, keywords)


def topk_teacher(
    teacher_logits: torch.Tensor | None = None,
    *,
    k: int,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    teacher_softcap: float | None = None,
    teacher_logit_scale: float | None = None,
    values_dtype: torch.dtype = torch.float32,
    indices_dtype: torch.dtype = torch.int32,
    chunk_size: int | None = None,
    memory_budget: int = chunking.DEFAULT_MEMORY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A teacher's top-``k`` entries in the stored form of the sparse losses
    (``teacher_topk_format="log_probs"``): ``(indices, log_probs)`` of shape ``[..., k]``.

    ``log_probs = log_softmax(φ(z) / T)`` at the ``k`` largest entries of each row, where ``z`` are the
    teacher's logits (given, or ``teacher_hidden @ teacher_weight.T + teacher_bias`` formed chunk by
    chunk: no ``[BT, V]`` block), ``φ`` its logit map (``teacher_softcap``, ``teacher_logit_scale``) and
    ``T`` the ``temperature`` of the loss that will read them (top-k log-probabilities cannot be
    re-tempered later). Storage: ``k · (bytes(indices_dtype) + bytes(values_dtype))`` per token —
    ``k = 128`` in int32 + bfloat16 is 768 bytes, against ``4·V`` (128 KB at ``V = 32000``) for float32
    logits. Computed without gradients.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Argument `k`: expected a positive integer; received {k!r}.")
    if (teacher_logits is None) == (teacher_hidden is None or teacher_weight is None):
        given = [
            n
            for n, v in (
                ("teacher_logits", teacher_logits),
                ("teacher_hidden", teacher_hidden),
                ("teacher_weight", teacher_weight),
            )
            if v is not None
        ]
        raise ValueError(
            "Arguments `teacher_logits` / `teacher_hidden`, `teacher_weight`: expected exactly one teacher "
            f"form (logits, or hidden states with the head's weight); received {given or 'none'}."
        )
    source = teacher_logits if teacher_logits is not None else teacher_hidden
    vocab = source.shape[-1] if teacher_logits is not None else teacher_weight.shape[0]
    if k > vocab:
        raise ValueError(f"Argument `k`: expected at most the vocabulary size {vocab}; received {k}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"Argument `temperature`: expected a positive number; received {temperature!r}.")
    lead = source.shape[:-1]
    inputs = Inputs(
        teacher_logits=None if teacher_logits is None else teacher_logits.reshape(-1, vocab),
        teacher_hidden=None
        if teacher_hidden is None
        else teacher_hidden.reshape(-1, teacher_hidden.shape[-1]),
        teacher_weight=teacher_weight,
        teacher_bias=teacher_bias,
    )
    rows = inputs.teacher_logits.shape[0] if teacher_logits is not None else inputs.teacher_hidden.shape[0]
    indices = torch.empty((rows, k), dtype=indices_dtype, device=source.device)
    values = torch.empty((rows, k), dtype=values_dtype, device=source.device)
    per_chunk = chunking.rows_per_chunk(
        rows, vocab, memory_budget=memory_budget, chunk_size=chunk_size, bytes_per_element=4, temporaries=3
    )
    logit_map = LogitMap(teacher_logit_scale, teacher_softcap, name="teacher")
    for chunk, logits in _torch_chunks.logits_in_chunks(inputs, per_chunk, logit_map):
        wide = logits.float() if logits.element_size() < 4 else logits
        top = torch.topk(torch.log_softmax(wide / temperature if temperature != 1.0 else wide, -1), k, dim=-1)
        indices[chunk], values[chunk] = top.indices.to(indices_dtype), top.values.to(values_dtype)
    return indices.reshape(*lead, k), values.reshape(*lead, k)
