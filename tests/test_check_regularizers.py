"""Tests of ``check_explicit_regularizer``, ``check_gradient_noise``, the adapters and
``dropcheck.strategies``: correct numpy and PyTorch implementations pass, every bug of
``tests/regularizer_bugs.py`` is caught and named, bad user code is reported plainly.

All randomness is seeded: the checkers' seed streams, numpy generators handed to the user's
function, ``torch.manual_seed`` for ``nn.Dropout``.  False alarms: deterministic rows compare to
``4·sqrt(eps)`` and cannot false-alarm; the test rows run at the checkers' default
``alpha = 1e-6`` (Holm, with a re-test), so a correct case here fails with probability about
1e-6 at most — and never for these seeds, which are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import dropcheck as dc
from dropcheck import strategies as dst
from dropcheck.checks import (
    DropcheckError,
    NoiseReport,
    RegularizerReport,
    adapters,
    assert_gradient_noise_matches,
    assert_regularizer_matches,
    check_explicit_regularizer,
    check_gradient_noise,
    noise,
    regularizer,
)
from tests import regularizer_bugs as rb

TORCH_REASON = "torch is not installed; the PyTorch implementations need it"
#: bug cases of the noise checker: two nets and no re-test keep them fast; the bugs' effects
#: (variance x0.7 or x2.3 at q = 0.3, a mean of > 1 noise s.d., a residual of O(0.1)) are far
#: beyond the design effects the default 400 draws detect with power > 0.9999
NOISE_FAST = {"n_nets": 2, "retest_failures": False}


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torch.manual_seed(0)
    return torch


def _verdict(report, case):
    if case.diagnosis is None:
        assert report.passed, str(report)
        assert report.diagnosis is None
    else:
        assert not report.passed, str(report)
        assert case.diagnosis in report.diagnosis, str(report)


def _case(cases, name):
    return next(c for c in cases if c.name == name)


# ----- regularizers ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [c.name for c in rb.numpy_regularizers()])
def test_numpy_regularizer(name):
    case = _case(rb.numpy_regularizers(), name)
    report = check_explicit_regularizer(case.fn, **case.kwargs)
    assert isinstance(report, RegularizerReport)
    _verdict(report, case)


@pytest.mark.parametrize("name", ["correct (torch.func)", "constant missing", "factor 2",
                                  "true label", "identity Hessian", "sampled label",
                                  "Monte-Carlo R_drop with nn.Dropout"])
def test_torch_regularizer(torch, name):
    case = _case(rb.torch_regularizers(), name)
    _verdict(check_explicit_regularizer(case.fn, **case.kwargs), case)


def test_taylor_form_and_gauss_newton_bug():
    """``form="taylor"``: the full Hessian passes; its Gauss–Newton part alone is named.

    They differ only on net 2 (a site followed by softplus): the diagnosis intersects the
    failed nets, and that net alone failed.
    """
    def taylor(weights, biases, x, y, q, *, sites, activation):
        net = dc.MLP(weights, biases, activation, sites)
        return dc.explicit.taylor(net, x, y, q)

    assert check_explicit_regularizer(taylor, form="taylor").passed
    report = check_explicit_regularizer(rb.np_r_approx(), form="taylor")
    assert not report.passed
    assert "Gauss–Newton part only" in report.diagnosis, str(report)


def _units_by_differences(net, x, y, site):
    """``(J e_k)ᵀ H_out (J e_k)`` per example and unit ``(n, d)``, unweighted by ``h²``: the
    logit Jacobian by central differences of the site's value (a hook on the forward pass, no
    tangent code), ``H_out = diag(p) − p pᵀ`` written out."""
    n, d = x.shape[0], net.widths[site]
    h = net.hidden(x)[site]
    out = np.empty((n, d))
    for i in range(n):
        # the noise η = v/h − 1 puts the value v at the site (h ≠ 0 for softplus)
        def logits(v, i=i):
            return net.forward(x[i], {site: v / h[i] - 1.0})

        J = dc.testing.numeric_jacobian(logits, h[i])  # (c, d)
        z = logits(h[i])
        p = np.exp(z - z.max())
        p /= p.sum()
        H = np.diag(p) - np.outer(p, p)
        out[i] = np.einsum("ck,cb,bk->k", J, H, J)
    return out


def test_per_unit_r_approx_terms_match_finite_differences_and_sum_to_r_approx():
    """The per-unit terms behind the "h not squared" alternative are those of R_approx.

    ``r_approx(per_unit=True)`` gives ``h_k² (J e_k)ᵀ H_out (J e_k)`` ``(n, d_i)``: against
    central differences (eps 1e-6: truncation and rounding about 1e-10 relative on unit-scale
    logits, hence rtol 1e-7), the same by both routes (float64 rounding, rtol 1e-12), and their
    sum over units and sites is R_approx (rtol 1e-12).
    """
    pb = adapters.random_problems(regularizer.DEFAULT_SIZES, ("softplus",), None, 3, 5, 1.0,
                                  seed=3)[1]
    net, x, y = pb.net, pb.x, pb.y
    units = dc.explicit.r_approx(net, x, y, per_unit=True, route="jvp")
    back = dc.explicit.r_approx(net, x, y, per_unit=True, route="vjp")
    h = net.hidden(x)
    for s in net.site_names:
        assert units[s].shape == (pb.n, net.widths[s])
        dc.testing.assert_close(back[s], units[s], rtol=1e-12)
        want = h[s] ** 2 * _units_by_differences(net, x, y, s)
        dc.testing.assert_close(units[s], want, rtol=1e-7, atol=1e-12 * np.abs(want).max())
    total = sum(np.sum(units[s], axis=1) for s in net.site_names)
    dc.testing.assert_close(total, dc.explicit.r_approx(net, x, y, route="vjp"), rtol=1e-12)
    one = dc.explicit.r_approx(net, x[0], y[0], per_unit=True)
    dc.testing.assert_close(one[net.site_names[0]], units[net.site_names[0]][0], rtol=1e-12)


def test_assert_regularizer_matches_message():
    report = assert_regularizer_matches(rb.np_r_approx())
    assert report.passed
    with pytest.raises(DropcheckError) as err:
        assert_regularizer_matches(rb.np_r_approx(constant="none"), seed=7)
    msg = str(err.value)
    for part in ("expected strength(q)·R_approx", "observed", "worst example", "seed = 7",
                 "reproduce: check_explicit_regularizer(", "constant missing"):
        assert part in msg, msg
    assert err.value.report.seed == 7


def test_q_grid_and_includes_strength_on_a_grid():
    report = check_explicit_regularizer(rb.np_r_approx(constant="none"), q=(0.1, 0.7),
                                        includes_strength=False, n_nets=2)
    assert report.passed and len(report.rows) == 4 and report.q == (0.1, 0.7)


# ----- gradient noise ----------------------------------------------------------------------

@pytest.mark.parametrize("name", [c.name for c in rb.numpy_noises()])
def test_numpy_noise(name):
    case = _case(rb.numpy_noises(), name)
    fast = {} if case.diagnosis is None else NOISE_FAST
    report = check_gradient_noise(case.fn, **case.kwargs, **fast)
    assert isinstance(report, NoiseReport)
    _verdict(report, case)


@pytest.mark.parametrize("name", [c.name for c in rb.torch_noises()])
def test_torch_noise(torch, name):
    case = _case(rb.torch_noises(), name)
    fast = {"n_nets": 2} if case.diagnosis is None else NOISE_FAST
    _verdict(check_gradient_noise(case.fn, **case.kwargs, **fast), case)


def test_algorithm2_gradient_samples():
    """``samples="gradient"`` with ``xi_approx``: Alg. 2's ``∇ℓ(F(x)) + ξ_approx``."""
    xi = rb.np_xi_approx()

    def noisy_gradient(weights, biases, x, y, q, *, sites, activation, rng):
        clean = rb.loss_grad(weights, biases, x, y, activation)
        return [g + e for g, e in zip(clean, xi(weights, biases, x, y, q, sites=sites,
                                                   activation=activation, rng=rng), strict=True)]

    assert check_gradient_noise(noisy_gradient, samples="gradient", n_nets=2).passed
    report = check_gradient_noise(xi, samples="gradient", **NOISE_FAST)
    assert "mean of the gradients differs" in report.diagnosis, str(report)


def test_random_estimator_declared_deterministic():
    report = check_explicit_regularizer(rb.np_r_hat(), n_nets=1)
    assert not report.passed
    assert "declare stochastic=True" in report.diagnosis, str(report)


def test_noise_retest_confirms_a_bug():
    report = check_gradient_noise(rb.np_xi_approx("unscaled"), noise="rademacher", n_nets=1)
    assert not report.passed
    assert any("confirmed on a re-test" in r.detail for r in report.failures), str(report)


def test_per_example_noise_and_xi_drop():
    """Per-example samples ``(n, P)`` are compared with the block-diagonal covariance."""
    def per_example(weights, biases, x, y, q, *, sites, activation, rng):
        net = dc.MLP(weights, biases, activation, sites)
        return dc.implicit.xi_drop(net, x, y, q, rng=rng)  # (n, P), exact mean subtracted

    report = check_gradient_noise(per_example, kind="xi_drop", n_nets=2, draws=200)
    assert report.passed, str(report)


def test_whitening_and_fourth_cumulant():
    """``z = W(ξ − μ)`` has covariance ``I`` exactly; ``Var ‖z‖²`` from the exact cumulants
    matches 20 000 sampled ``ξ_approx`` (relative s.e. of the sample variance ≈ 2 %; 5 s.e.).
    """
    pb = adapters.random_problems(noise.DEFAULT_SIZES, ("tanh",), None, 1, 4, 1.0, seed=5)[0]
    setup = noise._Setup("xi_approx", "bernoulli", "noise", adapters.WeightLists(), 400, 6, 5)
    ref = noise._reference(pb, 0.3, "xi_approx", "noise", "bernoulli")
    fr = noise._frame(pb, 0.3, ref, "mean", setup)
    cov = ref.cov.sum(axis=0) / pb.n**2
    dc.testing.assert_close(fr.w @ cov @ fr.w.T, np.eye(fr.k), atol=1e-10)
    xi = dc.implicit.xi_approx(pb.net, pb.x, pb.y, 0.3, rng=np.random.default_rng(0), samples=20000,
                               reduction="mean")
    z = np.asarray(xi) @ fr.w.T
    sq = np.sum(z * z, axis=1)
    assert abs(sq.var() / fr.var_trace - 1) < 0.1


def test_assert_gradient_noise_matches_message():
    with pytest.raises(DropcheckError) as err:
        assert_gradient_noise_matches(rb.np_xi_approx("sqrt_q"), noise="rademacher", n_nets=1)
    msg = str(err.value)
    for part in ("variance ratio", "noise variance scaled by q instead of q/(1−q)",
                 "seed = 0", "reproduce: check_gradient_noise("):
        assert part in msg, msg


# ----- bad user code and bad arguments -----------------------------------------------------

def _returning(value):
    def fn(weights, biases, x, y, q):
        if isinstance(value, Exception):
            raise value
        return value(len(y)) if callable(value) else value
    return fn


@pytest.mark.parametrize("value, message", [
    (None, "fn returned NoneType"),
    ("0.1", "fn returned str"),
    (lambda n: np.ones(n + 1), "fn returned shape (7,)"),
    (lambda n: np.ones((n, 1)), "fn returned shape (6, 1)"),
    (lambda n: np.ones(n, dtype=np.int64), "dtype int64"),
    (lambda n: np.full(n, np.nan), "NaN/inf"),
    (ValueError("boom"), "fn raised ValueError: boom"),
])
def test_regularizer_bad_output_is_reported(value, message):
    report = check_explicit_regularizer(_returning(value), n_nets=1)
    assert not report.passed
    assert report.rows[0].verdict == "ERROR"
    assert message in report.rows[0].detail and message in report.diagnosis, str(report)


@pytest.mark.parametrize("value, message", [
    (lambda n: np.ones(3), "fn returned shape (3,)"),
    (lambda n: [np.ones(2)], "fn returned 1 arrays; expected one per parameter"),
    (lambda n: [np.zeros((5, 4)), np.zeros(5), np.zeros((9, 9)), np.zeros(3)],
     "fn's array 2 has shape (9, 9)"),
    (lambda n: np.full(43, np.inf), "NaN/inf"),
    (TypeError("wrong"), "fn raised TypeError: wrong"),
])
def test_noise_bad_output_is_reported(value, message):
    report = check_gradient_noise(_returning(value), n_nets=1)
    assert not report.passed and report.rows[0].verdict == "ERROR"
    assert message in report.rows[0].detail, str(report)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"form": "exact"}, ValueError, "form must be one of"),
    ({"q": 0.0}, ValueError, "q = 0 makes every regularizer 0"),
    ({"q": 1.0}, ValueError, "q must be a drop probability in [0, 1)"),
    ({"form": "taylor", "includes_strength": False}, ValueError, "applies to form='r_approx'"),
    ({"calls": 8}, ValueError, "calls must be an integer >= 16"),
    ({"adapter": "jax"}, ValueError, "adapter must be 'numpy', 'torch'"),
    ({"sizes": [[4]]}, ValueError, "sizes must be a sequence of layer sizes"),
    ({"activations": ["swish"]}, ValueError, "activations must be one of"),
    ({"rtol": -1}, ValueError, "rtol must be a number in (0, 1)"),
    ({"nets": ["not a net"]}, TypeError, "nets[0] must be a dropcheck MLP"),
])
def test_regularizer_bad_arguments(kwargs, error, message):
    with pytest.raises(error) as err:
        check_explicit_regularizer(rb.np_r_approx(), **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "xi_tilde"}, "kind must be one of"),
    ({"kind": "xi_drop", "noise": "rademacher"}, "ξ_drop always uses dropout masks"),
    ({"samples": "grads"}, "samples must be one of"),
    ({"draws": 5}, "draws must be an integer >= 20"),
    ({"alpha": 2.0}, "alpha must be a probability in (0, 1)"),
])
def test_noise_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        check_gradient_noise(rb.np_xi_approx(), **kwargs)
    assert message in str(err.value)


def test_not_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        check_explicit_regularizer(3.0)
    with pytest.raises(TypeError, match="fn must be callable"):
        check_gradient_noise(None)


# ----- adapters ----------------------------------------------------------------------------

def test_torch_sequential_round_trip(torch):
    net = dc.MLP.random([5, 6, 4, 3], activation="gelu", sites=("x", "h2"), seed=1)
    model = adapters.to_torch_sequential(net, 0.3)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Dropout", "Linear", "GELU", "Linear", "GELU", "Dropout", "Linear"]
    assert model[2].approximate == "tanh" and not model.training
    x = np.random.default_rng(0).standard_normal((4, 5))
    out = model(torch.from_numpy(x)).detach().numpy()
    dc.testing.assert_close(out, net.forward(x), rtol=1e-12)
    back = adapters.from_torch_sequential(model)
    assert back.site_names == ("x", "h2") and back.activation == "gelu"
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], v)


@pytest.mark.parametrize("layers, message", [
    (lambda nn: [nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)], "GELU(approximate='none')"),
    (lambda nn: [nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)], "without bias"),
    (lambda nn: [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)],
     "mixes activations"),
    (lambda nn: [nn.Linear(3, 4), nn.Dropout(0.1), nn.Tanh(), nn.Linear(4, 2)],
     "must follow a Linear and precede"),
    (lambda nn: [nn.Linear(3, 4), nn.Tanh()], "ending with a Linear"),
    (lambda nn: [nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)], "LayerNorm is not"),
])
def test_from_torch_sequential_refuses(torch, layers, message):
    with pytest.raises(ValueError) as err:
        adapters.from_torch_sequential(torch.nn.Sequential(*layers(torch.nn)))
    assert message in str(err.value)


def test_weight_lists_hand_over_torch_tensors(torch):
    seen = []

    def fn(weights, biases, x, y, q, *, sites, activation):
        seen.append(all(isinstance(a, torch.Tensor) for a in (*weights, *biases, x, y)))
        net = dc.MLP([w.numpy() for w in weights], [b.numpy() for b in biases], activation,
                     sites)
        return torch.from_numpy(dc.explicit.strength(q) * dc.explicit.r_approx(net, x.numpy(),
                                                                                y.numpy()))

    report = check_explicit_regularizer(fn, adapter=adapters.weight_lists(torch.from_numpy))
    assert report.passed and all(seen), str(report)


def test_checking_on_the_users_own_network(torch):
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(6, 3)).double()
    net = adapters.from_torch_sequential(model)
    report = check_explicit_regularizer(rb.torch_r_approx(), nets=[net], adapter="torch")
    assert report.passed and report.nets == ("net 1 [4, 6, 3] tanh, sites h1",), str(report)


# ----- strategies --------------------------------------------------------------------------

@given(dst.problems(sites="any", max_width=4, max_layers=3, exclude_zero=True))
def test_strategies_make_valid_problems(pb):
    net, x, y, q = pb
    assert isinstance(net, dc.MLP) and net.site_names and 0 < q < 1
    assert x.shape[1] == net.input_dim and y.shape == (x.shape[0],)
    assert ((0 <= y) & (y < net.n_classes)).all()
    r = dc.explicit.r_approx(net, x, y)
    assert r.shape == (x.shape[0],) and np.all(r >= -1e-12)  # a sum of PSD forms


@given(st.data())
def test_strategies_bound_to_a_namespace(data):
    xps = pytest.importorskip("array_api_strict", reason="array-api-strict is a dev extra")
    s = dst.make_strategies(xps)
    net = data.draw(s.mlps(max_width=3, max_layers=2, activations="tanh"))
    x = data.draw(s.inputs(net, max_n=3))
    assert dc.backend.namespace(x) is dc.backend.namespace(net.params["W1"])
    assert x.dtype == xps.float64


@pytest.mark.parametrize("call, message", [
    (lambda: dst.mlps(min_layers=0), "min_layers=0 must be an integer >= 1"),
    (lambda: dst.mlps(min_width=4, max_width=2), "min_width=4 must not exceed max_width=2"),
    (lambda: dst.mlps(activations=("swish",)), "must name one or more of"),
    (lambda: dst.mlps(sites="some"), "sites='some' must be one of"),
    (lambda: dst.mlps(max_classes=1), "cross-entropy needs at least 2 classes"),
    (lambda: dst.drop_probabilities(max_q=1.0), "need 0 <= min_q <= max_q < 1"),
    (lambda: dst.inputs(0), "must be an integer >= 1"),
    (lambda: dst.make_strategies(math), "is not an array namespace"),
])
def test_strategies_validate_arguments(call, message):
    with pytest.raises(InvalidArgument) as err:
        call()
    assert message in str(err.value)


# ----- the README example ------------------------------------------------------------------

def test_readme_example(torch):
    """A PyTorch user validates ``torch.nn.Dropout`` and a hand-written ``R_approx``."""
    from torch.func import jacrev, vmap

    from dropcheck.checks import assert_dropout_correct, assert_regularizer_matches

    assert_dropout_correct(torch.nn.Dropout, to_framework=torch.from_numpy)

    def r_approx(model, x, y, q):              # model: nn.Sequential, Dropout marks the sites
        total = 0.0
        for i, m in enumerate(model):
            if isinstance(m, torch.nn.Dropout):
                h, head = model[:i](x), model[i + 1:]
                J = vmap(jacrev(head))(h)                              # (n, classes, d)
                p = torch.softmax(head(h), dim=-1)
                H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
                total = total + torch.einsum("nck,ncd,ndk,nk->n", J, H, J, h**2)
        return q / (2 * (1 - q)) * total

    assert_regularizer_matches(r_approx, adapter="torch")


# ----- structure: no cycle checks ↔ testing, no sibling privates --------------------------

def test_checks_do_not_import_testing_and_testing_wraps_checks():
    """``dropcheck.checks`` loads without ``dropcheck.testing`` (tolerances come from the leaf
    ``dropcheck._tolerances``); ``dropcheck.testing`` re-exports the checkers' assertions."""
    import subprocess
    import sys

    code = ("import sys, dropcheck.checks as c; assert 'dropcheck.testing' not in sys.modules; "
            "import dropcheck.testing as t; assert t.assert_regularizer_matches is "
            "c.assert_regularizer_matches and t.DropcheckError is c.DropcheckError")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_checkers_import_no_private_name_of_a_sibling_checker():
    """Shared helpers live in the private modules (``_args``, ``_runner``, ...), not in a
    sibling checker: no ``from dropcheck.checks.<checker> import _name``."""
    import ast
    from pathlib import Path

    root = Path(dc.__file__).parent / "checks"
    checkers = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.rpartition(".")[2] in checkers):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            if isinstance(node, ast.ImportFrom | ast.Import):
                module = getattr(node, "module", None) or ""
                names = [module] + [f"{module}.{a.name}" if module else a.name
                                    for a in node.names]
                assert "dropcheck.testing" not in names, f"{path.name} imports dropcheck.testing"
