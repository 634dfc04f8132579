"""Microscope imaging in mbook.light.microscope: Zernike pupils, source sampling, partial coherence."""

import math

import numpy as np
import pytest
from scipy import special

from mbook.core import backend, grids, propagation
from mbook.light import microscope

LAMBDA = 0.5  # µm


def test_zernike_values_and_orthogonality(device):
    assert float(microscope.zernike(4, 0, 1.0, 0.3)) == pytest.approx(1.0)
    assert float(microscope.zernike(3, -1, 1.0, math.pi / 2)) == pytest.approx(1.0)  # coma along y
    t = np.linspace(-1, 1, 801)
    rho = np.hypot(t[:, None], t[None, :])
    phi = np.arctan2(t[None, :], t[:, None])
    inner = float((microscope.zernike(2, 0, rho, phi) * microscope.zernike(4, 0, rho, phi)).sum())
    norm = float((microscope.zernike(4, 0, rho, phi) ** 2).sum())
    assert abs(inner / norm) < 2e-3


def test_zernike_refuses_bad_indices():
    with pytest.raises(ValueError, match="n - m even"):
        microscope.zernike(3, 0, 0.5, 0.0)
    grid = grids.make_grid(gpts=(8, 8), sampling=0.25)
    with pytest.raises(ValueError, match="Zernike indices"):
        microscope.pupil(grid, wavelength=LAMBDA, na=0.3, zernike_waves={(3, 0): 0.1})


def test_pupil_cutoff_and_defocus(device):
    grid = grids.make_grid(gpts=(128, 128), sampling=0.25)
    p = backend.asnumpy(microscope.pupil(grid, wavelength=LAMBDA, na=0.3, defocus=2.0))
    radius = 0.3 / LAMBDA * grid.extent[0]  # pupil radius in frequency pixels
    assert np.count_nonzero(p) == pytest.approx(math.pi * radius**2, rel=0.03)
    inside = p != 0
    np.testing.assert_allclose(abs(p[inside]), 1.0)
    transfer = backend.asnumpy(propagation.angular_spectrum_propagator(grid, 2.0, LAMBDA))
    np.testing.assert_allclose(p[inside], transfer[inside], atol=1e-12)


def test_pupil_refuses_na_above_the_medium_index():
    grid = grids.make_grid(gpts=(8, 8), sampling=0.25)
    with pytest.raises(ValueError, match="cannot exceed the index of the medium"):
        microscope.pupil(grid, wavelength=LAMBDA, na=1.2)


def test_source_points_fill_the_condenser_disc(device):
    grid = grids.make_grid(gpts=(128, 128), sampling=0.5)
    points = microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.1)
    assert backend.get_array_module(points) is backend.xp
    radius = 0.1 / LAMBDA * grid.extent[0]  # 12.8 lattice steps
    assert len(points) == pytest.approx(math.pi * radius**2, rel=0.03)
    assert np.all(backend.asnumpy(points).sum(axis=0) == 0)  # symmetric source
    assert len(microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.0)) == 1
    assert len(microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.1, max_points=100)) <= 100


def test_source_beyond_the_grid_is_refused():
    grid = grids.make_grid(gpts=(32, 32), sampling=0.5)
    with pytest.raises(ValueError, match="beyond the grid's bandwidth"):
        microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.6)


def test_empty_sample_gives_unit_intensity_at_any_source_size(device):
    image = microscope.partially_coherent_image(np.ones((32, 32), complex), wavelength=LAMBDA, sampling=0.5,
                                                na=0.3, na_illumination=0.2, defocus=3.0)
    assert backend.get_array_module(image) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(image), 1.0, atol=1e-12)


def test_partial_coherence_damps_a_defocused_phase_grating_by_the_jinc_envelope(device):
    """Weak phase grating, defocus z, disc source of radius σ: contrast = 2φ0 |sin(πλzk²)| |2J1(u)/u|,
    u = 2π λ z σ k (first order in φ0; Born & Wolf 1999, ch. 10)."""
    n, dx, phi0 = 128, 0.5, 0.02
    k = 1 / 4.0  # period 4 µm
    z = 1 / (2 * LAMBDA * k**2)  # defocus for the largest coherent contrast
    x = np.arange(n) * dx
    t = np.exp(1j * phi0 * np.cos(2 * np.pi * k * x))[:, None] * np.ones((1, n))
    for na_ill in (0.0, 0.06):
        image = backend.asnumpy(microscope.partially_coherent_image(
            t, wavelength=LAMBDA, sampling=dx, na=0.5, na_illumination=na_ill, defocus=z))
        contrast = 2 * abs(np.mean(image[:, 0] * np.cos(2 * np.pi * k * x)))
        u = 2 * np.pi * LAMBDA * z * (na_ill / LAMBDA) * k
        envelope = 1.0 if u == 0 else abs(2 * special.j1(u) / u)
        assert contrast == pytest.approx(2 * phi0 * envelope, rel=0.02)


def test_partial_coherence_is_the_mean_of_coherent_images(device):
    """Abbe's sum, checked term by term: each source point q is a coherent image under a tilted plane wave."""
    rng = np.random.default_rng(3)
    t = np.exp(0.4j * rng.random((24, 24)))
    kwargs = dict(wavelength=LAMBDA, sampling=0.5, na=0.3, defocus=1.5)
    grid = grids.make_grid(gpts=(24, 24), sampling=0.5)
    points = backend.asnumpy(microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.1))
    transfer = backend.asnumpy(microscope.pupil(grid, wavelength=LAMBDA, na=0.3, defocus=1.5))
    x = np.arange(24) * 0.5
    expected = np.zeros((24, 24))
    for i, j in points:
        tilt = np.exp(2j * np.pi * (i * x[:, None] + j * x[None, :]) / grid.extent[0])
        expected += abs(np.fft.ifft2(transfer * np.fft.fft2(t * tilt))) ** 2 / len(points)
    image = microscope.partially_coherent_image(t, na_illumination=0.1, **kwargs)
    np.testing.assert_allclose(backend.asnumpy(image), expected, atol=1e-12)


def test_source_batches_give_the_same_image_and_copy_nothing_per_batch(device, monkeypatch, host_copies):
    rng = np.random.default_rng(4)
    t = np.exp(0.3j * rng.random((32, 32)))
    kwargs = dict(wavelength=LAMBDA, sampling=0.5, na=0.3, na_illumination=0.15, defocus=2.0)
    whole = backend.asnumpy(microscope.partially_coherent_image(t, **kwargs))
    copies_whole = host_copies(microscope.partially_coherent_image, t, **kwargs)
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(8 * 16 * 32 * 32 / 2**30))  # a few source points per batch
    batched = backend.asnumpy(microscope.partially_coherent_image(t, **kwargs))
    np.testing.assert_allclose(batched, whole, atol=1e-13)
    assert host_copies(microscope.partially_coherent_image, t, **kwargs) == copies_whole


def test_cpu_and_gpu_agree_for_partial_coherence(device, on_cpu):
    rng = np.random.default_rng(5)
    t = np.exp(0.3j * rng.random((32, 32)))
    kwargs = dict(wavelength=LAMBDA, sampling=0.5, na=0.3, na_illumination=0.15, defocus=2.0)
    reference = on_cpu(microscope.partially_coherent_image, t, **kwargs)
    result = microscope.partially_coherent_image(t, **kwargs)
    assert backend.get_array_module(result) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result), reference, atol=1e-10)


def test_numpy_inputs_give_device_results_on_the_stand_in():
    """The device rule for mbook.light.microscope's imaging functions."""
    backend.set_device("strict")
    try:
        grid = grids.make_grid(gpts=(16, 16), sampling=0.5)
        results = [
            microscope.zernike(2, 0, np.linspace(0, 1, 5), np.zeros(5)),
            microscope.pupil(grid, wavelength=LAMBDA, na=0.3, zernike_waves={(2, 2): 0.1}),
            microscope.source_points(grid, wavelength=LAMBDA, na_illumination=0.1),
            microscope.partially_coherent_image(np.ones((16, 16)), wavelength=LAMBDA, sampling=0.5, na=0.3,
                                                na_illumination=0.1),
        ]
        assert all(backend.get_array_module(r) is backend.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_defocus_is_named_when_it_is_not_a_length():
    from mbook.light import microscope

    with pytest.raises(ValueError, match="defocus must be a finite number"):
        microscope.partially_coherent_image(np.ones((16, 16), complex), wavelength=0.5, sampling=0.1, na=0.3,
                                            na_illumination=0.1, defocus="abc")


def test_zernike_defocus_is_a_fresnel_defocus(device):
    """c waves of Z(2,0) = 2ρ² - 1 with ρ = λ|k|/NA: 2πc(2ρ² - 1) = -2πc - πλz|k|² for z = -4cλ/NA², so the
    aberrated pupil is e^{-2πic} times the Fresnel propagator over z, inside the aperture, to rounding."""
    wavelength, na, c = 0.5, 0.3, 0.15
    grid = grids.make_grid(gpts=(64, 64), sampling=0.25)
    pupil = backend.asnumpy(microscope.pupil(grid, wavelength=wavelength, na=na, zernike_waves={(2, 0): c}))
    fresnel = backend.asnumpy(propagation.fresnel_propagator(grid, -4 * c * wavelength / na**2, wavelength))
    inside = pupil != 0
    assert inside.sum() > 100
    np.testing.assert_allclose(pupil[inside], np.exp(-2j * np.pi * c) * fresnel[inside], rtol=0, atol=1e-12)


def test_pupil_and_source_keep_every_lattice_point_of_their_disc_rim_included():
    """NA L/λ = 5 exactly: Gauss's circle count N(5) = 81 points (OEIS A000328), 12 of them on the rim."""
    grid = grids.make_grid(gpts=(64, 64), extent=(10.0, 10.0))
    pupil = backend.asnumpy(microscope.pupil(grid, wavelength=0.5, na=0.25))
    assert int((np.abs(pupil) > 0).sum()) == 81
    points = backend.asnumpy(microscope.source_points(grid, wavelength=0.5, na_illumination=0.25))
    assert len(points) == 81 and {(5, 0), (0, -5), (3, 4), (-4, -3)} <= {tuple(p) for p in points.tolist()}


@pytest.mark.parametrize("term, on_x, on_y", [((2, 2), "r2", "-r2"), ((3, 1), "coma", "0"), ((3, -1), "0", "coma")])
def test_zernike_azimuth_is_measured_from_kx(term, on_x, on_y):
    """Born and Wolf's φ = atan2(ky, kx): astigmatism Z(2,2) = ρ² cos 2φ is +ρ² on the kx axis and -ρ² on ky;
    coma Z(3,±1) = (3ρ³ - 2ρ) cos φ or sin φ vanishes on ky or kx."""
    wavelength, na, n, c = 0.5, 0.5, 64, 0.05
    grid = grids.make_grid(gpts=(n, n), sampling=0.25)
    rho = wavelength * np.fft.fftfreq(n, 0.25)[4] / na
    value = {"r2": rho**2, "-r2": -(rho**2), "coma": 3 * rho**3 - 2 * rho, "0": 0.0}
    pupil = backend.asnumpy(microscope.pupil(grid, wavelength=wavelength, na=na, zernike_waves={term: c}))
    assert np.angle(pupil[4, 0]) / (2 * math.pi * c) == pytest.approx(value[on_x], abs=1e-9)
    assert np.angle(pupil[0, 4]) / (2 * math.pi * c) == pytest.approx(value[on_y], abs=1e-9)
