"""dropcheck: numerical and symbolic verification of dropout's regularization.

Wei, Kakade & Ma, "The Implicit and Explicit Regularization Effects of Dropout", ICML 2020,
and classical dropout theory, checked against exact enumeration, autograd and sympy.

``import dropcheck`` is light: it loads the models, losses and noise (numpy, autograd,
array-api-compat) and nothing else.  The submodules listed in :data:`__all__` are imported on
first attribute access (PEP 562 module ``__getattr__``), so ``dc.checks`` pulls in scipy.stats
and ``dc.strategies`` pulls in hypothesis only when used; matplotlib (``dropcheck.plots``) and
sympy (``dropcheck.derivations``) likewise.  ``tests/test_import.py`` checks this.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dropcheck.losses import CrossEntropy, Squared
from dropcheck.models import LSTM, MLP, Functional, Linear, Model, Site
from dropcheck.noise import TooManyMasksError

if TYPE_CHECKING:  # static checkers and IDEs see the submodules as attributes
    from dropcheck import (
        backend,
        checks,
        classical,
        covariance,
        ensembles,
        exact,
        explicit,
        fast_dropout,
        gaussian_dropout,
        glm,
        implicit,
        linear_nets,
        losses,
        models,
        montecarlo,
        noise,
        parallel,
        plots,
        quadrature,
        step,
        strategies,
        testing,
        theory,
    )

__version__ = "0.1.0"

#: Public submodules, imported on first access as ``dropcheck.<name>`` (heavy dependencies
#: stay out of ``import dropcheck``: scipy.stats via ``checks``/``testing``, hypothesis via
#: ``strategies``, matplotlib via ``plots``).  A new public module goes here and in
#: ``__all__`` (tests/test_import.py checks both against the package directory).
_LAZY_SUBMODULES = frozenset(
    {
        "backend",
        "checks",
        "classical",
        "covariance",
        "ensembles",
        "exact",
        "explicit",
        "fast_dropout",
        "gaussian_dropout",
        "glm",
        "implicit",
        "linear_nets",
        "losses",
        "models",
        "montecarlo",
        "noise",
        "parallel",
        "plots",
        "quadrature",
        "step",
        "strategies",
        "testing",
        "theory",
    }
)

#: Submodules that are tools reached through the CLI (LM training and corpora, the
#: verification suites, derivations, benchmarks): importable as ``dropcheck.<name>`` but not
#: library names, so they are not in ``__all__`` (``from dropcheck import *`` stays a library).
_NOT_LIBRARY = frozenset(
    {"cli", "lstm_eval", "lm", "data", "verification", "derivations", "benchmarks"}
)

__all__ = [
    # models
    "MLP",
    "Linear",
    "Functional",
    "LSTM",
    "Model",
    "Site",
    "from_torch",  # a function: torch is imported on its first call
    # losses
    "CrossEntropy",
    "Squared",
    # errors
    "TooManyMasksError",
    # modules
    "backend",
    "checks",
    "classical",
    "covariance",
    "ensembles",
    "exact",
    "explicit",
    "fast_dropout",
    "gaussian_dropout",
    "glm",
    "implicit",
    "linear_nets",
    "losses",
    "models",
    "montecarlo",
    "noise",
    "parallel",
    "plots",
    "quadrature",
    "step",
    "strategies",
    "testing",
    "theory",
]


def from_torch(*args: Any, **kwargs: Any) -> Any:
    """A PyTorch module as a dropcheck model (:func:`dropcheck.models.torch_model.from_torch`).

    A plain function, not a lazy submodule: torch is imported on its first call, so
    ``import dropcheck`` never imports torch (tests/test_torch_model.py checks it).
    """
    from dropcheck.models.torch_model import from_torch as _from_torch

    return _from_torch(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """Import the submodule ``dropcheck.<name>`` on first access (PEP 562)."""
    if name in _LAZY_SUBMODULES or name in _NOT_LIBRARY:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later accesses skip this hook
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
