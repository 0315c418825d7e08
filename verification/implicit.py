"""Claims I1, I2: dropout's implicit regularizer ξ_approx (Sec. 4.2, eqs 4.5, 4.6; Alg. 4).

I1 compares the exact covariance of ``ξ_approx`` (:func:`dropcheck.implicit.xi_approx_cov`,
exact because ``ξ_approx`` is linear in η) with the exact ``Cov(ξ_drop)``
(:func:`dropcheck.exact.gradient_noise_cov`, all masks enumerated) per example, over families
of random tanh nets, with the metrics of :mod:`dropcheck.covariance`: relative Frobenius error,
trace ratio, and alignment of the top-3 eigenspaces.

Why the error should scale like ``(1−2q)/(1−q)``: expand ``∇_W ℓ(F(x, η)) = g + Σ_k a_k η_k +
½ Σ_kl b_kl η_k η_l + …``.  ``ξ_approx = Σ_k a_k η_k``; the leading correction to its
covariance is ``½ E[η³] Σ_k (a_k b_kkᵀ + b_kk a_kᵀ)``, relative size ``E[η³]/E[η²] ·|b|/|a| =
(2q−1)/(1−q) · O(weight scale)``.  The next terms are fourth order, relative size
``O(scale²)`` times ``E[η⁴]/E[η²]`` (one unit) or ``E[η²]`` (pairs of units), and they do not
vanish at ``q = ½``.  Which term dominates depends on the network, so the measurement keeps
three families apart: a site feeding the linear decoder (``F_i`` affine in ``h_i``), the input
site with a tanh after it, and two sites with a tanh between them.

I2 compares Algorithm 4's covariance ``Cov(ξ_drop)/k + (1−1/k) Cov(ξ_approx)`` (mini-batch
means) with the DROPOUT_1 covariance it is meant to restore, against DROPOUT_k without
injection (error ``1 − 1/k``), and checks by sampling that
:func:`dropcheck.implicit.noise_injected_gradient` has that covariance.

A sampled check for a net too large to enumerate (I1): ``Cov(ξ̃_drop)/2`` from draws (no mean
needed) against the exact ``Cov(ξ_approx)``, both projected on random directions, with the
sampling floor of the estimate stated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.dropout_k import sampled_max_z

import dropcheck as dc
import dropcheck.covariance as cv
import dropcheck.implicit as im
from dropcheck import plots

#: Top-r eigenspaces compared by the alignment metric (fewer when the sites have fewer units).
_R = 3
#: Examples per net; errors are pooled over nets and examples (medians, never means of ratios).
_N_EX = 3


@dataclass(frozen=True)
class _Family:
    label: str
    sizes: tuple[int, ...]
    sites: tuple[str, ...]


_FAMILIES = {
    "decoder": _Family("site h1 → linear decoder (F_i affine)", (5, 8, 3), ("h1",)),
    "input": _Family("site x → tanh → decoder", (6, 8, 3), ("x",)),
    "two_sites": _Family("sites h1, h2 (tanh between)", (5, 5, 5, 3), ("h1", "h2")),
}

_QUICK = {"nets": 3, "qs": (0.01, 0.1, 0.3, 0.5, 0.7), "scales": (0.03, 0.1, 1.0)}
_FULL = {
    "nets": 6,
    "qs": (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "scales": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
}
_Q_REF = 0.01  # the q → 0 anchor of the (1−2q)/(1−q) law
_SMALL = 0.1  # "×0.1 weights": the scale at which the q law is checked
_Q_SCALE = 0.3  # q of the scale sweep


def _cfg(ctx: Context) -> dict[str, Any]:
    return _QUICK if ctx.quick else _FULL


def predicted_ratio(q: Any) -> Any:
    """``|E[η³]/E[η²]| = |1−2q|/(1−q)``: the q dependence of the leading covariance error."""
    q = np.asarray(q, dtype=float)
    return np.abs(1 - 2 * q) / (1 - q)


def _net(seed: int, fam: _Family, scale: float, sizes: tuple[int, ...] | None = None) -> tuple:
    """Net number ``seed`` of a family at weight ``scale`` (the same draws at every scale)."""
    sizes = sizes or fam.sizes
    rng = np.random.default_rng(seed)
    net = dc.MLP.random(list(sizes), activation="tanh", sites=fam.sites, rng=rng, seed=None,
                        scale=scale)
    x = rng.standard_normal((_N_EX, sizes[0]))
    y = rng.integers(0, sizes[-1], size=_N_EX)
    return net, x, y


def _seeds(seed: int, family: str, count: int) -> list[int]:
    base = np.random.SeedSequence([seed, *family.encode()])
    return [int(s.generate_state(1)[0]) for s in base.spawn(count)]


@functools.cache
def _metrics(
    seed: int, family: str, q: float, scale: float, count: int,
    sizes: tuple[int, ...] | None = None, sites: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Per (net, example) metrics of ``Cov(ξ_approx)`` against ``Cov(ξ_drop)``, ``(count·n,)``."""
    fam = _FAMILIES[family]
    if sites is not None:
        fam = _Family(fam.label, fam.sizes, sites)
    out: dict[str, list] = {"rel": [], "trace": [], "align": []}
    for s in _seeds(seed, family + str(sizes or ""), count):
        net, x, y = _net(s, fam, scale, sizes)
        ref = dc.exact.gradient_noise_cov(net, x, y, q)
        # top-r with r ≤ rank Cov(ξ_approx) ≤ Σ d_i, or the subspace is arbitrary
        c = cv.compare(im.xi_approx_cov(net, x, y, q), ref, r=min(_R, sum(net.widths.values())))
        out["rel"].append(np.asarray(c.rel_frobenius))
        out["trace"].append(np.asarray(c.trace_ratio))
        out["align"].append(np.asarray(c.alignment))
    return {k: np.concatenate(v) for k, v in out.items()}


def _q_sweep(ctx: Context, family: str, scale: float) -> dict[str, np.ndarray]:
    cfg = _cfg(ctx)
    rows = [_metrics(ctx.seed, family, q, scale, cfg["nets"]) for q in cfg["qs"]]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}  # (len(qs), count·n)


def _scale_sweep(ctx: Context, family: str, q: float) -> dict[str, np.ndarray]:
    cfg = _cfg(ctx)
    rows = [_metrics(ctx.seed, family, q, s, cfg["nets"]) for s in cfg["scales"]]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _q_ratio(rel: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Per-case ``err(q)/err(q_ref)·pred(q_ref)``: comparable with ``pred(q)``, ``(len(qs),)``."""
    i0 = qs.index(_Q_REF)
    return np.median(rel / rel[i0] * predicted_ratio(_Q_REF), axis=1)


# ----- identity part of I1: mean 0, enumerated second moment = xi_approx_cov -----
def _identity_check(ctx: Context) -> float:
    """Max relative error of ``E ξ_approx = 0`` and ``E ξξᵀ = xi_approx_cov`` over all masks."""
    rng = ctx.rng("I1-identity")
    worst = 0.0
    for q in (0.2, 0.7):
        net = dc.MLP.random([4, 3, 3, 3], sites=("h1", "h2"), rng=rng, seed=None)
        x, y = rng.standard_normal((2, 4)), rng.integers(0, 3, 2)

        def fn(tr: Any, p: Any, net: Any = net, x: Any = x, y: Any = y) -> tuple[Any, Any]:
            eta = {s: np.broadcast_to(e, (e.shape[0], x.shape[0], e.shape[-1]))
                   for s, e in tr.noise.items()}
            xi = np.asarray(im.xi_approx_at(net, x, y, eta))  # (B, n, P)
            return np.tensordot(p, xi, axes=1), np.einsum("b,bip,biq->ipq", p, xi, xi)

        m1, m2 = dc.exact.expectation(net, x, q, fn)
        cov = np.asarray(im.xi_approx_cov(net, x, y, q))
        scale = np.sqrt(np.max(np.abs(np.diagonal(cov, axis1=1, axis2=2))))
        worst = max(worst, float(np.max(np.abs(m1))) / scale,
                    float(np.max(np.abs(m2 - cov))) / float(np.max(np.abs(cov))))
    return worst


# ----- the sampled route for nets too large to enumerate -----
def _sampled_large(ctx: Context) -> dict[str, float]:
    """``Cov(ξ̃)/2`` from draws vs exact ``Cov(ξ_approx)``, on ``r`` random directions."""
    rng = ctx.rng("I1-sampled")
    sizes, draws, r, q = ([8, 32, 32, 5], 400, 4, 0.3) if ctx.quick else (
        [16, 64, 64, 10], 3000, 6, 0.3)
    net = dc.MLP.random(sizes, sites=("h1", "h2"), rng=rng, seed=None)
    x, y = rng.standard_normal((1, sizes[0])), rng.integers(0, sizes[-1], 1)
    V = rng.standard_normal((net.n_params, r)) / math.sqrt(net.n_params)
    approx = np.asarray(im.xi_approx_cov(net, x, y, q, directions=V))[0]
    chunks = []
    for b in _batches(draws, 250):
        t = np.asarray(im.xi_tilde(net, x, y, q, rng=rng, samples=b))[:, 0] @ V
        chunks.append(t / math.sqrt(2.0))  # Cov(ξ̃/√2) = Cov(ξ_drop)
    est = cv.sample_covariance(np.concatenate(chunks), mean=0.0)
    rel = float(cv.relative_frobenius_error(approx, est.value))
    floor = float(cv.sampling_floor(est.stderr, est.value))
    out = {
        "sizes": sizes, "draws": draws, "directions": r, "q": q,
        "masks_log2": sum(net.widths.values()),
        "rel_frobenius": rel, "sampling_floor": floor,
        "rel_frobenius_debiased": math.sqrt(max(rel**2 - floor**2, 0.0)),
        "trace_ratio": float(cv.trace_ratio(approx, est.value)),
    }
    if not ctx.quick:  # the ξ_drop route: centred on a Monte-Carlo mean from independent draws
        mean = dc.montecarlo.expected_gradient(net, x, y, q, samples=draws, rng=rng).value
        s = np.concatenate([np.asarray(im.xi_drop(net, x, y, q, rng=rng, samples=b, mean=mean))[:,
                                                                                                0]
                            @ V for b in _batches(draws, 250)])
        e2 = cv.sample_covariance(s, mean=0.0)
        val = np.asarray(e2.value) / (1.0 + 1.0 / draws)  # centring on an estimated mean
        out["xi_drop_rel_frobenius"] = float(cv.relative_frobenius_error(approx, val))
        out["xi_drop_sampling_floor"] = float(cv.sampling_floor(e2.stderr, val))
    return out


def _batches(total: int, step: int) -> list[int]:
    return [min(step, total - i) for i in range(0, total, step)]


# ----- plots (dropcheck.plots: median line with a 10–90 % band, log axes) -----
def _caption(cfg: dict[str, Any]) -> str:
    return plots.band_caption(cfg["nets"] * _N_EX, f"cases = {cfg['nets']} random tanh nets × "
                              f"{_N_EX} examples")


def _draw_q(ctx: Context, path: Path) -> Path:
    cfg = _cfg(ctx)
    qs = np.asarray(cfg["qs"])
    grid = np.linspace(0.005, qs.max() + 0.02, 400)
    fig, axes = plots.figure(2, width=5.6, height=4.4, sharey=True, title=(
        "I1: covariance error of ξ_approx (4.5/4.6) against the exact Cov(ξ_drop), per example\n"
        f"({_caption(cfg)})"))
    for ax, scale in zip(axes, (_SMALL, 1.0), strict=True):
        ax.set_yscale("log")
        for i, fam in enumerate(_FAMILIES):
            rel = _q_sweep(ctx, fam, scale)["rel"]
            plots.band(ax, qs, rel, label=_FAMILIES[fam].label, color=f"C{i}")
            if fam == "decoder":
                anchor = np.median(rel[cfg["qs"].index(_Q_REF)]) / predicted_ratio(_Q_REF)
                ax.plot(grid, anchor * predicted_ratio(grid), "k--", lw=1,
                        label=r"prediction $\propto |1-2q|/(1-q)$, anchored at q = 0.01")
        plots.style(ax, xlabel="drop probability q",
                    ylabel=r"$\|C_{approx} - C_{drop}\|_F\,/\,\|C_{drop}\|_F$",
                    title=f"weight scale ×{scale:g} (LeCun init × {scale:g})",
                    legend=scale == 1.0, legend_loc="lower left")
    return plots.save(fig, path)


def _draw_scale(ctx: Context, path: Path) -> Path:
    cfg = _cfg(ctx)
    scales = np.asarray(cfg["scales"])
    fig, (ax,) = plots.figure(width=7.8, height=5.0, title=(
        f"I1: covariance error of ξ_approx vs weight scale (solid q = {_Q_SCALE}, dotted q = ½)\n"
        f"({_caption(cfg)})"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    for i, fam in enumerate(_FAMILIES):
        plots.band(ax, scales, _scale_sweep(ctx, fam, _Q_SCALE)["rel"], color=f"C{i}",
                   label=f"{_FAMILIES[fam].label}, q = {_Q_SCALE}")
        med = np.median(_scale_sweep(ctx, fam, 0.5)["rel"], axis=1)
        ax.plot(scales, med, ":", color=f"C{i}", marker="x", ms=5, label="  same, q = ½ (median)")
    lo = float(np.median(_scale_sweep(ctx, "decoder", _Q_SCALE)["rel"][0]))
    plots.guide(ax, scales, 0.5 * lo, 1.0, label="slope 1 (guide)")
    plots.guide(ax, scales, 0.05 * lo, 2.0, label="slope 2 (guide)", color="0.7")
    plots.style(ax, xlabel="weight scale (multiple of LeCun init, dimensionless)",
                ylabel="relative Frobenius error of Cov(ξ_approx)", xticks=scales,
                legend_loc="lower right")
    for t in ax.get_legend().get_texts():
        t.set_fontsize(7)
    return plots.save(fig, path)


def _draw_k(ctx: Context, path: Path, res: dict[str, Any]) -> Path:
    ks = np.asarray(res["ks"])
    n = res["alg4"]["decoder"].shape[-1]
    fig, (ax,) = plots.figure(width=7.6, height=5.0, title=(
        "I2: Cov of DROPOUT_k + sqrt(1−1/k) ξ_approx (Alg. 4) against Cov(DROPOUT_1)\n"
        f"(mini-batch of {_N_EX} examples, q = {_Q_SCALE}; {plots.band_caption(n, 'nets')})"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.plot(ks, 1 - 1 / ks, "k--", marker="s", ms=4, label="DROPOUT_k, no injection: 1 − 1/k")
    for i, fam in enumerate(_FAMILIES):
        for j, scale in enumerate(res["scales"]):
            plots.band(ax, ks, res["alg4"][fam][j], color=f"C{i}",
                       linestyle="-" if scale == 1.0 else ":",
                       label=f"Alg. 4, {_FAMILIES[fam].label}, weights ×{scale:g}")
    plots.style(ax, xlabel="k (masks averaged per example)",
                ylabel="relative Frobenius error vs Cov(DROPOUT_1)", xticks=ks, legend=False)
    plots.legend_below(fig, ax, ncols=2)
    return plots.save(fig, path)


@plot("i1_q", help="I1: covariance error of ξ_approx vs q, with the |1−2q|/(1−q) prediction")
def plot_i1_q(ctx: Context, path: Path | str) -> Path:
    """Error of ``Cov(ξ_approx)`` against ``q`` at weight scales 0.1 and 1."""
    return _draw_q(ctx, Path(path))


@plot("i1_scale", help="I1: covariance error of ξ_approx vs the weight scale (log-log)")
def plot_i1_scale(ctx: Context, path: Path | str) -> Path:
    """Error of ``Cov(ξ_approx)`` against the weight scale at q = 0.3 and 0.5."""
    return _draw_scale(ctx, Path(path))


@plot("i2_k", help="I2: Alg. 4 covariance error vs k, against DROPOUT_k without injection")
def plot_i2_k(ctx: Context, path: Path | str) -> Path:
    """Error of Algorithm 4's covariance against ``k``."""
    return _draw_k(ctx, Path(path), _i2_experiment(ctx))


# ----- I1 -----
_ID_TOL = 1e-10  # sums of ≤ 2^6 float64 outer products: rounding ~1e-14; room for conditioning
# |ratio/prediction − 1| for the decoder site at ×0.1 weights: the next-order terms are
# O(scale) relative to the law (measured ≤ 0.5 % at ×0.1, growing with E[η⁴]/E[η²] at large q)
_Q_LAW_TOL = 0.05
_HALF_TOL = 0.05  # err(½)/err(q → 0) for the decoder site at ×0.1 weights
_MIN_SLOPE = 0.8  # log-log slope of the error in the weight scale at the two smallest scales


@claim(
    "I1",
    statement="ξ_approx (4.5/4.6) has mean 0 and Cov(ξ_approx) ≈ Cov(ξ_drop); the error scales "
    "like (1−2q)/(1−q) and with the weight scale",
    source="Sec. 4.2, eqs 4.5, 4.6",
    kind="approximation",
    rule=f"mean 0 and enumerated E[ξξᵀ] = xi_approx_cov to {_ID_TOL:g}; site before the "
    f"linear decoder, ×{_SMALL:g} weights: median err(q)/err(0.01) within {_Q_LAW_TOL:.0%} "
    f"(relative) of the |1−2q|/(1−q) law (q ≠ ½) and ≤ {_HALF_TOL} at q = ½; every family: "
    f"log-log slope of the median error in the weight scale ≥ {_MIN_SLOPE} at the smallest "
    f"scales (q = {_Q_SCALE})",
)
def measure_i1(ctx: Context) -> Measurement:
    """Exact covariances over three net families, q and weight-scale sweeps, a sampled check."""
    cfg = _cfg(ctx)
    qs, scales = cfg["qs"], cfg["scales"]
    ident = _identity_check(ctx)
    values: dict[str, Any] = {"identity_max_rel_error": ident, "qs": qs, "scales": scales,
                              "nets": cfg["nets"], "examples": _N_EX, "r": _R}
    law_dev, half, slopes, q_notes = 0.0, {}, {}, []
    for fam in _FAMILIES:
        sw = _q_sweep(ctx, fam, _SMALL)
        ratio = _q_ratio(sw["rel"], qs)
        values[f"{fam}_q_sweep_small"] = {
            "median_rel": np.median(sw["rel"], axis=1), "ratio": ratio,
            "predicted": predicted_ratio(qs),
            "median_trace_ratio": np.median(sw["trace"], axis=1),
            "median_alignment": np.median(sw["align"], axis=1),
        }
        d1 = _q_sweep(ctx, fam, 1.0)
        values[f"{fam}_q_sweep_default"] = {
            "median_rel": np.median(d1["rel"], axis=1),
            "median_trace_ratio": np.median(d1["trace"], axis=1),
            "median_alignment": np.median(d1["align"], axis=1),
        }
        half[fam] = float(ratio[qs.index(0.5)] / predicted_ratio(_Q_REF))
        if fam == "decoder":
            others = [i for i, q in enumerate(qs) if q != 0.5]
            pred = predicted_ratio(qs)[others]
            law_dev = float(np.max(np.abs(ratio[others] / pred - 1.0)))
        else:
            q_notes.append(f"{fam}: err(½)/err(0.01) = {half[fam]:.2g}")
        ss = _scale_sweep(ctx, fam, _Q_SCALE)
        med = np.median(ss["rel"], axis=1)
        slopes[fam] = plots.loglog_slope(scales[:2], med[:2])
        values[f"{fam}_scale_sweep"] = {
            "median_rel": med, "median_trace_ratio": np.median(ss["trace"], axis=1),
            "median_alignment": np.median(ss["align"], axis=1),
            "median_rel_q_half": np.median(_scale_sweep(ctx, fam, 0.5)["rel"], axis=1),
        }
    values.update({"decoder_q_law_max_dev": law_dev, "err_half_over_err_0": half,
                   "scale_slopes": slopes})
    if not ctx.quick:
        values["depth"], values["width"] = _depth_width(ctx)
    values["sampled_large_net"] = big = _sampled_large(ctx)
    written: list[str] = []
    for name, draw in (("i1_error_vs_q", _draw_q), ("i1_error_vs_scale", _draw_scale)):
        path = ctx.plot_path(name)
        if path is not None:
            draw(ctx, path)
            written.append(str(path))
    passed = bool(
        ident <= _ID_TOL and law_dev <= _Q_LAW_TOL and half["decoder"] <= _HALF_TOL
        and min(slopes.values()) >= _MIN_SLOPE
    )
    dec_s = values["decoder_q_law_max_dev"]
    q3 = qs.index(0.3)
    d_small = values["decoder_q_sweep_small"]
    default = {f: values[f"{f}_q_sweep_default"] for f in _FAMILIES}
    figure = (
        f"mean/identity {fmt(ident)}; decoder site ×{_SMALL:g}: median err "
        f"{fmt(d_small['median_rel'][0])} (q=0.01) … {fmt(d_small['median_rel'][qs.index(0.5)])}"
        f" (q=½), ratio at q=0.3 {d_small['ratio'][q3]:.3f} vs {predicted_ratio(0.3):.3f} "
        f"(max rel. dev {dec_s:.2g}); init scale, q=0.3: err "
        + ", ".join(f"{fmt(default[f]['median_rel'][q3])}" for f in _FAMILIES)
        + ", trace ratio "
        + ", ".join(f"{default[f]['median_trace_ratio'][q3]:.2f}" for f in _FAMILIES)
        + ", alignment "
        + ", ".join(f"{default[f]['median_alignment'][q3]:.3f}" for f in _FAMILIES)
        + " (decoder, input, two sites); scale slopes "
        + ", ".join(f"{slopes[f]:.2f}" for f in _FAMILIES)
    )
    note = (
        "The (1−2q)/(1−q) law holds where F_i is affine in h_i (only the loss curvature "
        "enters the third-order term); with a tanh after a site or several sites the "
        "fourth-order terms (∝ E[η²], pairs of units) do not vanish at q = ½: "
        + "; ".join(q_notes)
        + f" (×{_SMALL:g} weights). Sampled check on a {big['sizes']} net "
        f"(2^{big['masks_log2']} masks, {big['draws']} draws of ξ̃/√2, {big['directions']} "
        f"random directions): rel. Frobenius error {big['rel_frobenius']:.3g} with sampling "
        f"floor {big['sampling_floor']:.3g} (debiased {big['rel_frobenius_debiased']:.3g}), "
        f"trace ratio {big['trace_ratio']:.3f}"
        + (f"; ξ_drop route with a Monte-Carlo mean: {big['xi_drop_rel_frobenius']:.3g} "
           f"(floor {big['xi_drop_sampling_floor']:.3g})" if "xi_drop_rel_frobenius" in big
           else "")
        + "."
    )
    if "depth" in values:
        note += (
            " Init scale, q = 0.3, median error by depth (hidden layers 1, 2, 3, all sites): "
            + ", ".join(fmt(v) for v in values["depth"]["median_rel"])
            + "; by width of the decoder site (d = "
            + ", ".join(str(w) for w in values["width"]["widths"]) + "): "
            + ", ".join(fmt(v) for v in values["width"]["median_rel"]) + "."
        )
    return Measurement(figure, passed, values, written, note)


def _depth_width(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    """Median metrics at init scale, q = 0.3, by depth (all sites) and by decoder-site width."""
    n = _cfg(ctx)["nets"]
    depth: dict[str, list] = {"hidden_layers": [], "median_rel": [], "median_trace_ratio": [],
                              "median_alignment": []}
    for L in (1, 2, 3):
        sizes = (5, *([4] * L), 3)
        m = _metrics(ctx.seed, "two_sites", _Q_SCALE, 1.0, n, sizes,
                     tuple(f"h{i}" for i in range(1, L + 1)))
        depth["hidden_layers"].append(L)
        depth["median_rel"].append(float(np.median(m["rel"])))
        depth["median_trace_ratio"].append(float(np.median(m["trace"])))
        depth["median_alignment"].append(float(np.median(m["align"])))
    width: dict[str, list] = {"widths": [], "median_rel": [], "median_trace_ratio": [],
                              "median_alignment": []}
    for w in (2, 4, 8, 12):
        m = _metrics(ctx.seed, "decoder", _Q_SCALE, 1.0, n, (5, w, 3))
        width["widths"].append(w)
        width["median_rel"].append(float(np.median(m["rel"])))
        width["median_trace_ratio"].append(float(np.median(m["trace"])))
        width["median_alignment"].append(float(np.median(m["align"])))
    return depth, width


# ----- I2 -----
_KS = (2, 4, 8, 32)
_ZMAX = 5.0  # per-entry false alarm 5.7e-7 (normal); ≤ 9 entries per check: ≤ 1e-5
# At ×0.1 weights I1's error is ~1e-2 (the Taylor regime): Alg. 4 should then leave at most a
# few per cent of the covariance error that DROPOUT_k alone has.
_I2_SMALL_TOL = 0.05


@functools.cache
def _i2_cached(seed: int, quick: bool) -> dict[str, Any]:
    n = (_QUICK if quick else _FULL)["nets"]
    scales = (_SMALL, 1.0)
    alg4: dict[str, np.ndarray] = {}
    trace: dict[str, np.ndarray] = {}
    for fam in _FAMILIES:
        errs = np.empty((len(scales), len(_KS), n))
        trs = np.empty_like(errs)
        for j, scale in enumerate(scales):
            for t, s in enumerate(_seeds(seed, "I2" + fam, n)):
                net, x, y = _net(s, _FAMILIES[fam], scale)
                c1 = np.asarray(dc.exact.dropout_k_cov(net, x, y, _Q_SCALE, k=1))
                ca = np.asarray(im.xi_approx_cov(net, x, y, _Q_SCALE, reduction="mean"))
                for i, k in enumerate(_KS):
                    c4 = c1 / k + (1 - 1 / k) * ca  # independent masks: covariances add
                    errs[j, i, t] = float(cv.relative_frobenius_error(c4, c1))
                    trs[j, i, t] = float(cv.trace_ratio(c4, c1))
        alg4[fam], trace[fam] = errs, trs
    return {"ks": _KS, "scales": scales, "alg4": alg4, "trace": trace}


def _i2_experiment(ctx: Context) -> dict[str, Any]:
    return _i2_cached(ctx.seed, ctx.quick)


class _Scripted:
    """A generator whose ``random(shape)`` hands out a fixed pattern of low/high uniforms.

    Entry ``i`` of the pattern gives ``0.25`` (bit set) or ``0.75``: at ``q = ½`` a Bernoulli
    mask entry (dropped when ``u < q``) and a Rademacher sign (``+`` when ``u < ½``) are both
    fair coins decided by one bit, so the uniform average over all ``2^N`` patterns is the exact
    expectation over the sampler's draws, whatever order the library consumes them in.
    """

    def __init__(self, bits: np.ndarray | None) -> None:
        self.bits, self.used = bits, 0

    def random(self, shape: Any) -> np.ndarray:
        size = int(np.prod(shape))
        if self.bits is None:  # counting mode: fair uniforms
            self.used += size
            return np.full(shape, 0.75)
        if self.used + size > self.bits.size:
            raise RuntimeError("the sampler asked for more uniforms than on the counting call")
        out = np.where(self.bits[self.used:self.used + size], 0.25, 0.75).reshape(shape)
        self.used += size
        return out


def _enumerate_sampler(call: Any, max_bits: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of ``call(rng)`` ``(P,)`` over all patterns of its uniforms."""
    probe = _Scripted(None)
    call(probe)
    N = probe.used
    if N > max_bits:
        raise RuntimeError(f"{N} uniforms per draw: too many to enumerate (≤ {max_bits})")
    draws = []
    for j in range(2**N):
        rng = _Scripted(((j >> np.arange(N)) & 1).astype(bool))
        draws.append(np.asarray(call(rng), dtype=float))
        if rng.used != N:
            raise RuntimeError("the sampler used a different number of uniforms per call")
    g = np.stack(draws)
    mean = g.mean(0)
    return mean, (g - mean).T @ (g - mean) / g.shape[0]


#: Central differences of the exact gradient (step 1e-5): truncation ~1e-10, rounding ~1e-11
#: relative; the covariance built from them is good to ~1e-9, so 1e-6 leaves a wide margin.
_FD_EPS, _I2_EXACT_TOL = 1e-5, 1e-6


def _xi_approx_cov_fd(net: dc.MLP, x: Any, y: Any, q: float) -> np.ndarray:
    """``Cov(ξ_approx)`` of the mini-batch mean from ``a_k = ∂/∂ε ∇_W ℓ(F(x, ε e_k))``.

    Central differences of the exact gradient (:func:`dropcheck.exact.loss_gradients`) along
    each unit's noise; ``E[η²]`` from η's two-point law.  Independent of
    :mod:`dropcheck.implicit`'s ξ_approx code.
    """
    n = np.asarray(x).shape[0]
    cols = []
    for s in net.site_names:
        d = net.widths[s]
        for k in range(d):
            e = np.zeros((2, n, d))
            e[0, :, k], e[1, :, k] = _FD_EPS, -_FD_EPS
            g = np.asarray(dc.exact.loss_gradients(net, net.trace(x, {s: e}), y))  # (2, n, P)
            cols.append((g[0] - g[1]).mean(0) / (2 * _FD_EPS))  # mini-batch mean
    a = np.stack(cols)  # (D, P)
    var = q * 1.0 + (1 - q) * (q / (1 - q)) ** 2
    return var * a.T @ a


def _i2_exact(ctx: Context) -> dict[str, float]:
    """The library's Algorithm 4 enumerated exactly against its stated covariance.

    ``noise_injected_gradient(..., "approx")`` is run on every pattern of its uniforms
    (:func:`_enumerate_sampler`, ``q = ½``); its mean must be ``∇ℓ_drop`` and its covariance
    ``Cov(ξ_drop)/k + (1−1/k) Cov(ξ_approx)`` with ``Cov(ξ_approx)`` from central differences
    (:func:`_xi_approx_cov_fd`); the library's ``xi_approx_cov`` is checked against the same.
    """
    rng = ctx.rng("I2-exact")
    q = 0.5
    worst = {"mean": 0.0, "cov": 0.0, "xi_approx_cov": 0.0}
    for k, d in ((2, 3), (3, 2)):
        net = dc.MLP.random([3, d, 3], sites=("h1",), rng=rng, seed=None)
        x, y = rng.standard_normal((1, 3)), rng.integers(0, 3, 1)
        ca = _xi_approx_cov_fd(net, x, y, q)
        lib_ca = np.asarray(im.xi_approx_cov(net, x, y, q, reduction="mean"))
        worst["xi_approx_cov"] = max(worst["xi_approx_cov"],
                                     float(cv.relative_frobenius_error(lib_ca, ca)))
        ref = np.asarray(dc.exact.dropout_k_cov(net, x, y, q, k=k)) + (1 - 1 / k) * ca
        mean_ref = np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0)
        for kind in ("bernoulli", "rademacher"):
            mean, cov = _enumerate_sampler(
                lambda g, net=net, x=x, y=y, k=k, kind=kind: im.noise_injected_gradient(
                    net, x, y, q, k=k, rng=g, noise="approx", approx_noise=kind))
            worst["mean"] = max(worst["mean"], float(np.linalg.norm(mean - mean_ref)
                                                     / np.linalg.norm(mean_ref)))
            worst["cov"] = max(worst["cov"], float(cv.relative_frobenius_error(cov, ref)))
    return worst


def _i2_sampled(ctx: Context) -> float:
    """Max |z| of Alg. 4 draws (public API) against ``Cov/k + (1−1/k) Cov(ξ_approx)``."""
    rng = ctx.rng("I2-sampled")
    net = dc.MLP.random([3, 4, 3], sites=("x", "h1"), rng=rng, seed=None)
    x, y = rng.standard_normal((2, 3)), rng.integers(0, 3, 2)
    V = rng.standard_normal((net.n_params, 3))
    q, k, N = 0.4, 4, (1500 if ctx.quick else 4000)
    cov = (np.asarray(dc.exact.dropout_k_cov(net, x, y, q, k=k, directions=V))
           + (1 - 1 / k) * np.asarray(im.xi_approx_cov(net, x, y, q, directions=V,
                                                        reduction="mean")))
    mean = np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0)
    worst = 0.0
    for kind in ("bernoulli", "rademacher"):
        g = np.asarray(im.noise_injected_gradient(net, x, y, q, k=k, rng=rng, noise="approx",
                                                  approx_noise=kind, samples=N))
        worst = max(worst, sampled_max_z(g, V, cov, mean))
    return worst


@claim(
    "I2",
    statement="Alg. 4: DROPOUT_k + sqrt(1−1/k) ξ_approx has covariance ≈ Cov(ξ_drop) "
    "(that of DROPOUT_1)",
    source="Sec. 3.1, Alg. 4",
    kind="approximation",
    rule=f"for k ∈ {list(_KS)} and every family, the median relative Frobenius error of "
    "Cov(Alg. 4) vs Cov(DROPOUT_1), as a fraction of DROPOUT_k's (1 − 1/k), is < 1 at init "
    f"scale and ≤ {_I2_SMALL_TOL} at ×{_SMALL:g} weights; sampled Alg. 4 draws (Bernoulli and "
    f"Rademacher) within |z| ≤ {_ZMAX:g} of Cov(ξ_drop)/k + (1−1/k) Cov(ξ_approx); exact part "
    "(else FAIL): noise_injected_gradient enumerated over every pattern of its uniforms "
    "(q = ½, k = 2, 3) has mean ∇ℓ_drop and covariance Cov(ξ_drop)/k + (1−1/k) Cov(ξ_approx), "
    "Cov(ξ_approx) from central differences of the exact gradient, and xi_approx_cov equals "
    f"it, each to ≤ {_I2_EXACT_TOL:g}",
)
def measure_i2(ctx: Context) -> Measurement:
    """Exact covariances of Alg. 4 vs DROPOUT_1 over k, and a sampled check of the API."""
    res = _i2_experiment(ctx)
    ks = np.asarray(_KS)
    med = {f: np.median(res["alg4"][f], axis=2) for f in _FAMILIES}  # (scales, ks)
    frac = {f: med[f] / (1 - 1 / ks) for f in _FAMILIES}  # (scales, ks)
    j0, j1 = res["scales"].index(_SMALL), res["scales"].index(1.0)
    small = max(float(np.max(v[j0])) for v in frac.values())
    ratio = max(float(np.max(v[j1])) for v in frac.values())
    z = _i2_sampled(ctx)
    exact = _i2_exact(ctx)
    exact_err = max(exact.values())
    written: list[str] = []
    path = ctx.plot_path("i2_error_vs_k")
    if path is not None:
        _draw_k(ctx, path, res)
        written.append(str(path))
    passed = bool(ratio < 1.0 and small <= _I2_SMALL_TOL and z <= _ZMAX)
    figure = (
        "init scale, q = 0.3, median error of Alg. 4 vs DROPOUT_1 at k = "
        + "/".join(str(k) for k in _KS) + ": "
        + "; ".join(f"{f} " + "/".join(fmt(v) for v in med[f][j1]) for f in _FAMILIES)
        + " (DROPOUT_k alone: " + "/".join(f"{1 - 1 / k:.2g}" for k in _KS) + "); "
        f"fraction of DROPOUT_k's error left: worst {ratio:.2g} at init, {small:.2g} at "
        f"×{_SMALL:g} weights; sampled API max |z| {z:.2f}; enumerated Alg. 4 vs "
        f"Cov/k + (1−1/k)·Cov(ξ_approx by differences) {fmt(exact_err)}"
    )
    values = {
        "ks": _KS, "scales": res["scales"], "q": _Q_SCALE,
        "median_rel_alg4": {f: med[f] for f in _FAMILIES},
        "median_trace_ratio_alg4": {f: np.median(res["trace"][f], axis=2) for f in _FAMILIES},
        "dropout_k_rel": 1 - 1 / ks, "worst_fraction_left_init": ratio,
        "worst_fraction_left_small": small, "sampled_max_z": z,
        "exact_alg4_rel_error": exact,
    }
    note = ("Cov(Alg. 4) − Cov(DROPOUT_1) = (1 − 1/k)(Cov(ξ_approx) − Cov(ξ_drop)): the error is "
            "I1's error of the mini-batch covariance scaled by 1 − 1/k, so it approaches I1's "
            "as k grows.")
    return Measurement(figure, passed, values, written, note,
                       exact=bool(exact_err <= _I2_EXACT_TOL))
