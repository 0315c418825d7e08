"""Deprecated alias of :mod:`dropcheck.lm.corpus` (the corpora moved out of the core).

``from dropcheck.data import markov_corpus, load_tokens`` keeps working and warns once with a
:class:`DeprecationWarning`; import them from :mod:`dropcheck.lm` instead.
"""

import warnings

from dropcheck.lm.corpus import MarkovLanguage, load_tokens, markov_corpus

__all__ = ["MarkovLanguage", "markov_corpus", "load_tokens"]

warnings.warn(
    "dropcheck.data moved to dropcheck.lm (dropcheck.lm.corpus); import markov_corpus and "
    "load_tokens from there",
    DeprecationWarning,
    stacklevel=2,
)
