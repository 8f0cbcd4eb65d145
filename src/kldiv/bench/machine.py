"""The machine a benchmark ran on, and its memory (Linux ``/proc`` where available).

Speed measured on one instruction set is a claim about that instruction set only, so every report
names the CPU model, its vector extensions (:data:`ISA_FLAGS` found in ``/proc/cpuinfo``) and the CPU
Numba generates code for (``numba.config.CPU_NAME``, else LLVM's host CPU name).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

# The vector extensions that decide how fast the kernels' loops run, in the order they are printed.
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "amx_bf16",
    "asimd",
    "sve",
)
VERSIONS = ("numpy", "numba", "scipy", "torch", "jax", "jaxlib", "optax", "tensorflow", "tf_keras", "keras")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """``model name`` of ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def isa_flags() -> list[str] | None:
    """The :data:`ISA_FLAGS` this CPU has (``flags`` on x86, ``Features`` on Arm); None if unknown."""
    info = _cpuinfo()
    text = info.get("flags", info.get("Features"))
    if text is None:
        return None
    present = set(text.split())
    return [flag for flag in ISA_FLAGS if flag in present]


def numba_target() -> str | None:
    """The CPU Numba compiles for: ``numba.config.CPU_NAME`` or LLVM's host CPU; None without Numba."""
    if importlib.util.find_spec("numba") is None:
        return None
    import llvmlite.binding
    import numba

    return numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name()


CPU_TARGETS = {
    "host": (),
    "x86-64-v3": ("avx2", "fma"),
    "x86-64-v4": ("avx512f", "avx512bw", "avx512vl"),
}
"""``kldiv bench --cpu-target``: the CPUs Numba can be told to generate code for, with the
``/proc/cpuinfo`` flags each needs. ``host`` is this CPU (Numba's default); ``x86-64-v3`` is AVX2 +
FMA code (what an AVX2 machine runs), ``x86-64-v4`` AVX-512 instructions on LLVM's preferred
256-bit vectors."""


def select_cpu_target(name: str) -> None:
    """Make Numba generate code for ``name`` (:data:`CPU_TARGETS`), before Numba is imported.

    ``NUMBA_CPU_NAME`` with an empty ``NUMBA_CPU_FEATURES``: the named CPU's own features (a name
    alone keeps the host's features, AVX-512 included). Numba's disk cache keys each kernel on the
    target, so each target compiles once. Raises ``ValueError`` for an unknown name, a CPU without
    the flags the target needs, or a process that imported Numba already.
    """
    if name not in CPU_TARGETS:
        raise ValueError(
            f"Option `--cpu-target`: expected one of {', '.join(CPU_TARGETS)}; received {name!r}."
        )
    if name == "host":
        return
    flags = isa_flags()
    missing = [flag for flag in CPU_TARGETS[name] if flags is None or flag not in flags]
    if missing:
        raise ValueError(
            f"Option `--cpu-target`: expected a target this CPU can run; received {name!r}, which needs "
            f"{', '.join(missing)} (this CPU has: {' '.join(flags or ['unknown'])})."
        )
    if "numba" in sys.modules:
        raise ValueError("Option `--cpu-target`: Numba is imported already; choose the target before it is.")
    os.environ["NUMBA_CPU_NAME"] = name
    os.environ["NUMBA_CPU_FEATURES"] = ""


def machine_info() -> dict[str, Any]:
    """CPU, ISA, Numba target, core counts, memory, platform, Python and the loaded frameworks' threads."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "numba_target": numba_target(),
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": None if memory is None else round(memory / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    numba = sys.modules.get("numba")
    if numba is not None:
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        with contextlib.suppress(Exception):  # raises until a parallel kernel has run
            info["numba_threading_layer"] = numba.threading_layer()
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line: ``cpu: <model>, <n> usable cores; ISA: avx2 fma ...; Numba target: <cpu>``."""
    isa = "unknown" if info.get("isa") is None else " ".join(info["isa"]) or "none of " + "/".join(ISA_FLAGS)
    target = info.get("numba_target") or "numba not installed"
    return f"cpu: {info['cpu']}, {info['usable_cpus']} usable cores; ISA: {isa}; Numba target: {target}"


def versions() -> dict[str, str | None]:
    """kldiv's version and each installed distribution of :data:`VERSIONS` (None: not installed)."""
    import kldiv

    found: dict[str, str | None] = {"kldiv": kldiv.__version__}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The modules of ``names`` that are not installed (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or None where unknown."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmHWM``: peak resident, ``VmRSS``: resident now)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def peak_kib() -> int:
    """Peak resident memory of this process. ``VmHWM`` where Linux has it: ``ru_maxrss`` of a process
    started by ``exec`` also counts the peak of the process it replaced (the benchmark parent, several
    GB), so it is the fallback only."""
    peak = status_kib("VmHWM")
    if peak is not None:
        return peak
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib // 1024 if sys.platform == "darwin" else kib


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False
