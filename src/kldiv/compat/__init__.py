"""Drop-ins with the peers' own signatures, computed by kldiv (memory-bounded chunks, one formula set).

Peers take the student first and their own reduction names; kldiv's losses are Keras'
``(y_true, y_pred)`` = (teacher, student). These modules do the re-mapping once:

* TRL ``GKDTrainer.generalized_jsd_loss`` → :func:`kldiv.compat.trl.generalized_jsd_loss`;
* Liger ``LigerFusedLinearJSD`` (``liger_kernel.transformers``) →
  :class:`kldiv.compat.liger.LigerFusedLinearJSD`;
* Liger ``LigerFusedLinearJSDLoss`` (``liger_kernel.chunked_loss``) →
  :class:`kldiv.compat.liger.LigerFusedLinearJSDLoss`;
* torchtune ``ForwardKLLoss``, ``ReverseKLLoss`` and their ``...WithChunkedOutputLoss`` →
  :mod:`kldiv.compat.torchtune`.

β as TRL and Liger mean it: ``0`` is the forward KL(teacher‖student), ``1`` the reverse KL, between
them the generalized JSD with mixture ``β·teacher + (1 − β)·student`` — kldiv's ``JS_β`` with the
teacher as ``y_true`` (:func:`divergence_for_beta`). Each module needs PyTorch only; the peers
themselves are not imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["divergence_for_beta"]


def divergence_for_beta(beta: float) -> dict[str, Any]:
    """kldiv's divergence (``"kl"`` / ``"js"``) and options for the peers' ``beta`` in ``[0, 1]``."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise ValueError(f"Argument `beta`: expected a number in [0, 1]; received {beta!r}.")
    if beta == 0:
        return {"divergence": "kl", "direction": "forward"}
    if beta == 1:
        return {"divergence": "kl", "direction": "reverse"}
    return {"divergence": "js", "beta": float(beta)}
