r"""Explicit regularizers that are exact: linear nets and last-layer dropout with squared loss.

**Mianjy, Arora & Vidal 2018**, "On the Implicit Bias of Dropout", ICML 2018.  A
network ``x ↦ U Vᵀ x`` with one hidden linear layer of width ``r`` (``U`` ``(d2, r)``, ``V``
``(d1, r)``, columns ``u_i``, ``v_i``), inverted dropout on the hidden units with drop
probability ``q``, and the squared loss.  With dropcheck's loss ``½‖·‖²`` and inputs with
``E[x xᵀ] = I`` (their explicit regularizer, ``λ = q/(1−q)`` in their ``p = 1 − q``):

.. math:: R_{drop}(U, V) = \frac{1}{2}\,\frac{q}{1-q} \sum_{i=1}^r \|u_i\|^2 \|v_i\|^2

(:func:`dropout_regularizer`).  Over all width-``r`` factorizations of a fixed ``M = U Vᵀ`` its
minimum is (their main characterization)

.. math:: \min_{U V^\top = M} R_{drop} = \frac{1}{2}\,\frac{q}{1-q}\,\frac{\|M\|_*^2}{r},

attained exactly at the *equalized* factorizations, ``‖u_i‖‖v_i‖ = ‖M‖_*/r`` for every ``i``
(:func:`min_regularizer`, :func:`equalize`).

**Arora, Bartlett, Mianjy & Srebro 2021**, "Dropout: Explicit Forms and Capacity Control",
ICML 2021: when only the last hidden layer ``h`` of a deep network drops (any depth and
activation below it) and the loss is squared, the logits ``W_L(m ⊙ h)/(1−q) + b_L`` are affine in
the mask and the explicit form is exact for every input:

.. math:: R_{drop}(x) = \frac{1}{2}\,\frac{q}{1-q} \sum_j \|W_{L,:,j}\|^2\, h_j(x)^2

(:func:`last_layer_regularizer`; the ridge of seed 002 applied to ``h``; claim K1).
"""

from __future__ import annotations

import math
from typing import Any

from dropcheck import classical
from dropcheck._api import accepts_old_signature
from dropcheck._validate import check_array, check_positive_int, check_q
from dropcheck.backend import namespace
from dropcheck.models.mlp import MLP

__all__ = ["as_mlp", "isotropic_inputs", "dropout_regularizer", "min_regularizer", "equalize",
           "last_layer_regularizer"]


def _check_uv(U: Any, V: Any) -> tuple[Any, Any, Any]:
    try:
        xp = namespace(U, V)
    except TypeError as e:
        raise TypeError(f"U and V must be arrays of one library: {e}") from None
    U, V = check_array(U, xp, "U"), check_array(V, xp, "V")
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"U must be (d2, r) and V (d1, r) with the same r; got "
                         f"{tuple(U.shape)} and {tuple(V.shape)}")
    return xp, U, V


def as_mlp(U: Any, V: Any) -> MLP:
    """``x ↦ U Vᵀ x`` as an identity-activation MLP with site ``"h1"`` and squared loss."""
    xp, U, V = _check_uv(U, V)
    zeros = [xp.zeros((V.shape[1],), dtype=V.dtype), xp.zeros((U.shape[0],), dtype=U.dtype)]
    return MLP([xp.permute_dims(V, (1, 0)), U], zeros, "identity", ("h1",), "squared")


def isotropic_inputs(d: int, xp: Any = None, dtype: Any = None) -> Any:
    """The ``d`` inputs ``√d e_j`` ``(d, d)``: their uniform mixture has ``E[x xᵀ] = I`` exactly."""
    xp = namespace(xp=xp)
    return d**0.5 * xp.eye(d, dtype=dtype or xp.float64)


def dropout_regularizer(U: Any, V: Any, q: float, /) -> Any:
    r"""``½ (q/(1−q)) Σ_i ‖u_i‖² ‖v_i‖²`` (Mianjy et al. 2018), a 0-d array."""
    q = check_q(q)
    xp, U, V = _check_uv(U, V)
    return 0.5 * (q / (1.0 - q)) * xp.sum(xp.sum(U * U, axis=0) * xp.sum(V * V, axis=0))


def min_regularizer(M: Any, r: int, q: float, /) -> Any:
    r"""``½ (q/(1−q)) ‖M‖_*² / r``: the minimum of :func:`dropout_regularizer` over ``UVᵀ = M``."""
    q = check_q(q)
    r = check_positive_int(r, "r")
    if getattr(M, "requires_grad", False):
        raise TypeError("M is a tensor that requires grad; pass M.detach() (a closed form, "
                        "not differentiated)")
    try:
        xp = namespace(M)
    except TypeError:
        raise TypeError(f"M must be a real matrix (an array), got {type(M).__name__}") from None
    M = check_array(M, xp, "M")
    sv = xp.linalg.svdvals(M) if M.ndim == 2 else None
    # a rank-r product carries trailing singular values of rounding size, ~eps·σ_max·dim
    if sv is None or r < sv.shape[0] and float(sv[r]) > 1e-10 * float(sv[0]):
        raise ValueError(f"M must be a matrix of rank at most r = {r} (a width-r factorization "
                         f"UVᵀ = M must exist); got shape {tuple(M.shape)}")
    nuc = xp.sum(sv)
    return 0.5 * (q / (1.0 - q)) * nuc**2 / r


def equalize(U: Any, V: Any) -> tuple[Any, Any]:
    """An equalized factorization ``(U', V')`` of ``M = U Vᵀ`` of the same width ``r``.

    Start from the balanced SVD factorization ``U₀ = P S^{1/2}``, ``V₀ = Q S^{1/2}`` (so
    ``U₀ᵀU₀ = V₀ᵀV₀ = S``), then rotate both by one orthogonal ``Z`` (``U₀Z (V₀Z)ᵀ = M``) chosen
    with ``r − 1`` Givens rotations so that ``diag(Zᵀ S Z)`` is constant ``= tr S / r``:
    ``‖u_i‖² = ‖v_i‖² = ‖M‖_*/r`` for every ``i`` (Mianjy et al. 2018).
    """
    xp, U, V = _check_uv(U, V)
    r = U.shape[1]
    P, s, Qt = xp.linalg.svd(U @ xp.permute_dims(V, (1, 0)), full_matrices=False)
    k = min(r, s.shape[0])
    root = xp.sqrt(s[:k])
    U0 = xp.zeros((U.shape[0], r), dtype=U.dtype)
    V0 = xp.zeros((V.shape[0], r), dtype=V.dtype)
    U0 = xp.concat([P[:, :k] * root, U0[:, k:]], axis=1)
    V0 = xp.concat([xp.permute_dims(Qt, (1, 0))[:, :k] * root, V0[:, k:]], axis=1)
    A = [[float(s[i]) if (i == j and i < k) else 0.0 for j in range(r)] for i in range(r)]
    Z = [[1.0 if i == j else 0.0 for j in range(r)] for i in range(r)]
    target = sum(A[i][i] for i in range(r)) / r
    for _ in range(r - 1):
        above = [i for i in range(r) if A[i][i] > target * (1 + 1e-15)]
        below = [i for i in range(r) if A[i][i] < target * (1 - 1e-15)]
        if not above or not below:
            break
        i, j = above[0], below[0]
        # a_ii(φ) = (a_ii + a_jj)/2 + (a_ii − a_jj)/2 cos φ − a_ij sin φ, φ = 2θ: solve = target
        a, b, c = (A[i][i] - A[j][j]) / 2, A[i][j], target - (A[i][i] + A[j][j]) / 2
        rad = math.hypot(a, b)
        phi = math.acos(max(-1.0, min(1.0, c / rad))) - math.atan2(b, a)
        th = phi / 2
        co, si = math.cos(th), math.sin(th)
        # rotate columns i, j of Z and rows/columns of A (A ← Gᵀ A G)
        for row in Z:
            zi, zj = row[i], row[j]
            row[i], row[j] = co * zi - si * zj, si * zi + co * zj
        for row in A:
            ai, aj = row[i], row[j]
            row[i], row[j] = co * ai - si * aj, si * ai + co * aj
        ri, rj = A[i][:], A[j][:]
        A[i] = [co * x - si * y for x, y in zip(ri, rj, strict=True)]
        A[j] = [si * x + co * y for x, y in zip(ri, rj, strict=True)]
    Zx = xp.asarray(Z, dtype=U.dtype)
    return U0 @ Zx, V0 @ Zx


@accepts_old_signature()
def last_layer_regularizer(model: MLP, x: Any, q: float, /) -> Any:
    r"""``½ (q/(1−q)) Σ_j ‖W_{L,:,j}‖² h_j(x)²`` per example (Arora et al. 2021), ``(n,)``.

    ``model`` must drop only at its last hidden layer and use the squared loss; then this equals
    :func:`dropcheck.exact.explicit_regularizer` exactly.
    """
    last = "x" if model.n_layers == 1 else f"h{model.n_layers - 1}"
    if model.site_names != (last,) or model.loss.name != "squared":
        raise ValueError(f"last_layer_regularizer needs squared loss and dropout only at the last "
                         f"hidden layer {last!r}; got sites {list(model.site_names)} and loss "
                         f"{model.loss.name!r}")
    h = model.hidden(x)[last]
    return classical.ridge_penalty(model.params[f"W{model.n_layers}"], h, q)
