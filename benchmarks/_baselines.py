"""Baselines a user would otherwise write, kept deliberately plain.

Each computes the same number as the dropcheck function it is timed against; the tests check
that on small sizes (``tests/test_benchmarks.py``), so a fast wrong answer cannot win.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def naive_expected_loss(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    activation: str,
    site_layer: int,
    x: np.ndarray,
    y: np.ndarray,
    q: float,
    *,
    chunk: int = 2**14,
    max_chunks: int | None = None,
) -> np.ndarray:
    """``E_m ℓ(F(x, m))`` (cross-entropy) by straightforward batched enumeration.

    All masks of the site feeding layer ``site_layer + 1`` (0 = the input) as one 0/1 matrix per
    chunk, one batched forward of the rest of the network, log-softmax, and the probability-
    weighted sum: what one writes with numpy in a few lines.  ``max_chunks`` stops early (the
    cost is linear in the number of chunks, so a prefix measures the rate).
    """
    act = ACT[activation]
    L = len(weights)
    h = x
    for layer in range(site_layer):
        h = act(h @ weights[layer].T + biases[layer])
    d = h.shape[1]
    bits = np.arange(d)
    total = np.zeros(x.shape[0])
    for k, start in enumerate(range(0, 2**d, chunk)):
        if max_chunks is not None and k >= max_chunks:
            break
        idx = np.arange(start, min(2**d, start + chunk))
        m = ((idx[:, None] >> bits) & 1).astype(np.float64)  # (B, d) keep masks
        prob = np.prod(np.where(m == 1.0, 1.0 - q, q), axis=1)  # (B,)
        a = h[None, :, :] * (m[:, None, :] / (1.0 - q))  # (B, n, d) inverted dropout
        for layer in range(site_layer, L):
            a = a @ weights[layer].T + biases[layer]
            if layer < L - 1:
                a = act(a)
        mx = a.max(axis=-1, keepdims=True)
        lse = mx[..., 0] + np.log(np.exp(a - mx).sum(axis=-1))
        loss = lse - np.take_along_axis(a, y[None, :, None], axis=-1)[..., 0]  # (B, n)
        total += prob @ loss
    return total


def naive_expected_gradient(
    W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray, activation: str,
    x: np.ndarray, y: np.ndarray, q: float, *, chunk: int = 2**12,
    max_chunks: int | None = None,
) -> np.ndarray:
    """``E_m ∇_W ℓ`` per example ``(n, P)`` for ``[d0, d, c]`` with dropout on the hidden layer.

    Batched enumeration with the backward pass written out (einsum over the masks of a
    chunk), parameters flattened as dropcheck does (``W1, b1, W2, b2``).  ``tanh`` only.
    """
    assert activation == "tanh"
    h = np.tanh(x @ W1.T + b1)  # (n, d)
    d = h.shape[1]
    c = W2.shape[0]
    e = np.eye(c)[y]  # (n, c)
    bits = np.arange(d)
    gW2 = np.zeros((x.shape[0], c, d))
    gb2 = np.zeros((x.shape[0], c))
    gh = np.zeros((x.shape[0], d))
    for k, start in enumerate(range(0, 2**d, chunk)):
        if max_chunks is not None and k >= max_chunks:
            break
        idx = np.arange(start, min(2**d, start + chunk))
        m = ((idx[:, None] >> bits) & 1).astype(np.float64) / (1.0 - q)  # (B, d)
        prob = np.prod(np.where(m > 0, 1.0 - q, q), axis=1)
        a = h[None, :, :] * m[:, None, :]  # (B, n, d)
        f = a @ W2.T + b2
        p = np.exp(f - f.max(axis=-1, keepdims=True))
        g = p / p.sum(axis=-1, keepdims=True) - e  # (B, n, c)
        gW2 += np.einsum("b,bnc,bnd->ncd", prob, g, a)
        gb2 += np.einsum("b,bnc->nc", prob, g)
        gh += np.einsum("b,bnd,bd->nd", prob, g @ W2, m)
    gz = gh * (1.0 - h * h)
    gW1 = gz[:, :, None] * x[:, None, :]
    n = x.shape[0]
    return np.concatenate([gW1.reshape(n, -1), gz, gW2.reshape(n, -1), gb2], axis=1)


# ----- torch.func versions of the explicit regularizer (benchmark 2) -----

_TORCH_ACT = {"tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid"}


def torch_mlp_params(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> tuple:
    """The MLP's weights as float64 torch tensors."""
    import torch

    return (tuple(torch.from_numpy(np.ascontiguousarray(w)) for w in weights),
            tuple(torch.from_numpy(np.ascontiguousarray(b)) for b in biases))


def _torch_head(Ws: tuple, bs: tuple, activation: str, start: int) -> Callable:
    """``v ↦ logits`` from the value fed into layer ``start + 1`` (one example)."""
    import torch

    act = getattr(torch, _TORCH_ACT[activation])
    L = len(Ws)

    def head(v: Any) -> Any:
        for layer in range(start, L):
            v = Ws[layer] @ v + bs[layer]
            if layer < L - 1:
                v = act(v)
        return v

    return head


def _torch_site_values(Ws: tuple, bs: tuple, activation: str, x: Any) -> list:
    import torch

    act = getattr(torch, _TORCH_ACT[activation])
    hs, h = [x], x
    for layer in range(len(Ws) - 1):
        h = act(h @ Ws[layer].T + bs[layer])
        hs.append(h)
    return hs


def torch_r_approx(
    Ws: tuple, bs: tuple, activation: str, site_layers: Sequence[int], x: Any
) -> Any:
    """``R_approx`` (4.4, no constant) with ``torch.func``: ``vmap(jacrev(head))`` per site.

    ``J_{F,i}`` of every example by reverse mode (``c`` vector-Jacobian products, vmapped),
    then ``Σ_k h_k² t_kᵀ H_out t_k`` with ``t_k = J[:, k]`` and ``H_out = diag(p) − p pᵀ``.
    """
    import torch
    from torch.func import jacrev, vmap

    hs = _torch_site_values(Ws, bs, activation, x)
    logits = hs[-1] @ Ws[-1].T + bs[-1]
    p = torch.softmax(logits, dim=-1)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for layer in site_layers:
        J = vmap(jacrev(_torch_head(Ws, bs, activation, layer)))(hs[layer])  # (n, c, d)
        t = J * hs[layer][:, None, :]
        pt = (p[:, :, None] * t).sum(1)
        total = total + ((p[:, :, None] * t * t).sum(1) - pt * pt).sum(1)
    return total


def torch_r_taylor(
    Ws: tuple, bs: tuple, activation: str, site_layers: Sequence[int], x: Any, y: Any,
    q: float,
) -> Any:
    """``R_taylor`` (4.2, with the constant) with ``torch.func``: ``vmap(hessian(ℓ∘head))``."""
    import torch
    from torch.func import hessian, vmap

    hs = _torch_site_values(Ws, bs, activation, x)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for layer in site_layers:
        head = _torch_head(Ws, bs, activation, layer)

        def loss(v: Any, t: Any, head: Callable = head) -> Any:
            return torch.nn.functional.cross_entropy(head(v)[None, :], t[None])

        H = vmap(hessian(loss))(hs[layer], y)  # (n, d, d)
        diag = torch.diagonal(H, dim1=1, dim2=2)
        total = total + (q / (2 * (1 - q))) * (diag * hs[layer] ** 2).sum(1)
    return total


def torch_forward_backward(Ws: tuple, bs: tuple, activation: str, x: Any, y: Any) -> Any:
    """One plain training step's worth of autograd: mean cross-entropy, ``.backward()``."""
    import torch

    params = [w.detach().requires_grad_() for w in Ws] + [b.detach().requires_grad_() for b in bs]
    L = len(Ws)
    act = getattr(torch, _TORCH_ACT[activation])
    h = x
    for layer in range(L):
        h = h @ params[layer].T + params[L + layer]
        if layer < L - 1:
            h = act(h)
    torch.nn.functional.cross_entropy(h, y).backward()
    return [p.grad for p in params]
