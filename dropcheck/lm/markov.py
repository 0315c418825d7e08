r"""The demo corpus: a synthetic first-order Markov language with Zipfian structure.

The next token after ``i`` is drawn from

.. math:: r_i = (1-ε)\sum_{k=1}^{b} P_k\, e_{s_{ik}} + ε\, u,

a mixture of ``b`` successors ``s_{i1} … s_{ib}`` (distinct, chosen uniformly at random once per
token) with Zipf weights ``P_k ∝ k^{−a}``, and, with probability ``ε``, a "restart" from the
Zipfian unigram ``u_j ∝ (j+1)^{−a}``.  Every row has full support, so the chain is ergodic; its
stationary law ``π`` and entropy rate ``H = Σ_i π_i H(r_i)`` (nats/token, the loss of a perfect
language model) are computed exactly.  Everything is generated from a seed, offline; nothing is
downloaded or stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MarkovLanguage", "markov_corpus"]


@dataclass(frozen=True)
class MarkovLanguage:
    """The language behind :func:`markov_corpus` (see the module doc for the formulas)."""

    successors: np.ndarray  # (V, b) distinct successor ids per token
    weights: np.ndarray  # (b,) Zipf weights of the successors, sum 1
    unigram: np.ndarray  # (V,) restart distribution, sum 1
    restart: float  # ε
    stationary: np.ndarray  # (V,) π

    @property
    def vocab(self) -> int:
        """Vocabulary size ``V``."""
        return self.unigram.shape[0]

    def row_entropies(self) -> np.ndarray:
        """``H(r_i)`` for every token ``i``, nats, in ``O(V·b)``."""
        eps, u = self.restart, self.unigram
        base = -np.sum(eps * u * np.log(eps * u))  # every j as if it were not a successor
        us = eps * u[self.successors]  # (V, b)
        r = (1.0 - eps) * self.weights[None, :] + us
        return base - np.sum(r * np.log(r) - us * np.log(us), axis=1)

    @property
    def entropy_rate(self) -> float:
        """``Σ_i π_i H(r_i)``: the per-token loss of the true model (nats)."""
        return float(self.stationary @ self.row_entropies())


def _zipf(m: int, a: float) -> np.ndarray:
    w = np.arange(1, m + 1, dtype=np.float64) ** -a
    return w / w.sum()


def _distinct_successors(rng: np.random.Generator, V: int, b: int) -> np.ndarray:
    succ = rng.integers(0, V, size=(V, b))
    while True:  # redraw the (rare) rows with a repeated successor
        s = np.sort(succ, axis=1)
        bad = np.nonzero(np.any(s[:, 1:] == s[:, :-1], axis=1))[0]
        if bad.size == 0:
            return succ
        succ[bad] = rng.integers(0, V, size=(bad.size, b))


def _stationary(succ: np.ndarray, w: np.ndarray, u: np.ndarray, eps: float) -> np.ndarray:
    V = u.shape[0]
    pi = u.copy()
    for _ in range(10_000):  # contraction with rate ≤ 1 − ε
        flow = np.bincount(succ.ravel(), weights=(pi[:, None] * w[None, :]).ravel(), minlength=V)
        new = (1.0 - eps) * flow + eps * u
        if np.abs(new - pi).sum() < 1e-13:
            return new
        pi = new
    return pi


def markov_corpus(
    n_tokens: int = 100_000,
    vocab: int = 1000,
    *,
    branching: int = 16,
    zipf: float = 1.1,
    restart: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, MarkovLanguage]:
    """Generate ``n_tokens`` of the demo language; returns ``(tokens int64 (N,), language)``.

    ``branching`` successors per token (``≤ vocab``), Zipf exponent ``zipf`` for both the
    successor weights and the unigram, restart probability ``restart`` in ``(0, 1]``.
    """
    if n_tokens < 2 or vocab < 2 or not 1 <= branching <= vocab or not 0 < restart <= 1:
        raise ValueError(
            f"need n_tokens >= 2, vocab >= 2, 1 <= branching <= vocab, 0 < restart <= 1; got "
            f"{n_tokens}, {vocab}, {branching}, {restart}"
        )
    rng = np.random.default_rng(seed)
    w = _zipf(branching, zipf)
    u = _zipf(vocab, zipf)
    succ = _distinct_successors(rng, vocab, branching)
    lang = MarkovLanguage(succ, w, u, restart, _stationary(succ, w, u, restart))
    jump = rng.random(n_tokens) < restart
    uni = np.minimum(np.searchsorted(np.cumsum(u), rng.random(n_tokens)), vocab - 1)
    slot = np.minimum(np.searchsorted(np.cumsum(w), rng.random(n_tokens)), branching - 1)
    flat = succ.ravel().tolist()
    jl, ul, sl = jump.tolist(), uni.tolist(), slot.tolist()
    out = [ul[0]]
    cur = ul[0]
    for t in range(1, n_tokens):  # the chain itself is sequential
        cur = ul[t] if jl[t] else flat[cur * branching + sl[t]]
        out.append(cur)
    return np.asarray(out, dtype=np.int64), lang
