"""mbook.inverse.registration: the warp, hand-derived first variations, and joint reconstruction."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.inverse import registration, synthetic, warps

WEIGHTS = dict(alpha=0.3, beta=0.7, gamma=0.2)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(5)
    K, nx, ny = 3, 20, 16
    return dict(
        image=rng.random((nx, ny)), frames=rng.random((K, nx, ny)),
        fields=1.5 * rng.standard_normal((K, 2, nx, ny)), shifts=0.7 * rng.standard_normal((K, ny)),
    )


def test_warp_is_exact_on_linear_images_and_integer_shifts(device, rng):
    u = np.add.outer(3.0 * np.arange(12), -2.0 * np.arange(10))
    v = rng.uniform(-1, 1, (2, 2, 12, 10))
    x, y = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    inside = (x + v[:, 0] >= 0) & (x + v[:, 0] <= 11) & (y + v[:, 1] >= 0) & (y + v[:, 1] <= 9)
    expected = 3.0 * (x + v[:, 0]) - 2.0 * (y + v[:, 1])
    np.testing.assert_allclose(backend.asnumpy(registration.warp(u, v))[inside], expected[inside], atol=1e-12)
    image = rng.random((12, 10))
    shifted = backend.asnumpy(
        registration.warp(image, np.ones((1, 2, 12, 10)) * np.array([2.0, -1.0])[None, :, None, None])[0])
    np.testing.assert_array_equal(shifted[:-2, 1:], image[2:, :-1])


def test_warp_derivative_matches_finite_differences(device, problem, rng):
    u, v = problem["image"], problem["fields"]
    d = rng.standard_normal(v.shape)
    h = 1e-6
    numeric = backend.asnumpy(registration.warp(u, v + h * d) - registration.warp(u, v - h * d)) / (2 * h)
    analytic = np.sum(backend.asnumpy(registration.warp_derivative(u, v)) * d, axis=1)
    np.testing.assert_allclose(analytic, numeric, atol=1e-6)


@pytest.mark.parametrize("variable", ["image", "fields", "shifts"])
def test_first_variations_match_finite_differences(variable, device, problem, rng):
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
    assert np.sum(backend.asnumpy(grads[variable]) * d) == pytest.approx(numeric, rel=1e-6)


def test_rigid_shifts_recover_known_subpixel_shifts(device):
    base = synthetic.smooth_displacement((64, 64), rms=1.0, correlation_length=3.0, seed=1)[0, 0]
    true = np.array([[1.3, -0.6], [-2.2, 0.9], [0.9, -0.3]])
    true -= true.mean(axis=0)
    frames = registration.warp(base, np.ones((3, 2, 64, 64)) * true[:, :, None, None])
    shifts = registration.rigid_shifts(frames, max_shift=5)
    np.testing.assert_allclose(backend.asnumpy(shifts), true, atol=0.1)


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


def test_first_variations_on_device_match_cpu(device, problem, on_cpu):
    arguments = [problem[k] for k in ("image", "fields", "shifts", "frames")]
    cpu = on_cpu(lambda: registration.distortion_gradients(*arguments, **WEIGHTS))
    on_device = registration.distortion_gradients(*(backend.asarray(a) for a in arguments), **WEIGHTS)
    for a, b in zip(cpu, on_device):
        assert backend.get_array_module(b) is backend.xp
        np.testing.assert_allclose(backend.asnumpy(b), a, atol=1e-6)
    energy = registration.distortion_energy(*arguments, **WEIGHTS)
    assert isinstance(energy, float)
    assert energy == pytest.approx(on_cpu(lambda: registration.distortion_energy(*arguments, **WEIGHTS)), rel=1e-12)


@pytest.fixture(scope="module")
def small_series(on_cpu):
    """A 4-frame series as NumPy arrays (made on the CPU, whatever device the first test selected)."""
    series = on_cpu(lambda: synthetic.haadf_series((32, 32), 0.3, num_frames=4, distortion_rms=0.3,
                                                    correlation_length=4.0, jitter_rms=0.05, drift_rms=0.3,
                                                    dose=50.0, seed=1, lattice_vectors=((3.9, 0), (0, 3.9))))
    return series


def test_registration_on_device_matches_cpu(device, small_series, on_cpu):
    frames = small_series.frames

    def run():
        rigid = registration.rigid_average(frames, max_shift=5)
        joint = registration.joint_reconstruction(frames, levels=2, max_num_iter=6, max_shift=5, check_every=2)
        return rigid, joint

    (rigid_cpu, shifts_cpu), joint_cpu = on_cpu(run)
    (rigid, shifts), joint = run()
    results = (rigid, shifts) + tuple(joint)
    assert all(backend.get_array_module(r) is backend.xp for r in results)
    for a, b in zip((rigid_cpu, shifts_cpu) + tuple(joint_cpu), results):
        np.testing.assert_allclose(backend.asnumpy(b), a, rtol=1e-6, atol=1e-6 * np.abs(a).max())  # cuFFT rounding


def test_public_functions_given_numpy_return_arrays_on_the_device(device, problem):
    u, v, s, y = (problem[k] for k in ("image", "fields", "shifts", "frames"))
    results = [
        registration.warp(u, v), registration.warp_adjoint(y, v), registration.warp_derivative(u, v),
        registration.total_displacement(v, s), registration.rigid_shifts(y, num_iter=1),
        *registration.distortion_gradients(u, v, s, y, **WEIGHTS),
    ]
    assert all(backend.get_array_module(r) is backend.xp for r in results)


# --------------------------------------------------------------------------- no copies per iteration
def test_joint_reconstruction_copies_nothing_per_iteration(no_copies_per_iteration, small_series):
    frames = small_series.frames
    shifts = np.zeros((4, 2))
    # Outer iterations (gradient step, line search, energy) with the stopping test off...
    no_copies_per_iteration(lambda n: registration.joint_reconstruction(frames, levels=2, max_num_iter=n, tol=0,
                                                                        initial_shifts=shifts), iterations=(2, 5))
    # ...and the conjugate-gradient steps on the image.
    no_copies_per_iteration(lambda n: registration.joint_reconstruction(frames, levels=1, max_num_iter=2, tol=0,
                                                                        cg_iter=n, initial_shifts=shifts))


def test_rigid_shifts_copy_nothing_per_round(no_copies_per_iteration, small_series):
    no_copies_per_iteration(lambda n: registration.rigid_shifts(small_series.frames, num_iter=n), iterations=(1, 4))


def test_the_stopping_test_copies_one_number_per_check(host_copies, small_series):
    frames, shifts = small_series.frames, np.zeros((4, 2))
    few, many = (host_copies(lambda n=n: registration.joint_reconstruction(
        frames, levels=1, max_num_iter=n, tol=1e-30, check_every=2, initial_shifts=shifts)) for n in (4, 8))
    assert many - few == 2  # checks at 6 and 8


def test_line_search_energies_equal_the_energy_at_each_trial_step(problem):
    """The line search expands the regularisers as quadratics in the step (one warp fewer a trial): each trial
    energy equals distortion_energy at that step, to rounding."""
    rng = np.random.default_rng(6)
    u, y, v, s = problem["image"], problem["frames"], problem["fields"], problem["shifts"]
    dv, ds = rng.standard_normal(v.shape), rng.standard_normal(s.shape)
    steps = np.array([0.3, 0.15, 0.075, 0.0375])
    weights = dict(alpha=0.3, beta=0.7, gamma=0.2)
    trial = backend.asnumpy(registration._trial_energies(u, v, s, y, dv, ds, steps, *weights.values()))
    direct = [float(registration.distortion_energy(u, v + t * dv, s + t * ds, y, **weights)) for t in steps]
    np.testing.assert_allclose(trial, direct, rtol=1e-12)


def test_line_search_never_increases_the_energy(small_series):
    joint = registration.joint_reconstruction(small_series.frames, levels=1, max_num_iter=15, tol=0, max_shift=5)
    assert len(joint.energies) == 15  # tol=0: every iteration runs
    assert np.all(np.diff(joint.energies) <= 1e-12 * abs(joint.energies[0]))


def test_a_stack_of_images_is_warped_one_by_one_and_corners_can_be_reused(device, rng):
    images, fields = rng.random((3, 12, 10)), rng.uniform(-2, 2, (3, 2, 12, 10))
    stack = warps.warp(images, fields)
    for k in range(3):
        one = warps.warp(images[k], fields[k:k + 1])[0]
        np.testing.assert_array_equal(backend.asnumpy(stack[k]), backend.asnumpy(one))
    corners = warps.bilinear_corners((12, 10), fields)
    np.testing.assert_array_equal(backend.asnumpy(warps.warp(images[0], fields, corners=corners)),
                                  backend.asnumpy(warps.warp(images[0], fields)))
    # the adjoint's scatter-add sums in the order a GPU's threads arrive: equal to the last bits there
    np.testing.assert_allclose(backend.asnumpy(warps.warp_adjoint(stack, fields, corners=corners)),
                               backend.asnumpy(warps.warp_adjoint(stack, fields)), rtol=1e-14 if device == "gpu" else 0)


def test_warp_derivative_treats_both_axes_alike_to_the_last_pixel(device):
    """At zero displacement the derivative of the bilinear warp is the one-sided slope of the last cell at the last
    pixel, along both axes; transposing the image transposes the two components."""
    u = np.random.default_rng(0).standard_normal((7, 9))
    d = backend.asnumpy(warps.warp_derivative(u, np.zeros((2, 7, 9))))
    transposed = backend.asnumpy(warps.warp_derivative(u.T.copy(), np.zeros((2, 9, 7))))
    np.testing.assert_allclose(d[0], transposed[1].T)
    np.testing.assert_allclose(d[1], transposed[0].T)
    np.testing.assert_allclose(d[0][-1], u[-1] - u[-2])
    np.testing.assert_allclose(d[1][:, -1], u[:, -1] - u[:, -2])


def test_resampling_maps_pixel_centres_to_pixel_centres():
    """Doubling a ramp: fine pixel i's centre lies at (i + ½)/2 - ½ coarse pixels (clamped at the edges)."""
    ramp = np.arange(8.0)[:, None] * np.ones((1, 8))
    fine = backend.asnumpy(registration._resample(backend.asarray(ramp), (16, 8)))
    np.testing.assert_allclose(fine[:, 3], np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7), atol=1e-12)
