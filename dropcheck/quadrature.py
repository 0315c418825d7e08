r"""Gauss–Hermite quadrature of Gaussian expectations (fast dropout, Gaussian dropout).

``E_{z~N(μ, Σ)} f(z)`` for a batch of means ``μ`` ``(n, c)`` and covariances ``Σ`` ``(n, c, c)``:
with ``Σ = Q Λ Qᵀ`` (eigendecomposition), ``z = μ + Q Λ^{1/2} t`` and ``t ~ N(0, I_c)``, the
expectation is the tensor-product rule over ``K^c`` points

.. math:: E f(z) \approx \sum_{a \in \{1..K\}^c} \Big(\prod_j w_{a_j}\Big)
          f\big(\mu + Q\Lambda^{1/2} (t_{a_1}, \dots, t_{a_c})\big),

``(t_a, w_a)`` the ``K``-point probabilists' Gauss–Hermite rule (weights summing to 1).  It is
exact for polynomials of degree ``≤ 2K − 1`` in each coordinate and converges geometrically for
functions analytic in a strip (``log Σ exp``, ``log(1 + e^s)``, the sigmoid); the error of a
``K``-point rule is estimated by comparing it with the ``2K``-point rule
(:func:`gaussian_expectation` with ``error=True``).

The nodes are constants computed once on the host (``numpy.polynomial.hermite_e``) and moved to
the input's namespace; everything else runs in that namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from dropcheck._validate import check_positive_int
from dropcheck.backend import asarray, namespace

__all__ = ["hermite_rule", "hermite_grid", "gaussian_expectation"]


@cache
def _rule(k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import math

    import numpy as np

    t, w = np.polynomial.hermite_e.hermegauss(k)
    return tuple(float(v) for v in t), tuple(float(v) / math.sqrt(2 * math.pi) for v in w)


def hermite_rule(k: int, xp: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """The ``k``-point rule for ``N(0, 1)``: nodes ``(k,)`` and weights ``(k,)`` summing to 1."""
    k = check_positive_int(k, "nodes")
    xp = namespace(xp=xp)
    t, w = _rule(k)
    return asarray(list(t), xp, dtype or xp.float64), asarray(list(w), xp, dtype or xp.float64)


@cache
def _host_grid(k: int, c: int) -> tuple[Any, Any]:
    import numpy as np

    t, w = (np.asarray(a) for a in _rule(k))
    pts = np.stack(np.meshgrid(*([t] * c), indexing="ij"), axis=-1).reshape(-1, c)  # (k^c, c)
    wts = np.prod(np.stack(np.meshgrid(*([w] * c), indexing="ij"), axis=-1).reshape(-1, c),
                  axis=-1)
    return pts, wts


def hermite_grid(k: int, dim: int, xp: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """The tensor rule for ``N(0, I_dim)``: points ``(k^dim, dim)`` and weights ``(k^dim,)``."""
    k = check_positive_int(k, "nodes")
    dim = check_positive_int(dim, "dim")
    xp = namespace(xp=xp)
    pts, wts = _host_grid(k, dim)
    return asarray(pts, xp, dtype or xp.float64), asarray(wts, xp, dtype or xp.float64)


def _grid(k: int, c: int, xp: Any, dtype: Any) -> tuple[Any, Any]:
    return hermite_grid(k, c, xp, dtype)


def gaussian_expectation(
    fn: Callable[[Any], Any], mean: Any, cov: Any, *, nodes: int = 24, error: bool = False
) -> Any:
    r"""``E_{z~N(mean, cov)} fn(z)`` per example by the tensor Gauss–Hermite rule.

    Args:
        fn: maps points ``(P, n, c)`` to values ``(P, n, ...)`` (one per point and example,
            trailing axes allowed: the result is then ``(n, ...)``).
        mean: ``(n, c)``.
        cov: ``(n, c, c)``, symmetric positive semi-definite.
        nodes: ``K`` points per dimension (``K^c`` evaluations per example).
        error: also return ``|Q_K − Q_{2K}|``, the estimated quadrature error of ``Q_K``.

    Returns:
        ``(n, ...)``, or ``(value, error_estimate)`` with ``error=True``.
    """
    xp = namespace(mean, cov)
    nodes = check_positive_int(nodes, "nodes")
    if mean.ndim != 2 or cov.shape != (*mean.shape, mean.shape[-1]):
        raise ValueError(f"mean must be (n, c) and cov (n, c, c); got {tuple(mean.shape)} and "
                         f"{tuple(cov.shape)}")
    lam, Q = xp.linalg.eigh(cov)
    root = Q * xp.sqrt(xp.clip(lam, 0.0, None))[:, None, :]  # (n, c, c): Q Λ^{1/2}

    def rule(k: int) -> Any:
        pts, wts = _grid(k, mean.shape[-1], xp, mean.dtype)
        z = mean[None, :, :] + xp.sum(root[None, :, :, :] * pts[:, None, None, :], axis=-1)
        vals = fn(z)
        return xp.sum(xp.reshape(wts, (-1,) + (1,) * (vals.ndim - 1)) * vals, axis=0)

    val = rule(nodes)
    if not error:
        return val
    return val, xp.abs(val - rule(2 * nodes))
