r"""Moments of the paper's dropout noise η (Sec. 2; paper-notes N1).

With ``η = -1`` w.p. ``q`` and ``η = q/(1-q)`` w.p. ``1-q``:

.. math::
    E[η] = 0, \quad E[η^2] = \frac{q}{1-q}, \quad E[η^3] = \frac{q(2q-1)}{(1-q)^2}.

Each moment is the two-point sum ``Σ value**k · prob``; nothing is assumed.

Numeric form: ``derivation().numeric()(q)`` returns ``[E η, E η², E η³]``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, eta_law, moment, q


@cache
def derivation() -> Derivation:
    """Derive ``E[η^k]`` for ``k = 1, 2, 3`` by summing over the two-point law of η."""
    law = eta_law(q)
    sums = [sp.Add(*(sp.UnevaluatedExpr(w) * v**k for v, w in law)) for k in (1, 2, 3)]
    lhs = sp.Matrix([moment(k, law) for k in (1, 2, 3)])
    rhs = sp.Matrix([0, q / (1 - q), q * (2 * q - 1) / (1 - q) ** 2])
    steps = [
        ("law of one coordinate: (value, probability)", sp.Matrix([[v, w] for v, w in law])),
        ("E[η^k] = Σ prob · value^k for k = 1, 2, 3", sp.Matrix(sums)),
        ("summed and factored", lhs),
        ("ratio E[η³]/E[η²] = (2q−1)/(1−q): not small as q → 0 (paper-notes, I1)",
         sp.Eq(sp.Symbol("E[η³]/E[η²]"), sp.factor(lhs[2] / lhs[1]))),
    ]
    return Derivation(
        name="eta_moments",
        statement="E[η] = 0, E[η²] = q/(1−q), E[η³] = q(2q−1)/(1−q)² for the paper's η.",
        source="Wei, Kakade & Ma 2020, Sec. 2 (definition of η); paper-notes N1",
        claims=("N1",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(q,),
    )
