"""Run registered claims, print one line per claim (or the full table), write the JSON report.

Verdicts (``dropcheck verify``):

- ``PASS`` — an identity holds, or an approximation is within its stated law;
- ``DEVIATES`` — an approximation outside its stated law: a reported result with its evidence;
  the exit status is non-zero only with ``strict=True`` (``--strict``);
- ``FAIL`` — an identity is broken (or an exact sub-check of an approximation claim,
  :attr:`Measurement.exact`): non-zero exit status;
- ``ERROR`` — the measurement raised: non-zero exit status;
- ``reported`` — an empirical claim, measured and reported without a verdict.

With ``mutants=True`` the claims are measured again under every registered mutant
(:mod:`dropcheck.verification.mutants`) and the claim × mutant matrix is printed and written
to the JSON report (``mutation_matrix``).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dropcheck.verification._registry import (
    IMPORT_ERRORS,
    Claim,
    Context,
    Measurement,
    all_claims,
)

#: Version of the JSON report's layout; bump it when a field changes meaning.
SCHEMA_VERSION = 2
VERDICTS = ("PASS", "DEVIATES", "FAIL", "ERROR", "reported")
#: Verdicts that count as a mutant caught by a claim.
CAUGHT = ("FAIL", "DEVIATES")
#: ``--compare``: a figure "moved" when its relative change exceeds this (numbers in ``values``).
COMPARE_RTOL = 1e-6


@dataclass
class Row:
    """One measured claim: the claim, its measurement, the verdict and the seconds it took."""

    claim: Claim
    m: Measurement
    verdict: str
    seconds: float


def verdict_of(kind: str, m: Measurement) -> str:
    """The verdict of measurement ``m`` of a claim of ``kind`` (see the module doc)."""
    if m.values.get("error"):
        return "ERROR"
    if m.exact is False:
        return "FAIL"
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
        return _jsonable(v.tolist())
    if isinstance(v, float) and v != v:
        return None
    return v


def clear_caches() -> None:
    """Empty the ``functools.cache`` of every verification module (a mutant must be measured).

    Sweeps shared by several claims are cached per mode and seed; under a mutant they must be
    recomputed, and after it the correct library's values must come back.
    """
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith("dropcheck.verification"):
            continue
        for obj in list(vars(mod).values()):
            clear = getattr(obj, "cache_clear", None)
            if callable(clear) and getattr(obj, "__module__", None) == name:
                clear()


def _measure_one(c: Claim, ctx: Context) -> tuple[Measurement, float]:
    """Claim ``c``'s measurement and its seconds; a measurement that raises becomes an error."""
    t0 = time.perf_counter()
    try:
        m = c.measure(ctx)
    except Exception as exc:  # a crash is reported in the table, and fails the run
        m = Measurement(figure=f"error: {type(exc).__name__}: {exc}", passed=False)
        m.note = traceback.format_exc()
        m.values["error"] = True
    return m, time.perf_counter() - t0


def _measure_by_id(claim_id: str, ctx: Context) -> tuple[Measurement, float]:
    """What a worker of ``measure(…, executor=…)`` runs: the claim named ``claim_id``."""
    return _measure_one(select([claim_id])[0], ctx)


def measure(claims: Iterable[Claim], ctx: Context,
            on_done: Callable[[Row], None] | None = None,
            on_start: Callable[[Claim], None] | None = None,
            executor: Any = None) -> list[Row]:
    """Measure ``claims`` in order; a measurement that raises becomes an ERROR row.

    With ``executor`` (a :mod:`dropcheck.parallel` executor: ``verify -j N`` or
    ``--scheduler``) every claim is one task on the workers; rows come back in catalogue order
    and equal the serial ones (each claim seeds its own generators, ``Context.rng``).
    """
    claims = list(claims)
    futures = None if executor is None else [
        executor.submit(_measure_by_id, c.id, ctx) for c in claims]
    rows = []
    for i, c in enumerate(claims):
        if on_start is not None:
            on_start(c)
        m, seconds = _measure_one(c, ctx) if futures is None else futures[i].result()
        row = Row(c, m, verdict_of(c.kind, m), seconds)
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return rows


def select(ids: list[str] | None) -> list[Claim]:
    """The registered claims named by ``ids`` (all when None), in catalogue order."""
    claims = all_claims()
    if ids:
        wanted = {i.strip().upper() for i in ids}
        unknown = wanted - {c.id.upper() for c in claims}
        if unknown:
            known = ", ".join(c.id for c in claims)
            raise ValueError(f"unknown claim IDs {sorted(unknown)}; registered: {known}")
        claims = [c for c in claims if c.id.upper() in wanted]
    return claims


def run(
    ids: list[str] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    outdir: str | Path | None = None,
    json_path: str | Path | None = None,
    stream: TextIO | None = None,
    progress: bool = True,
    verbose: bool = False,
    strict: bool = False,
    mutants: bool = False,
    compare: str | Path | None = None,
    matrix_markdown: str | Path | None = None,
    executor: Any = None,
) -> int:
    """Measure the claims ``ids`` (all when None); print them; return the exit status.

    The status is 1 when an identity (or an exact sub-check) fails, a measurement raises, a
    suite fails to import, or — with ``strict`` — an approximation deviates; with ``mutants``
    also when a mutant is caught by no claim or a non-empirical claim catches no mutant; with
    ``compare`` (an earlier JSON report) also when a verdict regressed.  0 otherwise.
    ``matrix_markdown`` (with ``mutants``) writes the matrix as a markdown table into that file,
    between its ``<!-- mutation-matrix:start/end -->`` markers.  ``executor`` (a
    :mod:`dropcheck.parallel` executor) measures the claims in parallel, one task each; the
    report is the same (timings aside).
    """
    from dropcheck.verification import _output

    out = stream if stream is not None else sys.stdout
    claims = select(ids)
    ctx = Context(quick=quick, seed=seed, outdir=Path(outdir) if outdir else None)
    start = time.perf_counter()
    with _output.Progress(len(claims), enabled=progress) as bar:
        rows = measure(claims, ctx, on_done=bar.done, on_start=bar.start, executor=executor)
    total = time.perf_counter() - start
    _output.print_rows(rows, out, verbose=verbose)
    status = 0
    if any(r.verdict in ("FAIL", "ERROR") for r in rows):
        status = 1
    if strict and any(r.verdict == "DEVIATES" for r in rows):
        status = 1
    for mod, err in IMPORT_ERRORS.items():
        print(f"suite verification.{mod} failed to import: {err}", file=out)
        status = 1
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    print(f"\n{len(rows)} claims in {total:.1f} s: "
          + ", ".join(f"{n} {v}" for v, n in counts.items() if n), file=out)
    report = _report(rows, quick=quick, seed=seed, seconds=total)
    if mutants:
        from dropcheck.verification._mutation import mutation_matrix

        mm = mutation_matrix(rows, ctx, progress=progress)
        report["mutation_matrix"] = mm["matrix"]
        report["mutation_summary"] = mm["summary"]
        _output.print_matrix(mm, out)
        if matrix_markdown is not None:
            _output.write_matrix_markdown(mm, str(matrix_markdown),
                                          mode="quick" if quick else "full",
                                          baseline={r.claim.id: r.verdict for r in rows})
        if mm["summary"]["uncaught_mutants"] or mm["summary"]["claims_catching_nothing"]:
            status = 1
    if compare is not None:
        old = json.loads(Path(compare).read_text())
        lines, regressed = compare_reports(old, report)
        print(f"\ncompared with {compare}:", file=out)
        for line in lines or ["no verdict changes; no figure moved beyond "
                              f"{COMPARE_RTOL:g} relative"]:
            print("  " + line, file=out)
        if regressed:
            status = 1
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    return status


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=False)
        if res.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5, check=False)
        return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("dropcheck", "numpy", "scipy", "autograd", "array-api-compat", "sympy",
                "matplotlib", "rich"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def row_json(r: Row) -> dict[str, Any]:
    """The JSON object of one measured claim."""
    c, m = r.claim, r.m
    return {
        "id": c.id, "statement": c.statement, "source": c.source, "kind": c.kind,
        "rule": c.rule, "figure": m.figure, "verdict": r.verdict, "seconds": r.seconds,
        "exact": m.exact, "values": _jsonable(m.values), "plots": m.plots, "note": m.note,
    }


def _report(rows: list[Row], *, quick: bool, seed: int, seconds: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "mode": "quick" if quick else "full",
        "quick": quick,
        "seed": seed,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "platform": platform.platform(),
        "seconds": seconds,
        "claims": [row_json(r) for r in rows],
    }


_RANK = {"PASS": 0, "reported": 0, "DEVIATES": 1, "FAIL": 2, "ERROR": 2}


def _numbers(v: Any, prefix: str = "") -> dict[str, float]:
    """Flatten the numbers of a ``values`` object to ``{path: number}``."""
    out: dict[str, float] = {}
    if isinstance(v, dict):
        for k, x in v.items():
            out.update(_numbers(x, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out.update(_numbers(x, f"{prefix}[{i}]"))
    elif isinstance(v, int | float) and not isinstance(v, bool):
        out[prefix] = float(v)
    return out


def compare_reports(old: dict[str, Any], new: dict[str, Any],
                    rtol: float = COMPARE_RTOL) -> tuple[list[str], bool]:
    """Verdict changes and figures that moved beyond ``rtol`` (relative) from ``old`` to ``new``.

    Returns the lines to print and whether a verdict regressed (PASS → DEVIATES/FAIL/ERROR,
    DEVIATES → FAIL/ERROR).  Timing fields are not compared.  A figure "moved" when
    ``|new − old| > rtol·max(|old|, |new|)`` and above 1e-300 (denormal noise).
    """
    before = {c["id"]: c for c in old.get("claims", [])}
    lines: list[str] = []
    regressed = False
    for c in new.get("claims", []):
        o = before.get(c["id"])
        if o is None:
            lines.append(f"{c['id']}: new claim, {c['verdict']}")
            continue
        if o["verdict"] != c["verdict"]:
            worse = _RANK.get(c["verdict"], 2) > _RANK.get(o["verdict"], 2)
            regressed |= worse
            lines.append(f"{c['id']}: verdict {o['verdict']} → {c['verdict']}"
                         + (" (regression)" if worse else ""))
        a, b = _numbers(o.get("values", {})), _numbers(c.get("values", {}))
        moved = []
        for k in sorted(a.keys() & b.keys()):
            if "second" in k:  # timings (seconds, per-second rates) are not results
                continue
            x, y = a[k], b[k]
            if abs(y - x) > rtol * max(abs(x), abs(y)) and max(abs(x), abs(y)) > 1e-300:
                moved.append(f"{k} {x:.6g} → {y:.6g}")
        if moved:
            lines.append(f"{c['id']}: {len(moved)} figure(s) moved: " + "; ".join(moved[:6])
                         + (" …" if len(moved) > 6 else ""))
        gone = sorted(a.keys() - b.keys())
        if gone:
            lines.append(f"{c['id']}: figures no longer reported: " + ", ".join(gone[:6])
                         + (" …" if len(gone) > 6 else ""))
    for cid in sorted(before.keys() - {c["id"] for c in new.get("claims", [])}):
        lines.append(f"{cid}: not measured in the new report")
    return lines, regressed
