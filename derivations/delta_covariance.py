r"""Second moment of the dropout perturbation ``δ = η ⊙ h`` (Sec. 4.1, under (4.2); paper-notes N1).

.. math::
    E[δ δ^T] = \frac{q}{1-q}\,\mathrm{diag}(h^{\odot 2}),

derived for ``d = 3`` with symbolic ``h`` by summing ``δδᵀ`` over all ``2^3`` outcomes of the
iid coordinates of η. The off-diagonal entries vanish because ``E[η_j η_k] = E[η_j] E[η_k] = 0``.

Numeric form: ``derivation().numeric()(q, h)`` returns the 3×3 matrix ``E[δδᵀ]``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, eta_law, expect_iid, q, symbols_vector

D = 3


@cache
def derivation() -> Derivation:
    """Derive ``E[δδᵀ] = (q/(1-q)) diag(h²)`` for ``d = 3`` by enumerating η."""
    h = symbols_vector("h", D, real=True)
    eta = symbols_vector("eta", D)
    delta = eta.multiply_elementwise(h)
    outer = delta * delta.T
    expectation = expect_iid(outer, list(eta), eta_law(q))
    lhs = expectation.applyfunc(lambda e: sp.factor(sp.simplify(e)))
    rhs = q / (1 - q) * sp.diag(*[hk**2 for hk in h])
    mean = expect_iid(delta, list(eta), eta_law(q)).applyfunc(sp.simplify)
    steps = [
        ("δ = η ⊙ h, η_k iid with the two-point law", delta),
        ("δ δᵀ (a polynomial in η)", outer),
        ("E[δ] by summing over the 2^3 outcomes of η: the first-order term vanishes", mean),
        ("E[δ δᵀ] by summing over the 2^3 outcomes, simplified", lhs),
    ]
    return Derivation(
        name="delta_covariance",
        statement="E[δδᵀ] = (q/(1−q)) diag(h²) for δ = η ⊙ h with iid η (d = 3).",
        source="Wei, Kakade & Ma 2020, Sec. 4.1 (the step to eq. 4.2); paper-notes N1",
        claims=("N1", "E1"),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(q, h),
    )
