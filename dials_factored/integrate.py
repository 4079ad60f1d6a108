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
from dataclasses import dataclass, field, replace

import numpy as np
from dials.array_family import flex
from libtbx import Auto

from dials_factored import collective, prediction, profile
from dials_factored import reference as references
from dials_factored.arrays import miller_keys, to_numpy
from dials_factored.diagnostics import (
    WIDTH_FACTOR,
    PriorCheck,
    fit_warnings,
    implausible_widths,
    per_still_table,
)
from dials_factored.error_model import fit_relative_error
from dials_factored.fit import (
    FactoredTarget,
    Layout,
    Observations,
    Priors,
    corrected_excitation,
    minimise,
)
from dials_factored.hot_pixels import stills_hot_mask
from dials_factored.merging import asu_groups, global_groups, symmetry_of
from dials_factored.model.partiality import (
    bandwidth_sq,
    rotation_sigma_z,
    rotation_zeta,
    rotation_zeta_unit,
    stills_partiality,
)
from dials_factored.model.scale import build_nodes
from dials_factored.model.width import build_grid
from dials_factored.passes import Store, Widths, cycle_pass, final_pass
from dials_factored.pixel_store import BLOCK_PIXELS, BlockPlan, PixelStore, plan_blocks
from dials_factored.recut import (
    MAX_RECUTS,
    MIN_BACKGROUND_PIXELS,
    RECUT_FRACTION,
    RECUT_MAX_GROWTH,
    Recut,
    frame_half_widths,
    half_widths,
    short_boxes,
)
from dials_factored.residuals.shape import observed_frame_moment, observed_moments
from dials_factored.shoeboxes import Boxes, extract, pixel_areas, plan_jobs

logger = logging.getLogger(f"dials.{__name__}")

#: Initial R0 (Å⁻¹) of stills when neither the parameters nor the indexing give one:
#: R0 = 1/D (the convention applied to the indexing's domain size below) for mosaic
#: domains of D = 2000 Å, within the 10³ Å order of the domain sizes refined for
#: microcrystal stills with the model of Sauter et al. (2014), Acta Cryst. D70,
#: 3299–3309 (DIALS's MosaicCrystalSauter2014).  The fit converges to the same R0 (±1 %)
#: from starts 4× smaller and larger (tests/test_starting_values.py), but a start well
#: below the truth predicts fewer reflections: the excitation cutoff of the prediction
#: uses the initial R0.
DEFAULT_R0 = 0.0005
#: Data this many σ above the model widen the model-expected variance (see _expected).
GROSS_EXCESS = 3.0
#: Stills: reflections are dropped after the first cycle when their partiality is below
#: ``prediction.partiality_floor`` even with R0_eff this many times the fitted one.
PRUNE_WIDEN = 1.25
#: σ of the prior on log R1 that keeps a width fixed (profile.fit_width=false, or auto
#: after the fitted widths became implausible).
FIXED_WIDTH_SIGMA = 1e-4
#: σ of the gauge priors mean(log G) = 0, mean(B) = 0 without an external reference.
GAUGE_SIGMA = 0.01
#: Stills are predicted out to excitation_cutoff × R0_eff with R0 this many times its
#: initial value (room for the fit to widen it).
R0_MARGIN = 1.5


@dataclass
class Result:
    """What the integration produced: the table, per-node parameters and diagnostics."""

    table: object
    parameters: dict
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)


def _stills_share(experiments, world) -> list[int] | None:
    """The experiments this MPI rank integrates (None: all), whole images to a rank."""
    if world.size == 1:
        return None
    keys = [(e.imageset.get_path(0), e.imageset.indices()[0]) for e in experiments]
    images = list(dict.fromkeys(keys))
    lo, hi = collective.split(len(images), world.rank, world.size)
    mine = set(images[lo:hi])
    return [i for i, key in enumerate(keys) if key in mine]


class AgreedError(ValueError):
    """An error raised on every MPI rank at once (so every rank can just stop)."""


def _agree(world, error: str | None) -> None:
    """Raise the first rank's error on every rank (no rank waits for one that failed)."""
    error = world.first_error(error)
    if error:
        raise AgreedError(error)


def _typical_area(experiments, strong, area: np.ndarray, world) -> float:
    """Median pixel area on the Ewald sphere (Å⁻²): at the strong spots (the same for every
    MPI rank), else at the predicted spots."""
    if strong is None or len(strong) == 0 or "xyzobs.px.value" not in strong:
        return float(np.median(np.concatenate(world.allgather(area))))
    xyz = to_numpy(strong["xyzobs.px.value"])
    ids = np.clip(to_numpy(strong["id"]).astype(int), 0, len(experiments) - 1)
    s0_len = np.array([np.linalg.norm(e.beam.get_s0()) for e in experiments])[ids]
    panels = to_numpy(strong["panel"]).astype(int)
    return float(np.median(pixel_areas(experiments, ids, panels, xyz, s0_len)))


def _initial_r1(strong, area_median: float, default: float) -> float:
    """R1 (Å⁻¹) from the spot finder's boxes: σ_px ≈ width/4, R1 = √2·σ_px·a."""
    if strong is None or "bbox" not in strong or len(strong) == 0:
        return default
    x0, x1, y0, y1, _, _ = strong["bbox"].parts()
    width = np.median(0.5 * (to_numpy(x1 - x0) + to_numpy(y1 - y0)))
    return float(np.sqrt(2.0) * max(width, 2.0) / 4.0 * np.sqrt(area_median))


def _initial_phi_widths(strong, rate: np.ndarray, zeta_unit: np.ndarray, osc_deg: float,
                        mosaicity_deg: float | None, default_deg: float = 0.1):
    """Initial (R0 Å⁻¹, σ_m rad) of rotation data (see ``model.partiality``).

    The φ width σ_φ of the median reflection comes from the spot finder's z extents
    (σ_z ≈ extent/4), or from ``mosaicity_deg`` taken as DIALS's σ_m; the two widths
    start with equal shares of σ_φ² there, and the φ moments of Term 2 split them.
    """
    rate_m, zeta_m = float(np.median(rate)), float(np.median(np.abs(zeta_unit)))
    if mosaicity_deg:
        sigma_phi = np.sqrt(2.0) * np.radians(mosaicity_deg) / zeta_m
    elif strong is None or "bbox" not in strong or len(strong) == 0:
        sigma_phi = np.radians(default_deg) / zeta_m
    else:
        _, _, _, _, z0, z1 = strong["bbox"].parts()
        extent = float(np.median(to_numpy(z1 - z0)))
        sigma_phi = np.radians(max(extent, 1.0) / 4.0 * osc_deg)
    return float(sigma_phi * rate_m), float(sigma_phi / np.sqrt(2.0) * zeta_m)


def _resolve_ambiguity(experiments, strong, symmetry, params) -> dict | None:
    """Put every crystal in one setting (dials_factored.ambiguity), in place; its summary."""
    if not params.ambiguity.resolve or len(experiments) < 2:
        return None
    from dials_factored import ambiguity

    d_min = params.d_min or min(prediction.detector_d_min(e) for e in experiments)
    reference = references.load(params.reference, symmetry, d_min)
    return ambiguity.resolve(experiments, strong, symmetry, reference)


def _anomalous_from_data(table, symmetry, group, j, var_j, obs_scale):
    """anomalous=auto without an anomalous reference: after the first cycle, keep Bijvoet
    mates apart from now on if the data carry a significant anomalous signal (CC_ano½ of
    J/scale above 3/√n over n ≥ 100 Bijvoet pairs; under MPI the ranks' values are
    averaged, weighted by n).  Returns (anomalous, group)."""
    from dials_factored.statistics import anomalous_signal

    world = collective.world()
    ok = (obs_scale > 0) & np.isfinite(j) & np.isfinite(var_j)
    plus = miller_keys(to_numpy(asu_groups(table["miller_index"], symmetry, True)[0])) == \
        miller_keys(to_numpy(asu_groups(table["miller_index"], symmetry, False)[0]))
    cc, n = anomalous_signal(group[ok], plus[ok], j[ok] / obs_scale[ok])
    n_all = world.sum(int(n))
    cc = world.sum(float(np.nan_to_num(cc) * n)) / max(n_all, 1)
    significant = n_all >= 100 and cc > 3 / np.sqrt(n_all)
    logger.info("Anomalous signal after cycle 1: CC_ano½ = %.3f over %d Bijvoet pairs: "
                "Bijvoet mates %s", cc, n_all,
                "kept apart from now on (anomalous=auto)" if significant else "stay merged")
    if not significant:
        return False, group
    return True, global_groups(asu_groups(table["miller_index"], symmetry, True)[0])


def _rotation_geometry(zc, zeta, d, s0_len, osc):
    """(z_c, |dε/dφ| = |s0||ζ|, DIALS's ζ_u = ζ/sin 2θ, Δφ) per rotation reflection."""
    sin_2theta = np.sin(2.0 * np.arcsin(np.clip(1.0 / (2.0 * d * s0_len), 0.0, 1.0)))
    return zc, s0_len * np.abs(zeta), zeta / np.maximum(sin_2theta, 1e-12), osc


def run_factored(experiments, strong, params, progress=None) -> Result:
    """Integrate and scale ``experiments``; ``strong`` is the indexed input table.

    When the fitted widths outgrow the boxes cut from the initial ones, the integration
    starts again with boxes cut from the fitted widths (``dials_factored.recut``), at
    most ``MAX_RECUTS`` times; ``parameters["box_recuts"]`` lists each re-cut.
    """
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
    timings = {}
    stills = prediction.is_stills(experiments)
    symmetry = symmetry_of(experiments)
    wavelength0 = np.array([e.beam.get_wavelength() for e in experiments])

    # Initial widths from the data or the parameters
    if stills:
        r0 = params.partiality.r0
        if r0 is None:
            sizes = [e.crystal.get_domain_size_ang() for e in experiments
                     if hasattr(e.crystal, "get_domain_size_ang")]
            sizes = [s for s in sizes if s and s > 0]
            r0 = 1.0 / float(np.median(sizes)) if sizes else DEFAULT_R0
        d_floor = params.d_min or min(prediction.detector_d_min(e) for e in experiments)
        max_rbw = bandwidth_sq(np.array([d_floor]), wavelength0.max(), params.beam.bandwidth)[0]
        max_eps = params.prediction.excitation_cutoff * np.sqrt(
            (R0_MARGIN * r0) ** 2 + max_rbw)
    else:
        max_eps = 0.0
    world = collective.world()
    share = _stills_share(experiments, world) if stills else None
    table = prediction.predict(experiments, params.d_min, max_eps, subset=share)
    if stills and len(table):
        # the bandwidth term grows as 1/d⁴: apply the cutoff per reflection
        d_all = to_numpy(table["d"])
        s0_all = 1.0 / wavelength0[to_numpy(table["id"]).astype(int)]
        reach = params.prediction.excitation_cutoff * np.sqrt(
            (R0_MARGIN * r0) ** 2 + bandwidth_sq(d_all, 1.0 / s0_all, params.beam.bandwidth))
        table = table.select(flex.bool(
            (np.abs(to_numpy(table["excitation_error"])) < reach).tolist()))
    _agree(world, None if len(table) else
           "no reflections are predicted on the detector for these experiments"
           + (f" (MPI rank {world.rank})" if world.size > 1 else ""))
    timings["predict"] = time.time() - t_start
    logger.info("Predicted %d reflections on %d experiments (%s)",
                world.sum(len(table)) if stills else len(table),
                len(experiments), "stills" if stills else "rotation")

    ids = to_numpy(table["id"]).astype(int)
    d = to_numpy(table["d"])
    s1 = to_numpy(table["s1"])
    xyz = to_numpy(table["xyzcal.px"])
    panel_ids = to_numpy(table["panel"]).astype(int)
    s0 = np.array([experiments[i].beam.get_s0() for i in range(len(experiments))])[ids]
    s0_len = np.linalg.norm(s0, axis=1)
    area = pixel_areas(experiments, ids, panel_ids, xyz, s0_len)
    a = np.sqrt(area)

    area_typical = _typical_area(experiments, strong, area, world)
    r1_init = params.profile.r1 or _initial_r1(strong, area_typical, np.sqrt(area_typical))
    box_sigma, min_half = params.profile.box_sigma, params.profile.min_box_half_width
    half = half_widths(r1_init, a, box_sigma, min_half)
    if start is not None:  # boxes from the fitted widths, at most RECUT_MAX_GROWTH × wider
        half = np.minimum(half_widths(start.r_eff(d, area), a, box_sigma, min_half),
                          RECUT_MAX_GROWTH * half)
    x0 = np.floor(xyz[:, 0]).astype(int) - half
    y0 = np.floor(xyz[:, 1]).astype(int) - half
    zc = xyz[:, 2]
    if stills:
        z0 = np.zeros(len(table), int)
        z1 = np.ones(len(table), int)
        zeta = np.zeros(len(table))
        osc = np.zeros(len(table))
    else:
        m2 = np.array([experiments[i].goniometer.get_rotation_axis() for i in
                       range(len(experiments))])[ids]
        zeta = rotation_zeta(m2, s1, s0)
        zeta_u = rotation_zeta_unit(m2, s1, s0)
        osc = np.array([e.scan.get_oscillation()[1] for e in experiments])[ids]
        rate = s0_len * np.abs(zeta)
        r0 = _initial_phi_widths(strong, rate, zeta_u, float(np.median(osc)),
                                 params.profile.mosaicity)  # (R0, σ_m)
        zhalf = frame_half_widths(rotation_sigma_z(*r0, rate, zeta_u, osc)[0], box_sigma)
        if start is not None:
            sz = rotation_sigma_z(np.exp(start.log_r0), np.exp(start.log_eta), rate, zeta_u,
                                  osc)[0]
            zhalf = np.minimum(frame_half_widths(sz, box_sigma), RECUT_MAX_GROWTH * zhalf)
        z0 = np.floor(zc).astype(int) - zhalf
        z1 = np.floor(zc).astype(int) + zhalf + 1
        # keep reflections whose centre lies in the scan and that are not too close to the axis
        ok = np.abs(zeta) > params.prediction.min_zeta  # ζ·sin 2θ, see its help
        table, ids, d, s1, xyz, panel_ids, s0, area, a, x0, y0, z0, z1, zc, zeta, osc = (
            _select(ok, table, ids, d, s1, xyz, panel_ids, s0, area, a, x0, y0, z0, z1, zc,
                    zeta, osc))
        half = half[ok]
    boxes = Boxes(panel_ids, x0, x0 + 2 * half + 1, y0, y0 + 2 * half + 1, z0, z1)
    logger.info("%s; boxes of %d–%d px", f"Initial profile width R1 = {r1_init:.5f} Å⁻¹"
                if start is None else "Boxes re-cut from the fitted widths",
                int(2 * half.min() + 1), int(2 * half.max() + 1))

    # the store keeps reflections in the order their last image is read
    jobs, first_job, last_job, origin = plan_jobs(experiments, ids, boxes)
    order = np.argsort(last_job, kind="stable")
    table = table.select(flex.size_t(order.tolist()))
    ids, d, s1, xyz, panel_ids, s0, area, a, zc, zeta, osc = (
        v[order] for v in (ids, d, s1, xyz, panel_ids, s0, area, a, zc, zeta, osc))
    boxes = boxes.select(order)
    n_pixels = boxes.n_pixels.astype(np.int64)
    budget = (BLOCK_PIXELS if stills
              else min(BLOCK_PIXELS, int(n_pixels.sum()) // (2 * world.size)))
    plan = BlockPlan(first_job[order], last_job[order],
                     plan_blocks(last_job[order], n_pixels, max(budget, 1)), origin[order])
    owned = range(plan.n_blocks)
    if not stills and world.size > 1:
        _agree(world, None if plan.n_blocks >= world.size else
               f"{world.size} MPI ranks for {plan.n_blocks} blocks of images: use fewer ranks")
        # a share of the blocks, and every box that can share a pixel with them
        owned_global = range(*collective.split(plan.n_blocks, world.rank, world.size))
        u0, u1, plan, owned = plan.share(owned_global)
        table = table.select(flex.size_t(range(u0, u1)))
        ids, d, s1, xyz, s0, area, zc, zeta, osc = (
            v[u0:u1] for v in (ids, d, s1, xyz, s0, area, zc, zeta, osc))
        boxes = boxes.select(slice(u0, u1))
        n_pixels = n_pixels[u0:u1]
    scratch = tempfile.mkdtemp(prefix="dials_factored_", dir=params.output.scratch)
    try:
        store = Store(PixelStore(scratch, np.concatenate([[0], np.cumsum(n_pixels)])), plan,
                      boxes, float(params.detector.read_noise) ** 2)
        t = time.time()
        try:
            if stills and "mask" not in hot:
                hot["mask"] = stills_hot_mask(jobs, params.detector.gain,
                                              job_of=first_job[order], panel=panel_ids,
                                              xy=xyz[:, :2], nproc=params.nproc)
            extract(experiments, table, boxes, jobs, store.pixels,
                    gain=params.detector.gain, progress=progress, nproc=params.nproc,
                    hot=hot.get("mask"))
            error = None
        except ValueError as e:
            error = str(e)
        _agree(world, error)
        timings["extract"] = time.time() - t
        logger.info("Read %d images: %d pixels for %d reflections in %d blocks, %.1f s",
                    len(jobs), int(store.pixels.start[-1]), len(table), plan.n_blocks,
                    timings["extract"])
        return _fit_and_integrate(experiments, params, table, store, owned, stills, symmetry, r0,
                                  r1_init, ids, d, s1, xyz, s0_len=np.linalg.norm(s0, axis=1),
                                  area=area, zc=zc, zeta=zeta, osc=osc, timings=timings,
                                  t_start=t_start, start=start, allow_recut=allow_recut)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fit_and_integrate(experiments, params, table, store, owned, stills, symmetry, r0,
                       r1_init, ids, d, s1, xyz, s0_len, area, zc, zeta, osc, timings,
                       t_start, start=None, allow_recut=False) -> Result | Recut:
    """The outer cycles over the pixel store, then the final pass and the output table.

    ``owned`` are the blocks of this process (all of them unless MPI ranks share a
    sweep); sums over reflections run over all ranks.  The widths start from ``start``
    (a re-cut) if given, their priors from the initial ``r0``, ``r1_init``.  Returns a
    :class:`Recut` instead when ``allow_recut`` and the fitted widths outgrow the boxes.
    """
    world = collective.world()
    # Fixed per-reflection quantities
    lp = to_numpy(table["lp"])
    qe = to_numpy(table["qe"])
    attenuation = qe / lp
    inv_4d2 = 1.0 / (4.0 * d ** 2)
    eps = to_numpy(table["excitation_error"])
    rbw_sq = bandwidth_sq(d, 1.0 / s0_len, params.beam.bandwidth) if stills else np.zeros(len(d))
    ext_ref = references.load(params.reference, symmetry, world.min(float(d.min())))
    anomalous = references.keeps_bijvoet_mates_apart(params.anomalous, ext_ref)
    # (anomalous=auto without an anomalous reference is decided after cycle 1 from the data)
    asu = asu_groups(table["miller_index"], symmetry, anomalous)[0]
    group = global_groups(asu)
    ref_values = (ext_ref.intensities(asu, anomalous) if ext_ref is not None
                  else np.full(len(d), np.nan))
    if ext_ref is not None:
        logger.info("Reference %s covers %d of %d reflections", ext_ref.name,
                    int(np.isfinite(ref_values).sum()), len(d))

    nodes = build_nodes(experiments, ids, zc_to_phi(experiments, ids, zc), params.scale.block_width)
    s2 = 1.0 / d ** 2
    grid = build_grid(d, params.profile.n_resolution_bins,
                      (world.min(float(s2.min())), world.max(float(s2.max()))))
    anisotropic = params.profile.anisotropic
    if anisotropic in (None, Auto):
        anisotropic = not stills  # see the parameter's help
    layout = Layout(nodes.n_nodes, grid.n_bins, bool(anisotropic),
                    n_orient=nodes.n_nodes if stills and params.refinement.orientation else 0)
    deps = (_excitation_gradients(experiments, ids, table) if stills
            else (np.zeros(len(d)),) * 3)

    def excitation(x):
        """ε with each still's fitted orientation and cell-scale correction (Å⁻¹)."""
        return corrected_excitation(eps, deps, x, layout, nodes.k0)

    # rotation: the radial R0 and the angular σ_m sit in the log R0 and log η slots
    r0, eta0 = (r0, np.radians(params.partiality.mosaic)) if stills else r0
    prior_r0, prior_eta = ((params.partiality.log_r0_prior_sigma,
                            params.partiality.log_mosaic_prior_sigma) if stills else
                           (params.profile.log_phi_width_prior_sigma,) * 2)
    x = np.zeros(layout.size)
    x[layout.log_r0] = np.log(r0)
    x[layout.log_eta] = np.log(eta0)
    x[layout.log_r1a] = np.log(r1_init)
    x[layout.log_r1b] = np.log(r1_init)
    if start is not None:
        start.start(x, layout, grid)
    priors = Priors(
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
        gauge_sigma=GAUGE_SIGMA if ext_ref is None else None,
        orient_sigma=np.radians(params.refinement.orientation_prior_sigma),
        cell_scale_sigma=params.refinement.cell_scale_prior_sigma,
    )
    rotation = None if stills else _rotation_geometry(zc, zeta, d, s0_len, osc)
    active = None
    j_expected = None
    history = []
    n_outliers = 0
    fallback = None
    for cycle in range(params.refinement.n_cycles):
        t_cycle = time.time()
        widths = _widths(x, layout, grid, area, params, rotation)
        stats = cycle_pass(store, widths, j_expected, params.outliers.pixel_threshold,
                           params.nproc, active, owned)
        j, var_j, bg = stats["j"], stats["var_j"], stats["bg"]
        has_bg = stats["n_bg"] >= MIN_BACKGROUND_PIXELS
        n_new = int(world.sum(int(stats["n_new"].sum())))
        n_outliers += n_new
        sigma_j = np.sqrt(var_j)

        # The scale per observation with the current parameters, and I_ref
        eps_now = excitation(x)
        obs_scale = _scale(x, layout, nodes, inv_4d2, eps_now, rbw_sq, stills) * attenuation
        # observations the model expects to be mostly missed carry little information
        # and the least certain partiality: they enter neither the fit nor I_ref
        p_now = _partiality(x, layout, eps_now, inv_4d2, rbw_sq) if stills else np.ones(len(d))
        informative = p_now >= params.refinement.min_partiality
        if ext_ref is not None and cycle == 0:
            # put the external reference on the data's scale once (G then absorbs drift):
            # the weighted least-squares k of J ≈ k · scale · I_ref
            m = obs_scale * ref_values
            ok = np.isfinite(m) & np.isfinite(var_j) & (var_j > 0)
            k = (world.sum(float(np.sum(j[ok] * m[ok] / var_j[ok])))
                 / world.sum(float(np.sum(m[ok] ** 2 / var_j[ok]))))
            logger.info("Reference put on the data's scale with factor %.4g", k)
            ref_values = ref_values * k
        external = np.isfinite(ref_values)
        i_ref = np.where(external, ref_values,
                         references.merged(group, j, var_j, np.where(informative, obs_scale, 0.0)))

        # Term 2 statistics in the window drawn with the current widths
        j_model_now = obs_scale * i_ref
        expected_now = _expected(j_model_now, j, var_j)
        ma, mb, sa, sb = observed_moments(stats, bg, expected_now)
        strong_now = ((j / sigma_j > params.profile.min_i_over_sigma) & (expected_now > 0)
                      & has_bg)
        use2 = (strong_now & np.isfinite(sa) & np.isfinite(sb) & (sa > 0) & (sb > 0)
                & (priors.log_r1_sigma != FIXED_WIDTH_SIGMA))
        k2 = params.profile.window_sigma ** 2
        obs = Observations(
            j=j, sigma_j=sigma_j, i_ref=i_ref, attenuation=attenuation, inv_4d2=inv_4d2,
            k0=nodes.k0, k1=nodes.k1, w=nodes.w,
            use1=(informative & has_bg & np.isfinite(j) & np.isfinite(sigma_j)
                  & np.isfinite(i_ref) & (sigma_j > 0)),
            group=group, bootstrapped=~external,
            stills=stills, eps=eps, rbw_sq=rbw_sq, deps_x=deps[0], deps_y=deps[1], deps_s=deps[2],
            use2=use2, m_a=ma, m_b=mb, sigma_a=sa, sigma_b=sb, area=area,
            window_a=k2 * widths.ra ** 2, window_b=k2 * widths.rb ** 2,
            b0=grid.b0, b1=grid.b1, u=grid.u,
            node_pairs=nodes.neighbours(),
            width_pairs=(np.arange(grid.n_bins - 1), np.arange(1, grid.n_bins)),
        )
        if not stills:
            mz, smz = observed_frame_moment(stats, bg, expected_now)
            obs.use_z = use2 & np.isfinite(smz) & (smz > 0)
            obs.m_z, obs.sigma_mz, obs.rate, obs.zeta_unit, obs.osc = mz, smz, *rotation[1:]
            obs.z_centre = zc
            obs.z_first, obs.z_last = stats["z_first"], stats["z_last"]
        target = FactoredTarget(obs, layout, priors)
        x_old = x.copy()
        x, objective, n_iter, cov, start = minimise(target, x, params.refinement.max_iterations)
        obs_scale = (_scale(x, layout, nodes, inv_4d2, excitation(x), rbw_sq, stills)
                     * attenuation)
        if cycle == 0 and params.anomalous == "auto" and not anomalous:
            anomalous, group = _anomalous_from_data(table, symmetry, group, j, var_j,
                                                    np.where(informative, obs_scale, 0.0))
        i_ref = np.where(external, ref_values, references.merged(
            group, j, var_j, np.where(informative, obs_scale, 0.0)))
        # stills: the Wilson prior where no other observation informs I_ref; rotation keeps
        # scale·I_ref (under MPI a sweep's rows are shared between ranks, so a count of
        # "other observations" would depend on the ranks: test_mpi)
        measured = informative & (obs_scale > 0) & np.isfinite(j) & np.isfinite(var_j)
        j_expected = _expected(_model_or_prior(obs_scale, i_ref, j, inv_4d2, group, measured)
                               if stills else obs_scale * i_ref, j, var_j)
        if stills and active is None:
            p_now = _partiality(x, layout, excitation(x), inv_4d2, rbw_sq)
            active = p_now ** (1 / PRUNE_WIDEN ** 2) >= params.prediction.partiality_floor
            logger.info("%d of %d predicted reflections can hold signal (p ≥ %g with R0_eff "
                        "× %g); only these are integrated from now on",
                        int(world.sum(int(active.sum()))), int(world.sum(len(active))),
                        params.prediction.partiality_floor, PRUNE_WIDEN)
        if stills and params.profile.fit_width == "auto" and fallback is None:
            fallback = _width_fallback(x, layout, priors, r1_init, cycle)
        step = {
            "cycle": cycle + 1,
            "objective": objective,
            "objective_start": start,
            "iterations": n_iter,
            "n_term1": int(world.sum(int(obs.use1.sum()))),
            "n_term2": int(world.sum(int(use2.sum()))),
            "outlier_pixels": n_new,
            "max_shift_log_g": float(np.max(np.abs(x[layout.log_g] - x_old[layout.log_g]))),
            "max_shift_b": float(np.max(np.abs(x[layout.b] - x_old[layout.b]))),
            "r0": float(np.exp(x[layout.log_r0])),
            "r1": np.exp(x[layout.log_r1a]).tolist(),
            "seconds": time.time() - t_cycle,
        }
        if not stills:  # rotation: "r0" is the radial width, with σ_m beside it
            step["sigma_m_deg"] = float(np.degrees(np.exp(x[layout.log_eta])))
        history.append(step)
        logger.info(
            "Cycle %d: objective %.5g (%d LM iterations), Term-1 %d, Term-2 %d reflections, "
            "%d new outlier pixels, max |Δlog G| %.4f, max |ΔB| %.3f Å², %s %.5g%s, %.1f s",
            step["cycle"], objective, n_iter, step["n_term1"], step["n_term2"], n_new,
            step["max_shift_log_g"], step["max_shift_b"],
            "R0" if stills else "radial R0 (Å⁻¹)", step["r0"],
            "" if stills else f", σ_m {step['sigma_m_deg']:.4f}°", step["seconds"])
        short = _short_fraction(store.boxes, _widths(x, layout, grid, area, params, rotation),
                                params, active, world, r1_init, (r0, eta0), rotation)
        step["short_boxes"] = short
        if short > RECUT_FRACTION:
            if allow_recut:
                return Recut.from_fit(x, layout, grid, short, cycle + 1, r1_init)
            logger.warning("Warning: after cycle %d the fitted widths outgrow %.0f %% of the "
                           "boxes (no re-cut left)", cycle + 1, 100 * short)
        tolerance = params.refinement.shift_tolerance
        # a cycle whose LM took no step (its first, damped step was too short) says
        # nothing about convergence: the next cycle's weights may move the optimum
        if (cycle >= 1 and n_iter > 0 and step["max_shift_log_g"] < tolerance
                and step["max_shift_b"] < 25 * tolerance):
            logger.info("Converged: shifts below refinement.shift_tolerance = %g", tolerance)
            break

    coupling = None
    if params.refinement.measure_g_r1_coupling:
        t = time.time()
        coupling = g_r1_coupling(
            x, obs, layout, priors, params.refinement.max_iterations,
            lambda xs: cycle_pass(store, _widths(xs, layout, grid, area, params, rotation),
                                  j_expected, np.inf, params.nproc, active, owned),
            lambda xs, jj, vv: np.where(external, ref_values, references.merged(
                group, jj, vv, np.where(informative, _scale(
                    xs, layout, nodes, inv_4d2, excitation(xs), rbw_sq, stills)
                    * attenuation, 0.0))))
        timings["g_r1_coupling"] = time.time() - t

    # Final statistics with the fitted model
    final_widths = _widths(x, layout, grid, area, params, rotation)
    final = final_pass(store, final_widths, j_expected, xyz,
                       ids if stills else None, params.nproc, active, owned)
    j, var_j, bg = final["j"], final["var_j"], final["bg"]
    no_bg = final["n_bg"] < MIN_BACKGROUND_PIXELS
    if active is not None:
        no_bg &= active
    n_no_bg = int(world.sum(int(no_bg.sum())))
    if n_no_bg:
        logger.warning("Warning: %d reflections have fewer than %d background pixels "
                       "(neighbours or the box edge claim the rest): flagged "
                       "failed_during_background_modelling, not integrated", n_no_bg,
                       MIN_BACKGROUND_PIXELS)
    recorded = np.ones(len(d)) if stills else _recorded(experiments, ids, store.boxes,
                                                         final_widths)
    # the error model from the final fit, applied to the model-expected amplitude
    # (never the observed J)
    eps_final = excitation(x)
    final_scale = _scale(x, layout, nodes, inv_4d2, eps_final, rbw_sq, stills) * attenuation
    template_coverage = final["coverage"]
    b_rel = _relative_error(group, j, var_j, final_scale,
                            informative & (template_coverage >= params.output.min_profile_coverage))
    logger.info("Error model: relative error b = %.4f (σ² = σ_counting² + (b·J_model)²)", b_rel)
    var_j = var_j + (b_rel * j_expected) ** 2
    j_sum, var_sum, n_fg = final["j_sum"], final["var_sum"], final["n_fg"]
    gb = _scale(x, layout, nodes, inv_4d2, np.zeros_like(eps), rbw_sq, stills)
    p = _partiality(x, layout, eps_final, inv_4d2, rbw_sq) if stills else recorded
    var_isf = _isf_variance(cov, layout, nodes, inv_4d2, gb)

    over, centroid = final["overloaded"], final["centroid"]
    out = _output_table(table, j, var_j, j_sum, var_sum, bg, n_fg, gb, var_isf, p, lp, qe,
                        (centroid, final.get("centroid_variance")), over, template_coverage,
                        params, store.boxes, stills, (final["n_bg"], no_bg))
    timings["total"] = time.time() - t_start
    parameters = _parameter_summary(x, layout, nodes, grid, stills, cov, experiments)
    parameters["outlier_pixels"] = n_outliers
    parameters["anomalous"] = anomalous
    parameters["no_background"] = n_no_bg
    if coupling is not None:
        parameters["g_r1_coupling"] = coupling
    parameters["error_model_b"] = b_rel
    j_model = final_scale * i_ref
    diagnostics = {
        "z_term1": ((j - j_model) / np.sqrt(var_j))[np.isfinite(var_j)],
        "outliers_per_image": final["outliers_per_image"],
    }
    diagnostics["per_still"] = (_per_still(parameters, experiments, ids, informative, j, n_fg,
                                           final["outliers_per_image"]) if stills else None)
    parameters["warnings"] = ([fallback] if fallback else []) + fit_warnings(
        history, params.refinement.max_iterations, _prior_checks(x, layout, priors, stills),
        np.exp(x[layout.log_r1a]), r1_init, priors.log_r1_sigma != FIXED_WIDTH_SIGMA,
        diagnostics["per_still"], n_outliers, int(world.sum(float(n_fg.sum()))))
    return Result(out, parameters, history, timings, diagnostics)


def g_r1_coupling(x, obs, layout, priors, max_iterations, recompute, reference,
                  factors=(0.8, 1.2)) -> dict:
    """Measured coupling of the scales to the profile width, d log G / d log R1.

    Inside one LM the amplitudes J are fixed numbers, so the normal matrix has no
    G–R1 block (their correlation is 0 by construction).  The real coupling goes
    through the pixels: a wider template gives other J.  For each factor f every
    R1 node is scaled by f, J and σ_J are recomputed from the pixels
    (``recompute(x) -> cycle_pass statistics``, no new outliers), I_ref from them
    (``reference(x, j, var_j)``) and G, B, R0, η (and the still orientations) are
    refitted by one LM with Term 2 off (the widths held; Term 1 has no R1).  The
    central difference over log f of log G (dimensionless) and B (Å²) per node is
    returned as median and max |·|, with the per-node values.
    """
    fitted = []
    for f in factors:
        xs = x.copy()
        for block in (layout.log_r1a, layout.log_r1b):
            xs[block] += np.log(f)
        stats = recompute(xs)
        j, var_j = stats["j"], stats["var_j"]
        sigma_j = np.sqrt(var_j)
        i_ref = reference(xs, j, var_j)
        o = replace(obs, j=j, sigma_j=sigma_j, i_ref=i_ref,
                    use1=obs.use1 & np.isfinite(j) & np.isfinite(sigma_j) & (sigma_j > 0)
                    & np.isfinite(i_ref), use2=np.zeros_like(obs.use2),
                    use_z=np.zeros_like(obs.use_z))
        fitted.append(minimise(FactoredTarget(o, layout, priors), xs, max_iterations)[0])
    step = np.log(factors[1] / factors[0])
    dlogg = (fitted[1][layout.log_g] - fitted[0][layout.log_g]) / step
    db = (fitted[1][layout.b] - fitted[0][layout.b]) / step
    return {
        "factors": list(factors),
        "n_nodes": len(dlogg),
        "dlogg_dlogr1_median": float(np.median(dlogg)),
        "dlogg_dlogr1_max_abs": float(np.max(np.abs(dlogg))),
        "db_dlogr1_median": float(np.median(db)),
        "db_dlogr1_max_abs": float(np.max(np.abs(db))),
        "dlogg_dlogr1": dlogg.tolist(),
    }


def _per_still(parameters, experiments, ids, informative, j, n_fg, outliers_per_image) -> dict:
    """The per-still diagnostics table, summed over MPI ranks."""
    world = collective.world()
    n_still = len(experiments)
    return per_still_table(
        parameters["nodes"],
        world.sum(np.bincount(ids[informative & np.isfinite(j)], minlength=n_still)),
        world.sum(np.pad(outliers_per_image, (0, n_still))[:n_still]),
        world.sum(np.bincount(ids, weights=n_fg, minlength=n_still)))


def _width_fallback(x, layout, priors, r1_init: float, cycle: int) -> str | None:
    """Fix R1 at the strong spots' width (in ``x`` and ``priors``) if the fit ran away from it.

    Returns the warning, or None when the widths are plausible.
    """
    r1 = np.exp(x[layout.log_r1a])
    if not implausible_widths(r1, r1_init):
        return None
    warning = (f"fitted R1(d) ({' '.join(f'{r:.5f}' for r in r1)} Å⁻¹) ran more than "
               f"{WIDTH_FACTOR:g}× from the strong spots' width {r1_init:.5f} Å⁻¹ in cycle "
               f"{cycle + 1}: R1 fixed at that width from then on (profile.fit_width=auto)")
    logger.warning("Warning: %s", warning)
    x[layout.log_r1a] = x[layout.log_r1b] = np.log(r1_init)
    priors.log_r1_sigma = FIXED_WIDTH_SIGMA
    return warning


def _prior_checks(x, layout, priors, stills) -> list[PriorCheck]:
    """The global widths against their log-normal priors."""
    if not stills:
        return []
    return [PriorCheck("R0 (Å⁻¹)", float(np.exp(x[layout.log_r0])), priors.log_r0_mean,
                       priors.log_r0_sigma),
            PriorCheck("mosaic spread η (rad)", float(np.exp(x[layout.log_eta])),
                       priors.log_eta_mean, priors.log_eta_sigma)]


def _widths(x, layout, grid, area, params, rotation) -> Widths:
    """The per-reflection widths of a pass for the parameters ``x``.

    ``rotation`` is (z_c, ζ, Δφ) per reflection for rotation data, None for stills.
    """
    ra, rb = target_widths(x, layout, grid)
    ra_eff, rb_eff = profile.effective_widths(ra, rb, area)
    if rotation is None:
        return Widths(ra_eff, rb_eff, area, params.profile.window_sigma)
    zc, rate, zeta_unit, osc = rotation
    sz = rotation_sigma_z(float(np.exp(x[layout.log_r0])), float(np.exp(x[layout.log_eta])),
                          rate, zeta_unit, osc)[0]
    return Widths(ra_eff, rb_eff, area, params.profile.window_sigma, zc, sz)


def _short_fraction(boxes, widths: Widths, params, active, world, r1_init, r0,
                    rotation) -> float:
    """The fraction of the (active) reflections of all ranks whose boxes the widths
    outgrow (``recut.short_boxes``) and that a re-cut could widen (not yet
    ``RECUT_MAX_GROWTH`` times their boxes from the initial ``r1_init``, ``r0``)."""
    box_sigma = params.profile.box_sigma
    half0 = half_widths(r1_init, np.sqrt(widths.area), box_sigma,
                        params.profile.min_box_half_width)
    room = np.minimum(boxes.x1 - boxes.x0, boxes.y1 - boxes.y0) < 2 * RECUT_MAX_GROWTH * half0
    if rotation is not None:
        _, rate, zeta_unit, osc = rotation
        zhalf0 = frame_half_widths(rotation_sigma_z(*r0, rate, zeta_unit, osc)[0], box_sigma)
        room |= boxes.z1 - boxes.z0 < 2 * RECUT_MAX_GROWTH * zhalf0
    short = short_boxes(boxes, widths, params.profile.window_sigma) & room
    if active is not None:
        short = short[active]
    return world.sum(int(short.sum())) / max(world.sum(len(short)), 1)


def _recorded(experiments, ids, boxes, widths: Widths) -> np.ndarray:
    """Rotation: the fraction of each φ profile on the frames of its box inside the scan."""
    scan_range = np.array([e.scan.get_array_range() for e in experiments])[ids]
    lo = np.maximum(boxes.z0, scan_range[:, 0])
    hi = np.minimum(boxes.z1, scan_range[:, 1])
    return profile.recorded_fraction(widths.zc, widths.sz, lo, hi)


def _relative_error(group, j, var_j, obs_scale, informative) -> float:
    """The error model's b from the deviations of J/scale from their symmetry mates."""
    scale = np.where(informative, obs_scale, 0.0)
    ref, var_ref, n_others = references.bootstrap(group, j, var_j, scale)
    ok = scale > 0
    safe = np.where(ok, scale, 1.0)
    columns = (np.where(ok, j / safe, np.nan), var_j / safe ** 2, np.where(ok, ref, np.nan),
               var_ref, n_others)
    if collective.world().size > 1:  # the robust fit needs every rank's observations
        use = ok & np.isfinite(ref)
        columns = [np.concatenate(c) for c in zip(*collective.world().allgather(
            [c[use] for c in columns]))]
    return fit_relative_error(*columns)


def _model_or_prior(obs_scale, i_ref, j, inv_4d2, group, informative):
    """J_model = scale·I_ref where other informative observations of the reflection
    exist; else (no I_ref, or an I_ref that is the observation's own J/scale) the
    posterior mean of the amplitude under the Wilson prior of its resolution
    (``reference.posterior_amplitude``): a reference made of the observation alone
    carries no information about it, and the variance at its own J is too small when
    the J came out low."""
    n = int(collective.world().max(int(group.max()) + 1 if len(group) else 0))
    others = collective.group_sum(group, informative.astype(float), n)[group] - informative
    alone = np.isfinite(i_ref) & (others < 0.5)
    shared = np.where(alone, np.nan, i_ref)
    prior = obs_scale * references.with_shell_means(shared, 4 * inv_4d2)
    return np.where(np.isfinite(shared), obs_scale * shared,
                    references.posterior_amplitude(j, prior))


def _expected(j_model: np.ndarray, j: np.ndarray, var_j: np.ndarray) -> np.ndarray:
    """The amplitude behind the model-expected variance v = Bg + Ĵ·P.

    Ĵ = J_model, except where the data exceed the model grossly (J more than
    ``GROSS_EXCESS`` σ above it): there Ĵ = J − GROSS_EXCESS·σ, so that a model that is
    badly wrong for a reflection (early cycles, a wrong scale) cannot give it a tiny
    variance and an enormous weight.  Data *below* the model keep the model's
    variance (a strong expected reflection observed absent is penalised, seed §3).
    Where there is no model (no I_ref), J itself.  Negative values count as zero.
    """
    observed_floor = j - GROSS_EXCESS * np.sqrt(np.maximum(var_j, 0.0) + np.maximum(j, 0.0))
    amplitude = np.where(np.isfinite(j_model), np.maximum(j_model, observed_floor), j)
    return np.maximum(amplitude, 0.0)


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
    la = x[layout.log_r1a]
    lb = x[layout.log_r1b]
    return np.exp(grid.interpolate(la)), np.exp(grid.interpolate(lb))


def _scale(x, layout, nodes, inv_4d2, eps, rbw_sq, stills):
    """G·exp(B/4d²)·p per observation (counts per unit intensity before lp, qe)."""
    lg = nodes.interpolate(x[layout.log_g])
    b = nodes.interpolate(x[layout.b])
    s = np.exp(lg + b * inv_4d2)
    if stills:
        s = s * _partiality(x, layout, eps, inv_4d2, rbw_sq)
    return s


def _excitation_gradients(experiments, ids, table):
    """∂ε/∂θx, ∂ε/∂θy (Å⁻¹/rad) and ∂ε/∂δs (Å⁻¹) of each still's reflections.

    A rotation ω of the crystal moves q = A·h by ω×q, and ε = |q + s0| − |s0| changes
    by ŝ1·(ω×q).  Rotations about the beam (z) leave ε unchanged to first order and are
    fixed by the spot positions, so only x and y are refined.  A relative scale δs of
    the reciprocal cell (A → (1 + δs)·A) moves q by δs·q and ε by δs·ŝ1·q
    = δs·λ/(2d²) on the sphere: the excitation error of a cell (or wavelength) that is
    off by a fraction, which grows as 1/d² and which a mosaic spread cannot mimic
    without widening every partiality.  On the real thaumatin grid stills of
    ../shared/data the indexing left one of about 1 % (measured from the strong spots'
    ε; a distance or wavelength error gives it once the cell is refined to the spots).
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
    return rotations + (np.einsum("ij,ij->i", u1, q),)


def _partiality(x, layout, eps, inv_4d2, rbw_sq):
    """Stills partiality p of every reflection with the current R0 and η."""
    return stills_partiality(eps, float(np.exp(x[layout.log_r0])),
                             float(np.exp(x[layout.log_eta])), 4.0 * inv_4d2, rbw_sq)[0]


def _isf_variance(cov, layout, nodes, inv_4d2, isf):
    if cov is None:
        return np.zeros_like(isf)
    lg = np.arange(layout.log_g.start, layout.log_g.stop)
    bb = np.arange(layout.b.start, layout.b.stop)
    var = np.zeros_like(isf)
    for wk, k in ((1 - nodes.w, nodes.k0), (nodes.w, nodes.k1)):
        var += wk ** 2 * (cov[lg[k], lg[k]] + inv_4d2 ** 2 * cov[bb[k], bb[k]]
                          + 2 * inv_4d2 * cov[lg[k], bb[k]])
    return isf ** 2 * np.maximum(var, 0.0)


def _output_table(table, j, var_j, j_sum, var_sum, bg, n_fg, isf, var_isf, p, lp, qe,
                  centroid, overloaded, coverage, params, boxes, stills=False, background=None):
    """DIALS columns and flags, each in the meaning DIALS gives it (README, "Conventions").

    ``j``, ``var_j``: the profile-fit amplitude (counts) and its variance; for stills it
    holds the partiality p, for rotation data it is the whole reflection.  ``isf`` is
    G·exp(B/4d²) without p.  As DIALS writes them (dials/util/filter_reflections.py,
    dials/algorithms/scaling/scaling_library.py):

    * ``intensity.prf``: the full-reflection estimate J/p (σ²/p²) for stills, J for
      rotation data; before lp/qe (DIALS applies lp/qe, never p, to prf);
    * ``intensity.sum``: the foreground sum as recorded (partial), and ``partiality`` p,
      by which DIALS divides only the sum;
    * ``intensity.scale`` = prf·lp/qe, the corrected full intensity, and
      ``inverse_scale_factor`` = G·exp(B/4d²) (no p): I_merged = scale/isf, the same
      ratio as before, so dials.merge is unchanged;
    * ``xyzobs.px``: background-subtracted centroid and DIALS's centroid variance
      (``centroid`` is (values, variances)).

    A stills reflection whose fitted p is 0 holds no full-intensity information and is
    left out.  ``background`` = (pixels behind each background, too few of them): the
    first is written as ``num_pixels.background``, those with too few are flagged
    ``failed_during_background_modelling`` and not integrated.
    """
    t = table
    centroid, centroid_var = centroid
    full = p if stills else np.ones_like(j)
    with np.errstate(divide="ignore", invalid="ignore"):
        j_full = np.where(full > 0, j / full, np.nan)
        var_full = np.where(full > 0, var_j / full ** 2, np.nan)
    t["intensity.prf.value"] = flex.double(j_full)
    t["intensity.prf.variance"] = flex.double(var_full)
    t["intensity.sum.value"] = flex.double(j_sum)
    t["intensity.sum.variance"] = flex.double(var_sum)
    corr = lp / qe
    t["intensity.scale.value"] = flex.double(j_full * corr)
    t["intensity.scale.variance"] = flex.double(var_full * corr ** 2)
    t["inverse_scale_factor"] = flex.double(isf)
    t["inverse_scale_factor_variance"] = flex.double(var_isf)
    t["partiality"] = flex.double(p)
    t["background.mean"] = flex.double(bg)
    t["num_pixels.foreground"] = flex.int(n_fg.astype(int))
    t["profile.coverage"] = flex.double(coverage)
    t["xyzobs.px.value"] = flex.vec3_double(centroid)
    if centroid_var is None:  # no pixel statistics: DIALS's pixel quantisation term
        centroid_var = np.full((len(t), 3), 1.0 / 12.0)
    t["xyzobs.px.variance"] = flex.vec3_double(centroid_var)
    t["bbox"] = boxes.as_bbox()
    n_bg, no_bg = background or (np.zeros(len(j)), np.zeros(len(j), bool))
    t["num_pixels.background"] = flex.int(np.asarray(n_bg).astype(int))
    good = (np.isfinite(j_full) & np.isfinite(var_full) & (var_full > 0) & (isf > 0)
            & (coverage >= params.output.min_profile_coverage) & ~no_bg)
    t.set_flags(flex.bool(no_bg.tolist()), t.flags.failed_during_background_modelling)
    scaling_ok = good & (~overloaded) & (p >= params.output.min_partiality)
    t.set_flags(flex.bool(good.tolist()), t.flags.integrated_prf)
    t.set_flags(flex.bool((good & (var_sum > 0)).tolist()), t.flags.integrated_sum)
    t.set_flags(flex.bool(scaling_ok.tolist()), t.flags.scaled)
    t.set_flags(flex.bool((~scaling_ok).tolist()), t.flags.bad_for_scaling)
    t.set_flags(flex.bool(overloaded.tolist()), t.flags.overloaded)
    keep = np.isfinite(j_full) & np.isfinite(var_full) & (var_full > 0)
    # variances must be positive for dials.export; drop what cannot be measured at all
    out = t.select(flex.bool(keep.tolist()))
    bad = out["intensity.sum.variance"] <= 0
    out["intensity.sum.variance"].set_selected(bad, 1.0)
    return out


def _select(mask, *arrays):
    out = []
    for arr in arrays:
        if isinstance(arr, np.ndarray):
            out.append(arr[mask])
        else:
            out.append(arr.select(flex.bool(mask.tolist())))
    return out


def _parameter_summary(x, layout, nodes, grid, stills, cov, experiments):
    """Fitted parameters for the log and the JSON."""
    b = x[layout.b]
    g = np.exp(x[layout.log_g])
    summary = {
        "kind": "stills" if stills else "rotation",
        "nodes": [
            {"experiment": int(e), "identifier": experiments[int(e)].identifier,
             "phi": float(ph), "G": float(gi), "B": float(bi)}
            for e, ph, gi, bi in zip(nodes.node_experiment, nodes.node_phi, g, b)
        ],
        "r1_nodes_inv_d2": grid.s2_nodes.tolist(),
        "r1_a": np.exp(x[layout.log_r1a]).tolist(),
        "r1_b": np.exp(x[layout.log_r1b]).tolist(),
    }
    if layout.n_orient:
        for node, tx, ty, ds in zip(summary["nodes"], x[layout.orient_x], x[layout.orient_y],
                                    x[layout.cell_scale]):
            node["rotation_x_deg"] = float(np.degrees(tx))
            node["rotation_y_deg"] = float(np.degrees(ty))
            node["cell_scale"] = float(ds)
    if stills:
        summary["r0"] = float(np.exp(x[layout.log_r0]))
        summary["mosaic_deg"] = float(np.degrees(np.exp(x[layout.log_eta])))
    else:
        # σ_m as DIALS's sigma_m (degrees, e3 frame); the radial R0 in Å⁻¹
        summary["sigma_m_deg"] = float(np.degrees(np.exp(x[layout.log_eta])))
        summary["mosaicity_deg"] = summary["sigma_m_deg"]
        summary["radial_r0"] = float(np.exp(x[layout.log_r0]))
    if cov is not None:
        # log R1 is left out: no residual holds both R1 and G, B, R0 or η (Term 1 has
        # no R1, Term 2 none of them), so its correlations are 0 by construction; the
        # measured coupling is ``g_r1_coupling`` (refinement.measure_g_r1_coupling)
        idx = [layout.log_g.start, layout.b.start, layout.log_r0]
        idx += [] if stills else [layout.log_eta]
        sub = cov[np.ix_(idx, idx)]
        sd = np.sqrt(np.maximum(np.diag(sub), 1e-300))
        summary["correlation"] = {
            "parameters": ["log G (first node)", "B (first node)",
                           *(["log R0"] if stills else ["log R0 (radial)", "log σ_m"])],
            "matrix": (sub / np.outer(sd, sd)).tolist(),
        }
    return summary
