"""Monte-Carlo photon forward model of Bragg spots (stills and rotation).

Units: reciprocal-space vectors in Å⁻¹, wavelengths in Å, angles in radians, positions
in detector pixels, frames in images (0-based, continuous: frame ``i`` spans
``z ∈ [i, i+1)``).  DIALS' frame: beam along −z, ``s0 = û0/λ``.

Reciprocal-lattice point of reflection h (one Monte-Carlo *sample*)::

    r = R(ω)·r0 + δ,      r0 = A·h (rotation: A at φ = 0)

* ``R(ω)``: mosaic block orientation, a rotation by the vector ω whose three
  components are independent N(0, σ_m²) (σ_m = ``mosaic``, rad, per axis);
* ``δ``: finite domain size, three independent N(0, σ_dom²) components, with
  ``σ_dom = 1/(√(2π)·D)`` for a domain of size D (Å): the Gaussian with the same
  integral and peak as the squared shape transform sinc²(πDx) of a block of width D;
* incident direction ``û0``: −z tilted by two independent N(0, σ_div²) angles
  (σ_div = ``divergence``, rad, per axis);
* detector point spread: the landing point moves by two independent N(0, psf²) pixels.

(These are the default shapes; :mod:`.shapes` has point spreads with tails or a flat
top and Cauchy or discrete mosaic blocks.)

**Stills.**  A sample diffracts at the wavelength that puts it on the Ewald sphere of
its direction, ``1/λ* = −|r|²/(2 r·û0)`` (no solution for r·û0 ≥ 0), and is weighted by
the Gaussian spectrum relative to its peak, ``w = exp(−(λ*−λ0)²/(2(bλ0)²))`` (b =
relative rms bandwidth).  The reflection's partiality is the mean weight divided by
the mean weight the *same* samples would have if the reflection's centre lay on the
sphere (r0 rotated in the plane of r0 and û0 onto the sphere; |r0| and d unchanged)::

    p = Σ_k w_k / Σ_k w'_k     (p = 1 when the centre is on the sphere)

(The component of δ along the sphere normal is importance-sampled from its posterior
given the spectrum, with exact weights — see :func:`_stills_samples` — so that narrow
spectra at low resolution do not waste samples; the expectation is unchanged.)

To first order in the spreads ε_k = ε0 + Gaussian noise, so (the documented formula)::

    p ≈ exp(−ε0²/(2R²)),  ε0 = |r0 + s0| − |s0|  (Å⁻¹; > 0 outside the sphere)
    R² = σ_bw² + σ_dom² + σ_m²·|r0|²·cos²θ + σ_div²·sin²2θ/λ²,  σ_bw = bλ/(2d²)

(``σ_bw = σ_λ·∂ε/∂λ`` with ``∂ε/∂λ = 2sin²θ/λ² = 1/(2d²)``).  The expected signal
photons of the observation are ``E = K·I·G·exp(B/4d²)·Σ_k w_k·P_k / Σ_k w'_k``
= ``K·I·G·exp(B/4d²)·pol·p`` with ``pol = Σ w_k P_k / Σ w_k`` (P the polarisation
factor of each photon).  Convention: a reflection centred on the sphere gives
``K·I·G·exp(B/4d²)·pol`` photons whatever its width R, i.e. the stills Lorentz factor is
1.  (A fully kinematic polychromatic model — spectral density at λ* times the Laue
factor λ⁴/(2sin²θ) — gives photons ∝ I·p/R instead, since (λ⁴/2sin²θ)·∂ε/∂λ = λ² is
constant: an extra, slowly d-dependent factor 1/R(d) that this simulator leaves out.)

**Rotation.**  A sample with its own direction û0 and wavelength λ ~ N(λ0, (bλ0)²)
is rotated about the axis m̂; it crosses the sphere where
``|r|²/2 + s0·r(φ) = 0`` with ``r(φ) = r∥ + r⊥·cos φ + (m̂×r)·sin φ``, i.e.
``φ = ψ ± acos(q)``, ``ψ = atan2(s0·(m̂×r), s0·r⊥)``, ``q = −(|r|²/2 + s0·r∥)/|…|``.
The branch (+/−) of an observation is fixed by its nominal point (+: ``s0·r(φ)``
decreases through the crossing, i.e. the point enters the sphere, ε going from > 0 to
< 0; −: it leaves); each sample uses the same branch.  The energy a point diffracts
while crossing is proportional to the time it spends in the (thin) sphere,
``1/|dε/dφ|`` with
``dε/dφ = ŝ1·(m̂×r(φ))``, so each crossing is weighted by the Lorentz factor
``L = |s0|/|dε/dφ| = 1/|m̂·(ŝ1×ŝ0)|`` (DIALS' Lorentz correction is 1/L): the
Lorentz factor is not put in by hand, it is the Jacobian of the crossing.  A sample
lands on frame ``floor((φ − φ_start)/Δφ)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dials_factored.simulate import shapes


@dataclass(frozen=True)
class Spreads:
    """Widths of the spot-forming distributions (see the module docstring for the model)."""

    sigma_domain: float  # Å⁻¹, rms per axis of δ
    mosaic: float  # rad, rms per axis of the mosaic rotation vector
    divergence: float  # rad, rms per axis of the incident direction
    bandwidth: float  # relative rms σ_λ/λ
    psf: float  # px, rms per axis of the detector point spread
    # the shapes of :mod:`.shapes` (defaults: the Gaussians above)
    psf_shape: str = "gaussian"
    psf_tail_fraction: float = 0.0  # fraction of photons in the PSF tail
    psf_tail_width: float = 2.0  # px, scale of the PSF tail
    mosaic_shape: str = "gaussian"


def domain_sigma(domain_size: float) -> float:
    """σ_dom = 1/(√(2π)·D) (Å⁻¹) for domain size D (Å); see the module docstring."""
    return 1.0 / (math.sqrt(2 * math.pi) * domain_size)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of n×3 arrays."""
    return np.einsum("ij,ij->i", a, b)


def norm(a: np.ndarray) -> np.ndarray:
    """Row-wise length of an n×3 array."""
    return np.sqrt(np.einsum("ij,ij->i", a, a))


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of n×3 arrays (either may be a single 3-vector)."""
    a = np.asarray(a)
    b = np.asarray(b)
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                     a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def rotate(vectors: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """Rotate each row of ``vectors`` by the rotation vector (axis·angle, rad) of its row.

    Rodrigues' formula ``v cos θ + (k×v) sin θ + k (k·v)(1 − cos θ)``.
    """
    theta = norm(rotvec)[:, None]
    k = rotvec / np.where(theta > 0, theta, 1.0)
    cos, sin = np.cos(theta), np.sin(theta)
    return (vectors * cos + cross(k, vectors) * sin
            + k * dot(k, vectors)[:, None] * (1 - cos))


def rotate_small(vectors: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """Rotation by small rotation vectors (mosaic blocks) to second order in the angle θ.

    ``v + ω×v + ½ ω×(ω×v)``; the error, O(θ³)·|v|, is below 1e-10 of |v| for θ < 1 mrad.
    """
    wv = cross(rotvec, vectors)
    return vectors + wv + 0.5 * cross(rotvec, wv)


def incident_directions(n: int, divergence: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit incident directions: −z tilted by two N(0, divergence²) angles (rad)."""
    tilt = rng.standard_normal((n, 2)) * divergence
    u = np.column_stack([tilt, -np.ones(n)])
    return u / norm(u)[:, None]


def polarisation(s0: np.ndarray, s1: np.ndarray, normal, fraction: float) -> np.ndarray:
    """Polarisation factor P of each ray (n×3 vectors; dimensionless, ≤ 1).

    DIALS' (XDS-convention) formula, ``P = (1−2f)(1 − (n̂·ŝ1)²) + f(1 + (ŝ0·ŝ1)²)``
    with n̂ the polarisation-plane normal and f the fraction in the plane; so DIALS'
    ``lp`` correction is exactly 1/P (stills) or 1/(L·P) (rotation).
    """
    u1 = s1 / norm(s1)[:, None]
    u0 = s0 / norm(s0)[:, None]
    pn = u1 @ np.asarray(normal, dtype=float)
    cos2t = dot(u0, u1)
    return (1 - 2 * fraction) * (1 - pn ** 2) + fraction * (1 + cos2t ** 2)


def excitation_error(r: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """ε = |r + s0| − |s0| (Å⁻¹) of points r (n×3) for a beam s0 (3,): > 0 outside the sphere."""
    return norm(r + s0) - np.linalg.norm(s0)


def analytic_width(d: np.ndarray, wavelength: float, spreads: Spreads) -> np.ndarray:
    """R (Å⁻¹), the first-order rms of a reflection's excitation error (module docstring)."""
    sin_t = np.clip(wavelength / (2 * d), 0, 1)
    cos2_t = 1 - sin_t ** 2
    sin2_2t = 4 * sin_t ** 2 * cos2_t
    s_bw = spreads.bandwidth * wavelength / (2 * d ** 2)
    r_len = 1 / d
    return np.sqrt(s_bw ** 2 + spreads.sigma_domain ** 2
                   + shapes.mosaic_rms(spreads) ** 2 * r_len ** 2 * cos2_t
                   + spreads.divergence ** 2 * sin2_2t / wavelength ** 2)


def analytic_partiality(eps: np.ndarray, d: np.ndarray, wavelength: float,
                        spreads: Spreads) -> np.ndarray:
    """Stills partiality to first order: ``exp(−ε²/(2R²))`` (module docstring)."""
    return np.exp(-0.5 * (eps / analytic_width(d, wavelength, spreads)) ** 2)


def _onto_sphere(r0: np.ndarray, u0: np.ndarray, wavelength: float) -> np.ndarray:
    """r0 rotated in the plane of (r0, û0) so that it lies on the nominal Ewald sphere."""
    length = np.linalg.norm(r0, axis=1, keepdims=True)
    along = r0 @ u0
    perp = r0 - along[:, None] * u0
    perp_len = np.linalg.norm(perp, axis=1, keepdims=True)
    perp_dir = np.where(perp_len > 0, perp / np.where(perp_len > 0, perp_len, 1),
                        np.array([1.0, 0.0, 0.0]))
    cos_a = -np.clip(length * wavelength / 2, 0, 1)  # r·û0 = −|r|²λ/2 on the sphere
    sin_a = np.sqrt(1 - cos_a ** 2)
    return length * (cos_a * u0 + sin_a * perp_dir)


@dataclass
class Samples:
    """Monte-Carlo samples of many observations, flattened (one row per sample).

    ``weight`` is each sample's expected signal per unit I_true (photons), already
    including K, the scale and the polarisation, normalised so that the weights of
    observation i sum to its ``E_i / I_i``.
    """

    obs: np.ndarray  # (n,) observation index
    x: np.ndarray  # (n,) continuous pixel coordinates
    y: np.ndarray
    z: np.ndarray  # (n,) continuous frame coordinate (stills: 0)
    weight: np.ndarray  # (n,) photons per unit I_true


@dataclass
class StillsResult:
    samples: Samples
    partiality: np.ndarray  # (m,)
    polarisation: np.ndarray  # (m,) weighted mean P
    signal_per_i: np.ndarray  # (m,) E/I = Σ weights (photons per unit I)


def _stills_samples(r_ref: np.ndarray, nominal_s0: np.ndarray, omega: np.ndarray,
                    z_dom: np.ndarray, z_n: np.ndarray, u0: np.ndarray, wavelength: float,
                    spreads: Spreads) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points, importance weights and 1/λ* of stills samples around ``r_ref`` (n×3).

    The domain offset δ is drawn as independent normals ``σ_dom·z_dom`` except for its
    component δ_n along the nominal diffracted direction n̂ (the normal of the Ewald
    sphere), which is drawn from its approximate posterior given the spectrum:
    with ε_o the excitation error of the sample without δ_n, the spectrum weight is
    ≈ exp(−(ε_o + δ_n)²/(2σ_bw²)) and the prior N(0, σ_dom²), so δ_n = m + √v·z_n with
    ``v = σ_dom²σ_bw²/(σ_dom² + σ_bw²)`` and ``m = −ε_o·σ_dom²/(σ_dom² + σ_bw²)``.  The
    weight is exact importance sampling, ``w = N(δ_n; 0, σ_dom²)·S(λ*)/N(δ_n; m, v)``
    (S the spectrum relative to its peak, λ* from the final point): the same expectation
    as plain sampling with weight S(λ*), with far fewer wasted samples when the spectrum
    is much narrower than the reciprocal-lattice point (low resolution).
    """
    n_hat = r_ref + nominal_s0
    n_hat /= norm(n_hat)[:, None]
    delta = z_dom * spreads.sigma_domain
    delta -= dot(delta, n_hat)[:, None] * n_hat
    r_part = rotate_small(r_ref, omega) + delta
    s0_part = u0 / wavelength
    s1_part = r_part + s0_part
    s1_len = norm(s1_part)
    eps_o = s1_len - 1 / wavelength
    cos2t = dot(s1_part, u0) / s1_len
    sigma_l = spreads.bandwidth * wavelength
    s_bw2 = ((1 - cos2t) / wavelength ** 2 * sigma_l) ** 2  # σ_bw = σ_λ·∂ε/∂λ, per sample
    s_dom2 = spreads.sigma_domain ** 2
    v = s_dom2 * s_bw2 / (s_dom2 + s_bw2)
    mean = -eps_o * s_dom2 / (s_dom2 + s_bw2)
    delta_n = mean + np.sqrt(v) * z_n
    r = r_part + delta_n[:, None] * n_hat
    ru = dot(r, u0)
    ok = ru < 0
    inv_lam = np.where(ok, -dot(r, r) / (2 * np.where(ok, ru, -1.0)), 1.0)
    log_w = (-0.5 * ((1 / inv_lam - wavelength) / sigma_l) ** 2  # the spectrum S(λ*)
             - 0.5 * delta_n ** 2 / s_dom2 + 0.5 * z_n ** 2 + 0.5 * np.log(v / s_dom2))
    return r, np.where(ok, np.exp(log_w), 0.0), inv_lam


def simulate_stills(r0: np.ndarray, scale: np.ndarray, wavelength: float, spreads: Spreads,
                    plane, pol_normal, pol_fraction: float, n_samples: int,
                    rng: np.random.Generator, blocks: np.ndarray | None = None) -> StillsResult:
    """Trace ``n_samples`` samples for each of the m reflections ``r0`` (m×3, Å⁻¹) of a still.

    ``scale`` (m,) multiplies each reflection's photons: K·G·exp(B/4d²) (photons per unit
    I at p = 1, P = 1); ``blocks`` the crystal's mosaic blocks (``mosaic_shape=blocks``).
    See the module docstring for the physics and :mod:`.shapes` for non-Gaussian shapes.
    """
    m = len(r0)
    n = m * n_samples
    obs = np.repeat(np.arange(m), n_samples)
    omega = shapes.mosaic_rotations(n, spreads, rng, blocks)
    z_dom = rng.standard_normal((n, 3))
    z_n = rng.standard_normal(n)
    u0 = incident_directions(n, spreads.divergence, rng)
    psf = shapes.detector_spread(n, spreads, rng)
    nominal_s0 = np.array([0.0, 0.0, -1.0 / wavelength])
    r, w, inv_lam = _stills_samples(np.repeat(r0, n_samples, axis=0), nominal_s0, omega, z_dom,
                                    z_n, u0, wavelength, spreads)
    r_sph = _onto_sphere(r0, np.array([0.0, 0.0, -1.0]), wavelength)
    _, w_sph, _ = _stills_samples(np.repeat(r_sph, n_samples, axis=0), nominal_s0, omega,
                                  z_dom, z_n, u0, wavelength, spreads)
    s0 = u0 * inv_lam[:, None]
    s1 = r + s0
    pol = polarisation(s0, s1, pol_normal, pol_fraction)
    x, y, valid = plane.intersect_px(s1)
    x = x + psf[:, 0]
    y = y + psf[:, 1]

    norm = np.bincount(obs, weights=w_sph, minlength=m)
    norm = np.where(norm > 0, norm, np.inf)
    sum_w = np.bincount(obs, weights=w, minlength=m)
    sum_wp = np.bincount(obs, weights=w * pol, minlength=m)
    # rays that never meet the panel's plane (2θ ≥ 90° here) carry no photons to the images
    weight = np.where(valid, w * pol * (scale / norm)[obs], 0.0)
    samples = Samples(obs=obs, x=x, y=y, z=np.zeros(n), weight=weight)
    return StillsResult(samples=samples, partiality=sum_w / norm,
                        polarisation=np.where(sum_w > 0, sum_wp / np.where(sum_w > 0, sum_w, 1),
                                              np.nan),
                        signal_per_i=np.bincount(obs, weights=weight, minlength=m))


def crossing_angles(r: np.ndarray, s0: np.ndarray, axis: np.ndarray,
                    branch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation angle φ (rad) at which each point r (n×3) meets the sphere of its s0 (n×3).

    ``branch`` (n,) is +1 or −1 (see the module docstring).  Returns (φ, valid); points
    that never meet the sphere (blind region, or beyond 2/λ) are invalid.
    """
    along = r @ axis
    r_par = along[:, None] * axis
    r_perp = r - r_par
    a = dot(s0, r_par)
    b = dot(s0, r_perp)
    c = dot(s0, cross(axis, r))
    rho = np.hypot(b, c)
    q = -(0.5 * dot(r, r) + a) / np.where(rho > 0, rho, 1.0)
    valid = (rho > 0) & (np.abs(q) <= 1)
    phi = np.arctan2(c, b) + branch * np.arccos(np.clip(q, -1, 1))
    return phi, valid


def rotate_about(r: np.ndarray, axis: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Points r (n×3) rotated by φ (n,) about the unit ``axis`` (right-handed)."""
    return rotate(r, axis[None, :] * phi[:, None])


@dataclass
class RotationResult:
    """Samples inside the scan, and per-observation sums over samples (÷ n_samples).

    With these, exactly: partiality = recorded/full, lorentz = lorentz_sum,
    polarisation = full/lorentz_sum, and E/I = K·scale·pol·lorentz·partiality where
    scale is the photon-weighted mean of G(φ)·exp(B(φ)/4d²) over the recorded samples.
    """

    samples: Samples  # in-scan samples only
    full: np.ndarray  # (m,) Σ over all crossing samples of L·P
    lorentz_sum: np.ndarray  # (m,) Σ over all crossing samples of L
    recorded: np.ndarray  # (m,) Σ over the in-scan samples of L·P
    signal_per_i: np.ndarray  # (m,) E/I (photons per unit I), in-scan


def simulate_rotation(r0: np.ndarray, branch: np.ndarray, phi_nominal: np.ndarray,
                      d: np.ndarray, wavelength: float, spreads: Spreads, axis, plane,
                      scan: tuple[float, float, int], scale_fn, flux: float, pol_normal,
                      pol_fraction: float, n_samples: int, max_lorentz: float,
                      rng: np.random.Generator,
                      blocks: np.ndarray | None = None) -> RotationResult:
    """Trace ``n_samples`` samples for each of m observations (reflection + branch).

    ``r0`` (m×3) at φ = 0, ``branch`` (m,) ±1, ``phi_nominal`` (m,) the nominal crossing
    (rad); ``scan = (φ_start rad, Δφ rad, n_frames)``; ``scale_fn(φ, d)`` the true
    G(φ)·exp(B(φ)/4d²); ``flux`` K.  Each crossing is weighted by K·scale·P·L/n_samples
    with the Lorentz factor L clipped at 2·``max_lorentz`` (its 1/√ singularity at
    grazing crossings).  See the module docstring for the physics.
    """
    axis = np.asarray(axis, dtype=float)
    m = len(r0)
    n = m * n_samples
    obs = np.repeat(np.arange(m), n_samples)
    omega = shapes.mosaic_rotations(n, spreads, rng, blocks)
    delta = rng.standard_normal((n, 3)) * spreads.sigma_domain
    u0 = incident_directions(n, spreads.divergence, rng)
    lam = wavelength * (1 + spreads.bandwidth * rng.standard_normal(n))
    psf = shapes.detector_spread(n, spreads, rng)

    r = rotate_small(np.repeat(r0, n_samples, axis=0), omega) + delta
    s0 = u0 / lam[:, None]
    phi, ok = crossing_angles(r, s0, axis, np.repeat(branch, n_samples))
    phi_nom = np.repeat(phi_nominal, n_samples)
    phi = phi_nom + np.mod(phi - phi_nom + np.pi, 2 * np.pi) - np.pi
    phi_start, width, n_frames = scan
    phi = phi_start + np.mod(phi - phi_start, 2 * np.pi)
    z = (phi - phi_start) / width
    rphi = rotate_about(r, axis, phi)
    s1 = rphi + s0
    u1 = s1 / norm(s1)[:, None]
    rate = np.abs(dot(u1, cross(axis, rphi)))
    lor = np.minimum(norm(s0) / np.where(rate > 0, rate, 1e-300),
                     2 * max_lorentz)
    pol = polarisation(s0, s1, pol_normal, pol_fraction)
    lp = np.where(ok, lor * pol, 0.0) / n_samples
    inside = ok & (z < n_frames)
    x, y, valid = plane.intersect_px(s1)
    x = x + psf[:, 0]
    y = y + psf[:, 1]
    weight = np.where(inside & valid, flux * lp * scale_fn(phi, np.repeat(d, n_samples)), 0.0)

    keep = weight > 0
    samples = Samples(obs=obs[keep], x=x[keep], y=y[keep], z=z[keep], weight=weight[keep])
    return RotationResult(
        samples=samples, full=np.bincount(obs, weights=lp, minlength=m),
        lorentz_sum=np.bincount(obs, weights=np.where(ok, lor, 0.0) / n_samples, minlength=m),
        recorded=np.bincount(obs, weights=np.where(inside, lp, 0.0), minlength=m),
        signal_per_i=np.bincount(samples.obs, weights=samples.weight, minlength=m))
