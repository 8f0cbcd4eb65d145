r"""TRL's GKD / on-policy distillation trainer with its loss computed by kldiv's fused path.

``trl.experimental.gkd.GKDTrainer.compute_loss`` runs both models to their ``[B, T, V]`` logits and
calls ``generalized_jsd_loss(student_logits, teacher_logits, labels, beta)``:

* ``beta = 0``: KL(teacher‖student) — kldiv ``KLDivergence(direction="forward")``;
* ``beta = 1``: KL(student‖teacher) — ``direction="reverse"``;
* otherwise ``β·KL(T‖M) + (1 − β)·KL(S‖M)``, ``M = β·T + (1 − β)·S`` — kldiv's ``JS_β`` with the
  teacher as ``y_true`` (the same β; kldiv's own ``β = 0 / 1`` is the degenerate mixture, so the
  endpoints are mapped to the KL directions above);

summed over the tokens whose shifted label is not ``-100`` and divided by their count (or by
``num_items_in_batch``). :class:`GKDTrainer` computes the same value and gradients through
:func:`kldiv.transformers.distillation_loss`, forming neither model's logits; on-policy generation,
``lmbda``, ``seq_kd`` and everything else stay TRL's.
"""

from __future__ import annotations

from typing import Any

from .._extras import require
from ..compat import divergence_for_beta
from ._loss import distillation_loss

gkd = require("trl.experimental.gkd", "kldiv.transformers.GKDTrainer")


class GKDTrainer(gkd.GKDTrainer):
    """``trl.experimental.gkd.GKDTrainer`` whose ``compute_loss`` is kldiv's fused distillation loss
    (same value as TRL's ``generalized_jsd_loss`` at temperature 1, as TRL's own ``compute_loss``).
    ``return_outputs=True`` returns ``(loss, {})``: there are no student logits to return."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        self.teacher_model.eval()
        loss = distillation_loss(
            model,
            self.teacher_model,
            {key: inputs[key] for key in ("input_ids", "attention_mask", "labels") if key in inputs},
            num_items_in_batch=num_items_in_batch,
            **divergence_for_beta(self.beta),
        )
        return (loss, {}) if return_outputs else loss
