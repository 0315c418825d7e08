"""The claim registry: each claim of ``paper-notes.md`` as data, with its measurement.

A claim is registered with :func:`claim` on the function that measures it::

    @claim("N1", statement="E[eta] = 0, E[delta delta^T] = q/(1-q) diag(h^2)",
           source="Sec. 2, 4.1; seed 002", kind="identity",
           rule="max relative error <= 1e-12 (float64 rounding of a finite sum)")
    def measure_n1(ctx: Context) -> Measurement: ...

Modules of the ``verification`` package are discovered automatically, so a new claim family is a
new module and nothing else.  Plots are registered the same way with :func:`plot`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Kind = Literal["identity", "approximation", "empirical"]

#: Order of the claim catalogue in paper-notes.md; unknown IDs sort after these.
CATALOGUE = (
    "N1 N2 D1 D2 D3 E1 E2 E3 E3b E4 E5 E6 E7 I1 I2 T1 L1 L2 L3 X1 X2 X3 X4 S1"
    " X1r X2r X3r X4r S1r X1d X2d X3d X4d"  # on real data: docs/experiments.md
    " A2 W1 W2 F1 G1 G2 B1 M1 K1"  # beyond the paper: docs/beyond.md
).split()


@dataclass
class Context:
    """What a measurement may use: the run mode, a seed, and a folder for plots.

    ``quick`` asks for the small version of the measurement (the whole ``--quick`` run fits in
    well under a minute on two CPU cores).  ``rng(salt)`` gives an independent seeded generator
    per use, so measurements do not depend on the order in which claims run.
    """

    quick: bool = False
    seed: int = 0
    outdir: Path | None = None

    def rng(self, salt: str | int = 0) -> np.random.Generator:
        """Return a numpy generator seeded from the run seed and ``salt``."""
        data = salt.encode() if isinstance(salt, str) else str(salt).encode()
        return np.random.default_rng([self.seed, *data])

    def plot_path(self, name: str, ext: str = "png") -> Path | None:
        """Return the path for plot ``name`` in the output folder, or None if there is none."""
        if self.outdir is None:
            return None
        self.outdir.mkdir(parents=True, exist_ok=True)
        return self.outdir / f"{name}.{ext}"


@dataclass
class Measurement:
    """The outcome of measuring one claim.

    ``figure`` is the measured figure as a person reads it (its first clause, up to the first
    ``;``, is the headline of the one-line summary); ``passed`` is the verdict of the claim's
    rule (None for an empirical claim that is only reported); ``values`` holds the raw numbers
    for the JSON report; ``plots`` the files written; ``exact`` the outcome of exact sub-checks
    inside an approximation claim (None when it has none).
    """

    figure: str
    passed: bool | None
    values: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    note: str = ""
    #: The claim's exact sub-checks (an approximation claim's identities, e.g. each term of a
    #: bound against an independent computation): False makes the verdict FAIL whatever the kind.
    exact: bool | None = None


@dataclass(frozen=True)
class Claim:
    """One checkable claim: paper-notes ID, statement, source, kind, pass rule, measurement."""

    id: str
    statement: str
    source: str
    kind: Kind
    rule: str
    measure: Callable[[Context], Measurement]


@dataclass(frozen=True)
class Plot:
    """One named plot that ``dropcheck plot NAME`` can make."""

    name: str
    help: str
    make: Callable[..., Any]


_CLAIMS: dict[str, Claim] = {}
_PLOTS: dict[str, Plot] = {}


def claim(
    id: str, *, statement: str, source: str, kind: Kind, rule: str
) -> Callable[[Callable[[Context], Measurement]], Callable[[Context], Measurement]]:
    """Register the decorated function as the measurement of claim ``id``."""
    if kind not in ("identity", "approximation", "empirical"):
        raise ValueError(f"kind must be identity, approximation or empirical, got {kind!r}")

    def register(fn: Callable[[Context], Measurement]) -> Callable[[Context], Measurement]:
        if id in _CLAIMS and _CLAIMS[id].measure is not fn:
            raise ValueError(f"claim {id!r} is registered twice")
        _CLAIMS[id] = Claim(id, statement, source, kind, rule, fn)
        return fn

    return register


def plot(name: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function ``fn(ctx, path, **options)`` as plot ``name``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _PLOTS[name] = Plot(name, help, fn)
        return fn

    return register


#: Modules that failed to import, with the error: reported by the runner, never hidden.
IMPORT_ERRORS: dict[str, str] = {}


def _discover() -> None:
    import dropcheck.verification as verification

    for info in pkgutil.iter_modules(verification.__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"dropcheck.verification.{info.name}")
            except Exception as exc:  # reported as a failed suite by the runner
                IMPORT_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"


def _order(cid: str) -> tuple[int, str]:
    return (CATALOGUE.index(cid) if cid in CATALOGUE else len(CATALOGUE), cid)


def all_claims() -> list[Claim]:
    """Return every registered claim in catalogue order."""
    _discover()
    return [_CLAIMS[k] for k in sorted(_CLAIMS, key=_order)]


def all_plots() -> dict[str, Plot]:
    """Return every registered plot by name."""
    _discover()
    return dict(sorted(_PLOTS.items()))
