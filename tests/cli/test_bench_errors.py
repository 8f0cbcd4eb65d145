"""``kldiv bench`` and ``kldiv bench fused-linear`` refuse what cannot work before measuring anything:
an output path that cannot be written, a missing matplotlib for ``--plot``, ``--device cuda`` without
CUDA. Each is a subprocess run: exit status 2, one line on stderr (so no progress line either: no
case started), nothing on stdout, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TINY = ["--sizes", "8x16", "--repeats", "1", "--plain"]
TINY_FUSED = ["--sizes", "16x8x64", "--repeats", "1", "--plain"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def kldiv(*args: str, blocked: str | None = None) -> subprocess.CompletedProcess[str]:
    """``kldiv ARGS`` in a fresh interpreter; ``blocked``: a module made unimportable first."""
    block = f"sys.modules[{blocked!r}] = None" if blocked else ""
    return run_python(
        f"""
        import sys
        {block}
        from kldiv.cli.main import main
        sys.exit(main({list(args)!r}))
        """
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kldiv: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_plot_without_matplotlib(tmp_path: Path) -> None:
    done = kldiv("bench", *TINY, "--plot", str(tmp_path / "plot.png"), blocked="matplotlib")
    assert_one_line_error(done, "`--plot` needs matplotlib", 'pip install "kldiv[bench]"')
    assert not (tmp_path / "plot.png").exists()


@pytest.mark.parametrize("option", ["--plot", "--json", "--markdown"])
def test_output_in_a_missing_directory(tmp_path: Path, option: str) -> None:
    path = tmp_path / "missing" / "out.file"
    done = kldiv("bench", *TINY, option, str(path))
    assert_one_line_error(done, f"Argument `{option}`", str(path), f"no such directory {path.parent}")


def test_output_that_is_a_directory(tmp_path: Path) -> None:
    assert_one_line_error(kldiv("bench", *TINY, "--json", str(tmp_path)), "`--json`", "(a directory)")


def test_output_in_a_directory_that_takes_no_file() -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    done = kldiv("bench", *TINY, "--markdown", "/proc/kldiv-bench.md")
    assert_one_line_error(done, "`--markdown`", "not writable")


def test_fused_linear_output_checked_first(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "fused.json"
    done = kldiv("bench", "fused-linear", *TINY_FUSED, "--json", str(path))
    assert_one_line_error(done, "`--json`", "no such directory")


def test_fused_linear_without_torch() -> None:
    done = kldiv("bench", "fused-linear", *TINY_FUSED, blocked="torch")
    assert_one_line_error(done, "kldiv bench fused-linear needs torch", 'pip install "kldiv[torch]"')


def test_fused_linear_cuda_without_cuda(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    done = kldiv("bench", "fused-linear", "--device", "cuda", "--json", str(tmp_path / "gpu.json"))
    assert_one_line_error(done, "--device cuda: CUDA is not available", "nothing was measured")
    assert not (tmp_path / "gpu.json").exists()
