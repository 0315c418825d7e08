"""What ``dropcheck verify`` prints: a progress bar, one line per claim, the mutation matrix.

On a terminal the progress bar and the tables are drawn by :mod:`rich`; otherwise (a pipe, a
file, CI logs) the output is plain text, one line per claim and per progress step.
"""

from __future__ import annotations

import sys
import textwrap
from types import TracebackType
from typing import Any, TextIO

_STYLE = {"PASS": "green", "DEVIATES": "yellow", "FAIL": "bold red", "ERROR": "bold red",
          "reported": "cyan"}


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def headline(figure: str) -> str:
    """The figure's first clause (up to the first ``;`` outside parentheses)."""
    depth = 0
    for i, ch in enumerate(figure):
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == ";" and depth <= 0:
            return figure[:i]
    return figure


class Progress:
    """Progress over the claims on stderr: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None,
                 label: str = "measuring") -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.stream = stream if stream is not None else sys.stderr
        self.i = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, ev, tb)

    def start(self, c: Any) -> None:
        """Claim ``c`` starts."""
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.label} {c.id}")

    def done(self, row: Any) -> None:
        """A claim (``row``: a :class:`~dropcheck.verification._runner.Row`) is measured."""
        self.i += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.advance(self._task)
        else:
            print(f"[{self.i}/{self.total}] {row.claim.id}: {row.verdict} "
                  f"({row.seconds:.1f} s)", file=self.stream, flush=True)


def print_rows(rows: list, out: TextIO, *, verbose: bool = False) -> None:
    """One line per claim (ID, verdict, headline figure); with ``verbose`` the full record."""
    if _is_terminal(out):
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console(file=out)
        table = Table(show_header=True, header_style="bold", show_lines=verbose)
        table.add_column("ID", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        if verbose:
            table.add_column("claim")
            table.add_column("measured")
            table.add_column("rule")
        else:
            table.add_column("headline figure")
        for r in rows:  # Text, not markup: claims are full of brackets (E[η], [0, 1))
            v = Text(r.verdict, style=_STYLE.get(r.verdict, ""))
            if verbose:
                table.add_row(r.claim.id, v, Text(r.claim.statement), Text(r.m.figure),
                              Text(r.claim.rule))
            else:
                table.add_row(r.claim.id, v, Text(headline(r.m.figure)))
        console.print(table)
        if verbose:
            for r in rows:
                if r.m.note:
                    console.print(Text.assemble((r.claim.id, "bold"), " note: ", r.m.note),
                                  highlight=False)
        return
    for r in rows:
        if not verbose:
            print(f"{r.claim.id:4s} {r.verdict:8s} {headline(r.m.figure)}", file=out)
            continue
        print(f"{r.claim.id} {r.verdict} ({r.seconds:.1f} s)", file=out)
        for label, text in (("claim", r.claim.statement), ("source", r.claim.source),
                            ("rule", r.claim.rule), ("measured", r.m.figure),
                            ("note", r.m.note)):
            if text:
                lines = textwrap.wrap(text, 96) if label != "note" or "\n" not in text else \
                    text.splitlines()
                print(f"  {label:9s}" + lines[0], file=out)
                for line in lines[1:]:
                    print(" " * 11 + line, file=out)
        print(file=out)


def print_matrix(mm: dict[str, Any], out: TextIO) -> None:
    """The claim × mutant matrix: one row per mutant, the targeted claims' verdicts."""
    s = mm["summary"]
    print("\nmutation matrix (rows: mutants; each cell: the claim's verdict under the mutant; "
          "caught = FAIL or DEVIATES where the correct library passes)", file=out)
    for name, cells in mm["matrix"].items():
        mark = "caught" if name in s["caught_by"] and s["caught_by"][name] else "MISSED"
        cell = ", ".join(f"{cid} {v}" for cid, v in cells.items())
        print(f"  {name:32s} {mark:7s} {cell}", file=out)
    print(f"{s['mutants']} mutants, {s['mutants'] - len(s['uncaught_mutants'])} caught; "
          f"{len(s['claims_judged'])} non-empirical claims (PASS or DEVIATES), "
          f"{len(s['claims_judged']) - len(s['claims_catching_nothing'])} catch at least one "
          "mutant", file=out)
    if s["uncaught_mutants"]:
        print("  mutants no claim catches: " + ", ".join(s["uncaught_mutants"]), file=out)
    if s["claims_catching_nothing"]:
        print("  claims that catch no mutant: " + ", ".join(s["claims_catching_nothing"]),
              file=out)
    if s["claims_not_passing_on_the_correct_library"]:
        print("  not judged (FAIL or ERROR on the correct library): "
              + ", ".join(s["claims_not_passing_on_the_correct_library"]), file=out)
    if s["errors"]:
        print("  measurements that raised under a mutant: " + ", ".join(s["errors"]), file=out)


_START, _END = "<!-- mutation-matrix:start -->", "<!-- mutation-matrix:end -->"


def matrix_markdown(mm: dict[str, Any], *, mode: str,
                    baseline: dict[str, str] | None = None) -> str:
    """The claim × mutant matrix as markdown: one row per mutant, then one row per claim.

    ``baseline`` maps claim IDs to their verdicts on the correct library.
    """
    s = mm["summary"]
    rows = ["| mutant | what is wrong | verdicts of the claims it names, under the mutant "
            "| caught |", "|---|---|---|---|"]
    for name, cells in mm["matrix"].items():
        verdicts = ", ".join(f"{c} {v}" for c, v in cells.items())
        caught = "yes" if s["caught_by"].get(name) else "**no**"
        rows.append(f"| `{name}` | {s['descriptions'].get(name, '')} | {verdicts} | {caught} |")
    by_claim: dict[str, list[str]] = {}
    for name, claims in s["caught_by"].items():
        for c in claims:
            by_claim.setdefault(c, []).append(name)
    rows += ["", "| claim | on the correct library | mutants it catches |", "|---|---|---|"]
    for c in s["claims_judged"]:
        names = ", ".join(f"`{n}`" for n in by_claim.get(c, [])) or "**none**"
        rows.append(f"| {c} | {(baseline or {}).get(c, '')} | {names} |")
    foot = (f"\n{s['mutants']} mutants, {s['mutants'] - len(s['uncaught_mutants'])} caught; "
            f"{len(s['claims_judged'])} non-empirical claims pass or deviate on the correct "
            "library, "
            f"{len(s['claims_judged']) - len(s['claims_catching_nothing'])} of them catch at "
            f"least one mutant ({mode} mode).")
    if s["claims_not_passing_on_the_correct_library"]:
        foot += (" Not judged by the matrix (FAIL or ERROR on the correct library): "
                 + ", ".join(s["claims_not_passing_on_the_correct_library"]) + ".")
    if s["uncaught_mutants"]:
        foot += " Not caught: " + ", ".join(s["uncaught_mutants"]) + "."
    if s["claims_catching_nothing"]:
        foot += " Catching nothing: " + ", ".join(s["claims_catching_nothing"]) + "."
    return "\n".join(rows) + "\n" + foot + "\n"


def write_matrix_markdown(mm: dict[str, Any], path: str, *, mode: str,
                          baseline: dict[str, str] | None = None) -> None:
    """Replace the table between the mutation-matrix markers of ``path`` (append if absent)."""
    from pathlib import Path

    p = Path(path)
    text = p.read_text() if p.exists() else ""
    block = f"{_START}\n{matrix_markdown(mm, mode=mode, baseline=baseline)}{_END}"
    if _START in text and _END in text:
        pre, rest = text.split(_START, 1)
        text = pre + block + rest.split(_END, 1)[1]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    p.write_text(text)
