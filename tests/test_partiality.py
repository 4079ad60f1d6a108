"""The partiality and rotation-geometry model functions against independent values."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.model.partiality import rotation_zeta, stills_partiality


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
