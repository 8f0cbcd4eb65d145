"""``import kldiv`` imports no framework, and works when the frameworks cannot be imported.

Each check runs in a fresh interpreter (this test process has imported torch and JAX already).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FRAMEWORKS = ("torch", "tensorflow", "jax", "keras", "numba", "triton", "array_api_compat.torch")


def run_python(code: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"exit code {completed.returncode}\n{completed.stderr}"
    return completed.stdout.strip().splitlines()[-1]


def test_numpy_use_imports_no_framework():
    output = run_python(
        """
        import json, sys
        import numpy as np
        import kldiv

        a = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
        b = np.array([[0.4, 0.6], [0.3, 0.7]], dtype=np.float32)
        kldiv.kl_divergence(a, b)
        kldiv.kl_divergence(a, b, epsilon=0, y_pred_format="logits")
        kldiv.KLDivergence()(a, b)
        kldiv.KLDivergence(reduction="sum")(a, b, sample_weight=np.array([1.0, 2.0], dtype=np.float32))
        kldiv.kl_divergence(a.tolist(), b.tolist())
        print(json.dumps(sorted(sys.modules)))
        """
    )
    modules = set(json.loads(output))
    loaded = sorted(
        name
        for name in modules
        for framework in FRAMEWORKS
        if name == framework or name.startswith(framework + ".")
    )
    assert not loaded, f"importing and using kldiv on NumPy arrays imported {loaded}"
    assert "kldiv" in modules  # the script really ran


def test_import_works_when_frameworks_are_blocked():
    output = run_python(
        """
        import importlib.abc, sys

        # (numba is looked up with importlib.util.find_spec, which a finder that raises would break
        # in a way no real installation does; it is left alone.)
        BLOCKED = ("torch", "jax", "jaxlib", "tensorflow", "keras", "tf_keras", "triton", "array_api_compat")

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked by the test")
                return None

        sys.meta_path.insert(0, Blocker())
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not work")

        import numpy as np
        import kldiv

        value = kldiv.KLDivergence()([.4, .9, .2], [.5, .8, .12])
        exact = kldiv.kl_divergence(np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]]), epsilon=0)
        print(f"{float(value):.8f} {float(exact[0]):.12f}")
        """
    )
    value, exact = output.split()
    assert value == "0.11891246"
    assert abs(float(exact) - 0.693147180560) < 1e-12
