"""Plot helpers shared by the verification suites: median line with a percentile band.

Approximation errors over a family of random nets are summarized the same way everywhere: at
each x value, the median over the family as a line with markers and a percentile band (10th–90th
by default) behind it, on log axes where the errors span decades, with labelled axes (units in
the label), a legend, and a figure saved as PNG, SVG or PDF by the path's suffix.

matplotlib is imported inside the functions (``matplotlib.figure.Figure``: no pyplot, no global
state, no GUI backend), so importing :mod:`dropcheck` does not pull it in.  Inputs are host
arrays (numpy or anything ``numpy.asarray`` accepts): plotting is not on the computing path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "figure",
    "band",
    "band_caption",
    "legend_below",
    "guide",
    "style",
    "save",
    "loglog_slope",
    "summary",
]

#: File formats :func:`save` writes, by suffix.
FORMATS = (".png", ".svg", ".pdf")


def figure(
    ncols: int = 1,
    nrows: int = 1,
    *,
    width: float = 4.6,
    height: float = 3.6,
    sharex: bool = False,
    sharey: bool = False,
    title: str | None = None,
) -> tuple[Any, np.ndarray]:
    """A constrained-layout figure with ``nrows × ncols`` panels of ``width × height`` inches.

    ``title`` lines (newline-separated) are wrapped to the figure's width.  Returns
    ``(fig, axes)`` with ``axes`` a flat array (row-major).
    """
    import textwrap

    from matplotlib.figure import Figure

    lines: list[str] = []
    if title:  # wrap each line to the figure's width (about 13 characters per inch at 10 pt)
        chars = max(30, int(12.5 * width * ncols))
        for line in title.split("\n"):
            # never break inside $…$ (mathtext): protect its spaces while wrapping
            parts = line.split("$")
            line = "$".join(p.replace(" ", "\0") if i % 2 else p for i, p in enumerate(parts))
            lines += [w.replace("\0", " ") for w in textwrap.wrap(line, chars)] or [""]
    fig = Figure(figsize=(width * ncols, height * nrows + 0.2 * len(lines)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey).ravel()
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10)
    return fig, axes


def summary(
    values: Any, percentiles: tuple[float, float] = (10.0, 90.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and the two percentiles along the last axis, ignoring NaN: ``(med, lo, hi)``."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    med, lo, hi = np.full(v.shape[:-1], np.nan), np.full(v.shape[:-1], np.nan), np.full(
        v.shape[:-1], np.nan)
    for idx in np.ndindex(v.shape[:-1]):
        row = v[idx][np.isfinite(v[idx])]
        if row.size:
            med[idx] = np.median(row)
            lo[idx], hi[idx] = np.percentile(row, percentiles)
    return med, lo, hi


def band(
    ax: Any,
    x: Sequence[float] | np.ndarray,
    values: Any,
    *,
    label: str,
    color: str | None = None,
    marker: str = "o",
    percentiles: tuple[float, float] = (10.0, 90.0),
    alpha: float = 0.18,
    linestyle: str = "-",
) -> Any:
    """Draw the median of ``values`` ``(len(x), m)`` over its last axis, with a percentile band.

    ``m`` is the family (random nets, seeds); NaN entries are ignored.  On a log y axis,
    non-positive medians are not drawn (the line breaks there).  Say what line and band are
    once per figure (:func:`band_caption`).  Returns the median's line.
    """
    x = np.asarray(x, dtype=float)
    med, lo, hi = summary(values, percentiles)
    if ax.get_yscale() == "log":
        med, lo, hi = (np.where(a > 0, a, np.nan) for a in (med, lo, hi))
    (line,) = ax.plot(x, med, marker=marker, linestyle=linestyle, color=color, ms=5,
                      label=label)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def band_caption(members: int, what: str = "nets",
                 percentiles: tuple[float, float] = (10.0, 90.0)) -> str:
    """The sentence that explains :func:`band`'s line and band, for a title or caption."""
    return (f"lines: median over {members} {what}; bands: {percentiles[0]:g}th–"
            f"{percentiles[1]:g}th percentile")


def legend_below(fig: Any, ax: Any, ncols: int = 2) -> None:
    """One legend for the figure, below the panels, from the handles of ``ax``."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8.5,
                   frameon=False)


def guide(
    ax: Any,
    x: Sequence[float] | np.ndarray,
    y0: float,
    slope: float,
    *,
    label: str | None = None,
    color: str = "0.45",
) -> Any:
    """A dashed reference line ``y0·(x/x[0])^slope`` (a power law on log-log axes)."""
    x = np.asarray(x, dtype=float)
    (line,) = ax.plot(x, y0 * (x / x[0]) ** slope, linestyle="--", color=color, lw=1,
                      label=label if label is not None else f"slope {slope:g}")
    return line


def style(
    ax: Any,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    legend: bool = True,
    legend_loc: str = "best",
    xticks: Sequence[float] | None = None,
) -> None:
    """Label the axes (put units in the labels), set log scales, grid and legend.

    ``xticks`` puts ticks at the sweep's values (readable on log axes with few points).
    """
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if xticks is not None:
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(list(xticks), [f"{t:g}" for t in xticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc=legend_loc)


def save(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` in the format of its suffix (``.png``, ``.svg`` or ``.pdf``)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(
            f"path must end in one of {', '.join(FORMATS)} (the format is taken from the "
            f"suffix), got {str(path)!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=path.suffix[1:].lower())
    return path


def loglog_slope(x: Any, y: Any) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the finite positive pairs.

    NaN when fewer than two such pairs remain.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])
