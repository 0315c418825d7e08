"""Claims X1–X4: the paper's experimental trends, reproduced at small scale (Sec. 3, 3.1, 5).

Wei, Kakade & Ma (ICML 2020) train LSTMs and Transformers on language data; here the same
training procedures run on a synthetic classification task small enough to train a few hundred
times in minutes, with dropcheck's own gradients (no autodiff framework):

- X1 (Sec. 3, Fig. 1): DROPOUT_k (Alg. 1) with larger ``k`` generalizes worse;
- X2 (Sec. 3.1, Fig. 2, 4): DROPOUT_k plus the noise ``sqrt(½(1−1/k)) ξ̃_drop`` (Sec. 3.1) or
  ``sqrt(1−1/k) ξ_approx`` (Alg. 4) recovers DROPOUT_1;
- X3 (Sec. 5.1, Fig. 3, 5, Table 1): Alg. 2 with ``R_approx`` and ``ξ_approx``
  (:func:`dropcheck.implicit.update`) replaces dropout; ``R_approx`` alone beats DROPOUT_k with
  large ``k`` but not DROPOUT_1;
- X4 (Sec. 5.3, Table 2): the gap between DROPOUT_1 and DROPOUT_k shrinks as the training set
  grows.

**Task.**  Inputs ``x ~ N(0, I_10)``; labels from a random teacher MLP ``10 → 16 → 3`` (tanh,
weights ×2 LeCun) by argmax, then replaced by a uniform label with probability 0.2 (train and
test alike, so the test loss is a population loss of the noisy distribution).  The student is a
tanh MLP ``10 → width → 3`` with dropout (drop probability ``q = 0.5``, as in the paper's
analysis) on its hidden layer, trained by plain SGD on mini-batches drawn without replacement;
it overfits the noisy labels within a few hundred steps.

**Paired design.**  Replicate ``r`` fixes the teacher, the data, the initial weights and the
sequence of mini-batches for every method; only the dropout / injected noise differs (its own
stream per method).  Differences between methods are therefore paired per replicate and
reported as mean ± standard error over replicates; a difference is called *resolved* when
``|mean| > 2·SE``.

**Metrics.**  Test cross-entropy (the log of the paper's perplexity) of the network without
dropout on a held-out set, evaluated every ``eval_every`` steps: the *late* test loss, averaged
over the last quarter of training (the primary metric; a single evaluation jitters with the
last few mini-batches), and the *best* one over training (the paper's "best validation
perplexity"); the late test accuracy.

**Setting.**  ``lr = 1.0`` is the one setting of those tried (docs/experiments.md) where the
DROPOUT_k − DROPOUT_1 gap is resolved, so that X2–X4 have a gap to explain; the sign of that
gap is reported as measured.

These are empirical claims: the measurement reports what was seen (``passed=None``), and the
figure says plainly whether the paper's trend appeared.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from dropcheck.verification._registry import Context, Measurement, claim, plot

import dropcheck as dc
import dropcheck.implicit as im
from dropcheck import plots

# ----- configuration -----


@dataclass(frozen=True)
class _Config:
    """One experimental setting (hashable: it keys the cache of training runs)."""

    d0: int = 10  # input dimension
    classes: int = 3
    teacher_width: int = 16
    teacher_scale: float = 2.0
    label_noise: float = 0.2  # probability that a label is replaced by a uniform one
    n_train: int = 128
    n_test: int = 2000
    width: int = 32  # hidden units of the student (the dropout site h1)
    q: float = 0.5
    lr: float = 1.0  # see docs/experiments.md: the gap DROPOUT_k − DROPOUT_1 is resolved here
    batch: int = 32
    steps: int = 400
    eval_every: int = 20
    reps: int = 6  # replicates (teacher, data, init, batch order): the "seeds"
    ks: tuple[int, ...] = (1, 4, 16)  # X1
    k_inject: int = 4  # X2 (Fig. 2 uses k = 4)
    ns: tuple[int, ...] = (64, 128, 256, 512)  # X4


_FULL = _Config()
_QUICK = replace(
    _FULL, width=16, n_train=64, n_test=400, batch=16, steps=100, eval_every=10, reps=3,
    ns=(32, 64, 128),
)


def _cfg(ctx: Context) -> _Config:
    return _QUICK if ctx.quick else _FULL


def _k_big(cfg: _Config) -> int:
    """The large ``k`` of X3 and X4 (the paper's DROPOUT_32 in Fig. 3; here the largest of X1)."""
    return max(cfg.ks)


# ----- methods -----


class _Method(NamedTuple):
    """A training procedure: ``kind`` and its ``k`` (masks averaged per example)."""

    kind: str
    k: int = 1

    @property
    def label(self) -> str:
        """Legend label."""
        k = self.k
        return {
            "plain": "no dropout",
            "dropout": f"DROPOUT$_{{{k}}}$",
            "inject_exact": rf"DROPOUT$_{{{k}}}$ + $\sqrt{{(1-1/k)/2}}\,\tilde\xi_{{drop}}$",
            "inject_approx": rf"DROPOUT$_{{{k}}}$ + $\sqrt{{1-1/k}}\,\xi_{{approx}}$ (Alg. 4)",
            "r_approx": r"$R_{approx}$ only (Alg. 2, no noise)",
            "r_approx_xi": r"$R_{approx}$ + $\xi_{approx}$ (Alg. 2)",
        }[self.kind]

    @property
    def name(self) -> str:
        """Plain-text name for figures and JSON keys."""
        k = self.k
        return {
            "plain": "no_dropout",
            "dropout": f"DROPOUT_{k}",
            "inject_exact": f"DROPOUT_{k}+xi_tilde",
            "inject_approx": f"DROPOUT_{k}+xi_approx",
            "r_approx": "R_approx",
            "r_approx_xi": "R_approx+xi_approx",
        }[self.kind]


_PLAIN = _Method("plain")
_D1 = _Method("dropout", 1)


#: The "late" metric averages the evaluation points with step ≥ this fraction of training.
_LATE = 0.75

# ----- data and training -----


def _stream(seed: int, rep: int, what: str) -> np.random.Generator:
    """An independent generator per (run seed, replicate, purpose); stable across processes."""
    return np.random.default_rng([seed, rep, zlib.crc32(what.encode())])


def _task(cfg: _Config, seed: int, rep: int, n_train: int) -> tuple[Any, Any, Any, Any]:
    """Teacher-labelled data with label noise: ``(x_train, y_train, x_test, y_test)``.

    The training pool holds ``max(cfg.ns)`` examples and ``n_train`` takes its first rows, so
    the training sets of X4 are nested and the test set is the same for every ``n``.
    """
    rng = _stream(seed, rep, "data")
    teacher = dc.MLP.random([cfg.d0, cfg.teacher_width, cfg.classes], rng=rng, seed=None,
                            scale=cfg.teacher_scale)
    pool = max(max(cfg.ns), cfg.n_train, n_train)
    x = rng.standard_normal((pool + cfg.n_test, cfg.d0))
    y = np.argmax(np.asarray(teacher.forward(x)), axis=1)
    flip = rng.random(y.shape[0]) < cfg.label_noise
    y = np.where(flip, rng.integers(0, cfg.classes, y.shape[0]), y)
    return x[:n_train], y[:n_train], x[pool:], y[pool:]


def _init(cfg: _Config, seed: int, rep: int) -> dc.MLP:
    """The student at initialization (LeCun-scaled tanh MLP, dropout on ``h1``)."""
    return dc.MLP.random([cfg.d0, cfg.width, cfg.classes], activation="tanh", sites=("h1",),
                         rng=_stream(seed, rep, "init"), seed=None)


def _direction(net: dc.MLP, method: _Method, x: Any, y: Any, q: float, rng: Any) -> Any:
    """The flat update direction ``g`` of ``method`` on the mini-batch (dropcheck's gradients)."""
    kind, k = method
    if kind == "plain":  # Alg. 2 with neither regularizer: the gradient without dropout
        return im.update_direction(net, x, y, q, rng=rng, explicit=None, implicit=None)
    if kind == "dropout":
        return im.dropout_k_gradient(net, x, y, q, k=k, rng=rng)
    if kind == "inject_exact":
        return im.noise_injected_gradient(net, x, y, q, k=k, rng=rng, noise="exact")
    if kind == "inject_approx":
        return im.noise_injected_gradient(net, x, y, q, k=k, rng=rng, noise="approx")
    raise ValueError(f"no direction for method {method!r}")


def _step(net: dc.MLP, method: _Method, x: Any, y: Any, cfg: _Config, rng: Any) -> dc.MLP:
    """One SGD step ``W ← W − lr·g`` of ``method`` on the mini-batch ``(x, y)``."""
    if method.kind in ("r_approx", "r_approx_xi"):  # Alg. 2, λ₁ = q/(2(1−q)), λ₂ = 1
        implicit = "approx" if method.kind == "r_approx_xi" else None
        return net.with_params(im.update(net, x, y, cfg.q, lr=cfg.lr, rng=rng, explicit="approx",
                                         implicit=implicit))
    g = net.unflatten_params(_direction(net, method, x, y, cfg.q, rng))
    return net.with_params({name: p - cfg.lr * g[name] for name, p in net.params.items()})


@dataclass(frozen=True)
class _Run:
    """The record of one training run: metrics at ``steps`` and the final network."""

    steps: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    train_loss: np.ndarray
    final: dc.MLP


def _evaluate(net: dc.MLP, x: Any, y: Any) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the network without dropout."""
    loss = float(np.mean(np.asarray(net.loss_value(x, y))))
    acc = float(np.mean(np.argmax(np.asarray(net.forward(x)), axis=1) == y))
    return loss, acc


def _batches(cfg: _Config, seed: int, rep: int, n_train: int) -> np.ndarray:
    """Mini-batch indices ``(steps, batch)``, each batch drawn without replacement.

    They depend on the replicate and ``n_train`` only, so every method of a replicate sees the
    same batches (the paired design).
    """
    rng = _stream(seed, rep, f"batches{n_train}")
    m = min(cfg.batch, n_train)
    return np.stack([rng.choice(n_train, m, replace=False) for _ in range(cfg.steps)])


@functools.cache
def _train(cfg: _Config, method: _Method, seed: int, rep: int, n_train: int) -> _Run:
    """Train ``method`` on replicate ``rep`` with ``n_train`` examples (cached per process)."""
    xtr, ytr, xte, yte = _task(cfg, seed, rep, n_train)
    net = _init(cfg, seed, rep)
    noise = _stream(seed, rep, f"noise/{method.name}/{n_train}")
    rec: dict[str, list[float]] = {"steps": [], "test_loss": [], "test_acc": [], "train": []}

    def record(t: int) -> None:
        loss, acc = _evaluate(net, xte, yte)
        rec["steps"].append(t)
        rec["test_loss"].append(loss)
        rec["test_acc"].append(acc)
        rec["train"].append(_evaluate(net, xtr, ytr)[0])

    for t, idx in enumerate(_batches(cfg, seed, rep, n_train)):
        if t % cfg.eval_every == 0:
            record(t)
        net = _step(net, method, xtr[idx], ytr[idx], cfg, noise)
    record(cfg.steps)
    return _Run(np.asarray(rec["steps"]), np.asarray(rec["test_loss"]),
                np.asarray(rec["test_acc"]), np.asarray(rec["train"]), net)


def _runs(ctx: Context, method: _Method, n_train: int | None = None) -> list[_Run]:
    cfg = _cfg(ctx)
    n = cfg.n_train if n_train is None else n_train
    return [_train(cfg, method, ctx.seed, r, n) for r in range(cfg.reps)]


# ----- statistics -----


def _late(run: _Run, v: np.ndarray) -> float:
    """Mean of ``v`` over the evaluation points in the last quarter of training."""
    return float(np.mean(v[run.steps >= _LATE * run.steps[-1]]))


def _metric(runs: list[_Run], what: str) -> np.ndarray:
    """Per replicate: ``late`` / ``best`` test loss, ``acc`` (late test accuracy), ``train``.

    ``late`` is the test loss averaged over the last quarter of training (the primary metric:
    one evaluation point jitters with the last few mini-batches); ``best`` its minimum over all
    evaluation points (the paper's "best validation perplexity"); ``train`` the final training
    loss without dropout.
    """
    if what == "late":
        return np.array([_late(r, r.test_loss) for r in runs])
    if what == "best":
        return np.array([np.min(r.test_loss) for r in runs])
    if what == "acc":
        return np.array([_late(r, r.test_acc) for r in runs])
    if what == "train":
        return np.array([r.train_loss[-1] for r in runs])
    raise ValueError(f"unknown metric {what!r}")


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over the replicates (last axis)."""
    v = np.asarray(v, dtype=float)
    return float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(v.shape[-1]))


def _pm(v: np.ndarray, digits: int = 3) -> str:
    m, s = _mean_se(v)
    return f"{m:.{digits}f}±{s:.{digits}f}"


def _diff(a: list[_Run], b: list[_Run], what: str = "late") -> dict[str, Any]:
    """Paired difference ``a − b`` of a metric: mean, SE, and whether ``|mean| > 2 SE``."""
    d = _metric(a, what) - _metric(b, what)
    m, s = _mean_se(d)
    return {"mean": m, "se": s, "resolved": bool(abs(m) > 2 * s), "per_rep": d}


def _signed(d: dict[str, Any], digits: int = 3) -> str:
    return f"{d['mean']:+.{digits}f}±{d['se']:.{digits}f}"


def _summary(runs: list[_Run]) -> dict[str, Any]:
    """Per-method numbers for the JSON report."""
    out: dict[str, Any] = {}
    for what in ("late", "best", "acc", "train"):
        v = _metric(runs, what)
        m, s = _mean_se(v)
        out[what] = {"mean": m, "se": s, "per_rep": v}
    out["curve_steps"] = runs[0].steps
    out["curve_test_loss_mean"] = np.mean([r.test_loss for r in runs], axis=0)
    return out


# ----- plots -----


def _band(ax: Any, x: np.ndarray, v: np.ndarray, *, label: str, color: str,
          linestyle: str = "-") -> None:
    """Mean over replicates (rows of ``v``) with a ±1 standard-error band."""
    m = np.mean(v, axis=0)
    s = np.std(v, axis=0, ddof=1) / math.sqrt(v.shape[0])
    ax.plot(x, m, color=color, linestyle=linestyle, lw=1.6, label=label)
    ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, linewidth=0)


def _draw_curves(ctx: Context, path: Path, methods: list[_Method], title: str,
                 ref: _Method = _D1) -> Path:
    """Test loss vs step per method (left) and its paired difference to ``ref`` (right)."""
    cfg = _cfg(ctx)
    fig, (ax, axd) = plots.figure(2, width=5.4, height=4.2, title=(
        f"{title}\n(tanh MLP {cfg.d0}→{cfg.width}→{cfg.classes}, q = {cfg.q}, SGD lr "
        f"{cfg.lr}, batch {cfg.batch}, n_train = {cfg.n_train}; lines: mean over {cfg.reps} "
        "replicates, bands: ±1 standard error; grey span: the steps averaged by the late metric)"))
    base = np.stack([r.test_loss for r in _runs(ctx, ref)])
    for i, m in enumerate(methods):
        runs = _runs(ctx, m)
        steps = runs[0].steps
        v = np.stack([r.test_loss for r in runs])
        style = "--" if m.kind == "plain" else "-"
        color = "0.45" if m.kind == "plain" else f"C{i}"
        _band(ax, steps, v, label=m.label, color=color, linestyle=style)
        if m != ref and m.kind != "plain":  # no dropout is far off: left panel only
            _band(axd, steps, v - base, label=f"{m.label} − {ref.label}", color=color)
    for a in (ax, axd):  # the span averaged by the "late" metric
        a.axvspan(_LATE * cfg.steps, cfg.steps, color="0.5", alpha=0.08, linewidth=0)
    axd.axhline(0.0, color="k", lw=0.8)
    plots.style(ax, xlabel="SGD step", ylabel="test cross-entropy (nats, no dropout)",
                legend_loc="upper left")
    plots.style(axd, xlabel="SGD step",
                ylabel=f"paired difference to {ref.name} (nats)", legend=False)
    plots.legend_below(fig, axd, ncols=2)
    return plots.save(fig, path)


def _x1_methods(cfg: _Config) -> list[_Method]:
    return [_PLAIN] + [_Method("dropout", k) for k in cfg.ks]


def _x2_methods(cfg: _Config) -> list[_Method]:
    k = cfg.k_inject
    return [_D1, _Method("dropout", k), _Method("inject_exact", k), _Method("inject_approx", k)]


def _x3_methods(cfg: _Config) -> list[_Method]:
    return [_PLAIN, _D1, _Method("dropout", _k_big(cfg)), _Method("r_approx"),
            _Method("r_approx_xi")]


def _draw_x4(ctx: Context, path: Path) -> Path:
    cfg = _cfg(ctx)
    big = _Method("dropout", _k_big(cfg))
    ns = np.asarray(cfg.ns, dtype=float)
    fig, (ax,) = plots.figure(width=6.4, height=4.6, title=(
        f"X4: implicit effect vs training-set size: paired test-loss gap {big.name} − "
        f"DROPOUT_1\n(mean ± 1 standard error over {cfg.reps} replicates; q = {cfg.q}, "
        f"{cfg.steps} SGD steps, lr {cfg.lr} at every n; points offset sideways for legibility)"))
    labels = {"late": "late test loss (mean over the last quarter of training)",
              "best": "best test loss over training"}
    for i, what in enumerate(("late", "best")):
        g = [_diff(_runs(ctx, big, n), _runs(ctx, _D1, n), what) for n in cfg.ns]
        ax.errorbar(ns * (1 + 0.03 * (2 * i - 1)), [d["mean"] for d in g],
                    yerr=[d["se"] for d in g], marker="o", ms=5, capsize=3, color=f"C{i}",
                    label=labels[what])
    ax.axhline(0.0, color="k", lw=0.8)
    plots.style(ax, xlabel="training-set size n_train", logx=True, xticks=cfg.ns,
                ylabel=f"{big.name} − DROPOUT_1 test cross-entropy (nats)")
    return plots.save(fig, path)


def _write(ctx: Context, name: str, draw: Any) -> list[str]:
    path = ctx.plot_path(name)
    if path is None:
        return []
    draw(ctx, path)
    return [str(path)]


@plot("x1_curves", help="X1: test loss vs SGD step for DROPOUT_k, k = 1, 4, 16 (Fig. 1)")
def plot_x1(ctx: Context, path: Path | str) -> Path:
    """Test loss of DROPOUT_k over training, and the paired difference to DROPOUT_1."""
    return _draw_curves(ctx, Path(path), _x1_methods(_cfg(ctx)),
                        "X1 (Fig. 1): DROPOUT_k for several k, test loss vs step")


@plot("x2_curves", help="X2: DROPOUT_k with injected ξ̃_drop / ξ_approx noise vs DROPOUT_1")
def plot_x2(ctx: Context, path: Path | str) -> Path:
    """Test loss of the noise-injection procedures over training (Fig. 2, 4)."""
    return _draw_curves(ctx, Path(path), _x2_methods(_cfg(ctx)),
                        "X2 (Fig. 2, 4): noise injection into DROPOUT_k, test loss vs step")


@plot("x3_curves", help="X3: R_approx (+ ξ_approx) by Alg. 2 vs DROPOUT_1 and DROPOUT_k")
def plot_x3(ctx: Context, path: Path | str) -> Path:
    """Test loss of the analytical regularizers over training (Fig. 3, 5)."""
    return _draw_curves(ctx, Path(path), _x3_methods(_cfg(ctx)),
                        "X3 (Fig. 3, 5): R_approx and ξ_approx (Alg. 2), test loss vs step")


@plot("x4_gap", help="X4: test-loss gap DROPOUT_k − DROPOUT_1 vs training-set size (Table 2)")
def plot_x4(ctx: Context, path: Path | str) -> Path:
    """The implicit-effect gap against ``n_train``."""
    return _draw_x4(ctx, Path(path))


# ----- claims -----

_LATE_TXT = "late test loss (mean over the last quarter of training)"


def _z(d: dict[str, Any]) -> float:
    """``|mean|/SE`` of a paired difference (inf when every replicate agrees exactly)."""
    return abs(d["mean"]) / d["se"] if d["se"] > 0 else math.inf


def _resolved_word(d: dict[str, Any]) -> str:
    return f"{'resolved' if d['resolved'] else 'not resolved'}, |Δ|/SE = {_z(d):.1f}"


def _setting(cfg: _Config) -> str:
    return (f"{cfg.reps} replicates; tanh MLP {cfg.d0}→{cfg.width}→{cfg.classes}, q = {cfg.q}, "
            f"n_train = {cfg.n_train}, {cfg.steps} SGD steps, lr {cfg.lr}, batch {cfg.batch}")


def _losses(ctx: Context, methods: list[_Method], n: int | None = None) -> str:
    return ", ".join(f"{m.name} {_pm(_metric(_runs(ctx, m, n), 'late'))}" for m in methods)


def _diffs(ctx: Context, a: _Method, b: _Method) -> dict[str, dict[str, Any]]:
    return {w: _diff(_runs(ctx, a), _runs(ctx, b), w) for w in ("late", "best", "acc")}


@claim(
    "X1",
    statement="DROPOUT_k with larger k (less dropout gradient noise, same expected objective) "
    "generalizes worse",
    source="Sec. 3, Alg. 1, Fig. 1",
    kind="empirical",
    rule="reported: late and best test cross-entropy per k (mean ± SE over replicates), paired "
    "differences to DROPOUT_1 (expected trend: test loss grows with k; 'seen' when "
    "DROPOUT_kmax − DROPOUT_1 > 2 SE on the late test loss)",
)
def measure_x1(ctx: Context) -> Measurement:
    """Train DROPOUT_k for the configured ``k`` (and no dropout) and compare test losses."""
    cfg = _cfg(ctx)
    per_k = {k: _Method("dropout", k) for k in cfg.ks}
    diffs = {k: _diffs(ctx, m, _D1) for k, m in per_k.items() if k != 1}
    top = diffs[max(cfg.ks)]["late"]
    seen = top["resolved"] and top["mean"] > 0
    means = [_mean_se(_metric(_runs(ctx, m), "late"))[0] for m in per_k.values()]
    order = ("grows" if np.all(np.diff(means) > 0) else
             "falls" if np.all(np.diff(means) < 0) else "is not monotone")
    if seen:
        verdict = "trend SEEN (larger k generalizes worse)"
    elif top["resolved"]:
        verdict = "trend NOT SEEN — REVERSED (larger k generalizes better)"
    else:
        verdict = "trend NOT SEEN (no resolved difference)"
    figure = (
        f"{verdict}: {_LATE_TXT} "
        + _losses(ctx, list(per_k.values()) + [_PLAIN])
        + f"; it {order} with k. Paired Δ vs DROPOUT_1 (late / best / late accuracy): "
        + "; ".join(f"k={k} {_signed(d['late'])} / {_signed(d['best'])} / "
                    f"{_signed(d['acc'])}" for k, d in diffs.items())
        + f" ({_setting(cfg)})"
    )
    values = {
        "config": asdict(cfg), "trend_seen": bool(seen), "resolved": top["resolved"],
        "order_in_k": order,
        "methods": {m.name: _summary(_runs(ctx, m)) for m in _x1_methods(cfg)},
        "paired_diff_vs_dropout_1": {f"k={k}": v for k, v in diffs.items()},
    }
    note = ("DROPOUT_k and DROPOUT_1 optimize the same expected objective L_drop; only the "
            "covariance of the gradient noise differs (1/k, claim D1). See docs/experiments.md "
            "for the other settings tried.")
    return Measurement(figure, None, values, _write(ctx, "x1_test_loss_vs_step", plot_x1), note)


@claim(
    "X2",
    statement="Injecting noise into DROPOUT_k (sqrt(½(1−1/k)) ξ̃_drop, Sec. 3.1; or "
    "sqrt(1−1/k) ξ_approx, Alg. 4) recovers the test performance of DROPOUT_1",
    source="Sec. 3.1, Alg. 4, Fig. 2, 4",
    kind="empirical",
    rule="reported: paired late/best test-loss differences of DROPOUT_k and of both injected "
    "runs to DROPOUT_1 and DROPOUT_k (expected trend: injected runs within 2 SE of DROPOUT_1, "
    "closer to it than DROPOUT_k, and > 2 SE away from DROPOUT_k; informative only when "
    "DROPOUT_k − DROPOUT_1 is resolved, > 2 SE)",
)
def measure_x2(ctx: Context) -> Measurement:
    """DROPOUT_k, DROPOUT_k + ξ̃_drop and DROPOUT_k + ξ_approx against DROPOUT_1."""
    cfg = _cfg(ctx)
    k = cfg.k_inject
    dk, ex, ap = _Method("dropout", k), _Method("inject_exact", k), _Method("inject_approx", k)
    d = {m.name: _diffs(ctx, m, _D1) for m in (dk, ex, ap)}
    from_k = {m.name: _diff(_runs(ctx, m), _runs(ctx, dk)) for m in (ex, ap)}
    gap = d[dk.name]["late"]
    closer = {m.name: bool(abs(d[m.name]["late"]["mean"]) < abs(gap["mean"])) for m in (ex, ap)}
    within = {m.name: not d[m.name]["late"]["resolved"] for m in (ex, ap)}
    # recovered: indistinguishable from DROPOUT_1, closer to it, and resolved away from DROPOUT_k
    recovered = {m: closer[m] and within[m] and from_k[m]["resolved"] for m in closer}
    seen = gap["resolved"] and all(recovered.values())
    if not gap["resolved"]:
        verdict = (f"UNINFORMATIVE: DROPOUT_{k} − DROPOUT_1 = {_signed(gap)} is not resolved, "
                   "so there is no gap to recover")
    else:
        side = ("higher, as in Fig. 2" if gap["mean"] > 0 else
                "LOWER — the reverse of Fig. 2, so here recovering DROPOUT_1 means a worse loss")
        verdict = (
            f"trend {'SEEN' if seen else 'NOT SEEN'}: DROPOUT_{k}'s late test loss is {side} "
            f"(Δ {_signed(gap)}); "
            + "; ".join(f"{m} {'recovers DROPOUT_1' if recovered[m] else 'does not recover it'}"
                        f" (Δ vs DROPOUT_1 {_signed(d[m]['late'])}, "
                        f"{'within' if within[m] else 'outside'} 2 SE; Δ vs DROPOUT_{k} "
                        f"{_signed(from_k[m])}, {_resolved_word(from_k[m])})"
                        for m in recovered))
    figure = (
        f"{verdict}. {_LATE_TXT}: " + _losses(ctx, [_D1, dk, ex, ap])
        + "; best-over-training Δ vs DROPOUT_1: "
        + ", ".join(f"{n} {_signed(v['best'])}" for n, v in d.items())
        + f" ({_setting(cfg)})"
    )
    values = {
        "config": asdict(cfg), "k": k, "trend_seen": bool(seen), "gap_resolved": gap["resolved"],
        "closer_than_dropout_k": closer, "within_2se_of_dropout_1": within,
        "recovered": recovered, "paired_diff_vs_dropout_k": from_k,
        "methods": {m.name: _summary(_runs(ctx, m)) for m in _x2_methods(cfg)},
        "paired_diff_vs_dropout_1": d,
    }
    note = ("The injected noise restores the covariance of DROPOUT_1's gradient exactly (ξ̃, "
            "claim D3) or approximately (ξ_approx, claim I2); the expected update is the same "
            "for all four procedures, so a recovered gap is due to the noise alone.")
    return Measurement(figure, None, values, _write(ctx, "x2_test_loss_vs_step", plot_x2), note)


@claim(
    "X3",
    statement="Alg. 2 with R_approx and ξ_approx replaces dropout; R_approx alone beats "
    "DROPOUT_k with large k but not DROPOUT_1",
    source="Sec. 5.1, Alg. 2, Fig. 3, 5, Table 1",
    kind="empirical",
    rule="reported: paired late/best test-loss differences of R_approx + ξ_approx and of "
    "R_approx alone (λ₁ = q/(2(1−q)), λ₂ = 1, untuned) to DROPOUT_1 and DROPOUT_kmax "
    "(expected trend: R_approx + ξ_approx within 2 SE of DROPOUT_1; R_approx alone below "
    "DROPOUT_kmax by > 2 SE)",
)
def measure_x3(ctx: Context) -> Measurement:
    """The analytical regularizers (Alg. 2 via ``dc.implicit.update``) against dropout."""
    cfg = _cfg(ctx)
    big = _Method("dropout", _k_big(cfg))
    r_only, r_xi = _Method("r_approx"), _Method("r_approx_xi")
    rx_d1, r_big, r_d1 = _diffs(ctx, r_xi, _D1), _diffs(ctx, r_only, big), _diffs(ctx, r_only, _D1)
    plain_d1 = _diff(_runs(ctx, _PLAIN), _runs(ctx, _D1))
    replaces = not rx_d1["late"]["resolved"]
    beats = r_big["late"]["resolved"] and r_big["late"]["mean"] < 0
    if beats:
        r_word = "beats it (SEEN"
    elif r_big["late"]["resolved"]:
        r_word = "is WORSE (NOT SEEN"
    else:
        r_word = "no resolved difference (NOT SEEN"
    r_word += f"; |Δ|/SE = {_z(r_big['late']):.1f})"
    figure = (
        f"R_approx+ξ_approx (Alg. 2) vs DROPOUT_1: Δ late {_signed(rx_d1['late'])}, best "
        f"{_signed(rx_d1['best'])} — "
        + (f"replaces dropout within 2 SE (SEEN; {_resolved_word(rx_d1['late'])})" if replaces
           else f"{'worse' if rx_d1['late']['mean'] > 0 else 'better'} than dropout "
           f"({_resolved_word(rx_d1['late'])}; NOT SEEN)")
        + f"; R_approx alone vs {big.name}: Δ late {_signed(r_big['late'])}, best "
        f"{_signed(r_big['best'])} — {r_word}; R_approx alone "
        f"vs DROPOUT_1: Δ late {_signed(r_d1['late'])} ({_resolved_word(r_d1['late'])}); "
        f"no dropout vs DROPOUT_1: Δ late {_signed(plain_d1)}. {_LATE_TXT}: "
        + _losses(ctx, _x3_methods(cfg))
        + f" ({_setting(cfg)})"
    )
    values = {
        "config": asdict(cfg), "k_big": big.k, "lam1": cfg.q / (2 * (1 - cfg.q)), "lam2": 1.0,
        "replaces_dropout_within_2se": bool(replaces), "r_only_beats_dropout_k": bool(beats),
        "methods": {m.name: _summary(_runs(ctx, m)) for m in _x3_methods(cfg)},
        "r_approx_xi_minus_dropout_1": rx_d1, "r_approx_minus_dropout_k": r_big,
        "r_approx_minus_dropout_1": r_d1, "no_dropout_minus_dropout_1": plain_d1,
    }
    note = ("Strengths are the dropout-matching ones of Sec. 4 (no tuning), as in the paper's "
            "Sec. 5.1; the explicit step is ∇R_approx from dc.explicit.r_approx_grad. R_approx "
            "alone and DROPOUT_kmax are both (nearly) noise-free: if R_approx captured dropout's "
            "explicit regularizer they would agree.")
    return Measurement(figure, None, values, _write(ctx, "x3_test_loss_vs_step", plot_x3), note)


@claim(
    "X4",
    statement="The implicit regularization effect (DROPOUT_k vs DROPOUT_1) shrinks as the "
    "training set grows",
    source="Sec. 5.3, Table 2",
    kind="empirical",
    rule="reported: paired late test-loss gap DROPOUT_kmax − DROPOUT_1 (mean ± SE) at each "
    "n_train (expected trend: |gap| decreases with n_train; the paper's gap is positive, "
    "DROPOUT_1 better)",
)
def measure_x4(ctx: Context) -> Measurement:
    """The DROPOUT_kmax − DROPOUT_1 gap over nested training sets of increasing size."""
    cfg = _cfg(ctx)
    big = _Method("dropout", _k_big(cfg))
    gaps = {w: [_diff(_runs(ctx, big, n), _runs(ctx, _D1, n), w) for n in cfg.ns]
            for w in ("late", "best")}
    mag = np.abs([g["mean"] for g in gaps["late"]])
    # the gap relative to DROPOUT_1's late test loss (which itself falls with n)
    rel = [g["mean"] / _mean_se(_metric(_runs(ctx, _D1, n), "late"))[0]
           for n, g in zip(cfg.ns, gaps["late"], strict=True)]
    rel_monotone = bool(np.all(np.diff(np.abs(rel)) < 0))
    shrinks = bool(mag[-1] < mag[0])
    monotone = bool(np.all(np.diff(mag) < 0))
    signs = {int(np.sign(g["mean"])) for g in gaps["late"] if g["resolved"]}
    if not signs:
        sign = "no gap is resolved at any n"
    elif signs == {1}:
        sign = "the resolved gaps are positive (DROPOUT_1 better, the paper's sign)"
    elif signs == {-1}:
        sign = "the resolved gaps are NEGATIVE (DROPOUT_1 worse: the reverse of the paper's sign)"
    else:
        sign = "the resolved gaps change sign"
    figure = (
        f"|gap| {'shrinks' if shrinks else 'does NOT shrink'} from n={cfg.ns[0]} to "
        f"n={cfg.ns[-1]} ({'monotonically' if monotone else 'not monotonically'}; magnitude "
        f"trend {'SEEN' if shrinks and monotone else 'NOT SEEN'}); {sign}. Gap {big.name} − "
        "DROPOUT_1, late test loss: "
        + ", ".join(f"n={n} {_signed(g)}" for n, g in zip(cfg.ns, gaps["late"], strict=True))
        + "; relative to DROPOUT_1's late loss: "
        + ", ".join(f"{r:+.1%}" for r in rel)
        + (" (also shrinks monotonically)" if rel_monotone else
           " (the relative gap does NOT shrink monotonically)")
        + "; best: "
        + ", ".join(f"n={n} {_signed(g)}" for n, g in zip(cfg.ns, gaps["best"], strict=True))
        + f"; DROPOUT_1 late test loss {_pm(_metric(_runs(ctx, _D1, cfg.ns[0]), 'late'))} "
        f"(n={cfg.ns[0]}) → {_pm(_metric(_runs(ctx, _D1, cfg.ns[-1]), 'late'))} "
        f"(n={cfg.ns[-1]}) ({cfg.reps} replicates, q = {cfg.q}, {cfg.steps} SGD steps, lr "
        f"{cfg.lr}, at every n)"
    )
    values = {
        "config": asdict(cfg), "k_big": big.k, "ns": cfg.ns,
        "abs_gap_shrinks": shrinks, "abs_gap_monotone": monotone, "resolved_signs": sorted(signs),
        "gap_late": gaps["late"], "gap_best": gaps["best"], "gap_late_relative": rel,
        "relative_gap_monotone": rel_monotone,
        "dropout_1_late": {n: _summary(_runs(ctx, _D1, n))["late"] for n in cfg.ns},
    }
    note = ("Training sets are nested (the first n examples of one pool) with one test set; the "
            "number of steps is fixed, so larger n means fewer passes over the data.")
    return Measurement(figure, None, values, _write(ctx, "x4_gap_vs_n", plot_x4), note)
