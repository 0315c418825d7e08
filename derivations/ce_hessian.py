r"""Hessian of cross-entropy w.r.t. the logits: ``H_out = diag(p) − p pᵀ`` (Sec. 4.1; E5).

For ``ℓ_y(v) = −log softmax(v)_y`` with ``c = 3`` logits and ``p = softmax(v)``,

.. math::
    D^2_v \ell_y = \mathrm{diag}(p) - p p^T,

for every label ``y``: the Hessian is obtained by differentiating ``−log softmax`` twice and does
not depend on ``y`` (``−v_y`` is linear).

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
    """Differentiate ``−log softmax(v)_y`` twice (c = 3) and compare with ``diag(p) − ppᵀ``."""
    v = symbols_vector("v", C, real=True)
    p_sym = symbols_vector("p", C, positive=True)
    raw = -sp.log(softmax(v)[0])
    loss = cross_entropy(v, 0)
    hess = {y: sp.hessian(cross_entropy(v, y), list(v)) for y in range(C)}
    p = softmax(v)
    rhs = sp.diag(*p) - p * p.T
    steps = [
        ("ℓ_1(v) = −log softmax(v)_1 (label y = 1 of 3)", raw),
        ("expand the log: log Σ_j e^{v_j} − v_1", loss),
        ("D²_v ℓ_1, written with p_j = e^{v_j}/Σ e^{v} and Σ p = 1",
         in_probabilities(hess[0], v, p_sym)),
        ("D²_v ℓ_y − D²_v ℓ_1 for y = 2, 3: the Hessian does not depend on the label",
         sp.Matrix([[sp.simplify(e) for e in hess[y] - hess[0]] for y in (1, 2)])),
        ("target diag(p) − p pᵀ in p", sp.diag(*p_sym) - p_sym * p_sym.T),
    ]
    return Derivation(
        name="ce_hessian",
        statement="D²_v(−log softmax(v)_y) = diag(p) − p pᵀ with p = softmax(v), for every "
                  "label y (c = 3).",
        source="Wei, Kakade & Ma 2020, Sec. 4.1 (Interpretation); seed 001 (slides); "
               "paper-notes E5",
        claims=("E5",),
        steps=steps,
        lhs=hess[0],
        rhs=rhs,
        variables=(v,),
    )
