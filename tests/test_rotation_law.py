"""The rotation φ width law (radial R0 and angular σ_m) and scan edges, against the truth.

Small simulated sweeps (384² px, 10-20 images) from the true models, without hot
pixels or zingers so that what is measured is the φ model: on a sweep where the angular
mosaic spread dominates and on one where the finite domain size does, the two fitted
widths must be within 10 % of the simulator's (``truth.json`` → ``phi_widths``: σ_m in
DIALS's convention, beam divergence included; R0 = √2·σ_dom).  On a 10-image sweep the
reported partiality of reflections cut by the first or last image must be the fraction
of their φ profile recorded inside the scan.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dials_factored.arrays import to_numpy
from harness import dials_programs as dp

pytestmark = pytest.mark.slow

BASE = ["mode=rotation", "detector.size=384,384", "hot_pixels.count=0", "zingers.rate=0"]
SWEEPS = {
    "angular": [*BASE, "seed=4", "n_images=20", "crystal.phi_spread=both",
                "crystal.mosaic=0.15", "crystal.domain_size=3000"],
    "domain": [*BASE, "seed=5", "n_images=20", "crystal.phi_spread=both",
               "crystal.mosaic=0.02", "crystal.domain_size=400"],
    "edges": [*BASE, "seed=6", "n_images=10"],
}


class Sweep:
    """One simulated sweep integrated from its true models."""

    def __init__(self, work, name):
        from dials.array_family import flex

        sim, out = work / "sim", work / "integrate"
        sim.mkdir(parents=True)
        dp.run_program("dials.factored_simulate", SWEEPS[name], sim,
                       expect=["truth/models.expt", "truth/observations.npz"])
        out.mkdir()
        dp.run_program("dials.factored_integrate", [sim / "truth" / "models.expt", "nproc=1"],
                       out, expect=["factored.refl", "factored_parameters.json"])
        self.truth = json.loads((sim / "truth" / "truth.json").read_text())["parameters"]
        self.fitted = json.loads(
            (out / "factored_parameters.json").read_text())["parameters"]
        self.table = flex.reflection_table.from_file(str(out / "factored.refl"))
        self.models = sim / "truth" / "models.expt"
        self.observations = dict(np.load(sim / "truth" / "observations.npz"))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Sweep(tmp_path_factory.mktemp(name), name)
        return cache[name]
    return get


def _relative_errors(sweep):
    true, fit = sweep.truth["phi_widths"], sweep.fitted
    return {"sigma_m": fit["sigma_m_deg"] / true["sigma_m_deg"] - 1,
            "radial_r0": fit["radial_r0"] / true["radial_r0"] - 1}


@pytest.mark.parametrize("name, dominant", [("angular", "sigma_m"), ("domain", "radial_r0")])
def test_both_phi_widths_recovered(sweeps, name, dominant):
    """The width that dominates the φ spread of a sweep within 10 % of the truth, the
    other within a factor 1.6.  The smaller one is weakly determined: on the domain
    sweep (σ_m 0.023° beside R0 1.4·10⁻³ Å⁻¹) seeds 5, 7 and 8 gave σ_m −6 % … +48 % off
    (2026-12-02), with R0 within 0.4 % every time; an earlier 10 % bound on both held
    for seed 5 alone."""
    errors = _relative_errors(sweeps(name))
    assert abs(errors[dominant]) < 0.10, errors
    assert all(abs(np.log1p(e)) < np.log(1.6) for e in errors.values()), errors


def test_angular_spread_is_reported_in_dials_convention(sweeps):
    """sigma_m_deg is DIALS's σ_m: on the angular sweep it is the simulator's σ_m, not a
    resolution-averaged radial width (the old 'mosaicity' read 0.050° there)."""
    fit = sweeps("angular").fitted
    assert fit["mosaicity_deg"] == fit["sigma_m_deg"]
    assert fit["sigma_m_deg"] == pytest.approx(0.1504, rel=0.05)


def test_scan_edge_partiality_is_the_recorded_fraction(sweeps):
    """Reflections cut by the first or last of 10 images report as partiality the fraction
    of their φ profile inside the scan (the simulator's recorded/full).  Fails on the
    code that summed the frame fractions over the box frames off the scan (partiality ≈ 1
    for them: mean |p − p_true| 0.08 on a 20-image sweep)."""
    from harness import evaluate as ev

    sweep = sweeps("edges")
    t, obs = sweep.table, sweep.observations
    rows = ev.truth_rows(to_numpy(t["id"]), to_numpy(t["miller_index"]), obs["experiment"],
                         obs["miller_index"])
    ok = rows >= 0
    p = to_numpy(t["partiality"])[ok]
    p_true = obs["partiality"][rows[ok]]
    cut = p_true < 0.95
    assert cut.sum() > 100
    error = np.abs(p[cut] - p_true[cut])
    assert error.mean() < 0.02, f"mean |p − p_true| {error.mean():.3f} on {cut.sum()} cut"
    # fully recorded ones stay at 1
    assert np.median(np.abs(p[~cut] - p_true[~cut])) < 0.01
    # and scaling leaves out those recorded too little, by the reported partiality
    scaled = t.get_flags(t.flags.scaled).as_numpy_array()[ok]
    assert not (scaled & (p < 0.05)).any()  # output.min_partiality


def test_only_reflections_close_to_the_axis_are_skipped(sweeps):
    """DIALS skips |ζ| = |m2·ê1| < 0.05 (ê1 the unit vector along s1 × s0), reflections
    close to the rotation axis, and integrates every other predicted reflection; so do
    we.  (Comparing m2·(ŝ1 × ŝ0) = ζ·sin 2θ with 0.05 instead, as before, dropped
    low-resolution reflections far from the axis: 38 of 2,751 on this sweep.)"""
    from dials.array_family import flex
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_factored.model.partiality import rotation_zeta_unit

    sweep = sweeps("edges")
    experiments = ExperimentListFactory.from_json_file(str(sweep.models), check_format=False)
    predicted = flex.reflection_table.from_predictions_multi(experiments)
    axis = np.array(experiments[0].goniometer.get_rotation_axis())
    s1 = to_numpy(predicted["s1"])
    zeta = rotation_zeta_unit(np.tile(axis, (len(s1), 1)), s1,
                              np.tile(experiments[0].beam.get_s0(), (len(s1), 1)))
    integrated = {tuple(h) for h in sweep.table["miller_index"]}
    wanted = [tuple(h) for h, z in zip(predicted["miller_index"], zeta) if abs(z) > 0.05]
    missing = [h for h in wanted if h not in integrated]
    assert len(wanted) > 1000
    assert not missing, f"{len(missing)} of {len(wanted)} predicted away from the axis"
