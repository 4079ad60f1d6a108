"""Partiality from the radial width R0 (Å⁻¹) of the reciprocal-lattice point (seed §0, §4).

Stills:  p = exp(−ε_r²/R0_eff²),  R0_eff² = R0² + η²/d² + R_bw²,  R_bw² = (bλ)²/(2d⁴)

with ε_r the excitation error (Å⁻¹), R0 the resolution-independent radial width
(finite domains), η (rad) the mosaic spread, which smears a point at |q| = 1/d
by η/d, and b the relative rms bandwidth of the beam (a known constant: a
Gaussian spectrum of rms bλ moves the Ewald sphere by bλ/(2d²) at resolution d).
R0 and η are global (one per run) with log-normal priors.  Rotation: R0 sets the spread in φ of each
reflection, σ_φ = R0_eff/(√2 |dε_r/dφ|) (see ``profile``).  R0 is one global
parameter per run, fitted as log R0 under a log-normal prior.
"""

from __future__ import annotations

import numpy as np


def bandwidth_sq(d: np.ndarray, wavelength: np.ndarray, bandwidth: float) -> np.ndarray:
    """R_bw² (Å⁻²) for a relative rms bandwidth."""
    return (bandwidth * wavelength) ** 2 / (2.0 * d ** 4)


def stills_partiality(eps: np.ndarray, r0: float, eta: float, inv_d2: np.ndarray,
                      rbw_sq: np.ndarray):
    """p, ∂log p/∂log R0 and ∂log p/∂log η per reflection (see the module docstring).

    ``eps`` in Å⁻¹, ``r0`` in Å⁻¹, ``eta`` in rad, ``inv_d2`` = 1/d² (Å⁻²),
    ``rbw_sq`` = R_bw² (Å⁻²).
    """
    mosaic_sq = eta ** 2 * inv_d2
    r0_eff_sq = r0 ** 2 + mosaic_sq + rbw_sq
    p = np.exp(-(eps ** 2) / r0_eff_sq)
    common = 2.0 * eps ** 2 / r0_eff_sq ** 2
    return p, common * r0 ** 2, common * mosaic_sq


def rotation_zeta(m2: np.ndarray, s1: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """ζ = m2·(ŝ1 × ŝ0) (dimensionless, per reflection, rows of n×3 arrays).

    A reciprocal-lattice point crosses the Ewald sphere at |dε/dφ| = |s0|·|ζ| Å⁻¹ per
    radian, and 1/|ζ| is the Lorentz factor (the L of DIALS's ``lp``).  DIALS's
    ``zeta`` column is m2·ê1 with ê1 the *unit* vector along s1 × s0, larger by
    1/sin 2θ: the right rate for an angular mosaic spread, not for a radial width in
    Å⁻¹, which is what R0 is here.
    """
    cross = np.cross(s1, s0)
    return np.einsum("ij,ij->i", m2, cross) / (np.linalg.norm(s1, axis=1)
                                                * np.linalg.norm(s0, axis=1))


def rotation_sigma_z(r0: float, rate: np.ndarray, osc_deg: np.ndarray):
    """σ_z (frames) and ∂σ_z²/∂ log R0 for rotation reflections.

    ``rate`` = |dε_r/dφ| (Å⁻¹ per radian), ``osc_deg`` the frame width in degrees.
    """
    sigma_phi = r0 / (np.sqrt(2.0) * np.maximum(rate, 1e-6))
    sz = sigma_phi / np.radians(osc_deg)
    return sz, 2.0 * sz ** 2
