"""Image formation: smooth background, Poisson counting, hot pixels, zingers, CBF writing.

Units: photons per pixel per image; the images hold round(gain·(photons + read noise))
counts (gain 1 and no read noise by default: counts = photons).

Background (per pixel, per image), a function of the scattering vector length
``q = 2 sin θ / λ`` (Å⁻¹) at the pixel centre::

    bg(q) = c·[constant + inner·exp(−q/q_inner) + ring·exp(−(q − 1/d_ring)²/(2 w²))]

a flat floor, a gentle rise towards the beam and a soft "water ring" at ``d_ring``
(default 3.5 Å, rms width w in q).  ``c`` is a per-image factor (stills: log-normal
around 1; rotation: 1).  Counts are ``Poisson(bg + signal)``; then every hot pixel is
*set* to its own constant value (the same on every image, not masked), and zingers add
a uniform random 50–2000 counts to single random pixels of random images.

Detector layout (:class:`DetectorLayout`, optional): Pilatus-like module gaps — the
panel is tiled with modules of ``module_size`` pixels separated by ``module_gap``
pixels (fast, slow; 487×195 and 7, 17 on a Pilatus 6M) whose pixels record nothing and
are written as −1 (below the trusted range, so dxtbx masks them) — and a beamstop
shadow: a disc of ``beamstop_radius`` px about the beam centre and an arm of
``beamstop_arm_width`` px from it to the panel's +x edge, where the expected photons
(background and spots) are multiplied by ``beamstop_transmission``.  The shadow is
*not* masked: it is what users forget to mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from dxtbx.format.FormatCBFMini import FormatCBFMini

from dials_factored.simulate.geometry import flex_int_image, pixel_grid_directions


@dataclass(frozen=True)
class Background:
    """Parameters of the smooth background (photons/pixel; see the module docstring)."""

    constant: float = 1.0
    inner: float = 1.0
    q_inner: float = 0.15  # Å⁻¹
    ring: float = 1.0
    ring_d: float = 3.5  # Å
    ring_width: float = 0.015  # Å⁻¹, rms in q

    def model(self, plane, wavelength: float) -> np.ndarray:
        """The background (ny, nx) for per-image factor 1 (photons per pixel)."""
        nx, ny = plane.size
        out = np.empty((ny, nx))
        rows = max(1, 2**20 // nx)  # about a million pixels at a time
        for start in range(0, ny, rows):
            block = slice(start, min(ny, start + rows))
            u1 = pixel_grid_directions(plane, block)
            cos2t = -u1[..., 2]  # the beam travels along −z
            q = np.sqrt(np.clip(2 * (1 - cos2t), 0, None)) / wavelength
            out[block] = (self.constant + self.inner * np.exp(-q / self.q_inner)
                          + self.ring * np.exp(-0.5 * ((q - 1 / self.ring_d)
                                                       / self.ring_width) ** 2))
        return out


@dataclass
class DetectorLayout:
    """Module gaps (bool, (ny, nx)) and the beamstop's transmission ((ny, nx), 0–1)."""

    gap: np.ndarray
    transmission: np.ndarray
    settings: dict

    @classmethod
    def build(cls, size: tuple[int, int], p) -> DetectorLayout | None:
        """The layout of the detector phil scope ``p`` (None: no gaps, no beamstop)."""
        nx, ny = size
        gap = np.zeros((ny, nx), bool)
        if p.module_size is not None:
            (mx, my), (gx, gy) = p.module_size, p.module_gap
            gap |= (np.arange(nx) % (mx + gx) >= mx)[None, :]
            gap |= (np.arange(ny) % (my + gy) >= my)[:, None]
        trans = np.ones((ny, nx))
        if p.beamstop_radius > 0 or p.beamstop_arm_width > 0:
            x, y = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)
            cx, cy = nx / 2, ny / 2
            shadow = (x - cx) ** 2 + (y - cy) ** 2 < p.beamstop_radius ** 2
            shadow |= (x >= cx) & (np.abs(y - cy) < p.beamstop_arm_width / 2)
            trans[shadow] = p.beamstop_transmission
        if not gap.any() and np.all(trans == 1):
            return None
        settings = {"module_size": None if p.module_size is None else list(p.module_size),
                    "module_gap": list(p.module_gap), "beamstop_radius_px": p.beamstop_radius,
                    "beamstop_arm_width_px": p.beamstop_arm_width,
                    "beamstop_transmission": p.beamstop_transmission}
        return cls(gap=gap, transmission=trans, settings=settings)

    def describe(self) -> dict:
        return dict(self.settings, gap_pixels=int(self.gap.sum()),
                    shadow_pixels=int((self.transmission < 1).sum()))

    def sensitive(self, pixel: np.ndarray) -> np.ndarray:
        """Whether flat pixel indices lie on a module (not in a gap)."""
        return ~self.gap.ravel()[pixel]

    def attenuate(self, photons_flat: np.ndarray) -> np.ndarray:
        """Expected photons (flat) behind the beamstop's shadow, none in the gaps."""
        return photons_flat * self.transmission.ravel() * ~self.gap.ravel()

    def write_gaps(self, counts: np.ndarray) -> np.ndarray:
        """Gap pixels set to −1 (in place), as a Pilatus writes them."""
        counts[self.gap] = -1
        return counts


@dataclass
class Defects:
    """Hot pixels (fixed) and zingers (per image), recorded for the truth files."""

    hot_xy: np.ndarray  # (n, 2) int: fast, slow pixel coordinates
    hot_value: np.ndarray  # (n,) int counts
    zingers: list = field(default_factory=list)  # (image, x, y, counts)

    @classmethod
    def draw_hot(cls, size: tuple[int, int], count: int, value_range: tuple[float, float],
                 rng: np.random.Generator) -> Defects:
        """``count`` distinct random pixels, each with a log-uniform value in ``value_range``."""
        nx, ny = size
        flat = rng.choice(nx * ny, size=count, replace=False) if count else np.zeros(0, int)
        lo, hi = np.log(value_range[0]), np.log(value_range[1])
        values = np.exp(rng.uniform(lo, hi, count)).round().astype(np.int64)
        return cls(hot_xy=np.column_stack([flat % nx, flat // nx]).astype(np.int64),
                   hot_value=values)

    def hot_flat(self, nx: int) -> np.ndarray:
        """Flat indices ``y·nx + x`` of the hot pixels."""
        return self.hot_xy[:, 1] * nx + self.hot_xy[:, 0]

    def apply(self, counts: np.ndarray, image: int, rate: float,
              count_range: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Set the hot pixels and add this image's zingers (in place); the zinger flat indices."""
        ny, nx = counts.shape
        counts[self.hot_xy[:, 1], self.hot_xy[:, 0]] = self.hot_value
        n = int(rng.poisson(rate))
        flat = rng.integers(0, nx * ny, size=n)
        extra = rng.integers(count_range[0], count_range[1] + 1, size=n)
        for f, e in zip(flat, extra):
            counts.flat[f] += e
            self.zingers.append((int(image), int(f % nx), int(f // nx), int(e)))
        return flat


def poisson_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts (int64) of an expected-photon image."""
    return rng.poisson(expected).astype(np.int64)


def readout(photons: np.ndarray, gain: float, read_noise: float,
            rng: np.random.Generator) -> np.ndarray:
    """Pixel values (int64 counts) of a photon image: round(gain·(photons + σ·N(0, 1))).

    Photon counting (σ = 0, gain 1) returns the photons unchanged; an integrating
    detector adds Gaussian read noise σ (photons rms, drawn from ``rng``) and
    digitises at ``gain`` counts per photon (rounding adds 1/(12 gain²) photons²).
    """
    if read_noise <= 0 and gain == 1:
        return photons
    value = photons.astype(float)
    if read_noise > 0:
        value += read_noise * rng.standard_normal(photons.shape)
    return np.rint(gain * value).astype(np.int64)


def write_cbf(path, counts: np.ndarray, detector, beam, goniometer=None, scan=None) -> None:
    """Write one miniCBF (int32 counts, geometry in the header) with FormatCBFMini.as_file.

    Values are clipped to the int32 range above the detector's trusted low end (−1 for
    photon counting: values there are masked)."""
    top = np.iinfo(np.int32).max
    low = min(-1.0, detector[0].get_trusted_range()[0])
    FormatCBFMini.as_file(detector, beam, goniometer, scan,
                          flex_int_image(np.clip(counts, low, top)), str(path))
