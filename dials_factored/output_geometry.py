"""The output geometry: observed centroids from the strong spots, and the stills' fitted
orientation and cell corrections applied to the crystals, with the table's predicted
geometry (s1, xyzcal, excitation errors) recomputed from them so that both agree."""

from __future__ import annotations

import numpy as np
from dials.array_family import flex

from dials_factored.arrays import miller_keys, rows_by_experiment, to_numpy


def add_observed_geometry(table, experiments, strong) -> None:
    """Add ``xyzobs.mm.*`` and the ``strong``/``used_in_refinement`` flags of the input.

    dials.two_theta_refine (xia2.multiplex) refines the cell from integrated reflections
    that were strong spots used in refinement; the flags are copied from the input
    table's rows with the same experiment and Miller index.
    """
    centroids_px_to_mm(table, experiments)
    if strong is None or len(strong) == 0 or "miller_index" not in strong:
        return
    key = _row_keys(table)
    for flag in (strong.flags.strong, strong.flags.used_in_refinement):
        flagged = strong.select(strong.get_flags(flag))
        if len(flagged):
            hit = np.isin(key, _row_keys(flagged))
            table.set_flags(flex.bool(hit.tolist()), flag)


def centroids_px_to_mm(table, experiments) -> None:
    """``xyzobs.mm.value``/``variance`` from ``xyzobs.px.*``: DIALS's
    ``reflection_table.centroid_px_to_mm`` (each panel's ``centroid_px_to_mm_panel``:
    pixels → mm with the panel's parallax correction, frames → radians with the scan),
    for the rows of each experiment and panel found by one sort.  DIALS's own selects
    over the whole table once per experiment, O(N_experiments · N_rows): 13 % of a
    3,000-still run.  A missing ``xyzobs.px.variance`` is taken as (1, 1, 1), as DIALS
    does.
    """
    from dials.algorithms.centroid import centroid_px_to_mm_panel

    n = len(table)
    table["xyzobs.mm.value"] = flex.vec3_double(n)
    table["xyzobs.mm.variance"] = flex.vec3_double(n)
    if "xyzobs.px.variance" not in table:
        table["xyzobs.px.variance"] = flex.vec3_double(n, (1, 1, 1))
    ids, panels = to_numpy(table["id"]).astype(np.int64), to_numpy(table["panel"]).astype(np.int64)
    order = np.lexsort((panels, ids))
    change = np.flatnonzero((np.diff(ids[order]) != 0) | (np.diff(panels[order]) != 0)) + 1
    px, px_var = table["xyzobs.px.value"], table["xyzobs.px.variance"]
    for rows in np.split(order, change):
        if not len(rows):
            continue
        expt = experiments[int(ids[rows[0]])]
        sel = flex.size_t(rows.astype(np.uint64))
        position, variance, _ = centroid_px_to_mm_panel(
            expt.detector[int(panels[rows[0]])], expt.scan, px.select(sel), px_var.select(sel),
            flex.vec3_double(len(rows), (1, 1, 1)))
        table["xyzobs.mm.value"].set_selected(sel, position)
        table["xyzobs.mm.variance"].set_selected(sel, variance)


def _row_keys(table) -> np.ndarray:
    return miller_keys(to_numpy(table["miller_index"]), to_numpy(table["id"]))


def apply_orientation_corrections(experiments, parameters, table=None) -> int:
    """Correct each still's crystal by its fitted rotation and reciprocal-axis scales
    (A → R(ω)·A·diag(1 + δs_a*, 1 + δs_b*, 1 + δs_c*)); returns how many.

    ω = (δθx, δθy, 0) in the lab frame and the δs, as fitted by the stills post-refinement
    (to first order ε moves by ŝ1·(ω×q) + Σ_j δs_j·h_j·ŝ1·A_j, see
    ``forward.excitation_gradients``).  With
    ``table`` (the output reflections) the detector distance is first fitted to the strong
    spots with the new crystals (:mod:`.detector_distance`, recorded in ``parameters``),
    and the predicted geometry of the corrected stills' rows is recomputed from the new
    models, so that table and experiments agree (see ``_repredict_stills``).
    """
    from scitbx import matrix

    rotated = []
    for node in parameters["nodes"]:
        if "rotation_x_deg" not in node:
            continue
        crystal = experiments[node["experiment"]].crystal
        rot = (matrix.col((1.0, 0.0, 0.0)).axis_and_angle_as_r3_rotation_matrix(
            node["rotation_x_deg"], deg=True)
            * matrix.col((0.0, 1.0, 0.0)).axis_and_angle_as_r3_rotation_matrix(
            node["rotation_y_deg"], deg=True))
        axes = node.get("cell_axes", [node.get("cell_scale", 0.0)] * 3)
        crystal.set_A(rot * matrix.sqr(crystal.get_A()) * matrix.diag([1.0 + v for v in axes]))
        rotated.append(node["experiment"])
    if table is not None and rotated and len(table):
        from dials_factored.detector_distance import refine_distance

        distance = refine_distance(experiments, table, rotated, _repredict_stills)
        if distance is not None:
            parameters["detector_distance"] = distance
        _repredict_stills(table, experiments, rotated)
    return len(rotated)


def _repredict_stills(table, experiments, rotated) -> None:
    """``s1``, ``excitation_error``, ``xyzcal.mm``/``xyzcal.px`` and ``panel`` of the rows
    of the experiments ``rotated`` from their crystals' current A, as
    ``prediction.predict`` computes them (ε = |A·h + s0| − |s0|, s1 along A·h + s0,
    DIALS's ray_intersection).  Every row gets its new s1 and ε; a row whose new ray
    misses the detector keeps its old position.  ``lp`` and ``qe`` stay those the
    intensities were corrected with.
    """
    from dials.algorithms.spot_prediction import ray_intersection

    from dials_factored.prediction import _add_pixel_positions

    ids = to_numpy(table["id"]).astype(int)
    hkl = to_numpy(table["miller_index"]).astype(float)
    per_experiment = rows_by_experiment(ids, len(experiments))
    for i in sorted(set(rotated)):
        rows = per_experiment[i]
        if len(rows) == 0:
            continue
        expt = experiments[i]
        a_mat = np.asarray(expt.crystal.get_A(), dtype=float).reshape(3, 3)
        s0 = np.asarray(expt.beam.get_s0(), dtype=float)
        k = hkl[rows] @ a_mat.T + s0
        k_len = np.linalg.norm(k, axis=1)
        s1 = k / k_len[:, None] * np.linalg.norm(s0)
        sub = flex.reflection_table()
        sub["s1"] = flex.vec3_double(s1)
        sub["entering"] = flex.bool(len(rows), False)
        sub["phi"] = flex.double(len(rows), 0.0)
        hit = ray_intersection(expt.detector, sub)
        z = to_numpy(table["xyzcal.px"])[rows, 2]
        every = flex.size_t(rows.tolist())
        table["s1"].set_selected(every, sub["s1"])
        table["excitation_error"].set_selected(every, flex.double(k_len - np.linalg.norm(s0)))
        sub = sub.select(hit)
        _add_pixel_positions(sub, expt.detector, frame=0.0)
        at = flex.size_t(rows[to_numpy(hit)].tolist())
        px = to_numpy(sub["xyzcal.px"])
        px[:, 2] = z[to_numpy(hit)]
        table["xyzcal.mm"].set_selected(at, sub["xyzcal.mm"])
        table["xyzcal.px"].set_selected(at, flex.vec3_double(px))
        table["panel"].set_selected(at, sub["panel"])
