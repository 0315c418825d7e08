"""Exact expectations against an independent brute-force loop, across chunk sizes, and
Monte-Carlo counterparts against exact values.

Tolerances: the engine and the brute force sum the same ≤ 2^10 float64 terms in different
orders: relative error ≤ 2^10·2^-53 ≈ 1e-13; 1e-11 leaves room for the covariance subtraction.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck.testing import assert_close, brute_force_expectation

RTOL = 1e-11


def _case(seed, sites=("h1",), sizes=(3, 4, 3), act="tanh"):
    net = dc.MLP.random(list(sizes), activation=act, sites=sites, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, sizes[0]))
    y = rng.integers(0, sizes[-1], 3)
    return net, x, y


@given(st.integers(0, 1000), st.sampled_from([0.0, 0.1, 0.5, 0.8]),
       st.sampled_from([("h1",), ("x",), ("x", "h1")]),
       st.sampled_from(["tanh", "relu", "sigmoid"]))
def test_expected_loss_and_r_drop_match_brute_force(seed, q, sites, act):
    net, x, y = _case(seed, sites, act=act)
    brute = brute_force_expectation(net, x, q, lambda nz: net.loss_value(x, y, nz), sites)
    assert_close(dc.exact.expected_loss(net, x, y, q), brute, rtol=RTOL)
    clean = np.asarray(net.loss_value(x, y))
    r = np.asarray(dc.exact.explicit_regularizer(net, x, y, q))
    # R_drop is a difference of O(1) numbers: compare with absolute slack of a few ulps of ℓ
    assert_close(r, brute - clean, rtol=RTOL, atol=1e-14 * np.abs(clean).max())
    if q == 0.0:
        assert np.all(r == 0.0)


@given(st.integers(0, 1000), st.sampled_from([0.2, 0.6]))
def test_gradient_mean_and_covariance_match_brute_force(seed, q):
    net, x, y = _case(seed)

    def grads(nz):
        tr = net.trace(x, {s: e[None, None] for s, e in nz.items()})
        return dc.exact.loss_gradients(net, tr, y)[0]

    m1 = brute_force_expectation(net, x, q, grads)
    m2 = brute_force_expectation(net, x, q, lambda nz: np.einsum("ia,ib->iab", grads(nz),
                                                                  grads(nz)))
    cov = m2 - np.einsum("ia,ib->iab", m1, m1)
    assert_close(dc.exact.expected_gradient(net, x, y, q), m1, rtol=RTOL, atol=1e-13)
    assert_close(dc.exact.gradient_noise_cov(net, x, y, q), cov, rtol=1e-9, atol=1e-13)
    V = np.random.default_rng(seed).standard_normal((net.n_params, 3))
    assert_close(dc.exact.gradient_noise_cov(net, x, y, q, directions=V),
                 np.einsum("pa,ipq,qb->iab", V, cov, V), rtol=1e-9, atol=1e-12)
    assert_close(dc.exact.dropout_k_cov(net, x, y, q, k=4), cov.sum(0) / (9 * 4), rtol=1e-9,
                 atol=1e-13)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
def test_result_does_not_depend_on_chunk_size(chunk):
    net, x, y = _case(5, sites=("x", "h1"))
    ref = dc.exact.explicit_regularizer(net, x, y, {"x": 0.3, "h1": 0.5})
    got = dc.exact.explicit_regularizer(net, x, y, {"x": 0.3, "h1": 0.5}, chunk_size=chunk)
    assert_close(got, ref, rtol=1e-12, atol=1e-16)
    ref_c = dc.exact.gradient_noise_cov(net, x, y, 0.4)
    assert_close(dc.exact.gradient_noise_cov(net, x, y, 0.4, chunk_size=chunk), ref_c,
                 rtol=1e-11, atol=1e-15)


def test_single_example_drops_batch_axis():
    net, x, y = _case(2)
    r = dc.exact.explicit_regularizer(net, x[0], y[0], 0.3)
    assert r.shape == ()
    assert_close(r, dc.exact.explicit_regularizer(net, x, y, 0.3)[0], rtol=1e-14)
    assert dc.exact.gradient_noise_cov(net, x[0], y[:1], 0.3).shape == (net.n_params,) * 2


def test_mask_limit_refuses_before_work_and_names_alternative():
    net = dc.MLP.random([4, 30, 3], sites=("h1",), seed=0)
    x, y = np.ones((1, 4)), np.array([0])
    with pytest.raises(dc.TooManyMasksError) as exc:
        dc.exact.explicit_regularizer(net, x, y, 0.5)
    msg = str(exc.value)
    assert "2^30" in msg and "dropcheck.montecarlo" in msg and "max_masks" in msg
    with pytest.raises(dc.TooManyMasksError, match="2\\^30"):
        dc.exact.gradient_noise_cov(net, x, y, 0.5)
    # q = 0 never drops: one mask, R_drop = 0 exactly
    assert float(dc.exact.explicit_regularizer(net, x, y, 0.0)[0]) == 0.0


def test_montecarlo_within_standard_error():
    """Seeded: |estimate − exact| ≤ 5 standard errors. For a Gaussian limit the false-alarm
    probability per compared entry is 5.7e-7; over the ≤ 200 entries below, ≤ 1.2e-4."""
    net, x, y = _case(11, sites=("x", "h1"))
    q = 0.3
    rng = np.random.default_rng(1)
    for fn in ("expected_loss", "explicit_regularizer", "expected_gradient"):
        est = getattr(dc.montecarlo, fn)(net, x, y, q, samples=4000, rng=rng)
        exact = np.asarray(getattr(dc.exact, fn)(net, x, y, q))
        z = np.abs(np.asarray(est.value) - exact) / np.maximum(np.asarray(est.stderr), 1e-300)
        assert np.all(z <= 5), (fn, z.max())
    V = rng.standard_normal((net.n_params, 3))
    est = dc.montecarlo.gradient_noise_cov(net, x, y, q, samples=4000, rng=rng, directions=V)
    exact = np.asarray(dc.exact.gradient_noise_cov(net, x, y, q, directions=V))
    z = np.abs(np.asarray(est.value) - exact) / np.asarray(est.stderr)
    assert np.all(z <= 5), z.max()


def test_enumerate_masks_probabilities_sum_to_one_and_match_rates():
    chunks = list(dc.noise.enumerate_masks({"a": 3, "b": 2}, {"a": 0.2, "b": 0.7}, chunk_size=5))
    p = np.concatenate([np.asarray(c.prob) for c in chunks])
    assert p.shape == (32,)
    assert abs(p.sum() - 1) < 1e-15
    eta_a = np.concatenate([np.asarray(c.eta["a"]) for c in chunks])
    assert_close(p @ (eta_a == -1.0), np.full(3, 0.2), rtol=1e-14)
