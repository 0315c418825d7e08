"""One signature style for the public functions, and the deprecation path to it.

Every public estimator reads ``(model, x, y, q, /, *, sites=None, samples=..., rng=None, ...)``:
the four mathematical arguments positional-only, everything else by keyword.  Sample counts are
``samples`` (formerly ``draws``, ``T``, ``calls``); randomness is ``rng`` (formerly also
``seed``): an ``int`` seed, a ``numpy.random.SeedSequence``, a ``numpy.random.Generator`` (or a
device generator with the same ``random``/``standard_normal`` methods, e.g. cupy's), or None for
the fixed default seed :data:`DEFAULT_SEED` — never global random state, so a call without
``rng`` is reproducible.

:func:`accepts_old_signature` keeps callers of the old signatures working for one deprecation
cycle: old positional arguments and old keyword names are mapped to the new keywords, each with
a ``DeprecationWarning`` raised once per (function, argument).
"""

from __future__ import annotations

import functools
import inspect
import operator
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as _np

__all__ = ["DEFAULT_SEED", "resolve_rng", "accepts_old_signature"]

#: Seed used when a function is called with ``rng=None``.
DEFAULT_SEED = 0

F = TypeVar("F", bound=Callable[..., Any])

_WARNED: set[tuple[str, str]] = set()


def _warn_once(func: str, key: str, message: str) -> None:
    if (func, key) in _WARNED:
        return
    _WARNED.add((func, key))
    # stacklevel 3: the user's call, above the wrapper
    warnings.warn(message, DeprecationWarning, stacklevel=3)


def resolve_rng(rng: Any, name: str = "rng") -> Any:
    """Return a random generator for ``rng`` (see the module docstring for what is accepted).

    A generator object is used as is (the caller's stream advances); an int or SeedSequence
    starts a fresh numpy ``Generator``; None starts one from :data:`DEFAULT_SEED`.
    """
    if rng is None:
        return _np.random.default_rng(DEFAULT_SEED)
    if isinstance(rng, _np.random.Generator) or (
        hasattr(rng, "random") and hasattr(rng, "standard_normal")
    ):
        return rng
    if isinstance(rng, _np.random.SeedSequence):
        return _np.random.default_rng(rng)
    if isinstance(rng, bool):
        raise TypeError(f"{name} must be an int seed, a SeedSequence, a Generator or None; "
                        f"got {rng!r}")
    try:
        seed = operator.index(rng)
    except TypeError:
        raise TypeError(
            f"{name} must be an int seed, a numpy SeedSequence, a numpy Generator (or a device "
            f"generator such as cupy's) or None; got {type(rng).__name__} {rng!r}"
        ) from None
    if seed < 0:
        raise ValueError(f"{name}: a seed must be a non-negative integer, got {seed}")
    return _np.random.default_rng(seed)


def accepts_old_signature(
    positional: tuple[str, ...] = (), renamed: Mapping[str, str] | None = None
) -> Callable[[F], F]:
    """Decorator: map a function's old calling conventions onto its new signature.

    ``positional`` names, in order, the arguments the old signature took positionally after the
    new positional-only ones (e.g. ``("rng", "draws")``); ``renamed`` maps old keyword names to
    new ones (e.g. ``{"draws": "samples", "seed": "rng"}``), applied after ``positional``.  Each
    old use warns once.  Passing an argument both ways is a TypeError naming it.
    """
    renamed = dict(renamed or {})

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)
        n_pos = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()
        )
        qual = fn.__qualname__
        mod = fn.__module__.removeprefix("dropcheck.")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > n_pos:
                extra = args[n_pos:]
                if len(extra) > len(positional):
                    raise TypeError(
                        f"{mod}.{qual}() takes {n_pos} positional arguments "
                        f"but {len(args)} were given"
                    )
                for name, value in zip(positional, extra, strict=False):
                    old = name
                    name = renamed.get(name, name)
                    if name in kwargs:
                        raise TypeError(f"{mod}.{qual}() got {name!r} both positionally and "
                                        "by keyword")
                    _warn_once(qual, f"pos:{old}",
                               f"{mod}.{qual}: passing {old!r} positionally is deprecated; "
                               f"pass {name}=... by keyword")
                    kwargs[name] = value
                args = args[:n_pos]
            for old, new in renamed.items():
                if old in kwargs and old not in sig.parameters:
                    if new in kwargs:
                        raise TypeError(f"{mod}.{qual}() got both {old!r} (deprecated) and "
                                        f"{new!r}; pass only {new}=...")
                    _warn_once(qual, f"kw:{old}",
                               f"{mod}.{qual}: argument {old!r} is deprecated; use {new}=...")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
