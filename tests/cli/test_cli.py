"""The installed ``kldiv`` command, run in subprocesses, against the library and float64 references.

Each subprocess costs about 0.3 s (Python + NumPy start-up), so the cases are few and chosen; the
parsing details are tested in-process at the end of the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax

import kldiv
from kldiv.cli import inputs, report
from kldiv.cli.compute import Result

SEED_TRUE = "[[0, 1], [0, 0]]"
SEED_PRED = "[[0.6, 0.4], [0.4, 0.6]]"
SEED_PRED_ARRAY = [[0.6, 0.4], [0.4, 0.6]]
HEAVY_MODULES = ("torch", "jax", "tensorflow", "keras", "tf_keras")
EPSILON = 1e-7


def _console_script() -> list[str]:
    """The installed ``kldiv`` script (next to this interpreter, else on ``PATH``)."""
    script = Path(sys.executable).with_name("kldiv")
    found = str(script) if script.exists() else shutil.which("kldiv")
    assert found, "the kldiv console script is not installed (pip install -e .)"
    return [found]


def run(*args: str, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command or _console_script()), *args], capture_output=True, text=True, timeout=120, check=False
    )


def run_json(*args: str) -> dict:
    proc = run(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def reference_kl(y_true: object, y_pred: object, epsilon: float = EPSILON, axis: int = -1) -> np.ndarray:
    """``sum(t * log(t / p))`` in float64: Keras clip to ``[epsilon, 1]``, or exact at ``epsilon=0``."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if epsilon > 0:
        t, p = np.clip(t, epsilon, 1.0), np.clip(p, epsilon, 1.0)
        return np.sum(t * np.log(t / p), axis=axis)
    with np.errstate(divide="ignore"):
        terms = np.where(t == 0, 0.0, t * (np.log(np.where(t == 0, 1.0, t)) - np.log(p)))
    return np.sum(terms, axis=axis)


def assert_float32_close(actual: object, expected: object) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=2e-6, atol=1e-6)


def _probabilities(rows: int, classes: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.05, 1.0, size=(rows, classes))
    return x / x.sum(axis=-1, keepdims=True)


# --- the seed example and the reductions ---------------------------------------------------------


def test_seed_example_prints_0_458() -> None:
    proc = run(SEED_TRUE, SEED_PRED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "0.458" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "auto (sum_over_batch_size): 0.458143"
    assert "0.916289" in proc.stdout and "-3.08091e-06" in proc.stdout  # the per-sample table


def test_seed_example_with_sample_weight_prints_0_366() -> None:
    proc = run(SEED_TRUE, SEED_PRED, "--sample-weight", "[0.8, 0.2]")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("auto (sum_over_batch_size): 0.366")
    assert "0.916289" in proc.stdout  # the per-sample table is unweighted


def test_seed_example_reduction_sum_prints_0_916() -> None:
    proc = run(SEED_TRUE, SEED_PRED, "--reduction", "sum", "--precision", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "sum: 0.916"


def test_reduction_none_weighted_is_a_list() -> None:
    out = run_json(SEED_TRUE, SEED_PRED, "--reduction", "none", "--sample-weight", "[0.8, 0.2]")
    assert out["reduction"] == "none"
    expected = kldiv.KLDivergence(reduction="none")(
        [[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]], sample_weight=[0.8, 0.2]
    )
    assert out["value"] == expected.tolist()
    assert_float32_close(out["value"], reference_kl([[0, 1], [0, 0]], SEED_PRED_ARRAY) * [0.8, 0.2])


@pytest.mark.parametrize("reduction", ["auto", "sum", "sum_over_batch_size", "mean_with_sample_weight"])
def test_json_equals_library_and_float64_reference(reduction: str) -> None:
    y_true, y_pred = _probabilities(3, 4, seed=1).tolist(), _probabilities(3, 4, seed=2).tolist()
    weight = [0.5, 2.0, 1.25]
    out = run_json(
        json.dumps(y_true), json.dumps(y_pred), "--reduction", reduction, "--sample-weight", str(weight)
    )
    expected = kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=weight)
    assert out["value"] == float(expected)
    assert out["per_sample"] == kldiv.kl_divergence(y_true, y_pred).tolist()
    assert out["dtype"] == "float32"
    assert out["reduction"] == reduction
    assert out["options"] == {
        "y_true_format": "probs",
        "y_pred_format": "probs",
        "from_logits": False,
        "epsilon": EPSILON,
        "axis": -1,
        "dtype": None,
    }
    per_sample = reference_kl(y_true, y_pred)
    assert_float32_close(out["per_sample"], per_sample)
    weighted = per_sample * weight
    denominator = {"sum": 1.0, "mean_with_sample_weight": sum(weight)}.get(reduction, len(weight))
    assert_float32_close(out["value"], weighted.sum() / denominator)


def test_python_style_leading_dot_floats() -> None:
    proc = run("[.4, .9, .2]", "[.5, .8, .12]")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "auto (sum_over_batch_size): 0.118912"  # Keras: 0.11891246


def test_integer_inline_y_pred_becomes_float32() -> None:
    out = run_json("[[0, 1]]", "[[1, 0]]")
    assert out["dtype"] == "float32"
    assert out["per_sample"] == kldiv.kl_divergence([[0, 1]], [[1.0, 0.0]]).tolist()
    assert_float32_close(out["per_sample"], reference_kl([[0, 1]], [[1, 0]]))


def test_dtype_and_axis_options() -> None:
    y_true, y_pred = np.array([[0, 1], [0, 0]]).T.tolist(), np.array(SEED_PRED_ARRAY).T.tolist()
    out = run_json(json.dumps(y_true), json.dumps(y_pred), "--axis", "0", "--dtype", "float64")
    assert out["dtype"] == "float64"
    assert out["options"]["axis"] == 0 and out["options"]["dtype"] == "float64"
    expected = kldiv.KLDivergence(axis=0, dtype="float64")(y_true, y_pred)
    assert out["value"] == float(expected)
    assert out["value"] == pytest.approx(0.458143, abs=1e-6)


# --- files ---------------------------------------------------------------------------------------


def _write(path: Path, array: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".csv":
        np.savetxt(path, array, delimiter=",", fmt="%.17g")
    else:
        path.write_text(json.dumps(array.tolist()))


@pytest.mark.parametrize(
    ("suffix", "dtype"), [(".npy", "float32"), (".csv", "float64"), (".json", "float32")]
)
def test_file_formats(tmp_path: Path, suffix: str, dtype: str) -> None:
    y_true, y_pred = _probabilities(4, 3, seed=3), _probabilities(4, 3, seed=4)
    if suffix == ".npy":
        y_true, y_pred = y_true.astype(np.float32), y_pred.astype(np.float32)
    true_path, pred_path = tmp_path / f"y_true{suffix}", tmp_path / f"y_pred{suffix}"
    _write(true_path, y_true)
    _write(pred_path, y_pred)
    out = run_json(str(true_path), str(pred_path), "--reduction", "sum")
    assert out["dtype"] == dtype
    if suffix == ".json":  # a nested list, converted as the library converts Python lists
        y_true, y_pred = y_true.tolist(), y_pred.tolist()
    assert out["value"] == float(kldiv.KLDivergence(reduction="sum")(y_true, y_pred))
    assert out["per_sample"] == kldiv.kl_divergence(y_true, y_pred).tolist()
    assert_float32_close(out["per_sample"], reference_kl(y_true, y_pred))


def test_integer_npy_y_pred_and_csv_sample_weight(tmp_path: Path) -> None:
    np.save(tmp_path / "y_true.npy", np.array([[0.25, 0.75], [1.0, 0.0]]))
    np.save(tmp_path / "y_pred.npy", np.array([[0, 1], [1, 0]], dtype=np.int64))
    (tmp_path / "weights.csv").write_text("0.5\n2\n")
    out = run_json(
        str(tmp_path / "y_true.npy"),
        str(tmp_path / "y_pred.npy"),
        "--sample-weight",
        str(tmp_path / "weights.csv"),
        "--reduction",
        "none",
    )
    assert out["dtype"] == "float32"  # integer y_pred converted to float32
    y_true = np.array([[0.25, 0.75], [1.0, 0.0]])
    y_pred = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    expected = kldiv.KLDivergence(reduction="none")(y_true, y_pred, sample_weight=np.array([0.5, 2.0]))
    assert out["value"] == expected.tolist()
    assert_float32_close(out["value"], reference_kl(y_true, y_pred) * [0.5, 2.0])


# --- exact mode and logits -----------------------------------------------------------------------


def test_epsilon_zero_is_exact() -> None:
    out = run_json("[[0, 1], [0.5, 0.5]]", "[[0.6, 0.4], [1, 0]]", "--epsilon", "0", "--reduction", "none")
    assert out["options"]["epsilon"] == 0.0
    assert out["per_sample"][0] == pytest.approx(-np.log(np.float32(0.4)), rel=1e-6)
    assert out["per_sample"][1] == float("inf")  # p = 0 < t
    reference = reference_kl([[0, 1], [0.5, 0.5]], [[0.6, 0.4], [1, 0]], epsilon=0)
    assert_float32_close(out["per_sample"], reference)
    seed = run_json(SEED_TRUE, SEED_PRED, "--epsilon", "0", "--reduction", "none")
    assert seed["per_sample"][1] == 0.0  # 0 log 0 = 0, no clip bias


def test_from_logits_matches_log_softmax_reference() -> None:
    y_true = _probabilities(3, 5, seed=5)
    logits = np.random.default_rng(6).normal(0.0, 2.0, size=(3, 5))
    out = run_json(json.dumps(y_true.tolist()), json.dumps(logits.tolist()), "--from-logits")
    assert out["options"]["from_logits"] is True
    reference = np.sum(y_true * (np.log(y_true) - log_softmax(logits, axis=-1)), axis=-1)
    assert_float32_close(out["per_sample"], reference)
    assert_float32_close(out["value"], reference.mean())


def test_readme_logits_csv_command(tmp_path: Path) -> None:
    teacher = np.random.default_rng(7).normal(0.0, 1.5, size=(4, 6))
    student = np.random.default_rng(8).normal(0.0, 1.5, size=(4, 6))
    np.savetxt(tmp_path / "teacher.csv", teacher, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "student.csv", student, delimiter=",", fmt="%.17g")
    out = run_json(
        str(tmp_path / "teacher.csv"),
        str(tmp_path / "student.csv"),
        "--y-true-format",
        "logits",
        "--from-logits",
    )
    assert out["dtype"] == "float64"
    log_t, log_p = log_softmax(teacher, axis=-1), log_softmax(student, axis=-1)
    reference = np.sum(np.exp(log_t) * (log_t - log_p), axis=-1)
    np.testing.assert_allclose(out["per_sample"], reference, rtol=1e-12)
    np.testing.assert_allclose(out["value"], reference.mean(), rtol=1e-12)


# --- errors --------------------------------------------------------------------------------------


def _pickled_npy(tmp_path: Path) -> str:
    path = tmp_path / "pickled.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return str(path)


def _unknown_extension(tmp_path: Path) -> str:
    path = tmp_path / "values.txt"
    path.write_text("[[0, 1], [0, 0]]")
    return str(path)


def _npy_bytes(tmp_path: Path, name: str, keep: int | None) -> str:
    """A .npy file of a [4, 10] float64 array cut to its first ``keep`` bytes (0: an empty file)."""
    path = tmp_path / name
    np.save(path, np.ones((4, 10)))
    path.write_bytes(path.read_bytes()[:keep])
    return str(path)


def _text_file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _dangling_link(tmp_path: Path) -> str:
    path = tmp_path / "gone.npy"
    path.symlink_to(tmp_path / "never-written.npy")
    return str(path)


def _directory(tmp_path: Path) -> str:
    path = tmp_path / "folder.npy"
    path.mkdir()
    return str(path)


ERROR_CASES = {
    "empty .npy file": (lambda tmp: [_npy_bytes(tmp, "empty.npy", 0), SEED_PRED], "the file is empty"),
    "truncated .npy data": (
        lambda tmp: [_npy_bytes(tmp, "short.npy", 200), SEED_PRED],
        "could only read 9 elements",
    ),
    "truncated .npy header": (
        lambda tmp: [SEED_TRUE, _npy_bytes(tmp, "header.npy", 50)],
        "Argument `y_pred`: expected a .npy file of numbers",
    ),
    "malformed csv": (
        lambda tmp: [_text_file(tmp, "bad.csv", b"0.5,0.5\n0.5,abc\n"), SEED_PRED],
        "could not convert string 'abc'",
    ),
    "ragged csv": (
        lambda tmp: [_text_file(tmp, "ragged.csv", b"0.5,0.5\n1\n"), SEED_PRED],
        "Argument `y_true`: expected a .csv file of numbers",
    ),
    "malformed json": (
        lambda tmp: [SEED_TRUE, _text_file(tmp, "bad.json", b"[[0.6, 0.4], [0.4,")],
        "Argument `y_pred`: expected a .json file of numbers",
    ),
    "json that is not UTF-8": (
        lambda tmp: [_text_file(tmp, "binary.json", b"\xff\xfe\x00"), SEED_PRED],
        "codec can't decode",
    ),
    "json of strings": (
        lambda tmp: [_text_file(tmp, "strings.json", b'[["a", "b"]]'), SEED_PRED],
        "'a' is not a number",
    ),
    "dangling link": (lambda tmp: [_dangling_link(tmp), SEED_PRED], "no such file"),
    "directory named like a file": (lambda tmp: [_directory(tmp), SEED_PRED], "not a file"),
    "normalize: negative count": (
        lambda tmp: ["[[1, -1], [2, 2]]", SEED_PRED, "--normalize"],
        "1 of 4 entries are negative",
    ),
    "normalize: a row sums to 0": (
        lambda tmp: [SEED_TRUE, SEED_PRED, "--normalize"],
        "Argument `y_true`: expected non-negative, finite counts",
    ),
    "normalize: not finite": (
        lambda tmp: ["[[1, inf]]", "[[1, 1]]", "--normalize"],
        "an entry is not finite",
    ),
    "normalize: logits": (
        lambda tmp: ["[[1, 2]]", "[[1, 1]]", "--normalize", "--from-logits"],
        "y_pred is given as logits",
    ),
    "malformed inline value": (lambda tmp: ["[[0, 1], [0,", SEED_PRED], "was never closed"),
    "not a number": (lambda tmp: ["[[0, 1], [0, abc]]", SEED_PRED], "abc is not a number"),
    "ragged list": (lambda tmp: ["[[0, 1], [0]]", SEED_PRED], "ragged"),
    "code is never evaluated": (
        lambda tmp: ["__import__('os').system('echo HACKED')", SEED_PRED],
        "not a number",
    ),
    "missing file": (lambda tmp: [str(tmp / "missing.npy"), SEED_PRED], "no such file"),
    "pickled npy": (lambda tmp: [_pickled_npy(tmp), SEED_PRED], "allow_pickle=False"),
    "unknown extension": (lambda tmp: [_unknown_extension(tmp), SEED_PRED], "unknown file type '.txt'"),
    "shape mismatch": (lambda tmp: [SEED_TRUE, "[[0.5, 0.3, 0.2]]"], "broadcast"),
    "bad reduction": (lambda tmp: [SEED_TRUE, SEED_PRED, "--reduction", "avg"], "invalid choice: 'avg'"),
    "bad epsilon (library ValueError)": (lambda tmp: [SEED_TRUE, SEED_PRED, "--epsilon", "2"], "`epsilon`"),
    "bad sample weight shape": (
        lambda tmp: [SEED_TRUE, SEED_PRED, "--sample-weight", "[1, 2, 3]"],
        "`sample_weight`",
    ),
    "missing argument (argparse)": (lambda tmp: [SEED_TRUE], "required: Y_PRED"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, case: str) -> None:
    make_args, fragment = ERROR_CASES[case]
    proc = run(*make_args(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kldiv: error: ")
    assert "Traceback" not in proc.stderr
    assert fragment in lines[0]


def test_unreadable_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that cannot be read: permission denied (which root, running these tests, never gets
    from the file system, hence raised here in-process) is one line and exit 2."""
    from kldiv.cli.main import main

    path = tmp_path / "locked.npy"
    np.save(path, np.ones(2))

    def denied(name: str, argument: str) -> None:
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(inputs, "_load_npy", denied)
    assert main([str(path), SEED_PRED]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"kldiv: error: Argument `y_true`: expected a .npy file of numbers; received '{path}' "
        f"([Errno 13] Permission denied: '{path}').\n"
    )


# --- one-column files and --normalize -------------------------------------------------------------


def test_one_column_csv_is_one_distribution(tmp_path: Path) -> None:
    """What ``np.savetxt(v)`` writes for a histogram ``v``: one distribution, not one per row."""
    t, p = np.array([0.3, 0.5, 0.2]), np.array([0.4, 0.4, 0.2])
    np.savetxt(tmp_path / "t.csv", t)
    np.savetxt(tmp_path / "p.csv", p)
    out = run_json(str(tmp_path / "t.csv"), str(tmp_path / "p.csv"), "--epsilon", "0")
    assert out["per_sample"] == pytest.approx(float(np.sum(t * np.log(t / p))), rel=1e-12)
    assert out["value"] == out["per_sample"]


def test_normalize_turns_counts_into_distributions(tmp_path: Path) -> None:
    counts_t, counts_p = np.array([3.0, 5.0, 2.0]), np.array([4.0, 4.0, 2.0])
    np.savetxt(tmp_path / "t.csv", counts_t)
    np.savetxt(tmp_path / "p.csv", counts_p)
    out = run_json(str(tmp_path / "t.csv"), str(tmp_path / "p.csv"), "--normalize")
    t, p = counts_t / counts_t.sum(), counts_p / counts_p.sum()
    assert out["dtype"] == "float64"
    np.testing.assert_allclose(out["value"], reference_kl(t, p), rtol=1e-12)
    proc = run(str(tmp_path / "t.csv"), str(tmp_path / "p.csv"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["value"] == pytest.approx(0.0, abs=1e-12)  # counts clipped to [1e-7, 1]
    # Keras' value, and one line that says why it is meaningless and what to do.
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("kldiv: warning: Arguments `y_true` and `y_pred`: probabilities outside [0, 1]")
    assert "--normalize" in warning


def test_normalize_rows_of_inline_and_npy_values(tmp_path: Path) -> None:
    out = run_json("[[1, 3], [2, 2]]", "[[1, 1], [1, 3]]", "--normalize", "--reduction", "none")
    t, p = np.array([[0.25, 0.75], [0.5, 0.5]]), np.array([[0.5, 0.5], [0.25, 0.75]])
    assert out["dtype"] == "float32"  # Python floats, converted as the library converts lists
    assert_float32_close(out["value"], reference_kl(t, p))
    np.save(tmp_path / "t.npy", np.array([[1, 3], [2, 2]], dtype=np.int64))
    np.save(tmp_path / "p.npy", np.array([[1.0, 1.0], [1.0, 3.0]], dtype=np.float64))
    out = run_json(str(tmp_path / "t.npy"), str(tmp_path / "p.npy"), "--normalize", "--reduction", "none")
    assert out["dtype"] == "float64"
    np.testing.assert_allclose(out["value"], reference_kl(t, p), rtol=1e-12)


def test_normalize_along_the_axis() -> None:
    value = inputs.normalize([[1.0, 2.0], [3.0, 2.0]], "y_true", axis=0)
    np.testing.assert_allclose(value, [[0.25, 0.5], [0.75, 0.5]])
    integers = inputs.normalize(np.array([[1, 3]]), "y_true", axis=-1)
    assert integers.dtype == np.float32 and integers.tolist() == [[0.25, 0.75]]


# --- help, version, entry points, imports --------------------------------------------------------


def test_help_has_examples() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    assert "examples:" in proc.stdout
    assert f"kldiv '{SEED_TRUE}' '{SEED_PRED}'" in proc.stdout
    for fragment in (
        "y_true.npy",
        "teacher.csv",
        ".json",
        "--sample-weight",
        "float32",
        "allow_pickle=False",
        "np.savetxt(v)",
        "ONE",
        "--normalize",
    ):
        assert fragment in proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"kldiv {kldiv.__version__}"


@pytest.mark.parametrize("module", ["kldiv", "kldiv.cli.main"])
def test_python_dash_m(module: str) -> None:
    proc = run(SEED_TRUE, SEED_PRED, command=[sys.executable, "-m", module])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "auto (sum_over_batch_size): 0.458143"


def test_import_does_not_import_frameworks() -> None:
    code = (
        "import sys, kldiv.cli.main; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_plain_table_without_rich() -> None:
    code = (
        "import sys; sys.modules['rich'] = None; from kldiv.cli.main import main; "
        f"sys.exit(main([{SEED_TRUE!r}, {SEED_PRED!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "sample  kl_divergence",
        "     0       0.916289",
        "     1   -3.08091e-06",
        "auto (sum_over_batch_size): 0.458143",
    ]


# --- in-process: parsing and formatting ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[0, 1], [0, 0]]", [[0, 1], [0, 0]]),
        ("[.4, .9, .2]", [0.4, 0.9, 0.2]),
        ("[-1e-3, +2, 3.]", [-1e-3, 2, 3.0]),
        ("0.5", 0.5),
        ("[]", []),
        ("(0.6, 0.4)", [0.6, 0.4]),
    ],
)
def test_parse_inline_values(text: str, expected: object) -> None:
    assert inputs.parse_inline(text, "y_true") == expected


def test_parse_inline_non_finite() -> None:
    value = inputs.parse_inline("[nan, inf, -inf, NaN, Infinity]", "y_true")
    assert np.isnan(value[0]) and np.isnan(value[3])
    assert value[1:3] == [float("inf"), float("-inf")] and value[4] == float("inf")


@pytest.mark.parametrize(
    "text",
    [
        "[true]",
        "[None]",
        "['a']",
        "[1j]",
        "[1 + 2]",
        "--1",
        "[x]",
        "{1: 2}",
        "[[1], 2]",
        "[2**70]",
        "[" * 300,
    ],
)
def test_parse_inline_rejects(text: str) -> None:
    with pytest.raises(inputs.InputError, match=r"^Argument `y_true`: expected "):
        inputs.parse_inline(text, "y_true")


def test_report_formats() -> None:
    result = Result(
        per_sample=np.array([[0.5, np.inf]], dtype=np.float32),
        value=np.array([[0.25, np.nan]], dtype=np.float32),
        reduction="none",
        options={},
    )
    assert report.plain_table(result, 3).splitlines() == [
        "sample  kl_divergence",
        "  0, 0            0.5",
        "  0, 1            inf",
    ]
    assert report.reduced_line(result, 3) == "none: [[0.25, nan]]"
    assert json.loads(report.as_json(result))["per_sample"] == [[0.5, float("inf")]]
