"""Integration tests: each framework through its own adapter (``kldiv.keras``, ``kldiv.tf_keras``,
``kldiv.torch``, ``kldiv.jax``).

Keras 3 fixes its backend per process and ``MirroredStrategy`` needs logical devices configured before
TensorFlow starts, so those checks run in worker scripts (``keras3_worker.py`` once per backend,
``tf_worker.py`` once), each printing one JSON report that the tests assert on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kldiv

HERE = Path(__file__).resolve().parent
WORKER_TIMEOUT_S = 300


def run_worker(script: str, **env: str) -> dict[str, Any]:
    """Run ``tests/integrations/<script>`` in a fresh interpreter; its JSON report."""
    source_root = str(Path(kldiv.__file__).resolve().parents[1])  # the subprocess imports this kldiv
    completed = subprocess.run(
        [sys.executable, str(HERE / script)],
        env={
            "OMP_NUM_THREADS": "1",  # tiny problems: no OpenMP thread pool spinning on a shared CI box
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, f"{script} failed:\n{completed.stderr[-6000:]}"
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def worker() -> Callable[..., dict[str, Any]]:
    return run_worker


@pytest.fixture(scope="session")
def reference() -> Any:
    """The float64 reference programs of ``tests/distillation/reference.py`` (imported, never re-typed)."""
    path = HERE.parent / "distillation" / "reference.py"
    spec = importlib.util.spec_from_file_location("kldiv_tests_distillation_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
