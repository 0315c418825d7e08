"""Checkers that validate other implementations of dropout, like a gradcheck for dropout.

Each checker returns a :class:`CheckReport` (passed, one row per check with its statistic,
threshold, p-value and verdict, sample sizes, the seed, a one-line diagnosis) and can raise
:class:`DropcheckError` with it.
"""

from dropcheck.checks._report import CheckReport, CheckRow, DropcheckError
from dropcheck.checks.dropout import (
    DEFAULT_Q,
    DropoutReport,
    assert_dropout_correct,
    check_dropout,
)

__all__ = [
    # reports
    "CheckReport",
    "CheckRow",
    "DropcheckError",
    # dropout layers
    "DEFAULT_Q",
    "DropoutReport",
    "assert_dropout_correct",
    "check_dropout",
]
