"""Anomalous stills with an indexing ambiguity, end to end (issue 15).

60 simulated stills (768² panel, the benchmark's set at its reduced size) of a P4₃ crystal
with 10 Se per asymmetric unit (f″ = 4 e), indexed by dials.ssx_index, which puts each
still in either of the two settings (twin law h,−k,−l).  dials.factored_integrate
anomalous=true must put them all in one setting and give anomalous differences that
correlate with the truth.  (At 30 stills on 640² three of 30 ended in the wrong setting:
too few reflections shared.)
"""

from __future__ import annotations

import pytest

from harness import anomalous as an
from harness import dials_programs as dp

pytestmark = pytest.mark.slow

CELL = (78.0, 78.0, 37.0, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    work = tmp_path_factory.mktemp("anomalous")
    sim = dp.simulate(work / "sim", "stills", 15, 60, args=[
        "crystal.space_group=P43", "crystal.unit_cell=" + ",".join(map(str, CELL)),
        "d_min=2.0", "detector.size=768,768", "beam.wavelength=0.9792",
        "beam.bandwidth=0.002", "anomalous.element=Se", "anomalous.sites=10",
        "anomalous.fdp=4"])
    stage = dp.index_stills(sorted(sim.files["images"].glob("*.cbf")), work / "index", "P43",
                            CELL, nproc=2)
    return sim, stage, work


def _route(indexed, name, *args):
    sim, stage, work = indexed
    out = dp.factored_route(stage, work / name, nproc=2, export=False,
                            integrate_args=["anomalous=true", "beam.bandwidth=0.002", *args],
                            merge_args=["anomalous=True"])
    return out, an.right_setting_fraction(out.files["scaled_expt"], sim.files["models"])


def test_stills_end_in_one_setting_and_carry_the_anomalous_signal(indexed):
    sim, stage, _ = indexed
    assert an.right_setting_fraction(stage.files["expt"], sim.files["models"]) < 0.8
    out, setting = _route(indexed, "resolved")
    assert setting == 1.0
    score = an.score(out.files["merged_mtz"], sim.workdir / "truth")
    assert score["cc_ano"] > 0.6
    assert score["mean_peak_height"] > 6
