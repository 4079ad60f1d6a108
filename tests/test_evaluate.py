"""Scoring against truth on synthetic Miller arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cctbx import crystal, miller, sgtbx
from cctbx.array_family import flex

from harness import evaluate as ev


def make_truth(space_group="P212121", cell=(30, 40, 50, 90, 90, 90), d_min=2.0, seed=1):
    """Unique asu intensities drawn from a Wilson (exponential) distribution."""
    symmetry = crystal.symmetry(unit_cell=cell, space_group_symbol=space_group)
    indices = miller.build_set(symmetry, anomalous_flag=False, d_min=d_min)
    rng = np.random.default_rng(seed)
    data = rng.exponential(1000.0, indices.size())
    return ev.prepare_truth(indices.array(data=flex.double(data)))


def with_data(array, data, sigmas=None):
    return array.customized_copy(
        data=flex.double(np.asarray(data, dtype=float)),
        sigmas=None if sigmas is None else flex.double(np.asarray(sigmas, dtype=float)))


def expected_cc(i_true, noise_variance):
    return math.sqrt(np.var(i_true) / (np.var(i_true) + noise_variance))


@pytest.fixture(scope="module")
def truth():
    return make_truth()


@pytest.fixture(scope="module")
def shells(truth):
    return ev.Shells(truth.d_spacings().data(), 10)


def test_shells_have_equal_counts_and_cover_the_truth(truth, shells):
    which = shells.assign(truth.d_spacings().data().as_numpy_array())
    counts = np.bincount(which[which >= 0], minlength=len(shells))
    assert (which >= 0).all()
    assert counts.max() - counts.min() <= 0.02 * truth.size()
    d_ranges = [shells.d_range(i) for i in range(len(shells))]
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(d_ranges, d_ranges[1:]))
    assert d_ranges[-1][1] == pytest.approx(truth.d_min(), rel=1e-6)


def test_exact_copy_scores_one_and_full_completeness(truth, shells):
    score = ev.score_merged(with_data(truth, truth.data(), np.full(truth.size(), 10.0)),
                            truth, shells)
    assert score.overall.cc == pytest.approx(1.0)
    assert score.overall.completeness == pytest.approx(1.0)
    assert all(s.completeness == pytest.approx(1.0) for s in score.shells)
    assert score.overall.mean_i_over_sigma == pytest.approx(np.mean(truth.data()) / 10)


def test_noise_gives_the_predicted_cc(truth, shells):
    rng = np.random.default_rng(2)
    i_true = truth.data().as_numpy_array()
    sigma = 700.0
    noisy = with_data(truth, i_true + rng.normal(0, sigma, i_true.size),
                      np.full(i_true.size, sigma))
    score = ev.score_merged(noisy, truth, shells)
    assert score.overall.cc == pytest.approx(expected_cc(i_true, sigma**2), abs=0.02)


def test_half_the_reflections_give_half_completeness(truth, shells):
    rng = np.random.default_rng(3)
    subset = truth.select(flex.bool(rng.random(truth.size()) < 0.5))
    score = ev.score_merged(subset, truth, shells)
    assert score.overall.n_matched == subset.size()
    assert score.overall.completeness == pytest.approx(subset.size() / truth.size())
    assert all(abs(s.completeness - 0.5) < 0.1 for s in score.shells)


def test_permuted_intensities_correlate_about_zero(truth, shells):
    rng = np.random.default_rng(4)
    shuffled = with_data(truth, rng.permutation(truth.data().as_numpy_array()))
    assert abs(ev.score_merged(shuffled, truth, shells).overall.cc) < 0.1


def test_other_setting_and_flipped_signs_are_matched(truth, shells):
    # the same data indexed with a and b swapped (cell 40, 30, 50) and the hand inverted
    op = sgtbx.change_of_basis_op("k,h,-l")
    other = truth.change_basis(op)
    assert other.unit_cell().parameters()[:3] == pytest.approx((40, 30, 50))
    flipped = other.customized_copy(indices=-other.indices())
    score = ev.score_merged(flipped, truth, shells)
    assert score.overall.cc == pytest.approx(1.0)
    assert score.overall.completeness == pytest.approx(1.0)
    back = flipped.change_basis(sgtbx.change_of_basis_op(score.reindex))
    assert back.unit_cell().is_similar_to(truth.unit_cell())


def test_merohedral_ambiguity_is_resolved():
    truth = make_truth("P4", (40, 40, 60, 90, 90, 90), d_min=2.5)
    shells = ev.Shells(truth.d_spacings().data(), 5)
    twinned = truth.change_basis(sgtbx.change_of_basis_op("k,h,-l"))  # the P4 twin law
    assert [op.as_hkl() for op in ev.candidate_reindex_ops(twinned, truth)]
    score = ev.score_merged(twinned, truth, shells)
    assert score.overall.cc == pytest.approx(1.0)
    assert score.reindex != "h,k,l"


def test_unrelated_cell_is_refused(truth):
    other = make_truth(cell=(35, 45, 60, 90, 90, 90), d_min=3.0)
    with pytest.raises(ValueError, match="does not match the truth"):
        ev.candidate_reindex_ops(other, truth)


def observations_of(truth, multiplicity, sigma, scale=1.0, seed=5):
    """``multiplicity`` noisy observations per reflection, sign-flipped half the time."""
    rng = np.random.default_rng(seed)
    indices = np.repeat(np.array(truth.indices()), multiplicity, axis=0)
    indices *= rng.choice([-1, 1], size=(len(indices), 1))
    i_true = np.repeat(truth.data().as_numpy_array(), multiplicity)
    obs = miller.set(truth.crystal_symmetry(), flex.miller_index([tuple(map(int, h)) for h in
                                                                  indices]),
                     anomalous_flag=False)
    data = scale * i_true + rng.normal(0, sigma, i_true.size)
    return obs.array(data=flex.double(data), sigmas=flex.double(np.full(i_true.size, sigma)))


def test_cc_half_and_z_from_unmerged_observations(truth, shells):
    sigma = 800.0
    observations = observations_of(truth, multiplicity=2, sigma=sigma, scale=3.0)
    merged = observations.map_to_asu().merge_equivalents().array()
    score = ev.score_merged(merged, truth, shells, unmerged=observations)
    i_true = 3.0 * truth.data().as_numpy_array()
    # one observation per half: CC1/2 = var(I) / (var(I) + σ²)
    assert score.overall.cc_half == pytest.approx(
        np.var(i_true) / (np.var(i_true) + sigma**2), abs=0.03)
    assert score.z["k"] == pytest.approx(3.0, rel=0.02)
    assert score.z["rms"] == pytest.approx(1.0, abs=0.05)
    assert abs(score.z["mean"]) < 0.05
    assert score.z["n"] == observations.size()
    assert all(s.z_rms == pytest.approx(1.0, abs=0.15) for s in score.shells)


def test_z_does_not_count_the_absolute_b_as_an_error(truth, shells):
    """An overall B of the observations against the truth is a gauge (mean B over the
    stills), not a σ error: with k alone, z carried it as a bias growing with 1/d²."""
    sigma, b_offset = 100.0, 2.0
    observations = observations_of(truth, multiplicity=2, sigma=sigma, scale=1.0, seed=8)
    s2 = 1 / (4 * observations.d_spacings().data().as_numpy_array() ** 2)
    offset = observations.customized_copy(data=observations.data() * flex.double(
        np.exp(-b_offset * s2)))
    merged = offset.map_to_asu().merge_equivalents().array()
    score = ev.score_merged(merged, truth, shells, unmerged=offset)
    assert all(s.z_rms == pytest.approx(1.0, abs=0.15) for s in score.shells)
    assert score.z["b_gauge"] == pytest.approx(b_offset, abs=0.2)


def test_ideal_cc_predicts_the_cc_of_merged_noisy_observations(truth, shells):
    sigma, multiplicity = 1500.0, 3
    observations = observations_of(truth, multiplicity, sigma, seed=6)
    variances = np.full(observations.size(), sigma**2)
    ideal = ev.ideal_score(truth, np.array(observations.indices()), variances, shells)
    i_true = truth.data().as_numpy_array()
    assert ideal.overall.cc == pytest.approx(expected_cc(i_true, sigma**2 / multiplicity),
                                             abs=0.005)
    assert ideal.overall.completeness == pytest.approx(1.0)
    merged = observations.map_to_asu().merge_equivalents().array()
    actual = ev.score_merged(merged, truth, shells)
    for predicted, got in zip(ideal.shells, actual.shells):
        assert got.cc == pytest.approx(predicted.cc, abs=0.08)


def test_ideal_cc_ignores_unobserved_and_invalid_observations(truth, shells):
    half = truth.select(flex.bool(truth.size(), True).set_selected(
        flex.size_t(range(0, truth.size(), 2)), False))
    indices = np.array(half.indices())
    variances = np.full(len(indices), 100.0)
    variances[:10] = np.nan
    ideal = ev.ideal_score(truth, indices, variances, shells)
    assert ideal.overall.n_matched == half.size() - 10
    assert ideal.overall.completeness == pytest.approx((half.size() - 10) / truth.size())


def test_mtz_round_trip_picks_imean(truth, tmp_path):
    path = tmp_path / "merged.mtz"
    array = with_data(truth, truth.data(), np.ones(truth.size()))
    array.set_observation_type_xray_intensity()
    array.as_mtz_dataset(column_root_label="IMEAN").mtz_object().write(str(path))
    read = ev.read_mtz_intensities(path)
    assert read.info().labels[0] == "IMEAN"
    assert read.size() == truth.size()
    with pytest.raises(ValueError, match="no intensity column"):
        ev.read_mtz_intensities(path, label="FOO")


def test_read_scaled_table_applies_scales_and_filters(shared_data, tmp_path):
    from dials.array_family import flex as dflex

    source = shared_data / "stills_thermolysin_cspad" / "processed_ssx"
    table = dflex.reflection_table.from_file(str(source / "integrated.refl"))
    table = table.select(table.get_flags(table.flags.integrated_sum))
    table["intensity.scale.value"] = table["intensity.sum.value"]
    table["intensity.scale.variance"] = table["intensity.sum.variance"]
    table["inverse_scale_factor"] = dflex.double(table.size(), 2.0)
    table["partiality"] = dflex.double(table.size(), 1.0)
    bad = dflex.bool(table.size(), False)
    bad[0] = True
    table.set_flags(bad, table.flags.bad_for_scaling)
    table.as_file(str(tmp_path / "scaled.refl"))
    unmerged = ev.read_scaled_table(source / "integrated.expt", tmp_path / "scaled.refl")
    assert 0 < unmerged.size() < table.size()
    ok = table["intensity.sum.variance"] > 0
    assert flex.max(unmerged.data()) == pytest.approx(
        flex.max(table["intensity.sum.value"].select(ok)) / 2.0)
    assert unmerged.space_group_info().type().number() == 178  # P6122


def test_format_table_has_one_column_per_route_and_the_ratio(truth, shells):
    rng = np.random.default_rng(7)
    i_true = truth.data().as_numpy_array()
    scores = {name: ev.score_merged(with_data(truth, i_true + rng.normal(0, s, i_true.size)),
                                    truth, shells)
              for name, s in (("dials", 1500.0), ("factored", 500.0))}
    ideal = ev.ideal_score(truth, np.array(truth.indices()), np.full(truth.size(), 1e4), shells)
    table = ev.format_table(scores, ideal=ideal, ratio=("factored", "dials"))
    lines = table.splitlines()
    assert lines[0] == ("| d (Å) | CC dials | CC factored | CC ideal | factored/dials "
                        "| compl. dials | compl. factored | observed |")
    assert len(lines) == 2 + len(shells) + 1
    assert lines[-1].startswith("| **overall** |")
    ratio = scores["factored"].overall.cc / scores["dials"].overall.cc
    assert f"**{ratio:.2f}**" in lines[-1]
    assert ev.Score.as_dict(scores["dials"])["overall"]["cc"] == pytest.approx(
        scores["dials"].overall.cc)
