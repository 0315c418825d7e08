r"""Dropout in generalized linear models as adaptive regularization (Wager, Wang & Liang 2013).

Wager, Wang & Liang, "Dropout Training as Adaptive Regularization", NeurIPS 2013 (the GLM
analysis: dropout as a data-adaptive quadratic penalty).
For a GLM with log-partition ``A`` and natural parameter ``z = W x + b`` the loss is
``ℓ_y(z) = A(z) − ⟨y, z⟩`` (softmax regression: ``A = log Σ_c exp z_c``, one-hot ``y``;
logistic regression is ``c = 2`` with ``z = (0, βᵀx)``).  Inverted dropout on the input keeps
``E[z̃] = z``, so

.. math::
    R_{drop}(x) = E_m[A(\tilde z)] - A(z)

does not depend on the label: it can be estimated on unlabeled inputs
(:func:`unlabeled_regularizer`).  Its delta-method (second-order) approximation is their
quadratic regularizer

.. math::
    R^{q}(x) = \tfrac12 \big\langle \nabla^2 A(z),\ \mathrm{Cov}(\tilde z) \big\rangle,
    \qquad \mathrm{Cov}(\tilde z) = \frac{q}{1-q}\, W \mathrm{diag}(x^{\odot 2}) W^\top,

(:func:`quadratic_regularizer`) which, summed over a data set, is the Fisher-scaled ridge
(``δ = q/(1−q)``)

.. math::
    \sum_i R^q(x_i) = \frac{\delta}{2} \sum_j W_{:,j}^\top
        \Big(\sum_i x_{ij}^2\, \nabla^2 A(z_i)\Big) W_{:,j}
    \;\overset{c=2}{=}\; \frac{\delta}{2}\, \beta^\top \mathrm{diag}(X^\top V X)\, \beta,
    \quad V = \mathrm{diag}(p_i(1-p_i)),

(:func:`fisher_ridge`).  ``R^q`` is the paper-notes ``strength(q)·R_approx`` of the linear model
(claims W1, W2).  Models: a cross-entropy :class:`~dropcheck.Linear`; arrays come back in its
namespace.
"""

from __future__ import annotations

from typing import Any

from dropcheck import exact
from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_nonnegative, check_q
from dropcheck.backend import matmul
from dropcheck.losses import softmax
from dropcheck.models._base import Trace
from dropcheck.models.linear import Linear

__all__ = ["log_partition", "logit_covariance", "unlabeled_regularizer", "quadratic_regularizer",
           "fisher_ridge", "natural_hessian"]


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, Linear) or model.loss.name != "cross_entropy":
        raise TypeError(f"{what} needs a cross-entropy dropcheck.Linear (softmax or logistic "
                        f"regression with input dropout), got {model!r}")


def log_partition(z: Any, xp: Any) -> Any:
    """``A(z) = log Σ_c exp z_c`` over the last axis (max-shifted)."""
    m = xp.max(z, axis=-1, keepdims=True)
    return m[..., 0] + xp.log(xp.sum(xp.exp(z - m), axis=-1))


@accepts_old_signature()
def unlabeled_regularizer(model: Linear, x: Any, q: float, /) -> Any:
    """``E_m[A(z̃)] − A(z)`` by exact enumeration of the input masks, without labels: ``(n,)``.

    Wager et al. 2013: equals :func:`dropcheck.exact.explicit_regularizer` for every label
    because ``E[z̃_y] = z_y`` (claim W1).
    """
    _check_model(model, "unlabeled_regularizer")
    q = check_q(q)
    xp = model.xp

    def fn(tr: Trace, prob: Any) -> tuple[Any]:
        return (xp.sum(prob[:, None] * log_partition(tr.logits, xp), axis=0),)

    (ea,) = exact.expectation(model, x, q, fn, what="E[A(z̃)]")
    x2, single = model.check_x(x)
    clean = log_partition(model.forward(x2), xp)
    out = ea - clean
    return out[0] if single else out


@accepts_old_signature()
def natural_hessian(model: Linear, x: Any, /) -> Any:
    """``∇²A(z) = diag(p) − p pᵀ`` at the clean logits: ``(n, c, c)`` (the Fisher weights)."""
    _check_model(model, "natural_hessian")
    xp = model.xp
    x2, _ = model.check_x(x)
    p = softmax(model.forward(x2), xp)
    eye = xp.eye(p.shape[-1], dtype=p.dtype)
    return p[:, :, None] * eye - p[:, :, None] * p[:, None, :]


@accepts_old_signature()
def logit_covariance(model: Linear, x: Any, variance: float, /) -> Any:
    r"""``Cov(z̃) = v·W diag(x²) Wᵀ`` ``(n, c, c)`` for multiplicative input noise of variance ``v``.

    Any noise ``x̃ = (1 + ε) ⊙ x`` with independent ``ε_j``, ``E ε_j = 0``, ``E ε_j² = v``:
    inverted Bernoulli dropout (``v = q/(1−q)``) and Gaussian dropout alike.
    """
    xp = model.xp
    variance = check_nonnegative(variance, "variance")
    x2, _ = model.check_x(x)
    W = model.params["W1"]
    return variance * matmul(W[None, :, :] * (x2 * x2)[:, None, :], W.T, xp)


@accepts_old_signature()
def quadratic_regularizer(model: Linear, x: Any, q: float, /) -> Any:
    r"""Wager's quadratic regularizer ``½⟨∇²A(z), Cov(z̃)⟩`` per example, ``(n,)``."""
    q = check_q(q)
    xp = model.xp
    x2, single = model.check_x(x)
    H = natural_hessian(model, x2)
    out = 0.5 * xp.sum(H * logit_covariance(model, x2, q / (1.0 - q)), axis=(-2, -1))
    return out[0] if single else out


@accepts_old_signature()
def fisher_ridge(model: Linear, x: Any, q: float, /) -> Any:
    r"""Fisher-scaled ridge ``(δ/2) Σ_j W_{:,j}ᵀ (Σ_i x_ij² ∇²A(z_i)) W_{:,j}``, a scalar.

    Summed (not averaged) over the ``n`` examples of ``x``, as in Wager et al.; for logistic
    regression it is ``(δ/2) βᵀ diag(Xᵀ V X) β``.
    """
    q = check_q(q)
    xp = model.xp
    x2, _ = model.check_x(x)
    H = natural_hessian(model, x2)  # (n, c, c)
    fisher = xp.sum((x2 * x2)[:, :, None, None] * H[:, None, :, :], axis=0)  # (d, c, c)
    W = model.params["W1"]
    cols = xp.permute_dims(W, (1, 0))  # (d, c): W_{:,j}
    quad = xp.sum(cols[:, :, None] * fisher * cols[:, None, :], axis=(-2, -1))
    return 0.5 * (q / (1.0 - q)) * xp.sum(quad)
