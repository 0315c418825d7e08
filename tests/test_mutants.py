"""Mutants as data, and the claim × mutant matrix of ``dropcheck verify --mutants``.

The CI matrix runs in quick mode: every mutant must be caught by at least one of the claims it
names, and every non-empirical claim that passes on the correct library must catch at least
one mutant (only the claims a mutant names are measured under it; docs/verification.md).
"""

import json

import numpy as np
import pytest
from dropcheck.verification import all_claims, run
from dropcheck.verification.mutants import Mutant, all_mutants, swap, swap_everywhere

import dropcheck as dc


def test_registry_names_are_unique_and_claims_are_registered():
    ids = {c.id for c in all_claims()}
    mutants = all_mutants()
    assert len({m.name for m in mutants}) == len(mutants)
    for m in mutants:
        assert isinstance(m, Mutant) and m.description and m.claims, m.name
        assert set(m.claims) <= ids, (m.name, set(m.claims) - ids)
        assert callable(m.patch)


def test_issue_list_is_covered():
    names = {m.name for m in all_mutants()}
    for name in ("strength_q_over_1mq", "strength_inverted", "strength_q_half", "hout_diag_p",
                 "hout_identity", "noise_hessian_no_model_term", "taylor_is_gauss_newton",
                 "xi_approx_no_jloss_path", "xi_approx_jloss_only", "eta_second_moment_q",
                 "drop_rate_plus_0.02", "drop_rate_minus_0.02", "rademacher_always_plus",
                 "dropout_k_one_mask", "alg4_coefficient_half", "taylor_site_missing",
                 "theorem_mu_as_nu", "labels_uniform"):
        assert name in names


def test_every_patch_restores_the_library():
    """Apply and leave every mutant: the public functions are the same objects afterwards."""
    import dropcheck.explicit as ex
    import dropcheck.implicit as im
    import dropcheck.noise as nz

    watched = [(ex, "strength"), (ex, "taylor"), (ex, "noise_hessian"), (ex, "r_approx"),
               (im, "noise_injected_gradient"), (im, "xi_approx_cov"), (nz, "sample_mask"),
               (nz, "sample_rademacher"), (nz, "eta_moments"),
               (dc.losses.CrossEntropy, "hvp")]
    before = [getattr(o, a) for o, a in watched]
    for m in all_mutants():
        with m.patch():
            pass
    assert all(getattr(o, a) is b for (o, a), b in zip(watched, before, strict=True))


def test_swap_everywhere_reaches_names_imported_by_value():
    import dropcheck.noise as nz

    orig = nz.sample_rademacher
    with swap_everywhere(orig, "wrong"):
        assert nz.sample_rademacher == "wrong"
    assert nz.sample_rademacher is orig
    with pytest.raises(LookupError, match="needs updating"), swap_everywhere(object(), 1):
        pass


def test_swap_restores_on_error():
    class Box:
        v = 1

    with pytest.raises(RuntimeError), swap(Box, "v", 2):
        assert Box.v == 2
        raise RuntimeError
    assert Box.v == 1


def test_a_mutant_changes_what_the_library_computes():
    m = {x.name: x for x in all_mutants()}
    with m["rademacher_always_plus"].patch():
        s = np.asarray(dc.noise.sample_rademacher(np.random.default_rng(0), (100,), 0.5))
    assert np.all(s > 0)
    with m["strength_q_half"].patch():
        assert dc.explicit.strength(0.5) == pytest.approx(0.25)
    assert dc.explicit.strength(0.5) == pytest.approx(0.5)


def test_quick_mutation_matrix(tmp_path, capsys):
    """The issue's "done when": every mutant caught, every non-empirical claim catches one."""
    path = tmp_path / "r.json"
    status = run(None, quick=True, mutants=True, json_path=path, progress=False)
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    mm, summary = report["mutation_matrix"], report["mutation_summary"]
    assert set(mm) == {m.name for m in all_mutants()}
    for cells in mm.values():
        assert cells and all(v in ("PASS", "DEVIATES", "FAIL", "ERROR") for v in cells.values())
    assert summary["uncaught_mutants"] == [], out
    assert summary["claims_catching_nothing"] == [], out
    assert summary["errors"] == [], out
    assert status == 0, out
    assert "mutation matrix" in out
