"""The shared plot helpers: summaries, slopes, file formats, and the registered plots."""

import subprocess
import sys

import numpy as np
import pytest

from dropcheck import plots


def test_summary_is_a_nan_aware_median_and_percentile_band():
    v = np.array([[1.0, 2.0, 3.0, np.nan], [np.nan] * 4, [5.0, 5.0, 5.0, 5.0]])
    med, lo, hi = plots.summary(v)
    assert med[0] == 2.0 and med[2] == 5.0 and np.isnan(med[1])
    assert lo[0] == pytest.approx(1.2) and hi[0] == pytest.approx(2.8)


def test_loglog_slope_recovers_power_laws_and_skips_bad_points():
    x = np.geomspace(1, 100, 7)
    assert plots.loglog_slope(x, 3 * x**-1.5) == pytest.approx(-1.5, abs=1e-12)
    y = x**2
    y[2] = np.nan
    y[3] = -1.0  # not on a log axis
    assert plots.loglog_slope(x, y) == pytest.approx(2.0, abs=1e-12)
    assert np.isnan(plots.loglog_slope([1.0], [1.0]))


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_band_figure_saves_in_the_format_of_the_suffix(tmp_path, suffix):
    fig, axes = plots.figure(2, title="a long title with math $R_{taylor} / q$ " * 6 + "\nline 2")
    x = np.array([0.1, 0.3, 1.0])
    vals = np.random.default_rng(0).lognormal(size=(3, 20))
    axes[0].set_yscale("log")
    line = plots.band(axes[0], x, vals, label="estimate")
    plots.guide(axes[0], x, 1.0, -1.0)
    plots.style(axes[0], xlabel="q", ylabel="relative error", logx=True, logy=True, xticks=x)
    plots.legend_below(fig, axes[0], ncols=2)
    assert line.get_label() == "estimate"
    assert np.allclose(line.get_ydata(), np.median(vals, axis=1))
    assert axes[0].get_xscale() == "log" and axes[0].get_yscale() == "log"
    assert "\n" in fig._suptitle.get_text()  # wrapped to the figure width
    out = plots.save(fig, tmp_path / f"fig{suffix}")
    head = out.read_bytes()[:8]
    magic = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix]
    assert head.startswith(magic)


def test_save_refuses_an_unknown_suffix(tmp_path):
    fig, _ = plots.figure()
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        plots.save(fig, tmp_path / "fig.jpg")


def test_band_caption():
    assert plots.band_caption(24) == "lines: median over 24 nets; bands: 10th–90th percentile"


def test_importing_dropcheck_does_not_import_matplotlib():
    code = "import sys, dropcheck, dropcheck.plots; sys.exit('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_registered_explicit_plots_write_png(tmp_path):
    from dropcheck.verification import Context, all_plots

    registered = all_plots()
    for name in ("explicit_vs_width", "explicit_confidence"):  # the quick, cheap ones
        out = registered[name].make(Context(quick=True, outdir=tmp_path), tmp_path / f"{name}.png")
        assert out.read_bytes()[:4] == b"\x89PNG"
