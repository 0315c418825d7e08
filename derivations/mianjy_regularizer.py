r"""Dropout on the hidden layer of a linear net: Σ_i ‖u_i‖²‖v_i‖² (M1), and last-layer dropout (K1).

Mianjy, Arora & Vidal 2018 (ICML): for ``f(x) = U diag(m/(1−q)) Vᵀ x`` with
``m_i ~ Bernoulli(1−q)`` and dropcheck's loss ``½‖f − y‖²``,

.. math:: E_m ½\|U \mathrm{diag}(m)/(1-q)\, V^\top x - y\|^2 - ½\|U V^\top x - y\|^2
          = ½ \frac{q}{1-q} \sum_i \|u_i\|^2 (v_i^\top x)^2,

and averaged over the inputs ``√d₁ e_j`` (``E[xxᵀ] = I``) it is ``½ (q/(1−q)) Σ_i ‖u_i‖²‖v_i‖²``.
With ``a_i = ‖u_i‖‖v_i‖``, ``Σ_i a_i² − (Σ_i a_i)²/r = (1/r) Σ_{i<j} (a_i − a_j)² ≥ 0`` (shown
for ``r = 2``): the regularizer is smallest when every ``a_i`` is equal (equalized), and then,
since ``Σ_i a_i ≥ ‖M‖_*`` with equality at the balanced SVD factorization, it is
``½ (q/(1−q)) ‖M‖_*²/r`` (their characterization of the minimum).  The same computation with
``Vᵀx`` replaced by any hidden vector ``h(x)`` is the last-layer explicit form of Arora,
Bartlett, Mianjy & Srebro 2021 (claim K1).  Derived for ``d₁ = d₂ = r = 2``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    bernoulli_law,
    expect_iid,
    q,
    symbols_matrix,
    symbols_vector,
)

R, D1, D2 = 2, 2, 2


@cache
def derivation() -> Derivation:
    """Sum over the 4 hidden masks, then average over the inputs √2 e_1, √2 e_2."""
    U = symbols_matrix("u", D2, R, real=True)
    V = symbols_matrix("v", D1, R, real=True)
    y = symbols_vector("y", D2, real=True)
    m = symbols_vector("m", R)
    law = bernoulli_law(1 - q)

    def excess(x: sp.Matrix) -> sp.Expr:
        h = V.T * x  # the hidden vector (any h(x) for last-layer dropout)
        noisy = U * m.multiply_elementwise(h) / (1 - q) - y
        clean = U * h - y
        return sp.simplify(expect_iid((noisy.T * noisy)[0] / 2, list(m), law)
                           - (clean.T * clean)[0] / 2)

    x = symbols_vector("x", D1, real=True)
    per_x = sp.factor(excess(x))
    basis = [sp.sqrt(D1) * sp.eye(D1)[:, j] for j in range(D1)]
    lhs = sp.expand(sum(excess(xj) for xj in basis) / D1)
    norms = [sum(U[k, i] ** 2 for k in range(D2)) * sum(V[k, i] ** 2 for k in range(D1))
             for i in range(R)]
    rhs = sp.expand(sp.Rational(1, 2) * q / (1 - q) * sum(norms))
    a = sp.symbols("a1:3", positive=True)
    steps = [
        ("E_m ½‖U diag(m)/(1−q) Vᵀx − y‖² − ½‖UVᵀx − y‖² for one input x", per_x),
        ("Σ a_i² − (Σ a_i)²/r for r = 2 (≥ 0, zero iff equalized)",
         sp.factor(sum(ai**2 for ai in a) - sum(a) ** 2 / R)),
    ]
    return Derivation(
        name="mianjy_regularizer",
        statement="Linear net x ↦ UVᵀx, hidden dropout, squared loss ½‖·‖², E[xxᵀ] = I "
                  "(d₁ = d₂ = r = 2): R_drop = ½(q/(1−q)) Σ_i ‖u_i‖²‖v_i‖²; per input "
                  "½(q/(1−q)) Σ_i ‖u_i‖²(v_iᵀx)² (last-layer form).",
        source="Mianjy, Arora & Vidal 2018 (ICML); Arora, Bartlett, Mianjy & Srebro 2021 (ICML)",
        claims=("M1", "K1"),
        steps=steps,
        variables=(q, U, V),
        lhs=lhs,
        rhs=rhs,
    )
