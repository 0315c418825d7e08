"""Paper noise is inverted dropout: ``1 + η = m/(1-q)`` in law (Sec. 2; paper-notes N1).

With ``m ~ Bernoulli(1-q)`` the keep mask, ``m/(1-q)`` takes the value 0 w.p. ``q`` and
``1/(1-q)`` w.p. ``1-q``; ``1 + η`` takes ``1 + (-1) = 0`` w.p. ``q`` and
``1 + q/(1-q) = 1/(1-q)`` w.p. ``1-q``. The two laws are equal, so
``h_drop = (1 + η) ⊙ h`` is the inverted-dropout activation ``m ⊙ h/(1-q)``.

Numeric form: ``derivation().numeric()(q)`` returns the 2×2 table (value, probability) of
``m/(1-q)``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, bernoulli_law, eta_law, q


@cache
def derivation() -> Derivation:
    """Derive the law of ``1 + η`` and of ``m/(1-q)`` and show they coincide."""
    law_eta = [(sp.simplify(1 + v), w) for v, w in eta_law(q)]
    law_mask = [(v / (1 - q), w) for v, w in bernoulli_law(1 - q)]
    lhs = sp.Matrix([[v, w] for v, w in law_eta])
    rhs = sp.Matrix([[v, w] for v, w in law_mask])
    steps = [
        ("law of η: (value, probability)", sp.Matrix([list(r) for r in eta_law(q)])),
        ("law of 1 + η: shift the values, simplify", lhs),
        ("law of the keep mask m ~ Bernoulli(1−q)",
         sp.Matrix([list(r) for r in bernoulli_law(1 - q)])),
        ("law of m/(1−q)", rhs),
    ]
    return Derivation(
        name="inverted_dropout",
        statement="1 + η has the law of m/(1−q), m ~ Bernoulli(1−q): the paper's η is inverted "
                  "dropout (rows: (value, probability)).",
        source="Wei, Kakade & Ma 2020, Sec. 2; seed 002 (inverted dropout); paper-notes N1",
        claims=("N1",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(q,),
    )
