"""The partiality and rotation-geometry model functions against independent values."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.model.partiality import (
    rotation_sigma_z,
    rotation_zeta,
    rotation_zeta_unit,
    stills_partiality,
)


def test_zeta_is_the_rate_at_which_a_point_crosses_the_sphere():
    """|dε/dφ| = |s0|·|ζ| for points on the Ewald sphere (numerical derivative), and ζ is
    DIALS's zeta times sin 2θ.  The unit-normalised form used before (DIALS's column)
    overstated the rate by 1/sin 2θ, 20× at 20 Å, and made low-resolution rotation
    spots far too narrow in φ."""
    from dials.array_family import flex
    from dxtbx.model import BeamFactory, Experiment, ExperimentList, GoniometerFactory
    from scitbx import matrix

    wavelength, n = 0.9, 50
    beam = BeamFactory.simple(wavelength)
    gonio = GoniometerFactory.known_axis((1.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(n, 3)) * [0.3, 0.3, 0.1] + [0, 0, -1]
    s1 = directions / np.linalg.norm(directions, axis=1)[:, None] / wavelength
    s0 = np.asarray(beam.get_s0())
    m2 = np.asarray(gonio.get_rotation_axis())
    zeta = rotation_zeta(np.tile(m2, (n, 1)), s1, np.tile(s0, (n, 1)))

    h = 1e-6
    rot = [np.array(matrix.col(m2).axis_and_angle_as_r3_rotation_matrix(a)).reshape(3, 3)
           for a in (h, -h)]
    q = s1 - s0
    eps = [np.linalg.norm(q @ r.T + s0, axis=1) - np.linalg.norm(s0) for r in rot]
    rate = (eps[0] - eps[1]) / (2 * h)
    np.testing.assert_allclose(np.abs(rate), np.linalg.norm(s0) * np.abs(zeta), rtol=1e-5)

    table = flex.reflection_table()
    table["id"] = flex.int(n, 0)
    table["s1"] = flex.vec3_double(s1)
    dials_zeta = table.compute_zeta(
        ExperimentList([Experiment(beam=beam, goniometer=gonio)])[0]).as_numpy_array()
    sin_2theta = np.linalg.norm(np.cross(s1, s0), axis=1) / (
        np.linalg.norm(s1, axis=1) * np.linalg.norm(s0))
    np.testing.assert_allclose(zeta, dials_zeta * sin_2theta, rtol=1e-9, atol=1e-12)


def test_partiality_widths_add_in_quadrature_and_derivatives_are_exact():
    eps = np.array([0.0, 3e-4, -6e-4])
    inv_d2 = np.array([0.25, 0.1, 0.04])
    rbw_sq = np.array([1e-8, 2e-8, 0.0])
    r0, eta = 5e-4, 7e-4
    p, dlog_r0, dlog_eta = stills_partiality(eps, r0, eta, inv_d2, rbw_sq)
    width_sq = r0 ** 2 + eta ** 2 * inv_d2 + rbw_sq
    np.testing.assert_allclose(p, np.exp(-eps ** 2 / width_sq))
    h = 1e-6
    up = stills_partiality(eps, r0 * np.exp(h), eta, inv_d2, rbw_sq)[0]
    down = stills_partiality(eps, r0 * np.exp(-h), eta, inv_d2, rbw_sq)[0]
    np.testing.assert_allclose(dlog_r0, (np.log(up) - np.log(down)) / (2 * h), rtol=1e-5,
                               atol=1e-12)
    up = stills_partiality(eps, r0, eta * np.exp(h), inv_d2, rbw_sq)[0]
    down = stills_partiality(eps, r0, eta * np.exp(-h), inv_d2, rbw_sq)[0]
    assert dlog_eta == pytest.approx((np.log(up) - np.log(down)) / (2 * h), rel=1e-5, abs=1e-12)


def _sphere_points(n, wavelength, seed):
    """s1 on the Ewald sphere of s0 = (0, 0, −1/λ), spread over 2θ up to ~50°."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, 3)) * [0.4, 0.4, 0.1] + [0, 0, -1]
    s1 = directions / np.linalg.norm(directions, axis=1)[:, None] / wavelength
    s0 = np.tile([0.0, 0.0, -1.0 / wavelength], (n, 1))
    return s1, s0


def test_zeta_unit_is_dials_zeta():
    from dials.array_family import flex
    from dxtbx.model import BeamFactory, Experiment, ExperimentList, GoniometerFactory

    wavelength, n = 0.9, 40
    s1, s0 = _sphere_points(n, wavelength, 1)
    beam = BeamFactory.simple(wavelength)
    gonio = GoniometerFactory.known_axis((1.0, 0.0, 0.0))
    m2 = np.tile(np.asarray(gonio.get_rotation_axis()), (n, 1))
    table = flex.reflection_table()
    table["id"] = flex.int(n, 0)
    table["s1"] = flex.vec3_double(s1)
    dials_zeta = table.compute_zeta(
        ExperimentList([Experiment(beam=beam, goniometer=gonio)])[0]).as_numpy_array()
    np.testing.assert_allclose(rotation_zeta_unit(m2, s1, s0), dials_zeta, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("law", ["radial", "angular", "both"])
def test_phi_width_matches_monte_carlo_crossings(law):
    """σ_φ² = R0²/(2|s0|²ζ²) + σ_m²/ζ_u² against the spread of the crossing angles of
    points smeared by the simulator's own physics (isotropic domain offsets δ of rms
    R0/√2, mosaic rotation vectors of rms σ_m per axis): an independent check of the
    derivation in ``model.partiality`` and of which ζ each law takes."""
    from dials_factored.simulate import physics

    wavelength, n, k = 1.0, 12, 20000
    r0 = 0.0 if law == "angular" else 1.2e-3
    sigma_m = 0.0 if law == "radial" else np.radians(0.2)
    s1, s0 = _sphere_points(n, wavelength, 2)
    axis = np.array([1.0, 0.0, 0.0])
    m2 = np.tile(axis, (n, 1))
    zeta = rotation_zeta(m2, s1, s0)
    keep = np.abs(rotation_zeta_unit(m2, s1, s0)) > 0.3
    s1, s0, zeta = s1[keep], s0[keep], zeta[keep]
    q = s1 - s0
    rng = np.random.default_rng(3)
    qs = np.repeat(q, k, axis=0)
    omega = rng.standard_normal(qs.shape) * sigma_m
    delta = rng.standard_normal(qs.shape) * r0 / np.sqrt(2.0)
    pts = physics.rotate_small(qs, omega) + delta
    # the branch on which each q meets the sphere at φ = 0
    near = [np.abs(physics.crossing_angles(q, s0, axis, np.full(len(q), sign))[0]) < 1e-9
            for sign in (1, -1)]
    assert (near[0] | near[1]).all()
    branch = np.repeat(np.where(near[0], 1, -1), k)
    phi, ok = physics.crossing_angles(pts, np.repeat(s0, k, axis=0), axis, branch)
    assert ok.all()
    dphi = np.mod(phi + np.pi, 2 * np.pi) - np.pi
    measured = np.sqrt(np.mean(dphi.reshape(-1, k) ** 2, axis=1))
    sz, _, _ = rotation_sigma_z(r0, sigma_m, np.linalg.norm(s0, axis=1) * np.abs(zeta),
                                rotation_zeta_unit(np.tile(axis, (len(q), 1)), s1, s0),
                                np.full(len(q), np.degrees(1.0)))
    np.testing.assert_allclose(measured, sz, rtol=0.03)


def test_phi_width_shares_are_the_log_derivatives():
    rate = np.array([0.05, 0.3, 0.9])
    zeta_u = np.array([0.2, -0.7, 1.0])
    osc = np.full(3, 0.5)
    r0, sm = 4e-4, np.radians(0.1)
    sz, share_r0, share_m = rotation_sigma_z(r0, sm, rate, zeta_u, osc)
    np.testing.assert_allclose(share_r0 + share_m, 1.0)
    h = 1e-6
    for share, args in ((share_r0, lambda f: (r0 * f, sm)), (share_m, lambda f: (r0, sm * f))):
        up = rotation_sigma_z(*args(np.exp(h)), rate, zeta_u, osc)[0]
        down = rotation_sigma_z(*args(np.exp(-h)), rate, zeta_u, osc)[0]
        np.testing.assert_allclose((np.log(up) - np.log(down)) / (2 * h), share, rtol=1e-6)
    expected = np.sqrt(r0 ** 2 / (2 * rate ** 2) + sm ** 2 / zeta_u ** 2) / np.radians(osc)
    np.testing.assert_allclose(sz, expected)


def test_recorded_fraction_sums_the_frame_fractions_inside_the_scan():
    """The recorded fraction of a box that starts before the scan counts only the frames
    inside it (the pass used to sum F_f over the box's off-scan frames too)."""
    from types import SimpleNamespace

    from dials_factored import profile

    zc, sz = np.array([0.3, 9.8, 5.0]), np.array([0.8, 0.6, 0.7])
    z0, z1 = np.array([-3, 7, 2]), np.array([4, 13, 8])  # boxes; the scan is 0..10
    lo, hi = np.maximum(z0, 0), np.minimum(z1, 10)
    frames = [np.arange(a, b) for a, b in zip(lo, hi)]
    pix = SimpleNamespace(owner=np.concatenate([np.full(len(f), i) for i, f in
                                                enumerate(frames)]),
                          frame=np.concatenate(frames),
                          start=np.concatenate([[0], np.cumsum([len(f) for f in frames])]))
    by_frame = np.bincount(pix.owner, weights=profile.frame_fraction(pix, zc, sz))
    np.testing.assert_allclose(profile.recorded_fraction(zc, sz, lo, hi), by_frame)
    from scipy.special import ndtr
    np.testing.assert_allclose(by_frame[:2], [1 - ndtr(-0.3 / 0.8), ndtr(0.2 / 0.6)],
                               atol=1e-5)


def test_phi_moment_rows_have_exact_jacobian_in_both_widths():
    """Term 2's φ-moment rows: analytic ∂r/∂log R0 and ∂r/∂log σ_m against finite
    differences, and the two columns differ (the laws scale differently with 2θ)."""
    from dials_factored.fit import FactoredTarget, Observations, Priors
    from dials_factored.layout import Layout

    rng = np.random.default_rng(4)
    n = 30
    zero = np.zeros(n, int)
    zc = rng.uniform(3, 7, n)
    sin_2t = rng.uniform(0.05, 0.8, n)
    zeta_u = rng.uniform(0.3, 1.0, n) * rng.choice([-1, 1], n)
    obs = Observations(
        j=np.ones(n), sigma_j=np.ones(n), i_ref=np.ones(n), attenuation=np.ones(n),
        inv_4d2=np.full(n, 0.05), k0=zero, k1=zero, w=np.zeros(n), use1=np.zeros(n, bool),
        group=None, bootstrapped=np.zeros(n, bool), stills=False, eps=np.zeros(n),
        rbw_sq=np.zeros(n), use2=np.zeros(n, bool), m_a=np.zeros(n), m_b=np.zeros(n),
        sigma_a=np.ones(n), sigma_b=np.ones(n), area=np.ones(n), window_a=np.ones(n),
        window_b=np.ones(n), b0=zero, b1=zero, u=np.zeros(n),
        use_z=np.ones(n, bool), m_z=rng.uniform(0.1, 1.0, n), sigma_mz=np.full(n, 0.05),
        rate=np.abs(zeta_u) * sin_2t, zeta_unit=zeta_u, osc=np.full(n, 0.5),
        z_centre=zc, z_first=np.floor(zc).astype(int) - 2, z_last=np.floor(zc).astype(int) + 2)
    layout = Layout(1, 1, False)
    priors = Priors(0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    target = FactoredTarget(obs, layout, priors)
    x = np.zeros(layout.size)
    x[layout.log_r0], x[layout.log_eta] = np.log(3e-4), np.log(np.radians(0.1))
    r, (rows, cols, vals) = target.evaluate(x)
    jac = np.zeros((len(r), layout.size))
    np.add.at(jac, (rows, cols), vals)
    h = 1e-6
    columns = []
    for col in (layout.log_r0, layout.log_eta):
        up, down = x.copy(), x.copy()
        up[col] += h
        down[col] -= h
        numeric = (target.evaluate(up, False)[0] - target.evaluate(down, False)[0]) / (2 * h)
        np.testing.assert_allclose(jac[:n, col], numeric[:n], rtol=1e-4, atol=1e-6)
        columns.append(jac[:n, col])
    assert abs(np.corrcoef(*columns)[0, 1]) < 0.99
