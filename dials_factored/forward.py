"""The forward model per reflection, from the parameter vector of :mod:`.fit`.

For a parameter vector x (:class:`~dials_factored.fit.Layout`) this gives, for every
reflection of one integration, what the pixel passes and the output need:

* the excitation error ε (Å⁻¹) after each still's orientation and cell-scale shift;
* the partiality p (stills) and the scale G·exp(B/4d²)·p (counts per unit intensity
  before lp and qe), and the observed scale that also holds qe/lp;
* the profile widths R_eff (Å⁻¹) and, for rotation data, the φ centre and width (frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dials_factored import profile
from dials_factored.arrays import to_numpy
from dials_factored.fit import corrected_excitation
from dials_factored.layout import Layout
from dials_factored.model.partiality import (
    rotation_sigma_z,
    stills_log_slope,
    stills_partiality,
)
from dials_factored.passes import Widths
from dials_factored.pixel_geometry import spot_frames


def rotation_geometry(zc, zeta, d, s0_len, osc):
    """(z_c, |dε/dφ| = |s0||ζ|, DIALS's ζ_u = ζ/sin 2θ, Δφ) per rotation reflection."""
    sin_2theta = np.sin(2.0 * np.arcsin(np.clip(1.0 / (2.0 * d * s0_len), 0.0, 1.0)))
    return zc, s0_len * np.abs(zeta), zeta / np.maximum(sin_2theta, 1e-12), osc


def spot_drift(m2: np.ndarray, s1: np.ndarray, s0: np.ndarray):
    """How a rotation reflection's spot moves while it crosses the sphere (per row).

    Returns (a1, a2, b2) (Å⁻¹ per radian): the spot centre recorded δφ after the centre's
    crossing lies at δφ·v from the predicted one, v = (a1, a2 − s·ζ_u·b2) along the spot's
    axes e1 (circumferential), e2 (radial) (``pixel_geometry.spot_frames``), with s the
    angular share of σ_φ² (``model.partiality.rotation_sigma_z``).

    Derivation (first order, q = s1 − s0, m2 the axis, ê1 = e1).  Photons recorded δφ late
    come from parts of the lattice point that cross δφ late; they leave along
    s0 + q + Ω × q with Ω = δφ·m2 + ω the total rotation, ω the part's own rotation.  The
    crossing condition fixes Ω·ê1 = 0.  A radial (finite-domain) offset rotates nothing
    (ω = 0), so the spot moves by δφ·(m2 × q).  An angular one (a mosaic block turned by ω,
    σ_m per axis) crosses δφ = −ω·ê1/ζ_u late; given δφ, E[ω·ê1] = −s·ζ_u·δφ when both
    widths spread φ (regression of ω·ê1 on δφ), so E[ω × q] = −s·ζ_u·δφ·(ê1 × q).  Only
    the tangential parts (along e1, e2) move the spot, and ε = |s0|·angle = that part
    (|s1| = |s0|): a1 = (m2 × q)·e1, a2 = (m2 × q)·e2, b2 = (ê1 × q)·e2 ((ê1 × q)·e1 = 0).
    For the pure angular law v is along e1 alone; a Monte-Carlo of both laws gives the
    same slopes (tests/test_spot_drift.py).
    """
    _, f1, f2 = spot_frames(s1, s0)
    q = s1 - s0
    turn = np.cross(m2, q)
    tilt = np.cross(f1, q)
    return tuple(np.einsum("ij,ij->i", a, b) for a, b in ((turn, f1), (turn, f2), (tilt, f2)))


def zc_to_phi(experiments, ids, zc):
    """φ (deg) of each reflection from its frame coordinate (0 for stills)."""
    phi = np.zeros(len(ids))
    for i, expt in enumerate(experiments):
        if expt.scan is None or expt.scan.get_oscillation()[1] == 0:
            continue
        sel = ids == i
        phi[sel] = np.array([expt.scan.get_angle_from_array_index(float(z)) for z in zc[sel]])
    return phi


def target_widths(x, layout, grid):
    """R1 along e1 and e2 (Å⁻¹) per reflection, interpolated in log over the width grid."""
    la = x[layout.log_r1a]
    lb = x[layout.log_r1b]
    return np.exp(grid.interpolate(la)), np.exp(grid.interpolate(lb))


def cell_axis_groups(crystal) -> tuple[tuple[int, ...], ...]:
    """Groups of the reciprocal axes a*, b*, c* (0, 1, 2) whose lengths the lattice
    symmetry ties: one relative scale per group keeps the crystal's symmetry.

    Cubic (and rhombohedral axes): one group (the isotropic scale); tetragonal, hexagonal
    and trigonal (hexagonal axes): a* = b* and c*; otherwise each axis alone (for
    monoclinic and triclinic cells the axis lengths, not the angles).
    """
    system = crystal.get_space_group().crystal_system()
    a, _, c = crystal.get_unit_cell().parameters()[:3]
    if system == "Cubic" or (system == "Trigonal" and abs(a - c) < 1e-3 * a):
        return ((0, 1, 2),)
    if system in ("Tetragonal", "Hexagonal", "Trigonal"):
        return ((0, 1), (2,))
    return ((0,), (1,), (2,))


def excitation_gradients(experiments, ids, table, axis_groups=((0, 1, 2),)):
    """∂ε/∂θx, ∂ε/∂θy (Å⁻¹/rad) and ∂ε/∂δs_g (Å⁻¹) of each still's reflections.

    A rotation ω of the crystal moves q = A·h by ω×q, and ε = |q + s0| − |s0| changes
    by ŝ1·(ω×q).  Rotations about the beam (z) leave ε unchanged to first order and are
    fixed by the spot positions, so only x and y are refined.  Relative scales δs_g of
    the reciprocal axes of group g (:func:`cell_axis_groups`; A → A·diag(1 + δs), the
    columns of A being a*, b*, c*) move q by δs_g·Σ_{j∈g} h_j·A_j and ε by ŝ1 of that.
    For one group this is the isotropic scale, δε = δs·ŝ1·q = δs·λ/(2d²) on the sphere:
    the excitation error of a cell (or wavelength) that is off by a fraction, which
    grows as 1/d² and which a mosaic spread cannot mimic without widening every
    partiality.  The axes apart hold what stills indexing leaves: on 60 simulated
    orthorhombic stills indexed by dials.ssx_index the axis lengths were off by up to
    0.8 % from each other, and the stills worst off were those whose partialities came
    out wrong.  On the real thaumatin grid stills of ../shared/data the indexing left an
    isotropic error of about 1 % (measured from the strong spots' ε).
    """
    hkl = to_numpy(table["miller_index"]).astype(float)
    a_mats = np.array([np.asarray(e.crystal.get_A()).reshape(3, 3) for e in experiments])
    q = np.einsum("nij,nj->ni", a_mats[ids], hkl)
    # ∂|q + s0|/∂q is along q + s0 itself (the predictor's s1 is put on the sphere, which
    # is off by ~ε/|q| in direction: 1-5 % of ŝ1·q = q²/2|s0|, the cell-scale gradient)
    k = q + np.array([e.beam.get_s0() for e in experiments])[ids]
    u1 = k / np.linalg.norm(k, axis=1)[:, None]
    rotations = tuple(np.einsum("ij,ij->i", u1, np.cross(axis, q))
                      for axis in (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])))
    # ŝ1·A_j·h_j per axis j, summed over each group
    per_axis = np.einsum("ni,nij,nj->nj", u1, a_mats[ids], hkl)
    return rotations + tuple(per_axis[:, list(g)].sum(axis=1) for g in axis_groups)


@dataclass
class Forward:
    """The fixed per-reflection quantities of one integration and the model drawn from x.

    ``nodes`` are the scale nodes (:func:`~dials_factored.model.scale.build_nodes`),
    ``grid`` the width grid; ``inv_4d2`` = 1/4d² (Å⁻²), ``eps`` the predicted ε (Å⁻¹),
    ``deps`` its gradients (:func:`excitation_gradients`; zeros for rotation),
    ``rbw_sq`` the bandwidth's radial width² (Å⁻²), ``attenuation`` qe/lp, ``area`` the
    pixel area in reciprocal space (Å⁻²), ``rotation`` :func:`rotation_geometry` (None
    for stills).
    """

    layout: Layout
    nodes: object
    grid: object
    inv_4d2: np.ndarray
    eps: np.ndarray
    deps: tuple
    rbw_sq: np.ndarray
    attenuation: np.ndarray
    area: np.ndarray
    window_sigma: float
    rotation: tuple | None = None
    drift: tuple | None = None  # rotation: spot_drift (a1, a2, b2), Å⁻¹ per radian
    s0_len: np.ndarray | None = None  # 1/λ (Å⁻¹) per reflection

    @property
    def stills(self) -> bool:
        return self.rotation is None

    def excitation(self, x) -> np.ndarray:
        """ε with each still's fitted orientation and cell-scale correction (Å⁻¹)."""
        return corrected_excitation(self.eps, self.deps, x, self.layout, self.nodes.k0)

    def partiality(self, x, eps) -> np.ndarray:
        """Stills partiality p of every reflection with the current R0 and η."""
        return stills_partiality(*self._partiality_widths(x, eps))[0]

    def scale(self, x, eps) -> np.ndarray:
        """G·exp(B/4d²)·p per observation (counts per unit intensity before lp, qe)."""
        layout, nodes = self.layout, self.nodes
        lg = nodes.interpolate(x[layout.log_g])
        b = nodes.interpolate(x[layout.b])
        s = np.exp(lg + b * self.inv_4d2)
        if self.stills:
            s = s * self.partiality(x, eps)
        return s

    def _partiality_widths(self, x, eps) -> tuple:
        """The arguments of the stills partiality functions for ``x`` and ``eps``."""
        layout = self.layout
        return (eps, float(np.exp(x[layout.log_r0])), float(np.exp(x[layout.log_eta])),
                4.0 * self.inv_4d2, self.rbw_sq)

    def flank_lever(self, x, eps) -> np.ndarray:
        """s² = (∂log p/∂ε)² (Å²): Var(log p) per unit σ_ε² of an excitation error
        (:mod:`dials_factored.error_model`)."""
        return stills_log_slope(*self._partiality_widths(x, eps)) ** 2

    def observed_scale(self, x) -> np.ndarray:
        """The scale with ε from x and qe/lp: counts per unit intensity as recorded."""
        return self.scale(x, self.excitation(x)) * self.attenuation

    def widths(self, x) -> Widths:
        """The per-reflection widths of a pass for the parameters ``x``."""
        ra, rb = target_widths(x, self.layout, self.grid)
        ra_eff, rb_eff = profile.effective_widths(ra, rb, self.area)
        if self.rotation is None:
            return Widths(ra_eff, rb_eff, self.area, self.window_sigma)
        zc, rate, zeta_unit, osc = self.rotation
        layout = self.layout
        sz, _, angular = rotation_sigma_z(float(np.exp(x[layout.log_r0])),
                                          float(np.exp(x[layout.log_eta])), rate, zeta_unit,
                                          osc)
        drift = None
        if self.drift is not None:
            a1, a2, b2 = self.drift
            per_frame = np.radians(osc)
            drift = (a1 * per_frame, (a2 - angular * zeta_unit * b2) * per_frame)
        return Widths(ra_eff, rb_eff, self.area, self.window_sigma, zc, sz, drift)

    def isf_variance(self, cov, isf) -> np.ndarray:
        """Var(G·exp(B/4d²)) per observation from the covariance of log G and B."""
        return isf ** 2 * self.log_scale_variance(None, None, cov)

    def log_scale_variance(self, x, eps, cov) -> np.ndarray:
        """Var(log s) per observation, s = G·exp(B/4d²)·p, from the fit's covariance.

        First order: Var(log s) = gᵀ C g, g = ∂log s/∂θ over the parameters θ of the
        observation (the log G and B of its two scale nodes, with the interpolation
        weights w: ∂/∂log G = w, ∂/∂B = w/4d²), and for stills given ``x`` and their ε
        also its still's δθx, δθy, δs_g and the global log R0, log η: log p = −ε²/R0_eff², so
        ∂log p/∂ε = −2ε/R0_eff² times ∂ε/∂θ (:func:`excitation_gradients`).  C is the
        fit's parameter covariance (N⁻¹ of the objective; ``cov[i, j]`` broadcast over
        index arrays).  The estimation error of a still's orientation grows with |q|
        and with |ε|/R0_eff: it is what makes the high-resolution and the tail-of-the-
        partiality observations less certain than their counts say.  Dimensionless.
        """
        n = len(self.inv_4d2)
        if cov is None:
            return np.zeros(n)
        layout, nodes = self.layout, self.nodes
        lg = np.arange(layout.log_g.start, layout.log_g.stop)
        bb = np.arange(layout.b.start, layout.b.stop)
        index, grad = [], []
        for wk, k in ((1 - nodes.w, nodes.k0), (nodes.w, nodes.k1)):
            index += [lg[k], bb[k]]
            grad += [wk, wk * self.inv_4d2]
        if x is not None and self.stills:
            widths = self._partiality_widths(x, eps)
            _, dlog_r0, dlog_eta = stills_partiality(*widths)
            dlogp_deps = stills_log_slope(*widths)
            for g, block in zip(self.deps, layout.per_still):
                index.append(np.arange(block.start, block.stop)[nodes.k0])
                grad.append(dlogp_deps * g)
            index += [np.full(n, layout.log_r0), np.full(n, layout.log_eta)]
            grad += [dlog_r0, dlog_eta]
        var = np.zeros(n)
        for a in range(len(index)):
            for b in range(a, len(index)):
                term = grad[a] * grad[b] * cov[index[a], index[b]]
                var += term if a == b else 2.0 * term
        return np.maximum(var, 0.0)
