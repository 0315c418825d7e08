"""Benchmark 1: exact expectation by enumeration, dropcheck against the batched baseline.

``dc.exact.expected_loss`` (method ``auto``: ``factorized`` for a site feeding the 10-class
linear head, ``gray`` for a site one layer deeper) against :func:`naive_expected_loss` (all
masks as one 0/1 matrix per chunk, one batched forward: what a user writes), and against a
yardstick of ``log`` throughput: the ``log`` evaluations dropcheck's call actually performs
(counted through the public call, :func:`count_log_elements`) redone by ``np.log`` in cache
into a preallocated ``out=`` buffer (:func:`log_yardstick`), timed in the same run; and, for
reference, one such ``log`` per mask.

When the baseline would take long, it runs on a prefix of its chunks: its cost is linear in
the number of chunks (fixed chunk size), so the prefix gives its rate; the row says so.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from dropcheck.benchmarks._baselines import naive_expected_gradient, naive_expected_loss
from dropcheck.benchmarks._harness import (
    Row,
    compare,
    count_log_elements,
    log_yardstick,
    peak_bytes,
)

import dropcheck as dc

BASELINE_CHUNK = 2**14


def _net(sizes: list[int], activation: str, seed: int = 0) -> tuple[Any, ...]:
    net = dc.MLP.random(sizes, activation=activation, sites=("h1",), seed=seed)
    L = len(sizes) - 1
    Ws = [net.params[f"W{i}"] for i in range(1, L + 1)]
    bs = [net.params[f"b{i}"] for i in range(1, L + 1)]
    return net, Ws, bs


def _case(
    name: str,
    sizes: list[int],
    activation: str,
    n: int,
    q: float,
    repeats: int,
    baseline_cap: int,
    method: str = "auto",
    memory: bool = True,
) -> Row:
    net, Ws, bs = _net(sizes, activation)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    d = sizes[1]
    masks = n * 2**d
    n_chunks = -(-(2**d) // BASELINE_CHUNK)
    max_chunks = max(1, min(n_chunks, baseline_cap // (n * BASELINE_CHUNK)))
    done = n * min(2**d, max_chunks * BASELINE_CHUNK)
    full = max_chunks == n_chunks

    def ours() -> Any:
        return dc.exact.expected_loss(net, x, y, q, method=method)

    def base() -> Any:
        return naive_expected_loss(
            Ws, bs, activation, 1, x, y, q, chunk=BASELINE_CHUNK,
            max_chunks=None if full else max_chunks,
        )

    logs = count_log_elements(ours)
    t = compare({"dropcheck": ours, "baseline": base}, repeats)
    # the yardsticks are short pure-throughput loops: more repeats (alternating, median) keep
    # a preempted sample on the shared machine from setting them
    sticks = {"its_logs": log_yardstick(logs)}
    if logs != masks:  # else the two yardsticks are one: time it once
        sticks["log_per_mask"] = log_yardstick(masks)
    t.update(compare(sticks, max(15, 5 * repeats)))
    t.setdefault("log_per_mask", t["its_logs"])
    t_base = t["baseline"] * masks / done  # the whole enumeration's time at the measured rate
    extra: dict[str, Any] = {
        "masks": masks,
        "dropcheck_masks_per_s": masks / t["dropcheck"],
        "baseline_masks_per_s": done / t["baseline"],
        # the yardstick: the logs this call performed, redone in cache (time / dropcheck's)
        "logs_performed": logs,
        "masks_per_log": masks / logs if logs else float("nan"),
        "its_logs_s": t["its_logs"],
        "of_its_logs": t["its_logs"] / t["dropcheck"],
        # reference: one in-cache log per mask (what a per-mask softmax cannot go below)
        "log_per_mask_s": t["log_per_mask"],
        "of_log_per_mask": t["log_per_mask"] / t["dropcheck"],
    }
    if full:
        extra["max_abs_diff"] = float(np.max(np.abs(np.asarray(ours()) - base())))
    if memory:
        extra["dropcheck_peak_kib"] = peak_bytes(ours) / 1024
        extra["baseline_peak_kib"] = peak_bytes(
            lambda: naive_expected_loss(Ws, bs, activation, 1, x, y, q, chunk=BASELINE_CHUNK,
                                        max_chunks=2)
        ) / 1024
    note = "" if full else f"baseline timed on {done:.3g} of {masks:.3g} masks (rate × all)"
    return Row("enumeration", name, t["dropcheck"], t_base, t_base / t["dropcheck"], extra, note)


def _gradient_case(d: int, n: int, q: float, repeats: int, baseline_cap: int) -> Row:
    """``E ∇_W ℓ`` (``expected_gradient``, factorized) against the batched gradient baseline."""
    net, Ws, bs = _net([16, d, 10], "tanh")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 16))
    y = rng.integers(0, 10, n)
    chunk = 2**12
    n_chunks = -(-(2**d) // chunk)
    max_chunks = max(1, min(n_chunks, baseline_cap // (n * chunk)))
    full = max_chunks == n_chunks
    done = n * min(2**d, max_chunks * chunk)
    masks = n * 2**d

    def ours() -> Any:
        return dc.exact.expected_gradient(net, x, y, q)

    def base() -> Any:
        return naive_expected_gradient(Ws[0], bs[0], Ws[1], bs[1], "tanh", x, y, q,
                                       chunk=chunk, max_chunks=None if full else max_chunks)

    t = compare({"dropcheck": ours, "baseline": base}, repeats)
    t_base = t["baseline"] * masks / done
    extra: dict[str, Any] = {
        "masks": masks,
        "dropcheck_masks_per_s": masks / t["dropcheck"],
        "baseline_masks_per_s": done / t["baseline"],
    }
    if full:
        extra["max_abs_diff"] = float(np.max(np.abs(np.asarray(ours()) - base())))
    note = "" if full else f"baseline timed on {done:.3g} of {masks:.3g} masks (rate × all)"
    return Row("enumeration", f"expected_gradient, decoder site, width {d} (factorized)",
               t["dropcheck"], t_base, t_base / t["dropcheck"], extra, note)


def _memory_rows(widths: tuple[int, ...], deeper: tuple[int, ...]) -> list[Row]:
    """Peak traced memory of one call, one example, as the width grows (no baseline)."""
    rows = []
    x = np.random.default_rng(1).standard_normal((1, 16))
    y = np.array([3])
    for label, sizes_of, ds in (("factorized, decoder site", lambda d: [16, d, 10], widths),
                                ("gray, site one layer deeper", lambda d: [16, d, 32, 10],
                                 deeper)):
        for d in ds:
            net, _, _ = _net(sizes_of(d), "tanh")
            t = time.perf_counter()
            kib = peak_bytes(lambda net=net: dc.exact.expected_loss(net, x, y, 0.5)) / 1024
            rows.append(Row("memory", f"{label}, width {d}", time.perf_counter() - t, None, None,
                            {"masks": 2**d, "peak_kib": kib}))
    return rows


def run(mode: str, repeats: int) -> list[Row]:
    """Rows of benchmark 1; ``mode`` is ``"smoke"`` (tiny, for the tests), ``"quick"``, ``"full"``.

    Decoder site of widths 16/20/24 (factorized), a site one layer deeper (gray), and in the
    full run a relu net (no separable activation) and the batched fallback engine.
    """
    if mode == "smoke":
        return [
            _case("decoder site, width 8 (factorized)", [6, 8, 4], "tanh", 1, 0.5, repeats,
                  2**8, memory=True),
            _case("site one layer deeper, width 6, tanh (gray)", [6, 6, 5, 4], "tanh", 1, 0.5,
                  repeats, 2**5, memory=False),
            _gradient_case(6, 1, 0.5, repeats, 2**12),
            *_memory_rows((6, 8), (6,)),
        ]
    cap = 2**19 if mode == "quick" else 2**21
    rows = []
    for d in (16, 20, 24):
        rows.append(_case(f"decoder site, width {d} (factorized)", [16, d, 10], "tanh", 2, 0.5,
                          repeats, cap))
    for d in (16,) if mode == "quick" else (16, 20):
        rows.append(_case(f"site one layer deeper, width {d}, tanh (gray)", [16, d, 32, 10],
                          "tanh", 2, 0.5, repeats, cap))
    for d in (16,) if mode == "quick" else (16, 20):
        rows.append(_gradient_case(d, 2, 0.5, repeats, cap // 4))
    rows += _memory_rows((16, 20, 24, 26), (12, 16, 20))
    if mode == "full":
        rows.append(_case("site one layer deeper, width 16, relu (gray)", [16, 16, 32, 10],
                          "relu", 2, 0.5, repeats, cap))
        rows.append(_case("decoder site, width 16, method='batched' (the fallback engine)",
                          [16, 16, 10], "tanh", 2, 0.5, repeats, cap, method="batched",
                          memory=False))
    return rows
