"""Predicted reflections for the factored model, with the geometry each term needs.

Rotation data use DIALS's scan-varying/static predictor
(``flex.reflection_table.from_predictions_multi``).  Stills use the
"spherical relp" model: every reciprocal-lattice point q = A·h within a few
R0_eff of the Ewald sphere is kept, with its excitation error

    ε_r = |q + s0| − |s0|                                   (Å⁻¹)

and the diffracted beam s1 = (q + s0)·|s0|/|q + s0| intersected with the
detector by DIALS's ``ray_intersection``.  Both add ``d`` (``compute_d``) and the
DIALS ``lp`` (and ``qe`` where the detector has an attenuation coefficient)
corrections (``compute_corrections``).
"""

from __future__ import annotations

import logging

import numpy as np
from dials.algorithms.spot_prediction import IndexGenerator, ray_intersection
from dials.array_family import flex

from dials_factored.arrays import to_numpy

logger = logging.getLogger(f"dials.{__name__}")


def is_stills(experiments) -> bool:
    """True when no experiment has a scan with a finite oscillation."""
    for expt in experiments:
        if expt.scan is not None and expt.scan.get_oscillation()[1] > 0:
            return False
    return True


def _stills_table(expt, index: int, d_min: float, max_excitation: float):
    """Predict one still: keep reflections with |ε_r| < max_excitation (Å⁻¹)."""
    uc = expt.crystal.get_unit_cell()
    sg = expt.crystal.get_space_group()
    hkl = IndexGenerator(uc, sg.type(), d_min).to_array()
    if len(hkl) == 0:
        return None
    h = to_numpy(hkl).astype(float)
    A = np.asarray(expt.crystal.get_A(), dtype=float).reshape(3, 3)
    s0 = np.asarray(expt.beam.get_s0(), dtype=float)
    q = h @ A.T
    k = q + s0
    kn = np.linalg.norm(k, axis=1)
    eps = kn - np.linalg.norm(s0)
    keep = np.abs(eps) < max_excitation
    if not keep.any():
        return None
    s1 = k[keep] / kn[keep, None] * np.linalg.norm(s0)
    table = flex.reflection_table()
    table["miller_index"] = hkl.select(flex.bool(keep.tolist()))
    table["id"] = flex.int(int(keep.sum()), index)
    table["s1"] = flex.vec3_double(s1)
    table["excitation_error"] = flex.double(eps[keep])
    table["entering"] = flex.bool(int(keep.sum()), False)
    table["phi"] = flex.double(int(keep.sum()), 0.0)
    hit = ray_intersection(expt.detector, table)
    table = table.select(hit)
    _add_pixel_positions(table, expt.detector, frame=0.0)
    return table


def _add_pixel_positions(table, detector, frame: float) -> None:
    """Fill xyzcal.px from xyzcal.mm panel by panel (z = frame)."""
    mm = table["xyzcal.mm"]
    px = flex.vec3_double(len(table))
    for pid, panel in enumerate(detector):
        sel = table["panel"] == pid
        if sel.count(True) == 0:
            continue
        x, y, _ = mm.select(sel).parts()
        xy = panel.millimeter_to_pixel(flex.vec2_double(x, y))
        px_x, px_y = xy.parts()
        px.set_selected(sel, flex.vec3_double(px_x, px_y, flex.double(len(px_x), frame)))
    table["xyzcal.px"] = px


def predict(experiments, d_min: float | None, max_excitation: float):
    """Predict every reflection to d_min for all experiments.

    ``max_excitation`` (Å⁻¹) bounds |ε_r| for stills; rotation predictions are
    DIALS's own (reflections whose centre lies inside the scan).
    Returns a reflection table with miller_index, id, panel, s1, xyzcal.px/mm,
    d, lp (and qe), excitation_error (stills) and experiment identifiers.
    """
    if is_stills(experiments):
        tables = []
        for i, expt in enumerate(experiments):
            dm = d_min or detector_d_min(expt)
            t = _stills_table(expt, i, dm, max_excitation)
            if t is not None and len(t):
                tables.append(t)
        table = flex.reflection_table()
        for t in tables:
            table.extend(t)
    else:
        table = flex.reflection_table.from_predictions_multi(experiments, dmin=d_min)
        table["excitation_error"] = flex.double(len(table), 0.0)
    for i, expt in enumerate(experiments):
        if expt.identifier:
            table.experiment_identifiers()[i] = expt.identifier
    if len(table) == 0:
        return table
    table.compute_d(experiments)
    if d_min:
        table = table.select(table["d"] >= d_min)
    table.compute_corrections(experiments)
    if "qe" not in table:
        table["qe"] = flex.double(len(table), 1.0)
    return table


def detector_d_min(expt) -> float:
    """Best resolution reached on the detector (Å), the default d_min."""
    s0 = expt.beam.get_s0()
    return min(panel.get_max_resolution_at_corners(s0) for panel in expt.detector)
