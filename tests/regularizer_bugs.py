"""Explicit regularizers and gradient noises written by "users", in numpy and in PyTorch.

Each implementation is written from the paper's formulas without dropcheck's internals (numpy:
hand-written forward/backward passes and head Jacobians; torch: autograd and ``torch.func``), and
comes either correct or with one bug modelled on a real slip.  A :class:`Case` names the phrase of
``report.diagnosis`` that must name its bug (``None``: the check must pass) and the checker's
keyword arguments.  ``numpy_regularizers()``, ``torch_regularizers()``, ``numpy_noises()`` and
``torch_noises()`` return fresh cases; torch is imported only by the torch functions.

Run as a script to measure the false-alarm rate of ``check_gradient_noise`` on correct noises::

    python -m tests.regularizer_bugs --seeds 200 [--alpha 0.05] [--no-retest]

and, with ``--gradient``, that of the gradient check of ``check_explicit_regularizer`` on the
correct sampled-label regularizer written for a training loop (:func:`act_r_hat`, REINFORCE
term included), one report per seed with three nets and ``--calls`` calls each::

    python -m tests.regularizer_bugs --gradient --seeds 200 --alpha 0.05 --calls 256 --no-retest
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """``check(fn, **kwargs)`` must pass (``diagnosis`` None) or fail naming ``diagnosis``."""

    name: str
    fn: Callable[..., Any]
    diagnosis: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)


# ----- numpy: a hand-written MLP -------------------------------------------------------------

ACT = {
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z: 0.5 * (1.0 + np.tanh(z / 2))),
    "sigmoid": (lambda z: 0.5 * (1.0 + np.tanh(z / 2)),
                lambda z: 0.25 * (1.0 - np.tanh(z / 2) ** 2)),
    "identity": (lambda z: z, np.ones_like),
}


def layer_of(site: str) -> int:
    """The index of the weight matrix a site feeds: ``"x"`` -> 0, ``"h{l}"`` -> ``l``."""
    return 0 if site == "x" else int(site[1:])


def forward(weights, biases, x, act, scale=None):
    """Site values ``hs[l]`` (inputs of ``weights[l]`` before noise), pre-activations, logits.

    ``scale[l]`` ``(n, d_l)`` multiplies the input of ``weights[l]`` (dropout: ``m/(1−q)``).
    """
    f, _ = ACT[act]
    hs, zs, h = [], [], x
    for l, (w, b) in enumerate(zip(weights, biases, strict=True)):
        hs.append(h)
        hin = h * scale[l] if scale and l in scale else h
        z = hin @ w.T + b
        zs.append(z)
        if l < len(weights) - 1:
            h = f(z)
    return hs, zs, z


def softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def backward(weights, hs, zs, act, g_out, scale=None, site_cot=None):
    """Parameter gradients ``[dW1, db1, …]`` and site adjoints, from logit cotangents ``g_out``.

    ``site_cot[l]`` adds a cotangent on the site value ``hs[l]`` itself.
    """
    _, df = ACT[act]
    grads: list[Any] = [None] * (2 * len(weights))
    adj = {}
    g_z = g_out
    for l in reversed(range(len(weights))):
        hin = hs[l] * scale[l] if scale and l in scale else hs[l]
        grads[2 * l], grads[2 * l + 1] = g_z.T @ hin, g_z.sum(axis=0)
        g_hin = g_z @ weights[l]
        g_h = g_hin * scale[l] if scale and l in scale else g_hin
        adj[l] = g_h
        if l == 0:
            break
        if site_cot and l in site_cot:
            g_h = g_h + site_cot[l]
        g_z = g_h * df(zs[l - 1])
    return grads, adj


def loss_grad(weights, biases, x, y, act, scale=None):
    """``∇_W`` of the mean cross-entropy over the batch, a list per parameter."""
    hs, zs, f = forward(weights, biases, x, act, scale)
    g = softmax(f)
    g[np.arange(len(y)), y] -= 1.0
    return backward(weights, hs, zs, act, g / len(y), scale)[0]


def head_jacobian(weights, zs, act, l):
    """``J = ∂F/∂h_l`` per example, ``(n, c, d_l)``: ``W_L D … D W_{l+1}`` (``W`` = weights)."""
    _, df = ACT[act]
    n = zs[0].shape[0]
    J = np.broadcast_to(weights[l], (n, *weights[l].shape))
    for m in range(l + 1, len(weights)):
        J = np.einsum("ij,nj,njk->nik", weights[m], df(zs[m - 1]), J)
    return J


# ----- numpy regularizers -------------------------------------------------------------------

def np_r_approx(constant="strength", hessian="loss", power=2, reduce="none", only_last=False):
    """``R_approx`` (4.4) by hand: ``Σ_sites Σ_k h_k^power (J e_k)ᵀ M (J e_k)``.

    ``constant``: ``"strength"`` q/(2(1−q)), ``"none"``, ``"double"`` q/(1−q); ``hessian``:
    ``"loss"`` H_out, ``"identity"`` I, ``"label"`` g_y g_yᵀ with the true label's gradient.
    """
    def fn(weights, biases, x, y, q, *, sites, activation):
        hs, zs, f = forward(weights, biases, x, activation)
        p = softmax(f)
        if hessian == "loss":
            M = np.einsum("nc,cd->ncd", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
        elif hessian == "identity":
            M = np.broadcast_to(np.eye(p.shape[1]), (len(y), p.shape[1], p.shape[1]))
        else:  # the true label's loss gradient, where a sampled label belongs
            g = p.copy()
            g[np.arange(len(y)), y] -= 1.0
            M = g[:, :, None] * g[:, None, :]
        total = 0.0
        for s in (sites[-1:] if only_last else sites):
            J = head_jacobian(weights, zs, activation, layer_of(s))
            G = np.einsum("nck,ncd,ndk->nk", J, M, J)
            total = total + np.sum(G * hs[layer_of(s)] ** power, axis=1)
        c = {"strength": q / (2 * (1 - q)), "none": 1.0, "double": q / (1 - q)}[constant]
        out = c * total
        return out.sum() if reduce == "sum" else out.mean() if reduce == "mean" else out

    return fn


def np_r_hat(true_label=False):
    """The sampled-label estimator (slides): ``Σ_k h_k² (g_ŷᵀ J e_k)²``, ``ŷ ~ softmax(F(x))``.

    Includes the constant.  ``true_label`` uses ``y`` instead of a sampled ``ŷ`` (the bug).
    """
    def fn(weights, biases, x, y, q, *, sites, activation, rng):
        hs, zs, f = forward(weights, biases, x, activation)
        p = softmax(f)
        lab = y if true_label else (rng.random((len(y), 1)) > p.cumsum(axis=1)).sum(axis=1)
        g = p.copy()
        g[np.arange(len(y)), np.minimum(lab, p.shape[1] - 1)] -= 1.0
        total = 0.0
        for s in sites:
            J = head_jacobian(weights, zs, activation, layer_of(s))
            total = total + np.sum((np.einsum("nc,nck->nk", g, J) * hs[layer_of(s)]) ** 2, 1)
        return q / (2 * (1 - q)) * total

    return fn


def np_r_drop_mc(masks=16, scaled=True):
    """Monte-Carlo ``R_drop``: mean over ``masks`` dropout masks of ``ℓ(F(x, m)) − ℓ(F(x))``.

    ``scaled=False`` keeps units with ``m`` instead of ``m/(1−q)`` (non-inverted dropout).
    """
    def loss(weights, biases, x, y, act, scale=None):
        f = forward(weights, biases, x, act, scale)[2]
        return -np.log(softmax(f)[np.arange(len(y)), y])

    def fn(weights, biases, x, y, q, *, sites, activation, rng):
        clean = loss(weights, biases, x, y, activation)
        total = 0.0
        for _ in range(masks):
            scale = {}
            for s in sites:
                m = (rng.random((len(y), weights[layer_of(s)].shape[1])) >= q).astype(float)
                scale[layer_of(s)] = m / (1 - q) if scaled else m
            total = total + loss(weights, biases, x, y, activation, scale) - clean
        return total / masks

    return fn


def numpy_regularizers() -> list[Case]:
    """Correct and buggy numpy regularizers with the diagnosis that must name each bug."""
    st = {"stochastic": True}
    mc = {**st, "calls": 128}  # 16 masks per call: 128 calls average 2048 masks per net
    return [
        Case("correct", np_r_approx(), None),
        Case("correct, no constant", np_r_approx(constant="none"), None,
             {"includes_strength": False}),
        Case("correct, batch mean", np_r_approx(reduce="mean"), None),
        Case("constant missing", np_r_approx(constant="none"), "constant missing"),
        Case("factor 2", np_r_approx(constant="double"),
             "constant q/(1−q) instead of q/(2(1−q))"),
        Case("true label", np_r_approx(hessian="label"),
             "true label used where a sampled one is specified"),
        Case("identity Hessian", np_r_approx(hessian="identity"), "identity Hessian used"),
        Case("h not squared", np_r_approx(power=1), "h not squared"),
        Case("sum over the batch", np_r_approx(reduce="sum"), "sum instead of mean"),
        Case("last site only", np_r_approx(only_last=True), "only the last dropout site"),
        Case("sampled label", np_r_hat(), None, st),
        Case("true label (declared stochastic)", np_r_hat(true_label=True),
             "true label used where a sampled one is specified", st),
        Case("Monte-Carlo R_drop", np_r_drop_mc(), None, {"form": "r_drop", **mc}),
        Case("Monte-Carlo R_drop, unscaled masks", np_r_drop_mc(scaled=False),
             "keep masks not scaled by 1/(1−q)", {"form": "r_drop", **mc}),
    ]


# ----- numpy gradient noise -----------------------------------------------------------------

def _eta(kind: str, rng: np.random.Generator, shape: tuple[int, ...], q: float) -> np.ndarray:
    """Noise entries: the paper's η, scaled or unscaled Rademacher signs, Gaussian, buggy ones."""
    s = np.sign(rng.random(shape) - 0.5)
    return {
        "bernoulli": lambda: (rng.random(shape) >= q) / (1 - q) - 1.0,
        "rademacher": lambda: s * np.sqrt(q / (1 - q)),
        "gaussian": lambda: rng.standard_normal(shape) * np.sqrt(q / (1 - q)),
        "sqrt_q": lambda: s * np.sqrt(q),                            # variance q, not q/(1−q)
        "unscaled": lambda: s,                                       # Rademacher without scale
        "no_minus_one": lambda: (rng.random(shape) >= q) / (1 - q),  # mask, not η: mean ≠ 0
    }[kind]()


def np_xi_approx(eta="bernoulli", draws=1, fixed_jacobian=False, eps=1e-5):
    """``ξ_approx`` (4.5)/(4.6) of the mini-batch by central differences of a hand backprop.

    ``ξ = d/dε ∇_W ℓ(F(x, εη))`` at 0, which is ``∇_W Σ_i J_loss,i (η_i ⊙ h_i)`` (truncation
    O(ε²) ≈ 1e-10, rounding ≈ 1e-11 relative).  ``draws=2`` adds two independent draws (the
    factor-2 bug); ``fixed_jacobian`` holds ``J_loss`` fixed (the gradient only through ``h``).
    Returns a list of per-parameter arrays.
    """
    def fn(weights, biases, x, y, q, *, sites, activation, rng):
        n = len(y)
        total = None
        for _ in range(draws):
            e = {layer_of(s): _eta(eta, rng, (n, weights[layer_of(s)].shape[1]), q)
                 for s in sites}
            if fixed_jacobian:  # ∇_W Σ ⟨c ⊙ η, h(W)⟩ with c = J_loss held constant
                hs, zs, f = forward(weights, biases, x, activation)
                g = softmax(f)
                g[np.arange(n), y] -= 1.0
                _, adj = backward(weights, hs, zs, activation, g / n)
                cot = {l: adj[l] * v for l, v in e.items() if l > 0}
                xi, _ = backward(weights, hs, zs, activation, 0.0 * g, site_cot=cot)
            else:
                gp = loss_grad(weights, biases, x, y, activation,
                               {l: 1 + eps * v for l, v in e.items()})
                gm = loss_grad(weights, biases, x, y, activation,
                               {l: 1 - eps * v for l, v in e.items()})
                xi = [(a - b) / (2 * eps) for a, b in zip(gp, gm, strict=True)]
            total = xi if total is None else [a + b for a, b in zip(total, xi, strict=True)]
        return total

    return fn


def np_dropout_gradient(scaled=True, active=True):
    """A dropout training gradient, flat ``(P,)``: masks ``m/(1−q)`` per example and unit."""
    def fn(weights, biases, x, y, q, *, sites, activation, rng):
        scale = {}
        for s in sites if active else ():
            m = (rng.random((len(y), weights[layer_of(s)].shape[1])) >= q).astype(float)
            scale[layer_of(s)] = m / (1 - q) if scaled else m
        return np.concatenate([g.ravel() for g in loss_grad(weights, biases, x, y, activation,
                                                               scale)])

    return fn


def numpy_noises() -> list[Case]:
    """Correct and buggy numpy noises (``check_gradient_noise`` keyword arguments included)."""
    grad = {"kind": "xi_drop", "samples": "gradient"}
    return [
        Case("correct", np_xi_approx(), None),
        Case("correct, Rademacher", np_xi_approx("rademacher"), None, {"noise": "rademacher"}),
        Case("correct, Gaussian", np_xi_approx("gaussian"), None, {"noise": "gaussian"}),
        Case("variance q", np_xi_approx("sqrt_q"),
             "noise variance scaled by q instead of q/(1−q)", {"noise": "rademacher"}),
        Case("unscaled Rademacher", np_xi_approx("unscaled"),
             "Rademacher not scaled by sqrt(q/(1−q))", {"noise": "rademacher"}),
        Case("two draws added", np_xi_approx(draws=2), "noise variance off by factor 2"),
        Case("mask instead of η", np_xi_approx("no_minus_one"), "noise not mean-zero"),
        Case("J_loss held fixed", np_xi_approx(fixed_jacobian=True),
             "noise outside the span of the exact noise"),
        Case("dropout gradient", np_dropout_gradient(), None, grad),
        Case("dropout gradient, unscaled masks", np_dropout_gradient(scaled=False),
             "mean of the gradients differs", grad),
        Case("dropout gradient, dropout off", np_dropout_gradient(active=False), "no noise", grad),
    ]


# ----- PyTorch -------------------------------------------------------------------------------

def torch_generator(rng: np.random.Generator) -> Any:
    """A torch generator seeded from the numpy generator dropcheck hands over."""
    import torch

    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def torch_r_approx(constant="strength", hessian="loss"):
    """``R_approx`` (4.4) in PyTorch with ``torch.func``: the README's hand-written regularizer.

    The model is a ``torch.nn.Sequential`` whose ``Dropout`` modules mark the sites (eval mode:
    they pass their input through).  ``constant`` and ``hessian`` as in :func:`np_r_approx`.
    """
    import torch
    from torch.func import jacrev, vmap

    def fn(model, x, y, q):
        total = 0.0
        for i, m in enumerate(model):
            if isinstance(m, torch.nn.Dropout):
                h, head = model[:i](x), model[i + 1:]
                J = vmap(jacrev(head))(h)                                 # (n, c, d)
                p = torch.softmax(head(h), dim=-1)
                if hessian == "loss":
                    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
                elif hessian == "identity":
                    H = torch.eye(p.shape[1], dtype=p.dtype).expand(len(y), -1, -1)
                else:
                    g = p - torch.nn.functional.one_hot(y, p.shape[1])
                    H = g[:, :, None] * g[:, None, :]
                total = total + torch.einsum("nck,ncd,ndk,nk->n", J, H, J, h**2)
        c = {"strength": q / (2 * (1 - q)), "none": 1.0, "double": q / (1 - q)}[constant]
        return c * total

    return fn


def torch_r_hat():
    """The sampled-label estimator in PyTorch: one backward pass per call for ``Jᵀ g_ŷ``."""
    import torch

    def fn(model, x, y, q, *, rng):
        gen = torch_generator(rng)
        total = 0.0
        for i, m in enumerate(model):
            if isinstance(m, torch.nn.Dropout):
                h = model[:i](x).detach().requires_grad_(True)
                f = model[i + 1:](h)
                p = torch.softmax(f, dim=-1).detach()
                lab = torch.multinomial(p, 1, generator=gen)[:, 0]
                g = p - torch.nn.functional.one_hot(lab, p.shape[1])
                (jg,) = torch.autograd.grad((f * g).sum(), h)          # Jᵀ g per example
                total = total + ((jg * h) ** 2).sum(dim=1)
        return (q / (2 * (1 - q)) * total).detach()

    return fn


def torch_r_drop_mc(masks=16):
    """Monte-Carlo ``R_drop`` with the model's own ``torch.nn.Dropout`` modules (train mode)."""
    import torch
    import torch.nn.functional as F

    def fn(model, x, y, q):
        with torch.no_grad():
            clean = F.cross_entropy(model.eval()(x), y, reduction="none")
            model.train()
            xs, ys = x.repeat(masks, 1), y.repeat(masks)
            drop = F.cross_entropy(model(xs), ys, reduction="none").view(masks, -1).mean(0)
        return drop - clean

    return fn


def torch_regularizers() -> list[Case]:
    """Correct and buggy PyTorch regularizers (``adapter="torch"``)."""
    t = {"adapter": "torch"}
    return [
        Case("correct (torch.func)", torch_r_approx(), None, t),
        Case("constant missing", torch_r_approx(constant="none"), "constant missing", t),
        Case("factor 2", torch_r_approx(constant="double"),
             "constant q/(1−q) instead of q/(2(1−q))", t),
        Case("true label", torch_r_approx(hessian="label"),
             "true label used where a sampled one is specified", t),
        Case("identity Hessian", torch_r_approx(hessian="identity"), "identity Hessian used", t),
        Case("sampled label", torch_r_hat(), None, {**t, "stochastic": True}),
        Case("Monte-Carlo R_drop with nn.Dropout", torch_r_drop_mc(), None,
             {**t, "form": "r_drop", "stochastic": True, "calls": 128}),
    ]


def torch_xi_approx(eta="bernoulli", fixed_jacobian=False):
    """``ξ_approx`` (4.5)/(4.6) in PyTorch: ``∇_W Σ_i J_loss,i (η_i ⊙ h_i)`` by double backward.

    ``J_loss`` is taken with ``create_graph=True`` so the outer gradient flows through it as
    well as through ``h``; ``fixed_jacobian`` detaches it (the bug).  Returns the tuple of
    per-parameter gradients.
    """
    import torch

    def fn(model, x, y, q, *, rng):
        gen = torch_generator(rng)
        hs, out = [], x
        for m in model:
            if isinstance(m, torch.nn.Dropout):
                hs.append(out)
                continue
            out = m(out)
        loss = torch.nn.functional.cross_entropy(out, y)
        J = torch.autograd.grad(loss, hs, create_graph=not fixed_jacobian, retain_graph=True)
        total = 0.0
        for j, h in zip(J, hs, strict=True):
            u = torch.rand(h.shape, generator=gen, dtype=h.dtype)
            s = torch.where(u < 0.5, -1.0, 1.0).to(h.dtype)
            e = {"bernoulli": (u >= q).to(h.dtype) / (1 - q) - 1,
                 "sqrt_q": s * q**0.5,
                 "unscaled": s,
                 "no_minus_one": (u >= q).to(h.dtype) / (1 - q)}[eta]
            total = total + (j * e * h).sum()
        params = list(model.parameters())
        grads = torch.autograd.grad(total, params, allow_unused=True)  # unused: after the sites
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads,
                                                                        strict=True)]

    return fn


def torch_dropout_gradient(eval_mode=False):
    """A training step's gradient with the model's ``nn.Dropout``: left in ``.grad``."""
    import torch.nn.functional as F

    def fn(model, x, y, q):
        if eval_mode:  # the forgotten model.train(): dropout is off
            model.eval()
        F.cross_entropy(model(x), y).backward()

    return fn


def torch_noises() -> list[Case]:
    """Correct and buggy PyTorch noises (``adapter="torch"``)."""
    t = {"adapter": "torch"}
    grad = {**t, "kind": "xi_drop", "samples": "gradient"}
    return [
        Case("correct", torch_xi_approx(), None, t),
        Case("variance q", torch_xi_approx("sqrt_q"),
             "noise variance scaled by q instead of q/(1−q)", {**t, "noise": "rademacher"}),
        Case("unscaled Rademacher", torch_xi_approx("unscaled"),
             "Rademacher not scaled by sqrt(q/(1−q))", {**t, "noise": "rademacher"}),
        Case("mask instead of η", torch_xi_approx("no_minus_one"), "noise not mean-zero", t),
        Case("J_loss detached", torch_xi_approx(fixed_jacobian=True),
             "noise outside the span of the exact noise", t),
        Case("nn.Dropout training gradient", torch_dropout_gradient(), None, grad),
        Case("nn.Dropout left in eval mode", torch_dropout_gradient(eval_mode=True), "no noise",
             grad),
    ]


def act_r_hat(score: bool = True, coef: float | None = None) -> Callable[..., Any]:
    """The sampled-label ``R̂`` on an MLP's site activations (``adapter="activations"``).

    ``ŷ ~ softmax(F)``, ``R̂ = strength·Σ_sites Σ_k ((∂ℓ(F, ŷ)/∂h)_k h_k)²`` per example, by
    double backward on the activations a training loop has.  ``score`` adds the REINFORCE term
    ``R̂.detach()·(log p_ŷ − log p_ŷ.detach())`` (value unchanged, gradient
    ``+ R̂ ∇log p_ŷ``: unbiased for ``∇R_approx``); without it the gradient misses the
    score-function term.  ``coef`` replaces ``q/(2(1−q))`` (a wrong constant).
    """
    import torch
    import torch.nn.functional as F

    def fn(acts, logits, targets, q, *, rng):
        p = logits.softmax(-1)
        lab = torch.multinomial(p.detach(), 1, generator=torch_generator(rng))[:, 0]
        loss = F.cross_entropy(logits, lab, reduction="sum")
        grads = torch.autograd.grad(loss, list(acts.values()), create_graph=True)
        r = sum(((g * h) ** 2).sum(1) for h, g in zip(acts.values(), grads, strict=True))
        r = r * (q / (2 * (1 - q)) if coef is None else coef)
        if score:
            logp = p.log().gather(1, lab[:, None])[:, 0]
            r = r + r.detach() * (logp - logp.detach())
        return r

    return fn


# ----- false-alarm measurement ---------------------------------------------------------------

def _gradient_main(seeds: int, alpha: float, calls: int,
                   retest: bool) -> None:  # pragma: no cover - run by hand
    """False alarms of the stochastic gradient check (three nets per report)."""
    from dropcheck.checks import check_explicit_regularizer

    t0 = time.perf_counter()
    fails, pvals, vals = 0, [], []
    for seed in range(seeds):
        r = check_explicit_regularizer(act_r_hat(), adapter="activations", stochastic=True,
                                       calls=calls, alpha=alpha, retest_failures=retest,
                                       seed=seed)
        fails += not r.passed
        for row in r.rows:
            (pvals if row.info.get("gradient") else vals).append(row.p_value)
        if (seed + 1) % 20 == 0:
            print(f"  {seed + 1} seeds: {fails} reports failed; gradient p <= 0.05: "
                  f"{np.mean(np.array(pvals) <= 0.05):.4f}", flush=True)
    p, v = np.array(pvals), np.array(vals)
    print(f"{fails} of {seeds} reports failed at alpha = {alpha:g}, {calls} calls, "
          f"{'with the re-test' if retest else 'single stage'} "
          f"({time.perf_counter() - t0:.0f} s)")
    for name, a in (("gradient", p), ("value", v)):
        print(f"  {name:8s} {a.size:5d} p-values; fraction <= 0.001: {np.mean(a <= 0.001):.4f}, "
              f"<= 0.01: {np.mean(a <= 0.01):.4f}, <= 0.05: {np.mean(a <= 0.05):.4f}, "
              f"<= 0.5: {np.mean(a <= 0.5):.3f}")

def _main() -> None:  # pragma: no cover - a measurement script, run by hand
    from dropcheck.checks import check_gradient_noise

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--no-retest", action="store_true")
    ap.add_argument("--gradient", action="store_true",
                    help="measure the regularizer gradient check instead (needs torch)")
    ap.add_argument("--calls", type=int, default=128, help="calls per net (--gradient)")
    args = ap.parse_args()
    if args.gradient:
        _gradient_main(args.seeds, args.alpha, args.calls, not args.no_retest)
        return
    cases = [c for c in numpy_noises() if c.diagnosis is None]
    t0 = time.perf_counter()
    fails, reports, pvals = 0, 0, {}
    for seed in range(args.seeds):
        for c in cases:
            r = check_gradient_noise(c.fn, seed=seed, alpha=args.alpha,
                                     retest_failures=not args.no_retest, **c.kwargs)
            reports += 1
            fails += not r.passed
            for row in r.rows:
                if row.is_test:
                    pvals.setdefault(row.info["kind"], []).append(row.p_value)
    print(f"{fails} of {reports} reports failed at alpha = {args.alpha:g} "
          f"({time.perf_counter() - t0:.0f} s)")
    for kind, ps in pvals.items():
        p = np.array(ps)
        print(f"  {kind:5s} {p.size:5d} p-values; fraction <= 0.01: {np.mean(p <= 0.01):.4f}, "
              f"<= 0.05: {np.mean(p <= 0.05):.4f}, <= 0.5: {np.mean(p <= 0.5):.3f}")


if __name__ == "__main__":
    _main()
