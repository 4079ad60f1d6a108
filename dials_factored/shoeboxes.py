"""Shoebox pixels in flat arrays, read once from the images, one image at a time.

Every reflection owns a contiguous run of pixels (``start[r]`` .. ``start[r+1]``)
so that every later statistic is a vectorised segment reduction
(``np.add.reduceat``); no Python loop ever visits a pixel or a reflection.

For each pixel we keep the raw count, whether it may be used (detector mask,
trusted range, not overloaded) and its tangential offset from the predicted spot
centre in reciprocal space,

    ε_t = |s0| · (û_p − ŝ1)    projected on  e1 = ŝ1×ŝ0/|ŝ1×ŝ0|  and  e2 = ŝ1×e1   (Å⁻¹)

where û_p is the unit vector from the crystal to the pixel centre (parallax
included through the panel's pixel→mm strategy).  e1 is the circumferential and
e2 the radial (2θ) direction of the spot.  For rotation data each pixel also
carries its frame number.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass

import numpy as np
from dials.array_family import flex

from dials_factored.arrays import to_numpy

logger = logging.getLogger(f"dials.{__name__}")


@dataclass
class Boxes:
    """Per-reflection box on the detector: panel, x/y/z ranges (half-open, px/frames)."""

    panel: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    z0: np.ndarray
    z1: np.ndarray

    @property
    def n_pixels(self) -> np.ndarray:
        return (self.x1 - self.x0) * (self.y1 - self.y0) * (self.z1 - self.z0)

    def as_bbox(self):
        return flex.int6(*(flex.int(a.astype(int)) for a in (
            self.x0, self.x1, self.y0, self.y1, self.z0, self.z1)))


@dataclass
class Pixels:
    """Flat per-pixel arrays, grouped by reflection (see module docstring)."""

    counts: np.ndarray  # float32, raw counts
    usable: np.ndarray  # bool: masked, untrusted or overloaded pixels are False
    overloaded: np.ndarray  # bool: count at or above the trusted maximum
    e1: np.ndarray  # float32, Å⁻¹, circumferential offset
    e2: np.ndarray  # float32, Å⁻¹, radial offset
    frame: np.ndarray  # int32, image index within the experiment's scan (0 for stills)
    start: np.ndarray  # int64, n_refl + 1 offsets
    site: np.ndarray  # int64, the physical pixel (image, panel, x, y): equal where boxes overlap

    @property
    def owner(self) -> np.ndarray:
        """Reflection index of every pixel."""
        return np.repeat(np.arange(len(self.start) - 1), np.diff(self.start))

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Sum ``values`` (one per pixel) over each reflection's pixels."""
        return np.add.reduceat(values, self.start[:-1]) if len(values) else np.zeros(0)


def spot_frames(s1: np.ndarray, s0: np.ndarray):
    """Unit vectors ŝ1, e1 (circumferential) and e2 (radial) of each spot, shape (n, 3).

    ``s0`` is one beam vector (3,) or one per spot (n, 3).
    """
    u = s1 / np.linalg.norm(s1, axis=1)[:, None]
    e1 = np.cross(u, s0)
    e1 /= np.maximum(np.linalg.norm(e1, axis=1), 1e-12)[:, None]
    e2 = np.cross(u, e1)
    return u, e1, e2


def _vec2(x: np.ndarray, y: np.ndarray):
    return flex.vec2_double(flex.double(np.ascontiguousarray(x, dtype=float)),
                            flex.double(np.ascontiguousarray(y, dtype=float)))


def pixel_directions(panel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit vectors from the sample to the centres of pixels (x, y) of one panel."""
    mm = panel.pixel_to_millimeter(_vec2(x + 0.5, y + 0.5))
    lab = to_numpy(panel.get_lab_coord(mm))
    return lab / np.linalg.norm(lab, axis=1)[:, None]


def pixel_area_eps(panel, xyz_px: np.ndarray, s0_len: np.ndarray) -> np.ndarray:
    """Area (Å⁻²) of one pixel mapped onto the Ewald sphere at each spot.

    A pixel of area a_x·a_y at distance |X| seen at angle α to the panel normal
    subtends a solid angle a_x·a_y·cos α/|X|²; on a sphere of radius |s0| that
    is an area |s0|²·a_x·a_y·cos α/|X|².
    """
    mm = panel.pixel_to_millimeter(_vec2(xyz_px[:, 0], xyz_px[:, 1]))
    lab = to_numpy(panel.get_lab_coord(mm))
    dist = np.linalg.norm(lab, axis=1)
    normal = np.asarray(panel.get_normal(), dtype=float)
    cos_a = np.abs(lab @ normal) / dist
    ax, ay = panel.get_pixel_size()
    return s0_len ** 2 * ax * ay * cos_a / dist ** 2


def _box_pixels(boxes: Boxes, sel: np.ndarray, frame_offset: np.ndarray | None):
    """Pixel coordinates of the 2D box layer of reflections ``sel``.

    Returns (reflection, x, y, destination index in the flat store) where the
    destination accounts for the layer (frame_offset) inside a 3D box.
    """
    nx = (boxes.x1 - boxes.x0)[sel]
    ny = (boxes.y1 - boxes.y0)[sel]
    npix = nx * ny
    total = int(npix.sum())
    local_ref = np.repeat(np.arange(len(sel)), npix)
    first = np.repeat(np.cumsum(npix) - npix, npix)
    k = np.arange(total) - first
    x = boxes.x0[sel][local_ref] + k % nx[local_ref]
    y = boxes.y0[sel][local_ref] + k // nx[local_ref]
    layer = 0 if frame_offset is None else frame_offset[local_ref] * npix[local_ref]
    return sel[local_ref], x, y, k + layer


def extract(experiments, table, boxes: Boxes, gain: float = 1.0, progress=None,
            nproc: int = 1) -> Pixels:
    """Read every image once and cut all boxes into a flat pixel store.

    Images are read one at a time (by each of ``nproc`` forked worker
    processes), so memory holds one image per process plus the pixel store.
    Pixels outside the panel, flagged by the image mask (which includes the
    detector's trusted range) or not finite are not usable; so are pixels at or
    above the trusted maximum (overloads, also flagged separately).  Counts are
    divided by ``gain`` (counts per photon) so that they are photons.  Every
    pixel is written by exactly one image, so the store does not depend on
    ``nproc``.
    """
    n_refl = len(table)
    npix = boxes.n_pixels.astype(np.int64)
    start = np.concatenate([[0], np.cumsum(npix)])
    total = int(start[-1])
    counts = np.zeros(total, dtype=np.float32)
    usable = np.zeros(total, dtype=bool)
    over = np.zeros(total, dtype=bool)
    e1 = np.zeros(total, dtype=np.float32)
    e2 = np.zeros(total, dtype=np.float32)
    # frame of every pixel from the box layout (also for frames outside the scan)
    owner = np.repeat(np.arange(n_refl), npix)
    per_layer = ((boxes.x1 - boxes.x0) * (boxes.y1 - boxes.y0))[owner]
    frame = (boxes.z0[owner] + (np.arange(total) - start[owner]) // per_layer).astype(np.int32)
    del owner, per_layer

    site = -1 - np.arange(total, dtype=np.int64)  # pixels off every panel stay unique

    ids = to_numpy(table["id"]).astype(int)
    jobs = _image_jobs(experiments, ids, boxes)
    cutter = _ImageCutter(experiments, ids, to_numpy(table["s1"]), boxes, start, gain, jobs)
    for n_done, pieces in enumerate(_map_jobs(cutter, len(jobs), nproc)):
        for dest, value, ok, is_over, f1, f2, key in pieces:
            counts[dest] = value
            usable[dest] = ok
            over[dest] = is_over
            e1[dest] = f1
            e2[dest] = f2
            site[dest] = key
        if progress is not None:
            progress(n_done + 1, len(jobs))
    site = np.unique(site, return_inverse=True)[1].astype(np.int64)
    logger.debug("Extracted %d pixels for %d reflections", total, n_refl)
    return Pixels(counts, usable, over, e1, e2, frame, start, site)


@dataclass
class _ImageCutter:
    """Everything needed to cut the boxes out of one image (shared with forked workers)."""

    experiments: object
    ids: np.ndarray
    s1: np.ndarray
    boxes: Boxes
    start: np.ndarray
    gain: float
    jobs: list

    def __call__(self, job_index: int) -> list:
        """(destination, counts, usable, overloaded, ε1, ε2, site) per panel of an image.

        The site number identifies the physical pixel (image, panel, x, y) for pixels
        on the panel, so that boxes sharing a pixel can be found.
        """
        imageset, index, expt_ids, frame_number = self.jobs[job_index]
        boxes = self.boxes
        data = imageset.get_raw_data(index)
        mask = imageset.get_mask(index)
        on_image = (np.isin(self.ids, expt_ids) & (boxes.z0 <= frame_number)
                    & (boxes.z1 > frame_number))
        pieces = []
        detector = imageset.get_detector()
        n_panels = len(detector)
        for pid, panel in enumerate(detector):
            sel = np.flatnonzero(on_image & (boxes.panel == pid))
            if len(sel) == 0:
                continue
            image = data[pid].as_numpy_array()
            pmask = mask[pid].as_numpy_array()
            ref, x, y, local = _box_pixels(boxes, sel, frame_number - boxes.z0[sel])
            ny, nx = image.shape
            inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
            site = np.where(
                inside, ((job_index * n_panels + pid) * ny + y).astype(np.int64) * nx + x,
                -1 - (self.start[ref] + local))
            xi, yi = np.clip(x, 0, nx - 1), np.clip(y, 0, ny - 1)
            value = image[yi, xi].astype(np.float32)
            finite = inside & np.isfinite(value)
            is_over = finite & (value >= panel.get_trusted_range()[1])
            dirs = pixel_directions(panel, xi, yi)
            s0 = np.asarray(self.experiments[int(self.ids[sel[0]])].beam.get_s0(), dtype=float)
            u, f1, f2 = spot_frames(self.s1[ref], s0)
            diff = (dirs - u) * np.linalg.norm(s0)
            pieces.append((
                self.start[ref] + local,
                np.where(finite, value / self.gain, 0).astype(np.float32),
                finite & pmask[yi, xi] & ~is_over,
                is_over,
                np.einsum("ij,ij->i", diff, f1).astype(np.float32),
                np.einsum("ij,ij->i", diff, f2).astype(np.float32),
                site,
            ))
        return pieces


_WORKER_CUTTER: _ImageCutter | None = None


def _cut_in_worker(job_index: int) -> list:
    return _WORKER_CUTTER(job_index)


def _map_jobs(cutter: _ImageCutter, n_jobs: int, nproc: int):
    """Results of ``cutter`` for every job, in order; forked processes when nproc > 1.

    Workers inherit the image sets by fork (nothing large is pickled on the
    way in); only the cut pixels come back.
    """
    if nproc <= 1 or n_jobs < 2:
        for i in range(n_jobs):
            yield cutter(i)
        return
    global _WORKER_CUTTER
    _WORKER_CUTTER = cutter
    try:
        with multiprocessing.get_context("fork").Pool(nproc) as pool:
            chunk = max(1, n_jobs // (8 * nproc))
            yield from pool.imap(_cut_in_worker, range(n_jobs), chunksize=chunk)
    finally:
        _WORKER_CUTTER = None


def _image_jobs(experiments, ids: np.ndarray, boxes: Boxes):
    """(imageset, index within it, experiment ids, frame number) for every image to read.

    Stills: one job per distinct image (several lattices on one image share it).
    Rotation: one job per frame of each sequence that any box touches.
    """
    jobs = []
    seen = {}
    for i, expt in enumerate(experiments):
        iset = expt.imageset
        if expt.scan is None or expt.scan.get_oscillation()[1] == 0:
            key = (iset.get_path(0), iset.indices()[0] if hasattr(iset, "indices") else 0)
            if key in seen:
                jobs[seen[key]][2].append(i)
            else:
                seen[key] = len(jobs)
                jobs.append((iset, 0, [i], 0))
        else:
            first = expt.scan.get_array_range()[0]
            sel = ids == i
            if not sel.any():
                continue
            lo, hi = int(boxes.z0[sel].min()), int(boxes.z1[sel].max())
            for f in range(max(lo, first), min(hi, expt.scan.get_array_range()[1])):
                jobs.append((iset, f - first, [i], f))
    return jobs


def claimed_by_neighbours(pix: Pixels, foreground: np.ndarray) -> np.ndarray:
    """Pixels that lie in the foreground of another reflection's box.

    Boxes overlap where spots are close; a pixel in a neighbour's foreground
    carries the neighbour's photons and must not count as this reflection's
    background (nor, outside its own foreground, enter its profile fit).
    """
    claims = np.bincount(pix.site, weights=foreground, minlength=int(pix.site.max()) + 1
                         if len(pix.site) else 0)
    return claims[pix.site] - foreground > 0


def background(pix: Pixels, window: np.ndarray, usable: np.ndarray | None = None,
               n_iter: int = 3, clip: float = 4.0):
    """Robust mean background per reflection and the number of pixels behind it.

    Uses usable pixels (``usable``, default the store's) outside the
    reflection's foreground ``window``; pixels
    more than ``clip`` Poisson σ above the current mean are dropped, repeated
    ``n_iter`` times (hot pixels, zingers and neighbours' tails never enter).
    The constant background of an unbiased Poisson mean is kept (not a median,
    which is biased low for small counts).  Returns (Bg counts/pixel, n_bg).
    """
    use = (pix.usable if usable is None else usable) & ~window
    owner = pix.owner
    bg = np.zeros(len(pix.start) - 1)
    n = np.zeros_like(bg)
    for _ in range(n_iter + 1):
        w = use.astype(float)
        n = pix.reduce(w)
        bg = pix.reduce(w * pix.counts) / np.maximum(n, 1)
        use = use & (pix.counts <= bg[owner] + clip * np.sqrt(np.maximum(bg[owner], 0.0) + 1.0))
    return bg, n
