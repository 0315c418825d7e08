"""Classical claims of seed 002: ridge (L1), weight scaling vs geometric mean (L2), MC dropout (L3).

Closed forms and estimators live in :mod:`dropcheck.classical`; this module measures them on
families of small random networks against exact enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from scipy.special import polygamma

import dropcheck as dc
from dropcheck import classical, plots

# ----------------------------------------------------------------------------- L1

# Exact sums over 2^d ≤ 2^8 masks in float64 against a closed form: ≤ ~1e-13 relative.
_L1_TOL = 1e-11


@claim(
    "L1",
    statement="Input dropout on least squares is ridge: E_m ½(y − wᵀ(m⊙x)/p)² = "
    "½(y − wᵀx)² + ½((1−p)/p) Σ_j w_j² x_j² (ridge λ = (1−p)/p per feature with E[x_j²] = 1)",
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
        model = dc.Linear.random(d, 1, rng=rng, seed=None, loss="squared")
        x = rng.standard_normal((n, d))
        y = rng.standard_normal((n, 1))
        r = np.asarray(dc.exact.explicit_regularizer(model, x, y, q))
        ridge = np.asarray(classical.ridge_penalty(model.params["W1"], x, q))
        worst = max(worst, float(np.max(np.abs(r - ridge) / np.abs(ridge))))
    return Measurement(
        figure=f"max rel. error {fmt(worst)} (d = {d}, q ∈ 0.1…0.8)",
        passed=worst <= _L1_TOL,
        values={"max_rel_error": worst},
    )


# ----------------------------------------------------------------------------- L2

# G = softmax(Σ_m P(m) log softmax(z_m)) sums ≤ 2^12 terms of size |log softmax| ≲ 10 (random
# nets at unit scale): rounding ≲ 2^12·1.1e-16·10 ≈ 5e-12 in the exponent even if every term
# erred the same way, and |Δsoftmax| ≤ 2·|Δexponent|.  Measured: ~5e-16.
_L2_TOL = 1e-11
_L2_DEPTHS = (1, 2, 3, 4)
_L2_ACTS = ("tanh", "relu")
# seed 002's typical rates: keep p = 0.8 on the input, 0.5 on hidden layers
_L2_Q_INPUT, _L2_Q_HIDDEN = 0.2, 0.5
_L2_WIDTH, _L2_CLASSES = 3, 3


def _tv(a: Any, b: Any) -> np.ndarray:
    """Total variation ``½ Σ_k |a_k − b_k|`` per example."""
    return 0.5 * np.sum(np.abs(np.asarray(a) - np.asarray(b)), axis=-1)


def _kl(a: Any, b: Any) -> np.ndarray:
    """``KL(a ‖ b) = Σ_k a_k log(a_k / b_k)`` per example (strictly positive probabilities)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.sum(a * (np.log(a) - np.log(b)), axis=-1)


def _l2_identity(ctx: Context) -> dict[str, float]:
    """Max |G − weight-scaled| over cases where the logits are (multi-)affine in the masks."""
    rng = ctx.rng("L2-identity")
    reps = 2 if ctx.quick else 5
    n = 4
    worst: dict[str, float] = {}

    def record(case: str, net: Any, x: Any, q: Any, sites: Any = None) -> None:
        for conv in classical.CONVENTIONS:
            g = classical.geometric_mean_predict(net, x, q, sites=sites, convention=conv)
            w = classical.weight_scaled_predict(net, x, q, sites=sites, convention=conv)
            err = float(np.max(np.abs(np.asarray(g) - np.asarray(w))))
            worst[case] = max(worst.get(case, 0.0), err)

    for _ in range(reps):
        for q in (0.2, 0.5, 0.8):
            lin = dc.Linear.random(8, 4, rng=rng, seed=None)
            record("linear softmax, input dropout (d = 8)", lin, rng.standard_normal((n, 8)), q)
        for sizes, act in (([5, 8, 3], "relu"), ([5, 6, 8, 3], "tanh")):
            last = f"h{len(sizes) - 2}"
            net = dc.MLP.random(sizes, act, sites=(last,), rng=rng, seed=None)
            record(
                "MLP, dropout only on the layer feeding the decoder", net,
                rng.standard_normal((n, 5)), 0.5,
            )
        net = dc.MLP.random([4, 4, 4, 3], "identity", sites=("x", "h1", "h2"), rng=rng,
                            seed=None)
        record("linear activations, dropout at every site (multi-affine)", net,
               rng.standard_normal((n, 4)), {"x": 0.2, "h1": 0.5, "h2": 0.5})
    return worst


@dataclass
class _L2Depth:
    depths: tuple[int, ...]
    tv: dict[str, np.ndarray]  # act -> (depths, nets·n) TV(G, weight-scaled)
    kl: dict[str, np.ndarray]  # KL(G ‖ weight-scaled)
    tv_mean: dict[str, np.ndarray]  # TV(arithmetic mean, weight-scaled)
    nets: int
    n: int


def _l2_depth(ctx: Context) -> _L2Depth:
    """G vs weight scaling with dropout at every site (input q=0.2, hidden q=0.5), tanh/relu."""
    nets, n = (6, 4) if ctx.quick else (30, 8)
    out: dict[str, dict[str, list[np.ndarray]]] = {"tv": {}, "kl": {}, "tv_mean": {}}
    for act in _L2_ACTS:
        rng = ctx.rng(f"L2-depth-{act}")
        for key in out:
            out[key][act] = []
        for depth in _L2_DEPTHS:
            sizes = [_L2_WIDTH] * depth + [_L2_CLASSES]
            sites = ("x",) + tuple(f"h{i}" for i in range(1, depth))
            q = {s: (_L2_Q_INPUT if s == "x" else _L2_Q_HIDDEN) for s in sites}
            tv, kl, tvm = [], [], []
            for _ in range(nets):
                net = (
                    dc.Linear.random(_L2_WIDTH, _L2_CLASSES, rng=rng, seed=None)
                    if depth == 1 else dc.MLP.random(sizes, act, sites=sites, rng=rng, seed=None)
                )
                x = rng.standard_normal((n, _L2_WIDTH))
                g = classical.geometric_mean_predict(net, x, q)
                w = classical.weight_scaled_predict(net, x, q)
                a = classical.arithmetic_mean_predict(net, x, q)
                tv.append(_tv(g, w))
                kl.append(_kl(g, w))
                tvm.append(_tv(a, w))
            out["tv"][act].append(np.concatenate(tv))
            out["kl"][act].append(np.concatenate(kl))
            out["tv_mean"][act].append(np.concatenate(tvm))
    arr = {k: {a: np.stack(v) for a, v in d.items()} for k, d in out.items()}
    return _L2Depth(_L2_DEPTHS, arr["tv"], arr["kl"], arr["tv_mean"], nets, n)


def _draw_l2(res: _L2Depth, path: Path | str) -> Path:
    fig, (ax1, ax2) = plots.figure(2, sharey=True, title=(
        "L2: weight scaling vs the dropout ensemble of all sub-networks\n"
        f"dropout at every site (input q = {_L2_Q_INPUT:g}, hidden q = {_L2_Q_HIDDEN:g}), "
        f"width {_L2_WIDTH}, {_L2_CLASSES} classes\n"
        + plots.band_caption(res.nets * res.n, f"inputs ({res.nets} nets × {res.n})")))
    d = np.asarray(res.depths, dtype=float)
    for i, act in enumerate(_L2_ACTS):
        plots.band(ax1, d, res.tv[act], label=act, color=f"C{i}")
        plots.band(ax2, d, res.tv_mean[act], label=act, color=f"C{i}")
    d1 = max(float(np.max(res.tv[a][0])) for a in _L2_ACTS)
    ax1.annotate(f"depth 1 (softmax regression):\nexact, max TV {d1:.1g}", (1, 0),
                 xytext=(1.1, 0.3), textcoords=("data", "axes fraction"), fontsize=7,
                 color="0.3", arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 0.8})
    plots.style(ax1, xlabel="depth (weight layers)", ylabel="total variation distance",
                title="TV(normalized geometric mean, weight-scaled)", xticks=res.depths,
                legend_loc="upper left")
    plots.style(ax2, xlabel="depth (weight layers)", ylabel="",
                title="TV(arithmetic mean, weight-scaled)", xticks=res.depths,
                legend_loc="upper left")
    ax1.set_ylim(bottom=0)
    return plots.save(fig, path)


@plot("l2", help="L2: total variation between weight scaling and the geometric / arithmetic "
      "mean of all sub-networks vs depth (median, 10–90th pct.)")
def plot_l2(ctx: Context, path: Path | str) -> Path:
    """Measure the depth sweep of L2 (quick or full per ``ctx``) and plot it to ``path``."""
    return _draw_l2(_l2_depth(ctx), path)


@claim(
    "L2",
    statement="Single-layer softmax: weight scaling (the full network under inverted dropout; "
    "weights × p under the original convention) equals the normalized geometric mean of all "
    "sub-network predictions exactly; with nonlinearities after dropout sites it is an "
    "approximation whose error grows with depth",
    source="seed 002 (Implicit Ensemble Interpretation; Baldi & Sadowski 2013)",
    kind="identity",
    rule=f"identity: max |G − weight-scaled| ≤ {_L2_TOL:g} over softmax regression, MLPs with "
    "dropout only before the decoder, and linear-activation MLPs, both conventions; "
    "the depth errors (TV, KL) are reported, not judged",
)
def measure_l2(ctx: Context) -> Measurement:
    """The exact identity on affine-in-mask cases, then the measured error for depth 2–4."""
    ident = _l2_identity(ctx)
    worst = max(ident.values())
    res = _l2_depth(ctx)
    plots_ = []
    path = ctx.plot_path("l2_error_vs_depth")
    if path is not None:
        plots_.append(str(_draw_l2(res, path)))
    med = {a: np.median(res.tv[a], axis=1) for a in _L2_ACTS}
    mx = {a: np.max(res.tv[a], axis=1) for a in _L2_ACTS}
    per_depth = "; ".join(
        f"{a} " + ", ".join(f"d{d}: {med[a][i]:.3f}/{mx[a][i]:.2f}"
                            for i, d in enumerate(res.depths) if d > 1)
        for a in _L2_ACTS
    )
    grows = {a: bool(np.all(np.diff(med[a]) > 0)) for a in _L2_ACTS}
    note = (
        "TV(G, weight-scaled) median/max over nets × inputs by depth: " + per_depth + ". "
        "Median grows monotonically with depth: "
        + ", ".join(f"{a}: {'yes' if g else 'no'}" for a, g in grows.items())
        + f". Width {_L2_WIDTH}, {_L2_CLASSES} classes (2^(3·depth) masks per net)."
    )
    return Measurement(
        figure=f"identity max |Δp| {fmt(worst)}; depth 2/3/4 TV median (max) "
        + "; ".join(
            f"{a} " + "/".join(f"{m:.3f}" for m in med[a][1:]) + f" ({mx[a][1:].max():.2f})"
            for a in _L2_ACTS
        ),
        passed=worst <= _L2_TOL,
        values={
            "identity_max_abs_error": ident,
            "depths": list(res.depths),
            "tv_median": med,
            "tv_max": mx,
            "kl_median": {a: np.median(res.kl[a], axis=1) for a in _L2_ACTS},
            "kl_max": {a: np.max(res.kl[a], axis=1) for a in _L2_ACTS},
            "tv_arithmetic_vs_weight_scaled_median": {
                a: np.median(res.tv_mean[a], axis=1) for a in _L2_ACTS},
            "median_grows_with_depth": grows,
            "nets": res.nets,
            "inputs_per_net": res.n,
        },
        plots=plots_,
        note=note,
    )


# ----------------------------------------------------------------------------- L3

# Pass band for the fitted log-log slope (expected −½).  Per net r and pass count T, the
# normalized squared error e² = mean_entries(est − exact)² / c_r has mean ≈ 1/T (c_r: the
# exact per-pass variance of the estimated entries; exactly 1/T for the mean).  Under the CLT
# e²·T is a weighted sum of χ²₁ variables with weights summing to 1, so its variance is ≤ 2
# (at least one degree of freedom); the mean over R independent nets is then at least as
# concentrated as χ²_R/R, whose log has variance ψ'(R/2) (trigamma).  The fitted quantity is
# y_T = ½ log(mean_r e²) (an RMS), sd ≤ ½ sqrt(ψ'(R/2)), independent across T (fresh draws),
# so the OLS slope over log T has sd ≤ ½ sqrt(ψ'(R/2) / S_xx), S_xx = Σ (log T − mean)².
# Band = ±4 sd: two-sided false-alarm ≤ 6e-5 per slope under the Gaussian approximation.
_L3_Z = 4.0
_L3_Q = 0.5
_L3_SIZES = [4, 6, 6, 3]


def _l3_band(R: int, Ts: np.ndarray) -> float:
    lx = np.log(Ts)
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    return float(_L3_Z * 0.5 * np.sqrt(polygamma(1, R / 2) / sxx))


@dataclass
class _L3Result:
    Ts: np.ndarray
    err_mean: np.ndarray  # (len(Ts), R) normalized RMS error of the MC mean per net
    err_var: np.ndarray  # same for the MC variance
    pred_var: np.ndarray  # (len(Ts),) exact predicted normalized RMS of the variance estimate
    z_mean: np.ndarray  # (len(Ts), R) max |MC − exact| / stated SE over entries, mean
    z_var: np.ndarray  # same, variance
    R: int
    n: int


def _l3_experiment(ctx: Context) -> _L3Result:
    """MC dropout on R small random nets against enumerated mean, variance and 4th moment."""
    rng = ctx.rng("L3")
    if ctx.quick:
        R, Ts, n = 20, np.array([10, 32, 100, 316, 1000]), 3
    else:
        R, Ts, n = 50, np.array([10, 32, 100, 316, 1000, 3162, 10000]), 4
    e_mean = np.empty((Ts.size, R))
    e_var = np.empty((Ts.size, R))
    z_mean = np.empty((Ts.size, R))
    z_var = np.empty((Ts.size, R))
    pred = np.empty((Ts.size, R))
    for r in range(R):
        net = dc.MLP.random(_L3_SIZES, "tanh", sites=("h1", "h2"), rng=rng, seed=None)
        x = rng.standard_normal((n, _L3_SIZES[0]))
        mu, var = (np.asarray(a) for a in classical.predictive_moments(net, x, _L3_Q))

        def fourth(tr: Any, prob: Any, mu: np.ndarray = mu) -> tuple[Any]:
            v = np.asarray(dc.losses.softmax(tr.logits)) - mu
            return (np.tensordot(prob, v**4, axes=1),)

        (m4,) = dc.exact.expectation(net, x, _L3_Q, fourth, what="L3 fourth moment")
        c_mean = float(np.mean(var))
        c_var = float(np.mean(m4 - var**2))  # leading coefficient of Var(σ̂²_T)·T
        for i, T in enumerate(Ts):
            mc = classical.mc_dropout(net, x, _L3_Q, samples=int(T), rng=rng)
            m, v = np.asarray(mc.mean), np.asarray(mc.var)
            e_mean[i, r] = np.mean((m - mu) ** 2) / c_mean
            e_var[i, r] = np.mean((v - var) ** 2) / c_var
            z_mean[i, r] = np.max(np.abs(m - mu) / np.asarray(mc.mean_stderr))
            z_var[i, r] = np.max(np.abs(v - var) / np.asarray(mc.var_stderr))
            # exact Var(σ̂²_T) = (μ₄ − (T−3)/(T−1) σ⁴)/T, normalized like e_var
            pred[i, r] = np.mean(m4 - (T - 3) / (T - 1) * var**2) / T / c_var
    return _L3Result(Ts, np.sqrt(e_mean), np.sqrt(e_var), np.sqrt(pred.mean(axis=1)),
                     z_mean, z_var, R, n)


def _rms(e: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(e**2, axis=1))


def _draw_l3(res: _L3Result, path: Path | str) -> Path:
    fig, axes = plots.figure(2, sharey=True, title=(
        f"L3: MC dropout vs exact enumeration ({res.R} random tanh MLPs {_L3_SIZES}, "
        f"q = {_L3_Q:g} on h1, h2, {res.n} inputs each)\n" + plots.band_caption(res.R)))
    Ts = res.Ts.astype(float)
    for ax, e, what, norm in (
        (axes[0], res.err_mean, "mean", "σ"), (axes[1], res.err_var, "variance", "√(μ₄−σ⁴)")
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        plots.band(ax, Ts, e, label="per-net RMS error (median, band)", color="C0")
        rms = _rms(e)
        slope = plots.loglog_slope(Ts, rms)
        ax.plot(Ts, rms, "s", color="C3", ms=5, label=f"RMS over nets (fitted slope {slope:.3f})")
        if what == "variance":
            ax.plot(Ts, res.pred_var, "-", color="C2", lw=1,
                    label="exact prediction √((μ₄−(T−3)/(T−1)σ⁴)/T)")
        plots.guide(ax, Ts, 1 / np.sqrt(Ts[0]), -0.5, label="1/√T")
        plots.style(ax, xlabel="passes T", ylabel="RMS error / exact scale" if what == "mean"
                    else "", title=f"MC {what} (error normalized by {norm})", logx=True,
                    logy=True, xticks=[int(t) for t in Ts[::2]], legend_loc="lower left")
    return plots.save(fig, path)


@plot("l3", help="L3: MC dropout error of the predictive mean and variance vs passes T, "
      "log-log, with the 1/√T reference")
def plot_l3(ctx: Context, path: Path | str) -> Path:
    """Run the L3 experiment (quick or full per ``ctx``) and plot it to ``path``."""
    return _draw_l3(_l3_experiment(ctx), path)


@claim(
    "L3",
    statement="MC dropout: the mean and variance of T stochastic passes converge to the "
    "enumerated predictive mean and variance at rate 1/√T",
    source="seed 002 (Bayesian Connection: MC Dropout; Gal & Ghahramani 2016)",
    kind="approximation",
    rule="fitted log-log slope of the RMS error vs T (mean and variance) within −0.5 ± "
    f"{_L3_Z:g}·½·sqrt(ψ'(R/2)/S_xx) (R nets, S_xx the spread of log T; seeded)",
)
def measure_l3(ctx: Context) -> Measurement:
    """Fit the log-log rate of the MC errors against T; compare with −½ and the exact law."""
    res = _l3_experiment(ctx)
    band = _l3_band(res.R, res.Ts)
    s_mean = plots.loglog_slope(res.Ts, _rms(res.err_mean))
    s_var = plots.loglog_slope(res.Ts, _rms(res.err_var))
    s_pred = plots.loglog_slope(res.Ts, res.pred_var)
    passed = bool(abs(s_mean + 0.5) <= band and abs(s_var + 0.5) <= band)
    plots_ = []
    path = ctx.plot_path("l3_mc_error_vs_T")
    if path is not None:
        plots_.append(str(_draw_l3(res, path)))
    # RMS/predicted: 1 is the exact law (mean: normalized MSE is exactly 1/T)
    ratio_mean = _rms(res.err_mean) * np.sqrt(res.Ts)
    ratio_var = _rms(res.err_var) / res.pred_var
    note = (
        f"RMS error / exact prediction, mean: {np.min(ratio_mean):.2f}…{np.max(ratio_mean):.2f}; "
        f"variance: {np.min(ratio_var):.2f}…{np.max(ratio_var):.2f}. Slope of the exact "
        f"variance law over this T range: {s_pred:.3f} (the (T−3)/(T−1) term). Largest "
        f"|MC − exact| / stated SE over all entries: mean {res.z_mean.max():.2f}, variance "
        f"{res.z_var.max():.2f}. T = {res.Ts.tolist()}, R = {res.R} nets."
    )
    return Measurement(
        figure=f"slope mean {s_mean:.3f}, variance {s_var:.3f} (band −0.5 ± {band:.3f}; "
        f"T = {res.Ts[0]}…{res.Ts[-1]}, {res.R} nets)",
        passed=passed,
        values={
            "slope_mean": s_mean,
            "slope_var": s_var,
            "slope_var_exact_law": s_pred,
            "band": band,
            "Ts": res.Ts,
            "rms_err_mean": _rms(res.err_mean),
            "rms_err_var": _rms(res.err_var),
            "ratio_to_exact_mean": ratio_mean,
            "ratio_to_exact_var": ratio_var,
            "max_z_mean": float(res.z_mean.max()),
            "max_z_var": float(res.z_var.max()),
            "nets": res.R,
        },
        plots=plots_,
        note=note,
    )
