"""Argument checks shared by the public functions: each error names the argument."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def check_q(q: Any, name: str = "q") -> float:
    """Return ``q`` as a float after checking it is a drop probability in [0, 1)."""
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float drop probability in [0, 1), got {q!r}") from None
    if not math.isfinite(qf) or not 0.0 <= qf < 1.0:
        raise ValueError(
            f"{name} must be a drop probability in [0, 1) (q = 1 drops everything), got {q!r}"
        )
    return qf


def check_q_sites(q: Any, sites: tuple[str, ...], name: str = "q") -> dict[str, float]:
    """Normalize ``q`` (a float, or a dict site -> q) to a dict over ``sites``."""
    if isinstance(q, Mapping):
        unknown = set(q) - set(sites)
        if unknown:
            raise ValueError(f"{name} names sites {sorted(unknown)} not among {list(sites)}")
        missing = set(sites) - set(q)
        if missing:
            raise ValueError(f"{name} has no drop probability for sites {sorted(missing)}")
        return {s: check_q(q[s], f"{name}[{s!r}]") for s in sites}
    qf = check_q(q, name)
    return dict.fromkeys(sites, qf)


def check_positive_int(v: Any, name: str, minimum: int = 1) -> int:
    """Return ``v`` as an int after checking ``v >= minimum``."""
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise TypeError(f"{name} must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def check_finite(a: Any, xp: Any, name: str) -> None:
    """Raise ValueError if array ``a`` holds NaN or infinity."""
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} must be finite; it holds NaN or infinity")


def check_finite_scalar(v: Any, name: str) -> float:
    """Return ``v`` as a float after checking it is finite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a finite number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return f


def check_choice(v: Any, choices: tuple[str, ...], name: str) -> str:
    """Check ``v`` is one of ``choices``."""
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {v!r}")
    return v


def check_nonnegative(v: Any, name: str) -> float:
    """Return ``v`` as a float after checking it is finite and ``>= 0``."""
    f = check_finite_scalar(v, name)
    if f < 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return f
