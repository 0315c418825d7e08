"""Inverted dropout preserves the mean: ``E_m[(m/(1-q)) ⊙ h] = h`` (seed 002; paper-notes N1).

Derived for ``d = 3`` with symbolic ``h`` by summing over all ``2^3`` keep masks
``m ∈ {0,1}^3`` weighted by ``Π_k (1-q)^{m_k} q^{1-m_k}``.

Numeric form: ``derivation().numeric()(q, h)`` returns ``h``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, bernoulli_law, expect_iid, q, symbols_vector

D = 3


@cache
def derivation() -> Derivation:
    """Derive ``E_m[m ⊙ h/(1-q)] = h`` for ``d = 3`` by enumerating the masks."""
    h = symbols_vector("h", D, real=True)
    m = symbols_vector("m", D)
    dropped = m.multiply_elementwise(h) / (1 - q)
    raw = expect_iid(dropped, list(m), bernoulli_law(1 - q))
    lhs = raw.applyfunc(sp.simplify)
    steps = [
        ("inverted-dropout activation m ⊙ h/(1−q)", dropped),
        ("sum over the 2^3 masks weighted by their probabilities (first entry)", raw[0]),
        ("simplified", lhs),
    ]
    return Derivation(
        name="mean_preservation",
        statement="E_m[(m/(1−q)) ⊙ h] = h for m_k iid Bernoulli(1−q) (d = 3).",
        source="seed 002 (inverted dropout); paper-notes N1",
        claims=("N1",),
        steps=steps,
        lhs=lhs,
        rhs=h,
        variables=(q, h),
    )
