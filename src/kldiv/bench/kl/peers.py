"""kldiv, NumPy, SciPy and PyTorch: each builder takes the :class:`~kldiv.bench.kl.inputs.Inputs`
of one size and returns the :class:`~kldiv.bench.timing.Case` to time (mean over rows of KL(t‖p))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..timing import Case
from .inputs import Inputs

EPSILON = 1e-7  # Keras' clip, used by the NumPy formula and the clipped JAX formula


def kldiv_loss(
    backend: str, framework: str, mode: str, epsilon: float | None = None
) -> Callable[[Inputs], Case]:
    """``kldiv.KLDivergence(backend=backend)`` on NumPy arrays or torch tensors (``loss.backward()``
    in the ``backward`` mode); ``epsilon=0.0``: exact mode (no clip)."""

    def build(inputs: Inputs) -> Case:
        import kldiv

        loss = kldiv.KLDivergence(backend=backend, epsilon=epsilon)
        if framework == "numpy":
            t, p = inputs.t, inputs.p
            return Case(lambda: loss(t, p))
        return torch_case(loss, inputs, mode)

    return build


def torch_case(loss: Callable[[Any, Any], Any], inputs: Inputs, mode: str) -> Case:
    """``loss(t, p)`` on torch tensors, or (``mode="backward"``) ``loss(t, p).backward()``."""
    t = inputs.torch("t")
    if mode == "forward":
        p = inputs.torch("p")
        return Case(lambda: loss(t, p))
    leaf = inputs.torch_leaf("p")
    return torch_backward(lambda: loss(t, leaf), leaf)


def torch_backward(forward: Callable[[], Any], leaf: Any) -> Case:
    """``forward().backward()`` timed; the gradient of ``leaf`` dropped after each call."""

    def run() -> Any:
        value = forward()
        value.backward()
        return value

    def after() -> None:
        leaf.grad = None

    return Case(run, after)


def numpy_formula(inputs: Inputs) -> Case:
    """``mean(sum(t·log(t/p)))`` with both clipped to ``[1e-7, 1]`` as Keras does."""

    def run() -> Any:
        t = np.clip(inputs.t, EPSILON, 1.0)
        p = np.clip(inputs.p, EPSILON, 1.0)
        return np.sum(t * np.log(t / p), axis=-1).mean()

    return Case(run)


def scipy_rel_entr(inputs: Inputs) -> Case:
    """``scipy.special.rel_entr(t, p).sum(-1).mean()``."""
    from scipy.special import rel_entr

    return Case(lambda: rel_entr(inputs.t, inputs.p).sum(axis=-1).mean())


def torch_kl_div(given: str, mode: str) -> Callable[[Inputs], Case]:
    """``F.kl_div(p.log(), t, reduction="batchmean")`` (``given="probs"``) or ``F.kl_div(log_p, t)``."""

    def build(inputs: Inputs) -> Case:
        import torch.nn.functional as F

        t = inputs.torch("t")
        name = "p" if given == "probs" else "log_p"
        x = inputs.torch(name) if mode == "forward" else inputs.torch_leaf(name)
        if given == "probs":

            def forward() -> Any:
                return F.kl_div(x.log(), t, reduction="batchmean")

        else:

            def forward() -> Any:
                return F.kl_div(x, t, reduction="batchmean")

        return Case(forward) if mode == "forward" else torch_backward(forward, x)

    return build
