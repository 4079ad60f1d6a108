"""The anomalous benchmark (issue 15): Se-like stills, both routes and the ideal estimator.

Simulated stills of a crystal with ``sites`` Se atoms per asymmetric unit (f″ = ``fdp``
electrons at 0.9792 Å), in a space group with an indexing ambiguity (default P4₃, twin law
h,−k,−l) and, as a control, one without (P4₃2₁2).  Both are indexed with dials.ssx_index
(each still lands in either setting), then

* DIALS: dials.ssx_integrate → dials.cosym (where the lattice has twin laws) →
  dials.scale anomalous=True → dials.merge anomalous=True;
* ours: dials.factored_integrate anomalous=true (its ambiguity step on) →
  dials.merge anomalous=True;
* the ideal estimator: the simulator's observations, each with its ideal variance
  (:func:`harness.anomalous.ideal_merged`), on the reflections each route merged.

Scored with :mod:`harness.anomalous`: CC_ano by shell, the anomalous difference Fourier
peak height at the true sites, and the fraction of stills our route put in the right
setting (the setting of the truth, up to the gauge of the whole set).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import report as rp
from harness import anomalous as an
from harness import dials_programs as dp
from harness import evaluate as ev

SEED = 15
CELL = (78.0, 78.0, 37.0, 90.0, 90.0, 90.0)


@dataclass
class Settings:
    """What the anomalous benchmark runs."""

    workdir: Path
    n_images: int = 300
    space_group: str = "P43"
    detector: tuple[int, int] = (1024, 1024)
    d_min: float = 2.0
    sites: int = 10
    fdp: float = 4.0
    nproc: int = 2


def _simulate(s: Settings) -> dp.Stage:
    return dp.simulate(s.workdir / "simulate", "stills", SEED, s.n_images, args=[
        f"crystal.space_group={s.space_group}", "crystal.unit_cell=" + ",".join(map(str, CELL)),
        f"d_min={s.d_min}", f"detector.size={s.detector[0]},{s.detector[1]}",
        "beam.wavelength=0.9792", "beam.bandwidth=0.002", "anomalous.element=Se",
        f"anomalous.sites={s.sites}", f"anomalous.fdp={s.fdp}"])


def dials_route(indexed: dp.Stage, workdir: Path, space_group: str, nproc: int) -> dp.Stage:
    """dials.ssx_integrate → (dials.cosym) → dials.scale → dials.merge, anomalous."""
    from cctbx import crystal

    from dials_factored.ambiguity import twin_operators

    stage = dp.Stage(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stage.add(dp.run_program("dials.ssx_integrate", [
        indexed.files["expt"], indexed.files["refl"], f"nproc={nproc}",
        "output.batch_size=1000000", "output.html=None"], workdir,
        expect=["integrated_1.expt", "integrated_1.refl"]))
    expt, refl = "integrated_1.expt", "integrated_1.refl"
    if len(twin_operators(crystal.symmetry(CELL, space_group))) > 1:
        stage.add(dp.run_program("dials.cosym", [expt, refl, f"space_group={space_group}",
                                                 "output.html=None", f"nproc={nproc}"],
                                 workdir, expect=["symmetrized.expt", "symmetrized.refl"]))
        expt, refl = "symmetrized.expt", "symmetrized.refl"
    stage.add(dp.run_program("dials.scale", [expt, refl, "anomalous=True", "output.html=None"],
                             workdir, expect=["scaled.expt", "scaled.refl"]))
    stage.add(dp.run_program("dials.merge", ["scaled.expt", "scaled.refl", "anomalous=True",
                                             *dp.MERGE_ARGS], workdir, expect=["merged.mtz"]))
    stage.files["merged_mtz"] = workdir / "merged.mtz"
    return stage


def run_both(s: Settings, control: str = "P43212") -> dict:
    """:func:`run` in ``s.space_group`` and in ``control`` (no ambiguity); one result."""
    results = {"benchmark": "anomalous", "runs": {}}
    for space_group in (s.space_group, control):
        one = Settings(**{**asdict(s), "space_group": space_group,
                          "workdir": s.workdir / space_group})
        rp.progress(f"anomalous: {space_group}")
        results["runs"][space_group] = run(one)
    results["report"] = "\n".join(r["report"] for r in results["runs"].values())
    results["wall_time_s"] = sum(r["wall_time_s"] for r in results["runs"].values())
    return results


def run(s: Settings) -> dict:
    """Simulate, index, both routes, score; the results (and a Markdown report)."""
    start = time.perf_counter()
    s.workdir = s.workdir.resolve()
    sim = _simulate(s)
    images = sorted(sim.files["images"].glob("*.cbf"))
    indexed = dp.index_stills(images, s.workdir / "index", s.space_group, CELL, nproc=s.nproc)
    dials = dials_route(indexed, s.workdir / "dials", s.space_group, s.nproc)
    ours = dp.factored_route(indexed, s.workdir / "factored", nproc=s.nproc,
                             integrate_args=["anomalous=true", "beam.bandwidth=0.002"],
                             merge_args=["anomalous=True"], export=False)
    truth_dir = sim.workdir / "truth"
    truth = an.read_anomalous(truth_dir / "truth.mtz")
    ideal = an.ideal_merged(dict(np.load(truth_dir / "observations.npz")),
                            truth.crystal_symmetry())
    shells = ev.Shells(an.bijvoet_d_spacings(truth), 10)
    scores = {name: an.score(stage.files["merged_mtz"], truth_dir, shells, ideal=ideal)
              for name, stage in (("dials", dials), ("factored", ours))}
    setting = an.right_setting_fraction(ours.files["scaled_expt"], sim.files["models"])
    return {"benchmark": "anomalous", "settings": {k: str(v) if isinstance(v, Path) else v
                                                   for k, v in asdict(s).items()},
            "environment": rp.environment(), "scores": scores,
            "factored_right_setting_fraction": setting,
            "wall_s": {"dials": dials.wall_time, "factored": ours.wall_time},
            "wall_time_s": round(time.perf_counter() - start, 1),
            "report": report(scores, setting, s)}


def report(scores: dict, setting: float, s: Settings) -> str:
    """A Markdown table: CC_ano per shell for both routes and the ideal; peak heights."""
    d, f = scores["dials"], scores["factored"]
    rows = []
    for i, (hi, lo) in enumerate(f["d_ranges"]):
        rows.append([f"{hi:.2f}–{lo:.2f}", ev._fmt(d["cc_ano_by_shell"][i]),
                     ev._fmt(f["cc_ano_by_shell"][i]), ev._fmt(f["ideal_cc_ano_by_shell"][i])])
    rows.append(["overall", ev._fmt(d["cc_ano"]), ev._fmt(f["cc_ano"]),
                 ev._fmt(f["ideal_cc_ano"])])
    table = ev.markdown_table(["d (Å)", "CC_ano DIALS", "CC_ano factored", "CC_ano ideal"],
                              rows, bold_last=True)
    peaks = ev.markdown_table(
        ["", "DIALS", "factored"],
        [["mean peak height at the sites (σ)", ev._fmt(d["mean_peak_height"], 1),
          ev._fmt(f["mean_peak_height"], 1)],
         ["ideal estimator, same reflections", ev._fmt(d["mean_ideal_peak_height"], 1),
          ev._fmt(f["mean_ideal_peak_height"], 1)],
         ["error-free ΔF, same reflections", ev._fmt(d["mean_truth_peak_height"], 1),
          ev._fmt(f["mean_truth_peak_height"], 1)],
         ["Bijvoet pairs merged", str(d["n_bijvoet_pairs"]), str(f["n_bijvoet_pairs"])]])
    return (f"## Anomalous: {s.n_images} stills, {s.space_group}, {s.sites} Se/asu, "
            f"f″ = {s.fdp} e\n\n{table}\n\n{peaks}\n\nStills in one setting (ours): "
            f"{setting:.1%}\n")
