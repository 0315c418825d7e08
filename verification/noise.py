"""Claims N1, N2: the moments of dropout noise (paper Sec. 2, 4.1, footnote 6; seed 002)."""

from __future__ import annotations

import itertools

import numpy as np
from dropcheck.verification._common import fmt, rel_err
from dropcheck.verification._registry import Context, Measurement, claim

from dropcheck.noise import enumerate_masks, eta_moments, sample_rademacher

# Sums of at most 2^8 float64 terms of size O(1): rounding error ≤ 2^8·2^-53 ≈ 3e-14.
_TOL = 1e-12
_QS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


@claim(
    "N1",
    statement="E[η]=0, E[δδᵀ]=(q/(1−q))diag(h²), E[η³]=q(2q−1)/(1−q)²; inverted dropout "
    "keeps the mean E[m/(1−q)⊙h]=h",
    source="Sec. 2, 4.1; seed 002",
    kind="identity",
    rule=f"max relative error over q ∈ {list(_QS)} ≤ {_TOL:g} (exact sums over 2^d masks)",
)
def measure_n1(ctx: Context) -> Measurement:
    """Enumerate every mask of a d = 6 site and compare the moments with their closed forms."""
    rng = ctx.rng("N1")
    d = 6
    h = rng.standard_normal(d)
    worst = 0.0
    per_q = {}
    for q in _QS:
        m1 = np.zeros(d)
        m2 = np.zeros((d, d))
        m3 = np.zeros(d)
        mean_keep = np.zeros(d)
        for ch in enumerate_masks({"h": d}, {"h": q}):
            eta, p = np.asarray(ch.eta["h"]), np.asarray(ch.prob)
            delta = eta * h
            m1 += p @ eta
            m2 += (delta * p[:, None]).T @ delta
            m3 += p @ eta**3
            mean_keep += p @ ((eta + 1.0) * h)  # m/(1−q) ⊙ h = (1+η) ⊙ h
        mom = eta_moments(q)
        errs = [
            float(np.max(np.abs(m1))),
            rel_err(m2, mom["second"] * np.diag(h**2)),
            float(np.max(np.abs(m3 - mom["third"]))) / max(1.0, abs(mom["third"])),
            rel_err(mean_keep, h),
        ]
        per_q[q] = max(errs)
        worst = max(worst, per_q[q])
    return Measurement(
        figure=f"max rel. error {fmt(worst)} over {len(_QS)} q values, d = {d}",
        passed=worst <= _TOL,
        values={"max_rel_error": worst, "per_q": per_q},
    )


@claim(
    "N2",
    statement="Rademacher signs scaled by sqrt(q/(1−q)) have the covariance of η",
    source="fn. 6",
    kind="identity",
    rule=f"max relative error of E[ssᵀ] vs (q/(1−q))I ≤ {_TOL:g}; samples take only ±sqrt(q/(1−q))",
)
def measure_n2(ctx: Context) -> Measurement:
    """Enumerate all sign vectors of d = 5 (exact covariance) and check sampled support."""
    rng = ctx.rng("N2")
    d = 5
    worst = 0.0
    for q in _QS[1:]:
        c = np.sqrt(q / (1 - q))
        cov = np.zeros((d, d))
        for signs in itertools.product((-1.0, 1.0), repeat=d):
            s = c * np.asarray(signs)
            cov += np.outer(s, s) / 2**d
        worst = max(worst, rel_err(cov, q / (1 - q) * np.eye(d)))
        draws = np.asarray(sample_rademacher(rng, (1000, d), q))
        if not np.allclose(np.abs(draws), c, rtol=1e-15, atol=0):
            worst = np.inf
    return Measurement(
        figure=f"max rel. error {fmt(worst)} (q ∈ {list(_QS[1:])})",
        passed=worst <= _TOL,
        values={"max_rel_error": worst},
    )
