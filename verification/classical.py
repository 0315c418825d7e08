"""Classical claims of seed 002: dropout on least squares is ridge (L1)."""

from __future__ import annotations

import numpy as np

import dropcheck as dc
from verification._common import fmt
from verification._registry import Context, Measurement, claim

# Exact sums over 2^d ≤ 2^8 masks in float64 against a closed form: ≤ ~1e-13 relative.
_L1_TOL = 1e-11


@claim(
    "L1",
    statement="Input dropout on least squares is ridge: E_m ½(y − wᵀ(m⊙x)/p)² = "
    "½(y − wᵀx)² + ½((1−p)/p) Σ_j w_j² x_j² (λ = (1−p)/p per unit-variance feature)",
    source="seed 002",
    kind="identity",
    rule=f"max relative error of R_drop vs the ridge term ≤ {_L1_TOL:g} (exact enumeration)",
)
def measure_l1(ctx: Context) -> Measurement:
    """Exact R_drop of a least-squares linear model against the ridge penalty, several q."""
    rng = ctx.rng("L1")
    d, n = (5, 4) if ctx.quick else (8, 6)
    worst = 0.0
    for q in (0.1, 0.3, 0.5, 0.8):
        p = 1 - q
        model = dc.Linear.random(d, 1, rng=rng, seed=None, loss="squared")
        x = rng.standard_normal((n, d))
        y = rng.standard_normal((n, 1))
        r = np.asarray(dc.exact.explicit_regularizer(model, x, y, q))
        w = np.asarray(model.params["W1"])[0]
        ridge = 0.5 * (1 - p) / p * (x**2) @ (w**2)
        worst = max(worst, float(np.max(np.abs(r - ridge) / np.abs(ridge))))
    return Measurement(
        figure=f"max rel. error {fmt(worst)} (d = {d}, q ∈ 0.1…0.8)",
        passed=worst <= _L1_TOL,
        values={"max_rel_error": worst},
    )
