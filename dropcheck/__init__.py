"""dropcheck: numerical and symbolic verification of dropout's regularization.

Wei, Kakade & Ma, "The Implicit and Explicit Regularization Effects of Dropout", ICML 2020,
and classical dropout theory, checked against exact enumeration, autograd and sympy.
"""

from dropcheck import (
    backend,
    checks,
    classical,
    covariance,
    exact,
    explicit,
    implicit,
    losses,
    montecarlo,
    noise,
    strategies,
    testing,
    theory,
)
from dropcheck.losses import CrossEntropy, Squared
from dropcheck.models import LSTM, MLP, Functional, Linear, Model, Site
from dropcheck.noise import TooManyMasksError

__version__ = "0.1.0"

__all__ = [
    # models
    "MLP",
    "Linear",
    "Functional",
    "LSTM",
    "Model",
    "Site",
    # losses
    "CrossEntropy",
    "Squared",
    # modules
    "backend",
    "checks",
    "classical",
    "covariance",
    "exact",
    "explicit",
    "implicit",
    "losses",
    "montecarlo",
    "noise",
    "strategies",
    "testing",
    "theory",
    # errors
    "TooManyMasksError",
]
