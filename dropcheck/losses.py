"""Losses on logits: value, gradient, ``H_out`` and its products.

Shapes: logits ``F`` of shape ``(..., c)`` (leading axes: noise draws and examples), targets
broadcast against the leading axes: integer labels ``(n,)`` for cross-entropy, real targets
``(n, c)`` for the squared loss.  Per-example values come back with shape ``(...)``.

- Cross-entropy ``ℓ_y(F) = −log softmax(F)_y`` (log-sum-exp with a max shift: stable for logits
  up to ±1e4 and beyond); ``∇ = p − e_y``; ``H_out = diag(p) − p pᵀ`` (paper-notes, Notation);
  ``tr H_out = Σ_k p_k (1 − p_k) = 1 − ‖p‖²`` (ν of Theorem 4.1).
- Squared ``ℓ = ½‖F − y‖²``; ``∇ = F − y``; ``H_out = I``; ``tr H_out = c``.

Every derivative of a loss lives here, once: :mod:`dropcheck.theory` (``μ = E‖∇ℓ‖``,
``ν = E tr H_out``, the softmax fit) and the estimators call these methods rather than
re-deriving them.
"""

from __future__ import annotations

from typing import Any

from dropcheck._validate import check_array_kind, check_choice
from dropcheck.backend import namespace

__all__ = ["Loss", "CrossEntropy", "Squared", "get_loss", "softmax", "log_softmax"]


def log_softmax(f: Any, xp: Any = None) -> Any:
    """``log softmax`` over the last axis, shifted by the max (no overflow)."""
    xp = namespace(f, xp=xp)
    m = xp.max(f, axis=-1, keepdims=True)
    z = f - m
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def softmax(f: Any, xp: Any = None) -> Any:
    """``softmax`` over the last axis."""
    xp = namespace(f, xp=xp)
    return xp.exp(log_softmax(f, xp))


class Loss:
    """A loss ``ℓ(F, y)`` on logits; subclasses give the derivatives in closed form."""

    name: str = ""
    #: whether ``H_out = E_{ŷ~p}[g_ŷ g_ŷᵀ]`` holds (the sampled-label identity of the slides)
    has_label_distribution: bool = False

    def value(self, f: Any, y: Any) -> Any:
        """Per-example loss, shape ``f.shape[:-1]``."""
        raise NotImplementedError

    def grad(self, f: Any, y: Any) -> Any:
        """``∇_F ℓ``, shape of ``f``."""
        raise NotImplementedError

    def hessian(self, f: Any, y: Any) -> Any:
        """``H_out = D²_F ℓ``, shape ``f.shape + (c,)``."""
        raise NotImplementedError

    def value_and_grad(self, f: Any, y: Any) -> tuple[Any, Any]:
        """``(ℓ, ∇_F ℓ)``: :meth:`value` ``f.shape[:-1]`` and :meth:`grad` ``f.shape``.

        The pair an optimizer asks for (``scipy.optimize.minimize(..., jac=True)``).
        """
        return self.value(f, y), self.grad(f, y)

    def grad_norm(self, f: Any, y: Any) -> Any:
        """``‖∇_F ℓ‖₂`` per logit vector, shape ``f.shape[:-1]`` (μ of Theorem 4.1 averages it).

        The Euclidean norm of :meth:`grad` over the last axis, so it inherits its accuracy.
        """
        xp = namespace(f)
        g = self.grad(f, y)
        return xp.sqrt(xp.sum(g * g, axis=-1))

    def hessian_trace(self, f: Any, y: Any) -> Any:
        """``tr H_out = tr D²_F ℓ`` per logit vector, shape ``f.shape[:-1]``."""
        raise NotImplementedError

    def hvp(self, f: Any, y: Any, v: Any) -> Any:
        """``H_out v`` for ``v`` of shape ``(k, *f.shape)`` or ``f.shape``."""
        raise NotImplementedError

    def hessian_factor(self, f: Any, y: Any) -> Any:
        """A factor ``A`` with ``H_out = A Aᵀ``, shape ``f.shape + (c,)``."""
        raise NotImplementedError

    def hessian_form_grad(self, f: Any, y: Any, v: Any) -> Any:
        """``∇_F (vᵀ H_out(F) v)`` at fixed ``v`` (``(k, *f.shape)`` or ``f.shape``).

        The third-derivative term of ``∇_W R_approx`` (``R_approx = Σ tᵀ H_out t``).
        """
        raise NotImplementedError

    def check_targets(self, y: Any, n: int, c: int, xp: Any) -> Any:
        """Validate targets for ``n`` examples and ``c`` logits; return them as an array."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropy(Loss):
    """Cross-entropy on logits with integer labels."""

    name = "cross_entropy"
    has_label_distribution = True

    def _onehot(self, y: Any, c: int, xp: Any, dtype: Any) -> Any:
        return xp.astype(xp.reshape(xp.arange(c), (1,) * y.ndim + (c,)) == y[..., None], dtype)

    def value(self, f: Any, y: Any) -> Any:
        """``log Σ e^F − F_y = log1p(t) − z_y``, ``z = F − max F``, ``t = Σ_{j≠argmax} e^{z_j}``.

        ``log1p`` keeps full relative accuracy for confident predictions (loss ≪ 1), where
        ``log(1 + t)`` would round ``t < 1e-16`` away.
        """
        xp = namespace(f)
        c = f.shape[-1]
        z = f - xp.max(f, axis=-1, keepdims=True)
        top = self._onehot(xp.argmax(z, axis=-1), c, xp, f.dtype)
        t = xp.sum(xp.exp(z) * (1.0 - top), axis=-1)
        return xp.log1p(t) - xp.sum(z * self._onehot(y, c, xp, f.dtype), axis=-1)

    def grad(self, f: Any, y: Any) -> Any:
        """``p − e_y``, with ``p_y − 1`` computed as ``−Σ_{j≠y} p_j`` (no cancellation)."""
        xp = namespace(f)
        e = self._onehot(y, f.shape[-1], xp, f.dtype)
        off = softmax(f, xp) * (1.0 - e)
        return off - e * xp.sum(off, axis=-1, keepdims=True)

    def grad_at_probs(self, p: Any, y: Any) -> Any:
        """``∇_F ℓ = p − e_y`` written through the probabilities ``p = softmax(F)`` ``(..., c)``.

        Affine in ``p``, so it maps an *expected* softmax ``E[p]`` (or ``E[m p]/E[m]``) to the
        expected gradient: the factorized enumeration (:mod:`dropcheck._fastenum`) uses it.
        ``y`` broadcasts against ``p.shape[:-1]``.
        """
        xp = namespace(p)
        return p - self._onehot(y, p.shape[-1], xp, p.dtype)

    def hessian(self, f: Any, y: Any) -> Any:  # noqa: D102
        xp = namespace(f)
        p = softmax(f, xp)
        eye = xp.eye(f.shape[-1], dtype=f.dtype)
        return p[..., :, None] * eye - p[..., :, None] * p[..., None, :]

    def hvp(self, f: Any, y: Any, v: Any) -> Any:  # noqa: D102
        xp = namespace(f)
        p = softmax(f, xp)
        return p * v - p * xp.sum(p * v, axis=-1, keepdims=True)

    def hessian_trace(self, f: Any, y: Any) -> Any:
        """``tr(diag(p) − p pᵀ) = Σ_k p_k (1 − p_k) = 1 − ‖p‖²``, a sum of non-negative terms.

        ``1 − p_k`` is formed without cancellation: with ``e = exp(F − max F)`` (its largest
        entry is 1) and ``S = Σ e = 1 + S_rest`` (``S_rest`` sums ``e`` over the classes other
        than the arg-max), ``1 − p_k = Σ_{j≠k} e_j / S`` is ``S_rest / S`` for the arg-max class
        and ``(S − e_k) / S ≥ 1/S`` for the others.  So a confident prediction (``p_max → 1``)
        keeps full relative accuracy (``1 − ‖p‖²`` written out would round to 0), and
        one-hot predictions give exactly 0.
        """
        xp = namespace(f)
        c = f.shape[-1]
        e = xp.exp(f - xp.max(f, axis=-1, keepdims=True))
        top = self._onehot(xp.argmax(f, axis=-1), c, xp, f.dtype) == 1.0
        s_rest = xp.sum(xp.where(top, xp.zeros_like(e), e), axis=-1, keepdims=True)
        s = 1.0 + s_rest
        one_minus_p = xp.where(top, xp.broadcast_to(s_rest, e.shape), s - e) / s
        return xp.sum((e / s) * one_minus_p, axis=-1)

    def hessian_factor(self, f: Any, y: Any) -> Any:
        """``A = diag(√p)(I − √p √pᵀ)``: ``A Aᵀ = diag(p) − p pᵀ`` (a projection in between)."""
        xp = namespace(f)
        s = xp.sqrt(softmax(f, xp))
        eye = xp.eye(f.shape[-1], dtype=f.dtype)
        return s[..., :, None] * (eye - s[..., :, None] * s[..., None, :])

    def hessian_form_grad(self, f: Any, y: Any, v: Any) -> Any:
        """``∇_F(vᵀHv) = H(v⊙v) − 2(pᵀv) H v`` (``∂p_a/∂F_b = H_ab``)."""
        xp = namespace(f)
        p = softmax(f, xp)
        pv = xp.sum(p * v, axis=-1, keepdims=True)
        return self.hvp(f, y, v * v) - 2.0 * pv * self.hvp(f, y, v)

    def check_targets(self, y: Any, n: int, c: int, xp: Any) -> Any:  # noqa: D102
        y = xp.asarray(y)
        if xp.isdtype(y.dtype, "real floating"):
            if not bool(xp.all(xp.round(y) == y)):
                raise TypeError("y must hold integer class labels for cross-entropy")
            y = xp.astype(y, xp.int64)
        elif not xp.isdtype(y.dtype, "integral"):
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.ndim == 0:
            y = xp.reshape(y, (1,))
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) (one label per example), got {y.shape}")
        if n and (bool(xp.any(y < 0)) or bool(xp.any(y >= c))):
            raise ValueError(f"y holds labels outside [0, {c}) for a model with {c} classes")
        return y


class Squared(Loss):
    """Squared loss ``½‖F − y‖²`` with real targets."""

    name = "squared"

    def value(self, f: Any, y: Any) -> Any:  # noqa: D102
        xp = namespace(f)
        return 0.5 * xp.sum((f - y) ** 2, axis=-1)

    def grad(self, f: Any, y: Any) -> Any:  # noqa: D102
        return f - y

    def hessian(self, f: Any, y: Any) -> Any:  # noqa: D102
        xp = namespace(f)
        return xp.broadcast_to(xp.eye(f.shape[-1], dtype=f.dtype), (*f.shape, f.shape[-1]))

    def hvp(self, f: Any, y: Any, v: Any) -> Any:  # noqa: D102
        return v + 0.0 * f

    def hessian_trace(self, f: Any, y: Any) -> Any:
        """``tr I = c`` for every logit vector."""
        xp = namespace(f)
        return xp.sum(xp.ones_like(f), axis=-1)  # exact for any c, in f's dtype and device

    def hessian_factor(self, f: Any, y: Any) -> Any:  # noqa: D102
        return self.hessian(f, y)

    def hessian_form_grad(self, f: Any, y: Any, v: Any) -> Any:
        """``H_out = I`` does not depend on ``F``: zero."""
        return 0.0 * v + 0.0 * f

    def check_targets(self, y: Any, n: int, c: int, xp: Any) -> Any:  # noqa: D102
        y = xp.asarray(y)
        check_array_kind(y, xp, "y")  # complex or string targets: a TypeError, not a cast
        if not xp.isdtype(y.dtype, "real floating"):
            y = xp.astype(y, xp.float64)
        if y.ndim == 1 and c == 1 and y.shape == (n,):
            y = xp.reshape(y, (n, 1))
        if y.ndim == 1 and n == 1:
            y = xp.reshape(y, (1, -1))
        if y.shape != (n, c):
            raise ValueError(f"y must have shape ({n}, {c}) (targets per example), got {y.shape}")
        if not bool(xp.all(xp.isfinite(y))):
            raise ValueError("y must be finite; it holds NaN or infinity")
        return y


_LOSSES = {"cross_entropy": CrossEntropy, "squared": Squared}


def get_loss(loss: str | Loss) -> Loss:
    """Return a loss object from its name (``"cross_entropy"``, ``"squared"``) or itself."""
    if isinstance(loss, Loss):
        return loss
    return _LOSSES[check_choice(loss, tuple(_LOSSES), "loss")]()
