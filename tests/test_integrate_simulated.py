"""dials.factored_integrate on simulated stills and a rotation sweep, against the truth.

The simulator (an independent Monte-Carlo photon model, not our Gaussian template)
writes images and the true models; we integrate from the true models, so that these
tests measure the estimator, not indexing.  Checked: correlation of the merged
intensities with the truth and with what an ideal estimator reaches, calibration of σ
(z = (I − k·I_true)/σ per observation, hot pixels and zingers included), recovery of the
per-image scales, the decoupling of G and R1, and reference vs bootstrap.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dials_factored import dials_programs as dp
from dials_factored import evaluate as ev
from dials_factored.arrays import to_numpy

pytestmark = pytest.mark.slow

SIM = {
    "stills": ["mode=stills", "seed=7", "n_images=60", "detector.size=768,768"],
    "rotation": ["mode=rotation", "seed=7", "n_images=30", "detector.size=768,768"],
}


class Run:
    """One simulation and one integration of it, with the truth joined to the output."""

    def __init__(self, workdir, mode, *integrate_args):
        sim = workdir / "sim"
        if not (sim / "truth" / "models.expt").is_file():
            sim.mkdir(parents=True, exist_ok=True)
            dp.run_program("dials.factored_simulate", SIM[mode], sim,
                           expect=["truth/models.expt", "truth/observations.npz"])
        self.sim = sim
        name = "_".join(a.split("=")[0].split(".")[-1] for a in integrate_args
                        if "bandwidth" not in a) or "default"
        out = workdir / name
        out.mkdir()
        dp.run_program("dials.factored_integrate",
                       [sim / "truth" / "models.expt", *integrate_args], out,
                       expect=["factored.refl", "factored_parameters.json"])
        from dials.array_family import flex

        table = flex.reflection_table.from_file(str(out / "factored.refl"))
        self.table = table.select(table.get_flags(table.flags.scaled))
        self.parameters = json.loads((out / "factored_parameters.json").read_text())["parameters"]
        self.truth = dict(np.load(sim / "truth" / "observations.npz"))
        self.truth_json = json.loads((sim / "truth" / "truth.json").read_text())
        rows = ev.truth_rows(to_numpy(self.table["id"]), to_numpy(self.table["miller_index"]),
                             self.truth["experiment"], self.truth["miller_index"])
        self.table = self.table.select(flex.bool((rows >= 0).tolist()))
        self.rows = rows[rows >= 0]

    def scaled(self):
        """Per observation: I/g, σ/g and the true intensity."""
        isf = to_numpy(self.table["inverse_scale_factor"])
        value = to_numpy(self.table["intensity.scale.value"]) / isf
        sigma = np.sqrt(to_numpy(self.table["intensity.scale.variance"])) / isf
        return value, sigma, self.truth["i_true"][self.rows]

    def z(self):
        """z = (I − k·exp(b/4d²)·I_true)/σ with one overall k and B-factor b.

        Without an external reference the data's overall scale and B are free (the
        gauge of the bootstrap), so both are fitted by weighted least squares on
        log(I/I_true) of the reflections with I_true/σ > 5.
        """
        value, sigma, true = self.scaled()
        lever = 1.0 / (4.0 * to_numpy(self.table["d"]) ** 2)
        strong = (true > 5 * sigma) & (value > 0)
        w = np.sqrt((true[strong] / sigma[strong]) ** 2)
        design = np.column_stack([np.ones(strong.sum()), lever[strong]]) * w[:, None]
        coef = np.linalg.lstsq(design, np.log(value[strong] / true[strong]) * w, rcond=None)[0]
        k = np.exp(coef[0] + coef[1] * lever)
        return (value - k * true) / sigma

    def symmetry(self):
        """The true crystal symmetry."""
        from dxtbx.model.experiment_list import ExperimentListFactory

        from dials_factored.merging import symmetry_of

        return symmetry_of(ExperimentListFactory.from_json_file(
            str(self.sim / "truth" / "models.expt"), check_format=False))

    def merged_cc(self):
        """CC of the inverse-variance merged intensities with the truth, and n unique."""
        from dials_factored.merging import asu_groups, weighted_mean

        value, sigma, true = self.scaled()
        _, group = asu_groups(self.table["miller_index"], self.symmetry())
        mean, _ = weighted_mean(group, value, sigma ** 2)
        true_mean = np.zeros(len(mean))
        true_mean[group] = true  # symmetry mates share I_true
        return float(np.corrcoef(mean, true_mean)[0, 1]), len(mean)


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("stills"), "stills", "beam.bandwidth=0.002")


@pytest.fixture(scope="module")
def stills_with_reference(stills):
    return Run(stills.sim.parent, "stills", "beam.bandwidth=0.002",
               f"reference={stills.sim / 'truth' / 'truth.mtz'}")


@pytest.fixture(scope="module")
def rotation(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("rotation"), "rotation")


def test_stills_sigma_is_calibrated(stills):
    z = stills.z()
    assert len(z) > 2000
    rms = float(np.sqrt(np.mean(z ** 2)))
    robust = float(1.4826 * np.median(np.abs(z - np.median(z))))
    assert 0.9 <= rms <= 1.1, f"rms z {rms:.3f}"
    assert 0.9 <= robust <= 1.1, f"robust rms z {robust:.3f}"


def test_stills_merged_intensities_correlate_with_truth(stills):
    cc, n = stills.merged_cc()
    assert n > 1000
    assert cc > 0.9, f"CC to truth {cc:.3f}"


def test_stills_scales_recovered_and_decoupled_from_width(stills):
    g_fit = np.array([n["G"] for n in stills.parameters["nodes"]])
    g_true = np.array(stills.truth_json["per_image"]["G"])
    assert np.corrcoef(np.log(g_fit), np.log(g_true))[0, 1] >= 0.98
    corr = np.array(stills.parameters["correlation"]["matrix"])
    assert abs(corr[0, 2]) < 0.1  # log G vs log R1


def test_stills_close_to_the_ideal_estimator(stills):
    """The merged CC is within 2 % of what an estimator knowing every truth reaches.

    The ideal merges, for the same unique reflections, every simulated observation with
    its Fisher variance (counting noise only, true profile, scale and partiality).
    """
    from dials.array_family import flex

    from dials_factored.merging import asu_groups

    cc, _ = stills.merged_cc()
    truth = stills.truth
    rows = np.unique(stills.rows)
    var = truth["ideal_variance"][rows]
    hkl = flex.miller_index([tuple(int(v) for v in h) for h in truth["miller_index"][rows]])
    _, group = asu_groups(hkl, stills.symmetry())
    info = np.bincount(group, weights=np.where(np.isfinite(var), 1 / var, 0.0))
    true_mean = np.zeros(len(info))
    true_mean[group] = truth["i_true"][rows]
    spread = np.sum((true_mean - true_mean.mean()) ** 2)
    ideal = np.sqrt(spread / (spread + np.sum(1 / info[info > 0])))
    assert cc >= 0.98 * ideal, f"CC {cc:.4f} vs ideal {ideal:.4f}"


def test_bootstrap_agrees_with_an_external_reference(stills, stills_with_reference):
    cc_boot, _ = stills.merged_cc()
    cc_ref, _ = stills_with_reference.merged_cc()
    assert abs(cc_boot - cc_ref) < 0.005, f"bootstrap {cc_boot:.4f}, reference {cc_ref:.4f}"


def test_rotation_sigma_is_calibrated_and_cc_high(rotation):
    z = rotation.z()
    assert len(z) > 1000
    rms = float(np.sqrt(np.mean(z ** 2)))
    assert 0.9 <= rms <= 1.1, f"rms z {rms:.3f}"
    cc, _ = rotation.merged_cc()
    assert cc > 0.95, f"CC to truth {cc:.3f}"
