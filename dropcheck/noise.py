"""Dropout noise: the paper's η, inverted keep masks, Rademacher noise, and mask enumeration.

Paper noise (Wei, Kakade & Ma 2020, Sec. 2): ``η_k`` iid, ``η_k = −1`` with probability ``q`` and
``q/(1−q)`` with probability ``1−q``; a site's vector becomes ``(1 + η) ⊙ h``.  This is inverted
dropout: ``1 + η = m/(1−q)`` with keep mask ``m ~ Bernoulli(1−q)``.  Moments:
``E[η] = 0``, ``E[η²] = q/(1−q)``, ``E[η³] = q(2q−1)/(1−q)²``.

Footnote 6: Rademacher signs scaled by ``sqrt(q/(1−q))`` have the covariance of η.

:func:`enumerate_masks` walks every mask of one or several sites with its probability, in chunks
of bounded size, so exact expectations over ``2^d`` masks run in fixed memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dropcheck._validate import check_positive_int, check_q
from dropcheck.backend import default_dtype, namespace, uniform

__all__ = [
    "eta_from_mask",
    "mask_from_eta",
    "eta_moments",
    "sample_eta",
    "sample_mask",
    "sample_rademacher",
    "MaskChunk",
    "mask_count",
    "enumerate_masks",
    "mask_chunk",
    "check_mask_count",
    "TooManyMasksError",
]


class TooManyMasksError(ValueError):
    """An exact enumeration would visit more masks than the limit allows."""


def eta_from_mask(m: Any, q: float) -> Any:
    """Paper noise from a keep mask: ``η = m/(1−q) − 1``."""
    q = check_q(q)
    return m / (1.0 - q) - 1.0


def mask_from_eta(eta: Any, q: float) -> Any:
    """Keep mask from paper noise: ``m = (1 + η)(1−q)``."""
    q = check_q(q)
    return (eta + 1.0) * (1.0 - q)


def eta_moments(q: float) -> dict[str, float]:
    """Exact moments of η: mean 0, ``E[η²] = q/(1−q)``, ``E[η³] = q(2q−1)/(1−q)²``."""
    q = check_q(q)
    return {
        "mean": 0.0,
        "second": q / (1.0 - q),
        "third": q * (2.0 * q - 1.0) / (1.0 - q) ** 2,
    }


def sample_mask(
    rng: Any, shape: tuple[int, ...], q: float, *, xp: Any = None, dtype: Any = None
) -> Any:
    """Keep masks ``m ~ Bernoulli(1−q)`` (1 keeps, 0 drops) of ``shape``, as floats."""
    q = check_q(q)
    xp = namespace(xp=xp)
    dtype = default_dtype(xp) if dtype is None else dtype
    u = uniform(rng, tuple(shape), xp, dtype)
    return xp.astype(u >= q, dtype)


def sample_eta(
    rng: Any, shape: tuple[int, ...], q: float, *, xp: Any = None, dtype: Any = None
) -> Any:
    """Paper noise η of ``shape``: ``−1`` w.p. ``q``, ``q/(1−q)`` w.p. ``1−q``."""
    return eta_from_mask(sample_mask(rng, shape, q, xp=xp, dtype=dtype), q)


def sample_rademacher(
    rng: Any, shape: tuple[int, ...], q: float, *, xp: Any = None, dtype: Any = None
) -> Any:
    """Rademacher signs scaled by ``sqrt(q/(1−q))`` (footnote 6): the covariance of η."""
    q = check_q(q)
    xp = namespace(xp=xp)
    dtype = default_dtype(xp) if dtype is None else dtype
    u = uniform(rng, tuple(shape), xp, dtype)
    s = xp.astype(u < 0.5, dtype) * 2.0 - 1.0
    return s * math.sqrt(q / (1.0 - q))


@dataclass(frozen=True)
class MaskChunk:
    """A chunk of enumerated masks.

    ``eta[site]`` has shape ``(B, d_site)``; ``prob`` has shape ``(B,)``; ``start`` is the index
    of the chunk's first mask in the enumeration (masks are numbered by their bits, site order
    and unit order fixed, unit 0 of the first site the lowest bit).
    """

    eta: dict[str, Any]
    prob: Any
    start: int


def _bits(widths: Mapping[str, int], q: Mapping[str, float]) -> dict[str, int]:
    # a site with q = 0 never drops: its only mask has probability 1 and needs no bits
    return {s: (d if q[s] > 0.0 else 0) for s, d in widths.items()}


def mask_count(widths: Mapping[str, int], q: Mapping[str, float]) -> int:
    """Number of masks with nonzero probability over the given sites: ``2^Σ d_i`` (q > 0)."""
    return 2 ** sum(_bits(widths, q).values())


def _monte_carlo_for(what: str) -> str:
    """The sampling function that exists for the exact quantity ``what`` (a refusal names it)."""
    if what in ("expected_loss", "explicit_regularizer", "expected_gradient",
                "gradient_noise_cov"):
        return (f"the Monte-Carlo counterpart dropcheck.montecarlo.{what}(model, x, y, q, "
                f"samples=..., rng=...) (an estimate with its standard error)")
    if what in ("geometric_mean_predict", "predictive_moments"):
        return ("the Monte-Carlo predictor dropcheck.classical.mc_dropout(model, x, q, "
                "samples=..., rng=...)")
    return ("a Monte-Carlo estimate (dropcheck.montecarlo.expected_loss, "
            "explicit_regularizer, expected_gradient or gradient_noise_cov, with samples=... "
            "and rng=...)")


def check_mask_count(
    widths: Mapping[str, int],
    q: Mapping[str, float],
    max_masks: int,
    what: str = "this expectation",
) -> int:
    """The number of masks ``2^Σd_i`` over ``widths`` (sites with ``q > 0``), checked.

    Raises :class:`TooManyMasksError` past ``max_masks``, naming the count, the sites and the
    Monte-Carlo alternative, before any work.
    """
    qs = {s: check_q(q[s], f"q[{s!r}]") for s in widths}
    total_bits = sum(_bits(widths, qs).values())
    count = 2**total_bits
    if count > max_masks:
        desc = ", ".join(f"{s}: {d} units" for s, d in widths.items())
        raise TooManyMasksError(
            f"exact enumeration of {what} needs 2^{total_bits} = {count:.3g} masks ({desc}), "
            f"more than max_masks = {max_masks:.3g}. Use {_monte_carlo_for(what)}, choose "
            f"fewer sites or narrower layers, or pass a larger max_masks if you can wait for "
            f"{count:.3g} masks."
        )
    return count


def mask_chunk(
    widths: Mapping[str, int],
    q: Mapping[str, float],
    start: int,
    stop: int,
    *,
    xp: Any = None,
    dtype: Any = None,
) -> MaskChunk:
    """Masks ``start … stop−1`` of the enumeration of ``widths`` with their probabilities.

    A pure function of the range (the engine's chunk descriptors map to it): mask ``i`` keeps
    unit ``k`` (counted over the sites with ``q > 0`` in order) iff bit ``k`` of ``i`` is set;
    ``eta[site]`` ``(B, d)`` is the paper's η, ``prob`` ``(B,)`` is ``Π (1−q)^kept q^dropped``.
    """
    xp = namespace(xp=xp)
    dtype = default_dtype(xp) if dtype is None else dtype
    qs = {s: check_q(q[s], f"q[{s!r}]") for s in widths}
    bits = _bits(widths, qs)
    total_bits = sum(bits.values())
    shift = xp.arange(total_bits, dtype=xp.int64)
    idx = xp.arange(start, stop, dtype=xp.int64)
    keep = xp.astype((idx[:, None] >> shift[None, :]) & 1, dtype)
    prob = xp.ones((stop - start,), dtype=dtype)
    eta: dict[str, Any] = {}
    col = 0
    for s, d in widths.items():
        qs_ = qs[s]
        if bits[s] == 0:
            eta[s] = xp.zeros((stop - start, d), dtype=dtype)
            continue
        k = keep[:, col : col + d]
        col += d
        eta[s] = k / (1.0 - qs_) - 1.0
        n_keep = xp.sum(k, axis=1)
        prob = prob * (1.0 - qs_) ** n_keep * qs_ ** (d - n_keep)
    return MaskChunk(eta=eta, prob=prob, start=start)


def enumerate_masks(
    widths: Mapping[str, int],
    q: Mapping[str, float],
    *,
    chunk_size: int = 4096,
    max_masks: int = 2**26,
    xp: Any = None,
    dtype: Any = None,
    what: str = "this expectation",
) -> Iterator[MaskChunk]:
    """Yield every dropout mask of the sites ``widths`` with its probability, in chunks.

    Parameters
    ----------
    widths
        Site name -> number of units ``d_i``.
    q
        Site name -> drop probability.
    chunk_size
        Masks per chunk (memory is bounded by it, whatever ``2^d`` is).
    max_masks
        Refuse (``TooManyMasksError``) past this many masks, before any work.
    xp
        Namespace of the chunks (numpy by default).
    dtype
        Floating dtype of the chunks (float64 by default).
    what
        Named in the error, with the Monte-Carlo alternative.

    The probabilities of all masks sum to one; a chunk's ``eta`` is the paper's η.  Each chunk
    is :func:`mask_chunk` of its range (the engine, :mod:`dropcheck._engine`, calls that).
    """
    xp = namespace(xp=xp)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    count = check_mask_count(widths, q, max_masks, what)
    for start in range(0, count, chunk_size):
        yield mask_chunk(widths, q, start, min(start + chunk_size, count), xp=xp, dtype=dtype)
