"""Measure how far strong rotation spots move per frame, against forward.spot_drift.

Usage: .venv/bin/python scripts/measure_spot_drift.py BENCH_WORKDIR/rotation_angular
(a benchmark work directory with ``dials/integrated.{expt,refl}``).  For up to 1500
reflections with I/σ > 10 it fits the per-frame background-subtracted centroid (within
5 px of the prediction, background from the 7–10 px ring) against the frame, and
compares the slopes (px per frame) with the drift of the angular law, by |ζ|.
"""

from __future__ import annotations

import sys

import numpy as np
from dials.array_family import flex
from dxtbx.model.experiment_list import ExperimentListFactory


def slopes(work: str, n_max: int = 1500):
    expt = ExperimentListFactory.from_json_file(f"{work}/dials/integrated.expt")[0]
    panel, iset = expt.detector[0], expt.imageset
    t = flex.reflection_table.from_file(f"{work}/dials/integrated.refl")
    t = t.select(t.get_flags(t.flags.integrated_sum))
    i_over_s = np.array(t["intensity.sum.value"]) / np.sqrt(np.array(t["intensity.sum.variance"]))
    rng = np.random.default_rng(0)
    chosen = np.flatnonzero(i_over_s > 10)
    chosen = rng.choice(chosen, min(n_max, len(chosen)), replace=False)
    s0 = np.array(expt.beam.get_s0())
    m2 = np.array(expt.goniometer.get_rotation_axis())
    osc = np.radians(expt.scan.get_oscillation()[1])
    first, end = expt.scan.get_array_range()
    nx, ny = panel.get_image_size()
    images = {}
    rows = []
    for i in chosen:
        x0, x1, y0, y1, z0, z1 = t["bbox"][i]
        xc, yc, zc = t["xyzcal.px"][i]
        x0, x1, y0, y1 = x0 - 6, x1 + 6, y0 - 6, y1 + 6
        if x0 < 0 or y0 < 0 or x1 > nx or y1 > ny:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        rr = np.hypot(xx - xc, yy - yc)
        z, cx, cy, w = [], [], [], []
        for f in range(max(z0, first), min(z1, end)):
            if f not in images:
                images[f] = iset.get_raw_data(f)[0].as_numpy_array().astype(float)
            a = images[f][y0:y1, x0:x1]
            signal = np.where(rr < 5, a - np.median(a[(rr > 7) & (rr < 10)]), 0.0)
            if signal.sum() < 100:
                continue
            z.append(f + 0.5)
            cx.append((signal * xx).sum() / signal.sum())
            cy.append((signal * yy).sum() / signal.sum())
            w.append(signal.sum())
        if len(z) < 3:
            continue
        design = np.column_stack([np.ones(len(z)), np.array(z) - zc])
        normal = design.T @ (np.array(w)[:, None] * design)
        fit = [np.linalg.solve(normal, design.T @ (np.array(w) * np.array(c)))[1] for c in (cx, cy)]
        s1 = np.array(t["s1"][i])
        q = s1 - s0
        e1 = np.cross(s1, s0)
        e1 /= np.linalg.norm(e1)
        zeta_u = m2 @ e1
        v = np.cross(m2 - zeta_u * e1, q)
        ends = [np.array(panel.get_ray_intersection_px(tuple(s1 + sign * osc * v)))
                for sign in (-1, 1)]
        rows.append((zeta_u, *fit, *((ends[1] - ends[0]) / 2)))
    return np.array(rows)


if __name__ == "__main__":
    o = slopes(sys.argv[1])
    print(f"{len(o)} spots")
    for lo, hi in ((0, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.01)):
        s = (np.abs(o[:, 0]) >= lo) & (np.abs(o[:, 0]) < hi)
        if s.sum() >= 3:
            rms = lambda x: np.sqrt(np.mean(np.sum(x ** 2, axis=1)))  # noqa: E731
            observed, predicted = o[s, 1:3], o[s, 3:5]
            print(f"|ζ| {lo}–{hi}: {s.sum():4d} spots, observed slope rms {rms(observed):.3f} "
                  f"px/frame, predicted {rms(predicted):.3f}, "
                  f"residual {rms(observed - predicted):.3f}")
    obs, pred = o[:, 1:3].ravel(), o[:, 3:5].ravel()
    print(f"correlation {np.corrcoef(obs, pred)[0, 1]:.3f}, slope observed/predicted "
          f"{obs @ pred / (pred @ pred):.3f} (below 1: the 5 px window truncates)")
