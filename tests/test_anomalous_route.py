"""Anomalous stills with an indexing ambiguity, end to end (issue 15).

30 simulated stills of a P4₃ crystal with 10 Se per asymmetric unit (f″ = 4 e), indexed by
dials.ssx_index, which puts each still in either of the two settings (twin law h,−k,−l).
dials.factored_integrate anomalous=true must put them all in one setting and give
anomalous differences that correlate with the truth; without its ambiguity step
(ambiguity.resolve=False) the stills stay mixed and the merged data are far worse —
what the step fixes.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import anomalous as an
from harness import dials_programs as dp
from harness import evaluate as ev

pytestmark = pytest.mark.slow

CELL = (78.0, 78.0, 37.0, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    work = tmp_path_factory.mktemp("anomalous")
    sim = dp.simulate(work / "sim", "stills", 21, 30, args=[
        "crystal.space_group=P43", "crystal.unit_cell=" + ",".join(map(str, CELL)),
        "d_min=2.2", "detector.size=640,640", "beam.wavelength=0.9792",
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


def _merged_cc(sim, out) -> float:
    truth = ev.prepare_truth(an.read_anomalous(sim.files["truth_mtz"]))
    merged = ev.asu_unique(ev.read_mtz_intensities(out.files["merged_mtz"], "IMEAN"))
    a, b = merged.customized_copy(crystal_symmetry=truth.crystal_symmetry()).common_sets(truth)
    return float(np.corrcoef(a.data().as_numpy_array(), b.data().as_numpy_array())[0, 1])


def test_stills_end_in_one_setting_and_carry_the_anomalous_signal(indexed):
    sim, stage, _ = indexed
    out, setting = _route(indexed, "resolved")
    assert setting == 1.0
    score = an.score(out.files["merged_mtz"], sim.workdir / "truth")
    assert score["cc_ano"] > 0.4
    assert score["mean_peak_height"] > 4
    mixed, mixed_setting = _route(indexed, "mixed", "ambiguity.resolve=False")
    assert mixed_setting < 0.9  # dials.ssx_index did leave them mixed
    assert _merged_cc(sim, out) > _merged_cc(sim, mixed) + 0.1
