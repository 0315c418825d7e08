"""Name the known dropout bug that fits the failed rows of a ``check_dropout`` report.

Each rule reads the facts a row recorded in ``row.info`` (the observed drop rate, the scale of
the kept values, the correlation of pairs, ...) and returns a fixed phrase, so tests and users
can match on it.  Several patterns may fit (a layer can have two bugs); they are joined with
"; " in the order below, each named once, with the numbers of the first grid point that showed
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

from dropcheck.checks._report import ERROR, FAIL, CheckRow, fmt_pair

__all__ = ["diagnose_dropout"]

#: relative closeness of an observed scale to a candidate (bugs differ by far more)
_CLOSE = 1e-3


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _CLOSE * abs(b)


def _structure(axes: Sequence[int], ndim: int, identical: bool,
               layout: str | None = None) -> tuple[str, str]:
    """Key and phrase for a mask that is shared (or correlated) along ``axes``.

    With a declared ``layout`` the axes are named by it: a mask shared along the time axis is
    a locked (variational) mask wherever time sits, and only the batch axis is "the batch".
    """
    verb = "shared" if identical else "correlated"
    axes = sorted(axes)
    if layout is not None:
        from dropcheck.checks._plan import AXIS_NAMES

        where = ", ".join(f"{AXIS_NAMES[layout[a]]} (axis {a})" for a in axes)
        letters = "".join(layout[a] for a in axes)
        if letters == "t":
            return "time", (f"mask {verb} across {where}: a locked (variational) mask; declare "
                            f"shared_axes=({axes[0]},) if intended")
        if letters == "b":
            return "batch", f"mask {verb} across {where}"
        if letters == "f":
            return "example", f"mask {verb} across {where} (one draw per example and step)"
        return f"axes{letters}", (f"mask {verb} along {where}; declare shared_axes if "
                                  f"intended")
    if ndim == 1:
        return "units", f"mask {verb} across units"
    if axes == [0]:
        return "batch", f"mask {verb} across the batch"
    if ndim >= 3 and axes == list(range(ndim - 1)):
        lead = ", ".join(map(str, axes))
        return "feature", (f"per-feature instead of per-element mask ({verb} along axes {lead}; "
                           f"one draw per feature)")
    if axes == [ndim - 1]:
        return "example", f"per-example instead of per-element mask ({verb} across the units)"
    where = ", ".join(map(str, axes))
    if ndim == 3 and axes == [1]:
        return "time", (f"mask {verb} across time steps (axis 1); declare shared_axes=(1,) "
                        f"if intended")
    return f"axes{where}", f"mask {verb} along axes {where}; declare shared_axes if intended"


def _scale_phrase(s: float, q: float, eval_scales: bool) -> tuple[str, str]:
    """Key and phrase for kept values scaled by ``s`` at drop probability ``q``."""
    if _close(s, 1.0):
        if eval_scales:
            return "eval-scaling", "scaling applied at eval instead of train"
        return "unscaled", "no inverted scaling (kept values unscaled)"
    if _close(s, 1.0 / q):
        return "1/q", "kept values scaled by 1/q instead of 1/(1-q)"
    if _close(s, (1.0 - q) ** -2):
        return "twice", "scaled twice (kept values scaled by 1/(1-q)^2)"
    so, se = fmt_pair(s, 1 / (1 - q), 6)
    return "scale", f"kept values scaled by {so} instead of 1/(1-q) = {se}"


def _failed(row: CheckRow | None) -> TypeGuard[CheckRow]:
    """Whether ``row`` exists and failed its check (an ERROR row is no evidence of a pattern)."""
    return row is not None and row.verdict == FAIL


def _independence(rows: dict[str, CheckRow], ndim: int,
                  layout: str | None = None) -> list[tuple[str, str]]:
    """Patterns of failed independence tests.

    A mask shared along an axis (or across calls) duplicates the pairs of the other tests, so
    they fail too; when some test saw identical pairs, only those are named.
    """
    failed = [r for r in rows.values() if _failed(r) and "identical" in r.info]
    identical = [r for r in failed if r.info["identical"]]
    named = identical or failed
    found = []
    calls = [r for r in named if r.info["axis"] is None]
    if calls:
        found.append(("calls", "same mask on every call (a constant seed?)"
                      if calls[0].info["identical"] else "masks correlated across calls"))
    axes = [r.info["axis"] for r in named if r.info["axis"] is not None]
    if axes:
        found.append(_structure(axes, ndim, bool(identical), layout))
    return found


def _grid_point(rows: dict[str, CheckRow], q: float, ndim: int,
                layout: str | None = None) -> list[tuple[str, str]]:
    """Patterns that fit the rows of one grid point."""
    found: list[tuple[str, str]] = []
    rate, scale = rows.get("drop rate"), rows.get("inverted scaling")
    ev = rows.get("eval is identity")
    swap = _failed(rate) and abs(rate.info["rate"] - (1 - q)) < abs(rate.info["rate"] - q)
    eval_scale = ev.info["scale"] if _failed(ev) and ev.info["consistent"] else None
    eval_scales = eval_scale is not None and _close(eval_scale, 1 - q)
    if swap and rate is not None:
        found.append(("swap", f"q is the keep probability (drop rate {rate.info['rate']:.4g} "
                              f"at q = {q:g})"))
    train_unscaled = False
    if _failed(scale):
        s = scale.info["scale"]
        if not scale.info["consistent"]:
            found.append(("mixed", "kept values are not a constant multiple of the input"))
        elif not (swap and _close(s, 1.0 / q)):  # 1/q is the right scale for a swapped q
            found.append(_scale_phrase(s, q, eval_scales))
            train_unscaled = _close(s, 1.0)
    structure = _independence(rows, ndim, layout)
    found += structure
    if _failed(rate) and not swap and not structure:
        found.append(("biased", f"random source biased / quantized (drop rate "
                                f"{rate.info['rate']:.4g} at q = {q:g})"))
    mean = rows.get("mean preserved")
    if _failed(mean) and not found:
        found.append(("mean", f"outputs not mean-preserving (mean of y/x = "
                              f"{mean.info['mean']:.4g} at q = {q:g})"))
    if _failed(ev) and not (eval_scales and train_unscaled):
        if ev.info["zeros"]:
            found.append(("eval", "dropout active in eval mode"))
        elif eval_scale is not None:
            found.append(("eval-scale", f"eval mode scales the input by {eval_scale:.6g}"))
        else:
            found.append(("eval-other", "eval mode is not the identity"))
    if _failed(rows.get("backward mask = forward mask")):
        found.append(("vjp", "backward uses a different mask than forward"))
    if _failed(rows.get("backward scale = forward scale")):
        found.append(("vjp-scale", "backward scales differently from forward"))
    if _failed(rows.get("mask constant along shared axes")):
        found.append(("shared", "mask not constant along the declared shared_axes"))
    return found


def diagnose_dropout(rows: Sequence[CheckRow], ndim: int,
                     layout: str | None = None) -> str | None:
    """One line naming the bug patterns that fit the failed ``rows`` (None if none failed).

    ``layout`` (one letter per input axis) names the axes in the phrases.
    """
    found: dict[str, str] = {}
    by_q: dict[float | None, dict[str, CheckRow]] = {}
    for r in rows:
        by_q.setdefault(r.q, {})[r.name] = r
    for q, named in by_q.items():
        if q is not None and 0 < q < 1:
            for key, phrase in _grid_point(named, q, ndim, layout):
                found.setdefault(key, phrase)
    for r in rows:
        if r.verdict != FAIL:
            continue
        if r.name == "q = 0 is identity" and not r.info.get("nonfinite"):
            found.setdefault("q0", "q = 0 still drops (a test like u <= q on a random source "
                                   "that can return 0?)")
        elif r.name == "q = 0 is identity" or r.name.startswith("finite at"):
            found.setdefault(f"nonfinite{r.q}", f"NaN/inf output at q = {r.q:g}")
    errors = [r for r in rows if r.verdict == ERROR]
    if errors:  # after the known patterns: a crash elsewhere should not hide them
        found.setdefault("error", errors[0].detail)
    return "; ".join(found.values()) or None
