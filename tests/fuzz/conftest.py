"""Fuzz-suite session hooks: write the outcome counts when DROPCHECK_FUZZ_REPORT names a file."""

from __future__ import annotations

import json
import os

import pytest

from tests.fuzz._harness import FAILURES, OUTCOMES


@pytest.fixture(scope="session", autouse=True)
def _fuzz_report():
    yield
    path = os.environ.get("DROPCHECK_FUZZ_REPORT")
    if path:
        rows = [{"entry": e, "outcome": o, "count": c} for (e, o), c in sorted(OUTCOMES.items())]
        with open(path, "w") as f:
            json.dump({"outcomes": rows, "failures": FAILURES}, f, indent=1)
