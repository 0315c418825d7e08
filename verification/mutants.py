"""Mutants as data: named wrong implementations, each with the claims expected to catch it.

A :class:`Mutant` swaps one piece of the library for a wrong one while its context manager is
active (``with mutant.patch(): ...``).  ``dropcheck verify --mutants`` measures the claims under
every mutant and prints the claim × mutant matrix: a claim that still passes with a wrong library
inside does not test that piece of the library.

Any module of the ``verification`` package may define a module-level ``MUTANTS`` list of
:class:`Mutant` objects; :func:`all_mutants` collects them all (this module's own list included),
so a new claim family brings its mutants with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mutant:
    """One deliberately wrong implementation.

    ``name`` is a short identifier (the matrix column), ``description`` says what is wrong,
    ``claims`` are the claim IDs expected to catch it (FAIL or DEVIATES under the mutant), and
    ``patch`` is a zero-argument callable returning a context manager that applies the wrong
    implementation and restores the library on exit.
    """

    name: str
    description: str
    claims: tuple[str, ...]
    patch: Callable[[], AbstractContextManager[Any]]


@contextlib.contextmanager
def swap(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Set ``obj.attr = value`` for the duration of the block, then restore it."""
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


#: The mutants of the library's core pieces (other verification modules add their own).
MUTANTS: list[Mutant] = []
