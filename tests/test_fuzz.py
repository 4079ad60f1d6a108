"""Property tests (hypothesis): random inputs never crash and never give a fake measurement.

* random reflection tables (random columns missing, wrong types, ids out of range,
  identifiers missing or wrong) through ``inputs.check_reflections``: it accepts the
  table or raises one ``Sorry``; what it accepts is consistent with the experiments;
* random images with NaN, infinite, masked and overloaded pixels and boxes partly off the
  panel, cut by the image reader and then reduced by the per-reflection statistics (Term-1
  profile fit, summation, outlier test): the store never holds a NaN count or a usable
  pixel that is masked, not finite, off the panel or overloaded, and no intensity is NaN
  while its variance is finite.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
from dials.array_family import flex
from dials.util import Sorry
from dxtbx.model import BeamFactory, DetectorFactory, Experiment, ExperimentList
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dials_factored.inputs import check_reflections
from dials_factored.pixel_store import OVERLOADED, USABLE, PixelStore
from dials_factored.residuals.intensity import outlier_pixels, profile_fit, summation
from dials_factored.shoeboxes import Boxes, _ImageCutter, background
from harness.fake_images import FakeImages

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- reflection tables -------------------------------------------------------------

#: Each required column is mostly right, sometimes missing or of the wrong type.
COLUMN_CHOICES = {
    "id": {"right": lambda ids: flex.int(ids),
           "wrong type": lambda ids: flex.double([float(i) for i in ids])},
    "miller_index": {"right": lambda ids: flex.miller_index([(1, 2, 3)] * len(ids)),
                     "wrong type": lambda ids: flex.int([1] * len(ids))},
}
STATES = ["right", "right", "right", "missing", "wrong type"]


@st.composite
def tables(draw):
    """(experiments, reflection table) with random columns, ids and identifiers."""
    n_expt = draw(st.integers(1, 4))
    named = draw(st.booleans())
    experiments = ExperimentList(
        [Experiment(identifier=f"expt-{i}" if named else "") for i in range(n_expt)])
    ids = draw(st.lists(st.integers(-1, n_expt - 1) | st.integers(-3, n_expt + 2),
                        min_size=1, max_size=8))
    table = flex.reflection_table()
    for column, makers in COLUMN_CHOICES.items():
        state = draw(st.sampled_from(STATES))
        if state != "missing":
            table[column] = makers[state](ids)
    if draw(st.booleans()):
        table["bbox"] = flex.int6([(0, 5, 0, 5, 0, 1)] * len(ids))
    mode = draw(st.sampled_from(["none", "right", "wrong", "partial"]))
    for i in range(n_expt + 2):
        if mode == "right" or (mode == "partial" and i % 2 == 0):
            table.experiment_identifiers()[i] = f"expt-{i}"
        elif mode == "wrong":
            table.experiment_identifiers()[i] = f"other-{i}"
    return experiments, table


@SETTINGS
@given(tables())
def test_check_reflections_accepts_only_consistent_tables(case):
    experiments, table = case
    try:
        check_reflections(table, experiments)
    except Sorry as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(table["id"], flex.int)
    assert isinstance(table["miller_index"], flex.miller_index)
    used = {i for i in table["id"] if i != -1}
    assert used and all(0 <= i < len(experiments) for i in used)
    if any(e.identifier for e in experiments):
        idents = dict(table.experiment_identifiers())
        assert all(idents[i] == experiments[i].identifier for i in used)


def test_check_reflections_names_every_missing_column():
    table = flex.reflection_table()
    table["bbox"] = flex.int6([(0, 5, 0, 5, 0, 1)])
    with pytest.raises(Sorry, match="lacks required column.*id, miller_index"):
        check_reflections(table, ExperimentList([Experiment()]))


# --- images → pixel store → per-reflection statistics -----------------------------

SIZE = 40  # pixels per side of the fake panel
TRUSTED_MAX = 500.0


class FlatPixels:
    """The per-reflection segment layout of the pixel store (see shoeboxes.Pixels)."""

    def __init__(self, counts, start):
        self.counts, self.start = counts, start
        self.frame = np.zeros(len(counts), np.int32)

    @property
    def owner(self):
        return np.repeat(np.arange(len(self.start) - 1), np.diff(self.start))

    def reduce(self, values):
        return np.add.reduceat(values, self.start[:-1]) if len(values) else np.zeros(0)


def _geometry():
    beam = BeamFactory.simple(1.0)
    detector = DetectorFactory.simple("PAD", 100.0, (SIZE * 0.172 / 2, SIZE * 0.172 / 2), "+x",
                                      "-y", (0.172, 0.172), (SIZE, SIZE),
                                      trusted_range=(-1.0, TRUSTED_MAX))
    return beam, detector


@st.composite
def images_and_boxes(draw):
    """A random image (NaN, ±inf, overloads, masked pixels) and random boxes on it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.poisson(draw(st.sampled_from([0.0, 0.5, 5.0, 50.0])), (SIZE, SIZE)).astype(float)
    for frac, value in ((draw(st.floats(0, 1)), np.nan), (draw(st.floats(0, 0.2)), np.inf),
                        (draw(st.floats(0, 0.2)), -np.inf),
                        (draw(st.floats(0, 0.3)), 10 * TRUSTED_MAX)):
        image[rng.random(image.shape) < frac] = value
    mask = rng.random(image.shape) >= draw(st.floats(0, 1))
    n = draw(st.integers(1, 6))
    x0 = rng.integers(-6, SIZE, n)
    y0 = rng.integers(-6, SIZE, n)
    nx, ny = rng.integers(1, 9, n), rng.integers(1, 9, n)
    boxes = Boxes(np.zeros(n, int), x0, x0 + nx, y0, y0 + ny, np.zeros(n, int), np.ones(n, int))
    return image, mask, boxes, rng


def _cut(image, mask, boxes):
    """The reader's pixel columns for ``boxes`` on one still (unwritten pixels unusable)."""
    beam, detector = _geometry()
    n = len(boxes.x0)
    start = np.concatenate([[0], np.cumsum(boxes.n_pixels)]).astype(np.int64)
    centre = np.column_stack([(boxes.x0 + boxes.x1) / 2, (boxes.y0 + boxes.y1) / 2])
    lab = np.array([detector[0].get_pixel_lab_coord(tuple(c)) for c in centre])
    s1 = lab / np.linalg.norm(lab, axis=1)[:, None] / beam.get_wavelength()
    images = FakeImages(detector, image, mask)
    experiments = [SimpleNamespace(beam=beam, detector=detector, imageset=images, scan=None)]
    with tempfile.TemporaryDirectory() as scratch:
        store = PixelStore(scratch, start)
        _ImageCutter(experiments, np.zeros(n, int), s1, boxes, store, 1.0,
                     [(images, 0, [0], 0)])(0)
        counts, flags = store.read("counts", 0, n), store.read("flags", 0, n)
    return counts, (flags & USABLE) > 0, (flags & OVERLOADED) > 0, start


def _expected_flags(image, mask, boxes):
    """Usable and overloaded per pixel, box by box (x fastest), from the image itself."""
    usable, over = [], []
    for r in range(len(boxes.x0)):
        ys, xs = np.mgrid[boxes.y0[r]:boxes.y1[r], boxes.x0[r]:boxes.x1[r]]
        inside = (xs >= 0) & (xs < SIZE) & (ys >= 0) & (ys < SIZE)
        value = np.where(inside, image[np.clip(ys, 0, SIZE - 1), np.clip(xs, 0, SIZE - 1)], 0)
        good = inside & np.isfinite(value)
        over.append((good & (value >= TRUSTED_MAX)).ravel())
        ok = good & mask[np.clip(ys, 0, SIZE - 1), np.clip(xs, 0, SIZE - 1)]
        usable.append((ok & (value < TRUSTED_MAX)).ravel())
    return np.concatenate(usable), np.concatenate(over)


@SETTINGS
@given(images_and_boxes())
def test_bad_pixels_never_enter_and_never_give_nan_intensities(case):
    image, mask, boxes, rng = case
    counts, usable, over, start = _cut(image, mask, boxes)
    assert np.all(np.isfinite(counts))
    want_usable, want_over = _expected_flags(image, mask, boxes)
    np.testing.assert_array_equal(usable, want_usable)
    np.testing.assert_array_equal(over, want_over)

    pix = FlatPixels(counts, start)
    profile = rng.random(len(counts)) * (rng.random(len(counts)) < 0.8)
    profile /= np.maximum(pix.reduce(profile), 1e-12)[pix.owner]
    fg = rng.random(len(counts)) < 0.5
    bg, n_bg = background(pix, fg, usable)
    j_expected = rng.choice([0.0, -5.0, 3.0, 1e4], len(start) - 1)

    j, var = profile_fit(pix, profile, usable, bg, n_bg, j_expected)
    assert not np.any(np.isnan(j) & np.isfinite(var))
    assert np.all(var > 0)
    assert np.all(np.isfinite(j[np.isfinite(var)]))
    fitted = pix.reduce(np.where(usable, profile, 0.0)) > 0
    assert np.all(np.isinf(var[~fitted]))  # no usable pixel under the profile: no measurement

    value, var_sum, n_fg, _ = summation(pix, fg, usable, bg, n_bg)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(var_sum) & (var_sum > 0))
    np.testing.assert_array_equal(n_fg, pix.reduce((fg & usable).astype(float)))

    outliers = outlier_pixels(pix, profile, usable, bg, j_expected, threshold=8.0)
    assert not np.any(outliers & ~usable)
