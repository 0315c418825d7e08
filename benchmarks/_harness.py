"""Timing, memory and machine description shared by the benchmarks.

Every comparison runs the dropcheck path and its baseline in the same process, alternating
(ABAB…, the order reversed on every other repeat so neither side always runs on a warm cache),
after one untimed warm-up call each, and reports medians: on a shared 2-core machine the
minimum flatters whichever side was lucky and the mean is dragged by other people's jobs.
"""

from __future__ import annotations

import cProfile
import ctypes
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Row:
    """One line of a results table: a dropcheck path against its baseline."""

    bench: str
    case: str
    dropcheck_s: float
    baseline_s: float | None
    #: baseline time / dropcheck time (> 1: dropcheck faster), on the same work
    ratio: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def compare(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each callable, run alternately ``repeats`` times after ``warmup``."""
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def count_log_elements(fn: Callable[[], Any]) -> int:
    """How many logarithms (array elements through ``log`` or ``log1p``) one ``fn()`` computes.

    ``numpy.log``/``log1p`` and the array-API namespace's (``array_api_compat.numpy``, what
    ``dropcheck.backend.namespace`` hands numpy inputs) are replaced for the call by wrappers
    that add up the sizes of their inputs: the count of the work the code actually did, taken
    through the public call, whatever the engine's internals.  Scalar ``math.log`` is not
    counted (it is not per mask).
    """
    import array_api_compat.numpy as xnp

    count = 0

    def counting(orig: Any) -> Callable[..., Any]:
        def counted(a: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += int(np.size(a))
            return orig(a, *args, **kwargs)

        return counted

    saved = [(mod, name, getattr(mod, name)) for mod in (np, xnp) for name in ("log", "log1p")]
    for mod, name, orig in saved:
        setattr(mod, name, counting(orig))
    try:
        fn()
    finally:
        for mod, name, orig in saved:
            setattr(mod, name, orig)
    return count


def log_yardstick(n_logs: int, chunk: int = 2**13) -> Callable[[], None]:
    """A callable doing ``n_logs`` float64 ``np.log`` evaluations in cache, into ``out=``.

    The same ``chunk``-element input (values in [0.5, 1.5), normal numbers: no slow path) is
    logged into one preallocated buffer ``n_logs // chunk`` times plus the remainder: 2 × 64
    KiB stays in L2, so the time is the log's own throughput (numpy's SIMD kernel where the
    CPU has one), not allocation or page faults.
    """
    chunk = max(1, min(chunk, n_logs))
    src = np.random.default_rng(0).random(chunk) + 0.5
    buf = np.empty(chunk)
    full, rest = divmod(n_logs, chunk)

    def run() -> None:
        for _ in range(full):
            np.log(src, out=buf)
        if rest:
            np.log(src[:rest], out=buf[:rest])

    return run


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak traced allocation (numpy and torch-on-CPU buffers report to tracemalloc) of ``fn``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def profile_top(fn: Callable[[], Any], k: int = 4, calls: int = 3) -> list[tuple[str, float]]:
    """The ``k`` functions with the most own time over ``calls`` calls of ``fn`` (cProfile).

    Returns ``(module:function, share of the total)`` pairs: evidence for where a path spends
    its time when it misses a target.
    """
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:k]  # type: ignore[attr-defined]
    out = []
    for (path, _line, name), v in rows:
        mod = os.path.splitext(os.path.basename(path))[0] if path != "~" else "builtin"
        out.append((f"{mod}:{name}", v[2] / total))
    return out


def _openblas() -> ctypes.CDLL | None:
    try:
        with open("/proc/self/maps") as fh:
            paths = {ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln}
    except OSError:
        return None
    for p in sorted(paths):
        try:
            return ctypes.CDLL(p)
        except OSError:
            continue
    return None


_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


def blas_threads(n: int | None = None) -> int | None:
    """Get (and with ``n``, first set) the OpenBLAS thread count numpy uses; None if unknown."""
    lib = _openblas()
    if lib is None:
        return None
    if n is not None:
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                break
    for name in _GETTERS:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_int
            return int(fn())
    return None


def machine(threads: int | None) -> dict[str, Any]:
    """CPU, cores, load, library versions and BLAS configuration of this run."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = ln.split(":", 1)[1].strip()
                if ln.startswith("flags") and not flags:
                    have = set(ln.split(":", 1)[1].split())
                    flags = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512dq",
                                         "avx512vl") if f in have]
    except OSError:
        pass
    try:
        cores_avail = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores_avail = os.cpu_count() or 1
    blas = "unknown"
    numpy_simd = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{b.get('name', '?')} {b.get('version', '')}".strip()
        simd = cfg.get("SIMD Extensions", {})
        numpy_simd = (f"baseline {' '.join(simd.get('baseline', []))}; "
                      f"dispatched {' '.join(simd.get('found', []))}")
    except Exception:  # noqa: BLE001 - show_config's schema is numpy-version dependent
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "simd": " ".join(flags),
        # which kernels numpy picks at run time (np.log's float64 loop is vectorised only
        # with AVX512F: on an AVX2-only machine it is scalar libm)
        "numpy_simd": numpy_simd,
        "cores": os.cpu_count(),
        "cores_available": cores_avail,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "blas": blas,
        "blas_threads": threads,
        "platform": platform.platform(),
    }
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    import dropcheck

    info["dropcheck"] = dropcheck.__version__
    info["commit"] = _git_commit()
    return info


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes); None outside a checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")
