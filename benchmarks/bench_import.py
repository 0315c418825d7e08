"""Benchmark 4: the cost of ``import dropcheck``, as a ratio to ``import numpy``.

Each side is a fresh interpreter (``python -c "import dropcheck"`` / ``python -c "import
numpy"`` / ``python -c "pass"``), run alternately and timed from outside (wall time of the
subprocess, so interpreter start-up is in every figure: it is reported beside them and
subtracted in the "own" ratio).  A separate interpreter lists which heavy libraries
``import dropcheck`` loaded (issue 11, item 7: none of hypothesis, scipy.stats, sympy,
matplotlib; tests/test_import.py asserts it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from dropcheck.benchmarks._harness import Row, compare

#: Libraries ``import dropcheck`` must leave out.
HEAVY = ("hypothesis", "scipy.stats", "sympy", "matplotlib", "torch", "cupy", "jax")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)


def heavy_loaded() -> list[str]:
    """The modules of :data:`HEAVY` present in ``sys.modules`` after ``import dropcheck``."""
    out = _python("import sys, json, dropcheck; "
                  f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(mode: str, repeats: int, threads: int | None) -> list[Row]:
    """One row: medians of ``repeats`` fresh-interpreter imports of dropcheck, numpy, nothing."""
    del mode, threads  # the sizes do not change with the mode; no BLAS work here
    t = compare({"dropcheck": lambda: _python("import dropcheck"),
                 "numpy": lambda: _python("import numpy"),
                 "python": lambda: _python("pass")}, repeats)
    start = t["python"]
    extra: dict[str, Any] = {
        "repeats": repeats,
        "python_start_s": start,
        "over_numpy": t["dropcheck"] / t["numpy"],
        # start-up subtracted from both: the import's own cost against numpy's own
        "own_over_numpy": (t["dropcheck"] - start) / max(t["numpy"] - start, 1e-9),
        "heavy_loaded": heavy_loaded(),
    }
    return [Row("import", "python -c 'import dropcheck' vs 'import numpy'", t["dropcheck"],
                t["numpy"], t["numpy"] / t["dropcheck"], extra)]
