"""The checkers against hostile callables and arguments (issue 18, item 3 and item 4).

A checker handed a broken callable must return a report with ERROR rows (never raise, never
pass, never hang: a time budget bounds a callable that never returns); handed a bad argument
it must raise ValueError/TypeError naming the argument.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dropcheck.checks import check_dropout, check_explicit_regularizer
from dropcheck.checks._calls import budget
from dropcheck.checks._report import ERROR

_NEVER = threading.Event()


def _never_returns(x, q):
    _NEVER.wait()
    return x


BROKEN = {
    "returns None": lambda x, q: None,
    "returns a string": lambda x, q: "y",
    "wrong shape": lambda x, q: x[:, :-1],
    "raises": lambda x, q: 1 / 0,
    "NaN": lambda x, q: x * np.nan,
    "float32 for float64": lambda x, q: x.astype(np.float32),
    "never returns": _never_returns,
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_check_dropout_broken_callable_is_an_error_row(what):
    with budget(seconds=5.0):
        report = check_dropout(BROKEN[what], 0.3, shape=(8, 16))
    assert not report.passed
    assert any(r.verdict == ERROR for r in report.rows), report


@pytest.mark.parametrize("kw, name", [
    ({"q": "0.3"}, "q"), ({"q": 1.5}, "q"), ({"q": float("nan")}, "q"),
    ({"shape": 0}, "shape"), ({"shape": (8, -1)}, "shape"), ({"alpha": 2.0}, "alpha"),
    ({"seed": -1}, "seed"), ({"max_calls": 0}, "max_calls"), ({"rate": "nope"}, "rate"),
])
def test_check_dropout_bad_argument_refused_naming_it(kw, name):
    args = {"q": 0.3, "shape": (8, 16), **kw}
    with pytest.raises((ValueError, TypeError), match=name):
        check_dropout(lambda x, q: x, args.pop("q"), **args)


@pytest.mark.parametrize("kw, name", [
    ({"q": "0.3"}, "q"), ({"form": "nope"}, "form"), ({"n_nets": 0}, "n_nets"),
    ({"alpha": -1.0}, "alpha"), ({"sizes": ((3,),)}, "sizes"),
])
def test_check_explicit_regularizer_bad_argument_refused_naming_it(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        check_explicit_regularizer(lambda *a: 0.0, **kw)


def test_check_explicit_regularizer_broken_callable_is_an_error_row():
    with budget(seconds=5.0):
        report = check_explicit_regularizer(lambda *a: None, n_nets=1, examples=2)
    assert not report.passed
    assert any(r.verdict == ERROR for r in report.rows), report
