"""The skeleton every checker runs (private to :mod:`dropcheck.checks`).

A checker of a user's regularizer or gradient noise does, per network and drop probability
``q``: compute dropcheck's exact reference, call the user's function and turn what comes back
into rows (stage 1), Holm-correct the test rows at ``alpha`` (:func:`apply_holm`), and re-test
every failed test on fresh data (stage 2, :func:`retest`) so that it fails only if it fails
again.  :func:`run_grid` is that loop; the checkers supply the reference and the rows.
``check_dropout`` shares :func:`retest` (its re-tests are per ``q`` on a fresh probe input).

False alarms: the first stage's tests are Holm-corrected at ``alpha``; the re-tests are
Holm-corrected among themselves at ``alpha`` on independent data, so a correct implementation
fails with probability at most ``alpha`` (in fact about ``alpha²``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from dropcheck.checks._args import fn_name
from dropcheck.checks._report import ERROR, FAIL, PASS, CheckReport, CheckRow, apply_holm
from dropcheck.checks.adapters import Problem

__all__ = ["retest", "run_grid", "call_text", "finish"]

Ref = TypeVar("Ref")
Report = TypeVar("Report", bound=CheckReport)


def retest(rows: list[CheckRow], key: Callable[[CheckRow], Hashable],
           rerun: Callable[[Any], list[CheckRow]], alpha: float, *,
           how: Callable[[Any], str], keep_errors: bool = False) -> list[CheckRow]:
    """Re-test every failed test row on fresh data; it fails only if it fails again.

    ``key(row)`` names the group a row belongs to (a network and ``q``, or a ``q``);
    ``rerun(key)`` returns fresh rows of that group with the same names.  A failed row is
    replaced by its re-test, with a note "confirmed / not confirmed on a re-test with
    ``how(key(row))``" (e.g. "fresh calls") and the first p-value.  ``keep_errors`` appends
    the re-tests' ``ERROR`` rows (a function that breaks on the second stage says so).
    """
    failed = [r for r in rows if r.is_test and r.verdict == FAIL]
    if not failed:
        return rows
    second: list[CheckRow] = []
    for k in dict.fromkeys(key(r) for r in failed):
        second += rerun(k)
    second = apply_holm(second, alpha)
    again = {(r.name, r.q): r for r in second}
    out = []
    for r in rows:
        r2 = again.get((r.name, r.q))
        if r.is_test and r.verdict == FAIL and r2 is not None and r2.is_test:
            confirmed = r2.verdict == FAIL
            note = (f"{'confirmed' if confirmed else 'not confirmed'} on a re-test with "
                    f"{how(key(r))} (first p = {r.p_value:.2g})")
            r = dataclasses.replace(r2, verdict=FAIL if confirmed else PASS,
                                    detail=f"{r2.detail}; {note}", info={**r2.info, "show": True})
        out.append(r)
    return out + ([r for r in second if r.verdict == ERROR] if keep_errors else [])


def run_grid(problems: Sequence[Problem], grid: Sequence[float],
             reference: Callable[[Problem, float], Ref],
             rows_for: Callable[[Problem, float, Ref, int], list[CheckRow]],
             alpha: float, retest_failures: bool) -> list[CheckRow]:
    """Rows of every network and ``q``: reference, stage-1 rows, Holm, re-test of failures.

    ``reference(pb, q)`` is computed once per network and ``q`` (before any call of the user's
    function) and shared by both stages; ``rows_for(pb, q, ref, stage)`` calls the user's
    function (stage 2: on fresh data, with twice the sample) and returns rows that record their
    network in ``info["net"]``.
    """
    refs = {(pb.index, v): reference(pb, v) for pb in problems for v in grid}
    rows: list[CheckRow] = []
    for pb in problems:
        for v in grid:
            rows += rows_for(pb, v, refs[(pb.index, v)], 1)
    rows = apply_holm(rows, alpha)
    if not retest_failures:
        return rows
    by_index = {pb.index: pb for pb in problems}

    def rerun(k: tuple[int, float]) -> list[CheckRow]:
        return rows_for(by_index[k[0]], k[1], refs[k], 2)

    return retest(rows, lambda r: (r.info["net"], r.q), rerun, alpha,
                  how=lambda k: "fresh calls")


def call_text(checker: str, fn: Any, lead: tuple[str, Any], grid: Sequence[float], *,
              seed: int, n_nets: int, adapter: Any, extra: Mapping[str, Any],
              own_random_state: bool) -> tuple[str, str]:
    """A grid checker's report title and the call that reproduces the report.

    ``checker(fn, lead=…)`` and ``checker(fn, lead=…, q=…, seed=…, n_nets=…, adapter=…,
    **extra)``; ``extra`` holds only the arguments that differ from their defaults.
    ``own_random_state`` adds that dropcheck does not reset ``fn``'s own generator.
    """
    name, (key, value) = fn_name(fn), lead
    grid_s = grid[0] if len(grid) == 1 else tuple(grid)
    more = "".join(f", {k}={v!r}" for k, v in extra.items())
    call = (f"{checker}({name}, {key}={value!r}, q={grid_s!r}, seed={seed}, n_nets={n_nets}, "
            f"adapter={adapter!r}{more})")
    if own_random_state:
        call += " (fn's own random state is not reset by dropcheck)"
    return f"{checker}({name}, {key}={value!r})", call


def finish(report: Report, raise_on_failure: bool) -> Report:
    """Return ``report``, raising :class:`~dropcheck.checks.DropcheckError` on failure if asked."""
    if raise_on_failure:
        report.raise_if_failed()
    return report
