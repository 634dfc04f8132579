"""Sub-pixel peak finding."""

import numpy as np
import pytest

from mbook.electron import peaks


def gaussian_image(centres, sampling=0.2, n=48, width=0.35):
    x = np.arange(n) * sampling
    image = np.zeros((n, n))
    for cx, cy in centres:
        image += np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / (2 * width**2))
    return image


def test_subpixel_accuracy_better_than_a_tenth_of_a_pixel(rng):
    lattice = np.array([[2.0, 2.0], [2.0, 6.0], [6.0, 2.0], [6.0, 6.0]])
    centres = lattice + rng.uniform(-0.5, 0.5, size=lattice.shape)  # off the pixel grid
    found = peaks.find_peaks(gaussian_image(centres), sampling=0.2, min_distance=1.0)
    assert len(found) == 4
    assert np.max(peaks.match_positions(found, centres)) < 0.02  # a tenth of the 0.2 Å pixel


def test_min_distance_merges_close_peaks():
    image = gaussian_image([(3.0, 3.0), (4.0, 3.0)], width=0.3)
    assert len(peaks.find_peaks(image, sampling=0.2, min_distance=1.5)) == 1
    assert len(peaks.find_peaks(image, sampling=0.2, min_distance=0.3)) == 2


def test_periodic_minimum_image_distance():
    d = peaks.match_positions([[0.1, 0.1]], [[9.5, 9.5]], extent=(9.6, 9.6))
    assert d[0] == pytest.approx(np.hypot(0.2, 0.2))


@pytest.mark.parametrize("kwargs, match", [({"threshold": 1.0}, "threshold"), ({"min_distance": 0.0}, "min_distance")])
def test_bad_input(kwargs, match):
    args = {"sampling": 0.2, "min_distance": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        peaks.find_peaks(np.ones((8, 8)), **args)


def test_profile_minima_subsample():
    x = np.linspace(0, 10, 201)
    minima = peaks.profile_minima(x, np.cos(2 * np.pi * x / 3.3), smooth=0)
    np.testing.assert_allclose(minima, [1.65, 4.95, 8.25], atol=1e-3)
