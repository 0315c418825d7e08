"""Benchmark 2: exact ``R_approx`` (4.4) and ``R_taylor`` (4.2) against ``torch.func`` on CPU.

An MLP ``[32, w, w, 10]`` (tanh, sites ``h1, h2``), a batch of examples, float64 on both sides.
dropcheck: ``dc.explicit.r_approx`` / ``dc.explicit.taylor`` (hand-derived batched sweeps on the
site protocol).  Baseline: the same quantities written with ``torch.func`` the way a user would
(``vmap(jacrev(head))`` per site for ``R_approx``; ``vmap(hessian(ℓ∘head))`` for ``R_taylor``),
torch limited to the same number of threads as numpy's BLAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dropcheck.benchmarks import _baselines as B
from dropcheck.benchmarks._harness import Row, compare

import dropcheck as dc


def available() -> str | None:
    """None when the benchmark can run, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install torch==2.13.0): benchmark 2 skipped"
    try:
        from dropcheck import explicit
    except ImportError:
        return "dropcheck.explicit is not available yet: benchmark 2 skipped"
    missing = [f for f in ("r_approx", "taylor") if not hasattr(explicit, f)]
    if missing:
        return f"dropcheck.explicit lacks {missing}: benchmark 2 skipped"
    return None


def _setup(width: int, n: int, seed: int = 0) -> tuple[Any, ...]:
    import torch

    sizes = [32, width, width, 10] if width > 16 else [5, width, width, 3]
    net = dc.MLP.random(sizes, activation="tanh", sites=("h1", "h2"), seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    Ws, bs = B.torch_mlp_params([net.params[f"W{i}"] for i in (1, 2, 3)],
                                [net.params[f"b{i}"] for i in (1, 2, 3)])
    return net, x, y, Ws, bs, torch.from_numpy(x), torch.from_numpy(y)


def _rows_for(width: int, q: float, repeats: int, n: int = 32) -> list[Row]:
    import torch

    from dropcheck import explicit

    net, x, y, Ws, bs, xt, yt = _setup(width, n)
    cases = {
        "R_approx": (lambda: explicit.r_approx(net, x, y),
                     lambda: B.torch_r_approx(Ws, bs, "tanh", (1, 2), xt)),
        "R_taylor": (lambda: explicit.taylor(net, x, y, q),
                     lambda: B.torch_r_taylor(Ws, bs, "tanh", (1, 2), xt, yt, q)),
    }
    rows = []
    for name, (ours, base) in cases.items():
        with torch.no_grad():
            t = compare({"dropcheck": ours, "baseline": base}, repeats)
        diff = float(np.max(np.abs(np.asarray(ours()) - base().detach().numpy())))
        rows.append(Row(
            "explicit", f"exact {name}, MLP [{net.input_dim}, {width}, {width}, "
            f"{net.n_classes}], n = {n}",
            t["dropcheck"], t["baseline"], t["baseline"] / t["dropcheck"],
            {"max_abs_diff": diff, "torch_threads": torch.get_num_threads()},
        ))
    return rows


def run(mode: str, repeats: int, threads: int | None) -> list[Row]:
    """Rows of benchmark 2: widths 64, 128, 256 (quick: 64, 128; smoke: 6)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if mode == "smoke":
        return _rows_for(6, 0.5, repeats, n=3)
    widths = (64, 128) if mode == "quick" else (64, 128, 256)
    return [r for w in widths for r in _rows_for(w, 0.5, repeats)]
