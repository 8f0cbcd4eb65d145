"""Helpers of the distributed tests: they run their ranks / devices in worker scripts (fresh interpreters),
each printing one JSON report (last line of stdout) that the tests assert on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kldiv

HERE = Path(__file__).resolve().parent
WORKER_TIMEOUT_S = 300
TOLERANCE = 1e-6  # relative, float64: max |parallel − single| / max |single|


def run_worker(script: str, *args: str, **env: str) -> dict[str, Any]:
    """Run ``tests/distributed/<script> args`` with this checkout's kldiv; its JSON report."""
    source_root = str(Path(kldiv.__file__).resolve().parents[1])
    completed = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        env={
            **os.environ,
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


def worst(cases: list[dict[str, Any]]) -> tuple[float, str]:
    """The largest relative difference (value or gradient) among ``cases`` and the case it is in."""
    return max((max(c["value_rel"], c["grad_rel"]), c["name"]) for c in cases)
