r"""The second-order Taylor regularizer ``R_taylor`` (Wei, Kakade & Ma 2020, Sec. 4.1, eqs 4.1–4.2).

With ``δ_i = η_i ⊙ h_i`` and ``E[δ_i δ_iᵀ] = (q_i/(1−q_i)) diag(h_i²)``, the expected second-order
term of ``ℓ(F_i(h_i + δ_i)) − ℓ(F_i(h_i))`` is

.. math::
    R_{taylor}(F, x) = \sum_i \frac{q_i}{2(1-q_i)}
        \big\langle D^2_{h_i}(\ell\circ F_i)[h_i],\ \mathrm{diag}(h_i^{\odot 2})\big\rangle
      = \sum_i \mathrm{strength}(q_i) \sum_k \partial^2_{\eta_{ik}} \ell\big|_{\eta=0}.

Only the Hessian diagonal enters; we compute it exactly, for all units of a site at once, as
the forward-over-reverse product of the unit noise tangents ``e_k`` (``tangent`` +
``noise_adjoint_tangent`` of the site protocol).  Cross terms between sites vanish in
expectation because masks of different sites are independent (claim E4); :func:`noise_hessian`
gives the full matrix, cross blocks included, to check that.

The Gauss–Newton split (:func:`hessian_split`) writes
``D²_h(ℓ∘F_i) = J_{F,i}ᵀ H_out J_{F,i} + Σ_c (∂ℓ/∂F_c) D²_h F_{i,c}``; the first part contracted
with ``diag(h²)`` is the paper's ``R_approx`` site term (4.3), the second the model-Hessian
remainder the paper drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_q, check_q_sites
from dropcheck.explicit._common import (
    Problem,
    diagonal,
    require_targets,
    setup,
    unit_directions,
)
from dropcheck.models._base import Model

__all__ = ["strength", "taylor", "hessian_split", "HessianSplit", "noise_hessian", "small_q_limit"]


@accepts_old_signature()
def strength(q: float, /) -> float:
    """The dropout-matching strength ``q / (2(1−q))`` (the constant of eq. 4.2).

    ``E[η²] = q/(1−q)`` times the ``½`` of the second-order term; multiply the paper's
    ``R_approx`` (4.4, defined without it) by this to estimate ``R_drop``.
    """
    q = check_q(q)
    return q / (2.0 * (1.0 - q))


def _second_derivatives(pb: Problem, site: str, g_dot_zero: bool = False) -> tuple[Any, Any]:
    """``∂²ℓ/∂η_k²`` of every unit of ``site`` ``(1, n, d)`` and the logit tangents ``t_k``.

    With ``g_dot_zero`` the loss gradient is held fixed: only the model-Hessian part
    ``Σ_c g_c ∂²F_c/∂η_k²`` remains.
    """
    model, xp = pb.model, pb.xp
    d = model.widths[site]
    tan = model.tangent(pb.tr, noise_tangents={site: unit_directions(xp, d, model.dtype)})
    f = pb.tr.logits
    g = model.loss.grad(f, pb.y)
    g_dot = model.loss.hvp(f, pb.y, tan.logits)
    if g_dot_zero:
        g_dot = 0.0 * g_dot
    nat = model.noise_adjoint_tangent(pb.tr, tan, g, g_dot, sites=(site,))[site]  # (d, 1, n, d)
    return diagonal(nat, xp, d), tan.logits


@accepts_old_signature(positional=("sites",))
def taylor(
    model: Model,
    x: Any,
    y: Any,
    q: float | Mapping[str, float],
    /,
    *,
    sites: Iterable[str] | str | None = None,
) -> Any:
    r"""``R_taylor`` of eq. 4.2, with the constant, summed over ``sites``: per example ``(n,)``.

    .. math:: R_{taylor} = \sum_i \frac{q_i}{2(1-q_i)}
              \sum_k h_{ik}^2\, [D^2_{h_i}(\ell\circ F_i)]_{kk}

    ``q`` is a float (all sites) or a dict ``site -> q``; ``sites`` defaults to all sites.
    The Hessian diagonal is exact (forward-over-reverse, all ``d_i`` unit directions of a site
    in one batched sweep).  A single example ``x`` ``(d0,)`` gives a scalar.
    """
    pb = setup(model, x, require_targets(y), sites)
    qd = check_q_sites(q, pb.sites)
    xp = pb.xp
    total = None
    for s in pb.sites:
        diag, _ = _second_derivatives(pb, s)
        part = strength(qd[s]) * xp.sum(diag, axis=-1)[0, ...]
        total = part if total is None else total + part
    return pb.squeeze(total)


@dataclass(frozen=True)
class HessianSplit:
    """``R_taylor`` split into the Gauss–Newton part and the model-Hessian remainder.

    ``gauss_newton[site]`` is ``strength(q_i)·⟨J_{F,i}ᵀ H_out J_{F,i}, diag(h_i²)⟩`` (the paper's
    ``R_approx`` site term with the constant, eq. 4.3); ``remainder[site]`` is
    ``strength(q_i)·⟨Σ_c (∂ℓ/∂F_c) D²_{h_i}F_{i,c}, diag(h_i²)⟩``.  Arrays are per example
    ``(n,)`` (scalars for one example).
    """

    gauss_newton: dict[str, Any]
    remainder: dict[str, Any]

    @property
    def total_gauss_newton(self) -> Any:
        """``strength·R_approx`` summed over the sites (eq. 4.4 with the constant)."""
        return _sum(self.gauss_newton.values())

    @property
    def total_remainder(self) -> Any:
        """The dropped model-Hessian term summed over the sites."""
        return _sum(self.remainder.values())

    @property
    def total(self) -> Any:
        """``R_taylor``: Gauss–Newton part plus remainder."""
        return self.total_gauss_newton + self.total_remainder


def _sum(parts: Iterable[Any]) -> Any:
    out = None
    for p in parts:
        out = p if out is None else out + p
    return out


@accepts_old_signature(positional=("sites",))
def hessian_split(
    model: Model,
    x: Any,
    y: Any,
    q: float | Mapping[str, float],
    /,
    *,
    sites: Iterable[str] | str | None = None,
) -> HessianSplit:
    """Split ``R_taylor`` (4.2) into its Gauss–Newton part and model-Hessian remainder, per site.

    The Gauss–Newton part is ``Σ_k t_kᵀ H_out t_k`` with ``t_k = J_{F,i}(e_k ⊙ h_i)`` (noise
    tangents); the remainder is the forward-over-reverse product with the loss gradient held
    fixed.  Both are scaled by ``strength(q_i)``; see :class:`HessianSplit`.
    """
    pb = setup(model, x, require_targets(y), sites)
    qd = check_q_sites(q, pb.sites)
    xp = pb.xp
    gn, rem = {}, {}
    f = pb.tr.logits
    for s in pb.sites:
        diag, t = _second_derivatives(pb, s, g_dot_zero=True)
        gn_s = xp.sum(pb.contract(t, model.loss.hvp(f, pb.y, t)), axis=0)  # (1, n)
        gn[s] = pb.squeeze(strength(qd[s]) * gn_s[0, ...])
        rem[s] = pb.squeeze(strength(qd[s]) * xp.sum(diag, axis=-1)[0, ...])
    return HessianSplit(gn, rem)


@accepts_old_signature(positional=("sites",))
def noise_hessian(
    model: Model, x: Any, y: Any, /, *, sites: Iterable[str] | str | None = None
) -> Any:
    """The exact Hessian of ``ℓ(F(x, η))`` w.r.t. the noise of ``sites`` at ``η = 0``.

    Returns ``(n, D, D)`` with ``D = Σ_i d_i``, the sites in the model's order and units in
    order within a site.  Diagonal blocks are ``diag(h_i) D²_{h_i}(ℓ∘F_i) diag(h_i)`` (the
    matrix of eq. 4.1 in noise coordinates); the off-diagonal blocks are the cross terms of
    multi-site dropout, which vanish in expectation (claim E4), not pointwise.  Block ``(i, j)``
    with site ``j`` at or after ``i`` is one forward-over-reverse sweep of the unit noise
    tangents of ``j``; the others follow by symmetry.
    """
    pb = setup(model, x, require_targets(y), sites)
    xp = pb.xp
    order = tuple(s for s in model.site_names if s in pb.sites)
    f = pb.tr.logits
    g = model.loss.grad(f, pb.y)
    blocks: dict[tuple[str, str], Any] = {}
    for j, sj in enumerate(order):
        dj = model.widths[sj]
        tan = model.tangent(pb.tr, noise_tangents={sj: unit_directions(xp, dj, model.dtype)})
        asked = order[: j + 1]
        nat = model.noise_adjoint_tangent(
            pb.tr, tan, g, model.loss.hvp(f, pb.y, tan.logits), sites=asked
        )
        for si in asked:
            blk = xp.permute_dims(nat[si], (1, 2, 3, 0))[0, ...]  # (n, d_i, d_j)
            blocks[(si, sj)] = blk
            if si != sj:
                blocks[(sj, si)] = xp.permute_dims(blk, (0, 2, 1))
    rows = [xp.concat([blocks[(si, sj)] for sj in order], axis=-1) for si in order]
    return pb.squeeze(xp.concat(rows, axis=-2))


@accepts_old_signature(positional=("sites",))
def small_q_limit(
    model: Model, x: Any, y: Any, /, *, sites: Iterable[str] | str | None = None
) -> Any:
    r"""The exact limit ``lim_{q→0} R_drop / q`` (all sites' ``q → 0`` together), ``(n,)``.

    .. math:: \lim_{q\to 0} \frac{R_{drop}}{q}
              = \sum_i \sum_k \big[\ell(F(x; h_{ik} \to 0)) - \ell(F(x))
                + h_{ik}\, \partial_{h_{ik}}\ell\big]

    At small ``q`` at most one unit is dropped (probability ≈ ``q`` each) while the kept units
    are scaled by ``1/(1−q) ≈ 1+q``.  A dropped unit is never a small perturbation, so this limit
    differs from ``R_taylor/q → ½ Σ h² diag(D²ℓ)``: the relative error of Taylor does not vanish
    as ``q → 0`` (paper-notes, "What a first prototype measured").
    """
    pb = setup(model, x, require_targets(y), sites)
    xp = pb.xp
    clean = model.loss.value(pb.tr.logits, pb.y)  # (1, n)
    g = model.loss.grad(pb.tr.logits, pb.y)
    first = model.noise_adjoint(pb.tr, g[None, ...], pb.sites)  # ∂ℓ/∂η = h ⊙ ∂ℓ/∂h
    total = None
    for s in pb.sites:
        d = model.widths[s]
        drop_one = -xp.reshape(xp.eye(d, dtype=model.dtype), (d, 1, d))  # η = −e_k: drop unit k
        lk = model.loss.value(model.trace(pb.x, {s: drop_one}).logits, pb.y)  # (d, n)
        part = xp.sum(lk - clean, axis=0) + xp.sum(first[s], axis=-1)[0, 0, ...]
        total = part if total is None else total + part
    return pb.squeeze(total)
