"""Where each parameter block of the joint objective lives in the parameter vector.

The parameters (all logarithmic where positive) are log G and B per scale node, log
R0, log η, log R1a per width node (and log R1b), and the per-still orientation and
cell corrections; :class:`Layout` gives their slices and the block structure of the
normal equations that :mod:`.schur` eliminates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dials_factored.schur import Structure


@dataclass
class Layout:
    """Where each parameter block lives in the parameter vector."""

    n_nodes: int
    n_width: int
    anisotropic: bool
    n_orient: int = 0  # stills: one (δθx, δθy, δs per cell-axis group) set per still
    #: groups of reciprocal axes (0, 1, 2 = a*, b*, c*) with one relative scale each
    #: (:func:`dials_factored.forward.cell_axis_groups`)
    cell_groups: tuple = ((0, 1, 2),)

    @property
    def n_cell(self) -> int:
        return len(self.cell_groups)

    @property
    def log_g(self):
        return slice(0, self.n_nodes)

    @property
    def b(self):
        return slice(self.n_nodes, 2 * self.n_nodes)

    @property
    def log_r0(self) -> int:
        return 2 * self.n_nodes

    @property
    def log_eta(self) -> int:
        return 2 * self.n_nodes + 1

    @property
    def log_r1a(self):
        return slice(2 * self.n_nodes + 2, 2 * self.n_nodes + 2 + self.n_width)

    @property
    def log_r1b(self):
        if not self.anisotropic:
            return self.log_r1a
        start = 2 * self.n_nodes + 2 + self.n_width
        return slice(start, start + self.n_width)

    @property
    def _orient_start(self) -> int:
        return 2 * self.n_nodes + 2 + self.n_width * (2 if self.anisotropic else 1)

    @property
    def orient_x(self):
        return slice(self._orient_start, self._orient_start + self.n_orient)

    @property
    def orient_y(self):
        return slice(self._orient_start + self.n_orient, self._orient_start + 2 * self.n_orient)

    @property
    def cell_axes(self) -> list[slice]:
        """The relative scale corrections δs_g of each still's reciprocal axes, one slice per
        axis group g (all stills)."""
        start = self._orient_start
        return [slice(start + (2 + g) * self.n_orient, start + (3 + g) * self.n_orient)
                for g in range(self.n_cell)]

    @property
    def per_still(self) -> list[slice]:
        """Every per-still geometry block: δθx, δθy and the δs_g, in the order of
        ``Forward.deps``."""
        return [self.orient_x, self.orient_y, *self.cell_axes] if self.n_orient else []

    @property
    def size(self) -> int:
        return self._orient_start + (2 + self.n_cell) * self.n_orient

    def structure(self, node_pairs=((), ())) -> Structure:
        """The parameters as blocks (for :mod:`dials_factored.schur`) and globals.

        A block is a run of scale nodes chained by ``node_pairs`` (consecutive nodes of
        one sweep: the φ interpolation and smoothness rows couple them), so one block
        per still or per rotation sweep; it holds those nodes' log G, B and, for stills,
        δθx, δθy, δs_g.  R0, η and the R1 nodes are global.
        """
        n = self.n_nodes
        a, b = (np.asarray(v, dtype=int) for v in node_pairs)
        new = np.ones(n, bool)
        new[b[b == a + 1]] = False
        node_block = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        rank = np.arange(n) - first[node_block]  # position of the node in its block
        per_node = [self.log_g, self.b, *self.per_still]
        block_of = np.full(self.size, -1)
        slot_of = np.zeros(self.size, dtype=int)
        for i, sl in enumerate(per_node):
            block_of[sl] = node_block
            slot_of[sl] = rank * len(per_node) + i
        return Structure(block_of, slot_of)
