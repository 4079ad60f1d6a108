"""The output's mm centroids: ours (grouped by one sort) against DIALS's own conversion."""

from __future__ import annotations

import numpy as np
from dials.array_family import flex
from dxtbx.model import Detector, Experiment, ExperimentList, ScanFactory

from dials_factored.arrays import to_numpy
from dials_factored.output_geometry import centroids_px_to_mm


def _detector(distance: float) -> Detector:
    """Two 100 × 100 px panels of 0.172 mm pixels, side by side, with a silicon sensor
    (parallax correction on)."""
    detector = Detector()
    for i in range(2):
        panel = detector.add_panel()
        panel.set_image_size((100, 100))
        panel.set_pixel_size((0.172, 0.172))
        panel.set_thickness(0.45)
        panel.set_material("Si")
        panel.set_mu(3.96)
        panel.set_frame((1, 0, 0), (0, -1, 0), (-10.0 + 18.0 * i, 8.0, -distance))
    return detector


def test_mm_centroids_equal_dials_for_stills_and_a_sweep():
    """Five stills (two detectors, two panels each) and a rotation sweep: every row's
    xyzobs.mm value and variance as reflection_table.centroid_px_to_mm gives them."""
    experiments = ExperimentList()
    for i in range(5):
        experiments.append(Experiment(detector=_detector(100.0 + 20 * (i % 2))))
    experiments.append(Experiment(detector=_detector(150.0),
                                  scan=ScanFactory.make_scan((1, 20), 0.0, (10.0, 0.5),
                                                             list(range(20)))))
    rng = np.random.default_rng(3)
    n = 400
    table = flex.reflection_table()
    table["id"] = flex.int(rng.integers(0, len(experiments), n).tolist())
    table["panel"] = flex.size_t(rng.integers(0, 2, n).tolist())
    xyz = np.column_stack([rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(0, 20, n)])
    table["xyzobs.px.value"] = flex.vec3_double(xyz)
    table["xyzobs.px.variance"] = flex.vec3_double(rng.uniform(0.01, 1.0, (n, 3)))
    ours = table.copy()
    centroids_px_to_mm(ours, experiments)
    table.centroid_px_to_mm(experiments)
    for column in ("xyzobs.mm.value", "xyzobs.mm.variance"):
        expected = to_numpy(table[column])
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(to_numpy(ours[column]), expected, rtol=1e-12, atol=1e-15)
