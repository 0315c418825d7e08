"""Checkers that validate other implementations of dropout, like a gradcheck for dropout.

``check_dropout`` checks a dropout layer; ``check_explicit_regularizer`` a regularizer (R_approx,
R_taylor, R_drop) and ``check_gradient_noise`` gradient-noise samples (ξ_approx, ξ_drop) on small
random networks handed over through :mod:`dropcheck.checks.adapters`.

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
from dropcheck.checks.noise import (
    NoiseReport,
    assert_gradient_noise_matches,
    check_gradient_noise,
)
from dropcheck.checks.regularizer import (
    RegularizerReport,
    assert_regularizer_matches,
    check_explicit_regularizer,
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
    # explicit regularizers (R_approx, R_taylor, R_drop)
    "RegularizerReport",
    "assert_regularizer_matches",
    "check_explicit_regularizer",
    # gradient noise (ξ_approx, ξ_drop)
    "NoiseReport",
    "assert_gradient_noise_matches",
    "check_gradient_noise",
]
