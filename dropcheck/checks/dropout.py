"""``check_dropout``: a gradcheck for dropout layers.

Inverted dropout with drop probability ``q`` keeps each entry independently with probability
``1 - q`` and scales the kept entries by ``1/(1 - q)``, so ``E[y] = x`` (paper-notes, N1).  The
checker calls the user's layer many times on an input whose entries are distinct and nonzero,
so every entry is identified (``y == 0``: dropped; otherwise ``y / x`` is its scale), and tests:

- **drop rate**: the count of dropped mask entries is Binomial(n, q) (exact binomial test);
- **inverted scaling**: every kept value equals ``x/(1 - q)`` up to rounding (exact check);
- **mean preserved**: the per-call means of ``y/x`` have mean 1 (t-test on per-call means,
  which stay valid when masks are correlated, unlike pooled entries);
- **independence** along every axis (adjacent disjoint pairs) and across calls (call ``2k``
  against ``2k + 1``): Fisher's exact test that paired mask entries are independent;
- **shared axes**: with ``shared_axes`` declared (variational / spatial dropout) the mask is
  constant along them (exact), and the tests above run on the collapsed mask;
- **eval mode** is the identity (exact), **backward** uses the forward mask and scale (exact,
  with ``vjp_fn``), **q = 0** leaves the input unchanged and **q = 0.999** stays finite (exact).

The test rows are Holm-corrected together, so a correct layer fails with probability at most
``alpha``; exact rows have no false alarms.  A failed test is re-tested once on a fresh input
with twice the calls, and fails only if it fails again (this cannot raise the false-alarm
probability).  Sample sizes come from :mod:`dropcheck.checks._plan`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropcheck._validate import check_choice, check_positive_int, check_q
from dropcheck.checks import _plan, _runner, _stats
from dropcheck.checks._args import check_alpha, fn_name
from dropcheck.checks._calls import (
    RATE_MODES,
    CallFailed,
    bind,
    call,
    checked_output,
    infer_rate_mode,
)
from dropcheck.checks._diagnosis import diagnose_dropout
from dropcheck.checks._report import ERROR, FAIL, PASS, SKIP, CheckReport, CheckRow, apply_holm
from dropcheck.checks._runner import finish

__all__ = ["DEFAULT_Q", "HIGH_Q", "DropoutReport", "check_dropout", "assert_dropout_correct"]

#: asymmetric: at q = 0.5 a keep/drop swap and 1/q scaling are invisible
DEFAULT_Q = (0.1, 0.3, 0.7)
#: the edge rate close to 1 checked for NaN/inf
HIGH_Q = 0.999
_EXACT_CALLS = 2  # eval, vjp and q = 0.999 checks: one wrong call fails them


@dataclass(frozen=True)
class DropoutReport(CheckReport):
    """The report of :func:`check_dropout`: rows per drop probability plus the sample plan."""

    q: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()
    dtype: str = "float64"
    plans: tuple[_plan.GridPlan, ...] = ()


@dataclass(frozen=True)
class _Setup:
    """The validated arguments shared by every grid point."""

    shape: tuple[int, ...]
    dtype: np.dtype
    shared: tuple[int, ...]
    test_axes: tuple[int, ...]
    mode: str
    to_fw: Callable[[np.ndarray], Any]
    hint: str
    layout: str | None = None


def _probe(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Distinct nonzero entries of both signs, magnitudes in [1, 2), in random positions."""
    n = math.prod(shape)
    mag = 1.0 + rng.permutation(n) / n
    return (mag * rng.choice([-1.0, 1.0], size=n)).astype(dtype).reshape(shape)


def _tolerance(dtype: np.dtype, q: float) -> float:
    """Relative rounding allowed in ``x/(1-q)``: a few ulps, plus rounding ``q`` in ``dtype``.

    Computing ``1 - q`` after rounding ``q`` to ``dtype`` costs up to ``eps q/(1-q)``
    relative, hence ``4 eps/(1 - q)``.
    """
    return 4.0 * float(np.finfo(dtype).eps) / (1.0 - q)


def _outputs(layer: Callable, x: np.ndarray, calls: int, setup: _Setup,
             who: str) -> Iterator[np.ndarray]:
    """Call ``layer`` ``calls`` times on fresh copies of ``x``; yield the checked outputs."""
    for _ in range(calls):
        yield checked_output(call(layer, setup.to_fw(x.copy()), who=who, hint=setup.hint), x, who)


@dataclass(frozen=True)
class _Sample:
    """What the checks need from the training-mode calls at one drop probability.

    ``dropped`` is the drop pattern (calls on axis 0), ``means`` the per-call means of
    ``y/x``, ``lo`` and ``hi`` the range of ``y/x`` over kept entries (``lo > hi`` if none was
    kept) and ``typical`` the median kept ``y/x`` of the first call that kept any.
    """

    dropped: np.ndarray
    means: np.ndarray
    lo: float
    hi: float
    typical: float


def _sample(layer: Callable, x: np.ndarray, calls: int, setup: _Setup) -> _Sample:
    """Call the training-mode ``layer``; keep the drop pattern and a few statistics per call."""
    x64 = x.astype(np.float64)
    dropped = np.empty((calls, *x.shape), dtype=bool)
    means = np.empty(calls)
    lo, hi, typical = math.inf, -math.inf, math.nan
    for c, y in enumerate(_outputs(layer, x, calls, setup, "fn")):
        ratio = y / x64
        dropped[c] = y == 0
        means[c] = ratio.mean()
        kept = ratio[~dropped[c]]
        if kept.size:
            lo, hi = min(lo, float(kept.min())), max(hi, float(kept.max()))
            if math.isnan(typical):
                typical = float(np.median(kept))
    return _Sample(dropped, means, lo, hi, typical)


def _scaling_row(s: _Sample, q: float, dtype: np.dtype) -> CheckRow:
    """Exact check: every kept value is ``x/(1 - q)`` to within :func:`_tolerance`."""
    if s.lo > s.hi:
        return CheckRow("inverted scaling", q, verdict=SKIP, detail="no kept values")
    tol = _tolerance(dtype, q)
    dev = max(abs(s.lo * (1.0 - q) - 1.0), abs(s.hi * (1.0 - q) - 1.0))
    consistent = s.hi - s.lo <= tol * abs(s.typical)
    ok = dev <= tol
    detail = "" if ok else (f"kept/x = {s.typical:.6g}, expected 1/(1-q) = {1 / (1 - q):.6g}"
                            if consistent else f"kept/x ranges over [{s.lo:.4g}, {s.hi:.4g}]")
    return CheckRow("inverted scaling", q, dev, tol, verdict=PASS if ok else FAIL, detail=detail,
                    info={"scale": s.typical, "consistent": consistent})


def _pair_row(name: str, q: float, a: np.ndarray, b: np.ndarray, axis: int | None) -> CheckRow:
    """Fisher test that paired mask entries ``a``, ``b`` are independent (statistic: phi)."""
    phi, p, (n11, n10, n01, n00) = _stats.fisher_2x2(a, b)
    n = n11 + n10 + n01 + n00
    return CheckRow(name, q, phi, None, p,
                    detail=f"co-dropped {n11 / n:.4g} of {n} pairs, independent: "
                           f"{(n11 + n10) * (n11 + n01) / n**2:.4g}",
                    info={"axis": axis, "identical": n10 + n01 == 0 and phi > 0})


def _test_rows(s: _Sample, q: float, plan: _plan.GridPlan, setup: _Setup) -> list[CheckRow]:
    """Drop rate, mean and independence tests of one sample of calls."""
    keep = [slice(None)] + [slice(0, 1) if a in setup.shared else slice(None)
                            for a in range(len(setup.shape))]
    mask = s.dropped[tuple(keep)]
    k, n = int(mask.sum()), mask.size
    rows = [CheckRow("drop rate", q, k / n, None, _stats.binomial_test(k, n, q),
                     detail=f"{k} of {n} mask entries dropped", info={"rate": k / n})]
    units = len(s.means) // plan.unit_calls
    means = s.means[: units * plan.unit_calls].reshape(units, -1).mean(axis=1)
    t, p = _stats.t_test_mean(means, 1.0)
    rows.append(CheckRow("mean preserved", q, float(means.mean()), None, p,
                         detail=f"mean of y/x over {units} units (t = {t:.3g})",
                         info={"mean": float(means.mean())}))
    for a in setup.test_axes:
        ax, half = a + 1, mask.shape[a + 1] // 2
        first = mask[(slice(None),) * ax + (slice(0, 2 * half, 2),)]
        second = mask[(slice(None),) * ax + (slice(1, 2 * half, 2),)]
        rows.append(_pair_row(_plan.independence_name(a, len(setup.shape), setup.layout), q,
                              first, second, a))
    half = len(mask) // 2
    rows.append(_pair_row("independent across calls", q, mask[0:2 * half:2], mask[1:2 * half:2],
                          None))
    return rows


def _shared_row(dropped: np.ndarray, q: float, setup: _Setup) -> CheckRow:
    """Exact check that the drop pattern is constant along the declared shared axes.

    Every entry must equal the first entry along each shared axis, hence (the axes being
    connected) the whole slice spanned by them.
    """
    same = np.ones(dropped.shape, dtype=bool)
    for a in setup.shared:
        same &= dropped == np.take(dropped, [0], axis=a + 1)
    bad = float(1.0 - same.mean())
    return CheckRow("mask constant along shared axes", q, bad, 0.0,
                    verdict=PASS if bad == 0 else FAIL,
                    detail=f"{bad:.3g} of entries differ from the first entry along "
                           f"shared_axes {setup.shared}")


def _train_rows(fn: Callable, q: float, x: np.ndarray, plan: _plan.GridPlan, setup: _Setup,
                exact: bool) -> list[CheckRow]:
    """All rows of the training-mode layer at one grid point (only test rows if not ``exact``)."""
    try:
        s = _sample(bind(fn, setup.mode, q, "fn"), x, plan.calls, setup)
    except CallFailed as exc:
        return [CheckRow("fn output", q, verdict=ERROR, detail=str(exc))]
    rows = []
    if exact:
        if setup.shared:
            rows.append(_shared_row(s.dropped, q, setup))
        rows.append(_scaling_row(s, q, setup.dtype))
    return rows + _test_rows(s, q, plan, setup)


def _eval_row(eval_fn: Callable, q: float, x: np.ndarray, setup: _Setup) -> CheckRow:
    """Exact check that the eval-mode layer returns its input unchanged."""
    name = "eval is identity"
    try:
        y = np.stack(list(_outputs(bind(eval_fn, setup.mode, q, "eval_fn"), x, _EXACT_CALLS,
                                   setup, "eval_fn")))
    except CallFailed as exc:
        return CheckRow(name, q, verdict=ERROR, detail=str(exc))
    ratio = y.astype(np.float64) / x
    dev = float(np.max(np.abs(ratio - 1.0)))
    scale = float(np.median(ratio))
    info = {"zeros": bool(np.any(y == 0)), "scale": scale,
            "consistent": bool(np.allclose(ratio, scale, rtol=_tolerance(setup.dtype, q), atol=0))}
    detail = "" if dev == 0 else ("eval output has zeros" if info["zeros"]
                                  else f"eval output / input = {scale:.6g}")
    return CheckRow(name, q, dev, 0.0, verdict=PASS if dev == 0 else FAIL, detail=detail,
                    info=info)


def _vjp_rows(vjp_fn: Callable, q: float, x: np.ndarray, g: np.ndarray,
              setup: _Setup) -> list[CheckRow]:
    """Exact checks that ``dx = g * y / x``: backward drops where forward did, same scale."""
    names = ("backward mask = forward mask", "backward scale = forward scale")
    try:
        vjp = bind(vjp_fn, setup.mode, q, "vjp_fn")
        mismatch, dev = 0, 0.0
        for _ in range(_EXACT_CALLS):
            res = call(vjp, setup.to_fw(x.copy()), setup.to_fw(g.copy()), who="vjp_fn",
                       hint=setup.hint)
            if not isinstance(res, tuple | list) or len(res) != 2:
                raise CallFailed(f"vjp_fn returned {type(res).__name__}; expected a pair "
                                 f"(output, input gradient)")
            y = checked_output(res[0], x, "vjp_fn (output)")
            dx = checked_output(res[1], x, "vjp_fn (input gradient)")
            mismatch += int(np.count_nonzero((y == 0) != (dx == 0)))
            kept = (y != 0) & (dx != 0)
            want = g[kept].astype(np.float64) * y[kept] / x[kept]
            if want.size:
                dev = max(dev, float(np.max(np.abs(dx[kept] / want - 1.0))))
    except CallFailed as exc:
        return [CheckRow(names[0], q, verdict=ERROR, detail=str(exc))]
    n = _EXACT_CALLS * x.size
    tol = 2 * _tolerance(setup.dtype, q)  # two roundings: forward and backward scale
    return [
        CheckRow(names[0], q, mismatch / n, 0.0, verdict=PASS if mismatch == 0 else FAIL,
                 detail=f"{mismatch} of {n} entries dropped in one pass only"),
        CheckRow(names[1], q, dev, tol, verdict=PASS if dev <= tol else FAIL,
                 detail=f"input gradient / (g y/x) off by {dev:.3g}"),
    ]


def _zero_row(fn: Callable, x: np.ndarray, calls: int, setup: _Setup) -> CheckRow:
    """Exact check at q = 0: every call returns the input unchanged."""
    name = "q = 0 is identity"
    changed = zeroed = 0
    try:
        for y in _outputs(bind(fn, setup.mode, 0.0, "fn"), x, calls, setup, "fn"):
            changed += int(np.count_nonzero(y != x))
            zeroed += int(np.count_nonzero(y == 0))
    except CallFailed as exc:
        return CheckRow(name, 0.0, verdict=FAIL if exc.nonfinite else ERROR, detail=str(exc),
                        info={"nonfinite": exc.nonfinite})
    n = calls * x.size
    return CheckRow(name, 0.0, changed / n, 0.0, verdict=PASS if changed == 0 else FAIL,
                    detail=f"{changed} of {n} entries changed ({zeroed} zeroed)")


def _high_row(fn: Callable, x: np.ndarray, setup: _Setup) -> CheckRow:
    """Exact check at q = HIGH_Q: well-formed, finite outputs."""
    name = f"finite at q = {HIGH_Q:g}"
    try:
        for _ in _outputs(bind(fn, setup.mode, HIGH_Q, "fn"), x, _EXACT_CALLS, setup, "fn"):
            pass
    except CallFailed as exc:
        return CheckRow(name, HIGH_Q, verdict=FAIL if exc.nonfinite else ERROR, detail=str(exc))
    return CheckRow(name, HIGH_Q, 0.0, 0.0)


def _retest(rows: list[CheckRow], fn: Callable, plans: dict[float, _plan.GridPlan],
            setup: _Setup, alpha: float, seed: int) -> list[CheckRow]:
    """Re-test the grid points with a failed test on a fresh input with twice the calls.

    A test fails only if it fails both times (:func:`~dropcheck.checks._runner.retest`, grouped
    by ``q``; the re-tests' error rows are kept).
    """
    fresh: list[np.ndarray] = []  # the fresh probe, drawn once and only if a test failed

    def rerun(v: float) -> list[CheckRow]:
        if not fresh:
            fresh.append(_probe(setup.shape, setup.dtype, np.random.default_rng([seed, 1])))
        plan = dataclasses.replace(plans[v], calls=2 * plans[v].calls)
        return _train_rows(fn, v, fresh[0], plan, setup, exact=False)

    return _runner.retest(rows, lambda r: r.q, rerun, alpha,
                  how=lambda v: f"{2 * plans[v].calls} calls", keep_errors=True)


def _check_grid(q: Any, mode: str) -> tuple[float, ...]:
    """Validate the drop probabilities: one float or a sequence of them, each in [0, 1)."""
    if q is None:
        if mode == "fixed":
            raise ValueError("q is required: fn(x) has its drop probability built in, so pass "
                             "that value as q (or let fn take q: fn(x, q))")
        return DEFAULT_Q
    if isinstance(q, Sequence | np.ndarray) and not isinstance(q, str):
        grid = tuple(dict.fromkeys(check_q(v, f"q[{i}]") for i, v in enumerate(q)))
        if not grid:
            raise ValueError("q must hold at least one drop probability, got an empty sequence")
    else:
        grid = (check_q(q, "q"),)
    if mode == "fixed" and len(grid) > 1:
        raise ValueError(f"q = {q!r} is a grid, but fn(x) takes no drop probability; pass the "
                         f"one q that fn uses, or make fn take it: fn(x, q) or rate='factory'")
    return grid


def _check_shape(shape: Any) -> tuple[int, ...]:
    """Validate the probe input's shape: a non-empty tuple of positive integers."""
    dims = (shape,) if isinstance(shape, int | np.integer) else shape
    try:
        out = tuple(check_positive_int(d, "shape") for d in dims)
    except (TypeError, ValueError):
        out = ()
    if not out:
        raise ValueError(f"shape must be a non-empty tuple of positive integers, e.g. (64, 256);"
                         f" got {shape!r}")
    return out


def _check_layout(layout: Any, ndim: int) -> str | None:
    """Validate ``layout``: one distinct letter of ``_plan.AXIS_NAMES`` per axis, with a ``b``."""
    if layout is None:
        return None
    letters = "".join(_plan.AXIS_NAMES)
    if (not isinstance(layout, str) or len(layout) != ndim or len(set(layout)) != ndim
            or not set(layout) <= set(letters) or "b" not in layout):
        raise ValueError(f"layout must name each of the {ndim} input axes once with a letter "
                         f"of {letters!r} (b batch, t time, f features, c channels, h/w/d "
                         f"spatial), including the batch 'b', e.g. 'tbf'; got {layout!r}")
    return layout


def _check_shared(shared_axes: Any, ndim: int) -> tuple[int, ...]:
    """Validate ``shared_axes``: distinct axes of the input, returned non-negative and sorted."""
    if shared_axes is None:
        return ()
    axes = (shared_axes,) if isinstance(shared_axes, int | np.integer) else tuple(shared_axes)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int | np.integer) or not -ndim <= a < ndim:
            raise ValueError(f"shared_axes must hold axes of the {ndim}-d input, got "
                             f"{shared_axes!r}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"shared_axes repeats an axis: {shared_axes!r}")
    return tuple(sorted(out))


def _check_dtype(dtype: Any) -> np.dtype:
    """Validate the probe dtype: a numpy floating dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f":
        raise ValueError(f"dtype must be a numpy floating dtype such as 'float32', got {dtype!r}")
    return dt


def _sizes(plans: dict[float, _plan.GridPlan], shape: tuple[int, ...], zero: int | None,
           retest: bool) -> tuple[list[str], list[str]]:
    """Sample-size lines and notes on any test whose power fell short of the design."""
    beta = _plan.BETA / 2 if retest else _plan.BETA
    lines = [p.describe(shape) for p in plans.values()]
    short = [f"power only {pw:.6g} for '{name}' at q = {p.q:g} (input too small or max_calls "
             f"reached): use a larger shape"
             for p in plans.values() for name, pw in p.power.items() if pw < 1 - beta]
    if plans:
        level = next(iter(plans.values())).level
        stage = " per stage (>= 1 - 1e-06 with the re-test)" if retest else ""
        lines.append(f"power >= 1 - {beta:.0e}{stage} at level alpha/m = {level:.2g} against")
        lines.append(f"  a drop rate off by {_plan.RATE_EFFECT}, a mean of y/x off by "
                     f"{_plan.MEAN_EFFECT:.0%}, a correlation {_plan.CORR_EFFECT} of paired mask "
                     f"entries")
    if zero is not None:
        miss = (1 - _plan.ZERO_ATOM) ** (zero * math.prod(shape))
        lines.append(f"q=0: {zero} calls; a drop chance of 2**-16 per entry is seen with "
                     f"probability 1 - {miss:.1e}")
    return lines, short


def check_dropout(
    fn: Callable[..., Any],
    q: float | Sequence[float] | None = None,
    shape: int | Sequence[int] = (64, 256),
    *,
    train: bool = True,
    eval_fn: Callable[..., Any] | None = None,
    vjp_fn: Callable[..., Any] | None = None,
    shared_axes: int | Sequence[int] | None = None,
    layout: str | None = None,
    alpha: float = 1e-6,
    seed: int = 0,
    raise_on_failure: bool = False,
    rate: str = "auto",
    to_framework: Callable[[np.ndarray], Any] | None = None,
    dtype: Any = "float64",
    edges: bool = True,
    retest: bool = True,
    max_calls: int = 2000,
) -> DropoutReport:
    """Check that ``fn`` is a correct inverted-dropout layer with drop probability ``q``.

    Args:
        fn: the layer in training mode (or in eval mode with ``train=False``).  It receives
            ``q`` as chosen by ``rate``: ``fn(x)`` (rate built in), ``fn(x, q)``, or a factory
            ``fn(q)`` returning the layer; ``"auto"`` picks factory for a class, ``fn(x, q)``
            when ``fn`` accepts two positional arguments, else ``fn(x)``.  It returns an array
            (numpy, or any array converting through ``__array__`` / DLPack).
        q: a drop probability or a grid of them, each in [0, 1); default ``DEFAULT_Q``.
        shape: shape of the probe input; axis 0 holds examples and the last axis units
            (unless ``layout`` says otherwise).
        train: ``False`` says ``fn`` is in eval mode: only the eval (and vjp) checks run.
        eval_fn: the same layer in eval mode, called like ``fn``; must be the identity.
        vjp_fn: returns ``(output, input_gradient)`` for an input and an upstream cotangent:
            ``vjp_fn(x, g)``, ``vjp_fn(x, g, q)`` or ``vjp_fn(q)(x, g)``, as ``fn``.
        shared_axes: axes along which the mask is meant to be constant (variational dropout
            on time, spatial dropout on H and W); otherwise every axis is tested for structure.
        layout: what each input axis is, one letter per axis: ``b`` batch, ``t`` time, ``f``
            features, ``c`` channels, ``h``/``w``/``d`` spatial (e.g. ``"tbf"`` for PyTorch's
            time-first RNN layout); the report's rows and diagnosis name the axes by it.
            Default: axis 0 holds examples and the last axis units.
        alpha: bound on the probability that a correct layer fails (all tests, Holm).
        seed: seeds the probe input (the layer's own random state is the caller's).
        raise_on_failure: raise :class:`DropcheckError` with the report if a check fails.
        rate: how ``fn`` receives ``q``: ``"auto"``, ``"fixed"``, ``"arg"`` or ``"factory"``.
        to_framework: converts each numpy input before the call, e.g. ``torch.from_numpy``.
        dtype: floating dtype of the probe input; outputs must keep it.
        edges: also check q = 0 (identity) and q = 0.999 (finite), if ``fn`` takes ``q``.
        retest: re-test a failed statistical test once on fresh data before failing it.
        max_calls: cap on calls of ``fn`` per grid point and stage.

    Returns:
        A :class:`DropoutReport`; ``str(report)`` is the table of checks.

    Raises:
        ValueError: an argument is invalid (the message names it).
        TypeError: ``fn``, ``eval_fn``, ``vjp_fn`` or ``to_framework`` is not callable.
        DropcheckError: a check failed and ``raise_on_failure`` is true.
    """
    for arg, f in (("fn", fn), ("eval_fn", eval_fn), ("vjp_fn", vjp_fn),
                   ("to_framework", to_framework)):
        if (f is not None or arg == "fn") and not callable(f):
            raise TypeError(f"{arg} must be callable, got {type(f).__name__}")
    mode = check_choice(rate, RATE_MODES, "rate")
    mode = infer_rate_mode(fn) if mode == "auto" else mode
    grid = _check_grid(q, mode)
    shape = _check_shape(shape)
    shared = _check_shared(shared_axes, len(shape))
    layout = _check_layout(layout, len(shape))
    alpha = check_alpha(alpha)
    dt = _check_dtype(dtype)
    seed = check_positive_int(seed, "seed", minimum=0)
    max_calls = check_positive_int(max_calls, "max_calls", minimum=_plan.MIN_CALLS)

    mask_shape = tuple(1 if a in shared else n for a, n in enumerate(shape))
    setup = _Setup(
        shape=shape, dtype=dt, shared=shared, mode=mode,
        test_axes=tuple(a for a, n in enumerate(mask_shape) if n >= 2),
        to_fw=to_framework or (lambda a: a),
        hint="" if to_framework else "(if fn needs framework tensors, pass to_framework=, "
                                     "e.g. torch.from_numpy)",
        layout=layout,
    )
    beta = _plan.BETA / 2 if retest else _plan.BETA
    stat_q = [v for v in grid if v > 0] if train else []
    level = alpha / max(1, len(stat_q) * (3 + len(setup.test_axes)))
    plans = {v: _plan.plan_grid_point(v, mask_shape, setup.test_axes, level, beta, max_calls,
                                      layout)
             for v in stat_q}
    rng = np.random.default_rng(seed)
    x, g = _probe(shape, dt, rng), _probe(shape, dt, rng)
    check_zero = train and (0.0 in grid or (edges and mode != "fixed"))
    zero = _plan.zero_calls(x.size, beta, max_calls) if check_zero else None

    rows: list[CheckRow] = []
    for v in grid:
        if v in plans:
            rows += _train_rows(fn, v, x, plans[v], setup, exact=True)
        if eval_fn is not None or not train:
            rows.append(_eval_row(eval_fn if train and eval_fn is not None else fn, v, x, setup))
        if vjp_fn is not None:
            rows += _vjp_rows(vjp_fn, v, x, g, setup)
    if zero is not None:
        rows.append(_zero_row(fn, x, zero, setup))
    if train and edges and mode != "fixed":
        rows.append(_high_row(fn, x, setup))
    rows = apply_holm(rows, alpha)
    if retest:
        rows = _retest(rows, fn, plans, setup, alpha, seed)

    sizes, notes = _sizes(plans, shape, zero, retest)
    if train and edges and mode == "fixed":
        notes.append("q = 0 and q = 0.999 not checked: fn has its rate built in (let fn take q: "
                     "fn(x, q), or pass a factory with rate='factory')")
    if stat_q and set(stat_q) == {0.5}:
        notes.append("at q = 0.5 alone a keep/drop swap and 1/q scaling are invisible; "
                     "add another q")
    if train and eval_fn is None:
        notes.append("eval mode not checked: pass eval_fn= (or check fn in eval mode with "
                     "train=False)")
    extra = "".join(f", {k}={v!r}" for k, v in (("shared_axes", shared or None),
                                                 ("layout", layout),
                                                 ("dtype", str(dt) if dt != np.float64 else None),
                                                 ("train", None if train else False)) if v)
    report = DropoutReport(
        title=f"check_dropout({fn_name(fn)})",
        rows=tuple(rows),
        alpha=alpha,
        seed=seed,
        diagnosis=diagnose_dropout(rows, len(shape), layout),
        sample_sizes=tuple(sizes),
        notes=tuple(notes),
        reproduce=f"check_dropout({fn_name(fn)}, q={grid if len(grid) > 1 else grid[0]!r}, "
                  f"shape={shape}, seed={seed}, alpha={alpha:g}{extra}) "
                  f"(the layer's own random state is not reset by dropcheck)",
        q=grid, shape=shape, dtype=str(dt), plans=tuple(plans.values()),
    )
    return finish(report, raise_on_failure)


def assert_dropout_correct(fn: Callable[..., Any], q: float | Sequence[float] | None = None,
                           shape: int | Sequence[int] = (64, 256),
                           **kwargs: Any) -> DropoutReport:
    """Run :func:`check_dropout` and raise :class:`DropcheckError` with the report on failure.

    Returns the report when every check passed (for pytest: a failure shows the table).
    """
    return check_dropout(fn, q, shape, raise_on_failure=True, **kwargs)

