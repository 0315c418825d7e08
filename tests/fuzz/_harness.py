"""The fuzz harness: run one call under a wall-time limit and classify its outcome.

Only two outcomes are allowed for a public function called with adversarial input:

- ``"ok"``: it returns, and its primary output has the documented shape and is finite;
- ``"refused"``: it raises ``ValueError`` or ``TypeError`` (subclasses included, e.g.
  ``TooManyMasksError``) whose message names the argument that was corrupted.

Anything else — another exception type, a message that does not name the argument, a wrong
shape, NaN/inf in the output, a warning (pytest turns warnings into errors), or a call that
runs past the wall-time limit — is a failure.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Outcomes of every fuzzed call of this process: (entry, outcome kind) -> count.  The session
#: fixture of tests/fuzz/conftest.py writes it out when DROPCHECK_FUZZ_REPORT names a file.
OUTCOMES: Counter[tuple[str, str]] = Counter()

#: With DROPCHECK_FUZZ_TALLY=1 (a campaign, not CI) a failing case is counted by kind
#: ("fail:<exception type>") and listed in FAILURES instead of failing the test, so one run
#: measures every entry point; CI runs without it and fails on the first bad outcome.
TALLY = os.environ.get("DROPCHECK_FUZZ_TALLY", "") == "1"
FAILURES: list[dict[str, str]] = []


class CallTimeout(Exception):
    """A fuzzed call ran past its wall-time limit (raised inside the call by SIGALRM)."""


@contextmanager
def wall_limit(seconds: float):
    """Raise :class:`CallTimeout` in the calling code after ``seconds`` of wall time.

    SIGALRM interrupts pure-Python loops and returns between numpy calls, so a hang such as
    the old ``chunk_size=0`` loop is stopped.  Only possible on the main thread (pytest's); off
    it the call runs unbounded and the time is checked afterwards.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal,
                                                                               "SIGALRM"):
        t0 = time.perf_counter()
        yield
        if time.perf_counter() - t0 > seconds:
            raise CallTimeout(f"call took more than {seconds} s")
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CallTimeout(f"call ran past its wall-time limit of {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy of an array of any namespace (torch tensors detached, on the host)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
    return np.asarray(a)


def check_ok(primary: Any, shape: tuple[int, ...] | None, what: str) -> None:
    """Assert ``primary`` (an array or a number) is finite and, when given, of ``shape``."""
    arr = to_numpy(primary)
    assert arr.dtype.kind in "fiub", f"{what}: result has dtype {arr.dtype}, not a real number"
    if shape is not None:
        assert arr.shape == tuple(shape), f"{what}: result shape {arr.shape}, expected {shape}"
    assert np.all(np.isfinite(arr)), f"{what}: result holds NaN or inf: {arr!r}"


def run_case(
    entry: str,
    call: Callable[[], Any],
    names: Iterable[str],
    *,
    primary: Callable[[Any], Any],
    shape: tuple[int, ...] | None,
    seconds: float,
    label: str,
) -> str:
    """Run ``call`` once and return ``"ok"`` or ``"refused"``; any other outcome fails.

    ``names`` are the words a refusal must contain (the corrupted argument's name and its
    accepted spellings); empty when no argument was corrupted (then a refusal fails too).
    ``label`` describes the case for the failure message.
    """
    names = tuple(names)
    if not TALLY:
        return _run_case(entry, call, names, primary, shape, seconds, label)
    try:
        return _run_case(entry, call, names, primary, shape, seconds, label)
    except Exception as e:  # noqa: BLE001 - a campaign counts every kind of failure
        kind = type(e).__name__
        OUTCOMES[entry, f"fail:{kind}"] += 1
        FAILURES.append({"entry": entry, "case": label, "error": f"{kind}: {e}"[:300]})
        return f"fail:{kind}"


def _run_case(entry: str, call: Callable[[], Any], names: tuple[str, ...],
              primary: Callable[[Any], Any], shape: tuple[int, ...] | None, seconds: float,
              label: str) -> str:
    try:
        with wall_limit(seconds):
            out = call()
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert names, f"{entry} refused valid input ({label}): {type(e).__name__}: {msg}"
        assert any(n in msg for n in names), (
            f"{entry} refused {label} without naming {' or '.join(names)}: "
            f"{type(e).__name__}: {msg}"
        )
        OUTCOMES[entry, "refused"] += 1
        return "refused"
    except CallTimeout as e:
        raise AssertionError(f"{entry} ({label}): {e}") from None
    check_ok(primary(out), shape, f"{entry} ({label})")
    OUTCOMES[entry, "ok"] += 1
    return "ok"
