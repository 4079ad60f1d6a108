"""Bad input and faults (issue 6): one clear error, exit ≠ 0, inputs untouched, no output.

Every case runs ``dials.factored_integrate`` as a subprocess (the real exit code and
stderr) in an empty output directory, on its own copy of a small simulated stills set
indexed by DIALS (8 images, 512² pixels).  Each asserts the one-line ``Sorry`` message
names the problem, the exit code is non-zero, every input (.expt, .refl, images, masks,
reference) is byte-identical afterwards and the output directory is empty: not even the
log is written for input that can be checked before reading images.  Faults during the run
(an unreadable image, all pixels masked, Ctrl-C) leave only the log, never a data file or
a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from dials.array_family import flex

from harness import dials_programs as dp

pytestmark = pytest.mark.slow

MODULE = "dials_factored.command_line.factored_integrate"
OUTPUTS = {"factored.expt", "factored.refl", "factored_parameters.json",
           "dials.factored_integrate.html", "dials.factored_integrate.log"}
LOG = "dials.factored_integrate.log"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """8 simulated stills (P2₁2₁2₁) indexed by dials.ssx_index: images/, index/, truth/."""
    work = tmp_path_factory.mktemp("bad_input")
    dp.run_program("dials.factored_simulate",
                   ["mode=stills", "seed=3", "n_images=8", "detector.size=512,512"], work,
                   expect=["truth/truth.mtz"])
    dp.index_stills(sorted((work / "images").glob("*.cbf")), work / "index", "P212121",
                    (40, 50, 60, 90, 90, 90), nproc=1)
    return work


class DataSet:
    """A private copy of the indexed set: its own images, .expt (pointing at them), .refl."""

    def __init__(self, indexed: Path, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.images = root / "images"
        shutil.copytree(indexed / "images", self.images)
        text = (indexed / "index" / "indexed.expt").read_text()
        self.expt = root / "indexed.expt"
        self.expt.write_text(text.replace(str(indexed / "images"), str(self.images)))
        self.refl = root / "indexed.refl"
        shutil.copy(indexed / "index" / "indexed.refl", self.refl)
        self.mtz = indexed / "truth" / "truth.mtz"
        self.out = root / "out"
        self.out.mkdir()

    def image_paths(self) -> list[Path]:
        return sorted(self.images.glob("*.cbf"))

    def expt_json(self) -> dict:
        return json.loads(self.expt.read_text())

    def table(self):
        return flex.reflection_table.from_file(str(self.refl))


@pytest.fixture
def data(indexed, tmp_path) -> DataSet:
    return DataSet(indexed, tmp_path / "set")


def snapshot(root: Path) -> dict:
    """sha256 of every file under ``root`` except the output directory."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "out" not in p.relative_to(root).parts}


def integrate(args, cwd: Path, as_user: str | None = None) -> subprocess.CompletedProcess:
    """The command in a subprocess (optionally as another user when we are root)."""
    preexec = None
    if as_user and os.geteuid() == 0:
        user = pwd.getpwnam(as_user)

        def preexec():
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    return subprocess.run([sys.executable, "-m", MODULE, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec)


def assert_refused(proc, *words: str) -> str:
    """Exit ≠ 0 and one line on stderr, "Sorry: …", naming every one of ``words``."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    message = lines[0]
    assert message.startswith("Sorry: "), message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def check_bad_input(data: DataSet, args, *words: str, leaves=()) -> str:
    """Run with ``args``; refused with ``words``, inputs unchanged, ``out`` holds only
    ``leaves``."""
    before = snapshot(data.root)
    proc = integrate(args, data.out)
    message = assert_refused(proc, *words)
    assert snapshot(data.root) == before
    assert sorted(os.listdir(data.out)) == sorted(leaves)
    return message


# --- files that cannot be read ------------------------------------------------------


def test_nonexistent_input(data):
    check_bad_input(data, [data.root / "nothere.expt", data.refl], "nothere.expt", "not exist")


def test_input_is_a_directory(data):
    check_bad_input(data, [data.images, data.refl], "images", "directory")


@pytest.mark.parametrize("target, cut", [("expt", 3000), ("refl", 20000), ("refl", 0),
                                         ("expt", 0)])
def test_truncated_input(data, target, cut):
    path = data.expt if target == "expt" else data.refl
    path.write_bytes(path.read_bytes()[:cut])
    check_bad_input(data, [data.expt, data.refl], path.name, "truncated, corrupt")


def test_corrupt_reflection_file(data):
    data.refl.write_bytes(b"\x93\xa3not msgpack at all" * 50)
    check_bad_input(data, [data.expt, data.refl], "indexed.refl", "corrupt")


def test_unreadable_input(indexed):
    """Permission denied on the .expt (run as nobody when the tests run as root)."""
    public = Path(tempfile.mkdtemp(prefix="factored_bad_input_"))
    try:
        public.chmod(0o755)
        expt, refl, out = public / "indexed.expt", public / "indexed.refl", public / "out"
        shutil.copy(indexed / "index" / "indexed.expt", expt)
        shutil.copy(indexed / "index" / "indexed.refl", refl)
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        refl.chmod(0o644)
        expt.chmod(0)
        digest = hashlib.sha256(expt.read_bytes()).hexdigest()
        proc = integrate([expt, refl], out, as_user="nobody")
        assert_refused(proc, "indexed.expt", "not readable")
        assert hashlib.sha256(expt.read_bytes()).hexdigest() == digest
        assert os.listdir(out) == []
    finally:
        shutil.rmtree(public)


# --- reflection tables that do not fit the experiments ---------------------------------


def _write_table(data: DataSet, change) -> None:
    table = data.table()
    change(table)
    table.as_file(str(data.refl))


def test_reflection_ids_beyond_the_experiments(data):
    _write_table(data, lambda t: t.__setitem__("id", t["id"] + 3))
    n = len(data.expt_json()["experiment"])
    check_bad_input(data, [data.expt, data.refl], f"id(s) {n}", f"only {n} experiment",
                    "does not belong")


def test_reflection_table_without_experiment_identifiers(data):
    def strip(table):
        for key in list(table.experiment_identifiers().keys()):
            del table.experiment_identifiers()[key]

    _write_table(data, strip)
    check_bad_input(data, [data.expt, data.refl], "no experiment identifiers")


def test_reflection_table_of_other_experiments(data):
    def rename(table):
        for key, value in list(table.experiment_identifiers()):
            table.experiment_identifiers()[key] = value[::-1]

    _write_table(data, rename)
    check_bad_input(data, [data.expt, data.refl], "identifiers do not match", "reflection id 0")


def test_empty_reflection_table(data):
    _write_table(data, lambda t: t.del_selected(flex.bool(len(t), True)))
    check_bad_input(data, [data.expt, data.refl], "reflection table is empty")


@pytest.mark.parametrize("columns", [["miller_index"], ["id"], ["id", "miller_index"]])
def test_missing_required_columns(data, columns):
    def drop(table):
        for c in columns:
            del table[c]

    _write_table(data, drop)
    message = check_bad_input(data, [data.expt, data.refl], "lacks required column")
    named = message.split("column(s): ")[1].split(" (")[0]
    assert sorted(named.split(", ")) == sorted(columns)


def test_experiments_without_crystal(indexed, data):
    """dials.import output (no crystal) with the spot finder's table."""
    imported = data.root / "imported.expt"
    text = (indexed / "index" / "imported.expt").read_text()
    imported.write_text(text.replace(str(indexed / "images"), str(data.images)))
    strong = data.root / "strong.refl"
    shutil.copy(indexed / "index" / "strong.refl", strong)
    check_bad_input(data, [imported, strong], "experiment 0 has no crystal", "index")


def test_same_experiments_twice(data):
    check_bad_input(data, [data.expt, data.expt, data.refl], "already in ExperimentList")


# --- images ---------------------------------------------------------------------------


def test_missing_image(data):
    victim = data.image_paths()[3]
    victim.unlink()
    check_bad_input(data, [data.expt, data.refl], str(victim), "do not exist")


def test_truncated_image_stops_the_run(data):
    """Policy: an image that cannot be read mid-run stops the run with one line naming it;
    only the log remains (it records the images read before)."""
    victim = data.image_paths()[-1]
    victim.write_bytes(victim.read_bytes()[:5000])
    before = snapshot(data.root)
    proc = integrate([data.expt, data.refl], data.out)
    assert_refused(proc, f"image {victim} could not be read", "nothing was written")
    assert snapshot(data.root) == before
    assert os.listdir(data.out) == [LOG]
    assert "read 1/8 images" in (data.out / LOG).read_text()  # it failed mid-run


def test_all_pixels_masked(data):
    """A mask (dials.generate_mask + dials.apply_mask) that covers the whole detector."""
    dp.run_program("dials.generate_mask", [data.expt, "untrusted.rectangle=0,512,0,512"],
                   data.root)
    masks = [f"input.mask={p}" for p in sorted(data.root.glob("pixels_*.mask"))]
    dp.run_program("dials.apply_mask", [data.expt, *masks, "output.experiments=masked.expt"],
                   data.root, expect=["masked.expt"])
    check_bad_input(data, [data.root / "masked.expt", data.refl], "no reflection could be "
                    "integrated", "masked", leaves=[LOG])


def _with_trusted_max(data: DataSet, trusted_max: float) -> Path:
    models = data.expt_json()
    for panel in models["detector"][0]["panels"]:
        panel["trusted_range"] = [-1.0, trusted_max]
    path = data.root / "overloaded.expt"
    path.write_text(json.dumps(models))
    return path


def test_overloaded_spots_are_flagged_not_scaled(data):
    """Pixels at or above the trusted maximum: the run succeeds; the reflections touching
    them are flagged overloaded and bad_for_scaling (dials.merge drops them), and they are
    the bright ones."""
    full = integrate([data.expt, data.refl], data.out)
    assert full.returncode == 0, full.stderr
    assert set(os.listdir(data.out)) == OUTPUTS
    baseline = flex.reflection_table.from_file(str(data.out / "factored.refl"))
    assert baseline.get_flags(baseline.flags.overloaded).count(True) == 0

    low = data.root / "low"
    low.mkdir()
    proc = integrate([_with_trusted_max(data, 200.0), data.refl], low)
    assert proc.returncode == 0, proc.stderr
    table = flex.reflection_table.from_file(str(low / "factored.refl"))
    over = table.get_flags(table.flags.overloaded)
    assert over.count(True) > 10
    assert (over & table.get_flags(table.flags.scaled)).count(True) == 0
    assert (over & ~table.get_flags(table.flags.bad_for_scaling)).count(True) == 0
    # the overloaded reflections are the strongest of the normal run in recorded counts:
    # prf is the full-reflection estimate J/p (DIALS's meaning), J = prf·p
    from dials_factored.arrays import to_numpy

    counts = to_numpy(baseline["intensity.prf.value"]) * to_numpy(baseline["partiality"])
    key = {(i, h): v for i, h, v in zip(baseline["id"], baseline["miller_index"], counts)}
    strong = [key[(i, h)] for i, h, o in zip(table["id"], table["miller_index"], over)
              if o and (i, h) in key]
    assert len(strong) > 10
    all_values = sorted(key.values())
    assert sorted(strong)[len(strong) // 2] > all_values[int(0.9 * len(all_values))]


# --- the reference --------------------------------------------------------------------


def _reference(data: DataSet, kind: str) -> Path:
    from cctbx import crystal
    from iotbx import mtz

    array = mtz.object(str(data.mtz)).as_miller_arrays()[0]
    path = data.root / f"{kind}.mtz"
    if kind == "no_intensity":
        array = array.customized_copy(sigmas=None).set_observation_type(None)
        dataset = array.as_mtz_dataset(column_root_label="PHI", column_types="P")
    elif kind == "space_group":
        dataset = array.customized_copy(crystal_symmetry=crystal.symmetry(
            array.unit_cell(), "P 2 2 2")).as_mtz_dataset(column_root_label="I")
    else:
        cell = [1.2 * x for x in array.unit_cell().parameters()[:3]] + [90, 90, 90]
        dataset = array.customized_copy(crystal_symmetry=crystal.symmetry(
            cell, "P 21 21 21")).as_mtz_dataset(column_root_label="I")
    dataset.mtz_object().write(str(path))
    return path


@pytest.mark.parametrize("kind, words", [
    ("no_intensity", ["no intensity or amplitude column", "PHI"]),
    ("space_group", ["space group P 2 2 2", "data are P 21 21 21"]),
    ("cell", ["cell (48.00, 60.00, 72.00", "incompatible"]),
])
def test_unusable_reference(data, kind, words):
    check_bad_input(data, [data.expt, data.refl, f"reference={_reference(data, kind)}"],
                    f"{kind}.mtz", *words)


def test_corrupt_reference(data):
    bad = data.root / "bad.mtz"
    bad.write_bytes(b"not an mtz file\n" * 10)
    check_bad_input(data, [data.expt, data.refl, f"reference={bad}"], "bad.mtz",
                    "could not be read")


# --- parameters and output paths -------------------------------------------------------


@pytest.mark.parametrize("arg, words", [
    ("integration.nonsense=3", ["unrecognised parameter", "integration.nonsense=3"]),
    ("d_min=-1", ["invalid parameter", "d_min", "-1"]),
    ("nproc=0", ["invalid parameter", "nproc", "0 < 1"]),
    ("d_min=abc", ["invalid parameter", "d_min", "abc"]),
])
def test_invalid_parameter(data, arg, words):
    check_bad_input(data, [data.expt, data.refl, arg], *words)


@pytest.mark.parametrize("option, target", [
    ("output.reflections", "refl"), ("output.log", "expt"), ("output.html", "image"),
    ("output.parameters", "reference")])
def test_output_equal_to_an_input(data, option, target):
    reference = data.root / "ref.mtz"
    shutil.copy(data.mtz, reference)
    path = {"refl": data.refl, "expt": data.expt, "image": data.image_paths()[0],
            "reference": reference}[target]
    check_bad_input(data, [data.expt, data.refl, f"reference={reference}", f"{option}={path}"],
                    str(path), "would overwrite an input")


@pytest.mark.parametrize("option, value, words", [
    ("output.reflections", "missing_dir/x.refl", ["missing_dir", "does not exist"]),
    ("output.experiments", "..", ["is a directory"]),
    ("output.parameters", "factored.refl", ["factored.refl", "same file"]),
    ("output.scratch", "no_such_dir", ["output.scratch no_such_dir", "not a writable directory"]),
])
def test_bad_output_path(data, option, value, words):
    check_bad_input(data, [data.expt, data.refl, f"{option}={value}"], *words)


def test_unwritable_output_directory(indexed):
    """An output directory without write permission (as nobody when we are root)."""
    public = Path(tempfile.mkdtemp(prefix="factored_bad_output_"))
    try:
        public.chmod(0o755)
        data = DataSet(indexed, public / "set")
        for p in data.root.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        data.out.chmod(0o555)
        before = snapshot(data.root)
        proc = integrate([data.expt, data.refl], data.out, as_user="nobody")
        assert_refused(proc, str(data.out), "not writable")
        assert snapshot(data.root) == before
        assert os.listdir(data.out) == []
    finally:
        shutil.rmtree(public)


# --- Ctrl-C -----------------------------------------------------------------------------


def test_ctrl_c_leaves_no_output_and_no_temporary_file(data):
    """SIGINT during the fit: exit ≠ 0, one line, no output file, no temporary file
    (neither in the output directory nor the pixel store's scratch directory)."""
    scratch = data.root / "scratch"
    scratch.mkdir()
    before = snapshot(data.root)
    # the child starts with Ctrl-C at its default (a runner started in the background of
    # a shell ignores SIGINT, the child inherits that, and Python then never raises
    # KeyboardInterrupt: the run finished with exit 0)
    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, data.expt, data.refl, "refinement.n_cycles=50",
         f"output.scratch={scratch}"], cwd=data.out, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("Cycle 1:"):
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert stderr.strip().splitlines() == [
        "Sorry: interrupted by the user (Ctrl-C); nothing was written"]
    assert snapshot(data.root) == before
    assert os.listdir(data.out) == [LOG]
    assert os.listdir(scratch) == []


def test_ctrl_c_while_writing_completes_the_outputs(tmp_path):
    """A Ctrl-C during the writing is held until every output is written (all or none)."""
    from dials_factored.command_line.factored_integrate import _write_all

    def write(text, path):
        if path.name == "a.txt":
            os.kill(os.getpid(), signal.SIGINT)
        path.write_text(text)

    paths = [tmp_path / n for n in ("a.txt", "b.txt", "c.txt")]
    assert _write_all([(write, "x", p) for p in paths]) is True
    assert all(p.read_text() == "x" for p in paths)
    assert _write_all([(write, "y", paths[1])]) is False


def test_a_failed_write_says_what_was_written(tmp_path):
    from dials.util import Sorry

    from dials_factored.command_line.factored_integrate import _write_all

    def write(text, path):
        if path.name == "b.txt":
            raise OSError(28, "No space left on device")
        path.write_text(text)

    paths = [tmp_path / n for n in ("a.txt", "b.txt", "c.txt")]
    with pytest.raises(Sorry, match=r"could not write .*b.txt \(No space left on device\); "
                       r"written before it: .*a.txt$"):
        _write_all([(write, "x", p) for p in paths])
    assert not paths[2].exists()


# --- parameters that divide, and empty experiment lists (issue 18, item 9) ------------


@pytest.mark.parametrize("arg, words", [
    ("detector.gain=0", ["detector.gain=0", "must be positive", "divided"]),
    ("partiality.mosaic=0", ["partiality.mosaic=0", "must be positive"]),
    ("partiality.r0=0", ["partiality.r0=0", "must be positive"]),
    ("profile.r1=0", ["profile.r1=0", "must be positive"]),
    ("partiality.log_r0_prior_sigma=0", ["log_r0_prior_sigma=0", "prior"]),
    ("partiality.log_mosaic_prior_sigma=0", ["log_mosaic_prior_sigma=0", "prior"]),
    ("scale.b_prior_sigma=0", ["scale.b_prior_sigma=0", "prior"]),
    ("scale.smoothness.log_g=0", ["scale.smoothness.log_g=0", "prior"]),
    ("scale.smoothness.b=0", ["scale.smoothness.b=0", "prior"]),
    ("profile.smoothness=0", ["profile.smoothness=0", "prior"]),
    ("refinement.orientation_prior_sigma=0", ["orientation_prior_sigma=0", "prior"]),
    ("detector.gain=-2", ["invalid parameter", "detector.gain"]),
])
def test_zero_parameter_that_divides(data, arg, words):
    """Each of these ran a whole integration before (or failed deep inside it)."""
    check_bad_input(data, [data.expt, data.refl, arg], *words)


def test_experiment_list_without_experiments(data):
    """An .expt holding an empty list exited 0 with the help text before."""
    from dxtbx.model.experiment_list import ExperimentList

    empty = data.root / "empty.expt"
    ExperimentList().as_file(str(empty))
    check_bad_input(data, [empty, data.refl], "empty.expt", "holds no experiments")
    check_bad_input(data, [empty], "empty.expt", "holds no experiments")


def test_reflections_without_experiments(data):
    check_bad_input(data, [data.refl], "no experiments were given")


def test_no_arguments_prints_the_help(tmp_path):
    proc = integrate([], tmp_path)
    assert proc.returncode == 0 and "usage: dials.factored_integrate" in proc.stdout
    assert os.listdir(tmp_path) == []
