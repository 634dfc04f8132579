"""Tracking tomography: the poses of a sample that turns by itself, and its reconstruction with them.

A transparent specimen held in an acoustic trap turns about an axis and at a speed set by its own shape:
both drift during the acquisition and neither is known to the precision tomography needs (white paper,
section 8.4). Each video frame ``k`` records a noisy parallel-beam projection ``p_k = P(R_k) f + noise`` of
the volume ``f`` at an unknown rotation ``R_k`` (:func:`mbook.tomography.projector.project`).

- **Poses** (:func:`refine_poses`): Gauss-Newton on SO(3)ᴺ for

  ``½ Σ_k ‖s P(R_k) f_ref - p_k‖² + (λ/2) Σ_k ‖a_k‖²``,

  projection matching against a reference model ``f_ref`` (with one contrast scale ``s``), and
  ``a_k = Log(R_{k+1} R_kᵀ) - Log(R_k R_{k-1}ᵀ)`` the change of the lab-frame rotation step between frames:
  zero for a steady rotation about a fixed axis, so the prior favours smooth trajectories without knowing
  the axis or the speed. The derivative of a projection with respect to a lab-frame rotation
  ``R ← Exp(η) R`` is itself a projection (:func:`pose_jacobian`): of the three *angular-derivative volumes*
  ``g = y × ∇f`` (``y`` the object coordinates), with the same projector, so no finite differences.
- **Volume** (:func:`reconstruct`): least squares ``min_f ½ Σ_k ‖P(R_k) f - p_k‖²`` by CGLS, stopped
  early.

The first frame fixes the gauge (the frame of the reference): its pose is held. Without a reference,
:mod:`mbook.geometry.trajectory` fits a smooth trajectory and the volume from the frames alone.
"""

from __future__ import annotations

import functools

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks
from mbook.geometry import so3
from mbook.tomography import projector, rays


class TrackingResult(NamedTuple):
    """Result of :func:`track`: poses and volume on the selected device, and the history."""

    #: ``(N, 3, 3)`` estimated rotations (object to laboratory frame).
    rotations: object
    #: ``(nz, ny, nx)`` the reconstruction with them.
    volume: object
    #: Relative misfit ``‖s P(R) f_ref - p‖ / ‖p‖`` against the reference before each Gauss-Newton step.
    misfits: object


# ----------------------------------------------------------------------------- the specimen and its motion
def blob_sample(gpts: int, *, num_blobs: int = 8, seed: int = 0):
    """A transparent test specimen: a soft ellipsoidal cell with a few Gaussian inclusions, ``(n, n, n)``.

    Values are an optical density (phase or absorption per voxel) between 0 and about 1; the inclusions
    have different sizes and positions, so the specimen has no symmetry and every pose is identifiable.

    Parameters
    ----------
    gpts : int
        Voxels per edge, >= 8.
    num_blobs : int
        Inclusions, >= 1.
    seed : int
        Seed of their positions and sizes (drawn on the host, then moved).

    Returns
    -------
    (n, n, n) ndarray
        On the selected device.
    """
    n = checks.check_count(gpts, "gpts", minimum=8)
    num_blobs = checks.check_count(num_blobs, "num_blobs")
    rng = checks.rng(seed)
    c = np.arange(n) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = n / 2
    cell = 0.2 / (1 + np.exp(((z / (0.55 * r)) ** 2 + (y / (0.75 * r)) ** 2 + (x / (0.65 * r)) ** 2 - 1) * 8))
    volume = cell.copy()
    for _ in range(num_blobs):
        centre = rng.uniform(-0.4, 0.4, 3) * r
        width = rng.uniform(0.05, 0.1) * n
        volume += rng.uniform(0.5, 1.0) * np.exp(-((z - centre[0]) ** 2 + (y - centre[1]) ** 2
                                                     + (x - centre[2]) ** 2) / (2 * width ** 2))
    return backend.asarray(volume)


def _steady(num_frames, revolutions, axis):
    """Host rotations of a steady rotation: angle 2π·revolutions·k/N about ``axis``."""
    angles = 2 * np.pi * revolutions * np.arange(num_frames) / num_frames
    return angles, np.broadcast_to(axis, (num_frames, 3))


def nominal_rotations(num_frames: int, *, revolutions: float = 1.0, axis=(0.0, 1.0, 0.0)):
    """Rotations of a steady rotation at constant speed about a fixed ``axis`` (the nominal motion).

    Parameters
    ----------
    num_frames : int
        Frames, >= 2.
    revolutions : float
        Turns over the acquisition, in (0, 2].
    axis : (3,) array_like
        Rotation axis in ``(z, y, x)`` laboratory coordinates (normalised here).

    Returns
    -------
    (N, 3, 3) ndarray
        ``R_k`` (object to laboratory frame), on the selected device.
    """
    num_frames = checks.check_count(num_frames, "num_frames", minimum=2)
    revolutions = checks.check_number(revolutions, "revolutions", lower=0, upper=2, lower_inclusive=False)
    axis = backend.asnumpy(checks.check_array(axis, "axis", ndim=1, real=True)).astype(float)
    if axis.shape != (3,) or not np.linalg.norm(axis) > 0:
        raise ValueError(f"axis must be a non-zero (3,) vector, got {axis!r}")
    angles, axes = _steady(num_frames, revolutions, axis / np.linalg.norm(axis))
    return so3.axis_rotations(axes, angles)


def tumbling_rotations(num_frames: int, *, revolutions: float = 1.0, axis_drift: float = 8.0,
                       speed_variation: float = 0.1, seed: int = 0):
    """Rotations of a sample whose axis drifts and whose angular speed varies, smoothly and unknown.

    The axis leaves the nominal ``y`` axis by an angle between 0 and ``axis_drift`` degrees, towards an
    azimuth in the z-x plane, both along smooth random paths; the angular speed is the nominal one times
    ``1 + speed_variation · s(t)``, with ``s`` a smooth random function in [-1, 1]. The motion is integrated
    frame by frame in the laboratory frame, ``R_{k+1} = Exp(θ_k a_k) R_k``, from ``R_0 = I``.

    Parameters
    ----------
    num_frames : int
        Frames, >= 2.
    revolutions : float
        Nominal turns over the acquisition, in (0, 2].
    axis_drift : float
        Largest deviation of the axis from ``y`` [degrees], in [0, 45].
    speed_variation : float
        Relative variation of the angular speed, in [0, 0.9].
    seed : int
        Seed of the random smooth paths (host draw, then moved).

    Returns
    -------
    (N, 3, 3) ndarray
        On the selected device.
    """
    num_frames = checks.check_count(num_frames, "num_frames", minimum=2)
    revolutions = checks.check_number(revolutions, "revolutions", lower=0, upper=2, lower_inclusive=False)
    axis_drift = checks.check_number(axis_drift, "axis_drift", lower=0, upper=45, units="degrees")
    speed_variation = checks.check_number(speed_variation, "speed_variation", lower=0, upper=0.9)
    rng = checks.rng(seed)
    t = np.arange(num_frames) / num_frames
    # smooth random paths: two low harmonics with random phases, scaled to [-1, 1]
    def smooth():
        path = sum(np.sin(2 * np.pi * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2))
        return path / np.max(np.abs(path))
    # the axis leaves y by the angle α(t) in [0, axis_drift], towards the azimuth φ(t) in the z-x plane
    alpha = np.deg2rad(axis_drift) * (1 + smooth()) / 2
    phi = np.pi * smooth()
    axes = np.stack([np.sin(alpha) * np.cos(phi), np.cos(alpha), np.sin(alpha) * np.sin(phi)], axis=1)
    step = 2 * np.pi * revolutions / num_frames * (1 + speed_variation * smooth())
    increments = backend.asnumpy(so3.axis_rotations(axes, step))
    rotations = np.empty((num_frames, 3, 3))
    rotations[0] = np.eye(3)
    for k in range(1, num_frames):  # a product of N small rotations: a host loop of 3x3 products
        rotations[k] = increments[k - 1] @ rotations[k - 1]
    return backend.asarray(rotations)


def record_frames(volume, rotations, *, sampling: float = 1.0, noise: float = 0.05, seed: int = 0):
    """Noisy projections of ``volume`` at ``rotations``: one video frame each.

    Parameters
    ----------
    volume : (n, n, n) array_like
        The specimen [optical density per voxel].
    rotations : (N, 3, 3) array_like
        Poses, object to laboratory frame.
    sampling : float
        Voxel and pixel size [µm].
    noise : float
        Standard deviation of the additive Gaussian noise relative to the largest projected value, >= 0.
    seed : int
        Seed of the noise (host draw, then moved).

    Returns
    -------
    (N, n, n) ndarray
        On the selected device.
    """
    volume = _check_volume(volume)  # a cube: the frames are (n, n), as reconstruct and pose_jacobian expect
    noise = checks.check_number(noise, "noise", lower=0)
    checks.check_seed(seed)
    clean = projector.project(volume, rotations, sampling=sampling)
    scale = float(clean.max())  # one copy: the noise level is a parameter
    draw = checks.rng(seed).standard_normal(clean.shape) * noise * scale
    return clean + backend.asarray(draw)


# ----------------------------------------------------------------------------- pose derivatives
def _angular_volumes(volume, sampling, xp):
    """g = y × ∇f (3, n, n, n) in object coordinates y [µm]: the derivative of f(Exp(-ω) y) is -ω·g."""
    shape = volume.shape
    grads = [xp.gradient(volume, sampling, axis=a) for a in range(3)]
    coords = [(xp.arange(n) - n // 2) * sampling for n in shape]
    z = coords[0][:, None, None]
    y = coords[1][None, :, None]
    x = coords[2][None, None, :]
    gz, gy, gx = grads
    return xp.stack([y * gx - x * gy, x * gz - z * gx, z * gy - y * gz])


def _pose_jacobian(volume, angular, rotations, sampling):
    """Projections (N, nv, nu) and their derivatives (N, 3, nv, nu) with respect to lab-frame increments η.

    For ``R(η) = Exp(η) R`` the object coordinates are ``Rᵀ Exp(-η) x``; with ``ω = Rᵀ η`` (body frame)
    the derivative of the projection is ``-P(R)[ω·g]``, so ``∂p/∂η_j = -Σ_i R_ji P(R) g_i``."""
    xp = backend.get_array_module(volume)
    # Checked on entry: the projector's kernel, so that iterations copy nothing to the host.
    project = functools.partial(rays.project_kernel, rotations=rotations, sampling=sampling,
                                detector_gpts=volume.shape[1:])
    projections = project(volume)
    body = xp.stack([project(g) for g in angular], axis=1)  # P(R) g_i
    return projections, -xp.einsum("nji,nivu->njvu", rotations, body)


def pose_jacobian(volume, rotations, *, sampling: float = 1.0):
    """Projections of ``volume`` at ``rotations`` and their derivatives with respect to lab-frame rotations.

    The derivative of ``P(Exp(η) R) f`` at ``η = 0`` along ``e_j`` is the projection at ``R`` of
    ``-(R (y × ∇f))_j`` with ``y`` the object coordinates: three more projections per pose, no finite
    differences (``∇f`` by central differences of the voxels).

    Parameters
    ----------
    volume : (n, n, n) array_like
        The specimen.
    rotations : (N, 3, 3) array_like
        Poses.
    sampling : float
        Voxel size [µm].

    Returns
    -------
    projections : (N, n, n) ndarray
    derivatives : (N, 3, n, n) ndarray
        ``∂p/∂η_j`` [projection units per rad], on the selected device.
    """
    volume = _check_volume(volume)
    rotations = so3.check_rotations(rotations)
    sampling = checks.check_positive_number(sampling, "sampling")
    xp = backend.get_array_module(volume)
    return _pose_jacobian(volume, _angular_volumes(volume, sampling, xp), rotations, sampling)


def _check_volume(volume, name="volume"):
    volume = checks.check_array(volume, name, ndim=3, real=True).astype(float)
    if len(set(volume.shape)) != 1:
        raise ValueError(f"{name} must be a cube (n, n, n), got shape {volume.shape}")
    return volume


# ----------------------------------------------------------------------------- the two sub-problems
def _reconstruct(frames, rotations, shape, sampling, max_num_iter, x0):
    """CGLS for min ½ Σ ‖P(R_k) f - p_k‖² (Hestenes-Stiefel on the normal equations): a fixed number of
    iterations, one projection and one back-projection each, nothing copied to the host."""
    xp = backend.get_array_module(frames)
    f = xp.zeros(shape) if x0 is None else x0
    project = functools.partial(rays.project_kernel, rotations=rotations, sampling=sampling,
                                detector_gpts=tuple(shape[1:]))
    backproject = functools.partial(rays.backproject_kernel, rotations=rotations, shape=shape,
                                    sampling=sampling)
    r = frames - project(f)
    s = backproject(r)
    d, gamma = s, xp.sum(s * s)
    for _ in range(max_num_iter):
        q = project(d)
        alpha = gamma / xp.maximum(xp.sum(q * q), 1e-300)
        f = f + alpha * d
        r = r - alpha * q
        s = backproject(r)
        gamma_new = xp.sum(s * s)
        d = s + (gamma_new / xp.maximum(gamma, 1e-300)) * d
        gamma = gamma_new
    return f


def reconstruct(frames, rotations, *, sampling: float = 1.0, max_num_iter: int = 15):
    """Least-squares reconstruction ``min_f ½ Σ ‖P(R_k) f - p_k‖²`` for given poses by conjugate gradients
    on the normal equations (CGLS, Hestenes and Stiefel 1952), a fixed number of iterations: stopping early
    is the regularisation.

    Parameters
    ----------
    frames : (N, n, n) array_like
        Projections, square.
    rotations : (N, 3, 3) array_like
        Their poses.
    sampling : float
        Voxel and pixel size [µm].
    max_num_iter : int
        Iterations (two projector calls each).

    Returns
    -------
    (n, n, n) ndarray
        On the selected device.
    """
    frames, rotations = _check_frames(frames, rotations)
    sampling = checks.check_positive_number(sampling, "sampling")
    max_num_iter = checks.check_iterations(max_num_iter)
    n = frames.shape[-1]
    return _reconstruct(frames, rotations, (n, n, n), sampling, max_num_iter, None)


def _check_frames(frames, rotations, name="rotations"):
    frames = checks.check_array(frames, "frames", ndim=3, real=True).astype(float)
    if frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be square images (N, n, n), got shape {frames.shape}")
    rotations = so3.check_rotations(rotations, name)
    if rotations.shape[0] != frames.shape[0]:
        raise ValueError(f"{name} must hold one pose per frame (frames holds {frames.shape[0]}), "
                         f"got {rotations.shape[0]}")
    return frames, rotations


def _second_difference(n, xp):
    """(N-2, N) matrix of second differences."""
    d = np.zeros((max(n - 2, 0), n))
    for k in range(n - 2):
        d[k, k:k + 3] = (1.0, -2.0, 1.0)
    return xp.asarray(d)


def _accelerations(rotations, xp):
    """a_k = Log(R_{k+1} R_kᵀ) - Log(R_k R_{k-1}ᵀ), (N-2, 3): lab-frame changes of the angular step."""
    steps = so3.KERNELS["log"](xp.swapaxes(rotations[:-1], -1, -2), xp.swapaxes(rotations[1:], -1, -2), xp)
    # log_{R_kᵀ}(R_{k+1}ᵀ) = Log(R_k R_{k+1}ᵀ) = -Log(R_{k+1} R_kᵀ) as a lab vector
    steps = -steps
    return steps[1:] - steps[:-1]


def _refine_poses(frames, volume, rotations, sampling, smoothness, max_num_iter, damping, history=False):
    xp = backend.get_array_module(frames)
    norm, misfits = xp.linalg.norm(frames), []
    n = rotations.shape[0]
    angular = _angular_volumes(volume, sampling, xp)
    difference = _second_difference(n, xp)
    penalty = xp.kron(difference.T @ difference, xp.eye(3))  # (3N, 3N)
    for _ in range(max_num_iter):
        projections, jac = _pose_jacobian(volume, angular, rotations, sampling)
        # one contrast scale for all frames: an under-converged volume projects too faintly, and the
        # mismatch must not be read as a pose error
        scale_data = xp.sum(projections * frames) / xp.sum(projections * projections)
        residual = (scale_data * projections - frames).reshape(n, -1)
        misfits.append(xp.linalg.norm(residual) / norm)
        jac = scale_data * jac.reshape(n, 3, -1)
        hessians = jac @ xp.swapaxes(jac, -1, -2)  # (N, 3, 3)
        gradients = (jac @ residual[..., None])[..., 0]  # (N, 3)
        scale = xp.mean(xp.trace(hessians, axis1=-2, axis2=-1)) / 3  # the data curvature per angle
        weight = smoothness * scale
        system = weight * penalty + damping * scale * xp.eye(3 * n)
        blocks = xp.zeros((n, 3, n, 3))
        index = xp.arange(n)
        blocks[index, :, index, :] = hessians
        system = system + blocks.reshape(3 * n, 3 * n)
        rhs = gradients.reshape(-1) + weight * (difference.T @ _accelerations(rotations, xp)).reshape(-1)
        # the first pose fixes the gauge: solve for the others only
        eta = xp.linalg.solve(system[3:, 3:], -rhs[3:])
        eta = xp.concatenate([xp.zeros(3), eta]).reshape(n, 3)
        rotations = so3.KERNELS["exp"](xp.eye(3), eta, xp) @ rotations
    return (rotations, xp.stack(misfits)) if history else rotations


def refine_poses(frames, volume, rotations, *, sampling: float = 1.0, smoothness: float = 1.0,
                 max_num_iter: int = 5, damping: float = 1e-3):
    """Gauss-Newton on SO(3)ᴺ for the poses, with the smoothness prior on the trajectory.

    Minimises ``½ Σ_k ‖P(R_k) f - p_k‖² + (λ/2) Σ_k ‖a_k‖²`` with ``a_k`` the change of the lab-frame angular
    step between frames; ``λ = smoothness × (mean data curvature per angle)``, so ``smoothness`` is
    dimensionless (0: frames independent). Each step solves one ``3(N-1)`` linear system (the first pose is
    held) with Levenberg damping ``damping`` (relative) and updates ``R_k ← Exp(η_k) R_k``.

    Parameters
    ----------
    frames : (N, n, n) array_like
        The projections.
    volume : (n, n, n) array_like
        The current volume.
    rotations : (N, 3, 3) array_like
        Starting poses.
    sampling : float
        Voxel size [µm].
    smoothness : float
        Relative weight of the prior, >= 0.
    max_num_iter : int
        Gauss-Newton steps.
    damping : float
        Relative Levenberg damping, > 0.

    Returns
    -------
    (N, 3, 3) ndarray
        On the selected device.
    """
    frames, rotations = _check_frames(frames, rotations)
    volume = _check_volume(volume)
    if volume.shape[-1] != frames.shape[-1]:
        raise ValueError(f"volume must be {frames.shape[-1]}³ like the frames, got shape {volume.shape}")
    sampling = checks.check_positive_number(sampling, "sampling")
    smoothness = checks.check_number(smoothness, "smoothness", lower=0)
    max_num_iter = checks.check_iterations(max_num_iter)
    damping = checks.check_positive_number(damping, "damping")
    return _refine_poses(frames, volume, rotations, sampling, smoothness, max_num_iter, damping)


def track(frames, reference, initial, *, sampling: float = 1.0, smoothness: float = 1.0, max_num_iter: int = 4,
          volume_num_iter: int = 6, damping: float = 1e-3) -> TrackingResult:
    """Estimate every frame's pose against a reference model, then reconstruct with the estimated poses.

    The poses are refined from ``initial`` (the nominal motion) by :func:`refine_poses` (Gauss-Newton on
    SO(3)ᴺ with the smoothness prior) against ``reference``, a low-resolution model of the specimen; the
    volume is then reconstructed from the frames alone (:func:`reconstruct`).

    Parameters
    ----------
    frames : (N, n, n) array_like
        The video frames (projections), in time order.
    reference : (n, n, n) array_like
        The reference model the frames are matched against.
    initial : (N, 3, 3) array_like
        Starting poses; the first is kept (it fixes the reference's frame).
    sampling : float
        Voxel and pixel size [µm].
    smoothness : float
        Relative weight of the trajectory prior, >= 0 (0: frames independent).
    max_num_iter : int
        Gauss-Newton steps.
    volume_num_iter : int
        CGLS iterations of the reconstruction.
    damping : float
        Relative Levenberg damping.

    Returns
    -------
    TrackingResult
    """
    frames, rotations = _check_frames(frames, initial, "initial")
    reference = _check_volume(reference, "reference")
    if reference.shape[-1] != frames.shape[-1]:
        raise ValueError(f"reference must be {frames.shape[-1]}³ like the frames, got shape {reference.shape}")
    sampling = checks.check_positive_number(sampling, "sampling")
    smoothness = checks.check_number(smoothness, "smoothness", lower=0)
    max_num_iter = checks.check_iterations(max_num_iter)
    volume_num_iter = checks.check_iterations(volume_num_iter, "volume_num_iter")
    damping = checks.check_positive_number(damping, "damping")
    rotations, misfits = _refine_poses(frames, reference, rotations, sampling, smoothness, max_num_iter, damping,
                                       history=True)
    n = frames.shape[-1]
    volume = _reconstruct(frames, rotations, (n, n, n), sampling, volume_num_iter, None)
    return TrackingResult(rotations, volume, misfits)


def pose_errors(estimated, truth):
    """Angle between estimated and true poses, per frame [degrees], ``(N,)`` on the selected device."""
    estimated, truth = so3.check_rotations(estimated, "estimated"), so3.check_rotations(truth, "truth")
    if estimated.shape != truth.shape:
        raise ValueError(f"estimated must have truth's shape {truth.shape}, got {estimated.shape}")
    xp = backend.get_array_module(estimated, truth)
    return so3.KERNELS["distance"](estimated, truth, xp) * (180 / math.pi)


#: The kernels on inputs checked already, for solvers built on them (:mod:`mbook.geometry.trajectory`):
#: ``reconstruct(frames, rotations, shape, sampling, max_num_iter, x0)`` (CGLS),
#: ``angular_volumes(volume, sampling, xp)`` and ``pose_jacobian(volume, angular, rotations, sampling)``.
KERNELS = {"reconstruct": _reconstruct, "angular_volumes": _angular_volumes, "pose_jacobian": _pose_jacobian}
