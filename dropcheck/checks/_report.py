"""The report every checker returns: one row per check, a verdict, and how to reproduce it.

A :class:`CheckRow` is either *exact* (a deterministic comparison: ``statistic`` against a
tolerance ``threshold``, no false alarms beyond rounding) or a *test* (``p_value`` compared with
its Holm threshold, see :func:`apply_holm`).  A :class:`CheckReport` collects the rows, the
family-wise level ``alpha``, the seed, the sample sizes, and a one-line ``diagnosis`` naming
the bug pattern that fits.  ``str(report)`` is a table that reads in a terminal and inside a
pytest failure; :class:`DropcheckError` carries the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropcheck.checks._stats import holm

__all__ = ["PASS", "FAIL", "ERROR", "SKIP", "CheckRow", "CheckReport", "DropcheckError",
           "apply_holm", "fmt_pair"]

PASS, FAIL, ERROR, SKIP = "pass", "FAIL", "ERROR", "skip"


@dataclass(frozen=True)
class CheckRow:
    """One check: what was measured, what it was compared with, and the verdict.

    ``threshold`` bounds ``p_value`` for a test row (reject when ``p <= threshold``) and bounds
    ``statistic`` for an exact row.  ``detail`` is a short human message (for an ``ERROR`` row:
    what went wrong); ``info`` holds facts for diagnosis and is not printed.
    """

    name: str
    q: float | None = None
    statistic: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    verdict: str = PASS
    detail: str = ""
    info: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_test(self) -> bool:
        """Whether the row is a statistical test (has a p-value)."""
        return self.p_value is not None

    @property
    def failed(self) -> bool:
        """Whether the row failed or could not be evaluated."""
        return self.verdict in (FAIL, ERROR)


def _p_value(row: CheckRow) -> float:
    # a test row always carries its p-value (an untestable one is an ERROR row)
    assert row.p_value is not None, row.name
    return row.p_value


def apply_holm(rows: Sequence[CheckRow], alpha: float) -> list[CheckRow]:
    """Return ``rows`` with the test rows' thresholds and verdicts set by Holm at ``alpha``.

    Exact and error rows pass through unchanged; the family is all test rows given.
    """
    idx = [i for i, r in enumerate(rows) if r.is_test and r.verdict != ERROR]
    thresholds, rejected = holm([_p_value(rows[i]) for i in idx], alpha)
    out = list(rows)
    for i, thr, rej in zip(idx, thresholds, rejected, strict=True):
        out[i] = dataclasses.replace(rows[i], threshold=thr, verdict=FAIL if rej else PASS)
    return out


def _fmt(v: float | None, digits: int = 4) -> str:
    """Format a number compactly for the table ('-' for None)."""
    if v is None:
        return "-"
    if v == 0 or (1e-3 <= abs(v) < 1e5):
        return f"{v:.{digits}g}"
    return f"{v:.{max(1, digits - 2)}e}"


@dataclass(frozen=True)
class CheckReport:
    """The result of a checker: rows, overall verdict, diagnosis and how to reproduce it.

    ``passed`` is true when there are rows and none failed or errored.  ``alpha`` bounds the
    probability that a correct implementation fails any test row (Holm over all of them);
    exact rows have no false alarms.  ``sample_sizes`` and ``notes`` are printed lines.
    """

    title: str
    rows: tuple[CheckRow, ...]
    alpha: float
    seed: int | None
    diagnosis: str | None = None
    sample_sizes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    reproduce: str = ""

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return bool(self.rows) and not any(r.failed for r in self.rows)

    @property
    def failures(self) -> tuple[CheckRow, ...]:
        """The rows that failed or errored."""
        return tuple(r for r in self.rows if r.failed)

    def __bool__(self) -> bool:
        return self.passed

    def raise_if_failed(self) -> None:
        """Raise :class:`DropcheckError` carrying this report unless it passed."""
        if not self.passed:
            raise DropcheckError(self)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain data (for JSON)."""
        return {
            "title": self.title,
            "passed": self.passed,
            "alpha": self.alpha,
            "seed": self.seed,
            "diagnosis": self.diagnosis,
            "rows": [
                {k: getattr(r, k) for k in
                 ("name", "q", "statistic", "threshold", "p_value", "verdict", "detail")}
                for r in self.rows
            ],
            "sample_sizes": list(self.sample_sizes),
            "notes": list(self.notes),
            "reproduce": self.reproduce,
        }

    def __str__(self) -> str:
        n_tests = sum(r.is_test for r in self.rows)
        head = f"{self.title}: {'PASSED' if self.passed else 'FAILED'}"
        if self.diagnosis:
            head += f" -- {self.diagnosis}"
        lines = [head, f"  alpha = {self.alpha:g} overall (Holm over {n_tests} tests), "
                       f"seed = {self.seed}"]
        name_w = max([len("check")] + [len(r.name) for r in self.rows])
        lines.append(f"  {'check':<{name_w}}  {'q':>6}  {'statistic':>10}  {'threshold':>12}"
                     f"  {'p-value':>9}  verdict")
        for r in self.rows:
            q = "-" if r.q is None else f"{r.q:g}"
            if r.is_test:
                thr, p = f"p <= {_fmt(r.threshold, 2)}", _fmt(r.p_value, 2)
            else:
                thr = "-" if r.threshold is None else f"<= {_fmt(r.threshold, 2)}"
                p = "exact" if r.verdict != ERROR else "-"
            lines.append(f"  {r.name:<{name_w}}  {q:>6}  {_fmt(r.statistic):>10}  {thr:>12}"
                         f"  {p:>9}  {r.verdict}")
            if r.detail and (r.failed or r.verdict == SKIP or r.info.get("show")):
                lines.append(f"      -> {r.detail}")
        for title, items in (("sample sizes", self.sample_sizes), ("notes", self.notes)):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {s}" for s in items)
        if self.reproduce:
            lines.append(f"  reproduce: {self.reproduce}")
        return "\n".join(lines)


class DropcheckError(AssertionError):
    """A check failed; ``.report`` holds the full :class:`CheckReport`.

    A subclass of ``AssertionError`` so that pytest shows it as a test failure, with the report
    table as the message.
    """

    def __init__(self, report: CheckReport):
        super().__init__(str(report))
        self.report = report


def fmt_pair(a: float, b: float, digits: int = 3) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest significant digits (at least ``digits``) that differ.

    A message then never reads "1.11111 instead of 1.11111" (17 digits at most).
    """
    for k in range(digits, 18):
        sa, sb = f"{a:.{k}g}", f"{b:.{k}g}"
        if sa != sb:
            return sa, sb
    return f"{a:.17g}", f"{b:.17g}"
