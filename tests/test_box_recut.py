"""Boxes that follow the fit (issue 16, item 4): an initial R1 3× too small.

A small sweep (512² px of 0.172 mm at 150 mm, σ ≈ 1.2 px spots, 12 × 1°, angular mosaic
spread, no hot pixels or zingers) integrated from its true models twice: from an
initial R1 near the spots' width, and from one 3× smaller.  With the small start the
boxes (4 R1 + 1 px) are inside the foreground window of the true width (3 R_eff), so
the background ring is empty.  The boxes must be re-cut from the fitted widths (and the
intensities recover: merged CC to the truth as from the right start), and no
reflection may keep a background of fewer than 10 pixels without being flagged
``failed_during_background_modelling``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dials_factored.arrays import to_numpy
from dials_factored.recut import MIN_BACKGROUND_PIXELS
from harness import dials_programs as dp
from harness import evaluate as ev

pytestmark = pytest.mark.slow

SWEEP = ["mode=rotation", "detector.size=512,512", "detector.distance=150", "d_min=2.6",
         "detector.psf=1.2", "hot_pixels.count=0", "zingers.rate=0", "seed=7", "n_images=12",
         "crystal.phi_spread=both", "crystal.mosaic=0.15", "crystal.domain_size=3000"]
#: About the fitted R1 of this sweep (Å⁻¹: 0.0020 from any start that fits the boxes).
R1_RIGHT = 0.002


class Run:
    """dials.factored_integrate from the true models with ``profile.r1``, scored."""

    def __init__(self, sim, out, r1):
        from dials.array_family import flex

        out.mkdir()
        dp.run_program("dials.factored_integrate", [sim / "truth" / "models.expt", "nproc=1",
                                                    f"profile.r1={r1}"], out,
                       expect=["factored.refl", "factored_parameters.json"])
        self.parameters = json.loads((out / "factored_parameters.json").read_text())[
            "parameters"]
        self.table = table = flex.reflection_table.from_file(str(out / "factored.refl"))
        self.cc, self.n_scaled = ev.scaled_cc_to_truth(table, sim)
        truth = dict(np.load(sim / "truth" / "observations.npz"))
        # per observation, against the simulator's expected counts
        rows = ev.truth_rows(to_numpy(table["id"]), to_numpy(table["miller_index"]),
                             truth["experiment"], truth["miller_index"])
        ok = rows >= 0
        expected = truth["expected_counts"][rows[ok]]
        prf = to_numpy(table["intensity.prf.value"])[ok]
        full_sum = (to_numpy(table["intensity.sum.value"])[ok]
                    / np.maximum(to_numpy(table["partiality"])[ok], 1e-3))
        self.cc_prf = float(np.corrcoef(prf, expected)[0, 1])
        self.cc_sum = float(np.corrcoef(full_sum, expected)[0, 1])
        strong = expected > 200
        self.prf_bias = float(np.median(prf[strong] / expected[strong]) - 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("box_recut")
    sim = work / "sim"
    sim.mkdir()
    dp.run_program("dials.factored_simulate", SWEEP, sim,
                   expect=["truth/models.expt", "truth/observations.npz"])
    return {"right": Run(sim, work / "right", R1_RIGHT),
            "small": Run(sim, work / "small", R1_RIGHT / 3)}


def test_boxes_are_recut_when_the_initial_r1_is_3x_too_small(runs):
    """Measured on this branch: see the test's assertion messages.  On main (no re-cut)
    the small start keeps 9 px boxes inside the 3 R_eff window of the true width."""
    right, small = runs["right"], runs["small"]
    assert right.parameters["box_recuts"] == []
    recuts = small.parameters["box_recuts"]
    assert recuts, "no re-cut from a start 3× too small"
    r1 = np.array(small.parameters["r1_a"])
    assert np.all(np.abs(r1 / R1_RIGHT - 1) < 0.25), r1


def test_intensities_recover_after_the_recut(runs):
    """Measured (1,062 observations matched to the truth; anisotropic widths, the rotation
    default): right start CC(prf, expected counts) 0.9963, CC(sum/p) 0.9944, median
    prf/expected − 1 = −0.25 %, merged CC 0.9953; small start (one re-cut after cycle 1,
    all boxes short) 0.9963, 0.9943, −0.19 %, 0.9952.  Main from the small start (9 px
    boxes, no re-cut): 0.9922, 0.9662, +1.75 %, 0.9947, and 10 reflections with a zero
    background (main from the right start: 0.9963, 0.9943, −0.31 %, 0.9953)."""
    right, small = runs["right"], runs["small"]
    assert small.cc >= right.cc - 0.002, f"merged CC to truth {small.cc:.4f} vs {right.cc:.4f}"
    assert small.n_scaled >= 0.97 * right.n_scaled, (small.n_scaled, right.n_scaled)
    assert small.cc_prf >= right.cc_prf - 0.001, (small.cc_prf, right.cc_prf)
    assert small.cc_sum >= right.cc_sum - 0.002, (small.cc_sum, right.cc_sum)
    assert abs(small.prf_bias - right.prf_bias) < 0.005, (small.prf_bias, right.prf_bias)


@pytest.mark.parametrize("name", ["right", "small"])
def test_no_silent_zero_background(runs, name):
    table = runs[name].table
    n_bg = to_numpy(table["num_pixels.background"])
    flagged = table.get_flags(table.flags.failed_during_background_modelling).as_numpy_array()
    integrated = table.get_flags(table.flags.integrated_prf).as_numpy_array()
    few = n_bg < MIN_BACKGROUND_PIXELS
    assert np.all(flagged[few]), f"{int((few & ~flagged).sum())} unflagged"
    assert not np.any(integrated & flagged)
    assert few.mean() < 0.02, f"{few.mean():.1%} with fewer than 10 background pixels"
