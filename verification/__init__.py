"""Verification suites: one module per claim family of ``paper-notes.md``.

``run`` measures the registered claims and prints the lines that ``dropcheck verify`` shows;
``all_mutants`` lists the deliberately wrong library pieces of ``dropcheck verify --mutants``
(:mod:`dropcheck.verification.mutants`, ``docs/verification.md``).
"""

from dropcheck.verification._registry import (
    Claim,
    Context,
    Measurement,
    all_claims,
    all_plots,
    claim,
    plot,
)
from dropcheck.verification._runner import run
from dropcheck.verification.mutants import Mutant, all_mutants

__all__ = ["Claim", "Context", "Measurement", "Mutant", "all_claims", "all_mutants", "all_plots",
           "claim", "plot", "run"]
