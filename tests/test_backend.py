"""Framework independence: the same code on numpy, array-api-strict and read-only numpy;
cupy when a GPU is present; ``import dropcheck`` pulls in no GPU or torch library."""

import subprocess
import sys

import numpy as np
import pytest

import dropcheck as dc
from dropcheck.backend import namespace, to_numpy
from dropcheck.testing import assert_close


def _net_arrays(seed=0):
    ref = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=seed)
    return ref, [np.asarray(ref.params[f"W{i}"]) for i in (1, 2)], [
        np.asarray(ref.params[f"b{i}"]) for i in (1, 2)]


def test_core_runs_in_every_namespace(xp_case):
    name, xp, conv = xp_case
    ref, ws, bs = _net_arrays()
    net = dc.MLP([conv(w) for w in ws], [conv(b) for b in bs], "tanh", ("x", "h1"))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3)), np.array([0, 2])
    xb, yb = conv(x), conv(y)
    out = dc.exact.explicit_regularizer(net, xb, yb, 0.3)
    assert namespace(out) is namespace(xb)  # results come back in the caller's namespace
    assert_close(to_numpy(out), np.asarray(dc.exact.explicit_regularizer(ref, x, y, 0.3)),
                 rtol=1e-13, check_namespace=False)
    cov = dc.exact.gradient_noise_cov(net, xb, yb, 0.3, sites=("h1",))
    assert_close(to_numpy(cov), np.asarray(dc.exact.gradient_noise_cov(ref, x, y, 0.3,
                                                                        sites=("h1",))),
                 rtol=1e-12, atol=1e-15, check_namespace=False)
    est = dc.montecarlo.explicit_regularizer(net, xb, yb, 0.3, samples=10, rng=0)
    assert namespace(est.value) is namespace(xb)


def test_inputs_are_not_mutated():
    ref, ws, bs = _net_arrays(3)
    for a in (*ws, *bs):
        a.flags.writeable = False
    net = dc.MLP(ws, bs, "relu", ("h1",))
    x = np.ones((2, 3))
    x.flags.writeable = False
    dc.exact.gradient_noise_cov(net, x, np.array([0, 1]), 0.5)
    dc.exact.expected_gradient(net, x, np.array([0, 1]), 0.5)


def test_import_pulls_in_no_gpu_or_torch_library():
    code = (
        "import sys, dropcheck, dropcheck.exact, dropcheck.montecarlo; "
        "bad = [m for m in ('cupy', 'torch', 'jax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _cupy_with_device():
    try:
        import cupy
    except ImportError:
        return None
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # cupy present but no CUDA device or driver
        return None
    return cupy


@pytest.mark.gpu
def test_cupy_matches_numpy():
    cp = _cupy_with_device()
    if cp is None:
        pytest.skip("cupy with a CUDA device is not available (CI has no GPU)")
    ref, ws, bs = _net_arrays()
    net = dc.MLP([cp.asarray(w) for w in ws], [cp.asarray(b) for b in bs], "tanh", ("x", "h1"))
    x, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([0, 2])
    out = dc.exact.explicit_regularizer(net, cp.asarray(x), cp.asarray(y), 0.3)
    assert_close(out.get(), np.asarray(dc.exact.explicit_regularizer(ref, x, y, 0.3)),
                 rtol=1e-12, check_namespace=False)
