"""From Monte-Carlo samples to expected pixel signal, centroids and Fisher information.

The expected signal of observation h in pixel p (photons) is ``I_h·u_hp`` with
``u_hp`` = Σ of the weights (photons per unit I_true) of h's samples landing in p, so
``u_hp = E_h·P_hp / I_h`` with P_hp the exact (Monte-Carlo) profile, which sums to the
fraction of the spot on the detector (and inside the scan).  The expected image is
``μ_p = bg_p + Σ_h I_h u_hp`` (overlapping spots add).

Ideal variance.  An estimator that knows every profile, the background and all scales
has, for I_h, the Fisher information of the Poisson counts
``F_h = Σ_p (∂μ_p/∂I_h)²/μ_p = Σ_p u_hp²/μ_p`` (pixels of h on the detector, hot and
zinger pixels excluded), and ``ideal_variance = 1/F_h`` (intensity units squared, the
units of I_true).  Without background it would be ``I_h²/E_h`` (pure counting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PixelSignal:
    """Per-(observation, pixel[, frame]) signal per unit I, aggregated from samples."""

    obs: np.ndarray  # (k,) observation index
    pixel: np.ndarray  # (k,) flat pixel index y·nx + x
    frame: np.ndarray  # (k,) frame (0 for stills)
    u: np.ndarray  # (k,) photons per unit I_true


def aggregate(obs: np.ndarray, pixel: np.ndarray, frame: np.ndarray, weight: np.ndarray,
              n_pixels: int) -> PixelSignal:
    """Sum sample weights per distinct (observation, frame, pixel)."""
    n_frames = int(frame.max()) + 1 if frame.size else 1
    key = (obs.astype(np.int64) * n_frames + frame) * n_pixels + pixel
    uniq, inverse = np.unique(key, return_inverse=True)
    u = np.bincount(inverse, weights=weight, minlength=uniq.size)
    pixel_u = uniq % n_pixels
    rest = uniq // n_pixels
    return PixelSignal(obs=rest // n_frames, pixel=pixel_u, frame=rest % n_frames, u=u)


@dataclass
class Moments:
    """Weighted sums per observation over all its samples.

    Σw, Σw·x and Σw·x² for x, y, z, and Σw over the samples landing on the panel.
    """

    total: np.ndarray
    first: np.ndarray  # (m, 3)
    second: np.ndarray  # (m, 3)
    on_panel: np.ndarray

    @classmethod
    def zeros(cls, m: int) -> Moments:
        return cls(np.zeros(m), np.zeros((m, 3)), np.zeros((m, 3)), np.zeros(m))

    def add(self, obs: np.ndarray, x, y, z, w, on) -> None:
        m = self.total.size
        self.total += np.bincount(obs, weights=w, minlength=m)
        for k, c in enumerate((x, y, z)):
            self.first[:, k] += np.bincount(obs, weights=w * c, minlength=m)
            self.second[:, k] += np.bincount(obs, weights=w * c * c, minlength=m)
        self.on_panel += np.bincount(obs, weights=np.where(on, w, 0.0), minlength=m)

    def centroid(self) -> np.ndarray:
        """(m, 3) weighted mean x, y, z (NaN without signal)."""
        safe = np.where(self.total > 0, self.total, np.nan)
        return self.first / safe[:, None]

    def rms(self) -> np.ndarray:
        """(m, 3) weighted rms spread of x, y (pixels) and z (frames) about the centroid."""
        safe = np.where(self.total > 0, self.total, np.nan)[:, None]
        return np.sqrt(np.clip(self.second / safe - (self.first / safe) ** 2, 0, None))

    def fraction_on_panel(self) -> np.ndarray:
        return np.where(self.total > 0, self.on_panel / np.where(self.total > 0, self.total, 1),
                        0.0)


def fisher_information(ps: PixelSignal, mu: np.ndarray, excluded: np.ndarray,
                       m: int) -> np.ndarray:
    """Σ_p u_hp²/μ_p per observation over the entries ``ps`` of one image.

    ``mu`` is the flat expected image, ``excluded`` a flat boolean mask of pixels the
    ideal estimator ignores (hot pixels, zingers).
    """
    keep = ~excluded[ps.pixel]
    terms = np.where(keep, ps.u ** 2 / mu[ps.pixel], 0.0)
    return np.bincount(ps.obs, weights=terms, minlength=m)
