"""Sub-pixel peak finding, on every device."""

import numpy as np
import pytest

from mbook.core import backend, strict
from mbook.electron import peaks

H = backend.asnumpy  # the one way to the host, for np.testing


def gaussian_image(centres, sampling=0.2, n=48, width=0.35):
    x = np.arange(n) * sampling
    image = np.zeros((n, n))
    for cx, cy in centres:
        image += np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / (2 * width**2))
    return image


def test_subpixel_accuracy_better_than_a_tenth_of_a_pixel(rng, device):
    lattice = np.array([[2.0, 2.0], [2.0, 6.0], [6.0, 2.0], [6.0, 6.0]])
    centres = lattice + rng.uniform(-0.5, 0.5, size=lattice.shape)  # off the pixel grid
    found = peaks.find_peaks(gaussian_image(centres), sampling=0.2, min_distance=1.0)
    assert len(found) == 4
    assert np.max(H(peaks.match_positions(found, centres))) < 0.02  # a tenth of the 0.2 Å pixel


def test_min_distance_merges_close_peaks(device):
    image = gaussian_image([(3.0, 3.0), (4.0, 3.0)], width=0.3)
    assert len(peaks.find_peaks(image, sampling=0.2, min_distance=1.5)) == 1
    assert len(peaks.find_peaks(image, sampling=0.2, min_distance=0.3)) == 2


def test_peaks_across_the_periodic_boundary(device):
    """A peak on the edge is one peak (wrap-around filter), refined across the boundary."""
    image = gaussian_image([(0.03, 4.0), (9.6 + 0.03, 4.0)], n=48)  # one peak, seen from both sides of x = 0
    found = H(peaks.find_peaks(image, sampling=0.2, min_distance=1.0))
    assert found.shape == (1, 2)
    assert H(peaks.match_positions(found, [[0.03, 4.0]], extent=(9.6, 9.6)))[0] < 0.02


def test_periodic_minimum_image_distance(device):
    d = H(peaks.match_positions([[0.1, 0.1]], [[9.5, 9.5]], extent=(9.6, 9.6)))
    assert d[0] == pytest.approx(np.hypot(0.2, 0.2))


@pytest.mark.parametrize("kwargs, match", [({"threshold": 1.0}, "threshold"), ({"min_distance": 0.0}, "min_distance")])
def test_bad_input(kwargs, match):
    args = {"sampling": 0.2, "min_distance": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        peaks.find_peaks(np.ones((8, 8)), **args)


def test_profile_minima_subsample(device):
    x = np.linspace(0, 10, 201)
    minima = H(peaks.profile_minima(x, np.cos(2 * np.pi * x / 3.3), smooth=0))
    np.testing.assert_allclose(minima, [1.65, 4.95, 8.25], atol=1e-3)


def test_profile_minima_survive_smoothing(device):
    x = np.linspace(0, 10, 201)
    noisy = np.cos(2 * np.pi * x / 3.3) + 0.02 * np.random.default_rng(1).standard_normal(x.size)
    minima = H(peaks.profile_minima(x, noisy, order=5, smooth=2.0))
    np.testing.assert_allclose(minima, [1.65, 4.95, 8.25], atol=0.03)


def test_numpy_inputs_on_the_stand_in_give_stand_in_arrays():
    """The device rule: NumPy in, the selected device's arrays out."""
    backend.set_device("strict")
    try:
        x = np.linspace(0, 10, 201)
        results = [
            peaks.find_peaks(gaussian_image([(3.0, 3.0)]), sampling=0.2, min_distance=1.0),
            peaks.match_positions([[0.1, 0.1]], [[9.5, 9.5]], extent=(9.6, 9.6)),
            peaks.profile_minima(x, np.cos(x)),
        ]
        assert all(backend.get_array_module(r) is strict.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_profile_minima_between_samples(device):
    """Minima a quarter step off the samples (cos(2π(x - 0.013)/3.3) on steps of 0.05): the parabola through the
    three samples around each finds them to 1e-5 (its error for a cosine sampled this finely); the nearest
    sample alone is 0.013 off."""
    x = np.linspace(0, 10, 201)
    minima = backend.asnumpy(peaks.profile_minima(x, np.cos(2 * np.pi * (x - 0.013) / 3.3), smooth=0))
    np.testing.assert_allclose(minima, np.array([1.65, 4.95, 8.25]) + 0.013, rtol=0, atol=1e-4)


def test_a_column_across_the_periodic_edge_is_one_peak(device):
    """A periodic image with one wide column three pixels before the cell's edge: one peak, where it is."""
    n, dx = 32, 0.2
    x = np.arange(n) * dx
    x0, y0 = (n - 3) * dx, 3.1
    d = (x[:, None] - x0 + n * dx / 2) % (n * dx) - n * dx / 2
    image = np.exp(-(d**2 + (x[None, :] - y0) ** 2) / (2 * 0.5**2))
    found = backend.asnumpy(peaks.find_peaks(image, sampling=dx, min_distance=0.4, threshold=0.3))
    assert found.shape == (1, 2)
    np.testing.assert_allclose(found[0], [x0, y0], atol=0.1 * dx)


def test_peak_threshold_is_relative_to_the_images_range(device):
    """level = min + t (max - min): a background offset of 100 does not change which peaks pass (the 0.3 peak
    stays below half the range)."""
    x = np.arange(64) * 0.2

    def spot(a, b, height):
        return height * np.exp(-((x[:, None] - a) ** 2 + (x[None, :] - b) ** 2) / 0.18)

    image = spot(3.0, 3.0, 1.0) + spot(9.0, 9.0, 0.3)
    for offset in (0.0, 100.0):
        found = backend.asnumpy(peaks.find_peaks(image + offset, sampling=0.2, min_distance=1.0, threshold=0.5))
        assert found.shape == (1, 2)
        np.testing.assert_allclose(found[0], [3.0, 3.0], atol=0.02)
