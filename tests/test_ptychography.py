"""Fourier ptychography: LED geometry, vignetting by cascaded apertures, EPRY reconstruction."""

import math

import numpy as np
import pytest

from mbook.core import backend
from mbook.light import epry, phantoms
from mbook.light import fourier_ptychography as fp
from mbook.light import led_geometry

LAMBDA, NA = 0.5, 0.1


def _setup(**kwargs):
    leds = led_geometry.led_array((5, 5), pitch=4.0, height=80.0)
    options = dict(sampling=0.5, wavelength=LAMBDA, na=NA, illumination=leds, upsampling=4) | kwargs
    return led_geometry.make_setup((128, 128), **options)


def _cells():
    """The 128² phantom of four cells the 5 x 5 LED setup images."""
    return phantoms.cells((128, 128), sampling=0.5, seed=0, n_cells=4, radius=(5.0, 10.0))


def _small_setup(**kwargs):
    return led_geometry.make_setup((32, 32), sampling=0.5, wavelength=LAMBDA, na=0.12, upsampling=2,
                         illumination=led_geometry.led_array((3, 3), pitch=3.0, height=60.0), **kwargs)


def test_led_array_is_sorted_and_symmetric(device):
    sines = led_geometry.led_array((3, 3), pitch=5.0, height=50.0)
    assert backend.get_array_module(sines) is backend.xp
    sines = backend.asnumpy(sines)
    np.testing.assert_allclose(sines[0], 0.0)
    np.testing.assert_allclose(sines.sum(axis=0), 0.0, atol=1e-15)
    assert np.all(np.diff(np.hypot(*sines.T)) >= 0)
    assert sines[1:5].max() == pytest.approx(5 / math.hypot(5, 50))


def test_empty_slide_is_bright_in_bright_field_and_dark_in_dark_field(device):
    setup = _setup()
    images = backend.asnumpy(fp.images(np.ones((128, 128), complex), setup))
    na_ill = np.hypot(*setup.shifts.T) * LAMBDA / setup.extent
    for image, na in zip(images, na_ill):
        np.testing.assert_allclose(image, 1.0 if na < NA else 0.0, atol=1e-12)


def test_vignetting_projector_is_hermitian_and_idempotent(device):
    setup = _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((setup.window, setup.window)) + 1j * rng.standard_normal((setup.window,) * 2)
            for _ in range(2))
    vx = backend.asnumpy(fp.vignetting(x, setup))
    np.testing.assert_allclose(backend.asnumpy(fp.vignetting(vx, setup)), vx, atol=1e-10)
    assert np.vdot(vx, y) == pytest.approx(np.vdot(x, backend.asnumpy(fp.vignetting(y, setup))), rel=1e-12)


def test_transition_led_gives_a_semi_bright_semi_dark_image_as_the_effective_pupil_predicts(device):
    """Stationary phase: the direct beam reaches the camera where |NA_ill - κ x| < NA_v."""
    kappa, na_v = 2e-3, 0.11
    setup = _setup(na_vignetting=na_v, vignetting_slope=kappa)
    image = backend.asnumpy(fp.images(np.ones((128, 128), complex), setup))
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
    pupil_there = backend.asnumpy(led_geometry.effective_pupil(setup, (centre[0] * 2.0, centre[1] * 2.0)))
    assert pupil_there[tuple(setup.shifts[i] % 32)] == 1.0


def test_thick_model_with_one_slice_reduces_to_the_thin_model(device):
    setup = _setup()
    rng = np.random.default_rng(1)
    dn, dz = 0.02 * rng.random((128, 128)), 0.4
    thick = backend.asnumpy(fp.images_thick((1.0 + dn)[None], setup, slice_thickness=dz))
    thin = backend.asnumpy(fp.images(np.exp(2j * math.pi / LAMBDA * dn * dz), setup))
    np.testing.assert_allclose(thick, thin, atol=1e-10)


def test_thick_sample_departs_from_the_projection_approximation(device):
    """Two slices 20 µm apart are not one thin screen: the images differ measurably."""
    setup = _setup()
    rng = np.random.default_rng(2)
    dn = 0.02 * rng.random((2, 128, 128))
    stack = np.ones((41, 128, 128))
    stack[0], stack[-1] = 1 + dn[0], 1 + dn[1]
    thick = backend.asnumpy(fp.images_thick(stack, setup, slice_thickness=0.5))
    thin = backend.asnumpy(fp.images(np.exp(2j * math.pi / LAMBDA * (dn[0] + dn[1]) * 0.5), setup))
    assert np.abs(thick - thin).max() > 0.01


def test_thick_images_do_not_depend_on_the_led_batches(device, monkeypatch):
    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    rng = np.random.default_rng(8)
    stack = 1 + 0.02 * rng.random((3, 32, 32))
    whole = backend.asnumpy(fp.images_thick(stack, setup, slice_thickness=1.0))
    monkeypatch.setenv("MBOOK_MEMORY_GB", str((3 * 16 * stack.size + 2 * 8 * 16 * 32 * 32) / 2**30))  # 2 LEDs
    np.testing.assert_allclose(backend.asnumpy(fp.images_thick(stack, setup, slice_thickness=1.0)), whole,
                               atol=1e-13)


def test_epry_recovers_object_and_defocus(device):
    setup, obj = _setup(), _cells()
    truth_pupil = backend.asnumpy(led_geometry.pupil(setup, defocus=4.0))
    measured = fp.images(obj, setup, pupil_function=truth_pupil)
    result = epry.reconstruct(measured, setup, max_num_iter=15)
    assert all(backend.get_array_module(a) is backend.xp for a in result)
    band = 0.9 * setup.na_synthetic / LAMBDA
    assert epry.complex_error(result.transmission, obj, band=band, sampling=0.5) < 0.05
    residuals = backend.asnumpy(result.residuals)
    assert residuals.shape == (15,) and residuals[-1] < 0.1 * residuals[0]
    inside = abs(truth_pupil) > 0
    # the recovered pupil phase matches the defocus up to a constant
    difference = np.angle(backend.asnumpy(result.pupil)[inside] * np.conj(truth_pupil[inside]))
    assert np.std(np.angle(np.exp(1j * (difference - difference.mean())))) < 0.3


@pytest.mark.parametrize("vignetting", [False, True])
def test_epry_copies_nothing_to_the_host_per_iteration(vignetting, no_copies_per_iteration, on_cpu):
    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    data = on_cpu(fp.images, on_cpu(phantoms.cells, (32, 32), sampling=0.5, seed=2, radius=(2.0, 4.0)), setup)
    no_copies_per_iteration(lambda num_iter: epry.reconstruct(data, setup, vignetting=vignetting,
                                                              max_num_iter=num_iter))


def test_cpu_and_gpu_agree_for_epry(device, on_cpu):
    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    data = on_cpu(fp.images, on_cpu(phantoms.cells, (32, 32), sampling=0.5, seed=3, radius=(2.0, 4.0)), setup)
    reference = on_cpu(epry.reconstruct, data, setup, max_num_iter=4)
    result = epry.reconstruct(data, setup, max_num_iter=4)
    for a, b in zip(result, reference):
        np.testing.assert_allclose(backend.asnumpy(a), b, atol=1e-10)


def test_complex_error_ignores_a_global_phase(device):
    obj = phantoms.cells((32, 32), sampling=1.0, seed=1)
    assert epry.complex_error(obj * np.exp(0.7j), obj) < 1e-12
    np.testing.assert_allclose(backend.asnumpy(epry.align(2 * obj * np.exp(0.7j), obj)), backend.asnumpy(obj),
                               atol=1e-12)


def test_bar_target_contrast_matches_square_wave_theory(device):
    target = phantoms.resolution_target((256, 256), sampling=0.25, periods=[4.0], contrast=0.6)
    assert backend.get_array_module(target.transmission) is backend.xp
    measured = phantoms.bar_contrast(abs(target.transmission), target.patches[0], sampling=0.25)
    assert measured == pytest.approx(4 / math.pi * 0.6 / (2 - 0.6), rel=0.03)


def test_cells_are_the_same_on_every_device(device, on_cpu):
    reference = on_cpu(phantoms.cells, (64, 64), sampling=0.5, seed=9)
    cells = phantoms.cells((64, 64), sampling=0.5, seed=9)
    assert backend.get_array_module(cells) is backend.xp
    # the same draws and formulas; a GPU's exp and sin differ from the host's in the last bits (4e-15 on an H200)
    np.testing.assert_allclose(backend.asnumpy(cells), reference, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"upsampling": 16}, "undersample NA"),
     ({"illumination": [[0.0, 0.0], [0.45, 0.0]]}, "beyond the grid's bandwidth"),
     ({"upsampling": 3}, "upsampling must be a positive integer dividing")],
)
def test_bad_setups_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _setup(**kwargs)


def test_select_leds_keeps_the_chosen_ones():
    setup = _setup()
    keep = np.arange(len(setup.shifts)) % 2 == 0
    reduced = led_geometry.select_leds(setup, keep)
    np.testing.assert_array_equal(reduced.shifts, setup.shifts[keep])
    np.testing.assert_array_equal(reduced.illumination, setup.illumination[keep])
    assert reduced.gpts == setup.gpts and reduced.window == setup.window
    with pytest.raises(ValueError, match="keep must"):
        led_geometry.select_leds(setup, np.zeros(len(setup.shifts), bool))


def test_reconstruct_refuses_wrong_image_shapes():
    with pytest.raises(ValueError, match="images_measured must have shape"):
        epry.reconstruct(np.ones((3, 32, 32)), _setup())


def test_cpu_and_gpu_agree_for_the_forward_model(device, on_cpu):
    setup = _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    obj = on_cpu(phantoms.cells, (128, 128), sampling=0.5, seed=4)
    reference = on_cpu(fp.images, obj, setup)
    result = fp.images(obj, setup)
    assert backend.get_array_module(result) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result), reference, atol=1e-10)


def test_forward_model_does_not_depend_on_the_led_batches(device, monkeypatch):
    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    rng = np.random.default_rng(10)
    spectrum = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    fields = rng.standard_normal((9, 16, 16)) + 1j * rng.standard_normal((9, 16, 16))
    pupil = led_geometry.pupil(setup, defocus=2.0)
    whole = [backend.asnumpy(f(x, pupil, setup)) for f, x in ((fp.camera_fields, spectrum),
                                                              (fp.camera_fields_adjoint, fields))]
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(2 * 6 * 16 * setup.window**2 / 2**30))  # two LEDs a batch
    for (f, x), expected in zip(((fp.camera_fields, spectrum), (fp.camera_fields_adjoint, fields)), whole):
        np.testing.assert_allclose(backend.asnumpy(f(x, pupil, setup)), expected, atol=1e-13)


def test_camera_fields_refuse_a_wrong_spectrum_shape():
    setup = _setup()
    with pytest.raises(ValueError, match="spectrum must have shape"):
        fp.camera_fields(np.ones((64, 64), complex), led_geometry.pupil(setup, xp=np), setup)


@pytest.mark.parametrize("vignetting", [False, True])
def test_amplitude_loss_gradient_matches_finite_differences(vignetting, device):
    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    rng = np.random.default_rng(6)
    pupil = led_geometry.pupil(setup, defocus=2.0)
    truth = np.fft.fft2(backend.asnumpy(phantoms.cells((32, 32), sampling=0.5, seed=2, radius=(2.0, 4.0)))) / 32**2
    measured = abs(fp.camera_fields(truth, pupil, setup, vignetting=vignetting)) ** 2
    spectrum = truth + 0.01 * (rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32)))
    direction = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    loss, gradient = epry.amplitude_loss(spectrum, measured, pupil, setup, vignetting=vignetting)
    assert isinstance(loss, float) and backend.get_array_module(gradient) is backend.xp
    step = 1e-6
    plus, _ = epry.amplitude_loss(spectrum + step * direction, measured, pupil, setup, vignetting=vignetting)
    minus, _ = epry.amplitude_loss(spectrum - step * direction, measured, pupil, setup, vignetting=vignetting)
    numeric = (plus - minus) / (2 * step)
    assert numeric == pytest.approx(2 * np.vdot(backend.asnumpy(gradient), direction).real, rel=1e-5)


def test_numpy_inputs_give_device_results_on_the_stand_in():
    """The device rule for led_geometry, fourier_ptychography, epry and phantoms: NumPy in, stand-in arrays out."""
    backend.set_device("strict")
    try:
        setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
        obj = np.ones((32, 32), complex)
        data = np.ones((9, 16, 16))
        results = [
            led_geometry.led_array((3, 3), pitch=3.0, height=60.0), led_geometry.pupil(setup),
            led_geometry.effective_pupil(setup, (1.0, 0.0)),
            *led_geometry.window_indices(setup), fp.vignetting(np.ones((setup.window, setup.window)), setup),
            fp.camera_fields(np.ones((32, 32)), np.ones((16, 16)), setup),
            fp.camera_fields_adjoint(np.ones((9, 16, 16)), np.ones((16, 16)), setup),
            fp.images(obj, setup), fp.images_thick(np.ones((2, 32, 32)), setup, slice_thickness=1.0),
            *epry.reconstruct(data, setup, max_num_iter=1), epry.align(obj, obj),
            epry.amplitude_loss(np.ones((32, 32)), data, np.ones((16, 16)), setup)[1],
            phantoms.cells((16, 16), sampling=1.0, seed=0),
            phantoms.resolution_target((64, 64), sampling=0.25, periods=[2.0]).transmission,
        ]
        assert all(backend.get_array_module(r) is backend.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_epry_and_cbs_copy_nothing_to_the_device_per_iteration(on_cpu):
    """Index arrays of crops, pads and windows are made on the device once: no host data enters the loops."""
    from mbook.core import strict
    from mbook.light import cbs, mie

    setup = _small_setup(na_vignetting=0.13, vignetting_slope=3e-3)
    data = on_cpu(fp.images, on_cpu(phantoms.cells, (32, 32), sampling=0.5, seed=2, radius=(2.0, 4.0)), setup)
    index = on_cpu(mie.cylinder_index, (24, 24), sampling=0.04, radius=0.2, n_cylinder=1.4, n_background=1.33)
    backend.set_device("strict")
    try:
        data, index = backend.asarray(data), backend.asarray(index)
        runs = {
            "EPRY": lambda n: epry.reconstruct(data, setup, max_num_iter=n),
            "CBS": lambda n: cbs.solve(index, wavelength=LAMBDA, sampling=0.04, n_background=1.33, boundary=0.5,
                                       tol=0, max_num_iter=n),
        }
        for name, run in runs.items():
            counts = []
            for num_iter in (5, 15):
                with strict.count_transfers() as copies:
                    run(num_iter)
                counts.append(copies.to_device)
            assert counts[0] == counts[1], (name, counts)
    finally:
        backend.set_device("cpu")


def test_epry_does_not_depend_on_the_pupils_scale():
    """|F⁻¹[P O(k - q)]|² = |F⁻¹[(sP)(O/s)(k - q)]|²: starting from 3P instead of P gives the object to the same
    error (complex_error fits the global factor)."""
    setup, obj = _setup(), _cells()
    measured = fp.images(obj, setup)
    band = 0.9 * setup.na_synthetic / LAMBDA
    start = backend.asnumpy(led_geometry.pupil(setup))
    for scale in (1.0, 3.0):
        result = epry.reconstruct(measured, setup, pupil_init=scale * start, recover_pupil=False, max_num_iter=10)
        assert epry.complex_error(result.transmission, obj, band=band, sampling=0.5) < 0.05


def test_epry_does_not_depend_on_the_images_units():
    """I → s²I is O → sO: images in camera counts (x1000) give the same object and the same recovered pupil (a
    4 µm defocus) as normalised ones."""
    setup, obj = _setup(), _cells()
    truth = backend.asnumpy(led_geometry.pupil(setup, defocus=4.0))
    measured = backend.asnumpy(fp.images(obj, setup, pupil_function=truth))
    band = 0.9 * setup.na_synthetic / LAMBDA
    inside = np.abs(truth) > 0
    for scale in (1.0, 1000.0):
        result = epry.reconstruct(scale * measured, setup, max_num_iter=15)
        assert epry.complex_error(result.transmission, obj, band=band, sampling=0.5) < 0.05
        d = np.angle(backend.asnumpy(result.pupil)[inside] * np.conj(truth[inside]))
        assert np.std(np.angle(np.exp(1j * (d - d.mean())))) < 0.3


def test_effective_pupil_predicts_where_each_leds_direct_beam_is_bright():
    """A blank object under vignetting (the full chirp-and-stop operator of fp.images, another code path): at
    field points on both sides of the centre, each LED's direct beam is bright (>= 0.8) exactly where the
    stationary-phase pupil of that field point passes it (edge values 0.1-0.8 skipped)."""
    setup = _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    image = backend.asnumpy(fp.images(np.ones((128, 128), complex), setup))
    m = image.shape[-1]
    step = 0.5 * 4
    checked = wrong = 0
    for a in range(4, m - 4, 3):
        for b in range(4, m - 4, 3):
            pupil = backend.asnumpy(led_geometry.effective_pupil(setup, ((a - m // 2) * step, (b - m // 2) * step)))
            for i, shift in enumerate(setup.shifts):
                value = image[i, a, b]
                if 0.1 < value < 0.8:
                    continue
                checked += 1
                wrong += (value >= 0.8) != (pupil[tuple(np.asarray(shift) % m)] == 1.0)
    assert checked > 1000 and wrong == 0


def test_vignetted_images_converge_with_the_frequency_window():
    """The documented accuracy of the default window: the images differ from those on the full object grid's
    window by 2.6 % (54), and by less as the window widens (0.2 % at 112), monotonically."""
    obj, setup = _cells(), _setup(na_vignetting=0.11, vignetting_slope=2e-3)
    assert setup.window == 54
    full = backend.asnumpy(fp.images(obj, setup._replace(window=128)))
    differences = [np.linalg.norm(backend.asnumpy(fp.images(obj, setup._replace(window=w))) - full)
                   / np.linalg.norm(full) for w in (54, 80, 112)]
    assert differences[0] < 0.03 and differences[2] < 0.003
    assert np.all(np.diff(differences) < 0)
