r"""``check_gradient_noise``: compare a user's gradient-noise samples with dropout's exact noise.

The user's function returns one sample per call of the noise that dropout adds to the gradient
(Wei, Kakade & Ma 2020, Sec. 3 and 4.2; paper-notes "Implicit regularizer"):

- ``kind="xi_approx"``: ``ξ_approx = ∇_W Σ_i J_loss,i (η_i ⊙ h_i)`` (4.5)/(4.6), linear in η,
  with exact covariance ``(q/(1−q)) Σ_k a_k a_kᵀ`` (:func:`dropcheck.implicit.xi_approx_cov`);
  η Bernoulli (the paper's), Rademacher ``·sqrt(q/(1−q))`` (footnote 6) or Gaussian (``noise=``);
- ``kind="xi_drop"``: ``ξ_drop = ∇_W ℓ(F(x,η)) − ∇_W ℓ_drop`` (3.3), covariance enumerated over
  every mask (:func:`dropcheck.exact.gradient_noise_cov`).

With ``samples="gradient"`` the function returns stochastic *gradients* instead: a dropout
training gradient (``xi_drop``: mean ``∇_W ℓ_drop``, :func:`dropcheck.exact.expected_gradient`)
or Algorithm 2's ``∇_W ℓ(F(x)) + ξ_approx`` (``xi_approx``: mean the clean gradient).

A sample is the noise of the mini-batch gradient, the mean over the ``n`` examples (each with its
own independent masks): a flat vector ``(P,)`` in dropcheck's parameter order ``W1, b1, W2, …``
(``torch.nn.Sequential.parameters()`` order), or a list of per-parameter arrays; per-example
noise ``(n, P)`` (or per-parameter arrays with a leading ``n`` axis) is accepted too.  With the
torch adapter the function may instead leave the gradient in ``model.parameters()``.

Per network and ``q`` the checker draws ``N = draws`` samples ``ξ_j`` and, with ``C`` the exact
covariance and ``μ`` the exact mean:

- **in the span of Cov** (exact): ``ξ_j − μ`` lies in the range of ``C``; statistic the RMS norm
  of the residual outside it relative to ``sqrt(tr C)``, threshold ``SPAN_TOL`` (no false alarms:
  a correct sample's residual is rounding; a gradient that misses a path lands outside);
- **whitened projections**: ``k`` random directions ``V = Π G`` (``G`` Gaussian, ``Π`` the
  projection on the eigenvectors of ``C`` above ``1e-6 λ_max``, where whitening does not amplify
  rounding), ``Σ_V = VᵀCV = LLᵀ``, ``z_j = L⁻¹Vᵀ(ξ_j − μ)``: under the null hypothesis
  ``E z = 0`` and ``Cov z = I_k`` exactly;
- **mean** (test): the Mahalanobis statistic ``N ‖z̄‖² ~ χ²_k`` against the exact covariance;
- **variance** (test): the trace alone, ``(tr S − k)² N / Var(‖z‖²) ~ χ²_1`` — all its power
  on a covariance off by a constant factor, the form most bugs take;
- **covariance** (test): with ``S = (1/N) Σ z_j z_jᵀ`` and ``s = vech(S − I)``,
  the Wald statistic ``N sᵀ Ω⁺ s ~ χ²_{rank Ω}`` (``rank Ω = k(k+1)/2`` unless the noise has
  few atoms), where
  ``Ω_{ab,cd} = κ_abcd + δ_ac δ_bd + δ_ad δ_bc`` is the exact covariance of ``z_a z_b`` and
  ``z_c z_d``: ``κ`` the fourth cumulant of the reference noise, computed exactly (for
  ``xi_approx`` from the cumulants of η, ``ξ`` being linear in independent η's; for ``xi_drop`` by
  enumerating every mask), so the test is calibrated for the noise's real kurtosis, not a
  Gaussian's.  With Gaussian noise ``κ = 0`` and ``N·S`` is Wishart: the classical setting.
  (Box's M, which compares *sample* covariances and is notoriously sensitive to kurtosis, is not
  used.)

The test rows of all networks are Holm-corrected at ``alpha``; a failed test is re-tested on
fresh draws and fails only if it fails again.  The χ² laws are the limits of means of ``N``
independent draws (the statistics use exact moments, so only the shape of the tails is
approximated); the measured false-alarm rate is in ``docs/checks.md``.

Diagnoses read the variance ratio ``r̂ = tr S_c / k`` of the centred sample covariance ``S_c``
(1 for a correct implementation): ``1 − q``
names variance ``q`` instead of ``q/(1−q)``; ``(1−q)/q`` an unscaled Rademacher sign; ``q/(1−q)``
a Rademacher scaled by ``q/(1−q)`` instead of its square root; other constants "off by factor
r̂"; ``0`` no noise at all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg, stats

from dropcheck import exact, implicit
from dropcheck import explicit as explicit_mod
from dropcheck._validate import check_choice, check_positive_int
from dropcheck.backend import to_numpy
from dropcheck.checks._args import build_problems, grid_args
from dropcheck.checks._calls import CallFailed
from dropcheck.checks._report import ERROR, FAIL, PASS, SKIP, CheckReport, CheckRow
from dropcheck.checks._runner import call_text, finish, run_grid
from dropcheck.checks.adapters import Adapter, Problem, get_adapter
from dropcheck.models import MLP

__all__ = [
    "KINDS",
    "NOISES",
    "SAMPLES",
    "SPAN_TOL",
    "NoiseReport",
    "check_gradient_noise",
    "assert_gradient_noise_matches",
]

KINDS = ("xi_approx", "xi_drop", "dropout_k", "alg4", "alg2")
NOISES = ("bernoulli", "rademacher", "gaussian")
SAMPLES = ("noise", "gradient")
#: small nets: ``xi_drop`` enumerates ``2^Σd`` masks for the covariance and the fourth moments
DEFAULT_SIZES = ((4, 5, 3), (3, 4, 3, 3), (5, 4, 3))
DEFAULT_ACTIVATIONS = ("tanh", "softplus", "relu")
#: eigenvalues below this fraction of the largest count as the null space of ``C``: a correct
#: sample's component there has standard deviation <= 1e-6 sqrt(λ_max), far below ``SPAN_TOL``
_NULL = 1e-12
#: the test directions span the eigenvectors of ``C`` above this fraction of the largest
#: eigenvalue: whitening a direction of variance ``λ`` amplifies rounding by ``sqrt(λ_max/λ)``,
#: and directions this weak carry no visible share of any bug
_WEAK = 1e-6
#: residual outside the range of ``C`` (RMS, relative to sqrt(tr C)) allowed for rounding: float32
#: rounding of a user computation is ~1e-7; a missing gradient path is O(0.1–1)
SPAN_TOL = 1e-4
#: level at which samples "fit" a known variant's mean in a diagnosis
DIAGNOSIS_LEVEL = 1e-3
#: design effects for the stated power: a variance off by 20 %, a mean of half a noise s.d.
_VAR_EFFECT, _MEAN_EFFECT = 0.8, 0.5


# ----- the exact reference -------------------------------------------------------------------

@dataclass(frozen=True)
class _Reference:
    """Exact per-example covariances ``(n, P, P)``, means ``(n, P)`` and fourth-moment parts.

    ``parts`` are the independent noises the sample is a sum of, each ``(source, c4)``: its
    fourth cumulant is ``c4`` times that of one ``ξ_approx`` (``"approx"``) or one ``ξ_drop``
    (``"drop"``) per example.
    """

    cov: np.ndarray
    mean: np.ndarray
    what: str
    #: for ξ_approx parts: per site ``(variance of η, fourth cumulant of η, a (d, n, P))``
    units: tuple[tuple[float, float, np.ndarray], ...] = ()
    #: for ξ_drop parts: the exact ``∇_W ℓ_drop`` per example ``(n, P)``, the centre of ξ_drop
    drop_mean: np.ndarray | None = None
    parts: tuple[tuple[str, float], ...] = (("approx", 1.0),)
    #: means of known variants ``(key, phrase, (n, P))``: a failed mean or span row that fits
    #: one of them is named by it (Alg. 2's explicit term when plain ξ_approx gradients were
    #: declared)
    alt_means: tuple[tuple[str, str, np.ndarray], ...] = ()


def _eta_cumulants(q: float, noise: str) -> tuple[float, float]:
    """Variance ``q/(1−q)`` and fourth cumulant ``E η⁴ − 3σ⁴`` of one noise entry.

    Bernoulli (the paper's η: −1 w.p. ``q``, ``q/(1−q)`` w.p. ``1−q``):
    ``E η⁴ = q + (1−q)(q/(1−q))⁴``; scaled Rademacher: ``E η⁴ = σ⁴``; Gaussian: ``3σ⁴``.
    """
    var = q / (1.0 - q)
    m4 = {"bernoulli": q + (1.0 - q) * var**4, "rademacher": var**2, "gaussian": 3 * var**2}
    return var, m4[noise] - 3.0 * var**2


@dataclass(frozen=True)
class _Target:
    """The declared noise: ``kind`` and its parameters (``k``, ``λ₁``, ``λ₂``, explicit term)."""

    kind: str
    k: int = 1
    lam1: float | None = None
    lam2: float = 1.0
    explicit: str | None = "approx"

    def weights(self) -> tuple[float, float]:
        """Variance weights of ``(Cov ξ_drop, Cov ξ_approx)`` per example."""
        k = self.k
        return {"xi_approx": (0.0, 1.0), "xi_drop": (1.0, 0.0), "dropout_k": (1.0 / k, 0.0),
                "alg4": (1.0 / k, 1.0 - 1.0 / k), "alg2": (0.0, self.lam2**2)}[self.kind]

    def describe(self) -> str:
        """The target as the report's title names it."""
        if self.kind in ("dropout_k", "alg4"):
            return f"{self.kind}(k={self.k})"
        if self.kind == "alg2":
            return (f"alg2(lam1={self.lam1 if self.lam1 is not None else 'q/(2(1−q))'}, "
                    f"lam2={self.lam2:g}, explicit={self.explicit!r})")
        return self.kind


def _approx_units(pb: Problem, q: float, noise: str) -> tuple[tuple[float, float, Any], ...]:
    """Per site: η's variance and fourth cumulant, and ``a`` ``(d, n, P)``: ξ_approx = Σ a η."""
    net, x, y = pb.net, pb.x, pb.y
    units = []
    for s in net.site_names:
        d = net.widths[s]
        eye = np.broadcast_to(np.eye(d)[:, None, :], (d, pb.n, d))
        a = np.asarray(implicit.xi_approx_at(net, x, y, {s: eye}))  # (d, n, P)
        units.append((*_eta_cumulants(q, noise), a))
    return tuple(units)


def _reference(pb: Problem, q: float, kind: str | _Target, samples: str,
               noise: str) -> _Reference:
    """The exact covariance and mean per example, and what the fourth cumulant needs.

    Covariance ``w_d Cov(ξ_drop) + w_a Cov(ξ_approx)`` with the target's weights
    (:meth:`_Target.weights`); the fourth cumulant per part: a mean of ``k`` independent
    ξ_drop has ``κ/k³``, ``c·ξ_approx`` has ``c⁴ κ``.  Mean for gradient samples:
    ``∇ℓ_drop`` (DROPOUT_k, Alg. 4), the clean gradient (ξ_approx) plus ``λ₁ ∇R_approx``
    (Alg. 2 with its explicit term).
    """
    target = kind if isinstance(kind, _Target) else _Target(kind)
    net, x, y = pb.net, pb.x, pb.y
    wd, wa = target.weights()
    cov = np.zeros((pb.n, net.n_params, net.n_params))
    units: tuple = ()
    parts: list[tuple[str, float]] = []
    eg = None
    if wa:
        cov = cov + wa * np.asarray(implicit.xi_approx_cov(net, x, y, q))
        units = _approx_units(pb, q, noise)
        parts.append(("approx", wa**2))
    if wd:
        cov = cov + wd * np.asarray(exact.gradient_noise_cov(net, x, y, q))
        eg = np.asarray(exact.expected_gradient(net, x, y, q))
        parts.append(("drop", wd**2 / target.k if target.kind != "xi_drop" else 1.0))
    if samples == "noise":
        return _Reference(cov, np.zeros((pb.n, net.n_params)), "mean zero", units, eg,
                          tuple(parts))
    if eg is not None:
        return _Reference(cov, eg, "mean = ∇ℓ_drop", units, eg, tuple(parts))
    grads = np.asarray(exact.loss_gradients(net, net.trace(x), y)[0])
    what = "mean = clean gradient"
    lam1 = explicit_mod.strength(q) if target.lam1 is None else target.lam1
    reg = lam1 * np.asarray(explicit_mod.r_approx_grad(net, x, y, reduce=False))
    if target.kind == "alg2" and target.explicit is not None:
        return _Reference(cov, grads + reg, "mean = clean gradient + λ₁∇R_approx", units, eg,
                          tuple(parts))
    alt = (("alg2", "mean shifted by q/(2(1−q))·∇R_approx: Algorithm 2's explicit term (declare "
                    "kind='alg2')", grads + reg),)
    return _Reference(cov, grads, what, units, eg, tuple(parts), alt)


def _pairings(cov: np.ndarray) -> np.ndarray:
    """``Σ_ab Σ_cd + Σ_ac Σ_bd + Σ_ad Σ_bc`` as a ``(k², k²)`` matrix over ``(ab), (cd)``."""
    k = cov.shape[0]
    t = (np.einsum("ab,cd->abcd", cov, cov) + np.einsum("ac,bd->abcd", cov, cov)
         + np.einsum("ad,bc->abcd", cov, cov))
    return t.reshape(k * k, k * k)


def _cumulant4(pb: Problem, q: float, ref: _Reference, blocks: np.ndarray) -> np.ndarray:
    """Fourth cumulant ``κ`` of the projected noise ``z = Σ_i B_i ξ_i`` as ``(k², k²)``.

    ``blocks`` ``(n, k, P)`` projects example ``i``'s noise.  Cumulants of independent terms
    add: for ``ξ_approx`` the terms are the single noise entries, ``b η`` with
    ``b = B_i a_{ik}``, each contributing ``κ₄(η) vec(bbᵀ) vec(bbᵀ)ᵀ``; for ``ξ_drop`` the
    examples, whose fourth moments are enumerated over every mask (minus the pairings).  Each
    part is weighted by its ``c4`` (:class:`_Reference`).
    """
    k = blocks.shape[1]
    out = np.zeros((k * k, k * k))
    for source, c4 in ref.parts:
        if source == "approx":
            for _, kappa, a in ref.units:
                b = np.einsum("nkp,dnp->dnk", blocks, a).reshape(-1, k)
                yv = (b[:, :, None] * b[:, None, :]).reshape(-1, k * k)
                out += c4 * kappa * yv.T @ yv
            continue
        net, x, y, mu = pb.net, pb.x, pb.y, ref.drop_mean

        def moments(tr: Any, p: Any, mu: Any = mu, net: Any = net, y: Any = y
                    ) -> tuple[Any, Any]:
            z = np.einsum("bnp,nkp->bnk", exact.loss_gradients(net, tr, y) - mu, blocks)
            yv = (z[..., :, None] * z[..., None, :]).reshape(*z.shape[:2], k * k)
            return (np.einsum("b,bni,bnj->nij", p, yv, yv), np.einsum("b,bni->ni", p, yv))

        m4, m2 = exact.expectation(net, x, q, moments, chunk_size=512,
                                   what="check_gradient_noise")
        out += c4 * sum(m4[i] - _pairings(m2[i].reshape(k, k)) for i in range(pb.n))
    return out


# ----- what the user's function returned ---------------------------------------------------

def _flat(out: Any, pb: Problem) -> tuple[np.ndarray, str]:
    """One sample as float64 ``(P,)`` (format ``"mean"``) or ``(n, P)`` (``"example"``).

    Accepts a flat array or a list of per-parameter arrays in dropcheck's order; raises
    :class:`CallFailed` with a plain message otherwise.
    """
    shapes = [tuple(p.shape) for p in pb.net.params.values()]
    n, P = pb.n, pb.net.n_params
    if hasattr(out, "gradient"):  # a torch convention: a scalar on the graph is a surrogate
        value = out.value
        numel = getattr(value, "numel", lambda: 0)()
        if out.on_graph and numel == 1:
            out = out.gradient("fn's scalar (its gradient is the sample)")
        else:
            out = value

    def arr(a: Any, what: str) -> np.ndarray:
        if isinstance(a, bool) or a is None or not (
                isinstance(a, np.ndarray) or hasattr(a, "__array__") or hasattr(a, "__dlpack__")):
            raise CallFailed(f"{what} is {type(a).__name__}, not an array")
        try:
            v = np.asarray(to_numpy(a))
        except Exception as exc:  # a foreign array that does not convert is the user's output
            raise CallFailed(f"{what} ({type(a).__name__}) does not convert to numpy "
                             f"({type(exc).__name__}: {exc})") from exc
        if v.dtype.kind != "f":
            raise CallFailed(f"{what} has dtype {v.dtype}; expected floating values")
        return v

    if isinstance(out, list | tuple):
        if len(out) != len(shapes):
            raise CallFailed(f"fn returned {len(out)} arrays; expected one per parameter "
                             f"({len(shapes)}: W1, b1, W2, b2, ...)")
        parts = [arr(a, f"fn's array {j}") for j, a in enumerate(out)]
        if all(p.shape == s for p, s in zip(parts, shapes, strict=True)):
            v, fmt = np.concatenate([p.ravel() for p in parts]), "mean"
        elif all(p.shape == (n, *s) for p, s in zip(parts, shapes, strict=True)):
            v, fmt = np.concatenate([p.reshape(n, -1) for p in parts], axis=1), "example"
        else:
            j, bad = next((j, p.shape) for j, (p, s) in enumerate(zip(parts, shapes, strict=True))
                          if p.shape not in (s, (n, *s)))
            raise CallFailed(f"fn's array {j} has shape {bad}; parameter {j} has shape "
                             f"{shapes[j]} (or ({n}, ...) per example)")
    else:
        v = arr(out, "fn's output")
        if v.shape == (P,):
            fmt = "mean"
        elif v.shape == (n, P):
            fmt = "example"
        else:
            raise CallFailed(f"fn returned shape {v.shape}; expected ({P},) (the mini-batch "
                             f"noise, flat in the order W1, b1, W2, ...), ({n}, {P}) per "
                             f"example, or a list of per-parameter arrays")
    bad = ~np.isfinite(v)
    if bad.any():
        raise CallFailed(f"fn returned {int(bad.sum())} NaN/inf values among {v.size}",
                         nonfinite=True)
    return v.astype(np.float64), fmt


@dataclass(frozen=True)
class _Setup:
    """The validated arguments shared by every row."""

    kind: _Target
    noise: str
    samples: str
    adapter: Adapter
    draws: int
    directions: int
    seed: int


def _draw(fn: Callable, pb: Problem, q: float, setup: _Setup, draws: int,
          stage: int) -> tuple[np.ndarray, str]:
    """``draws`` samples ``(N, P)`` or ``(N, n, P)`` from ``fn`` and their format."""
    rng = np.random.default_rng([setup.seed, pb.index, stage])
    out: list[np.ndarray] = []
    fmt = None
    for _ in range(draws):
        v, f = _flat(setup.adapter.call(fn, pb, q, train=True, rng=rng, grads=True), pb)
        if fmt is not None and f != fmt:
            raise CallFailed(f"fn returned a {f} sample after {fmt} samples; keep one format")
        fmt = f
        out.append(v)
    return np.stack(out), fmt or "mean"


# ----- projections and statistics ------------------------------------------------------------

@dataclass(frozen=True)
class _Frame:
    """The reference in the sample's format: mean, covariance, range, whitened projection.

    ``root`` ``(m, rank Ω)`` whitens the vech vectors: ``N ‖rootᵀ s‖² = N sᵀ Ω⁺ s``.
    """

    mean: np.ndarray  # (P_tot,)
    basis: np.ndarray  # (P_tot, r): orthonormal range of C
    trace: float
    w: np.ndarray  # (k, P_tot): z = w (ξ − μ) has covariance I_k
    omega: np.ndarray  # (m, m) over vech indices
    root: np.ndarray  # (m, rank)
    vech: np.ndarray  # indices a*k + b, a <= b

    @property
    def k(self) -> int:
        """Number of whitened directions."""
        return self.w.shape[0]

    @property
    def diag(self) -> np.ndarray:
        """Mask of the vech entries on the diagonal ``(a, a)``."""
        return self.vech % (self.k + 1) == 0

    def wald(self, s: np.ndarray, n: int) -> float:
        """``n sᵀ Ω⁺ s`` for a vech vector ``s`` (χ² with ``root.shape[1]`` d.o.f. under H0)."""
        u = self.root.T @ s
        return float(n * (u @ u))

    @property
    def var_trace(self) -> float:
        """``Var(‖z‖²) = Σ_ab Cov(z_a², z_b²)`` of one whitened sample."""
        d = self.diag
        return float(self.omega[np.ix_(d, d)].sum())


def _frame(pb: Problem, q: float, ref: _Reference, fmt: str, setup: _Setup) -> _Frame | None:
    """Project the reference for the sample format (None when the reference noise is zero)."""
    n, P = pb.n, pb.net.n_params
    if fmt == "mean":
        cov, mean = ref.cov.sum(axis=0) / n**2, ref.mean.mean(axis=0)
    else:
        cov, mean = linalg.block_diag(*ref.cov), ref.mean.reshape(-1)
    lam, U = np.linalg.eigh(cov)
    if lam[-1] <= 0:
        return None
    basis = U[:, lam > _NULL * lam[-1]]
    strong = U[:, lam > _WEAK * lam[-1]]
    k = min(setup.directions, strong.shape[1])
    g = np.random.default_rng([setup.seed, pb.index, 99]).standard_normal((cov.shape[0], k))
    v = strong @ (strong.T @ g)
    chol = np.linalg.cholesky(v.T @ cov @ v)
    w = linalg.solve_triangular(chol, v.T, lower=True)
    blocks = w[None] / n if fmt == "mean" else w.reshape(k, n, P).transpose(1, 0, 2)
    blocks = np.broadcast_to(blocks, (n, k, P))
    kappa = _cumulant4(pb, q, ref, blocks)
    eye = np.eye(k * k)
    comm = eye.reshape(k, k, k, k).transpose(0, 1, 3, 2).reshape(k * k, k * k)
    vech = np.array([a * k + b for a in range(k) for b in range(a, k)])
    omega = (kappa + eye + comm)[np.ix_(vech, vech)]
    lo, uo = np.linalg.eigh(omega)
    # Ω is singular when the noise has few atoms (a relu net with few active units): vech(zzᵀ)
    # then lives in their affine hull, and so does the uncentred S of the test; rounding puts
    # the null eigenvalues near 1e-9 of the largest, hence the cut
    keep = lo > 1e-6 * lo[-1]
    return _Frame(mean, basis, float(np.trace(cov)), w, omega, uo[:, keep] / np.sqrt(lo[keep]),
                  vech)


def _span_row(label: str, q: float, dev: np.ndarray, fr: _Frame) -> CheckRow:
    """Exact check that the centred samples lie in the range of ``C``."""
    res = dev - (dev @ fr.basis) @ fr.basis.T
    stat = math.sqrt(float(np.mean(np.sum(res * res, axis=1))) / fr.trace)
    ok = stat <= SPAN_TOL
    return CheckRow(f"{label}: in the span of Cov", q, stat, SPAN_TOL,
                    verdict=PASS if ok else FAIL,
                    detail=f"RMS residual outside the range of the exact covariance = {stat:.3g}"
                           f" × sqrt(tr C)", info={"kind": "span"})


def _test_rows(label: str, q: float, dev: np.ndarray, fr: _Frame, ref: _Reference,
               index: int) -> list[CheckRow]:
    """Mean (Mahalanobis χ²), variance (scale, χ²_1) and covariance (Wald χ²) tests.

    The variance test is the trace part of the covariance test alone,
    ``(tr S − k)² / (Var(‖z‖²)/N) ~ χ²_1``: all of its power goes to a covariance off by a
    constant factor, the form most bugs take.
    """
    z = dev @ fr.w.T  # (N, k)
    N, k = z.shape
    zbar = z.mean(axis=0)
    t_mean = float(N * zbar @ zbar)
    # the second moment about the exact mean 0, not about z̄: its exact covariance is Ω/N and it
    # stays in the affine hull of the atoms' zzᵀ (z̄z̄ᵀ would not, see _frame)
    S = z.T @ z / N
    s = (S - np.eye(k)).reshape(-1)[fr.vech]
    t_cov, dof = fr.wald(s, N), fr.root.shape[1]
    # floored at rounding: ‖z‖² is constant for a lone Rademacher sign (exact comparison then)
    ratio_sd = max(math.sqrt(max(fr.var_trace, 0.0) / N) / k, 1e-9)
    t_var = ((float(np.trace(S)) / k - 1.0) / ratio_sd) ** 2
    # the diagnosis reads the centred covariance, so a mean shift does not pose as a variance
    Sc = np.cov(z, rowvar=False).reshape(k, k)
    ratio = float(np.trace(Sc)) / k
    shape_ok = ratio > 0 and stats.chi2.sf(
        fr.wald((Sc / ratio - np.eye(k)).reshape(-1)[fr.vech], N), max(1, dof - 1)) > 1e-3
    info = {"net": index, "ratio": ratio, "ratio_sd": ratio_sd, "shape_ok": bool(shape_ok)}
    return [
        CheckRow(f"{label}: {ref.what}", q, t_mean, None, float(stats.chi2.sf(t_mean, k)),
                 detail=f"N ‖z̄‖² = {t_mean:.4g} for χ²_{k} ({N} draws, {k} whitened "
                        f"directions; mean = {math.sqrt(zbar @ zbar):.3g} noise s.d.)",
                 info={**info, "kind": "mean"}),
        CheckRow(f"{label}: variance", q, ratio, None, float(stats.chi2.sf(t_var, 1)),
                 detail=f"variance ratio tr S / k = {ratio:.4g} ± {ratio_sd:.2g} (1 expected)",
                 info={**info, "kind": "var"}),
        CheckRow(f"{label}: covariance", q, t_cov, None, float(stats.chi2.sf(t_cov, dof)),
                 detail=f"Wald statistic {t_cov:.4g} for χ²_{dof} (entries of S − I weighted "
                        f"by their exact covariance)", info={**info, "kind": "cov"}),
    ]


def _power(fr: _Frame, draws: int, level: float) -> tuple[float, float]:
    """Power of the variance and mean tests against the design effects, at ``level``.

    Noncentral χ²: noncentrality ``N (0.2 k)² / Var(‖z‖²)`` for a variance off by 20 % (the
    null variance: a first-order approximation) and ``N·0.25`` for a mean of 0.5 noise
    standard deviations.
    """
    lam_var = draws * ((1.0 - _VAR_EFFECT) * fr.k) ** 2 / max(fr.var_trace, 1e-18)
    p_var = float(stats.ncx2.sf(stats.chi2.isf(level, 1), 1, lam_var))
    p_mean = float(stats.ncx2.sf(stats.chi2.isf(level, fr.k), fr.k, draws * _MEAN_EFFECT**2))
    return p_var, p_mean


# ----- diagnosis ------------------------------------------------------------------------------

def _ratio_phrase(r: float, sd: float, q: float, shape_ok: bool,
                  kind: str = "xi_approx") -> tuple[str, str]:
    """Key and phrase for a covariance that is ``r`` times the reference (``sd``: its s.e.).

    For ``xi_drop`` a ratio ``1/k`` is named first: the gradient averages ``k`` masks
    (DROPOUT_k, Algorithm 1) while standard dropout was declared.
    """
    if r < 1e-6:
        return "none", "no noise: every sample equals the mean (dropout inactive, eval mode?)"
    if kind == "xi_drop" and shape_ok:
        ks = [(abs(math.log(r * k)), k) for k in range(2, 33)
              if abs(r - 1 / k) <= 5 * sd / k + 0.01 / k]
        if ks:
            k = min(ks)[1]
            return f"dropout_k{k}", (f"variance 1/{k} of ξ_drop's: DROPOUT_k with k = {k} "
                                     f"(the gradient averages {k} masks; declare "
                                     f"kind='dropout_k', k={k})")
    named = [
        (1.0 - q, "q-var", "noise variance scaled by q instead of q/(1−q)"),
        ((1.0 - q) / q, "rademacher", "Rademacher not scaled by sqrt(q/(1−q))"),
        (q / (1.0 - q), "unsqrt", "noise scaled by q/(1−q) instead of sqrt(q/(1−q))"),
    ] + [(c, f"factor{c:g}", f"noise variance off by factor {label}")
         for c, label in ((2.0, "2"), (0.5, "1/2"), (3.0, "3"), (1 / 3, "1/3"), (4.0, "4"),
                          (0.25, "1/4"))]
    # the noise's own spread, plus 1 % for rounding of the constants; catalogue constants
    # differ by far more at q = 0.3
    fits = [(abs(math.log(r / c)), key, ph) for c, key, ph in named
            if abs(r - c) <= 5 * sd * c + 0.01 * c]
    if fits and shape_ok:
        _, key, ph = min(fits)
        return key, ph
    if shape_ok:
        return "factor", f"noise variance off by factor {r:.3g}"
    return "shape", ("noise covariance differs from the reference in shape, not only in scale "
                     f"(variance ratio {r:.3g})")


def diagnose_noise(rows: Sequence[CheckRow], samples: str,
                   target_kind: str = "xi_approx") -> str | None:
    """One line naming the patterns that fit the failed rows (None if none failed).

    The variance and covariance tests use the second moment about the exact mean, so a mean
    shift fails them too; their phrase is then left out when the centred variance ratio is 1
    within 5 standard errors and the shape fits.  A scale pattern is named when every failing
    network and q agrees on it; otherwise the range of ratios is given.
    """
    found: dict[str, str] = {}
    scale: dict[tuple[int, float | None], tuple[str, str, float]] = {}
    for r in rows:
        if r.verdict != FAIL:
            continue
        kind = r.info.get("kind")
        if kind in ("span", "mean") and r.info.get("alt_means"):
            key, phrase = r.info["alt_means"][0]
            found.setdefault(key, phrase)
        elif kind == "span":
            found.setdefault("span", "noise outside the span of the exact noise (a gradient path "
                                     "missing, e.g. not through J_loss, or noise on parameters "
                                     "dropout does not perturb)")
        elif kind == "mean":
            found.setdefault("mean", "noise not mean-zero" if samples == "noise" else
                             "mean of the gradients differs from the exact expected gradient")
        elif kind in ("var", "cov") and r.q is not None and (r.info["net"], r.q) not in scale:
            ratio, sd, shape_ok = r.info["ratio"], r.info["ratio_sd"], r.info["shape_ok"]
            if not (shape_ok and abs(ratio - 1.0) <= 5 * sd + 0.01):
                scale[(r.info["net"], r.q)] = (*_ratio_phrase(ratio, sd, r.q, shape_ok,
                                                             target_kind),
                                               ratio)
    keys = {key for key, _, _ in scale.values()}
    if len(keys) == 1:
        key, phrase, _ = next(iter(scale.values()))
        found[key] = phrase
    elif keys:
        ratios = [r for _, _, r in scale.values()]
        found["mixed"] = (f"noise variance off by factors {min(ratios):.3g} to {max(ratios):.3g} "
                          f"across nets (no single constant)"
                          + (", and the covariance differs in shape" if "shape" in keys else ""))
    errors = [r for r in rows if r.verdict == ERROR]
    if errors:
        found.setdefault("error", errors[0].detail)
    return "; ".join(found.values()) or None


# ----- the checker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NoiseReport(CheckReport):
    """The report of :func:`check_gradient_noise`: four rows per network and ``q``."""

    kind: str = "xi_approx"
    q: tuple[float, ...] = ()
    nets: tuple[str, ...] = ()


def _rows_for(fn: Callable, pb: Problem, q: float, ref: _Reference, setup: _Setup,
              draws: int, stage: int, frames: dict) -> tuple[list[CheckRow], _Frame | None]:
    """Draw samples and build the rows of one network and ``q`` (only tests after stage 1)."""
    label = pb.label
    try:
        x, fmt = _draw(fn, pb, q, setup, draws, stage)
    except CallFailed as exc:
        return [CheckRow(f"{label}: samples", q, verdict=ERROR, detail=str(exc))], None
    key = (pb.index, q, fmt)
    if key not in frames:
        frames[key] = _frame(pb, q, ref, fmt, setup)
    fr = frames[key]
    if fr is None:
        return [CheckRow(f"{label}: samples", q, verdict=SKIP,
                         detail="the exact noise is zero on this net (no unit is active)")], None
    dev = x.reshape(draws, -1) - fr.mean
    rows = [] if stage > 1 else [_span_row(label, q, dev, fr)]
    rows += _test_rows(label, q, dev, fr, ref, pb.index)
    fits = [(key, phrase) for key, phrase, m in ref.alt_means
            if _mean_fits(x.reshape(draws, -1), m, fmt, fr)]
    return [dataclasses.replace(r, info={**r.info, "alt_means": fits})
            if r.info.get("kind") in ("span", "mean") else r for r in rows], fr


def _mean_fits(x: np.ndarray, mean: np.ndarray, fmt: str, fr: _Frame) -> bool:
    """Whether samples ``x`` ``(N, ·)`` fit another ``mean`` ``(n, P)``: a named variant.

    They must pass the span check and the mean test (at ``DIAGNOSIS_LEVEL``) about it.
    """
    m = mean.mean(axis=0) if fmt == "mean" else mean.reshape(-1)
    dev = x - m
    res = dev - (dev @ fr.basis) @ fr.basis.T
    if math.sqrt(float(np.mean(np.sum(res * res, axis=1))) / fr.trace) > SPAN_TOL:
        return False
    zbar = (dev @ fr.w.T).mean(axis=0)
    return float(stats.chi2.sf(dev.shape[0] * zbar @ zbar, fr.k)) > DIAGNOSIS_LEVEL


def check_gradient_noise(
    fn: Callable[..., Any],
    *,
    kind: str = "xi_approx",
    q: float | Sequence[float] = 0.3,
    k: int = 1,
    lam1: float | None = None,
    lam2: float = 1.0,
    explicit: str | None = "approx",
    noise: str = "bernoulli",
    samples: str = "noise",
    draws: int = 400,
    directions: int = 8,
    sizes: Sequence[Sequence[int]] = DEFAULT_SIZES,
    activations: str | Sequence[str] = DEFAULT_ACTIVATIONS,
    sites: Iterable[str] | str | None = None,
    n_nets: int = 3,
    examples: int = 4,
    scale: float = 1.0,
    nets: Sequence[MLP] | None = None,
    model: Any = None,
    data: Any = None,
    adapter: Adapter | str = "numpy",
    alpha: float = 1e-6,
    seed: int = 0,
    retest_failures: bool = True,
    raise_on_failure: bool = False,
) -> NoiseReport:
    """Check that samples of ``fn`` have the mean and covariance of dropout's gradient noise.

    Args:
        fn: returns one sample per call, called through ``adapter`` (default
            ``fn(weights, biases, x, y, q, *, sites, activation, rng)``; ``adapter="torch"``:
            ``fn(model, x, y, q, *, sites, rng)`` with the model in train mode, returning the
            sample or leaving it in ``model.parameters()``' gradients).  A sample is the
            mini-batch noise ``(P,)`` (or per example ``(n, P)``), flat in the order
            ``W1, b1, W2, …`` or a list of per-parameter arrays.
        kind: ``"xi_approx"`` (4.5/4.6), ``"xi_drop"`` (3.3), ``"dropout_k"`` (Algorithm 1:
            ``k`` masks averaged, covariance ``Cov(ξ_drop)/k``), ``"alg4"`` (Algorithm 4:
            DROPOUT_k ``+ sqrt(1−1/k) ξ_approx``) or ``"alg2"`` (Algorithm 2: the clean
            gradient ``+ λ₁∇R + λ₂ ξ_approx``).
        k: the ``k`` of ``dropout_k`` and ``alg4``.
        lam1: Algorithm 2's ``λ₁`` (default ``q/(2(1−q))``).
        lam2: Algorithm 2's ``λ₂`` (default 1).
        explicit: Algorithm 2's explicit term: ``"approx"`` (``R_approx``) or None.
        q: drop probability of every site, or a sequence of them (rows per network and q).
            Avoid 0.5: there the variance ratio of an unscaled Rademacher sign is 1.
        noise: for ``xi_approx``, the distribution of η the implementation uses
            (``"bernoulli"``, ``"rademacher"``, ``"gaussian"``): it sets the fourth cumulant
            of the null distribution (mean and covariance are the same for all three).
        samples: ``"noise"`` (mean zero) or ``"gradient"`` (stochastic gradients: mean
            ``∇ℓ_drop`` for ``xi_drop``, the clean gradient for ``xi_approx``).
        draws: samples per network and q (twice that in a re-test).
        directions: number ``k`` of random whitened directions of the tests.
        sizes: layer sizes of the random networks, cycled over the ``n_nets`` nets.
        activations: activation names, cycled the same way.
        sites: dropout sites of every network (default: every hidden layer).
        n_nets: number of random networks.
        examples: batch size ``n`` of every network.
        scale: multiplies the LeCun-initialized weights.
        nets: the caller's own networks (small float64 numpy MLPs) instead of random ones.
        model: any dropcheck model (``dc.from_torch(...)``), or a list, instead of the random
            MLPs; needs ``data``.
        data: ``(x, y)`` for ``model`` (or a list of pairs).
        adapter: ``"numpy"``, ``"torch"``, ``"activations"`` (``fn(acts, logits, targets, q,
            *, head, params, sites, rng)`` returning the sample, or a scalar on torch's graph
            whose parameter gradient is the sample) or an adapter object.
        alpha: bound on the probability that a correct implementation fails (Holm over the test
            rows, with the re-test).
        seed: seeds the networks, batches, directions and the ``rng`` handed to ``fn``.
        retest_failures: re-test a failed test once on fresh draws before failing it.
        raise_on_failure: raise :class:`~dropcheck.checks.DropcheckError` on failure.

    Returns:
        A :class:`NoiseReport`; ``str(report)`` is the table.

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it).
        DropcheckError: a check failed and ``raise_on_failure`` is true.
    """
    grid, alpha, seed = grid_args(fn, q, alpha, seed)
    kind = check_choice(kind, KINDS, "kind")
    noise = check_choice(noise, NOISES, "noise")
    samples = check_choice(samples, SAMPLES, "samples")
    if kind in ("xi_drop", "dropout_k") and noise != "bernoulli":
        what = "ξ_drop" if kind == "xi_drop" else "DROPOUT_k"
        raise ValueError(f"noise= describes ξ_approx's η; {what} always uses dropout masks")
    k = check_positive_int(k, "k")
    if k != 1 and kind not in ("dropout_k", "alg4"):
        raise ValueError(f"k applies to kind='dropout_k' or 'alg4', got kind={kind!r}")
    if kind != "alg2" and (lam1 is not None or lam2 != 1.0):
        raise ValueError(f"lam1 and lam2 apply to kind='alg2', got kind={kind!r}")
    if explicit not in ("approx", None):
        raise ValueError(f"explicit must be 'approx' or None, got {explicit!r}")
    for v, name in ((lam1, "lam1"), (lam2, "lam2")):
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    target = _Target(kind, k, lam1, float(lam2), explicit)
    draws = check_positive_int(draws, "draws", minimum=20)
    directions = check_positive_int(directions, "directions")
    the_adapter = get_adapter(adapter)
    problems = build_problems(nets, sizes, activations, sites, n_nets, examples, scale, seed,
                              model=model, data=data, adapter=the_adapter)
    setup = _Setup(target, noise, samples, the_adapter, draws, directions, seed)

    frames: dict = {}
    used: list[tuple[Problem, _Frame]] = []  # the stage-1 frames, for the power lines

    def rows_for(pb: Problem, v: float, ref: _Reference, stage: int) -> list[CheckRow]:
        got, fr = _rows_for(fn, pb, v, ref, setup, stage * draws, stage, frames)
        if stage == 1 and fr is not None:
            used.append((pb, fr))
        return got

    rows = run_grid(problems, grid, lambda pb, v: _reference(pb, v, target, samples, noise),
                    rows_for, alpha, retest_failures)

    n_tests = sum(r.is_test for r in rows)
    level = alpha / max(1, n_tests)
    lines = []
    for pb, fr in used:
        p_cov, p_mean = _power(fr, draws, level)
        lines.append(f"{pb.label}: {draws} draws, {fr.k} whitened directions in the "
                     f"{fr.basis.shape[1]}-dim range of Cov; power {p_cov:.6f} against a "
                     f"variance off by 20 %, {p_mean:.6f} against a mean of 0.5 s.d. (level "
                     f"{level:.2g})")
    wd, wa = target.weights()
    what = "Cov = " + " + ".join(
        [f"{wd:.4g}·dropcheck.exact.gradient_noise_cov (all masks)"] * bool(wd)
        + [f"{wa:.4g}·dropcheck.implicit.xi_approx_cov (exact)"] * bool(wa))
    notes = [f"{what}; the fourth cumulant for the covariance test "
             + " and ".join([f"of {noise} η"] * bool(wa) + ["enumerated over every mask"]
                            * bool(wd)),
             f"a correct implementation fails with probability <= alpha = {alpha:g} up to the "
             f"χ² approximation of the tests (Holm over {n_tests} tests"
             + (", re-tested on fresh draws)" if retest_failures else ")")]
    defaults = {"noise": "bernoulli", "samples": "noise", "draws": 400, "k": 1, "lam1": None,
                "lam2": 1.0, "explicit": "approx"}
    extra = {a: v for a, v in (("k", k), ("lam1", lam1), ("lam2", lam2),
                               ("explicit", explicit), ("noise", noise), ("samples", samples),
                               ("draws", draws)) if v != defaults[a]}
    title, reproduce = call_text("check_gradient_noise", fn, ("kind", kind), grid, seed=seed,
                                 n_nets=len(problems), adapter=setup.adapter, extra=extra,
                                 own_random_state=True)
    report = NoiseReport(
        title=title,
        rows=tuple(rows),
        alpha=alpha,
        seed=seed,
        diagnosis=diagnose_noise(rows, samples, kind),
        sample_sizes=tuple(lines),
        notes=tuple(notes),
        reproduce=reproduce,
        kind=kind, q=grid, nets=tuple(pb.label for pb in problems),
    )
    return finish(report, raise_on_failure)


def assert_gradient_noise_matches(fn: Callable[..., Any], **kwargs: Any) -> NoiseReport:
    """Run :func:`check_gradient_noise` and raise ``DropcheckError`` if a check failed.

    The error message is the report: per network the statistics against their thresholds, the
    variance ratio, the diagnosis and the call that reproduces it.  Returns the report on
    success.
    """
    return check_gradient_noise(fn, raise_on_failure=True, **kwargs)
