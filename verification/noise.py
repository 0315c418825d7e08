"""Claims N1, N2: the moments of dropout noise (paper Sec. 2, 4.1, footnote 6; seed 002)."""

from __future__ import annotations

import itertools

import numpy as np
from dropcheck.verification._common import fmt, rel_err
from dropcheck.verification._registry import Context, Measurement, claim

import dropcheck.noise as nz
from dropcheck.noise import enumerate_masks, eta_moments

# Sums of at most 2^8 float64 terms of size O(1): rounding error ≤ 2^8·2^-53 ≈ 3e-14.
_TOL = 1e-12
_QS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
# The library's samplers are z-tested on N·d iid entries: |z| ≤ 5 (normal tail 5.7e-7, ≤ 15
# statistics per claim: false alarm ≤ 1e-5 per run; at N·d = 10^5 the normal approximation of
# a binomial frequency is accurate far beyond that).  A drop rate off by 0.02 gives |z| ≥ 13.
_ZMAX = 5.0
_N_DRAWS = 20_000


def _z(est: float, mean: float, sd: float, count: int) -> float:
    """``(est − mean)/(sd/√count)``; 0 when the statistic has no spread and is exact."""
    se = sd / np.sqrt(count)
    if se == 0:
        return 0.0 if est == mean else float("inf")
    return float(abs(est - mean) / se)


def _eta_sampler_z(ctx: Context, d: int) -> dict[float, float]:
    """Max |z| per q of the library's η sampler: P(η = −1) = q, E[η] = 0, E[η²] = q/(1−q)."""
    rng = ctx.rng("N1-sampler")
    out = {}
    for q in _QS[1:]:
        eta = np.asarray(nz.sample_eta(rng, (_N_DRAWS, d), q)).ravel()
        c = q / (1 - q)
        # the two-point law of η: −1 w.p. q, c w.p. 1−q; η² takes 1 and c²
        sd1 = np.sqrt(q * 1 + (1 - q) * c * c)
        second = q * 1 + (1 - q) * c * c
        sd2 = np.sqrt(q * (1 - second) ** 2 + (1 - q) * (c * c - second) ** 2)
        drop = float(np.mean(np.isclose(eta, -1.0, rtol=0, atol=1e-12)))
        on_support = np.isclose(eta, -1.0, rtol=0, atol=1e-12) | np.isclose(eta, c, rtol=1e-12)
        out[q] = max(
            _z(drop, q, np.sqrt(q * (1 - q)), eta.size),
            _z(float(eta.mean()), 0.0, sd1, eta.size),
            _z(float(np.mean(eta**2)), second, sd2, eta.size),
            0.0 if on_support.all() else float("inf"),
        )
    return out


@claim(
    "N1",
    statement="E[η]=0, E[δδᵀ]=(q/(1−q))diag(h²), E[η³]=q(2q−1)/(1−q)²; inverted dropout "
    "keeps the mean E[m/(1−q)⊙h]=h",
    source="Sec. 2, 4.1; seed 002",
    kind="identity",
    rule=f"max relative error over q ∈ {list(_QS)} ≤ {_TOL:g} (exact sums over 2^d masks); "
    f"the library's sampler dc.noise.sample_eta: P(η = −1) = q, E[η] = 0, E[η²] = q/(1−q) "
    f"within |z| ≤ {_ZMAX:g} ({_N_DRAWS} × 6 draws per q) and every draw in {{−1, q/(1−q)}}",
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
    z = _eta_sampler_z(ctx, d)
    zmax = max(z.values())
    return Measurement(
        figure=f"max rel. error {fmt(worst)} over {len(_QS)} q values, d = {d}; "
        f"dc.noise.sample_eta max |z| {zmax:.2f}",
        passed=worst <= _TOL and zmax <= _ZMAX,
        values={"max_rel_error": worst, "per_q": per_q, "sampler_max_z": zmax,
                "sampler_z_per_q": z},
    )


@claim(
    "N2",
    statement="Rademacher signs scaled by sqrt(q/(1−q)) have the covariance of η",
    source="fn. 6",
    kind="identity",
    rule=f"max relative error of E[ssᵀ] vs (q/(1−q))I ≤ {_TOL:g} (all sign vectors); the "
    "library's sampler dc.noise.sample_rademacher: draws are ±sqrt(q/(1−q)), and the mean, "
    f"P(+) = ½ and every E[s_i s_j] (i ≠ j) within |z| ≤ {_ZMAX:g} ({_N_DRAWS} draws of d = 5)",
)
def measure_n2(ctx: Context) -> Measurement:
    """Enumerate all sign vectors of d = 5 (exact covariance) and check sampled support."""
    rng = ctx.rng("N2")
    d = 5
    worst = 0.0
    zs: dict[float, float] = {}
    for q in _QS[1:]:
        c = np.sqrt(q / (1 - q))
        cov = np.zeros((d, d))
        for signs in itertools.product((-1.0, 1.0), repeat=d):
            s = c * np.asarray(signs)
            cov += np.outer(s, s) / 2**d
        worst = max(worst, rel_err(cov, q / (1 - q) * np.eye(d)))
        draws = np.asarray(nz.sample_rademacher(rng, (_N_DRAWS, d), q))
        if not np.allclose(np.abs(draws), c, rtol=1e-15, atol=0):
            worst = np.inf
        N = draws.shape[0]
        prod = (draws.T @ draws) / N  # E[s_i s_j]: 0 off the diagonal, sd c² per product
        off = prod[~np.eye(d, dtype=bool)]
        zq = [_z(float(m), 0.0, c, N) for m in draws.mean(0)]
        zq += [_z(float(f), 0.5, 0.5, N) for f in (draws > 0).mean(0)]
        zq += [_z(float(v), 0.0, c * c, N) for v in off]
        zs[q] = max(zq)
    zmax = max(zs.values())
    return Measurement(
        figure=f"max rel. error {fmt(worst)} (q ∈ {list(_QS[1:])}); dc.noise.sample_rademacher "
        f"max |z| {zmax:.2f} (mean, P(+), E[s_i s_j])",
        passed=worst <= _TOL and zmax <= _ZMAX,
        values={"max_rel_error": worst, "sampler_max_z": zmax, "sampler_z_per_q": zs},
    )
