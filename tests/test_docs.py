"""The documentation site builds with warnings as errors, and its ``>>>`` examples run.

``mkdocs build --strict`` (MkDocs Material + mkdocstrings: the API pages are rendered from the
docstrings, so a broken reference or a bad docstring fails here), the ``>>>`` examples of every page
under ``docs/`` and those of the modules' docstrings (plain code blocks — a ``Trainer`` set-up — are
illustrations, not run here; ``tests/integrations`` runs the same calls). The docstrings' examples
run in a fresh interpreter: they import TensorFlow and Keras, whose backend is chosen per process.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
MODULES_WITH_EXAMPLES = ["keras.py", "tf_keras.py", "losses.py", "jax/__init__.py", "torch/__init__.py"]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-q",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    reference = (tmp_path / "api" / "transformers" / "index.html").read_text()
    assert "distillation_loss" in reference and "num_items_in_batch" in reference  # rendered from docstrings


def test_every_page_is_in_the_navigation():
    import re

    entries = set(
        re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.MULTILINE)
    )
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert entries == pages, (sorted(pages - entries), sorted(entries - pages))


@pytest.mark.parametrize("page", [p for p in PAGES if ">>>" in p.read_text()], ids=lambda p: p.name)
def test_page_examples_run(page):
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 0 and result.failed == 0, result


def test_docstring_examples_run():
    paths = [str(ROOT / "src" / "kldiv" / name) for name in MODULES_WITH_EXAMPLES]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules", *paths]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
