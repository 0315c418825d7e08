"""The hand-derived sweeps of the MLP against autograd on the same network (float64).

Tolerance: autograd and the sweeps evaluate the same float64 expressions in different orders;
with O(1) weights and depth ≤ 3 the discrepancy is a few ulps times the condition of the
chain, well below 1e-9 relative (atol 1e-10 covers entries that are exactly zero).
"""

import autograd
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck.testing import assert_close
from tests._reference import ce, mlp_logits, site_input

RTOL, ATOL = 1e-9, 1e-10

# autograd's tanh rule is g / cosh(x)**2: cosh overflows to inf for |x| > 710 and the rule
# correctly returns 0; the oracle's warning is not a defect of the code under test.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cosh:RuntimeWarning")
ACTS = ["tanh", "relu", "gelu", "softplus", "sigmoid", "identity"]


@st.composite
def nets(draw):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 5)) for _ in range(depth + 1)]
    sizes[-1] = draw(st.integers(2, 4))
    act = draw(st.sampled_from(ACTS))
    names = ["x"] + [f"h{i}" for i in range(1, depth)]
    sites = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    seed = draw(st.integers(0, 2**16))
    net = dc.MLP.random(sizes, activation=act, sites=sites, seed=seed, scale=scale)
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    if act == "relu":  # keep pre-activations off the kink, where relu'' is a distribution
        x = x + 0.01
    return net, x, y, rng


def _theta(net):
    return [np.asarray(v) for v in net.params.values()]


@given(nets())
def test_jvp_vjp_match_autograd(case):
    net, x, y, rng = case
    tr = net.trace(x)
    th = _theta(net)
    for s in net.site_names:
        d = net.widths[s]
        v = rng.standard_normal((3, 1, x.shape[0], d))
        u = rng.standard_normal((3, 1, x.shape[0], net.n_classes))
        J = np.stack([
            autograd.jacobian(
                lambda h, i=i, s=s: mlp_logits(th, x[i], net.activation, site_override={s: h})
            )(site_input(th, x[i], net.activation, s))
            for i in range(x.shape[0])
        ])  # (n, c, d)
        assert_close(net.tangent(tr, {s: v}).logits[:, 0], np.einsum("icd,kid->kic", J, v[:, 0]),
                     rtol=RTOL, atol=ATOL)
        out, _ = net.backward(tr, u, sites=(s,))
        assert_close(out[s][:, 0], np.einsum("icd,kic->kid", J, u[:, 0]), rtol=RTOL, atol=ATOL)


@given(nets())
def test_site_hessian_of_loss_matches_autograd(case):
    net, x, y, _ = case
    tr = net.trace(x)
    th = _theta(net)
    g = net.loss.grad(tr.logits, y)
    for s in net.site_names:
        d = net.widths[s]
        eye = np.eye(d)[:, None, None, :]
        tan = net.tangent(tr, {s: eye})
        out, _ = net.adjoint_tangent(tr, tan, g, net.loss.hvp(tr.logits, y, tan.logits), sites=(s,))
        for i in range(x.shape[0]):
            H = autograd.hessian(
                lambda h, i=i, s=s: ce(mlp_logits(th, x[i], net.activation, site_override={s: h}),
                                       y[i])
            )(site_input(th, x[i], net.activation, s))
            assert_close(out[s][:, 0, i], H, rtol=RTOL, atol=ATOL)


@given(nets())
def test_param_gradients_with_noise_match_autograd(case):
    net, x, y, rng = case
    th = _theta(net)
    q = 0.4
    noise = {s: np.asarray(dc.noise.sample_eta(rng, (2, x.shape[0], d), q))
             for s, d in net.widths.items()}
    tr = net.trace(x, noise)
    _, pg = net.backward(tr, net.loss.grad(tr.logits, y)[None], params=True)
    for b in range(2):
        for i in range(x.shape[0]):
            ref = autograd.grad(
                lambda t, b=b, i=i: ce(
                    mlp_logits(t, x[i], net.activation, {s: e[b, i] for s, e in noise.items()}),
                    y[i])
            )(th)
            assert_close(pg[0, b, i], np.concatenate([r.ravel() for r in ref]), rtol=RTOL,
                         atol=ATOL)


@given(nets())
def test_noise_tangent_gives_derivative_of_gradient(case):
    """d/dε ∇_W ℓ(F(x, ετ)) at ε = 0: the forward-over-reverse ξ_approx relies on."""
    net, x, y, rng = case
    th = _theta(net)
    tau = {s: rng.standard_normal((1, 1, x.shape[0], d)) for s, d in net.widths.items()}
    tr = net.trace(x)
    tan = net.tangent(tr, noise_tangents=tau)
    g = net.loss.grad(tr.logits, y)
    _, pd = net.adjoint_tangent(tr, tan, g, net.loss.hvp(tr.logits, y, tan.logits), params=True)
    for i in range(x.shape[0]):
        def grad_at(eps, i=i):
            return autograd.grad(
                lambda t: ce(mlp_logits(t, x[i], net.activation,
                                        {s: eps * v[0, 0, i] for s, v in tau.items()}), y[i])
            )(th)

        # exact forward-mode derivative of autograd's gradient: differentiate the flat gradient
        ref = autograd.jacobian(lambda e: autograd.numpy.concatenate(
            [r.ravel() for r in grad_at(e)]))(0.0)
        assert_close(pd[0, 0, i], ref, rtol=RTOL, atol=ATOL)


def test_forward_noise_shapes():
    net = dc.MLP.random([3, 4, 2], sites=("h1",), seed=0)
    x = np.ones((5, 3))
    eta = np.zeros((7, 2, 5, 4))
    assert net.forward(x, {"h1": eta}).shape == (7, 2, 5, 2)
    assert net.forward(x[0], {"h1": np.zeros((6, 4))}).shape == (6, 2)
    assert net.forward(x[0]).shape == (2,)
    assert_close(net.forward(x, {"h1": eta})[3, 1], net.forward(x), rtol=0, atol=0)


def test_linear_model_is_affine_softmax_regression():
    m = dc.Linear.random(4, 3, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 4))
    assert_close(m.forward(x), x @ np.asarray(m.params["W1"]).T + np.asarray(m.params["b1"]),
                 rtol=1e-15, atol=1e-15)
    assert m.site_names == ("x",)


def test_params_order_and_flattening():
    net = dc.MLP.random([2, 3, 2], seed=0)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    flat = net.flatten_params()
    assert flat.shape == (net.n_params,) == (6 + 3 + 6 + 2,)
    back = net.unflatten_params(flat)
    for k in net.params:
        assert_close(back[k], net.params[k], rtol=0)


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivatives_against_autograd(act):
    from dropcheck.models._activations import ACTIVATIONS
    from tests._reference import ACT

    z = np.linspace(-4, 4, 41) + 0.013
    import array_api_compat.numpy as xnp

    a = ACTIVATIONS[act]
    d1 = autograd.elementwise_grad(ACT[act])
    assert_close(a.f(z, xnp), ACT[act](z), rtol=1e-13, atol=1e-15)
    assert_close(a.df(z, xnp), d1(z), rtol=1e-12, atol=1e-14)
    if act in ("relu", "identity"):  # piecewise linear: σ'' = 0 (autograd sees a constant)
        assert_close(a.d2f(z, xnp), np.zeros_like(z), rtol=0)
    else:
        assert_close(a.d2f(z, xnp), autograd.elementwise_grad(d1)(z), rtol=1e-10, atol=1e-12)
