"""``dropcheck check MODULE:FUNCTION``: run :func:`check_dropout` on a layer from the shell.

``cli(argv)`` takes the arguments after ``dropcheck check`` (a leading ``"check"`` is
skipped), prints the report and returns the exit status: 0 passed, 1 failed, 2 bad usage
(unknown module or function, invalid argument).  ``add_arguments`` and ``run`` let
``dropcheck/cli.py`` mount the same command as a subparser.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "cli"]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``dropcheck check`` to ``p``."""
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="the layer: fn(x), fn(x, q) or a factory fn(q); MODULE may be a .py path")
    p.add_argument("--q", type=_floats, default=None, metavar="Q[,Q...]",
                   help="drop probabilities (default 0.1,0.3,0.7)")
    p.add_argument("--shape", type=_ints, default=(64, 256), metavar="N[,N...]",
                   help="probe input shape, axis 0 = examples (default 64,256)")
    p.add_argument("--alpha", type=float, default=1e-6,
                   help="overall false-alarm probability (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe input (default 0)")
    p.add_argument("--rate", choices=("auto", "fixed", "arg", "factory"), default="auto",
                   help="how FUNCTION receives q (default: from its signature)")
    p.add_argument("--eval", metavar="MODULE:FUNCTION", dest="eval_fn",
                   help="the layer in eval mode (checked to be the identity)")
    p.add_argument("--shared-axes", type=_ints, default=None, metavar="AXIS[,AXIS...]",
                   help="axes along which the mask is meant to be constant")
    p.add_argument("--dtype", default="float64", help="probe dtype (default float64)")
    p.add_argument("--torch", action="store_true",
                   help="hand the layer torch tensors (torch.from_numpy)")


def _load(target: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (MODULE a dotted name or a path to a .py file)."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:FUNCTION, got {target!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise ValueError(f"no Python file {module_name!r}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path:  # like `python -m`: modules in the working directory import
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def run(args: argparse.Namespace) -> int:
    """Run the check described by parsed ``args``; print the report; return the exit status."""
    from dropcheck.checks.dropout import check_dropout

    fn = _load(args.target)
    eval_fn = _load(args.eval_fn) if args.eval_fn else None
    to_framework = None
    if args.torch:
        import torch

        to_framework = torch.from_numpy
    report = check_dropout(fn, args.q, args.shape, eval_fn=eval_fn, alpha=args.alpha,
                           seed=args.seed, rate=args.rate, shared_axes=args.shared_axes,
                           dtype=args.dtype, to_framework=to_framework)
    print(report)
    return 0 if report.passed else 1


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dropcheck check``; returns 0 passed, 1 failed, 2 bad usage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="dropcheck check",
                                description="Check a dropout layer statistically "
                                            "(drop rate, scaling, independence, eval mode).")
    add_arguments(p)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return int(exc.code or 0)
    try:
        return run(args)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"dropcheck check: {exc}", file=sys.stderr)
        return 2
