r"""Any PyTorch module as a dropcheck model: the site protocol through ``torch.func``.

:func:`from_torch` wraps a ``torch.nn.Module`` whose forward pass contains dropout modules
(``nn.Dropout``, a user's ``LockedDropout``, or any module the user names) and returns a
:class:`TorchModel`.  During dropcheck's forward pass each *site module* is replaced by the
paper's noise (Wei, Kakade & Ma 2020, Sec. 3): its clean value ``h`` (the module's output in eval
mode — the identity for a dropout module) becomes

.. math::
    \tilde h = (1 + E_s η_s) ⊙ h + v_s,

with ``η_s`` the site's noise, one entry per *mask unit* ``(B, n|1, d_s)``, ``E_s`` the map that
lays a mask out over the activation (the declared *mask form*, below) and ``v_s`` the additive
site tangent of the protocol.  Every other module runs in eval mode.

**Mask forms** (``masks={site: form}``; per example, the activation's example axis removed):

- ``"element"`` (default): one mask entry per element; ``d_s`` is the number of elements of
  one example's activation (a per-step mask of a sequence model is this form: ``d = T·H``);
- ``"locked"``: one entry per feature (last axis), shared along every other per-example axis
  (AWD-LSTM's ``LockedDropout``: one mask per sequence, all time steps); ``d_s = H``;
- a tuple of per-example axes: shared along those axes, independent along the others;
- ``"rows"``: whole embedding rows (an ``nn.Embedding`` site: ``h_t = E[x_t]`` is multiplied
  by ``1 + η[x_t]``, one mask entry per vocabulary word, AWD-LSTM's embedding dropout);
  ``d_s`` is the vocabulary size.

A mask shared *across the examples of a batch* is a property of how the noise is drawn, not of
the network: name such sites in ``shared_over_batch``; :meth:`TorchModel.sample_noise` then
draws ``(B, 1, d)`` (per-example expectations — exact, ``R_approx`` — do not depend on it).

**How the primitives are computed.**  ``F(θ, x, η, v)`` is the module's forward pass through
``torch.func.functional_call`` with the sites replaced as above, evaluated on *rows*: the leading
axes ``(k, B, n)`` of a primitive are flattened into the module's batch axis, so one call
evaluates every direction, draw and example.  Examples must not interact (eval mode; the
constructor checks every row of a probe batch against that row alone).  Then

- ``tangent``: one ``torch.func.jvp`` along ``(τ, v)``;
- ``backward``, ``noise_adjoint``: one ``torch.func.vjp`` w.r.t. ``(v, η)``;
- ``adjoint_tangent``, ``noise_adjoint_tangent``: ``jvp`` of that ``vjp`` along ``(τ, v, ġ)``
  (forward over reverse): ``d/dε ∇⟨g + εġ, F(η + ετ, v + εv̇)⟩``;
- per-example parameter gradients ``(k, B, n, P)``: parameters are shared by the rows, so the
  same reverse sweep is mapped over rows of one example each (``torch.func.vmap``, or a loop over
  rows for modules without batching rules such as ``nn.LSTM``; chosen by a probe).

Parameters are ``module.named_parameters()`` in that order (tied weights once), held by dropcheck
as numpy arrays of ``dtype`` (float64 by default); inputs, noise, tangents and results are numpy
arrays, so every algorithm of dropcheck runs on the model unchanged.  torch is imported only
when this module is (``dropcheck.from_torch`` imports it on first call).

**Weight noise** (DropConnect, AWD-LSTM's ``WeightDrop``): ``weight_noise=[parameter names]``
declares weight-noise sites; ``with_context(weight_noise={name: η})`` (``η`` ``(1, *W.shape)``
or ``W.shape``) fixes one mask, ``W ↦ W ⊙ (1+η)``, for every trace, and derivatives are taken at
that mask (``∂/∂W = (∂/∂W_eff) ⊙ (1+η)``).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap

from dropcheck._validate import check_choice, check_q
from dropcheck.losses import Loss, get_loss
from dropcheck.models._base import Model, Site, Tangent, Trace
from dropcheck.models.functional import _broadcastable, _lead
from dropcheck.models.lstm import TokenCrossEntropy

__all__ = ["TorchModel", "from_torch", "MASK_FORMS"]

#: The named mask forms (a tuple of per-example axes is also a form).
MASK_FORMS = ("element", "locked", "rows")

#: torch's warning when it loads its forward-mode decompositions with the deprecated
#: ``torch.jit.script`` (once per process, on the first ``jvp``): not about the user's code.
_JIT_WARNING = r".*torch\.jit\.script.*"


class _Quiet:
    """Silence torch's internal deprecation warning (above) around a ``torch.func`` call."""

    def __enter__(self) -> None:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=_JIT_WARNING, category=DeprecationWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


@dataclass
class _SiteSpec:
    """A site after the probe: where it is, its mask form and its layout."""

    name: str
    path: str
    call: int
    form: Any  # "element" | "locked" | "rows" | tuple of shared per-example axes
    act_shape: tuple[int, ...] = ()
    width: int = 0
    #: shape of the mask per example, ``act_shape`` with 1 along shared axes (not for rows)
    mask_shape: tuple[int, ...] = ()


def _tmap(fn: Callable[..., Any], *trees: Any) -> Any:
    """``fn`` over the tensors of equally structured dicts/tuples/lists (None kept)."""
    t0 = trees[0]
    if t0 is None:
        return None
    if isinstance(t0, dict):
        return {k: _tmap(fn, *(t[k] for t in trees)) for k in t0}
    if isinstance(t0, tuple | list):
        return type(t0)(_tmap(fn, *parts) for parts in zip(*trees, strict=True))
    return fn(*trees)


def _to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy()


class _Runtime:
    """What the patched site modules read during one call of ``F``: noise, tangents, records."""

    def __init__(self) -> None:
        self.eta: dict[str, Any] = {}
        self.v: dict[str, Any] = {}
        self.values: dict[str, Any] | None = None
        self.calls: dict[str, int] = {}
        # probe: (path, call) -> (activation, input)
        self.seen: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.probe = False
        self.state_out: Any = None
        #: site name -> batch-first tensor that replaces the site's output (``graph_forward``)
        self.replace: dict[str, Any] = {}


class TorchModel(Model):
    """A ``torch.nn.Module`` on dropcheck's site protocol (module docstring).

    Build it with :func:`from_torch` (same arguments).
    """

    def __init__(
        self,
        module: nn.Module,
        example: Any,
        *,
        sites: Iterable[str] | Mapping[str, str] | None = None,
        masks: Mapping[str, Any] | None = None,
        loss: str | Loss = "cross_entropy",
        batch_axis: int = 0,
        output: Callable[[Any], Any] | None = None,
        shared_over_batch: Iterable[str] = (),
        weight_noise: Iterable[str] = (),
        dtype: Any = "float64",
        device: Any = None,
        vectorize: str = "auto",
        state: Any = None,
        state_batch_axis: int = 1,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.batch_axis = _check_int(batch_axis, "batch_axis")
        if output is not None and not callable(output):
            raise TypeError(f"output must be a callable (module output -> logits), got {output!r}")
        self._output = output
        self._tdtype = _torch_dtype(dtype)
        first = next(iter(module.parameters()), None)
        if first is None:
            raise ValueError("module has no parameters; dropcheck differentiates w.r.t. them")
        self._device = torch.device(device) if device is not None else first.device
        self._vectorize = check_choice(vectorize, ("auto", "vmap", "loop"), "vectorize")
        # parameters: named_parameters() order, tied tensors once (functional_call re-ties)
        self.params = {
            k: _to_numpy(p.detach().to(self._tdtype)).copy() for k, p in module.named_parameters()
        }
        self._buffers = {
            k: (b.detach().to(self._device, self._tdtype) if b.is_floating_point()
                else b.detach().to(self._device))
            for k, b in module.named_buffers()
        }
        self._theta = self._torch_params(self.params)
        wn = tuple(weight_noise)
        bad = [k for k in wn if k not in self.params]
        if bad:
            raise ValueError(
                f"weight_noise: {bad} are not parameters of the module; its parameters are "
                f"{list(self.params)}"
            )
        self.weight_noise_sites = wn
        self.context_names = ("state", "weight_noise") if wn else ("state",)
        self._weight_noise: dict[str, Any] = {}
        self.state_batch_axis = _check_int(state_batch_axis, "state_batch_axis")
        self._state: Any = None
        self._specs = self._resolve_sites(sites, masks)
        self.shared_over_batch = self._check_names(shared_over_batch, "shared_over_batch")
        self._rt = _Runtime()
        x_ex = self._example(example)
        if state is not None:
            self._state = self._state_tree(state, x_ex.shape[0])
        self._probe(x_ex, loss)
        self.sites = tuple(Site(s.name, s.width) for s in self._specs.values())
        self._check_rows(x_ex)
        self._use_vmap = self._choose_vmap(x_ex)

    # ----- construction -----
    def _torch_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {k: torch.as_tensor(np.asarray(v), device=self._device).to(self._tdtype)
                for k, v in params.items()}

    def _resolve_sites(
        self, sites: Any, masks: Mapping[str, Any] | None
    ) -> dict[str, _SiteSpec]:
        modules = dict(self.module.named_modules())
        dropouts = [k for k, m in modules.items()
                    if k and isinstance(m, nn.modules.dropout._DropoutNd)]
        if sites is None:
            if not dropouts:
                raise ValueError(
                    f"sites=None takes every nn.Dropout module, but {type(self.module).__name__} "
                    f"has none; name the site modules, e.g. sites={{'h1': 'lockdrop'}} (its "
                    f"submodules are {[k for k in modules if k][:12]})"
                )
            sites = dropouts
        if isinstance(sites, str):
            sites = [sites]
        if isinstance(sites, Mapping):
            pairs = list(sites.items())
        else:
            pairs = [(p, p) for p in sites]
        if not pairs:
            raise ValueError("sites must name at least one module (a dropout site)")
        specs: dict[str, _SiteSpec] = {}
        used: set[tuple[str, int]] = set()
        for name, where in pairs:
            if not isinstance(name, str) or not name or not isinstance(where, str):
                raise TypeError(
                    f"sites: each site is a name -> module path string ('path' or 'path#call'), "
                    f"got {name!r}: {where!r}"
                )
            path, _, call = where.partition("#")
            if path not in modules or not path:
                raise ValueError(
                    f"sites: {where!r} (site {name!r}) matches no submodule of "
                    f"{type(self.module).__name__}; its submodules are "
                    f"{[k for k in modules if k]}"
                )
            if call and not call.isdigit():
                raise ValueError(f"sites: {where!r}: the call index after '#' must be an int")
            key = (path, int(call or 0))
            if key in used:
                raise ValueError(f"sites: {where!r} is named twice")
            used.add(key)
            specs[name] = _SiteSpec(name, path, key[1], "element")
        for s, form in (masks or {}).items():
            if s not in specs:
                raise ValueError(f"masks: {s!r} is not a site; the sites are {list(specs)}")
            if isinstance(form, str):
                check_choice(form, MASK_FORMS, f"masks[{s!r}]")
            elif not (isinstance(form, tuple) and all(isinstance(a, int) for a in form)):
                raise TypeError(
                    f"masks[{s!r}] must be one of {MASK_FORMS} or a tuple of per-example axes "
                    f"to share the mask over, got {form!r}"
                )
            specs[s].form = form
        return specs

    def _check_names(self, names: Iterable[str], what: str) -> tuple[str, ...]:
        names = (names,) if isinstance(names, str) else tuple(names)
        bad = [s for s in names if s not in self._specs]
        if bad:
            raise ValueError(f"{what}: {bad} are not sites; the sites are {list(self._specs)}")
        return names

    def _example(self, example: Any) -> np.ndarray:
        x = _as_array(example, "example")
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"example must be a batch (n, ...) with n >= 1, got {x.shape}")
        self._int_input = x.dtype.kind in "iub"
        self.input_shape = tuple(int(s) for s in x.shape[1:])
        self.input_dim = math.prod(self.input_shape)
        return self._checked_x(x)

    def _probe(self, x: np.ndarray, loss: str | Loss) -> None:
        """One clean forward pass: site calls, activation shapes, mask layouts, logits."""
        rt = self._rt
        rt.probe, rt.seen = True, {}
        try:
            with torch.no_grad(), self._patched():
                out = self._call(self._theta, self._inp(x, self._state), {}, {})
        except Exception as e:
            raise ValueError(
                f"the module's forward pass failed on the example batch {x.shape}: "
                f"{type(e).__name__}: {e}"
            ) from e
        finally:
            rt.probe = False
        n = x.shape[0]
        for sp in self._specs.values():
            if (sp.path, sp.call) not in rt.seen:
                times = rt.calls.get(sp.path, 0)
                raise ValueError(
                    f"sites: site {sp.name!r} names call {sp.call} of module {sp.path!r}, which "
                    f"the forward pass calls {times} time(s)"
                )
            h, inp = rt.seen[(sp.path, sp.call)]
            if h.shape[0] != n:
                raise ValueError(
                    f"site {sp.name!r} ({sp.path!r}): its activation has shape "
                    f"{tuple(h.shape)} after moving batch_axis={self.batch_axis} first; "
                    f"expected {n} examples there (is batch_axis right?)"
                )
            sp.act_shape = tuple(int(s) for s in h.shape[1:])
            self._layout(sp, inp)
        if out.ndim < 2 or out.shape[0] != n:
            raise ValueError(
                f"the module's output (the logits) must be (n, ..., c) after moving "
                f"batch_axis={self.batch_axis} first, got {tuple(out.shape)} for n = {n}"
            )
        self.n_classes = int(out.shape[-1])
        self._extra = tuple(int(s) for s in out.shape[1:-1])
        if self._extra and len(self._extra) > 1:
            raise ValueError(f"logits with more than one extra axis {tuple(out.shape)} are not "
                             f"supported; return (n, c) or (n, T, c)")
        base = get_loss(loss)
        if self._extra:
            if base.name != "cross_entropy":
                raise ValueError(
                    f"logits (n, T, c) take the token cross-entropy (loss='cross_entropy', "
                    f"summed over T); got loss={base.name!r}"
                )
            base = TokenCrossEntropy()
        self.loss = base

    def _layout(self, sp: _SiteSpec, inp: Any) -> None:
        act = sp.act_shape
        form = sp.form
        if form == "rows":
            m = self._module(sp.path)
            V = getattr(m, "num_embeddings", None)
            if V is None or inp is None or inp.is_floating_point():
                raise ValueError(
                    f"masks[{sp.name!r}] = 'rows' needs an nn.Embedding site (integer ids in, "
                    f"rows out); {sp.path!r} is a {type(m).__name__}"
                )
            sp.width = int(V)
            sp.mask_shape = ()
            return
        if form == "element":
            shared: tuple[int, ...] = ()
        elif form == "locked":
            if not act:
                raise ValueError(f"masks[{sp.name!r}] = 'locked': the activation has no axes")
            shared = tuple(range(len(act) - 1))
        else:
            shared = form
            bad = [a for a in shared if not -len(act) <= a < len(act)]
            if bad:
                raise ValueError(
                    f"masks[{sp.name!r}] = {form!r}: axes {bad} do not fit the per-example "
                    f"activation of shape {act} (axes 0 … {len(act) - 1})"
                )
            shared = tuple(a % len(act) for a in shared)
        sp.mask_shape = tuple(1 if a in shared else s for a, s in enumerate(act))
        sp.width = math.prod(sp.mask_shape)

    def _module(self, path: str) -> nn.Module:
        return dict(self.module.named_modules())[path]

    def _check_rows(self, x: np.ndarray) -> None:
        """Examples must not interact: each row of a noisy probe against that row alone."""
        gen = np.random.default_rng(0)
        n = min(x.shape[0], 3)
        x = x[:n]
        eta = {s: gen.choice([-1.0, 0.5], size=(n, sp.width)) for s, sp in self._specs.items()}
        te = {s: self._tt(e) for s, e in eta.items()}
        with torch.no_grad(), self._patched():
            st = _tmap(lambda t: t[:n], self._state)
            full = self._call(self._theta, self._inp(x, st), te, {})
            for r in range(n):
                one = self._call(self._theta,
                                 self._inp(x[r : r + 1], _tmap(lambda t, r=r: t[r : r + 1], st)),
                                 {s: e[r : r + 1] for s, e in te.items()}, {})
                scale = float(torch.max(torch.abs(full[r]))) + 1.0
                if float(torch.max(torch.abs(one[0] - full[r]))) > 1e-9 * scale:
                    raise ValueError(
                        "the module mixes examples: row 0 of the batch differs from the same "
                        "example evaluated alone (in eval mode, with dropcheck's noise). "
                        "Examples must be independent (no batch norm in train mode, no "
                        f"attention across the batch); check batch_axis={self.batch_axis}"
                    )

    def _choose_vmap(self, x: np.ndarray) -> bool:
        if self._vectorize != "auto":
            return self._vectorize == "vmap"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a vmap fallback warns: use the loop instead
                warnings.filterwarnings("ignore", message=_JIT_WARNING,
                                        category=DeprecationWarning)
                self._use_vmap = True
                tr = self.trace(x[:2])
                cot = np.ones((1, *tr.logits.shape))
                self.backward(tr, cot, params=True)
        except Exception:  # noqa: BLE001 — any failure of vmap means: loop over rows
            return False
        return True

    # ----- the patched forward pass -----
    def _patched(self) -> Any:
        return _Patch(self)

    def _site_forward(self, path: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        by_call = {sp.call: sp for sp in self._specs.values() if sp.path == path}
        rt = self._rt

        def forward(*args: Any, **kwargs: Any) -> Any:
            j = rt.calls.get(path, 0)
            rt.calls[path] = j + 1
            h = orig(*args, **kwargs)
            sp = by_call.get(j)
            if sp is None:
                return h
            hb = torch.movedim(h, self.batch_axis, 0)
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if rt.probe:
                rt.seen[(path, j)] = (hb, inp)
                return h
            if rt.values is not None:
                rt.values[sp.name] = hb
            out = rt.replace.get(sp.name, hb)
            eta = rt.eta.get(sp.name)
            if eta is not None:
                out = out * (1.0 + self._expand(sp, eta, inp, hb))
            v = rt.v.get(sp.name)
            if v is not None:
                out = out + v
            return torch.movedim(out, 0, self.batch_axis)

        return forward

    def _expand(self, sp: _SiteSpec, eta: Any, inp: Any, hb: Any) -> Any:
        """``E_s η``: the mask rows ``(R, d)`` laid out against the activation ``(R, *act)``."""
        R = hb.shape[0]
        if sp.form == "rows":
            ids = torch.movedim(inp, self.batch_axis, 0).reshape(R, -1)
            picked = torch.gather(eta.expand(R, -1), 1, ids)
            return picked.reshape(*hb.shape[:-1], 1)
        return eta.reshape(eta.shape[0], *sp.mask_shape)

    def _call(self, theta: Mapping[str, Any], inp: Mapping[str, Any], eta: Mapping[str, Any],
              v: Mapping[str, Any]) -> Any:
        """Logit rows ``(R, *X, c)`` of ``F(θ, x, η, v)``.

        ``inp``: rows ``x`` ``(R, *in)`` and the carried ``state`` (a tree of rows, or None).
        """
        rt = self._rt
        rt.eta, rt.v, rt.calls = dict(eta), dict(v), {}
        if self._weight_noise:
            theta = {k: (t * (1.0 + self._weight_noise[k]) if k in self._weight_noise else t)
                     for k, t in theta.items()}
        args: tuple[Any, ...] = (torch.movedim(inp["x"], 0, self.batch_axis),)
        if inp.get("state") is not None:
            args += (_tmap(lambda t: torch.movedim(t, 0, self.state_batch_axis), inp["state"]),)
        out = functional_call(self.module, {**theta, **self._buffers}, args)
        if self._output is not None:
            out = self._output(out)
        elif isinstance(out, tuple | list):
            if rt.values is not None and len(out) > 1:
                rt.state_out = out[1]
            out = out[0]  # (output, state) of a recurrent module
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the module's output must be a tensor (or a tuple starting with "
                            f"one; else pass output=...), got {type(out).__name__}")
        return torch.movedim(out, self.batch_axis, 0)

    # ----- conversions -----
    def _tt(self, a: Any) -> Any:
        """A numpy float array as a torch tensor of the model's dtype and device (a copy)."""
        return torch.tensor(np.asarray(a), dtype=self._tdtype, device=self._device)

    def _inp(self, x: np.ndarray, state: Any) -> dict[str, Any]:
        # no None leaves: vmap maps every leaf of its arguments
        return {"x": self._tx(x)} if state is None else {"x": self._tx(x), "state": state}

    def _state_tree(self, state: Any, n: int) -> Any:
        """The carried state as torch tensors with the example axis first, ``(n, …)`` each."""
        def conv(a: Any) -> Any:
            a = _as_array(a, "state")
            ax = self.state_batch_axis
            if a.ndim <= ax or a.shape[ax] != n:
                raise ValueError(
                    f"state: every tensor needs the {n} examples on state_batch_axis={ax}, got "
                    f"a tensor of shape {a.shape}"
                )
            return torch.movedim(self._tt(a), ax, 0)

        if isinstance(state, torch.Tensor | np.ndarray):
            return conv(state)
        if isinstance(state, tuple | list):
            return type(state)(self._state_tree(t, n) for t in state)
        raise TypeError(f"state must be a tensor or a (nested) tuple/list of them, got "
                        f"{type(state).__name__}")

    def _tx(self, x: np.ndarray) -> Any:
        if self._int_input:
            return torch.tensor(x, dtype=torch.int64, device=self._device)
        return self._tt(x)

    def _checked_x(self, x: Any) -> np.ndarray:
        if self._int_input:
            if x.dtype.kind == "f":
                if not np.all(np.round(x) == x):
                    raise TypeError("x must hold integer ids (the example batch did)")
                x = x.astype(np.int64)
            elif x.dtype.kind not in "iub":
                raise TypeError(f"x must hold integer ids, got dtype {x.dtype}")
        elif x.dtype.kind != "f":
            x = x.astype(self.dtype)
        elif x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if not self._int_input and not np.all(np.isfinite(x)):
            raise ValueError("x must be finite; it holds NaN or infinity")
        return x

    # ----- inputs -----
    def check_x(self, x: Any) -> tuple[Any, bool]:
        """``x`` as ``(n, *input_shape)`` numpy (torch tensors are converted), and ``single``."""
        x = _as_array(x, "x")
        shape = self.input_shape
        single = x.shape == shape
        if single:
            x = x[None, ...]
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
            raise ValueError(
                f"x must have shape (n, {', '.join(map(str, shape))}) like the example batch "
                f"(or {shape} for one example), got {x.shape}"
            )
        return self._checked_x(x), single

    def check_noise(self, noise: Mapping[str, Any] | None, n: int) -> dict[str, Any]:  # noqa: D102
        noise = {s: _as_array(e, f"noise[{s!r}]") for s, e in (noise or {}).items()}
        out = super().check_noise(noise, n)
        for s, e in out.items():
            e = e.astype(self.dtype) if e.dtype != self.dtype else e
            if not np.all(np.isfinite(e)):
                raise ValueError(f"noise[{s!r}] must be finite; it holds NaN or infinity")
            out[s] = e
        return out

    @property
    def dtype(self) -> Any:
        """The numpy dtype of the parameters (float64 by default)."""
        return next(iter(self.params.values())).dtype

    def site_shape(self, site: str) -> tuple[int, ...]:
        """Per-example shape of ``site``'s activation (site values are ``(B, n, *shape)``)."""
        return self._specs[self.check_sites((site,))[0]].act_shape

    def mask_form(self, site: str) -> Any:
        """The declared mask form of ``site`` (``"element"``, ``"locked"``, ``"rows"``, axes)."""
        return self._specs[self.check_sites((site,))[0]].form

    def noise_shape_for(self, site: str, x: Any, draws: int = 1) -> tuple[int, ...]:
        """``(draws, n, d)``; ``(draws, 1, d)`` for a site in ``shared_over_batch``."""
        n = 1 if site in self.shared_over_batch else x.shape[0]
        return (draws, n, self.widths[site])

    def sample_noise(self, rng: Any, n: int, q: float | Mapping[str, float], draws: int = 1,
                     *, sites: Iterable[str] | None = None, kind: str = "bernoulli") -> dict:
        """``draws`` draws of the paper's η per site, ``(draws, n, d)``.

        ``(draws, 1, d)`` for the sites in ``shared_over_batch``; ``kind="rademacher"``: signs
        scaled by ``sqrt(q/(1−q))``.
        """
        from dropcheck.noise import sample_eta, sample_rademacher

        kind = check_choice(kind, ("bernoulli", "rademacher"), "kind")
        sampler = sample_eta if kind == "bernoulli" else sample_rademacher
        names = self.check_sites(sites)
        qd = q if isinstance(q, Mapping) else dict.fromkeys(names, q)
        return {
            s: sampler(rng, (draws, 1 if s in self.shared_over_batch else n, self.widths[s]),
                       qd[s], xp=np, dtype=self.dtype)
            for s in names
            if check_q(qd[s], f"q[{s!r}]") > 0.0
        }

    # ----- copies -----
    def with_params(self, params: Mapping[str, Any]) -> TorchModel:
        """A copy with other parameter values (same names and shapes)."""
        if set(params) != set(self.params):
            raise ValueError(f"params must have the keys {list(self.params)}, got {list(params)}")
        new_params = {}
        for k, p in self.params.items():
            a = np.asarray(_as_array(params[k], f"params[{k!r}]"), dtype=self.dtype)
            if a.shape != p.shape:
                raise ValueError(f"params[{k!r}] must have shape {p.shape}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"params[{k!r}] must be finite; it holds NaN or infinity")
            new_params[k] = a
        new = copy.copy(self)
        new.params = new_params
        new._theta = self._torch_params(new_params)
        return new

    def with_context(self, **context: Any) -> TorchModel:
        """A copy whose traces use a carried ``state`` and/or ``weight_noise={name: η}``.

        ``state``: what the module's forward takes after ``x`` (``module(x, state)``), a tensor
        or a nested tuple/list of them with the examples on ``state_batch_axis``; never
        differentiated.  ``weight_noise``: one DropConnect mask per declared parameter.
        """
        wn = context.pop("weight_noise", None)
        state = context.pop("state", None)
        super().with_context(**context)  # rejects unknown names
        new = copy.copy(self)
        if state is not None:
            sizes: list[int] = []
            _tmap(lambda a: sizes.append(_as_array(a, "state").shape[self.state_batch_axis]),
                  state)
            new._state = self._state_tree(state, sizes[0])
        if wn is None:
            return new
        if not self.weight_noise_sites:
            raise ValueError("weight_noise: declare the weight-noise parameters with "
                             "from_torch(..., weight_noise=[names]) first")
        out: dict[str, Any] = {}
        for k, eta in wn.items():
            if k not in self.weight_noise_sites:
                raise ValueError(f"weight_noise: {k!r} is not a declared weight-noise site "
                                 f"({list(self.weight_noise_sites)})")
            a = _as_array(eta, f"weight_noise[{k!r}]")
            shape = self.params[k].shape
            if a.shape == (1, *shape):
                a = a[0]
            if a.shape != shape:
                raise ValueError(f"weight_noise[{k!r}] must have shape {shape} or (1, *{shape}) "
                                 f"(one mask per trace), got {a.shape}")
            out[k] = self._tt(a)
        new._weight_noise = out
        return new

    def __repr__(self) -> str:
        sites = {s: (sp.path + (f"#{sp.call}" if sp.call else ""), sp.form)
                 for s, sp in self._specs.items()}
        return (f"TorchModel({type(self.module).__name__}, sites={sites}, "
                f"loss={self.loss.name!r}, params={self.n_params})")

    # ----- rows: the leading axes of a primitive flattened into the module's batch -----
    def _rows(self, tr: Trace, lead: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
        """Inputs (``x``, state) and the trace's noise (zeros where none) as rows of ``lead``."""
        R = math.prod(lead)
        xb = np.broadcast_to(tr.x, (*lead[:-1], *tr.x.shape))
        st = _tmap(lambda t: t.expand(*lead[:-1], *t.shape).reshape(R, *t.shape[1:]),
                   tr.cache.get("state"))
        x = self._inp(np.reshape(xb, (R, *tr.x.shape[1:])), st)
        eta = {}
        for s, sp in self._specs.items():
            e = tr.noise.get(s)
            if e is None:
                eta[s] = torch.zeros((R, sp.width), dtype=self._tdtype, device=self._device)
            else:
                eta[s] = self._tt(np.reshape(np.broadcast_to(e, (*lead, sp.width)), (R, -1)))
        return x, eta

    def _flat(self, a: Any, lead: tuple[int, ...], tail: tuple[int, ...]) -> Any:
        return self._tt(np.reshape(np.broadcast_to(a, (*lead, *tail)), (-1, *tail)))

    def _out(self, a: Any, lead: tuple[int, ...]) -> np.ndarray:
        return _to_numpy(a).reshape(*lead, *a.shape[1:])

    # ----- protocol -----
    def trace(  # noqa: D102
        self, x: Any, noise: Mapping[str, Any] | None = None, *, state: Any = None
    ) -> Trace:
        x2, single = self.check_x(x)
        n = x2.shape[0]
        eta = self.check_noise(noise, n)
        B = max((e.shape[0] for e in eta.values()), default=1)
        tr = Trace(x2, eta, None, single)
        st = self._state if state is None else self._state_tree(state, n)
        sizes: list[int] = []
        _tmap(lambda t: sizes.append(t.shape[0]), st)
        if any(k != n for k in sizes):
            raise ValueError(f"state holds {sizes[0]} examples, x holds {n}; pass state=... "
                             f"with the examples of this batch")
        tr.cache["state"] = st
        xr, er = self._rows(tr, (B, n))
        rt = self._rt
        rt.values, rt.state_out = {}, None
        try:
            with torch.no_grad(), self._patched():
                out = self._call(self._theta, xr, {s: er[s] for s in eta}, {})
            vals, state_out = rt.values, rt.state_out
        finally:
            rt.values, rt.state_out = None, None
        tr.logits = self._out(out, (B, n))
        tr.cache["values"] = {s: self._out(v, (B, n)) for s, v in vals.items()}
        tr.cache["state_out"] = _tmap(_to_numpy, state_out)
        return tr

    def graph_forward(
        self, x: Any, params: Mapping[str, Any] | None = None, *,
        replace: Mapping[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """The clean forward pass on torch's autograd graph: ``(logits, {site: activation})``.

        ``params`` maps parameter names to torch tensors (e.g. leaves with
        ``requires_grad=True``; default: the model's parameters as constants); ``replace``
        maps site names to batch-first tensors that replace those sites' outputs.  Logits
        ``(n, *X, c)`` and activations ``(n, *site_shape)`` are batch-first torch tensors of the
        model's dtype that depend on ``params`` (and on the replaced values), so
        ``torch.autograd.grad`` differentiates through them: what a user's training-loop
        function (a regularizer of the site activations) receives from the checkers.
        """
        x2, _ = self.check_x(x)
        theta = self._theta if params is None else dict(params)
        rt = self._rt
        rt.values, rt.state_out, rt.replace = {}, None, dict(replace or {})
        try:
            with self._patched():
                out = self._call(theta, self._inp(x2, self._state), {}, {})
            vals = rt.values
        finally:
            rt.values, rt.state_out, rt.replace = None, None, {}
        return out, {s: vals[s] for s in self.site_names if s in vals}

    def torch_params(self, requires_grad: bool = False) -> dict[str, Any]:
        """The parameters as fresh torch tensors (leaves; ``requires_grad`` as asked)."""
        return {k: t.detach().clone().requires_grad_(requires_grad) for k, t in
                self._theta.items()}

    def final_state(self, tr: Trace) -> Any:
        """The state the module returned (``(output, state)``), numpy, in the module's layout.

        Its example axis (``state_batch_axis``) holds the trace's ``B·n`` rows, draw-major: for
        a clean trace (``B = 1``) it is the initial state of the next window,
        ``model.with_context(state=model.final_state(tr))``.  None if the module returned none.
        """
        return tr.cache.get("state_out")

    def site_values(self, tr: Trace) -> dict[str, Any]:
        """``h_i`` before its own noise, ``(B, n, *site_shape(i))`` (the activation per example)."""
        return {s: tr.cache["values"][s] for s in self.site_names}

    def _check_dirs(self, arrs: Mapping[str, Any] | None, name: str, lead: tuple[int, ...],
                    kind: str) -> dict[str, Any]:
        out = {}
        for s, a in (arrs or {}).items():
            self.check_sites((s,), name)
            a = np.asarray(_as_array(a, f"{name}[{s!r}]"), dtype=self.dtype)
            sp = self._specs[s]
            tail = (sp.width,) if kind == "noise" else sp.act_shape
            if a.ndim != 3 + len(tail) or tuple(a.shape[3:]) != tail or not _broadcastable(
                a.shape[1:3], lead
            ):
                raise ValueError(
                    f"{name}[{s!r}] must have shape (k, B, n, {', '.join(map(str, tail))}) "
                    f"broadcastable against the trace's (B, n) = {lead}, got {a.shape}"
                )
            out[s] = a
        return out

    def _check_cot(self, a: Any, name: str, lead: tuple[int, ...], ndims: tuple[int, ...]) -> Any:
        a = np.asarray(_as_array(a, name), dtype=self.dtype)
        tail = (*self._extra, self.n_classes)
        nd = [d + len(self._extra) for d in ndims]
        if a.ndim not in nd or tuple(a.shape[a.ndim - len(tail):]) != tail or not _broadcastable(
            a.shape[a.ndim - len(tail) - 2 : a.ndim - len(tail)], lead
        ):
            want = " or ".join(f"({'k, ' if d == 4 else ''}B, n, "
                               f"{', '.join(map(str, tail))})" for d in ndims)
            raise ValueError(f"{name} must have shape {want} broadcastable against the trace's "
                             f"(B, n) = {lead}, got {a.shape}")
        return a

    def tangent(  # noqa: D102
        self,
        tr: Trace,
        site_tangents: Mapping[str, Any] | None = None,
        noise_tangents: Mapping[str, Any] | None = None,
    ) -> Tangent:
        blead = tr.logits.shape[:2]
        vt = self._check_dirs(site_tangents, "site_tangents", blead, "site")
        nt = self._check_dirs(noise_tangents, "noise_tangents", blead, "noise")
        if not vt and not nt:
            return Tangent(np.zeros((1, *tr.logits.shape), dtype=self.dtype), vt, nt)
        lead = _lead((1, *blead), *(a.shape[:3] for a in (*vt.values(), *nt.values())))
        xr, er = self._rows(tr, lead)
        v0 = {s: torch.zeros((xr["x"].shape[0], *self._specs[s].act_shape), dtype=self._tdtype,
                             device=self._device) for s in vt}
        tau = {s: (self._flat(nt[s], lead, (sp.width,)) if s in nt else torch.zeros_like(er[s]))
               for s, sp in self._specs.items()}
        vdot = {s: self._flat(a, lead, self._specs[s].act_shape) for s, a in vt.items()}
        with _Quiet(), self._patched():
            out = jvp(lambda e, v: self._call(self._theta, xr, e, v), (er, v0), (tau, vdot))[1]
        return Tangent(self._out(out, lead), vt, nt)

    def backward(  # noqa: D102
        self, tr: Trace, cot: Any, sites: Iterable[str] = (), params: bool = False
    ) -> tuple[dict[str, Any], Any]:
        sites = self.check_sites(tuple(sites)) if tuple(sites) else ()
        g = self._check_cot(cot, "cot", tr.logits.shape[:2], (4,))
        adj, _, grads = self._reverse(tr, g, sites, (), params, None, None)
        return adj, grads

    def adjoint_tangent(  # noqa: D102
        self,
        tr: Trace,
        tan: Tangent,
        g: Any,
        g_dot: Any,
        sites: Iterable[str] = (),
        params: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        sites = self.check_sites(tuple(sites)) if tuple(sites) else ()
        blead = tr.logits.shape[:2]
        ga = self._check_cot(g, "g", blead, (3, 4))
        gd = self._check_cot(g_dot, "g_dot", blead, (4,))
        adj, _, grads = self._reverse(tr, ga, sites, (), params, tan, gd)
        return adj, grads

    def noise_adjoint(  # noqa: D102
        self, tr: Trace, cot: Any, sites: Iterable[str], *, form: str | None = None
    ) -> dict[str, Any]:
        sites = self.check_sites(tuple(sites))
        g = self._check_cot(cot, "cot", tr.logits.shape[:2], (4,))
        if form == "per_step":
            adj, _, _ = self._reverse(tr, g, sites, (), False, None, None)
            return self.noise_terms(tr, adj, sites, form=form)
        _, nadj, _ = self._reverse(tr, g, (), sites, False, None, None)
        return nadj

    def noise_adjoint_tangent(  # noqa: D102
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, sites: Iterable[str]
    ) -> dict[str, Any]:
        sites = self.check_sites(tuple(sites))
        blead = tr.logits.shape[:2]
        ga = self._check_cot(g, "g", blead, (3, 4))
        gd = self._check_cot(g_dot, "g_dot", blead, (4,))
        _, nadj, _ = self._reverse(tr, ga, (), sites, False, tan, gd)
        return nadj

    def noise_terms(  # noqa: D102
        self, tr: Trace, adj: Mapping[str, Any], sites: Iterable[str], *,
        form: str | None = None,
    ) -> dict[str, Any]:
        """``∂⟨u, F⟩/∂η`` per site from the site adjoints ``adj`` ``(k, B, n, *site_shape)``.

        ``form="locked"`` (default): ``E_sᵀ (adj ⊙ h)`` in the mask's own layout,
        ``(k, B, n, d)`` (a sum over shared axes; a scatter-add over ids for ``"rows"``);
        ``"per_step"``: the per-element terms ``adj ⊙ h``, ``(k, B, n, *site_shape)``.
        """
        form = "locked" if form is None else check_choice(form, ("locked", "per_step"), "form")
        vals = self.site_values(tr)
        out = {}
        for s in sites:
            prod = np.asarray(adj[s]) * vals[s]
            if form == "per_step":
                out[s] = prod
                continue
            sp = self._specs[s]
            lead = prod.shape[:3]
            pr = self._flat(prod, lead, sp.act_shape)
            xr, _ = self._rows(tr, lead)
            inp = self._site_input_rows(sp, xr)
            e0 = torch.zeros((pr.shape[0], sp.width), dtype=self._tdtype, device=self._device)
            pull = vjp(lambda e, sp=sp, inp=inp, pr=pr: self._expand(sp, e, inp, pr), e0)[1]
            (ge,) = pull(torch.broadcast_to(pr, pr.shape))
            out[s] = self._out(ge, lead)
        return out

    def _site_input_rows(self, sp: _SiteSpec, xr: Any) -> Any:
        """The ids entering a ``"rows"`` site (module input), for rows ``xr``; None otherwise."""
        if sp.form != "rows":
            return None
        rt = self._rt
        rt.probe, rt.seen = True, {}
        try:
            with torch.no_grad(), self._patched():
                self._call(self._theta, xr, {}, {})
        finally:
            rt.probe = False
        return rt.seen[(sp.path, sp.call)][1]

    def _reverse(
        self,
        tr: Trace,
        g: np.ndarray,
        sites: tuple[str, ...],
        noise_sites: tuple[str, ...],
        params: bool,
        tan: Tangent | None,
        gd: np.ndarray | None,
        per_example: bool = True,
    ) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """``∇_(v, η, θ) ⟨g, F⟩`` per row, or with ``tan`` its tangent along ``(τ, v̇, ġ)``.

        Parameter gradients per example ``(k, B, n, P)``, or with ``per_example=False`` summed
        over the examples inside the sweep ``(k, B, P)`` (one reverse pass per ``(k, B)``).
        """
        blead = tr.logits.shape[:2]
        m = len(self._extra) + 1
        gs: list[Any] = [g if g.ndim == 3 + m else g[None, ...]]
        vt = nt = {}
        if tan is not None:
            gs.append(gd)
            vt = self._check_dirs(tan.site_tangents, "tan.site_tangents", blead, "site")
            nt = self._check_dirs(tan.noise_tangents, "tan.noise_tangents", blead, "noise")
        lead = _lead((1, *blead), *(a.shape[:3] for a in (*gs, *vt.values(), *nt.values())))
        tail = (*self._extra, self.n_classes)
        xr, er = self._rows(tr, lead)
        R = xr["x"].shape[0]
        vsites = tuple(dict.fromkeys((*sites, *vt)))
        v0 = {s: torch.zeros((R, *self._specs[s].act_shape), dtype=self._tdtype,
                             device=self._device) for s in vsites}
        gr = self._flat(gs[0], lead, tail)
        args: list[Any] = [xr, er, v0, gr]
        if tan is not None:
            tau = {s: (self._flat(nt[s], lead, (sp.width,)) if s in nt else torch.zeros_like(er[s]))
                   for s, sp in self._specs.items()}
            vdot = {s: (self._flat(vt[s], lead, self._specs[s].act_shape) if s in vt
                        else torch.zeros_like(v0[s])) for s in vsites}
            args += [tau, vdot, self._flat(gs[1], lead, tail)]
        theta = self._theta
        if not (sites or noise_sites or params):
            return {}, {}, None

        def sweep(xr: Any, er: Any, v0: Any, gr: Any, *tangents: Any) -> Any:
            def pull(e: Any, v: Any, gg: Any) -> Any:
                def f(th: Any, e_sub: Any, v_sub: Any) -> Any:
                    return self._call(th, xr, {**e, **e_sub}, {**v, **v_sub})

                e_sub = {s: e[s] for s in noise_sites}
                v_sub = {s: v[s] for s in sites}
                if params:
                    fn = vjp(f, theta, e_sub, v_sub)[1]
                    gt, ge, gv = fn(gg)
                else:
                    fn = vjp(lambda a, b: f(theta, a, b), e_sub, v_sub)[1]
                    (ge, gv), gt = fn(gg), {}
                return gv, ge, gt

            if not tangents:
                return pull(er, v0, gr)
            tau, vdot, gdot = tangents
            return jvp(pull, (er, v0, gr), (tau, vdot, gdot))[1]

        with _Quiet(), self._patched():
            if not params:
                gv, ge, _ = sweep(*args)
                grads = None
            else:
                group = 1 if per_example else lead[-1]
                gv, ge, gt = self._map_rows(sweep, args, group)
                flat = torch.cat([gt[k].reshape(R // group, -1) for k in self.params], dim=-1)
                grads = self._out(flat, lead if per_example else lead[:-1])
        return ({s: self._out(a, lead) for s, a in gv.items()},
                {s: self._out(a, lead) for s, a in ge.items()}, grads)

    def _map_rows(self, fn: Callable[..., Any], args: Sequence[Any], group: int = 1) -> Any:
        """``fn`` on consecutive groups of ``group`` rows, results stacked.

        ``fn`` takes and returns trees whose tensors have a leading row axis; its gradients
        w.r.t. the shared parameters (summed over the group's rows) come back without it and
        get a group axis here: ``(R / group, *shape)``.  ``group = 1``: per example.
        """
        R = args[0]["x"].shape[0]
        G = R // group
        if self._use_vmap:
            def one(*a: Any) -> Any:
                return fn(*a) if group > 1 else _squeeze_rows(fn(*_tmap(
                    lambda t: t.unsqueeze(0), a)))

            split = _tmap(lambda t: t.reshape(G, group, *t.shape[1:]), list(args)) if group > 1 \
                else list(args)
            gv, ge, gt = vmap(one)(*split)
            if group > 1:
                gv, ge = (_tmap(lambda t: t.reshape(R, *t.shape[2:]), a) for a in (gv, ge))
            return gv, ge, gt
        outs = []
        for j in range(G):
            gv, ge, gt = fn(*_tmap(lambda t, j=j: t[j * group : (j + 1) * group], args))
            outs.append((gv, ge, _tmap(lambda t: t.unsqueeze(0), gt)))
        return _tmap(lambda *ts: torch.cat(ts), *outs)

    # ----- per-example reduction inside the sweep -----
    def param_gradient(self, tr: Trace, cot: Any, *, per_example: bool = True) -> Any:
        """Flat ``∂⟨cot, F⟩/∂W``: per example ``(k, B, n, P)`` or summed ``(k, B, P)``.

        Summed: one reverse pass per ``(k, B)`` over its ``n`` examples (no ``(n, P)`` array).
        """
        g = self._check_cot(cot, "cot", tr.logits.shape[:2], (4,))
        return self._reverse(tr, g, (), (), True, None, None, per_example)[2]

    def param_adjoint_tangent(
        self, tr: Trace, tan: Tangent, g: Any, g_dot: Any, *, per_example: bool = True
    ) -> Any:
        """Flat ``d/dε ∇_W`` of :meth:`adjoint_tangent`, per example or summed over examples."""
        blead = tr.logits.shape[:2]
        ga = self._check_cot(g, "g", blead, (3, 4))
        gd = self._check_cot(g_dot, "g_dot", blead, (4,))
        return self._reverse(tr, ga, (), (), True, tan, gd, per_example)[2]


def _squeeze_rows(out: Any) -> Any:
    """Drop the one-row axis of the site and noise adjoints of a one-example sweep."""
    gv, ge, gt = out
    return _tmap(lambda t: t.squeeze(0), gv), _tmap(lambda t: t.squeeze(0), ge), gt


class _Patch:
    """Swap the site modules' ``forward`` for the noisy one and put the module in eval mode."""

    def __init__(self, model: TorchModel) -> None:
        self.model = model

    def __enter__(self) -> None:
        m = self.model
        self._modes = [(mod, mod.training) for mod in m.module.modules()]
        m.module.eval()
        self._saved = []
        for path in dict.fromkeys(sp.path for sp in m._specs.values()):
            mod = m._module(path)
            had = "forward" in mod.__dict__
            self._saved.append((mod, had, mod.__dict__.get("forward")))
            mod.forward = m._site_forward(path, mod.forward)

    def __exit__(self, *exc: Any) -> None:
        for mod, had, fwd in self._saved:
            if had:
                mod.__dict__["forward"] = fwd
            else:
                del mod.forward
        for mod, mode in self._modes:
            mod.training = mode


def _check_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"{name} must be an int, got {v!r}")
    return int(v)


def _torch_dtype(dtype: Any) -> Any:
    dt: Any = dtype
    if not isinstance(dtype, torch.dtype):
        dt = {"float64": torch.float64, "float32": torch.float32}.get(str(np.dtype(dtype)))
    if dt not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be float64 (default) or float32, got {dtype!r}")
    return dt


def _as_array(a: Any, name: str) -> np.ndarray:
    """``a`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if isinstance(a, torch.Tensor):
        return _to_numpy(a)
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name} must be an array or a torch tensor, got {type(a).__name__}") from e


def from_torch(
    module: nn.Module,
    example: Any,
    *,
    sites: Iterable[str] | Mapping[str, str] | None = None,
    masks: Mapping[str, Any] | None = None,
    loss: str | Loss = "cross_entropy",
    batch_axis: int = 0,
    output: Callable[[Any], Any] | None = None,
    shared_over_batch: Iterable[str] = (),
    weight_noise: Iterable[str] = (),
    dtype: Any = "float64",
    device: Any = None,
    vectorize: str = "auto",
    state: Any = None,
    state_batch_axis: int = 1,
) -> TorchModel:
    """A PyTorch module as a dropcheck :class:`~dropcheck.models.Model` (module docstring).

    Parameters
    ----------
    module : the network, ``x ↦ logits``; its parameters are copied (``dtype``), the module
        itself is not modified (its site modules are swapped only during dropcheck's calls).
    example : a batch of inputs ``(n, *input_shape)`` (examples on ``batch_axis``): fixes the
        input shape and kind (float features or integer ids) and is pushed through the module
        to find the sites' activation shapes and check that examples are independent.
    sites : None: every ``nn.Dropout`` module, named by its path; a list of module paths; or a
        dict ``site name -> "path"`` (``"path#j"``: the ``j``-th call of a module called more
        than once per forward, e.g. AWD-LSTM's one ``LockedDropout`` used at every layer).
    masks : ``site -> form``: ``"element"`` (default), ``"locked"``, ``"rows"`` or a tuple of
        per-example axes the mask is shared over (module docstring).
    loss : ``"cross_entropy"`` (logits ``(n, c)``, or ``(n, T, c)`` summed over tokens) or
        ``"squared"``, or a :class:`~dropcheck.losses.Loss`.
    batch_axis : the example axis of the module's input, site activations and output (1 for a
        time-first ``nn.LSTM``).
    output : a function from the module's output to the logits; default: the output itself,
        or its first element when it is a tuple (a recurrent module's output and state).
    shared_over_batch
        sites whose mask is one per batch (see ``sample_noise``).
    weight_noise
        parameter names that accept a DropConnect mask (see ``with_context``).
    dtype
        ``"float64"`` (default) or ``"float32"``.
    device
        where torch computes (default: the device of the module's parameters).
    vectorize
        per-example gradients by ``"vmap"``, a ``"loop"`` over rows, or ``"auto"``.
    state
        a carried state the forward takes after ``x``, ``module(x, state)`` (a tensor or a
        nested tuple/list; e.g. ``(h0, c0)`` of ``nn.LSTM``), used by every trace unless
        ``trace(..., state=)`` or ``with_context(state=)`` gives another; never differentiated.
    state_batch_axis
        the example axis of every state tensor (1: PyTorch's ``(layers, n, H)``).
    """
    return TorchModel(
        module, example, sites=sites, masks=masks, loss=loss, batch_axis=batch_axis,
        output=output, shared_over_batch=shared_over_batch, weight_noise=weight_noise,
        dtype=dtype, device=device, vectorize=vectorize, state=state,
        state_batch_axis=state_batch_axis,
    )
