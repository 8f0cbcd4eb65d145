"""``DistillationTrainer``: ``transformers.Trainer`` with :func:`kldiv.transformers.distillation_loss`."""

from __future__ import annotations

from typing import Any

from .._extras import require
from . import _models
from ._loss import TOPK_KEYS, distillation_loss

transformers = require("transformers", "kldiv.transformers.DistillationTrainer")
torch = require("torch", "kldiv.transformers")


class DistillationTrainer(transformers.Trainer):
    """``Trainer`` distilling ``model`` (the student) from ``teacher_model`` with kldiv's fused loss.

    Args:
        *args, **kwargs: as ``transformers.Trainer`` (``model`` is the student).
        teacher_model: a causal LM with the student's vocabulary (moved to the training device, put in
            eval mode, never updated); None when the dataset holds the teacher's stored top-k columns
            (``teacher_topk_indices``, ``teacher_topk_values``; kept by ``remove_unused_columns``).
        divergence, temperature, top_k, alpha, chunk_size: as :func:`distillation_loss`.
        loss_options: kldiv options for the divergence (``direction``, ``beta``, ``epsilon``,
            ``scale_by_temperature_squared``, ...).

    Gradient accumulation is exact: the trainer counts the step's kept tokens for every model
    (``num_items_in_batch``; from the shifted labels, or from ``input_ids`` and the attention mask when
    the batches have no labels) and each micro-batch's loss is its sum divided by that count. Logging,
    evaluation (``eval_loss`` is the same loss) and checkpoints are ``Trainer``'s own. Single process
    (one device) for now: a DDP / DataParallel-wrapped model is refused with an error, since the loss
    runs the base model and the head itself, outside the wrapper.
    """

    def __init__(
        self,
        *args: Any,
        teacher_model: Any = None,
        divergence: str = "kl",
        temperature: float = 1.0,
        top_k: int | None = None,
        alpha: float = 0.0,
        chunk_size: int | None = None,
        loss_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_arguments = {
            "divergence": divergence,
            "temperature": temperature,
            "top_k": top_k,
            "alpha": alpha,
            "chunk_size": chunk_size,
            **(loss_options or {}),
        }
        # The step's token count reaches compute_loss whatever the model's forward signature says, so the
        # loss is already scaled for accumulation (Trainer then does not divide by the steps again).
        self.model_accepts_loss_kwargs = True
        self.teacher_model = teacher_model
        if teacher_model is not None:
            self.teacher_model = teacher_model.to(self.args.device).eval().requires_grad_(False)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [
            *self._signature_columns,
            *(k for k in TOPK_KEYS if k not in self._signature_columns),
        ]

    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
        if batch_samples and all("labels" not in b and "shift_labels" not in b for b in batch_samples):
            # Trainer counts labels only; distillation_loss takes the labels from input_ids then.
            return sum((_models.shifted_labels(b) != _models.IGNORE_INDEX).sum() for b in batch_samples).to(
                device
            )
        return super()._get_num_items_in_batch(batch_samples, device)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        loss = distillation_loss(
            model, self.teacher_model, inputs, num_items_in_batch=num_items_in_batch, **self.loss_arguments
        )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # As Trainer.compute_loss: num_items_in_batch counts every process's tokens and DDP averages.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, {}) if return_outputs else loss
