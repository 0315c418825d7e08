"""Claims X1r–X4r, S1r (an LSTM language model on real text) and X1d–X4d (an MLP on real digits).

The trends of X1–X4 (:mod:`dropcheck.verification.experiments`, a synthetic teacher task)
measured where the paper measured them — on a language model trained on real text — and on a
real image-classification set (issue 17):

- **LSTM language model** (:func:`dropcheck.lm.fit`): the Shakespeare corpus beside the
  repository (``../shared/data/shakespeare``; word level, the vocabulary capped as configured
  with ``<unk>`` for the rest, :func:`dropcheck.lm.load_corpus`), or, where that folder is
  absent, the built-in ``pydoc_data.topics`` text.  One layer, embedding = hidden width,
  untied decoder, dropout with masks locked across time on the embedding output and before the
  decoder, SGD with AWD-LSTM's gradient clipping, trained on a slice of the train split small
  enough to overfit in minutes on two CPU cores; validation perplexity on the first tokens of
  the valid split.  Settings: ``_LM_FULL`` / ``_LM_QUICK`` below and docs/experiments.md.
- **MLP on digits**: scikit-learn's bundled ``load_digits`` (1,797 8×8 images, 10 classes, no
  download; the optional extra ``dropcheck[data]``); pixels scaled to [0, 1]; a tanh MLP
  ``64 → width → 10`` with dropout on the hidden layer trained by the same SGD steps as X1–X4
  (:func:`dropcheck.verification.experiments._step`).  Without scikit-learn these claims
  report that they were skipped.
- **S1r**: S1's comparison ``strength·R̂_approx`` vs Monte-Carlo ``R_drop`` and ``ξ_approx``
  vs ``ξ_drop`` measured by :func:`dropcheck.lm.evaluate_corpus` on validation windows at
  checkpoints of the trained DROPOUT_1 language model (start, middle, end of training).

**Paired design** as in X1–X4: replicate ``r`` fixes the initial weights (and for the digits
the train/test split and batch order; the language model's window order is the corpus order)
for every method; only the dropout / injected noise differs.  Differences are paired per
replicate, reported as mean ± standard error; *resolved* when ``|mean| > 2 SE``.  Metrics: the
*late* validation (test) loss — the mean over the evaluations in the last quarter of training —
and the *best* one over training (the paper's "best validation perplexity"); perplexity =
``exp(loss)``.  These are empirical claims: reported as measured (``passed=None``), with SEEN /
NOT SEEN for the paper's trend.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from dropcheck.verification import experiments as _x
from dropcheck.verification._registry import Context, Measurement, claim

import dropcheck as dc
from dropcheck import plots
from dropcheck.lm import evaluate_corpus, fit, load_corpus
from dropcheck.lm.train import History, Method
from dropcheck.models.lstm import LSTM

#: The Shakespeare corpus beside the repository (CI clones the repository next to shared/).
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shakespeare"


# ----- the language model -----


@dataclass(frozen=True)
class _LMConfig:
    """One language-model setting (hashable: it keys the cache of training runs)."""

    vocab: int = 1000  # vocabulary cap (word level; <unk> for the rest)
    width: int = 64  # embedding = hidden units (one LSTM layer)
    q: float = 0.4  # drop probability at "emb" and "out", masks locked across time
    batch: int = 16
    bptt: int = 20
    lr: float = 20.0  # SGD step, per-token mean loss
    clip: float = 0.25  # AWD-LSTM's gradient-norm clip
    steps: int = 250
    eval_every: int = 25
    eval_tokens: int = 4000  # the first tokens of the valid split
    n_train: int = 10000  # train-split tokens (a slice: the model overfits it)
    small_frac: float = 0.2  # X4: 0.2× of n_train (Table 2's downsampling factor)
    reps: int = 3
    ks: tuple[int, ...] = (1, 2, 4)  # X1 (the paper's Table 2 uses k = 1, 2, 4)
    probes: int = 1  # noise probes of the R_approx gradient per step
    l2: float = 1e-4  # ℓ2 strength (untuned; the paper tunes it)
    s1_windows: int = 4
    s1_labels: int = 20  # label samples per window
    s1_mc: int = 200  # Monte-Carlo masks per window
    s1_xi: int = 8


_LM_FULL = _LMConfig()
_LM_QUICK = replace(_LM_FULL, vocab=300, width=16, batch=8, bptt=10, steps=40, eval_every=10,
                    eval_tokens=800, n_train=2000, s1_windows=2, s1_labels=10, s1_mc=60,
                    s1_xi=4)


def _lm_cfg(ctx: Context) -> _LMConfig:
    return _LM_QUICK if ctx.quick else _LM_FULL


def _lm_q(cfg: _LMConfig) -> dict[str, float]:
    return {"emb": cfg.q, "out": cfg.q}


@functools.cache
def _corpus(vocab: int, n_train: int) -> Any:
    """The real corpus: Shakespeare beside the repository, else the built-in text."""
    path = SHAKESPEARE if (SHAKESPEARE / "train.txt.xz").exists() else None
    return load_corpus(path, vocab_size=vocab, max_train_tokens=n_train)


def _stream_seed(seed: int, rep: int, what: str) -> list[int]:
    return [seed, rep, zlib.crc32(what.encode())]


def _lm_methods(cfg: _LMConfig) -> dict[str, list[Method]]:
    k = max(cfg.ks)
    return {
        "X1r": [Method("no_dropout")] + [Method("dropout", j) for j in cfg.ks],
        "X2r": [Method("dropout", 1), Method("dropout", k), Method("dropout+xi_tilde", k),
                Method("dropout+xi_approx", k)],
        "X3r": [Method("no_dropout"), Method("dropout", 1), Method("dropout", k),
                Method("r_approx"), Method("r_approx+xi_approx"), Method("r_tilde"),
                Method("l2", lam=cfg.l2)],
    }


@functools.cache
def _lm_run(cfg: _LMConfig, method: Method, seed: int, rep: int, small: bool = False) -> History:
    """Train ``method`` on replicate ``rep`` (cached per process; ``small``: 0.2× of the data)."""
    c = _corpus(cfg.vocab, cfg.n_train)
    train = c.train[: int(cfg.small_frac * cfg.n_train)] if small else c.train
    model = LSTM.random(c.vocab_size, cfg.width, cfg.width, 1, sites=("emb", "out"),
                        rng=np.random.default_rng(_stream_seed(seed, rep, "lm-init")), seed=None)
    return fit(model, train, c.valid, method, _lm_q(cfg), steps=cfg.steps, batch=cfg.batch,
               bptt=cfg.bptt, lr=cfg.lr, clip=cfg.clip, eval_every=cfg.eval_every,
               eval_tokens=cfg.eval_tokens, probes=cfg.probes,
               seed=int(np.random.default_rng(_stream_seed(seed, rep, f"lm/{method.name}/{small}"))
                        .integers(2**31)),
               checkpoints=(0, cfg.steps // 2, cfg.steps) if method == Method("dropout", 1)
               else ())


def _as_run(h: History) -> _x._Run:
    """A language-model history as X1–X4's run record (valid loss in the test-loss slot)."""
    nan = np.full(len(h.steps), math.nan)
    return _x._Run(np.asarray(h.steps), np.asarray(h.valid_loss), nan,
                   np.asarray(h.train_loss), h.final)


def _lm_runs(ctx: Context, m: Method, small: bool = False) -> list[_x._Run]:
    cfg = _lm_cfg(ctx)
    return [_as_run(_lm_run(cfg, m, ctx.seed, r, small)) for r in range(cfg.reps)]


def _lm_setting(cfg: _LMConfig) -> str:
    c = _corpus(cfg.vocab, cfg.n_train)
    return (f"{cfg.reps} replicates; {c.source.split('/')[-1]} word level, vocabulary "
            f"{c.vocab_size}, {c.train.size} train tokens, valid ppl on {cfg.eval_tokens} "
            f"tokens; LSTM 1×{cfg.width}, q = {cfg.q} (emb, out; locked), SGD lr {cfg.lr} clip "
            f"{cfg.clip}, {cfg.steps} steps of {cfg.batch}×{cfg.bptt} tokens")


# ----- the MLP on digits -----


@dataclass(frozen=True)
class _DigitsConfig:
    """The digits setting; ``lr`` and ``q`` are read by X1–X4's SGD step."""

    width: int = 64
    q: float = 0.5
    lr: float = 0.5
    batch: int = 32
    steps: int = 400
    eval_every: int = 20
    n_train: int = 300  # a small training set: the MLP overfits it
    ns: tuple[int, ...] = (150, 300, 1200)  # X4
    reps: int = 5
    ks: tuple[int, ...] = (1, 4, 16)
    k_inject: int = 4


_D_FULL = _DigitsConfig()
_D_QUICK = replace(_D_FULL, width=32, steps=100, eval_every=10, reps=3, ns=(150, 600))


def _d_cfg(ctx: Context) -> _DigitsConfig:
    return _D_QUICK if ctx.quick else _D_FULL


def _have_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target.astype(np.int64)


#: Held-out digits per replicate (the rest is the training pool).
_D_TEST = 497


@functools.cache
def _d_run(cfg: _DigitsConfig, method: _x._Method, seed: int, rep: int, n_train: int) -> _x._Run:
    """Train ``method`` on replicate ``rep``'s split (cached per process)."""
    x, y = _digits()
    perm = np.random.default_rng(_stream_seed(seed, rep, "digits-split")).permutation(len(y))
    te, pool = perm[:_D_TEST], perm[_D_TEST:]
    xtr, ytr, xte, yte = x[pool[:n_train]], y[pool[:n_train]], x[te], y[te]
    net = dc.MLP.random([64, cfg.width, 10], activation="tanh", sites=("h1",),
                        rng=np.random.default_rng(_stream_seed(seed, rep, "digits-init")),
                        seed=None)
    order = np.random.default_rng(_stream_seed(seed, rep, f"digits-batches{n_train}"))
    batches = [order.choice(n_train, min(cfg.batch, n_train), replace=False)
               for _ in range(cfg.steps)]
    noise = np.random.default_rng(_stream_seed(seed, rep, f"digits/{method.name}/{n_train}"))
    rec: dict[str, list[float]] = {"steps": [], "loss": [], "acc": [], "train": []}
    for t in range(cfg.steps + 1):
        if t % cfg.eval_every == 0 or t == cfg.steps:
            loss, acc = _x._evaluate(net, xte, yte)
            rec["steps"].append(t)
            rec["loss"].append(loss)
            rec["acc"].append(acc)
            rec["train"].append(_x._evaluate(net, xtr, ytr)[0])
        if t < cfg.steps:
            idx = batches[t]
            net = _x._step(net, method, xtr[idx], ytr[idx], cfg, noise)
    return _x._Run(*(np.asarray(rec[k]) for k in ("steps", "loss", "acc", "train")), net)


def _d_runs(ctx: Context, m: _x._Method, n_train: int | None = None) -> list[_x._Run]:
    cfg = _d_cfg(ctx)
    n = cfg.n_train if n_train is None else n_train
    return [_d_run(cfg, m, ctx.seed, r, n) for r in range(cfg.reps)]


def _d_setting(cfg: _DigitsConfig) -> str:
    return (f"{cfg.reps} replicates; sklearn load_digits, tanh MLP 64→{cfg.width}→10, q = "
            f"{cfg.q}, n_train = {cfg.n_train}, {_D_TEST} test digits, {cfg.steps} SGD steps, "
            f"lr {cfg.lr}, batch {cfg.batch}")


def _d_methods(cfg: _DigitsConfig) -> dict[str, list[_x._Method]]:
    k, big = cfg.k_inject, max(cfg.ks)
    return {
        "X1d": [_x._PLAIN] + [_x._Method("dropout", j) for j in cfg.ks],
        "X2d": [_x._D1, _x._Method("dropout", k), _x._Method("inject_exact", k),
                _x._Method("inject_approx", k)],
        "X3d": [_x._PLAIN, _x._D1, _x._Method("dropout", big), _x._Method("r_approx"),
                _x._Method("r_approx_xi")],
    }


_SKIP = Measurement("skipped: scikit-learn is not installed (pip install 'dropcheck[data]')",
                    None, {"skipped": "scikit-learn not installed"})


# ----- verdicts shared by both tasks -----


def _ppl(v: float) -> str:
    return f"{math.exp(v):.1f}"


def _late_pm(runs: list[_x._Run], lm: bool) -> str:
    m, s = _x._mean_se(_x._metric(runs, "late"))
    return f"ppl {_ppl(m)} ({m:.3f}±{s:.3f} nats)" if lm else f"{m:.3f}±{s:.3f}"


def _x1(get: Any, methods: list[Any], setting: str, lm: bool) -> tuple[str, dict]:
    """X1's verdict: the late loss grows with k when DROPOUT_kmax − DROPOUT_1 > 2 SE."""
    drop = [m for m in methods if m.kind == "dropout"]
    d1, top = drop[0], drop[-1]
    diffs = {m.name: {w: _x._diff(get(m), get(d1), w) for w in ("late", "best")}
             for m in drop[1:]}
    t = diffs[top.name]["late"]
    means = [_x._mean_se(_x._metric(get(m), "late"))[0] for m in drop]
    order = ("grows" if np.all(np.diff(means) > 0) else
             "falls" if np.all(np.diff(means) < 0) else "is not monotone")
    if t["resolved"] and t["mean"] > 0:
        verdict = "trend SEEN (larger k generalizes worse)"
    elif t["resolved"]:
        verdict = "trend NOT SEEN — REVERSED (larger k generalizes better)"
    else:
        verdict = "trend NOT SEEN (no resolved difference)"
    figure = (f"{verdict}: late held-out loss "
              + ", ".join(f"{m.name} {_late_pm(get(m), lm)}" for m in methods)
              + f"; it {order} with k. Paired Δ vs {d1.name} (late / best, nats): "
              + "; ".join(f"{n} {_x._signed(d['late'])} / {_x._signed(d['best'])}"
                          for n, d in diffs.items()) + f" ({setting})")
    return figure, {"trend_seen": bool(t["resolved"] and t["mean"] > 0), "order_in_k": order,
                    "paired_diff_vs_dropout_1": diffs}


def _x2(get: Any, d1: Any, dk: Any, injected: list[Any], setting: str, lm: bool
        ) -> tuple[str, dict]:
    """X2's verdict: the injected runs sit with DROPOUT_1, away from DROPOUT_k, or not."""
    gap = _x._diff(get(dk), get(d1))
    res = {}
    for m in injected:
        v1, vk = _x._diff(get(m), get(d1)), _x._diff(get(m), get(dk))
        res[m.name] = {"vs_dropout_1": v1, "vs_dropout_k": vk,
                       "recovered": bool(not v1["resolved"] and vk["resolved"]
                                         and abs(v1["mean"]) < abs(gap["mean"]))}
    seen = gap["resolved"] and all(r["recovered"] for r in res.values())
    if not gap["resolved"]:
        head = (f"UNINFORMATIVE: {dk.name} − {d1.name} = {_x._signed(gap)} is not resolved "
                "(no gap to recover)")
    else:
        head = (f"trend {'SEEN' if seen else 'NOT SEEN'}: {dk.name} − {d1.name} = "
                f"{_x._signed(gap)} ({'the paper' if gap['mean'] > 0 else 'REVERSED'} sign)")
    figure = (head + "; " + "; ".join(
        f"{n}: Δ vs {d1.name} {_x._signed(r['vs_dropout_1'])}, vs {dk.name} "
        f"{_x._signed(r['vs_dropout_k'])} ({'recovers' if r['recovered'] else 'does not recover'}"
        f" {d1.name})" for n, r in res.items())
        + ". Late held-out loss: " + ", ".join(f"{m.name} {_late_pm(get(m), lm)}"
                                            for m in [d1, dk, *injected]) + f" ({setting})")
    return figure, {"trend_seen": bool(seen), "gap": gap, "injected": res}


def _x3(get: Any, d1: Any, dk: Any, plain: Any, r_only: Any, r_xi: Any, extra: list[Any],
        setting: str, lm: bool) -> tuple[str, dict]:
    """X3's verdict: Alg. 2 (R + ξ) within 2 SE of DROPOUT_1; R alone below DROPOUT_k."""
    rx_d1 = {w: _x._diff(get(r_xi), get(d1), w) for w in ("late", "best")}
    r_dk = {w: _x._diff(get(r_only), get(dk), w) for w in ("late", "best")}
    others = {m.name: _x._diff(get(m), get(d1)) for m in [plain, r_only, *extra]}
    replaces = not rx_d1["late"]["resolved"]
    beats = r_dk["late"]["resolved"] and r_dk["late"]["mean"] < 0
    figure = (
        f"{r_xi.name} (Alg. 2) vs {d1.name}: Δ late {_x._signed(rx_d1['late'])}, best "
        f"{_x._signed(rx_d1['best'])} — "
        + ("replaces dropout within 2 SE (SEEN)" if replaces else
           f"{'worse' if rx_d1['late']['mean'] > 0 else 'better'} than dropout (NOT SEEN)")
        + f"; {r_only.name} alone vs {dk.name}: Δ late {_x._signed(r_dk['late'])} — "
        + ("beats it (SEEN)" if beats else "does not beat it (NOT SEEN)")
        + "; Δ late vs " + d1.name + ": "
        + ", ".join(f"{n} {_x._signed(v)}" for n, v in others.items())
        + ". Late held-out loss: "
        + ", ".join(f"{m.name} {_late_pm(get(m), lm)}"
                    for m in [plain, d1, dk, r_only, r_xi, *extra]) + f" ({setting})")
    return figure, {"replaces_dropout_within_2se": bool(replaces),
                    "r_only_beats_dropout_k": bool(beats), "r_xi_minus_dropout_1": rx_d1,
                    "r_minus_dropout_k": r_dk, "minus_dropout_1": others}


def _x4(gaps: dict[str, dict[str, Any]], setting: str) -> tuple[str, dict]:
    """X4's verdict: |gap DROPOUT_k − DROPOUT_1| smaller on the larger training set."""
    names = list(gaps)
    small, large = gaps[names[0]], gaps[names[-1]]
    shrinks = abs(large["mean"]) < abs(small["mean"])
    signs = {int(np.sign(g["mean"])) for g in gaps.values() if g["resolved"]}
    sign = ("no gap resolved" if not signs else "resolved gaps positive (the paper's sign)"
            if signs == {1} else "resolved gaps NEGATIVE (reverse of the paper's sign)"
            if signs == {-1} else "resolved gaps change sign")
    seen = shrinks and small["resolved"] and small["mean"] > 0
    figure = (f"trend {'SEEN' if seen else 'NOT SEEN'}: |gap| "
              f"{'shrinks' if shrinks else 'does NOT shrink'} with more data; {sign}. Gap "
              "(late held-out loss, nats): "
              + ", ".join(f"{n} {_x._signed(g)}" for n, g in gaps.items()) + f" ({setting})")
    return figure, {"trend_seen": bool(seen), "abs_gap_shrinks": bool(shrinks), "gaps": gaps}


# ----- plots -----


def _curves(path: Path | None, get: Any, methods: list[Any], title: str, ylabel: str,
            xlabel: str, lm: bool) -> list[str]:
    """Mean validation curve per method with ±1 SE bands; perplexity for the language model."""
    if path is None:
        return []
    fig, (ax,) = plots.figure(width=6.6, height=4.6, title=title)
    for i, m in enumerate(methods):
        runs = get(m)
        v = np.stack([r.test_loss for r in runs])
        v = np.exp(v) if lm else v
        style = "--" if m.kind in ("no_dropout", "plain") else "-"
        _x._band(ax, runs[0].steps, v, label=m.name, color=f"C{i}", linestyle=style)
    plots.style(ax, xlabel=xlabel, ylabel=ylabel, legend=False)
    if lm:
        ax.set_yscale("log")
    plots.legend_below(fig, ax, ncols=3)
    return [str(plots.save(fig, path))]


def _lm_title(ctx: Context, what: str) -> str:
    cfg = _lm_cfg(ctx)
    return (f"{what}\n(LSTM LM 1×{cfg.width}, vocabulary {cfg.vocab}, {cfg.n_train} train tokens"
            f", q = {cfg.q}; mean over {cfg.reps} replicates, band ±1 SE)")


def _lm_plot(ctx: Context, name: str, methods: list[Method], what: str) -> list[str]:
    return _curves(ctx.plot_path(name), lambda m: _lm_runs(ctx, m), methods,
                   _lm_title(ctx, what), "validation perplexity (no dropout; log scale)",
                   "SGD step", True)


def _d_plot(ctx: Context, name: str, methods: list[Any], what: str) -> list[str]:
    cfg = _d_cfg(ctx)
    return _curves(ctx.plot_path(name), lambda m: _d_runs(ctx, m), methods,
                   f"{what}\n(digits, tanh MLP 64→{cfg.width}→10, n_train {cfg.n_train}, q = "
                   f"{cfg.q}; mean over {cfg.reps} replicates, band ±1 SE)",
                   "test cross-entropy (nats, no dropout)", "SGD step", False)


# ----- claims: the language model -----

_SRC = "issue 17; paper Sec. 3, 5"


@claim("X1r", statement="X1 on real text: DROPOUT_k with larger k generalizes worse (LSTM "
       "language model)", source=f"{_SRC}; Alg. 1, Fig. 1", kind="empirical",
       rule="reported: late/best validation loss per k (mean ± SE), paired differences to "
       "DROPOUT_1; SEEN when DROPOUT_kmax − DROPOUT_1 > 2 SE (late)")
def measure_x1r(ctx: Context) -> Measurement:
    """DROPOUT_k for k in the configured list and no dropout on the language model."""
    cfg = _lm_cfg(ctx)
    ms = _lm_methods(cfg)["X1r"]
    fig, vals = _x1(lambda m: _lm_runs(ctx, m), ms, _lm_setting(cfg), True)
    vals |= {"config": asdict(cfg), "methods": _lm_summary(ctx, ms)}
    return Measurement(fig, None, vals, _lm_plot(ctx, "x1r_valid_ppl", ms,
                                                 "X1r: DROPOUT_k on real text"))


def _lm_summary(ctx: Context, ms: list[Method]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in ms:
        runs = _lm_runs(ctx, m)
        e: dict[str, Any] = {w: dict(zip(("mean", "se"), _x._mean_se(_x._metric(runs, w)),
                                         strict=True)) for w in ("late", "best")}
        e["best_ppl"] = math.exp(e["best"]["mean"])
        e["late_ppl"] = math.exp(e["late"]["mean"])
        e["seconds_per_run"] = float(np.mean(
            [_lm_run(_lm_cfg(ctx), m, ctx.seed, r).seconds for r in range(len(runs))]))
        e["curve_steps"] = runs[0].steps
        e["curve_valid_loss_mean"] = np.mean([r.test_loss for r in runs], axis=0)
        out[m.name] = e
    return out


@claim("X2r", statement="X2 on real text: DROPOUT_k plus sqrt(½(1−1/k)) ξ̃_drop or "
       "sqrt(1−1/k) ξ_approx (Alg. 4) recovers DROPOUT_1 (LSTM language model)",
       source=f"{_SRC}; Sec. 3.1, Alg. 4, Fig. 2, 4", kind="empirical",
       rule="reported: paired late differences of the injected runs to DROPOUT_1 and "
       "DROPOUT_k; SEEN when the gap is resolved and each injected run is within 2 SE of "
       "DROPOUT_1, closer to it than DROPOUT_k, and > 2 SE from DROPOUT_k")
def measure_x2r(ctx: Context) -> Measurement:
    """Noise injection into DROPOUT_kmax on the language model."""
    cfg = _lm_cfg(ctx)
    ms = _lm_methods(cfg)["X2r"]
    fig, vals = _x2(lambda m: _lm_runs(ctx, m), ms[0], ms[1], ms[2:], _lm_setting(cfg), True)
    vals |= {"config": asdict(cfg), "methods": _lm_summary(ctx, ms)}
    return Measurement(fig, None, vals, _lm_plot(ctx, "x2r_valid_ppl", ms,
                                                 "X2r: noise injection on real text"))


@claim("X3r", statement="X3 on real text: Alg. 2 with R_approx and ξ_approx replaces dropout; "
       "R_approx alone beats DROPOUT_k; R̃_approx (5.1) and ℓ2 for Table 1's ordering",
       source=f"{_SRC}; Sec. 5.1–5.2, Alg. 2, Table 1", kind="empirical",
       rule="reported: paired late/best differences (λ₁ = q/(2(1−q)), λ₂ = 1, untuned); SEEN "
       "when R_approx + ξ_approx is within 2 SE of DROPOUT_1 and R_approx alone is > 2 SE "
       "below DROPOUT_kmax")
def measure_x3r(ctx: Context) -> Measurement:
    """The analytic regularizers (Alg. 2) against dropout on the language model."""
    cfg = _lm_cfg(ctx)
    ms = _lm_methods(cfg)["X3r"]
    plain, d1, dk, r_only, r_xi, *extra = ms
    fig, vals = _x3(lambda m: _lm_runs(ctx, m), d1, dk, plain, r_only, r_xi, extra,
                    _lm_setting(cfg), True)
    vals |= {"config": asdict(cfg), "methods": _lm_summary(ctx, ms),
             "lam1": cfg.q / (2 * (1 - cfg.q)), "lam2": 1.0}
    return Measurement(fig, None, vals, _lm_plot(ctx, "x3r_valid_ppl", ms,
                                                 "X3r: Alg. 2 regularizers on real text"),
                       note="Best valid perplexity per method is values.methods[*].best_ppl; "
                       "docs/experiments.md sets them beside the paper's Table 1.")


@claim("X4r", statement="X4 on real text: the DROPOUT_k − DROPOUT_1 gap shrinks as the training "
       "corpus grows (0.2× vs 1×; LSTM language model)", source=f"{_SRC}; Sec. 5.3, Table 2",
       kind="empirical",
       rule="reported: paired late gap DROPOUT_kmax − DROPOUT_1 at 0.2× and 1× of the train "
       "slice; SEEN when the 0.2× gap is positive and resolved and |gap| is smaller at 1×")
def measure_x4r(ctx: Context) -> Measurement:
    """The DROPOUT_kmax − DROPOUT_1 gap on 0.2× and 1× of the training slice."""
    cfg = _lm_cfg(ctx)
    d1, dk = Method("dropout", 1), Method("dropout", max(cfg.ks))
    n_small = int(cfg.small_frac * cfg.n_train)
    gaps = {f"{n_small} tokens (0.2×)": _x._diff(_lm_runs(ctx, dk, True), _lm_runs(ctx, d1, True)),
            f"{cfg.n_train} tokens (1×)": _x._diff(_lm_runs(ctx, dk), _lm_runs(ctx, d1))}
    fig, vals = _x4(gaps, _lm_setting(cfg) + f"; gap {dk.name} − {d1.name}")
    vals |= {"config": asdict(cfg), "best_ppl_small": {
        m.name: math.exp(_x._mean_se(_x._metric(_lm_runs(ctx, m, True), "best"))[0])
        for m in (d1, dk)}}
    return Measurement(fig, None, vals)


@claim("S1r", statement="S1 on real text at checkpoints of a trained LSTM language model: "
       "strength·R̂_approx vs Monte-Carlo R_drop, E‖ξ_approx‖² vs E‖ξ_drop‖²",
       source=f"{_SRC}; Sec. 5; slides", kind="empirical",
       rule="reported: per checkpoint (start, middle, end of DROPOUT_1 training) the relative "
       "error strength·R̂_approx/R_drop − 1 with its 95% interval and the trace ratio of the "
       "ξ covariances; SEEN when the interval lies within ±25% (S1's tolerance), NOT SEEN when "
       "it lies outside, else unresolved")
def measure_s1r(ctx: Context) -> Measurement:
    """Evaluate the regularizers over validation windows at three checkpoints."""
    cfg = _lm_cfg(ctx)
    h = _lm_run(cfg, Method("dropout", 1), ctx.seed, 0)
    c = _corpus(cfg.vocab, cfg.n_train)
    rows = {}
    for step, model in sorted(h.checkpoints.items()):
        rep = evaluate_corpus(model, c.valid, _lm_q(cfg), batch=cfg.batch, bptt=cfg.bptt,
                              samples=cfg.s1_labels, mc_samples=cfg.s1_mc,
                              xi_draws=cfg.s1_xi, xi_drop_draws=cfg.s1_xi,
                              max_windows=cfg.s1_windows, seed=ctx.seed + step,
                              chunk=min(cfg.s1_labels, 10), mc_chunk=20,
                              xi_drop_chunk=cfg.s1_xi)
        r, se, a, ase = rep["r_drop"], rep["r_drop_se"], rep["r_approx"], rep["r_approx_se"]
        rel = a / r - 1.0
        rel_se = math.hypot(ase / r, a * se / r**2)  # delta method, both estimates sampled
        rows[step] = {"perplexity": rep["perplexity"], "r_approx": a, "r_approx_se": ase,
                      "r_drop": r, "r_drop_se": se, "rel_error": rel,
                      "rel_error_ci95": (rel - 1.96 * rel_se, rel + 1.96 * rel_se),
                      "within_25pct": _within(rel, rel_se),
                      "xi_trace_ratio": rep["xi_approx_trcov"] / rep["xi_drop_trcov"],
                      "tokens": rep["tokens"]}
    figure = "; ".join(
        f"step {s} (valid ppl {v['perplexity']:.0f}): strength·R̂/R_drop − 1 = "
        f"{v['rel_error']:+.3f} (95% CI [{v['rel_error_ci95'][0]:+.3f}, "
        f"{v['rel_error_ci95'][1]:+.3f}]: {v['within_25pct']}), R_drop {v['r_drop']:.3g}/token, "
        f"tr Cov ξ_approx / ξ_drop "
        f"{v['xi_trace_ratio']:.2f}" for s, v in rows.items())
    figure += (f" ({rows[min(rows)]['tokens']} valid tokens per checkpoint, {cfg.s1_mc} masks "
               f"and {cfg.s1_labels} label samples per window; {_lm_setting(cfg)})")
    return Measurement(figure, None, {"config": asdict(cfg), "checkpoints": rows})


def _within(rel: float, se: float, tol: float = 0.25) -> str:
    """Three-way reading of a relative error against S1's tolerance, from its 95% interval."""
    lo, hi = rel - 1.96 * se, rel + 1.96 * se
    if -tol <= lo and hi <= tol:
        return "within 25%: SEEN"
    if hi < -tol or lo > tol:
        return "outside 25%: NOT SEEN"
    return "interval straddles ±25%: unresolved"


# ----- claims: the MLP on digits -----


@claim("X1d", statement="X1 on real digits: DROPOUT_k with larger k generalizes worse (MLP, "
       "sklearn load_digits)", source=f"{_SRC}; Alg. 1, Fig. 1", kind="empirical",
       rule="as X1r, on the test cross-entropy; skipped without scikit-learn")
def measure_x1d(ctx: Context) -> Measurement:
    """DROPOUT_k on the digits MLP."""
    if not _have_sklearn():
        return _SKIP
    cfg = _d_cfg(ctx)
    ms = _d_methods(cfg)["X1d"]
    fig, vals = _x1(lambda m: _d_runs(ctx, m), ms, _d_setting(cfg), False)
    vals |= {"config": asdict(cfg), "methods": {m.name: _x._summary(_d_runs(ctx, m))
                                                for m in ms}}
    return Measurement(fig, None, vals, _d_plot(ctx, "x1d_test_loss", ms,
                                                "X1d: DROPOUT_k on digits"))


@claim("X2d", statement="X2 on real digits: noise injection into DROPOUT_k recovers DROPOUT_1",
       source=f"{_SRC}; Sec. 3.1, Alg. 4", kind="empirical",
       rule="as X2r, on the test cross-entropy; skipped without scikit-learn")
def measure_x2d(ctx: Context) -> Measurement:
    """Noise injection on the digits MLP."""
    if not _have_sklearn():
        return _SKIP
    cfg = _d_cfg(ctx)
    ms = _d_methods(cfg)["X2d"]
    fig, vals = _x2(lambda m: _d_runs(ctx, m), ms[0], ms[1], ms[2:], _d_setting(cfg), False)
    vals |= {"config": asdict(cfg)}
    return Measurement(fig, None, vals, _d_plot(ctx, "x2d_test_loss", ms,
                                                "X2d: noise injection on digits"))


@claim("X3d", statement="X3 on real digits: Alg. 2 with R_approx and ξ_approx replaces dropout; "
       "R_approx alone beats DROPOUT_k", source=f"{_SRC}; Sec. 5.1, Alg. 2", kind="empirical",
       rule="as X3r, on the test cross-entropy; skipped without scikit-learn")
def measure_x3d(ctx: Context) -> Measurement:
    """Alg. 2 on the digits MLP."""
    if not _have_sklearn():
        return _SKIP
    cfg = _d_cfg(ctx)
    ms = _d_methods(cfg)["X3d"]
    plain, d1, dk, r_only, r_xi = ms
    fig, vals = _x3(lambda m: _d_runs(ctx, m), d1, dk, plain, r_only, r_xi, [],
                    _d_setting(cfg), False)
    vals |= {"config": asdict(cfg)}
    return Measurement(fig, None, vals, _d_plot(ctx, "x3d_test_loss", ms,
                                                "X3d: Alg. 2 regularizers on digits"))


@claim("X4d", statement="X4 on real digits: the DROPOUT_k − DROPOUT_1 gap shrinks as the "
       "training set grows", source=f"{_SRC}; Sec. 5.3, Table 2", kind="empirical",
       rule="as X4r over the configured n_train; skipped without scikit-learn")
def measure_x4d(ctx: Context) -> Measurement:
    """The DROPOUT_kmax − DROPOUT_1 gap over training-set sizes of digits."""
    if not _have_sklearn():
        return _SKIP
    cfg = _d_cfg(ctx)
    d1, dk = _x._D1, _x._Method("dropout", max(cfg.ks))
    gaps = {f"n={n}": _x._diff(_d_runs(ctx, dk, n), _d_runs(ctx, d1, n)) for n in cfg.ns}
    fig, vals = _x4(gaps, _d_setting(cfg) + f"; gap {dk.name} − DROPOUT_1")
    vals |= {"config": asdict(cfg)}
    return Measurement(fig, None, vals)
