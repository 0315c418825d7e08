"""One signature style for the public functions, and the deprecation path to it.

Every public estimator reads ``(model, x, y, q, /, *, sites=None, samples=..., rng=None, ...)``:
the four mathematical arguments positional-only, everything else by keyword.  Sample counts are
``samples`` (formerly ``draws``, ``T``, ``calls``); randomness is ``rng`` (formerly also
``seed``): an ``int`` seed, a ``numpy.random.SeedSequence``, a ``numpy.random.Generator`` (or a
device generator with numpy's ``random(shape)`` method, e.g. cupy's), or None for
the fixed default seed :data:`DEFAULT_SEED` — never global random state, so a call without
``rng`` is reproducible.

:func:`accepts_old_signature` keeps callers of the old signatures working for one deprecation
cycle: old positional arguments and old keyword names are mapped to the new keywords, each with
one ``DeprecationWarning`` per call naming every old form it used, each form warned about
once per (function, argument).
"""

from __future__ import annotations

import functools
import inspect
import operator
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as _np

__all__ = ["DEFAULT_SEED", "resolve_rng", "resolve_seed", "accepts_old_signature"]

#: Seed used when a function is called with ``rng=None``.
DEFAULT_SEED = 0

F = TypeVar("F", bound=Callable[..., Any])

_WARNED: set[tuple[str, str]] = set()


def _warn_once(func: str, notes: list[tuple[str, str]], prefix: str) -> None:
    """Warn once (DeprecationWarning) about the old forms ``notes`` (key, text) of one call.

    Forms already warned about for ``func`` in this process are left out: each warns once.
    """
    new = [(k, t) for k, t in notes if (func, k) not in _WARNED]
    if not new:
        return
    _WARNED.update((func, k) for k, _ in new)
    # stacklevel 3: the user's call, above the wrapper
    warnings.warn(f"{prefix}: " + "; ".join(t for _, t in new), DeprecationWarning,
                  stacklevel=3)


def resolve_seed(rng: Any, name: str = "rng") -> Any:
    """Normalise ``rng`` to one ``numpy.random.SeedSequence``, or the generator object itself.

    Every accepted seed form becomes a SeedSequence: ``None`` → ``SeedSequence(DEFAULT_SEED)``,
    an int (Python or numpy, via ``operator.index``) ``s`` → ``SeedSequence(s)``, a SeedSequence
    as is — so ``5``, ``np.int64(5)`` and ``SeedSequence(5)`` give the same streams (and
    ``default_rng`` of the result is ``default_rng(s)``).  A generator object (numpy's, or a
    device generator with ``random(shape)``) is returned as is.
    """
    if rng is None:
        return _np.random.SeedSequence(DEFAULT_SEED)
    if isinstance(rng, _np.random.Generator) or (
        hasattr(rng, "random") and not isinstance(rng, _np.random.SeedSequence)
    ):
        # duck-typed: anything with numpy's ``random(shape)`` (a device generator, a test double)
        return rng
    if isinstance(rng, _np.random.SeedSequence):
        return rng
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
    return _np.random.SeedSequence(seed)


def resolve_rng(rng: Any, name: str = "rng") -> Any:
    """Return a random generator for ``rng`` (see the module docstring for what is accepted).

    A generator object is used as is (the caller's stream advances); an int or SeedSequence
    starts a fresh numpy ``Generator`` (``default_rng(s)``); None starts one from
    :data:`DEFAULT_SEED`.  Seeds are normalised by :func:`resolve_seed`.
    """
    r = resolve_seed(rng, name)
    return _np.random.default_rng(r) if isinstance(r, _np.random.SeedSequence) else r


def accepts_old_signature(
    positional: tuple[str, ...] = (), renamed: Mapping[str, str] | None = None
) -> Callable[[F], F]:
    """Decorator: map a function's old calling conventions onto its new signature.

    Positional-only parameters (``model, x, y, q``) passed by keyword, as the old signatures
    allowed, are moved to their positions.  ``positional`` names, in order, the arguments the
    old signature took positionally after the new positional-only ones (e.g.
    ``("rng", "draws")``); ``renamed`` maps old keyword names to new ones (e.g.
    ``{"draws": "samples", "seed": "rng"}``), applied after ``positional``.  Each old use warns
    once.  Passing an argument both ways is a TypeError naming it.  A first positional-only
    parameter named ``model`` is checked to be a dropcheck model
    (:func:`dropcheck._validate.check_model`).
    """
    renamed = dict(renamed or {})

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)
        n_pos = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()
        )
        qual = fn.__qualname__
        mod = fn.__module__.removeprefix("dropcheck.")
        posonly = [p.name for p in sig.parameters.values() if p.kind == p.POSITIONAL_ONLY]
        takes_model = bool(posonly) and posonly[0] == "model"

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            notes: list[tuple[str, str]] = []
            if len(args) < len(posonly) and any(n in kwargs for n in posonly[len(args):]):
                # the old signatures took these by keyword too (``q=0.3``)
                moved = list(args)
                for name in posonly[len(args):]:
                    if name not in kwargs:
                        break
                    notes.append((f"kw:{name}",
                                  f"passing {name!r} by keyword is deprecated; pass it "
                                  "positionally"))
                    moved.append(kwargs.pop(name))
                args = tuple(moved)
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
                    notes.append((f"pos:{old}", f"passing {old!r} positionally is deprecated; "
                                                 f"pass {name}=... by keyword"))
                    kwargs[name] = value
                args = args[:n_pos]
            for old, new in renamed.items():
                if old in kwargs and old not in sig.parameters:
                    if new in kwargs:
                        raise TypeError(f"{mod}.{qual}() got both {old!r} (deprecated) and "
                                        f"{new!r}; pass only {new}=...")
                    notes.append((f"kw:{old}", f"argument {old!r} is deprecated; use {new}=..."))
                    kwargs[new] = kwargs.pop(old)
            if notes:
                _warn_once(qual, notes, f"{mod}.{qual}")
            if takes_model and args:
                # the validation layer's first check, for every decorated entry point
                from dropcheck._validate import check_model

                check_model(args[0])
            return fn(*args, **kwargs)

        wrapper.__old_signature__ = (tuple(positional), dict(renamed))  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
