"""Boxes that follow the fit: re-cut the shoeboxes when the fitted widths outgrow them.

The shoeboxes are cut once, from the initial widths (R1 from the spot finder's boxes or
``profile.r1``; for rotation data σ_z from the initial R0 and σ_m): a half-width of
``box_sigma``·R1/a + 1 pixels (a = √(pixel area) on the Ewald sphere, Å⁻¹) and
``box_sigma``·σ_z frames.  The foreground window is ``window_sigma``·R_eff and
``window_sigma``·σ_z (R_eff = √(R1² + a²/6), ``profile.effective_widths``); the background
is the rest of the box.  If the initial widths are too small, the fitted window
outgrows the box: the background ring empties (a silent zero background) and the
moments of Term 2 are cut by the box, so the fit cannot see the true width either.

After every outer cycle the box of each reflection is measured in units of its fitted
widths:

    s_xy = ½·min(nx, ny)·a / max(R_eff,a, R_eff,b)        s_z = ½·nz / σ_z

and the box is *short* when s_xy < window_sigma + ½ (less than half an R_eff of
background ring outside the window) or s_z < window_sigma (the φ window leaves the
box).  When more than :data:`RECUT_FRACTION` of the (active) reflections are short, the
integration starts again (:class:`Recut`): new boxes of ``box_sigma`` times the fitted
widths, every width starting from its fitted value (the priors keep their initial
centres), at most :data:`MAX_RECUTS` times and to at most :data:`RECUT_MAX_GROWTH` times
the initial boxes (only boxes below that count as short).  A fit on boxes that were too small
underestimates the widths (truncated moments), so a second re-cut may be needed.

Reflections that still have fewer than :data:`MIN_BACKGROUND_PIXELS` background pixels
(neighbours claim the ring, or a few boxes stay short) are flagged
``failed_during_background_modelling`` and left out of the fit and of the output's
integrated flags: never a silent zero background.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dials_factored.profile import effective_widths

#: Re-cut when more than this fraction of the reflections have short boxes.
RECUT_FRACTION = 0.1
#: Most re-cuts of one integration.
MAX_RECUTS = 3
#: A re-cut box is at most this many times the half-width (px, frames) of the box cut
#: from the initial widths: wider fitted widths are taken as a fit that ran away (e.g.
#: crowded spots pulling the window open), warned about, not chased.
RECUT_MAX_GROWTH = 3
#: Background ring, beyond the foreground window, that a box must hold (units of R_eff).
RING_MARGIN = 0.5
#: Fewest background pixels behind a reflection's background (as DIALS's simple
#: background model, ``background.simple.min_pixels``); fewer: flagged.
MIN_BACKGROUND_PIXELS = 10


@dataclass
class Recut:
    """The fitted widths that outgrew the boxes: where the next integration starts.

    ``nodes`` (1/d², Å⁻²) and ``log_r1a``/``log_r1b`` are the fitted R1(d) nodes;
    ``log_r0`` and ``log_eta`` the global widths in those slots of the parameter vector
    (rotation: radial R0 in Å⁻¹ and σ_m in rad).  ``short`` is the fraction of short
    boxes, after ``cycle`` cycles; ``r1_init`` the initial R1.  ``reach`` is True when
    what triggered it is a stills R0 fitted beyond the prediction's reach
    (``reflections.reach_r0``): reflections with a real partiality were never predicted.
    """

    nodes: list
    log_r1a: list
    log_r1b: list
    log_r0: float
    log_eta: float
    short: float
    cycle: int
    r1_init: float
    reach: bool = False

    @classmethod
    def from_fit(cls, x, layout, grid, short: float, cycle: int, r1_init: float,
                 reach: bool = False) -> Recut:
        return cls(list(map(float, grid.s2_nodes)), x[layout.log_r1a].tolist(),
                   x[layout.log_r1b].tolist(), float(x[layout.log_r0]),
                   float(x[layout.log_eta]), float(short), int(cycle), float(r1_init),
                   bool(reach))

    def _interp(self, s2: np.ndarray, log_r: list) -> np.ndarray:
        return np.interp(s2, self.nodes, log_r) if len(self.nodes) > 1 else np.full(
            len(s2), log_r[0])

    def r_eff(self, d: np.ndarray, area: np.ndarray) -> np.ndarray:
        """The larger fitted R_eff (Å⁻¹) of each reflection of resolution ``d`` (Å)."""
        s2 = 1.0 / d ** 2
        ra, rb = effective_widths(np.exp(self._interp(s2, self.log_r1a)),
                                  np.exp(self._interp(s2, self.log_r1b)), area)
        return np.maximum(ra, rb)

    def start(self, x, layout, grid) -> None:
        """Put the fitted widths into the parameter vector ``x`` of the new integration
        (its R1 nodes interpolated onto the new grid's nodes)."""
        x[layout.log_r1a] = self._interp(np.asarray(grid.s2_nodes), self.log_r1a)
        x[layout.log_r1b] = self._interp(np.asarray(grid.s2_nodes), self.log_r1b)
        x[layout.log_r0] = self.log_r0
        x[layout.log_eta] = self.log_eta

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("nodes",)}


def half_widths(r: np.ndarray, a: np.ndarray, box_sigma: float, min_half: int) -> np.ndarray:
    """Box half-widths (px) for the widths ``r`` (Å⁻¹): ⌈box_sigma·r/a⌉ + 1, at least
    ``min_half``."""
    return np.maximum(np.ceil(box_sigma * r / a).astype(int) + 1, min_half)


def frame_half_widths(sz: np.ndarray, box_sigma: float) -> np.ndarray:
    """Box half-widths in frames for the φ widths ``sz`` (frames): ⌈max(box_sigma·σ_z, 1.5)⌉."""
    return np.ceil(np.maximum(box_sigma * sz, 1.5)).astype(int)


def short_boxes(boxes, widths, window_sigma: float) -> np.ndarray:
    """Per reflection: is its box too small for the widths of a pass (module docstring)?

    ``widths`` is a :class:`~dials_factored.passes.Widths` (R_eff along e1, e2 in Å⁻¹,
    pixel area in Å⁻², σ_z in frames for rotation data).
    """
    side = np.minimum(boxes.x1 - boxes.x0, boxes.y1 - boxes.y0)
    s_xy = 0.5 * side * np.sqrt(widths.area) / np.maximum(widths.ra, widths.rb)
    short = s_xy < window_sigma + RING_MARGIN
    if widths.sz is not None:
        s_z = 0.5 * (boxes.z1 - boxes.z0) / np.maximum(widths.sz, 1e-9)
        short |= s_z < window_sigma
    return short

