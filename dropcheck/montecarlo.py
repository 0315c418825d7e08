"""Monte-Carlo counterparts of :mod:`dropcheck.exact`, for nets too large to enumerate.

Each function draws ``samples`` independent masks per example (paper noise η at the chosen
sites) from the caller's generator and returns an :class:`Estimate`: the value and its standard
error (the sample standard deviation over ``sqrt(samples)``).  Sums are taken around a shift
(the value without dropout) so the variance does not suffer cancellation.

Draws use keyed streams: draw ``t`` comes from block ``t // DRAW_BLOCK``'s child of a root
``SeedSequence`` (``rng`` as a seed, or entropy drawn from ``rng`` when it is a generator), so
the estimate is the same for any ``chunk_size``, on any executor (``executor=``, or a
``dropcheck.parallel.using(…)`` block) and any number of workers.

``rng`` is an int seed, a ``numpy.random.SeedSequence``, a generator, or None for the fixed
default seed (:data:`dropcheck._api.DEFAULT_SEED`); ``seed=`` is its deprecated alias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as _np

from dropcheck._api import accepts_old_signature, resolve_seed
from dropcheck._engine import Executor, active_executor, chunk_items, keyed_root, sample_sums
from dropcheck._validate import check_directions, check_positive_int, check_q_sites
from dropcheck.exact import loss_gradients
from dropcheck.models._base import Model, Trace
from dropcheck.noise import sample_eta

__all__ = [
    "Estimate",
    "expected_loss",
    "explicit_regularizer",
    "expected_gradient",
    "gradient_noise_cov",
]


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate: ``value``, its ``stderr`` (same shape), and the sample count."""

    value: Any
    stderr: Any
    samples: int

    def __iter__(self):  # allows ``value, stderr = estimate``
        return iter((self.value, self.stderr))


def _moments(
    model: Model,
    x: Any,
    q: Any,
    sites: Iterable[str] | str | None,
    samples: int,
    rng: Any,
    fn: Callable[[Trace], Any],
    shift: Any,
    chunk_size: int | None,
    executor: Executor | None = None,
) -> tuple[Any, Any, bool]:
    """Mean and standard error of ``fn`` over ``samples`` draws, from shifted moments.

    With ``v_t = fn(trace_t) − shift``: ``mean = shift + S₁/N`` and
    ``stderr = sqrt((S₂ − N·mean_v²)/((N−1)·N))`` with ``S_k = Σ_t v_t^k`` — the power sums of
    :func:`dropcheck._engine.sample_sums`, draws in chunks of the engine's budget (at most
    4096), noise ``(b, n, d)`` drawn site by site from one generator in chunk order.
    """
    samples = check_positive_int(samples, "samples", minimum=2)
    x2, single = model.check_x(x)
    names = model.check_sites(sites)
    qd = check_q_sites(q, names)
    # one SeedSequence for every seed form (5, np.int64(5), SeedSequence(5) alike), or the
    # caller's generator
    r = resolve_seed(rng)
    gen = _np.random.default_rng(r) if isinstance(r, _np.random.SeedSequence) else r
    xp = model.xp
    n = x2.shape[0]
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    else:
        # per draw and example: sites, logits and a flat gradient, a few copies each
        per = (sum(model.widths.values()) + model.n_classes + model.n_params) * 8
        chunk_size = chunk_items(per * n, cap=4096)

    def draw(b: int, g: Any = gen) -> Any:
        noise = {
            s: sample_eta(g, (b, n, model.widths[s]), qd[s], xp=xp, dtype=model.dtype)
            for s in names
        }
        return fn(model.trace(x2, noise)) - shift

    # keyed streams (draw t from block t // DRAW_BLOCK): the same draws for any chunk size and
    # any executor (issue 18, defect 12)
    root = keyed_root(r) if isinstance(r, _np.random.SeedSequence) else keyed_root(None, r)
    s1, s2 = sample_sums(draw, samples, chunk_size, executor=active_executor(executor),
                         streams=root)
    mean = s1 / samples
    var = (s2 - samples * mean * mean) / (samples - 1)
    var = xp.where(var > 0, var, 0.0 * var)
    return mean + shift, xp.sqrt(var / samples), single


def _est(mean: Any, se: Any, single: bool, samples: int) -> Estimate:
    return Estimate(mean[0, ...] if single else mean, se[0, ...] if single else se, samples)


@accepts_old_signature(renamed={"seed": "rng"})
def expected_loss(
    model: Model, x: Any, y: Any, q: Any, /, *, sites: Iterable[str] | str | None = None,
    samples: int, rng: Any = None, chunk_size: int | None = None,
    executor: Executor | None = None,
) -> Estimate:
    """Estimate ``E_η ℓ(F(x, η))`` per example ``(n,)`` with its standard error."""
    x2, _ = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    clean = model.loss.value(model.trace(x2).logits[0, ...], y2)
    m, se, single = _moments(
        model, x, q, sites, samples, rng,
        lambda tr: model.loss.value(tr.logits, y2), clean, chunk_size, executor,
    )
    return _est(m, se, single, samples)


@accepts_old_signature(renamed={"seed": "rng"})
def explicit_regularizer(
    model: Model, x: Any, y: Any, q: Any, /, *, sites: Iterable[str] | str | None = None,
    samples: int, rng: Any = None, chunk_size: int | None = None,
    executor: Executor | None = None,
) -> Estimate:
    """Estimate ``R_drop = E_η ℓ(F(x, η)) − ℓ(F(x))`` per example with its standard error."""
    x2, _ = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    clean = model.loss.value(model.trace(x2).logits[0, ...], y2)
    m, se, single = _moments(
        model, x, q, sites, samples, rng,
        lambda tr: model.loss.value(tr.logits, y2), clean, chunk_size, executor,
    )
    return _est(m - clean, se, single, samples)


@accepts_old_signature(renamed={"seed": "rng"})
def expected_gradient(
    model: Model, x: Any, y: Any, q: Any, /, *, sites: Iterable[str] | str | None = None,
    samples: int, rng: Any = None, chunk_size: int | None = None,
    executor: Executor | None = None,
) -> Estimate:
    """Estimate ``∇_W ℓ_drop(F, x)`` per example ``(n, P)`` with its standard error."""
    x2, _ = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    clean = loss_gradients(model, model.trace(x2), y2)[0, ...]
    m, se, single = _moments(
        model, x, q, sites, samples, rng, lambda tr: loss_gradients(model, tr, y2), clean,
        chunk_size, executor,
    )
    return _est(m, se, single, samples)


def _cov_sums_from(S: Any, k: int, N: int, xp: Any) -> tuple[Any, Any]:
    r"""The unbiased sample covariance ``(…, k, k)`` and an unbiased estimate of its variance.

    ``S`` ``(…, k + 3k²)`` holds, over the ``N`` draws of shifted vectors ``d`` (any shift: both
    statistics are shift invariant), the sums ``Σ d_a``, ``Σ d_a d_b``, ``Σ d_a² d_b`` and
    ``Σ d_a² d_b²``.  The sample covariance is the U-statistic of degree 2 with kernel
    ``h_ij = ½(d_ia − d_ja)(d_ib − d_jb)``, ``U = H/(N(N−1))`` with ``H = Σ_{i≠j} h_ij =
    N Σd_a d_b − Σd_a Σd_b``.  Its variance ``Var U = E[U²] − θ²`` has the unbiased estimate

    .. math::  \hat V = U^2 − \frac{H^2 − 4B + 2A}{N(N−1)(N−2)(N−3)},

    the second term the degree-4 U-statistic of ``h_ij h_kl`` over four distinct draws (an
    unbiased estimate of ``θ²``): ``H² − 4B + 2A`` sums ``h_ij h_kl`` over ordered pairs with
    ``{i,j} ∩ {k,l} = ∅`` (inclusion–exclusion), with ``B = Σ_i r_i²``, ``r_i = Σ_j h_ij``, and
    ``A = Σ_{i,j} h_ij²``, both written in the power sums.  This is the variance of the sample
    covariance *including the centring on the sample mean* (for the variance of one coordinate
    it is ``μ₄/N − σ⁴(N−3)/(N(N−1))`` in expectation) — e.g. for two-point noise, where every
    centred product ``d_a d_b`` is the same, the whole spread comes from the centring.  Where
    ``\hat V`` falls below Hoeffding's floor ``2ζ₂/(N(N−1))`` (estimated by plug-in) the floor
    is returned instead.
    """
    s1 = S[..., :k]
    sxy = xp.reshape(S[..., k : k + k * k], (*S.shape[:-1], k, k))
    m3 = xp.reshape(S[..., k + k * k : k + 2 * k * k], (*S.shape[:-1], k, k))  # Σ d_a² d_b
    m4 = xp.reshape(S[..., k + 2 * k * k :], (*S.shape[:-1], k, k))  # Σ d_a² d_b²
    sx, sy = s1[..., :, None], s1[..., None, :]
    diag = xp.linalg.diagonal(sxy)
    sxx, syy = diag[..., :, None], diag[..., None, :]
    m3t = xp.matrix_transpose(m3)  # Σ d_a d_b²
    H = N * sxy - sx * sy
    su = N * sxy - 2.0 * sx * sy  # Σ_i u_i, u_i = N d_ia d_ib − d_ia Σd_b − d_ib Σd_a
    su2 = (N * N * m4 + sy * sy * sxx + sx * sx * syy - 2.0 * N * sy * m3 - 2.0 * N * sx * m3t
           + 2.0 * sx * sy * sxy)
    B = 0.25 * (su2 + 2.0 * sxy * su + N * sxy * sxy)
    A = 0.5 * N * m4 - sy * m3 - sx * m3t + 0.5 * sxx * syy + sxy * sxy
    U = H / (N * (N - 1.0))
    theta2 = (H * H - 4.0 * B + 2.0 * A) / (N * (N - 1.0) * (N - 2.0) * (N - 3.0))
    # Hoeffding: Var U = (4(N−2)ζ₁ + 2ζ₂)/(N(N−1)) with ζ₁ ≥ 0 and ζ₂ = ½(μ₂₂ + σ_aa σ_bb), so
    # 2ζ₂/(N(N−1)) is a floor; its plug-in (μ₂₂ the central fourth product moment) is > 0
    # whenever the draws spread, where the unbiased estimate can be ≤ 0 (two-point noise)
    xm, ym = sx / N, sy / N
    mu22 = ((m4 - 2.0 * ym * m3 - 2.0 * xm * m3t + ym * ym * sxx + xm * xm * syy
             + 4.0 * xm * ym * sxy) / N - 3.0 * xm * xm * ym * ym)
    cdiag = xp.linalg.diagonal(U)
    floor = (mu22 + cdiag[..., :, None] * cdiag[..., None, :]) / (N * (N - 1.0))
    var = U * U - theta2
    return U, xp.where(var > floor, var, floor)


@accepts_old_signature(renamed={"seed": "rng"})
def gradient_noise_cov(
    model: Model, x: Any, y: Any, q: Any, /, *, sites: Iterable[str] | str | None = None,
    samples: int, rng: Any = None, directions: Any = None,
    chunk_size: int | None = None, executor: Executor | None = None,
) -> Estimate:
    """Estimate ``Cov_η(ξ_drop)`` per example ``(n, k, k)`` with an entrywise standard error.

    Draws ``g`` (the dropout gradient) are projected on ``directions`` ``(P, k)`` (identity when
    None, ``k = P``).  One pass over ``samples ≥ 4`` draws accumulates the power sums of
    ``d = g − g_clean`` (the gradient without dropout: a shift against cancellation) up to the
    fourth order; the value is the unbiased sample covariance and the standard error the square
    root of the unbiased estimate of its variance (:func:`_cov_sums_from`; the centring on the
    sample mean included), raised to Hoeffding's floor ``2ζ₂/(N(N−1))`` where it falls below
    (so it is never 0 while the draws spread; slightly conservative where the floor binds).
    Memory: draws in chunks of the engine's budget counting the ``3k² + k`` floats (and
    temporaries) each draw keeps per example (:func:`dropcheck._engine.chunk_items`), whatever
    ``samples`` (defects 3 and 16 of issue 18).
    """
    samples = check_positive_int(samples, "samples", minimum=4)
    xp = model.xp
    x2, single = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    V = check_directions(directions, xp, model.n_params)
    names = model.check_sites(sites)
    qd = check_q_sites(q, names)
    n = x2.shape[0]
    k = model.n_params if V is None else V.shape[1]

    def proj(tr: Trace) -> Any:
        g = loss_gradients(model, tr, y2)
        return g if V is None else g @ V

    shift = proj(model.trace(x2))[0, ...]  # (n, k)
    r = resolve_seed(rng)
    gen = _np.random.default_rng(r) if isinstance(r, _np.random.SeedSequence) else r
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    else:
        # per draw and example: the gradient, three k×k products and their concatenation
        # (twice), and the trace's sites and logits
        per = 7 * k * k + 4 * k + model.n_params + sum(model.widths.values()) + model.n_classes
        chunk_size = chunk_items(per * n, cap=4096)

    def draw(b: int, g: Any = gen) -> Any:
        noise = {
            s: sample_eta(g, (b, n, model.widths[s]), qd[s], xp=xp, dtype=model.dtype)
            for s in names
        }
        d = proj(model.trace(x2, noise)) - shift  # (b, n, k)
        d2 = d * d
        flat = (b, n, k * k)
        return xp.concat([
            d,
            xp.reshape(d[..., :, None] * d[..., None, :], flat),
            xp.reshape(d2[..., :, None] * d[..., None, :], flat),
            xp.reshape(d2[..., :, None] * d2[..., None, :], flat),
        ], axis=-1)

    root = keyed_root(r) if isinstance(r, _np.random.SeedSequence) else keyed_root(None, r)
    (S,) = sample_sums(draw, samples, chunk_size, powers=(1,), executor=active_executor(executor),
                       streams=root)
    cov, var = _cov_sums_from(S, k, samples, xp)
    se = xp.sqrt(xp.where(var > 0, var, 0.0 * var))
    return _est(cov, se, single, samples)
