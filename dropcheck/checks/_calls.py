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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from dropcheck.backend import to_numpy

__all__ = ["RATE_MODES", "CallFailed", "infer_rate_mode", "bind", "checked_output", "call"]

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


def call(f: Callable[..., Any], *args: Any, who: str, hint: str = "") -> Any:
    """Call ``f(*args)``; an exception becomes :class:`CallFailed` naming ``who``.

    ``hint`` is appended to the message of a ``TypeError`` or ``AttributeError`` (what a
    framework layer raises when handed a numpy array).
    """
    try:
        return f(*args)
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
