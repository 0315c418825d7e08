"""Token corpora: the built-in demo language, token files, truncated-BPTT windows.

- :func:`markov_corpus` generates the demo corpus offline (no download, no data file): a
  synthetic language with known structure and a known entropy rate (:class:`MarkovLanguage`,
  :mod:`dropcheck.lm.markov`).
- :func:`load_tokens` reads a user's corpus: a ``.npy`` file holding a 1-D integer array, or a
  text file of whitespace-separated non-negative integer token ids (any line breaks).
- :func:`windows` cuts a stream into AWD-LSTM's truncated-BPTT windows.

Host numpy in, host numpy out; the caller moves windows to a device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dropcheck.lm.markov import MarkovLanguage, markov_corpus

__all__ = ["MarkovLanguage", "markov_corpus", "load_tokens", "windows"]


def load_tokens(path: str | Path, vocab: int | None = None) -> np.ndarray:
    """Token ids of a corpus as a 1-D ``int64`` array.

    Formats: ``*.npy`` — a 1-D array of integers (``np.save``); anything else — text holding
    whitespace-separated non-negative integer ids (spaces, tabs or newlines; one document after
    another is just one stream).  The ids are checked to be integers in ``[0, vocab)`` (``vocab``
    defaults to ``max id + 1``).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"token file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(
                f"{path}: a .npy corpus must hold a 1-D integer array, got {arr.dtype} {arr.shape}"
            )
        ids = arr.astype(np.int64)
    else:
        text = path.read_text()
        words = text.split()
        try:
            ids = np.array([int(w) for w in words], dtype=np.int64)
        except ValueError:
            bad = next(w for w in words if not w.lstrip("-").isdigit())
            raise ValueError(
                f"{path}: a text corpus must hold whitespace-separated integer token ids; found "
                f"{bad[:40]!r} (tokenize your text first, or save a 1-D integer array as .npy)"
            ) from None
    if ids.size < 2:
        raise ValueError(f"{path}: a corpus needs at least 2 tokens, got {ids.size}")
    if ids.min() < 0:
        raise ValueError(f"{path}: token ids must be non-negative, found {int(ids.min())}")
    if vocab is not None and ids.max() >= vocab:
        raise ValueError(
            f"{path}: token id {int(ids.max())} is outside the vocabulary [0, {vocab})"
        )
    return ids


def windows(tokens: Any, batch: int, bptt: int) -> Iterator[tuple[Any, Any]]:
    """Truncated-BPTT windows of a token stream (AWD-LSTM's ``batchify`` + ``get_batch``).

    The stream is cut into ``batch`` contiguous rows of ``N // batch`` tokens (the remainder is
    dropped); windows of ``bptt`` columns give inputs ``x`` ``(batch, T)`` and next-token
    targets ``y`` (the last window may be shorter).
    """
    tok = np.asarray(tokens)
    cols = tok.shape[0] // batch
    if cols < 2:
        raise ValueError(f"{tok.shape[0]} tokens are too few for batch = {batch} rows")
    data = tok[: cols * batch].reshape(batch, cols)
    for i in range(0, cols - 1, bptt):
        T = min(bptt, cols - 1 - i)
        yield data[:, i : i + T], data[:, i + 1 : i + 1 + T]
