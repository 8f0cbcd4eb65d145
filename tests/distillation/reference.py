"""Float64 reference programs for the distillation options, written from the definitions with
plain NumPy loops over rows — independent of kldiv's core (no shared code, no array namespace)."""

from __future__ import annotations

import math

import numpy as np

KERAS_EPSILON = 1e-7


def to_log_probs(x: np.ndarray, fmt: str, temperature: float = 1.0, epsilon: float = 0.0) -> np.ndarray:
    """Rows of ``x`` (last axis) as float64 log-probabilities, after temperature and Keras clip."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        if fmt == "probs":
            row = np.clip(row, epsilon, 1.0) if epsilon > 0 else row
            with np.errstate(divide="ignore"):
                logs = np.log(row)
        else:
            logs = row.copy()
        if fmt == "logits" or temperature != 1.0:
            logs = logs / temperature
            top = np.max(logs)
            logs = logs - top - math.log(np.sum(np.exp(logs - top)))
        if epsilon > 0 and (fmt != "probs" or temperature != 1.0):
            logs = np.clip(logs, math.log(epsilon), 0.0)
        out[index] = logs
    return out


def kl_rows(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """KL(A‖B) per row from log-probabilities, with 0·log 0 = 0."""
    out = np.empty(log_a.shape[:-1])
    for index in np.ndindex(log_a.shape[:-1]):
        total = 0.0
        for la, lb in zip(log_a[index], log_b[index], strict=True):
            if la == -math.inf:
                continue
            total += math.exp(la) * (la - lb)
        out[index] = total
    return out


def divergence(
    t: np.ndarray,
    p: np.ndarray,
    *,
    true_format: str = "probs",
    pred_format: str = "probs",
    direction: str = "forward",
    beta: float | None = None,
    temperature: float = 1.0,
    epsilon: float = 0.0,
) -> np.ndarray:
    """Per-row divergence of the two arguments, float64."""
    log_t = to_log_probs(t, true_format, temperature, epsilon)
    log_p = to_log_probs(p, pred_format, temperature, epsilon)
    if beta is not None:
        if beta in (0.0, 1.0):
            return np.zeros(log_t.shape[:-1])
        with np.errstate(divide="ignore"):
            log_m = np.log(beta * np.exp(log_t) + (1 - beta) * np.exp(log_p))
        return beta * kl_rows(log_t, log_m) + (1 - beta) * kl_rows(log_p, log_m)
    if direction == "forward":
        return kl_rows(log_t, log_p)
    if direction == "reverse":
        return kl_rows(log_p, log_t)
    return kl_rows(log_t, log_p) + kl_rows(log_p, log_t)


def finite_difference_gradient(function, x: np.ndarray, relative_step: float = 1e-5) -> np.ndarray:
    """Central differences of a scalar ``function`` of a float64 array, with a step relative to
    each entry (small probabilities need small steps: the truncation error grows like 1/p³)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = relative_step * max(abs(x[index]), 1e-2)
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (function(up) - function(down)) / (2 * step)
    return grad
