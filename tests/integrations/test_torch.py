"""``kldiv.torch``: the ``nn.Module`` and functional forms against the agnostic loss and float64, gradcheck
in float64, ``torch.compile`` without graph breaks, autocast, devices and DDP (gloo, 2 CPU ranks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import kldiv
import kldiv.torch

OPTION_SETS = {
    "default": {},
    "exact": {"epsilon": 0},
    "logits_T2_squared": {
        "y_true_format": "logits",
        "from_logits": True,
        "temperature": 2.0,
        "scale_by_temperature_squared": True,
    },
    "reverse_logits": {"direction": "reverse", "from_logits": True, "y_true_format": "logits", "epsilon": 0},
    "symmetric_log_probs": {
        "direction": "symmetric",
        "y_true_format": "log_probs",
        "y_pred_format": "log_probs",
    },
}
JS_OPTIONS = {"beta": 0.3, "from_logits": True, "y_true_format": "logits", "epsilon": 0}


def _inputs(options: dict[str, Any], shape: tuple[int, ...] = (5, 7), seed: int = 0) -> tuple[Any, Any]:
    """float64 (y_true, y_pred) in the formats ``options`` asks for."""
    generator = torch.Generator().manual_seed(seed)
    logits_t = 2 * torch.randn(shape, generator=generator, dtype=torch.float64)
    logits_p = torch.randn(shape, generator=generator, dtype=torch.float64)
    convert = {
        "probs": lambda z: torch.softmax(z, -1),
        "log_probs": lambda z: torch.log_softmax(z, -1),
        "logits": lambda z: z,
    }
    pred_format = "logits" if options.get("from_logits") else options.get("y_pred_format", "probs")
    y_true = convert[options.get("y_true_format", "probs")](logits_t)
    y_pred = convert[pred_format](logits_p)
    return y_true, y_pred.detach().requires_grad_(True)


def _reference_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "true_format": options.get("y_true_format", "probs"),
        "pred_format": "logits" if options.get("from_logits") else options.get("y_pred_format", "probs"),
        "direction": options.get("direction", "forward"),
        "beta": options.get("beta"),
        "temperature": options.get("temperature", 1.0),
        "epsilon": options.get("epsilon", 1e-7),
    }


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_module_equals_float64_reference(name: str, reference: Any) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options)
    value = kldiv.torch.KLDivergence(reduction="batchmean", **options)(y_true, y_pred)
    expected = reference.divergence(y_true.numpy(), y_pred.detach().numpy(), **_reference_options(options))
    if options.get("scale_by_temperature_squared"):
        expected = expected * options["temperature"] ** 2
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float64
    np.testing.assert_allclose(value.item(), expected.sum() / y_true.shape[0], rtol=1e-12)


def test_js_module_equals_float64_reference(reference: Any) -> None:
    y_true, y_pred = _inputs(JS_OPTIONS)
    value = kldiv.torch.JSDivergence(reduction="sum", **JS_OPTIONS)(y_true, y_pred)
    expected = reference.divergence(y_true.numpy(), y_pred.detach().numpy(), **_reference_options(JS_OPTIONS))
    np.testing.assert_allclose(value.item(), expected.sum(), rtol=1e-12)


@pytest.mark.parametrize(
    "reduction", ["auto", "none", "sum", "mean_with_sample_weight", "batchmean", "token_mean"]
)
def test_module_and_functional_equal_the_agnostic_loss(reduction: str) -> None:
    options = OPTION_SETS["logits_T2_squared"]
    y_true, y_pred = _inputs(options, shape=(3, 4, 6))
    weight = torch.rand(3, 4, dtype=torch.float64)
    mask = torch.rand(3, 4) > 0.3
    expected = kldiv.KLDivergence(reduction=reduction, **options)(y_true, y_pred, weight, mask=mask)
    module = kldiv.torch.KLDivergence(reduction=reduction, **options)(y_true, y_pred, weight, mask=mask)
    functional = kldiv.torch.kl_divergence(y_true, y_pred, weight, reduction=reduction, mask=mask, **options)
    torch.testing.assert_close(module, expected, rtol=0, atol=0)
    torch.testing.assert_close(functional, expected, rtol=0, atol=0)


def test_functional_default_is_the_per_sample_loss() -> None:
    y_true, y_pred = _inputs({})
    torch.testing.assert_close(kldiv.torch.kl_divergence(y_true, y_pred), kldiv.kl_divergence(y_true, y_pred))
    torch.testing.assert_close(
        kldiv.torch.js_divergence(y_true, y_pred, beta=0.2), kldiv.js_divergence(y_true, y_pred, beta=0.2)
    )


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_gradcheck_float64(name: str) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options, shape=(3, 5))
    loss = kldiv.torch.KLDivergence(reduction="sum", backend="core", **options)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: loss(y_true, p, weight), (y_pred,))
    assert torch.autograd.gradgradcheck(lambda p: loss(y_true, p, weight), (y_pred,))


def test_gradcheck_float64_js_with_mask_and_teacher_gradient() -> None:
    y_true, y_pred = _inputs(JS_OPTIONS, shape=(4, 5))
    y_true = y_true.detach().requires_grad_(True)
    mask = torch.tensor([True, False, True, True])
    loss = kldiv.torch.JSDivergence(reduction="token_mean", **JS_OPTIONS)
    assert torch.autograd.gradcheck(lambda t, p: loss(t, p, mask=mask), (y_true, y_pred))


def test_module_protocol() -> None:
    module = kldiv.torch.KLDivergence(reduction="sum", temperature=2.0, from_logits=True)
    assert isinstance(module, torch.nn.Module)
    assert dict(module.state_dict()) == {} and list(module.parameters()) == []
    assert module.reduction == "sum" and module.options.y_pred_format == "logits"
    assert kldiv.torch.KLDivergence.from_config(module.get_config()).get_config() == module.get_config()
    assert repr(module) == "KLDivergence(reduction='sum', y_pred_format='logits', temperature=2.0)"
    with pytest.raises(ValueError, match="reduction"):
        kldiv.torch.KLDivergence(reduction="avg")


def _compile_and_compare(fn: Any, *args: Any, eager_fn: Any = None) -> None:
    """``fn`` compiled with ``fullgraph=True`` (any graph break is an error) equals ``eager_fn`` (default
    ``fn``) run eagerly, value and gradient. Dynamo's graph goes to ``aot_eager`` (the autograd graph
    without Inductor's code generation, which one test below runs)."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    eager = (eager_fn or fn)(*args)
    eager_grads = torch.autograd.grad(eager, leaves)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    compiled_grads = torch.autograd.grad(compiled, leaves)
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["default", "logits_T2_squared", "reverse_logits"])
def test_torch_compile_no_graph_breaks(name: str) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options, shape=(4, 3, 9))
    module = kldiv.torch.KLDivergence(reduction="token_mean", **options)
    mask = torch.tensor([[True, True, False]] * 4)
    _compile_and_compare(lambda t, p, m: module(t, p, mask=m), y_true, y_pred, mask)


def test_torch_compile_functional_and_js() -> None:
    y_true, y_pred = _inputs(JS_OPTIONS, shape=(6, 8))
    weight = torch.rand(6, dtype=torch.float64)
    _compile_and_compare(
        lambda t, p, w: kldiv.torch.js_divergence(t, p, w, reduction="sum", **JS_OPTIONS),
        y_true,
        y_pred,
        weight,
    )


def test_torch_compile_large_input_uses_the_core() -> None:
    """Eagerly the Numba kernel may serve this size (when Numba is installed); under Dynamo
    ``backend="auto"`` means the core, so the graph holds no kernel call (no graph break)."""
    generator = torch.Generator().manual_seed(1)
    y_true = torch.softmax(torch.randn(256, 512, generator=generator), -1)
    y_pred = torch.randn(256, 512, generator=generator).requires_grad_(True)
    module = kldiv.torch.KLDivergence(from_logits=True)
    core = kldiv.torch.KLDivergence(from_logits=True, backend="core")
    _compile_and_compare(lambda t, p: module(t, p), y_true, y_pred, eager_fn=lambda t, p: core(t, p))


def test_torch_compile_inductor_training_step() -> None:
    """One real Inductor compilation of a small distillation step (forward and backward)."""
    torch.manual_seed(0)
    student = torch.nn.Linear(6, 5)
    x, teacher = torch.randn(16, 6), torch.randn(16, 5)
    loss_fn = kldiv.torch.KLDivergence(
        reduction="batchmean", from_logits=True, y_true_format="logits", temperature=2.0
    )

    def step(x: Any, teacher: Any) -> Any:
        return loss_fn(teacher, student(x))

    eager = step(x, teacher)
    eager_grads = torch.autograd.grad(eager, list(student.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)(x, teacher)
    compiled_grads = torch.autograd.grad(compiled, list(student.parameters()))
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_autocast_returns_float32(reference: Any) -> None:
    torch.manual_seed(0)
    student = torch.nn.Linear(6, 5)
    x, teacher = torch.randn(16, 6), torch.softmax(torch.randn(16, 5), -1)
    loss_fn = kldiv.torch.KLDivergence(from_logits=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = student(x)
        loss = loss_fn(teacher, logits)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())
    expected = reference.divergence(
        teacher.numpy(), logits.detach().double().numpy(), pred_format="logits", epsilon=1e-7
    ).mean()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)  # exact on the bf16 logits
    # Outside autocast, bf16 inputs return bf16 (kldiv's rule); an explicit dtype is kept under autocast.
    assert loss_fn(teacher, logits.detach()).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kept = kldiv.torch.KLDivergence(from_logits=True, dtype="bfloat16")(teacher, student(x))
    assert kept.dtype == torch.bfloat16


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


@pytest.mark.parametrize("device", _devices())
def test_stays_on_the_tensors_device(device: str) -> None:
    y_true, y_pred = _inputs(OPTION_SETS["logits_T2_squared"], shape=(4, 6))
    y_true = y_true.float().to(device)
    y_pred = y_pred.detach().float().to(device).requires_grad_(True)
    loss_fn = kldiv.torch.KLDivergence(**OPTION_SETS["logits_T2_squared"])
    value = loss_fn(y_true, y_pred, sample_weight=[1.0, 0.5, 0.0, 2.0])  # a list weight moves there too
    value.backward()
    assert value.device.type == device and y_pred.grad.device.type == device
    cpu = loss_fn(y_true.cpu(), y_pred.detach().cpu(), sample_weight=[1.0, 0.5, 0.0, 2.0])
    torch.testing.assert_close(value.cpu(), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_and_compile() -> None:
    torch.manual_seed(0)
    student = torch.nn.Linear(6, 5).cuda()
    x, teacher = torch.randn(16, 6, device="cuda"), torch.randn(16, 5, device="cuda")
    loss_fn = kldiv.torch.KLDivergence(from_logits=True, y_true_format="logits", temperature=2.0)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(teacher, student(x))
    assert loss.dtype == torch.float32 and loss.device.type == "cuda"
    eager = loss_fn(teacher, student(x))
    torch._dynamo.reset()
    compiled = torch.compile(lambda t, z: loss_fn(t, z), fullgraph=True)(teacher, student(x))
    torch.testing.assert_close(compiled, eager)


def test_ddp_gloo_two_ranks_equal_one_big_batch() -> None:
    """Two CPU ranks (gloo) with unequal masks: token_mean with ``num_items`` = global count / world size
    and DDP's gradient averaging give the gradient of the whole batch on one process."""
    script = Path(__file__).with_name("ddp_worker.py")
    source_root = str(Path(kldiv.__file__).resolve().parents[1])  # the ranks import this kldiv
    completed = subprocess.run(
        [sys.executable, str(script)],
        env={
            "OMP_NUM_THREADS": "1",
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p),
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = completed.stdout.strip().splitlines()[-1]
    assert result.startswith("max_grad_diff="), completed.stdout
    assert float(result.split("=")[1]) <= 1e-12
