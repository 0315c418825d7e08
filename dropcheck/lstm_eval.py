r"""Dropout's explicit and implicit regularizers on an LSTM language model, over a corpus.

Estimators for :class:`~dropcheck.models.lstm.LSTM` (Wei, Kakade & Ma 2020, Sec. 4 and the
language-model experiments of Sec. 5), written only with the site protocol, so they run on
numpy or cupy arrays alike, and made for AWD-LSTM sizes (no ``V×V`` matrices, no per-example
parameter gradients):

- :func:`r_approx_sampled` — the sampled-label ``R̂_approx`` (slides): with ``ŷ_t ~ softmax(F_t)``
  drawn independently per token, ``H_out = E_ŷ[g_ŷ g_ŷᵀ]`` (``g_ŷ = p − e_ŷ``, block-diagonal
  over tokens) and

  .. math:: R_{approx} = E_ŷ \sum_i \big\| ∂⟨g_ŷ, F⟩/∂η_i \big\|^2,

  one backward pass per sampled label sequence.  With a *locked* mask (one per sequence)
  ``E[δ_t δ_{t'}ᵀ] = (q/(1−q)) diag(h_t ⊙ h_{t'})`` and the noise gradient is
  ``Σ_t (g_ŷᵀJ_t)_k h_{tk}``, so the form is ``Σ_k (Σ_t g_{tk} h_{tk})²``; with *per-step*
  masks it is ``Σ_t Σ_k (g_{tk} h_{tk})²``.  ``form=`` picks either, whatever the model's mask
  (to measure the cost of using the wrong one).  With ``q`` the sites are weighted by
  ``strength(q_i) = q_i/(2(1−q_i))``: an estimate of ``R_drop``.
- :func:`r_approx_exact` — the same without sampling, from a factor of ``H_out`` (``T·V``
  backward passes: small vocabularies only; the tests' reference).
- :func:`r_drop_mc` — Monte-Carlo ``R_drop = E_η ℓ(F(x, η)) − ℓ(F(x))`` with its standard error.
- :func:`xi_approx` — ``ξ_approx = ∇_W Σ_i J_loss,i (η_i ⊙ h_i)`` (4.5/4.6), one
  forward-over-reverse sweep per draw, summed over the sequences (``(draws, P)``);
  :func:`xi_tilde` — ``ξ̃_drop = ∇_W ℓ(F(x, η¹)) − ∇_W ℓ(F(x, η²))`` for comparison
  (``Cov ξ̃ = 2 Cov ξ_drop``).
- :func:`train` — a brief Adam training with dropout, to get a model that is not near-uniform.
- :func:`evaluate_corpus` — all of these over a token stream in truncated-BPTT windows with a
  progress bar, reported per token; :func:`cli` is ``dropcheck lstm-eval``.

Per-sequence values are sums over tokens (the model's loss, :class:`TokenCrossEntropy`);
corpus figures are divided by the token count (the paper's per-token convention).  The generic
:func:`dropcheck.explicit.r_approx_sampled` / ``r_approx`` and :func:`dropcheck.implicit.xi_approx`
/ ``xi_approx_cov`` work on a locked-mask LSTM too and agree with these (tests); the functions
here add what a corpus evaluation needs: the carried state and weight mask of a window, the
per-step form, both forms from one sweep, per-site strengths, and gradients summed over the
sequences (no ``(n, P)`` arrays at AWD sizes).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from dropcheck._validate import check_choice, check_positive_int, check_q_sites
from dropcheck.backend import make_rng, to_numpy, uniform
from dropcheck.losses import softmax
from dropcheck.models.lstm import LSTM, MASKS
from dropcheck.montecarlo import Estimate

__all__ = [
    "strength",
    "noise_gradients",
    "r_approx_sampled",
    "r_approx_exact",
    "r_drop_mc",
    "xi_approx",
    "xi_tilde",
    "train",
    "windows",
    "evaluate_corpus",
    "format_report",
    "SIZES",
    "cli",
]

#: Model and window sizes: ``small`` for CPU and CI, ``awd`` = AWD-LSTM (Merity et al. 2018).
SIZES = {
    "small": {"vocab": 1000, "emb": 32, "hidden": (64, 64), "tie": False, "bptt": 35,
              "batch": 16},
    "awd": {"vocab": 10000, "emb": 400, "hidden": (1150, 1150, 400), "tie": True, "bptt": 70,
            "batch": 80},
}


def strength(q: float) -> float:
    """``q/(2(1−q))``: the constant that turns the paper's ``R_approx`` into ``R_drop`` (4.2)."""
    return q / (2.0 * (1.0 - q))


def _setup(model: LSTM, x: Any, y: Any, sites: Iterable[str] | str | None) -> tuple:
    if not isinstance(model, LSTM):
        raise TypeError(f"model must be a dropcheck LSTM, got {type(model)!r}")
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    if y2.shape != x2.shape:
        raise ValueError(f"y must have the shape of x {x2.shape} (next token per step), "
                         f"got {y2.shape}")
    return x2, y2, single, model.check_sites(sites)


def _weights(names: tuple[str, ...], q: Any) -> dict[str, float]:
    if q is None:
        return dict.fromkeys(names, 1.0)
    return {s: strength(v) for s, v in check_q_sites(q, names).items()}


def noise_gradients(
    model: LSTM, tr: Any, cot: Any, sites: Sequence[str], form: str | None = None
) -> dict[str, Any]:
    """``∂⟨cot, F⟩/∂η`` per site for noise of ``form`` (default: the model's mask).

    ``"locked"``: ``Σ_t (cotᵀJ_t)_k h_{tk}``, ``(k, B, n, d)``; ``"per_step"``: the terms
    ``(cotᵀJ_t)_k h_{tk}``, ``(k, B, n, T, d)``.  One reverse sweep either way.
    """
    form = model.mask if form is None else check_choice(form, MASKS, "form")
    if form == model.mask:
        return model.noise_adjoint(tr, cot, sites)
    xp = model.xp
    adj, _ = model.backward(tr, cot, sites=sites)
    vals = model.site_values(tr)
    out = {s: adj[s] * vals[s] for s in sites}
    return {s: xp.sum(v, axis=-2) for s, v in out.items()} if form == "locked" else out


def _sum_sq(a: Any, xp: Any) -> Any:
    """``Σ`` of squares over every axis after ``(k, B, n)``: ``(k, B, n)``."""
    return xp.sum(xp.reshape(a * a, (*a.shape[:3], -1)), axis=-1)


def _sample_labels(gen: Any, p: Any, k: int, xp: Any) -> Any:
    """``k`` label sequences ``ŷ_t ~ p_t`` (inverse CDF per token): ``(k, n, T)``."""
    u = uniform(gen, (k, *p.shape[:-1], 1), xp, p.dtype)
    cdf = xp.cumulative_sum(p, axis=-1)
    idx = xp.sum(xp.astype(u >= cdf, xp.int64), axis=-1)
    return xp.minimum(idx, p.shape[-1] - 1)  # u ≥ cdf[−1] only by rounding


def _onehot(y: Any, V: int, xp: Any, dtype: Any) -> Any:
    return xp.astype(xp.reshape(xp.arange(V), (1,) * y.ndim + (V,)) == y[..., None], dtype)


def _sampled_terms(
    model: LSTM,
    tr: Any,
    samples: int,
    gen: Any,
    sites: tuple[str, ...],
    weights: Mapping[str, float],
    forms: Sequence[str],
    chunk: int,
) -> dict[str, dict[str, Any]]:
    """Per-sample, per-sequence site terms ``(samples, n)`` for each form: one backward each."""
    xp = model.xp
    p = softmax(tr.logits[0, ...], xp)  # (n, T, V)
    parts: dict[str, dict[str, list[Any]]] = {f: {s: [] for s in sites} for f in forms}
    done = 0
    while done < samples:
        k = min(chunk, samples - done)
        yhat = _sample_labels(gen, p, k, xp)
        cot = (p - _onehot(yhat, model.vocab, xp, p.dtype))[:, None, ...]  # (k, 1, n, T, V)
        adj, _ = model.backward(tr, cot, sites=sites)
        vals = model.site_values(tr)
        for s in sites:
            prod = adj[s] * vals[s]  # (k, 1, n, T, d)
            for f in forms:
                a = xp.sum(prod, axis=-2) if f == "locked" else prod
                parts[f][s].append(weights[s] * _sum_sq(a, xp)[:, 0, :])
        done += k
    return {f: {s: xp.concat(v, axis=0) for s, v in d.items()} for f, d in parts.items()}


def _estimate(v: Any, xp: Any) -> Estimate:
    """Mean over the leading sample axis with its standard error."""
    m = v.shape[0]
    mean = xp.mean(v, axis=0)
    var = xp.sum((v - mean) ** 2, axis=0) / max(m - 1, 1)
    return Estimate(mean, xp.sqrt(var / m), m)


def r_approx_sampled(
    model: LSTM,
    x: Any,
    y: Any,
    *,
    samples: int,
    rng: Any = None,
    seed: Any = None,
    q: Any = None,
    sites: Iterable[str] | str | None = None,
    form: str | None = None,
    state: Any = None,
    weight_noise: Any = None,
    chunk: int = 4,
    per_site: bool = False,
) -> Any:
    """Sampled-label ``R̂_approx`` per sequence ``(n,)`` with its standard error (module doc).

    ``samples ≥ 2`` label sequences per sequence, ``chunk`` of them per backward pass (the
    memory of one pass is ``chunk·n·T·V`` floats).  Without ``q``: the paper's ``R_approx``
    (no constant, sum over ``sites``); with ``q`` (float or dict): ``Σ_i strength(q_i) R̂_i``,
    the estimate of ``R_drop``.  ``per_site=True`` returns a dict site -> :class:`Estimate`.
    """
    x2, _, single, names = _setup(model, x, y, sites)
    samples = check_positive_int(samples, "samples", minimum=2)
    form = model.mask if form is None else check_choice(form, MASKS, "form")
    gen = make_rng(seed, rng)
    tr = model.trace(x2, state=state, weight_noise=weight_noise)
    terms = _sampled_terms(model, tr, samples, gen, names, _weights(names, q), (form,),
                           check_positive_int(chunk, "chunk"))[form]
    xp = model.xp

    def fix(e: Estimate) -> Estimate:
        return Estimate(e.value[0], e.stderr[0], e.samples) if single else e

    if per_site:
        return {s: fix(_estimate(v, xp)) for s, v in terms.items()}
    return fix(_estimate(sum(terms.values()), xp))


def r_approx_exact(
    model: LSTM,
    x: Any,
    y: Any,
    *,
    q: Any = None,
    sites: Iterable[str] | str | None = None,
    form: str | None = None,
    state: Any = None,
    weight_noise: Any = None,
) -> Any:
    """``R_approx`` per sequence ``(n,)`` exactly: ``Σ_{t,c} ‖∂⟨a_{tc}, F⟩/∂η‖²``.

    ``a_{tc}`` is column ``c`` of a factor of token ``t``'s block of ``H_out``
    (``diag(p_t) − p_t p_tᵀ = A Aᵀ``); ``T·V`` reverse sweeps — for small vocabularies.
    ``q`` and ``form`` as in :func:`r_approx_sampled`.
    """
    x2, y2, single, names = _setup(model, x, y, sites)
    xp = model.xp
    w = _weights(names, q)
    tr = model.trace(x2, state=state, weight_noise=weight_noise)
    T = x2.shape[1]
    A = model.loss.hessian_factor(tr.logits[0, ...], y2)  # (n, T, V, V), columns = factors
    eye_t = xp.eye(T, dtype=A.dtype)
    total = None
    for t in range(T):
        # directions (c): token t gets column c of its factor, other tokens zero
        col = xp.permute_dims(A[:, t, :, :], (2, 0, 1))  # (V_c, n, V)
        cot = col[:, None, :, None, :] * eye_t[t][None, None, None, :, None]  # (V, 1, n, T, V)
        ng = noise_gradients(model, tr, cot, names, form)
        part = None
        for s in names:
            v = w[s] * xp.sum(_sum_sq(ng[s], xp), axis=0)[0, :]
            part = v if part is None else part + v
        total = part if total is None else total + part
    return total[0] if single else total


def r_drop_mc(
    model: LSTM,
    x: Any,
    y: Any,
    q: Any,
    *,
    samples: int,
    rng: Any = None,
    seed: Any = None,
    sites: Iterable[str] | str | None = None,
    state: Any = None,
    weight_noise: Any = None,
    chunk: int = 8,
    control_variate: bool = True,
) -> Estimate:
    r"""Monte-Carlo ``R_drop = E_η ℓ(F(x, η)) − ℓ(F(x))`` per sequence ``(n,)`` with its s.e.

    Masks of the model's kind (:meth:`LSTM.sample_noise`), independent per sequence, ``chunk``
    draws per forward pass.  Each draw contributes

    .. math:: ℓ(F(x, η)) − ℓ(F(x)) − \big⟨∂_η ℓ|_{η=0},\ η\big⟩,

    the last term (with ``control_variate``, default) having mean exactly 0 (``E[η] = 0``): it
    removes the first-order fluctuation ``J_loss δ`` that dominates the variance, so the
    estimate stays unbiased with a much smaller standard error.
    """
    x2, y2, single, names = _setup(model, x, y, sites)
    samples = check_positive_int(samples, "samples", minimum=2)
    qd = check_q_sites(q, names)
    gen = make_rng(seed, rng)
    xp = model.xp
    n, T = x2.shape
    tr0 = model.trace(x2, state=state, weight_noise=weight_noise)
    clean = model.loss.value(tr0.logits, y2)
    lin = None
    if control_variate:
        lin = model.noise_adjoint(tr0, model.loss.grad(tr0.logits, y2)[None, ...], names)
    vals = []
    done = 0
    while done < samples:
        b = min(check_positive_int(chunk, "chunk"), samples - done)
        noise = model.sample_noise(gen, n, T, qd, b, sites=names)
        tr = model.trace(x2, noise, state=state, weight_noise=weight_noise)
        v = model.loss.value(tr.logits, y2) - clean  # (b, n)
        if lin is not None:
            for s, e in noise.items():
                v = v - xp.sum(xp.reshape(lin[s][0] * e, (b, n, -1)), axis=-1)
        vals.append(v)
        done += b
    est = _estimate(xp.concat(vals, axis=0), xp)
    return Estimate(est.value[0], est.stderr[0], samples) if single else est


def xi_approx(
    model: LSTM,
    x: Any,
    y: Any,
    q: Any,
    *,
    draws: int = 1,
    rng: Any = None,
    seed: Any = None,
    sites: Iterable[str] | str | None = None,
    noise: str = "bernoulli",
    eta: Mapping[str, Any] | None = None,
    per_example: bool = False,
    state: Any = None,
    weight_noise: Any = None,
) -> Any:
    r"""``ξ_approx`` (4.5)/(4.6) for ``draws`` noise draws: ``(draws, P)`` summed over sequences.

    .. math:: ξ_{approx} = ∇_W \sum_i J_{loss,i}(x)\,(η_i ⊙ h_i(x))
              = \frac{d}{dε}\nabla_W ℓ(F(x, εη))\Big|_{ε=0}

    one forward-over-reverse sweep per draw (the draws are the direction axis), the gradient
    through ``J_loss`` and ``h``.  η of the model's mask kind; ``noise="rademacher"``: signs
    scaled by ``sqrt(q/(1−q))`` (fn. 6); or pass ``eta`` (site -> ``(draws, n, d)`` locked /
    ``(draws, n, T, d)`` per step).  ``per_example=True`` gives ``(draws, n, P)`` (small nets).
    """
    x2, y2, _, names = _setup(model, x, y, sites)
    n, T = x2.shape
    if eta is None:
        qd = check_q_sites(q, names)
        eta = model.sample_noise(make_rng(seed, rng), n, T, qd, check_positive_int(
            draws, "draws"), sites=names, kind=noise)
    tr = model.trace(x2, state=state, weight_noise=weight_noise)
    tan = model.tangent(tr, noise_tangents={s: e[:, None, ...] for s, e in eta.items()})
    g = model.loss.grad(tr.logits, y2)
    g_dot = model.loss.hvp(tr.logits, y2, tan.logits)
    _, out = model.adjoint_tangent(tr, tan, g, g_dot, params=True, per_example=per_example)
    return out[:, 0, ...]


def xi_tilde(
    model: LSTM,
    x: Any,
    y: Any,
    q: Any,
    *,
    draws: int = 1,
    rng: Any = None,
    seed: Any = None,
    sites: Iterable[str] | str | None = None,
    state: Any = None,
    weight_noise: Any = None,
    chunk: int = 16,
) -> Any:
    """``ξ̃_drop = ∇_W ℓ(F(x,η¹)) − ∇_W ℓ(F(x,η²))`` summed over sequences, ``(draws, P)``.

    ``Cov(ξ̃) = 2 Cov(ξ_drop)``: ``ξ̃/√2`` samples the dropout gradient noise without its mean.
    ``chunk`` pairs share one batched forward and backward pass.
    """
    x2, y2, _, names = _setup(model, x, y, sites)
    n, T = x2.shape
    qd = check_q_sites(q, names)
    gen = make_rng(seed, rng)
    xp = model.xp
    out = []
    done, draws = 0, check_positive_int(draws, "draws")
    while done < draws:
        b = min(check_positive_int(chunk, "chunk"), draws - done)
        noise = model.sample_noise(gen, n, T, qd, 2 * b, sites=names)
        tr = model.trace(x2, noise, state=state, weight_noise=weight_noise)
        _, gw = model.backward(tr, model.loss.grad(tr.logits, y2)[None, ...], params=True,
                               per_example=False)  # (1, 2b, P)
        out.append(gw[0, :b, :] - gw[0, b:, :])
        done += b
    return xp.concat(out, axis=0)


# ----- brief training (for the demo and S1: a model that is not near-uniform) -----
def train(
    model: LSTM,
    tokens: Any,
    q: Any,
    *,
    steps: int,
    batch: int,
    bptt: int,
    lr: float = 1e-2,
    seed: int = 0,
    weight_q: float = 0.0,
) -> LSTM:
    """Train briefly with dropout (DROPOUT_1, Adam); returns a new model with the weights.

    Each step draws the model's kind of masks (and a DropConnect mask with ``weight_q``) for one
    truncated-BPTT window of :func:`windows` (cycling through the stream), and takes an Adam step
    (β = 0.9, 0.999) on the per-token mean cross-entropy, the state carried from the previous
    window.  Only a convenience to get a non-trivial model; no schedule, no clipping.
    """
    xp = model.xp
    qd = check_q_sites(q, model.site_names)
    gen = make_rng(seed)
    wins = list(windows(tokens, batch, bptt))
    flat = model.flatten_params()
    m1 = xp.zeros_like(flat)
    m2 = xp.zeros_like(flat)
    state = None
    for k in range(check_positive_int(steps, "steps")):
        xw, yw = wins[k % len(wins)]
        if k % len(wins) == 0:
            state = None
        x, y = xp.asarray(xw), xp.asarray(yw)
        noise = model.sample_noise(gen, *xw.shape, qd)
        wn = model.sample_weight_noise(gen, weight_q) if weight_q > 0 else None
        tr = model.trace(x, noise, state=state, weight_noise=wn)
        _, g = model.backward(tr, model.loss.grad(tr.logits, y)[None, ...], params=True,
                              per_example=False)
        g = g[0, 0, :] / xw.size
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        step = (m1 / (1 - 0.9 ** (k + 1))) / (xp.sqrt(m2 / (1 - 0.999 ** (k + 1))) + 1e-8)
        flat = flat - lr * step
        model = model.with_params(model.unflatten_params(flat))
        state = [(h, c) for h, c in model.final_state(tr)]
    return model


# ----- corpus evaluation -----
def windows(
    tokens: Any, batch: int, bptt: int
) -> Iterator[tuple[Any, Any]]:
    """Truncated-BPTT windows of a token stream (AWD-LSTM's ``batchify`` + ``get_batch``).

    The stream is cut into ``batch`` contiguous rows of ``N // batch`` tokens (the remainder is
    dropped); windows of ``bptt`` columns give inputs ``x`` ``(batch, T)`` and next-token
    targets ``y`` (the last window may be shorter).  Host numpy in, host numpy out.
    """
    import numpy as np

    tok = np.asarray(tokens)
    cols = tok.shape[0] // batch
    if cols < 2:
        raise ValueError(f"{tok.shape[0]} tokens are too few for batch = {batch} rows")
    data = tok[: cols * batch].reshape(batch, cols)
    for i in range(0, cols - 1, bptt):
        T = min(bptt, cols - 1 - i)
        yield data[:, i : i + T], data[:, i + 1 : i + 1 + T]


def _progress(stream: TextIO | None, i: int, total: int, t0: float, what: str) -> None:
    if stream is None:
        return
    frac = i / total
    el = time.perf_counter() - t0
    left = f"~{el / frac - el:.0f} s left" if frac > 0 else "starting"
    bar = "#" * int(30 * frac)
    stream.write(f"\r{what} [{bar:<30s}] {i}/{total} windows, {el:.1f} s, {left} ")
    if i == total:
        stream.write("\n")
    stream.flush()


def _acc(d: dict[str, float], k: str, v: float) -> None:
    d[k] = d.get(k, 0.0) + float(v)


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
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Per-token loss and regularizers of ``model`` over a token stream (1-D host array).

    Each window (:func:`windows`) starts from the clean final state of the previous one
    (truncated BPTT; the state is an input, not differentiated through).  With ``weight_q``
    a DropConnect mask on ``U_l`` is drawn per window (as AWD-LSTM does per mini-batch) and
    every figure of the window is conditional on it.  Reported per token (totals over the
    corpus divided by the token count), standard errors from the sampling only (labels, masks):

    - ``loss`` (nats; ``perplexity = exp(loss)``);
    - ``r_approx``: ``Σ_i strength(q_i) R̂_i`` in the form matching the model's mask, and
      ``r_approx_other`` in the other form (locked vs per step), ``r_approx_sites`` per site;
    - with ``mc_samples``: ``r_drop`` (Monte Carlo) and its 95% interval, ``z`` of
      ``r_approx − r_drop``;
    - with ``xi_draws`` (``xi_drop_draws``): the total variance ``E‖ξ‖²`` of a window's
      per-token mean gradient, ``ξ = (1/(nT)) Σ_i ξ_i``, for ``ξ_approx`` (``ξ̃_drop/√2``),
      averaged over the windows.
    """
    import numpy as np

    xp = model.xp
    names = model.site_names
    qd = check_q_sites(q, names)
    w = _weights(names, qd)
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
    t0 = time.perf_counter()
    _progress(progress, 0, len(wins), t0, "lstm-eval")
    for k, (xw, yw) in enumerate(wins, 1):
        x, y = xp.asarray(xw), xp.asarray(yw)
        wn = model.sample_weight_noise(gen, weight_q) if weight_q > 0 else None
        tr = model.trace(x, state=state, weight_noise=wn)
        ntok = xw.size
        _acc(tot, "tokens", ntok)
        _acc(tot, "loss", to_numpy(xp.sum(model.loss.value(tr.logits, y))))
        terms = _sampled_terms(model, tr, samples, gen, names, w, (model.mask, other),
                               chunk)
        for f, key in ((model.mask, "r_approx"), (other, "r_approx_other")):
            per_sample = xp.sum(sum(terms[f].values()), axis=1)  # (samples,) window totals
            e = _estimate(per_sample, xp)
            _acc(tot, key, to_numpy(e.value))
            _acc(var, key, to_numpy(e.stderr) ** 2)
        for s in names:
            _acc(tot, f"site:{s}", to_numpy(xp.sum(xp.mean(terms[model.mask][s], axis=0))))
        if mc_samples:
            e = r_drop_mc(model, x, y, qd, samples=mc_samples, rng=gen, state=state,
                          weight_noise=wn, chunk=mc_chunk)
            _acc(tot, "r_drop", to_numpy(xp.sum(e.value)))
            _acc(var, "r_drop", to_numpy(xp.sum(e.stderr**2)))
        if xi_draws:
            xa = xi_approx(model, x, y, qd, draws=xi_draws, rng=gen, state=state,
                           weight_noise=wn) / ntok
            xi_a.append(float(to_numpy(xp.mean(xp.sum(xa * xa, axis=-1)))))
        if xi_drop_draws:
            xd = xi_tilde(model, x, y, qd, draws=xi_drop_draws, rng=gen, state=state,
                          weight_noise=wn) / ntok
            xi_d.append(float(to_numpy(xp.mean(xp.sum(xd * xd, axis=-1)))) / 2.0)
        state = [(h[:1, ...], c[:1, ...]) for h, c in model.final_state(tr)]
        _progress(progress, k, len(wins), t0, "lstm-eval")
    secs = time.perf_counter() - t0
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dropcheck lstm-eval",
        description="Dropout's explicit (strength·R̂_approx, Monte-Carlo R_drop) and implicit "
        "(ξ_approx) regularizers of an LSTM language model over a corpus, per token.",
    )
    c = p.add_argument_group("corpus")
    c.add_argument("--tokens", metavar="PATH", help="token ids: .npy (1-D integer array) or text "
                   "of whitespace-separated integer ids; default: the built-in demo corpus")
    c.add_argument("--demo-tokens", type=int, metavar="N",
                   help="length of the demo corpus (default: 20 tokens per vocabulary entry)")
    c.add_argument("--vocab", type=int, help="vocabulary size (default: the size preset's, or "
                   "max id + 1 of --tokens)")
    m = p.add_argument_group("model (random-initialized unless --params)")
    m.add_argument("--size", choices=tuple(SIZES), default="small",
                   help="small (CPU) or awd (AWD-LSTM: 3 layers 1150/1150/400, emb 400, tied)")
    m.add_argument("--emb", type=int, help="embedding size (overrides --size)")
    m.add_argument("--hidden", help="comma-separated hidden sizes, e.g. 1150,1150,400")
    m.add_argument("--tie", action=argparse.BooleanOptionalAction, default=None,
                   help="tie the decoder to the embedding")
    m.add_argument("--params", metavar="NPZ", help="weights: .npz with E, W1, U1, b1, …, [D], bD")
    m.add_argument("--train", type=int, default=0, metavar="STEPS",
                   help="first train STEPS Adam steps with the dropout below on the first 80%% "
                   "of the corpus, then evaluate on the last 20%% (default 0: no training)")
    m.add_argument("--lr", type=float, default=1e-2, help="Adam step size of --train")
    m.add_argument("--mask", choices=MASKS, default="locked", help="dropout masks (default "
                   "locked: one per sequence, as AWD-LSTM)")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    m.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    m.add_argument("--seed", type=int, default=0, help="seed of weights, corpus and sampling")
    d = p.add_argument_group("dropout (AWD-LSTM's defaults; q = 0 removes a site)")
    d.add_argument("--q", type=float, help="one drop probability for every site")
    d.add_argument("--q-emb", type=float, default=0.4, help="embedding output (dropouti)")
    d.add_argument("--q-hidden", type=float, default=0.25, help="between layers (dropouth)")
    d.add_argument("--q-out", type=float, default=0.4, help="before the decoder (dropout)")
    d.add_argument("--q-weight", type=float, default=0.0,
                   help="DropConnect on U_l (wdrop), a fixed mask per window (default off)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--bptt", type=int, help="window length (default from --size)")
    e.add_argument("--batch", type=int, help="sequences per window (default from --size)")
    e.add_argument("--samples", type=int, default=2, help="label samples per window (>= 2)")
    e.add_argument("--mc", type=int, default=0, metavar="N",
                   help="Monte-Carlo R_drop with N mask draws per window (0: off)")
    e.add_argument("--xi", type=int, default=0, metavar="N", help="ξ_approx draws per window")
    e.add_argument("--xi-drop", type=int, default=0, metavar="N",
                   help="ξ̃_drop pairs per window (compare with ξ_approx)")
    e.add_argument("--max-windows", type=int, help="stop after this many windows")
    e.add_argument("--chunk", type=int, default=2, help="label samples per backward pass")
    e.add_argument("--json", metavar="PATH", help="write the report as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _namespace(backend: str) -> Any:
    if backend == "cupy":
        try:
            import cupy  # noqa: F401
            from array_api_compat import cupy as xcp
        except ImportError:
            raise ValueError("--backend cupy needs cupy and a CUDA device "
                             "(pip install -e '.[gpu]')") from None
        return xcp
    from array_api_compat import numpy as xnp

    return xnp


def _build(args: argparse.Namespace) -> tuple[LSTM, Any, str, dict[str, float]]:
    """The model, the corpus, a line describing them and the drop probability per site."""
    import numpy as np

    from dropcheck.data import load_tokens, markov_corpus

    size = dict(SIZES[args.size])
    if args.tokens:
        tokens = load_tokens(args.tokens, args.vocab)
        vocab = args.vocab or int(tokens.max()) + 1
        what = f"corpus {args.tokens}"
    else:
        vocab = args.vocab or size["vocab"]
        n = args.demo_tokens or 20 * vocab
        tokens, lang = markov_corpus(n, vocab, seed=args.seed)
        what = (f"demo corpus: synthetic Markov language, {n} tokens, vocabulary {vocab}, "
                f"entropy rate {lang.entropy_rate:.4f} nats/token (a perfect model's loss)")
    q = {"emb": args.q_emb, "hidden": args.q_hidden, "out": args.q_out}
    if args.q is not None:
        q = dict.fromkeys(q, args.q)
    xp = _namespace(args.backend)
    dtype = getattr(xp, args.dtype)
    hidden = [int(h) for h in args.hidden.split(",")] if args.hidden else size["hidden"]
    names = LSTM.all_site_names(len(hidden))
    qd = {s: q["emb"] if s == "emb" else q["out"] if s == "out" else q["hidden"] for s in names}
    sites = [s for s in names if qd[s] > 0]
    if not sites:
        raise ValueError("every drop probability is 0: there is no dropout to evaluate")
    if args.params:
        with np.load(args.params) as z:
            params = {k: xp.asarray(z[k].astype(args.dtype)) for k in z.files}
        model = LSTM(params, sites=sites, mask=args.mask)
        what += f"; weights from {args.params}"
    else:
        tie = size["tie"] if args.tie is None else args.tie
        model = LSTM.random(vocab, args.emb or size["emb"], hidden, tie=tie, sites=sites,
                            mask=args.mask, seed=args.seed, dtype=dtype, xp=xp)
        what += "; random-initialized weights (PyTorch/AWD-LSTM init)"
    if args.train:
        cut = int(0.8 * tokens.shape[0])
        size_ = SIZES[args.size]
        model = train(model, tokens[:cut], {s: qd[s] for s in sites},
                      steps=args.train, batch=args.batch or size_["batch"],
                      bptt=args.bptt or size_["bptt"], lr=args.lr, seed=args.seed,
                      weight_q=args.q_weight)
        tokens = tokens[cut:]
        what += (f", then trained {args.train} Adam steps (lr {args.lr}) with dropout on the "
                 f"first 80% of the corpus; evaluated on the last 20%")
    if tokens.max() >= model.vocab:
        raise ValueError(f"the corpus holds id {int(tokens.max())} >= the model's vocabulary "
                         f"{model.vocab}")
    return model, tokens, what, {s: qd[s] for s in sites}


def cli(argv: Sequence[str] | None = None) -> int:
    """``dropcheck lstm-eval``: evaluate the regularizers over a corpus; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        model, tokens, what, q = _build(args)
        size = SIZES[args.size]
        rep = evaluate_corpus(
            model, tokens, q, batch=args.batch or size["batch"], bptt=args.bptt or size["bptt"],
            samples=args.samples, mc_samples=args.mc, xi_draws=args.xi,
            xi_drop_draws=args.xi_drop, weight_q=args.q_weight, seed=args.seed,
            max_windows=args.max_windows, chunk=args.chunk,
            progress=None if args.no_progress else sys.stderr,
        )
    except (ValueError, TypeError) as exc:
        print(f"dropcheck lstm-eval: {exc}", file=sys.stderr)
        return 2
    rep = {"corpus": what, "model": repr(model), **rep}
    print(what)
    print(repr(model))
    print(format_report(rep))
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(rep, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0
