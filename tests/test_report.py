"""The HTML report: every plot the issue asks for, offline, and drawn by a real browser.

The browser check runs ``scripts/check_report.py`` (headless Chromium reads back the
rendered DOM: each plot became a plotly SVG with traces, no JavaScript error, and a
non-blank screenshot); it skips, saying why, when Chromium is not installed
(``scripts/install.sh`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dials.array_family import flex

from dials_factored.integrate import Result
from dials_factored.report import figures, render
from harness import dials_programs as dp

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "check_report.py"
CHROMIUM = "/usr/bin/chromium"
#: The plots of issue 6: G and B per image, R1(d), partiality (and R0), z histogram,
#: CC½ and ⟨I/σ⟩ by resolution, outlier pixels per image.
PLOTS = ["gb", "r1", "part", "z", "cc", "out"]


def synthetic(kind: str, n_nodes: int = 5) -> Result:
    """A Result as run_factored returns it, with known values."""
    rng = np.random.default_rng(0)
    nodes = [{"experiment": i, "identifier": str(i), "phi": 2.5 * i, "G": 1.0 + 0.1 * i,
              "B": -0.5 * i} for i in range(n_nodes)]
    parameters = {"kind": kind, "nodes": nodes, "r1_nodes_inv_d2": [0.01, 0.1, 0.2],
                  "r1_a": [0.001, 0.0012, 0.0013], "r1_b": [0.001, 0.0012, 0.0013],
                  "outlier_pixels": 7}
    parameters.update({"r0": 0.00054, "mosaic_deg": 0.03} if kind == "stills"
                      else {"mosaicity_deg": 0.0812})
    table = flex.reflection_table()
    table["partiality"] = flex.double(rng.random(200))
    history = [{"cycle": 1, "objective": 10.0, "iterations": 3, "n_term1": 200, "n_term2": 50,
                "outlier_pixels": 7, "max_shift_log_g": 0.1, "max_shift_b": 1.0,
                "max_shift_over_sigma": 2.5}]
    diagnostics = {"z_term1": rng.normal(size=200), "outliers_per_image": np.array([3, 0, 4])}
    return Result(table, parameters, history, {}, diagnostics)


SHELLS = [{"d_max": 10.0, "d_min": 3.0, "cc_half": 0.99, "i_over_sigma": 12.0},
          {"d_max": 3.0, "d_min": 2.0, "cc_half": 0.9, "i_over_sigma": 3.0}]


def _traces(fig_html: str) -> list:
    import json

    match = re.search(r'Plotly\.newPlot\("[^"]+", (\[.*?\]), \{', fig_html)
    return json.loads(match.group(1))


@pytest.mark.parametrize("kind, width", [("stills", "R0 = 0.00054"),
                                         ("rotation", "mosaicity = 0.0812°")])
def test_every_plot_is_there_with_the_fitted_values(kind, width):
    figs = dict(zip(PLOTS, figures(synthetic(kind), SHELLS)))
    assert [re.search(r'id="([^"]+)"', f).group(1) for _, f in figs.values()] == PLOTS
    g_trace, b_trace = _traces(figs["gb"][1])
    assert g_trace["y"] == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert b_trace["y"] == [0.0, -0.5, -1.0, -1.5, -2.0]
    assert g_trace["x"] == ([0.0, 2.5, 5.0, 7.5, 10.0] if kind == "rotation" else
                            [0, 1, 2, 3, 4])
    assert width in figs["part"][0]
    assert sum(_traces(figs["part"][1])[0]["y"]) == 200
    assert _traces(figs["cc"][1])[0]["y"] == [0.99, 0.9]
    assert _traces(figs["out"][1])[0]["y"] == [3, 0, 4]
    assert "rms" in figs["z"][0]


def test_shell_plot_is_kept_without_scaled_reflections():
    figs = figures(synthetic("stills"), [])
    titles = [t for t, _ in figs]
    assert len(figs) == len(PLOTS)
    assert "CC½ and ⟨I/σ⟩ against resolution (no scaled reflections)" in titles


def test_page_is_offline():
    """plotly.js is embedded; no script, style or image is fetched from anywhere."""
    from plotly.offline import get_plotlyjs

    page = render(synthetic("stills"), SHELLS)
    assert get_plotlyjs()[:1000] in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert page.count('class="plot"') == len(PLOTS)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of a real run: 6 simulated stills integrated from their true models."""
    work = tmp_path_factory.mktemp("report")
    dp.run_program("dials.factored_simulate",
                   ["mode=stills", "seed=5", "n_images=6", "detector.size=512,512"], work,
                   expect=["truth/models.expt"])
    out = work / "out"
    out.mkdir()
    dp.run_program("dials.factored_integrate", [work / "truth" / "models.expt"], out,
                   expect=["dials.factored_integrate.html"])
    return out / "dials.factored_integrate.html"


def _check(page: Path, *args: str) -> subprocess.CompletedProcess:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed: the browser check needs Debian's chromium "
                    "(scripts/install.sh installs it)")
    return subprocess.run([sys.executable, str(CHECK), str(page), *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_report_of_a_real_run_renders_in_a_browser(report, tmp_path):
    assert plot_ids(report) == PLOTS
    shot = tmp_path / "report.png"
    run = _check(report, "--screenshot", str(shot))
    assert run.returncode == 0, run.stderr
    assert f"{len(PLOTS)} plots rendered ({', '.join(PLOTS)})" in run.stdout
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
def test_browser_check_names_a_plot_that_does_not_draw(report, tmp_path):
    """The check can fail: a figure whose script targets a wrong element is reported."""
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text(encoding="utf-8").replace(
        'Plotly.newPlot("z", ', 'Plotly.newPlot("nowhere", '), encoding="utf-8")
    run = _check(broken)
    assert run.returncode == 1
    assert "plot 'z' was not drawn" in run.stderr
    assert "JavaScript error" in run.stderr


def plot_ids(page: Path) -> list[str]:
    return re.findall(r'<div id="([^"]+)" class="plot"></div>', page.read_text(encoding="utf-8"))
