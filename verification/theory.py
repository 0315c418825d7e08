"""Claim T1: Theorem 4.1 (Wei, Kakade & Ma 2020, Sec. 4.3) measured on linear softmax models.

The theorem bounds ``E_P ℓ̄ − 1.01 E_Pn ℓ̄`` by ``term1 + term2 + term3 + ζ`` up to a universal
constant that the paper does not state (its ``≲``).  We measure, on a synthetic Gaussian-mixture
problem (:func:`dropcheck.theory.t1_experiment`), the smallest constant ``C`` with
``gap ≤ C·RHS`` over a sweep of training sizes ``n`` and norm bounds ``A = ‖Wᵀ‖_{2,1}``, and the
log-log slopes in ``n`` of the gap and of the RHS.  Nothing more is claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from dropcheck.verification._registry import Context, Measurement, claim, plot

import dropcheck.theory as th
from dropcheck.theory import T1Result

# Quick: ~1 s on two cores.  Full: ~20 s.  Sizes are chosen so that the mean gap stays
# resolvable (several standard errors above 0) over most of the sweep: at d = 20 it falls
# roughly like 1/n, and the 1.01 factor makes it negative once it is below 1% of the loss.
_QUICK: dict[str, Any] = {
    "ns": (32, 64, 128, 256, 512),
    "scales": (3.0, 10.0),
    "repeats": 4,
    "n_pop": 100_000,
}
_FULL: dict[str, Any] = {
    "ns": (25, 50, 100, 200, 400, 800, 1600),
    "scales": (1.0, 3.0, 10.0, 30.0),
    "repeats": 6,
    "n_pop": 400_000,
}
_N_SE = 2.0  # standard errors allowed for in C and required of a gap used in a slope fit


#: Terms recomputed here agree with the library's to float64 rounding of means over ≤ 100
#: examples and a few logs and powers (≤ 1e-13 relative); 1e-9 leaves room for the
#: cancellation-free but differently ordered sums of 1 − p_k.
_TERM_TOL = 1e-9


def _experiment(ctx: Context, salt: str = "T1") -> T1Result:
    return th.t1_experiment(rng=ctx.rng(salt), **(_QUICK if ctx.quick else _FULL))


def _terms_by_hand(W: np.ndarray, X: np.ndarray, Y: np.ndarray, B: float, delta: float,
                   A: float) -> dict[str, float]:
    """Every term of Theorem 4.1 transcribed from the paper (eq. 4.7).

    Independent of :func:`dropcheck.theory.theorem41`: numpy and scipy only.
    """
    from scipy.special import logsumexp

    n, c = X.shape[0], W.shape[0]
    z = X @ W.T
    p = np.exp(z - logsumexp(z, axis=1, keepdims=True))
    off = p.copy()
    off[np.arange(n), Y] = 0.0
    one_minus_py = off.sum(1)  # 1 − p_y without cancellation
    mu = float(np.mean(np.sqrt((off**2).sum(1) + one_minus_py**2)))  # ‖p − e_y‖₂
    rest = p.sum(1, keepdims=True) - p  # 1 − p_k = Σ_{j≠k} p_j
    nu = float(np.mean((p * rest).sum(1)))  # tr(diag(p) − ppᵀ) = Σ_k p_k(1 − p_k)
    theta = np.log(n * c) ** 3 * float(np.max((X**2).sum(1)))
    zeta = B * (np.log(1 / delta) + max(np.log(np.log(n)), 0.0)) / n
    term1 = (A * mu) ** (2 / 3) * (theta * B) ** (1 / 3) / n ** (1 / 3)
    term2 = A * np.sqrt(B * nu * theta / n)
    r = B * A**2 * theta / (nu * n)
    term3 = B * A**2 * theta / (n * (np.log(r) ** 2 + 1))
    return {"mu": mu, "nu": nu, "theta": theta, "zeta": zeta, "term1": term1, "term2": term2,
            "term3": term3, "rhs": term1 + term2 + term3 + zeta}


def _term_check(ctx: Context) -> float:
    """Max relative error of the library's Theorem 4.1 terms against :func:`_terms_by_hand`."""
    rng = ctx.rng("T1-terms")
    worst = 0.0
    for n, A in ((10, 1.0), (40, 3.0), (100, 10.0), (100, 30.0)):
        c, d = 4, 6
        W = rng.standard_normal((c, d))
        W *= A / th.norm21(W.T)
        X = rng.standard_normal((n, d))
        Y = rng.integers(0, c, n)
        t = th.theorem41(W, X, Y, B=4.0, delta=0.1, A=A)
        ref = _terms_by_hand(W, X, Y, 4.0, 0.1, A)
        for k, v in ref.items():
            worst = max(worst, abs(float(getattr(t, k)) - v) / abs(v))
    return worst


#: The constant is fixed before the evaluation sweep as this multiple of the calibration
#: sweep's max (gap + 2 SE)/RHS: a maximum over a finite sweep is itself random (a second sweep
#: exceeds it about half the time), and the theorem only asks for *some* fixed constant.
_C_MARGIN = 2.0


def _held_out(res: T1Result, C: float) -> tuple[float, int]:
    """Largest ``(gap − 2 SE)/(C·RHS)`` over the sweep and how many models exceed 1."""
    lower = (res.gap - _N_SE * res.gap_se) / (C * res.rhs)
    return float(np.max(lower)), int(np.sum(lower > 1.0))


def _draw(res: T1Result, path: Path) -> None:
    """Plot gap (± 2 SE), RHS and C·RHS against n on log-log axes, one panel per scale."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import NullFormatter

    C = res.constant(_N_SE)
    gap_slopes, rhs_slopes = res.slopes(_N_SE)
    S = res.scales.size
    cols = min(S, 2)
    rows = -(-S // cols)
    fig = Figure(figsize=(5.2 * cols, 4.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    ns = res.ns
    lowest = np.inf
    for a, ax in enumerate(axes[:S]):
        g, se = res.gap_mean[a], res.gap_mean_se[a]
        pos = g > 0
        sig = g > _N_SE * se
        lower = np.minimum(_N_SE * se, 0.9 * g)  # a log axis cannot show a bar through 0
        for mask, face, label in (
            (sig, "C0", f"gap (mean ± 2 SE), slope {gap_slopes[a]:.2f}"),
            (pos & ~sig, "white", "gap < 2 SE (not in the fit)"),
        ):
            if mask.any():
                ax.errorbar(
                    ns[mask], g[mask], yerr=(lower[mask], _N_SE * se[mask]), fmt="o",
                    color="C0", mfc=face, capsize=3, label=label,
                )
        ax.plot(ns[pos], g[pos], "-", color="C0", lw=1)
        for r in range(res.gap.shape[2]):
            keep = res.gap[a, :, r] > 0
            ax.plot(ns[keep], res.gap[a, keep, r], ".", color="C0", alpha=0.3, ms=4)
        if pos.any():
            lowest = min(lowest, float(g[pos].min()))
        ax.plot(ns, res.rhs_mean[a], "s-", color="C3", label=f"RHS, slope {rhs_slopes[a]:.2f}")
        ax.plot(ns, C * res.rhs_mean[a], "--", color="C3", label=f"C·RHS, C = {C:.2g}")
        ax.axhline(res.B, color="0.5", lw=0.8, ls=":", label=f"B = {res.B:g} (loss cap)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])  # the sweep's sizes, not crowded 10^k minors
        ax.xaxis.set_minor_formatter(NullFormatter())
        hidden = "" if pos.all() else f"  ({(~pos).sum()} sizes with mean gap ≤ 0 not shown)"
        ax.set_title(rf"$A = \|W^\top\|_{{2,1}} = {res.scales[a]:g}$" + hidden, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    if np.isfinite(lowest):
        axes[0].set_ylim(bottom=lowest / 30)  # shared y: keeps tiny, insignificant gaps in view
    for ax in axes[S:]:
        ax.set_visible(False)
    for ax in axes[-cols:]:
        ax.set_xlabel("training size n")
    for ax in axes[::cols]:
        ax.set_ylabel(r"gap $E_P\,\bar\ell - 1.01\,E_{P_n}\bar\ell$;  bound")
    fig.suptitle(
        "Theorem 4.1 (linear softmax, Gaussian mixture): gap vs bound; "
        f"C = max (gap + 2 SE)/RHS = {C:.2g}\n"
        "(RHS without the theorem's universal constant; slopes are log-log fits in n; "
        f"{res.gap.shape[2]} training sets per n, faint dots)",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)


@plot("t1", help="Theorem 4.1: gap (± 2 SE), RHS and C·RHS vs n, log-log, one panel per ‖Wᵀ‖₂,₁")
def plot_t1(ctx: Context, path: Path | str) -> Path:
    """Run the T1 experiment (quick or full per ``ctx``) and write its plot to ``path``."""
    path = Path(path)
    _draw(_experiment(ctx), path)
    return path


@claim(
    "T1",
    statement="Theorem 4.1 (linear softmax, ‖Wᵀ‖_2,1 ≤ A): E_P ℓ̄ − 1.01 E_Pn ℓ̄ ≲ "
    "(Aμ)^(2/3)(θB)^(1/3)/n^(1/3) + A sqrt(Bνθ/n) + BA²θ/(n(log²(BA²θ/(νn))+1)) + ζ; "
    "the gap and the RHS fall with n",
    source="Sec. 4.3, Thm 4.1",
    kind="approximation",
    rule=f"each term (μ, ν, θ, ζ, the three terms, RHS) of dropcheck.theory.theorem41 equals "
    f"an independent transcription of eq. 4.7 to ≤ {_TERM_TOL:g} (else FAIL); the constant "
    f"C_cal = {_C_MARGIN:g} × max (gap + 2 SE)/RHS fixed on a calibration sweep (separate "
    "training sets and population sample), then gap − 2 SE ≤ C_cal·RHS for every model of the "
    "evaluation sweep; "
    "log-log slopes in n of the mean gap and of the mean RHS < 0 at every weight scale A",
)
def measure(ctx: Context) -> Measurement:
    """Sweep n and A on a Gaussian mixture; report C and the slopes of gap and RHS in n."""
    res = _experiment(ctx)
    C0, C = res.constant(0.0), res.constant(_N_SE)
    gap_slopes, rhs_slopes = res.slopes(_N_SE)
    plots = []
    path = ctx.plot_path("t1_gap_vs_n")
    if path is not None:
        _draw(res, path)
        plots.append(str(path))
    fitted = np.isfinite(gap_slopes).all() and np.isfinite(rhs_slopes).all()
    terms_err = _term_check(ctx)
    C_cal = _C_MARGIN * _experiment(ctx, "T1-calibration").constant(_N_SE)
    held, exceed = _held_out(res, C_cal)
    passed = bool(
        np.isfinite(C_cal) and C_cal > 0 and exceed == 0 and fitted and (gap_slopes < 0).all()
        and (rhs_slopes < 0).all()
    )
    A = res.scales
    figure = (
        f"terms vs independent {terms_err:.1g}; C_cal = {C_cal:.2g} (calibration), evaluation "
        f"sweep max (gap − 2 SE)/(C_cal·RHS) {held:.2g} ({exceed} above 1); "
        f"C = {C:.2g} (point {C0:.2g}); slopes in n over A = {A.min():g}..{A.max():g}: "
        f"gap {np.nanmin(gap_slopes):.2f}..{np.nanmax(gap_slopes):.2f}, "
        f"RHS {np.nanmin(rhs_slopes):.2f}..{np.nanmax(rhs_slopes):.2f}"
    )
    terms = np.stack([res.term1, res.term2, res.term3, res.zeta]).mean(axis=(2, 3))  # (4, S)
    names = ("term1", "term2", "term3", "zeta")
    dominant = ", ".join(f"A={A[a]:g}: {names[int(np.argmax(terms[:, a]))]}" for a in range(A.size))
    rising = [f"{A[a]:g}" for a in range(A.size) if np.any(np.diff(res.rhs_mean[a]) > 0)]
    note = (
        f"largest RHS term: {dominant}. "
        + (f"RHS is not monotone in n at A = {', '.join(rising)} (μ, ν of the trained model grow "
           "as it overfits less). " if rising else "")
        + f"RHS/B ranges {res.rhs.min() / res.B:.3g}..{res.rhs.max() / res.B:.3g} (the bound "
        "without its constant exceeds the loss cap B: vacuous at these sizes); largest "
        f"population-loss SE {res.pop_loss_se.max():.2g}; n = {res.ns.tolist()}, "
        f"{res.gap.shape[2]} training sets per n."
    )
    return Measurement(
        figure=figure,
        passed=passed,
        exact=bool(terms_err <= _TERM_TOL),
        values={
            "terms_rel_error": terms_err,
            "C_calibration": C_cal,
            "held_out_max_ratio": held,
            "held_out_exceed": exceed,
            "C": C,
            "C_point": C0,
            "ns": res.ns,
            "scales": res.scales,
            "B": res.B,
            "delta": res.delta,
            "gap_slopes": gap_slopes,
            "rhs_slopes": rhs_slopes,
            "gap_mean": res.gap_mean,
            "gap_mean_se": res.gap_mean_se,
            "rhs_mean": res.rhs_mean,
            "term1_mean": res.term1.mean(axis=2),
            "term2_mean": res.term2.mean(axis=2),
            "term3_mean": res.term3.mean(axis=2),
            "zeta": res.zeta.mean(axis=2),
            "max_pop_loss_se": float(res.pop_loss_se.max()),
        },
        plots=plots,
        note=note,
    )
