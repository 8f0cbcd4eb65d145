"""``kldiv bench`` and the benchmark harness: structure of the report, never a time.

One subprocess runs the whole command at a tiny size with every installed peer (about 30 s: it
imports TensorFlow, JAX, PyTorch and Keras); the rest is in-process or one light subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kldiv.cli import bench
from kldiv.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
ENTRY_FIELDS = {"size", "mode", "key", "label", "group", "times_ms", "median_ms", "vs_fused", "vs_floor"}


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("kldiv")
    found = str(script) if script.exists() else shutil.which("kldiv")
    return [found] if found else [sys.executable, "-m", "kldiv"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        *_console_script(),
        "bench",
        "--sizes",
        "8x16",
        "--repeats",
        "1",
        "--json",
        str(out / "report.json"),
        "--plot",
        str(out / "report.png"),
        "--markdown",
        str(out / "report.md"),
        "--plain",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return done, out


def test_command_succeeds_and_prints_tables(tiny_run):
    done, _ = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[8, 16] forward" in done.stdout
    assert "[8, 16] forward+backward" in done.stdout
    assert "targets (BASELINES.md)" in done.stdout


def test_json_report_structure(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("kldiv bench --sizes 8x16")
    assert report["config"]["sizes"] == [[8, 16]]
    assert report["config"]["repeats"] == 1
    assert report["config"]["modes"] == ["forward", "backward"]
    assert {"cpu", "cpus", "usable_cpus", "python"} <= set(report["machine"])
    assert report["versions"]["kldiv"]
    assert set(report["skipped"]) == {"implementations", "sizes"}
    assert report["skipped"]["sizes"] == {}

    entries = report["results"]
    assert entries
    for entry in entries:
        assert set(entry) >= ENTRY_FIELDS, entry
        assert entry["size"] == [8, 16]
        assert entry["mode"] in ("forward", "backward")
        if entry["median_ms"] is None:
            assert entry.get("error"), entry
        else:
            assert len(entry["times_ms"]) == 1
            assert entry["median_ms"] > 0
    keys = {(e["mode"], e["key"]) for e in entries if e["median_ms"]}
    # kldiv and the floors are always measured (numba and torch are test dependencies here).
    for expected in [
        ("forward", "floor_read"),
        ("forward", "floor_log"),
        ("forward", "kldiv_fused"),
        ("forward", "kldiv_core"),
        ("backward", "floor_rw"),
        ("backward", "kldiv_fused"),
        ("backward", "kldiv_core"),
    ]:
        assert expected in keys
    # every installed peer appears, each skipped one is named
    skipped = report["skipped"]["implementations"]
    for group in bench.PEERS:
        measured = any(e["group"] == group for e in entries)
        named = any(s["group"] == group and s["reason"].startswith("not installed") for s in skipped)
        assert measured != named, group
    fused = next(e for e in entries if (e["mode"], e["key"]) == ("forward", "kldiv_fused"))
    assert fused["vs_fused"] == pytest.approx(1.0)
    for check in report["targets"]:
        assert {"size", "target", "value", "limit", "at_most", "met"} <= set(check)


def test_plot_and_markdown_written(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    text = (out / "report.md").read_text()
    assert "| implementation | ms |" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sizes", "8by16"], "ROWSxVOCAB"),
        (["--repeats", "0"], "--repeats"),
        (["--peers", "matlab"], "--peers"),
        (["--modes", "sideways"], "--modes"),
    ],
)
def test_usage_errors_are_one_line(args, message, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kldiv: error:") and "\n" not in err
    assert message in err


def test_parsers():
    assert bench.parse_sizes("32x1000, 1024X32000") == [(32, 1000), (1024, 32000)]
    with pytest.raises(ValueError):
        bench.parse_size("0x10")


def test_memory_child_reports_peaks():
    """One fresh process (NumPy and kldiv only): its peaks are reported, in KiB."""
    report = bench._run_memory_child("kldiv_core", "forward", (64, 4096), seed=0)
    assert "error" not in report, report
    assert report["peak_kib"] > 0
    if sys.platform.startswith("linux"):
        assert report["op_kib"] is not None and report["op_kib"] >= 0


def test_benchmark_script_uses_the_harness():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_kl.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kldiv bench" in done.stdout
