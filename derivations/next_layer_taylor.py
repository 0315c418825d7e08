r"""The Taylor term around the next layer equals the Taylor term around the site (A2).

Wei, Kakade & Ma 2020, Sec. 4.1 footnote 4 and App. A.2.  For ``z = W h̃ + b`` with
``h̃ = (1 + η) ⊙ h`` and any twice-differentiable ``g`` (the loss after the next layer),

.. math::
    \sum_k h_k^2\, \partial^2_{\eta_k} g(W((1+\eta)\odot h) + b)\big|_{\eta=0}
    = \big\langle D^2_z g(z),\ W \mathrm{diag}(h^{\odot 2}) W^\top \big\rangle ,

i.e. ``⟨D²_h(g∘z), diag(h²)⟩ = ⟨D²_z g, W diag(h²) Wᵀ⟩`` because ``z`` is affine in ``h̃``;
multiplied by ``q/(2(1−q))`` both sides are the paper's second-order term.  Derived for a site
of width 2, two next-layer units, and ``g`` the general cubic polynomial in ``z`` (ten free
coefficients: its Hessian at any point, and how that Hessian varies, are arbitrary, which is all
a second-order identity can see).
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, symbols_matrix, symbols_vector

D, E = 2, 2  # site width, next-layer width


@cache
def derivation() -> Derivation:
    """Differentiate g(W((1+η)⊙h) + b) twice in each η_k and compare with the z-Hessian form."""
    W = symbols_matrix("w", E, D, real=True)
    h = symbols_vector("h", D, real=True)
    b = symbols_vector("b", E, real=True)
    eta = symbols_vector("eta", D, real=True)
    Z = symbols_vector("z", E, real=True)
    monomials = [Z[0] ** i * Z[1] ** j for i in range(4) for j in range(4 - i)]
    coef = sp.symbols(f"c0:{len(monomials)}", real=True)
    g = sp.Add(*(c * mono for c, mono in zip(coef, monomials, strict=True)))
    z_of_eta = W * (sp.ones(D, 1) + eta).multiply_elementwise(h) + b
    loss = g.subs(dict(zip(Z, z_of_eta, strict=True)), simultaneous=True)
    at0 = {e: 0 for e in eta}
    lhs = sp.expand(sp.Add(*(sp.diff(loss, eta[k], 2).subs(at0) for k in range(D))))
    hess_z = sp.hessian(g, list(Z))
    cov = W * sp.diag(*[hk**2 for hk in h]) * W.T
    rhs_z = sp.Add(*(hess_z[i, j] * cov[i, j] for i in range(E) for j in range(E)))
    rhs = sp.expand(rhs_z.subs(dict(zip(Z, W * h + b, strict=True)), simultaneous=True))
    steps = [
        ("the next pre-activation under the noise, z(η) = W((1+η)⊙h) + b", z_of_eta),
        ("g: the general cubic in z", g),
        ("W diag(h²) Wᵀ: E[δz δzᵀ] divided by q/(1−q)", cov),
    ]
    return Derivation(
        name="next_layer_taylor",
        statement="Σ_k h_k² ∂²_{η_k} g(W((1+η)⊙h)+b)|₀ = ⟨D²_z g, W diag(h²) Wᵀ⟩ for any g: the "
                  "Taylor term around the next layer equals (4.2) (site width 2, 2 next units).",
        source="Wei, Kakade & Ma 2020, Sec. 4.1 fn. 4, App. A.2 ('does not change the final "
               "result')",
        claims=("A2",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(W, h, b, sp.Matrix(coef)),
    )
