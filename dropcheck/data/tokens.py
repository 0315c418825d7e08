"""Reading a corpus of token ids from a file (host numpy; the caller moves it to a device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_tokens"]


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
