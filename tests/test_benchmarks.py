"""The benchmarks' baselines compute the same numbers as dropcheck (so a fast wrong answer cannot
win), and the harness runs end to end at tiny sizes.  No timing is asserted anywhere.

Tolerances: baseline and dropcheck sum the same ≤ 2^10 float64 terms of O(1) in different
orders (rtol 1e-12, see tests/test_fastenum.py); the torch.func and dropcheck regularizers are
the same few hundred float64 products and sums in different orders (rtol 1e-10).
"""

import io
import json

import numpy as np
import pytest
from dropcheck.benchmarks import _baselines as B
from dropcheck.benchmarks._harness import (
    Row,
    compare,
    count_log_elements,
    log_yardstick,
    peak_bytes,
)
from dropcheck.benchmarks.run import _markdown, _rich_table, _table, _targets, main

import dropcheck as dc
from dropcheck.testing import assert_close


def _mlp(sizes, act, seed=0):
    net = dc.MLP.random(sizes, activation=act, sites="h1", seed=seed)
    L = len(sizes) - 1
    return net, [net.params[f"W{i}"] for i in range(1, L + 1)], \
        [net.params[f"b{i}"] for i in range(1, L + 1)]


@pytest.mark.parametrize("sizes, act", [([5, 7, 4], "tanh"), ([5, 6, 5, 3], "tanh"),
                                        ([5, 6, 5, 3], "relu"), ([4, 5, 6, 5, 3], "sigmoid")])
def test_naive_enumeration_baseline_matches_dropcheck(sizes, act):
    net, Ws, bs = _mlp(sizes, act)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, sizes[0]))
    y = rng.integers(0, sizes[-1], 3)
    ref = dc.exact.expected_loss(net, x, y, 0.3, method="batched")
    for chunk in (4, 2**14):
        got = B.naive_expected_loss(Ws, bs, act, 1, x, y, 0.3, chunk=chunk)
        assert_close(got, ref, rtol=1e-12, atol=1e-13)
    assert_close(dc.exact.expected_loss(net, x, y, 0.3), ref, rtol=1e-12, atol=1e-13)


def test_naive_prefix_is_a_partial_sum():
    net, Ws, bs = _mlp([5, 6, 3], "tanh")
    x = np.random.default_rng(2).standard_normal((2, 5))
    y = np.array([0, 2])
    full = B.naive_expected_loss(Ws, bs, "tanh", 1, x, y, 0.5, chunk=8)
    halves = B.naive_expected_loss(Ws, bs, "tanh", 1, x, y, 0.5, chunk=8, max_chunks=4)
    assert np.all(halves < full)  # losses are positive: a prefix sums fewer terms


# torch's first forward-mode call loads decompositions through torch.jit.script, which warns
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_func_baselines_match_dropcheck():
    torch = pytest.importorskip("torch")
    explicit = pytest.importorskip("dropcheck.explicit")
    if not all(hasattr(explicit, f) for f in ("r_approx", "taylor")):
        pytest.skip("dropcheck.explicit lacks r_approx / taylor")
    net = dc.MLP.random([5, 6, 4, 3], activation="tanh", sites=("h1", "h2"), seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    y = rng.integers(0, 3, 4)
    Ws, bs = B.torch_mlp_params([net.params[f"W{i}"] for i in (1, 2, 3)],
                                [net.params[f"b{i}"] for i in (1, 2, 3)])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    assert_close(B.torch_r_approx(Ws, bs, "tanh", (1, 2), xt).numpy(),
                 np.asarray(explicit.r_approx(net, x, y)), rtol=1e-10, atol=1e-15)
    assert_close(B.torch_r_taylor(Ws, bs, "tanh", (1, 2), xt, yt, 0.3).numpy(),
                 np.asarray(explicit.taylor(net, x, y, 0.3)), rtol=1e-10, atol=1e-15)
    # the plain step's gradient is the mean of dropcheck's per-example gradients
    grads = B.torch_forward_backward(Ws, bs, "tanh", xt, yt)
    tr = net.trace(x)
    _, g = net.backward(tr, net.loss.grad(tr.logits, y)[None, ...], params=True)
    flat = np.concatenate([grads[0].numpy().ravel(), grads[3].numpy().ravel(),
                           grads[1].numpy().ravel(), grads[4].numpy().ravel(),
                           grads[2].numpy().ravel(), grads[5].numpy().ravel()])
    assert_close(flat, np.asarray(g[0, 0]).mean(0), rtol=1e-12, atol=1e-15)


def test_harness_pieces():
    calls = []
    t = compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
    assert calls[:2] == ["a", "b"] and calls[2:4] == ["a", "b"] and calls[4:6] == ["b", "a"]
    assert peak_bytes(lambda: np.ones(2**16)) >= 8 * 2**16
    logs = {"of_its_logs": 0.6, "masks_per_log": 5.0, "of_log_per_mask": 2.0}
    rows = [Row("enumeration", f"decoder site, width {d} (factorized)", 1.0, 60.0, 60.0,
                dict(logs)) for d in (16, 24)]
    verdicts = {d: v for d, v, _ in _targets(rows)}
    assert verdicts["≥ 50× the batched baseline at width 24"] == "met"
    assert verdicts["within 2× of the logs it performs (≥ 0.5)"] == "met"
    assert "not run" in verdicts.values()
    # every row is judged: one row below the yardstick misses the target, whichever width
    rows[0].extra["of_its_logs"] = 0.4
    verdicts = {d: v for d, v, _ in _targets(rows)}
    assert verdicts["within 2× of the logs it performs (≥ 0.5)"] == "missed"
    assert verdicts["≥ 50× the batched baseline at width 24"] == "met"


def test_log_counter_counts_elements_and_restores_numpy():
    import array_api_compat.numpy as xnp

    a = np.full((3, 5), 2.0)

    def work():
        np.log(a)
        xnp.log(a[0])
        np.log1p(a)
        np.log2(a)  # not a log the engines use: not counted
        return np.exp(a)

    assert count_log_elements(work) == 15 + 5 + 15
    assert np.log is xnp.log and isinstance(np.log, np.ufunc)  # restored
    assert np.log1p is xnp.log1p and isinstance(np.log1p, np.ufunc)
    # the yardstick performs exactly the logs it is asked for (whole chunks and a remainder)
    for n in (1, 7, 2**13, 2**13 * 3 + 11):
        assert count_log_elements(log_yardstick(n)) == n


def test_log_counter_sees_the_factorized_folding():
    # independent count: one log per mask for the engine that evaluates a softmax per mask
    # (method="batched": n · 2^d masks, each a log1p of its softmax sum), fewer when masks
    # are folded
    net = dc.MLP.random([5, 10, 3], activation="tanh", sites="h1", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 5))
    y = np.array([0, 2])
    masks = 2 * 2**10
    assert count_log_elements(lambda: dc.exact.expected_loss(net, x, y, 0.5,
                                                             method="batched")) >= masks
    assert 0 < count_log_elements(lambda: dc.exact.expected_loss(net, x, y, 0.5)) < masks


def test_rich_and_markdown_tables_show_the_same_cells():
    from rich.console import Console

    rows = [Row("explicit", "exact R_approx, MLP [32, 64, 64, 10], n = 32", 1e-3, 3e-3, 3.0,
                {"max_abs_diff": 2e-16})]
    md = "\n".join(_table(rows, "explicit"))
    assert "**3.00×**" in md and "[32, 64, 64, 10]" in md
    con = Console(record=True, width=200, file=io.StringIO())
    con.print(_rich_table(rows, "explicit", "title"))
    text = con.export_text()
    for cell in ("exact R_approx, MLP [32, 64, 64, 10], n = 32", "1 ms", "3 ms", "3.00×",
                 "2.0e-16"):
        assert cell in text and cell in md
    assert _rich_table(rows, "sampled", "t") is None


def test_bench_smoke_run_writes_json_and_markdown(tmp_path, capsys):
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["--smoke", "--only", "enumeration,import", "--json", str(js),
                 "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    # not a terminal: plain text (the Markdown tables), no box drawing, no progress bar
    assert "| case |" in out and "targets:" in out and "━" not in out and "┃" not in out
    data = json.loads(js.read_text())
    imp = [r for r in data["rows"] if r["bench"] == "import"]
    assert len(imp) == 1 and imp[0]["extra"]["heavy_loaded"] == []
    assert imp[0]["extra"]["over_numpy"] > 0
    assert {t["target"]: t["verdict"] for t in data["targets"]}[
        "import dropcheck loads no hypothesis, scipy.stats, sympy, matplotlib"] == "met"
    enum = [r for r in data["rows"] if r["bench"] == "enumeration" and "logs_performed" in
            r["extra"]]
    assert enum and all(r["extra"]["logs_performed"] >= 1 for r in enum)
    assert data["machine"]["cores"] >= 1 and data["rows"]
    assert all(r["extra"]["max_abs_diff"] < 1e-12 for r in data["rows"]
               if "max_abs_diff" in r["extra"])
    text = md.read_text()
    assert "| cpu |" in text and "## Targets" in text and "ratio" in text
    assert main(["--only", "nonsense"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert _markdown([], data["machine"], [], 0.0).startswith("# Benchmarks")


def test_naive_gradient_baseline_matches_dropcheck():
    net, Ws, bs = _mlp([5, 6, 4], "tanh")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5))
    y = rng.integers(0, 4, 3)
    ref = dc.exact.expected_gradient(net, x, y, 0.3, method="batched")
    got = B.naive_expected_gradient(Ws[0], bs[0], Ws[1], bs[1], "tanh", x, y, 0.3, chunk=16)
    assert_close(got, ref, rtol=1e-12, atol=1e-14)


def test_bench_on_a_terminal_uses_rich_tables(monkeypatch, capsys):
    # FORCE_COLOR makes rich treat the captured stdout as a terminal: the same run prints box
    # tables and the targets table instead of the plain Markdown
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "220")
    assert main(["--smoke", "--only", "enumeration"]) == 0
    out = capsys.readouterr().out
    assert "┃" in out and "Targets" in out and "Exact expectation by enumeration" in out
    assert "| case |" not in out
