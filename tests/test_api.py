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
