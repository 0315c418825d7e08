r"""Unbiased estimators of ``R_approx`` (4.4) that avoid the ``c×c`` Hessian or the ``d_i`` sweeps.

- Sampled label (seed 001, the slides): for cross-entropy
  ``H_out = diag(p) − ppᵀ = E_{ŷ~p}[g_ŷ g_ŷᵀ]`` with ``g_ŷ = p − e_ŷ``, so

  .. math:: \hat R = \sum_i \sum_k h_{ik}^2 \big(g_{\hat y}^\top J_{F,i}\big)_k^2,
            \qquad E_{\hat y}[\hat R] = R_{approx},

  one reverse sweep (``noise_adjoint`` of ``g_ŷ``) per sampled label, all sites at once.
  With ``ŷ = y`` (the true label, not sampled) it is ``R̃_approx`` of eq. 5.1.
- Rademacher probes (Hutchinson): signs ``s_i ∈ {±1}^{d_i}`` and one forward sweep
  ``t = Σ_i J_{F,i}(s_i ⊙ h_i)`` (a noise tangent) per probe; ``E_s[tᵀ H_out t] = R_approx``
  because ``E[s sᵀ] = I`` (across sites too).  With ``labels="sampled"`` the Hessian is replaced
  by one sampled ``g_ŷ g_ŷᵀ``: ``(g_ŷᵀ t)²``.

Each returns a :class:`~dropcheck.montecarlo.Estimate` (value and standard error, per example).
:func:`compare_estimators` measures their variance per unit of cost.

**Sequence models, masks and strengths.**  The estimators written with ``noise_adjoint`` only
(:func:`r_approx_sampled`, :func:`r_approx_factor`, :func:`r_drop_sampled`) take either mask
form of the site protocol (:attr:`~dropcheck.models.Model.mask`): with a mask *locked* along
the site axes (an LSTM's time steps, ``E[δ_t δ_{t'}ᵀ] = (q/(1−q)) diag(h_t ⊙ h_{t'})``) the
noise gradient is ``Σ_t (uᵀJ_t)_k h_{tk}`` and a site's term is ``Σ_k (Σ_t u_{tk} h_{tk})²``;
*per step* it is ``Σ_t Σ_k (u_{tk} h_{tk})²``.  ``form=`` computes either whatever the model's
mask (to measure the cost of assuming the wrong one).  With ``q`` the site terms are weighted by
:func:`~dropcheck.explicit.strength` ``q_i/(2(1−q_i))``: an estimate of ``R_drop``.  A
window's carried state and DropConnect mask come with the model
(:meth:`~dropcheck.models.Model.with_context`).  ``chunk`` bounds the draws (label samples,
factor columns, masks) of one sweep; the result does not depend on it beyond rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dropcheck._api import accepts_old_signature, resolve_rng
from dropcheck._engine import chunk_items, sample_sums
from dropcheck._validate import check_choice, check_positive_int, check_q_sites
from dropcheck.explicit._common import (
    Metric,
    Problem,
    check_labels,
    rademacher,
    require_label_distribution,
    require_targets,
    sample_labels,
    setup,
    sum_squares,
)
from dropcheck.explicit.gauss_newton import r_approx
from dropcheck.explicit.taylor import strength
from dropcheck.losses import softmax
from dropcheck.models._base import MASKS, Model
from dropcheck.montecarlo import Estimate

__all__ = [
    "r_hat",
    "r_approx_sampled",
    "r_approx_probe",
    "r_approx_sampled_terms",
    "r_approx_factor",
    "r_drop_sampled",
    "compare_estimators",
    "EstimatorCost",
    "EstimatorComparison",
]


def _weights(names: tuple[str, ...], q: Any) -> dict[str, float]:
    """Per-site weights: 1 without ``q``, else :func:`strength` ``(q_i)``."""
    if q is None:
        return dict.fromkeys(names, 1.0)
    return {s: strength(v) for s, v in check_q_sites(q, names).items()}


def _forms(model: Model, form: str | None) -> str:
    return model.mask if form is None else check_choice(form, MASKS, "form")


def _r_hat_terms(
    pb: Problem, labels: Any, forms: tuple[str, ...], weights: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Weighted site terms of ``R̂`` for labels ``(S, n, *X)``, ``(S, n)`` per form and site.

    One batched reverse sweep to the sites serves every form (:meth:`Model.noise_terms`).
    """
    model = pb.model
    g = model.loss.grad(pb.tr.logits, labels)  # (S, n, *X, c): p − e_ŷ
    adj, _ = model.backward(pb.tr, g[:, None, ...], sites=pb.sites)
    out: dict[str, dict[str, Any]] = {}
    for f in forms:
        na = model.noise_terms(pb.tr, adj, pb.sites, form=f)  # (S, 1, n, [*X,] d) per site
        out[f] = {s: weights[s] * sum_squares(na[s])[:, 0, ...] for s in pb.sites}
    return out


def _total(terms: dict[str, Any]) -> Any:
    total = None
    for v in terms.values():
        total = v if total is None else total + v
    return total


def _r_hat_draws(pb: Problem, labels: Any) -> Any:
    """``R̂`` for labels ``(S, n)``: ``(S, n)``, one batched reverse sweep to the noise."""
    f = pb.model.mask
    return _total(_r_hat_terms(pb, labels, (f,), dict.fromkeys(pb.sites, 1.0))[f])


@accepts_old_signature(positional=("sites",))
def r_hat(
    model: Model, x: Any, labels: Any, /, *, sites: Iterable[str] | str | None = None
) -> Any:
    """The slides' ``R̂ = Σ_i Σ_k h_ik² (g_ŷᵀ J_{F,i})_k²`` for given labels ``ŷ``.

    ``labels`` has the targets' shape (one label per example, ``(n,)``; per token ``(n, T)``
    for a sequence model; a scalar for one example) or a leading draw axis ``(S, …)``; the result
    is ``(n,)`` or ``(S, n)``.  Averaged over ``ŷ ~ softmax(F(x))`` it is ``R_approx`` (4.4); at
    the true label it is ``R̃_approx`` (5.1).  One reverse sweep per draw, all batched.  Needs
    cross-entropy.
    """
    require_label_distribution(model, "r_hat")
    pb = setup(model, x, None, sites)
    shape = tuple(pb.tr.logits.shape[1:-1])  # (n, *X)
    xp = pb.xp
    lab = xp.asarray(labels)
    if pb.single:  # insert the example axis in front of the per-example label axes
        k = lab.ndim - len(pb.extra)
        lab = xp.reshape(lab, (*lab.shape[:k], 1, *lab.shape[k:]))
    lab, one = check_labels(lab, shape, model.n_classes, xp)
    out = _r_hat_draws(pb, lab)  # (S, n)
    if pb.single:
        out = out[:, 0]
    return out[0, ...] if one else out


def _estimate(draws: Any, xp: Any, single: bool) -> Estimate:
    """Mean and standard error over the leading draw axis (``nan`` error for one draw)."""
    s = draws.shape[0]
    mean = xp.mean(draws, axis=0)
    if s > 1:
        dev = draws - mean
        se = xp.sqrt(xp.sum(dev * dev, axis=0) / (s - 1) / s)
    else:
        se = xp.full(mean.shape, math.nan, dtype=mean.dtype)
    if single:
        mean, se = mean[0, ...], se[0, ...]
    return Estimate(mean, se, s)


def _draw_budget(pb: Problem) -> int:
    """Draws per chunk under the engine's budget (:func:`dropcheck._engine.chunk_items`).

    A draw keeps the sites' values and tangents and a few logit-sized arrays per example (and
    step), ×4 for temporaries.
    """
    model = pb.model
    per_example = math.prod(pb.tr.logits.shape[1:-1])
    return chunk_items(4 * (sum(model.widths.values()) + model.n_classes) * per_example)


def _streamed(draw: Callable[[int], Any], samples: int, per: int, xp: Any,
              single: bool) -> Estimate:
    """:func:`_estimate` of ``samples`` draws ``draw(b)`` ``(b, …)``, ``per`` at a time.

    Up to ``per`` draws are made at once (the draws and the result as before); more are
    accumulated as shifted power sums by :func:`dropcheck._engine.sample_sums` (in order, one
    generator), so memory is one chunk whatever ``samples`` (defect 10 of issue 18).
    """
    if samples <= per:
        return _estimate(draw(samples), xp, single)
    s1, s2, shift = sample_sums(draw, samples, per, center=lambda v: xp.mean(v, axis=0))
    m = s1 / samples
    var = (s2 - samples * m * m) / (samples - 1)
    mean, se = shift + m, xp.sqrt(xp.where(var > 0, var, 0.0 * var) / samples)
    if single:
        mean, se = mean[0, ...], se[0, ...]
    return Estimate(mean, se, samples)


def _sampled_draws(pb: Problem, samples: int, rng: Any) -> Any:
    p = softmax(pb.tr.logits[0, ...], pb.xp)  # (n, c)
    return _r_hat_draws(pb, sample_labels(rng, p, samples, pb.xp))


def _sampled_terms(
    pb: Problem,
    samples: int,
    rng: Any,
    forms: tuple[str, ...],
    weights: dict[str, float],
    chunk: int | None,
) -> dict[str, dict[str, Any]]:
    """Site terms of ``samples`` label draws, ``chunk`` per reverse sweep: ``(samples, n)``."""
    xp = pb.xp
    p = softmax(pb.tr.logits[0, ...], xp)  # (n, *X, c)
    step = samples if chunk is None else check_positive_int(chunk, "chunk")
    parts: list[dict[str, dict[str, Any]]] = []
    for start in range(0, samples, step):
        k = min(step, samples - start)
        parts.append(_r_hat_terms(pb, sample_labels(rng, p, k, xp), forms, weights))
    if len(parts) == 1:
        return parts[0]
    return {f: {s: xp.concat([d[f][s] for d in parts], axis=0) for s in pb.sites}
            for f in forms}


@accepts_old_signature(positional=("samples", "rng"))
def r_approx_sampled_terms(
    model: Model,
    x: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int,
    rng: Any = None,
    q: Any = None,
    forms: Iterable[str] | None = None,
    chunk: int | None = None,
    trace: Any = None,
) -> dict[str, dict[str, Any]]:
    """The draws of :func:`r_approx_sampled` per site and mask form: ``{form: {site: (S, n)}}``.

    ``S = samples`` label sequences ``ŷ ~ softmax(F(x))`` drawn from ``rng``, ``chunk`` per
    reverse sweep (all at once by default); one sweep serves every form in ``forms`` (default:
    the model's mask; module doc).  With ``q`` each site's draws are weighted by
    ``strength(q_i)``.  What a corpus evaluation sums over sequences and sites; ``trace``: the
    clean trace of ``x`` by ``model`` if the caller has one (saves a forward pass).  Needs
    cross-entropy.
    """
    samples = check_positive_int(samples, "samples")
    require_label_distribution(model, "r_approx_sampled_terms")
    pb = setup(model, x, None, sites, per_step=True, trace=trace)
    fs = (model.mask,) if forms is None else tuple(_forms(model, f) for f in forms)
    return _sampled_terms(pb, samples, resolve_rng(rng), fs, _weights(pb.sites, q), chunk)


@accepts_old_signature(positional=("samples", "rng", "sites"))
def r_approx_sampled(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int,
    rng: Any = None,
    q: Any = None,
    form: str | None = None,
    per_site: bool = False,
    chunk: int | None = None,
) -> Any:
    """Sampled-label estimate of ``R_approx`` (4.4, no constant): ``samples`` labels per example.

    Labels ``ŷ ~ softmax(F(x))`` are drawn from ``rng`` (a numpy or cupy Generator); each costs
    one reverse sweep, ``chunk`` draws per sweep (default all).  Returns the mean of ``R̂`` over
    the draws and its standard error, per example ``(n,)`` (``nan`` error for ``samples = 1``).
    ``y`` is checked but not used: the estimator draws its labels from the model.  With ``q``
    (float or dict) the sites are weighted by ``strength(q_i)``: an estimate of ``R_drop``.
    ``form``: the mask form of the noise gradient (module doc; default the model's).
    ``per_site=True`` returns a dict site -> :class:`Estimate`.  Needs cross-entropy.
    """
    samples = check_positive_int(samples, "samples")
    require_label_distribution(model, "r_approx_sampled")
    pb = setup(model, x, y, sites, per_step=True)
    f = _forms(model, form)
    gen, w, xp = resolve_rng(rng), _weights(pb.sites, q), pb.xp
    per = _draw_budget(pb)
    if samples <= per:
        terms = _sampled_terms(pb, samples, gen, (f,), w, chunk)[f]
        if per_site:
            return {s: _estimate(v, xp, pb.single) for s, v in terms.items()}
        return _estimate(_total(terms), xp, pb.single)

    def draw(b: int) -> Any:  # the sites' terms stacked on a last axis, or their total
        t = _sampled_terms(pb, b, gen, (f,), w, chunk)[f]
        return xp.stack([t[s] for s in pb.sites], axis=-1) if per_site else _total(t)

    est = _streamed(draw, samples, per, xp, pb.single)
    if not per_site:
        return est
    return {s: Estimate(est.value[..., i], est.stderr[..., i], samples)
            for i, s in enumerate(pb.sites)}


@accepts_old_signature(positional=("sites",))
def r_approx_factor(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    q: Any = None,
    form: str | None = None,
    per_site: bool = False,
    chunk: int | None = None,
) -> Any:
    r"""``R_approx`` (4.4) exactly by the factor route, in either mask form, per example ``(n,)``.

    .. math:: R_{approx} = \sum_i \sum_r ig\|∂⟨a_r, F⟩/∂η_iig\|^2,
              \qquad H_{out} = \sum_r a_r a_r^	op

    with ``a_r`` the columns of :meth:`~dropcheck.losses.Loss.hessian_factor` placed per logit
    vector (``c·prod(X)`` columns: ``T·V`` for a sequence model), ``chunk`` columns per reverse
    sweep (default all).  The noise gradient is that of ``form`` (module doc), so this is the
    exact reference of :func:`r_approx_sampled` for locked and per-step masks alike; for a
    locked mask it equals :func:`~dropcheck.explicit.r_approx` (``route="vjp"``).  ``q``:
    weights ``strength(q_i)``; ``per_site``: a dict ``site -> (n,)``.  Small vocabularies only.
    """
    pb = setup(model, x, y, sites, per_step=True)
    f = _forms(model, form)
    w = _weights(pb.sites, q)
    xp = pb.xp
    cols = Metric(pb, "loss").columns()  # (r, 1, n, *X, c)
    r = cols.shape[0]
    step = r if chunk is None else check_positive_int(chunk, "chunk")
    acc: dict[str, Any] = {}
    for start in range(0, r, step):
        na = model.noise_adjoint(pb.tr, cols[start : start + step, ...], pb.sites, form=f)
        for s in pb.sites:
            v = xp.sum(sum_squares(na[s]), axis=0)[0, ...]
            acc[s] = v if s not in acc else acc[s] + v
    terms = {s: pb.squeeze(w[s] * acc[s]) for s in pb.sites}
    return terms if per_site else _total(terms)


@accepts_old_signature(positional=("samples", "rng"))
def r_drop_sampled(
    model: Model,
    x: Any,
    y: Any,
    q: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int,
    rng: Any = None,
    control_variate: bool = True,
    chunk: int | None = None,
) -> Estimate:
    r"""Monte-Carlo ``R_drop = E_η ℓ(F(x, η)) − ℓ(F(x))`` per example ``(n,)`` with its s.e.

    Masks of the model's form (:meth:`~dropcheck.models.Model.sample_noise_for`; per step too),
    independent per example, ``chunk`` draws per forward pass (default: the engine's budget),
    drawn in order from ``rng``.  Each draw contributes

    .. math:: ℓ(F(x, η)) − ℓ(F(x)) − ig⟨∂_η ℓ|_{η=0},\ ηig⟩,

    the last term (with ``control_variate``, default) having mean exactly 0 (``E[η] = 0``): it
    removes the first-order fluctuation ``J_loss δ`` that dominates the variance, so the
    estimate stays unbiased with a much smaller standard error.  Without it the draws are those
    of :func:`dropcheck.montecarlo.explicit_regularizer`.
    """
    from dropcheck import _engine

    samples = check_positive_int(samples, "samples", minimum=2)
    pb = setup(model, x, require_targets(y), sites, per_step=True)
    qd = check_q_sites(q, pb.sites)
    gen = resolve_rng(rng)
    xp, n = pb.xp, pb.n
    clean = model.loss.value(pb.tr.logits, pb.y)  # (1, n)
    lin = None
    if control_variate:
        lin = model.noise_adjoint(pb.tr, model.loss.grad(pb.tr.logits, pb.y)[None, ...],
                                  pb.sites)

    def draw(b: int) -> Any:
        noise = model.sample_noise_for(gen, pb.x, qd, b, sites=pb.sites)
        v = model.loss.value(model.trace(pb.x, noise).logits, pb.y) - clean  # (b, n)
        if lin is not None:
            for s, e in noise.items():
                v = v - xp.sum(xp.reshape(lin[s][0, ...] * e, (b, n, -1)), axis=-1)
        return v

    if chunk is None:  # a draw keeps the logits and the site values of every example
        per = n * pb.outputs * (2 * model.n_classes + 6 * sum(model.widths.values()))
        chunk = _engine.chunk_items(per, cap=samples)
    step = check_positive_int(chunk, "chunk")
    return _estimate(_engine.map_draws(draw, samples, step, xp), xp, pb.single)


def _probe_draws(pb: Problem, probes: int, rng: Any, labels: str) -> Any:
    model, xp = pb.model, pb.xp
    signs = {
        s: rademacher(rng, (probes, 1, pb.n, model.widths[s]), xp, model.dtype) for s in pb.sites
    }
    t = model.tangent(pb.tr, noise_tangents=signs).logits[:, 0, ...]  # (S, n, *X, c)
    f = pb.tr.logits[0, ...]
    if labels == "full":
        return pb.contract(t, model.loss.hvp(f, pb.y, t))
    lab = sample_labels(rng, softmax(f, xp), probes, xp)  # one label per logit vector
    gt = pb.contract(model.loss.grad(f, lab), t)
    return gt * gt


@accepts_old_signature(positional=("probes", "rng", "sites", "labels"),
                       renamed={"probes": "samples"})
def r_approx_probe(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int,
    rng: Any = None,
    labels: str = "sampled",
) -> Estimate:
    """Rademacher-probe estimate of ``R_approx`` (4.4, no constant), per example ``(n,)``.

    Each probe draws signs ``s_i`` for every unit of every site and costs one forward sweep,
    ``t = Σ_i J_{F,i}(s_i ⊙ h_i)``; the draw is ``tᵀ H_out t`` (``labels="full"``) or
    ``(g_ŷᵀ t)²`` with one label ``ŷ ~ softmax(F(x))`` (``labels="sampled"``, cross-entropy
    only).  ``samples`` probes (formerly ``probes=``: each probe is one draw of the estimator,
    so it is the sample count) are drawn from ``rng``.  Returns the mean over the probes and its
    standard error.
    """
    probes = check_positive_int(samples, "samples")
    labels = check_choice(labels, ("sampled", "full"), "labels")
    if labels == "sampled":
        require_label_distribution(model, "r_approx_probe(labels='sampled')")
    pb = setup(model, x, y, sites)
    gen = resolve_rng(rng)
    return _streamed(lambda b: _probe_draws(pb, b, gen, labels), probes, _draw_budget(pb), pb.xp,
                     pb.single)


@dataclass(frozen=True)
class EstimatorCost:
    """Cost and variance of one estimator of ``R_approx`` on one batch of examples.

    ``products``: Jacobian-vector products (forward or reverse sweeps) per draw; ``seconds``:
    wall-clock seconds per draw for the whole batch; ``variance``: relative variance of one
    draw pooled over the examples, ``Σ_n Var_n / Σ_n R_n²`` (0 for the exact value).
    ``draws`` holds the per-draw values ``(S, n)`` (the exact value ``(1, n)``).
    """

    name: str
    products: int
    seconds: float
    variance: float
    draws: Any = field(repr=False)

    @property
    def variance_per_product(self) -> float:
        """Relative variance of an average costing one Jacobian product (work-normalized)."""
        return self.variance * self.products

    @property
    def variance_per_second(self) -> float:
        """Relative variance of an average costing one second."""
        return self.variance * self.seconds


@dataclass(frozen=True)
class EstimatorComparison:
    """The exact ``R_approx`` ``(n,)`` and an :class:`EstimatorCost` per estimator."""

    exact: Any
    rows: dict[str, EstimatorCost]

    def rel_error(self, name: str, m: int) -> float:
        """Root-mean-square pooled relative error of the average of ``m`` draws.

        The draws are split into ``S // m`` disjoint blocks; for each block
        ``‖mean − R‖ / ‖R‖`` over the examples, then the RMS over the blocks.
        """
        row = self.rows[name]
        xp = _ns(row.draws)
        if row.variance == 0.0:
            return float(xp.sqrt(xp.sum((row.draws[0, ...] - self.exact) ** 2)
                                 / xp.sum(self.exact**2)))
        blocks = row.draws.shape[0] // m
        if blocks < 1:
            raise ValueError(f"m = {m} exceeds the {row.draws.shape[0]} draws of {name!r}")
        means = xp.mean(xp.reshape(row.draws[: blocks * m, ...], (blocks, m, -1)), axis=1)
        err2 = xp.sum((means - self.exact) ** 2, axis=-1) / xp.sum(self.exact**2)
        return float(xp.sqrt(xp.mean(err2)))


def _ns(a: Any) -> Any:
    from dropcheck.backend import namespace

    return namespace(a)


def _timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[Any, float]:
    """The result of ``fn`` and its best wall-clock time over ``repeats`` calls."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


@accepts_old_signature(positional=("rng",), renamed={"draws": "samples"})
def compare_estimators(
    model: Model,
    x: Any,
    y: Any,
    /,
    *,
    sites: Iterable[str] | str | None = None,
    samples: int = 256,
    rng: Any = None,
) -> EstimatorComparison:
    """Variance per unit cost of the estimators of ``R_approx`` against the exact value.

    Estimators: ``exact`` (:func:`r_approx`, cheaper route per site), ``sampled``
    (:func:`r_approx_sampled`, one reverse sweep per label), ``probe_full`` and
    ``probe_sampled`` (:func:`r_approx_probe`, one forward sweep per probe).  Each random
    estimator is run for ``samples`` draws (timed as one batched call); costs are counted in
    Jacobian products per draw and in seconds per draw.  Needs cross-entropy.
    """
    draws = check_positive_int(samples, "samples", minimum=2)
    require_label_distribution(model, "compare_estimators")
    pb = setup(model, x, y, sites)
    gen = resolve_rng(rng)
    xp = pb.xp
    r = Metric(pb, "loss").rank
    exact, t_exact = _timed(lambda: r_approx(model, pb.x, pb.y, sites=pb.sites))
    widths = [model.widths[s] for s in pb.sites]
    exact_products = sum(d for d in widths if d < r) + (r if any(d >= r for d in widths) else 0)
    runs: dict[str, tuple[int, Callable[[], Any]]] = {
        "sampled": (1, lambda: _sampled_draws(pb, draws, gen)),
        "probe_full": (1, lambda: _probe_draws(pb, draws, gen, "full")),
        "probe_sampled": (1, lambda: _probe_draws(pb, draws, gen, "sampled")),
    }
    norm = xp.sum(exact * exact)
    rows = {"exact": EstimatorCost("exact", exact_products, t_exact, 0.0, exact[None, ...])}
    for name, (products, fn) in runs.items():
        values, secs = _timed(fn, repeats=1)
        mean = xp.mean(values, axis=0)
        var = xp.sum((values - mean) ** 2, axis=0) / (draws - 1)
        rows[name] = EstimatorCost(
            name, products, secs / draws, float(xp.sum(var) / norm), values
        )
    return EstimatorComparison(exact, rows)
