"""Losses against autograd and closed forms; stability for large logits and confident
predictions.  Tolerances: float64 evaluations of the same function in different orders agree to
a few ulps (rtol 1e-12); mpmath-free accuracy checks use exact limits stated per test."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck.testing import assert_close


def _ce(f, y):
    m = anp.max(f)
    return anp.log(anp.sum(anp.exp(f - m))) + m - f[y]


@given(st.integers(2, 6), st.integers(0, 10_000), st.sampled_from([0.1, 1.0, 10.0]))
def test_cross_entropy_derivatives_match_autograd(c, seed, scale):
    rng = np.random.default_rng(seed)
    f = scale * rng.standard_normal((3, c))
    y = rng.integers(0, c, 3)
    v = rng.standard_normal((2, 3, c))
    L = dc.CrossEntropy()
    for i in range(3):
        assert_close(L.value(f, y)[i], _ce(f[i], y[i]), rtol=1e-12, atol=1e-15)
        assert_close(L.grad(f, y)[i], autograd.grad(_ce)(f[i], y[i]), rtol=1e-12, atol=1e-15)
        H = autograd.hessian(_ce)(f[i], y[i])
        assert_close(L.hessian(f, y)[i], H, rtol=1e-12, atol=1e-15)
        assert_close(L.hvp(f, y, v)[:, i], v[:, i] @ H, rtol=1e-12, atol=1e-15)
        A = L.hessian_factor(f, y)[i]
        assert_close(A @ A.T, H, rtol=1e-12, atol=1e-15)


def test_squared_loss_derivatives():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    L = dc.Squared()
    assert_close(L.value(f, y), 0.5 * ((f - y) ** 2).sum(-1), rtol=1e-15)
    assert_close(L.grad(f, y), f - y, rtol=1e-15)
    assert_close(L.hessian(f, y), np.broadcast_to(np.eye(3), (4, 3, 3)), rtol=0)


@pytest.mark.parametrize("big", [1e2, 1e3, 1e4])
def test_cross_entropy_stable_for_large_logits(big):
    L = dc.CrossEntropy()
    f = np.array([[big, -big, 0.0], [-big, big, 0.0]])
    y = np.array([1, 1])
    val = L.value(f, y)
    # exact: ℓ = log(e^{2big} + 1 + e^{big}) − 0 ≈ 2·big for row 0; ≈ e^{-big} for row 1
    assert_close(val[0], np.float64(2 * big) + np.log1p(np.exp(-big) + np.exp(-2 * big)),
                 rtol=1e-15)
    assert 0.0 <= val[1] <= 2 * np.exp(-big) * (1 + 1e-15)
    assert np.all(np.isfinite(L.grad(f, y))) and np.all(np.isfinite(L.hessian(f, y)))


def test_confident_prediction_keeps_relative_accuracy():
    """ℓ = log(1 + 2e^{-40}) = 2e^{-40}(1 − e^{-40}) to 1 ulp; 1 − p_y likewise."""
    L = dc.CrossEntropy()
    f, y = np.array([[40.0, 0.0, 0.0]]), np.array([0])
    exact = 2 * np.exp(-40.0)
    assert_close(L.value(f, y), np.array([exact]), rtol=4e-16)
    assert_close(-L.grad(f, y)[0, 0], exact, rtol=4e-16)
