"""What one integration reads: the predicted reflections, their starting widths, boxes
and the blocks of the pixel store.

The starting widths come from the indexing: R1 from the spot finder's boxes, the φ
widths of rotation data from their z extents, the stills' R0 from the indexing's
domain sizes (DIALS's MosaicCrystalSauter2014).  Boxes are cut from them, or, for a
re-cut (:mod:`.recut`), from the widths a previous integration fitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from dials.array_family import flex

from dials_factored import collective, prediction
from dials_factored.arrays import to_numpy
from dials_factored.model.partiality import (
    bandwidth_sq,
    rotation_sigma_z,
    rotation_zeta,
    rotation_zeta_unit,
)
from dials_factored.pixel_geometry import pixel_areas
from dials_factored.pixel_store import BLOCK_PIXELS, BlockPlan, off_scan_pixels, plan_blocks
from dials_factored.recut import RECUT_MAX_GROWTH, Recut, frame_half_widths, half_widths
from dials_factored.shoeboxes import Boxes, plan_jobs

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
#: Stills are predicted out to excitation_cutoff × R0_eff with R0 this many times its
#: initial value (room for the fit to widen it).
R0_MARGIN = 1.5


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


def agree(world, error: str | None) -> None:
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


@dataclass
class Reflections:
    """The predicted reflections of one integration and their geometry.

    ``ids`` the experiment of each, ``d`` (Å), ``xyz`` the predicted centre (px, px,
    frame), ``panel``, ``s0_len`` = 1/λ (Å⁻¹), ``area`` the pixel area on the Ewald sphere
    (Å⁻²); rotation: ``zeta`` = m2·(ŝ1×ŝ0) and ``osc`` the oscillation width (deg);
    both 0 for stills.  ``zc`` is the frame coordinate of the centre.
    """

    table: object
    ids: np.ndarray
    d: np.ndarray
    xyz: np.ndarray
    panel: np.ndarray
    s0_len: np.ndarray
    area: np.ndarray
    zeta: np.ndarray
    osc: np.ndarray

    @property
    def zc(self) -> np.ndarray:
        return self.xyz[:, 2]

    def select(self, index) -> Reflections:
        """The reflections at ``index``: a boolean mask, an integer array or a slice."""
        if isinstance(index, slice):
            rows = flex.size_t(range(*index.indices(len(self.d))))
        elif index.dtype == bool:
            rows = flex.bool(index.tolist())
        else:
            rows = flex.size_t(index.tolist())
        return Reflections(self.table.select(rows), *(
            v[index] for v in (self.ids, self.d, self.xyz, self.panel, self.s0_len,
                               self.area, self.zeta, self.osc)))


def initial_r0(experiments, params) -> float:
    """The stills' initial R0 (Å⁻¹): the parameter, else 1/D of the indexing's median
    domain size D, else ``DEFAULT_R0``."""
    if params.partiality.r0 is not None:
        return params.partiality.r0
    sizes = [e.crystal.get_domain_size_ang() for e in experiments
             if hasattr(e.crystal, "get_domain_size_ang")]
    sizes = [s for s in sizes if s and s > 0]
    return 1.0 / float(np.median(sizes)) if sizes else DEFAULT_R0


def reach_r0(r0_init: float, start: Recut | None) -> float:
    """The R0 (Å⁻¹) whose ``R0_MARGIN`` multiple the stills prediction reaches: the
    initial R0, or a larger one fitted before a re-cut (``start``)."""
    return max(r0_init, float(np.exp(start.log_r0))) if start is not None else r0_init


def predict(experiments, params, stills: bool, world, start: Recut | None = None):
    """The reflections predicted on the detector, and the stills' initial R0 (else None).

    Stills are kept within ``prediction.excitation_cutoff`` × R0_eff, with R0 =
    ``R0_MARGIN`` × :func:`reach_r0` and the bandwidth's width of each reflection."""
    wavelength0 = np.array([e.beam.get_wavelength() for e in experiments])
    r0, max_eps = None, 0.0
    if stills:
        r0 = initial_r0(experiments, params)
        reach = reach_r0(r0, start)
        d_floor = params.d_min or min(prediction.detector_d_min(e) for e in experiments)
        max_rbw = bandwidth_sq(np.array([d_floor]), wavelength0.max(), params.beam.bandwidth)[0]
        max_eps = params.prediction.excitation_cutoff * np.sqrt(
            (R0_MARGIN * reach) ** 2 + max_rbw)
    share = _stills_share(experiments, world) if stills else None
    table = prediction.predict(experiments, params.d_min, max_eps, subset=share)
    if stills and len(table):
        # the bandwidth term grows as 1/d⁴: apply the cutoff per reflection
        d_all = to_numpy(table["d"])
        s0_all = 1.0 / wavelength0[to_numpy(table["id"]).astype(int)]
        within = params.prediction.excitation_cutoff * np.sqrt(
            (R0_MARGIN * reach) ** 2 + bandwidth_sq(d_all, 1.0 / s0_all, params.beam.bandwidth))
        table = table.select(flex.bool(
            (np.abs(to_numpy(table["excitation_error"])) < within).tolist()))
    agree(world, None if len(table) else
           "no reflections are predicted on the detector for these experiments"
           + (f" (MPI rank {world.rank})" if world.size > 1 else ""))
    return table, r0


def cut_boxes(experiments, strong, params, table, r0, start: Recut | None, world):
    """The reflections to integrate, their boxes, the initial R1 (Å⁻¹) and φ or
    partiality widths: (R0, η) for stills (``r0`` from :func:`_predict`), (radial R0,
    σ_m) for rotation.  Boxes come from the initial widths or, for a re-cut, from the
    fitted widths of ``start`` (at most ``RECUT_MAX_GROWTH`` × wider).  Rotation
    reflections too close to the axis (``prediction.min_zeta``) are left out."""
    ids = to_numpy(table["id"]).astype(int)
    d = to_numpy(table["d"])
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
    if start is not None:
        half = np.minimum(half_widths(start.r_eff(d, area), a, box_sigma, min_half),
                          RECUT_MAX_GROWTH * half)
    zc = xyz[:, 2]
    if r0 is not None:  # stills
        widths_init = (r0, np.radians(params.partiality.mosaic))
        z0, z1 = np.zeros(len(d), int), np.ones(len(d), int)
        refl = Reflections(table, ids, d, xyz, panel_ids, s0_len, area, np.zeros(len(d)),
                           np.zeros(len(d)))
    else:
        m2 = np.array([experiments[i].goniometer.get_rotation_axis() for i in
                       range(len(experiments))])[ids]
        s1 = to_numpy(table["s1"])
        zeta = rotation_zeta(m2, s1, s0)
        zeta_u = rotation_zeta_unit(m2, s1, s0)
        osc = np.array([e.scan.get_oscillation()[1] for e in experiments])[ids]
        rate = s0_len * np.abs(zeta)
        widths_init = _initial_phi_widths(strong, rate, zeta_u, float(np.median(osc)),
                                          params.profile.mosaicity)  # (R0, σ_m)
        zhalf = frame_half_widths(rotation_sigma_z(*widths_init, rate, zeta_u, osc)[0],
                                  box_sigma)
        if start is not None:
            sz = rotation_sigma_z(np.exp(start.log_r0), np.exp(start.log_eta), rate, zeta_u,
                                  osc)[0]
            zhalf = np.minimum(frame_half_widths(sz, box_sigma), RECUT_MAX_GROWTH * zhalf)
        z0 = np.floor(zc).astype(int) - zhalf
        z1 = np.floor(zc).astype(int) + zhalf + 1
        # keep reflections whose centre lies in the scan and that are not too close to the axis
        ok = np.abs(zeta_u) > params.prediction.min_zeta  # DIALS's ζ, see its help
        refl = Reflections(table, ids, d, xyz, panel_ids, s0_len, area, zeta, osc).select(ok)
        half, z0, z1 = half[ok], z0[ok], z1[ok]
    x0 = np.floor(refl.xyz[:, 0]).astype(int) - half
    y0 = np.floor(refl.xyz[:, 1]).astype(int) - half
    boxes = Boxes(refl.panel, x0, x0 + 2 * half + 1, y0, y0 + 2 * half + 1, z0, z1)
    logger.info("%s; boxes of %d–%d px", f"Initial profile width R1 = {r1_init:.5f} Å⁻¹"
                if start is None else "Boxes re-cut from the fitted widths",
                int(2 * half.min() + 1), int(2 * half.max() + 1))
    return refl, boxes, r1_init, widths_init


def plan_store(experiments, refl: Reflections, boxes, stills: bool, world):
    """The images to read, the blocks of the pixel store and this process's share.

    The store keeps reflections in the order their last image is read; under MPI a
    rotation sweep's blocks are shared between ranks, each with every box that can share
    a pixel with them.  Returns (jobs, the first job of each reflection, the
    reflections and boxes in store order, the BlockPlan, the blocks this rank owns).
    """
    jobs, first_job, last_job, origin = plan_jobs(experiments, refl.ids, boxes)
    order = np.argsort(last_job, kind="stable")
    refl, boxes = refl.select(order), boxes.select(order)
    n_pixels = boxes.n_pixels.astype(np.int64)
    budget = (BLOCK_PIXELS if stills
              else min(BLOCK_PIXELS, int(n_pixels.sum()) // (2 * world.size)))
    plan = BlockPlan(first_job[order], last_job[order],
                     plan_blocks(last_job[order], n_pixels, max(budget, 1)), origin[order])
    owned = range(plan.n_blocks)
    if not stills and world.size > 1:
        agree(world, None if plan.n_blocks >= world.size else
               f"{world.size} MPI ranks for {plan.n_blocks} blocks of images: use fewer ranks")
        owned_global = range(*collective.split(plan.n_blocks, world.rank, world.size))
        u0, u1, plan, owned = plan.share(owned_global)
        refl, boxes = refl.select(slice(u0, u1)), boxes.select(slice(u0, u1))
    return jobs, first_job[order], refl, boxes, plan, owned


def unwritten_pixels(experiments, ids: np.ndarray, boxes, start: np.ndarray) -> np.ndarray:
    """The store indices of the pixels no image writes: box layers on frames outside
    their sweep's scan (``shoeboxes.plan_jobs`` reads every frame of the scan that a
    box touches, and each image writes every pixel of its layers); none for stills."""
    ranges = np.array([e.scan.get_array_range()
                       if e.scan is not None and e.scan.get_oscillation()[1] != 0
                       else (0, 1) for e in experiments], dtype=np.int64)[ids]
    return off_scan_pixels(start, boxes, ranges[:, 0], ranges[:, 1])
