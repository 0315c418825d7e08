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


@given(st.integers(2, 6), st.integers(0, 10_000), st.sampled_from([0.1, 1.0, 10.0]))
def test_cross_entropy_grad_norm_hessian_trace_value_and_grad_match_autograd(c, seed, scale):
    """Against autograd on the plain formula: ‖∇ℓ‖₂, tr ∇²ℓ, and (ℓ, ∇ℓ) from value_and_grad.

    Also the closed form tr(diag(p) − p pᵀ) = 1 − ‖p‖² with p from autograd.numpy's own softmax
    (float64, unit-scale terms: a few ulps apart, hence rtol 1e-12).
    """
    rng = np.random.default_rng(seed)
    f = scale * rng.standard_normal((2, 3, c))  # a leading draw axis, as the engines pass it
    y = rng.integers(0, c, 3)
    L = dc.CrossEntropy()
    value, grad = L.value_and_grad(f, y)
    gn, tr = L.grad_norm(f, y), L.hessian_trace(f, y)
    assert gn.shape == tr.shape == value.shape == (2, 3) and grad.shape == f.shape
    for b in range(2):
        for i in range(3):
            g = autograd.grad(_ce)(f[b, i], y[i])
            H = autograd.hessian(_ce)(f[b, i], y[i])
            p = anp.exp(f[b, i] - anp.max(f[b, i]))
            p = p / anp.sum(p)
            assert_close(value[b, i], _ce(f[b, i], y[i]), rtol=1e-12, atol=1e-15)
            assert_close(grad[b, i], g, rtol=1e-12, atol=1e-15)
            assert_close(gn[b, i], np.linalg.norm(g), rtol=1e-12, atol=1e-15)
            assert_close(tr[b, i], np.trace(H), rtol=1e-12, atol=1e-15)
            assert_close(tr[b, i], 1.0 - np.sum(p * p), rtol=1e-12, atol=1e-15)


def test_confident_hessian_trace_and_grad_norm_keep_relative_accuracy():
    """For F = (40, 0, 0), exactly: ε = e^{-40}, S = 1 + 2ε, p = (1, ε, ε)/S, 1 − p_0 = 2ε/S,
    tr = Σ p_k(1 − p_k) = (2ε + 2ε(1 + ε)) / S², and for y = 0, ‖p − e_0‖ = sqrt(4ε² + 2ε²)/S =
    sqrt(6) ε / S.  1 − ‖p‖² written out would round to 0; each is accurate to a few ulps."""
    L = dc.CrossEntropy()
    f, y = np.array([[40.0, 0.0, 0.0]]), np.array([0])
    eps = np.exp(-40.0)
    s = 1.0 + 2.0 * eps
    assert_close(L.hessian_trace(f, y), np.array([(2 * eps + 2 * eps * (1 + eps)) / s**2]),
                 rtol=1e-15)
    assert_close(L.grad_norm(f, y), np.array([np.sqrt(6.0) * eps / s]), rtol=1e-15)
    # one-hot to rounding: the trace is exactly 0 (the ν → 0 limit of Theorem 4.1)
    assert L.hessian_trace(np.array([[1e4, -1e4, 0.0]]), np.array([1]))[0] == 0.0


def test_squared_loss_grad_norm_and_hessian_trace():
    rng = np.random.default_rng(1)
    f, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    L = dc.Squared()
    assert_close(L.grad_norm(f, y), np.linalg.norm(f - y, axis=1), rtol=1e-15)
    assert_close(L.hessian_trace(f, y), np.full(4, 3.0), rtol=0)
    value, grad = L.value_and_grad(f, y)
    assert_close(value, 0.5 * ((f - y) ** 2).sum(-1), rtol=1e-15)
    assert_close(grad, f - y, rtol=1e-15)
