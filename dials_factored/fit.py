"""The joint objective L(θ) = Σ r¹² + Σ r²² + priors (minimised by LM in :mod:`.normal`).

Target (residuals and their analytic sparse Jacobian) and minimiser are separate,
as in ``dials/algorithms/scaling``.  Within one outer cycle the per-reflection
statistics (J, σ_J, M, σ_M) are fixed numbers; the parameters are

    log G and B per scale node, log R0, log η, log R1a per width node (and log R1b)

Term 1 rows depend on (G, B, R0) only and Term 2 rows on R1 (and, for
rotation, the two φ widths R0 and σ_m, held in the log R0 and log η slots, through
the φ moment) only: the Jacobian is block diagonal by
construction, which is the point of the factorisation (seed §5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dials_factored.collective import world
from dials_factored.layout import Layout
from dials_factored.model.partiality import (
    rotation_sigma_z,
    stills_log_slope,
    stills_partiality,
)
from dials_factored.reference import merged
from dials_factored.residuals.shape import binned_frame_moment, truncation

logger = logging.getLogger(f"dials.{__name__}")


@dataclass
class Priors:
    """Prior widths (σ) of the Bayesian terms; see the PHIL help for their meaning."""

    log_r0_mean: float
    log_r0_sigma: float
    log_eta_mean: float
    log_eta_sigma: float
    b_sigma: float
    smooth_log_g: float
    smooth_b: float
    smooth_log_r1: float
    #: log-normal prior of every R1 node: mean log R1 (of the strong spots) and σ
    log_r1_mean: float = 0.0
    log_r1_sigma: float | None = None
    #: σ of the gauge terms mean(log G) = 0 and mean(B) = 0 (only when no external
    #: reference fixes the overall scale): they remove the exact degeneracy of G·I_h
    #: and B with a bootstrapped I_h without biasing anything else.
    gauge_sigma: float | None = None
    #: σ (rad) of the prior on each still's orientation correction δθx, δθy.
    orient_sigma: float = 0.0035
    #: σ of the prior on each still's relative reciprocal-axis scale corrections δs_g.
    cell_scale_sigma: float = 0.02


@dataclass
class Observations:
    """Per-reflection numbers fixed during one minimisation (all numpy arrays)."""

    j: np.ndarray
    sigma_j: np.ndarray
    i_ref: np.ndarray
    attenuation: np.ndarray  # qe/lp
    inv_4d2: np.ndarray  # 1/(4d²)
    k0: np.ndarray
    k1: np.ndarray
    w: np.ndarray
    use1: np.ndarray  # reflections in Term 1
    group: np.ndarray | None  # unique reflection of each row, for a bootstrapped I_ref
    bootstrapped: np.ndarray  # rows whose I_ref is the data's own I_h (else ``i_ref``)
    stills: bool
    eps: np.ndarray
    rbw_sq: np.ndarray
    # Term 2
    use2: np.ndarray
    m_a: np.ndarray
    m_b: np.ndarray
    sigma_a: np.ndarray
    sigma_b: np.ndarray
    area: np.ndarray
    window_a: np.ndarray  # k²·R_w² along a (Å⁻²)
    window_b: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    u: np.ndarray
    # rotation φ moment
    use_z: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    m_z: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sigma_mz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # |s0|·|ζ| (Å⁻¹/rad)
    zeta_unit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # DIALS's ζ
    osc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    z_centre: np.ndarray = field(default_factory=lambda: np.zeros(0))
    z_first: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    z_last: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    node_pairs: tuple = (np.zeros(0, int), np.zeros(0, int))
    # stills: ∂ε/∂θ for small crystal rotations about the lab x and y axes (Å⁻¹/rad)
    # and ∂ε/∂δs_g for relative scales of the reciprocal axis groups (Å⁻¹), in the order
    # of ``Layout.per_still`` (forward.excitation_gradients)
    deps: tuple = ()
    width_pairs: tuple = (np.zeros(0, int), np.zeros(0, int))


def corrected_excitation(eps: np.ndarray, gradients, x: np.ndarray, layout: Layout,
                         still: np.ndarray) -> np.ndarray:
    """ε (Å⁻¹) after each still's small corrections, to first order.

    ``gradients`` are ∂ε/∂δθx, ∂ε/∂δθy (Å⁻¹/rad, crystal rotations about the lab x and y
    axes) and ∂ε/∂δs_g (Å⁻¹, relative scales of groups of reciprocal axes), per
    reflection (:func:`dials_factored.forward.excitation_gradients`); ``still`` is each
    reflection's still (its scale node).
    """
    if not layout.n_orient:
        return eps
    return eps + sum(g * x[b][still] for g, b in zip(gradients, layout.per_still))


class Rows:
    """Residual rows and their sparse Jacobian entries, accumulated term by term."""

    def __init__(self, need_jacobian: bool):
        self.need_jacobian = need_jacobian
        self.residuals, self.rows, self.cols, self.vals = [], [], [], []
        self.shared: list[int] = []
        self.n = 0

    def add(self, r: np.ndarray, entries) -> None:
        """Rows ``r``, one per reflection, with ``entries`` (column per row or one column,
        ∂r/∂x per row); zero derivatives are dropped."""
        idx = np.arange(self.n, self.n + len(r))
        self.residuals.append(r)
        if self.need_jacobian:
            for col, val in entries:
                col = np.broadcast_to(col, idx.shape)
                val = np.broadcast_to(val, idx.shape)
                nz = val != 0
                self.rows.append(idx[nz])
                self.cols.append(col[nz])
                self.vals.append(val[nz])
        self.n += len(r)

    def add_shared(self, value: float, columns: np.ndarray, weight: float) -> None:
        """One residual ``value`` depending on many parameters with one weight; such rows
        are the same on every rank (their entries: this rank's share) and enter the
        normal equations as low-rank terms (``FactoredTarget.shared_rows``)."""
        self.shared.append(self.n)
        self.residuals.append(np.array([value]))
        if self.need_jacobian:
            self.rows.append(np.full(len(columns), self.n))
            self.cols.append(columns)
            self.vals.append(np.full(len(columns), weight))
        self.n += 1

    def result(self):
        """(residuals, None) or (residuals, (rows, columns, values))."""
        r = np.concatenate(self.residuals)
        if not self.need_jacobian:
            return r, None
        return r, (np.concatenate(self.rows), np.concatenate(self.cols),
                   np.concatenate(self.vals))


class FactoredTarget:
    """Residuals r¹, r², priors and their Jacobian for a parameter vector."""

    def __init__(self, obs: Observations, layout: Layout, priors: Priors):
        self.obs = obs
        self.layout = layout
        self.priors = priors
        #: nodes whose priors this process adds (None: all; see ``shares``)
        self.prior_nodes = None
        self.shared_rows = []

    def objective(self, r: np.ndarray) -> float:
        """½ Σ r² over all ranks, the rows that every rank holds counted once."""
        own = 0.5 * float(r @ r)
        if world().rank != 0 and self.shared_rows:
            own -= 0.5 * float(np.sum(r[self.shared_rows] ** 2))
        return world().sum(own)

    def scale_model(self, x: np.ndarray):
        """J_model per reflection and its pieces (G·B_term, p, ∂log p/∂log R0, ∂log p/∂log η).

        Rows with a bootstrapped reference use I_h = the least-squares mean of their
        symmetry mates' J/scale with the current scales (self included): I_h is
        profiled out, and its derivative is left out of the Jacobian, which keeps the
        gradient exact at I_h's optimum (the envelope theorem) and only approximates
        the curvature.
        """
        o, lay = self.obs, self.layout
        log_g = x[lay.log_g]
        b = x[lay.b]
        lg = (1 - o.w) * log_g[o.k0] + o.w * log_g[o.k1]
        bb = (1 - o.w) * b[o.k0] + o.w * b[o.k1]
        gb = np.exp(lg + bb * o.inv_4d2)
        if o.stills:
            eps = self.excitation(x)
            widths = (eps, float(np.exp(x[lay.log_r0])), float(np.exp(x[lay.log_eta])),
                      4.0 * o.inv_4d2, o.rbw_sq)
            p, dlogp_r0, dlogp_eta = stills_partiality(*widths)
            self._dlogp_deps = stills_log_slope(*widths)
        else:
            p = np.ones_like(gb)
            dlogp_r0 = dlogp_eta = np.zeros_like(gb)
        scale = gb * p * o.attenuation
        i_ref = o.i_ref
        if o.group is not None and o.bootstrapped.any():
            use = o.bootstrapped & o.use1
            i_h = merged(o.group, o.j, o.sigma_j ** 2, np.where(use, scale, 0.0))
            i_ref = np.where(o.bootstrapped, i_h, o.i_ref)
        return scale * i_ref, gb, p, (dlogp_r0, dlogp_eta)

    def excitation(self, x: np.ndarray) -> np.ndarray:
        """ε per reflection with each still's orientation and cell-scale correction (Å⁻¹)."""
        o, lay = self.obs, self.layout
        return corrected_excitation(o.eps, o.deps, x, lay, o.k0)

    def widths(self, x: np.ndarray):
        """R1a, R1b per reflection (Å⁻¹)."""
        o, lay = self.obs, self.layout
        la = x[lay.log_r1a]
        lb = x[lay.log_r1b]
        ra = np.exp((1 - o.u) * la[o.b0] + o.u * la[o.b1])
        rb = np.exp((1 - o.u) * lb[o.b0] + o.u * lb[o.b1])
        return ra, rb

    def evaluate(self, x: np.ndarray, need_jacobian: bool = True):
        """All residual rows at ``x`` and (if asked) their sparse Jacobian as
        (rows, columns, values): Term 1, Term 2, the φ moment (rotation), the priors."""
        rows = Rows(need_jacobian)
        self._intensity_rows(x, rows)
        self._shape_rows(x, rows)
        if not self.obs.stills and self.obs.use_z.any():
            self._phi_moment_rows(x, rows)
        # Priors: once per run (the data rows of all ranks are summed in the normal
        # equations): those of the global parameters on rank 0, those of a still's
        # parameters on the rank that holds the still (``prior_nodes``)
        self._add_priors(x, rows)
        self.shared_rows = rows.shared
        return rows.result()

    def _intensity_rows(self, x: np.ndarray, rows: Rows) -> None:
        """Term 1: r = (J − J_model)/σ_J; J_model = G·exp(B/4d²)·p·I_ref (seed §2.1)."""
        o, lay = self.obs, self.layout
        jm, _, _, dlogp = self.scale_model(x)
        s = o.use1
        sig = o.sigma_j[s]
        dj = -jm[s] / sig
        ent = [
            (o.k0[s], dj * (1 - o.w[s])),
            (o.k1[s], dj * o.w[s]),
            (lay.n_nodes + o.k0[s], dj * (1 - o.w[s]) * o.inv_4d2[s]),
            (lay.n_nodes + o.k1[s], dj * o.w[s] * o.inv_4d2[s]),
        ]
        if o.stills:
            ent.append((lay.log_r0, dj * dlogp[0][s]))
            ent.append((lay.log_eta, dj * dlogp[1][s]))
            if lay.n_orient:
                d_eps = dj * self._dlogp_deps[s]
                ent += [(block.start + o.k0[s], d_eps * g[s])
                        for block, g in zip(lay.per_still, o.deps)]
        rows.add((o.j[s] - jm[s]) / sig, ent)

    def _shape_rows(self, x: np.ndarray, rows: Rows) -> None:
        """Term 2: r = (M₂ − M₂_model(R1))/σ_M along a and b (seed §2.2); M₂_model is the
        second moment (Å⁻²) of the Gaussian of variance R1² + area/6 truncated to the
        window."""
        o, lay = self.obs, self.layout
        ra, rb = self.widths(x)
        s = o.use2
        for m_obs, sig_m, r, window, block in (
            (o.m_a, o.sigma_a, ra, o.window_a, lay.log_r1a),
            (o.m_b, o.sigma_b, rb, o.window_b, lay.log_r1b),
        ):
            reff2 = r[s] ** 2 + o.area[s] / 6.0
            t = window[s] / reff2
            g, dg = truncation(t)
            model = 0.5 * reff2 * g
            dmodel = (g - t * dg) * r[s] ** 2  # ∂M/∂ log R1 at the reflection
            first = block.start
            rows.add((m_obs[s] - model) / sig_m[s], [
                (first + o.b0[s], -dmodel * (1 - o.u[s]) / sig_m[s]),
                (first + o.b1[s], -dmodel * o.u[s] / sig_m[s]),
            ])

    def _phi_moment_rows(self, x: np.ndarray, rows: Rows) -> None:
        """Rotation: the second moment along φ (frames²) constrains the radial R0 and the
        angular σ_m (``rotation_sigma_z``)."""
        o, lay = self.obs, self.layout
        s = o.use_z
        sz, share_r0, share_m = rotation_sigma_z(
            float(np.exp(x[lay.log_r0])), float(np.exp(x[lay.log_eta])), o.rate[s],
            o.zeta_unit[s], o.osc[s])
        model, dmodel = binned_frame_moment(o.z_centre[s], o.z_first[s], o.z_last[s], sz)
        # ∂M/∂log R0 = ∂M/∂log σ_z · ∂log σ_z/∂log R0 (the radial share), same for σ_m
        rows.add((o.m_z[s] - model) / o.sigma_mz[s], [
            (lay.log_r0, -dmodel * share_r0 / o.sigma_mz[s]),
            (lay.log_eta, -dmodel * share_m / o.sigma_mz[s])])

    def _add_priors(self, x: np.ndarray, rows: Rows) -> None:
        """The prior and smoothness rows."""
        o, lay, pri = self.obs, self.layout, self.priors
        add, add_row = rows.add, rows.add_shared
        first = world().rank == 0
        nodes = (np.arange(lay.n_nodes) if self.prior_nodes is None
                 else np.flatnonzero(self.prior_nodes))
        if first:
            add(np.array([(x[lay.log_r0] - pri.log_r0_mean) / pri.log_r0_sigma]),
                [(lay.log_r0, 1.0 / pri.log_r0_sigma)])
            add(np.array([(x[lay.log_eta] - pri.log_eta_mean) / pri.log_eta_sigma]),
                [(lay.log_eta, 1.0 / pri.log_eta_sigma)])
        add(x[lay.b][nodes] / pri.b_sigma, [(lay.b.start + nodes, 1.0 / pri.b_sigma)])
        if lay.n_orient:
            sigmas = [pri.orient_sigma] * 2 + [pri.cell_scale_sigma] * lay.n_cell
            for block, sigma in zip(lay.per_still, sigmas):
                cols_ = block.start + nodes
                add(x[cols_] / sigma, [(cols_, 1.0 / sigma)])
        if pri.gauge_sigma:
            n_nodes, w = lay.n_nodes, 1.0 / (lay.n_nodes * pri.gauge_sigma)
            total = world().sum(np.array([x[lay.log_g][nodes].sum(), x[lay.b][nodes].sum()]))
            add_row(total[0] / n_nodes / pri.gauge_sigma, nodes, w)
            add_row(total[1] / n_nodes / pri.gauge_sigma, n_nodes + nodes, w)
        a, b = o.node_pairs
        if self.prior_nodes is not None:
            a, b = a[self.prior_nodes[a]], b[self.prior_nodes[a]]
        if len(a):
            add((x[lay.log_g][b] - x[lay.log_g][a]) / pri.smooth_log_g,
                [(a, -1.0 / pri.smooth_log_g), (b, 1.0 / pri.smooth_log_g)])
            add((x[lay.b][b] - x[lay.b][a]) / pri.smooth_b,
                [(lay.n_nodes + a, -1.0 / pri.smooth_b), (lay.n_nodes + b, 1.0 / pri.smooth_b)])
        if not first:
            return
        if pri.log_r1_sigma:
            for block in {lay.log_r1a.start, lay.log_r1b.start}:
                cols_ = np.arange(block, block + lay.n_width)
                add((x[cols_] - pri.log_r1_mean) / pri.log_r1_sigma,
                    [(cols_, 1.0 / pri.log_r1_sigma)])
        a, b = o.width_pairs
        for block in {lay.log_r1a.start, lay.log_r1b.start}:
            if len(a):
                add((x[block + b] - x[block + a]) / pri.smooth_log_r1,
                    [(block + a, -1.0 / pri.smooth_log_r1), (block + b, 1.0 / pri.smooth_log_r1)])

# the minimiser lives in dials_factored.normal; kept importable from here
from dials_factored.normal import RELATIVE_DECREASE, minimise, normal_equations  # noqa: E402

__all__ = ["RELATIVE_DECREASE", "FactoredTarget", "Observations", "Priors",
           "corrected_excitation", "minimise", "normal_equations"]
