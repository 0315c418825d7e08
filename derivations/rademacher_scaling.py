r"""Rademacher noise with the variance of η (footnote 6; paper-notes N2).

For ``s = ±1`` with probability ½ each, ``Var(c·s) = c²`` by the two-point sum. Setting it equal
to ``E[η²] = q/(1-q)`` (derived from η's law, :mod:`derivations.eta_moments`) and solving for
``c > 0`` gives

.. math::
    c = \sqrt{\frac{q}{1-q}},

and then ``E[(c s ⊙ h)(c s ⊙ h)^T] = (q/(1-q)) diag(h²)``, the second moment of ``δ = η ⊙ h``.

Numeric form: ``derivation().numeric()(q)`` returns the scale ``c``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, eta_law, expect_iid, moment, q, symbols_vector

D = 3


def _positive_root(roots: list[sp.Expr]) -> sp.Expr:
    """Pick the root that is positive on 0 < q < 1 (checked at q = 1/2)."""
    positive = [r for r in roots if r.subs(q, sp.Rational(1, 2)).is_positive]
    if len(positive) != 1:
        raise ValueError(f"expected one positive root for 0 < q < 1, got {roots}")
    return positive[0]


@cache
def derivation() -> Derivation:
    """Solve ``Var(c·s) = E[η²]`` for the scale ``c`` of Rademacher noise."""
    c, s = sp.symbols("c s", real=True)
    rademacher = ((sp.Integer(-1), sp.Rational(1, 2)), (sp.Integer(1), sp.Rational(1, 2)))
    mean = expect_iid(c * s, [s], rademacher)
    variance = sp.simplify(expect_iid((c * s) ** 2, [s], rademacher) - mean**2)
    target = moment(2, eta_law(q))
    roots = sp.solve(sp.Eq(variance, target), c)
    scale = _positive_root(roots)
    h = symbols_vector("h", D, real=True)
    svec = symbols_vector("s", D, real=True)
    noise = (scale * svec).multiply_elementwise(h)
    second = expect_iid(noise * noise.T, list(svec), rademacher).applyfunc(sp.simplify)
    steps = [
        ("E[c·s] over s = ±1 (prob ½ each)", mean),
        ("Var(c·s) = E[(c s)²] − E[c s]²", variance),
        ("E[η²] from η's two-point law", target),
        ("solve Var(c·s) = E[η²] for c", sp.Matrix(roots)),
        ("the root with c > 0", scale),
        ("then E[(c s ⊙ h)(c s ⊙ h)ᵀ] (d = 3, enumerated) = (q/(1−q)) diag(h²)", second),
    ]
    return Derivation(
        name="rademacher_scaling",
        statement="Rademacher ±1 noise scaled by c has the variance q/(1−q) of η iff "
                  "c = sqrt(q/(1−q)) (c > 0).",
        source="Wei, Kakade & Ma 2020, footnote 6 (Sec. 4.2); paper-notes N2",
        claims=("N2",),
        steps=steps,
        lhs=scale,
        rhs=sp.sqrt(q / (1 - q)),
        variables=(q,),
    )
