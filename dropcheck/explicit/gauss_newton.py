r"""The paper's explicit regularizer ``R_approx`` (Wei, Kakade & Ma 2020, eqs 4.3–4.4, 5.1).

.. math::
    R_{approx}(F, x) = \sum_i \big\langle J_{F,i}^\top H_{out} J_{F,i},\
        \mathrm{diag}(h_i^{\odot 2}) \big\rangle
      = \sum_i \sum_k t_{ik}^\top H_{out}\, t_{ik}, \qquad t_{ik} = J_{F,i}(e_k \odot h_i),

defined **without** the constant: ``strength(q)·R_approx`` estimates ``R_drop``.  Variants of
Sec. 5.2 replace ``H_out`` by ``I`` (``hessian="identity"``) or by ``g gᵀ`` with the loss gradient
``g = ∇_F ℓ_y`` of the true label (``hessian="loss_jacobian"``: ``R̃_approx`` of eq. 5.1,
``Σ_i J_loss,i diag(h_i²) J_loss,iᵀ``).

Two exact routes, per site: ``jvp`` pushes the ``d_i`` unit noise tangents ``e_k`` forward
(``t_{ik}`` directly); ``vjp`` pulls the ``r`` columns of a factor ``M = A Aᵀ``
(:meth:`~dropcheck.losses.Loss.hessian_factor`; ``r = c`` per logit vector — ``c·T`` for a
sequence model, whose ``H_out`` is block-diagonal over tokens — or 1 for ``g gᵀ``) back to the
noise, ``R_i = Σ_r ‖∂⟨a_r, F⟩/∂η_i‖²`` (BackPACK's route).  ``route="auto"`` takes the one with
fewer sweeps per site.  Both are written with noise tangents and ``noise_adjoint``, so a model
whose masks are shared along time steps (the LSTM with ``mask="locked"``) gets its cross-time
terms.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_choice
from dropcheck.explicit._common import ROUTES, Metric, Problem, setup, unit_directions
from dropcheck.models._base import Model

__all__ = ["r_approx", "r_approx_grad", "route_for"]


def route_for(model: Model, site: str, hessian: str = "loss", *, outputs: int = 1) -> str:
    """The cheaper exact route for ``site``: ``"jvp"`` (``d_i`` sweeps) or ``"vjp"`` (``r``).

    ``r`` is the number of factor columns: ``c·outputs`` for ``H_out`` and ``I`` (``outputs``:
    logit vectors per example, ``T`` for a sequence model), 1 for ``g gᵀ``.
    """
    check_choice(hessian, ("loss", "identity", "loss_jacobian"), "hessian")
    model.check_sites((site,))
    r = 1 if hessian == "loss_jacobian" else model.n_classes * outputs
    return "jvp" if model.widths[site] < r else "vjp"


def _site_terms(pb: Problem, metric: Metric, route: str, per_unit: bool = False) -> dict[str, Any]:
    """``Σ_k t_kᵀ M t_k`` per site, ``(n,)`` each, by the chosen route(s).

    With ``per_unit`` the terms ``t_kᵀ M t_k`` themselves, ``(n, d_i)``: the ``jvp`` route has
    them per tangent, the ``vjp`` route per noise coordinate of ``‖∂⟨a_r, F⟩/∂η_i‖²``.
    """
    model, xp = pb.model, pb.xp
    routes = {
        s: (route if route != "auto" else ("jvp" if model.widths[s] < metric.rank else "vjp"))
        for s in pb.sites
    }
    out: dict[str, Any] = {}
    back = [s for s in pb.sites if routes[s] == "vjp"]
    if back:  # one reverse sweep of the r factor columns serves every vjp-route site
        na = model.noise_adjoint(pb.tr, metric.columns(), back)  # (r, 1, n, d) per site
        for s in back:
            sq = na[s] * na[s]
            out[s] = (xp.sum(sq, axis=0) if per_unit
                      else xp.sum(xp.sum(sq, axis=-1), axis=0))[0, ...]
    for s in pb.sites:
        if routes[s] == "jvp":
            d = model.widths[s]
            t = model.tangent(pb.tr, noise_tangents={s: unit_directions(xp, d, model.dtype)})
            quad = metric.quad(t.logits)  # (d, 1, n)
            out[s] = (xp.permute_dims(quad[:, 0, ...], (1, 0)) if per_unit
                      else xp.sum(quad, axis=0)[0, ...])
    return out


@accepts_old_signature(positional=("sites", "hessian"))
def r_approx(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    hessian: str = "loss",
    route: str = "auto",
    per_site: bool = False,
    per_unit: bool = False,
) -> Any:
    """The paper's ``R_approx`` (4.4), without the constant, per example ``(n,)``.

    Parameters
    ----------
    model, x, y
        A site-protocol model, inputs ``(n, d0)`` (or one example ``(d0,)``: scalar results),
        targets.
    sites
        Sites to sum over (default: all).
    hessian
        ``"loss"`` (``H_out``, eq. 4.4), ``"identity"`` (``I``, Sec. 5.2) or
        ``"loss_jacobian"`` (``g gᵀ`` of the true label: ``R̃_approx``, eq. 5.1).
    route
        ``"auto"`` (cheaper per site), ``"jvp"`` or ``"vjp"``; all give the same value.
    per_site
        Return a dict ``site -> (n,)`` instead of the sum.
    per_unit
        Return a dict ``site -> (n, d_i)`` of the terms before any summation,
        ``t_{ik}ᵀ M t_{ik} = h_{ik}² (J_{F,i} e_k)ᵀ M (J_{F,i} e_k)`` per example and unit ``k``
        of site ``i`` (``(d_i,)`` for one example): ``R_approx = Σ_i Σ_k`` of them.  Both
        routes give them at the cost of the sum.
    """
    route = check_choice(route, ROUTES, "route")
    pb = setup(model, x, y, sites)
    if per_unit:
        units = _site_terms(pb, Metric(pb, hessian), route, per_unit=True)
        return {s: pb.squeeze(v) for s, v in units.items()}
    terms = _site_terms(pb, Metric(pb, hessian), route)
    if per_site:
        return {s: pb.squeeze(v) for s, v in terms.items()}
    total = None
    for s in pb.sites:
        total = terms[s] if total is None else total + terms[s]
    return pb.squeeze(total)


@accepts_old_signature(positional=("sites", "hessian"))
def r_approx_grad(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    hessian: str = "loss",
    reduce: bool = True,
) -> Any:
    r"""``∇_W R_approx`` (4.4, no constant): the explicit step of Alg. 2, flat ``(P,)``.

    With ``t_k = J(e_k ⊙ h)`` (unit noise tangent ``e_k``) and ``R = Σ_k t_kᵀ M(F) t_k``,

    .. math::
        \nabla_W R = \sum_k \frac{d}{d\varepsilon}\nabla_W
            \big\langle 2 M t_k,\ F(W, \varepsilon e_k)\big\rangle
          + \Big(\frac{\partial F}{\partial W}\Big)^{\!\top}
            \sum_k \nabla_F\big(t_k^\top M(F)\, t_k\big):

    the first term is one forward-over-reverse sweep (``adjoint_tangent`` with cotangent
    ``2 M t_k`` held fixed, all ``d_i`` directions batched), the second one reverse sweep of
    :meth:`~dropcheck.losses.Loss.hessian_form_grad` (for cross-entropy
    ``H(t⊙t) − 2(pᵀt) H t``; zero for the squared loss).  The gradient flows through ``h_i`` as
    well as ``J_{F,i}``.  Returns the mean over the examples ``(P,)``, or per example ``(n, P)``
    with ``reduce=False`` (``(P,)`` for one example).  ``hessian`` as in :func:`r_approx`.
    """
    pb = setup(model, x, y, sites)
    metric = Metric(pb, hessian)
    xp = pb.xp
    total = None
    for s in pb.sites:
        d = model.widths[s]
        tan = model.tangent(pb.tr, noise_tangents={s: unit_directions(xp, d, model.dtype)})
        t = tan.logits  # (d, 1, n, c)
        _, through_t = model.adjoint_tangent(
            pb.tr, tan, 2.0 * metric.apply(t), 0.0 * t, params=True
        )  # (d, 1, n, P)
        cot = xp.sum(metric.form_grad(t), axis=0, keepdims=True)  # (1, 1, n, c)
        _, through_f = model.backward(pb.tr, cot, params=True)  # (1, 1, n, P)
        part = xp.sum(through_t, axis=0)[0, ...] + through_f[0, 0, ...]
        total = part if total is None else total + part
    assert total is not None  # check_sites refuses an empty site list
    if pb.single:
        return total[0, ...]
    return xp.mean(total, axis=0) if reduce else total
