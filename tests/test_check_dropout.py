"""Tests of ``dropcheck.checks.check_dropout``: the bug catalogue is caught and named, correct
layers pass, bad user code and bad arguments are reported plainly, the statistics are valid.

All randomness is seeded (numpy generators, torch generators / ``torch.manual_seed``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropcheck.checks import (
    DEFAULT_Q,
    CheckReport,
    DropcheckError,
    DropoutReport,
    _plan,
    _stats,
    assert_dropout_correct,
    check_dropout,
)
from dropcheck.checks._calls import infer_rate_mode
from dropcheck.checks._cli import cli
from tests import dropout_bugs

NUMPY_BUGS = [c.name for c in dropout_bugs.numpy_cases()]
TORCH_REASON = "torch is not installed; the PyTorch half of the catalogue needs it"


def _case(cases, name):
    return next(c for c in cases if c.name == name)


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torch.manual_seed(0)
    return torch


def _reference(seed=0):
    rng = np.random.default_rng(seed)

    def dropout(x, q):
        return x * (rng.random(x.shape) >= q) / (1 - q)

    return dropout


# ----- the catalogue ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NUMPY_BUGS)
def test_numpy_bug_is_caught_and_named(name):
    case = _case(dropout_bugs.numpy_cases(seed=1), name)
    report = check_dropout(case.fn, **case.kwargs)
    assert not report.passed, str(report)
    assert case.diagnosis in report.diagnosis, str(report)


@pytest.mark.parametrize("name", NUMPY_BUGS)
def test_torch_bug_is_caught_and_named(torch, name):
    case = _case(dropout_bugs.torch_cases(seed=1), name)
    report = check_dropout(case.fn, **case.kwargs)
    assert not report.passed, str(report)
    assert case.diagnosis in report.diagnosis, str(report)


@pytest.mark.parametrize("name", [c.name for c in dropout_bugs.numpy_correct()])
def test_correct_numpy_layers_pass(name):
    case = _case(dropout_bugs.numpy_correct(seed=1), name)
    report = check_dropout(case.fn, **case.kwargs)
    assert report.passed, str(report)
    assert report.diagnosis is None


@pytest.mark.parametrize("name", ["F.dropout", "nn.Dropout (factory)", "nn.Dropout(0.3) train",
                                  "nn.Dropout(0.3) eval", "F.dropout2d"])
def test_correct_torch_layers_pass(torch, name):
    case = _case(dropout_bugs.torch_correct(seed=1), name)
    report = check_dropout(case.fn, **case.kwargs)
    assert report.passed, str(report)


def test_torch_module_in_a_few_lines(torch):
    # the docs' example: the class is a factory, eval mode through a second factory
    report = assert_dropout_correct(torch.nn.Dropout, to_framework=torch.from_numpy,
                                    eval_fn=lambda q: torch.nn.Dropout(q).eval())
    assert isinstance(report, DropoutReport) and report.passed
    assert {r.name for r in report.rows} >= {"eval is identity", "q = 0 is identity",
                                             "independent across calls"}


@pytest.mark.parametrize("seed", range(5))
def test_no_false_alarm_on_seeds(seed):
    """A small seeded slice of the false-alarm measurement (200 seeds: docs/checks.md)."""
    report = check_dropout(_reference(seed), seed=seed, eval_fn=lambda x, q: x)
    assert report.passed, str(report)


# ----- the report -------------------------------------------------------------------------

def test_report_rows_and_text():
    report = check_dropout(_reference(), seed=3)
    assert isinstance(report, CheckReport) and bool(report)
    assert report.seed == 3 and report.q == DEFAULT_Q and report.alpha == 1e-6
    tests = [r for r in report.rows if r.is_test]
    assert len(tests) == 3 * 5  # rate, mean, 2 axes, calls, per q
    # Holm: the thresholds are alpha/m ... alpha, each used once
    assert sorted(r.threshold for r in tests) == pytest.approx(
        sorted(1e-6 / k for k in range(1, 16)))
    assert {r.q for r in report.rows} == {0.1, 0.3, 0.7, 0.0, 0.999}
    assert [p.q for p in report.plans] == list(DEFAULT_Q)
    text = str(report)
    for piece in ("PASSED", "drop rate", "p-value", "seed = 3", "calls x (64, 256)",
                  "reproduce: check_dropout("):
        assert piece in text
    assert report.to_dict()["passed"] is True


def test_sample_sizes_reach_the_stated_power():
    report = check_dropout(_reference(), shape=(64, 256))
    for plan in report.plans:
        assert min(plan.power.values()) >= 1 - _plan.BETA / 2, plan
    assert not any("power only" in n for n in report.notes)


def test_small_input_says_its_power_is_short():
    report = check_dropout(_reference(), 0.3, shape=(4, 4), max_calls=40)
    assert report.passed, str(report)
    assert any("power only" in n for n in report.notes)


def test_raise_on_failure_carries_the_report():
    bug = dropout_bugs.numpy_cases()[0]
    with pytest.raises(DropcheckError) as info:
        check_dropout(bug.fn, raise_on_failure=True)
    assert isinstance(info.value, AssertionError)
    assert not info.value.report.passed
    assert "no inverted scaling" in str(info.value)
    with pytest.raises(DropcheckError, match="FAILED"):
        assert_dropout_correct(bug.fn)


def test_retest_confirms_real_failures_only():
    bug = _case(dropout_bugs.numpy_cases(), "biased random source")
    report = check_dropout(bug.fn)
    row = next(r for r in report.rows if r.name == "drop rate" and r.q == 0.1)
    assert row.verdict == "FAIL" and "confirmed on a re-test" in row.detail
    single = check_dropout(bug.fn, retest=False)
    assert not single.passed


def test_fixed_rate_layer_notes_unchecked_edges():
    rng = np.random.default_rng(0)
    report = check_dropout(lambda x: x * (rng.random(x.shape) >= 0.5) / 0.5, 0.5)
    assert report.passed, str(report)
    assert any("q = 0 and q = 0.999 not checked" in n for n in report.notes)
    assert any("q = 0.5 alone" in n for n in report.notes)


def test_shared_axes_declared_but_not_shared():
    report = check_dropout(_reference(), 0.3, shape=(8, 16, 32), shared_axes=(1,))
    assert not report.passed
    assert "mask not constant along the declared shared_axes" in report.diagnosis


def test_rate_mode_inference(torch):
    assert infer_rate_mode(lambda x: x) == "fixed"
    assert infer_rate_mode(lambda x, q: x) == "arg"
    assert infer_rate_mode(torch.nn.functional.dropout) == "arg"
    assert infer_rate_mode(torch.nn.Dropout) == "factory"
    assert infer_rate_mode(torch.nn.Dropout(0.1)) == "fixed"


# ----- bad output from the callable -------------------------------------------------------

@pytest.mark.parametrize("fn, message", [
    (lambda x, q: x[:, :3], "returned shape (64, 3)"),
    (lambda x, q: x.astype(np.float32), "returned dtype float32"),
    (lambda x, q: x.tolist(), "returned list, not an array"),
    (lambda x, q: None, "returned NoneType, not an array"),
    (lambda x, q: x * np.nan, "NaN"),
    (lambda x, q: 1 / 0, "fn raised ZeroDivisionError"),
])
def test_bad_output_is_reported_not_raised(fn, message):
    report = check_dropout(fn)
    assert not report.passed
    errors = [r for r in report.rows if r.verdict == "ERROR"]
    assert errors and all(message in r.detail for r in errors), str(report)
    assert message in report.diagnosis and message in str(report)


def test_torch_layer_given_numpy_gets_a_hint(torch):
    report = check_dropout(torch.nn.functional.dropout, 0.3)
    assert not report.passed
    assert "to_framework" in report.diagnosis


def test_bad_vjp_and_factory_are_reported():
    report = check_dropout(_reference(), 0.3, vjp_fn=lambda x, g, q: x)
    assert "expected a pair" in report.diagnosis
    report = check_dropout(lambda q: 42, 0.3, rate="factory")
    assert "not a callable layer" in report.diagnosis


# ----- bad arguments ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"q": 1.0}, "q"), ({"q": -0.1}, "q"), ({"q": [0.1, 1.5]}, "q[1]"), ({"q": []}, "q"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": "x"}, "alpha"),
    ({"shape": ()}, "shape"), ({"shape": (0, 4)}, "shape"), ({"shape": "ab"}, "shape"),
    ({"shared_axes": 2}, "shared_axes"), ({"shared_axes": (0, -2)}, "shared_axes"),
    ({"rate": "bogus"}, "rate"), ({"dtype": "int32"}, "dtype"), ({"seed": -1}, "seed"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name.replace('[', '.').replace(']', '.')}"):
        check_dropout(_reference(), **kwargs)


def test_fixed_rate_layer_needs_one_q():
    with pytest.raises(ValueError, match="q"):
        check_dropout(lambda x: x, [0.1, 0.3])
    with pytest.raises(ValueError, match="q is required"):
        check_dropout(lambda x: x)
    with pytest.raises(TypeError, match="fn must be callable"):
        check_dropout("dropout", 0.1)


# ----- statistics -------------------------------------------------------------------------

def test_null_p_values_are_valid():
    """Under each null, P(p <= a) <= a (with binomial slack over 2000 seeded repeats)."""
    rng = np.random.default_rng(0)
    n, q, reps = 2000, 0.3, 2000
    drops = rng.random((reps, 2, n)) < q
    p_fisher = np.array([_stats.fisher_2x2(d[0], d[1])[1] for d in drops])
    p_binom = np.array([_stats.binomial_test(int(d[0].sum()), n, q) for d in drops])
    p_t = np.array([_stats.t_test_mean(u, 0.0)[1] for u in rng.standard_normal((reps, 10))])
    for p in (p_fisher, p_binom, p_t):
        for a in (0.01, 0.05, 0.2):
            assert np.mean(p <= a) <= a + 4 * math.sqrt(a * (1 - a) / reps)


def test_shared_pairs_are_flagged():
    a = np.random.default_rng(1).random(500) < 0.1
    phi, p, counts = _stats.fisher_2x2(a, a)
    assert phi == pytest.approx(1.0) and p < 1e-30 and counts[1] == counts[2] == 0


def test_holm_matches_hand_computation():
    thresholds, rejected = _stats.holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert thresholds == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert rejected == [True, False, False, True]


def test_mean_power_matches_noncentral_t():
    from scipy import stats

    for units, d, level in ((10, 1.0, 0.01), (8, 2.0, 1e-4)):
        df, nc = units - 1, d * math.sqrt(units)
        exact = stats.nct.sf(stats.t.isf(level / 2, df), df, nc)
        assert _stats.mean_power(units, d, level) == pytest.approx(exact, rel=1e-6)


# ----- command line -----------------------------------------------------------------------

def test_cli_pass_fail_and_usage(capsys):
    assert cli(["check", "tests.dropout_bugs:cli_reference", "--q", "0.1,0.3,0.7"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert cli(["tests.dropout_bugs:cli_unscaled", "--shape", "32,128", "--seed", "2"]) == 1
    assert "no inverted scaling" in capsys.readouterr().out
    assert cli(["tests.dropout_bugs:nope"]) == 2
    assert "has no attribute" in capsys.readouterr().err
    assert cli(["tests.dropout_bugs:cli_reference", "--q", "1.5"]) == 2
    assert cli(["tests.dropout_bugs:cli_reference", "--q", "abc"]) == 2


def time_first_locked(seed=0):
    """A correct locked (variational) mask in PyTorch's time-first RNN layout ``(T, B, F)``:
    one draw per example and feature, shared over time (axis 0)."""
    rng = np.random.default_rng(seed)

    def layer(x, q):
        return x * (rng.random((1, *x.shape[1:])) >= q) / (1 - q)

    return layer


def test_layout_names_the_axes_of_a_time_first_locked_mask():
    """Declared ``layout="tbf"``: the mask shared along axis 0 is called a locked mask over time
    steps, not "shared across the batch" (the name without a layout, axis 0 = examples)."""
    kw = {"q": 0.3, "shape": (6, 8, 16), "edges": False, "retest": False}
    named = check_dropout(time_first_locked(), layout="tbf", **kw)
    assert not named.passed
    assert "mask shared across time steps (axis 0): a locked (variational) mask" in \
        named.diagnosis, str(named)
    assert "batch" not in named.diagnosis
    assert any(r.name == "independent across the batch (axis 1)" for r in named.rows)
    legacy = check_dropout(time_first_locked(), **kw)
    assert "mask shared across the batch" in legacy.diagnosis, str(legacy)
    declared = check_dropout(time_first_locked(), layout="tbf", shared_axes=(0,), **kw)
    assert declared.passed, str(declared)


@pytest.mark.parametrize("layout", ["bf", "tbff", "tbx", "tff"])
def test_bad_layout_names_the_argument(layout):
    with pytest.raises(ValueError, match="layout must name each of the 3 input axes"):
        check_dropout(time_first_locked(), q=0.3, shape=(6, 8, 16), layout=layout)


def test_scale_message_prints_the_digits_that_differ():
    """"1.11111 instead of 1.11111" cannot happen: the digits grow until the numbers differ."""
    from dropcheck.checks._diagnosis import _scale_phrase

    _, phrase = _scale_phrase(1.1111115, 0.1, False)
    assert phrase == "kept values scaled by 1.111112 instead of 1/(1-q) = 1.111111"
