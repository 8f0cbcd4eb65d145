"""Fused kernels: value and gradient in one pass over the data, loaded on first use.

``numba_cpu`` serves NumPy arrays and CPU torch tensors; :mod:`kldiv.kernels.dispatch` decides per
call whether a kernel serves it (``backend="auto"``) or the core does. Nothing here is imported by
``import kldiv``.
"""
