"""Claims D1–D3: DROPOUT_k, the two-draw noise ξ̃ and noise injection (Alg. 1, Sec. 3.1).

Each identity is checked exactly by enumerating the joint masks of several independent draws
(``2^(copies·d)`` of them) with :func:`dropcheck.exact.replicated_expectation`: the mean and
covariance of ``Σ_j c_j ∇_W ℓ(F(x, η_j))`` against ``∇ℓ_drop`` and ``Cov(ξ_drop)``.

The public samplers of :mod:`dropcheck.implicit` (``dropout_k_gradient``, ``xi_tilde``,
``noise_injected_gradient``) are checked against the same exact values: their draws, projected
on 3 random directions, must have sample mean and covariance within ``|z| ≤ 5`` standard
errors of the exact ones (:func:`sampled_max_z`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from dropcheck.verification._common import fmt, random_inputs, random_mlp, rel_err
from dropcheck.verification._registry import Context, Measurement, claim

import dropcheck as dc
import dropcheck.covariance as cv
import dropcheck.implicit as im
from dropcheck.exact import loss_gradients, replicated_expectation

# Joint enumerations sum ≤ 2^12 float64 terms of O(1); the covariance subtracts a shifted mean.
# Rounding stays below ~1e-13 relative; 1e-10 leaves room for conditioning of the subtraction.
_TOL = 1e-10
# Sampled checks of the public API: |z| ≤ 5 per entry (normal tail 5.7e-7; ≤ 9 entries per
# check, so a false alarm ≤ ~1e-5 per claim under the central limit theorem at these N).
_ZMAX = 5.0


def sampled_max_z(
    draws: Any, V: Any, cov: Any, mean: Any = None, known_mean: Any = None
) -> float:
    """Max |z| of the projected sample covariance (and mean) of ``draws`` against exact values.

    ``draws`` ``(N, P)`` are projected on ``V`` ``(P, r)``; ``cov`` ``(r, r)`` is the exact
    covariance of the projections and ``mean`` ``(P,)`` the exact mean (skipped when None).
    ``known_mean`` (e.g. 0.0) centres the covariance on a known mean instead of the sample's.
    """
    proj = np.asarray(draws) @ np.asarray(V)
    est = cv.sample_covariance(proj, mean=known_mean)
    z = np.abs(np.asarray(cv.z_scores(est, np.asarray(cov))))
    worst = float(np.max(z[np.triu_indices(z.shape[-1])]))
    if mean is not None:
        se = proj.std(axis=0, ddof=1) / math.sqrt(proj.shape[0])
        worst = max(worst, float(np.max(np.abs(proj.mean(0) - np.asarray(mean) @ V) / se)))
    return worst


def _api_case(ctx: Context, salt: str) -> tuple[dc.MLP, Any, Any, Any, int]:
    rng = ctx.rng(salt)
    net = random_mlp(rng, [3, 4, 3], activation="tanh", sites=("h1",))
    x, y = random_inputs(rng, 2, 3, 3)
    return net, x, y, rng.standard_normal((net.n_params, 3)), (1500 if ctx.quick else 4000)


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
    rule=f"relative error of mean and covariance ≤ {_TOL:g} (k = 2, 3; exact joint enumeration); "
    f"dropout_k_gradient draws within |z| ≤ {_ZMAX:g}",
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
    net, x, y, V, N = _api_case(ctx, "D1-api")
    q, k = 0.3, 3
    g = im.dropout_k_gradient(net, x, y, q, k=k, rng=ctx.rng("D1-draws"), samples=N)
    z = sampled_max_z(g, V, dc.exact.dropout_k_cov(net, x, y, q, k=k, directions=V),
                      np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0))
    return Measurement(
        f"max rel. error {fmt(worst)}; dc.implicit.dropout_k_gradient sampled max |z| {z:.2f}",
        worst <= _TOL and z <= _ZMAX, {"max_rel_error": worst, "api_max_z": z},
    )


@claim(
    "D2",
    statement="Cov(ξ̃_drop) = 2 Cov(ξ_drop) for ξ̃ the difference of two independent draws",
    source="Sec. 3.1",
    kind="identity",
    rule=f"relative error ≤ {_TOL:g}; mean of ξ̃ is 0; xi_tilde draws within |z| ≤ {_ZMAX:g}",
)
def measure_d2(ctx: Context) -> Measurement:
    """Joint enumeration over two masks."""
    worst = 0.0
    for net, x, y, q in _family(ctx, "D2"):
        cov_ref = np.asarray(dc.exact.gradient_noise_cov(net, x, y, q))
        m, c = combination_moments(net, x, y, q, [1.0, -1.0])
        scale = np.linalg.norm(np.asarray(dc.exact.expected_gradient(net, x, y, q)))
        worst = max(worst, rel_err(c, 2 * cov_ref), float(np.linalg.norm(m)) / scale)
    net, x, y, V, N = _api_case(ctx, "D2-api")
    q = 0.5
    t = np.asarray(im.xi_tilde(net, x, y, q, rng=ctx.rng("D2-draws"), samples=N))
    cov2 = 2 * np.asarray(dc.exact.gradient_noise_cov(net, x, y, q, directions=V))
    z = max(sampled_max_z(t[:, i], V, cov2[i], np.zeros(net.n_params)) for i in range(2))
    return Measurement(
        f"max rel. error {fmt(worst)}; dc.implicit.xi_tilde sampled max |z| {z:.2f}",
        worst <= _TOL and z <= _ZMAX, {"max_rel_error": worst, "api_max_z": z},
    )


@claim(
    "D3",
    statement="DROPOUT_k + sqrt(½(1−1/k)) ξ̃_drop has the covariance Cov(ξ_drop) of DROPOUT_1",
    source="Sec. 3.1",
    kind="identity",
    rule=f"relative error of covariance ≤ {_TOL:g}, mean unchanged (k = 2); "
    f"noise_injected_gradient draws (k = 4) within |z| ≤ {_ZMAX:g}",
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
    net, x, y, V, N = _api_case(ctx, "D3-api")
    q, k = 0.3, 4
    g = im.noise_injected_gradient(net, x, y, q, k=k, rng=ctx.rng("D3-draws"), noise="exact",
                                   samples=N)
    z = sampled_max_z(g, V, dc.exact.dropout_k_cov(net, x, y, q, k=1, directions=V),
                      np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0))
    return Measurement(
        f"max rel. error {fmt(worst)}; dc.implicit.noise_injected_gradient sampled max |z| "
        f"{z:.2f}",
        worst <= _TOL and z <= _ZMAX, {"max_rel_error": worst, "api_max_z": z},
    )
