"""Dropout's implicit regularizer: gradient noise, DROPOUT_k, noise injection, Algorithm 2.

Wei, Kakade & Ma, "The Implicit and Explicit Regularization Effects of Dropout", ICML 2020
(paper-notes, "Objectives" and "Implicit regularizer").  Noise η is the paper's (Sec. 2):
``η_k = −1`` w.p. ``q``, ``q/(1−q)`` w.p. ``1−q``; a site's vector becomes ``(1+η)⊙h``.

- :func:`xi_drop` — samples of the gradient noise (3.3),
  ``ξ_drop(F,x,η) = ∇_W ℓ(F(x,η)) − ∇_W ℓ_drop(F,x)``;
- :func:`xi_tilde` — the two-draw difference ``ξ̃_drop = ∇_W ℓ(F(x,η¹)) − ∇_W ℓ(F(x,η²))``
  (Sec. 3.1), ``Cov(ξ̃) = 2 Cov(ξ_drop)`` and no mean is needed;
- :func:`xi_approx`, :func:`xi_approx_at` — (4.5)/(4.6),
  ``ξ_approx(F,x,{η_i}) = ∇_W Σ_i J_loss,i(x) (η_i ⊙ h_i(x))``, the gradient taken through
  both ``J_loss,i`` and ``h_i`` with η held fixed; Bernoulli η or Rademacher signs scaled by
  ``sqrt(q/(1−q))`` (footnote 6);
- :func:`xi_approx_cov` — its exact covariance ``(q/(1−q)) Σ_k a_k a_kᵀ`` (it is linear in η);
- :func:`dropout_k_gradient` — Algorithm 1 (eq. 3.1) on a mini-batch;
- :func:`noise_injected_gradient` — Sec. 3.1 (``+ sqrt(½(1−1/k)) ξ̃_drop``) and
  Algorithm 4 (``+ sqrt(1−1/k) ξ_approx``);
- :func:`update_direction`, :func:`update` — the Algorithm 2 step.

**Per example and per batch.**  The paper defines every noise per example ``x``; a mini-batch
gradient is the mean over its examples, each with its own independent masks.  So the ``ξ``
functions return one flat vector of length ``P`` (parameters flattened in the model's order,
:meth:`~dropcheck.models.Model.flatten_params`) *per example*: shape ``(n, P)``, or ``(P,)``
for a single example ``x`` of shape ``(d0,)``; ``reduction="mean"`` averages over the
examples instead (the noise of the mini-batch gradient), shape ``(P,)``.  ``samples=N`` adds a
leading axis of ``N`` independent samples (``(N, n, P)`` / ``(N, P)``).  The mini-batch
algorithms (:func:`dropout_k_gradient`, :func:`noise_injected_gradient`, :func:`update`) always
average over the examples, as Algorithms 1, 2 and 4 do.

**Sequence models.**  :func:`xi_approx` and :func:`xi_tilde` draw the noise of the model's
mask form (:meth:`~dropcheck.models.Model.sample_noise_for`: locked or per step), use the
model's context (an LSTM window's carried state and DropConnect mask,
:meth:`~dropcheck.models.Model.with_context`), and with ``reduction="sum"`` sum the gradients
over the examples inside the sweep (:meth:`~dropcheck.models.Model.param_gradient`,
``per_example=False``): ``([samples,] P)`` without any ``(n, P)`` array, what a corpus
evaluation at AWD-LSTM sizes needs.  ``chunk`` sets the draws per sweep (default: the memory
budget).

``q`` is a float (all chosen ``sites``) or a dict ``site -> q``; ``sites`` defaults to every
dropout site of the model.  ``rng`` is a random generator (numpy ``Generator`` or a device
generator), an integer seed, or None (fresh entropy).  Every computation goes through the
model's site protocol (trace / tangent / backward / adjoint_tangent) and
:mod:`dropcheck.exact`; arrays come back in the model's namespace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dropcheck import _engine
from dropcheck._api import accepts_old_signature, resolve_rng
from dropcheck._validate import (
    check_array,
    check_array_kind,
    check_choice,
    check_directions,
    check_finite,
    check_finite_scalar,
    check_nonnegative,
    check_positive_int,
    check_q_sites,
)
from dropcheck.exact import MAX_MASKS, expected_gradient, loss_gradients
from dropcheck.explicit.taylor import strength
from dropcheck.models._base import Model
from dropcheck.noise import sample_eta, sample_rademacher

__all__ = [
    "xi_drop",
    "xi_tilde",
    "xi_approx",
    "xi_approx_at",
    "xi_approx_cov",
    "dropout_k_gradient",
    "noise_injected_gradient",
    "update_direction",
    "update",
]

_NOISES = ("bernoulli", "rademacher")
_REDUCTIONS = ("none", "mean")
_SUM_REDUCTIONS = ("none", "mean", "sum")

#: Memory budget of the per-draw intermediates of one chunk of draws (bytes): the engine's.
_CHUNK_BYTES = _engine.CHUNK_BYTES


# ----- shared plumbing -----
def _rng(rng: Any) -> Any:
    # a generator object is used as is (numpy or a device generator); a seed of any accepted
    # form seeds numpy's; None is the fixed default seed
    return resolve_rng(rng)


def _setup(
    model: Model, x: Any, y: Any, q: Any, sites: Iterable[str] | str | None
) -> tuple[Any, bool, Any, tuple[str, ...], dict[str, float]]:
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    names = model.check_sites(sites)
    return x2, single, y2, names, check_q_sites(q, names)


def _check_draws(samples: int | None) -> int:
    return 1 if samples is None else check_positive_int(samples, "samples")


def _chunk(model: Model, n: int, per_draw: int) -> int:
    """Draws per chunk so that ``per_draw`` copies of the per-example arrays fit the budget."""
    floats = per_draw * n * (model.n_params + 2 * sum(model.widths.values()) + model.n_classes)
    return _engine.chunk_items(floats)


def _sample(
    gen: Any, model: Model, qd: Mapping[str, float], b: int, n: int, kind: str
) -> dict[str, Any]:
    """``b`` independent draws of the noise for each of ``n`` examples: ``(b, n, d)`` per site."""
    sampler = sample_eta if kind == "bernoulli" else sample_rademacher
    return {
        s: sampler(gen, (b, n, model.widths[s]), q, xp=model.xp, dtype=model.dtype)
        for s, q in qd.items()
    }


def _map_draws(
    model: Model, n: int, draws: int, per_draw: int, fn: Callable[[int], Any]
) -> Any:
    """``fn(b)`` for chunks of ``b`` draws (in order), concatenated along the leading axis."""
    return _engine.map_draws(fn, draws, _chunk(model, n, per_draw), model.xp)


def _grads(model: Model, x2: Any, y2: Any, noise: Mapping[str, Any]) -> Any:
    """``∇_W ℓ(F(x, η))`` per draw and example, ``(B, n, P)``."""
    return loss_gradients(model, model.trace(x2, noise), y2)


def _shape_out(
    a: Any, single: bool, reduction: str, draws: int | None, xp: Any
) -> Any:
    """``(B, n, P)`` -> the documented shape for ``reduction`` and ``draws``."""
    if reduction == "mean":
        a = xp.mean(a, axis=1)
    elif single:
        a = a[:, 0, ...]
    return a[0, ...] if draws is None else a


def _noise_for(
    gen: Any, model: Model, x2: Any, qd: Mapping[str, float], b: int, kind: str
) -> dict[str, Any]:
    """``b`` draws of the noise in the model's mask form (per step: :meth:`sample_noise_for`)."""
    if model.mask == "per_step":
        return model.sample_noise_for(gen, x2, qd, b, kind=kind)
    return _sample(gen, model, qd, b, x2.shape[0], kind)


def _draws_in(model: Model, n: int, draws: int, per_draw: int, fn: Callable[[int], Any],
              chunk: int | None) -> Any:
    """:func:`_map_draws`, or ``chunk`` draws per call when the caller sets it."""
    if chunk is None:
        return _map_draws(model, n, draws, per_draw, fn)
    from dropcheck import _engine

    return _engine.map_draws(fn, draws, check_positive_int(chunk, "chunk"), model.xp)


# ----- gradient noise -----
@accepts_old_signature(positional=("rng", "draws"), renamed={"draws": "samples"})
def xi_drop(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int | None = None,
    rng: Any = None,
    mean: Any = None,
    reduction: str = "none",
    max_masks: int = MAX_MASKS,
) -> Any:
    r"""Samples of the dropout gradient noise (eq. 3.3), per example.

    .. math:: ξ_{drop}(F, x, η) = ∇_W ℓ(F(x, η)) − ∇_W ℓ_{drop}(F, x),
              \quad ℓ_{drop}(F, x) = E_η ℓ(F(x, η)).

    The mean ``∇_W ℓ_drop`` is needed: by default it is computed exactly with
    :func:`dropcheck.exact.expected_gradient`, which **enumerates all** ``2^Σd_i`` masks (it
    refuses past ``max_masks``).  For a larger net pass ``mean=``, e.g. the value of
    :func:`dropcheck.montecarlo.expected_gradient` from independent draws (the samples are then
    centred on an estimate: their covariance is ``(1 + 1/samples) Cov(ξ_drop)``), or use
    :func:`xi_tilde`, which needs no mean.

    Parameters
    ----------
    model, x, y, q
        Network, inputs ``(n, d0)`` or ``(d0,)``, targets, drop probability.
    samples
        Number of independent samples (a leading axis); None for one sample without it
        (formerly ``draws``).
    rng
        Int seed, ``SeedSequence``, generator, or None for the fixed default seed.
    mean
        ``∇_W ℓ_drop`` per example, ``(n, P)`` (``(P,)`` for one example); None computes it.
    sites
        Dropout sites (default all).
    reduction
        ``"none"``: per example ``(n, P)``; ``"mean"``: the mini-batch noise, mean over the
        examples (independent masks per example), ``(P,)``.
    max_masks
        Limit of the exact enumeration of the mean.

    Returns ``([samples,] n, P)`` (``([samples,] P)`` for ``reduction="mean"`` or one example).
    """
    x2, single, y2, names, qd = _setup(model, x, y, q, sites)
    reduction = check_choice(reduction, _REDUCTIONS, "reduction")
    nd = _check_draws(samples)
    xp, n, P = model.xp, x2.shape[0], model.n_params
    if mean is None:
        mu = expected_gradient(model, x2, y2, qd, sites=names, max_masks=max_masks)
    else:
        mu = xp.asarray(mean)
        check_array_kind(mu, xp, "mean")
        check_finite(mu, xp, "mean")
        if mu.shape != (n, P) and not (n == 1 and mu.shape == (P,)):
            raise ValueError(
                f"mean must be the expected gradient per example, shape ({n}, {P}), got "
                f"{mu.shape}"
            )
    gen = _rng(rng)

    def chunk(b: int) -> Any:
        return _grads(model, x2, y2, _sample(gen, model, qd, b, n, "bernoulli")) - mu

    out = _map_draws(model, n, nd, 1, chunk)
    return _shape_out(out, single, reduction, samples, xp)


@accepts_old_signature(positional=("rng", "draws"), renamed={"draws": "samples"})
def xi_tilde(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int | None = None,
    rng: Any = None,
    reduction: str = "none",
    chunk: int | None = None,
) -> Any:
    r"""Samples of the two-draw difference (Sec. 3.1), per example.

    .. math:: \tilde ξ_{drop}(F, x, η^1, η^2) = ∇_W ℓ(F(x, η^1)) − ∇_W ℓ(F(x, η^2))

    with independent ``η¹, η²``: mean exactly 0 and ``Cov(ξ̃) = 2 Cov(ξ_drop)`` (claim D2), so
    ``Cov(ξ̃)/2`` estimates ``Cov(ξ_drop)`` from draws without the mean ``∇ℓ_drop`` — the
    sampling route for nets too large to enumerate.  Arguments and shapes as :func:`xi_drop`;
    ``reduction="sum"``: summed over the examples inside the sweep, ``([samples,] P)`` (module
    doc).  A chunk of ``b`` pairs draws ``2b`` masks; per example draw ``2j`` is paired with
    ``2j+1``, summed draw ``j`` with ``b+j`` (the pairs of :mod:`dropcheck.lm`'s corpus runs).
    """
    x2, single, y2, _, qd = _setup(model, x, y, q, sites)
    reduction = check_choice(reduction, _SUM_REDUCTIONS, "reduction")
    nd = _check_draws(samples)
    xp, n = model.xp, x2.shape[0]
    gen = _rng(rng)

    def one(b: int) -> Any:
        noise = _noise_for(gen, model, x2, qd, 2 * b, "bernoulli")
        if reduction == "sum":
            tr = model.trace(x2, noise)
            g = model.param_gradient(tr, model.loss.grad(tr.logits, y2)[None, ...],
                                     per_example=False)[0, ...]  # (2b, P)
            return g[:b, ...] - g[b:, ...]
        g = _grads(model, x2, y2, noise)
        g = xp.reshape(g, (b, 2, *g.shape[1:]))
        return g[:, 0, ...] - g[:, 1, ...]

    out = _draws_in(model, 1 if reduction == "sum" else n, nd, 2, one, chunk)
    if reduction == "sum":
        return out[0, ...] if samples is None else out
    return _shape_out(out, single, reduction, samples, xp)


def _xi_approx_core(
    model: Model, x2: Any, y2: Any, tangents: Mapping[str, Any], per_example: bool = True
) -> Any:
    """``d/dε ∇_W ℓ(F(x, ετ))`` at ``ε = 0`` for noise tangents ``τ`` ``(K, n|1, [*X,] d)``.

    One forward-over-reverse sweep batched over the ``K`` directions: the tangent of the
    reverse sweep of ``g = ∇_F ℓ`` with ``ġ = H_out F_dot``
    (:meth:`~dropcheck.models.Model.param_adjoint_tangent` of noise tangents).  Returns
    ``(K, n, P)``, or summed over the examples inside the sweep ``(K, P)``.
    """
    tr = model.trace(x2)
    tan = model.tangent(tr, noise_tangents={s: t[:, None, ...] for s, t in tangents.items()})
    g = model.loss.grad(tr.logits, y2)
    g_dot = model.loss.hvp(tr.logits, y2, tan.logits)
    a = model.param_adjoint_tangent(tr, tan, g, g_dot, per_example=per_example)
    return a[:, 0, ...]


@accepts_old_signature()
def xi_approx_at(
    model: Model, x: Any, y: Any, eta: Mapping[str, Any], /, *, reduction: str = "none"
) -> Any:
    r"""``ξ_approx`` (4.5)/(4.6) at given noise ``η``, per example.

    .. math:: ξ_{approx}(F, x, \{η_i\}) = ∇_W \sum_i J_{loss,i}(x)\,(η_i ⊙ h_i(x))

    with the gradient through both ``J_loss,i`` and ``h_i`` and η held fixed; equivalently
    ``d/dε ∇_W ℓ(F(x, εη))`` at ``ε = 0``, which is how it is computed (one
    forward-over-reverse sweep, all draws batched).  Linear in η.

    ``eta`` maps sites to arrays ``(B, n, d)`` (``B`` draws), ``(n, d)``, or for one example
    ``(B, d)`` / ``(d,)``; sites not named get no noise.  Returns ``(B, n, P)`` / ``(n, P)``
    (without ``n`` for one example; ``reduction="mean"`` averages over the examples).
    """
    reduction = check_choice(reduction, _REDUCTIONS, "reduction")
    xp = model.xp
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    n = x2.shape[0]
    if not eta:
        raise ValueError("eta must give the noise of at least one site")
    model.check_sites(tuple(eta), "eta")
    arrs = {s: check_array(e, xp, f"eta[{s!r}]") for s, e in eta.items()}
    batched = any(e.ndim == (2 if single else 3) for e in arrs.values())
    norm = {}
    for s, e in arrs.items():
        if single:
            e = e[..., None, :]
        if e.ndim == 2:
            e = e[None, ...]
        d = model.widths[s]
        if e.ndim != 3 or e.shape[1:] != (n, d):
            want = f"(B, {d}) or ({d},)" if single else f"(B, {n}, {d}) or ({n}, {d})"
            raise ValueError(f"eta[{s!r}] must have shape {want}, got {arrs[s].shape}")
        norm[s] = e
    b = max(e.shape[0] for e in norm.values())
    norm = {s: xp.broadcast_to(e, (b, n, e.shape[-1])) for s, e in norm.items()}
    out = _xi_approx_core(model, x2, y2, norm)
    return _shape_out(out, single, reduction, b if batched else None, xp)


@accepts_old_signature(positional=("rng", "noise", "sites", "draws"),
                       renamed={"draws": "samples"})
def xi_approx(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int | None = None,
    rng: Any = None,
    noise: str = "bernoulli",
    reduction: str = "none",
    chunk: int | None = None,
) -> Any:
    r"""Samples of ``ξ_approx`` (4.5)/(4.6), the paper's approximation of ``ξ_drop``.

    .. math:: ξ_{approx}(F, x, \{η_i\}) = ∇_W \sum_i J_{loss,i}(x)\,(η_i ⊙ h_i(x))

    ``noise="bernoulli"`` draws the paper's η; ``"rademacher"`` draws signs scaled by
    ``sqrt(q/(1−q))`` (footnote 6): the same covariance :func:`xi_approx_cov`, since
    ``ξ_approx`` is linear in η and only ``E[ηηᵀ] = (q/(1−q)) I`` enters.  Mean exactly 0.
    Shapes as :func:`xi_drop`: ``([samples,] n, P)``, or ``([samples,] P)`` for one example,
    ``reduction="mean"`` or ``reduction="sum"`` (summed over the examples inside the sweep;
    module doc).  ``chunk``: draws per sweep (default: the memory budget).
    """
    x2, single, y2, _, qd = _setup(model, x, y, q, sites)
    noise = check_choice(noise, _NOISES, "noise")
    reduction = check_choice(reduction, _SUM_REDUCTIONS, "reduction")
    nd = _check_draws(samples)
    xp, n = model.xp, x2.shape[0]
    gen = _rng(rng)
    # the mean and the sum are summed inside the sweep: no (n, P) array
    per_example = reduction == "none"

    def one(b: int) -> Any:
        eta = _noise_for(gen, model, x2, qd, b, noise)
        return _xi_approx_core(model, x2, y2, eta, per_example)

    out = _draws_in(model, n if per_example else 1, nd, 2, one, chunk)
    if not per_example:
        out = out / n if reduction == "mean" else out
        return out[0, ...] if samples is None else out
    return _shape_out(out, single, reduction, samples, xp)


@accepts_old_signature(positional=("sites",))
def xi_approx_cov(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    directions: Any = None,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> Any:
    r"""Exact covariance of ``ξ_approx`` (4.5)/(4.6), per example.

    ``ξ_approx = Σ_k a_k η_k`` is linear in η, with ``a_k`` the response to the unit noise
    tangent ``e_k`` (unit ``k`` of a site), and the ``η_k`` are independent with variance
    ``q/(1−q)`` (Bernoulli or scaled Rademacher alike), so

    .. math:: \mathrm{Cov}(ξ_{approx}) = \sum_{sites\ i} \frac{q_i}{1-q_i}
              \sum_{k ≤ d_i} a_k a_k^T .

    All ``a_k`` of a site are one batched sweep (``chunk_size`` units at a time).  Returns
    ``(n, P, P)`` (``(P, P)`` for one example); with ``directions`` ``V`` ``(P, r)`` the
    covariance of ``Vᵀ ξ_approx``, ``(n, r, r)``; ``reduction="mean"`` gives the covariance of
    the mini-batch mean, ``(1/n²) Σ_i Cov_i``.
    """
    if model.mask != "locked":
        # the covariance sums over every unit's mask entry once; per-step masks have one per
        # step (defect 13 of issue 18: they failed with numpy's "axes don't match array")
        raise ValueError(
            f"xi_approx_cov enumerates one mask entry per unit of a site (mask='locked'); this "
            f"model has mask={model.mask!r}: use model.with_mask('locked'), or estimate the "
            f"covariance from xi_approx(..., samples=...) draws, which take per-step masks"
        )
    x2, single, y2, names, qd = _setup(model, x, y, q, sites)
    reduction = check_choice(reduction, _REDUCTIONS, "reduction")
    xp, n, P = model.xp, x2.shape[0], model.n_params
    V = check_directions(directions, xp, P)
    step = _chunk(model, n, 2) if chunk_size is None else check_positive_int(
        chunk_size, "chunk_size"
    )
    r = P if V is None else V.shape[1]
    cov = xp.zeros((n, r, r), dtype=model.dtype)
    for s in names:
        if qd[s] == 0.0:
            continue
        d = model.widths[s]
        eye = xp.eye(d, dtype=model.dtype)
        for j in range(0, d, step):
            e = eye[j : min(j + step, d), None, :]  # (m, 1, d): shared by the examples
            a = _xi_approx_core(model, x2, y2, {s: e})  # (m, n, P)
            if V is not None:
                a = a @ V
            at = xp.permute_dims(a, (1, 2, 0))  # (n, r, m)
            cov = cov + (qd[s] / (1.0 - qd[s])) * (at @ xp.permute_dims(a, (1, 0, 2)))
    if reduction == "mean":
        return xp.sum(cov, axis=0) / (n * n)
    return cov[0, ...] if single else cov


# ----- Algorithms 1 and 4, Sec. 3.1 -----
def _dropout_k_chunk(
    model: Model, x2: Any, y2: Any, qd: Mapping[str, float], k: int, b: int, gen: Any
) -> Any:
    """``b`` draws of the DROPOUT_k mini-batch gradient, ``(b, P)``.

    When the ``b·k`` masks do not fit the chunk budget (``_map_draws`` then gives ``b = 1``),
    each draw's ``k`` masks are summed in chunks of the budget through the engine (serially:
    they share ``gen``), so memory stays bounded whatever ``k`` (defect 10 of issue 18).
    """
    xp, n = model.xp, x2.shape[0]
    per = _chunk(model, n, 1)
    if b * k <= per:
        g = _grads(model, x2, y2, _sample(gen, model, qd, b * k, n, "bernoulli"))
        g = xp.reshape(g, (b, k, *g.shape[1:]))
        return xp.mean(g, axis=(1, 2))

    def masks(c: _engine.Chunk) -> Any:
        g = _grads(model, x2, y2, _sample(gen, model, qd, c.size, n, "bernoulli"))
        return xp.sum(g, axis=(0, 1))

    serial = _engine.SerialExecutor()
    return xp.stack([_engine.reduce_chunks(masks, k, per, executor=serial) / (k * n)
                     for _ in range(b)])


@accepts_old_signature(positional=("k", "rng"), renamed={"draws": "samples"})
def dropout_k_gradient(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    k: int,
    sites: Iterable[str] | str | None = None,
    samples: int | None = None,
    rng: Any = None,
) -> Any:
    r"""The DROPOUT_k mini-batch gradient (Algorithm 1, eq. 3.1).

    .. math:: g = ∇_W \frac1m \sum_{i ≤ m} \hat ℓ_{drop,k}(F, x_i, \{η_{ij}\}),
              \quad \hat ℓ_{drop,k} = \frac1k \sum_{j ≤ k} ℓ(F(x_i, η_{ij}))

    with ``m·k`` independent masks.  Unbiased for the mean of ``∇ℓ_drop`` over the batch,
    covariance ``(1/(m² k)) Σ_i Cov(ξ_drop)(x_i)`` (claim D1;
    :func:`dropcheck.exact.dropout_k_cov`).  ``k = 1`` is standard dropout.  Returns ``(P,)``,
    or ``(samples, P)`` independent draws.
    """
    x2, _, y2, _, qd = _setup(model, x, y, q, sites)
    k = check_positive_int(k, "k")
    nd = _check_draws(samples)
    gen = _rng(rng)
    out = _map_draws(
        model, x2.shape[0], nd, k, lambda b: _dropout_k_chunk(model, x2, y2, qd, k, b, gen)
    )
    return out[0, ...] if samples is None else out


@accepts_old_signature(positional=("k", "rng", "noise"), renamed={"draws": "samples"})
def noise_injected_gradient(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    k: int,
    sites: Iterable[str] | str | None = None,
    samples: int | None = None,
    rng: Any = None,
    noise: str = "exact",
    approx_noise: str = "bernoulli",
) -> Any:
    r"""DROPOUT_k with the noise of DROPOUT_1 put back (Sec. 3.1; Algorithm 4).

    ``noise="exact"`` (Sec. 3.1):

    .. math:: g = g_k + \sqrt{\tfrac12 (1 − 1/k)}\; \frac1m \sum_i \tilde ξ_{drop}(x_i)

    has exactly the covariance of DROPOUT_1: ``Cov/k + ½(1−1/k)·2 Cov = Cov`` per example
    (claim D3).  ``noise="approx"`` (Algorithm 4, appendix C):

    .. math:: g = g_k + \sqrt{1 − 1/k}\; \frac1m \sum_i ξ_{approx}(x_i)

    with covariance ``Cov(ξ_drop)/k + (1−1/k) Cov(ξ_approx)`` per example (claim I2);
    ``approx_noise`` picks Bernoulli η or scaled Rademacher signs for ``ξ_approx``.  ``g_k`` is
    :func:`dropout_k_gradient`; all masks are independent.  Returns ``(P,)`` or
    ``(samples, P)``.
    """
    x2, _, y2, _, qd = _setup(model, x, y, q, sites)
    k = check_positive_int(k, "k")
    noise = check_choice(noise, ("exact", "approx"), "noise")
    approx_noise = check_choice(approx_noise, _NOISES, "approx_noise")
    nd = _check_draws(samples)
    xp, n = model.xp, x2.shape[0]
    gen = _rng(rng)
    c = math.sqrt(0.5 * (1.0 - 1.0 / k)) if noise == "exact" else math.sqrt(1.0 - 1.0 / k)

    def chunk(b: int) -> Any:
        g = _dropout_k_chunk(model, x2, y2, qd, k, b, gen)
        if k == 1:  # the injected noise has coefficient 0
            return g
        if noise == "exact":
            t = _grads(model, x2, y2, _sample(gen, model, qd, 2 * b, n, "bernoulli"))
            t = xp.reshape(t, (b, 2, *t.shape[1:]))
            extra = xp.mean(t[:, 0, ...] - t[:, 1, ...], axis=1)
        else:
            eta = _sample(gen, model, qd, b, n, approx_noise)
            extra = xp.mean(_xi_approx_core(model, x2, y2, eta), axis=1)
        return g + c * extra

    out = _map_draws(model, n, nd, k + 2, chunk)
    return out[0, ...] if samples is None else out


# ----- Algorithm 2 -----
ExplicitFn = Callable[[Model, Any, Any], Any]
ImplicitFn = Callable[[Model, Any, Any, Any], Any]


def _callable_vector(model: Model, value: Any, name: str) -> Any:
    """A user callable's return as a real finite ``(P,)`` array, else a clear error naming it.

    A ``(P, 1)`` return would broadcast every parameter into a matrix, and a scalar onto every
    parameter: only the documented flat ``(P,)`` shape is accepted (defect 8 of issue 18).
    """
    P = model.n_params
    if value is None:
        raise TypeError(f"{name} returned None; it must return a flat gradient of shape ({P},)")
    try:
        arr = check_array(value, model.xp, f"the value {name} returned")
    except TypeError:
        raise TypeError(f"{name} must return a flat gradient of shape ({P},) of real numbers, "
                        f"got {type(value).__name__} {value!r:.60}") from None
    if tuple(arr.shape) != (P,):
        raise ValueError(f"{name} must return a flat gradient of shape ({P},) (the model's "
                         f"parameters in flatten_params order), got shape {tuple(arr.shape)}")
    return arr


def _explicit_term(
    model: Model,
    x2: Any,
    y2: Any,
    qd: Mapping[str, float],
    explicit: str | ExplicitFn | None,
    lam1: float | None,
) -> Any:
    """``λ₁ ∇_W (1/m) Σ_i R(F, x_i)``, flat ``(P,)``, or None without an explicit term."""
    if explicit is None:
        return None
    if callable(explicit):
        if lam1 is None:
            strengths = {strength(v) for v in qd.values()}
            if len(strengths) != 1:
                raise ValueError(
                    "lam1 must be given for a callable explicit regularizer when q differs "
                    f"across sites ({dict(qd)}): the default q/(2(1−q)) is per site"
                )
            lam1 = strengths.pop()
        return lam1 * _callable_vector(model, explicit(model, x2, y2), "the explicit callable")
    check_choice(explicit, ("approx",), "explicit")
    from dropcheck import explicit as _explicit  # the R_approx gradient (4.4), sibling module

    if lam1 is not None:
        return lam1 * _explicit.r_approx_grad(model, x2, y2, sites=tuple(qd))
    # dropout-matching strength q_i/(2(1−q_i)) per site: group the sites sharing a strength
    groups: dict[float, list[str]] = {}
    for s, v in qd.items():
        if v > 0.0:
            groups.setdefault(strength(v), []).append(s)
    total = None
    for lam, group in groups.items():
        part = lam * _explicit.r_approx_grad(model, x2, y2, sites=tuple(group))
        total = part if total is None else total + part
    return total


@accepts_old_signature(positional=("rng",))
def update_direction(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    rng: Any = None,
    explicit: str | ExplicitFn | None = "approx",
    implicit: str | ImplicitFn | None = "approx",
    lam1: float | None = None,
    lam2: float | None = None,
    sites: Iterable[str] | str | None = None,
) -> Any:
    r"""The Algorithm 2 direction ``g`` (flat ``(P,)``) on the mini-batch ``x`` ``(m, d0)``.

    .. math:: g = \frac1m \sum_i ∇_W\big(ℓ(F(x_i)) + λ_1 R(F, x_i)\big)
              + \frac1m \sum_i λ_2\, ξ(F, x_i)

    ``ℓ(F(x_i))`` is the loss *without* dropout.

    explicit
        ``"approx"``: ``R = R_approx`` (4.4) through ``dropcheck.explicit.r_approx_grad``;
        a callable ``fn(model, x, y) -> (P,)`` returning ``∇_W (1/m) Σ_i R(F, x_i)``; or None.
    implicit
        ``"approx"`` / ``"rademacher"``: ``ξ = ξ_approx`` (4.5)/(4.6) with Bernoulli η or
        scaled Rademacher signs, independent per example; a callable
        ``fn(model, x, y, rng) -> (P,)`` returning ``(1/m) Σ_i ξ(F, x_i)``; or None.
    lam1, lam2
        Strengths ``≥ 0``.  Defaults: ``λ₁ = q/(2(1−q))`` (per site when ``q`` is a dict), the
        strength with which ``R_approx`` matches dropout's explicit regularizer, and ``λ₂ = 1``,
        with which ``ξ_approx`` matches its gradient noise.

    The built-in implicit term draws one noise per example from ``rng``:
    ``dc.noise.sample_eta(rng, (1, m, d_i), q_i)`` (``sample_rademacher`` for
    ``"rademacher"``), site by site in the model's site order.
    """
    x2, _, y2, _, qd = _setup(model, x, y, q, sites)
    lam1 = None if lam1 is None else check_nonnegative(lam1, "lam1")
    lam2 = 1.0 if lam2 is None else check_nonnegative(lam2, "lam2")
    if isinstance(implicit, str):
        implicit = check_choice(implicit, ("approx", "rademacher"), "implicit")
    elif implicit is not None and not callable(implicit):
        raise TypeError(
            f"implicit must be 'approx', 'rademacher', a callable or None, got {implicit!r}"
        )
    if explicit is not None and not (callable(explicit) or isinstance(explicit, str)):
        raise TypeError(f"explicit must be 'approx', a callable or None, got {explicit!r}")
    xp = model.xp
    g = xp.mean(_grads(model, x2, y2, {})[0, ...], axis=0)
    reg = _explicit_term(model, x2, y2, qd, explicit, lam1)
    if reg is not None:
        g = g + reg
    if implicit is not None and lam2 != 0.0:
        gen = _rng(rng)
        if callable(implicit):
            xi = _callable_vector(model, implicit(model, x2, y2, gen), "the implicit callable")
        else:
            kind = "bernoulli" if implicit == "approx" else "rademacher"
            eta = _sample(gen, model, qd, 1, x2.shape[0], kind)
            xi = xp.mean(_xi_approx_core(model, x2, y2, eta)[0, ...], axis=0)
        g = g + lam2 * xi
    return g


@accepts_old_signature(positional=("lr", "rng"))
def update(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    lr: float,
    rng: Any = None,
    explicit: str | ExplicitFn | None = "approx",
    implicit: str | ImplicitFn | None = "approx",
    lam1: float | None = None,
    lam2: float | None = None,
    sites: Iterable[str] | str | None = None,
) -> dict[str, Any]:
    """One Algorithm 2 step: new parameters ``W − lr·g`` (dict, the model's order).

    ``g`` is :func:`update_direction` (same arguments).  A training loop is
    ``model = model.with_params(update(model, xb, yb, q, lr, rng))``.
    """
    lr = check_finite_scalar(lr, "lr")
    g = update_direction(
        model, x, y, q, rng=rng, explicit=explicit, implicit=implicit, lam1=lam1, lam2=lam2,
        sites=sites,
    )
    step = model.unflatten_params(g)
    return {name: p - lr * step[name] for name, p in model.params.items()}
