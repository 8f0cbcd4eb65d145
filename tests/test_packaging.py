"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel, ``twine check``
accepts both, and the wheel installed in a fresh virtual environment runs the README's seed example
with NumPy as its only dependency."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build")
pytest.importorskip("twine")


def _run(*command: str | Path) -> str:
    # Without PYTHONPATH: the fresh venv must see the installed wheel, never a checkout's src/.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built from a copy of the sources (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.nb*")
    )
    out = source / "dist"
    # --no-isolation: the test extras pin setuptools>=77 (SPDX license metadata) and build.
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    return out


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(dist.iterdir())
    assert "PASSED" in _run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)


def test_wheel_holds_the_package_license_and_metadata(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        text = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "kldiv/py.typed" in names and "kldiv/kernels/numba_cpu.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith("tests/") for name in names)
    assert "License-Expression: Apache-2.0" in text
    assert "Requires-Dist: numpy" in text
    # Every framework is an extra: the only unconditional requirement is NumPy.
    requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
    hard = [line for line in requires if "extra ==" not in line]
    assert hard == ["Requires-Dist: numpy>=1.26"], hard
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(member.endswith("/LICENSE") for member in members)


def test_wheel_installs_in_a_fresh_venv_and_runs_the_seed_example(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, kldiv = venv / "bin" / "python", venv / "bin" / "kldiv"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    printed = _run(kldiv, "[[0, 1], [0, 0]]", "[[0.6, 0.4], [0.4, 0.6]]")
    assert printed.strip().splitlines()[-1] == "auto (sum_over_batch_size): 0.458143", printed
    # The installed package, not the checkout, and no framework imported with it.
    check = (
        "import sys, kldiv; assert 'site-packages' in kldiv.__file__, kldiv.__file__; "
        "assert not {'torch', 'jax', 'tensorflow', 'keras', 'numba'} & set(sys.modules); "
        "print(float(kldiv.KLDivergence()([.4, .9, .2], [.5, .8, .12])))"
    )
    assert abs(float(_run(python, "-c", check)) - 0.11891246) < 1e-6
