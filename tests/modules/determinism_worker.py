"""Prints (last line of stdout, JSON) the SHA-256 of the values and gradients of fixed calls on the
Numba kernel paths; ``test_concurrency`` runs it in fresh interpreters and compares the digests."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

import kldiv
import kldiv.torch


def _digest(*arrays: np.ndarray | torch.Tensor) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        data = array.detach().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        sha.update(str((data.dtype, data.shape)).encode())
        sha.update(np.ascontiguousarray(data).tobytes())
    return sha.hexdigest()


def digests() -> dict[str, str]:
    """One digest per Numba path: NumPy (values), torch module (value and gradient), fused linear
    (value and the gradients of the hidden states and the weight)."""
    rng = np.random.default_rng(7)
    logits_t, logits_p = rng.normal(size=(2, 64, 1024)).astype(np.float32)
    probs_t = np.exp(logits_t) / np.exp(logits_t).sum(-1, keepdims=True)
    probs_p = np.exp(logits_p) / np.exp(logits_p).sum(-1, keepdims=True)
    js = kldiv.JSDivergence(reduction=None, y_true_format="logits", y_pred_format="logits")
    out = {
        "numpy-kl-probs": _digest(kldiv.KLDivergence(reduction=None)(probs_t, probs_p)),
        "numpy-js-logits": _digest(js(logits_t, logits_p)),
    }
    student = torch.from_numpy(logits_p).requires_grad_(True)
    loss = kldiv.torch.KLDivergence(
        reduction="batchmean", y_true_format="logits", y_pred_format="logits", temperature=2.0
    )(torch.from_numpy(logits_t), student)
    loss.backward()
    out["torch-kl-logits"] = _digest(loss, student.grad)
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(96, 32, generator=generator).requires_grad_(True)
    weight = (0.2 * torch.randn(1024, 32, generator=generator)).requires_grad_(True)
    teacher = torch.randn(96, 1024, generator=generator)
    fused = kldiv.torch.FusedLinearKLDivergence(chunk_size=32)(hidden, weight, teacher_logits=teacher)
    fused.backward()
    out["fused-kl"] = _digest(fused, hidden.grad, weight.grad)
    return out


if __name__ == "__main__":
    print(json.dumps(digests()))
