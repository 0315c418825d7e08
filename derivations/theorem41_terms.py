r"""The loss-derivative terms of Theorem 4.1 for cross-entropy (Sec. 4.3; paper-notes T1).

For ``ℓ_y(v) = −log softmax(v)_y`` (``c = 3``) and ``p = softmax(v)``:

.. math::
    \mathrm{tr}\, D^2 \ell_y = 1 - \|p\|^2, \qquad
    \|D \ell_y\|_2^2 = \|p - e_y\|^2 = 1 - 2 p_y + \|p\|^2,

the per-example summands of ``ν(W) = E_Pn tr(D²ℓ_y[Wx])`` and (squared) of
``μ(W) = E_Pn ‖Dℓ_y[Wx]‖₂``. Both are derived by differentiating ``−log softmax``.

Numeric form: ``derivation().numeric()(p, e_y)`` returns ``[1 − ‖p‖², 1 − 2 e_yᵀp + ‖p‖²]``.
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
    """Derive ``tr D²ℓ_y`` and ``‖Dℓ_y‖²`` (all labels y, c = 3) from ``−log softmax``."""
    v = symbols_vector("v", C, real=True)
    p_sym = symbols_vector("p", C, positive=True)
    e_sym = symbols_vector("e", C, real=True)
    p = softmax(v)
    losses = [cross_entropy(v, y) for y in range(C)]
    trace = sp.hessian(losses[0], list(v)).trace()
    sq_norms = [sum(sp.diff(loss, vj) ** 2 for vj in v) for loss in losses]
    norm_p = sum(pj**2 for pj in p)
    lhs = sp.Matrix([trace, *sq_norms])
    rhs = sp.Matrix([1 - norm_p, *[1 - 2 * p[y] + norm_p for y in range(C)]])
    norm_sym = sum(pj**2 for pj in p_sym)
    steps = [
        ("ν summand: tr D²_v ℓ_1, in p with Σ p = 1 (= 1 − ‖p‖² since (Σ p)² = 1)",
         in_probabilities(trace, v, p_sym)),
        ("μ summand squared: ‖∇_v ℓ_y‖² for y = 1, 2, 3, in p with Σ p = 1 "
         "(= 1 − 2p_y + ‖p‖² since (Σ p)² = 1)",
         sp.Matrix([in_probabilities(s, v, p_sym) for s in sq_norms])),
        ("closed forms with a one-hot label e (p_y = eᵀp)",
         sp.Matrix([1 - norm_sym, 1 - 2 * (e_sym.T * p_sym)[0] + norm_sym])),
    ]
    return Derivation(
        name="theorem41_terms",
        statement="tr D²ℓ_y = 1 − ‖p‖² and ‖Dℓ_y‖² = ‖p − e_y‖² = 1 − 2p_y + ‖p‖² for "
                  "cross-entropy (c = 3; rows: trace, then y = 1, 2, 3).",
        source="Wei, Kakade & Ma 2020, Sec. 4.3, Theorem 4.1, eq. (4.7) (μ, ν); paper-notes T1",
        claims=("T1",),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(p_sym, e_sym),
        closed_form=sp.Matrix([1 - norm_sym, 1 - 2 * (e_sym.T * p_sym)[0] + norm_sym]),
    )
