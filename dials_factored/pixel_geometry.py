"""Pixel geometry on the Ewald sphere: the spot frame, ε offsets of pixels, pixel areas.

For each pixel of a box, the tangential offset from the predicted spot centre in
reciprocal space is

    ε_t = |s0| · (û_p − ŝ1)    projected on  e1 = ŝ1×ŝ0/|ŝ1×ŝ0|  and  e2 = ŝ1×e1   (Å⁻¹)

where û_p is the unit vector from the crystal to the pixel centre (parallax included
through the panel's pixel→mm strategy); e1 is the circumferential and e2 the radial
(2θ) direction of the spot.  Every experiment uses its own detector.
"""

from __future__ import annotations

import numpy as np
from dials.array_family import flex

from dials_factored.arrays import to_numpy


def spot_frames(s1: np.ndarray, s0: np.ndarray):
    """Unit vectors ŝ1, e1 (circumferential) and e2 (radial) of each spot, shape (n, 3).

    ``s0`` is one beam vector (3,) or one per spot (n, 3).
    """
    u = s1 / np.linalg.norm(s1, axis=1)[:, None]
    e1 = np.cross(u, s0)
    e1 /= np.maximum(np.linalg.norm(e1, axis=1), 1e-12)[:, None]
    e2 = np.cross(u, e1)
    return u, e1, e2


def _vec2(x: np.ndarray, y: np.ndarray):
    return flex.vec2_double(flex.double(np.ascontiguousarray(x, dtype=float)),
                            flex.double(np.ascontiguousarray(y, dtype=float)))


def pixel_lab(panel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Lab coordinates (mm) of the centres of pixels (x, y) of one panel (n×3)."""
    mm = panel.pixel_to_millimeter(_vec2(x + 0.5, y + 0.5))
    return to_numpy(panel.get_lab_coord(mm))


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def offset_coefficients(panel, s1: np.ndarray, s0: np.ndarray, xr: np.ndarray,
                        yr: np.ndarray) -> np.ndarray:
    """Per spot, the 12 float32 coefficients of ε1, ε2 as functions of the pixel offset.

    Per spot (arrays s1, xr, yr), the lab position of a pixel is affine in the pixel
    offset, L = L0 + Lx·dx + Ly·dy (exact for a flat panel; the parallax correction
    is linearised over one box); with f1, f2 ⟂ ŝ1 (``spot_frames``),
    ε_i = |s0|·(L·f_i)/|L|.  The columns are |L|² = c0 + dx(c1 + dx·c3 + dy·c4) +
    dy(c2 + dy·c5), L·f1 = c6 + c7·dx + c8·dy and L·f2 = c9 + c10·dx + c11·dy; they are
    computed in float64 and stored in float32 (the precision ε is stored with).
    """
    l0 = pixel_lab(panel, xr, yr)
    lx = pixel_lab(panel, xr + 1.0, yr) - l0
    ly = pixel_lab(panel, xr, yr + 1.0) - l0
    _, f1, f2 = spot_frames(s1, s0)
    dot = _row_dot
    return np.column_stack([
        dot(l0, l0), 2 * dot(l0, lx), 2 * dot(l0, ly), dot(lx, lx), 2 * dot(lx, ly),
        dot(ly, ly), dot(l0, f1), dot(lx, f1), dot(ly, f1), dot(l0, f2), dot(lx, f2),
        dot(ly, f2)]).astype(np.float32)


def tangential_offsets(panel, s1: np.ndarray, s0: np.ndarray, xr: np.ndarray, yr: np.ndarray,
                       k: np.ndarray, dx: np.ndarray, dy: np.ndarray):
    """ε1, ε2 (Å⁻¹, float32) of pixels at (xr + dx, yr + dy) of spots with beams ``s1``
    (``offset_coefficients``); ``k`` maps each pixel to its spot."""
    c = offset_coefficients(panel, s1, s0, xr, yr)[k].T
    dx = dx.astype(np.float32)
    dy = dy.astype(np.float32)
    scale = np.float32(np.linalg.norm(s0)) / np.sqrt(
        c[0] + dx * (c[1] + dx * c[3] + dy * c[4]) + dy * (c[2] + dy * c[5]))
    return ((c[6] + c[7] * dx + c[8] * dy) * scale, (c[9] + c[10] * dx + c[11] * dy) * scale)


def pixel_area_eps(panel, xyz_px: np.ndarray, s0_len: np.ndarray) -> np.ndarray:
    """Area (Å⁻²) of one pixel mapped onto the Ewald sphere at each spot.

    A pixel of area a_x·a_y at distance |X| seen at angle α to the panel normal
    subtends a solid angle a_x·a_y·cos α/|X|²; on a sphere of radius |s0| that
    is an area |s0|²·a_x·a_y·cos α/|X|².
    """
    mm = panel.pixel_to_millimeter(_vec2(xyz_px[:, 0], xyz_px[:, 1]))
    lab = to_numpy(panel.get_lab_coord(mm))
    dist = np.linalg.norm(lab, axis=1)
    normal = np.asarray(panel.get_normal(), dtype=float)
    cos_a = np.abs(lab @ normal) / dist
    ax, ay = panel.get_pixel_size()
    return s0_len ** 2 * ax * ay * cos_a / dist ** 2


def detector_index(experiments) -> tuple[list, np.ndarray]:
    """(distinct detector models, index of each experiment's detector among them).

    Stills refined with per-still detectors (``dials.ssx_refine``, ``dials.refine``)
    have one detector per experiment; every per-reflection geometry uses its own
    experiment's detector, computed once per distinct detector and panel.
    """
    detectors = list(experiments.detectors())
    index = np.zeros(len(experiments), int)
    for k, det in enumerate(detectors):
        index[np.asarray(experiments.where(detector=det), dtype=int)] = k
    return detectors, index


def pixel_areas(experiments, ids: np.ndarray, panels: np.ndarray, xyz_px: np.ndarray,
                s0_len: np.ndarray) -> np.ndarray:
    """``pixel_area_eps`` (Å⁻²) of each spot on its own experiment's detector panel."""
    detectors, det_of = detector_index(experiments)
    area = np.zeros(len(ids))
    if len(ids) == 0:
        return area
    key = det_of[ids] * (int(panels.max()) + 1) + panels
    for k in np.unique(key):
        sel = key == k
        panel = detectors[det_of[ids[sel][0]]][int(panels[sel][0])]
        area[sel] = pixel_area_eps(panel, xyz_px[sel], s0_len[sel])
    return area
