"""The :class:`Derivation` record and the probability helpers every derivation shares.

A derivation is data: the statement, its source in the paper or a seed, the steps (each a
description and the sympy object it produced), the two sides of the final identity and a
:meth:`Derivation.check` that simplifies ``lhs - rhs`` to zero. Expectations are computed from
the definitions: :func:`expect_iid` sums over the joint law of independent discrete variables
and :func:`expect_by_moments` expands a polynomial in independent variables and replaces each
monomial by the product of the moments.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.matrices import MatrixBase

#: The paper's drop probability q (Sec. 2); ``0 < q < 1`` is assumed where a sign matters.
q = sp.Symbol("q", positive=True)

#: The keep probability of seed 002, ``p = 1 - q``.
p_keep = sp.Symbol("p", positive=True)

Law = Sequence[tuple[Any, Any]]
"""A finite law: pairs ``(value, probability)``."""


def eta_law(drop: sp.Expr = q) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    """Return the law of one coordinate of the paper's dropout noise η (Sec. 2).

    ``η = -1`` with probability ``q`` and ``η = q/(1-q)`` with probability ``1 - q``.
    """
    return ((sp.Integer(-1), drop), (drop / (1 - drop), 1 - drop))


def bernoulli_law(keep: sp.Expr) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    """Return the law of a keep mask ``m ~ Bernoulli(keep)``: 0 w.p. ``1-keep``, 1 w.p. ``keep``."""
    return ((sp.Integer(0), 1 - keep), (sp.Integer(1), keep))


def expect_iid(expr: Any, variables: Sequence[sp.Symbol], law: Law) -> Any:
    """Return ``E[expr]`` for independent ``variables``, each with the finite ``law``.

    Sums ``expr`` over all ``len(law) ** len(variables)`` joint outcomes, weighted by the
    product of the probabilities: the definition of the expectation. ``expr`` may be a Matrix.
    """
    total: Any = None
    for outcome in itertools.product(law, repeat=len(variables)):
        weight = sp.Mul(*(prob for _, prob in outcome))
        values = (sp.sympify(v) for v, _ in outcome)
        value = expr.xreplace(dict(zip(variables, values, strict=True)))
        total = weight * value if total is None else total + weight * value
    return total


def expect_joint(expr: Any, groups: Sequence[tuple[Sequence[sp.Symbol], Law]]) -> Any:
    """Return ``E[expr]``: variables iid within each group (with its law), groups independent."""
    total: Any = None
    per_group = [itertools.product(law, repeat=len(vs)) for vs, law in groups]
    for outcome in itertools.product(*per_group):
        weight = sp.Integer(1)
        subs: dict[sp.Symbol, Any] = {}
        for (variables, _), draw in zip(groups, outcome, strict=True):
            weight *= sp.Mul(*(prob for _, prob in draw))
            subs.update(zip(variables, (sp.sympify(v) for v, _ in draw), strict=True))
        value = expr.xreplace(subs)
        total = weight * value if total is None else total + weight * value
    return total


def moment(n: int, law: Law) -> sp.Expr:
    """Return the ``n``-th raw moment ``Σ value**n · prob`` of a finite law, simplified."""
    return sp.factor(sp.simplify(sp.Add(*(sp.sympify(v) ** n * w for v, w in law))))


def expect_by_moments(expr: sp.Expr, variables: Sequence[sp.Symbol],
                      moments: Callable[[int], sp.Expr]) -> sp.Expr:
    """Return ``E[expr]`` for a polynomial ``expr`` in iid ``variables``.

    Expands ``expr`` into monomials ``c · Π_k v_k**n_k`` and replaces each by
    ``c · Π_k moments(n_k)`` (independence factorizes the expectation of a product).
    """
    poly = sp.Poly(sp.expand(expr), *variables)
    return sp.Add(*(coeff * sp.Mul(*(moments(n) for n in powers))
                    for powers, coeff in poly.terms()))


def symbols_vector(prefix: str, n: int, **assumptions: Any) -> sp.Matrix:
    """Return the column vector ``(prefix1, ..., prefixn)`` of new symbols."""
    return sp.Matrix(sp.symbols(f"{prefix}1:{n + 1}", **assumptions))


def symbols_matrix(prefix: str, rows: int, cols: int, **assumptions: Any) -> sp.Matrix:
    """Return the ``rows × cols`` matrix of symbols ``prefix{i}{j}`` (1-based)."""
    return sp.Matrix(rows, cols,
                     lambda i, j: sp.Symbol(f"{prefix}{i + 1}{j + 1}", **assumptions))


def softmax(v: sp.Matrix) -> sp.Matrix:
    """Return ``softmax(v) = exp(v) / Σ exp(v)`` as a column vector."""
    e = v.applyfunc(sp.exp)
    return e / sum(e)


def cross_entropy(v: sp.Matrix, y: int) -> sp.Expr:
    """Return ``ℓ_y(v) = -log softmax(v)_y`` with the log expanded: ``log Σ_j exp(v_j) - v_y``.

    ``y`` is a 0-based index into the logits ``v`` (real symbols).
    """
    return sp.expand_log(-sp.log(softmax(v)[y]), force=True)


def in_probabilities(expr: Any, v: sp.Matrix, p: sp.Matrix) -> Any:
    """Rewrite a degree-0 homogeneous function of ``exp(v_j)`` in the probabilities ``p_j``.

    Substitutes ``v_j = log p_j``, i.e. ``exp(v_j) → p_j`` (allowed because the expression is
    invariant under a common rescaling of the ``exp(v_j)``, e.g. by ``1/Σ exp(v)``), then
    ``Σ_j p_j → 1``. For display; ``p`` must be positive symbols.
    """
    out = expr.subs({vj: sp.log(pj) for vj, pj in zip(v, p, strict=True)})
    total = sp.Add(*p)
    if isinstance(out, MatrixBase):
        return out.applyfunc(lambda e: sp.factor(e).subs(total, 1))
    return sp.factor(out).subs(total, 1)


def expect_draws(fn: Callable[..., Any], law: Law, k: int) -> Any:
    """Return ``E[fn(X_1, ..., X_k)]`` for ``k`` iid draws from the finite ``law`` of values."""
    total: Any = None
    for outcome in itertools.product(law, repeat=k):
        weight = sp.Mul(*(prob for _, prob in outcome))
        value = weight * fn(*(v for v, _ in outcome))
        total = value if total is None else total + value
    return total


def default_simplify(expr: sp.Expr) -> sp.Expr:
    """Reduce ``expr``: a cheap rational normal form first, then :func:`sympy.simplify`."""
    cheap = sp.cancel(sp.expand(expr))
    if cheap == 0:
        return cheap
    return sp.simplify(cheap)


def _entries(obj: Any) -> list[Any]:
    if isinstance(obj, MatrixBase):
        return list(obj)
    return [obj]


def _lambdify_args(variables: Iterable[Any]) -> list[Any]:
    """Turn Matrices into nested lists so lambdify unpacks numpy arrays of the same shape."""
    out: list[Any] = []
    for v in variables:
        if isinstance(v, MatrixBase):
            out.append(list(v) if v.shape[1] == 1 else v.tolist())
        elif isinstance(v, (list, tuple)):
            out.append(_lambdify_args(v))
        else:
            out.append(v)
    return out


@dataclass
class Derivation:
    """One symbolic result, derived step by step, with a check that ``lhs - rhs`` simplifies to 0.

    Attributes:
        name: short identifier (the module name).
        statement: the result in words and plain-text formulas.
        source: paper section/equation or seed the result comes from.
        claims: paper-notes claim IDs this derivation supports.
        steps: ``(description, sympy object)`` pairs in the order they were derived.
        lhs: the side computed from the definitions.
        rhs: the closed form stated by the source.
        variables: the free inputs of :attr:`closed_form`, in the argument order of
            :meth:`numeric` (symbols, or Matrices/tuples of symbols for array arguments).
        closed_form: the numeric formula :meth:`numeric` lambdifies (default :attr:`rhs`).
        simplifier: reduces each entry of ``lhs - rhs``; the check passes iff every entry is 0.
        result_display: a compact form of :attr:`rhs` to print instead of it (optional).
    """

    name: str
    statement: str
    source: str
    steps: list[tuple[str, Any]]
    lhs: Any
    rhs: Any
    claims: tuple[str, ...] = ()
    variables: tuple[Any, ...] = ()
    closed_form: Any = None
    simplifier: Callable[[Any], Any] = default_simplify
    result_display: Any = None
    _verdict: bool | None = field(default=None, init=False, repr=False, compare=False)

    def residual(self) -> list[Any]:
        """Return the simplified entries of ``lhs - rhs`` (all zero when the result holds)."""
        lhs, rhs = _entries(self.lhs), _entries(self.rhs)
        if isinstance(self.lhs, MatrixBase) and isinstance(self.rhs, MatrixBase):
            if self.lhs.shape != self.rhs.shape:
                raise ValueError(f"derivation {self.name!r}: lhs shape {self.lhs.shape} "
                                 f"differs from rhs shape {self.rhs.shape}")
        elif len(lhs) != len(rhs):
            raise ValueError(f"derivation {self.name!r}: lhs has {len(lhs)} entries, "
                             f"rhs has {len(rhs)}")
        return [self.simplifier(a - b) for a, b in zip(lhs, rhs, strict=True)]

    def check(self) -> bool:
        """Return True iff every entry of ``lhs - rhs`` simplifies to zero (cached)."""
        if self._verdict is None:
            self._verdict = all(r == 0 for r in self.residual())
        return self._verdict

    def numeric(self) -> Callable[..., Any]:
        """Return the closed form as a numpy function of :attr:`variables` (via ``sympy.lambdify``).

        Matrix-valued forms return 2-D arrays (scalar inputs). Column vectors return arrays
        whose leading axis is the component; inputs may broadcast.

        Raises:
            ValueError: if the derivation declares no numeric variables.
        """
        if not self.variables:
            raise ValueError(f"derivation {self.name!r} has no numeric closed form "
                             "(no variables declared)")
        form = self.rhs if self.closed_form is None else self.closed_form
        args = _lambdify_args(self.variables)
        if isinstance(form, MatrixBase) and form.shape[1] == 1:
            import numpy as np

            flat = sp.lambdify(args, list(form), "numpy")

            def vector(*a: Any) -> Any:
                return np.stack(np.broadcast_arrays(*flat(*a)), axis=0).astype(float)

            vector.__doc__ = f"Numeric closed form of {self.name!r}: {self.statement}"
            return vector
        fn = sp.lambdify(args, form, "numpy")
        fn.__doc__ = f"Numeric closed form of {self.name!r}: {self.statement}"
        return fn
