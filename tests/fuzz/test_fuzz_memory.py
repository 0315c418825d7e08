"""Memory bounds: huge counts run in a child capped at 2 GiB of address space (issue 18).

Each case is valid input whose cost grows with a count; the engine's chunking must keep
memory at the chunk budget whatever the count, so the child is still running (or done)
when its time cap stops it — never a MemoryError.
"""

from __future__ import annotations

import sys

import pytest

from tests.fuzz._memory import run_capped

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")

_NET = """
net = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
x = np.random.default_rng(1).standard_normal((4, 3)); y = np.array([0, 2, 1, 0])
"""

CASES = {
    # defect 3: a 20-40-10 MLP, 900 samples asked one (900, n, P, P) allocation (9.4 GiB)
    "montecarlo.gradient_noise_cov": """
big = dc.MLP.random([20, 40, 10], sites=("h1",), seed=0)
xb = np.random.default_rng(1).standard_normal((2, 20)); yb = np.array([0, 3])
montecarlo.gradient_noise_cov(big, xb, yb, 0.3, samples=900, rng=0)
""",
    "montecarlo.expected_gradient": _NET + "montecarlo.expected_gradient(net, x, y, 0.3, "
                                           "samples=10**9, rng=0)",
    "classical.mc_dropout": _NET + "classical.mc_dropout(net, x, 0.3, samples=10**9, rng=0)",
    # defect 10: probes=1e8 and k=1e8 asked 11.2 GiB at once
    "explicit.r_approx_probe": _NET + "explicit.r_approx_probe(net, x, y, samples=10**8, rng=0)",
    "explicit.r_approx_sampled": _NET + "explicit.r_approx_sampled(net, x, y, samples=10**8, "
                                        "rng=0)",
    "implicit.dropout_k_gradient": _NET + "implicit.dropout_k_gradient(net, x, y, 0.3, k=10**8, "
                                          "rng=0)",
    "exact.expected_loss[wide]": """
wide = dc.MLP.random([3, 26, 3], sites=("h1",), seed=0)
exact.expected_loss(wide, np.ones((4, 3)), np.array([0, 1, 2, 0]), 0.3, method="batched")
""",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_memory_bounded_under_cap(name):
    """The call runs within 2 GiB of address space (killed by its time cap, not by memory)."""
    assert run_capped(CASES[name], seconds=3.0) == "bounded", name
