"""Spot shapes beyond the Gaussian: detector point-spread tails, non-Gaussian mosaicity.

Real spots are not the Gaussians of :mod:`.physics`' default model.  Two ingredients
make them sharper-cored or blunter than a Gaussian of the same rms:

**Detector point spread** (``Spreads.psf_shape``; offsets in pixels, per photon):

* ``gaussian``: two independent N(0, psf²) components (the default, unchanged);
* ``lorentzian_tails``: with probability 1 − f the Gaussian core, with probability
  f = ``psf_tail_fraction`` an isotropic 2D Cauchy (Lorentzian) tail of scale
  w = ``psf_tail_width`` px, radial density ∝ r·w/(r² + w²)^{3/2}, truncated at
  r = ``TAIL_TRUNCATION``·w (radial CDF F(r) = 1 − w/√(r² + w²), sampled by its inverse)
  — a sharp core with the long wings of charge spreading / sensor scatter;
* ``exponential_tails``: the same mixture with an isotropic exponential tail, density
  ∝ exp(−r/w) in the plane, i.e. r ~ Gamma(2, w);
* ``flat_top``: a uniform disc of radius 2·psf (the same rms per axis, psf): blunter
  than a Gaussian (charge sharing over a pixel-sized cloud).

**Mosaic block orientations** (``Spreads.mosaic_shape``; rotation vectors in rad):

* ``gaussian``: three independent N(0, σ_m²) components (the default, unchanged);
* ``cauchy``: three independent Cauchy components of scale (half width at half
  maximum) σ_m, truncated at ±``CAUCHY_TRUNCATION``·σ_m (inverse CDF
  x = σ_m·tan((2U − 1)·atan c)); rms σ_m·√((c − atan c)/atan c) = 1.62 σ_m for c = 5;
* ``blocks``: a few discrete blocks, ``mosaic_blocks`` rotation vectors drawn once per
  crystal as N(0, σ_m²) per axis (:func:`block_orientations`), each photon from one of
  them with equal probability: a lumpy, split spot whose sub-spots have the width of
  the domain size.
"""

from __future__ import annotations

import math

import numpy as np

#: Lorentzian PSF tails are cut at this many tail widths (px).
TAIL_TRUNCATION = 10.0
#: Cauchy mosaic components are cut at this many scales.
CAUCHY_TRUNCATION = 5.0

PSF_SHAPES = ("gaussian", "lorentzian_tails", "exponential_tails", "flat_top")
MOSAIC_SHAPES = ("gaussian", "cauchy", "blocks")


def _radial(n: int, radius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Offsets (n×2) of the given radii in uniformly random directions."""
    angle = rng.uniform(0.0, 2 * math.pi, n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def detector_spread(n: int, spreads, rng: np.random.Generator) -> np.ndarray:
    """Point-spread offsets (n×2, px) of ``n`` photons (module docstring).

    The Gaussian shape draws exactly ``rng.standard_normal((n, 2))·psf`` (the stream of
    the original model); the others draw more numbers after it."""
    core = rng.standard_normal((n, 2)) * spreads.psf
    shape = spreads.psf_shape
    if shape == "gaussian":
        return core
    if shape == "flat_top":
        return _radial(n, 2 * spreads.psf * np.sqrt(rng.random(n)), rng)
    w = spreads.psf_tail_width
    tail = rng.random(n) < spreads.psf_tail_fraction
    k = int(tail.sum())
    if shape == "lorentzian_tails":
        f_max = 1 - 1 / math.sqrt(1 + TAIL_TRUNCATION ** 2)
        u = rng.random(k) * f_max
        radius = w * np.sqrt(1 / (1 - u) ** 2 - 1)
    elif shape == "exponential_tails":
        radius = rng.gamma(2.0, w, k)
    else:
        raise ValueError(f"unknown psf shape {shape!r} (one of {', '.join(PSF_SHAPES)})")
    core[tail] = _radial(k, radius, rng)
    return core


def block_orientations(n_blocks: int, mosaic: float, rng: np.random.Generator) -> np.ndarray:
    """The rotation vectors (n_blocks×3, rad) of one crystal's discrete mosaic blocks."""
    return rng.standard_normal((n_blocks, 3)) * mosaic


def mosaic_rotations(n: int, spreads, rng: np.random.Generator,
                     blocks: np.ndarray | None = None) -> np.ndarray:
    """Mosaic block rotation vectors (n×3, rad) of ``n`` photons (module docstring).

    The Gaussian shape draws exactly ``rng.standard_normal((n, 3))·σ_m``."""
    shape = spreads.mosaic_shape
    if shape == "gaussian":
        return rng.standard_normal((n, 3)) * spreads.mosaic
    if shape == "cauchy":
        c = math.atan(CAUCHY_TRUNCATION)
        return spreads.mosaic * np.tan((2 * rng.random((n, 3)) - 1) * c)
    if shape == "blocks":
        if blocks is None or len(blocks) == 0:
            raise ValueError("mosaic_shape=blocks needs the crystal's block orientations")
        return blocks[rng.integers(0, len(blocks), n)]
    raise ValueError(f"unknown mosaic shape {shape!r} (one of {', '.join(MOSAIC_SHAPES)})")


def mosaic_rms(spreads) -> float:
    """rms per axis (rad) of the mosaic rotation of ``spreads`` (its σ_m for Gaussian and
    blocks, 1.62 σ_m for the truncated Cauchy): what the first-order width R uses."""
    if spreads.mosaic_shape == "cauchy":
        c = CAUCHY_TRUNCATION
        return spreads.mosaic * math.sqrt((c - math.atan(c)) / math.atan(c))
    return spreads.mosaic
