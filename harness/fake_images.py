"""A stand-in for a dxtbx image set: what the image reader (``shoeboxes._ImageCutter``)
uses of one, holding one given image and mask."""

from __future__ import annotations

import numpy as np
from dials.array_family import flex


class FakeImages:
    """One panel image (counts, 2D) with its own detector model and mask (None: all
    pixels allowed), returned for every index; the mask counts as dynamic, so the reader
    takes it from ``get_mask`` image by image."""

    def __init__(self, detector, image: np.ndarray, mask: np.ndarray | None = None):
        self.detector, self.image = detector, image
        self.mask = np.ones(image.shape, bool) if mask is None else mask

    def get_raw_data(self, index):
        return (flex.double(self.image),)

    def get_mask(self, index):
        return (flex.bool(self.mask),)

    def has_dynamic_mask(self):
        return True

    def clear_cache(self):
        pass

    def get_detector(self):
        return self.detector

    def get_path(self, index):
        return "fake.cbf"
