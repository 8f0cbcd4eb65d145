"""The benchmark harness is a package of its own: short modules on kldiv's public API only.

Parsed with :mod:`ast` (nothing imported): every kldiv module that a module of ``kldiv.bench``
imports, at any depth, is public (a name of ``kldiv.__all__``, or ``kldiv.torch``, ``kldiv.jax``, ...
and their names without a leading underscore; no ``kernels``, ``core``, ``losses`` module) or
``kldiv.bench`` itself; no
module of ``kldiv.cli`` or ``kldiv.bench`` exceeds 400 lines; the CLI measures nothing itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kldiv

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "kldiv"
SCRIPTS = ROOT / "benchmarks"
PUBLIC = {"kldiv", "kldiv.torch", "kldiv.jax", "kldiv.keras", "kldiv.tf_keras", "kldiv.fused.torch"}
ALL = set(kldiv.__all__)  # what ``from kldiv import ...`` may take
MAX_LINES = 400


def _modules(folder: str) -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def kldiv_imports(path: Path, root: Path = SRC) -> set[str]:
    """The absolute names of the kldiv modules (or module attributes) ``path`` (under ``root``, the
    folder of ``kldiv``) imports."""
    package = ["kldiv", *path.relative_to(root).parts[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "kldiv"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [node.module])])
            else:
                base = node.module or ""
            if base.split(".")[0] == "kldiv":
                found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def non_public(names: set[str]) -> list[str]:
    """The names that are neither kldiv.bench's own nor public modules or their public attributes."""
    bad = []
    for name in sorted(names):
        module, _, attribute = name.rpartition(".")
        if name.startswith("kldiv.bench.") or name in PUBLIC:
            continue
        if module not in PUBLIC or attribute.startswith("_") or (module == "kldiv" and attribute not in ALL):
            bad.append(name)
    return bad


@pytest.mark.parametrize("path", _modules("bench"), ids=lambda p: str(p.relative_to(SRC)))
def test_bench_uses_the_public_api_only(path: Path) -> None:
    assert non_public(kldiv_imports(path)) == [], path.name


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_scripts_use_the_public_api_or_the_harness(path: Path) -> None:
    """``benchmarks/*.py`` run ``kldiv bench`` (``kldiv.cli.main``) or call ``kldiv.bench`` and the
    public API: no private module, so that changes inside the library cannot break them."""
    names = kldiv_imports(path, root=SCRIPTS) - {"kldiv.cli.main.main"}
    assert non_public(names) == [], path.name


def test_the_public_api_check_can_fail(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bad.py").write_text(
        "from ..kernels._fastmath import logf\nimport kldiv.torch\nfrom kldiv import _validate, losses\n"
        "from .timing import timed\nfrom kldiv import KLDivergence\n"
    )
    names = kldiv_imports(bench / "bad.py", root=tmp_path)
    assert names == {
        "kldiv.kernels._fastmath.logf",
        "kldiv.torch",
        "kldiv._validate",
        "kldiv.losses",
        "kldiv.bench.timing.timed",
        "kldiv.KLDivergence",
    }
    assert non_public(names) == ["kldiv._validate", "kldiv.kernels._fastmath.logf", "kldiv.losses"]


@pytest.mark.parametrize(
    "path", [*_modules("bench"), *_modules("cli")], ids=lambda p: str(p.relative_to(SRC))
)
def test_modules_are_short(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)}: {lines} lines"


def test_cli_measures_nothing() -> None:
    """The CLI parses, checks and prints: timing and floors are the harness's."""
    for path in _modules("cli"):
        text = path.read_text(encoding="utf-8")
        for word in ("perf_counter", "njit", "prange", "subprocess"):
            assert word not in text, f"{path.name} uses {word}"
