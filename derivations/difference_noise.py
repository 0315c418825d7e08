r"""Covariance of the difference of two dropout gradients: ``Cov(ξ̃) = 2 Cov(ξ)`` (Sec. 3.1; D2).

``ξ̃ = g(η¹) − g(η²)`` with ``η¹, η²`` iid. Dropout noise has finitely many outcomes, so the
gradient ``g`` is a discrete random vector: here a generic one in ``R^2`` with three outcomes
``u_1, u_2, u_3`` of probabilities ``π_1, π_2, 1 − π_1 − π_2`` (all symbolic). Summing over
the 9 joint outcomes of ``(g¹, g²)`` gives ``E[ξ̃] = 0``, ``Cov(g¹, g²) = 0`` and

.. math::
    \mathrm{Cov}(\tilde ξ) = 2\,\mathrm{Cov}(ξ), \qquad ξ = g − E[g].

Numeric form: ``derivation().numeric()(values, probs[:2])`` returns ``2 Cov(g)`` for the law with
outcome columns ``values`` (2×3) and probabilities ``(π₁, π₂, 1 − π₁ − π₂)``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, expect_draws, symbols_matrix

DIM = 2
OUTCOMES = 3


def generic_law(outcomes: int = OUTCOMES,
                ) -> tuple[list[tuple[sp.Matrix, sp.Expr]], sp.Matrix, sp.Matrix]:
    """Return a generic discrete law on ``R^2``: ``[(u_i, π_i)]``, the value matrix and the π's."""
    values = symbols_matrix("u", DIM, outcomes, real=True)
    free = sp.symbols(f"pi1:{outcomes}", positive=True)
    probs = sp.Matrix([*free, 1 - sum(free)])
    law = [(values[:, i], probs[i]) for i in range(outcomes)]
    return law, values, probs


def covariance(law: list[tuple[sp.Matrix, sp.Expr]]) -> sp.Matrix:
    """Return ``Cov(g) = E[g gᵀ] − E[g] E[g]ᵀ`` for a finite law of column vectors."""
    mean = expect_draws(lambda g: g, law, 1)
    return expect_draws(lambda g: g * g.T, law, 1) - mean * mean.T


@cache
def derivation() -> Derivation:
    """Enumerate two iid draws of a generic discrete gradient and compare Cov(ξ̃) with 2 Cov(ξ)."""
    law, values, probs = generic_law()
    mean = expect_draws(lambda g: g, law, 1)
    cov = covariance(law)
    diff_mean = expect_draws(lambda g1, g2: g1 - g2, law, 2).applyfunc(sp.expand)
    cross = (expect_draws(lambda g1, g2: g1 * g2.T, law, 2) - mean * mean.T)
    second = expect_draws(lambda g1, g2: (g1 - g2) * (g1 - g2).T, law, 2)
    cov_tilde = second - diff_mean * diff_mean.T
    steps = [
        ("outcomes u_i (columns) of the gradient g and their probabilities π_i", values),
        ("probabilities", probs),
        ("Cov(ξ) = Cov(g) = E[g gᵀ] − E[g]E[g]ᵀ (ξ = g − E[g]); entry (1,1)", sp.factor(cov[0, 0])),
        ("E[ξ̃] = E[g¹ − g²] over the 9 joint outcomes", diff_mean),
        ("Cov(g¹, g²) = E[g¹ g²ᵀ] − E[g¹]E[g²]ᵀ: independent draws are uncorrelated",
         cross.applyfunc(sp.factor)),
        ("Cov(ξ̃) = E[ξ̃ ξ̃ᵀ] − E[ξ̃]E[ξ̃]ᵀ over the 9 joint outcomes; entry (1,1) factored",
         sp.factor(cov_tilde[0, 0])),
    ]
    return Derivation(
        name="difference_noise",
        statement="Cov(ξ̃) = 2 Cov(ξ_drop) for ξ̃ = ∇ℓ(F(x,η¹)) − ∇ℓ(F(x,η²)), η¹, η² iid "
                  "(generic 3-outcome gradient law in R²).",
        source="Wei, Kakade & Ma 2020, Sec. 3.1; paper-notes D2",
        claims=("D2",),
        steps=steps,
        lhs=cov_tilde,
        rhs=2 * cov,
        variables=(values, tuple(probs[:-1])),
    )
