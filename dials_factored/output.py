"""Writing outputs atomically: a temporary file in the target directory, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dials.util import Sorry


def check_paths(outputs, inputs) -> None:
    """Refuse to overwrite an input, or to write where we cannot."""
    resolved_in = {Path(p).resolve() for p in inputs}
    for out in outputs:
        path = Path(out).resolve()
        if path in resolved_in:
            raise Sorry(f"output {out} would overwrite an input file; choose another name")
        parent = path.parent
        if not parent.is_dir():
            raise Sorry(f"output directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise Sorry(f"output directory {parent} is not writable")


def _atomic(path: str, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_reflections(table, path: str) -> None:
    _atomic(path, table.as_file)


def write_experiments(experiments, path: str) -> None:
    _atomic(path, experiments.as_file)


def write_json(data, path: str) -> None:
    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    _atomic(path, dump)


def write_text(text: str, path: str) -> None:
    def dump(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, dump)


def write_mtz(mtz_object, path: str) -> None:
    _atomic(path, lambda tmp: mtz_object.write(tmp))
