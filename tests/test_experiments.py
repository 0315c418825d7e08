"""Claims X1–X4 (``verification/experiments.py``): the training loop and the quick measurements.

The SGD step is checked against a hand-written backward pass of a one-hidden-layer tanh net
(no dropout) and, for the dropout procedures, against the library functions it must call with
the same generator state (those are tested in ``test_implicit.py``); then the loop's
bookkeeping (evaluation schedule, paired batches, nested training sets), determinism under a
seed, and the quick measurements (finite numbers, ``passed=None``, plots written).
"""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
from dropcheck.verification import experiments as X
from dropcheck.verification._registry import Context

import dropcheck as dc
import dropcheck.implicit as im

# A tiny setting: 2 replicates, a few steps; everything else as the quick configuration.
TINY = replace(X._QUICK, d0=3, width=4, classes=3, n_train=12, n_test=40, batch=5, steps=7,
               eval_every=3, reps=2, ns=(6, 12))


def _hand_grad(net, x, y, eta=None):
    """Mean cross-entropy gradient of ``W2 ((1+η)⊙tanh(W1 x + b1)) + b2`` by hand.

    ``eta``: ``(k, n, d)`` noise (k masks per example, Alg. 1), or None for no dropout; the
    gradient is the mean over masks and examples.
    """
    W1, b1, W2, b2 = (np.asarray(net.params[k]) for k in ("W1", "b1", "W2", "b2"))
    eta = np.zeros((1, *x.shape[:1], W1.shape[0])) if eta is None else eta
    k, n = eta.shape[:2]
    h = np.tanh(x @ W1.T + b1)  # (n, d)
    ht = (1.0 + eta) * h  # (k, n, d)
    f = ht @ W2.T + b2
    p = np.exp(f - f.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    df = (p - np.eye(f.shape[-1])[y]) / (n * k)  # (k, n, c)
    dz = ((df @ W2) * (1.0 + eta)).sum(0) * (1.0 - h**2)  # (n, d)
    return {"W1": dz.T @ x, "b1": dz.sum(0), "W2": np.einsum("knc,knd->cd", df, ht),
            "b2": df.sum((0, 1))}


def _batch(rng, cfg=TINY, m=5):
    return rng.standard_normal((m, cfg.d0)), rng.integers(0, cfg.classes, m)


def test_plain_step_is_the_hand_computed_sgd_step(rng):
    net = X._init(TINY, 0, 0)
    x, y = _batch(rng)
    new = X._step(net, X._PLAIN, x, y, TINY, np.random.default_rng(1))
    g = _hand_grad(net, x, y)
    for k, p in net.params.items():
        np.testing.assert_allclose(new.params[k], np.asarray(p) - TINY.lr * g[k],
                                   rtol=1e-12, atol=1e-14)


def test_dropout_k_step_is_the_hand_computed_alg1_step(rng, monkeypatch):
    # fix the k masks per example: the library's η sampler is replaced by a given draw
    k, q = 3, TINY.q
    net = X._init(TINY, 0, 1)
    x, y = _batch(rng)
    keep = rng.random((k, x.shape[0], TINY.width)) >= q
    eta = np.where(keep, q / (1 - q), -1.0)  # the paper's η (Sec. 2)
    monkeypatch.setattr(im, "sample_eta", lambda gen, shape, q, **kw: eta.reshape(shape))
    new = X._step(net, X._Method("dropout", k), x, y, TINY, np.random.default_rng(2))
    g = _hand_grad(net, x, y, eta)
    for name, p in net.params.items():
        np.testing.assert_allclose(new.params[name], np.asarray(p) - TINY.lr * g[name],
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("method", "call"),
    [
        (X._Method("dropout", 4),
         lambda n, x, y, r: im.dropout_k_gradient(n, x, y, TINY.q, k=4, rng=r)),
        (X._Method("inject_exact", 4),
         lambda n, x, y, r: im.noise_injected_gradient(n, x, y, TINY.q, k=4, rng=r, noise="exact")),
        (X._Method("inject_approx", 4),
         lambda n, x, y, r: im.noise_injected_gradient(n, x, y, TINY.q, k=4, rng=r,
                                                       noise="approx")),
    ],
)
def test_noisy_steps_use_the_library_gradient_with_the_same_generator(rng, method, call):
    net = X._init(TINY, 0, 0)
    x, y = _batch(rng)
    gen = np.random.default_rng(7)
    want = net.flatten_params() - TINY.lr * np.asarray(call(net, x, y, copy.deepcopy(gen)))
    got = X._step(net, method, x, y, TINY, gen).flatten_params()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("implicit", [None, "approx"])
def test_alg2_steps_are_dc_implicit_update(rng, implicit):
    net = X._init(TINY, 0, 0)
    x, y = _batch(rng)
    gen = np.random.default_rng(3)
    want = im.update(net, x, y, TINY.q, lr=TINY.lr, rng=copy.deepcopy(gen), implicit=implicit)
    method = X._Method("r_approx_xi" if implicit else "r_approx")
    got = X._step(net, method, x, y, TINY, gen)
    for k in net.params:
        np.testing.assert_allclose(got.params[k], want[k], rtol=1e-13, atol=1e-15)
    # the explicit term is really there: it differs from the plain step
    plain = X._step(net, X._PLAIN, x, y, TINY, gen)
    assert not np.allclose(got.flatten_params(), plain.flatten_params())


def test_training_loop_bookkeeping():
    method = X._Method("dropout", 2)
    run = X._train(TINY, method, 0, 0, TINY.n_train)
    np.testing.assert_array_equal(run.steps, [0, 3, 6, 7])
    xtr, ytr, xte, yte = X._task(TINY, 0, 0, TINY.n_train)
    init = X._init(TINY, 0, 0)
    assert run.test_loss[0] == pytest.approx(float(np.mean(init.loss_value(xte, yte))), 1e-14)
    assert run.train_loss[0] == pytest.approx(float(np.mean(init.loss_value(xtr, ytr))), 1e-14)
    assert run.test_loss[-1] == pytest.approx(float(np.mean(run.final.loss_value(xte, yte))),
                                              1e-14)
    assert np.all((run.test_acc >= 0) & (run.test_acc <= 1))
    # replaying the loop by hand: the same batches, the method's noise stream, one step each
    net = init
    noise = X._stream(0, 0, f"noise/{method.name}/{TINY.n_train}")
    batches = X._batches(TINY, 0, 0, TINY.n_train)
    assert batches.shape == (TINY.steps, TINY.batch)
    assert all(len(set(b)) == TINY.batch for b in batches)  # without replacement
    for idx in batches:
        net = X._step(net, method, xtr[idx], ytr[idx], TINY, noise)
    np.testing.assert_array_equal(net.flatten_params(), run.final.flatten_params())


def test_paired_design_and_nested_training_sets():
    # batches and data do not depend on the method; X4's training sets are nested
    a, b = X._task(TINY, 0, 1, 6), X._task(TINY, 0, 1, 12)
    np.testing.assert_array_equal(a[0], b[0][:6])
    np.testing.assert_array_equal(a[2], b[2])  # one test set for every n
    r1 = X._train(TINY, X._PLAIN, 0, 1, 12)
    r2 = X._train(TINY, X._Method("dropout", 1), 0, 1, 12)
    assert r1.test_loss[0] == r2.test_loss[0]  # the same initial network
    assert not np.array_equal(r1.final.flatten_params(), r2.final.flatten_params())


def test_training_is_deterministic_under_a_seed():
    method = X._Method("inject_approx", 2)
    first = X._train(TINY, method, 5, 0, TINY.n_train)
    X._train.cache_clear()
    again = X._train(TINY, method, 5, 0, TINY.n_train)
    assert again is not first
    np.testing.assert_array_equal(first.test_loss, again.test_loss)
    np.testing.assert_array_equal(first.final.flatten_params(), again.final.flatten_params())
    other = X._train(TINY, method, 6, 0, TINY.n_train)
    assert not np.array_equal(first.test_loss, other.test_loss)


def test_paired_difference_statistics():
    def runs(vals):
        return [X._Run(np.array([0]), np.array([v]), np.array([1.0]), np.array([0.0]),
                       None) for v in vals]

    d = X._diff(runs([1.0, 2.0, 3.5]), runs([0.5, 1.0, 2.0]))
    per = np.array([0.5, 1.0, 1.5])
    assert d["mean"] == pytest.approx(1.0)
    assert d["se"] == pytest.approx(np.std(per, ddof=1) / math.sqrt(3))
    assert d["resolved"]  # 1.0 > 2 · 0.289
    assert not X._diff(runs([1.0, 0.0, 2.0]), runs([0.5, 0.5, 1.0]))["resolved"]


def _finite_numbers(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _finite_numbers(x)
    elif isinstance(v, list | tuple | np.ndarray):
        for x in np.asarray(v, dtype=object).ravel():
            yield from _finite_numbers(x)
    elif isinstance(v, float | np.floating):
        yield v


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("x")
    ctx = Context(quick=True, seed=0, outdir=out)
    return {cid: fn(ctx) for cid, fn in (("X1", X.measure_x1), ("X2", X.measure_x2),
                                         ("X3", X.measure_x3), ("X4", X.measure_x4))}


@pytest.mark.parametrize("cid", ["X1", "X2", "X3", "X4"])
def test_quick_measurements_are_reported_with_finite_numbers(quick_results, cid):
    m = quick_results[cid]
    assert m.passed is None  # empirical: reported, not judged
    assert "±" in m.figure
    assert "SEEN" in m.figure or "UNINFORMATIVE" in m.figure  # says whether the trend appeared
    nums = list(_finite_numbers(m.values))
    assert nums and all(np.isfinite(nums))
    assert len(m.plots) == 1
    with open(m.plots[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_quick_measurements_are_deterministic(quick_results):
    ctx = Context(quick=True, seed=0)
    X._train.cache_clear()
    again = X.measure_x1(ctx)
    assert again.figure == quick_results["X1"].figure


def test_claims_are_registered_as_empirical():
    from dropcheck.verification._registry import all_claims, all_plots

    claims = {c.id: c for c in all_claims()}
    for cid in ("X1", "X2", "X3", "X4"):
        assert claims[cid].kind == "empirical"
        assert claims[cid].rule.startswith("reported")
    assert {"x1_curves", "x2_curves", "x3_curves", "x4_gap"} <= set(all_plots())


def test_models_are_float64_mlps_with_dropout_on_the_hidden_layer():
    net = X._init(X._FULL, 0, 0)
    assert isinstance(net, dc.MLP) and net.site_names == ("h1",)
    assert net.sizes == [X._FULL.d0, X._FULL.width, X._FULL.classes]
    assert np.asarray(net.params["W1"]).dtype == np.float64
