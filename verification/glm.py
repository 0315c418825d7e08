"""Claims W1–W2: dropout in GLMs as adaptive regularization (Wager, Wang & Liang 2013).

Softmax and logistic regression (:class:`dropcheck.Linear`, cross-entropy) with input dropout.
W1 checks the identities against exact enumeration: ``R_drop`` does not depend on the label (it
is ``E[A(z̃)] − A(z)``, :func:`dropcheck.glm.unlabeled_regularizer`); Wager's quadratic
(delta-method) regularizer equals ``strength·R_approx`` of the linear model and, summed over the
data, the Fisher-scaled ridge (logistic: ``δ/2 βᵀ diag(XᵀVX) β``, written out here in numpy as an
independent oracle).  W2 measures the error of the quadratic regularizer against exact
``R_drop`` as the weight scale ``s`` shrinks: it is a second-order expansion, so its relative
error must vanish, at least linearly in ``s`` (the third-order term, ``∝ E[η³]``) and
quadratically at ``q = ½`` where ``E[η³] = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.mutants import Mutant, swap

import dropcheck as dc
from dropcheck import glm, plots

# Exact sums over ≤ 2^8 masks of O(1) log-partition values against closed forms in float64:
# rounding ≲ 2^8·1e-16 absolute; R_drop ≳ 1e-3 at unit scale, so 1e-11 relative is loose enough.
_TOL = 1e-11
_QS = (0.2, 0.5, 0.8)
# W2 pass band: a second-order expansion leaves a relative error O(s) (third order, E[η³] ≠ 0)
# or O(s²) (q = ½).  Slopes are fitted on s ∈ [0.03, 0.3]; a wrong constant or a missing
# weight makes the relative error tend to a nonzero constant, slope ≈ 0.
_MIN_SLOPE = 0.8
_MIN_SLOPE_HALF = 1.6


def _pooled(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(np.abs(a - b)) / np.sum(np.abs(b)))


def _logistic_ridge(beta: np.ndarray, b: float, X: np.ndarray, q: float) -> float:
    """Wager et al.'s Fisher-scaled ridge for logistic regression: δ/2 βᵀ diag(XᵀVX) β."""
    p = 1.0 / (1.0 + np.exp(-(X @ beta + b)))
    v = p * (1 - p)
    return 0.5 * q / (1 - q) * float(np.sum(beta**2 * ((X**2).T @ v)))


@claim(
    "W1",
    statement="GLM input dropout (softmax/logistic regression): R_drop = E[A(z̃)] − A(z) for every "
    "label (E[z̃_y] = z_y); Wager's quadratic regularizer ½⟨∇²A(z), Cov z̃⟩ = strength·R_approx "
    "= the Fisher-scaled ridge δ/2 βᵀdiag(XᵀVX)β",
    source="Wager, Wang & Liang 2013 (NeurIPS): GLM dropout as adaptive regularization",
    kind="identity",
    rule=f"max relative error ≤ {_TOL:g}: exact R_drop over every label vs the unlabeled form; "
    "quadratic vs strength·R_approx; summed quadratic vs Fisher ridge (and vs the logistic "
    "formula for c = 2)",
)
def measure_w1(ctx: Context) -> Measurement:
    """Label independence, delta method = R_approx = Fisher ridge, on random GLMs."""
    rng = ctx.rng("W1")
    reps = 1 if ctx.quick else 4
    err = {"label": 0.0, "r_approx": 0.0, "fisher_ridge": 0.0, "logistic": 0.0}
    for _ in range(reps):
        for c, d in ((2, 6), (3, 8), (5, 7)):
            for q in _QS:
                m = dc.Linear.random(d, c, rng=rng, seed=None)
                x = rng.standard_normal((6, d))
                unl = np.asarray(glm.unlabeled_regularizer(m, x, q))
                for y in range(c):
                    r = np.asarray(dc.exact.explicit_regularizer(m, x, np.full(6, y), q))
                    err["label"] = max(err["label"], float(np.max(np.abs(r - unl) / np.abs(r))))
                quad = np.asarray(glm.quadratic_regularizer(m, x, q))
                ra = dc.explicit.strength(q) * np.asarray(
                    dc.explicit.r_approx(m, x, np.zeros(6, dtype=int)))
                err["r_approx"] = max(err["r_approx"], float(np.max(np.abs(quad - ra) / ra)))
                fr = float(glm.fisher_ridge(m, x, q))
                err["fisher_ridge"] = max(err["fisher_ridge"], abs(fr - quad.sum()) / fr)
        beta = rng.standard_normal(6)
        X = rng.standard_normal((10, 6))
        for q in _QS:
            m = dc.Linear(np.stack([np.zeros(6), beta]), np.array([0.0, 0.3]))
            fr = float(glm.fisher_ridge(m, X, q))
            err["logistic"] = max(err["logistic"], abs(fr - _logistic_ridge(beta, 0.3, X, q)) / fr)
    worst = max(err.values())
    return Measurement(
        figure="max rel. error: " + ", ".join(f"{k} {fmt(v)}" for k, v in err.items()),
        passed=worst <= _TOL,
        values={"max_rel_error": err},
        note="Labels never enter: R_drop can be estimated on unlabeled inputs (Wager et al.'s "
        "semi-supervised use).",
    )


@dataclass
class _W2:
    scales: tuple[float, ...]
    err: dict[float, np.ndarray]  # q -> (len(scales), nets) pooled relative error
    nets: int


def _w2(ctx: Context) -> _W2:
    nets = 4 if ctx.quick else 16
    scales = (0.03, 0.1, 0.3, 1.0) if ctx.quick else (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
    err = {q: np.empty((len(scales), nets)) for q in _QS}
    for q in _QS:
        rng = ctx.rng(f"W2-{q}")
        for r in range(nets):
            seed = int(rng.integers(2**31))
            for i, s in enumerate(scales):  # one direction of W per net, scaled
                m = dc.Linear.random(8, 3, seed=seed, scale=s)
                x = np.random.default_rng(seed + 1).standard_normal((6, 8))
                exact = np.asarray(glm.unlabeled_regularizer(m, x, q))
                err[q][i, r] = _pooled(np.asarray(glm.quadratic_regularizer(m, x, q)), exact)
    return _W2(scales, err, nets)


def _slope(res: _W2, q: float) -> float:
    s = np.asarray(res.scales)
    keep = s <= 0.3
    return plots.loglog_slope(s[keep], np.median(res.err[q], axis=1)[keep])


def _draw_w2(res: _W2, path: Path | str) -> Path:
    fig, (ax,) = plots.figure(1, width=5.6, height=4.2, title=(
        "W2: Wager's quadratic regularizer vs exact R_drop\nsoftmax regression d = 8, c = 3, "
        + plots.band_caption(res.nets)))
    s = np.asarray(res.scales, dtype=float)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for i, q in enumerate(_QS):
        plots.band(ax, s, res.err[q], label=f"q = {q:g} (slope {_slope(res, q):.2f})",
                   color=f"C{i}")
    y0 = float(np.median(res.err[0.2][0]))
    plots.guide(ax, s, y0, 1.0, label="slope 1 (third order)")
    plots.guide(ax, s, float(np.median(res.err[0.5][0])), 2.0, label="slope 2 (q = ½)",
                color="0.7")
    plots.style(ax, xlabel="weight scale s (W ~ s·N(0, 1/d))",
                ylabel="pooled relative error |R^q − R_drop| / |R_drop|", logx=True, logy=True,
                xticks=res.scales, legend_loc="upper left")
    return plots.save(fig, path)


@plot("w2", help="W2: relative error of Wager's quadratic regularizer vs the weight scale")
def plot_w2(ctx: Context, path: Path | str) -> Path:
    """Run the W2 sweep and plot it to ``path``."""
    return _draw_w2(_w2(ctx), path)


@claim(
    "W2",
    statement="Wager's quadratic (delta-method) regularizer approximates R_drop of a GLM with "
    "relative error O(s) in the weight scale s (O(s²) at q = ½, where E[η³] = 0)",
    source="Wager, Wang & Liang 2013 (NeurIPS): the second-order (delta-method) approximation",
    kind="approximation",
    rule=f"log-log slope of the median relative error vs s ∈ [0.03, 0.3] ≥ {_MIN_SLOPE:g} for "
    f"q = 0.2, 0.8 and ≥ {_MIN_SLOPE_HALF:g} for q = ½",
)
def measure_w2(ctx: Context) -> Measurement:
    """Relative error of the quadratic regularizer vs weight scale, three q."""
    res = _w2(ctx)
    slopes = {q: _slope(res, q) for q in _QS}
    passed = all(slopes[q] >= (_MIN_SLOPE_HALF if q == 0.5 else _MIN_SLOPE) for q in _QS)
    at1 = {q: float(np.median(res.err[q][list(res.scales).index(1.0)])) for q in _QS}
    plots_ = []
    path = ctx.plot_path("w2_wager_error")
    if path is not None:
        plots_.append(str(_draw_w2(res, path)))
    return Measurement(
        figure="slopes " + ", ".join(f"q={q:g}: {v:.2f}" for q, v in slopes.items())
        + "; median rel. error at s = 1: " + ", ".join(f"{fmt(v)}" for v in at1.values()),
        passed=passed,
        values={"slopes": slopes, "scales": res.scales,
                "median_rel_error": {q: np.median(e, axis=1) for q, e in res.err.items()},
                "nets": res.nets},
        plots=plots_,
    )


def _identity_fisher(model: dc.Linear, x: object) -> object:
    """The wrong Fisher weights: ∇²A(z) replaced by the identity (plain ridge)."""
    h = _REAL_HESSIAN(model, x)
    xp = model.xp
    return xp.zeros_like(h) + xp.eye(h.shape[-1], dtype=h.dtype)


_REAL_HESSIAN = glm.natural_hessian

MUTANTS = [
    Mutant(
        name="wager_no_fisher_weights",
        description="Wager's quadratic regularizer without the Fisher weights ∇²A(z) (plain ridge)",
        claims=("W1", "W2"),
        patch=lambda: swap(glm, "natural_hessian", _identity_fisher),
    ),
]
