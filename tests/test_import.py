"""``import dropcheck`` is light (issue 11, item 7), and the lazily loaded names still work.

Each check runs in a fresh interpreter (``subprocess``) because this test process has long
since imported hypothesis, scipy and the rest: only a new ``sys.modules`` tells what
``import dropcheck`` itself pulls in.
"""

import json
import subprocess
import sys

import pytest

import dropcheck as dc

#: Libraries ``import dropcheck`` must not load: the heavy ones (hypothesis, scipy.stats, sympy,
#: matplotlib), the array backends only adapters may import (torch, cupy, jax), and Dask (only
#: dropcheck.parallel.DaskExecutor imports it).
HEAVY = ("hypothesis", "scipy.stats", "sympy", "matplotlib", "torch", "cupy", "jax", "dask",
         "distributed")


def _run(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_library():
    loaded = _run(
        "import sys, json, dropcheck; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_top_level_names_do_not_load_heavy_libraries():
    # the classes re-exported at the top level are what most users touch first
    loaded = _run(
        "import sys, json; "
        "from dropcheck import MLP, Linear, Functional, LSTM, CrossEntropy, Squared, "
        "TooManyMasksError; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_lazy_submodules_load_on_access():
    # attribute access and ``from dropcheck import`` both import the submodule, and only then
    # its dependency (scipy.stats for checks, hypothesis for strategies)
    out = _run(
        "import sys, json, dropcheck as dc; "
        "before = ['scipy.stats' in sys.modules, 'hypothesis' in sys.modules]; "
        "c = dc.checks.check_dropout; "
        "from dropcheck import strategies; s = strategies.mlps; "
        "after = ['scipy.stats' in sys.modules, 'hypothesis' in sys.modules]; "
        "print(json.dumps({'before': before, 'after': after, "
        "'same': dc.strategies is sys.modules['dropcheck.strategies'], "
        "'callable': callable(c) and callable(s)}))"
    )
    assert out == {"before": [False, False], "after": [True, True], "same": True, "callable": True}


@pytest.mark.parametrize("name", dc.__all__)
def test_every_public_name_resolves(name):
    assert getattr(dc, name) is not None
    assert name in dir(dc)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        dc.no_such_thing  # noqa: B018


def test_all_lists_every_public_submodule():
    # a public module missing here would not be lazily importable as dc.<name> nor found by
    # `from dropcheck import *`
    import pkgutil

    public = {m.name for m in pkgutil.iter_modules(dc.__path__) if not m.name.startswith("_")}
    missing = public - dc._NOT_LIBRARY - set(dc.__all__)
    assert not missing, (f"add {sorted(missing)} to dropcheck/__init__.py (_LAZY_SUBMODULES, "
                         "__all__ and the TYPE_CHECKING import), or to _NOT_LIBRARY for a tool")
    assert set(dc.__all__) >= dc._LAZY_SUBMODULES
    assert not dc._NOT_LIBRARY & set(dc.__all__)


def test_star_import_gives_every_name():
    out = _run("import json; from dropcheck import *; import dropcheck; "
               "print(json.dumps([n for n in dropcheck.__all__ if n not in globals()]))")
    assert out == []
