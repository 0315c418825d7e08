r"""One sigmoid unit: the normalized weighted geometric mean of the ensemble is σ(E[s]) (B1).

Baldi & Sadowski 2013 (NeurIPS, "Understanding Dropout").  For ``O(m) = σ(s(m))`` with
``s(m) = Σ_j w_j x_j m_j/(1−q) + b`` and mask probabilities ``P(m)``,

.. math::
    \log\frac{G}{G'} = \sum_m P(m) \big[\log\sigma(s(m)) - \log(1-\sigma(s(m)))\big]
    = \sum_m P(m)\, s(m) = E[s] = w^\top x + b,

because ``log σ(s) − log(1 − σ(s)) = s``; hence ``NWGM = G/(G + G') = σ(E[s])``.  Derived for
``d = 2`` over the four masks.
"""

from __future__ import annotations

import itertools
from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, q, symbols_vector

D = 2


def _sigmoid(s: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-s))


@cache
def derivation() -> Derivation:
    """Form log G − log G' over the 4 masks, reduce it to E[s], then normalize."""
    w = symbols_vector("w", D, real=True)
    x = symbols_vector("x", D, real=True)
    b = sp.Symbol("b", real=True)
    S = sp.Symbol("s", real=True)
    logit_of_sigmoid = sp.simplify(sp.expand_log(
        sp.log(_sigmoid(S)) - sp.log(1 - _sigmoid(S)), force=True))
    log_odds = sp.Integer(0)
    for mask in itertools.product((0, 1), repeat=D):
        prob = sp.Mul(*((1 - q) if mj else q for mj in mask))
        s_m = sum(w[j] * x[j] * mask[j] for j in range(D)) / (1 - q) + b
        log_odds += prob * logit_of_sigmoid.subs(S, s_m)
    reduced = sp.factor(sp.simplify(log_odds))
    nwgm = 1 / (1 + sp.exp(-reduced))
    steps = [
        ("log σ(s) − log(1 − σ(s)) for a symbol s", logit_of_sigmoid),
        ("log G − log G' = Σ_m P(m)[log σ(s_m) − log(1 − σ(s_m))] over the 4 masks: E[s]",
         reduced),
        ("NWGM = G/(G + G') = 1/(1 + exp(−(log G − log G')))", nwgm),
    ]
    return Derivation(
        name="sigmoid_nwgm",
        statement="One sigmoid unit with input dropout (d = 2): NWGM = G/(G + G') = σ(wᵀx + b), "
                  "the deterministic unit with the expected input.",
        source="Baldi & Sadowski 2013 (NeurIPS), Understanding Dropout",
        claims=("B1",),
        steps=steps,
        variables=(w, x, b),
        lhs=nwgm,
        rhs=_sigmoid((w.T * x)[0] + b),
    )
