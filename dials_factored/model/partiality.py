"""Partiality from the radial width R0 (Å⁻¹) of the reciprocal-lattice point (seed §0, §4).

Stills:  p = exp(−ε_r²/R0_eff²),  R0_eff² = R0² + η²/d² + R_bw²,  R_bw² = (bλ)²/(2d⁴)

with ε_r the excitation error (Å⁻¹), R0 the resolution-independent radial width
(finite domains), η (rad) the mosaic spread, which smears a point at |q| = 1/d
by η/d, and b the relative rms bandwidth of the beam (a known constant: a
Gaussian spectrum of rms bλ moves the Ewald sphere by bλ/(2d²) at resolution d).
R0 and η are global (one per run) with log-normal priors.

Normalisation (the stills Lorentz factor, docs/conventions.md).  p = 1 on the sphere
whatever R0_eff: J_model = G·exp(B/4d²)·p·pol·I with I the photons the reflection gives
when its centre lies on the Ewald sphere.  The kinematic count is not that: the
photons of a still are N ∝ ∫dλ s(λ) λ² ∫_sphere ρ dS (ρ the reciprocal-lattice
point's density, s the normalised spectrum, λ²dS the solid angle), and with a
Gaussian point and spectrum of total radial rms R = R0_eff/√2 this is
N ∝ |F|²·exp(−ε²/2R²)/(√(2π)·R): a factor L(d) = R0/R0_eff(d) (:func:`stills_lorentz`)
that this model, DIALS (stills ``lp`` = 1/P, the ellipsoid model's partiality
exp(−ε²/2S22) with peak 1) and CrystFEL (``set_lorentz(refl, 1.0)``, its partialities
"revert the Lorentz factor" to peak 1) all leave out.  It is a function of d alone, so
with I_h free per reflection it changes no fitted G, B, R0 or η; it scales the merged
intensities by 1/L(d), a smooth resolution fall-off (for the simulator's default stills
1/L(1.8 Å) ≈ 1.4 relative to low resolution).  tests/test_stills_lorentz.py checks
both statements against a quadrature of the kinematic integral.

Rotation: the φ profile of each reflection is a Gaussian whose variance is the sum of
two independent physical widths (seed §4, DIALS ``gaussian_rs``):

    σ_φ² = R0²/(2 |s0|² ζ²) + σ_m²/ζ_u²                                   (rad²)

    ζ   = m2·(ŝ1 × ŝ0)        (dimensionless; 1/|ζ| is the Lorentz factor)
    ζ_u = m2·ê1 = ζ / sin 2θ,  ê1 = s1 × s0 / |s1 × s0|   (DIALS's ``zeta`` column)

Derivation.  A small rotation ω (rad, a vector) of the lattice point q = s1 − s0 moves it
by ω × q and changes the excitation error ε = |q + s0| − |s0| by
ŝ1·(ω × q) = ω·(q × ŝ1) = ω·(ŝ1 × s0) = |s0| sin 2θ (ω·ê1): only the component of a
rotation along ê1 moves a point across the sphere.  The goniometer turning by δφ is
ω = δφ m2, so dε/dφ = |s0| sin 2θ ζ_u = |s0| ζ.  The reflection is recorded at the δφ
that cancels the point's own offset from its nominal position:

* radial (finite domains, R0 in Å⁻¹): the point is smeared along the sphere normal as
  exp(−ε²/R0²), i.e. ε ~ N(0, R0²/2), so δφ = −ε/(|s0| ζ) and σ_φ = R0/(√2 |s0| |ζ|);
  low-resolution spots (small sin 2θ) are the widest in φ.
* angular (mosaic blocks rotated by ω_m with N(0, σ_m²) components, σ_m in rad): the
  ê1 component shifts ε by |s0| sin 2θ ω_m·ê1, so δφ = −ω_m·ê1/ζ_u and
  σ_φ = σ_m/|ζ_u|, independent of resolution in the e3 frame: exactly DIALS's
  σ_m (``sigma_m``, reported in degrees).  Beam divergence adds to it in the same way.

The two offsets are independent, so the variances add.  Both are global, fitted as
log R0 and log σ_m (the stills' log R0 and log η slots of the parameter vector) under
log-normal priors; the recorded fraction, the φ moment of Term 2 and the box z-extents
all use this σ_φ (in frames, σ_z = σ_φ/Δφ).
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


def stills_log_slope(eps: np.ndarray, r0: float, eta: float, inv_d2: np.ndarray,
                     rbw_sq: np.ndarray) -> np.ndarray:
    """∂log p/∂ε = −2ε/R0_eff² (Å) of :func:`stills_partiality` (same units)."""
    return -2.0 * eps / (r0 ** 2 + eta ** 2 * inv_d2 + rbw_sq)




def stills_lorentz(r0: float, eta: float, inv_d2: np.ndarray,
                   rbw_sq: np.ndarray) -> np.ndarray:
    """L(d) = R0/R0_eff(d) (dimensionless, ≤ 1): the stills Lorentz factor left out.

    The kinematic photons of a still are ∝ p·L·I (module docstring), J_model is
    ∝ p·I: the plugin's full intensities are |F|²-proportional intensities times L(d)
    (normalised to 1 where R0 dominates, at low resolution).  Not applied anywhere;
    documents the convention and its size.  Units as :func:`stills_partiality`.
    """
    return r0 / np.sqrt(r0 ** 2 + eta ** 2 * inv_d2 + rbw_sq)


def rotation_zeta(m2: np.ndarray, s1: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """ζ = m2·(ŝ1 × ŝ0) (dimensionless, per reflection, rows of n×3 arrays).

    A reciprocal-lattice point crosses the Ewald sphere at |dε/dφ| = |s0|·|ζ| Å⁻¹ per
    radian, and 1/|ζ| is the Lorentz factor (the L of DIALS's ``lp``).  DIALS's
    ``zeta`` column is m2·ê1 with ê1 the *unit* vector along s1 × s0, larger by
    1/sin 2θ (:func:`rotation_zeta_unit`): the rate for the angular mosaic spread.
    """
    cross = np.cross(s1, s0)
    return np.einsum("ij,ij->i", m2, cross) / (np.linalg.norm(s1, axis=1)
                                                * np.linalg.norm(s0, axis=1))


def rotation_zeta_unit(m2: np.ndarray, s1: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """ζ_u = m2·ê1, ê1 = s1 × s0/|s1 × s0| (DIALS's ``zeta``; dimensionless, per row)."""
    cross = np.cross(s1, s0)
    norm = np.maximum(np.linalg.norm(cross, axis=1), 1e-300)
    return np.einsum("ij,ij->i", m2, cross) / norm


def rotation_sigma_z(r0: float, sigma_m: float, rate: np.ndarray, zeta_unit: np.ndarray,
                     osc_deg: np.ndarray):
    """σ_z (frames) and the shares ∂log σ_z/∂log R0, ∂log σ_z/∂log σ_m per reflection.

    ``r0`` the radial width (Å⁻¹), ``sigma_m`` the angular mosaic spread (rad),
    ``rate`` = |dε/dφ| = |s0|·|ζ| (Å⁻¹ per radian), ``zeta_unit`` = ζ_u (DIALS's zeta),
    ``osc_deg`` the frame width in degrees; see the module docstring.  The shares are
    the fractions of σ_φ² from each width (they add to 1).
    """
    radial_sq = r0 ** 2 / (2.0 * np.maximum(rate, 1e-6) ** 2)
    angular_sq = sigma_m ** 2 / np.maximum(np.abs(zeta_unit), 1e-6) ** 2
    total_sq = radial_sq + angular_sq
    sz = np.sqrt(total_sq) / np.radians(osc_deg)
    return sz, radial_sq / total_sq, angular_sq / total_sq
