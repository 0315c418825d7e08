"""Tests of the sympy derivations: every check passes, rendering works, and the symbols check the
numbers: each derived closed form, lambdified, agrees with an independent numpy computation
(exact enumeration over noise outcomes or masks, central finite differences of a numpy
log-softmax) on random inputs from a seeded Generator.
"""

import itertools

import dropcheck.derivations as derivations
import numpy as np
import pytest
from dropcheck.derivations import MODULES, Derivation, all_derivations, cli, get, render

# Exact enumeration in float64: sums of at most 2^5 products of O(1..10^4) terms, so rounding is
# ~1e2·eps relative ≈ 2e-14; 1e-12 catches any formula slip and allows another summation order.
EXACT = {"rtol": 1e-12, "atol": 1e-12}
# Central second differences with step 1e-4: truncation O(eps²·f'''') ≈ 1e-8 plus rounding
# O(machine-eps·|f|/eps²) ≈ 2e-8 for |f| = O(1); 1e-6 leaves a 50× margin.
FD_HESSIAN = {"rtol": 1e-6, "atol": 1e-6}
# Central first differences with step 1e-6: truncation O(eps²·f''') ≈ 1e-12 plus rounding
# O(machine-eps·|f|/eps) ≈ 2e-10; 1e-8 leaves a 50× margin.
FD_GRAD = {"rtol": 1e-8, "atol": 1e-8}


@pytest.fixture
def gen():
    return np.random.default_rng(2020)


def _qs(gen, n=5):
    return gen.uniform(0.05, 0.95, size=n)


# ----- independent numpy oracles -----

def _eta_law(q):
    """The paper's η (Sec. 2) as numpy values and probabilities."""
    return np.array([-1.0, q / (1 - q)]), np.array([q, 1 - q])


def _iid_outcomes(values, probs, n):
    """Yield (outcome vector, probability) for n iid draws of a finite law."""
    for idx in itertools.product(range(len(values)), repeat=n):
        idx = np.array(idx)
        yield values[idx], float(np.prod(probs[idx]))


def _log_softmax(v):
    m = np.max(v)
    return v - m - np.log(np.sum(np.exp(v - m)))


def _ce(v, y):
    return -_log_softmax(v)[y]


def _fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def _fd_hessian(f, x, eps=1e-4):
    n = x.size
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i] = eps
            ej[j] = eps
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * eps**2)
    return H


# ----- every derivation checks; structure; rendering; CLI -----

@pytest.mark.parametrize("name", MODULES)
def test_check_passes(name):
    d = get(name)
    assert d.name == name
    assert d.statement and d.source and d.steps
    assert d.check(), f"{name}: residual {d.residual()}"


def test_all_derivations_stable_order():
    names = [d.name for d in all_derivations()]
    assert names == list(MODULES)
    assert [d.name for d in all_derivations()] == names
    assert len(set(names)) == len(names)


def test_every_derivation_has_numeric_form():
    for d in all_derivations():
        assert callable(d.numeric()), d.name


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown"])
def test_render_formats(fmt):
    for d in all_derivations():
        out = render(d, fmt)
        assert d.name.replace("_", r"\_" if fmt == "latex" else "_") in out
        assert "PASS" in out
        for i in range(1, len(d.steps) + 1):
            if fmt != "latex":
                assert f"{i}. " in out
    assert r"\begin{enumerate}" in render(get("ridge"), "latex")
    assert "$$" in render(get("ridge"), "markdown")


def test_render_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'html'"):
        render(get("ridge"), "html")


def test_get_unknown_name_lists_known():
    with pytest.raises(KeyError, match="eta_moments"):
        get("no_such_result")


def test_check_false_and_shape_mismatch():
    import sympy as sp

    x = sp.Symbol("x")
    wrong = Derivation(name="wrong", statement="x = x + 1", source="test", steps=[],
                       lhs=x, rhs=x + 1)
    assert wrong.check() is False
    with pytest.raises(ValueError, match="no numeric closed form"):
        wrong.numeric()
    bad = Derivation(name="bad", statement="", source="", steps=[],
                     lhs=sp.zeros(2, 2), rhs=sp.zeros(2, 1))
    with pytest.raises(ValueError, match="shape"):
        bad.check()


def test_cli_all_pass(capsys):
    assert cli([]) == 0
    out = capsys.readouterr().out
    assert f"{len(MODULES)} derivations: {len(MODULES)} passed, 0 failed" in out


def test_cli_only_and_formats(capsys):
    assert cli(["--markdown", "--only", "ridge", "ce_hessian"]) == 0
    out = capsys.readouterr().out
    assert "### `ridge`" in out and "### `ce_hessian`" in out and "eta_moments" not in out
    assert cli(["--latex", "--only", "eta_moments"]) == 0
    assert r"\subsection*{eta\_moments}" in capsys.readouterr().out
    assert cli(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(MODULES)


def test_cli_unknown_name(capsys):
    assert cli(["--only", "nope"]) == 2
    assert "unknown derivation(s) nope" in capsys.readouterr().err


def test_cli_returns_1_on_failure(monkeypatch, capsys):
    import sympy as sp

    x = sp.Symbol("x")
    failing = Derivation(name="ridge", statement="broken", source="test", steps=[],
                         lhs=x, rhs=x + 1)
    monkeypatch.setattr(derivations, "get", lambda name: failing)
    assert cli(["--only", "ridge"]) == 1
    assert "1 failed (ridge)" in capsys.readouterr().out


# ----- the symbols check the numbers -----

def test_eta_moments_numeric(gen):
    f = get("eta_moments").numeric()
    for q in _qs(gen):
        values, probs = _eta_law(q)
        exact = [np.sum(probs * values**k) for k in (1, 2, 3)]
        np.testing.assert_allclose(f(q), exact, **EXACT)


def test_delta_covariance_numeric(gen):
    f = get("delta_covariance").numeric()
    for q in _qs(gen):
        h = gen.standard_normal(3)
        values, probs = _eta_law(q)
        exact = sum(w * np.outer(eta * h, eta * h) for eta, w in _iid_outcomes(values, probs, 3))
        np.testing.assert_allclose(f(q, h), exact, **EXACT)


def test_inverted_dropout_numeric(gen):
    f = get("inverted_dropout").numeric()
    for q in _qs(gen):
        values, probs = _eta_law(q)
        table = np.column_stack([1 + values, probs])
        np.testing.assert_allclose(f(q), table, **EXACT)
        # ... and it is the law of m/(1-q) for m ~ Bernoulli(1-q): values 0, 1/(1-q).
        np.testing.assert_allclose(table[:, 0], np.array([0.0, 1.0]) / (1 - q), **EXACT)


def test_mean_preservation_numeric(gen):
    f = get("mean_preservation").numeric()
    for q in _qs(gen):
        h = gen.standard_normal(3)
        masks = np.array([0.0, 1.0])
        exact = sum(w * m * h / (1 - q)
                    for m, w in _iid_outcomes(masks, np.array([q, 1 - q]), 3))
        np.testing.assert_allclose(f(q, h), exact, **EXACT)
        np.testing.assert_allclose(exact, h, **EXACT)


def test_rademacher_scaling_numeric(gen):
    f = get("rademacher_scaling").numeric()
    for q in _qs(gen):
        c = f(q)
        assert c > 0
        s = np.array([-1.0, 1.0])
        half = np.array([0.5, 0.5])
        var_cs = np.sum(half * (c * s) ** 2) - np.sum(half * c * s) ** 2
        values, probs = _eta_law(q)
        np.testing.assert_allclose(var_cs, np.sum(probs * values**2), **EXACT)


def test_taylor_second_order_numeric(gen):
    # For a quadratic f the second-order Taylor expansion is exact, so the closed form must equal
    # E_η f(h + η⊙h) − f(h) computed by enumerating the 8 outcomes of η.
    f = get("taylor_second_order").numeric()
    for q in _qs(gen):
        A = gen.standard_normal((3, 3))
        A = A + A.T
        b = gen.standard_normal(3)
        h = gen.standard_normal(3)

        def quad(x, A=A, b=b):
            return 0.5 * x @ A @ x + b @ x

        values, probs = _eta_law(q)
        exact = sum(w * quad(h + eta * h) for eta, w in _iid_outcomes(values, probs, 3)) - quad(h)
        np.testing.assert_allclose(f(q, h, np.diag(A)), exact, **EXACT)


def test_cross_site_numeric(gen):
    f = get("cross_site").numeric()
    for q1, q2 in gen.uniform(0.05, 0.95, size=(4, 2)):
        H = gen.standard_normal((4, 4))
        H = H + H.T
        g = gen.standard_normal(4)
        h = gen.standard_normal(4)
        v1, p1 = _eta_law(q1)
        v2, p2 = _eta_law(q2)
        exact = 0.0
        for (e1, w1), (e2, w2) in itertools.product(_iid_outcomes(v1, p1, 2),
                                                    list(_iid_outcomes(v2, p2, 2))):
            delta = np.concatenate([e1, e2]) * h
            exact += w1 * w2 * (g @ delta + 0.5 * delta @ H @ delta)
        np.testing.assert_allclose(f(q1, q2, h, np.diag(H)), exact, **EXACT)


def test_gauss_newton_numeric(gen):
    f = get("gauss_newton").numeric()
    for _ in range(4):
        A = gen.standard_normal((2, 2))
        B = gen.standard_normal((2, 2))
        h = gen.standard_normal(2)

        def loss(hh, A=A, B=B):
            return _ce(B @ np.tanh(A @ hh), 0)

        np.testing.assert_allclose(f(h, A, B), _fd_hessian(loss, h), **FD_HESSIAN)


def test_ce_hessian_numeric(gen):
    f = get("ce_hessian").numeric()
    for _ in range(4):
        v = 2 * gen.standard_normal(3)
        for y in range(3):
            fd = _fd_hessian(lambda vv, y=y: _ce(vv, y), v)
            np.testing.assert_allclose(f(v), fd, **FD_HESSIAN)


def test_sampled_label_numeric(gen):
    f = get("sampled_label").numeric()
    for _ in range(4):
        v = 2 * gen.standard_normal(3)
        p = np.exp(_log_softmax(v))
        outer = sum(p[y] * np.outer(g, g)
                    for y in range(3)
                    for g in [_fd_grad(lambda vv, y=y: _ce(vv, y), v)])
        np.testing.assert_allclose(f(v), outer, **FD_GRAD)


def test_theorem41_terms_numeric(gen):
    f = get("theorem41_terms").numeric()
    for _ in range(4):
        v = 2 * gen.standard_normal(3)
        p = np.exp(_log_softmax(v))
        for y in range(3):
            e = np.eye(3)[y]
            trace, sq_norm = f(p, e)
            loss = lambda vv, y=y: _ce(vv, y)  # noqa: E731
            np.testing.assert_allclose(trace, np.trace(_fd_hessian(loss, v)), **FD_HESSIAN)
            np.testing.assert_allclose(sq_norm, np.sum(_fd_grad(loss, v) ** 2), **FD_GRAD)


def test_difference_noise_numeric(gen):
    f = get("difference_noise").numeric()
    for _ in range(4):
        values = gen.standard_normal((2, 3))
        probs = gen.dirichlet(np.ones(3))
        cov_tilde = np.zeros((2, 2))
        mean_tilde = np.zeros(2)
        for i, j in itertools.product(range(3), repeat=2):
            d = values[:, i] - values[:, j]
            cov_tilde += probs[i] * probs[j] * np.outer(d, d)
            mean_tilde += probs[i] * probs[j] * d
        cov_tilde -= np.outer(mean_tilde, mean_tilde)
        np.testing.assert_allclose(f(values, probs[:2]), cov_tilde, **EXACT)


def _covariance_of(combine, values, probs, k_draws):
    """Exact covariance of combine(draws) over k_draws iid draws of a finite vector law."""
    n = values.shape[1]
    first = np.zeros(values.shape[0])
    second = np.zeros((values.shape[0],) * 2)
    for idx in itertools.product(range(n), repeat=k_draws):
        w = np.prod(probs[list(idx)])
        z = combine([values[:, i] for i in idx])
        first += w * z
        second += w * np.outer(z, z)
    return second - np.outer(first, first)


def test_noise_injection_numeric(gen):
    f = get("noise_injection").numeric()
    values = gen.standard_normal((3, 3))
    probs = gen.dirichlet(np.ones(3))
    sigma = _covariance_of(lambda g: g[0], values, probs, 1)
    mean = values @ probs
    for k in (2, 3):
        a_tilde, a_approx = f(k)
        # DROPOUT_k average plus a·ξ̃ (two more independent draws).
        tilde = _covariance_of(
            lambda g, k=k, a=a_tilde: np.mean(g[:k], axis=0) + a * (g[k] - g[k + 1]),
            values, probs, k + 2)
        np.testing.assert_allclose(tilde, sigma, **EXACT)
        # DROPOUT_k average plus a·ξ with covariance Σ (a centred independent draw).
        approx = _covariance_of(
            lambda g, k=k, a=a_approx: np.mean(g[:k], axis=0) + a * (g[k] - mean),
            values, probs, k + 1)
        np.testing.assert_allclose(approx, sigma, **EXACT)


def test_ridge_numeric(gen):
    f = get("ridge").numeric()
    for p in _qs(gen):
        w, x = gen.standard_normal(3), gen.standard_normal(3)
        y = gen.standard_normal()
        exact = sum(prob * (y - w @ (m * x) / p) ** 2
                    for m, prob in _iid_outcomes(np.array([0.0, 1.0]), np.array([1 - p, p]), 3))
        np.testing.assert_allclose(f(p, y, w, x), exact, **EXACT)


def test_geometric_mean_numeric(gen):
    f = get("geometric_mean").numeric()
    for p in _qs(gen, 3):
        W = gen.standard_normal((3, 3))
        x = gen.standard_normal(3)
        b = gen.standard_normal(3)
        columns = []
        for scale in (1 / p, 1.0):  # inverted, classical
            log_g = sum(prob * _log_softmax(W @ (m * x) * scale + b)
                        for m, prob in _iid_outcomes(np.array([0.0, 1.0]),
                                                     np.array([1 - p, p]), 3))
            columns.append(np.exp(_log_softmax(log_g)))  # normalize the geometric mean
        np.testing.assert_allclose(f(p, W, x, b), np.column_stack(columns), **EXACT)


# ----- against dropcheck's numeric core -----

def test_matches_dropcheck_core(gen):
    losses = pytest.importorskip("dropcheck.losses")
    noise = pytest.importorskip("dropcheck.noise")
    ce = losses.CrossEntropy()
    hess = get("ce_hessian").numeric()
    terms = get("theorem41_terms").numeric()
    for _ in range(4):
        v = 2 * gen.standard_normal(3)
        y = int(gen.integers(3))
        p = np.asarray(losses.softmax(v))
        np.testing.assert_allclose(np.asarray(ce.hessian(v, np.asarray(y))), hess(v), **EXACT)
        g = np.asarray(ce.grad(v, np.asarray(y)))
        np.testing.assert_allclose(terms(p, np.eye(3)[y])[1], g @ g, **EXACT)
    moments = get("eta_moments").numeric()
    for q in _qs(gen):
        core = noise.eta_moments(float(q))
        np.testing.assert_allclose(moments(q), [core["mean"], core["second"], core["third"]],
                                   **EXACT)
