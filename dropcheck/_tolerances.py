"""Default tolerances, reasoned from the dtype: a leaf module (numpy only).

:mod:`dropcheck.testing` (``assert_close``) and :mod:`dropcheck.checks` (the deterministic rows
of the checkers) both read their default relative tolerance here, so neither imports the other
for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["default_rtol"]


def default_rtol(dtype: Any) -> float:
    """``4·sqrt(eps)`` of ``dtype``: room for a few roundings in a conditioned computation.

    6e-8 for float64, 1.4e-3 for float32, 0.12 for float16.  ``dtype`` may be a numpy dtype,
    a dtype name, or a framework dtype whose ``str`` ends in the name (``torch.float32``).
    """
    return 4 * math.sqrt(float(np.finfo(np.dtype(str(dtype).split(".")[-1])).eps))
