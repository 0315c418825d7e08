"""Shared helpers of the verification suites: random nets, error measures, summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

import dropcheck as dc


def random_inputs(rng: np.random.Generator, n: int, d: int, c: int) -> tuple[Any, Any]:
    """Standard normal inputs ``(n, d)`` and uniform labels ``(n,)``."""
    return rng.standard_normal((n, d)), rng.integers(0, c, size=n)


def random_mlp(rng: np.random.Generator, sizes: list[int], **kw: Any) -> dc.MLP:
    """A random MLP seeded from ``rng``."""
    return dc.MLP.random(sizes, rng=rng, seed=None, **kw)


def rel_err(a: Any, b: Any) -> float:
    """``‖a − b‖ / ‖b‖`` (Frobenius), with ``‖b‖ = 0`` giving the absolute error."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


def fmt(v: float) -> str:
    """A compact number for the table."""
    return f"{v:.2g}" if v != 0 else "0"


#: Step of the central differences of :func:`numeric_noise_hessian`.  With Richardson
#: extrapolation over ε and 2ε the O(ε²) truncation cancels: what is left is O(ε⁴) ≈ 1e-12
#: times the sixth derivatives, and the rounding O(eps·|ℓ|/ε²) ≈ 2e-10 for O(1) losses, so
#: ~1e-9 relative (the plain ε = 1e-4 formula reaches only ~1e-5 where the fourth derivatives
#: are large: deep nets, squared loss).
NOISE_FD_STEP = 1e-3


def numeric_noise_hessian(model: Any, x: Any, y: Any, sites: tuple[str, ...],
                          eps: float = NOISE_FD_STEP) -> np.ndarray:
    """Hessian of ``ℓ(F(x, η))`` in the noise of ``sites`` at ``η = 0`` by central differences.

    Independent of the library's derivative code: only forward passes with noise
    (``model.loss_value``).  ``H_ij(ε) = [ℓ(+i+j) − ℓ(+i−j) − ℓ(−i+j) + ℓ(−i−j)] / (4ε²)``, all
    ``4D²`` perturbed passes in one batch, extrapolated as ``(4 H(ε) − H(2ε)) / 3``.  Returns
    ``(n, D, D)``, sites in the order given and units in order within a site.
    """
    return (4.0 * _fd_hessian(model, x, y, sites, eps)
            - _fd_hessian(model, x, y, sites, 2.0 * eps)) / 3.0


def _fd_hessian(model: Any, x: Any, y: Any, sites: tuple[str, ...], eps: float) -> np.ndarray:
    widths = [model.widths[s] for s in sites]
    D = sum(widths)
    n = np.asarray(x).shape[0]
    signs = ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))  # (s_i, s_j, weight)
    eta = np.zeros((4, D, D, D))
    idx = np.arange(D)
    for k, (si, sj, _) in enumerate(signs):
        eta[k, idx[:, None], idx[None, :], idx[:, None]] += si * eps
        eta[k, idx[:, None], idx[None, :], idx[None, :]] += sj * eps
    flat = eta.reshape(4 * D * D, D)
    noise, start = {}, 0
    for s, d in zip(sites, widths, strict=True):
        noise[s] = np.broadcast_to(flat[:, None, start:start + d], (flat.shape[0], n, d))
        start += d
    ell = np.asarray(model.loss_value(x, y, noise)).reshape(4, D, D, n)
    w = np.asarray([s[2] for s in signs], dtype=float)
    h = np.tensordot(w, ell, axes=1) / (4 * eps * eps)  # (D, D, n)
    return np.moveaxis(h, -1, 0)


def eta_second_moment(q: float) -> float:
    """``E[η²]`` from the two-point law of η (−1 w.p. q, q/(1−q) w.p. 1−q), not the library."""
    return q * 1.0 + (1.0 - q) * (q / (1.0 - q)) ** 2
