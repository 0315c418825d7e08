"""Claim A2: Taylor expansion around the next layer (Wei, Kakade & Ma 2020, fn. 4, App. A.2).

The paper's remedy for a dropped unit not being a small perturbation is to expand the loss
around the next pre-activation ``z = W h̃ + b``, where ``δz = W(η ⊙ h)`` is a sum of many small
terms.  Because ``z`` is affine in ``h̃`` the second-order term is the same number
(:func:`dropcheck.explicit.next_layer` computes it through the Hessian w.r.t. ``z`` of the tail
network, a different route from :func:`dropcheck.explicit.taylor`): the identity is checked on
MLPs of several depths, activations and site sets, and the error of both against the exact
``R_drop`` is measured as ``q``, the weight scale and the width vary — it is the same error,
flat in ``q``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dropcheck.verification._common import fmt
from dropcheck.verification._registry import Context, Measurement, claim, plot
from dropcheck.verification.mutants import Mutant, swap

import dropcheck as dc
from dropcheck import plots
from dropcheck.explicit import taylor_next

# Both sides are float64 sums of O(d) Hessian-vector products of O(1) entries along different
# sweep orders (next-layer Hessian contracted with W_{:,k} h_k, versus the h-Hessian diagonal):
# rounding ≲ 1e-15 relative; 1e-12 leaves room for cancellation when R_taylor is small.
_TOL = 1e-12
_CASES = (
    ([5, 6, 6, 4], "tanh", ("h1", "h2")),
    ([4, 5, 3], "relu", ("x", "h1")),
    ([4, 4, 4, 4, 3], "sigmoid", ("x", "h1", "h2", "h3")),
    ([6, 5, 5, 3], "gelu", ("h1",)),
)


def _pooled(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(np.abs(a - b)) / np.sum(np.abs(b)))


def _identity(ctx: Context) -> float:
    rng = ctx.rng("A2-identity")
    worst = 0.0
    for sizes, act, sites in _CASES:
        for q in (0.1, 0.5, 0.8):
            net = dc.MLP.random(sizes, act, sites=sites, rng=rng, seed=None)
            x, y = rng.standard_normal((5, sizes[0])), rng.integers(0, sizes[-1], 5)
            a = np.asarray(dc.explicit.next_layer(net, x, y, q))
            b = np.asarray(dc.explicit.taylor(net, x, y, q))
            worst = max(worst, _pooled(a, b))
    return worst


@dataclass
class _Sweep:
    axes: dict[str, tuple[float, ...]]  # sweep name -> its x values
    err: dict[str, dict[str, np.ndarray]]  # sweep -> estimator -> (len(x), nets)
    nets: int


def _errors(net: dc.MLP, x: np.ndarray, y: np.ndarray, q: float) -> tuple[float, float]:
    exact = np.asarray(dc.exact.explicit_regularizer(net, x, y, q))
    nxt = np.asarray(dc.explicit.next_layer(net, x, y, q))
    tay = np.asarray(dc.explicit.taylor(net, x, y, q))
    return _pooled(nxt, exact), _pooled(tay, exact)


def _sweep(ctx: Context) -> _Sweep:
    nets = 4 if ctx.quick else 16
    axes = {
        "q": (0.03, 0.1, 0.3, 0.6) if ctx.quick else (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7),
        "scale": (0.1, 0.3, 1.0) if ctx.quick else (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
        "width": (4, 8, 12) if ctx.quick else (4, 6, 8, 10, 12, 14),
    }
    err = {k: {e: np.empty((len(v), nets)) for e in ("next", "taylor")} for k, v in axes.items()}
    rng = ctx.rng("A2-sweep")
    for r in range(nets):
        seed = int(rng.integers(2**31))
        x, y = rng.standard_normal((8, 5)), rng.integers(0, 4, 8)
        for key, xs in axes.items():
            for i, v in enumerate(xs):
                width = int(v) if key == "width" else 6
                scale = float(v) if key == "scale" else 1.0
                q = float(v) if key == "q" else 0.3
                net = dc.MLP.random([5, width, 6, 4], "tanh", sites=("h1",), seed=seed,
                                    scale=scale, bias_scale=0.1 * scale)
                err[key]["next"][i, r], err[key]["taylor"][i, r] = _errors(net, x, y, q)
    return _Sweep(axes, err, nets)


_XLABEL = {"q": "drop probability q (s = 1, d = 6)",
           "scale": "weight scale s (q = 0.3, d = 6)",
           "width": "width d of h1 (q = 0.3, s = 1)"}


def _draw(res: _Sweep, path: Path | str) -> Path:
    fig, axes = plots.figure(3, width=4.0, title=(
        "A2: Taylor around the next layer vs around the site (4.2), error against exact R_drop\n"
        "tanh MLP [5, d, 6, 4], dropout at h1, 8 inputs per net; " + plots.band_caption(res.nets)))
    for ax, key in zip(axes, ("q", "scale", "width"), strict=True):
        xs = res.axes[key]
        plots.band(ax, xs, res.err[key]["taylor"], label="R_taylor (4.2), around h", color="C0")
        plots.band(ax, xs, res.err[key]["next"], label="R_next, around z = W h̃ + b",
                   color="C3", marker="x", linestyle="--", alpha=0.0)
        plots.style(ax, xlabel=_XLABEL[key],
                    ylabel="pooled relative error vs exact R_drop" if key == "q" else "",
                    logx=True, logy=True, xticks=xs, legend=False)
    plots.legend_below(fig, axes[0])
    return plots.save(fig, path)


@plot("a2", help="A2: error of the next-layer Taylor term and of (4.2) against exact R_drop vs "
      "q, weight scale and width (the two coincide)")
def plot_a2(ctx: Context, path: Path | str) -> Path:
    """Run the A2 sweep (quick or full per ``ctx``) and plot it to ``path``."""
    return _draw(_sweep(ctx), path)


@claim(
    "A2",
    statement="Taylor around the next layer: (q/(2(1−q)))⟨D²_z(ℓ∘F_{i+1}), W diag(h²) Wᵀ⟩ "
    "equals R_taylor (4.2) exactly (z is affine in h̃), so it has the same error against R_drop "
    "(flat in q)",
    source="Wei, Kakade & Ma 2020, Sec. 4.1 footnote 4 and App. A.2",
    kind="identity",
    rule=f"max pooled relative |R_next − R_taylor| ≤ {_TOL:g} over tanh/relu/sigmoid/gelu MLPs, "
    "all site sets; the errors vs q and width are reported",
)
def measure_a2(ctx: Context) -> Measurement:
    """The identity on several architectures, then both errors against exact R_drop."""
    worst = _identity(ctx)
    res = _sweep(ctx)
    med = {k: {e: np.median(v, axis=1) for e, v in d.items()} for k, d in res.err.items()}
    slope = {k: plots.loglog_slope(res.axes[k], med[k]["next"]) for k in res.axes}
    q01 = list(res.axes["q"]).index(0.1)
    plots_ = []
    path = ctx.plot_path("a2_next_layer")
    if path is not None:
        plots_.append(str(_draw(res, path)))
    return Measurement(
        figure=f"identity max rel. diff {fmt(worst)}; median error vs exact "
        f"{fmt(float(med['q']['next'][0]))} at q = {res.axes['q'][0]:g} and "
        f"{fmt(float(med['q']['next'][q01]))} at q = 0.1 (no fall as q → 0); log-log slope in "
        f"weight scale {slope['scale']:.2f}, in width {slope['width']:.2f}",
        passed=worst <= _TOL,
        values={"identity_max_rel_diff": worst, "axes": res.axes, "median_err": med,
                "slopes": slope, "nets": res.nets},
        plots=plots_,
        note="The next-layer expansion does not fix the flat-in-q error of (4.2): it is the same "
        "second-order term (the paper: 'it does not change the final result'). What the "
        "z-view suggests is a fall with width (δz is a sum of d small terms); over the widths "
        "measured here (4–14, one tanh layer after the site) the error barely moves.",
    )


def _tail_without_activation(model: dc.MLP, site: str) -> dc.MLP | None:
    tail = _REAL_TAIL(model, site)
    if tail is None:
        return None
    ws = [tail.params[f"W{i}"] for i in range(1, tail.n_layers + 1)]
    bs = [tail.params[f"b{i}"] for i in range(1, tail.n_layers + 1)]
    return dc.MLP(ws, bs, "identity", ("x",), tail.loss)


_REAL_TAIL = taylor_next.tail_network

MUTANTS = [
    Mutant(
        name="next_layer_linear_tail",
        description="next-layer Hessian of a linearized tail (the activation after z ignored)",
        claims=("A2",),
        patch=lambda: swap(taylor_next, "tail_network", _tail_without_activation),
    ),
]
