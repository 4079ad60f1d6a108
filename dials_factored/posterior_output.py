"""factored_posterior.mtz: the scaled output merged, and its posterior I and F.

The observations are those dials.merge would use (DIALS's ``filter_reflection_table``
for scaled data), merged inverse-variance weighted by cctbx (``merge_equivalents``) in
the median cell, Bijvoet mates apart when the fit kept them apart; then
:func:`dials_factored.posterior.posterior` with the Wilson prior or, with ``reference=``,
the reference as prior.
"""

from __future__ import annotations

import logging

import numpy as np
from cctbx import miller
from cctbx.array_family import flex

logger = logging.getLogger(f"dials.{__name__}")


def merged_measurements(table, experiments, anomalous: bool):
    """The merged scaled intensities (a cctbx intensity array), or None if there are none."""
    from dials.util.filter_reflections import filter_reflection_table

    from dials_factored.merging import symmetry_of

    try:
        table = filter_reflection_table(table, ["scale"], partiality_threshold=0.4)
    except ValueError:  # nothing left
        return None
    if len(table) == 0:
        return None
    cells = np.array([e.crystal.get_unit_cell().parameters() for e in experiments])
    symmetry = symmetry_of(experiments).customized_copy(unit_cell=tuple(np.median(cells, 0)))
    isf = table["inverse_scale_factor"]
    observations = miller.set(symmetry, table["miller_index"], anomalous_flag=anomalous).array(
        data=table["intensity.scale.value"] / isf,
        sigmas=flex.sqrt(table["intensity.scale.variance"]) / isf)
    observations.set_observation_type_xray_intensity()
    return observations.map_to_asu().merge_equivalents().array()


def posterior_mtz(result, experiments, params):
    """The MTZ object (IMEAN/SIGIMEAN measured; I/SIGI, F/SIGF posterior), or None."""
    from dials_factored import reference as references
    from dials_factored.posterior import posterior

    anomalous = bool(result.parameters.get("anomalous", False))
    merged = merged_measurements(result.table, experiments, anomalous)
    if merged is None or merged.size() < 50:
        logger.warning("Warning: too few merged reflections for posterior amplitudes; "
                       "%s not written", params.output.posterior)
        return None
    f_ref = None
    d = merged.d_spacings().data().as_numpy_array()
    ref = references.load(params.reference, merged.crystal_symmetry(), float(d.min()))
    if ref is not None:
        i_ref = ref.intensities(merged.indices(), anomalous)
        f_ref = np.where(np.isfinite(i_ref), np.sqrt(np.maximum(i_ref, 0.0)), np.nan)
    post = posterior(merged.data().as_numpy_array(), merged.sigmas().as_numpy_array(), d,
                     merged.centric_flags().data().as_numpy_array(),
                     merged.epsilons().data().as_numpy_array().astype(float), f_ref)
    logger.info("Posterior amplitudes of %d merged reflections (%s prior); %d measured "
                "intensities were negative", merged.size(),
                "reference" if f_ref is not None else "Wilson",
                int((merged.data() < 0).count(True)))
    i_post = merged.customized_copy(data=flex.double(post.i_mean),
                                    sigmas=flex.double(post.i_sd))
    f_post = merged.customized_copy(data=flex.double(post.f_mean),
                                    sigmas=flex.double(post.f_sd))
    f_post.set_observation_type_xray_amplitude()
    dataset = merged.as_mtz_dataset(column_root_label="IMEAN")
    dataset.add_miller_array(i_post, column_root_label="I")
    dataset.add_miller_array(f_post, column_root_label="F")
    return dataset.mtz_object()
