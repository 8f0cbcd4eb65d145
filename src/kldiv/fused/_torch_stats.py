r"""Per-token statistics of a chunked pass, for logging and RL (``return_stats=True``).

Recorded from each chunk's logits — after the logit maps, at the loss's temperature ``T`` — before a
kernel overwrites them with their gradient, so the pass over the tokens is the loss's own and no
``[BT, V]`` array is formed (one chunk's ``[c, V]`` temporaries at a time). Detached, float32 (float64
for float64 inputs), 0 on masked tokens:

* ``per_token``: the divergence of each token (before sample weights, ``T²`` and the reduction);
* ``student_lse``, ``teacher_lse``: :math:`\log\sum_i e^{z_i / T}` of each side's logits;
* ``student_entropy``: :math:`H(\mathrm{softmax}(z / T))` (:func:`kldiv.core.divergences.entropy`);
* with a sparse top-k teacher: ``teacher_mass`` (:math:`\sum_{i \in \text{top}} p_i`: the stored
  log-probabilities' mass; 1 for ``"logits"`` values, renormalised over the k entries),
  ``student_mass`` (the student's probability on the teacher's k entries) and ``topk_overlap`` (the
  fraction of the student's own top k among the teacher's k); ``teacher_lse`` is not known there.
* with a dense teacher on a chosen top-k support (``topk=``, :mod:`kldiv.fused._torch_support`): the
  dense statistics and ``teacher_mass``, ``student_mass`` (each side's probability on the support
  :math:`S`) and ``topk_overlap`` (:math:`|\mathrm{top}_k(p) \cap \mathrm{top}_k(q)| / k`).
"""

from __future__ import annotations

from typing import Any

from .._extras import require

torch = require("torch", "kldiv.fused.torch")


class Stats(dict):
    """The statistics by name: ``stats["per_token"]`` or ``stats.per_token``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no statistic {name!r}; these are recorded: {sorted(self)}") from None


DENSE = ("per_token", "student_lse", "teacher_lse", "student_entropy")
SPARSE = ("per_token", "student_lse", "student_entropy", "teacher_mass", "student_mass", "topk_overlap")
SUPPORT = (*DENSE, "teacher_mass", "student_mass", "topk_overlap")


class Recorder:
    """Per-token statistics of one pass, filled chunk by chunk."""

    def __init__(
        self,
        rows: int,
        sparse: bool,
        dtype: torch.dtype,
        device: Any,
        temperature: float,
        support: bool = False,
    ) -> None:
        self.names = SUPPORT if support else SPARSE if sparse else DENSE
        self.stats = {name: torch.zeros(rows, dtype=dtype, device=device) for name in self.names}
        self.temperature = temperature

    def _log_softmax(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import array_api_compat.torch as xp

        from ..core.divergences import logsumexp

        scaled = logits.to(self.stats["per_token"].dtype) / self.temperature
        lse = logsumexp(xp, scaled, -1)  # kept axis: [c, 1]
        return lse[:, 0], scaled - lse

    def record(
        self,
        chunk: slice,
        kept: torch.Tensor,
        student: torch.Tensor,
        teacher: torch.Tensor | None = None,
        sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
        topk_format: str = "log_probs",
    ) -> None:
        """The statistics of the chunk's tokens from its (mapped) logits."""
        import array_api_compat.torch as xp

        from ..core.divergences import Distribution, entropy

        with torch.no_grad():
            lse, log_q = self._log_softmax(student.detach())
            found = {"student_lse": lse}
            q = Distribution(xp, log_q, "log_probs", axis=-1, epsilon=0.0, temperature=1.0)
            found["student_entropy"] = entropy(xp, q, -1)
            if teacher is not None:
                found["teacher_lse"] = self._log_softmax(teacher.detach())[0]
            if sparse is not None:
                indices, values = sparse[0].long(), sparse[1].detach().to(lse.dtype)
                k = indices.shape[-1]
                if topk_format == "log_probs":
                    found["teacher_mass"] = values.exp().sum(-1)
                else:
                    found["teacher_mass"] = torch.ones_like(lse)
                found["student_mass"] = log_q.gather(-1, indices).exp().sum(-1)
                own = torch.topk(log_q, k, dim=-1).indices
                found["topk_overlap"] = (own[:, :, None] == indices[:, None, :]).any(-1).sum(-1).to(
                    lse.dtype
                ) / k
            for name, value in found.items():
                self.stats[name][chunk] = torch.where(kept, value, torch.zeros_like(value))

    def record_support(self, chunk: slice, kept: torch.Tensor, found: dict[str, torch.Tensor]) -> None:
        """The support's statistics of the chunk's tokens, as :func:`kldiv.fused._torch_support.support_chunk`
        computed them."""
        for name, value in found.items():
            value = value.detach().to(self.stats[name].dtype)
            self.stats[name][chunk] = torch.where(kept, value, torch.zeros_like(value))

    def result(self, per_token: torch.Tensor, lead: tuple[int, ...]) -> Stats:
        self.stats["per_token"] = per_token.detach().to(self.stats["per_token"].dtype)
        return Stats((name, self.stats[name].reshape(lead)) for name in self.names)
