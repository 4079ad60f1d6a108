"""Run the standard DIALS programs (and ours) as subprocesses, and the pipelines built on them.

Every program runs as ``[sys.executable, <script>, args...]`` so that it uses the same
interpreter as the caller (the project venv, which sees Debian's DIALS, carries the libtbx
environment and the ``xfel_mono_sim_ext`` stand-in that stills indexing imports).  Its
stdout and stderr go to ``<log_dir>/<program>.out``; wall time and the peak resident memory
are recorded.  Peak memory is the larger of the sum over the whole process tree (sampled
with psutil every 0.1 s, so ``nproc`` workers count) and the kernel's exact maximum RSS of
the largest single process of the tree (from ``wait4``, which catches short programs).

A program fails loudly: a non-zero exit, or a zero exit without an expected output file
(DIALS sometimes exits 0 after an error), raises a one-line :class:`RuntimeError` naming the
program, the exit code and the last lines of its log.

Pipelines (each returns a :class:`Stage`: output paths plus the runs with their timings):

* :func:`simulate`: dials.factored_simulate (images and the truth)
* :func:`index_stills`: dials.import → dials.find_spots → dials.ssx_index
* :func:`index_rotation`: dials.import → dials.find_spots → dials.index → dials.refine
* :func:`dials_route_stills`: dials.ssx_integrate (its default algorithm=ellipsoid, falling
  back to algorithm=stills where ellipsoid fails) → dials.scale → dials.merge
* :func:`dials_route_rotation`: dials.integrate → dials.scale → dials.merge
* :func:`factored_route`: dials.factored_integrate → dials.merge (→ dials.export)

:func:`index` and :func:`dials_route` pick the stills or rotation pipeline by mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from dials_factored.programs import check_finished, log_tail, program_path

#: How often the memory of a running program's process tree is sampled (seconds).  One
#: sample reads /proc/<pid>/smaps of every process (15-40 ms each for a DIALS process
#: with ~2,000 mappings): every 0.1 s that took 0.6 of a core from the program measured on
#: a 2-core machine (a 36-frame sweep: 38 s under the sampler against 25 s without).
RSS_SAMPLE_INTERVAL = 1.0

#: dials.integrate stops on a small wedge ("too few spots for profile modelling") unless
#: these are lowered; with enough strong spots they change nothing.
ROTATION_INTEGRATE_ARGS = (
    "profile.gaussian_rs.min_spots.overall=0",
    "profile.gaussian_rs.min_spots.per_degree=0",
)
#: dials.merge's HTML report runs xtriage, which crashes on very small data sets
#: ("mean() argument is an empty array") and makes dials.merge exit 1 after writing the
#: MTZ; the report is not needed for scoring.
MERGE_ARGS = ("output.html=None",)


class ProgramRun(subprocess.CompletedProcess):
    """A finished program: ``subprocess.CompletedProcess`` plus log path, time and memory.

    ``stdout`` is ``None``: the output is in ``log_path``.
    """

    def __init__(self, args, returncode, name: str, log_path: Path, wall_time: float,
                 peak_rss_mb: float):
        super().__init__(args, returncode)
        self.name = name
        self.log_path = log_path
        self.wall_time = wall_time
        self.peak_rss_mb = peak_rss_mb

    def as_dict(self) -> dict:
        """Timing summary for JSON reports."""
        return {"program": self.name, "wall_s": round(self.wall_time, 2),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "log": str(self.log_path)}

    @classmethod
    def from_dict(cls, d: dict) -> ProgramRun:
        """A run recorded by :meth:`as_dict` (the command line is not kept: ``[program]``)."""
        return cls([d["program"]], 0, d["program"], Path(d["log"]), d["wall_s"],
                   d["peak_rss_mb"])


@dataclass
class Stage:
    """The result of a pipeline: its working directory, named output files and the runs."""

    workdir: Path
    files: dict[str, Path] = field(default_factory=dict)
    runs: list[ProgramRun] = field(default_factory=list)
    #: what ran and why, for the tables (e.g. the DIALS stills route's ``algorithm``)
    info: dict = field(default_factory=dict)

    @property
    def wall_time(self) -> float:
        """Total wall time of the stage's programs (seconds)."""
        return sum(r.wall_time for r in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        """Largest peak memory of any of the stage's programs (MB)."""
        return max((r.peak_rss_mb for r in self.runs), default=0.0)

    def timings(self) -> list[dict]:
        """One timing summary per program run."""
        return [r.as_dict() for r in self.runs]

    def add(self, run: ProgramRun) -> ProgramRun:
        """Record a run and return it."""
        self.runs.append(run)
        return run

    def as_dict(self) -> dict:
        """Working directory, files and timings, for JSON (see :meth:`from_dict`)."""
        return {"workdir": str(self.workdir),
                "files": {k: str(v) for k, v in self.files.items()},
                "runs": self.timings(), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> Stage:
        """The stage recorded by :meth:`as_dict`."""
        return cls(Path(d["workdir"]), {k: Path(v) for k, v in d["files"].items()},
                   [ProgramRun.from_dict(r) for r in d["runs"]], dict(d.get("info", {})))


def _tree_rss(proc: psutil.Process) -> int:
    """Memory (bytes) of a process and all its descendants; 0 once gone.

    Each process counts its proportional set size (PSS: pages it shares with others,
    such as the parent's pages in forked workers, divided among them), so that forked
    workers do not count their parent's memory again; plain RSS where PSS is unknown.
    """
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in members:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def _sample_peak_rss(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Sample the tree's memory until ``done`` is set, keeping the maximum in ``peak[0]``."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return
    while not done.is_set():
        peak[0] = max(peak[0], _tree_rss(proc))
        done.wait(RSS_SAMPLE_INTERVAL)


def run_program(name: str, args: Sequence[str], cwd: str | os.PathLike,
                log_dir: str | os.PathLike | None = None,
                expect: Sequence[str] = (), timeout: float | None = None,
                launcher: Sequence[str] = ()) -> ProgramRun:
    """Run DIALS program ``name`` (e.g. ``"dials.import"``) with ``args`` in ``cwd``.

    stdout+stderr go to ``<log_dir or cwd>/<name>.out``.  ``expect`` lists output files
    (relative to ``cwd``) that must exist afterwards.  ``launcher`` is put in front of the
    command (e.g. ``["mpirun", "-n", "2"]``; the memory of its whole process tree counts).
    Raises ``RuntimeError`` on a non-zero exit, a missing expected output or a timeout (the
    process tree is then killed).
    """
    cwd = Path(cwd)
    log_path = Path(log_dir or cwd) / f"{name}.out"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*map(str, launcher), sys.executable, program_path(name), *map(str, args)]
    done, peak = threading.Event(), [0]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        sampler = threading.Thread(target=_sample_peak_rss, args=(proc.pid, done, peak),
                                   daemon=True)
        sampler.start()
        try:
            returncode, max_rss = _wait(proc, timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise RuntimeError(f"{name} timed out after {timeout:.0f} s in {cwd}; "
                               f"last log lines: {log_tail(log_path)} (log: {log_path})") from None
        finally:
            done.set()
            sampler.join()
    run = ProgramRun(cmd, returncode, name, log_path, time.perf_counter() - start,
                     max(peak[0], max_rss) / 2**20)
    check_finished(name, returncode, cwd, log_path, expect)
    return run


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int, int]:
    """Wait for ``proc``; its exit code and the maximum RSS (bytes) the kernel recorded."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss * 1024  # Linux reports kB
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.02)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a program we started and all of its children."""
    try:
        members = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        members = []
    for p in members:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.kill()
    proc.wait()


def _workdir(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def simulate(workdir: str | os.PathLike, mode: str, seed: int, n_images: int | None = None,
             args: Sequence[str] = ()) -> Stage:
    """dials.factored_simulate ``mode`` with ``seed`` (and extra phil ``args``) in ``workdir``.

    Files: ``images`` (the directory of CBF files), ``models``, ``truth_json``,
    ``truth_mtz`` and ``observations`` (the simulator's truth).
    """
    stage = Stage(_workdir(workdir))
    wd = stage.workdir
    stage.add(run_program("dials.factored_simulate",
                          [f"mode={mode}", f"seed={seed}",
                           *([f"n_images={n_images}"] if n_images else []), *args], wd,
                          expect=["truth/models.expt", "truth/truth.mtz",
                                  "truth/observations.npz"]))
    stage.files.update(images=wd / "images", models=wd / "truth" / "models.expt",
                       truth_json=wd / "truth" / "truth.json",
                       truth_mtz=wd / "truth" / "truth.mtz",
                       observations=wd / "truth" / "observations.npz")
    return stage


def _import_and_find_spots(stage: Stage, images: Sequence[str | os.PathLike], nproc: int,
                           find_spots_args: Sequence[str], import_args: Sequence[str] = ()
                           ) -> None:
    wd = stage.workdir
    stage.add(run_program("dials.import", [*(str(Path(i).resolve()) for i in images),
                                           *import_args], wd,
                          expect=["imported.expt"]))
    stage.add(run_program("dials.find_spots", ["imported.expt", f"nproc={nproc}",
                                               *find_spots_args], wd, expect=["strong.refl"]))
    stage.files.update(imported=wd / "imported.expt", strong=wd / "strong.refl")


def _symmetry_args(space_group: str | None, unit_cell: Sequence[float] | None) -> list[str]:
    args = []
    if space_group:
        args.append(f"space_group={space_group.replace(' ', '')}")
    if unit_cell:
        args.append("unit_cell=" + ",".join(f"{x:g}" for x in unit_cell))
    return args


def index_stills(images: Sequence[str | os.PathLike], workdir: str | os.PathLike,
                 space_group: str, unit_cell: Sequence[float], nproc: int = 2,
                 find_spots_args: Sequence[str] = (),
                 index_args: Sequence[str] = (), import_args: Sequence[str] = ()) -> Stage:
    """dials.import → dials.find_spots → dials.ssx_index; files ``expt``/``refl`` = indexed."""
    stage = Stage(_workdir(workdir))
    _import_and_find_spots(stage, images, nproc, find_spots_args, import_args)
    stage.add(run_program("dials.ssx_index",
                          ["imported.expt", "strong.refl", *_symmetry_args(space_group, unit_cell),
                           f"nproc={nproc}", *index_args],
                          stage.workdir, expect=["indexed.expt", "indexed.refl"]))
    stage.files.update(expt=stage.workdir / "indexed.expt", refl=stage.workdir / "indexed.refl")
    return stage


def index_rotation(images: Sequence[str | os.PathLike], workdir: str | os.PathLike,
                   space_group: str | None, nproc: int = 2,
                   unit_cell: Sequence[float] | None = None,
                   find_spots_args: Sequence[str] = (),
                   index_args: Sequence[str] = ()) -> Stage:
    """dials.import → find_spots → index → refine; files ``expt``/``refl`` = refined."""
    stage = Stage(_workdir(workdir))
    wd = stage.workdir
    _import_and_find_spots(stage, images, nproc, find_spots_args)
    stage.add(run_program("dials.index",
                          ["imported.expt", "strong.refl", *_symmetry_args(space_group, unit_cell),
                           *index_args], wd, expect=["indexed.expt", "indexed.refl"]))
    stage.add(run_program("dials.refine", ["indexed.expt", "indexed.refl"], wd,
                          expect=["refined.expt", "refined.refl"]))
    stage.files.update(expt=wd / "refined.expt", refl=wd / "refined.refl")
    return stage


def index(images: Sequence[str | os.PathLike], workdir: str | os.PathLike, mode: str,
          space_group: str, unit_cell: Sequence[float], nproc: int = 2) -> Stage:
    """:func:`index_stills` (``mode="stills"``) or :func:`index_rotation` (``"rotation"``)."""
    if mode == "stills":
        return index_stills(images, workdir, space_group, unit_cell, nproc=nproc)
    return index_rotation(images, workdir, space_group, nproc=nproc, unit_cell=unit_cell)


def _scale_and_merge(stage: Stage, expt: str, refl: str, scale_args: Sequence[str],
                     merge_args: Sequence[str]) -> None:
    wd = stage.workdir
    stage.add(run_program("dials.scale", [expt, refl, "output.html=None", *scale_args], wd,
                          expect=["scaled.expt", "scaled.refl"]))
    stage.add(run_program("dials.merge", ["scaled.expt", "scaled.refl", *MERGE_ARGS,
                                          *merge_args], wd, expect=["merged.mtz"]))
    stage.files.update(scaled_expt=wd / "scaled.expt", scaled_refl=wd / "scaled.refl",
                       merged_mtz=wd / "merged.mtz")


#: dials.ssx_integrate's algorithms, the default first.
SSX_ALGORITHMS = ("ellipsoid", "stills")


def _ssx_integrate(stage: Stage, indexed: Stage, algorithm: str, nproc: int,
                   integrate_args: Sequence[str], log_dir: Path | None = None) -> ProgramRun:
    """dials.ssx_integrate ``algorithm=...`` into one ``integrated_1`` batch in the stage's
    directory (``output.batch_size`` raised so that all images land in it)."""
    wd = stage.workdir
    run = run_program(
        "dials.ssx_integrate",
        [indexed.files["expt"], indexed.files["refl"], f"algorithm={algorithm}",
         f"nproc={nproc}", "output.batch_size=1000000", "output.html=None", *integrate_args],
        wd, log_dir=log_dir, expect=["integrated_1.expt", "integrated_1.refl"])
    if (wd / "integrated_2.expt").exists():
        raise RuntimeError(f"dials.ssx_integrate wrote more than one batch in {wd}")
    return run


def _clear_integrated(workdir: Path) -> None:
    for path in workdir.glob("integrated_*"):
        path.unlink()


def dials_route_stills(indexed: Stage, workdir: str | os.PathLike, nproc: int = 2,
                       integrate_args: Sequence[str] = (), scale_args: Sequence[str] = (),
                       merge_args: Sequence[str] = (), algorithm: str = "auto") -> Stage:
    """dials.ssx_integrate → dials.scale → dials.merge, from indexed stills.

    ``algorithm="auto"`` runs dials.ssx_integrate as a user does, with its default
    ``algorithm=ellipsoid``, and only if that fails (it stops on small sets: "Too few
    reflections to perform refinement", or writes no integrated file) runs
    ``algorithm=stills`` instead; ``"ellipsoid"`` or ``"stills"`` run that one only.
    ``stage.info`` records what ran: ``algorithm`` (the one whose data are scaled),
    ``requested``, ``reason`` (one line, for tables) and, after a fallback,
    ``ellipsoid_error`` and ``ellipsoid_wall_s`` (the failed attempt's time, not counted
    in the stage's runs; its log is ``<workdir>/ellipsoid_failed/``).
    """
    if algorithm not in ("auto", *SSX_ALGORITHMS):
        raise ValueError(f"algorithm must be auto, ellipsoid or stills, not {algorithm!r}")
    stage = Stage(_workdir(workdir))
    wd = stage.workdir
    stage.info = {"requested": algorithm}
    if algorithm == "auto":
        start = time.perf_counter()
        try:
            stage.add(_ssx_integrate(stage, indexed, "ellipsoid", nproc, integrate_args))
            stage.info.update(algorithm="ellipsoid",
                              reason="algorithm=ellipsoid (dials.ssx_integrate's default)")
        except RuntimeError as e:
            failed = wd / "ellipsoid_failed"
            failed.mkdir(exist_ok=True)
            log = wd / "dials.ssx_integrate.out"
            if log.exists():
                log.replace(failed / log.name)
            _clear_integrated(wd)
            stage.info.update(ellipsoid_error=str(e),
                              ellipsoid_wall_s=round(time.perf_counter() - start, 2))
            stage.add(_ssx_integrate(stage, indexed, "stills", nproc, integrate_args))
            stage.info.update(algorithm="stills",
                              reason="algorithm=stills: the default algorithm=ellipsoid "
                                     "failed (" + _reason(e) + ")")
    else:
        stage.add(_ssx_integrate(stage, indexed, algorithm, nproc, integrate_args))
        stage.info.update(algorithm=algorithm, reason=f"algorithm={algorithm} (as asked)")
    stage.files.update(integrated_expt=wd / "integrated_1.expt",
                       integrated_refl=wd / "integrated_1.refl")
    _scale_and_merge(stage, "integrated_1.expt", "integrated_1.refl", scale_args, merge_args)
    return stage


def _reason(error: Exception, limit: int = 160) -> str:
    """The first part of a failed program's one-line error, for a table."""
    text = str(error).split("; last log lines: ")[-1].split(" (log: ")[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def dials_route_rotation(refined: Stage, workdir: str | os.PathLike, nproc: int = 2,
                         integrate_args: Sequence[str] = ROTATION_INTEGRATE_ARGS,
                         scale_args: Sequence[str] = (),
                         merge_args: Sequence[str] = ()) -> Stage:
    """dials.integrate → dials.scale → dials.merge, from refined rotation data."""
    stage = Stage(_workdir(workdir))
    wd = stage.workdir
    stage.add(run_program("dials.integrate",
                          [refined.files["expt"], refined.files["refl"], f"nproc={nproc}",
                           *integrate_args], wd,
                          expect=["integrated.expt", "integrated.refl"]))
    stage.files.update(integrated_expt=wd / "integrated.expt",
                       integrated_refl=wd / "integrated.refl")
    _scale_and_merge(stage, "integrated.expt", "integrated.refl", scale_args, merge_args)
    return stage


def dials_route(indexed: Stage, workdir: str | os.PathLike, mode: str,
                nproc: int = 2, algorithm: str = "auto") -> Stage:
    """:func:`dials_route_stills` (with ``algorithm``) or :func:`dials_route_rotation`
    (``stage.info["algorithm"] = "integrate"``) by ``mode``."""
    if mode == "stills":
        return dials_route_stills(indexed, workdir, nproc=nproc, algorithm=algorithm)
    stage = dials_route_rotation(indexed, workdir, nproc=nproc)
    stage.info = {"algorithm": "integrate", "reason": "dials.integrate (rotation)"}
    return stage


def factored_route(indexed: Stage, workdir: str | os.PathLike, nproc: int = 2,
                   integrate_args: Sequence[str] = (), merge_args: Sequence[str] = (),
                   timeout: float | None = None, export: bool = True) -> Stage:
    """dials.factored_integrate → dials.merge (→ dials.export, an unmerged scaled MTZ).

    dials.factored_integrate writes integrated *and scaled* data, so there is no
    dials.scale step.  Files: ``scaled_expt``/``scaled_refl`` (factored.*),
    ``merged_mtz`` and, with ``export``, ``unmerged_mtz``.
    """
    stage = Stage(_workdir(workdir))
    wd = stage.workdir
    stage.add(run_program("dials.factored_integrate",
                          [indexed.files["expt"], indexed.files["refl"], f"nproc={nproc}",
                           *integrate_args], wd,
                          expect=["factored.expt", "factored.refl"], timeout=timeout))
    stage.add(run_program("dials.merge", ["factored.expt", "factored.refl", *MERGE_ARGS,
                                          *merge_args], wd, expect=["merged.mtz"]))
    stage.files.update(scaled_expt=wd / "factored.expt", scaled_refl=wd / "factored.refl",
                       merged_mtz=wd / "merged.mtz")
    if export:
        stage.add(run_program("dials.export", ["factored.expt", "factored.refl", "format=mtz",
                                               "mtz.hklout=factored_unmerged.mtz"], wd,
                              expect=["factored_unmerged.mtz"]))
        stage.files["unmerged_mtz"] = wd / "factored_unmerged.mtz"
    return stage
