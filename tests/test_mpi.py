"""mp.method=mpi: ranks that share the images give the one-process answer, and fail together.

Each test runs ``mpirun`` (oversubscribed: this machine has two cores) on a small
simulated set, integrated from the true models so that no indexing is involved.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dials_factored.arrays import to_numpy
from harness import dials_programs as dp

SIM = {
    "stills": ["mode=stills", "seed=11", "n_images=12", "detector.size=768,768"],
    "rotation": ["mode=rotation", "seed=11", "n_images=16", "detector.size=768,768"],
}
BANDWIDTH = {"stills": "beam.bandwidth=0.002", "rotation": "beam.bandwidth=0.0002"}


def _mpi_available() -> str | None:
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (Debian: openmpi-bin)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (Debian: python3-mpi4py)"
    return None


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_mpi_available() is not None,
                                 reason=str(_mpi_available()))]


@pytest.fixture(scope="module", params=["stills", "rotation"])
def sim(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"mpi-{request.param}") / "sim"
    path.mkdir()
    dp.run_program("dials.factored_simulate", SIM[request.param], path,
                   expect=["truth/models.expt"])
    return request.param, path


def mpirun(n: int, args: list[str], cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """``dials.factored_integrate args mp.method=mpi`` on ``n`` ranks."""
    cwd.mkdir(parents=True, exist_ok=True)
    launcher = ["mpirun", "--oversubscribe", "-n", str(n)]
    if os.geteuid() == 0:
        launcher.insert(1, "--allow-run-as-root")
    command = [*launcher, sys.executable, "-m",
               "dials_factored.command_line.factored_integrate", *args, "mp.method=mpi"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def intensities(directory) -> dict:
    """(experiment id, h, k, l, frame) → (I, σ², inverse scale) of an output table."""
    from dials.array_family import flex

    table = flex.reflection_table.from_file(str(directory / "factored.refl"))
    frame = np.round(to_numpy(table["xyzcal.px"])[:, 2], 3).tolist()
    keys = zip(to_numpy(table["id"]).tolist(), map(tuple, to_numpy(table["miller_index"])),
               frame)
    values = zip(to_numpy(table["intensity.prf.value"]),
                 to_numpy(table["intensity.prf.variance"]),
                 to_numpy(table["inverse_scale_factor"]))
    return dict(zip(keys, values))


def test_ranks_agree_with_one_process(sim, tmp_path):
    """mpirun -n 1, 2 and 4 give the intensities of plain nproc=2 to 1e-6 relative."""
    mode, path = sim
    args = [str(path / "truth" / "models.expt"), BANDWIDTH[mode], "output.html=None"]
    dp.run_program("dials.factored_integrate", [*args, "nproc=2"], tmp_path / "plain",
                   expect=["factored.refl"])
    reference = intensities(tmp_path / "plain")
    assert len(reference) > 500
    for n in (1, 2, 4):
        run = mpirun(n, args, tmp_path / f"ranks{n}")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        got = intensities(tmp_path / f"ranks{n}")
        assert got.keys() == reference.keys(), f"{n} ranks integrated other reflections"
        ref = np.array([reference[k] for k in reference])
        new = np.array([got[k] for k in reference])
        for column in range(ref.shape[1]):
            np.testing.assert_allclose(
                new[:, column], ref[:, column], rtol=1e-6,
                atol=1e-6 * float(np.abs(ref[:, column]).max()),
                err_msg=f"{n} ranks differ from one process")


def test_error_on_one_rank_stops_every_rank(sim, tmp_path):
    """An unreadable image in the last rank's share: every rank stops with the same
    one-line error, none hangs, and no output is written."""
    mode, path = sim
    work = tmp_path / "copy"
    shutil.copytree(path, work)
    images = sorted((work / "images").glob("*.cbf"))
    victim = images[-1]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated mid-run
    out = tmp_path / "out"
    run = mpirun(2, [str(work / "truth" / "models.expt"), BANDWIDTH[mode]], out, timeout=300)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    # the ranks share one pipe: a rank's line may run into the other's
    errors = re.findall(r"Sorry: (.+?)(?=Sorry: |\n|$)", text)
    assert len(errors) == 2, text[-3000:]
    assert errors[0] == errors[1] and victim.name in errors[0]
    assert not any((out / name).exists() for name in
                   ("factored.refl", "factored.expt", "factored_parameters.json"))
