"""Argument checks and the networks the checkers share (private to :mod:`dropcheck.checks`).

One place for what ``check_dropout``, ``check_explicit_regularizer`` and
``check_gradient_noise`` validate alike (``alpha``, the ``q`` grid, the networks) and for the
short name of a user's function in a report title.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dropcheck._validate import check_choice, check_positive_int, check_q
from dropcheck.checks.adapters import (
    Adapter,
    Problem,
    WeightLists,
    model_problems,
    problems_from_nets,
    random_problems,
)
from dropcheck.models import MLP

__all__ = ["check_alpha", "fn_name", "q_grid", "build_problems", "grid_args"]


def check_alpha(alpha: Any) -> float:
    """Validate the family-wise false-alarm probability: a float in (0, 1)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a probability in (0, 1), got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be a probability in (0, 1), got {alpha!r}")
    return a


def fn_name(fn: Any) -> str:
    """A short name for a callable in the report title."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def q_grid(q: Any) -> tuple[float, ...]:
    """Validate the drop probabilities of a regularizer or noise check: each in (0, 1).

    One float or a sequence; duplicates are dropped, the order kept.
    """
    vals = q if isinstance(q, Sequence | np.ndarray) and not isinstance(q, str) else [q]
    grid = tuple(dict.fromkeys(check_q(v, "q") for v in vals))
    if not grid:
        raise ValueError("q must hold at least one drop probability, got an empty sequence")
    if 0.0 in grid:
        raise ValueError("q = 0 makes every regularizer 0; pass drop probabilities in (0, 1)")
    return grid


def _sizes_arg(sizes: Any) -> tuple[tuple[int, ...], ...]:
    """Validate ``sizes``: a sequence of layer-size lists, each of >= 2 positive integers."""
    try:
        out = tuple(tuple(check_positive_int(d, "sizes") for d in s) for s in sizes)
    except (TypeError, ValueError):
        out = ()
    if not out or any(len(s) < 2 for s in out):
        raise ValueError(f"sizes must be a sequence of layer sizes such as ((5, 6, 4),), each "
                         f"with at least an input and an output size; got {sizes!r}")
    return out


def _activations_arg(activations: Any) -> tuple[str, ...]:
    """Validate ``activations``: one name or a sequence of names of dropcheck activations."""
    from dropcheck.models._activations import ACTIVATIONS

    acts = (activations,) if isinstance(activations, str) else tuple(activations)
    if not acts:
        raise ValueError("activations must name at least one activation")
    for a in acts:
        check_choice(a, tuple(ACTIVATIONS), "activations")
    return acts


def build_problems(nets: Sequence[MLP] | None, sizes: Any, activations: Any,
                   sites: Iterable[str] | str | None, n_nets: int, examples: int, scale: float,
                   seed: int, model: Any = None, data: Any = None,
                   adapter: Adapter | None = None) -> list[Problem]:
    """The networks a checker uses: the caller's ``nets`` or random ones, with their batches.

    ``model`` (any dropcheck model, or a list) with ``data`` (``(x, y)`` or a list of pairs)
    replaces them (:func:`~dropcheck.checks.adapters.model_problems`); the weight-list
    ``adapter`` needs MLPs.
    """
    if model is not None:
        if nets is not None:
            raise ValueError("pass either nets= (dropcheck MLPs) or model= with data=, not both")
        if isinstance(adapter, WeightLists):
            raise ValueError("adapter='numpy' hands weight lists of an MLP over; with model= "
                             "use adapter='torch' (fn(module, x, y, q)) or 'activations' "
                             "(fn(acts, logits, targets, q))")
        return model_problems(model, data)
    if data is not None:
        raise ValueError("data= goes with model=; the random nets draw their own batches")
    examples = check_positive_int(examples, "examples")
    if nets is not None:
        return problems_from_nets(list(nets), examples, seed)
    n_nets = check_positive_int(n_nets, "n_nets")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return random_problems(_sizes_arg(sizes), _activations_arg(activations), sites, n_nets,
                           examples, scale, seed)


def grid_args(fn: Any, q: Any, alpha: Any, seed: Any) -> tuple[tuple[float, ...], float, int]:
    """Validate what every network-grid checker takes: ``fn``, ``q``, ``alpha`` and ``seed``.

    ``fn`` callable, the ``q`` grid (:func:`q_grid`), ``alpha`` (:func:`check_alpha`), a seed
    ``>= 0``; returns ``(grid, alpha, seed)``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return q_grid(q), check_alpha(alpha), check_positive_int(seed, "seed", minimum=0)
