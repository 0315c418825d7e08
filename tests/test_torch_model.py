"""``dc.from_torch``: a PyTorch module on the site protocol, against dropcheck's own models.

Oracles.
1. The same network twice: a torch module with the weights of a ``dc.MLP`` (``dc.LSTM``),
   against the numpy model's hand-derived sweeps.  Both evaluate the same float64 expressions
   in a different order (torch's and numpy's matrix products and ``tanh``/``sigmoid`` kernels),
   so primitives agree to a few ulps times the condition of a depth ≤ 3 chain of O(1) weights:
   RTOL 1e-10 (observed ≤ 1e-15 absolute); ATOL 1e-12 covers entries that are exactly zero in
   one model and ~1e-17 in the other.
2. Exact enumeration sums ``2^Σd ≤ 256`` probability-weighted terms, each equal to ~1e-16
   relative in the two models, with the same enumeration order: the sums agree to
   ~256·1e-16 ≈ 3e-14 relative at worst; EXACT_RTOL 1e-12 keeps a margin of 30.
3. Central differences (eps 1e-6: truncation O(eps²) + rounding O(1e-16/eps) ≈ 1e-10 on
   unit-scale functions) for what has no numpy twin: the full total derivative
   ``noise_adjoint_tangent`` across sites, parameter gradients of a non-MLP module (layer norm,
   residual, a locked mask on a 2-axis activation); FD_RTOL 1e-6 leaves a wide margin while a
   wrong term would be O(1).
"""

import subprocess
import sys

import numpy as np
import pytest

import dropcheck as dc
from dropcheck.testing import assert_close

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL, ATOL = 1e-10, 1e-12
EXACT_RTOL = 1e-12
FD_EPS, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8


def close(actual, desired, rtol=RTOL, atol=ATOL):
    """assert_close after broadcasting the protocol's size-1 axes (k, B, n)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    shape = np.broadcast_shapes(actual.shape, desired.shape)
    assert_close(np.broadcast_to(actual, shape), np.broadcast_to(desired, shape), rtol=rtol,
                 atol=atol)


# ----- a torch MLP with a dc.MLP's weights -----
_ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
        "identity": lambda z: z}


class TorchMLP(nn.Module):
    """``Linear`` layers with an ``nn.Dropout`` in front of each (the sites)."""

    def __init__(self, sizes, activation):
        super().__init__()
        self.drops = nn.ModuleList(nn.Dropout(0.5) for _ in sizes[:-1])
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.act = _ACT[activation]

    def forward(self, x):
        h = x
        for i, (d, lin) in enumerate(zip(self.drops, self.layers, strict=True)):
            h = lin(d(h))
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


def twin(sizes=(4, 5, 3, 3), activation="tanh", sites=("x", "h1", "h2"), seed=1,
         loss="cross_entropy", n=3):
    """A dc.MLP and the same network as a TorchModel; inputs and targets."""
    net = dc.MLP.random(list(sizes), activation=activation, sites=sites, seed=seed, loss=loss)
    mod = TorchMLP(sizes, activation).double()
    with torch.no_grad():
        for i, lin in enumerate(mod.layers, 1):
            lin.weight.copy_(torch.from_numpy(net.params[f"W{i}"]))
            lin.bias.copy_(torch.from_numpy(net.params[f"b{i}"]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, sizes[0]))
    y = (rng.integers(0, sizes[-1], n) if loss == "cross_entropy"
         else rng.standard_normal((n, sizes[-1])))
    names = {"x": "drops.0", **{f"h{i}": f"drops.{i}" for i in range(1, len(sizes) - 1)}}
    tm = dc.from_torch(mod, x, sites={s: names[s] for s in sites}, loss=loss)
    return net, tm, x, y


@pytest.fixture(scope="module")
def mlp_pair():
    return twin()


def _noise(rng, widths, B, n):
    return {s: rng.choice([-1.0, 0.5], size=(B, n, d)) for s, d in widths.items()}


def test_structure(mlp_pair):
    net, tm, x, _ = mlp_pair
    assert tm.sites == net.sites
    assert list(tm.params) == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                               "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    close(tm.flatten_params(), net.flatten_params())
    assert tm.n_classes == net.n_classes and tm.input_dim == net.input_dim
    assert "torch" in repr(type(tm.module)) and "TorchModel" in repr(tm)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_primitives_against_mlp(activation):
    net, tm, x, _ = twin(activation=activation)
    rng = np.random.default_rng(2)
    n, w = x.shape[0], net.widths
    noise = _noise(rng, w, 2, n)
    a, b = net.trace(x, noise), tm.trace(x, noise)
    close(b.logits, a.logits)
    for s in net.site_names:
        close(tm.site_values(b)[s], net.site_values(a)[s])
    vt = {s: rng.standard_normal((2, 2, n, d)) for s, d in w.items()}
    nt = {s: rng.standard_normal((2, 1, n, d)) for s, d in w.items()}
    ta, tb = net.tangent(a, vt, nt), tm.tangent(b, vt, nt)
    close(tb.logits, ta.logits)
    cot = rng.standard_normal((3, 2, n, 3))
    (sa, ga), (sb, gb) = (m.backward(t, cot, sites=net.site_names, params=True)
                          for m, t in ((net, a), (tm, b)))
    close(gb, ga)
    for s in net.site_names:
        close(sb[s], sa[s])
    for g in (rng.standard_normal((2, n, 3)), rng.standard_normal((2, 2, n, 3))):
        gd = rng.standard_normal((2, 2, n, 3))
        (sa, ga), (sb, gb) = (m.adjoint_tangent(t, tt, g, gd, sites=net.site_names, params=True)
                              for m, t, tt in ((net, a, ta), (tm, b, tb)))
        close(gb, ga)
        for s in net.site_names:
            close(sb[s], sa[s])
    na, nb = (m.noise_adjoint(t, cot, net.site_names) for m, t in ((net, a), (tm, b)))
    for s in net.site_names:
        close(nb[s], na[s])
    # the MLP's noise_adjoint_tangent is exact for a tangent at the same site or a later one
    g, gd = rng.standard_normal((2, n, 3)), rng.standard_normal((2, 2, n, 3))
    t1a = net.tangent(a, None, {"h1": nt["h1"]})
    t1b = tm.tangent(b, None, {"h1": nt["h1"]})
    na, nb = (m.noise_adjoint_tangent(t, tt, g, gd, ("x", "h1"))
              for m, t, tt in ((net, a, t1a), (tm, b, t1b)))
    for s in ("x", "h1"):
        close(nb[s], na[s])


def test_zero_tangent_and_no_request(mlp_pair):
    net, tm, x, _ = mlp_pair
    tr = tm.trace(x)
    assert not np.any(tm.tangent(tr).logits)
    adj, grads = tm.backward(tr, np.ones((1, 1, x.shape[0], 3)))
    assert adj == {} and grads is None


def test_noise_adjoint_tangent_is_the_total_derivative(mlp_pair):
    """Across sites (tangent at ``x``, adjoint at ``h2``) against central differences of
    ``noise_adjoint`` along the noise tangent, ``g`` held fixed (``g_dot`` = 0)."""
    _, tm, x, _ = mlp_pair
    rng = np.random.default_rng(3)
    n = x.shape[0]
    noise = _noise(rng, tm.widths, 1, n)
    tau = rng.standard_normal((1, 1, n, tm.widths["x"]))
    g = rng.standard_normal((1, n, 3))
    tr = tm.trace(x, noise)
    got = tm.noise_adjoint_tangent(tr, tm.tangent(tr, None, {"x": tau}), g,
                                   np.zeros((1, 1, n, 3)), ("h2", "h1"))

    def na(eps):
        shifted = dict(noise, x=noise["x"] + eps * tau[0])
        return tm.noise_adjoint(tm.trace(x, shifted), g[None], ("h2", "h1"))

    plus, minus = na(FD_EPS), na(-FD_EPS)
    for s in ("h2", "h1"):
        close(got[s], (plus[s] - minus[s]) / (2 * FD_EPS), rtol=FD_RTOL, atol=FD_ATOL)


def test_with_params(mlp_pair):
    net, tm, x, y = mlp_pair
    rng = np.random.default_rng(4)
    new = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in net.params.items()}
    net2 = net.with_params(new)
    tm2 = tm.with_params(tm.unflatten_params(net2.flatten_params()))
    close(tm2.forward(x), net2.forward(x))
    close(tm.forward(x), net.forward(x))  # the original is unchanged
    with pytest.raises(ValueError, match="layers.0.weight"):
        tm.with_params({**tm.params, "layers.0.weight": np.zeros((2, 2))})


def test_torch_inputs_accepted(mlp_pair):
    net, tm, x, y = mlp_pair
    close(tm.loss_value(torch.from_numpy(x), torch.from_numpy(y)), net.loss_value(x, y))
    close(tm.forward(x[0]), net.forward(x[0]))


# ----- every algorithm on the torch model -----
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_exact_enumeration_against_mlp(loss):
    net, tm, x, y = twin(loss=loss)
    q = {"x": 0.2, "h1": 0.3, "h2": 0.5}
    for f in (dc.exact.expected_loss, dc.exact.explicit_regularizer):
        close(f(tm, x, y, q), f(net, x, y, q, method="batched"), rtol=EXACT_RTOL, atol=1e-15)
    sites = ("h1", "h2")
    close(dc.exact.gradient_noise_cov(tm, x, y, 0.3, sites=sites),
          dc.exact.gradient_noise_cov(net, x, y, 0.3, sites=sites), rtol=EXACT_RTOL,
          atol=1e-15)
    close(dc.exact.expected_gradient(tm, x, y, 0.3, sites=sites),
          dc.exact.expected_gradient(net, x, y, 0.3, sites=sites, method="batched"),
          rtol=EXACT_RTOL, atol=1e-15)


def test_montecarlo_same_draws(mlp_pair):
    """The same seed draws the same masks for both models: the estimates agree like traces."""
    net, tm, x, y = mlp_pair
    a = dc.montecarlo.explicit_regularizer(net, x, y, 0.3, samples=64, rng=np.random.default_rng(5))
    b = dc.montecarlo.explicit_regularizer(tm, x, y, 0.3, samples=64, rng=np.random.default_rng(5))
    # per-draw losses agree like traces (RTOL); the mean and the spread of 64 of them too
    close(b.value, a.value)
    close(b.stderr, a.stderr)


def test_explicit_and_implicit_against_mlp(mlp_pair):
    net, tm, x, y = mlp_pair
    close(dc.explicit.r_approx(tm, x, y), dc.explicit.r_approx(net, x, y))
    for h in ("identity", "loss_jacobian"):
        close(dc.explicit.r_approx(tm, x, y, hessian=h), dc.explicit.r_approx(net, x, y, hessian=h))
    close(dc.explicit.r_approx_grad(tm, x, y), dc.explicit.r_approx_grad(net, x, y))
    close(dc.explicit.taylor(tm, x, y, 0.3), dc.explicit.taylor(net, x, y, 0.3))
    close(dc.implicit.xi_approx_cov(tm, x, y, 0.3), dc.implicit.xi_approx_cov(net, x, y, 0.3))
    # sampled: the same seed draws the same masks, so the samples agree like gradients
    for red in ("none", "sum"):
        a, b = (dc.implicit.xi_tilde(m, x, y, 0.3, rng=np.random.default_rng(19), samples=5,
                                     reduction=red)
                for m in (net, tm))
        close(b, a)


@pytest.mark.parametrize("which", ["mlp", "lstm"])
def test_summed_param_gradients(which, mlp_pair, lm_pair):
    """``per_example=False`` (one reverse pass per draw, vmap for the MLP, the loop for
    nn.LSTM) against the sum of the per-example gradients; tangents too."""
    net, tm, x, _ = mlp_pair if which == "mlp" else lm_pair
    rng = np.random.default_rng(17)
    n = x.shape[0]
    tr = tm.trace(x, _noise(rng, tm.widths, 2, n))
    cot = rng.standard_normal((2, *tr.logits.shape))
    per = tm.param_gradient(tr, cot)
    close(tm.param_gradient(tr, cot, per_example=False), per.sum(axis=2))
    tan = tm.tangent(tr, None, {s: rng.standard_normal((2, 1, n, d))
                                for s, d in tm.widths.items()})
    g, gd = cot[0], rng.standard_normal(cot.shape)
    close(tm.param_adjoint_tangent(tr, tan, g, gd, per_example=False),
          tm.param_adjoint_tangent(tr, tan, g, gd).sum(axis=2))


def test_shared_over_batch_noise(mlp_pair):
    _, tm, x, _ = mlp_pair
    shared = dc.from_torch(tm.module, x, sites={"h1": "drops.1", "h2": "drops.2"},
                           shared_over_batch=["h1"])
    eta = shared.sample_noise(np.random.default_rng(18), x.shape[0], 0.5, draws=4)
    assert eta["h1"].shape == (4, 1, 5) and eta["h2"].shape == (4, 3, 3)
    assert shared.noise_shape_for("h1", x, 2) == (2, 1, 5)


# ----- a module that is not an MLP: parameter gradients against central differences -----
class Odd(nn.Module):
    """Input (n, 3, 4): a linear map per step, layer norm, a residual, a locked site on the
    (3, 4) activation, mean over steps, a tied scalar temperature."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.drop = nn.Dropout(0.3)
        self.drop2 = nn.Dropout(0.3)
        self.out = nn.Linear(4, 3)
        self.temp = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        h = torch.tanh(self.inp(self.drop2(x)))
        h = self.drop(self.norm(h) + x)
        return self.out(h).mean(dim=1) * self.temp


@pytest.fixture(scope="module")
def odd():
    torch.manual_seed(0)
    mod = Odd().double()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4))
    tm = dc.from_torch(mod, x, sites={"a": "drop2", "b": "drop"}, masks={"b": "locked"})
    return tm, x, np.array([0, 2])


def test_locked_layout(odd):
    tm, x, _ = odd
    assert tm.widths == {"a": 12, "b": 4}
    assert tm.site_shape("b") == (3, 4) and tm.mask_form("b") == "locked"
    tr = tm.trace(x)
    assert tm.site_values(tr)["b"].shape == (1, 2, 3, 4)


def test_param_gradients_against_fd(odd):
    tm, x, y = odd
    rng = np.random.default_rng(7)
    noise = _noise(rng, tm.widths, 1, 2)
    cot = rng.standard_normal((1, 1, 2, 3))
    _, g = tm.backward(tm.trace(x, noise), cot, params=True)  # (1, 1, 2, P)
    theta = tm.flatten_params()

    def f(th, i):
        return np.sum(cot[0, 0, i] * tm.with_params(tm.unflatten_params(th)).trace(
            x[i : i + 1], {s: e[:, i : i + 1] for s, e in noise.items()}).logits[0, 0])

    for i in range(2):
        fd = np.array([(f(theta + FD_EPS * e, i) - f(theta - FD_EPS * e, i)) / (2 * FD_EPS)
                       for e in np.eye(theta.size)])
        close(g[0, 0, i], fd, rtol=FD_RTOL, atol=FD_ATOL)


def test_noise_adjoint_and_tangent_against_fd(odd):
    """``∂⟨u, F⟩/∂η`` of the locked site (summed over its 3 steps) and ``J τ`` by differences."""
    tm, x, _ = odd
    rng = np.random.default_rng(8)
    noise = _noise(rng, tm.widths, 1, 2)
    cot = rng.standard_normal((1, 1, 2, 3))
    tr = tm.trace(x, noise)
    na = tm.noise_adjoint(tr, cot, ("a", "b"))
    for s in ("a", "b"):
        d = tm.widths[s]
        fd = np.zeros((2, d))
        for k in range(d):
            e = np.zeros(d)
            e[k] = FD_EPS
            up = tm.trace(x, dict(noise, **{s: noise[s] + e})).logits
            dn = tm.trace(x, dict(noise, **{s: noise[s] - e})).logits
            fd[:, k] = np.sum(cot[0, 0] * (up - dn)[0], axis=-1) / (2 * FD_EPS)
        close(na[s][0, 0], fd, rtol=FD_RTOL, atol=FD_ATOL)
        tau = rng.standard_normal((1, 1, 2, d))
        t = tm.tangent(tr, None, {s: tau}).logits
        up = tm.trace(x, dict(noise, **{s: noise[s] + FD_EPS * tau[0]})).logits
        dn = tm.trace(x, dict(noise, **{s: noise[s] - FD_EPS * tau[0]})).logits
        close(t, (up - dn)[None] / (2 * FD_EPS), rtol=FD_RTOL, atol=FD_ATOL)
    # the per-element terms sum to the locked ones over the shared (time) axis
    adj, _ = tm.backward(tr, cot, sites=("b",))
    per = tm.noise_terms(tr, adj, ("b",), form="per_step")["b"]
    close(per.sum(axis=-2), na["b"])


def test_loop_and_vmap_agree(odd):
    tm, x, _ = odd
    loop = dc.from_torch(tm.module, x, sites={"a": "drop2", "b": "drop"},
                         masks={"b": "locked"}, vectorize="loop")
    assert tm._use_vmap and not loop._use_vmap
    rng = np.random.default_rng(9)
    tr = tm.trace(x, _noise(rng, tm.widths, 2, 2))
    cot = rng.standard_normal((2, 2, 2, 3))
    close(loop.backward(tr, cot, params=True)[1], tm.backward(tr, cot, params=True)[1])


# ----- a tiny LSTM language model with LockedDropout against dc.LSTM -----
class LockedDropout(nn.Module):
    """AWD-LSTM's LockedDropout: one mask per sequence, shared over time (batch first)."""

    def forward(self, x, p=0.5):
        if not self.training or not p:
            return x
        m = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p) / (1 - p)
        return x * m


class TinyLM(nn.Module):
    def __init__(self, V, de, H):
        super().__init__()
        self.enc = nn.Embedding(V, de)
        self.lock = LockedDropout()
        self.rnn = nn.LSTM(de, H, batch_first=True)
        self.dec = nn.Linear(H, V)

    def forward(self, x):
        out, _ = self.rnn(self.lock(self.enc(x)))
        return self.dec(self.lock(out))


@pytest.fixture(scope="module")
def lm_pair():
    V, de, H, T, n = 5, 2, 2, 3, 2
    net = dc.LSTM.random(V, de, H, seed=3, scale=3.0)
    p = net.params
    mod = TinyLM(V, de, H).double()
    with torch.no_grad():
        mod.enc.weight.copy_(torch.from_numpy(p["E"]))
        mod.rnn.weight_ih_l0.copy_(torch.from_numpy(p["W1"]))
        mod.rnn.weight_hh_l0.copy_(torch.from_numpy(p["U1"]))
        mod.rnn.bias_ih_l0.copy_(torch.from_numpy(p["b1"]))
        mod.rnn.bias_hh_l0.zero_()
        mod.dec.weight.copy_(torch.from_numpy(p["D"]))
        mod.dec.bias.copy_(torch.from_numpy(p["bD"]))
    rng = np.random.default_rng(10)
    x = rng.integers(0, V, (n, T))
    y = rng.integers(0, V, (n, T))
    tm = dc.from_torch(mod, x, sites={"emb": "lock#0", "out": "lock#1"},
                       masks={"emb": "locked", "out": "locked"})
    return net, tm, x, y


def _lstm_grads_as_torch(net, g):
    """dc.LSTM's flat gradient (E, W1, U1, b1, D, bD) in the torch module's order, where the
    two biases b_ih, b_hh of nn.LSTM both get b1's gradient."""
    u = net.unflatten_params(g)
    parts = [u[k] for k in ("E", "W1", "U1", "b1", "b1", "D", "bD")]
    lead = g.shape[:-1]
    return np.concatenate([np.reshape(a, (*lead, -1)) for a in parts], axis=-1)


def test_lstm_primitives(lm_pair):
    net, tm, x, y = lm_pair
    assert tm.widths == net.widths and tm.loss.name == "token_cross_entropy"
    assert not tm._use_vmap  # nn.LSTM has no vmap batching rule: the row loop
    rng = np.random.default_rng(11)
    n, T = x.shape
    noise = _noise(rng, net.widths, 2, n)
    a, b = net.trace(x, noise), tm.trace(x, noise)
    close(b.logits, a.logits)
    for s in net.site_names:
        close(tm.site_values(b)[s], net.site_values(a)[s])
    nt = {s: rng.standard_normal((2, 1, n, d)) for s, d in net.widths.items()}
    close(tm.tangent(b, None, nt).logits, net.tangent(a, None, nt).logits)
    cot = rng.standard_normal((1, 2, n, T, 5))
    close(tm.noise_adjoint(b, cot, net.site_names)["emb"],
          net.noise_adjoint(a, cot, net.site_names)["emb"])
    close(tm.noise_adjoint(b, cot, net.site_names)["out"],
          net.noise_adjoint(a, cot, net.site_names)["out"])
    _, gb = tm.backward(b, cot, params=True)
    _, ga = net.backward(a, cot, params=True)
    close(gb, _lstm_grads_as_torch(net, ga))


def test_lstm_exact_and_explicit(lm_pair):
    net, tm, x, y = lm_pair
    q = {"emb": 0.3, "out": 0.5}
    for f in (dc.exact.expected_loss, dc.exact.explicit_regularizer):
        close(f(tm, x, y, q), f(net, x, y, q, method="batched"), rtol=EXACT_RTOL, atol=1e-15)
    close(dc.explicit.r_approx(tm, x, y), dc.explicit.r_approx(net, x, y))


def test_lstm_per_step_mask(lm_pair):
    """The element form of a (T, d) activation is a per-step mask, width T·d."""
    net, tm, x, _ = lm_pair
    per = dc.from_torch(tm.module, x, sites={"emb": "lock#0", "out": "lock#1"})
    n, T = x.shape
    assert per.widths == {"emb": T * 2, "out": T * 2}
    rng = np.random.default_rng(12)
    noise = {s: rng.choice([-1.0, 0.5], size=(2, n, T, d)) for s, d in net.widths.items()}
    flat = {s: e.reshape(2, n, -1) for s, e in noise.items()}
    close(per.trace(x, flat).logits, net.with_mask("per_step").trace(x, noise).logits)


def test_embedding_rows(lm_pair):
    """Row dropout of the embedding = an element mask whose row t is η[x_t]; its noise adjoint
    is the element adjoint summed over the positions holding each word."""
    _, tm, x, _ = lm_pair
    rows = dc.from_torch(tm.module, x, sites={"emb": "enc"}, masks={"emb": "rows"})
    elem = dc.from_torch(tm.module, x, sites={"emb": "enc"})
    n, T = x.shape
    assert rows.widths == {"emb": 5}
    rng = np.random.default_rng(13)
    eta = rng.choice([-1.0, 0.5], size=(1, n, 5))
    spread = np.repeat(eta[0][np.arange(n)[:, None], x][..., None], 2, axis=-1)  # (n, T, 2)
    close(rows.trace(x, {"emb": eta}).logits,
          elem.trace(x, {"emb": spread.reshape(1, n, -1)}).logits)
    cot = rng.standard_normal((1, 1, n, T, 5))
    got = rows.noise_adjoint(rows.trace(x, {"emb": eta}), cot, ("emb",))["emb"]
    per = elem.noise_adjoint(elem.trace(x, {"emb": spread.reshape(1, n, -1)}), cot, ("emb",))
    per = per["emb"].reshape(n, T, 2).sum(-1)
    want = np.zeros((n, 5))
    for i in range(n):
        np.add.at(want[i], x[i], per[i])
    close(got[0, 0], want)


def test_weight_noise_against_lstm(lm_pair):
    """A DropConnect mask on weight_hh (AWD-LSTM's WeightDrop) against dc.LSTM's on U1."""
    net, tm, x, y = lm_pair
    wd = dc.from_torch(tm.module, x, sites={"emb": "lock#0", "out": "lock#1"},
                       masks={"emb": "locked", "out": "locked"},
                       weight_noise=["rnn.weight_hh_l0"])
    rng = np.random.default_rng(14)
    eta = rng.choice([-1.0, 1.0], size=(1, 8, 2))
    wnet = dc.LSTM(net.params, weight_noise={"U1": eta})
    wtm = wd.with_context(weight_noise={"rnn.weight_hh_l0": eta})
    a, b = wnet.trace(x), wtm.trace(x)
    close(b.logits, a.logits)
    cot = rng.standard_normal((1, 1, *x.shape, 5))
    close(wtm.backward(b, cot, params=True)[1],
          _lstm_grads_as_torch(net, wnet.backward(a, cot, params=True)[1]))


class StatefulLM(TinyLM):
    """AWD-LSTM's calling convention: ``forward(x, hidden) -> (logits, hidden)``."""

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.lock(self.enc(x)), hidden)
        return self.dec(self.lock(out)), hidden


def test_lstm_with_carried_state(lm_pair):
    """Truncated BPTT: a window starting from a carried ``(h0, c0)`` against dc.LSTM's
    ``trace(..., state=)``; the returned state is the next window's."""
    net, tm, x, y = lm_pair
    mod = StatefulLM(5, 2, 2).double()
    mod.load_state_dict(tm.module.state_dict())
    rng = np.random.default_rng(16)
    n = x.shape[0]
    h0, c0 = rng.standard_normal((1, n, 2)), rng.standard_normal((1, n, 2))
    sm = dc.from_torch(mod, x, sites={"emb": "lock#0", "out": "lock#1"},
                       masks={"emb": "locked", "out": "locked"}, state=(h0, c0))
    noise = _noise(rng, net.widths, 2, n)
    a = net.trace(x, noise, state=[(h0[0], c0[0])])
    b = sm.trace(x, noise)
    close(b.logits, a.logits)
    cot = rng.standard_normal((1, 2, n, x.shape[1], 5))
    for s in net.site_names:
        close(sm.noise_adjoint(b, cot, (s,))[s], net.noise_adjoint(a, cot, (s,))[s])
    close(sm.backward(b, cot, params=True)[1],
          _lstm_grads_as_torch(net, net.backward(a, cot, params=True)[1]))
    clean = sm.trace(x)
    hT, cT = sm.final_state(clean)
    (want_h, want_c), = net.final_state(net.trace(x, state=[(h0[0], c0[0])]))
    close(hT[0], want_h[0])
    close(cT[0], want_c[0])
    nxt = sm.with_context(state=(hT, cT))
    close(nxt.trace(x).logits, net.trace(x, state=[(want_h[0], want_c[0])]).logits)
    with pytest.raises(ValueError, match="state_batch_axis=1"):
        sm.trace(x, state=(h0[:, :1], c0[:, :1]))


# ----- bad input -----
def test_bad_input(mlp_pair):
    _, tm, x, _ = mlp_pair
    plain = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="sites=None.*has none"):
        dc.from_torch(plain, x)
    with pytest.raises(ValueError, match="'drops.7'.*matches no submodule"):
        dc.from_torch(tm.module, x, sites={"h1": "drops.7"})
    with pytest.raises(ValueError, match=r"masks\['h1'\] = \(2,\).*\(5,\)"):
        dc.from_torch(tm.module, x, sites={"h1": "drops.1"}, masks={"h1": (2,)})
    with pytest.raises(ValueError, match=r"masks\['h1'\] = 'rows' needs an nn.Embedding"):
        dc.from_torch(tm.module, x, sites={"h1": "drops.1"}, masks={"h1": "rows"})
    with pytest.raises(ValueError, match="masks.*'h9' is not a site"):
        dc.from_torch(tm.module, x, sites={"h1": "drops.1"}, masks={"h9": "locked"})
    with pytest.raises(ValueError, match="names call 1 of module 'drops.1'.*1 time"):
        dc.from_torch(tm.module, x, sites={"h1": "drops.1#1"})
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dc.from_torch(lambda z: z, x)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 4\)"):
        tm.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"noise\['h1'\]"):
        tm.trace(x, {"h1": np.zeros((1, 3, 4))})
    with pytest.raises(ValueError, match=r"noise_tangents\['h1'\] must have shape"):
        tm.tangent(tm.trace(x), None, {"h1": np.zeros((1, 1, 3, 4))})


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        h = self.drop(x)
        return self.lin(h - h.mean(dim=0))  # centres over the batch: examples interact


def test_mixing_examples_refused():
    x = np.random.default_rng(15).standard_normal((3, 4))
    with pytest.raises(ValueError, match="mixes examples"):
        dc.from_torch(Mixer().double(), x)


def test_import_stays_light():
    """``import dropcheck`` and the name ``dc.from_torch`` do not import torch."""
    code = ("import sys, dropcheck as dc; f = dc.from_torch; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docs_example_runs():
    """docs/torch.md's code blocks run as written (the documented adapter stays true)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "torch.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "docs/torch.md", "exec"), ns)  # noqa: S102
    assert ns["model"].widths == {"emb": 3, "out": 3}


def test_module_left_as_it_was():
    """The user's module keeps its mode, forward methods and weights after dropcheck's calls
    (and after one that is refused)."""
    net, tm, x, y = twin()
    mod = tm.module
    mod.train()
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    dc.exact.explicit_regularizer(tm, x, y, 0.2, sites=("h1",))
    tm.backward(tm.trace(x), np.ones((1, 1, 3, 3)), params=True)
    with pytest.raises(ValueError):
        tm.trace(x, {"h1": np.full((1, 3, 5), np.nan)})
    assert mod.training and all(m.training for m in mod.modules())
    assert not any("forward" in m.__dict__ for m in mod.modules())
    assert all(torch.equal(before[k], v) for k, v in mod.state_dict().items())
