"""Token corpora for :mod:`dropcheck.lstm_eval`: the built-in demo language and token files.

- :func:`markov_corpus` generates the demo corpus offline (no download, no data file): a
  synthetic language with known structure and a known entropy rate (:class:`MarkovLanguage`).
- :func:`load_tokens` reads a user's corpus: a ``.npy`` file holding a 1-D integer array, or a
  text file of whitespace-separated non-negative integer token ids (any line breaks).
"""

from dropcheck.data.markov import MarkovLanguage, markov_corpus
from dropcheck.data.tokens import load_tokens

__all__ = ["MarkovLanguage", "markov_corpus", "load_tokens"]
