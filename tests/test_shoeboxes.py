"""Pixel geometry of the shoeboxes: the affine ε of a box against the exact one per pixel."""

from __future__ import annotations

import numpy as np
from dxtbx.model import DetectorFactory

from dials_factored.shoeboxes import pixel_lab, spot_frames, tangential_offsets


def test_affine_offsets_match_exact_geometry():
    """ε1, ε2 from the per-box affine lab position equal |s0|·(û_p − ŝ1)·f to 1e-6 Å⁻¹
    over 31 × 31-pixel boxes of a Pilatus-sized panel, spots near and far from the beam."""
    detector = DetectorFactory.simple("PAD", 150.0, (1230.0, 1260.0), "+x", "-y",
                                      (0.172, 0.172), (2463, 2527), (-1.0, 1e6))
    panel = detector[0]
    wavelength = 1.0
    s0 = np.array([0.0, 0.0, -1.0 / wavelength])
    centres = np.array([[1240.0, 1300.0], [60.0, 80.0], [2400.0, 2450.0], [300.0, 2200.0]])
    lab = pixel_lab(panel, centres[:, 0], centres[:, 1])
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None] / wavelength
    half = 15
    dx, dy = (g.ravel().astype(float) for g in np.meshgrid(np.arange(-half, half + 1),
                                                             np.arange(-half, half + 1)))
    for spot in range(len(centres)):
        k = np.zeros(len(dx), int)
        e1, e2 = tangential_offsets(panel, s1[spot:spot + 1], s0, centres[spot:spot + 1, 0],
                                    centres[spot:spot + 1, 1], k, dx, dy)
        exact_lab = pixel_lab(panel, centres[spot, 0] + dx, centres[spot, 1] + dy)
        u = exact_lab / np.linalg.norm(exact_lab, axis=1)[:, None]
        unit, f1, f2 = spot_frames(s1[spot:spot + 1], s0)
        diff = (u - unit) / wavelength
        np.testing.assert_allclose(e1, diff @ f1[0], atol=1e-6)
        np.testing.assert_allclose(e2, diff @ f2[0], atol=1e-6)
        assert np.abs(diff @ f1[0]).max() > 1e-3  # the box spans many profile widths


def test_near_finds_every_box_that_can_share_a_pixel():
    """Boxes sharing a pixel on a common frame are near; boxes on other frames, other
    panels or far away on the detector are not (the neighbour search of a block)."""
    from dials_factored.shoeboxes import Boxes, near

    def boxes(*rows):  # (panel, x0, x1, y0, y1, z0, z1)
        return Boxes(*(np.array(column) for column in zip(*rows)))

    core = boxes((0, 100, 115, 200, 215, 10, 14))
    others = boxes((0, 114, 129, 214, 229, 13, 16),   # one pixel in common on frame 13
                   (0, 114, 129, 214, 229, 14, 18),   # same pixels, later frames
                   (1, 100, 115, 200, 215, 10, 14),   # another panel
                   (0, 400, 415, 200, 215, 10, 14))   # far away
    assert near(core, others).tolist() == [True, False, False, False]
