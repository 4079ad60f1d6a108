"""xyzobs.px.value/variance as DIALS's own centroider computes them (issue 18, item 4).

The pass's centroid and centroid variance of a few synthetic boxes (background-
subtracted counts, clamped at zero) against DIALS's CentroidImage2d on the same weights:
``mean()`` and ``mean_sq_error()`` (the ``xyzobs.px.variance`` of dials.integrate).
"""

from __future__ import annotations

import numpy as np
from dials.algorithms.image.centroid import CentroidImage2dDouble
from dials.array_family import flex

from dials_factored.passes import centroids
from dials_factored.shoeboxes import Boxes, Pixels


def _boxes_and_pixels(rng):
    sizes = [(7, 9), (11, 11), (5, 13)]
    x0 = np.array([10, 40, 100])
    y0 = np.array([20, 5, 60])
    counts, images = [], []
    bg = np.array([2.0, 0.3, 5.0])
    for (nx, ny), b, cx, cy in zip(sizes, bg, (3.2, 5.6, 2.4), (4.1, 4.9, 6.7)):
        yy, xx = np.mgrid[0:ny, 0:nx] + 0.5
        spot = 300 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.3 ** 2))
        image = rng.poisson(spot + b).astype(float)
        images.append(image)
        counts.append(image.ravel())
    n = np.array([c.size for c in counts])
    start = np.concatenate([[0], np.cumsum(n)])
    flat = np.concatenate(counts).astype(np.float32)
    ones = np.ones(len(flat), bool)
    zeros = np.zeros(len(flat), np.float32)
    pix = Pixels(flat, ones, ~ones, zeros, zeros, np.zeros(len(flat), np.int32), start,
                 np.arange(len(flat)))
    boxes = Boxes(np.zeros(3, int), x0, x0 + [s[0] for s in sizes], y0,
                  y0 + [s[1] for s in sizes], np.zeros(3, int), np.ones(3, int))
    return pix, boxes, bg, images, x0, y0


def test_centroid_and_variance_are_dialss():
    pix, boxes, bg, images, x0, y0 = _boxes_and_pixels(np.random.default_rng(3))
    use = np.ones(len(pix.counts), bool)
    centre, variance = centroids(pix, use, bg, np.zeros((3, 3)), boxes)
    for i, image in enumerate(images):
        weights = flex.double(np.maximum(image - bg[i], 0.0).astype(float).ravel().tolist())
        weights.reshape(flex.grid(*image.shape))
        dials = CentroidImage2dDouble(weights)
        mean = np.array(dials.mean()) + [x0[i], y0[i]]
        np.testing.assert_allclose(centre[i, :2], mean, rtol=0, atol=1e-4)
        np.testing.assert_allclose(variance[i, :2], np.array(dials.mean_sq_error()),
                                   rtol=1e-4)
        assert variance[i, 2] == 1.0 / 12.0  # one frame


def test_box_without_signal_has_the_box_variance():
    pix, boxes, bg, _, _, _ = _boxes_and_pixels(np.random.default_rng(4))
    use = np.ones(len(pix.counts), bool)
    high = bg + 1e6  # nothing above the background
    centre, variance = centroids(pix, use, high, np.full((3, 3), 7.0), boxes)
    np.testing.assert_array_equal(centre, 7.0)  # the predictions kept
    np.testing.assert_allclose(variance[:, 0], (boxes.x1 - boxes.x0) ** 2 / 12.0)
    np.testing.assert_allclose(variance[:, 1], (boxes.y1 - boxes.y0) ** 2 / 12.0)
