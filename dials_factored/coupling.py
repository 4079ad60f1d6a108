"""The measured coupling of the scales to the profile width (refinement.measure_g_r1_coupling).

Seed §5 claims the factored objective has no G–R1 block; this measures the coupling
that goes through the pixels instead of reading it off the normal matrix.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dials_factored.fit import FactoredTarget, minimise


def g_r1_coupling(x, obs, layout, priors, max_iterations, recompute, reference,
                  factors=(0.8, 1.2)) -> dict:
    """Measured coupling of the scales to the profile width, d log G / d log R1.

    Inside one LM the amplitudes J are fixed numbers, so the normal matrix has no
    G–R1 block (their correlation is 0 by construction).  The real coupling goes
    through the pixels: a wider template gives other J.  For each factor f every
    R1 node is scaled by f, J and σ_J are recomputed from the pixels
    (``recompute(x) -> cycle_pass statistics``, no new outliers), I_ref from them
    (``reference(x, j, var_j)``) and G, B, R0, η (and the still orientations) are
    refitted by one LM with Term 2 off (the widths held; Term 1 has no R1).  The
    central difference over log f of log G (dimensionless) and B (Å²) per node is
    returned as median and max |·|, with the per-node values.
    """
    fitted = []
    for f in factors:
        xs = x.copy()
        for block in (layout.log_r1a, layout.log_r1b):
            xs[block] += np.log(f)
        stats = recompute(xs)
        j, var_j = stats["j"], stats["var_j"]
        sigma_j = np.sqrt(var_j)
        i_ref = reference(xs, j, var_j)
        o = replace(obs, j=j, sigma_j=sigma_j, i_ref=i_ref,
                    use1=obs.use1 & np.isfinite(j) & np.isfinite(sigma_j) & (sigma_j > 0)
                    & np.isfinite(i_ref), use2=np.zeros_like(obs.use2),
                    use_z=np.zeros_like(obs.use_z))
        fitted.append(minimise(FactoredTarget(o, layout, priors), xs, max_iterations)[0])
    step = np.log(factors[1] / factors[0])
    dlogg = (fitted[1][layout.log_g] - fitted[0][layout.log_g]) / step
    db = (fitted[1][layout.b] - fitted[0][layout.b]) / step
    return {
        "factors": list(factors),
        "n_nodes": len(dlogg),
        "dlogg_dlogr1_median": float(np.median(dlogg)),
        "dlogg_dlogr1_max_abs": float(np.max(np.abs(dlogg))),
        "db_dlogr1_median": float(np.median(db)),
        "db_dlogr1_max_abs": float(np.max(np.abs(db))),
        "dlogg_dlogr1": dlogg.tolist(),
    }
