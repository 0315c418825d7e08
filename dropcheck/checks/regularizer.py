r"""``check_explicit_regularizer``: compare a user's explicit regularizer with dropcheck's.

dropcheck builds small random MLPs (:func:`~dropcheck.checks.adapters.random_problems`), hands
each one to the user's function through an adapter (weight lists by default; a
``torch.nn.Sequential`` with ``adapter="torch"``), and compares what comes back with its own
reference, chosen by ``form`` (Wei, Kakade & Ma 2020, Sec. 4.1; paper-notes "Explicit
regularizer"):

=================  =======================================================================
``form``           reference, per example ``(n,)``
=================  =======================================================================
``r_approx``       ``strength(q)·R_approx`` (eq. 4.4, :func:`dropcheck.explicit.r_approx`)
                   with ``strength(q) = q/(2(1−q))``, or the paper's raw ``R_approx`` when
                   the user declares ``includes_strength=False``
``identity``       the same with ``H_out`` replaced by ``I`` (Sec. 5.2)
``loss_jacobian``  the same with ``g gᵀ`` of the true label: ``R̃_approx`` (eq. 5.1)
``taylor``         ``R_taylor`` (eq. 4.2, :func:`dropcheck.explicit.taylor`, with the constant)
``r_drop``         the exact ``R_drop = E_η ℓ(F(x,η)) − ℓ(F(x))``
                   (:func:`dropcheck.exact.explicit_regularizer`, all masks enumerated)
=================  =======================================================================

``mask="per_step"`` declares ``R_approx`` with a mask per element of a sequence model's site
(:func:`dropcheck.explicit.r_approx_factor` with ``form="per_step"``) instead of the model's own
(locked) mask form.  ``model=..., data=(x, y)`` replaces the random MLPs by the caller's model
(any dropcheck model, e.g. ``dc.from_torch``); ``adapter="activations"`` hands a training-loop
function the site activations on torch's graph (:mod:`dropcheck.checks.adapters`).

**Gradients.**  With a torch adapter and a value on torch's graph (``gradients="auto"``), the
checker also compares the gradient of the returned batch mean w.r.t. the parameters with
``∇`` of the declared target: ``strength·∇R_approx`` (:func:`dropcheck.explicit.r_approx_grad`,
forward over reverse, any Hessian) or ``∇R_drop = E_η∇ℓ(F(x,η)) − ∇ℓ(F(x))`` (exact
enumeration); not for ``taylor`` or ``mask="per_step"`` (no exact gradient in dropcheck).  A
deterministic gradient agrees to ``rtol`` in the max norm; a stochastic one (mean over its own
randomness) is tested with Hotelling's ``T²`` on unit means projected on four fixed directions
(the target gradient, the score-function term below, two random ones), floored at the rounding
allowance.  The sampled-label estimator ``R̂`` of ``R_approx`` draws ``ŷ ~ softmax(F)``; its
expected gradient is ``∇R_approx = E[∇R̂] + E[R̂ ∇log p_ŷ]``, so a draw without a gradient path
misses the *score-function term* ``E[R̂ ∇log p_ŷ] = Σ_t Σ_c p_tc R̂_t(c) ∇log p_tc`` (per token
``t`` of a sequence model: labels of different tokens are independent and mean-zero, so only
the per-token terms remain), computed exactly here; the diagnosis names it when the gap equals
it.

.. math:: R_{approx}(F, x) = \sum_i \big\langle J_{F,i}^\top H_{out} J_{F,i},\
          \mathrm{diag}(h_i^{\odot 2})\big\rangle

The user's function returns per-example values ``(n,)`` or one number, their mean over the batch
(the paper's reduction).  A deterministic function is called once per network and must agree
to ``rtol`` in the max norm (``‖v − r‖_∞ ≤ rtol·‖r‖_∞``; exact rows, no false alarms).  A
stochastic estimator (sampled labels, Rademacher probes, Monte-Carlo dropout) is called
``calls`` times; the batch means of ``UNIT`` consecutive calls form one unit, and a two-sided
t-test on the units asks whether their mean is the reference (test rows, Holm-corrected at
``alpha``; a failure is re-tested on fresh calls, so a correct estimator fails with probability
at most ``alpha``).

When a network fails, its value is compared with *alternative references*, one per known bug:
the constant missing or doubled, the loss-Jacobian (true-label) variant ``R̃_approx`` (5.1) in
place of the sampled-label ``R_approx``, the identity Hessian (also divided by the number of
classes), ``h`` not squared, one site only, a per-step regularizer under locked masks, the sum
instead of the mean over the batch, the clean loss not subtracted, … (and their combinations);
the diagnosis names those that fit every failed network.  The tolerance of that match is the
*observed* precision, not the pass tolerance: a deterministic value within float32 rounding
(``≤ 1e-4`` relative) of exactly one alternative is named, with "float32 arithmetic detected"
when it is off by more than float64 rounding.  Without a named pattern, a constant ratio to the
reference (the same implied coefficient on every failed network, within its confidence
interval for a stochastic function) is reported with the closest named coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dropcheck import exact, explicit
from dropcheck._tolerances import default_rtol
from dropcheck._validate import check_choice, check_positive_int
from dropcheck.backend import to_numpy
from dropcheck.checks._args import build_problems, grid_args
from dropcheck.checks._calls import CallFailed
from dropcheck.checks._report import ERROR, FAIL, PASS, CheckReport, CheckRow, fmt_pair
from dropcheck.checks._runner import call_text, finish, run_grid
from dropcheck.checks._stats import hotelling_mean
from dropcheck.checks.adapters import Adapter, Problem, WeightLists, get_adapter
from dropcheck.losses import softmax
from dropcheck.models import MLP

__all__ = [
    "FORMS",
    "MASK_FORMS",
    "DEFAULT_SIZES",
    "DEFAULT_ACTIVATIONS",
    "UNIT",
    "FLOAT32_BAND",
    "RegularizerReport",
    "check_explicit_regularizer",
    "assert_regularizer_matches",
    "score_function_term",
]

FORMS = ("r_approx", "taylor", "r_drop", "identity", "loss_jacobian")
#: the mask form of the declared target: the model's own, or per element of a sequence site
MASK_FORMS = ("model", "per_step")
#: the forms of the R_approx family, and the Hessian each uses
_HESSIAN = {"r_approx": "loss", "identity": "identity", "loss_jacobian": "loss_jacobian"}
#: one and two hidden layers.  A site followed by a smooth nonlinearity (net 2) is needed to tell
#: R_taylor from strength·R_approx: they are equal when the site feeds the decoder (claim E2) or
#: the activation is piecewise linear (relu: no model-Hessian term)
DEFAULT_SIZES = ((5, 6, 4), (4, 5, 5, 3), (6, 5, 4, 3))
DEFAULT_ACTIVATIONS = ("tanh", "softplus", "relu")
#: calls of a stochastic estimator averaged into one t-test unit (a mean of 8 draws of a skewed
#: estimator such as the sampled-label R̂ is far closer to normal than one draw)
UNIT = 8
#: level at which a stochastic row "fits" an alternative (or a constant): Bonferroni over the
#: test rows, so the right pattern is missed with probability <= 1e-3; a looser level than the
#: pass test's alpha keeps the confidence intervals narrow enough to tell constants apart
DIAGNOSIS_LEVEL = 1e-3
#: relative errors a deterministic value may show when computed (partly) in float32: float32
#: rounding of a conditioned computation is ~1e-7 to 1e-5 (``4·sqrt(eps32)`` = 1.4e-3 is the
#: pass tolerance of a float32 output); bugs of the catalogue change the value by >= 1e-2
FLOAT32_BAND = 1e-4
#: fixed directions of the stochastic gradient test besides the target and the score term
_RANDOM_DIRECTIONS = 2
_REDUCTIONS = ("auto", "none", "mean")


# ----- references and the alternatives that name bugs --------------------------------------

@dataclass(frozen=True)
class _Alt:
    """A value the user's function would return with a known bug, per example ``(n,)``."""

    key: str
    phrase: str
    values: np.ndarray


@dataclass(frozen=True)
class _Reference:
    """The reference per example ``(n,)``, what it is called, and the bug alternatives.

    ``grad`` is ``∇_θ`` of the reference's batch mean ``(P,)`` (None when dropcheck has no
    exact gradient of the target), ``grad_alts`` the gradients of known bugs, ``score`` the
    score-function term (a direction of the stochastic gradient test), ``coef`` the constant
    the declared target includes and its name.
    """

    what: str
    values: np.ndarray
    alts: tuple[_Alt, ...]
    grad: np.ndarray | None = None
    grad_alts: tuple[_Alt, ...] = ()
    score: np.ndarray | None = None
    coef: tuple[float, str] | None = None


def _h_not_squared(net: MLP, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Σ_i Σ_k h_ik (J_{F,i} e_k)ᵀ H_out (J_{F,i} e_k)`` ``(n,)``: R_approx, ``h`` not squared.

    From the per-unit terms of :func:`dropcheck.explicit.r_approx` (``per_unit=True``),
    ``h_k² (J e_k)ᵀ H_out (J e_k)``, divided by ``h_k``; a unit with ``h_k = 0`` contributes 0
    to both (its noise tangent is zero).
    """
    units = explicit.r_approx(net, x, y, per_unit=True)
    h = net.hidden(x)
    out = np.zeros(x.shape[0])
    for s in net.site_names:
        u, hs = np.asarray(units[s]), np.asarray(h[s])
        out = out + np.sum(np.divide(u, hs, out=np.zeros_like(u), where=hs != 0), axis=-1)
    return out


def _site_alts(net: Any, per_site: dict[str, np.ndarray], c: float) -> list[_Alt]:
    """One site only (the first, or the last) of a multi-site net, times ``c``."""
    names = net.site_names
    if len(names) < 2:
        return []
    return [_Alt("first-site", "only the first dropout site counted (the sum over sites is "
                               "missing)", c * per_site[names[0]]),
            _Alt("last-site", "only the last dropout site counted (the sum over sites is "
                              "missing)", c * per_site[names[-1]])]


def _combine(constants: list[tuple[str, str | None, float]],
             kinds: list[tuple[str, str | None, np.ndarray]]) -> list[_Alt]:
    """Every (constant, kind) pair but the reference itself: phrases joined with '; '."""
    out = []
    for ck, cp, c in constants:
        for kk, kp, v in kinds:
            parts = [p for p in (cp, kp) if p]
            if parts:
                out.append(_Alt(f"{ck}+{kk}", "; ".join(parts), c * v))
    return out


def _unscaled_masks(net: MLP, x: np.ndarray, y: np.ndarray, q: float,
                    clean: np.ndarray) -> np.ndarray:
    """``E_m ℓ(F(x; m ⊙ h)) − ℓ(F(x))`` with keep masks *not* scaled by ``1/(1−q)``.

    ``m ⊙ h = (1+η) ⊙ ((1−q) h)``: the paper's noise on a net whose weights fed by each site are
    scaled by ``1−q``, so the exact engine computes it.
    """
    params = dict(net.params)
    for s in net.site_names:
        w = f"W{1 if s == 'x' else int(s[1:]) + 1}"
        params[w] = (1.0 - q) * params[w]
    return exact.expected_loss(net.with_params(params), x, y, q) - clean


def _per_step(net: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``R_approx`` with a mask per element of every site (None when that is the model's own).

    :func:`dropcheck.explicit.r_approx_factor` with ``form="per_step"``; a model without site
    axes or with per-element masks gives the same value, then None.
    """
    ps = np.asarray(explicit.r_approx_factor(net, x, y, form="per_step"))
    own = np.asarray(explicit.r_approx_factor(net, x, y))
    return None if _rel(ps, own) <= 1e-9 else ps


def score_function_term(model: Any, x: Any, y: Any) -> np.ndarray:
    r"""The score-function term of the sampled-label ``R̂`` (no constant), mean over the batch.

    .. math:: E_{\hat y}[\hat R\, ∇_θ \log p_{\hat y}]
              = \sum_t \sum_c p_{tc}\, \hat R_t(c)\, ∇_θ \log p_{tc},
              \qquad \hat R_t(c) = \sum_{i,k} \big(∂⟨p_t − e_c, F_t⟩/∂η_{ik}\big)^2

    per example, ``t`` over the logit vectors (one for an MLP, the tokens of a sequence model:
    labels of different tokens are drawn independently and ``E[p_t − e_ŷ] = 0``, so only the
    per-token terms remain; the noise gradient is the model's mask form).  ``∇R_approx`` is
    ``E[∇R̂] +`` this term: what a draw without a gradient path misses.  Flat ``(P,)``.
    """
    tr = model.trace(x)
    logits = np.asarray(tr.logits)[0]  # (n, *X, c)
    n, c = logits.shape[0], logits.shape[-1]
    X = logits.shape[1:-1]
    T = math.prod(X)
    p = np.asarray(softmax(logits, np)).reshape(n, T, c)
    # cotangents (T·c, 1, n, T, c): p_t − e_c at token t, zero at the other tokens
    cot = np.zeros((T, c, n, T, c))
    for t in range(T):
        cot[t, :, :, t, :] = p[None, :, t, :] - np.eye(c)[:, None, :]
    cot = cot.reshape(T * c, 1, n, *X, c)
    na = model.noise_adjoint(tr, cot, model.site_names)
    r_hat = sum(np.sum(np.asarray(v) ** 2, axis=-1) for v in na.values())  # (T·c, 1, n)
    w = (r_hat[:, 0, :].reshape(T, c, n).transpose(2, 0, 1) * p)  # (n, T, c)
    # ∇log p_tc = −Jᵀ(p_t − e_c): one reverse sweep of Σ_{t,c} w_tc (e_c − p_t) per example
    g = np.zeros((n, T, c))
    for t in range(T):
        g[:, t, :] = -np.einsum("nc,ncd->nd", w[:, t, :],
                                p[:, t, None, :] - np.eye(c)[None, :, :])
    _, grads = model.backward(tr, g.reshape(1, 1, n, *X, c), params=True)
    return np.asarray(grads)[0, 0].mean(axis=0)


def _approx_family(pb: Problem, q: float, form: str, includes_strength: bool, mask: str,
                   gradients: bool) -> _Reference:
    """The R_approx-family reference (``r_approx``, ``identity``, ``loss_jacobian``)."""
    net, x, y = pb.net, pb.x, pb.y
    S = explicit.strength(q)
    mlp = isinstance(net, MLP)
    declared = _HESSIAN[form]
    vals = {h: np.asarray(explicit.r_approx(net, x, y, hessian=h)) for h in _HESSIAN.values()}
    per_step = _per_step(net, x, y) if not mlp else None
    c0 = S if includes_strength else 1.0
    C = net.n_classes
    ref = per_step if (mask == "per_step" and per_step is not None) else vals[declared]
    names = {"loss": "R_approx", "identity": "R_approx with H_out = I",
             "loss_jacobian": "R̃_approx (eq. 5.1)"}
    phrase = {
        "loss": "H_out of the loss used (R_approx, eq. 4.4) where the "
                f"{names[declared]} variant is declared",
        "loss_jacobian": "true label used where a sampled one is specified (value matches the "
                         "loss-Jacobian variant R̃_approx, eq. 5.1)",
        "identity": "identity Hessian used (H_out replaced by I)",
    }
    kinds: list[tuple[str, str | None, np.ndarray]] = [("H", None, ref)]
    kinds += [(h, phrase[h], v) for h, v in vals.items() if h != declared]
    kinds.append(("identity/C", "identity Hessian divided by the number of classes (I/C in "
                                f"place of H_out, C = {C})", vals["identity"] / C))
    if isinstance(net, MLP):
        kinds.append(("h", "h not squared (weights h_k instead of h_k²)",
                      _h_not_squared(net, x, y)))
        kinds.append(("taylor", "full Hessian diagonal (R_taylor) instead of its Gauss–Newton "
                                "part", np.asarray(explicit.taylor(net, x, y, q)) / S))
    if per_step is not None and declared == "loss":
        if mask == "per_step":
            kinds.append(("locked", "locked regularizer (one mask per sequence) where per-step "
                                    "masks are declared", vals["loss"]))
        else:
            kinds.append(("per-step", "per-step regularizer under locked masks (value matches "
                                      "R_approx with a mask per time step; the model's masks "
                                      "are shared along time)", per_step))
    if includes_strength:
        constants = [("S", None, S),
                     ("1", "constant missing: value is R_approx without q/(2(1−q))", 1.0),
                     ("2S", "constant q/(1−q) instead of q/(2(1−q))", 2 * S)]
        what = f"strength(q)·{names[declared]}"
        coef: tuple[float, str] | None = (S, "q/(2(1−q))")
    else:
        constants = [("1", None, 1.0),
                     ("S", "constant q/(2(1−q)) included although includes_strength=False", S),
                     ("2S", "constant q/(1−q) included although includes_strength=False", 2 * S),
                     ("2", "factor 2: value is 2·R_approx", 2.0)]
        what = f"{names[declared]} (no constant)"
        coef = (1.0, "1")
    if mask == "per_step" and per_step is not None:
        what += ", per-step masks"
    alts = _combine(constants, kinds)
    if mask != "per_step":
        alts += _site_alts(net, explicit.r_approx(net, x, y, hessian=declared, per_site=True),
                           c0)
    grad = score = None
    grad_alts: list[_Alt] = []
    if gradients and mask != "per_step":
        g = np.asarray(explicit.r_approx_grad(net, x, y, hessian=declared))
        grad = c0 * g
        if declared == "loss":
            score = c0 * score_function_term(net, x, y)
            grad_alts.append(_Alt("score", "score-function term missing: the gradient is "
                                           "E[∇R̂] of a label drawn without a gradient path "
                                           "(∇R_approx − E[R̂ ∇log p_ŷ])", grad - score))
        for ck, cp, cv in constants:
            if cp:
                grad_alts.append(_Alt(ck, cp, cv * g))
    return _Reference(what, c0 * ref, tuple(alts), grad, tuple(grad_alts), score, coef)


def _reference(pb: Problem, q: float, form: str, includes_strength: bool, mask: str = "model",
               gradients: bool = False) -> _Reference:
    """The reference of ``form`` and its bug alternatives on one network."""
    if form in _HESSIAN:
        return _approx_family(pb, q, form, includes_strength, mask, gradients)
    net, x, y = pb.net, pb.x, pb.y
    S = explicit.strength(q)
    ra = np.asarray(explicit.r_approx(net, x, y))
    rt = np.asarray(explicit.taylor(net, x, y, q))
    if form == "taylor":
        sites_rt = {s: np.asarray(explicit.taylor(net, x, y, q, sites=s))
                    for s in net.site_names}
        constants = [("S", None, 1.0),
                     ("1", "constant missing: value is the Hessian term without q/(2(1−q))",
                      1.0 / S),
                     ("2S", "constant q/(1−q) instead of q/(2(1−q))", 2.0)]
        kinds = [("T", None, rt),
                 ("GN", "Gauss–Newton part only (model-Hessian term dropped): value is "
                        "strength(q)·R_approx", S * ra)]
        alts = _combine(constants, kinds) + _site_alts(net, sites_rt, 1.0)
        return _Reference("R_taylor", rt, tuple(alts), coef=(S, "q/(2(1−q))"))
    rd = np.asarray(exact.explicit_regularizer(net, x, y, q))
    clean = np.asarray(net.loss_value(x, y))
    sites_rd = {s: np.asarray(exact.explicit_regularizer(net, x, y, q, sites=s))
                for s in net.site_names}
    alts = [
        _Alt("clean", "clean loss not subtracted: value is E_η ℓ(F(x,η)), not R_drop",
             rd + clean),
        _Alt("taylor", "second-order Taylor R_taylor (eq. 4.2) instead of the exact R_drop", rt),
        _Alt("approx", "strength(q)·R_approx (eq. 4.4) instead of the exact R_drop", S * ra),
        _Alt("keep", "q used as the keep probability (R_drop at drop probability 1−q)",
             np.asarray(exact.explicit_regularizer(net, x, y, 1.0 - q))),
        *_site_alts(net, sites_rd, 1.0),
    ]
    if isinstance(net, MLP):
        alts.append(_Alt("unscaled", "keep masks not scaled by 1/(1−q) (non-inverted dropout)",
                         _unscaled_masks(net, x, y, q, clean)))
    grad = None
    grad_alts: tuple[_Alt, ...] = ()
    if gradients:
        eg = np.asarray(exact.expected_gradient(net, x, y, q)).mean(axis=0)
        cg = np.asarray(exact.loss_gradients(net, net.trace(x), y))[0].mean(axis=0)
        grad = eg - cg
        grad_alts = (_Alt("clean", "clean loss not subtracted: the gradient is ∇ℓ_drop, not "
                                   "∇R_drop", eg),)
    return _Reference("R_drop (exact)", rd, tuple(alts), grad, grad_alts)


# ----- what the user's function returned ----------------------------------------------------

def _unwrap(out: Any) -> Any:
    """The value inside a torch adapter's output (``GraphOutput``), else ``out``."""
    return getattr(out, "value", out) if hasattr(out, "gradient") else out


def _as_values(out: Any, n: int, reduction: str) -> tuple[np.ndarray, bool, np.dtype]:
    """The user's output as float64 ``(n,)`` or ``()``, whether it is a batch mean, its dtype.

    A scalar may come as a Python float, a 0-d array, ``(1,)`` or ``(1, 1)`` (a framework
    tensor still attached to its graph included: it is detached here).  Raises
    :class:`CallFailed` with a plain message for anything else.
    """
    out = _unwrap(out)
    if isinstance(out, bool) or out is None or isinstance(out, str | bytes):
        raise CallFailed(f"fn returned {type(out).__name__}; expected per-example values "
                         f"({n},) or their mean (a number)")
    if isinstance(out, int | float | np.number):
        a = np.asarray(out)
    elif isinstance(out, np.ndarray) or hasattr(out, "__array__") or hasattr(out, "__dlpack__"):
        try:
            a = np.asarray(to_numpy(out))
        except Exception as exc:  # a foreign array that does not convert is the user's output
            raise CallFailed(f"fn returned {type(out).__name__} that does not convert to numpy "
                             f"({type(exc).__name__}: {exc})") from exc
    else:
        raise CallFailed(f"fn returned {type(out).__name__}; expected per-example values "
                         f"({n},) or their mean (a number)")
    if a.dtype.kind != "f":
        raise CallFailed(f"fn returned dtype {a.dtype}; expected floating values")
    per_example = a.shape == (n,)
    scalar = a.shape in ((), (1,), (1, 1)) and not (per_example and reduction != "mean")
    if reduction == "none" and not per_example:
        raise CallFailed(f"fn returned shape {a.shape}; reduction='none' expects per-example "
                         f"values of shape ({n},)")
    if reduction == "mean" and not scalar:
        raise CallFailed(f"fn returned shape {a.shape}; reduction='mean' expects one number")
    if not (per_example or scalar):
        raise CallFailed(f"fn returned shape {a.shape}; expected per-example values ({n},) or "
                         f"their mean (a number: (), (1,) or (1, 1)) for a batch of {n} "
                         f"examples")
    bad = ~np.isfinite(a)
    if bad.any():
        raise CallFailed(f"fn returned {int(bad.sum())} NaN/inf values among {a.size}: "
                         f"{np.array2string(a.ravel()[:8], precision=4)}", nonfinite=True)
    vals = a.astype(np.float64)
    return (vals.reshape(()) if scalar else vals), scalar, a.dtype


def _gradient_of(out: Any, P: int, required: bool = False) -> np.ndarray | None:
    """The parameter gradient of a torch adapter's output (None when there is none).

    ``required`` (``gradients=True``): a value without a graph is an error, not a skip.
    """
    if not hasattr(out, "gradient") or not getattr(out, "on_graph", False):
        if required:
            raise CallFailed("gradients=True, but fn's value is not a tensor on the "
                             "parameters' graph (detached, or not computed with torch)")
        return None
    g = out.gradient("fn's value")
    if g.shape != (P,):
        raise CallFailed(f"the gradient of fn's value has {g.size} entries; the model has {P} "
                         f"parameters")
    if not np.all(np.isfinite(g)):
        raise CallFailed(f"the gradient of fn's value holds {int(np.sum(~np.isfinite(g)))} "
                         f"NaN/inf entries", nonfinite=True)
    return g


def _rtol(dtype: np.dtype) -> float:
    """``4·sqrt(eps)`` of the output dtype: room for the roundings of a conditioned computation.

    6e-8 for float64, 1.4e-3 for float32; every bug of the catalogue changes the value by O(1).
    """
    return default_rtol(dtype)


def _rel(v: np.ndarray, r: np.ndarray) -> float:
    """Max-norm relative difference ``‖v − r‖_∞ / ‖r‖_∞`` (robust to examples with ``r ≈ 0``)."""
    scale = float(np.max(np.abs(r)))
    return float(np.max(np.abs(v - r))) / (scale if scale > 0 else 1.0)


# ----- rows --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setup:
    """The validated arguments shared by every row."""

    form: str
    includes_strength: bool
    adapter: Adapter
    reduction: str
    stochastic: bool
    calls: int
    rtol: float | None
    seed: int
    mask: str = "model"
    gradients: bool = False
    require_gradients: bool = False


def _fmt_vec(a: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in np.atleast_1d(a)) + "]"


def _exact_rows(fn: Callable, pb: Problem, q: float, ref: _Reference,
                setup: _Setup) -> list[CheckRow]:
    """Call a deterministic ``fn`` once and compare value (and gradient) with the reference."""
    rng = np.random.default_rng([setup.seed, pb.index, 0])
    grad = None
    try:
        out = setup.adapter.call(fn, pb, q, train=False, rng=rng)
        v, scalar, dtype = _as_values(out, pb.n, setup.reduction)
        if setup.gradients and ref.grad is not None:
            grad = _gradient_of(out, pb.net.n_params, setup.require_gradients)
    except CallFailed as exc:
        return [CheckRow(pb.label, q, verdict=ERROR, detail=str(exc))]
    tol = setup.rtol if setup.rtol is not None else _rtol(dtype)
    r: Any = float(np.mean(ref.values)) if scalar else ref.values
    err = _rel(v, r)
    ok = err <= tol
    if scalar:
        so, se_ = fmt_pair(float(v), float(r), 8)
        detail = (f"expected {se_} ({ref.what}, mean over {pb.n} examples), observed "
                  f"{so}; relative error {err:.3g}")
    else:
        i = int(np.argmax(np.abs(v - r)))
        so, se_ = fmt_pair(float(v[i]), float(r[i]), 8)
        detail = (f"expected {ref.what} = {_fmt_vec(r)}, observed {_fmt_vec(v)}; worst example "
                  f"{i}: expected {se_}, observed {so}; relative error {err:.3g}")
    alts = {a.key: (a.phrase, float(np.mean(a.values)) if scalar else a.values)
            for a in ref.alts}
    if scalar:
        alts["sum"] = ("sum instead of mean over the batch", pb.n * float(r))
    random = False
    if not ok:  # a random estimator checked as deterministic fails; say so plainly
        try:
            again = setup.adapter.call(fn, pb, q, train=False,
                                       rng=np.random.default_rng([setup.seed, pb.index, 9]))
            random = _rel(_as_values(again, pb.n, setup.reduction)[0], v) > tol
        except CallFailed:
            pass
        if random:
            detail += "; a second call returned a different value: pass stochastic=True"
    rows = [CheckRow(pb.label, q, err, tol, verdict=PASS if ok else FAIL, detail=detail,
                     info={"observed": v, "reference": r, "alts": alts, "tol": tol,
                           "stochastic": False, "net": pb.index, "random": random,
                           "dtype": str(dtype), "coef": ref.coef})]
    if grad is not None:
        rows.append(_exact_grad_row(pb, q, grad, ref, tol))
    return rows


def _exact_grad_row(pb: Problem, q: float, g: np.ndarray, ref: _Reference,
                    tol: float) -> CheckRow:
    """Compare a deterministic function's parameter gradient with ``∇`` of the target."""
    r = ref.grad
    assert r is not None
    err = _rel(g, r)
    ok = err <= tol
    i = int(np.argmax(np.abs(g - r)))
    so, sr = fmt_pair(float(g[i]), float(r[i]), 8)
    cos = float(g @ r / (np.linalg.norm(g) * np.linalg.norm(r) or 1.0))
    detail = (f"∇ of the batch mean vs ∇({ref.what}) ({g.size} parameters): worst entry {i}: "
              f"expected {sr}, observed {so}; relative error {err:.3g}, cosine {cos:.6f}")
    alts = {a.key: (a.phrase, a.values) for a in ref.grad_alts}
    return CheckRow(f"{pb.label}: gradient", q, err, tol, verdict=PASS if ok else FAIL,
                    detail=detail, info={"observed": g, "reference": r, "alts": alts,
                                         "tol": tol, "stochastic": False, "net": pb.index,
                                         "gradient": True, "random": False, "coef": ref.coef})


def _directions(pb: Problem, ref: _Reference, seed: int) -> np.ndarray:
    """Orthonormal directions ``(P, k)`` of the stochastic gradient test, fixed before any call.

    The target gradient (a constant factor shows there), the score-function term (the
    missing-draw bug), and ``_RANDOM_DIRECTIONS`` Gaussian ones (anything else).
    """
    assert ref.grad is not None
    P = ref.grad.size
    cols = [ref.grad] + ([ref.score] if ref.score is not None else [])
    gen = np.random.default_rng([seed, pb.index, 77])
    cols += list(gen.standard_normal((_RANDOM_DIRECTIONS, P)))
    qm, rr = np.linalg.qr(np.stack(cols, axis=1))
    keep = np.abs(np.diag(rr)) > 1e-12 * np.abs(rr).max()
    return qm[:, keep]


def _t_rows(fn: Callable, pb: Problem, q: float, ref: _Reference, setup: _Setup,
            calls: int, stage: int) -> list[CheckRow]:
    """Call a stochastic ``fn`` ``calls`` times; test that the mean is the reference.

    One draw is a call's batch mean; ``UNIT`` draws average into one unit; the t statistic
    ``(m − r)/se`` uses the units' standard error, floored at the rounding tolerance
    ``rtol·|r|`` (a deterministic function declared stochastic then passes when it is right),
    with ``units − 1`` degrees of freedom.  With gradients, a second row tests the mean
    gradient (Hotelling on the projections, module docstring).
    """
    rng = np.random.default_rng([setup.seed, pb.index, stage])
    draws = np.empty(calls)
    want_grad = setup.gradients and ref.grad is not None
    grads: list[np.ndarray] = []
    scalar, tol = False, setup.rtol
    try:
        for j in range(calls):
            out = setup.adapter.call(fn, pb, q, train=False, rng=rng)
            v, scalar, dtype = _as_values(out, pb.n, setup.reduction)
            draws[j] = float(np.mean(v))
            tol = setup.rtol if setup.rtol is not None else _rtol(dtype)
            if want_grad:
                g = _gradient_of(out, pb.net.n_params, setup.require_gradients)
                if g is None:
                    want_grad = False
                else:
                    grads.append(g)
    except CallFailed as exc:
        return [CheckRow(pb.label, q, verdict=ERROR, detail=str(exc))]
    assert tol is not None
    units = calls // UNIT
    means = draws[: units * UNIT].reshape(units, UNIT).mean(axis=1)
    r = float(np.mean(ref.values))
    m = float(means.mean())
    se = math.sqrt(float(means.var(ddof=1)) / units + (tol * abs(r)) ** 2)
    t = (m - r) / se if se > 0 else (0.0 if m == r else math.copysign(math.inf, m - r))
    p = float(min(1.0, 2.0 * stats.t.sf(abs(t), units - 1)))
    alts = {a.key: (a.phrase, float(np.mean(a.values))) for a in ref.alts}
    if scalar:
        alts["sum"] = ("sum instead of mean over the batch", pb.n * r)
    sm, sr = fmt_pair(m, r, 6)
    detail = (f"mean of {calls} calls {sm} ± {se:.2g} (standard error), expected {sr} "
              f"({ref.what}, mean over {pb.n} examples); t = {t:.3g} on {units - 1} d.o.f.")
    rows = [CheckRow(pb.label, q, abs(t), None, p, detail=detail,
                     info={"observed": m, "reference": r, "se": se, "dof": units - 1,
                           "alts": alts, "stochastic": True, "net": pb.index,
                           "coef": ref.coef})]
    if want_grad and len(grads) == calls:
        rows.append(_t_grad_row(pb, q, np.stack(grads), ref, setup, tol))
    return rows


def _t_grad_row(pb: Problem, q: float, grads: np.ndarray, ref: _Reference, setup: _Setup,
                tol: float) -> CheckRow:
    """Hotelling's test that the mean gradient over the calls is ``∇`` of the target."""
    assert ref.grad is not None
    D = _directions(pb, ref, setup.seed)
    calls = grads.shape[0]
    units = calls // UNIT
    u = grads[: units * UNIT].reshape(units, UNIT, -1).mean(axis=1) @ D  # (units, k)
    r = ref.grad @ D
    floor = tol * float(np.linalg.norm(ref.grad))
    t2, p, dof = hotelling_mean(u, r, floor)
    mean = grads.mean(axis=0)
    cos = float(mean @ ref.grad / (np.linalg.norm(mean) * np.linalg.norm(ref.grad) or 1.0))
    gap = float(np.linalg.norm(mean - ref.grad) / (np.linalg.norm(ref.grad) or 1.0))
    detail = (f"mean ∇ of {calls} calls vs ∇({ref.what}): relative gap {gap:.3g}, cosine "
              f"{cos:.4f}; Hotelling T² = {t2:.4g} on {D.shape[1]} fixed directions, {units} "
              f"units of {UNIT}")
    alts = {a.key: (a.phrase, a.values @ D) for a in ref.grad_alts}
    return CheckRow(f"{pb.label}: gradient", q, t2, None, p, detail=detail,
                    info={"observed": u, "reference": r, "alts": alts, "stochastic": True,
                          "net": pb.index, "gradient": True, "floor": floor,
                          "dof": dof, "units": units, "k": D.shape[1], "coef": ref.coef})


# ----- diagnosis ------------------------------------------------------------------------------

def _fits(row: CheckRow, value: Any, level: float) -> bool:
    """Whether the row's observed value matches an alternative reference ``value``.

    Stochastic rows: the alternative is not rejected at ``level`` (the per-row Bonferroni
    level); deterministic rows: within the row's diagnosis tolerance (:func:`_diag_tol`).
    """
    info = row.info
    if info.get("gradient") and info["stochastic"]:
        return hotelling_mean(info["observed"], value, info["floor"])[1] > level
    if info["stochastic"]:
        crit = float(stats.t.isf(level / 2, info["dof"]))
        return abs(info["observed"] - value) <= crit * info["se"]
    return _rel(info["observed"], value) <= _diag_tol(row)


def _nearest(row: CheckRow) -> tuple[float, float]:
    """Distances of a deterministic row's value to its two nearest candidates.

    Relative max-norm distances to the reference and the alternatives, nearest first.
    """
    info = row.info
    cands = [info["reference"]] + [v for _, v in info["alts"].values()]
    d = sorted({round(_rel(info["observed"], c), 15) for c in cands})
    return d[0], (d[1] if len(d) > 1 else math.inf)


def _diag_tol(row: CheckRow) -> float:
    """The tolerance of matching a deterministic row to an alternative: observed precision.

    The pass tolerance, widened to ``2×`` the distance to the nearest candidate when that
    distance is within float32 rounding (``FLOAT32_BAND``) and the next candidate is 100×
    farther (so widening cannot name two bugs at once).
    """
    tol = row.info["tol"]
    d1, d2 = _nearest(row)
    if tol < d1 <= FLOAT32_BAND and d2 > 100 * d1:
        return 2 * d1
    return tol


def _named_coefficient(c: float, lo: float, hi: float,
                       q: float | None) -> tuple[str, float] | None:
    """The coefficient people use (name, value) inside ``[lo, hi]`` nearest ``c``, if any."""
    named = [("1", 1.0), ("1/2", 0.5), ("2", 2.0)]
    if q is not None:
        named += [("q", q), ("q/2", q / 2), ("q/(1−q)", q / (1 - q)),
                  ("q/(2(1−q))", q / (2 * (1 - q))), ("1−q", 1 - q), ("q²", q * q)]
    fit = [(abs(math.log(c / v)), nm, v) for nm, v in named if lo <= v <= hi and c > 0]
    if not fit:
        return None
    _, nm, v = min(fit)
    return nm, v


def _constant_ratio(failed: Sequence[CheckRow], alpha: float, m: int) -> str | None:
    """A constant factor between observed and reference on every failed row, named.

    Each row gives the coefficient its value implies, ``ratio × declared coefficient``, with an
    interval: a stochastic row's ratio ± the t critical value at ``DIAGNOSIS_LEVEL/m`` × its
    standard error;
    a deterministic row's per-example ratios (their spread must stay within float32 rounding).
    The coefficients of all rows must share a point.
    """
    lo, hi, mid = -math.inf, math.inf, []
    rows_ratio = []
    for r in failed:
        info = r.info
        ref = np.atleast_1d(np.asarray(info["reference"], dtype=float))
        obs = np.atleast_1d(np.asarray(info["observed"], dtype=float))
        if info.get("gradient") or not np.all(ref != 0):
            return None
        coef = info.get("coef") or (1.0, None)
        if info["stochastic"]:
            ratio = float(obs[0] / ref[0])
            half = (float(stats.t.isf(DIAGNOSIS_LEVEL / (2 * m), info["dof"])) * info["se"]
                    / abs(ref[0]))
            a, b = ratio - half, ratio + half
        else:
            ratios = obs / ref
            ratio = float(np.median(ratios))
            if np.max(np.abs(obs - ratio * ref)) > FLOAT32_BAND * np.max(np.abs(ref)):
                return None
            half = FLOAT32_BAND * abs(ratio)
            a, b = ratio - half, ratio + half
        c = coef[0]
        lo, hi = max(lo, a * c), min(hi, b * c)
        mid.append(ratio * c)
        rows_ratio.append((r, ratio, a, b))
    if not rows_ratio or lo > hi or not all(math.isfinite(v) for v in (lo, hi)):
        return None
    r0, ratio, a, b = rows_ratio[0]
    coef = r0.info.get("coef") or (1.0, None)
    c_obs = float(np.median(mid))
    if coef[1] is None or coef[1] == "1":
        sr, _ = fmt_pair(ratio, 1.0)
        return (f"value is {sr} × the reference on every failed net (a constant factor; "
                f"interval {a:.4g}–{b:.4g} at q = {r0.q:g})")
    qs = {r.q for r, *_ in rows_ratio}
    q = next(iter(qs)) if len(qs) == 1 else None
    at = f" at q = {q:g}" if q is not None else " (the same at every q)"
    named = _named_coefficient(c_obs, lo, hi, q)
    so_obs, _ = fmt_pair(c_obs, coef[0])
    if named is not None:
        so, sd = fmt_pair(named[1], coef[0])
        lead, implied = f"coefficient {so} = {named[0]}", f"observed {so_obs}, "
    else:
        sd = fmt_pair(c_obs, coef[0])[1]
        lead, implied = f"coefficient {so_obs}", ""
    return (f"{lead} instead of {coef[1]} = {sd}{at}: ratio {ratio:.3f} ({implied}interval "
            f"{lo:.4g}–{hi:.4g} for the coefficient) on every failed net")


def diagnose_regularizer(rows: Sequence[CheckRow], alpha: float) -> str | None:
    """Name the bug alternatives that fit every failed row (None if none failed).

    A deterministic row fits an alternative within its observed precision (:func:`_diag_tol`);
    a stochastic one when the alternative is not rejected at the Bonferroni level
    ``DIAGNOSIS_LEVEL/m``.  Value rows and gradient rows are diagnosed separately (a value
    that is right
    with a wrong gradient is the score-function pattern).  Without a fitting pattern: a
    constant ratio to the reference with its implied coefficient, or the worst relative error.
    """
    failed = [r for r in rows if r.verdict == FAIL]
    errors = [r for r in rows if r.verdict == ERROR]
    if not failed:
        return errors[0].detail if errors else None
    m = max(1, sum(r.is_test for r in rows))
    parts: list[str] = []
    for group in ([r for r in failed if not r.info.get("gradient")],
                  [r for r in failed if r.info.get("gradient")]):
        if not group:
            continue
        if group[0].info.get("gradient") and len(parts):
            continue  # the value is already wrong: its gradient is wrong with it
        parts.append(_diagnose_group(group, alpha, m))
    values = [r for r in failed if not r.info["stochastic"] and not r.info.get("gradient")]
    float32 = [r for r in values if r.info.get("dtype") == "float64"
               and r.info["tol"] < _nearest(r)[0] <= FLOAT32_BAND
               and _diag_tol(r) > r.info["tol"]]
    # one row off by float32 rounding is evidence enough (another may round more luckily)
    if float32:
        err = max(_nearest(r)[0] for r in float32)
        parts.append(f"float32 arithmetic detected (relative error ~{err:.1g} in a float64 "
                     f"output)")
    text = " | ".join(p for p in dict.fromkeys(parts) if p)
    if errors:
        text += f"; {errors[0].detail}"
    return text


def _diagnose_group(failed: list[CheckRow], alpha: float, m: int) -> str:
    """The named pattern (or constant, or worst error) of one group of failed rows."""
    named: dict[str, str] | None = None
    for r in failed:
        here = {k: ph for k, (ph, v) in r.info["alts"].items()
                if _fits(r, v, DIAGNOSIS_LEVEL / m)}
        named = here if named is None else {k: ph for k, ph in named.items() if k in here}
    if named:
        # fewest bugs first: a pattern of one slip beats a combination of two, and a constant
        # with a name (one slip) beats any combination
        fewest = min(ph.count("; ") for ph in named.values())
        if fewest > 0:
            const = _constant_ratio(failed, alpha, m)
            if const and " = " in const.split(" instead of ")[0]:  # a named coefficient
                return const
        return " | ".join(dict.fromkeys(ph for ph in named.values()
                                        if ph.count("; ") == fewest))
    # the reference itself within float32 rounding: only the precision is wrong
    if all(not r.info["stochastic"] and _rel(r.info["observed"], r.info["reference"])
           <= _diag_tol(r) for r in failed):
        return ""
    if any(r.info.get("random") for r in failed):
        return "fn is random (two calls differ): declare stochastic=True to test its mean"
    const = _constant_ratio(failed, alpha, m)
    if const:
        return const
    worst = max(failed, key=lambda r: r.statistic or 0.0)
    what = "gradient " if worst.info.get("gradient") else ""
    return (f"{what}matches no known bug pattern (worst: {worst.name} at q = {worst.q:g}, "
            f"statistic {worst.statistic:.3g})")


# ----- the checker --------------------------------------------------------------------------

@dataclass(frozen=True)
class RegularizerReport(CheckReport):
    """The report of :func:`check_explicit_regularizer`: one row per network and ``q``."""

    form: str = "r_approx"
    q: tuple[float, ...] = ()
    nets: tuple[str, ...] = ()


def _gradients_arg(gradients: Any, form: str, mask: str, adapter: Adapter) -> tuple[bool, bool]:
    """``(check gradients, require them)`` from ``gradients`` ("auto", True, False)."""
    if gradients not in ("auto", True, False):
        raise ValueError(f"gradients must be 'auto', True or False, got {gradients!r}")
    exact_grad = form != "taylor" and mask != "per_step"
    if gradients is True:
        if isinstance(adapter, WeightLists):
            raise ValueError("gradients=True needs a torch adapter ('torch' or 'activations'): "
                             "numpy weight lists carry no gradient")
        if not exact_grad:
            raise ValueError(f"gradients=True: dropcheck has no exact gradient of form={form!r}"
                             f"{' with mask=per_step' if mask == 'per_step' else ''}; "
                             f"use r_approx, identity, loss_jacobian or r_drop")
        return True, True
    if gradients is False:
        return False, False
    return exact_grad and not isinstance(adapter, WeightLists), False


def check_explicit_regularizer(
    fn: Callable[..., Any],
    *,
    form: str = "r_approx",
    q: float | Sequence[float] = 0.3,
    includes_strength: bool = True,
    mask: str = "model",
    sizes: Sequence[Sequence[int]] = DEFAULT_SIZES,
    activations: str | Sequence[str] = DEFAULT_ACTIVATIONS,
    sites: Iterable[str] | str | None = None,
    n_nets: int = 3,
    examples: int = 6,
    scale: float = 1.0,
    nets: Sequence[MLP] | None = None,
    model: Any = None,
    data: Any = None,
    adapter: Adapter | str = "numpy",
    reduction: str = "auto",
    stochastic: bool = False,
    calls: int = 256,
    gradients: bool | str = "auto",
    rtol: float | None = None,
    alpha: float = 1e-6,
    seed: int = 0,
    retest_failures: bool = True,
    raise_on_failure: bool = False,
) -> RegularizerReport:
    """Check that ``fn`` computes dropout's explicit regularizer in the declared ``form``.

    Args:
        fn: the user's regularizer, called through ``adapter``: by default
            ``fn(weights, biases, x, y, q, *, sites, activation, rng)`` (keywords passed when
            accepted; see :mod:`dropcheck.checks.adapters`), with ``adapter="torch"``
            ``fn(model, x, y, q, *, sites, rng)`` for a ``torch.nn.Sequential`` in eval mode
            (the user's own module with ``model=``), with ``adapter="activations"``
            ``fn(acts, logits, targets, q, *, head, params, sites, rng)`` (tensors on torch's
            graph).  It returns per-example values ``(n,)`` or their mean over the batch
            (a number, 0-d, ``(1,)`` or ``(1, 1)``).
        form: ``"r_approx"`` (eq. 4.4), ``"identity"`` (``H_out = I``), ``"loss_jacobian"``
            (``R̃_approx``, eq. 5.1), ``"taylor"`` (eq. 4.2) or ``"r_drop"`` (exact).
        q: drop probability of every site, or a sequence (one row per network and ``q``).
            Avoid 0.5 alone: there ``2·strength = 1`` and two bugs give the same value.
        includes_strength: for the ``R_approx`` family, whether ``fn`` includes the constant
            ``q/(2(1−q))`` (else the raw value is expected).
        mask: ``"model"`` (the model's own mask form: locked along time for a locked site) or
            ``"per_step"`` (``R_approx`` with a mask per element; ``form="r_approx"`` only).
        sizes: layer sizes of the random networks, cycled over the ``n_nets`` nets.
        activations: activation names, cycled the same way.
        sites: dropout sites of every network (default: every hidden layer).
        n_nets: number of random networks.
        examples: batch size ``n`` of every network.
        scale: multiplies the LeCun-initialized weights.
        nets: the caller's own networks (float64 numpy MLPs) instead of random ones.
        model: any dropcheck model (``dc.from_torch(...)``), or a list, instead of the random
            MLPs; needs ``data``.
        data: ``(x, y)`` for ``model`` (or a list of pairs).
        adapter: ``"numpy"``, ``"torch"``, ``"activations"`` or an adapter object.
        reduction: ``"auto"`` (shape decides), ``"none"`` (per-example) or ``"mean"``.
        stochastic: ``fn`` is a random estimator: call it ``calls`` times and t-test the mean.
        calls: calls per network and ``q`` of a stochastic ``fn`` (twice that in a re-test).
        gradients: ``"auto"``: with a torch adapter, also check ``∇_θ`` of the returned batch
            mean against ``∇`` of the target when the value is on torch's graph; ``True``:
            require it; ``False``: values only.
        rtol: tolerance of the deterministic comparison; default ``4·sqrt(eps)`` of the output
            dtype.
        alpha: bound on the probability that a correct stochastic estimator fails (Holm over
            its rows, with the re-test); deterministic rows cannot false-alarm.
        seed: seeds the networks, the batches and the ``rng`` handed to ``fn``.
        retest_failures: re-test a failed test once on fresh calls before failing it.
        raise_on_failure: raise :class:`~dropcheck.checks.DropcheckError` on failure.

    Returns:
        A :class:`RegularizerReport`; ``str(report)`` is the table.

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it).
        DropcheckError: a check failed and ``raise_on_failure`` is true.
    """
    grid, alpha, seed = grid_args(fn, q, alpha, seed)
    form = check_choice(form, FORMS, "form")
    if not isinstance(includes_strength, bool):
        raise TypeError(f"includes_strength must be True or False, got {includes_strength!r}")
    if form not in _HESSIAN and not includes_strength:
        raise ValueError(f"includes_strength=False applies to form='r_approx' (and 'identity', "
                         f"'loss_jacobian') only: {form} includes q/(2(1−q)) by definition")
    mask = check_choice(mask, MASK_FORMS, "mask")
    if mask == "per_step" and form != "r_approx":
        raise ValueError(f"mask='per_step' applies to form='r_approx' only, got form={form!r}")
    reduction = check_choice(reduction, _REDUCTIONS, "reduction")
    calls = check_positive_int(calls, "calls", minimum=2 * UNIT)
    if rtol is not None and not (isinstance(rtol, int | float) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    the_adapter = get_adapter(adapter)
    check_grad, need_grad = _gradients_arg(gradients, form, mask, the_adapter)
    problems = build_problems(nets, sizes, activations, sites, n_nets, examples, scale, seed,
                              model=model, data=data, adapter=the_adapter)
    setup = _Setup(form, includes_strength, the_adapter, reduction, bool(stochastic),
                   calls, rtol, seed, mask, check_grad, need_grad)

    def rows_for(pb: Problem, v: float, ref: _Reference, stage: int) -> list[CheckRow]:
        if setup.stochastic:  # stage 2 re-tests on fresh calls, twice as many
            return _t_rows(fn, pb, v, ref, setup, stage * calls, stage)
        return _exact_rows(fn, pb, v, ref, setup)  # exact rows are never re-tested

    rows = run_grid(problems, grid,
                    lambda pb, v: _reference(pb, v, form, includes_strength, mask, check_grad),
                    rows_for, alpha, retest_failures)

    sizes_lines = [f"{pb.label}: {pb.n} examples, seed stream [{seed}, {pb.index}]"
                   for pb in problems]
    if setup.stochastic:
        sizes_lines.append(f"{calls} calls per net and q ({calls // UNIT} units of {UNIT}), "
                           f"tests Holm-corrected at alpha = {alpha:g}")
    notes = []
    if not setup.stochastic:
        notes.append("deterministic: one call per net and q; ‖v − r‖_∞ ≤ rtol·‖r‖_∞ "
                     "(rtol = 4·sqrt(eps) of the output dtype unless given); no false alarms")
    else:
        notes.append(f"a correct estimator fails with probability <= alpha = {alpha:g} (t-tests "
                     "on unit means, Holm" + (", re-tested on fresh calls)" if retest_failures
                                               else ")"))
    has_grad = any(r.info.get("gradient") for r in rows)
    if check_grad and has_grad:
        notes.append("gradient rows: ∇θ of fn's batch mean (autograd) against ∇ of the target "
                     "(dropcheck.explicit.r_approx_grad / exact enumeration)"
                     + (", Hotelling T² on the means of units of calls" if setup.stochastic
                        else ""))
    elif check_grad:
        notes.append("gradients not checked: fn's value is not on torch's graph")
    if set(grid) == {0.5}:
        notes.append("at q = 0.5 alone 2·strength(q) = 1: 'constant missing' and 'constant "
                     "q/(1−q)' give the same value; add another q")
    extra = {k: v for k, v in (
        ("includes_strength", None if includes_strength else False),
        ("mask", mask if mask != "model" else None),
        ("stochastic", True if setup.stochastic else None),
        ("calls", calls if setup.stochastic and calls != 256 else None),
        ("gradients", gradients if gradients != "auto" else None)) if v is not None}
    title, reproduce = call_text("check_explicit_regularizer", fn, ("form", form), grid,
                                 seed=seed, n_nets=len(problems), adapter=setup.adapter,
                                 extra=extra, own_random_state=setup.stochastic)
    report = RegularizerReport(
        title=title,
        rows=tuple(rows),
        alpha=alpha,
        seed=seed,
        diagnosis=diagnose_regularizer(rows, alpha),
        sample_sizes=tuple(sizes_lines),
        notes=tuple(notes),
        reproduce=reproduce,
        form=form, q=grid, nets=tuple(pb.label for pb in problems),
    )
    return finish(report, raise_on_failure)


def assert_regularizer_matches(fn: Callable[..., Any], **kwargs: Any) -> RegularizerReport:
    """Run :func:`check_explicit_regularizer` and raise ``DropcheckError`` if a check failed.

    The error message is the report: expected and observed values per network, the worst
    example, the diagnosis and the call that reproduces it.  Returns the report on success.
    """
    return check_explicit_regularizer(fn, raise_on_failure=True, **kwargs)
