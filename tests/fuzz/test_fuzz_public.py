"""Fuzz every public function with adversarial input: a finite result of the documented shape,
or a ValueError/TypeError naming the argument — nothing else (issue 18, item 3).

Each entry point of :data:`tests.fuzz._cases.ENTRIES` gets its own hypothesis test: a case
picks one argument (or none: the valid call must succeed) and replaces it by an adversarial
value of its role.  Every call runs under a wall-time limit (:data:`CALL_SECONDS`).

Profiles (tests/conftest.py): ``fuzz-ci`` by default (a few examples per entry, the whole
module well under a minute); ``DROPCHECK_FUZZ=long`` selects ``fuzz-long`` (1000 per entry;
its figures are in docs/reliability.md).  Cases are derandomized in CI, so a run is repeatable.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz._cases import ENTRIES, adversarial
from tests.fuzz._harness import run_case

LONG = os.environ.get("DROPCHECK_FUZZ", "") == "long"
PROFILE = settings.get_profile("fuzz-long" if LONG else "fuzz-ci")
if os.environ.get("DROPCHECK_FUZZ_EXAMPLES"):  # e.g. a longer run than fuzz-long's 400
    PROFILE = settings(PROFILE, max_examples=int(os.environ["DROPCHECK_FUZZ_EXAMPLES"]))

#: Wall-time limit of one call: the slowest valid entry takes ~0.2 s alone; the 2-core CI
#: machine is shared (load up to ~12 measured), so 60× that catches hangs without flaking.
CALL_SECONDS = 15.0


@pytest.mark.parametrize("name", sorted(ENTRIES))
@settings(PROFILE)
@given(data=st.data())
def test_fuzz_entry(name, data):
    """One adversarial call of entry ``name``: ok (finite, shaped) or refused naming the arg."""
    entry = ENTRIES[name]
    arg = data.draw(st.sampled_from([None, *entry.roles]), label="argument")
    args = dict(entry.base)
    if arg is not None:
        args[arg] = data.draw(st.composite(lambda draw: adversarial(draw, entry, arg))(),
                              label="value")
    names = () if arg is None else entry.aliases.get(arg, (arg,))
    try:
        shape = entry.shape(args)
    except (TypeError, ValueError, IndexError, AttributeError):  # a malformed argument (a
        shape = None  # "model" that is no model): no documented shape to compare with
    # what a user's own fn sums (NaN, any shape) is its business: only the outcome kind counts
    primary = (lambda r: 0.0) if entry.roles.get(arg) == "callable" else entry.primary
    run_case(name, lambda: entry.call(args), names, primary=primary,
             shape=shape, seconds=CALL_SECONDS,
             label="valid input" if arg is None else f"{arg}={args[arg]!r:.80}")


def test_fuzz_non_model_object_refused():
    """``exact.expected_loss("net", x, y, q)`` must be a TypeError naming ``model``."""
    from dropcheck import exact
    from tests.fuzz._cases import X, Y

    with pytest.raises(TypeError, match="model"):
        exact.expected_loss("net", X, Y, 0.3)
