"""The Schur-complement solve of the LM normal equations against the full dense solve.

Checked to 1e-8 relative: the step δ of (JᵀJ + μI) δ = −Jᵀr and the entries of
(JᵀJ)⁻¹ (variances per block, cross-block, block–global and global covariances), on a
random problem with the fit's sparsity (blocks, globals, rank-2 gauge rows) and on the
Jacobian of the factored target itself (stills with orientation corrections and gauge
priors; rotation-like sweeps whose scale nodes interpolate and are chained).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix

from dials_factored.fit import FactoredTarget, Observations, Priors, normal_equations
from dials_factored.layout import Layout
from dials_factored.schur import BlockNormal, Structure

TOL = 1e-8


def dense(r, jac, n_p):
    jm = coo_matrix((jac[2], (jac[0], jac[1])), shape=(len(r), n_p)).toarray()
    return jm.T @ jm, -(jm.T @ r)


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def check(r, jac, structure, mu=0.0):
    """Schur solve and covariance entries against numpy's dense solve and inverse."""
    n_p = structure.size
    full, g = dense(r, jac, n_p)
    normal = BlockNormal.from_jacobian(r, jac, structure)
    assert rel(normal.diagonal(), np.diag(full)) < TOL
    cov = normal.covariance()
    inv = np.linalg.inv(full)
    idx = np.arange(n_p)
    assert rel(cov.variances(), np.diag(inv)) < TOL
    assert rel(cov[np.ix_(idx, idx)], inv) < TOL  # every entry, cross-block ones too
    assert cov[3, 5] == pytest.approx(inv[3, 5], rel=TOL, abs=TOL * np.abs(inv).max())
    normal.add_to_diagonal(mu)
    step = normal.solve()
    expected = np.linalg.solve(full + mu * np.eye(n_p), g)
    assert rel(step, expected) < TOL
    return normal


def random_problem(rng, n_blocks=25, k=4, m=5, per=30):
    """Rows touching one block and the globals, prior rows, and two gauge rows."""
    n_p = n_blocks * k + m
    block_of = np.concatenate([np.repeat(np.arange(n_blocks), k), np.full(m, -1)])
    slot_of = np.concatenate([np.tile(np.arange(k), n_blocks), np.zeros(m, int)])
    rows, cols, vals = [], [], []
    n = 0
    for s in range(n_blocks):
        for _ in range(per):
            c = np.concatenate([s * k + rng.choice(k, 3, replace=False),
                                n_blocks * k + rng.choice(m, 2, replace=False)])
            rows += [n] * len(c)
            cols += c.tolist()
            vals += rng.normal(size=len(c)).tolist()
            n += 1
    for p in range(n_p):  # priors
        rows.append(n)
        cols.append(p)
        vals.append(0.5)
        n += 1
    for slot in (0, 1):  # gauge: the mean of one slot over all blocks
        c = np.arange(n_blocks) * k + slot
        rows += [n] * len(c)
        cols += c.tolist()
        vals += [1.0 / (0.01 * n_blocks)] * len(c)
        n += 1
    jac = (np.array(rows), np.array(cols), np.array(vals))
    return rng.normal(size=n), jac, Structure(block_of, slot_of)


def test_random_problem_with_the_fit_structure():
    rng = np.random.default_rng(3)
    r, jac, structure = random_problem(rng)
    normal = check(r, jac, structure)
    assert normal.u_loc.shape[2] == 2  # the two gauge rows are the low-rank term
    check(r, jac, structure, mu=0.37)


def test_shuffled_parameter_order():
    """Blocks and globals need not be contiguous in the parameter vector."""
    rng = np.random.default_rng(4)
    r, (rows, cols, vals), st = random_problem(rng, n_blocks=10)
    perm = rng.permutation(st.size)
    inverse = np.argsort(perm)
    check(r, (rows, inverse[cols], vals), Structure(st.block_of[perm], st.slot_of[perm]))


def stills_observations(rng, n_still=12, per=40, n_bins=3):
    """Plausible per-reflection numbers of a stills fit (no pixels needed)."""
    n = n_still * per
    k = np.repeat(np.arange(n_still), per)
    d = rng.uniform(2.0, 8.0, n)
    r1 = 0.002
    area = np.full(n, 1e-7)
    return Observations(
        j=rng.exponential(300, n) + 5, sigma_j=rng.uniform(5, 30, n),
        i_ref=rng.exponential(400, n) + 10, attenuation=np.ones(n),
        inv_4d2=1 / (4 * d ** 2), k0=k, k1=k, w=np.zeros(n), use1=rng.random(n) > 0.1,
        group=None, bootstrapped=np.zeros(n, bool), stills=True,
        eps=rng.normal(0, 4e-4, n), rbw_sq=np.full(n, 1e-8),
        use2=rng.random(n) > 0.5, m_a=np.full(n, 0.5 * r1 ** 2), m_b=np.full(n, 0.6 * r1 ** 2),
        sigma_a=np.full(n, 0.1 * r1 ** 2), sigma_b=np.full(n, 0.1 * r1 ** 2), area=area,
        window_a=np.full(n, 9 * r1 ** 2), window_b=np.full(n, 9 * r1 ** 2),
        b0=rng.integers(0, n_bins - 1, n), b1=None, u=rng.random(n),
        # two rotations and three reciprocal-axis scales (an orthorhombic cell)
        deps=(rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), *rng.normal(0, 0.2, (3, n))),
        width_pairs=(np.arange(n_bins - 1), np.arange(1, n_bins)),
    )


def _priors():
    return Priors(np.log(5e-4), 0.5, np.log(5e-4), 1.0, 20.0, 0.1, 2.0, 0.3,
                  log_r1_mean=np.log(0.002), log_r1_sigma=0.5, gauge_sigma=0.01)


def _x0(layout, rng):
    x = rng.normal(0, 0.05, layout.size)
    x[layout.log_r0] = np.log(5e-4)
    x[layout.log_eta] = np.log(5e-4)
    x[layout.log_r1a] = np.log(0.002)
    x[layout.log_r1b] = np.log(0.0022)
    return x


def test_jacobian_of_the_stills_target():
    rng = np.random.default_rng(5)
    obs = stills_observations(rng)
    obs.b1 = obs.b0 + 1
    layout = Layout(12, 3, True, n_orient=12, cell_groups=((0,), (1,), (2,)))
    target = FactoredTarget(obs, layout, _priors())
    r, jac = target.evaluate(_x0(layout, rng))
    structure = layout.structure(obs.node_pairs)
    assert structure.n_blocks == 12 and structure.k == 7  # log G, B, δθx, δθy, δs_a*,b*,c*
    assert structure.n_global == 2 + 2 * 3
    normal = check(r, jac, structure)
    assert normal.u_loc.shape[2] == 2
    check(r, jac, structure, mu=1e-3 * normal.diagonal().max())
    # the fit's own wrapper gives the same system
    step = normal_equations(r, jac, structure).solve()
    full, g = dense(r, jac, layout.size)
    assert rel(step, np.linalg.solve(full, g)) < TOL


def test_jacobian_of_chained_nodes():
    """Rotation-like: two sweeps of 6 nodes, rows interpolating between neighbours."""
    rng = np.random.default_rng(6)
    obs = stills_observations(rng, n_still=12)
    obs.b1 = obs.b0 + 1
    obs.stills = False
    node = rng.integers(0, 11, len(obs.j))
    node[node == 5] = 4  # no interpolation across the sweep boundary (nodes 5 | 6)
    obs.k0, obs.k1, obs.w = node, node + 1, rng.random(len(node))
    a = np.array([0, 1, 2, 3, 4, 6, 7, 8, 9, 10])
    obs.node_pairs = (a, a + 1)
    layout = Layout(12, 3, False)
    target = FactoredTarget(obs, layout, _priors())
    r, jac = target.evaluate(_x0(layout, rng))
    structure = layout.structure(obs.node_pairs)
    assert structure.n_blocks == 2 and structure.k == 12
    check(r, jac, structure, mu=0.01)


def test_bytes_summed_per_iteration_do_not_depend_on_the_number_of_stills():
    """What an LM step sums over ranks (the serial world counts it too) is O(1) in N."""
    from dials_factored.collective import world
    from dials_factored.fit import minimise

    steps = []
    for n_still in (12, 48):
        rng = np.random.default_rng(7)
        obs = stills_observations(rng, n_still=n_still)
        obs.b1 = obs.b0 + 1
        layout = Layout(n_still, 3, True, n_orient=n_still, cell_groups=((0,), (1,), (2,)))
        target = FactoredTarget(obs, layout, _priors())
        sent = []
        for n_it in (2, 4):
            before = world().bytes_summed
            minimise(target, _x0(layout, np.random.default_rng(8)), max_iterations=n_it,
                     relative_step=0, relative_decrease=None)
            sent.append(world().bytes_summed - before)
        steps.append((sent[1] - sent[0]) / 2)
    # (m + 2)² + m² + … numbers per step, m = 8 global parameters here
    assert 0 < steps[0] < 8 * 400
    assert steps[0] == steps[1]


def test_a_still_without_data_keeps_the_others_variances():
    """A block with no rows at all (a still without a usable reflection, no priors on it)
    is singular; the covariance must still be given (it was None, so that every scale
    factor variance became 0) and the other blocks' variances must be those of the
    problem without that still."""
    rng = np.random.default_rng(7)
    k = 4
    r, (rows, cols, vals), st = random_problem(rng, n_blocks=8, k=k)
    empty = 3
    mine = (cols >= empty * k) & (cols < (empty + 1) * k)
    gauge_rows = np.unique(rows[mine & (np.bincount(rows)[rows] > k + 2)])
    drop = mine & ~np.isin(rows, gauge_rows)  # its data and prior rows, not the gauge rows
    keep = ~drop
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    cov = BlockNormal.from_jacobian(r, (rows, cols, vals), st).covariance()
    assert cov is not None
    variances = cov.variances()
    assert np.all(np.isfinite(variances)) and np.all(variances >= 0)
    others = np.flatnonzero(st.block_of != empty)
    assert np.all(variances[others] > 0)


def test_the_integration_runs_its_linear_algebra_on_one_blas_thread(monkeypatch):
    """The Schur step's batched k × k solves are 50× slower on OpenBLAS's threads
    (16 ms against 0.3 ms per batch of 200 here): run_factored limits BLAS to one
    thread, whatever the caller set."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from dials_factored import integrate

    class Seen(Exception):
        pass

    seen = []

    def record(*args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpoolctl.threadpool_info()
                    if pool["user_api"] == "blas")
        raise Seen

    monkeypatch.setattr(integrate, "_resolve_ambiguity", lambda *a: None)
    monkeypatch.setattr(integrate, "symmetry_of", lambda e: None)
    monkeypatch.setattr(integrate, "_integrate", record)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(Seen):
            integrate.run_factored([], None, None)
    assert seen and set(seen) == {1}
