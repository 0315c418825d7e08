"""``Functional``: the user's numpy stages, differentiated by autograd, against two oracles.

1. A ``Functional`` built to replicate an ``MLP`` (same weights) against ``dc.MLP``'s
   hand-derived sweeps.  Tolerance: both evaluate the same float64 expressions (the forward
   is literally the same, ``h @ W.T + b`` then σ); the derivatives differ in order and form
   (autograd's ``tanh`` rule is ``g / cosh²``, the MLP's ``1 − tanh²``), i.e. a few ulps per
   operation times the condition of a depth ≤ 3 chain of O(1) weights: well below 1e-9
   relative; atol 1e-10 covers entries that are exactly zero in one and ~1e-17 in the other.
2. A non-MLP architecture (layer norm, a residual block, a scalar temperature tied across two
   stages, a stage without parameters) against central differences
   (``dropcheck.testing.numeric_jacobian``, eps 1e-6: truncation O(eps²) + rounding
   O(1e-16/eps) ≈ 1e-10 relative on unit-scale functions; rtol 1e-6 leaves a wide margin while
   any wrong term would be O(1)).  Second derivatives use ``numeric_hessian`` (eps 1e-4 twice:
   ≈ 1e-7 relative; rtol 1e-5) or central differences of an already-verified first derivative.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
import dropcheck.models.functional as fmod
from dropcheck.models.functional import Functional
from dropcheck.testing import assert_close, numeric_hessian, numeric_jacobian
from tests._reference import ACT

RTOL, ATOL = 1e-9, 1e-10
FD_RTOL, FD_ATOL = 1e-6, 1e-8


def close(actual, desired, rtol=RTOL, atol=ATOL):
    """assert_close after broadcasting: axes of size 1 (k, B, n) may broadcast in the protocol,
    and which ones a model keeps depends on its structure (the MLP's linear head keeps fewer)."""
    shape = np.broadcast_shapes(actual.shape, desired.shape)
    assert_close(np.broadcast_to(actual, shape), np.broadcast_to(desired, shape), rtol=rtol,
                 atol=atol)


# ----- 1. an MLP written as stages, against dc.MLP -----
def mlp_as_functional(net: dc.MLP, split_activation: bool = False) -> Functional:
    """The MLP's layers as stages; with ``split_activation`` σ is a stage of its own."""
    act = ACT[net.activation]
    L = net.n_layers
    stages = []
    for layer in range(1, L + 1):
        site = "x" if layer == 1 else f"h{layer - 1}"
        site = site if site in net.site_names else None

        def affine(p, h, layer=layer):
            return h @ p[f"W{layer}"].T + p[f"b{layer}"]

        if layer == L:
            stages.append((site, affine))
        elif split_activation:
            stages += [(site, affine), (None, lambda p, h: act(h))]
        else:
            stages.append((site, lambda p, h, f=affine: act(f(p, h))))
    return Functional(stages, dict(net.params), net.input_dim, loss=net.loss)


@st.composite
def mlp_cases(draw):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(depth + 1)]
    sizes[-1] = draw(st.integers(2, 3))
    act = draw(st.sampled_from(["tanh", "relu", "gelu", "softplus", "sigmoid", "identity"]))
    names = ["x"] + [f"h{i}" for i in range(1, depth)]
    sites = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    seed = draw(st.integers(0, 2**16))
    loss = draw(st.sampled_from(["cross_entropy", "squared"]))
    net = dc.MLP.random(sizes, activation=act, sites=sites, seed=seed, loss=loss)
    fun = mlp_as_functional(net, split_activation=draw(st.booleans()))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, sizes[0]))
    if act == "relu":  # keep pre-activations off the kink, where relu'' is a distribution
        x = x + 0.01
    noise = {s: rng.choice([-1.0, 0.5], size=(2, n, d)) for s, d in net.widths.items()}
    return net, fun, x, noise, rng


@given(mlp_cases())
def test_replicated_mlp_matches_mlp_sweeps(case):
    net, fun, x, noise, rng = case
    assert fun.site_names == net.site_names and fun.widths == net.widths
    assert fun.n_params == net.n_params and fun.n_classes == net.n_classes
    tn, tf = net.trace(x, noise), fun.trace(x, noise)
    close(tf.logits, tn.logits, rtol=RTOL, atol=ATOL)
    close(fun.forward(x, noise), net.forward(x, noise), rtol=RTOL, atol=ATOL)
    for s, v in net.site_values(tn).items():
        close(fun.site_values(tf)[s], v, rtol=RTOL, atol=ATOL)

    n, B = x.shape[0], 2
    vt = {s: rng.standard_normal((3, 1, n, d)) for s, d in net.widths.items()}
    nt = {s: rng.standard_normal((3, B, n, d)) for s, d in net.widths.items()}
    for site_t, noise_t in [(vt, None), (None, nt), (vt, nt)]:
        an, af = net.tangent(tn, site_t, noise_t), fun.tangent(tf, site_t, noise_t)
        close(af.logits, an.logits, rtol=RTOL, atol=ATOL)

    sites = net.site_names
    u = rng.standard_normal((3, B, n, net.n_classes))
    (on, pn), (of, pf) = net.backward(tn, u, sites, True), fun.backward(tf, u, sites, True)
    close(pf, pn, rtol=RTOL, atol=ATOL)
    for s in sites:
        close(of[s], on[s], rtol=RTOL, atol=ATOL)
    nan_, naf = net.noise_adjoint(tn, u, sites), fun.noise_adjoint(tf, u, sites)
    for s in sites:
        close(naf[s], nan_[s], rtol=RTOL, atol=ATOL)

    y = (rng.integers(0, net.n_classes, n) if net.loss.name == "cross_entropy"
         else rng.standard_normal((n, net.n_classes)))
    g = net.loss.grad(tn.logits, y)
    an, af = net.tangent(tn, vt, nt), fun.tangent(tf, vt, nt)
    gd = net.loss.hvp(tn.logits, y, an.logits)
    (on, pn) = net.adjoint_tangent(tn, an, g, gd, sites, True)
    (of, pf) = fun.adjoint_tangent(tf, af, g, gd, sites, True)
    close(pf, pn, rtol=RTOL, atol=ATOL)
    for s in sites:
        close(of[s], on[s], rtol=RTOL, atol=ATOL)


def test_replicated_mlp_exact_expectations():
    """``dc.exact`` runs on a Functional unchanged and gives the MLP's numbers."""
    net = dc.MLP.random([3, 4, 3, 3], activation="tanh", sites=("x", "h2"), seed=3)
    fun = mlp_as_functional(net)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 3)), np.array([2, 0])
    assert_close(dc.exact.explicit_regularizer(fun, x, y, 0.3),
                 dc.exact.explicit_regularizer(net, x, y, 0.3), rtol=RTOL, atol=1e-13)
    assert_close(dc.exact.gradient_noise_cov(fun, x, y, 0.3),
                 dc.exact.gradient_noise_cov(net, x, y, 0.3), rtol=RTOL, atol=1e-12)
    assert_close(dc.exact.expected_gradient(fun, x[0], y[0], {"x": 0.1, "h2": 0.5}),
                 dc.exact.expected_gradient(net, x[0], y[0], {"x": 0.1, "h2": 0.5}),
                 rtol=RTOL, atol=1e-12)


# ----- 2. a non-MLP architecture against central differences -----
D0, D1, DR, C = 3, 4, 3, 3


def layer_norm(p, h):
    mu = anp.mean(h, axis=-1, keepdims=True)
    var = anp.mean((h - mu) ** 2, axis=-1, keepdims=True)
    return (h - mu) / anp.sqrt(var + 1e-3) * p["gain"] + p["shift"]


STAGES = [
    ("x", lambda p, h: anp.tanh(p["temp"] * (h @ p["W1"].T + p["b1"]))),
    ("h1", layer_norm),
    ("ln", lambda p, h: h + anp.tanh(h @ p["Wa"].T) @ p["Wb"].T),  # residual block
    (None, lambda p, h: anp.log1p(anp.exp(h))),  # softplus: a stage without parameters
    ("res", lambda p, h: p["temp"] * (h @ p["Wo"].T + p["bo"])),  # temp tied with stage 0
]


def make_params(seed):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (D1, D0), "b1": (D1,), "gain": (D1,), "shift": (D1,), "Wa": (DR, D1),
              "Wb": (D1, DR), "Wo": (C, D1), "bo": (C,), "temp": (), "unused": (2,)}
    p = {k: 0.7 * rng.standard_normal(s) for k, s in shapes.items()}
    p["temp"] = np.asarray(1.3)
    p["gain"] = 1.0 + 0.2 * p["gain"]
    return p


def chain(params, x_row, noise_row=None, override=None):
    """Logits of one example through STAGES: the oracle (no dropcheck code involved)."""
    noise_row, override = noise_row or {}, override or {}
    h = x_row
    for site, fn in STAGES:
        if site in noise_row:
            h = h * (1.0 + noise_row[site])
        if site in override:
            h = override[site]
        h = fn(params, h)
    return h


def feed(params, x_row, noise_row, site):
    """The value site ``site`` feeds forward, one example."""
    h = x_row
    for s, fn in STAGES:
        if s in noise_row:
            h = h * (1.0 + noise_row[s])
        if s == site:
            return h
        h = fn(params, h)
    raise KeyError(site)


def ce(f, y):
    return np.log(np.sum(np.exp(f - f.max()))) + f.max() - f[y]


@pytest.fixture
def arch():
    params = make_params(5)
    model = Functional(STAGES, params, D0)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, D0))
    y = np.array([1, 2])
    noise = {"h1": rng.choice([-1.0, 1.0], size=(2, 2, D1)),
             "res": rng.choice([-1.0, 0.25], size=(2, 1, D1))}
    return model, params, x, y, noise, rng


def _row(noise, b, i):
    return {s: e[b, min(i, e.shape[1] - 1)] for s, e in noise.items()}


def test_structure_inferred(arch):
    model, params, *_ = arch
    assert model.widths == {"x": D0, "h1": D1, "ln": D1, "res": D1}
    assert model.n_classes == C and model.input_dim == D0
    assert list(model.params) == list(params)
    assert model.n_params == sum(np.size(v) for v in params.values())
    uses = [s.uses for s in model._stages]
    assert uses == [("W1", "b1", "temp"), ("gain", "shift"), ("Wa", "Wb"), (), ("Wo", "bo", "temp")]


def test_jacobian_products_against_central_differences(arch):
    model, params, x, _, noise, rng = arch
    tr = model.trace(x, noise)
    for s, d in model.widths.items():
        v = rng.standard_normal((2, 2, 2, d))
        u = rng.standard_normal((2, 2, 2, C))
        jv = model.tangent(tr, {s: v}).logits
        ut, _ = model.backward(tr, u, sites=(s,))
        for b in range(2):
            for i in range(2):
                nz = _row(noise, b, i)
                J = numeric_jacobian(lambda hv, nz=nz, s=s, i=i: chain(params, x[i], nz, {s: hv}),
                                     feed(params, x[i], nz, s))
                assert_close(jv[:, b, i], v[:, b, i] @ J.T, rtol=FD_RTOL, atol=FD_ATOL)
                assert_close(ut[s][:, b, i], u[:, b, i] @ J, rtol=FD_RTOL, atol=FD_ATOL)


def test_site_hessians_against_central_differences(arch):
    model, params, x, y, noise, _ = arch
    tr = model.trace(x, noise)
    g = model.loss.grad(tr.logits, y)
    for s, d in model.widths.items():
        tan = model.tangent(tr, {s: np.eye(d)[:, None, None, :]})
        out, _ = model.adjoint_tangent(tr, tan, g, model.loss.hvp(tr.logits, y, tan.logits),
                                       sites=(s,))
        for b, i in [(0, 0), (1, 1)]:
            nz = _row(noise, b, i)
            H = numeric_hessian(lambda hv, nz=nz, s=s, i=i: ce(chain(params, x[i], nz, {s: hv}),
                                                               y[i]),
                                feed(params, x[i], nz, s))
            assert_close(out[s][:, b, i], H, rtol=1e-5, atol=1e-6)


def _flat_loss(model, x_row, y_row, nz):
    def f(theta):
        return ce(chain(model.unflatten_params(theta), x_row, nz), y_row)
    return f


@pytest.mark.parametrize("per_parameter", [True, False])
def test_per_example_param_gradients(arch, monkeypatch, per_parameter):
    """Both strategies for per-row parameter products (per parameter, per row) agree."""
    monkeypatch.setattr(fmod, "_per_parameter", lambda *a: per_parameter)
    model, params, x, y, noise, _ = arch
    tr = model.trace(x, noise)
    _, pg = model.backward(tr, model.loss.grad(tr.logits, y)[None], params=True)
    assert pg.shape == (1, 2, 2, model.n_params)
    theta = model.flatten_params()
    for b in range(2):
        for i in range(2):
            ref = numeric_jacobian(_flat_loss(model, x[i], y[i], _row(noise, b, i)), theta)
            assert_close(pg[0, b, i], ref, rtol=FD_RTOL, atol=FD_ATOL)
    # the parameter no stage reads has an exactly zero gradient
    lo, m = model.n_params - 2, 2
    assert list(model.params)[-1] == "unused" and np.all(pg[..., lo : lo + m] == 0.0)


@pytest.mark.parametrize("per_parameter", [True, False])
def test_gradient_tangent_against_central_differences(arch, monkeypatch, per_parameter):
    """``d/dε ∇_W ℓ(F(x + εv, η + ετ))`` from adjoint_tangent (site tangent at the input site,
    noise tangents elsewhere), against central differences of the verified backward."""
    monkeypatch.setattr(fmod, "_per_parameter", lambda *a: per_parameter)
    model, params, x, y, noise, rng = arch
    noise = {"h1": noise["h1"], "res": noise["res"]}  # no noise at "x": its tangent moves x
    v = rng.standard_normal((2, 1, 2, D0))
    tau = {"h1": rng.standard_normal((2, 2, 2, D1)), "ln": rng.standard_normal((2, 1, 2, D1))}
    tr = model.trace(x, noise)
    tan = model.tangent(tr, {"x": v}, tau)
    g = model.loss.grad(tr.logits, y)
    _, pd = model.adjoint_tangent(tr, tan, g, model.loss.hvp(tr.logits, y, tan.logits),
                                  params=True)
    assert pd.shape == (2, 2, 2, model.n_params)
    for k in range(2):
        def grads(eps, k=k):
            nz = dict(noise, ln=np.zeros((1, 1, D1)))
            nz = {s: nz[s] + eps[0] * tau[s][k] if s in tau else nz[s] for s in nz}
            t = model.trace(x + eps[0] * v[k, 0], nz)
            return model.backward(t, model.loss.grad(t.logits, y)[None], params=True)[1][0]

        ref = numeric_jacobian(grads, np.zeros(1))[..., 0]
        assert_close(pd[k], ref, rtol=FD_RTOL, atol=FD_ATOL)


def test_direction_dependent_cotangent(arch):
    """``g`` with a direction axis ``(k, B, n, c)``: one reverse-tangent per direction."""
    model, params, x, y, noise, rng = arch
    tr = model.trace(x, noise)
    tau = {"h1": rng.standard_normal((3, 2, 2, D1))}
    tan = model.tangent(tr, noise_tangents=tau)
    g = rng.standard_normal((3, 2, 2, C))
    gd = rng.standard_normal((3, 2, 2, C))
    out, pd = model.adjoint_tangent(tr, tan, g, gd, sites=("x", "ln"), params=True)
    for k in range(3):
        tk = model.tangent(tr, noise_tangents={"h1": tau["h1"][k : k + 1]})
        ok, pk = model.adjoint_tangent(tr, tk, g[k], gd[k : k + 1], sites=("x", "ln"),
                                       params=True)
        assert_close(pd[k : k + 1], pk, rtol=1e-12, atol=1e-14)
        for s in ("x", "ln"):
            assert_close(out[s][k : k + 1], ok[s], rtol=1e-12, atol=1e-14)


def test_operations_without_forward_mode_rules():
    """Exact GELU through ``scipy.special.erf`` (autograd has no forward-mode rule for it):
    tangents and site Hessians need reverse-mode rules only."""
    from autograd.scipy.special import erf

    rng = np.random.default_rng(2)
    params = {"W1": rng.standard_normal((3, 2)), "W2": rng.standard_normal((2, 3))}
    stages = [("x", lambda p, h: h @ p["W1"].T),
              ("z1", lambda p, h: 0.5 * h * (1 + erf(h / np.sqrt(2))) @ p["W2"].T)]
    model = Functional(stages, params, 2)
    x, y = rng.standard_normal((1, 2)), np.array([1])
    tr = model.trace(x)
    tan = model.tangent(tr, {"z1": np.eye(3)[:, None, None, :]})
    out, _ = model.adjoint_tangent(tr, tan, model.loss.grad(tr.logits, y),
                                   model.loss.hvp(tr.logits, y, tan.logits), sites=("z1",))

    def logits(z):
        return stages[1][1](params, z)

    z = x[0] @ params["W1"].T
    assert_close(tan.logits[:, 0, 0].T, numeric_jacobian(logits, z), rtol=FD_RTOL, atol=FD_ATOL)
    assert_close(out["z1"][:, 0, 0], numeric_hessian(lambda z: ce(logits(z), 1), z),
                 rtol=1e-5, atol=1e-6)


def test_unvectorized_stages_give_the_same_numbers(arch):
    """``vectorized=False``: stages see one example ``(d,)`` at a time (here they'd broadcast
    anyway, so the two models must agree to rounding)."""
    model, params, x, y, noise, rng = arch
    slow = Functional(STAGES, params, D0, vectorized=False)
    tm, ts = model.trace(x, noise), slow.trace(x, noise)
    assert_close(ts.logits, tm.logits, rtol=1e-13, atol=1e-14)
    tau = {"h1": rng.standard_normal((2, 1, 2, D1))}
    am, as_ = model.tangent(tm, noise_tangents=tau), slow.tangent(ts, noise_tangents=tau)
    assert_close(as_.logits, am.logits, rtol=1e-12, atol=1e-14)
    g = model.loss.grad(tm.logits, y)
    gd = model.loss.hvp(tm.logits, y, am.logits)
    om, pm = model.adjoint_tangent(tm, am, g, gd, sites=("x",), params=True)
    os_, ps = slow.adjoint_tangent(ts, as_, g, gd, sites=("x",), params=True)
    assert_close(ps, pm, rtol=1e-12, atol=1e-14)
    assert_close(os_["x"], om["x"], rtol=1e-12, atol=1e-14)


def test_with_params_and_float32(arch):
    model, params, x, y, noise, _ = arch
    p2 = {k: 0.5 * v for k, v in params.items()}
    m2 = model.with_params(p2)
    assert m2.site_names == model.site_names and m2.params["W1"] is p2["W1"]
    assert_close(m2.forward(x[0]), chain(p2, x[0]), rtol=1e-13, atol=1e-14)
    assert_close(model.forward(x[0]), chain(params, x[0]), rtol=1e-13, atol=1e-14)
    m32 = Functional(STAGES, {k: v.astype(np.float32) for k, v in params.items()}, D0)
    x32 = x.astype(np.float32)
    assert m32.dtype == np.float32 and m32.forward(x32).dtype == np.float32
    _, pg = m32.backward(m32.trace(x32), np.ones((1, 1, 2, C), np.float32), params=True)
    assert pg.dtype == np.float32


def test_repr_and_stages(arch):
    model = arch[0]
    assert "Functional(input_dim=3" in repr(model) and "layer_norm" in repr(model)
    assert model.stages[1] == ("h1", layer_norm)


# ----- bad input -----
def _ok_stages():
    return [("x", lambda p, h: h @ p["W"].T)]


P_OK = {"W": np.ones((2, 3))}


@pytest.mark.parametrize(
    ("stages", "params", "err", "match"),
    [
        ([], P_OK, ValueError, "non-empty list"),
        ([("x",)], P_OK, ValueError, "must be a pair"),
        ([(3, lambda p, h: h)], P_OK, TypeError, "non-empty str or None"),
        ([("x", "not callable")], P_OK, TypeError, "must be callable"),
        ([("x", lambda p, h: h), ("x", lambda p, h: h @ p["W"].T)], {"W": np.ones((2, 3))},
         ValueError, "already used"),
        ([(None, lambda p, h: h @ p["W"].T)], P_OK, ValueError, "no stage names a dropout site"),
        (_ok_stages(), {}, ValueError, "non-empty dict"),
        (_ok_stages(), {"W": np.ones((2, 3), dtype=int)}, TypeError, "real floating"),
        (_ok_stages(), {"W": np.full((2, 3), np.nan)}, ValueError, "must be finite"),
        (_ok_stages(), {"W": np.ones((2, 3)), "b": np.ones(2, np.float32)}, TypeError,
         "share one dtype"),
        # batch norm mixes examples: not row-wise
        ([("x", lambda p, h: (h - anp.mean(h, axis=0)) @ p["W"].T)], P_OK, ValueError,
         "is not row-wise"),
        # written for (n, d) only: fails on the probe, with the stage named
        ([("x", lambda p, h: anp.dot(p["W"], h.T).T)], P_OK,
         ValueError, r"stages\[0\] \(site 'x', fn <lambda>\) failed on a probe input"),
        ([("x", lambda p, h: anp.sum(h, axis=-1))], P_OK, ValueError, "keeping the leading"),
        ([("x", lambda p, h: anp.ones_like(h) @ p["W"].T)], P_OK, ValueError,
         "no path from the stage input"),
    ],
)
def test_construction_errors(stages, params, err, match):
    with pytest.raises(err, match=match):
        Functional(stages, params, 3)


def test_other_argument_errors():
    with pytest.raises(ValueError, match="input_dim must be an integer >= 1"):
        Functional(_ok_stages(), P_OK, 0)
    with pytest.raises(ValueError, match="loss must be one of"):
        Functional(_ok_stages(), P_OK, 3, loss="hinge")
    with pytest.raises(TypeError, match="vectorized must be True or False"):
        Functional(_ok_stages(), P_OK, 3, vectorized="yes")


def test_non_numpy_arrays_are_refused():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"params\['W'\] is a array_api_strict.*CPU"):
        Functional(_ok_stages(), {"W": strict.ones((2, 3))}, 3)
    model = Functional(_ok_stages(), P_OK, 3)
    with pytest.raises(TypeError, match="x is a array_api_strict.*to_numpy"):
        model.forward(strict.ones((2, 3)))
    with pytest.raises(TypeError, match=r"noise\['x'\] is a array_api_strict"):
        model.trace(np.ones((2, 3)), {"x": strict.zeros((1, 2, 3))})
    tr = model.trace(np.ones((2, 3)))
    with pytest.raises(TypeError, match="cot is a array_api_strict"):
        model.backward(tr, strict.ones((1, 1, 2, 2)), params=True)


def test_call_errors(arch):
    model, params, x, y, noise, _ = arch
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        model.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="x must be finite"):
        model.forward(np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match="noise names site 'h9'"):
        model.trace(x, {"h9": np.zeros((1, 2, 4))})
    with pytest.raises(ValueError, match=r"noise\['h1'\] must have shape"):
        model.trace(x, {"h1": np.zeros((1, 2, 5))})
    with pytest.raises(ValueError, match=r"noise\['h1'\] must be finite"):
        model.trace(x, {"h1": np.full((1, 2, 4), np.nan)})
    tr = model.trace(x, noise)
    with pytest.raises(ValueError, match=r"\['h9'\] are not dropout sites"):
        model.tangent(tr, {"h9": np.zeros((1, 1, 2, 4))})
    with pytest.raises(ValueError, match=r"site_tangents\['h1'\] must have shape \(k, B, n, 4\)"):
        model.tangent(tr, {"h1": np.zeros((1, 2, 4))})
    with pytest.raises(ValueError, match=r"noise_tangents\['h1'\] must have shape"):
        model.tangent(tr, noise_tangents={"h1": np.zeros((1, 3, 2, 4))})
    with pytest.raises(ValueError, match=r"cot must have shape \(k, B, n, 3\)"):
        model.backward(tr, np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"are not dropout sites"):
        model.backward(tr, np.zeros((1, 2, 2, 3)), sites=("h2",))
    tan = model.tangent(tr, {"h1": np.zeros((1, 1, 2, 4))})
    with pytest.raises(ValueError, match=r"g_dot must have shape"):
        model.adjoint_tangent(tr, tan, np.zeros((2, 2, 3)), np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="must have the keys"):
        model.with_params({"W1": params["W1"]})
    with pytest.raises(ValueError, match=r"params\['W1'\] must have shape \(4, 3\)"):
        model.with_params({**params, "W1": np.ones((3, 3))})
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        dc.exact.expected_loss(model, x, np.array([0, 1, 2]), 0.1, sites="x")
