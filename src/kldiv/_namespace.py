"""Which array namespace ``xp`` serves an array, decided lazily and without importing frameworks.

* NumPy arrays, Python lists and scalars: ``numpy`` itself (NumPy 2 is an array-API namespace).
* TensorFlow tensors and variables: :mod:`kldiv._tf_namespace` (TensorFlow has no array-API namespace).
* Keras 3 symbolic tensors (``keras.KerasTensor``): :mod:`kldiv._keras_namespace` (``keras.ops``).
* Any other array: ``array_api_compat.array_namespace`` (PyTorch, JAX, CuPy, Dask, array-api-strict,
  ...), or the array's own ``__array_namespace__`` when array-api-compat is not installed.

Frameworks are never imported here: an array can only come from a framework the caller has already
imported, so TensorFlow and Keras are looked up in ``sys.modules`` (as array-api-compat's
``is_*_array`` checks do), and their shims are imported only for one of their tensors.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np

from .core import divergences

Array = Any
Namespace = Any

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def is_foreign_array(x: object) -> bool:
    """True for an array object that is not NumPy's (and not a Python list or scalar)."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float, bool)) or x is None:
        return False
    return hasattr(x, "__array_namespace__") or (hasattr(x, "shape") and hasattr(x, "dtype"))


def _framework_namespace(x: Array) -> Namespace | None:
    """The kldiv shim serving a TensorFlow tensor or a Keras 3 symbolic tensor (else None)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, (getattr(tf, "Tensor", ()), getattr(tf, "Variable", ()))):
        from . import _tf_namespace

        return _tf_namespace
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(x, getattr(keras, "KerasTensor", ())):
        from . import _keras_namespace

        return _keras_namespace
    return None


def _torch_namespace(x: Array) -> Namespace | None:
    """``array_api_compat.torch`` for a torch tensor, found without array-api-compat's cached
    type dispatch (which ``torch.compile`` would trace through on every call)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return None
    try:
        import array_api_compat.torch
    except ImportError:  # namespace_of explains what to install
        return None
    return array_api_compat.torch


def namespace_of(x: Array) -> Namespace:
    """The array-API namespace of one array (``numpy`` for NumPy arrays and Python values)."""
    if not is_foreign_array(x):
        return np
    shim = _framework_namespace(x)
    if shim is not None:
        return shim
    shim = _torch_namespace(x)
    if shim is not None:
        return shim
    try:
        import array_api_compat
    except ImportError:
        own = getattr(x, "__array_namespace__", None)
        if own is not None:
            return _with_forms(own())
        raise TypeError(
            f"kldiv needs the package array-api-compat to work with {type(x).__module__}."
            f"{type(x).__name__} arrays; install it with `pip install kldiv[array-api]`."
        ) from None
    try:
        xp = array_api_compat.array_namespace(x)
    except TypeError:
        raise TypeError(
            f"kldiv cannot compute with arrays of type {type(x).__module__}.{type(x).__name__}: "
            "expected a NumPy, PyTorch, JAX, TensorFlow or other array-API array, or a Python list."
        ) from None
    return _with_forms(xp)


_REGISTERED: set[str] = set()
"""The namespaces whose own forms have been registered (once per process)."""


def _with_forms(xp: Namespace) -> Namespace:
    """``xp``, with its own forms of the core's clip and forward KL of probabilities registered the
    first time it is served (JAX: :mod:`kldiv._jax_clip`, :mod:`kldiv._jax_exact`,
    :mod:`kldiv._jax_keras`)."""
    if getattr(xp, "__name__", "") == "jax.numpy" and "jax.numpy" not in _REGISTERED:
        from . import _jax_clip, _jax_exact, _jax_keras

        _REGISTERED.add("jax.numpy")
        divergences.CLIPS["jax.numpy"] = _jax_clip.clip
        divergences.EXACT_FORWARD_KL["jax.numpy"] = _jax_exact.forward_kl
        divergences.KERAS_FORWARD_KL["jax.numpy"] = _jax_keras.forward_kl
    return xp


def common_namespace(*arrays: Array) -> Namespace:
    """The namespace of the first non-NumPy array among ``arrays`` (else NumPy).

    The others are converted into it by :func:`as_array`, so NumPy or list targets can be mixed
    with framework predictions.
    """
    for x in arrays:
        if is_foreign_array(x):
            return namespace_of(x)
    return np


def device_of(x: Array) -> Any:
    """The device of an array (None for NumPy)."""
    if _framework_namespace(x) is not None:
        return getattr(x, "device", None) or None
    if "array_api_compat" in sys.modules or not isinstance(x, np.ndarray):
        try:
            import array_api_compat

            return array_api_compat.device(x)
        except ImportError:
            return getattr(x, "device", None)
    return None


def is_python_value(x: object) -> bool:
    """Python scalars and (nested) lists or tuples, which follow Keras' float32 conversion."""
    return isinstance(x, (list, tuple, int, float, bool))


def as_numpy_input(x: object) -> np.ndarray:
    """NumPy array of a Python value; Python floats become float32, as ``tf.convert_to_tensor`` does."""
    arr = np.asarray(x)
    if arr.dtype == np.float64 and is_python_value(x):
        arr = arr.astype(np.float32)
    return arr


def as_array(xp: Namespace, x: Array, like: Array | None = None) -> Array:
    """``x`` as an array of namespace ``xp`` (on ``like``'s device when given)."""
    if is_python_value(x) or isinstance(x, np.generic):
        x = as_numpy_input(x)
    if xp is np:
        return np.asarray(x)
    if is_foreign_array(x):
        if namespace_of(x) is not xp:
            raise TypeError(
                f"kldiv cannot mix {type(x).__module__}.{type(x).__name__} with arrays of "
                f"{getattr(xp, '__name__', xp)}: expected arrays of one library (NumPy arrays and "
                "Python lists mix with any)."
            )
        standardize = getattr(xp, "standardize", None)  # kldiv's shims: variables become tensors
        return x if standardize is None else standardize(x)
    if like is not None:
        device = device_of(like)
        if device is not None:
            return xp.asarray(x, device=device)
    return xp.asarray(x)


_DTYPE_NAMES: dict[tuple[type, Any], str] = {}


def dtype_name(dtype: Any) -> str:
    """``"float16"``, ``"bfloat16"``, ... for a dtype of any library (NumPy classes and instances,
    ml_dtypes, JAX, torch, TensorFlow); remembered per (hashable) dtype, as every call asks for it
    several times (a NumPy dtype's ``name`` is a Python property, ~2 µs)."""
    key = (type(dtype), dtype)  # the type too: NumPy dtypes compare equal to their strings and types
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype-like object
        pass
    name = _dtype_name(dtype)
    with contextlib.suppress(TypeError):
        _DTYPE_NAMES[key] = name
    return name


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    name = getattr(dtype, "__name__", None)
    if isinstance(name, str):
        return name
    return str(dtype).rsplit(".", 1)[-1]


def is_floating(xp: Namespace, dtype: Any) -> bool:
    """True for a real floating dtype (bfloat16 included) of namespace ``xp``."""
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except (TypeError, ValueError, AttributeError):
        return dtype_name(dtype) in _FLOAT_NAMES


def is_low_precision(xp: Namespace, dtype: Any) -> bool:
    """True for float16 and bfloat16, which kldiv accumulates in float32."""
    return dtype_name(dtype) in ("float16", "bfloat16")


def dtype_named(xp: Namespace, name: str) -> Any:
    """The dtype called ``name`` (e.g. ``"bfloat16"``) in namespace ``xp``."""
    dtype = getattr(xp, name, None)
    if dtype is None:
        module = sys.modules.get(getattr(xp, "__name__", "").rsplit(".", 1)[-1])
        dtype = getattr(module, name, None) if module is not None else None
    if dtype is None and xp is np and name == "bfloat16":
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    if dtype is None:
        raise TypeError(
            f"Argument `dtype`: expected a dtype that {getattr(xp, '__name__', xp)} supports; "
            f"received {name!r}."
        )
    return dtype
