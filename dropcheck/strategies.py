"""Hypothesis strategies for property tests of dropout code: small MLPs, inputs, labels, ``q``.

For users' own property tests (and dropcheck's), in the style of ``hypothesis.extra.array_api``:
every argument is checked when the strategy is built, and an invalid one raises
``hypothesis.errors.InvalidArgument`` naming the value and the fix.

- :func:`drop_probabilities` — ``q`` in ``[min_q, max_q]`` (drop probability, paper notation);
- :func:`mlps` — :class:`~dropcheck.models.MLP` objects: depth, widths, activation, dropout
  sites and weight scale drawn (weights from a drawn seed, so a failing example reproduces);
- :func:`inputs` — a batch ``x`` ``(n, d0)`` for a model (or an input width);
- :func:`labels` — integer class labels ``(n,)``;
- :func:`problems` — a consistent :class:`DropoutProblem` ``(net, x, y, q)``;
- :func:`make_strategies` — the same functions bound to an array namespace ``xp`` (numpy when
  None), so arrays and weights come out in it.

Example::

    from hypothesis import given
    import dropcheck as dc
    from dropcheck import strategies as dst

    @given(dst.problems(max_width=5))
    def test_my_regularizer(pb):
        assert my_r_approx(pb.net, pb.x, pb.y) >= 0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from dropcheck.backend import asarray, default_dtype, namespace
from dropcheck.models import MLP
from dropcheck.models._activations import ACTIVATIONS

__all__ = [
    "ACTIVATION_NAMES",
    "SITE_MODES",
    "DropoutProblem",
    "drop_probabilities",
    "mlps",
    "inputs",
    "labels",
    "problems",
    "make_strategies",
]

ACTIVATION_NAMES = tuple(ACTIVATIONS)
#: ``"hidden"``: every hidden layer (``"x"`` when there is none); ``"all"``: also the input;
#: ``"any"``: a non-empty subset of all sites
SITE_MODES = ("hidden", "all", "any")


class DropoutProblem(NamedTuple):
    """A network, a batch, its labels and a drop probability, consistent with each other."""

    net: MLP
    x: Any
    y: Any
    q: float


def _int(v: Any, name: str, lo: int) -> int:
    """Check an integer argument ``>= lo``."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise InvalidArgument(f"{name}={v!r} must be an integer >= {lo}")
    return int(v)


def _range(lo: Any, hi: Any, name: str, floor: int) -> tuple[int, int]:
    """Check an integer range ``floor <= lo <= hi``."""
    lo, hi = _int(lo, f"min_{name}", floor), _int(hi, f"max_{name}", floor)
    if lo > hi:
        raise InvalidArgument(f"min_{name}={lo} must not exceed max_{name}={hi}")
    return lo, hi


def _float(v: Any, name: str) -> float:
    """Check a finite real number."""
    if isinstance(v, bool) or not isinstance(v, int | float | np.number) \
            or not math.isfinite(float(v)):
        raise InvalidArgument(f"{name}={v!r} must be a finite number")
    return float(v)


def drop_probabilities(*, min_q: float = 0.0, max_q: float = 0.9,
                       exclude_zero: bool = False) -> st.SearchStrategy[float]:
    """Drop probabilities ``q`` in ``[min_q, max_q]`` (``0 <= min_q <= max_q < 1``).

    ``exclude_zero`` leaves out ``q = 0`` (no dropout, every regularizer 0).
    """
    lo, hi = _float(min_q, "min_q"), _float(max_q, "max_q")
    if not 0.0 <= lo <= hi < 1.0:
        raise InvalidArgument(f"need 0 <= min_q <= max_q < 1 (q = 1 drops everything); got "
                              f"min_q={min_q!r}, max_q={max_q!r}")
    if exclude_zero and hi == 0.0:
        raise InvalidArgument("exclude_zero=True leaves nothing in [0, 0]; raise max_q")
    return st.floats(lo, hi, exclude_min=exclude_zero and lo == 0.0)


def _activations(activations: Any) -> tuple[str, ...]:
    acts = (activations,) if isinstance(activations, str) else tuple(activations)
    bad = [a for a in acts if a not in ACTIVATIONS]
    if not acts or bad:
        raise InvalidArgument(f"activations={activations!r} must name one or more of "
                              f"{list(ACTIVATION_NAMES)}")
    return acts


def _site_names(layers: int) -> list[str]:
    return ["x"] + [f"h{i}" for i in range(1, layers)]


def mlps(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_width: int = 1,
    max_width: int = 6,
    min_classes: int = 2,
    max_classes: int = 4,
    activations: str | Sequence[str] = ACTIVATION_NAMES,
    sites: str = "hidden",
    min_scale: float = 0.1,
    max_scale: float = 2.0,
    loss: str = "cross_entropy",
    xp: Any = None,
    dtype: Any = None,
) -> st.SearchStrategy[MLP]:
    """Random :class:`~dropcheck.models.MLP` s with ``min_layers`` … ``max_layers`` weight layers.

    Input and hidden widths are drawn from ``[min_width, max_width]``, the number of classes
    (logits) from ``[min_classes, max_classes]``, the activation from ``activations``, the
    dropout sites by ``sites`` (one of :data:`SITE_MODES`), and the weights as
    :meth:`MLP.random` with a drawn seed and a weight ``scale`` in ``[min_scale, max_scale]``.
    """
    if loss not in ("cross_entropy", "squared"):
        raise InvalidArgument(f"loss={loss!r} must be 'cross_entropy' or 'squared'")
    if loss == "cross_entropy" and _int(max_classes, "max_classes", 1) < 2:
        raise InvalidArgument("cross-entropy needs at least 2 classes: raise max_classes")
    lo_l, hi_l = _range(min_layers, max_layers, "layers", 1)
    lo_w, hi_w = _range(min_width, max_width, "width", 1)
    lo_c, hi_c = _range(max(min_classes, 2) if loss == "cross_entropy" else min_classes,
                        max_classes, "classes", 1)
    acts = _activations(activations)
    if sites not in SITE_MODES:
        raise InvalidArgument(f"sites={sites!r} must be one of {list(SITE_MODES)}")
    lo_s, hi_s = _float(min_scale, "min_scale"), _float(max_scale, "max_scale")
    if not 0.0 < lo_s <= hi_s:
        raise InvalidArgument(f"need 0 < min_scale <= max_scale; got {min_scale!r}, "
                              f"{max_scale!r}")
    ns = namespace(xp=xp)
    dt = default_dtype(ns) if dtype is None else dtype

    @st.composite
    def build(draw: Any) -> MLP:
        layers = draw(st.integers(lo_l, hi_l))
        widths = draw(st.lists(st.integers(lo_w, hi_w), min_size=layers, max_size=layers))
        sizes = [*widths, draw(st.integers(lo_c, hi_c))]
        names = _site_names(layers)
        if sites == "hidden":
            chosen = None
        elif sites == "all":
            chosen = tuple(names)
        else:
            chosen = tuple(draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
        return MLP.random(sizes, draw(st.sampled_from(acts)), chosen,
                          seed=draw(st.integers(0, 2**32 - 1)),
                          scale=draw(st.floats(lo_s, hi_s)), loss=loss, xp=ns, dtype=dt)

    return build()


def inputs(model: MLP | int, *, min_n: int = 1, max_n: int = 6, bound: float = 3.0,
           xp: Any = None) -> st.SearchStrategy[Any]:
    """Batches ``x`` ``(n, d0)`` for ``model`` (or an input width ``d0``), entries in ±``bound``.

    Arrays come in ``xp`` (the model's namespace when a model is given, else numpy).
    """
    if isinstance(model, MLP):
        d0, ns, dt = model.input_dim, model.xp if xp is None else xp, model.dtype
    else:
        d0 = _int(model, "model (an MLP or an input width)", 1)
        ns = namespace(xp=xp)
        dt = default_dtype(ns)
    lo, hi = _range(min_n, max_n, "n", 1)
    b = _float(bound, "bound")
    if b <= 0:
        raise InvalidArgument(f"bound={bound!r} must be positive")
    elem = st.floats(-b, b, allow_nan=False, allow_infinity=False)
    return st.integers(lo, hi).flatmap(
        lambda n: hnp.arrays(np.float64, (n, d0), elements=elem)).map(
        lambda a: asarray(a, ns, dtype=dt))


def labels(n_classes: int, n: int, *, xp: Any = None) -> st.SearchStrategy[Any]:
    """Integer class labels ``(n,)`` in ``[0, n_classes)``."""
    c = _int(n_classes, "n_classes", 1)
    size = _int(n, "n", 0)
    ns = namespace(xp=xp)
    return hnp.arrays(np.int64, (size,), elements=st.integers(0, c - 1)).map(
        lambda a: asarray(a, ns))


def problems(*, min_n: int = 1, max_n: int = 6, min_q: float = 0.0, max_q: float = 0.9,
             exclude_zero: bool = False, xp: Any = None, **mlp_kwargs: Any
             ) -> st.SearchStrategy[DropoutProblem]:
    """A consistent :class:`DropoutProblem` ``(net, x, y, q)``.

    The network comes from :func:`mlps` (``mlp_kwargs``), the batch has ``min_n`` … ``max_n``
    inputs, ``y`` holds labels (cross-entropy) or targets (squared loss), ``q`` is drawn by
    :func:`drop_probabilities`.
    """
    nets = mlps(xp=xp, **mlp_kwargs)
    qs = drop_probabilities(min_q=min_q, max_q=max_q, exclude_zero=exclude_zero)
    _range(min_n, max_n, "n", 1)

    @st.composite
    def build(draw: Any) -> DropoutProblem:
        net = draw(nets)
        x = draw(inputs(net, min_n=min_n, max_n=max_n))
        n = x.shape[0]
        if net.loss.name == "cross_entropy":
            y = draw(labels(net.n_classes, n, xp=net.xp))
        else:
            y = asarray(draw(hnp.arrays(np.float64, (n, net.n_classes),
                                        elements=st.floats(-3, 3))), net.xp, dtype=net.dtype)
        return DropoutProblem(net, x, y, draw(qs))

    return build()


def make_strategies(xp: Any = None) -> SimpleNamespace:
    """The strategies of this module bound to the array namespace ``xp`` (numpy when None).

    Returns a namespace with ``drop_probabilities``, ``mlps``, ``inputs``, ``labels`` and
    ``problems``; each accepts the same keywords as the module-level function minus ``xp``.
    """
    ns = namespace(xp=xp)
    if not hasattr(ns, "asarray") or not hasattr(ns, "float64"):
        raise InvalidArgument(f"xp={xp!r} is not an array namespace (numpy, array_api_strict, "
                              f"array_api_compat.torch, ...)")
    return SimpleNamespace(
        xp=ns,
        drop_probabilities=drop_probabilities,
        mlps=lambda **kw: mlps(xp=ns, **kw),
        inputs=lambda model, **kw: inputs(model, xp=ns, **kw),
        labels=lambda n_classes, n: labels(n_classes, n, xp=ns),
        problems=lambda **kw: problems(xp=ns, **kw),
    )
