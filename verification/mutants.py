"""Mutants as data: named wrong implementations, each with the claims expected to catch it.

A :class:`Mutant` swaps one piece of the library for a wrong one while its context manager is
active (``with mutant.patch(): ...``).  ``dropcheck verify --mutants`` measures the claims under
every mutant and prints the claim × mutant matrix: a claim that still passes with a wrong library
inside does not test that piece of the library.

Any module of the ``verification`` package may define a module-level ``MUTANTS`` list of
:class:`Mutant` objects; :func:`all_mutants` collects them all (this module's own list included),
so a new claim family brings its mutants with it.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mutant:
    """One deliberately wrong implementation.

    ``name`` is a short identifier (the matrix column), ``description`` says what is wrong,
    ``claims`` are the claim IDs expected to catch it (FAIL or DEVIATES under the mutant), and
    ``patch`` is a zero-argument callable returning a context manager that applies the wrong
    implementation and restores the library on exit.
    """

    name: str
    description: str
    claims: tuple[str, ...]
    patch: Callable[[], AbstractContextManager[Any]]


@contextlib.contextmanager
def swap(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Set ``obj.attr = value`` for the duration of the block, then restore it."""
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


@contextlib.contextmanager
def swap_everywhere(original: Any, value: Any, *, modules: tuple[str, ...] = ()) -> Iterator[None]:
    """Replace every module-level binding of ``original`` in ``dropcheck.*`` by ``value``.

    A function imported by name (``from dropcheck.noise import sample_eta``) is looked up in the
    importing module, so a mutant must replace it there too.  ``modules`` are imported first
    (the library loads its submodules lazily).  Raises ``LookupError`` when nothing is bound to
    ``original`` (the library was restructured: the mutant needs updating).
    """
    for name in modules:
        importlib.import_module(name)
    swapped = []
    for mname, mod in list(sys.modules.items()):
        if mod is None or not (mname == "dropcheck" or mname.startswith("dropcheck.")):
            continue
        for attr, obj in list(vars(mod).items()):
            if obj is original:
                swapped.append((mod, attr))
    if not swapped:
        raise LookupError(f"no module binds {original!r}: the mutant needs updating")
    for mod, attr in swapped:
        setattr(mod, attr, value)
    try:
        yield
    finally:
        for mod, attr in swapped:
            setattr(mod, attr, original)


def _attr(path: str) -> tuple[Any, str]:
    """``"pkg.mod.Class.attr"`` -> (the owner object, ``"attr"``), importing the module part."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:-1]:
            obj = getattr(obj, p)
        if not hasattr(obj, parts[-1]):
            raise LookupError(f"{path} does not exist: the mutant needs updating")
        return obj, parts[-1]
    raise LookupError(f"cannot import {path}")


def _replace(path: str, make: Callable[[Any], Any]) -> Callable[[], AbstractContextManager[Any]]:
    """A patch that replaces the object at ``path`` (everywhere it is bound) by ``make(orig)``."""

    def patch() -> AbstractContextManager[Any]:
        owner, attr = _attr(path)
        orig = getattr(owner, attr)
        if isinstance(owner, type):  # a method: replace it on its class
            return swap(owner, attr, make(orig))
        return swap_everywhere(orig, make(orig), modules=(owner.__name__,))

    return patch


def _patches(*patches: Callable[[], AbstractContextManager[Any]]
             ) -> Callable[[], AbstractContextManager[Any]]:
    """Several patches applied together."""

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for p in patches:
                stack.enter_context(p())
            yield

    return patch


def _bind(fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments of a call of ``fn`` by parameter name (defaults applied)."""
    import inspect

    ba = inspect.signature(fn).bind(*args, **kwargs)
    ba.apply_defaults()
    return dict(ba.arguments)


def _call(fn: Any, named: dict[str, Any], aliases: dict[str, tuple[str, ...]] | None = None
          ) -> Any:
    """Call ``fn`` with ``named`` values, by its own parameter kinds (positional or keyword).

    ``aliases`` maps a name of ``named`` to the names it may have in ``fn`` (a renamed argument).
    """
    import inspect

    sig = inspect.signature(fn)
    args, kwargs = [], {}
    taken = set()
    for p in sig.parameters.values():
        names = (p.name, *((aliases or {}).get(p.name, ())))
        src = next((n for n in names if n in named), None)
        if src is None:
            for k, al in (aliases or {}).items():
                if p.name in al and k in named:
                    src = k
        if src is None:
            continue
        taken.add(src)
        if p.kind in (p.POSITIONAL_ONLY,):
            args.append(named[src])
        else:
            kwargs[p.name] = named[src]
    return fn(*args, **kwargs)


# ----- the constant of the explicit regularizer -----
def _strength_mutant(wrong: Callable[[float], float]) -> Callable[[], AbstractContextManager[Any]]:
    """Replace every ``strength``/``_strength`` function of the library (explicit, implicit, LM)."""

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        for name in ("dropcheck.explicit", "dropcheck.explicit.taylor", "dropcheck.implicit"):
            importlib.import_module(name)
        originals = set()
        for mname, mod in list(sys.modules.items()):
            if mod is not None and mname.startswith("dropcheck") and "verification" not in mname:
                for attr in ("strength", "_strength"):
                    obj = vars(mod).get(attr)
                    if callable(obj) and not isinstance(obj, type) and \
                            getattr(obj, "__module__", "").startswith("dropcheck"):
                        originals.add(obj)
        with contextlib.ExitStack() as stack:
            for orig in originals:
                stack.enter_context(swap_everywhere(orig, wrong))
            yield

    return patch


# ----- H_out of cross-entropy -----
def _hout_mutant(kind: str) -> Callable[[], AbstractContextManager[Any]]:
    """Cross-entropy's ``H_out`` replaced by ``diag(p)`` or ``I`` (value and gradient intact)."""

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        from dropcheck.losses import CrossEntropy, softmax

        orig_hvp = CrossEntropy.hvp

        def p_of(f: Any) -> Any:
            return softmax(f)

        def hessian(self: Any, f: Any, y: Any) -> Any:
            xp = self_xp(f)
            eye = xp.eye(f.shape[-1], dtype=f.dtype)
            return (p_of(f)[..., :, None] if kind == "diag_p" else 1.0) * eye + 0.0 * f[..., None]

        def hvp(self: Any, f: Any, y: Any, v: Any) -> Any:
            return p_of(f) * v if kind == "diag_p" else v + 0.0 * f

        def factor(self: Any, f: Any, y: Any) -> Any:
            xp = self_xp(f)
            eye = xp.eye(f.shape[-1], dtype=f.dtype)
            s = xp.sqrt(p_of(f)) if kind == "diag_p" else 1.0 + 0.0 * f
            return s[..., :, None] * eye

        def form_grad(self: Any, f: Any, y: Any, v: Any) -> Any:
            # ∇_F Σ_a p_a v_a² = H_true(v ⊙ v) for diag(p); 0 for I
            return orig_hvp(self, f, y, v * v) if kind == "diag_p" else 0.0 * v

        def trace(self: Any, f: Any, y: Any = None) -> Any:
            xp = self_xp(f)
            return xp.sum(p_of(f), axis=-1) if kind == "diag_p" else \
                xp.sum(1.0 + 0.0 * f, axis=-1)

        new = {"hessian": hessian, "hvp": hvp, "hessian_factor": factor,
               "hessian_form_grad": form_grad, "hessian_trace": trace}
        with contextlib.ExitStack() as stack:
            for attr, fn in new.items():
                if attr in vars(CrossEntropy):
                    stack.enter_context(swap(CrossEntropy, attr, fn))
            yield

    return patch


def self_xp(a: Any) -> Any:
    """The array namespace of ``a``."""
    from dropcheck.backend import namespace

    return namespace(a)


# ----- the noise Hessian and the Taylor term -----
def _gn_noise_hessian(orig: Any) -> Any:
    """``noise_hessian`` without its model-Hessian term: ``Jᵀ H_out J`` in noise coordinates."""

    def noise_hessian(model: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        import numpy as np

        full = np.asarray(orig(model, x, y, *args, **kwargs))
        x2, single = model.check_x(x)
        y2 = model.check_y(y, x2.shape[0])
        sites = kwargs.get("sites", args[0] if args else None)
        names = model.check_sites(sites)
        order = [s for s in model.site_names if s in names]
        D = sum(model.widths[s] for s in order)
        eye = np.eye(D)
        tans, i = {}, 0
        for s in order:
            d = model.widths[s]
            tans[s] = model.xp.asarray(eye[:, i:i + d].reshape(D, 1, 1, d))
            i += d
        tr = model.trace(x2)
        t = np.asarray(model.tangent(tr, noise_tangents=tans).logits)[:, 0]  # (D, n, c)
        h = np.asarray(model.loss.hessian(tr.logits, y2))[0]  # (n, c, c)
        gn = np.einsum("inc,ncd,jnd->nij", t, h, t)
        return gn[0] if single else gn.reshape(full.shape)

    return noise_hessian


def _taylor_is_gn(orig: Any) -> Any:
    def taylor(model: Any, x: Any, y: Any, q: Any, *args: Any, **kwargs: Any) -> Any:
        from dropcheck.explicit import hessian_split

        return hessian_split(model, x, y, q, *args, **kwargs).total_gauss_newton

    return taylor


def _split_no_remainder(orig: Any) -> Any:
    """``hessian_split`` with the model-Hessian remainder zeroed (Gauss–Newton only)."""

    def hessian_split(*args: Any, **kwargs: Any) -> Any:
        sp = orig(*args, **kwargs)
        return type(sp)(sp.gauss_newton, {k: 0.0 * v for k, v in sp.remainder.items()})

    return hessian_split


def _drop_last_site(orig: Any, has_q: bool, index: int = -1) -> Any:
    """``taylor``/``r_approx`` that leave one of several sites (the last) out of the sum."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        a = _bind(orig, args, kwargs)
        model = a["model"]
        names = list(model.check_sites(a.get("sites")))
        if len(names) > 1:
            del names[index]
            a["sites"] = tuple(names)
            if has_q and isinstance(a.get("q"), dict):
                a["q"] = {s: v for s, v in a["q"].items() if s in a["sites"]}
        return _call(orig, a)

    return wrong


# ----- ξ_approx -----
def _xi_core(which: str) -> Callable[[], AbstractContextManager[Any]]:
    """``ξ_approx`` without the path through ``J_loss`` (``which="no_jloss"``) or with it alone.

    ``ξ_approx = d/dε ∇_W ℓ(F(x, εη))`` has two parts: the change of the loss gradient
    ``ġ = H_out Ḟ`` pulled back through the clean net (the path through ``J_loss``) and the
    change of the backward sweep itself at fixed ``g`` (the path through ``h_i``).
    """

    def make(orig: Any) -> Any:
        def core(model: Any, *args: Any, **kwargs: Any) -> Any:
            full = orig(model, *args, **kwargs)
            loss_cls = type(model.loss)
            with swap(loss_cls, "hvp", lambda self, f, y, v: 0.0 * v):  # ġ = 0: no J_loss path
                no_jloss = orig(model, *args, **kwargs)
            return no_jloss if which == "no_jloss" else full - no_jloss

        return core

    return _replace("dropcheck.implicit._xi_approx_core", make)


def _r_tilde_is_r_approx(orig: Any) -> Any:
    """``r_approx(hessian="loss_jacobian")`` (R̃, eq. 5.1) that returns ``R_approx`` instead."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        a = _bind(orig, args, kwargs)
        if a.get("hessian") == "loss_jacobian":
            a["hessian"] = "loss"
        return _call(orig, a)

    return wrong


def _xi_cov_variance_q(orig: Any) -> Any:
    """``xi_approx_cov`` with the noise variance ``q`` instead of ``q/(1−q)``."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        a = _bind(orig, args, kwargs)
        q = a["q"]
        if isinstance(q, dict):
            return _call(orig, {**a, "q": {s: v / (1 + v) for s, v in q.items()}})
        return _call(orig, {**a, "q": q / (1 + q)})  # q'/(1−q') = q

    return wrong


_DRAWS = {"draws": ("samples",), "samples": ("draws",)}


def _dropout_k_one_mask(orig: Any) -> Any:
    """DROPOUT_k that draws one mask and reuses it k times (the gradient of DROPOUT_1)."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        a = _bind(orig, args, kwargs)
        return _call(orig, {**a, "k": 1})

    return wrong


def _alg4_scaled(orig: Any) -> Any:
    """Algorithm 4 with the coefficient of Sec. 3.1, ``sqrt(½(1−1/k))``, instead of ``sqrt(1−1/k)``.

    Rebuilt from the public pieces: DROPOUT_k plus the scaled mini-batch ``ξ_approx``.
    """

    def wrong(*args: Any, **kwargs: Any) -> Any:
        import dropcheck.implicit as im
        from dropcheck.backend import make_rng

        a = _bind(orig, args, kwargs)
        if a.get("noise", "exact") != "approx" or a["k"] == 1:
            return _call(orig, a)
        rng = a.get("rng")
        gen = rng if hasattr(rng, "random") else make_rng(rng)
        g = _call(im.dropout_k_gradient, {**a, "rng": gen}, _DRAWS)
        extra = _call(im.xi_approx, {**a, "rng": gen, "noise": a.get("approx_noise",
                                                                       "bernoulli"),
                                     "reduction": "mean"}, _DRAWS)
        return g + math.sqrt(0.5 * (1 - 1 / a["k"])) * extra

    return wrong


def _d3_wrong_coefficient(orig: Any) -> Any:
    """Sec. 3.1's injection with ``sqrt(1−1/k)`` ξ̃ (twice the variance it should add)."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        import dropcheck.implicit as im
        from dropcheck.backend import make_rng

        a = _bind(orig, args, kwargs)
        if a.get("noise", "exact") != "exact" or a["k"] == 1:
            return _call(orig, a)
        rng = a.get("rng")
        gen = rng if hasattr(rng, "random") else make_rng(rng)
        g = _call(im.dropout_k_gradient, {**a, "rng": gen}, _DRAWS)
        t = _call(im.xi_tilde, {**a, "rng": gen, "reduction": "mean"}, _DRAWS)
        return g + math.sqrt(1 - 1 / a["k"]) * t

    return wrong


def _xi_tilde_same_mask(orig: Any) -> Any:
    """ξ̃ from two *identical* masks: ``ξ_drop`` itself (covariance Cov, not 2 Cov)."""

    def wrong(*args: Any, **kwargs: Any) -> Any:
        import dropcheck.implicit as im

        a = _bind(orig, args, kwargs)
        return _call(im.xi_drop, a, _DRAWS)

    return wrong


# ----- noise samplers -----
def _mask_rate(delta: float) -> Any:
    def make(orig: Any) -> Any:
        def sample_mask(rng: Any, shape: Any, q: float, *args: Any, **kwargs: Any) -> Any:
            return orig(rng, shape, min(max(q + delta, 0.0), 0.999), *args, **kwargs)

        return sample_mask

    return make


def _rademacher_plus(orig: Any) -> Any:
    def sample_rademacher(rng: Any, shape: Any, q: float, *args: Any, **kwargs: Any) -> Any:
        s = orig(rng, shape, q, *args, **kwargs)
        return abs(s) if not hasattr(s, "__array_namespace__") else s.__array_namespace__().abs(s)

    return sample_rademacher


def _rademacher_sqrt_q(orig: Any) -> Any:
    def sample_rademacher(rng: Any, shape: Any, q: float, *args: Any, **kwargs: Any) -> Any:
        return orig(rng, shape, q, *args, **kwargs) * math.sqrt(1.0 - q)  # scale sqrt(q)

    return sample_rademacher


def _eta_moments_q(orig: Any) -> Any:
    def eta_moments(q: float) -> dict[str, float]:
        out = dict(orig(q))
        out["second"] = q
        return out

    return eta_moments


# ----- sampled labels -----
def _uniform_labels(orig: Any) -> Any:
    """Labels ŷ drawn uniformly over the classes instead of from softmax(F(x))."""

    def sample_labels(rng: Any, p: Any, samples: int, xp: Any) -> Any:
        c = p.shape[-1]
        return orig(rng, xp.ones_like(p) / c, samples, xp)

    return sample_labels


# ----- Theorem 4.1 -----
def _theorem(change: str) -> Any:
    def make(orig: Any) -> Any:
        def theorem41(*args: Any, **kwargs: Any) -> Any:
            import dataclasses

            t = orig(*args, **kwargs)
            if change == "mu_as_nu":
                term1 = ((t.A * t.nu) ** (2 / 3) * (t.theta * t.B) ** (1 / 3) / t.n ** (1 / 3))
                return dataclasses.replace(t, term1=term1,
                                           rhs=term1 + t.term2 + t.term3 + t.zeta)
            if change == "rhs_x1000":
                return dataclasses.replace(t, rhs=1000.0 * t.rhs)
            return dataclasses.replace(t, rhs=t.n ** -0.5)  # "rhs_n_half"

        return theorem41

    return make


# ----- classical -----
def _ridge_variance_q(orig: Any) -> Any:
    def ridge_penalty(W: Any, x: Any, q: float, *args: Any, **kwargs: Any) -> Any:
        return orig(W, x, q, *args, **kwargs) * (1.0 - q)  # λ = q instead of q/(1−q)

    return ridge_penalty


def _mc_one_mask(orig: Any) -> Any:
    """MC dropout whose T passes share one mask (its mean and variance cannot converge).

    The mask sampler that ``mc_dropout`` calls is swapped, for the call, for one that draws the
    first pass's mask and repeats it for every later pass (whatever stream each block of passes
    comes from).
    """

    def mc_dropout(*args: Any, **kwargs: Any) -> Any:
        import numpy as np

        import dropcheck.classical as cl

        real = cl.sample_eta
        first: dict[Any, Any] = {}

        def one_mask(gen: Any, shape: Any, q: Any, **kw: Any) -> Any:
            key = (tuple(shape[1:]), q)
            if key not in first:
                first[key] = real(gen, (1, *shape[1:]), q, **kw)
            return np.broadcast_to(first[key], tuple(shape)).copy()

        cl.sample_eta = one_mask
        try:
            return orig(*args, **kwargs)
        finally:
            cl.sample_eta = real

    return mc_dropout


def _weight_scaling_ignores_convention(orig: Any) -> Any:
    def weight_scaled_predict(*args: Any, **kwargs: Any) -> Any:
        a = _bind(orig, args, kwargs)
        a["convention"] = "inverted"
        return _call(orig, a)

    return weight_scaled_predict


#: The mutants of the library's core pieces (other verification modules add their own).
MUTANTS: list[Mutant] = [
    Mutant("strength_q_over_1mq", "strength(q) = q/(1−q) (the ½ forgotten)", ("E2", "E1"),
           _strength_mutant(lambda q: q / (1.0 - q))),
    Mutant("strength_inverted", "strength(q) = (1−q)/(2q) (keep and drop swapped)",
           ("E2", "E1"), _strength_mutant(lambda q: (1.0 - q) / (2.0 * q) if q > 0 else 0.0)),
    Mutant("strength_q_half", "strength(q) = q/2 (the 1/(1−q) of inverted dropout forgotten)",
           ("E2",), _strength_mutant(lambda q: q / 2.0)),
    Mutant("hout_diag_p", "cross-entropy H_out = diag(p) (the −ppᵀ forgotten)",
           ("E5", "E7", "E1", "E3b"), _hout_mutant("diag_p")),
    Mutant("hout_identity", "cross-entropy H_out = I", ("E5", "E7", "E1", "E3b"),
           _hout_mutant("identity")),
    Mutant("noise_hessian_no_model_term",
           "noise_hessian without its model-Hessian term (Jᵀ H_out J only)", ("E4",),
           _replace("dropcheck.explicit.noise_hessian", _gn_noise_hessian)),
    Mutant("taylor_is_gauss_newton", "taylor() returns the Gauss–Newton part (strength·R_approx)",
           ("E1", "E4"), _replace("dropcheck.explicit.taylor", _taylor_is_gn)),
    Mutant("model_hessian_term_zeroed",
           "hessian_split() with the model-Hessian remainder zeroed (R_taylor = Gauss–Newton)",
           ("E3", "E1"), _replace("dropcheck.explicit.hessian_split", _split_no_remainder)),
    Mutant("taylor_site_missing", "taylor() leaves the last of several sites out of the sum",
           ("E4", "E1"), _replace("dropcheck.explicit.taylor",
                                  lambda o: _drop_last_site(o, True))),
    Mutant("r_tilde_is_r_approx", "R̃_approx (5.1, g gᵀ of the true label) computed with H_out",
           ("E6",), _replace("dropcheck.explicit.r_approx", _r_tilde_is_r_approx)),
    Mutant("r_approx_site_missing", "r_approx() leaves the last of several sites out of the sum",
           ("E5",), _replace("dropcheck.explicit.r_approx", lambda o: _drop_last_site(o, False))),
    Mutant("r_approx_factor_no_embedding",
           "r_approx_factor() (the LSTM's exact R_approx) leaves the first site (the embedding) "
           "out", ("S1",), _replace("dropcheck.explicit.r_approx_factor",
                                    lambda o: _drop_last_site(o, True, 0))),
    Mutant("xi_approx_no_jloss_path",
           "ξ_approx without the gradient path through J_loss (only through h_i)",
           ("I2", "I1"), _xi_core("no_jloss")),
    Mutant("xi_approx_jloss_only", "ξ_approx through J_loss only (h_i held fixed)",
           ("I2", "I1"), _xi_core("jloss_only")),
    Mutant("xi_approx_cov_variance_q",
           "xi_approx_cov with the noise variance q instead of q/(1−q)", ("I1", "I2"),
           _replace("dropcheck.implicit.xi_approx_cov", _xi_cov_variance_q)),
    Mutant("eta_second_moment_q", "eta_moments: E[η²] = q instead of q/(1−q)", ("N1",),
           _replace("dropcheck.noise.eta_moments", _eta_moments_q)),
    Mutant("drop_rate_plus_0.02", "the mask sampler drops with probability q + 0.02",
           ("N1",), _replace("dropcheck.noise.sample_mask", _mask_rate(0.02))),
    Mutant("drop_rate_minus_0.02", "the mask sampler drops with probability q − 0.02",
           ("N1",), _replace("dropcheck.noise.sample_mask", _mask_rate(-0.02))),
    Mutant("rademacher_always_plus", "the Rademacher sampler always returns +sqrt(q/(1−q))",
           ("N2", "I2"), _replace("dropcheck.noise.sample_rademacher", _rademacher_plus)),
    Mutant("rademacher_scale_sqrt_q", "Rademacher signs scaled by sqrt(q), not sqrt(q/(1−q))",
           ("N2", "I2"), _replace("dropcheck.noise.sample_rademacher", _rademacher_sqrt_q)),
    Mutant("dropout_k_one_mask", "DROPOUT_k draws one mask and reuses it k times",
           ("D1",), _replace("dropcheck.implicit.dropout_k_gradient",
                                  _dropout_k_one_mask)),
    Mutant("xi_tilde_same_mask", "ξ̃ takes both gradients at the same mask (it is ξ_drop)",
           ("D2",), _replace("dropcheck.implicit.xi_tilde", _xi_tilde_same_mask)),
    Mutant("sec31_coefficient_sqrt", "Sec. 3.1 injection with sqrt(1−1/k) ξ̃ (not sqrt(½(1−1/k)))",
           ("D3",), _replace("dropcheck.implicit.noise_injected_gradient",
                             _d3_wrong_coefficient)),
    Mutant("alg4_coefficient_half", "Algorithm 4 scaled by sqrt(½(1−1/k)) instead of sqrt(1−1/k)",
           ("I2",), _replace("dropcheck.implicit.noise_injected_gradient", _alg4_scaled)),
    Mutant("labels_uniform", "sampled labels ŷ uniform over the classes, not from softmax(F(x))",
           ("E5",), _replace("dropcheck.explicit._common.sample_labels", _uniform_labels)),
    Mutant("theorem_mu_as_nu", "Theorem 4.1's first term with ν in place of μ", ("T1",),
           _replace("dropcheck.theory.theorem41", _theorem("mu_as_nu"))),
    Mutant("theorem_rhs_x1000", "Theorem 4.1's right-hand side × 1000", ("T1",),
           _replace("dropcheck.theory.theorem41", _theorem("rhs_x1000"))),
    Mutant("theorem_rhs_n_half", "Theorem 4.1's right-hand side replaced by n^−½", ("T1",),
           _replace("dropcheck.theory.theorem41", _theorem("rhs_n_half"))),
    Mutant("ridge_variance_q", "the ridge penalty of input dropout with λ = q, not q/(1−q)",
           ("L1",), _replace("dropcheck.classical.ridge_penalty", _ridge_variance_q)),
    Mutant("mc_dropout_one_mask", "MC dropout's T passes share one mask", ("L3",),
           _replace("dropcheck.classical.mc_dropout", _mc_one_mask)),
    Mutant("weight_scaling_ignores_convention",
           "weight scaling ignores the original convention (no × p)", ("L2",),
           _replace("dropcheck.classical.weight_scaled_predict",
                    _weight_scaling_ignores_convention)),
]


def all_mutants() -> list[Mutant]:
    """Every mutant of every verification module (``MUTANTS`` lists), this module's first.

    Names must be unique across modules (a ``ValueError`` names the clash).
    """
    from dropcheck.verification._registry import all_claims

    all_claims()  # imports every verification module
    mods = sorted((n, m) for n, m in sys.modules.items()
                  if m is not None and n.startswith("dropcheck.verification.")
                  and n != __name__)
    found: list[Mutant] = list(MUTANTS)
    for _, mod in mods:
        found += [m for m in getattr(mod, "MUTANTS", []) if isinstance(m, Mutant)]
    seen: dict[str, Mutant] = {}
    for m in found:
        if m.name in seen and seen[m.name] is not m:
            raise ValueError(f"mutant name {m.name!r} is defined twice")
        seen[m.name] = m
    return list(seen.values())
