r"""Fast exact enumeration for a dropout site that feeds an affine map.

The batched engine (:func:`dropcheck.exact.expectation`) pushes every mask through a whole
forward pass.  When the enumerated site (the *last* site that drops units, nearest the logits)
feeds an affine map ``z = W((1+η)⊙h) + b``, the pre-activation of every mask is a sum over the
kept units: with keep bits ``m_k`` and ``a_k = W[:, k] h_k/(1−q)``,

.. math::  z(m) = b + Σ_k m_k a_k = z_{lo}(m_{lo}) + z_{hi}(m_{hi}),

split at any point into a *low* group of units (enumerated as one block of ``2^lo`` masks) and a
*high* group (walked chunk by chunk).  Two methods use this (DESIGN.md, performance principles):

``factorized`` — the site feeds the decoder (``z`` are the logits).  For cross-entropy
``ℓ(m) = log Z(m) − F_y(m)`` with ``Z(m) = Σ_c exp F_c(m)``, and the exponential factorizes:

.. math::  Z(i, j) = Σ_c e^{L_{lo}[i,c]} e^{L_{hi}[j,c]},   S = E_{hi} E_{lo}ᵀ,

one matrix product (inner dimension ``c``) gives the partition function of every pair of a low
mask ``i`` and a high mask ``j``.  The label term is linear in the mask, so
``E[F_y(m)] = F_y(x)`` (the clean logit: inverted dropout preserves the mean), and the mask
probabilities factorize too, ``p(i, j) = P_lo[i] P_hi[j]``, so

.. math::  E ℓ = P_hiᵀ (\log S) P_lo + (\text{row shifts}) − F_y(x):

one product and one ``log`` per mask, no per-mask softmax — and fewer logs than masks: low
masks with the same number of kept units have the same probability, so up to :data:`FOLD` of
them share one ``log`` of the product of their ``S``.  *Stability*: each group gets a
per-class centring (``L_lo`` uses bits ``m_k − ½``, ``L_hi`` absorbs ``b + ½ Σ_lo a_k``) and a
per-mask max shift, ``E[i,c] = exp(L[i,c] − max_c L[i,c]) ≤ 1``, so nothing overflows whatever
the logits' magnitude and ``S ≤ c``.  ``S[i,j] ≥ exp(−range)`` where ``range`` is the spread over
classes of either group's row, so when ``min(range_lo, range_hi) ≤ −log(tiny/eps) − 1``
(≈ 671 in float64, ≈ 70 in float32) every ``S`` is a normal number with relative error a few
``eps``; past that bound the entries with ``S < tiny/eps`` are recomputed by a direct
log-sum-exp of ``L_lo[i] + L_hi[j]`` (correct for any magnitude; slower only where needed).
More than two groups reduce to two (a group of groups is one Khatri–Rao block), so two are used.

The *squared loss* needs no enumeration at all: ``E ½‖F(m) − y‖² = ½‖F(x) − y‖² +
(q/(2(1−q))) Σ_k h_k² ‖W[:, k]‖²`` (the ridge identity, seed 002).

``outer_sum`` (formerly ``gray``, a deprecated alias) — the site feeds an affine map followed by
an activation and the rest of the network.  The next pre-activation of every mask of a block is
the outer sum ``Z[j, i] = z_hi[j] + z_lo[i]`` of a high mask ``j`` and a low mask ``i`` (one add
per unit of the next layer per mask — the cost of the rank-one update of a Gray-code walk,
``z ← z ± a_k``, which it replaces), with ``z_hi`` of each chunk computed directly: no rounding
drift along a walk and no dependence on where chunks start.  For ``tanh`` and ``sigmoid`` even
the activation separates:
``tanh(z_lo + z_hi) = 1 − 2C/(C + B)`` with ``C = e^{−2z_lo}``, ``B = e^{2z_hi}`` (one add and
one division per unit instead of a transcendental), used when ``|2z|`` stays below the exponent
range (else the direct form).  The rest of the network then runs batched over the block.

Both methods accept *several* sites: the other sites' masks are enumerated by the engine
(:func:`dropcheck._engine.enumerate_sum`, the outer loop), and each outer mask contributes rows
``h`` to the fast inner enumeration; the kernels here are what the engine calls per chunk.

*The protocol, not the type.*  A model opts in through :meth:`Model.affine_feed
<dropcheck.models._base.Model.affine_feed>`, which describes the affine map the site feeds
(``W, b``), what follows (the logits, or an activation and the later affine maps), whether the
site's value carries tokens whose losses add up (an LSTM's decoder site: each token is a row,
since ``E Σ_t ℓ_t = Σ_t E ℓ_t``), and optionally how to pull a site cotangent back through the
layers below (for the gradient).  MLP, Linear and the LSTM's decoder site implement it.

Summation order is fixed: within a chunk by matrix-vector products with the probability
vectors, across chunks by the engine's pairwise sum (:class:`dropcheck._engine.PairwiseSum`),
so results depend on
``chunk_size`` only through rounding, and memory is bounded by ``2^LOW_BITS`` low masks, a
segment of high masks and one chunk, whatever ``2^d`` is.  Everything uses the model's
namespace ``xp``.

*The gradient* (:func:`expected_gradient`) factorizes too:
``E[p_c(m)] = Σ_ij P_i P_j E_lo[i,c] E_hi[j,c]/S_ij`` and ``E[m_k p_c(m)]`` follow from
``T = (P_hi ⊗ P_lo)/S`` by two more products (one division per mask, no per-mask backward),
and the layers below the site see only the expected site cotangent.

Where else it applies (not wired here): the normalized geometric mean of the sub-network
predictions (claim L2), which is ``E log p``; and second moments such as
``Cov(ξ_drop)`` only at ``c²`` products per mask (``E[p_c p_c' …]``), which is why
``gradient_noise_cov`` stays batched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dropcheck import _engine
from dropcheck._engine import PairwiseSum as _Sum
from dropcheck.losses import CrossEntropy, Squared
from dropcheck.models._base import AffineFeed, Model

__all__ = [
    "METHODS",
    "FastPlan",
    "normalize_method",
    "plan",
    "expected_loss",
    "expected_gradient",
]

#: Methods accepted by the public functions of :mod:`dropcheck.exact` (``"gray"`` is a
#: deprecated alias of ``"outer_sum"``).
METHODS = ("auto", "batched", "factorized", "outer_sum", "gray")

#: Floats of a factorized chunk's product (masks × classes), :data:`dropcheck._engine.CACHE_BYTES`
#: of float64: about 2^15 masks for 10 classes keeps ``S``, its ``log`` and the reduction in
#: cache, and the product below OpenBLAS's threshold for threading it.
FACTORIZED_CHUNK_ELEMS = _engine.CACHE_BYTES // _engine.ITEMSIZE

#: Floats per chunk of the outer-sum method (masks × floats per mask), the same cache budget.
OUTER_SUM_FLOATS = _engine.CACHE_BYTES // _engine.ITEMSIZE
GRAY_FLOATS = OUTER_SUM_FLOATS  # the old name

_WARNED: set[str] = set()


def normalize_method(method: str) -> str:
    """Check ``method`` and map the deprecated ``"gray"`` to ``"outer_sum"`` (warning once).

    ``"gray"`` named a Gray-code walk the method never was: it forms each block's
    pre-activations as an outer sum.
    """
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {', '.join(map(repr, METHODS[:-1]))}; got {method!r}"
        )
    if method == "gray":
        if "gray" not in _WARNED:
            _WARNED.add("gray")
            warnings.warn(
                "method='gray' is deprecated: the method is an outer-sum block enumeration, "
                "not a Gray-code walk; use method='outer_sum'",
                DeprecationWarning,
                stacklevel=3,
            )
        return "outer_sum"
    return method


@dataclass(frozen=True)
class FastPlan:
    """A fast path: ``method`` over ``site``, which feeds the affine map ``feed``.

    ``outer`` are the other dropping sites, enumerated by the engine around the kernel.
    """

    method: str
    site: str
    feed: AffineFeed
    outer: tuple[str, ...]


def plan(
    model: Model,
    names: tuple[str, ...],
    qd: Mapping[str, float],
    method: str,
    what: str,
    *,
    gradient: bool = False,
) -> FastPlan | None:
    """Choose a fast path, or None for the batched engine.

    The fast site is the last dropping site in the model's order (nothing after it drops
    units); it applies when :meth:`Model.affine_feed` describes it.  ``auto`` picks
    ``factorized`` when that site feeds the decoder and the loss (per row) is cross-entropy or
    squared, else ``outer_sum`` when it feeds an affine map followed by an activation and more
    affine maps, else batched.  With ``gradient`` the factorized path also needs the feed's
    ``pullback`` (and no tokens), and ``outer_sum`` does not apply.  Asking for a method where
    it does not apply raises ``ValueError`` with the reason.
    """
    method = normalize_method(method)
    if method == "batched":
        return None
    order = model.site_names
    active = sorted((s for s in names if qd[s] > 0.0), key=order.index)
    why = None
    feed = None
    if not active:
        why = "no chosen site drops units (q = 0), there is one mask"
    else:
        feed = model.affine_feed(active[-1])
        if feed is None:
            why = (f"site {active[-1]!r}, the last dropping site of {type(model).__name__}, "
                   "does not feed an affine map the model describes (Model.affine_feed)")
        elif not feed.decoder and feed.tokens:
            why = f"site {active[-1]!r} carries tokens but does not feed the decoder"
    if why is not None:
        if method == "auto":
            return None
        raise ValueError(f"method={method!r} does not apply to {what}: {why}; use 'batched'")
    assert feed is not None
    site = active[-1]
    outer = tuple(active[:-1])
    factorizable = feed.decoder and isinstance(feed.token_loss, CrossEntropy | Squared)
    reason = None
    if not feed.decoder:
        reason = f"site {site!r} feeds an affine map that is not the decoder"
    elif not factorizable:
        reason = f"the loss {feed.token_loss.name!r} has no factorized form"  # type: ignore[union-attr]
    elif gradient and (feed.pullback is None or feed.tokens):
        reason = (f"{type(model).__name__} gives no pullback through the layers below site "
                  f"{site!r} (AffineFeed.pullback)")
    if method == "factorized" and reason is not None:
        alt = "'batched'" if gradient else "'outer_sum' or 'batched'"
        raise ValueError(
            f"method='factorized' does not apply to {what}: {reason}; use {alt}"
        )
    if method == "auto":
        if reason is None:
            method = "factorized"
        elif gradient:
            return None
        else:
            method = "outer_sum"
    return FastPlan(method, site, feed, outer)


# ----- small helpers -----


def _bits(xp: Any, start: int, stop: int, nbits: int, dtype: Any) -> Any:
    """Keep bits of masks ``start … stop−1``, ``(stop−start, nbits)``; unit 0 is the low bit."""
    idx = xp.arange(start, stop, dtype=xp.int64)
    shift = xp.arange(nbits, dtype=xp.int64)
    return xp.astype((idx[:, None] >> shift[None, :]) & 1, dtype)


def _probs(bits: Any, q: float, xp: Any) -> Any:
    """Probabilities ``(1−q)^kept q^dropped`` of masks given by their bits."""
    nb = bits.shape[1]
    kept = xp.sum(bits, axis=1)
    return (1.0 - q) ** kept * q ** (nb - kept)


def _onehot(y: Any, c: int, xp: Any, dtype: Any) -> Any:
    return xp.astype(xp.arange(c)[None, :] == y[:, None], dtype)


#: Largest low block (bits): the per-row state is ``O(2^LOW_BITS)``, so memory stays flat in ``d``.
LOW_BITS = 10


def _split(d: int, budget: int) -> tuple[int, int]:
    """Low/high bit counts: balanced up to :data:`LOW_BITS`, the block within the budget."""
    lo = min((d + 1) // 2, LOW_BITS, max(0, int(math.floor(math.log2(max(1, budget))))))
    return lo, d - lo


#: High masks whose pre-activations are formed at once (a segment): per-row setup is amortized
#: over it, while the product/log chunks inside stay small.
SEGMENT = 2**10


def _segments(n_hi: int, hc: int) -> Iterator[tuple[int, int, Iterator[tuple[int, int]]]]:
    """High masks ``0 … n_hi−1`` as segments ``(g0, g1, chunks)``, generated lazily."""
    seg = hc * max(1, SEGMENT // hc)
    for g0 in range(0, n_hi, seg):
        g1 = min(n_hi, g0 + seg)
        yield g0, g1, ((j0, min(g1, j0 + hc)) for j0 in range(g0, g1, hc))


def _blocks(
    n_rows: int, d: int, lo: int, budget: int
) -> Iterator[tuple[int, int, Iterator[tuple[int, int, Iterator[tuple[int, int]]]]]]:
    """Yield ``(r0, r1, segments)``: rows ``r0:r1`` and their high masks in segments of chunks.

    When a row's ``2^d`` masks fit the budget, several rows share a chunk; else one row's high
    masks are cut into chunks of ``budget // 2^lo`` (a chunk is ``Hc × 2^lo`` masks), grouped in
    segments ``(g0, g1, chunks)`` of about :data:`SEGMENT` high masks.  Everything is generated
    lazily: memory does not grow with ``2^d``.
    """
    rows = max(1, budget // 2**d)
    hc = max(1, budget // 2**lo)
    for r0 in range(0, n_rows, rows):
        yield r0, min(n_rows, r0 + rows), _segments(2 ** (d - lo), hc)


def _exp_limits(xp: Any, dtype: Any) -> tuple[float, float]:
    """``(tau, LIM)``: the smallest safe ``S`` (``tiny/eps``) and the a-priori safe range."""
    fi = xp.finfo(dtype)
    tau = float(fi.smallest_normal) / float(fi.eps)
    return tau, -math.log(tau) - 1.0


# ----- factorized: one site feeding the decoder -----


#: Largest number of equal-probability masks whose ``S`` are multiplied before one ``log``
#: (a power of two; smaller powers are used when the logits' spread makes the product unsafe).
FOLD = 8


def _fold_order(lo: int, k: int) -> tuple[list[int], int, int]:
    """Low masks reordered for ``k``-fold products: ``(order, nt, ns)``.

    Masks with the same number of kept units have the same probability, so within each such
    group consecutive ``k``-tuples are laid out as ``k`` blocks of ``nt`` columns (position 0
    of every tuple, then position 1, …) followed by the ``ns`` leftovers.
    """
    groups: dict[int, list[int]] = {}
    for i in range(2**lo):
        groups.setdefault(bin(i).count("1"), []).append(i)
    tuples: list[list[int]] = []
    singles: list[int] = []
    for g in groups.values():
        full = len(g) - len(g) % k
        tuples += [g[t : t + k] for t in range(0, full, k)]
        singles += g[full:]
    order = [t[p] for p in range(k) for t in tuples] + singles
    return order, len(tuples), len(singles)


def _choose_fold(folds: list[int], spread: float, lim: float, nt: int) -> int:
    """The largest fold whose product of ``S`` stays normal: ``fold·spread ≤ lim`` (else 1)."""
    return next((f for f in folds if f * spread <= lim and nt), 1)


def _factorized_ce_rows(
    xp: Any, h: Any, W: Any, b: Any, y: Any, shift: Any, q: float, budget: int
) -> Any:
    """``E_m ℓ(F(m), y) − shift`` per row for cross-entropy, ``(N,)`` (module docstring).

    *Fewer logs than masks.*  Low masks with equal probability contribute
    ``P (log S_a + log S_b + …) = P log(S_a S_b …)``: the low masks are ordered by their number
    of kept units (:func:`_fold_order`) and up to :data:`FOLD` of them share one ``log``, which
    is safe when ``FOLD·range ≤ −log(tiny/eps) − 1`` (each ``S ∈ [e^{−range}, c]``, so the
    product stays normal; else fewer are folded, down to one ``log`` per mask).
    """
    N, d = h.shape
    c = W.shape[0]
    dtype = h.dtype
    tau, lim = _exp_limits(xp, dtype)
    lo, hi = _split(d, budget)
    A = xp.permute_dims(h[:, None, :] * W[None, :, :], (0, 2, 1)) / (1.0 - q)  # (N, d, c)
    A_lo, A_hi = A[:, :lo, :], A[:, lo:, :]
    K = FOLD
    folds = [f for f in (K // 2**e for e in range(K.bit_length())) if f > 1 and K % f == 0]
    order, nt, ns = _fold_order(lo, K)
    bits_lo = xp.take(_bits(xp, 0, 2**lo, lo, dtype), xp.asarray(order, dtype=xp.int64), axis=0)
    P_lo = _probs(bits_lo, q, xp)
    P_t, P_s = P_lo[:nt], P_lo[K * nt :]  # tuple and leftover probabilities
    base = b[None, :] + 0.5 * xp.sum(A_lo, axis=1)  # (N, c): the high group's offset
    # E[F_y(m)] is the clean logit: inverted dropout keeps the mean, and F is affine in m
    clean_y = xp.sum((h @ W.T + b[None, :]) * _onehot(y, c, xp, dtype), axis=1)
    out: list[Any] = []
    for r0, r1, segments in _blocks(N, d, lo, budget):
        L_lo = (bits_lo - 0.5) @ A_lo[r0:r1, ...]  # (Nb, 2^lo, c), centred per class
        r = xp.max(L_lo, axis=2)
        E_loT = xp.permute_dims(xp.exp(L_lo - r[..., None]), (0, 2, 1))  # (Nb, c, 2^lo)
        range_lo = xp.max(xp.max(L_lo, axis=2) - xp.min(L_lo, axis=2), axis=1)
        # constant part: Σ_i P_lo r_i − shift − F_y(x)
        parts = _Sum()
        parts.add(r @ P_lo - shift[r0:r1] - clean_y[r0:r1])
        for g0, g1, chunks in segments:
            bits_hi = _bits(xp, g0, g1, hi, dtype)
            P_hi = _probs(bits_hi, q, xp)
            L_hi = base[r0:r1, None, :] + bits_hi @ A_hi[r0:r1, ...]  # (Nb, G, c)
            s = xp.max(L_hi, axis=2)
            E_hi = xp.exp(L_hi - s[..., None])
            range_hi = xp.max(xp.max(L_hi, axis=2) - xp.min(L_hi, axis=2), axis=1)
            spread = float(xp.max(xp.minimum(range_lo, range_hi)))
            fold = _choose_fold(folds, spread, lim, nt)
            parts.add(s @ P_hi)
            for j0, j1 in chunks:
                a0, a1 = j0 - g0, j1 - g0
                Pc = P_hi[a0:a1]
                S = E_hi[:, a0:a1, :] @ E_loT  # (Nb, Hc, 2^lo): Z up to the row shifts
                if fold > 1:
                    acc = None
                    for g in range(0, K, fold):
                        prod = S[..., g * nt : (g + 1) * nt]
                        for p in range(g + 1, g + fold):
                            prod = prod * S[..., p * nt : (p + 1) * nt]
                        acc = xp.log(prod) if acc is None else acc + xp.log(prod)
                    parts.add((acc @ P_t) @ Pc)
                    parts.add((xp.log(S[..., K * nt :]) @ P_s) @ Pc)
                    continue
                if spread > lim:
                    bad = S < tau
                    if bool(xp.any(bad)):
                        parts.add(_fix_underflow(
                            xp, bad, L_lo, L_hi[:, a0:a1, :], r, s[:, a0:a1], P_lo, Pc
                        ))
                        S = xp.where(bad, xp.ones_like(S), S)
                parts.add((xp.log(S) @ P_lo) @ Pc)
        out.append(parts.total())
    return xp.concat(out)


def _fix_underflow(
    xp: Any, bad: Any, L_lo: Any, L_hi: Any, r: Any, s: Any, P_lo: Any, P_hi: Any
) -> Any:
    """``Σ_bad P_ij log S_ij`` per row by a direct log-sum-exp where ``S`` underflowed."""
    Nb, Hc, nlo = bad.shape
    c = L_lo.shape[2]
    (flat,) = xp.nonzero(xp.reshape(bad, (-1,)))
    row = flat // (Hc * nlo)
    j = (flat // nlo) % Hc
    i = flat % nlo
    t = xp.take(xp.reshape(L_lo, (-1, c)), row * nlo + i, axis=0) + xp.take(
        xp.reshape(L_hi, (-1, c)), row * Hc + j, axis=0
    )
    m = xp.max(t, axis=1)
    lse = m + xp.log(xp.sum(xp.exp(t - m[:, None]), axis=1))
    log_s = lse - xp.take(xp.reshape(r, (-1,)), row * nlo + i) - xp.take(
        xp.reshape(s, (-1,)), row * Hc + j
    )
    w = xp.take(P_lo, i) * xp.take(P_hi, j) * log_s
    owner = xp.astype(row[:, None] == xp.arange(Nb)[None, :], w.dtype)  # (K, Nb)
    return w @ owner


def _squared_rows(xp: Any, h: Any, W: Any, b: Any, y: Any, shift: Any, q: float) -> Any:
    """Closed form ``½‖Wh + b − y‖² + (q/(2(1−q))) Σ_k h_k² ‖W[:,k]‖² − shift``."""
    f = h @ W.T + b[None, :]
    var = (q / (2.0 * (1.0 - q))) * ((h * h) @ xp.sum(W * W, axis=0))
    return (0.5 * xp.sum((f - y) ** 2, axis=1) - shift) + var


# ----- factorized gradient: the softmax moments E[p], E[m_k p] -----


def _factorized_ce_moments(
    xp: Any, h: Any, W: Any, b: Any, q: float, budget: int
) -> tuple[Any, Any]:
    r"""``E_m[p(m)]`` ``(N, c)`` and ``E_m[m_k p(m)]`` ``(N, d, c)`` for the decoder site.

    With the shifted factors of :func:`_factorized_ce_rows`, ``p_c(i, j) = E_lo[i,c] E_hi[j,c]
    / S_ij`` (the row shifts cancel).  With ``T = (P_hi ⊗ P_lo)/S`` (one division per mask),

    .. math:: E[m_k p_c] = \sum_i m_k(i) E_lo[i,c] (T^T E_hi)[i,c]   (k low),
              \quad \sum_j m_k(j) E_hi[j,c] (T E_lo)[j,c]   (k high),

    two products of inner dimension ``Hc`` / ``2^lo``; ``E[p_c]`` is the first without
    ``m_k``.  Entries where ``S`` underflowed get ``T = 0`` and a direct softmax instead.
    """
    N, d = h.shape
    c = W.shape[0]
    dtype = h.dtype
    tau, lim = _exp_limits(xp, dtype)
    lo, hi = _split(d, budget)
    nlo = 2**lo
    A = xp.permute_dims(h[:, None, :] * W[None, :, :], (0, 2, 1)) / (1.0 - q)
    A_lo, A_hi = A[:, :lo, :], A[:, lo:, :]
    bits_lo = _bits(xp, 0, nlo, lo, dtype)
    P_lo = _probs(bits_lo, q, xp)
    base = b[None, :] + 0.5 * xp.sum(A_lo, axis=1)
    Ep_out, Epm_out = [], []
    for r0, r1, segments in _blocks(N, d, lo, budget):
        nb = r1 - r0
        L_lo = (bits_lo - 0.5) @ A_lo[r0:r1, ...]
        r = xp.max(L_lo, axis=2)
        E_lo = xp.exp(L_lo - r[..., None])  # (Nb, 2^lo, c)
        E_loT = xp.permute_dims(E_lo, (0, 2, 1))
        range_lo = xp.max(xp.max(L_lo, axis=2) - xp.min(L_lo, axis=2), axis=1)
        V_lo = _Sum()  # Σ_j T_ij E_hi[j], (Nb, 2^lo, c)
        hi_parts = _Sum()  # (Nb, hi, c)
        d_p, d_pm = _Sum(), _Sum()  # E[p], E[m p] of the repaired entries
        for g0, g1, chunks in segments:
            bits_hi = _bits(xp, g0, g1, hi, dtype)
            P_hi = _probs(bits_hi, q, xp)
            L_hi = base[r0:r1, None, :] + bits_hi @ A_hi[r0:r1, ...]
            s = xp.max(L_hi, axis=2)
            E_hi = xp.exp(L_hi - s[..., None])
            range_hi = xp.max(xp.max(L_hi, axis=2) - xp.min(L_hi, axis=2), axis=1)
            safe = bool(xp.all(xp.minimum(range_lo, range_hi) <= lim))
            for j0, j1 in chunks:
                a0, a1 = j0 - g0, j1 - g0
                Eh = E_hi[:, a0:a1, :]
                S = Eh @ E_loT
                if not safe:
                    bad = S < tau
                    if bool(xp.any(bad)):
                        dp, dpm = _direct_moments(
                            xp, bad, L_lo, L_hi[:, a0:a1, :], bits_lo, bits_hi[a0:a1, :],
                            P_lo, P_hi[a0:a1])
                        d_p.add(dp)
                        d_pm.add(dpm)
                        S = xp.where(bad, xp.full_like(S, math.inf), S)  # T = 0 there
                T = (P_hi[a0:a1][:, None] * P_lo[None, :]) / S  # (Nb, Hc, 2^lo)
                V_lo.add(xp.permute_dims(T, (0, 2, 1)) @ Eh)
                hi_parts.add(xp.permute_dims(bits_hi[a0:a1, :], (1, 0))
                                @ (Eh * (T @ E_lo)))
        W_lo = E_lo * V_lo.total()  # (Nb, 2^lo, c): Σ_j p(i, j) per low mask
        Ep = xp.sum(W_lo, axis=1)
        Epm = xp.concat([xp.permute_dims(bits_lo, (1, 0)) @ W_lo, hi_parts.total()], axis=1)
        if d_p.total() is not None:
            Ep = Ep + d_p.total()
            Epm = Epm + d_pm.total()
        Ep_out.append(Ep)
        Epm_out.append(xp.reshape(Epm, (nb, d, c)))
    return xp.concat(Ep_out), xp.concat(Epm_out)


def _direct_moments(
    xp: Any, bad: Any, L_lo: Any, L_hi: Any, bits_lo: Any, bits_hi: Any, P_lo: Any, P_hi: Any
) -> tuple[Any, Any]:
    """``Σ_bad P_ij p(i,j)`` and ``Σ_bad P_ij m_k p(i,j)`` per row by a direct softmax."""
    Nb, Hc, nlo = bad.shape
    c = L_lo.shape[2]
    (flat,) = xp.nonzero(xp.reshape(bad, (-1,)))
    row = flat // (Hc * nlo)
    j = (flat // nlo) % Hc
    i = flat % nlo
    t = xp.take(xp.reshape(L_lo, (-1, c)), row * nlo + i, axis=0) + xp.take(
        xp.reshape(L_hi, (-1, c)), row * Hc + j, axis=0
    )
    e = xp.exp(t - xp.max(t, axis=1)[:, None])
    p = e / xp.sum(e, axis=1)[:, None]  # (K, c)
    w = xp.take(P_lo, i) * xp.take(P_hi, j)
    owner = xp.astype(row[None, :] == xp.arange(Nb)[:, None], p.dtype) * w[None, :]  # (Nb, K)
    bits = xp.concat([xp.take(bits_lo, i, axis=0), xp.take(bits_hi, j, axis=0)], axis=1)
    Ep = owner @ p
    Epm = xp.permute_dims(owner[:, :, None] * bits[None, :, :], (0, 2, 1)) @ p  # (Nb, d, c)
    return Ep, Epm


def _decoder_grads(
    xp: Any, h: Any, W: Any, b: Any, y: Any, q: float, loss: Any, budget: int
) -> tuple[Any, Any, Any]:
    """``E ∇_W ℓ`` ``(N, c, d)``, ``E ∇_b ℓ`` ``(N, c)``, ``E ∇_h ℓ`` ``(N, d)`` of the decoder.

    The loss owns its derivative.  Cross-entropy's, ``∇_F ℓ = p − e_y``, is affine in ``p``
    (:meth:`CrossEntropy.grad_at_probs`), and ``∇_W ℓ = ∇_F ℓ ⊗ m⊙h/(1−q)``, so with the
    softmax moments ``E[p]``, ``E[m_k p]``: ``G_k = E[m_k ∇_F ℓ]/(1−q)
    = grad_at_probs(E[m_k p]/(1−q))`` ``(N, d, c)``, ``∇W = (G ⊙ h)ᵀ``,
    ``∇b = grad_at_probs(E[p])``, ``∇h_k = Σ_c W_ck G_kc``.  Squared loss in closed form, with
    ``r = ∇_F ℓ(F̄)`` at the mean logits ``F̄ = Wh + b`` (affine in the mask):
    ``∇W = r hᵀ + (q/(1−q)) W diag(h²)``, ``∇b = r``, ``∇h = Wᵀr + (q/(1−q)) diag(WᵀW) h``.
    """
    if isinstance(loss, Squared):
        r = loss.grad(h @ W.T + b[None, :], y)  # (N, c)
        v = q / (1.0 - q)
        gW = r[:, :, None] * h[:, None, :] + v * (W[None, :, :] * (h * h)[:, None, :])
        gh = r @ W + v * xp.sum(W * W, axis=0)[None, :] * h
        return gW, r, gh
    Ep, Epm = _factorized_ce_moments(xp, h, W, b, q, budget)
    G = loss.grad_at_probs(Epm / (1.0 - q), y[:, None])  # (N, d, c)
    gW = xp.permute_dims(G * h[:, :, None], (0, 2, 1))
    gh = xp.sum(G * xp.permute_dims(W, (1, 0))[None, :, :], axis=2)
    return gW, loss.grad_at_probs(Ep, y), gh


def _outer_chunk(model: Model, fp: FastPlan, n: int, chunk_size: int | None) -> int:
    """Outer masks per engine chunk: ``chunk_size``, else from the budget.

    Per outer mask and example the trace holds the sites and logits (a few copies), and the
    kernel's setup ``A = h ⊙ W`` holds ``d × d_out`` floats per row.
    """
    if chunk_size is not None:
        return chunk_size
    d = model.widths[fp.site]
    per = 4 * (sum(model.widths.values()) + model.n_classes) + 2 * d * fp.feed.widest
    return _engine.chunk_items(n * per, cap=2**16)


def _outer_sum_up(
    model: Model,
    qd: Mapping[str, float],
    fp: FastPlan,
    n: int,
    block: Callable[[dict[str, Any] | None, int], Any],
    chunk_size: int | None,
    executor: Any,
) -> Any:
    """``Σ_outer p(m) block(noise(m))`` over the outer sites' masks, by the engine."""
    xp = model.xp
    widths = {s: model.widths[s] for s in fp.outer}

    def fn(eta: Mapping[str, Any], prob: Any) -> Any:
        v = block({s: eta[s][:, None, :] for s in fp.outer}, prob.shape[0])
        return xp.tensordot(prob, v, axes=1)

    return _engine.enumerate_sum(
        widths, {s: qd[s] for s in fp.outer}, fn,
        chunk_size=_outer_chunk(model, fp, n, chunk_size),
        max_masks=2 ** sum(widths.values()), xp=xp, dtype=model.dtype,
        executor=executor,
    )


def _place(model: Model, fp: FastPlan, low: Any, gW: Any, gb: Any) -> Any:
    """Flat gradients ``(B, n, P)``: ``low`` with the feed's ``W``, ``b`` slots set to them."""
    xp = model.xp
    pieces, i = [], 0
    for k, p in model.params.items():
        m = math.prod(p.shape)
        if k == fp.feed.w_key:
            pieces.append(gW)
        elif k == fp.feed.b_key:
            pieces.append(gb)
        else:
            pieces.append(low[..., i : i + m])
        i += m
    return xp.concat(pieces, axis=-1)


def expected_gradient(
    model: Model,
    x2: Any,
    y2: Any,
    qd: Mapping[str, float],
    fp: FastPlan,
    *,
    chunk_size: int | None = None,
    executor: Any = None,
) -> Any:
    """``E_η ∇_W ℓ(F(x, η))`` per example ``(n, P)`` for a factorized plan.

    The decoder's parameters from :func:`_decoder_grads`; the layers below the site see no
    noise of the site, so their gradient is the feed's ``pullback`` of ``E ∇_h ℓ``.
    """
    assert fp.method == "factorized" and fp.feed.pullback is not None
    xp = model.xp
    n = x2.shape[0]
    q = qd[fp.site]
    feed = fp.feed
    W, b = feed.W, feed.b
    budget = chunk_size or _engine.chunk_items(W.shape[0], budget=_engine.CACHE_BYTES)

    def block(noise: dict[str, Any] | None, B: int) -> Any:
        tr = model.trace(x2, noise)
        h = model.site_values(tr)[fp.site]  # (B, n, d)
        yb = xp.reshape(xp.broadcast_to(y2[None, ...], (B, *y2.shape)), (B * n, *y2.shape[1:]))
        gW, gb, gh = _decoder_grads(xp, xp.reshape(h, (B * n, h.shape[2])), W, b, yb, q,
                                    feed.token_loss, budget)
        low = feed.pullback(x2, noise, xp.reshape(gh, (B, n, -1)))  # type: ignore[misc]
        return _place(model, fp, low, xp.reshape(gW, (B, n, -1)), xp.reshape(gb, (B, n, -1)))

    if not fp.outer:
        return block(None, 1)[0, ...]
    return _outer_sum_up(model, qd, fp, n, block, chunk_size, executor)


# ----- outer sum: one site feeding an affine map followed by more layers -----


def _activation(feed: AffineFeed) -> Callable[[Any, Any], Any]:
    """The feed's activation; relu as one ``maximum`` (the table's form takes three passes)."""
    if feed.activation == "relu":
        return lambda z, xp: xp.maximum(z, xp.zeros((), dtype=z.dtype))
    return feed.act  # type: ignore[return-value]


def _rest(feed: AffineFeed, start: int, act: Any, xp: Any) -> Any:
    """The feed's following maps from ``start`` on ``act``, units-major ``(…, d, masks)``."""
    return feed.rest(act, xp, start, _activation(feed))


def _outer_sum_rows(
    feed: AffineFeed, xp: Any, h: Any, y: Any, shift: Any, q: float, budget_floats: int
) -> Any:
    """``E_m ℓ(F(m), y) − shift`` per row, the site feeding ``feed`` (module docstring).

    Blocks are *units-major*, ``(Nb, Hc, units, 2^lo)``: the outer sum ``z_hi[j] + z_lo[i]``
    broadcasts along contiguous rows of ``2^lo`` masks, each layer is ``Hc`` products
    ``W (d_out × d_in) · block (d_in × 2^lo)``, and the softmax's max and sum over classes are
    elementwise over rows of masks.

    With a ``tanh``/``sigmoid`` layer the activation is ``1 − 2u`` / ``u`` with
    ``u = 1/(1 + e^{k z_hi} e^{k z_lo}) = C/(C + B)``, ``C = e^{−k z_lo}`` per low mask and
    ``B = e^{k z_hi}`` per high mask (one add and one division per unit and mask); an extra unit
    with ``C = 1, B = 0`` gives ``u = 1`` and carries the next layer's bias through the product.
    When that next layer is the decoder and the loss is cross-entropy, ``u ∈ [0, 1]`` bounds
    every logit a priori,
    ``F_c ∈ [b_c + Σ min(W_c, 0), b_c + Σ max(W_c, 0)]``, so one shift ``σ = max_c (upper_c)``
    makes every ``exp(F_c − σ) ≤ 1`` without a per-mask max (σ cancels in ``lse − F_y``).
    """
    N, d = h.shape
    dtype = h.dtype
    W, b = feed.W, feed.b
    decoder = feed.decoder
    c = feed.n_classes
    loss_fn = feed.token_loss
    budget = max(1, budget_floats // (2 * feed.widest + c))
    lo, hi = _split(d, budget)
    nlo = 2**lo
    A = xp.permute_dims(h[:, None, :] * W[None, :, :], (0, 2, 1)) / (1.0 - q)  # (N, d, d')
    A_lo, A_hi = A[:, :lo, :], A[:, lo:, :]
    bits_lo = _bits(xp, 0, nlo, lo, dtype)
    P_lo = _probs(bits_lo, q, xp)
    base = b[None, :] + 0.5 * xp.sum(A_lo, axis=1)
    ce = isinstance(loss_fn, CrossEntropy)
    sigma_fn = _activation(feed)
    trick = feed.activation if (not decoder and feed.activation in ("tanh", "sigmoid")) else None
    k = 2.0 if trick == "tanh" else -1.0  # tanh(z) = 1 − 2/(1 + e^{2z}); σ(z) = 1/(1 + e^{−z})
    exp_lim = math.log(float(xp.finfo(dtype).max)) - 1.0
    fused = False
    W_aug: Any = None
    if trick is not None:
        Wn, bn = feed.following[0]
        W_u, b_u = (-2.0 * Wn, bn + xp.sum(Wn, axis=1)) if trick == "tanh" else (Wn, bn)
        sigma = 0.0
        if ce and len(feed.following) == 1:
            zero = xp.zeros_like(W_u)
            upper = b_u + xp.sum(xp.maximum(W_u, zero), axis=1)
            lower = b_u + xp.sum(xp.minimum(W_u, zero), axis=1)
            sigma = float(xp.max(upper))
            fused = float(xp.max(lower)) - sigma >= -_exp_limits(xp, dtype)[1]
            sigma = sigma if fused else 0.0
        W_aug = xp.concat([W_u, (b_u - sigma)[:, None]], axis=1)  # (c or d'', d'+1)
    onehot: Any = _onehot(y, c, xp, dtype) if ce else None
    out: list[Any] = []
    for r0, r1, segments in _blocks(N, d, lo, budget):
        nb = r1 - r0
        parts = _Sum()
        parts.add(-shift[r0:r1])
        # (Nb, d', 2^lo), centred per unit
        Z_loT = xp.permute_dims((bits_lo - 0.5) @ A_lo[r0:r1, ...], (0, 2, 1))
        C_lo: Any = None
        if trick is not None and bool(xp.all(xp.abs(k * Z_loT) <= exp_lim)):
            C_lo = xp.concat([xp.exp(-k * Z_loT), xp.ones((nb, 1, nlo), dtype=dtype)], axis=1)
        for g0, g1, chunks in segments:
            bits_hi = _bits(xp, g0, g1, hi, dtype)
            P_hi = _probs(bits_hi, q, xp)
            Z_hi = base[r0:r1, None, :] + bits_hi @ A_hi[r0:r1, ...]  # (Nb, G, d')
            B_hi = None
            if C_lo is not None and bool(xp.all(xp.abs(k * Z_hi) <= exp_lim)):
                # C, B lie in [e^-lim, e^lim], lim = log(max) − 1: C + B is finite and normal
                B_hi = xp.concat([xp.exp(k * Z_hi), xp.zeros((nb, g1 - g0, 1), dtype=dtype)],
                                 axis=2)
            for j0, j1 in chunks:
                a0, a1 = j0 - g0, j1 - g0
                hc = a1 - a0
                Pc = P_hi[a0:a1]
                if B_hi is not None:
                    C = C_lo[:, None, :, :]
                    u = C / (C + B_hi[:, a0:a1, :, None])  # (Nb, Hc, d'+1, 2^lo)
                    f = W_aug @ u  # pre-activation of the next map (logits − σ when fused)
                    if not fused and len(feed.following) > 1:
                        f = _rest(feed, 1, sigma_fn(f, xp), xp)
                else:
                    z = Z_loT[:, None, :, :] + Z_hi[:, a0:a1, :, None]  # (Nb, Hc, d', 2^lo)
                    f = z if decoder else _rest(feed, 0, sigma_fn(z, xp), xp)
                # f: (Nb, Hc, c, 2^lo) logits
                if ce:
                    if fused:  # every logit − σ ≤ 0 and the largest ≥ −lim: no max needed
                        lse = xp.log(xp.sum(xp.exp(f), axis=2))
                    else:
                        mx = xp.max(f, axis=2)
                        lse = mx + xp.log(xp.sum(xp.exp(f - mx[:, :, None, :]), axis=2))
                    lab = onehot[r0:r1, None, None, :] @ f  # (Nb, Hc, 1, 2^lo)
                    loss = lse - xp.reshape(lab, (nb, hc, nlo))
                else:
                    yb = y[r0:r1, ...]
                    loss = loss_fn.value(xp.permute_dims(f, (0, 1, 3, 2)),  # type: ignore[union-attr]
                                         xp.reshape(yb, (nb, 1, 1, *yb.shape[1:])))
                parts.add((loss @ P_lo) @ Pc)
        out.append(parts.total())
    return xp.concat(out)


# ----- driver -----


def _rows_fn(
    feed: AffineFeed, xp: Any, method: str, q: float, chunk_size: int | None
) -> Callable[[Any, Any, Any], Any]:
    """The kernel of ``method``: ``rows(h (N, d), y (N, …), shift (N,)) -> (N,)``."""
    W, b = feed.W, feed.b
    if method == "factorized":
        if isinstance(feed.token_loss, Squared):
            return lambda h, y, sh: _squared_rows(xp, h, W, b, y, sh, q)
        budget = chunk_size or _engine.chunk_items(W.shape[0], budget=_engine.CACHE_BYTES)
        return lambda h, y, sh: _factorized_ce_rows(xp, h, W, b, y, sh, q, budget)
    per_mask = 2 * feed.widest + feed.n_classes
    floats = OUTER_SUM_FLOATS if chunk_size is None else chunk_size * per_mask
    return lambda h, y, sh: _outer_sum_rows(feed, xp, h, y, sh, q, floats)


def expected_loss(
    model: Model,
    x2: Any,
    y2: Any,
    qd: Mapping[str, float],
    fp: FastPlan,
    *,
    clean: bool = False,
    chunk_size: int | None = None,
    executor: Any = None,
) -> Any:
    """``E_η ℓ(F(x, η), y)`` per example ``(n,)`` by the fast path ``fp`` (minus ``ℓ(F(x))``).

    With ``clean`` the loss without dropout is subtracted inside each row's sum (per token for
    a token feed), which keeps ``R_drop = E ℓ − ℓ(F(x))`` accurate.  Rows are the examples, or
    the ``(example, token)`` pairs of a token feed, whose per-row results are summed over the
    tokens.  ``chunk_size`` is the number of masks per chunk of the inner enumeration (and of
    the outer one); the result depends on it only by rounding.  The caller has checked the mask
    count against ``max_masks``.
    """
    xp = model.xp
    n = x2.shape[0]
    feed = fp.feed
    rows = _rows_fn(feed, xp, fp.method, qd[fp.site], chunk_size)
    y_rows = xp.reshape(y2, (-1,)) if feed.tokens else y2  # (n·K, …)
    nk = y_rows.shape[0]
    if clean:
        shift = feed.token_loss.value(model.trace(x2).logits[0, ...], y2)  # type: ignore[union-attr]
        shift = xp.reshape(shift, (nk,))
    else:
        shift = xp.zeros((nk,), dtype=model.dtype)

    def block(noise: dict[str, Any] | None, B: int) -> Any:
        h = model.site_values(model.trace(x2, noise))[fp.site]  # (B, n, [T,] d)
        h = xp.reshape(h, (B * nk, h.shape[-1]))
        yb = xp.reshape(xp.broadcast_to(y_rows[None, ...], (B, *y_rows.shape)),
                        (B * nk, *y_rows.shape[1:]))
        sb = xp.reshape(xp.broadcast_to(shift[None, :], (B, nk)), (B * nk,))
        v = rows(h, yb, sb)
        return xp.sum(xp.reshape(v, (B, n, -1)), axis=2) if feed.tokens else xp.reshape(v, (B, n))

    if not fp.outer:
        return block(None, 1)[0, ...]
    return _outer_sum_up(model, qd, fp, n, block, chunk_size, executor)
