"""The checkers on PyTorch code as people write it: the user's own module (``model=``), site
activations on torch's graph (``adapter="activations"``), gradient checks of regularizers with
the score-function term, declarable targets, diagnoses from the observed precision, scalars of
every shape, bad input.  Skipped without torch.

Oracles: the score-function term against the expected gradient of a torch sampled-label
estimator enumerated over every label (autograd, no dropcheck code); the gradient reference
against a torch.func implementation's autograd (``test_check_regularizers``).  Statistical rows
run at the checkers' default ``alpha = 1e-6`` with fixed seeds (false-alarm probability about
1e-6 per report); the gradient check's measured false-alarm rate is in docs/checks.md.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import dropcheck as dc
from dropcheck.checks import adapters, check_explicit_regularizer, check_gradient_noise
from dropcheck.checks import regularizer as reg_mod
from tests import regularizer_bugs as rb

torch = pytest.importorskip("torch", reason="torch is not installed; these checks need it")
F = torch.nn.functional


def sampled_label(score=True, coef=None):
    """The catalogue's sampled-label regularizer on activations (REINFORCE term optional)."""
    return rb.act_r_hat(score=score, coef=coef)


def test_score_function_term_against_label_enumeration():
    """``∇R_approx − E_ŷ[∇R̂(ŷ) | ŷ fixed]`` (every label enumerated, torch autograd) equals
    ``score_function_term`` (float64 rounding)."""
    pb = adapters.random_problems(((4, 5, 3),), ("tanh",), None, 1, 3, 1.0, seed=4)[0]
    seq = adapters.to_torch_sequential(pb.net, 0.5)
    x = torch.from_numpy(pb.x)
    params = list(seq.parameters())
    h = seq[:2](x) if isinstance(seq[2], torch.nn.Dropout) else None
    lin1, act, lin2 = seq[0], seq[1], seq[3]
    h = act(lin1(x))
    f = lin2(h)
    p = f.softmax(-1)
    total = [torch.zeros_like(w) for w in params]
    for c in range(3):  # E over labels, gradient with the label held fixed (no score term)
        lab = torch.full((3,), c)
        loss = F.cross_entropy(f, lab, reduction="sum")
        (g,) = torch.autograd.grad(loss, h, create_graph=True)
        r = ((g * h) ** 2).sum(1)  # (n,)
        grads = torch.autograd.grad((p[:, c].detach() * r).mean(), params, retain_graph=True)
        total = [t + gr for t, gr in zip(total, grads, strict=True)]
    e_grad = np.concatenate([t.detach().numpy().ravel() for t in total])
    full = np.asarray(dc.explicit.r_approx_grad(pb.net, pb.x, pb.y))
    score = reg_mod.score_function_term(pb.net, pb.x, pb.y)
    dc.testing.assert_close(full - score, e_grad, rtol=1e-10, atol=1e-13)
    assert np.linalg.norm(score) > 0.05 * np.linalg.norm(full)  # the term matters here


def test_sampled_label_gradient_passes_with_score_and_is_named_without():
    fast = {"adapter": "activations", "stochastic": True, "n_nets": 2, "calls": 256}
    ok = check_explicit_regularizer(sampled_label(), **fast)
    assert ok.passed, str(ok)
    assert any("gradient" in r.name for r in ok.rows)
    bad = check_explicit_regularizer(sampled_label(score=False), retest_failures=False, **fast)
    assert not bad.passed
    assert "score-function term missing" in bad.diagnosis, str(bad)
    # the value is right: only gradient rows fail
    assert all("gradient" in r.name for r in bad.failures), str(bad)


def test_constant_named_for_a_stochastic_estimator():
    """Coefficient 0.1 at q = 0.1 (strength 0.0556): named with its ratio 1.8."""
    report = check_explicit_regularizer(sampled_label(coef=0.1), adapter="activations",
                                        stochastic=True, q=0.1, retest_failures=False,
                                        gradients=False)
    assert not report.passed
    assert "coefficient 0.1 = q instead of q/(2(1−q)) = 0.0556 at q = 0.1: ratio 1.7" in \
        report.diagnosis, str(report)


def _deterministic(kind):
    """Deterministic regularizers on activations: R̃ (true label), identity/C, a float32 loss."""
    def fn(acts, logits, targets, q):
        lg = logits.float() if kind == "float32" else logits
        if kind in ("label", "float32"):
            rows = [F.cross_entropy(lg, targets, reduction="sum")]
        else:
            rows = [lg[:, c].sum() for c in range(lg.shape[1])]
        r = 0
        for f in rows:
            grads = torch.autograd.grad(f, list(acts.values()), create_graph=True)
            r = r + sum((((g * h).to(lg.dtype)) ** 2).sum(1)
                        for h, g in zip(acts.values(), grads, strict=True))
        C = lg.shape[1]
        return (r * q / (2 * (1 - q)) / (C if kind == "identity/C" else 1)).double()
    return fn


@pytest.mark.parametrize("kind, form, phrase", [
    ("label", "loss_jacobian", None),
    ("identity", "identity", None),
    ("identity/C", "r_approx", "identity Hessian divided by the number of classes"),
    ("float32", "r_approx", "float32 arithmetic detected"),
    ("float32", "loss_jacobian", "float32 arithmetic detected"),
])
def test_declared_variants_pass_and_slips_are_named(kind, form, phrase):
    report = check_explicit_regularizer(_deterministic(kind), form=form, adapter="activations")
    if phrase is None:
        assert report.passed, str(report)
    else:
        assert not report.passed and phrase in report.diagnosis, str(report)
    if kind == "float32" and form == "r_approx":
        assert "true label used" in report.diagnosis, str(report)


@pytest.mark.parametrize("examples", [6, 8])
def test_float32_slip_is_named_whatever_the_batch_size(examples):
    """The diagnosis tolerance is the observed precision: the true-label variant computed in
    float32 is named at both batch sizes (the pass tolerance alone named it at one)."""
    report = check_explicit_regularizer(_deterministic("float32"), adapter="activations",
                                        examples=examples, gradients=False)
    assert "true label used" in report.diagnosis, str(report)
    assert "float32 arithmetic detected" in report.diagnosis, str(report)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_scalar_shapes_and_graph_attached_values(shape):
    def fn(model, x, y, q):
        return dc.explicit.strength(q) * torch.as_tensor(
            np.mean(dc.explicit.r_approx(adapters.from_torch_sequential(model), x.numpy(),
                                         y.numpy()))).reshape(shape)
    assert check_explicit_regularizer(fn, adapter="torch").passed

    def on_graph(acts, logits, targets, q):
        return sampled_label()(acts, logits, targets, q, rng=np.random.default_rng(0)).mean() \
            .reshape(shape)
    report = check_explicit_regularizer(on_graph, adapter="activations", stochastic=True,
                                        n_nets=1, calls=64)
    assert not any(r.verdict == "ERROR" for r in report.rows), str(report)


def test_noise_targets_dropout_k_alg4_alg2():
    """A correct implementation of each declared target passes; DROPOUT_k undeclared is named."""
    def algo(kind, **kw):
        def fn(weights, biases, x, y, q, *, sites, activation, rng):
            net = dc.MLP(weights, biases, activation, sites)
            if kind == "dropout_k":
                return dc.implicit.dropout_k_gradient(net, x, y, q, k=kw["k"], rng=rng)
            if kind == "alg4":
                return dc.implicit.noise_injected_gradient(net, x, y, q, k=kw["k"], rng=rng,
                                                           noise="approx")
            return dc.implicit.update_direction(net, x, y, q, rng=rng, lam2=kw.get("lam2"))
        return fn

    g = {"samples": "gradient", "n_nets": 2, "draws": 300}
    for kind, kw in (("dropout_k", {"k": 3}), ("alg4", {"k": 3}), ("alg2", {"lam2": 0.5})):
        report = check_gradient_noise(algo(kind, **kw), kind=kind, **g, **kw)
        assert report.passed, str(report)
    report = check_gradient_noise(algo("dropout_k", k=4), kind="xi_drop", **g,
                                  retest_failures=False)
    assert "DROPOUT_k with k = 4" in report.diagnosis, str(report)
    report = check_gradient_noise(algo("alg2"), kind="xi_approx", **g, retest_failures=False)
    assert "Algorithm 2's explicit term (declare kind='alg2')" in report.diagnosis, str(report)


def _tiny_lm(mix=False):
    """Embedding, dropout, decoder; ``mix`` lets each step see the earlier ones (a running sum
    and tanh, like a recurrence: only then do locked and per-step masks differ)."""
    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Embedding(4, 2)
            self.drop = torch.nn.Dropout(0.1)
            self.dec = torch.nn.Linear(2, 4)

        def forward(self, x):
            h = self.drop(self.enc(x))
            return self.dec(torch.tanh(h.cumsum(1)) if mix else h)

    torch.manual_seed(0)
    return LM().double()


def test_user_module_and_activations_on_a_torch_model():
    lm = _tiny_lm()
    x = np.array([[0, 1, 2], [3, 2, 1]])
    y = np.roll(x, -1, axis=1)
    model = dc.from_torch(lm, x)

    def via_module(module, x, y, q):
        assert isinstance(module, type(lm)) and module is not lm
        tm = dc.from_torch(module, x.numpy())
        return dc.explicit.strength(q) * torch.as_tensor(
            dc.explicit.r_approx(tm, x.numpy(), y.numpy()))

    assert check_explicit_regularizer(via_module, model=model, data=(x, y),
                                      adapter="torch").passed
    with pytest.raises(ValueError, match="adapter='numpy' hands weight lists"):
        check_explicit_regularizer(via_module, model=model, data=(x, y))
    with pytest.raises(ValueError, match="model= needs data"):
        check_explicit_regularizer(via_module, model=model, adapter="torch")


@pytest.mark.parametrize("bad, message", [
    (lambda acts, logits, targets, q: logits.sum() * np.nan, "NaN/inf"),
    (lambda acts, logits, targets, q: logits, "fn returned shape (6, 4)"),
    (lambda acts, logits, targets, q: acts["nope"], "fn raised KeyError: 'nope'"),
])
def test_bad_functions_are_error_rows_naming_the_call(bad, message):
    report = check_explicit_regularizer(bad, adapter="activations", n_nets=1)
    assert not report.passed and report.rows[0].verdict == "ERROR", str(report)
    assert message in report.rows[0].detail and message in report.diagnosis, str(report)


def test_bad_modules_and_sites_are_clear_errors():
    lm = _tiny_lm()
    x = np.array([[0, 1, 2]])
    plain = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="has none; name the site modules"):
        dc.from_torch(plain, np.ones((2, 3)))
    with pytest.raises(ValueError, match="matches no submodule"):
        dc.from_torch(lm, x, sites={"h": "lockdrop"})
    with pytest.raises(ValueError, match=r"masks\['drop'\] = \(5,\)"):
        dc.from_torch(lm, x, sites={"drop": "drop"}, masks={"drop": (5,)})
    with pytest.raises(ValueError, match="gradients=True: dropcheck has no exact gradient"):
        check_explicit_regularizer(sampled_label(), form="taylor", adapter="activations",
                                   gradients=True)


@pytest.mark.slow
def test_worked_example_in_the_docs():
    """docs/checks.md's AWD-LSTM example: every correct function passes, every planted bug is
    named (the block asserts it itself)."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "checks.md").read_text()
    section = text[text.index("## Checkers on your own PyTorch model"):]
    block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    ns: dict = {}
    exec(compile(block, "docs/checks.md", "exec"), ns)  # noqa: S102
    assert len(ns["checks"]) == 9


def _r_approx_on_acts(per_step):
    """``strength·R_approx`` with ``H_out = Σ_c p_c (e_c − p)(e_c − p)ᵀ`` per token, written in
    torch on the site activations: the noise gradient per mask entry is
    ``(a_c,tᵀ ∂F_t/∂h) ⊙ h``, summed over time for a locked mask, per element per step."""
    def fn(acts, logits, targets, q):
        p = logits.softmax(-1)  # (n, T, c)
        n, T, c = p.shape
        total = 0
        for t in range(T):
            for r in range(c):
                a = p[:, t, r, None].sqrt() * (torch.eye(c, dtype=p.dtype)[r] - p[:, t])
                f = (logits[:, t] * a.detach()).sum()
                grads = torch.autograd.grad(f, list(acts.values()), create_graph=True)
                for h, g in zip(acts.values(), grads, strict=True):
                    u = g * h  # (n, T, d)
                    total = total + ((u ** 2).sum((1, 2)) if per_step
                                     else (u.sum(1) ** 2).sum(1))
        return total * q / (2 * (1 - q))
    return fn


def test_per_step_and_locked_targets():
    """A locked site on a sequence model: the locked regularizer passes the default target, the
    per-step one passes ``mask="per_step"`` and is named under the locked default."""
    lm = _tiny_lm(mix=True)
    x = np.array([[0, 1, 2], [3, 2, 1], [1, 1, 0]])
    y = np.roll(x, -1, axis=1)
    model = dc.from_torch(lm, x, masks={"drop": "locked"})
    kw = {"model": model, "data": (x, y), "adapter": "activations", "gradients": False}
    assert check_explicit_regularizer(_r_approx_on_acts(False), **kw).passed
    assert check_explicit_regularizer(_r_approx_on_acts(True), mask="per_step", **kw).passed
    report = check_explicit_regularizer(_r_approx_on_acts(True), **kw)
    assert "per-step regularizer under locked masks" in report.diagnosis, str(report)
    report = check_explicit_regularizer(_r_approx_on_acts(False), mask="per_step", **kw)
    assert "locked regularizer (one mask per sequence) where per-step masks are declared" in \
        report.diagnosis, str(report)
