"""The core on non-numpy namespaces: torch CPU tensors, array-api-strict, read-only numpy (cupy
under the ``gpu`` marker), each against the same computation on plain numpy.

What is proven (issue 16, item 1):

- **Namespace independence.**  Every public path — exact enumeration by every method, Taylor,
  ``R_approx`` with every Hessian and route and its estimators, ``ξ_approx`` and its
  covariance, the Monte-Carlo estimators, the LSTM's sweeps and estimators and the corpus
  evaluation behind ``dropcheck lstm-eval`` — runs on arrays of the namespace, and each result
  comes back in that namespace, on the input's device, with numpy's shape and dtype
  (:func:`_same`).  array-api-strict refuses anything outside the standard (numpy-only
  functions, implicit conversions, one index into a 2-D array), so passing there is the proof
  that no numpy-only call hides in the core; read-only numpy refuses in-place updates of the
  caller's arrays; torch is the library a GPU user is most likely to hold, and its tensors are
  made to refuse implicit conversion to numpy (``np.asarray``) as cupy arrays do.
- **Agreement.**  Random draws come from one seeded numpy ``Generator`` whose samples are moved to
  the namespace, so the numpy and non-numpy runs see identical noise and labels and every
  figure — sampled ones included — must agree to rounding.  Tolerances are beside each check.
- **No host round trips in the hot loops** (:func:`test_no_host_round_trips_in_hot_loops`).

Everything runs in float64 on tiny models: the whole file takes a few seconds per namespace.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import array_api_compat
import numpy as np
import pytest

import dropcheck as dc
from dropcheck import explicit as ex
from dropcheck import implicit as im
from dropcheck import lm
from dropcheck import montecarlo as mc
from dropcheck.backend import namespace, to_numpy
from dropcheck.models.lstm import LSTM
from dropcheck.testing import assert_close

#: Tolerances of one float64 computation against the same computation in another library.
#: torch (its own BLAS and reduction order) and numpy round differently: each partial sum is
#: off by a few ulps (2.2e-16) times the number of terms (≤ 2^12 masks here) and the depth of
#: the chain (≤ 6 products), ≈ 2^12·6·2.2e-16 ≈ 5e-12 relative on O(1) figures; 1e-10 leaves
#: 20× margin and is still ~6 orders below any real error (a wrong mask, a wrong constant).
#: ``ATOL`` covers entries that are exact zeros in one library and ~1e-17 in the other, and the
#: cancellation in ``R_drop = ℓ_drop − ℓ`` (absolute error of ℓ-sized terms, ℓ = O(1)).
RTOL, ATOL = 1e-10, 1e-12


class Backend(NamedTuple):
    name: str
    xp: Any  # the array-api-compat namespace results must come back in
    conv: Callable[[Any], Any]  # a numpy array -> the namespace's array (copied)


def _torch() -> Backend:
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")
    import array_api_compat.torch as xt

    # a copy, so the tensor owns writeable memory (torch warns on read-only numpy buffers)
    return Backend("torch", xt, lambda a: torch.from_numpy(np.array(a)))


def _strict() -> Backend:
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    return Backend("array_api_strict", strict, lambda a: strict.asarray(np.asarray(a)))


def _numpy_readonly() -> Backend:
    import array_api_compat.numpy as xnp

    def ro(a: Any) -> np.ndarray:
        a = np.array(a)
        a.flags.writeable = False  # an in-place update anywhere in the core raises
        return a

    return Backend("numpy_readonly", xnp, ro)


def _cupy() -> Backend:
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, or cupy without a CUDA device or driver
        pytest.skip("cupy with a CUDA device is not available (CI has no GPU)")
    import array_api_compat.cupy as xc

    return Backend("cupy", xc, cp.asarray)


_MAKERS = {"torch": _torch, "array_api_strict": _strict, "numpy_readonly": _numpy_readonly,
           "cupy": _cupy}


def _refuse_implicit_conversion(self, *args, **kwargs):
    raise TypeError("implicit conversion of a tensor to numpy (np.asarray): cupy refuses it; "
                    "the core must stay in the namespace or call dropcheck.backend.to_numpy")


@pytest.fixture(params=["torch", "array_api_strict", "numpy_readonly",
                        pytest.param("cupy", marks=pytest.mark.gpu)])
def be(request, monkeypatch) -> Backend:
    backend = _MAKERS[request.param]()
    if backend.name == "torch":
        # torch CPU tensors convert to numpy silently where cupy arrays raise: make torch refuse
        # too, so a hidden np.asarray(...) in the core fails here as it would on a GPU
        import torch

        monkeypatch.setattr(torch.Tensor, "__array__", _refuse_implicit_conversion)
    return backend


def _same(got: Any, ref: Any, be: Backend, like: Any, *, rtol: float = RTOL,
          atol: float = ATOL, what: str = "") -> None:
    """``got`` is in ``be``'s namespace, on ``like``'s device, and equals numpy's ``ref``.

    ``assert_close`` against ``ref`` converted to the namespace checks namespace, shape and
    dtype before the values.
    """
    assert namespace(got) is be.xp, f"{what}: came back as {type(got)!r}, not in {be.name}"
    assert array_api_compat.device(got) == array_api_compat.device(like), what
    assert_close(got, be.conv(to_numpy(ref)), rtol=rtol, atol=atol, err_msg=what)


def _model_in(ref: Any, be: Backend) -> Any:
    return ref.with_params({k: be.conv(v) for k, v in ref.params.items()})


@pytest.fixture
def mlp():
    """A 3-5-4-3 tanh MLP with dropout at the input and both hidden layers (2^12 masks)."""
    ref = dc.MLP.random([3, 5, 4, 3], activation="tanh", sites=("x", "h1", "h2"), seed=3)
    rng = np.random.default_rng(4)
    return ref, rng.standard_normal((2, 3)), np.array([0, 2])


# ----------------------------------------------------------------------- exact enumeration
#: (method, sites): "factorized" needs the decoder site last, "outer_sum" a site feeding an affine
#: map; other sites are enumerated by the batched engine around the fast one.
METHODS = [
    ("batched", ("x", "h1", "h2")),
    ("factorized", ("h1", "h2")),
    ("outer_sum", ("x", "h1")),
    ("auto", ("x", "h1", "h2")),
    ("auto", ("h2",)),
]


@pytest.mark.parametrize(("method", "sites"), METHODS)
def test_exact_enumeration_every_method(be, mlp, method, sites):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    q = {s: {"x": 0.2, "h1": 0.3, "h2": 0.4}[s] for s in sites}
    kw = {"sites": sites, "method": method}
    for fn in (dc.exact.expected_loss, dc.exact.explicit_regularizer):
        _same(fn(net, xb, yb, q, **kw), fn(ref, x, y, q, **kw), be, xb,
              what=f"{fn.__name__}[{method}]")
    if method != "outer_sum":  # "outer_sum" computes losses only (a ValueError says so)
        _same(dc.exact.expected_gradient(net, xb, yb, q, **kw),
              dc.exact.expected_gradient(ref, x, y, q, **kw), be, xb,
              what=f"expected_gradient[{method}]")


def test_exact_covariances(be, mlp):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    d = np.random.default_rng(5).standard_normal((ref.n_params, 3))
    _same(dc.exact.gradient_noise_cov(net, xb, yb, 0.3, sites=("h1", "h2")),
          dc.exact.gradient_noise_cov(ref, x, y, 0.3, sites=("h1", "h2")), be, xb,
          what="gradient_noise_cov")
    _same(dc.exact.gradient_noise_cov(net, xb, yb, 0.3, directions=be.conv(d)),
          dc.exact.gradient_noise_cov(ref, x, y, 0.3, directions=d), be, xb,
          what="gradient_noise_cov(directions)")
    _same(dc.exact.dropout_k_cov(net, xb, yb, 0.3, k=2, sites="h2"),
          dc.exact.dropout_k_cov(ref, x, y, 0.3, k=2, sites="h2"), be, xb, what="dropout_k_cov")


# ----------------------------------------------------------------------- Taylor, R_approx
@pytest.mark.parametrize("hessian", ["loss", "identity", "loss_jacobian"])
@pytest.mark.parametrize("route", ["jvp", "vjp"])
def test_r_approx_every_hessian_and_route(be, mlp, hessian, route):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    got = ex.r_approx(net, xb, yb, hessian=hessian, route=route, per_site=True)
    want = ex.r_approx(ref, x, y, hessian=hessian, route=route, per_site=True)
    assert set(got) == set(want)
    for s in want:
        _same(got[s], want[s], be, xb, what=f"r_approx[{hessian}, {route}] at {s}")


def test_taylor_split_and_estimators(be, mlp):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    _same(ex.taylor(net, xb, yb, 0.3), ex.taylor(ref, x, y, 0.3), be, xb, what="taylor")
    got, want = ex.hessian_split(net, xb, yb, 0.3), ex.hessian_split(ref, x, y, 0.3)
    _same(got.total_gauss_newton, want.total_gauss_newton, be, xb, what="split: GN")
    _same(got.total_remainder, want.total_remainder, be, xb, what="split: remainder")
    _same(ex.r_approx_grad(net, xb, yb), ex.r_approx_grad(ref, x, y), be, xb,
          what="r_approx_grad")
    # seeded numpy generators on both sides: the same labels and probes, so equal to rounding
    for name, fn in (("r_approx_sampled", ex.r_approx_sampled),
                     ("r_approx_probe", ex.r_approx_probe)):
        got = fn(net, xb, yb, samples=6, rng=np.random.default_rng(7))
        want = fn(ref, x, y, samples=6, rng=np.random.default_rng(7))
        _same(got.value, want.value, be, xb, what=f"{name} value")
        _same(got.stderr, want.stderr, be, xb, what=f"{name} stderr")


# ----------------------------------------------------------------------- ξ_approx, Monte Carlo
def test_fused_sampled_step(be, mlp):
    from dropcheck.step import sampled_step

    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    got = sampled_step(net, xb, yb, 0.3, rng=np.random.default_rng(12))
    want = sampled_step(ref, x, y, 0.3, rng=np.random.default_rng(12))
    for field in ("loss", "grad", "r_hat", "xi", "labels"):
        _same(getattr(got, field), getattr(want, field), be, xb, what=f"sampled_step {field}")


def test_xi_approx_and_its_covariance(be, mlp):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    _same(im.xi_approx(net, xb, yb, 0.3, rng=np.random.default_rng(8), samples=3),
          im.xi_approx(ref, x, y, 0.3, rng=np.random.default_rng(8), samples=3), be, xb,
          what="xi_approx")
    _same(im.xi_approx(net, xb, yb, 0.3, rng=np.random.default_rng(8), noise="rademacher",
                       samples=3),
          im.xi_approx(ref, x, y, 0.3, rng=np.random.default_rng(8), noise="rademacher", samples=3),
          be, xb, what="xi_approx (rademacher)")
    _same(im.xi_approx_cov(net, xb, yb, 0.3), im.xi_approx_cov(ref, x, y, 0.3), be, xb,
          what="xi_approx_cov")
    _same(im.xi_tilde(net, xb, yb, 0.3, rng=np.random.default_rng(9), samples=2),
          im.xi_tilde(ref, x, y, 0.3, rng=np.random.default_rng(9), samples=2), be, xb,
          what="xi_tilde")


def test_monte_carlo_estimators(be, mlp):
    ref, x, y = mlp
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    for fn in (mc.expected_loss, mc.explicit_regularizer, mc.expected_gradient,
               mc.gradient_noise_cov):
        got = fn(net, xb, yb, 0.3, samples=16, rng=10, chunk_size=5)
        want = fn(ref, x, y, 0.3, samples=16, rng=10, chunk_size=5)
        _same(got.value, want.value, be, xb, what=f"mc.{fn.__name__} value")
        _same(got.stderr, want.stderr, be, xb, what=f"mc.{fn.__name__} stderr")


# ----------------------------------------------------------------------- LSTM language model
@pytest.fixture
def lstm():
    ref = LSTM.random(11, 4, [5, 3], seed=12, tie=False)
    rng = np.random.default_rng(13)
    return ref, rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4))


def test_lstm_sweeps_and_estimators(be, lstm):
    """The LSTM's sweeps and the generic estimators on it, in both mask forms."""
    ref, x, y = lstm
    net, xb, yb = _model_in(ref, be), be.conv(x), be.conv(y)
    _same(net.forward(xb), ref.forward(x), be, xb, what="lstm forward")

    def grads(m: LSTM, xx: Any, yy: Any) -> Any:
        tr = m.trace(xx)
        return m.backward(tr, m.loss.grad(tr.logits, yy)[None, ...], params=True,
                          per_example=False)[1]

    _same(grads(net, xb, yb), grads(ref, x, y), be, xb, what="lstm forward+backward")
    for form in ("locked", "per_step"):
        got = ex.r_approx_sampled(net, xb, yb, samples=4, rng=np.random.default_rng(14), q=0.3,
                                  form=form)
        want = ex.r_approx_sampled(ref, x, y, samples=4, rng=np.random.default_rng(14), q=0.3,
                                   form=form)
        _same(got.value, want.value, be, xb, what=f"R̂_approx ({form}) value")
        _same(got.stderr, want.stderr, be, xb, what=f"R̂_approx ({form}) stderr")
        _same(ex.r_approx_factor(net, xb, yb, form=form), ex.r_approx_factor(ref, x, y, form=form),
              be, xb, what=f"R_approx by the factor route ({form})")
    for red in ("none", "sum"):
        _same(im.xi_approx(net, xb, yb, 0.3, rng=np.random.default_rng(15), samples=2,
                           reduction=red),
              im.xi_approx(ref, x, y, 0.3, rng=np.random.default_rng(15), samples=2,
                           reduction=red),
              be, xb, what=f"lstm ξ_approx ({red})")
        _same(im.xi_tilde(net, xb, yb, 0.3, rng=np.random.default_rng(16), samples=2,
                          reduction=red),
              im.xi_tilde(ref, x, y, 0.3, rng=np.random.default_rng(16), samples=2,
                          reduction=red),
              be, xb, what=f"lstm ξ̃_drop ({red})")
    got = ex.r_drop_sampled(net, xb, yb, 0.3, samples=4, rng=np.random.default_rng(17), chunk=3)
    want = ex.r_drop_sampled(ref, x, y, 0.3, samples=4, rng=np.random.default_rng(17), chunk=3)
    _same(got.value, want.value, be, xb, what="R_drop (MC) value")
    _same(got.stderr, want.stderr, be, xb, what="R_drop (MC) stderr")


def _corpus_report(model: LSTM, weight_q: float = 0.3) -> dict[str, Any]:
    tokens = np.random.default_rng(18).integers(0, model.vocab, 200)
    return lm.evaluate_corpus(model, tokens, {"emb": 0.2, "h1": 0.3, "out": 0.4}, batch=2,
                              bptt=5, samples=2, mc_samples=3, xi_draws=1, xi_drop_draws=1,
                              weight_q=weight_q, seed=19, max_windows=3)


def test_lstm_eval_over_a_corpus(be, lstm):
    """``evaluate_corpus`` (the engine of ``dropcheck lstm-eval``) in the namespace: the
    figures are host floats, equal to numpy's to rounding (same seeded draws)."""
    ref, _, _ = lstm
    got, want = _corpus_report(_model_in(ref, be)), _corpus_report(ref)
    keys = [k for k, v in want.items() if isinstance(v, float) and k not in
            ("seconds", "tokens_per_s")]
    assert {"loss", "r_approx", "r_drop", "xi_approx_trcov", "xi_drop_trcov"} <= set(keys)
    for k in keys:
        assert isinstance(got[k], float), k
        # per-token means of O(1) figures over 30 tokens: the per-array tolerance above
        assert_close(np.float64(got[k]), np.float64(want[k]), rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_lstm_eval_cli(tmp_path, backend):
    """``dropcheck lstm-eval --backend torch|cupy`` reports numpy's figures (same seeded draws).

    Weight dropout, Monte-Carlo ``R_drop``, ``ξ_approx`` and ``ξ̃_drop`` on: every estimator of
    the evaluation.  The report's figures are per-token means; ``R_drop`` and the ``z`` of
    ``R̂ − R_drop`` come from differences of O(1) losses (absolute error ~1e-16, inside ATOL).
    """
    _MAKERS[backend]()
    import json

    from dropcheck.lm.cli import cli

    args = ["--vocab", "30", "--emb", "6", "--hidden", "6,6", "--batch", "2", "--bptt", "6",
            "--demo-tokens", "400", "--max-windows", "2", "--mc", "2", "--xi", "1",
            "--xi-drop", "1", "--q-weight", "0.2", "--dtype", "float64", "--no-progress"]
    reps = []
    for name in ("numpy", backend):
        out = tmp_path / f"{name}.json"
        assert cli([*args, "--backend", name, "--json", str(out)]) == 0
        reps.append(json.loads(out.read_text()))
    keys = [k for k, v in reps[0].items()
            if isinstance(v, float) and k not in ("seconds", "tokens_per_s")]
    assert {"loss", "r_approx", "r_drop", "xi_approx_trcov", "xi_drop_trcov"} <= set(keys)
    for k in keys:
        assert_close(np.float64(reps[1][k]), np.float64(reps[0][k]), rtol=RTOL, atol=ATOL,
                     err_msg=k)


# ----------------------------------------------------------------------- device placement
_TO_HOST_ARRAY = ("__array__", "numpy", "tolist", "__dlpack__")  # a host ndarray/list is made
_TO_HOST_SCALAR = ("item", "__bool__", "__float__", "__int__", "__index__")  # one value syncs


#: Branch points allowed one scalar read per block: the fast enumeration paths choose, from
#: the range of the block's exponents, between the plain ``exp`` formula and the overflow-safe
#: one (one byte per block of up to 2^k masks, no array); everything else must not grow.
_BRANCHES = {"_fastenum._factorized_ce_moments", "_fastenum._outer_sum_rows"}


def _caller() -> str:
    """``module.function`` of the innermost dropcheck frame below the spy."""
    f = sys._getframe(2)
    while f is not None:
        path = f.f_code.co_filename.replace(os.sep, "/")
        if "/dropcheck/" in path:
            mod = path.rsplit("/dropcheck/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{mod}.{f.f_code.co_name}"
        f = f.f_back
    return "(test)"


@contextlib.contextmanager
def _count_transfers(monkeypatch) -> Iterator[collections.Counter]:
    """Count every torch → host conversion while the block runs, by kind and dropcheck caller.

    Wraps the ``torch.Tensor`` methods through which a tensor's data can reach the host: the
    array ones (``np.asarray`` goes through ``__array__``, ``np.from_dlpack`` through
    ``__dlpack__``, ``backend.to_numpy`` through ``.numpy()``) and the scalar ones (``bool`` of
    a comparison, ``float``, ``.item()``).  On a CUDA tensor each is a device → host copy and
    a synchronisation.  Keys are ``(method, "module.function")``.
    """
    import torch

    counts: collections.Counter = collections.Counter()
    for name in (*_TO_HOST_ARRAY, *_TO_HOST_SCALAR):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            counts[(_name, _caller())] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    try:
        yield counts
    finally:
        monkeypatch.undo()


def _hot_loops(ref_mlp, ref_lstm) -> dict[str, Callable[[Backend, int], Any]]:
    """Each hot loop as ``f(backend, m)``: ``m`` scales its iteration count (chunks, draws)."""
    ref, x, y = ref_mlp
    lmod, xs, ys = ref_lstm

    def mlp_case(fn):
        def run(be: Backend, m: int) -> Any:
            return fn(_model_in(ref, be), be.conv(x), be.conv(y), m)
        return run

    def lstm_case(fn):
        def run(be: Backend, m: int) -> Any:
            return fn(_model_in(lmod, be), be.conv(xs), be.conv(ys), m)
        return run

    # 2^12 masks in chunks of 2^12/m, so m chunks
    return {
        "exact batched": mlp_case(lambda n, a, b, m: dc.exact.expected_gradient(
            n, a, b, 0.3, method="batched", chunk_size=2**12 // m)),
        "exact factorized": mlp_case(lambda n, a, b, m: dc.exact.expected_gradient(
            n, a, b, 0.3, sites=("h1", "h2"), method="factorized", chunk_size=2**9 // m)),
        "exact outer_sum": mlp_case(lambda n, a, b, m: dc.exact.expected_loss(
            n, a, b, 0.3, sites=("x", "h1"), method="outer_sum", chunk_size=2**8 // m)),
        "exact covariance": mlp_case(lambda n, a, b, m: dc.exact.gradient_noise_cov(
            n, a, b, 0.3, chunk_size=2**12 // m)),
        "xi_approx_cov": mlp_case(lambda n, a, b, m: im.xi_approx_cov(
            n, a, b, 0.3, chunk_size=2**12 // m)),
        "monte carlo": mlp_case(lambda n, a, b, m: mc.gradient_noise_cov(
            n, a, b, 0.3, samples=4 * m, rng=0, chunk_size=4)),
        "R_approx sampled": mlp_case(lambda n, a, b, m: ex.r_approx_sampled(
            n, a, b, samples=4 * m, rng=np.random.default_rng(0))),
        "xi_approx draws": mlp_case(lambda n, a, b, m: im.xi_approx(
            n, a, b, 0.3, rng=np.random.default_rng(0), samples=4 * m)),
        "xi_drop draws": mlp_case(lambda n, a, b, m: im.xi_drop(
            n, a, b, 0.3, rng=np.random.default_rng(0), samples=4 * m)),
        "xi_tilde draws": mlp_case(lambda n, a, b, m: im.xi_tilde(
            n, a, b, 0.3, rng=np.random.default_rng(0), samples=4 * m)),
        "noise-injected gradient": mlp_case(lambda n, a, b, m: im.noise_injected_gradient(
            n, a, b, 0.3, k=2, rng=np.random.default_rng(0), noise="approx", samples=4 * m)),
        "R_approx probes": mlp_case(lambda n, a, b, m: ex.r_approx_probe(
            n, a, b, samples=4 * m, rng=np.random.default_rng(0))),
        "lstm R̂_approx": lstm_case(lambda n, a, b, m: ex.r_approx_sampled(
            n, a, b, samples=2 * m, rng=np.random.default_rng(0), chunk=2)),
        "lstm R_drop MC": lstm_case(lambda n, a, b, m: ex.r_drop_sampled(
            n, a, b, 0.3, samples=2 * m, rng=np.random.default_rng(0), chunk=2)),
        "lstm ξ_approx": lstm_case(lambda n, a, b, m: im.xi_approx(
            n, a, b, 0.3, rng=np.random.default_rng(0), samples=2 * m, reduction="sum")),
        "lstm-eval window": lstm_case(lambda n, a, b, m: lm.evaluate_corpus(
            n, np.arange(40) % 11, 0.3, batch=2, bptt=5, samples=2 * m, mc_samples=2 * m,
            xi_draws=m, xi_drop_draws=m, chunk=2, mc_chunk=2, xi_drop_chunk=1, max_windows=1)),
    }


def test_no_host_round_trips_in_hot_loops(monkeypatch, mlp, lstm):
    """Proof that the hot loops keep torch arrays where they are.

    Every torch → host conversion is counted (:func:`_count_transfers`) while each hot loop
    runs twice, with its iteration count (enumeration chunks, Monte-Carlo chunks, label samples,
    draws) multiplied by 4 in between.  A conversion inside the loop would make the count grow
    with the iterations; the counts must be equal, so every transfer left is a fixed number of
    checks at the entry (input validation) or at the exit (the report's host floats of
    ``lstm-eval``, once per window).  And outside ``lstm-eval``, whose report is host floats by
    design, no host array is made from a tensor at all.  The same code runs on cupy, where
    numpy refuses implicit conversion outright.
    """
    be = _torch()
    problems = []
    for name, run in _hot_loops(mlp, lstm).items():
        seen = []
        for m in (1, 4):
            with _count_transfers(monkeypatch) as counts:
                run(be, m)
            seen.append(counts)
        grow = {k: seen[1][k] - seen[0][k] for k in seen[1] if seen[1][k] != seen[0][k]}
        grow = {k: v for k, v in grow.items()
                if not (k[0] in _TO_HOST_SCALAR and k[1] in _BRANCHES)}
        if grow:
            problems.append(f"{name}: transfers that grow with the loop: {grow}")
        made = {k: v for k, v in seen[0].items() if k[0] in _TO_HOST_ARRAY}
        if made and name != "lstm-eval window":
            problems.append(f"{name}: host arrays made from tensors: {made}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("be", ["torch"], indirect=True)
def test_torch_case_refuses_implicit_conversion(be):
    """The torch case can fail where cupy would: ``np.asarray(tensor)`` raises in it."""
    with pytest.raises(TypeError, match="cupy refuses it"):
        np.asarray(be.conv(np.ones(2)))


def test_inputs_are_checked_again_on_every_call():
    """Inputs are checked once per engine loop, not once per model or array: a value made bad
    in place between two calls is still caught by the second."""
    net = dc.MLP.random([3, 4, 3], sites="h1", seed=0)
    x, y = np.ones((2, 3)), np.array([0, 1])
    dc.exact.expected_loss(net, x, y, 0.3, chunk_size=2)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x must be finite"):
        dc.exact.expected_loss(net, x, y, 0.3, chunk_size=2)
    lstm = LSTM.random(5, 3, [4], seed=0)
    t = np.zeros((2, 3), dtype=np.int64)
    ex.r_drop_sampled(lstm, t, t, 0.3, samples=4, rng=np.random.default_rng(0), chunk=1)
    t[0, 0] = 5
    with pytest.raises(ValueError, match="outside"):
        ex.r_drop_sampled(lstm, t, t % 5, 0.3, samples=4, rng=np.random.default_rng(0), chunk=1)


def test_spy_sees_a_host_round_trip(monkeypatch):
    """The spy can fail: a loop that converts to numpy once per iteration is caught."""
    be = _torch()
    t = be.conv(np.ones(3))
    seen = []
    for m in (1, 4):
        with _count_transfers(monkeypatch) as counts:
            for _ in range(m):
                to_numpy(t * 2.0)
        seen.append(dict(counts))
    assert seen[0] != seen[1] and seen[1][("numpy", "backend.to_numpy")] == 4
