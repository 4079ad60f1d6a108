"""The passes over the pixel store: every per-reflection statistic, one block at a time.

A pass reads one block of reflections (with the boxes that share pixels with it),
draws the template, foreground and background with the current widths, and
reduces the pixels to per-reflection numbers: J and σ_J (Term 1), the sums
behind the second moments (Term 2), the summation integral and centroids.
Outlier pixels found in a cycle are written back to the store's flags.  Blocks
are independent, so they run in ``nproc`` forked processes; the results do not
depend on nproc or on how the reflections are blocked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from dials_factored import profile
from dials_factored.parallel import ordered_map
from dials_factored.pixel_store import OUTLIER, OVERLOADED, USABLE, BlockPlan, PixelStore
from dials_factored.residuals.intensity import outlier_pixels, profile_fit, summation
from dials_factored.residuals.shape import moment_sums, window_frames
from dials_factored.shoeboxes import (
    Boxes,
    Pixels,
    background,
    claimed_by_neighbours,
    read_block,
)

logger = logging.getLogger(f"dials.{__name__}")


@dataclass
class Store:
    """The pixels and what is needed to read them: the store, its blocks and boxes, and
    the detector's read-noise variance σ_read² (photons², 0 for photon counting)."""

    pixels: PixelStore
    plan: BlockPlan
    boxes: Boxes
    read_variance: float = 0.0


@dataclass
class Widths:
    """Per-reflection widths of one pass: R_eff along e1 and e2 (Å⁻¹) and, for rotation
    data, the φ centre z_c and width σ_z (frames) and the spot's drift (d1, d2) along
    e1 and e2 (Å⁻¹ per frame, ``profile.follow_spot``)."""

    ra: np.ndarray
    rb: np.ndarray
    area: np.ndarray
    window_sigma: float
    zc: np.ndarray | None = None
    sz: np.ndarray | None = None
    drift: tuple | None = None

    def select(self, index) -> Widths:
        if self.zc is None:
            return Widths(self.ra[index], self.rb[index], self.area[index], self.window_sigma)
        drift = None if self.drift is None else tuple(d[index] for d in self.drift)
        return Widths(self.ra[index], self.rb[index], self.area[index], self.window_sigma,
                      self.zc[index], self.sz[index], drift)


@dataclass
class Template:
    """Everything drawn from the current widths for one block."""

    P: np.ndarray  # template per pixel
    fg: np.ndarray  # foreground window (3D for rotation)
    usable: np.ndarray  # usable and not in a neighbour's foreground outside our own
    bg: np.ndarray  # background per reflection (counts/pixel)
    n_bg: np.ndarray  # pixels behind it
    frame_fraction: np.ndarray | None  # rotation: F_f per pixel
    read_variance: float = 0.0  # σ_read² (photons²)


def template(pix, w: Widths, read_variance: float = 0.0) -> Template:
    """P_p, the foreground and the background for the widths ``w``.

    The foreground of a rotation reflection is limited to the frames within
    ``window_sigma`` σ_z (+½ frame) of its centre, so that neighbours on other
    frames are not counted in its moments; pixels in a neighbour's foreground
    are dropped from ours unless they are in our own foreground too.
    """
    P, fg = profile.tangential_window(pix, w.ra, w.rb, w.area, w.window_sigma)
    frac = None
    if w.zc is not None:
        frac = profile.frame_fraction(pix, w.zc, w.sz)
        P = P * frac
        fg &= profile.frame_window(pix, w.zc, w.sz, w.window_sigma)
    mine = pix.usable & ~(claimed_by_neighbours(pix, fg) & ~fg)
    bg, n_bg = background(pix, fg, mine, read_variance=read_variance)
    return Template(P, fg, mine, bg, n_bg, frac, read_variance)


def _first_amplitudes(pix, tpl: Template) -> np.ndarray:
    """A first J without any model: the summation integral refined by two profile fits."""
    j_sum, _, _, _ = summation(pix, tpl.fg, tpl.usable, tpl.bg, tpl.n_bg, tpl.read_variance)
    j_expected = np.maximum(j_sum, 0.0)
    for _ in range(2):
        j, _ = profile_fit(pix, tpl.P, tpl.usable, tpl.bg, tpl.n_bg, j_expected,
                           tpl.read_variance)
        j_expected = np.maximum(j, 0.0)
    return j_expected


@dataclass
class _Block:
    """One block as a pass sees it: its active reflections and the boxes around them."""

    pix: Pixels  # pixels of the active reflections
    whole: Pixels  # pixels of all reflections read, as stored
    index: np.ndarray  # run index of each reflection of ``pix``
    whole_index: np.ndarray  # run index of each reflection of ``whole``
    own: np.ndarray  # mask over ``pix``'s reflections: the block's own
    kept: np.ndarray | None  # mask over ``whole``'s pixels: those of active reflections
    active_own: np.ndarray  # mask over the block's own reflections: the active ones
    pixels: slice  # the block's own pixels among ``whole``'s
    first_pixel: int  # store index of the block's first pixel

    def per_pixel(self, values: np.ndarray, fill) -> np.ndarray:
        """A per-pixel array of the active reflections over all pixels read."""
        if self.kept is None:
            return values
        out = np.full(len(self.whole.counts), fill, dtype=values.dtype)
        out[self.kept] = values
        return out

    def own_results(self, values: dict, defaults: dict, first: int) -> dict:
        """Per-reflection results for the block's own reflections (defaults where inactive);
        ``first`` is the run index of the block's first reflection."""
        n = len(self.active_own)
        out = {}
        for key, v in values.items():
            v = v[self.own]
            default = defaults[key]
            full = np.empty((n,) + v.shape[1:], dtype=v.dtype)
            full[...] = default[first:first + n] if isinstance(default, np.ndarray) else default
            full[self.active_own] = v
            out[key] = full
        return out


#: ``active`` of a block another process integrates: nothing is read or computed.
_NONE = object()


def _empty_block(n_own: int) -> _Block:
    none = np.zeros(0, bool)
    pix = Pixels(np.zeros(0, np.float32), none, none, np.zeros(0, np.float32),
                 np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64),
                 np.zeros(0, np.int32), none)
    index = np.zeros(0, np.int64)
    return _Block(pix, pix, index, index, none, None, np.zeros(n_own, bool), slice(0, 0), 0)


def _read(store: Store, active, b: int) -> _Block:
    if active is _NONE:
        r0, r1 = store.plan.core(b)
        return _empty_block(r1 - r0)
    whole, index, own = read_block(store.pixels, store.plan, store.boxes, b)
    act = np.ones(len(index), bool) if active is None else active[index]
    pix, kept = (whole, None) if act.all() else whole.subset(act)
    first = int(np.argmax(own))
    last = first + int(own.sum())
    pixels = slice(int(whole.start[first]), int(whole.start[last]))
    return _Block(pix, whole, index[act], index, own[act], kept, act[own], pixels,
                  int(store.pixels.start[index[first]]))


def cycle_pass(store: Store, widths: Widths, j_expected: np.ndarray | None,
               threshold: float, nproc: int, active: np.ndarray | None = None,
               blocks: range | None = None) -> dict:
    """Term-1 and Term-2 statistics of every reflection for one cycle.

    ``j_expected`` (counts) is the amplitude behind the model-expected
    variances, None on the first cycle (then J itself).  New outlier pixels
    (``threshold`` σ, see ``outlier_pixels``) are flagged in the store and left
    out.  Reflections not ``active``, and the blocks not in ``blocks`` (default
    all), are skipped (J = 0 with infinite variance).  Returns per-reflection
    arrays: j, var_j, bg, the moment sums, first/last foreground frame (rotation)
    and the number of new outliers.
    """
    def task(b: int) -> dict:
        blk = _read(store, active if b in blocks else _NONE, b)
        w = widths.select(blk.index)
        pix = profile.follow_spot(blk.pix, w)
        tpl = template(pix, w, store.read_variance)
        j_exp = _first_amplitudes(pix, tpl) if j_expected is None else j_expected[blk.index]
        outliers = outlier_pixels(pix, tpl.P, tpl.usable, tpl.bg, j_exp, threshold,
                                  n_bg=tpl.n_bg, read_variance=tpl.read_variance)
        all_outliers = blk.per_pixel(outliers, False)
        whole = blk.whole
        if all_outliers[blk.pixels].any():  # else the stored flags stay as they are
            flags = ((whole.usable & ~all_outliers) * USABLE + whole.overloaded * OVERLOADED
                     + (whole.outlier | all_outliers) * OUTLIER)[blk.pixels]
            store.pixels.write("flags", blk.first_pixel, flags)
        mine = tpl.usable & ~outliers
        j, var_j = profile_fit(pix, tpl.P, mine, tpl.bg, tpl.n_bg, j_exp, tpl.read_variance)
        values = moment_sums(pix, tpl.fg & mine, tpl.bg, tpl.P, w.zc)
        values.update(j=j, var_j=var_j, bg=tpl.bg, n_bg=tpl.n_bg)
        if w.zc is not None:
            values["z_first"], values["z_last"] = window_frames(pix, tpl.fg & mine)
        defaults = {k: 0.0 for k in values} | {"var_j": np.inf, "z_first": -1, "z_last": -2}
        out = blk.own_results(values, defaults, store.plan.core(b)[0])
        out["n_new"] = np.array([int(all_outliers[blk.pixels].sum())])
        out["n_pixels"] = np.array([len(pix.counts)])
        out["seconds"] = np.array([time.perf_counter() - t0])
        return out

    def timed(b: int) -> dict:
        nonlocal t0
        t0 = time.perf_counter()
        return task(b)

    t0 = 0.0
    blocks = range(store.plan.n_blocks) if blocks is None else blocks
    wall = time.perf_counter()
    out = _concatenate(ordered_map(timed, store.plan.n_blocks, nproc))
    log_rate("cycle pass", out.pop("n_pixels"), out.pop("seconds"), time.perf_counter() - wall)
    return out


def log_rate(name: str, n_pixels: np.ndarray, seconds: np.ndarray, wall: float) -> None:
    """Log a pass's pixel rate: pixels (with halos) per second of block work per process."""
    n, busy = int(n_pixels.sum()), float(seconds.sum())
    if n:
        logger.info("%s: %d pixels in %.2f s of block work (%.2f M pixels/s per process), "
                    "%.2f s wall", name, n, busy, n / max(busy, 1e-9) / 1e6, wall)


def final_pass(store: Store, widths: Widths, j_expected: np.ndarray, xyz: np.ndarray,
               image_of_reflection: np.ndarray | None, nproc: int,
               active: np.ndarray | None = None, blocks: range | None = None) -> dict:
    """The output statistics of every reflection with the fitted widths.

    Returns j, var_j (profile fit), j_sum, var_sum, n_fg (summation), bg,
    coverage (Σ P over usable pixels), overloaded (in the foreground), centroid (px,
    px, frame) and outliers per image (stills: ``image_of_reflection``;
    rotation: frame).  Reflections not ``active`` get J = 0 with infinite variance.
    """
    def task(b: int) -> dict:
        blk = _read(store, active if b in blocks else _NONE, b)
        w = widths.select(blk.index)
        pix = profile.follow_spot(blk.pix, w)
        boxes = store.boxes.select(blk.index)
        tpl = template(pix, w, store.read_variance)
        j, var_j = profile_fit(pix, tpl.P, tpl.usable, tpl.bg, tpl.n_bg, j_expected[blk.index],
                               tpl.read_variance)
        j_sum, var_sum, n_fg, _ = summation(pix, tpl.fg, tpl.usable, tpl.bg, tpl.n_bg,
                                            tpl.read_variance)
        values = {
            "j": j, "var_j": var_j, "j_sum": j_sum, "var_sum": var_sum, "n_fg": n_fg,
            "bg": tpl.bg, "n_bg": tpl.n_bg,
            "coverage": pix.reduce(np.where(tpl.usable, tpl.P, 0.0)),
            "overloaded": pix.reduce((pix.overloaded & tpl.fg).astype(float)) > 0,
        }
        values["centroid"], values["centroid_variance"] = centroids(
            pix, tpl.fg & tpl.usable, tpl.bg, xyz[blk.index], boxes)
        defaults = {k: 0.0 for k in values} | {"var_j": np.inf, "var_sum": 1.0,
                                               "overloaded": False, "centroid": xyz,
                                               "centroid_variance": 1.0 / 12.0}
        out = blk.own_results(values, defaults, store.plan.core(b)[0])
        whole = blk.whole
        image = (whole.frame if image_of_reflection is None
                 else image_of_reflection[blk.whole_index][whole.owner])[blk.pixels]
        out["outliers_per_image"] = np.bincount(image[whole.outlier[blk.pixels]])
        return out

    blocks = range(store.plan.n_blocks) if blocks is None else blocks
    results = list(ordered_map(task, store.plan.n_blocks, nproc))
    per_image = [r.pop("outliers_per_image") for r in results]
    out = _concatenate(results)
    n_images = max((len(c) for c in per_image), default=0)
    out["outliers_per_image"] = sum((np.pad(c, (0, n_images - len(c))) for c in per_image),
                                    np.zeros(n_images, int))
    return out


def centroids(pix, use, bg, xyz, boxes: Boxes):
    """Background-subtracted centroids (px, px, frame) and their ``xyzobs.px.variance``.

    As DIALS's centroider (``mean`` and ``mean_sq_error`` in dials/algorithms/image/
    centroid/centroid_points.h): with weights w = max(counts − bg, 0) over the pixels
    ``use``, the centroid Σw·x/Σw (the prediction ``xyz`` where Σw = 0) and the unbiased
    weighted variance Σw(x − x̄)²·Σw/((Σw)² − Σw²), divided by Σw (the squared standard
    error of the mean), plus 1/12 (pixel quantisation).  Where no two pixels carry
    signal the position is only known to lie in the box: its width²/12.  Every
    reflection of ``pix`` must hold its whole box.
    """
    from dials_factored import box_kernels

    centre = np.array(xyz, dtype=float)
    nx, ny = (boxes.x1 - boxes.x0).astype(np.int64), (boxes.y1 - boxes.y0).astype(np.int64)
    variance = np.stack([nx, ny, boxes.z1 - boxes.z0], axis=1).astype(float) ** 2 / 12.0
    box_kernels.centroids(pix.counts, use, pix.start.astype(np.int64), np.asarray(bg, float),
                          boxes.x0.astype(np.int64), boxes.y0.astype(np.int64), nx, ny,
                          pix.frame, centre, variance)
    return centre, variance


def _concatenate(results) -> dict:
    """Join the per-block dictionaries of arrays, block after block."""
    results = list(results)
    if not results:
        return {}
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
