"""kldiv's benchmark harness: what ``kldiv bench`` and ``benchmarks/*.py`` measure.

A tool for measuring kldiv, kept apart from the library: it uses kldiv's public API only
(``kldiv.KLDivergence``, ``kldiv.torch.FusedLinearKLDivergence``, ...), never a private module, and
it asserts nothing about speed. It prints measurements and ratios between implementations measured
in the same run, with the machine they ran on; targets and their verdicts are kept with the measured
results in ``benchmarks/RESULTS.md``.

* :mod:`kldiv.bench.machine`: CPU model, ISA flags, Numba's code-generation target, versions,
  available and peak memory (Linux ``/proc``).
* :mod:`kldiv.bench.timing`: a timed call, medians of interleaved calls, the progress display.
* :mod:`kldiv.bench.kl`: KL(t‖p) of fp32 softmax rows, kldiv against NumPy, SciPy, PyTorch, JAX,
  optax, tf_keras and Keras 3 and against memory floors (``kldiv bench``).
* :mod:`kldiv.bench.fused_linear`: fused linear + KL/JS against the naive PyTorch path, memory,
  time and accuracy (``kldiv bench fused-linear``).

Importing any of these modules imports NumPy only; frameworks are imported by the cases that need
them. The command-line front end is :mod:`kldiv.cli` (``kldiv bench --help``).
"""
