"""The fused sampled step: ``R̂_approx``, ``ξ_approx`` and the plain gradient from one trace.

Wei, Kakade & Ma (ICML 2020), Algorithm 2 and the slides' sampled-label estimator
(paper-notes, "Explicit regularizer" and "Implicit regularizer").  A training step with the
paper's regularizers needs, on a mini-batch, the plain gradient of the loss *without* dropout,
a draw of the implicit regularizer ``ξ_approx`` (4.5)/(4.6) and the explicit regularizer's
sampled-label estimate ``R̂_approx``.  Computed separately (:func:`dropcheck.explicit.
r_approx_sampled`, :func:`dropcheck.implicit.xi_approx`, a forward+backward) they cost three
forward passes and four reverse sweeps; :func:`sampled_step` does one forward pass, one
tangent sweep and one reverse sweep of the stacked directions (:meth:`Model.reverse`), and sums
the parameter gradients over the examples inside the sweep (no ``(n, P)`` array).

Cost, in multiply-adds of an MLP (benchmark 3, ``docs/benchmarks.md``): the plain step is a
forward pass ``F`` and a backward pass ``≈ 2F``; the fused step adds the tangent forward from
the first site, two more cotangents through the reverse sweep (the sampled label's and the
tangent's) and the tangent's parameter products (two per layer after the first site).  For
``[32, 128, 128, 10]`` with both hidden sites that is 2.5× the plain step's multiply-adds, a
floor no fusion of these quantities goes below (the benchmark prints the count).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import Any, NamedTuple

from dropcheck._api import resolve_rng
from dropcheck._validate import check_choice
from dropcheck.explicit._common import require_label_distribution, sample_labels, sum_squares
from dropcheck.implicit import _noise_for, _setup
from dropcheck.losses import softmax
from dropcheck.models._base import Model

__all__ = ["SampledStep", "sampled_step"]

_NOISES = ("bernoulli", "rademacher")


class SampledStep(NamedTuple):
    """What :func:`sampled_step` returns (``P`` = ``model.n_params``, flat in its order).

    loss
        ``(1/n) Σ_i ℓ(F(x_i))``, the mini-batch loss without dropout (0-d).
    grad
        ``∇_W`` of ``loss``, ``(P,)``.
    r_hat
        ``R̂_approx`` per example ``(n,)`` (0-d for one example): one sampled label each, summed
        over the sites; unbiased for ``R_approx`` (4.4), no constant (``strength(q)·r_hat``
        estimates ``R_drop``).
    r_hat_sites
        The same per site, ``{site: (n,)}``.
    xi
        ``(1/n) Σ_i ξ_approx(F, x_i, η_i)`` (4.5)/(4.6), ``(P,)``: the implicit term of
        Algorithm 2 (``λ₂ = 1``).
    eta
        The noise drawn, ``{site: (n, d)}`` (the model's noise shape for sequence models).
    labels
        The sampled labels ``ŷ`` ``(n,)`` (``(n, *X)`` for sequence models).
    """

    loss: Any
    grad: Any
    r_hat: Any
    r_hat_sites: dict[str, Any]
    xi: Any
    eta: dict[str, Any]
    labels: Any


def sampled_step(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    rng: Any = None,
    noise: str = "bernoulli",
) -> SampledStep:
    r"""Plain gradient, ``R̂_approx`` and ``ξ_approx`` of a mini-batch from one trace.

    .. math::
        g &= ∇_W \tfrac1n \textstyle\sum_i ℓ(F(x_i)), \\
        \hat R_i &= \textstyle\sum_{s} \sum_k h_{s,ik}^2\,\big(g_{\hat y_i}^\top J_{F,s}(x_i)
            \big)_k^2, \quad \hat y_i \sim \mathrm{softmax}(F(x_i)), \\
        ξ &= \tfrac1n \textstyle\sum_i ∇_W \sum_s J_{loss,s}(x_i)\,(η_{s,i} ⊙ h_{s,i}(x_i))

    (slides' sampled-label estimator of (4.4); (4.5)/(4.6), the gradient taken through both
    ``J_loss`` and ``h`` with ``η`` fixed).  ``η`` is drawn per example and site from ``rng``
    first (the paper's Bernoulli ``η``, or with ``noise="rademacher"`` signs scaled by
    ``sqrt(q/(1−q))``, footnote 6), then one label per example.  Computed by one forward
    trace, one tangent sweep along ``η ⊙ h`` and one :meth:`~dropcheck.models.Model.reverse`
    sweep of ``[g_y, g_ŷ]`` and the tangent ``H_out·Ḟ`` of ``g_y``; equal, to rounding, to
    :func:`dropcheck.implicit.xi_approx_at` at the same ``η`` and
    :func:`dropcheck.explicit.r_approx_sampled` at the same labels (tested against
    ``autograd`` on the same network).  Needs cross-entropy (the sampled label).

    ``x`` ``(n, d0)`` (or one example), ``y`` its labels, ``q`` a float or ``{site: q}``,
    ``sites`` default every site.  Shapes: :class:`SampledStep`.
    """
    x2, single, y2, names, qd = _setup(model, x, y, q, sites)
    require_label_distribution(model, "sampled_step")
    kind = check_choice(noise, _NOISES, "noise")
    xp, n = model.xp, x2.shape[0]
    gen = resolve_rng(rng)
    eta = _noise_for(gen, model, x2, qd, 1, kind)  # (1, n, …, d) per site
    tr = model.trace(x2)
    tan = model.tangent(tr, noise_tangents={s: e[:, None, ...] for s, e in eta.items()})
    logits = tr.logits  # (1, n, …, c)
    labels = sample_labels(gen, softmax(logits[0, ...], xp), 1, xp)  # (1, n, …)
    g = model.loss.grad(logits, y2)  # (1, n, …, c)
    g_hat = model.loss.grad(logits, labels)
    g_dot = model.loss.hvp(logits, y2, tan.logits)  # (1, 1, n, …, c)
    rev = model.reverse(tr, xp.stack([g, g_hat]), sites=names, params=1, tan=tan,
                        cot_dot=g_dot, per_example=False)
    terms = model.noise_terms(tr, {s: a[1:, ...] for s, a in rev.sites.items()}, names)
    r_sites = {s: sum_squares(t)[0, 0, ...] for s, t in terms.items()}  # (n,)
    r_hat = functools.reduce(operator.add, r_sites.values())  # sites: at least one
    loss = xp.mean(model.loss.value(logits[0, ...], y2))
    out_eta = {s: e[0, ...] for s, e in eta.items()}
    lab = labels[0, ...]
    if single:
        r_hat, r_sites = r_hat[0], {s: v[0] for s, v in r_sites.items()}
        out_eta, lab = {s: e[0, ...] for s, e in out_eta.items()}, lab[0, ...]
    return SampledStep(loss, rev.params[0, 0, :] / n, r_hat, r_sites,
                       rev.params_dot[0, 0, :] / n, out_eta, lab)
