"""Run a DIALS program as a subprocess of the same interpreter (what the shipped xia2 stage needs).

Every program runs as ``[sys.executable, <script>, args...]`` so that it uses the caller's
interpreter (the venv that sees Debian's DIALS and the libtbx environment).  Its stdout and
stderr go to ``<log_dir>/<program>.out``.  A program fails loudly: a non-zero exit, or a zero
exit without an expected output file (DIALS sometimes exits 0 after an error), raises a
one-line :class:`RuntimeError` naming the program, the exit code and the last lines of its log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: Lines of the log quoted in the error message of a failed program.
ERROR_TAIL_LINES = 3
#: Log lines worth quoting first when a program fails (DIALS prints help after some errors).
_ERROR_LINE = re.compile(r"error|sorry|not found|failed|no suitable|exception", re.IGNORECASE)


def program_path(name: str) -> str:
    """The console script of a DIALS program: next to the interpreter, on PATH, or /usr/bin."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name) or f"/usr/bin/{name}"


def log_tail(path: Path, n: int = ERROR_TAIL_LINES) -> str:
    """One line: the last error-like line of a log (if any) and its last ``n`` lines."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines[:-n] if _ERROR_LINE.search(ln)]
    tail = " | ".join(lines[-n:]) or "(empty log)"
    return f"{errors[-1]} ... {tail}" if errors else tail


def check_finished(name: str, returncode: int, cwd: Path, log_path: Path,
                   expect: Sequence[str] = ()) -> None:
    """Raise ``RuntimeError`` if ``name`` exited non-zero or did not write ``expect``."""
    if returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {returncode} in {cwd}; "
                           f"last log lines: {log_tail(log_path)} (log: {log_path})")
    missing = [f for f in expect if not (cwd / f).is_file()]
    if missing:
        raise RuntimeError(f"{name} exited 0 but did not write {', '.join(missing)} in {cwd}; "
                           f"last log lines: {log_tail(log_path)} (log: {log_path})")


def run_program(name: str, args: Sequence[str], cwd: str | os.PathLike,
                log_dir: str | os.PathLike | None = None,
                expect: Sequence[str] = ()) -> tuple[Path, float]:
    """Run ``name`` with ``args`` in ``cwd``; its log path and wall time (seconds).

    ``expect`` lists output files (relative to ``cwd``) that must exist afterwards.
    """
    cwd = Path(cwd)
    log_path = Path(log_dir or cwd) / f"{name}.out"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, program_path(name), *map(str, args)], cwd=cwd,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    check_finished(name, done.returncode, cwd, log_path, expect)
    return log_path, time.perf_counter() - start
