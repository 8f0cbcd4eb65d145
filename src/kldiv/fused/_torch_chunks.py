r"""The chunk engine of the PyTorch chunked and fused-linear divergences (:mod:`kldiv.fused.torch`).

Forward walks the tokens in chunks of ``c`` rows (:func:`kldiv.core.chunking.rows_per_chunk`). For
each chunk it forms the chunk's logits, computes the per-token divergence and its gradient w.r.t.
the chunk's logits ``g`` — with the fused kernel the plan names (Numba on CPU, Triton on CUDA: value
and gradient in one pass, written over the chunk's logits buffer) or by autograd through kldiv's
core (every option, a teacher that needs a gradient, a dense teacher on a chosen top-k support:
:mod:`kldiv.fused._torch_support`) — and accumulates the gradients of the parameters right away::

    grad_hidden[chunk] = g @ weight            grad_weight += g.T @ hidden[chunk]      grad_bias += g.sum(0)

so that peak extra memory is one chunk of logits and its temporaries plus the gradients themselves.
Backward multiplies the stored gradients by the upstream scalar. With ``reduction="none"`` the
per-token gradient factors are only known in backward, which then recomputes the chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import _namespace
from .. import losses as _losses
from .._extras import require
from ..core import chunking
from ..core.logit_maps import IDENTITY, LogitMap
from ..core.reductions import token_weights
from ..kernels import dispatch
from ..options import Options
from . import _torch_hard, _torch_precision, _torch_sparse
from ._torch_precision import ACCUMULATION_DTYPES as ACCUMULATION_DTYPES  # re-exported: the losses check it
from ._torch_precision import wide as _wide

torch = require("torch", "kldiv.fused.torch")

# Chunks that form logits with a matmul get at least this many tokens: below it, each chunk's passes
# over the [V, H] weight (three products per chunk) cost more than the memory saved (measured at
# V = 128256: BT = 512 took 1.03-1.13x the naive time with 196-row chunks, 0.96x with 512).
MATMUL_MIN_ROWS = 512

DEVICE_ARRAYS = {"cpu": "torch", "cuda": "cuda"}
"""The :class:`kldiv.kernels.dispatch.Request` ``arrays`` of a device. Tests map ``"cpu"`` to
``"cuda"`` so that the plan sends CPU chunks to the Triton kernel (run by Triton's interpreter)."""


@dataclass(frozen=True)
class _Config:
    options: Options  # the chunk's divergence options: logits in, no T² (it is in the coefficients)
    reduction: str
    rows_per_chunk: int
    topk_format: str
    kernel: str | None  # the plan's: "numba" (CPU), "triton" (CUDA) or None: autograd through the core
    student_map: LogitMap = IDENTITY  # the student's logit scale / soft cap, applied to each chunk
    teacher_map: LogitMap = IDENTITY  # the teacher's (not to a sparse teacher: its values are final)
    soft: bool = True  # whether the divergence is computed (False: weight_soft_loss = 0, the CE alone)
    accumulation: str | None = None  # the parameter gradients' dtype (see ACCUMULATION_DTYPES)
    support: str = "teacher"  # with topk: a dense teacher compared on this top-k support (_torch_support)
    topk: int | None = None
    collective: Any = None  # vocabulary parallel: a _torch_vocab_parallel.Collective computes the chunks


@dataclass
class Inputs:
    """What the chunks read: the student's logits source and one teacher form (the rest None)."""

    student_hidden: torch.Tensor | None = None
    student_weight: torch.Tensor | None = None
    student_bias: torch.Tensor | None = None
    student_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_hidden: torch.Tensor | None = None
    teacher_weight: torch.Tensor | None = None
    teacher_bias: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    topk_values: torch.Tensor | None = None


def _linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(hidden, weight, bias)


def logits_in_chunks(inputs: Inputs, rows_per_chunk: int, logit_map: LogitMap = IDENTITY):
    """``(chunk, mapped teacher logits)`` for each chunk of the teacher's rows (formed from hidden states
    or sliced from given logits), without gradients: one ``[c, V]`` block at a time."""
    with torch.no_grad():
        rows = (inputs.teacher_logits if inputs.teacher_logits is not None else inputs.teacher_hidden).shape[
            0
        ]
        for start, stop in chunking.chunks(rows, rows_per_chunk):
            chunk = slice(start, stop)
            yield chunk, logit_map.apply(torch, _teacher_logits(inputs, chunk))


def _chunk_values(config: _Config, teacher: torch.Tensor, student: torch.Tensor, sparse: Any) -> torch.Tensor:
    """Per-token divergence of one chunk (the core's formula, autograd-able)."""
    options = config.options
    if sparse is not None:
        teacher, student = _torch_sparse.autograd_log_probs(
            student, *sparse, config.topk_format, options.temperature
        )
        options = dataclasses.replace(
            options, y_true_format="log_probs", y_pred_format="log_probs", temperature=1.0
        )
    return _losses.per_sample(options, _wide(teacher), _wide(student))


def _run(
    config: _Config,
    inputs: Inputs,
    coef: torch.Tensor,
    keep: torch.Tensor,
    want: dict[str, bool],
    recorder: Any = None,
    hard: Any = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All chunks: per-token values ``[BT]`` (0 where masked) and the requested gradients of
    ``Σ coef · values`` (``+ Σ hard.coef · CE`` with a :class:`kldiv.fused._torch_hard.HardLabels`
    ``hard``, its values written into ``hard.values``) w.r.t. the inputs named in ``want`` (and each
    chunk's statistics into ``recorder``)."""
    rows = coef.shape[0]
    values = torch.zeros(rows, dtype=coef.dtype, device=coef.device)
    grads: dict[str, torch.Tensor] = {}
    for name, tensor in vars(inputs).items():
        if want.get(name):
            # Parameter gradients accumulate in the accumulation dtype; row gradients are written per
            # chunk. Weights' are written by the first chunk's product (no zero fill); biases add.
            new = torch.zeros if rows == 0 or name.endswith("_bias") else torch.empty
            grads[name] = new(tensor.shape, dtype=_accumulation(config, tensor, coef), device=tensor.device)
    workspace = _Workspace(config, inputs, any(want.values()), recorder, hard)
    for index, (start, stop) in enumerate(chunking.chunks(rows, config.rows_per_chunk)):
        chunk = slice(start, stop)
        _run_chunk(config, inputs, coef, keep, want, values, grads, chunk, workspace, first=index == 0)
    if config.collective is not None:
        config.collective.finish(grads)
    return values, grads


def _accumulation(config: _Config, tensor: torch.Tensor, coef: torch.Tensor) -> torch.dtype:
    """The dtype ``tensor``'s gradient is accumulated in (:data:`ACCUMULATION_DTYPES`)."""
    return _torch_precision.accumulation(config.accumulation, tensor, coef.dtype)


class _Workspace:
    """Chunk-sized buffers reused by every chunk of a kernel pass (no allocation per chunk): the
    student's logits, which the kernels overwrite with their gradient, and the teacher's
    logits when they are formed from hidden states (given teacher logits are read in place)."""

    def __init__(
        self, config: _Config, inputs: Inputs, want_grad: bool, recorder: Any = None, hard: Any = None
    ) -> None:
        self.recorder = recorder  # a _torch_stats.Recorder when the caller asked for statistics
        self.hard = hard  # a _torch_hard.HardLabels when the loss has a cross-entropy term
        self.student = self.teacher = self.mask = None
        if config.kernel is None:
            return
        # The kernels read the student's dtype (Triton reads float16 / bfloat16 as they are; Numba
        # reads them widened to float32).
        source = inputs.student_logits if inputs.student_logits is not None else inputs.student_hidden
        rows, dtype, device = min(config.rows_per_chunk, source.shape[0]), source.dtype, source.device
        if config.kernel == "numba":
            dtype = _wide(source).dtype
        vocab = source.shape[-1] if inputs.student_logits is not None else inputs.student_weight.shape[0]
        if inputs.student_logits is None or want_grad:
            self.student = torch.empty((rows, vocab), dtype=dtype, device=device)
        if inputs.topk_indices is not None and config.topk_format == "log_probs":
            # The top entries of each row, for the tail's sums (all zero between chunks).
            self.mask = torch.zeros((rows, vocab), dtype=torch.uint8, device=device)
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


def _student_logits(inputs: Inputs, chunk: slice, out: torch.Tensor | None = None) -> torch.Tensor:
    if inputs.student_logits is not None:
        return inputs.student_logits[chunk]
    return _linear_into(inputs.student_hidden[chunk], inputs.student_weight, inputs.student_bias, out)


def _teacher_logits(inputs: Inputs, chunk: slice, out: torch.Tensor | None = None) -> torch.Tensor:
    if inputs.teacher_logits is not None:
        return inputs.teacher_logits[chunk]
    return _linear_into(inputs.teacher_hidden[chunk], inputs.teacher_weight, inputs.teacher_bias, out)


def _map_student(config: _Config, student: torch.Tensor, kept: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The student's chunk through its logit map (:mod:`kldiv.core.logit_maps`), and the chain rule's
    factor ``φ'`` (None for the identity; 0 on masked rows, whose raw logits may be NaN or inf)."""
    logit_map = config.student_map
    if logit_map.identity:
        return student, None
    mapped = logit_map.apply(torch, student).contiguous()
    factor = logit_map.derivative(torch, mapped)
    if isinstance(factor, torch.Tensor):
        factor = factor.masked_fill_(~kept.unsqueeze(-1), 0.0)
    return mapped, factor


def _gradient_buffer(
    inputs: Inputs, student: torch.Tensor, factor: Any, workspace: _Workspace
) -> torch.Tensor:
    """Where a kernel writes ∂/∂student-logits: over the chunk's formed or mapped logits (ours), else —
    the given logits are the caller's — into the workspace buffer."""
    if factor is not None or inputs.student_logits is None:
        return student
    return workspace.student[: student.shape[0]]


def _chain(grad: torch.Tensor, factor: Any) -> torch.Tensor:
    """∂/∂raw logits = ∂/∂mapped logits · φ' (in place)."""
    return grad if factor is None else grad.mul_(factor)


def _chunk_by_numba(config, inputs, coef, keep, want, chunk, workspace):
    """Value and ∂/∂student-logits of one chunk from the fused Numba kernel (CPU, one pass)."""
    from ..kernels.numba_cpu import fused_rows

    student = _wide(_student_logits(inputs, chunk, workspace.student).detach()).contiguous()
    student, factor = _map_student(config, student, keep[chunk])
    want_grad = any(want.values())
    pending = _torch_hard.prepare(workspace.hard, chunk, keep[chunk], student, want_grad)
    if inputs.topk_indices is not None:
        return _sparse_by_kernel(config, inputs, coef, keep, want, chunk, workspace, student, factor, pending)
    teacher = _teacher_logits(inputs, chunk, workspace.teacher).detach().to(student.dtype)
    teacher = config.teacher_map.apply(torch, teacher).contiguous()
    if workspace.recorder is not None:
        workspace.recorder.record(chunk, keep[chunk], student, teacher)
    out = _gradient_buffer(inputs, student, factor, workspace) if want_grad else None
    values, grad = fused_rows(
        teacher.numpy(),
        student.numpy(),
        coef[chunk].double().numpy(),
        keep[chunk].numpy(),
        want_grad=want_grad,
        out=None if out is None else out.numpy(),
        **config.options.formula_arguments(),
    )
    if grad is None:
        return torch.from_numpy(values), {}
    grad = _torch_hard.add(workspace.hard, chunk, torch.from_numpy(grad), pending)
    return torch.from_numpy(values), {"student": _chain(grad, factor)}


def _chunk_by_triton(config, inputs, coef, keep, want, chunk, workspace):
    """Value and ∂/∂student-logits of one chunk from the Triton kernel in one launch, the gradient
    written over the chunk's logits buffer (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).
    float16 / bfloat16 logits are read as they are and accumulated in float32."""
    from ..kernels.triton import fused_rows_triton

    student = _student_logits(inputs, chunk, workspace.student).detach()
    student, factor = _map_student(config, student, keep[chunk])
    want_grad = any(want.values())
    pending = _torch_hard.prepare(workspace.hard, chunk, keep[chunk], student, want_grad)
    if inputs.topk_indices is not None:
        return _sparse_by_kernel(
            config, inputs, coef, keep, want, chunk, workspace, student.contiguous(), factor, pending
        )
    teacher = _teacher_logits(inputs, chunk, workspace.teacher).detach().to(student.dtype)
    teacher = config.teacher_map.apply(torch, teacher)
    if workspace.recorder is not None:
        workspace.recorder.record(chunk, keep[chunk], student, teacher)
    out = _gradient_buffer(inputs, student, factor, workspace) if want_grad else None
    values, grad = fused_rows_triton(
        teacher,
        student,
        coef[chunk],
        keep[chunk],
        want_grad=want_grad,
        out=out,
        **config.options.formula_arguments(),
    )
    if grad is None:
        return values, {}
    return values, {"student": _chain(_torch_hard.add(workspace.hard, chunk, grad, pending), factor)}


def _sparse_by_kernel(config, inputs, coef, keep, want, chunk, workspace, student, factor, pending=None):
    """Value and ∂/∂student-logits of one chunk of a sparse top-k teacher from the plan's kernel
    (:mod:`kldiv.fused._torch_sparse`), the gradient written over the chunk's logits buffer."""
    sparse = (inputs.topk_indices[chunk], inputs.topk_values[chunk])
    if workspace.recorder is not None:
        workspace.recorder.record(chunk, keep[chunk], student, None, sparse, config.topk_format)
    want_grad = any(want.values())
    out = _gradient_buffer(inputs, student, factor, workspace) if want_grad else None
    values, grad = _torch_sparse.sparse_chunk(
        config.kernel,
        config.options,
        config.topk_format,
        student,
        *sparse,
        coef[chunk],
        keep[chunk],
        workspace.mask,
        want_grad=want_grad,
        out=out,
    )
    if grad is None:
        return values, {}
    return values, {"student": _chain(_torch_hard.add(workspace.hard, chunk, grad, pending), factor)}


def _chunk_hard_only(config, inputs, coef, keep, want, chunk, workspace):
    """The cross-entropy alone (``weight_soft_loss = 0``): the divergence is not computed (the teacher
    is not read), its values are 0."""
    kept = keep[chunk]
    student = _wide(_student_logits(inputs, chunk).detach()).contiguous()
    student, factor = _map_student(config, student, kept)
    want_grad = any(want.values())
    pending = _torch_hard.prepare(workspace.hard, chunk, kept, student, want_grad)
    values = torch.zeros(student.shape[0], dtype=coef.dtype, device=coef.device)
    if pending is None:
        return values, {}
    return values, {"student": _chain(workspace.hard.onehot(chunk, pending), factor)}


def _safe_rows(logits: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``logits`` with the masked rows replaced by the safe constant 0 (:mod:`kldiv.core.masking`): a
    masked row of NaN or inf would otherwise send ``0 · NaN = NaN`` into its exactly-0 gradient."""
    return torch.where(kept.unsqueeze(-1), logits, torch.zeros((), dtype=logits.dtype, device=logits.device))


def _chunk_by_autograd(config, inputs, coef, keep, want, chunk, workspace):
    """Value and gradients of one chunk by autograd through kldiv's core (any device, every option)."""
    teacher_wants = any(
        want.get(n) for n in ("teacher_logits", "teacher_hidden", "teacher_weight", "teacher_bias")
    )
    kept = keep[chunk]
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
            teacher = config.teacher_map.apply(torch, _safe_rows(teacher, kept))
        mapped = config.student_map.apply(torch, _safe_rows(student, kept))
        if workspace.recorder is not None:
            workspace.recorder.record(chunk, kept, mapped, teacher, sparse, config.topk_format)
        if config.topk is None:
            per_token = _chunk_values(config, teacher, mapped, sparse)
        else:  # a dense teacher on a chosen top-k support
            from ._torch_support import support_chunk

            per_token, found = support_chunk(
                config.options, config.support, config.topk, _wide(teacher), _wide(mapped)
            )
            if workspace.recorder is not None:
                workspace.recorder.record_support(chunk, kept, found)
        per_token = torch.where(kept, per_token, torch.zeros_like(per_token))
        objective = (per_token * coef[chunk]).sum()
        if workspace.hard is not None:
            objective = objective + workspace.hard.autograd(chunk, kept, mapped).to(objective.dtype)
        if not any(want.values()):
            return per_token.detach(), {}
        gradients = torch.autograd.grad(objective, list(leaves.values()))
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
    if config.collective is not None:
        compute = config.collective.chunk
    else:
        compute = _COMPUTE[config.kernel] if config.soft else _chunk_hard_only
    per_token, gradients = compute(config, inputs, coef, keep, want, chunk, workspace)
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


_NAMES = tuple(Inputs.__dataclass_fields__)


class _FusedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, config, coef, keep, recorder, hard, soft_weight, *tensors):
        inputs = Inputs(*tensors)
        # Without the divergence (weight_soft_loss = 0) the teacher is not read: no gradient reaches it.
        want = {
            n: bool(ctx.needs_input_grad[6 + i]) and (config.soft or n[:7] == "student")
            for i, n in enumerate(_NAMES)
        }
        ctx.config, ctx.inputs, ctx.coef, ctx.keep, ctx.want = config, inputs, coef, keep, want
        ctx.hard = hard
        scalar = config.reduction != "none"
        values, grads = _run(config, inputs, coef, keep, want if scalar else {}, recorder, hard)
        if recorder is not None:
            recorder.per_token = values
        ctx.grads = grads
        # coef holds weight_soft_loss; a zero weight drops the divergence (no 0 · ∞ = NaN).
        soft = values * coef if soft_weight else torch.zeros_like(values)
        if not scalar:  # per token: mask, weight and T² applied
            return soft if hard is None else soft + hard.per_token().to(soft.dtype)
        return soft.sum() if hard is None else soft.sum() + hard.total().to(soft.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        inputs, want = ctx.inputs, ctx.want
        hard = ctx.hard
        if ctx.config.reduction == "none":
            upstream = grad_output.to(ctx.coef.dtype)
            hard = None if hard is None else hard.scaled(upstream)
            _, grads = _run(ctx.config, inputs, ctx.coef * upstream, ctx.keep, want, hard=hard)
        else:
            if ctx.grads is None:  # a second backward through a retained graph: compute them again
                _, grads = _run(ctx.config, inputs, ctx.coef, ctx.keep, want, hard=hard)
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
        return (None, None, None, None, None, None, *out)


def _temporaries(
    kernel: str | None,
    inputs: Inputs,
    dtype: torch.dtype,
    maps: tuple[LogitMap, ...],
    hard: bool = False,
    support: bool = False,
) -> int:
    """Chunk-sized arrays (in units of the compute dtype's ``[c, V]``) at a kernel path's peak: the
    student's logits buffer, the teacher's when it is formed (both kernels write the gradient over
    the logits), float32 copies of a float16 / bfloat16 gradient for the weight's accumulation, two
    per logit map (its output and its derivative, or a temporary of the map) and two for a
    cross-entropy term (its ``softmax`` and a float32 copy of narrow logits). A chosen top-k
    ``support`` adds four on the autograd path: both sides' tails (a scattered copy each), the
    overlap's marker row and the scatters' gradients."""
    mapped = 2 * sum(not m.identity for m in maps) + 2 * hard
    if kernel is None:
        return chunking.AUTOGRAD_TEMPORARIES + mapped + 4 * support
    count = 1 + (inputs.teacher_hidden is not None)  # given student logits: the buffer holds the gradient
    count += inputs.topk_indices is not None  # the sparse path's uint8 mask of the top entries (rounded up)
    if torch.finfo(dtype).bits < 32:
        count += 1
    return max(1, count) + mapped


def _kernel(
    options: Options, inputs: Inputs, dtype: torch.dtype, device: torch.device, support: bool = False
) -> str | None:
    """The plan's kernel for the chunks (:func:`kldiv.kernels.dispatch.plan`, no size threshold)."""
    teacher = (inputs.teacher_logits, inputs.teacher_hidden, inputs.teacher_weight, inputs.teacher_bias)
    request = dispatch.Request(
        arrays=DEVICE_ARRAYS.get(device.type),
        dtype=_namespace.dtype_name(dtype),
        y_true_grad=any(t is not None and t.requires_grad for t in teacher),
        chunked=True,
        support=support,
        source=f"torch on {device.type}",
    )
    return dispatch.plan(options, request).kernel


def loss(
    options: Options,
    reduction: str,
    inputs: Inputs,
    tokens: Mapping[str, Any],
    *,
    batch_size: int,
    chunk_size: int | None,
    memory_budget: int,
    topk_format: str,
    student_map: LogitMap = IDENTITY,
    teacher_map: LogitMap = IDENTITY,
    recorder: Any = None,
    weight_hard_loss: float = 0.0,
    weight_soft_loss: float = 1.0,
    accumulation_dtype: str | None = None,
    support: str = "teacher",
    topk: int | None = None,
    collective: Any = None,
) -> torch.Tensor:
    """The reduced (or, for ``"none"``, per-token) loss of ``inputs``, chunk by chunk, in the
    accumulation dtype (float64 for float64 inputs, else float32). ``tokens``: the call's
    ``labels``, ``mask``, ``sample_weight``, ``num_items`` (:class:`kldiv.arguments.TokenArguments`).
    ``student_map`` / ``teacher_map``: the logit maps applied to each chunk's logits (not to a
    sparse teacher's values). ``recorder``: a :class:`kldiv.fused._torch_stats.Recorder` filled with
    the per-token statistics (``recorder.per_token`` holds the per-token values afterwards; with
    ``labels`` its ``cross_entropy`` too). ``weight_hard_loss`` / ``weight_soft_loss``: the
    cross-entropy term's and the divergence's weights (:mod:`kldiv.fused._torch_hard`; a soft weight
    0 without a recorder skips the divergence). ``accumulation_dtype``: :data:`ACCUMULATION_DTYPES`.
    ``topk``: a dense teacher compared with the student on the top-k ``support``
    (:mod:`kldiv.fused._torch_support`); None: on the whole vocabulary (or a sparse teacher's k).
    ``collective``: a :class:`kldiv.fused._torch_vocab_parallel.Collective` when the vocabulary is
    sharded over a process group (it computes every chunk; the chunk size comes from its
    ``chunk_vocab``, the same on every rank)."""
    source = inputs.student_logits if inputs.student_logits is not None else inputs.student_hidden
    rows, dtype, device = source.shape[0], source.dtype, source.device
    logits = inputs.student_logits
    vocab = logits.shape[-1] if logits is not None else inputs.student_weight.shape[0]
    if collective is not None:
        vocab = collective.chunk_vocab
    accumulate = torch.float64 if dtype == torch.float64 else torch.float32
    xp = _namespace.namespace_of(source)
    keep, coef = token_weights(
        xp, options, reduction, tokens, rows=rows, batch_size=batch_size, dtype=accumulate, device=device
    )
    if weight_soft_loss != 1.0:
        coef = coef * weight_soft_loss
    hard = None
    if weight_hard_loss or (recorder is not None and tokens.get("labels") is not None):
        hard_coef = None
        if weight_hard_loss:  # the reduction's coefficients without T² (the divergence's alone)
            unit = dataclasses.replace(options, scale_by_temperature_squared=False)
            _, hard_coef = token_weights(
                xp, unit, reduction, tokens, rows=rows, batch_size=batch_size, dtype=accumulate, device=device
            )
            hard_coef = hard_coef * weight_hard_loss
        labels = tokens.get("labels")
        hard = _torch_hard.hard_labels(labels, keep, hard_coef, vocab=vocab, rows=rows, dtype=accumulate)
        if recorder is not None:
            recorder.names = (*recorder.names, "cross_entropy")
            recorder.stats["cross_entropy"] = hard.values
    kernel = None if collective is not None else _kernel(options, inputs, dtype, device, topk is not None)
    config = _Config(
        options=dataclasses.replace(options, scale_by_temperature_squared=False, backend="core"),
        reduction=reduction,
        rows_per_chunk=chunking.rows_per_chunk(
            rows,
            vocab,
            memory_budget=memory_budget,
            chunk_size=chunk_size,
            bytes_per_element=max(4, torch.finfo(dtype).bits // 8),
            temporaries=_temporaries(
                kernel, inputs, dtype, (student_map, teacher_map), hard is not None, topk is not None
            ),
            minimum_rows=MATMUL_MIN_ROWS if inputs.student_logits is None else 1,
        ),
        topk_format=topk_format,
        kernel=kernel,
        student_map=student_map,
        teacher_map=teacher_map,
        soft=bool(weight_soft_loss) or recorder is not None,
        accumulation=accumulation_dtype,
        support=support,
        topk=topk,
        collective=collective,
    )
    tensors = (getattr(inputs, n) for n in _NAMES)
    return _FusedFunction.apply(config, coef, keep, recorder, hard, weight_soft_loss, *tensors)
