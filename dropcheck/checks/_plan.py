"""How many calls of a dropout layer ``check_dropout`` makes, from a power calculation.

Each statistical test of a grid point is designed to detect a *design effect* with power at
least ``1 - beta`` at the Holm-worst level ``alpha / m`` (``m`` = number of tests in the run):

===========================  ===========================  =====================================
test                         design effect                smallest effect in the bug catalogue
===========================  ===========================  =====================================
drop rate (binomial)         rate off by ``RATE_EFFECT``  0.05 (uniform rounded to 10 levels)
mean preserved (t-test)      ``E[y/x]`` off by 2 %        5.6 % (the same bug at q = 0.1)
independence (Fisher 2x2)    correlation ``CORR_EFFECT``  1 (a mask shared along an axis/calls)
q = 0 is identity (exact)    an atom ``ZERO_ATOM`` at 0   2**-8 (an 8-bit random source)
===========================  ===========================  =====================================

The number of calls is the largest any test needs (at least ``MIN_CALLS``, even, at most
``max_calls``); the achieved power of every test is recorded so the report can say when a cap
or a tiny input left it short.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dropcheck.checks import _stats

__all__ = ["RATE_EFFECT", "MEAN_EFFECT", "CORR_EFFECT", "ZERO_ATOM", "BETA", "GridPlan",
           "plan_grid_point", "zero_calls", "independence_name"]

RATE_EFFECT = 0.01
MEAN_EFFECT = 0.02
CORR_EFFECT = 0.05
ZERO_ATOM = 2.0**-16
BETA = 1e-6
#: expected kept *and* dropped mask entries per mean-test unit, so a unit mean is near normal
#: (skewness of its binomial count <= 1/20)
MIN_UNIT_COUNT = 400
MIN_CALLS = 4


#: what the letters of a declared ``layout`` name (``check_dropout(..., layout="tbf")``)
AXIS_NAMES = {"b": "the batch", "t": "time steps", "f": "features", "c": "channels",
              "h": "height", "w": "width", "d": "depth"}


def independence_name(axis: int, ndim: int, layout: str | None = None) -> str:
    """Name the independence test along an input axis.

    With a declared ``layout`` (one letter per axis, :data:`AXIS_NAMES`) the axis is named by
    it; else axis 0 holds examples and the last axis units.
    """
    if layout is not None:
        return f"independent across {AXIS_NAMES[layout[axis]]} (axis {axis})"
    if ndim == 1:
        return "independent across units (axis 0)"
    if axis == 0:
        return "independent across examples (axis 0)"
    if axis == ndim - 1:
        return f"independent across units (axis {axis})"
    return f"independent along axis {axis}"


@dataclass(frozen=True)
class GridPlan:
    """Sample sizes for one drop probability ``q`` and the power they give.

    ``entries`` is the number of independent mask entries per call (the input size with the
    shared axes collapsed); ``unit_calls`` calls are averaged into one mean-test unit;
    ``power`` maps each test name to its power at the design effect.
    """

    q: float
    calls: int
    entries: int
    unit_calls: int
    level: float
    power: Mapping[str, float]

    def describe(self, shape: tuple[int, ...]) -> str:
        """One line for the report."""
        units = self.calls // self.unit_calls
        unit = "call" if self.unit_calls == 1 else f"{self.unit_calls} calls"
        return (f"q={self.q:g}: {self.calls} calls x {shape}, {self.entries} independent mask "
                f"entries per call; mean test on {units} per-{unit} means")


@functools.lru_cache(maxsize=256)
def plan_grid_point(q: float, mask_shape: tuple[int, ...], test_axes: tuple[int, ...],
                    level: float, beta: float, max_calls: int,
                    layout: str | None = None) -> GridPlan:
    """Plan the calls at drop probability ``q`` (``0 < q < 1``).

    ``mask_shape`` is the input shape with shared axes set to 1, ``test_axes`` the axes whose
    independence is tested (adjacent disjoint pairs along each), ``level`` the per-test level.
    Cached: the power integrals cost tens of milliseconds and repeat across calls.
    """
    entries = math.prod(mask_shape)
    pairs = {a: entries // mask_shape[a] * (mask_shape[a] // 2) for a in test_axes}
    n_pairs = _stats.pairs_sample_size(CORR_EFFECT, level, beta)
    unit_calls = max(1, math.ceil(MIN_UNIT_COUNT / (entries * min(q, 1 - q))))
    d = MEAN_EFFECT / math.sqrt(q / ((1 - q) * unit_calls * entries))
    units = _stats.mean_units(d, level, beta, limit=max(2, max_calls // unit_calls))
    need = [
        MIN_CALLS,
        math.ceil(_stats.rate_sample_size(q, RATE_EFFECT, level, beta) / entries),
        2 * math.ceil(n_pairs / entries),
        units * unit_calls,
        *(math.ceil(n_pairs / p) for p in pairs.values()),
    ]
    calls = min(max_calls, 2 * math.ceil(max(need) / 2))
    if calls < 2 * unit_calls:  # capped: keep at least two units (the report says power fell)
        unit_calls = max(1, calls // 2)
        d = MEAN_EFFECT / math.sqrt(q / ((1 - q) * unit_calls * entries))
    power = {
        "drop rate": _stats.rate_power(calls * entries, q, RATE_EFFECT, level),
        "mean preserved": _stats.mean_power(calls // unit_calls, d, level),
        "independent across calls": _stats.pairs_power(calls // 2 * entries, CORR_EFFECT, level),
    }
    for a, p in pairs.items():
        name = independence_name(a, len(mask_shape), layout)
        power[name] = _stats.pairs_power(calls * p, CORR_EFFECT, level)
    return GridPlan(q, calls, entries, unit_calls, level, MappingProxyType(power))


def zero_calls(size: int, beta: float, max_calls: int) -> int:
    """Calls at q = 0 to see a drop of probability ``ZERO_ATOM`` per entry w.p. ``1 - beta``."""
    return max(2, min(max_calls, math.ceil(_stats.zero_atom_sample_size(ZERO_ATOM, beta) / size)))
