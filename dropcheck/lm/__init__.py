"""LSTM language models on the site protocol: corpora, brief training, corpus evaluation, CLI.

Outside the core: everything here is written with the generic :mod:`dropcheck.explicit`,
:mod:`dropcheck.implicit` and the site protocol (:class:`~dropcheck.models.lstm.LSTM`'s
context, mask form and per-example reduction; see :mod:`dropcheck.models._base`).

- :mod:`dropcheck.lm.corpus` — :func:`markov_corpus` (the built-in demo language),
  :func:`load_tokens` (user corpora), :func:`windows` (truncated-BPTT windows); real text:
  :func:`load_corpus` (word or character level, vocabulary cap, ``<unk>``; a file, a
  train/valid/test folder, or the built-in :func:`builtin_text`), :class:`Vocabulary`;
- :mod:`dropcheck.lm.train` — :func:`train`, a brief Adam training with dropout; :func:`fit`,
  SGD training with the paper's procedures (:class:`Method`: DROPOUT_k, noise injection,
  Alg. 2 with ``R_approx`` / ``R̃_approx`` and ``ξ_approx``, ℓ2) and validation curves;
- :mod:`dropcheck.lm.evaluate` — :func:`evaluate_corpus`, :func:`format_report`, ``SIZES``;
- :mod:`dropcheck.lm.cli` — ``dropcheck lstm-eval`` (:func:`dropcheck.lm.cli.cli`).
"""

from dropcheck.lm.corpus import (
    Corpus,
    MarkovLanguage,
    Vocabulary,
    builtin_text,
    load_corpus,
    load_tokens,
    markov_corpus,
    windows,
)
from dropcheck.lm.evaluate import SIZES, evaluate_corpus, format_report
from dropcheck.lm.train import Method, fit, train

__all__ = [
    "MarkovLanguage",
    "markov_corpus",
    "load_tokens",
    "windows",
    "load_corpus",
    "builtin_text",
    "Vocabulary",
    "Corpus",
    "train",
    "fit",
    "Method",
    "evaluate_corpus",
    "format_report",
    "SIZES",
]

