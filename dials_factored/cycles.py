"""The outer cycles: pixels → (J, σ_J, M₂) → I_ref → LM on the joint objective → new widths.

Each cycle recomputes the per-reflection statistics from the pixel store with the
current widths and model-expected weights, refreshes I_ref (the external reference, or
the data's own merged intensities: the bootstrap), builds the
:class:`~dials_factored.fit.Observations` and minimises
:class:`~dials_factored.fit.FactoredTarget`.  The cycles stop when the scales no longer
move, or return a :class:`~dials_factored.recut.Recut` when the fitted widths outgrow
the boxes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from dials_factored import collective
from dials_factored import reference as references
from dials_factored.diagnostics import PriorCheck, shifts_below
from dials_factored.expected_amplitude import expected, model_or_prior
from dials_factored.fit import FactoredTarget, Observations, Priors, minimise
from dials_factored.forward import Forward
from dials_factored.merging import anomalous_from_data
from dials_factored.model.partiality import rotation_sigma_z
from dials_factored.passes import cycle_pass
from dials_factored.recut import (
    MIN_BACKGROUND_PIXELS,
    RECUT_FRACTION,
    RECUT_MAX_GROWTH,
    Recut,
    frame_half_widths,
    half_widths,
    short_boxes,
)
from dials_factored.reflections import R0_MARGIN
from dials_factored.residuals.shape import observed_frame_moment, observed_moments

logger = logging.getLogger(f"dials.{__name__}")

#: Stills: reflections are dropped after the first cycle when their partiality is below
#: ``prediction.partiality_floor`` even with R0_eff this many times the fitted one.
PRUNE_WIDEN = 1.25
#: σ of the prior on log R1 that keeps a width fixed (profile.fit_width=false, or auto
#: after the fitted widths became implausible).
FIXED_WIDTH_SIGMA = 1e-4
#: σ of the gauge priors mean(log G) = 0, mean(B) = 0 without an external reference.
GAUGE_SIGMA = 0.01
#: Rotation: the φ moment of Term 2 (which fits R0 and σ_m) uses only reflections with
#: |m2·(ŝ1 × ŝ0)| above this (|dε/dφ| > this × |s0|).  Slower crossings, at low
#: resolution or near the axis, are integrated (down to DIALS's |ζ| = 0.05,
#: ``prediction.min_zeta``), but their φ profiles are not the first-order Gaussian
#: (the rate varies across them): on the angular-dominated 20-image sweep of
#: tests/test_rotation_law.py their moments moved the radial width R0 by 14 %.
PHI_MOMENT_MIN_RATE = 0.05


@dataclass
class FitState:
    """What the cycles carry from one to the next, and hand to the final pass.

    ``x`` the parameters (:class:`~dials_factored.fit.Layout`); ``group`` the unique
    reflection of each row; ``ref_values`` the external reference on the data's scale
    (NaN where none); ``active`` the stills reflections still integrated (None: all);
    ``j_expected`` the amplitude behind the model-expected variance of the next pass.
    """

    x: np.ndarray
    priors: Priors
    group: np.ndarray
    anomalous: bool
    ref_values: np.ndarray
    r1_init: float
    widths_init: tuple  # (R0, η) or, for rotation, (radial R0, σ_m) at the start
    #: stills: the R0 whose R0_MARGIN multiple the prediction reached (reflections.reach_r0)
    reach_r0: float | None = None
    obs: Observations | None = None
    cov: np.ndarray | None = None
    active: np.ndarray | None = None
    j_expected: np.ndarray | None = None
    informative: np.ndarray | None = None
    i_ref: np.ndarray | None = None
    history: list = field(default_factory=list)
    n_outliers: int = 0
    fallback: str | None = None

    @property
    def external(self) -> np.ndarray:
        return np.isfinite(self.ref_values)

    def reference(self, j, var_j, obs_scale) -> np.ndarray:
        """I_ref: the external reference where it has the reflection, else the data's
        own merged J/scale over the informative observations."""
        return np.where(self.external, self.ref_values, references.merged(
            self.group, j, var_j, np.where(self.informative, obs_scale, 0.0)))


def start_parameters(layout, grid, widths_init, r1_init, start: Recut | None) -> np.ndarray:
    """The parameter vector at the start: G = 1, B = 0, the initial widths (or those of
    the re-cut ``start``)."""
    x = np.zeros(layout.size)
    x[layout.log_r0] = np.log(widths_init[0])
    x[layout.log_eta] = np.log(widths_init[1])
    x[layout.log_r1a] = np.log(r1_init)
    x[layout.log_r1b] = np.log(r1_init)
    if start is not None:
        start.start(x, layout, grid)
    return x


def make_priors(params, widths_init, r1_init, stills: bool, has_reference: bool) -> Priors:
    """The priors of the PHIL parameters, centred on the initial widths."""
    r0, eta0 = widths_init
    prior_r0, prior_eta = ((params.partiality.log_r0_prior_sigma,
                            params.partiality.log_mosaic_prior_sigma) if stills else
                           (params.profile.log_phi_width_prior_sigma,) * 2)
    return Priors(
        log_r0_mean=np.log(r0),
        log_r0_sigma=prior_r0,
        log_eta_mean=np.log(eta0),
        log_eta_sigma=prior_eta,
        b_sigma=params.scale.b_prior_sigma,
        smooth_log_g=params.scale.smoothness.log_g,
        smooth_b=params.scale.smoothness.b,
        smooth_log_r1=params.profile.smoothness,
        log_r1_mean=np.log(r1_init),
        # a fixed width: a prior so narrow that the widths stay where the spots put them
        log_r1_sigma=(FIXED_WIDTH_SIGMA if params.profile.fit_width == "false"
                      else params.profile.log_r1_prior_sigma),
        gauge_sigma=None if has_reference else GAUGE_SIGMA,
        orient_sigma=np.radians(params.refinement.orientation_prior_sigma),
        cell_scale_sigma=params.refinement.cell_scale_prior_sigma,
    )


@dataclass
class Cycles:
    """One integration's outer cycles over the pixel store ``store`` (blocks ``owned`` of
    this process); ``ext_ref`` the external reference (None: bootstrap); ``table`` and
    ``symmetry`` for anomalous=auto; ``allow_recut``: return a Recut when the fitted
    widths outgrow the boxes."""

    store: object
    owned: range
    forward: Forward
    params: object
    ext_ref: object
    table: object
    symmetry: object
    allow_recut: bool

    def run(self, state: FitState) -> Recut | None:
        """Cycle until converged or ``refinement.n_cycles``; a Recut if one is needed."""
        n_cycles, cycle = self.params.refinement.n_cycles, -1
        while cycle + 1 < n_cycles:
            cycle += 1
            step = self._cycle(state, cycle)
            short = _short_fraction(self.store.boxes, self.forward.widths(state.x),
                                    self.params, state, self.forward.rotation)
            step["short_boxes"] = short
            beyond = (state.reach_r0 is not None and float(np.exp(
                state.x[self.forward.layout.log_r0])) > R0_MARGIN * state.reach_r0)
            if short > RECUT_FRACTION or beyond:
                if self.allow_recut:
                    return Recut.from_fit(state.x, self.forward.layout, self.forward.grid,
                                          short, cycle + 1, state.r1_init, beyond)
                logger.warning("Warning: after cycle %d the fitted widths outgrow %.0f %% "
                               "of the boxes%s (no re-cut left)", cycle + 1, 100 * short,
                               " and R0 the prediction's reach" if beyond else "")
                if (short > RECUT_FRACTION and self.forward.stills and state.fallback is None
                        and self.params.profile.fit_width == "auto"):
                    state.fallback = _width_fallback(state, self.forward.layout, cycle, short)
                    n_cycles = max(n_cycles, cycle + 2)  # a cycle with the widths held
                    continue  # the widths changed: this cycle says nothing about convergence
            tolerance = self.params.refinement.shift_tolerance
            # a cycle whose LM took no step (its first, damped step was too short) says
            # nothing about convergence: the next cycle's weights may move the optimum
            if cycle >= 1 and step["iterations"] > 0 and shifts_below(step, tolerance):
                logger.info("Converged: shifts below refinement.shift_tolerance = %g",
                            tolerance)
                break
        return None

    def _cycle(self, state: FitState, cycle: int) -> dict:
        """One pass over the pixels and one minimisation; the cycle's record."""
        world, forward, params = collective.world(), self.forward, self.params
        t_cycle = time.time()
        widths = forward.widths(state.x)
        stats = cycle_pass(self.store, widths, state.j_expected,
                           params.outliers.pixel_threshold, params.nproc, state.active,
                           self.owned)
        j, var_j = stats["j"], stats["var_j"]
        n_new = int(world.sum(int(stats["n_new"].sum())))
        state.n_outliers += n_new

        # The scale per observation with the current parameters, and I_ref
        eps = forward.excitation(state.x)
        obs_scale = forward.scale(state.x, eps) * forward.attenuation
        # observations the model expects to be mostly missed carry little information
        # and the least certain partiality: they enter neither the fit nor I_ref
        p_now = forward.partiality(state.x, eps) if forward.stills else np.ones(len(j))
        state.informative = p_now >= params.refinement.min_partiality
        if self.ext_ref is not None and cycle == 0:
            self._put_reference_on_scale(state, j, var_j, obs_scale)
        state.i_ref = state.reference(j, var_j, obs_scale)
        state.obs = self._observations(state, stats, obs_scale, widths)

        x_old = state.x.copy()
        state.x, objective, n_iter, state.cov, objective_start = minimise(
            FactoredTarget(state.obs, forward.layout, state.priors), state.x,
            params.refinement.max_iterations)
        self._after_minimisation(state, cycle, j, var_j)
        step = _record(state, forward.layout, x_old, cycle, objective, objective_start,
                       n_iter, n_new, time.time() - t_cycle, forward.stills)
        state.history.append(step)
        return step

    def _put_reference_on_scale(self, state, j, var_j, obs_scale) -> None:
        """Put the external reference on the data's scale once (G then absorbs drift):
        the weighted least-squares k of J ≈ k · scale · I_ref."""
        world = collective.world()
        m = obs_scale * state.ref_values
        ok = np.isfinite(m) & np.isfinite(var_j) & (var_j > 0)
        k = (world.sum(float(np.sum(j[ok] * m[ok] / var_j[ok])))
             / world.sum(float(np.sum(m[ok] ** 2 / var_j[ok]))))
        logger.info("Reference put on the data's scale with factor %.4g", k)
        state.ref_values = state.ref_values * k

    def _observations(self, state: FitState, stats: dict, obs_scale, widths) -> Observations:
        """The per-reflection statistics of Terms 1 and 2 for one minimisation, from the
        pass ``stats`` drawn with ``widths``."""
        forward, params = self.forward, self.params
        nodes, grid = forward.nodes, forward.grid
        j, var_j, bg = stats["j"], stats["var_j"], stats["bg"]
        has_bg = stats["n_bg"] >= MIN_BACKGROUND_PIXELS
        sigma_j = np.sqrt(var_j)
        # Term 2 statistics in the window drawn with the current widths
        expected_now = expected(obs_scale * state.i_ref, j, var_j)
        ma, mb, sa, sb = observed_moments(stats, bg, expected_now)
        strong_now = ((j / sigma_j > params.profile.min_i_over_sigma) & (expected_now > 0)
                      & has_bg)
        use2 = (strong_now & np.isfinite(sa) & np.isfinite(sb) & (sa > 0) & (sb > 0)
                & (state.priors.log_r1_sigma != FIXED_WIDTH_SIGMA))
        k2 = params.profile.window_sigma ** 2
        obs = Observations(
            j=j, sigma_j=sigma_j, i_ref=state.i_ref, attenuation=forward.attenuation,
            inv_4d2=forward.inv_4d2, k0=nodes.k0, k1=nodes.k1, w=nodes.w,
            use1=(state.informative & has_bg & np.isfinite(j) & np.isfinite(sigma_j)
                  & np.isfinite(state.i_ref) & (sigma_j > 0)),
            group=state.group, bootstrapped=~state.external,
            stills=forward.stills, eps=forward.eps, rbw_sq=forward.rbw_sq,
            deps=forward.deps,
            use2=use2, m_a=ma, m_b=mb, sigma_a=sa, sigma_b=sb, area=forward.area,
            window_a=k2 * widths.ra ** 2, window_b=k2 * widths.rb ** 2,
            b0=grid.b0, b1=grid.b1, u=grid.u,
            node_pairs=nodes.neighbours(),
            width_pairs=(np.arange(grid.n_bins - 1), np.arange(1, grid.n_bins)),
        )
        if not forward.stills:
            mz, smz = observed_frame_moment(stats, bg, expected_now)
            # the φ widths from reflections that cross the sphere fast enough for the
            # first-order Gaussian φ profile (see PHI_MOMENT_MIN_RATE)
            obs.use_z = (use2 & np.isfinite(smz) & (smz > 0)
                         & (forward.rotation[1] > PHI_MOMENT_MIN_RATE * forward.s0_len))
            obs.m_z, obs.sigma_mz, obs.rate, obs.zeta_unit, obs.osc = (
                mz, smz, *forward.rotation[1:])
            obs.z_centre = forward.rotation[0]
            obs.z_first, obs.z_last = stats["z_first"], stats["z_last"]
        return obs

    def _after_minimisation(self, state: FitState, cycle: int, j, var_j) -> None:
        """I_ref and the expected amplitudes from the new parameters; stills: the pruning
        of reflections that cannot hold signal."""
        world, forward, params, x = collective.world(), self.forward, self.params, state.x
        eps = forward.excitation(x)
        obs_scale = forward.scale(x, eps) * forward.attenuation
        if cycle == 0 and params.anomalous == "auto" and not state.anomalous:
            state.anomalous, state.group = anomalous_from_data(
                self.table, self.symmetry, state.group, j, var_j,
                np.where(state.informative, obs_scale, 0.0))
        state.i_ref = state.reference(j, var_j, obs_scale)
        # stills: the Wilson prior where no other observation informs I_ref; rotation keeps
        # scale·I_ref (under MPI a sweep's rows are shared between ranks, so a count of
        # "other observations" would depend on the ranks: test_mpi)
        measured = state.informative & (obs_scale > 0) & np.isfinite(j) & np.isfinite(var_j)
        state.j_expected = expected(
            model_or_prior(obs_scale, state.i_ref, j, forward.inv_4d2, state.group, measured)
            if forward.stills else obs_scale * state.i_ref, j, var_j)
        if forward.stills and state.active is None:
            p_now = forward.partiality(x, eps)
            state.active = p_now ** (1 / PRUNE_WIDEN ** 2) >= params.prediction.partiality_floor
            logger.info("%d of %d predicted reflections can hold signal (p ≥ %g with R0_eff "
                        "× %g); only these are integrated from now on",
                        int(world.sum(int(state.active.sum()))),
                        int(world.sum(len(state.active))),
                        params.prediction.partiality_floor, PRUNE_WIDEN)


def _record(state: FitState, layout, x_old, cycle, objective, objective_start, n_iter,
            n_new, seconds, stills) -> dict:
    """The cycle's entry of the history, logged."""
    world, x = collective.world(), state.x
    step = {
        "cycle": cycle + 1,
        "objective": objective,
        "objective_start": objective_start,
        "iterations": n_iter,
        "n_term1": int(world.sum(int(state.obs.use1.sum()))),
        "n_term2": int(world.sum(int(state.obs.use2.sum()))),
        "outlier_pixels": n_new,
        "max_shift_log_g": float(np.max(np.abs(x[layout.log_g] - x_old[layout.log_g]))),
        "max_shift_b": float(np.max(np.abs(x[layout.b] - x_old[layout.b]))),
        "max_shift_over_sigma": _max_shift_over_sigma(state.cov, layout, x, x_old),
        "r0": float(np.exp(x[layout.log_r0])),
        "r1": np.exp(x[layout.log_r1a]).tolist(),
        "seconds": seconds,
    }
    if not stills:  # rotation: "r0" is the radial width, with σ_m beside it
        step["sigma_m_deg"] = float(np.degrees(np.exp(x[layout.log_eta])))
    logger.info(
        "Cycle %d: objective %.5g (%d LM iterations), Term-1 %d, Term-2 %d reflections, "
        "%d new outlier pixels, max |Δlog G| %.4f, max |ΔB| %.3f Å² (max shift/σ %.3g), "
        "%s %.5g%s, %.1f s",
        step["cycle"], objective, n_iter, step["n_term1"], step["n_term2"], n_new,
        step["max_shift_log_g"], step["max_shift_b"], step["max_shift_over_sigma"],
        "R0" if stills else "radial R0 (Å⁻¹)", step["r0"],
        "" if stills else f", σ_m {step['sigma_m_deg']:.4f}°", step["seconds"])
    return step


def _max_shift_over_sigma(cov, layout, x, x_old) -> float:
    """The largest |Δ|/σ of the cycle over every log G and B (σ from the final normal
    matrix of its LM; under MPI each rank has the variances of its own stills, the others
    are 0); NaN without a covariance."""
    if cov is None:
        return float("nan")
    where = np.r_[np.arange(x.size)[layout.log_g], np.arange(x.size)[layout.b]]
    variance = cov[where, where]
    known = variance > 0
    ratio = np.abs(x[where] - x_old[where])[known] / np.sqrt(variance[known])
    return float(collective.world().max(float(np.max(ratio, initial=0.0))))


def _width_fallback(state: FitState, layout, cycle: int, short: float) -> str:
    """Fix R1 at the strong spots' width (in ``state.x`` and ``state.priors``): the fitted
    widths still outgrow the boxes after the last re-cut.  Returns the warning.

    The widths of the spots are fitted to their second moments in a window drawn from
    the widths themselves, and the boxes are re-cut from them: a spot with long tails (or
    a neighbour within reach) has a second moment that grows with the window, and the
    widths with every re-cut.  That, not a width far from the strong spots' single width,
    is the runaway: a width that grows with resolution is physical (mosaic spread smears
    the lattice point by η/d along the sphere).  On 40 simulated stills with a 0.25°
    mosaic spread the widths grow 3× from low to high resolution; held at the strong
    spots' single width the profile fit lost a third of the high-resolution photons.
    """
    r1, r1_init = np.exp(state.x[layout.log_r1a]), state.r1_init
    warning = (f"fitted R1(d) ({' '.join(f'{r:.5f}' for r in r1)} Å⁻¹) still outgrow "
               f"{100 * short:.0f} % of the boxes after cycle {cycle + 1} of the last re-cut "
               f"(the spots' second moments grow with the window: tails or neighbours): R1 "
               f"fixed at the strong spots' width {r1_init:.5f} Å⁻¹ from then on "
               f"(profile.fit_width=auto)")
    logger.warning("Warning: %s", warning)
    state.x[layout.log_r1a] = state.x[layout.log_r1b] = np.log(r1_init)
    state.priors.log_r1_sigma = FIXED_WIDTH_SIGMA
    return warning


def prior_checks(x, layout, priors, stills) -> list[PriorCheck]:
    """The global widths against their log-normal priors."""
    if not stills:
        return []
    return [PriorCheck("R0 (Å⁻¹)", float(np.exp(x[layout.log_r0])), priors.log_r0_mean,
                       priors.log_r0_sigma),
            PriorCheck("mosaic spread η (rad)", float(np.exp(x[layout.log_eta])),
                       priors.log_eta_mean, priors.log_eta_sigma)]


def _short_fraction(boxes, widths, params, state: FitState, rotation) -> float:
    """The fraction of the (active) reflections of all ranks whose boxes the widths
    outgrow (``recut.short_boxes``) and that a re-cut could widen (not yet
    ``RECUT_MAX_GROWTH`` times their boxes from the initial widths)."""
    world = collective.world()
    box_sigma = params.profile.box_sigma
    half0 = half_widths(state.r1_init, np.sqrt(widths.area), box_sigma,
                        params.profile.min_box_half_width)
    room = np.minimum(boxes.x1 - boxes.x0, boxes.y1 - boxes.y0) < 2 * RECUT_MAX_GROWTH * half0
    if rotation is not None:
        _, rate, zeta_unit, osc = rotation
        zhalf0 = frame_half_widths(rotation_sigma_z(*state.widths_init, rate, zeta_unit,
                                                    osc)[0], box_sigma)
        room |= boxes.z1 - boxes.z0 < 2 * RECUT_MAX_GROWTH * zhalf0
    short = short_boxes(boxes, widths, params.profile.window_sigma) & room
    if state.active is not None:
        short = short[state.active]
    return world.sum(int(short.sum())) / max(world.sum(len(short)), 1)
