r"""Taylor expansion around the *next* layer (Wei, Kakade & Ma 2020, Sec. 4.1 fn. 4, App. A.2).

Dropout at site ``i`` perturbs the next pre-activation ``z = W h̃ + b`` (``W = W_{i+1}``) by
``δz = W(η ⊙ h)``, a sum of ``d_i`` small independent terms even when each ``η_k h_k`` is not
small.  Expanding ``ℓ∘F_{i+1}`` (the map from ``z`` to the loss) to second order in ``δz`` and
taking the expectation with ``E[δz δzᵀ] = (q/(1−q)) W diag(h²) Wᵀ``:

.. math::
    R_{next}(F, x) = \sum_i \frac{q_i}{2(1-q_i)}
        \big\langle D^2_{z}(\ell\circ F_{i+1})[z_{i+1}],\ W_{i+1}\,\mathrm{diag}(h_i^{\odot 2})
        \,W_{i+1}^\top \big\rangle .

Because ``z`` is affine in ``h̃``, ``D²_h(ℓ∘F_i) = Wᵀ D²_z(ℓ∘F_{i+1}) W`` and ``R_next`` equals
``R_taylor`` (4.2) exactly — "it does not change the final result", as the paper says.  This
module computes it by its own route (the Hessian w.r.t. ``z`` of the tail network, contracted
with the columns ``W_{:,k} h_k``), so the identity is a check, not a tautology (claim A2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_q_sites
from dropcheck.backend import matmul
from dropcheck.explicit._common import require_targets, setup
from dropcheck.explicit.taylor import strength
from dropcheck.models._base import AffineFeed, Model
from dropcheck.models.mlp import MLP

__all__ = ["next_layer", "tail_network"]


def _feed(model: Model, site: str) -> AffineFeed:
    """The affine map ``site`` feeds (the protocol's capability), or a TypeError naming it."""
    feed = model.affine_feed(site)
    if feed is None or feed.tokens:
        raise TypeError(
            f"next_layer needs a site that feeds an affine map z = W h + b followed by an "
            f"activation and affine layers (Model.affine_feed); site {site!r} of "
            f"{type(model).__name__} does not declare one"
        )
    return feed


def tail_network(model: Model, site: str) -> MLP | None:
    """``F_{i+1}``: the map from the pre-activation after ``site`` to the logits, as an MLP.

    Built from the site's :meth:`~dropcheck.models.Model.affine_feed`: its first layer is the
    identity (``z ↦ z``, then the activation), followed by the layers after the next one; its
    only site is its input ``"x"``.  ``None`` when the next pre-activation is the logits (the
    site feeds the decoder: ``F_{i+1}`` is the identity).
    """
    feed = _feed(model, site)
    if feed.activation is None:  # the decoder: z is the logits
        return None
    xp = model.xp
    width = feed.W.shape[0]
    ws = [xp.eye(width, dtype=model.dtype), *(W for W, _ in feed.following)]
    bs = [xp.zeros((width,), dtype=model.dtype), *(b for _, b in feed.following)]
    return MLP(ws, bs, feed.activation, ("x",), model.loss)


@accepts_old_signature(positional=("sites",))
def next_layer(
    model: Model,
    x: Any,
    y: Any,
    q: float | Mapping[str, float],
    /,
    *,
    sites: Iterable[str] | str | None = None,
) -> Any:
    r"""``R_next``: the second-order Taylor term around the next pre-activation, per example.

    .. math:: R_{next} = \sum_i \mathrm{strength}(q_i) \sum_k
              (W_{:,k} h_{ik})^\top D^2_z(\ell\circ F_{i+1})\, (W_{:,k} h_{ik})

    Args:
        model: a model whose sites feed affine maps (``affine_feed``: MLP, Linear).
        x: inputs ``(n, d0)`` or ``(d0,)``.
        y: targets (labels ``(n,)`` for cross-entropy).
        q: drop probability, float or dict ``site -> q``.
        sites: the dropping sites (default: all).

    Returns:
        ``(n,)`` (a scalar for one example), in the model's namespace.

    Raises:
        TypeError: if a site does not feed an affine map (``Model.affine_feed``).
    """
    pb = setup(model, x, require_targets(y), sites)
    qd = check_q_sites(q, pb.sites)
    xp = pb.xp
    hs = model.site_values(pb.tr)
    total = None
    for s in pb.sites:
        feed = _feed(model, s)
        W, b = feed.W, feed.b
        h = hs[s][0, ...]  # (n, d_i), the clean value
        # directions v_k = W_{:,k} h_k, one per unit: (d_i, 1, n, d_{i+1})
        v = xp.permute_dims(h, (1, 0))[:, None, :, None] * xp.permute_dims(W, (1, 0))[:, None,
                                                                                      None, :]
        tail = tail_network(model, s)
        if tail is None:  # z is the logits: D²_z(ℓ) = H_out
            f = pb.tr.logits
            hv = model.loss.hvp(f, pb.y, v)
        else:
            z = matmul(h, W.T, xp) + b
            ttr = tail.trace(z)
            tan = tail.tangent(ttr, site_tangents={"x": v})
            g = tail.loss.grad(ttr.logits, pb.y)
            g_dot = tail.loss.hvp(ttr.logits, pb.y, tan.logits)
            adj, _ = tail.adjoint_tangent(ttr, tan, g, g_dot, sites=("x",))
            hv = adj["x"]
        part = strength(qd[s]) * xp.sum(v * hv, axis=(0, -1))[0, ...]
        total = part if total is None else total + part
    return pb.squeeze(total)
