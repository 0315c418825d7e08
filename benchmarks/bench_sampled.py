"""Benchmark 3: sampled ``R̂_approx`` and ``ξ_approx`` as a multiple of a plain forward+backward.

One sampled label per example for ``R̂_approx`` (``dc.explicit.r_approx_sampled``, slides) and
one noise draw for ``ξ_approx`` (``dc.implicit.xi_approx``, eqs 4.5/4.6, mean over the batch)
against one plain forward + backward of the mean loss in the same framework (dropcheck's own
sweeps: ``trace``, ``loss.grad``, ``backward(params=True)``), and, for reference, torch
autograd's forward + ``.backward()`` of the same MLP.  The LSTM language model
(``dropcheck.models.lstm``) is measured the same way when it is present.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from dropcheck.benchmarks import _baselines as B
from dropcheck.benchmarks._harness import Row, compare, profile_top

import dropcheck as dc


def available() -> str | None:
    """None when the benchmark can run, else why not."""
    try:
        from dropcheck import explicit, implicit
    except ImportError as exc:
        return f"dropcheck.explicit / implicit not importable ({exc}): benchmark 3 skipped"
    if not hasattr(explicit, "r_approx_sampled") or not hasattr(implicit, "xi_approx"):
        return "r_approx_sampled / xi_approx not available yet: benchmark 3 skipped"
    return None


def _plain(model: Any, x: Any, y: Any, per_example: bool = True) -> Callable[[], Any]:
    def step() -> Any:
        tr = model.trace(x)
        cot = model.loss.grad(tr.logits, y)[None, ...]
        if per_example:
            _, g = model.backward(tr, cot, params=True)
        else:
            _, g = model.backward(tr, cot, params=True, per_example=False)
        return g

    return step


def _row(name: str, model: Any, x: Any, y: Any, q: float, repeats: int,
         plain: Callable[[], Any], extra_fns: dict[str, Callable[[], Any]]) -> Row:
    from dropcheck import explicit, implicit

    rng = np.random.default_rng(0)
    fns = {
        "plain": plain,
        "r_hat": lambda: explicit.r_approx_sampled(model, x, y, samples=1, rng=rng),
        "xi": lambda: implicit.xi_approx(model, x, y, q, rng=rng, reduction="mean"),
        **extra_fns,
    }
    notes = []
    for k in ("r_hat", "xi"):  # a colleague's estimator may not support this model yet
        try:
            fns[k]()
        except Exception as exc:  # noqa: BLE001 - report it in the table, keep going
            notes.append(f"{k} failed ({type(exc).__name__}: {str(exc)[:80]})")
            del fns[k]
    t = compare(fns, repeats)
    extra: dict[str, Any] = {"plain_s": t["plain"]}
    for k in ("r_hat", "xi"):
        if k in t:
            extra[f"{k}_s"] = t[k]
            extra[f"{k}_over_plain"] = t[k] / t["plain"]
    both = t.get("r_hat", float("nan")) + t.get("xi", float("nan"))
    if "torch" in t:
        extra["torch_plain_s"] = t["torch"]
        extra["over_torch_plain"] = both / t["torch"]
    if both / t["plain"] > 2 and "xi" in fns:  # the target is missed: say where the time goes
        for k in ("xi", "plain"):
            top = profile_top(fns[k])
            extra[f"profile_{k}"] = top
            notes.append(f"profile of {'ξ_approx' if k == 'xi' else 'the plain step'}: "
                         + ", ".join(f"{f} {share:.0%}" for f, share in top))
    return Row("sampled", name, both, t["plain"], both / t["plain"], extra, "; ".join(notes))


def _mlp_row(width: int, q: float, repeats: int, threads: int | None, n: int = 64) -> Row:
    d0, c = 32, 10
    net = dc.MLP.random([d0, width, width, c], activation="tanh", sites=("h1", "h2"), seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, d0))
    y = rng.integers(0, c, n)
    extra: dict[str, Callable[[], Any]] = {}
    try:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        Ws, bs = B.torch_mlp_params([net.params[f"W{i}"] for i in (1, 2, 3)],
                                    [net.params[f"b{i}"] for i in (1, 2, 3)])
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        extra["torch"] = lambda: B.torch_forward_backward(Ws, bs, "tanh", xt, yt)
    except ImportError:
        pass
    return _row(f"MLP [{d0}, {width}, {width}, {c}], n = {n}", net, x, y, q, repeats,
                _plain(net, x, y), extra)


def run(mode: str, repeats: int, threads: int | None) -> list[Row]:
    """Rows of benchmark 3: MLP widths 128, 256 (quick 128, smoke 8), and the LSTM if present."""
    q = 0.5
    widths = {"smoke": (8,), "quick": (128,), "full": (128, 256)}[mode]
    n = 4 if mode == "smoke" else 64
    rows = [_mlp_row(w, q, repeats, threads, n) for w in widths]
    lstm = _colleague_lstm_row(mode, repeats, threads) or _lstm_row(mode, repeats, q)
    if lstm is not None:
        rows.append(lstm)
    return rows


def _colleague_lstm_row(mode: str, repeats: int, threads: int | None) -> Row | None:
    """The LSTM from ``benchmarks.bench_lstm`` (its sizes, masks and torch baselines)."""
    try:
        from dropcheck.benchmarks import bench_lstm
    except ImportError:
        return None
    failed = []
    t: dict[str, Any] = {}
    for m in [mode] + (["quick"] if mode == "full" else []):
        try:
            t = {r["path"]: r for r in bench_lstm.run(m, repeats, threads)}
            break
        except Exception as exc:  # noqa: BLE001 - a colleague's benchmark: report, go on
            failed.append(f"bench_lstm {m!r} sizes failed ({type(exc).__name__}: "
                          f"{str(exc)[:70]})")
    if not t:
        return None
    sec = {k: v["seconds"] for k, v in t.items()}
    both = sec["r_hat"] + sec["xi"]
    extra: dict[str, Any] = {"plain_s": sec["plain"], "r_hat_s": sec["r_hat"], "xi_s": sec["xi"],
                             "r_hat_over_plain": sec["r_hat"] / sec["plain"],
                             "xi_over_plain": sec["xi"] / sec["plain"]}
    note = "; ".join([*failed, "from dropcheck.benchmarks.bench_lstm (locked masks, float32)"])
    if "torch_plain" in sec:
        extra["torch_plain_s"] = sec["torch_plain"]
        extra["over_torch_plain"] = both / sec["torch_plain"]
        if "torch_r_hat" in sec and "torch_xi" in sec:
            mult = (sec["torch_r_hat"] + sec["torch_xi"]) / sec["torch_plain"]
            extra["torch_own_multiple"] = mult
            note += (f"; the same two quantities written in PyTorch cost {mult:.2f}× a torch "
                     f"forward+backward")
    return Row("sampled", t["plain"]["case"], both, sec["plain"], both / sec["plain"], extra,
               note)


def _lstm_row(mode: str, repeats: int, q: float) -> Row | None:
    try:
        from dropcheck.models.lstm import LSTM
    except ImportError:
        return None
    vocab, emb, hidden, T, n = {"smoke": (20, 4, 5, 3, 2), "quick": (200, 32, 64, 20, 4),
                                "full": (1000, 64, 128, 35, 8)}[mode]
    try:
        net = LSTM.random(vocab, emb, hidden, 2, seed=0)
        rng = np.random.default_rng(2)
        x = rng.integers(0, vocab, (n, T))
        y = rng.integers(0, vocab, (n, T))
        return _row(f"LSTM LM (vocab {vocab}, emb {emb}, 2×{hidden}, T = {T}), n = {n}", net, x,
                    y, q, repeats, _plain(net, x, y, per_example=False), {})
    except Exception as exc:  # noqa: BLE001 - a colleague's model in progress: report, go on
        return Row("sampled", "LSTM LM", float("nan"), None, None, {},
                   f"skipped: {type(exc).__name__}: {exc}")
