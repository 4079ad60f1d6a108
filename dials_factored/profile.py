"""The profile template P_p of the factored model (seed §0), per pixel.

Tangential profile: the reflection's photons leave the crystal around ŝ1 with a
Gaussian spread of width R1 (Å⁻¹, measured on the Ewald sphere),

    P_tang(ε_t) = A / (π Ra Rb) · exp(−ε1²/Ra² − ε2²/Rb²)

normalised to 1 over the whole plane, A the pixel area on the Ewald sphere
(Å⁻², so Σ_p P_p → 1 for a box that holds the spot).  Ra (circumferential)
equals Rb (radial) unless the anisotropic option is on.  Sampling the profile
at pixel centres adds the pixel's own variance a²/12 per direction (a = √A),
so the widths used are R_eff² = R1² + a²/6.

Rotation data add the rotation direction: a reciprocal-lattice point smeared
radially as exp(−ε_r²/R0²) crosses the Ewald sphere at the rate
|dε_r/dφ| = |ŝ1·(m2 × q)| (Å⁻¹/rad), so its photons are spread in φ as a
Gaussian of σ_φ = R0/(√2 |dε_r/dφ|).  The fraction recorded on frame f
(covering [f, f+1) in frame units, φ-centre z_c) is

    F_f = Φ((f + 1 − z_c)/σ_z) − Φ((f − z_c)/σ_z),   σ_z = σ_φ/Δφ

and P_p = P_tang · F_f, so Σ over all frames is 1 and J estimates the full
reflection even when the box or the scan cuts it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from dials_factored import kernels


def effective_widths(r1a: np.ndarray, r1b: np.ndarray, area: np.ndarray):
    """R_eff (Å⁻¹) per reflection along e1 and e2, including pixel sampling."""
    extra = area / 6.0
    return np.sqrt(r1a ** 2 + extra), np.sqrt(r1b ** 2 + extra)


def tangential(pix, ra_eff: np.ndarray, rb_eff: np.ndarray, area: np.ndarray) -> np.ndarray:
    """P_tang at every pixel (fraction of the reflection's photons in that pixel)."""
    return tangential_window(pix, ra_eff, rb_eff, area, 0.0)[0]


def tangential_window(pix, ra_eff, rb_eff, area, k: float):
    """P_tang and the foreground :func:`window` of radius ``k`` in one pass."""
    return kernels.tangential_window(pix.e1, pix.e2, pix.start, *(
        np.asarray(a, float) for a in (ra_eff, rb_eff, area)), float(k))


def frame_fraction(pix, z_centre: np.ndarray, sigma_z: np.ndarray) -> np.ndarray:
    """F_f: fraction of a rotation reflection's photons on each pixel's frame."""
    o = pix.owner
    s = sigma_z[o]
    lo = (pix.frame - z_centre[o]) / s
    return ndtr(lo + 1.0 / s) - ndtr(lo)


def window(pix, ra_eff: np.ndarray, rb_eff: np.ndarray, k: float) -> np.ndarray:
    """Foreground: pixels inside the ellipse ε1²/Ra² + ε2²/Rb² < k²."""
    return tangential_window(pix, ra_eff, rb_eff, np.ones(len(ra_eff)), k)[1]


def frame_window(pix, z_centre: np.ndarray, sigma_z: np.ndarray, k: float) -> np.ndarray:
    """Rotation foreground along φ: frames whose centre is within k·σ_z + ½ of z_c."""
    return kernels.frame_window(pix.frame, pix.start, np.asarray(z_centre, float),
                                np.asarray(sigma_z, float), float(k))
