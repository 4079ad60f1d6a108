"""Pixel geometry of the shoeboxes: the affine ε of a box against the exact one per pixel."""

from __future__ import annotations

import numpy as np
from dxtbx.model import DetectorFactory

from dials_factored.pixel_geometry import pixel_lab, spot_frames, tangential_offsets


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


def test_box_cutting_kernel_matches_per_pixel_reference():
    """box_kernels.cut_boxes (one visit per pixel) against the same pixels taken with numpy:
    boxes inside, across the edge and off the panel, a layer of a 3D box, NaN, negative
    (below trusted), overloaded and masked pixels, a gain."""
    from dials_factored import box_kernels
    from dials_factored.pixel_geometry import offset_coefficients

    detector = DetectorFactory.simple("PAD", 150.0, (60.0, 50.0), "+x", "-y",
                                      (0.172, 0.172), (120, 100), (-1.0, 1000.0))
    panel = detector[0]
    s0 = np.array([0.0, 0.0, -1.0])
    rng = np.random.default_rng(5)
    image = rng.poisson(20.0, (100, 120)).astype(float)
    image[10, 10], image[40, 41], image[41, 40] = np.nan, -3.0, 5000.0
    static = rng.random((100, 120)) > 0.05
    x0 = np.array([30, -4, 110, 36, 200])
    y0 = np.array([30, 20, 90, 36, 10])
    x1, y1 = x0 + np.array([11, 9, 13, 11, 5]), y0 + np.array([11, 9, 13, 11, 5])
    layer = np.array([0, 0, 0, 2, 0])
    base = np.array([0, 1000, 2000, 3000, 5000])
    xr, yr = (x0 + x1) // 2, (y0 + y1) // 2
    lab = pixel_lab(panel, xr.astype(float), yr.astype(float))
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None]
    coef = offset_coefficients(panel, s1, s0, xr.astype(float), yr.astype(float))
    got = box_kernels.cut_boxes(image, static, x0, x1, y0, y1, layer, base, coef, np.float32(1.0),
                            np.float32(-1.0), np.float32(1000.0), 2.0, 3)
    for b in range(len(x0)):
        yy, xx = np.mgrid[y0[b]:y1[b], x0[b]:x1[b]]
        x, y = xx.ravel(), yy.ravel()
        area = len(x)
        dest = base[b] + layer[b] * area + np.arange(area)
        inside = (x >= 0) & (x < 120) & (y >= 0) & (y < 100)
        xi, yi = np.clip(x, 0, 119), np.clip(y, 0, 99)
        v = image[yi, xi]
        finite = inside & np.isfinite(v)
        over = finite & (v >= 1000.0)
        want_e = tangential_offsets(panel, s1[b:b + 1], s0, xr[b:b + 1] * 1.0, yr[b:b + 1] * 1.0,
                                    np.zeros(area, int), xi - xr[b], yi - yr[b])
        mine = np.isin(got[0], dest)
        order = np.argsort(got[0][mine])
        value, flags, e1, e2, site = (g[mine][order] for g in got[1:])
        np.testing.assert_array_equal(got[0][mine][order], dest)
        np.testing.assert_array_equal(value, np.where(finite, v / 2.0, 0.0).astype(np.float32))
        np.testing.assert_array_equal(flags & 1, finite & (v > -1) & static[yi, xi] & ~over)
        np.testing.assert_array_equal(flags & 2, 2 * over)
        np.testing.assert_allclose(e1, want_e[0], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(e2, want_e[1], rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(site, np.where(inside, (3 * 100 + y) * 120 + x, -1 - dest))
    assert not (got[2][got[5] < 0] & 1).any()  # nothing off the panel is usable
