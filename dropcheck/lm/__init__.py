"""LSTM language models on the site protocol: corpora, brief training, corpus evaluation, CLI.

Outside the core: everything here is written with the generic :mod:`dropcheck.explicit`,
:mod:`dropcheck.implicit` and the site protocol (:class:`~dropcheck.models.lstm.LSTM`'s
context, mask form and per-example reduction; see :mod:`dropcheck.models._base`).

- :mod:`dropcheck.lm.corpus` — :func:`markov_corpus` (the built-in demo language),
  :func:`load_tokens` (user corpora), :func:`windows` (truncated-BPTT windows);
- :mod:`dropcheck.lm.train` — :func:`train`, a brief Adam training with dropout;
- :mod:`dropcheck.lm.evaluate` — :func:`evaluate_corpus`, :func:`format_report`, ``SIZES``;
- :mod:`dropcheck.lm.cli` — ``dropcheck lstm-eval`` (:func:`dropcheck.lm.cli.cli`).
"""

from dropcheck.lm.corpus import MarkovLanguage, load_tokens, markov_corpus, windows
from dropcheck.lm.evaluate import SIZES, evaluate_corpus, format_report
from dropcheck.lm.train import train

__all__ = [
    "MarkovLanguage",
    "markov_corpus",
    "load_tokens",
    "windows",
    "train",
    "evaluate_corpus",
    "format_report",
    "SIZES",
]

