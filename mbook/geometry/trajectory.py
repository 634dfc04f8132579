"""Tracking tomography without a reference: a smooth trajectory and the volume from the frames alone.

Matching each frame against a reconstruction made with the current poses (alternating, or frame by
frame) stalls: the reconstruction deforms to fit the wrong poses, and the poses then fit the deformed
volume. Two changes break that circle here.

- **Few unknowns.** The motion is a smooth lab-frame angular velocity ``ω(t) = Σ_b c_b B_b(t)`` with
  ``B`` a short Fourier basis in the acquisition time ``t = k/N ∈ [0, 1)`` (constant, then ``cos 2πht``,
  ``sin 2πht`` for ``h = 1 … H``): ``c_0`` holds the mean axis and speed, the harmonics the drift of the
  axis and the changes of speed. The poses follow by integration, ``R_{k+1} = Exp(ω(t_k)/N) R_k`` from
  ``R_0 = I`` (:func:`trajectory_rotations`); holding ``R_0`` removes the gauge, the one common rotation of
  object and poses that the frames cannot see.
- **Variable projection.** The volume is eliminated: ``E(c) = ½ ‖A(c) f(c) - p‖²`` with ``f(c)`` the
  least-squares volume for the poses ``R(c)`` (CGLS, stopped early) and ``A(c)`` the projector at them.
  A Gauss-Newton step on ``c`` uses Kaufman's Jacobian ``-(I - A A⁺) ∂(A f)/∂c`` (Golub and Pereyra 2003):
  the part of a trajectory change that *no* volume can absorb. ``∂(A f)/∂c`` is the pose derivative of
  the projections (:func:`mbook.geometry.tracking.pose_jacobian`, a projection of angular-derivative
  volumes) times the trajectory's own derivative (:func:`trajectory_jacobian`, exact); ``A A⁺`` is
  applied by a few CGLS iterations per column.

:func:`fit_trajectory` grows the basis (continuation): first a steady rotation (``H = 0``: three
unknowns), then one, then two harmonics, each fit starting from the previous one; the stages before the
last run on frames decimated 2× (coarse to fine). The trajectory cannot leave the span of the basis: a
motion with faster changes than ``H`` harmonics describe is fitted in the least-squares sense only, and
:func:`mbook.geometry.tracking.refine_poses` against the fitted volume can take the poses further.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks
from mbook.geometry import so3, tracking
from mbook.tomography import rays


class TrajectoryResult(NamedTuple):
    """Result of :func:`fit_trajectory`, on the selected device."""

    #: ``(1 + 2H, 3)`` coefficients of the lab-frame angular velocity [rad per acquisition].
    coefficients: object
    #: ``(N, 3, 3)`` the poses they give (object to laboratory frame), ``R_0 = I``.
    rotations: object
    #: ``(n, n, n)`` the CGLS reconstruction with them.
    volume: object
    #: Relative misfit ``‖A f - p‖ / ‖p‖`` of the reconstruction before each Gauss-Newton step.
    misfits: object


# ----------------------------------------------------------------------------- the trajectory model
def _basis(num_frames, harmonics):
    """Host Fourier basis (N, 1 + 2H) at t = k/N."""
    t = np.arange(num_frames) / num_frames
    columns = [np.ones(num_frames)]
    for h in range(1, harmonics + 1):
        columns += [np.cos(2 * np.pi * h * t), np.sin(2 * np.pi * h * t)]
    return np.stack(columns, axis=1)


def _skew(v, xp):
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = xp.zeros_like(x)
    return xp.stack([xp.stack([zero, -z, y], axis=-1), xp.stack([z, zero, -x], axis=-1),
                     xp.stack([-y, x, zero], axis=-1)], axis=-2)


def _left_jacobian(v, xp):
    """Left Jacobian of SO(3): Exp(v + δ) = Exp(J_l(v) δ) Exp(v) to first order, (..., 3, 3)."""
    t = xp.linalg.norm(v, axis=-1)[..., None, None]
    small = t < 1e-4
    safe = xp.where(small, 1.0, t)
    a = xp.where(small, 0.5 - t * t / 24, (1 - xp.cos(safe)) / safe ** 2)
    b = xp.where(small, 1 / 6 - t * t / 120, (safe - xp.sin(safe)) / safe ** 3)
    k = _skew(v, xp)
    return xp.eye(3) + a * k + b * (k @ k)


def _rotations(coefficients, basis):
    """Poses (N, 3, 3) and the per-frame steps v_k = ω(t_k)/N (N, 3) by integration from R_0 = I."""
    xp = backend.get_array_module(coefficients)
    steps = (basis @ coefficients) / basis.shape[0]
    increments = so3.KERNELS["exp"](xp.eye(3), steps, xp)
    rotations = [xp.eye(3)]
    for k in range(basis.shape[0] - 1):  # a product of N small rotations: N 3x3 products on the device
        rotations.append(increments[k] @ rotations[-1])
    return xp.stack(rotations), steps


def _jacobian(coefficients, basis):
    """Poses and D (N, B, 3, 3) with η_k = Σ_b D[k, b] δc_b, the lab-frame change of R_k.

    R_k = Exp(v_{k-1}) ... Exp(v_0); changing v_j by δ moves R_k by Exp(R_k R_{j+1}ᵀ J_l(v_j) δ) (the
    perturbation made at step j, carried to frame k by the later steps), and δv_j = B_jb δc_b / N."""
    xp = backend.get_array_module(coefficients)
    rotations, steps = _rotations(coefficients, basis)
    n = basis.shape[0]
    carried = xp.swapaxes(rotations[1:], -1, -2) @ _left_jacobian(steps[:-1], xp) / n  # (N-1, 3, 3)
    terms = carried[:, None] * basis[:-1, :, None, None]  # (N-1, B, 3, 3)
    sums = xp.concatenate([xp.zeros((1,) + terms.shape[1:]), xp.cumsum(terms, axis=0)], axis=0)
    return rotations, xp.einsum("nij,nbjk->nbik", rotations, sums)


def _decimate(frames, xp):
    """Every second pixel of frames (N, n, n) after a [1/4, 1/2, 1/4] filter per axis: (N, m, m),
    m = (n + 1) // 2, pixel j of the result at pixel 2j of the input, so that the centre n // 2 stays
    the centre m // 2 for even n (the projector's convention), with twice the sampling."""
    padded = xp.pad(frames, ((0, 0), (1, 1), (1, 1)))
    rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    both = 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]
    return both[:, ::2, ::2]


def _check_coefficients(coefficients):
    coefficients = checks.check_array(coefficients, "coefficients", ndim=2, real=True).astype(float)
    if coefficients.shape[1] != 3 or coefficients.shape[0] % 2 != 1:
        raise ValueError(f"coefficients must be (1 + 2H, 3) (a constant and H harmonics, per component), "
                         f"got shape {coefficients.shape}")
    return coefficients


def trajectory_rotations(coefficients, num_frames: int):
    """The poses of the smooth trajectory with angular-velocity ``coefficients``.

    Parameters
    ----------
    coefficients : (1 + 2H, 3) array_like
        ``ω(t) = c_0 + Σ_h (c_{2h-1} cos 2πht + c_{2h} sin 2πht)``, lab-frame ``(z, y, x)`` components
        [rad per acquisition]; a steady turn about ``a`` is ``c_0 = 2π · revolutions · a``.
    num_frames : int
        Frames ``N`` >= 2, at ``t = k/N``.

    Returns
    -------
    (N, 3, 3) ndarray
        ``R_0 = I``, ``R_{k+1} = Exp(ω(t_k)/N) R_k``, on the selected device.
    """
    coefficients = _check_coefficients(coefficients)
    num_frames = checks.check_count(num_frames, "num_frames", minimum=2)
    basis = backend.asarray(_basis(num_frames, coefficients.shape[0] // 2))
    return _rotations(coefficients, basis)[0]


def trajectory_jacobian(coefficients, num_frames: int):
    """The poses and their exact derivatives with respect to the coefficients.

    Parameters
    ----------
    coefficients : (B, 3) array_like
        As in :func:`trajectory_rotations`, ``B = 1 + 2H``.
    num_frames : int
        Frames, >= 2.

    Returns
    -------
    rotations : (N, 3, 3) ndarray
    derivatives : (N, B, 3, 3) ndarray
        The lab-frame rotation vector by which ``R_k`` moves, ``η_k = Σ_b derivatives[k, b] @ δc_b``
        [rad per unit of coefficient], on the selected device.
    """
    coefficients = _check_coefficients(coefficients)
    num_frames = checks.check_count(num_frames, "num_frames", minimum=2)
    basis = backend.asarray(_basis(num_frames, coefficients.shape[0] // 2))
    return _jacobian(coefficients, basis)


# ----------------------------------------------------------------------------- variable projection
def _gauss_newton(frames, coefficients, basis, sampling, max_num_iter, volume_num_iter, projection_num_iter,
                  damping):
    """Gauss-Newton steps on the coefficients with Kaufman's variable-projection Jacobian; nothing is
    copied to the host (the misfits stay on the device)."""
    xp = backend.get_array_module(frames)
    num, n = frames.shape[0], frames.shape[-1]
    shape = (n, n, n)
    reconstruct = tracking.KERNELS["reconstruct"]
    norm, misfits = xp.linalg.norm(frames), []
    for _ in range(max_num_iter):
        rotations, derivatives = _jacobian(coefficients, basis)
        volume = reconstruct(frames, rotations, shape, sampling, volume_num_iter, None)
        angular = tracking.KERNELS["angular_volumes"](volume, sampling, xp)
        projections, jac = tracking.KERNELS["pose_jacobian"](volume, angular, rotations, sampling)
        residual = projections - frames
        misfits.append(xp.linalg.norm(residual) / norm)
        # ∂p_k/∂c_{b,i} = Σ_j ∂p_k/∂η_j D[k, b, j, i]: one (N, n, n) image stack per coefficient
        columns = xp.einsum("njp,nbji->binp", jac.reshape(num, 3, -1), derivatives)
        columns = columns.reshape(-1, num, n, n)
        # Kaufman: remove what a volume change absorbs, (I - A A⁺) column, A⁺ by a few CGLS steps; a loop
        # over the 3(1 + 2H) coefficients because the projector takes one volume at a time
        columns = xp.stack([c - rays.project_kernel(
            reconstruct(c, rotations, shape, sampling, projection_num_iter, None), rotations,
            sampling=sampling, detector_gpts=shape[1:]) for c in columns]).reshape(len(columns), -1)
        hessian = columns @ columns.T
        gradient = columns @ residual.reshape(-1)
        hessian = hessian + damping * xp.trace(hessian) / len(hessian) * xp.eye(len(hessian))
        coefficients = coefficients - xp.linalg.solve(hessian, gradient).reshape(coefficients.shape)
    return coefficients, misfits


def steady_coefficients(*, revolutions: float = 1.0, axis=(0.0, 1.0, 0.0), harmonics: int = 0):
    """Coefficients of the nominal motion: a steady turn about ``axis``, the harmonics zero.

    Parameters
    ----------
    revolutions : float
        Turns over the acquisition, in (0, 2].
    axis : (3,) array_like
        Rotation axis ``(z, y, x)`` (normalised here).
    harmonics : int
        Harmonics ``H`` >= 0 of the basis.

    Returns
    -------
    (1 + 2H, 3) ndarray
        On the selected device; :func:`trajectory_rotations` of it equals
        :func:`mbook.geometry.tracking.nominal_rotations`.
    """
    revolutions = checks.check_number(revolutions, "revolutions", lower=0, upper=2, lower_inclusive=False)
    axis = backend.asnumpy(checks.check_array(axis, "axis", ndim=1, real=True)).astype(float)
    if axis.shape != (3,) or not np.linalg.norm(axis) > 0:
        raise ValueError(f"axis must be a non-zero (3,) vector, got {axis!r}")
    harmonics = checks.check_count(harmonics, "harmonics", minimum=0)
    coefficients = np.zeros((1 + 2 * harmonics, 3))
    coefficients[0] = 2 * np.pi * revolutions * axis / np.linalg.norm(axis)
    return backend.asarray(coefficients)


def fit_trajectory(frames, *, revolutions: float = 1.0, axis=(0.0, 1.0, 0.0), harmonics: int = 2,
                   steps_per_stage: int = 3, sampling: float = 1.0, volume_num_iter: int = 10,
                   projection_num_iter: int = 6, damping: float = 1e-3,
                   coarse: bool = True) -> TrajectoryResult:
    """Poses and volume from the frames alone: a smooth trajectory fitted by variable projection.

    Starts from the nominal steady turn (``revolutions`` about ``axis``) and runs ``steps_per_stage``
    Gauss-Newton steps with ``H = 0, 1, …, harmonics`` harmonics in turn, the stages before the last on
    frames decimated 2× when ``coarse`` (see the module docstring); the volume is the CGLS
    reconstruction (``volume_num_iter`` iterations) with the final poses. The poses hold ``R_0 = I``:
    compare them with the truth after the best common rotation (:func:`align_gauge`).

    Parameters
    ----------
    frames : (N, n, n) array_like
        The video frames, in time order, square; ``N`` >= 2.
    revolutions : float
        Nominal turns over the acquisition, in (0, 2].
    axis : (3,) array_like
        Nominal axis ``(z, y, x)``.
    harmonics : int
        Harmonics of the final basis, >= 0 (``3(1 + 2H)`` unknowns).
    steps_per_stage : int
        Gauss-Newton steps per basis size, >= 1.
    sampling : float
        Voxel and pixel size [µm].
    volume_num_iter : int
        CGLS iterations of each reconstruction (the early stopping regularises).
    projection_num_iter : int
        CGLS iterations that apply ``A A⁺`` to each Jacobian column.
    damping : float
        Relative Levenberg damping, > 0.
    coarse : bool
        Run the stages before the last on frames filtered and decimated 2× (a volume 2× coarser per
        axis, 8× cheaper); the last stage uses the full frames.

    Returns
    -------
    TrajectoryResult
        Misfits of all stages, in order.
    """
    frames = checks.check_array(frames, "frames", ndim=3, real=True).astype(float)
    if frames.shape[1] != frames.shape[2] or frames.shape[0] < 2:
        raise ValueError(f"frames must be N >= 2 square images (N, n, n), got shape {frames.shape}")
    harmonics = checks.check_count(harmonics, "harmonics", minimum=0)
    if 3 * (1 + 2 * harmonics) > frames.shape[0]:
        raise ValueError(f"harmonics must leave no more unknowns 3(1 + 2H) than frames ({frames.shape[0]}), "
                         f"got {harmonics}")
    coefficients = backend.asnumpy(steady_coefficients(revolutions=revolutions, axis=axis))
    steps_per_stage = checks.check_iterations(steps_per_stage, "steps_per_stage")
    sampling = checks.check_positive_number(sampling, "sampling")
    volume_num_iter = checks.check_iterations(volume_num_iter, "volume_num_iter")
    projection_num_iter = checks.check_iterations(projection_num_iter, "projection_num_iter")
    damping = checks.check_positive_number(damping, "damping")
    if not isinstance(coarse, bool):
        raise TypeError(f"coarse must be True or False, got {coarse!r}")
    xp = backend.get_array_module(frames)
    coefficients, misfits = backend.asarray(coefficients), []
    num, n = frames.shape[0], frames.shape[-1]
    # coarse to fine: the stages before the last on 2 x 2 binned frames (a volume 2x coarser, 8x cheaper)
    binned = _decimate(frames, xp) if coarse else None
    for h in range(harmonics + 1):
        # the previous fit as the start, the new harmonics at zero
        coefficients = xp.concatenate([coefficients, xp.zeros((1 + 2 * h - coefficients.shape[0], 3))])
        basis = backend.asarray(_basis(num, h))
        fine = h == harmonics or not coarse
        coefficients, stage = _gauss_newton(frames if fine else binned, coefficients, basis,
                                            sampling if fine else 2 * sampling, steps_per_stage,
                                            volume_num_iter, projection_num_iter, damping)
        misfits += stage
    rotations = _rotations(coefficients, basis)[0]
    volume = tracking.KERNELS["reconstruct"](frames, rotations, (n, n, n), sampling, volume_num_iter, None)
    return TrajectoryResult(coefficients, rotations, volume, xp.stack(misfits))


def align_gauge(estimated, truth):
    """The common rotation ``Q`` that best aligns ``estimated`` poses to ``truth``: ``R_k Q ≈ T_k``.

    Poses and volume from frames alone are determined only up to one rotation of the object,
    ``(R_k, f) → (R_k Q, f(Q ·))``: a pose error means something only after removing it. ``Q`` maximises
    ``Σ_k tr(T_kᵀ R_k Q)`` (Procrustes on SO(3)): the SVD of ``Σ_k R_kᵀ T_k``, computed on the host (one
    copy of a 3 × 3 matrix).

    Parameters
    ----------
    estimated, truth : (N, 3, 3) array_like
        Poses.

    Returns
    -------
    aligned : (N, 3, 3) ndarray
        ``R_k Q``, on the selected device (reconstructing with them gives the volume in the truth's frame).
    rotation : (3, 3) ndarray
        ``Q``, on the selected device.
    """
    estimated, truth = so3.check_rotations(estimated, "estimated"), so3.check_rotations(truth, "truth")
    if estimated.shape != truth.shape:
        raise ValueError(f"estimated must have truth's shape {truth.shape}, got {estimated.shape}")
    xp = backend.get_array_module(estimated, truth)
    cross = backend.asnumpy(xp.einsum("nji,njk->ik", estimated, truth))
    u, _, vt = np.linalg.svd(cross)
    rotation = u @ np.diag([1.0, 1.0, math.copysign(1.0, np.linalg.det(u @ vt))]) @ vt
    rotation = backend.asarray(rotation)
    return estimated @ rotation, rotation
