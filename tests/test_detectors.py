"""Per-experiment detectors: every per-reflection geometry uses its own experiment's detector.

Stills refined with per-still detectors (``dials.ssx_refine``, ``dials.refine`` of stills)
carry one detector model per experiment, which need not be the image set's.  Before the
fix the pixel areas came from ``experiments[0].detector`` and the ε offsets from the
image set's detector (both tests below failed: ImportError / the ε of the second
lattice equal to the first's).
"""

from __future__ import annotations

import numpy as np
from dxtbx.model import BeamFactory, DetectorFactory, Experiment, ExperimentList

from dials_factored.pixel_geometry import (
    pixel_area_eps,
    pixel_areas,
    pixel_lab,
    tangential_offsets,
)
from dials_factored.pixel_store import PixelStore
from dials_factored.shoeboxes import Boxes, _ImageCutter
from harness.fake_images import FakeImages

SIZE = 64


def _detector(distance: float):
    return DetectorFactory.simple("PAD", distance, (SIZE * 0.172 / 2, SIZE * 0.172 / 2), "+x",
                                  "-y", (0.172, 0.172), (SIZE, SIZE), trusted_range=(-1.0, 1e6))


def _experiments(distances):
    beam = BeamFactory.simple(1.0)
    return ExperimentList([Experiment(beam=beam, detector=_detector(d)) for d in distances])


def test_pixel_areas_use_each_experiments_detector():
    """Spots at the same pixel of two stills whose detectors are 100 and 104 mm away get
    the areas of their own detectors ((100/104)² apart), and experiments sharing one
    detector object share the areas."""
    experiments = _experiments([100.0, 104.0])
    experiments.append(Experiment(beam=experiments[0].beam, detector=experiments[1].detector))
    xyz = np.array([[10.0, 20.0, 0.0], [40.0, 50.0, 0.0]] * 3)
    ids = np.array([0, 0, 1, 1, 2, 2])
    s0_len = np.ones(6)
    area = pixel_areas(experiments, ids, np.zeros(6, int), xyz, s0_len)
    for i, expt in enumerate(experiments):
        np.testing.assert_allclose(area[ids == i],
                                   pixel_area_eps(expt.detector[0], xyz[ids == i], s0_len[:2]),
                                   rtol=1e-12)
    ratio = area[ids == 1] / area[ids == 0]
    assert np.all(np.abs(ratio - (100.0 / 104.0) ** 2) < 0.01)


def test_offsets_of_two_lattices_on_one_image_use_their_own_detectors(tmp_path):
    """Two lattices on one still, each with its own detector (100, 103 mm) and the image
    set's detector a third (110 mm): the image is read once, each box's ε comes from its
    own experiment's detector, and the two boxes on the same pixels share site numbers
    (so each sees the other as a neighbour)."""
    experiments = _experiments([100.0, 103.0])
    images = FakeImages(_detector(110.0), np.arange(SIZE * SIZE, dtype=float).reshape(SIZE, SIZE))
    for expt in experiments:
        expt.imageset = images
    boxes = Boxes(np.zeros(2, int), np.array([20, 22]), np.array([29, 31]), np.array([30, 30]),
                  np.array([39, 39]), np.zeros(2, int), np.ones(2, int))
    start = np.concatenate([[0], np.cumsum(boxes.n_pixels)]).astype(np.int64)
    centre = np.column_stack([(boxes.x0 + boxes.x1) // 2, (boxes.y0 + boxes.y1) // 2])
    s1 = np.array([pixel_lab(e.detector[0], c[:1].astype(float), c[1:].astype(float))[0]
                   for e, c in zip(experiments, centre)])
    s1 /= np.linalg.norm(s1, axis=1)[:, None]
    ids = np.array([0, 1])
    store = PixelStore(str(tmp_path), start)
    cutter = _ImageCutter(experiments, ids, s1, boxes, store, 1.0, [(images, 0, [0, 1], 0)])
    assert cutter(0) == start[-1]
    eps = np.column_stack([store.read("e1", 0, 2), store.read("e2", 0, 2)])
    site = store.read("site", 0, 2)
    s0 = np.asarray(experiments[0].beam.get_s0())
    for r, expt in enumerate(experiments):
        ys, xs = np.mgrid[boxes.y0[r]:boxes.y1[r], boxes.x0[r]:boxes.x1[r]]
        dx, dy = (xs - centre[r, 0]).ravel(), (ys - centre[r, 1]).ravel()
        k = np.zeros(len(dx), int)
        want = tangential_offsets(expt.detector[0], s1[r:r + 1], s0, centre[r:r + 1, 0] * 1.0,
                                  centre[r:r + 1, 1] * 1.0, k, dx, dy)
        got = eps[start[r]:start[r + 1]]
        np.testing.assert_allclose(got[:, 0], want[0], atol=1e-7)
        np.testing.assert_allclose(got[:, 1], want[1], atol=1e-7)
    # the 7 × 9 overlap of the two boxes: the same physical pixels
    assert len(np.intersect1d(site[:start[1]], site[start[1]:])) == 7 * 9


class _Sweep:
    """The part of an image sequence that ``plan_jobs`` uses: paths and file indices."""

    def __init__(self, n):
        self.n = n

    def get_path(self, index):
        return "sweep.h5"

    def indices(self):
        return list(range(self.n))


def test_two_lattices_of_one_sweep_read_each_image_once():
    """Two rotation experiments (lattices) on one image sequence: before, each had its
    own jobs, so every frame was read twice and the boxes of the two lattices, on
    different jobs, never shared a pixel site (no neighbour claims between them)."""
    from types import SimpleNamespace

    from dxtbx.model import ScanFactory

    from dials_factored.shoeboxes import plan_jobs

    sweep = _Sweep(10)
    scan = ScanFactory.make_scan((1, 10), 0.0, (0.0, 1.0), list(range(10)))
    experiments = [SimpleNamespace(imageset=sweep, scan=scan) for _ in range(2)]
    ids = np.array([0, 0, 1, 1])
    boxes = Boxes(np.zeros(4, int), np.zeros(4, int), np.full(4, 5), np.zeros(4, int),
                  np.full(4, 5), np.array([0, 4, 2, 7]), np.array([3, 8, 5, 10]))
    jobs, first, last, origin = plan_jobs(experiments, ids, boxes)
    assert len(jobs) == 10
    assert [job[3] for job in jobs] == list(range(10))
    assert all(job[2] == [0, 1] for job in jobs[2:8])
    assert all(job[2] == [k] for k, job in zip([0, 0, 1, 1], jobs[:2] + jobs[8:]))
    np.testing.assert_array_equal(first, [0, 4, 2, 7])
    np.testing.assert_array_equal(last, [2, 7, 4, 9])
    np.testing.assert_array_equal(origin, [0, 4, 2, 7])  # the job of each box's layer 0
