"""Run registered claims, print the table, write the JSON report."""

from __future__ import annotations

import json
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from dropcheck.verification._registry import IMPORT_ERRORS, Context, Measurement, all_claims


def _verdict(kind: str, m: Measurement) -> str:
    if m.values.get("error"):
        return "ERROR"
    if m.passed is None:
        return "reported"
    if m.passed:
        return "PASS"
    return "FAIL" if kind == "identity" else "DEVIATES"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and v != v:
        return None
    return v


def run(
    ids: list[str] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    outdir: str | Path | None = None,
    json_path: str | Path | None = None,
    stream: TextIO | None = None,
    progress: bool = True,
) -> int:
    """Measure the claims ``ids`` (all when None); print the table; return the exit status.

    The status is 1 when an *identity* fails or a measurement raises, 0 otherwise: an
    approximation that deviates from its expected behaviour is a reported result, not an error.
    """
    out = stream if stream is not None else sys.stdout
    claims = all_claims()
    if ids:
        wanted = {i.strip().upper() for i in ids}
        unknown = wanted - {c.id for c in claims}
        if unknown:
            known = ", ".join(c.id for c in claims)
            raise ValueError(f"unknown claim IDs {sorted(unknown)}; registered: {known}")
        claims = [c for c in claims if c.id in wanted]
    ctx = Context(quick=quick, seed=seed, outdir=Path(outdir) if outdir else None)
    rows = []
    status = 0
    start = time.perf_counter()
    for i, c in enumerate(claims, 1):
        if progress:
            print(f"[{i}/{len(claims)}] {c.id}: measuring ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            m = c.measure(ctx)
        except Exception as exc:  # a crash is reported in the table, and fails the run
            m = Measurement(figure=f"error: {type(exc).__name__}: {exc}", passed=False)
            m.note = traceback.format_exc()
            m.values["error"] = True
            status = 1
        dt = time.perf_counter() - t0
        verdict = _verdict(c.kind, m)
        if verdict == "FAIL":
            status = 1
        rows.append((c, m, verdict, dt))
        if progress:
            print(
                f"[{i}/{len(claims)}] {c.id}: {verdict} ({dt:.1f} s)", file=sys.stderr, flush=True
            )
    _print_table(rows, out)
    for mod, err in IMPORT_ERRORS.items():
        print(f"suite verification.{mod} failed to import: {err}", file=out)
        status = 1
    total = time.perf_counter() - start
    verdicts = ("PASS", "FAIL", "DEVIATES", "ERROR", "reported")
    counts = {v: sum(r[2] == v for r in rows) for v in verdicts}
    print(
        f"\n{len(rows)} claims in {total:.1f} s: "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n),
        file=out,
    )
    if json_path is not None:
        report = {
            "quick": quick,
            "seed": seed,
            "seconds": total,
            "claims": [
                {
                    "id": c.id,
                    "statement": c.statement,
                    "source": c.source,
                    "kind": c.kind,
                    "rule": c.rule,
                    "figure": m.figure,
                    "verdict": v,
                    "seconds": dt,
                    "values": _jsonable(m.values),
                    "plots": m.plots,
                    "note": m.note,
                }
                for c, m, v, dt in rows
            ],
        }
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    return status


def _print_table(rows: list, out: TextIO) -> None:
    widths = (4, 38, 44, 36, 8)
    head = ("ID", "claim", "measured", "rule", "verdict")
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print(line, file=out)
    print("-" * len(line), file=out)
    for c, m, verdict, _ in rows:
        cols = [
            [c.id],
            textwrap.wrap(c.statement, widths[1]) or [""],
            textwrap.wrap(m.figure, widths[2]) or [""],
            textwrap.wrap(c.rule, widths[3]) or [""],
            [verdict],
        ]
        for k in range(max(len(col) for col in cols)):
            cells = [
                (col[k] if k < len(col) else "").ljust(w)
                for col, w in zip(cols, widths, strict=True)
            ]
            print("  ".join(cells).rstrip(), file=out)
        print(file=out)
