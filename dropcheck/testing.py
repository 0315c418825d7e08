"""Oracles as public API: brute-force mask loops, numeric derivatives, ``assert_close``.

These are deliberately independent of the library's fast paths (a Python loop over masks with
one forward per mask; central differences), so the tests and the checkers can use them to
validate the engine and the hand-derived derivatives.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from dropcheck._tolerances import default_rtol
from dropcheck.backend import namespace, to_numpy

if TYPE_CHECKING:
    from dropcheck.checks import (
        DropcheckError,
        assert_dropout_correct,
        assert_gradient_noise_matches,
        assert_regularizer_matches,
    )

__all__ = [
    "DropcheckError",
    "assert_dropout_correct",
    "assert_gradient_noise_matches",
    "assert_regularizer_matches",
    "brute_force_expectation",
    "numeric_jacobian",
    "numeric_hessian",
    "assert_close",
    "default_rtol",
]


def brute_force_expectation(
    model: Any,
    x: Any,
    q: float | dict[str, float],
    fn: Callable[[dict[str, Any]], Any],
    sites: Iterable[str] | None = None,
    max_masks: int = 2**12,
) -> Any:
    """``Σ_m p(m) fn(noise_m)`` by a plain loop over every mask (one call per mask).

    ``fn`` receives the noise dict ``site -> η`` (shape ``(d,)``, shared by all examples) and
    returns a numpy-convertible value.  Probabilities come from ``itertools.product`` over
    keep/drop bits, independently of :func:`dropcheck.noise.enumerate_masks`.
    """
    names = tuple(sites) if sites is not None else model.site_names
    qd = q if isinstance(q, dict) else dict.fromkeys(names, float(q))
    widths = [model.widths[s] for s in names]
    if 2 ** sum(widths) > max_masks:
        raise ValueError(f"brute force over 2^{sum(widths)} masks exceeds max_masks={max_masks}")
    xp = model.xp
    total = None
    for bits in itertools.product((0, 1), repeat=sum(widths)):
        noise, prob, i = {}, 1.0, 0
        for s, d in zip(names, widths, strict=True):
            m = bits[i : i + d]
            i += d
            prob *= math.prod((1 - qd[s]) if b else qd[s] for b in m)
            noise[s] = xp.asarray([b / (1 - qd[s]) - 1.0 for b in m], dtype=model.dtype)
        if prob == 0.0:
            continue
        v = prob * to_numpy(fn(noise))
        total = v if total is None else total + v
    return total


def numeric_jacobian(f: Callable[[np.ndarray], Any], x: Any, eps: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of ``f`` at ``x``: shape ``f(x).shape + x.shape``.

    Truncation error O(eps²·|f'''|), rounding O(ε_mach·|f|/eps): eps = 1e-6 balances them at
    about 1e-10 relative for smooth float64 functions of unit scale.
    """
    x = np.array(to_numpy(x), dtype=np.float64)
    f0 = np.asarray(to_numpy(f(x)))
    jac = np.empty(f0.shape + x.shape)
    for idx in np.ndindex(x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        jac[(...,) + idx] = (to_numpy(f(xp_)) - to_numpy(f(xm))) / (2 * eps)
    return jac


def numeric_hessian(f: Callable[[np.ndarray], Any], x: Any, eps: float = 1e-4) -> np.ndarray:
    """Hessian of a scalar ``f`` by central differences of its central-difference gradient."""
    return numeric_jacobian(lambda z: numeric_jacobian(f, z, eps), x, eps)


#: the checkers wrapped as assertions: imported from dropcheck.checks on first access (PEP 562),
#: so ``import dropcheck.testing`` stays free of scipy.stats; checks never import this module
_FROM_CHECKS = frozenset({"DropcheckError", "assert_dropout_correct",
                          "assert_gradient_noise_matches", "assert_regularizer_matches"})


def __getattr__(name: str) -> Any:
    if name in _FROM_CHECKS:
        value = getattr(importlib.import_module("dropcheck.checks"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def assert_close(
    actual: Any,
    desired: Any,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    check_namespace: bool = True,
    check_dtype: bool = True,
    err_msg: str = "",
) -> None:
    """Assert ``|actual − desired| ≤ atol + rtol·|desired|`` elementwise.

    Namespace, shape and dtype are checked before values; a failure prints the worst mismatches
    and the tolerances used.  ``rtol`` defaults to :func:`default_rtol` of the dtype.
    """
    if check_namespace and hasattr(desired, "shape") and not isinstance(desired, np.ndarray):
        xa, xd = namespace(actual), namespace(desired)
        if xa is not xd:
            raise AssertionError(f"{err_msg} namespaces differ: {xa.__name__} vs {xd.__name__}")
    a, d = to_numpy(actual), to_numpy(desired)
    a, d = np.asarray(a), np.asarray(d)
    if a.shape != d.shape:
        raise AssertionError(f"{err_msg} shapes differ: {a.shape} vs {d.shape}")
    if check_dtype and hasattr(actual, "dtype") and hasattr(desired, "dtype"):
        if str(actual.dtype) != str(desired.dtype):
            raise AssertionError(f"{err_msg} dtypes differ: {actual.dtype} vs {desired.dtype}")
    if rtol is None:
        rtol = default_rtol(a.dtype if a.dtype.kind == "f" else np.float64)
    err = np.abs(a - d)
    bad = ~(err <= atol + rtol * np.abs(d))
    if bad.any():
        order = np.argsort(-(err - rtol * np.abs(d)), axis=None)[:5]
        rows = [
            f"  at {np.unravel_index(i, a.shape) if a.ndim else ()}: actual {a.flat[i]!r}, "
            f"desired {d.flat[i]!r}, |diff| {err.flat[i]:.3g}"
            for i in order
        ]
        raise AssertionError(
            f"{err_msg} {int(bad.sum())} of {a.size} elements differ beyond atol={atol:g}, "
            f"rtol={rtol:g}; worst:\n" + "\n".join(rows)
        )
