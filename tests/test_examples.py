"""Every script in ``examples/`` runs to completion (each asserts its own result) in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kldiv

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 240
RUNS = [
    ("keras_fit.py", "--backend", "tensorflow"),
    ("keras_fit.py", "--backend", "jax"),
    ("keras_fit.py", "--backend", "torch"),
    ("torch_distillation.py",),
    ("jax_optax_train_step.py",),
    ("distill_lm.py", "--tiny"),
    ("lightning_distill.py",),
]

RESULT_LINE = {"distill_lm.py": "kldiv / naive: time", "lightning_distill.py": "held-out cross-entropy:"}
"""What each example prints once its own checks passed (the others print ``accuracy=``)."""


def test_every_example_is_run() -> None:
    assert {run[0] for run in RUNS} == {path.name for path in EXAMPLES.glob("*.py")}


@pytest.mark.parametrize("run", RUNS, ids=lambda run: "-".join(part.lstrip("-") for part in run))
def test_example_runs(run: tuple[str, ...]) -> None:
    source_root = str(Path(kldiv.__file__).resolve().parents[1])
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / run[0]), *run[1:]],
        env={
            "OMP_NUM_THREADS": "1",  # tiny problems: no OpenMP thread pool spinning on a shared CI box
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p),
        },
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert RESULT_LINE.get(run[0], "accuracy=") in completed.stdout
