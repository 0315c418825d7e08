"""Argument checks shared by the public functions: each error names the argument.

The one validation layer of the public API (every entry point goes through these, most of them
through :meth:`dropcheck.models.Model.check_x` / ``check_sites`` / ``check_y``):

- counts (``samples``, ``k``, ``chunk_size``, ``max_masks``, …): any integer type, via
  ``operator.index`` (``100`` and ``np.int64(100)`` alike); bools, floats and NaN are a
  TypeError, a count below its minimum a ValueError;
- drop probabilities ``q``: a real number in ``[0, 1)`` — strings are a TypeError (not parsed);
- arrays: real or integer dtype (complex, string and object arrays are a TypeError naming the
  argument), finite values (a ValueError naming the argument), and the documented shapes;
  float16 is refused (a TypeError: dropcheck computes in float32 or float64, and float16's
  range overflows the exponentials of the losses);
- an empty batch (``x`` of shape ``(0, d)``) is a ValueError naming ``x``: every quantity is
  per example or a mean over examples, and a mean over none is undefined;
- sites: a name or an iterable of names, each a site of the model, no name twice;
- ``rng``: see :func:`dropcheck._api.resolve_seed` (every seed form normalised to one
  ``SeedSequence``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar


def check_q(q: Any, name: str = "q") -> float:
    """Return ``q`` as a float after checking it is a drop probability in [0, 1)."""
    if isinstance(q, str | bytes | bool) or hasattr(q, "dtype") and getattr(q, "ndim", 0) != 0:
        raise TypeError(f"{name} must be a float drop probability in [0, 1), got {q!r}")
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float drop probability in [0, 1), got {q!r}") from None
    if not math.isfinite(qf) or not 0.0 <= qf < 1.0:
        raise ValueError(
            f"{name} must be a drop probability in [0, 1) (q = 1 drops everything), got {q!r}"
        )
    return qf


def check_q_sites(q: Any, sites: tuple[str, ...], name: str = "q") -> dict[str, float]:
    """Normalize ``q`` (a float, or a dict site -> q) to a dict over ``sites``."""
    if isinstance(q, Mapping):
        unknown = set(q) - set(sites)
        if unknown:
            raise ValueError(f"{name} names sites {sorted(unknown)} not among {list(sites)}")
        missing = set(sites) - set(q)
        if missing:
            raise ValueError(f"{name} has no drop probability for sites {sorted(missing)}")
        return {s: check_q(q[s], f"{name}[{s!r}]") for s in sites}
    qf = check_q(q, name)
    return dict.fromkeys(sites, qf)


def check_count(v: Any, name: str, minimum: int = 1) -> int:
    """Return ``v`` as an int after checking it is an integer (``operator.index``) ``>= minimum``.

    Any integer type is accepted (``np.int64(100)`` as ``100``); bools and floats (also
    integral ones, also NaN) are a TypeError naming ``name``.
    """
    try:
        if isinstance(v, bool):
            raise TypeError
        i = operator.index(v)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer >= {minimum}, got {type(v).__name__} {v!r}"
        ) from None
    if i < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {i}")
    return i


#: The former name of :func:`check_count`.
check_positive_int = check_count


def check_array_kind(a: Any, xp: Any, name: str, *, float16: bool = False) -> None:
    """Raise TypeError unless array ``a`` holds real or integer numbers (or booleans).

    Complex arrays would lose their imaginary part, and string arrays would be parsed as
    numbers: both are refused, naming ``name``; float16 too unless ``float16=True`` (the
    caller upcasts it; see the module docstring).
    """
    dt = a.dtype
    try:
        ok = bool(xp.isdtype(dt, ("real floating", "integral", "bool")))
    except (TypeError, ValueError):  # a dtype outside the array API (strings, objects)
        ok = False
    if not ok:
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {dt}")
    f16 = getattr(xp, "float16", None)
    if not float16 and f16 is not None and dt == f16:
        raise TypeError(
            f"{name} is float16: dropcheck computes in float32 or float64 (float16 overflows "
            f"the losses' exponentials); convert {name} to float32 or float64"
        )


def check_finite(a: Any, xp: Any, name: str) -> None:
    """Raise ValueError if array ``a`` holds NaN or infinity."""
    if xp.isdtype(a.dtype, ("integral", "bool")):
        return
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} must be finite; it holds NaN or infinity")


def check_array(a: Any, xp: Any, name: str, *, finite: bool = True) -> Any:
    """Return ``xp.asarray(a)`` after checking its dtype kind and (by default) finiteness."""
    try:
        arr = xp.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of real numbers, got {type(a).__name__}: "
                        f"{e}") from None
    check_array_kind(arr, xp, name)
    if finite:
        check_finite(arr, xp, name)
    return arr


def check_finite_scalar(v: Any, name: str) -> float:
    """Return ``v`` as a float after checking it is finite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a finite number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return f


def check_choice(v: Any, choices: tuple[str, ...], name: str) -> str:
    """Check ``v`` is one of ``choices``."""
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {v!r}")
    return v


def check_nonnegative(v: Any, name: str) -> float:
    """Return ``v`` as a float after checking it is finite and ``>= 0``."""
    f = check_finite_scalar(v, name)
    if f < 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return f


def check_directions(directions: Any, xp: Any, n_params: int, name: str = "directions") -> Any:
    """Return ``directions`` as a real finite ``(P, k)`` array, or None when None."""
    if directions is None:
        return None
    V = check_array(directions, xp, name)
    if V.ndim != 2 or V.shape[0] != n_params:
        raise ValueError(f"{name} must have shape ({n_params}, k), got {tuple(V.shape)}")
    return V


# ----- inputs checked once per engine loop -----
_T = TypeVar("_T")

#: Inside :func:`checks_once`: the checks already run, ``(id(owner), id(array)) -> (owner, array,
#: result)`` (the objects are held so that their ids cannot be reused while the scope lives).
_ONCE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("dropcheck_checks_once",
                                                                    default=None)


@contextlib.contextmanager
def checks_once() -> Iterator[None]:
    """A scope in which each input array is validated once per model, not once per use.

    The engine's chunk loops (:mod:`dropcheck._engine`) run inside one: every chunk traces the
    same input ``x``, and each check of it (finite values, token ids in range) reads a reduction
    back to the host — on a GPU a device → host copy and a synchronisation per chunk
    (``tests/test_namespaces.py`` counts them).  The memory ends with the scope, so the next call
    checks again (an array changed in place between two calls is caught).  Nested scopes share
    the outermost one.
    """
    if _ONCE.get() is not None:
        yield
        return
    token = _ONCE.set({})
    try:
        yield
    finally:
        _ONCE.reset(token)


def one_check_per_loop(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``fn`` (an engine loop) inside :func:`checks_once`."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> _T:
        with checks_once():
            return fn(*args, **kwargs)

    return run


def check_once(owner: Any, a: Any, check: Callable[[], _T]) -> _T:
    """``check()``, ``owner``'s validation of array ``a``, once per :func:`checks_once` scope.

    Outside a scope it runs every time; inside, later calls return the first result.
    """
    memo = _ONCE.get()
    if memo is None:
        return check()
    key = (id(owner), id(a))
    hit = memo.get(key)
    if hit is not None and hit[0] is owner and hit[1] is a:
        return hit[2]
    out = check()
    memo[key] = (owner, a, out)
    return out


def check_model(model: Any, name: str = "model") -> Any:
    """Return ``model`` after checking it is a dropcheck model (the site protocol).

    Anything else (a dict of weights, an array, a torch module not wrapped by
    ``dropcheck.from_torch``) is a TypeError naming ``name`` and how to get a model.
    """
    from dropcheck.models._base import Model  # the protocol's base class (no import cycle)

    if not isinstance(model, Model):
        raise TypeError(
            f"{name} must be a dropcheck model (dc.MLP, dc.Linear, dc.LSTM, dc.Functional, or "
            f"dc.from_torch(module, ...) for a torch module); got {type(model).__name__}"
        )
    return model
