r"""Single-layer softmax: the normalized geometric mean of all sub-networks is the test network.

For logits ``z(m) = W (m ⊙ x)/p + b`` (inverted dropout on the input, keep probability ``p``,
``m_j ~ Bernoulli(p)``), the normalized geometric mean of the ``2^d`` sub-network predictions,
weighted by the mask probabilities ``P(m)``, is

.. math::
    \frac{\prod_m \mathrm{softmax}(z(m))_c^{P(m)}}
          {\sum_{c'} \prod_m \mathrm{softmax}(z(m))_{c'}^{P(m)}}
    = \mathrm{softmax}(W x + b)_c,

the unscaled test network. With classical dropout (train ``W (m ⊙ x) + b``, no ``1/p``) the
same holds with the weight-scaled test network ``softmax(p W x + b)``. Reason: ``log softmax`` is
``z_c`` minus a term that does not depend on ``c``, and ``E_m[z(m)]`` is the test logit because
``z`` is affine in ``m``. Derived for ``d = 3`` inputs and ``c = 3`` classes. Source: seed 002
(Baldi & Sadowski 2013); paper-notes L2.

Numeric form: ``derivation().numeric()(p, W, x, b)`` returns the 3×2 matrix of test predictions
(columns: inverted, classical).
"""

from __future__ import annotations

import itertools
from functools import cache

import sympy as sp
from dropcheck.derivations._core import Derivation, p_keep, softmax, symbols_matrix, symbols_vector

D = 3
C = 3


def _mask_probability(mask: tuple[int, ...]) -> sp.Expr:
    return sp.Mul(*(p_keep if mj else 1 - p_keep for mj in mask))


def _normalized_geometric_mean(logits: dict[tuple[int, ...], sp.Matrix]) -> tuple[sp.Matrix,
                                                                                   sp.Matrix]:
    """Return (log of the unnormalized geometric mean, normalized geometric mean)."""
    log_g = sp.zeros(C, 1)
    for mask, z in logits.items():
        log_g += _mask_probability(mask) * softmax(z).applyfunc(sp.log)
    # log(e^{z_c}/S) = z_c − log S; valid since S > 0 and z is real (force=True).
    log_g = log_g.applyfunc(lambda e: sp.expand(sp.expand_log(e, force=True)))
    g = log_g.applyfunc(sp.exp)
    return log_g, g / sum(g)


def _simplify_exp(expr: sp.Expr) -> sp.Expr:
    """Split exp of sums into products of exps, then cancel the rational function."""
    expr = expr.replace(sp.exp, lambda arg: sp.exp(sp.expand(arg)))
    return sp.cancel(sp.together(sp.expand_power_exp(expr)))


@cache
def derivation() -> Derivation:
    """Form the weighted geometric mean over the 8 masks for both scaling rules and normalize."""
    w = symbols_matrix("w", C, D, real=True)
    x = symbols_vector("x", D, real=True)
    b = symbols_vector("b", C, real=True)
    masks = list(itertools.product((0, 1), repeat=D))
    inverted = {m: w * sp.Matrix(m).multiply_elementwise(x) / p_keep + b for m in masks}
    classical = {m: w * sp.Matrix(m).multiply_elementwise(x) + b for m in masks}
    log_inv, geo_inv = _normalized_geometric_mean(inverted)
    log_cls, geo_cls = _normalized_geometric_mean(classical)
    test_inv = w * x + b
    test_cls = p_keep * w * x + b
    expected_logit = sum((_mask_probability(m) * z for m, z in inverted.items()), sp.zeros(C, 1))
    steps = [
        ("sub-network logits z(m) = W(m ⊙ x)/p + b for the mask m = (1, 0, 1)", inverted[1, 0, 1]),
        ("E_m[z(m)] over the 8 masks (inverted scaling): the test logits W x + b",
         expected_logit.applyfunc(sp.expand)),
        ("log of the weighted geometric mean Σ_m P(m) log softmax(z(m))_c minus that of class 1: "
         "the c-independent log-partition terms cancel (inverted scaling)",
         (log_inv - sp.ones(C, 1) * log_inv[0]).applyfunc(sp.expand)),
        ("the same log-odds with classical scaling (no 1/p in training)",
         (log_cls - sp.ones(C, 1) * log_cls[0]).applyfunc(sp.expand)),
        ("normalized geometric mean equals softmax of those log-odds; columns: inverted "
         "(test softmax(Wx + b)), classical (test softmax(pWx + b))",
         sp.Matrix.hstack(softmax(test_inv), softmax(test_cls))),
    ]
    return Derivation(
        name="geometric_mean",
        statement="For one softmax layer with dropout on its input, the normalized geometric mean "
                  "of all 2^d sub-network predictions (weights P(m)) equals softmax(Wx + b) with "
                  "inverted scaling and softmax(pWx + b) with classical weight scaling "
                  "(d = 3, c = 3; columns: inverted, classical).",
        source="seed 002 (Implicit Ensemble Interpretation; Baldi & Sadowski 2013); "
               "paper-notes L2",
        claims=("L2",),
        steps=steps,
        lhs=sp.Matrix.hstack(geo_inv, geo_cls),
        rhs=sp.Matrix.hstack(softmax(test_inv), softmax(test_cls)),
        variables=(p_keep, w, x, b),
        simplifier=_simplify_exp,
    )
