"""The verification registry and the ``dropcheck verify`` command."""

import json

from dropcheck.verification import all_claims, run

from dropcheck.cli import main

CORE_IDS = ["N1", "N2", "D1", "D2", "D3", "L1"]


def test_core_claims_are_registered_with_paper_ids():
    ids = {c.id for c in all_claims()}
    assert set(CORE_IDS) <= ids
    for c in all_claims():
        assert c.kind in ("identity", "approximation", "empirical")
        assert c.statement and c.source and c.rule


def test_verify_quick_core_claims_pass(tmp_path, capsys):
    status = main(["verify", "--quick", "--only", ",".join(CORE_IDS), "--json",
                   str(tmp_path / "r.json"), "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [c["id"] for c in report["claims"]] == CORE_IDS
    assert all(c["verdict"] == "PASS" for c in report["claims"])
    for cid in CORE_IDS:
        assert cid in out


def test_identity_failure_gives_nonzero_status(monkeypatch, capsys):
    from dropcheck.verification import _registry
    from dropcheck.verification._registry import Measurement

    claim = _registry._CLAIMS["N1"]
    monkeypatch.setitem(_registry._CLAIMS, "N1", claim.__class__(
        claim.id, claim.statement, claim.source, claim.kind, claim.rule,
        lambda ctx: Measurement("broken", False)))
    assert run(["N1"], progress=False) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_claim_id_is_a_clear_error(capsys):
    assert main(["verify", "--only", "Z9", "--no-progress"]) == 2
    assert "unknown claim IDs ['Z9']" in capsys.readouterr().err


def test_cli_dispatches_derive_and_check(capsys):
    assert main(["derive", "--only", "ce_hessian"]) == 0
    assert "ce_hessian" in capsys.readouterr().out
    assert main(["check", "tests.dropout_bugs:cli_reference", "--q", "0.3"]) == 0
    assert main(["check", "tests.dropout_bugs:cli_unscaled", "--q", "0.3"]) == 1


def test_measurement_that_raises_is_an_error_row(monkeypatch, capsys):
    from dropcheck.verification import _registry

    claim = _registry._CLAIMS["E1"]

    def boom(ctx):
        raise RuntimeError("broken measurement")

    monkeypatch.setitem(_registry._CLAIMS, "E1", claim.__class__(
        claim.id, claim.statement, claim.source, claim.kind, claim.rule, boom))
    assert run(["E1"], progress=False) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "broken measurement" in out
