"""The model variance at low background and with read noise (issue 18, items 1 and 2).

Stills at 0.05 photons/pixel of background (most pixels zero), once photon counting
and once on an integrating detector (gain 10 ADU/photon, Gaussian read noise 0.3
photons, negative pixel values).  z = (J − E)/σ_J of the profile-fitted amplitude
against the truth's expected photons E of the observation, for the weak observations
(E < 10 photons) where the variance law decides σ: a floor of one count on the
pixel variance made σ_J 1.3–2× too large there (robust σ of z 0.75), ignoring the
read noise makes it too small.  The robust σ of z (median |z|/0.6745) is used: with a
few photons the z of a single observation is discrete and its tails follow the error
of J_model, which the weights (not the truth) use.

Over *all* observations the rms of z must be 0.9–1.1 in every resolution shell (issue
18's acceptance).  On the code before the hot-pixel mask and the shell-mean variance
of unreferenced observations it was 1.43 (photon counting) and 1.42 (read noise),
1.7–1.9 at low resolution: two spots with a hot pixel on their peak (z 57, 67) and
weak observations of reflections with no other observation, whose σ came from their
own (low) J.
"""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.arrays import to_numpy
from harness import dials_programs as dp
from harness import evaluate as ev

pytestmark = pytest.mark.slow

LOW_BACKGROUND = ["mode=stills", "seed=3", "n_images=40", "detector.size=512,512",
                  "background.constant=0.05", "background.inner=0", "background.ring=0"]
READ_NOISE = ["detector.gain=10", "detector.read_noise=0.3"]


def observation_z(workdir, simulate_args, integrate_args):
    """z of every observation's J against the truth, its resolution and its expected
    photons E (observations with a finite variance)."""
    from dials.array_family import flex

    sim, out = workdir / "sim", workdir / "out"
    sim.mkdir()
    out.mkdir()
    dp.run_program("dials.factored_simulate", simulate_args, sim,
                   expect=["truth/models.expt", "truth/observations.npz"])
    dp.run_program("dials.factored_integrate", [sim / "truth" / "models.expt",
                                                "beam.bandwidth=0.002", *integrate_args],
                   out, expect=["factored.refl"])
    table = flex.reflection_table.from_file(str(out / "factored.refl"))
    truth = dict(np.load(sim / "truth" / "observations.npz"))
    rows = ev.truth_rows(to_numpy(table["id"]), to_numpy(table["miller_index"]),
                         truth["experiment"], truth["miller_index"])
    ok = rows >= 0
    # J in recorded counts: prf is the full-reflection estimate J/p (DIALS's meaning)
    p = to_numpy(table["partiality"])[ok]
    j = to_numpy(table["intensity.prf.value"])[ok] * p
    var = to_numpy(table["intensity.prf.variance"])[ok] * p ** 2
    expected = truth["expected_counts"][rows[ok]]
    fin = np.isfinite(var)
    z = (j - expected) / np.sqrt(var)
    return z[fin], to_numpy(table["d"])[ok][fin], expected[fin]


def resolution_trend(workdir):
    """Change of log(I/I_true) over the 1/d² range (least-squares line) of the strong
    observations' scaled intensities I = intensity.scale/inverse_scale_factor."""
    from dials.array_family import flex

    table = flex.reflection_table.from_file(str(workdir / "out" / "factored.refl"))
    truth = dict(np.load(workdir / "sim" / "truth" / "observations.npz"))
    rows = ev.truth_rows(to_numpy(table["id"]), to_numpy(table["miller_index"]),
                         truth["experiment"], truth["miller_index"])
    ok = rows >= 0
    g = to_numpy(table["inverse_scale_factor"])[ok]
    i = to_numpy(table["intensity.scale.value"])[ok] / g
    sigma = np.sqrt(to_numpy(table["intensity.scale.variance"])[ok]) / g
    i_true = truth["i_true"][rows[ok]]
    x = 1 / to_numpy(table["d"])[ok] ** 2
    strong = (i > 10 * sigma) & (to_numpy(table["partiality"])[ok] > 0.3) & (i_true > 0)
    slope = np.polyfit(x[strong], np.log(i[strong] / i_true[strong]), 1)[0]
    return slope * np.ptp(x[strong])


def check_rms_by_shell(z, d, n_shells=5):
    """rms z of all observations in 0.9–1.1 in each of ``n_shells`` equal-count shells."""
    edges = np.quantile(d, np.linspace(0, 1, n_shells + 1))
    for lo, hi in zip(edges[:-1], edges[1:]):
        rms = np.sqrt(np.mean(z[(d >= lo) & (d <= hi)] ** 2))
        assert 0.9 < rms < 1.1, f"d {lo:.2f}–{hi:.2f} Å: rms z {rms:.3f} (all observations)"


def check_calibrated(z, d):
    robust = np.median(np.abs(z)) / 0.6745
    assert len(z) > 1000
    assert 0.9 < robust < 1.1, f"robust σ of z {robust:.3f} (rms {np.sqrt(np.mean(z**2)):.3f})"
    edges = np.quantile(d, [0, 1 / 3, 2 / 3, 1])
    for lo, hi in zip(edges[:-1], edges[1:]):
        shell = z[(d >= lo) & (d <= hi)]
        r = np.median(np.abs(shell)) / 0.6745
        assert 0.85 < r < 1.15, f"d {lo:.2f}–{hi:.2f} Å: robust σ of z {r:.3f}"
    assert np.sqrt(np.mean(z ** 2)) < 1.35  # the tails: J_model errors of weak spots


def test_low_background_photon_counting_sigma(tmp_path):
    """Fails with the one-count floor on v (robust σ of z 0.75), and (rms by shell)
    without the stills hot-pixel mask."""
    z, d, expected = observation_z(tmp_path, LOW_BACKGROUND, [])
    weak = expected < 10  # where the variance law decides σ
    check_calibrated(z[weak], d[weak])
    check_rms_by_shell(z, d)
    # the stills normalisation (docs/conventions.md): simulator and model share L = 1, so
    # the scaled intensities have no resolution trend against the truth (0.04 measured);
    # with the kinematic 1/R(d) on one side only it would be log L(1.8 Å) ≈ −0.35
    assert abs(resolution_trend(tmp_path)) < 0.1


def test_read_noise_sigma(tmp_path):
    """Integrating detector: negative pixel values kept and σ_read² in the variance."""
    z, d, expected = observation_z(tmp_path, LOW_BACKGROUND + READ_NOISE,
                                   ["detector.gain=10", "detector.read_noise=0.3"])
    weak = expected < 10
    check_calibrated(z[weak], d[weak])
    check_rms_by_shell(z, d)
