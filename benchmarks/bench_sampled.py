"""Benchmark 3: the fused sampled step and the separate estimators, in plain steps.

The case is one mini-batch of Algorithm 2's ingredients: the plain gradient of the mean loss,
``R̂_approx`` (one sampled label per example, slides) and ``ξ_approx`` (one noise draw,
eqs 4.5/4.6, mean over the batch).  Timed in the same run, alternating:

- ``plain``: one plain forward + backward of the mean loss through the same model in
  dropcheck (``trace``, ``loss.grad``, ``param_gradient(per_example=False)``): the yardstick;
- ``fused``: :func:`dropcheck.step.sampled_step`, all three from one trace;
- ``r_hat`` + ``xi``: the separate estimators (``dc.explicit.r_approx_sampled``,
  ``dc.implicit.xi_approx``), which recompute the trace;
- ``plain per example``: the same forward + backward with per-example parameter gradients
  (``backward(params=True)``), the yardstick of earlier runs of this benchmark;
- torch autograd's forward + ``.backward()`` of the same MLP, for reference.

Also reported: the multiply-adds of the fused step over the plain step's, counted from the
layer sizes (:func:`macs`): for matrix-product-bound sizes the time ratio cannot go much below
it.  The LSTM language model (``dropcheck.models.lstm``) is measured the old way when present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from dropcheck.benchmarks import _baselines as B
from dropcheck.benchmarks._harness import Row, compare, profile_top

import dropcheck as dc


def available() -> str | None:
    """None when the benchmark can run, else why not."""
    try:
        from dropcheck import explicit, implicit, step  # noqa: F401
    except ImportError as exc:
        return f"dropcheck.explicit / implicit / step not importable ({exc}): benchmark 3 skipped"
    return None


def _plain(model: Any, x: Any, y: Any, per_example: bool = False) -> Callable[[], Any]:
    def one_step() -> Any:
        tr = model.trace(x)
        cot = model.loss.grad(tr.logits, y)[None, ...]
        if per_example:
            return model.backward(tr, cot, params=True)[1]
        return model.param_gradient(tr, cot, per_example=False)

    return one_step


def macs(sizes: Sequence[int], site_layers: Sequence[int], n: int) -> tuple[int, int]:
    """Multiply-adds of the plain step and of the fused step of an MLP ``sizes``.

    ``site_layers``: the layer index ``j`` of each site ``h_j`` (0 for the input).  Plain:
    the forward products, the parameter products and the backward products to ``h_1``.
    Fused (:meth:`MLP.reverse`): the forward; the tangent from the first site on; per layer
    ``l`` the backward product of the true-label, tangent and (down to the lowest site)
    sampled-label rows; the parameter products of the true-label and tangent rows and, where
    the tangent reaches the layer's input, the product rule's ``g ⊗ inp_dot``.
    """
    L = len(sizes) - 1
    per = [n * sizes[l - 1] * sizes[l] for l in range(1, L + 1)]  # layer l: per[l - 1]
    lo = min(site_layers)
    plain = 2 * sum(per) + sum(per[1:])
    fused = sum(per) + sum(per[l - 1] for l in range(lo + 1, L + 1))  # forward, tangent
    for l in range(1, L + 1):
        rows = 2 + (l - 1 >= lo)
        if l > 1 or 0 in site_layers:
            fused += rows * per[l - 1]
        fused += 2 * per[l - 1] + (per[l - 1] if l - 1 >= lo else 0)
    return plain, fused


def _row(name: str, model: Any, x: Any, y: Any, q: float, repeats: int,
         extra_fns: dict[str, Callable[[], Any]], counts: tuple[int, int] | None) -> Row:
    from dropcheck import explicit, implicit, step

    rng = np.random.default_rng(0)
    fns = {
        "plain": _plain(model, x, y),
        "fused": lambda: step.sampled_step(model, x, y, q, rng=rng),
        "r_hat": lambda: explicit.r_approx_sampled(model, x, y, samples=1, rng=rng),
        "xi": lambda: implicit.xi_approx(model, x, y, q, rng=rng, reduction="mean"),
        "plain per example": _plain(model, x, y, per_example=True),
        **extra_fns,
    }
    t = compare(fns, repeats)
    plain = t["plain"]
    separate = t["r_hat"] + t["xi"]
    extra: dict[str, Any] = {
        "plain_s": plain, "fused_s": t["fused"], "r_hat_s": t["r_hat"], "xi_s": t["xi"],
        "separate_over_plain": separate / plain,
        "plain_per_example_s": t["plain per example"],
        "fused_over_per_example": t["fused"] / t["plain per example"],
    }
    if counts is not None:
        extra["macs_plain"], extra["macs_fused"] = counts
        extra["macs_ratio"] = counts[1] / counts[0]
    if "torch" in t:
        extra["torch_plain_s"] = t["torch"]
        extra["fused_over_torch"] = t["fused"] / t["torch"]
    notes = []
    if t["fused"] / plain > 1.5:  # the target is missed: say where the time goes
        for k in ("fused", "plain"):
            top = profile_top(fns[k])
            extra[f"profile_{k}"] = top
            notes.append(f"profile of the {k} step: "
                         + ", ".join(f"{f} {share:.0%}" for f, share in top))
    return Row("sampled", name, t["fused"], plain, t["fused"] / plain, extra, "; ".join(notes))


def _mlp_row(width: int, q: float, repeats: int, threads: int | None, n: int = 64) -> Row:
    d0, c = 32, 10
    sizes = [d0, width, width, c]
    net = dc.MLP.random(sizes, activation="tanh", sites=("h1", "h2"), seed=0)
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
    return _row(f"MLP {sizes}, n = {n}", net, x, y, q, repeats, extra, macs(sizes, (1, 2), n))


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
                             "xi_over_plain": sec["xi"] / sec["plain"],
                             "separate_over_plain": both / sec["plain"]}
    note = "; ".join([*failed, "from dropcheck.benchmarks.bench_lstm (locked masks, float32)"])
    if "torch_plain" in sec:
        extra["torch_plain_s"] = sec["torch_plain"]
        extra["over_torch_plain"] = both / sec["torch_plain"]
        if "torch_r_hat" in sec and "torch_xi" in sec:
            mult = (sec["torch_r_hat"] + sec["torch_xi"]) / sec["torch_plain"]
            extra["torch_own_multiple"] = mult
            note += (f"; the same two quantities written in PyTorch cost {mult:.2f}× a torch "
                     f"forward+backward")
    note += "; the fused step is not timed on this model (its sizes are bench_lstm's)"
    return Row("sampled", t["plain"]["case"], both, sec["plain"], None, extra, note)


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
                    y, q, repeats, {}, None)
    except Exception as exc:  # noqa: BLE001 - a colleague's model in progress: report, go on
        return Row("sampled", "LSTM LM", float("nan"), None, None, {},
                   f"skipped: {type(exc).__name__}: {exc}")
