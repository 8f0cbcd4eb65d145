"""Every ``nn.Module`` of kldiv behaves like a PyTorch module inside a model that holds it: ``model.to``
(dtype and device), ``copy.deepcopy``, ``pickle`` (and DataLoader workers started by ``spawn``),
``state_dict`` / ``load_state_dict``, ``torch.save`` / ``torch.load``; the moved, copied or reloaded loss
gives the original's value and gradient, which equal an independent float64 reference; ``repr`` shows
exactly the options that differ from the defaults."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import kldiv.distributed.torch
import kldiv.fused.torch
import kldiv.torch
from kldiv.distributed.torch import VocabParallelJSDivergence, VocabParallelKLDivergence

from .cases import (
    CASES,
    FUSED,
    Case,
    Holder,
    LossDataset,
    compute,
    ensure_process_group,
    reference,
)
from .cases import inputs as make_inputs

IDS = [case.id for case in CASES]
# Relative tolerance against the float64 reference, by the dtype of the inputs.
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 2e-2}
NN_MODULE_ATTRIBUTES = set(dir(torch.nn.Module))
# What a kldiv loss class may define over nn.Module: nothing else of nn.Module's is overridden (the
# fused classes once overrode ``_apply``, which broke ``model.to(...)``).
ALLOWED_OVERRIDES = {"__init__", "forward", "extra_repr", "__doc__", "__module__", "__annotations__"}


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """A one-rank gloo group for the vocabulary-parallel classes (torn down after this module)."""
    created = not torch.distributed.is_initialized()
    ensure_process_group()
    yield
    if created:
        torch.distributed.destroy_process_group()


def _assert_same(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    """Bit-identical values and gradients (same dtype, same device)."""
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.device == e.device
        assert torch.equal(a, e), (a, e)


def _assert_near_reference(
    case: Case, loss: torch.nn.Module, dtype: torch.dtype, device: str = "cpu"
) -> None:
    tensors = make_inputs(case, dtype, device)
    value, grad = compute(loss, case, tensors)
    want_value, want_grad = reference(case, tensors)
    rtol = TOLERANCE[dtype]
    torch.testing.assert_close(value.cpu().double(), want_value, rtol=rtol, atol=0)
    torch.testing.assert_close(grad.cpu().double(), want_grad, rtol=rtol, atol=rtol * want_grad.abs().max())


def test_cases_cover_every_module_class_of_kldiv() -> None:
    """Every public ``nn.Module`` subclass of the torch namespaces has a default and a non-default case."""
    classes = {
        value
        for namespace in (kldiv.torch, kldiv.fused.torch, kldiv.distributed.torch)
        for name, value in vars(namespace).items()
        if not name.startswith("_") and isinstance(value, type) and issubclass(value, torch.nn.Module)
    }
    assert len(classes) == 8
    for cls in classes:
        kwargs = [case.kwargs for case in CASES if case.cls is cls]
        assert {} in kwargs and any(kwargs), cls


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_overrides_no_nn_module_method(case: Case) -> None:
    for klass in case.cls.__mro__[: case.cls.__mro__.index(torch.nn.Module)]:
        overridden = (set(vars(klass)) & NN_MODULE_ATTRIBUTES) - ALLOWED_OVERRIDES
        assert not overridden, (klass, overridden)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_shows_the_options_that_differ_from_the_defaults(case: Case) -> None:
    loss = case.make()
    assert repr(loss) == case.repr
    assert f"(loss): {case.repr}" in repr(Holder(loss))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_value_and_gradient_equal_the_reference(case: Case, dtype: torch.dtype) -> None:
    _assert_near_reference(case, case.make(), dtype)


CONVERSIONS = {
    "to-float64": (lambda m: m.to(torch.float64), torch.float64, "cpu"),
    "double": (lambda m: m.double(), torch.float64, "cpu"),
    "half": (lambda m: m.half(), torch.float16, "cpu"),
    "to-bfloat16": (lambda m: m.to(torch.bfloat16), torch.bfloat16, "cpu"),
    "float": (lambda m: m.double().float(), torch.float32, "cpu"),
    "to-cpu": (lambda m: m.to("cpu"), torch.float32, "cpu"),
    "to-meta": (lambda m: m.to("meta"), torch.float32, "meta"),
    "to-device-and-dtype": (lambda m: m.to("cpu", torch.float64), torch.float64, "cpu"),
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("conversion", list(CONVERSIONS))
def test_model_conversion(case: Case, conversion: str) -> None:
    """The model moves (its layer's parameters follow); the loss then gives the original's value and
    gradient on the original inputs, and the reference's on inputs of the new dtype."""
    convert, dtype, device = CONVERSIONS[conversion]
    expected = compute(case.make(), case, make_inputs(case))
    model = Holder(case.make())
    assert convert(model) is model
    assert model.linear.weight.dtype == dtype and model.linear.weight.device.type == device
    assert repr(model.loss) == case.repr
    _assert_same(compute(model.loss, case, make_inputs(case)), expected)
    if device != "meta" and dtype != torch.float32:
        _assert_near_reference(case, model.loss, dtype)


@pytest.mark.parametrize("case", [c for c in CASES if not c.collective], ids=lambda c: c.id)
def test_model_on_meta_computes_shapes_on_meta_tensors(case: Case) -> None:
    """After ``model.to("meta")`` the loss runs on meta tensors (shape inference without data): a 0-d
    meta value and a meta gradient of the student's shape. (The vocabulary-parallel classes need real
    data for their collectives.)"""
    model = Holder(case.make()).to("meta")
    tensors = make_inputs(case, device="meta")
    value, grad = compute(model.loss, case, tensors)
    student = tensors["hidden" if case.family == FUSED else "y_pred"]
    assert value.device.type == "meta" and value.shape == () and value.dtype == torch.float32
    assert grad.device.type == "meta" and grad.shape == student.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_model_cuda(case: Case) -> None:
    """``model.cuda()``; the loss computes on CUDA inputs (the vocabulary-parallel classes on CPU inputs:
    their test group is gloo on CPU) and matches the reference."""
    model = Holder(case.make())
    assert model.cuda() is model
    assert model.linear.weight.is_cuda
    device = "cpu" if case.collective else "cuda"
    _assert_near_reference(case, model.loss, torch.float32, device)
    expected = compute(case.make(), case, make_inputs(case))
    _assert_same(compute(model.cpu().loss, case, make_inputs(case)), expected)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "pickle-protocol-2": lambda m: pickle.loads(pickle.dumps(m, protocol=2)),
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("how", list(COPIES))
def test_copy(case: Case, how: str) -> None:
    model = Holder(case.make())
    expected = compute(model.loss, case, make_inputs(case))
    copied = COPIES[how](model)
    assert copied.loss is not model.loss and type(copied.loss) is case.cls
    assert repr(copied.loss) == case.repr
    assert torch.equal(copied.linear.weight, model.linear.weight)
    _assert_same(compute(copied.loss, case, make_inputs(case)), expected)
    _assert_same(compute(COPIES[how](model.loss), case, make_inputs(case)), expected)  # the loss alone


@pytest.mark.parametrize("cls", [VocabParallelKLDivergence, VocabParallelJSDivergence])
def test_vocab_parallel_loss_with_an_explicit_group(cls: type) -> None:
    """``copy.deepcopy`` shares the process group (a handle, not data); pickling says what to do instead;
    ``from_config(get_config(), group)`` rebuilds an equal loss on the group."""
    group = torch.distributed.new_group([0])
    case = Case("explicit-group", cls, dict(temperature=2.0))
    model = Holder(cls(temperature=2.0, group=group))
    assert repr(model.loss) == f"{cls.__name__}(temperature=2.0, group={group!r})"
    expected = compute(model.loss, case, make_inputs(case))
    copied = copy.deepcopy(model)
    assert copied.loss is not model.loss and copied.loss.group is group
    _assert_same(compute(copied.loss, case, make_inputs(case)), expected)
    with pytest.raises(TypeError, match=f"{cls.__name__} with an explicit process group cannot be pickled"):
        pickle.dumps(model)
    with pytest.raises(TypeError, match="explicit process group"):
        torch.save(model, io.BytesIO())
    rebuilt = cls.from_config(model.loss.get_config(), group)
    assert rebuilt.group is group and repr(rebuilt) == repr(model.loss)
    _assert_same(compute(rebuilt, case, make_inputs(case)), expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip(case: Case) -> None:
    """The loss holds no parameters and no buffers: an empty state dict; the model's state dict loads
    into a fresh model strictly (and into the fresh loss), and a key the loss does not have is refused."""
    model = Holder(case.make())
    loss_state = model.loss.state_dict()
    assert list(loss_state) == [] and list(model.loss.parameters()) == [] and list(model.loss.buffers()) == []
    state = model.state_dict()
    assert set(state) == {"linear.weight", "linear.bias"}
    fresh = Holder(case.make())
    result = fresh.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh.linear.weight, model.linear.weight)
    assert fresh.loss.load_state_dict(loss_state, strict=True).missing_keys == []
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.loss.load_state_dict({"weight": torch.zeros(1)}, strict=True)
    _assert_same(compute(fresh.loss, case, make_inputs(case)), compute(model.loss, case, make_inputs(case)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_save_and_load(case: Case) -> None:
    model = Holder(case.make())
    expected = compute(model.loss, case, make_inputs(case))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.loss) is case.cls and repr(loaded.loss) == case.repr
    assert torch.equal(loaded.linear.weight, model.linear.weight)
    _assert_same(compute(loaded.loss, case, make_inputs(case)), expected)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = Holder(case.make())
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert torch.equal(fresh.linear.weight, model.linear.weight)


def test_dataloader_spawn_workers_compute_with_pickled_losses() -> None:
    """Two ``spawn`` DataLoader workers receive the dataset, every class's losses in it, by pickle, and
    compute with them what this process computes."""
    losses = [case.make() for case in CASES]
    loader = torch.utils.data.DataLoader(
        LossDataset(losses),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="spawn",
        timeout=600,
    )
    results = list(loader)
    assert len(results) == len(CASES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker: the matmuls of the fused classes round alike
    try:
        expected = [compute(loss, case, make_inputs(case)) for case, loss in zip(CASES, losses, strict=True)]
    finally:
        torch.set_num_threads(threads)
    for case, (value, grad), want in zip(CASES, results, expected, strict=True):
        _assert_same((value, grad), want)
        if case.family == FUSED:
            assert grad.shape == make_inputs(case)["hidden"].shape
