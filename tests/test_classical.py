"""Classical dropout results (seed 002): ridge, weight scaling, geometric mean, MC dropout.

Oracles: :func:`dropcheck.exact.explicit_regularizer` (ridge), a plain ``itertools`` loop over
keep masks with one forward per mask (geometric and arithmetic means, both conventions), and the
literal weight-scaling rule (a copy of the network with the weights leaving each site times p).
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck import classical as cl
from dropcheck.backend import namespace, to_numpy
from dropcheck.losses import log_softmax, softmax
from dropcheck.testing import assert_close

# Exact sums of ≤ 2^8 float64 terms of size ≲ 10 taken in different orders: rounding ≲
# 2^8·1.1e-16·10 ≈ 3e-13 absolute; probabilities and penalties are O(1) or smaller.
ATOL = 1e-12
RTOL = 1e-11


def _brute(net, x, q, sites, fn, convention="inverted"):
    """``Σ_m P(m) fn(logits_m)`` by an itertools loop over keep masks, one forward per mask."""
    widths = [net.widths[s] for s in sites]
    total = 0.0
    for bits in itertools.product((0, 1), repeat=sum(widths)):
        noise, prob, i = {}, 1.0, 0
        for s, d in zip(sites, widths, strict=True):
            m = np.array(bits[i : i + d], dtype=float)
            i += d
            prob *= math.prod((1 - q) if b else q for b in m)
            scale = m / (1 - q) if convention == "inverted" else m  # the sub-network's factor
            noise[s] = scale - 1.0
        total = total + prob * np.asarray(fn(np.asarray(net.forward(x, noise))))
    return total


def _net(seed, sizes=(3, 4, 3), sites=("x", "h1"), act="tanh"):
    net = dc.MLP.random(list(sizes), activation=act, sites=sites, seed=seed)
    return net, np.random.default_rng(seed).standard_normal((3, sizes[0]))


# ----------------------------------------------------------------------------- ridge


@given(st.integers(0, 10_000), st.sampled_from([0.05, 0.3, 0.5, 0.9]), st.sampled_from([1, 2]))
def test_ridge_penalty_is_the_exact_regularizer_of_least_squares(seed, q, c):
    rng = np.random.default_rng(seed)
    lin = dc.Linear.random(5, c, rng=rng, seed=None, loss="squared")
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, c))
    exact = np.asarray(dc.exact.explicit_regularizer(lin, x, y, q))
    closed = cl.ridge_penalty(lin.params["W1"], x, q)
    clean = np.asarray(lin.loss_value(x, y))
    # R_drop = Σ_m P(m)(ℓ_m − ℓ): each difference of O(ℓ) numbers carries ~eps·ℓ rounding
    assert_close(closed, exact, rtol=RTOL, atol=1e-14 * max(1.0, float(np.max(clean))))
    if c == 1:  # W of shape (d,) and a single example give a 0-d result
        r1 = cl.ridge_penalty(lin.params["W1"][0], x[0], q)
        assert r1.shape == ()
        assert_close(r1, exact[0], rtol=RTOL, atol=1e-14 * max(1.0, float(np.max(clean))))


def test_ridge_penalty_lambda_at_half():
    # seed 002: keep p = 0.5 gives λ = (1−p)/p = 1, so R = ½ Σ w_j² x_j²
    w, x = np.array([1.0, -2.0, 0.5]), np.array([3.0, 1.0, -2.0])
    assert float(cl.ridge_penalty(w, x, 0.5)) == 0.5 * (9.0 + 4.0 + 1.0)
    assert float(cl.ridge_penalty(w, x, 0.0)) == 0.0


# ----------------------------------------------------------------------------- means


@given(st.integers(0, 10_000), st.sampled_from([0.1, 0.5, 0.8]),
       st.sampled_from([("x",), ("h1",), ("x", "h1")]), st.sampled_from(["tanh", "relu"]),
       st.sampled_from(cl.CONVENTIONS))
def test_geometric_and_arithmetic_means_match_brute_force(seed, q, sites, act, conv):
    net, x = _net(seed, sites=sites, act=act)
    logg = _brute(net, x, q, sites, lambda z: log_softmax(z), conv)
    g = cl.geometric_mean_predict(net, x, q, sites=sites, convention=conv)
    assert_close(g, softmax(logg), rtol=RTOL, atol=ATOL)
    mean = _brute(net, x, q, sites, lambda z: softmax(z), conv)
    second = _brute(net, x, q, sites, lambda z: softmax(z) ** 2, conv)
    m, v = cl.predictive_moments(net, x, q, sites=sites, convention=conv)
    assert_close(m, mean, rtol=RTOL, atol=ATOL)
    # the brute-force variance E[s²] − E[s]² cancels: absolute slack of a few eps of E[s²] ≤ 1
    assert_close(v, np.maximum(second - mean**2, 0.0), rtol=1e-9, atol=1e-14)
    assert_close(cl.arithmetic_mean_predict(net, x, q, sites=sites, convention=conv), mean,
                 rtol=RTOL, atol=ATOL)
    # chunking changes only the summation order
    assert_close(cl.geometric_mean_predict(net, x, q, sites=sites, convention=conv, chunk_size=3),
                 g,
                 rtol=RTOL, atol=ATOL)


def test_single_example_shapes():
    net, x = _net(0)
    for f in (cl.geometric_mean_predict, cl.arithmetic_mean_predict, cl.weight_scaled_predict):
        p = f(net, x[0], 0.3)
        assert p.shape == (3,)
        assert_close(p, f(net, x, 0.3)[0], rtol=1e-14, atol=1e-15)
    m, v = cl.predictive_moments(net, x[1], 0.3)
    assert m.shape == v.shape == (3,)


def test_weight_scaled_predict_is_the_literal_weight_scaling_rule():
    net, x = _net(3, sizes=(3, 4, 4, 3), sites=("x", "h2"))
    q = {"x": 0.2, "h2": 0.5}
    # inverted: the full network unchanged
    assert_close(cl.weight_scaled_predict(net, x, q), softmax(np.asarray(net.forward(x))),
                 rtol=1e-14, atol=1e-16)
    # original: weights leaving each site multiplied by p = 1 − q (site x feeds W1, h2 feeds W3)
    scaled = dict(net.params)
    scaled["W1"] = scaled["W1"] * 0.8
    scaled["W3"] = scaled["W3"] * 0.5
    ref = softmax(np.asarray(net.with_params(scaled).forward(x)))
    assert_close(cl.weight_scaled_predict(net, x, q, convention="original"), ref,
                 rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("conv", cl.CONVENTIONS)
@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.9])
def test_single_layer_softmax_geometric_mean_is_weight_scaling(conv, q):
    # seed 002 / Baldi & Sadowski: exact when the logits are affine in the mask; the same
    # rounding bound as above (≤ 2^8 masks)
    rng = np.random.default_rng(1)
    lin = dc.Linear.random(8, 4, rng=rng, seed=None)
    x = 2.0 * rng.standard_normal((5, 8))
    assert_close(cl.geometric_mean_predict(lin, x, q, convention=conv),
                 cl.weight_scaled_predict(lin, x, q, convention=conv), rtol=RTOL, atol=ATOL)
    # dropout only on the layer feeding the decoder: also affine in the mask
    net, xh = _net(2, sizes=(3, 5, 6, 3), sites=("h2",))
    assert_close(cl.geometric_mean_predict(net, xh, q, convention=conv),
                 cl.weight_scaled_predict(net, xh, q, convention=conv), rtol=RTOL, atol=ATOL)


def test_geometric_mean_differs_once_a_nonlinearity_follows_the_site():
    # the negative control: input dropout under a tanh layer is not affine in the mask
    net, x = _net(4, sites=("x",))
    gap = np.abs(cl.geometric_mean_predict(net, x, 0.5) - cl.weight_scaled_predict(net, x, 0.5))
    assert gap.max() > 1e-3


# ----------------------------------------------------------------------------- MC dropout


def test_mc_dropout_within_its_standard_errors():
    net, x = _net(5, sizes=(3, 4, 4, 3), sites=("h1", "h2"))
    q, T = 0.5, 4000
    mean, var = (np.asarray(a) for a in cl.predictive_moments(net, x, q))
    mu4 = _brute(net, x, q, ("h1", "h2"), lambda z: (softmax(z) - mean) ** 4)
    mc = cl.mc_dropout(net, x, q, samples=T, rng=np.random.default_rng(12345))
    # 9 mean + 9 variance entries, each within 5 stated SEs: under the CLT (T = 4000) the
    # two-sided false-alarm rate is 18·5.7e-7 ≈ 1e-5 (the run is seeded, so it is fixed)
    assert np.all(np.abs(mc.mean - mean) <= 5 * mc.mean_stderr)
    assert np.all(np.abs(mc.var - var) <= 5 * mc.var_stderr)
    # the stated SEs estimate the exact ones: a sample sd of n draws with kurtosis κ has relative
    # sd ≈ ½ sqrt((κ−1)/T); allow 5 of those (κ from the exact moments)
    kurt = float(np.max(mu4 / var**2))
    tol = 5 * 0.5 * math.sqrt((kurt - 1) / T)
    assert_close(mc.mean_stderr, np.sqrt(var / T), rtol=tol)
    exact_var_se = np.sqrt((mu4 - (T - 3) / (T - 1) * var**2) / T)
    # the variance's SE involves 8th moments: its relative error is larger; 4·tol is generous
    assert_close(mc.var_stderr, exact_var_se, rtol=4 * tol)


def test_mc_dropout_chunks_and_small_T():
    net, x = _net(6, sites=("h1",))
    a = cl.mc_dropout(net, x, 0.3, samples=50, rng=np.random.default_rng(0))
    b = cl.mc_dropout(net, x, 0.3, samples=50, rng=np.random.default_rng(0), chunk_size=7)
    # one site: the same uniform stream whatever the chunking; only summation order differs
    assert_close(a.mean, b.mean, rtol=1e-13, atol=1e-15)
    assert_close(a.var, b.var, rtol=1e-9, atol=1e-15)
    one = cl.mc_dropout(net, x[0], 0.3, samples=1, rng=7)  # int seed; T = 1 has no variance
    assert one.mean.shape == (3,)
    assert np.all(np.isnan(one.var)) and np.all(np.isnan(one.mean_stderr))
    assert_close(np.sum(one.mean), 1.0, rtol=1e-15)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("q", [-0.1, 1.0, float("nan")])
def test_bad_q(q):
    net, x = _net(0)
    for call in (
        lambda: cl.geometric_mean_predict(net, x, q),
        lambda: cl.weight_scaled_predict(net, x, q),
        lambda: cl.arithmetic_mean_predict(net, x, q),
        lambda: cl.mc_dropout(net, x, q, samples=10, rng=np.random.default_rng(0)),
        lambda: cl.ridge_penalty(np.ones(3), x, q),
    ):
        with pytest.raises(ValueError, match="q must be a drop probability in \\[0, 1\\)"):
            call()


def test_bad_arguments_are_named():
    net, x = _net(0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1, got 0"):
        cl.mc_dropout(net, x, 0.5, samples=0, rng=rng)
    with pytest.raises(TypeError, match="samples must be an integer"):
        cl.mc_dropout(net, x, 0.5, samples=2.5, rng=rng)
    with pytest.raises(TypeError, match="rng must be"):
        cl.mc_dropout(net, x, 0.5, samples=10, rng="0")
    with pytest.raises(ValueError, match="x must have shape \\(n, 3\\)"):
        cl.geometric_mean_predict(net, np.ones((2, 4)), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        cl.mc_dropout(net, np.ones((2, 2, 3)), 0.5, samples=10, rng=rng)
    with pytest.raises(ValueError, match="convention must be one of"):
        cl.weight_scaled_predict(net, x, 0.5, convention="scaled")
    with pytest.raises(ValueError, match="sites: \\['h9'\\] are not dropout sites"):
        cl.arithmetic_mean_predict(net, x, 0.5, sites=("h9",))
    with pytest.raises(ValueError, match="W must have shape \\(c, d\\) or \\(d,\\)"):
        cl.ridge_penalty(np.ones((2, 3, 4)), np.ones(4), 0.5)
    with pytest.raises(ValueError, match="x must have shape \\(n, 3\\) or \\(3,\\)"):
        cl.ridge_penalty(np.ones((2, 3)), np.ones((5, 4)), 0.5)
    with pytest.raises(dc.TooManyMasksError, match="geometric_mean_predict"):
        cl.geometric_mean_predict(net, x, 0.5, max_masks=16)


# ----------------------------------------------------------------------------- backends


def test_runs_in_every_namespace(xp_case):
    name, xp, conv = xp_case
    ref, x = _net(8, sites=("x", "h1"))
    ws = [conv(np.asarray(ref.params[f"W{i}"])) for i in (1, 2)]
    bs = [conv(np.asarray(ref.params[f"b{i}"])) for i in (1, 2)]
    net = dc.MLP(ws, bs, "tanh", ("x", "h1"))
    xb = conv(x)
    for f in (cl.geometric_mean_predict, cl.arithmetic_mean_predict, cl.weight_scaled_predict):
        for c in cl.CONVENTIONS:
            out = f(net, xb, 0.3, convention=c)
            assert namespace(out) is namespace(xb)
            assert_close(to_numpy(out), np.asarray(f(ref, x, 0.3, convention=c)), rtol=1e-13,
                         atol=1e-15, check_namespace=False)
    mc = cl.mc_dropout(net, xb, 0.3, samples=20, rng=np.random.default_rng(0))
    mc_ref = cl.mc_dropout(ref, x, 0.3, samples=20, rng=np.random.default_rng(0))
    assert namespace(mc.var_stderr) is namespace(xb)
    assert_close(to_numpy(mc.var), np.asarray(mc_ref.var), rtol=1e-12, atol=1e-16,
                 check_namespace=False)
    r = cl.ridge_penalty(ws[0], xb, 0.3)
    assert namespace(r) is namespace(xb)
    assert_close(to_numpy(r), np.asarray(cl.ridge_penalty(np.asarray(ref.params["W1"]), x, 0.3)),
                 rtol=1e-14, check_namespace=False)
