"""The site protocol every model implements (DESIGN.md, "a network is a chain of sites").

A model exposes its dropout sites, its parameters (a dict in the documented order, flattened
C-order in that order wherever a flat vector is returned), its loss, and five primitives on a
*trace* (one forward pass, kept for the derivatives):

- ``trace(x, noise)``: forward with the paper's noise η at the sites (``h ↦ (1+η)⊙h``);
- ``tangent(tr, site_tangents, noise_tangents)``: forward-mode sweep.  A site tangent ``v``
  perturbs the value a site feeds forward; a noise tangent ``τ`` perturbs the noise
  (``h ↦ (1+η+ετ)⊙h``, so its tangent ``τ⊙h`` depends on the weights);
- ``backward(tr, cot, sites, params)``: reverse sweep from a logit cotangent (``uᵀ J``);
- ``adjoint_tangent(tr, tan, g, g_dot, sites, params)``: the tangent of the reverse sweep
  (forward-over-reverse), which gives Hessian-vector products w.r.t. sites and ``d/dε ∇_W``;
- ``noise_adjoint(tr, cot, sites)``: the reverse sweep to the noise, ``∂⟨cot, F⟩/∂η``.

Algorithms that only need products with ``η`` (``J(η⊙h)`` through a noise tangent, and
``∂/∂η`` through ``noise_adjoint``) work unchanged for models whose masks are shared along
extra axes (time steps), so write estimators in those terms where possible.

Optional features, each with a default here so that algorithms ask the protocol (never
``getattr`` or ``isinstance``); :class:`~dropcheck.models.lstm.LSTM` uses all of them:

- **Site axes and mask form.**  ``site_axes`` (default 0) counts the extra per-example axes of
  a site value between the example axis and the units (an LSTM's site value is
  ``(B, n, T, d)``: one axis, time).  ``mask`` says how the noise lies along them:
  ``"locked"`` (default) — one entry per unit and example, shared along those axes, noise
  ``(B, n|1, d)``; ``"per_step"`` — independent along them, noise ``(B, n|1, *X, d)``.
  :meth:`noise_shape_for` gives the shape for given inputs, :meth:`sample_noise_for` draws it,
  and :meth:`noise_terms` turns site adjoints into ``∂⟨u, F⟩/∂η`` in either form (``form=``:
  the locked form sums ``(uᵀJ)_k h_k`` over the site axes, the per-step form keeps them), which
  is how an estimator measures the cost of assuming the wrong form.
- **Context.**  Inputs of the forward pass that are neither ``x`` nor the dropout noise, held
  fixed by every algorithm (never differentiated): ``context_names`` (default ``()``) and
  :meth:`with_context`, which returns a copy whose every ``trace`` uses them.  An LSTM's context
  is ``state`` (the carried ``(h_0, c_0)`` per layer of a truncated-BPTT window) and
  ``weight_noise`` (a DropConnect mask per *weight-noise site*).
- **Weight-noise sites.**  ``weight_noise_sites`` (default ``()``) names the parameters that
  accept a DropConnect mask ``W ↦ W ⊙ (1+η)`` through the context; :meth:`sample_weight_noise`
  draws one (the paper's η, shape ``(draws, *W.shape)``).  Derivatives are taken at that fixed
  mask.
- **Per-example reduction.**  :meth:`param_gradient` and :meth:`param_adjoint_tangent` return
  flat parameter gradients (their tangents) per example ``(k, B, n, P)`` or, with
  ``per_example=False``, summed over the examples ``(k, B, P)``.  The defaults sum the
  per-example arrays; a model may override them to sum inside the sweep (the LSTM does, so no
  ``(n, P)`` array exists at AWD-LSTM sizes).
- **One reverse sweep for many directions.**  :meth:`reverse` returns, from one trace, the site
  adjoints of ``k`` cotangents, the parameter gradients of the first ``p`` and the tangents of
  those along a forward tangent (``d/dε ∇_W``): what the fused sampled step
  (:func:`dropcheck.step.sampled_step`) needs.  The default composes :meth:`backward`,
  :meth:`param_gradient` and :meth:`param_adjoint_tangent`; the MLP does it in one sweep.

Shapes: a trace holds ``B`` noise draws of ``n`` examples, primal arrays ``(B, n, d)``; tangents
and cotangents carry a leading direction axis ``k``: ``(k, B, n, d)`` (any of ``k, B, n`` may be
1 and broadcast).  Per-example parameter gradients are flat: ``(k, B, n, P)``.
Everything algorithmic (exact enumeration, Taylor, Gauss–Newton, gradient noise) is written
once against these primitives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import array_api_compat

from dropcheck._validate import (
    check_array_kind,
    check_choice,
    check_finite,
    check_once,
    check_q,
)
from dropcheck.backend import namespace
from dropcheck.losses import Loss


def namespace_of(xp: Any) -> Any:
    """The array-API namespace for a namespace argument ``xp`` (None: numpy's).

    A bare library module (``torch``, ``numpy``) is replaced by its array-api-compat wrapper,
    so ``MLP.random(..., xp=torch)`` works like ``xp=array_api_compat.torch``.
    """
    if xp is None:
        return namespace()
    try:
        return array_api_compat.array_namespace(xp.asarray(0.0))
    except (AttributeError, TypeError) as e:
        raise TypeError(f"xp must be an array namespace (numpy, torch, array_api_strict, …), "
                        f"got {xp!r}: {e}") from None


def _check_reverse(k: int, kd: int, params: int, tan: Any) -> None:
    """The direction counts of :meth:`Model.reverse` (``k`` cotangents, ``kd`` tangents)."""
    if isinstance(params, bool) or not isinstance(params, int) or not 0 <= params <= k:
        raise ValueError(f"params must be an int in [0, {k}] (directions of cot), got {params!r}")
    if kd and (tan is None or kd > params):
        raise ValueError(
            f"cot_dot's {kd} directions need tan and must not outnumber params={params} "
            "(they are the tangents of the first cotangents' parameter gradients)"
        )
    if kd and tan is not None and tan.logits.shape[0] not in (1, kd):
        raise ValueError(f"tan has {tan.logits.shape[0]} directions but cot_dot has {kd}: "
                         "one tangent direction per cot_dot direction")


def _as_model_array(a: Any, xp: Any, name: str) -> Any:
    """``xp.asarray(a)``, with a clear error naming ``name`` when it cannot be converted.

    An array of another library than the model's (a torch tensor for a numpy model) is
    converted when it can be; a tensor that requires grad cannot be (its gradient would be
    lost silently), nor can an array on a device: both are a TypeError naming ``name``.
    """
    if getattr(a, "requires_grad", False):
        raise TypeError(
            f"{name} is a tensor that requires grad, but the model computes in {xp.__name__}: "
            f"pass {name}.detach() (dropcheck's gradients are its own), or build the model "
            f"in the tensor's library (dropcheck.from_torch)"
        )
    try:
        return xp.asarray(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} cannot be converted to an array of the model's namespace "
                        f"{xp.__name__} ({type(a).__name__}): {e}") from None


class Site(NamedTuple):
    """A dropout site: its name and width ``d_i``."""

    name: str
    width: int


@dataclass
class Trace:
    """One forward pass: inputs ``x`` (n, d0), noise per site (B, n|1, d), and model caches."""

    x: Any
    noise: dict[str, Any]
    logits: Any
    single: bool
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tangent:
    """A forward-mode sweep: ``logits`` tangent ``(k, B, n, c)`` and model caches."""

    logits: Any
    site_tangents: dict[str, Any]
    noise_tangents: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)


class Reverse(NamedTuple):
    """What :meth:`Model.reverse` returns (None where not asked for).

    ``sites``: adjoints of every cotangent direction at the asked sites ``(k, B, n, *X, d)``;
    ``params``: flat parameter gradients of the first ``params`` directions, per example
    ``(p, B, n, P)`` or summed ``(p, B, P)``; ``params_dot``: their tangents along ``tan`` for
    the ``k'`` directions of ``cot_dot``, same layout.
    """

    sites: dict[str, Any]
    params: Any
    params_dot: Any


#: The mask forms of :attr:`Model.mask` (module doc, "Site axes and mask form").
MASKS = ("locked", "per_step")


@dataclass(frozen=True)
class AffineFeed:
    r"""A capability: a site feeds an affine map, ``z = W((1+η)⊙h) + b``, then the rest.

    Returned by :meth:`Model.affine_feed`; the fast exact enumerations
    (:mod:`dropcheck._fastenum`) use only this, never a model's type or private attributes.
    Because ``z`` is affine in the site's keep mask, ``z(m) = b + Σ_k m_k W[:, k] h_k/(1−q)``
    splits over groups of units, which is what the factorized and outer-sum kernels exploit.

    Fields
    ------
    W, b
        The affine map, ``(d_out, d)`` and ``(d_out,)``.
    activation
        None when ``z`` are the logits (the site feeds the *decoder*); else the name of the
        activation ``σ`` applied to ``z`` (one of :data:`dropcheck.models._activations`).
    act
        ``σ(z, xp)`` elementwise (None for the decoder).
    following
        The affine maps of the rest of the network, ``((W', b'), …)``: the logits are
        ``A_k(σ(… A_1(σ(z))))`` with ``A_i(a) = W_i a + b_i`` (empty for the decoder).  No
        dropout acts there (the site is the last one dropping units).
    tokens
        Whether the site's value carries a token axis, ``(B, n, T, d)``, with the model's loss
        the *sum* over tokens of ``token_loss`` on per-token logits (an LSTM's decoder).  Then
        ``E`` of the sum is the sum of the per-token expectations, and tokens are rows of the
        kernels like examples.
    token_loss
        The loss of one row of logits ``(…, c)`` (the model's loss when ``tokens`` is False).
    pullback
        Optional ``pullback(x, noise, g) -> (B, n, P)``: flat per-example parameter gradients of
        ``⟨g, h⟩`` with ``g`` ``(B, n, d)`` a cotangent of the site's value ``h`` (the gradient
        of the layers *below* the site; zero for ``W, b`` and the layers after).  With it the
        expected gradient factorizes too.
    w_key, b_key
        The names of ``W`` and ``b`` in ``model.params`` (where their gradients go).
    """

    W: Any
    b: Any
    activation: str | None = None
    act: Callable[[Any, Any], Any] | None = None
    following: tuple[tuple[Any, Any], ...] = ()
    tokens: bool = False
    token_loss: Loss | None = None
    pullback: Callable[[Any, Mapping[str, Any] | None, Any], Any] | None = None
    w_key: str | None = None
    b_key: str | None = None

    @property
    def decoder(self) -> bool:
        """Whether ``z`` are the logits."""
        return self.activation is None

    @property
    def n_classes(self) -> int:
        """Number of logits ``c``."""
        return int((self.following[-1][0] if self.following else self.W).shape[0])

    @property
    def widest(self) -> int:
        """The widest layer from ``z`` on (``d_out`` and every following map's output)."""
        return max([int(self.W.shape[0]), *(int(w.shape[0]) for w, _ in self.following)])

    def rest(
        self, a: Any, xp: Any, start: int = 0, act: Callable[[Any, Any], Any] | None = None
    ) -> Any:
        """Logits from ``a = σ(·)`` entering following map ``start``, units-major ``(…, d, M)``.

        ``W_i @ a + b_i[:, None]`` then ``σ`` (``act`` if given, an equal but faster form) for
        every map but the last, whose output is the logits ``(…, c, M)``.
        """
        sigma = self.act if act is None else act
        maps = self.following[start:]
        for i, (W, b) in enumerate(maps):
            z = W @ a + b[:, None]
            a = z if i == len(maps) - 1 else sigma(z, xp)  # type: ignore[misc]
        return a


class Model:
    """Base class of the models: validation and the public helpers built on the primitives."""

    sites: tuple[Site, ...]
    params: dict[str, Any]
    loss: Loss
    input_dim: int
    n_classes: int
    #: Extra per-example axes of a site value between the example axis and the units.
    site_axes: int = 0
    #: ``"locked"``: noise shared along the site axes; ``"per_step"``: independent along them.
    mask: str = "locked"
    #: Names of the trace's context (:meth:`with_context`); none by default.
    context_names: tuple[str, ...] = ()
    #: Parameters that accept a DropConnect mask through the context ``weight_noise``.
    weight_noise_sites: tuple[str, ...] = ()

    # ----- primitives (subclasses) -----
    def trace(self, x: Any, noise: Mapping[str, Any] | None = None) -> Trace:
        """Forward pass keeping what the derivatives need."""
        raise NotImplementedError

    def site_values(self, tr: Trace) -> dict[str, Any]:
        """``h_i(x)`` at each site *before* its own noise, shape ``(B, n, d_i)``."""
        raise NotImplementedError

    def tangent(
        self,
        tr: Trace,
        site_tangents: Mapping[str, Any] | None = None,
        noise_tangents: Mapping[str, Any] | None = None,
    ) -> Tangent:
        """Forward-mode sweep from tangents at sites (``(k, B, n, d)`` each)."""
        raise NotImplementedError

    def backward(
        self, tr: Trace, cot: Any, sites: Iterable[str] = (), params: bool = False
    ) -> tuple[dict[str, Any], Any]:
        """Reverse sweep of a logit cotangent ``cot`` of shape ``(k, B, n, c)``.

        Returns the adjoints at ``sites`` (w.r.t. the value each site feeds forward) and, if
        ``params``, flat per-example parameter gradients ``(k, B, n, P)``.
        """
        raise NotImplementedError

    def adjoint_tangent(
        self,
        tr: Trace,
        tan: Tangent,
        g: Any,
        g_dot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """Tangent of the reverse sweep of ``g`` ``(B, n, c)`` along ``tan``.

        ``g`` may also carry the direction axis, ``(k, B, n, c)`` (one cotangent per direction:
        ``∇_W R_approx`` in :mod:`dropcheck.explicit` uses this).

        ``g_dot`` ``(k, B, n, c)`` is the tangent of ``g`` itself (``H_out`` times the logit
        tangent for a loss gradient).  Returns the site adjoint tangents and the flat
        ``d/dε ∇_W``.
        """
        raise NotImplementedError

    def noise_adjoint(
        self, tr: Trace, cot: Any, sites: Iterable[str], *, form: str | None = None
    ) -> dict[str, Any]:
        """Reverse sweep of ``cot`` ``(k, B, n, c)`` to the noise: ``∂⟨cot, F⟩/∂η`` per site.

        With noise ``h ↦ (1+η)⊙h`` this is the site adjoint times ``h``: ``(uᵀJ)_k h_k``.
        A model whose site value has more axes than its noise (an LSTM's mask locked across
        time steps) sums over them, which is where its cross-time terms come from.  ``form``
        (default :attr:`mask`): see :meth:`noise_terms`.
        """
        sites = tuple(sites)
        adj, _ = self.backward(tr, cot, sites=sites)
        return self.noise_terms(tr, adj, sites, form=form)

    def noise_terms(
        self, tr: Trace, adj: Mapping[str, Any], sites: Iterable[str], *,
        form: str | None = None,
    ) -> dict[str, Any]:
        """``∂⟨u, F⟩/∂η`` per site from the site adjoints ``adj`` (``(k, B, n, *X, d)``).

        ``form="locked"``: ``Σ_X (uᵀJ)_k h_k`` over the :attr:`site_axes` ``X``, ``(k, B, n, d)``
        (the gradient w.r.t. a mask shared along them); ``"per_step"``: the terms
        ``(uᵀJ)_k h_k`` themselves, ``(k, B, n, *X, d)``.  Default: the model's :attr:`mask`.
        Without site axes both forms are the same.
        """
        form = self.mask if form is None else check_choice(form, MASKS, "form")
        xp = self.xp
        vals = self.site_values(tr)
        axes = tuple(range(-1 - self.site_axes, -1))
        out = {}
        for s in sites:
            prod = adj[s] * vals[s]
            out[s] = xp.sum(prod, axis=axes) if form == "locked" and axes else prod
        return out

    def noise_shape_for(self, site: str, x: Any, draws: int = 1) -> tuple[int, ...]:
        """Shape of η at ``site`` for checked inputs ``x`` ``(n, …)`` (or their shape tuple).

        ``(draws, n, d)`` for a locked mask; per step ``(draws, n, *X, d)``, ``X`` the
        :attr:`site_axes` (read from ``x``'s axes after the example axis).
        """
        shape = tuple(x) if isinstance(x, tuple) else tuple(x.shape)
        k = 1 + (self.site_axes if self.mask == "per_step" else 0)
        return (draws, *shape[:k], self.widths[site])

    def sample_noise_for(
        self,
        rng: Any,
        x: Any,
        q: float | Mapping[str, float],
        draws: int = 1,
        *,
        sites: Iterable[str] | None = None,
        kind: str = "bernoulli",
    ) -> dict[str, Any]:
        """``draws`` independent draws of the paper's η per site for checked inputs ``x``.

        Sites in order (``sites`` default: the model's), each :meth:`noise_shape_for`;
        ``kind="rademacher"``: signs scaled by ``sqrt(q/(1−q))`` (fn. 6).  Sites with ``q = 0``
        get no entry (and draw nothing).
        """
        from dropcheck.noise import sample_eta, sample_rademacher

        kind = check_choice(kind, ("bernoulli", "rademacher"), "kind")
        sampler = sample_eta if kind == "bernoulli" else sample_rademacher
        names = self.check_sites(sites)
        qd = q if isinstance(q, Mapping) else dict.fromkeys(names, q)
        return {
            s: sampler(rng, self.noise_shape_for(s, x, draws), qd[s], xp=self.xp,
                       dtype=self.dtype)
            for s in names
            if check_q(qd[s], f"q[{s!r}]") > 0.0
        }

    def sample_weight_noise(self, rng: Any, q: float, draws: int = 1) -> dict[str, Any]:
        """DropConnect η ``(draws, *W.shape)`` for every :attr:`weight_noise_sites` parameter."""
        from dropcheck.noise import sample_eta

        q = check_q(q, "weight dropout q")
        if not self.weight_noise_sites:
            raise ValueError(f"{type(self).__name__} has no weight-noise sites")
        return {
            k: sample_eta(rng, (draws, *self.params[k].shape), q, xp=self.xp, dtype=self.dtype)
            for k in self.weight_noise_sites
        }

    def with_context(self, **context: Any) -> Model:
        """A copy whose every ``trace`` uses ``context`` (names in :attr:`context_names`).

        None values leave an entry unset.  A model without context accepts only None values.
        """
        given = {k: v for k, v in context.items() if v is not None}
        bad = [k for k in given if k not in self.context_names]
        if bad:
            raise ValueError(
                f"context {bad} is not accepted by {type(self).__name__}; its context names "
                f"are {list(self.context_names)}"
            )
        if given:
            raise NotImplementedError(f"{type(self).__name__} declares context but no with_context")
        return self

    def param_gradient(self, tr: Trace, cot: Any, *, per_example: bool = True) -> Any:
        """Flat ``∂⟨cot, F⟩/∂W``: per example ``(k, B, n, P)`` or summed ``(k, B, P)``."""
        _, g = self.backward(tr, cot, params=True)
        return g if per_example else self.xp.sum(g, axis=-2)

    def param_adjoint_tangent(
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, *, per_example: bool = True
    ) -> Any:
        """Flat ``d/dε ∇_W`` (:meth:`adjoint_tangent`): ``(k, B, n, P)`` or summed ``(k, B, P)``."""
        _, a = self.adjoint_tangent(tr, tan, g, g_dot, params=True)
        return a if per_example else self.xp.sum(a, axis=-2)

    def reverse(
        self,
        tr: Trace,
        cot: Any,
        *,
        sites: Iterable[str] = (),
        params: int = 0,
        tan: Tangent | None = None,
        cot_dot: Any = None,
        per_example: bool = True,
    ) -> Reverse:
        """One reverse sweep of ``k`` cotangents and of the tangents of the first ``k'``.

        ``cot`` ``(k, B, n, c)``; ``params``: how many of its leading directions need
        parameter gradients (0: none); ``cot_dot`` ``(k', B, n, c)``, ``k' ≤ params``: the
        tangents of the first ``k'`` cotangents along ``tan`` (``H_out`` times the logit
        tangent for a loss gradient), whose parameter-gradient tangents ``d/dε ∇_W`` come back
        as ``params_dot``.  What a fused step needs at once: a plain gradient, its tangent
        (``ξ_approx``, eqs 4.5/4.6) and the site adjoints of other cotangents (a sampled label's,
        for ``R̂_approx``), from one trace.

        The default runs :meth:`backward`, :meth:`param_gradient` and
        :meth:`param_adjoint_tangent` (up to three sweeps); a model may override it with one
        sweep that stacks the directions (the MLP does).
        """
        k, kd = cot.shape[0], 0 if cot_dot is None else cot_dot.shape[0]
        _check_reverse(k, kd, params, tan)
        sites = tuple(sites)
        adj = self.backward(tr, cot, sites=sites)[0] if sites else {}
        grads = (self.param_gradient(tr, cot[:params, ...], per_example=per_example)
                 if params else None)
        dots = None
        if kd:
            assert tan is not None  # _check_reverse
            dots = self.param_adjoint_tangent(tr, tan, cot[:kd, ...], cot_dot,
                                              per_example=per_example)
        return Reverse(adj, grads, dots)

    def noise_adjoint_tangent(
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, sites: Iterable[str]
    ) -> dict[str, Any]:
        """Tangent of :meth:`noise_adjoint` of ``g`` along ``tan``: ``d/dε ∂⟨g, F⟩/∂η`` per site.

        ``g``, ``g_dot`` as in :meth:`adjoint_tangent`; returns ``(k, B, n, d)`` per site.  With
        ``g = ∇_F ℓ`` and ``g_dot = H_out·(logit tangent)`` its pairing with a noise tangent is
        the second derivative of the loss w.r.t. the noise (paper eq. 4.1–4.2).  The default is
        the site adjoint tangent times ``h``; it is exact when ``tan`` perturbs only ``sites``
        themselves or sites after them (a site's value does not depend on its own noise nor on
        later sites).  A model whose masks are shared along extra axes sums over them, as in
        :meth:`noise_adjoint`.
        """
        sites = tuple(sites)
        adj, _ = self.adjoint_tangent(tr, tan, g, g_dot, sites=sites)
        return self.noise_terms(tr, adj, sites)

    # ----- capabilities (optional; None: the generic algorithms apply) -----
    def affine_feed(self, site: str) -> AffineFeed | None:
        """How ``site`` feeds the network, when it feeds an affine map (else None).

        A model that returns an :class:`AffineFeed` for its last dropping site gets the fast
        exact enumerations (:mod:`dropcheck._fastenum`); the default says nothing (None) and
        the batched engine applies.
        """
        return None

    # ----- derived structure -----
    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the dropout sites."""
        return tuple(s.name for s in self.sites)

    @property
    def widths(self) -> dict[str, int]:
        """Site name -> width."""
        return {s.name: s.width for s in self.sites}

    @property
    def n_params(self) -> int:
        """Number of scalar parameters ``P``."""
        return sum(math.prod(p.shape) for p in self.params.values())

    @property
    def xp(self) -> Any:
        """The array namespace of the parameters."""
        # every sweep asks for it several times; resolving a namespace costs ~10 µs, as much
        # as a layer of a small network, so it is kept while the parameter arrays are the same
        key = tuple(map(id, self.params.values()))
        cached = self.__dict__.get("_xp_cache")
        if cached is None or cached[0] != key:
            cached = (key, namespace(*self.params.values()))
            self.__dict__["_xp_cache"] = cached
        return cached[1]

    @property
    def dtype(self) -> Any:
        """The floating dtype of the parameters."""
        return next(iter(self.params.values())).dtype

    def flatten_params(self, params: Mapping[str, Any] | None = None) -> Any:
        """Parameters as one flat vector (dict order, each array C-order)."""
        params = self.params if params is None else params
        xp = self.xp
        return xp.concat([xp.reshape(params[k], (-1,)) for k in self.params])

    def unflatten_params(self, flat: Any) -> dict[str, Any]:
        """Inverse of :meth:`flatten_params` (leading batch axes are kept)."""
        xp = self.xp
        out, i = {}, 0
        lead = flat.shape[:-1]
        for k, p in self.params.items():
            m = math.prod(p.shape)
            out[k] = xp.reshape(flat[..., i : i + m], (*lead, *p.shape))
            i += m
        return out

    def with_params(self, params: Mapping[str, Any]) -> Model:
        """A copy of this model with other parameter values (same shapes)."""
        raise NotImplementedError

    # ----- validation shared by the models -----
    def check_sites(
        self, sites: Iterable[str] | str | None, name: str = "sites"
    ) -> tuple[str, ...]:
        """Return ``sites`` (all when None) after checking each is a site of the model.

        ``sites`` is one site name or an iterable of names; a name given twice is refused
        (counting a site twice would double its term in the sums over sites).
        """
        if sites is None:
            return self.site_names
        if isinstance(sites, str):
            sites = (sites,)
        try:
            sites = tuple(sites)
        except TypeError:
            raise TypeError(
                f"{name} must be a site name, an iterable of site names, or None (all sites "
                f"{list(self.site_names)}); got {type(sites).__name__} {sites!r}"
            ) from None
        bad = [s for s in sites if not isinstance(s, str)]
        if bad:
            raise TypeError(f"{name} must hold site names (str); got {bad!r}")
        dup = sorted({s for s in sites if sites.count(s) > 1})
        if dup:
            raise ValueError(f"{name} names {dup} more than once; name each site once")
        unknown = [s for s in sites if s not in self.site_names]
        if unknown:
            raise ValueError(
                f"{name}: {unknown} are not dropout sites of this model; its sites are "
                f"{list(self.site_names)}"
            )
        if not sites:
            raise ValueError(f"{name} must name at least one site")
        return sites

    def check_x(self, x: Any) -> tuple[Any, bool]:
        """Return ``x`` as ``(n, d0)`` and whether it was a single example.

        Checked once per engine loop (:func:`dropcheck._validate.checks_once`), not once per
        chunk: each check reads a reduction back to the host (a GPU synchronisation).
        """
        return check_once(self, x, lambda: self._check_x(x))

    def _check_x(self, x: Any) -> tuple[Any, bool]:
        """The checks of :meth:`check_x` (a model overrides this one)."""
        xp = self.xp
        f16 = getattr(xp, "float16", None)
        if f16 is not None and self.dtype == f16:
            raise TypeError(
                "the model's parameters are float16: dropcheck computes in float32 or float64 "
                "(float16 overflows the losses' exponentials); build the model in float32"
            )
        x = _as_model_array(x, xp, "x")
        check_array_kind(x, xp, "x")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x must have shape (n, {self.input_dim}) or ({self.input_dim},), got {x.shape}"
            )
        if x.ndim == 2 and x.shape[0] == 0:
            raise ValueError(
                f"x holds no examples (shape {tuple(x.shape)}): every quantity is per example "
                "or a mean over examples; pass at least one"
            )
        if not xp.isdtype(x.dtype, "real floating") or (
            x.dtype != self.dtype and xp.result_type(x.dtype, self.dtype) == self.dtype
        ):
            # integers, and floats narrower than the model's (float32 x, float64 model), are
            # promoted as numpy's own arithmetic would: torch refuses mixed-precision products
            x = xp.astype(x, self.dtype)
        check_finite(x, xp, "x")
        single = x.ndim == 1
        return (xp.reshape(x, (1, -1)) if single else x), single

    def check_y(self, y: Any, n: int) -> Any:
        """Validate targets for ``n`` examples."""
        if y is None:
            raise TypeError("y must be an array of targets (labels or values), got None")
        y = _as_model_array(y, self.xp, "y")
        return self.loss.check_targets(y, n, self.n_classes, self.xp)

    def check_noise(self, noise: Mapping[str, Any] | None, n: int) -> dict[str, Any]:
        """Normalize a noise dict to ``(B, n|1, d)`` arrays with one common ``B``."""
        xp = self.xp
        if not noise:
            return {}
        out, batch = {}, None
        for s, eta in noise.items():
            if s not in self.widths:
                raise ValueError(
                    f"noise names site {s!r}; the model's sites are {list(self.widths)}"
                )
            d = self.widths[s]
            eta = xp.asarray(eta)
            if eta.ndim < 2 or eta.shape[-1] != d or eta.shape[-2] not in (1, n):
                raise ValueError(
                    f"noise[{s!r}] must have shape (..., {n}, {d}) or (..., 1, {d}) for "
                    f"{n} examples; got {eta.shape}"
                )
            eta = xp.reshape(eta, (-1, *eta.shape[-2:])) if eta.ndim != 3 else eta
            if eta.ndim == 2:
                eta = eta[None, ...]
            b = eta.shape[0]
            if batch is not None and b not in (1, batch) and batch != 1:
                raise ValueError(f"noise batch sizes differ across sites: {batch} and {b}")
            batch = max(batch or 1, b)
            out[s] = eta
        return out

    # ----- public conveniences built on the primitives -----
    def forward(self, x: Any, noise: Mapping[str, Any] | None = None) -> Any:
        """Logits ``F(x, η)``.

        ``x``: ``(n, d0)`` or ``(d0,)``; ``noise[site]``: η with leading noise-draw axes,
        ``(*batch, n, d)`` (or ``(*batch, 1, d)`` to share a mask across examples), or
        ``(*batch, d)`` for a single example.  Returns ``(*batch, n, c)`` (``(*batch, c)``).
        """
        xp = self.xp
        x2, single = self.check_x(x)
        batch: tuple[int, ...] = ()
        flat: dict[str, Any] = {}
        for s, eta in (noise or {}).items():
            eta = xp.asarray(eta)
            check_array_kind(eta, xp, f"noise[{s!r}]")
            check_finite(eta, xp, f"noise[{s!r}]")
            if single:
                eta = eta[..., None, :]
            batch = eta.shape[:-2] if len(eta.shape[:-2]) > len(batch) else batch
            flat[s] = eta
        flat = {
            s: xp.reshape(xp.broadcast_to(e, (*batch, *e.shape[-2:])), (-1, *e.shape[-2:]))
            for s, e in flat.items()
        }
        tr = self.trace(x2, flat or None)
        out = tr.logits
        out = xp.reshape(out, (*batch, *out.shape[1:])) if batch else out[0, ...]
        return out[..., 0, :] if single else out

    def loss_value(self, x: Any, y: Any, noise: Mapping[str, Any] | None = None) -> Any:
        """Per-example loss ``ℓ(F(x, η), y)``, shape like :meth:`forward` without ``c``."""
        x2, single = self.check_x(x)
        y = self.check_y(y, x2.shape[0])
        f = self.forward(x2, noise)
        out = self.loss.value(f, y)
        return out[..., 0] if single else out

    def hidden(self, x: Any) -> dict[str, Any]:
        """``h_i(x)`` at every site, ``(n, d_i)`` (``(d_i,)`` for a single example)."""
        x2, single = self.check_x(x)
        vals = self.site_values(self.trace(x2))
        return {s: (v[0, 0, ...] if single else v[0, ...]) for s, v in vals.items()}
