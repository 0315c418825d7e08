r"""Dropout on the input of linear regression is ridge regression (seed 002; paper-notes L1).

With keep probability ``p`` (``= 1 − q``), ``m_j ~ Bernoulli(p)`` iid and inverted scaling,

.. math::
    E_m\big(y - w^T (m \odot x)/p\big)^2 = (y - w^T x)^2 + \frac{1-p}{p} \sum_j w_j^2 x_j^2,

derived for ``d = 3`` by summing the squared residual over all ``2^3`` masks weighted by their
probabilities. Summed over examples with unit-variance features this is ridge with
``λ = (1 − p)/p``.

Numeric form: ``derivation().numeric()(p, y, w, x)`` returns the expected dropout loss.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    bernoulli_law,
    expect_iid,
    p_keep,
    symbols_vector,
)

D = 3


@cache
def derivation() -> Derivation:
    """Enumerate the 8 input masks of a 3-feature linear model and expand the expected loss."""
    y = sp.Symbol("y", real=True)
    w = symbols_vector("w", D, real=True)
    x = symbols_vector("x", D, real=True)
    m = symbols_vector("m", D)
    residual = y - (w.T * m.multiply_elementwise(x))[0] / p_keep
    expected = expect_iid(residual**2, list(m), bernoulli_law(p_keep))
    lhs = sp.expand(sp.simplify(expected))
    penalty = (1 - p_keep) / p_keep * sum(w[j] ** 2 * x[j] ** 2 for j in range(D))
    rhs = (y - (w.T * x)[0]) ** 2 + penalty
    mean_pred = sp.simplify(expect_iid((w.T * m.multiply_elementwise(x))[0] / p_keep,
                                       list(m), bernoulli_law(p_keep)))
    steps = [
        ("residual under the mask m (inverted scaling 1/p)", residual),
        ("E_m[wᵀ(m ⊙ x)/p] over the 8 masks: the prediction is unbiased", mean_pred),
        ("E_m[residual²] over the 8 masks, expanded", lhs),
        ("E_m[residual²] − (y − wᵀx)², factored: the dropout penalty",
         sp.factor(sp.simplify(lhs - (y - (w.T * x)[0]) ** 2))),
    ]
    return Derivation(
        name="ridge",
        statement="E_m (y − wᵀ(m⊙x)/p)² = (y − wᵀx)² + ((1−p)/p) Σ_j w_j² x_j² for keep "
                  "probability p (d = 3).",
        source="seed 002 (The Key Equivalence: dropout in linear models is L2 regularization); "
               "paper-notes L1",
        claims=("L1",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(p_keep, y, w, x),
    )
