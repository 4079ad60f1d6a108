"""The shoebox pixels on disk, in blocks of whole reflections: memory does not grow with images.

Each pixel column is one file (``counts`` float32 photons, ``flags`` uint8,
``e1``/``e2`` float32 Å⁻¹, ``site`` int64 key of the physical pixel), pixels
grouped by reflection as in :class:`~dials_factored.shoeboxes.Pixels`.
The files are written in place by the workers that read the images
(:meth:`PixelStore.scatter`, every pixel by the one image that holds it), so
memory holds one image per worker.  Reflections are stored in the order in
which their *last* image is read; every later pass reads one block at a time.

A block is cut only where the last image changes.  Boxes of neighbouring
spots share pixels only on a common image, so a block together with its
*halo* — the reflections whose images overlap the block's — holds every box
that can claim one of its pixels (:func:`shoeboxes.claimed_by_neighbours`).
For stills the halo is the block itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dials_factored import box_kernels

#: Flag bits of the ``flags`` column.
USABLE, OVERLOADED, OUTLIER = 1, 2, 4
COLUMNS = {"counts": np.float32, "flags": np.uint8, "e1": np.float32, "e2": np.float32,
           "site": np.int64}
#: Pixels per block: a few MB per column, so a pass's temporaries stay small.
BLOCK_PIXELS = 1_000_000
#: Pixels of the site column initialised per write.
SITE_CHUNK = 4_000_000


def plan_blocks(last_job: np.ndarray, n_pixels: np.ndarray,
                budget: int = BLOCK_PIXELS) -> np.ndarray:
    """Block bounds (reflection indices 0 … n) of about ``budget`` pixels, cut between images.

    ``last_job`` (sorted) is the last image each reflection needs.
    """
    n = len(last_job)
    cum = np.concatenate([[0], np.cumsum(n_pixels)])
    bounds = [0]
    for cut in np.flatnonzero(np.diff(last_job)) + 1:
        if cum[cut] - cum[bounds[-1]] >= budget:
            bounds.append(int(cut))
    if n > bounds[-1]:
        bounds.append(n)
    return np.asarray(bounds, dtype=np.int64)


def off_scan_pixels(start: np.ndarray, boxes, scan_first: np.ndarray,
                    scan_end: np.ndarray) -> np.ndarray:
    """Store indices of the box layers on frames outside the scan [``scan_first``,
    ``scan_end``) of each reflection: the pixels no image writes (sorted).

    A box's layer k (frame z0 + k) holds pixels start + k·area … start + (k + 1)·area.
    """
    depth = boxes.z1 - boxes.z0
    area = (boxes.x1 - boxes.x0) * (boxes.y1 - boxes.y0)
    below = np.clip(scan_first - boxes.z0, 0, depth)
    above = np.clip(boxes.z1 - scan_end, 0, depth - below)
    first = np.concatenate([start[:-1], start[:-1] + (depth - above) * area]).astype(np.int64)
    length = np.concatenate([below * area, above * area]).astype(np.int64)
    keep = length > 0
    first, length = first[keep], length[keep]
    order = np.argsort(first, kind="stable")
    first, length = first[order], length[order]
    offsets = np.repeat(first - np.concatenate([[0], np.cumsum(length)[:-1]]), length)
    return offsets + np.arange(int(length.sum()), dtype=np.int64)


@dataclass
class BlockPlan:
    """Which reflections form each block and which reflections surround it.

    ``first_job``/``last_job``: first and last image index each reflection needs
    (reflections sorted by ``last_job``); ``bounds``: block edges; ``origin``: the image
    index of each box's first layer (``shoeboxes.plan_jobs``).
    """

    first_job: np.ndarray
    last_job: np.ndarray
    bounds: np.ndarray
    origin: np.ndarray

    @cached_property
    def span(self) -> int:
        """The most images one reflection needs, less one."""
        return int(np.max(self.last_job - self.first_job)) if len(self.last_job) else 0

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    def core(self, b: int) -> tuple[int, int]:
        return int(self.bounds[b]), int(self.bounds[b + 1])

    def halo(self, b: int) -> tuple[int, int, np.ndarray]:
        """Reflections sharing an image with block ``b``: a range containing the block, and
        the mask of the range's reflections that do share one."""
        r0, r1 = self.core(b)
        lo = int(self.first_job[r0:r1].min())
        hi = int(self.last_job[r0:r1].max())
        h0 = min(r0, int(np.searchsorted(self.last_job, lo, "left")))
        h1 = max(r1, int(np.searchsorted(self.last_job, hi + self.span, "right")))
        return h0, h1, (self.last_job[h0:h1] >= lo) & (self.first_job[h0:h1] <= hi)


    def share(self, blocks: range):
        """The plan of one MPI rank that integrates ``blocks``: (u0, u1, plan, own blocks).

        The rank holds reflections u0 … u1 − 1: its blocks and every reflection sharing
        an image with them, so that its blocks see the same neighbours as in one process.
        """
        u0 = min(self.halo(b)[0] for b in blocks)
        u1 = max(self.halo(b)[1] for b in blocks)
        inner = self.bounds[(self.bounds > u0) & (self.bounds < u1)]
        bounds = np.concatenate([[u0], inner, [u1]]) - u0
        plan = BlockPlan(self.first_job[u0:u1], self.last_job[u0:u1], bounds,
                         self.origin[u0:u1])
        first = int(np.searchsorted(bounds, self.bounds[blocks.start] - u0))
        return u0, u1, plan, range(first, first + len(blocks))


class PixelStore:
    """Column files under ``directory`` for the pixels of reflections ``start`` describes."""

    def __init__(self, directory: str, start: np.ndarray, unwritten: np.ndarray | None = None):
        """``unwritten``: the store indices of the pixels no image will write (default:
        all of them); they are unusable (flags 0) and get a site of their own."""
        self.directory = directory
        self.start = start
        total = int(start[-1])
        for name, dtype in COLUMNS.items():
            with open(self._path(name), "wb") as f:
                f.truncate(total * np.dtype(dtype).itemsize)
        if unwritten is not None:
            self.scatter("site", unwritten, -1 - np.asarray(unwritten, np.int64))
            return
        for p0 in range(0, total, SITE_CHUNK):
            self.write("site", p0, -1 - np.arange(p0, min(p0 + SITE_CHUNK, total),
                                                  dtype=np.int64))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.bin")

    def write(self, name: str, first_pixel: int, values: np.ndarray) -> None:
        """Write ``values`` to column ``name`` from pixel ``first_pixel`` on."""
        values = np.ascontiguousarray(values, dtype=COLUMNS[name])
        with open(self._path(name), "r+b") as f:
            f.seek(first_pixel * values.itemsize)
            f.write(values.tobytes())

    def scatter(self, name: str, pixels: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` to column ``name`` at the pixels ``pixels`` (any order).

        Through a shared memory map of the column file, opened for this call only: forked
        workers write their images' pixels in place (into the page cache, which every
        process reads), and no page stays mapped after.
        """
        if len(pixels) == 0:
            return
        column = np.memmap(self._path(name), dtype=COLUMNS[name], mode="r+",
                           shape=(int(self.start[-1]),))
        column[pixels] = values
        del column

    def gather(self, name: str, pixels: np.ndarray, run: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Column ``name`` at the (sorted) pixels ``pixels``: only their pages are read.

        ``run`` = (p0, p1): ``pixels`` holds every pixel p0 … p1 − 1 (a block's own),
        copied as one slice.
        """
        if len(pixels) == 0:
            return np.zeros(0, COLUMNS[name])
        column = np.memmap(self._path(name), dtype=COLUMNS[name], mode="r",
                           shape=(int(self.start[-1]),))
        i0 = int(np.searchsorted(pixels, run[0]))
        i1 = i0 + run[1] - run[0]
        values = np.empty(len(pixels), COLUMNS[name])
        values[:i0] = column[pixels[:i0]]
        values[i0:i1] = column[run[0]:run[1]]
        values[i1:] = column[pixels[i1:]]
        del column
        return values

    def read(self, name: str, r0: int, r1: int) -> np.ndarray:
        """Column ``name`` for the pixels of reflections r0 … r1 − 1."""
        dtype = np.dtype(COLUMNS[name])
        p0, p1 = int(self.start[r0]), int(self.start[r1])
        return np.fromfile(self._path(name), dtype=dtype, count=p1 - p0,
                           offset=p0 * dtype.itemsize)

    def neighbourhood(self, b: int, r0: int, r1: int, halo: np.ndarray, boxes, origin):
        """Which reflections share a pixel with block ``b`` (reflections r0 … r1 − 1), which
        pixels a pass needs, and compact ids of those pixels' sites.

        ``halo`` (run indices) are the reflections outside the block that share an
        image with it; ``boxes`` and ``origin`` (the image of each box's first layer,
        ``shoeboxes.plan_jobs``) hold every reflection of the run.  A pass needs every
        pixel of the block's own reflections and, of a neighbour, only the pixels it
        shares with them (where its foreground can claim one of theirs): those its box
        has inside an own box on the same panel and image (``box_kernels.shared_pixels``)
        where the sites agree (pixels off the panel or the scan have sites of their
        own).  Returns (run indices of the reflections with a needed pixel, store indices
        of the needed pixels in store order, their site ids: equal where the sites are);
        computed on first use and kept on disk, not in memory: only the neighbours'
        pixels and the own pixels that repeat an earlier own box's (``_neighbourhood``).
        """
        path = os.path.join(self.directory, f"neighbourhood-{b}.npz")
        if not os.path.exists(path):
            np.savez(path, **self._neighbourhood(r0, r1, halo, boxes, origin))
        with np.load(path) as saved:
            index, others, other_ids = saved["index"], saved["others"], saved["other_ids"]
            ids = np.arange(self.start[r1] - self.start[r0], dtype=np.int32)
            ids[saved["moved"]] = saved["moved_to"]
        before = others < self.start[r0]
        pixels = np.concatenate([others[before], np.arange(self.start[r0], self.start[r1]),
                                 others[~before]])
        return index, pixels, np.concatenate([other_ids[before], ids, other_ids[~before]])

    def _neighbourhood(self, r0: int, r1: int, halo: np.ndarray, boxes, origin) -> dict:
        """What ``neighbourhood`` keeps on disk: the reflections (``index``), the
        neighbours' shared pixels (``others``, store indices, sorted) and their site ids,
        and the own pixels whose id is not their own position (``moved``, ``moved_to``:
        an earlier own box holds the same physical pixel)."""
        as64 = [np.asarray(a, np.int64) for a in (boxes.panel, boxes.x0, boxes.x1, boxes.y0,
                                                   boxes.y1)]
        first_image = np.asarray(origin, np.int64)
        own_sites = self.read("site", r0, r1)
        rep, q, p = box_kernels.shared_pixels(
            self.start, r0, r1, np.asarray(halo, np.int64), *as64, first_image,
            first_image + (boxes.z1 - boxes.z0), own_sites)
        others, first = np.unique(q, return_index=True)
        shared = self.gather("site", others) == own_sites[p[first]]
        others, other_ids = others[shared], rep[p[first[shared]]].astype(np.int32)
        index = np.union1d(np.arange(r0, r1),
                           np.searchsorted(self.start, others, "right") - 1).astype(np.int64)
        moved = np.flatnonzero(rep != np.arange(len(rep)))
        return {"index": index, "others": others, "other_ids": other_ids, "moved": moved,
                "moved_to": rep[moved].astype(np.int32)}
