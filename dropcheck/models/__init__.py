"""Models implementing the site protocol: ``MLP``, ``Linear``, ``Functional``, ``LSTM``."""

from dropcheck.models._base import Model, Reverse, Site, Tangent, Trace
from dropcheck.models.functional import Functional
from dropcheck.models.linear import Linear
from dropcheck.models.lstm import LSTM
from dropcheck.models.mlp import MLP

__all__ = ["MLP", "Linear", "Functional", "LSTM", "Model", "Reverse", "Site", "Tangent", "Trace"]
