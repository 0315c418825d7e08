"""The engine (dropcheck._engine): chunk budget, pairwise reduction, executors, refusal.

Oracles: the reduction tree is checked symbolically (parts that record how they were added);
sums over masks against a plain Python loop over ``itertools.product`` (an enumeration that
shares no code with the engine); results under other chunkings and executors against the
serial engine.

Tolerances.  A chunking changes only the grouping of the same probability-weighted terms: with
``K ≤ 2^10`` terms of total weight one, a regrouped pairwise sum differs by at most
``~log2(K)`` ulps of the largest partial sum, so values are compared with ``rtol = 1e-13``
(≈ 450 ulps, generous against 10) and ``atol = 1e-14`` for results of order one.  Executors
that compute the same chunks must agree bit for bit (``==``).
"""

import itertools
import math

import numpy as np
import pytest

import dropcheck as dc
from dropcheck import _engine
from dropcheck.testing import assert_close


class _Sym:
    """A part that records the additions made on it, e.g. ``((0+1)+2)``."""

    def __init__(self, s):
        self.s = s

    def __add__(self, other):
        return _Sym(f"({self.s}+{other.s})")


def test_pairwise_order_is_a_tree_over_chunk_indices():
    def tree(k):
        acc = _engine.PairwiseSum()
        for i in range(k):
            acc.add(_Sym(str(i)))
        return acc.total().s

    assert tree(1) == "0"
    assert tree(2) == "(0+1)"
    assert tree(4) == "((0+1)+(2+3))"
    # leftover blocks are added from the latest (smallest) up
    assert tree(5) == "(((0+1)+(2+3))+4)"
    assert tree(7) == "(((0+1)+(2+3))+((4+5)+6))"
    assert tree(8) == "(((0+1)+(2+3))+((4+5)+(6+7)))"
    assert _engine.PairwiseSum().total() is None


def test_aligned_shards_are_bit_identical_and_misaligned_nodes_refused():
    # parts with heavy cancellation: any other grouping changes the last bits
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(5) * 10.0 ** rng.integers(-8, 9) for _ in range(23)]
    serial = _engine.pairwise_sum(parts)
    for k in (1, 2, 3):
        block = 2**k
        acc = _engine.PairwiseSum()
        full = len(parts) - len(parts) % block
        for j in range(0, full, block):  # a worker's aligned block, reduced on its own
            acc.add(_engine.pairwise_sum(parts[j : j + block]), level=k)
        for p in parts[full:]:
            acc.add(p)
        assert np.array_equal(acc.total(), serial), k
    acc = _engine.PairwiseSum()
    acc.add(parts[0])
    with pytest.raises(ValueError, match="multiple of 4"):
        acc.add(parts[1], level=2)
    # tuples are summed elementwise in the same tree
    tup = _engine.pairwise_sum([(p, 2 * p) for p in parts])
    assert np.array_equal(tup[0], serial) and np.array_equal(tup[1], _engine.pairwise_sum(
        [2 * p for p in parts]))


def test_budget_derived_chunk_sizes():
    B = _engine.CHUNK_BYTES
    assert _engine.chunk_items(1) == B // 8
    assert _engine.chunk_items(1000) == B // 8000
    assert _engine.chunk_items(10**12) == 1  # never zero
    assert _engine.chunk_items(1000, cap=7) == 7
    assert _engine.chunk_items(10, budget=_engine.CACHE_BYTES) == _engine.CACHE_BYTES // 80
    # the batched engine sizes its chunks from floats per mask and example: count the chunks
    net = dc.MLP.random([3, 9, 4], sites="h1", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    seen = []

    class Counting(_engine.SerialExecutor):
        def map(self, fn, items):
            items = list(items)
            seen.append([c.size for c in items])
            return super().map(fn, items)

    per = 40_000  # floats per mask and example
    dc.exact.expectation(net, x, 0.3, lambda tr, p: (p.sum(),), floats_per_mask=per,
                         executor=Counting())
    size = _engine.chunk_items(per * 5, cap=2**16)
    assert seen[-1] == [size] * (2**9 // size) + ([2**9 % size] if 2**9 % size else [])


def _brute(widths, q, f):
    """``Σ_m P(m) f(η(m))`` by a Python loop over every keep pattern (site order, unit order)."""
    names = list(widths)
    total = 0.0
    for bits in itertools.product((0, 1), repeat=sum(widths.values())):
        p, eta, i = 1.0, {}, 0
        for s in names:
            k = bits[i : i + widths[s]]
            i += widths[s]
            p *= math.prod((1 - q[s]) if b else q[s] for b in k)
            eta[s] = np.array([b / (1 - q[s]) - 1.0 for b in k])
        total += p * f(eta)
    return total


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 4096])
def test_enumerate_sum_matches_a_plain_loop_whatever_the_chunking(chunk):
    widths, q = {"a": 3, "b": 4}, {"a": 0.3, "b": 0.6}
    w = np.linspace(-1.0, 2.0, 7)

    def f(eta):  # a nonlinear function of every unit
        return math.exp(float(np.concatenate([eta["a"], eta["b"]]) @ w) / 7.0)

    def fn(eta, prob):
        e = np.concatenate([eta["a"], eta["b"]], axis=1)
        return prob @ np.exp(e @ w / 7.0), np.sum(prob)

    got, mass = _engine.enumerate_sum(widths, q, fn, chunk_size=chunk, max_masks=2**7,
                                      xp=np, dtype=np.float64)
    assert_close(mass, 1.0, rtol=1e-13, atol=0.0)
    assert_close(got, _brute(widths, q, f), rtol=1e-13, atol=1e-14)


def test_exact_results_independent_of_chunking_to_rounding():
    net = dc.MLP.random([3, 5, 4, 3], sites=("x", "h1"), seed=1)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    ref = dc.exact.explicit_regularizer(net, x, y, 0.4, method="batched")
    cov = dc.exact.gradient_noise_cov(net, x, y, 0.4)
    for chunk in (1, 5, 33, 256):
        got = dc.exact.explicit_regularizer(net, x, y, 0.4, method="batched", chunk_size=chunk)
        assert_close(got, ref, rtol=1e-13, atol=1e-14)
        fast = dc.exact.explicit_regularizer(net, x, y, 0.4, chunk_size=chunk)  # outer + kernel
        assert_close(fast, ref, rtol=1e-12, atol=1e-13)  # + the kernel's own rounding
        c = dc.exact.gradient_noise_cov(net, x, y, 0.4, chunk_size=chunk)
        assert_close(c, cov, rtol=1e-12, atol=1e-14)


class _Shuffled(_engine.Executor):
    """Computes the chunks in reverse order, then hands the results back in chunk order."""

    def __init__(self):
        self.indices = []

    def map(self, fn, items):
        items = list(items)
        out = {}
        for c in reversed(items):
            self.indices.append(c.index)
            out[c.index] = fn(c)
        return iter([out[c.index] for c in items])


def test_executor_hook_gives_bit_identical_results():
    net = dc.MLP.random([3, 4, 5, 3], sites=("x", "h1", "h2"), seed=2)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 3)), rng.integers(0, 3, 3)
    ex = _Shuffled()
    calls = [
        lambda e: dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=64,
                                         executor=e),
        lambda e: dc.exact.explicit_regularizer(net, x, y, 0.3, chunk_size=8, executor=e),
        lambda e: dc.exact.expected_gradient(net, x, y, 0.3, chunk_size=16, executor=e),
        lambda e: dc.exact.gradient_noise_cov(net, x, y, 0.3, chunk_size=512, executor=e),
    ]
    for call in calls:
        before = len(ex.indices)
        assert np.array_equal(call(ex), call(None))
        assert len(ex.indices) > before + 1  # several chunks went through the executor
    assert ex.indices[:3] == sorted(ex.indices[:3], reverse=True)
    with pytest.raises(TypeError, match="executor must be"):
        dc.exact.expected_loss(net, x, y, 0.3, executor=object())


def test_sequential_sampling_needs_an_in_order_executor_and_keyed_streams_are_documented():
    with pytest.raises(ValueError, match="one generator consumed in chunk order"):
        _engine.map_draws(lambda b: np.zeros((b, 1)), 10, 3, np, executor=_Shuffled())
    # keyed streams: draw t is row t mod 64 of block t // 64, each block from its own child of
    # SeedSequence(rng); so the estimates agree across chunk sizes to rounding (sums regrouped),
    # and the draws are those of the documented streams (one block here: 50 < 64)
    net = dc.MLP.random([3, 4, 3], sites="h1", seed=3)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 3)), rng.integers(0, 3, 2)
    ref = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=50, rng=5, chunk_size=50)
    for chunk in (1, 7, 16):
        got = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=50, rng=5, chunk_size=chunk)
        assert_close(got.value, ref.value, rtol=1e-13, atol=1e-14)
        assert_close(got.stderr, ref.stderr, rtol=1e-10, atol=1e-14)  # a difference of sums
    block = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0,)))
    eta = dc.noise.sample_eta(block, (64, 2, 4), 0.3)[:50]
    direct = np.mean(net.loss_value(x, y, {"h1": eta}), axis=0)
    assert_close(ref.value, direct, rtol=1e-13, atol=1e-14)
    draws = _engine.map_draws(lambda b: np.arange(b)[:, None] * 1.0, 10, 4, np)
    assert draws.shape == (10, 1)
    s1, s2 = _engine.sample_sums(lambda b: np.full((b, 2), 3.0), 9, 4)
    assert np.array_equal(s1, np.full(2, 27.0)) and np.array_equal(s2, np.full(2, 81.0))


def test_refusal_past_max_masks_names_the_count_before_any_work():
    def fn(eta, prob):
        raise AssertionError("no chunk may run past the limit")

    with pytest.raises(dc.TooManyMasksError, match=r"2\^30 = 1.07e\+09 masks.*montecarlo"):
        _engine.enumerate_sum({"h": 30}, {"h": 0.5}, fn, chunk_size=8, max_masks=2**26,
                              xp=np, dtype=np.float64)
    # sites with q = 0 need no bits
    assert _engine.check_mask_count({"a": 30, "b": 3}, {"a": 0.0, "b": 0.2}, 8, "it") == 8
    net = dc.MLP.random([3, 12, 3], sites="h1", seed=0)
    x, y = np.zeros((1, 3)), np.array([0])
    for method in ("batched", "factorized", "auto"):
        with pytest.raises(dc.TooManyMasksError, match=r"2\^12 = 4.1e\+03 masks"):
            dc.exact.expected_loss(net, x, y, 0.3, method=method, max_masks=2**11)
