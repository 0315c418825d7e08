r"""Past one core: local-process and Dask executors for the engine, and how to select one.

Every expectation of :mod:`dropcheck.exact` (and the Monte-Carlo means of
:mod:`dropcheck.montecarlo`) is a sum over chunks, ``S = Σ_c f(c)``, reduced by the engine's
binary tree keyed by chunk index (:class:`dropcheck._engine.PairwiseSum`).  The executors here
cut the chunks into *shards* of consecutive chunks, one task each; a worker reduces every
aligned block of ``2^k`` chunks of its shard (:func:`dropcheck._engine.block_nodes`) and returns
the tree's nodes, which the caller places with ``PairwiseSum.add(node, level=k)`` in chunk
order.  The tree therefore depends only on the number of chunks, so a result is
**bit-identical** to the serial one for any number of workers, any shard size (in chunks: a
multiple of the chunk in items) and any completion order.  Monte-Carlo draws under an executor
use keyed streams (chunk ``c`` draws from child ``c`` of one ``SeedSequence``), so estimates do
not depend on the worker count either.

Selecting an executor — by argument or for a block of code::

    import dropcheck as dc
    from dropcheck.parallel import ProcessExecutor, DaskExecutor, using

    with ProcessExecutor(2) as ex:                 # this machine's cores (spawned processes)
        v = dc.exact.expected_loss(net, x, y, 0.3, executor=ex)
        with using(ex):                            # every call inside, without executor=
            g = dc.exact.expected_gradient(net, x, y, 0.3)

    from dask.distributed import Client            # any Dask cluster (pip install dropcheck[dask])
    with DaskExecutor(Client("tcp://scheduler:8786")) as ex, using(ex):
        v = dc.exact.expected_loss(net, x, y, 0.3)

``DaskExecutor.local(n)`` starts a ``LocalCluster`` of ``n`` worker processes with the
allocator settings of :data:`WORKER_ENVIRON` (Dask's default worker environment made the
numpy kernels about 3× slower; :class:`WorkerEnvironmentWarning` says so on other clusters
whose workers run with it).  ``DaskExecutor.connect(address, timeout=…)`` raises
:class:`SchedulerUnreachableError` naming the address and the time-out instead of waiting
forever.  On Dask a task whose worker dies is
recomputed elsewhere (its result is a pure function of the shard), so the result is unchanged.

The function mapped over the chunks is sent to the workers with cloudpickle (closures over a
model and its inputs included); it comes with the ``[dask]`` extra.  Neither this module nor
``import dropcheck`` imports Dask: :class:`DaskExecutor` imports it when built.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from dropcheck._engine import _CURRENT, Chunk, Executor, SerialExecutor, block_nodes

__all__ = [
    "ProcessExecutor",
    "DaskExecutor",
    "SchedulerUnreachableError",
    "SerialExecutor",
    "WORKER_ENVIRON",
    "WorkerEnvironmentWarning",
    "using",
    "current",
    "from_options",
]


class SchedulerUnreachableError(ConnectionError):
    """No Dask scheduler answered at the address within the time-out."""


class WorkerEnvironmentWarning(RuntimeWarning):
    """Dask workers run with allocator settings that slow dropcheck's kernels.

    Results are unaffected; :data:`WORKER_ENVIRON` gives the cause, the figures and the fix.
    """


#: glibc ``malloc`` settings for Dask worker processes (set before they start: glibc reads them
#: once, at the process's first allocation).  Dask's nanny starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536`` (config ``distributed.nanny.pre-spawn-environ``, to give
#: memory back to the OS sooner).  Setting any glibc malloc tunable switches off glibc's
#: *dynamic* mmap threshold, so every temporary of 128 KiB or more of the numpy kernels is
#: ``mmap``-ed and page-faulted afresh, and the heap is trimmed after every ``free``.  Measured
#: on 2026-11-30 on a 2-core machine (``dc.exact.expected_loss`` of MLP [16, 28, 10], decoder
#: site h1, 2 examples, q = ½; 0.93 s serially in the client process): the whole job as one
#: task took 3.17 s in a default Dask worker against 0.95 s in a plain process, and
#: ``MALLOC_TRIM_THRESHOLD_=65536 python …`` reproduced it (2.98 s); on ``LocalCluster(2)``
#: (single-threaded worker processes) the parallel efficiency was 0.29 with Dask's default
#: environment and ≈ 0.86 with these two settings (wall 0.53 s; CPU efficiency ≈ 0.93).  Both
#: are needed: the mmap threshold alone gave 0.79 s, the trim threshold alone (with
#: ``MALLOC_ARENA_MAX=1``) 0.80 s.  ``MALLOC_MMAP_THRESHOLD_`` = 32 MiB is glibc's own ceiling
#: for the dynamic threshold; ``MALLOC_TRIM_THRESHOLD_`` = 128 MiB keeps a worker's freed
#: memory for reuse up to that much (what a worker gives back to the OS later is the price).
WORKER_ENVIRON: dict[str, str] = {
    "MALLOC_TRIM_THRESHOLD_": str(2**27),
    "MALLOC_MMAP_THRESHOLD_": str(2**25),
}

#: A trim threshold below this, without an mmap threshold, is what :class:`DaskExecutor` warns of.
_SMALL_TRIM = 2**20


@contextlib.contextmanager
def using(executor: Executor | None) -> Iterator[Executor | None]:
    """Run every dropcheck call inside the block on ``executor`` (None: the serial default).

    An explicit ``executor=`` argument still wins.  Blocks nest; the previous executor is
    restored on exit (a ``contextvars`` variable, so threads and tasks each see their own).
    """
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a dropcheck Executor or None, got {executor!r}")
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def current() -> Executor | None:
    """The executor of the innermost :func:`using` block, or None."""
    return _CURRENT.get()


# ----- what the workers run -----

#: Functions already unpickled in this worker, by the hash of their bytes (the last few).
_LOADED: dict[str, Callable[[Chunk], Any]] = {}


def _dumps(fn: Callable[[Chunk], Any]) -> tuple[str, bytes]:
    try:
        import cloudpickle
    except ImportError as err:  # pragma: no cover - the [dask] extra brings it
        raise ImportError(
            "parallel executors send the mapped function with cloudpickle: "
            "pip install 'dropcheck[dask]' (or cloudpickle)"
        ) from err
    payload = cloudpickle.dumps(fn)
    return hashlib.sha256(payload).hexdigest(), payload


def _load(token: str, payload: bytes) -> Callable[[Chunk], Any]:
    fn = _LOADED.get(token)
    if fn is None:
        import pickle

        fn = pickle.loads(payload)
        if len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[token] = fn
    return fn


def _run_shard(token: str, payload: bytes, shard: list[Chunk], nodes: bool) -> list[Any]:
    """A worker's task: the shard's tree nodes (``nodes``), else its chunks' results in order."""
    fn = _load(token, payload)
    if nodes:
        return block_nodes(fn, shard)
    return [fn(c) for c in shard]


def _pid(_: Any) -> int:
    return os.getpid()


def _allocator_environ() -> dict[str, str | None]:
    """A worker's C library (``"glibc 2.36"``; None where not glibc) and its malloc settings."""
    try:
        libc: str | None = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not glibc, or no confstr here
        libc = None
    return {"libc": libc, **{k: os.environ.get(k) for k in WORKER_ENVIRON}}


def _as_int(text: str) -> int | None:
    for base in (10, 0):  # "65536", then "0x10000"
        try:
            return int(text.strip(), base)
        except ValueError:
            pass
    return None


def _slow_allocator(answers: dict[Any, Any]) -> dict[Any, str]:
    """Workers on glibc with a trim threshold below 1 MiB and no mmap threshold.

    ``answers``: worker → :func:`_allocator_environ`'s dict (anything else, e.g. a worker's
    error, is skipped).  Returns worker → its ``MALLOC_TRIM_THRESHOLD_``.
    """
    slow = {}
    for worker, env in answers.items():
        if not isinstance(env, dict) or not str(env.get("libc") or "").startswith("glibc"):
            continue
        trim = env.get("MALLOC_TRIM_THRESHOLD_")
        if trim is None or env.get("MALLOC_MMAP_THRESHOLD_") is not None:
            continue
        value = _as_int(str(trim))
        if value is not None and value < _SMALL_TRIM:
            slow[worker] = str(trim)
    return slow


#: Environment variables that bound a worker's BLAS / OpenMP threads (read at library load).
_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def _environ(names: tuple[str, ...], value: int | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (nothing when ``value`` is None)."""
    if value is None:
        yield
        return
    old = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(value) for k in names})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shards(items: Iterable[Chunk], per: int | None, workers: int) -> list[list[Chunk]]:
    """Consecutive chunks cut into shards of ``per`` (default: about 4 shards per worker)."""
    items = list(items)
    if per is None:
        per = max(1, math.ceil(len(items) / (4 * max(1, workers))))
    return [items[i : i + per] for i in range(0, len(items), per)]


def _check_shard(shard_chunks: int | None) -> int | None:
    if shard_chunks is not None and (
        isinstance(shard_chunks, bool) or not isinstance(shard_chunks, int) or shard_chunks < 1
    ):
        raise ValueError(f"shard_chunks must be a positive int or None, got {shard_chunks!r}")
    return shard_chunks


_S = TypeVar("_S", bound="_Sharded")


class _Sharded(Executor):
    """Shared logic: shards submitted as tasks, results consumed in shard order."""

    shard_chunks: int | None
    workers: int

    def _submit(self, token: str, payload: bytes, shards: list[list[Chunk]],
                nodes: bool) -> list[Any]:
        raise NotImplementedError

    def _result(self, handle: Any) -> list[Any]:
        raise NotImplementedError

    def _run(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk], nodes: bool) -> Iterator:
        shards = _shards(items, self.shard_chunks, self.workers)
        if not shards:
            return
        token, payload = _dumps(fn)
        handles = self._submit(token, payload, shards, nodes)
        for part in self._collect(handles):  # in shard order, whatever order they complete in
            yield from part

    def _collect(self, handles: list[Any]) -> Iterator[list[Any]]:
        for h in handles:
            yield self._result(h)

    def map(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> Iterator[Any]:
        """``fn(c)`` per chunk, computed in shards on the workers, yielded in chunk order."""
        return self._run(fn, items, nodes=False)

    def nodes(self, fn: Callable[[Chunk], Any], items: Iterable[Chunk]) -> Iterator[Any]:
        """Each shard's tree nodes (:func:`dropcheck._engine.block_nodes`), in chunk order."""
        return self._run(fn, items, nodes=True)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on a worker (``fn`` importable there); a future with ``result()``.

        For coarse tasks that are not chunks (e.g. ``dropcheck verify -j``: one claim each).
        """
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the workers (a no-op where the caller owns them)."""


class ProcessExecutor(_Sharded):
    """``workers`` local processes (default: every core), started with ``context``.

    ``context`` is a :mod:`multiprocessing` start method: ``"spawn"`` (default) or
    ``"forkserver"`` (``"fork"`` is refused: forking a process with threads can deadlock).
    The pool starts on first use and lives until :meth:`close` (or the ``with`` block's end),
    so later calls do not pay the start-up again.  ``shard_chunks``: chunks per task (default
    about four tasks per worker).  ``blas_threads``: the BLAS/OpenMP threads of each worker
    (``OPENBLAS_NUM_THREADS`` and its kin, set for the workers' start; default 1, so that
    ``workers`` processes use ``workers`` cores — a second BLAS thread per worker on busy cores
    made the same job 3× slower here; None leaves the environment alone).  A worker that dies
    breaks the pool (``BrokenProcessPool``); use a Dask cluster for recomputation on failure.
    """

    def __init__(self, workers: int | None = None, *, context: str = "spawn",
                 shard_chunks: int | None = None, blas_threads: int | None = 1) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if context not in ("spawn", "forkserver"):
            raise ValueError(f"context must be 'spawn' or 'forkserver', got {context!r}")
        self.workers = workers
        self.context = context
        self.shard_chunks = _check_shard(shard_chunks)
        if blas_threads is not None and (isinstance(blas_threads, bool)
                                         or not isinstance(blas_threads, int) or blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive int or None, got {blas_threads!r}")
        self.blas_threads = blas_threads
        self._pool: Any = None

    def _ensure(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, wait

            with _environ(_BLAS_VARS, self.blas_threads):
                pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context(self.context)
                )
                # the workers start on these submits (none is idle yet), in this environment
                wait([pool.submit(_pid, i) for i in range(self.workers)])
            self._pool = pool
        return self._pool

    def warm(self) -> ProcessExecutor:
        """Start every worker now (each imports dropcheck once), e.g. before timing."""
        self._ensure()
        return self

    def _submit(self, token: str, payload: bytes, shards: list[list[Chunk]],
                nodes: bool) -> list[Any]:
        pool = self._ensure()
        return [pool.submit(_run_shard, token, payload, s, nodes) for s in shards]

    def _result(self, handle: Any) -> list[Any]:
        return handle.result()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker process: a ``concurrent.futures.Future``."""
        return self._ensure().submit(fn, *args)

    def close(self) -> None:
        """Shut the worker processes down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __repr__(self) -> str:
        return f"ProcessExecutor({self.workers}, context={self.context!r})"


class DaskExecutor(_Sharded):
    """Shards as tasks of a ``dask.distributed.Client`` (any cluster; ``LocalCluster`` in tests).

    ``shard_chunks`` as for :class:`ProcessExecutor` (the default counts the cluster's workers
    when a call starts).  Tasks are impure-keyed (``pure=False``) and their results are pure
    functions of the shard, so a task lost with a worker is recomputed and the sum is
    unchanged.  ``close_client``: close the client on :meth:`close` (what :meth:`connect` and
    :meth:`local` set).  :meth:`local` starts a ``LocalCluster`` with :data:`WORKER_ENVIRON`.

    On its first sharded run the executor asks the workers once (``client.run``) for their
    malloc settings and, where a worker runs glibc with ``MALLOC_TRIM_THRESHOLD_`` below 1 MiB
    and no ``MALLOC_MMAP_THRESHOLD_`` (Dask's default), warns once
    (:class:`WorkerEnvironmentWarning`) how to start the workers instead.  The question never
    changes a result; if it fails the run goes on without it.
    """

    def __init__(self, client: Any, *, shard_chunks: int | None = None,
                 close_client: bool = False) -> None:
        if not (hasattr(client, "submit") and hasattr(client, "scheduler_info")):
            raise TypeError(f"client must be a dask.distributed.Client, got {client!r}")
        self.client = client
        self.shard_chunks = _check_shard(shard_chunks)
        self._close_client = close_client
        #: the ``LocalCluster`` :meth:`local` started (closed with the executor), else None
        self.cluster: Any = None
        self._environ_checked = False

    @classmethod
    def connect(cls, address: str, *, timeout: float = 10.0,
                shard_chunks: int | None = None) -> DaskExecutor:
        """A client of the scheduler at ``address``, within ``timeout`` seconds.

        :class:`SchedulerUnreachableError` (naming the address and the time-out) if no
        scheduler answers in time.
        """
        Client = _distributed().Client
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise SchedulerUnreachableError(
                f"no Dask scheduler answered at {address!r} within the {timeout:g} s time-out "
                f"({type(err).__name__}: {err})"
            ) from err
        return cls(client, shard_chunks=shard_chunks, close_client=True)

    @classmethod
    def local(cls, n_workers: int | None = None, *, threads_per_worker: int = 1,
              shard_chunks: int | None = None, **cluster_kwargs: Any) -> DaskExecutor:
        """A client of a new ``LocalCluster`` whose workers start with :data:`WORKER_ENVIRON`.

        ``n_workers`` worker processes (default: every core).

        ``threads_per_worker``: threads per worker (default 1: one process per core, each
        with one BLAS thread, as Dask's nanny sets).  ``cluster_kwargs`` go to
        ``dask.distributed.LocalCluster`` (``dashboard_address`` defaults to ``":0"``, a free
        port; ``processes`` is always True: the settings act on new processes only).  The
        settings are passed as ``distributed.nanny.pre-spawn-environ`` entries for the
        cluster's start (only: workers added later by ``cluster.scale`` get the Dask config of
        that time).  Dask's nannies, which run in this process, write their pre-spawn settings
        into its ``os.environ`` to spawn a worker; this process's values are put back once the
        cluster has started (a nanny that restarts a dead worker writes them again).
        :meth:`close` (or the ``with`` block's end) closes the client and the cluster.
        """
        if n_workers is None:
            n_workers = os.cpu_count() or 1
        for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if "processes" in cluster_kwargs:
            raise ValueError("DaskExecutor.local starts worker processes: do not pass processes= "
                             "(the allocator settings act only on new processes)")
        shard_chunks = _check_shard(shard_chunks)
        distributed = _distributed()
        import dask

        cluster_kwargs.setdefault("dashboard_address", ":0")
        key = "distributed.nanny.pre-spawn-environ"
        with dask.config.set({f"{key}.{k}": v for k, v in WORKER_ENVIRON.items()}):
            # the nannies copy these into os.environ before spawning (in this process)
            with _environ_restored(tuple(dask.config.get(key))):
                cluster = distributed.LocalCluster(
                    n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                    **cluster_kwargs)
        try:
            client = distributed.Client(cluster)
        except BaseException:
            cluster.close()
            raise
        ex = cls(client, shard_chunks=shard_chunks, close_client=True)
        ex.cluster = cluster
        return ex

    @property
    def workers(self) -> int:  # type: ignore[override]
        """Workers the scheduler knows now (at least 1)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def _check_environ(self) -> None:
        """Warn once if workers run glibc with Dask's small trim threshold (see the class)."""
        if self._environ_checked:
            return
        try:
            answers = self.client.run(_allocator_environ, on_error="return")
        except Exception:  # a query that fails must not fail the run
            self._environ_checked = True
            return
        if not isinstance(answers, dict) or not answers:
            return  # no worker yet (or an asynchronous client): ask again next run
        self._environ_checked = True
        slow = _slow_allocator(answers)
        if slow:
            values = ", ".join(sorted(set(slow.values())))
            env = " ".join(f"{k}={v}" for k, v in WORKER_ENVIRON.items())
            cfg = " and ".join(f"distributed.nanny.pre-spawn-environ.{k}={v}"
                               for k, v in WORKER_ENVIRON.items())
            warnings.warn(
                f"{len(slow)} of {len(answers)} Dask workers run with MALLOC_TRIM_THRESHOLD_="
                f"{values} and no MALLOC_MMAP_THRESHOLD_ (Dask's default "
                "distributed.nanny.pre-spawn-environ): glibc then maps every temporary of "
                "128 KiB or more afresh and trims the heap after every free, which made "
                "dropcheck's kernels about 3x slower in a worker (3.17 s against 0.95 s; "
                "LocalCluster(2) parallel efficiency 0.29 against 0.86).  Results are "
                "unaffected.  Fix: start the workers with "
                "dropcheck.parallel.DaskExecutor.local(n); or set "
                f"{cfg} in the Dask config (YAML or dask.config.set) before the cluster starts; "
                f"or start `dask worker` with {env} in its environment "
                "(see dropcheck.parallel.WORKER_ENVIRON).",
                WorkerEnvironmentWarning, stacklevel=2)

    def _submit(self, token: str, payload: bytes, shards: list[list[Chunk]],
                nodes: bool) -> list[Any]:
        self._check_environ()
        return [self.client.submit(_run_shard, token, payload, s, nodes, pure=False)
                for s in shards]

    def _result(self, handle: Any) -> list[Any]:
        return handle.result()

    def _collect(self, handles: list[Any]) -> Iterator[list[Any]]:
        # one gather for all shards: a round trip per future costs more than the task here
        yield from self.client.gather(handles)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as one task of the cluster (impure: always run): a Dask future."""
        return self.client.submit(fn, *args, pure=False)

    def close(self) -> None:
        """Close the client if this executor opened it, and the cluster :meth:`local` started."""
        if self._close_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r})"


def _distributed() -> Any:
    """``dask.distributed``, imported on first use (``import dropcheck`` loads no Dask)."""
    try:
        import dask.distributed
    except ImportError as err:
        raise ImportError(
            "the Dask executor needs dask.distributed: pip install 'dropcheck[dask]'"
        ) from err
    return dask.distributed


@contextlib.contextmanager
def _environ_restored(names: tuple[str, ...]) -> Iterator[None]:
    """``os.environ[name]`` for each of ``names`` as it was before the block, after it."""
    old = {k: os.environ.get(k) for k in names}
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----- a wide site sharded by mask index -----

#: Units of a wide site a fast kernel enumerates per engine chunk when an executor shards it:
#: the site's other (top) units are the engine's, one chunk per prefix mask.  The factorized
#: decoder kernel does ~5e8 masks per second, so its chunks are ``2^22`` masks per example
#: (tens of milliseconds: its set-up per call, about 3 ms, is amortised).
SPLIT_INNER_BITS = 22
#: The same for the outer-sum kernel of a site one layer deeper (``method="outer_sum"``), whose
#: per-mask work is a ``(d'+1) → c`` product and a softmax, ~50× the factorized kernel's:
#: ``2^18`` masks per example make chunks of tens of milliseconds.
SPLIT_INNER_BITS_OUTER = 18


def _inner_bits(method: str) -> int:
    return SPLIT_INNER_BITS if method == "factorized" else SPLIT_INNER_BITS_OUTER


def split_applies(model: Any, fp: Any, qd: Any) -> bool:
    """Whether :func:`split_site_loss` applies to the fast plan ``fp``.

    One dropping site (no outer sites), rows without tokens, wider than the kernel's inner
    units (:data:`SPLIT_INNER_BITS` for a decoder site with cross-entropy, the factorized
    kernel; :data:`SPLIT_INNER_BITS_OUTER` for a site feeding any affine map, the outer-sum
    kernel).
    """
    from dropcheck.losses import CrossEntropy

    feed = fp.feed
    if fp.outer or feed.tokens or fp.method not in ("factorized", "outer_sum"):
        return False
    if fp.method == "factorized" and not isinstance(feed.token_loss, CrossEntropy):
        return False  # the squared loss's decoder site has a closed form: nothing to shard
    return bool(model.widths[fp.site] > _inner_bits(fp.method))


def split_site_loss(model: Any, x2: Any, y2: Any, qd: Any, fp: Any, *, clean: bool,
                    chunk_size: int | None, executor: Executor) -> Any:
    r"""``E_η ℓ`` (minus ``ℓ(F(x))`` with ``clean``) per example ``(n,)``, sharded by mask.

    With ``t = d − inner`` (``inner``: :data:`SPLIT_INNER_BITS`, or
    :data:`SPLIT_INNER_BITS_OUTER` for the outer-sum kernel), mask
    ``m = m_in + 2^{d−t} m_top``: the engine enumerates the top ``t`` units (chunk ``c`` =
    prefix mask ``c``, so a chunk is a range of mask indices) and, per prefix ``η_top`` and
    example, the plan's kernel enumerates the other units of the site's affine map

    .. math:: z(m) = W_{in}((1+η_{in})⊙h_{in}) + \big(b + W_{top}((1+η_{top})⊙h_{top})\big),

    a site of width ``d − t`` with the bracket as its bias (the logits for a decoder site, the
    next pre-activation otherwise); ``E ℓ = Σ_top p(top) E_in ℓ``, reduced by the engine's
    tree: bit-identical for every executor and worker count (it differs from the unsplit
    kernel by rounding only).
    """
    import dataclasses

    from dropcheck import _engine, _fastenum

    xp = model.xp
    feed = fp.feed
    q = qd[fp.site]
    W, b = feed.W, feed.b
    d = W.shape[1]
    inner = _inner_bits(fp.method)
    tr = model.trace(x2)
    h = model.site_values(tr)[fp.site][0, ...]  # (n, d): no other site drops
    n = h.shape[0]
    if clean:
        shift = feed.token_loss.value(tr.logits[0, ...], y2)
    else:
        shift = xp.zeros((n,), dtype=model.dtype)
    W_in, W_top = W[:, :inner], W[:, inner:]
    h_in, h_top = h[:, :inner], h[:, inner:]

    def fn(eta: Any, prob: Any) -> Any:
        top = eta["top"]  # (B, t)
        out = []
        for k in range(top.shape[0]):
            o = ((1.0 + top[k, None, :]) * h_top) @ W_top.T  # (n, d_out): the prefix's part
            rows = []
            for r in range(n):
                part = dataclasses.replace(feed, W=W_in, b=b + o[r, :])
                kernel = _fastenum._rows_fn(part, xp, fp.method, q, chunk_size)
                rows.append(kernel(h_in[r : r + 1, :], y2[r : r + 1], shift[r : r + 1]))
            out.append(xp.concat(rows))
        return xp.tensordot(prob, xp.stack(out), axes=1)

    t = d - inner
    return _engine.enumerate_sum({"top": t}, {"top": q}, fn, chunk_size=1, max_masks=2**t,
                                 xp=xp, dtype=model.dtype, executor=executor)


#: The name of :func:`split_site_loss` while it covered decoder sites only.
split_decoder_loss = split_site_loss


def from_options(jobs: int | None = None, scheduler: str | None = None,
                 timeout: float = 10.0) -> Executor | None:
    """The executor a command line asks for (None: the serial default).

    ``--scheduler ADDRESS``: a :class:`DaskExecutor` connected within ``timeout`` seconds;
    ``-j N``: ``N`` local processes (1 or None: serial).  Both at once is an error.
    """
    if jobs is not None and scheduler is not None:
        raise ValueError("give either jobs (-j) or a scheduler address, not both")
    if scheduler is not None:
        return DaskExecutor.connect(scheduler, timeout=timeout)
    if jobs is None or jobs == 1:
        return None
    return ProcessExecutor(jobs)
