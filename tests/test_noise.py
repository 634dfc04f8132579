"""Detector noise: Poisson statistics, dose, camera ADC, MTF and DQE, on every device."""

import math

import numpy as np
import pytest

from mbook.core import backend, detection


def test_poisson_counts_have_equal_mean_and_variance(device):
    counts = backend.asnumpy(detection.poisson_counts(np.full((400, 400), 7.5), seed=1))
    assert counts.mean() == pytest.approx(7.5, abs=4 * math.sqrt(7.5 / counts.size))
    assert counts.var() == pytest.approx(7.5, rel=0.02)


@pytest.mark.parametrize("mean", [0.0, 0.3, 4.0, 10.0, 10.5, 87.0, 2.5e3, 4e6])
def test_poisson_counts_are_the_exact_quantiles_of_one_uniform_per_pixel(device, mean):
    """Pixel i's count is the Poisson quantile of the i-th uniform of the seed's generator."""
    from scipy import stats

    means = np.full((60, 50), mean) * np.linspace(0.5, 1.5, 50)  # a spread around the mean
    counts = backend.asnumpy(detection.poisson_counts(means, seed=np.random.default_rng(11)))
    u = np.random.default_rng(11).random(means.shape)
    np.testing.assert_array_equal(counts, stats.poisson.ppf(u, means))


def test_a_change_of_the_means_moves_only_the_counts_it_must(device):
    """Means changed by 1e-4 (far more than another device's rounding) move 1 % of the counts, each by
    one; NumPy's rejection sampler, whose later draws shift when one pixel's decision flips, moved
    58 % of these (23142 of 40000)."""
    means = np.random.default_rng(3).uniform(0.0, 200.0, (200, 200))
    a = backend.asnumpy(detection.poisson_counts(means, seed=5))
    b = backend.asnumpy(detection.poisson_counts(means * (1 + 1e-4), seed=5))
    moved = a != b
    assert np.count_nonzero(moved) < 0.02 * a.size
    np.testing.assert_array_equal(b[moved] - a[moved], 1)


def test_a_seed_gives_the_same_noise_on_every_device(device, on_cpu):
    """Random draws are made on the host from the seed (rule 4 of mbook): identical on every device."""
    intensity = np.linspace(0, 2, 1024).reshape(32, 32)
    kwargs = dict(photons=50.0, gain=0.5, offset=10.0, read_noise=2.0, bit_depth=12, seed=11)
    np.testing.assert_array_equal(backend.asnumpy(detection.camera(intensity, **kwargs)),
                                  on_cpu(detection.camera, intensity, **kwargs))
    np.testing.assert_array_equal(backend.asnumpy(detection.read_noise(intensity, sigma=1.5, seed=12)),
                                  on_cpu(detection.read_noise, intensity, sigma=1.5, seed=12))


def test_snr_grows_as_the_square_root_of_dose(device):
    snr = []
    for dose in (10.0, 40.0, 160.0):
        counts = backend.asnumpy(detection.apply_dose(np.ones((256, 256)), dose=dose, pixel_area=0.5, seed=2))
        snr.append(counts.mean() / counts.std())
        assert counts.mean() == pytest.approx(dose * 0.5, rel=0.01)
    np.testing.assert_allclose(np.array(snr) ** 2, [5.0, 20.0, 80.0], rtol=0.03)


def test_read_noise_adds_its_variance(device):
    counts = backend.asnumpy(detection.read_noise(np.zeros((300, 300)), sigma=2.5, seed=3))
    assert counts.std() == pytest.approx(2.5, rel=0.01)


def test_camera_quantises_to_integer_levels_and_clips(device):
    intensity = np.linspace(0, 2, 4096).reshape(64, 64)
    adu = backend.asnumpy(detection.camera(intensity, photons=2000.0, gain=2.0, offset=10.0, bit_depth=12,
                                           seed=4))
    assert adu.dtype == np.uint16
    assert adu.max() == 4095 and adu.min() >= 10 - 1
    # gain 2 and no read noise: levels are offset + 2 × electrons, all even once the offset is removed
    unclipped = adu[adu < 4095].astype(int) - 10
    assert np.all(unclipped % 2 == 0)
    ideal = backend.asnumpy(detection.camera(intensity, photons=2000.0, gain=2.0, offset=10.0, seed=4))
    assert ideal.dtype == np.float64 and ideal.max() > 4095


def test_camera_read_noise_and_offset(device):
    adu = backend.asnumpy(detection.camera(np.zeros((200, 200)), photons=100.0, gain=1.0, offset=100.0,
                                           read_noise=3.0, seed=5))
    assert adu.mean() == pytest.approx(100.0, abs=0.1)
    assert adu.std() == pytest.approx(3.0, rel=0.02)


def test_mtf_of_a_square_pixel_and_mean_preservation(device):
    transfer = backend.asnumpy(detection.mtf((64, 64)))
    assert transfer[0, 0] == 1.0
    assert transfer[32, 0] == pytest.approx(2 / math.pi)  # sinc(1/2) at Nyquist
    image = backend.asnumpy(detection.poisson_counts(np.full((64, 64), 20.0), seed=6)).astype(float)
    blurred = backend.asnumpy(detection.apply_mtf(image, detection.mtf((64, 64), blur=1.5)))
    assert blurred.mean() == pytest.approx(image.mean(), rel=1e-12)
    assert blurred.std() < 0.5 * image.std()


def test_detected_noise_power_matches_mtf_squared_over_dqe(device):
    """NPS(k) = N̄ MTF(k)² / DQE(k): the DQE recovered from simulated flat fields is the one put in."""
    shape, mean = (64, 64), 50.0
    transfer = backend.asnumpy(detection.mtf(shape, blur=0.7))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij"))
    dqe = 0.8 - 0.6 * k  # 0.8 at k = 0, 0.38 at the corner
    power = np.zeros(shape)
    repeats = 200
    for seed in range(repeats):
        image = backend.asnumpy(detection.detect(np.full(shape, mean), transfer=transfer, dqe=dqe, seed=seed))
        power += abs(np.fft.fft2(image - image.mean())) ** 2 / image.size
    nps = power / repeats
    measured = mean * transfer**2 / nps
    band = (k > 0.05) & (k < 0.4)
    assert np.median(measured[band] / dqe[band]) == pytest.approx(1.0, abs=0.02)


def test_vignetting_falloff_follows_cos4(device):
    falloff = backend.asnumpy(detection.vignetting_falloff((65, 65), strength=0.5))
    assert falloff[32, 32] == 1.0
    assert falloff[0, 0] == pytest.approx(1 / (1 + 0.25) ** 2)


@pytest.mark.parametrize(
    "call, match",
    [(lambda: detection.poisson_counts(np.array([1.0, -1.0]), seed=0), "must be >= 0"),
     (lambda: detection.poisson_counts(np.array([np.nan]), seed=0), "NaN"),
     (lambda: detection.apply_dose(np.ones(3), dose=-1.0, pixel_area=1.0, seed=0), "dose must be"),
     (lambda: detection.camera(np.ones(3), photons=10.0, bit_depth=40, seed=0), "bit_depth must be"),
     (lambda: detection.mtf((8, 8), pixel_fill=1.5), "pixel_fill must be in"),
     (lambda: detection.detect(np.ones((4, 4)), transfer=np.ones((4, 4)), dqe=1.5, seed=0), "dqe must lie"),
     (lambda: detection.apply_mtf(np.ones((4, 4)), np.ones((4, 5))), "one shape"),
     (lambda: detection.read_noise(np.array([np.inf]), sigma=1.0, seed=0), "NaN or infinite")],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_inputs_give_device_results_on_the_stand_in():
    """The device rule for mbook.core.detection: NumPy in, stand-in arrays out."""
    backend.set_device("strict")
    try:
        ones = np.ones((8, 8))
        results = [
            detection.poisson_counts(ones, seed=0), detection.apply_dose(ones, dose=1.0, pixel_area=1.0, seed=0),
            detection.read_noise(ones, sigma=1.0, seed=0), detection.camera(ones, photons=10.0, seed=0),
            detection.camera(ones, photons=10.0, bit_depth=8, seed=0),
            detection.vignetting_falloff((8, 8), strength=0.3),
            detection.mtf((8, 8)), detection.apply_mtf(ones, ones),
            detection.detect(ones, transfer=ones, dqe=0.5, seed=0),
        ]
        assert all(backend.get_array_module(r) is backend.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_mtf_blur_is_a_gaussian_of_its_rms_and_the_pixel_fill_a_narrower_box(device):
    """The Gaussian factor of the MTF is the transform of a PSF of rms `blur` pixels; a pixel of fill 0.5 is a
    box half a pixel wide, whose transfer at Nyquist is sinc(0.25) = 2√2/π."""
    n, blur = 64, 2.0
    ratio = backend.asnumpy(detection.mtf((n, n), blur=blur)) / backend.asnumpy(detection.mtf((n, n)))
    psf = np.fft.fftshift(np.real(np.fft.ifft2(ratio)))
    offset = np.arange(n) - n // 2
    assert np.sqrt(np.sum(psf * offset[:, None] ** 2) / psf.sum()) == pytest.approx(blur, rel=1e-6)
    half = backend.asnumpy(detection.mtf((n, n), pixel_fill=0.5))
    assert half[n // 2, 0] == pytest.approx(2 * math.sqrt(2) / math.pi, rel=1e-12)
