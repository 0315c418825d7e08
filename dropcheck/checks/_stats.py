"""Exact tests, Holm's correction and the sample sizes that give a stated power.

Every test here returns a p-value ``p`` with ``P(p <= a) <= a`` under its null hypothesis, for
every level ``a`` (the binomial and Fisher tests exactly, by doubling the smaller tail; the
t-test exactly for normal units and to within its normal approximation otherwise).  The
checkers combine these p-values with :func:`holm`, so the chance of any false alarm in a report
is at most the report's ``alpha``.

The sample-size functions invert normal approximations of the power and then (for the t-test)
check the exact noncentral-t power; they name the effect they are designed for, the test level
and the miss probability ``beta`` (power ``1 - beta``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special, stats

__all__ = [
    "binomial_test",
    "fisher_2x2",
    "t_test_mean",
    "holm",
    "rate_sample_size",
    "rate_power",
    "pairs_sample_size",
    "pairs_power",
    "mean_units",
    "mean_power",
    "zero_atom_sample_size",
    "hotelling_mean",
    "hotelling_crit",
]


def binomial_test(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial test of ``k`` successes in ``n`` trials against rate ``p``.

    The p-value is twice the smaller tail, ``min(1, 2 min(P(K <= k), P(K >= k)))`` for
    ``K ~ Binomial(n, p)``: a valid (slightly conservative) level-``a`` test for every ``a``.
    """
    lower = stats.binom.cdf(k, n, p)
    upper = stats.binom.sf(k - 1, n, p)
    return float(min(1.0, 2.0 * min(lower, upper)))


def fisher_2x2(a: np.ndarray, b: np.ndarray) -> tuple[float, float, tuple[int, int, int, int]]:
    """Fisher's exact test that the booleans ``a`` and ``b`` (paired elementwise) are independent.

    The pairs must be independent of each other.  Conditional on the margins, the count of pairs
    with both true is hypergeometric under independence whatever the two rates are, so the test
    does not confuse a wrong rate with dependence.  Returns ``(phi, p, (n11, n10, n01, n00))``:
    the phi correlation of the pair, the two-sided p-value (twice the smaller hypergeometric
    tail; false-alarm probability at most the level), and the 2x2 counts.
    """
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    n = a.size
    n11 = int(np.count_nonzero(a & b))
    r1 = int(np.count_nonzero(a))
    c1 = int(np.count_nonzero(b))
    n10, n01 = r1 - n11, c1 - n11
    n00 = n - n11 - n10 - n01
    denom = float(r1) * (n - r1) * c1 * (n - c1)
    if denom == 0.0:  # one side constant: no evidence either way
        return 0.0, 1.0, (n11, n10, n01, n00)
    phi = (float(n11) * n00 - float(n10) * n01) / math.sqrt(denom)
    lower = stats.hypergeom.cdf(n11, n, r1, c1)
    upper = stats.hypergeom.sf(n11 - 1, n, r1, c1)
    return phi, float(min(1.0, 2.0 * min(lower, upper))), (n11, n10, n01, n00)


def t_test_mean(units: np.ndarray, mean0: float) -> tuple[float, float]:
    """Two-sided one-sample t-test that independent ``units`` have mean ``mean0``.

    Returns ``(t, p)``.  The p-value is exact for normal units; the checkers make each unit an
    average of many mask entries so that it is close to normal.  When all units are equal the
    test is decided exactly: ``p = 1`` if they equal ``mean0``, else ``p = 0``.
    """
    u = np.asarray(units, dtype=np.float64)
    m = float(u.mean())
    sd = float(u.std(ddof=1)) if u.size > 1 else 0.0
    if sd == 0.0:
        return (0.0, 1.0) if m == mean0 else (math.copysign(math.inf, m - mean0), 0.0)
    t = (m - mean0) / (sd / math.sqrt(u.size))
    return t, float(min(1.0, 2.0 * stats.t.sf(abs(t), u.size - 1)))


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm's step-down procedure at family-wise level ``alpha``.

    Sort the ``m`` p-values; the i-th smallest (from 0) is compared with ``alpha / (m - i)``;
    hypotheses are rejected up to the first that is not.  The family-wise false-alarm
    probability is at most ``alpha`` under any dependence between the tests (Holm 1979).
    Returns each test's threshold and whether it was rejected, in the input order.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    thresholds = [0.0] * m
    rejected = [False] * m
    going = True
    for rank, i in enumerate(order):
        thresholds[i] = alpha / (m - rank)
        going = going and p_values[i] <= thresholds[i]
        rejected[i] = going
    return thresholds, rejected


def _z(tail: float) -> float:
    """Upper ``tail`` quantile of the standard normal."""
    return float(stats.norm.isf(tail))


def rate_sample_size(q: float, delta: float, level: float, beta: float) -> int:
    """Trials for the two-sided binomial test at ``level`` to see a rate off by ``delta``.

    Normal approximation on both sides: ``n = ((z_{level/2} s0 + z_beta s1) / delta)^2`` with
    ``s0 = sqrt(q(1-q))`` and ``s1`` the standard deviation at the worse of ``q +- delta``.
    """
    s0 = math.sqrt(q * (1 - q))
    n = 1
    for p1 in (q - delta, q + delta):
        if 0.0 < p1 < 1.0:
            s1 = math.sqrt(p1 * (1 - p1))
            n = max(n, math.ceil(((_z(level / 2) * s0 + _z(beta) * s1) / delta) ** 2))
    return n


def rate_power(n: int, q: float, delta: float, level: float) -> float:
    """Approximate power of :func:`binomial_test` with ``n`` trials against ``q +- delta``."""
    s0 = math.sqrt(q * (1 - q))
    power = 1.0
    for p1 in (q - delta, q + delta):
        if 0.0 < p1 < 1.0:
            s1 = math.sqrt(p1 * (1 - p1))
            power = min(power, stats.norm.cdf((delta * math.sqrt(n) - _z(level / 2) * s0) / s1))
    return float(power)


def pairs_sample_size(phi: float, level: float, beta: float) -> int:
    """Independent pairs for :func:`fisher_2x2` at ``level`` to see a correlation ``phi``.

    The sample phi coefficient is about ``N(phi, 1/n)``, so ``n = ((z_{level/2} + z_beta)/phi)^2``.
    """
    return math.ceil(((_z(level / 2) + _z(beta)) / phi) ** 2)


def pairs_power(n: int, phi: float, level: float) -> float:
    """Approximate power of :func:`fisher_2x2` with ``n`` pairs against correlation ``phi``."""
    return float(stats.norm.cdf(phi * math.sqrt(n) - _z(level / 2)))


def mean_power(units: int, d: float, level: float) -> float:
    """Power of :func:`t_test_mean` with normal units against a standardized effect ``d``.

    ``T = (Z + d sqrt(u)) / sqrt(V/(u-1))`` with ``V ~ chi2(u-1)``; the miss probability
    ``P(T <= c) = E_V[Phi(c sqrt(V/(u-1)) - d sqrt(u))]`` is integrated by the trapezoid rule
    in ``log V`` over the chi-square quantiles ``1e-30 ... 1 - 1e-30`` (smooth and decaying at
    both ends, so the rule is accurate far below the ``beta`` asked for), because scipy's
    noncentral t returns NaN this far into its tails.  Rejections in the wrong direction are
    not counted, so this is a lower bound.
    """
    if units < 2:
        return 0.0
    df = units - 1
    crit = float(stats.t.isf(level / 2, df))
    nc = d * math.sqrt(units)
    logv = np.linspace(math.log(stats.chi2.ppf(1e-30, df)), math.log(stats.chi2.isf(1e-30, df)),
                       4001)
    v = np.exp(logv)
    f = special.ndtr(crit * np.sqrt(v / df) - nc) * np.exp(stats.chi2.logpdf(v, df) + logv)
    miss = float(np.sum((f[1:] + f[:-1]) * np.diff(logv)) / 2)
    return min(1.0, max(0.0, 1.0 - miss))


def mean_units(d: float, level: float, beta: float, limit: int) -> int:
    """Fewest units (at least 2, at most ``limit``) giving :func:`mean_power` ``>= 1 - beta``."""
    def enough(u: int) -> bool:
        return 1.0 - mean_power(u, d, level) <= beta

    lo, hi = 1, 2
    while hi < limit and not enough(hi):
        lo, hi = hi, min(limit, 2 * hi)
    while hi - lo > 1:  # enough(hi) or hi == limit; not enough(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def zero_atom_sample_size(atom: float, beta: float) -> int:
    """Draws needed to see at least once an outcome of probability ``atom``, with prob. 1-beta."""
    return math.ceil(math.log(beta) / math.log1p(-atom))


def hotelling_mean(units: np.ndarray, mean0: np.ndarray,
                   floor: float = 0.0) -> tuple[float, float, int]:
    """Hotelling's test that independent vector ``units`` ``(u, k)`` have mean ``mean0`` ``(k,)``.

    ``T² = dᵀ (S/u + floor² I)⁻¹ d`` with ``d`` the mean minus ``mean0`` and ``S`` the sample
    covariance; ``(u−k)/(k(u−1)) T² ~ F(k, u−k)`` for normal units (exact), so
    ``P(p <= a) <= a``.  ``floor`` (a standard error added in every direction) keeps the test
    defined for a deterministic function (``S = 0``): it then compares to within the rounding
    allowance ``floor``.  Needs ``u > k``.  Returns ``(T², p, u − k)``.
    """
    u = np.asarray(units, dtype=np.float64)
    n, k = u.shape
    if n <= k:
        raise ValueError(f"Hotelling's test needs more units ({n}) than directions ({k})")
    d = u.mean(axis=0) - np.asarray(mean0, dtype=np.float64)
    cov = np.cov(u, rowvar=False).reshape(k, k) / n + floor**2 * np.eye(k)
    try:
        t2 = float(d @ np.linalg.solve(cov, d))
    except np.linalg.LinAlgError:
        t2 = 0.0 if not np.any(d) else math.inf
    f = (n - k) / (k * (n - 1)) * t2
    return t2, float(stats.f.sf(f, k, n - k)) if math.isfinite(f) else 0.0, n - k


def hotelling_crit(k: int, dof: int, level: float, units: int) -> float:
    """The ``T²`` value Hotelling's test (:func:`hotelling_mean`) rejects at ``level``."""
    return float(stats.f.isf(level, k, dof)) * k * (units - 1) / (units - k)
