r"""Gaussian dropout: multiplicative ``N(1, q/(1−q))`` noise (Srivastava et al. 2014, Sec. 10).

Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: A Simple Way to Prevent
Neural Networks from Overfitting", JMLR 2014, Sec. 10 ("Multiplicative Gaussian Noise");
Kingma, Salimans & Welling, "Variational Dropout and the Local Reparameterization Trick", NeurIPS
2015.  ``h̃ = (1 + ε) ⊙ h`` with ``ε_k ~ N(0, α)``, ``α = q/(1−q)`` (:func:`variance`),
has the first two moments of the paper's Bernoulli ``η``:

.. math:: E\varepsilon = E\eta = 0, \qquad E\varepsilon^2 = E\eta^2 = \frac{q}{1-q},
          \qquad E\varepsilon^3 = 0 \ne E\eta^3 = \frac{q(2q-1)}{(1-q)^2}.

So every second-order quantity is the same — ``R_approx`` (4.4) and, for least squares with a
linear model, the whole expected loss (ridge, claim G1) — and the regularizers of a nonlinear
loss first differ at third order (claim G2):

.. math:: R_{drop} - R_{gauss} = \frac{E\eta^3}{6} \sum_k \kappa_3^{p}(u_k) + O(\|W\|^4),
          \qquad u_k = W_{:,k} x_k,

for softmax regression, ``κ₃^p(u) = Σ_c p_c u_c³ − 3(Σ p u)(Σ p u²) + 2(Σ p u)³`` the third
cumulant of ``u`` under ``p = softmax(z)`` (the third derivative of ``log Σ exp`` along ``u``)
(:func:`third_order_gap`).  For a :class:`~dropcheck.Linear` model the noisy logits are exactly
Gaussian, ``z̃ ~ N(z, α W diag(x²) Wᵀ)``, so :func:`expected_loss` integrates the loss against
that law by Gauss–Hermite quadrature (:mod:`dropcheck.quadrature`) with an error estimate.
"""

from __future__ import annotations

from typing import Any

from dropcheck import glm
from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_count, check_q, check_q_sites
from dropcheck.losses import softmax
from dropcheck.models._base import Model
from dropcheck.models.linear import Linear
from dropcheck.quadrature import gaussian_expectation, hermite_grid

__all__ = ["variance", "bernoulli_third_moment", "expected_loss", "explicit_regularizer",
           "noise_expected_loss", "third_order_gap"]

#: Largest tensor grid :func:`noise_expected_loss` evaluates (points × examples share memory).
MAX_POINTS = 2**18


def variance(q: float) -> float:
    """``α = q/(1−q)``: the Gaussian-dropout variance with the second moment of ``η``."""
    q = check_q(q)
    return q / (1.0 - q)


def bernoulli_third_moment(q: float) -> float:
    """``E[η³] = q(2q−1)/(1−q)²`` of the paper's Bernoulli noise (paper-notes, Notation)."""
    q = check_q(q)
    return q * (2.0 * q - 1.0) / (1.0 - q) ** 2


def _check(model: Any) -> Linear:
    if not isinstance(model, Linear):
        raise TypeError(f"model must be a dropcheck.Linear (its noisy logits are Gaussian), got "
                        f"{type(model).__name__}")
    return model


@accepts_old_signature()
def expected_loss(model: Linear, x: Any, y: Any, q: float, /, *, nodes: int = 24,
                  error: bool = False) -> Any:
    """``E_ε ℓ(W((1+ε)⊙x) + b, y)`` with ``ε ~ N(0, variance(q))``, per example ``(n,)``.

    Tensor Gauss–Hermite over the ``c`` logits (``nodes^c`` points per example); exact for the
    squared loss (degree 2) with any ``nodes ≥ 2``.  ``error=True`` also returns the estimate
    ``|Q_K − Q_{2K}|`` of the quadrature error.
    """
    model = _check(model)
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    mean = model.forward(x2)
    cov = glm.logit_covariance(model, x2, variance(q))
    out = gaussian_expectation(lambda z: model.loss.value(z, y2), mean, cov, nodes=nodes,
                               error=error)
    if single:
        return (out[0][0], out[1][0]) if error else out[0]
    return out


@accepts_old_signature()
def explicit_regularizer(model: Linear, x: Any, y: Any, q: float, /, *, nodes: int = 24,
                         error: bool = False) -> Any:
    """``R_gauss = E_ε ℓ − ℓ`` per example (``error=True``: with the quadrature error estimate)."""
    x2, single = _check(model).check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    clean = model.loss.value(model.forward(x2), y2)
    out = expected_loss(model, x2, y2, q, nodes=nodes, error=error)
    val, err = out if error else (out, None)
    val = val - clean
    if single:
        val, err = val[0], (None if err is None else err[0])
    return (val, err) if error else val


@accepts_old_signature()
def third_order_gap(model: Linear, x: Any, q: float, /) -> Any:
    r"""Leading term of ``R_drop − R_gauss`` for softmax regression: ``(Eη³/6) Σ_k κ₃^p(u_k)``."""
    model = _check(model)
    if model.loss.name != "cross_entropy":
        raise ValueError(f"third_order_gap is for cross-entropy, got loss {model.loss.name!r}")
    xp = model.xp
    x2, single = model.check_x(x)
    p = softmax(model.forward(x2), xp)[:, None, :]  # (n, 1, c)
    u = x2[:, :, None] * xp.permute_dims(model.params["W1"], (1, 0))[None, :, :]  # (n, d, c)
    m1 = xp.sum(p * u, axis=-1)
    m2 = xp.sum(p * u * u, axis=-1)
    m3 = xp.sum(p * u * u * u, axis=-1)
    kappa3 = m3 - 3.0 * m1 * m2 + 2.0 * m1**3
    out = bernoulli_third_moment(q) / 6.0 * xp.sum(kappa3, axis=-1)
    return out[0] if single else out


@accepts_old_signature()
def noise_expected_loss(model: Model, x: Any, y: Any, q: Any, /, *, sites: Any = None,
                        nodes: int = 6, error: bool = False) -> Any:
    r"""``E_ε ℓ(F(x, ε))`` with Gaussian dropout ``ε ~ N(0, q/(1−q))`` at ``sites``, any model.

    Tensor Gauss–Hermite over every noise coordinate of the sites (``nodes^D`` points,
    ``D = Σ_i d_i``; refused past :data:`MAX_POINTS`): for small widths, where the logits are not
    Gaussian (a nonlinearity follows the site).  ``error=True`` also returns ``|Q_K − Q_{K+2}|``,
    the change with two more nodes per axis (``2K`` would square an already large grid), as the
    error estimate.  Per example ``(n,)``.
    """
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    names = model.check_sites(sites)
    qd = check_q_sites(q, names)
    widths = [model.widths[s] for s in names]
    xp = model.xp
    nodes = check_count(nodes, "nodes")

    def rule(k: int) -> Any:
        count = k ** sum(widths)
        if count > MAX_POINTS:
            raise ValueError(f"noise_expected_loss: nodes={k} over {sum(widths)} noise coordinates "
                             f"is {count} points, past MAX_POINTS = {MAX_POINTS}; use fewer nodes "
                             f"or sites, or Monte Carlo")
        pts, wts = hermite_grid(k, sum(widths), xp, model.dtype)
        noise, i = {}, 0
        for s, d in zip(names, widths, strict=True):
            noise[s] = (variance(qd[s]) ** 0.5 * pts[:, i:i + d])[:, None, :]  # (P, 1, d)
            i += d
        loss = model.loss.value(model.trace(x2, noise).logits, y2)  # (P, n)
        return xp.sum(wts[:, None] * loss, axis=0)

    val = rule(nodes)
    if single:
        val = val[0]
    if not error:
        return val
    err = xp.abs(rule(nodes) - rule(nodes + 2))
    return val, (err[0] if single else err)
