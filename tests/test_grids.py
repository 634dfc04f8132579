"""Grid construction, validation and the stated conventions."""

import numpy as np
import pytest

from mbook.core import backend, grids


def test_any_two_define_the_grid():
    a = grids.make_grid(gpts=(100, 50), sampling=(0.1, 0.2))
    b = grids.make_grid(gpts=(100, 50), extent=(10.0, 10.0))
    c = grids.make_grid(sampling=(0.1, 0.2), extent=(10.0, 10.0))
    assert a.gpts == b.gpts == c.gpts == (100, 50)
    np.testing.assert_allclose(a.sampling, c.sampling)
    np.testing.assert_allclose(a.extent, (10.0, 10.0))
    assert a.reciprocal_sampling == pytest.approx((0.1, 0.1))


def test_scalars_broadcast_to_ndim():
    assert grids.make_grid(gpts=16, sampling=0.5, ndim=3).gpts == (16, 16, 16)
    assert grids.make_grid(gpts=16, sampling=0.5).ndim == 2


@pytest.mark.parametrize("gpts", [0, -4, 2.5, (8, 0), True, "64", (8, 8, 8)])
def test_bad_gpts_named_in_error(gpts):
    with pytest.raises(ValueError, match="gpts"):
        grids.make_grid(gpts=gpts, sampling=(0.1, 0.1))


@pytest.mark.parametrize("sampling", [0.0, -0.1, float("nan"), float("inf"), (0.1, -1.0)])
def test_bad_sampling_named_in_error(sampling):
    with pytest.raises(ValueError, match=r"sampling must be finite and > 0"):
        grids.make_grid(gpts=(8, 8), sampling=sampling)


def test_fewer_than_two_is_an_error():
    with pytest.raises(ValueError, match="give two of gpts, sampling and extent"):
        grids.make_grid(gpts=(8, 8))


def test_inconsistent_triple_is_an_error():
    with pytest.raises(ValueError, match="disagrees with extent"):
        grids.make_grid(gpts=(8, 8), sampling=0.1, extent=1.0)


def test_never_resized_silently():
    with pytest.raises(ValueError, match=r"pass gpts=\(34, 34\)"):
        grids.make_grid(extent=10.0, sampling=0.3)


def test_coordinates_corner_and_centred():
    grid = grids.make_grid(gpts=(4, 5), sampling=0.5)
    x, y = grids.coordinates(grid, xp=np)
    np.testing.assert_allclose(x, [0, 0.5, 1.0, 1.5])
    xc, yc = grids.coordinates(grid, centered=True, xp=np)
    assert xc[2] == 0 and yc[2] == 0  # origin at n // 2, where fftshift puts frequency zero
    assert np.fft.fftshift(np.fft.fftfreq(5))[2] == 0


def test_frequencies_in_fft_order_without_two_pi():
    grid = grids.make_grid(gpts=(8,), sampling=0.25)
    (k,) = grids.spatial_frequencies(grid, xp=np)
    np.testing.assert_allclose(k, [0, 0.5, 1.0, 1.5, -2.0, -1.5, -1.0, -0.5])
    # A plane wave of frequency k0 lands in the FFT bin where spatial_frequencies equals k0.
    (x,) = grids.coordinates(grid, xp=np)
    spectrum = np.fft.fft(np.exp(2j * np.pi * 1.5 * x))
    assert k[np.argmax(abs(spectrum))] == 1.5


def test_frequency_squared_matches_outer_sum():
    grid = grids.make_grid(gpts=(6, 4, 5), sampling=(0.1, 0.2, 0.3))
    kx, ky, kz = grids.spatial_frequencies(grid, xp=np)
    expected = kx[:, None, None] ** 2 + ky[None, :, None] ** 2 + kz[None, None, :] ** 2
    np.testing.assert_allclose(grids.frequency_squared(grid, xp=np), expected)


def test_radial_average_of_a_radial_function(device):
    grid = grids.make_grid(gpts=(64, 48), sampling=0.5)
    k2 = grids.frequency_squared(grid, xp=np)
    result = grids.radial_average(np.sqrt(k2), grid)
    assert all(backend.get_array_module(a) is backend.xp for a in result)  # on the selected device
    k, average = (backend.asnumpy(a) for a in result)
    assert len(k) == 24 and k[-1] < 1.0  # up to the Nyquist frequency of 1/(2*0.5)
    filled = np.isfinite(average)
    np.testing.assert_allclose(average[filled][1:], k[filled][1:], atol=0.5 * (k[1] - k[0]))


def test_radial_profile_of_the_distance_from_the_centre(device):
    """Mean of r over the ring [a, b) is its area-weighted centre, 2(b³ - a³) / 3(b² - a²)."""
    grid = grids.make_grid(gpts=(200, 200), sampling=0.1)
    x, y = grids.coordinates(grid, centered=True, xp=np)
    result = grids.radial_profile(np.hypot(x[:, None], y[None, :]), sampling=0.1, bin_width=1.0)
    assert all(backend.get_array_module(a) is backend.xp for a in result)
    radii, profile = (backend.asnumpy(a) for a in result)
    assert len(radii) == 10 and radii[0] == 0.5 and radii[-1] == 9.5  # up to the inscribed circle
    a, b = radii - 0.5, radii + 0.5
    # to a fifth of a pixel: the rings are cut from a 0.1 grid
    np.testing.assert_allclose(profile[1:], (2 * (b**3 - a**3) / (3 * (b**2 - a**2)))[1:], atol=0.02)


def test_radial_average_marks_empty_rings_nan():
    grid = grids.make_grid(gpts=(8, 8), sampling=1.0)
    k, average = grids.radial_average(np.ones((8, 8)), grid, num_bins=40)  # rings thinner than a pixel
    assert np.isnan(average).any() and np.all(average[np.isfinite(average)] == 1.0)


def test_radial_profile_refuses_bad_rings():
    with pytest.raises(ValueError, match="bin_width must be a finite number > 0"):
        grids.radial_profile(np.ones((8, 8)), sampling=1.0, bin_width=0.0)
    with pytest.raises(ValueError, match="no ring fits"):
        grids.radial_profile(np.ones((8, 8)), sampling=1.0, bin_width=10.0)


def test_radial_average_checks_shape():
    with pytest.raises(ValueError, match="must equal the 2D grid's gpts"):
        grids.radial_average(np.ones((4, 4)), grids.make_grid(gpts=(8, 8), sampling=1.0))


def test_fourier_crop_keeps_a_band_limited_field_exactly(device, rng):
    """A field whose spectrum lies inside the kept band is resampled without error: its values at the
    coarse grid's points are the fine field's values there."""
    fine = np.zeros((32, 24), complex)
    spectrum = np.zeros((32, 24), complex)
    for kx, ky in ((0, 0), (1, 2), (-3, 1), (2, -2)):
        spectrum[kx, ky] = rng.standard_normal() + 1j * rng.standard_normal()
    fine = np.fft.ifft2(spectrum)
    coarse = grids.fourier_crop(fine, (16, 12))
    assert backend.get_array_module(coarse) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(coarse), fine[::2, ::2], atol=1e-14)


def test_crop_and_pad_keep_frequencies_in_place(device):
    spectrum = np.arange(8 * 6, dtype=float).reshape(8, 6)
    cropped = backend.asnumpy(grids.crop_spectrum(spectrum, (4, 3)))
    # frequencies 0, 1, -2, -1 along x (rows 0, 1, 6, 7) and 0, 1, -1 along y (columns 0, 1, 5)
    np.testing.assert_array_equal(cropped, spectrum[np.ix_([0, 1, 6, 7], [0, 1, 5])])
    padded = backend.asnumpy(grids.pad_spectrum(cropped, (8, 6)))
    np.testing.assert_array_equal(backend.asnumpy(grids.crop_spectrum(padded, (4, 3))), cropped)
    assert padded.sum() == cropped.sum()


def test_crops_refuse_bigger_bands():
    with pytest.raises(ValueError, match="must not exceed"):
        grids.crop_spectrum(np.ones((4, 4)), (5, 4))
    with pytest.raises(ValueError, match="must not be smaller"):
        grids.pad_spectrum(np.ones((4, 4)), (3, 8))
