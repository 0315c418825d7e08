"""Run a call in a child process under an address-space cap (``RLIMIT_AS``) and a time cap.

Huge counts (``samples=10**8``, ``k=10**8``) are valid input: what must hold is that memory
stays bounded by the chunk budget (:data:`dropcheck._engine.CHUNK_BYTES`) whatever the count.
The child imports dropcheck, then arms ``SIGALRM`` for ``seconds`` and runs ``code``; it reports

- ``"bounded"``: still running at the alarm, or finished, without a MemoryError;
- ``"memory"``: a MemoryError (numpy's allocation refused by the cap) — the defect;

any other exit is returned as ``"error: …"`` with the child's stderr tail.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

#: The cap: far above the chunk budget (64 MiB) plus the interpreter, numpy and dropcheck
#: (~0.3 GiB of address space with one BLAS thread), far below the allocations of the defects
#: (9.4 GiB for defect 3, 11.2 GiB for defect 10).
CAP_BYTES = 2 * 2**30

_PRELUDE = """
import signal, sys
def _stop(*a):
    print("BOUNDED-TIMEOUT", flush=True)
    sys.exit(0)
signal.signal(signal.SIGALRM, _stop)
import numpy as np
import dropcheck as dc
from dropcheck import exact, explicit, implicit, montecarlo, classical
signal.setitimer(signal.ITIMER_REAL, {seconds})  # the call's time, imports excluded
try:
{code}
except MemoryError as e:
    print("MEMORY", type(e).__name__, e, flush=True)
    sys.exit(3)
print("BOUNDED-DONE", flush=True)
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def run_capped(code: str, seconds: float = 4.0) -> str:
    """Run ``code`` (statements, 4-space indented inside a try block) in a capped child."""
    src = _PRELUDE.format(seconds=seconds, code=textwrap.indent(textwrap.dedent(code), "    "))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", src], preexec_fn=_limit, capture_output=True,
                       text=True, env=env, timeout=seconds + 120)
    if r.returncode == 3 or "MEMORY" in r.stdout:
        return "memory"
    if r.returncode == 0 and "BOUNDED" in r.stdout:
        return "bounded"
    return f"error: rc={r.returncode} {r.stdout[-300:]} {r.stderr[-600:]}"
