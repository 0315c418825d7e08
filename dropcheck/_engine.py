r"""The one engine behind every expectation: chunks, a budget, an executor, a fixed reduction.

Every expectation in dropcheck — an exact sum over ``2^Σd`` masks or a Monte-Carlo mean over
draws — is a sum over *items* (masks or draws) cut into *chunks*:

.. math::  S = \sum_{c=0}^{K-1} f(c),   \qquad  f(c) = \sum_{i \in chunk\ c} p_i\, v_i ,

with ``f`` a pure function of the chunk descriptor (a :class:`Chunk`: its index and its item
range).  This module fixes the three things every such loop shares, so that they are written
once:

1. **One chunk-budget policy.**  :data:`CHUNK_BYTES` bounds the per-item arrays of one chunk
   (whatever ``2^d`` or the number of draws is); :func:`chunk_items` turns a count of floats per
   item into items per chunk.  Kernels that block for the cache (the fast enumerations) use the
   same function with :data:`CACHE_BYTES`.
2. **One deterministic reduction.**  :class:`PairwiseSum` adds the chunk results in a binary
   tree keyed by chunk index (chunk ``2j`` with ``2j+1``, then pairs of pairs, …).  The tree
   depends only on the number of chunks, so a result depends on the chunking only by rounding
   (``O(eps·log K)``), never on which worker computed what: a worker that reduces an *aligned*
   block of ``2^k`` chunks (indices ``[j·2^k, (j+1)·2^k)``) hands back exactly the tree's node,
   and :meth:`PairwiseSum.add` with ``level=k`` puts it in place — bit-identical to the serial
   sum.
3. **A pluggable executor.**  An :class:`Executor` maps a pure function over chunk descriptors
   and returns the results *in chunk order*; the engine reduces them.  :class:`SerialExecutor`
   (the default) is a lazy in-order loop, so memory stays one chunk; local-process and Dask
   executors (scale-out) only have to implement :meth:`Executor.map`.

Monte-Carlo draws come in two stream modes.  *Sequential* (the default, when no executor is
given): *one* generator consumed in chunk order (the streams every figure of ``dropcheck
verify`` was produced with), so it needs an executor that runs chunks in order
(``executor.in_order``).  *Keyed* (``streams=`` a ``numpy.random.SeedSequence``, which
:func:`sample_sums` and :func:`map_draws` take whenever an executor is in effect): each block
of :data:`DRAW_BLOCK` draws comes from its own generator, child ``j`` of the root
(``root.spawn(K)[j]``, built directly by :func:`chunk_generator`; :func:`keyed_draws`), so an
estimate depends on the seed only — not on the executor, the number of workers, the
completion order, nor (but for rounding) the chunk size.

Parallel executors (:mod:`dropcheck.parallel`: local processes, a Dask cluster) cut the chunks
into *shards* of consecutive chunks; a worker reduces each aligned block of ``2^k`` chunks
of its shard (:func:`block_nodes`, the dyadic decomposition of its index range) and hands
the nodes back through :meth:`Executor.nodes`, which :func:`reduce_chunks` places with
``PairwiseSum.add(node, level=k)``: the same tree, the same bits.  :func:`get_executor` with
None returns the executor of an enclosing ``dropcheck.parallel.using(…)`` block, else the
serial one.

Public to the package (the API other modules call):

- ``CHUNK_BYTES``, ``CACHE_BYTES``, :func:`chunk_items` — the budget policy;
- :class:`Chunk`, :func:`chunks` — chunk descriptors;
- :class:`Executor`, :class:`SerialExecutor`, :func:`get_executor` — execution;
- :class:`PairwiseSum`, :func:`pairwise_sum` — the reduction;
- :func:`reduce_chunks` — ``Σ_c fn(chunk_c)`` (tuples summed elementwise);
- :func:`gather_chunks` — ``concat_c fn(chunk_c)`` along axis 0;
- :func:`check_mask_count`, :func:`enumerate_sum` — exact enumeration over masks;
- :func:`sample_sums`, :func:`map_draws` — Monte-Carlo draws in chunks.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dropcheck._validate import check_positive_int, one_check_per_loop
from dropcheck.backend import namespace
from dropcheck.noise import check_mask_count as _noise_check_mask_count
from dropcheck.noise import mask_chunk

__all__ = [
    "CHUNK_BYTES",
    "CACHE_BYTES",
    "chunk_items",
    "Chunk",
    "chunks",
    "Executor",
    "SerialExecutor",
    "get_executor",
    "active_executor",
    "block_nodes",
    "chunk_generator",
    "keyed_root",
    "keyed_draws",
    "DRAW_BLOCK",
    "PairwiseSum",
    "pairwise_sum",
    "reduce_chunks",
    "gather_chunks",
    "check_mask_count",
    "enumerate_sum",
    "sample_sums",
    "map_draws",
]

#: Bytes the per-item arrays of one chunk may take (masks of an enumeration, draws of a
#: sampler).  Every chunk size in dropcheck is derived from it by :func:`chunk_items`.
CHUNK_BYTES = 64 * 2**20

#: Bytes of a kernel's inner block (the fast enumerations' products and logs): 2 MiB keeps a
#: block in cache and below OpenBLAS's threshold for threading a product — on a shared 2-core
#: machine a second BLAS thread made blocks 16× larger 30× slower.
CACHE_BYTES = 2 * 2**20

#: Bytes per float assumed by the budget (float64: the default and the worst case).
ITEMSIZE = 8


def chunk_items(
    floats_per_item: int | float,
    *,
    budget: int = CHUNK_BYTES,
    cap: int | None = None,
) -> int:
    """Items per chunk: ``max(1, min(cap, budget // (8 · floats_per_item)))``.

    ``floats_per_item`` counts every float one item (a mask or a draw, for all examples of the
    call) keeps alive in a chunk, copies included.  ``cap`` bounds the count from above (e.g.
    the number of draws requested).  Integer arithmetic throughout: the chunk size is a pure
    function of its arguments.
    """
    per = max(1, int(floats_per_item))
    out = max(1, budget // (ITEMSIZE * per))
    return out if cap is None else max(1, min(int(cap), out))


@dataclass(frozen=True)
class Chunk:
    """A chunk of items: ``index`` in the reduction order, items ``start … stop−1``."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Number of items, ``stop − start``."""
        return self.stop - self.start


def chunks(total: int, size: int) -> list[Chunk]:
    """Items ``0 … total−1`` cut into chunks of ``size`` (the last may be shorter)."""
    size = check_positive_int(size, "chunk_size")
    return [Chunk(i, s, min(total, s + size)) for i, s in enumerate(range(0, total, size))]


# ----- executors -----


class Executor:
    """Maps a pure function over chunk descriptors; results come back in chunk order.

    Subclasses implement :meth:`map`.  ``in_order`` says whether ``fn`` is called on the chunks
    one after the other in index order in this process (needed while Monte-Carlo draws come
    from one shared generator).
    """

    in_order: bool = False

    def map(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> Iterator[Any]:
        """``fn(c)`` for every chunk ``c`` of ``items``, yielded in the order of ``items``."""
        raise NotImplementedError

    def nodes(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> Iterator[Any]:
        """``(level, node)`` pairs in chunk order whose tree sum is ``Σ_c fn(c)``.

        ``items`` are consecutive chunks.  A node of level ``k`` is the :class:`PairwiseSum` of
        an aligned block of ``2^k`` chunks (:func:`block_nodes`); this default yields every
        chunk as a level-0 node, through :meth:`map`.  Parallel executors reduce whole blocks
        in their workers.
        """
        for v in self.map(fn, items):
            yield 0, v

    def close(self) -> None:
        """Release workers or connections (none here: the serial executor holds nothing)."""


class SerialExecutor(Executor):
    """The default: a lazy loop in this process, one chunk alive at a time."""

    in_order = True

    def map(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> Iterator[Any]:
        """Yield ``fn(c)`` chunk by chunk (lazily: the caller reduces as results arrive)."""
        for c in items:
            yield fn(c)


_SERIAL = SerialExecutor()

#: The executor of the innermost ``dropcheck.parallel.using(…)`` block (None outside one).
_CURRENT: contextvars.ContextVar[Executor | None] = contextvars.ContextVar(
    "dropcheck_executor", default=None
)


def active_executor(executor: Executor | None) -> Executor | None:
    """``executor``, else the one of an enclosing ``using(…)`` block, else None (checked)."""
    if executor is None:
        executor = _CURRENT.get()
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a dropcheck Executor or None, got {executor!r}")
    return executor


def get_executor(executor: Executor | None) -> Executor:
    """:func:`active_executor`, or the serial one when there is none."""
    ex = active_executor(executor)
    return _SERIAL if ex is None else ex


def block_nodes(fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> list[tuple[int, Any]]:
    """The tree nodes ``(k, Σ)`` of consecutive chunks: each aligned block of ``2^k`` reduced.

    The index range ``[s, e)`` of ``items`` is cut into its dyadic decomposition (from ``s``,
    the largest ``2^k`` with ``s`` a multiple of ``2^k`` that fits), and each block is summed
    by its own :class:`PairwiseSum` — exactly the node the serial tree builds for it, so
    adding the nodes in order with ``PairwiseSum.add(node, level=k)`` gives the serial bits.
    What a shard's worker runs.
    """
    items = list(items)
    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(items):
        s = items[i].index
        k = 0
        while s % (2 ** (k + 1)) == 0 and i + 2 ** (k + 1) <= len(items):
            k += 1
        block = items[i : i + 2**k]
        if any(c.index != s + j for j, c in enumerate(block)):
            raise ValueError("block_nodes needs consecutive chunk indices")
        out.append((k, pairwise_sum(fn(c) for c in block)))
        i += 2**k
    return out


# ----- the reduction -----


class PairwiseSum:
    """The sum of parts ``0, 1, 2, …`` by a binary tree keyed by their index.

    Level ``i`` holds the sum of an aligned block of ``2^i`` consecutive parts (a binary
    counter): adding part ``2j+1`` merges it with part ``2j``, then the pair with the pair
    before, and so on.  :meth:`total` adds the remaining blocks from the smallest (latest) up.
    Memory is ``O(log K)`` parts and the rounding error ``O(eps · log K)``; the grouping depends
    only on the number of parts, so the result is deterministic.  Parts are arrays (or numbers)
    of one shape, or tuples of them (summed elementwise).
    """

    def __init__(self) -> None:
        self._levels: list[Any] = []
        self.count = 0

    def add(self, x: Any, level: int = 0) -> None:
        """Add the next part, or with ``level=k`` a precomputed node: the sum of ``2^k`` parts.

        A node may only be added where the tree has one: after a multiple of ``2^k`` parts.
        """
        if level and self.count % (2**level):
            raise ValueError(
                f"a node of 2^{level} parts must start at a multiple of {2**level}; "
                f"{self.count} parts were added before it"
            )
        i = level
        while len(self._levels) < i:
            self._levels.append(None)
        while i < len(self._levels) and self._levels[i] is not None:
            x = _add(self._levels[i], x)
            self._levels[i] = None
            i += 1
        if i == len(self._levels):
            self._levels.append(x)
        else:
            self._levels[i] = x
        self.count += 2**level

    def total(self) -> Any:
        """The sum of all parts (None if there were none)."""
        out = None
        for v in self._levels:
            if v is not None:
                out = v if out is None else _add(v, out)
        return out


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(u + v for u, v in zip(a, b, strict=True))
    return a + b


def pairwise_sum(parts: Iterable[Any]) -> Any:
    """:class:`PairwiseSum` of ``parts`` in order (None when empty)."""
    acc = PairwiseSum()
    for p in parts:
        acc.add(p)
    return acc.total()


@one_check_per_loop  # the inputs every chunk uses are checked once, not per chunk
def reduce_chunks(
    fn: Callable[[Chunk], Any],
    total: int,
    size: int,
    *,
    executor: Executor | None = None,
) -> Any:
    """``Σ_c fn(c)`` over the chunks of ``total`` items, ``size`` per chunk, pairwise by index."""
    ex = get_executor(executor)
    acc = PairwiseSum()
    for level, node in ex.nodes(fn, chunks(total, size)):
        acc.add(node, level=level)
    return acc.total()


@one_check_per_loop  # the inputs every chunk uses are checked once, not per chunk
def gather_chunks(
    fn: Callable[[Chunk], Any],
    total: int,
    size: int,
    xp: Any,
    *,
    executor: Executor | None = None,
) -> Any:
    """``fn(c)`` for the chunks of ``total`` items, concatenated along axis 0 in chunk order."""
    ex = get_executor(executor)
    parts = list(ex.map(fn, chunks(total, size)))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


# ----- exact enumeration -----


def check_mask_count(
    widths: Mapping[str, int], q: Mapping[str, float], max_masks: int, what: str
) -> int:
    """The number of masks ``2^Σd_i`` (sites with ``q > 0``), or ``TooManyMasksError``.

    The error names the count, the sites and the Monte-Carlo alternative, before any work.
    """
    return _noise_check_mask_count(widths, q, max_masks, what)


def enumerate_sum(
    widths: Mapping[str, int],
    q: Mapping[str, float],
    fn: Callable[[Any, Any], Any],
    *,
    chunk_size: int,
    max_masks: int,
    xp: Any,
    dtype: Any,
    what: str = "this expectation",
    executor: Executor | None = None,
) -> Any:
    r"""``Σ_chunks fn(eta, prob)`` over every mask of the sites ``widths``, exactly.

    Masks are numbered by their keep bits (site order and unit order fixed, unit 0 of the first
    site the lowest bit); chunk ``c`` holds masks ``c·chunk_size …``, given to ``fn`` as the
    paper's noise ``eta[site]`` ``(B, d)`` and the probabilities ``prob`` ``(B,)``
    (:func:`dropcheck.noise.mask_chunk`, a pure function of the range).  ``fn`` returns a
    probability-weighted partial sum (an array or a tuple of arrays); the partial sums are
    reduced by :class:`PairwiseSum`.  Refuses past ``max_masks`` before any work.
    """
    count = check_mask_count(widths, q, max_masks, what)

    def one(c: Chunk) -> Any:
        ch = mask_chunk(widths, q, c.start, c.stop, xp=xp, dtype=dtype)
        return fn(ch.eta, ch.prob)

    return reduce_chunks(one, count, chunk_size, executor=executor)


# ----- Monte-Carlo draws -----


def keyed_root(seed: Any = None, rng: Any = None) -> Any:
    """The root ``SeedSequence`` of keyed streams: from ``seed``, else entropy drawn from ``rng``.

    Drawing the entropy from the caller's generator (four 63-bit integers) advances it, so two
    calls with one generator get different streams, as in sequential mode.
    """
    import numpy as np

    if rng is None and isinstance(seed, np.random.SeedSequence):
        return seed
    if rng is None and not isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(seed)
    gen = seed if rng is None else rng
    return np.random.SeedSequence([int(v) for v in gen.integers(0, 2**63 - 1, size=4)])


def chunk_generator(root: Any, index: int) -> Any:
    """Chunk ``index``'s generator: ``default_rng(root.spawn(K)[index])`` for a fresh ``root``.

    Built directly from the spawn key (``root.spawn_key + (index,)``), so no process needs the
    other children and the stream of a chunk depends on nothing but the root and its index.
    """
    import numpy as np

    child = np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, int(index)), pool_size=root.pool_size
    )
    return np.random.default_rng(child)


#: Draws per keyed stream: draw ``t`` comes from stream ``t // DRAW_BLOCK``
#: (:func:`keyed_draws`), so the draws do not depend on the chunk size.
DRAW_BLOCK = 64


def keyed_draws(draw: Callable[[int, Any], Any], root: Any, start: int, stop: int) -> Any:
    """Draws ``start … stop−1`` of the keyed streams of ``root``, stacked on axis 0.

    Draw ``t`` is row ``t mod B`` of ``draw(B, chunk_generator(root, t // B))`` with
    ``B =`` :data:`DRAW_BLOCK`: every block of ``B`` draws comes from its own stream, generated
    whole (a chunk that starts or ends inside a block computes that block and keeps its rows),
    so a draw depends on the root and its index only — not on the chunk size, the executor or
    the number of workers.
    """
    B = DRAW_BLOCK
    parts = []
    for blk in range(start // B, (stop - 1) // B + 1):
        v = draw(B, chunk_generator(root, blk))
        lo, hi = max(start, blk * B) - blk * B, min(stop, (blk + 1) * B) - blk * B
        parts.append(v if (lo, hi) == (0, B) else v[lo:hi, ...])
    return parts[0] if len(parts) == 1 else namespace(parts[0]).concat(parts, axis=0)


def _ordered(executor: Executor | None) -> Executor:
    # sequential streams ignore a ``using(…)`` block: only an explicit executor is checked
    ex = _SERIAL if executor is None else get_executor(executor)
    if not ex.in_order:
        raise ValueError(
            "Monte-Carlo draws come from one generator consumed in chunk order; this executor "
            f"({type(ex).__name__}) does not run chunks in order in this process: use the "
            "serial executor (executor=None)"
        )
    return ex


@one_check_per_loop  # the inputs every chunk uses are checked once, not per chunk
def sample_sums(
    draw: Callable[..., Any],
    samples: int,
    chunk_size: int,
    *,
    powers: tuple[int, ...] = (1, 2),
    center: Callable[[Any], Any] | None = None,
    executor: Executor | None = None,
    streams: Any = None,
) -> tuple[Any, ...]:
    r"""Power sums ``Σ_t v_t^k`` (``k`` in ``powers``) of ``samples`` draws, in chunks.

    ``draw(b)`` returns ``b`` draws stacked on axis 0 (it consumes the caller's generator: the
    chunks run in order, ``b = chunk_size`` except the last).  ``center(v)``, if given, is
    called on the first chunk's draws and returns a shift ``s`` subtracted from every draw,
    ``v_t − s`` (e.g. the first chunk's mean), so central moments computed from the sums do not
    cancel; the sums are then of the shifted draws, and the shift is returned last.  Chunk sums
    are reduced by :class:`PairwiseSum`.  Returns ``(S_k for k in powers) [+ (shift,)]``.

    Keyed mode (``streams`` a root ``SeedSequence``, :func:`keyed_root`): ``draw(b, gen)``
    is called per block of :data:`DRAW_BLOCK` draws with that block's generator
    (:func:`keyed_draws`), chunks run on any executor (the first one here, for the shift), and
    the sums depend on no worker count and, but for rounding, on no chunk size.
    """
    if streams is None:
        ex = _ordered(executor)
        state: dict[str, Any] = {}

        def one(c: Chunk) -> tuple[Any, ...]:
            v = draw(c.size)
            if center is not None:
                if "shift" not in state:
                    state["shift"] = center(v)
                v = v - state["shift"]
            return _power_sums(v, powers, None)

        total = pairwise_sum(ex.map(one, chunks(samples, chunk_size)))
        return (*total, state["shift"]) if center is not None else total
    parts = chunks(samples, chunk_size)
    v0 = keyed_draws(draw, streams, parts[0].start, parts[0].stop)
    shift = None if center is None else center(v0)
    acc = PairwiseSum()
    acc.add(_power_sums(v0, powers, shift))
    if len(parts) > 1:
        one_keyed = _KeyedPowerSums(draw, streams, powers, shift)
        for level, node in get_executor(executor).nodes(one_keyed, parts[1:]):
            acc.add(node, level=level)
    total = acc.total()
    return (*total, shift) if center is not None else total


def _power_sums(v: Any, powers: tuple[int, ...], shift: Any) -> tuple[Any, ...]:
    if shift is not None:
        v = v - shift
    parts = []
    p = None
    for k in range(1, max(powers) + 1):
        p = v if p is None else p * v
        if k in powers:
            parts.append(_sum0(p))
    return tuple(parts)


@dataclass(frozen=True)
class _KeyedPowerSums:
    """One chunk's power sums from its keyed stream (a picklable object for the workers)."""

    draw: Callable[[int, Any], Any]
    root: Any
    powers: tuple[int, ...]
    shift: Any

    def __call__(self, c: Chunk) -> tuple[Any, ...]:
        v = keyed_draws(self.draw, self.root, c.start, c.stop)
        return _power_sums(v, self.powers, self.shift)


def _sum0(a: Any) -> Any:
    """``Σ`` over the leading (draw) axis, in the draws' own namespace."""
    return namespace(a).sum(a, axis=0)


@one_check_per_loop  # the inputs every chunk uses are checked once, not per chunk
def map_draws(
    fn: Callable[..., Any],
    draws: int,
    chunk_size: int,
    xp: Any,
    *,
    executor: Executor | None = None,
    streams: Any = None,
) -> Any:
    """``fn(b)`` for chunks of ``b`` draws (in order), concatenated along axis 0.

    ``fn`` consumes the caller's generator, so the chunks run in order; the result holds the
    ``draws`` samples in the order drawn.  Keyed mode (``streams`` a root ``SeedSequence``):
    ``fn(b, gen)`` per block of draws (:func:`keyed_draws`), on any executor.
    """
    if streams is None:
        ex = _ordered(executor)
        parts = list(ex.map(lambda c: fn(c.size), chunks(draws, chunk_size)))
    else:
        parts = list(get_executor(executor).map(
            lambda c: keyed_draws(fn, streams, c.start, c.stop), chunks(draws, chunk_size)))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
