"""LSTM language model: cost of ``R̂_approx`` and ``ξ_approx`` per window; a PyTorch baseline.

For one truncated-BPTT window (``n`` sequences of ``T`` tokens), with masks locked across time:

- ``plain``: dropcheck's forward + BPTT parameter gradient of the summed loss
  (``trace``, ``backward(params=True, per_example=False)``) — the unit of cost;
- ``r_hat``: the sampled-label ``R̂_approx`` with one label sequence: forward + one reverse sweep
  to the sites (``dropcheck.explicit.r_approx_sampled_terms``; no ``V×V`` matrix, no parameter
  gradients);
- ``xi``: one draw of ``ξ_approx``: forward + forward tangent + reverse tangent with parameter
  gradients (``dropcheck.implicit.xi_approx``, ``reduction="sum"``);
- ``torch_*``: what a user would write in PyTorch on the same weights (``nn.LSTM`` per layer,
  masks between the layers): ``torch_plain`` (``loss.backward()``), ``torch_r_hat`` (noise
  leaves at zero, ``autograd.grad`` of ``⟨g_ŷ, F⟩`` w.r.t. them), ``torch_xi`` (double backward:
  ``∇_W ⟨∂ℓ/∂η, η⟩``).  :func:`check` shows they compute the same numbers.

``run(...)`` returns a list of dicts (seconds are medians of alternating repeats, see
``benchmarks._harness.compare``); the harness decides how to print them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from dropcheck.benchmarks._harness import compare, peak_bytes

from dropcheck import explicit as ex
from dropcheck import implicit as im
from dropcheck.models.lstm import LSTM

#: (vocab, emb, hidden per layer, tied, T, n) per mode; "awd" is AWD-LSTM's window.
SIZES = {
    "smoke": (20, 4, (5, 5), False, 3, 2),
    "quick": (1000, 32, (64, 64), False, 35, 16),
    "full": (10000, 200, (400, 200), True, 35, 20),  # tied: last hidden = emb
    "awd": (10000, 400, (1150, 1150, 400), True, 70, 80),
}
_Q = {"emb": 0.4, "h": 0.25, "out": 0.4}


def _q(model: LSTM) -> dict[str, float]:
    return {s: _Q.get(s, _Q["h"]) for s in model.site_names}


def _case(mode: str, dtype: Any = np.float32, seed: int = 0) -> tuple[LSTM, Any, Any]:
    vocab, emb, hidden, tie, T, n = SIZES[mode]
    model = LSTM.random(vocab, emb, list(hidden), tie=tie, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    return model, rng.integers(0, vocab, (n, T)), rng.integers(0, vocab, (n, T))


# ----- dropcheck paths -----
def dropcheck_fns(model: LSTM, x: Any, y: Any, seed: int = 0) -> dict[str, Callable[[], Any]]:
    """The three timed dropcheck paths (see the module doc)."""
    rng = np.random.default_rng(seed)
    q = _q(model)

    def plain() -> Any:
        tr = model.trace(x)
        _, g = model.backward(tr, model.loss.grad(tr.logits, y)[None, ...], params=True,
                              per_example=False)
        return g

    def r_hat() -> Any:
        terms = ex.r_approx_sampled_terms(model, x, samples=1, rng=rng, q=q, chunk=1)[model.mask]
        return sum(terms.values())

    def xi() -> Any:
        return im.xi_approx(model, x, y, q, rng=rng, samples=1, reduction="sum", chunk=1)

    return {"plain": plain, "r_hat": r_hat, "xi": xi}


# ----- the PyTorch baseline -----
def torch_model(model: LSTM, device: str = "cpu") -> dict[str, Any]:
    """The same network in torch on ``device``: ``nn.LSTM`` per layer with the weights copied."""
    import torch

    p = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in model.params.items()}
    layers = []
    for l, H in enumerate(model.hidden_sizes, 1):
        lstm = torch.nn.LSTM(p[f"W{l}"].shape[1], H, batch_first=True, dtype=p["E"].dtype,
                             device=device)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(p[f"W{l}"])
            lstm.weight_hh_l0.copy_(p[f"U{l}"])
            lstm.bias_ih_l0.copy_(p[f"b{l}"])
            lstm.bias_hh_l0.zero_()
        layers.append(lstm)
    E = torch.nn.Parameter(p["E"].clone())
    D = E if model.tied else torch.nn.Parameter(p["D"].clone())
    bD = torch.nn.Parameter(p["bD"].clone())
    params = [E, *(t for m in layers for t in m.parameters()), bD] + ([] if model.tied else [D])
    return {"layers": layers, "E": E, "D": D, "bD": bD, "params": params,
            "sites": model.site_names}


def torch_logits(tm: dict[str, Any], x: Any, noise: dict[str, Any]) -> Any:
    """Logits ``(n, T, V)`` with locked noise ``noise[site]`` ``(n, d)`` (``h ↦ (1+η)h``)."""
    names = ("emb", *(f"h{l}" for l in range(1, len(tm["layers"]))), "out")

    def site(s: str, h: Any) -> Any:
        return h * (1.0 + noise[s][:, None, :]) if s in noise else h

    u = site("emb", tm["E"][x])
    for l, lstm in enumerate(tm["layers"], 1):
        u = site(names[l], lstm(u)[0])
    return u @ tm["D"].T + tm["bD"]


def torch_fns(
    model: LSTM, x: Any, y: Any, seed: int = 0, device: str = "cpu"
) -> dict[str, Callable[[], Any]]:
    """The PyTorch baselines (see the module doc) on ``device`` (``model``, ``x``, ``y`` numpy)."""
    import torch

    tm = torch_model(model, device)
    xt = torch.from_numpy(np.asarray(x)).to(device)
    yt = torch.from_numpy(np.asarray(y)).to(device)
    q = _q(model)
    n = x.shape[0]
    gen = torch.Generator(device=device).manual_seed(seed)
    dt = tm["E"].dtype

    def zeros() -> dict[str, Any]:
        return {s: torch.zeros(n, model.widths[s], dtype=dt, device=device, requires_grad=True)
                for s in tm["sites"]}

    def loss(f: Any) -> Any:
        return torch.nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), yt.reshape(-1),
                                                 reduction="sum")

    def plain() -> Any:
        for t in tm["params"]:
            t.grad = None
        loss(torch_logits(tm, xt, {})).backward()
        return tm["E"].grad

    def r_hat() -> Any:
        z = zeros()
        f = torch_logits(tm, xt, z)
        p = torch.softmax(f.detach(), -1)
        yhat = torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=gen).reshape(y.shape)
        g = p - torch.nn.functional.one_hot(yhat, p.shape[-1]).to(dt)
        grads = torch.autograd.grad((g * f).sum(), list(z.values()))
        return sum(ex.strength(q[s]) * (gr**2).sum() for s, gr in zip(z, grads, strict=True))

    def xi() -> Any:
        z = zeros()
        eta = {s: (torch.rand(n, model.widths[s], generator=gen, dtype=dt, device=device)
                   >= q[s]).to(dt)
               / (1 - q[s]) - 1 for s in z}
        ge = torch.autograd.grad(loss(torch_logits(tm, xt, z)), list(z.values()),
                                 create_graph=True)
        s = sum((a * eta[k]).sum() for k, a in zip(z, ge, strict=True))
        return torch.autograd.grad(s, tm["params"], allow_unused=True)

    return {"torch_plain": plain, "torch_r_hat": r_hat, "torch_xi": xi}


def check(seed: int = 0) -> dict[str, float]:
    """Relative differences of dropcheck and the torch baseline on the same small float64 case.

    ``R̂`` with the same labels is compared through ``r_approx_factor`` against the torch
    expectation over all labels (both exact); ``ξ_approx`` at the same η; loss gradients.
    """
    import torch

    model, x, y = _case("smoke", np.float64, seed)
    tm = torch_model(model)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    eta = model.sample_noise(rng, *x.shape, _q(model))
    eta_t = {s: torch.from_numpy(e[0]) for s, e in eta.items()}
    # loss gradient at the noise
    tr = model.trace(x, eta)
    _, g = model.backward(tr, model.loss.grad(tr.logits, y)[None, ...], params=True,
                          per_example=False)
    f = torch_logits(tm, xt, eta_t)
    lt = torch.nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), yt.reshape(-1),
                                           reduction="sum")
    gE = torch.autograd.grad(lt, tm["E"])[0].numpy().ravel()
    out = {"grad_E": float(np.linalg.norm(g[0, 0, : gE.size] - gE) / np.linalg.norm(gE))}
    # ξ_approx at the same η, compared on the decoder bias block (last V entries of both)
    xi = np.sum(im.xi_approx_at(model, x, y, eta), axis=1)[0]
    z = {s: torch.zeros(x.shape[0], model.widths[s], dtype=torch.float64, requires_grad=True)
         for s in model.site_names}
    f0 = torch_logits(tm, xt, z)
    l0 = torch.nn.functional.cross_entropy(f0.reshape(-1, f0.shape[-1]), yt.reshape(-1),
                                           reduction="sum")
    ge = torch.autograd.grad(l0, list(z.values()), create_graph=True)
    s = sum((a * eta_t[k]).sum() for k, a in zip(z, ge, strict=True))
    xb = torch.autograd.grad(s, tm["bD"])[0].numpy()
    out["xi_bD"] = float(np.linalg.norm(xi[-model.vocab :] - xb) / np.linalg.norm(xb))
    return out


def run(
    mode: str = "quick", repeats: int = 3, threads: int | None = 1, *, torch: bool = True
) -> list[dict[str, Any]]:
    """Time one window: dropcheck's ``plain``, ``r_hat``, ``xi`` and the torch baselines.

    Returns one dict per path with ``seconds`` and ``over_plain`` (its own framework's
    forward+backward), plus the case, the parameter count and dropcheck's peak host memory of
    each path (``tracemalloc``; on a GPU the arrays live on the device and are not counted).
    """
    model, x, y = _case(mode)
    fns = dropcheck_fns(model, x, y)
    if torch:
        try:
            import torch as _t

            if threads is not None:
                _t.set_num_threads(threads)
            fns |= torch_fns(model, x, y)
        except ImportError:
            pass
    t = compare(fns, repeats)
    vocab, emb, hidden, tie, T, n = SIZES[mode]
    case = f"LSTM LM vocab {vocab}, emb {emb}, hidden {list(hidden)}, T {T}, n {n}, float32"
    rows = []
    for k, sec in t.items():
        base = "torch_plain" if k.startswith("torch") else "plain"
        row = {"bench": "lstm", "case": case, "path": k, "seconds": sec,
               "over_plain": sec / t[base], "n_params": model.n_params,
               "tokens_per_s": x.size / sec}
        if not k.startswith("torch"):
            row["peak_bytes"] = peak_bytes(fns[k])
        rows.append(row)
    return rows


def awd_memory_estimate(n: int = 80, T: int = 70, bytes_per: int = 4) -> dict[str, float]:
    """Arrays one AWD-LSTM window keeps (GiB): trace, one label chunk, ξ tangent, gradients.

    Trace per layer ``n·T·(4H + 2H)`` (gates, cell, output) plus the input; logits and the
    softmax ``n·T·V`` each; a label chunk of ``k`` samples ``k·n·T·V``; the reverse sweep
    ``n·T·4H`` per layer; the tangent as much as the trace; parameters and one gradient ``P``.
    """
    V, de, hs = 10000, 400, (1150, 1150, 400)
    ins = (de, *hs[:-1])
    nt = n * T
    trace = sum(nt * (6 * h + i) for h, i in zip(hs, ins, strict=True)) + nt * de
    P = V * de + sum(4 * h * (i + h + 1) for h, i in zip(hs, ins, strict=True)) + V
    g = 2 ** 30 / bytes_per
    return {
        "params_gib": P / g, "trace_gib": trace / g, "logits_softmax_gib": 2 * nt * V / g,
        "label_chunk_gib_per_sample": nt * V / g, "reverse_gib": sum(nt * 4 * h for h in hs) / g,
        "tangent_gib": trace / g, "n_params": P,
        "peak_estimate_gib": (2 * P + 2 * trace + 4 * nt * V
                              + sum(nt * 4 * h for h in hs)) / g,
    }
