"""The fast enumeration paths (factorized, outer_sum) against the batched engine.

Tolerances.  Both paths sum the same ``2^d ≤ 2^10`` probability-weighted per-mask losses, in
different orders and from logits rounded differently (a matrix product of the kept units' terms
instead of a forward pass): each per-mask loss differs by a few ulps of the logits' magnitude
``M = max(1, |F|)``, and a sum of ``2^10`` terms of total weight one adds at most ``2^10`` ulps
of its largest term in the worst case (``≈ 2e-13``; typically ``~1e-15``).  So values are
compared with ``rtol = 1e-12`` and ``atol = 1e-12 · M``.  ``R_drop`` is a difference of two
``O(ℓ)`` numbers: the same absolute slack, no relative one beyond it.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropcheck as dc
from dropcheck import _fastenum
from dropcheck.testing import assert_close

RTOL = 1e-12


def _data(net, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, net.input_dim))
    if net.loss.name == "squared":
        return x, rng.standard_normal((n, net.n_classes))
    return x, rng.integers(0, net.n_classes, n)


def _scale(net, x):
    """``M``: the magnitude of the logits, the unit of the rounding error."""
    return max(1.0, float(np.abs(np.asarray(net.forward(x))).max()))


def _check(net, x, y, q, method, sites=None, chunk_size=None, scale=None):
    M = _scale(net, x) if scale is None else scale
    kw = {"sites": sites}
    ref = dc.exact.expected_loss(net, x, y, q, method="batched", **kw)
    got = dc.exact.expected_loss(net, x, y, q, method=method, chunk_size=chunk_size, **kw)
    assert_close(got, ref, rtol=RTOL, atol=1e-12 * M, err_msg=f"expected_loss {method}")
    r_ref = dc.exact.explicit_regularizer(net, x, y, q, method="batched", **kw)
    r = dc.exact.explicit_regularizer(net, x, y, q, method=method, chunk_size=chunk_size, **kw)
    assert_close(r, r_ref, rtol=RTOL, atol=1e-12 * M, err_msg=f"R_drop {method}")


q_st = st.floats(0.01, 0.95)


@given(st.integers(1, 9), st.integers(2, 6), q_st, st.integers(0, 10**6),
       st.sampled_from([0.3, 1.0, 3.0]))
def test_factorized_matches_batched(width, classes, q, seed, scale):
    net = dc.MLP.random([3, width, classes], sites="h1", seed=seed, scale=scale)
    x, y = _data(net, 3, seed)
    _check(net, x, y, q, "factorized")


@given(st.integers(1, 8), st.integers(1, 6), q_st, st.integers(0, 10**6),
       st.sampled_from(["tanh", "sigmoid", "relu", "gelu", "softplus"]))
def test_outer_sum_matches_batched(width, nxt, q, seed, act):
    net = dc.MLP.random([3, width, nxt, 3], activation=act, sites="h1", seed=seed)
    x, y = _data(net, 2, seed)
    _check(net, x, y, q, "outer_sum")


@given(st.integers(1, 8), q_st, st.integers(0, 10**6), st.sampled_from(["tanh", "relu"]))
def test_outer_sum_input_site_and_deeper_rest(width, q, seed, act):
    # the input site of a 2-hidden-layer net: the outer-sum block feeds two more layers
    net = dc.MLP.random([width, 4, 3, 3], activation=act, sites="x", seed=seed)
    x, y = _data(net, 2, seed)
    _check(net, x, y, q, "outer_sum")
    _check(net, x, y, q, "auto")


@pytest.mark.parametrize("sizes, sites, act", [
    ([4, 3, 5, 3], ("x", "h1"), "tanh"),
    ([4, 3, 5, 4, 3], ("h1", "h2"), "sigmoid"),
    ([4, 3, 5, 4, 3], ("x", "h2"), "gelu"),
    ([3, 4, 5, 3], ("x", "h1", "h2"), "relu"),
])
def test_several_sites_outer_batched_inner_fast(sizes, sites, act):
    net = dc.MLP.random(sizes, activation=act, sites=sites, seed=3)
    x, y = _data(net, 3, 3)
    _check(net, x, y, {s: 0.2 + 0.2 * i for i, s in enumerate(sites)}, "auto")
    _check(net, x, y, 0.4, "outer_sum")


def test_squared_loss_closed_form():
    net = dc.MLP.random([3, 6, 4], sites="h1", loss="squared", seed=1)
    x, y = _data(net, 3, 1)
    _check(net, x, y, 0.3, "factorized")
    _check(net, x, y, 0.3, "outer_sum")
    two = dc.MLP.random([3, 4, 5, 4], sites=("x", "h2"), loss="squared", seed=1)
    x2, y2 = _data(two, 3, 1)
    _check(two, x2, y2, {"x": 0.2, "h2": 0.5}, "factorized")
    lin = dc.Linear.random(5, 2, loss="squared", seed=2)
    x, y = _data(lin, 4, 2)
    _check(lin, x, y, 0.6, "auto")


@pytest.mark.parametrize("weight_scale", [300.0, 3e3, 3e4])
def test_factorized_stable_for_large_logits(weight_scale, monkeypatch):
    # logits of order 1e3 … 1e5: exp overflows without shifts, and with |logits| past ~700 the
    # product S of the two groups underflows for some mask pairs, which must be recomputed
    calls = []
    fix = _fastenum._fix_underflow

    def spy(*a, **k):
        calls.append(1)
        return fix(*a, **k)

    monkeypatch.setattr(_fastenum, "_fix_underflow", spy)
    net = dc.MLP.random([3, 8, 4], sites="h1", seed=4, scale=weight_scale)
    x, y = _data(net, 4, 4)
    _check(net, x, y, 0.5, "factorized", chunk_size=16)
    got = dc.exact.expected_loss(net, x, y, 0.5)
    assert np.all(np.isfinite(got))
    if weight_scale >= 3e3:
        assert calls, "the underflow repair was not exercised"


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_outer_sum_stable_for_huge_preactivations(act):
    # |2 z| past the exponent range: the separable tanh/sigmoid must fall back, not make inf/inf
    net = dc.MLP.random([3, 6, 5, 3], activation=act, sites="h1", seed=5, scale=400.0)
    x, y = _data(net, 2, 5)
    _check(net, x, y, 0.5, "outer_sum")


@pytest.mark.parametrize("method, sizes", [
    ("factorized", [3, 7, 4]), ("outer_sum", [3, 7, 5, 4]), ("outer_sum", [3, 7, 4])
])
def test_chunk_size_independence(method, sizes):
    net = dc.MLP.random(sizes, sites="h1", seed=6)
    x, y = _data(net, 5, 6)
    ref = dc.exact.explicit_regularizer(net, x, y, 0.35, method=method)
    for chunk in (1, 3, 7, 64, 1000):
        got = dc.exact.explicit_regularizer(net, x, y, 0.35, method=method, chunk_size=chunk)
        # the same terms summed in other groupings: a few ulps of ℓ
        assert_close(got, ref, rtol=1e-13, atol=1e-14 * _scale(net, x))


def test_float32_model():
    net = dc.MLP.random([3, 8, 6, 4], sites="h1", seed=7, dtype=np.float32)
    x, y = _data(net, 3, 7)
    x = x.astype(np.float32)
    ref = dc.exact.expected_loss(net, x, y, 0.3, method="batched")
    for method in ("outer_sum", "auto"):
        got = dc.exact.expected_loss(net, x, y, 0.3, method=method)
        assert got.dtype == np.float32
        # float32: 256 terms, each a few ulps (6e-8) of O(1) logits
        assert_close(got, ref, rtol=1e-5, atol=1e-5)
    net = dc.MLP.random([3, 8, 4], sites="h1", seed=7, dtype=np.float32, scale=30.0)
    ref = dc.exact.expected_loss(net, x, y, 0.3, method="batched")
    got = dc.exact.expected_loss(net, x, y, 0.3, method="factorized")
    assert_close(got, ref, rtol=1e-5, atol=1e-5 * _scale(net, x))


def test_array_api_namespaces(xp_case, monkeypatch):
    _, xp, conv = xp_case
    calls = []
    fix = _fastenum._fix_underflow
    monkeypatch.setattr(_fastenum, "_fix_underflow", lambda *a: calls.append(1) or fix(*a))
    ref_net = dc.MLP.random([3, 5, 4, 3], sites="h1", seed=8)
    x, y = _data(ref_net, 2, 8)
    W = [conv(ref_net.params[f"W{i}"]) for i in (1, 2, 3)]
    b = [conv(ref_net.params[f"b{i}"]) for i in (1, 2, 3)]
    xx, yy = conv(x), conv(y)
    for act in ("tanh", "relu", "gelu"):  # separable, maximum, the activation table
        net = dc.MLP(W, b, act, "h1")
        ref_act = dc.MLP([ref_net.params[f"W{i}"] for i in (1, 2, 3)],
                         [ref_net.params[f"b{i}"] for i in (1, 2, 3)], act, "h1")
        ref = dc.exact.explicit_regularizer(ref_act, x, y, 0.4, method="batched")
        for method in ("outer_sum", "batched"):
            got = dc.exact.explicit_regularizer(net, xx, yy, 0.4, method=method)
            assert_close(got, ref, rtol=RTOL, atol=1e-13, check_namespace=False,
                         check_dtype=False)
    net2 = dc.MLP(W[:1] + [conv(ref_net.params["W2"][:3])], b[:1] + [b[2]], "tanh", "h1")
    ref2 = dc.MLP([ref_net.params["W1"], ref_net.params["W2"][:3]],
                  [ref_net.params["b1"], ref_net.params["b3"]], "tanh", "h1")
    got = dc.exact.expected_loss(net2, xx, yy, 0.4, method="factorized")
    assert_close(got, dc.exact.expected_loss(ref2, x, y, 0.4, method="batched"), rtol=RTOL,
                 atol=1e-13, check_namespace=False, check_dtype=False)
    # the underflow repair (nonzero, take) inside the standard too: logits of order 1e4
    p2 = [ref2.params["W1"], 1e4 * ref2.params["W2"]], [ref2.params["b1"], ref2.params["b2"]]
    big = dc.MLP([conv(a) for a in p2[0]], [conv(a) for a in p2[1]], "tanh", "h1")
    ref_big = dc.MLP(*p2, "tanh", "h1")
    got = dc.exact.expected_loss(big, xx, yy, 0.4, method="factorized", chunk_size=8)
    assert_close(got, dc.exact.expected_loss(ref_big, x, y, 0.4, method="batched"), rtol=RTOL,
                 atol=1e-12 * _scale(ref_big, x), check_namespace=False, check_dtype=False)
    assert calls


def test_single_example_and_q_zero():
    net = dc.MLP.random([3, 5, 3], sites="h1", seed=9)
    x, y = _data(net, 2, 9)
    r = dc.exact.explicit_regularizer(net, x[0], y[0], 0.3)
    assert r.shape == ()
    assert_close(r, dc.exact.explicit_regularizer(net, x, y, 0.3, method="batched")[0],
                 rtol=RTOL, atol=1e-14)
    # q = 0 at the only site: one mask, nothing to enumerate; auto falls back, R_drop = 0
    assert np.all(dc.exact.explicit_regularizer(net, x, y, 0.0) == 0.0)
    with pytest.raises(ValueError, match="q = 0"):
        dc.exact.expected_loss(net, x, y, 0.0, method="factorized")


def test_method_errors_name_the_reason():
    deep = dc.MLP.random([3, 4, 5, 3], sites="h1", seed=0)
    x, y = _data(deep, 2, 0)
    with pytest.raises(ValueError, match="not the decoder"):
        dc.exact.expected_loss(deep, x, y, 0.3, method="factorized")
    with pytest.raises(ValueError, match="method must be one of"):
        dc.exact.expected_loss(deep, x, y, 0.3, method="fast")
    wide = dc.MLP.random([3, 30, 3], sites="h1", seed=0)
    with pytest.raises(dc.TooManyMasksError, match="2\\^30"):
        dc.exact.expected_loss(wide, x, y, 0.3)
    got = dc.exact.expected_loss(dc.MLP.random([3, 12, 3], sites="h1", seed=0), x, y, 0.3,
                                 max_masks=2**12)
    assert got.shape == (2,)


# ----- the factorized gradient -----


@given(st.integers(1, 8), st.integers(2, 5), q_st, st.integers(0, 10**6),
       st.sampled_from(["cross_entropy", "squared"]))
def test_factorized_gradient_matches_batched(width, classes, q, seed, loss):
    net = dc.MLP.random([3, 4, width, classes], sites="h2", seed=seed, loss=loss)
    x, y = _data(net, 2, seed)
    ref = dc.exact.expected_gradient(net, x, y, q, method="batched")
    for chunk in (None, 3):
        got = dc.exact.expected_gradient(net, x, y, q, method="factorized", chunk_size=chunk)
        # gradients are O(|h|·|p − e_y|) ≤ O(1): the loss tolerances, scaled by the logits
        assert_close(got, ref, rtol=RTOL, atol=1e-12 * _scale(net, x))


@pytest.mark.parametrize("sizes, sites", [([4, 3, 3], ("x", "h1")), ([4, 3, 5, 3], ("h1", "h2")),
                                          ([5, 3], ("x",))])
def test_factorized_gradient_several_sites_and_linear(sizes, sites):
    net = dc.MLP.random(sizes, sites=sites, seed=2)
    x, y = _data(net, 3, 2)
    ref = dc.exact.expected_gradient(net, x, y, 0.4, method="batched")
    assert_close(dc.exact.expected_gradient(net, x, y, 0.4), ref, rtol=RTOL, atol=1e-14)


def test_factorized_gradient_large_logits(monkeypatch):
    calls = []
    direct = _fastenum._direct_moments
    monkeypatch.setattr(_fastenum, "_direct_moments", lambda *a: calls.append(1) or direct(*a))
    net = dc.MLP.random([3, 8, 4], sites="h1", seed=4, scale=3e3)
    x, y = _data(net, 3, 4)
    ref = dc.exact.expected_gradient(net, x, y, 0.5, method="batched")
    got = dc.exact.expected_gradient(net, x, y, 0.5, chunk_size=16)
    # softmax probabilities are exact to eps whatever the logits; gradients are O(|h|) ≤ 1
    assert_close(got, ref, rtol=RTOL, atol=1e-13)
    assert calls, "the direct softmax of underflowed entries was not exercised"
    with pytest.raises(ValueError, match="losses only"):
        dc.exact.expected_gradient(net, x, y, 0.5, method="outer_sum")


@pytest.mark.parametrize("fold", [1, 2, 8, 16])
def test_folded_logs_agree_whatever_the_fold(fold, monkeypatch):
    # several low masks of equal probability share one log of the product of their S; the fold
    # shrinks (8 → 4 → 2 → 1) as the logits' spread grows, so sweep the weight scale
    monkeypatch.setattr(_fastenum, "FOLD", fold)
    chosen = []
    choose = _fastenum._choose_fold
    monkeypatch.setattr(_fastenum, "_choose_fold", lambda *a: chosen.append(choose(*a))
                        or chosen[-1])
    for scale in (1.0, 30.0, 60.0, 120.0, 250.0, 2e3):
        net = dc.MLP.random([3, 9, 4], sites="h1", seed=11, scale=scale)
        x, y = _data(net, 2, 11)
        # folding k products changes rounding by ~k ulps of log S per term
        _check(net, x, y, 0.3, "factorized", chunk_size=64)
    if fold == 8:
        assert {8, 4, 2, 1} <= set(chosen), chosen


# ----- the capability (Model.affine_feed), the LSTM decoder site, the renamed method -----


def test_capability_not_type_decides():
    # an MLP that does not describe its sites gets the batched engine, and the same values
    class Opaque(dc.MLP):
        def affine_feed(self, site):
            return None

    ref = dc.MLP.random([3, 5, 4], sites="h1", seed=12)
    net = Opaque([ref.params["W1"], ref.params["W2"]], [ref.params["b1"], ref.params["b2"]],
                 "tanh", "h1")
    x, y = _data(ref, 3, 12)
    got = dc.exact.expected_loss(net, x, y, 0.3)  # auto: no fast path
    assert_close(got, dc.exact.expected_loss(ref, x, y, 0.3), rtol=RTOL, atol=1e-12)
    with pytest.raises(ValueError, match="affine_feed"):
        dc.exact.expected_loss(net, x, y, 0.3, method="factorized")
    feed = ref.affine_feed("h1")
    assert feed.decoder and feed.w_key == "W2" and feed.n_classes == 4
    deep = dc.MLP.random([3, 5, 6, 4], sites=("x", "h1"), seed=12).affine_feed("x")
    assert deep.activation == "tanh" and len(deep.following) == 2 and deep.widest == 6
    assert dc.Linear.random(4, 3).affine_feed("x").decoder


def _lstm_data(lm, n, T, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, lm.vocab, (n, T)), rng.integers(0, lm.vocab, (n, T))


@pytest.mark.parametrize("sites, q", [
    ("out", 0.3),
    (("emb", "out"), {"emb": 0.2, "out": 0.5}),
    (("h1", "out"), 0.4),
])
def test_lstm_decoder_site_factorized_matches_batched(sites, q, monkeypatch):
    # per-token logits are affine in the decoder-site mask and the loss is a sum over tokens:
    # E Σ_t ℓ_t = Σ_t E ℓ_t, each token a row of the factorized kernel.  Sums of 2^≤10 masks
    # per token and T·(outer masks) tokens: the same ulps-of-ℓ argument as above, ℓ ~ T log V
    calls = []
    rows = _fastenum._factorized_ce_rows
    monkeypatch.setattr(_fastenum, "_factorized_ce_rows",
                        lambda *a: calls.append(1) or rows(*a))
    lm = dc.LSTM.random(9, 4, 5, 2, seed=13, scale=3.0)
    x, y = _lstm_data(lm, 2, 4, 13)
    M = max(1.0, float(np.abs(lm.forward(x)).max())) * x.shape[1]
    for chunk in (None, 4):
        for fn in (dc.exact.expected_loss, dc.exact.explicit_regularizer):
            ref = fn(lm, x, y, q, sites=sites, method="batched")
            got = fn(lm, x, y, q, sites=sites, method="factorized", chunk_size=chunk)
            assert_close(got, ref, rtol=RTOL, atol=1e-12 * M)
    assert calls
    # the gradient has no pullback through the recurrence: auto falls back, factorized refuses
    g = dc.exact.expected_gradient(lm, x, y, q, sites=sites)
    assert_close(g, dc.exact.expected_gradient(lm, x, y, q, sites=sites, method="batched"),
                 rtol=0, atol=0)
    with pytest.raises(ValueError, match="pullback"):
        dc.exact.expected_gradient(lm, x, y, q, sites=sites, method="factorized")
    assert lm.affine_feed("emb") is None


def test_lstm_per_step_masks_have_the_locked_per_token_expectation():
    # with per-step masks every token's mask has the same marginal as a locked one, so
    # E Σ_t ℓ_t is the same number; the batched engine cannot enumerate per-step masks
    lm = dc.LSTM.random(8, 3, 4, 1, seed=14, scale=2.0)
    x, y = _lstm_data(lm, 3, 5, 14)
    ref = dc.exact.explicit_regularizer(lm, x, y, 0.35, sites="out", method="batched")
    got = dc.exact.explicit_regularizer(lm.with_mask("per_step"), x, y, 0.35, sites="out")
    assert_close(got, ref, rtol=RTOL, atol=1e-13)


def test_gray_is_a_deprecated_alias_of_outer_sum(monkeypatch):
    monkeypatch.setattr(_fastenum, "_WARNED", set())
    net = dc.MLP.random([3, 5, 4, 3], sites="h1", seed=15)
    x, y = _data(net, 2, 15)
    new = dc.exact.expected_loss(net, x, y, 0.3, method="outer_sum")
    with pytest.warns(DeprecationWarning, match="outer_sum"):
        old = dc.exact.expected_loss(net, x, y, 0.3, method="gray")
    assert np.array_equal(old, new)
    again = dc.exact.expected_loss(net, x, y, 0.3, method="gray")  # once: no second warning
    assert np.array_equal(again, new)
    with pytest.raises(ValueError, match="losses only"):
        dc.exact.expected_gradient(net, x, y, 0.3, method="gray")
