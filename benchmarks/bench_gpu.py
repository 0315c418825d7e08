"""The GPU benchmark (issue 16): one process, under 8 minutes on one GPU, markdown + JSON.

    python -m dropcheck.benchmarks.bench_gpu --json PATH --markdown PATH [--smoke]
                                             [--budget-s S] [--tests PATH | --no-tests]
                                             [--docs docs/benchmarks.md]

Three parts, each timed in the same run as its baseline (``_harness.compare``: alternating
repeats after a warm-up, medians), with the device synchronised inside every timed call (GPU
work is asynchronous: without it the clock would stop at the kernel launch):

1. ``pytest -m gpu`` on the repository's tests (a subprocess; its summary line is recorded);
2. exact enumeration, ``expected_loss`` with the ``factorized`` method at a decoder site of
   width ``d`` (``n·2^d`` masks × examples), on the device namespace against numpy on the host:
   masks/s of both and their agreement;
3. one truncated-BPTT window of an LSTM language model at AWD-LSTM size (3 layers
   1150/1150/400, embedding 400, vocabulary 10,000, bptt 70, batch 80, float32): seconds per
   1,000 tokens of the plain forward+backward, ``R̂_approx`` (one label sample) and
   ``ξ_approx`` (one draw) — dropcheck on the device namespace against the same three written
   in PyTorch (plain autograd, ``nn.LSTM``) on the same device (``bench_lstm``); goal: within
   1.2× of PyTorch.

The device namespace is cupy on a GPU.  ``--smoke`` runs the same code on the CPU with torch CPU
tensors as the device namespace (numpy vs torch-CPU for enumeration, dropcheck on torch tensors
vs PyTorch on the CPU for the LSTM), at tiny sizes: it is what CI runs
(``tests/test_bench_gpu.py``), and its figures are CPU figures, labelled so.  Parts that would
not fit in what is left of ``--budget-s`` are skipped with the reason written in the report;
no figure is ever estimated.  ``--docs`` rewrites the GPU section at the end of the results page
(from :data:`SECTION_MARK` on; ``dropcheck bench`` keeps it), saying where the figures come from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dropcheck.benchmarks import bench_lstm as bl
from dropcheck.benchmarks._harness import compare, machine

import dropcheck as dc
from dropcheck.backend import to_numpy

#: Decoder-site widths of the enumeration part, and examples per call.
WIDTHS = {"gpu": (24, 26, 28, 30), "smoke": (8, 10, 12)}
N_EXAMPLES = 4
#: LSTM size per mode (keys of ``bench_lstm.SIZES``).
LSTM_SIZE = {"gpu": "awd", "smoke": "smoke"}
#: Goal for dropcheck / PyTorch time on the LSTM paths.
GOAL = 1.2
#: numpy is not timed at a width whose predicted time (4× the previous width's) exceeds this.
HOST_CAP_S = 40.0


@dataclass
class Device:
    """The namespace dropcheck runs on, how to put arrays there, and how to wait for it."""

    name: str  # "cupy" or "torch-cpu"
    label: str  # what the report calls it
    conv: Callable[[Any], Any]  # numpy -> device array
    sync: Callable[[], None]  # block until queued work is done
    torch_device: str  # where the PyTorch baseline runs
    info: dict[str, Any]


def _cupy_device() -> Device:
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {"gpu": name, "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "cupy": cp.__version__, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["torch_gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None

    def sync() -> None:
        cp.cuda.Device().synchronize()
        if info.get("torch_gpu"):
            import torch

            torch.cuda.synchronize()

    return Device("cupy", f"cupy {cp.__version__} on {name}", cp.asarray, sync, "cuda", info)


def _torch_cpu_device() -> Device:
    import torch

    # one thread, as numpy's BLAS in the harness: on a shared 2-core machine a second thread
    # mostly waits, and thread contention made the smoke medians jump by 100×
    torch.set_num_threads(1)
    info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    return Device("torch-cpu", f"torch {torch.__version__} CPU tensors (smoke: no GPU)",
                  lambda a: torch.from_numpy(np.array(a)), lambda: None, "cpu", info)


def _synced(fn: Callable[[], Any], dev: Device) -> Callable[[], Any]:
    def run() -> Any:
        out = fn()
        dev.sync()
        return out

    return run


def _without_cudnn(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        import torch

        with torch.backends.cudnn.flags(enabled=False):
            return fn()

    return run


def _guarded(part: Callable[[], Any], empty: Any) -> Any:
    """Run one part; an exception becomes an ``error`` entry, so the other parts still report
    (a device run is one shot)."""
    try:
        return part()
    except Exception as e:  # noqa: BLE001 - recorded in the report, not hidden
        err = f"{type(e).__name__}: {e}"
        print(f"bench_gpu: part failed: {err}", file=sys.stderr)
        return empty | {"error": err} if isinstance(empty, dict) else [{"error": err}]


class _Clock:
    """What is left of the run's time budget."""

    def __init__(self, budget_s: float) -> None:
        self.t0, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


# ----------------------------------------------------------------------- 1. pytest -m gpu
def _default_tests() -> Path | None:
    tests = Path(dc.__file__).resolve().parents[1] / "tests"  # the repository's, when run there
    return tests if tests.is_dir() else None


def run_gpu_tests(target: Path | None, timeout_s: float) -> dict[str, Any]:
    """``pytest -q -m gpu target`` in a subprocess: command, exit code, summary, seconds."""
    if target is None:
        return {"ran": False, "note": "the tests folder was not found (installed package)"}
    rel = os.path.relpath(target) if not str(target).startswith("..") else str(target)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs",
           rel]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ran": True, "command": " ".join(cmd[1:]), "returncode": None,
                "summary": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|skipped|failed|"
                                                               r"deselected|error)", ln)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed|deselected|errors?)",
                                               summary)}
    skips = [ln for ln in lines if ln.startswith("SKIPPED")]
    return {"ran": True, "command": "python " + " ".join(cmd[1:]), "returncode": res.returncode,
            "summary": summary.strip("= "), "counts": counts, "skip_reasons": skips[:10],
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------- 2. enumeration
def _decoder_case(d: int, seed: int = 0) -> tuple[Any, Any, Any]:
    net = dc.MLP.random([8, d, 10], activation="tanh", sites=("h1",), seed=seed)
    rng = np.random.default_rng(seed + 1)
    return net, rng.standard_normal((N_EXAMPLES, 8)), rng.integers(0, 10, N_EXAMPLES)


def run_enumeration(dev: Device, widths: Sequence[int], clock: _Clock,
                    repeats: int = 3) -> list[dict[str, Any]]:
    """masks/s of ``expected_loss(method="factorized")`` at a decoder site, device vs numpy."""
    rows: list[dict[str, Any]] = []
    host_s: float | None = None
    dev_s: float | None = None
    for d in widths:
        net, x, y = _decoder_case(d)
        masks = N_EXAMPLES * 2**d
        row: dict[str, Any] = {"width": d, "examples": N_EXAMPLES, "masks": masks}
        # each side's predicted time from the previous width (cost ∝ 2^d): 4× per +2
        pred_dev = None if dev_s is None else dev_s * 2 ** (d - rows[-1]["width"])
        if pred_dev is not None and pred_dev * (repeats + 1) > clock.left() - 60:
            row["note"] = f"skipped: {pred_dev:.0f} s predicted per call, budget left " \
                          f"{clock.left():.0f} s"
            rows.append(row)
            break
        netd = net.with_params({k: dev.conv(v) for k, v in net.params.items()})
        xd, yd = dev.conv(x), dev.conv(y)

        def on_dev(netd: Any = netd, xd: Any = xd, yd: Any = yd) -> Any:
            return dc.exact.expected_loss(netd, xd, yd, 0.3, method="factorized",
                                          max_masks=2**31)

        def on_host(net: Any = net, x: Any = x, y: Any = y) -> Any:
            return dc.exact.expected_loss(net, x, y, 0.3, method="factorized", max_masks=2**31)

        fd = _synced(on_dev, dev)
        dev_s = compare({"dev": fd}, repeats)["dev"]
        row |= {"device_s": dev_s, "device_masks_per_s": masks / dev_s}
        pred_host = None if host_s is None else host_s * 2 ** (d - rows[-1]["width"])
        if pred_host is None or pred_host <= min(HOST_CAP_S, clock.left() / 4):
            few = pred_host is not None and pred_host > 2.0  # long calls: no warm-up, 1 repeat
            host_s = compare({"host": on_host}, 1 if few else repeats, warmup=0 if few else 1)[
                "host"]
            row |= {"numpy_s": host_s, "numpy_masks_per_s": masks / host_s,
                    "speedup": host_s / dev_s}
            a, b = to_numpy(fd()), np.asarray(on_host())
            row["max_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(b)))
        else:
            row["numpy_note"] = (f"numpy not timed: {pred_host:.0f} s predicted (> cap "
                                 f"{min(HOST_CAP_S, clock.left() / 4):.0f} s)")
            host_s = pred_host  # keeps the next width's prediction (never reported)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------- 3. LSTM
def run_lstm(dev: Device, size: str, clock: _Clock, repeats: int = 3,
             judge: bool = True) -> dict[str, Any]:
    """Seconds per 1,000 tokens of dropcheck's three paths and PyTorch's, on the same device.

    ``judge``: give the verdict on the goal (the GPU run at AWD size; not the smoke run).
    """
    model, x, y = bl._case(size)  # float32, numpy
    vocab, emb, hidden, tie, T, n = bl.SIZES[size]
    case = {"size": size, "vocab": vocab, "emb": emb, "hidden": list(hidden), "tied": tie,
            "bptt": T, "batch": n, "tokens": n * T, "dtype": "float32",
            "n_params": model.n_params}
    if clock.left() < 90:
        return {"case": case, "note": f"skipped: {clock.left():.0f} s of the budget left"}
    md = model.with_params({k: dev.conv(v) for k, v in model.params.items()})
    fns = {k: _synced(f, dev) for k, f in bl.dropcheck_fns(md, dev.conv(x), dev.conv(y)).items()}
    try:
        tf = bl.torch_fns(model, x, y, device=dev.torch_device)
        if dev.torch_device != "cpu":
            # cuDNN's LSTM has no double backward (torch raises); ξ needs ∇_W of a gradient, so
            # that baseline runs torch's native LSTM kernels, which a user would get too
            tf["torch_xi"] = _without_cudnn(tf["torch_xi"])
            case["torch_xi_note"] = "PyTorch ξ_approx without cuDNN (no double backward there)"
        fns |= {k: _synced(f, dev) for k, f in tf.items()}
    except ImportError:
        case["note"] = "torch is not installed: no baseline"
    t = compare(fns, repeats)
    if "torch_plain" in fns:
        # the timed paths compute the same thing: the embedding's loss gradient of both
        # (float32: relative differences of ~1e-6·depth are rounding; a wrong path is O(1))
        ge = fns["torch_plain"]().detach().cpu().numpy().ravel()
        g = np.ravel(to_numpy(fns["plain"]()))[: ge.size]
        case["grad_E_rel_diff"] = float(np.linalg.norm(g - ge) / np.linalg.norm(ge))
    per_k = {k: 1000.0 * s / (n * T) for k, s in t.items()}
    rows = []
    for path, what in (("plain", "forward + backward (parameter gradient)"),
                       ("r_hat", "R̂_approx (one label sample)"),
                       ("xi", "ξ_approx (one draw)")):
        r = {"path": path, "what": what, "dropcheck_s_per_1k_tokens": per_k[path],
             "dropcheck_over_plain": t[path] / t["plain"]}
        if f"torch_{path}" in per_k:
            ratio = t[path] / t[f"torch_{path}"]
            r |= {"torch_s_per_1k_tokens": per_k[f"torch_{path}"], "dropcheck_over_torch": ratio}
            if judge:
                r["goal_met"] = ratio <= GOAL
        rows.append(r)
    return {"case": case, "rows": rows, "repeats": repeats}


# ----------------------------------------------------------------------- report
def _fmt(v: Any, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


def markdown(rep: dict[str, Any]) -> str:
    """The report as Markdown (title names the device and the date)."""
    smoke = rep["mode"] == "smoke"
    dev = rep["device"]
    out = [f"## GPU benchmark — {'SMOKE run on the CPU (no GPU figure)' if smoke else dev}",
           "",
           f"{rep['date']}; device namespace: {dev}; host: {rep['machine'].get('cpu', '?')} "
           f"({rep['machine'].get('cores_available', '?')} cores); budget {rep['budget_s']:.0f} s,"
           f" took {rep['seconds']:.0f} s.",
           ""]
    if smoke:
        out += ["*Smoke mode: numpy vs torch CPU tensors (torch on one thread) at tiny sizes. "
                "These are CPU figures that only show the benchmark runs end to end; they say "
                "nothing about a GPU.*", ""]
    t = rep.get("gpu_tests", {})
    out += ["### `pytest -m gpu`", ""]
    out += ([f"`{t['command']}` → {t['summary']} (exit {t['returncode']}, "
             f"{t['seconds']:.0f} s)"] if t.get("ran") else [f"not run: {t.get('note', '')}"])
    out += ["", "### Exact enumeration (factorized, decoder site), masks × examples per second",
            "",
            f"| width | masks | {rep['device_name']} masks/s | numpy masks/s | speed-up | "
            "max rel diff |", "|---|---|---|---|---|---|"]
    for r in rep["enumeration"]:
        if "error" in r:
            out.append(f"| – | – | **ERROR** {r['error']} | | | |")
            continue
        if "device_s" not in r:
            out.append(f"| {r['width']} | {r['masks']:.3g} | {r.get('note', '')} | | | |")
            continue
        out.append(f"| {r['width']} | {r['masks']:.3g} | {r['device_masks_per_s']:.3g} | "
                   f"{_fmt(r.get('numpy_masks_per_s'))} | "
                   f"{_fmt(r.get('speedup'), '.3g')}{'×' if 'speedup' in r else ''} | "
                   f"{_fmt(r.get('max_rel_diff'), '.1e')} |")
    notes = [f"- width {r['width']}: {r['numpy_note']}" for r in rep["enumeration"]
             if "numpy_note" in r]
    out += (["", *notes] if notes else [])
    ls = rep["lstm"]
    c = ls["case"]
    if "error" in ls:
        return "\n".join([*out, "", f"### LSTM LM ({c['size']})", "",
                           f"**ERROR** {ls['error']}"]) + "\n"
    out += ["", f"### LSTM LM, one window: vocab {c['vocab']}, emb {c['emb']}, hidden "
            f"{c['hidden']}, bptt {c['bptt']}, batch {c['batch']}, {c['dtype']} "
            f"({c['n_params']:,} parameters)", ""]
    if "grad_E_rel_diff" in c:
        out += [f"The timed paths agree: relative difference of the embedding's loss gradient, "
                f"dropcheck vs PyTorch, {c['grad_E_rel_diff']:.1e} (float32).", ""]
    if "torch_xi_note" in c:
        out += [c["torch_xi_note"] + ".", ""]
    if "rows" not in ls:
        out.append(ls.get("note", ""))
    else:
        out += [f"| path | dropcheck on {rep['device_name']} s / 1k tokens | PyTorch "
                f"({rep['torch_device']}) s / 1k tokens | dropcheck / PyTorch | goal ≤ {GOAL}× |",
                "|---|---|---|---|---|"]
        for r in ls["rows"]:
            goal = ("no verdict (smoke)" if smoke else "–") if "goal_met" not in r else (
                "met" if r["goal_met"] else "**not met**")
            out.append(f"| {r['what']} | {r['dropcheck_s_per_1k_tokens']:.3g} | "
                       f"{_fmt(r.get('torch_s_per_1k_tokens'))} | "
                       f"{_fmt(r.get('dropcheck_over_torch'), '.2f')} | {goal} |")
    return "\n".join(out) + "\n"


#: The GPU section of the results page (docs/benchmarks.md) starts at this line and runs to the
#: end of the page; ``--docs`` rewrites it, ``dropcheck bench`` keeps it (:func:`gpu_section`).
SECTION_MARK = ("<!-- GPU section: written by python -m dropcheck.benchmarks.bench_gpu --docs; "
                "dropcheck bench keeps it -->")

COMMAND = "python -m dropcheck.benchmarks.bench_gpu --json gpu.json --markdown gpu.md"


def gpu_section(text: str) -> str:
    """The GPU section of a results page's ``text`` (from :data:`SECTION_MARK` on), or ``""``."""
    i = text.find(SECTION_MARK)
    return "" if i < 0 else text[i:]


def docs_section(rep: dict[str, Any]) -> str:
    """The section for the results page: what was measured where, and the tables."""
    if rep["mode"] == "smoke":
        status = (
            "**The GPU run is pending a lent device: no GPU figure has been measured** (no GPU "
            "was lent to the session that wrote this section). "
            f"The tables below are the `--smoke` run of {rep['date']} on the CPU "
            f"({rep['machine'].get('cpu', '?')}): numpy against torch CPU tensors at tiny sizes, "
            "CPU figures that show the benchmark runs end to end, not GPU figures. On a "
            "machine with a GPU (setup and the carried wheels: `docs/gpu.md`), run")
    else:
        status = f"Measured on **{rep['device']}** on {rep['date']} with"
    body = markdown(rep).replace("\n### ", "\n#### ").replace("## GPU benchmark — ",
                                                               "### ", 1)
    return "\n".join([SECTION_MARK, "## GPU", "", status, "",
                      f"    {COMMAND} --docs docs/benchmarks.md", "", body])


def write_docs(page: Path, rep: dict[str, Any]) -> None:
    """Replace the GPU section of ``page`` (append one if it has none)."""
    text = page.read_text() if page.exists() else ""
    i = text.find(SECTION_MARK)
    head = (text if i < 0 else text[:i]).rstrip("\n")
    page.write_text((head + "\n\n" if head else "") + docs_section(rep))


def run(smoke: bool, budget_s: float, tests: Path | None, run_tests: bool) -> dict[str, Any]:
    """All three parts; returns the JSON-ready report."""
    clock = _Clock(budget_s)
    mode = "smoke" if smoke else "gpu"
    dev = _torch_cpu_device() if smoke else _cupy_device()
    rep: dict[str, Any] = {
        "mode": mode, "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "device": dev.label, "device_name": dev.name, "device_info": dev.info,
        "torch_device": dev.torch_device, "machine": machine(None), "budget_s": budget_s,
    }
    rep["gpu_tests"] = (run_gpu_tests(tests, max(30.0, min(180.0, clock.left() / 3)))
                        if run_tests else {"ran": False, "note": "--no-tests"})
    # smoke calls take milliseconds on a shared CPU: more repeats for a stable median
    reps = 7 if smoke else 3
    rep["enumeration"] = _guarded(lambda: run_enumeration(dev, WIDTHS[mode], clock, reps), [])
    rep["lstm"] = _guarded(lambda: run_lstm(dev, LSTM_SIZE[mode], clock, reps, judge=not smoke),
                           {"case": {"size": LSTM_SIZE[mode]}})
    rep["seconds"] = budget_s - clock.left()
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (module doc); returns the exit code (1 if the gpu tests failed)."""
    ap = argparse.ArgumentParser(prog="python -m dropcheck.benchmarks.bench_gpu",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True, help="write the report as JSON here")
    ap.add_argument("--markdown", type=Path, required=True, help="write the tables here")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU only: numpy vs torch CPU tensors, tiny sizes (CI)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="stop starting new parts when this is spent (default 450 s)")
    ap.add_argument("--docs", type=Path, default=None,
                    help="also rewrite the GPU section of this results page "
                         "(docs/benchmarks.md)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--tests", type=Path, default=None,
                   help="tests to run with -m gpu (default: the repository's tests/)")
    g.add_argument("--no-tests", action="store_true", help="skip the pytest -m gpu part")
    a = ap.parse_args(argv)
    if not a.smoke:
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no cupy, or no CUDA device or driver
            print(f"no usable GPU ({type(e).__name__}: {e}); use --smoke on a CPU machine",
                  file=sys.stderr)
            return 2
    rep = run(a.smoke, a.budget_s, a.tests or _default_tests(), not a.no_tests)
    a.json.write_text(json.dumps(rep, indent=2, default=str) + "\n")
    md = markdown(rep)
    a.markdown.write_text(md)
    if a.docs is not None:
        write_docs(a.docs, rep)
    print(md)
    t = rep["gpu_tests"]
    return 1 if t.get("ran") and t.get("returncode") not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
