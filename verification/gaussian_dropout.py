"""Claims G1–G2: Gaussian dropout (Srivastava et al. 2014 §10; Kingma, Salimans & Welling 2015).

G1 (identities): ``ε ~ N(0, q/(1−q))`` has the first two moments of the paper's ``η`` (checked
by Gauss–Hermite, exact for these polynomials), so ``R_approx`` — built from ``E[δδᵀ]`` only — is
the same, and for least squares with a linear model the whole expected loss is the same ridge:
Gaussian ``R`` by quadrature (exact for a quadratic) against Bernoulli ``R_drop`` by exact
enumeration.  G2 (approximation): for softmax regression the two regularizers differ at third
order, ``R_drop − R_gauss ≈ (E[η³]/6) Σ_k κ₃^p(W_{:,k}x_k)``; measured against the weight scale,
with the quadrature error of every Gaussian value estimated (``K`` vs ``2K`` nodes) and required
far below the measured gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.mutants import Mutant, swap

import dropcheck as dc
from dropcheck import gaussian_dropout, plots
from dropcheck.quadrature import hermite_rule

# Gauss–Hermite with K ≥ 3 nodes integrates polynomials of degree ≤ 5 exactly; the only error
# is float64 rounding of sums of O(1) terms (≲ 1e-15).  Bernoulli R_drop enumerates ≤ 2^8 masks.
_TOL = 1e-12
_QS = (0.2, 0.5, 0.8)
_NODES = 10  # K^3 points per example; the K vs 2K estimate is checked against the gap
# G2 rules.  q ≠ ½: the third-order term must explain the gap at the smallest scale to 5%
# (the remainder is fourth order, relative size O(s): measured ≈ 0.3–1% at s = 0.03).  q = ½:
# the gap is fourth order, so its size relative to R falls at least like s^1.6 (expected s²).
# Quadrature: estimated error of each R_gauss ≤ 1% of the gap it enters.
_T3_TOL = 0.05
_HALF_SLOPE = 1.6
_QUAD_FRAC = 1e-2


def _eta_moment(k: int, q: float) -> float:
    return q * (-1.0) ** k + (1 - q) * (q / (1 - q)) ** k


@claim(
    "G1",
    statement="Gaussian dropout N(1, q/(1−q)) has the first two moments of Bernoulli inverted "
    "dropout, hence the same R_approx and, for least squares with a linear model, the same "
    "expected loss (ridge) exactly",
    source="Srivastava et al. 2014 (JMLR) Sec. 10; Kingma, Salimans & Welling 2015",
    kind="identity",
    rule=f"max relative error ≤ {_TOL:g}: E[ε], E[ε²] vs E[η], E[η²]; Gaussian R (quadrature) "
    "vs exact Bernoulli R_drop of least squares, several q and shapes",
)
def measure_g1(ctx: Context) -> Measurement:
    """Moments by quadrature, then the least-squares expected loss against enumeration."""
    t, w = (np.asarray(a) for a in hermite_rule(8))
    mom = 0.0
    for q in _QS:
        eps = np.sqrt(gaussian_dropout.variance(q)) * t
        mom = max(mom, abs(float(w @ eps)))
        e2 = float(w @ eps**2)
        mom = max(mom, abs(e2 - _eta_moment(2, q)) / _eta_moment(2, q))
    rng = ctx.rng("G1")
    ridge = 0.0
    for d, c in ((4, 1), (6, 2), (8, 3)):
        for q in _QS:
            m = dc.Linear.random(d, c, rng=rng, seed=None, loss="squared")
            x, y = rng.standard_normal((5, d)), rng.standard_normal((5, c))
            rg = np.asarray(gaussian_dropout.explicit_regularizer(m, x, y, q, nodes=3))
            rb = np.asarray(dc.exact.explicit_regularizer(m, x, y, q))
            ridge = max(ridge, float(np.max(np.abs(rg - rb) / np.abs(rb))))
    third = {q: (0.0, _eta_moment(3, q)) for q in _QS}
    return Measurement(
        figure=f"moments max rel. error {fmt(mom)}; least-squares R_gauss vs R_drop {fmt(ridge)}",
        passed=max(mom, ridge) <= _TOL,
        values={"moments_max_error": mom, "ridge_max_rel_error": ridge,
                "third_moments_gauss_vs_bernoulli": third},
        note="Third moments differ: E[ε³] = 0, E[η³] = q(2q−1)/(1−q)² ("
        + ", ".join(f"q={q:g}: {v[1]:.3g}" for q, v in third.items()) + "): see G2.",
    )


@dataclass
class _G2:
    scales: tuple[float, ...]
    rel_gap: dict[float, np.ndarray]  # q -> (scales, nets) pooled |R_drop − R_gauss| / |R_drop|
    rel_t3: dict[float, np.ndarray]  # q -> (scales, nets) pooled |gap − T3| / |gap|
    quad: float  # max estimated quadrature error / |gap|
    nets: int
    mlp_scales: tuple[float, ...] = ()
    mlp_gap: dict[float, np.ndarray] | None = None  # q -> (mlp_scales, nets) pooled relative gap
    mlp_quad: float = 0.0
    mlp_taylor: dict[float, np.ndarray] | None = None  # |R_gauss − R_taylor| / |R_drop − R_taylor|


def _g2(ctx: Context) -> _G2:
    nets = 3 if ctx.quick else 12
    # below s ≈ 0.02 the q = ½ gap (~1e-5·R) nears float64 rounding of the quadrature sums
    scales = (0.03, 0.1, 0.3) if ctx.quick else (0.02, 0.03, 0.05, 0.1, 0.2, 0.3)
    rel_gap = {q: np.empty((len(scales), nets)) for q in _QS}
    rel_t3 = {q: np.empty((len(scales), nets)) for q in _QS}
    quad = 0.0
    for q in _QS:
        rng = ctx.rng(f"G2-{q}")
        for r in range(nets):
            seed = int(rng.integers(2**31))
            x = np.random.default_rng(seed + 1).standard_normal((5, 6))
            y = np.zeros(5, dtype=int)
            for i, s in enumerate(scales):
                m = dc.Linear.random(6, 3, seed=seed, scale=s)
                rb = np.asarray(dc.exact.explicit_regularizer(m, x, y, q))
                rg, err = (np.asarray(a) for a in gaussian_dropout.explicit_regularizer(
                    m, x, y, q, nodes=_NODES, error=True))
                gap = rb - rg
                t3 = np.asarray(gaussian_dropout.third_order_gap(m, x, q))
                rel_gap[q][i, r] = np.sum(np.abs(gap)) / np.sum(np.abs(rb))
                rel_t3[q][i, r] = np.sum(np.abs(gap - t3)) / np.sum(np.abs(gap))
                quad = max(quad, float(np.max(err / np.abs(gap))))
    mlp_scales, mlp_gap, mlp_quad, mlp_taylor = _g2_mlp(ctx)
    return _G2(scales, rel_gap, rel_t3, quad, nets, mlp_scales, mlp_gap, mlp_quad, mlp_taylor)


_MLP = [4, 4, 4, 3]  # tanh after the dropped layer h1 (width 4): the logits are not Gaussian
_MLP_NODES = 10  # 10^4 points per example (8 in quick mode); error estimated with 2 more nodes


def _g2_mlp(ctx: Context) -> tuple[tuple[float, ...], dict[float, np.ndarray], float,
                                    dict[float, np.ndarray]]:
    """The gap for a small tanh MLP (reported): Gauss–Hermite over the 4 noise coordinates."""
    nets = 1 if ctx.quick else 8
    nodes = 8 if ctx.quick else _MLP_NODES
    scales = (0.5, 1.0) if ctx.quick else (0.2, 0.3, 0.5, 1.0)
    gap = {q: np.empty((len(scales), nets)) for q in _QS}
    closer = {q: np.empty((len(scales), nets)) for q in _QS}
    quad = 0.0
    for q in _QS:
        rng = ctx.rng(f"G2-mlp-{q}")
        for r in range(nets):
            seed = int(rng.integers(2**31))
            x = np.random.default_rng(seed + 1).standard_normal((6, _MLP[0]))
            y = np.random.default_rng(seed + 2).integers(0, _MLP[-1], 6)
            for i, s in enumerate(scales):
                net = dc.MLP.random(_MLP, "tanh", sites=("h1",), seed=seed, scale=s,
                                    bias_scale=0.1 * s)
                rb = np.asarray(dc.exact.explicit_regularizer(net, x, y, q))
                eg, err = (np.asarray(a) for a in gaussian_dropout.noise_expected_loss(
                    net, x, y, q, nodes=nodes, error=True))
                g = rb - (eg - np.asarray(net.loss_value(x, y)))
                gap[q][i, r] = np.sum(np.abs(g)) / np.sum(np.abs(rb))
                quad = max(quad, float(np.max(err / np.abs(g))))
                rt = np.asarray(dc.explicit.taylor(net, x, y, q))
                rg = rb - g
                closer[q][i, r] = np.sum(np.abs(rg - rt)) / np.sum(np.abs(rb - rt))
    return scales, gap, quad, closer


def _half_slope(res: _G2) -> float:
    return plots.loglog_slope(res.scales, np.median(res.rel_gap[0.5], axis=1))


def _count(k: int) -> str:
    return f"{k} net" if k == 1 else f"{k} nets"


def _draw(res: _G2, path: Path | str) -> Path:
    fig, (ax1, ax2, ax3) = plots.figure(3, width=4.0, title=(
        "G2: Bernoulli vs Gaussian dropout; left, middle: softmax regression d = 6, c = 3; "
        f"right: tanh MLP {_MLP}, dropout at h1\n"
        + plots.band_caption(res.nets) + f" (right: {_count(res.mlp_gap[_QS[0]].shape[1])})"))
    s = np.asarray(res.scales, dtype=float)
    for i, q in enumerate(_QS):
        plots.band(ax1, s, res.rel_gap[q], label=f"q = {q:g}", color=f"C{i}")
        if q != 0.5:
            plots.band(ax2, s, res.rel_t3[q], label=f"q = {q:g}", color=f"C{i}")
    plots.guide(ax1, s, float(np.median(res.rel_gap[0.2][0])), 1.0, label="slope 1")
    plots.guide(ax1, s, float(np.median(res.rel_gap[0.5][0])), 2.0, label="slope 2",
                color="0.7")
    plots.style(ax1, xlabel="weight scale s", ylabel="|R_drop − R_gauss| / |R_drop| (pooled)",
                title="relative gap (q = ½: E[η³] = 0, fourth order)", logx=True, logy=True,
                xticks=res.scales, legend_loc="upper left")
    plots.style(ax2, xlabel="weight scale s",
                ylabel="|gap − (E[η³]/6) Σ κ₃| / |gap| (pooled)",
                title="what the third-order term leaves unexplained", logx=True, logy=True,
                xticks=res.scales, legend_loc="upper left")
    sm = np.asarray(res.mlp_scales, dtype=float)
    for i, q in enumerate(_QS):
        plots.band(ax3, sm, res.mlp_gap[q], label=f"q = {q:g}", color=f"C{i}")
    plots.style(ax3, xlabel="weight scale s", ylabel="|R_drop − R_gauss| / |R_drop| (pooled)",
                title="tanh MLP (Gauss–Hermite over 4 noise axes)", logx=True,
                logy=True, xticks=res.mlp_scales, legend_loc="lower right")
    return plots.save(fig, path)


@plot("g2", help="G2: relative gap between Bernoulli and Gaussian dropout regularizers vs scale")
def plot_g2(ctx: Context, path: Path | str) -> Path:
    """Run the G2 sweep and plot it to ``path``."""
    return _draw(_g2(ctx), path)


@claim(
    "G2",
    statement="For cross-entropy, R_drop (Bernoulli) and R_gauss (Gaussian dropout) differ at "
    "third order: R_drop − R_gauss ≈ (E[η³]/6) Σ_k κ₃^p(W_{:,k} x_k), relative size O(s); at "
    "q = ½ (E[η³] = 0) the gap is fourth order",
    source="Srivastava et al. 2014 Sec. 10; Kingma et al. 2015; third-order term derived here",
    kind="approximation",
    rule=f"q = 0.2, 0.8: the third-order term explains the gap at the smallest s to "
    f"{_T3_TOL:g}; q = ½: slope of the relative gap vs s ≥ {_HALF_SLOPE:g}; quadrature error "
    f"estimate ≤ {_QUAD_FRAC:g}·|gap| everywhere",
)
def measure_g2(ctx: Context) -> Measurement:
    """The Bernoulli–Gaussian gap against the third-order prediction, three q."""
    res = _g2(ctx)
    unexplained = {q: float(np.median(res.rel_t3[q][0])) for q in _QS if q != 0.5}
    half = _half_slope(res)
    passed = (all(v <= _T3_TOL for v in unexplained.values()) and half >= _HALF_SLOPE
              and res.quad <= _QUAD_FRAC)
    at = {q: float(np.median(res.rel_gap[q][-1])) for q in _QS}
    mlp_at = {q: float(np.median(res.mlp_gap[q][-1])) for q in _QS}
    plots_ = []
    path = ctx.plot_path("g2_gaussian_vs_bernoulli")
    if path is not None:
        plots_.append(str(_draw(res, path)))
    return Measurement(
        figure=f"relative gap at s = {res.scales[-1]:g}: "
        + ", ".join(f"q={q:g} {fmt(v)}" for q, v in at.items())
        + "; unexplained by third order at s = " + f"{res.scales[0]:g}: "
        + ", ".join(f"{fmt(v)}" for v in unexplained.values())
        + f"; q = ½ slope {half:.2f}; quadrature ≤ {fmt(res.quad)}·gap; tanh MLP at s = 1: "
        + ", ".join(f"q={q:g} {fmt(v)}" for q, v in mlp_at.items()),
        passed=passed,
        values={"scales": res.scales, "unexplained_at_smallest": unexplained,
                "half_slope": half, "quadrature_over_gap": res.quad,
                "median_rel_gap": {q: np.median(v, axis=1) for q, v in res.rel_gap.items()},
                "nets": res.nets, "mlp_scales": res.mlp_scales,
                "mlp_median_rel_gap": {q: np.median(v, axis=1) for q, v in res.mlp_gap.items()},
                "mlp_quadrature_over_gap": res.mlp_quad,
                "mlp_gauss_vs_bernoulli_distance_to_taylor": {
                    q: np.median(v, axis=1) for q, v in res.mlp_taylor.items()}},
        note=f"Reported, not judged: a tanh MLP {_MLP} with dropout at h1 (width 4; the logits "
        f"are not Gaussian), Gauss–Hermite over the 4 noise coordinates "
        f"(estimated error ≤ {fmt(res.mlp_quad)}·gap): relative gap at s = "
        f"{res.mlp_scales[-1]:g} " + ", ".join(f"q={q:g} {fmt(v)}" for q, v in mlp_at.items())
        + ". Distance to the second-order term, |R_gauss − R_taylor| / |R_drop − R_taylor|, "
        f"at s = {res.mlp_scales[0]:g} / {res.mlp_scales[-1]:g}: " + ", ".join(
            f"q={q:g} {fmt(float(np.median(v[0])))} / {fmt(float(np.median(v[-1])))}"
            for q, v in res.mlp_taylor.items())
        + " (Gaussian dropout is nearer R_taylor at small s unless q = ½, where Bernoulli's "
        "third moment vanishes and its fourth, 1, is below the Gaussian's 3α² = 3).",
        plots=plots_,
    )


MUTANTS = [
    Mutant(
        name="gaussian_variance_q",
        description="Gaussian dropout variance q instead of q/(1−q)",
        claims=("G1",),
        patch=lambda: swap(gaussian_dropout, "variance", lambda q: q),
    ),
    Mutant(
        name="bernoulli_third_moment_sign",
        description="third moment of η with the wrong sign, q(1−2q)/(1−q)²",
        claims=("G2",),
        patch=lambda: swap(gaussian_dropout, "bernoulli_third_moment",
                           lambda q: -q * (2 * q - 1) / (1 - q) ** 2),
    ),
]
