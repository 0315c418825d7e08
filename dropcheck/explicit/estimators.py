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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dropcheck._validate import check_choice, check_positive_int
from dropcheck.backend import make_rng
from dropcheck.explicit._common import (
    Metric,
    Problem,
    check_labels,
    rademacher,
    require_label_distribution,
    sample_labels,
    setup,
)
from dropcheck.explicit.gauss_newton import r_approx
from dropcheck.losses import softmax
from dropcheck.models._base import Model
from dropcheck.montecarlo import Estimate

__all__ = [
    "r_hat",
    "r_approx_sampled",
    "r_approx_probe",
    "compare_estimators",
    "EstimatorCost",
    "EstimatorComparison",
]


def _r_hat_draws(pb: Problem, labels: Any) -> Any:
    """``R̂`` for labels ``(S, n)``: ``(S, n)``, one batched reverse sweep to the noise."""
    xp, model = pb.xp, pb.model
    g = model.loss.grad(pb.tr.logits, labels)  # (S, n, c): p − e_ŷ
    na = model.noise_adjoint(pb.tr, g[:, None, ...], pb.sites)  # (S, 1, n, d) per site
    total = None
    for s in pb.sites:
        part = xp.sum(na[s] * na[s], axis=-1)[:, 0, ...]
        total = part if total is None else total + part
    return total


def r_hat(
    model: Model, x: Any, labels: Any, sites: Iterable[str] | str | None = None
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


def _sampled_draws(pb: Problem, samples: int, rng: Any) -> Any:
    p = softmax(pb.tr.logits[0, ...], pb.xp)  # (n, c)
    return _r_hat_draws(pb, sample_labels(rng, p, samples, pb.xp))


def r_approx_sampled(
    model: Model,
    x: Any,
    y: Any,
    samples: int,
    rng: Any,
    sites: Iterable[str] | str | None = None,
) -> Estimate:
    """Sampled-label estimate of ``R_approx`` (4.4, no constant): ``samples`` labels per example.

    Labels ``ŷ ~ softmax(F(x))`` are drawn from ``rng`` (a numpy or cupy Generator); each costs
    one reverse sweep, all draws batched.  Returns the mean of ``R̂`` over the draws and its
    standard error, per example ``(n,)`` (``nan`` error for ``samples = 1``).  ``y`` is checked
    but not used: the estimator draws its labels from the model.  Needs cross-entropy.
    """
    samples = check_positive_int(samples, "samples")
    require_label_distribution(model, "r_approx_sampled")
    pb = setup(model, x, y, sites)
    return _estimate(_sampled_draws(pb, samples, make_rng(None, rng)), pb.xp, pb.single)


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


def r_approx_probe(
    model: Model,
    x: Any,
    y: Any,
    probes: int,
    rng: Any,
    sites: Iterable[str] | str | None = None,
    labels: str = "sampled",
) -> Estimate:
    """Rademacher-probe estimate of ``R_approx`` (4.4, no constant), per example ``(n,)``.

    Each probe draws signs ``s_i`` for every unit of every site and costs one forward sweep,
    ``t = Σ_i J_{F,i}(s_i ⊙ h_i)``; the draw is ``tᵀ H_out t`` (``labels="full"``) or
    ``(g_ŷᵀ t)²`` with one label ``ŷ ~ softmax(F(x))`` (``labels="sampled"``, cross-entropy
    only).  Returns the mean over the probes and its standard error.
    """
    probes = check_positive_int(probes, "probes")
    labels = check_choice(labels, ("sampled", "full"), "labels")
    if labels == "sampled":
        require_label_distribution(model, "r_approx_probe(labels='sampled')")
    pb = setup(model, x, y, sites)
    return _estimate(_probe_draws(pb, probes, make_rng(None, rng), labels), pb.xp, pb.single)


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


def compare_estimators(
    model: Model,
    x: Any,
    y: Any,
    rng: Any,
    *,
    draws: int = 256,
    sites: Iterable[str] | str | None = None,
) -> EstimatorComparison:
    """Variance per unit cost of the estimators of ``R_approx`` against the exact value.

    Estimators: ``exact`` (:func:`r_approx`, cheaper route per site), ``sampled``
    (:func:`r_approx_sampled`, one reverse sweep per label), ``probe_full`` and
    ``probe_sampled`` (:func:`r_approx_probe`, one forward sweep per probe).  Each random
    estimator is run for ``draws`` draws (timed as one batched call); costs are counted in
    Jacobian products per draw and in seconds per draw.  Needs cross-entropy.
    """
    draws = check_positive_int(draws, "draws", minimum=2)
    require_label_distribution(model, "compare_estimators")
    pb = setup(model, x, y, sites)
    gen = make_rng(None, rng)
    xp = pb.xp
    r = Metric(pb, "loss").rank
    exact, t_exact = _timed(lambda: r_approx(model, pb.x, pb.y, pb.sites))
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
