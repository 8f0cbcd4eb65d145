"""``kldiv bench`` (:mod:`kldiv.cli.bench_kl` over :mod:`kldiv.bench.kl`): structure of the report
and of what it prints, never a time.

One subprocess runs the whole command at a tiny size with every installed peer (about 30 s: it
imports TensorFlow, JAX, PyTorch and Keras); the rest is in-process or one light subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kldiv.bench.kl import cases, memory
from kldiv.cli.arguments import sizes
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


def test_prints_the_machine_and_no_targets(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    machine = json.loads((out / "report.json").read_text())["machine"]
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"cpu: {machine['cpu']}, {machine['usable_cpus']} usable cores; ISA: ")
    assert first.endswith(f"; Numba target: {machine['numba_target']}")
    assert machine["numba_target"]  # numba is a test dependency
    if machine["isa"] is not None:
        assert " ".join(machine["isa"]) in first
    tables = done.stdout.split("\n", 1)[1]
    assert not re.search(r"\btargets?\b|BASELINES|\bgoal\b|\bmet\b|\byes\b|\bNO\b", tables), tables


def test_every_measured_case_prints_its_numbers(tiny_run):
    """Each measured implementation's row holds its median, spread and both ratios."""
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    lines = done.stdout.splitlines()
    for mode, title in (("forward", "[8, 16] forward ("), ("backward", "[8, 16] forward+backward (")):
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        block = lines[start + 2 : lines.index("", start)]
        entries = [e for e in report["results"] if e["mode"] == mode]
        assert len(block) == len(entries)
        for line, entry in zip(block, entries, strict=True):
            assert line.startswith(entry["label"]), (line, entry)
            if entry["median_ms"] is None:
                continue
            numbers = line[len(entry["label"]) :].split()
            assert re.fullmatch(r"[\d.e+]+", numbers[0]) and float(numbers[0]) > 0, line
            assert re.fullmatch(r"[\d.e+-]+–[\d.e+-]+", numbers[1]), line
            assert [float(x) for x in numbers[2:4]] == [
                pytest.approx(entry["vs_fused"], abs=0.006),
                pytest.approx(entry["vs_floor"], abs=0.006),
            ], line


def test_json_report_structure(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("kldiv bench --sizes 8x16")
    assert report["config"]["sizes"] == [[8, 16]]
    assert report["config"]["repeats"] == 1
    assert report["config"]["modes"] == ["forward", "backward"]
    assert {"cpu", "isa", "numba_target", "cpus", "usable_cpus", "python"} <= set(report["machine"])
    assert "targets" not in report
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
        ("forward", "kldiv_fused"),
        ("forward", "kldiv_core"),
        ("backward", "floor_rw"),
        ("backward", "kldiv_fused"),
        ("backward", "kldiv_core"),
    ]:
        assert expected in keys
    # every installed peer appears, each skipped one is named
    skipped = report["skipped"]["implementations"]
    for group in cases.PEERS:
        measured = any(e["group"] == group for e in entries)
        named = any(s["group"] == group and s["reason"].startswith("not installed") for s in skipped)
        assert measured != named, group
    fused = next(e for e in entries if (e["mode"], e["key"]) == ("forward", "kldiv_fused"))
    assert fused["vs_fused"] == pytest.approx(1.0)


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
    parse = sizes("ROWSxVOCAB", "1024x32000")
    assert parse("32x1000, 1024X32000") == [(32, 1000), (1024, 32000)]
    for bad in ("0x10", "10", "10x10x10", ","):
        with pytest.raises(ValueError):
            parse(bad)


def test_memory_child_reports_peaks():
    """One fresh process (NumPy and kldiv only): its peaks are reported, in KiB."""
    report = memory.run_memory_child("kldiv_core", "forward", (64, 4096), seed=0)
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
