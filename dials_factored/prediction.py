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
from dataclasses import dataclass

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


@dataclass
class _Indices:
    """Miller indices as flex (for the table) and as floats with their products h_i·h_j."""

    flex: object
    hkl: np.ndarray  # n×3
    products: np.ndarray  # n×6: h², k², l², 2hk, 2hl, 2kl


def _miller_indices(experiments, d_min: float) -> _Indices:
    """All indices any still can reach to ``d_min``, generated once for the run.

    Stills share a space group but each has its own refined cell B.  Indices are
    generated for the first cell to d_min·s, s the smallest singular value of
    B_i·B_1⁻¹ over the stills, so that |B_i h| ≤ 1/d_min implies |B_1 h| ≤ 1/(s·d_min);
    each still then selects its own sphere.
    """
    first = experiments[0].crystal
    b1_inv = np.linalg.inv(np.asarray(first.get_B(), dtype=float).reshape(3, 3))
    shrink = min(np.linalg.svd(np.asarray(e.crystal.get_B(), dtype=float).reshape(3, 3)
                               @ b1_inv, compute_uv=False).min() for e in experiments)
    indices = IndexGenerator(first.get_unit_cell(), first.get_space_group().type(),
                             d_min * min(shrink, 1.0) * 0.999).to_array()
    h = to_numpy(indices).astype(float)
    products = np.column_stack([h[:, 0] ** 2, h[:, 1] ** 2, h[:, 2] ** 2, 2 * h[:, 0] * h[:, 1],
                                2 * h[:, 0] * h[:, 2], 2 * h[:, 1] * h[:, 2]])
    return _Indices(indices, h, products)


def _stills_table(expt, index: int, indices: _Indices, d_min: float, max_excitation: float):
    """Predict one still: keep reflections to d_min with |ε_r| < max_excitation (Å⁻¹).

    With q = A·h, |q + s0|² = hᵀ(AᵀA)h + 2 h·(Aᵀs0) + |s0|²: two matrix-vector
    products over all indices; q itself only for those kept.
    """
    A = np.asarray(expt.crystal.get_A(), dtype=float).reshape(3, 3)
    s0 = np.asarray(expt.beam.get_s0(), dtype=float)
    s0_len = np.linalg.norm(s0)
    g = A.T @ A
    qq = indices.products @ np.array([g[0, 0], g[1, 1], g[2, 2], g[0, 1], g[0, 2], g[1, 2]])
    eps = np.sqrt(np.maximum(qq + 2 * (indices.hkl @ (A.T @ s0)) + s0_len ** 2, 0.0)) - s0_len
    keep = np.flatnonzero((np.abs(eps) < max_excitation) & (qq <= 1.0 / d_min ** 2))
    if len(keep) == 0:
        return None
    k = indices.hkl[keep] @ A.T + s0
    s1 = k / np.linalg.norm(k, axis=1)[:, None] * s0_len
    table = flex.reflection_table()
    table["miller_index"] = indices.flex.select(flex.size_t(keep.tolist()))
    table["id"] = flex.int(len(keep), index)
    table["s1"] = flex.vec3_double(s1)
    table["excitation_error"] = flex.double(eps[keep])
    table["entering"] = flex.bool(len(keep), False)
    table["phi"] = flex.double(len(keep), 0.0)
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


def predict(experiments, d_min: float | None, max_excitation: float,
            subset: list[int] | None = None):
    """Predict every reflection to d_min for all experiments (stills: those in ``subset``).

    ``max_excitation`` (Å⁻¹) bounds |ε_r| for stills; rotation predictions are
    DIALS's own (reflections whose centre lies inside the scan).  Experiment ids
    are those of the whole list.
    Returns a reflection table with miller_index, id, panel, s1, xyzcal.px/mm,
    d, lp (and qe), excitation_error (stills) and experiment identifiers.
    """
    if is_stills(experiments):
        tables = []
        chosen = list(range(len(experiments))) if subset is None else list(subset)
        d_mins = {i: d_min or detector_d_min(experiments[i]) for i in chosen}
        groups = {i: experiments[i].crystal.get_space_group().type().number() for i in chosen}
        indices = {g: _miller_indices([experiments[i] for i in chosen if groups[i] == g],
                                      min(d_mins.values())) for g in set(groups.values())}
        for i in chosen:
            t = _stills_table(experiments[i], i, indices[groups[i]], d_mins[i], max_excitation)
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
