r"""Theorem 4.1 of Wei, Kakade & Ma (ICML 2020, Sec. 4.3) for linear softmax models, and claim T1.

Reference: C. Wei, S. Kakade, T. Ma, "The Implicit and Explicit Regularization Effects of
Dropout", ICML 2020, Section 4.3, Theorem 4.1 and eq. (4.7).  Notation follows
``paper-notes.md`` ("Theorem 4.1").

The model has logits ``F(x) = W x`` with ``W`` of shape ``(c, d)``; the loss is the truncated
cross-entropy ``ℓ̄_y = min(B, ℓ^ce_y)``.  With probability at least ``1 − δ`` over the ``n``
training examples, for every ``W`` with ``‖Wᵀ‖_{2,1} ≤ A``,

.. math::

    E_P ℓ̄_y(Wx) − 1.01\, E_{P_n} ℓ̄_y(Wx) \lesssim
        \frac{(Aμ(W))^{2/3} (θB)^{1/3}}{n^{1/3}}
        + A \sqrt{\frac{B ν(W) θ}{n}}
        + \frac{B A^2 θ}{n \left(\log^2 \frac{B A^2 θ}{ν(W) n} + 1\right)}
        + ζ,

    μ(W) = E_{P_n} ‖D ℓ^{ce}_y[Wx]‖_2,\quad
    ν(W) = E_{P_n} \operatorname{tr}(D^2 ℓ^{ce}_y[Wx]) = E_{P_n}(1 − ‖p‖_2^2),

    θ = \log^3(nc) \max_i ‖x_i‖_2^2,\quad ζ = B(\log(1/δ) + \log\log n)/n,

with ``‖M‖_{2,1} = Σ_j sqrt(Σ_i M_ij²)`` (column norms of ``M``, summed) and natural logs.
``≲`` hides a universal constant that the paper does not state: :func:`theorem41` computes the
right-hand side *without* it, and :func:`t1_experiment` measures the smallest constant that makes
the bound hold on a synthetic problem.  It never claims more than that measurement.

:func:`theorem41` runs on any array namespace (numpy, cupy, ...; ``array-api-compat``): the
per-example work is done in the namespace of the inputs; the scalar summaries are Python floats.
:func:`t1_experiment` is a numpy/scipy CPU experiment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import array_api_compat
import numpy as np
import scipy.optimize

from dropcheck._api import accepts_old_signature, resolve_rng
from dropcheck._validate import check_array, check_array_kind
from dropcheck.backend import namespace
from dropcheck.losses import CrossEntropy

__all__ = ["Theorem41", "theorem41", "norm21", "T1Result", "t1_experiment"]

# Slack when checking the user's A against ‖Wᵀ‖_{2,1}: the norm is a sum of square roots of sums
# of squares, so rounding gives a relative error of a few eps per summand; 1e-6 (float64) and
# 1e-3 (float32) are far above that and far below any deliberate violation.
_A_RTOL_F64, _A_RTOL_F32 = 1e-6, 1e-3
#: the loss of Theorem 4.1; its value and derivatives come from dropcheck.losses (one path)
_CE = CrossEntropy()


# ----------------------------------------------------------------------------- core (any xp)


@accepts_old_signature()
def norm21(M: Any, /) -> float:
    """Return ``‖M‖_{2,1} = Σ_j sqrt(Σ_i M_ij²)``: the 2-norms of the columns of ``M``, summed.

    Theorem 4.1 constrains ``‖Wᵀ‖_{2,1}`` for ``W`` of shape ``(c, d)``: the columns of ``Wᵀ``
    are the rows of ``W``, so that is the sum over the ``c`` classes of the 2-norm of each class's
    weight vector, ``Σ_k ‖W_k,:‖₂`` (call ``norm21(W.T)``).

    Args:
        M: a 2-D array of any array-API namespace.

    Returns:
        The norm as a Python float.
    """
    if hasattr(M, "detach"):  # a Python float carries no gradient: no autograd warning
        M = M.detach()
    try:
        xp = namespace(M)
    except TypeError:
        raise TypeError(f"M must be a real matrix (an array), got {type(M).__name__}") from None
    M = check_array(M, xp, "M")
    if M.ndim != 2:
        raise ValueError(f"M must be a 2-D array, got shape {tuple(M.shape)}")
    return float(xp.sum(xp.sqrt(xp.sum(M * M, axis=0))))


def _real(v: Any, name: str) -> float:
    """Return ``v`` as a float, or raise ValueError naming ``name``."""
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {v!r}") from None


def _check_inputs(W: Any, X: Any, Y: Any, B: Any, delta: Any) -> tuple[Any, Any, Any, Any]:
    """Validate the arguments of :func:`theorem41`; return ``(xp, W, X, Y)`` as arrays."""
    for name, a in (("W", W), ("X", X)):
        if isinstance(a, list | tuple | str | bytes) or a is None:
            raise TypeError(f"{name} must be an array (of one library with the other), got "
                            f"{type(a).__name__}")
    try:
        xp = namespace(W, X)
    except TypeError as e:
        raise TypeError(f"W and X must be arrays of one library: {e}") from None
    W, X = xp.asarray(W), xp.asarray(X)
    for name, a in (("W", W), ("X", X)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array, got shape {tuple(a.shape)}")
        if xp.isdtype(a.dtype, "bool"):
            raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
        check_array_kind(a, xp, name, float16=True)
    c, d = W.shape
    n = X.shape[0]
    if c < 2:
        raise ValueError(f"W must have at least 2 rows (classes); got shape {tuple(W.shape)}")
    if d < 1 or n < 1:
        raise ValueError(f"W and X must be non-empty; got W {tuple(W.shape)}, X {tuple(X.shape)}")
    if X.shape[1] != d:
        raise ValueError(
            f"X must have shape (n, {d}) to match W of shape ({c}, {d}); got {tuple(X.shape)}"
        )
    floats = [a.dtype for a in (W, X) if xp.isdtype(a.dtype, "real floating")]
    dtype = xp.result_type(*floats) if floats else xp.float64
    if dtype == getattr(xp, "float16", None):
        # float16 overflows θ = log³(nc)·max‖x‖² and the logits' exponentials: computed in float64
        dtype = xp.float64
    W, X = xp.astype(W, dtype), xp.astype(X, dtype)
    for name, a in (("W", W), ("X", X)):
        if not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{name} must be finite; it holds NaN or infinity")
    Y = xp.asarray(Y)
    if Y.ndim != 1 or Y.shape[0] != n:
        raise ValueError(f"Y must have shape ({n},) (one label per row of X), got {tuple(Y.shape)}")
    if xp.isdtype(Y.dtype, "real floating"):
        if not bool(xp.all(xp.isfinite(Y))) or not bool(xp.all(xp.round(Y) == Y)):
            raise ValueError("Y must hold integer class labels; it holds non-integer values")
    elif not xp.isdtype(Y.dtype, "integral"):
        raise ValueError(f"Y must hold integer class labels, got dtype {Y.dtype}")
    if bool(xp.any(Y < 0)) or bool(xp.any(Y >= c)):
        raise ValueError(f"Y holds labels outside [0, {c}) for W with {c} rows (classes)")
    Y = xp.astype(Y, xp.int64)  # one index dtype: uint64 vs int64 has no promotion rule
    B, delta = _real(B, "B"), _real(delta, "delta")
    if not (math.isfinite(B) and B > 0):
        raise ValueError(f"B (the loss truncation) must be finite and > 0, got {B!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta (the failure probability) must lie in (0, 1), got {delta!r}")
    return xp, W, X, Y


@dataclass(frozen=True)
class Theorem41:
    """Every quantity of Theorem 4.1 (Sec. 4.3, eq. 4.7) for one ``(W, X, Y)``: see theorem41.

    Scalars are Python floats; ``truncated_losses`` is an array of shape ``(n,)`` in the
    namespace of the inputs.
    """

    n: int  #: number of training examples
    c: int  #: number of classes
    d: int  #: input dimension
    B: float  #: loss truncation
    delta: float  #: failure probability
    A: float  #: norm bound used in the terms (‖Wᵀ‖_{2,1} of W when not given)
    w_norm: float  #: ‖Wᵀ‖_{2,1} of the given W (≤ A)
    mu: float  #: μ(W) = E_Pn ‖D ℓ^ce_y[Wx]‖₂
    nu: float  #: ν(W) = E_Pn tr D² ℓ^ce_y[Wx] = E_Pn (1 − ‖p‖²)
    theta: float  #: θ = log³(nc) max_i ‖x_i‖²
    zeta: float  #: ζ = B (log(1/δ) + log log n) / n (log log n read as ≥ 0)
    truncated_losses: Any  #: min(B, ℓ^ce_y(W x_i)), shape (n,)
    empirical_loss: float  #: E_Pn ℓ̄ (mean of truncated_losses)
    term1: float  #: (A μ)^{2/3} (θ B)^{1/3} / n^{1/3}
    term2: float  #: A sqrt(B ν θ / n)
    term3: float  #: B A² θ / (n (log²(B A² θ / (ν n)) + 1))
    rhs: float  #: term1 + term2 + term3 + zeta (the bound without its universal constant)

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a dict (``truncated_losses`` stays an array)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _term3(B: float, A: float, theta: float, nu: float, n: int) -> float:
    """``B A² θ / (n (log²(B A² θ / (ν n)) + 1))`` with its limits made explicit (see theorem41)."""
    num = B * A * A * theta
    if num == 0.0 or nu == 0.0:
        return 0.0
    # log of the ratio as a difference of logs: B A² θ / (ν n) overflows for ν near 1e-308
    log_ratio = math.log(B) + 2.0 * math.log(A) + math.log(theta) - math.log(nu) - math.log(n)
    return num / (n * (log_ratio * log_ratio + 1.0))


@accepts_old_signature(positional=("B", "delta", "A"))
def theorem41(
    W: Any, X: Any, Y: Any, /, *, B: float, delta: float, A: float | None = None
) -> Theorem41:
    r"""Evaluate every term of Theorem 4.1 (Wei, Kakade & Ma 2020, Sec. 4.3) for a linear model.

    .. math::

        \mathrm{rhs} = \underbrace{\frac{(Aμ)^{2/3}(θB)^{1/3}}{n^{1/3}}}_{\text{term1}}
          + \underbrace{A\sqrt{Bνθ/n}}_{\text{term2}}
          + \underbrace{\frac{BA^2θ}{n(\log^2(BA^2θ/(νn)) + 1)}}_{\text{term3}} + ζ

    bounds ``E_P ℓ̄ − 1.01 E_Pn ℓ̄`` up to a universal constant (the paper's ``≲``), where
    ``μ = E_Pn ‖p − e_y‖₂`` (the loss gradient w.r.t. the logits), ``ν = E_Pn (1 − ‖p‖²)`` (the
    trace of ``diag(p) − p pᵀ``), ``θ = log³(nc) max_i ‖x_i‖²``, ``ζ = B(log(1/δ) + log log n)/n``
    (eq. 4.7 and the text after it); natural logs throughout.

    **The third term is a reconstruction.**  The OCR'd seed shows it as ``BA2 θ`` over
    ``nplog2 BA θ ` 1q`` with a stray ``2`` and ``νpW qn`` on separate lines and large parentheses
    around them.  We read it (as ``paper-notes.md`` does) as

    .. math::

        \frac{B A^2 θ}{n\left(\log^2\left(\frac{B A^2 θ}{ν(W)\, n}\right) + 1\right)},

    the only reading under which the paper's remark holds: when ``ν`` is exponentially small in
    ``A`` (say ``ν ≈ e^{−A}``), ``log² ≈ A²`` cancels the ``A²`` and the term falls to
    ``O(B θ / n) = O(B log³(nc) / n)`` for bounded inputs (Sec. B.4, not in the seed).

    **Limits of the third term.**  Write ``r = B A² θ / (ν n)``.  The ``+1`` keeps the
    denominator ≥ ``n``, so the term is finite for every ``ν > 0``; it is largest (``B A² θ / n``)
    at ``r = 1`` and falls on both sides, because ``log² r`` grows for ``r → ∞`` *and* ``r → 0``
    (the second side, ``ν > B A² θ / n``, is a property of the formula as printed, not of any
    proof we can check).  We compute ``log r`` as a difference of logs so that tiny ``ν`` does not
    overflow, and define the two degenerate cases by their limits: ``ν = 0`` (all training
    predictions one-hot to rounding; ``log² r → ∞``) gives ``term3 = 0``, and ``B A² θ = 0``
    (``A = 0`` or all ``x_i = 0``) gives ``term3 = 0`` for every ``ν``.  No warning is raised.

    **ζ for tiny n.**  ``log log n`` is ``−∞`` at ``n = 1`` and negative for ``n < e``; we read it
    as ``max(log log n, 0)``, which equals the paper's value for every ``n ≥ 3``.

    Args:
        W: weights, shape ``(c, d)`` with ``c ≥ 2`` (real; integer and float16 input is
            computed in float64: float16 overflows ``θ`` and the exponentials).
        X: training inputs, shape ``(n, d)``, same namespace as ``W``.
        Y: integer labels in ``[0, c)``, shape ``(n,)`` (integral floats are accepted).
        B: loss truncation ``B > 0`` (finite).
        delta: failure probability ``δ ∈ (0, 1)``.
        A: the norm bound; default ``‖Wᵀ‖_{2,1} = Σ_k ‖W_k,:‖₂`` (sum over the ``c`` classes of
            each class's weight-vector norm, see :func:`norm21`).  A given ``A`` must be
            ``≥ ‖Wᵀ‖_{2,1}``: the theorem only covers such ``W``.

    Returns:
        A frozen :class:`Theorem41` with ``mu, nu, theta, zeta, A, truncated_losses,
        empirical_loss, term1, term2, term3, rhs`` and ``as_dict()``.

    Raises:
        ValueError: naming the argument, for shapes that do not fit, non-finite values, labels
            out of range or non-integer, ``B ≤ 0``, ``δ ∉ (0, 1)``, or ``A < ‖Wᵀ‖_{2,1}``.

    Cross-entropy is evaluated with a max shift and ``log1p`` (finite and accurate for logits
    up to ±1e4 and beyond).
    """
    xp, W, X, Y = _check_inputs(W, X, Y, B, delta)
    B, delta = float(B), float(delta)  # validated: finite, B > 0, 0 < δ < 1
    c, d = W.shape
    n = X.shape[0]
    w_norm = norm21(W.T)
    if A is None:
        A_val = w_norm
    else:
        A_val = _real(A, "A")
        if not (math.isfinite(A_val) and A_val >= 0.0):
            raise ValueError(f"A (the norm bound) must be finite and >= 0, got {A!r}")
        rtol = _A_RTOL_F32 if W.dtype == xp.float32 else _A_RTOL_F64
        if A_val < w_norm * (1.0 - rtol):
            raise ValueError(
                f"A={A_val!r} is below ‖Wᵀ‖_2,1 = {w_norm!r} of W; Theorem 4.1 only covers W with "
                "‖Wᵀ‖_2,1 <= A (pass A=None to use the norm of W)"
            )

    z = X @ W.T
    # ℓ, ‖∇ℓ‖₂ = ‖p − e_y‖₂ and tr ∇²ℓ = 1 − ‖p‖² per example, each accurate to the last digits
    # for confident predictions (see CrossEntropy.value, .grad, .hessian_trace)
    loss, grad_norm, hess_trace = _CE.value(z, Y), _CE.grad_norm(z, Y), _CE.hessian_trace(z, Y)
    cap = xp.asarray(B, dtype=loss.dtype, device=array_api_compat.device(loss))
    truncated = xp.minimum(loss, cap)
    mu = float(xp.mean(grad_norm))
    nu = float(xp.mean(hess_trace))
    max_sq = float(xp.max(xp.sum(X * X, axis=1)))
    theta = math.log(n * c) ** 3 * max_sq
    loglog = math.log(math.log(n)) if n >= 3 else 0.0
    zeta = B * (math.log(1.0 / delta) + loglog) / n

    term1 = (A_val * mu) ** (2.0 / 3.0) * (theta * B) ** (1.0 / 3.0) / n ** (1.0 / 3.0)
    term2 = A_val * math.sqrt(B * nu * theta / n)
    term3 = _term3(B, A_val, theta, nu, n)
    return Theorem41(
        n=n,
        c=c,
        d=d,
        B=B,
        delta=delta,
        A=A_val,
        w_norm=w_norm,
        mu=mu,
        nu=nu,
        theta=theta,
        zeta=zeta,
        truncated_losses=truncated,
        empirical_loss=float(xp.mean(truncated)),
        term1=term1,
        term2=term2,
        term3=term3,
        rhs=term1 + term2 + term3 + zeta,
    )


# ----------------------------------------------------------------------------- T1 (numpy, CPU)


@dataclass(frozen=True)
class _Mixture:
    """Gaussian class-conditionals: ``y ~ Uniform[c]``, ``x = m_y + ε``, ``ε ~ N(0, I_d)``."""

    means: np.ndarray  # (c, d), orthogonal rows of norm `separation`

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c, d = self.means.shape
        y = rng.integers(0, c, size=n)
        return self.means[y] + rng.standard_normal((n, d)), y


def _make_mixture(c: int, d: int, separation: float, rng: np.random.Generator) -> _Mixture:
    q, _ = np.linalg.qr(rng.standard_normal((d, c)))
    return _Mixture(means=separation * q.T)


def _population_loss(
    W: np.ndarray, mix: _Mixture, g: np.ndarray, B: float
) -> tuple[float, float]:
    """``E_P min(B, ℓ)`` and its standard error, from the exact law of the logits.

    For ``x = m_y + ε`` the logits are ``W x = W m_y + W ε`` and ``W ε ~ N(0, W Wᵀ)``; with the
    thin QR ``Wᵀ = Q R``, ``W ε`` has the law of ``Rᵀ g``, ``g ~ N(0, I_c)``.  So a population
    sample costs ``O(c²)`` per draw instead of ``O(cd)``.  ``g`` has shape ``(c, c, m)``
    (class, noise coordinate, draw): ``m`` draws per class (classes stratified exactly, the
    prior being uniform), each used with its antithetic partner ``−g``; the standard error is
    that of the stratified mean of the pair averages.
    """
    c = W.shape[0]
    m = g.shape[2]
    _, r = np.linalg.qr(W.T)  # r: (c, c) since d >= c
    centre = mix.means @ W.T  # (c, c): row k is W m_k
    noise = r.T @ g  # (c, c, m): [class k, logit j, draw], the logits' noise Rᵀ g
    pair = np.zeros((c, m))
    for sign in (1.0, -1.0):
        z = centre[:, :, None] + sign * noise
        zmax = z.max(axis=1)
        # logits axis in the middle keeps the (c, m) reductions contiguous (≈ 5× faster)
        lse = np.log(np.exp(z - zmax[:, None, :]).sum(axis=1)) + zmax
        loss = lse - z[np.arange(c), np.arange(c), :]  # z_y with y = k for class block k
        pair += 0.5 * np.minimum(loss, B)
    class_means = pair.mean(axis=1)
    class_vars = pair.var(axis=1, ddof=1)
    mean = float(class_means.mean())
    se = float(np.sqrt(class_vars.sum() / m) / c)
    return mean, se


def _fit_softmax(X: np.ndarray, Y: np.ndarray, c: int, ridge: float) -> np.ndarray:
    """Minimize ``(1/n) Σ ℓ^ce_y(W x_i) + (ridge/2) ‖W‖_F²`` over ``W`` (c, d) with L-BFGS.

    The gradient is ``(1/n) Σ_i (p_i − e_{y_i}) x_iᵀ + ridge·W``: the chain rule through
    ``z = W x`` applied to :meth:`CrossEntropy.value_and_grad` of the logits.
    """
    n, d = X.shape

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        W = w.reshape(c, d)
        value, g = _CE.value_and_grad(X @ W.T, Y)
        grad = g.T @ X / n + ridge * W
        return float(np.mean(value)) + 0.5 * ridge * float(w @ w), grad.ravel()

    res = scipy.optimize.minimize(
        fun, np.zeros(c * d), jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-9}
    )
    return res.x.reshape(c, d)


def _loglog_slope(n: np.ndarray, v: np.ndarray) -> float:
    """Least-squares slope of ``log v`` against ``log n`` (NaN with fewer than 2 points)."""
    if n.size < 2:
        return float("nan")
    return float(np.polyfit(np.log(n), np.log(v), 1)[0])


@dataclass(frozen=True)
class T1Result:
    """Arrays of the T1 experiment (see :func:`t1_experiment`).

    Per-model arrays have shape ``(S, N, R)``: weight scale ``A`` × training size ``n`` × repeat
    (independent training sets).  ``gap = pop_loss − 1.01 train_loss`` (truncated losses);
    ``gap_se`` is the standard error of the population estimate (the training term is exact).
    """

    ns: np.ndarray  #: training sizes, (N,)
    scales: np.ndarray  #: norm bounds A = ‖Wᵀ‖_{2,1} of the models, (S,)
    B: float  #: loss truncation
    delta: float  #: failure probability in ζ
    pop_loss: np.ndarray  #: E_P ℓ̄ (Monte Carlo), (S, N, R)
    pop_loss_se: np.ndarray  #: its standard error, (S, N, R)
    train_loss: np.ndarray  #: E_Pn ℓ̄, (S, N, R)
    gap: np.ndarray  #: E_P ℓ̄ − 1.01 E_Pn ℓ̄, (S, N, R)
    gap_se: np.ndarray  #: standard error of gap (= pop_loss_se), (S, N, R)
    rhs: np.ndarray  #: term1 + term2 + term3 + zeta, (S, N, R)
    term1: np.ndarray  #: (S, N, R)
    term2: np.ndarray  #: (S, N, R)
    term3: np.ndarray  #: (S, N, R)
    zeta: np.ndarray  #: (S, N, R)
    mu: np.ndarray  #: μ(W), (S, N, R)
    nu: np.ndarray  #: ν(W), (S, N, R)

    @property
    def gap_mean(self) -> np.ndarray:
        """Mean gap over the repeats, (S, N)."""
        return self.gap.mean(axis=2)

    @property
    def gap_mean_se(self) -> np.ndarray:
        """Standard error of :attr:`gap_mean`, (S, N).

        The spread over repeats (``std/√R``; 0 when ``R = 1``) and the Monte-Carlo error, added in
        quadrature; the Monte-Carlo part is taken as fully correlated across repeats (one
        population sample is shared), i.e. the mean of the per-model errors.
        """
        r = self.gap.shape[2]
        spread = self.gap.std(axis=2, ddof=1) / np.sqrt(r) if r > 1 else 0.0
        return np.sqrt(spread**2 + self.gap_se.mean(axis=2) ** 2)

    @property
    def rhs_mean(self) -> np.ndarray:
        """Mean RHS over the repeats, (S, N)."""
        return self.rhs.mean(axis=2)

    def constant(self, n_se: float = 0.0) -> float:
        """Smallest ``C`` with ``gap + n_se·gap_se ≤ C·rhs`` for every model of the sweep.

        ``n_se = 0`` gives the point estimate; ``n_se = 2`` allows for the Monte-Carlo error of
        each gap (an upper value).  Never negative (a sweep where every gap is ≤ 0 gives 0).
        """
        return float(max(0.0, np.max((self.gap + n_se * self.gap_se) / self.rhs)))

    def slopes(self, n_se: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
        """Log-log slopes in ``n`` of the mean gap and of the mean RHS, one per scale, (S,) each.

        The gap slope uses only the sizes where the mean gap exceeds ``n_se`` of its standard
        errors (a log needs a positive value); NaN when fewer than two such sizes remain.
        """
        gs, rs = [], []
        for a in range(self.scales.size):
            ok = self.gap_mean[a] > n_se * self.gap_mean_se[a]
            gs.append(_loglog_slope(self.ns[ok], self.gap_mean[a][ok]))
            rs.append(_loglog_slope(self.ns, self.rhs_mean[a]))
        return np.array(gs), np.array(rs)


def t1_experiment(
    ns: Sequence[int],
    scales: Sequence[float],
    *,
    rng: Any = None,
    c: int = 4,
    d: int = 20,
    separation: float = 3.0,
    B: float = 4.0,
    delta: float = 0.1,
    repeats: int = 3,
    n_pop: int = 400_000,
    ridge: float = 1e-3,
) -> T1Result:
    """Measure the generalization gap of Theorem 4.1 against its right-hand side (claim T1).

    Data: ``y ~ Uniform{0..c−1}``, ``x = m_y + ε`` with ``ε ~ N(0, I_d)`` and orthogonal class
    means of norm ``separation`` (drawn once from ``rng``).  For each ``n`` and repeat, a fresh
    training set is drawn and ``Ŵ`` minimizes the ridge-regularized empirical cross-entropy
    ``(1/n) Σ ℓ^ce + (ridge/2)‖W‖_F²`` (scipy L-BFGS; the small ridge keeps the minimizer finite
    on separable samples).  For each norm bound ``A`` in ``scales`` the model is the rescaled
    ``W_A = A Ŵ / ‖Ŵᵀ‖_{2,1}``: it has ``‖W_Aᵀ‖_{2,1} = A`` exactly and a data-dependent
    direction, so it is a legitimate member of the class the theorem covers uniformly.

    ``gap = E_P ℓ̄(W_A x) − 1.01 E_Pn ℓ̄(W_A x)`` uses truncated losses ``ℓ̄ = min(B, ℓ^ce)``.
    ``E_P`` is a Monte-Carlo mean over ``n_pop`` fresh draws taken from the exact Gaussian law of
    the logits (classes stratified, antithetic pairs), with its standard error; ``E_Pn`` is
    exact.  The RHS is :func:`theorem41` with ``A`` the scale (no universal constant).

    Args:
        ns: training sizes (each ≥ 3).
        scales: norm bounds ``A > 0``.
        rng: int seed, ``SeedSequence`` or numpy generator (all randomness comes from it);
            None for the fixed default seed.
        c: classes.
        d: input dimension (``d ≥ c``).
        separation: norm of each class mean.
        B: loss truncation.
        delta: failure probability in ``ζ``.
        repeats: independent training sets per ``n``.
        n_pop: population draws (rounded to a multiple of ``2c``).
        ridge: L-BFGS ridge coefficient.

    Returns:
        A :class:`T1Result`; ``constant()`` and ``slopes()`` give the reported figures.
    """
    ns_arr = np.asarray(ns, dtype=int)
    sc_arr = np.asarray(scales, dtype=float)
    if ns_arr.ndim != 1 or ns_arr.size == 0 or np.any(ns_arr < 3):
        raise ValueError(f"ns must be a non-empty sequence of sizes >= 3, got {ns!r}")
    if sc_arr.ndim != 1 or sc_arr.size == 0 or not np.all(np.isfinite(sc_arr) & (sc_arr > 0)):
        raise ValueError(f"scales must be a non-empty sequence of finite A > 0, got {scales!r}")
    if d < c or c < 2:
        raise ValueError(f"need d >= c >= 2 (orthogonal class means), got c={c}, d={d}")
    if repeats < 1 or n_pop < 4 * c:
        raise ValueError(f"repeats must be >= 1 and n_pop >= 4c, got {repeats}, {n_pop}")
    rng = resolve_rng(rng)
    mix = _make_mixture(c, d, separation, rng)
    m = max(2, n_pop // (2 * c))
    g = rng.standard_normal((c, c, m))
    shape = (sc_arr.size, ns_arr.size, repeats)
    out = {k: np.empty(shape) for k in (
        "pop_loss", "pop_loss_se", "train_loss", "rhs", "term1", "term2", "term3", "zeta", "mu",
        "nu",
    )}
    for i, n in enumerate(ns_arr):
        for r in range(repeats):
            X, Y = mix.sample(int(n), rng)
            w_hat = _fit_softmax(X, Y, c, ridge)
            w_hat /= norm21(w_hat.T)
            for a, A in enumerate(sc_arr):
                W = A * w_hat
                t = theorem41(W, X, Y, B=B, delta=delta, A=A)
                pop, pop_se = _population_loss(W, mix, g, B)
                idx = (a, i, r)
                out["pop_loss"][idx], out["pop_loss_se"][idx] = pop, pop_se
                out["train_loss"][idx] = t.empirical_loss
                for k in ("rhs", "term1", "term2", "term3", "zeta", "mu", "nu"):
                    out[k][idx] = getattr(t, k)
    gap = out["pop_loss"] - 1.01 * out["train_loss"]
    return T1Result(
        ns=ns_arr, scales=sc_arr, B=float(B), delta=float(delta), gap=gap,
        gap_se=out["pop_loss_se"].copy(), **out,
    )
