r"""``check_explicit_regularizer``: compare a user's explicit regularizer with dropcheck's.

dropcheck builds small random MLPs (:func:`~dropcheck.checks.adapters.random_problems`), hands
each one to the user's function through an adapter (weight lists by default; a
``torch.nn.Sequential`` with ``adapter="torch"``), and compares what comes back with its own
reference, chosen by ``form`` (Wei, Kakade & Ma 2020, Sec. 4.1; paper-notes "Explicit
regularizer"):

=============  ===========================================================================
``form``       reference, per example ``(n,)``
=============  ===========================================================================
``r_approx``   ``strength(q)·R_approx`` (eq. 4.4, :func:`dropcheck.explicit.r_approx`) with
               ``strength(q) = q/(2(1−q))``, or the paper's raw ``R_approx`` when the user
               declares ``includes_strength=False``
``taylor``     ``R_taylor`` (eq. 4.2, :func:`dropcheck.explicit.taylor`, with the constant)
``r_drop``     the exact ``R_drop = E_η ℓ(F(x,η)) − ℓ(F(x))``
               (:func:`dropcheck.exact.explicit_regularizer`, all masks enumerated)
=============  ===========================================================================

.. math:: R_{approx}(F, x) = \sum_i \big\langle J_{F,i}^\top H_{out} J_{F,i},\
          \mathrm{diag}(h_i^{\odot 2})\big\rangle

The user's function returns per-example values ``(n,)`` or one number, their mean over the batch
(the paper's reduction).  A deterministic function is called once per network and must agree
to ``rtol`` in the max norm (``‖v − r‖_∞ ≤ rtol·‖r‖_∞``; exact rows, no false alarms).  A
stochastic estimator (sampled labels, Rademacher probes, Monte-Carlo dropout) is called
``calls`` times; the batch means of ``UNIT`` consecutive calls form one unit, and a two-sided
t-test on the units asks whether their mean is the reference (test rows, Holm-corrected at
``alpha``; a failure is re-tested on fresh calls, so a correct estimator fails with probability
at most ``alpha``).

When a network fails, its value is compared with *alternative references*, one per known bug:
the constant missing or doubled, the loss-Jacobian (true-label) variant ``R̃_approx`` (5.1) in
place of the sampled-label ``R_approx``, the identity Hessian, ``h`` not squared, one site only,
the sum instead of the mean over the batch, the clean loss not subtracted, … (and their
combinations); the diagnosis names those that fit every failed network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dropcheck import exact, explicit
from dropcheck._tolerances import default_rtol
from dropcheck._validate import check_choice, check_positive_int
from dropcheck.backend import to_numpy
from dropcheck.checks._args import build_problems, grid_args
from dropcheck.checks._calls import CallFailed
from dropcheck.checks._report import ERROR, FAIL, PASS, CheckReport, CheckRow
from dropcheck.checks._runner import call_text, finish, run_grid
from dropcheck.checks.adapters import Adapter, Problem, get_adapter
from dropcheck.models import MLP

__all__ = [
    "FORMS",
    "DEFAULT_SIZES",
    "DEFAULT_ACTIVATIONS",
    "UNIT",
    "RegularizerReport",
    "check_explicit_regularizer",
    "assert_regularizer_matches",
]

FORMS = ("r_approx", "taylor", "r_drop")
#: one and two hidden layers.  A site followed by a smooth nonlinearity (net 2) is needed to tell
#: R_taylor from strength·R_approx: they are equal when the site feeds the decoder (claim E2) or
#: the activation is piecewise linear (relu: no model-Hessian term)
DEFAULT_SIZES = ((5, 6, 4), (4, 5, 5, 3), (6, 5, 4, 3))
DEFAULT_ACTIVATIONS = ("tanh", "softplus", "relu")
#: calls of a stochastic estimator averaged into one t-test unit (a mean of 8 draws of a skewed
#: estimator such as the sampled-label R̂ is far closer to normal than one draw)
UNIT = 8
_REDUCTIONS = ("auto", "none", "mean")


# ----- references and the alternatives that name bugs --------------------------------------

@dataclass(frozen=True)
class _Alt:
    """A value the user's function would return with a known bug, per example ``(n,)``."""

    key: str
    phrase: str
    values: np.ndarray


@dataclass(frozen=True)
class _Reference:
    """The reference per example ``(n,)``, what it is called, and the bug alternatives."""

    what: str
    values: np.ndarray
    alts: tuple[_Alt, ...]


def _h_not_squared(net: MLP, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Σ_i Σ_k h_ik (J_{F,i} e_k)ᵀ H_out (J_{F,i} e_k)`` ``(n,)``: R_approx, ``h`` not squared.

    From the per-unit terms of :func:`dropcheck.explicit.r_approx` (``per_unit=True``),
    ``h_k² (J e_k)ᵀ H_out (J e_k)``, divided by ``h_k``; a unit with ``h_k = 0`` contributes 0
    to both (its noise tangent is zero).
    """
    units = explicit.r_approx(net, x, y, per_unit=True)
    h = net.hidden(x)
    out = np.zeros(x.shape[0])
    for s in net.site_names:
        u, hs = np.asarray(units[s]), np.asarray(h[s])
        out = out + np.sum(np.divide(u, hs, out=np.zeros_like(u), where=hs != 0), axis=-1)
    return out


def _site_alts(net: MLP, per_site: dict[str, np.ndarray], c: float) -> list[_Alt]:
    """One site only (the first, or the last) of a multi-site net, times ``c``."""
    names = net.site_names
    if len(names) < 2:
        return []
    return [_Alt("first-site", "only the first dropout site counted (the sum over sites is "
                               "missing)", c * per_site[names[0]]),
            _Alt("last-site", "only the last dropout site counted (the sum over sites is "
                              "missing)", c * per_site[names[-1]])]


def _combine(constants: list[tuple[str, str | None, float]],
             kinds: list[tuple[str, str | None, np.ndarray]]) -> list[_Alt]:
    """Every (constant, kind) pair but the reference itself: phrases joined with '; '."""
    out = []
    for ck, cp, c in constants:
        for kk, kp, v in kinds:
            parts = [p for p in (cp, kp) if p]
            if parts:
                out.append(_Alt(f"{ck}+{kk}", "; ".join(parts), c * v))
    return out


def _unscaled_masks(net: MLP, x: np.ndarray, y: np.ndarray, q: float,
                    clean: np.ndarray) -> np.ndarray:
    """``E_m ℓ(F(x; m ⊙ h)) − ℓ(F(x))`` with keep masks *not* scaled by ``1/(1−q)``.

    ``m ⊙ h = (1+η) ⊙ ((1−q) h)``: the paper's noise on a net whose weights fed by each site are
    scaled by ``1−q``, so the exact engine computes it.
    """
    params = dict(net.params)
    for s in net.site_names:
        w = f"W{1 if s == 'x' else int(s[1:]) + 1}"
        params[w] = (1.0 - q) * params[w]
    return exact.expected_loss(net.with_params(params), x, y, q) - clean


def _reference(pb: Problem, q: float, form: str, includes_strength: bool) -> _Reference:
    """The reference of ``form`` and its bug alternatives on one network."""
    net, x, y = pb.net, pb.x, pb.y
    S = explicit.strength(q)
    ra = np.asarray(explicit.r_approx(net, x, y))
    sites_ra = explicit.r_approx(net, x, y, per_site=True)
    rt = np.asarray(explicit.taylor(net, x, y, q))
    if form == "r_approx":
        c0 = S if includes_strength else 1.0
        h1 = _h_not_squared(net, x, y)
        kinds = [
            ("H", None, ra),
            ("label", "true label used where a sampled one is specified (value matches the "
                      "loss-Jacobian variant R̃_approx, eq. 5.1)",
             np.asarray(explicit.r_approx(net, x, y, hessian="loss_jacobian"))),
            ("identity", "identity Hessian used (H_out replaced by I)",
             np.asarray(explicit.r_approx(net, x, y, hessian="identity"))),
            ("h", "h not squared (weights h_k instead of h_k²)", h1),
            ("taylor", "full Hessian diagonal (R_taylor) instead of its Gauss–Newton part",
             rt / S),
        ]
        if includes_strength:
            constants = [("S", None, S),
                         ("1", "constant missing: value is R_approx without q/(2(1−q))", 1.0),
                         ("2S", "constant q/(1−q) instead of q/(2(1−q))", 2 * S)]
            what = "strength(q)·R_approx"
        else:
            constants = [("1", None, 1.0),
                         ("S", "constant q/(2(1−q)) included although includes_strength=False",
                          S),
                         ("2S", "constant q/(1−q) included although includes_strength=False",
                          2 * S),
                         ("2", "factor 2: value is 2·R_approx", 2.0)]
            what = "R_approx (no constant)"
        alts = _combine(constants, kinds) + _site_alts(net, sites_ra, c0)
        return _Reference(what, c0 * ra, tuple(alts))
    sites_rt = {s: np.asarray(explicit.taylor(net, x, y, q, sites=s)) for s in net.site_names}
    if form == "taylor":
        constants = [("S", None, 1.0),
                     ("1", "constant missing: value is the Hessian term without q/(2(1−q))",
                      1.0 / S),
                     ("2S", "constant q/(1−q) instead of q/(2(1−q))", 2.0)]
        kinds = [("T", None, rt),
                 ("GN", "Gauss–Newton part only (model-Hessian term dropped): value is "
                        "strength(q)·R_approx", S * ra)]
        alts = _combine(constants, kinds) + _site_alts(net, sites_rt, 1.0)
        return _Reference("R_taylor", rt, tuple(alts))
    rd = np.asarray(exact.explicit_regularizer(net, x, y, q))
    clean = np.asarray(net.loss_value(x, y))
    sites_rd = {s: np.asarray(exact.explicit_regularizer(net, x, y, q, sites=s))
                for s in net.site_names}
    alts = [
        _Alt("clean", "clean loss not subtracted: value is E_η ℓ(F(x,η)), not R_drop",
             rd + clean),
        _Alt("taylor", "second-order Taylor R_taylor (eq. 4.2) instead of the exact R_drop", rt),
        _Alt("approx", "strength(q)·R_approx (eq. 4.4) instead of the exact R_drop", S * ra),
        _Alt("unscaled", "keep masks not scaled by 1/(1−q) (non-inverted dropout)",
             _unscaled_masks(net, x, y, q, clean)),
        _Alt("keep", "q used as the keep probability (R_drop at drop probability 1−q)",
             np.asarray(exact.explicit_regularizer(net, x, y, 1.0 - q))),
        *_site_alts(net, sites_rd, 1.0),
    ]
    return _Reference("R_drop (exact)", rd, tuple(alts))


# ----- what the user's function returned ----------------------------------------------------

def _as_values(out: Any, n: int, reduction: str) -> tuple[np.ndarray, bool, np.dtype]:
    """The user's output as float64 ``(n,)`` or ``()``, whether it is a batch mean, its dtype.

    Raises :class:`CallFailed` with a plain message for anything else.
    """
    if isinstance(out, bool) or out is None or isinstance(out, str | bytes):
        raise CallFailed(f"fn returned {type(out).__name__}; expected per-example values "
                         f"({n},) or their mean (a number)")
    if isinstance(out, int | float | np.number):
        a = np.asarray(out)
    elif isinstance(out, np.ndarray) or hasattr(out, "__array__") or hasattr(out, "__dlpack__"):
        try:
            a = np.asarray(to_numpy(out))
        except Exception as exc:  # a foreign array that does not convert is the user's output
            raise CallFailed(f"fn returned {type(out).__name__} that does not convert to numpy "
                             f"({type(exc).__name__}: {exc})") from exc
    else:
        raise CallFailed(f"fn returned {type(out).__name__}; expected per-example values "
                         f"({n},) or their mean (a number)")
    if a.dtype.kind != "f":
        raise CallFailed(f"fn returned dtype {a.dtype}; expected floating values")
    per_example = a.shape == (n,)
    scalar = a.shape in ((), (1,)) and not (per_example and reduction != "mean")
    if reduction == "none" and not per_example:
        raise CallFailed(f"fn returned shape {a.shape}; reduction='none' expects per-example "
                         f"values of shape ({n},)")
    if reduction == "mean" and a.shape not in ((), (1,)):
        raise CallFailed(f"fn returned shape {a.shape}; reduction='mean' expects one number")
    if not (per_example or scalar):
        raise CallFailed(f"fn returned shape {a.shape}; expected per-example values ({n},) or "
                         f"their mean (a number) for a batch of {n} examples")
    bad = ~np.isfinite(a)
    if bad.any():
        raise CallFailed(f"fn returned {int(bad.sum())} NaN/inf values among {a.size}",
                         nonfinite=True)
    vals = a.astype(np.float64)
    return (vals.reshape(()) if scalar else vals), scalar, a.dtype


def _rtol(dtype: np.dtype) -> float:
    """``4·sqrt(eps)`` of the output dtype: room for the roundings of a conditioned computation.

    6e-8 for float64, 1.4e-3 for float32; every bug of the catalogue changes the value by O(1).
    """
    return default_rtol(dtype)


def _rel(v: np.ndarray, r: np.ndarray) -> float:
    """Max-norm relative difference ``‖v − r‖_∞ / ‖r‖_∞`` (robust to examples with ``r ≈ 0``)."""
    scale = float(np.max(np.abs(r)))
    return float(np.max(np.abs(v - r))) / (scale if scale > 0 else 1.0)


# ----- rows --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setup:
    """The validated arguments shared by every row."""

    form: str
    includes_strength: bool
    adapter: Adapter
    reduction: str
    stochastic: bool
    calls: int
    rtol: float | None
    seed: int


def _fmt_vec(a: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in np.atleast_1d(a)) + "]"


def _exact_row(fn: Callable, pb: Problem, q: float, ref: _Reference, setup: _Setup) -> CheckRow:
    """Call a deterministic ``fn`` once and compare with the reference to ``rtol``."""
    rng = np.random.default_rng([setup.seed, pb.index, 0])
    try:
        out = setup.adapter.call(fn, pb, q, train=False, rng=rng)
        v, scalar, dtype = _as_values(out, pb.n, setup.reduction)
    except CallFailed as exc:
        return CheckRow(pb.label, q, verdict=ERROR, detail=str(exc))
    tol = setup.rtol if setup.rtol is not None else _rtol(dtype)
    r = float(np.mean(ref.values)) if scalar else ref.values
    err = _rel(v, r)
    ok = err <= tol
    if scalar:
        detail = (f"expected {r:.8g} ({ref.what}, mean over {pb.n} examples), observed "
                  f"{float(v):.8g}; relative error {err:.3g}")
    else:
        i = int(np.argmax(np.abs(v - r)))
        detail = (f"expected {ref.what} = {_fmt_vec(r)}, observed {_fmt_vec(v)}; worst example "
                  f"{i}: expected {r[i]:.8g}, observed {v[i]:.8g}; relative error {err:.3g}")
    alts = {a.key: (a.phrase, float(np.mean(a.values)) if scalar else a.values)
            for a in ref.alts}
    if scalar:
        alts["sum"] = ("sum instead of mean over the batch", pb.n * float(r))
    random = False
    if not ok:  # a random estimator checked as deterministic fails; say so plainly
        try:
            again = setup.adapter.call(fn, pb, q, train=False,
                                       rng=np.random.default_rng([setup.seed, pb.index, 9]))
            random = _rel(_as_values(again, pb.n, setup.reduction)[0], v) > tol
        except CallFailed:
            pass
        if random:
            detail += "; a second call returned a different value: pass stochastic=True"
    return CheckRow(pb.label, q, err, tol, verdict=PASS if ok else FAIL, detail=detail,
                    info={"observed": v, "reference": r, "alts": alts, "tol": tol,
                          "stochastic": False, "net": pb.index, "random": random})


def _t_row(fn: Callable, pb: Problem, q: float, ref: _Reference, setup: _Setup,
           calls: int, stage: int) -> CheckRow:
    """Call a stochastic ``fn`` ``calls`` times; t-test that the mean is the reference.

    One draw is a call's batch mean; ``UNIT`` draws average into one unit; the t statistic
    ``(m − r)/se`` uses the units' standard error, floored at the rounding tolerance
    ``rtol·|r|`` (a deterministic function declared stochastic then passes when it is right),
    with ``units − 1`` degrees of freedom.
    """
    rng = np.random.default_rng([setup.seed, pb.index, stage])
    draws = np.empty(calls)
    scalar, tol = False, setup.rtol
    try:
        for j in range(calls):
            out = setup.adapter.call(fn, pb, q, train=False, rng=rng)
            v, scalar, dtype = _as_values(out, pb.n, setup.reduction)
            draws[j] = float(np.mean(v))
            tol = setup.rtol if setup.rtol is not None else _rtol(dtype)
    except CallFailed as exc:
        return CheckRow(pb.label, q, verdict=ERROR, detail=str(exc))
    units = calls // UNIT
    means = draws[: units * UNIT].reshape(units, UNIT).mean(axis=1)
    r = float(np.mean(ref.values))
    m = float(means.mean())
    se = math.sqrt(float(means.var(ddof=1)) / units + (tol * abs(r)) ** 2)
    t = (m - r) / se if se > 0 else (0.0 if m == r else math.copysign(math.inf, m - r))
    p = float(min(1.0, 2.0 * stats.t.sf(abs(t), units - 1)))
    alts = {a.key: (a.phrase, float(np.mean(a.values))) for a in ref.alts}
    if scalar:
        alts["sum"] = ("sum instead of mean over the batch", pb.n * r)
    detail = (f"mean of {calls} calls {m:.6g} ± {se:.2g} (standard error), expected {r:.6g} "
              f"({ref.what}, mean over {pb.n} examples); t = {t:.3g} on {units - 1} d.o.f.")
    return CheckRow(pb.label, q, abs(t), None, p, detail=detail,
                    info={"observed": m, "reference": r, "se": se, "dof": units - 1,
                          "alts": alts, "stochastic": True, "net": pb.index})


# ----- Holm, re-test, diagnosis -------------------------------------------------------------

def _fits(row: CheckRow, value: Any, crit: float) -> bool:
    """Whether the row's observed value matches an alternative reference ``value``."""
    info = row.info
    if info["stochastic"]:
        return abs(info["observed"] - value) <= crit * info["se"]
    return _rel(info["observed"], value) <= info["tol"]


def diagnose_regularizer(rows: Sequence[CheckRow], alpha: float) -> str | None:
    """Name the bug alternatives that fit every failed row (None if none failed).

    A deterministic row fits an alternative within its own tolerance; a stochastic one when the
    alternative is within ``crit`` standard errors, ``crit`` the two-sided t critical value at
    the Bonferroni level ``alpha/m`` (an alternative the test would not reject).  Without a
    fitting pattern: a constant ratio to the reference, or the worst relative error.
    """
    failed = [r for r in rows if r.verdict == FAIL]
    errors = [r for r in rows if r.verdict == ERROR]
    if not failed:
        return errors[0].detail if errors else None
    m = max(1, sum(r.is_test for r in rows))
    named: dict[str, str] | None = None
    for r in failed:
        crit = (float(stats.t.isf(alpha / (2 * m), r.info["dof"])) if r.info["stochastic"]
                else 0.0)
        here = {k: ph for k, (ph, v) in r.info["alts"].items() if _fits(r, v, crit)}
        named = here if named is None else {k: ph for k, ph in named.items() if k in here}
    if named:
        text = " | ".join(dict.fromkeys(named.values()))
    elif any(r.info.get("random") for r in failed):
        text = "fn is random (two calls differ): declare stochastic=True to test its mean"
    else:
        ratios = np.concatenate([np.atleast_1d(np.asarray(r.info["observed"]))
                                 / np.atleast_1d(np.asarray(r.info["reference"]))
                                 for r in failed])
        c = float(np.median(ratios))
        if np.all(np.abs(ratios - c) <= 1e-6 * abs(c)):
            text = f"value is {c:.6g} × the reference on every failed net (an unknown constant)"
        else:
            worst = max(failed, key=lambda r: r.statistic or 0.0)
            text = (f"matches no known bug pattern (worst: {worst.name} at q = {worst.q:g}, "
                    f"statistic {worst.statistic:.3g})")
    if errors:
        text += f"; {errors[0].detail}"
    return text


# ----- the checker --------------------------------------------------------------------------

@dataclass(frozen=True)
class RegularizerReport(CheckReport):
    """The report of :func:`check_explicit_regularizer`: one row per network and ``q``."""

    form: str = "r_approx"
    q: tuple[float, ...] = ()
    nets: tuple[str, ...] = ()


def check_explicit_regularizer(
    fn: Callable[..., Any],
    *,
    form: str = "r_approx",
    q: float | Sequence[float] = 0.3,
    includes_strength: bool = True,
    sizes: Sequence[Sequence[int]] = DEFAULT_SIZES,
    activations: str | Sequence[str] = DEFAULT_ACTIVATIONS,
    sites: Iterable[str] | str | None = None,
    n_nets: int = 3,
    examples: int = 6,
    scale: float = 1.0,
    nets: Sequence[MLP] | None = None,
    adapter: Adapter | str = "numpy",
    reduction: str = "auto",
    stochastic: bool = False,
    calls: int = 256,
    rtol: float | None = None,
    alpha: float = 1e-6,
    seed: int = 0,
    retest_failures: bool = True,
    raise_on_failure: bool = False,
) -> RegularizerReport:
    """Check that ``fn`` computes dropout's explicit regularizer in the declared ``form``.

    Args:
        fn: the user's regularizer, called through ``adapter``: by default
            ``fn(weights, biases, x, y, q, *, sites, activation, rng)`` (keywords passed when
            accepted; see :mod:`dropcheck.checks.adapters`), with ``adapter="torch"``
            ``fn(model, x, y, q, *, sites, rng)`` for a ``torch.nn.Sequential`` in eval mode.
            It returns per-example values ``(n,)`` or their mean over the batch.
        form: ``"r_approx"`` (eq. 4.4), ``"taylor"`` (eq. 4.2) or ``"r_drop"`` (exact).
        q: drop probability of every site, or a sequence (one row per network and ``q``).
            Avoid 0.5 alone: there ``2·strength = 1`` and two bugs give the same value.
        includes_strength: for ``form="r_approx"``, whether ``fn`` includes the constant
            ``q/(2(1−q))`` (else the paper's raw ``R_approx`` is expected).
        sizes: layer sizes of the random networks, cycled over the ``n_nets`` nets.
        activations: activation names, cycled the same way.
        sites: dropout sites of every network (default: every hidden layer).
        n_nets: number of random networks.
        examples: batch size ``n`` of every network.
        scale: multiplies the LeCun-initialized weights.
        nets: the caller's own networks (float64 numpy MLPs) instead of random ones.
        adapter: ``"numpy"``, ``"torch"`` or an adapter object.
        reduction: ``"auto"`` (shape decides), ``"none"`` (per-example) or ``"mean"``.
        stochastic: ``fn`` is a random estimator: call it ``calls`` times and t-test the mean.
        calls: calls per network and ``q`` of a stochastic ``fn`` (twice that in a re-test).
        rtol: tolerance of the deterministic comparison; default ``4·sqrt(eps)`` of the output
            dtype.
        alpha: bound on the probability that a correct stochastic estimator fails (Holm over
            its rows, with the re-test); deterministic rows cannot false-alarm.
        seed: seeds the networks, the batches and the ``rng`` handed to ``fn``.
        retest_failures: re-test a failed t-test once on fresh calls before failing it.
        raise_on_failure: raise :class:`~dropcheck.checks.DropcheckError` on failure.

    Returns:
        A :class:`RegularizerReport`; ``str(report)`` is the table.

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it).
        DropcheckError: a check failed and ``raise_on_failure`` is true.
    """
    grid, alpha, seed = grid_args(fn, q, alpha, seed)
    form = check_choice(form, FORMS, "form")
    if not isinstance(includes_strength, bool):
        raise TypeError(f"includes_strength must be True or False, got {includes_strength!r}")
    if form != "r_approx" and not includes_strength:
        raise ValueError(f"includes_strength=False applies to form='r_approx' only: {form} "
                         f"includes q/(2(1−q)) by definition")
    reduction = check_choice(reduction, _REDUCTIONS, "reduction")
    calls = check_positive_int(calls, "calls", minimum=2 * UNIT)
    if rtol is not None and not (isinstance(rtol, int | float) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    problems = build_problems(nets, sizes, activations, sites, n_nets, examples, scale, seed)
    setup = _Setup(form, includes_strength, get_adapter(adapter), reduction, bool(stochastic),
                   calls, rtol, seed)

    def rows_for(pb: Problem, v: float, ref: _Reference, stage: int) -> list[CheckRow]:
        if setup.stochastic:  # stage 2 re-tests on fresh calls, twice as many
            return [_t_row(fn, pb, v, ref, setup, stage * calls, stage)]
        return [_exact_row(fn, pb, v, ref, setup)]  # exact rows are never re-tested

    rows = run_grid(problems, grid, lambda pb, v: _reference(pb, v, form, includes_strength),
                    rows_for, alpha, retest_failures)

    sizes_lines = [f"{pb.label}: {pb.n} examples, seed stream [{seed}, {pb.index}]"
                   for pb in problems]
    if setup.stochastic:
        sizes_lines.append(f"{calls} calls per net and q ({calls // UNIT} units of {UNIT}), "
                           f"t-tests Holm-corrected at alpha = {alpha:g}")
    notes = []
    if not setup.stochastic:
        notes.append("deterministic: one call per net and q; ‖v − r‖_∞ ≤ rtol·‖r‖_∞ "
                     "(rtol = 4·sqrt(eps) of the output dtype unless given); no false alarms")
    else:
        notes.append(f"a correct estimator fails with probability <= alpha = {alpha:g} (t-tests "
                     "on unit means, Holm" + (", re-tested on fresh calls)" if retest_failures
                                               else ")"))
    if set(grid) == {0.5}:
        notes.append("at q = 0.5 alone 2·strength(q) = 1: 'constant missing' and 'constant "
                     "q/(1−q)' give the same value; add another q")
    extra = {k: v for k, v in (
        ("includes_strength", None if includes_strength else False),
        ("stochastic", True if setup.stochastic else None),
        ("calls", calls if setup.stochastic and calls != 256 else None)) if v is not None}
    title, reproduce = call_text("check_explicit_regularizer", fn, ("form", form), grid,
                                 seed=seed, n_nets=len(problems), adapter=setup.adapter,
                                 extra=extra, own_random_state=setup.stochastic)
    report = RegularizerReport(
        title=title,
        rows=tuple(rows),
        alpha=alpha,
        seed=seed,
        diagnosis=diagnose_regularizer(rows, alpha),
        sample_sizes=tuple(sizes_lines),
        notes=tuple(notes),
        reproduce=reproduce,
        form=form, q=grid, nets=tuple(pb.label for pb in problems),
    )
    return finish(report, raise_on_failure)


def assert_regularizer_matches(fn: Callable[..., Any], **kwargs: Any) -> RegularizerReport:
    """Run :func:`check_explicit_regularizer` and raise ``DropcheckError`` if a check failed.

    The error message is the report: expected and observed values per network, the worst
    example, the diagnosis and the call that reproduces it.  Returns the report on success.
    """
    return check_explicit_regularizer(fn, raise_on_failure=True, **kwargs)
