r"""Expected second-order Taylor expansion under dropout (eqs. 4.1–4.2; paper-notes E1).

For a generic smooth ``f: R^3 → R`` (an undefined sympy Function) and ``δ = η ⊙ h``,

.. math::
    E_η\big[T_2 f(h + δ)\big] = f(h) + \frac{q}{2(1-q)} \sum_k \partial^2_{kk} f(h)\, h_k^2,

where ``T_2`` is the second-order Taylor polynomial around ``h``. The expectation expands ``T_2``
in the symbolic η and replaces each monomial by the product of η's moments (the coordinates are
independent): the first-order term vanishes with ``E[η] = 0`` and the cross terms
``∂_jk f δ_j δ_k`` (``j ≠ k``) vanish with ``E[η_j η_k] = E[η_j] E[η_k] = 0``. So
``R_drop ≈ R_taylor = (q/(2(1-q))) ⟨D²f, diag(h²)⟩``.

Numeric form: ``derivation().numeric()(q, h, hess_diag)`` returns
``R_taylor = (q/(2(1-q))) Σ_k hess_diag_k h_k²`` (``hess_diag`` = diagonal of ``D²f(h)``).
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

D = 3


@cache
def derivation() -> Derivation:
    """Expand ``f(h + η ⊙ h)`` to second order and take the expectation over η."""
    f = sp.Function("f")
    h = symbols_vector("h", D, real=True)
    eta = symbols_vector("eta", D, real=True)
    delta = eta.multiply_elementwise(h)
    f0 = f(*h)
    grad = sp.Matrix([sp.diff(f0, hk) for hk in h])
    hess = sp.hessian(f0, list(h))
    first = (grad.T * delta)[0]
    second = sp.Rational(1, 2) * (delta.T * hess * delta)[0]
    cross = sum(hess[j, k] * delta[j] * delta[k] for j in range(D) for k in range(D) if j != k)
    third = sp.Rational(1, 6) * sum(
        sp.diff(f0, h[i], h[j], h[k]) * delta[i] * delta[j] * delta[k]
        for i in range(D) for j in range(D) for k in range(D))

    law = eta_law(q)
    moments = {n: moment(n, law) for n in range(4)}

    def expect(expr: sp.Expr) -> sp.Expr:
        return sp.simplify(expect_by_moments(expr, list(eta), moments.__getitem__))

    lhs = f0 + expect(first) + expect(second)
    strength = q / (2 * (1 - q))
    rhs = f0 + strength * sum(hess[k, k] * h[k] ** 2 for k in range(D))
    a = symbols_vector("a", D, real=True)
    steps = [
        ("δ = η ⊙ h", delta),
        ("first-order term ∇f(h)ᵀ δ", first),
        ("second-order term ½ δᵀ D²f(h) δ", second),
        ("moments E[η^n], n = 0..3, from the two-point law", sp.Matrix(list(moments.values()))),
        ("E[first-order term]: each monomial η_k has moment E[η] = 0", expect(first)),
        ("E[cross terms Σ_{j≠k} ∂_jk f δ_j δ_k]: E[η_j η_k] = E[η_j]E[η_k] = 0", expect(cross)),
        ("E[second-order term]: only ∂_kk f h_k² E[η_k²] survives", expect(second)),
        ("not in (4.2): the third-order term has expectation (E[η³]/6) Σ ∂³_kkk f h_k³, "
         "O(q) like the second (paper-notes: small q does not make Taylor accurate)",
         sp.factor(expect(third))),
    ]
    return Derivation(
        name="taylor_second_order",
        statement="E_η[T₂f(h + η⊙h)] = f(h) + (q/(2(1−q))) Σ_k ∂²_kk f(h) h_k² for a generic "
                  "smooth f of 3 variables; first-order and cross terms vanish.",
        source="Wei, Kakade & Ma 2020, Sec. 4.1, eqs. (4.1)-(4.2); paper-notes E1",
        claims=("E1",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(q, h, a),
        closed_form=strength * sum(a[k] * h[k] ** 2 for k in range(D)),
    )
