"""How the regularizer and noise checkers hand a network to the user's function.

The checkers build small random MLPs (:class:`Problem`: a :class:`~dropcheck.models.MLP`, a batch
``x`` ``(n, d0)`` and integer labels ``y`` ``(n,)``) and call the user's function through an
*adapter*, which converts the network to the user's conventions:

- :func:`weight_lists` (the default, ``adapter="numpy"``): plain weight lists,

  .. code-block:: python

      fn(weights, biases, x, y, q, *, sites, activation, rng)

  ``weights[l]`` is ``(d_{l+1}, d_l)`` (``torch.nn.Linear.weight``'s layout), ``biases[l]`` is
  ``(d_{l+1},)``, ``x`` is ``(n, d0)`` float64, ``y`` ``(n,)`` int64 class labels, ``q`` the
  drop probability of every site.  The keywords are passed only when ``fn`` accepts them (by
  name or ``**kwargs``): ``sites`` names the dropout sites (``"x"`` is the input, ``"h{l}"`` the
  output of the ``l``-th activation, which feeds ``weights[l]``), ``activation`` is one of
  ``tanh, relu, gelu (tanh form), softplus, sigmoid, identity``, ``rng`` a seeded numpy
  ``Generator`` for a stochastic estimator.  ``to_framework`` converts every array first
  (``torch.from_numpy``: the function gets torch tensors in the same layout).
- :func:`torch_sequential` (``adapter="torch"``): a ``torch.nn.Sequential`` of ``Linear`` and
  activation modules with a ``torch.nn.Dropout(q)`` in front of every ``Linear`` whose input is a
  dropout site,

  .. code-block:: python

      fn(model, x, y, q, *, sites, rng)

  with ``x``, ``y`` torch tensors (float64, int64).  The model is built fresh for every call,
  in eval mode for the regularizer checker (the clean network; the ``Dropout`` modules mark the
  sites) and in train mode for the noise checker; ``train=`` overrides.  A noise function may
  return nothing and leave the gradients in ``model.parameters()`` (after ``loss.backward()``).

- :func:`activations` (``adapter="activations"``, needs torch): a function written for a
  training loop, handed the activations at the dropout sites with everything on torch's graph,

  .. code-block:: python

      fn(acts, logits, targets, q, *, head, params, sites, rng)

  ``acts`` maps site names to activations ``(n, *site_shape)``, ``logits`` are computed from
  them, ``targets`` are the labels, ``params`` the parameter leaves (the model's order) and
  ``head(values)`` reruns the network with the sites' outputs replaced.  The checkers
  differentiate what it returns w.r.t. the parameters (the gradient checks of a regularizer; a
  noise function may return a scalar whose gradient is the sample).

Any dropcheck model, a :class:`~dropcheck.models.TorchModel` (``dc.from_torch``) included, can
replace the random MLPs: ``model=..., data=(x, y)`` (:func:`model_problems`).  With a torch
model ``adapter="torch"`` hands the user's own module over (a float64 copy),
``fn(module, x, y, q, *, sites, rng)``.

Conversions: :func:`to_torch_sequential` / :func:`from_torch_sequential` (torch is imported
lazily: dropcheck does not need it), :func:`to_weight_lists`.  Parameters come in dropcheck's
order, ``W1, b1, W2, b2, …``, which is also ``model.parameters()`` order.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dropcheck.checks._calls import CallFailed, call
from dropcheck.models import MLP
from dropcheck.models._base import Model

__all__ = [
    "Problem",
    "Adapter",
    "WeightLists",
    "TorchSequential",
    "weight_lists",
    "torch_sequential",
    "torch_module",
    "activations",
    "get_adapter",
    "to_weight_lists",
    "to_torch_sequential",
    "from_torch_sequential",
    "random_problems",
    "problems_from_nets",
    "model_problems",
]

#: torch module class name per dropcheck activation (GELU in its tanh form, as dropcheck's)
_TORCH_ACTIVATIONS = {
    "tanh": "Tanh",
    "relu": "ReLU",
    "gelu": "GELU",
    "softplus": "Softplus",
    "sigmoid": "Sigmoid",
    "identity": "Identity",
}


def _torch() -> Any:
    """Import torch on first use, with an error that says how to get it."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:  # torch is optional
        raise ImportError("this adapter needs PyTorch: pip install torch (or dropcheck[torch])"
                          ) from exc


@dataclass(frozen=True)
class Problem:
    """One network and batch that a checker hands to the user's function.

    ``net`` is a float64 numpy :class:`~dropcheck.models.MLP` with cross-entropy loss (the
    checkers' random nets) or any dropcheck model with cross-entropy loss (``model=``); ``x``
    its input batch ``(n, …)``; ``y`` the labels ``(n,)`` (``(n, T)`` for a sequence model);
    ``index`` numbers the nets from 1.  ``cache`` holds what adapters derive from the network
    (a torch twin).
    """

    index: int
    net: Model
    x: np.ndarray
    y: np.ndarray
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.x.shape[0])

    @property
    def label(self) -> str:
        """A short name for report rows, e.g. ``net 2 [5, 6, 3] relu, sites h1``."""
        if isinstance(self.net, MLP):
            return (f"net {self.index} {self.net.sizes} {self.net.activation}, sites "
                    f"{','.join(self.net.site_names)}")
        what = type(getattr(self.net, "module", self.net)).__name__
        return f"model {self.index} {what}, sites {','.join(self.net.site_names)}"


def random_problems(
    sizes: Sequence[Sequence[int]],
    activations: Sequence[str],
    sites: Iterable[str] | str | None,
    n_nets: int,
    examples: int,
    scale: float,
    seed: int,
) -> list[Problem]:
    """``n_nets`` random MLPs cycling through ``sizes`` and ``activations``, with batches.

    Net ``i`` has LeCun weights times ``scale`` (:meth:`MLP.random`), inputs ``N(0, 1)`` and
    uniform labels, all from the seed stream ``[seed, i]``.
    """
    out = []
    for i in range(n_nets):
        gen = np.random.default_rng([seed, i])
        sz = list(sizes[i % len(sizes)])
        net = MLP.random(sz, activation=activations[i % len(activations)], sites=sites, rng=gen,
                         scale=scale, seed=None)
        x = gen.standard_normal((examples, sz[0]))
        y = gen.integers(0, sz[-1], size=examples)
        out.append(Problem(i + 1, net, x, y))
    return out


def problems_from_nets(nets: Sequence[MLP], examples: int, seed: int) -> list[Problem]:
    """Problems for the caller's own networks (float64 numpy, cross-entropy) with random batches."""
    out = []
    for i, net in enumerate(nets):
        if not isinstance(net, MLP):
            raise TypeError(f"nets[{i}] must be a dropcheck MLP (convert a torch model with "
                            f"from_torch_sequential), got {type(net).__name__}")
        if net.loss.name != "cross_entropy" or net.dtype != np.float64:
            raise ValueError(f"nets[{i}] must be a float64 numpy MLP with cross-entropy loss")
        gen = np.random.default_rng([seed, i])
        x = gen.standard_normal((examples, net.input_dim))
        y = gen.integers(0, net.n_classes, size=examples)
        out.append(Problem(i + 1, net, x, y))
    return out


def model_problems(model: Any, data: Any) -> list[Problem]:
    """Problems for the caller's models (any dropcheck model, e.g. ``dc.from_torch``) and data.

    ``model`` is one model or a sequence; ``data`` one ``(x, y)`` pair or a sequence of pairs
    (one per model, or several batches for one model).  Each model must have a cross-entropy
    loss; labels must fit ``x`` (the model's ``check_y``).
    """
    models = list(model) if isinstance(model, list | tuple) else [model]
    if not models:
        raise ValueError("model must be a dropcheck model or a non-empty sequence of them")
    for i, m in enumerate(models):
        if not isinstance(m, Model):
            raise TypeError(f"model[{i}] must be a dropcheck Model (wrap a torch module with "
                            f"dc.from_torch(module, example, sites=...)), got {type(m).__name__}")
        if "cross_entropy" not in m.loss.name:
            raise ValueError(f"model[{i}] has loss {m.loss.name!r}; the checkers' references "
                             f"use the cross-entropy (loss='cross_entropy')")
    if data is None:
        raise ValueError("model= needs data=(x, y): a batch of inputs and labels for it")
    pairs = [data] if (isinstance(data, tuple) and len(data) == 2
                       and not isinstance(data[0], tuple)) else list(data)
    if len(models) == 1:
        models = models * len(pairs)
    if len(pairs) != len(models):
        raise ValueError(f"data holds {len(pairs)} (x, y) pairs for {len(models)} models; give "
                         f"one pair, or one per model")
    out = []
    for i, (m, pair) in enumerate(zip(models, pairs, strict=True)):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TypeError(f"data[{i}] must be a pair (x, y), got {type(pair).__name__}")
        from dropcheck.backend import to_numpy

        x, y = np.asarray(to_numpy(pair[0])), np.asarray(to_numpy(pair[1]))
        x2, _ = m.check_x(x)
        m.check_y(y, x2.shape[0])
        out.append(Problem(i + 1, m, np.asarray(x2), y.astype(np.int64)))
    return out


def _accepted_names(fn: Callable[..., Any], offered: tuple[str, ...]) -> frozenset[str]:
    """The names in ``offered`` that ``fn`` accepts as keywords (all of them with ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature: pass only the positional arguments
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return frozenset(offered)
    ok = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(k for k in offered if k in params and params[k].kind in ok)


class Adapter:
    """Calls the user's function on a :class:`Problem` in the user's conventions.

    Subclasses implement :meth:`call`; ``hint`` is added to a ``TypeError`` raised by the user's
    function (the usual symptom of the wrong convention).
    """

    name = "adapter"
    hint = ""

    def keywords(self, fn: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
        """The keywords of ``offered`` that ``fn`` accepts (signature read once per ``fn``)."""
        cache = self.__dict__.setdefault("_accepts", {})
        key = (id(fn), tuple(offered))
        if key not in cache:  # keep fn alive with its entry, so its id is not reused
            cache[key] = (fn, _accepted_names(fn, tuple(offered)))
        names = cache[key][1]
        return {k: v for k, v in offered.items() if k in names}

    def call(self, fn: Callable[..., Any], pb: Problem, q: float, *, train: bool,
             rng: np.random.Generator, grads: bool = False) -> Any:
        """Call ``fn`` on ``pb`` at drop probability ``q``; return what it returned.

        ``train`` is the mode of a framework model; with ``grads`` a ``None`` result may be
        replaced by gradients the function left in the model (torch).  Failures of ``fn`` raise
        :class:`~dropcheck.checks._calls.CallFailed`.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class WeightLists(Adapter):
    """``fn(weights, biases, x, y, q, *, sites, activation, rng)`` (see the module docstring).

    ``to_framework`` converts each numpy array (a fresh copy per call, so the function may
    modify what it gets) before the call, e.g. ``torch.from_numpy``.
    """

    def __init__(self, to_framework: Callable[[np.ndarray], Any] | None = None):
        if to_framework is not None and not callable(to_framework):
            raise TypeError(f"to_framework must be callable, got {type(to_framework).__name__}")
        self.to_framework = to_framework
        self.name = ("weight_lists()" if to_framework is None else
                     f"weight_lists({getattr(to_framework, '__name__', 'to_framework')})")
        self.hint = ("(fn is called as fn(weights, biases, x, y, q, *, sites, activation, rng), "
                     "the keywords only if accepted, with "
                     + ("numpy arrays; for torch tensors pass "
                        "adapter=weight_lists(torch.from_numpy))" if to_framework is None
                        else "converted arrays)"))

    def call(self, fn: Callable[..., Any], pb: Problem, q: float, *, train: bool,  # noqa: D102
             rng: np.random.Generator, grads: bool = False) -> Any:
        conv = self.to_framework or (lambda a: a)
        net = pb.net
        if not isinstance(net, MLP):  # the checkers refuse this pairing before any call
            raise CallFailed("weight lists need an MLP; use adapter='torch' or 'activations'")
        weights, biases = to_weight_lists(net)
        args = ([conv(w) for w in weights], [conv(b) for b in biases], conv(pb.x.copy()),
                conv(pb.y.copy()), q)
        kw = self.keywords(fn, {"sites": net.site_names, "activation": net.activation,
                                "rng": rng})
        return call(lambda: fn(*args, **kw), who="fn", hint=self.hint)


class TorchSequential(Adapter):
    """``fn(model, x, y, q, *, sites, rng)`` with a fresh ``torch.nn.Sequential`` per call.

    ``train`` fixes the model's mode (default: the checker's, eval for a regularizer and train
    for gradient noise); ``dtype`` is the torch dtype of the model and ``x`` (float64 default).
    """

    def __init__(self, train: bool | None = None, dtype: Any = None):
        self.train = train
        self.dtype = dtype
        self.name = "torch_sequential()"

    def call(self, fn: Callable[..., Any], pb: Problem, q: float, *, train: bool,  # noqa: D102
             rng: np.random.Generator, grads: bool = False) -> Any:
        if not isinstance(pb.net, MLP):  # the user's own torch model: hand its module over
            return torch_module(train=self.train).call(fn, pb, q, train=train, rng=rng,
                                                       grads=grads)
        torch = _torch()
        dtype = torch.float64 if self.dtype is None else self.dtype
        mode = train if self.train is None else self.train
        model = to_torch_sequential(pb.net, q, train=mode, dtype=dtype)
        x = torch.from_numpy(pb.x.copy()).to(dtype)
        y = torch.from_numpy(pb.y.astype(np.int64))
        kw = self.keywords(fn, {"sites": pb.net.site_names, "rng": rng})
        out = call(lambda: fn(model, x, y, q, **kw), who="fn")
        if out is None and grads:
            found = [p.grad for p in model.parameters()]
            if any(g is None for g in found):
                raise CallFailed("fn returned None and left no gradient in some of "
                                 "model.parameters(); return the noise, or call "
                                 "loss.backward() inside fn")
            return found
        if grads:
            return out
        from dropcheck.checks._torch_adapters import GraphOutput

        return GraphOutput(out, list(model.parameters()), pb.n)


def weight_lists(to_framework: Callable[[np.ndarray], Any] | None = None) -> WeightLists:
    """The weight-list adapter; ``to_framework`` (e.g. ``torch.from_numpy``) converts arrays."""
    return WeightLists(to_framework)


def torch_sequential(*, train: bool | None = None, dtype: Any = None) -> TorchSequential:
    """The ``torch.nn.Sequential`` adapter (imports torch when first called on a problem)."""
    return TorchSequential(train=train, dtype=dtype)


def torch_module(*, train: bool | None = None) -> Adapter:
    """``fn(module, x, y, q, *, sites, rng)`` on a torch model's own module (imports torch)."""
    _torch()
    from dropcheck.checks._torch_adapters import TorchModule

    return TorchModule(train=train)


def activations() -> Adapter:
    """``fn(acts, logits, targets, q, *, head, params, sites, rng)`` (imports torch)."""
    _torch()
    from dropcheck.checks._torch_adapters import Activations

    return Activations()


def get_adapter(adapter: Adapter | str | None) -> Adapter:
    """An :class:`Adapter` from an instance or a name.

    ``"numpy"`` (default), ``"torch"`` (a ``Sequential``, or the user's module for a torch
    model) or ``"activations"`` (site activations on torch's graph).
    """
    if adapter is None or adapter == "numpy":
        return WeightLists()
    if adapter == "torch":
        return TorchSequential()
    if adapter == "activations":
        return activations()
    if isinstance(adapter, Adapter):
        return adapter
    raise ValueError(f"adapter must be 'numpy', 'torch', 'activations', weight_lists(...) or "
                     f"torch_sequential(...); got {adapter!r}")


def to_weight_lists(net: MLP) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Copies of ``net``'s weights ``(d_{l+1}, d_l)`` and biases ``(d_{l+1},)`` as numpy lists."""
    from dropcheck.backend import to_numpy

    L = net.n_layers
    return ([np.array(to_numpy(net.params[f"W{i}"])) for i in range(1, L + 1)],
            [np.array(to_numpy(net.params[f"b{i}"])) for i in range(1, L + 1)])


def to_torch_sequential(net: MLP, q: float | None = None, *, train: bool = False,
                        dtype: Any = None) -> Any:
    """``net`` as a ``torch.nn.Sequential``: ``[Dropout(q)] Linear, act, [Dropout(q)] Linear, …``.

    A ``Dropout(q)`` precedes each ``Linear`` whose input is a dropout site of ``net`` (none
    when ``q`` is None).  ``gelu`` becomes ``GELU(approximate="tanh")``, dropcheck's form.
    Weights are copied; ``dtype`` defaults to ``torch.float64``; ``train`` sets the mode.
    """
    torch = _torch()
    nn = torch.nn
    dtype = torch.float64 if dtype is None else dtype
    weights, biases = to_weight_lists(net)
    layers = []
    sites = set(net.site_names)
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if q is not None and ("x" if i == 0 else f"h{i}") in sites:
            layers.append(nn.Dropout(q))
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            act = getattr(nn, _TORCH_ACTIVATIONS[net.activation])
            layers.append(act(approximate="tanh") if net.activation == "gelu" else act())
    return nn.Sequential(*layers).train(train)


def _activation_name(module: Any) -> str:
    """The dropcheck name of a torch activation module (refusing the ones it cannot match)."""
    kind = type(module).__name__
    names = {v: k for k, v in _TORCH_ACTIVATIONS.items()}
    if kind not in names:
        raise ValueError(f"{kind} is not an activation dropcheck models; use one of "
                         f"{sorted(names)}")
    if kind == "GELU" and module.approximate != "tanh":
        raise ValueError("GELU(approximate='none') (erf) differs from dropcheck's gelu; use "
                         "GELU(approximate='tanh')")
    if kind == "Softplus" and (module.beta != 1 or module.threshold < 20):
        raise ValueError("only Softplus(beta=1) with threshold >= 20 matches dropcheck's softplus")
    return names[kind]


def from_torch_sequential(model: Any, *, sites: Iterable[str] | str | None = None) -> MLP:
    """A float64 numpy :class:`~dropcheck.models.MLP` with the weights of a torch ``Sequential``.

    ``model`` holds ``Linear`` layers, one activation kind between them, and optionally
    ``Dropout`` modules in front of a ``Linear``: those become the dropout sites (``"x"`` before
    the first ``Linear``, ``"h{l}"`` before the ``l+1``-th) unless ``sites`` is given.  The loss
    is cross-entropy.  Anything else raises ``ValueError`` naming the module.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a torch.nn.Sequential, got {type(model).__name__}")
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    acts: list[str] = []
    found: list[str] = []
    expect = "linear"  # what may come next: a Linear (after a Dropout) or anything
    for j, m in enumerate(model):
        if isinstance(m, nn.Linear):
            if m.bias is None:
                raise ValueError(f"model[{j}] is a Linear without bias; dropcheck's MLP has biases")
            if weights and len(acts) != len(weights):
                raise ValueError(f"model[{j}]: two Linear layers without an activation between "
                                 f"them (use torch.nn.Identity() for a linear stage)")
            weights.append(m.weight.detach().cpu().double().numpy().copy())
            biases.append(m.bias.detach().cpu().double().numpy().copy())
            expect = "any"
        elif isinstance(m, nn.Dropout):
            found.append("x" if not weights else f"h{len(weights)}")
            expect = "linear"
        elif expect == "linear" or len(acts) == len(weights):
            raise ValueError(f"model[{j}] ({type(m).__name__}) must follow a Linear and precede "
                             f"a Dropout or Linear: dropout sites sit in front of a Linear")
        else:
            try:
                acts.append(_activation_name(m))
            except ValueError as exc:
                raise ValueError(f"model[{j}]: {exc}") from None
    if not weights or len(acts) != len(weights) - 1 or expect == "linear":
        raise ValueError("model must be Linear, activation, [Dropout], Linear, ... ending with a "
                         "Linear (the logits)")
    if len(set(acts)) > 1:
        raise ValueError(f"model mixes activations {sorted(set(acts))}; dropcheck's MLP has one")
    return MLP(weights, biases, acts[0] if acts else "identity",
               sites if sites is not None else (found or None))
