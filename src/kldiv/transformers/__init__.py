"""kldiv for Hugging Face ``transformers`` and TRL: distill a causal LM without forming its logits.

* :func:`distillation_loss` — the loss of a student by a teacher (or by a stored top-k teacher) on a
  tokenized batch: last hidden states + output heads through kldiv's fused-linear divergence, labels
  shifted as the model's own loss shifts them, ``-100`` ignored, ``num_items_in_batch`` honoured,
  tied embeddings, soft caps and logit scales included.
* :class:`DistillationTrainer` — a ``transformers.Trainer`` that trains with it (needs ``transformers``).
* :class:`GKDTrainer` — TRL's GKD / on-policy distillation trainer with its ``generalized_jsd_loss``
  computed by kldiv (needs ``trl``).

``distillation_loss`` itself needs only PyTorch: models are read through the interfaces
``transformers`` defines. Install with ``pip install "kldiv[transformers]"`` (``"kldiv[trl]"`` for TRL).
"""

from __future__ import annotations

from typing import Any

from ._loss import distillation_loss
from ._models import OutputHead, last_hidden_states, output_head, shifted_labels

__all__ = [
    "DistillationTrainer",
    "GKDTrainer",
    "OutputHead",
    "distillation_loss",
    "last_hidden_states",
    "output_head",
    "shifted_labels",
]

_LAZY = {"DistillationTrainer": "trainer", "GKDTrainer": "trl"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
