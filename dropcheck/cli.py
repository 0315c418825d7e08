"""The ``dropcheck`` command: ``verify``, ``plot`` and the commands later modules add."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _cmd_verify(args: argparse.Namespace) -> int:
    from dropcheck.parallel import from_options
    from dropcheck.verification import run

    ids = [i for s in (args.only or []) for i in s.split(",") if i]
    executor = from_options(args.jobs, args.scheduler, timeout=args.scheduler_timeout)
    try:
        return _run_verify(run, ids, args, executor)
    finally:
        if executor is not None:
            executor.close()


def _run_verify(run: Any, ids: list[str], args: argparse.Namespace, executor: Any) -> int:
    return run(
        ids or None,
        quick=args.quick,
        seed=args.seed,
        outdir=args.out,
        json_path=args.json,
        progress=not args.no_progress,
        verbose=args.verbose,
        strict=args.strict,
        mutants=args.mutants,
        compare=args.compare,
        matrix_markdown=args.matrix_md,
        executor=executor,
    )


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dropcheck.verification import Context, all_plots

    plots = all_plots()
    if args.list or args.name is None:
        for p in plots.values():
            print(f"{p.name:24s} {p.help}")
        return 0
    if args.name not in plots:
        print(f"dropcheck plot: unknown plot {args.name!r}; known: {', '.join(plots)}",
              file=sys.stderr)
        return 2
    out = Path(args.output or f"{args.name}.{args.format}")
    ctx = Context(quick=args.quick, seed=args.seed, outdir=out.parent)
    plots[args.name].make(ctx, out)
    print(f"wrote {out}")
    return 0


#: Subcommands whose module parses its own arguments: name -> (module, function, help).
_PASSTHROUGH = {
    "derive": ("dropcheck.derivations", "cli", "run the sympy derivations and print them"),
    "check": ("dropcheck.checks._cli", "cli", "check a dropout layer MODULE:FUNCTION"),
    "lstm-eval": ("dropcheck.lm.cli", "cli", "regularizers of an LSTM LM over a corpus"),
    "bench": ("dropcheck.benchmarks.run", "main", "benchmarks against baselines, as ratios"),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``dropcheck`` command."""
    p = argparse.ArgumentParser(
        prog="dropcheck",
        description="Check dropout theory (Wei, Kakade & Ma 2020; classical results) with numbers.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="measure every claim of paper-notes and print the table")
    v.add_argument("--quick", action="store_true", help="small sizes: well under a minute")
    v.add_argument("--only", action="append", metavar="IDS", help="comma-separated claim IDs")
    v.add_argument("--json", metavar="PATH", help="write the JSON report here")
    v.add_argument("--out", metavar="DIR", default="dropcheck-report",
                   help="folder for the plots (default: dropcheck-report)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    v.add_argument("-v", "--verbose", action="store_true",
                   help="the full record per claim: statement, rule, figures, note")
    v.add_argument("--strict", action="store_true",
                   help="exit non-zero when an approximation DEVIATES from its stated law")
    v.add_argument("--mutants", action="store_true",
                   help="also measure the claims under every mutant (deliberately wrong "
                   "library pieces) and print the claim × mutant matrix")
    v.add_argument("--matrix-md", metavar="FILE.md",
                   help="with --mutants: write the matrix as a markdown table into FILE.md "
                   "(between its mutation-matrix markers; docs/verification.md)")
    v.add_argument("--compare", metavar="OLD.json",
                   help="print verdict changes and moved figures against an earlier report; "
                   "exit non-zero on a verdict regression")
    par = v.add_mutually_exclusive_group()
    par.add_argument("-j", "--jobs", type=int, metavar="N",
                     help="measure the claims in N local processes (same JSON; docs/parallel.md)")
    par.add_argument("--scheduler", metavar="ADDRESS",
                     help="measure the claims on the Dask cluster at ADDRESS (needs "
                          "dropcheck[dask]; same JSON)")
    v.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler before a clear error (default 10)")
    v.set_defaults(func=_cmd_verify)

    pl = sub.add_parser("plot", help="make one approximation-error plot")
    pl.add_argument("name", nargs="?", help="plot name (see --list)")
    pl.add_argument("--list", action="store_true", help="list the plots")
    pl.add_argument("-o", "--output", metavar="FILE", help="output file (.png, .svg or .pdf)")
    pl.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    pl.add_argument("--quick", action="store_true")
    pl.add_argument("--seed", type=int, default=0)
    pl.set_defaults(func=_cmd_plot)

    # listed for --help; main() hands their arguments to the module before argparse sees them
    for name, (_, _, help_) in _PASSTHROUGH.items():
        sub.add_parser(name, help=help_ + " (see: dropcheck " + name + " --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dropcheck`` command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        import importlib

        module, function, _ = _PASSTHROUGH[argv[0]]
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, ConnectionError) as exc:  # ConnectionError: --scheduler
        print(f"dropcheck {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
