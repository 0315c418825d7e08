r"""Sigmoid ensembles: the normalized weighted geometric mean (Baldi & Sadowski 2013).

Baldi & Sadowski, "Understanding Dropout", NeurIPS 2013 (and "The dropout learning
algorithm", Artificial Intelligence 210, 2014).  For one output ``O(m) = σ(s(m))`` of
a network under dropout masks ``m`` with probabilities ``P(m)``, write

.. math::
    E = \sum_m P(m)\, O(m), \quad G = \prod_m O(m)^{P(m)}, \quad
    G' = \prod_m (1 - O(m))^{P(m)}, \quad \mathrm{NWGM} = \frac{G}{G + G'} .

Because ``log σ(s) − log(1 − σ(s)) = s``, ``NWGM = σ(E[s])`` exactly: for one
sigmoid unit with dropout on its inputs, the normalized geometric mean of the ensemble is the
deterministic unit with expected (weight-scaled) input — the sigmoid counterpart of the softmax
result (paper-notes L2).  Their bounds (from the Ky Fan inequality): if every ``O(m) ≤ ½``,

.. math:: G \le \mathrm{NWGM} \le E,

(mirrored when every ``O(m) ≥ ½``: ``E ≤ NWGM ≤ 1 − G'``).  Expanding ``log G`` and ``log G'``
to second order around ``E`` (``V = Var O``) gives the estimate (:func:`second_order_gap`)

.. math:: E - \mathrm{NWGM} \approx \frac{V (1 - 2E)}{2E(1-E) - V}.

In a deep sigmoid network the deterministic forward pass with weight scaling applies the
identity layer by layer as if ``E ≈ NWGM`` at every unit (their recursion); its error
against the true ensemble mean grows with depth (claim B1).  A "sigmoid output" here is class 1
of a 2-class model: ``softmax(z)_1 = σ(z_1 − z_0)`` (:func:`dropcheck.fast_dropout.sigmoid_unit`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dropcheck import exact
from dropcheck._api import accepts_old_signature
from dropcheck.losses import log_softmax
from dropcheck.models._base import Model, Trace

__all__ = ["SigmoidEnsemble", "sigmoid_ensemble", "nwgm", "second_order_gap"]


@dataclass(frozen=True)
class SigmoidEnsemble:
    """Ensemble statistics of a sigmoid output per example ``(n,)``.

    ``mean`` = E, ``var`` = Var O, ``geo`` = G, ``geo_complement`` = G', ``nwgm`` = G/(G + G');
    ``below_half`` = ``P(O ≤ ½)`` and ``above_half`` = ``P(O ≥ ½)`` over the masks (1 up to
    rounding when every sub-network output is on that side: where the Ky Fan bounds apply).
    """

    mean: Any
    var: Any
    geo: Any
    geo_complement: Any
    nwgm: Any
    below_half: Any
    above_half: Any


def nwgm(geo: Any, geo_complement: Any) -> Any:
    """``G / (G + G')``: the normalized weighted geometric mean (Baldi & Sadowski 2013)."""
    return geo / (geo + geo_complement)


@accepts_old_signature(positional=("sites",))
def sigmoid_ensemble(model: Model, x: Any, q: Any, /, *,
                     sites: Iterable[str] | str | None = None) -> SigmoidEnsemble:
    """E, Var, G, G', NWGM of class 1 of a 2-class ``model`` over every mask of ``sites``.

    Exact enumeration (:func:`dropcheck.exact.expectation`); ``log O`` and ``log(1 − O)`` are
    log-softmax values, so ``G`` and ``G'`` stay accurate for saturated units.
    """
    if model.n_classes != 2:
        raise ValueError(f"model must have 2 classes (a sigmoid output), got {model.n_classes}")
    xp = model.xp

    def fn(tr: Trace, prob: Any) -> tuple[Any, ...]:
        lp = log_softmax(tr.logits, xp)  # (B, n, 2)
        o = xp.exp(lp[..., 1])
        w = prob[:, None]
        low = xp.astype(lp[..., 1] <= lp[..., 0], o.dtype)  # O ≤ ½
        high = xp.astype(lp[..., 1] >= lp[..., 0], o.dtype)
        return (xp.sum(w * o, axis=0), xp.sum(w * o * o, axis=0), xp.sum(w * lp[..., 1], axis=0),
                xp.sum(w * lp[..., 0], axis=0), xp.sum(w * low, axis=0),
                xp.sum(w * high, axis=0))

    e, e2, lg, lgc, below, above = exact.expectation(model, x, q, fn, sites=sites,
                                                     what="sigmoid ensemble")
    g, gc = xp.exp(lg), xp.exp(lgc)
    return SigmoidEnsemble(e, e2 - e * e, g, gc, nwgm(g, gc), below, above)


def second_order_gap(mean: Any, var: Any) -> Any:
    r"""``V(1 − 2E) / (2E(1 − E) − V)``: second-order estimate of ``E − NWGM``."""
    return var * (1.0 - 2.0 * mean) / (2.0 * mean * (1.0 - mean) - var)
