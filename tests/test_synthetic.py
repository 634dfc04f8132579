"""mbook.inverse.synthetic: test objects whose properties are known exactly."""

import math

import numpy as np
import pytest

from mbook.core import backend
from mbook.inverse import circle, synthetic


@pytest.mark.parametrize("max_phase", [0.1, 0.5])
def test_weak_phase_object_spans_exactly_its_phase_range(max_phase, device):
    obj, support = (backend.asnumpy(a) for a in synthetic.weak_phase_object((64, 64), max_phase=max_phase, seed=3))
    values = np.angle(obj[support])
    assert values.min() == pytest.approx(0, abs=1e-12) and values.max() == pytest.approx(max_phase)
    np.testing.assert_allclose(abs(obj[support]), 1.0)
    assert np.all(obj[~support] == 0)


def test_support_is_oversampled_and_not_centrosymmetric():
    support = synthetic.support_mask((64, 64), seed=0)
    flipped = np.roll(support[::-1, ::-1], 1, axis=(0, 1))
    assert support.size / support.sum() > 2
    assert np.sum(support != flipped) > 0.1 * support.sum()  # the twin does not fit the support


def test_objects_are_reproducible_from_their_seed():
    a, _ = synthetic.weak_phase_object((32, 32), seed=7)
    b, _ = synthetic.weak_phase_object((32, 32), seed=7)
    c, _ = synthetic.weak_phase_object((32, 32), seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_wrapped_phase_wraps_while_every_true_step_is_a_short_arc(device):
    w = synthetic.wrapped_phase_object((64, 64), total_phase=2.5 * math.pi, num_terraces=5, diameter=None, seed=0)
    phase, wrapped = backend.asnumpy(w.phase), np.angle(backend.asnumpy(w.obj))
    assert np.ptp(phase) > 2 * math.pi
    for axis in (0, 1):
        true_steps = np.diff(phase, axis=axis)
        assert np.max(abs(true_steps)) < math.pi  # each true step is shorter than π...
        np.testing.assert_allclose(backend.asnumpy(circle.wrap(np.diff(wrapped, axis=axis))), true_steps, atol=1e-9)
    # ...while the wrapped picture jumps by 2π minus a step.
    assert max(np.max(abs(np.diff(wrapped, axis=axis))) for axis in (0, 1)) > 2 * math.pi - 2.0


def test_lattice_image_mean_is_the_integrated_column_intensity(device):
    """Over whole unit cells, mean = background + Σ_b I_b 2π w_b² / (cell area in Å²)."""
    image = backend.asnumpy(synthetic.lattice_image((64, 64), 0.25, lattice_vectors=((4.0, 0), (0, 4.0)),
                                                    basis=((0, 0), (2.0, 2.0)), intensities=(1.0, 0.5),
                                                    widths=(0.4, 0.3), background=0.1))
    expected = 0.1 + (1.0 * 2 * math.pi * 0.4**2 + 0.5 * 2 * math.pi * 0.3**2) / (4.0 * 4.0)
    assert image.mean() == pytest.approx(expected, rel=1e-6)
    assert image[0, 0] == pytest.approx(1.1, rel=1e-3) and image[8, 8] == pytest.approx(0.6, rel=1e-3)


def test_constant_displacement_equals_moving_the_origin(device):
    kwargs = dict(lattice_vectors=((3.0, 0.5), (0.2, 3.5)), widths=0.5)
    shift = np.array([0.37, -0.81])
    moved = synthetic.lattice_image((40, 48), 0.2, displacement=np.ones((2, 40, 48)) * shift[:, None, None], **kwargs)
    np.testing.assert_allclose(backend.asnumpy(moved),
                               backend.asnumpy(synthetic.lattice_image((40, 48), 0.2, origin=-shift, **kwargs)),
                               atol=1e-12)


def test_distortion_fields_have_their_statistics(device):
    v = backend.asnumpy(synthetic.smooth_displacement((64, 64), rms=0.7, correlation_length=5.0, num_fields=3, seed=1))
    np.testing.assert_allclose(v.std(axis=(-2, -1)), 0.7)
    np.testing.assert_allclose(v.mean(axis=(-2, -1)), 0, atol=1e-12)
    assert np.mean(abs(np.diff(v, axis=-1))) < 0.2 * np.mean(abs(v))  # smooth from pixel to pixel
    jitter = backend.asnumpy(synthetic.scan_line_jitter((16, 12), rms=0.5, num_frames=2, seed=0))
    assert np.all(jitter[:, 1] == 0) and np.all(jitter[:, 0] == jitter[:, 0, :1, :])  # one shift per line


def test_distortion_fields_have_the_gaussian_autocorrelation_of_their_correlation_length(device):
    """White noise smoothed by a Gaussian of standard deviation ℓ has the autocorrelation exp(-r²/4ℓ²): at ℓ = 4
    px, 0.779 at a lag of 4 px and 0.368 at 8 (measured 0.768-0.771 and 0.343-0.350 over three seeds, a little
    low from removing each field's mean); a length off by a factor of two gives 0.93 and 0.76."""
    v = backend.asnumpy(synthetic.smooth_displacement((128, 128), rms=1.0, correlation_length=4.0, num_fields=8,
                                                      seed=0))
    for lag, tolerance in ((4, 0.05), (8, 0.06)):
        correlation = np.mean(v * np.roll(v, lag, axis=-1))  # periodic fields of unit variance
        assert correlation == pytest.approx(np.exp(-lag ** 2 / (4 * 4.0 ** 2)), abs=tolerance)


def test_haadf_series_is_in_its_mean_frame_and_counts_are_poisson(device):
    series = synthetic.haadf_series((48, 48), 0.25, num_frames=5, dose=30.0, seed=2)
    frames, displacements = backend.asnumpy(series.frames), backend.asnumpy(series.displacements)
    assert frames.shape == (5, 48, 48) and displacements.shape == (5, 2, 48, 48)
    np.testing.assert_allclose(displacements.mean(axis=0), 0, atol=1e-12)
    assert np.all(frames == np.round(frames)) and frames.min() >= 0
    assert frames.mean() == pytest.approx(float(series.image.mean()), rel=0.1)
    again = synthetic.haadf_series((48, 48), 0.25, num_frames=5, dose=30.0, seed=2)
    assert np.array_equal(frames, backend.asnumpy(again.frames))


def test_poisson_noise_has_mean_and_variance_dose_times_image(device):
    counts = backend.asnumpy(synthetic.poisson_noise(np.full(200000, 2.0), dose=5.0, seed=0))
    assert counts.mean() == pytest.approx(10.0, rel=0.01) and counts.var() == pytest.approx(10.0, rel=0.02)


def _all_columns(gpts, sampling, *, lattice_vectors, basis, intensities, widths, origin, background, displacement):
    """The definition, summed the slow way: every column of the box of the sample points ± 5 widths,
    at every pixel (what lattice_image computed before it looked up each pixel's cells)."""
    a, basis = np.asarray(lattice_vectors, float), np.atleast_2d(basis)
    x, y = np.meshgrid(*(np.arange(n) * sampling for n in gpts), indexing="ij")
    px, py = x + displacement[0], y + displacement[1]
    margin = 5 * max(widths)
    lo, hi = np.array([px.min(), py.min()]) - margin, np.array([px.max(), py.max()]) + margin
    n = np.arange(-60, 61)
    cells = (n[:, None, None] * a[0] + n[None, :, None] * a[1]).reshape(-1, 2) + origin
    image = np.full(gpts, float(background))
    for site, peak, width in zip(basis, intensities, widths):
        columns = cells + site
        columns = columns[np.all((columns >= lo) & (columns <= hi), axis=1)]
        d2 = (px[..., None] - columns[:, 0]) ** 2 + (py[..., None] - columns[:, 1]) ** 2
        image += peak * np.exp(-d2 / (2 * width**2)).sum(axis=-1)
    return image


def test_lattice_image_equals_the_sum_over_every_column(device, rng):
    """Looking up each pixel's neighbouring cells leaves out nothing the full sum holds (to rounding)."""
    lattice = dict(lattice_vectors=((2.1, 0.3), (0.9, 1.9)), basis=((0.0, 0.0), (0.7, 0.5)),
                   intensities=(1.0, 2.5), widths=(0.3, 0.55), origin=(0.4, -1.1), background=0.2)
    displacement = rng.normal(0, 0.8, (2, 30, 26))
    expected = _all_columns((30, 26), 0.2, displacement=displacement, **lattice)
    image = synthetic.lattice_image((30, 26), 0.2, displacement=displacement, **lattice)
    np.testing.assert_allclose(backend.asnumpy(image), expected, rtol=1e-13, atol=1e-13)


def test_a_stack_of_fields_gives_the_images_one_by_one(device, rng):
    fields = rng.normal(0, 0.5, (3, 2, 24, 20))
    stack = backend.asnumpy(synthetic.lattice_image((24, 20), 0.25, displacement=fields, widths=0.45))
    assert stack.shape == (3, 24, 20)
    for k in range(3):
        image = synthetic.lattice_image((24, 20), 0.25, displacement=fields[k], widths=0.45)
        np.testing.assert_allclose(stack[k], backend.asnumpy(image), rtol=1e-14, atol=1e-14)


def test_producers_on_device_match_cpu(device, on_cpu):
    def run():
        return dict(
            support=synthetic.support_mask((32, 32), seed=2), weak=synthetic.weak_phase_object((32, 32), seed=2)[0],
            wrapped=synthetic.wrapped_phase_object((32, 32), seed=2).obj,
            lattice=synthetic.lattice_image((32, 32), 0.3, displacement=np.full((2, 32, 32), 0.2)),
            smooth=synthetic.smooth_displacement((16, 16), rms=1.0, correlation_length=3.0, num_fields=2, seed=1),
            jitter=synthetic.scan_line_jitter((16, 16), rms=0.5, num_frames=2, seed=1),
            counts=synthetic.poisson_noise(np.full((8, 8), 3.0), dose=2.0, seed=1),
            **synthetic.haadf_series((24, 24), 0.3, num_frames=3, seed=1)._asdict(),
        )

    reference, results = on_cpu(run), run()
    for name, value in results.items():
        if name == "sampling":
            continue
        assert backend.get_array_module(value) is backend.xp, name  # on the selected device
        np.testing.assert_allclose(backend.asnumpy(value), reference[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # Random draws are made on the host: the same counts on every device, exactly.
    np.testing.assert_array_equal(backend.asnumpy(results["frames"]), reference["frames"])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: synthetic.weak_phase_object((32, 32), max_phase=0.0), "max_phase must be a finite number > 0"),
        (lambda: synthetic.support_mask((32, 32), diameter=1.5), "diameter must be a finite number > 0 and < 1"),
        (lambda: synthetic.wrapped_phase_object((32, 32), num_terraces=1), "num_terraces must be >= 2"),
        (lambda: synthetic.poisson_noise(-np.ones(3), dose=1.0), "image must be >= 0"),
        (lambda: synthetic.poisson_noise(np.ones(3), dose=np.nan), "dose must be a finite number > 0"),
        (lambda: synthetic.lattice_image((8, 8), 0.1, lattice_vectors=((1, 0), (2, 0))), "two independent"),
        (lambda: synthetic.lattice_image((8, 8), 0.1, displacement=np.zeros((2, 4, 4))), "displacement must have"),
        (lambda: synthetic.smooth_displacement((8, 8), rms=1.0, correlation_length=0.0), "correlation_length"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrapped_phase_object_spans_its_total_phase():
    """Terraces at -T/2 + jT/(N - 1), j = 0..N - 1: both ends, ±T/2, are present (T = 2.5π, N = 5)."""
    total = 2.5 * math.pi
    phase = backend.asnumpy(synthetic.wrapped_phase_object((64, 64), total_phase=total, num_terraces=5, diameter=None,
                                                           seed=0).phase)
    assert np.isclose(phase, total / 2).any() and np.isclose(phase, -total / 2).any()


def test_haadf_series_line_shifts_average_to_zero_over_frames(device):
    """The series is in its mean frame: the displacements and their line (jitter) part average to zero."""
    series = synthetic.haadf_series((32, 32), 0.5, num_frames=4, seed=1)
    np.testing.assert_allclose(backend.asnumpy(series.displacements).mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(series.line_shifts).mean(axis=0), 0, atol=1e-12)
