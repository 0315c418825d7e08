"""Tests of dropcheck.implicit (Sec. 3, 3.1, 4.2; Alg. 1, 2, 4) and dropcheck.covariance.

Oracles that share no code with the library: autograd (second derivatives of the loss through
an independent MLP, ``tests/_reference.py``), plain loops over all masks / sign vectors
(``dropcheck.testing.brute_force_expectation``, ``itertools``), and the exact enumeration of
``dropcheck.exact`` for the sampled estimators.

Sampled checks (D1–D3, I2, ξ_drop, Rademacher) project the draws on r = 3 fixed random
directions and compare the sample covariance (and mean) with the exact one entry by entry as
z-scores ``(estimate − exact)/stderr``; they pass when every |z| ≤ 5.  Under the central limit
theorem (N = 3000–4000 draws) each entry exceeds 5 with probability 5.7e-7; a check has at most
6 distinct covariance entries plus 3 mean entries, so its false-alarm rate is ≤ 9 × 5.7e-7 ≈
5e-6 (a little more for the heavier tails of products of Bernoulli noise at this N, still
≤ 1e-4), and the seeds are fixed, so the suite is deterministic.  A bug such as a wrong scale
(√2, 1/k) moves the covariance by ≥ 30 %, i.e. by ≥ 15 standard errors at this N.
"""

import itertools
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
import dropcheck.covariance as cv
import dropcheck.implicit as im
from dropcheck.backend import namespace, to_numpy
from dropcheck.testing import assert_close, brute_force_expectation
from tests._reference import ce, mlp_logits, site_input

# autograd and the hand-derived forward-over-reverse sweep evaluate the same float64
# expressions in different orders; with O(1) weights and depth ≤ 3 they agree to a few ulps
# times the chain's condition, far below 1e-9 relative (atol for entries that are exactly 0).
RTOL, ATOL = 1e-9, 1e-11
# Exact sums over ≤ 2^6 masks / sign vectors of O(1) outer products, summed in a different
# order than the batched sweep: ≤ 2^6·2^-53 ≈ 1e-14 relative; 1e-10 leaves a wide margin.
RTOL_SUM = 1e-10
ZMAX = 5.0

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cosh:RuntimeWarning")


def _theta(net):
    return [np.asarray(v) for v in net.params.values()]


def _flat(grads):
    return np.concatenate([np.ravel(g) for g in grads])


def _xi_ref(net, x, y, eta):
    """ξ_approx per example by autograd: ∇_θ of d/dε ℓ(F_θ(x, εη)) at ε = 0 (4.5)/(4.6)."""
    th = _theta(net)
    out = []
    for i in range(x.shape[0]):
        def dloss(t, i=i):
            return autograd.grad(lambda e: ce(mlp_logits(
                t, x[i], net.activation, {s: e * v[i] for s, v in eta.items()}), y[i]))(0.0)

        out.append(_flat(autograd.grad(dloss)(th)))
    return np.stack(out)


@st.composite
def nets(draw, max_bits=8):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(depth + 1)]
    sizes[-1] = draw(st.integers(2, 4))
    act = draw(st.sampled_from(["tanh", "relu", "gelu", "softplus", "sigmoid", "identity"]))
    names = ["x"] + [f"h{i}" for i in range(1, depth)]
    sites = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    bits = sum(sizes[names.index(s)] for s in sites)
    if bits > max_bits:
        sites = sites[:1]
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.3, 1.0, 2.0]))
    net = dc.MLP.random(sizes, activation=act, sites=sites, seed=seed, scale=scale)
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 3))
    x = rng.standard_normal((n, sizes[0]))
    if act == "relu":  # keep pre-activations off the kink, where relu'' is a distribution
        x = x + 0.01
    y = rng.integers(0, sizes[-1], size=n)
    return net, x, y, rng


qs = st.sampled_from([0.05, 0.3, 0.5, 0.8])


# ---------------------------------------------------------------- ξ_approx against autograd
@given(nets(), qs, st.sampled_from(["bernoulli", "rademacher"]))
def test_xi_approx_matches_autograd_second_derivatives(case, q, kind):
    net, x, y, rng = case
    sampler = dc.noise.sample_eta if kind == "bernoulli" else dc.noise.sample_rademacher
    eta = {s: np.asarray(sampler(rng, (2, x.shape[0], d), q)) for s, d in net.widths.items()}
    got = np.asarray(im.xi_approx_at(net, x, y, eta))
    assert got.shape == (2, x.shape[0], net.n_params)
    for b in range(2):
        assert_close(got[b], _xi_ref(net, x, y, {s: e[b] for s, e in eta.items()}),
                     rtol=RTOL, atol=ATOL)
    # linear in η: the mean over the examples is reduction="mean"
    assert_close(im.xi_approx_at(net, x, y, eta, reduction="mean"), got.mean(axis=1),
                 rtol=1e-13, atol=1e-15)


def test_xi_approx_flows_through_the_loss_jacobian():
    """The decoder block is nonzero: the gradient goes through J_loss as well as h."""
    net = dc.MLP.random([3, 4, 3], sites=("h1",), seed=2)
    x, y = np.random.default_rng(0).standard_normal((1, 3)), np.array([1])
    eta = {"h1": np.array([[0.5, -1.0, 0.5, 0.5]])}
    xi = net.unflatten_params(im.xi_approx_at(net, x, y, eta)[0])
    assert np.linalg.norm(np.asarray(xi["W2"])) > 1e-3
    # first-order identity: ⟨∇_h ℓ, η⊙h⟩ has W2-gradient g_z ⊗ (η⊙h) + (H_out W2 (η⊙h)) ⊗ h
    th = _theta(net)
    h = np.asarray(site_input(th, x[0], "tanh", "h1"))
    p = np.exp(net.forward(x)[0]) / np.exp(net.forward(x)[0]).sum()
    g = p - np.eye(3)[1]
    H = np.diag(p) - np.outer(p, p)
    d = eta["h1"][0] * h
    assert_close(xi["W2"], np.outer(g, d) + np.outer(H @ th[2] @ d, h), rtol=1e-12, atol=1e-15)


def test_single_example_shapes_and_draws():
    net = dc.MLP.random([3, 4, 2], sites=("x", "h1"), seed=0)
    x, y = np.ones(3), np.array(1)
    P = net.n_params
    assert im.xi_approx(net, x, y, 0.2, rng=0).shape == (P,)
    assert im.xi_approx(net, x, y, 0.2, rng=0, samples=5).shape == (5, P)
    assert im.xi_tilde(net, np.ones((4, 3)), [0, 1, 1, 0], 0.2, rng=0, samples=3).shape == (3, 4, P)
    assert im.xi_drop(net, np.ones((4, 3)), [0, 1, 1, 0], 0.2, rng=0,
                      reduction="mean").shape == (P,)
    assert im.xi_approx_at(net, x, y, {"h1": np.zeros(4)}).shape == (P,)
    assert im.xi_approx_at(net, x, y, {"h1": np.zeros((6, 4))}).shape == (6, P)
    assert im.xi_approx_cov(net, x, y, 0.2).shape == (P, P)
    assert im.dropout_k_gradient(net, np.ones((4, 3)), [0, 1, 1, 0], 0.2, k=3, rng=0).shape == (P,)
    # the same seed gives the same draws; independent draws differ
    a = im.xi_approx(net, x, y, 0.5, rng=7, samples=3)
    assert_close(a, im.xi_approx(net, x, y, 0.5, rng=7, samples=3), rtol=0)
    assert not np.allclose(a[0], a[1])


# ---------------------------------------------------------------- exact covariance of ξ_approx
@given(nets(max_bits=6), qs)
def test_xi_approx_cov_equals_sum_over_all_masks_and_signs(case, q):
    net, x, y, rng = case
    n = x.shape[0]
    outer = lambda xi: np.einsum("ip,iq->ipq", xi, xi)  # noqa: E731

    def at(noise):
        return np.asarray(im.xi_approx_at(
            net, x, y, {s: np.broadcast_to(np.asarray(e), (n, len(e))) for s, e in noise.items()}))

    cov = np.asarray(im.xi_approx_cov(net, x, y, q))
    # Bernoulli η: mean 0 and second moment over all 2^Σd masks (the mean is a sum of ≤ 2^6
    # terms of size ≤ sqrt(max cov)·(1 + q/(1−q)): zero up to ~1e-13 of that)
    assert_close(brute_force_expectation(net, x, q, at), np.zeros((n, net.n_params)), rtol=0,
                 atol=1e-12 * max(1.0, np.abs(cov).max()))
    assert_close(cov, brute_force_expectation(net, x, q, lambda nz: outer(at(nz))),
                 rtol=RTOL_SUM, atol=1e-14)
    # scaled Rademacher signs (footnote 6): the same covariance
    c = math.sqrt(q / (1 - q))
    widths = [net.widths[s] for s in net.site_names]
    tot = np.zeros_like(cov)
    for signs in itertools.product((-1.0, 1.0), repeat=sum(widths)):
        parts = np.split(c * np.asarray(signs), np.cumsum(widths)[:-1])
        tot += outer(at(dict(zip(net.site_names, parts, strict=True))))
    assert_close(cov, tot / 2 ** sum(widths), rtol=RTOL_SUM, atol=1e-14)
    # projected, and the mini-batch mean: (1/n²) Σ_i Cov_i
    V = rng.standard_normal((net.n_params, 2))
    assert_close(im.xi_approx_cov(net, x, y, q, directions=V),
                 np.einsum("pa,ipq,qb->iab", V, cov, V), rtol=1e-10, atol=1e-13)
    assert_close(im.xi_approx_cov(net, x, y, q, reduction="mean", chunk_size=1),
                 cov.sum(0) / n**2, rtol=1e-12, atol=1e-15)


def test_xi_approx_cov_per_site_q():
    """Per-site q against an oracle that shares no code with xi_approx_cov: ξ_approx = Σ_k a_k η_k
    with a_k = ∂/∂ε ∇_W ℓ(F(x, ε e_k)) by central differences of the exact gradient
    (h = 1e-5: truncation ~1e-10, rounding ~1e-11 relative), and E[ξξᵀ] summed over every
    joint mask of both sites; the relative Frobenius error is ~1e-9, checked at 1e-6."""
    from dropcheck.noise import enumerate_masks

    net = dc.MLP.random([3, 3, 3, 2], sites=("h1", "h2"), seed=4)
    x, y = np.random.default_rng(1).standard_normal((2, 3)), np.array([0, 1])
    q = {"h1": 0.2, "h2": 0.6}
    h, n = 1e-5, x.shape[0]
    cols = []
    for s in net.site_names:
        d = net.widths[s]
        for k in range(d):
            e = np.zeros((2, n, d))
            e[0, :, k], e[1, :, k] = h, -h
            g = np.asarray(dc.exact.loss_gradients(net, net.trace(x, {s: e}), y))  # (2, n, P)
            cols.append((g[0] - g[1]) / (2 * h))
    A = np.stack(cols, axis=-1)  # (n, P, D)
    want = 0.0
    for ch in enumerate_masks(net.widths, q):
        eta = np.concatenate([np.asarray(ch.eta[s]) for s in net.site_names], axis=1)  # (B, D)
        xi = np.einsum("npd,bd->bnp", A, eta)
        want = want + np.einsum("b,bnp,bnq->npq", np.asarray(ch.prob), xi, xi)
    got = np.asarray(im.xi_approx_cov(net, x, y, q))
    assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want)


# ---------------------------------------------------------------- sampled vs exact (D1–D3, I1, I2)
def _case(seed=3, sizes=(3, 4, 3), sites=("h1",)):
    net = dc.MLP.random(list(sizes), activation="tanh", sites=sites, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, sizes[0]))
    y = rng.integers(0, sizes[-1], size=2)
    V = rng.standard_normal((net.n_params, 3))
    return net, x, y, V


def _check_sampled(draws, V, cov, mean=None, known_mean=None):
    """|z| ≤ ZMAX for the projected sample covariance (and mean) against the exact values."""
    proj = np.asarray(draws) @ V
    est = cv.sample_covariance(proj, mean=known_mean)
    z = np.abs(np.asarray(cv.z_scores(est, cov)))
    assert z.max() <= ZMAX, f"covariance z-scores {z.max():.2f} > {ZMAX}"
    if mean is not None:
        m = proj.mean(0)
        se = proj.std(0, ddof=1) / math.sqrt(proj.shape[0])
        zm = np.abs(m - np.asarray(mean) @ V) / se
        assert zm.max() <= ZMAX, f"mean z-scores {zm.max():.2f} > {ZMAX}"
    # and the sampling floor says how close the estimate is in Frobenius norm
    return float(np.max(cv.sampling_floor(est.stderr, cov)))


def test_d1_dropout_k_gradient_mean_and_covariance():
    net, x, y, V = _case()
    q, k, N = 0.3, 3, 4000
    g = im.dropout_k_gradient(net, x, y, q, k=k, rng=np.random.default_rng(10), samples=N)
    mean = np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0)
    _check_sampled(g, V, dc.exact.dropout_k_cov(net, x, y, q, k=k, directions=V), mean=mean)


def test_d2_xi_tilde_has_twice_the_covariance_and_mean_zero():
    net, x, y, V = _case()
    q, N = 0.5, 4000
    t = np.asarray(im.xi_tilde(net, x, y, q, rng=np.random.default_rng(11), samples=N))
    cov = 2 * np.asarray(dc.exact.gradient_noise_cov(net, x, y, q, directions=V))
    for i in range(2):
        _check_sampled(t[:, i], V, cov[i], mean=np.zeros(net.n_params))


def test_xi_drop_is_centred_on_the_exact_mean():
    net, x, y, V = _case()
    q, N = 0.3, 4000
    s = np.asarray(im.xi_drop(net, x, y, q, rng=np.random.default_rng(12), samples=N))
    cov = np.asarray(dc.exact.gradient_noise_cov(net, x, y, q, directions=V))
    for i in range(2):
        _check_sampled(s[:, i], V, cov[i], mean=np.zeros(net.n_params))
    # a supplied mean is used as is (a Monte-Carlo mean for nets too large to enumerate)
    mu = np.asarray(dc.exact.expected_gradient(net, x, y, q))
    a = im.xi_drop(net, x, y, q, rng=5, samples=2, mean=mu)
    assert_close(a, im.xi_drop(net, x, y, q, rng=5, samples=2), rtol=0, atol=1e-15)


def test_d3_noise_injection_restores_dropout_1_covariance():
    net, x, y, V = _case()
    q, k, N = 0.3, 4, 4000
    g = im.noise_injected_gradient(net, x, y, q, k=k, rng=np.random.default_rng(13), noise="exact",
                                   samples=N)
    mean = np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0)
    _check_sampled(g, V, dc.exact.dropout_k_cov(net, x, y, q, k=1, directions=V), mean=mean)


@pytest.mark.parametrize("kind", ["bernoulli", "rademacher"])
def test_i2_algorithm4_covariance(kind):
    net, x, y, V = _case(sites=("x", "h1"))
    q, k, N = 0.4, 4, 4000
    g = im.noise_injected_gradient(net, x, y, q, k=k, rng=np.random.default_rng(14), noise="approx",
                                   approx_noise=kind, samples=N)
    cov = (np.asarray(dc.exact.dropout_k_cov(net, x, y, q, k=k, directions=V))
           + (1 - 1 / k) * np.asarray(im.xi_approx_cov(net, x, y, q, directions=V,
                                                        reduction="mean")))
    mean = np.asarray(dc.exact.expected_gradient(net, x, y, q)).mean(0)
    _check_sampled(g, V, cov, mean=mean)


@pytest.mark.parametrize("kind", ["bernoulli", "rademacher"])
def test_sampled_xi_approx_has_the_exact_covariance(kind):
    net, x, y, V = _case(sites=("x", "h1"))
    q, N = 0.7, 3000
    s = np.asarray(im.xi_approx(net, x, y, q, rng=np.random.default_rng(15), noise=kind, samples=N))
    cov = np.asarray(im.xi_approx_cov(net, x, y, q, directions=V))
    for i in range(2):
        _check_sampled(s[:, i], V, cov[i], known_mean=0.0, mean=np.zeros(net.n_params))


def test_k_equal_1_is_standard_dropout():
    net, x, y, _ = _case()
    a = im.dropout_k_gradient(net, x, y, 0.3, k=1, rng=21, samples=3)
    for noise in ("exact", "approx"):  # the injected noise has coefficient sqrt(1 − 1/k) = 0
        assert_close(im.noise_injected_gradient(net, x, y, 0.3, k=1, rng=21, noise=noise,
                                                samples=3), a, rtol=0)


# ---------------------------------------------------------------- Algorithm 2
def _r_approx_autograd(th, x, y, act, site):
    """R_approx (4.4) per batch mean, by autograd: Σ_k h_k² (J_F e_k)ᵀ H_out (J_F e_k)."""
    tot = 0.0
    for i in range(x.shape[0]):
        h = site_input(th, x[i], act, site)
        J = autograd.jacobian(lambda v, i=i: mlp_logits(th, x[i], act, site_override={site: v}))(h)
        f = mlp_logits(th, x[i], act)
        p = anp.exp(f - anp.max(f))
        p = p / anp.sum(p)
        H = anp.diag(p) - anp.outer(p, p)
        tot = tot + anp.sum(h**2 * anp.sum(J * anp.dot(H, J), axis=0))
    return tot / x.shape[0]


def _hand_step(net, x, y, q, lr, eta, lam1, lam2, site):
    th = _theta(net)
    act = net.activation
    g_clean = autograd.grad(lambda t: sum(ce(mlp_logits(t, x[i], act), y[i])
                                          for i in range(len(y))) / len(y))(th)
    r_grad = autograd.grad(lambda t: _r_approx_autograd(t, x, y, act, site))(th)
    xi = _xi_ref(net, x, y, {site: eta}).mean(0)
    g = _flat(g_clean) + lam1 * _flat(r_grad) + lam2 * xi
    return _flat(th) - lr * g


def _autograd_r_grad(site):
    def fn(model, x, y):
        th = _theta(model)
        return _flat(autograd.grad(
            lambda t: _r_approx_autograd(t, np.asarray(x), np.asarray(y), model.activation,
                                         site))(th))
    return fn


@pytest.mark.parametrize("explicit", ["callable", "approx"])
def test_algorithm2_step_equals_hand_computation(explicit):
    net = dc.MLP.random([3, 4, 3], activation="tanh", sites=("h1",), seed=5)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((3, 3)), np.array([0, 2, 1])
    q, lr = 0.3, 0.1
    if explicit == "approx":
        mod = pytest.importorskip("dropcheck.explicit")
        if not hasattr(mod, "r_approx_grad"):
            pytest.skip("dropcheck.explicit.r_approx_grad is not there yet")
        ex = "approx"
    else:
        ex = _autograd_r_grad("h1")
    # the documented draw: η ~ sample_eta(rng, (1, m, d)) per site, in site order
    eta = np.asarray(dc.noise.sample_eta(np.random.default_rng(8), (1, 3, 4), q))[0]
    for lam1, lam2 in ((None, None), (0.7, 0.0), (0.0, 2.5)):
        new = im.update(net, x, y, q, lr=lr, rng=np.random.default_rng(8), explicit=ex,
                        lam1=lam1, lam2=lam2)
        assert list(new) == list(net.params)
        l1 = q / (2 * (1 - q)) if lam1 is None else lam1
        l2 = 1.0 if lam2 is None else lam2
        ref = _hand_step(net, x, y, q, lr, eta, l1, l2, "h1")
        assert_close(net.flatten_params(new), ref, rtol=RTOL, atol=ATOL)
    # the step is a training loop's step: with_params accepts it
    assert net.with_params(new).n_params == net.n_params


def test_algorithm2_without_regularizers_is_plain_gradient_descent():
    net, x, y, _ = _case()
    g = im.update_direction(net, x, y, 0.3, rng=0, explicit=None, implicit=None)
    ref = np.asarray(dc.exact.loss_gradients(net, net.trace(x), y))[0].mean(0)
    assert_close(g, ref, rtol=1e-14, atol=1e-16)
    # a callable implicit term gets the generator and is scaled by λ₂
    seen = []

    def noise(model, xb, yb, gen):
        seen.append(gen)
        return np.ones(model.n_params)

    g2 = im.update_direction(net, x, y, 0.3, rng=9, explicit=None, implicit=noise, lam2=0.5)
    assert_close(g2, ref + 0.5, rtol=1e-14)
    assert hasattr(seen[0], "random")


# ---------------------------------------------------------------- covariance metrics
def test_covariance_metrics_on_known_matrices(rng):
    A = rng.standard_normal((5, 5))
    C = A @ A.T
    assert float(cv.relative_frobenius_error(C, C)) == 0.0
    assert float(cv.relative_frobenius_error(2 * C, C)) == pytest.approx(1.0, rel=1e-14)
    assert float(cv.trace_ratio(3 * C, C)) == pytest.approx(3.0, rel=1e-14)
    assert float(cv.eigenspace_alignment(7 * C, C, 2)) == pytest.approx(1.0, rel=1e-12)
    # orthogonal top-2 eigenspaces: alignment 0; half-overlapping: 1/2
    D1 = np.diag([5.0, 4.0, 1.0, 0.5, 0.1])
    D2 = np.diag([1.0, 0.5, 5.0, 4.0, 0.1])
    D3 = np.diag([5.0, 1.0, 4.0, 0.5, 0.1])
    assert float(cv.eigenspace_alignment(D1, D2, 2)) == pytest.approx(0.0, abs=1e-14)
    assert float(cv.eigenspace_alignment(D1, D3, 2)) == pytest.approx(0.5, rel=1e-12)
    # batch axes are kept; 0/0 is no error
    both = np.stack([C, np.zeros((5, 5))])
    assert_close(cv.relative_frobenius_error(both, both), np.zeros(2), rtol=0)
    c = cv.compare(np.stack([C, 2 * C]), np.stack([C, C]), r=1)
    assert_close(c.rel_frobenius, np.array([0.0, 1.0]), rtol=1e-14)
    assert_close(c.trace_ratio, np.array([1.0, 2.0]), rtol=1e-14)


def test_sample_covariance_and_floor(rng):
    s = rng.standard_normal((20000, 3)) * np.array([1.0, 2.0, 0.5])
    est = cv.sample_covariance(s)
    ref = np.diag([1.0, 4.0, 0.25])
    # the standard errors are those of the product means: ≈ sqrt(2)σ²/√N on the diagonal.
    # rtol 0.05: the estimated SE of a Gaussian x² mean has relative error
    # sqrt((μ8 − μ4²)/(4N(μ4 − 1)²)) = sqrt(96/(16·20000)) ≈ 0.017 at N = 20000, so 5% is ~3σ
    # (seeded generator; one draw, so no false alarm across runs).
    assert_close(np.diag(np.asarray(est.stderr)), np.sqrt(2) * np.diag(ref) / np.sqrt(20000),
                 rtol=0.05)
    assert np.abs(np.asarray(cv.z_scores(est, ref))).max() < ZMAX
    floor = float(cv.sampling_floor(est.stderr, ref))
    assert 0.2 * floor < float(cv.relative_frobenius_error(est.value, ref)) < 5 * floor


def test_metrics_and_xi_approx_in_every_namespace(xp_case):
    name, xp, conv = xp_case
    ref = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
    net = dc.MLP([conv(np.asarray(ref.params[f"W{i}"])) for i in (1, 2)],
                 [conv(np.asarray(ref.params[f"b{i}"])) for i in (1, 2)], "tanh", ("x", "h1"))
    x, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([0, 2])
    xb, yb = conv(x), conv(y)
    cov = im.xi_approx_cov(net, xb, yb, 0.3)
    assert namespace(cov) is namespace(xb)
    assert_close(to_numpy(cov), np.asarray(im.xi_approx_cov(ref, x, y, 0.3)), rtol=1e-12,
                 atol=1e-15, check_namespace=False)
    xi = im.xi_approx(net, xb, yb, 0.3, rng=0, samples=2)
    assert namespace(xi) is namespace(xb) and xi.shape == (2, 2, ref.n_params)
    g = im.noise_injected_gradient(net, xb, yb, 0.3, k=2, rng=0, noise="approx")
    assert namespace(g) is namespace(xb)
    new = im.update(net, xb, yb, 0.3, lr=0.1, rng=0, explicit=None)
    assert namespace(new["W1"]) is namespace(xb)
    c = cv.compare(cov, cov + 0.0, r=2)
    assert float(c.rel_frobenius[0]) == 0.0 and namespace(c.alignment) is namespace(xb)


# ---------------------------------------------------------------- bad input
@pytest.fixture
def bad_case():
    net = dc.MLP.random([3, 4, 3], sites=("h1",), seed=0)
    return net, np.ones((2, 3)), np.array([0, 2])


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one(bad_case, k):
    net, x, y = bad_case
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        im.dropout_k_gradient(net, x, y, 0.3, k=k, rng=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        im.noise_injected_gradient(net, x, y, 0.3, k=k, rng=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        im.dropout_k_gradient(net, x, y, 0.3, k=1.5, rng=0)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), "fast"])
def test_lr_not_finite(bad_case, lr):
    net, x, y = bad_case
    with pytest.raises((ValueError, TypeError), match="lr must be a finite number"):
        im.update(net, x, y, 0.3, lr=lr, rng=0, explicit=None)


def test_unknown_noise_kinds(bad_case):
    net, x, y = bad_case
    with pytest.raises(ValueError, match="noise must be one of 'bernoulli', 'rademacher'"):
        im.xi_approx(net, x, y, 0.3, rng=0, noise="gaussian")
    with pytest.raises(ValueError, match="noise must be one of 'exact', 'approx'"):
        im.noise_injected_gradient(net, x, y, 0.3, k=2, rng=0, noise="tilde")
    with pytest.raises(ValueError, match="approx_noise must be one of"):
        im.noise_injected_gradient(net, x, y, 0.3, k=2, rng=0, noise="approx", approx_noise="gauss")
    with pytest.raises(ValueError, match="implicit must be one of"):
        im.update(net, x, y, 0.3, lr=0.1, rng=0, explicit=None, implicit="exact")
    with pytest.raises(ValueError, match="reduction must be one of"):
        im.xi_tilde(net, x, y, 0.3, rng=0, reduction="median")  # "sum" is valid (sequences)


@pytest.mark.parametrize("arg", ["lam1", "lam2"])
def test_negative_strengths(bad_case, arg):
    net, x, y = bad_case
    with pytest.raises(ValueError, match=f"{arg} must be >= 0"):
        im.update(net, x, y, 0.3, lr=0.1, rng=0, explicit=None, **{arg: -0.5})


def test_shape_errors(bad_case):
    net, x, y = bad_case
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        im.xi_approx(net, x, y, 0.3, rng=0, samples=0)
    with pytest.raises(ValueError, match="mean must be the expected gradient per example"):
        im.xi_drop(net, x, y, 0.3, rng=0, mean=np.zeros(net.n_params))
    with pytest.raises(ValueError, match="directions must have shape"):
        im.xi_approx_cov(net, x, y, 0.3, directions=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="eta\\['h1'\\] must have shape"):
        im.xi_approx_at(net, x, y, {"h1": np.zeros((2, 5))})
    with pytest.raises(ValueError, match="not dropout sites"):
        im.xi_approx_at(net, x, y, {"h7": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="q must be a drop probability"):
        im.xi_approx(net, x, y, 1.0, rng=0)
    with pytest.raises(ValueError, match="approx and ref must have the same shape"):
        cv.relative_frobenius_error(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="r must be at most"):
        cv.eigenspace_alignment(np.eye(2), np.eye(2), 3)
    with pytest.raises(dc.TooManyMasksError, match="Monte-Carlo"):
        im.xi_drop(net, x, y, 0.3, rng=0, max_masks=4)
