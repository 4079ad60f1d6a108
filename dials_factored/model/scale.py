"""The scale chain G·exp(B/4d²) per still, or as a smooth function of φ for rotation.

G is dimensionless (fitted as log G), B in Å² with the seed's convention
B_term = exp(B/(4d²)); B < 0 means intensity falling with resolution.  Stills
have one node per experiment.  Rotation sweeps have nodes every
``block_width`` degrees and each reflection interpolates linearly in φ between
its two neighbouring nodes; a smoothness prior ties consecutive nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dials_factored.arrays import rows_by_experiment


@dataclass
class ScaleNodes:
    """Node pair (k0, k1) and weight w of k1 for every reflection; node bookkeeping."""

    k0: np.ndarray
    k1: np.ndarray
    w: np.ndarray
    n_nodes: int
    node_experiment: np.ndarray  # experiment of each node
    node_phi: np.ndarray  # φ (deg) of each node; 0 for stills

    def interpolate(self, values: np.ndarray) -> np.ndarray:
        return (1.0 - self.w) * values[self.k0] + self.w * values[self.k1]

    def neighbours(self):
        """Consecutive node pairs of the same experiment (for smoothness priors)."""
        a = np.arange(self.n_nodes - 1)
        same = self.node_experiment[a] == self.node_experiment[a + 1]
        return a[same], a[same] + 1


def build_nodes(experiments, ids: np.ndarray, phi_deg: np.ndarray, block_width: float):
    """Nodes for all experiments: one per still, a φ grid for each sweep."""
    k0 = np.zeros(len(ids), dtype=int)
    k1 = np.zeros(len(ids), dtype=int)
    w = np.zeros(len(ids))
    node_expt, node_phi = [], []
    rows = rows_by_experiment(ids, len(experiments))
    for i, expt in enumerate(experiments):
        sel = rows[i]
        scan = expt.scan
        if scan is None or scan.get_oscillation()[1] == 0:
            k0[sel] = k1[sel] = len(node_expt)
            node_expt.append(i)
            node_phi.append(0.0)
            continue
        lo, hi = scan.get_oscillation_range()
        n = max(2, int(np.ceil((hi - lo) / block_width)) + 1)
        grid = np.linspace(lo, hi, n)
        first = len(node_expt)
        node_expt.extend([i] * n)
        node_phi.extend(grid.tolist())
        pos = np.clip((phi_deg[sel] - lo) / (grid[1] - grid[0]), 0, n - 1 - 1e-9)
        k0[sel] = first + pos.astype(int)
        k1[sel] = k0[sel] + 1
        w[sel] = pos - pos.astype(int)
    return ScaleNodes(k0, k1, w, len(node_expt), np.array(node_expt), np.array(node_phi))
