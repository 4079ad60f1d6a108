"""Sums and gathers across the processes of one run: one process, or MPI ranks.

The factored fit is a sum over reflections, so ranks that each hold a share of
the images need to exchange only sufficient statistics: the normal equations
of each LM step, the per-reflection-group sums behind I_h, and per-reflection
numbers for the error model and the output — never pixels.  ``world()`` is the
communicator of the run: a serial stand-in unless ``use_mpi()`` was called.
"""

from __future__ import annotations

import numpy as np


class Serial:
    """One process: every collective operation is the identity."""

    rank = 0
    size = 1
    #: bytes this process sent to sums so far (one process: what MPI ranks would send)
    bytes_summed = 0

    def _count(self, values) -> None:
        self.bytes_summed += 8 if np.isscalar(values) else 8 * np.size(values)

    def sum(self, values):
        self._count(values)
        return values

    def min(self, value: float) -> float:
        return value

    def max(self, value: float) -> float:
        return value

    def gather(self, value) -> list | None:
        """[value] on rank 0 (the values of all ranks in rank order), None elsewhere."""
        return [value]

    def allgather(self, value) -> list:
        return [value]

    def first_error(self, message: str | None) -> str | None:
        """The first rank's error message if any rank has one (same on every rank)."""
        return message


class MPIWorld(Serial):
    """MPI ranks (mpi4py's COMM_WORLD)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def sum(self, values):
        from mpi4py import MPI

        self._count(values)
        if np.isscalar(values):
            return self.comm.allreduce(values, op=MPI.SUM)
        values = np.ascontiguousarray(values, dtype=float)
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=MPI.SUM)
        return out

    def min(self, value: float) -> float:
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MIN)

    def max(self, value: float) -> float:
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def gather(self, value) -> list | None:
        return self.comm.gather(value, root=0)

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def first_error(self, message: str | None) -> str | None:
        return next((m for m in self.comm.allgather(message) if m), None)


_WORLD: Serial = Serial()


def world() -> Serial:
    """The communicator of this run."""
    return _WORLD


def use_mpi() -> Serial:
    """Switch this process to MPI (``mp.method=mpi``); returns the communicator."""
    global _WORLD
    from mpi4py import MPI

    _WORLD = MPIWorld(MPI.COMM_WORLD)
    return _WORLD


def group_sum(group: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Σ weights per reflection group (0 … n − 1) over all ranks."""
    return world().sum(np.bincount(group, weights=weights, minlength=n).astype(float))


def split(n: int, rank: int, size: int) -> tuple[int, int]:
    """The share [lo, hi) of n items that rank ``rank`` of ``size`` takes (contiguous)."""
    return n * rank // size, n * (rank + 1) // size
