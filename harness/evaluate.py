"""Score merged or scaled intensities against the true intensities of a simulation.

Conventions (all numbers in the report follow them):

* **Matching.** Both sides are made non-anomalous, mapped to the asymmetric unit of the
  truth's space group and matched by Miller index (``common_sets``).  Indexing may pick
  another setting of the same lattice (axes permuted, a merohedral twin law); every
  change of basis that maps the data's cell onto the truth's cell
  (``uctbx.unit_cell.similarity_transformations``) and keeps the Laue group is tried and
  the one with the highest CC to truth is kept (reported as ``reindex``).  Sign flips
  (h → −h, the hand of the indexing) are absorbed by the Friedel-merged asu mapping.
* **Shells.** Equal-count shells in d of the truth set (default 10, low resolution
  first); completeness is matched / truth reflections in the shell.
* **CC** is the Pearson correlation of matched intensities with the true ones.
* **z** (per observation, scaled tables only): ``z = (I/g − k·I_true) / (σ/g)`` with the
  inverse scale factor g of each observation and one overall scale k fitted by weighted
  least squares; ideal data give mean 0 and rms 1.
* **CC1/2** is computed here from the scaled table, not parsed from dials.merge (whose
  JSON report crashes on small sets): the observations of each unique reflection are
  randomly split into two halves (seed fixed; the odd one out goes to a random half),
  each half is averaged without weights, and the halves are correlated per shell over
  reflections measured in both.
* **Ideal CC** is the correlation an ideal estimator reaches, one that knows the true
  scales, partialities and profiles so its only errors are photon counting and
  background: with per-observation variances v_i (in units of I_true) its merged
  estimate of reflection j is I_j + e_j with Var(e_j) = V_j = 1/Σ_i 1/v_i, independent of
  I_j.  Over the n observed reflections of a shell, with S = Σ_j (I_j − Ī)²,
  E[cov] = S/n and E[var] = (S + (1 − 1/n)·Σ_j V_j)/n, so
  ``CC_ideal = sqrt(S / (S + (1 − 1/n) Σ_j V_j))`` (the ratio of the expectations; its
  bias is O(1/n)).  Its completeness is the fraction of truth reflections observed at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from cctbx import miller, sgtbx
from cctbx.array_family import flex

from dials_factored.arrays import miller_keys
from dials_factored.statistics import half_means

#: Intensity labels tried, in order, when none is given.
INTENSITY_LABELS = ("IMEAN", "I", "ICALC", "IOBS")


@dataclass
class ShellStats:
    """Statistics of one resolution shell (or of all shells, ``overall``)."""

    d_max: float
    d_min: float
    n_ref: int
    n_matched: int
    completeness: float
    cc: float
    mean_i_over_sigma: float
    cc_half: float = math.nan
    z_rms: float = math.nan


@dataclass
class Score:
    """A data set scored against truth: per shell and overall, plus z statistics."""

    shells: list[ShellStats]
    overall: ShellStats
    reindex: str = "h,k,l"
    z: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain data for JSON (NaN becomes None)."""
        return without_nan(asdict(self))


def without_nan(x):
    """``x`` (nested dicts, lists, tuples) with NaN and infinities as None, for JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: without_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [without_nan(v) for v in x]
    return x


# --------------------------------------------------------------------------- reading


def read_mtz_intensities(path, label: str | None = None) -> miller.array:
    """An intensity array from an MTZ: column ``label``, else the first of INTENSITY_LABELS."""
    from iotbx.reflection_file_reader import any_reflection_file

    arrays = {a.info().labels[0]: a
              for a in any_reflection_file(str(path)).as_miller_arrays(merge_equivalents=False)}
    for name in (label,) if label else INTENSITY_LABELS:
        if name in arrays:
            return arrays[name]
    raise ValueError(f"{path}: no intensity column {label or INTENSITY_LABELS}; "
                     f"has {sorted(arrays)}")


def read_scaled_table(expt, refl, partiality_threshold: float = 0.4) -> miller.array:
    """Unmerged scaled intensities I/g, σ/g of a dials.scale or dials.factored_integrate run.

    Filtered exactly as dials.merge does (``bad_for_scaling``, g > 0, partials combined,
    ``partiality > partiality_threshold``), on the median cell of the experiments.
    """
    from dials.array_family import flex as dflex
    from dials.util.filter_reflections import filter_reflection_table
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments = ExperimentListFactory.from_json_file(str(expt), check_format=False)
    table = dflex.reflection_table.from_file(str(refl))
    table = filter_reflection_table(table, ["scale"], combine_partials=True,
                                    partiality_threshold=partiality_threshold)
    cells = np.array([e.crystal.get_unit_cell().parameters() for e in experiments])
    symmetry = experiments[0].crystal.get_crystal_symmetry().customized_copy(
        unit_cell=tuple(np.median(cells, axis=0)))
    intensities = miller.set(symmetry, table["miller_index"], anomalous_flag=False).array(
        data=table["intensity.scale.value"],
        sigmas=flex.sqrt(table["intensity.scale.variance"]))
    return intensities.set_observation_type_xray_intensity()


# --------------------------------------------------------------------------- shells


class Shells:
    """Equal-count resolution shells, defined on a reference set of d spacings."""

    def __init__(self, d_spacings, n_shells: int = 10):
        d = np.sort(np.asarray(d_spacings, dtype=float))[::-1]
        if d.size < n_shells:
            raise ValueError(f"{d.size} reflections cannot fill {n_shells} shells")
        cuts = [d[int(round(i * d.size / n_shells))] for i in range(1, n_shells)]
        # edges in d*² = 1/d², ascending; a reflection at a cut goes to the outer shell
        self.edges = 1.0 / np.array([d[0], *cuts, d[-1]]) ** 2
        self.edges[0] *= 1 - 1e-9
        self.edges[-1] *= 1 + 1e-9

    def __len__(self) -> int:
        return len(self.edges) - 1

    def d_range(self, i: int) -> tuple[float, float]:
        """(d_max, d_min) of shell ``i`` in Å."""
        return float(self.edges[i] ** -0.5), float(self.edges[i + 1] ** -0.5)

    def assign(self, d_spacings) -> np.ndarray:
        """Shell index of each d spacing; −1 outside the shells."""
        s = 1.0 / np.asarray(d_spacings, dtype=float) ** 2
        idx = np.searchsorted(self.edges, s, side="right") - 1
        idx[(s < self.edges[0]) | (s > self.edges[-1])] = -1
        return np.minimum(idx, len(self) - 1)


# --------------------------------------------------------------------------- matching


def asu_unique(array: miller.array) -> miller.array:
    """Non-anomalous, asu-mapped, merged (equivalents averaged) copy of an array."""
    a = array.as_non_anomalous_array().map_to_asu()
    if a.is_unique_set_under_symmetry():
        return a
    return a.merge_equivalents().array()


def prepare_truth(truth: miller.array, d_min: float | None = None) -> miller.array:
    """The truth as a unique, non-anomalous asu array, optionally cut at ``d_min``."""
    t = asu_unique(truth)
    return t.resolution_filter(d_min=d_min) if d_min else t


def _in_truth_setting(array: miller.array, truth: miller.array,
                      op: sgtbx.change_of_basis_op) -> miller.array:
    return array.change_basis(op).customized_copy(
        crystal_symmetry=truth.crystal_symmetry())


def _match_observations(truth: miller.array, indices) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (truth position, observation position) of asu-mapped observed indices."""
    pairs = miller.match_multi_indices(miller_indices_unique=truth.indices(),
                                       miller_indices=indices).pairs()
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def candidate_reindex_ops(array: miller.array, truth: miller.array,
                          length_tolerance: float = 0.05,
                          angle_tolerance: float = 3.0) -> list[sgtbx.change_of_basis_op]:
    """Changes of basis that map ``array``'s cell onto the truth's and keep its Laue group."""
    laue = truth.space_group().build_derived_laue_group()
    ops = []
    for m in array.unit_cell().similarity_transformations(
            other=truth.unit_cell(), relative_length_tolerance=length_tolerance,
            absolute_angle_tolerance=angle_tolerance):
        op = sgtbx.change_of_basis_op(sgtbx.rt_mx(sgtbx.rot_mx(m)))
        if not array.unit_cell().change_basis(op).is_similar_to(
                truth.unit_cell(), length_tolerance, angle_tolerance):
            op = op.inverse()
        if array.space_group().change_basis(op).build_derived_laue_group() == laue:
            ops.append(op)
    if not ops:
        raise ValueError(f"unit cell {array.unit_cell().parameters()} does not match the "
                         f"truth's {truth.unit_cell().parameters()} in any setting")
    return ops


def match_to_truth(array: miller.array, truth: miller.array
                   ) -> tuple[miller.array, sgtbx.change_of_basis_op]:
    """``array`` (merged or not) in the truth's setting and asu; the best change of basis.

    ``truth`` must come from :func:`prepare_truth`.
    """
    best = None
    for op in candidate_reindex_ops(array, truth):
        moved = _in_truth_setting(array, truth, op).as_non_anomalous_array().map_to_asu()
        a, t = asu_unique(moved).common_sets(truth)
        cc = _pearson(a.data(), t.data())
        cc = -math.inf if math.isnan(cc) else cc
        if best is None or cc > best[0]:
            best = (cc, moved, op)
    return best[1], best[2]


# --------------------------------------------------------------------------- scoring


def _shell_stats(d_range, n_ref, obs, true, sig) -> ShellStats:
    ok = sig > 0
    return ShellStats(
        d_max=d_range[0], d_min=d_range[1], n_ref=int(n_ref), n_matched=int(obs.size),
        completeness=obs.size / n_ref if n_ref else math.nan,
        cc=_pearson(obs, true),
        mean_i_over_sigma=float(np.mean(obs[ok] / sig[ok])) if ok.any() else math.nan)


def score_merged(merged: miller.array, truth: miller.array, shells: Shells,
                 unmerged: miller.array | None = None, seed: int = 0) -> Score:
    """Score a merged array against ``truth`` (from :func:`prepare_truth`) per shell.

    With ``unmerged`` (the scaled observations behind ``merged``, see
    :func:`read_scaled_table`), CC1/2 and z statistics are added.
    """
    moved, op = match_to_truth(merged, truth)
    a, t = asu_unique(moved).common_sets(truth)
    obs, true = a.data().as_numpy_array(), t.data().as_numpy_array()
    sig = a.sigmas().as_numpy_array() if a.sigmas() is not None else np.zeros_like(obs)
    shell = shells.assign(t.d_spacings().data().as_numpy_array())
    truth_shell = shells.assign(truth.d_spacings().data().as_numpy_array())
    rows = []
    for i in range(len(shells)):
        sel = shell == i
        rows.append(_shell_stats(shells.d_range(i), np.sum(truth_shell == i),
                                 obs[sel], true[sel], sig[sel]))
    inside = shell >= 0
    overall = _shell_stats((shells.d_range(0)[0], shells.d_range(len(shells) - 1)[1]),
                           np.sum(truth_shell >= 0), obs[inside], true[inside], sig[inside])
    score = Score(shells=rows, overall=overall, reindex=op.as_hkl())
    if unmerged is not None:
        moved_obs = _in_truth_setting(unmerged, truth, op).as_non_anomalous_array().map_to_asu()
        halves = cc_half(moved_obs, shells, seed=seed)
        for row, value in zip(rows, halves[:-1]):
            row.cc_half = value
        overall.cc_half = halves[-1]
        score.z = observation_z(moved_obs, truth, shells)
        for row, value in zip(rows, score.z.pop("rms_by_shell")):
            row.z_rms = value
        overall.z_rms = score.z["rms"]
    return score


def _group_ids(array: miller.array) -> tuple[np.ndarray, np.ndarray]:
    """Unique-reflection id of each observation and the d spacing of each group."""
    hkl = np.array(array.indices(), dtype=np.int64).reshape(-1, 3)
    _, first, group = np.unique(hkl, axis=0, return_index=True, return_inverse=True)
    d = array.d_spacings().data().as_numpy_array()[first]
    return group.ravel(), d


def cc_half(observations: miller.array, shells: Shells, seed: int = 0) -> list[float]:
    """CC1/2 per shell and overall (last) from asu-mapped unmerged observations.

    Random halves per unique reflection, unweighted means, Pearson CC over reflections
    present in both halves.
    """
    group, d = _group_ids(observations)
    data = observations.data().as_numpy_array()
    mean_a, mean_b, both = half_means(group, data, d.size, np.random.default_rng(seed))
    shell = shells.assign(d)
    values = [_pearson(mean_a[both & (shell == i)], mean_b[both & (shell == i)])
              for i in range(len(shells))]
    return values + [_pearson(mean_a[both & (shell >= 0)], mean_b[both & (shell >= 0)])]


def observation_z(observations: miller.array, truth: miller.array, shells: Shells) -> dict:
    """z = (I − k·exp(−B_g/4d²)·I_true)/σ of asu-mapped scaled observations.

    k and B_g are fitted overall (weighted least squares): the absolute scale and the
    absolute B of a data set are gauges of every scaling route (dials.scale and the
    plugin both fix them by convention, e.g. mean B = 0 over the stills), not errors:
    on simulated stills whose per-still B have a mean of −0.7 Å² a k-only comparison
    reads the gauge as a 5 % bias at 1.8 Å.  Returns n, k, b_gauge, mean, rms, median,
    the robust σ (median |z|/0.6745), the fraction with |z| > 3 and ``rms_by_shell``.
    """
    t_idx, o_idx = _match_observations(truth, observations.indices())
    i_obs = observations.data().as_numpy_array()[o_idx]
    sig = observations.sigmas().as_numpy_array()[o_idx]
    i_true = truth.data().as_numpy_array()[t_idx]
    d = truth.d_spacings().data().as_numpy_array()[t_idx]
    ok = sig > 0
    i_obs, sig, i_true, d = i_obs[ok], sig[ok], i_true[ok], d[ok]
    if i_obs.size == 0:
        return {"n": 0, "rms_by_shell": [math.nan] * len(shells), "rms": math.nan}
    k, b_gauge = _scale_and_b(i_obs, i_true, 1 / sig**2, 1 / (4 * d**2))
    z = (i_obs - k * np.exp(-b_gauge / (4 * d**2)) * i_true) / sig
    shell = shells.assign(d)
    return {
        "n": int(z.size), "k": k, "b_gauge": b_gauge, "mean": float(np.mean(z)),
        "rms": float(np.sqrt(np.mean(z**2))), "median": float(np.median(z)),
        "robust_sigma": float(np.median(np.abs(z)) / 0.6745),
        "frac_abs_gt_3": float(np.mean(np.abs(z) > 3)),
        "rms_by_shell": [float(np.sqrt(np.mean(z[shell == i] ** 2))) if np.any(shell == i)
                         else math.nan for i in range(len(shells))],
    }


def _scale_and_b(i_obs, i_true, w, s2, b_range: float = 20.0) -> tuple[float, float]:
    """(k, B) minimising Σ w·(I − k·exp(−B·s²)·I_true)², s² = 1/4d²: k in closed form for
    each B on a 0.05 Å² grid over ±``b_range`` (robust where the data fit no model)."""
    grid = np.linspace(-b_range, b_range, int(40 * b_range) + 1)
    best = (np.inf, 0.0, 0.0)
    for b in grid:
        model = np.exp(-b * s2) * i_true
        k = float(np.sum(w * i_obs * model) / np.sum(w * model**2))
        cost = float(np.sum(w * (i_obs - k * model) ** 2))
        if cost < best[0]:
            best = (cost, k, float(b))
    return best[1], best[2]


def ideal_score(truth: miller.array, indices, variances, shells: Shells,
                on: miller.array | None = None) -> Score:
    """The per-shell CC of an ideal estimator (see the module docstring).

    ``indices`` are the Miller indices of the observations, ``variances`` the variance of
    each observation's ideal estimate of I_true, in units of I_true (photon counting and
    background only).  ``truth`` comes from :func:`prepare_truth`.  With ``on`` (a merged
    array, any setting), the ideal is evaluated on the reflections ``on`` holds, so that
    it can be set beside a route's CC on the same reflections; a reflection seen only in
    observations with a tiny partiality otherwise dominates the noise sum.
    """
    variances = np.asarray(variances, dtype=float)
    obs = miller.set(truth.crystal_symmetry(),
                     flex.miller_index([tuple(int(x) for x in h) for h in np.asarray(indices)]),
                     anomalous_flag=False).map_to_asu()
    t_idx, o_idx = _match_observations(truth, obs.indices())
    keep = np.isfinite(variances[o_idx]) & (variances[o_idx] > 0)
    info = np.bincount(t_idx[keep], weights=1 / variances[o_idx][keep], minlength=truth.size())
    seen = info > 0
    if on is not None:
        moved, _ = match_to_truth(on, truth)
        listed = miller.match_indices(truth.indices(), asu_unique(moved).indices())
        chosen = np.zeros(truth.size(), bool)
        chosen[np.asarray(listed.pairs().column(0), dtype=int)] = True
        seen &= chosen
    merged_var = np.where(seen, 1 / np.where(seen, info, 1), np.inf)
    i_true = truth.data().as_numpy_array()
    truth_shell = shells.assign(truth.d_spacings().data().as_numpy_array())

    def stats(sel, d_range):
        m = sel & seen
        i, v, n = i_true[m], merged_var[m], int(m.sum())
        spread = float(np.sum((i - i.mean()) ** 2)) if n else 0.0
        noise = (1 - 1 / n) * float(np.sum(v)) if n else 0.0
        cc = math.sqrt(spread / (spread + noise)) if n >= 3 and spread > 0 else math.nan
        return ShellStats(d_max=d_range[0], d_min=d_range[1], n_ref=int(sel.sum()),
                          n_matched=n, completeness=n / sel.sum() if sel.any() else math.nan,
                          cc=cc, mean_i_over_sigma=float(np.mean(i / np.sqrt(v))) if n
                          else math.nan)

    rows = [stats(truth_shell == i, shells.d_range(i)) for i in range(len(shells))]
    overall = stats(truth_shell >= 0, (shells.d_range(0)[0], shells.d_range(len(shells) - 1)[1]))
    return Score(shells=rows, overall=overall)


# --------------------------------------------------------------------------- report


def _fmt(x: float | int | None, digits: int = 3) -> str:
    if isinstance(x, int):
        return str(x)
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _shell_rows(first: Score):
    """(label, pick) per shell and then overall; ``pick(score)`` is that row of a score."""
    for i in [*range(len(first.shells)), None]:
        def pick(s: Score, i=i) -> ShellStats:
            return s.overall if i is None else s.shells[i]

        row = pick(first)
        yield ("overall" if i is None else f"{row.d_max:.2f}–{row.d_min:.2f}"), pick


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   bold_last: bool = False) -> str:
    """A Markdown table of strings; with ``bold_last`` the last row (overall) in bold."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, cells in enumerate(rows):
        if bold_last and k == len(rows) - 1:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(scores: Mapping[str, Score], ideal: Score | None = None,
                 ratio: Sequence[str] | None = None,
                 completeness: Mapping[str, Score] | None = None) -> str:
    """A Markdown table: CC to truth per shell and overall, one column per route.

    Then the ideal CC (if given), the ratio of the CCs of ``ratio = (a, b)`` (a/b), and
    the completeness of each route (taken from ``completeness`` if given, e.g. each
    route's own reflections when ``scores`` are on a common set) and of the ideal.
    """
    names = list(scores)
    header = ["d (Å)", *[f"CC {n}" for n in names]]
    if ideal is not None:
        header.append("CC ideal")
    if ratio:
        header.append(f"{ratio[0]}/{ratio[1]}")
    header += [f"compl. {n}" for n in names]
    if ideal is not None:
        header.append("observed")
    rows = []
    for label, pick in _shell_rows(scores[names[0]]):
        cells = [label, *[_fmt(pick(scores[n]).cc) for n in names]]
        if ideal is not None:
            cells.append(_fmt(pick(ideal).cc))
        if ratio:
            a, b = pick(scores[ratio[0]]).cc, pick(scores[ratio[1]]).cc
            cells.append(_fmt(a / b if b else math.nan, 2))
        cells += [_fmt(pick((completeness or scores)[n]).completeness, 3) for n in names]
        if ideal is not None:
            cells.append(_fmt(pick(ideal).completeness, 3))
        rows.append(cells)
    return markdown_table(header, rows, bold_last=True)


def format_columns(scores: Mapping[str, Score], columns: Mapping[str, str]) -> str:
    """A Markdown table of other shell statistics: for each ``columns`` entry
    (``ShellStats`` field → title, e.g. ``{"cc_half": "CC½", "z_rms": "rms z"}``) one
    column per route."""
    names = list(scores)
    header = ["d (Å)", *[f"{title} {n}" for title in columns.values() for n in names]]
    rows = [[label, *[_fmt(getattr(pick(scores[n]), field)) for field in columns
                      for n in names]]
            for label, pick in _shell_rows(scores[names[0]])]
    return markdown_table(header, rows, bold_last=True)


# --------------------------------------------------------------------------- per observation


def truth_rows(experiment_ids, miller_indices, truth_experiment, truth_miller) -> np.ndarray:
    """Row of the simulator's observations.npz for each (experiment id, hkl); −1 if none.

    Matches on the original (not asu-mapped) indices, so it applies to integration runs
    on the true models (same indexing setting as the simulator).
    """
    truth_keys = miller_keys(truth_miller, truth_experiment)
    order = np.argsort(truth_keys)
    wanted = miller_keys(miller_indices, experiment_ids)
    pos = np.clip(np.searchsorted(truth_keys[order], wanted), 0, max(len(order) - 1, 0))
    found = len(order) > 0
    hit = found & (truth_keys[order][pos] == wanted) if found else np.zeros(len(wanted), bool)
    return np.where(hit, order[pos], -1)


def on_common_reflections(arrays: Mapping[str, miller.array], truth: miller.array
                          ) -> dict[str, miller.array]:
    """Each merged array in the truth's setting, cut to the reflections all of them hold.

    Routes keep different reflections (partiality cut-offs, edge rejection); CCs are
    compared on the common set, completeness on each route's own.
    """
    moved = {name: asu_unique(match_to_truth(a, truth)[0]) for name, a in arrays.items()}
    common = None
    for a in moved.values():
        common = a if common is None else common.common_set(a)
    return {name: a.common_set(common) for name, a in moved.items()}


def scaled_cc_to_truth(table, sim) -> tuple[float, int]:
    """CC of the inverse-variance merged scaled intensities of an output table (scaled rows
    matched to the simulator's observations) with the true intensities, and the number of
    scaled rows matched; ``sim`` is the simulation directory."""
    from dials.array_family import flex as dflex
    from dxtbx.model.experiment_list import ExperimentListFactory

    from dials_factored.arrays import to_numpy
    from dials_factored.merging import asu_groups, symmetry_of, weighted_mean

    scaled = table.select(table.get_flags(table.flags.scaled))
    truth = dict(np.load(sim / "truth" / "observations.npz"))
    rows = truth_rows(to_numpy(scaled["id"]), to_numpy(scaled["miller_index"]),
                      truth["experiment"], truth["miller_index"])
    scaled = scaled.select(dflex.bool((rows >= 0).tolist()))
    rows = rows[rows >= 0]
    isf = to_numpy(scaled["inverse_scale_factor"])
    value = to_numpy(scaled["intensity.scale.value"]) / isf
    variance = to_numpy(scaled["intensity.scale.variance"]) / isf ** 2
    symmetry = symmetry_of(ExperimentListFactory.from_json_file(
        str(sim / "truth" / "models.expt"), check_format=False))
    _, group = asu_groups(scaled["miller_index"], symmetry)
    merged, _ = weighted_mean(group, value, variance)
    true = np.zeros(len(merged))
    true[group] = truth["i_true"][rows]
    return float(np.corrcoef(merged, true)[0, 1]), len(scaled)
