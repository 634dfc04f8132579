"""mbook.geometry.tracking: pose derivatives, Gauss-Newton pose estimation with the smoothness prior, CGLS."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.geometry import so3, tracking, trajectory
from mbook.tomography import projector

A = backend.asnumpy
N_GPTS = 12


def _jacobian_mismatch(gpts, sampling, rotations):
    """Relative difference between pose_jacobian and central differences of the projector, per direction,
    for one smooth two-blob specimen [µm] sampled on a grid of ``gpts`` voxels of ``sampling``."""
    c = (np.arange(gpts) - gpts // 2) * sampling
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    volume = (np.exp(-((z - 1.5) ** 2 + (y + 1) ** 2 + x ** 2) / (2 * 1.5 ** 2))
              + 0.5 * np.exp(-((z + 1) ** 2 + (y - 1.5) ** 2 + (x - 1.5) ** 2) / (2 * 1.2 ** 2)))
    _, derivatives = tracking.pose_jacobian(volume, rotations, sampling=sampling)
    h, mismatch = 1e-4, []
    for j in range(3):
        eta = np.zeros((3, 3))
        eta[:, j] = h
        plus = A(projector.project(volume, A(so3.exp(np.eye(3), eta)) @ rotations, sampling=sampling))
        minus = A(projector.project(volume, A(so3.exp(np.eye(3), -eta)) @ rotations, sampling=sampling))
        numeric = (plus - minus) / (2 * h)
        mismatch.append(np.linalg.norm(numeric - A(derivatives)[:, j]) / np.linalg.norm(numeric))
    return np.array(mismatch), derivatives


def test_pose_jacobian_converges_to_the_finite_differences(device):
    """The hand-written derivative (projected angular-derivative volumes) is that of the continuous specimen;
    the discrete projector differs by its trilinear interpolation, an error that falls as the sampling
    refines: halving the voxel more than halves the mismatch, to below 10 %."""
    rotations = A(so3.random_rotations(3, seed=1))
    coarse, _ = _jacobian_mismatch(12, 1.0, rotations)
    fine, derivatives = _jacobian_mismatch(24, 0.5, rotations)
    assert np.all(fine < 0.5 * coarse) and fine.max() < 0.1
    assert backend.get_array_module(derivatives) is backend.xp


def test_steady_rotation_has_no_acceleration():
    nominal = tracking.nominal_rotations(12, axis=[0.2, 1.0, 0.1])
    assert float(np.abs(A(tracking._accelerations(A(nominal), np))).max()) < 1e-12
    drifting = tracking.tumbling_rotations(12, axis_drift=10, speed_variation=0.2, seed=1)
    assert float(np.abs(A(tracking._accelerations(A(drifting), np))).max()) > 1e-3


def test_tumbling_starts_at_identity_and_stays_near_the_nominal_axis():
    truth = A(tracking.tumbling_rotations(24, axis_drift=6.0, speed_variation=0.1, seed=3))
    np.testing.assert_allclose(truth[0], np.eye(3), atol=1e-15)
    steps = A(so3.log(truth[:-1], truth[1:]))  # body-frame steps; the axis of each in the lab is R_k ω
    lab = np.einsum("nij,nj->ni", truth[:-1], steps)
    angle = np.degrees(np.arccos(np.abs(lab[:, 1]) / np.linalg.norm(lab, axis=1)))
    assert angle.max() <= 6.0 + 1e-6 and angle.max() > 1.0


def test_gauss_newton_recovers_the_poses_from_clean_frames(device):
    """Noise-free frames of a known volume: from the nominal poses (errors up to 30 degrees) to 1e-3 degrees
    in eight steps, without and with the prior (zero for this steady motion). The Jacobian is that of the
    continuous specimen, so convergence is linear (about tenfold per step here), not quadratic."""
    volume = tracking.blob_sample(N_GPTS, seed=1)
    truth = tracking.nominal_rotations(10, axis=[0.1, 1.0, 0.05], revolutions=0.9)
    start = tracking.nominal_rotations(10)
    frames = tracking.record_frames(volume, truth, noise=0.0)
    assert float(np.median(A(tracking.pose_errors(start, truth)))) > 3
    for smoothness in (0.0, 1.0):
        found = tracking.refine_poses(frames, volume, start, smoothness=smoothness, max_num_iter=8)
        assert float(A(tracking.pose_errors(found, truth)).max()) < 1e-3, smoothness
        assert backend.get_array_module(found) is backend.xp


def test_the_prior_reduces_pose_errors_from_noisy_frames():
    volume = tracking.blob_sample(N_GPTS, seed=1)
    truth = tracking.tumbling_rotations(16, axis_drift=5.0, speed_variation=0.1, seed=2)
    frames = tracking.record_frames(volume, truth, noise=0.05, seed=4)
    start = tracking.nominal_rotations(16)
    errors = [float(np.median(A(tracking.pose_errors(
        tracking.refine_poses(frames, volume, start, smoothness=s, max_num_iter=4), truth))))
        for s in (0.0, 2.0)]
    assert errors[1] < errors[0]


def test_cgls_reconstruction_fits_the_frames(device):
    volume = tracking.blob_sample(N_GPTS, seed=2)
    rotations = tracking.nominal_rotations(12)
    frames = tracking.record_frames(volume, rotations, noise=0.0)
    fits = [tracking.reconstruct(frames, rotations, max_num_iter=k) for k in (2, 10)]
    residuals = [np.linalg.norm(A(projector.project(f, rotations)) - A(frames)) for f in fits]
    errors = [np.linalg.norm(A(f) - A(volume)) for f in fits]
    assert residuals[1] < 0.2 * residuals[0] and errors[1] < errors[0]


def test_cgls_iterates_are_lsqr_iterates():
    """CGLS and LSQR (Paige and Saunders) make the same iterates in exact arithmetic: after 2 and 10 iterations
    the reconstruction equals SciPy's LSQR with the projector as a linear operator, to rounding (measured 4e-16
    and 5e-10); steepest descent, without the conjugate directions, is 0.2 and 0.04 away."""
    from scipy.sparse.linalg import LinearOperator, lsqr

    volume = tracking.blob_sample(N_GPTS, seed=2)
    rotations = tracking.nominal_rotations(12)
    frames = A(tracking.record_frames(volume, rotations, noise=0.0))
    shape = (N_GPTS,) * 3
    operator = LinearOperator(
        (frames.size, volume.size), dtype=float,
        matvec=lambda v: A(projector.project(v.reshape(shape), rotations)).ravel(),
        rmatvec=lambda p: A(projector.backproject(p.reshape(frames.shape), rotations, shape=shape)).ravel())
    for k in (2, 10):
        reference = lsqr(operator, frames.ravel(), iter_lim=k, atol=0, btol=0, conlim=0)[0]
        mine = A(tracking.reconstruct(frames, rotations, max_num_iter=k)).ravel()
        assert np.linalg.norm(mine - reference) < 1e-6 * np.linalg.norm(reference)


def test_results_agree_on_cpu_and_strict(device, on_cpu):
    volume = tracking.blob_sample(N_GPTS, seed=1)
    truth = tracking.tumbling_rotations(8, seed=2)
    frames = tracking.record_frames(volume, truth, noise=0.02, seed=1)
    run = lambda: tracking.track(frames, volume, tracking.nominal_rotations(8), max_num_iter=2,  # noqa: E731
                                 volume_num_iter=3)
    result, reference = run(), on_cpu(run)
    np.testing.assert_allclose(A(result.rotations), A(reference.rotations), atol=1e-10)
    np.testing.assert_allclose(A(result.volume), A(reference.volume), atol=1e-9)


def test_pose_refinement_and_reconstruction_copy_nothing_per_iteration(no_copies_per_iteration):
    """Each Gauss-Newton step and each CGLS step projects through the projector's kernel (inputs checked
    once on entry), so the copies to the host do not grow with the iterations."""
    with backend.use_device("strict"):
        volume = tracking.blob_sample(N_GPTS, seed=1)
        truth = tracking.tumbling_rotations(6, seed=2)
        frames = tracking.record_frames(volume, truth, noise=0.02, seed=1)
        start = tracking.nominal_rotations(6)
    no_copies_per_iteration(lambda n: tracking.refine_poses(frames, volume, start, max_num_iter=n))
    no_copies_per_iteration(lambda n: tracking.reconstruct(frames, truth, max_num_iter=n))


_FRAMES = np.zeros((4, N_GPTS, N_GPTS))
_ROT = np.stack([np.eye(3)] * 4)
_VOL = np.zeros((N_GPTS,) * 3)


@pytest.mark.parametrize("call, match", [
    (lambda: tracking.blob_sample(4), "gpts"),
    (lambda: tracking.blob_sample(12, num_blobs=0), "num_blobs"),
    (lambda: tracking.nominal_rotations(1), "num_frames"),
    (lambda: tracking.nominal_rotations(4, axis=[0.0, 0.0, 0.0]), "axis"),
    (lambda: tracking.nominal_rotations(4, revolutions=3), "revolutions"),
    (lambda: tracking.tumbling_rotations(4, axis_drift=60), "axis_drift"),
    (lambda: tracking.tumbling_rotations(4, speed_variation=1.5), "speed_variation"),
    (lambda: tracking.record_frames(_VOL, _ROT, noise=-1), "noise"),
    (lambda: tracking.record_frames(_VOL, _ROT, seed=-1), "seed"),
    (lambda: tracking.tumbling_rotations(4, seed=2.5), "seed"),
    (lambda: tracking.pose_jacobian(np.zeros((12, 12, 10)), _ROT), "volume"),
    (lambda: tracking.pose_jacobian(_VOL, _ROT, sampling=0), "sampling"),
    (lambda: tracking.reconstruct(_FRAMES[:3], _ROT), "rotations"),
    (lambda: tracking.reconstruct(np.zeros((4, 12, 10)), _ROT), "frames"),
    (lambda: tracking.reconstruct(_FRAMES, _ROT * 1.1), "rotations"),
    (lambda: tracking.reconstruct(_FRAMES, _ROT, max_num_iter=0), "max_num_iter"),
    (lambda: tracking.refine_poses(_FRAMES, np.zeros((10,) * 3), _ROT), "volume"),
    (lambda: tracking.refine_poses(_FRAMES, _VOL, _ROT, smoothness=-1), "smoothness"),
    (lambda: tracking.refine_poses(_FRAMES, _VOL, _ROT, damping=0), "damping"),
    (lambda: tracking.track(_FRAMES, np.zeros((10,) * 3), _ROT), "reference"),
    (lambda: tracking.track(_FRAMES, _VOL, _ROT, volume_num_iter=0), "volume_num_iter"),
    (lambda: tracking.pose_errors(_ROT, _ROT[:2]), "estimated"),
])
def test_bad_input_is_refused_with_the_parameter_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------- without a reference
def test_trajectory_jacobian_matches_finite_differences(device):
    """The exact derivative of the integrated trajectory (left Jacobians carried by the later steps)
    against central differences of the poses, per coefficient, to 1e-7."""
    rng = np.random.default_rng(5)
    coefficients = A(trajectory.steady_coefficients(axis=[0.2, 1.0, -0.1], harmonics=1))
    coefficients = coefficients + 0.5 * rng.standard_normal(coefficients.shape)
    rotations, derivatives = trajectory.trajectory_jacobian(coefficients, 9)
    assert backend.get_array_module(derivatives) is backend.xp
    h = 1e-6
    for b in range(coefficients.shape[0]):
        for i in range(3):
            step = np.zeros_like(coefficients)
            step[b, i] = h
            plus = A(trajectory.trajectory_rotations(coefficients + step, 9))
            minus = A(trajectory.trajectory_rotations(coefficients - step, 9))
            # lab-frame change: Log(R(c + h) R(c - h)ᵀ) / 2h
            numeric = A(so3.log(np.eye(3), plus @ np.swapaxes(minus, 1, 2))) / (2 * h)
            np.testing.assert_allclose(A(derivatives)[:, b, :, i], numeric, atol=1e-7)


def _trajectory_chain_mismatch(gpts, sampling):
    """Relative difference between the chained derivative of the projections along a random change of
    the coefficients (pose Jacobian times trajectory Jacobian, as in the Gauss-Newton columns) and
    central differences of the projector, for the smooth two-blob specimen of _jacobian_mismatch."""
    c = (np.arange(gpts) - gpts // 2) * sampling
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    volume = (np.exp(-((z - 1.5) ** 2 + (y + 1) ** 2 + x ** 2) / (2 * 1.5 ** 2))
              + 0.5 * np.exp(-((z + 1) ** 2 + (y - 1.5) ** 2 + (x - 1.5) ** 2) / (2 * 1.2 ** 2)))
    rng = np.random.default_rng(0)
    coefficients = A(trajectory.steady_coefficients(axis=[0.1, 1.0, 0.2], harmonics=1, revolutions=0.5))
    coefficients = coefficients + 0.3 * rng.standard_normal(coefficients.shape)
    direction = rng.standard_normal(coefficients.shape)
    rotations, derivatives = trajectory.trajectory_jacobian(coefficients, 8)
    _, jacobian = tracking.pose_jacobian(volume, rotations, sampling=sampling)
    eta = np.einsum("nbij,bj->ni", A(derivatives), direction)
    chained = np.einsum("njvu,nj->nvu", A(jacobian), eta)
    h = 1e-5
    project = lambda coef: A(projector.project(volume, trajectory.trajectory_rotations(coef, 8),  # noqa: E731
                                               sampling=sampling))
    numeric = (project(coefficients + h * direction) - project(coefficients - h * direction)) / (2 * h)
    return np.linalg.norm(numeric - chained) / np.linalg.norm(numeric)


def test_chained_trajectory_derivative_converges_to_the_finite_differences():
    """The Gauss-Newton columns (pose Jacobian times trajectory Jacobian) against central differences of
    the projections along a random change of the coefficients: the trajectory part is exact, the pose
    part that of the continuous specimen, so the mismatch more than halves with the voxel, to below 10 %."""
    coarse, fine = _trajectory_chain_mismatch(12, 1.0), _trajectory_chain_mismatch(24, 0.5)
    assert fine < 0.5 * coarse and fine < 0.1


def test_steady_coefficients_give_the_nominal_rotations():
    for axis in ([0.0, 1.0, 0.0], [0.3, 1.0, 0.2]):
        found = trajectory.trajectory_rotations(trajectory.steady_coefficients(axis=axis, harmonics=2,
                                                                               revolutions=0.8), 10)
        np.testing.assert_allclose(A(found), A(tracking.nominal_rotations(10, axis=axis, revolutions=0.8)),
                                   atol=1e-12)


def test_align_gauge_removes_a_common_rotation(device):
    truth = A(tracking.tumbling_rotations(8, seed=1))
    common = A(so3.random_rotations(1, seed=3))[0]
    aligned, rotation = trajectory.align_gauge(truth @ common.T, truth)
    np.testing.assert_allclose(A(rotation), common, atol=1e-12)
    assert float(A(tracking.pose_errors(aligned, truth)).max()) < 1e-5
    assert backend.get_array_module(aligned) is backend.xp


def test_blind_trajectory_beats_the_nominal_poses():
    """No reference: the smooth trajectory fitted by variable projection from the frames alone has at most
    a third of the nominal poses' median error, both after the best common rotation."""
    volume = tracking.blob_sample(N_GPTS, seed=1)
    truth = tracking.tumbling_rotations(18, axis_drift=10.0, speed_variation=0.3, seed=4)
    frames = tracking.record_frames(volume, truth, noise=0.01, seed=2)
    result = trajectory.fit_trajectory(frames, harmonics=1, volume_num_iter=8)
    errors = [np.median(A(tracking.pose_errors(trajectory.align_gauge(r, truth)[0], truth)))
              for r in (tracking.nominal_rotations(18), result.rotations)]
    assert errors[1] < errors[0] / 3, errors
    assert backend.get_array_module(result.volume) is backend.xp


def _small_blind():
    volume = tracking.blob_sample(8, seed=1)
    truth = tracking.tumbling_rotations(6, seed=2)
    return tracking.record_frames(volume, truth, noise=0.01, seed=1)


def test_blind_fit_agrees_on_cpu_and_strict(device, on_cpu):
    frames = _small_blind()
    run = lambda: trajectory.fit_trajectory(frames, harmonics=0, steps_per_stage=2,  # noqa: E731
                                            volume_num_iter=3, projection_num_iter=2)
    result, reference = run(), on_cpu(run)
    np.testing.assert_allclose(A(result.coefficients), A(reference.coefficients), atol=1e-10)
    np.testing.assert_allclose(A(result.volume), A(reference.volume), atol=1e-9)


def test_blind_fit_copies_nothing_per_iteration(no_copies_per_iteration):
    with backend.use_device("strict"):
        frames = _small_blind()
    no_copies_per_iteration(lambda n: trajectory.fit_trajectory(
        frames, harmonics=0, steps_per_stage=n, volume_num_iter=1, projection_num_iter=1))


@pytest.mark.parametrize("call, match", [
    (lambda: trajectory.trajectory_rotations(np.zeros((2, 3)), 5), "coefficients"),
    (lambda: trajectory.trajectory_rotations(np.zeros((1, 2)), 5), "coefficients"),
    (lambda: trajectory.trajectory_jacobian(np.zeros((1, 3)), 1), "num_frames"),
    (lambda: trajectory.steady_coefficients(axis=[0, 0, 0]), "axis"),
    (lambda: trajectory.steady_coefficients(revolutions=0), "revolutions"),
    (lambda: trajectory.steady_coefficients(harmonics=-1), "harmonics"),
    (lambda: trajectory.fit_trajectory(np.zeros((4, 12, 10))), "frames"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=1), "harmonics"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, steps_per_stage=0), "steps_per_stage"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, sampling=-1), "sampling"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, volume_num_iter=0), "volume_num_iter"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, projection_num_iter=0), "projection_num_iter"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, damping=0), "damping"),
    (lambda: trajectory.fit_trajectory(_FRAMES, harmonics=0, coarse=1), "coarse"),
    (lambda: trajectory.align_gauge(_ROT, _ROT[:2]), "estimated"),
])
def test_trajectory_bad_input_is_refused_with_the_parameter_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_one_harmonic_about_a_fixed_axis_gives_its_closed_form_poses():
    """R_0 = I, R_{k+1} = Exp(ω(t_k)/N) R_k at t_k = k/N: for one cosine harmonic about a fixed axis the steps
    commute, and R_k is the rotation by (w/N) Σ_{j<k} cos(2πj/N) about that axis (SciPy's Rodrigues formula)."""
    from scipy.spatial.transform import Rotation

    n, w = 12, 3.0
    axis = np.array([0.0, 0.6, 0.8])
    coefficients = np.zeros((3, 3))
    coefficients[1] = w * axis  # c_1 multiplies cos(2πt)
    rotations = A(trajectory.trajectory_rotations(coefficients, n))
    for k in range(n):
        angle = w / n * sum(np.cos(2 * np.pi * j / n) for j in range(k))
        np.testing.assert_allclose(rotations[k], Rotation.from_rotvec(angle * axis).as_matrix(), atol=1e-12,
                                   err_msg=f"frame {k}")


def test_decimation_for_the_coarse_stages_keeps_the_centre_and_a_quarter_of_the_mass():
    """Pixel j of a decimated frame is pixel 2j of the frame, filtered by the symmetric [1, 2, 1]/4: a Gaussian
    centred on pixel 16 of 33 stays centred on pixel 8, with a quarter of its mass."""
    n = 33
    y, x = np.mgrid[:n, :n] - n // 2
    frame = np.exp(-(x**2 + y**2) / (2 * 2.0**2))[None]
    coarse = A(trajectory._decimate(backend.asarray(frame), backend.xp))[0]
    yy, xx = np.mgrid[:coarse.shape[0], :coarse.shape[1]]
    centre = [(coarse * c).sum() / coarse.sum() for c in (yy, xx)]
    np.testing.assert_allclose(centre, (n // 2) / 2, rtol=0, atol=1e-9)
    assert coarse.sum() == pytest.approx(frame.sum() / 4, rel=1e-9)


def test_frame_noise_is_relative_to_the_brightest_projected_value():
    """noise = 0.05: the noise's standard deviation is 0.05 times the largest clean value (4096 draws: 5 %)."""
    volume = tracking.blob_sample(16, seed=0)
    rotations = tracking.nominal_rotations(16)
    clean = A(projector.project(volume, rotations))
    frames = A(tracking.record_frames(volume, rotations, noise=0.05, seed=3))
    assert np.std(frames - clean) / (0.05 * clean.max()) == pytest.approx(1.0, abs=0.05)
