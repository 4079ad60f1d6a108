"""The warnings of a finished fit: a fit that did not converge is never passed on silently."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dials_factored.diagnostics import fit_warnings

REFINEMENT = SimpleNamespace(max_iterations=30, shift_tolerance=0.002)


def _step(cycle: int, shift_log_g: float, shift_b: float = 0.0, iterations: int = 5,
          objective: float = 1000.0) -> dict:
    return {"cycle": cycle, "objective": objective, "objective_start": objective * 1.01,
            "iterations": iterations, "n_term1": 1000, "n_term2": 1000,
            "max_shift_log_g": shift_log_g, "max_shift_b": shift_b}


def _warnings(history: list, refinement=REFINEMENT) -> list[str]:
    return fit_warnings(history, refinement, [], np.array([1e-3, 1.2e-3]), True, None, 0, 10**6)


def test_converged_cycles_give_no_warning():
    assert _warnings([_step(1, 0.3), _step(2, 0.01), _step(3, 0.001, 0.01)]) == []


def test_outer_cycles_ending_at_their_cap_are_reported():
    """The thaumatin stills ended at n_cycles = 4 with max |Δlog G| 0.024 (tolerance 0.002)
    and nothing in the log said so (2026-12-03)."""
    out = _warnings([_step(1, 0.3), _step(2, 0.05), _step(3, 0.03), _step(4, 0.024)])
    assert len(out) == 1 and "outer cycles did not converge" in out[0], out
    assert "0.0240" in out[0]
    # a B that still moves is reported as well, the log G converged
    out = _warnings([_step(1, 0.3), _step(2, 0.001, shift_b=0.2)])
    assert len(out) == 1 and "outer cycles did not converge" in out[0], out


def test_no_convergence_test_asked_for_gives_no_warning():
    """shift_tolerance = 0 asks for every one of n_cycles: there is nothing to report."""
    refinement = SimpleNamespace(max_iterations=30, shift_tolerance=0.0)
    assert _warnings([_step(1, 0.3), _step(2, 0.05)], refinement) == []


def test_lm_at_its_cap_still_falling_is_reported():
    out = _warnings([_step(1, 0.3), _step(2, 0.001, iterations=30)])
    assert len(out) == 1 and "Levenberg-Marquardt stopped at its cap" in out[0], out
