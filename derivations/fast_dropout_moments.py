r"""Moments of a unit's input under dropout: what fast dropout matches, and what it drops (F1).

Wang & Manning 2013 (ICML).  For ``s̃ = Σ_j w_j x_j m_j/(1−q) + b`` with
``m_j ~ Bernoulli(1−q)`` iid,

.. math::
    E[\tilde s] = w^\top x + b, \quad
    \mathrm{Var}(\tilde s) = \frac{q}{1-q} \sum_j w_j^2 x_j^2, \quad
    \kappa_3(\tilde s) = \frac{q(2q-1)}{(1-q)^2} \sum_j w_j^3 x_j^3 .

The Gaussian approximation keeps the first two and sets the third cumulant to zero; with
``|w_j x_j| ~ 1/√d`` that cumulant is ``O(1/d)`` for random signs and ``O(1/√d)`` when the terms
are aligned — the rates F1 measures.  Derived for ``d = 3`` over the eight masks.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, bernoulli_law, expect_iid, q, symbols_vector

D = 3


@cache
def derivation() -> Derivation:
    """Mean, variance and third cumulant of s̃ by summing over the 8 masks."""
    w = symbols_vector("w", D, real=True)
    x = symbols_vector("x", D, real=True)
    m = symbols_vector("m", D)
    b = sp.Symbol("b", real=True)
    law = bernoulli_law(1 - q)
    s = (w.T * m.multiply_elementwise(x))[0] / (1 - q) + b
    mean = sp.simplify(expect_iid(s, list(m), law))
    var = sp.factor(sp.simplify(expect_iid((s - mean) ** 2, list(m), law)))
    k3 = sp.factor(sp.simplify(expect_iid((s - mean) ** 3, list(m), law)))
    steps = [("s̃ under the mask m (inverted scaling)", s), ("E[s̃]", mean), ("Var(s̃)", var),
             ("third cumulant E[(s̃ − E s̃)³]", k3)]
    mu = (w.T * x)[0] + b
    return Derivation(
        name="fast_dropout_moments",
        statement="s̃ = Σ w_j x_j m_j/(1−q) + b: mean wᵀx + b, variance (q/(1−q))Σw_j²x_j², "
                  "third cumulant q(2q−1)/(1−q)² Σ w_j³x_j³ (d = 3).",
        source="Wang & Manning 2013 (ICML), fast dropout (the moments the Gaussian keeps)",
        claims=("F1",),
        steps=steps,
        variables=(q, w, x, b),
        lhs=sp.Matrix([mean, var, k3]),
        rhs=sp.Matrix([mu, q / (1 - q) * sum(w[j] ** 2 * x[j] ** 2 for j in range(D)),
                       q * (2 * q - 1) / (1 - q) ** 2 * sum(w[j] ** 3 * x[j] ** 3
                                                            for j in range(D))]),
    )
