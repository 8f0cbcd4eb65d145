"""Optional frameworks: a missing one gets an install hint that names kldiv's extra."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRAS = {
    "jax": ("JAX", "jax"),
    "keras": ("Keras 3", "keras"),
    "tensorflow": ("TensorFlow", "tf"),
    "tf_keras": ("tf_keras", "tf"),
    "torch": ("PyTorch", "torch"),
    "transformers": ("Hugging Face transformers", "transformers"),
    "trl": ("TRL", "trl"),
}


def require(module: str, user: str) -> ModuleType:
    """``import module`` for the kldiv module ``user``; raises ``ModuleNotFoundError`` with the
    ``pip install "kldiv[extra]"`` line when it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name not in (module, top):
            raise
        name, extra = _EXTRAS[top]
        raise ModuleNotFoundError(
            f'{user} needs {name}, which is not installed: pip install "kldiv[{extra}]"', name=module
        ) from None
