"""The profile width R1(d) (Å⁻¹): log R1 on a grid in 1/d², linear in between.

``n_bins`` nodes span the data's 1/d² range; every reflection interpolates
between its two nodes, and a smoothness prior ties neighbours, so bins with
few strong spots borrow from their neighbours.  With ``anisotropic`` there are
two such curves, along the circumferential (a) and radial (b) directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WidthGrid:
    b0: np.ndarray
    b1: np.ndarray
    u: np.ndarray
    n_bins: int
    s2_nodes: np.ndarray  # 1/d² (Å⁻²) at each node

    def interpolate(self, values: np.ndarray) -> np.ndarray:
        return (1.0 - self.u) * values[self.b0] + self.u * values[self.b1]


def build_grid(d: np.ndarray, n_bins: int, s2_range: tuple[float, float] | None = None
               ) -> WidthGrid:
    """Nodes in 1/d² from ``s2_range`` (default: that of ``d``), and each d's place."""
    s2 = 1.0 / d ** 2
    lo, hi = s2_range or (s2.min(), s2.max())
    n = max(1, n_bins)
    if n == 1 or hi - lo < 1e-9:
        zero = np.zeros(len(d), dtype=int)
        return WidthGrid(zero, zero, np.zeros(len(d)), 1, np.array([0.5 * (lo + hi)]))
    nodes = np.linspace(lo, hi, n)
    pos = np.clip((s2 - nodes[0]) / (nodes[1] - nodes[0]), 0, n - 1 - 1e-9)
    b0 = pos.astype(int)
    return WidthGrid(b0, b0 + 1, pos - b0, n, nodes)
