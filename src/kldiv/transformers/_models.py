"""What kldiv needs from a Hugging Face causal LM: its last hidden states, its output head (weight,
bias, what the model does to the logits after it) and its shifted labels — without its logits.

Models are read through ``transformers``' own interfaces (``base_model``, ``get_output_embeddings()``,
``config.get_text_config()``), so nothing here imports ``transformers``. The map after the head is
taken from the config keys the library's causal LMs use (Gemma's ``final_logit_softcapping``,
Cohere's ``logit_scale``, Granite's ``logits_scaling``, ``output_multiplier``) and checked once per
model against the model's own logits on two tokens (:func:`verify_head`), so a model that does
something else raises instead of training on different logits.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._extras import require
from ..core.logit_maps import LogitMap

torch = require("torch", "kldiv.transformers")

IGNORE_INDEX = -100
"""The label ``transformers`` ignores (``ForCausalLMLoss``'s ``ignore_index``)."""

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "inputs_embeds")
"""The batch keys handed to the models (the rest — labels, stored teacher top-k — stay out)."""


@dataclass(frozen=True)
class OutputHead:
    """``logits = φ(hidden @ weight.T + bias)``: a causal LM's head and its logit map ``φ``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    logit_map: LogitMap

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]


def _text_config(model: Any) -> Any:
    config = getattr(model, "config", None)
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def output_head(model: Any, side: str) -> OutputHead:
    """The head of ``model`` (``get_output_embeddings()``: tied to the input embeddings or not, its
    bias if any) and the map its ``forward`` applies to the logits, read from its config."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    if isinstance(model, wrappers):
        raise TypeError(
            f"Argument `{side}`: expected an unwrapped causal LM; received a {type(model).__name__} wrapper. "
            "kldiv.transformers runs the base model and the head itself, which would bypass the wrapper's "
            "gradient synchronisation: it supports single-process training (one device) for now."
        )
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise TypeError(
            f"Argument `{side}`: expected a causal LM whose get_output_embeddings() is a linear layer; "
            f"received {type(model).__name__}."
        )
    config = _text_config(model)
    scale = 1.0
    for key, power in (("logit_scale", 1), ("output_multiplier", 1), ("logits_scaling", -1)):
        value = getattr(config, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 1:
            scale *= float(value) ** power
    softcap = getattr(config, "final_logit_softcapping", None)
    bias = getattr(head, "bias", None)
    return OutputHead(head.weight, bias, LogitMap(None if scale == 1.0 else scale, softcap, name=side))


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {key: batch[key] for key in MODEL_INPUTS if batch.get(key) is not None}


def last_hidden_states(model: Any, batch: Mapping[str, Any], side: str = "student") -> torch.Tensor:
    """``[B, T, H]``: the base model's ``last_hidden_state`` (the final norm applied, no head)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise TypeError(
            f"Argument `{side}`: expected a transformers causal LM with a base model; received "
            f"{type(model).__name__}."
        )
    return base(**model_inputs(batch), use_cache=False).last_hidden_state


def shifted_labels(batch: Mapping[str, Any]) -> torch.Tensor:
    """The labels each position predicts, as the model's own loss shifts them (``ForCausalLMLoss``):
    ``batch["shift_labels"]`` when the collator gives them, else ``labels`` (or ``input_ids`` with
    padding — ``attention_mask == 0`` — ignored) moved one position left with ``-100`` last."""
    if batch.get("shift_labels") is not None:
        return batch["shift_labels"]
    labels = batch.get("labels")
    if labels is None:
        if batch.get("input_ids") is None:
            raise ValueError(
                "Argument `batch`: expected `labels` (or `shift_labels`) with `inputs_embeds`; received "
                f"keys {sorted(batch)}."
            )
        labels = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is not None:
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def verify_head(model: Any, head: OutputHead, batch: Mapping[str, Any], side: str) -> None:
    """Once per model: the model's own logits on the first two tokens of the batch equal
    ``φ(hidden @ W.T + b)``; a ``ValueError`` names the model when they do not (a map kldiv does not
    know). Runs in eval mode without gradients (dropout would make two forwards differ)."""
    if model in _VERIFIED:
        return
    inputs = {key: value[:1, :2] for key, value in model_inputs(batch).items()}
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(**inputs, use_cache=False).logits
            hidden = last_hidden_states(model, inputs, side)
            logits = head.logit_map.apply(torch, torch.nn.functional.linear(hidden, head.weight, head.bias))
    finally:
        model.train(training)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((logits.to(expected.dtype) - expected).abs().max()) if expected.numel() else 0.0
    tolerance = (
        1e-4 * max(1.0, scale) if expected.dtype in (torch.float32, torch.float64) else 2e-2 * max(1.0, scale)
    )
    if not error <= tolerance:
        raise ValueError(
            f"Argument `{side}`: kldiv.transformers could not reproduce the logits of {type(model).__name__} "
            f"from its last hidden states and output head (largest difference {error:.3g}; scale "
            f"{head.logit_map.scale}, softcap {head.logit_map.softcap}): its forward applies a map kldiv "
            "does not know. Pass the logits' map by hand with kldiv.fused.torch.FusedLinearKLDivergence."
        )
    _VERIFIED[model] = True
