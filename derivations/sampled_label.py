r"""Cross-entropy ``H_out`` as an expected outer product of sampled-label gradients (seed 001; E5).

For ``ŷ ~ p = softmax(v)`` and ``g_ŷ = ∇_v ℓ_ŷ(v) = p − e_ŷ``,

.. math::
    E_{ŷ\sim p}\big[g_ŷ g_ŷ^T\big] = \mathrm{diag}(p) - p p^T = H_{out}.

The gradients come from differentiating ``−log softmax``; the expectation is the sum over the
``c = 3`` labels weighted by ``p``. By linearity, ``R̂ = Σ_k h_k² (g_ŷᵀ J)_k²`` is then unbiased
for ``R_approx = ⟨Jᵀ H_out J, diag(h²)⟩`` (the slides' sampled-label estimator).

Numeric form: ``derivation().numeric()(v)`` returns ``diag(p) − ppᵀ`` for logits ``v`` of length 3.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import (
    Derivation,
    cross_entropy,
    in_probabilities,
    softmax,
    symbols_vector,
)

C = 3


@cache
def derivation() -> Derivation:
    """Sum ``p_ŷ g_ŷ g_ŷᵀ`` over the labels and compare with ``diag(p) − ppᵀ``."""
    v = symbols_vector("v", C, real=True)
    p_sym = symbols_vector("p", C, positive=True)
    p = softmax(v)
    grads = [sp.Matrix([sp.diff(cross_entropy(v, y), vj) for vj in v]) for y in range(C)]
    lhs = sum((p[y] * grads[y] * grads[y].T for y in range(C)), sp.zeros(C, C))
    rhs = sp.diag(*p) - p * p.T
    e = sp.eye(C)
    steps = [
        ("g_ŷ = ∇_v(−log softmax(v)_ŷ), in p with Σ p = 1 (columns ŷ = 1, 2, 3)",
         sp.Matrix.hstack(*[in_probabilities(g, v, p_sym) for g in grads])),
        ("g_ŷ − (p − e_ŷ) (columns ŷ = 1, 2, 3): g_ŷ = p − e_ŷ",
         sp.Matrix.hstack(*[(grads[y] - (p - e[:, y])).applyfunc(sp.simplify)
                            for y in range(C)])),
        ("E_ŷ[g_ŷ g_ŷᵀ] = Σ_ŷ p_ŷ g_ŷ g_ŷᵀ, in p with Σ p = 1", in_probabilities(lhs, v, p_sym)),
    ]
    return Derivation(
        name="sampled_label",
        statement="E_{ŷ~softmax(v)}[g_ŷ g_ŷᵀ] = diag(p) − p pᵀ = H_out, with g_ŷ = ∇ℓ_ŷ = p − e_ŷ "
                  "(c = 3).",
        source="seed 001 (slides: memory-efficient unbiased estimator of R_approx); "
               "paper-notes E5",
        claims=("E5",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(v,),
    )
