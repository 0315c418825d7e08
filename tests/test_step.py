"""The fused sampled step (:func:`dropcheck.step.sampled_step`) against independent oracles.

- the plain gradient and ``ξ_approx`` against ``autograd`` on the same network
  (``tests/_reference.py``: an MLP written in autograd.numpy, no code shared with the sweeps);
- ``R̂_approx`` at the returned labels against ``autograd`` site gradients;
- the label draws against the exact ``R_approx`` (4.4): ``E R̂ = R_approx`` (z-test);
- the one-sweep :meth:`MLP.reverse` against the protocol's default (three sweeps), and a
  wrong sweep (the ``σ''`` term of (4.5)/(4.6) dropped) is rejected by the same comparison.

Tolerances: every figure is one float64 chain of ≤ 4 products over ≤ 8 units, evaluated in a
different order by autograd: a few ulps times the depth, ~1e-15 relative; ``RTOL = 1e-10``
leaves five orders of margin and is far below a wrong term (the dropped ``σ''`` term changes
``ξ`` by ~1e-2 relative here).
"""

from __future__ import annotations

import copy

import autograd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck import explicit, implicit
from dropcheck.models._activations import ACTIVATIONS, Activation
from dropcheck.models._base import Model
from dropcheck.step import sampled_step
from dropcheck.testing import assert_close
from tests._reference import ce, mlp_logits
from tests.test_implicit import _flat, _theta, _xi_ref

RTOL, ATOL = 1e-10, 1e-13


def _net(sizes=(4, 6, 5, 3), act="tanh", sites=("h1", "h2"), seed=0, n=5):
    net = dc.MLP.random(list(sizes), activation=act, sites=sites, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return net, rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n)


def _grad_ref(net, x, y):
    th = _theta(net)
    return _flat(autograd.grad(lambda t: sum(ce(mlp_logits(t, x[i], net.activation), y[i])
                                             for i in range(len(x))) / len(x))(th))


def _r_hat_ref(net, x, labels):
    """``Σ_s Σ_k (h_sk ∂ℓ(F, ŷ)/∂h_sk)²`` per example, by autograd site gradients."""
    th = _theta(net)
    hid = net.hidden(x)
    out = []
    for i in range(len(x)):
        total = 0.0
        for s in net.site_names:
            h = np.asarray(hid[s])[i]
            g = autograd.grad(lambda v, i=i, s=s: ce(mlp_logits(
                th, x[i], net.activation, site_override={s: v}), labels[i]))(h)
            total += float(np.sum((g * h) ** 2))
        out.append(total)
    return np.array(out)


@settings(deadline=None)
@given(act=st.sampled_from(["tanh", "relu", "gelu", "softplus"]),
       sites=st.sampled_from([("h1",), ("h2",), ("x", "h2"), ("h1", "h2"), ("x", "h1", "h2")]),
       q=st.sampled_from([0.1, 0.5, 0.8]), seed=st.integers(0, 2**16),
       noise=st.sampled_from(["bernoulli", "rademacher"]))
def test_every_output_matches_autograd(act, sites, q, seed, noise):
    net, x, y = _net(act=act, sites=sites, seed=seed)
    st_ = sampled_step(net, x, y, q, rng=seed, noise=noise)
    assert_close(st_.grad, _grad_ref(net, x, y), rtol=RTOL, atol=ATOL, err_msg="grad")
    assert_close(st_.xi, np.mean(_xi_ref(net, x, y, st_.eta), axis=0), rtol=RTOL, atol=ATOL,
                 err_msg="xi")
    assert_close(st_.r_hat, _r_hat_ref(net, x, st_.labels), rtol=RTOL, atol=ATOL,
                 err_msg="r_hat")
    want_loss = np.mean([ce(mlp_logits(_theta(net), x[i], act), y[i]) for i in range(len(x))])
    assert_close(st_.loss, np.asarray(want_loss), rtol=RTOL, atol=ATOL, err_msg="loss")
    assert sum(st_.r_hat_sites.values()) == pytest.approx(st_.r_hat, rel=1e-14)


def test_the_same_draws_as_the_separate_functions():
    """η first, then the labels, from the one generator: ξ equals ``xi_approx`` drawing η
    from a generator in the same state, and R̂ equals the separate estimator's terms at the
    returned labels."""
    net, x, y = _net(n=7)
    st_ = sampled_step(net, x, y, 0.3, rng=11)
    assert_close(st_.xi, implicit.xi_approx(net, x, y, 0.3, rng=11, reduction="mean"),
                 rtol=RTOL, atol=ATOL)
    assert_close(st_.xi, implicit.xi_approx_at(net, x, y, st_.eta, reduction="mean"),
                 rtol=RTOL, atol=ATOL)
    assert st_.labels.shape == (7,) and st_.eta["h1"].shape == (7, 6)


def test_r_hat_is_unbiased_for_r_approx():
    """``E_ŷ R̂ = R_approx`` (4.4; slides).  4000 seeded steps; |z| < 4.5 has a false-alarm
    rate of 7e-6 under the hypothesis, and the seed is fixed, so the test is deterministic."""
    net, x, y = _net(sizes=(3, 4, 3), sites=("h1",), n=2)
    gen = np.random.default_rng(0)
    draws = np.stack([sampled_step(net, x, y, 0.5, rng=gen).r_hat for _ in range(4000)])
    want = explicit.r_approx(net, x, y)
    z = (draws.mean(0) - want) / (draws.std(0, ddof=1) / np.sqrt(len(draws)))
    assert np.all(np.abs(z) < 4.5), (z, draws.mean(0), want)


class _ThreeSweeps(dc.MLP):
    """The MLP with the protocol's default reverse sweeps (backward, then adjoint tangent)."""

    reverse = Model.reverse
    param_gradient = Model.param_gradient
    param_adjoint_tangent = Model.param_adjoint_tangent


def test_one_sweep_equals_the_protocol_default():
    net, x, y = _net(sizes=(4, 6, 5, 5, 3), sites=("x", "h1", "h3"), n=4)
    q = {"x": 0.2, "h1": 0.5, "h3": 0.3}
    three = copy.copy(net)
    three.__class__ = _ThreeSweeps
    fused, slow = sampled_step(net, x, y, q, rng=3), sampled_step(three, x, y, q, rng=3)
    for field in ("grad", "xi", "r_hat"):
        assert_close(getattr(fused, field), getattr(slow, field), rtol=RTOL, atol=ATOL,
                     err_msg=field)


def test_a_sweep_without_the_second_derivative_term_is_rejected(monkeypatch):
    """The comparison with autograd can fail: drop ``σ''`` (the gradient through ``J_loss``'s
    dependence on the weights below the site) and ``ξ`` moves by far more than ``RTOL``."""
    net, x, y = _net()
    st_ = sampled_step(net, x, y, 0.5, rng=1)
    want = np.mean(_xi_ref(net, x, y, st_.eta), axis=0)
    good = ACTIVATIONS["tanh"]
    monkeypatch.setattr(net, "_act", Activation(good.f, good.df, lambda z, xp: 0.0 * z))
    bad = sampled_step(net, x, y, 0.5, rng=1)
    err = np.max(np.abs(bad.xi - want)) / np.max(np.abs(want))
    assert err > 1e3 * RTOL, err
    assert_close(bad.grad, st_.grad, rtol=RTOL, atol=ATOL)  # the plain gradient has no σ''


def test_one_example_and_per_site_q():
    net, x, y = _net()
    st_ = sampled_step(net, x[0], y[0], {"h1": 0.1, "h2": 0.6}, rng=2)
    assert st_.r_hat.shape == () and st_.labels.shape == () and st_.eta["h2"].shape == (5,)
    assert st_.xi.shape == st_.grad.shape == (net.n_params,)
    assert_close(st_.xi, _xi_ref(net, x[:1], y[:1], {s: e[None] for s, e in st_.eta.items()})[0],
                 rtol=RTOL, atol=ATOL)


def test_lstm_runs_through_the_protocol_default():
    """The LSTM has no one-sweep override: the default ``reverse`` gives the same figures as
    the separate estimators at the same noise and labels (each tested against oracles in
    tests/test_lstm.py)."""
    from dropcheck.explicit._common import setup
    from dropcheck.explicit.estimators import _r_hat_draws

    net = dc.LSTM.random(11, 4, 5, 1, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (3, 4)), rng.integers(0, 11, (3, 4))
    st_ = sampled_step(net, x, y, 0.4, rng=5)
    assert_close(st_.xi, implicit.xi_approx_at(net, x, y, st_.eta, reduction="mean"),
                 rtol=RTOL, atol=ATOL)
    pb = setup(net, x, y, None, per_step=True)
    assert_close(st_.r_hat, _r_hat_draws(pb, st_.labels[None])[0], rtol=RTOL, atol=ATOL)


def test_bad_input_is_named():
    net, x, y = _net()
    with pytest.raises(ValueError, match="noise"):
        sampled_step(net, x, y, 0.5, noise="gaussian")
    sq = dc.MLP.random([4, 6, 3], loss="squared", seed=0)
    with pytest.raises(ValueError, match="cross-entropy"):
        sampled_step(sq, x, np.zeros((5, 3)), 0.5)
    with pytest.raises(ValueError, match="q"):
        sampled_step(net, x, y, 1.5)


def test_the_benchmarks_multiply_add_count_is_the_sweeps(monkeypatch):
    """``bench_sampled.macs`` (the floor quoted in docs/benchmarks.md) counts the products the
    plain and fused steps actually run: every matrix product of the MLP is counted here."""
    import array_api_compat.numpy as xnp
    from dropcheck.benchmarks import bench_sampled

    from dropcheck.models import mlp

    count = [0]
    two_d, batched = mlp.matmul, xnp.matmul

    def counted_2d(a, b, xp):
        count[0] += int(np.prod(a.shape[:-1])) * a.shape[-1] * b.shape[-1]
        return two_d(a, b, xp)

    def counted(a, b):
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        count[0] += int(np.prod(lead)) * a.shape[-2] * a.shape[-1] * b.shape[-1]
        return batched(a, b)

    monkeypatch.setattr(mlp, "matmul", counted_2d)
    monkeypatch.setattr(xnp, "matmul", counted)
    for sizes, sites, layers in (([32, 16, 12, 10], ("h1", "h2"), (1, 2)),
                                 ([8, 7, 6, 5, 4], ("x", "h3"), (0, 3))):
        net, x, y = _net(sizes=sizes, sites=sites, n=9)
        plain, fused = bench_sampled.macs(sizes, layers, 9)
        count[0] = 0
        bench_sampled._plain(net, x, y)()
        assert count[0] == plain
        count[0] = 0
        sampled_step(net, x, y, 0.5, rng=0)
        assert count[0] == fused


def test_a_pytorch_module_gives_the_mlps_step():
    """``dc.from_torch`` models take the protocol's default ``reverse`` (torch.func sweeps): the
    same step as the MLP with the same weights, draws and labels (rounding: ~1e-16)."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(6, 3)).double()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    tm = dc.from_torch(mod, torch.from_numpy(x))
    w = [mod[i].weight.detach().numpy() for i in (0, 3)]
    b = [mod[i].bias.detach().numpy() for i in (0, 3)]
    mlp = dc.MLP(w, b, "tanh", ("h1",))
    got = sampled_step(tm, torch.from_numpy(x), torch.from_numpy(y), 0.3, rng=3)
    want = sampled_step(mlp, x, y, 0.3, rng=3)
    assert np.array_equal(np.asarray(got.labels), want.labels)
    for field in ("loss", "grad", "xi", "r_hat"):
        assert_close(np.asarray(getattr(got, field)), getattr(want, field), rtol=RTOL, atol=ATOL,
                     err_msg=field)
