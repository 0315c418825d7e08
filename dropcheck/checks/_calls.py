"""Calling the user's callables safely, and turning what they return into checked numpy arrays.

Every failure of user code (it raises, returns a non-array, the wrong shape or dtype, NaN) is a
:class:`CallFailed` with a plain message; the checkers turn it into an ``ERROR`` row instead of
crashing.

How a callable receives the drop probability ``q`` (the ``rate`` argument of the checkers):

- ``"fixed"``: ``fn(x)``, the rate is built in (a ``torch.nn.Dropout(0.3)`` module);
- ``"arg"``: ``fn(x, q)`` (``torch.nn.functional.dropout`` itself);
- ``"factory"``: ``fn(q)`` returns the layer, called as ``layer(x)`` (``torch.nn.Dropout``);
- ``"auto"``: a class is a factory; otherwise ``"arg"`` if ``fn`` has two or more named
  positional parameters, else ``"fixed"`` (a bare ``*args``, as in a torch module's
  ``__call__``, counts as none).

A ``vjp_fn`` receives the upstream cotangent ``g`` after ``x``: ``vjp_fn(x, g)``,
``vjp_fn(x, g, q)`` or ``vjp_fn(q)(x, g)``, and returns ``(output, input_gradient)``.

Budgets (issue 18): inside ``with budget(seconds=S, calls=N):`` every call of user code made
through :func:`call` counts against ``N`` calls and the ``S`` seconds of wall time since the
block began.  A call past either budget, or one still running when the time is up, is a
:class:`CallFailed` naming the budget — an ``ERROR`` row, never a hang.  With a time budget
each call runs in a worker thread joined with the remaining time (a callable that never
returns is left behind in a daemon thread: Python cannot stop a thread); torch's thread-local
grad mode and the caller's context variables are carried into the worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropcheck.backend import to_numpy

__all__ = ["RATE_MODES", "CallFailed", "infer_rate_mode", "bind", "checked_output", "call",
           "budget", "Budget"]

RATE_MODES = ("auto", "fixed", "arg", "factory")


class CallFailed(Exception):
    """User code misbehaved; ``str(exc)`` says how, in a sentence for the report.

    ``nonfinite`` is true when the only fault was NaN or infinity in a well-formed output.
    """

    def __init__(self, message: str, nonfinite: bool = False):
        super().__init__(message)
        self.nonfinite = nonfinite


def infer_rate_mode(fn: Callable[..., Any]) -> str:
    """Return ``"factory"``, ``"arg"`` or ``"fixed"`` for ``fn`` (see the module docstring)."""
    if inspect.isclass(fn):
        return "factory"
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): the plainest reading
        return "fixed"
    # named positional parameters only: a bare *args (torch modules' __call__) says nothing
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return "arg" if sum(p.kind in kinds for p in params) >= 2 else "fixed"


@dataclass
class Budget:
    """The wall time (``seconds``) and number of user calls (``calls``) a check may spend.

    ``None`` is unlimited; ``start`` is the :func:`time.monotonic` the budget began at and
    ``used`` the calls made so far.
    """

    seconds: float | None
    calls: int | None
    start: float
    used: int = 0

    def left(self) -> float:
        """Seconds of wall time left (``inf`` without a time budget)."""
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "dropcheck_check_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float | None = None, calls: int | None = None) -> Iterator[Budget]:
    """Bound the wall time and the number of user calls of the checks run inside the block.

    ``seconds``: wall time from entering the block (finite, > 0); ``calls``: calls of user
    code (an integer >= 1).  Past either, the check reports ``ERROR`` rows naming the budget.
    """
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
                math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be a finite number of seconds > 0, got {seconds!r}")
        seconds = float(seconds)
    if calls is not None:
        from dropcheck._validate import check_count

        calls = check_count(calls, "calls")
    token = _BUDGET.set(Budget(seconds, calls, time.monotonic()))
    try:
        yield _BUDGET.get()  # type: ignore[misc]
    finally:
        _BUDGET.reset(token)


def _run_with_deadline(f: Callable[..., Any], args: tuple[Any, ...], b: Budget,
                       who: str) -> Any:
    """``f(*args)`` in a worker thread joined with the budget's remaining wall time."""
    left = b.left()
    if left <= 0:
        raise CallFailed(f"{who} was not called: the check's wall-time budget of "
                         f"{b.seconds:g} s (budget(seconds=...)) is spent")
    torch = sys.modules.get("torch")
    grad = torch.is_grad_enabled() if torch is not None else None
    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            if torch is not None:
                torch.set_grad_enabled(grad)  # thread-local in torch: carry the caller's
            box["out"] = ctx.run(f, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["exc"] = exc

    worker = threading.Thread(target=run, name="dropcheck-check-call", daemon=True)
    worker.start()
    worker.join(left)
    if worker.is_alive():
        raise CallFailed(f"{who} did not return within the check's wall-time budget of "
                         f"{b.seconds:g} s (budget(seconds=...)); it was left running in a "
                         f"daemon thread")
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def call(f: Callable[..., Any], *args: Any, who: str, hint: str = "") -> Any:
    """Call ``f(*args)``; an exception becomes :class:`CallFailed` naming ``who``.

    ``hint`` is appended to the message of a ``TypeError`` or ``AttributeError`` (what a
    framework layer raises when handed a numpy array).  Inside a :func:`budget` block the
    call counts against it (see the module docstring).
    """
    b = _BUDGET.get()
    if b is not None and b.calls is not None:
        if b.used >= b.calls:
            raise CallFailed(f"{who} was not called: the check's call budget of {b.calls} "
                             f"calls (budget(calls=...)) is spent")
        b.used += 1
    try:
        if b is not None and b.seconds is not None:
            return _run_with_deadline(f, args, b, who)
        return f(*args)
    except CallFailed:
        raise
    except Exception as exc:  # user code: report what it raised instead of crashing
        msg = f"{who} raised {type(exc).__name__}: {exc}".strip()
        if hint and isinstance(exc, TypeError | AttributeError):
            msg = f"{msg} {hint}"
        raise CallFailed(msg) from exc


def bind(f: Callable[..., Any], mode: str, q: float, who: str, extra: int = 0) -> Callable:
    """Return ``f`` as a callable of the array arguments only, with ``q`` bound per ``mode``.

    ``extra`` is the number of array arguments after ``x`` (1 for a vjp, which takes ``g``).
    A factory is called here once, so its errors are reported as construction errors.
    """
    if mode == "fixed":
        return f
    if mode == "arg":
        return lambda *arrays: f(*arrays, q)
    layer = call(f, q, who=f"{who}({q:g}) (the factory)")
    if not callable(layer):
        raise CallFailed(f"{who}({q:g}) returned {type(layer).__name__}, not a callable layer")
    return layer


def checked_output(out: Any, like: np.ndarray, who: str) -> np.ndarray:
    """Return ``out`` as a numpy array after checking it is an array like ``like``, finite.

    Framework arrays convert through ``__array__`` / DLPack (torch tensors are detached).
    """
    if not (isinstance(out, np.ndarray) or hasattr(out, "__array__")
            or hasattr(out, "__dlpack__")):
        raise CallFailed(f"{who} returned {type(out).__name__}, not an array")
    try:
        a = to_numpy(out)
    except Exception as exc:  # any conversion failure of a foreign array is the user's output
        raise CallFailed(f"{who} returned {type(out).__name__} that does not convert to numpy "
                         f"({type(exc).__name__}: {exc})") from exc
    if a.shape != like.shape:
        raise CallFailed(f"{who} returned shape {a.shape} for an input of shape {like.shape}")
    if a.dtype != like.dtype:
        raise CallFailed(f"{who} returned dtype {a.dtype} for a {like.dtype} input "
                         f"(pass dtype= to check at the dtype the layer computes in)")
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.count_nonzero(np.isnan(a)))
        raise CallFailed(f"{who} returned {n_nan} NaN and {int(bad.sum()) - n_nan} infinite "
                         f"values among {a.size}", nonfinite=True)
    return a
