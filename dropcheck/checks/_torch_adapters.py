"""The PyTorch calling conventions of the regularizer and noise checkers (imports torch).

Imported by :mod:`dropcheck.checks.adapters` on the first call of a torch adapter, never by
``import dropcheck``.  Both conventions run on a :class:`~dropcheck.models.TorchModel`: the
user's own (``check_*(…, model=dc.from_torch(...), data=(x, y))``) or, for the checkers' random
MLPs, a twin built from ``to_torch_sequential`` with the same weights and parameter order.

- :class:`TorchModule` (``adapter="torch"`` on a torch model): ``fn(module, x, y, q, *, sites,
  rng)``: a float64 copy of the user's module (parameters equal to the model's), in eval mode
  for a regularizer and train mode for noise;
- :class:`Activations` (``adapter="activations"``): ``fn(acts, logits, targets, q, *, head,
  params, sites, inputs, rng)`` with ``acts`` ``{site: activation}`` batch-first, ``logits``
  computed
  from them: every tensor on torch's graph, so a function written for a training loop (that
  differentiates ``logits`` w.r.t. ``acts``, or calls ``backward``) runs as it is.  ``head(values)``
  reruns the forward pass with the sites' outputs replaced by ``values`` (a dict).

What the function returns is wrapped in :class:`GraphOutput`: its value, and the gradient of
that value w.r.t. the parameters when the value is on the graph (the gradient checks of a
regularizer; a noise function may return a scalar *surrogate* whose gradient is the sample).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dropcheck.checks._calls import CallFailed, call
from dropcheck.checks.adapters import Adapter, Problem, to_torch_sequential
from dropcheck.models import MLP
from dropcheck.models.torch_model import TorchModel, from_torch

__all__ = ["GraphOutput", "TorchModule", "Activations", "twin"]


class GraphOutput:
    """A value a torch convention returned, and its parameter gradient on demand.

    ``value`` is what the function returned; :meth:`gradient` differentiates it (its mean over
    the batch when it holds one value per example) w.r.t. ``params`` and returns the flat
    ``(P,)`` numpy gradient in the model's parameter order.
    """

    def __init__(self, value: Any, params: list[Any], n: int):
        self.value = value
        self.params = params
        self.n = n

    @property
    def on_graph(self) -> bool:
        """Whether the value is a tensor that depends on the parameters."""
        return isinstance(self.value, torch.Tensor) and self.value.requires_grad

    def gradient(self, what: str = "fn's value") -> np.ndarray:
        """``∇_θ`` of the value (batch mean of ``(n,)``), flat ``(P,)`` float64."""
        v = self.value
        if not self.on_graph:
            raise CallFailed(f"{what} is not a tensor on the parameters' graph (it was "
                             f"detached, or computed in numpy): its gradient cannot be checked; "
                             f"pass gradients=False")
        if v.numel() == self.n and v.numel() > 1:
            v = v.reshape(-1).mean()
        elif v.numel() != 1:
            raise CallFailed(f"{what} has shape {tuple(v.shape)}: a scalar or one value per "
                             f"example ({self.n},) is differentiated")
        try:
            grads = torch.autograd.grad(v.reshape(()), self.params, allow_unused=True)
        except RuntimeError as exc:
            raise CallFailed(f"differentiating {what} failed: {exc}") from exc
        parts = [np.zeros(tuple(p.shape)) if g is None else g.detach().cpu().double().numpy()
                 for g, p in zip(grads, self.params, strict=True)]
        return np.concatenate([p.ravel() for p in parts])


def twin(pb: Problem) -> TorchModel:
    """The problem's network as a :class:`TorchModel` (itself, or an MLP's torch twin).

    The twin of an MLP is ``to_torch_sequential(net, q)`` wrapped with its ``Dropout`` modules
    as the sites, named as the MLP's (``"x"``, ``"h1"``, …); cached on the problem.
    """
    if isinstance(pb.net, TorchModel):
        return pb.net
    cache = pb.cache
    if "twin" not in cache:
        net = pb.net
        assert isinstance(net, MLP)
        seq = to_torch_sequential(net, 0.5)
        sites: dict[str, str] = {}
        linear = 0
        for j, m in enumerate(seq):
            if isinstance(m, torch.nn.Linear):
                linear += 1
            elif isinstance(m, torch.nn.Dropout):
                sites["x" if linear == 0 else f"h{linear}"] = str(j)
        cache["twin"] = from_torch(seq, pb.x, sites=sites, vectorize="loop")
    return cache["twin"]


def _targets(pb: Problem) -> Any:
    return torch.from_numpy(np.asarray(pb.y).astype(np.int64))


class TorchModule(Adapter):
    """``fn(module, x, y, q, *, sites, rng)`` on a float64 copy of the problem's torch module.

    A :class:`TorchModel` problem hands over a deep copy of the user's module (cast to
    float64, parameters equal to the model's); an MLP problem a fresh ``torch.nn.Sequential``
    (:func:`~dropcheck.checks.adapters.to_torch_sequential`).  Eval mode for a regularizer,
    train mode for gradient noise (``train=`` overrides).
    """

    def __init__(self, train: bool | None = None):
        self.train = train
        self.name = "torch_module()"
        self.hint = "(fn is called as fn(module, x, y, q, *, sites, rng) with torch tensors)"

    def call(self, fn: Callable[..., Any], pb: Problem, q: float, *, train: bool,  # noqa: D102
             rng: np.random.Generator, grads: bool = False) -> Any:
        tm = twin(pb)
        mode = train if self.train is None else self.train
        module = copy.deepcopy(tm.module).to(torch.float64)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(np.asarray(tm.params[name], dtype=np.float64)))
        module.train(mode)
        x = torch.from_numpy(np.array(pb.x))
        x = x.to(torch.float64) if x.is_floating_point() else x.to(torch.int64)
        kw = self.keywords(fn, {"sites": tm.site_names, "rng": rng})
        out = call(lambda: fn(module, x, _targets(pb), q, **kw), who="fn", hint=self.hint)
        params = list(module.parameters())
        if out is None and grads:
            found = [p.grad for p in params]
            if any(g is None for g in found):
                raise CallFailed("fn returned None and left no gradient in some of the "
                                 "module's parameters; return the sample, or call "
                                 "loss.backward() inside fn")
            return found
        return GraphOutput(out, params, pb.n)


class Activations(Adapter):
    """``fn(acts, logits, targets, q, *, head, params, sites, inputs, rng)``: training-loop code.

    ``acts`` maps site names to their clean activations ``(n, *site_shape)`` and ``logits``
    ``(n, [T,] c)`` is computed from them; ``params`` (a list, the model's order) are the leaves
    both depend on; ``inputs`` is the input batch (token ids of a language model).  The
    keywords are passed only when ``fn`` accepts them.
    """

    name = "activations()"
    hint = ("(fn is called as fn(acts, logits, targets, q, *, head, params, sites, rng): acts a "
            "dict site -> torch tensor on the graph)")

    def call(self, fn: Callable[..., Any], pb: Problem, q: float, *, train: bool,  # noqa: D102
             rng: np.random.Generator, grads: bool = False) -> Any:
        tm = twin(pb)
        theta = tm.torch_params(requires_grad=True)
        logits, acts = tm.graph_forward(pb.x, theta)

        def head(values: dict[str, Any]) -> Any:
            if not isinstance(values, dict) or not set(values) <= set(tm.site_names):
                raise ValueError(f"head takes a dict site -> activation with sites among "
                                 f"{list(tm.site_names)}, got {values!r:.80}")
            return tm.graph_forward(pb.x, theta, replace=values)[0]

        params = list(theta.values())
        x = torch.from_numpy(np.array(pb.x))
        kw = self.keywords(fn, {"head": head, "params": params, "sites": tm.site_names,
                                "inputs": x, "rng": rng})
        out = call(lambda: fn(acts, logits, _targets(pb), q, **kw), who="fn", hint=self.hint)
        return GraphOutput(out, params, pb.n)
