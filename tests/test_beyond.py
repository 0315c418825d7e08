"""Beyond the paper (docs/beyond.md): next-layer Taylor, Wager, fast and Gaussian dropout,
sigmoid ensembles, linear nets, last-layer dropout.

Oracles: numeric Hessians (:func:`dropcheck.testing.numeric_hessian`), plain ``itertools`` loops
over keep masks, closed-form Gaussian moments, ``scipy.integrate.quad``, and the exact
enumeration of :mod:`dropcheck.exact` where the library function under test takes another route.
The last tests check that each mutant registered by the beyond-the-paper suites makes its claim
fail (the rules can fail).
"""

import itertools
import math

import numpy as np
import pytest
from dropcheck.verification._registry import Context, all_claims
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

import dropcheck as dc
from dropcheck import classical, ensembles, fast_dropout, gaussian_dropout, glm, linear_nets
from dropcheck.backend import to_numpy
from dropcheck.quadrature import gaussian_expectation
from dropcheck.testing import numeric_hessian


def _masks(d, q):
    """Every keep mask of width d with its probability (the brute-force oracle)."""
    for bits in itertools.product((0, 1), repeat=d):
        m = np.array(bits, dtype=float)
        yield m, math.prod((1 - q) if b else q for b in bits)


# ----------------------------------------------------------------------------- A2


@pytest.mark.parametrize("sizes,sites", [([4, 5, 6, 3], ("h1",)), ([4, 5, 3], ("h1",)),
                                          ([3, 4, 5, 3], ("x",))])
def test_next_layer_matches_numeric_z_hessian(sizes, sites):
    net = dc.MLP.random(sizes, "tanh", sites=sites, seed=3)
    x = np.random.default_rng(4).standard_normal((2, sizes[0]))
    y = np.array([0, 2])
    q = 0.3
    got = np.asarray(dc.explicit.next_layer(net, x, y, q))
    layer = 0 if sites == ("x",) else 1
    W, b = net.params[f"W{layer + 1}"], net.params[f"b{layer + 1}"]
    h = net.hidden(x)[sites[0]]
    rest = [(net.params[f"W{i}"], net.params[f"b{i}"])
            for i in range(layer + 2, net.n_layers + 1)]
    want = []
    for i in range(2):
        def loss_of_z(z, i=i):
            f = z
            for Wl, bl in rest:
                f = Wl @ np.tanh(f) + bl
            return float(net.loss.value(f[None, :], y[i:i + 1])[0])

        H = numeric_hessian(loss_of_z, W @ h[i] + b)
        want.append(q / (2 * (1 - q)) * np.sum(H * ((W * h[i] ** 2) @ W.T)))
    # central second differences with step 1e-4 on O(1) functions: error ~1e-7
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_next_layer_runs_on_every_backend(xp_case):
    name, xp, conv = xp_case
    net = dc.MLP.random([4, 5, 6, 3], "tanh", sites=("x", "h1", "h2"), seed=1)
    x = np.random.default_rng(2).standard_normal((3, 4))
    y = np.array([0, 1, 2])
    ref = np.asarray(dc.explicit.next_layer(net, x, y, 0.4))
    netx = net.with_params({k: conv(v) for k, v in net.params.items()})
    got = dc.explicit.next_layer(netx, conv(x), conv(y), 0.4)
    # same float64 operations in another namespace: rounding only
    np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-12)


def test_next_layer_refuses_a_non_mlp():
    with pytest.raises(TypeError, match="model must be a dropcheck (MLP|model)"):
        dc.explicit.next_layer(object(), np.zeros(3), 0, 0.3)


# ----------------------------------------------------------------------------- W1, W2


@given(st.integers(0, 10_000), st.sampled_from([0.1, 0.5, 0.8]), st.sampled_from([2, 3]))
def test_unlabeled_regularizer_is_brute_force_log_partition(seed, q, c):
    rng = np.random.default_rng(seed)
    m = dc.Linear.random(5, c, rng=rng, seed=None)
    x = rng.standard_normal((3, 5))
    W, b = (np.asarray(m.params[k]) for k in ("W1", "b1"))

    def lse(z):
        return np.log(np.sum(np.exp(z), axis=-1))

    want = sum(p * lse((x * mk / (1 - q)) @ W.T + b) for mk, p in _masks(5, q)) - lse(x @ W.T + b)
    # ≤ 32 masks of O(1) terms in float64: rounding ~1e-15
    np.testing.assert_allclose(glm.unlabeled_regularizer(m, x, q), want, rtol=1e-12, atol=1e-14)


def test_quadratic_regularizer_and_fisher_ridge_closed_forms(rng):
    m = dc.Linear.random(6, 3, rng=rng, seed=None)
    x = rng.standard_normal((4, 6))
    q = 0.35
    W, b = (np.asarray(m.params[k]) for k in ("W1", "b1"))
    z = x @ W.T + b
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    want = []
    for i in range(4):
        H = np.diag(p[i]) - np.outer(p[i], p[i])
        cov = q / (1 - q) * (W * x[i] ** 2) @ W.T
        want.append(0.5 * np.sum(H * cov))
    np.testing.assert_allclose(glm.quadratic_regularizer(m, x, q), want, rtol=1e-12)
    np.testing.assert_allclose(float(glm.fisher_ridge(m, x, q)), np.sum(want), rtol=1e-12)


def test_glm_refuses_squared_loss():
    m = dc.Linear.random(3, 2, seed=0, loss="squared")
    with pytest.raises(TypeError, match="cross-entropy dropcheck.Linear"):
        glm.unlabeled_regularizer(m, np.zeros((1, 3)), 0.3)


# ----------------------------------------------------------------------------- quadrature


def test_gauss_hermite_exact_moments_and_mgf(rng):
    A = rng.standard_normal((2, 3, 3))
    cov = A @ np.swapaxes(A, 1, 2) * 0.2
    mean = rng.standard_normal((2, 3))
    # E[z0² z1²] for a Gaussian: Isserlis, with the mean
    def m4(mu, S):
        return ((S[0, 0] + mu[0] ** 2) * (S[1, 1] + mu[1] ** 2) + 2 * S[0, 1] ** 2
                + 4 * mu[0] * mu[1] * S[0, 1])

    got = gaussian_expectation(lambda z: z[..., 0] ** 2 * z[..., 1] ** 2, mean, cov, nodes=3)
    np.testing.assert_allclose(got, [m4(mean[i], cov[i]) for i in range(2)], rtol=1e-12)
    a = np.array([0.3, -0.2, 0.5])
    got = gaussian_expectation(lambda z: np.exp(z @ a), mean, cov, nodes=16)
    want = np.exp(mean @ a + 0.5 * np.einsum("i,nij,j->n", a, cov, a))
    # exp is entire: 16 nodes per axis converge to rounding for these small variances
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gaussian_expectation_bad_shapes():
    with pytest.raises(ValueError, match="mean must be"):
        gaussian_expectation(lambda z: z[..., 0], np.zeros(3), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- F1


def test_fast_dropout_moments_and_gaussian_mean(rng):
    w, x, b, q = rng.standard_normal(5), rng.standard_normal((2, 5)), 0.4, 0.3
    unit = fast_dropout.sigmoid_unit(w, b)
    mu, var = fast_dropout.unit_moments(unit, x, q)
    s = [(x * mk / (1 - q)) @ w + b for mk, _ in _masks(5, q)]
    p = np.array([pk for _, pk in _masks(5, q)])
    bm = np.tensordot(p, s, axes=1)
    bv = np.tensordot(p, (np.array(s) - bm) ** 2, axes=1)
    np.testing.assert_allclose(mu, bm, rtol=1e-13)
    np.testing.assert_allclose(var, bv, rtol=1e-12)
    for i in range(2):
        sd = math.sqrt(var[i])
        want = integrate.quad(lambda t, i=i, sd=sd: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
                              / (1 + math.exp(-(mu[i] + sd * t))), -40, 40, epsabs=1e-14)[0]
        got = fast_dropout.predictive_mean(unit, x, q, method="gaussian")[i]
        assert abs(got - want) < 1e-10  # quad to ~1e-14; 48 Hermite nodes to ≲ 1e-12
    assert fast_dropout.probit_sigmoid(np.array(0.0), np.array(3.0)) == 0.5
    with pytest.raises(ValueError, match="method must be"):
        fast_dropout.predictive_mean(unit, x, q, method="laplace")


def test_softmax_predictive_mean_two_classes_is_the_sigmoid_one(rng):
    w, x = rng.standard_normal(5), rng.standard_normal((3, 5))
    unit = fast_dropout.sigmoid_unit(w, -0.2)
    two = fast_dropout.softmax_predictive_mean(unit, x, 0.4, nodes=48)
    one = fast_dropout.predictive_mean(unit, x, 0.4, method="gaussian", nodes=48)
    # the 2-D rule on the rank-1 covariance of (0, s) reduces to the 1-D rule: rounding only
    np.testing.assert_allclose(two[:, 1], one, rtol=1e-12)
    np.testing.assert_allclose(two.sum(-1), 1.0, rtol=1e-13)


def test_sigmoid_unit_is_a_logistic_regression():
    unit = fast_dropout.sigmoid_unit(np.array([1.0, -2.0]), 0.5)
    x = np.array([[0.3, 0.1]])
    s = 0.3 - 0.2 + 0.5
    np.testing.assert_allclose(dc.losses.softmax(unit.forward(x))[0, 1], 1 / (1 + np.exp(-s)))
    np.testing.assert_allclose(unit.loss_value(x, np.array([1])), np.log1p(np.exp(-s)))


# ----------------------------------------------------------------------------- G1, G2


def test_gaussian_dropout_binary_cross_entropy_against_scipy_quad(rng):
    w, x, q = rng.standard_normal(4), rng.standard_normal((2, 4)), 0.4
    unit = fast_dropout.sigmoid_unit(w, 0.2)
    y = np.array([1, 0])
    got = gaussian_dropout.expected_loss(unit, x, y, q, nodes=40)
    a = gaussian_dropout.variance(q)
    for i in range(2):
        mu, sd = x[i] @ w + 0.2, math.sqrt(a * np.sum(w**2 * x[i] ** 2))
        want = integrate.quad(lambda t, mu=mu, sd=sd, i=i: math.exp(-t * t / 2)
                              / math.sqrt(2 * math.pi)
                              * (np.logaddexp(0, mu + sd * t) - y[i] * (mu + sd * t)),
                              -40, 40, epsabs=1e-13)[0]
        assert abs(got[i] - want) < 1e-9  # the 2-D rule on a rank-1 covariance, 40 nodes


def test_gaussian_dropout_squared_loss_is_the_ridge(rng):
    m = dc.Linear.random(5, 2, rng=rng, seed=None, loss="squared")
    x, y = rng.standard_normal((3, 5)), rng.standard_normal((3, 2))
    got = gaussian_dropout.explicit_regularizer(m, x, y, 0.6, nodes=2)
    np.testing.assert_allclose(got, classical.ridge_penalty(m.params["W1"], x, 0.6), rtol=1e-12)


def test_noise_expected_loss_is_exact_for_a_quadratic_in_the_noise(rng):
    # squared loss, noise only at the last hidden layer: the loss is quadratic in ε, so a
    # 3-node rule is exact and R_gauss is the last-layer ridge (same two moments as Bernoulli)
    net = dc.MLP.random([3, 4, 3, 2], "tanh", sites=("h2",), loss="squared", seed=4)
    x, y = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    got = np.asarray(gaussian_dropout.noise_expected_loss(net, x, y, 0.35, nodes=3))
    want = np.asarray(net.loss_value(x, y)) + np.asarray(
        linear_nets.last_layer_regularizer(net, x, 0.35))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="past MAX_POINTS"):
        gaussian_dropout.noise_expected_loss(net, x, y, 0.35, nodes=70)  # 70³ > 2^18


def test_third_order_gap_is_the_third_derivative_term(rng):
    m = dc.Linear.random(4, 3, rng=rng, seed=None)
    x = rng.standard_normal(4)
    q = 0.2
    W, b = np.asarray(m.params["W1"]), np.asarray(m.params["b1"])

    def A(z):
        return np.log(np.sum(np.exp(z)))

    z0, h = W @ x + b, 5e-3
    third = 0.0
    for k in range(4):
        u = W[:, k] * x[k]
        # central third difference: truncation (h²/4)|A⁽⁵⁾| ≈ 6e-6 and rounding
        # 4·eps·|A|/(2h³) ≈ 2e-9 per direction, against a third derivative of O(1e-2)
        third += (A(z0 + 2 * h * u) - 2 * A(z0 + h * u) + 2 * A(z0 - h * u)
                  - A(z0 - 2 * h * u)) / (2 * h**3)
    want = gaussian_dropout.bernoulli_third_moment(q) / 6 * third
    np.testing.assert_allclose(gaussian_dropout.third_order_gap(m, x, q), want, rtol=1e-3)


# ----------------------------------------------------------------------------- B1


def test_sigmoid_ensemble_against_brute_force(rng):
    w, x, q = rng.standard_normal(4), rng.standard_normal((2, 4)), 0.45
    unit = fast_dropout.sigmoid_unit(w, -0.3)
    ens = ensembles.sigmoid_ensemble(unit, x, q)
    outs = np.array([1 / (1 + np.exp(-((x * mk / (1 - q)) @ w - 0.3))) for mk, _ in _masks(4, q)])
    p = np.array([pk for _, pk in _masks(4, q)])
    np.testing.assert_allclose(ens.mean, p @ outs, rtol=1e-13)
    np.testing.assert_allclose(ens.geo, np.exp(p @ np.log(outs)), rtol=1e-13)
    np.testing.assert_allclose(ens.geo_complement, np.exp(p @ np.log(1 - outs)), rtol=1e-13)
    np.testing.assert_allclose(ens.below_half, p @ (outs <= 0.5), rtol=1e-13)
    np.testing.assert_allclose(ens.above_half, p @ (outs >= 0.5), rtol=1e-13)
    np.testing.assert_allclose(ens.nwgm, 1 / (1 + np.exp(-(x @ w - 0.3))), rtol=1e-13)


def test_second_order_gap_small_variance_limit(rng):
    # a narrow ensemble: the estimate's relative error is O(spread)
    unit = fast_dropout.sigmoid_unit(0.05 * rng.standard_normal(6), 0.7)
    ens = ensembles.sigmoid_ensemble(unit, rng.standard_normal((3, 6)), 0.5)
    est = ensembles.second_order_gap(ens.mean, ens.var)
    np.testing.assert_allclose(est, ens.mean - ens.nwgm, rtol=2e-2)


def test_sigmoid_ensemble_needs_two_classes():
    with pytest.raises(ValueError, match="2 classes"):
        ensembles.sigmoid_ensemble(dc.Linear.random(3, 3, seed=0), np.zeros((1, 3)), 0.3)


# ----------------------------------------------------------------------------- M1, K1


@given(st.integers(0, 10_000), st.sampled_from([(3, 2, 2), (4, 3, 3), (3, 4, 5)]))
def test_linear_net_regularizer_exact_and_bounded_below(seed, dims):
    d1, d2, r = dims
    rng = np.random.default_rng(seed)
    U, V = rng.standard_normal((d2, r)), rng.standard_normal((d1, r))
    X = linear_nets.isotropic_inputs(d1)
    np.testing.assert_allclose(X.T @ X / d1, np.eye(d1))
    exact = np.mean(dc.exact.explicit_regularizer(linear_nets.as_mlp(U, V), X,
                                                  rng.standard_normal((d1, d2)), 0.3))
    closed = float(linear_nets.dropout_regularizer(U, V, 0.3))
    np.testing.assert_allclose(exact, closed, rtol=1e-12)
    bound = float(linear_nets.min_regularizer(U @ V.T, r, 0.3))
    assert closed >= bound * (1 - 1e-12)
    Ue, Ve = linear_nets.equalize(U, V)
    np.testing.assert_allclose(Ue @ Ve.T, U @ V.T, atol=1e-12 * np.abs(U @ V.T).max() * r)
    prod = np.linalg.norm(Ue, axis=0) * np.linalg.norm(Ve, axis=0)
    np.testing.assert_allclose(prod, np.linalg.svd(U @ V.T, compute_uv=False).sum() / r,
                               rtol=1e-10)
    np.testing.assert_allclose(float(linear_nets.dropout_regularizer(Ue, Ve, 0.3)), bound,
                               rtol=1e-10)


def test_min_regularizer_bad_input():
    M = np.arange(6.0).reshape(2, 3) + np.eye(2, 3)
    with pytest.raises(ValueError, match="rank at most r = 1"):
        linear_nets.min_regularizer(M, 1, 0.3)
    with pytest.raises(ValueError, match="r must be an integer >= 1"):
        linear_nets.min_regularizer(M, 0, 0.3)
    with pytest.raises(ValueError, match="U must be"):
        linear_nets.dropout_regularizer(np.ones((2, 3)), np.ones((4, 2)), 0.3)


def test_bfgs_gradient_of_the_factorization_objective():
    from dropcheck.verification.linear_nets import _objective

    rng = np.random.default_rng(0)
    U, V, g = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(9)
    _, grad = _objective(g, U, V)
    num = [(_objective(g + 1e-6 * e, U, V)[0] - _objective(g - 1e-6 * e, U, V)[0]) / 2e-6
           for e in np.eye(9)]
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)  # central differences ~1e-9


def test_last_layer_regularizer_against_brute_force(rng):
    net = dc.MLP.random([3, 4, 5, 2], "relu", sites=("h2",), loss="squared", seed=2)
    x, y, q = rng.standard_normal((2, 3)), rng.standard_normal((2, 2)), 0.4
    h = net.hidden(x)["h2"]
    W, b = np.asarray(net.params["W3"]), np.asarray(net.params["b3"])
    clean = 0.5 * np.sum((h @ W.T + b - y) ** 2, axis=-1)
    want = sum(p * 0.5 * np.sum(((h * mk / (1 - q)) @ W.T + b - y) ** 2, axis=-1)
               for mk, p in _masks(5, q)) - clean
    np.testing.assert_allclose(linear_nets.last_layer_regularizer(net, x, q), want, rtol=1e-12)
    with pytest.raises(ValueError, match="only at the last hidden layer"):
        linear_nets.last_layer_regularizer(
            dc.MLP.random([3, 4, 5, 2], "relu", sites=("h1", "h2"), loss="squared"), x, q)


# ----------------------------------------------------------------------------- the rules fail


def _beyond_mutants():
    from dropcheck.verification import (
        ensembles as v_ens,
    )
    from dropcheck.verification import (
        fast_dropout as v_fd,
    )
    from dropcheck.verification import (
        gaussian_dropout as v_gd,
    )
    from dropcheck.verification import (
        glm as v_glm,
    )
    from dropcheck.verification import (
        linear_nets as v_ln,
    )
    from dropcheck.verification import (
        next_layer as v_nl,
    )

    return [m for mod in (v_nl, v_glm, v_fd, v_gd, v_ens, v_ln) for m in mod.MUTANTS]


BEYOND_IDS = ("A2", "W1", "W2", "F1", "G1", "G2", "B1", "M1", "K1")


def test_every_beyond_claim_has_a_mutant():
    covered = {c for m in _beyond_mutants() for c in m.claims}
    assert covered == set(BEYOND_IDS)


@pytest.mark.parametrize("mutant", _beyond_mutants(), ids=lambda m: m.name)
def test_mutant_makes_its_claims_fail(mutant):
    claims = {c.id: c for c in all_claims()}
    ctx = Context(quick=True)
    for cid in mutant.claims:
        assert claims[cid].measure(ctx).passed is True, cid  # the correct library passes
        with mutant.patch():
            assert claims[cid].measure(ctx).passed is False, (mutant.name, cid)


def test_beyond_numerics_run_on_every_backend(xp_case):
    """glm, gaussian/fast dropout, ensembles, linear nets: same numbers in every namespace."""
    _, _, conv = xp_case
    rng = np.random.default_rng(5)
    m = dc.Linear.random(4, 3, seed=1)
    x, y = rng.standard_normal((3, 4)), np.array([0, 1, 2])
    mx = m.with_params({k: conv(v) for k, v in m.params.items()})
    w = rng.standard_normal(4)
    unit, unitx = fast_dropout.sigmoid_unit(w, 0.2), fast_dropout.sigmoid_unit(conv(w), 0.2)
    U, V = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    cases = [
        (glm.unlabeled_regularizer(m, x, 0.3), glm.unlabeled_regularizer(mx, conv(x), 0.3)),
        (glm.fisher_ridge(m, x, 0.3), glm.fisher_ridge(mx, conv(x), 0.3)),
        (gaussian_dropout.explicit_regularizer(m, x, y, 0.3, nodes=6),
         gaussian_dropout.explicit_regularizer(mx, conv(x), conv(y), 0.3, nodes=6)),
        (gaussian_dropout.third_order_gap(m, x, 0.3),
         gaussian_dropout.third_order_gap(mx, conv(x), 0.3)),
        (fast_dropout.predictive_mean(unit, x, 0.3, method="gaussian"),
         fast_dropout.predictive_mean(unitx, conv(x), 0.3, method="gaussian")),
        (ensembles.sigmoid_ensemble(unit, x, 0.3).nwgm,
         ensembles.sigmoid_ensemble(unitx, conv(x), 0.3).nwgm),
        (linear_nets.min_regularizer(U @ V.T, 2, 0.3),
         linear_nets.min_regularizer(conv(U @ V.T), 2, 0.3)),
        (linear_nets.equalize(U, V)[0], linear_nets.equalize(conv(U), conv(V))[0]),
        (gaussian_dropout.noise_expected_loss(m, x, y, 0.3, nodes=3),
         gaussian_dropout.noise_expected_loss(mx, conv(x), conv(y), 0.3, nodes=3)),
        (fast_dropout.softmax_predictive_mean(m, x, 0.3, nodes=4),
         fast_dropout.softmax_predictive_mean(mx, conv(x), 0.3, nodes=4)),
    ]
    for ref, got in cases:  # the same float64 operations: rounding only
        np.testing.assert_allclose(to_numpy(got), np.asarray(ref), rtol=1e-12, atol=1e-15)


def test_docs_example_runs():
    """The Python example of docs/beyond.md runs as written."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "beyond.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/beyond.md", "exec"), {})
