"""Claim B1: sigmoid ensembles and the NWGM (Baldi & Sadowski 2013).

For one sigmoid unit with dropout on its inputs, the normalized weighted geometric mean of the
``2^d`` sub-network outputs equals the deterministic unit with weight-scaled input, ``σ(E[s])``
(:func:`dropcheck.ensembles.sigmoid_ensemble` by enumeration against
:func:`dropcheck.classical.weight_scaled_predict`).  Where every sub-network output is ``≤ ½``
(``≥ ½``) their Ky Fan bounds ``G ≤ NWGM ≤ E`` (``E ≤ NWGM ≤ 1 − G'``) must hold.  Reported:
the second-order estimate of ``E − NWGM`` and, in deep sigmoid networks, the error of the
deterministic recursion (weight scaling at every layer) against the true ensemble mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.mutants import Mutant, swap

import dropcheck as dc
from dropcheck import classical, ensembles, fast_dropout, plots

# log G = Σ_m P(m) log σ(s_m) sums ≤ 2^10 terms of O(1): rounding ≲ 1e-15 relative; NWGM and
# σ(E s) are then equal to ~1e-15.  Orderings are checked with the same slack.
_TOL = 1e-12
_Q = 0.5
_DEPTHS = (1, 2, 3, 4)
_WIDTH = 3


def _units(ctx: Context, regime: str) -> tuple[list, list]:
    """Random units and inputs; ``low``/``high`` shift b so every sub-network output is ≤/≥ ½."""
    rng = ctx.rng(f"B1-{regime}")
    out_u, out_x = [], []
    for _ in range(4 if ctx.quick else 16):
        d = int(rng.integers(4, 9))
        w = rng.standard_normal(d) * 1.5 / np.sqrt(d)
        x = rng.standard_normal((4, d))
        reach = np.max(np.sum(np.abs(x * w), axis=1)) / (1 - _Q)  # max |s − b| over masks
        b = {"mixed": rng.uniform(-1, 1), "low": -reach - rng.uniform(0, 1),
             "high": reach + rng.uniform(0, 1)}[regime]
        out_u.append(fast_dropout.sigmoid_unit(w, b))
        out_x.append(x)
    return out_u, out_x


@dataclass
class _B1:
    identity: float
    bounds_violation: float
    tightness: np.ndarray  # (E − NWGM)/(E − G) (≤ ½ regime) and mirrored: where in the bound
    est: np.ndarray  # (m, 2): (E − NWGM, second-order estimate) over all units and inputs
    depth_err: np.ndarray  # (len(depths), nets·n) |E − weight-scaled| of the output probability
    nets: int


def _experiment(ctx: Context) -> _B1:
    identity, viol, est, tight = 0.0, 0.0, [], []
    for regime in ("mixed", "low", "high"):
        for unit, x in zip(*_units(ctx, regime), strict=True):
            ens = ensembles.sigmoid_ensemble(unit, x, _Q)
            ws = np.asarray(classical.weight_scaled_predict(unit, x, _Q))[:, 1]
            nw, e = np.asarray(ens.nwgm), np.asarray(ens.mean)
            identity = max(identity, float(np.max(np.abs(nw - ws))))
            g, gc = np.asarray(ens.geo), np.asarray(ens.geo_complement)
            if regime == "low":
                # every sub-network output ≤ ½ (probabilities sum to 1 up to rounding)
                assert np.all(np.asarray(ens.below_half) >= 1 - 1e-12)
                viol = max(viol, float(np.max(g - nw)), float(np.max(nw - e)))
                tight.append((e - nw) / (e - g))
            elif regime == "high":
                assert np.all(np.asarray(ens.above_half) >= 1 - 1e-12)
                viol = max(viol, float(np.max(e - nw)), float(np.max(nw - (1 - gc))))
                tight.append((nw - e) / (1 - gc - e))
            est.append(np.stack([e - nw, np.asarray(
                ensembles.second_order_gap(ens.mean, ens.var))], axis=1))
    nets, n = (4, 4) if ctx.quick else (16, 8)
    rng = ctx.rng("B1-depth")
    depth_err = np.empty((len(_DEPTHS), nets * n))
    for i, depth in enumerate(_DEPTHS):
        for r in range(nets):
            sizes = [_WIDTH] * (depth + 1) + [2]
            sites = tuple(f"h{k}" for k in range(1, depth + 1))
            net = dc.MLP.random(sizes, "sigmoid", sites=sites, rng=rng, seed=None, scale=2.0)
            x = rng.standard_normal((n, _WIDTH))
            e = np.asarray(ensembles.sigmoid_ensemble(net, x, _Q).mean)
            ws = np.asarray(classical.weight_scaled_predict(net, x, _Q))[:, 1]
            depth_err[i, r * n:(r + 1) * n] = np.abs(e - ws)
    return _B1(identity, viol, np.concatenate(tight), np.concatenate(est), depth_err, nets)


def _draw(res: _B1, path: Path | str) -> Path:
    fig, (ax1, ax2) = plots.figure(2, title=(
        f"B1: sigmoid ensembles (Baldi & Sadowski 2013), q = {_Q:g}\nright: "
        + plots.band_caption(res.depth_err.shape[1], "inputs (random sigmoid MLPs, "
                             "weight scale 2)")))
    a = np.abs(res.est)
    lim = (max(1e-7, float(a[a > 0].min())), float(a.max()) * 1.5)
    ax1.loglog(a[:, 1], a[:, 0], "o", ms=3.5, alpha=0.6, color="C0",
               label="one unit and input (all regimes)")
    ax1.plot(lim, lim, "--", color="0.5", lw=1, label="estimate = truth")
    plots.style(ax1, xlabel="|V(1−2E)/(2E(1−E)−V)| (second-order estimate)",
                ylabel="|E − NWGM| (exact)", title="one sigmoid unit, input dropout",
                legend_loc="upper left")
    ax2.set_yscale("log")
    plots.band(ax2, _DEPTHS, res.depth_err, label="|E[O] − deterministic recursion|", color="C3")
    plots.style(ax2, xlabel="hidden sigmoid layers (dropout at each, width 3)",
                ylabel="absolute error of the output probability",
                title="deep net: ensemble mean vs weight-scaled net",
                xticks=_DEPTHS, legend_loc="lower right")
    return plots.save(fig, path)


@plot("b1", help="B1: E − NWGM vs its second-order estimate; deep recursion error vs depth")
def plot_b1(ctx: Context, path: Path | str) -> Path:
    """Run the B1 experiment and plot it to ``path``."""
    return _draw(_experiment(ctx), path)


@claim(
    "B1",
    statement="One sigmoid unit with input dropout: the normalized weighted geometric mean of all "
    "sub-network outputs equals σ(E[s]) (the weight-scaled unit) exactly; where every output is "
    "≤ ½ (≥ ½), G ≤ NWGM ≤ E (E ≤ NWGM ≤ 1 − G′)",
    source="Baldi & Sadowski 2013 (NeurIPS, Understanding Dropout): NWGM identity and Ky Fan "
    "bounds; 2014 (Artificial Intelligence)",
    kind="identity",
    rule=f"max |NWGM − σ(E s)| ≤ {_TOL:g}; bound violations ≤ {_TOL:g}; the second-order "
    "estimate and the deep-recursion error are reported",
)
def measure_b1(ctx: Context) -> Measurement:
    """The NWGM identity and Ky Fan bounds; estimate and depth errors reported."""
    res = _experiment(ctx)
    nz = np.abs(res.est[:, 0]) > 1e-9
    est_err = float(np.median(np.abs(res.est[nz, 1] - res.est[nz, 0]) / np.abs(res.est[nz, 0])))
    med = np.median(res.depth_err, axis=1)
    plots_ = []
    path = ctx.plot_path("b1_sigmoid_ensembles")
    if path is not None:
        plots_.append(str(_draw(res, path)))
    return Measurement(
        figure=f"identity max |Δ| {fmt(res.identity)}; bound violation "
        f"{fmt(max(res.bounds_violation, 0.0))} ((E − NWGM)/(E − G), 1 = NWGM at G: median "
        f"{float(np.median(res.tightness)):.3f}, min {float(np.min(res.tightness)):.3f}); "
        "second-order estimate median rel. error "
        f"{fmt(est_err)}; recursion error median by depth "
        + "/".join(fmt(float(v)) for v in med),
        passed=res.identity <= _TOL and res.bounds_violation <= _TOL,
        values={"identity_max_abs": res.identity, "bounds_max_violation": res.bounds_violation,
                "ky_fan_fraction_median": float(np.median(res.tightness)),
                "second_order_median_rel_error": est_err, "depths": _DEPTHS,
                "recursion_median_abs_error": med,
                "recursion_max_abs_error": np.max(res.depth_err, axis=1)},
        plots=plots_,
    )


MUTANTS = [
    Mutant(
        name="nwgm_unnormalized",
        description="NWGM without its normalization: G instead of G/(G + G′)",
        claims=("B1",),
        patch=lambda: swap(ensembles, "nwgm", lambda g, gc: g),
    ),
]
