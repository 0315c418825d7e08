"""E1's width law at finite q, with exact ``R_drop`` at decoder-site widths up to 32.

    python -m dropcheck.benchmarks.e1_width_law [--widths 8,12,…,32] [--nets 8] [--n 4]
        [--q 0.3] [--site h2|h1] [-j 2 | --scheduler ADDRESS] [--json PATH]

Claim E1 (paper-notes) says Taylor's error ``|R_taylor − R_drop| / R_drop`` shrinks with the
width; verify checks that only in the ``q → 0`` limit.  Here, at ``q = 0.3``: random tanh MLPs
``[5, d, d, 4]`` (E1's family: ``verification.explicit._net``, weight scale 1), dropout at one
site — ``h2``, which feeds the decoder (the factorized kernel), or ``h1``, one layer deeper,
the site of E1's own finite-``q`` sweep (the outer-sum kernel, ~50× the work per mask) — ``n``
examples per net; ``R_drop`` exactly by enumeration (``2^d`` masks per example, sharded by mask
index on the executor: :func:`dropcheck.parallel.split_site_loss`), ``R_taylor`` by (4.2).
Per net the pooled error ``Σ|R_taylor − R_drop| / Σ|R_drop|`` (E1's ``_pooled``); per width
the median over nets; the slope of ``log median`` against ``log d`` by least squares, with its
uncertainty by a bootstrap over nets (2000 resamples, the nets resampled together across
widths: the spread of the slope a new draw of nets would give).  Results are written after
every width (``--json``), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import dropcheck as dc


def _slope(widths: np.ndarray, med: np.ndarray) -> float:
    return float(np.polyfit(np.log(widths), np.log(med), 1)[0])


def fit(widths: Sequence[float], err: np.ndarray, boot: int = 2000,
        seed: int = 0) -> dict[str, Any]:
    """Slope of ``log median_nets err`` vs ``log width`` and its bootstrap over nets.

    ``err`` is ``(widths, nets)``.  Returns the slope, the bootstrap standard deviation and
    the 16th/84th and 2.5th/97.5th percentiles of the resampled slopes.
    """
    w = np.asarray(widths, dtype=float)
    s = _slope(w, np.median(err, axis=1))
    rng = np.random.default_rng(seed)
    k = err.shape[1]
    bs = np.array([_slope(w, np.median(err[:, rng.integers(0, k, k)], axis=1))
                   for _ in range(boot)])
    return {"slope": s, "stderr": float(bs.std(ddof=1)),
            "ci68": [float(v) for v in np.percentile(bs, [16, 84])],
            "ci95": [float(v) for v in np.percentile(bs, [2.5, 97.5])]}


def measure(widths: Sequence[int], nets: int, n: int, q: float, seed: int,
            out: str | None, log: Any = print, site: str = "h2") -> dict[str, Any]:
    """The pooled errors ``(widths, nets)`` and the fit (see the module docstring)."""
    from dropcheck.verification.explicit import _inputs, _net, _pooled

    err = np.full((len(widths), nets), np.nan)
    secs = []
    res: dict[str, Any] = {}
    for i, d in enumerate(widths):
        t0 = time.perf_counter()
        for j in range(nets):
            net = _net(np.random.default_rng([seed, j, d]), [5, d, d, 4], sites=site)
            x, y = _inputs(np.random.default_rng([seed, j, d, 1]), n, 5, 4)
            exact = dc.exact.explicit_regularizer(net, x, y, q, max_masks=2**40)
            err[i, j] = _pooled(dc.explicit.taylor(net, x, y, q), exact)
        secs.append(time.perf_counter() - t0)
        done = err[: i + 1]
        log(f"width {d}: median pooled error {np.median(done[-1]):.4f} "
            f"(nets {', '.join(f'{v:.3f}' for v in done[-1])}), {secs[-1]:.1f} s")
        res = {"widths": list(widths[: i + 1]), "nets": nets, "n": n, "q": q, "seed": seed,
               "site": site,
               "errors": done.tolist(), "median": np.median(done, axis=1).tolist(),
               "seconds": secs, "masks_per_example": [2**w for w in widths[: i + 1]]}
        if i >= 1:
            res["fit"] = fit(widths[: i + 1], done)
        if out:
            with open(out, "w") as fh:
                json.dump(res, fh, indent=2)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep on the executor the options ask for; print and write the results."""
    p = argparse.ArgumentParser(prog="python -m dropcheck.benchmarks.e1_width_law")
    p.add_argument("--widths", default="8,12,16,20,24,28,32")
    p.add_argument("--nets", type=int, default=8)
    p.add_argument("--n", type=int, default=4, help="examples per net")
    p.add_argument("--q", type=float, default=0.3)
    p.add_argument("--site", choices=("h2", "h1"), default="h2",
                   help="h2 feeds the decoder; h1 is one layer deeper (E1's finite-q site)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--jobs", type=int, default=None)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from dropcheck.parallel import from_options, using

    widths = [int(w) for w in a.widths.split(",") if w]
    ex = from_options(a.jobs, a.scheduler)
    try:
        with using(ex):
            res = measure(widths, a.nets, a.n, a.q, a.seed, a.json, site=a.site)
    finally:
        if ex is not None:
            ex.close()
    if "fit" in res:
        f = res["fit"]
        print(f"slope {f['slope']:.3f} ± {f['stderr']:.3f} (bootstrap over nets; 68% "
              f"[{f['ci68'][0]:.3f}, {f['ci68'][1]:.3f}], 95% [{f['ci95'][0]:.3f}, "
              f"{f['ci95'][1]:.3f}])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
