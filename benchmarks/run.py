"""``dropcheck bench``: run the benchmarks, print the table, write JSON and Markdown.

    dropcheck bench [--quick] [--json PATH] [--markdown PATH] [--only NAMES]
                    [--repeats N] [--blas-threads N]

(also ``python -m dropcheck.benchmarks …``).  Each benchmark times dropcheck and its baseline in
the same process, alternating, and reports medians and their ratio; see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dropcheck.benchmarks._harness import Row, blas_threads, machine

BENCHES = ("enumeration", "explicit", "sampled", "import", "parallel")
TABLES = ("enumeration", "memory", "explicit", "sampled", "import", "parallel")

#: What each target's path does, and where it is bound (printed under the targets table).
WHY = {
    "≥ 50× the batched baseline at width 24":
        "Factorized: per mask one product term of inner dimension c (the partition function "
        "S = E_hi E_loᵀ) and, with up to 8 equal-probability masks multiplied first, one log "
        "per several masks (table 1's \"masks / log\" counts them in this run); the baseline "
        "builds the mask matrix, runs a (B × d)(d × c) forward and a softmax (c exps, a max, "
        "a log) per mask.",
    "within 2× of the logs it performs (≥ 0.5)":
        "The yardstick is the log work the call actually does: the log evaluations of one "
        "`expected_loss` call are counted through the public call (numpy's and the array-API "
        "namespace's `log` wrapped for one untimed call; \"masks / log\" shows the folding), "
        "then redone by `np.log` on a 64 KiB input into a preallocated `out=` buffer (in "
        "cache: no allocation, no page faults), and \"of its logs\" = that time / dropcheck's "
        "time.  1.0 would mean the call costs no more than its logs; ≥ 0.5 is within 2×.  "
        "Every factorized decoder row is judged.  The figure is the share of the call's time "
        "its logs would take on their own: below 0.5 the logs are not what bounds the call.  "
        "The "
        "\"of one log per mask\" column is the same in-cache yardstick with one log per mask "
        "(what a per-mask softmax cannot go below), for reference.  Both depend on the "
        "machine's SIMD (the machine table's numpy_simd): numpy's float64 log is vectorised "
        "only with AVX-512 (about 5× faster than the scalar loop it uses on AVX2), so on an "
        "AVX2-only machine the same rows read several times higher.",
    "≥ 5× for a site not feeding the decoder":
        "Gray/block method: the next pre-activation of every mask is an outer sum (no (d × d') "
        "product per mask) and tanh/sigmoid separate into C/(C + B) (one add and one division "
        "instead of a transcendental); what remains per mask is the (d'+1) → c product and the c "
        "exps of the softmax, which bound it (numpy's float64 exp is scalar libm on AVX2: c exps "
        "cost more than everything else per mask).  The verdict is on the tanh rows (the "
        "benchmark's network); the relu row has its own target (next).",
    "relu one layer deeper ≥ 5× the batched baseline":
        "relu has no separable form, so the per-mask work keeps the activation of the d' next "
        "units, the (d'+1) → c product and the softmax; what the method saves is the (d × d') "
        "product per mask (the outer sum of the next pre-activation), which at d = 16, "
        "d' = 32 is most of the baseline's per-mask work.",
    "import dropcheck loads no hypothesis, scipy.stats, sympy, matplotlib":
        "The package's submodules load on first access (PEP 562 module `__getattr__`): "
        "`import dropcheck` brings the models, losses and noise (numpy, autograd, "
        "array-api-compat); `dc.checks` brings scipy.stats, `dc.strategies` hypothesis, "
        "`dc.plots` matplotlib when used.  The measured column gives the median wall time of "
        "a fresh `python -c \"import dropcheck\"` over `python -c \"import numpy\"` (both "
        "with interpreter start-up; start-up subtracted from both in table 4).",
    "R_approx no slower than torch.func (ratio ≥ 1)":
        "dropcheck sweeps all directions of a site in one batched pass on the site protocol "
        "(noise tangents / one reverse sweep of the c factor columns), against torch.func's "
        "vmap(jacrev) with its per-call dispatch.",
    "fused R̂_approx + ξ_approx + gradient ≤ 1.5× a plain forward+backward":
        "`dropcheck.step.sampled_step`: one trace, one tangent sweep along η⊙h and one reverse "
        "sweep (`Model.reverse`) of the true-label, sampled-label and tangent cotangents "
        "stacked, parameter gradients summed inside it.  The yardstick is dropcheck's plain "
        "mean-gradient forward+backward of the same MLP.  The column \"multiply-adds fused / "
        "plain\" counts the dense products each does (from the layer sizes, "
        "`bench_sampled.macs`, checked against the sweep in tests/test_step.py): the fused "
        "step needs the tangent forward, two more cotangents through the backward products "
        "and the tangent's parameter products, 2.5× the plain step's multiply-adds for "
        "[32, 128, 128, 10] with both hidden sites, and at these sizes the time follows the "
        "products, so 1.5× is below what these three quantities cost.  For comparison: the "
        "earlier yardstick (a plain step with per-example gradients) and torch's "
        "forward+backward.",
}

WHY["2 processes ≥ 1.8× one on a wide decoder-site enumeration"] = (
    "The site's top units are enumerated as engine chunks (one prefix mask each, 2^22 masks per "
    "example inside, by the factorized kernel); shards of chunks go to spawned worker "
    "processes, which return the reduction tree's nodes (a few floats): no data moves but the "
    "pickled job, so the ideal is 2×.  Both sides run in worker processes (warm), so start-up "
    "and pickling are on both.  It needs two idle cores: the table gives the load average at "
    "the start (a shared machine's other jobs take the second core).")
WHY["Dask LocalCluster(2) parallel efficiency ≥ 0.8"] = (
    "The same shards as Dask tasks on `DaskExecutor.local(2)`, a LocalCluster of two "
    "single-threaded worker processes started with `parallel.WORKER_ENVIRON` (glibc's trim and "
    "mmap thresholds raised; Dask's default worker environment makes the kernel ~3× slower in "
    "a worker, the unjudged row shows it); efficiency = serial time in this process / (2 × "
    "cluster time): scheduler overhead per task (the \"Dask s / task\" column) against tasks "
    "of ~0.1 s.  The same caveat on load applies.")


def _is_factorized_decoder(r: Row) -> bool:
    return (r.case.startswith("decoder site, width") and "(factorized)" in r.case
            and "of_its_logs" in r.extra)


def _is_deeper_tanh(r: Row) -> bool:
    return r.case.startswith("site one layer deeper, width") and "relu" not in r.case


def _is_deeper_relu(r: Row) -> bool:
    return r.case.startswith("site one layer deeper, width") and "relu" in r.case


def _fig_sampled(rs: list[Row]) -> str:
    return "; ".join(f"{r.ratio:.2f}× (multiply-adds {r.extra['macs_ratio']:.2f}×)" for r in rs)


def _fig_ratios(rs: list[Row]) -> str:
    return ", ".join(f"{r.ratio:.2f}×" for r in rs)


def _fig_logs(rs: list[Row]) -> str:
    return ", ".join(f"{_width(r)}: {r.extra['of_its_logs']:.2g} ({r.extra['masks_per_log']:.1f} "
                     f"masks / log; of one log per mask {r.extra['of_log_per_mask']:.2g})"
                     for r in rs)


def _fig_import(rs: list[Row]) -> str:
    return "; ".join(f"loaded: {', '.join(r.extra['heavy_loaded']) or 'none'}; "
                     f"{r.extra['over_numpy']:.2f}× the time of import numpy" for r in rs)


def _width(r: Row) -> str:
    return "width " + r.case.split("width ", 1)[1].split()[0].rstrip(",")


#: The targets: (benchmark, which rows, description, test on each row, figures of the rows).
#: Every selected row is judged: the verdict is "met" only when all of them pass.
TARGETS: list[tuple[str, Callable[[Row], bool], str, Callable[[Row], bool],
                    Callable[[list[Row]], str]]] = [
    ("enumeration", lambda r: r.case.startswith("decoder site, width 24"),
     "≥ 50× the batched baseline at width 24", lambda r: r.ratio >= 50, _fig_ratios),
    ("enumeration", _is_factorized_decoder, "within 2× of the logs it performs (≥ 0.5)",
     lambda r: r.extra["of_its_logs"] >= 0.5, _fig_logs),
    ("enumeration", _is_deeper_tanh, "≥ 5× for a site not feeding the decoder",
     lambda r: r.ratio >= 5, _fig_ratios),
    ("enumeration", _is_deeper_relu, "relu one layer deeper ≥ 5× the batched baseline",
     lambda r: r.ratio >= 5, _fig_ratios),
    ("explicit", lambda r: r.case.startswith("exact R_approx"),
     "R_approx no slower than torch.func (ratio ≥ 1)", lambda r: r.ratio >= 1, _fig_ratios),
    ("sampled", lambda r: r.case.startswith("MLP [32, 128, 128, 10]"),
     "fused R̂_approx + ξ_approx + gradient ≤ 1.5× a plain forward+backward",
     lambda r: r.ratio <= 1.5, _fig_sampled),
    ("import", lambda r: True,
     "import dropcheck loads no hypothesis, scipy.stats, sympy, matplotlib",
     lambda r: not set(r.extra["heavy_loaded"]) & {"hypothesis", "scipy.stats", "sympy",
                                                   "matplotlib"}, _fig_import),
    ("parallel", lambda r: "2 processes vs 1" in r.case,
     "2 processes ≥ 1.8× one on a wide decoder-site enumeration", lambda r: r.ratio >= 1.8,
     _fig_ratios),
    ("parallel", lambda r: "LocalCluster" in r.case,
     "Dask LocalCluster(2) parallel efficiency ≥ 0.8",
     lambda r: r.extra["efficiency"] >= 0.8,
     lambda rs: ", ".join(f"{r.extra['efficiency']:.2f}" for r in rs)),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dropcheck bench``."""
    p = argparse.ArgumentParser(
        prog="dropcheck bench",
        description="Benchmarks: dropcheck against the baselines a user would write, one run.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    p.add_argument("--json", metavar="PATH", help="write all rows and the machine as JSON")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the results page (e.g. docs/benchmarks.md)")
    p.add_argument("--only", action="append", metavar="NAMES",
                   help=f"comma-separated subset of {', '.join(BENCHES)}")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per side (default 3 quick, 5 full); medians are reported")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="OpenBLAS and torch threads for both sides (default 1: reproducible on "
                        "a shared machine; 0 leaves the libraries' defaults)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny, for tests
    return p


def _fmt_s(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


class _Bold(str):
    """A table cell shown emphasised (``**…**`` in Markdown, bold in a terminal)."""


def _cells(rows: list[Row], bench: str) -> tuple[list[str], list[list[str]], list[str]]:
    """``(header, body, notes)`` of one results table; empty header when no row is for it."""
    rs = [r for r in rows if r.bench == bench]
    if not rs:
        return [], [], []
    if bench == "enumeration":
        head = ["case", "masks", "dropcheck masks/s", "baseline masks/s", "ratio",
                "logs performed", "masks / log", "of its logs", "of one log per mask",
                "peak KiB (dc / base)", "max abs diff"]
        body = [[r.case, _fmt(r.extra["masks"]), _fmt(r.extra["dropcheck_masks_per_s"]),
                 _fmt(r.extra["baseline_masks_per_s"]), _Bold(f"{r.ratio:.1f}×"),
                 _fmt(r.extra.get("logs_performed")),
                 _fmt(r.extra.get("masks_per_log"), ".2f"),
                 _fmt(r.extra.get("of_its_logs"), ".2g"),
                 _fmt(r.extra.get("of_log_per_mask"), ".2g"),
                 (f"{r.extra['dropcheck_peak_kib']:.0f} / {r.extra['baseline_peak_kib']:.0f}"
                  if "dropcheck_peak_kib" in r.extra else "–"),
                 _fmt(r.extra.get("max_abs_diff"), ".1e")] for r in rs]
    elif bench == "explicit":
        head = ["case", "dropcheck", "torch.func", "ratio (torch / dropcheck)", "max abs diff"]
        body = [[r.case, _fmt_s(r.dropcheck_s), _fmt_s(r.baseline_s), _Bold(f"{r.ratio:.2f}×"),
                 _fmt(r.extra.get("max_abs_diff"), ".1e")] for r in rs]
    elif bench == "memory":
        head = ["case", "masks", "peak traced memory (KiB)", "time (traced)"]
        body = [[r.case, _fmt(r.extra["masks"]), f"{r.extra['peak_kib']:.0f}",
                 _fmt_s(r.dropcheck_s)] for r in rs]
    elif bench == "parallel":
        head = ["case", "masks", "serial", "1 process", "2 processes", "LocalCluster(2)",
                "ratio", "efficiency", "CPU efficiency", "masks / CPU s", "Dask s / task",
                "bit-identical", "load at start"]
        body = [[r.case, _fmt(r.extra["masks"]), _fmt_s(r.extra["serial_s"]),
                 _fmt_s(r.extra["one_process_s"]), _fmt_s(r.extra["two_processes_s"]),
                 _fmt_s(r.extra["dask_two_s"]), _Bold(f"{r.ratio:.2f}×"),
                 f"{r.extra['efficiency']:.2f}", f"{r.extra['cpu_efficiency']:.2f}",
                 _fmt(r.extra["per_core_masks_per_cpu_s"]),
                 _fmt_s(r.extra.get("dask_task_overhead_s")),
                 str(r.extra["bit_identical"]), _fmt(r.extra["load_average_at_start"], ".2f")]
                for r in rs]
    elif bench == "import":
        head = ["case", "import dropcheck", "import numpy", "python start-up",
                "dropcheck / numpy", "own: (dropcheck − start) / (numpy − start)",
                "heavy modules loaded"]
        body = [[r.case, _fmt_s(r.dropcheck_s), _fmt_s(r.baseline_s),
                 _fmt_s(r.extra["python_start_s"]), _Bold(f"{r.extra['over_numpy']:.2f}×"),
                 f"{r.extra['own_over_numpy']:.2f}×",
                 ", ".join(r.extra["heavy_loaded"]) or "none"] for r in rs]
    else:
        head = ["case", "plain fwd+bwd", "fused step", "fused / plain",
                "multiply-adds fused / plain", "R̂_approx + ξ_approx separately / plain",
                "plain, per-example gradients", "fused / per-example plain",
                "fused / torch fwd+bwd"]
        body = [[r.case, _fmt_s(r.extra.get("plain_s")), _fmt_s(r.extra.get("fused_s")),
                 _Bold(f"{r.ratio:.2f}×") if r.ratio is not None and not math.isnan(r.ratio)
                 else "–",
                 _fmt(r.extra.get("macs_ratio"), ".2f"),
                 _fmt(r.extra.get("separate_over_plain"), ".2f"),
                 _fmt_s(r.extra.get("plain_per_example_s")),
                 _fmt(r.extra.get("fused_over_per_example"), ".2f"),
                 _fmt(r.extra.get("fused_over_torch"), ".2f")] for r in rs]
    notes = [f"{r.case}: {r.note}" for r in rs if r.note]
    return head, body, notes


def _table(rows: list[Row], bench: str) -> list[str]:
    """One results table as Markdown lines (its notes as a list below it)."""
    head, body, notes = _cells(rows, bench)
    if not head:
        return []
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(f"**{c}**" if isinstance(c, _Bold) else str(c) for c in row)
            + " |" for row in body]
    return out + ([""] + [f"- {n}" for n in notes] if notes else [])


def _rich_table(rows: list[Row], bench: str, title: str) -> Any:
    """The same table as a ``rich`` renderable (None when no row is for it)."""
    from rich.table import Table
    from rich.text import Text

    head, body, notes = _cells(rows, bench)
    if not head:
        return None
    t = Table(title=title, title_justify="left", caption="\n".join(notes) or None,
              caption_justify="left")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 0 else "right", overflow="fold",
                     min_width=24 if i == 0 else None)
    for row in body:
        t.add_row(*[Text(str(c), style="bold" if isinstance(c, _Bold) else "") for c in row])
    return t


def _targets(rows: list[Row]) -> list[tuple[str, str, str]]:
    """``(target, verdict, measured figures)``; the verdict is on every row the target names."""
    out = []
    for bench, which, desc, test, figs in TARGETS:
        rs = [r for r in rows if r.bench == bench and which(r) and r.ratio is not None
              and not math.isnan(r.ratio)]
        if not rs:
            out.append((desc, "not run", ""))
            continue
        measured = figs(rs)
        if "not feeding" in desc:  # the relu row is reported beside the target, not in it
            measured = "tanh " + measured + "".join(
                f"; relu {r.ratio:.2f}×" + (" (below 5×)" if r.ratio < 5 else "")
                for r in rows if r.bench == bench and "relu" in r.case)
        out.append((desc, "met" if all(test(r) for r in rs) else "missed", measured))
    return out


def _machine_lines(info: dict[str, Any]) -> list[str]:
    keys = ["cpu", "simd", "numpy_simd", "cores", "cores_available", "load_average_at_start",
            "blas", "blas_threads", "numpy", "scipy", "torch", "torch_threads", "python",
            "platform", "dropcheck", "commit"]
    return [f"| {k} | {info.get(k)} |" for k in keys if k in info]


#: Section titles of the tables, by table.
TITLES = {
    "enumeration": "1. Exact expectation by enumeration (ratio = baseline time / dropcheck "
                   "time, same masks)",
    "memory": "1b. Peak memory of one exact expectation as the width grows (one example)",
    "explicit": "2. Exact R_approx and R_taylor against torch.func (CPU)",
    "sampled": "3. The fused sampled step (R̂_approx, ξ_approx, gradient) in plain steps",
    "import": "4. Import time (fresh interpreter, median wall time)",
    "parallel": "5. Parallel efficiency: a wide decoder-site enumeration sharded by mask index "
                "(docs/parallel.md)",
}


_METHOD = """\
## How these numbers are taken

- Every row times the dropcheck path and its baseline **in the same process, alternating**
  (the order reversed on every other repeat), after one untimed warm-up each, and reports the
  **median** of the repeats; ratios are of medians.  The machine is shared and its load is
  printed above: compare ratios, not seconds.
- BLAS (OpenBLAS, via numpy) and torch use the same thread count on both sides
  (`--blas-threads`, default 1: on two shared cores a second BLAS thread mostly waits).
- **Enumeration** (benchmark 1): `dc.exact.expected_loss(..., method="auto")` against a
  straightforward batched enumeration (`benchmarks/_baselines.py`: every mask as a row of a
  0/1 matrix, chunks of 2^14 masks, one batched forward, log-softmax, probability-weighted sum).
  Where the baseline would take long it runs on a prefix of its chunks (its cost is linear in
  the number of chunks) and the row says so; `max |diff|` compares the full results where the
  baseline ran in full.  *Yardstick*: the `log` evaluations one dropcheck call performs are
  counted through the public call ("logs performed"; `numpy.log` and the array-API
  namespace's `log` wrapped for one untimed call) and redone by `np.log` on a 64 KiB input into
  a preallocated `out=` buffer, in cache, timed in the same run (median of max(15, 5 × the
  repeats): the loops are short) ("of its logs" = that time /
  dropcheck's time: 1.0 would mean the call costs no more than its logs, ≥ 0.5 is within 2×);
  "of one log per mask" is the same in-cache yardstick with one log per mask.  Both depend on
  the SIMD numpy dispatches to (machine table).  Peak memory is
  the peak of traced allocations (`tracemalloc`; numpy reports its buffers to it).  Table 1b
  sweeps the width for one example: the fast methods hold at most 2^10 low masks, segments of
  2^10 high masks, one chunk and O(log chunks) partial sums, so the peak stops growing once
  those are full (width ≥ 20) however many masks there are.
- **Explicit regularizer** (benchmark 2): `dc.explicit.r_approx` / `dc.explicit.taylor`
  against the same quantities written with `torch.func` (`vmap(jacrev(head))` per site;
  `vmap(hessian(ℓ∘head))`), float64 on both sides; ratio = torch time / dropcheck time.
- **Sampled step** (benchmark 3): `dc.step.sampled_step` (the plain gradient, `R̂_approx`
  with one label per example and `ξ_approx` with one draw, mean over the batch, from one
  trace) in units of one plain forward + backward of the mean loss through the same model
  (dropcheck's `trace`, `loss.grad`, `param_gradient(per_example=False)`); beside it the
  multiply-adds of both (counted from the layer sizes), the separate estimators
  (`dc.explicit.r_approx_sampled` + `dc.implicit.xi_approx`, each with its own trace), the
  plain step with per-example gradients (the yardstick of earlier runs) and torch autograd's
  forward + `.backward()` of the same MLP.
- **Import** (benchmark 4): `python -c "import dropcheck"` against `python -c "import numpy"`,
  fresh interpreters run alternately (median of 3 × `--repeats`), wall time including start-up
  (`python -c pass`, shown); a separate interpreter lists the heavy modules `import dropcheck`
  loaded.
"""


def _markdown(rows: list[Row], info: dict[str, Any], argv: Sequence[str], wall: float) -> str:
    shown = []  # the command, less the output paths
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--json", "--markdown"):
            skip = True
            continue
        if not a.startswith(("--json=", "--markdown=")):
            shown.append(a)
    cmd = "dropcheck bench " + " ".join(shown)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `" + cmd.strip() + "` on "
        + datetime.date.today().isoformat() + f" ({wall:.0f} s).  Regenerate with",
        "",
        "    dropcheck bench --markdown docs/benchmarks.md          # full run, a few minutes",
        "    dropcheck bench --quick --markdown docs/benchmarks.md  # under a minute",
        "",
        "(or `python -m dropcheck.benchmarks …`); `--json PATH` writes every figure.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *_machine_lines(info),
        "",
        "## Targets",
        "",
        "| target | verdict | measured |",
        "|---|---|---|",
        *[f"| {d} | {v} | {f} |" for d, v, f in _targets(rows)],
        "",
        *[f"- *{d}*: {WHY[d]}" for d, v, _ in _targets(rows) if v != "not run"],
        "",
    ]
    for b in TABLES:
        t = _table(rows, b)
        if t:
            lines += ["## " + TITLES[b], "", *t, ""]
    skipped = [r for r in rows if r.bench == "skipped"]
    if skipped:
        lines += ["## Skipped", "", *[f"- {r.note}" for r in skipped], ""]
    lines += [_METHOD]
    return "\n".join(lines)


class _Output:
    """Where ``dropcheck bench`` reports: rich tables and a progress bar on a terminal, plain
    text (the Markdown tables, one line per step) when piped or redirected."""

    def __init__(self, n_benches: int) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        self.rich = self.console.is_terminal
        self.progress: Any = None
        self.task: Any = None
        self.n = n_benches

    def __enter__(self) -> _Output:
        if self.rich:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task("benchmarks", total=self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None

    def line(self, text: str) -> None:
        """A status line (plain text on both outputs)."""
        if self.rich:
            self.console.print(text, markup=False)
        else:
            print(text, flush=True)

    def step(self, text: str) -> None:
        """A benchmark starts: the progress bar's label, or a plain line."""
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        else:
            print(text, flush=True)

    def done(self) -> None:
        """A benchmark ended: advance the bar."""
        if self.progress is not None:
            self.progress.advance(self.task)

    def tables(self, rows: list[Row], benches: Sequence[str]) -> None:
        """The results tables of ``benches``."""
        for tb in benches:
            if self.rich:
                t = _rich_table(rows, tb, TITLES[tb])
                if t is not None:
                    self.console.print(t)
            else:
                print("\n".join(_table(rows, tb)) + "\n", flush=True)

    def targets(self, targets: list[tuple[str, str, str]]) -> None:
        """The targets' verdicts."""
        if not self.rich:
            print("targets:")
            for d, v, f in targets:
                print(f"  {v:8s} {d}: {f}")
            return
        from rich.table import Table
        from rich.text import Text

        t = Table(title="Targets", title_justify="left")
        for h in ("target", "verdict", "measured"):
            t.add_column(h, overflow="fold")
        style = {"met": "green", "missed": "red"}
        for d, v, f in targets:
            t.add_row(Text(d), Text(v, style=style.get(v, "dim")), Text(f))
        self.console.print(t)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; print the tables (and write JSON / Markdown); return 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    only = [s for o in (args.only or []) for s in o.split(",") if s] or list(BENCHES)
    bad = [s for s in only if s not in BENCHES]
    if bad:
        print(f"dropcheck bench: unknown benchmark(s) {bad}; known: {', '.join(BENCHES)}",
              file=sys.stderr)
        return 2
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    repeats = args.repeats or {"smoke": 1, "quick": 3, "full": 5}[mode]
    threads = None
    if args.blas_threads > 0:
        blas_threads(args.blas_threads)
        threads = args.blas_threads
        if {"explicit", "sampled"} & set(only):
            try:
                import torch

                torch.set_num_threads(threads)
            except ImportError:
                pass
    info = machine(blas_threads())
    t0 = time.perf_counter()
    rows: list[Row] = []
    with _Output(len(only)) as out:
        out.line("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
        for b in only:
            mod = __import__(f"dropcheck.benchmarks.bench_{b}", fromlist=["run"])
            why = getattr(mod, "available", lambda: None)()
            if why is not None:
                out.line(why)
                rows.append(Row("skipped", b, float("nan"), None, None, {}, why))
                out.done()
                continue
            out.step(f"running {b} ({mode}, {repeats} repeats)…")
            if b == "enumeration":
                new = mod.run(mode, repeats)
            else:  # calls of milliseconds (or fresh interpreters): more repeats for a stable
                # median on a shared machine
                new = mod.run(mode, repeats * (3 if b in ("sampled", "import") else 1), threads)
            rows += new
            out.tables(new, (b, "memory") if b == "enumeration" else (b,))
            out.done()
        wall = time.perf_counter() - t0
        out.targets(_targets(rows))
        out.line(f"total {wall:.1f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": info, "mode": mode, "repeats": repeats, "wall_s": wall,
                 "rows": [r.to_dict() for r in rows],
                 "targets": [dict(zip(("target", "verdict", "measured"), t, strict=True))
                             for t in _targets(rows)]}, indent=2, default=str))
        if args.markdown:
            from dropcheck.benchmarks.bench_gpu import gpu_section

            page = Path(args.markdown)
            # the GPU section (bench_gpu --docs) is not this run's: keep it at the end
            kept = gpu_section(page.read_text()) if page.exists() else ""
            page.write_text(_markdown(rows, info, argv, wall) + ("\n" + kept if kept else ""))
            out.line(f"wrote {args.markdown}")
    return 0
