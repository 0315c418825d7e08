r"""Fast dropout: the Gaussian (CLT) approximation of a unit's input (Wang & Manning 2013).

Wang & Manning, "Fast dropout training", ICML 2013.  With inverted input dropout
(keep probability ``1 − q``) the input of a sigmoid unit ``s = Σ_j w_j x̃_j + b`` is a sum of
``d`` independent terms; they replace it by a Gaussian with the same two moments

.. math:: \mu = w^\top x + b, \qquad \sigma^2 = \frac{q}{1-q} \sum_j w_j^2 x_j^2

(:func:`unit_moments`), integrate the sigmoid against it (:func:`predictive_mean`,
``method="gaussian"``, Gauss–Hermite) or use the probit approximation (after
MacKay 1992)

.. math:: E[\sigma(s)] \approx \sigma\big(\mu / \sqrt{1 + \pi\sigma^2/8}\big)

(:func:`probit_sigmoid`).  The expected logistic loss ``E[log(1+e^s) − y s]`` is approximated
the same way (:func:`expected_logistic_loss`).  :func:`sigmoid_unit` builds the 2-class
:class:`~dropcheck.Linear` whose class-1 probability is ``σ(s)`` and whose cross-entropy is the
logistic loss, so exact values come from :mod:`dropcheck.exact` (claim F1).  For a softmax
layer the logits are replaced by a Gaussian vector with their mean and covariance
``(q/(1−q)) W diag(x²) Wᵀ`` (:func:`softmax_predictive_mean`, the multi-class form).
"""

from __future__ import annotations

import math
from typing import Any

from dropcheck import glm
from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_q
from dropcheck.backend import namespace
from dropcheck.losses import softmax
from dropcheck.models.linear import Linear
from dropcheck.quadrature import gaussian_expectation

__all__ = ["sigmoid_unit", "unit_moments", "probit_sigmoid", "predictive_mean",
           "expected_logistic_loss", "softmax_predictive_mean"]


def sigmoid_unit(w: Any, b: float = 0.0) -> Linear:
    """The logistic unit ``σ(wᵀx̃ + b)`` as a 2-class ``Linear`` with logits ``(0, s)``."""
    xp = namespace(w)
    w = xp.asarray(w)
    if w.ndim != 1:
        raise ValueError(f"w must be a vector (d,), got shape {tuple(w.shape)}")
    W = xp.stack([xp.zeros_like(w), w])
    bias = xp.asarray([0.0, float(b)], dtype=w.dtype)
    return Linear(W, bias)


def _unit(model: Linear) -> tuple[Any, Any]:
    W, b = model.params["W1"], model.params["b1"]
    if W.shape[0] != 2:
        raise ValueError(f"model must be a 2-class Linear (use sigmoid_unit), got {model!r}")
    return W[1, :] - W[0, :], b[1] - b[0]


@accepts_old_signature()
def unit_moments(model: Linear, x: Any, q: float, /) -> tuple[Any, Any]:
    """Mean ``μ`` and variance ``σ² = (q/(1−q)) Σ_j w_j² x_j²`` of ``s`` under dropout, ``(n,)``."""
    q = check_q(q)
    xp = model.xp
    x2, _ = model.check_x(x)
    w, b = _unit(model)
    mu = xp.sum(x2 * w, axis=-1) + b
    var = (q / (1.0 - q)) * xp.sum(x2 * x2 * w * w, axis=-1)
    return mu, var


def probit_sigmoid(mu: Any, var: Any) -> Any:
    r"""``σ(μ / sqrt(1 + π σ²/8))`` (Wang & Manning 2013; MacKay 1992)."""
    xp = namespace(mu, var)
    t = mu / xp.sqrt(1.0 + math.pi * var / 8.0)
    return 1.0 / (1.0 + xp.exp(-t))


def _gauss(fn: Any, mu: Any, var: Any, nodes: int) -> Any:
    return gaussian_expectation(lambda z: fn(z[..., 0]), mu[:, None], var[:, None, None],
                                nodes=nodes)


@accepts_old_signature()
def predictive_mean(model: Linear, x: Any, q: float, /, *, method: str = "probit",
                    nodes: int = 48) -> Any:
    """Fast-dropout ``E[σ(s)]``: ``method="gaussian"`` (exact Gaussian integral) or ``"probit"``."""
    mu, var = unit_moments(model, x, q)
    xp = model.xp
    if method == "probit":
        return probit_sigmoid(mu, var)
    if method == "gaussian":
        return _gauss(lambda s: 1.0 / (1.0 + xp.exp(-s)), mu, var, nodes)
    raise ValueError(f"method must be 'probit' or 'gaussian', got {method!r}")


@accepts_old_signature()
def expected_logistic_loss(model: Linear, x: Any, y: Any, q: float, /, *,
                           nodes: int = 48) -> Any:
    """Gaussian approximation of ``E[log(1 + e^s) − y s]`` (labels ``y ∈ {0, 1}``), ``(n,)``."""
    mu, var = unit_moments(model, x, q)
    xp = model.xp
    y = model.check_y(y, mu.shape[0])

    def softplus(s: Any) -> Any:
        return xp.maximum(s, 0.0) + xp.log1p(xp.exp(-xp.abs(s)))

    return _gauss(softplus, mu, var, nodes) - xp.astype(y, mu.dtype) * mu


@accepts_old_signature()
def softmax_predictive_mean(model: Linear, x: Any, q: float, /, *, nodes: int = 12) -> Any:
    r"""Fast-dropout ``E[softmax(z̃)]`` of a softmax layer: ``z̃ ~ N(Wx + b, δ W diag(x²) Wᵀ)``.

    Tensor Gauss–Hermite over the ``c`` logits (``nodes^c`` points per example); ``(n, c)``.
    """
    glm._check_model(model, "softmax_predictive_mean")  # the logits must be affine in x
    q = check_q(q)
    xp = model.xp
    x2, _ = model.check_x(x)
    mean = model.forward(x2)
    cov = glm.logit_covariance(model, x2, q / (1.0 - q))
    return gaussian_expectation(lambda z: softmax(z, xp), mean, cov, nodes=nodes)
