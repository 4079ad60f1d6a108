"""The HTML report (``dials.factored_integrate.html``): plotly figures, fully offline.

plotly.js is embedded in the page (no CDN), like the plotting stack DIALS's own
reports use, so the file opens on a beamline machine without network.
"""

from __future__ import annotations

import html
import json

import numpy as np

from dials_factored.arrays import to_numpy


def _figure(div_id: str, traces: list, layout: dict) -> str:
    return (f'<div id="{div_id}" class="plot"></div><script>Plotly.newPlot("{div_id}", '
            f"{json.dumps(traces)}, {json.dumps(layout)});</script>")


def _histogram(values: np.ndarray, bins: int, lo: float, hi: float):
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return 0.5 * (edges[1:] + edges[:-1]), counts


def figures(result, shells) -> list[tuple[str, str]]:
    """(title, html) of every figure of the report."""
    p = result.parameters
    nodes = p["nodes"]
    x = [n["phi"] if p["kind"] == "rotation" else i for i, n in enumerate(nodes)]
    xlabel = "φ (°)" if p["kind"] == "rotation" else "image (experiment)"
    out = []
    out.append(("Scale G and B per image", _figure("gb", [
        {"x": x, "y": [n["G"] for n in nodes], "name": "G", "mode": "lines+markers"},
        {"x": x, "y": [n["B"] for n in nodes], "name": "B (Å²)", "yaxis": "y2",
         "mode": "lines+markers"},
    ], {"xaxis": {"title": xlabel}, "yaxis": {"title": "G"},
        "yaxis2": {"title": "B (Å²)", "overlaying": "y", "side": "right"}})))
    s2 = np.array(p["r1_nodes_inv_d2"])
    d_nodes = (1 / np.sqrt(s2)).round(2).tolist()
    traces = [{"x": s2.tolist(), "y": p["r1_a"], "name": "R1 (a, circumferential)",
               "mode": "lines+markers", "text": d_nodes}]
    if p["r1_b"] != p["r1_a"]:
        traces.append({"x": s2.tolist(), "y": p["r1_b"], "name": "R1 (b, radial)",
                       "mode": "lines+markers"})
    out.append(("Profile width R1 against resolution", _figure("r1", traces, {
        "xaxis": {"title": "1/d² (Å⁻²)"}, "yaxis": {"title": "R1 (Å⁻¹)"}})))
    part = to_numpy(result.table["partiality"])
    c, n = _histogram(part, 40, 0, 1.0)
    width = (f"R0 = {p['r0']:.5f} Å⁻¹" if "r0" in p else
             f"mosaicity = {p['mosaicity_deg']:.4f}°")
    out.append((f"Partiality ({width})", _figure("part", [
        {"x": c.tolist(), "y": n.tolist(), "type": "bar"}],
        {"xaxis": {"title": "partiality"}, "yaxis": {"title": "reflections"}})))
    z = result.diagnostics["z_term1"]
    z = z[np.isfinite(z)]
    c, n = _histogram(z, 60, -6, 6)
    gauss = (len(z) * (c[1] - c[0]) * np.exp(-0.5 * c ** 2) / np.sqrt(2 * np.pi)).tolist()
    rms = float(np.sqrt(np.mean(z ** 2))) if len(z) else float("nan")
    out.append((f"Normalised Term-1 residuals (J − J_model)/σ_J, rms {rms:.2f}", _figure("z", [
        {"x": c.tolist(), "y": n.tolist(), "type": "bar", "name": "observed"},
        {"x": c.tolist(), "y": gauss, "name": "N(0, 1)", "mode": "lines"}],
        {"xaxis": {"title": "z"}, "yaxis": {"title": "reflections"}})))
    out.append(_shells_figure(shells))
    per_image = result.diagnostics["outliers_per_image"]
    out.append(("Masked outlier pixels (hot pixels, zingers) per image", _figure("out", [
        {"x": list(range(len(per_image))), "y": per_image.tolist(), "type": "bar"}],
        {"xaxis": {"title": "image"}, "yaxis": {"title": "pixels"}})))
    return out


def _shells_figure(shells) -> tuple[str, str]:
    """CC½ and ⟨I/σ⟩ by resolution shell (an empty plot, so noted, without scaled data)."""
    labels = [f"{r['d_max']:.2f}-{r['d_min']:.2f}" for r in shells]
    title = "CC½ and ⟨I/σ⟩ against resolution" + ("" if shells else " (no scaled reflections)")
    return title, _figure("cc", [
        {"x": labels, "y": [r["cc_half"] for r in shells], "name": "CC½",
         "mode": "lines+markers"},
        {"x": labels, "y": [r["i_over_sigma"] for r in shells], "name": "⟨I/σ⟩",
         "yaxis": "y2", "mode": "lines+markers"}],
        {"xaxis": {"title": "resolution shell (Å)"}, "yaxis": {"title": "CC½"},
         "yaxis2": {"title": "⟨I/σ⟩", "overlaying": "y", "side": "right"}})


def render(result, shells, title: str = "dials.factored_integrate") -> str:
    """The whole page as a string."""
    from plotly.offline import get_plotlyjs

    p = result.parameters
    rows = "".join(
        f"<tr><td>{h['cycle']}</td><td>{h['objective']:.6g}</td><td>{h['iterations']}</td>"
        f"<td>{h['n_term1']}</td><td>{h['n_term2']}</td><td>{h['outlier_pixels']}</td>"
        f"<td>{h['max_shift_log_g']:.4f}</td><td>{h['max_shift_b']:.3f}</td>"
        f"<td>{h['max_shift_over_sigma']:.3g}</td></tr>"
        for h in result.history)
    corr = p.get("correlation")
    corr_html = ""
    if corr:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in corr["parameters"])
        body = "".join(
            "<tr><th>" + html.escape(n) + "</th>" + "".join(f"<td>{v:+.3f}</td>" for v in row)
            + "</tr>" for n, row in zip(corr["parameters"], corr["matrix"]))
        corr_html = (f"<h2>Parameter correlations (final fit)</h2><table><tr><th></th>{head}"
                     f"</tr>{body}</table>")
    figs = "".join(f"<h2>{html.escape(t)}</h2>{f}" for t, f in figures(result, shells))
    warnings = p.get("warnings", [])
    warn_html = ("<h2>Warnings</h2><ul class='warn'>"
                 + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
                 if warnings else "<p>Plausibility checks passed (convergence, priors, widths, "
                 "outliers).</p>")
    still_html = (_per_still_table(result.diagnostics.get("per_still"))
                  + _partiality_table(p.get("partiality_check")))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script>{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.plot{{height:380px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(result.table)} reflections; {p['kind']} data; {p.get('outlier_pixels', 0)} outlier
pixels masked.</p>
{warn_html}
<h2>Fit history</h2>
<table><tr><th>cycle</th><th>objective</th><th>LM iterations</th><th>Term 1 refl.</th>
<th>Term 2 refl.</th><th>new outlier px</th><th>max |Δlog G|</th><th>max |ΔB|</th>
<th>max shift/σ</th></tr>
{rows}</table>
{corr_html}
{still_html}
{figs}
</body></html>
"""


def _per_still_table(per_still: dict | None) -> str:
    """The per-still diagnostics (stills only) as an HTML table; implausible rows marked."""
    if not per_still:
        return ""
    rows = []
    for i, g in enumerate(per_still["G"]):
        flag = " style='background:#fdd'" if per_still["flag_low_scale"][i] else ""
        rows.append(
            f"<tr{flag}><td>{i}</td><td>{g:.3f}</td><td>{per_still['B'][i]:.2f}</td>"
            f"<td>{per_still['rotation_x_deg'][i]:+.3f}</td>"
            f"<td>{per_still['rotation_y_deg'][i]:+.3f}</td>"
            f"<td>{100 * per_still['cell_scale'][i]:+.2f}</td>"
            f"<td>{per_still['reflections'][i]}</td>"
            f"<td>{100 * per_still['masked_fraction'][i]:.2f}</td></tr>")
    return ("<h2>Per still</h2><table><tr><th>experiment</th><th>G</th><th>B (Å²)</th>"
            "<th>δθx (°)</th><th>δθy (°)</th><th>cell scale (%)</th><th>reflections used</th>"
            "<th>foreground px masked (%)</th></tr>" + "".join(rows) + "</table>")


def _partiality_table(rows: list | None) -> str:
    """The stills partiality check (:mod:`.partiality_check`) as a table."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{r['d_max']:.2f}–{r['d_min']:.2f}</td><td>{r['p_min']:g}–{r['p_max']:g}</td>"
        f"<td>{r['n']}</td><td>{r['median_ratio']:.3f}</td><td>{r['rms_z']:.2f}</td></tr>"
        for r in rows)
    return ("<h2>Partialities against the nearly full observations</h2><p>Median full "
            "intensity of flank observations over that of the same reflection's observations "
            "at p ≥ 0.7 (1 if the partialities are right), and rms z.</p><table><tr><th>d (Å)"
            "</th><th>model p</th><th>n</th><th>median ratio</th><th>rms z</th></tr>"
            f"{body}</table>")
