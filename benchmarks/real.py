"""The benchmark on real data: both routes on the shared sets with images (skipped when absent).

From the indexed or refined files shipped with each set (``../shared/data``, or
``$DIALS_FACTORED_DATA``, or ``--data``), in ``<workdir>/real/<set>``:

* the DIALS route (stills: dials.ssx_integrate, its default algorithm=ellipsoid or
  algorithm=stills where ellipsoid fails, as recorded in the results → dials.scale →
  dials.merge; rotation: dials.integrate → dials.scale → dials.merge) and
* the factored route (dials.factored_integrate → dials.merge),

each step timed (wall time, peak RSS).  Scores: CC1/2 by shell from each route's scaled
observations and, where the set has a reference (thermolysin: |Fcalc|² of 2TLI), the CC
of the merged intensities to it by shell.  There is no truth: CCs to a model are not
CCs to the true intensities, and with multiplicity near 1 CC1/2 is mostly undefined.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import report as rp
from harness import dials_programs as dp
from harness import evaluate as ev

#: Fewest merged reflections per resolution shell for CC1/2 on data without a reference.
MIN_PER_SHELL = 20


@dataclass(frozen=True)
class RealSet:
    """A shared real set with images: where its indexed data are, and how to integrate it."""

    name: str
    mode: str
    expt: str
    refl: str
    #: extra parameters of dials.factored_integrate (e.g. the detector gain)
    factored_args: tuple[str, ...] = ()
    #: an MTZ with ICALC (|Fcalc|²) to correlate the merged intensities with
    reference: str | None = None


#: The shared sets that hold images (see ../shared/data/README.md).
SETS = (
    RealSet("stills_thermolysin_cspad", "stills", "processed_ssx/indexed.expt",
            "processed_ssx/indexed.refl", ("detector.gain=25",),
            "reference/2tli_fcalc_1.6A.mtz"),
    RealSet("rotation_lcys_sweep1", "rotation", "processed/refined.expt",
            "processed/refined.refl"),
)


def data_directory(path: Path | None = None) -> Path:
    """The shared real data: ``path``, else ``$DIALS_FACTORED_DATA``, else
    ``<repo>/../shared/data`` (as the tests look for it)."""
    return Path(path or os.environ.get("DIALS_FACTORED_DATA") or rp.REPO.parent / "shared"
                / "data")


def half_set_score(merged, unmerged, shells: ev.Shells) -> ev.Score:
    """CC1/2, reflection count and mean I/σ per shell, for data without a reference
    (CC and completeness are undefined: NaN)."""
    a = ev.asu_unique(merged)
    which = shells.assign(a.d_spacings().data().as_numpy_array())
    i_over_s = (a.data() / a.sigmas()).as_numpy_array()
    halves = ev.cc_half(unmerged.as_non_anomalous_array().map_to_asu(), shells)

    def stats(sel, d_range, cc_half) -> ev.ShellStats:
        return ev.ShellStats(d_max=d_range[0], d_min=d_range[1], n_ref=int(sel.sum()),
                             n_matched=int(sel.sum()), completeness=math.nan, cc=math.nan,
                             mean_i_over_sigma=float(np.mean(i_over_s[sel])) if sel.any()
                             else math.nan, cc_half=cc_half)

    rows = [stats(which == i, shells.d_range(i), halves[i]) for i in range(len(shells))]
    overall = stats(which >= 0, (shells.d_range(0)[0], shells.d_range(len(shells) - 1)[1]),
                    halves[-1])
    return ev.Score(shells=rows, overall=overall)


def score(real_set: RealSet, directory: Path, routes: dict[str, dp.Stage],
          n_shells: int) -> dict[str, ev.Score]:
    """Each route's score: against the reference if the set has one, else CC1/2 only."""
    merged = {name: ev.read_mtz_intensities(stage.files["merged_mtz"], "IMEAN")
              for name, stage in routes.items()}
    unmerged = {name: ev.read_scaled_table(stage.files["scaled_expt"],
                                           stage.files["scaled_refl"])
                for name, stage in routes.items()}
    if real_set.reference:
        d_min = min(a.d_min() for a in merged.values())
        reference = ev.prepare_truth(
            ev.read_mtz_intensities(directory / real_set.reference, "ICALC"), d_min=d_min)
        shells = ev.Shells(reference.d_spacings().data(), n_shells)
        return {name: ev.score_merged(merged[name], reference, shells, unmerged=unmerged[name])
                for name in routes}
    d = np.unique(np.concatenate([ev.asu_unique(a).d_spacings().data().as_numpy_array()
                                  for a in merged.values()]))
    shells = ev.Shells(d, max(1, min(n_shells, d.size // MIN_PER_SHELL)))
    return {name: half_set_score(merged[name], unmerged[name], shells) for name in routes}


def run_set(real_set: RealSet, directory: Path, workdir: Path, nproc: int,
            n_shells: int) -> dict:
    """Both routes on one set, timed and scored; returns its results and report."""
    shutil.rmtree(workdir, ignore_errors=True)
    indexed = dp.Stage(directory, files={"expt": directory / real_set.expt,
                                         "refl": directory / real_set.refl})
    rp.progress(f"{real_set.name}: DIALS route")
    dials_route = dp.dials_route(indexed, workdir / "dials", real_set.mode, nproc=nproc)
    rp.progress(f"    {dials_route.info.get('reason', '')} ({dials_route.wall_time:.0f} s)")
    rp.progress(f"{real_set.name}: factored route")
    factored = dp.factored_route(indexed, workdir / "factored", nproc=nproc,
                                 integrate_args=real_set.factored_args, export=False)
    rp.progress(f"    done ({factored.wall_time:.0f} s)")
    routes = {"dials": dials_route, "factored": factored}
    scores = score(real_set, directory, routes, n_shells)
    columns = {"n_matched": "n", "cc_half": "CC½"}
    extra = [("CC½ overall", scores["dials"].overall.cc_half,
              scores["factored"].overall.cc_half, 3)]
    if real_set.reference:
        columns["cc"] = "CC to reference"
        extra.append(("CC to reference overall", scores["dials"].overall.cc,
                      scores["factored"].overall.cc, 3))
    steps = rp.steps(routes)
    text = "\n".join([
        f"### {real_set.name} ({real_set.mode}), from {real_set.expt}"
        + (f"; dials.factored_integrate {' '.join(real_set.factored_args)}"
           if real_set.factored_args else ""), "",
        f"DIALS route: {dials_route.info.get('reason', '')}", "",
        rp.route_summary(routes, extra), "",
        "By shell (CC½ from each route's own scaled observations):",
        ev.format_columns(scores, columns), "", "Every step:", rp.steps_table(steps)])
    return {"mode": real_set.mode, "expt": str(directory / real_set.expt),
            "dials_route": dials_route.info,
            "factored_args": list(real_set.factored_args), "steps": steps,
            "integrate_and_scale": rp.integrate_and_scale_dict(routes),
            "scores": {name: s.as_dict() for name, s in scores.items()}, "report": text}


def run(data: Path | None, workdir: Path, nproc: int = 2, n_shells: int = 10,
        names: Sequence[str] | None = None) -> dict | None:
    """The shared sets with images (those named in ``names``, default all) that are
    present; None (and a message) without the data."""
    directory = data_directory(data)
    if not (directory / "README.md").is_file():
        rp.progress(f"real data: skipped, not found at {directory} "
                    "(--data or DIALS_FACTORED_DATA: the directory holding README.md)")
        return None
    start = time.perf_counter()
    environment = rp.environment()
    sets = {}
    for real_set in SETS:
        if names is not None and real_set.name not in names:
            continue
        set_directory = directory / real_set.name
        if not (set_directory / real_set.expt).is_file():
            rp.progress(f"real data: {real_set.name} not in {directory}, skipped")
            continue
        sets[real_set.name] = run_set(real_set, set_directory,
                                      workdir.resolve() / "real" / real_set.name, nproc,
                                      n_shells)
    return {"benchmark": "real", "mode": "real", "environment": environment,
            "data_directory": str(directory), "nproc": nproc, "sets": sets,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "report": "\n\n".join(["## Real data", *(s["report"] for s in sets.values())])}
