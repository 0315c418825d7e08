import os

# Small matrices (≤ a few hundred) are slower with threaded BLAS on a loaded 2-core machine
# (measured 0.2–0.6 s vs 3–10 ms per 100×100 eigh); set before numpy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the BLAS thread settings)
import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# "ci": bounded examples, no deadline (shared 2-core machines time erratically).
settings.register_profile(
    "ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("dev", max_examples=40, deadline=None)
# the fuzz suite (tests/fuzz): a few adversarial cases per public function in CI; the long
# profile on demand (DROPCHECK_FUZZ=long), its figures in docs/reliability.md
settings.register_profile(
    "fuzz-ci", max_examples=6, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failing case is shown as drawn
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "fuzz-long", max_examples=1000, deadline=None, derandomize=False, database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _strict():
    try:
        import array_api_strict
    except ImportError:  # pragma: no cover - dev extra installs it
        return None
    return array_api_strict


@pytest.fixture
def rng():
    return np.random.default_rng(20260123)


BACKENDS = ["numpy", "array_api_strict", "numpy_readonly"]


@pytest.fixture(params=BACKENDS)
def xp_case(request):
    """(namespace, converter) pairs: the converter turns numpy arrays into that backend's."""
    name = request.param
    if name == "numpy":
        import array_api_compat.numpy as xnp

        return name, xnp, lambda a: np.asarray(a)
    if name == "numpy_readonly":
        import array_api_compat.numpy as xnp

        def ro(a):
            a = np.array(a)
            a.flags.writeable = False
            return a

        return name, xnp, ro
    strict = _strict()
    if strict is None:
        pytest.skip("array-api-strict is not installed (pip install -e '.[dev]')")
    return name, strict, lambda a: strict.asarray(np.asarray(a))
