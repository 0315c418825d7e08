"""The claim × mutant matrix of ``dropcheck verify --mutants``.

Each mutant (:mod:`dropcheck.verification.mutants`) is applied in turn and the claims it names
(those of the current selection) are measured under it, with every cached sweep of the
verification modules cleared before and after.  Only the targeted claims are measured: a
mutant's row says whether the claims meant to catch it do; it does not claim that the other
claims are unaffected (most are: they do not call the swapped piece).
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

from dropcheck.verification._output import Progress
from dropcheck.verification._registry import Context, Measurement
from dropcheck.verification._runner import CAUGHT, Row, clear_caches, measure, verdict_of
from dropcheck.verification.mutants import all_mutants


def _caught(baseline: str | None, verdict: str) -> bool:
    if verdict not in CAUGHT:
        return False
    return baseline in (None, "PASS") or (baseline == "DEVIATES" and verdict == "FAIL")


def mutation_matrix(rows: list[Row], ctx: Context, *, progress: bool = True) -> dict[str, Any]:
    """Measure the selected claims under every mutant; return ``matrix`` and ``summary``.

    ``matrix`` is ``{mutant: {claim_id: verdict}}``.  ``summary`` lists the mutants no claim
    catches, the non-empirical claims that catch no mutant, and measurements that raised.
    """
    by_id = {r.claim.id: r for r in rows}
    todo = [(m, [by_id[c].claim for c in m.claims if c in by_id]) for m in all_mutants()]
    todo = [(m, cs) for m, cs in todo if cs]
    matrix: dict[str, dict[str, str]] = {}
    figures: dict[str, dict[str, str]] = {}
    caught_by: dict[str, list[str]] = {}
    errors: list[str] = []
    quiet = Context(quick=ctx.quick, seed=ctx.seed, outdir=None)  # no plots of wrong libraries
    with Progress(len(todo), enabled=progress, label="mutants") as bar:
        for mutant, claims in todo:
            clear_caches()
            try:
                # a wrong library may divide by zero or overflow: its numbers are judged by the
                # claims, the floating-point warnings are not the point (pytest makes them errors)
                with mutant.patch(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    got = measure(claims, quiet)
            except Exception as exc:  # the mutant could not be applied: say so in every cell
                text = f"error applying the mutant: {type(exc).__name__}: {exc}"
                m = Measurement(text, False, {"error": True}, note=traceback.format_exc())
                got = [Row(c, m, verdict_of(c.kind, m), 0.0) for c in claims]
            finally:
                clear_caches()
            matrix[mutant.name] = {r.claim.id: r.verdict for r in got}
            figures[mutant.name] = {r.claim.id: r.m.figure for r in got}
            caught_by[mutant.name] = [r.claim.id for r in got
                                      if _caught(by_id[r.claim.id].verdict, r.verdict)]
            errors += [f"{mutant.name}:{r.claim.id}" for r in got if r.verdict == "ERROR"]
            bar.done(Row(claims[0], Measurement(mutant.name, None), mutant.name,
                         sum(r.seconds for r in got)))
    # a claim that deviates on the correct library catches a mutant only by FAIL (its exact part)
    judged = [r.claim.id for r in rows
              if r.claim.kind != "empirical" and r.verdict in ("PASS", "DEVIATES")]
    deviating = [r.claim.id for r in rows
                 if r.claim.kind != "empirical" and r.verdict not in ("PASS", "DEVIATES")]
    catching = {c for cs in caught_by.values() for c in cs}
    return {
        "matrix": matrix,
        "figures": figures,
        "summary": {
            "mutants": len(todo),
            "caught_by": caught_by,
            "uncaught_mutants": [k for k, v in caught_by.items() if not v],
            "claims_judged": judged,
            "claims_not_passing_on_the_correct_library": deviating,
            "claims_catching_nothing": [c for c in judged if c not in catching],
            "errors": errors,
            "descriptions": {m.name: m.description for m, _ in todo},
        },
    }
