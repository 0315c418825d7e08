"""A brief Adam training with dropout: a language model that is not near-uniform (demo, S1)."""

from __future__ import annotations

from typing import Any

from dropcheck._validate import check_positive_int, check_q_sites
from dropcheck.backend import make_rng
from dropcheck.lm.corpus import windows
from dropcheck.models.lstm import LSTM

__all__ = ["train"]


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
