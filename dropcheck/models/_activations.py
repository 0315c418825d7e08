"""Elementwise activations with their first and second derivatives, as one table.

Each row gives ``σ``, ``σ'`` and ``σ''`` in the array namespace ``xp``; the MLP's forward,
tangent and second-order sweeps read them from here, so every derivative of a layer has one
source.  ``gelu`` is the tanh form (Hendrycks & Gimpel 2016, eq. for ``approximate='tanh'`` in
PyTorch): ``erf`` is not in the array API standard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple


class Activation(NamedTuple):
    """``f``, ``df`` and ``d2f`` as functions ``(z, xp) -> array``."""

    f: Callable[[Any, Any], Any]
    df: Callable[[Any, Any], Any]
    d2f: Callable[[Any, Any], Any]


def _sigmoid(z: Any, xp: Any) -> Any:
    # exp of -|z| never overflows; both branches are finite
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _tanh_d2(z: Any, xp: Any) -> Any:
    t = xp.tanh(z)
    return -2.0 * t * (1.0 - t * t)


_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _gelu(z: Any, xp: Any) -> Any:
    return 0.5 * z * (1.0 + xp.tanh(_C * (z + _A * z**3)))


def _gelu_d1(z: Any, xp: Any) -> Any:
    t = xp.tanh(_C * (z + _A * z**3))
    du = _C * (1.0 + 3.0 * _A * z * z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du


def _gelu_d2(z: Any, xp: Any) -> Any:
    t = xp.tanh(_C * (z + _A * z**3))
    du = _C * (1.0 + 3.0 * _A * z * z)
    d2u = _C * 6.0 * _A * z
    return (1.0 - t * t) * (du + 0.5 * z * (d2u - 2.0 * t * du * du))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        lambda z, xp: xp.tanh(z), lambda z, xp: 1.0 - xp.tanh(z) ** 2, _tanh_d2
    ),
    "relu": Activation(
        lambda z, xp: xp.where(z > 0, z, 0.0 * z),
        lambda z, xp: xp.astype(z > 0, z.dtype),
        lambda z, xp: 0.0 * z,
    ),
    "gelu": Activation(_gelu, _gelu_d1, _gelu_d2),
    "softplus": Activation(
        lambda z, xp: xp.logaddexp(0.0 * z, z),
        _sigmoid,
        lambda z, xp: _sigmoid(z, xp) * (1.0 - _sigmoid(z, xp)),
    ),
    "sigmoid": Activation(
        _sigmoid,
        lambda z, xp: _sigmoid(z, xp) * (1.0 - _sigmoid(z, xp)),
        lambda z, xp: _sigmoid(z, xp) * (1.0 - _sigmoid(z, xp)) * (1.0 - 2.0 * _sigmoid(z, xp)),
    ),
    "identity": Activation(lambda z, xp: z, lambda z, xp: 0.0 * z + 1.0, lambda z, xp: 0.0 * z),
}
