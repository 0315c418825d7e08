"""Array namespaces, dtype policy, device transfer and random numbers.

The core never computes with numpy directly: every public function takes the namespace of its
inputs, ``xp = namespace(x, ...)``, and uses only the array API standard through it, so numpy
(CPU), cupy (GPU), torch and JAX arrays run the same code (via ``array-api-compat``).
numpy is the default when no array is given.

Random numbers come from a generator the caller passes (or a ``seed`` to make one); there is no
global random state.  A numpy ``Generator`` can feed any namespace: samples are drawn on the host
and moved with ``xp.asarray`` (cupy generators are used directly on the device).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import array_api_compat
import numpy as _np

#: An array of any supported library (numpy, cupy, torch, array-api-strict, JAX).  The array
#: libraries share no static type, so this is ``Any`` for the type checker; the name says what a
#: parameter holds.
Array: TypeAlias = Any

__all__ = [
    "Array",
    "namespace",
    "default_dtype",
    "to_numpy",
    "matmul",
    "asarray",
    "make_rng",
    "uniform",
    "is_float64",
]


def namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array namespace of ``arrays`` (numpy's when there are none).

    Python scalars and ``None`` are ignored.  Mixing libraries raises ``TypeError``.
    """
    if xp is not None:
        return xp
    arrs = [a for a in arrays if a is not None and not isinstance(a, bool | int | float | complex)]
    if not arrs:
        return array_api_compat.array_namespace(_np.empty(0))
    return array_api_compat.array_namespace(*arrs)


def default_dtype(xp: Any) -> Any:
    """float64: verification needs it (float32 only where a caller asks, never silently)."""
    return xp.float64


def is_float64(a: Any, xp: Any) -> bool:
    """Whether ``a`` is a float64 array."""
    return a.dtype == xp.float64


def matmul(a: Any, b: Any, xp: Any) -> Any:
    """``a @ b``; for a matrix ``b`` the leading axes of ``a`` are merged into one GEMM.

    numpy's stacked matmul runs one small GEMM per leading index, 10–20× slower than one
    ``(prod(lead) × d)`` product; a batch of matrices ``b`` keeps the batched product.
    """
    if b.ndim != 2 or a.ndim <= 2:
        return a @ b
    out = xp.reshape(a, (-1, a.shape[-1])) @ b
    return xp.reshape(out, (*a.shape[:-1], b.shape[-1]))


def to_numpy(a: Any) -> _np.ndarray:
    """Copy an array of any supported library to a host numpy array."""
    if isinstance(a, _np.ndarray):
        return a
    if array_api_compat.is_cupy_array(a):
        return a.get()
    if array_api_compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    try:
        return _np.asarray(a)
    except Exception:  # array-api-strict refuses __array__; DLPack is the standard path
        return _np.from_dlpack(a)


def asarray(a: Any, xp: Any, dtype: Any = None, device: Any = None) -> Any:
    """``xp.asarray`` that also accepts host numpy arrays for non-numpy namespaces."""
    if isinstance(a, _np.ndarray) and not array_api_compat.is_numpy_namespace(xp):
        if array_api_compat.is_array_api_strict_namespace(xp):
            a = a.tolist() if a.ndim else a.item()
        out = xp.asarray(a, device=device) if device is not None else xp.asarray(a)
        return out if dtype is None else xp.astype(out, dtype)
    if dtype is None:
        return xp.asarray(a, device=device) if device is not None else xp.asarray(a)
    if device is not None:
        return xp.asarray(a, dtype=dtype, device=device)
    return xp.asarray(a, dtype=dtype)


def make_rng(seed: Any = None, rng: Any = None) -> Any:
    """Return ``rng`` if given, else a numpy ``Generator`` seeded with ``seed``.

    Exactly one of the two is used; passing both is an error (it would hide which one counts).
    """
    if rng is not None and seed is not None:
        raise ValueError("pass either seed or rng, not both")
    if rng is not None:
        if not hasattr(rng, "random"):
            raise TypeError(f"rng must be a random Generator (numpy or cupy), got {type(rng)!r}")
        return rng
    if isinstance(seed, _np.random.Generator):
        return seed
    return _np.random.default_rng(seed)


def uniform(
    rng: Any, shape: tuple[int, ...], xp: Any, dtype: Any = None, device: Any = None
) -> Any:
    """Uniform samples on [0, 1) of ``shape`` in namespace ``xp`` from generator ``rng``."""
    dtype = default_dtype(xp) if dtype is None else dtype
    if isinstance(rng, _np.random.Generator):
        return asarray(rng.random(shape), xp, dtype=dtype, device=device)
    # a device generator (cupy.random.Generator) samples in its own namespace
    return xp.astype(xp.asarray(rng.random(shape)), dtype)
