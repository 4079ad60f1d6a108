"""The spot's drift while a rotation reflection crosses the sphere (forward.spot_drift)."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.forward import spot_drift
from dials_factored.model.partiality import rotation_sigma_z, rotation_zeta, rotation_zeta_unit
from dials_factored.pixel_geometry import spot_frames
from dials_factored.simulate import physics


@pytest.mark.parametrize("q0", [(0.02, 0.3, 0.1), (0.2, 0.25, 0.05), (0.35, 0.1, 0.05),
                                (0.05, 0.05, 0.3)])
@pytest.mark.parametrize("law", ["angular", "radial", "both"])
def test_drift_is_the_slope_of_the_spot_position_on_the_crossing_angle(q0, law):
    """Monte-Carlo of lattice-point parts (mosaic blocks turned by ω, σ_m per axis, and/or
    radial domain offsets) crossing the sphere exactly: the regression of each photon's
    tangential offset from ŝ1 on its crossing angle is the predicted drift
    (a1, a2 − s·ζ_u·b2), for either law alone and both, at ζ_u from 0.25 to 1."""
    rng = np.random.default_rng(3)
    s0 = np.array([0.0, 0.0, -1.0])
    axis = np.array([1.0, 0.0, 0.0])
    q0 = np.array(q0)
    phi_c, _ = physics.crossing_angles(q0[None], s0[None], axis, np.array([1]))
    qc = physics.rotate_about(q0[None], axis, phi_c)[0]
    s1c = qc + s0
    sigma_m = np.radians(0.15) if law != "radial" else 0.0
    r0 = 0.0 if law == "angular" else 3e-4  # radial width (Å⁻¹): rms r0/√2 along the normal
    n = 200_000
    omega = rng.standard_normal((n, 3)) * sigma_m
    q = physics.rotate_small(np.repeat(q0[None], n, 0), omega)
    q = q + rng.standard_normal((n, 3)) * r0 / np.sqrt(2.0)
    phi, ok = physics.crossing_angles(q, np.repeat(s0[None], n, 0), axis, np.ones(n, int))
    phi = phi_c + np.mod(phi - phi_c + np.pi, 2 * np.pi) - np.pi
    s1 = physics.rotate_about(q, axis, phi) + s0
    u, e1, e2 = (v[0] for v in spot_frames(s1c[None], s0))
    offset = s1 / np.linalg.norm(s1, axis=1)[:, None] - u  # × |s0| = 1: Å⁻¹
    dphi = phi - phi_c
    slope = [np.polyfit(dphi[ok], offset[ok] @ e, 1)[0] for e in (e1, e2)]

    a1, a2, b2 = (v[0] for v in spot_drift(axis[None], s1c[None], s0[None]))
    zeta = rotation_zeta(axis[None], s1c[None], s0[None])
    zeta_u = rotation_zeta_unit(axis[None], s1c[None], s0[None])
    share = rotation_sigma_z(r0, sigma_m, np.abs(zeta), zeta_u, np.array([1.0]))[2][0]
    want = (a1, a2 - share * zeta_u[0] * b2)
    scale = np.hypot(a1, a2)
    assert abs(slope[0] - want[0]) < 0.03 * scale + 2e-4, (slope, want)
    assert abs(slope[1] - want[1]) < 0.03 * scale + 2e-4, (slope, want)


@pytest.mark.parametrize("sigma_z", [0.05, 0.3, 1.0, 4.0])
def test_each_frame_is_shifted_by_the_mean_offset_of_its_photons(sigma_z):
    """The drift applied to frame f is v times the mean φ offset of the photons on it,
    E[z − z_c | f ≤ z < f + 1] for the Gaussian φ profile (a numerical integral here),
    not f + ½ − z_c: for a spot on two frames (σ_z = 0.05, centre 0.1 frame from
    their common edge) the frame centres are 0.4 and 0.6 frames off, the photons 0.06
    and 0.04 (fails on the frame-centre version)."""
    from dials_factored.kernels import follow_spot

    zc = 10.9
    frames = np.arange(int(zc) - 6, int(zc) + 7)
    z = np.linspace(frames[0], frames[-1] + 1, 2_000_001)
    w = np.exp(-0.5 * ((z - zc) / sigma_z) ** 2)
    want = np.array([np.sum((z - zc) * w * ((z >= f) & (z < f + 1)))
                     / max(np.sum(w * ((z >= f) & (z < f + 1))), 1e-300) for f in frames])
    n = len(frames)
    e1, e2 = follow_spot(np.zeros(n, np.float32), np.zeros(n, np.float32),
                         frames.astype(np.int32), np.array([0, n], np.int64), np.array([zc]),
                         np.array([sigma_z]), np.array([-1.0]), np.array([-2.0]))
    mass = np.array([np.sum(w * ((z >= f) & (z < f + 1))) for f in frames]) / w.sum()
    seen = mass > 1e-9  # frames with photons on them
    np.testing.assert_allclose(e1[seen], want[seen], atol=2e-4 * max(sigma_z, 1.0))
    np.testing.assert_allclose(e2[seen], 2 * want[seen], atol=4e-4 * max(sigma_z, 1.0))
    # far in the tails the shift is that of the nearer frame edge
    assert np.all(np.abs(e1) <= np.abs(frames + 0.5 - zc) + 0.5)
