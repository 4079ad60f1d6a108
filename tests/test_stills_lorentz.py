"""The stills normalisation (issue 18, item 6), checked by an independent route.

The kinematic photon count of a still is a quadrature here, with none of the
simulator's code: the reciprocal-lattice point is a 3-D Gaussian (the domain's
isotropic σ_dom² plus the small-rotation mosaic covariance σ_m²(|r0|²·1 − r0 r0ᵀ)),
the beam a Gaussian spectrum, and for every wavelength the density is integrated over
the exact Ewald sphere (a 2-D grid mapped onto it with its Jacobian) with the solid
angle dΩ = λ² dS::

    N(r0) ∝ ∫ dλ s(λ) λ² ∫_{sphere(λ)} ρ(r) dS

(docs/conventions.md derives it).  Two statements are tested, one per convention:

* the shape p(ε) = N(ε)/N(on the sphere) is what the simulator draws and the model
  fits (exp(−ε²/2R²), R² the sum of the radial variances) — common to both;
* the on-sphere count N(0) is ∝ 1/R(d) (the stills Lorentz factor L = R_ref/R(d)), which
  the plugin, like DIALS's stills ``lp`` = 1/P and CrystFEL's partialities, leaves out:
  the simulator's signal at ε = 0 is the same at every d, the physical one is not.
  Either test fails if one of the two codes changed its convention alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.model.partiality import stills_lorentz
from dials_factored.simulate import physics
from dials_factored.simulate.geometry import Plane

WAVELENGTH = 1.0
SPREADS = physics.Spreads(sigma_domain=physics.domain_sigma(1000.0), mosaic=5e-4,
                          divergence=0.0, bandwidth=0.002, psf=0.0)
U0 = np.array([0.0, 0.0, -1.0])


def _point(d: float, eps_sigmas: float = 0.0) -> np.ndarray:
    """A reciprocal-lattice point at resolution d (Å) with the spot at azimuth 30°,
    moved along the sphere normal by ``eps_sigmas`` first-order widths R."""
    theta = np.arcsin(WAVELENGTH / (2 * d))
    k = 1 / WAVELENGTH
    s1 = k * np.array([np.sin(2 * theta) * np.cos(0.5), np.sin(2 * theta) * np.sin(0.5),
                       -np.cos(2 * theta)])
    r = s1 - k * U0
    r = r / np.linalg.norm(r) / d  # |r| = 1/d exactly, on the sphere
    n = s1 / np.linalg.norm(s1)
    width = physics.analytic_width(np.array([d]), WAVELENGTH, SPREADS)[0]
    return r + eps_sigmas * width * n


def quadrature_count(r0: np.ndarray, n_grid: int = 121, n_lambda: int = 48) -> float:
    """N(r0) ∝ ∫ dλ s(λ) λ² ∫_sphere ρ dS by quadrature (see the module docstring)."""
    sigma = (SPREADS.sigma_domain ** 2 * np.eye(3)
             + SPREADS.mosaic ** 2 * (r0 @ r0 * np.eye(3) - np.outer(r0, r0)))
    inv, norm = np.linalg.inv(sigma), 1 / np.sqrt((2 * np.pi) ** 3 * np.linalg.det(sigma))
    x, w = np.polynomial.hermite_e.hermegauss(n_lambda)
    lams = WAVELENGTH * (1 + SPREADS.bandwidth * x)
    w = w / w.sum()
    n0 = r0 + U0 / WAVELENGTH
    n0 /= np.linalg.norm(n0)
    e1 = np.cross(n0, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n0, e1)
    half = 10 * np.sqrt(np.linalg.eigvalsh(sigma).max()) * WAVELENGTH
    a = np.linspace(-half, half, n_grid)
    da = a[1] - a[0]
    aa, bb = (g.ravel() for g in np.meshgrid(a, a))
    m = n0 + aa[:, None] * e1 + bb[:, None] * e2
    jac = (1 + aa ** 2 + bb ** 2) ** -1.5  # (a, b) ↦ unit vector: dΩ per da db
    m /= np.linalg.norm(m, axis=1)[:, None]
    total = 0.0
    for lam, wl in zip(lams, w):
        k = 1 / lam
        r = k * m - k * U0  # the sphere |r + k·û0| = k
        dr = r - r0
        rho = norm * np.exp(-0.5 * np.einsum("ij,jk,ik->i", dr, inv, dr))
        # dS = k² dΩ, and the photons per unit solid angle: λ² dS = dΩ
        total += wl * np.sum(rho * jac) * da * da * k ** 2 * lam ** 2
    return total


def simulated(points: np.ndarray, n_samples: int = 40000):
    """The simulator's partiality and signal per unit I (scale 1) of each point."""
    d = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -200.0]]).T  # a panel 200 mm away
    plane = Plane(d_inv=np.linalg.inv(d), pixel_size=(0.1, 0.1), size=(10 ** 6, 10 ** 6))
    res = physics.simulate_stills(points, np.ones(len(points)), WAVELENGTH, SPREADS, plane,
                                  (0.0, 1.0, 0.0), 0.5, n_samples, np.random.default_rng(7))
    return res.partiality, res.signal_per_i / res.polarisation


RESOLUTIONS = np.array([12.0, 5.0, 3.0, 2.2, 1.8])


def test_partiality_shape_agrees_with_the_quadrature():
    """p(ε) of the simulator (and the model's exp form) = N(ε)/N(0) of the quadrature."""
    for d in (8.0, 2.0):
        on = quadrature_count(_point(d))
        for k in (-1.5, 0.7, 2.0):
            exact = quadrature_count(_point(d, k)) / on
            p_sim, _ = simulated(_point(d, k)[None, :])
            assert p_sim[0] == pytest.approx(exact, rel=0.03), (d, k)
            assert exact == pytest.approx(np.exp(-0.5 * k ** 2), rel=0.03), (d, k)


def test_physical_count_carries_the_stills_lorentz_factor_the_plugin_leaves_out():
    """N(0)·R(d) is flat in d (the physics), the simulator's count at ε = 0 is flat in d
    (the convention, L = 1), and they differ by the factor ``stills_lorentz``."""
    points = np.array([_point(d) for d in RESOLUTIONS])
    width = physics.analytic_width(RESOLUTIONS, WAVELENGTH, SPREADS)
    assert width.max() / width.min() > 1.3  # R(d) varies: the test can tell
    physical = np.array([quadrature_count(p) for p in points])
    assert np.ptp(np.log(physical * width)) < 0.02  # N(0) ∝ 1/R(d)
    _, signal = simulated(points)
    assert np.ptp(np.log(signal)) < 0.02  # the simulator: the same count at every d
    # the model's factor (R0_eff² = 2R²: p = exp(−ε²/R0_eff²)) is the ratio of the two
    r0 = np.sqrt(2) * SPREADS.sigma_domain
    bw_sq = (SPREADS.bandwidth * WAVELENGTH) ** 2 / (2 * RESOLUTIONS ** 4)
    factor = stills_lorentz(r0, np.sqrt(2) * SPREADS.mosaic, 1 / RESOLUTIONS ** 2, bw_sq)
    ratio = physical / signal
    assert np.ptp(np.log(ratio / factor)) < 0.03
    # the size of what is left out: high-resolution intensities relative to low
    assert factor[0] / factor[-1] == pytest.approx(width[-1] / width[0], rel=0.03)
