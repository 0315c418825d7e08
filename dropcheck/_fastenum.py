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

``gray`` — the site feeds an affine map followed by an activation and the rest of the network.
Walking the high masks in Gray-code order, each step is a rank-one update of the next
pre-activation, ``z ← z ± a_k``, applied to a whole block of ``2^lo`` low masks at once.  Here
that update is realised as the outer sum ``Z[j, i] = z_hi[j] + z_lo[i]`` (one add per unit of the
next layer per mask, the cost of the rank-one update) with ``z_hi`` of each chunk computed
directly: the same per-mask cost, but no rounding drift along the walk and no dependence on
where chunks start.  For ``tanh`` and ``sigmoid`` even the activation separates:
``tanh(z_lo + z_hi) = 1 − 2C/(C + B)`` with ``C = e^{−2z_lo}``, ``B = e^{2z_hi}`` (one add and
one division per unit instead of a transcendental), used when ``|2z|`` stays below the exponent
range (else the direct form).  The rest of the network then runs batched over the block.

Both methods accept *several* sites: the other sites' masks are enumerated by the batched
engine (outer loop), and each outer mask contributes rows ``h`` to the fast inner enumeration.

Summation order is fixed: within a chunk by matrix-vector products with the probability
vectors, across chunks by a streaming pairwise sum (:class:`_Sum`), so results depend on
``chunk_size`` only through rounding, and memory is bounded by ``2^LOW_BITS`` low masks, a
segment of high masks and one chunk, whatever ``2^d`` is.  Everything uses the model's
namespace ``xp``.

*The gradient* (:func:`expected_gradient`) factorizes too:
``E[p_c(m)] = Σ_ij P_i P_j E_lo[i,c] E_hi[j,c]/S_ij`` and ``E[m_k p_c(m)]`` follow from
``T = (P_hi ⊗ P_lo)/S`` by two more products (one division per mask, no per-mask backward),
and the layers below the site see only the expected site cotangent.

Where else it applies (not wired here): any model whose logits are affine in one site's mask,
e.g. an LSTM's pre-decoder site (each time step's cross-entropy factorizes; a mask shared
across steps adds nothing to a sum of expectations); the normalized geometric mean of the
sub-network predictions (claim L2), which is ``E log p``; and second moments such as
``Cov(ξ_drop)`` only at ``c²`` products per mask (``E[p_c p_c' …]``), which is why
``gradient_noise_cov`` stays batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dropcheck.losses import CrossEntropy, Squared
from dropcheck.models._base import Model
from dropcheck.noise import enumerate_masks

__all__ = ["METHODS", "FastPlan", "plan", "expected_loss", "expected_gradient"]

#: Methods accepted by the public functions of :mod:`dropcheck.exact`.
METHODS = ("auto", "batched", "factorized", "gray")

#: Default size of a factorized chunk's product, masks × classes: about 2^15 masks for 10
#: classes keeps ``S`` (256 KiB in float64), its ``log`` and the reduction in cache, and the
#: product below OpenBLAS's threshold for threading it — on a shared 2-core machine a second
#: BLAS thread made chunks of 2^16 masks 30× slower.
FACTORIZED_CHUNK_ELEMS = 2**18

#: Default number of floats per chunk of the gray method (masks × floats per mask).
GRAY_FLOATS = 2**18


@dataclass(frozen=True)
class FastPlan:
    """A fast path: ``method`` over ``site`` (which feeds ``W{layer}``).

    ``outer`` are the other dropping sites, enumerated by the batched engine.
    """

    method: str
    site: str
    layer: int
    outer: tuple[str, ...]


def _mlp_layer(model: Model, site: str) -> int | None:
    """The 1-based layer whose affine map ``site`` feeds, or None for non-MLP models."""
    from dropcheck.models.mlp import MLP

    if not isinstance(model, MLP):
        return None
    return model._site_layer[site] + 1


def plan(
    model: Model, names: tuple[str, ...], qd: Mapping[str, float], method: str, what: str
) -> FastPlan | None:
    """Choose a fast path, or None for the batched engine.

    ``auto`` picks ``factorized`` when the last dropping site feeds the decoder and the loss is
    cross-entropy or squared, else ``gray`` when that site feeds an affine map, else batched.
    Asking for ``factorized`` or ``gray`` where it does not apply raises ``ValueError`` with
    the reason.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    if method == "batched":
        return None
    active = [s for s in names if qd[s] > 0.0]
    layers = {s: _mlp_layer(model, s) for s in active}
    why = None
    if not active:
        why = "no chosen site drops units (q = 0), there is one mask"
    elif any(v is None for v in layers.values()):
        why = f"{type(model).__name__} does not expose the affine map after its sites (MLP does)"
    if why is not None:
        if method == "auto":
            return None
        raise ValueError(f"method={method!r} does not apply to {what}: {why}; use 'batched'")
    site = max(active, key=lambda s: layers[s] or 0)
    layer = layers[site] or 0
    outer = tuple(s for s in active if s != site)
    decoder = layer == model.n_layers  # type: ignore[attr-defined]
    factorizable = decoder and isinstance(model.loss, CrossEntropy | Squared)
    if method == "factorized" and not factorizable:
        reason = (
            f"site {site!r} feeds layer {layer}, not the decoder"
            if not decoder
            else f"the loss {model.loss.name!r} has no factorized form"
        )
        raise ValueError(
            f"method='factorized' does not apply to {what}: {reason}; use 'gray' or 'batched'"
        )
    if method == "auto":
        method = "factorized" if factorizable else "gray"
    return FastPlan(method, site, layer, outer)


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


class _Sum:
    """A streaming pairwise sum: ``add`` parts in order, ``total()`` at the end.

    Level ``i`` holds the sum of ``2^i`` consecutive parts (a binary counter), so memory is
    ``O(log parts)`` and the rounding error ``O(eps·log parts)``; the grouping depends only on
    the sequence of parts, so the result is deterministic.
    """

    def __init__(self) -> None:
        self._levels: list[Any] = []

    def add(self, x: Any) -> None:
        """Add the next part."""
        i = 0
        while i < len(self._levels) and self._levels[i] is not None:
            x = self._levels[i] + x
            self._levels[i] = None
            i += 1
        if i == len(self._levels):
            self._levels.append(x)
        else:
            self._levels[i] = x

    def total(self) -> Any:
        """The sum of all parts (None if there were none)."""
        out = None
        for v in self._levels:
            if v is not None:
                out = v if out is None else v + out
        return out


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

    Cross-entropy, with ``G = E[m p]/(1−q) − e_y`` ``(N, d, c)``: ``∇W = (G ⊙ h)ᵀ``,
    ``∇b = E[p] − e_y``, ``∇h_k = Σ_c W_ck G_kc``.  Squared loss in closed form (``F̄ = Wh + b``):
    ``∇W = (F̄ − y) hᵀ + (q/(1−q)) W diag(h²)``, ``∇b = F̄ − y``,
    ``∇h = Wᵀ(F̄ − y) + (q/(1−q)) diag(WᵀW) h``.
    """
    c = W.shape[0]
    if isinstance(loss, Squared):
        r = h @ W.T + b[None, :] - y  # (N, c)
        v = q / (1.0 - q)
        gW = r[:, :, None] * h[:, None, :] + v * (W[None, :, :] * (h * h)[:, None, :])
        gh = r @ W + v * xp.sum(W * W, axis=0)[None, :] * h
        return gW, r, gh
    Ep, Epm = _factorized_ce_moments(xp, h, W, b, q, budget)
    e = _onehot(y, c, xp, h.dtype)
    G = Epm / (1.0 - q) - e[:, None, :]  # (N, d, c)
    gW = xp.permute_dims(G * h[:, :, None], (0, 2, 1))
    gh = xp.sum(G * xp.permute_dims(W, (1, 0))[None, :, :], axis=2)
    return gW, Ep - e, gh


def expected_gradient(
    model: Model,
    x2: Any,
    y2: Any,
    qd: Mapping[str, float],
    fp: FastPlan,
    *,
    chunk_size: int | None = None,
) -> Any:
    """``E_η ∇_W ℓ(F(x, η))`` per example ``(n, P)`` for a factorized plan.

    The decoder's parameters from :func:`_decoder_grads`; the layers below the site see no
    noise of the site, so their gradient is the reverse sweep of ``E ∇_h ℓ`` through them, done
    by the same MLP with its decoder replaced by the identity (its "logits" are ``h``).
    """
    from dropcheck.models.mlp import MLP

    assert fp.method == "factorized"
    xp = model.xp
    n = x2.shape[0]
    q = qd[fp.site]
    L = model.n_layers  # type: ignore[attr-defined]
    W, b = model.params[f"W{L}"], model.params[f"b{L}"]
    budget = chunk_size or max(1, FACTORIZED_CHUNK_ELEMS // W.shape[0])
    lower: Any = None
    if L > 1:
        d = model.widths[fp.site]
        lower = MLP(
            [model.params[f"W{i}"] for i in range(1, L)] + [xp.eye(d, dtype=model.dtype)],
            [model.params[f"b{i}"] for i in range(1, L)] + [xp.zeros((d,), dtype=model.dtype)],
            model.activation,  # type: ignore[attr-defined]
            model.site_names, "squared",
        )

    def block(noise: dict[str, Any] | None, B: int) -> Any:
        tr = model.trace(x2, noise)
        h = model.site_values(tr)[fp.site]  # (B, n, d)
        yb = xp.reshape(xp.broadcast_to(y2[None, ...], (B, *y2.shape)), (B * n, *y2.shape[1:]))
        gW, gb, gh = _decoder_grads(xp, xp.reshape(h, (B * n, h.shape[2])), W, b, yb, q,
                                    model.loss, budget)
        top = xp.concat([xp.reshape(gW, (B, n, -1)), xp.reshape(gb, (B, n, -1))], axis=2)
        if lower is None:
            return top
        _, g = lower.backward(lower.trace(x2, noise), xp.reshape(gh, (1, B, n, -1)),
                              params=True)
        d = gh.shape[1]
        return xp.concat([g[0, :, :, : g.shape[3] - d * d - d], top], axis=2)

    if not fp.outer:
        return block(None, 1)[0, ...]
    widths = {s: model.widths[s] for s in fp.outer}
    parts = _Sum()
    for ch in enumerate_masks(
        widths, {s: qd[s] for s in fp.outer}, chunk_size=chunk_size or 256,
        max_masks=2 ** sum(widths.values()), xp=xp, dtype=model.dtype,
    ):
        g = block({s: ch.eta[s][:, None, :] for s in fp.outer}, ch.prob.shape[0])
        parts.add(xp.tensordot(ch.prob, g, axes=1))
    return parts.total()


# ----- gray: one site feeding an affine map followed by more layers -----


def _activation(model: Any, z: Any, xp: Any) -> Any:
    """The model's activation; relu as one ``maximum`` (the table's form takes three passes)."""
    if model.activation == "relu":
        return xp.maximum(z, xp.zeros((), dtype=z.dtype))
    return model._act.f(z, xp)


def _rest(model: Any, layer: int, act: Any, xp: Any) -> Any:
    """Layers ``layer+1 … L`` on ``act`` of layer ``layer``, units-major ``(…, d, masks)``."""
    L = model.n_layers
    for ll in range(layer + 1, L + 1):
        z = model.params[f"W{ll}"] @ act + model.params[f"b{ll}"][:, None]
        act = _activation(model, z, xp) if ll < L else z
    return act


def _gray_rows(
    model: Any, layer: int, h: Any, y: Any, shift: Any, q: float, budget_floats: int
) -> Any:
    """``E_m ℓ(F(m), y) − shift`` per row, the site feeding ``W{layer}`` (module docstring).

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
    xp = model.xp
    N, d = h.shape
    dtype = h.dtype
    W, b = model.params[f"W{layer}"], model.params[f"b{layer}"]
    L = model.n_layers
    c = model.n_classes
    widest = max(model.sizes[layer:])
    budget = max(1, budget_floats // (2 * widest + c))
    lo, hi = _split(d, budget)
    nlo = 2**lo
    A = xp.permute_dims(h[:, None, :] * W[None, :, :], (0, 2, 1)) / (1.0 - q)  # (N, d, d')
    A_lo, A_hi = A[:, :lo, :], A[:, lo:, :]
    bits_lo = _bits(xp, 0, nlo, lo, dtype)
    P_lo = _probs(bits_lo, q, xp)
    base = b[None, :] + 0.5 * xp.sum(A_lo, axis=1)
    ce = isinstance(model.loss, CrossEntropy)
    trick = model.activation if (layer < L and model.activation in ("tanh", "sigmoid")) else None
    k = 2.0 if trick == "tanh" else -1.0  # tanh(z) = 1 − 2/(1 + e^{2z}); σ(z) = 1/(1 + e^{−z})
    exp_lim = math.log(float(xp.finfo(dtype).max)) - 1.0
    fused = False
    W_aug: Any = None
    if trick is not None:
        Wn, bn = model.params[f"W{layer + 1}"], model.params[f"b{layer + 1}"]
        W_u, b_u = (-2.0 * Wn, bn + xp.sum(Wn, axis=1)) if trick == "tanh" else (Wn, bn)
        sigma = 0.0
        if ce and layer + 1 == L:
            zero = xp.zeros_like(W_u)
            upper = b_u + xp.sum(xp.maximum(W_u, zero), axis=1)
            lower = b_u + xp.sum(xp.minimum(W_u, zero), axis=1)
            sigma = float(xp.max(upper))
            fused = float(xp.max(lower)) - sigma >= -_exp_limits(xp, dtype)[1]
            sigma = sigma if fused else 0.0
        W_aug = xp.concat([W_u, (b_u - sigma)[:, None]], axis=1)  # (c or d'', d'+1)
    onehot = _onehot(y, c, xp, dtype) if ce else None
    out: list[Any] = []
    for r0, r1, segments in _blocks(N, d, lo, budget):
        nb = r1 - r0
        parts = _Sum()
        parts.add(-shift[r0:r1])
        # (Nb, d', 2^lo), centred per unit
        Z_loT = xp.permute_dims((bits_lo - 0.5) @ A_lo[r0:r1, ...], (0, 2, 1))
        C_lo = None
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
                    f = W_aug @ u  # pre-activation of layer+1 (logits − σ when fused)
                    if not fused and layer + 1 < L:
                        f = _rest(model, layer + 1, _activation(model, f, xp), xp)
                else:
                    z = Z_loT[:, None, :, :] + Z_hi[:, a0:a1, :, None]  # (Nb, Hc, d', 2^lo)
                    f = z if layer == L else _rest(model, layer, _activation(model, z, xp), xp)
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
                    loss = model.loss.value(xp.permute_dims(f, (0, 1, 3, 2)),
                                            xp.reshape(yb, (nb, 1, 1, *yb.shape[1:])))
                parts.add((loss @ P_lo) @ Pc)
        out.append(parts.total())
    return xp.concat(out)


# ----- driver -----


def _rows_fn(
    model: Model, fp: FastPlan, q: float, chunk_size: int | None
) -> Callable[[Any, Any, Any], Any]:
    xp = model.xp
    W, b = model.params[f"W{fp.layer}"], model.params[f"b{fp.layer}"]
    if fp.method == "factorized":
        if isinstance(model.loss, Squared):
            return lambda h, y, sh: _squared_rows(xp, h, W, b, y, sh, q)
        budget = chunk_size or max(1, FACTORIZED_CHUNK_ELEMS // W.shape[0])
        return lambda h, y, sh: _factorized_ce_rows(xp, h, W, b, y, sh, q, budget)
    floats = GRAY_FLOATS if chunk_size is None else chunk_size * (
        2 * max(model.sizes[fp.layer:]) + model.n_classes  # type: ignore[attr-defined]
    )
    return lambda h, y, sh: _gray_rows(model, fp.layer, h, y, sh, q, floats)


def expected_loss(
    model: Model,
    x2: Any,
    y2: Any,
    qd: Mapping[str, float],
    fp: FastPlan,
    *,
    shift: Any = None,
    chunk_size: int | None = None,
) -> Any:
    """``E_η ℓ(F(x, η), y) − shift`` per example ``(n,)`` by the fast path ``fp``.

    ``shift`` (per example, default 0) is subtracted inside each example's sum, which keeps
    ``R_drop = E ℓ − ℓ(F(x))`` accurate.  ``chunk_size`` is the number of masks per chunk of
    the inner enumeration (and of the outer one); the result depends on it only by rounding.
    The caller has checked the mask count against ``max_masks``.
    """
    xp = model.xp
    n = x2.shape[0]
    shift = xp.zeros((n,), dtype=model.dtype) if shift is None else shift
    rows = _rows_fn(model, fp, qd[fp.site], chunk_size)
    if not fp.outer:
        h = model.site_values(model.trace(x2))[fp.site][0, ...]
        return rows(h, y2, shift)
    widths = {s: model.widths[s] for s in fp.outer}
    parts = _Sum()
    for ch in enumerate_masks(
        widths, {s: qd[s] for s in fp.outer}, chunk_size=chunk_size or 256,
        max_masks=2 ** sum(widths.values()), xp=xp, dtype=model.dtype,
    ):
        tr = model.trace(x2, {s: ch.eta[s][:, None, :] for s in fp.outer})
        h = model.site_values(tr)[fp.site]  # (B, n, d)
        B = h.shape[0]
        yb = xp.reshape(xp.broadcast_to(y2[None, ...], (B, *y2.shape)), (B * n, *y2.shape[1:]))
        sb = xp.reshape(xp.broadcast_to(shift[None, :], (B, n)), (B * n,))
        v = rows(xp.reshape(h, (B * n, h.shape[2])), yb, sb)
        parts.add(ch.prob @ xp.reshape(v, (B, n)))
    return parts.total()
