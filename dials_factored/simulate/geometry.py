"""Experimental geometry of the simulation: beam, detector, goniometer, scan.

Conventions are DIALS' laboratory frame: the beam travels along −z
(``s0 = (0, 0, −1/λ)``, Å⁻¹), the detector is a single flat panel normal to the beam
at ``z = −distance`` with its fast axis along +x and slow axis along −y (exactly what
``FormatCBFMini`` reconstructs from a miniCBF header), and the rotation axis of the
single-axis goniometer is +x.  Pixel coordinates are continuous: pixel ``(i, j)``
(fast, slow) covers ``[i, i+1) × [j, j+1)``.

The sensor has no material and zero thickness, so dxtbx uses ``SimplePxMmStrategy``
(no parallax correction) and DIALS computes no quantum-efficiency correction; the
forward model likewise has no parallax and a detection efficiency of 1.  A real
0.45 mm silicon sensor would shift spots outwards by up to about half a pixel at the
corners; that is deliberately left out so the forward model and DIALS' px↔mm mapping
agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from dxtbx.model import (
    BeamFactory,
    DetectorFactory,
    GoniometerFactory,
    ScanFactory,
    SimplePxMmStrategy,
)
from scitbx.array_family import flex

#: Trusted range written into the images (underload, overload), counts.
DEFAULT_TRUSTED_RANGE = (-1.0, 1.0e6)


def trusted_low(gain: float, read_noise: float) -> float:
    """Low end of the trusted range (counts): −1 for photon counting, else below any
    pixel value read noise can give (−20 σ), so negative values are data, not masked."""
    if read_noise <= 0:
        return DEFAULT_TRUSTED_RANGE[0]
    return -1.0 - float(np.ceil(20.0 * read_noise * gain))


#: The epoch (s) dxtbx reads from the fixed time stamp 1972-01-01T00:00:00 that
#: ``FormatCBFMini.as_file`` writes into every header.
HEADER_EPOCH = 63072000.0


def make_beam(wavelength: float, polarization_fraction: float = 0.999):
    """A monochromatic beam along −z, polarised with fraction ``polarization_fraction``.

    The polarisation plane normal is +y, i.e. the electric vector lies mostly along +x
    (horizontal), DIALS' convention; the miniCBF reader restores exactly this beam for
    0.999 (it writes but never reads the fraction, the default being 0.999).
    """
    return BeamFactory.make_polarized_beam(
        sample_to_source=(0.0, 0.0, 1.0), wavelength=float(wavelength),
        polarization=(0.0, 1.0, 0.0), polarization_fraction=float(polarization_fraction))


def corner_distance(size: tuple[int, int], pixel_size: float, wavelength: float,
                    d_min: float) -> float:
    """Detector distance (mm, rounded to 0.1 mm) putting resolution ``d_min`` (Å) at the corners.

    With the beam at the panel centre the corner lies ``r = ½·pixel·√(nx² + ny²)`` mm from
    it and Bragg's law gives ``2θ = 2·asin(λ/2d_min)``, so ``distance = r / tan 2θ``.
    """
    if wavelength >= 2 * d_min:
        raise ValueError(f"d_min = {d_min} Å is unreachable at λ = {wavelength} Å")
    two_theta = 2 * math.asin(wavelength / (2 * d_min))
    radius = 0.5 * pixel_size * math.hypot(size[0], size[1])
    return round(radius / math.tan(two_theta), 1)


def make_detector(size: tuple[int, int], pixel_size: float, distance: float,
                  trusted_range: tuple[float, float] = DEFAULT_TRUSTED_RANGE):
    """One flat panel of ``size`` = (fast, slow) pixels of ``pixel_size`` mm, beam at the centre.

    Built with the same factory call as ``FormatCBFMini._detector`` (sensor of unknown
    material, SimplePxMmStrategy) so that the images' header reproduces it exactly.
    ``distance`` in mm.
    """
    nx, ny = int(size[0]), int(size[1])
    beam_centre = (0.5 * nx * pixel_size, 0.5 * ny * pixel_size)
    return DetectorFactory.simple(
        None, float(distance), beam_centre, "+x", "-y", (pixel_size, pixel_size), (nx, ny),
        tuple(float(t) for t in trusted_range), [], px_mm=SimplePxMmStrategy())


def make_goniometer():
    """Single-axis goniometer, rotation axis +x (the miniCBF reader's model)."""
    return GoniometerFactory.single_axis()


def make_scan(n_images: int, phi_start: float, phi_width: float, exposure_time: float,
              first: int = 1):
    """A rotation scan of ``n_images`` frames of ``phi_width`` degrees from ``phi_start``.

    Epochs are all :data:`HEADER_EPOCH`, the fixed time stamp of the images' header.
    """
    return ScanFactory.make_scan(
        image_range=(first, first + n_images - 1), exposure_times=float(exposure_time),
        oscillation=(float(phi_start), float(phi_width)),
        epochs={i: HEADER_EPOCH for i in range(first, first + n_images)})


@dataclass(frozen=True)
class Plane:
    """Vectorised ray-plane intersection for a one-panel detector (SimplePxMmStrategy).

    A ray from the sample along ``s1`` hits the panel at the point
    ``origin + u·fast + v·slow`` (u, v in mm) when ``D·(u, v, 1) ∝ s1`` with the
    matrix ``D = [fast | slow | origin]``; then ``(u, v, w) = D⁻¹·s1`` and the point is
    ``(u/w, v/w)``, valid for ``w > 0``.  Pixel coordinates are mm / pixel size.
    """

    d_inv: np.ndarray  # 3×3, maps s1 to (u, v, w)
    pixel_size: tuple[float, float]
    size: tuple[int, int]  # (fast, slow)

    @classmethod
    def from_panel(cls, panel) -> Plane:
        d = np.asarray(panel.get_d_matrix(), dtype=float).reshape(3, 3)  # columns f, s, o
        return cls(d_inv=np.linalg.inv(d), pixel_size=tuple(panel.get_pixel_size()),
                   size=tuple(int(n) for n in panel.get_image_size()))

    def intersect_px(self, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Continuous pixel coordinates (x, y) of rays along ``s1`` (n×3); and a validity mask."""
        uvw = s1 @ self.d_inv.T
        w = uvw[:, 2]
        valid = w > 0
        safe = np.where(valid, w, 1.0)
        return (uvw[:, 0] / safe / self.pixel_size[0], uvw[:, 1] / safe / self.pixel_size[1],
                valid)

    def lab_direction(self, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        """Unit vectors from the sample to the points (x_px, y_px) of the panel (n×3)."""
        d = np.linalg.inv(self.d_inv)
        uv1 = np.stack([np.asarray(x_px, float) * self.pixel_size[0],
                        np.asarray(y_px, float) * self.pixel_size[1],
                        np.ones(np.shape(x_px))], axis=-1)
        lab = uv1 @ d.T
        return lab / np.linalg.norm(lab, axis=-1, keepdims=True)

    def pixel_index(self, x_px: np.ndarray, y_px: np.ndarray,
                    valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat pixel index ``j·nx + i`` of continuous coordinates; and the on-panel mask."""
        nx, ny = self.size
        ix = np.floor(x_px)
        iy = np.floor(y_px)
        on = valid & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        flat = np.where(on, iy * nx + ix, 0).astype(np.int64)
        return flat, on


def pixel_grid_directions(plane: Plane, rows: slice = slice(None)) -> np.ndarray:
    """Unit vectors to the pixel centres of ``rows`` (slow index), shaped (n_rows, nx, 3)."""
    nx, ny = plane.size
    y_centres = (np.arange(ny) + 0.5)[rows]
    x, y = np.meshgrid(np.arange(nx) + 0.5, y_centres)
    return plane.lab_direction(x.ravel(), y.ravel()).reshape(len(y_centres), nx, 3)


def flex_int_image(counts: np.ndarray):
    """A 2-D numpy array of counts as the flex.int image dxtbx writes (int32 required)."""
    return flex.int(np.ascontiguousarray(counts, dtype=np.int32))
