"""``kldiv bench fused-linear`` (:mod:`kldiv.cli.bench_fused` over :mod:`kldiv.bench.fused_linear`,
and ``benchmarks/fused_linear_memory.py``): structure of the report, the skip logic, the CUDA mode's
absence handling and the accuracy figures; never a time.

One subprocess runs the command end to end at a tiny size (two case processes, a few seconds each);
the rest is in-process.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kldiv.bench.fused_linear import accuracy, case, cases, estimates  # noqa: E402
from kldiv.bench.fused_linear import report as fused_report  # noqa: E402
from kldiv.bench.fused_linear import run as fused_run  # noqa: E402
from kldiv.cli import bench_fused, tables  # noqa: E402
from kldiv.cli.main import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Issue #7's accuracy goals on the loss and the norm-wise gradient errors (benchmarks/RESULTS.md).
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}
RESULT_FIELDS = {
    "impl",
    "bt",
    "hidden",
    "vocab",
    "dtype",
    "teacher",
    "device",
    "warmup",
    "repeats",
    "loss",
    "peak_extra_mib",
    "grads_mib",
    "temporaries_mib",
    "median_ms",
    "times_ms",
    "predicted_step_s",
}


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("kldiv")
    found = str(script) if script.exists() else shutil.which("kldiv")
    return [found] if found else [sys.executable, "-m", "kldiv"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("fused")
    command = [
        *_console_script(),
        "bench",
        "fused-linear",
        "--sizes",
        "16x8x64",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--json",
        str(out / "report.json"),
        "--markdown",
        str(out / "report.md"),
        "--plain",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return done, out


def test_command_runs_end_to_end(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "measurements (cpu)" in done.stdout
    assert "kldiv-kl / naive-kl" in done.stdout
    assert "matmul probe float32" in done.stderr
    assert done.stdout.startswith("cpu: ") and "; ISA: " in done.stdout and "; Numba target: " in done.stdout
    after_machine = done.stdout.split("\n", 1)[1]
    assert not re.search(r"\btargets?\b|\bgoal\b|\bmet\b|\byes\b|\bNO\b", after_machine), after_machine
    markdown = (out / "report.md").read_text()
    assert "| 16x8x64 | float32 | kldiv-kl / naive-kl |" in markdown


def test_json_report_fields(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"config", "machine", "matmul_probe", "constants", "results", "comparisons"} <= set(report)
    assert "targets" not in report
    assert report["command"].startswith("kldiv bench fused-linear")
    assert report["config"]["sizes"] == [[16, 8, 64]]
    assert report["constants"]["naive_logit_copies"] == estimates.NAIVE_LOGIT_COPIES
    assert [r["impl"] for r in report["results"]] == ["naive-kl", "kldiv-kl"]
    for record in report["results"]:
        assert set(record) >= RESULT_FIELDS, record
        assert len(record["times_ms"]) == 2
        assert record["grads_mib"] == pytest.approx((16 * 8 + 64 * 8) * 4 / 2**20)
    naive, fused = report["results"]
    assert fused["loss"] == pytest.approx(naive["loss"], rel=1e-5)
    (comparison,) = report["comparisons"]
    assert comparison["ratio"] == "kldiv-kl / naive-kl"
    assert {"memory_ratio", "temporaries_ratio", "time_ratio", "loss_difference"} <= set(comparison)
    assert comparison["time_ratio"] > 0


def test_script_is_a_thin_wrapper():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fused_linear_memory.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kldiv bench fused-linear" in done.stdout
    assert "--grid" in done.stdout and "--accuracy" in done.stdout


# ---------------------------------------------------------------------------------------------
# Sizes, estimates and skips


def test_grid_is_the_issue_grid():
    grid = fused_run.grid_sizes()
    assert len(grid) == 6
    assert {bt for bt, _, _ in grid} == {1024, 4096, 8192}
    assert {v for _, _, v in grid} == {32000, 128256}
    assert {h for _, h, _ in grid} == {1024}
    args = bench_fused.build_parser().parse_args(["--grid"])
    config = bench_fused.make_config(args)
    assert config["sizes"] == grid and config["dtypes"] == ["float32", "bfloat16"]
    assert config["impls"] == ["naive-kl", "kldiv-kl"] and config["teacher"] == "logits"


def test_memory_estimate_skips_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(estimates, "available_memory", lambda: 4 * 2**30)
    need = estimates.estimate_bytes("naive-kl", 8192, 1024, 128256, "float32", "logits")
    # logits-sized temporaries dominate: at least NAIVE_LOGIT_COPIES x BT x V x 4 bytes
    assert need > estimates.NAIVE_LOGIT_COPIES["naive-kl"] * 8192 * 128256 * 4
    reason = estimates.memory_skip_reason("naive-kl", 8192, 1024, 128256, "float32", "logits")
    assert reason == f"would need ~{need / 2**30:.1f} GiB, machine has 4.0 GiB available"
    assert estimates.memory_skip_reason("kldiv-kl", 1024, 1024, 32000, "float32", "logits") is None
    monkeypatch.setattr(estimates, "available_memory", lambda: None)  # unknown: never skip
    assert estimates.memory_skip_reason("naive-kl", 8192, 1024, 128256, "float32", "logits") is None


def test_skipped_cases_are_recorded_not_run(monkeypatch, capsys):
    monkeypatch.setattr(estimates, "available_memory", lambda: 2**20)  # 1 MiB: nothing fits
    monkeypatch.setattr(fused_run, "run_child", lambda *a: pytest.fail("a case was started"))
    config = bench_fused.make_config(
        bench_fused.build_parser().parse_args(["--sizes", "16x8x64", "--dtypes", "float32,bfloat16"])
    )
    report = fused_run.run_benchmark(config, stream=sys.stderr)
    assert len(report["results"]) == 4
    for record in report["results"]:
        assert record["skipped"].startswith("would need ~")
        assert record["skipped"].endswith("machine has 0.0 GiB available")
    assert all("missing" in row for row in report["comparisons"])
    assert "skipped: would need" in capsys.readouterr().err
    tables.print_tables(fused_report.tables(report), sys.stdout, use_rich=False)
    assert "machine has 0.0 GiB available" in capsys.readouterr().out
    assert "would need" in tables.markdown(fused_report.tables(report))


def test_time_estimate_skips_what_would_time_out():
    assert estimates.time_skip_reason(None, 3, 10.0, "float32") is None
    assert estimates.time_skip_reason(2.0, 3, 10.0, "float32") is None
    reason = estimates.time_skip_reason(50.0, 4, 100.0, "bfloat16")
    assert reason == (
        "would take ~200 s (4 steps of ~50 s of bfloat16 matmuls at the probed rate), over the 100 s timeout"
    )
    flops = estimates.step_flops(4096, 1024, 32000, "logits")
    assert flops == 3 * 2 * 4096 * 1024 * 32000


def test_case_timeout_is_recorded():
    spec = {
        "impl": "naive-kl",
        "bt": 16,
        "hidden": 8,
        "vocab": 64,
        "dtype": "float32",
        "teacher": "logits",
        "device": "cpu",
        "warmup": 1,
        "repeats": 1,
        "seed": 0,
    }
    record = fused_run.run_child(spec, 0.05)
    assert record["error"] == "timed out after 0.05 s"
    assert record["impl"] == "naive-kl"


def test_argument_errors():
    assert main(["bench", "fused-linear", "--grid", "--sizes", "16x8x64"]) == 2
    assert main(["bench", "fused-linear", "--sizes", "16x8"]) == 2
    assert main(["bench", "fused-linear", "--impls", "naive-kl,nope"]) == 2
    assert main(["bench", "fused-linear", "--warmup", "-1"]) == 2
    assert main(["bench", "fused-linear", "--impls", "liger-jsd", "--teacher", "logits"]) == 2
    assert main(["bench", "fused-linear", "--impls", "kldiv-topk"]) == 2  # no --top-k
    assert main(["bench", "fused-linear", "--sizes", "16x8x64", "--top-k", "65"]) == 2  # k > V
    assert main(["bench", "fused-linear", "--top-k", "0"]) == 2


@pytest.mark.parametrize("teacher", ["logits", "hidden"])
def test_topk_programs_agree(teacher):
    """naive-topk and kldiv-topk: the same loss and gradients; at k = V both equal the dense KL."""
    results = {}
    for impl, k in (
        ("naive-topk", 8),
        ("kldiv-topk", 8),
        ("naive-topk", 64),
        ("kldiv-topk", 64),
        ("naive-kl", None),
    ):
        inputs = cases.make_inputs(16, 8, 64, torch.float32, "cpu", teacher, seed=3, k=k)
        assert ("teacher_topk_indices" in inputs) == (k is not None)
        loss = cases.make_loss(impl)(inputs)
        loss.backward()
        results[impl, k] = (float(loss.detach()), inputs["weight"].grad.clone())
    for k in (8, 64):
        naive, fused = results["naive-topk", k], results["kldiv-topk", k]
        assert fused[0] == pytest.approx(naive[0], rel=1e-5)
        torch.testing.assert_close(fused[1], naive[1], rtol=1e-4, atol=1e-6)
    assert results["kldiv-topk", 64][0] == pytest.approx(results["naive-kl", None][0], rel=1e-5)
    assert results["kldiv-topk", 8][0] < results["naive-kl", None][0]  # the coarsened KL is a lower bound


def test_topk_run_pairs_each_k(monkeypatch):
    """A --top-k run measures the top-k impls once per k and compares each with the dense paths."""
    monkeypatch.setattr(
        fused_run,
        "run_child",
        lambda spec, timeout: {
            **spec,
            "loss": 1.0,
            "peak_extra_mib": 2.0,
            "temporaries_mib": 1.0,
            "median_ms": 3.0,
        },
    )
    args = bench_fused.build_parser().parse_args(["--sizes", "16x8x64", "--top-k", "4,8"])
    config = bench_fused.make_config(args)
    assert config["impls"] == list(fused_run.TOPK_DEFAULT_IMPLS) and config["top_k"] == [4, 8]
    report = fused_run.run_benchmark(config, stream=sys.stderr)
    labels = [cases.label_of(r) for r in report["results"]]
    assert labels == [
        "naive-kl",
        "kldiv-kl",
        "naive-topk k=4",
        "naive-topk k=8",
        "kldiv-topk k=4",
        "kldiv-topk k=8",
    ]
    ratios = [c["ratio"] for c in report["comparisons"]]
    assert "kldiv-topk k=8 / naive-topk k=8" in ratios and "kldiv-topk k=4 / kldiv-kl" in ratios
    assert "kldiv-topk k=4 / naive-kl" in ratios and "kldiv-topk k=4 / naive-topk k=8" not in ratios


# ---------------------------------------------------------------------------------------------
# The CUDA mode without CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_an_error(tmp_path, capsys):
    path = tmp_path / "gpu.json"
    assert main(["bench", "fused-linear", "--device", "cuda", "--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kldiv: error: --device cuda: CUDA is not available") and err.count("\n") == 1
    assert not path.exists()
    config = bench_fused.make_config(bench_fused.build_parser().parse_args(["--device", "cuda"]))
    assert config["impls"] == [
        i for i in cases.IMPLS if i not in cases.TOPK_IMPLS
    ]  # naive, kldiv KL/JSD, liger
    assert config["teacher"] == "hidden"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        case.run_case({"impl": "naive-jsd", "device": "cuda"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_gpu_script_without_cuda(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_fused_linear.py"),
            "--json",
            str(tmp_path / "g.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kldiv: error: --device cuda: CUDA is not available")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "g.json").exists()


def test_liger_absent_is_reported():
    liger, why = cases.liger_jsd()
    if liger is not None:
        pytest.skip("liger_kernel is installed")
    assert why.startswith("liger_kernel is not importable")
    with pytest.raises(RuntimeError, match="liger_kernel is not importable"):
        cases.make_loss("liger-jsd")


def test_every_cpu_implementation_with_a_hidden_teacher():
    """The GPU mode's programs (teacher as hidden + weight), run on the CPU: equal values."""
    values = {}
    for impl in ("naive-kl", "kldiv-kl", "naive-jsd", "kldiv-jsd"):
        inputs = cases.make_inputs(16, 8, 64, torch.float32, "cpu", "hidden", seed=3)
        loss = cases.make_loss(impl)(inputs)
        loss.backward()
        assert inputs["hidden"].grad is not None and inputs["weight"].grad is not None
        values[impl] = float(loss.detach())
    assert values["kldiv-kl"] == pytest.approx(values["naive-kl"], rel=1e-5)
    assert values["kldiv-jsd"] == pytest.approx(values["naive-jsd"], rel=1e-5)
    assert 0 < values["naive-jsd"] < 0.6931472  # JS_0.5 <= log 2


# ---------------------------------------------------------------------------------------------
# Accuracy


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl", ["kldiv-kl", "kldiv-jsd", "naive-kl", "naive-jsd"])
def test_accuracy_below_tolerance(impl, dtype):
    record = accuracy.accuracy_case(impl, 32, 16, 256, dtype, "logits", seed=0)
    assert "target" not in record and "met" not in record
    for key in ("loss_rel_error", "grad_hidden_norm_rel_error", "grad_weight_norm_rel_error"):
        assert record[key] <= TOLERANCE[dtype], (key, record)
    assert record["worst_rel_error"] == max(
        record[key] for key in ("loss_rel_error", "grad_hidden_norm_rel_error", "grad_weight_norm_rel_error")
    )
    # elementwise maxima over |g64| > 1e-3 max: reported, looser (cancellation near the threshold;
    # bfloat16 gradients are rounded to 8 bits, so small entries can be off by their own size)
    for key in ("grad_hidden_max_rel_error", "grad_weight_max_rel_error"):
        assert math.isfinite(record[key])
        if dtype == "float32":
            assert record[key] <= 100 * TOLERANCE[dtype], (key, record)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl", ["kldiv-topk", "naive-topk"])
@pytest.mark.parametrize("k", [8, 256])
def test_topk_accuracy_below_tolerance(impl, dtype, k):
    """The sparse teacher (k < V with a tail bucket, and k = V) against the float64 naive top-k program
    on the same stored teacher; the reference itself is checked against the dense float64 KL at k = V."""
    record = accuracy.accuracy_case(impl, 32, 16, 256, dtype, "logits", seed=0, k=k)
    assert record["k"] == k
    for key in ("loss_rel_error", "grad_hidden_norm_rel_error", "grad_weight_norm_rel_error"):
        assert record[key] <= TOLERANCE[dtype], (key, record)
    if k == 256 and dtype == "float32":
        dense = accuracy.accuracy_case("naive-kl", 32, 16, 256, dtype, "logits", seed=0)
        assert record["loss_float64"] == pytest.approx(dense["loss_float64"], rel=1e-6)


def test_accuracy_command(tmp_path, capsys):
    path = tmp_path / "accuracy.json"
    argv = ["bench", "fused-linear", "--accuracy", "--sizes", "16x8x64", "--plain", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "relative error vs the float64 naive program" in out
    report = json.loads(path.read_text())
    assert [(r["impl"], r["dtype"]) for r in report["accuracy"]] == [
        (impl, dtype) for dtype in ("float32", "bfloat16") for impl in fused_run.ACCURACY_DEFAULT_IMPLS
    ]
    for record in report["accuracy"]:
        if record["impl"].startswith("kldiv"):
            assert record["worst_rel_error"] <= TOLERANCE[record["dtype"]], record
    assert out.startswith("cpu: ")
    topk_path = tmp_path / "accuracy_topk.json"
    argv = [
        "bench",
        "fused-linear",
        "--accuracy",
        "--sizes",
        "16x8x64",
        "--dtypes",
        "float32",
        "--top-k",
        "4,64",
    ]
    assert main([*argv, "--plain", "--json", str(topk_path)]) == 0
    assert "kldiv-topk k=4" in capsys.readouterr().out
    records = json.loads(topk_path.read_text())["accuracy"]
    assert [(r["impl"], r["k"]) for r in records] == [
        *((impl, None) for impl in fused_run.ACCURACY_DEFAULT_IMPLS),
        *((impl, k) for impl in ("naive-topk", "kldiv-topk") for k in (4, 64)),
    ]
    for record in records:
        assert record["worst_rel_error"] <= TOLERANCE["float32"], record
    tables = out.split("\n", 1)[1]  # after the machine line, whose "Numba target" is the code generator
    assert not re.search(r"\btargets?\b|\bmet\b|\bgoal\b", tables), tables
