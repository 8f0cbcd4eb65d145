r"""kldiv with JAX sharding: vocabulary-parallel divergences inside ``shard_map`` and the global normaliser.

Two ways to run a divergence on sharded arrays:

* **``jit`` with sharded inputs** (GSPMD): nothing is needed. :func:`kldiv.jax.kl_divergence` on arrays
  placed with a ``NamedSharding`` (rows, vocabulary or both sharded) is partitioned by XLA, which
  inserts the collectives itself.
* **``shard_map``** (explicit per-shard programs): inside the mapped function each shard sees its
  local block, so the vocabulary reduction and the batch denominator must be made global by hand:

  - :func:`vocab_parallel_kl_divergence` / :func:`vocab_parallel_js_divergence`: the teacher and
    student *logits* are sharded over the vocabulary along the mesh axis ``axis_name``; the global
    log-sum-exp comes from ``lax.pmax`` of the row maxima and ``lax.psum`` of the shifted exp-sums,
    the row value from a ``lax.psum`` of the local terms (:mod:`kldiv.distributed._vocab`, whose terms
    and gradients are those of :mod:`kldiv.core.grads`). The element-wise part is a ``jax.custom_vjp``
    with the closed-form gradient ``g'_j = ∂ℓ/∂c_j`` w.r.t. the local log-probabilities; the global
    log-softmax and the ``psum`` are plain JAX, so JAX transposes the collectives itself and the
    student gets ``(g'_j − softmax_j · G) / T``. The result is the same on every shard of
    ``axis_name`` (the row values are); differentiate it as any ``psum`` result (``jax.grad`` of a
    ``shard_map`` with ``out_specs=P()`` is the full gradient, with or without ``check_vma``).
  - :func:`global_num_items`: ``lax.psum`` of the local count of items over the data axis; pass it as
    ``num_items`` to a mean reduction and ``psum`` the parameter gradients: that is the gradient of one
    big batch, whatever the masks keep on each shard.

Example (4 devices; rows over ``"data"``, vocabulary over ``"vocab"``)::

    mesh = jax.make_mesh((2, 2), ("data", "vocab"))

    def local_loss(teacher, student, mask):
        count = kldiv.distributed.jax.global_num_items(jnp.sum(mask), "data")
        loss = kldiv.distributed.jax.vocab_parallel_kl_divergence(
            teacher, student, axis_name="vocab", reduction="token_mean", mask=mask,
            num_items=count, temperature=2.0)
        return jax.lax.psum(loss, "data")             # the one-big-batch loss, on every shard

    loss = jax.jit(jax.shard_map(local_loss, mesh=mesh, out_specs=P(),
                                 in_specs=(P("data", "vocab"), P("data", "vocab"), P("data"))))
    with jax.set_mesh(mesh):                          # inputs placed with matching NamedShardings
        grad = jax.grad(loss, argnums=1)(teacher, student, mask)   # = the single-device gradient

The rows (batch shape), ``mask`` / ``labels``, ``sample_weight`` and ``num_items`` must be the same on
every shard of ``axis_name``; ``shard_map`` already guarantees equal local shapes (the vocabulary must
divide evenly over the mesh axis). The teacher is a constant (its cotangent is zero), as in distillation.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kldiv import losses as _losses
from kldiv._extras import require

from ..arguments import CallArguments, split
from ..options import Options
from . import _loss, _vocab

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..arguments import FunctionalArguments

jax = require("jax", "kldiv.distributed.jax")
jnp = require("jax.numpy", "kldiv.distributed.jax")

__all__ = ["global_num_items", "vocab_parallel_js_divergence", "vocab_parallel_kl_divergence"]

Array = Any
AxisName = Any


def global_num_items(local_count: Array, axis_name: AxisName) -> Array:
    """``lax.psum(local_count, axis_name)``: the number of items over every shard of a mesh axis.

    Call it inside ``shard_map`` (or ``pmap``) and pass the result as ``num_items``; the local losses
    ``Σ_local w·L / N_global`` then add up (``lax.psum``) to the one-big-batch loss, and so do their
    gradients.
    """
    return jax.lax.psum(local_count, axis_name)


class _Collectives:
    """``lax.pmax`` / ``lax.psum`` over a named mesh axis. The maximum is only a shift of the
    log-sum-exp: it carries no gradient (and ``pmax`` has no differentiation rule)."""

    def __init__(self, axis_name: AxisName) -> None:
        self.axis_name = axis_name

    def all_max(self, x: Array) -> Array:
        return jax.lax.pmax(jax.lax.stop_gradient(x), self.axis_name)

    def all_sum(self, x: Array) -> Array:
        return jax.lax.psum(x, self.axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _partial_rows(c_teacher: Array, c_student: Array, options: Options, axis_name: AxisName) -> Array:
    """``Σ_j ℓ_j`` over the local entries (:func:`kldiv.distributed._vocab.local_terms`)."""
    return _vocab.local_terms(jnp, c_teacher, c_student, options)[0]


def _partial_rows_fwd(
    c_teacher: Array, c_student: Array, options: Options, axis_name: AxisName
) -> tuple[Array, Array]:
    return _vocab.local_terms(jnp, c_teacher, c_student, options)


def _partial_rows_bwd(
    options: Options, axis_name: AxisName, g: Array, upstream: Array
) -> tuple[Array, Array]:
    """Closed form: ``upstream · g'`` for the student log-probabilities, 0 for the teacher.

    A student through a log-softmax: a row whose ``G = Σ_j g'_j`` (over every shard) is not finite
    gets NaN in every entry, as autograd through the core's log-softmax gives it (its max shift
    passes ``∞ − ∞`` on to each entry; :func:`kldiv.core.grads.softmax_chain_factor`, the rule of the
    torch path). Here the max shift carries no gradient, so the rule is applied to ``g'``.
    """
    if _vocab.needs_lse(options, options.y_pred_format):
        g_sum = jax.lax.psum(jnp.sum(g, axis=-1, keepdims=True), axis_name)
        g = g + g_sum * 0.0  # + 0 where G is finite, NaN where it is not
    return jnp.zeros_like(g), upstream[..., None] * g


_partial_rows.defvjp(_partial_rows_fwd, _partial_rows_bwd)


def _rows(teacher: Array, student: Array, options: Options, axis_name: AxisName) -> Array:
    """Per-row divergence of vocabulary shards, the same on every shard of ``axis_name``.

    The local, element-wise part has the closed-form gradient of :mod:`kldiv.core.grads`
    (``jax.custom_vjp``); the global log-softmax and the final ``psum`` are plain JAX, so JAX itself
    transposes the collectives — correct with and without ``check_vma``, in ``shard_map`` and ``pmap``.
    """
    comm = _Collectives(axis_name)
    teacher = jax.lax.stop_gradient(teacher)
    total = None
    for part in _vocab.chained_apart(options):
        # A log-softmax of its own for each direction of the symmetric KL, so that JAX chains their
        # gradients apart (summed first, the reverse one would absorb the forward one; see there).
        c_teacher, c_student = _vocab.log_probs(jnp, teacher, student, part, comm)
        partial = _partial_rows(c_teacher, c_student, part, axis_name)
        total = partial if total is None else total + partial
    return comm.all_sum(total)


def _vocab_parallel(
    loss: _losses._DivergenceLoss,
    teacher_logits: Array,
    student_logits: Array,
    sample_weight: Array | None,
    axis_name: AxisName,
    call: CallArguments,
) -> Array:
    _vocab.check_formats(loss.options.y_true_format, loss.options.y_pred_format)
    shards = _loss.prepare(loss, teacher_logits, student_logits, **call)
    values = _rows(shards.teacher, shards.student, loss.options, axis_name)
    return _loss.reduce(loss, shards, values, sample_weight)


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """Logits by default (the vocabulary-parallel formats), the core program (no kernel)."""
    return {"y_true_format": "logits", "y_pred_format": "logits", **options, "backend": "core"}


def _vocab_parallel_function(loss_type: type[_losses._DivergenceLoss], name: str, doc: str) -> Any:
    """The vocabulary-parallel functional form of ``loss_type`` (both divergences share it)."""

    def divergence(
        teacher_logits: Array,
        student_logits: Array,
        sample_weight: Array | None = None,
        *,
        axis_name: AxisName,
        **keywords: Unpack[FunctionalArguments],
    ) -> Array:
        call, options = split(keywords, CallArguments)
        loss = loss_type(**{"reduction": "none", **_options(options)})
        return _vocab_parallel(loss, teacher_logits, student_logits, sample_weight, axis_name, call)

    divergence.__name__ = divergence.__qualname__ = name
    divergence.__doc__ = doc
    divergence.__module__ = __name__
    return divergence


vocab_parallel_kl_divergence = _vocab_parallel_function(
    _losses.KLDivergence,
    "vocab_parallel_kl_divergence",
    """KL divergence of teacher and student shards ``[..., V_r]`` sharded over the mesh axis ``axis_name``.

    Call inside ``shard_map``. Returns what :func:`kldiv.jax.kl_divergence` with the same options returns
    for the full rows (the concatenation of the shards in mesh order), on every shard of
    ``axis_name``; ``jax.grad`` w.r.t. the student shard is the matching block of the full gradient.

    Args:
        teacher_logits, student_logits: the local shards, the vocabulary along ``axis``; logits by
            default, ``y_true_format`` / ``y_pred_format="log_probs"`` for log-probabilities.
        sample_weight, mask, labels, num_items: as :class:`kldiv.KLDivergence`, the same on every
            shard of ``axis_name``.
        axis_name: the mesh axis (or tuple of axes) the vocabulary is sharded over.
        reduction: any kldiv reduction; ``"none"`` (default) gives the per-row values.
        **options: the options of :class:`kldiv.KLDivergence` (``direction``, ``epsilon``,
            ``temperature``, ``scale_by_temperature_squared``, ``ignore_index``, ``axis``, ...).

    Raises:
        ValueError: a bad option, a format other than logits / log-probabilities, shards of different
            shapes.
    """,
)

vocab_parallel_js_divergence = _vocab_parallel_function(
    _losses.JSDivergence,
    "vocab_parallel_js_divergence",
    r"""Generalized Jensen–Shannon divergence ``JS_β(teacher, student)`` of vocabulary shards.

    .. math:: \mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),
              \qquad M = \beta P + (1-\beta) Q

    Options as :class:`kldiv.JSDivergence` (``beta=0.5`` by default); the rest as
    :func:`vocab_parallel_kl_divergence`.
    """,
)
