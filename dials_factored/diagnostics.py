"""Is the fit plausible?  The checks behind the warnings of the log and the report.

A fit can end without an error and still be wrong: the minimiser stopped at its
cap, a width ran away from what the strong spots show, a parameter went far past
its prior, or the outlier test ate the peaks of real spots.  None of these may pass
silently: each becomes one line of ``warnings`` (logged and shown in the report),
and the per-still numbers behind them go into the report's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A parameter further than this many prior σ from the prior mean is implausible.
PRIOR_SIGMAS = 3.0
#: A fitted R1 node this factor below the lowest-resolution node is implausible.
WIDTH_FACTOR = 2.0
#: Masked outlier pixels above this fraction of the foreground pixels is implausible
#: for a detector without many zingers (a few per mille).
OUTLIER_FRACTION = 0.005
#: A still whose G is below this fraction of the median is flagged (beam off the crystal).
LOW_SCALE = 0.05


#: The last cycle's LM that stopped at its cap and lowered the objective by more than this
#: fraction was still on its way: not converged.
STILL_FALLING = 1e-3
#: The objective per residual rising by more than this fraction from one cycle to the next.
OBJECTIVE_RISE = 0.1


def shifts_below(step: dict, tolerance: float) -> bool:
    """Whether a cycle's largest scale shifts (|Δlog G|, and |ΔB| in Å²) are below
    ``refinement.shift_tolerance`` (B: 25 times it)."""
    return step["max_shift_log_g"] < tolerance and step["max_shift_b"] < 25 * tolerance


def _per_residual(step: dict) -> float:
    return step["objective"] / max(step["n_term1"] + step["n_term2"], 1)


@dataclass
class PriorCheck:
    """A global log-parameter and its log-normal prior: name, fitted value, mean, σ."""

    name: str
    value: float
    mean: float
    sigma: float


def fit_warnings(history: list, refinement, priors: list[PriorCheck],
                 r1_fitted: np.ndarray, width_fitted: bool,
                 per_still: dict | None, outliers: int, foreground_pixels: int) -> list[str]:
    """Every implausibility of a finished fit, one sentence each (empty: none found);
    ``refinement`` the PHIL scope (max_iterations, shift_tolerance)."""
    out, max_iterations = [], refinement.max_iterations
    last = history[-1] if history else None
    tolerance = refinement.shift_tolerance
    if last and tolerance > 0 and not shifts_below(last, tolerance):
        out.append(f"the outer cycles did not converge: in the last ({last['cycle']}) some "
                   f"log G still moved by {last['max_shift_log_g']:.4f} and some B by "
                   f"{last['max_shift_b']:.3f} Å² (refinement.shift_tolerance = {tolerance:g}; "
                   f"refinement.n_cycles)")
    if last and last["iterations"] >= max_iterations:
        gain = (last["objective_start"] - last["objective"]) / max(last["objective_start"], 1e-300)
        if gain > STILL_FALLING:
            out.append(f"the fit did not converge: Levenberg-Marquardt stopped at its cap of "
                       f"{max_iterations} iterations in the last cycle with the objective still "
                       f"falling ({gain:.2%} in that cycle; refinement.max_iterations)")
    # cycle 1 weights by the data themselves (no model yet): compare from cycle 2 on
    for before, after in zip(history[1:], history[2:]):
        if _per_residual(after) > _per_residual(before) * (1 + OBJECTIVE_RISE):
            out.append(f"the objective per residual rose from {_per_residual(before):.4g} "
                       f"(cycle {before['cycle']}) to {_per_residual(after):.4g} "
                       f"(cycle {after['cycle']})")
    for p in priors:
        z = (np.log(p.value) - p.mean) / p.sigma
        if abs(z) > PRIOR_SIGMAS:
            out.append(f"{p.name} = {p.value:.4g} is {abs(z):.1f} prior σ from its prior mean "
                       f"{np.exp(p.mean):.4g}")
    if width_fitted and implausible_widths(r1_fitted):
        out.append(f"fitted R1(d) ({' '.join(f'{r:.5f}' for r in r1_fitted)} Å⁻¹, low to high "
                   f"resolution) falls more than {WIDTH_FACTOR:g}× below its low-resolution "
                   f"value: spots do not narrow at high resolution; try profile.fit_width=false")
    if foreground_pixels > 0 and outliers > OUTLIER_FRACTION * foreground_pixels:
        out.append(f"{outliers} outlier pixels were masked, {outliers / foreground_pixels:.2%} "
                   f"of the foreground pixels (more than {OUTLIER_FRACTION:.1%}: real peaks may "
                   f"be taken for outliers)")
    if per_still:
        low = np.flatnonzero(per_still["flag_low_scale"])
        if len(low):
            out.append(f"{len(low)} still(s) have G below {LOW_SCALE:g}× the median (little "
                       f"diffraction, e.g. the beam off the crystal): experiments "
                       f"{', '.join(str(i) for i in low[:10])}{' ...' if len(low) > 10 else ''}")
    return out


def implausible_widths(r1_fitted: np.ndarray) -> bool:
    """Whether an R1 node (Å⁻¹, nodes from low to high resolution) is more than
    ``WIDTH_FACTOR`` below the first.  The width of a spot on the sphere is the sum in
    quadrature of terms that are constant in 1/d (point spread, divergence, domain size)
    and one that grows as η/d (mosaic spread): it never falls with resolution."""
    r1 = np.asarray(r1_fitted)
    return bool(len(r1) and np.any(r1 < r1[0] / WIDTH_FACTOR))


def per_still_table(nodes: list, n_reflections: np.ndarray, outliers_per_still: np.ndarray,
                    foreground_per_still: np.ndarray) -> dict:
    """Per still: G, B, orientation and cell-scale corrections, reflections used and the
    fraction of foreground pixels masked, with a flag for an implausibly low G."""
    g = np.array([n["G"] for n in nodes])
    fg = np.maximum(foreground_per_still, 1)
    return {
        "G": g.tolist(),
        "B": [n["B"] for n in nodes],
        "rotation_x_deg": [n.get("rotation_x_deg", 0.0) for n in nodes],
        "rotation_y_deg": [n.get("rotation_y_deg", 0.0) for n in nodes],
        "cell_scale": [n.get("cell_scale", 0.0) for n in nodes],
        "reflections": np.asarray(n_reflections).tolist(),
        "masked_fraction": (np.asarray(outliers_per_still) / fg).tolist(),
        "flag_low_scale": (g < LOW_SCALE * np.median(g)).tolist(),
    }
