"""The detector distance fitted to the strong spots with the corrected crystals.

Spots of a crystal are placed on a detector 205 mm away; the experiments say 200 mm (a
header off by 2.5 %, as the thaumatin grid stills' seem to be by 1.5 %).  The fit must
find the 5 mm, put the predictions back on the spots, and leave a right distance alone.
"""

from __future__ import annotations

import numpy as np
from dials.array_family import flex
from dxtbx.model import BeamFactory, Crystal, Detector, Experiment, ExperimentList
from scitbx import matrix

from dials_factored.arrays import to_numpy
from dials_factored.detector_distance import refine_distance
from dials_factored.output_geometry import _repredict_stills


def _experiments(distance: float) -> ExperimentList:
    detector = Detector()
    panel = detector.add_panel()
    panel.set_image_size((1200, 1200))
    panel.set_pixel_size((0.172, 0.172))
    panel.set_frame((1, 0, 0), (0, -1, 0), (-103.2, 103.2, -distance))
    beam = BeamFactory.simple(1.0)
    rot = matrix.col((1, 2, 3)).normalize().axis_and_angle_as_r3_rotation_matrix(0.4)
    crystal = Crystal(rot * matrix.col((50, 0, 0)), rot * matrix.col((0, 60, 0)),
                      rot * matrix.col((0, 0, 70)), space_group_symbol="P1")
    return ExperimentList([Experiment(beam=beam, detector=detector, crystal=crystal)])


def _spots(true_distance: float, rng) -> flex.reflection_table:
    """The reflections within 0.001 Å⁻¹ of the sphere, observed on the true detector."""
    experiments = _experiments(true_distance)
    a_mat = np.array(experiments[0].crystal.get_A()).reshape(3, 3)
    grid = np.arange(-25, 26)
    hkl = np.array(np.meshgrid(grid, grid, grid)).reshape(3, -1).T
    q = hkl @ a_mat.T
    s0 = np.array(experiments[0].beam.get_s0())
    eps = np.linalg.norm(q + s0, axis=1) - np.linalg.norm(s0)
    near = (np.abs(eps) < 1e-3) & (np.linalg.norm(q, axis=1) < 0.5) & np.any(hkl != 0, axis=1)
    table = flex.reflection_table()
    n = int(near.sum())
    table["id"] = flex.int(n, 0)
    table["miller_index"] = flex.miller_index([tuple(map(int, h)) for h in hkl[near]])
    table["panel"] = flex.size_t(n, 0)
    table["s1"] = flex.vec3_double(n)
    table["excitation_error"] = flex.double(n)
    table["xyzcal.mm"] = flex.vec3_double(n)
    table["xyzcal.px"] = flex.vec3_double(n)
    _repredict_stills(table, experiments, [0])
    observed = to_numpy(table["xyzcal.px"]) + np.column_stack(
        [rng.normal(0, 0.3, (n, 2)), np.zeros(n)])
    table["xyzobs.px.value"] = flex.vec3_double(observed)
    table.set_flags(flex.bool(n, True), table.flags.strong)
    return table


def test_the_header_distance_error_is_found_and_removed():
    table = _spots(205.0, np.random.default_rng(1))
    assert len(table) > 200
    experiments = _experiments(200.0)
    summary = refine_distance(experiments, table, [0], _repredict_stills)
    assert abs(summary["shift_mm"] - 5.0) < 0.05, summary
    assert summary["rms_px_before"] > 5.0 and summary["rms_px_after"] < 0.4, summary
    assert abs(experiments[0].detector[0].get_distance() - 205.0) < 0.05
    _repredict_stills(table, experiments, [0])
    residual = to_numpy(table["xyzcal.px"])[:, :2] - to_numpy(table["xyzobs.px.value"])[:, :2]
    assert np.sqrt(np.mean(residual ** 2)) < 0.5


def test_a_right_distance_stays_and_no_spots_is_no_fit():
    table = _spots(200.0, np.random.default_rng(2))
    experiments = _experiments(200.0)
    summary = refine_distance(experiments, table, [0], _repredict_stills)
    assert abs(summary["shift_mm"]) < 0.05, summary
    table.unset_flags(flex.bool(len(table), True), table.flags.strong)
    assert refine_distance(experiments, table, [0], _repredict_stills) is None
