"""The GPU benchmark's ``--smoke`` mode runs end to end on the CPU (numpy vs torch CPU tensors)
and writes a report that names what ran; without a GPU the full mode refuses with a reason.
No timing is asserted.

Tolerances: the enumeration on torch tensors and on numpy is the same factorized float64
computation (≤ 2^12 masks, O(1) terms) in two libraries' rounding: a few ulps per term, so the
relative difference stays below 1e-12 (see tests/test_namespaces.py).  The PyTorch LSTM
baseline and dropcheck compute the same float64 gradients in different orders (rtol 1e-10).
"""

import json

import pytest

pytest.importorskip("torch", reason="the smoke benchmark compares against torch CPU tensors")

from dropcheck.benchmarks import bench_gpu, bench_lstm  # noqa: E402


def test_smoke_mode_writes_a_cpu_labelled_report(tmp_path):
    js, md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    code = bench_gpu.main(["--smoke", "--json", str(js), "--markdown", str(md),
                           "--tests", "tests/test_backend.py"])
    assert code == 0
    rep = json.loads(js.read_text())
    assert rep["mode"] == "smoke" and rep["device_name"] == "torch-cpu"
    assert "no GPU" in rep["device"] and rep["torch_device"] == "cpu"
    # the gpu-marked test in the target skips cleanly here, with its reason
    t = rep["gpu_tests"]
    assert t["ran"] and t["returncode"] == 0 and t["counts"].get("skipped", 0) >= 1
    assert any("CI has no GPU" in s for s in t["skip_reasons"])
    rows = rep["enumeration"]
    assert [r["width"] for r in rows] == list(bench_gpu.WIDTHS["smoke"])
    for r in rows:
        assert r["masks"] == bench_gpu.N_EXAMPLES * 2 ** r["width"]
        assert r["device_masks_per_s"] > 0 and r["numpy_masks_per_s"] > 0
        assert r["max_rel_diff"] < 1e-12
    lstm = rep["lstm"]
    # float32 gradients of a 2-layer net summed in different orders: ~1e-6 relative
    assert lstm["case"]["grad_E_rel_diff"] < 1e-4
    assert [r["path"] for r in lstm["rows"]] == ["plain", "r_hat", "xi"]
    for r in lstm["rows"]:
        assert r["dropcheck_s_per_1k_tokens"] > 0 and r["torch_s_per_1k_tokens"] > 0
        assert "goal_met" not in r  # the goal is judged on a GPU at AWD size, not here
    text = md.read_text()
    assert "SMOKE run on the CPU (no GPU figure)" in text and "torch-cpu" in text
    assert "| forward + backward" in text and "no verdict (smoke)" in text
    # the results page: its GPU section says the GPU run is pending, and is replaced in place
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nCPU tables.\n")
    for _ in range(2):
        bench_gpu.write_docs(page, rep)
    doc = page.read_text()
    assert doc.startswith("# Benchmarks\n\nCPU tables.\n") and doc.count("## GPU\n") == 1
    assert "pending a lent device" in doc and bench_gpu.COMMAND in doc
    assert bench_gpu.gpu_section(doc).startswith(bench_gpu.SECTION_MARK)


def test_full_mode_without_a_gpu_refuses(tmp_path, capsys):
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a GPU is present: the full mode would run")
    except Exception:  # noqa: BLE001 - no cupy, or no CUDA device or driver: what is tested
        pass
    js, md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    assert bench_gpu.main(["--json", str(js), "--markdown", str(md), "--no-tests"]) == 2
    assert "use --smoke" in capsys.readouterr().err and not js.exists()


def test_lstm_baseline_computes_the_same_numbers():
    """The PyTorch baseline the GPU run times against is the same network (float64, CPU)."""
    diffs = bench_lstm.check()
    assert diffs["grad_E"] < 1e-10 and diffs["xi_bD"] < 1e-10, diffs


def test_gpu_extras_offer_both_cuda_builds_and_dev_has_no_cupy():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11 has no tomllib")
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert extras["gpu-cuda12"] == ["cupy-cuda12x>=13"]
    assert extras["gpu-cuda13"] == ["cupy-cuda13x>=13"]
    assert extras["gpu"] == ["dropcheck[gpu-cuda12]"]  # the name documented first
    # CI and the developers' machines have no GPU: the dev extra must not pull in cupy
    assert not [r for r in extras["dev"] if r.lower().startswith("cupy")]
