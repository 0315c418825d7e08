r"""Dropout's regularizers of an LSTM language model over a corpus, per token.

:func:`evaluate_corpus` walks a token stream in truncated-BPTT windows
(:func:`~dropcheck.lm.corpus.windows`), binds each window's carried state and DropConnect mask
to the model (:meth:`~dropcheck.models.Model.with_context`) and calls the generic estimators:

- :func:`dropcheck.explicit.r_approx_sampled_terms` — ``Σ_i strength(q_i) R̂_i`` from sampled
  labels, in the mask form of the model and in the other one (locked vs per step), from one
  reverse sweep per label draw;
- :func:`dropcheck.explicit.r_drop_sampled` — Monte-Carlo ``R_drop`` with a control variate;
- :func:`dropcheck.implicit.xi_approx` and :func:`dropcheck.implicit.xi_tilde` with
  ``reduction="sum"`` — ``ξ_approx`` (4.5)/(4.6) and ``ξ̃_drop`` summed over the window's
  sequences, ``(draws, P)``, no ``(n, P)`` arrays.

Per-sequence values are sums over tokens (the model's loss,
:class:`~dropcheck.models.lstm.TokenCrossEntropy`); corpus figures are divided by the token
count (the paper's per-token convention).  :func:`format_report` prints the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np

from dropcheck import explicit, implicit
from dropcheck._validate import check_positive_int, check_q_sites
from dropcheck.backend import make_rng, to_numpy
from dropcheck.lm.corpus import windows
from dropcheck.models.lstm import LSTM

__all__ = ["SIZES", "evaluate_corpus", "format_report"]

#: Model and window sizes: ``small`` for CPU and CI, ``awd`` = AWD-LSTM (Merity et al. 2018).
SIZES: dict[str, dict[str, Any]] = {
    "small": {"vocab": 1000, "emb": 32, "hidden": (64, 64), "tie": False, "bptt": 35,
              "batch": 16},
    "awd": {"vocab": 10000, "emb": 400, "hidden": (1150, 1150, 400), "tie": True, "bptt": 70,
            "batch": 80},
}


def _acc(d: dict[str, float], k: str, v: Any) -> None:
    d[k] = d.get(k, 0.0) + float(v)


def _mean_var(v: Any) -> tuple[float, float]:
    """Mean of host draws ``(S,)`` and the variance of that mean (sample variance / S)."""
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.var(ddof=1) / a.size) if a.size > 1 else math.nan


def _progress(stream: TextIO | None, total: int) -> Any:
    """A rich progress bar over ``total`` windows on ``stream``, or None.

    None without a stream, or when ``stream`` is not a terminal (then :func:`evaluate_corpus`
    writes one plain line at the end instead of a live bar).
    """
    if stream is None:
        return None
    from rich.console import Console

    console = Console(file=stream)
    if not console.is_terminal:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("lstm-eval"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("windows"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=console, transient=False)
    bar.add_task("windows", total=total)
    return bar


def evaluate_corpus(
    model: LSTM,
    tokens: Any,
    q: Any,
    *,
    batch: int,
    bptt: int,
    samples: int = 2,
    mc_samples: int = 0,
    xi_draws: int = 0,
    xi_drop_draws: int = 0,
    weight_q: float = 0.0,
    seed: int = 0,
    max_windows: int | None = None,
    chunk: int = 2,
    mc_chunk: int = 4,
    xi_drop_chunk: int = 16,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Per-token loss and regularizers of ``model`` over a token stream (1-D host array).

    Each window starts from the clean final state of the previous one (truncated BPTT; the
    state is an input, not differentiated through).  With ``weight_q`` a DropConnect mask on
    ``U_l`` is drawn per window (as AWD-LSTM does per mini-batch) and every figure of the window
    is conditional on it.  One generator (``seed``) is consumed in a fixed order per window:
    weight mask, ``samples`` label draws (``chunk`` per sweep), ``mc_samples`` masks
    (``mc_chunk`` per pass), ``xi_draws`` masks, ``xi_drop_draws`` pairs.  Reported per token
    (totals over the corpus divided by the token count), standard errors from the sampling only
    (labels, masks):

    - ``loss`` (nats; ``perplexity = exp(loss)``);
    - ``r_approx``: ``Σ_i strength(q_i) R̂_i`` in the form matching the model's mask, and
      ``r_approx_other`` in the other form (locked vs per step), ``r_approx_sites`` per site;
    - with ``mc_samples``: ``r_drop`` (Monte Carlo) and its 95% interval, ``z`` of
      ``r_approx − r_drop``;
    - with ``xi_draws`` (``xi_drop_draws``): the total variance ``E‖ξ‖²`` of a window's
      per-token mean gradient, ``ξ = (1/(nT)) Σ_i ξ_i``, for ``ξ_approx`` (``ξ̃_drop/√2``),
      averaged over the windows.
    """
    xp = model.xp
    names = model.site_names
    qd = check_q_sites(q, names)
    other = "per_step" if model.mask == "locked" else "locked"
    gen = make_rng(seed)
    wins = list(windows(tokens, batch, bptt))
    if max_windows is not None:
        wins = wins[: check_positive_int(max_windows, "max_windows")]
    state = None
    tot: dict[str, float] = {}
    var: dict[str, float] = {}
    xi_a: list[float] = []
    xi_d: list[float] = []
    bar = _progress(progress, len(wins))
    t0 = time.perf_counter()
    if bar is not None:
        bar.start()
    try:
        for xw, yw in wins:
            x, y = xp.asarray(xw), xp.asarray(yw)
            wn = model.sample_weight_noise(gen, weight_q) if weight_q > 0 else None
            m = model.with_context(state=state, weight_noise=wn)
            tr = m.trace(x)
            ntok = xw.size
            _acc(tot, "tokens", ntok)
            _acc(tot, "loss", to_numpy(xp.sum(m.loss.value(tr.logits, y))))
            terms = explicit.r_approx_sampled_terms(
                m, x, samples=samples, rng=gen, q=qd, forms=(m.mask, other), chunk=chunk, trace=tr)
            for f, key in ((m.mask, "r_approx"), (other, "r_approx_other")):
                per_sample = xp.sum(sum(terms[f].values()), axis=1)  # (samples,) window totals
                mean, v = _mean_var(to_numpy(per_sample))
                _acc(tot, key, mean)
                _acc(var, key, v)
            for s in names:
                _acc(tot, f"site:{s}", to_numpy(xp.sum(xp.mean(terms[m.mask][s], axis=0))))
            if mc_samples:
                e = explicit.r_drop_sampled(m, x, y, qd, samples=mc_samples, rng=gen,
                                            chunk=mc_chunk)
                _acc(tot, "r_drop", to_numpy(xp.sum(e.value)))
                _acc(var, "r_drop", to_numpy(xp.sum(e.stderr**2)))
            if xi_draws:
                xa = implicit.xi_approx(m, x, y, qd, rng=gen, samples=xi_draws, reduction="sum",
                                        chunk=xi_draws) / ntok
                xi_a.append(float(to_numpy(xp.mean(xp.sum(xa * xa, axis=-1)))))
            if xi_drop_draws:
                xd = implicit.xi_tilde(m, x, y, qd, rng=gen, samples=xi_drop_draws, reduction="sum",
                                       chunk=xi_drop_chunk) / ntok
                xi_d.append(float(to_numpy(xp.mean(xp.sum(xd * xd, axis=-1)))) / 2.0)
            state = [(h[:1, ...], c[:1, ...]) for h, c in m.final_state(tr)]
            if bar is not None:
                bar.advance(bar.task_ids[0])
    finally:
        if bar is not None:
            bar.stop()
    secs = time.perf_counter() - t0
    if progress is not None and bar is None:  # not a terminal: one plain line for the log
        progress.write(f"lstm-eval: {len(wins)} windows, {int(tot['tokens'])} tokens, "
                       f"{secs:.1f} s\n")
    N = tot["tokens"]
    rep: dict[str, Any] = {
        "tokens": int(N), "windows": len(wins), "batch": batch, "bptt": bptt,
        "mask": model.mask, "q": qd, "weight_q": weight_q, "samples": samples,
        "dtype": str(model.dtype), "seconds": secs, "tokens_per_s": N / secs,
        "loss": tot["loss"] / N, "perplexity": math.exp(tot["loss"] / N),
        "r_approx": tot["r_approx"] / N, "r_approx_se": math.sqrt(var["r_approx"]) / N,
        "r_approx_other_form": other,
        "r_approx_other": tot["r_approx_other"] / N,
        "r_approx_other_se": math.sqrt(var["r_approx_other"]) / N,
        "r_approx_sites": {s: tot[f"site:{s}"] / N for s in names},
    }
    if mc_samples:
        r, se = tot["r_drop"] / N, math.sqrt(var["r_drop"]) / N
        rep |= {"mc_samples": mc_samples, "r_drop": r, "r_drop_se": se,
                "r_drop_ci95": (r - 1.96 * se, r + 1.96 * se),
                "z_r_approx_vs_r_drop": (rep["r_approx"] - r)
                / math.sqrt(se**2 + rep["r_approx_se"] ** 2)}
    if xi_draws:
        a = np.asarray(xi_a)
        rep |= {"xi_draws": xi_draws, "xi_approx_trcov": float(a.mean()),
                "xi_approx_rms": float(np.sqrt(a.mean()))}
    if xi_drop_draws:
        d = np.asarray(xi_d)
        rep |= {"xi_drop_draws": xi_drop_draws, "xi_drop_trcov": float(d.mean()),
                "xi_drop_rms": float(np.sqrt(d.mean()))}
    return rep


def format_report(rep: Mapping[str, Any]) -> str:
    """The human-readable table of :func:`evaluate_corpus`'s report."""
    lines = [
        f"tokens {rep['tokens']} in {rep['windows']} windows (batch {rep['batch']}, bptt "
        f"{rep['bptt']}), {rep['dtype']}, {rep['seconds']:.1f} s ({rep['tokens_per_s']:.0f} "
        f"tokens/s)",
        f"dropout: q = {rep['q']}, mask {rep['mask']}, weight dropout q = {rep['weight_q']}",
        f"loss per token             {rep['loss']:.5f}  (perplexity {rep['perplexity']:.2f})",
        f"strength·R̂_approx ({rep['mask']:8s}) {rep['r_approx']:.4e} ± {rep['r_approx_se']:.1e}"
        f"  ({rep['samples']} label samples / window)",
        f"strength·R̂_approx ({rep['r_approx_other_form']:8s}) {rep['r_approx_other']:.4e} ± "
        f"{rep['r_approx_other_se']:.1e}  (the other mask's form, for comparison)",
        "  per site: " + ", ".join(f"{s} {v:.3e}" for s, v in rep["r_approx_sites"].items()),
    ]
    if "r_drop" in rep:
        lo, hi = rep["r_drop_ci95"]
        lines.append(
            f"R_drop (Monte Carlo)        {rep['r_drop']:.4e} ± {rep['r_drop_se']:.1e}  "
            f"(95% CI [{lo:.3e}, {hi:.3e}], {rep['mc_samples']} draws / window; "
            f"z of R̂ − R_drop = {rep['z_r_approx_vs_r_drop']:.2f})"
        )
    if "xi_approx_trcov" in rep:
        lines.append(f"ξ_approx: E‖ξ‖² of a window's per-token gradient "
                     f"{rep['xi_approx_trcov']:.4e} (rms {rep['xi_approx_rms']:.3e}, "
                     f"{rep['xi_draws']} draws / window)")
    if "xi_drop_trcov" in rep:
        lines.append(f"ξ_drop (ξ̃/√2): E‖ξ‖² of a window's per-token gradient "
                     f"{rep['xi_drop_trcov']:.4e}"
                     f" (rms {rep['xi_drop_rms']:.3e}, {rep['xi_drop_draws']} pairs / window)")
    return "\n".join(lines)
