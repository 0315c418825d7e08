"""Benchmark 5: parallel efficiency of a wide decoder-site enumeration (dropcheck.parallel).

One job — ``dc.exact.expected_loss`` of MLP [16, d, 10] (tanh, site h1 feeding the decoder),
two examples, q = ½, sharded by mask index (:func:`dropcheck.parallel.split_decoder_loss`) —
timed in the same run, alternating, on: the serial executor in this process; one spawned
worker process; two; and (a second phase, alternating with serial again) a Dask
``LocalCluster`` with two single-threaded worker processes started by
:meth:`dropcheck.parallel.DaskExecutor.local` (glibc malloc settings
:data:`dropcheck.parallel.WORKER_ENVIRON`); then (a third phase, the same way) a
``LocalCluster(2)`` in Dask's default worker environment (``MALLOC_TRIM_THRESHOLD_=65536``,
which made the kernel about 3× slower in a worker), reported in its own row and not judged.
Workers are started (and import dropcheck) before the timing.  Reported:

- ``1 process / 2 processes``: the time on one worker over the time on two (goal ≥ 1.8);
- the Dask efficiency ``serial / (2 · LocalCluster(2))`` (goal ≥ 0.8, on ``DaskExecutor.local``);
- per-worker throughput (masks · examples per second, serial), and per CPU second;
- the *CPU efficiency* ``serial CPU time / total CPU time of the parallel run`` (this process
  and its workers, user + system, by psutil): the parallel overhead in work, whatever share
  of the cores the run was given — ``W ×`` it bounds the speed-up ``W`` idle cores can give.
  The per-CPU-second throughput is the input of the scale-out table in docs/parallel.md.

Every parallel result is checked bit-identical to the serial one.  The ratios need two idle
cores: on a shared machine the load average (in the machine table) says how far they were.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from dropcheck.benchmarks._harness import Row, compare

import dropcheck as dc
from dropcheck.parallel import SPLIT_INNER_BITS, DaskExecutor, ProcessExecutor, SerialExecutor

#: Site width per mode: 28 is the issue's job (a few seconds per call on one core).
WIDTHS = {"smoke": SPLIT_INNER_BITS + 1, "quick": 26, "full": 28}


def available() -> str | None:
    """Why the benchmark cannot run here (None when it can)."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return "parallel: dask.distributed is not installed (pip install 'dropcheck[dask]')"
    return None


def _job(d: int) -> tuple[Any, Any, Any]:
    net = dc.MLP.random([16, d, 10], activation="tanh", sites=("h1",), seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((2, 16)), rng.integers(0, 10, 2)


def _cpu(fn: Any, pids: list[int]) -> float:
    """CPU seconds (user + system) one ``fn()`` costs in this process and the processes
    ``pids``: what the job costs on any machine, whatever share of the cores it was given."""
    import time

    import psutil

    procs = [psutil.Process(p) for p in pids]

    def now() -> float:
        return time.process_time() + sum(sum(p.cpu_times()[:2]) for p in procs)

    t0 = now()
    fn()
    return now() - t0


def _task_overhead(client: Any, tasks: int = 400) -> float:
    """Wall seconds per trivial task of ``client`` (``tasks`` submitted at once, one gather):
    the scheduler cost per shard that the scale-out table (docs/parallel.md) charges."""
    import time

    from dropcheck.parallel import _pid

    client.gather(client.map(_pid, range(8), pure=False))  # warm the workers' code path
    t0 = time.perf_counter()
    client.gather(client.map(_pid, range(tasks), pure=False))
    return (time.perf_counter() - t0) / tasks


def run(mode: str, repeats: int, threads: int | None = None) -> list[Row]:
    """Rows of benchmark 5 (``mode``: ``smoke``, ``quick`` or ``full``)."""
    import warnings

    from dask.distributed import Client, LocalCluster

    from dropcheck.parallel import WorkerEnvironmentWarning, _allocator_environ

    d = WIDTHS[mode]
    net, x, y = _job(d)
    masks = x.shape[0] * 2**d

    def call(ex: Any) -> Any:
        return dc.exact.expected_loss(net, x, y, 0.5, max_masks=2**d, executor=ex)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    serial = SerialExecutor()
    ref = call(serial)
    # two phases: an idle LocalCluster in this process slowed a spawned worker 3–5× on the
    # shared machine (its event loop and heartbeats compete for the cores), so the process
    # pools and the cluster are never alive together; each phase alternates with serial
    with ProcessExecutor(1).warm() as p1, ProcessExecutor(2).warm() as p2:
        same = all(np.array_equal(call(e), ref) for e in (p1, p2))
        t = compare({"serial": lambda: call(serial), "1 process": lambda: call(p1),
                     "2 processes": lambda: call(p2)}, repeats)
        cpu = {"serial": _cpu(lambda: call(serial), []),
               "2 processes": _cpu(lambda: call(p2), list(p2._pool._processes))}
    # the judged cluster: DaskExecutor.local (WORKER_ENVIRON); then, never alive together,
    # one in Dask's default worker environment (not judged: its note gives the cause)
    with DaskExecutor.local(2) as dk:
        same = same and bool(np.array_equal(call(dk), ref))
        td = compare({"serial": lambda: call(serial), "dask 2": lambda: call(dk)}, repeats)
        cpu["dask 2"] = _cpu(lambda: call(dk), list(dk.client.run(os.getpid).values()))
        task_s = _task_overhead(dk.client)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        dd = DaskExecutor(client)
        default_env = next(iter(client.run(_allocator_environ).values()))
        with warnings.catch_warnings(record=True) as warned:  # the slow environment's warning
            warnings.simplefilter("always", WorkerEnvironmentWarning)
            same_default = bool(np.array_equal(call(dd), ref))
        tdd = compare({"serial": lambda: call(serial), "dask 2": lambda: call(dd)}, repeats)
        cpu["dask default"] = _cpu(lambda: call(dd), list(client.run(os.getpid).values()))
    t["dask 2"], t["serial (dask phase)"] = td["dask 2"], td["serial"]
    common = {"width": d, "masks": masks, "bit_identical": same, "serial_s": t["serial"],
              "one_process_s": t["1 process"], "two_processes_s": t["2 processes"],
              "dask_two_s": t["dask 2"], "per_worker_masks_per_s": masks / t["serial"],
              "serial_cpu_s": cpu["serial"], "per_core_masks_per_cpu_s": masks / cpu["serial"],
              "two_processes_cpu_s": cpu["2 processes"], "dask_two_cpu_s": cpu["dask 2"],
              "load_average_at_start": load, "cores": os.cpu_count(),
              "dask_task_overhead_s": task_s}
    ratio = t["1 process"] / t["2 processes"]
    eff = t["serial (dask phase)"] / (2 * t["dask 2"])
    return [
        Row("parallel", f"decoder site, width {d}: 2 processes vs 1", t["2 processes"],
            t["1 process"], ratio, {**common, "efficiency": ratio / 2,
                                    "cpu_efficiency": cpu["serial"] / cpu["2 processes"]},
            "" if same else "RESULTS DIFFER between executors"),
        Row("parallel", f"decoder site, width {d}: Dask LocalCluster(2) vs serial",
            t["dask 2"], t["serial (dask phase)"], t["serial (dask phase)"] / t["dask 2"],
            {**common, "serial_s": t["serial (dask phase)"], "efficiency": eff,
             "cpu_efficiency": cpu["serial"] / cpu["dask 2"]},
            "" if same else "RESULTS DIFFER between executors"),
        # no "LocalCluster" in this case name: benchmarks/run.py judges the rows that have it
        Row("parallel", f"decoder site, width {d}: Dask, 2 workers in Dask's default "
            "environment vs serial (not judged)",
            tdd["dask 2"], tdd["serial"], tdd["serial"] / tdd["dask 2"],
            {**common, "serial_s": tdd["serial"], "dask_two_s": tdd["dask 2"],
             "efficiency": tdd["serial"] / (2 * tdd["dask 2"]),
             "cpu_efficiency": cpu["serial"] / cpu["dask default"],
             "dask_default_cpu_s": cpu["dask default"], "worker_environ": default_env,
             "warned": any(issubclass(w.category, WorkerEnvironmentWarning) for w in warned),
             "bit_identical": same_default},
            ("not judged: Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_="
             f"{default_env.get('MALLOC_TRIM_THRESHOLD_')} (distributed.nanny.pre-spawn-environ"
             "); any glibc malloc setting switches off its dynamic mmap threshold, so every "
             "temporary of 128 KiB or more of the kernel is mmap-ed and page-faulted afresh "
             "and the heap is trimmed after every free; the judged row's cluster is "
             "DaskExecutor.local(2), whose workers start with WORKER_ENVIRON "
             "(MALLOC_TRIM_THRESHOLD_=2^27, MALLOC_MMAP_THRESHOLD_=2^25)"
             + ("" if same_default else "; RESULTS DIFFER between executors"))),
    ]


def scale_out_table(rate: float, task_s: float = 1e-3, inner: int = SPLIT_INNER_BITS,
                    widths: tuple[int, ...] = (32, 36, 40),
                    workers: tuple[int, ...] = (1, 16, 256)) -> str:
    """Markdown: projected time to enumerate one example's ``2^d`` masks on ``W`` workers.

    ``T = 2^d / (rate · W) + tasks · task_s`` with ``rate`` the measured per-worker throughput
    (masks per second for one example), ``tasks = min(chunks, 4W)`` shards (the default, each
    a scheduler task of overhead ``task_s``, handled one after another by the scheduler) and
    ``chunks = 2^(d − inner)`` (one per prefix mask); a worker needs at least one chunk.  The
    reduction depth is ``log2 chunks`` and the memory per shard is the kernel's (a few MiB,
    whatever ``d``).
    """
    head = "| width d | masks | chunks | reduction depth | " + " | ".join(
        f"{w} worker{'s' if w > 1 else ''}" for w in workers) + " |"
    lines = [head, "|" + "---|" * (4 + len(workers))]
    for d in widths:
        chunks = 2 ** max(0, d - inner)
        cells = []
        for w in workers:
            tasks = min(chunks, 4 * w)
            t = 2**d / (rate * min(w, chunks)) + tasks * task_s
            cells.append(_fmt_time(t))
        lines.append(f"| {d} | {2**d:.3g} | {chunks} | {max(0, d - inner)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_time(t: float) -> str:
    if t < 60:
        return f"{t:.3g} s"
    if t < 3600:
        return f"{t / 60:.3g} min"
    if t < 86400:
        return f"{t / 3600:.3g} h"
    return f"{t / 86400:.3g} days"
