"""Claims M1, K1: explicit regularizers that are exact (Mianjy et al. 2018; Arora et al. 2021).

M1: a one-hidden-layer linear net ``x ↦ U Vᵀ x``, squared loss, dropout on the hidden units,
inputs with ``E[xxᵀ] = I`` (the ``d1`` inputs ``√d1 e_j``, uniformly): the exact ``R_drop``
averaged over the inputs equals ``½ (q/(1−q)) Σ_i ‖u_i‖²‖v_i‖²``; at the equalized
factorization of ``M = UVᵀ`` it equals ``½ (q/(1−q)) ‖M‖_*²/r``; local search over all width-r
factorizations of ``M`` (``U₀G``, ``V₀G^{-T}``, BFGS over ``G`` from random starts) never goes
below that value.  K1: dropout only at the last hidden layer of a deep net, squared loss: the
explicit form ``½ (q/(1−q)) Σ_j ‖W_{L,:,j}‖² h_j²`` equals the exact ``R_drop`` for every input;
dropping an earlier layer as well breaks it (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.mutants import Mutant, swap
from scipy.optimize import minimize

import dropcheck as dc
from dropcheck import linear_nets, plots

# Enumerations of ≤ 2^6 masks of O(1) squared losses and closed forms built from norms and an
# SVD in float64: ≲ 1e-14 relative.  Local search: BFGS stops at gradient tolerance, so its
# value is above the minimum by O(tol); "never below" allows only rounding, 1e-12 relative.
_TOL = 1e-11
_BELOW_TOL = 1e-12
_Q = 0.3


def _objective(g: np.ndarray, U0: np.ndarray, V0: np.ndarray) -> tuple[float, np.ndarray]:
    """``Σ_i ‖(U₀G)_i‖² ‖(V₀G^{-T})_i‖²`` (times the strength) and its gradient in ``G``.

    With ``A = U₀ᵀU₀``, ``B = V₀ᵀV₀``, ``H = G^{-T}``, ``a = diag(GᵀAG)``, ``b = diag(HᵀBH)``:
    ``∇ = 2AG diag(b) − 2 H diag(a) Hᵀ B H`` (from ``dH = −H dGᵀ H``); checked against
    central differences in ``tests/test_beyond.py``.
    """
    r = U0.shape[1]
    G = g.reshape(r, r)
    H = np.linalg.inv(G).T
    A, B = U0.T @ U0, V0.T @ V0
    a, b = np.diag(G.T @ A @ G), np.diag(H.T @ B @ H)
    c = 0.5 * _Q / (1 - _Q)
    grad = 2 * A @ G * b[None, :] - 2 * (H * a[None, :]) @ H.T @ B @ H
    return c * float(a @ b), c * grad.ravel()


@dataclass
class _M1:
    identity: float = 0.0
    equalized: float = 0.0
    product: float = 0.0
    below: float = 0.0  # max (bound − local-search value)/bound
    ratios: list[np.ndarray] = field(default_factory=list)  # per start: value/bound per iter
    gaps: list[float] = field(default_factory=list)  # final value/bound − 1


def _m1(ctx: Context) -> _M1:
    rng = ctx.rng("M1")
    res = _M1()
    starts = 3 if ctx.quick else 12
    for d1, d2, r in ((4, 3, 2), (5, 4, 3), (6, 5, 4)):
        U, V = rng.standard_normal((d2, r)), rng.standard_normal((d1, r))
        X = np.asarray(linear_nets.isotropic_inputs(d1))
        Y = rng.standard_normal((d1, d2))
        exact = float(np.mean(dc.exact.explicit_regularizer(linear_nets.as_mlp(U, V), X, Y, _Q)))
        closed = float(linear_nets.dropout_regularizer(U, V, _Q))
        res.identity = max(res.identity, abs(exact - closed) / closed)
        M = U @ V.T
        bound = float(linear_nets.min_regularizer(M, r, _Q))
        Ue, Ve = (np.asarray(a) for a in linear_nets.equalize(U, V))
        res.product = max(res.product, float(np.max(np.abs(Ue @ Ve.T - M)) / np.max(np.abs(M))))
        at_eq = float(np.mean(dc.exact.explicit_regularizer(linear_nets.as_mlp(Ue, Ve), X, Y,
                                                             _Q)))
        res.equalized = max(res.equalized, abs(at_eq - bound) / bound)
        for _ in range(starts):
            g0 = rng.standard_normal(r * r)
            trail = [_objective(g0, U, V)[0] / bound]
            out = minimize(_objective, g0, args=(U, V), jac=True, method="BFGS",
                           callback=lambda gk, U=U, V=V, b=bound, t=trail: t.append(
                               _objective(gk, U, V)[0] / b),
                           options={"maxiter": 500, "gtol": 1e-10})
            trail.append(out.fun / bound)
            res.ratios.append(np.asarray(trail))
            res.gaps.append(float(out.fun / bound - 1))
            res.below = max(res.below, float(np.min(trail)) * -1 + 1)
    return res


def _draw(res: _M1, path: Path | str) -> Path:
    fig, (ax,) = plots.figure(1, width=6.0, height=4.2, title=(
        "M1: local search over factorizations UVᵀ = M of the dropout regularizer\n"
        f"(r = 2, 3, 4; {len(res.ratios)} random starts; BFGS over G in U₀G, V₀G⁻ᵀ)"))
    floor = 1e-15  # float64 rounding of the ratio: values at or below it are "at the bound"
    for k, tr in enumerate(res.ratios):
        ax.plot(np.arange(tr.size), np.maximum(tr - 1, floor), lw=1, alpha=0.7,
                color=f"C{k % 10}")
    lowest = min(float(np.min(tr)) for tr in res.ratios) - 1
    ax.axhline(floor, color="k", lw=0.8, ls=":", label=f"float64 rounding (lowest value over all "
               f"iterates: bound·(1 {lowest:+.1e}))")
    plots.style(ax, xlabel="BFGS iteration",
                ylabel="R(U, V) / (½ q/(1−q) ‖M‖*² / r) − 1", logy=True,
                title="each line one random start; the bound is reached, never crossed",
                legend_loc="upper right")
    return plots.save(fig, path)


@plot("m1", help="M1: local search of the dropout regularizer over factorizations of M")
def plot_m1(ctx: Context, path: Path | str) -> Path:
    """Run the M1 local search and plot the trajectories to ``path``."""
    return _draw(_m1(ctx), path)


@claim(
    "M1",
    statement="One hidden linear layer, squared loss, E[xxᵀ] = I: R_drop = ½(q/(1−q)) Σ_i "
    "‖u_i‖²‖v_i‖²; over factorizations of M = UVᵀ of width r its minimum ½(q/(1−q))‖M‖*²/r is "
    "attained at the equalized factorization, and local search never goes below it",
    source="Mianjy, Arora & Vidal 2018 (ICML), On the Implicit Bias of Dropout (with ½‖·‖²)",
    kind="identity",
    rule=f"rel. errors ≤ {_TOL:g} (exact R_drop vs closed form; at the equalized factorization vs "
    f"‖M‖*²/r; UVᵀ preserved); every local-search value ≥ bound·(1 − {_BELOW_TOL:g})",
)
def measure_m1(ctx: Context) -> Measurement:
    """Identity, the equalized minimum, and local search from random factorizations."""
    res = _m1(ctx)
    passed = max(res.identity, res.equalized, res.product) <= _TOL and res.below <= _BELOW_TOL
    plots_ = []
    path = ctx.plot_path("m1_factorizations")
    if path is not None:
        plots_.append(str(_draw(res, path)))
    return Measurement(
        figure=f"identity {fmt(res.identity)}, equalized vs ‖M‖*²/r {fmt(res.equalized)}; "
        f"{len(res.gaps)} local searches end between bound·(1 {min(res.gaps):+.1e}) and "
        f"bound·(1 {max(res.gaps):+.1e}); lowest iterate bound·(1 {-res.below:+.1e})",
        passed=passed,
        values={"identity_rel_error": res.identity, "equalized_rel_error": res.equalized,
                "product_rel_error": res.product, "max_below_bound": res.below,
                "final_gaps": res.gaps},
        plots=plots_,
    )


@claim(
    "K1",
    statement="Dropout only at the last hidden layer, squared loss: R_drop = ½(q/(1−q)) Σ_j "
    "‖W_{L,:,j}‖² h_j(x)² exactly, for any depth and activation below it",
    source="Arora, Bartlett, Mianjy & Srebro 2021 (ICML), Dropout: Explicit Forms and Capacity "
    "Control",
    kind="identity",
    rule=f"max relative error ≤ {_TOL:g} over depths 1–4, tanh/relu/sigmoid/gelu, several q; "
    "the error when an earlier layer drops too is reported",
)
def measure_k1(ctx: Context) -> Measurement:
    """Exact R_drop against the explicit form; then with an extra dropping layer."""
    rng = ctx.rng("K1")
    worst, broken = 0.0, []
    acts = ("tanh", "relu") if ctx.quick else ("tanh", "relu", "sigmoid", "gelu")
    for depth in (1, 2, 3, 4):
        for act in acts:
            for q in (0.2, 0.5):
                sizes = [4] + [5] * depth + [3]
                last = f"h{depth}"
                net = dc.MLP.random(sizes, act, sites=(last,), loss="squared", rng=rng,
                                    seed=None)
                x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
                r = np.asarray(dc.exact.explicit_regularizer(net, x, y, q))
                k = np.asarray(linear_nets.last_layer_regularizer(net, x, q))
                worst = max(worst, float(np.max(np.abs(r - k) / np.abs(r))))
                if depth >= 2:  # also drop the layer below: the form is then not exact
                    both = dc.MLP(
                        [net.params[f"W{i}"] for i in range(1, depth + 2)],
                        [net.params[f"b{i}"] for i in range(1, depth + 2)],
                        act, (f"h{depth - 1}", last), "squared")
                    r2 = np.asarray(dc.exact.explicit_regularizer(both, x, y, q))
                    broken.append(float(np.sum(np.abs(r2 - k)) / np.sum(np.abs(r2))))
    return Measurement(
        figure=f"max rel. error {fmt(worst)}; with the layer below dropping too: median pooled "
        f"rel. error {fmt(float(np.median(broken)))}",
        passed=worst <= _TOL,
        values={"max_rel_error": worst, "two_layers_median_rel_error": float(np.median(broken))},
    )


def _min_with_r(M: object, r: int, q: float) -> object:
    return _REAL_MIN(M, r, q) * r * r  # ‖M‖*²·r instead of ‖M‖*²/r


def _last_layer_q(model: dc.MLP, x: object, q: float) -> object:
    return _REAL_LAST(model, x, q) * (1.0 - q)  # q instead of q/(1−q)


_REAL_MIN = linear_nets.min_regularizer
_REAL_LAST = linear_nets.last_layer_regularizer

MUTANTS = [
    Mutant(
        name="mianjy_factor_r",
        description="minimum over factorizations with factor r instead of 1/r",
        claims=("M1",),
        patch=lambda: swap(linear_nets, "min_regularizer", _min_with_r),
    ),
    Mutant(
        name="last_layer_strength_q",
        description="last-layer explicit regularizer with q instead of q/(1−q)",
        claims=("K1",),
        patch=lambda: swap(linear_nets, "last_layer_regularizer", _last_layer_q),
    ),
]
