r"""Gaussian dropout has the first two moments of Bernoulli dropout, hence the same ridge (G1).

Srivastava et al. 2014 (JMLR) Sec. 10; Kingma, Salimans & Welling 2015.  With
``ε ~ N(0, α)``, ``α = q/(1−q)`` (moments from :mod:`sympy.stats`) and the paper's ``η``:

.. math:: E\varepsilon = E\eta = 0, \quad E\varepsilon^2 = E\eta^2 = \alpha, \quad
          E\varepsilon^3 = 0 \ne E\eta^3, \quad E\varepsilon^4 = 3\alpha^2 \ne E\eta^4,

so for least squares with a linear model (``d = 2``), a quadratic in the noise,
``E_ε (y − wᵀ((1+ε)⊙x))² = (y − wᵀx)² + α Σ_j w_j² x_j²`` — the Bernoulli ridge of seed 002.
The result vector is ``(E ε, E ε², E_ε loss)``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    eta_law,
    expect_by_moments,
    moment,
    q,
    symbols_vector,
)
from sympy.stats import E as expectation
from sympy.stats import Normal

D = 2


@cache
def derivation() -> Derivation:
    """Gaussian moments by sympy.stats; the least-squares loss expanded and averaged."""
    alpha = q / (1 - q)
    eps = Normal("epsilon", 0, sp.sqrt(alpha))
    gm = {k: sp.simplify(expectation(eps**k)) for k in range(1, 5)}
    em = {k: moment(k, eta_law()) for k in range(1, 5)}
    w = symbols_vector("w", D, real=True)
    x = symbols_vector("x", D, real=True)
    e = symbols_vector("e", D, real=True)
    y = sp.Symbol("y", real=True)
    loss = (y - (w.T * (sp.ones(D, 1) + e).multiply_elementwise(x))[0]) ** 2
    expected = sp.expand(expect_by_moments(loss, list(e), lambda n: gm[n] if n else 1))
    steps = [
        ("E[ε^k], k = 1…4, ε ~ N(0, q/(1−q))", sp.Matrix([gm[k] for k in range(1, 5)])),
        ("E[η^k], k = 1…4, the paper's Bernoulli η", sp.Matrix([em[k] for k in range(1, 5)])),
        ("E[ε³] − E[η³]: the first moment that differs", sp.factor(gm[3] - em[3])),
        ("E_ε (y − wᵀ((1+ε)⊙x))², expanded", expected),
    ]
    ridge = (y - (w.T * x)[0]) ** 2 + alpha * sum(w[j] ** 2 * x[j] ** 2 for j in range(D))
    return Derivation(
        name="gaussian_dropout_moments",
        statement="ε ~ N(0, q/(1−q)): E ε = 0, E ε² = q/(1−q) = E η²; least squares (d = 2): "
                  "E_ε(y − wᵀ((1+ε)⊙x))² = (y − wᵀx)² + (q/(1−q))Σw_j²x_j², the Bernoulli ridge.",
        source="Srivastava et al. 2014 (JMLR) Sec. 10; Kingma, Salimans & Welling 2015",
        claims=("G1",),
        steps=steps,
        variables=(q, y, w, x),
        lhs=sp.Matrix([gm[1], gm[2], expected]),
        rhs=sp.Matrix([em[1], em[2], ridge]),
    )
