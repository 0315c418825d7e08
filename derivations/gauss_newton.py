r"""Gauss–Newton split of the Hessian of the loss w.r.t. a dropout site (Sec. 4.1, A.1; E2/E3).

For a head ``F: R^2 → R^2`` and a loss ``ℓ`` on the logits,

.. math::
    D^2_h(\ell\circ F) = J^T H_{out} J
        + \sum_c \frac{\partial \ell}{\partial F_c}\, D^2_h F_c,
    \qquad J = D_h F,\; H_{out} = D^2_F \ell,

derived for the concrete nonlinear head ``F(h) = B tanh(A h)`` (2×2 symbolic ``A``, ``B``) and
cross-entropy with label 1: the left side by differentiating ``ℓ(F(h))`` twice, the right side
from the separately computed ``J``, ``H_out``, ``∂ℓ/∂F`` and ``D²_h F_c``. The paper keeps the
first (PSD) term as ``R_approx`` and drops the second (model-Hessian) term.

Numeric form: ``derivation().numeric()(h, A, B)`` returns the 2×2 Hessian ``D²_h(ℓ∘F)`` (label 1).
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    cross_entropy,
    symbols_matrix,
    symbols_vector,
)

C = 2


def _structure() -> sp.Expr:
    """Return ``Jᵀ H_out J + Σ_c (∂ℓ/∂F_c) D²_h F_c`` with matrix symbols, for display."""
    jac = sp.MatrixSymbol("J", C, 2)
    h_out = sp.MatrixSymbol("H_out", C, C)
    terms = [sp.Symbol(f"∂ℓ/∂F_{c + 1}") * sp.MatrixSymbol(f"D²F_{c + 1}", 2, 2)
             for c in range(C)]
    return sp.MatAdd(jac.T * h_out * jac, *terms)


@cache
def derivation() -> Derivation:
    """Differentiate ``ℓ(F(h))`` twice and split it into Gauss–Newton and model-Hessian terms."""
    h = symbols_vector("h", 2, real=True)
    v = symbols_vector("v", C, real=True)
    a = symbols_matrix("a", 2, 2, real=True)
    b = symbols_matrix("b", C, 2, real=True)
    head = b * (a * h).applyfunc(sp.tanh)
    loss = cross_entropy(v, 0)
    at_head = dict(zip(v, head, strict=True))
    lhs = sp.hessian(loss.subs(at_head), list(h))
    jac = head.jacobian(h)
    h_out_v = sp.hessian(loss, list(v))
    grad_v = sp.Matrix([sp.diff(loss, vc) for vc in v])
    model_hessians = [sp.hessian(head[c], list(h)) for c in range(C)]
    gauss_newton = jac.T * h_out_v.subs(at_head) * jac
    model_term = sum((grad_v[c].subs(at_head) * model_hessians[c] for c in range(C)),
                     sp.zeros(2, 2))
    rhs = gauss_newton + model_term
    steps = [
        ("head F(h) = B tanh(A h)", head),
        ("loss ℓ(v) = −log softmax(v)_1 = log Σ e^{v} − v_1", loss),
        ("J = D_h F", jac),
        ("H_out = D²_v ℓ (evaluated at v = F(h))", h_out_v),
        ("∂ℓ/∂v_c (evaluated at v = F(h))", grad_v),
        ("D²_h F_1 (model Hessian, not PSD in general)", model_hessians[0]),
        ("D²_h F_2", model_hessians[1]),
        ("D²_h(ℓ∘F) computed directly by differentiating ℓ(F(h)) twice", lhs),
    ]
    return Derivation(
        name="gauss_newton",
        statement="D²_h(ℓ∘F) = Jᵀ H_out J + Σ_c (∂ℓ/∂F_c) D²_h F_c for F(h) = B tanh(A h) "
                  "(2 → 2) and cross-entropy.",
        source="Wei, Kakade & Ma 2020, Sec. 4.1 (decomposition before eq. 4.3) and A.1; "
               "paper-notes E2, E3",
        claims=("E2", "E3"),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(h, a, b),
        result_display=_structure(),
    )
