"""dropcheck.explicit against autograd on the same nets, exact identities, and estimators.

Tolerances.  The oracle (``tests/_reference.py``) and the library evaluate the same float64
expressions in different orders; with O(1) weights and depth ≤ 3 the discrepancy is a few ulps
times the condition of the chain: below 1e-9 relative, with atol 1e-12 for entries that vanish
(as in ``tests/test_models.py``).  Identities between two routes of the library (JVP vs VJP,
Taylor vs Gauss–Newton at the decoder, exact expectations over labels) are rounding only:
1e-12 relative.
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck import explicit as ex
from dropcheck.testing import assert_close
from tests._reference import ce, mlp_logits, site_input

RTOL, ATOL = 1e-9, 1e-12
EXACT = 1e-12  # two library routes to one quantity: float64 rounding only
ACTS = ["tanh", "relu", "gelu", "softplus", "sigmoid", "identity"]

# autograd's tanh rule overflows cosh for |x| > 710 and correctly returns 0 (see test_models)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cosh:RuntimeWarning")


def sq(f, y):
    return 0.5 * anp.sum((f - y) ** 2)


@st.composite
def nets(draw, losses=("cross_entropy", "squared")):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 5)) for _ in range(depth + 1)]
    sizes[-1] = draw(st.integers(2, 4))
    act = draw(st.sampled_from(ACTS))
    names = ["x"] + [f"h{i}" for i in range(1, depth)]
    sites = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    scale = draw(st.sampled_from([0.3, 1.0, 2.0]))
    loss = draw(st.sampled_from(losses))
    seed = draw(st.integers(0, 2**16))
    net = dc.MLP.random(sizes, activation=act, sites=sites, seed=seed, scale=scale, loss=loss)
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, sizes[0]))
    if act == "relu":  # keep pre-activations off the kink, where relu'' is a distribution
        x = x + 0.01
    y = (rng.integers(0, sizes[-1], size=n) if loss == "cross_entropy"
         else rng.standard_normal((n, sizes[-1])))
    return net, x, y


def _theta(net):
    return [np.asarray(v) for v in net.params.values()]


def _loss_fn(net):
    return ce if net.loss.name == "cross_entropy" else sq


def _oracle_site(th, net, x, y, s, t=None):
    """Per example: (h² · diag D²_h(ℓ∘F), h² · diag JᵀHJ, h² · diag JᵀJ, h² · J_loss²)."""
    t = th if t is None else t
    loss = _loss_fn(net)
    h = site_input(t, x, net.activation, s)

    def logits(v):
        return mlp_logits(t, x, net.activation, site_override={s: v})

    J = autograd.jacobian(logits)(h)
    H_out = autograd.hessian(lambda f: loss(f, y))(logits(h))
    D2 = autograd.hessian(lambda v: loss(logits(v), y))(h)
    jl = autograd.grad(lambda v: loss(logits(v), y))(h)
    h2 = h * h
    return (anp.sum(anp.diag(D2) * h2), anp.sum(anp.diag(anp.dot(J.T, anp.dot(H_out, J))) * h2),
            anp.sum(anp.diag(anp.dot(J.T, J)) * h2), anp.sum(jl * jl * h2))


def _oracle(net, x, y, which, t=None):
    th = _theta(net)
    return np.array([sum(_oracle_site(th, net, x[i], y[i], s, t)[which] for s in net.site_names)
                     for i in range(x.shape[0])])


# ----- against autograd -----
@given(nets(), st.sampled_from([0.1, 0.5, 0.8]))
def test_taylor_matches_autograd_hessian_diagonal(case, q):
    net, x, y = case
    assert_close(ex.taylor(net, x, y, q), ex.strength(q) * _oracle(net, x, y, 0),
                 rtol=RTOL, atol=ATOL)


@given(nets())
def test_r_approx_and_variants_match_autograd_on_both_routes(case):
    net, x, y = case
    for which, hessian in ((1, "loss"), (2, "identity"), (3, "loss_jacobian")):
        ref = _oracle(net, x, y, which)
        for route in ("jvp", "vjp", "auto"):
            assert_close(ex.r_approx(net, x, y, hessian=hessian, route=route), ref,
                         rtol=RTOL, atol=ATOL, err_msg=f"{hessian}/{route}")


@given(nets())
def test_hessian_split_adds_up_and_its_gauss_newton_part_is_r_approx(case):
    net, x, y = case
    q = {s: 0.2 + 0.1 * i for i, s in enumerate(net.site_names)}
    sp = ex.hessian_split(net, x, y, q)
    assert set(sp.gauss_newton) == set(sp.remainder) == set(net.site_names)
    assert_close(sp.total, ex.taylor(net, x, y, q), rtol=EXACT, atol=ATOL)
    per_site = ex.r_approx(net, x, y, per_site=True)
    for s in net.site_names:
        assert_close(sp.gauss_newton[s], ex.strength(q[s]) * per_site[s], rtol=EXACT, atol=ATOL)


@given(nets())
def test_noise_hessian_matches_autograd_with_cross_blocks(case):
    net, x, y = case
    th = _theta(net)
    order = net.site_names
    widths = [net.widths[s] for s in order]
    cuts = np.cumsum([0, *widths])
    N = np.asarray(ex.noise_hessian(net, x, y))
    loss = _loss_fn(net)
    for i in range(x.shape[0]):
        def f(eta, i=i):
            noise = {s: eta[cuts[k]:cuts[k + 1]] for k, s in enumerate(order)}
            return loss(mlp_logits(th, x[i], net.activation, noise), y[i])

        assert_close(N[i], autograd.hessian(f)(np.zeros(cuts[-1])), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("hessian", ["loss", "identity", "loss_jacobian"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
@pytest.mark.parametrize("act", ["tanh", "gelu", "relu"])
def test_r_approx_grad_matches_autograd(hessian, loss, act):
    net = dc.MLP.random([3, 4, 3, 3], act, sites=("x", "h1", "h2"), seed=7, loss=loss)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3)) + 0.01
    y = rng.integers(0, 3, 2) if loss == "cross_entropy" else rng.standard_normal((2, 3))
    which = {"loss": 1, "identity": 2, "loss_jacobian": 3}[hessian]

    def r_mean(t):
        th = _theta(net)
        return sum(_oracle_site(th, net, x[i], y[i], s, t)[which]
                   for i in range(2) for s in net.site_names) / 2

    ref = np.concatenate([g.ravel() for g in autograd.grad(r_mean)(_theta(net))])
    assert_close(ex.r_approx_grad(net, x, y, hessian=hessian), ref, rtol=RTOL, atol=ATOL)
    per = ex.r_approx_grad(net, x, y, hessian=hessian, reduce=False)
    assert per.shape == (2, net.n_params)
    assert_close(np.mean(per, axis=0), ref, rtol=RTOL, atol=ATOL)


def test_loss_hessian_form_grad_matches_autograd():
    rng = np.random.default_rng(3)
    f, t = rng.standard_normal((2, 5)), rng.standard_normal((3, 2, 5))
    ce_ = dc.losses.CrossEntropy()

    def form(v, tt):
        p = anp.exp(v - anp.max(v))
        p = p / anp.sum(p)
        return anp.sum(p * tt * tt) - anp.sum(p * tt) ** 2

    ref = np.stack([[autograd.grad(form)(f[i], t[k, i]) for i in range(2)] for k in range(3)])
    assert_close(ce_.hessian_form_grad(f, None, t), ref, rtol=RTOL, atol=ATOL)
    assert_close(dc.losses.Squared().hessian_form_grad(f, None, t), np.zeros_like(t), rtol=0)


# ----- exact identities -----
@pytest.mark.parametrize("act", ACTS)
def test_taylor_equals_strength_times_r_approx_at_the_decoder_site(act):
    """E2: F_i affine in h_i, so the model-Hessian term is exactly zero."""
    for loss, seed in (("cross_entropy", 0), ("squared", 1)):
        net = dc.MLP.random([3, 4, 5, 3], act, sites="h2", seed=seed, loss=loss)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((4, 3))
        y = rng.integers(0, 3, 4) if loss == "cross_entropy" else rng.standard_normal((4, 3))
        q = 0.35
        assert_close(ex.taylor(net, x, y, q), ex.strength(q) * ex.r_approx(net, x, y),
                     rtol=EXACT, atol=ATOL)
        assert_close(ex.hessian_split(net, x, y, q).total_remainder, np.zeros(4), rtol=0,
                     atol=1e-15)
    lin = dc.Linear.random(4, 3, seed=2)
    x, y = np.random.default_rng(2).standard_normal((3, 4)), np.array([0, 2, 1])
    assert_close(ex.taylor(lin, x, y, 0.5), 0.5 * ex.r_approx(lin, x, y), rtol=EXACT)


def test_taylor_remainder_is_nonzero_where_a_tanh_follows():
    net = dc.MLP.random([3, 4, 5, 3], "tanh", sites="h1", seed=0)
    x, y = np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 2, 0])
    rem = np.asarray(ex.hessian_split(net, x, y, 0.3).total_remainder)
    assert np.all(np.abs(rem) > 1e-6)  # order-one model-Hessian term at random init


def test_r_hat_averaged_over_labels_is_r_approx_and_at_y_is_r_tilde():
    """E5 exactly: Σ_ŷ p_ŷ R̂(ŷ) = R_approx; R̂(y) = R̃_approx (5.1)."""
    net = dc.MLP.random([4, 5, 5, 6], "gelu", sites=("x", "h1", "h2"), seed=4, scale=2.0)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 6, 5)
    p = np.asarray(dc.losses.softmax(net.forward(x)))
    labels = np.broadcast_to(np.arange(6)[:, None], (6, 5))
    assert_close(np.sum(p.T * np.asarray(ex.r_hat(net, x, labels)), axis=0),
                 ex.r_approx(net, x, y), rtol=EXACT)
    assert_close(ex.r_hat(net, x, y), ex.r_approx(net, x, y, hessian="loss_jacobian"),
                 rtol=EXACT)


def test_small_q_limit_is_the_limit_of_r_drop_over_q():
    net = dc.MLP.random([3, 4, 4, 3], "tanh", sites=("h1", "h2"), seed=5)
    x, y = np.random.default_rng(5).standard_normal((3, 3)), np.array([2, 0, 1])
    limit = np.asarray(ex.small_q_limit(net, x, y))
    # R_drop/q − limit = O(q): at q = 1e-5 the relative gap is ~1e-5·(second-order/first), and
    # the enumeration's rounding (eps·ℓ/q ≈ 3e-11) is far below; 1e-3 is a loose bound on both
    assert_close(np.asarray(dc.exact.explicit_regularizer(net, x, y, 1e-5)) / 1e-5, limit,
                 rtol=1e-3)
    # and it is not R_taylor/q: a dropped unit is never a small perturbation
    taylor_limit = np.asarray(ex.taylor(net, x, y, 0.5))  # strength(½) = ½ = lim strength(q)/q
    assert np.abs(taylor_limit - limit).max() > 1e-3 * np.abs(limit).max()


def test_strength_is_the_constant_of_4_2():
    assert ex.strength(0.5) == 0.5
    assert ex.strength(0.0) == 0.0
    assert ex.strength(0.2) == pytest.approx(0.2 / 1.6, rel=1e-15)


# ----- estimators -----
def _unbiased_case():
    net = dc.MLP.random([4, 6, 5, 5], "tanh", sites=("x", "h1", "h2"), seed=11, scale=1.5)
    rng = np.random.default_rng(11)
    return net, rng.standard_normal((4, 4)), rng.integers(0, 5, 4)


@pytest.mark.parametrize("kind", ["sampled", "probe_full", "probe_sampled"])
def test_estimators_are_unbiased_within_their_standard_error(kind):
    """Mean of many seeded draws within 5 standard errors of the exact R_approx.

    With 20000 draws the mean is Gaussian to good accuracy; P(|z| > 5) ≈ 5.7e-7 per example,
    so over the 4 examples × 3 estimators the false-alarm rate is below 1e-5 (and the seeds
    make the test deterministic).
    """
    net, x, y = _unbiased_case()
    exact = np.asarray(ex.r_approx(net, x, y))
    rng = np.random.default_rng(2026)
    if kind == "sampled":
        est = ex.r_approx_sampled(net, x, y, samples=20000, rng=rng)
    else:
        est = ex.r_approx_probe(net, x, y, samples=20000, rng=rng, labels=kind.split("_")[1])
    value, se = np.asarray(est.value), np.asarray(est.stderr)
    assert est.samples == 20000 and value.shape == se.shape == (4,)
    assert np.all(se > 0)
    z = (value - exact) / se
    assert np.all(np.abs(z) < 5), z


def test_single_draw_has_nan_standard_error_and_single_example_is_scalar():
    net, x, y = _unbiased_case()
    est = ex.r_approx_sampled(net, x, y, samples=1, rng=np.random.default_rng(0))
    assert np.all(np.isnan(np.asarray(est.stderr)))
    one = ex.r_approx_probe(net, x[0], y[0], samples=3, rng=np.random.default_rng(0), labels="full")
    assert np.asarray(one.value).shape == ()
    assert np.asarray(ex.taylor(net, x[0], y[0], 0.3)).shape == ()
    assert np.asarray(ex.r_approx(net, x[0], y[0])).shape == ()
    assert ex.r_approx_grad(net, x[0], y[0]).shape == (net.n_params,)
    assert np.asarray(ex.r_hat(net, x[0], np.array([0, 1, 2]))).shape == (3,)
    assert np.asarray(ex.noise_hessian(net, x[0], y[0])).shape == (15, 15)


def test_compare_estimators_reports_costs_and_variances():
    net, x, y = _unbiased_case()
    comp = ex.compare_estimators(net, x, y, rng=np.random.default_rng(0), samples=64)
    assert set(comp.rows) == {"exact", "sampled", "probe_full", "probe_sampled"}
    assert comp.rows["exact"].variance == 0.0
    # exact: x (4 units) and h2 (5 units, = c) by one reverse sweep of c = 5 columns, h1 too
    assert comp.rows["exact"].products == 4 + 5
    assert comp.rel_error("exact", 1) < 1e-15
    for k in ("sampled", "probe_full", "probe_sampled"):
        r = comp.rows[k]
        assert r.products == 1 and r.variance > 0 and r.seconds > 0
        assert r.draws.shape == (64, 4)
        assert r.variance_per_product == r.variance
        # rel_error against its definition evaluated by hand on the draws (sums of 64 terms)
        d, R = np.asarray(r.draws), np.asarray(comp.exact)
        for m in (1, 8):
            means = d[: (64 // m) * m].reshape(64 // m, m, -1).mean(1)
            want = np.sqrt(np.mean(((means - R) ** 2).sum(-1) / (R**2).sum()))
            assert comp.rel_error(k, m) == pytest.approx(want, rel=1e-12)
    # the sampled-label variance against the exact one, Σ_n Var_n / Σ_n R_n², from every label
    # (Var_n = Σ_ŷ p_ŷ R̂(ŷ)² − R_n²): an estimate from 64 draws has relative standard error
    # ≈ sqrt(2/63)·(kurtosis factor) ≈ 0.2–0.3 here; rel = 0.75 is ≥ 2.5 of them
    p = np.asarray(dc.losses.softmax(net.forward(x)))
    c = p.shape[-1]
    labels = np.broadcast_to(np.arange(c)[:, None], (c, x.shape[0]))
    r_hat = np.asarray(ex.r_hat(net, x, labels))  # (c, n)
    R = np.asarray(comp.exact)
    var = (p.T * r_hat**2).sum(0) - R**2
    assert comp.rows["sampled"].variance == pytest.approx(var.sum() / (R**2).sum(), rel=0.75)


def test_route_choice_and_sites_subset():
    net = dc.MLP.random([3, 2, 8, 4], "tanh", sites=("h1", "h2"), seed=0)
    assert ex.route_for(net, "h1") == "jvp" and ex.route_for(net, "h2") == "vjp"
    assert ex.route_for(net, "h2", "loss_jacobian") == "vjp"
    x, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([1, 3])
    per = ex.r_approx(net, x, y, per_site=True)
    assert_close(ex.r_approx(net, x, y, sites="h2"), per["h2"], rtol=EXACT)
    assert_close(ex.r_approx(net, x, y), per["h1"] + per["h2"], rtol=EXACT)


# ----- bad input -----
def test_bad_input_errors_name_the_argument():
    net, x, y = _unbiased_case()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="samples"):
        ex.r_approx_sampled(net, x, y, samples=0, rng=rng)
    with pytest.raises(ValueError, match="samples"):
        ex.r_approx_probe(net, x, y, samples=0, rng=rng)
    with pytest.raises(TypeError, match="samples"):
        ex.r_approx_sampled(net, x, y, samples=2.5, rng=rng)
    with pytest.raises(ValueError, match="sites.*'h9'"):
        ex.taylor(net, x, y, 0.3, sites="h9")
    with pytest.raises(ValueError, match="sites"):
        ex.r_approx(net, x, y, sites=["x", "nope"])
    with pytest.raises(ValueError, match="hessian"):
        ex.r_approx(net, x, y, hessian="gauss")
    with pytest.raises(ValueError, match="hessian"):
        ex.r_approx_grad(net, x, y, hessian="Identity")
    with pytest.raises(ValueError, match="route"):
        ex.r_approx(net, x, y, route="forward")
    with pytest.raises(ValueError, match="labels"):
        ex.r_approx_probe(net, x, y, samples=2, rng=rng, labels="true")
    with pytest.raises(ValueError, match="q"):
        ex.taylor(net, x, y, 1.0)
    with pytest.raises(ValueError, match="labels"):
        ex.r_hat(net, x, np.array([0, 9, 0, 0]))
    sq_net = dc.MLP.random([4, 3, 2], "tanh", seed=0, loss="squared")
    xs, ys = np.ones((2, 4)), np.zeros((2, 2))
    for call in (lambda: ex.r_approx_sampled(sq_net, xs, ys, samples=4, rng=rng),
                 lambda: ex.r_approx_probe(sq_net, xs, ys, samples=4, rng=rng, labels="sampled"),
                 lambda: ex.r_hat(sq_net, xs, np.array([0, 1]))):
        with pytest.raises(ValueError, match="cross-entropy"):
            call()
    # the full-Hessian probe needs no label distribution
    assert np.asarray(ex.r_approx_probe(sq_net, xs, ys, samples=4, rng=rng,
                                        labels="full").value).shape == (2,)


# ----- backends -----
def test_explicit_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    ref = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
    ws = [xps.asarray(np.asarray(ref.params[f"W{i}"])) for i in (1, 2)]
    bs = [xps.asarray(np.asarray(ref.params[f"b{i}"])) for i in (1, 2)]
    net = dc.MLP(ws, bs, "tanh", ("x", "h1"))
    x, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([0, 2])
    xb, yb = xps.asarray(x), xps.asarray(y)

    def check(a, b):
        assert dc.backend.namespace(a) is dc.backend.namespace(xb)
        assert_close(dc.backend.to_numpy(a), np.asarray(b), rtol=1e-13, atol=1e-15,
                     check_namespace=False)

    check(ex.taylor(net, xb, yb, 0.3), ex.taylor(ref, x, y, 0.3))
    for route in ("jvp", "vjp"):
        check(ex.r_approx(net, xb, yb, route=route), ex.r_approx(ref, x, y, route=route))
    check(ex.r_approx_grad(net, xb, yb), ex.r_approx_grad(ref, x, y))
    check(ex.small_q_limit(net, xb, yb), ex.small_q_limit(ref, x, y))
    check(ex.noise_hessian(net, xb, yb), ex.noise_hessian(ref, x, y))
    for fn in (lambda m, a, b: ex.r_approx_sampled(m, a, b, samples=5,
                                                   rng=np.random.default_rng(1)),
               lambda m, a, b: ex.r_approx_probe(m, a, b, samples=5, rng=np.random.default_rng(1))):
        got, want = fn(net, xb, yb), fn(ref, x, y)  # same generator stream: same draws
        check(got.value, want.value)
        check(got.stderr, want.stderr)


# ----- a sequence model on the same protocol -----
def test_lstm_with_locked_masks():
    """The LSTM (logits (B, n, T, V), loss summed over tokens, masks shared by all steps).

    Everything goes through noise tangents and noise_adjoint, so the cross-time terms come from
    the model: both routes agree (the vjp route needs one factor column per token), R_approx
    matches the factor route (r_approx_factor), Taylor = Gauss–Newton at the decoder site "out",
    the expectation over per-token labels is exact (V^T label sequences), and the gradient
    matches central differences (eps = 1e-6: truncation ~1e-12, rounding ~1e-10 relative).
    """
    lstm = pytest.importorskip("dropcheck.models.lstm")
    V, T = 3, 2
    m = lstm.LSTM.random(V, 3, 3, 2, seed=3, scale=2.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (2, T)), rng.integers(0, V, (2, T))
    exact = np.asarray(ex.r_approx(m, x, y))
    assert_close(exact, np.asarray(ex.r_approx_factor(m, x, y)), rtol=1e-10)
    for hessian in ("loss", "identity", "loss_jacobian"):
        assert_close(ex.r_approx(m, x, y, hessian=hessian, route="vjp"),
                     ex.r_approx(m, x, y, hessian=hessian, route="jvp"), rtol=EXACT, atol=1e-18)
    q = 0.3
    assert_close(ex.taylor(m, x, y, q, sites="out"),
                 ex.strength(q) * ex.r_approx(m, x, y, sites="out"), rtol=EXACT)
    f = np.asarray(m.forward(x))
    p = np.exp(f - f.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)  # (n, T, V)
    seqs = np.array(np.meshgrid(*[np.arange(V)] * T, indexing="ij")).reshape(T, -1).T
    labels = np.broadcast_to(seqs[:, None, :], (len(seqs), 2, T))
    weights = np.prod(np.take_along_axis(p[None], labels[..., None], -1)[..., 0], axis=-1)
    assert_close((weights * np.asarray(ex.r_hat(m, x, labels))).sum(0), exact, rtol=EXACT)
    grad = np.asarray(ex.r_approx_grad(m, x, y))
    flat = np.asarray(m.flatten_params())
    for i in np.random.default_rng(1).choice(flat.size, 6, replace=False):
        hi, lo = flat.copy(), flat.copy()
        hi[i] += 1e-6
        lo[i] -= 1e-6
        fd = (np.mean(ex.r_approx(m.with_params(m.unflatten_params(hi)), x, y))
              - np.mean(ex.r_approx(m.with_params(m.unflatten_params(lo)), x, y))) / 2e-6
        assert abs(grad[i] - fd) <= 1e-7 * np.abs(grad).max()
    with pytest.raises(ValueError, match="mask='per_step'"):
        ex.r_approx(m.with_mask("per_step"), x, y)
