"""The signature shim and rng resolution of ``dropcheck._api``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dropcheck import _api


def _make():
    @_api.accepts_old_signature(positional=("rng", "draws"), renamed={"draws": "samples",
                                                                     "seed": "rng"})
    def f(a, b, /, *, rng=None, samples=1, sites=None):
        return a, b, rng, samples, sites

    return f


def test_new_signature_passes_through_without_warning():
    f = _make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(1, 2, rng=3, samples=4) == (1, 2, 3, 4, None)


def test_old_positional_and_keyword_names_map_with_one_warning_each():
    f = _make()
    with pytest.warns(DeprecationWarning, match="'rng' positionally"):
        assert f(1, 2, 7) == (1, 2, 7, 1, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use of the same old form does not warn again
        assert f(1, 2, 8) == (1, 2, 8, 1, None)
    with pytest.warns(DeprecationWarning, match="'draws' positionally"):
        assert f(1, 2, 7, 9) == (1, 2, 7, 9, None)
    with pytest.warns(DeprecationWarning, match="'seed' is deprecated"):
        assert f(1, 2, seed=5)[2] == 5


def test_conflicts_and_too_many_positionals_are_type_errors():
    f = _make()
    with pytest.raises(TypeError, match="both 'seed'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f(1, 2, seed=5, rng=6)
    with pytest.raises(TypeError, match="positional arguments"):
        f(1, 2, 3, 4, 5)
    with pytest.raises(TypeError, match="both positionally"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f(1, 2, 3, rng=4)


@pytest.mark.parametrize("seed", [5, np.int64(5), np.random.SeedSequence(5)])
def test_resolve_rng_equal_seeds_give_equal_streams(seed):
    ref = np.random.default_rng(5).random(4)
    np.testing.assert_array_equal(_api.resolve_rng(seed).random(4), ref)


def test_resolve_rng_none_is_the_fixed_default_and_generators_pass_through():
    a, b = _api.resolve_rng(None).random(3), _api.resolve_rng(None).random(3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.default_rng(_api.DEFAULT_SEED).random(3))
    g = np.random.default_rng(1)
    assert _api.resolve_rng(g) is g


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (2.5, TypeError), (True, TypeError),
                                      ("3", TypeError)])
def test_resolve_rng_bad_input_names_the_argument(bad, err):
    with pytest.raises(err, match="rng"):
        _api.resolve_rng(bad)


# ----- the public functions: old calls still work, with one DeprecationWarning each ------------
import dropcheck as dc  # noqa: E402


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each test sees its deprecations warn (they warn once per process otherwise)."""
    monkeypatch.setattr(_api, "_WARNED", set())


@pytest.fixture
def case():
    net = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
    return net, np.random.default_rng(1).standard_normal((2, 3)), np.array([0, 2])


def test_old_draws_maps_to_samples(fresh_warnings, case):
    net, x, y = case
    new = dc.implicit.xi_drop(net, x, y, 0.3, samples=3, rng=4)
    with pytest.warns(DeprecationWarning, match="'draws' is deprecated; use samples="):
        old = dc.implicit.xi_drop(net, x, y, 0.3, draws=3, rng=4)
    np.testing.assert_array_equal(old, new)
    with pytest.warns(DeprecationWarning, match="passing 'draws' positionally"):
        old = dc.implicit.xi_approx(net, x, y, 0.3, 4, "bernoulli", None, 3)
    np.testing.assert_array_equal(old, dc.implicit.xi_approx(net, x, y, 0.3, samples=3, rng=4))


def test_old_T_maps_to_samples(fresh_warnings, case):
    net, x, _ = case
    new = dc.classical.mc_dropout(net, x, 0.3, samples=20, rng=2)
    with pytest.warns(DeprecationWarning, match="passing 'T' positionally"):
        old = dc.classical.mc_dropout(net, x, 0.3, 20, np.random.default_rng(2))
    np.testing.assert_array_equal(old.mean, new.mean)
    with pytest.warns(DeprecationWarning, match="'T' is deprecated; use samples="):
        old = dc.classical.mc_dropout(net, x, 0.3, T=20, rng=2)
    np.testing.assert_array_equal(old.var, new.var)


def test_old_seed_maps_to_rng_with_the_same_stream(fresh_warnings, case):
    net, x, y = case
    new = dc.montecarlo.gradient_noise_cov(net, x, y, 0.3, samples=9, rng=7)
    with pytest.warns(DeprecationWarning, match="'seed' is deprecated; use rng="):
        old = dc.montecarlo.gradient_noise_cov(net, x, y, 0.3, samples=9, seed=7)
    np.testing.assert_array_equal(old.value, new.value)
    # every seed form of 7 is one root SeedSequence(7) of the keyed streams
    a = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=9, rng=7)
    for same in (np.int64(7), np.random.SeedSequence(7)):
        b = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=9, rng=same)
        np.testing.assert_array_equal(a.value, b.value)


def test_old_probes_maps_to_samples(fresh_warnings, case):
    net, x, y = case
    new = dc.explicit.r_approx_probe(net, x, y, samples=6, rng=3)
    with pytest.warns(DeprecationWarning, match="'probes' is deprecated; use samples="):
        old = dc.explicit.r_approx_probe(net, x, y, probes=6, rng=3)
    np.testing.assert_array_equal(old.value, new.value)


def test_old_positional_sites_k_and_keyword_q(fresh_warnings, case):
    net, x, y = case
    with pytest.warns(DeprecationWarning, match="passing 'sites' positionally"):
        old = dc.explicit.taylor(net, x, y, 0.3, ("h1",))
    np.testing.assert_array_equal(old, dc.explicit.taylor(net, x, y, 0.3, sites=("h1",)))
    with pytest.warns(DeprecationWarning, match="passing 'k' positionally"):
        old = dc.exact.dropout_k_cov(net, x, y, 0.3, 2)
    np.testing.assert_array_equal(old, dc.exact.dropout_k_cov(net, x, y, 0.3, k=2))
    with pytest.warns(DeprecationWarning, match="passing 'q' by keyword is deprecated"):
        old = dc.exact.expected_loss(net, x, y, q=0.3)
    np.testing.assert_array_equal(old, dc.exact.expected_loss(net, x, y, 0.3))


def test_rng_none_is_the_fixed_default_seed(case):
    """``rng=None`` (the default) is the seed DEFAULT_SEED, never fresh entropy or global state."""
    net, x, y = case
    for call in (lambda **k: dc.montecarlo.expected_loss(net, x, y, 0.3, samples=9, **k).value,
                 lambda **k: dc.implicit.xi_approx(net, x, y, 0.3, samples=2, **k),
                 lambda **k: dc.explicit.r_approx_sampled(net, x, y, samples=4, **k).value,
                 lambda **k: dc.classical.mc_dropout(net, x, 0.3, samples=5, **k).mean):
        np.testing.assert_array_equal(call(), call(rng=_api.DEFAULT_SEED))
