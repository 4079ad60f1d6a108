"""The amplitude Ĵ behind the model-expected variance v = Bg + Ĵ·P of the next pass.

Term 1's weights and σ_J come from the variance the *model* expects at each pixel (seed
§3), not from the counts: Ĵ is the model amplitude scale·I_ref where the reference
carries information about the reflection, else the posterior mean under the Wilson
prior of its resolution; data grossly above the model raise it (``expected``).
"""

from __future__ import annotations

import numpy as np

from dials_factored import collective
from dials_factored import reference as references

#: Data this many σ above the model widen the model-expected variance (see ``expected``).
GROSS_EXCESS = 3.0


def expected(j_model: np.ndarray, j: np.ndarray, var_j: np.ndarray) -> np.ndarray:
    """The amplitude behind the model-expected variance v = Bg + Ĵ·P.

    Ĵ = J_model, except where the data exceed the model grossly (J more than
    ``GROSS_EXCESS`` σ above it): there Ĵ = J − GROSS_EXCESS·σ, so that a model that is
    badly wrong for a reflection (early cycles, a wrong scale) cannot give it a tiny
    variance and an enormous weight.  Data *below* the model keep the model's
    variance (a strong expected reflection observed absent is penalised, seed §3).
    Where there is no model (no I_ref), J itself.  Negative values count as zero.
    """
    observed_floor = j - GROSS_EXCESS * np.sqrt(np.maximum(var_j, 0.0) + np.maximum(j, 0.0))
    amplitude = np.where(np.isfinite(j_model), np.maximum(j_model, observed_floor), j)
    return np.maximum(amplitude, 0.0)


def model_or_prior(obs_scale, i_ref, j, inv_4d2, group, informative):
    """J_model = scale·I_ref where other informative observations of the reflection
    exist; else (no I_ref, or an I_ref that is the observation's own J/scale) the
    posterior mean of the amplitude under the Wilson prior of its resolution
    (``reference.posterior_amplitude``): a reference made of the observation alone
    carries no information about it, and the variance at its own J is too small when
    the J came out low."""
    n = int(collective.world().max(int(group.max()) + 1 if len(group) else 0))
    others = collective.group_sum(group, informative.astype(float), n)[group] - informative
    alone = np.isfinite(i_ref) & (others < 0.5)
    shared = np.where(alone, np.nan, i_ref)
    prior = obs_scale * references.with_shell_means(shared, 4 * inv_4d2)
    return np.where(np.isfinite(shared), obs_scale * shared,
                    references.posterior_amplitude(j, prior))
