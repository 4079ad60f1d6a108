"""The output: the DIALS reflection table and the fitted-parameter summary.

``output_table`` writes every column and flag in the meaning DIALS gives it, so that
dials.merge, dials.export and dials.scale read the output as DIALS's own
(docs/conventions.md); ``parameter_summary`` is the fitted model for the log and JSON.
"""

from __future__ import annotations

import numpy as np
from dials.array_family import flex


def output_table(table, j, var_j, j_sum, var_sum, bg, n_fg, isf, var_isf, p, lp, qe,
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


def parameter_summary(x, layout, nodes, grid, stills, cov, experiments):
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
        axes = np.zeros((layout.n_orient, 3))  # δs of a*, b*, c* per still
        for block, group in zip(layout.cell_axes, layout.cell_groups):
            axes[:, list(group)] = x[block][:, None]
        for node, tx, ty, ds in zip(summary["nodes"], x[layout.orient_x], x[layout.orient_y],
                                    axes):
            node["rotation_x_deg"] = float(np.degrees(tx))
            node["rotation_y_deg"] = float(np.degrees(ty))
            node["cell_axes"] = ds.tolist()
            node["cell_scale"] = float(ds.mean())
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
