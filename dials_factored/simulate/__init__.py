"""The project's deterministic simulator of stills and rotation data, with complete truth.

An independent forward model (it shares no code with dials_factored's own profile,
partiality or prediction models):

* :mod:`.crystal`  — true intensities (Wilson statistics), orientations, dxtbx crystal;
* :mod:`.geometry` — beam, detector, goniometer, scan, vectorised ray-panel intersection;
* :mod:`.physics`  — Monte-Carlo photon tracing of spots (stills and rotation);
* :mod:`.signal`   — samples → expected pixel signal, centroids, Fisher information;
* :mod:`.images`   — background, Poisson counting, hot pixels, zingers, miniCBF writing;
* :mod:`.design`   — the resolved parameters, per-image truth and random streams;
* :mod:`.stills`, :mod:`.rotation` — the two experiment drivers;
* :mod:`.truth`    — models.expt, truth.mtz, observations.npz, truth.json;
* :mod:`.run`      — one whole simulation (what ``dials.factored_simulate`` runs).
"""

from __future__ import annotations
