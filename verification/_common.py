"""Shared helpers of the verification suites: random nets, error measures, summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

import dropcheck as dc


def random_inputs(rng: np.random.Generator, n: int, d: int, c: int) -> tuple[Any, Any]:
    """Standard normal inputs ``(n, d)`` and uniform labels ``(n,)``."""
    return rng.standard_normal((n, d)), rng.integers(0, c, size=n)


def random_mlp(rng: np.random.Generator, sizes: list[int], **kw: Any) -> dc.MLP:
    """A random MLP seeded from ``rng``."""
    return dc.MLP.random(sizes, rng=rng, seed=None, **kw)


def rel_err(a: Any, b: Any) -> float:
    """``‖a − b‖ / ‖b‖`` (Frobenius), with ``‖b‖ = 0`` giving the absolute error."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


def fmt(v: float) -> str:
    """A compact number for the table."""
    return f"{v:.2g}" if v != 0 else "0"
