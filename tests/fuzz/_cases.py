"""The fuzzed entry points and the adversarial values of each argument role.

Every public function of dropcheck's numerical API appears once in :data:`ENTRIES` (an
:class:`Entry`: how to call it from a dict of arguments, valid arguments, the role of each
argument, and the documented shape of its primary output).  A fuzz case takes one entry,
replaces one argument (or none) by an adversarial value of its role (:func:`adversarial`),
and runs the call through :func:`tests.fuzz._harness.run_case`.

The roles and their values follow the categories of issue 18's table: duplicated sites, odd
seeds, chunk sizes ``0/−1/2.5/True``, empty batches, complex and string arrays, NaN/inf in
secondary arrays, bad callables, mixed dtypes (torch tensors when torch is installed), numpy
integers as counts, float16, wrong LSTM target shapes.  Huge counts, which are valid and only
need bounded memory, are run by tests/fuzz/test_fuzz_memory.py in a child process instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck import (
    classical,
    ensembles,
    exact,
    explicit,
    fast_dropout,
    gaussian_dropout,
    glm,
    implicit,
    linear_nets,
    montecarlo,
    theory,
)

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None


@dataclass(frozen=True)
class Entry:
    """One public function: ``call(args)``, valid ``base`` arguments, ``roles`` of arguments."""

    name: str
    call: Callable[[dict[str, Any]], Any]
    base: dict[str, Any]
    roles: dict[str, str]
    primary: Callable[[Any], Any] = lambda r: r
    shape: Callable[[dict[str, Any]], tuple[int, ...] | None] = lambda a: None
    # accepted spellings of an argument in a refusal (e.g. "rng" for a seed)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ALIASES))
    slow: bool = False


# ----- the problems every entry is built on (small: a call costs milliseconds) -----
NET = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
P = NET.n_params
X = np.random.default_rng(1).standard_normal((2, 3))
Y = np.array([0, 2])
N = X.shape[0]
NET2 = dc.MLP.random([3, 4, 2], sites=("h1",), seed=1)  # two classes: a sigmoid output
Y2 = np.array([1, 0])
LIN = dc.Linear.random(3, 3, seed=2)
UNIT = fast_dropout.sigmoid_unit(np.array([0.5, -1.0, 0.3]), 0.1)
SQ = dc.Linear.random(3, 1, seed=3, loss="squared")
YSQ = np.array([[0.5], [-1.0]])
LSTM = dc.LSTM.random(5, 3, 4, seed=0)
TOK = np.array([[1, 2, 3], [0, 4, 2]])  # (n, T) tokens
TGT = np.array([[2, 3, 1], [4, 2, 0]])  # (n, T) next tokens
W_RIDGE = np.random.default_rng(4).standard_normal((3, 3))
U_LN = np.random.default_rng(5).standard_normal((3, 2))  # d2 × r
V_LN = np.random.default_rng(6).standard_normal((3, 2))  # d0 × r
M_LN = U_LN @ V_LN.T
THEO_X = np.random.default_rng(7).standard_normal((20, 3))
THEO_Y = np.random.default_rng(8).integers(0, 3, 20)


def _sum_logits(tr: Any, prob: Any) -> tuple[Any, ...]:
    return (np.sum(prob[:, None, None] * tr.logits, axis=0),)


def _expl_zero(model: Any, x: Any, y: Any) -> Any:
    return np.zeros(model.n_params)


def _impl_zero(model: Any, x: Any, y: Any, rng: Any) -> Any:
    return np.zeros(model.n_params)


#: A refusal of a model of the wrong kind may name the model (its kind) or the data that does
#: not fit it ("x must hold integer token ids" for an MLP's float x given to an LSTM).
ALIASES = {"rng": ("rng", "seed"), "model": ("model", "x", "y", "Linear", "MLP", "LSTM", "classes",
                                            "site", "loss")}

E: list[Entry] = []


def _mlp(name: str, fn: Callable[..., Any], *, y: bool = True, q: bool = True,
         kw: dict[str, Any] | None = None, roles: dict[str, str] | None = None,
         primary: Callable[[Any], Any] = lambda r: r,
         shape: Callable[[dict[str, Any]], tuple[int, ...] | None] = lambda a: None,
         model: Any = None, yv: Any = None, slow: bool = False) -> None:
    """Register an MLP entry ``fn(model, x[, y][, q], **kw)``."""
    kw = dict(kw or {})
    base: dict[str, Any] = {"model": NET if model is None else model, "x": X}
    rl: dict[str, str] = {"model": "model", "x": "x"}
    pos = ["model", "x"]
    if y:
        base["y"] = Y if yv is None else yv
        rl["y"] = "y"
        pos.append("y")
    if q:
        base["q"] = 0.3
        rl["q"] = "q"
        pos.append("q")
    base.update(kw)
    rl.update(roles or {})
    kws = [k for k in kw]

    def call(a: dict[str, Any]) -> Any:
        return fn(*(a[p] for p in pos), **{k: a[k] for k in kws if k in a})

    E.append(Entry(name, call, base, rl, primary, shape, dict(ALIASES), slow))


def _dim(a: dict[str, Any], v: Any) -> int:
    """A dimension: an int, or "P" (parameters) / "C" (classes) of the call's model."""
    if v == "P":
        return a["model"].n_params
    if v == "C":
        return a["model"].n_classes
    return v


def _n(*rest: Any) -> Callable[[dict[str, Any]], tuple[int, ...]]:
    """``(n, *rest)`` for the call's arguments ``a`` (symbolic P and C resolved)."""
    return lambda a: (N, *(_dim(a, v) for v in rest))


def _cov_shape(a: dict[str, Any]) -> tuple[int, ...]:
    k = a["model"].n_params if a["directions"] is None else np.shape(a["directions"])[1]
    return (N, k, k)


def _value(r: Any) -> Any:
    return r.value


SITES = {"sites": "sites"}
MC = {"sites": "sites", "samples": "samples", "rng": "rng", "chunk_size": "chunk"}

# exact
_mlp("exact.expected_loss", exact.expected_loss, kw={"sites": None, "chunk_size": None},
     roles={"sites": "sites", "chunk_size": "chunk"}, shape=_n())
_mlp("exact.explicit_regularizer", exact.explicit_regularizer, kw={"sites": None},
     roles=SITES, shape=_n())
_mlp("exact.expected_gradient", exact.expected_gradient, kw={"sites": None, "max_masks": 2**20},
     roles={"sites": "sites", "max_masks": "count"}, shape=_n("P"))
_mlp("exact.gradient_noise_cov", exact.gradient_noise_cov,
     kw={"sites": None, "directions": None}, roles={"sites": "sites",
                                                    "directions": "directions"},
     shape=_cov_shape)
_mlp("exact.dropout_k_cov", exact.dropout_k_cov, kw={"k": 2, "sites": None},
     roles={"k": "count", "sites": "sites"}, shape=lambda a: (a["model"].n_params,) * 2)
_mlp("exact.expectation", lambda m, x, q, fn, **kw: exact.expectation(m, x, q, fn, **kw)[0],
     y=False, kw={"fn": _sum_logits}, roles={"fn": "callable"},
     shape=lambda a: (N, a["model"].n_classes) if a["fn"] is _sum_logits else None)  # fn's own
# montecarlo
for _f in ("expected_loss", "explicit_regularizer"):
    _mlp(f"montecarlo.{_f}", getattr(montecarlo, _f),
         kw={"sites": None, "samples": 5, "rng": 0, "chunk_size": None}, roles=MC,
         primary=_value, shape=_n())
_mlp("montecarlo.expected_gradient", montecarlo.expected_gradient,
     kw={"sites": None, "samples": 5, "rng": 0, "chunk_size": None}, roles=MC, primary=_value,
     shape=_n("P"))
_mlp("montecarlo.gradient_noise_cov", montecarlo.gradient_noise_cov,
     kw={"sites": None, "samples": 5, "rng": 0, "chunk_size": None, "directions": None},
     roles={**MC, "directions": "directions"}, primary=_value,
     shape=_cov_shape)
# explicit
_mlp("explicit.taylor", explicit.taylor, kw={"sites": None}, roles=SITES, shape=_n())
_mlp("explicit.next_layer", explicit.next_layer, kw={"sites": None}, roles=SITES, shape=_n())
_mlp("explicit.hessian_split", explicit.hessian_split, kw={"sites": None}, roles=SITES,
     primary=lambda r: next(iter(r.gauss_newton.values())), shape=_n())
_mlp("explicit.small_q_limit", explicit.small_q_limit, q=False, kw={"sites": None},
     roles=SITES, shape=_n())
_mlp("explicit.r_approx", explicit.r_approx, q=False, kw={"sites": None}, roles=SITES,
     shape=_n())
_mlp("explicit.r_approx_grad", explicit.r_approx_grad, q=False, kw={"sites": None},
     roles=SITES, shape=lambda a: (a["model"].n_params,))
_mlp("explicit.r_hat", explicit.r_hat, q=False, kw={"sites": None}, roles=SITES, shape=_n())
E[-1].aliases["y"] = ("labels",)  # r_hat's third argument is named labels
_mlp("explicit.r_approx_factor", explicit.r_approx_factor, q=False, kw={"sites": None},
     roles=SITES, shape=_n())
_mlp("explicit.r_approx_sampled", explicit.r_approx_sampled, q=False,
     kw={"sites": None, "samples": 4, "rng": 0, "chunk": None},
     roles={"sites": "sites", "samples": "samples", "rng": "rng", "chunk": "chunk"},
     primary=_value, shape=_n())
_mlp("explicit.r_approx_probe", explicit.r_approx_probe, q=False,
     kw={"sites": None, "samples": 4, "rng": 0},
     roles={"sites": "sites", "samples": "samples", "rng": "rng"}, primary=_value, shape=_n())
_mlp("explicit.r_drop_sampled", explicit.r_drop_sampled,
     kw={"sites": None, "samples": 4, "rng": 0, "chunk": None},
     roles={"sites": "sites", "samples": "samples", "rng": "rng", "chunk": "chunk"},
     primary=_value, shape=_n())
_mlp("explicit.compare_estimators", explicit.compare_estimators, q=False,
     kw={"sites": None, "samples": 4, "rng": 0},
     roles={"sites": "sites", "samples": "samples", "rng": "rng"},
     primary=lambda r: r.exact, shape=_n(), slow=True)
# implicit
_mlp("implicit.xi_drop", implicit.xi_drop, kw={"sites": None, "samples": 3, "rng": 0},
     roles={"sites": "sites", "samples": "samples", "rng": "rng"})
_mlp("implicit.xi_tilde", implicit.xi_tilde, kw={"sites": None, "samples": 3, "rng": 0},
     roles={"sites": "sites", "samples": "samples", "rng": "rng"})
_mlp("implicit.xi_approx", implicit.xi_approx, kw={"sites": None, "samples": 3, "rng": 0},
     roles={"sites": "sites", "samples": "samples", "rng": "rng"})
_mlp("implicit.xi_approx_cov", implicit.xi_approx_cov,
     kw={"sites": None, "directions": None, "chunk_size": None},
     roles={"sites": "sites", "directions": "directions", "chunk_size": "chunk"},
     shape=_cov_shape)
_mlp("implicit.dropout_k_gradient", implicit.dropout_k_gradient,
     kw={"k": 2, "sites": None, "samples": 3, "rng": 0},
     roles={"k": "count", "sites": "sites", "samples": "samples", "rng": "rng"})
_mlp("implicit.noise_injected_gradient", implicit.noise_injected_gradient,
     kw={"k": 2, "sites": None, "samples": 3, "rng": 0},
     roles={"k": "count", "sites": "sites", "samples": "samples", "rng": "rng"})
_mlp("implicit.update_direction", implicit.update_direction,
     kw={"rng": 0, "sites": None, "explicit": "approx", "implicit": "approx"},
     roles={"rng": "rng", "sites": "sites", "explicit": "explicit_fn",
            "implicit": "implicit_fn"}, shape=lambda a: (a["model"].n_params,))
_mlp("implicit.update", implicit.update,
     kw={"lr": 0.1, "rng": 0, "explicit": "approx", "implicit": "approx"},
     roles={"lr": "scalar", "rng": "rng", "explicit": "explicit_fn", "implicit": "implicit_fn"},
     primary=lambda r: np.concatenate([np.ravel(v) for v in r.values()]),
     shape=lambda a: (a["model"].n_params,))
# classical
_mlp("classical.weight_scaled_predict", classical.weight_scaled_predict, y=False,
     kw={"sites": None}, roles=SITES, shape=_n("C"))
_mlp("classical.geometric_mean_predict", classical.geometric_mean_predict, y=False,
     kw={"sites": None, "chunk_size": None},
     roles={"sites": "sites", "chunk_size": "chunk"}, shape=_n("C"))
_mlp("classical.arithmetic_mean_predict", classical.arithmetic_mean_predict, y=False,
     kw={"sites": None}, roles=SITES, shape=_n("C"))
_mlp("classical.predictive_moments", classical.predictive_moments, y=False,
     kw={"sites": None}, roles=SITES, primary=lambda r: r[1], shape=_n("C"))
_mlp("classical.mc_dropout", classical.mc_dropout, y=False,
     kw={"sites": None, "samples": 4, "rng": 0, "chunk_size": None},
     roles={"sites": "sites", "samples": "samples", "rng": "rng", "chunk_size": "chunk"},
     primary=lambda r: r.mean, shape=_n("C"))
E.append(Entry("classical.ridge_penalty", lambda a: classical.ridge_penalty(a["W"], a["x"],
                                                                             a["q"]),
               {"W": W_RIDGE, "x": X, "q": 0.3}, {"W": "matrix", "x": "x", "q": "q"}))
# ensembles, gaussian dropout on any model
_mlp("ensembles.sigmoid_ensemble", ensembles.sigmoid_ensemble, y=False, model=NET2,
     kw={"sites": None}, roles=SITES, primary=lambda r: r.nwgm, shape=_n())
_mlp("gaussian_dropout.noise_expected_loss", gaussian_dropout.noise_expected_loss,
     kw={"sites": "h1", "nodes": 3}, roles={"sites": "sites", "nodes": "count"}, shape=_n())
# GLMs (Linear models)
for _f, _y in (("unlabeled_regularizer", False), ("quadratic_regularizer", False),
               ("fisher_ridge", False)):
    _mlp(f"glm.{_f}", getattr(glm, _f), y=False, model=LIN)
_mlp("glm.natural_hessian", glm.natural_hessian, y=False, q=False, model=LIN)
E.append(Entry("glm.logit_covariance", lambda a: glm.logit_covariance(a["model"], a["x"],
                                                                       a["variance"]),
               {"model": LIN, "x": X, "variance": 0.5},
               {"model": "model", "x": "x", "variance": "scalar"}))
_mlp("fast_dropout.unit_moments", fast_dropout.unit_moments, y=False, model=UNIT,
     primary=lambda r: r[1], shape=_n())
_mlp("fast_dropout.predictive_mean", fast_dropout.predictive_mean, y=False, model=UNIT,
     kw={"method": "probit"}, roles={"method": "choice"}, shape=_n())
_mlp("fast_dropout.expected_logistic_loss", fast_dropout.expected_logistic_loss, model=UNIT,
     yv=Y2, kw={"nodes": 8}, roles={"nodes": "count"}, shape=_n())
_mlp("fast_dropout.softmax_predictive_mean", fast_dropout.softmax_predictive_mean, y=False,
     model=LIN, kw={"nodes": 4}, roles={"nodes": "count"}, shape=_n("C"))
_mlp("gaussian_dropout.expected_loss", gaussian_dropout.expected_loss, model=LIN,
     kw={"nodes": 6}, roles={"nodes": "count"}, shape=_n())
_mlp("gaussian_dropout.explicit_regularizer", gaussian_dropout.explicit_regularizer, model=LIN,
     kw={"nodes": 6}, roles={"nodes": "count"}, shape=_n())
_mlp("gaussian_dropout.third_order_gap", gaussian_dropout.third_order_gap, y=False, model=LIN)
_mlp("exact.expected_loss[squared]", exact.expected_loss, model=SQ, yv=YSQ, shape=_n())
# theory
E.append(Entry("theory.theorem41",
               lambda a: theory.theorem41(a["W"], a["X"], a["Y"], B=a["B"], delta=a["delta"]),
               {"W": W_RIDGE, "X": THEO_X, "Y": THEO_Y, "B": 4.0, "delta": 0.1},
               {"W": "matrix", "X": "x", "Y": "y", "B": "scalar", "delta": "scalar"},
               primary=lambda r: r.rhs, shape=lambda a: ()))
E.append(Entry("theory.norm21", lambda a: theory.norm21(a["M"]), {"M": W_RIDGE},
               {"M": "matrix"}, shape=lambda a: ()))
# linear nets
E.append(Entry("linear_nets.dropout_regularizer",
               lambda a: linear_nets.dropout_regularizer(a["U"], a["V"], a["q"]),
               {"U": U_LN, "V": V_LN, "q": 0.3}, {"U": "matrix", "V": "matrix", "q": "q"},
               shape=lambda a: ()))
E.append(Entry("linear_nets.min_regularizer",
               lambda a: linear_nets.min_regularizer(a["M"], a["r"], a["q"]),
               {"M": M_LN, "r": 2, "q": 0.3}, {"M": "matrix", "r": "count", "q": "q"},
               shape=lambda a: ()))
E.append(Entry("linear_nets.equalize", lambda a: linear_nets.equalize(a["U"], a["V"])[0],
               {"U": U_LN, "V": V_LN}, {"U": "matrix", "V": "matrix"}))
_mlp("linear_nets.last_layer_regularizer", linear_nets.last_layer_regularizer, y=False,
     model=linear_nets.as_mlp(U_LN, V_LN), shape=_n())
# models
E.append(Entry("MLP.forward", lambda a: NET.forward(a["x"]), {"x": X}, {"x": "x"},
               shape=_n(NET.n_classes)))  # a method: the model is the object it is called on
E.append(Entry("MLP.random", lambda a: dc.MLP.random(a["sizes"], sites=a["sites"],
                                                      seed=a["seed"]).n_params,
               {"sizes": [3, 4, 3], "sites": ("h1",), "seed": 0},
               {"sizes": "sizes", "sites": "model_sites", "seed": "rng"}, shape=lambda a: (),
               aliases={"seed": ("seed",)}))
# LSTM: per-step targets (n, T)
for _name, _fn, _kw, _roles in (
    ("lstm.exact.expected_loss", lambda m, x, y, **kw: exact.expected_loss(m, x, y, 0.3, **kw),
     {}, {}),
    ("lstm.explicit.taylor", lambda m, x, y, **kw: explicit.taylor(m, x, y, 0.3, **kw), {}, {}),
    ("lstm.explicit.r_approx", explicit.r_approx, {}, {}),
    ("lstm.explicit.r_approx_sampled", explicit.r_approx_sampled, {"samples": 3, "rng": 0},
     {"samples": "samples", "rng": "rng"}),
):
    _mlp(_name, _fn, q=False, model=LSTM, kw=_kw, roles=_roles,
         primary=_value if "sampled" in _name else (lambda r: r), shape=_n())
    E[-1].base["x"] = TOK
    E[-1].base["y"] = TGT
    E[-1].roles["x"] = "tokens"
    E[-1].roles["y"] = "targets"

ENTRIES: dict[str, Entry] = {e.name: e for e in E}


# ----- adversarial values by role -----
def _torch_variants(a: np.ndarray) -> list[Any]:
    if torch is None:
        return []
    out = [torch.from_numpy(np.array(a, dtype=np.float32)),
           torch.from_numpy(np.array(a, dtype=np.float64))]
    g = torch.from_numpy(np.array(a, dtype=np.float64))
    g.requires_grad_(True)
    out.append(g)
    return out


def _nonfinite(draw: Any, a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    if a.size == 0:
        return a
    i = draw(st.integers(0, a.size - 1))
    a.flat[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


def _array_values(draw: Any, a: np.ndarray) -> Any:
    """Adversarial versions of a float array ``a`` (2-D for x, any for matrices)."""
    choices: list[Any] = [
        lambda: a + 1j,
        lambda: a.astype(str),
        lambda: np.array(a, dtype=object),
        lambda: np.zeros((0, *a.shape[1:])),
        lambda: _nonfinite(draw, a),
        lambda: a[..., :-1],
        lambda: a[None],
        lambda: a.reshape(-1),
        lambda: a.astype(np.float16),
        lambda: a.astype(np.float32),
        lambda: np.round(a).astype(np.int64),
        lambda: a > 0,
        lambda: a.tolist(),
        lambda: a * draw(st.sampled_from([1e-300, 1e4, -1e4])),
        lambda: "x",
        lambda: None,
        *[lambda t=t: t for t in _torch_variants(a)],
    ]
    return draw(st.sampled_from(choices))()


def _counts(role: str) -> st.SearchStrategy[Any]:
    small = st.sampled_from([0, 1, 2, 3, -1, 2.5, 3.0, True, False, np.int64(3), np.uint8(2),
                             np.int32(-2), float("nan"), "3", None, 1j])
    return st.one_of(small, st.integers(-5, 7))


def adversarial(draw: Any, entry: Entry, arg: str) -> Any:
    """One adversarial value for argument ``arg`` of ``entry`` (by the argument's role)."""
    role = entry.roles[arg]
    base = entry.base[arg]
    if role in ("x", "matrix"):
        return _array_values(draw, np.asarray(base, dtype=np.float64))
    if role == "y":
        b = np.asarray(base)
        return draw(st.sampled_from([
            b[:-1], b + 100, b - 5, b.astype(np.float64) + 0.5, b.astype(str), b[:, None],
            np.full(b.shape, np.nan), b.tolist(), None, np.concatenate([b, b]),
            b.astype(np.complex128), *([torch.from_numpy(b)] if torch is not None else []),
        ]))
    if role in ("tokens", "targets"):
        b = np.asarray(base)
        return draw(st.sampled_from([
            b[:, :-1], np.concatenate([b, b], axis=1), b[:-1], b + 100, -b - 1,
            b.astype(np.float64) + 0.5, b.astype(str), b[0], b[:, :, None], b.astype(object),
        ]))
    if role == "q":
        return draw(st.one_of(
            st.sampled_from(["0.3", b"0.3", -0.1, 1.0, 1.5, float("nan"), float("inf"), True,
                             None, np.float32(0.3), np.float64(0.0), 0, 0.999,
                             np.array([0.3, 0.3]), np.array(0.3), {"h9": 0.3}, {}, 0.3j,
                             [0.3]]),
            st.floats(allow_nan=True, allow_infinity=True),
        ))
    if role in ("sites", "model_sites"):
        return draw(st.sampled_from([("h1", "h1"), ("x", "x", "h1"), 5, "nope", ("nope",), (),
                                     [], None, "h1", ("h1",), b"h1", ["x", "h1"], {"h1"},
                                     ("h1", 3), 3.5]))
    if role in ("samples", "count"):
        return draw(_counts(role))
    if role == "chunk":
        return draw(st.sampled_from([0, -1, 2.5, True, np.int64(2), 1, None, "3", 10**9, 2**70,
                                     float("nan")]))
    if role == "rng":
        return draw(st.one_of(
            st.sampled_from([-1, 2**70, np.int64(5), np.uint64(2**63), np.int8(-3),
                             np.random.SeedSequence(5), np.random.default_rng(1), "abc", 1.5,
                             True, [1, 2], (3,), None, float("nan")]),
            st.integers(-(2**65), 2**65),
        ))
    if role == "directions":
        return draw(st.sampled_from([
            np.eye(P)[:, :3], np.eye(P)[:, :3] * (1 + 1j), np.full((P, 2), np.nan),
            np.ones((P - 1, 2)), np.ones(P), np.ones((P, 2, 1)), np.ones((P, 0)),
            np.ones((P, 2), dtype=np.float16), np.ones((P, 2)).astype(str), "eye",
        ]))
    if role == "scalar":
        return draw(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "0.1", None, True,
                                     np.float32(0.1), np.array([0.1, 0.2]), 1e300, 1j]))
    if role == "choice":
        return draw(st.sampled_from(["nope", "", None, 3, "PROBIT"]))
    if role == "callable":
        return draw(st.sampled_from([
            None, 3, "fn", lambda tr, p: None, lambda tr, p: "s",
            lambda tr, p: (np.full(3, np.nan),),
        ]))
    if role in ("explicit_fn", "implicit_fn"):
        nargs = 3 if role == "explicit_fn" else 4

        def ret(v: Any) -> Callable[..., Any]:
            return (lambda m, x, y: v) if nargs == 3 else (lambda m, x, y, r: v)

        return draw(st.sampled_from([
            ret(None), ret(1.0), ret(np.ones((P, 1))), ret(np.ones(P + 1)), ret(np.ones((1, P))),
            ret(np.full(P, np.nan)), ret("g"), ret(np.ones(P) * 1j), ret(np.ones(P)),
            "nope", 3, None,
        ]))
    if role == "sizes":
        return draw(st.sampled_from([[3], [], [3, 0, 3], [3, -1, 3], [3.5, 4, 3], "343",
                                     [3, 4, 3.0], [np.int64(3), 4, 3], None, [True, 4, 3]]))
    if role == "model":
        # no model at all, or a model of another kind (the refusal may then name the model or
        # the data it does not fit)
        return draw(st.sampled_from([None, "net", 3, X, {"W1": X},
                                     *([LSTM, NET2, LIN, SQ] if entry.base[arg] is not LSTM
                                       else [NET, LIN])]))
    raise AssertionError(f"no adversarial values for role {role!r}")
