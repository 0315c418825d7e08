r"""Logistic regression with input dropout: a label-free regularizer and its quadratic form (W1).

Wager, Wang & Liang 2013 (NeurIPS).  With ``ℓ_y(s) = A(s) − y s``,
``A(s) = log(1 + e^s)`` and ``s̃ = Σ_j β_j x_j m_j/(1−q) + b`` (``m_j ~ Bernoulli(1−q)``):

1. ``R_drop = E_m ℓ_y(s̃) − ℓ_y(s)`` does not depend on ``y`` (``E[s̃] = s``);
2. the second-order (delta-method) term of ``E_m A(s̃) − A(s)`` is
   ``½ A''(s) Var(s̃) = ½ A''(s) (q/(1−q)) Σ_j β_j² x_j²``, for any smooth ``A``;
3. for the logistic ``A``, ``A''(s) = p(1 − p)`` with ``p = σ(s)``: summed over examples this is
   the Fisher-scaled ridge ``(δ/2) βᵀ diag(XᵀVX) β``.

Derived for ``d = 2`` by summing over the four masks.  The result vector is
``(∂R_drop/∂y, second-order term, A''(s))``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, bernoulli_law, expect_iid, q, symbols_vector

D = 2


@cache
def derivation() -> Derivation:
    """Expectations over the 4 masks of the logistic loss and of a generic second-order term."""
    beta = symbols_vector("beta", D, real=True)
    x = symbols_vector("x", D, real=True)
    m = symbols_vector("m", D)
    b, y, s, dlt = sp.symbols("b y s delta", real=True)
    law = bernoulli_law(1 - q)
    s_clean = (beta.T * x)[0] + b
    s_drop = (beta.T * m.multiply_elementwise(x))[0] / (1 - q) + b

    def logistic(v: sp.Expr) -> sp.Expr:
        return sp.log(1 + sp.exp(v)) - y * v

    r_drop = expect_iid(logistic(s_drop), list(m), law) - logistic(s_clean)
    label_slope = sp.simplify(sp.diff(r_drop, y))
    A = sp.Function("A")
    # second-order expansion A(s + δ) ≈ A(s) + A'(s) δ + ½ A''(s) δ², δ = s̃ − s
    taylor2 = A(s) + sp.Derivative(A(s), s) * dlt + sp.Derivative(A(s), s, 2) * dlt**2 / 2
    second = expect_iid(taylor2.subs(dlt, s_drop - s_clean), list(m), law) - A(s)
    second = sp.factor(sp.simplify(sp.expand(second)), sp.Derivative(A(s), s, 2))
    a2 = sp.diff(sp.log(1 + sp.exp(s)), s, 2)
    p = 1 / (1 + sp.exp(-s))
    steps = [
        ("R_drop of the logistic loss, summed over the 4 masks", r_drop),
        ("∂R_drop/∂y: the label term cancels because E_m[s̃] = s", label_slope),
        ("E_m[A(s) + A'(s)δ + ½A''(s)δ²] − A(s) with δ = s̃ − s", second),
        ("A''(s) for A(s) = log(1 + e^s)", sp.simplify(a2)),
    ]
    ridge = sp.Derivative(A(s), s, 2) / 2 * q / (1 - q) * sum(beta[j] ** 2 * x[j] ** 2
                                                               for j in range(D))
    return Derivation(
        name="wager_quadratic",
        statement="Logistic regression, input dropout (d = 2): ∂R_drop/∂y = 0; the delta-method "
                  "term is ½A''(s)(q/(1−q))Σβ_j²x_j²; A'' = p(1−p) (Fisher-scaled ridge).",
        source="Wager, Wang & Liang 2013 (NeurIPS): GLM dropout as adaptive regularization",
        claims=("W1",),
        steps=steps,
        lhs=sp.Matrix([label_slope, second, a2]),
        rhs=sp.Matrix([0, ridge, p * (1 - p)]),
        variables=(q, beta, x, s),
        closed_form=sp.Matrix([0, ridge.subs(sp.Derivative(A(s), s, 2), p * (1 - p)),
                               p * (1 - p)]),
        simplifier=lambda e: sp.simplify(sp.expand(e.doit() if hasattr(e, "doit") else e)),
    )
