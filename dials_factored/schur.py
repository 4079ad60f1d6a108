"""The LM normal equations solved by eliminating the per-block parameters (Schur complement).

The parameters of the factored fit split into *blocks* (one per still, or one per
rotation sweep: log G, B and the still's orientation and cell-scale corrections) and
a few *global* ones (R0, η, R1(d) nodes).  A data row touches one block and the
globals, so with the parameters ordered (blocks, globals) the normal matrix is an
arrow

    N₀ = [[A, B], [Bᵀ, C]],   A = diag(A_1 … A_n) (k × k each), B_s (k × m), C (m × m).

Rows that touch more than one block (the gauge priors mean log G = 0 and mean B = 0)
would make A dense; each is kept aside as a rank-1 term, N = N₀ + U Uᵀ with U the
Jacobian of those r rows (n_p × r, r = 2).  Writing z = Uᵀδ as r extra unknowns
gives the equivalent augmented system

    [[A,  B,  U_l],     [δ_l]   [g_l]
     [Bᵀ, C,  U_g],  ·  [δ_g] = [g_g]          (g = −Jᵀr, the opposite of the gradient)
     [U_lᵀ, U_gᵀ, −I]]  [z  ]   [0  ]

whose last row is z = Uᵀδ, so its first rows read (N₀ + UUᵀ)δ = g.  With
B' = [B, U_l] (k × m' per block, m' = m + r) and C' = [[C, U_g], [U_gᵀ, −I]]
the blocks are eliminated, all at once with batched dense solves:

    X_s = A_s⁻¹ B'_s,  y_s = A_s⁻¹ g_s,
    S  = C' − Σ_s B'_sᵀ X_s,   h = g' − Σ_s B'_sᵀ y_s,     (m' × m', whatever n)
    [δ_g; z] = S⁻¹ h,          δ_s = y_s − X_s [δ_g; z].

The cost is O(n k² (k + m')) per step and no object grows faster than n.  The sums
over s are the only coupling between blocks, so ranks that own disjoint sets of blocks
exchange S and h alone (m'² + m' numbers per step).

Covariance: the (δ, δ) block of the augmented inverse is N⁻¹ (the Schur complement of
its −I block is N), so with Σ' = S⁻¹ every entry of N⁻¹ follows from

    v_p = −X_s[slot p]   (p a parameter of block s),   v_p = e_p (p global),
    (N⁻¹)_pq = v_pᵀ Σ' v_q + [p, q in the same block] (A_s⁻¹)_pq,

evaluated for the entries asked for (:class:`BlockCovariance`), never the full inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix


@dataclass
class Structure:
    """Where each parameter sits: block and slot (local) or global index.

    ``block_of[p]`` is the block of parameter p (−1 for a global parameter) and
    ``slot_of[p]`` its position inside the block (for globals: its global index).
    Blocks are padded to the largest block size ``k``; padded slots carry an identity
    diagonal and zero right-hand side, so their solution is 0.
    """

    block_of: np.ndarray
    slot_of: np.ndarray

    def __post_init__(self):
        self.block_of = np.asarray(self.block_of, dtype=int)
        self.slot_of = np.asarray(self.slot_of, dtype=int)
        local = self.block_of >= 0
        self.local = local
        self.n_blocks = int(self.block_of.max()) + 1 if local.any() else 0
        self.k = int(self.slot_of[local].max()) + 1 if local.any() else 0
        self.n_global = int((~local).sum())
        self.global_params = np.flatnonzero(~local)
        self.slot_of[~local] = np.arange(self.n_global)
        self.local_params = np.flatnonzero(local)
        self.padding = np.ones((self.n_blocks, self.k), bool)
        self.padding[self.block_of[local], self.slot_of[local]] = False

    @property
    def size(self) -> int:
        return len(self.block_of)

    def split(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A parameter vector as (n_blocks, k) local values and (m,) global values."""
        loc = np.zeros((self.n_blocks, self.k))
        p = self.local_params
        loc[self.block_of[p], self.slot_of[p]] = vector[p]
        return loc, vector[self.global_params]

    def join(self, loc: np.ndarray, glob: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`split`."""
        out = np.empty(self.size)
        p = self.local_params
        out[p] = loc[self.block_of[p], self.slot_of[p]]
        out[self.global_params] = glob
        return out


@dataclass
class BlockNormal:
    """N = arrow(A, B, C) + U Uᵀ and g = −Jᵀr, for one process's rows.

    Shapes: a (n, k, k), b (n, k, m), c (m, m), u_loc (n, k, r), u_glob (m, r),
    g_loc (n, k), g_glob (m,).
    """

    structure: Structure
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    u_loc: np.ndarray
    u_glob: np.ndarray
    g_loc: np.ndarray
    g_glob: np.ndarray

    @classmethod
    def from_jacobian(cls, r: np.ndarray, jac, structure: Structure,
                      low_rank_rows=None) -> BlockNormal:
        """Assemble from residuals r and the sparse Jacobian triplets (rows, cols, values).

        Rows whose entries fall in more than one block, and ``low_rank_rows`` (rows that
        every MPI rank holds with its own share of the entries), become columns of U.
        """
        rows, cols, vals = (np.asarray(v) for v in jac)
        st = structure
        n_rows = len(r)
        blk = st.block_of[cols]
        local = blk >= 0
        lo, hi = _row_range(rows[local], blk[local], n_rows)
        cross = (hi >= 0) & (lo != hi)
        if low_rank_rows is not None and len(low_rank_rows):
            cross[np.asarray(low_rank_rows, dtype=int)] = True
        shape = (n_rows, st.size)
        jm = coo_matrix((vals, (rows, cols)), shape=shape).tocsr()
        g = -(jm.T @ r)
        g_loc, g_glob = st.split(g)
        kept = ~cross[rows]
        keep = coo_matrix((vals[kept], (rows[kept], cols[kept])), shape=shape).tocsr()
        normal = (keep.T @ keep).tocoo()
        normal.sum_duplicates()
        i, j, v = normal.row, normal.col, normal.data
        bi, bj = st.block_of[i], st.block_of[j]
        si, sj = st.slot_of[i], st.slot_of[j]
        n, k, m = st.n_blocks, st.k, st.n_global
        a = np.zeros((n, k, k))
        a[:, np.arange(k), np.arange(k)] = st.padding.astype(float)
        both = (bi >= 0) & (bj >= 0)
        if np.any(bi[both] != bj[both]):
            raise ValueError("a row couples two blocks but was not taken as a cross row")
        a[bi[both], si[both], sj[both]] = v[both]
        lg = (bi >= 0) & (bj < 0)
        b = np.zeros((n, k, m))
        b[bi[lg], si[lg], sj[lg]] = v[lg]
        gg = (bi < 0) & (bj < 0)
        c = np.zeros((m, m))
        c[si[gg], sj[gg]] = v[gg]
        u = jm[np.flatnonzero(cross)].toarray().T  # (n_p, r)
        u_loc = np.zeros((n, k, u.shape[1]))
        p = st.local_params
        u_loc[st.block_of[p], st.slot_of[p]] = u[p]
        return cls(st, a, b, c, u_loc, u[st.global_params], g_loc, g_glob)

    def diagonal(self) -> np.ndarray:
        """diag(N) in parameter order (including the U Uᵀ part)."""
        d_loc = np.einsum("nkk->nk", self.a) + np.einsum("nkr,nkr->nk", self.u_loc, self.u_loc)
        d_glob = np.diag(self.c) + np.einsum("mr,mr->m", self.u_glob, self.u_glob)
        return self.structure.join(d_loc, d_glob)

    def add_to_diagonal(self, mu: float) -> None:
        """N → N + μ·I (the padded slots too: they stay decoupled, with zero solution)."""
        k = self.structure.k
        self.a[:, np.arange(k), np.arange(k)] += mu
        self.c[np.diag_indices_from(self.c)] += mu

    #: blocks eliminated by this process (None: all) and the weight of each one's share
    #: of S and h (a block held by several MPI ranks is counted on one of them)
    held: np.ndarray | None = None
    weight: np.ndarray | None = None

    # ---------------------------------------------------------------- elimination

    def _held(self) -> np.ndarray:
        return np.arange(self.structure.n_blocks) if self.held is None else self.held

    def eliminate(self, pinv: bool = False):
        """(X, y, S_part, h_part) of the held blocks: X_s = A_s⁻¹B'_s, y_s = A_s⁻¹g_s,
        S_part = −Σ w_s B'_sᵀX_s, h_part = −Σ w_s B'_sᵀy_s (the caller adds C', g')."""
        held = self._held()
        bp = np.concatenate([self.b[held], self.u_loc[held]], axis=2)  # B' = [B, U_l]
        rhs = np.concatenate([self.g_loc[held][:, :, None], bp], axis=2)
        a = self.a[held]
        sol = np.linalg.pinv(a) @ rhs if pinv else np.linalg.solve(a, rhs)
        y, x = sol[:, :, 0], sol[:, :, 1:]
        w = np.ones(len(held)) if self.weight is None else self.weight
        s_part = -np.einsum("n,nki,nkj->ij", w, bp, x)
        h_part = -np.einsum("n,nki,nk->i", w, bp, y)
        return x, y, s_part, h_part

    def c_aug(self) -> tuple[np.ndarray, np.ndarray]:
        """C' = [[C, U_g], [U_gᵀ, −I]] and g' = [g_g; 0]."""
        m, r = self.u_glob.shape
        c = np.zeros((m + r, m + r))
        c[:m, :m] = self.c
        c[:m, m:] = self.u_glob
        c[m:, :m] = self.u_glob.T
        c[m:, m:] = -np.eye(r)
        return c, np.concatenate([self.g_glob, np.zeros(r)])

    def _reduced(self, reduce, pinv: bool = False):
        """X, y of the held blocks and the reduced system S, h (summed by ``reduce``)."""
        x, y, s_part, h_part = self.eliminate(pinv)
        if reduce is not None:
            s_part, h_part = reduce(s_part, h_part)
        c, g = self.c_aug()
        return x, y, c + s_part, g + h_part

    def solve(self, reduce=None) -> np.ndarray:
        """The step δ with N δ = g, in parameter order (0 for blocks not held).

        ``reduce(S_part, h_part)`` sums the blocks' shares over the processes that hold
        other blocks (None: one process holds them all); C and g_g must already be
        complete.  A singular block (no damping, no data) falls back to pseudo-inverses.
        """
        try:
            x, y, s, h = self._reduced(reduce)
        except np.linalg.LinAlgError:
            x, y, s, h = self._reduced(reduce, pinv=True)
        try:
            w = np.linalg.solve(s, h)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(s, h, rcond=None)[0]
        st = self.structure
        loc = np.zeros((st.n_blocks, st.k))
        loc[self._held()] = y - x @ w
        return st.join(loc, w[:st.n_global])

    def covariance(self, reduce=None) -> BlockCovariance:
        """Entries of N⁻¹ on demand (those of the held blocks).

        A singular block (a still without a usable reflection) or reduced system falls
        back to pseudo-inverses: the undetermined directions get variance 0 (they carry
        no observation), the others stay right.
        """
        held = self._held()
        a_inv = np.zeros_like(self.a)
        try:
            a_inv[held] = np.linalg.inv(self.a[held])
            x_held, _, s, _ = self._reduced(reduce)
        except np.linalg.LinAlgError:
            a_inv[held] = np.linalg.pinv(self.a[held])
            x_held, _, s, _ = self._reduced(reduce, pinv=True)
        try:
            sigma = np.linalg.inv(s)
        except np.linalg.LinAlgError:
            sigma = np.linalg.pinv(s)
        x = np.zeros((self.structure.n_blocks, self.structure.k, s.shape[0]))
        x[held] = x_held
        return BlockCovariance(self.structure, a_inv, x, sigma)


def _row_range(rows: np.ndarray, values: np.ndarray, n_rows: int):
    """Smallest and largest ``values`` per row (−1, −1 for a row without entries)."""
    lo = np.full(n_rows, -1)
    hi = np.full(n_rows, -1)
    if len(rows):
        order = np.argsort(rows, kind="stable")
        r, v = rows[order], values[order]
        starts = np.concatenate([[0], np.flatnonzero(r[1:] != r[:-1]) + 1])
        lo[r[starts]] = np.minimum.reduceat(v, starts)
        hi[r[starts]] = np.maximum.reduceat(v, starts)
    return lo, hi


class BlockCovariance:
    """Entries of N⁻¹ (see the module docstring): ``cov[i, j]`` with integer or array
    indices (broadcast, as numpy's fancy indexing, e.g. ``cov[np.ix_(idx, idx)]``)."""

    def __init__(self, structure: Structure, a_inv: np.ndarray, x: np.ndarray,
                 sigma: np.ndarray):
        self.structure = structure
        self.a_inv = a_inv
        self.sigma = sigma
        st = structure
        v = np.zeros((st.size, sigma.shape[0]))
        p = st.local_params
        v[p] = -x[st.block_of[p], st.slot_of[p]]
        v[st.global_params, st.slot_of[st.global_params]] = 1.0
        self.v = v
        self.shape = (st.size, st.size)

    def __getitem__(self, key):
        i, j = key
        i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
        st = self.structure
        out = np.array(np.einsum("...a,ab,...b->...", self.v[i], self.sigma, self.v[j]),
                       dtype=float)
        bi, bj = st.block_of[i], st.block_of[j]
        same = (bi >= 0) & (bi == bj)
        out[same] += self.a_inv[bi[same], st.slot_of[i][same], st.slot_of[j][same]]
        return out[()] if out.ndim == 0 else out

    def variances(self) -> np.ndarray:
        """diag(N⁻¹): every parameter's variance (for residuals of unit variance)."""
        idx = np.arange(self.structure.size)
        return self[idx, idx]
