"""Shoebox pixels in flat arrays, read once from the images, one image at a time.

The pixels live on disk in a :class:`~dials_factored.pixel_store.PixelStore`;
every pass reads them one block of reflections at a time as :class:`Pixels`.

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
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from dials.array_family import flex

from dials_factored.arrays import rows_by_experiment, to_numpy
from dials_factored.parallel import ordered_map
from dials_factored.pixel_geometry import offset_coefficients
from dials_factored.pixel_store import (
    OUTLIER,
    OVERLOADED,
    USABLE,
    BlockPlan,
    PixelStore,
)

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

    def select(self, index) -> Boxes:
        """The boxes of reflections ``index`` (a slice, mask or index array)."""
        return Boxes(*(a[index] for a in (self.panel, self.x0, self.x1, self.y0, self.y1,
                                          self.z0, self.z1)))

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
    site: np.ndarray  # int, the physical pixel (image, panel, x, y): equal where boxes overlap
    outlier: np.ndarray | None = None  # bool: flagged by an earlier pass (hot pixel, zinger)

    @cached_property
    def owner(self) -> np.ndarray:
        """Reflection index of every pixel."""
        return np.repeat(np.arange(len(self.start) - 1), np.diff(self.start))

    def subset(self, reflections: np.ndarray) -> tuple[Pixels, np.ndarray]:
        """The pixels of the reflections selected by the mask ``reflections``, and the
        pixel mask that selects them."""
        npix = np.diff(self.start)
        keep = np.repeat(reflections, npix)
        start = np.concatenate([[0], np.cumsum(npix[reflections])])
        outlier = None if self.outlier is None else self.outlier[keep]
        return Pixels(self.counts[keep], self.usable[keep], self.overloaded[keep],
                      self.e1[keep], self.e2[keep], self.frame[keep], start, self.site[keep],
                      outlier), keep

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Sum ``values`` (one per pixel) over each reflection's pixels."""
        return np.add.reduceat(values, self.start[:-1]) if len(values) else np.zeros(0)


def plan_jobs(experiments, ids: np.ndarray, boxes: Boxes):
    """The images to read and, per reflection, the first and last of them it needs.

    Returns (jobs, first_job, last_job, origin); a job is (imageset, index within it,
    experiment ids, frame number); ``origin`` is the job of each box's first layer, as
    if the scan went on before its first image (the job of frame z is origin + z − z0).
    Stills: one job per distinct image (several lattices on one image share it).
    Rotation: one job per frame of each sequence that any box touches, in scan order;
    boxes reaching beyond the scan are clipped to it.
    """
    jobs = []
    seen = {}
    first = np.zeros(len(ids), np.int64)
    last = np.zeros(len(ids), np.int64)
    origin = np.zeros(len(ids), np.int64)
    rows = rows_by_experiment(ids, len(experiments))
    for i, expt in enumerate(experiments):
        iset = expt.imageset
        sel = rows[i]
        if expt.scan is None or expt.scan.get_oscillation()[1] == 0:
            key = (iset.get_path(0), iset.indices()[0] if hasattr(iset, "indices") else 0)
            if key in seen:
                jobs[seen[key]][2].append(i)
            else:
                seen[key] = len(jobs)
                jobs.append((iset, 0, [i], 0))
            first[sel] = last[sel] = origin[sel] = seen[key]
            continue
        if len(sel) == 0:
            continue
        scan_first, scan_end = expt.scan.get_array_range()
        lo = max(int(boxes.z0[sel].min()), scan_first)
        hi = min(int(boxes.z1[sel].max()), scan_end)
        keys = [_frame_key(iset, f - scan_first, f) for f in range(lo, hi)]
        known = [seen.get(k) for k in keys]
        n_known = next((n for n, j in enumerate(known) if j is None), len(known))
        shared = (n_known > 0 and all(j is None for j in known[n_known:])
                  and np.all(np.diff(known[:n_known]) == 1)
                  and (n_known == len(known) or known[n_known - 1] == len(jobs) - 1))
        if shared:
            # a second lattice (sweep) on frames already planned: the same jobs (each image
            # read once, the lattices' boxes sharing pixel sites), new ones after them
            for j in known[:n_known]:
                jobs[j][2].append(i)
            base = known[0] - lo
            new_frames = range(lo + n_known, hi)
        else:
            base = len(jobs) - lo
            new_frames = range(lo, hi)
        seen.update((keys[f - lo], base + f) for f in new_frames)
        jobs.extend((iset, f - scan_first, [i], f) for f in new_frames)
        first[sel] = base + np.clip(boxes.z0[sel], lo, hi - 1)
        last[sel] = base + np.clip(boxes.z1[sel] - 1, lo, hi - 1)
        origin[sel] = base + boxes.z0[sel]
    return jobs, first, last, origin


def _frame_key(iset, index: int, frame: int) -> tuple:
    """What identifies one image of a sweep: its file, its index in the file, its frame."""
    inside = iset.indices()[index] if hasattr(iset, "indices") else index
    return iset.get_path(index), int(inside), frame


def extract(experiments, table, boxes: Boxes, jobs: list, store: PixelStore, gain: float = 1.0,
            progress=None, nproc: int = 1, hot=None) -> None:
    """Read every image once and cut all boxes into the pixel ``store``.

    Images are read one at a time (by each of ``nproc`` forked worker processes), and
    each worker writes its image's pixels straight into the store's column files
    (``PixelStore.scatter``): nothing but the progress comes back, and memory holds one
    image per process.  Pixels outside the panel, flagged by the image mask (which
    includes the detector's trusted range) or not finite are not usable; so are pixels
    at or above the trusted maximum (overloads, also flagged separately).  Counts are
    divided by ``gain`` (counts per photon) so that they are photons.  Every pixel is
    written by exactly one image (pixels no image writes, off the scan, keep the store's
    unusable defaults), so the store does not depend on ``nproc``.  ``hot`` (per panel,
    True where usable; see :mod:`dials_factored.hot_pixels`) masks hot pixels on every
    image whose panels have its shapes.
    """
    ids = to_numpy(table["id"]).astype(int)
    cutter = _ImageCutter(experiments, ids, to_numpy(table["s1"]), boxes, store, gain,
                          jobs, hot=hot)
    for job, _ in enumerate(ordered_map(cutter, len(jobs), nproc)):
        if progress is not None:
            progress(job + 1, len(jobs))


def read_block(store: PixelStore, plan: BlockPlan, boxes: Boxes, b: int):
    """The pixels of block ``b`` and, of the boxes that share a pixel with its boxes, the
    shared pixels (``PixelStore.neighbourhood``).

    Returns (Pixels, index, own): ``index`` holds the run's reflection index of each
    reflection in the Pixels, ``own`` marks the block's own (a contiguous run, whole
    boxes).  A neighbour holds only the pixels it shares with them, enough to say which
    of their pixels its foreground claims; its own per-reflection statistics are not
    meaningful and the passes drop them.  ``Pixels.site`` holds compact ids of the
    physical pixels within the Pixels.
    """
    h0, h1, same_images = plan.halo(b)
    r0, r1 = plan.core(b)
    halo = h0 + np.flatnonzero(same_images)
    index, pixels, sites = store.neighbourhood(b, r0, r1, halo[(halo < r0) | (halo >= r1)],
                                               boxes, plan.origin)
    from dials_factored import box_kernels

    per_layer = ((boxes.x1 - boxes.x0) * (boxes.y1 - boxes.y0)).astype(np.int64)
    owner, frame = box_kernels.owners_and_frames(pixels, store.start, index,
                                                 boxes.z0.astype(np.int64), per_layer)
    start = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(index)))])

    def column(name):
        return store.gather(name, pixels, (int(store.start[r0]), int(store.start[r1])))

    flags = column("flags")
    pix = Pixels(column("counts"), (flags & USABLE) > 0, (flags & OVERLOADED) > 0,
                 column("e1"), column("e2"), frame, start, sites,
                 (flags & OUTLIER) > 0)
    pix.__dict__["owner"] = owner  # the cached property, already known
    return pix, index, (index >= r0) & (index < r1)


@dataclass
class _ImageCutter:
    """Everything needed to cut the boxes out of one image (shared with forked workers)."""

    experiments: object
    ids: np.ndarray
    s1: np.ndarray
    boxes: Boxes
    store: PixelStore
    gain: float
    jobs: list
    masks: dict = field(default_factory=dict)  # static masks by format and detector
    hot: list | None = None  # per panel, False at hot pixels (stills)
    rows: list = field(init=False)  # per experiment, its reflections

    def __post_init__(self):
        self.rows = rows_by_experiment(self.ids, len(self.experiments))

    def static_mask(self, imageset, index: int) -> list:
        """Per panel, the pixels the detector's format and an external mask allow (None:
        all), as ``imageset.get_mask`` gives them without its trusted-range part, which
        is applied to the box pixels only.  ``get_mask`` decodes the image a second time,
        so the static part is computed once per format and detector and kept; a dynamic
        (shadow) mask is taken from ``get_mask`` image by image.
        """
        if imageset.has_dynamic_mask():
            return [m.as_numpy_array() for m in imageset.get_mask(index)]
        detector = imageset.get_detector()
        key = (imageset.get_format_class().__name__, imageset.external_lookup.mask.filename,
               tuple(p.get_image_size() for p in detector))
        if key not in self.masks:
            fmt = imageset.get_format_class().get_instance(imageset.get_path(index))
            panels = [None] * len(detector)
            static = fmt.get_static_mask()
            if static is not None:
                panels = [m.as_numpy_array() for m in static]
            external = imageset.external_lookup.mask.data
            if not external.empty():
                panels = [e if p is None else p & e for p, e in zip(panels, (
                    external.tile(i).data().as_numpy_array() for i in range(len(detector))))]
            self.masks[key] = panels
        return self.masks[key]

    def __call__(self, job_index: int) -> int:
        """Cut the boxes of one image into the store; returns the number of pixels.

        The site number identifies the physical pixel (image, panel, x, y) for pixels
        on the panel, so that boxes sharing a pixel can be found.
        """
        imageset, index, expt_ids, frame_number = self.jobs[job_index]
        boxes = self.boxes
        try:
            data = imageset.get_raw_data(index)
            imageset.clear_cache()  # each still has its own image set, each keeping its image
            static = self.static_mask(imageset, index)
        except Exception as e:  # dxtbx raises RuntimeError, OSError, … on a bad file
            raise ValueError(f"image {imageset.get_path(index)} could not be read "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "nothing was written") from None
        pieces = []
        n_panels = len(imageset.get_detector())
        for eid in expt_ids:  # several lattices may share the image
            # each experiment's own detector and beam (stills refined per still)
            detector = self.experiments[int(eid)].detector
            s0 = np.asarray(self.experiments[int(eid)].beam.get_s0(), dtype=float)
            rows = self.rows[int(eid)]
            mine = rows[(boxes.z0[rows] <= frame_number) & (boxes.z1[rows] > frame_number)]
            for pid, panel in enumerate(detector):
                sel = mine[boxes.panel[mine] == pid]
                if len(sel):
                    image = data[pid].as_numpy_array()
                    pieces.append(self._cut(image, self._usable(static[pid], pid, image.shape),
                                            panel, s0, sel, frame_number,
                                            job_index * n_panels + pid))
        if not pieces:
            return 0
        dest, *values = (np.concatenate(column) for column in zip(*pieces))
        for name, column in zip(("counts", "flags", "e1", "e2", "site"), values):
            self.store.scatter(name, dest, column)
        return len(dest)

    def _usable(self, static, pid: int, shape) -> np.ndarray | None:
        """The static mask of a panel with the hot pixels (if any, same shape) removed."""
        if self.hot is None or pid >= len(self.hot) or self.hot[pid].shape != shape:
            return static
        return self.hot[pid] if static is None else static & self.hot[pid]

    def _cut(self, image, static, panel, s0, sel, frame_number, image_panel):
        """The piece of ``pieces`` (see ``__call__``) of boxes ``sel`` on one panel image
        (``box_kernels.cut_boxes``: one visit per pixel)."""
        from dials_factored import box_kernels

        boxes = self.boxes
        x0, x1, y0, y1 = (np.ascontiguousarray(v[sel], dtype=np.int64)
                          for v in (boxes.x0, boxes.x1, boxes.y0, boxes.y1))
        xr, yr = (x0 + x1) // 2, (y0 + y1) // 2
        coef = offset_coefficients(panel, self.s1[sel], s0, xr.astype(float), yr.astype(float))
        allowed = np.ones(image.shape, bool) if static is None else np.asarray(static, bool)
        low, high = panel.get_trusted_range()
        return box_kernels.cut_boxes(
            image, allowed, x0, x1, y0, y1,
            np.ascontiguousarray(frame_number - boxes.z0[sel], dtype=np.int64),
            np.ascontiguousarray(self.store.start[sel], dtype=np.int64), coef,
            np.float32(np.linalg.norm(s0)), np.float32(low), np.float32(high),
            float(self.gain), int(image_panel))


def claimed_by_neighbours(pix: Pixels, foreground: np.ndarray) -> np.ndarray:
    """Pixels that lie in the foreground of another reflection's box.

    Boxes overlap where spots are close; a pixel in a neighbour's foreground
    carries the neighbour's photons and must not count as this reflection's
    background (nor, outside its own foreground, enter its profile fit).
    """
    from dials_factored import kernels

    return kernels.claimed(pix.site, foreground)


def background(pix: Pixels, window: np.ndarray, usable: np.ndarray | None = None,
               n_iter: int = 3, clip: float = 4.0, read_variance: float = 0.0):
    """Robust mean background per reflection and the number of pixels behind it.

    Uses usable pixels (``usable``, default the store's) outside the
    reflection's foreground ``window``; pixels
    more than ``clip`` σ above the current mean are dropped (σ² = Bg + σ_read² + 1,
    ``read_variance`` = σ_read² photons²; the +1 keeps single photons on a nearly empty
    background), repeated
    ``n_iter`` times (hot pixels, zingers and neighbours' tails never enter).
    The constant background of an unbiased Poisson mean is kept (not a median,
    which is biased low for small counts).  Returns (Bg counts/pixel, n_bg).
    """
    from dials_factored import kernels

    use = (pix.usable if usable is None else usable) & ~window
    return kernels.background(pix.counts, use, pix.start, int(n_iter), float(clip),
                              float(read_variance))
