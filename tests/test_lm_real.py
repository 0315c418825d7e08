"""Real-text language modelling (issue 17): tokenization, corpora, bad input, training steps.

Oracles: tokenizer round-trips and the Shakespeare README's own word counts; the training
directions against autograd on the independent unrolled LSTM of ``tests/test_lstm.py`` (the
same masks) and against central finite differences of the exact regularizers
(:func:`dropcheck.explicit.r_approx_factor`, the oracle's ``R̃_approx``).
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import dropcheck.explicit as ex
from dropcheck.lm import cli as lm_cli
from dropcheck.lm.corpus import (
    EOS,
    UNK,
    Vocabulary,
    builtin_text,
    check_window,
    detokenize,
    load_corpus,
    read_text,
    tokenize,
)
from dropcheck.lm.train import (
    Method,
    direction,
    fit,
    r_approx_grad_probe,
    r_tilde,
    r_tilde_grad,
)
from dropcheck.models.lstm import LSTM
from dropcheck.testing import assert_close
from tests.test_lstm import flat, ref_logits, ref_loss

#: The corpus beside the repository (CI clones the repository next to ``shared/``).
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shakespeare"
needs_shakespeare = pytest.mark.skipif(
    not (SHAKESPEARE / "train.txt.xz").exists(),
    reason=f"the Shakespeare corpus is not at {SHAKESPEARE} (../shared/data/shakespeare beside "
    "the repository)",
)

TEXT = "To be, or not to be: that is the question.\n\nWhether 'tis nobler in the mind\n" \
       "O'er 2 seas -- and 1603 quartos_\n"


# ----- tokenization -----
def test_word_tokens_follow_the_documented_policy():
    """Lower case, words with inner apostrophes, digit runs, one token per mark, <eos> per line."""
    toks = tokenize(TEXT)
    assert toks[:6] == ["to", "be", ",", "or", "not", "to"]
    assert "'tis" not in toks and "tis" in toks and "o'er" in toks
    assert "1603" in toks and "_" in toks
    assert toks.count(EOS) == 3  # the blank line adds nothing


@pytest.mark.parametrize("text", [TEXT, builtin_text()[:20000]])
def test_tokenizers_round_trip(text):
    """Word level: tokenize∘detokenize is the identity on token lists; char level: on text."""
    toks = tokenize(text)
    assert tokenize(detokenize(toks)) == toks
    assert detokenize(tokenize(text, "char"), "char") == text


def test_vocabulary_cap_unk_and_round_trip():
    """The cap keeps <unk>, <eos> and the most frequent tokens (ties alphabetical); encode then
    decode is the identity except that out-of-vocabulary tokens read <unk>."""
    toks = tokenize("b b b a a c d\nb a e\n")
    voc = Vocabulary.build(toks, cap=4)
    assert voc.itos == (UNK, EOS, "b", "a")
    ids = voc.encode(toks)
    assert voc.decode(ids) == [t if t in voc.stoi else UNK for t in toks]
    full = Vocabulary.build(toks, cap=100)
    assert full.decode(full.encode(toks)) == toks  # no cap: exact round trip
    chars = Vocabulary.build(tokenize(TEXT, "char"), cap=1000, level="char")
    assert detokenize(chars.decode(chars.encode(tokenize(TEXT, "char"))), "char") == TEXT


def test_compressed_and_plain_files_read_the_same(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write(TEXT)
    with lzma.open(tmp_path / "a.txt.xz", "wt", encoding="utf-8") as f:
        f.write(TEXT)
    assert {read_text(tmp_path / n) for n in ("a.txt", "a.txt.gz", "a.txt.xz")} == {TEXT}


def test_builtin_corpus_splits_in_order_and_counts_unk():
    """The default corpus: contiguous splits of one token stream, the vocabulary from train."""
    c = load_corpus(None, vocab_size=500)
    toks = tokenize(builtin_text())
    n = len(toks)
    assert (c.train.size, c.valid.size, c.test.size) == (int(0.9 * n), int(0.95 * n)
                                                         - int(0.9 * n), n - int(0.95 * n))
    assert c.vocab_size == 500
    assert c.vocab.decode(c.train[:50]) == [t if t in c.vocab.stoi else UNK for t in toks[:50]]
    assert 0.0 < c.unk_rate("valid") < 1.0


@needs_shakespeare
def test_shakespeare_folder_matches_its_readme():
    """Whitespace-split word counts of the three splits are the README's (816,726 / 49,034 /
    39,258); with a 10k cap the vocabulary is full and <unk> is a minority."""
    counts = [len(read_text(SHAKESPEARE / f"{s}.txt.xz").split())
              for s in ("train", "valid", "test")]
    assert counts == [816726, 49034, 39258]
    c = load_corpus(SHAKESPEARE, vocab_size=10000, max_train_tokens=200000)
    assert c.vocab_size == 10000 and c.train.size == 200000
    assert 0.0 < c.unk_rate("valid") < 0.2


# ----- bad input -----
def test_bad_corpus_input_names_argument_and_value(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"vocab_size.*got 0"):
        load_corpus(None, vocab_size=0)
    with pytest.raises(ValueError, match=r"cap must be at least 3.*got 2"):
        Vocabulary.build(["a"], cap=2)
    with pytest.raises(ValueError, match=r"bptt = 35 with batch = 4 needs at least 144"):
        check_window(100, 4, 35)
    np.save(tmp_path / "ids.npy", np.array([0, 3, 9, 2] * 10))
    with pytest.raises(ValueError, match=r"token id 9 is outside the vocabulary \[0, 5\)"):
        load_corpus(tmp_path / "ids.npy", vocab_size=5)
    with pytest.raises(ValueError, match="level must be one of"):
        tokenize("a", "byte")


def test_cli_reports_bad_corpus_input(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert lm_cli.cli(["--corpus", str(tmp_path / "empty.txt")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert lm_cli.cli(["--corpus", "builtin", "--vocab", "0"]) == 2
    assert "got 0" in capsys.readouterr().err
    assert lm_cli.cli(["--corpus", "builtin", "--bptt", "100000", "--no-progress"]) == 2
    assert "shorter than one bptt window" in capsys.readouterr().err
    (tmp_path / "ids.txt").write_text("0 1 2 3 7 " * 100)
    assert lm_cli.cli(["--tokens", str(tmp_path / "ids.txt"), "--vocab", "5"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err


def test_cli_runs_on_the_builtin_corpus(capsys):
    assert lm_cli.cli(["--corpus", "builtin", "--vocab", "300", "--hidden", "8", "--emb", "8",
                       "--batch", "4", "--bptt", "10", "--max-windows", "2",
                       "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pydoc_data.topics" in out and "vocabulary 300" in out


# ----- training directions against autograd / finite differences -----
V, E, H, N, T = 7, 4, 5, 3, 4
Q = {"emb": 0.3, "h1": 0.2, "out": 0.4}


def _tiny(mask="locked"):
    rng = np.random.default_rng(5)
    m = LSTM.random(V, E, H, 2, mask=mask, seed=3, scale=2.0)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    return m, x, y


def _oracle_grad(m, x, y, noise=None):
    """∇ of the per-token mean loss by autograd on the unrolled oracle (one noise draw)."""
    p = {k: np.asarray(v) for k, v in m.params.items()}

    def loss(pp):
        return sum(ref_loss(ref_logits(pp, x[i], 2, mask=m.mask,
                                       noise={s: e[i] for s, e in (noise or {}).items()}), y[i])
                   for i in range(N)) / x.size

    return flat(autograd.grad(loss)(p), list(p))


@pytest.mark.parametrize("mask", ["locked", "per_step"])
@pytest.mark.parametrize("k", [1, 3])
def test_dropout_k_direction_is_autograd_with_the_same_masks(mask, k):
    """DROPOUT_k's direction is the mean over its k masks of the oracle's gradient under each
    mask (masks re-drawn from the same seed; float64, same sums in another order: rtol 1e-10)."""
    m, x, y = _tiny(mask)
    got = direction(m, x, y, Method("dropout", k), Q, np.random.default_rng(11))
    noise = m.sample_noise_for(np.random.default_rng(11), x, Q, draws=k)
    want = np.mean([_oracle_grad(m, x, y, {s: np.asarray(e[j]) for s, e in noise.items()})
                    for j in range(k)], axis=0)
    assert_close(got, want, rtol=1e-10, atol=1e-14)
    plain = direction(m, x, y, Method("no_dropout"), Q, None)
    assert_close(plain, _oracle_grad(m, x, y), rtol=1e-10, atol=1e-14)


def _fd(f, m, u, h=1e-5):
    """Central difference of ``f(model)`` along the flat parameter direction ``u``.

    Truncation O(h² f''') ≈ 1e-10 relative for these O(1) smooth functions; rounding
    O(eps·|f|/h) ≈ 1e-11: agreement to ~1e-7 relative is what float64 allows.
    """
    w = m.flatten_params()
    fp = f(m.with_params(m.unflatten_params(w + h * u)))
    fm = f(m.with_params(m.unflatten_params(w - h * u)))
    return (float(fp) - float(fm)) / (2 * h)


@pytest.mark.parametrize("mask", ["locked", "per_step"])
def test_r_approx_gradient_with_unit_probes_is_the_derivative_of_exact_r_approx(mask):
    """Unit noise directions, one site at a time, make the probe estimator exact: its dot with
    a random direction equals the central difference of Σ strength·R_approx from
    dc.explicit.r_approx_factor (an exact H_out factor route, no gradient code shared)."""
    m, x, y = _tiny(mask)
    u = np.random.default_rng(2).standard_normal(m.n_params)
    total = 0.0
    for s in m.site_names:
        d = m.widths[s]
        shape = m.noise_shape_for(s, x, 1)[1:]  # (n, d) or (n, T, d)
        dirs = np.zeros((int(np.prod(shape)), *shape))
        dirs.reshape(dirs.shape[0], -1)[np.arange(dirs.shape[0]), np.arange(dirs.shape[0])] = 1
        if mask == "locked":  # a unit per sequence and unit: directions (n·d, n, d)
            assert dirs.shape[-1] == d
        grad = r_approx_grad_probe(m, x, y, Q, None, directions={
            s: np.sqrt(ex.strength(Q[s])) * dirs}) * dirs.shape[0]
        total = total + grad
    got = float(total @ u)
    want = _fd(lambda mm: np.sum(ex.r_approx_factor(mm, x, y, q=Q, form=mask)), m, u)
    assert got == pytest.approx(want, rel=1e-6)


def test_r_approx_probe_gradient_is_unbiased():
    """Rademacher probes: the mean of 4000 one-probe estimates (projected on a direction) lies
    within 4 standard errors of the exact derivative (false alarm 6e-5, seeded); a probe
    missing a site or a factor 2 would sit tens of standard errors away."""
    m, x, y = _tiny()
    u = np.random.default_rng(4).standard_normal(m.n_params)
    est = np.asarray(r_approx_grad_probe(m, x, y, Q, np.random.default_rng(9), 4000,
                                         per_probe=True)) @ u
    want = _fd(lambda mm: np.sum(ex.r_approx_factor(mm, x, y, q=Q)), m, u)
    se = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - want) < 4 * se


def test_r_tilde_and_its_gradient_against_the_oracle():
    """R̃_approx (5.1) = Σ strength·‖∂ℓ_y/∂η‖² with ∂ℓ_y/∂η by autograd on the oracle (locked
    masks: one η per sequence); its gradient against central differences of that value."""
    m, x, y = _tiny()
    p = {k: np.asarray(v) for k, v in m.params.items()}
    want = 0.0
    for i in range(N):
        for s in m.site_names:
            a = autograd.grad(lambda e, i=i, s=s: ref_loss(
                ref_logits(p, x[i], 2, noise={s: e}), y[i]))(anp.zeros(m.widths[s]))
            want += ex.strength(Q[s]) * float(np.sum(a * a))
    assert float(r_tilde(m, x, y, Q)) == pytest.approx(want, rel=1e-10)
    u = np.random.default_rng(6).standard_normal(m.n_params)
    got = float(r_tilde_grad(m, x, y, Q) @ u)
    assert got == pytest.approx(_fd(lambda mm: r_tilde(mm, x, y, Q), m, u), rel=1e-6)


def test_seeded_quick_fit_is_deterministic():
    """Two seeded runs (masks, ξ noise, probes from one generator) give identical curves."""
    c = load_corpus(None, vocab_size=60, max_train_tokens=1200)
    runs = []
    for _ in range(2):
        m = LSTM.random(c.vocab_size, 8, 8, 1, seed=1)
        h = fit(m, c.train, c.valid, Method("r_approx+xi_approx"), {"emb": 0.3, "out": 0.3},
                steps=6, batch=4, bptt=8, eval_every=3, eval_tokens=400, seed=7)
        runs.append(h)
    assert runs[0].valid_loss == runs[1].valid_loss
    assert runs[0].train_loss[1:] == runs[1].train_loss[1:]
    assert runs[0].steps == [0, 3, 6]
    assert np.array_equal(runs[0].final.flatten_params(), runs[1].final.flatten_params())


def test_digit_claims_skip_cleanly_without_scikit_learn(monkeypatch):
    """Without the [data] extra the digits claims report a skip (no import error, no verdict)."""
    from dropcheck.verification import experiments_real as xr
    from dropcheck.verification._registry import Context

    monkeypatch.setattr(xr, "_have_sklearn", lambda: False)
    for fn in (xr.measure_x1d, xr.measure_x2d, xr.measure_x3d, xr.measure_x4d):
        m = fn(Context(quick=True))
        assert m.passed is None and m.figure.startswith("skipped: scikit-learn")


def test_token_id_corpus_and_character_level(tmp_path, capsys):
    """A token-id file is cut 90/5/5 in order with its ids kept; character level round-trips
    the built-in text through its vocabulary (every character of it seen in train or <unk>)."""
    ids = np.arange(2000) % 37
    np.save(tmp_path / "ids.npy", ids)
    c = load_corpus(tmp_path / "ids.npy", vocab_size=37)
    assert c.vocab is None and c.vocab_size == 37
    assert np.array_equal(np.concatenate([c.train, c.valid, c.test]), ids)
    assert lm_cli.cli(["--corpus", str(tmp_path / "ids.npy"), "--vocab", "37", "--hidden", "4",
                       "--emb", "4", "--batch", "2", "--bptt", "5", "--max-windows", "1",
                       "--no-progress"]) == 0
    assert "token ids" in capsys.readouterr().out
    ch = load_corpus(None, level="char", vocab_size=1000)
    text = "".join(ch.vocab.decode(ch.train[:500]))
    assert text == builtin_text()[:500]
