"""Sympy derivations of the identities dropcheck verifies, one module per result.

Each module builds a :class:`Derivation` from the definitions (laws of the noise, sums over
outcomes, derivatives of ``−log softmax``) and checks that the derived side equals the closed form
stated by the paper (Wei, Kakade & Ma, ICML 2020) or seed 002. ``dropcheck derive`` prints them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import sympy as sp
from dropcheck.derivations._core import Derivation
from sympy.matrices import MatrixBase

__all__ = ["MODULES", "Derivation", "all_derivations", "cli", "get", "render"]

#: Derivation modules in presentation order: noise, explicit, implicit, theorem, classical.
MODULES: tuple[str, ...] = (
    # noise (Sec. 2, fn. 6)
    "eta_moments",
    "delta_covariance",
    "inverted_dropout",
    "mean_preservation",
    "rademacher_scaling",
    # explicit regularizer (Sec. 4.1)
    "taylor_second_order",
    "cross_site",
    "gauss_newton",
    "ce_hessian",
    "sampled_label",
    # implicit regularizer (Sec. 3.1)
    "difference_noise",
    "noise_injection",
    # Theorem 4.1 (Sec. 4.3)
    "theorem41_terms",
    # classical results (seed 002)
    "ridge",
    "geometric_mean",
    # beyond the paper (docs/beyond.md)
    "next_layer_taylor",
    "wager_quadratic",
    "fast_dropout_moments",
    "gaussian_dropout_moments",
    "sigmoid_nwgm",
    "mianjy_regularizer",
)

_FORMATS = ("text", "latex", "markdown")
_MAX_NODES = 600  # expressions with more tree nodes are summarized, not printed


def get(name: str) -> Derivation:
    """Return the derivation called ``name`` (one of :data:`MODULES`).

    Raises:
        KeyError: if ``name`` is not a derivation; the message lists the known names.
    """
    if name not in MODULES:
        raise KeyError(f"unknown derivation {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(f"dropcheck.derivations.{name}").derivation()


def all_derivations() -> list[Derivation]:
    """Return every derivation, in the stable order of :data:`MODULES`."""
    return [get(name) for name in MODULES]


def _size(obj: Any) -> int:
    entries = list(obj) if isinstance(obj, MatrixBase) else [obj]
    return sum(sum(1 for _ in sp.preorder_traversal(e)) for e in entries)


def _too_big(obj: Any) -> bool:
    return _size(obj) > _MAX_NODES


def _summary(obj: Any) -> str:
    shape = f"{obj.shape[0]}×{obj.shape[1]} matrix" if isinstance(obj, MatrixBase) else "expression"
    return f"({shape} of {_size(obj)} expression-tree nodes; too long to show)"


def _result(d: Derivation) -> Any:
    return d.rhs if d.result_display is None else d.result_display


def _text_block(obj: Any, indent: str = "      ") -> str:
    if _too_big(obj):
        return indent + _summary(obj)
    art = sp.pretty(obj, use_unicode=True, wrap_line=False)
    return "\n".join(indent + line for line in art.splitlines())


def _latex_escape(text: str) -> str:
    table = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#",
             "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
             "^": r"\textasciicircum{}"}
    return "".join(table.get(ch, ch) for ch in text)


def _math(obj: Any) -> str:
    return r"\text{" + _summary(obj) + "}" if _too_big(obj) else sp.latex(obj)


def _verdict(d: Derivation) -> str:
    return "PASS" if d.check() else "FAIL"


def _render_text(d: Derivation) -> str:
    lines = [f"== {d.name} ==", d.statement, f"source: {d.source}"]
    if d.claims:
        lines.append(f"claims: {', '.join(d.claims)}")
    lines.append("steps:")
    for i, (desc, obj) in enumerate(d.steps, 1):
        lines.append(f"  {i}. {desc}")
        lines.append(_text_block(obj))
    lines.append("result (closed form):")
    lines.append(_text_block(_result(d)))
    lines.append(f"check: derived − closed form simplifies to 0 entrywise: {_verdict(d)}")
    return "\n".join(lines)


def _render_latex(d: Derivation) -> str:
    lines = [
        rf"\subsection*{{{_latex_escape(d.name)}}}",
        rf"\textbf{{Statement.}} {_latex_escape(d.statement)}\\",
        rf"\textbf{{Source.}} {_latex_escape(d.source)}\\",
    ]
    if d.claims:
        lines.append(rf"\textbf{{Claims.}} {_latex_escape(', '.join(d.claims))}")
    lines.append(r"\begin{enumerate}")
    for desc, obj in d.steps:
        lines.append(rf"  \item {_latex_escape(desc)} \[ {_math(obj)} \]")
    lines.append(r"\end{enumerate}")
    lines.append(rf"\textbf{{Result.}} \[ {_math(_result(d))} \]")
    lines.append(rf"\textbf{{Check.}} derived $-$ closed form simplifies to 0 entrywise: "
                 rf"\textbf{{{_verdict(d)}}}")
    return "\n".join(lines)


def _render_markdown(d: Derivation) -> str:
    lines = [f"### `{d.name}`", "", f"**Statement.** {d.statement}", "",
             f"**Source.** {d.source}", ""]
    if d.claims:
        lines += [f"**Claims.** {', '.join(d.claims)}", ""]
    for i, (desc, obj) in enumerate(d.steps, 1):
        lines += [f"{i}. {desc}", "", f"   $$ {_math(obj)} $$", ""]
    lines += ["**Result.**", "", f"$$ {_math(_result(d))} $$", "",
              f"**Check.** derived − closed form simplifies to 0 entrywise: **{_verdict(d)}**"]
    return "\n".join(lines)


def render(derivation: Derivation, fmt: str = "text") -> str:
    r"""Return ``derivation`` as readable text: statement, source, steps, result and check verdict.

    Args:
        derivation: the derivation to show.
        fmt: ``"text"`` (unicode pretty-printing), ``"latex"`` (a ``\subsection*`` fragment;
            the prose keeps its unicode, so compile with XeLaTeX/LuaLaTeX) or ``"markdown"``
            (``$$…$$`` math blocks).

    Raises:
        ValueError: if ``fmt`` is not one of the three formats.
    """
    if fmt == "text":
        return _render_text(derivation)
    if fmt == "latex":
        return _render_latex(derivation)
    if fmt == "markdown":
        return _render_markdown(derivation)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(_FORMATS)}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dropcheck derive",
        description="Run the sympy derivations and print each with its check verdict.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", dest="fmt", action="store_const", const="latex",
                     help="print LaTeX fragments")
    fmt.add_argument("--markdown", dest="fmt", action="store_const", const="markdown",
                     help="print Markdown")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                   help=f"run only these derivations (known: {', '.join(MODULES)})")
    p.add_argument("--list", action="store_true", help="list the derivation names and exit")
    p.set_defaults(fmt="text")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Run ``dropcheck derive [--latex | --markdown] [--only NAME...]``; return the exit status.

    Prints every selected derivation and a summary line. Returns 0 when every check passes,
    1 when any fails, 2 for an unknown derivation name.
    """
    args = _parser().parse_args(argv)
    if args.list:
        for name in MODULES:
            print(name)
        return 0
    names = [n for item in (args.only or []) for n in item.split(",") if n] or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"dropcheck derive: unknown derivation(s) {', '.join(unknown)}; "
              f"known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for name in names:
        d = get(name)
        print(render(d, args.fmt))
        print()
        if not d.check():
            failed.append(name)
    passed = len(names) - len(failed)
    summary = f"{len(names)} derivations: {passed} passed, {len(failed)} failed"
    if failed:
        summary += f" ({', '.join(failed)})"
    print(summary)
    return 1 if failed else 0
