r"""Classical dropout theory (seed 002): ridge, weight scaling, geometric mean, MC dropout.

Seed 002 (an explainer on classical dropout theory) speaks of a *keep* probability ``p``;
dropcheck's API takes the *drop* probability ``q = 1 − p`` everywhere (paper-notes, Notation).

Two scaling conventions (seed 002, "Inverted Dropout"):

- **inverted** (dropcheck's, every modern framework's): train on ``m/p ⊙ h`` with the keep mask
  ``m ~ Bernoulli(p)`` (the paper's ``(1+η)⊙h``); test-time rule: the full network *unchanged*.
- **original** (Srivastava et al. 2014): train on ``m ⊙ h``; test-time rule: multiply the
  weights leaving each dropout site by ``p`` (equivalently the site's values, ``h ↦ p·h``).

The test-time rule that matches the training scaling is the network at the mean mask,
``F(x, E[m])``; :func:`weight_scaled_predict` takes the convention.

Results (``z_m = F(x, m)`` the logits of the sub-network of mask ``m``, ``P(m)`` its
probability):

- :func:`ridge_penalty` — least squares with input dropout is ridge (seed 002, "The Key
  Equivalence")::

      E_m ½‖y − W(m⊙x)/p‖² = ½‖y − Wx‖² + ½ ((1−p)/p) Σ_k Σ_j W_kj² x_j²

  dropcheck's squared loss is ``½‖·‖²``, hence the ``½``; seed 002 and paper-notes state it for
  ``(y − wᵀx)²`` without it.  ``λ = (1−p)/p = q/(1−q)`` per feature with ``E[x_j²] = 1``.
- :func:`geometric_mean_predict` — the normalized weighted geometric mean of the sub-network
  predictions, ``G(x) ∝ exp(Σ_m P(m) log softmax(z_m))``, exact by enumeration.
  Since ``log softmax(z) = z − lse(z)``, ``G = softmax(E_m z_m)``: whenever the logits are
  affine in the mask (one layer; dropout only on the layer feeding the decoder; more generally
  multi-affine in independent site masks, e.g. linear activations) ``E_m z_m = F(x, E[m])`` and
  ``G`` *is* the weight-scaled prediction (seed 002, "Implicit Ensemble Interpretation"; Baldi &
  Sadowski 2013).  Once a nonlinearity follows a site it is only an approximation.
- :func:`arithmetic_mean_predict`, :func:`predictive_moments` — the ensemble's predictive mean
  ``E_m softmax(z_m)`` and variance, exact by enumeration.
- :func:`mc_dropout` — MC dropout (seed 002, "Bayesian Connection: MC Dropout"; Gal &
  Ghahramani 2016): mean and variance of ``softmax(z_m)`` over ``T`` stochastic passes, with
  standard errors; both converge to the enumerated values at rate ``1/√T``.

Shapes: ``x`` is ``(n, d0)`` (or ``(d0,)``, giving results without the batch axis); predictions
are ``(n, c)``.  All computing is in the model's array namespace; enumerations go through
:func:`dropcheck.exact.expectation` (one batched forward per chunk of masks), MC passes through
:func:`dropcheck._engine.sample_sums` (chunks of the engine's budget, pairwise-reduced).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dropcheck._api import accepts_old_signature, resolve_rng
from dropcheck._engine import chunk_items, keyed_root, sample_sums
from dropcheck._validate import (
    check_array,
    check_choice,
    check_positive_int,
    check_q,
    check_q_sites,
)
from dropcheck.backend import namespace
from dropcheck.exact import MAX_MASKS, expectation
from dropcheck.losses import log_softmax, softmax
from dropcheck.models._base import Model, Trace
from dropcheck.noise import sample_eta

__all__ = [
    "CONVENTIONS",
    "ridge_penalty",
    "weight_scaled_predict",
    "geometric_mean_predict",
    "arithmetic_mean_predict",
    "predictive_moments",
    "MCDropout",
    "mc_dropout",
]

Convention = Literal["inverted", "original"]

#: The two scaling conventions of dropout (module docstring).
CONVENTIONS: tuple[str, ...] = ("inverted", "original")

# ----------------------------------------------------------------------------- ridge (L1)


@accepts_old_signature()
def ridge_penalty(W: Any, x: Any, q: float, /) -> Any:
    r"""The dropout penalty of least squares with input dropout: ``½ (q/(1−q)) Σ_kj W_kj² x_j²``.

    Seed 002, "Dropout in Linear Models is L2 Regularization", with keep probability
    ``p = 1 − q`` and inverted dropout on the input ``x̃ = m/p ⊙ x``:

    .. math::

        R_{drop} = E_m ½‖W x̃ + b − y‖² − ½‖W x + b − y‖² = ½ E_m‖W((m/p − 1)⊙x)‖²
                 = ½ \frac{1−p}{p} \sum_k \sum_j W_{kj}^2 x_j^2,

    exact (the cross term vanishes because ``E[m/p − 1] = 0``; ``Var(m_j/p) = (1−p)/p``) and
    independent of ``b`` and ``y``.  The ``½`` is dropcheck's squared loss ``½‖·‖²``
    (:class:`dropcheck.Squared`); it equals :func:`dropcheck.exact.explicit_regularizer` of a
    ``Linear(W, b, loss="squared")``.  Averaged over data with ``E[x_j²] = 1`` it is ridge
    ``½ λ ‖W‖²`` with ``λ = (1−p)/p`` (seed 002 says "unit variance": that is unit second moment,
    i.e. centred features).

    Args:
        W: weights ``(c, d)``, or ``(d,)`` for one output.
        x: inputs ``(n, d)``, or ``(d,)`` for one example.
        q: drop probability in ``[0, 1)``.

    Returns:
        The penalty per example, ``(n,)`` (a 0-d array for one example), in the namespace of
        ``W`` and ``x``.
    """
    q = check_q(q)
    try:
        xp = namespace(W, x)
    except TypeError as e:
        raise TypeError(f"W and x must be arrays of one library: {e}") from None
    W, x = check_array(W, xp, "W"), check_array(x, xp, "x")
    if W.ndim not in (1, 2):
        raise ValueError(f"W must have shape (c, d) or (d,), got {tuple(W.shape)}")
    if x.ndim not in (1, 2) or x.shape[-1] != W.shape[-1]:
        raise ValueError(
            f"x must have shape (n, {W.shape[-1]}) or ({W.shape[-1]},) to match W of shape "
            f"{tuple(W.shape)}, got {tuple(x.shape)}"
        )
    w2 = W * W if W.ndim == 1 else xp.sum(W * W, axis=0)  # Σ_k W_kj², (d,)
    return 0.5 * (q / (1.0 - q)) * xp.sum(x * x * w2, axis=-1)


# ----------------------------------------------------------------------------- helpers


def _setup(
    model: Model, x: Any, q: Any, sites: Iterable[str] | str | None, convention: str
) -> tuple[Any, bool, tuple[str, ...], dict[str, float]]:
    x2, single = model.check_x(x)
    names = model.check_sites(sites)
    qd = check_q_sites(q, names)
    check_choice(convention, CONVENTIONS, "convention")
    return x2, single, names, qd


def _logits(model: Model, tr: Trace, qd: dict[str, float], convention: str) -> Any:
    """Logits ``(B, n, c)`` of the sub-networks of ``tr``'s masks under ``convention``.

    ``tr`` carries the paper's noise, ``1 + η = m/(1−q)`` (inverted).  The original convention's
    sub-network multiplies by ``m = (1+η)(1−q)`` instead: one more forward with that noise.
    """
    if convention == "inverted":
        return tr.logits
    noise = {s: (1.0 + e) * (1.0 - qd[s]) - 1.0 for s, e in tr.noise.items()}
    return model.trace(tr.x, noise).logits


def _squeeze(a: Any, single: bool) -> Any:
    return a[0, ...] if single else a


def _floats_per_mask(model: Model) -> int:
    # per mask and example: the sites' values and logits, a few copies each (as in exact.py)
    return 4 * (sum(model.widths.values()) + model.n_classes)


# ----------------------------------------------------------------------------- predictions


@accepts_old_signature()
def weight_scaled_predict(
    model: Model,
    x: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    convention: Convention = "inverted",
) -> Any:
    r"""The test-time prediction of dropout, ``softmax(F(x, E[m]))``: the weight scaling rule.

    Seed 002, "Inverted Dropout" and "Implicit Ensemble Interpretation".  The network at the
    mean mask, under the training convention:

    - ``"inverted"`` (trained on ``m/p ⊙ h``): ``E[m/p] = 1``, the full network unchanged,
      ``softmax(F(x))`` (``q`` is only validated);
    - ``"original"`` (trained on ``m ⊙ h``): ``E[m] = p``, each site's values (equivalently the
      weights leaving it) scaled by ``p = 1 − q``.

    Args:
        model: a model of the site protocol.
        x: inputs ``(n, d0)`` or ``(d0,)``.
        q: drop probability (float, or dict site -> q).
        sites: the dropout sites (default: all sites of the model).
        convention: ``"inverted"`` or ``"original"``.

    Returns:
        Class probabilities ``(n, c)`` (``(c,)`` for one example).
    """
    x2, single, names, qd = _setup(model, x, q, sites, convention)
    xp = model.xp
    if convention == "inverted":
        logits = model.trace(x2).logits
    else:  # (1 + η) = p at every site: h ↦ p·h
        noise = {
            s: xp.full((1, 1, model.widths[s]), -qd[s], dtype=model.dtype) for s in names
        }
        logits = model.trace(x2, noise).logits
    return _squeeze(softmax(logits[0, ...], xp), single)


@accepts_old_signature(positional=("sites",))
def geometric_mean_predict(
    model: Model,
    x: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    convention: Convention = "inverted",
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
) -> Any:
    r"""The normalized weighted geometric mean of all sub-network predictions, exactly.

    Seed 002, "Implicit Ensemble Interpretation" (Baldi & Sadowski 2013):

    .. math::

        G(x)_k = \frac{\prod_m softmax(z_m)_k^{P(m)}}{\sum_{k'} \prod_m softmax(z_m)_{k'}^{P(m)}}
               = softmax\Big(\sum_m P(m) \log softmax(z_m)\Big)_k
               = softmax(E_m z_m)_k ,

    over every mask ``m`` of ``sites`` (``2^Σd_i`` masks, enumerated in chunks by
    :func:`dropcheck.exact.expectation`).  It equals :func:`weight_scaled_predict` exactly when
    ``E_m z_m = F(x, E[m])`` (logits affine in the mask), and only approximately otherwise.

    Args:
        model: a model of the site protocol.
        x: inputs ``(n, d0)`` or ``(d0,)``.
        q: drop probability (float, or dict site -> q).
        sites: the sites whose masks are enumerated (default: all).
        convention: sub-networks ``F(x, m/p)`` (``"inverted"``) or ``F(x, m)`` (``"original"``).
        chunk_size: masks per forward pass (default: sized to a fixed memory budget).
        max_masks: refuse (:class:`dropcheck.TooManyMasksError`) past this many masks.

    Returns:
        Class probabilities ``(n, c)`` (``(c,)`` for one example).
    """
    x2, single, names, qd = _setup(model, x, q, sites, convention)
    xp = model.xp

    def fn(tr: Trace, prob: Any) -> tuple[Any]:
        return (xp.tensordot(prob, log_softmax(_logits(model, tr, qd, convention), xp), axes=1),)

    (g,) = expectation(
        model, x2, qd, fn, sites=names, floats_per_mask=_floats_per_mask(model),
        chunk_size=chunk_size, max_masks=max_masks, what="geometric_mean_predict",
    )
    return _squeeze(softmax(g, xp), single)


@accepts_old_signature(positional=("sites",))
def predictive_moments(
    model: Model,
    x: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    convention: Convention = "inverted",
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
) -> tuple[Any, Any]:
    r"""Exact mean and variance of the sub-network predictions over all masks.

    ``μ = E_m softmax(z_m)`` and ``σ² = E_m (softmax(z_m) − μ)²`` per class: the quantities MC
    dropout estimates (seed 002, "Bayesian Connection: MC Dropout").  Both are accumulated
    around the prediction ``s₀`` of the full network, ``σ² = E(s − s₀)² − (μ − s₀)²``, so the
    subtraction does not cancel the mean's magnitude.

    Args:
        model: a model of the site protocol.
        x: inputs ``(n, d0)`` or ``(d0,)``.
        q: drop probability (float, or dict site -> q).
        sites: the sites whose masks are enumerated (default: all).
        convention: ``"inverted"`` or ``"original"`` (as in :func:`geometric_mean_predict`).
        chunk_size: masks per forward pass (default: sized to a fixed memory budget).
        max_masks: refuse past this many masks.

    Returns:
        ``(mean, var)``, each ``(n, c)`` (``(c,)`` for one example).
    """
    x2, single, names, qd = _setup(model, x, q, sites, convention)
    xp = model.xp
    s0 = softmax(model.trace(x2).logits[0, ...], xp)

    def fn(tr: Trace, prob: Any) -> tuple[Any, Any]:
        v = softmax(_logits(model, tr, qd, convention), xp) - s0
        return xp.tensordot(prob, v, axes=1), xp.tensordot(prob, v * v, axes=1)

    m1, m2 = expectation(
        model, x2, qd, fn, sites=names, floats_per_mask=_floats_per_mask(model),
        chunk_size=chunk_size, max_masks=max_masks, what="predictive_moments",
    )
    var = m2 - m1 * m1
    var = xp.where(var > 0, var, xp.zeros_like(var))
    return _squeeze(m1 + s0, single), _squeeze(var, single)


@accepts_old_signature(positional=("sites",))
def arithmetic_mean_predict(
    model: Model,
    x: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    convention: Convention = "inverted",
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
) -> Any:
    r"""The exact predictive mean of the dropout ensemble, ``E_m softmax(F(x, m))``.

    The arithmetic mean over every mask of ``sites`` (the value MC dropout estimates); see
    :func:`predictive_moments` (arguments as there), which also gives the variance.

    Returns:
        Class probabilities ``(n, c)`` (``(c,)`` for one example).
    """
    mean, _ = predictive_moments(
        model, x, q, sites=sites, convention=convention, chunk_size=chunk_size, max_masks=max_masks
    )
    return mean


# ----------------------------------------------------------------------------- MC dropout


@dataclass(frozen=True)
class MCDropout:
    """MC dropout estimates over ``samples`` stochastic passes, each ``(n, c)`` (or ``(c,)``).

    ``mean``: the sample mean of the softmax predictions; ``var``: their unbiased sample
    variance (divisor ``T − 1``); ``mean_stderr = sqrt(var/T)``; ``var_stderr`` the plug-in
    standard error of the sample variance, ``sqrt((m₄ − (T−3)/(T−1)·σ̂⁴)/T)`` with ``m₄`` the
    sample fourth central moment.  With ``T = 1`` the variance and the standard errors are NaN.
    """

    mean: Any
    var: Any
    mean_stderr: Any
    var_stderr: Any
    samples: int


@accepts_old_signature(positional=("T", "rng", "sites"), renamed={"T": "samples"})
def mc_dropout(
    model: Model,
    x: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int,
    rng: Any = None,
    convention: Convention = "inverted",
    chunk_size: int | None = None,
) -> MCDropout:
    r"""MC dropout: ``T = samples`` stochastic passes with dropout on, their mean and variance.

    Seed 002, "Bayesian Connection: MC Dropout" (Gal & Ghahramani 2016):

    .. math::

        \hat μ_T = \frac1T \sum_{t=1}^T softmax(F(x, m_t)),\qquad
        \hat σ^2_T = \frac{1}{T-1} \sum_t (softmax(F(x, m_t)) − \hat μ_T)^2,

    with independent masks per pass *and per example* (as a framework draws them).  Both are
    unbiased for :func:`predictive_moments`; their errors fall like ``1/√T``
    (``Var(\hat μ_T) = σ²/T``, ``Var(\hat σ²_T) = (μ₄ − (T−3)/(T−1) σ⁴)/T``).  Passes run in
    chunks (one batched forward each, memory bounded); sums are taken around the first chunk's
    mean, so the central moments do not suffer cancellation.

    Args:
        model: a model of the site protocol.
        x: inputs ``(n, d0)`` or ``(d0,)``.
        q: drop probability (float, or dict site -> q).
        samples: the number ``T`` of stochastic passes, ``>= 1`` (formerly ``T``).
        rng: an int seed, a ``SeedSequence``, a random generator (numpy's or cupy's), or None
            for the fixed default seed.
        sites: the dropout sites (default: all).
        convention: sub-networks ``F(x, m/p)`` (``"inverted"``) or ``F(x, m)`` (``"original"``).
        chunk_size: passes per forward (default: sized to a fixed memory budget).

    Returns:
        An :class:`MCDropout` with ``mean``, ``var``, ``mean_stderr``, ``var_stderr``.
    """
    x2, single, names, qd = _setup(model, x, q, sites, convention)
    T = check_positive_int(samples, "samples")
    gen = resolve_rng(rng)
    xp = model.xp
    n = x2.shape[0]
    if chunk_size is None:
        # per pass and example: sites, logits and the four power sums' temporaries
        chunk_size = chunk_items(2 * _floats_per_mask(model) * n, cap=T)
    chunk_size = check_positive_int(chunk_size, "chunk_size")

    def draw(b: int, g: Any) -> Any:
        eta = {
            s: sample_eta(g, (b, n, model.widths[s]), qd[s], xp=xp, dtype=model.dtype)
            for s in names
        }
        tr = model.trace(x2, eta)
        return softmax(_logits(model, tr, qd, convention), xp)  # (b, n, c)

    # the power sums of v = s − shift, shift the first chunk's mean (the engine's reduction)
    # keyed streams: the passes do not depend on chunk_size (issue 18, defect 12)
    *sums, shift = sample_sums(draw, T, chunk_size, powers=(1, 2, 3, 4),
                               center=lambda v: xp.mean(v, axis=0), streams=keyed_root(None, gen))
    a1, a2, a3, a4 = (t / T for t in sums)  # raw moments of v = s − shift
    mean = shift + a1
    if T == 1:
        nan = xp.full(mean.shape, xp.nan, dtype=mean.dtype)
        out = MCDropout(mean, nan, nan, nan, T)
    else:
        zero = xp.zeros_like(a1)
        m2 = a2 - a1 * a1
        m2 = xp.where(m2 > 0, m2, zero)
        m4 = a4 - 4.0 * a1 * a3 + 6.0 * a1 * a1 * a2 - 3.0 * a1**4
        var = m2 * (T / (T - 1))
        vv = (m4 - (T - 3) / (T - 1) * var * var) / T
        out = MCDropout(mean, var, xp.sqrt(var / T), xp.sqrt(xp.where(vv > 0, vv, zero)), T)
    if single:
        out = MCDropout(out.mean[0, ...], out.var[0, ...], out.mean_stderr[0, ...],
                        out.var_stderr[0, ...], T)
    return out
