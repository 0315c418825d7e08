"""Verification suites: one module per claim family of ``paper-notes.md``.

``run`` measures the registered claims and prints the table that ``dropcheck verify`` shows.
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

__all__ = ["Claim", "Context", "Measurement", "all_claims", "all_plots", "claim", "plot", "run"]
