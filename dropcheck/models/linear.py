"""Linear models with input dropout: softmax regression and least squares."""

from __future__ import annotations

from typing import Any

from dropcheck.backend import asarray, default_dtype, make_rng, namespace
from dropcheck.losses import Loss
from dropcheck.models._base import namespace_of
from dropcheck.models.mlp import MLP

__all__ = ["Linear"]


class Linear(MLP):
    """``F(x) = W((1+η)⊙x) + b`` with dropout on the input (site ``"x"``).

    ``W`` has shape ``(c, d)``; ``b`` (``(c,)``) defaults to zeros.  With
    ``loss="cross_entropy"`` this is softmax regression (Theorem 4.1's model, with ``b = 0``);
    with ``loss="squared"`` it is least squares, ``½‖Wx + b − y‖²`` (the ridge claim L1).
    ``params`` is ``{"W1": W, "b1": b}``, so flat parameters are ``W`` (C-order) then ``b``.
    """

    def __init__(self, W: Any, b: Any = None, loss: str | Loss = "cross_entropy") -> None:
        xp = namespace(W)
        W = xp.asarray(W)
        if W.ndim != 2:
            raise ValueError(f"W must have shape (c, d), got {W.shape}")
        if b is None:
            b = xp.zeros((W.shape[0],), dtype=W.dtype)
        super().__init__([W], [b], "identity", ("x",), loss)

    @classmethod
    def random(  # type: ignore[override]
        cls,
        d: int,
        c: int,
        *,
        seed: int | None = 0,
        rng: Any = None,
        scale: float = 1.0,
        bias: bool = True,
        loss: str | Loss = "cross_entropy",
        dtype: Any = None,
        xp: Any = None,
    ) -> Linear:
        """A random linear model, ``W ~ scale·N(0, 1/d)``, ``b ~ 0.1·N(0, 1)`` or zero."""
        gen = make_rng(None if rng is not None else seed, rng)
        xp = namespace_of(xp)
        dtype = default_dtype(xp) if dtype is None else dtype
        W = asarray(scale * gen.standard_normal((c, d)) / d**0.5, xp, dtype)
        b = asarray(0.1 * gen.standard_normal(c), xp, dtype) if bias else None
        return cls(W, b, loss)

    def with_params(self, params: Any) -> Linear:  # noqa: D102
        return Linear(params["W1"], params["b1"], self.loss)

    def __repr__(self) -> str:
        c, d = self.params["W1"].shape
        return f"Linear(d={d}, c={c}, loss={self.loss.name!r})"
