r"""Noise-injection scalings that restore dropout's gradient covariance (Sec. 3.1, Alg. 4).

The DROPOUT_k gradient averages ``k`` iid draws; with ``Cov(g) = Σ`` and independent draws
uncorrelated (``Cov(g_j, g_l) = 0`` for ``j ≠ l``, enumerated as in
:mod:`derivations.difference_noise`), bilinearity gives
``Cov((1/k) Σ_j g_j) = (1/k²)(k Σ + k(k−1)·0) = Σ/k``. Adding independent ``a·ξ̃`` with
``Cov(ξ̃) = 2Σ`` gives ``Σ/k + 2a²Σ``, and adding ``a·ξ_approx`` with covariance ``Σ`` gives
``Σ/k + a²Σ``. Solving each for ``a > 0`` so that the total is ``Σ``:

.. math::
    a_{\tilde ξ} = \sqrt{\tfrac12 (1 - 1/k)}, \qquad a_{approx} = \sqrt{1 - 1/k}.

Numeric form: ``derivation().numeric()(k)`` returns ``[a_ξ̃, a_approx]``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, expect_draws
from dropcheck.derivations.difference_noise import covariance, generic_law


def _positive_root(roots: list[sp.Expr], k: sp.Symbol) -> sp.Expr:
    """Pick the root that is positive for k > 1 (checked at k = 2)."""
    positive = [r for r in roots if r.subs(k, 2).is_positive]
    if len(positive) != 1:
        raise ValueError(f"expected one positive root for k > 1, got {roots}")
    return positive[0]


@cache
def derivation() -> Derivation:
    """Derive Cov(DROPOUT_k gradient) = Σ/k and solve for the two injection scalings."""
    k = sp.Symbol("k", integer=True, positive=True)
    a = sp.Symbol("a", real=True)
    sigma = sp.Matrix(2, 2, lambda r, c: sp.Symbol(f"Sigma{min(r, c) + 1}{max(r, c) + 1}"))
    law, _, _ = generic_law(2)
    mean = expect_draws(lambda g: g, law, 1)
    cross = (expect_draws(lambda g1, g2: g1 * g2.T, law, 2) - mean * mean.T).applyfunc(sp.factor)
    # Cov(Σ_j g_j) = Σ_j Cov(g_j) + Σ_{j≠l} Cov(g_j, g_l): k diagonal pairs, k(k-1) cross pairs.
    cov_k = (k * sigma + k * (k - 1) * cross) / k**2
    mean3 = expect_draws(lambda g1, g2, g3: (g1 + g2 + g3) / 3, law, 3)
    cov3 = expect_draws(lambda g1, g2, g3: (g1 + g2 + g3) * (g1 + g2 + g3).T / 9, law, 3)
    check3 = (cov3 - mean3 * mean3.T - covariance(law) / 3).applyfunc(sp.factor)
    total_tilde = cov_k + a**2 * 2 * sigma
    total_approx = cov_k + a**2 * sigma
    # Every entry is the same scalar multiple of Σ; solve the (1,1) entry.
    roots_tilde = sp.solve(sp.Eq(total_tilde[0, 0], sigma[0, 0]), a)
    roots_approx = sp.solve(sp.Eq(total_approx[0, 0], sigma[0, 0]), a)
    a_tilde = _positive_root(roots_tilde, k)
    a_approx = _positive_root(roots_approx, k)
    lhs = sp.Matrix([a_tilde, a_approx])
    rhs = sp.Matrix([sp.sqrt(sp.Rational(1, 2) * (1 - 1 / k)), sp.sqrt(1 - 1 / k)])
    steps = [
        ("Cov(g_j, g_l), j ≠ l, by enumerating two iid draws of a generic 2-outcome law", cross),
        ("Cov of the DROPOUT_k gradient (1/k) Σ_j g_j = (kΣ + k(k−1)·Cov(g_j, g_l))/k²", cov_k),
        ("check at k = 3 by enumerating 3 iid draws of the generic law: Cov − Cov(g)/3", check3),
        ("covariance with a·ξ̃ added (independent, Cov(ξ̃) = 2Σ)", total_tilde),
        ("solve = Σ for a (entry (1,1); all entries are the same multiple of Σ)",
         sp.Matrix(roots_tilde)),
        ("covariance with a·ξ_approx added (independent, covariance Σ)", total_approx),
        ("solve = Σ for a", sp.Matrix(roots_approx)),
    ]
    return Derivation(
        name="noise_injection",
        statement="Cov(DROPOUT_k gradient) = Σ/k; adding independent a·ξ̃ restores Σ iff "
                  "a = sqrt(½(1 − 1/k)); adding a·ξ_approx (covariance Σ) iff a = sqrt(1 − 1/k).",
        source="Wei, Kakade & Ma 2020, Sec. 3.1 and Sec. 5.1 / Alg. 4; paper-notes D1, D3, I2",
        claims=("D1", "D3", "I2"),
        steps=steps,
        lhs=lhs,
        rhs=rhs,
        variables=(k,),
    )
