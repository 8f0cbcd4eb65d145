r"""One chunk of a dense teacher compared on a chosen top-k support (``support=``, ``topk=``), by autograd.

Both sides' ``[c, V]`` logits (after their logit maps) are coarsened to the support :math:`S` plus a
tail bucket by :func:`kldiv.core.topk.support_log_probs` — the teacher's top ``k``, the student's or
their union — and the chunk's divergence is the core's on those ``[c, |S| + 1]`` log-probabilities.
Autograd through it gives the gradient w.r.t. both sides' logits (through the values at :math:`S` and
the tails; the top-k selection is piecewise constant and passes none); the chunk engine
(:mod:`kldiv.fused._torch_chunks`) then multiplies it into the parameters' gradients, so memory stays
one chunk's temporaries.

The statistics of the support (``return_stats=True``): ``teacher_mass`` :math:`\sum_{i \in S} p_i`,
``student_mass`` :math:`\sum_{i \in S} q_i` (both at the temperature, over the full vocabulary) and
``topk_overlap`` :math:`|\mathrm{top}_k(p) \cap \mathrm{top}_k(q)| / k`.
"""

from __future__ import annotations

import dataclasses
import math

from .. import losses as _losses
from .._extras import require
from ..options import Options

torch = require("torch", "kldiv.fused.torch")


def _exclude(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return x.scatter(-1, indices, -math.inf)


def _top(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(x.detach(), k, dim=-1, sorted=False).indices


def support_chunk(
    options: Options, support: str, k: int, teacher: torch.Tensor, student: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token divergence ``[c]`` (autograd-able w.r.t. both logits) of a chunk on the support, and
    its statistics (detached ``[c]`` tensors: ``teacher_mass``, ``student_mass``, ``topk_overlap``).

    Args:
        options: the chunk's divergence options (logits in, no ``T²``).
        support: ``"teacher"``, ``"student"`` or ``"union"``.
        k: the size of each top-k set.
        teacher, student: ``[c, V]`` logits after their logit maps, float32 or float64.
    """
    import array_api_compat.torch as xp

    from ..core import topk

    coarse_teacher, coarse_student, overlap = topk.support_log_probs(
        xp, teacher, student, support, k, exclude=_exclude, top=_top, temperature=options.temperature
    )
    buckets = dataclasses.replace(
        options, y_true_format="log_probs", y_pred_format="log_probs", temperature=1.0
    )
    per_token = _losses.per_sample(buckets, coarse_teacher, coarse_student)
    with torch.no_grad():
        inside = slice(None, -1 if k != teacher.shape[-1] else None)  # k = V: the vocabulary, no tail
        found = {
            "teacher_mass": coarse_teacher[:, inside].exp().sum(-1),
            "student_mass": coarse_student[:, inside].exp().sum(-1),
            "topk_overlap": overlap,
        }
    return per_token, found


__all__ = ["support_chunk"]
