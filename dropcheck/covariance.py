"""Comparing covariance matrices: the metrics behind claims I1, I2 and S1, in one place.

Every function takes arrays of any array-API namespace with the two matrix axes last
(``(..., P, P)``; leading axes, e.g. one covariance per example, are kept), and returns arrays
of the same namespace.

- :func:`relative_frobenius_error`: ``‖A − C‖_F / ‖C‖_F`` — how far ``A`` is from the
  reference ``C`` overall.
- :func:`trace_ratio`: ``tr A / tr C`` — the total variance of ``A`` relative to ``C``
  (a noise injection with the right *amount* of noise has ratio 1, whatever its shape).
- :func:`eigenspace_alignment`: the mean squared cosine of the principal angles between the
  top-``r`` eigenspaces, ``‖U_Aᵀ U_C‖_F² / r ∈ [0, 1]`` — whether ``A`` puts its noise in
  the directions ``C`` does (1: same subspace; ``r/P`` on average for random subspaces).
- :func:`compare` returns all three.
- :func:`sample_covariance` estimates a covariance from draws with the standard error of each
  entry, and :func:`sampling_floor` turns those errors into the relative Frobenius error that
  sampling alone produces, so a sampled comparison can state its own uncertainty;
  :func:`z_scores` standardizes the entrywise difference to a reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dropcheck._validate import check_positive_int
from dropcheck.backend import namespace
from dropcheck.montecarlo import Estimate

__all__ = [
    "CovarianceComparison",
    "relative_frobenius_error",
    "trace_ratio",
    "top_eigenspace",
    "eigenspace_alignment",
    "compare",
    "sample_covariance",
    "sampling_floor",
    "z_scores",
]


def _pair(a: Any, c: Any) -> tuple[Any, Any, Any]:
    xp = namespace(a, c)
    a, c = xp.asarray(a), xp.asarray(c)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"approx must be square matrices (..., P, P), got shape {a.shape}")
    if c.shape != a.shape:
        raise ValueError(f"approx and ref must have the same shape, got {a.shape} and {c.shape}")
    return xp, a, c


def _fro(a: Any, xp: Any) -> Any:
    return xp.sqrt(xp.sum(a * a, axis=(-2, -1)))


def _ratio(num: Any, den: Any, xp: Any) -> Any:
    # 0/0 -> 0 (both matrices vanish: no error), x/0 -> inf
    safe = xp.where(den == 0, xp.ones_like(den), den)
    out = num / safe
    inf = xp.full_like(num, float("inf"))
    return xp.where(den == 0, xp.where(num == 0, xp.zeros_like(num), inf), out)


def relative_frobenius_error(approx: Any, ref: Any) -> Any:
    """``‖A − C‖_F / ‖C‖_F`` over the last two axes, shape ``approx.shape[:-2]``.

    0 when both vanish; ``inf`` when only ``C`` does.
    """
    xp, a, c = _pair(approx, ref)
    return _ratio(_fro(a - c, xp), _fro(c, xp), xp)


def trace_ratio(approx: Any, ref: Any) -> Any:
    """``tr A / tr C`` over the last two axes, shape ``approx.shape[:-2]``."""
    xp, a, c = _pair(approx, ref)
    return _ratio(
        xp.sum(xp.linalg.diagonal(a), axis=-1), xp.sum(xp.linalg.diagonal(c), axis=-1), xp
    )


def top_eigenspace(cov: Any, r: int) -> Any:
    """Orthonormal eigenvectors of the ``r`` largest eigenvalues of symmetric ``cov``.

    Shape ``(..., P, r)``.  When eigenvalue ``r`` is tied with ``r + 1`` the subspace is not
    unique; choose ``r`` at a gap of the spectrum (see :func:`eigenspace_alignment`).
    """
    xp = namespace(cov)
    cov = xp.asarray(cov)
    r = check_positive_int(r, "r")
    if r > cov.shape[-1]:
        raise ValueError(f"r must be at most the matrix size {cov.shape[-1]}, got {r}")
    sym = 0.5 * (cov + xp.matrix_transpose(cov))
    # Normalize and shift by the identity (eigenvectors unchanged): gradient covariances are
    # often rank-deficient with a wide dynamic range, and LAPACK's eigh then meets subnormal
    # numbers near the null space and runs 100x slower; on M/‖M‖ + I it does not.
    norm = _fro(sym, xp)[..., None, None]
    norm = xp.where(norm == 0, xp.ones_like(norm), norm)
    eye = xp.eye(sym.shape[-1], dtype=sym.dtype)
    _, vecs = xp.linalg.eigh(sym / norm + eye)  # ascending eigenvalues
    return vecs[..., -r:]


def eigenspace_alignment(approx: Any, ref: Any, r: int) -> Any:
    """Mean squared cosine of the principal angles between the top-``r`` eigenspaces.

    ``(1/r) Σ_j cos² θ_j = ‖U_Aᵀ U_C‖_F² / r`` with ``U`` the top-``r`` eigenvectors
    (the singular values of ``U_Aᵀ U_C`` are the cosines ``cos θ_j``).  1 when the two
    subspaces coincide, 0 when orthogonal, ``r/P`` in expectation for a random subspace.
    Shape ``approx.shape[:-2]``.
    """
    xp, a, c = _pair(approx, ref)
    ua, uc = top_eigenspace(a, r), top_eigenspace(c, r)
    m = xp.matrix_transpose(ua) @ uc
    return xp.sum(m * m, axis=(-2, -1)) / r


@dataclass(frozen=True)
class CovarianceComparison:
    """The three metrics of ``approx`` against ``ref`` (arrays of shape ``approx.shape[:-2]``).

    ``rel_frobenius``: ``‖A − C‖_F/‖C‖_F``; ``trace_ratio``: ``tr A/tr C``; ``alignment``:
    mean squared cosine of the principal angles between the top-``r`` eigenspaces.
    """

    rel_frobenius: Any
    trace_ratio: Any
    alignment: Any
    r: int


def compare(approx: Any, ref: Any, r: int = 1) -> CovarianceComparison:
    """Relative Frobenius error, trace ratio and top-``r`` eigenspace alignment of ``approx``."""
    return CovarianceComparison(
        relative_frobenius_error(approx, ref),
        trace_ratio(approx, ref),
        eigenspace_alignment(approx, ref, r),
        int(r),
    )


def sample_covariance(samples: Any, *, mean: Any = None) -> Estimate:
    """Covariance of draws ``samples`` ``(N, ..., k)`` with an entrywise standard error.

    With a known ``mean`` (broadcast against ``samples[0]``; pass ``0.0`` for a noise that has
    mean zero exactly, like ``ξ̃_drop`` or ``ξ_approx``) the estimate is the mean of
    ``(s − μ)(s − μ)ᵀ``, unbiased.  Without it the draws are centred on their own mean and the
    sum is divided by ``N − 1``.  The standard error of entry ``(a, b)`` is the standard
    deviation of the products ``(s_a − μ_a)(s_b − μ_b)`` over ``sqrt(N)`` (the error of the
    estimated mean is second order).  Returns an :class:`~dropcheck.montecarlo.Estimate` with
    value and stderr of shape ``(..., k, k)``.
    """
    xp = namespace(samples)
    s = xp.asarray(samples)
    if s.ndim < 2:
        raise ValueError(f"samples must have shape (N, ..., k), got {s.shape}")
    n = s.shape[0]
    check_positive_int(n, "number of samples (samples.shape[0])", minimum=2)
    d = s - (xp.mean(s, axis=0) if mean is None else mean)
    prods = d[..., :, None] * d[..., None, :]
    m = xp.mean(prods, axis=0)
    var = xp.sum((prods - m) ** 2, axis=0) / (n - 1)
    value = m * (n / (n - 1)) if mean is None else m
    return Estimate(value, xp.sqrt(var / n), n)


def sampling_floor(stderr: Any, ref: Any) -> Any:
    """Relative Frobenius error that sampling alone produces: ``sqrt(Σ se²) / ‖C‖_F``.

    If an estimate is ``Ĉ = C + E`` with independent entry errors of standard deviation
    ``se``, ``E‖Ĉ − C‖_F² = Σ se²``; a measured ``‖Ĉ − A‖/‖C‖`` then combines the true
    ``‖C − A‖/‖C‖`` and this floor roughly in quadrature.  Shape ``ref.shape[:-2]``.
    """
    xp = namespace(stderr, ref)
    se, c = xp.asarray(stderr), xp.asarray(ref)
    return _ratio(_fro(se, xp), _fro(c, xp), xp)


def z_scores(estimate: Estimate, ref: Any) -> Any:
    """``(value − ref) / stderr`` entrywise for an :class:`~dropcheck.montecarlo.Estimate`.

    Approximately standard normal where ``ref`` is the true value and the sample is large
    (central limit theorem); entries with zero standard error and zero difference give 0.
    """
    xp = namespace(estimate.value, ref)
    v, se = xp.asarray(estimate.value), xp.asarray(estimate.stderr)
    return _ratio(v - ref, se, xp)
