"""Multi-layer perceptron with dropout sites at the input and the hidden layers.

``z_l = W_l h̃_{l−1} + b_l``, ``h_l = σ(z_l)`` for ``l < L``, logits ``F = z_L``; the site of
``h_l`` (``"x"`` for ``h_0``, ``"h1"`` … ``"h{L−1}"``) feeds ``h̃_l = (1+η_l)⊙h_l`` forward.
Each sweep (forward, tangent, reverse, reverse-tangent) is one loop over the layers with one
rule per layer kind (affine, activation, noise), batched over directions, draws and examples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dropcheck._api import resolve_seed
from dropcheck._validate import check_choice, check_count, check_finite
from dropcheck.backend import asarray, default_dtype, make_rng, matmul, namespace
from dropcheck.losses import Loss, get_loss
from dropcheck.models._activations import ACTIVATIONS
from dropcheck.models._base import (
    AffineFeed,
    Model,
    Reverse,
    Site,
    Tangent,
    Trace,
    _check_reverse,
    namespace_of,
)

__all__ = ["MLP"]


def _broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    nd = max(len(s) for s in shapes)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) for dims in zip(*padded, strict=True))


def _zero_pullback(model: Model) -> Any:
    """The pullback of a site on the input: no parameters below it, a zero gradient."""

    def pullback(x: Any, noise: Any, g: Any) -> Any:
        xp = model.xp
        return xp.zeros((*g.shape[:-1], model.n_params), dtype=g.dtype)

    return pullback


def _site_name(layer: int) -> str:
    return "x" if layer == 0 else f"h{layer}"


class MLP(Model):
    """An MLP ``F(x) = W_L σ(… σ(W_1 x + b_1) …) + b_L`` with dropout sites.

    Parameters
    ----------
    weights : ``weights[l]`` of shape ``(d_{l+1}, d_l)``.
    biases : ``biases[l]`` of shape ``(d_{l+1},)``.
    activation : one of ``tanh, relu, gelu, softplus, sigmoid, identity`` (all layers but
        the last).
    sites : names among ``"x", "h1", …, "h{L−1}"`` (default: every hidden layer, or ``"x"``
        for a network without hidden layers).
    loss : ``"cross_entropy"`` (integer labels) or ``"squared"`` (real targets), or a Loss.

    ``params`` is the dict ``W1, b1, W2, b2, …``.
    """

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any],
        activation: str = "tanh",
        sites: Iterable[str] | str | None = None,
        loss: str | Loss = "cross_entropy",
    ) -> None:
        if len(weights) == 0 or len(weights) != len(biases):
            raise ValueError(
                f"weights and biases must be non-empty lists of equal length, got "
                f"{len(weights)} and {len(biases)}"
            )
        xp = namespace(*weights, *biases)
        ws = [xp.asarray(w) for w in weights]
        bs = [xp.asarray(b) for b in biases]
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(
                    f"weights[{i}] must be (d_out, d_in) and biases[{i}] (d_out,); got "
                    f"{w.shape} and {b.shape}"
                )
            if i and w.shape[1] != ws[i - 1].shape[0]:
                raise ValueError(
                    f"weights[{i}] has {w.shape[1]} inputs but layer {i - 1} has "
                    f"{ws[i - 1].shape[0]} outputs"
                )
            if not xp.isdtype(w.dtype, "real floating") or w.dtype != b.dtype:
                raise TypeError(f"weights[{i}], biases[{i}] must share one real floating dtype")
            if w.dtype != ws[0].dtype:
                raise TypeError("all weights must have the same dtype")
            check_finite(w, xp, f"weights[{i}]")
            check_finite(b, xp, f"biases[{i}]")
        self.activation = check_choice(activation, tuple(ACTIVATIONS), "activation")
        self._act = ACTIVATIONS[activation]
        self.sizes = [ws[0].shape[1]] + [w.shape[0] for w in ws]
        self.n_layers = len(ws)
        self.input_dim = self.sizes[0]
        self.n_classes = self.sizes[-1]
        self.loss = get_loss(loss)
        self.params = {}
        for i, (w, b) in enumerate(zip(ws, bs, strict=True), 1):
            self.params[f"W{i}"] = w
            self.params[f"b{i}"] = b
        all_sites = [_site_name(layer) for layer in range(self.n_layers)]
        if sites is None:
            sites = all_sites[1:] or all_sites[:1]
        elif isinstance(sites, str):
            sites = (sites,)
        sites = tuple(sites)
        bad = [s for s in sites if s not in all_sites]
        if bad or not sites or len(set(sites)) != len(sites):
            raise ValueError(f"sites must be distinct names among {all_sites}, got {list(sites)}")
        order = sorted(sites, key=all_sites.index)
        self.sites = tuple(Site(s, self.sizes[all_sites.index(s)]) for s in order)
        self._site_layer = {s: all_sites.index(s) for s in order}

    @classmethod
    def random(
        cls,
        sizes: Sequence[int],
        activation: str = "tanh",
        sites: Iterable[str] | str | None = None,
        *,
        seed: int | None = 0,
        rng: Any = None,
        scale: float = 1.0,
        bias_scale: float = 0.1,
        loss: str | Loss = "cross_entropy",
        dtype: Any = None,
        xp: Any = None,
    ) -> MLP:
        """A random MLP: ``W_l ~ scale·N(0, 1/d_l)`` (LeCun), ``b_l ~ bias_scale·N(0, 1)``."""
        if isinstance(sizes, str | bytes) or not isinstance(sizes, Iterable):
            raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
        sizes = [check_count(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        if len(sizes) < 2:
            raise ValueError(f"sizes must be >= 2 positive integers, got {list(sizes)}")
        if sites is not None and not isinstance(sites, str) and not isinstance(sites, Iterable):
            raise TypeError(f"sites must be a site name, an iterable of site names or None, "
                            f"got {type(sites).__name__} {sites!r}")
        if rng is None and seed is not None and not isinstance(seed, np.random.Generator):
            seed = resolve_seed(seed, "seed")  # any integer type; a clear error otherwise
        gen = make_rng(None if rng is not None else seed, rng)
        xp = namespace_of(xp)
        dtype = default_dtype(xp) if dtype is None else dtype
        ws, bs = [], []
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            ws.append(asarray(scale * gen.standard_normal((d_out, d_in)) / d_in**0.5, xp, dtype))
            bs.append(asarray(bias_scale * gen.standard_normal(d_out), xp, dtype))
        return cls(ws, bs, activation, sites, loss)

    def with_params(self, params: Mapping[str, Any]) -> MLP:  # noqa: D102
        L = self.n_layers
        return MLP(
            [params[f"W{i}"] for i in range(1, L + 1)],
            [params[f"b{i}"] for i in range(1, L + 1)],
            self.activation,
            self.site_names,
            self.loss,
        )

    def __repr__(self) -> str:
        return (
            f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
            f"sites={list(self.site_names)}, loss={self.loss.name!r})"
        )

    # ----- sweeps -----
    def _w(self, layer: int) -> Any:
        return self.params[f"W{layer}"]

    def trace(self, x: Any, noise: Mapping[str, Any] | None = None) -> Trace:  # noqa: D102
        xp = self.xp
        x2, single = self.check_x(x)
        eta = self.check_noise(noise, x2.shape[0])
        h = x2[None, ...]  # (1, n, d0)
        hs, inps, zs = [], [], []
        for layer in range(1, self.n_layers + 1):
            s = _site_name(layer - 1)
            hs.append(h)
            inp = h * (1.0 + eta[s]) if s in eta else h
            inps.append(inp)
            z = matmul(inp, self._w(layer).T, xp) + self.params[f"b{layer}"]
            zs.append(z)
            if layer < self.n_layers:
                h = self._act.f(z, xp)
        logits = zs[-1]
        return Trace(x2, eta, logits, single, {"h": hs, "inp": inps, "z": zs})

    def site_values(self, tr: Trace) -> dict[str, Any]:  # noqa: D102
        return {s: tr.cache["h"][self._site_layer[s]] for s in self.site_names}

    def affine_feed(self, site: str) -> AffineFeed | None:
        """Site ``h_{l}`` feeds ``z_{l+1} = W_{l+1} h̃_l + b_{l+1}``, then σ and the later layers.

        The decoder when ``l + 1 = L``.  ``pullback`` is the reverse sweep of a cotangent of
        ``h_l`` through the layers below it: this network with the layers from ``l+1`` on
        replaced by the identity (its "logits" are ``h_l``), so its parameter gradient is that
        of ``W_1 … b_l``, padded with zeros for the rest.
        """
        self.check_sites((site,), "site")
        layer = self._site_layer[site] + 1  # the 1-based layer the site feeds
        L = self.n_layers
        W, b = self.params[f"W{layer}"], self.params[f"b{layer}"]
        following = tuple(
            (self.params[f"W{i}"], self.params[f"b{i}"]) for i in range(layer + 1, L + 1)
        )
        pullback = _zero_pullback(self) if layer == 1 else self._lower_pullback(layer)
        return AffineFeed(
            W, b,
            activation=None if layer == L else self.activation,
            act=None if layer == L else self._act.f,
            following=following,
            token_loss=self.loss,
            pullback=pullback,
            w_key=f"W{layer}",
            b_key=f"b{layer}",
        )

    def _lower_pullback(self, layer: int) -> Any:
        """The pullback of a site feeding layer ``layer > 1`` (built on its first call)."""
        xp = self.xp
        d = self.sizes[layer - 1]
        n_low = sum(math.prod(self.params[k].shape) for k in list(self.params)[: 2 * layer - 2])
        P = self.n_params
        cache: dict[str, MLP] = {}

        def pullback(x: Any, noise: Mapping[str, Any] | None, g: Any) -> Any:
            if "lower" not in cache:
                cache["lower"] = MLP(
                    [self.params[f"W{i}"] for i in range(1, layer)]
                    + [xp.eye(d, dtype=self.dtype)],
                    [self.params[f"b{i}"] for i in range(1, layer)]
                    + [xp.zeros((d,), dtype=self.dtype)],
                    self.activation,
                    [s for s in self.site_names if self._site_layer[s] <= layer - 1],
                    "squared",
                )
            lower = cache["lower"]
            lo_noise = {s: e for s, e in (noise or {}).items() if s in lower.widths}
            _, gl = lower.backward(lower.trace(x, lo_noise or None), g[None, ...], params=True)
            gl = gl[0, ..., :n_low]
            pad = xp.zeros((*gl.shape[:-1], P - n_low), dtype=gl.dtype)
            return xp.concat([gl, pad], axis=-1)

        return pullback

    def _first_layer(self, *names: Iterable[str]) -> int:
        layers = [self._site_layer[s] for group in names for s in group]
        return min(layers) if layers else self.n_layers

    def tangent(  # noqa: D102
        self,
        tr: Trace,
        site_tangents: Mapping[str, Any] | None = None,
        noise_tangents: Mapping[str, Any] | None = None,
    ) -> Tangent:
        xp = self.xp
        vt = dict(site_tangents or {})
        nt = dict(noise_tangents or {})
        for s in (*vt, *nt):
            self.check_sites((s,), "tangents")
        start = self._first_layer(vt, nt)
        hdot = None
        inp_dots: list[Any] = [None] * self.n_layers
        z_dots: list[Any] = [None] * self.n_layers
        for layer in range(start + 1, self.n_layers + 1):
            s = _site_name(layer - 1)
            h = tr.cache["h"][layer - 1]
            parts = []
            if hdot is not None:
                parts.append(hdot * (1.0 + tr.noise[s]) if s in tr.noise else hdot)
            if s in nt:
                parts.append(nt[s] * h)
            if s in vt:
                parts.append(vt[s])
            inp_dot = parts[0]
            for p in parts[1:]:
                inp_dot = inp_dot + p
            inp_dots[layer - 1] = inp_dot
            zdot = matmul(inp_dot, self._w(layer).T, xp)
            z_dots[layer - 1] = zdot
            if layer < self.n_layers:
                hdot = self._act.df(tr.cache["z"][layer - 1], xp) * zdot
        return Tangent(z_dots[-1], vt, nt, {"inp": inp_dots, "z": z_dots, "start": start})

    def _param_grads(self, g_z: Any, inp: Any, extra: tuple[Any, Any] | None) -> list[Any]:
        xp = self.xp
        gw = g_z[..., :, None] * inp[..., None, :]
        if extra is not None:  # product rule of the reverse-tangent: g ⊗ inp_dot
            g0, inp_dot = extra
            gw = gw + g0[..., :, None] * inp_dot[..., None, :]
        lead = gw.shape[:-2]
        return [xp.reshape(gw, (*lead, -1)), g_z]

    def backward(  # noqa: D102
        self, tr: Trace, cot: Any, sites: Iterable[str] = (), params: bool = False
    ) -> tuple[dict[str, Any], Any]:
        xp = self.xp
        sites = tuple(sites)
        stop = 0 if params else self._first_layer(sites)
        out: dict[str, Any] = {}
        blocks: list[list[Any]] = []
        g_z = cot
        for layer in range(self.n_layers, stop, -1):
            inp = tr.cache["inp"][layer - 1]
            if params:
                blocks.append(self._param_grads(g_z, inp, None))
            g_inp = matmul(g_z, self._w(layer), xp)
            s = _site_name(layer - 1)
            if s in sites:
                out[s] = g_inp
            if layer - 1 > stop:
                g_h = g_inp * (1.0 + tr.noise[s]) if s in tr.noise else g_inp
                g_z = self._act.df(tr.cache["z"][layer - 2], xp) * g_h
        return out, (self._concat(blocks) if params else None)

    def adjoint_tangent(  # noqa: D102
        self,
        tr: Trace,
        tan: Tangent,
        g: Any,
        g_dot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        xp = self.xp
        sites = tuple(sites)
        stop = 0 if params else self._first_layer(sites)
        start = tan.cache["start"]
        out: dict[str, Any] = {}
        blocks: list[list[Any]] = []
        g_z, gd_z = g, g_dot
        for layer in range(self.n_layers, stop, -1):
            inp = tr.cache["inp"][layer - 1]
            inp_dot = tan.cache["inp"][layer - 1]
            if params:
                extra = (g_z, inp_dot) if inp_dot is not None else None
                blocks.append(self._param_grads(gd_z, inp, extra))
            g_inp = matmul(g_z, self._w(layer), xp)
            gd_inp = matmul(gd_z, self._w(layer), xp)
            s = _site_name(layer - 1)
            if s in sites:
                out[s] = gd_inp
            if layer - 1 > stop:
                eta = tr.noise.get(s)
                g_h = g_inp * (1.0 + eta) if eta is not None else g_inp
                gd_h = gd_inp * (1.0 + eta) if eta is not None else gd_inp
                if s in tan.noise_tangents:
                    gd_h = gd_h + tan.noise_tangents[s] * g_inp
                z = tr.cache["z"][layer - 2]
                g_z = self._act.df(z, xp) * g_h
                gd_z = self._act.df(z, xp) * gd_h
                if layer - 1 > start:  # the tangent is nonzero at this layer's pre-activation
                    gd_z = gd_z + self._act.d2f(z, xp) * tan.cache["z"][layer - 2] * g_h
        return out, (self._concat(blocks) if params else None)

    def _layer_grads(self, g_z: Any, inp: Any, per_example: bool) -> list[Any]:
        """``[∂W, ∂b]`` of one layer for cotangents ``g_z`` of its output.

        Flat, per example ``(…, n, ·)``, or summed over the examples by one product
        ``g_zᵀ inp`` (no ``(n, P)`` array).
        """
        xp = self.xp
        if per_example:
            return self._param_grads(g_z, inp, None)
        gw = xp.matmul(xp.matrix_transpose(g_z), inp)
        return [xp.reshape(gw, (*gw.shape[:-2], -1)), xp.sum(g_z, axis=-2)]

    def reverse(  # noqa: D102 - the protocol's docstring; this is its one-sweep form
        self,
        tr: Trace,
        cot: Any,
        *,
        sites: Iterable[str] = (),
        params: int = 0,
        tan: Tangent | None = None,
        cot_dot: Any = None,
        per_example: bool = True,
    ) -> Reverse:
        # One loop over the layers with every direction stacked on the leading axis, ordered
        # [the p = params cotangents with parameter gradients | the k' tangents | the other
        # cotangents], so that each layer is one product with W for all of them and one
        # product with its input for every parameter gradient and tangent.
        xp = self.xp
        k, kd = cot.shape[0], 0 if cot_dot is None else cot_dot.shape[0]
        _check_reverse(k, kd, params, tan)
        sites = tuple(sites)
        p, L = params, self.n_layers
        lowest = self._first_layer(sites)
        stop = 0 if p else lowest
        start = tan.cache["start"] if tan is not None and kd else L
        parts = [cot[:p, ...]] + ([cot_dot] if kd else []) + [cot[p:, ...]]
        lead = _broadcast_shapes(*(a.shape[1:-1] for a in parts))
        G = xp.concat([xp.broadcast_to(a, (a.shape[0], *lead, a.shape[-1])) for a in parts],
                      axis=0)
        out: dict[str, Any] = {}
        blocks: list[list[Any]] = []
        dot_blocks: list[list[Any]] = []
        for layer in range(L, stop, -1):
            inp = tr.cache["inp"][layer - 1]
            if p:
                both = self._layer_grads(G[: p + kd, ...], inp, per_example)
                blocks.append([a[:p, ...] for a in both])
                if kd:
                    dots = [a[p:, ...] for a in both]
                    inp_dot = tan.cache["inp"][layer - 1]  # type: ignore[union-attr]
                    if inp_dot is not None:  # product rule: g ⊗ inp_dot
                        dots[0] = dots[0] + self._layer_grads(G[:kd, ...], inp_dot,
                                                              per_example)[0]
                    dot_blocks.append(dots)
            s = _site_name(layer - 1)
            if layer == 1 and s not in sites:
                break  # the input's adjoint is not asked for
            if layer - 1 < lowest and G.shape[0] > p + kd:
                G = G[: p + kd, ...]  # below the last asked site only gradients need rows
            A = matmul(G, self._w(layer), xp)
            if s in sites:
                out[s] = A if not kd else xp.concat([A[:p, ...], A[p + kd:, ...]], axis=0)
            if layer - 1 > stop:
                eta = tr.noise.get(s)
                A_h = A * (1.0 + eta) if eta is not None else A
                z = tr.cache["z"][layer - 2]
                df = self._act.df(z, xp)
                G = df * A_h
                if kd:
                    assert tan is not None  # _check_reverse
                    g_dot = G[p : p + kd, ...]
                    if s in tan.noise_tangents:
                        g_dot = g_dot + df * tan.noise_tangents[s] * A[:kd, ...]
                    if layer - 1 > start:  # the tangent reaches this pre-activation
                        g_dot = g_dot + self._act.d2f(z, xp) * tan.cache["z"][layer - 2] \
                            * A_h[:kd, ...]
                    G = xp.concat([G[:p, ...], g_dot, G[p + kd:, ...]], axis=0)
        return Reverse(out, self._concat(blocks) if p else None,
                       self._concat(dot_blocks) if kd else None)

    def param_gradient(self, tr: Trace, cot: Any, *, per_example: bool = True) -> Any:
        """Flat ``∂⟨cot, F⟩/∂W``; summed ``(k, B, P)`` by :meth:`reverse`, no ``(n, P)`` array."""
        if per_example:
            return super().param_gradient(tr, cot, per_example=True)
        return self.reverse(tr, cot, params=cot.shape[0], per_example=False).params

    def param_adjoint_tangent(
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, *, per_example: bool = True
    ) -> Any:
        """Flat ``d/dε ∇_W``; summed ``(k, B, P)`` by :meth:`reverse`, no ``(n, P)`` array."""
        if per_example:
            return super().param_adjoint_tangent(tr, tan, g, g_dot, per_example=True)
        xp = self.xp
        if g.ndim < g_dot.ndim:
            g = g[None, ...]
        kd = g_dot.shape[0]
        g = xp.broadcast_to(g, (kd, *g.shape[1:])) if g.shape[0] != kd else g
        return self.reverse(tr, g, params=kd, tan=tan, cot_dot=g_dot,
                            per_example=False).params_dot

    def _concat(self, blocks: list[list[Any]]) -> Any:
        # blocks come last layer first; params are ordered W1, b1, W2, b2, ...
        xp = self.xp
        parts = [p for blk in reversed(blocks) for p in blk]
        lead = _broadcast_shapes(*(p.shape[:-1] for p in parts))
        return xp.concat([xp.broadcast_to(p, (*lead, p.shape[-1])) for p in parts], axis=-1)
