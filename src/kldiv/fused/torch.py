r"""Chunked and fused-linear divergences for PyTorch, with memory bounded by a chunk.

The naive program these functions equal (``y_true`` = teacher, ``y_pred`` = student)::

    student_logits = student_hidden @ student_weight.T + student_bias      # [BT, V]  (never formed)
    teacher_logits = teacher_hidden @ teacher_weight.T + teacher_bias      # or given, or sparse top-k
    per_token = kldiv.kl_divergence(teacher_logits, student_logits,
                                    y_true_format="logits", from_logits=True, **options)
    loss = reduce(per_token)                                               # "token_mean", "sum", ...

Forward walks the tokens in chunks of ``c`` rows (:func:`kldiv.core.chunking.rows_per_chunk`, from a
memory budget or ``chunk_size``). For each chunk it forms the chunk's logits, computes the per-token
divergence with kldiv's core and its gradient w.r.t. the chunk's logits ``g`` (autograd on the chunk,
so every option of the core is available and no formula is re-typed), and accumulates the gradients
of the parameters right away::

    grad_hidden[chunk] = g @ weight            grad_weight += g.T @ hidden[chunk]      grad_bias += g.sum(0)

so that peak extra memory is one chunk of logits and its temporaries plus the gradients themselves.
Backward multiplies the stored gradients by the upstream scalar. With ``reduction="none"`` the
per-token gradient factors are only known in backward, which then recomputes the chunks.

float16 / bfloat16 inputs: the divergence is computed in float32 (kldiv's rule), the parameter
gradients are accumulated in float32 and returned in the parameters' dtype.

Sparse teacher (top-k): ``teacher_topk_indices [BT, k]`` with ``teacher_topk_values`` given as
``"log_probs"`` (their missing mass ``1 − Σ exp`` is the teacher's *tail bucket*, compared with the
student's probability mass outside the top-k: the divergence of the two distributions coarsened to
``k + 1`` outcomes, a lower bound of the full divergence and equal to it when ``k = V``) or as
``"logits"`` (renormalised over the k entries; the student is then restricted and renormalised to
the same k entries, the convention of top-k distillation in the literature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import losses as _losses
from ..core import chunking

__all__ = [
    "FusedLinearJSDivergence",
    "FusedLinearKLDivergence",
    "chunked_js_divergence",
    "chunked_kl_divergence",
]

# Chunks that form logits with a matmul get at least this many tokens: below it, each chunk's passes
# over the [V, H] weight (three products per chunk) cost more than the memory saved (measured at
# V = 128256: BT = 512 took 1.03-1.13x the naive time with 196-row chunks, 0.96x with 512).
MATMUL_MIN_ROWS = 512
REDUCTIONS = ("token_mean", "mean", "sum_over_batch_size", "auto", "sum", "batchmean", "none")
TOPK_FORMATS = ("log_probs", "logits")


@dataclass(frozen=True)
class _Config:
    options: dict[str, Any]  # options of kldiv.kl_divergence / js_divergence (beta selects JS)
    reduction: str
    rows_per_chunk: int
    topk_format: str
    kernel: str | None  # "numba" (CPU), "triton" (CUDA) or None: autograd through the core


@dataclass
class _Inputs:
    """What the chunks read: the student's logits source and one teacher form (the rest None)."""

    student_hidden: torch.Tensor | None
    student_weight: torch.Tensor | None
    student_bias: torch.Tensor | None
    student_logits: torch.Tensor | None
    teacher_logits: torch.Tensor | None
    teacher_hidden: torch.Tensor | None
    teacher_weight: torch.Tensor | None
    teacher_bias: torch.Tensor | None
    topk_indices: torch.Tensor | None
    topk_values: torch.Tensor | None


def _linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(hidden, weight, bias)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 → float32 (kldiv's accumulation rule); float32 / float64 unchanged."""
    return x.float() if x.element_size() < 4 else x


def _sparse_log_probs(
    student_logits: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, topk_format: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student as distributions over the top-k entries (+ the tail bucket):
    :func:`kldiv.core.topk.sparse_log_probs`."""
    import array_api_compat.torch as xp

    from ..core import topk

    def exclude(student: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return student.scatter(-1, top, -math.inf)

    return topk.sparse_log_probs(
        xp, _wide(student_logits), indices, _wide(values), topk_format, exclude=exclude
    )


def _chunk_values(config: _Config, teacher: torch.Tensor, student: torch.Tensor, sparse: Any) -> torch.Tensor:
    """Per-token divergence of one chunk (the core's formula, autograd-able)."""
    options = dict(config.options)
    if sparse is not None:
        teacher, student = _sparse_log_probs(student, *sparse, config.topk_format)
        options.update(y_true_format="log_probs", y_pred_format="log_probs", temperature=1.0)
    else:
        options.update(y_true_format="logits", y_pred_format="logits")
    function = _losses.js_divergence if options.get("beta") is not None else _losses.kl_divergence
    if options.get("beta") is None:
        options.pop("beta", None)
    return function(_wide(teacher), _wide(student), backend="core", **options)


def _run(
    config: _Config,
    inputs: _Inputs,
    coef: torch.Tensor,
    keep: torch.Tensor,
    want: dict[str, bool],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All chunks: per-token values ``[BT]`` (0 where masked) and the requested gradients of
    ``Σ coef · values`` w.r.t. the inputs named in ``want``."""
    rows = coef.shape[0]
    values = torch.zeros(rows, dtype=coef.dtype, device=coef.device)
    grads: dict[str, torch.Tensor] = {}
    for name, tensor in vars(inputs).items():
        if want.get(name):
            # Parameter gradients accumulate in float32; row gradients are written per chunk. Weights'
            # are written by the first chunk's product (no zero fill, no read of zeros); biases add.
            new = torch.zeros if rows == 0 or name.endswith("_bias") else torch.empty
            grads[name] = new(tensor.shape, dtype=coef.dtype, device=tensor.device)
    workspace = _Workspace(config, inputs, any(want.values()))
    for index, (start, stop) in enumerate(chunking.chunks(rows, config.rows_per_chunk)):
        chunk = slice(start, stop)
        _run_chunk(config, inputs, coef, keep, want, values, grads, chunk, workspace, first=index == 0)
    return values, grads


class _Workspace:
    """Chunk-sized buffers reused by every chunk of a kernel pass (no allocation per chunk): the
    student's logits, which the kernels overwrite with their gradient, and the teacher's
    logits when they are formed from hidden states (given teacher logits are read in place)."""

    def __init__(self, config: _Config, inputs: _Inputs, want_grad: bool) -> None:
        self.student = self.teacher = None
        if config.kernel is None:
            return
        # The kernels read the student's dtype (Triton reads float16 / bfloat16 as they are).
        source = inputs.student_logits if inputs.student_logits is not None else inputs.student_hidden
        rows, dtype, device = min(config.rows_per_chunk, source.shape[0]), source.dtype, source.device
        vocab = source.shape[-1] if inputs.student_logits is not None else inputs.student_weight.shape[0]
        if inputs.student_logits is None or want_grad:
            self.student = torch.empty((rows, vocab), dtype=dtype, device=device)
        if inputs.teacher_hidden is not None:  # formed in the teacher's dtype, cast per chunk
            self.teacher = torch.empty((rows, vocab), dtype=inputs.teacher_hidden.dtype, device=device)


def _linear_into(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None
) -> torch.Tensor:
    """``hidden @ weight.T + bias`` written into ``out[:rows]`` (a new tensor when ``out`` is None)."""
    same = out is not None and hidden.dtype == weight.dtype == out.dtype
    if not same or (bias is not None and bias.dtype != out.dtype):
        return _linear(hidden, weight, bias)
    out = out[: hidden.shape[0]]
    if bias is None:
        return torch.mm(hidden.detach(), weight.detach().T, out=out)
    return torch.addmm(bias.detach(), hidden.detach(), weight.detach().T, out=out)


def _student_logits(inputs: _Inputs, chunk: slice, out: torch.Tensor | None = None) -> torch.Tensor:
    if inputs.student_logits is not None:
        return inputs.student_logits[chunk]
    return _linear_into(inputs.student_hidden[chunk], inputs.student_weight, inputs.student_bias, out)


def _teacher_logits(inputs: _Inputs, chunk: slice, out: torch.Tensor | None = None) -> torch.Tensor:
    if inputs.teacher_logits is not None:
        return inputs.teacher_logits[chunk]
    return _linear_into(inputs.teacher_hidden[chunk], inputs.teacher_weight, inputs.teacher_bias, out)


def _kernel_options(config: _Config) -> dict[str, Any]:
    options = config.options
    return {
        "true_format": "logits",
        "pred_format": "logits",
        "direction": options.get("direction", "forward"),
        "beta": options.get("beta"),
        "epsilon": options["epsilon"],
        "temperature": options["temperature"],
    }


def _chunk_by_numba(config, inputs, coef, keep, want, chunk, workspace):
    """Value and ∂/∂student-logits of one chunk from the fused Numba kernel (CPU, one pass)."""
    from ..kernels.numba_cpu import fused_rows

    student = _student_logits(inputs, chunk, workspace.student).detach().contiguous()
    teacher = _teacher_logits(inputs, chunk, workspace.teacher).detach().to(student.dtype).contiguous()
    want_grad = any(want.values())
    out = None
    if want_grad:  # in place over the formed logits; the given logits are the caller's: a buffer
        out = student if inputs.student_logits is None else workspace.student[: student.shape[0]]
    values, grad = fused_rows(
        teacher.numpy(),
        student.numpy(),
        coef[chunk].double().numpy(),
        keep[chunk].numpy(),
        want_grad=want_grad,
        out=None if out is None else out.numpy(),
        **_kernel_options(config),
    )
    gradients = {} if grad is None else {"student": torch.from_numpy(grad)}
    return torch.from_numpy(values), gradients


def _chunk_by_triton(config, inputs, coef, keep, want, chunk, workspace):
    """Value and ∂/∂student-logits of one chunk from the Triton kernel in one launch, the gradient
    written over the chunk's logits buffer (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).
    float16 / bfloat16 logits are read as they are and accumulated in float32."""
    from ..kernels.triton import fused_rows_triton

    student = _student_logits(inputs, chunk, workspace.student).detach()
    teacher = _teacher_logits(inputs, chunk, workspace.teacher).detach().to(student.dtype)
    want_grad = any(want.values())
    out = None
    if want_grad:  # in place over the formed logits; the given logits are the caller's: a buffer
        out = student if inputs.student_logits is None else workspace.student[: student.shape[0]]
    values, grad = fused_rows_triton(
        teacher, student, coef[chunk], keep[chunk], want_grad=want_grad, out=out, **_kernel_options(config)
    )
    return values, {} if grad is None else {"student": grad}


def _chunk_by_autograd(config, inputs, coef, keep, want, chunk, workspace):
    """Value and gradients of one chunk by autograd through kldiv's core (any device, every option)."""
    teacher_wants = any(
        want.get(n) for n in ("teacher_logits", "teacher_hidden", "teacher_weight", "teacher_bias")
    )
    with torch.enable_grad():
        student = _student_logits(inputs, chunk).detach().requires_grad_(True)
        leaves = {"student": student}
        sparse, teacher = None, None
        if inputs.topk_indices is not None:
            sparse = (inputs.topk_indices[chunk], inputs.topk_values[chunk])
        else:
            teacher = _teacher_logits(inputs, chunk).detach().requires_grad_(teacher_wants)
            if teacher_wants:
                leaves["teacher"] = teacher
        per_token = _chunk_values(config, teacher, student, sparse)
        per_token = torch.where(keep[chunk], per_token, torch.zeros_like(per_token))
        if not any(want.values()):
            return per_token.detach(), {}
        gradients = torch.autograd.grad((per_token * coef[chunk]).sum(), list(leaves.values()))
    return per_token.detach(), dict(zip(leaves, gradients, strict=True))


_COMPUTE = {"numba": _chunk_by_numba, "triton": _chunk_by_triton, None: _chunk_by_autograd}


def _add_matmul(accumulator: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """``accumulator += a @ b`` in place, or ``accumulator = a @ b`` for the ``first`` chunk
    (float16 / bfloat16 factors are widened to its dtype)."""
    if a.dtype != accumulator.dtype or b.dtype != accumulator.dtype:
        a, b = a.to(accumulator.dtype), b.to(accumulator.dtype)
    if first:
        torch.mm(a, b, out=accumulator)
    else:
        accumulator.addmm_(a, b)


def _run_chunk(config, inputs, coef, keep, want, values, grads, chunk, workspace, first=False) -> None:
    per_token, gradients = _COMPUTE[config.kernel](config, inputs, coef, keep, want, chunk, workspace)
    values[chunk] = per_token
    for side, g in gradients.items():
        if want.get(f"{side}_logits"):
            grads[f"{side}_logits"][chunk] = g
        hidden = getattr(inputs, f"{side}_hidden")
        weight = getattr(inputs, f"{side}_weight")
        if want.get(f"{side}_hidden"):
            target = grads[f"{side}_hidden"][chunk]
            if g.dtype == weight.dtype == target.dtype:
                torch.mm(g, weight.detach(), out=target)  # straight into the gradient's rows
            else:  # low precision: the product in the factors' dtype, stored in float32
                target.copy_(g @ weight.detach().to(g.dtype))
        if want.get(f"{side}_weight"):
            _add_matmul(grads[f"{side}_weight"], g.T, hidden[chunk].detach(), first)
        if want.get(f"{side}_bias"):
            grads[f"{side}_bias"] += g.sum(0, dtype=grads[f"{side}_bias"].dtype)


_NAMES = tuple(_Inputs.__dataclass_fields__)


class _FusedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, config, coef, keep, *tensors):
        inputs = _Inputs(*tensors)
        want = {n: bool(ctx.needs_input_grad[3 + i]) for i, n in enumerate(_NAMES)}
        ctx.config, ctx.inputs, ctx.coef, ctx.keep, ctx.want = config, inputs, coef, keep, want
        scalar = config.reduction != "none"
        values, grads = _run(config, inputs, coef, keep, want if scalar else {})
        ctx.grads = grads
        if not scalar:
            return values * coef  # per token: mask, weight and T² applied
        return (values * coef).sum()

    @staticmethod
    def backward(ctx, grad_output):
        inputs, want = ctx.inputs, ctx.want
        if ctx.config.reduction == "none":
            _, grads = _run(ctx.config, inputs, ctx.coef * grad_output.to(ctx.coef.dtype), ctx.keep, want)
        else:
            if ctx.grads is None:  # a second backward through a retained graph: compute them again
                _, grads = _run(ctx.config, inputs, ctx.coef, ctx.keep, want)
            else:
                # Hand the stored gradients over (no reference kept), so that autograd can use them
                # as the parameters' .grad without a copy.
                grads, ctx.grads = ctx.grads, None
            # Always one multiply on CUDA (comparing the upstream with 1 would synchronise with the
            # host); on the CPU the comparison is free and usually spares a pass over the gradients.
            if grad_output.device.type != "cpu" or bool(grad_output != 1):
                grads = {name: g.mul_(grad_output.to(g.dtype)) for name, g in grads.items()}
        out = []
        for name in _NAMES:
            tensor = getattr(inputs, name)
            out.append(grads[name].to(tensor.dtype) if name in grads else None)
        return (None, None, None, *out)


def _coefficients(
    reduction: str,
    rows: int,
    device: torch.device,
    keep: torch.Tensor,
    sample_weight: Any,
    num_items: Any,
    batch_size: int,
    squared_temperature: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``∂ loss / ∂ per-token value`` for a reduction (1 per token for ``"none"``), in ``dtype``
    (float64 for float64 inputs, else float32: the accumulation dtype)."""
    coef = keep.to(dtype)
    if sample_weight is not None:
        weight = torch.as_tensor(sample_weight, dtype=dtype, device=device)
        coef = coef * weight.reshape(-1).expand(rows)
    coef = coef * squared_temperature
    if reduction in ("none", "sum"):
        return coef
    if num_items is not None:
        return coef / torch.as_tensor(num_items, dtype=dtype, device=device)
    if reduction == "batchmean":
        return coef / batch_size
    count = keep.sum().to(dtype)
    return torch.where(count > 0, coef / count.clamp(min=1), torch.zeros_like(coef))


_FORCE_TRITON = False
"""Tests only: the Triton kernel computes the chunks of CPU tensors too (set ``TRITON_INTERPRET=1``
before Triton is imported: the interpreter runs it)."""

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _chunk_kernel(inputs: _Inputs, dtype: torch.dtype, device: torch.device, options: dict) -> str | None:
    """Which fused kernel computes the chunks: ``"triton"`` for CUDA tensors (every float dtype),
    ``"numba"`` for CPU float32 / float64, None (autograd through the core) for a sparse top-k
    teacher (the kernels read dense rows), a teacher that needs a gradient (they give only the
    student's), JS at ``β ∈ {0, 1}``, while Dynamo traces, or when the kernel is not installed."""
    from ..kernels import dispatch

    teacher = (inputs.teacher_logits, inputs.teacher_hidden, inputs.teacher_weight, inputs.teacher_bias)
    if (
        inputs.topk_indices is not None
        or any(t is not None and t.requires_grad for t in teacher)
        or options.get("beta") in (0.0, 1.0)
        or torch.compiler.is_compiling()
    ):
        return None
    if device.type == "cuda" or _FORCE_TRITON:
        return "triton" if dtype in TRITON_DTYPES and dispatch.triton_installed() else None
    if device.type == "cpu" and dtype in (torch.float32, torch.float64) and dispatch.numba_installed():
        return "numba"
    return None


def _temporaries(kernel: str | None, inputs: _Inputs, dtype: torch.dtype) -> int:
    """Chunk-sized arrays (in units of the compute dtype's ``[c, V]``) at a kernel path's peak: the
    student's logits buffer, the teacher's when it is formed (both kernels write the gradient over
    the logits), and float32 copies of a float16 / bfloat16 gradient for the weight's accumulation."""
    if kernel is None:
        return chunking.AUTOGRAD_TEMPORARIES
    count = 1 + (inputs.teacher_hidden is not None)  # given student logits: the buffer holds the gradient
    if torch.finfo(dtype).bits < 32:
        count += 1
    return max(1, count)


class _Divergence(torch.nn.Module):
    _JS = False

    def __init__(
        self,
        reduction: str = "token_mean",
        *,
        beta: float | None = None,
        direction: str = "forward",
        epsilon: float = 0.0,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        chunk_size: int | None = None,
        memory_budget: int = chunking.DEFAULT_MEMORY_BUDGET,
        teacher_topk_format: str = "log_probs",
    ) -> None:
        super().__init__()
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
        options = {"epsilon": epsilon, "temperature": temperature, "ignore_index": ignore_index}
        if self._JS:
            options["beta"] = 0.5 if beta is None else beta
        else:
            options["direction"] = direction
        # Validate once through kldiv's own option checks (same messages as kldiv.KLDivergence).
        _losses.Options.create(
            **{k: v for k, v in options.items() if k != "ignore_index"}, ignore_index=ignore_index
        )
        self.reduction = reduction
        self.options = options
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.teacher_topk_format = teacher_topk_format

    def _loss(
        self,
        rows,
        vocab,
        dtype,
        device,
        inputs: _Inputs,
        labels,
        mask,
        sample_weight,
        num_items,
        batch_size,
    ):
        keep = torch.ones(rows, dtype=torch.bool, device=device)
        if labels is not None:
            keep = keep & (labels.reshape(-1) != self.options["ignore_index"])
        if mask is not None:
            keep = keep & mask.reshape(-1).to(torch.bool)
        if keep.shape[0] != rows:
            raise ValueError(
                f"Arguments `labels` / `mask`: expected {rows} tokens; received {keep.shape[0]}."
            )
        squared_t = self.options["temperature"] ** 2 if self.scale_by_temperature_squared else 1.0
        accumulate = torch.float64 if dtype == torch.float64 else torch.float32
        coef = _coefficients(
            self.reduction, rows, device, keep, sample_weight, num_items, batch_size, squared_t, accumulate
        )
        kernel = _chunk_kernel(inputs, dtype, device, self.options)
        config = _Config(
            options=self.options,
            reduction=self.reduction,
            rows_per_chunk=chunking.rows_per_chunk(
                rows,
                vocab,
                memory_budget=self.memory_budget,
                chunk_size=self.chunk_size,
                bytes_per_element=max(4, torch.finfo(dtype).bits // 8),
                temporaries=_temporaries(kernel, inputs, dtype),
                minimum_rows=MATMUL_MIN_ROWS if inputs.student_logits is None else 1,
            ),
            topk_format=self.teacher_topk_format,
            kernel=kernel,
        )
        return _FusedFunction.apply(config, coef, keep, *(getattr(inputs, n) for n in _NAMES))


class FusedLinearKLDivergence(_Divergence):
    """KL divergence of the teacher and ``student_hidden @ student_weight.T (+ bias)``, without the
    ``tokens × vocab`` student logits (see the module docstring for the program it equals).

    Args:
        reduction: ``"token_mean"`` (default; = ``"mean"``, ``"sum_over_batch_size"``, ``"auto"``:
            sum over unmasked tokens / their count), ``"sum"``, ``"batchmean"`` (sum / batch size:
            the leading axis of 3-D hidden states) or ``"none"`` (per-token values).
        direction, epsilon, temperature, scale_by_temperature_squared, ignore_index: as
            :class:`kldiv.KLDivergence` (``epsilon`` defaults to 0, exact mode).
        chunk_size: tokens per chunk; default from ``memory_budget`` bytes of chunk temporaries, and at
            least :data:`MATMUL_MIN_ROWS` (512) tokens when the logits are formed from hidden states.
        teacher_topk_format: ``"log_probs"`` or ``"logits"`` for a sparse teacher.

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
        *,
        teacher_logits: torch.Tensor | None = None,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        teacher_topk_indices: torch.Tensor | None = None,
        teacher_topk_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        sample_weight: Any = None,
        num_items: Any = None,
    ) -> torch.Tensor:
        batch_size = student_hidden.shape[0]
        hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
        rows, vocab = hidden.shape[0], student_weight.shape[0]
        forms = [teacher_logits is not None, teacher_hidden is not None, teacher_topk_indices is not None]
        if sum(forms) != 1:
            raise ValueError(
                "Arguments `teacher_logits` / `teacher_hidden` / `teacher_topk_indices`: expected exactly "
                f"one teacher form; received {sum(forms)}."
            )
        if student_weight.shape[-1] != hidden.shape[-1]:
            raise ValueError(
                f"Argument `student_weight`: expected shape [V, {hidden.shape[-1]}] to match the hidden "
                f"size; received {tuple(student_weight.shape)}."
            )
        inputs = _Inputs(hidden, student_weight, student_bias, None, None, None, None, None, None, None)
        if teacher_logits is not None:
            inputs.teacher_logits = teacher_logits.reshape(rows, -1)
            if inputs.teacher_logits.shape[-1] != vocab:
                raise ValueError(
                    f"Argument `teacher_logits`: expected shape [{rows}, {vocab}]; received "
                    f"{tuple(teacher_logits.shape)}."
                )
        elif teacher_hidden is not None:
            if teacher_weight is None:
                raise ValueError(
                    "Argument `teacher_weight`: expected a [V, H_teacher] tensor with `teacher_hidden`; "
                    "received None."
                )
            inputs.teacher_hidden = teacher_hidden.reshape(rows, -1)
            inputs.teacher_weight, inputs.teacher_bias = teacher_weight, teacher_bias
        else:
            if teacher_topk_values is None:
                raise ValueError(
                    "Argument `teacher_topk_values`: expected a [BT, k] tensor with "
                    "`teacher_topk_indices`; received None."
                )
            inputs.topk_indices = teacher_topk_indices.reshape(rows, -1)
            inputs.topk_values = teacher_topk_values.reshape(rows, -1)
        return self._loss(
            rows,
            vocab,
            hidden.dtype,
            hidden.device,
            inputs,
            labels,
            mask,
            sample_weight,
            num_items,
            batch_size,
        )


class FusedLinearJSDivergence(FusedLinearKLDivergence):
    """:class:`FusedLinearKLDivergence` for the generalized Jensen–Shannon divergence ``JS_β``
    (``beta`` as :func:`kldiv.js_divergence`, default 0.5)."""

    _JS = True


def _chunked(module_type, teacher_logits, student_logits, **kwargs) -> torch.Tensor:
    call_keys = ("labels", "mask", "sample_weight", "num_items")
    call = {k: kwargs.pop(k) for k in call_keys if k in kwargs}
    module = module_type(**kwargs)
    batch_size = student_logits.shape[0]
    logits = student_logits.reshape(-1, student_logits.shape[-1])
    rows, vocab = logits.shape
    if tuple(teacher_logits.shape) != tuple(student_logits.shape):
        raise ValueError(
            f"Arguments `teacher_logits` and `student_logits`: expected equal shapes; received "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}."
        )
    inputs = _Inputs(
        None, None, None, logits, teacher_logits.reshape(rows, vocab), None, None, None, None, None
    )
    return module._loss(
        rows,
        vocab,
        logits.dtype,
        logits.device,
        inputs,
        call.get("labels"),
        call.get("mask"),
        call.get("sample_weight"),
        call.get("num_items"),
        batch_size,
    )


def chunked_kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """KL divergence of logits ``[..., V]`` computed chunk by chunk over tokens: forward and backward
    never hold more than a chunk of temporaries besides the gradient itself. Keyword arguments as
    :class:`FusedLinearKLDivergence` plus ``labels``, ``mask``, ``sample_weight``, ``num_items``;
    gradients reach both logits (the teacher's when it requires one)."""
    return _chunked(FusedLinearKLDivergence, teacher_logits, student_logits, **kwargs)


def chunked_js_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """:func:`chunked_kl_divergence` for ``JS_β``."""
    return _chunked(FusedLinearJSDivergence, teacher_logits, student_logits, **kwargs)
