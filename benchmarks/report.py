"""Shared pieces of the benchmark reports: progress lines, step tables, the results file."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil

from harness import dials_programs as dp
from harness import evaluate as ev

#: The repository (for the git commit recorded with every result).
REPO = Path(__file__).resolve().parents[1]
#: The programs that integrate and scale (what the wall-time targets compare), per route.
INTEGRATE_AND_SCALE = {"dials": ("dials.ssx_integrate", "dials.integrate", "dials.scale"),
                       "factored": ("dials.factored_integrate",)}


def progress(message: str) -> None:
    """One progress line on stdout, flushed."""
    print(f"[bench] {message}", flush=True)


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table; "–" for None or NaN."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float:
    """a/b, NaN when either is missing or b is 0."""
    return a / b if a is not None and b else math.nan


def program_runs(stage: dp.Stage, names: tuple[str, ...]) -> list[dp.ProgramRun]:
    """The stage's runs of the programs ``names``."""
    return [r for r in stage.runs if r.name in names]


def integrate_and_scale(route: str, stage: dp.Stage) -> tuple[float, float]:
    """(wall time in s, peak RSS in MB) of the integration and scaling programs of a route
    (DIALS: dials.ssx_integrate or dials.integrate + dials.scale; factored:
    dials.factored_integrate; a route named ``dials*``, e.g. ``dials_stills``, is a DIALS
    route); merging is left out on both sides."""
    runs = program_runs(stage, INTEGRATE_AND_SCALE["dials" if route.startswith("dials")
                                                   else route])
    return sum(r.wall_time for r in runs), max((r.peak_rss_mb for r in runs), default=math.nan)


def integrate_and_scale_dict(routes: Mapping[str, dp.Stage]) -> dict:
    """:func:`integrate_and_scale` of each route, for JSON."""
    out = {}
    for name, stage in routes.items():
        wall, rss = integrate_and_scale(name, stage)
        out[name] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1)}
    return out


def steps(stages: Mapping[str, dp.Stage]) -> list[dict]:
    """Every program run of the stages, labelled with its stage, for JSON."""
    return [{"stage": name, **run.as_dict()} for name, stage in stages.items()
            for run in stage.runs]


def steps_table(rows: list[dict]) -> str:
    """Markdown: stage, program, wall time and peak RSS of every step."""
    return ev.markdown_table(
        ["stage", "program", "wall (s)", "peak RSS (MB)"],
        [[r["stage"], r["program"], fmt(r["wall_s"], 1), fmt(r["peak_rss_mb"], 0)]
         for r in rows])


def route_summary(routes: Mapping[str, dp.Stage], extra: list[tuple[str, float, float, int]]
                  ) -> str:
    """Markdown: DIALS, factored and factored/DIALS for the integrate+scale wall time and
    peak RSS, the whole route's wall time, then ``extra`` rows (label, dials, factored,
    digits)."""
    rows = []
    timing = {name: integrate_and_scale(name, stage) for name, stage in routes.items()}
    lines = [("wall time, integrate + scale (s)", timing["dials"][0], timing["factored"][0], 1),
             ("peak RSS, integrate + scale (MB)", timing["dials"][1], timing["factored"][1], 0),
             ("wall time, whole route with dials.merge (s)", routes["dials"].wall_time,
              routes["factored"].wall_time, 1),
             *extra]
    for label, d, f, digits in lines:
        rows.append([label, fmt(d, digits), fmt(f, digits), fmt(ratio(f, d), 2)])
    return ev.markdown_table(["", "DIALS", "factored", "factored/DIALS"], rows)


def environment() -> dict:
    """Where and on what the benchmark ran: host, load, software versions, git commit."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from dials.util.version import dials_version

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "dials": dials_version(),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def write_results(results: dict, directory: Path, mode: str) -> Path:
    """``<directory>/<date>-<mode>.json`` (an earlier run of the same day is replaced);
    NaN is written as null."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{datetime.date.today().isoformat()}-{mode}.json"
    path.write_text(json.dumps(ev.without_nan(results), indent=1, default=str) + "\n")
    return path
