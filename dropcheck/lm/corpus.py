"""Token corpora: the built-in demo language, token files, truncated-BPTT windows.

- :func:`markov_corpus` generates the demo corpus offline (no download, no data file): a
  synthetic language with known structure and a known entropy rate (:class:`MarkovLanguage`,
  :mod:`dropcheck.lm.markov`).
- :func:`load_tokens` reads a user's corpus: a ``.npy`` file holding a 1-D integer array, or a
  text file of whitespace-separated non-negative integer token ids (any line breaks).
- :func:`windows` cuts a stream into AWD-LSTM's truncated-BPTT windows.
- Real text (issue 17): :func:`read_text` (plain, ``.gz``, ``.xz``), :func:`tokenize` (word or
  character level), :class:`Vocabulary` (a frequency-ranked vocabulary with a cap and an
  ``<unk>`` policy), :func:`load_corpus` (a file or a ``train``/``valid``/``test`` folder, or the
  built-in default :func:`builtin_text`) giving a :class:`Corpus` of id streams.

**Word-level tokenization (the project's choice, PTB-like).**  Text is lower-cased; a token is a
run of letters with inner apostrophes (``o'er``, ``'tis`` keeps its leading apostrophe only
inside a word), a run of digits, or one other non-space character (punctuation is kept, one
token per mark); every line break ends a sentence with ``<eos>`` (PTB's convention), blank lines
add nothing.  **Vocabulary cap and ``<unk>``.**  The vocabulary is built from the *training*
split only: ``<unk>`` (id 0) and ``<eos>`` (id 1), then the ``cap − 2`` most frequent tokens
(ties broken alphabetically, so it is deterministic); every other token, in any split, becomes
``<unk>``.  PTB's own preprocessing (Mikolov et al. 2010) uses a 10k cap the same way (and also
maps numbers to ``N`` and drops punctuation, which this tokenizer does not).  **Character
level.**  Every character is a token (line breaks included); the vocabulary is every character
of the training split up to the cap (most frequent first) plus ``<unk>`` (id 0).

**Built-in default.**  :func:`builtin_text` is the English prose of Python's own documentation
shipped in the standard library (``pydoc_data.topics``: 79 topics, about 65k whitespace-split
words, 8.8k distinct, about 120k word-level tokens with punctuation) — always present, no
download.  It is technical prose full of code, so its perplexities are not comparable with PTB's;
it exists so that ``dropcheck lstm-eval`` and the tests run on real text on any machine.

Host numpy in, host numpy out; the caller moves windows to a device.
"""

from __future__ import annotations

import gzip
import lzma
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dropcheck.lm.markov import MarkovLanguage, markov_corpus

__all__ = [
    "MarkovLanguage", "markov_corpus", "load_tokens", "windows", "read_text", "tokenize",
    "Vocabulary", "Corpus", "load_corpus", "builtin_text", "LEVELS", "UNK", "EOS",
]

#: Tokenization levels of :func:`tokenize`.
LEVELS = ("word", "char")
UNK = "<unk>"
EOS = "<eos>"
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+|[^\w\s]|_")


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
    _check_ids(ids, vocab, str(path))
    return ids


def _check_ids(ids: np.ndarray, vocab: int | None, what: str) -> None:
    """Token ids must lie in ``[0, vocab)``; the error names the source and the bad id."""
    if ids.min() < 0:
        raise ValueError(f"{what}: token ids must be non-negative, found {int(ids.min())}")
    if vocab is not None and ids.max() >= vocab:
        raise ValueError(
            f"{what}: token id {int(ids.max())} is outside the vocabulary [0, {vocab}) "
            f"(vocab = {vocab})"
        )


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
    if bptt < 1:
        raise ValueError(f"bptt must be a positive window length, got {bptt}")
    data = tok[: cols * batch].reshape(batch, cols)
    for i in range(0, cols - 1, bptt):
        T = min(bptt, cols - 1 - i)
        yield data[:, i : i + T], data[:, i + 1 : i + 1 + T]


def check_window(n_tokens: int, batch: int, bptt: int, what: str = "corpus") -> None:
    """Raise unless a stream of ``n_tokens`` fills one full window of ``batch × (bptt + 1)``.

    :func:`windows` cuts ``batch`` rows of ``n_tokens // batch`` tokens; one full window needs
    ``bptt`` inputs and their next tokens, ``bptt + 1`` tokens per row.
    """
    need = batch * (bptt + 1)
    if n_tokens < need:
        raise ValueError(
            f"{what} holds {n_tokens} tokens, shorter than one bptt window: bptt = {bptt} with "
            f"batch = {batch} needs at least {need} tokens (lower --bptt or --batch, or use a "
            "longer corpus)"
        )


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``: plain, gzip (``.gz``) or xz/LZMA (``.xz``, ``.lzma``).

    An absent, non-file or empty (whitespace only) file is an error naming the path.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"corpus {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"corpus {str(p)!r} is not a file")
    if p.suffix == ".gz":
        with gzip.open(p, "rt", encoding="utf-8") as f:
            text = f.read()
    elif p.suffix in (".xz", ".lzma"):
        with lzma.open(p, "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"corpus {str(p)!r} is empty (no tokens)")
    return text


def builtin_text() -> str:
    """The built-in real-text default: ``pydoc_data.topics`` (Python's documentation prose).

    The topics in sorted order, joined by blank lines; part of every CPython installation.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def tokenize(text: str, level: str = "word") -> list[str]:
    """Tokens of ``text`` at ``level`` ``"word"`` or ``"char"`` (module docstring).

    ``"word"``: lower-cased words, numbers and punctuation marks, ``<eos>`` at every non-blank
    line's end; ``"char"``: the characters themselves (``"".join(tokens) == text``).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "char":
        return list(text)
    out: list[str] = []
    for line in text.lower().splitlines():
        words = _WORD.findall(line)
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def detokenize(tokens: Iterable[str], level: str = "word") -> str:
    """Inverse of :func:`tokenize` up to spacing: words joined by spaces, ``<eos>`` a line break.

    ``"char"``: the exact text.  ``"word"``: ``tokenize(detokenize(t)) == t`` for any token list
    produced by :func:`tokenize` (the round-trip the tests check).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "char":
        return "".join(tokens)
    lines: list[str] = []
    cur: list[str] = []
    for t in tokens:
        if t == EOS:
            lines.append(" ".join(cur))
            cur = []
        else:
            cur.append(t)
    if cur:
        lines.append(" ".join(cur))
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class Vocabulary:
    """Tokens by id; ``<unk>`` is id 0 (and ``<eos>`` id 1 at word level).

    Build one with :meth:`build` from training tokens; :meth:`encode` maps unknown tokens to
    ``<unk>``, :meth:`decode` maps ids back.
    """

    itos: tuple[str, ...]
    level: str = "word"
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stoi", {t: i for i, t in enumerate(self.itos)})

    @classmethod
    def build(cls, tokens: Sequence[str], cap: int = 10000, level: str = "word") -> Vocabulary:
        """Frequency-ranked vocabulary of at most ``cap`` entries (module docstring's policy)."""
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)):
            raise TypeError(f"vocabulary cap must be an integer, got {cap!r}")
        special = (UNK, EOS) if level == "word" else (UNK,)
        if cap < len(special) + 1:
            raise ValueError(
                f"vocabulary cap must be at least {len(special) + 1} ({' and '.join(special)} "
                f"plus one token), got {cap}"
            )
        counts = Counter(t for t in tokens if t not in special)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        keep = [t for t, _ in ranked[: int(cap) - len(special)]]
        return cls(special + tuple(keep), level)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids ``int64`` of ``tokens``; a token outside the vocabulary becomes ``<unk>`` (0)."""
        get = self.stoi.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` (ids checked to lie in the vocabulary)."""
        a = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if a.size:
            _check_ids(a, len(self), "ids")
        return [self.itos[int(i)] for i in a]


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus: id streams ``train``, ``valid``, ``test`` and their vocabulary."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: Vocabulary | None
    vocab_size: int
    source: str

    def unk_rate(self, split: str = "valid") -> float:
        """Fraction of ``<unk>`` tokens in a split (0 for id corpora without a vocabulary)."""
        if self.vocab is None:
            return 0.0
        a = getattr(self, split)
        return float(np.mean(a == 0)) if a.size else 0.0

    def describe(self) -> str:
        """One line: source, level, vocabulary, split sizes, unknown rate."""
        lvl = self.vocab.level if self.vocab is not None else "token ids"
        return (f"{self.source}: {lvl}, vocabulary {self.vocab_size}, train/valid/test "
                f"{self.train.size}/{self.valid.size}/{self.test.size} tokens, <unk> "
                f"{self.unk_rate('valid'):.1%} of valid")


_SPLITS = ("train", "valid", "test")


def _split_files(folder: Path) -> dict[str, Path]:
    """The ``train``/``valid``/``test`` files of a folder (``ptb.train.txt``, ``train.txt.xz``)."""
    out: dict[str, Path] = {}
    for split in _SPLITS:
        found = sorted(f for f in folder.iterdir()
                       if f.is_file() and split in f.name and not f.name.lower().endswith(".md"))
        if len(found) != 1:
            raise ValueError(
                f"corpus folder {str(folder)!r} must hold exactly one file whose name contains "
                f"{split!r} (e.g. {split}.txt, ptb.{split}.txt, {split}.txt.xz); found "
                f"{[f.name for f in found]}"
            )
        out[split] = found[0]
    return out


def _is_ids(path: Path) -> bool:
    """A ``.npy`` file, or text whose first 1000 whitespace-split words are all integers."""
    if path.suffix == ".npy":
        return True
    head = read_text(path).split(maxsplit=1000)[:1000]
    return all(w.lstrip("-").isdigit() for w in head)


def load_corpus(
    path: str | Path | None = None,
    *,
    level: str = "word",
    vocab_size: int = 10000,
    split: tuple[float, float] = (0.9, 0.05),
    max_train_tokens: int | None = None,
) -> Corpus:
    """Load and tokenize a corpus (module docstring for the tokenization and ``<unk>`` policy).

    ``path``: a folder with ``train``/``valid``/``test`` files (PTB's ``ptb.*.txt``, the
    Shakespeare ``*.txt.xz``); one text file (plain, ``.gz``, ``.xz``), cut in order into
    ``split`` = (train, valid) fractions and the rest test; a token-id file (``.npy`` or text of
    integers, :func:`load_tokens`), cut the same way, whose vocabulary is ``vocab_size`` (ids
    checked to lie below it); None: :func:`builtin_text`.  ``max_train_tokens`` keeps the first
    tokens of the train split (the vocabulary is built from those).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size (the vocabulary cap) must be positive, got {vocab_size}")
    if max_train_tokens is not None and max_train_tokens < 2:
        raise ValueError(f"max_train_tokens must be at least 2, got {max_train_tokens}")
    if path is None:
        texts = _cut_text(tokenize(builtin_text(), level), split)
        source = "built-in text (pydoc_data.topics)"
    else:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"corpus {str(p)!r} does not exist")
        source = str(p)
        if p.is_dir():
            files = _split_files(p)
            texts = [tokenize(read_text(files[s]), level) for s in _SPLITS]
        elif _is_ids(p):
            ids = load_tokens(p, vocab_size)
            parts = _cut_ids(ids, split)
            if max_train_tokens is not None:
                parts[0] = parts[0][:max_train_tokens]
            return Corpus(parts[0], parts[1], parts[2], vocab=None,
                          vocab_size=int(vocab_size), source=source)
        else:
            texts = _cut_text(tokenize(read_text(p), level), split)
    if max_train_tokens is not None:
        texts[0] = texts[0][:max_train_tokens]
    if not texts[0]:
        raise ValueError(f"corpus {source!r}: the train split holds no tokens")
    voc = Vocabulary.build(texts[0], vocab_size, level)
    tr, va, te = (voc.encode(t) for t in texts)
    return Corpus(tr, va, te, vocab=voc, vocab_size=len(voc), source=source)


def _check_split(split: tuple[float, float]) -> tuple[float, float]:
    a, b = (float(v) for v in split)
    if not (0 < a < 1 and 0 < b < 1 and a + b < 1):
        raise ValueError(f"split must be (train, valid) fractions in (0, 1) summing below 1, "
                         f"got {split}")
    return a, b


def _cut_text(tokens: list[str], split: tuple[float, float]) -> list[list[str]]:
    a, b = _check_split(split)
    n = len(tokens)
    i, j = int(a * n), int((a + b) * n)
    return [tokens[:i], tokens[i:j], tokens[j:]]


def _cut_ids(ids: np.ndarray, split: tuple[float, float]) -> list[np.ndarray]:
    a, b = _check_split(split)
    n = ids.shape[0]
    i, j = int(a * n), int((a + b) * n)
    return [ids[:i], ids[i:j], ids[j:]]
