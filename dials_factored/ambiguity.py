"""Indexing ambiguity: put every crystal in one consistent setting before the fit.

When the lattice has more symmetry than the crystal (P4₃ on a tetragonal lattice, P6₃, P3₁21,
P2₁2₁2₁ with a ≈ b, ...), each crystal can be indexed in any of the settings related by
the *twin laws*: the coset representatives of the crystal's point group in the lattice's
(cctbx ``lattice_symmetry``, as dials.cosym finds them).  Merged in mixed settings, half
the data land on the wrong reflections.

The choice per crystal is made on the indexed strong spots' summed intensities (the input
``.refl``; partial for stills, which costs contrast but not bias).  Intensities are put
on a common footing, x = I/⟨I⟩(d) with ⟨I⟩(d) the mean of all spots in the resolution bin,
then each crystal's x divided by their mean (so that scale and B drop out to first order).
Then, as in Brehm & Diederichs (2014) but against one running reference instead of the
N² pairwise matrix:

1. *Seed*: crystals in order of decreasing spot count; each takes the operator whose
   reindexed x correlate best (Pearson) with the mean of the crystals placed so far
   (the first takes the identity: the choice of the whole set's setting is a gauge);
2. *Refine*: in the same order, each crystal in turn is taken out of the mean and takes
   its best operator against the mean of all the others, until a pass changes nothing.

With an external reference the crystal's x are correlated with the reference instead.
Cost O(N·n_ops·spots) per pass, memory O(spots): nothing of size N².
"""

from __future__ import annotations

import logging

import numpy as np
from cctbx import crystal, miller, sgtbx
from cctbx.array_family import flex

from dials_factored.arrays import miller_keys, to_numpy

logger = logging.getLogger(f"dials.{__name__}")

#: Resolution bins (equal counts in 1/d²) of the mean intensity ⟨I⟩(d).
N_BINS = 10
#: Refinement passes at most.
MAX_PASSES = 20


def twin_operators(symmetry: crystal.symmetry, max_delta: float = 3.0
                   ) -> list[sgtbx.change_of_basis_op]:
    """The identity and the twin laws of ``symmetry``'s lattice (``max_delta`` in degrees)."""
    import cctbx.sgtbx.cosets as cosets
    from cctbx.sgtbx import lattice_symmetry

    to_niggli = symmetry.change_of_basis_op_to_niggli_cell()
    lattice = lattice_symmetry.group(symmetry.change_basis(to_niggli).unit_cell(),
                                     max_delta=max_delta).change_basis(to_niggli.inverse())
    decomposition = cosets.left_decomposition(lattice.build_derived_point_group(),
                                              symmetry.space_group().build_derived_point_group())
    return [sgtbx.change_of_basis_op(partition[0]) for partition in decomposition.partitions]


def _normalised(crystal_id: np.ndarray, d: np.ndarray, intensity: np.ndarray,
                n_crystals: int) -> np.ndarray:
    """x = I/⟨I⟩(d), then divided by each crystal's mean x (module doc)."""
    s2 = 1.0 / d ** 2
    edges = np.quantile(s2, np.linspace(0, 1, N_BINS + 1)[1:-1])
    shell = np.searchsorted(edges, s2)
    mean = np.bincount(shell, weights=intensity) / np.maximum(np.bincount(shell), 1)
    x = intensity / mean[shell]
    per_crystal = np.bincount(crystal_id, weights=x, minlength=n_crystals) / np.maximum(
        np.bincount(crystal_id, minlength=n_crystals), 1)
    return x / per_crystal[crystal_id]


def _groups(hkl: np.ndarray, symmetry: crystal.symmetry,
            ops: list[sgtbx.change_of_basis_op]) -> np.ndarray:
    """(n_ops, n) unique-reflection number of each spot reindexed by each operator."""
    keys = []
    for op in ops:
        indices = op.apply(flex.miller_index(hkl.tolist()))
        asu = miller.set(symmetry, indices, anomalous_flag=False).map_to_asu().indices()
        keys.append(miller_keys(to_numpy(asu)))
    _, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return inverse.reshape(len(ops), -1)


def _pearson_by_crystal(crystal_id: np.ndarray, x: np.ndarray, r: np.ndarray,
                        ok: np.ndarray, n_crystals: int) -> np.ndarray:
    """Pearson CC of x and r per crystal over the spots where ``ok`` (NaN below 3)."""
    def total(values):
        return np.bincount(crystal_id[ok], weights=values[ok], minlength=n_crystals)

    n = total(np.ones_like(x))
    sx, sr, sxx, srr, sxr = total(x), total(r), total(x * x), total(r * r), total(x * r)
    cov = sxr - sx * sr / np.maximum(n, 1)
    var = (sxx - sx ** 2 / np.maximum(n, 1)) * (srr - sr ** 2 / np.maximum(n, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = cov / np.sqrt(var)
    return np.where((n >= 3) & (var > 0), cc, np.nan)


def _against_others(crystal_id, x, groups, choice, n_crystals) -> np.ndarray:
    """(n_ops, n_crystals) CC of each crystal under each operator with all the others."""
    n_groups = int(groups.max()) + 1
    current = groups[choice[crystal_id], np.arange(len(x))]
    sums = np.bincount(current, weights=x, minlength=n_groups)
    counts = np.bincount(current, minlength=n_groups).astype(float)
    cc = np.empty((len(groups), n_crystals))
    for k, g in enumerate(groups):
        own = choice[crystal_id] == k  # the spot itself sits in this group: leave it out
        s = sums[g] - np.where(own, x, 0.0)
        c = counts[g] - own
        ok = c > 0
        cc[k] = _pearson_by_crystal(crystal_id, x, np.where(ok, s / np.maximum(c, 1), 0.0),
                                    ok, n_crystals)
    return cc


def _best_operator(rows, x, groups, sums, counts) -> int:
    """The operator under which a crystal's x correlate best with the current mean."""
    best, best_cc = -1, -np.inf
    for k, g in enumerate(groups):
        gi = g[rows]
        ok = counts[gi] > 0
        if ok.sum() < 3:
            continue
        r, xs = sums[gi[ok]] / counts[gi[ok]], x[rows][ok]
        if np.std(r) > 0 and np.std(xs) > 0:
            cc = np.corrcoef(xs, r)[0, 1]
            if cc > best_cc:
                best, best_cc = k, cc
    return best


def _assign(crystal_id, x, groups, n_crystals) -> np.ndarray:
    """Steps 1 and 2 of the module doc, one crystal at a time (Gauss–Seidel, so that the
    assignment cannot oscillate as all-at-once updates do)."""
    n_groups = int(groups.max()) + 1
    sums, counts = np.zeros(n_groups), np.zeros(n_groups)
    choice = np.full(n_crystals, -1)
    order = np.argsort(-np.bincount(crystal_id, minlength=n_crystals), kind="stable")
    spots = np.split(np.argsort(crystal_id, kind="stable"),
                     np.cumsum(np.bincount(crystal_id, minlength=n_crystals))[:-1])
    for _ in range(MAX_PASSES):
        changed = 0
        for c in order:
            rows = spots[c]
            if choice[c] >= 0:  # leave the crystal out of the mean it is compared with
                np.add.at(sums, groups[choice[c]][rows], -x[rows])
                np.add.at(counts, groups[choice[c]][rows], -1.0)
            best = _best_operator(rows, x, groups, sums, counts)
            best = max(choice[c], 0) if best < 0 else best
            changed += best != choice[c]
            choice[c] = best
            np.add.at(sums, groups[best][rows], x[rows])
            np.add.at(counts, groups[best][rows], 1.0)
        if not changed:
            return choice
    logger.warning("Warning: the indexing-ambiguity assignment did not settle in %d passes",
                   MAX_PASSES)
    return choice


def choose_operators(crystal_id: np.ndarray, hkl: np.ndarray, d: np.ndarray,
                     intensity: np.ndarray, symmetry: crystal.symmetry,
                     ops: list[sgtbx.change_of_basis_op], n_crystals: int,
                     reference=None) -> tuple[np.ndarray, np.ndarray]:
    """Operator number per crystal and the CC of each crystal under each (module doc).

    ``reference``: an object with ``intensities(asu_indices)`` (dials_factored.reference)
    to correlate with instead of the other crystals.
    """
    use = np.isfinite(intensity) & (intensity > 0) & np.any(hkl != 0, axis=1)
    crystal_id, hkl, d, intensity = crystal_id[use], hkl[use], d[use], intensity[use]
    x = _normalised(crystal_id, d, intensity, n_crystals)
    if reference is not None:
        cc = np.empty((len(ops), n_crystals))
        for k, op in enumerate(ops):
            indices = op.apply(flex.miller_index(hkl.tolist()))
            asu = miller.set(symmetry, indices, anomalous_flag=False).map_to_asu().indices()
            r = reference.intensities(asu)
            cc[k] = _pearson_by_crystal(crystal_id, x, np.nan_to_num(r), np.isfinite(r),
                                        n_crystals)
        return np.argmax(np.nan_to_num(cc, nan=-np.inf), axis=0), cc
    groups = _groups(hkl, symmetry, ops)
    choice = _assign(crystal_id, x, groups, n_crystals)
    return choice, _against_others(crystal_id, x, groups, choice, n_crystals)


def resolve(experiments, strong, symmetry: crystal.symmetry, reference=None) -> dict:
    """Reindex, in place, the crystals of ``experiments`` (and their rows of ``strong``)
    into one consistent setting; a summary for the log and factored_parameters.json.

    Nothing happens with one crystal or a lattice without twin laws.
    """
    ops = twin_operators(symmetry)
    n = len(experiments)
    summary = {"operators": [op.as_hkl() for op in ops], "n_crystals": n}
    if len(ops) == 1 or n < 2:
        summary["reindexed"] = [0] * len(ops)
        return summary
    if strong is None or "intensity.sum.value" not in strong:
        logger.warning("Warning: the lattice allows %d settings but there are no strong "
                       "spots with intensity.sum.value to choose between them: left as "
                       "indexed", len(ops))
        summary["reindexed"] = None
        return summary
    crystal_id = to_numpy(strong["id"]).astype(int)
    hkl = to_numpy(strong["miller_index"])
    keep = (crystal_id >= 0) & np.any(hkl != 0, axis=1)
    d = np.full(len(hkl), np.nan)
    d[keep] = to_numpy(symmetry.unit_cell().d(flex.miller_index(hkl[keep].tolist())))
    intensity = to_numpy(strong["intensity.sum.value"]).astype(float)
    choice, cc = choose_operators(crystal_id[keep], hkl[keep], d[keep], intensity[keep],
                                  symmetry, ops, n, reference)
    for i, k in enumerate(choice):
        if k:
            experiments[i].crystal = experiments[i].crystal.change_basis(ops[k])
    rows = np.flatnonzero(keep)
    moved = choice[crystal_id[rows]] > 0
    if moved.any():
        indices = strong["miller_index"]
        for k in range(1, len(ops)):
            sel = rows[moved & (choice[crystal_id[rows]] == k)]
            new = ops[k].apply(indices.select(flex.size_t(sel.tolist())))
            indices.set_selected(flex.size_t(sel.tolist()), new)
    margin = np.sort(np.nan_to_num(cc, nan=-1.0), axis=0)
    summary["reindexed"] = [int(np.sum(choice == k)) for k in range(len(ops))]
    summary["median_cc_margin"] = float(np.median(margin[-1] - margin[-2]))
    logger.info("Indexing ambiguity (twin laws %s): crystals per operator %s; median CC "
                "margin of the chosen operator %.3f", ", ".join(summary["operators"][1:]),
                summary["reindexed"], summary["median_cc_margin"])
    return summary
