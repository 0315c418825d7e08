"""``dropcheck lstm-eval``: the command line of :func:`dropcheck.lm.evaluate_corpus`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from dropcheck.lm.evaluate import SIZES, evaluate_corpus, format_report
from dropcheck.lm.train import train
from dropcheck.models.lstm import LSTM, MASKS

__all__ = ["cli"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dropcheck lstm-eval",
        description="Dropout's explicit (strength·R̂_approx, Monte-Carlo R_drop) and implicit "
        "(ξ_approx) regularizers of an LSTM language model over a corpus, per token.",
    )
    c = p.add_argument_group("corpus")
    c.add_argument("--tokens", metavar="PATH", help="token ids: .npy (1-D integer array) or text "
                   "of whitespace-separated integer ids; default: the built-in demo corpus")
    c.add_argument("--corpus", metavar="PATH", help="real text: a file (plain, .gz or .xz), a "
                   "folder with train/valid/test files (e.g. PTB's ptb.*.txt), a token-id file, "
                   "or 'builtin' (Python's documentation prose, pydoc_data.topics); tokenized "
                   "by --level with the vocabulary capped at --vocab (default 10000, <unk> for "
                   "the rest; docs/experiments.md). --train uses the train split, the "
                   "evaluation the valid split")
    c.add_argument("--level", choices=("word", "char"), default="word",
                   help="tokenization of --corpus (default word)")
    c.add_argument("--demo-tokens", type=int, metavar="N",
                   help="length of the demo corpus (default: 20 tokens per vocabulary entry)")
    c.add_argument("--vocab", type=int, help="vocabulary size (default: the size preset's, or "
                   "max id + 1 of --tokens)")
    m = p.add_argument_group("model (random-initialized unless --params)")
    m.add_argument("--size", choices=tuple(SIZES), default="small",
                   help="small (CPU) or awd (AWD-LSTM: 3 layers 1150/1150/400, emb 400, tied)")
    m.add_argument("--emb", type=int, help="embedding size (overrides --size)")
    m.add_argument("--hidden", help="comma-separated hidden sizes, e.g. 1150,1150,400")
    m.add_argument("--tie", action=argparse.BooleanOptionalAction, default=None,
                   help="tie the decoder to the embedding")
    m.add_argument("--params", metavar="NPZ", help="weights: .npz with E, W1, U1, b1, …, [D], bD")
    m.add_argument("--train", type=int, default=0, metavar="STEPS",
                   help="first train STEPS Adam steps with the dropout below on the first 80%% "
                   "of the corpus, then evaluate on the last 20%% (default 0: no training)")
    m.add_argument("--lr", type=float, default=1e-2, help="Adam step size of --train")
    m.add_argument("--mask", choices=MASKS, default="locked", help="dropout masks (default "
                   "locked: one per sequence, as AWD-LSTM)")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    m.add_argument("--backend", choices=("numpy", "cupy", "torch"), default="numpy",
                   help="array namespace of the weights and every sweep (torch: CPU tensors)")
    m.add_argument("--seed", type=int, default=0, help="seed of weights, corpus and sampling")
    d = p.add_argument_group("dropout (AWD-LSTM's defaults; q = 0 removes a site)")
    d.add_argument("--q", type=float, help="one drop probability for every site")
    d.add_argument("--q-emb", type=float, default=0.4, help="embedding output (dropouti)")
    d.add_argument("--q-hidden", type=float, default=0.25, help="between layers (dropouth)")
    d.add_argument("--q-out", type=float, default=0.4, help="before the decoder (dropout)")
    d.add_argument("--q-weight", type=float, default=0.0,
                   help="DropConnect on U_l (wdrop), a fixed mask per window (default off)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--bptt", type=int, help="window length (default from --size)")
    e.add_argument("--batch", type=int, help="sequences per window (default from --size)")
    e.add_argument("--samples", type=int, default=2, help="label samples per window (>= 2)")
    e.add_argument("--mc", type=int, default=0, metavar="N",
                   help="Monte-Carlo R_drop with N mask draws per window (0: off)")
    e.add_argument("--xi", type=int, default=0, metavar="N", help="ξ_approx draws per window")
    e.add_argument("--xi-drop", type=int, default=0, metavar="N",
                   help="ξ̃_drop pairs per window (compare with ξ_approx)")
    e.add_argument("--max-windows", type=int, help="stop after this many windows")
    e.add_argument("--chunk", type=int, default=2, help="label samples per backward pass")
    e.add_argument("--json", metavar="PATH", help="write the report as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _namespace(backend: str) -> Any:
    if backend == "cupy":
        try:
            import cupy  # noqa: F401
            from array_api_compat import cupy as xcp
        except ImportError:
            raise ValueError("--backend cupy needs cupy and a CUDA device (pip install -e "
                             "'.[gpu-cuda12]' or '.[gpu-cuda13]', docs/gpu.md)") from None
        return xcp
    if backend == "torch":
        try:
            import torch  # noqa: F401
            from array_api_compat import torch as xtorch
        except ImportError:
            raise ValueError("--backend torch needs torch (pip install -e '.[torch]')") from None
        return xtorch
    from array_api_compat import numpy as xnp

    return xnp


def _build(args: argparse.Namespace) -> tuple[LSTM, Any, str, dict[str, float]]:
    """The model, the corpus, a line describing them and the drop probability per site."""
    import numpy as np

    from dropcheck.lm.corpus import check_window, load_corpus, load_tokens, markov_corpus

    size = dict(SIZES[args.size])
    if args.corpus and args.tokens:
        raise ValueError("give either --corpus or --tokens, not both")
    if args.corpus:
        corpus = load_corpus(None if args.corpus == "builtin" else args.corpus,
                             level=args.level, vocab_size=10000 if args.vocab is None
                             else args.vocab)
        vocab = corpus.vocab_size
        what = f"corpus {corpus.describe()}"
    elif args.tokens:
        tokens = load_tokens(args.tokens, args.vocab)
        vocab = args.vocab or int(tokens.max()) + 1
        what = f"corpus {args.tokens}"
    else:
        vocab = args.vocab or size["vocab"]
        n = args.demo_tokens or 20 * vocab
        tokens, lang = markov_corpus(n, vocab, seed=args.seed)
        what = (f"demo corpus: synthetic Markov language, {n} tokens, vocabulary {vocab}, "
                f"entropy rate {lang.entropy_rate:.4f} nats/token (a perfect model's loss)")
    q = {"emb": args.q_emb, "hidden": args.q_hidden, "out": args.q_out}
    if args.q is not None:
        q = dict.fromkeys(q, args.q)
    xp = _namespace(args.backend)
    dtype = getattr(xp, args.dtype)
    hidden = [int(h) for h in args.hidden.split(",")] if args.hidden else size["hidden"]
    names = LSTM.all_site_names(len(hidden))
    qd = {s: q["emb"] if s == "emb" else q["out"] if s == "out" else q["hidden"] for s in names}
    sites = [s for s in names if qd[s] > 0]
    if not sites:
        raise ValueError("every drop probability is 0: there is no dropout to evaluate")
    if args.params:
        with np.load(args.params) as z:
            params = {k: xp.asarray(z[k].astype(args.dtype)) for k in z.files}
        model = LSTM(params, sites=sites, mask=args.mask)
        what += f"; weights from {args.params}"
    else:
        tie = size["tie"] if args.tie is None else args.tie
        model = LSTM.random(vocab, args.emb or size["emb"], hidden, tie=tie, sites=sites,
                            mask=args.mask, seed=args.seed, dtype=dtype, xp=xp)
        what += "; random-initialized weights (PyTorch/AWD-LSTM init)"
    batch, bptt = args.batch or size["batch"], args.bptt or size["bptt"]
    if args.corpus:
        if args.train:
            check_window(corpus.train.size, batch, bptt, "the train split of --corpus")
            model = train(model, corpus.train, {s: qd[s] for s in sites}, steps=args.train,
                          batch=batch, bptt=bptt, lr=args.lr, seed=args.seed,
                          weight_q=args.q_weight)
            what += (f", then trained {args.train} Adam steps (lr {args.lr}) with dropout on "
                     "the train split")
        tokens = corpus.valid
        what += "; evaluated on the valid split"
        check_window(tokens.size, batch, bptt, "the valid split of --corpus")
    elif args.train:
        cut = int(0.8 * tokens.shape[0])
        check_window(cut, batch, bptt, "the first 80% of the corpus (--train)")
        model = train(model, tokens[:cut], {s: qd[s] for s in sites},
                      steps=args.train, batch=batch, bptt=bptt, lr=args.lr, seed=args.seed,
                      weight_q=args.q_weight)
        tokens = tokens[cut:]
        what += (f", then trained {args.train} Adam steps (lr {args.lr}) with dropout on the "
                 f"first 80% of the corpus; evaluated on the last 20%")
    check_window(tokens.size, batch, bptt, "the evaluated corpus")
    if tokens.max() >= model.vocab:
        raise ValueError(f"token ids out of range: the corpus holds id {int(tokens.max())} >= "
                         f"the model's vocabulary {model.vocab} (--vocab / --params)")
    return model, tokens, what, {s: qd[s] for s in sites}


def cli(argv: Sequence[str] | None = None) -> int:
    """``dropcheck lstm-eval``: evaluate the regularizers over a corpus; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        model, tokens, what, q = _build(args)
        size = SIZES[args.size]
        rep = evaluate_corpus(
            model, tokens, q, batch=args.batch or size["batch"], bptt=args.bptt or size["bptt"],
            samples=args.samples, mc_samples=args.mc, xi_draws=args.xi,
            xi_drop_draws=args.xi_drop, weight_q=args.q_weight, seed=args.seed,
            max_windows=args.max_windows, chunk=args.chunk,
            progress=None if args.no_progress else sys.stderr,
        )
    except (ValueError, TypeError) as exc:
        print(f"dropcheck lstm-eval: {exc}", file=sys.stderr)
        return 2
    rep = {"corpus": what, "model": repr(model), **rep}
    print(what)
    print(repr(model))
    print(format_report(rep))
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(rep, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0
