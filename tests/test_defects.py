"""Regression tests for the defects of issue 18's fuzz campaign, one test per defect row.

Each test failed on the commit before the fix (a835dd0, checked by running its body there with
the old argument names) and names the defect it guards.  Every refusal is checked for its type
and for naming the argument, as the one validation layer (:mod:`dropcheck._validate`) promises.
"""

from __future__ import annotations

import numpy as np
import pytest

import dropcheck as dc
from dropcheck import classical, exact, explicit, implicit, montecarlo, theory


@pytest.fixture
def case():
    net = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((2, 3)), np.array([0, 2])


# ----- defect 1: duplicated sites -------------------------------------------------------------
def test_defect01_duplicate_sites_refused(case):
    """``sites=("h1", "h1")`` doubled the value of taylor, r_approx, … (exact.* deduplicated):
    one rule everywhere now, a ValueError naming the duplicate (Model.check_sites)."""
    net, x, y = case
    dup = ("h1", "h1")
    calls = {
        "taylor": lambda: explicit.taylor(net, x, y, 0.2, sites=dup),
        "small_q_limit": lambda: explicit.small_q_limit(net, x, y, sites=dup),
        "r_approx": lambda: explicit.r_approx(net, x, y, sites=dup),
        "r_approx_grad": lambda: explicit.r_approx_grad(net, x, y, sites=dup),
        "r_approx_sampled": lambda: explicit.r_approx_sampled(net, x, y, sites=dup, samples=4),
        "xi_approx_cov": lambda: implicit.xi_approx_cov(net, x, y, 0.2, sites=dup),
        "exact.expected_loss": lambda: exact.expected_loss(net, x, y, 0.2, sites=dup),
        "montecarlo.expected_loss": lambda: montecarlo.expected_loss(
            net, x, y, 0.2, sites=dup, samples=4),
        "mc_dropout": lambda: classical.mc_dropout(net, x, 0.2, sites=dup, samples=4),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"sites names \['h1'\] more than once"):
            call()
        assert name  # the loop names the failing entry point in the traceback


# ----- defect 2: seeds of every form ----------------------------------------------------------
def test_defect02_equal_seeds_give_equal_unbiased_covariances():
    """``gradient_noise_cov(seed=np.int64(5))`` replayed its first pass in the second (biased by
    (N−1)/(N+1)); now 5, np.int64(5) and SeedSequence(5) are one seed and the passes differ."""
    net = dc.MLP.random([2, 1, 2], sites=("h1",), seed=3)  # one unit, two-point noise
    x, y = np.array([[0.7, -1.2]]), np.array([1])
    kw = {"samples": 5, "sites": ("h1",)}
    ref = montecarlo.gradient_noise_cov(net, x, y, 0.5, rng=5, **kw).value
    for seed in (np.int64(5), np.uint32(5), np.random.SeedSequence(5)):
        np.testing.assert_array_equal(
            montecarlo.gradient_noise_cov(net, x, y, 0.5, rng=seed, **kw).value, ref)
    # unbiased: the trace of the estimate averaged over R seeds (numpy integers, the form that
    # replayed) against the exact trace.  The replay bias is the factor 2/3 at N = 5; R = 600
    # runs put it ~9 standard errors away, and |z| < 4 has a false-alarm rate of 6e-5 (the
    # seeds are fixed, so the test is deterministic).
    truth = float(np.trace(np.asarray(exact.gradient_noise_cov(net, x, y, 0.5, sites=("h1",)))[0]))
    tr = np.array([
        np.trace(np.asarray(montecarlo.gradient_noise_cov(
            net, x, y, 0.5, rng=np.int64(s), **kw).value)[0]) for s in range(600)
    ])
    z = (tr.mean() - truth) / (tr.std(ddof=1) / np.sqrt(tr.size))
    assert abs(z) < 4, (tr.mean(), truth, z)


# ----- defect 4: montecarlo chunk_size --------------------------------------------------------
@pytest.mark.parametrize("bad, err", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                      (True, TypeError)])
def test_defect04_montecarlo_chunk_size_validated(case, bad, err):
    """``chunk_size=0`` hung, -1/2.5/True gave raw numpy errors: validated as in exact now."""
    net, x, y = case
    for fn in (montecarlo.expected_loss, montecarlo.expected_gradient,
               montecarlo.gradient_noise_cov):
        with pytest.raises(err, match="chunk_size must be an integer >= 1"):
            fn(net, x, y, 0.3, samples=8, rng=0, chunk_size=bad)
    with pytest.raises(err, match="chunk_size must be an integer >= 1"):
        exact.expected_loss(net, x, y, 0.3, chunk_size=bad, method="batched")


# ----- defect 5: empty batch ------------------------------------------------------------------
def test_defect05_empty_batch_refused_naming_x(case):
    """An empty batch ``(0, d)`` gave ZeroDivisionError, concatenate errors or ``[]``: the one
    documented rule is a ValueError naming x (a mean over no examples is undefined)."""
    net, _, _ = case
    x0, y0 = np.ones((0, 3)), np.zeros(0, dtype=int)
    calls = [
        lambda: exact.expected_loss(net, x0, y0, 0.2),
        lambda: exact.expected_gradient(net, x0, y0, 0.2),
        lambda: montecarlo.expected_loss(net, x0, y0, 0.2, samples=4),
        lambda: explicit.r_approx(net, x0, y0),
        lambda: explicit.taylor(net, x0, y0, 0.2),
        lambda: explicit.r_approx_sampled(net, x0, y0, samples=4),
        lambda: implicit.xi_approx(net, x0, y0, 0.2),
        lambda: implicit.dropout_k_gradient(net, x0, y0, 0.2, k=2),
        lambda: classical.mc_dropout(net, x0, 0.2, samples=4),
        lambda: classical.geometric_mean_predict(net, x0, 0.2),
        lambda: net.forward(x0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"x holds no examples \(shape \(0, 3\)\)"):
            call()


# ----- defect 6: complex and string arrays, string q ------------------------------------------
def test_defect06_complex_string_inputs_and_string_q_refused(case):
    """Complex x lost its imaginary part (ComplexWarning), strings were parsed as numbers and
    ``q="0.3"`` was accepted: each is a TypeError naming the argument now."""
    net, x, y = case
    for bad in (x + 1j, x.astype(str)):
        for call in (lambda b=bad: exact.expected_loss(net, b, y, 0.2),
                     lambda b=bad: montecarlo.expected_loss(net, b, y, 0.2, samples=4),
                     lambda b=bad: explicit.r_approx(net, b, y),
                     lambda b=bad: implicit.xi_approx(net, b, y, 0.2),
                     lambda b=bad: classical.mc_dropout(net, b, 0.2, samples=4),
                     lambda b=bad: classical.ridge_penalty(np.ones((2, 3)), b, 0.2)):
            with pytest.raises(TypeError, match="x must hold real numbers"):
                call()
    sq = dc.Linear.random(3, 1, loss="squared")
    for bad in (np.array([[0.5j], [1.0]]), np.array([["0.5"], ["1"]])):
        with pytest.raises(TypeError, match="y must hold real numbers"):
            exact.expected_loss(sq, x, bad, 0.2)
    for call in (lambda: exact.expected_loss(net, x, y, "0.3"),
                 lambda: explicit.taylor(net, x, y, "0.3"),
                 lambda: implicit.xi_approx(net, x, y, "0.3"),
                 lambda: classical.ridge_penalty(np.ones((2, 3)), x, "0.3")):
        with pytest.raises(TypeError, match="q must be a float drop probability"):
            call()
    with pytest.raises(TypeError, match="directions must hold real numbers"):
        exact.gradient_noise_cov(net, x, y, 0.2, directions=np.ones((net.n_params, 2)) * 1j)


# ----- defect 7: NaN/inf in secondary arrays --------------------------------------------------
def test_defect07_nonfinite_secondary_arrays_refused(case):
    """NaN in ``directions``, ``xi_drop(mean=)``, ``xi_approx_at(eta=)``, ``forward(noise=)``,
    ``ridge_penalty`` and ``norm21`` came back as NaN: a ValueError naming the argument now."""
    net, x, y = case
    P = net.n_params
    V = np.ones((P, 2))
    V[0, 0] = np.nan
    mu = np.zeros((2, P))
    mu[1, 3] = np.inf
    eta = np.ones((2, 4))
    eta[0, 0] = np.nan
    W = np.ones((2, 3))
    W[1, 1] = np.nan
    calls = {
        "directions": [lambda: exact.gradient_noise_cov(net, x, y, 0.2, directions=V),
                       lambda: montecarlo.gradient_noise_cov(net, x, y, 0.2, samples=4,
                                                             directions=V),
                       lambda: implicit.xi_approx_cov(net, x, y, 0.2, directions=V)],
        "mean": [lambda: implicit.xi_drop(net, x, y, 0.2, mean=mu)],
        r"eta\['h1'\]": [lambda: implicit.xi_approx_at(net, x, y, {"h1": eta})],
        r"noise\['h1'\]": [lambda: net.forward(x, {"h1": eta})],
        "W": [lambda: classical.ridge_penalty(W, x, 0.2)],
        "M": [lambda: theory.norm21(W)],
    }
    for name, fns in calls.items():
        for call in fns:
            with pytest.raises(ValueError, match=f"{name} must be finite"):
                call()


# ----- defect 11: numpy integers as counts ----------------------------------------------------
def test_defect11_numpy_integer_counts_accepted(case):
    """"samples must be an integer >= 2, got np.int64(100)": any integer type is a count now
    (operator.index), with the same result as the Python int."""
    net, x, y = case
    i = np.int64
    pairs = [
        (lambda c: montecarlo.expected_loss(net, x, y, 0.3, samples=c(50), rng=c(3),
                                            chunk_size=c(7)).value),
        (lambda c: classical.mc_dropout(net, x, 0.3, samples=c(20), rng=c(3)).mean),
        (lambda c: implicit.xi_drop(net, x, y, 0.3, samples=c(3), rng=c(3))),
        (lambda c: implicit.dropout_k_gradient(net, x, y, 0.3, k=c(2), samples=c(2), rng=c(3))),
        (lambda c: explicit.r_approx_probe(net, x, y, samples=c(6), rng=c(3)).value),
        (lambda c: exact.dropout_k_cov(net, x, y, 0.3, k=c(3), max_masks=c(2**20))),
    ]
    for fn in pairs:
        np.testing.assert_array_equal(np.asarray(fn(i)), np.asarray(fn(int)))


# ----- defect 14: messages --------------------------------------------------------------------
def test_defect14_messages_name_the_argument_and_a_fix_that_exists(case):
    """``sites=5`` gave "'int' object is not iterable", ``seed=-1`` "expected non-negative
    integer", ``max_masks=nan`` "cannot convert float NaN", refusals pointed to "dropcheck.
    montecarlo (same name …)" for functions without one and showed internal names ``h1#0``."""
    net, x, y = case
    with pytest.raises(TypeError, match=r"sites must be a site name, an iterable of site names"):
        exact.expected_loss(net, x, y, 0.2, sites=5)
    with pytest.raises(TypeError, match=r"sites must be a site name"):
        explicit.taylor(net, x, y, 0.2, sites=5)
    with pytest.raises(ValueError, match=r"rng: a seed must be a non-negative integer, got -1"):
        montecarlo.expected_loss(net, x, y, 0.2, samples=4, rng=-1)
    with pytest.raises(TypeError, match=r"max_masks must be an integer >= 1, got float nan"):
        exact.expected_loss(net, x, y, 0.2, max_masks=float("nan"))
    with pytest.raises(dc.TooManyMasksError, match=r"dropcheck\.montecarlo\.expected_loss\("):
        exact.expected_loss(net, x, y, 0.2, max_masks=4)
    with pytest.raises(dc.TooManyMasksError, match=r"dropcheck\.classical\.mc_dropout\(") as e:
        classical.geometric_mean_predict(net, x, 0.2, max_masks=4)
    assert "same name" not in str(e.value)
    with pytest.raises(dc.TooManyMasksError) as e:
        exact.replicated_expectation(net, x, 0.2, 2, lambda tr, p: (p,), max_masks=4)
    assert "#" not in str(e.value) and "h1 (×2 copies)" in str(e.value)


# ----- defect 15: float16 ---------------------------------------------------------------------
def test_defect15_float16_refused_and_theorem41_in_float64(case):
    """float16 MLPs ran in float16 and theorem41 computed θ in float16 (inf, NaN rhs): float16
    models and inputs are refused naming them; theorem41 computes float16 input in float64."""
    net, x, y = case
    half = dc.MLP.random([3, 4, 3], sites=("h1",), seed=0, dtype=np.float16)
    with pytest.raises(TypeError, match="model's parameters are float16"):
        exact.expected_loss(half, x, y, 0.2)
    with pytest.raises(TypeError, match="x is float16"):
        exact.expected_loss(net, x.astype(np.float16), y, 0.2)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 4)).astype(np.float16)
    X = (30 * rng.standard_normal((50, 4))).astype(np.float16)  # θ ≈ log³(150)·max‖x‖² > 65504
    Y = rng.integers(0, 3, 50)
    got = theory.theorem41(W, X, Y, B=4.0, delta=0.1)
    want = theory.theorem41(W.astype(np.float64), X.astype(np.float64), Y, B=4.0, delta=0.1)
    assert np.isfinite(got.rhs) and got.theta > 65504
    # the same float64 computation on the same (float16-representable) values: equal bits
    assert (got.rhs, got.theta, got.mu, got.nu) == (want.rhs, want.theta, want.mu, want.nu)
