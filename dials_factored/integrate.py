"""The factored integration: predict → pixels → moments → fit → (new R1, I_ref) → … → table.

One direction of data flow (see README, "Architecture"): images are read once;
every outer cycle recomputes the per-reflection statistics (J, σ_J, M₂) from the
pixel store with the current profile width and model-expected weights, refreshes
I_ref (bootstrap) and minimises the joint objective with scitbx LM.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from libtbx import Auto

from dials_factored import collective, prediction, profile
from dials_factored import reference as references
from dials_factored.arrays import to_numpy
from dials_factored.coupling import g_r1_coupling
from dials_factored.cycles import (
    FIXED_WIDTH_SIGMA,
    Cycles,
    FitState,
    make_priors,
    prior_checks,
    start_parameters,
)
from dials_factored.diagnostics import fit_warnings, per_still_table
from dials_factored.error_model import fit_error_model, others_mean
from dials_factored.forward import (
    Forward,
    cell_axis_groups,
    excitation_gradients,
    rotation_geometry,
    spot_drift,
    zc_to_phi,
)
from dials_factored.hot_pixels import stills_hot_mask
from dials_factored.layout import Layout
from dials_factored.merging import asu_groups, global_groups, symmetry_of
from dials_factored.model.partiality import bandwidth_sq
from dials_factored.model.scale import build_nodes
from dials_factored.model.width import build_grid
from dials_factored.output_table import output_table, parameter_summary
from dials_factored.parallel import one_blas_thread
from dials_factored.partiality_check import log_table, partiality_check, partiality_warnings
from dials_factored.passes import Store, Widths, cycle_pass, final_pass
from dials_factored.pixel_store import PixelStore
from dials_factored.recut import MAX_RECUTS, MIN_BACKGROUND_PIXELS, RECUT_FRACTION, Recut
from dials_factored.reflections import (
    R0_MARGIN,
    Reflections,
    agree,
    cut_boxes,
    plan_store,
    predict,
    reach_r0,
    unwritten_pixels,
)
from dials_factored.shoeboxes import extract

logger = logging.getLogger(f"dials.{__name__}")


@dataclass
class Result:
    """What the integration produced: the table, per-node parameters and diagnostics."""

    table: object
    parameters: dict
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)


def _resolve_ambiguity(experiments, strong, symmetry, params) -> dict | None:
    """Put every crystal in one setting (dials_factored.ambiguity), in place; its summary."""
    if not params.ambiguity.resolve or len(experiments) < 2:
        return None
    from dials_factored import ambiguity

    d_min = params.d_min or min(prediction.detector_d_min(e) for e in experiments)
    reference = references.load(params.reference, symmetry, d_min)
    return ambiguity.resolve(experiments, strong, symmetry, reference)


def run_factored(experiments, strong, params, progress=None) -> Result:
    """Integrate and scale ``experiments``; ``strong`` is the indexed input table.

    When the fitted widths outgrow the boxes cut from the initial ones, the integration
    starts again with boxes cut from the fitted widths (``dials_factored.recut``), at
    most ``MAX_RECUTS`` times; ``parameters["box_recuts"]`` lists each re-cut.
    """
    with one_blas_thread():
        return _integrate_with_recuts(experiments, strong, params, progress)


def _integrate_with_recuts(experiments, strong, params, progress) -> Result:
    """:func:`run_factored` (the caller limits BLAS to one thread)."""
    t_start = time.time()
    ambiguity_summary = _resolve_ambiguity(experiments, strong, symmetry_of(experiments),
                                           params)
    recuts = []
    hot = {}  # the stills' hot-pixel mask, found once (reading every image) for all re-cuts
    while True:
        out = _integrate(experiments, strong, params, progress, recuts[-1] if recuts else None,
                         allow_recut=len(recuts) < MAX_RECUTS, hot=hot)
        if isinstance(out, Result):
            out.parameters["box_recuts"] = [r.as_dict() for r in recuts]
            if ambiguity_summary is not None:
                out.parameters["ambiguity"] = ambiguity_summary
            out.timings["total_with_recuts"] = time.time() - t_start
            return out
        if out.reach:
            logger.info("Predicting again: after cycle %d the fitted R0 = %.3g Å⁻¹ is beyond "
                        "%.1f × the R0 the prediction reached; integrating again from the "
                        "fitted widths", out.cycle, np.exp(out.log_r0), R0_MARGIN)
        else:
            logger.info("Re-cutting the shoeboxes: after cycle %d the fitted widths outgrew "
                        "%.0f %% of the boxes (more than %.0f %%); integrating again from "
                        "the fitted widths", out.cycle, 100 * out.short, 100 * RECUT_FRACTION)
        recuts.append(out)


def _integrate(experiments, strong, params, progress, start: Recut | None,
               allow_recut: bool, hot: dict) -> Result | Recut:
    """One integration (:func:`run_factored`): boxes from the initial widths, or from the
    fitted widths of ``start``; a :class:`Recut` when the boxes are outgrown and
    ``allow_recut``.  ``hot`` keeps the stills' hot-pixel mask (``"mask"``) of the first
    integration for the next ones."""
    t_start = time.time()
    stills = prediction.is_stills(experiments)
    world = collective.world()
    table, r0 = predict(experiments, params, stills, world, start)
    timings = {"predict": time.time() - t_start}
    logger.info("Predicted %d reflections on %d experiments (%s)",
                world.sum(len(table)) if stills else len(table),
                len(experiments), "stills" if stills else "rotation")
    refl, boxes, r1_init, widths_init = cut_boxes(experiments, strong, params, table, r0,
                                                   start, world)
    jobs, job_of, refl, boxes, plan, owned = plan_store(experiments, refl, boxes, stills, world)
    scratch = tempfile.mkdtemp(prefix="dials_factored_", dir=params.output.scratch)
    try:
        first_pixel = np.concatenate([[0], np.cumsum(boxes.n_pixels.astype(np.int64))])
        unwritten = unwritten_pixels(experiments, refl.ids, boxes, first_pixel)
        store = Store(PixelStore(scratch, first_pixel, unwritten), plan, boxes,
                      float(params.detector.read_noise) ** 2)
        t = time.time()
        try:
            if stills and "mask" not in hot:
                hot["mask"] = stills_hot_mask(jobs, params.detector.gain, job_of=job_of,
                                              panel=refl.panel, xy=refl.xyz[:, :2],
                                              nproc=params.nproc)
            extract(experiments, refl.table, boxes, jobs, store.pixels,
                    gain=params.detector.gain, progress=progress, nproc=params.nproc,
                    hot=hot.get("mask"))
            error = None
        except ValueError as e:
            error = str(e)
        agree(world, error)
        timings["extract"] = time.time() - t
        logger.info("Read %d images: %d pixels for %d reflections in %d blocks, %.1f s",
                    len(jobs), int(store.pixels.start[-1]), len(refl.d), plan.n_blocks,
                    timings["extract"])
        return _fit_and_integrate(experiments, params, refl, store, owned, widths_init,
                                  r1_init, timings, t_start, start, allow_recut)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fit_and_integrate(experiments, params, refl: Reflections, store, owned, widths_init,
                       r1_init, timings, t_start, start=None,
                       allow_recut=False) -> Result | Recut:
    """The outer cycles over the pixel store, then the final pass and the output table.

    ``owned`` are the blocks of this process (all of them unless MPI ranks share a
    sweep); sums over reflections run over all ranks.  The widths start from ``start``
    (a re-cut) if given, their priors from ``widths_init`` and ``r1_init``.  Returns a
    :class:`Recut` instead when ``allow_recut`` and the fitted widths outgrow the boxes.
    """
    symmetry = symmetry_of(experiments)
    forward, ext_ref, state = _set_up_fit(experiments, params, refl, symmetry, widths_init,
                                          r1_init, start)
    recut = Cycles(store, owned, forward, params, ext_ref, refl.table, symmetry,
                   allow_recut).run(state)
    if recut is not None:
        return recut
    coupling = None
    if params.refinement.measure_g_r1_coupling:
        t = time.time()
        coupling = g_r1_coupling(
            state.x, state.obs, forward.layout, state.priors, params.refinement.max_iterations,
            lambda xs: cycle_pass(store, forward.widths(xs), state.j_expected, np.inf,
                                  params.nproc, state.active, owned),
            lambda xs, jj, vv: state.reference(jj, vv, forward.observed_scale(xs)))
        timings["g_r1_coupling"] = time.time() - t
    return _final(experiments, params, refl, store, owned, forward, state, coupling,
                  timings, t_start)


def _set_up_fit(experiments, params, refl: Reflections, symmetry, widths_init, r1_init,
                start: Recut | None):
    """The forward model, the external reference (or None) and the state at the start
    of the cycles: the parameter layout, the priors, the symmetry groups."""
    world = collective.world()
    stills = prediction.is_stills(experiments)
    table, d = refl.table, refl.d
    ext_ref = references.load(params.reference, symmetry, world.min(float(d.min())))
    anomalous = references.keeps_bijvoet_mates_apart(params.anomalous, ext_ref)
    # (anomalous=auto without an anomalous reference is decided after cycle 1 from the data)
    asu = asu_groups(table["miller_index"], symmetry, anomalous)[0]
    ref_values = (ext_ref.intensities(asu, anomalous) if ext_ref is not None
                  else np.full(len(d), np.nan))
    if ext_ref is not None:
        logger.info("Reference %s covers %d of %d reflections", ext_ref.name,
                    int(np.isfinite(ref_values).sum()), len(d))

    nodes = build_nodes(experiments, refl.ids, zc_to_phi(experiments, refl.ids, refl.zc),
                        params.scale.block_width)
    s2 = 1.0 / d ** 2
    grid = build_grid(d, params.profile.n_resolution_bins,
                      (world.min(float(s2.min())), world.max(float(s2.max()))))
    anisotropic = params.profile.anisotropic
    if anisotropic in (None, Auto):
        anisotropic = not stills  # see the parameter's help
    axis_groups = (cell_axis_groups(experiments[0].crystal)
                   if params.refinement.cell == "axes" else ((0, 1, 2),))
    layout = Layout(nodes.n_nodes, grid.n_bins, bool(anisotropic),
                    n_orient=nodes.n_nodes if stills and params.refinement.orientation else 0,
                    cell_groups=axis_groups)
    forward = Forward(
        layout, nodes, grid, inv_4d2=1.0 / (4.0 * d ** 2),
        eps=to_numpy(table["excitation_error"]),
        deps=(excitation_gradients(experiments, refl.ids, table, axis_groups) if stills
              else ()),
        rbw_sq=(bandwidth_sq(d, 1.0 / refl.s0_len, params.beam.bandwidth) if stills
                else np.zeros(len(d))),
        attenuation=to_numpy(table["qe"]) / to_numpy(table["lp"]), area=refl.area,
        window_sigma=params.profile.window_sigma,
        rotation=None if stills else rotation_geometry(refl.zc, refl.zeta, d, refl.s0_len,
                                                       refl.osc),
        drift=None if stills or not params.profile.follow_spot else spot_drift(
            np.array([e.goniometer.get_rotation_axis() for e in experiments])[refl.ids],
            to_numpy(table["s1"]),
            np.array([e.beam.get_s0() for e in experiments])[refl.ids]),
        s0_len=refl.s0_len)
    x = start_parameters(layout, grid, widths_init, r1_init, start)
    priors = make_priors(params, widths_init, r1_init, stills, ext_ref is not None)
    state = FitState(x, priors, global_groups(asu), anomalous, ref_values, r1_init,
                     widths_init, reach_r0(widths_init[0], start) if stills else None)
    return forward, ext_ref, state


def _final(experiments, params, refl: Reflections, store, owned, forward: Forward,
           state: FitState, coupling, timings, t_start) -> Result:
    """The final pass with the fitted model, the error model and the output table."""
    world, x, layout = collective.world(), state.x, forward.layout
    stills = forward.stills
    final_widths = forward.widths(x)
    final = final_pass(store, final_widths, state.j_expected, refl.xyz,
                       refl.ids if stills else None, params.nproc, state.active, owned)
    j, var_j, bg = final["j"], final["var_j"], final["bg"]
    no_bg = final["n_bg"] < MIN_BACKGROUND_PIXELS
    if state.active is not None:
        no_bg &= state.active
    n_no_bg = int(world.sum(int(no_bg.sum())))
    if n_no_bg:
        logger.warning("Warning: %d reflections have fewer than %d background pixels "
                       "(neighbours or the box edge claim the rest): flagged "
                       "failed_during_background_modelling, not integrated", n_no_bg,
                       MIN_BACKGROUND_PIXELS)
    # the error model from the final fit, applied to the model-expected amplitude
    # (never the observed J)
    eps_final = forward.excitation(x)
    final_scale = forward.scale(x, eps_final) * forward.attenuation
    template_coverage = final["coverage"]
    # the fit's own parameter errors (scale, orientation, widths), propagated to each
    # observation's scale·p, before the error model takes what is left
    rel_scale_var = forward.log_scale_variance(x, eps_final, state.cov)
    logger.info("Parameter errors: relative σ of scale·p median %.4f, 90th percentile %.4f",
                *np.sqrt(np.percentile(rel_scale_var, [50, 90])))
    var_j = var_j + rel_scale_var * state.j_expected ** 2
    p_model = forward.partiality(x, eps_final) if stills else None
    flank = forward.flank_lever(x, eps_final) if stills else None
    inv_d2 = 4.0 * forward.inv_4d2
    b_rel, c_eps, c_flat = _error_model(state.group, j, var_j, final_scale, state.informative & (
        template_coverage >= params.output.min_profile_coverage), flank, p_model, inv_d2)
    logger.info("Error model: relative error b = %.4f, excitation error σ_ε² = (%.2e/d)² + "
                "(%.2e Å⁻¹)² (σ² = σ_counting² + (b² + (σ_ε·∂log p/∂ε)²)·J_model²)",
                b_rel, c_eps, c_flat)
    extra = b_rel ** 2 + ((c_eps ** 2 * inv_d2 + c_flat ** 2) * flank if stills else 0.0)
    var_j = var_j + extra * state.j_expected ** 2
    p_rows = (_check_partialities(state.group, j, var_j, final_scale, p_model, forward.inv_4d2,
                                  state.informative) if stills else [])
    gb = forward.scale(x, np.zeros_like(forward.eps))
    p = (p_model if stills
         else _recorded(experiments, refl.ids, store.boxes, final_widths))
    table = refl.table
    out = output_table(table, j, var_j, final["j_sum"], final["var_sum"], bg, final["n_fg"],
                       gb, forward.isf_variance(state.cov, gb), p, to_numpy(table["lp"]),
                       to_numpy(table["qe"]),
                       (final["centroid"], final.get("centroid_variance")),
                       final["overloaded"], template_coverage, params, store.boxes, stills,
                       (final["n_bg"], no_bg))
    timings["total"] = time.time() - t_start
    parameters = parameter_summary(x, layout, forward.nodes, forward.grid, stills, state.cov,
                                   experiments)
    parameters["outlier_pixels"] = state.n_outliers
    parameters["anomalous"] = state.anomalous
    parameters["no_background"] = n_no_bg
    if coupling is not None:
        parameters["g_r1_coupling"] = coupling
    parameters["error_model_b"] = b_rel
    parameters["error_model_excitation"] = c_eps
    parameters["error_model_excitation_flat"] = c_flat
    diagnostics = {
        "z_term1": ((j - final_scale * state.i_ref) / np.sqrt(var_j))[np.isfinite(var_j)],
        "outliers_per_image": final["outliers_per_image"],
    }
    diagnostics["per_still"] = (_per_still(parameters, experiments, refl.ids,
                                           state.informative, j, final["n_fg"],
                                           final["outliers_per_image"]) if stills else None)
    parameters["warnings"] = ([state.fallback] if state.fallback else []) + fit_warnings(
        state.history, params.refinement,
        prior_checks(x, layout, state.priors, stills), np.exp(x[layout.log_r1a]),
        state.priors.log_r1_sigma != FIXED_WIDTH_SIGMA,
        diagnostics["per_still"], state.n_outliers,
        int(world.sum(float(final["n_fg"].sum())))) + partiality_warnings(p_rows)
    parameters["partiality_check"] = p_rows
    return Result(out, parameters, state.history, timings, diagnostics)


def _check_partialities(group, j, var_j, obs_scale, p, inv_4d2, informative) -> list[dict]:
    """Stills: the flank observations' full intensities against their nearly full mates
    (:mod:`.partiality_check`), logged."""
    ok = informative & (obs_scale > 0)
    safe = np.where(ok, obs_scale, 1.0)
    rows = partiality_check(group, j / safe, var_j / safe ** 2, p,
                            1.0 / np.sqrt(4.0 * inv_4d2), ok)
    logger.info(log_table(rows))
    return rows


def _per_still(parameters, experiments, ids, informative, j, n_fg, outliers_per_image) -> dict:
    """The per-still diagnostics table, summed over MPI ranks."""
    world = collective.world()
    n_still = len(experiments)
    return per_still_table(
        parameters["nodes"],
        world.sum(np.bincount(ids[informative & np.isfinite(j)], minlength=n_still)),
        world.sum(np.pad(outliers_per_image, (0, n_still))[:n_still]),
        world.sum(np.bincount(ids, weights=n_fg, minlength=n_still)))


def _recorded(experiments, ids, boxes, widths: Widths) -> np.ndarray:
    """Rotation: the fraction of each φ profile on the frames of its box inside the scan."""
    scan_range = np.array([e.scan.get_array_range() for e in experiments])[ids]
    lo = np.maximum(boxes.z0, scan_range[:, 0])
    hi = np.minimum(boxes.z1, scan_range[:, 1])
    return profile.recorded_fraction(widths.zc, widths.sz, lo, hi)


def _error_model(group, j, var_j, obs_scale, informative, flank, p, inv_d2
                 ) -> tuple[float, float, float]:
    """The error model's b, c and c₀ (:mod:`.error_model`) from the deviations of J/scale
    from their symmetry mates (c = c₀ = 0 for rotation data, ``flank`` and ``p`` None)."""
    scale = np.where(informative, obs_scale, 0.0)
    ref, var_ref, n_others = references.bootstrap(group, j, var_j, scale)
    ok = scale > 0
    safe = np.where(ok, scale, 1.0)
    columns = [np.where(ok, j / safe, np.nan), var_j / safe ** 2, np.where(ok, ref, np.nan),
               var_ref, n_others]
    if flank is not None:
        # over the mates behind the reference: those with a scale (as in the bootstrap)
        columns += [flank, others_mean(group, flank, ok), p, 1.0 / np.sqrt(inv_d2)]
    if collective.world().size > 1:  # the robust fit needs every rank's observations
        use = ok & np.isfinite(ref)
        columns = [np.concatenate(c) for c in zip(*collective.world().allgather(
            [c[use] for c in columns]))]
    return fit_error_model(*columns)


