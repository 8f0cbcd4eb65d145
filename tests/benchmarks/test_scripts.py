"""The stand-alone scripts under ``benchmarks/`` run end to end at tiny sizes (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_logits_kernel_script_prints_every_case():
    pytest.importorskip("jax")
    pytest.importorskip("numba")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "logits_kernel.py"),
            "--rows",
            "3",
            "--vocab",
            "17",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Each row holds three numbers (kldiv ms, JAX ms, their ratio); at this size they are rounding noise.
    rows = re.findall(
        r"^(\w+ \w+ value(?:\+grad)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", done.stdout, re.MULTILINE
    )
    assert [row[0] for row in rows] == [
        f"{fmt} {direction} {mode}"
        for fmt, direction in (("logits", "forward"), ("log_probs", "forward"), ("logits", "reverse"))
        for mode in ("value", "value+grad")
    ]


def test_ab_checkouts_script_prints_a_ratio_per_call():
    pytest.importorskip("numba")
    src = str(ROOT / "src")
    script = str(ROOT / "benchmarks" / "ab_checkouts.py")
    sizes = ["--rounds", "2", "--rows", "3", "--vocab", "5", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, script, "--before", src, "--after", src, *sizes],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^\| ([\w +,-]+) \| [\d. /]+ \| [\d. /]+ \| ([\d.]+) \(", done.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == [
        "numpy probs, Keras mode",
        "numpy probs, exact mode",
        "numpy logits",
        "torch probs forward",
        "torch probs forward+backward",
    ]
    assert all(float(ratio) > 0 for _, ratio in rows)
