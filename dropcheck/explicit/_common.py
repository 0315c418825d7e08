"""Shared plumbing of :mod:`dropcheck.explicit`: argument checks, unit directions, metrics.

A *metric* is the matrix ``M`` that weighs logit tangents in ``Σ_k t_kᵀ M t_k``: ``H_out``
(the paper's ``R_approx``, eq. 4.4), ``I`` (the identity variant of Sec. 5.2) or ``g gᵀ`` with
``g = ∇_F ℓ_y`` (the loss-Jacobian variant ``R̃_approx``, eq. 5.1).  Each metric knows what the
estimators need: the quadratic form ``tᵀ M t``, the product ``M t``, the columns ``A`` of a
factor ``M = A Aᵀ`` (for the reverse route), and ``∇_F (tᵀ M(F) t)``.

*Logit axes.*  An example's logits are ``(c,)`` for the MLP and ``(T, V)`` for a sequence model
(one logit vector per token, loss summed over tokens, ``H_out`` block-diagonal over tokens).
Arrays are ``(k, B, n, *X, c)`` with ``X`` the extra axes; every contraction of a tangent with
``M`` runs over ``(*X, c)``, so ``g gᵀ`` couples the tokens and ``H_out``, ``I`` do not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dropcheck._validate import check_choice
from dropcheck.models._base import Model, Trace

HESSIANS = ("loss", "identity", "loss_jacobian")
ROUTES = ("auto", "jvp", "vjp")


@dataclass(frozen=True)
class Problem:
    """Checked inputs and the clean trace (``B = 1``): inputs, targets, sites."""

    model: Model
    x: Any
    y: Any
    sites: tuple[str, ...]
    single: bool
    tr: Trace

    @property
    def xp(self) -> Any:
        """The model's array namespace."""
        return self.model.xp

    @property
    def n(self) -> int:
        """Number of examples."""
        return self.x.shape[0]

    @property
    def extra(self) -> tuple[int, ...]:
        """Extra per-example logit axes ``X`` (``()`` for the MLP, ``(T,)`` for a sequence)."""
        return tuple(self.tr.logits.shape[2:-1])

    @property
    def outputs(self) -> int:
        """Logit vectors per example, ``prod(X)``."""
        return math.prod(self.extra)

    def contract(self, a: Any, b: Any, keepdims: bool = False) -> Any:
        """``Σ a ⊙ b`` over the logit axes ``(*X, c)`` (the last ``len(X) + 1`` axes)."""
        m = len(self.extra) + 1
        return self.xp.sum(a * b, axis=tuple(range(-m, 0)), keepdims=keepdims)

    def squeeze(self, a: Any) -> Any:
        """Drop the example axis (the leading one) for a single example."""
        return a[0, ...] if self.single else a


def setup(
    model: Model,
    x: Any,
    y: Any,
    sites: Iterable[str] | str | None,
    *,
    per_step: bool = False,
    trace: Trace | None = None,
) -> Problem:
    """Validate ``x``, ``y`` (None: no targets needed) and ``sites``; run the clean forward pass.

    The trace uses the model's context (:meth:`~dropcheck.models.Model.with_context`: an LSTM
    window's carried state and weight mask).  Estimators written with unit noise tangents need
    one noise entry per unit (a mask locked along the site axes); those written only with
    ``noise_adjoint`` pass ``per_step=True`` and accept either :attr:`~Model.mask`.  ``trace``:
    the clean trace of ``x`` by this model when the caller has it (saves the forward pass).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a dropcheck Model (MLP, Linear, ...), got {type(model)!r}")
    if model.mask != "locked" and not per_step:
        raise ValueError(
            f"this estimator needs one noise entry per unit of a site (a mask shared along the "
            f"site axes), got a model with mask={model.mask!r}; use model.with_mask('locked'), "
            f"or r_approx_sampled / r_approx_factor / r_drop_sampled, which take per-step masks"
        )
    x2, single = model.check_x(x)
    names = model.check_sites(sites)
    y2 = None if y is None else model.check_y(y, x2.shape[0])
    if trace is None:
        trace = model.trace(x2)
    elif tuple(trace.logits.shape[:2]) != (1, x2.shape[0]):
        raise ValueError(f"trace must be a clean trace (B = 1) of the {x2.shape[0]} examples of "
                         f"x, got logits of shape {tuple(trace.logits.shape)}")
    if y2 is not None:
        # one target per logit vector (labels) or per logit (values): an LSTM's targets must
        # have x's number of steps (defect 13 of issue 18: a wrong count was accepted)
        per_vector, per_logit = tuple(trace.logits.shape[1:-1]), tuple(trace.logits.shape[1:])
        if tuple(y2.shape) not in (per_vector, per_logit):
            raise ValueError(f"y must have shape {per_vector} (one target per example"
                             f"{' and step' if len(per_vector) > 1 else ''}, as x), got "
                             f"{tuple(y2.shape)}")
    return Problem(model, x2, y2, names, single, trace)


def require_targets(y: Any) -> Any:
    """``y`` unchanged, or a TypeError when it is None for an estimator that needs targets.

    :func:`setup` reads ``y=None`` as "no targets needed" (``r_approx`` of a cross-entropy
    model); the loss's value and curvature at ``y`` need them.
    """
    if y is None:
        raise TypeError("y must be the targets of x (labels (n,) for cross-entropy), got None")
    return y


def unit_directions(xp: Any, d: int, dtype: Any) -> Any:
    """All unit directions of a width-``d`` site as a direction batch ``(d, 1, 1, d)``."""
    return xp.reshape(xp.eye(d, dtype=dtype), (d, 1, 1, d))


def diagonal(a: Any, xp: Any, d: int) -> Any:
    """``a[k, ..., k]`` of a direction batch ``(d, *lead, d)``, as ``(*lead, d)``."""
    eye = xp.reshape(xp.eye(d, dtype=a.dtype), (d,) + (1,) * (a.ndim - 2) + (d,))
    return xp.sum(a * eye, axis=0)


def require_label_distribution(model: Model, what: str) -> None:
    """Refuse a loss without the sampled-label identity ``H_out = E_ŷ[g_ŷ g_ŷᵀ]``."""
    if not model.loss.has_label_distribution:
        raise ValueError(
            f"{what} samples labels ŷ ~ softmax(F(x)), which needs H_out = E_ŷ[g_ŷ g_ŷᵀ]: "
            f"only cross-entropy has it, this model's loss is {model.loss.name!r}. Use "
            f"r_approx(...) (exact) or r_approx_probe(..., labels='full') instead."
        )


def sum_squares(a: Any, lead: int = 3) -> Any:
    """``Σ a²`` over every axis after the first ``lead`` ones (``(k, B, n)`` by default)."""
    from dropcheck.backend import namespace

    xp = namespace(a)
    return xp.sum(xp.reshape(a * a, (*a.shape[:lead], -1)), axis=-1)


def sample_labels(rng: Any, p: Any, samples: int, xp: Any) -> Any:
    """Labels ``ŷ ~ p`` ``(samples, *p.shape[:-1])``, independent per logit vector (inverse CDF)."""
    from dropcheck.backend import uniform

    c = p.shape[-1]
    u = uniform(rng, (samples, *p.shape[:-1], 1), xp, p.dtype)
    cdf = xp.cumulative_sum(p, axis=-1)
    idx = xp.sum(xp.astype(u >= cdf, xp.int64), axis=-1)
    return xp.minimum(idx, c - 1)  # u ≥ cdf[c−1] only by rounding of the cumulative sum


def rademacher(rng: Any, shape: tuple[int, ...], xp: Any, dtype: Any) -> Any:
    """Unscaled Rademacher signs ``±1`` of ``shape``."""
    from dropcheck.backend import uniform

    return xp.astype(uniform(rng, shape, xp, dtype) < 0.5, dtype) * 2.0 - 1.0


def check_labels(labels: Any, shape: tuple[int, ...], c: int, xp: Any) -> tuple[Any, bool]:
    """Class labels of per-draw ``shape`` (the targets' shape) as ``(S, *shape)`` integers.

    Returns the labels and whether a single draw (no leading draw axis) was given.
    """
    lab = xp.asarray(labels)
    if not xp.isdtype(lab.dtype, "integral"):
        raise TypeError(f"labels must hold integer class labels, got dtype {lab.dtype}")
    one = tuple(lab.shape) == shape
    if one:
        lab = lab[None, ...]
    if tuple(lab.shape[1:]) != shape:
        raise ValueError(
            f"labels must have shape {shape} (one label per logit vector) or (S, "
            f"{', '.join(map(str, shape))}) for S draws, got {tuple(lab.shape)}"
        )
    if bool(xp.any(lab < 0)) or bool(xp.any(lab >= c)):
        raise ValueError(f"labels holds values outside [0, {c}) for a model with {c} classes")
    return lab, one


class Metric:
    """The weighting ``M`` of logit tangents for one ``hessian`` choice (see module doc)."""

    def __init__(self, pb: Problem, hessian: str) -> None:
        self.kind = check_choice(hessian, HESSIANS, "hessian")
        self.pb = pb
        self.f = pb.tr.logits  # (1, n, *X, c)
        self.loss = pb.model.loss
        self.g = self.loss.grad(self.f, pb.y) if self.kind == "loss_jacobian" else None

    @property
    def rank(self) -> int:
        """Columns of the factor ``A`` (reverse sweeps of the ``vjp`` route): ``c·prod(X)`` or 1."""
        return 1 if self.kind == "loss_jacobian" else self.f.shape[-1] * self.pb.outputs

    def apply(self, t: Any) -> Any:
        """``M t`` for logit tangents ``t`` ``(k, 1, n, *X, c)``."""
        if self.kind == "loss":
            return self.loss.hvp(self.f, self.pb.y, t)
        if self.kind == "identity":
            return t
        return self.pb.contract(self.g, t, keepdims=True) * self.g

    def quad(self, t: Any) -> Any:
        """``tᵀ M t`` per direction, ``(k, 1, n)``."""
        return self.pb.contract(t, self.apply(t))

    def columns(self) -> Any:
        """The factor's columns as logit cotangents ``(r, 1, n|1, *X, c)``: ``M = Σ_r a_r a_rᵀ``.

        ``H_out`` and ``I`` are block-diagonal over the logit vectors ``X``: each block's columns
        are placed at their own position (``c·prod(X)`` columns); ``g gᵀ`` has one.
        """
        xp, pb = self.pb.xp, self.pb
        if self.g is not None:  # "loss_jacobian": the one column g
            return self.g[None, ...]
        c, X, m = self.f.shape[-1], pb.extra, pb.outputs
        if self.kind == "loss":
            a = self.loss.hessian_factor(self.f, pb.y)  # (1, n, *X, c, r)
            a = xp.permute_dims(a, (a.ndim - 1, *range(a.ndim - 1)))  # (r, 1, n, *X, c)
        else:
            a = xp.reshape(xp.eye(c, dtype=self.f.dtype), (c, 1, 1, *(1,) * len(X), c))
        if not X:
            return a
        # place block x's columns at position x only: (m, r, 1, n, *X, c) → (m·r, 1, n, *X, c)
        ind = xp.reshape(xp.eye(m, dtype=self.f.dtype), (m, 1, 1, 1, *X, 1))
        cols = ind * a[None, ...]
        return xp.reshape(cols, (m * cols.shape[1], *cols.shape[2:]))

    def form_grad(self, t: Any) -> Any:
        """``∇_F (tᵀ M(F) t)`` at fixed ``t``, ``(k, 1, n, *X, c)``."""
        if self.kind == "loss":
            return self.loss.hessian_form_grad(self.f, self.pb.y, t)
        if self.kind == "identity":
            return 0.0 * t
        # ∇_F (g(F)ᵀ t)² = 2 (gᵀt) D_F g · t = 2 (gᵀt) H_out t
        gt = self.pb.contract(self.g, t, keepdims=True)
        return 2.0 * gt * self.loss.hvp(self.f, self.pb.y, t)
