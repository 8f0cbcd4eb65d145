r"""The hard-label cross-entropy term of the chunked and fused-linear losses, from the divergence's chunk.

With ``weight_hard_loss = w_h`` and ``weight_soft_loss = w_s`` (Liger-Kernel's names) the loss is::

    loss = w_h · Σ_t c_t · CE_t  +  w_s · Σ_t c_t · T²? · D_t
    CE_t = logsumexp(u_t) − u_t[y_t]        u_t = φ(z_t): the student's logits after its logit map, T = 1

where ``c_t`` is the reduction's coefficient of token ``t`` (:func:`kldiv.core.reductions.token_coefficients`:
0 on masked tokens, the sample weight, divided by the kept tokens for ``"token_mean"``, ...), so both terms
are reduced by the loss's own reduction over the same kept tokens (``T²`` only on the divergence, with
``scale_by_temperature_squared``). Its gradient w.r.t. the mapped logits is

.. math:: \partial\,\mathrm{CE}_t / \partial u_{t,i} = \mathrm{softmax}(u_t)_i - [i = y_t].

Per chunk the engine (:mod:`kldiv.fused._torch_chunks`) calls :meth:`HardLabels.prepare` on the chunk's
mapped logits *before* a kernel overwrites them with the divergence's gradient: it writes ``CE_t`` and
returns ``c_t · softmax(u_t)`` (one ``[c, V]`` temporary); :meth:`HardLabels.add` adds it, and ``−c_t`` at
the labels, into the kernel's gradient buffer before the chain rule through ``φ`` and the matmuls back to
the hidden states, weight and bias — the same pass over the vocabulary weight, memory bounded by the chunk.
The autograd path takes :meth:`HardLabels.autograd` (the same formula, differentiated by torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._extras import require
from ._torch_precision import wide

torch = require("torch", "kldiv.fused.torch")


def cross_entropy(u: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(CE, e, Σ e)`` of ``[c, V]`` logits: ``CE = m + log Σ e − u[label]`` with ``e = exp(u − m)``,
    ``m`` the row's maximum (0 for a row without a finite one), so ``softmax(u) = e / Σ e``. Autograd-able."""
    top = u.amax(-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(u - top)
    total = e.sum(-1)
    return top[:, 0] + torch.log(total) - u.gather(1, labels.unsqueeze(-1))[:, 0], e, total


@dataclass
class HardLabels:
    """The cross-entropy term of one loss call.

    Attributes:
        labels: ``[BT]`` int64 class ids, 0 on masked tokens (a safe index).
        coef: ``[BT]`` ``∂ loss / ∂ CE_t`` (``w_h · c_t``, 0 on masked tokens), or None when the term is
            recorded for the statistics only (``w_h = 0``).
        values: ``[BT]`` the per-token cross-entropy, filled by the pass (0 on masked tokens).
    """

    labels: torch.Tensor
    coef: torch.Tensor | None
    values: torch.Tensor

    def scaled(self, factor: torch.Tensor) -> HardLabels:
        """The term with its coefficients times ``factor`` (the upstream gradient of ``"none"``)."""
        coef = None if self.coef is None else self.coef * factor.to(self.coef.dtype)
        return HardLabels(self.labels, coef, self.values)

    def total(self) -> torch.Tensor:
        """``Σ_t coef_t · CE_t`` (0 without a weight)."""
        if self.coef is None:
            return self.values.new_zeros(())
        return (self.values * self.coef).sum()

    def per_token(self) -> torch.Tensor:
        """``coef_t · CE_t`` per token (0 without a weight)."""
        return torch.zeros_like(self.values) if self.coef is None else self.values * self.coef

    def prepare(
        self, chunk: slice, kept: torch.Tensor, logits: torch.Tensor, want_grad: bool
    ) -> torch.Tensor | None:
        """``CE_t`` of the chunk's mapped logits into :attr:`values`, and — with a gradient wanted and a
        weight — ``coef_t · softmax(u_t)`` (``[c, V]``, float32 or float64; 0 on masked rows)."""
        with torch.no_grad():
            ce, e, total = cross_entropy(wide(logits.detach()), self.labels[chunk])
            self.values[chunk] = torch.where(kept, ce, torch.zeros_like(ce)).to(self.values.dtype)
            if not want_grad or self.coef is None:
                return None
            factor = self.coef[chunk].to(e.dtype) / total
            return e.mul_(factor.unsqueeze(-1)).masked_fill_(~kept.unsqueeze(-1), 0.0)

    def add(self, chunk: slice, grad: torch.Tensor, pending: torch.Tensor | None) -> torch.Tensor:
        """``grad += coef · (softmax(u) − onehot(y))`` in place (``pending`` from :meth:`prepare`)."""
        if pending is None:
            return grad
        return self.onehot(chunk, grad.add_(pending.to(grad.dtype)))

    def onehot(self, chunk: slice, grad: torch.Tensor) -> torch.Tensor:
        """``grad −= coef · onehot(y)`` in place."""
        minus = -self.coef[chunk].to(grad.dtype).unsqueeze(-1)
        return grad.scatter_add_(1, self.labels[chunk].unsqueeze(-1), minus)

    def autograd(self, chunk: slice, kept: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
        """``Σ coef_t · CE_t`` of the chunk (differentiable w.r.t. ``mapped``, whose masked rows are safe),
        recording ``CE_t`` into :attr:`values`."""
        ce = cross_entropy(wide(mapped), self.labels[chunk])[0]
        ce = torch.where(kept, ce, torch.zeros_like(ce))
        self.values[chunk] = ce.detach().to(self.values.dtype)
        if self.coef is None:
            return ce.new_zeros(())
        return (ce * self.coef[chunk].to(ce.dtype)).sum()


def prepare(
    hard: HardLabels | None, chunk: slice, kept: torch.Tensor, mapped: torch.Tensor, want_grad: bool
) -> torch.Tensor | None:
    """:meth:`HardLabels.prepare` of the chunk's mapped logits, read before a kernel overwrites them;
    None without the term."""
    return None if hard is None else hard.prepare(chunk, kept, mapped, want_grad)


def add(
    hard: HardLabels | None, chunk: slice, grad: torch.Tensor, pending: torch.Tensor | None
) -> torch.Tensor:
    """:meth:`HardLabels.add`: the term's gradient into the divergence's ∂/∂mapped logits (in place)."""
    return grad if pending is None else hard.add(chunk, grad, pending)


def hard_labels(
    labels: torch.Tensor | None,
    keep: torch.Tensor,
    coef: torch.Tensor | None,
    *,
    vocab: int,
    rows: int,
    dtype: torch.dtype,
) -> HardLabels:
    """Check ``labels`` for the cross-entropy term and build it (``coef`` already ``w_h · c_t``).

    Raises:
        ValueError: ``labels`` missing, not integer, or a kept label outside ``[0, vocab)``.
    """
    if labels is None:
        raise ValueError(
            "Argument `labels`: expected the [BT] class ids with weight_hard_loss > 0 (the cross-entropy "
            "term); received None."
        )
    if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        received = labels.dtype if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(f"Argument `labels`: expected integer class ids; received {received}.")
    flat = labels.reshape(-1).to(device=keep.device, dtype=torch.long)
    if flat.shape[0] != rows:
        raise ValueError(f"Argument `labels`: expected {rows} tokens; received shape {tuple(labels.shape)}.")
    safe = torch.where(keep, flat, torch.zeros_like(flat))
    if bool(((safe < 0) | (safe >= vocab)).any()):
        bad = flat[keep & ((flat < 0) | (flat >= vocab))][0].item()
        raise ValueError(
            f"Argument `labels`: expected class ids in [0, {vocab}) on the kept tokens (or the "
            f"ignore_index); received {bad}."
        )
    return HardLabels(safe, coef, torch.zeros(rows, dtype=dtype, device=keep.device))


__all__ = ["HardLabels", "add", "hard_labels", "prepare"]
