"""A brief Adam training with dropout: a language model that is not near-uniform (demo, S1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dropcheck import implicit
from dropcheck._validate import check_positive_int, check_q_sites
from dropcheck.backend import make_rng, to_numpy
from dropcheck.explicit import strength
from dropcheck.lm.corpus import check_window, windows
from dropcheck.models.lstm import LSTM

__all__ = ["train", "KINDS", "Method", "direction", "fit", "History", "perplexity_loss",
           "r_approx_grad_probe", "r_tilde_grad", "r_tilde"]


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
    truncated-BPTT window of :func:`~dropcheck.lm.corpus.windows` (cycling through the stream),
    and takes an Adam step (β = 0.9, 0.999, ε = 1e-8) on the per-token mean cross-entropy
    ``(1/(nT)) Σ ℓ``, the state carried from the previous window (reset at the stream's start).
    Only a convenience to get a non-trivial model; no schedule, no clipping.
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
        noise = model.sample_noise_for(gen, xw.shape, qd)
        wn = model.sample_weight_noise(gen, weight_q) if weight_q > 0 else None
        tr = model.trace(x, noise, state=state, weight_noise=wn)
        g = model.param_gradient(tr, model.loss.grad(tr.logits, y)[None, ...],
                                 per_example=False)
        g = g[0, 0, :] / xw.size
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        step = (m1 / (1 - 0.9 ** (k + 1))) / (xp.sqrt(m2 / (1 - 0.999 ** (k + 1))) + 1e-8)
        flat = flat - lr * step
        model = model.with_params(model.unflatten_params(flat))
        state = list(model.final_state(tr))
    return model


# ----- issue 17: the paper's training procedures on an LSTM language model -----

#: Training procedures of :func:`fit` (``Method.kind``); docs/experiments.md.
KINDS = ("no_dropout", "dropout", "dropout+xi_tilde", "dropout+xi_approx", "r_approx",
         "r_approx+xi_approx", "r_tilde", "r_tilde+xi_approx", "l2")


@dataclass(frozen=True)
class Method:
    """A training procedure: ``kind`` (:data:`KINDS`), ``k`` (DROPOUT_k), ``lam`` (ℓ2 strength).

    - ``no_dropout``: ``∇ℓ`` without noise;
    - ``dropout``: DROPOUT_k (Alg. 1), the mean of ``k`` gradients under independent masks of
      the model's kind (locked: one mask per sequence and unit for the whole window);
    - ``dropout+xi_tilde`` / ``dropout+xi_approx``: DROPOUT_k plus ``sqrt(½(1−1/k)) ξ̃_drop``
      (Sec. 3.1) or ``sqrt(1−1/k) ξ_approx`` (Alg. 4);
    - ``r_approx`` / ``r_approx+xi_approx``: Alg. 2 with ``R = R_approx`` (4.4) at the
      dropout-matching strength ``λ₁ = q/(2(1−q))`` per site, without / with ``λ₂ ξ_approx``,
      ``λ₂ = 1`` (untuned);
    - ``r_tilde`` / ``r_tilde+xi_approx``: the same with the loss-Jacobian ``R̃_approx`` (5.1)
      at the same strength (the paper tunes it; here untuned);
    - ``l2``: ``∇ℓ + lam·W`` (weight decay ``½ lam ‖W‖²`` on every parameter).
    """

    kind: str
    k: int = 1
    lam: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method kind must be one of {KINDS}, got {self.kind!r}")
        check_positive_int(self.k, "k")

    @property
    def name(self) -> str:
        """Plain-text name (figures, JSON keys)."""
        if self.kind == "no_dropout":
            return "no_dropout"
        if self.kind == "l2":
            return f"l2({self.lam:g})"
        if self.kind.startswith("dropout"):
            return f"DROPOUT_{self.k}" + self.kind[len("dropout"):]
        return {"r_approx": "R_approx", "r_approx+xi_approx": "R_approx+xi_approx",
                "r_tilde": "R~_approx", "r_tilde+xi_approx": "R~_approx+xi_approx"}[self.kind]


def _grad_sum(model: LSTM, tr: Any, y: Any) -> Any:
    """``∇_W Σ ℓ`` of a trace summed over sequences (and tokens), per draw ``(B, P)``."""
    return model.param_gradient(tr, model.loss.grad(tr.logits, y)[None, ...],
                                per_example=False)[0, ...]


def r_approx_grad_probe(model: LSTM, x: Any, y: Any, q: Mapping[str, float], rng: Any,
                        probes: int = 1, *, directions: Mapping[str, Any] | None = None,
                        per_probe: bool = False) -> Any:
    r"""Unbiased ``∇_W Σ_i strength(q_i) R_approx,i`` (4.4) summed over sequences, ``(P,)``.

    Hutchinson over the noise: with ``v_i`` Rademacher of the noise's shape
    (:meth:`~dropcheck.models.Model.noise_shape_for`: per sequence and unit for locked masks,
    per step too otherwise), ``u = Σ_i √s_i J_i (v_i ⊙ h_i)`` (one forward tangent sweep) has
    ``E_v[uᵀ H_out u] = Σ_i s_i R_approx,i`` in the model's mask form (``E[v vᵀ] = I``, sites
    independent), and

    .. math:: ∇_W (uᵀ H_{out}(F) u) = 2 (∂u/∂W)ᵀ H_{out} u + (∂F/∂W)ᵀ ∇_F(uᵀ H_{out}(F) u)

    is one forward-over-reverse sweep with cotangent ``2 H_out u`` held fixed plus one reverse
    sweep of :meth:`~dropcheck.losses.Loss.hessian_form_grad` — the structure of
    :func:`dropcheck.explicit.r_approx_grad` with ``probes`` random noise directions instead of
    every unit direction, so the cost does not grow with the width.  ``directions`` replaces
    the random probes by given ones ``{site: (K, 1|n, [T,] d)}`` (unit directions give the exact
    gradient; the tests use that).  Returns the mean over the ``K`` probes, or with
    ``per_probe`` each probe's estimate ``(K, P)``.
    """
    xp = model.xp
    names = [s for s in model.site_names if q.get(s, 0.0) > 0.0]
    if directions is None:
        directions = {}
        for s in names:
            shape = model.noise_shape_for(s, x, probes)
            signs = xp.asarray(2.0 * (rng.random(shape) < 0.5) - 1.0, dtype=model.dtype)
            directions[s] = math.sqrt(strength(q[s])) * signs
    K = next(iter(directions.values())).shape[0]
    tr = model.trace(x)
    tan = model.tangent(tr, noise_tangents={s: v[:, None, ...] for s, v in directions.items()})
    hu = model.loss.hvp(tr.logits, y, tan.logits)
    through_t = model.param_adjoint_tangent(tr, tan, 2.0 * hu, 0.0 * hu, per_example=False)
    through_f = model.param_gradient(tr, model.loss.hessian_form_grad(tr.logits, y, tan.logits),
                                     per_example=False)
    each = through_t[:, 0, ...] + through_f[:, 0, ...]
    return each if per_probe else xp.sum(each, axis=0) / K


def r_tilde_grad(model: LSTM, x: Any, y: Any, q: Mapping[str, float]) -> Any:
    r"""Exact ``∇_W Σ_i strength(q_i) R̃_approx,i`` (5.1) summed over sequences, ``(P,)``.

    ``R̃_approx,i = ‖a_i‖²`` with ``a_i = ∂⟨g_y, F⟩/∂η_i`` (:meth:`noise_adjoint` of the true
    label's loss gradient ``g_y = p − e_y``, in the model's mask form).  Its gradient is
    ``∇_W ⟨v, a(W)⟩`` at ``v = 2 s_i a_i`` held fixed, ``= d/dε ∇_W ⟨g_y(W), F(W, εv)⟩`` — the
    ``ξ_approx`` sweep (4.5) at noise ``v``: one reverse sweep for ``a``, one forward-over-reverse
    sweep with ``ġ = H_out F_dot``.
    """
    names = [s for s in model.site_names if q.get(s, 0.0) > 0.0]
    tr = model.trace(x)
    g = model.loss.grad(tr.logits, y)
    a = model.noise_adjoint(tr, g[None, ...], names)  # (1, 1, n, [T,] d)
    tan = model.tangent(tr, noise_tangents={s: 2.0 * strength(q[s]) * a[s] for s in names})
    g_dot = model.loss.hvp(tr.logits, y, tan.logits)
    return model.param_adjoint_tangent(tr, tan, g, g_dot, per_example=False)[0, 0, ...]


def r_tilde(model: LSTM, x: Any, y: Any, q: Mapping[str, float]) -> Any:
    """``Σ_i strength(q_i) R̃_approx,i`` (5.1) summed over the sequences (a scalar)."""
    xp = model.xp
    names = [s for s in model.site_names if q.get(s, 0.0) > 0.0]
    tr = model.trace(x)
    a = model.noise_adjoint(tr, model.loss.grad(tr.logits, y)[None, ...], names)
    return sum(strength(q[s]) * xp.sum(a[s] * a[s]) for s in names)


def direction(model: LSTM, x: Any, y: Any, method: Method, q: Mapping[str, float], rng: Any,
              *, probes: int = 1) -> Any:
    """The update direction of ``method`` for the per-token mean loss of one window, ``(P,)``.

    Every gradient is of ``(1/(nT)) Σ_{sequences, tokens}``; see :class:`Method` for the
    procedures.  Randomness (masks, ξ noise, probes) comes from ``rng`` only.
    """
    xp = model.xp
    N = x.shape[0] * x.shape[1]
    kind, k = method.kind, method.k
    if kind.startswith("dropout"):
        noise = model.sample_noise_for(rng, x, q, draws=k)
        g = xp.mean(_grad_sum(model, model.trace(x, noise), y), axis=0)
        if k > 1 and kind == "dropout+xi_tilde":
            t = implicit.xi_tilde(model, x, y, q, rng=rng, reduction="sum",
                                  samples=1)
            g = g + math.sqrt(0.5 * (1.0 - 1.0 / k)) * t[0, ...]
        elif k > 1 and kind == "dropout+xi_approx":
            t = implicit.xi_approx(model, x, y, q, rng=rng, reduction="sum",
                                   samples=1)
            g = g + math.sqrt(1.0 - 1.0 / k) * t[0, ...]
        return g / N
    g = _grad_sum(model, model.trace(x), y)[0, ...]
    if kind == "l2":
        return g / N + method.lam * model.flatten_params()
    if kind.startswith("r_approx"):
        g = g + r_approx_grad_probe(model, x, y, q, rng, probes)
    elif kind.startswith("r_tilde"):
        g = g + r_tilde_grad(model, x, y, q)
    if kind.endswith("+xi_approx"):  # λ₂ = 1: ξ_approx matches dropout's gradient noise
        t = implicit.xi_approx(model, x, y, q, rng=rng, reduction="sum",
                               samples=1)
        g = g + t[0, ...]
    return g / N


@dataclass
class History:
    """Validation curve of one :func:`fit` run: steps, valid loss per token, train loss, time."""

    steps: list[int]
    valid_loss: list[float]
    train_loss: list[float]
    seconds: float
    final: LSTM
    #: Models saved at the steps asked for with ``fit(checkpoints=…)``, by step.
    checkpoints: dict[int, LSTM] = field(default_factory=dict)

    @property
    def best(self) -> float:
        """Best (lowest) validation loss per token over the evaluations."""
        return min(self.valid_loss)

    def late(self, frac: float = 0.75) -> float:
        """Mean validation loss of the evaluations at step ≥ ``frac`` of training."""
        a, s = np.asarray(self.valid_loss), np.asarray(self.steps)
        return float(np.mean(a[s >= frac * s[-1]]))


def perplexity_loss(model: LSTM, tokens: Any, *, batch: int = 10, bptt: int = 35,
                    max_tokens: int | None = None) -> float:
    """Per-token cross-entropy (nats) of ``model`` without dropout over a stream, state carried.

    ``exp`` of it is the perplexity; ``max_tokens`` evaluates the first tokens only.
    """
    tok = np.asarray(tokens)
    if max_tokens is not None:
        tok = tok[:max_tokens]
    check_window(tok.shape[0], batch, bptt, "the evaluated stream")
    xp = model.xp
    state, tot, n = None, 0.0, 0
    for xw, yw in windows(tok, batch, bptt):
        m = model.with_context(state=state)
        tr = m.trace(xp.asarray(xw))
        tot += float(to_numpy(xp.sum(m.loss.value(tr.logits, xp.asarray(yw)))))
        n += xw.size
        state = [(h[0, ...], c[0, ...]) for h, c in m.final_state(tr)]
    return tot / n


def fit(
    model: LSTM,
    train_tokens: Any,
    valid_tokens: Any,
    method: Method,
    q: Mapping[str, float],
    *,
    steps: int,
    batch: int = 20,
    bptt: int = 35,
    lr: float = 20.0,
    clip: float = 0.25,
    eval_every: int = 50,
    eval_tokens: int | None = None,
    seed: int = 0,
    probes: int = 1,
    checkpoints: tuple[int, ...] = (),
    progress: Any = None,
) -> History:
    """Train ``model`` with ``method`` by SGD on truncated-BPTT windows; the validation curve.

    AWD-LSTM's loop at small scale: windows of :func:`~dropcheck.lm.corpus.windows` in order,
    cycling (epochs), the hidden state carried from one window to the next (from the first
    dropout draw for DROPOUT_k, as AWD-LSTM carries its dropout forward's state; the clean one
    otherwise; reset at each epoch start), the direction clipped to global norm ``clip``, step
    ``W ← W − lr·g``.  Every ``eval_every`` steps (and at 0 and the end) the per-token validation
    loss without dropout (:func:`perplexity_loss` over ``eval_tokens``) and the training loss
    of the current window.  One generator seeded with ``seed`` draws every mask and noise; the
    data order does not depend on it (paired replicates differ only in initialization and
    noise when the caller varies the model and ``seed``).  ``checkpoints``: steps (0 …
    ``steps``) at which the model is kept in ``History.checkpoints``; ``progress(step,
    history)`` is called after each evaluation.
    """
    import time

    xp = model.xp
    steps = check_positive_int(steps, "steps")
    check_window(np.asarray(train_tokens).shape[0], batch, bptt, "the train split")
    check_window(np.asarray(valid_tokens).shape[0] if eval_tokens is None
                 else min(eval_tokens, np.asarray(valid_tokens).shape[0]), 10, bptt,
                 "the evaluated valid split")
    qd = check_q_sites(q, model.site_names)
    gen = make_rng(seed)
    wins = [w for w in windows(train_tokens, batch, bptt) if w[0].shape[1] == bptt]
    hist = History([], [], [], 0.0, model)
    state = None
    t0 = time.perf_counter()
    last_train = math.nan

    def record(t: int) -> None:
        hist.steps.append(t)
        hist.valid_loss.append(perplexity_loss(model, valid_tokens, bptt=bptt,
                                               max_tokens=eval_tokens))
        hist.train_loss.append(last_train)
        if progress is not None:
            progress(t, hist)

    for t in range(steps):
        if t in checkpoints:
            hist.checkpoints[t] = model
        if t % eval_every == 0:
            record(t)
        j = t % len(wins)
        if j == 0:
            state = None
        x, y = (xp.asarray(a) for a in wins[j])
        m = model.with_context(state=state)
        g = direction(m, x, y, method, qd, gen, probes=probes)
        # the next window's state: clean forward for the analytic methods, else a dropout draw
        if method.kind.startswith("dropout"):
            tr = m.trace(x, m.sample_noise_for(gen, x, qd))
        else:
            tr = m.trace(x)
        last_train = float(to_numpy(xp.sum(m.loss.value(tr.logits, y)))) / x.size
        state = [(h[0, ...], c[0, ...]) for h, c in m.final_state(tr)]
        norm = float(to_numpy(xp.sqrt(xp.sum(g * g))))
        if not math.isfinite(norm):
            raise FloatingPointError(f"{method.name}: non-finite gradient at step {t}")
        if norm > clip:
            g = g * (clip / norm)
        model = model.with_params(model.unflatten_params(model.flatten_params() - lr * g))
    record(steps)
    if steps in checkpoints:
        hist.checkpoints[steps] = model
    hist.seconds = time.perf_counter() - t0
    hist.final = model
    return hist
