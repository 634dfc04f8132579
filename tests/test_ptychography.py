"""Fourier ptychography: LED geometry, vignetting by cascaded apertures, EPRY reconstruction."""

import math

import numpy as np
import pytest

from mbook.light import phantoms
from mbook.light import fourier_ptychography as fp

LAMBDA, NA = 0.5, 0.1


def _setup(**kwargs):
    leds = fp.led_array((5, 5), pitch=4.0, height=80.0)
    options = dict(sampling=0.5, wavelength=LAMBDA, na=NA, illumination=leds, upsampling=4) | kwargs
    return fp.make_setup((128, 128), **options)


def test_led_array_is_sorted_and_symmetric():
    sines = fp.led_array((3, 3), pitch=5.0, height=50.0)
    np.testing.assert_allclose(sines[0], 0.0)
    np.testing.assert_allclose(sines.sum(axis=0), 0.0, atol=1e-15)
    assert np.all(np.diff(np.hypot(*sines.T)) >= 0)
    assert sines[1:5].max() == pytest.approx(5 / math.hypot(5, 50))


def test_empty_slide_is_bright_in_bright_field_and_dark_in_dark_field():
    setup = _setup()
    images = fp.images(np.ones((128, 128), complex), setup)
    na_ill = np.hypot(*setup.shifts.T) * LAMBDA / setup.extent
    for image, na in zip(images, na_ill):
        np.testing.assert_allclose(image, 1.0 if na < NA else 0.0, atol=1e-12)


def test_vignetting_projector_is_hermitian_and_idempotent():
    setup = _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((setup.window, setup.window)) + 1j * rng.standard_normal((setup.window,) * 2)
            for _ in range(2))
    vx = fp._vignetting(x, setup, np)
    np.testing.assert_allclose(fp._vignetting(vx, setup, np), vx, atol=1e-10)
    assert np.vdot(vx, y) == pytest.approx(np.vdot(x, fp._vignetting(y, setup, np)), rel=1e-12)


def test_transition_led_gives_a_semi_bright_semi_dark_image_as_the_effective_pupil_predicts():
    """Stationary phase: the direct beam reaches the camera where |NA_ill - κ x| < NA_v."""
    kappa, na_v = 2e-3, 0.11
    setup = _setup(na_vignetting=na_v, vignetting_slope=kappa)
    image = fp.images(np.ones((128, 128), complex), setup)
    na_ill = np.hypot(*setup.shifts.T) * LAMBDA / setup.extent
    i = int(np.argmax(np.where(na_ill < NA - 0.01, na_ill, 0)))  # the outermost bright-field LED
    q = setup.shifts[i] * LAMBDA / setup.extent
    x = (np.arange(32) - 16) * setup.sampling * setup.upsampling
    distance = np.hypot(q[0] - kappa * x[:, None], q[1] - kappa * x[None, :])  # from the stop's centre [NA]
    bright, dark = distance < na_v - 0.02, distance > na_v + 0.02
    bright[:3], bright[-3:], bright[:, :3], bright[:, -3:] = False, False, False, False  # edges of the cell
    dark[:3], dark[-3:], dark[:, :3], dark[:, -3:] = False, False, False, False
    assert bright.any() and dark.any()  # one image, both regimes
    assert np.median(image[i][bright]) > 0.8
    assert np.median(image[i][dark]) < 0.1
    # the geometric pupil passes the direct beam at the bright points only
    centre = tuple(np.argwhere(bright)[0] - 16)
    pupil_there = fp.effective_pupil(setup, (centre[0] * 2.0, centre[1] * 2.0), xp=np)
    assert pupil_there[tuple(setup.shifts[i] % 32)] == 1.0


def test_thick_model_with_one_slice_reduces_to_the_thin_model():
    setup = _setup()
    rng = np.random.default_rng(1)
    dn, dz = 0.02 * rng.random((128, 128)), 0.4
    thick = fp.images_thick((1.0 + dn)[None], setup, slice_thickness=dz)
    thin = fp.images(np.exp(2j * math.pi / LAMBDA * dn * dz), setup)
    np.testing.assert_allclose(thick, thin, atol=1e-10)


def test_thick_sample_departs_from_the_projection_approximation():
    """Two slices 20 µm apart are not one thin screen: the images differ measurably."""
    setup = _setup()
    rng = np.random.default_rng(2)
    dn = 0.02 * rng.random((2, 128, 128))
    stack = np.ones((41, 128, 128))
    stack[0], stack[-1] = 1 + dn[0], 1 + dn[1]
    thick = fp.images_thick(stack, setup, slice_thickness=0.5)
    thin = fp.images(np.exp(2j * math.pi / LAMBDA * (dn[0] + dn[1]) * 0.5), setup)
    assert np.abs(thick - thin).max() > 0.01


def test_epry_recovers_object_and_defocus():
    setup = _setup()
    obj = phantoms.cells((128, 128), sampling=0.5, seed=0, n_cells=4, radius=(5.0, 10.0))
    truth_pupil = fp.pupil(setup, defocus=4.0, xp=np)
    measured = fp.images(obj, setup, pupil_function=truth_pupil)
    result = fp.reconstruct(measured, setup, max_num_iter=15)
    band = 0.9 * setup.na_synthetic / LAMBDA
    assert fp.complex_error(result.transmission, obj, band=band, sampling=0.5) < 0.05
    assert result.residuals[-1] < 0.1 * result.residuals[0]
    inside = abs(truth_pupil) > 0
    # the recovered pupil phase matches the defocus up to a constant
    difference = np.angle(result.pupil[inside] * np.conj(truth_pupil[inside]))
    assert np.std(np.angle(np.exp(1j * (difference - difference.mean())))) < 0.3


def test_complex_error_ignores_a_global_phase():
    obj = phantoms.cells((32, 32), sampling=1.0, seed=1)
    assert fp.complex_error(obj * np.exp(0.7j), obj) < 1e-12


def test_bar_target_contrast_matches_square_wave_theory():
    target = phantoms.resolution_target((256, 256), sampling=0.25, periods=[4.0], contrast=0.6)
    measured = phantoms.bar_contrast(np.abs(target.transmission), target.patches[0], sampling=0.25)
    assert measured == pytest.approx(4 / math.pi * 0.6 / (2 - 0.6), rel=0.03)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"upsampling": 16}, "undersample NA"),
     ({"illumination": [[0.0, 0.0], [0.45, 0.0]]}, "beyond the grid's bandwidth"),
     ({"upsampling": 3}, "upsampling must be a positive integer dividing")],
)
def test_bad_setups_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _setup(**kwargs)


def test_reconstruct_refuses_wrong_image_shapes():
    with pytest.raises(ValueError, match="images must have shape"):
        fp.reconstruct(np.ones((3, 32, 32)), _setup())


def test_cpu_and_gpu_agree_for_the_forward_model(device):
    from mbook.core import backend

    setup = _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    obj = phantoms.cells((128, 128), sampling=0.5, seed=4)
    reference = fp.images(obj, setup)
    result = fp.images(backend.asarray(obj), setup)
    np.testing.assert_allclose(result, reference, atol=1e-10)


def test_camera_fields_refuse_a_wrong_spectrum_shape():
    setup = _setup()
    with pytest.raises(ValueError, match="spectrum must have shape"):
        fp.camera_fields(np.ones((64, 64), complex), fp.pupil(setup, xp=np), setup)


@pytest.mark.parametrize("vignetting", [False, True])
def test_amplitude_loss_gradient_matches_finite_differences(vignetting):
    setup = fp.make_setup((32, 32), sampling=0.5, wavelength=LAMBDA, na=0.12, upsampling=2,
                          illumination=fp.led_array((3, 3), pitch=3.0, height=60.0),
                          na_vignetting=0.13, vignetting_slope=3e-3)
    rng = np.random.default_rng(6)
    pupil = fp.pupil(setup, defocus=2.0, xp=np)
    truth = np.fft.fft2(phantoms.cells((32, 32), sampling=0.5, seed=2, radius=(2.0, 4.0))) / 32**2
    measured = abs(fp.camera_fields(truth, pupil, setup, vignetting=vignetting)) ** 2
    spectrum = truth + 0.01 * (rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32)))
    direction = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    loss, gradient = fp.amplitude_loss(spectrum, measured, pupil, setup, vignetting=vignetting)
    step = 1e-6
    plus, _ = fp.amplitude_loss(spectrum + step * direction, measured, pupil, setup, vignetting=vignetting)
    minus, _ = fp.amplitude_loss(spectrum - step * direction, measured, pupil, setup, vignetting=vignetting)
    numeric = (plus - minus) / (2 * step)
    assert numeric == pytest.approx(2 * np.vdot(gradient, direction).real, rel=1e-5)
