"""Claims D1–D3: DROPOUT_k, the two-draw noise ξ̃ and noise injection (Alg. 1, Sec. 3.1).

Each identity is checked exactly by enumerating the joint masks of several independent draws
(``2^(copies·d)`` of them) with :func:`dropcheck.exact.replicated_expectation`: the mean and
covariance of ``Σ_j c_j ∇_W ℓ(F(x, η_j))`` against ``∇ℓ_drop`` and ``Cov(ξ_drop)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import dropcheck as dc
from dropcheck.exact import loss_gradients, replicated_expectation
from verification._common import fmt, random_inputs, random_mlp, rel_err
from verification._registry import Context, Measurement, claim

# Joint enumerations sum ≤ 2^12 float64 terms of O(1); the covariance subtracts a shifted mean.
# Rounding stays below ~1e-13 relative; 1e-10 leaves room for conditioning of the subtraction.
_TOL = 1e-10


def combination_moments(
    model: dc.Model, x: Any, y: Any, q: float, coeffs: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-example mean ``(n, P)`` and covariance ``(n, P, P)`` of a combination.

    The combination is ``Σ_j c_j ∇_W ℓ(F(x, η_j))`` over independent masks ``η_j``.
    """
    xp = model.xp
    shift = loss_gradients(model, model.trace(x), y)[0] * sum(coeffs)

    def fn(traces: list, p: Any) -> tuple[Any, Any]:
        g = sum(c * loss_gradients(model, tr, y) for c, tr in zip(coeffs, traces, strict=True))
        d = g - shift  # (B, n, P)
        dt = xp.permute_dims(d, (1, 2, 0))
        return xp.tensordot(p, d, axes=1), (dt * p) @ xp.permute_dims(d, (1, 0, 2))

    m1, m2 = replicated_expectation(model, x, q, len(coeffs), fn)
    m1, m2 = np.asarray(m1), np.asarray(m2)
    return m1 + np.asarray(shift), m2 - m1[:, :, None] * m1[:, None, :]


def _family(ctx: Context, salt: str) -> list[tuple[dc.MLP, Any, Any, float]]:
    rng = ctx.rng(salt)
    cases = []
    for act, q in (("tanh", 0.3), ("relu", 0.6), ("softplus", 0.1))[: 2 if ctx.quick else 3]:
        net = random_mlp(rng, [3, 3, 3], activation=act, sites=("h1",))
        x, y = random_inputs(rng, 2, 3, 3)
        cases.append((net, x, y, q))
    return cases


@claim(
    "D1",
    statement="DROPOUT_k gradient is unbiased for ∇ℓ_drop with covariance Cov(ξ_drop)/k",
    source="Alg. 1, eq. 3.1",
    kind="identity",
    rule=f"relative error of mean and covariance ≤ {_TOL:g} (k = 2, 3; exact joint enumeration)",
)
def measure_d1(ctx: Context) -> Measurement:
    """Joint enumeration over k independent masks."""
    worst = 0.0
    for net, x, y, q in _family(ctx, "D1"):
        mean_ref = dc.exact.expected_gradient(net, x, y, q)
        cov_ref = dc.exact.gradient_noise_cov(net, x, y, q)
        for k in (2, 3):
            m, c = combination_moments(net, x, y, q, [1.0 / k] * k)
            worst = max(worst, rel_err(m, mean_ref), rel_err(c, np.asarray(cov_ref) / k))
    return Measurement(f"max rel. error {fmt(worst)}", worst <= _TOL, {"max_rel_error": worst})


@claim(
    "D2",
    statement="Cov(ξ̃_drop) = 2 Cov(ξ_drop) for ξ̃ the difference of two independent draws",
    source="Sec. 3.1",
    kind="identity",
    rule=f"relative error ≤ {_TOL:g}; mean of ξ̃ is 0",
)
def measure_d2(ctx: Context) -> Measurement:
    """Joint enumeration over two masks."""
    worst = 0.0
    for net, x, y, q in _family(ctx, "D2"):
        cov_ref = np.asarray(dc.exact.gradient_noise_cov(net, x, y, q))
        m, c = combination_moments(net, x, y, q, [1.0, -1.0])
        scale = np.linalg.norm(np.asarray(dc.exact.expected_gradient(net, x, y, q)))
        worst = max(worst, rel_err(c, 2 * cov_ref), float(np.linalg.norm(m)) / scale)
    return Measurement(f"max rel. error {fmt(worst)}", worst <= _TOL, {"max_rel_error": worst})


@claim(
    "D3",
    statement="DROPOUT_k + sqrt(½(1−1/k)) ξ̃_drop has the covariance Cov(ξ_drop) of DROPOUT_1",
    source="Sec. 3.1",
    kind="identity",
    rule=f"relative error of covariance ≤ {_TOL:g}, mean unchanged (k = 2)",
)
def measure_d3(ctx: Context) -> Measurement:
    """Joint enumeration over k + 2 masks."""
    worst = 0.0
    k = 2
    a = math.sqrt(0.5 * (1 - 1 / k))
    for net, x, y, q in _family(ctx, "D3"):
        cov_ref = np.asarray(dc.exact.gradient_noise_cov(net, x, y, q))
        mean_ref = np.asarray(dc.exact.expected_gradient(net, x, y, q))
        m, c = combination_moments(net, x, y, q, [1.0 / k] * k + [a, -a])
        worst = max(worst, rel_err(c, cov_ref), rel_err(m, mean_ref))
    return Measurement(f"max rel. error {fmt(worst)}", worst <= _TOL, {"max_rel_error": worst})
