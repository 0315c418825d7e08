"""Exact dropout expectations by enumerating every mask of the chosen sites.

For sites with widths ``d_i`` there are ``2^Σd_i`` masks; each chunk of masks goes through one
batched forward (and backward) pass, and partial sums are added chunk by chunk in a fixed order,
so memory is bounded by ``chunk_size`` and the result does not depend on it beyond rounding.
Every loop here runs on the engine (:mod:`dropcheck._engine`): one chunk budget
(``CHUNK_BYTES``), chunks of masks mapped by an executor (``executor=``, serial by default) and
reduced by a pairwise sum keyed by chunk index.
Past ``max_masks`` (default ``2^26``) every function refuses before doing any work and names the
Monte-Carlo counterpart in :mod:`dropcheck.montecarlo`.

Quantities (paper-notes, "Objectives"; Wei, Kakade & Ma 2020, Sec. 3):

- ``expected_loss``: ``ℓ_drop(F, x) = E_η ℓ(F(x, η))``, per example ``(n,)``;
- ``explicit_regularizer``: ``R_drop(F, x) = ℓ_drop(F, x) − ℓ(F(x))``, ``(n,)``;
- ``expected_gradient``: ``∇_W ℓ_drop(F, x)``, per example ``(n, P)``;
- ``gradient_noise_cov``: ``Cov_η(ξ_drop)`` with ``ξ_drop = ∇_W ℓ(F(x,η)) − ∇_W ℓ_drop`` (3.3),
  per example ``(n, P, P)``, or ``(n, k, k)`` projected on ``directions`` ``(P, k)``;
- ``dropout_k_cov``: covariance of the DROPOUT_k mini-batch gradient (Alg. 1),
  ``(1/(m² k)) Σ_i Cov(ξ_drop)(x_i)``.

``q`` is a float (all chosen sites) or a dict ``site -> q``; ``sites`` defaults to all sites
of the model.  A single example ``x`` of shape ``(d0,)`` gives results without the batch axis.

Fast paths (:mod:`dropcheck._fastenum`, DESIGN.md "Performance principles"): when the last
dropping site feeds an affine map, ``expected_loss``, ``explicit_regularizer`` and
``expected_gradient`` take ``method="auto"`` (default), ``"factorized"`` (site feeding the
decoder: one matrix product and one ``log`` per mask), ``"outer_sum"`` (block enumeration of
the next pre-activation; ``"gray"`` is its deprecated alias) or ``"batched"`` (this engine); the
other sites, if any, are enumerated by this engine around the fast one.  A model opts in by
describing the affine map its site feeds (:meth:`dropcheck.models.Model.affine_feed`).  All
methods agree up to rounding (``tests/test_fastenum.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dropcheck import _engine, _fastenum
from dropcheck._api import accepts_old_signature
from dropcheck._engine import Executor
from dropcheck._validate import check_directions, check_positive_int, check_q_sites
from dropcheck.models._base import Model, Trace
from dropcheck.noise import mask_count

__all__ = [
    "MAX_MASKS",
    "expectation",
    "expected_loss",
    "explicit_regularizer",
    "expected_gradient",
    "gradient_noise_cov",
    "dropout_k_cov",
    "mask_count_for",
    "replicated_expectation",
    "loss_gradients",
]

#: Default limit on the number of masks one exact expectation may enumerate.
MAX_MASKS = 2**26

#: Memory budget of one chunk's per-mask arrays (bytes): the engine's, :data:`_engine.CHUNK_BYTES`.
CHUNK_BYTES = _engine.CHUNK_BYTES


def _setup(
    model: Model, x: Any, q: Any, sites: Iterable[str] | str | None
) -> tuple[Any, bool, tuple[str, ...], dict[str, float]]:
    x2, single = model.check_x(x)
    names = model.check_sites(sites)
    return x2, single, names, check_q_sites(q, names)


@accepts_old_signature(positional=("sites",))
def mask_count_for(
    model: Model, q: Any, /, *, sites: Iterable[str] | str | None = None
) -> int:
    """Number of masks an exact expectation over ``sites`` enumerates."""
    names = model.check_sites(sites)
    return mask_count({s: model.widths[s] for s in names}, check_q_sites(q, names))


@accepts_old_signature()
def expectation(
    model: Model,
    x: Any,
    q: Any,
    fn: Callable[[Trace, Any], tuple[Any, ...]],
    /,
    *,
    sites: Iterable[str] | str | None = None,
    floats_per_mask: int | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
    what: str = "this expectation",
    executor: Executor | None = None,
) -> tuple[Any, ...]:
    """The enumeration engine: ``Σ_chunks fn(trace, prob)`` over every mask of ``sites``.

    ``fn(tr, prob)`` receives the trace of one chunk (``B`` masks shared by all ``n``
    examples, noise ``(B, 1, d)``) and the masks' probabilities ``(B,)``, and returns a tuple of
    probability-weighted partial sums; the engine adds them by its pairwise sum over chunks.
    ``floats_per_mask`` (per example) sizes chunks to ``CHUNK_BYTES`` when ``chunk_size`` is
    None (:func:`dropcheck._engine.chunk_items`, at most ``2^16`` masks).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable fn(trace, prob) -> tuple of partial sums, "
                        f"got {type(fn).__name__} {fn!r:.60}")
    x2, _, names, qd = _setup(model, x, q, sites)
    max_masks = check_positive_int(max_masks, "max_masks")
    if chunk_size is None:
        per = floats_per_mask or (sum(model.widths.values()) + model.n_classes) * 4
        chunk_size = _engine.chunk_items(per * x2.shape[0], cap=2**16)
    return replicated_expectation(
        model, x2, q, 1, _SumsOf(fn), sites=names,
        max_masks=max_masks, chunk_size=chunk_size, what=what, executor=executor,
    )


@dataclass(frozen=True)
class _SumsOf:
    """``fn(traces[0], prob)`` checked to be a tuple of real arrays (a picklable wrapper).

    A user's ``fn`` that returns None or strings would otherwise fail deep in the reduction
    or be summed as text (issue 18's fuzz campaign); what the sums mean is ``fn``'s business.
    """

    fn: Callable[[Trace, Any], tuple[Any, ...]]

    def __call__(self, traces: list[Trace], prob: Any) -> tuple[Any, ...]:
        out = self.fn(traces[0], prob)
        if not isinstance(out, tuple) or not out:
            raise TypeError(f"fn must return a non-empty tuple of partial-sum arrays, got "
                            f"{type(out).__name__}")
        for i, a in enumerate(out):
            kind = getattr(getattr(a, "dtype", None), "kind", None)
            ok = kind in tuple("fiub") if kind is not None else hasattr(a, "shape")
            if not ok and not isinstance(a, int | float):
                raise TypeError(f"fn must return real partial sums; element {i} is "
                                f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        return out


@accepts_old_signature()
def replicated_expectation(
    model: Model,
    x: Any,
    q: Any,
    copies: int,
    fn: Callable[[list[Trace], Any], tuple[Any, ...]],
    /,
    *,
    sites: Iterable[str] | str | None = None,
    max_masks: int = MAX_MASKS,
    chunk_size: int | None = None,
    what: str = "this joint expectation",
    executor: Executor | None = None,
) -> tuple[Any, ...]:
    """Like :func:`expectation` over ``copies`` independent draws of the masks jointly.

    ``fn(traces, prob)`` gets one trace per copy (the same ``B`` joint masks) and returns
    probability-weighted partial sums.  This is what makes the DROPOUT_k and ``ξ̃`` identities
    (Alg. 1, Sec. 3.1) checkable exactly: ``2^(copies·Σd)`` joint masks.  ``chunk_size``
    defaults to the engine's budget for a per-example gradient per copy.
    """
    x2, _, names, qd = _setup(model, x, q, sites)
    copies = check_positive_int(copies, "copies")
    # refuse with the user's site names (the copies' internal names ``site#j`` stay inside)
    label = {s: s if copies == 1 else f"{s} (×{copies} copies)" for s in names}
    _engine.check_mask_count(
        {label[s]: copies * model.widths[s] for s in names}, {label[s]: qd[s] for s in names},
        check_positive_int(max_masks, "max_masks"), what,
    )
    rep = {f"{s}#{j}": model.widths[s] for j in range(copies) for s in names}
    qrep = {f"{s}#{j}": qd[s] for j in range(copies) for s in names}
    if chunk_size is None:
        per = 4 * copies * (model.n_params + sum(model.widths.values()) + model.n_classes)
        chunk_size = _engine.chunk_items(per * x2.shape[0], cap=2**16)

    def one(eta: dict[str, Any], prob: Any) -> tuple[Any, ...]:
        traces = [
            model.trace(x2, {s: eta[f"{s}#{j}"][:, None, :] for s in names})
            for j in range(copies)
        ]
        return tuple(fn(traces, prob))

    return _engine.enumerate_sum(
        rep, qrep, one, chunk_size=check_positive_int(chunk_size, "chunk_size"),
        max_masks=max_masks, xp=model.xp, dtype=model.dtype, what=what, executor=executor,
    )


def _weighted_sum(prob: Any, v: Any, xp: Any) -> Any:
    # Σ_b p_b v_b over the leading mask axis, as one contraction
    return xp.tensordot(prob, v, axes=1)


def _squeeze(a: Any, single: bool) -> Any:
    return a[0, ...] if single else a


def _fast_plan(
    model: Model, names: tuple[str, ...], qd: dict[str, float], method: str, max_masks: int,
    what: str, gradient: bool = False,
) -> _fastenum.FastPlan | None:
    """The fast path for ``method`` (None: batched), after the same mask-count refusal."""
    fp = _fastenum.plan(model, names, qd, method, what, gradient=gradient)
    if fp is not None:
        # the limit and its message are the batched engine's, checked before any work
        _engine.check_mask_count(
            {s: model.widths[s] for s in names}, qd,
            check_positive_int(max_masks, "max_masks"), what,
        )
    return fp


def _sharded_site(model: Model, fp: Any, qd: dict[str, float], executor: Any) -> bool:
    """An executor is in effect and one wide site can be sharded by mask index."""
    if _engine.active_executor(executor) is None:
        return False
    from dropcheck.parallel import split_applies

    return split_applies(model, fp, qd)


def _check_targets(model: Model, y: Any, x2: Any) -> Any:
    """``model.check_y`` for ``x2``'s examples, and per-step targets' steps against ``x2``'s.

    An LSTM's targets ``(n, T)`` must have ``x``'s ``T`` steps: the fast enumerations reshape
    by ``x`` before any loss sees the targets (defect 13 of issue 18).
    """
    y2 = model.check_y(y, x2.shape[0])
    if model.loss.name == "token_cross_entropy" and tuple(y2.shape) != tuple(x2.shape):
        raise ValueError(f"y must have shape {tuple(x2.shape)} (one target per example and "
                         f"step, as x), got {tuple(y2.shape)}")
    return y2


@accepts_old_signature()
def expected_loss(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
    method: str = "auto",
    executor: Executor | None = None,
) -> Any:
    """``E_η ℓ(F(x, η), y)`` exactly, per example: ``(n,)`` (scalar for one example).

    ``method``: ``"batched"`` pushes every mask through the network; ``"factorized"`` (the last
    dropping site feeds the decoder; cross-entropy or squared loss) and ``"outer_sum"`` (it
    feeds any affine map; ``"gray"``, deprecated, is the same) enumerate that site by the block
    kernels of :mod:`dropcheck._fastenum`; ``"auto"`` (default) takes the fastest that applies.
    All give the same value up to rounding.  ``executor`` maps the chunks (default serial).
    """
    x2, single, names, qd = _setup(model, x, q, sites)
    y2 = _check_targets(model, y, x2)
    xp = model.xp
    fp = _fast_plan(model, names, qd, method, max_masks, "expected_loss")
    if fp is not None:
        if _sharded_site(model, fp, qd, executor):  # docs/parallel.md
            from dropcheck.parallel import split_site_loss

            return _squeeze(split_site_loss(
                model, x2, y2, qd, fp, clean=False, chunk_size=chunk_size,
                executor=_engine.get_executor(executor)), single)
        return _squeeze(_fastenum.expected_loss(model, x2, y2, qd, fp, chunk_size=chunk_size,
                                                executor=executor), single)
    (s,) = expectation(
        model, x2, q,
        lambda tr, p: (_weighted_sum(p, model.loss.value(tr.logits, y2), xp),),
        sites=names, chunk_size=chunk_size, max_masks=max_masks,
        what="expected_loss", executor=executor,
    )
    return _squeeze(s, single)


@accepts_old_signature()
def explicit_regularizer(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
    method: str = "auto",
    executor: Executor | None = None,
) -> Any:
    """``R_drop(F, x) = E_η ℓ(F(x, η)) − ℓ(F(x))`` exactly, per example ``(n,)``.

    ``method`` and ``executor`` as in :func:`expected_loss`.
    """
    x2, single, names, qd = _setup(model, x, q, sites)
    y2 = _check_targets(model, y, x2)
    xp = model.xp
    fp = _fast_plan(model, names, qd, method, max_masks, "explicit_regularizer")
    if fp is not None and _sharded_site(model, fp, qd, executor):  # docs/parallel.md
        from dropcheck.parallel import split_site_loss

        return _squeeze(split_site_loss(
            model, x2, y2, qd, fp, clean=True, chunk_size=chunk_size,
            executor=_engine.get_executor(executor)), single)
    if fp is not None:
        r = _fastenum.expected_loss(model, x2, y2, qd, fp, clean=True, chunk_size=chunk_size,
                                    executor=executor)
        return _squeeze(r, single)
    clean = model.loss.value(model.trace(x2).logits[0, ...], y2)
    # subtract the clean loss inside the sum: Σ p (ℓ_m − ℓ) keeps the small difference accurate
    (s,) = expectation(
        model, x2, q,
        lambda tr, p: (_weighted_sum(p, model.loss.value(tr.logits, y2) - clean, xp),),
        sites=names, chunk_size=chunk_size, max_masks=max_masks,
        what="explicit_regularizer", executor=executor,
    )
    return _squeeze(s, single)


@accepts_old_signature()
def loss_gradients(model: Model, tr: Trace, y: Any, /) -> Any:
    """Per-draw, per-example flat loss gradients ``∇_W ℓ(F(x, η))``, ``(B, n, P)``."""
    _, g = model.backward(tr, model.loss.grad(tr.logits, y)[None, ...], params=True)
    return g[0, ...]


def _grad_floats(model: Model) -> int:
    return 4 * model.n_params + 4 * (sum(model.widths.values()) + model.n_classes)


@accepts_old_signature()
def expected_gradient(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
    method: str = "auto",
    executor: Executor | None = None,
) -> Any:
    """``∇_W ℓ_drop(F, x) = E_η ∇_W ℓ(F(x, η))`` exactly, per example ``(n, P)``.

    ``method``: ``"factorized"`` (the last dropping site feeds the decoder and the model gives
    the pullback below it: the softmax moments ``E[p]``, ``E[m_k p]`` from one product per
    chunk, no per-mask backward), ``"batched"``, or ``"auto"`` (factorized where it applies).
    The outer-sum method has no gradient.
    """
    x2, single, names, qd = _setup(model, x, q, sites)
    y2 = _check_targets(model, y, x2)
    xp = model.xp
    if _fastenum.normalize_method(method) == "outer_sum":
        raise ValueError(f"method={method!r} computes losses only; use 'auto', 'factorized' or "
                         "'batched' for expected_gradient")
    fp = _fast_plan(model, names, qd, method, max_masks, "expected_gradient", gradient=True)
    if fp is not None:
        return _squeeze(_fastenum.expected_gradient(
            model, x2, y2, qd, fp, chunk_size=chunk_size, executor=executor), single)
    (s,) = expectation(
        model, x2, q, lambda tr, p: (_weighted_sum(p, loss_gradients(model, tr, y2), xp),),
        sites=names, floats_per_mask=_grad_floats(model), chunk_size=chunk_size,
        max_masks=max_masks, what="expected_gradient", executor=executor,
    )
    return _squeeze(s, single)


@accepts_old_signature()
def gradient_noise_cov(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    directions: Any = None,
    sites: Iterable[str] | str | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
    executor: Executor | None = None,
) -> Any:
    """``Cov_η(ξ_drop)`` exactly (eq. 3.3), per example ``(n, P, P)``.

    With ``directions`` ``V`` of shape ``(P, k)`` the covariance of ``Vᵀ ξ_drop``, ``(n, k, k)``.
    Computed as ``E[(g−s)(g−s)ᵀ] − (E[g]−s)(E[g]−s)ᵀ`` with the shift ``s`` the gradient without
    dropout, so the subtraction does not cancel the mean's magnitude.
    """
    x2, single, names, _ = _setup(model, x, q, sites)
    y2 = _check_targets(model, y, x2)
    xp = model.xp
    P = model.n_params
    directions = check_directions(directions, xp, P)
    shift = loss_gradients(model, model.trace(x2), y2)[0, ...]  # (n, P)

    def fn(tr: Trace, p: Any) -> tuple[Any, Any]:
        d = loss_gradients(model, tr, y2) - shift  # (B, n, P)
        if directions is not None:
            d = d @ directions
        dt = xp.permute_dims(d, (1, 2, 0))  # (n, k, B)
        return _weighted_sum(p, d, xp), (dt * p) @ xp.permute_dims(d, (1, 0, 2))

    m1, m2 = expectation(
        model, x2, q, fn, sites=names, floats_per_mask=_grad_floats(model),
        chunk_size=chunk_size, max_masks=max_masks, what="gradient_noise_cov",
        executor=executor,
    )
    cov = m2 - m1[:, :, None] * m1[:, None, :]
    return _squeeze(cov, single)


@accepts_old_signature(positional=("k",))
def dropout_k_cov(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    k: int,
    directions: Any = None,
    sites: Iterable[str] | str | None = None,
    chunk_size: int | None = None,
    max_masks: int = MAX_MASKS,
) -> Any:
    """Covariance of the DROPOUT_k mini-batch gradient (Alg. 1), ``(P, P)`` (or ``(k', k')``).

    The gradient ``(1/m) Σ_i (1/k) Σ_j ∇_W ℓ(F(x_i, η_ij))`` with independent masks has
    covariance ``(1/(m² k)) Σ_i Cov(ξ_drop)(x_i)``.
    """
    k = check_positive_int(k, "k")
    x2, _, _, _ = _setup(model, x, q, sites)
    cov = gradient_noise_cov(
        model, x2, y, q, directions=directions, sites=sites, chunk_size=chunk_size,
        max_masks=max_masks,
    )
    xp = model.xp
    m = x2.shape[0]
    return xp.sum(cov, axis=0) / (m * m * k)
