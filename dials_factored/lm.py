"""Levenberg–Marquardt over parameters that MPI ranks hold in shares.

A line-for-line port of scitbx's
``lstbx.normal_eqns_solving.levenberg_marquardt_iterations_encapsulated_eqns``
(Madsen, Nielsen & Tingleff, *Methods for non-linear least squares problems*, 2004,
algorithm 3.16): damping μ = τ·max diag(N) at the start, gain ratio
ρ = ΔL_actual / ΔL_expected with ΔL_expected = ½ hᵀ(μh − ∇L), μ ← μ·max(⅓, 1 − (2ρ − 1)³)
on a kept step, μ ← μν, ν ← 2ν on a rejected one; stops on |∇L|_∞ ≤ ε₁ or
|h| ≤ ε₂(|x| + ε₂).  The only change: every dot product, norm and maximum over the
parameter vector is taken by the problem (``problem.dot``, ``problem.max_abs``), so
that a rank can hold only its own stills' parameters plus the global ones and the
reductions cost a few scalars per iteration whatever the number of stills.
"""

from __future__ import annotations

import math

TAU = 1e-3  # scitbx's levenberg_marquardt_iterations.tau


class Iterations:
    """Run LM on ``problem`` (interface of :class:`dials_factored.normal.NormalEquations`)."""

    def __init__(self, problem, n_max_iterations: int, gradient_threshold: float | None,
                 step_threshold: float | None):
        self.problem = problem
        self.n_max_iterations = n_max_iterations
        self.gradient_threshold = gradient_threshold
        self.step_threshold = step_threshold
        self.n_iterations = 0
        self.do()

    def _build(self, objective_only: bool = False) -> None:
        self.problem.build_up(objective_only)
        if not objective_only:
            self.x_norm = math.sqrt(self.problem.dot(self.problem.x, self.problem.x))
            self.gradient_norm = self.problem.max_abs(self.problem.opposite_of_gradient())

    def _gradient_converged(self) -> bool:
        eps = self.gradient_threshold
        return eps is not None and self.gradient_norm <= eps

    def _too_small_a_step(self, h) -> bool:
        eps = self.step_threshold
        if eps is None:
            return False
        return math.sqrt(self.problem.dot(h, h)) <= eps * (self.x_norm + eps)

    def do(self) -> None:
        p = self.problem
        nu = 2
        self._build()
        if self._gradient_converged():
            return
        mu = TAU * p.max_diagonal()
        while self.n_iterations < self.n_max_iterations:
            p.add_constant_to_diagonal(mu)
            objective = p.objective()
            g = -p.opposite_of_gradient()
            p.solve()
            h = p.step()
            if self._too_small_a_step(h):
                break
            self.n_iterations += 1
            expected_decrease = 0.5 * p.dot(h, mu * h - g)
            p.step_forward()
            p.build_up(objective_only=True)
            rho = (objective - p.objective()) / expected_decrease
            if rho > 0:
                if self._gradient_converged():
                    break
                mu *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
                nu = 2
            else:
                p.step_backward()
                mu *= nu
                nu *= 2
            self._build()
