"""``kldiv bench --cpu-target``: Numba generates the kernels for the chosen CPU, the report names it,
and a target the CPU cannot run, an unknown one, or a choice made after Numba was imported is refused
before anything is measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kldiv.bench import machine


def test_unknown_target_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"`--cpu-target`: expected one of host, x86-64-v3, x86-64-v4; received 'i386'"
    ):
        machine.select_cpu_target("i386")


def test_a_target_the_cpu_cannot_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "isa_flags", lambda: ["avx", "avx2", "fma"])
    with pytest.raises(ValueError, match=r"'x86-64-v4', which needs avx512f, avx512bw, avx512vl"):
        machine.select_cpu_target("x86-64-v4")


def test_a_choice_after_numba_is_imported_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba")
    monkeypatch.setattr(machine, "isa_flags", lambda: ["avx", "avx2", "fma"])
    monkeypatch.setitem(os.environ, "NUMBA_CPU_NAME", os.environ.get("NUMBA_CPU_NAME", ""))
    with pytest.raises(ValueError, match="Numba is imported already"):
        machine.select_cpu_target("x86-64-v3")


def test_host_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    machine.select_cpu_target("host")
    assert "NUMBA_CPU_NAME" not in os.environ


@pytest.mark.skipif("avx2" not in (machine.isa_flags() or []), reason="needs an AVX2 CPU")
def test_the_kernels_run_for_the_chosen_target_and_the_report_says_so() -> None:
    pytest.importorskip("numba")
    args = ["bench", "--sizes", "8x100", "--modes", "forward", "--peers", "none", "--repeats", "1", "--plain"]
    args += ["--cpu-target", "x86-64-v3"]
    code = f"import sys; from kldiv.cli.main import main; sys.exit(main({args!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Numba target: x86-64-v3" in done.stdout
    assert "kldiv fused (numba), exact mode, NumPy" in done.stdout
