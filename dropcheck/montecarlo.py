"""Monte-Carlo counterparts of :mod:`dropcheck.exact`, for nets too large to enumerate.

Each function draws ``samples`` independent masks per example (paper noise η at the chosen
sites) from the caller's generator and returns an :class:`Estimate`: the value and its standard
error (the sample standard deviation over ``sqrt(samples)``).  Sums are taken around a shift
(the value without dropout) so the variance does not suffer cancellation.

With an executor (``executor=``, or a ``dropcheck.parallel.using(…)`` block) the draws use
keyed streams: chunk ``c`` draws from child ``c`` of a root ``SeedSequence`` (``rng`` as a
seed, or entropy drawn from ``rng`` when it is a generator), so the estimate is the same on any
executor and any number of workers (it differs from the executor-less default, whose one
generator runs in chunk order).

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

    ex = active_executor(executor)
    if ex is None:
        s1, s2 = sample_sums(draw, samples, chunk_size)
    else:  # keyed streams: the same draws on any executor
        root = keyed_root(r) if isinstance(r, _np.random.SeedSequence) else keyed_root(None, r)
        s1, s2 = sample_sums(draw, samples, chunk_size, executor=ex, streams=root)
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


def _outer_centred(proj: Callable[[Trace], Any], mu: Any) -> Callable[[Trace], Any]:
    def fn(tr: Trace) -> Any:
        d = proj(tr) - mu
        return d[..., :, None] * d[..., None, :]

    return fn


@accepts_old_signature(renamed={"seed": "rng"})
def gradient_noise_cov(
    model: Model, x: Any, y: Any, q: Any, /, *, sites: Iterable[str] | str | None = None,
    samples: int, rng: Any = None, directions: Any = None,
    chunk_size: int | None = None, executor: Executor | None = None,
) -> Estimate:
    """Estimate ``Cov_η(ξ_drop)`` per example ``(n, k, k)`` with an entrywise standard error.

    Draws are projected on ``directions`` ``(P, k)`` (identity when None, ``k = P``).  The
    estimate is the unbiased sample covariance; the standard error of entry ``(a, b)`` is that of
    the mean of ``(g_a − ḡ_a)(g_b − ḡ_b)`` over the draws (the mean's own error is second order).
    """
    xp = model.xp
    x2, _ = model.check_x(x)
    y2 = model.check_y(y, x2.shape[0])
    V = check_directions(directions, xp, model.n_params)

    def proj(tr: Trace) -> Any:
        g = loss_gradients(model, tr, y2)
        return g if V is None else g @ V

    r = resolve_seed(rng)
    mean = expected_gradient(
        model, x2, y2, q, samples=samples, rng=r, sites=sites,
        chunk_size=chunk_size, executor=executor,
    )
    # second pass with an independent stream of draws (the caller's generator continues, or a
    # seed s gives the stream of [s, 1]): centring on an independent mean keeps the covariance
    # estimate unbiased up to O(1/samples^2)
    mu = mean.value if V is None else mean.value @ V
    if isinstance(r, _np.random.SeedSequence):
        ent: list[Any] = list(r.entropy) if isinstance(r.entropy, list | tuple) else [r.entropy]
        r = _np.random.default_rng(_np.random.SeedSequence([*ent, 1], spawn_key=r.spawn_key))
    m, se, single = _moments(
        model, x2, q, sites, samples, r,
        _outer_centred(proj, mu), 0.0, chunk_size, executor,
    )
    # the centring mean has its own error: E[(g−μ̂)(g−μ̂)ᵀ] = Σ (1 + 1/samples)
    m = m / (1.0 + 1.0 / samples)
    return _est(m, se, single, samples)


