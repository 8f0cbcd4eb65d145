"""Vectorizable ``log`` and ``exp`` for float32 inside Numba kernels.

The C library's scalar ``logf`` / ``expf`` that Numba calls per element keep LLVM from vectorizing a
loop, and a loop over a [rows, vocab] array is then bound by them, not by memory. These versions
split the exponent and mantissa with bit casts and evaluate the Cephes ``logf`` / ``expf``
polynomials (max error ~1 ulp), so LLVM turns the loop into AVX2/AVX-512 code (checked: the loops
compile to ``<8 x float>`` operations). Special values are
kept: ``log(0) = -inf``, ``log(x<0) = nan``, ``log(inf) = inf``, subnormals are scaled first;
``exp(-inf) = 0``, ``exp`` underflows to 0 and overflows to ``inf``. float64 uses ``math.log`` /
``math.exp`` (exactness over speed).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

# Fast-math flags that allow vectorization and contraction but keep inf/nan semantics.
FASTMATH = {"contract", "reassoc", "arcp", "nsz", "afn"}


@intrinsic
def _float_bits(typingctx, x):
    """Bit pattern of a float32 as int32 (an LLVM bitcast, free)."""
    if x == types.float32:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int32))

        return types.int32(types.float32), codegen
    return None


@intrinsic
def _bits_float(typingctx, x):
    """float32 with the bit pattern of an int32."""
    if x == types.int32:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))

        return types.float32(types.int32), codegen
    return None


_F = np.float32
_SMALLEST_NORMAL = _F(1.17549435e-38)
_SQRT_HALF = _F(0.707106781186547524)


@njit(inline="always", fastmath=FASTMATH)
def logf(x):
    """Cephes ``logf`` on the mantissa in [sqrt(1/2), sqrt(2)), branch-free."""
    small = x < _SMALLEST_NORMAL
    scaled = x * _F(8388608.0) if small else x
    bits = _float_bits(scaled)
    exponent = ((bits >> 23) & 0xFF) - 126
    exponent = exponent - 23 if small else exponent
    m = _bits_float(np.int32((bits & 0x007FFFFF) | 0x3F000000))  # in [0.5, 1)
    below = m < _SQRT_HALF
    exponent = exponent - 1 if below else exponent
    m = (m + m - _F(1.0)) if below else (m - _F(1.0))
    z = m * m
    y = _F(7.0376836292e-2) * m - _F(1.1514610310e-1)
    y = y * m + _F(1.1676998740e-1)
    y = y * m - _F(1.2420140846e-1)
    y = y * m + _F(1.4249322787e-1)
    y = y * m - _F(1.6668057665e-1)
    y = y * m + _F(2.0000714765e-1)
    y = y * m - _F(2.4999993993e-1)
    y = y * m + _F(3.3333331174e-1)
    y = y * m * z
    e = _F(exponent)
    y = y + _F(-2.12194440e-4) * e
    y = y - _F(0.5) * z
    result = m + y + _F(0.693359375) * e
    result = _F(-np.inf) if x == _F(0.0) else result
    result = _F(np.nan) if x < _F(0.0) else result
    return _F(np.inf) if x == _F(np.inf) else result


@njit(inline="always", fastmath=FASTMATH)
def expf(x):
    """Cephes ``expf``: ``2^n · p(r)`` with ``x = n ln 2 + r``, branch-free."""
    clamped = min(max(x, _F(-87.5)), _F(88.5))
    n = _F(math.floor(clamped * _F(1.44269504088896341) + _F(0.5)))
    r = clamped - n * _F(0.693359375) + n * _F(2.12194440e-4)
    z = r * r
    y = _F(1.9875691500e-4) * r + _F(1.3981999507e-3)
    y = y * r + _F(8.3334519073e-3)
    y = y * r + _F(4.1665795894e-2)
    y = y * r + _F(1.6666665459e-1)
    y = y * r + _F(5.0000001201e-1)
    y = y * z + r + _F(1.0)
    # 2^n as 2^h · 2^(n−h) with h = n // 2: both factors are normal floats for every n in
    # [-126, 128], so results near the overflow and underflow bounds stay exact.
    whole = np.int32(n)
    half = whole >> 1
    result = y * _bits_float(np.int32((half + 127) << 23)) * _bits_float(np.int32((whole - half + 127) << 23))
    result = _F(0.0) if x < _F(-87.33654) else result
    result = _F(np.inf) if x > _F(88.72283) else result
    return _F(np.nan) if x != x else result


def fast_log(x: float) -> float:
    """Natural log. In kernels: :func:`logf` for float32 data, ``math.log`` for float64."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def fast_exp(x: float) -> float:
    """Exponential. In kernels: :func:`expf` for float32 data, ``math.exp`` for float64."""
    return math.exp(x)


def like(x: float, value: float) -> float:
    """``value`` in the float type of ``x`` (keeps float32 loops in float32)."""
    return value


@overload(fast_log, fastmath=FASTMATH)
def _fast_log(x):
    if x == types.float32:
        return lambda x: logf(x)
    return lambda x: math.log(x)


@overload(fast_exp, fastmath=FASTMATH)
def _fast_exp(x):
    if x == types.float32:
        return lambda x: expf(x)
    return lambda x: math.exp(x)


@overload(like)
def _like(x, value):
    if x == types.float32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)
