r"""Multi-site dropout: cross terms vanish, the regularizer sums over sites (Sec. 4.1; E4).

Two sites with independent noise ``η¹`` (drop probability ``q₁``) and ``η²`` (``q₂``), two units
each; ``δ = (η¹ ⊙ h¹, η² ⊙ h²)``. For a loss with gradient ``g`` and symmetric Hessian ``H``
(4×4, symbolic) w.r.t. all perturbations, summing over the 16 joint outcomes gives
``E[δ₁ δ₂ᵀ] = 0``, and expanding in η and replacing monomials by moments gives

.. math::
    E\big[g^T δ + \tfrac12 δ^T H δ\big]
      = \sum_{i=1,2} \frac{q_i}{2(1-q_i)} \sum_{k \in \text{site } i} H_{kk} h_k^2 ,

the sum of the single-site terms (4.2). As in the paper (eq. 4.4), ``δ₂`` perturbs the clean
``h²``; products ``η¹_j η²_k`` from the downstream effect of site 1 on ``h²`` have expectation
``E[η¹_j] E[η²_k] = 0`` too.

Numeric form: ``derivation().numeric()(q1, q2, h, hess_diag)`` returns the summed two-site term
(``h``, ``hess_diag`` of length 4: site 1 first).
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    eta_law,
    expect_by_moments,
    expect_joint,
    moment,
    symbols_vector,
)

UNITS = 2


@cache
def derivation() -> Derivation:
    """Take the expectation of the joint second-order expansion over two independent sites."""
    q1, q2 = sp.symbols("q1 q2", positive=True)
    h = symbols_vector("h", 2 * UNITS, real=True)
    g = symbols_vector("g", 2 * UNITS, real=True)
    hess = sp.Matrix(2 * UNITS, 2 * UNITS,
                     lambda r, c: sp.Symbol(f"H{min(r, c) + 1}{max(r, c) + 1}", real=True))
    eta1 = symbols_vector("eta1_", UNITS, real=True)
    eta2 = symbols_vector("eta2_", UNITS, real=True)
    groups = [(list(eta1), eta_law(q1)), (list(eta2), eta_law(q2))]
    delta1 = eta1.multiply_elementwise(h[:UNITS, :])
    delta2 = eta2.multiply_elementwise(h[UNITS:, :])
    delta = sp.Matrix.vstack(delta1, delta2)
    cross = expect_joint(delta1 * delta2.T, groups).applyfunc(sp.cancel)
    expansion = (g.T * delta)[0] + sp.Rational(1, 2) * (delta.T * hess * delta)[0]
    # Independent sites: iterate the expectation, site by site, replacing monomials by moments.
    lhs = expansion
    for etas, qi in ((eta1, q1), (eta2, q2)):
        moments = {n: moment(n, eta_law(qi)) for n in range(3)}
        lhs = expect_by_moments(lhs, list(etas), moments.__getitem__)
    lhs = sp.factor(lhs)
    per_site = [
        qi / (2 * (1 - qi)) * sum(hess[k, k] * h[k] ** 2 for k in ks)
        for qi, ks in ((q1, range(UNITS)), (q2, range(UNITS, 2 * UNITS)))
    ]
    hdiag = symbols_vector("a", 2 * UNITS, real=True)
    steps = [
        ("δ = (η¹ ⊙ h¹, η² ⊙ h²)", delta),
        ("E[δ₁ δ₂ᵀ] over the 16 joint outcomes: the cross-site block vanishes", cross),
        ("E[gᵀδ + ½ δᵀHδ]: expand in η, replace monomials by moments, one site after the other",
         lhs),
        ("single-site terms (4.2) for site 1 and site 2", sp.Matrix(per_site)),
    ]
    return Derivation(
        name="cross_site",
        statement="With independent noise at two sites, E[δ₁δ₂ᵀ] = 0 and the expected "
                  "second-order term is the sum of the per-site terms (q_i/(2(1−q_i))) "
                  "Σ_k H_kk h_k².",
        source="Wei, Kakade & Ma 2020, Sec. 4.1 (Multi-layer dropout, eq. 4.4); paper-notes E4",
        claims=("E4",),
        steps=steps,
        lhs=lhs,
        rhs=sum(per_site),
        variables=(q1, q2, h, hdiag),
        closed_form=sum(
            qi / (2 * (1 - qi)) * sum(hdiag[k] * h[k] ** 2 for k in ks)
            for qi, ks in ((q1, range(UNITS)), (q2, range(UNITS, 2 * UNITS)))),
    )
