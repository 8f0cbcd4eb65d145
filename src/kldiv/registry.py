"""``kldiv.get``: look up a loss by its Keras name."""

from __future__ import annotations

from typing import Any

from . import errors
from .losses import JSDivergence, KLDivergence, js_divergence, kl_divergence

_BY_NAME: dict[str, Any] = {
    "kld": kl_divergence,
    "KLD": kl_divergence,
    "kl_divergence": kl_divergence,
    "kullback_leibler_divergence": kl_divergence,
    "KLDivergence": KLDivergence,
    "js_divergence": js_divergence,
    "jsd": js_divergence,
    "JSDivergence": JSDivergence,
}
_CLASSES = {"KLDivergence": KLDivergence, "JSDivergence": JSDivergence}


def get(identifier: Any) -> Any:
    """The loss function or class named ``identifier`` (as ``keras.losses.get``).

    ``"kld"``, ``"KLD"``, ``"kl_divergence"`` and ``"kullback_leibler_divergence"`` give the function
    :func:`kldiv.kl_divergence`; ``"KLDivergence"`` gives the class; ``"js_divergence"`` / ``"jsd"`` and
    ``"JSDivergence"`` likewise for the Jensen–Shannon divergence. A config dict
    ``{"class_name": "KLDivergence", "config": {...}}`` gives an instance; a callable is returned as is.

    Raises:
        ValueError: an unknown name.
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]
    raise errors.one_of("identifier", tuple(_BY_NAME), identifier)
