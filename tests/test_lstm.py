"""The LSTM language model's hand-written sweeps against an autograd oracle, and its estimators.

The oracle is an independent, explicitly unrolled LSTM in ``autograd.numpy`` (one sequence,
one time step at a time).  Derivative checks run in float64 on a tiny net (2 layers, 5 hidden,
vocabulary 7, sequence 4): both sides evaluate the same expressions in different orders, a few
ulps times the condition of a depth-≤ 10 chain, so ``rtol = 1e-9`` with ``atol = 1e-11`` (for
entries that are exactly zero in one and ~1e-17 in the other) has orders of magnitude of margin.

Statistical checks use seeded generators and a 4-standard-error band: for a normal statistic a
false alarm has probability 6e-5 per check (two-sided), and the seeds are fixed, so the tests
are deterministic; the band says how unlucky a fixed seed would have to be.
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import dropcheck as dc
from dropcheck import explicit as ex
from dropcheck import implicit as im
from dropcheck import lm
from dropcheck.models.lstm import LSTM
from dropcheck.testing import assert_close

RTOL, ATOL = 1e-9, 1e-11
V, E_DIM, H, T, N = 7, 3, 5, 4, 2


# ----- the oracle -----
def _sig(z):
    return 1.0 / (1.0 + anp.exp(-z))


def ref_logits(p, x, L, *, mask="locked", noise=None, add=None, wn=None, state=None):
    """Logits (T, V) of one sequence ``x`` (T,).

    ``noise``: site -> η, ``(d,)`` (locked) or ``(T, d)`` (per step); ``add``: site -> ``(T, d)``
    added to the value the site feeds forward (its derivative is the site Jacobian);
    ``wn``: layer -> η of ``U_l``; ``state``: per layer ``(h0, c0)``.
    """
    noise, add, wn = noise or {}, add or {}, wn or {}
    names = ["emb"] + [f"h{l}" for l in range(1, L)] + ["out"]
    steps = len(x)

    def feed(s, seq):
        out = []
        for t in range(steps):
            v = seq[t]
            if s in noise:
                v = v * (1.0 + (noise[s] if mask == "locked" else noise[s][t]))
            if s in add:
                v = v + add[s][t]
            out.append(v)
        return out

    u = feed("emb", [p["E"][int(x[t])] for t in range(steps)])
    for l in range(1, L + 1):
        W, U, b = p[f"W{l}"], p[f"U{l}"], p[f"b{l}"]
        if l in wn:
            U = U * (1.0 + wn[l])
        Hl = U.shape[1]
        h, c = state[l - 1] if state is not None else (np.zeros(Hl), np.zeros(Hl))
        hs = []
        for t in range(steps):
            z = anp.dot(W, u[t]) + anp.dot(U, h) + b
            i, f = _sig(z[:Hl]), _sig(z[Hl : 2 * Hl])
            g, o = anp.tanh(z[2 * Hl : 3 * Hl]), _sig(z[3 * Hl :])
            c = f * c + i * g
            h = o * anp.tanh(c)
            hs.append(h)
        u = feed(names[l], hs)
    D = p["D"] if "D" in p else p["E"]
    return anp.stack([anp.dot(D, u[t]) + p["bD"] for t in range(steps)])


def ref_loss(logits, y):
    m = anp.max(logits, axis=1, keepdims=True)
    lse = anp.log(anp.sum(anp.exp(logits - m), axis=1)) + m[:, 0]
    return anp.sum(lse - logits[np.arange(len(y)), y])


def flat(p, order):
    return np.concatenate([np.ravel(p[k]) for k in order])


# ----- cases -----
CASES = {
    "locked": dict(mask="locked", tie=False, wn=False, state=False),
    "per_step+tied+wdrop+state": dict(mask="per_step", tie=True, wn=True, state=True),
    "locked+tied+wdrop+state": dict(mask="locked", tie=True, wn=True, state=True),
}


class Case:
    def __init__(self, name, seed=0):
        cfg = CASES[name]
        rng = np.random.default_rng(seed)
        emb = H if cfg["tie"] else E_DIM
        self.model = LSTM.random(V, emb, H, 2, tie=cfg["tie"], mask=cfg["mask"], seed=seed,
                                 scale=2.0)
        # random biases of the decoder too (init sets them to zero)
        params = dict(self.model.params)
        params["bD"] = 0.3 * rng.standard_normal(V)
        wn = ({f"U{l}": dc.noise.sample_eta(rng, (1, 4 * H, H), 0.3) for l in (1, 2)}
              if cfg["wn"] else None)
        self.model = LSTM(params, mask=cfg["mask"], weight_noise=wn)
        self.wn = {l: wn[f"U{l}"][0] for l in (1, 2)} if wn else None
        self.state = ([(0.5 * rng.standard_normal((N, H)), 0.5 * rng.standard_normal((N, H)))
                       for _ in range(2)] if cfg["state"] else None)
        self.x = rng.integers(0, V, (N, T))
        self.y = rng.integers(0, V, (N, T))
        m = self.model
        self.noise = m.sample_noise(rng, N, T, 0.4)  # one draw, B = 1
        self.tr = m.trace(self.x, self.noise, state=self.state)
        self.p = {k: np.asarray(v) for k, v in m.params.items()}
        self.rng = rng

    def ref(self, i, p=None, noise=None, add=None):
        """Logits of sequence ``i`` with the case's noise unless ``noise`` overrides it."""
        nz = {s: e[0, i] for s, e in self.noise.items()}
        nz.update(noise or {})
        st = [(h[i], c[i]) for h, c in self.state] if self.state is not None else None
        return ref_logits(self.p if p is None else p, self.x[i], 2, mask=self.model.mask,
                          noise=nz, add=add, wn=self.wn, state=st)

    def zeros(self, s):
        return np.zeros((T, self.model.widths[s]))


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    return Case(request.param)


def test_forward_matches_unrolled_oracle(case):
    for i in range(N):
        assert_close(case.tr.logits[0, i], case.ref(i), rtol=RTOL, atol=ATOL)


def test_site_tangent_and_backward_match_autograd(case):
    m = case.model
    for s in m.site_names:
        d = m.widths[s]
        v = case.rng.standard_normal((3, 1, N, T, d))
        u = case.rng.standard_normal((3, 1, N, T, V))
        J = np.stack([autograd.jacobian(lambda a, i=i, s=s: case.ref(i, add={s: a}))(
            case.zeros(s)) for i in range(N)])  # (n, T, V, T, d)
        assert_close(m.tangent(case.tr, {s: v}).logits[:, 0],
                     np.einsum("itcud,kiud->kitc", J, v[:, 0]), rtol=RTOL, atol=ATOL)
        adj, _ = m.backward(case.tr, u, sites=(s,))
        assert_close(adj[s][:, 0], np.einsum("itcud,kitc->kiud", J, u[:, 0]),
                     rtol=RTOL, atol=ATOL)


def test_noise_tangent_and_noise_adjoint_match_autograd(case):
    """Derivatives w.r.t. η at the trace's (nonzero) noise, locked or per step."""
    m = case.model
    for s in m.site_names:
        eta = case.noise[s][0]  # (n, d) or (n, T, d)
        tau = case.rng.standard_normal((2, 1, *eta.shape))
        u = case.rng.standard_normal((2, 1, N, T, V))
        J = [autograd.jacobian(lambda e, i=i, s=s: case.ref(i, noise={s: e}))(eta[i])
             for i in range(N)]  # (T, V, *η_i.shape)
        nd = eta.ndim - 1
        for i in range(N):
            want_t = np.tensordot(tau[:, 0, i], J[i], axes=(list(range(1, nd + 1)),
                                                            list(range(2, 2 + nd))))
            assert_close(m.tangent(case.tr, noise_tangents={s: tau}).logits[:, 0, i], want_t,
                         rtol=RTOL, atol=ATOL)
            want_a = np.tensordot(u[:, 0, i], J[i], axes=([1, 2], [0, 1]))
            assert_close(m.noise_adjoint(case.tr, u, (s,))[s][:, 0, i], want_a, rtol=RTOL,
                         atol=ATOL)


def test_param_gradients_match_autograd(case):
    m = case.model
    g = m.loss.grad(case.tr.logits, case.y)[None]
    _, pe = m.backward(case.tr, g, params=True)
    _, ps = m.backward(case.tr, g, params=True, per_example=False)
    total = 0.0
    for i in range(N):
        ref = autograd.grad(lambda p, i=i: ref_loss(case.ref(i, p=p), case.y[i]))(case.p)
        ref = flat(ref, m.params)
        assert_close(pe[0, 0, i], ref, rtol=RTOL, atol=ATOL)
        total = total + ref
    assert_close(ps[0, 0], total, rtol=RTOL, atol=ATOL)


def _hvp_ref(case, i, wrt, direction):
    """d/dε of ∇_wrt ℓ along ``direction`` = ("site"|"noise", site, vector): reverse-over-reverse.

    ``wrt`` is "params" or ("site", s) or ("noise", s).
    """
    kind, s1, v = direction

    def loss(p, a2, s2, e1):
        add = {s2: a2} if s2 is not None else {}
        noise = {}
        if kind == "site":
            add[s1] = add.get(s1, 0.0) + e1 * v
        else:
            noise[s1] = case.noise[s1][0, i] + e1 * v
        return ref_loss(case.ref(i, p=p, noise=noise, add=add), case.y[i])

    if wrt == "params":
        return flat(autograd.grad(lambda p: autograd.grad(
            lambda e: loss(p, None, None, e))(0.0))(case.p), case.model.params)
    k2, s2 = wrt
    if k2 == "site":
        return autograd.grad(lambda a: autograd.grad(lambda e: loss(case.p, a, s2, e))(0.0))(
            case.zeros(s2))
    eta2 = case.noise[s2][0, i]

    def loss_n(e2, e):
        noise = {s2: e2}
        add = {}
        if kind == "site":
            add[s1] = e * v
        else:
            noise[s1] = (e2 if s1 == s2 else case.noise[s1][0, i]) + e * v
        return ref_loss(case.ref(i, noise=noise, add=add), case.y[i])

    return autograd.grad(lambda e2: autograd.grad(lambda e: loss_n(e2, e))(0.0))(eta2)


def test_adjoint_tangent_matches_autograd(case):
    """Forward-over-reverse: site adjoint tangents and d/dε ∇_W, for site and noise tangents."""
    m = case.model
    tr = case.tr
    g = m.loss.grad(tr.logits, case.y)
    for kind in ("site", "noise"):
        for s1 in m.site_names:
            if kind == "site":
                v = case.rng.standard_normal((N, T, m.widths[s1]))
                tan = m.tangent(tr, site_tangents={s1: v[None, None]})
            else:
                v = case.rng.standard_normal(case.noise[s1].shape[1:])
                tan = m.tangent(tr, noise_tangents={s1: v[None, None]})
            gd = m.loss.hvp(tr.logits, case.y, tan.logits)
            adj, pd = m.adjoint_tangent(tr, tan, g, gd, sites=m.site_names, params=True)
            _, pds = m.adjoint_tangent(tr, tan, g, gd, params=True, per_example=False)
            nat = m.noise_adjoint_tangent(tr, tan, g, gd, sites=(s1,)) if kind == "noise" else {}
            total = 0.0
            for i in range(N):
                direction = (kind, s1, v[i])
                ref = _hvp_ref(case, i, "params", direction)
                assert_close(pd[0, 0, i], ref, rtol=RTOL, atol=ATOL)
                total = total + ref
                for s2 in m.site_names:
                    assert_close(adj[s2][0, 0, i], _hvp_ref(case, i, ("site", s2), direction),
                                 rtol=RTOL, atol=ATOL)
                if kind == "noise":  # the Hessian w.r.t. the noise of the same site
                    assert_close(nat[s1][0, 0, i], _hvp_ref(case, i, ("noise", s1), direction),
                                 rtol=RTOL, atol=ATOL)
            assert_close(pds[0, 0], total, rtol=RTOL, atol=ATOL)


def test_locked_mask_is_the_unrolled_net_with_the_same_mask_each_step():
    c = Case("locked", seed=3)
    m = c.model
    rng = np.random.default_rng(5)
    eta = m.sample_noise(rng, N, T, 0.5, 3)  # (3, n, d): one mask per sequence
    per = m.with_mask("per_step")
    eta_t = {s: np.broadcast_to(e[:, :, None, :], (3, N, T, e.shape[-1])) for s, e in eta.items()}
    assert_close(m.trace(c.x, eta).logits, per.trace(c.x, eta_t).logits, rtol=0, atol=0)
    for b in range(3):
        for i in range(N):  # the oracle applies the mask explicitly at every step
            nz = {s: np.repeat(e[b, i][None], T, axis=0) for s, e in eta.items()}
            want = ref_logits(c.p, c.x[i], 2, mask="per_step", noise=nz)
            assert_close(m.trace(c.x, eta).logits[b, i], want, rtol=RTOL, atol=ATOL)


def test_truncated_bptt_state_carries_across_windows():
    m = LSTM.random(V, E_DIM, [H, 4], seed=2)
    x = np.random.default_rng(0).integers(0, V, (3, 9))
    whole = m.trace(x).logits
    first = m.trace(x[:, :5])
    second = m.trace(x[:, 5:], state=m.final_state(first))
    assert_close(np.concatenate([first.logits, second.logits], axis=2), whole,
                 rtol=1e-12, atol=1e-14)


def test_forward_and_loss_value_shapes():
    m = LSTM.random(V, E_DIM, H, 2, seed=0)
    x = np.zeros((N, T), dtype=int)
    eta = np.zeros((6, 2, N, E_DIM))
    assert m.forward(x, {"emb": eta}).shape == (6, 2, N, T, V)
    assert m.forward(x[0], {"emb": np.zeros((6, E_DIM))}).shape == (6, T, V)
    assert m.loss_value(x, x, {"emb": eta}).shape == (6, 2, N)
    assert m.loss_value(x[0], x[0]).shape == ()
    per = m.with_mask("per_step")
    assert per.forward(x, {"h1": np.zeros((5, N, T, H))}).shape == (5, N, T, V)
    assert m.hidden(x)["h1"].shape == (N, T, H)


def test_exact_enumeration_runs_and_monte_carlo_agrees():
    """R_drop by dc.exact (2^13 masks) against r_drop_sampled and dc.montecarlo (4 s.e. band)."""
    m = LSTM.random(V, E_DIM, H, 2, seed=4, scale=2.0)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    q = 0.3
    exact = dc.exact.explicit_regularizer(m, x, y, q)
    mc = ex.r_drop_sampled(m, x, y, q, samples=4000, rng=np.random.default_rng(2), chunk=500)
    assert np.all(np.abs(mc.value - exact) <= 4 * mc.stderr), (mc, exact)
    gen = dc.montecarlo.explicit_regularizer(m, x, y, q, samples=4000, rng=3)
    assert np.all(np.abs(gen.value - exact) <= 4 * gen.stderr), (gen, exact)
    # the enumerated mean loss is the mean over the same masks drawn one at a time
    brute = dc.testing.brute_force_expectation(
        m, x, q, lambda nz: m.loss_value(x, y, {s: e[None, :] for s, e in nz.items()}),
        sites=("out",))
    assert_close(dc.exact.expected_loss(m, x, y, q, sites=("out",)), brute, rtol=1e-12)


def test_sampled_r_approx_is_unbiased_for_the_exact_one():
    m = LSTM.random(V, E_DIM, H, 2, seed=6, scale=2.0)
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    for form in ("locked", "per_step"):
        exact = ex.r_approx_factor(m, x, y, form=form)
        est = ex.r_approx_sampled(m, x, y, samples=3000, rng=np.random.default_rng(8), form=form,
                                  chunk=500)
        assert np.all(np.abs(est.value - exact) <= 4 * est.stderr), (form, est, exact)
    # with q: the strength-weighted sum of the per-site values
    q = {"emb": 0.1, "h1": 0.2, "out": 0.5}
    per_site = {s: ex.r_approx_factor(m, x, y, sites=(s,)) for s in m.site_names}
    assert_close(ex.r_approx_factor(m, x, y, q=q),
                 sum(ex.strength(q[s]) * v for s, v in per_site.items()), rtol=1e-12)


def test_locked_r_approx_is_taylor_gauss_newton_at_the_decoder_site():
    """At "out" the logits are affine in the noise: Taylor's Hessian is exactly Gauss–Newton.

    So the noise Hessian diagonal (forward-over-reverse) contracted the locked way equals
    R_approx's exact form there (cf. claim E2), which checks the cross-time terms.
    """
    m = LSTM.random(V, E_DIM, H, 2, seed=9, scale=2.0, sites=("out",))
    rng = np.random.default_rng(10)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    tr = m.trace(x)
    eye = np.eye(H)[:, None, None, :]  # unit noise tangents (k = d)
    tan = m.tangent(tr, noise_tangents={"out": eye})
    g = m.loss.grad(tr.logits, y)
    nat = m.noise_adjoint_tangent(tr, tan, g, m.loss.hvp(tr.logits, y, tan.logits), ("out",))
    diag = np.einsum("kbik->bi", nat["out"])[0]
    assert_close(diag, ex.r_approx_factor(m, x, y), rtol=1e-10)


def test_agrees_with_the_generic_explicit_estimators():
    """dc.explicit.r_approx (the jvp route of unit noise tangents) against the factor route."""
    m = LSTM.random(V, E_DIM, H, 2, seed=20, scale=2.0)
    rng = np.random.default_rng(21)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    exact = ex.r_approx_factor(m, x, y)
    assert_close(ex.r_approx(m, x, y, route="jvp"), exact, rtol=1e-10)
    est = ex.r_approx_sampled(m, x, y, samples=2000, rng=np.random.default_rng(22))
    assert np.all(np.abs(est.value - exact) <= 4 * est.stderr), (est, exact)


def test_gauss_newton_part_of_generic_taylor_split_is_r_approx():
    """dc.explicit's Hessian split (forward-over-reverse, unit noise tangents, written for any
    protocol model) against r_approx_factor (reverse sweeps of H_out's factor): two routes."""
    taylor = pytest.importorskip("dropcheck.explicit.taylor")
    m = LSTM.random(V, E_DIM, H, 2, seed=18, scale=2.0)
    rng = np.random.default_rng(19)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    q = {"emb": 0.3, "h1": 0.2, "out": 0.4}
    split = taylor.hessian_split(m, x, y, q)
    for s in m.site_names:
        want = np.sum(ex.r_approx_factor(m, x, y, q={s: q[s]}, sites=(s,)))
        assert_close(np.sum(split.gauss_newton[s]), want, rtol=1e-10)
    assert_close(np.sum(split.remainder["out"]), 0.0, atol=1e-14)  # F affine in η_out


def test_xi_approx_summed_inside_the_sweep_is_the_sum_per_example_and_linear():
    """reduction="sum" (LSTM: summed inside BPTT, no (n, P) array) against the per-example
    arrays of the same draws (same seed), and linearity in η (xi_approx_at)."""
    m = LSTM.random(V, E_DIM, H, 2, seed=11)
    rng = np.random.default_rng(12)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    per = im.xi_approx(m, x, y, 0.3, rng=5, samples=3)  # (3, n, P)
    summed = im.xi_approx(m, x, y, 0.3, rng=5, samples=3, reduction="sum")  # (3, P)
    assert_close(summed, per.sum(axis=1), rtol=1e-10, atol=1e-14)
    eta = m.sample_noise(rng, N, T, 0.3, 3)
    at = im.xi_approx_at(m, x, y, eta)
    half = im.xi_approx_at(m, x, y, {s: 0.5 * e for s, e in eta.items()})
    assert_close(half, 0.5 * at, rtol=1e-10, atol=1e-14)


def test_float32_agrees_with_float64():
    """float32 rounding (u = 6e-8) through ~10 sequential steps of O(1) condition: the
    normwise relative error is ~1e-6; the check allows 1e-4."""
    m64 = LSTM.random(V, E_DIM, H, 2, seed=13, scale=2.0)
    m32 = LSTM({k: v.astype(np.float32) for k, v in m64.params.items()})
    rng = np.random.default_rng(14)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    eta = m64.sample_noise(rng, N, T, 0.3, 2)
    eta32 = {s: e.astype(np.float32) for s, e in eta.items()}

    def rel(a, b):
        return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)

    t64, t32 = m64.trace(x, eta), m32.trace(x, eta32)
    assert t32.logits.dtype == np.float32
    assert rel(t32.logits, t64.logits) < 1e-4
    _, g64 = m64.backward(t64, m64.loss.grad(t64.logits, y)[None], params=True)
    _, g32 = m32.backward(t32, m32.loss.grad(t32.logits, y)[None], params=True)
    assert g32.dtype == np.float32 and rel(g32, g64) < 1e-4
    assert rel(ex.r_approx_factor(m32, x, y), ex.r_approx_factor(m64, x, y)) < 1e-4
    xi64 = im.xi_approx_at(m64, x, y, eta)
    assert rel(im.xi_approx_at(m32, x, y, eta32), xi64) < 1e-4


def test_runs_in_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    m = LSTM.random(V, E_DIM, H, 2, seed=15, tie=False)
    ms = LSTM({k: strict.asarray(v) for k, v in m.params.items()})
    rng = np.random.default_rng(16)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    eta = m.sample_noise(rng, N, T, 0.3, 2)
    tr, trs = m.trace(x, eta), ms.trace(strict.asarray(x), {s: strict.asarray(e)
                                                              for s, e in eta.items()})
    assert_close(trs.logits, strict.asarray(tr.logits), rtol=1e-13)
    g = m.loss.grad(tr.logits, y)
    tan = m.tangent(tr, noise_tangents={s: e[:1, None] for s, e in eta.items()})
    tans = ms.tangent(trs, noise_tangents={s: strict.asarray(e[:1, None]) for s, e in eta.items()})
    _, a = m.adjoint_tangent(tr, tan, g, m.loss.hvp(tr.logits, y, tan.logits), params=True)
    gs = ms.loss.grad(trs.logits, strict.asarray(y))
    _, b = ms.adjoint_tangent(trs, tans, gs, ms.loss.hvp(trs.logits, strict.asarray(y),
                                                          tans.logits), params=True)
    assert_close(b, strict.asarray(a), rtol=1e-12, atol=1e-15)
    est = ex.r_approx_sampled(ms, strict.asarray(x), strict.asarray(y), samples=2,
                              rng=np.random.default_rng(0), form="per_step")
    assert dc.backend.namespace(est.value) is strict


@pytest.mark.gpu
def test_cupy_matches_numpy():
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, or cupy without a CUDA device or driver
        pytest.skip("cupy with a CUDA device is not available (CI has no GPU)")
    m = LSTM.random(V, E_DIM, H, 2, seed=17)
    mc = LSTM({k: cp.asarray(v) for k, v in m.params.items()})
    x = np.random.default_rng(0).integers(0, V, (N, T))
    tr, trc = m.trace(x), mc.trace(cp.asarray(x))
    _, g = m.backward(tr, m.loss.grad(tr.logits, x)[None], params=True)
    _, gc = mc.backward(trc, mc.loss.grad(trc.logits, cp.asarray(x))[None], params=True)
    assert_close(gc.get(), g, rtol=1e-10, atol=1e-13, check_namespace=False)


def test_bad_inputs_name_the_problem():
    m = LSTM.random(V, E_DIM, H, 2, seed=0)
    x = np.zeros((N, T), dtype=int)
    with pytest.raises(ValueError, match="outside"):
        m.trace(x + V)
    with pytest.raises(TypeError, match="integer token ids"):
        m.trace(x + 0.5)
    with pytest.raises(ValueError, match="per_step masks need a time axis"):
        m.with_mask("per_step").trace(x, {"emb": np.zeros((1, N, E_DIM))})
    with pytest.raises(ValueError, match="shape"):
        m.trace(x, {"h1": np.zeros((1, N, T, H))})
    with pytest.raises(ValueError, match="tied decoder"):
        LSTM.random(V, E_DIM, H, 2, tie=True)
    with pytest.raises(ValueError, match="sites must be"):
        LSTM.random(V, E_DIM, H, 2, sites=("h2",))


def test_corpus_evaluation_and_cli(tmp_path, capsys):
    from dropcheck.lm import load_tokens, markov_corpus
    from dropcheck.lm.cli import cli as lm_cli

    tokens, lang = markov_corpus(3000, 50, seed=0)
    assert 0 < lang.entropy_rate < np.log(50)
    m = LSTM.random(50, 8, 8, 2, seed=0, sites=("emb", "out"))
    rep = lm.evaluate_corpus(m, tokens, {"emb": 0.2, "out": 0.3}, batch=4, bptt=10,
                             samples=2, mc_samples=4, xi_draws=1, xi_drop_draws=1,
                             max_windows=3, weight_q=0.5)
    assert rep["tokens"] == 3 * 4 * 10 and rep["r_approx"] > 0 and rep["r_approx_se"] >= 0
    assert {"r_drop", "r_drop_ci95", "xi_approx_trcov", "xi_drop_trcov"} <= set(rep)
    path = tmp_path / "tok.txt"
    path.write_text(" ".join(map(str, tokens[:800])) + "\n")
    np.save(tmp_path / "tok.npy", tokens[:800])
    assert_close(load_tokens(tmp_path / "tok.npy"), load_tokens(path), rtol=0)
    out = tmp_path / "rep.json"
    code = lm_cli(["--tokens", str(path), "--vocab", "50", "--emb", "8", "--hidden", "8,8",
                   "--batch", "4", "--bptt", "10", "--max-windows", "2", "--json", str(out),
                   "--no-progress", "--mask", "per_step", "--mc", "3"])
    assert code == 0 and out.exists()
    assert "strength·R̂_approx (per_step)" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 three")
    assert lm_cli(["--tokens", str(bad), "--no-progress"]) == 2


# ----- the generic estimators with a window's context, against the unrolled oracle -----
def _oracle_setup(c):
    """The case's model with its carried state bound (its DropConnect mask is the model's)."""
    st = c.state if c.state is not None else [(np.zeros((N, H)),) * 2] * 2
    return c.model.with_context(state=c.state), [[(h[i], cc[i]) for h, cc in st]
                                                 for i in range(N)]


def _oracle_r_approx(c, states, site, form):
    """``Σ_k t_kᵀ H_out t_k`` per sequence, ``t_k = ∂F/∂η_k`` by autograd on the oracle."""
    out = np.zeros(N)
    for i in range(N):
        f = c.model  # only its sizes are used
        shape = (f.widths[site],) if form == "locked" else (T, f.widths[site])

        def logits(e, i=i):
            return ref_logits(c.p, c.x[i], 2, mask=form, noise={site: e}, wn=c.wn,
                              state=states[i])

        J = autograd.jacobian(logits)(np.zeros(shape)).reshape(T, V, -1)  # (T, V, units)
        z = logits(np.zeros(shape))
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        Hs = np.einsum("tv,vw->tvw", p, np.eye(V)) - np.einsum("tv,tw->tvw", p, p)
        out[i] = np.einsum("tvk,tvw,twk->", J, Hs, J)
    return out


@pytest.mark.parametrize("name", ["per_step+tied+wdrop+state", "locked+tied+wdrop+state"])
def test_generic_r_approx_with_state_and_weight_noise_matches_the_oracle(name):
    """dc.explicit's factor route and sampled labels on an LSTM window with a carried state and
    a DropConnect mask, in both mask forms, against autograd Jacobians of the unrolled oracle
    contracted with H_out (float64; the same sums in another order: rtol 1e-9).  The sampled
    estimate (2000 label draws, per-site strengths from q) must lie within 4 s.e. (false alarm
    6e-5 per check for a normal statistic; seeded)."""
    c = Case(name, seed=23)
    m, states = _oracle_setup(c)
    q = {"emb": 0.3, "h1": 0.2, "out": 0.4}
    for form in ("locked", "per_step"):
        want = {s: _oracle_r_approx(c, states, s, form) for s in m.site_names}
        got = ex.r_approx_factor(m, c.x, c.y, form=form, per_site=True)
        for s in m.site_names:
            assert_close(got[s], want[s], rtol=1e-9, atol=1e-14)
        total = sum(ex.strength(q[s]) * want[s] for s in m.site_names)
        est = ex.r_approx_sampled(m, c.x, c.y, samples=2000, rng=np.random.default_rng(24), q=q,
                                  form=form, chunk=700)
        assert np.all(np.abs(est.value - total) <= 4 * est.stderr), (form, est, total)
    # without the bound state the value differs: the context reaches the estimator
    assert not np.allclose(ex.r_approx_factor(c.model, c.x, c.y), ex.r_approx_factor(m, c.x, c.y))


@pytest.mark.parametrize("mask", ["locked", "per_step"])
def test_r_drop_sampled_with_state_and_weight_noise_matches_enumeration_of_the_oracle(mask):
    """Monte-Carlo R_drop (control variate) at the decoder site of a 2-step window with a
    carried state and a DropConnect mask, against the exact expectation over all masks of the
    unrolled oracle (2^3 locked, 2^6 per-step masks per sequence); 4 s.e. band (false alarm
    6e-5 per sequence; seeded)."""
    rng = np.random.default_rng(25)
    Tw, d, q = 2, 3, 0.3
    base = LSTM.random(V, E_DIM, d, 2, mask=mask, seed=26, scale=2.0, sites=("out",))
    wn = {f"U{l}": dc.noise.sample_eta(rng, (1, 4 * d, d), 0.3) for l in (1, 2)}
    state = [(0.5 * rng.standard_normal((N, d)), 0.5 * rng.standard_normal((N, d)))
             for _ in range(2)]
    m = base.with_context(state=state, weight_noise=wn)
    x, y = rng.integers(0, V, (N, Tw)), rng.integers(0, V, (N, Tw))
    p = {k: np.asarray(v) for k, v in m.params.items()}
    units = d if mask == "locked" else Tw * d
    shape = (d,) if mask == "locked" else (Tw, d)
    exact = np.zeros(N)
    for i in range(N):
        st = [(h[i], cc[i]) for h, cc in state]

        def loss(e, i=i, st=st):
            z = ref_logits(p, x[i], 2, mask=mask, noise={"out": e}, wn={1: wn["U1"][0],
                           2: wn["U2"][0]}, state=st)
            return ref_loss(z, y[i])

        clean = loss(np.zeros(shape))
        for bits in range(2**units):
            keep = np.array([(bits >> k) & 1 for k in range(units)], dtype=float)
            prob = np.prod(np.where(keep == 1, 1 - q, q))
            eta = np.where(keep == 1, q / (1 - q), -1.0).reshape(shape)
            exact[i] += prob * (loss(eta) - clean)
    est = ex.r_drop_sampled(m, x, y, q, samples=20000, rng=np.random.default_rng(27), chunk=5000)
    assert np.all(np.abs(est.value - exact) <= 4 * est.stderr), (est, exact)


@pytest.mark.parametrize("name", ["per_step+tied+wdrop+state", "locked+tied+wdrop+state"])
def test_generic_xi_summed_over_sequences_matches_the_oracle(name):
    """dc.implicit.xi_approx and xi_tilde with reduction="sum" (summed inside the sweep) on an
    LSTM window with a carried state and a DropConnect mask, against the oracle: ξ_approx as a
    central difference in ε of autograd's ∇_W Σ_i ℓ(F(x_i, εη_i)) (h = 1e-5: truncation
    ~h²·|∂³| ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11 relative; rtol 1e-6), ξ̃ as the difference of
    two autograd gradients (same sums in another order: rtol 1e-9).  The η are redrawn from the
    same seed (the documented order: per site, draws in a chunk, pairs j and b+j)."""
    c = Case(name, seed=28)
    m, states = _oracle_setup(c)
    order = list(m.params)
    shapes = {k: c.p[k].shape for k in order}

    def unflat(v):
        out, j = {}, 0
        for k in order:
            size = int(np.prod(shapes[k]))
            out[k] = anp.reshape(v[j : j + size], shapes[k])
            j += size
        return out

    def total_loss(v, noise):
        pp = unflat(v)
        return sum(ref_loss(ref_logits(pp, c.x[i], 2, mask=m.mask,
                                       noise={s: e[i] for s, e in noise.items()}, wn=c.wn,
                                       state=states[i]), c.y[i]) for i in range(N))

    grad = autograd.grad(total_loss)
    w = flat(c.p, order)
    q = 0.3
    xi = im.xi_approx(m, c.x, c.y, q, rng=31, samples=1, reduction="sum")
    eta = m.sample_noise_for(np.random.default_rng(31), c.x, q, 1)
    h = 1e-5
    want = (grad(w, {s: h * e[0] for s, e in eta.items()})
            - grad(w, {s: -h * e[0] for s, e in eta.items()})) / (2 * h)
    assert_close(xi[0], want, rtol=1e-6, atol=1e-10)
    pair = im.xi_tilde(m, c.x, c.y, q, rng=32, samples=2, reduction="sum", chunk=2)
    eta2 = m.sample_noise_for(np.random.default_rng(32), c.x, q, 4)  # pairs (0, 2), (1, 3)
    for j in range(2):
        want2 = (grad(w, {s: e[j] for s, e in eta2.items()})
                 - grad(w, {s: e[2 + j] for s, e in eta2.items()}))
        assert_close(pair[j], want2, rtol=1e-9, atol=1e-12)


def test_protocol_features_have_defaults_and_the_lstm_declares_its_own():
    """The documented optional protocol features: an MLP keeps the defaults (locked, no site
    axes, no context, no weight-noise sites, per-example reduction by summing), the LSTM
    declares its own; summing inside BPTT equals summing the per-sequence gradients (same
    sums in another order: rtol 1e-10)."""
    mlp = dc.models.MLP.random([3, 4, 2], seed=0)
    assert (mlp.mask, mlp.site_axes, mlp.context_names, mlp.weight_noise_sites) == (
        "locked", 0, (), ())
    assert mlp.with_context(state=None) is mlp
    with pytest.raises(ValueError, match="context"):
        mlp.with_context(state=[(0, 0)])
    xm = np.random.default_rng(0).standard_normal((5, 3))
    assert mlp.noise_shape_for("h1", xm, 2) == (2, 5, 4)
    m = LSTM.random(V, E_DIM, H, 2, seed=30, mask="per_step")
    assert (m.site_axes, m.context_names, m.weight_noise_sites) == (
        1, ("state", "weight_noise"), ("U1", "U2"))
    x, y = np.random.default_rng(1).integers(0, V, (N, T)), np.zeros((N, T), dtype=int)
    assert m.noise_shape_for("h1", x, 3) == (3, N, T, H)
    assert m.with_mask("locked").noise_shape_for("h1", x, 3) == (3, N, H)
    tr = m.trace(x)
    cot = m.loss.grad(tr.logits, y)[None, ...]
    assert_close(m.param_gradient(tr, cot, per_example=False),
                 np.sum(m.param_gradient(tr, cot), axis=-2), rtol=1e-10, atol=1e-14)
    # the locked form of the noise gradient is the per-step one summed over time
    adj, _ = m.backward(tr, cot, sites=m.site_names)
    lock, step = (m.noise_terms(tr, adj, m.site_names, form=f) for f in ("locked", "per_step"))
    for s in m.site_names:
        assert_close(lock[s], np.sum(step[s], axis=-2), rtol=1e-12, atol=1e-15)


def test_lstm_eval_is_a_deprecated_alias_that_warns_once():
    import warnings

    import dropcheck.lstm_eval as le

    with pytest.warns(DeprecationWarning, match="lstm_eval.strength"):
        assert le.strength(0.5) == ex.strength(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert le.strength(0.2) == ex.strength(0.2)  # once only
