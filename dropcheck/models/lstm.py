r"""LSTM language model on the site protocol: embedding → stacked LSTM → linear decoder.

One sequence of token ids ``x_1 … x_T`` with targets ``y_1 … y_T`` (the next tokens):

.. math::
    e_t &= E[x_t] \in R^{d_e},                 & u^1_t &= (1+η_{emb}) ⊙ e_t \\
    z^l_t &= W_l u^l_t + U_l h^l_{t-1} + b_l,   & (i, f, g, o) &= (σ, σ, \tanh, σ)(z^l_t) \\
    c^l_t &= f ⊙ c^l_{t-1} + i ⊙ g,             & h^l_t &= o ⊙ \tanh(c^l_t) \\
    u^{l+1}_t &= (1+η_{h_l}) ⊙ h^l_t,           & F_t &= D\,((1+η_{out}) ⊙ h^L_t) + b_D

Gates in PyTorch's order ``(i, f, g, o)``, so ``W_l, U_l`` are ``weight_ih_l, weight_hh_l``
of ``torch.nn.LSTM`` and ``b_l`` is ``bias_ih_l + bias_hh_l``.

**Sites.**  ``"emb"`` (the embedding output, width ``d_e``), ``"h1" … "h{L−1}"`` (between LSTM
layers ``l`` and ``l+1``, width ``H_l``) and ``"out"`` (before the decoder, width ``H_L``).  A
site's value ``h_i`` is the vector at every time step, ``(B, n, T, d_i)``.

**Masks.**  ``mask="locked"`` (default; variational dropout as in AWD-LSTM): one mask per
sequence and unit, shared by all time steps, noise ``(B, n|1, d)``.  Then
``E[δ_t δ_{t'}ᵀ] = (q/(1−q)) diag(h_t ⊙ h_{t'})`` couples the time steps, and
:meth:`noise_adjoint` (``∂⟨u, F⟩/∂η``) sums ``(uᵀJ_t)_k h_{tk}`` over ``t`` — which is where the
cross-time terms of ``R_approx`` come from.  ``mask="per_step"``: an independent mask at every
step, noise ``(B, n|1, T, d)`` and :meth:`noise_adjoint` per step.  The generic
:mod:`dropcheck.exact` / :mod:`dropcheck.montecarlo` draw noise ``(B, n|1, d)`` per site, so
they apply to the locked model only; :meth:`sample_noise` draws the right shape for both.

**Weight dropout** (DropConnect on ``U_l``, AWD-LSTM's ``wdrop``) is an option of the forward
pass, not a dropout site: ``weight_noise={"U1": η, …}`` (``(B|1, 4H, H)``, the paper's η;
:meth:`sample_weight_noise`) replaces ``U_l`` by ``U_l ⊙ (1+η)`` in the trace, and every
derivative is taken at that fixed weight mask (parameter gradients are w.r.t. ``U_l``:
``∂/∂U = (∂/∂U_eff) ⊙ (1+η)``).  The ``U_l`` are the model's *weight-noise sites*
(``weight_noise_sites``, the protocol's :meth:`~dropcheck.models.Model.sample_weight_noise`).

**Context** (the site protocol's, :meth:`~dropcheck.models.Model.with_context`): ``state`` and
``weight_noise`` may be bound to the model, ``model.with_context(state=…, weight_noise=…)``,
so that the generic algorithms (:mod:`dropcheck.explicit`, :mod:`dropcheck.implicit`,
:mod:`dropcheck.montecarlo`) evaluate a truncated-BPTT window with its carried state and its
DropConnect mask; ``trace(..., state=, weight_noise=)`` overrides them for one pass.

**Loss.**  :class:`TokenCrossEntropy`: the loss of a sequence is the *sum* of its token
cross-entropies, ``ℓ = Σ_t −log softmax(F_t)_{y_t}``, so ``H_out`` is block-diagonal over
tokens and the sampled-label identity ``H_out = E_ŷ[g_ŷ g_ŷᵀ]`` holds with one label drawn per
token.  Per-token figures (what the paper reports) are per-sequence values divided by ``T``;
:mod:`dropcheck.lm` reports those.

**Truncated BPTT.**  ``trace(x, noise, state=...)`` starts from a given state ``(h_0, c_0)`` per
layer (``(n, H)`` or ``(B, n, H)``); the state is an input, never differentiated through;
:meth:`final_state` returns the state after the window for the next one.

Shapes: tokens ``x`` ``(n, T)`` (``n`` sequences are the examples), targets ``(n, T)``, logits
``(B, n, T, V)``; tangents/cotangents carry a leading direction axis ``k``.  ``params`` is the
dict ``E, W1, U1, b1, …, WL, UL, bL, D, bD`` (without ``D`` when the decoder is tied to ``E``).
Every sweep (forward, tangent, reverse, reverse-tangent) is written once per layer kind, in the
namespace of the parameters (numpy, cupy, …), batched over directions, draws and sequences; the
recurrence is the only loop over time.  Backward is BPTT; ``backward(..., per_example=False)``
(and the protocol's ``param_gradient`` / ``param_adjoint_tangent`` with ``per_example=False``)
sums parameter gradients over the sequences inside the sweep (no ``(n, P)`` arrays at AWD-LSTM
sizes).  Site values have one site axis (time): ``site_axes = 1``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dropcheck._validate import check_choice, check_finite
from dropcheck.backend import asarray, default_dtype, make_rng, matmul, namespace
from dropcheck.losses import CrossEntropy
from dropcheck.models._base import (
    MASKS,
    AffineFeed,
    Model,
    Site,
    Tangent,
    Trace,
    namespace_of,
)

__all__ = ["LSTM", "TokenCrossEntropy", "MASKS"]


def _steps_fit(f: Any, y: Any) -> Any:
    """``y`` after checking it has one target per step of the logits ``f`` ``(..., T, V)``.

    The targets are checked against ``n`` when they come in (:meth:`check_targets`); their
    number of steps can only be checked against a forward pass (defect 13 of issue 18: a
    wrong count broadcast or failed in a reshape deep inside).
    """
    if y.ndim < 1 or y.shape[-1] != f.shape[-2]:
        raise ValueError(f"y must have one target per step of x ({f.shape[-2]} steps), got "
                         f"targets of shape {tuple(y.shape)}")
    return y


class TokenCrossEntropy(CrossEntropy):
    """Cross-entropy summed over the tokens of a sequence; logits ``(..., T, V)``, ids ``(n, T)``.

    ``value`` sums over ``T`` (shape ``f.shape[:-2]``); ``grad``, ``hvp`` and
    ``hessian_form_grad`` are per token (the derivative of a sum), ``hessian`` and
    ``hessian_factor`` give the diagonal blocks ``(..., T, V, V)`` of the block-diagonal
    ``H_out``.  With ``ŷ_t ~ softmax(F_t)`` independent, ``E_ŷ[g_ŷ g_ŷᵀ] = H_out``.
    """

    name = "token_cross_entropy"

    def value(self, f: Any, y: Any) -> Any:
        """``Σ_t ℓ(F_t, y_t)``: the cross-entropy summed over the tokens, shape ``f.shape[:-2]``."""
        xp = namespace(f)
        return xp.sum(super().value(f, _steps_fit(f, y)), axis=-1)

    def grad(self, f: Any, y: Any) -> Any:  # noqa: D102 - CrossEntropy's, steps checked
        return super().grad(f, _steps_fit(f, y))

    def hvp(self, f: Any, y: Any, v: Any) -> Any:  # noqa: D102 - CrossEntropy's, steps checked
        return super().hvp(f, _steps_fit(f, y), v)

    def check_targets(self, y: Any, n: int, c: int, xp: Any) -> Any:
        """Targets ``(n, T)`` of integer token ids in ``[0, c)`` (``(T,)`` when ``n = 1``)."""
        y = xp.asarray(y)
        if xp.isdtype(y.dtype, "real floating"):
            if not bool(xp.all(xp.round(y) == y)):
                raise TypeError("y must hold integer token ids")
            y = xp.astype(y, xp.int64)
        elif not xp.isdtype(y.dtype, "integral"):
            raise TypeError(f"y must hold integer token ids, got dtype {y.dtype}")
        if y.ndim == 1 and n == 1:
            y = xp.reshape(y, (1, -1))
        if y.ndim != 2 or y.shape[0] != n:
            raise ValueError(f"y must have shape ({n}, T) (next token per step), got {y.shape}")
        if y.size and (bool(xp.any(y < 0)) or bool(xp.any(y >= c))):
            raise ValueError(f"y holds token ids outside [0, {c}) for a vocabulary of {c}")
        return y


def _sig(z: Any, xp: Any) -> Any:
    # σ(z) = (1 + tanh(z/2))/2: no overflow for any z (1/(1+exp(−z)) overflows exp)
    return 0.5 + 0.5 * xp.tanh(0.5 * z)


def _add(a: Any, b: Any) -> Any:
    """``a + b`` where None is zero."""
    if a is None:
        return b
    return a if b is None else a + b


def _broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    nd = max(len(s) for s in shapes)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) for dims in zip(*padded, strict=True))


def _stack(xp: Any, seq: list[Any]) -> Any:
    """Stack per-step arrays on a new time axis ``-2`` (early steps may broadcast smaller)."""
    shape = _broadcast_shapes(*(a.shape for a in seq))
    return xp.stack([xp.broadcast_to(a, shape) for a in seq], axis=-2)


class LSTM(Model):
    """An LSTM language model with dropout sites ``emb``, ``h1 … h{L−1}``, ``out`` (module doc).

    Parameters
    ----------
    params : ``E`` ``(V, d_e)``; per layer ``W{l}`` ``(4H_l, in_l)``, ``U{l}`` ``(4H_l, H_l)``,
        ``b{l}`` ``(4H_l,)``; decoder ``D`` ``(V, H_L)`` (omit it to tie the decoder to ``E``,
        which needs ``H_L = d_e``) and ``bD`` ``(V,)``.
    sites : site names (default: all).
    mask : ``"locked"`` (one mask per sequence, all steps) or ``"per_step"``.
    weight_noise : default DropConnect noise ``{"U{l}": η}`` for every trace (None: none).
    state : default initial state ``[(h_0, c_0), …]`` per layer for every trace (None: zeros).
    """

    site_axes = 1  # a site value is (B, n, T, d): one axis, time
    context_names = ("state", "weight_noise")

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        sites: Iterable[str] | str | None = None,
        mask: str = "locked",
        weight_noise: Mapping[str, Any] | None = None,
        state: Sequence[tuple[Any, Any]] | None = None,
    ) -> None:
        if "E" not in params or "bD" not in params:
            raise ValueError(f"params must hold E, W1, U1, b1, …, bD; got {sorted(params)}")
        xp = namespace(*params.values())
        p = {k: xp.asarray(v) for k, v in params.items()}
        n_layers = 0
        while f"W{n_layers + 1}" in p:
            n_layers += 1
        if n_layers == 0:
            raise ValueError("params must hold at least one LSTM layer (W1, U1, b1)")
        self.tied = "D" not in p
        order = ["E"] + [f"{k}{l}" for l in range(1, n_layers + 1) for k in "WUb"]
        order += ["bD"] if self.tied else ["D", "bD"]
        extra = set(p) - set(order)
        if extra or any(k not in p for k in order):
            raise ValueError(f"params must be exactly {order}; got {sorted(p)}")
        self.params = {k: p[k] for k in order}
        self.vocab, self.emb_dim = (int(s) for s in p["E"].shape)
        self.hidden_sizes = tuple(int(p[f"U{l}"].shape[1]) for l in range(1, n_layers + 1))
        self.n_layers = n_layers
        self._check_shapes(xp)
        self.mask = check_choice(mask, MASKS, "mask")
        self.loss = TokenCrossEntropy()
        self.n_classes = self.vocab
        self.input_dim = 1  # one token id per time step
        widths = [self.emb_dim, *self.hidden_sizes]
        all_sites = self.all_site_names(n_layers)
        self._feed = {s: j + 1 for j, s in enumerate(all_sites)}  # site -> layer it feeds
        self._width = dict(zip(all_sites, widths, strict=True))
        if sites is None:
            sites = all_sites
        elif isinstance(sites, str):
            sites = (sites,)
        sites = tuple(sites)
        bad = [s for s in sites if s not in all_sites]
        if bad or not sites or len(set(sites)) != len(sites):
            raise ValueError(f"sites must be distinct names among {all_sites}, got {list(sites)}")
        self.sites = tuple(Site(s, self._width[s]) for s in all_sites if s in sites)
        self.weight_noise_sites = tuple(f"U{l}" for l in range(1, n_layers + 1))
        self.weight_noise = self._check_weight_noise(weight_noise)
        self.state = state
        self._gate_mask: dict[int, Any] = {}

    @staticmethod
    def all_site_names(n_layers: int) -> tuple[str, ...]:
        """``("emb", "h1", …, "h{L−1}", "out")`` for ``L`` layers."""
        return ("emb", *(f"h{l}" for l in range(1, n_layers)), "out")

    def _check_shapes(self, xp: Any) -> None:
        V, de = self.vocab, self.emb_dim
        dt = self.params["E"].dtype
        want = {"E": (V, de), "bD": (V,)}
        d_in = de
        for l, H in enumerate(self.hidden_sizes, 1):
            want |= {f"W{l}": (4 * H, d_in), f"U{l}": (4 * H, H), f"b{l}": (4 * H,)}
            d_in = H
        if not self.tied:
            want["D"] = (V, d_in)
        elif d_in != de:
            raise ValueError(
                f"a tied decoder (no D in params) needs the last hidden size {d_in} to equal "
                f"the embedding size {de}"
            )
        for k, shape in want.items():
            a = self.params[k]
            if tuple(a.shape) != shape:
                raise ValueError(f"params[{k!r}] must have shape {shape}, got {tuple(a.shape)}")
            if not xp.isdtype(a.dtype, "real floating") or a.dtype != dt:
                raise TypeError(f"params[{k!r}] must share one real floating dtype ({dt})")
            check_finite(a, xp, f"params[{k!r}]")

    @classmethod
    def random(
        cls,
        vocab: int,
        emb: int,
        hidden: int | Sequence[int],
        n_layers: int | None = None,
        *,
        tie: bool = False,
        sites: Iterable[str] | str | None = None,
        mask: str = "locked",
        seed: int | None = 0,
        rng: Any = None,
        scale: float = 1.0,
        dtype: Any = None,
        xp: Any = None,
    ) -> LSTM:
        """A random LSTM with PyTorch's and AWD-LSTM's initialization, times ``scale``.

        ``W, U, b ~ U(−1/√H, 1/√H)`` (``torch.nn.LSTM``), ``E, D ~ U(−0.1, 0.1)``, ``bD = 0``
        (AWD-LSTM).  ``hidden``: one size for every layer (``n_layers`` of them) or a list.
        AWD-LSTM is ``random(10000, 400, [1150, 1150, 400], tie=True)``.
        """
        hs = [int(hidden)] * int(n_layers or 1) if isinstance(hidden, int) else list(hidden)
        if n_layers is not None and len(hs) != n_layers:
            raise ValueError(f"hidden lists {len(hs)} layers but n_layers = {n_layers}")
        if min([vocab, emb, *hs]) < 1:
            raise ValueError(f"sizes must be positive, got vocab={vocab}, emb={emb}, hidden={hs}")
        gen = make_rng(None if rng is not None else seed, rng)
        xp = namespace_of(xp)
        dtype = default_dtype(xp) if dtype is None else dtype

        def u(shape: tuple[int, ...], a: float) -> Any:
            return asarray(scale * a * (2.0 * gen.random(shape) - 1.0), xp, dtype)

        params = {"E": u((vocab, emb), 0.1)}
        d_in = emb
        for l, H in enumerate(hs, 1):
            a = 1.0 / math.sqrt(H)
            params |= {f"W{l}": u((4 * H, d_in), a), f"U{l}": u((4 * H, H), a),
                       f"b{l}": u((4 * H,), a)}
            d_in = H
        if not tie:
            params["D"] = u((vocab, d_in), 0.1)
        params["bD"] = asarray(gen.random(vocab) * 0.0, xp, dtype)
        return cls(params, sites=sites, mask=mask)

    def with_params(self, params: Mapping[str, Any]) -> LSTM:
        """A copy with other parameter values (same shapes), mask and context kept."""
        return LSTM(params, sites=self.site_names, mask=self.mask,
                    weight_noise=self._weight_noise_dict(), state=self.state)

    def with_context(  # type: ignore[override]
        self,
        *,
        state: Sequence[tuple[Any, Any]] | None = None,
        weight_noise: Mapping[str, Any] | None = None,
    ) -> LSTM:
        """A copy whose traces start from ``state`` and use the DropConnect ``weight_noise``.

        The protocol's context (:meth:`~dropcheck.models.Model.with_context`): ``state`` is
        ``[(h_0, c_0), …]`` per layer (``(n, H)`` or ``(B, n, H)``, checked against ``x`` at
        each trace), ``weight_noise`` ``{"U{l}": η}`` (``(B|1, 4H, H)``).  None keeps the
        model's current entry.  The parameters are shared, not copied.
        """
        new = copy.copy(self)
        if weight_noise is not None:
            new.weight_noise = self._check_weight_noise(weight_noise)
        if state is not None:
            new.state = state
        return new

    def with_mask(self, mask: str) -> LSTM:
        """The same network with ``mask="locked"`` or ``"per_step"``."""
        return LSTM(self.params, sites=self.site_names, mask=mask,
                    weight_noise=self._weight_noise_dict())

    def _weight_noise_dict(self) -> dict[str, Any]:
        return {f"U{l}": e for l, e in self.weight_noise.items()}

    def __repr__(self) -> str:
        return (
            f"LSTM(vocab={self.vocab}, emb={self.emb_dim}, hidden={list(self.hidden_sizes)}, "
            f"tied={self.tied}, mask={self.mask!r}, sites={list(self.site_names)})"
        )

    # ----- inputs -----
    def _check_x(self, x: Any) -> tuple[Any, bool]:
        """Check token ids ``(n, T)`` (or one sequence ``(T,)``) in ``[0, V)``; ``(x, single)``.

        :meth:`check_x` runs it once per engine loop (no device → host read per chunk).
        """
        xp = self.xp
        x = xp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] < 1:
            raise ValueError(
                f"x must hold token ids of shape (n, T) or (T,) with T >= 1, got {x.shape}"
            )
        if x.ndim == 2 and x.shape[0] == 0:
            raise ValueError(f"x holds no sequences (shape {tuple(x.shape)}); pass at least one")
        if xp.isdtype(x.dtype, "real floating"):
            if not bool(xp.all(xp.round(x) == x)):
                raise TypeError("x must hold integer token ids")
            x = xp.astype(x, xp.int64)
        elif not xp.isdtype(x.dtype, "integral"):
            raise TypeError(f"x must hold integer token ids, got dtype {x.dtype}")
        if bool(xp.any(x < 0)) or bool(xp.any(x >= self.vocab)):
            raise ValueError(f"x holds token ids outside [0, {self.vocab}) (the vocabulary)")
        single = x.ndim == 1
        return (xp.reshape(x, (1, -1)) if single else x), single

    def noise_shape(self, site: str, n: int, T: int, draws: int = 1) -> tuple[int, ...]:
        """Shape of η at ``site``: ``(B, n, d)`` (locked) or ``(B, n, T, d)`` (per step)."""
        return self.noise_shape_for(site, (n, T), draws)

    def sample_noise(
        self,
        rng: Any,
        n: int,
        T: int,
        q: float | Mapping[str, float],
        draws: int = 1,
        *,
        sites: Iterable[str] | None = None,
        kind: str = "bernoulli",
    ) -> dict[str, Any]:
        """``draws`` samples of the paper's η per site for ``n`` sequences of ``T`` tokens.

        :meth:`~dropcheck.models.Model.sample_noise_for` with inputs of shape ``(n, T)``
        (``kind="rademacher"``: ±sqrt(q/(1−q))).
        """
        return self.sample_noise_for(rng, (n, T), q, draws, sites=sites, kind=kind)

    def _noise(self, noise: Mapping[str, Any] | None, n: int, T: int) -> dict[str, Any]:
        """Noise dict -> ``(B, n|1, d)`` (locked) / ``(B, n|1, T|1, d)`` (per step) arrays."""
        xp = self.xp
        out: dict[str, Any] = {}
        batch = 1
        for s, eta in (noise or {}).items():
            if s not in self.widths:
                raise ValueError(f"noise names site {s!r}; the sites are {list(self.widths)}")
            d = self.widths[s]
            eta = xp.asarray(eta)
            if self.mask == "locked":
                ok = eta.ndim in (2, 3) and eta.shape[-1] == d and eta.shape[-2] in (1, n)
                want = f"(B, {n}|1, {d})"
            else:
                ok = (eta.ndim in (3, 4) and eta.shape[-1] == d and eta.shape[-2] in (1, T)
                      and eta.shape[-3] in (1, n))
                want = f"(B, {n}|1, {T}|1, {d})"
            if not ok:
                hint = (" (per_step masks need a time axis; dropcheck.exact/montecarlo draw one "
                        "mask per sequence and apply to mask='locked' only: use "
                        "model.sample_noise or dropcheck.lm)") if (
                    self.mask == "per_step") else ""
                raise ValueError(f"noise[{s!r}] must have shape {want}, got {eta.shape}{hint}")
            if eta.ndim == (2 if self.mask == "locked" else 3):
                eta = eta[None, ...]
            if eta.shape[0] not in (1, batch) and batch != 1:
                raise ValueError(f"noise batch sizes differ across sites: {batch}, {eta.shape[0]}")
            batch = max(batch, eta.shape[0])
            out[s] = eta
        return out

    def _check_weight_noise(self, wn: Mapping[str, Any] | None) -> dict[int, Any]:
        xp = self.xp
        out: dict[int, Any] = {}
        for k, eta in (wn or {}).items():
            l = int(k[1:]) if isinstance(k, str) and k[:1] == "U" and k[1:].isdigit() else 0
            if not 1 <= l <= self.n_layers:
                raise ValueError(f"weight_noise keys are 'U1' … 'U{self.n_layers}', got {k!r}")
            eta = xp.asarray(eta)
            shape = tuple(self.params[k].shape)
            if eta.ndim not in (2, 3) or tuple(eta.shape[-2:]) != shape:
                raise ValueError(f"weight_noise[{k!r}] must have shape (B|1, *{shape}), got "
                                 f"{eta.shape}")
            out[l] = eta if eta.ndim == 3 else eta[None, ...]
        return out

    def _check_state(self, state: Sequence[tuple[Any, Any]] | None, n: int) -> list[Any]:
        xp = self.xp
        if state is None:
            return [(xp.zeros((1, n, H), dtype=self.dtype),) * 2 for H in self.hidden_sizes]
        if len(state) != self.n_layers:
            raise ValueError(f"state must hold one (h, c) pair per layer ({self.n_layers})")
        out = []
        for l, (pair, H) in enumerate(zip(state, self.hidden_sizes, strict=True), 1):
            hc = []
            for a in pair:
                a = xp.asarray(a)
                if a.ndim not in (2, 3) or tuple(a.shape[-2:]) != (n, H):
                    raise ValueError(f"state of layer {l} must be (n, H) = ({n}, {H}) arrays "
                                     f"(or (B, n, H)), got {a.shape}")
                hc.append(a if a.ndim == 3 else a[None, ...])
            out.append(tuple(hc))
        return out

    # ----- small rules -----
    def _ex(self, a: Any) -> Any:
        """A locked noise (tangent) ``(…, n, d)`` as ``(…, n, 1, d)`` against ``(…, n, T, d)``."""
        return a[..., None, :] if self.mask == "locked" else a

    def _noisy(self, h: Any, eta: Any) -> Any:
        return h if eta is None else h * (1.0 + self._ex(eta))

    def _dec(self) -> Any:
        return self.params["E"] if self.tied else self.params["D"]

    def _U(self, tr: Trace, l: int) -> Any:
        """``U_l`` with the trace's weight mask, ``(4H, H)`` or ``(B, 4H, H)``."""
        U = self.params[f"U{l}"]
        wn = tr.cache["wn"].get(l)
        return U if wn is None else U * (1.0 + wn)

    def _tanh_gate(self, l: int) -> Any:
        """``(4H,)`` indicator of the tanh gate ``g`` among ``(i, f, g, o)``."""
        if l not in self._gate_mask:
            xp, H = self.xp, self.hidden_sizes[l - 1]
            z, o = xp.zeros((H,), dtype=self.dtype), xp.ones((H,), dtype=self.dtype)
            self._gate_mask[l] = xp.concat([z, z, o, z])
        return self._gate_mask[l]

    def _gates(self, z: Any, l: int) -> Any:
        xp, H = self.xp, self.hidden_sizes[l - 1]
        return xp.concat(
            [_sig(z[..., : 2 * H], xp), xp.tanh(z[..., 2 * H : 3 * H]), _sig(z[..., 3 * H :], xp)],
            axis=-1,
        )

    def _d1(self, act: Any, l: int) -> Any:
        # σ' = s(1−s), tanh' = 1 − g²  =  s(1−s) + m(1−s) with m the tanh indicator
        return act * (1.0 - act) + self._tanh_gate(l) * (1.0 - act)

    def _d2_over_d1(self, act: Any, l: int) -> Any:
        # σ''/σ' = 1 − 2s, tanh''/tanh' = −2g  =  (1 − 2s) − m
        return (1.0 - 2.0 * act) - self._tanh_gate(l)

    def _split(self, a: Any, l: int) -> tuple[Any, Any, Any, Any]:
        H = self.hidden_sizes[l - 1]
        return a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]

    def _shifted(self, seq: Any, first: Any) -> Any:
        """``(…, T, H)`` shifted one step later, with ``first`` ``(…, H)`` at ``t = 0``."""
        xp = self.xp
        lead = _broadcast_shapes(seq.shape[:-2], first.shape[:-1])
        head = xp.broadcast_to(first[..., None, :], (*lead, 1, seq.shape[-1]))
        body = xp.broadcast_to(seq[..., :-1, :], (*lead, seq.shape[-2] - 1, seq.shape[-1]))
        return xp.concat([head, body], axis=-2)

    # ----- forward -----
    def trace(
        self,
        x: Any,
        noise: Mapping[str, Any] | None = None,
        *,
        state: Sequence[tuple[Any, Any]] | None = None,
        weight_noise: Mapping[str, Any] | None = None,
    ) -> Trace:
        """Forward pass of tokens ``x`` ``(n, T)`` with noise ``(B, n|1, [T|1,] d)`` per site.

        ``state`` and ``weight_noise`` override the model's context for this pass (None: the
        bound ones, :meth:`with_context`; zeros and no mask by default).
        """
        xp = self.xp
        x2, single = self.check_x(x)
        n, T = x2.shape
        eta = self._noise(noise, n, T)
        wn = self.weight_noise if weight_noise is None else self._check_weight_noise(weight_noise)
        st = self._check_state(self.state if state is None else state, n)
        e = xp.reshape(xp.take(self.params["E"], xp.reshape(x2, (-1,)), axis=0),
                       (1, n, T, self.emb_dim))
        tr = Trace(x2, eta, None, single, {"e": e, "wn": wn, "layers": []})
        u = self._noisy(e, eta.get("emb"))
        for l in range(1, self.n_layers + 1):
            lc = self._layer_forward(tr, l, u, st[l - 1])
            tr.cache["layers"].append(lc)
            u = self._noisy(lc["h"], eta.get(self.site_names_all[l]))
        tr.cache["dec_in"] = u
        tr.logits = matmul(u, xp.matrix_transpose(self._dec()), xp) + self.params["bD"]
        return tr

    @property
    def site_names_all(self) -> tuple[str, ...]:
        """Every possible site name in order (``emb``, ``h1`` …, ``out``), chosen or not."""
        return self.all_site_names(self.n_layers)

    def _layer_forward(self, tr: Trace, l: int, u: Any, state: tuple[Any, Any]) -> dict[str, Any]:
        xp = self.xp
        W, b = self.params[f"W{l}"], self.params[f"b{l}"]
        UT = xp.matrix_transpose(self._U(tr, l))
        pre = matmul(u, xp.matrix_transpose(W), xp) + b  # (B, n, T, 4H): input part, all steps
        h, c = state
        acts, cs, hs = [], [], []
        for t in range(pre.shape[-2]):
            act = self._gates(pre[..., t, :] + matmul(h, UT, xp), l)
            i, f, g, o = self._split(act, l)
            c = f * c + i * g
            h = o * xp.tanh(c)
            acts.append(act)
            cs.append(c)
            hs.append(h)
        return {"u": u, "act": _stack(xp, acts), "c": _stack(xp, cs),
                "h": _stack(xp, hs), "h0": state[0], "c0": state[1]}

    def site_values(self, tr: Trace) -> dict[str, Any]:
        """``h_i`` before its own noise at every step, ``(B|1, n, T, d_i)``."""
        vals = {"emb": tr.cache["e"]}
        for l, lc in enumerate(tr.cache["layers"], 1):
            vals[self.site_names_all[l]] = lc["h"]
        return {s: vals[s] for s in self.site_names}

    def affine_feed(self, site: str) -> AffineFeed | None:
        """The decoder site ``"out"`` feeds the logits, ``F_t = D((1+η)⊙h_t) + b_D``: affine.

        Per token, the logits are affine in the site's mask, and the loss is the sum of the
        token cross-entropies, so ``E ℓ = Σ_t E ℓ_t`` and each token is a row of the
        factorized kernel (``tokens=True``) — for locked masks (one mask shared by the steps:
        each token's marginal is the same) and per-step masks alike.  Other sites feed an LSTM
        layer (a recurrence, not a function of one affine map): None.  No ``pullback``: the
        factorized gradient does not apply (BPTT from a site cotangent is not a primitive).
        """
        self.check_sites((site,), "site")
        if site != self.site_names_all[-1]:
            return None
        return AffineFeed(self._dec(), self.params["bD"], tokens=True,
                          token_loss=CrossEntropy(), w_key="E" if self.tied else "D",
                          b_key="bD")

    def final_state(self, tr: Trace) -> list[tuple[Any, Any]]:
        """``(h_T, c_T)`` per layer, ``(B, n, H)``: the initial state of the next window."""
        return [(lc["h"][..., -1, :], lc["c"][..., -1, :]) for lc in tr.cache["layers"]]

    # ----- forward mode -----
    def tangent(
        self,
        tr: Trace,
        site_tangents: Mapping[str, Any] | None = None,
        noise_tangents: Mapping[str, Any] | None = None,
    ) -> Tangent:
        """Forward-mode sweep: site tangents ``(k, B, n, T, d)``, noise tangents of η's shape.

        Noise tangents are ``(k, B, n, d)`` for locked masks, ``(k, B, n, T, d)`` per step.
        """
        xp = self.xp
        vt = dict(site_tangents or {})
        nt = dict(noise_tangents or {})
        for s in (*vt, *nt):
            self.check_sites((s,), "tangents")
        vals = {"emb": tr.cache["e"]}
        vals |= {self.site_names_all[l]: lc["h"] for l, lc in enumerate(tr.cache["layers"], 1)}
        layers: list[Any] = [None] * self.n_layers
        hdot, udot = None, None
        for j, s in enumerate(self.site_names_all, 1):  # site s feeds layer j (L+1: decoder)
            eta = tr.noise.get(s)
            parts = [] if hdot is None else [self._noisy(hdot, eta)]
            if s in nt:
                parts.append(self._ex(xp.asarray(nt[s])) * vals[s])
            if s in vt:
                parts.append(xp.asarray(vt[s]))
            udot = None
            for p in parts:
                udot = _add(udot, p)
            if j <= self.n_layers and udot is not None:
                layers[j - 1] = self._layer_tangent(tr, j, udot)
                hdot = layers[j - 1]["hdot"]
        if udot is None:  # no tangent at all: the zero tangent
            logits = 0.0 * tr.logits[None, ...]
        else:
            logits = matmul(udot, xp.matrix_transpose(self._dec()), xp)
        return Tangent(logits, vt, nt, {"layers": layers, "dec_in": udot})

    def _layer_tangent(self, tr: Trace, l: int, udot: Any) -> dict[str, Any]:
        xp = self.xp
        lc = tr.cache["layers"][l - 1]
        UT = xp.matrix_transpose(self._U(tr, l))
        zpre = matmul(udot, xp.matrix_transpose(self.params[f"W{l}"]), xp)
        hd = cd = None
        zds, cds, hds = [], [], []
        for t in range(zpre.shape[-2]):
            zd = zpre[..., t, :] if hd is None else zpre[..., t, :] + matmul(hd, UT, xp)
            act = lc["act"][..., t, :]
            i, f, g, o = self._split(act, l)
            di, df, dg, do = self._split(self._d1(act, l) * zd, l)
            cp = lc["c0"] if t == 0 else lc["c"][..., t - 1, :]
            cd = _add(df * cp + di * g + i * dg, None if cd is None else f * cd)
            a = xp.tanh(lc["c"][..., t, :])
            hd = do * a + o * (1.0 - a * a) * cd
            zds.append(zd)
            cds.append(cd)
            hds.append(hd)
        return {"udot": udot, "zdot": _stack(xp, zds), "cdot": _stack(xp, cds),
                "hdot": _stack(xp, hds)}

    # ----- reverse mode and its tangent -----
    def backward(
        self,
        tr: Trace,
        cot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
        *,
        per_example: bool = True,
    ) -> tuple[dict[str, Any], Any]:
        """BPTT of ``cot`` ``(k, B, n, T, V)``: site adjoints ``(k, B, n, T, d)`` and gradients.

        Flat parameter gradients per sequence ``(k, B, n, P)``, or with ``per_example=False``
        summed over the sequences inside the sweep ``(k, B, P)``.
        """
        return self._reverse(tr, cot, tuple(sites), params, per_example, None, None)

    def param_gradient(self, tr: Trace, cot: Any, *, per_example: bool = True) -> Any:
        """The protocol's flat ``∂⟨cot, F⟩/∂W``, summed inside the sweep when not per example."""
        return self._reverse(tr, cot, (), True, per_example, None, None)[1]

    def param_adjoint_tangent(
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, *, per_example: bool = True
    ) -> Any:
        """The protocol's flat ``d/dε ∇_W``, summed inside the sweep when not per example."""
        return self._reverse(tr, g, (), True, per_example, tan, g_dot)[1]

    def adjoint_tangent(
        self,
        tr: Trace,
        tan: Tangent,
        g: Any,
        g_dot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
        *,
        per_example: bool = True,
    ) -> tuple[dict[str, Any], Any]:
        """Tangent of :meth:`backward` of ``g`` along ``tan`` (``g_dot``: the tangent of ``g``).

        Shapes and ``per_example`` as in :meth:`backward`.
        """
        return self._reverse(tr, g, tuple(sites), params, per_example, tan, g_dot)

    def _reverse(
        self,
        tr: Trace,
        g: Any,
        sites: tuple[str, ...],
        params: bool,
        per_example: bool,
        tan: Tangent | None,
        gd: Any,
    ) -> tuple[dict[str, Any], Any]:
        """BPTT of the logit cotangent ``g``; with ``tan`` also its tangent (of ``g``: ``gd``).

        Returns the site adjoints (their tangents with ``tan``) and flat parameter gradients
        (their tangents): per example ``(k, B, n, P)``, or summed over ``n`` ``(k, B, P)``.
        """
        xp = self.xp
        sites = self.check_sites(sites) if sites else ()
        L = self.n_layers
        stop = 1 if params else min((self._feed[s] for s in sites), default=L + 1)
        lts = tan.cache["layers"] if tan is not None else [None] * L
        grads: dict[str, Any] = {}
        out: dict[str, Any] = {}
        gh = gdh = None  # adjoint of the output of the layer below (and its tangent)

        def pg(a: Any, b: Any, ad: Any, bd: Any) -> Any:
            # gradient Σ a ⊗ b, or its tangent Σ ȧ ⊗ b + a ⊗ ḃ
            if tan is None:
                return self._outer(a, b, per_example)
            part = self._outer(ad, b, per_example)
            return part if bd is None else part + self._outer(a, bd, per_example)

        def tsum(a: Any) -> Any:  # Σ over the time axis (and the sequences if summed)
            return xp.sum(a, axis=-2) if per_example else xp.sum(a, axis=(-3, -2))

        dec = self._dec()
        gu, gdu = matmul(g, dec, xp), (None if tan is None else matmul(gd, dec, xp))
        if params:
            dn = pg(g, tr.cache["dec_in"], gd, None if tan is None else tan.cache["dec_in"])
            grads["D"] = dn
            grads["bD"] = tsum(g if tan is None else gd)
        for j in range(L + 1, stop - 1, -1):
            s = self.site_names_all[j - 1]  # the site feeding layer j
            if j <= L:  # LSTM layer j: from the adjoint of its output to that of its input
                lc = tr.cache["layers"][j - 1]
                lt = lts[j - 1]
                gz, gdz = self._layer_reverse(tr, j, gh, gdh, lt)
                W = self.params[f"W{j}"]
                gu, gdu = matmul(gz, W, xp), (None if tan is None else matmul(gdz, W, xp))
                if params:
                    wn = tr.cache["wn"].get(j)
                    hprev = self._shifted(lc["h"], lc["h0"])
                    hdprev = None
                    if lt is not None:
                        hdprev = self._shifted(lt["hdot"], 0.0 * lt["hdot"][..., 0, :])
                    grads[f"W{j}"] = pg(gz, lc["u"], gdz, None if lt is None else lt["udot"])
                    dU = pg(gz, hprev, gdz, hdprev)
                    if wn is not None:  # ∂/∂U = (∂/∂U_eff) ⊙ (1+η), flat like dU
                        keep = xp.reshape(1.0 + wn, (wn.shape[0], -1))  # (B|1, 4H·H)
                        dU = dU * (keep[:, None, :] if per_example else keep)
                    grads[f"U{j}"] = dU
                    grads[f"b{j}"] = tsum(gz if tan is None else gdz)
            if s in sites:
                out[s] = gu if tan is None else gdu
            if j > stop or (params and j == 1):
                eta = tr.noise.get(s)
                gh = self._noisy(gu, eta)
                gdh = None
                if tan is not None:
                    gdh = self._noisy(gdu, eta)
                    if s in tan.noise_tangents:
                        gdh = gdh + gu * self._ex(xp.asarray(tan.noise_tangents[s]))
        if params:  # gh, gdh are now the adjoint of the embedding output e
            dE = self._embedding_grad(tr.x, gh if tan is None else gdh, per_example)
            if self.tied:
                dE = dE + grads.pop("D")  # same (V, d_e) layout, C-order
            grads["E"] = dE
            return out, self._concat(grads, per_example)
        return out, None

    def _layer_reverse(
        self, tr: Trace, l: int, gh_dir: Any, gdh_dir: Any, lt: dict[str, Any] | None
    ) -> tuple[Any, Any]:
        """One LSTM layer backwards in time: the gate adjoints ``∂/∂z_t`` ``(…, T, 4H)``.

        ``gh_dir`` is the adjoint of ``h_t`` from above; with ``gdh_dir`` (not None) also the
        tangent of the sweep, using the layer's forward tangent ``lt`` (None: zero here).
        """
        xp = self.xp
        lc = tr.cache["layers"][l - 1]
        U = self._U(tr, l)
        tangent = gdh_dir is not None
        gz_t: list[Any] = []
        gdz_t: list[Any] = []
        ch = cc = dch = dcc = None  # carries into step t from step t+1 (h and c; tangents)
        for t in range(lc["act"].shape[-2] - 1, -1, -1):
            act = lc["act"][..., t, :]
            i, f, g, o = self._split(act, l)
            a = xp.tanh(lc["c"][..., t, :])
            cp = lc["c0"] if t == 0 else lc["c"][..., t - 1, :]
            d1 = self._d1(act, l)
            gh = _add(gh_dir[..., t, :], ch)
            ga = gh * o
            gc = _add(ga * (1.0 - a * a), cc)
            gact = xp.concat([gc * g, gc * cp, gc * i, gh * a], axis=-1)
            gz = gact * d1
            cc = gc * f
            ch = matmul(gz, U, xp)
            gz_t.append(gz)
            if not tangent:
                continue
            gdh = _add(gdh_dir[..., t, :], dch)
            if lt is None:  # the primal tangent is zero at this layer: the linear rule
                gda = gdh * o
                gdc = _add(gda * (1.0 - a * a), dcc)
                gdact = xp.concat([gdc * g, gdc * cp, gdc * i, gdh * a], axis=-1)
                gdz = gdact * d1
                dcc = gdc * f
            else:
                zd = lt["zdot"][..., t, :]
                di, df, dg, do = self._split(d1 * zd, l)
                cd = lt["cdot"][..., t, :]
                cpd = 0.0 * cd if t == 0 else lt["cdot"][..., t - 1, :]
                ad = (1.0 - a * a) * cd
                gda = gdh * o + gh * do
                gdc = _add(gda * (1.0 - a * a) - 2.0 * ga * a * ad, dcc)
                gdact = xp.concat(
                    [gdc * g + gc * dg, gdc * cp + gc * cpd, gdc * i + gc * di, gdh * a + gh * ad],
                    axis=-1,
                )
                gdz = gdact * d1 + gact * d1 * self._d2_over_d1(act, l) * zd
                dcc = gdc * f + gc * df
            dch = matmul(gdz, U, xp)
            gdz_t.append(gdz)
        gz_all = _stack(xp, gz_t[::-1])
        return gz_all, (_stack(xp, gdz_t[::-1]) if tangent else None)

    # ----- parameter-gradient assembly -----
    def _outer(self, a: Any, b: Any, per_example: bool) -> Any:
        """``Σ_t a_t ⊗ b_t`` for ``a`` ``(…, n, T, p)``, ``b`` ``(…, n, T, r)``: flat ``p·r``.

        Per example ``(…, n, p·r)``; summed over the sequences too ``(…, p·r)``.
        """
        xp = self.xp
        if per_example:
            m = xp.matrix_transpose(a) @ b
        else:
            n, T = a.shape[-3], a.shape[-2]
            a2 = xp.reshape(a, (*a.shape[:-3], n * T, a.shape[-1]))
            b2 = xp.reshape(b, (*b.shape[:-3], n * T, b.shape[-1]))
            m = xp.matrix_transpose(a2) @ b2
        return xp.reshape(m, (*m.shape[:-2], m.shape[-2] * m.shape[-1]))

    def _embedding_grad(self, x: Any, ge: Any, per_example: bool) -> Any:
        """``∂/∂E = Σ_t onehot(x_t) ⊗ ge_t`` as a product with the one-hot matrix (no scatter)."""
        xp = self.xp
        V = self.vocab
        hot = xp.astype(xp.reshape(xp.arange(V), (1, 1, V)) == x[..., None], ge.dtype)  # (n,T,V)
        return self._outer(hot, ge, per_example)

    def _concat(self, grads: dict[str, Any], per_example: bool) -> Any:
        xp = self.xp
        parts = [grads[k] for k in self.params]
        lead = _broadcast_shapes(*(p.shape[:-1] for p in parts))
        return xp.concat([xp.broadcast_to(p, (*lead, p.shape[-1])) for p in parts], axis=-1)

    # ----- conveniences for token inputs -----
    def forward(
        self,
        x: Any,
        noise: Mapping[str, Any] | None = None,
        *,
        state: Sequence[tuple[Any, Any]] | None = None,
        weight_noise: Mapping[str, Any] | None = None,
    ) -> Any:
        """Logits ``F(x, η)``, ``(*batch, n, T, V)``.

        ``noise[site]``: ``(*batch, n|1, d)`` (locked) or ``(*batch, n|1, T, d)`` (per step);
        without ``n`` for one sequence ``x`` ``(T,)``.
        """
        xp = self.xp
        x2, single = self.check_x(x)
        ev = 2 if self.mask == "locked" else 3  # event axes of one draw: (n, d) / (n, T, d)
        batch: tuple[int, ...] = ()
        arrs = {}
        for s, eta in (noise or {}).items():
            eta = xp.asarray(eta)
            if single:
                eta = xp.expand_dims(eta, axis=eta.ndim - ev + 1)
            lead = eta.shape[: eta.ndim - ev]
            batch = lead if len(lead) > len(batch) else batch
            arrs[s] = eta
        flat = {
            s: xp.reshape(xp.broadcast_to(e, (*batch, *e.shape[e.ndim - ev :])),
                          (-1, *e.shape[e.ndim - ev :]))
            for s, e in arrs.items()
        }
        out = self.trace(x2, flat or None, state=state, weight_noise=weight_noise).logits
        out = xp.reshape(out, (*batch, *out.shape[1:])) if batch else out[0, ...]
        return out[..., 0, :, :] if single else out

    def loss_value(
        self, x: Any, y: Any, noise: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        """Per-sequence loss (sum over tokens), shape ``(*batch, n)`` (``(*batch,)``)."""
        x2, single = self.check_x(x)
        y2 = self.check_y(y, x2.shape[0])
        out = self.loss.value(self.forward(x2, noise, **kw), y2)
        return out[..., 0] if single else out

    def hidden(self, x: Any) -> dict[str, Any]:
        """``h_i`` at every site and step, ``(n, T, d_i)`` (``(T, d_i)`` for one sequence)."""
        x2, single = self.check_x(x)
        vals = self.site_values(self.trace(x2))
        return {s: (v[0, 0, ...] if single else v[0, ...]) for s, v in vals.items()}
