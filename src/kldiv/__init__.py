"""kldiv: the Kullback–Leibler divergence, with the exact ``tf.keras.losses.KLDivergence`` contract,
on any array library (NumPy, PyTorch, JAX, array-API arrays), plus the math distillation needs.

``import kldiv`` imports NumPy only; framework adapters live in ``kldiv.keras``, ``kldiv.tf_keras``,
``kldiv.torch`` and ``kldiv.jax`` and import their framework when first used.
"""

from .losses import (
    KLD,
    JSDivergence,
    KLDivergence,
    js_divergence,
    kl_divergence,
    kld,
    kullback_leibler_divergence,
)
from .options import Options
from .reduction import Reduction
from .registry import get

__version__ = "0.1.0"

__all__ = [
    "KLD",
    "JSDivergence",
    "KLDivergence",
    "Options",
    "Reduction",
    "__version__",
    "get",
    "js_divergence",
    "kl_divergence",
    "kld",
    "kullback_leibler_divergence",
]
