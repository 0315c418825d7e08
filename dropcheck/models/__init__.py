"""Models implementing the site protocol: ``MLP``, ``Linear``, ``Functional``."""

from dropcheck.models._base import Model, Site, Tangent, Trace
from dropcheck.models.functional import Functional
from dropcheck.models.linear import Linear
from dropcheck.models.mlp import MLP

__all__ = ["MLP", "Linear", "Functional", "Model", "Site", "Tangent", "Trace"]
