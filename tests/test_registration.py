"""mbook.inverse.registration: the warp, hand-derived first variations, and joint reconstruction."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.inverse import registration, synthetic

WEIGHTS = dict(alpha=0.3, beta=0.7, gamma=0.2)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(5)
    K, nx, ny = 3, 20, 16
    return dict(
        image=rng.random((nx, ny)), frames=rng.random((K, nx, ny)),
        fields=1.5 * rng.standard_normal((K, 2, nx, ny)), shifts=0.7 * rng.standard_normal((K, ny)),
    )


def test_warp_is_exact_on_linear_images_and_integer_shifts(rng):
    u = np.add.outer(3.0 * np.arange(12), -2.0 * np.arange(10))
    v = rng.uniform(-1, 1, (2, 2, 12, 10))
    x, y = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    inside = (x + v[:, 0] >= 0) & (x + v[:, 0] <= 11) & (y + v[:, 1] >= 0) & (y + v[:, 1] <= 9)
    expected = 3.0 * (x + v[:, 0]) - 2.0 * (y + v[:, 1])
    np.testing.assert_allclose(registration.warp(u, v)[inside], expected[inside], atol=1e-12)
    image = rng.random((12, 10))
    shifted = registration.warp(image, np.ones((1, 2, 12, 10)) * np.array([2.0, -1.0])[None, :, None, None])[0]
    np.testing.assert_array_equal(shifted[:-2, 1:], image[2:, :-1])


def test_warp_derivative_matches_finite_differences(problem, rng):
    u, v = problem["image"], problem["fields"]
    d = rng.standard_normal(v.shape)
    h = 1e-6
    numeric = (registration.warp(u, v + h * d) - registration.warp(u, v - h * d)) / (2 * h)
    analytic = np.sum(registration.warp_derivative(u, v) * d, axis=1)
    np.testing.assert_allclose(analytic, numeric, atol=1e-6)


@pytest.mark.parametrize("variable", ["image", "fields", "shifts"])
def test_first_variations_match_finite_differences(variable, problem, rng):
    """δE/δu, δE/δv and δE/δs, derived by hand, against central differences of E."""
    args = {k: problem[k] for k in ("image", "fields", "shifts")}

    def energy(**change):
        a = args | change
        return registration.distortion_energy(a["image"], a["fields"], a["shifts"], problem["frames"], **WEIGHTS)

    grads = dict(zip(("image", "fields", "shifts"),
                     registration.distortion_gradients(args["image"], args["fields"], args["shifts"],
                                                       problem["frames"], **WEIGHTS)))
    d = rng.standard_normal(args[variable].shape)
    h = 1e-6
    numeric = (energy(**{variable: args[variable] + h * d}) - energy(**{variable: args[variable] - h * d})) / (2 * h)
    assert np.sum(grads[variable] * d) == pytest.approx(numeric, rel=1e-6)


def test_rigid_shifts_recover_known_subpixel_shifts():
    base = synthetic.smooth_displacement((64, 64), rms=1.0, correlation_length=3.0, seed=1)[0, 0]
    true = np.array([[1.3, -0.6], [-2.2, 0.9], [0.9, -0.3]])
    true -= true.mean(axis=0)
    frames = registration.warp(base, np.ones((3, 2, 64, 64)) * true[:, :, None, None])
    shifts = registration.rigid_shifts(frames, max_shift=5)
    np.testing.assert_allclose(shifts, true, atol=0.1)


def test_joint_reconstruction_beats_rigid_averaging_and_finds_the_fields():
    lattice = dict(lattice_vectors=((3.9, 0), (0, 3.9)), widths=0.45, background=0.05)
    series = synthetic.haadf_series((64, 64), 0.3, num_frames=4, distortion_rms=0.45, correlation_length=4.0,
                                    jitter_rms=0.0, drift_rms=0.3, dose=50.0, seed=3, **lattice)
    truth = series.displacements / series.sampling
    inner = np.s_[8:-8, 8:-8]

    def error(image):
        return np.linalg.norm((image - series.image)[inner]) / np.linalg.norm(series.image[inner])

    rigid, _ = registration.rigid_average(series.frames, max_shift=5)
    joint = registration.joint_reconstruction(series.frames, alpha=0.2, jitter=False, levels=2,
                                              max_num_iter=30, max_shift=5)
    assert error(joint.image) < 0.7 * error(rigid)
    correlation = np.corrcoef(joint.displacements[..., 8:-8, 8:-8].ravel(), truth[..., 8:-8, 8:-8].ravel())[0, 1]
    assert correlation > 0.8
    assert np.all(np.diff(joint.energies[-5:]) <= 1e-9 * abs(joint.energies[-1]))  # descent


@pytest.mark.parametrize(
    "frames, match",
    [
        ([np.ones((16, 16)), np.ones((16, 12))], "frames must all have the same shape"),
        (np.ones((16, 16)), "frames must be a 3D array"),
        (np.ones((1, 16, 16)), "at least 2 frames"),
        (np.full((3, 16, 16), np.nan), "non-finite"),
        (np.ones((3, 16, 16), complex), "must be real"),
    ],
)
def test_bad_series_are_refused(frames, match):
    with pytest.raises(ValueError, match=match):
        registration.joint_reconstruction(frames)
    with pytest.raises(ValueError, match=match):
        registration.rigid_average(frames)


def test_bad_options_are_refused():
    frames = np.ones((3, 32, 32))
    with pytest.raises(ValueError, match="levels=4 leaves fewer than 8 pixels"):
        registration.joint_reconstruction(frames, levels=4)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        registration.joint_reconstruction(frames, beta=-1.0)
    with pytest.raises(ValueError, match="initial_shifts must have shape"):
        registration.joint_reconstruction(frames, initial_shifts=np.zeros((2, 2)))


def test_first_variations_on_device_match_cpu(device, problem):
    cpu = registration.distortion_gradients(problem["image"], problem["fields"], problem["shifts"],
                                            problem["frames"], **WEIGHTS)
    on_device = registration.distortion_gradients(*(backend.asarray(problem[k]) for k in
                                                    ("image", "fields", "shifts", "frames")), **WEIGHTS)
    for a, b in zip(cpu, on_device):
        np.testing.assert_allclose(backend.asnumpy(b), a, atol=1e-6)
