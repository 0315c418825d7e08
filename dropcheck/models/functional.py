"""User-defined architectures: numpy functions between dropout sites, differentiated by autograd.

A :class:`Functional` model is a chain of *stages* ``h_{j+1} = f_j(θ, h̃_j)``, ``j = 0 … J−1``,
with ``h_0 = x`` and ``F = h_J`` the logits.  A stage may name a dropout site at its input; the
site's value is ``h_j`` and it feeds ``h̃_j = (1+η)⊙h_j`` forward (the paper's noise, as in
:class:`~dropcheck.models.MLP`); a stage without a site feeds ``h̃_j = h_j``.  ``θ`` is the
whole parameter dict; each stage reads the entries it needs.

Contract for a stage function ``fn(params, h) -> array`` (documented in ``docs/functional.md``):

- written with ``autograd.numpy`` (``import autograd.numpy as anp``), no in-place writes, no
  Python branching on array values;
- *row-wise*: ``h`` has shape ``(..., d_in)`` with any number of leading axes (0 to 4 occur:
  one example ``(d_in,)``, draws × examples ``(B, n, d_in)``, directions × draws × examples
  ``(k, B, n, d_in)``) and the result is ``(..., d_out)``, each row depending only on the same
  row of ``h`` (``h @ W.T + b``, ``anp.tanh``, a layer norm over ``axis=-1`` are row-wise; batch
  norm over examples is not).  With ``vectorized=False`` dropcheck calls ``fn`` on one example
  ``(d_in,)`` at a time instead (a Python loop: slow, for functions that cannot broadcast).

The constructor checks the contract on a probe input (a fixed pseudo-random ``(2, 1, 3, d0)``
batch pushed through the chain: shapes, agreement of every row with the same row evaluated
alone), infers the site widths, and records which parameters each stage depends on (autograd's
trace), so derivatives skip the others.

How the protocol primitives are computed (all in reverse mode, batched over ``k, B, n`` by
evaluating each stage on its input broadcast to the full leading shape — the Jacobian of a
row-wise function is block-diagonal over rows, so one reverse pass gives every row's product):

- ``backward``: the site adjoints ``J_inpᵀ g`` stage by stage, one VJP per stage;
- ``tangent``: ``J_inp v`` by transposing the VJP (``J v = ∇_w ⟨v, Jᵀw⟩``, a VJP of the VJP;
  J. Townsend, "A new trick for calculating Jacobian vector products", 2017), so only
  reverse-mode rules are needed — autograd's forward mode lacks several
  (``erf``, ``expit``, ``astype``, ``convolve``, linear algebra);
- ``adjoint_tangent``: ``d/dε J_inp(h̃+εv)ᵀ(g+εġ) = J_inpᵀ ġ + ∇_h̃ ⟨v, J_inpᵀ g⟩`` (reverse over
  reverse: the Hessian of ``⟨g, f⟩`` is symmetric);
- per-example parameter gradients ``(k, B, n, P)``: parameters are shared by all rows, so one
  reverse pass sums the rows.  The per-row products ``J_θ,rᵀ g_r`` take either one small
  reverse pass per row (a trace per distinct row ``(B, n)``, reused for every direction ``k``)
  or one pass per parameter of the *transposed* VJP batched over all rows (``J_θ,r e_p`` for
  every ``r`` at once, then contracted with ``g``); whichever needs fewer passes is used, stage
  by stage, and only for the parameters the stage reads.  This is the slow path of the model.

CPU only by design: autograd differentiates numpy code, so every array must be a numpy array;
other arrays (cupy, torch, JAX, array-api-strict) raise ``TypeError`` naming the argument.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd.core import make_vjp as _autograd_make_vjp
from autograd.tracer import trace_stack

from dropcheck._validate import check_positive_int
from dropcheck.losses import Loss, get_loss
from dropcheck.models._base import Model, Site, Tangent, Trace

__all__ = ["Functional"]

StageFn = Callable[[Mapping[str, Any], Any], Any]

#: autograd's warning when a traced output does not depend on the traced input.
_INDEPENDENT = "Output seems independent of input"

#: shape of the probe batch the constructor pushes through the chain (directions, draws, examples)
_PROBE_LEAD = (2, 1, 3)


class _Stage(NamedTuple):
    """A stage after analysis: site, function, widths, and the parameters it reads."""

    site: str | None
    fn: StageFn
    d_in: int
    d_out: int
    #: names of the parameters the output depends on (autograd's trace), in dict order
    uses: tuple[str, ...]
    #: positions of those parameters in the flat parameter vector, ``(P_j,)`` int
    index: Any


# ----- autograd helpers (reverse mode only) -----
def _vjp(fun: Callable[[Any], Any], x: Any) -> tuple[Callable[[Any], Any], Any]:
    """``(vjp, fun(x))``: autograd's reverse-mode trace of ``fun`` at ``x``."""
    return _autograd_make_vjp(fun, x)


def _dependence(fun: Callable[[Any], Any], x: Any) -> str:
    """How ``fun``'s output depends on ``x`` for autograd: ``"none"``, ``"zero"``, ``"yes"``.

    ``"none"``: the trace never reaches the output; ``"zero"``: it does, but the VJP does not
    depend on the cotangent (the derivative is identically zero, e.g. through ``floor``).
    autograd signals a missing path only by a warning; for this probe that one warning is
    turned into an exception and caught, so the answer is a value, not a warning.
    """
    top = trace_stack.top
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=_INDEPENDENT, category=UserWarning)
        try:
            vjp, out = _vjp(fun, x)
            try:
                _vjp(vjp, np.zeros(np.shape(out), dtype=np.result_type(out)))
            except UserWarning as w:
                if _INDEPENDENT not in str(w):
                    raise
                return "zero"
        except UserWarning as w:
            if _INDEPENDENT not in str(w):
                raise
            return "none"
        finally:
            # the exception left autograd's trace counter one level up (its context manager
            # has no ``finally``); put it back
            trace_stack.top = top
    return "yes"


def _jvp(fun: Callable[[Any], Any], x: Any, v: Any) -> Any:
    """``J v`` of ``fun`` at ``x``, by transposing the VJP: ``J v = ∇_w ⟨v, Jᵀ w⟩``.

    ``Jᵀ w`` is linear in ``w``, so its VJP at any point (zero here) is ``J``.
    """
    vjp, out = _vjp(fun, x)
    vjp_t, _ = _vjp(vjp, np.zeros(np.shape(out), dtype=np.result_type(out)))
    return vjp_t(v)


def _lead(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast of leading shapes."""
    return tuple(np.broadcast_shapes(*shapes))


def _bcast(a: Any, lead: tuple[int, ...]) -> Any:
    """``a`` ``(..., d)`` broadcast to ``(*lead, d)`` (a read-only view)."""
    return np.broadcast_to(a, (*lead, a.shape[-1]))


def _as_numpy(a: Any, name: str) -> np.ndarray:
    """``a`` as a numpy array; arrays of other libraries raise (the model is CPU-only)."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic | bool | int | float | list | tuple):
        return np.asarray(a)
    raise TypeError(
        f"{name} is a {type(a).__module__}.{type(a).__qualname__}; Functional computes with "
        f"numpy on the CPU (autograd differentiates numpy code): convert it with "
        f"dropcheck.backend.to_numpy(...) first, or use a model with GPU support (MLP)"
    )


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class Functional(Model):
    """A model from the user's own ``autograd.numpy`` functions, with dropout sites between them.

    Parameters
    ----------
    stages : a sequence of ``(site, fn)``: ``site`` is the name of the dropout site at the
        stage's input (``None``: no dropout there), ``fn(params, h)`` maps the stage input
        ``(..., d_in)`` to ``(..., d_out)`` row by row (module docstring).  The first stage
        reads ``x`` ``(..., input_dim)``; the last returns the logits ``(..., c)``.
    params : dict name -> numpy array (one real floating dtype, finite); its order is the
        order of the flat parameter vector (each array C-order).  Every stage receives the
        whole dict.
    input_dim : the width ``d0`` of ``x``.
    loss : ``"cross_entropy"`` (integer labels) or ``"squared"`` (real targets), or a Loss.
    vectorized : ``True`` (default): the stage functions broadcast over leading axes.
        ``False``: dropcheck calls them on one example ``(d_in,)`` at a time.

    Example: an MLP ``x → tanh(W1 x̃ + b1) → W2 h̃1 + b2`` with sites ``"x"`` and ``"h1"``::

        Functional(
            [("x", lambda p, h: anp.tanh(h @ p["W1"].T + p["b1"])),
             ("h1", lambda p, h: h @ p["W2"].T + p["b2"])],
            {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, input_dim=W1.shape[1])

    CPU only: parameters, inputs, noise and (co)tangents must be numpy arrays.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str | None, StageFn]],
        params: Mapping[str, Any],
        input_dim: int,
        loss: str | Loss = "cross_entropy",
        *,
        vectorized: bool = True,
    ) -> None:
        self.input_dim = check_positive_int(input_dim, "input_dim")
        if not isinstance(vectorized, bool):
            raise TypeError(f"vectorized must be True or False, got {vectorized!r}")
        self.vectorized = vectorized
        self.loss = get_loss(loss)
        self.params = self._check_params(params)
        self._dtype = next(iter(self.params.values())).dtype
        self._offsets = {}
        i = 0
        for k, p in self.params.items():
            self._offsets[k] = (i, math.prod(p.shape))
            i += math.prod(p.shape)
        raw = self._check_stages(stages)
        self._stages = self._analyze(raw)
        self.n_classes = self._stages[-1].d_out
        self.sites = tuple(Site(st.site, st.d_in) for st in self._stages if st.site is not None)
        self._site_stage = {st.site: j for j, st in enumerate(self._stages) if st.site}

    # ----- construction -----
    @staticmethod
    def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(params, Mapping) or not params:
            raise ValueError(
                "params must be a non-empty dict name -> array (the weights the stages read)"
            )
        out: dict[str, Any] = {}
        dtype = None
        for k, v in params.items():
            if not isinstance(k, str):
                raise TypeError(f"params keys must be strings, got {k!r}")
            a = _as_numpy(v, f"params[{k!r}]")
            if a.dtype.kind != "f":
                raise TypeError(
                    f"params[{k!r}] must be a real floating array, got dtype {a.dtype} "
                    f"(use e.g. np.asarray(..., dtype=np.float64))"
                )
            if dtype is not None and a.dtype != dtype:
                raise TypeError(
                    f"all params must share one dtype; params[{k!r}] is {a.dtype}, the first "
                    f"is {dtype}"
                )
            dtype = a.dtype
            if not np.all(np.isfinite(a)):
                raise ValueError(f"params[{k!r}] must be finite; it holds NaN or infinity")
            out[k] = a
        return out

    @staticmethod
    def _check_stages(stages: Sequence[Any]) -> list[tuple[str | None, StageFn]]:
        if isinstance(stages, str | bytes) or not isinstance(stages, Sequence) or not stages:
            raise ValueError("stages must be a non-empty list of (site name or None, fn) pairs")
        raw: list[tuple[str | None, StageFn]] = []
        seen: set[str] = set()
        for j, st in enumerate(stages):
            if not isinstance(st, tuple | list) or len(st) != 2:
                raise ValueError(
                    f"stages[{j}] must be a pair (site name or None, fn), got {st!r}"
                )
            site, fn = st
            if site is not None and (not isinstance(site, str) or not site):
                raise TypeError(f"stages[{j}]: the site must be a non-empty str or None, "
                                f"got {site!r}")
            if not callable(fn):
                raise TypeError(f"stages[{j}]: fn must be callable fn(params, h), got {fn!r}")
            if site in seen:
                raise ValueError(f"stages[{j}]: site {site!r} is already used by an earlier "
                                 f"stage; site names must be distinct")
            if site is not None:
                seen.add(site)
            raw.append((site, fn))
        if not seen:
            raise ValueError("no stage names a dropout site: give at least one stage a site "
                             "name, e.g. ('h1', fn)")
        return raw

    def _call(self, fn: StageFn, params: Mapping[str, Any], h: Any) -> Any:
        """``fn(params, h)`` on ``h`` ``(..., d_in)``, looping over rows if not vectorized."""
        if self.vectorized or len(h.shape) == 1:
            return fn(params, h)
        lead = h.shape[:-1]
        rows = anp.reshape(h, (-1, h.shape[-1]))
        out = anp.stack([fn(params, rows[r]) for r in range(rows.shape[0])])
        return anp.reshape(out, (*lead, out.shape[-1]))

    def _analyze(self, raw: list[tuple[str | None, StageFn]]) -> tuple[_Stage, ...]:
        """Push a probe batch through the chain: widths, row-wise contract, dependencies."""
        # a fixed local generator: the probe is the same on every run (no global state)
        gen = np.random.default_rng(0)
        h = (0.5 * gen.standard_normal((*_PROBE_LEAD, self.input_dim))).astype(self._dtype)
        out_stages = []
        for j, (site, fn) in enumerate(raw):
            what = f"stages[{j}] (site {site!r}, fn {_fn_name(fn)})"
            d_in = h.shape[-1]
            out = self._probe(what, fn, h)
            if out.ndim != h.ndim or out.shape[:-1] != h.shape[:-1]:
                raise ValueError(
                    f"{what} must map (..., {d_in}) to (..., d_out) keeping the leading axes; "
                    f"for input {h.shape} it returned {out.shape}. Stage functions act on the "
                    f"last axis and broadcast over leading axes (or pass vectorized=False)"
                )
            self._check_rowwise(what, fn, h, out)
            row = np.ascontiguousarray(h[(0,) * (h.ndim - 1)])
            def of_input(z: Any, fn: StageFn = fn) -> Any:
                return self._call(fn, self.params, z)

            dep = _dependence(of_input, row)
            if dep == "none":
                raise ValueError(
                    f"{what}: autograd finds no path from the stage input h to its output; a "
                    f"stage must compute from h (did the function use another variable?)"
                )
            if dep == "zero":
                raise ValueError(
                    f"{what}: its derivative w.r.t. its input is identically zero for autograd, "
                    f"so dropout before it has no effect on any derivative"
                )
            # parameters the stage reads with a derivative that can be nonzero; the others get
            # exact zeros without being traced
            def of_param(a: Any, k: str, fn: StageFn = fn, r: Any = row) -> Any:
                return self._call(fn, {**self.params, k: a}, r)

            uses = tuple(
                k for k in self.params
                if _dependence(functools.partial(of_param, k=k), self.params[k]) == "yes"
            )
            index = np.concatenate(
                [np.arange(self._offsets[k][0], sum(self._offsets[k])) for k in uses]
                or [np.zeros(0, dtype=np.intp)]
            )
            out_stages.append(_Stage(site, fn, d_in, out.shape[-1], uses, index))
            h = out
        return tuple(out_stages)

    def _probe(self, what: str, fn: StageFn, h: Any) -> Any:
        """``fn(params, h)`` on a probe input, with errors that name the stage."""
        try:
            out = self._call(fn, self.params, h)
        except Exception as e:
            raise ValueError(
                f"{what} failed on a probe input of shape {h.shape}: {type(e).__name__}: {e}. "
                f"Stage functions take (params, h) with h of shape (..., d_in) and broadcast "
                f"over the leading axes (or pass vectorized=False to give them one example "
                f"(d_in,) at a time)"
            ) from e
        if not isinstance(out, np.ndarray) or out.dtype.kind != "f":
            raise ValueError(
                f"{what} must return a real floating numpy array, got {type(out).__name__} "
                f"(dtype {getattr(out, 'dtype', None)})"
            )
        return out

    def _check_rowwise(self, what: str, fn: StageFn, h: Any, out: Any) -> None:
        """Each row of ``fn(h)`` must equal ``fn`` of that row alone (1-D) and of a 3-D slice."""
        # the same row through a different BLAS path differs by rounding; mixing rows is O(1)
        rtol = 4 * math.sqrt(float(np.finfo(out.dtype).eps))
        scale = float(np.nanmax(np.abs(out), initial=0.0)) or 1.0
        atol = rtol * scale
        three = self._probe(what, fn, h[0])
        ok = three.shape == out.shape[1:] and bool(
            np.allclose(three, out[0], rtol=rtol, atol=atol, equal_nan=True)
        )
        for r in np.ndindex(*h.shape[:-1]):
            if not ok:
                break
            one = self._probe(what, fn, np.ascontiguousarray(h[r]))
            ok = one.shape == out.shape[-1:] and bool(
                np.allclose(one, out[r], rtol=rtol, atol=atol, equal_nan=True)
            )
        if not ok:
            raise ValueError(
                f"{what} is not row-wise: evaluated on a batch {h.shape} its rows differ from "
                f"the same rows evaluated alone (shape ({h.shape[-1]},)) or as a 3-D batch. "
                f"Stage functions must act on the last axis only and broadcast over leading "
                f"axes (no mixing across examples, such as batch norm); functions written "
                f"for one example can be used with vectorized=False"
            )

    @property
    def stages(self) -> tuple[tuple[str | None, StageFn], ...]:
        """The stages as given: ``(site or None, fn)`` pairs."""
        return tuple((st.site, st.fn) for st in self._stages)

    @property
    def dtype(self) -> Any:
        """The floating dtype of the parameters."""
        return self._dtype

    def with_params(self, params: Mapping[str, Any]) -> Functional:
        """A copy with other parameter values (same names and shapes); the stages are kept."""
        new_params = self._check_params(params)
        if set(new_params) != set(self.params):
            raise ValueError(
                f"params must have the keys {list(self.params)}, got {list(new_params)}"
            )
        for k, p in self.params.items():
            if new_params[k].shape != p.shape:
                raise ValueError(
                    f"params[{k!r}] must have shape {p.shape}, got {new_params[k].shape}"
                )
        new = copy.copy(self)
        new.params = {k: new_params[k] for k in self.params}
        new._dtype = next(iter(new_params.values())).dtype
        return new

    def __repr__(self) -> str:
        st = ", ".join(f"({s.site!r}, {_fn_name(s.fn)})" for s in self._stages)
        return (
            f"Functional(input_dim={self.input_dim}, stages=[{st}], "
            f"sites={list(self.site_names)}, loss={self.loss.name!r})"
        )

    # ----- input checks (numpy only) -----
    def check_x(self, x: Any) -> tuple[Any, bool]:  # noqa: D102
        return super().check_x(_as_numpy(x, "x"))

    def check_noise(self, noise: Mapping[str, Any] | None, n: int) -> dict[str, Any]:  # noqa: D102
        noise = {s: _as_numpy(e, f"noise[{s!r}]") for s, e in (noise or {}).items()}
        out = super().check_noise(noise, n)
        for s, e in out.items():
            if e.dtype.kind != "f":
                out[s] = e.astype(self._dtype)
            if not np.all(np.isfinite(out[s])):
                raise ValueError(f"noise[{s!r}] must be finite; it holds NaN or infinity")
        return out

    def forward(self, x: Any, noise: Mapping[str, Any] | None = None) -> Any:
        """Logits ``F(x, η)`` as in :meth:`Model.forward` (numpy arrays only)."""
        noise = {s: _as_numpy(e, f"noise[{s!r}]") for s, e in (noise or {}).items()}
        return super().forward(_as_numpy(x, "x"), noise or None)


    def _check_arrays(
        self, arrs: Mapping[str, Any] | None, name: str, lead: tuple[int, ...]
    ) -> dict[str, Any]:
        """Site-keyed ``(k, B, n, d)`` arrays: known sites, numpy, shapes broadcastable."""
        out = {}
        for s, a in (arrs or {}).items():
            self.check_sites((s,), name)
            a = _as_numpy(a, f"{name}[{s!r}]")
            d = self.widths[s]
            if a.ndim != 4 or a.shape[-1] != d or not _broadcastable(a.shape[1:-1], lead):
                raise ValueError(
                    f"{name}[{s!r}] must have shape (k, B, n, {d}) broadcastable against the "
                    f"trace's (B, n) = {lead}, got {a.shape}"
                )
            out[s] = a
        return out

    def _check_cot(self, a: Any, name: str, lead: tuple[int, ...], ndims: tuple[int, ...]) -> Any:
        a = _as_numpy(a, name)
        c = self.n_classes
        if a.ndim not in ndims or a.shape[-1] != c or not _broadcastable(a.shape[-3:-1], lead):
            want = " or ".join({3: f"(B, n, {c})", 4: f"(k, B, n, {c})"}[d] for d in ndims)
            raise ValueError(
                f"{name} must have shape {want} broadcastable against the trace's (B, n) = "
                f"{lead}, got {a.shape}"
            )
        return a

    # ----- protocol -----
    def trace(self, x: Any, noise: Mapping[str, Any] | None = None) -> Trace:  # noqa: D102
        x2, single = self.check_x(x)
        eta = self.check_noise(noise, x2.shape[0])
        h = x2[None, ...]  # (1, n, d0)
        hs, inps = [], []
        for st in self._stages:
            hs.append(h)
            inp = h * (1.0 + eta[st.site]) if st.site in eta else h
            inps.append(inp)
            h = self._call(st.fn, self.params, inp)
        return Trace(x2, eta, h, single, {"h": hs, "inp": inps})

    def site_values(self, tr: Trace) -> dict[str, Any]:  # noqa: D102
        return {s: tr.cache["h"][j] for s, j in self._site_stage.items()}

    def tangent(  # noqa: D102
        self,
        tr: Trace,
        site_tangents: Mapping[str, Any] | None = None,
        noise_tangents: Mapping[str, Any] | None = None,
    ) -> Tangent:
        lead = tr.logits.shape[:-1]
        vt = self._check_arrays(site_tangents, "site_tangents", lead)
        nt = self._check_arrays(noise_tangents, "noise_tangents", lead)
        start = min((self._site_stage[s] for s in (*vt, *nt)), default=len(self._stages))
        hdot = None
        inp_dots: list[Any] = [None] * len(self._stages)
        for j in range(start, len(self._stages)):
            st = self._stages[j]
            s = st.site
            parts = []
            if hdot is not None:
                parts.append(hdot * (1.0 + tr.noise[s]) if s in tr.noise else hdot)
            if s in nt:
                parts.append(nt[s] * tr.cache["h"][j])
            if s in vt:
                parts.append(vt[s])
            inp_dot = parts[0]
            for p in parts[1:]:
                inp_dot = inp_dot + p
            inp_dots[j] = inp_dot
            hdot = self._input_jvp(st, tr.cache["inp"][j], inp_dot)
        if hdot is None:  # no tangent at all: the logit tangent is zero
            hdot = np.zeros((1, *tr.logits.shape), dtype=tr.logits.dtype)
        return Tangent(hdot, vt, nt, {"inp": inp_dots, "start": start})

    def _stop(self, sites: tuple[str, ...], params: bool) -> int:
        """The first stage a reverse sweep must reach."""
        first = [self._site_stage[s] for s in sites]
        if params:
            first += [j for j, st in enumerate(self._stages) if st.uses][:1]
        return min(first, default=len(self._stages))

    def backward(  # noqa: D102
        self, tr: Trace, cot: Any, sites: Iterable[str] = (), params: bool = False
    ) -> tuple[dict[str, Any], Any]:
        sites = tuple(sites)
        if sites:
            self.check_sites(sites)
        lead = tr.logits.shape[:-1]
        g = self._check_cot(cot, "cot", lead, (4,))
        stop = self._stop(sites, params)
        grads = None
        if params:
            grads = np.zeros((*_lead(g.shape[:-1], lead), self.n_params), dtype=self._dtype)
        out: dict[str, Any] = {}
        for j in range(len(self._stages) - 1, stop - 1, -1):
            st = self._stages[j]
            inp = tr.cache["inp"][j]
            if params and st.uses:
                self._param_products(st, grads, g, self._of_params(st), [inp])
            if j > stop or st.site in sites:
                g_inp = self._input_vjp(st, inp, g)
                if st.site in sites:
                    out[st.site] = g_inp
                g = g_inp * (1.0 + tr.noise[st.site]) if st.site in tr.noise else g_inp
        return out, grads

    def adjoint_tangent(  # noqa: D102
        self,
        tr: Trace,
        tan: Tangent,
        g: Any,
        g_dot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        sites = tuple(sites)
        if sites:
            self.check_sites(sites)
        if "inp" not in tan.cache or len(tan.cache["inp"]) != len(self._stages):
            raise ValueError("tan must come from this model's tangent() on the same trace")
        lead = tr.logits.shape[:-1]
        ga = self._check_cot(g, "g", lead, (3, 4))
        gd = self._check_cot(g_dot, "g_dot", lead, (4,))
        stop = self._stop(sites, params)
        grads = None
        if params:
            shape = _lead(gd.shape[:-1], ga.shape[:-1], lead)
            grads = np.zeros((*shape, self.n_params), dtype=self._dtype)
        out: dict[str, Any] = {}
        nt = tan.noise_tangents
        for j in range(len(self._stages) - 1, stop - 1, -1):
            st = self._stages[j]
            s = st.site
            inp = tr.cache["inp"][j]
            v = tan.cache["inp"][j]
            if params and st.uses:
                if v is None:  # no input tangent at this stage: the plain VJP of ġ
                    self._param_products(st, grads, gd, self._of_params(st), [inp])
                else:
                    cot = np.concatenate(_broadcast_all(gd, v), axis=-1)
                    build = self._with_adjoint_of_params(st)
                    self._param_products(st, grads, cot, build, [inp, ga])
            if j > stop or s in sites:
                g_inp = self._input_vjp(st, inp, ga)
                gd_inp = (
                    self._input_vjp(st, inp, gd) if v is None
                    else self._input_adjoint_tangent(st, inp, ga, gd, v)
                )
                if s in sites:
                    out[s] = gd_inp
                eta = tr.noise.get(s) if s is not None else None
                ga = g_inp * (1.0 + eta) if eta is not None else g_inp
                gd = gd_inp * (1.0 + eta) if eta is not None else gd_inp
                if s in nt:
                    gd = gd + nt[s] * g_inp
        return out, grads

    # ----- per-stage derivative products, batched over the leading axes -----
    def _input_jvp(self, st: _Stage, inp: Any, v: Any) -> Any:
        """``J_inp v`` per row: ``(k, B, n, d_out)`` for ``v`` ``(k, B, n, d_in)``."""
        lead = _lead(inp.shape[:-1], v.shape[:-1])
        return _jvp(
            lambda z: self._call(st.fn, self.params, z), _bcast(inp, lead), _bcast(v, lead)
        )

    def _input_vjp(self, st: _Stage, inp: Any, g: Any) -> Any:
        """``J_inpᵀ g`` per row, ``(*lead, d_in)``."""
        lead = _lead(inp.shape[:-1], g.shape[:-1])
        vjp, _ = _vjp(lambda z: self._call(st.fn, self.params, z), _bcast(inp, lead))
        return vjp(_bcast(g, lead))

    def _input_adjoint_tangent(self, st: _Stage, inp: Any, g: Any, g_dot: Any, v: Any) -> Any:
        """``J_inpᵀ ġ + ∇_inp ⟨v, J_inpᵀ g⟩`` per row (the tangent of ``J_inpᵀ g``)."""
        lead = _lead(inp.shape[:-1], g.shape[:-1], g_dot.shape[:-1], v.shape[:-1])
        g_f, gd_f, v_f = _bcast(g, lead), _bcast(g_dot, lead), _bcast(v, lead)

        def psi(z: Any) -> Any:
            vjp_in, out = _vjp(lambda u: self._call(st.fn, self.params, u), z)
            return anp.sum(gd_f * out) + anp.sum(v_f * vjp_in(g_f))

        vjp, val = _vjp(psi, _bcast(inp, lead))
        return vjp(np.ones_like(val))

    # ----- per-row parameter products -----
    def _theta(self, st: _Stage) -> Any:
        """The stage's parameters as one flat vector ``(P_j,)``."""
        return np.concatenate([np.reshape(self.params[k], (-1,)) for k in st.uses])

    def _sub_params(self, st: _Stage, theta: Any) -> dict[str, Any]:
        """``params`` with the stage's entries read from the flat ``theta`` (traced)."""
        p = dict(self.params)
        i = 0
        for k in st.uses:
            m = math.prod(p[k].shape)
            p[k] = anp.reshape(theta[i : i + m], p[k].shape)
            i += m
        return p

    def _of_params(self, st: _Stage) -> Callable[..., Callable[[Any], Any]]:
        """``inp`` -> ``θ_j ↦ f_j(θ, inp)`` (any leading axes: one row or a batch of rows)."""
        def build(inp: Any) -> Callable[[Any], Any]:
            return lambda theta: self._call(st.fn, self._sub_params(st, theta), inp)

        return build

    def _with_adjoint_of_params(self, st: _Stage) -> Callable[..., Callable[[Any], Any]]:
        """``(inp, g)`` -> ``θ_j ↦ [f_j(θ, inp), J_inp(θ, inp)ᵀ g]`` (concatenated per row).

        Its VJP with ``[ġ, v]`` is ``d/dε ∇_θ ⟨g + εġ, f_j(θ, inp + εv)⟩`` (for one row).
        """
        def build(inp: Any, g: Any) -> Callable[[Any], Any]:
            def lam(theta: Any) -> Any:
                p = self._sub_params(st, theta)
                vjp_in, out = _vjp(lambda z: self._call(st.fn, p, z), inp)
                return anp.concatenate([out, vjp_in(g)], axis=-1)

            return lam

        return build

    def _param_products(
        self,
        st: _Stage,
        grads: Any,
        cot: Any,
        build: Callable[..., Callable[[Any], Any]],
        args: Sequence[Any],
    ) -> None:
        """``grads[r, index_j] += J_rᵀ cot[r]`` for every row ``r`` of ``grads``' leading shape.

        ``J_r`` is the Jacobian w.r.t. ``θ_j`` of the row function ``build(*rows of args)``
        (``args``: arrays ``(..., d)``; rows of ``grads`` along axes where every ``args`` has
        size 1, typically the directions ``k``, share their row function).  Parameters are
        shared by all rows, so one reverse pass would sum the rows; the per-row products need
        either one reverse pass per distinct row, or one pass per parameter of the transposed
        VJP batched over all rows (``J_r e_p`` for every ``r`` at once).  The cheaper is used.
        """
        lead = grads.shape[:-1]
        keys = _lead(*(a.shape[:-1] for a in args))
        keys = (1,) * (len(lead) - len(keys)) + keys
        args = [_bcast(a, keys) for a in args]
        cot = _bcast(cot, lead)
        theta = self._theta(st)
        if _per_parameter(theta.size, math.prod(keys), math.prod(lead)):
            vjp, out = _vjp(build(*args), theta)  # out: (*keys, m)
            vjp_t, _ = _vjp(vjp, np.zeros(out.shape, dtype=out.dtype))
            for p, col in enumerate(st.index):
                e = np.zeros_like(theta)
                e[p] = 1.0
                grads[..., col] += np.sum(cot * vjp_t(e), axis=-1)
            return
        for key in np.ndindex(*keys):
            vjp, _ = _vjp(build(*(np.ascontiguousarray(a[key]) for a in args)), theta)
            sel = tuple(i if dk > 1 else slice(None) for i, dk in zip(key, keys, strict=True))
            sub = cot[sel]
            res = np.stack([vjp(c) for c in np.reshape(sub, (-1, sub.shape[-1]))])
            view = grads[sel]
            view[..., st.index] += np.reshape(res, (*view.shape[:-1], -1))


def _per_parameter(n_params: int, n_traces: int, n_rows: int) -> bool:
    """Whether one transposed pass per parameter beats one trace per row plus a pass per row.

    Both give the same numbers (exact, up to summation order).  Costs are counted in reverse
    passes, each dominated by autograd's per-operation overhead at dropcheck's sizes.
    """
    return n_params < n_traces + n_rows


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _broadcast_all(*arrays: Any) -> list[Any]:
    """Broadcast the leading axes of ``(..., d_i)`` arrays against each other."""
    lead = _lead(*(a.shape[:-1] for a in arrays))
    return [_bcast(a, lead) for a in arrays]
