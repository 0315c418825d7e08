"""A catalogue of dropout bugs, in numpy and in PyTorch, for ``check_dropout``'s tests.

Each bug is modelled on a real bug class and comes with the phrase of ``report.diagnosis`` that
must name it.  ``numpy_cases(seed)`` / ``torch_cases(seed)`` return fresh layers (their random
generators seeded by ``seed``), so every test run is reproducible.  torch is imported only by
``torch_cases`` and the torch helpers.

Run as a script to measure the false-alarm rate of ``check_dropout`` on correct layers::

    python -m tests.dropout_bugs --seeds 200 [--alpha 1e-6] [--no-retest]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEQ = (16, 16, 64)  # (batch, time, features) for the bugs that need a time axis


@dataclass(frozen=True)
class Case:
    """A layer to check: ``check_dropout(fn, **kwargs)`` must fail and name ``diagnosis``.

    For a correct layer ``diagnosis`` is ``None`` and the check must pass.
    """

    name: str
    fn: Callable[..., Any]
    diagnosis: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)


# ----- numpy -------------------------------------------------------------------------------

def _np_layers(seed: int) -> dict[str, Callable[..., Any]]:
    """Numpy layers ``f(x, q)`` sharing one seeded generator: the reference and the bugs."""
    rng = np.random.default_rng(seed)

    def reference(x, q):  # inverted dropout, done right
        return x * (rng.random(x.shape) >= q) / (1 - q)

    def unscaled(x, q):  # classic (non-inverted) dropout in training
        return x * (rng.random(x.shape) >= q)

    def inv_q(x, q):  # divides by the drop probability
        return x * (rng.random(x.shape) >= q) / q

    def twice(x, q):  # layer scales, and so does the wrapper around it
        return reference(x, q) / (1 - q)

    def swapped(x, q):  # q read as a keep probability (TF1 keep_prob handed a rate)
        return x * (rng.random(x.shape) < q) / q

    def shared_batch(x, q):  # mask drawn for one example and broadcast over the batch
        return x * (rng.random((1, *x.shape[1:])) >= q) / (1 - q)

    def constant_seed(x, q):  # generator re-created with a fixed seed on every call
        return x * (np.random.default_rng(0).random(x.shape) >= q) / (1 - q)

    def shared_time(x, q):  # (B, T, F): one mask per sequence where each step needs its own
        return x * (rng.random((x.shape[0], 1, x.shape[2])) >= q) / (1 - q)

    def per_feature(x, q):  # mask over the feature axis only, broadcast everywhere else
        return x * (rng.random(x.shape[-1]) >= q) / (1 - q)

    def byte_source(x, q):  # 8-bit uniform (can be exactly 0), dropped when u <= q
        u = rng.integers(0, 256, size=x.shape) / 256
        return x * (u > q) / (1 - q)

    def rounded_source(x, q):  # uniform rounded to 10 levels: P(u < q) != q
        u = np.round(rng.random(x.shape) * 10) / 10
        return x * (u >= q) / (1 - q)

    return {k: v for k, v in locals().items() if callable(v)}


def _np_vjp(rng: np.random.Generator, same_mask: bool) -> Callable[..., Any]:
    """A numpy ``vjp_fn(x, g, q)``; with ``same_mask=False`` backward draws a fresh mask."""
    def vjp(x, g, q):
        scale = (rng.random(x.shape) >= q) / (1 - q)
        back = scale if same_mask else (rng.random(x.shape) >= q) / (1 - q)
        return x * scale, g * back

    return vjp


def numpy_cases(seed: int = 0) -> list[Case]:
    """The numpy bug catalogue (each case a fresh layer seeded by ``seed``)."""
    f = _np_layers(seed)
    rng = np.random.default_rng([seed, 7])

    def identity(x, q):
        return x

    return [
        Case("no scaling", f["unscaled"], "no inverted scaling (kept values unscaled)"),
        Case("scaled by 1/q", f["inv_q"], "kept values scaled by 1/q instead of 1/(1-q)"),
        Case("scaled twice", f["twice"], "scaled twice"),
        Case("scaling at eval", f["unscaled"], "scaling applied at eval instead of train",
             {"eval_fn": lambda x, q: x * (1 - q)}),
        Case("keep/drop swapped", f["swapped"], "q is the keep probability"),
        Case("mask shared across batch", f["shared_batch"], "mask shared across the batch"),
        Case("constant seed", f["constant_seed"], "same mask on every call"),
        Case("mask shared across time", f["shared_time"], "mask shared across time steps",
             {"shape": SEQ}),
        Case("dropout on in eval", f["reference"], "dropout active in eval mode",
             {"eval_fn": f["reference"]}),
        Case("backward mask differs", f["reference"], "backward uses a different mask",
             {"vjp_fn": _np_vjp(rng, same_mask=False), "eval_fn": identity}),
        Case("q = 0 still drops", f["byte_source"], "q = 0 still drops"),
        Case("biased random source", f["rounded_source"], "random source biased / quantized"),
        Case("per-feature mask", f["per_feature"], "per-feature instead of per-element mask",
             {"shape": SEQ}),
    ]


def numpy_correct(seed: int = 0) -> list[Case]:
    """Correct numpy layers: element-wise, with eval and vjp, and variational (shared time)."""
    rng = np.random.default_rng([seed, 11])
    f = _np_layers(seed)

    def variational(x, q):  # (B, T, F) with one mask per sequence, declared below
        return x * (rng.random((x.shape[0], 1, x.shape[2])) >= q) / (1 - q)

    return [
        Case("numpy inverted dropout", f["reference"], None,
             {"eval_fn": lambda x, q: x, "vjp_fn": _np_vjp(rng, same_mask=True)}),
        Case("numpy variational dropout", variational, None,
             {"shape": SEQ, "shared_axes": (1,)}),
    ]


# ----- PyTorch -----------------------------------------------------------------------------

def torch_vjp(layer: Callable[..., Any]) -> Callable[..., Any]:
    """``vjp_fn(x, g, q)`` for a torch ``layer(x, q)``, by ``torch.autograd.grad``."""
    import torch

    def vjp(x, g, q):
        x = x.detach().requires_grad_(True)
        y = layer(x, q)
        (dx,) = torch.autograd.grad(y, x, g)
        return y, dx

    return vjp


def _torch_recomputed_mask(gen: Any) -> Callable[..., Any]:
    """Dropout whose backward redraws the mask (recomputation without restoring RNG state)."""
    import torch

    class Recomputed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, q):
            ctx.q = q
            return x * (torch.rand(x.shape, generator=gen, dtype=x.dtype) >= q) / (1 - q)

        @staticmethod
        def backward(ctx, g):
            mask = torch.rand(g.shape, generator=gen, dtype=g.dtype) >= ctx.q
            return g * mask / (1 - ctx.q), None

    return Recomputed.apply


def torch_cases(seed: int = 0) -> list[Case]:
    """The PyTorch bug catalogue (CPU), layers taking and returning tensors."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)

    def rand(shape, dtype):
        return torch.rand(shape, generator=gen, dtype=dtype)

    def mask(x, q, shape=None):
        return rand(x.shape if shape is None else shape, x.dtype) >= q

    layers = {
        "unscaled": lambda x, q: x * mask(x, q),
        "inv_q": lambda x, q: x * mask(x, q) / q,
        "twice": lambda x, q: F.dropout(x, q) / (1 - q),
        "swapped": lambda x, q: x * (rand(x.shape, x.dtype) < q) / q,
        "shared_batch": lambda x, q: x * mask(x, q, (1, *x.shape[1:])) / (1 - q),
        "constant_seed": lambda x, q: x * (torch.rand(
            x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype) >= q) / (1 - q),
        "shared_time": lambda x, q: x * mask(x, q, (x.shape[0], 1, x.shape[2])) / (1 - q),
        "per_feature": lambda x, q: x * mask(x, q, x.shape[-1:]) / (1 - q),
        # bfloat16 uniforms live on a grid of 2**-8 and include 0
        "byte_source": lambda x, q: x * (rand(x.shape, torch.bfloat16) > q) / (1 - q),
        "rounded_source": lambda x, q: x * (
            (rand(x.shape, x.dtype) * 10 + 0.5).long() / 10 >= q) / (1 - q),
    }
    tt = {"to_framework": torch.from_numpy}
    return [
        Case("no scaling", layers["unscaled"], "no inverted scaling (kept values unscaled)", tt),
        Case("scaled by 1/q", layers["inv_q"], "kept values scaled by 1/q instead of 1/(1-q)",
             tt),
        Case("scaled twice", layers["twice"], "scaled twice", tt),
        Case("scaling at eval", layers["unscaled"], "scaling applied at eval instead of train",
             {**tt, "eval_fn": lambda x, q: x * (1 - q)}),
        Case("keep/drop swapped", layers["swapped"], "q is the keep probability", tt),
        Case("mask shared across batch", layers["shared_batch"], "mask shared across the batch",
             tt),
        Case("constant seed", layers["constant_seed"], "same mask on every call", tt),
        Case("mask shared across time", layers["shared_time"], "mask shared across time steps",
             {**tt, "shape": SEQ}),
        # F.dropout's training flag defaults to True: the classic forgotten self.training
        Case("dropout on in eval", lambda x, q: F.dropout(x, q), "dropout active in eval mode",
             {**tt, "eval_fn": lambda x, q: F.dropout(x, q)}),
        Case("backward mask differs", lambda x, q: F.dropout(x, q),
             "backward uses a different mask",
             {**tt, "vjp_fn": torch_vjp(_torch_recomputed_mask(gen))}),
        Case("q = 0 still drops", layers["byte_source"], "q = 0 still drops", tt),
        Case("biased random source", layers["rounded_source"], "random source biased / quantized",
             tt),
        Case("per-feature mask", layers["per_feature"], "per-feature instead of per-element mask",
             {**tt, "shape": SEQ}),
    ]


def torch_correct(seed: int = 0) -> list[Case]:
    """Correct PyTorch layers: functional, module factory, fixed-rate modules, spatial."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    tt = {"to_framework": torch.from_numpy}
    return [
        Case("F.dropout", F.dropout, None,
             {**tt, "eval_fn": lambda x, q: F.dropout(x, q, training=False),
              "vjp_fn": torch_vjp(F.dropout)}),
        Case("nn.Dropout (factory)", torch.nn.Dropout, None,
             {**tt, "eval_fn": lambda q: torch.nn.Dropout(q).eval()}),
        Case("nn.Dropout(0.3) train", torch.nn.Dropout(0.3), None, {**tt, "q": 0.3}),
        Case("nn.Dropout(0.3) eval", torch.nn.Dropout(0.3).eval(), None,
             {**tt, "q": 0.3, "train": False}),
        Case("F.dropout2d", F.dropout2d, None,
             {**tt, "shape": (16, 32, 4, 4), "shared_axes": (2, 3), "dtype": "float32"}),
    ]


# ----- for the CLI tests -------------------------------------------------------------------

_CLI_RNG = np.random.default_rng(2024)


def cli_reference(x, q):
    """A correct numpy inverted dropout for ``dropcheck check tests.dropout_bugs:...``."""
    return x * (_CLI_RNG.random(x.shape) >= q) / (1 - q)


def cli_unscaled(x, q):
    """An unscaled numpy dropout for the CLI tests."""
    return x * (_CLI_RNG.random(x.shape) >= q)


# ----- false-alarm measurement -------------------------------------------------------------

def measure_false_alarms(seeds: int, alpha: float, retest: bool, torch_too: bool) -> None:
    """Run ``check_dropout`` on every correct layer for ``seeds`` seeds; print failure counts."""
    from dropcheck.checks import check_dropout

    makers = [numpy_correct] + ([torch_correct] if torch_too else [])
    counts: dict[str, list[int]] = {}
    pvals: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for seed in range(seeds):
        for make in makers:
            for case in make(seed):
                kwargs = {"seed": seed, "alpha": alpha, "retest": retest, **case.kwargs}
                report = check_dropout(case.fn, **kwargs)
                for r in report.rows:
                    if r.is_test:
                        pvals.setdefault(r.name.split(" (")[0], []).append(r.p_value)
                c = counts.setdefault(case.name, [0, 0])
                c[0] += not report.passed
                c[1] += 1
                if not report.passed:
                    print(f"seed {seed}: {case.name} FAILED\n{report}")
    total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    for name, (f, n) in counts.items():
        print(f"{name:28s} {f:4d} false alarms in {n} runs")
    print(f"all: {total[0]} false alarms in {total[1]} runs (alpha = {alpha:g}, "
          f"retest = {retest}); {time.perf_counter() - t0:.1f} s")
    for name, p in [*pvals.items(), ("all tests", sum(pvals.values(), []))]:
        p = np.asarray(p)
        print(f"{name:36s} {p.size:6d} p-values; fraction <= 0.01: {np.mean(p <= 0.01):.4f}, "
              f"<= 0.05: {np.mean(p <= 0.05):.4f}, <= 0.5: {np.mean(p <= 0.5):.4f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=measure_false_alarms.__doc__)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--no-retest", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    measure_false_alarms(a.seeds, a.alpha, not a.no_retest, not a.no_torch)
