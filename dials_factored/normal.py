"""Levenberg–Marquardt on the factored target with the Schur-complement solve.

The normal equations of :class:`dials_factored.fit.FactoredTarget` in the block-arrow
form of :mod:`dials_factored.schur`, the shares of MPI ranks (each holds its own stills'
parameters and the global ones), and :func:`minimise`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dials_factored import lm
from dials_factored.collective import world
from dials_factored.schur import BlockNormal, Structure

if TYPE_CHECKING:
    from dials_factored.fit import FactoredTarget

logger = logging.getLogger("dials.dials_factored.fit")
#: LM stops when a step lowers the objective by less than this fraction: the outer
#: cycles (new weights, R1 and I_ref) move the optimum by more than that anyway.
RELATIVE_DECREASE = 1e-6


@dataclass
class Shares:
    """Which blocks of the parameter vector this process holds (MPI ranks hold stills).

    A block is *held* by the ranks with reflections in it; one held by several ranks
    (a rotation sweep whose images are split) is summed over them every step and held
    by all; one nobody has rows for is held by rank 0.  ``counted`` marks the
    parameters this rank counts in vector reductions (each exactly once over ranks):
    its own blocks' and, on rank 0, the shared blocks' and the global ones.
    """

    held: np.ndarray  # block indices eliminated here
    weight: np.ndarray  # share of each held block in S, h (1 or 0)
    shared: np.ndarray  # blocks summed over ranks each step
    prior_blocks: np.ndarray  # bool per block: its prior rows are added here
    counted: np.ndarray  # bool per parameter


def shares(target: FactoredTarget, structure: Structure) -> Shares:
    """The shares of this rank (one process: everything).

    Costs one sum of n_blocks numbers per minimisation (not per iteration).
    """
    n = structure.n_blocks
    first = world().rank == 0
    node_block = structure.block_of[target.layout.log_g]
    if world().size == 1:
        return Shares(np.arange(n), np.ones(n), np.zeros(0, int), np.ones(n, bool),
                      np.ones(structure.size, bool))
    present = np.zeros(n, bool)
    present[node_block[target.obs.k0]] = True
    present[node_block[target.obs.k1]] = True
    count = world().sum(present.astype(float))
    shared = count > 1
    prior_blocks = (present & ~shared) | (first & ((count == 0) | shared))
    held = np.flatnonzero((present & ~shared) | shared | (first & (count == 0)))
    weight = np.where(shared[held], float(first), 1.0)
    counted = np.where(structure.local, prior_blocks[np.maximum(structure.block_of, 0)], first)
    return Shares(held, weight, np.flatnonzero(shared), prior_blocks, counted)


class NormalEquations:
    """The normal equations of a ``FactoredTarget`` for Levenberg–Marquardt (:mod:`.lm`).

    The normal matrix JᵀJ is held in the block-arrow form of :mod:`dials_factored.schur`
    (small dense blocks per still or sweep, the global block, the rank-2 gauge term)
    and the step is solved by eliminating the blocks: no object of size n_p².  Under
    MPI a rank holds and updates only its own stills' parameters (and the global ones);
    the ranks exchange the reduced (n_global + 2)² system and a few scalars per step.
    """

    def __init__(self, target: FactoredTarget, x0: np.ndarray,
                 relative_decrease: float | None = None):
        self.target = target
        self.structure = target.layout.structure(target.obs.node_pairs)
        self.shares = shares(target, self.structure)
        node_block = self.structure.block_of[target.layout.log_g]
        target.prior_nodes = (None if world().size == 1
                              else self.shares.prior_blocks[node_block])
        self.x = np.asarray(x0, dtype=float).copy()
        self.old_x = None
        self._objective = 0.0
        self._normal = None
        self._step = None
        self.best = None  # (objective, x) of the best point evaluated
        self.relative_decrease = relative_decrease
        self._before = None  # objective before the last step taken
        self._gain = None  # relative decrease of the last accepted step

    # reductions over the parameter vector (each parameter counted once over ranks)
    def dot(self, u: np.ndarray, v: np.ndarray) -> float:
        c = self.shares.counted
        return world().sum(float(u[c] @ v[c]))

    def max_abs(self, v: np.ndarray) -> float:
        c = self.shares.counted
        return world().max(float(np.max(np.abs(v[c]), initial=0.0)))

    def max_diagonal(self) -> float:
        c = self.shares.counted
        return world().max(float(np.max(self._normal.diagonal()[c], initial=-np.inf)))

    def objective(self):
        return self._objective

    def add_constant_to_diagonal(self, mu):
        self._normal.add_to_diagonal(mu)

    def opposite_of_gradient(self) -> np.ndarray:
        return self._rhs

    def solve(self):
        if (self.relative_decrease is not None and self._gain is not None
                and self._gain < self.relative_decrease):
            # the last accepted step gained too little: a zero step ends the LM loop
            self._step = np.zeros(len(self.x))
            return
        self._step = self._normal.solve(_reduce)

    def step(self) -> np.ndarray:
        return self._step

    def step_forward(self):
        self.old_x = self.x.copy()
        self.x = self.x + self._step
        self._before = self._objective

    def step_backward(self):
        self.x = self.old_x
        self._before = None

    def build_up(self, objective_only=False):
        r, jac = self.target.evaluate(self.x, need_jacobian=not objective_only)
        self._objective = self.target.objective(r)
        if self.best is None or self._objective < self.best[0]:
            self.best = (self._objective, self.x.copy())
        if objective_only:
            return
        if self._before is not None:  # the step just taken was kept
            self._gain = (self._before - self._objective) / max(abs(self._before), 1e-300)
            self._before = None
        self._normal = normal_equations(r, jac, self.structure, self.shares,
                                        self.target.shared_rows)
        self._rhs = self.structure.join(self._normal.g_loc, self._normal.g_glob)

    def gathered(self, x: np.ndarray) -> np.ndarray:
        """The whole parameter vector on every rank (each rank's share summed once)."""
        if world().size == 1:
            return x
        return world().sum(np.where(self.shares.counted, x, 0.0))


def _reduce(s_part: np.ndarray, h_part: np.ndarray):
    """S and h summed over ranks: (m' + 1)·m' numbers, whatever the number of stills."""
    m = len(h_part)
    both = world().sum(np.concatenate([s_part.ravel(), h_part]))
    return both[:m * m].reshape(m, m), both[m * m:]


def normal_equations(r: np.ndarray, jac, structure: Structure, share: Shares | None = None,
                     low_rank_rows=None) -> BlockNormal:
    """JᵀJ (block-arrow form) and −Jᵀr of this process's rows, ready for the solve.

    Per-image parameters couple only to their own image's reflections and to the
    global ones (and, through the gauge priors ``low_rank_rows``, to the mean: the
    rank-2 term).  Under MPI the global block C, g_g and the blocks held by several
    ranks are summed here; the blocks' shares of the reduced system in the solve.
    """
    normal = BlockNormal.from_jacobian(r, jac, structure, low_rank_rows)
    if share is None:
        return normal
    normal.held, normal.weight = share.held, share.weight
    k = structure.k
    sh = share.shared
    pieces = [normal.c, normal.u_glob, normal.g_glob, normal.a[sh], normal.b[sh],
              normal.u_loc[sh], normal.g_loc[sh]]
    flat = world().sum(np.concatenate([p.ravel() for p in pieces]))
    out, at = [], 0
    for p in pieces:
        out.append(flat[at:at + p.size].reshape(p.shape))
        at += p.size
    normal.c, normal.u_glob, normal.g_glob = out[:3]
    normal.a[sh], normal.b[sh], normal.u_loc[sh], normal.g_loc[sh] = out[3:]
    if len(sh):  # the padded slots' unit diagonal was summed too
        normal.a[sh] = np.where(structure.padding[sh][:, :, None]
                                & np.eye(k, dtype=bool)[None], 1.0, normal.a[sh])
    return normal


def normal_bytes(structure: Structure, n_low_rank: int, n_shared: int) -> int:
    """Bytes of one LM step's sums of the normal equations over ranks: C, U_g, g_g
    (m² + m·r + m), the blocks held by several ranks and the reduced system S, h
    (m'² + m', m' = m + r): independent of the number of stills."""
    m, r, k = structure.n_global, n_low_rank, structure.k
    return 8 * (m * m + m * r + m + n_shared * k * (k + m + r + 1)
                + (m + r) ** 2 + (m + r))


def minimise(target: FactoredTarget, x0: np.ndarray, max_iterations: int = 30,
             relative_step: float = 1e-6, relative_decrease: float | None = RELATIVE_DECREASE):
    """Run Levenberg–Marquardt (:mod:`dials_factored.lm`); returns (x, objective,
    iterations, covariance-ish, objective at the start).

    Stops after ``max_iterations``, when a step is shorter than ``relative_step``
    times the length of the parameter vector, or when a step lowers the objective by
    less than ``relative_decrease`` of it.  The fourth value gives entries of the
    inverse of the final normal matrix (the parameter covariance for residuals with
    unit variance; a :class:`dials_factored.schur.BlockCovariance`, indexed like an
    array, for this rank's stills), or None if singular.  Logs the bytes each LM
    iteration sends to sums over ranks (independent of the number of stills).
    """
    t0, cpu0 = time.time(), time.process_time()
    problem = NormalEquations(target, x0, relative_decrease)
    sent = world().bytes_summed
    start = target.objective(target.evaluate(problem.x, False)[0])
    it = lm.Iterations(problem, max_iterations, gradient_threshold=1e-10,
                       step_threshold=relative_step)
    per_iteration = (world().bytes_summed - sent) / max(it.n_iterations, 1)
    x = problem.best[1]
    r, jac = target.evaluate(x, need_jacobian=True)
    end = target.objective(r)
    normal = normal_equations(r, jac, problem.structure, problem.shares, target.shared_rows)
    cov = normal.covariance(_reduce)
    x = problem.gathered(x)
    logger.info("  Levenberg-Marquardt: %d iterations, objective %.6g -> %.6g, %.2f s (CPU "
                "%.2f s); %.0f bytes summed over ranks per iteration, %d of them the normal "
                "equations", it.n_iterations, start, end, time.time() - t0,
                time.process_time() - cpu0, per_iteration,
                normal_bytes(problem.structure, len(target.shared_rows),
                             len(problem.shares.shared)))
    return x, end, it.n_iterations, cov, start
