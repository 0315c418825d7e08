"""Bad input gets a clear error naming the argument."""

import warnings

import numpy as np
import pytest

import dropcheck as dc


@pytest.fixture
def case():
    net = dc.MLP.random([3, 4, 3], sites=("x", "h1"), seed=0)
    return net, np.ones((2, 3)), np.array([0, 2])


@pytest.mark.parametrize("q", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_q_outside_unit_interval(case, q):
    net, x, y = case
    with pytest.raises(ValueError, match="q must be a drop probability in \\[0, 1\\)"):
        dc.exact.explicit_regularizer(net, x, y, q)


def test_q_dict_errors(case):
    net, x, y = case
    with pytest.raises(ValueError, match="not among"):
        dc.exact.expected_loss(net, x, y, {"x": 0.1, "h1": 0.1, "h7": 0.2})
    with pytest.raises(ValueError, match="no drop probability for sites \\['h1'\\]"):
        dc.exact.expected_loss(net, x, y, {"x": 0.1})
    with pytest.raises(ValueError, match="q\\['x'\\]"):
        dc.exact.expected_loss(net, x, y, {"x": 1.0, "h1": 0.1})
    with pytest.raises(TypeError, match="q must be a float"):
        dc.exact.expected_loss(net, x, y, "half")


def test_shapes(case):
    net, x, y = case
    with pytest.raises(ValueError, match="x must have shape \\(n, 3\\)"):
        dc.exact.expected_loss(net, np.ones((2, 4)), y, 0.1)
    with pytest.raises(ValueError, match="y must have shape \\(2,\\)"):
        dc.exact.expected_loss(net, x, np.array([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="noise\\['h1'\\] must have shape"):
        net.forward(x, {"h1": np.zeros((5, 2, 3))})
    with pytest.raises(ValueError, match="directions must have shape"):
        dc.exact.gradient_noise_cov(net, x, y, 0.1, directions=np.ones((3, 2)))
    with pytest.raises(ValueError, match="weights\\[1\\] has 5 inputs"):
        dc.MLP([np.ones((4, 3)), np.ones((2, 5))], [np.ones(4), np.ones(2)])


def test_labels(case):
    net, x, _ = case
    with pytest.raises(ValueError, match="labels outside \\[0, 3\\)"):
        dc.exact.expected_loss(net, x, np.array([0, 3]), 0.1)
    with pytest.raises(ValueError, match="labels outside"):
        dc.exact.expected_loss(net, x, np.array([-1, 0]), 0.1)
    with pytest.raises(TypeError, match="integer class labels"):
        dc.exact.expected_loss(net, x, np.array([0.5, 1.0]), 0.1)


def test_non_finite(case):
    net, x, y = case
    with pytest.raises(ValueError, match="x must be finite"):
        dc.exact.expected_loss(net, np.array([[np.nan, 0, 0], [0, 0, 0]]), y, 0.1)
    w = np.ones((4, 3))
    w[0, 0] = np.inf
    with pytest.raises(ValueError, match="weights\\[0\\] must be finite"):
        dc.MLP([w, np.ones((3, 4))], [np.ones(4), np.ones(3)])
    with pytest.raises(ValueError, match="y must be finite"):
        m = dc.Linear.random(3, 1, loss="squared")
        dc.exact.expected_loss(m, x, np.array([[np.nan], [0.0]]), 0.1)


def test_unknown_names(case):
    net, x, y = case
    with pytest.raises(ValueError, match="not dropout sites of this model"):
        dc.exact.expected_loss(net, x, y, 0.1, sites=("h2",))
    with pytest.raises(ValueError, match="activation must be one of"):
        dc.MLP.random([3, 2], activation="swish")
    with pytest.raises(ValueError, match="sites must be distinct names among"):
        dc.MLP.random([3, 4, 2], sites=("h3",))
    with pytest.raises(ValueError, match="loss must be one of"):
        dc.MLP.random([3, 2], loss="hinge")


def test_counts_and_generators(case):
    net, x, y = case
    with pytest.raises(ValueError, match="samples must be an integer >= 2"):
        dc.montecarlo.expected_loss(net, x, y, 0.1, samples=1, rng=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        dc.exact.dropout_k_cov(net, x, y, 0.1, k=0)
    with pytest.raises(TypeError, match="both 'seed' \\(deprecated\\) and 'rng'"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dc.montecarlo.expected_loss(net, x, y, 0.1, samples=4, seed=0,
                                    rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be an int seed, a numpy SeedSequence"):
        dc.montecarlo.expected_loss(net, x, y, 0.1, samples=4, rng="42")
    with pytest.raises(ValueError, match="rng: a seed must be a non-negative integer, got -1"):
        dc.montecarlo.expected_loss(net, x, y, 0.1, samples=4, rng=-1)


def test_model_must_be_a_dropcheck_model(case):
    """Every entry point's first check (the signature decorator): a non-model is a TypeError."""
    _, x, y = case
    from dropcheck import explicit, glm, implicit

    for call in (lambda: dc.exact.expected_loss({"W1": np.ones((4, 3))}, x, y, 0.1),
                 lambda: dc.montecarlo.expected_loss("net", x, y, 0.1, samples=4),
                 lambda: explicit.r_approx(np.ones(3), x, y),
                 lambda: implicit.xi_approx(None, x, y, 0.1),
                 lambda: dc.classical.mc_dropout(3, x, 0.1, samples=4),
                 lambda: glm.quadratic_regularizer("lin", x, 0.1)):
        with pytest.raises(TypeError, match="model must be a dropcheck model .* got "):
            call()
