"""The profile template P_p of the factored model (seed §0), per pixel.

Tangential profile: the reflection's photons leave the crystal around ŝ1 with a
Gaussian spread of width R1 (Å⁻¹, measured on the Ewald sphere),

    P_tang(ε_t) = A / (π Ra Rb) · exp(−ε1²/Ra² − ε2²/Rb²)

normalised to 1 over the whole plane, A the pixel area on the Ewald sphere
(Å⁻², so Σ_p P_p → 1 for a box that holds the spot).  Ra (circumferential)
equals Rb (radial) unless the anisotropic option is on.  Sampling the profile
at pixel centres adds the pixel's own variance a²/12 per direction (a = √A),
so the widths used are R_eff² = R1² + a²/6.

Rotation data add the rotation direction: the photons are spread in φ as a
Gaussian whose σ_φ combines the radial width R0 and the angular mosaic spread σ_m,
σ_φ² = R0²/(2 |dε/dφ|²) + σ_m²/ζ_u² (see ``model.partiality``).  The fraction recorded on frame f
(covering [f, f+1) in frame units, φ-centre z_c) is

    F_f = Φ((f + 1 − z_c)/σ_z) − Φ((f − z_c)/σ_z),   σ_z = σ_φ/Δφ

and P_p = P_tang · F_f, so Σ over all frames is 1 and J estimates the full
reflection even when the box or the scan cuts it.  The spot moves while the reflection
crosses the sphere (:func:`follow_spot`): P_tang of frame f is centred where that
frame's photons are, t_f·Δφ·v from the predicted centre, v from ``forward.spot_drift``.
The recorded fraction (the output ``partiality``) sums F_f over the frames of the box
that lie inside the scan only: frames before the first or after the last image hold no
pixels.
"""

from __future__ import annotations

from dataclasses import replace

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
    """F_f: fraction of a rotation reflection's photons on each pixel's frame f,
    Φ((f + 1 − z_c)/σ_z) − Φ((f − z_c)/σ_z) for a Gaussian φ profile of centre z_c and
    width σ_z (frames) (``kernels.frame_fraction``)."""
    return kernels.frame_fraction(pix.frame, pix.start, np.asarray(z_centre, float),
                                  np.asarray(sigma_z, float))


def follow_spot(pix, w):
    """The pixels with ε1, ε2 measured from where the spot is on each frame.

    While a rotation reflection crosses the Ewald sphere its spot moves on the detector:
    the photons recorded δφ (rad) after the crossing of the centre come from parts of the
    lattice point whose own crossing is δφ later, and leave along the rotated direction.
    To first order the spot centre moves by δφ·v (Å⁻¹, in the tangent plane at ŝ1;
    ``forward.spot_drift``), and the photons of frame f are centred at t_f·Δφ·v from
    the predicted centre, t_f the mean of z − z_c over the part of the Gaussian φ
    profile on that frame (not f + ½ − z_c: a spot recorded on two frames has its
    photons near the frames' common edge).  With ``w.drift`` = Δφ·(v·e1, v·e2) (Å⁻¹ per
    frame) the offsets become ε − t_f·Δφ·v, so that the template, the foreground and the
    shape moments follow the spot; stills, or no drift, are returned as they are.
    """
    if w.drift is None:
        return pix
    e1, e2 = kernels.follow_spot(pix.e1, pix.e2, pix.frame, pix.start,
                                 np.asarray(w.zc, float), np.asarray(w.sz, float),
                                 *(np.asarray(d, float) for d in w.drift))
    return replace(pix, e1=e1, e2=e2)


def window(pix, ra_eff: np.ndarray, rb_eff: np.ndarray, k: float) -> np.ndarray:
    """Foreground: pixels inside the ellipse ε1²/Ra² + ε2²/Rb² < k²."""
    return tangential_window(pix, ra_eff, rb_eff, np.ones(len(ra_eff)), k)[1]


def frame_window(pix, z_centre: np.ndarray, sigma_z: np.ndarray, k: float) -> np.ndarray:
    """Rotation foreground along φ: frames whose centre is within k·σ_z + ½ of z_c."""
    return kernels.frame_window(pix.frame, pix.start, np.asarray(z_centre, float),
                                np.asarray(sigma_z, float), float(k))


def recorded_fraction(z_centre: np.ndarray, sigma_z: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray) -> np.ndarray:
    """Σ F_f over the frames lo ≤ f < hi: Φ((hi − z_c)/σ_z) − Φ((lo − z_c)/σ_z) (per reflection).

    ``lo``/``hi`` are the box's first and end frames clipped to the scan; 0 where empty.
    """
    s = np.maximum(sigma_z, 1e-12)
    frac = ndtr((hi - z_centre) / s) - ndtr((lo - z_centre) / s)
    return np.where(hi > lo, frac, 0.0)
