"""``kldiv bench``: kldiv against the libraries users would pick instead, and against the machine.

KL(t‖p) of fp32 softmax rows, mean over rows (Keras' ``sum_over_batch_size``, PyTorch's
``batchmean``), at several ``[rows, vocab]`` sizes, in two modes:

* ``forward``: the loss value. kldiv (``backend="numba"``, the fused kernel, and ``backend="core"``)
  on NumPy arrays and on CPU torch tensors; the NumPy formula (clipped as Keras), SciPy
  ``rel_entr``, PyTorch ``F.kl_div`` (from probabilities: ``F.kl_div(p.log(), t)``, and from given
  log-probabilities), JAX ``jit`` of the formula (plain — the fastest JAX, used by the targets — and
  clipped as Keras), optax ``kl_divergence`` (``jit``, log-probabilities given), tf_keras
  ``KLDivergence`` (in ``tf.function`` and eager), Keras 3 ``KLDivergence`` (eager, on the backend
  loaded in this process).
* ``backward``: the value and the gradient w.r.t. ``y_pred``: kldiv on torch tensors
  (``loss.backward()``), PyTorch autograd of ``F.kl_div``, ``jax.jit(jax.value_and_grad)``, optax
  likewise, ``tf.GradientTape`` (tf_keras in ``tf.function`` and eager, Keras 3).

Machine floors, measured in the same run (Numba, all cores, float32 sums so that loops vectorize):
reading both inputs once; reading both and writing one preallocated array (the floor of a
forward+backward pass), and the same into a new array each call (its page faults included, as any
implementation that returns a new gradient pays them); one vectorized ``log`` per element on
cache-resident blocks (:func:`kldiv.kernels._fastmath.logf`).

Every figure is the median of ``repeats`` timings (``time.perf_counter``) after ``warmup`` calls
(compilation, caches), with the implementations interleaved: each repetition runs every
implementation once, round-robin, so that drift of the machine hits all of them alike. What a call
returns is released after the clock stops. Peers that are not installed are skipped (and named).
Nothing here asserts a time.

With ``memory=True`` each case also runs in a fresh process (Linux ``/proc/self/status``):
``peak_extra_mb`` is its peak resident memory (``VmHWM``: imports, framework copies of the inputs,
compilation and the call) minus that of a process that only allocates the inputs; ``op_peak_mb`` is
the peak during one warm call (reset with ``clear_refs``) minus the resident memory before it.

:func:`run_benchmark` is the harness (``benchmarks/bench_kl.py`` calls it); :func:`bench_command`
is ``kldiv bench``. Frameworks are imported only when a case that needs them is built.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import numpy as np

DEFAULT_SIZES = ((32, 1000), (1024, 32000), (4096, 32000), (2048, 128256))
MODES = ("forward", "backward")
MODE_TITLES = {"forward": "forward", "backward": "forward+backward"}
PEERS = ("numpy", "scipy", "torch", "jax", "optax", "tf_keras", "keras")
EPSILON = 1e-7  # Keras' clip, used by the NumPy formula and the clipped JAX formula
LOG_BLOCK = 2048  # floats per cache-resident block of the log floor
LOG_BLOCKS = 8  # blocks cycled through by the log floor (64 KiB in all)
LARGE = 1 << 20  # elements from which the bandwidth targets are checked
TARGETS = {
    "forward_vs_read_floor": 1.3,
    "forward_speedup_vs_jax": 1.5,
    "backward_vs_read_write_floor": 1.3,
    "backward_speedup_vs_jax": 3.0,
    "small_vs_framework_op": 1.3,
}

# What each peer (or kldiv variant) needs installed, by module name.
REQUIREMENTS = {
    "floor": ("numba",),
    "kldiv": (),
    "numpy": (),
    "scipy": ("scipy",),
    "torch": ("torch",),
    "jax": ("jax",),
    "optax": ("jax", "optax"),
    "tf_keras": ("tensorflow", "tf_keras"),
    "keras": ("keras",),
}
VERSIONS = ("numpy", "numba", "scipy", "torch", "jax", "jaxlib", "optax", "tensorflow", "tf_keras", "keras")


# ---------------------------------------------------------------------------------------------
# Inputs


def softmax_rows(rows: int, n: int, seed: int) -> np.ndarray:
    """``[rows, n]`` float32 rows of ``softmax(2·z)``, ``z`` standard normal (computed in place)."""
    x = np.random.default_rng(seed).standard_normal((rows, n), dtype=np.float32)
    x *= np.float32(2.0)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


class Inputs:
    """The two distributions of one size and their copies in each framework, made once and shared.

    ``t`` (y_true) and ``p`` (y_pred) are NumPy arrays; ``log_p`` is ``log p`` for the peers that
    take log-probabilities. Torch tensors share the NumPy memory; JAX and TensorFlow hold copies.
    """

    def __init__(self, rows: int, n: int, seed: int) -> None:
        self.shape = (rows, n)
        self.t = softmax_rows(rows, n, seed)
        self.p = softmax_rows(rows, n, seed + 1)
        self._cache: dict[tuple[str, str], Any] = {}

    def numpy(self, name: str) -> np.ndarray:
        if name == "log_p":
            return self._cached("numpy", name, lambda: np.log(self.p))
        return getattr(self, name)

    def torch(self, name: str) -> Any:
        import torch

        return self._cached("torch", name, lambda: torch.from_numpy(self.numpy(name)))

    def torch_leaf(self, name: str) -> Any:
        """A new tensor (sharing the NumPy memory) that requires a gradient."""
        import torch

        return torch.from_numpy(self.numpy(name)).requires_grad_()

    def jax(self, name: str) -> Any:
        import jax

        return self._cached("jax", name, lambda: jax.device_put(self.numpy(name)).block_until_ready())

    def tf(self, name: str) -> Any:
        import tensorflow as tf

        return self._cached("tf", name, lambda: tf.constant(self.numpy(name)))

    def _cached(self, framework: str, name: str, make: Callable[[], Any]) -> Any:
        key = (framework, name)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


# ---------------------------------------------------------------------------------------------
# Implementations


@dataclasses.dataclass
class Case:
    """A prepared call: ``run`` is timed, ``after`` (untimed) releases what it left behind."""

    run: Callable[[], Any]
    after: Callable[[], None] | None = None


@dataclasses.dataclass(frozen=True)
class Implementation:
    key: str
    label: str
    group: str  # "floor", "kldiv" or a peer name
    mode: str
    build: Callable[[Inputs], Case]

    @property
    def needs(self) -> tuple[str, ...]:
        """The modules it needs installed."""
        needs = REQUIREMENTS[self.group]
        if self.key.startswith("kldiv_fused"):
            needs += ("numba",)
        if self.group == "kldiv" and (self.key.endswith("torch") or self.mode == "backward"):
            needs += ("torch",)
        return needs


def _sync_jax(value: Any) -> Any:
    import jax

    return jax.block_until_ready(value)


def _kldiv(backend: str, framework: str, mode: str) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        import kldiv

        loss = kldiv.KLDivergence(backend=backend)
        if framework == "numpy":
            t, p = inputs.t, inputs.p
            return Case(lambda: loss(t, p))
        t = inputs.torch("t")
        if mode == "forward":
            p = inputs.torch("p")
            return Case(lambda: loss(t, p))
        leaf = inputs.torch_leaf("p")
        return _torch_backward(lambda: loss(t, leaf), leaf)

    return build


def _torch_backward(forward: Callable[[], Any], leaf: Any) -> Case:
    def run() -> Any:
        value = forward()
        value.backward()
        return value

    def after() -> None:
        leaf.grad = None

    return Case(run, after)


def _numpy_formula(inputs: Inputs) -> Case:
    def run() -> Any:
        t = np.clip(inputs.t, EPSILON, 1.0)
        p = np.clip(inputs.p, EPSILON, 1.0)
        return np.sum(t * np.log(t / p), axis=-1).mean()

    return Case(run)


def _scipy_rel_entr(inputs: Inputs) -> Case:
    from scipy.special import rel_entr

    return Case(lambda: rel_entr(inputs.t, inputs.p).sum(axis=-1).mean())


def _torch_kl_div(given: str, mode: str) -> Callable[[Inputs], Case]:
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

        return Case(forward) if mode == "forward" else _torch_backward(forward, x)

    return build


def _jax_formula(t: Any, p: Any) -> Any:
    import jax.numpy as jnp

    return jnp.mean(jnp.sum(t * jnp.log(t / p), axis=-1))


def _jax_formula_clipped(t: Any, p: Any) -> Any:
    """The formula with Keras' clip. XLA's CPU code for ``clip`` (``min``/``max`` with NaN rules)
    does not vectorize: several times slower than the plain formula, hence both are measured."""
    import jax.numpy as jnp

    return _jax_formula(jnp.clip(t, EPSILON, 1.0), jnp.clip(p, EPSILON, 1.0))


def _jax(mode: str, clip: bool = False) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        import jax

        t, p = inputs.jax("t"), inputs.jax("p")
        formula = _jax_formula_clipped if clip else _jax_formula
        f = jax.jit(formula if mode == "forward" else jax.value_and_grad(formula, argnums=1))
        return Case(lambda: _sync_jax(f(t, p)))

    return build


def _optax(mode: str) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        import jax
        import optax

        def mean_kl(log_p: Any, t: Any) -> Any:
            return optax.losses.kl_divergence(log_p, t).mean()

        log_p, t = inputs.jax("log_p"), inputs.jax("t")
        f = jax.jit(mean_kl if mode == "forward" else jax.value_and_grad(mean_kl))
        return Case(lambda: _sync_jax(f(log_p, t)))

    return build


def _tf_keras(mode: str, compiled: bool) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        import tensorflow as tf
        import tf_keras

        loss = tf_keras.losses.KLDivergence()
        t, p = inputs.tf("t"), inputs.tf("p")
        step = _tf_step(loss, mode)
        step = tf.function(step) if compiled else step
        return Case(lambda: _tf_sync(step(t, p)))

    return build


def _tf_step(loss: Callable[[Any, Any], Any], mode: str) -> Callable[[Any, Any], Any]:
    import tensorflow as tf

    if mode == "forward":
        return loss

    def value_and_grad(t: Any, p: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss(t, p)
        return value, tape.gradient(value, p)

    return value_and_grad


def _tf_sync(result: Any) -> Any:
    value = result[0] if isinstance(result, tuple) else result
    value.numpy()
    return result


def keras_backend() -> str:
    """The backend of Keras 3 in this process (imports Keras)."""
    import keras

    return keras.backend.backend()


def _keras3(mode: str) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        import keras

        backend = keras.backend.backend()
        loss = keras.losses.KLDivergence()
        if backend == "tensorflow":
            t, p = inputs.tf("t"), inputs.tf("p")
            step = _tf_step(loss, mode)
            return Case(lambda: _tf_sync(step(t, p)))
        if backend == "jax":
            import jax

            t, p = inputs.jax("t"), inputs.jax("p")
            if mode == "forward":
                return Case(lambda: _sync_jax(loss(t, p)))
            value_and_grad = jax.value_and_grad(lambda q: loss(t, q))
            return Case(lambda: _sync_jax(value_and_grad(p)))
        if backend == "torch":
            t = inputs.torch("t")
            if mode == "forward":
                p = inputs.torch("p")
                return Case(lambda: loss(t, p))
            leaf = inputs.torch_leaf("p")
            return _torch_backward(lambda: loss(t, leaf), leaf)
        if mode == "forward":
            return Case(lambda: loss(inputs.t, inputs.p))
        raise NotImplementedError(f"no gradient on the Keras {backend!r} backend")

    return build


# Floors: Numba kernels compiled on first use (a few seconds; the warm-up absorbs it).

_FLOOR_KERNELS: dict[str, Callable[..., Any]] = {}


def _floor_kernels() -> dict[str, Callable[..., Any]]:
    if _FLOOR_KERNELS:
        return _FLOOR_KERNELS
    from numba import njit, prange

    from ..kernels._fastmath import FASTMATH, logf

    @njit(parallel=True, fastmath=FASTMATH)
    def read_both(t, p):  # pragma: no cover - compiled
        rows, n = t.shape
        sums = np.empty(rows, dtype=np.float32)
        for r in prange(rows):
            total = np.float32(0.0)
            for i in range(n):
                total += t[r, i] + p[r, i]
            sums[r] = total
        return sums.sum()

    @njit(parallel=True, fastmath=FASTMATH)
    def read_both_write_one(t, p, out):  # pragma: no cover - compiled
        rows, n = t.shape
        for r in prange(rows):
            for i in range(n):
                out[r, i] = t[r, i] - p[r, i]

    @njit(parallel=True, fastmath=FASTMATH)
    def log_per_element(blocks, count):  # pragma: no cover - compiled
        k, width = blocks.shape
        sums = np.empty(count, dtype=np.float32)
        for j in prange(count):
            block = blocks[j % k]
            total = np.float32(0.0)
            for i in range(width):
                total += logf(block[i])
            sums[j] = total
        return sums.sum()

    _FLOOR_KERNELS.update(read=read_both, read_write=read_both_write_one, log=log_per_element)
    return _FLOOR_KERNELS


def _floor_read(inputs: Inputs) -> Case:
    kernel = _floor_kernels()["read"]
    return Case(lambda: kernel(inputs.t, inputs.p))


def _floor_rw(fresh: bool) -> Callable[[Inputs], Case]:
    def build(inputs: Inputs) -> Case:
        kernel = _floor_kernels()["read_write"]
        if fresh:

            def run() -> Any:
                out = np.empty_like(inputs.p)
                kernel(inputs.t, inputs.p, out)
                return out

            return Case(run)
        out = np.empty_like(inputs.p)
        out.fill(0.0)  # touch the pages once, outside the timing
        return Case(lambda: kernel(inputs.t, inputs.p, out))

    return build


def _floor_log(inputs: Inputs) -> Case:
    kernel = _floor_kernels()["log"]
    flat = inputs.p.reshape(-1)
    width = min(LOG_BLOCK, flat.size)
    k = max(1, min(LOG_BLOCKS, flat.size // width))
    blocks = np.ascontiguousarray(flat[: k * width].reshape(k, width))
    count = math.ceil(flat.size / width)
    return Case(lambda: kernel(blocks, count))


def implementations(keras_backend_name: str | None = None) -> list[Implementation]:
    """Every implementation, floors first, then kldiv, then the peers, in the order of the tables.

    Keys are unique within a mode; the ratios look up ``floor_read`` / ``floor_rw`` (the floor of the
    mode), ``kldiv_fused`` (NumPy forward, torch forward+backward), ``jax_jit`` and ``torch_kl_div``.
    """
    keras = f"Keras 3 KLDivergence ({keras_backend_name or 'loaded backend'}, eager"
    F, B = "forward", "backward"
    I = Implementation  # noqa: E741
    return [
        I("floor_read", "floor: read both inputs", "floor", F, _floor_read),
        I("floor_log", "floor: one vectorized log per element", "floor", F, _floor_log),
        I("floor_rw", "floor: read both, write one array", "floor", B, _floor_rw(False)),
        I("floor_rw_new", "floor: read both, write a new array", "floor", B, _floor_rw(True)),
        I("kldiv_fused", "kldiv fused (numba), NumPy", "kldiv", F, _kldiv("numba", "numpy", F)),
        I("kldiv_core", "kldiv core, NumPy", "kldiv", F, _kldiv("core", "numpy", F)),
        I("kldiv_fused_torch", "kldiv fused (numba), torch", "kldiv", F, _kldiv("numba", "torch", F)),
        I("kldiv_core_torch", "kldiv core, torch", "kldiv", F, _kldiv("core", "torch", F)),
        I("kldiv_fused", "kldiv fused (numba), torch backward()", "kldiv", B, _kldiv("numba", "torch", B)),
        I("kldiv_core", "kldiv core, torch backward()", "kldiv", B, _kldiv("core", "torch", B)),
        I("numpy_formula", "NumPy formula (clip as Keras)", "numpy", F, _numpy_formula),
        I("scipy_rel_entr", "SciPy rel_entr", "scipy", F, _scipy_rel_entr),
        I("torch_kl_div", "PyTorch F.kl_div(p.log(), t)", "torch", F, _torch_kl_div("probs", F)),
        I("torch_kl_div_log", "PyTorch F.kl_div (log-probs given)", "torch", F, _torch_kl_div("log", F)),
        I("torch_kl_div", "PyTorch autograd, F.kl_div(p.log(), t)", "torch", B, _torch_kl_div("probs", B)),
        I("torch_kl_div_log", "PyTorch autograd, F.kl_div (log-probs)", "torch", B, _torch_kl_div("log", B)),
        I("jax_jit", "JAX jit(formula)", "jax", F, _jax(F)),
        I("jax_jit_clip", "JAX jit(formula), clip as Keras", "jax", F, _jax(F, clip=True)),
        I("jax_jit", "JAX jit(value_and_grad(formula))", "jax", B, _jax(B)),
        I("jax_jit_clip", "JAX jit(value_and_grad), clip as Keras", "jax", B, _jax(B, clip=True)),
        I("optax", "optax kl_divergence, jit (log-probs given)", "optax", F, _optax(F)),
        I("optax", "optax jit(value_and_grad) (log-probs given)", "optax", B, _optax(B)),
        I("tf_keras_function", "tf_keras KLDivergence, tf.function", "tf_keras", F, _tf_keras(F, True)),
        I("tf_keras_eager", "tf_keras KLDivergence, eager", "tf_keras", F, _tf_keras(F, False)),
        I("tf_keras_function", "tf_keras GradientTape, tf.function", "tf_keras", B, _tf_keras(B, True)),
        I("tf_keras_eager", "tf_keras GradientTape, eager", "tf_keras", B, _tf_keras(B, False)),
        I("keras3", keras + ")", "keras", F, _keras3(F)),
        I("keras3", keras + ", gradient)", "keras", B, _keras3(B)),
    ]


# ---------------------------------------------------------------------------------------------
# Availability, sizes, memory


def missing_modules(names: Sequence[str]) -> list[str]:
    """The modules of ``names`` that are not installed (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x32000"`` → ``(1024, 32000)``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        rows, n = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"expected a size ROWSxVOCAB such as 1024x32000; received {text!r}") from None
    if rows < 1 or n < 1:
        raise ValueError(f"expected positive sizes; received {text!r}")
    return rows, n


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def arrays_needed(groups: set[str]) -> int:
    """A generous count of ``[rows, vocab]`` float32 arrays one size needs at its peak.

    Inputs (2) and ``log p`` (1), the copies JAX (3) and TensorFlow (2) hold, the temporaries of the
    hungriest case (one eager tf_keras / Keras 3 gradient: 8; kldiv core's torch backward: 7) and
    allocator slack (2). Measured: the whole run peaks at 18 arrays' worth at [2048, 128256].
    """
    count = 3 + 8 + 2
    if groups & {"jax", "optax"}:
        count += 3
    if groups & {"tf_keras", "keras"}:
        count += 2
    return count


def size_skip_reason(shape: tuple[int, int], groups: set[str]) -> str | None:
    need = math.prod(shape) * 4 * arrays_needed(groups)
    free = available_memory()
    if free is not None and need > free:
        return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"
    return None


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmHWM``: peak resident, ``VmRSS``: resident now)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_kib() -> int:
    """Peak resident memory of this process. ``VmHWM`` where Linux has it: ``ru_maxrss`` of a process
    started by ``exec`` also counts the peak of the process it replaced (here the benchmark parent,
    several GB), so it is the fallback only."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib // 1024 if sys.platform == "darwin" else kib


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_child(key: str, mode: str, shape: tuple[int, int], seed: int) -> dict[str, Any]:
    """Run in a fresh process: allocate the inputs, then (unless ``key == "inputs"``) build the case,
    warm it up and run it once. Returns peaks in KiB: ``peak_kib`` (the whole process: imports,
    framework copies, compilation, the call) and ``op_kib`` (one warm call: the peak during the call
    minus the resident memory just before it; None where the peak cannot be reset)."""
    inputs = Inputs(*shape, seed)
    if key == "inputs":
        return {"peak_kib": _peak_kib()}
    impl = next(i for i in implementations() if i.key == key and i.mode == mode)
    case = impl.build(inputs)
    _call(case)
    gc.collect()
    peak = _peak_kib()
    before = _status_kib("VmRSS")
    resettable = before is not None and _reset_peak()
    _call(case)
    op = max(0, _peak_kib() - before) if resettable else None
    return {"peak_kib": max(peak, _peak_kib()), "op_kib": op}


def _run_memory_child(key: str, mode: str, shape: tuple[int, int], seed: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "kldiv.cli.bench",
        "--memory-child",
        key,
        mode,
        f"{shape[0]}x{shape[1]}",
        str(seed),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# Timing


def _call(case: Case) -> float:
    """Seconds of one ``case.run()``; what it returns is released after the clock stops."""
    start = time.perf_counter()
    result = case.run()
    elapsed = time.perf_counter() - start
    del result
    if case.after is not None:
        case.after()
    return elapsed


class _PlainProgress:
    """Progress as plain lines on stderr (when rich is not installed)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self._last = ""

    def update(self, description: str, advance: int = 0) -> None:
        self.done += advance
        if description != self._last:
            self._last = description
            print(f"[{self.done}/{self.total}] {description}", file=self.stream, flush=True)


class _RichProgress:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("benchmark", total=total)

    def update(self, description: str, advance: int = 0) -> None:
        self.progress.update(self.task, description=description, advance=advance)


@contextlib.contextmanager
def progress_bar(total: int, stream: TextIO, use_rich: bool = True) -> Iterator[Any]:
    """A rich progress bar on ``stream``, or plain lines if rich is missing."""
    if use_rich and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(file=stream), transient=False) as progress:
            yield _RichProgress(progress, total)
    else:
        yield _PlainProgress(total, stream)


@dataclasses.dataclass
class Config:
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES
    modes: Sequence[str] = MODES
    peers: Sequence[str] = PEERS
    repeats: int = 5
    warmup: int = 1
    memory: bool = False
    seed: int = 0


def run_benchmark(config: Config, stream: TextIO = sys.stderr, use_rich: bool = True) -> dict[str, Any]:
    """Measure every selected implementation at every size; returns the JSON-able report."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    groups = {"floor", "kldiv", *config.peers}
    backend_name = keras_backend() if "keras" in groups and not missing_modules(("keras",)) else None
    chosen, skipped = [], []
    for impl in implementations(backend_name):
        if impl.group in groups and impl.mode in config.modes:
            missing = missing_modules(impl.needs)
            if missing:
                reason = f"not installed: {', '.join(missing)}"
                skipped.append(
                    {
                        "key": impl.key,
                        "mode": impl.mode,
                        "label": impl.label,
                        "group": impl.group,
                        "reason": reason,
                    }
                )
            else:
                chosen.append(impl)
    skipped_sizes = {}
    sizes = []
    for shape in config.sizes:
        reason = size_skip_reason(shape, {i.group for i in chosen})
        if reason:
            skipped_sizes[f"{shape[0]}x{shape[1]}"] = reason
        else:
            sizes.append(shape)
    for entry in skipped:
        print(f"skipped {MODE_TITLES[entry['mode']]} {entry['label']}: {entry['reason']}", file=stream)
    for size, reason in skipped_sizes.items():
        print(f"skipped size {size}: {reason}", file=stream)

    results: list[dict[str, Any]] = []
    calls = len(chosen) * len(sizes) * (config.warmup + config.repeats)
    children = (len(chosen) + 1) * len(sizes) if config.memory else 0
    with progress_bar(calls + children, stream, use_rich) as progress:
        for shape in sizes:
            inputs = Inputs(*shape, config.seed)
            for mode in config.modes:
                cases = [i for i in chosen if i.mode == mode]
                results += _measure(cases, inputs, config, progress)
            del inputs
            gc.collect()
        if config.memory:
            _measure_memory(results, sizes, config.seed, progress)
    _add_ratios(results)
    return {
        "benchmark": "KL(t||p) of fp32 softmax rows, mean over rows",
        "config": {
            "sizes": [list(s) for s in config.sizes],
            "modes": list(config.modes),
            "peers": list(config.peers),
            "repeats": config.repeats,
            "warmup": config.warmup,
            "memory": config.memory,
            "seed": config.seed,
        },
        "machine": machine_info(),
        "versions": versions(),
        "keras_backend": backend_name,
        "skipped": {"implementations": skipped, "sizes": skipped_sizes},
        "results": results,
        "targets": target_checks(results),
    }


def _measure(
    chosen: list[Implementation], inputs: Inputs, config: Config, progress: Any
) -> list[dict[str, Any]]:
    """Build, warm up, then time ``chosen`` round-robin, ``config.repeats`` times."""
    size = f"{inputs.shape[0]}x{inputs.shape[1]}"
    entries, cases = [], {}
    for impl in chosen:
        entry = {
            "size": list(inputs.shape),
            "mode": impl.mode,
            "key": impl.key,
            "label": impl.label,
            "group": impl.group,
            "times_ms": [],
        }
        entries.append(entry)
        progress.update(f"{size} {MODE_TITLES[impl.mode]}: warm-up {impl.label}")
        try:
            case = impl.build(inputs)
            for _ in range(config.warmup):
                _call(case)
            cases[impl.key] = case
        except Exception as exc:  # a peer failing (memory, version) must not stop the run
            entry["error"] = _one_line(exc)
        progress.update(f"{size} {MODE_TITLES[impl.mode]}: warm-up {impl.label}", advance=config.warmup)
    for repetition in range(config.repeats):
        for entry in entries:
            description = f"{size} {MODE_TITLES[entry['mode']]}: run {repetition + 1}/{config.repeats}"
            progress.update(description)
            case = cases.get(entry["key"])
            if case is not None:
                try:
                    entry["times_ms"].append(_call(case) * 1e3)
                except Exception as exc:
                    entry["error"] = _one_line(exc)
                    del cases[entry["key"]]
            progress.update(description, advance=1)
    for entry in entries:
        times = entry["times_ms"]
        entry["median_ms"] = statistics.median(times) if times and "error" not in entry else None
    cases.clear()
    gc.collect()
    return entries


def _measure_memory(
    results: list[dict[str, Any]], sizes: Sequence[tuple[int, int]], seed: int, progress: Any
) -> None:
    """Peak memory of each case in a fresh process, minus that of a process holding the inputs only."""
    for shape in sizes:
        size = f"{shape[0]}x{shape[1]}"
        progress.update(f"{size} memory: inputs only")
        baseline = _run_memory_child("inputs", "forward", shape, seed).get("peak_kib")
        progress.update(f"{size} memory: inputs only", advance=1)
        for entry in results:
            if tuple(entry["size"]) != shape:
                continue
            description = f"{size} memory: {MODE_TITLES[entry['mode']]} {entry['label']}"
            progress.update(description)
            if "error" not in entry:
                report = _run_memory_child(entry["key"], entry["mode"], shape, seed)
                if "error" in report:
                    entry["memory_error"] = report["error"]
                else:
                    if baseline is not None:
                        entry["peak_extra_mb"] = (report["peak_kib"] - baseline) / 1024
                    if report.get("op_kib") is not None:
                        entry["op_peak_mb"] = report["op_kib"] / 1024
            progress.update(description, advance=1)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """``vs_fused``: time / kldiv fused of the same size and mode; ``vs_floor``: time / the floor
    of the mode (reading both inputs for forward, reading both and writing one for backward)."""
    for entry in results:
        same = [e for e in results if e["size"] == entry["size"] and e["mode"] == entry["mode"]]
        fused = _median_of(same, "kldiv_fused")
        floor = _median_of(same, "floor_read" if entry["mode"] == "forward" else "floor_rw")
        median = entry["median_ms"]
        entry["vs_fused"] = median / fused if median and fused else None
        entry["vs_floor"] = median / floor if median and floor else None


def _median_of(entries: list[dict[str, Any]], key: str) -> float | None:
    return next((e["median_ms"] for e in entries if e["key"] == key and e["median_ms"]), None)


def target_checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of ``BASELINES.md`` at each measured size (``met`` is None if a figure is missing).

    The bandwidth and JAX targets are checked from :data:`LARGE` elements on (below, every figure is
    call overhead); the small-call target — kldiv as ``backend="auto"`` serves it (the core below
    :data:`kldiv.kernels.dispatch.AUTO_THRESHOLD`, or ``AUTO_THRESHOLD_GRAD`` with a gradient)
    against PyTorch's own op — at every size.
    """
    from ..kernels.dispatch import AUTO_THRESHOLD, AUTO_THRESHOLD_GRAD

    checks = []
    for shape in sorted({tuple(e["size"]) for e in results}, key=math.prod):
        by = {(e["mode"], e["key"]): e["median_ms"] for e in results if tuple(e["size"]) == shape}
        auto = "fused" if math.prod(shape) >= AUTO_THRESHOLD else "core"
        auto_grad = "fused" if math.prod(shape) >= AUTO_THRESHOLD_GRAD else "core"
        targets = [
            (
                "forward: kldiv fused / read floor",
                "forward",
                "kldiv_fused",
                "floor_read",
                "forward_vs_read_floor",
            ),
            ("forward: JAX jit / kldiv fused", "forward", "jax_jit", "kldiv_fused", "forward_speedup_vs_jax"),
            (
                "forward+backward: kldiv fused / read+write floor",
                "backward",
                "kldiv_fused",
                "floor_rw",
                "backward_vs_read_write_floor",
            ),
            (
                "forward+backward: JAX value_and_grad / kldiv fused",
                "backward",
                "jax_jit",
                "kldiv_fused",
                "backward_speedup_vs_jax",
            ),
        ]
        if math.prod(shape) < LARGE:
            targets = []
        targets += [
            (
                f"forward, torch: kldiv auto ({auto}) / F.kl_div",
                "forward",
                f"kldiv_{auto}_torch",
                "torch_kl_div",
                "small_vs_framework_op",
            ),
            (
                f"forward+backward, torch: kldiv auto ({auto_grad}) / F.kl_div autograd",
                "backward",
                f"kldiv_{auto_grad}",
                "torch_kl_div",
                "small_vs_framework_op",
            ),
        ]
        for name, mode, numerator, denominator, target in targets:
            a, b = by.get((mode, numerator)), by.get((mode, denominator))
            value = a / b if a and b else None
            limit, at_most = TARGETS[target], "speedup" not in target
            met = None if value is None else (value <= limit if at_most else value >= limit)
            size = f"{shape[0]}x{shape[1]}"
            checks.append(
                {"size": size, "target": name, "value": value, "limit": limit, "at_most": at_most, "met": met}
            )
    return checks


# ---------------------------------------------------------------------------------------------
# Machine and versions


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    info = {
        "cpu": model,
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": None if memory is None else round(memory / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    numba = sys.modules.get("numba")
    if numba is not None:
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        with contextlib.suppress(Exception):
            info["numba_threading_layer"] = numba.threading_layer()
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def versions() -> dict[str, str | None]:
    from .. import __version__

    found: dict[str, str | None] = {"kldiv": __version__}
    for name in VERSIONS:
        distribution = name.replace("_", "-")
        try:
            found[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


# ---------------------------------------------------------------------------------------------
# Reports: terminal table, Markdown, JSON, plot

_HEADERS = ("implementation", "ms", "spread", "× fused", "× floor")


def _rows(report: dict[str, Any], shape: list[int], mode: str) -> list[list[str]]:
    memory = report["config"].get("memory")
    rows = []
    for e in report["results"]:
        if e["size"] != shape or e["mode"] != mode:
            continue
        if e["median_ms"] is None:
            row = [e["label"], "—", e.get("error", "not measured"), "", ""]
        else:
            times = e["times_ms"]
            spread = f"{min(times):.3g}–{max(times):.3g}"
            row = [e["label"], f"{e['median_ms']:.4g}", spread, _times(e["vs_fused"]), _times(e["vs_floor"])]
        if memory:
            row += [_mb(e.get("peak_extra_mb")), _mb(e.get("op_peak_mb"))]
        rows.append(row)
    return rows


def _headers(report: dict[str, Any]) -> list[str]:
    headers = list(_HEADERS)
    if report["config"].get("memory"):
        headers += ["peak MB", "op MB"]
    return headers


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "" if value is None else f"{max(value, 0.0):.0f}"  # below the baseline by noise: 0


def _sections(report: dict[str, Any]) -> Iterator[tuple[str, list[list[str]]]]:
    shapes = sorted({tuple(e["size"]) for e in report["results"]}, key=math.prod)
    for shape in shapes:
        for mode in report["config"]["modes"]:
            rows = _rows(report, list(shape), mode)
            if rows:
                floor = "read floor" if mode == "forward" else "read+write floor"
                ratios = f"× fused: / kldiv fused; × floor: / {floor}"
                title = f"[{shape[0]}, {shape[1]}] {MODE_TITLES[mode]} ({ratios})"
                yield title, rows


def _target_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in report["targets"]:
        relation = "≤" if c["at_most"] else "≥"
        met = {True: "yes", False: "NO", None: "n/a"}[c["met"]]
        value = "—" if c["value"] is None else f"{c['value']:.2f}"
        rows.append([c["size"], c["target"], value, f"{relation} {c['limit']}", met])
    return rows


_TARGET_HEADERS = ("size", "target", "ratio", "goal", "met")


def print_report(report: dict[str, Any], stream: TextIO = sys.stdout, use_rich: bool = True) -> None:
    """The tables on ``stream``: rich tables if rich is installed, else aligned plain text."""
    sections = [*_sections(report), ("targets (BASELINES.md)", _target_rows(report))]
    if use_rich and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=stream, width=max(120, Console(file=stream).width))
        for index, (title, rows) in enumerate(sections):
            headers = _TARGET_HEADERS if index == len(sections) - 1 else _headers(report)
            table = Table(title=title, title_justify="left")
            for number, header in enumerate(headers):
                table.add_column(header, justify="left" if number == 0 or header == "target" else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        return
    for index, (title, rows) in enumerate(sections):
        headers = _TARGET_HEADERS if index == len(sections) - 1 else _headers(report)
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
        print(title, file=stream)
        for row in (headers, *rows):
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip(), file=stream)
        print(file=stream)


def markdown(report: dict[str, Any]) -> str:
    """The tables as Markdown (for ``benchmarks/RESULTS.md``)."""
    lines = []
    sections = [*_sections(report), ("Targets (BASELINES.md)", _target_rows(report))]
    for index, (title, rows) in enumerate(sections):
        headers = _TARGET_HEADERS if index == len(sections) - 1 else _headers(report)
        lines += [f"**{title}**", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---" if n == 0 else "---:" for n in range(len(headers))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str) -> None:
    """Median time against the number of elements, per implementation, log-log; one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["config"]["modes"]
    figure, axes = plt.subplots(1, len(modes), figsize=(7.5 * len(modes), 6), squeeze=False)
    for axis, mode in zip(axes[0], modes, strict=True):
        axis.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        series: dict[str, list[tuple[int, float]]] = {}
        style: dict[str, str] = {}
        for e in report["results"]:
            if e["mode"] == mode and e["median_ms"]:
                series.setdefault(e["label"], []).append((math.prod(e["size"]), e["median_ms"]))
                style[e["label"]] = {"floor": "--", "kldiv": "-"}.get(e["group"], ":")
        for label, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            width = 2.2 if style[label] == "-" else 1.2
            axis.plot(xs, ys, style[label], marker="o", markersize=3, linewidth=width, label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("elements per input (rows × vocab)")
        axis.set_ylabel("median time (ms)")
        axis.set_title(f"KL(t‖p), fp32, {MODE_TITLES[mode]}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{report['machine']['cpu']}, {report['machine']['usable_cpus']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> Any:
    from .parser import Parser

    parser = Parser(
        prog="kldiv bench",
        description=(
            "Time kldiv (fused Numba kernel and core) against NumPy, SciPy, PyTorch, JAX, optax,\n"
            "tf_keras and Keras 3, and against the machine's floors (reading both inputs, writing a\n"
            "gradient, one log per element): KL(t||p) of fp32 softmax rows, mean over rows, forward\n"
            "and forward+backward. Medians of runs interleaved round-robin after a warm-up; ratios to\n"
            "kldiv fused and to the floor; peers that are not installed are skipped."
        ),
        epilog=(
            "examples:\n"
            "  kldiv bench\n"
            "  kldiv bench --sizes 32x1000,1024x32000 --repeats 3 --peers jax,torch\n"
            "  kldiv bench --json results.json --plot results.png --memory"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_sizes = ",".join(f"{r}x{n}" for r, n in DEFAULT_SIZES)
    parser.add_argument(
        "--sizes",
        type=_argument(parse_sizes),
        default=list(DEFAULT_SIZES),
        metavar="RxN,...",
        help=f"input sizes [rows, vocab] (default: {default_sizes})",
    )
    parser.add_argument(
        "--repeats", type=_argument(_positive), default=5, metavar="N", help="timed runs (default: 5)"
    )
    parser.add_argument(
        "--warmup", type=_argument(_positive), default=1, metavar="N", help="warm-up runs (default: 1)"
    )
    parser.add_argument(
        "--modes",
        type=_argument(_choices(MODES)),
        default=list(MODES),
        metavar="MODE,...",
        help="forward, backward (forward+backward) (default: both)",
    )
    parser.add_argument(
        "--peers",
        type=_argument(_choices(PEERS, allow_none=True)),
        default=list(PEERS),
        metavar="NAME,...",
        help=f"peers to compare with: {', '.join(PEERS)}, or 'none' (default: all installed)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak memory, one fresh process per case (slow)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot of time against size (matplotlib)")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--plain", action="store_true", help="plain text, no rich progress bar or tables")
    return parser


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return wrapped


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1; received {text!r}")
    return value


def _choices(allowed: Sequence[str], allow_none: bool = False) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if allow_none and names == ["none"]:
            return []
        if allow_none and names == ["all"]:
            return list(allowed)
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise ValueError(f"expected names from {', '.join(allowed)}; received {text!r}")
        return names

    return parse


def bench_command(argv: Sequence[str]) -> int:
    """``kldiv bench [options]``: run, print the tables, write the JSON / plot / Markdown asked for."""
    args = build_parser().parse_args(list(argv))
    config = Config(
        sizes=args.sizes,
        modes=args.modes,
        peers=args.peers,
        repeats=args.repeats,
        warmup=args.warmup,
        memory=args.memory,
        seed=args.seed,
    )
    report = run_benchmark(config, stream=sys.stderr, use_rich=not args.plain)
    report["command"] = " ".join(["kldiv", "bench", *argv])
    print_report(report, sys.stdout, use_rich=not args.plain)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)
            out.write("\n")
    if args.plot:
        write_plot(report, args.plot)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(markdown(report))
    return 0


def _memory_child_main(argv: Sequence[str]) -> int:
    key, mode, size, seed = argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(memory_child(key, mode, parse_size(size), int(seed))))
    return 0


if __name__ == "__main__":  # the per-case process of --memory
    if sys.argv[1:2] == ["--memory-child"]:
        sys.exit(_memory_child_main(sys.argv[2:]))
    from .main import main

    sys.exit(main(["bench", *sys.argv[1:]]))
