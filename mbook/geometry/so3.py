"""Rotations in SO(3): quaternions, Haar-uniform sampling, angles and axes, and the Riemannian geometry.

Cryo-EM particles land in the ice at uniformly random orientations: draws
from the Haar measure of the rotation group SO(3). A standard normal vector
in R⁴, normalised, is uniform on the sphere S³ of unit quaternions, and the
quaternion-to-matrix map (a double cover) carries that measure to the Haar
measure (Shoemake 1992). Two checkable consequences: the rotation angle θ has
density ``(1 - cos θ) / π`` on [0, π], and the image of any fixed axis is
uniform on the sphere. Matrices act on column vectors (``r' = R r``).

The group with its bi-invariant metric is a Riemannian manifold. A tangent vector at ``R`` is written in the
body frame as a rotation vector ``ω`` ``(..., 3)``: ``exp_R(ω) = R Exp(ω)`` with ``Exp`` Rodrigues' formula,
``log_R(Q) = Log(Rᵀ Q)``, and the metric is ``⟨ω, η⟩ = ω·η``, so the geodesic distance is the angle of
``Rᵀ Q`` [rad]. The curvature is ``R(w, v)v = (|v|² w - (w·v) v) / 4`` (the space is RP³ of radius 2),
so Jacobi fields grow as ``sin(|v|/2)/(|v|/2)`` across ``v`` (:func:`jacobi_operator`), and parallel
transport along ``t ↦ R Exp(t u)`` rotates body vectors by ``Exp(-u/2)`` (:func:`transport`).

Every function returns its arrays on the selected device
(:mod:`mbook.core.backend`); random draws are made on the host from the seed
and then moved, so a seed gives the same rotations on every device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.geometry import so3
>>> r = backend.asnumpy(so3.random_rotations(1000, seed=0))
>>> bool(np.allclose(r @ r.transpose(0, 2, 1), np.eye(3)))
True
>>> round(float(so3.rotation_angles(so3.axis_rotation([0, 0, 1], 0.5))[0]), 6)
0.5
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks, progress


def _matrices(q, xp):
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) (normalised here)."""
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = (q[..., i] for i in range(4))
    return xp.stack([
        xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        xp.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        xp.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def quaternions_to_matrices(quaternions):
    """Rotation matrices of unit quaternions ``(w, x, y, z)``.

    Parameters
    ----------
    quaternions : (n, 4) array_like
        Normalised internally.

    Returns
    -------
    (n, 3, 3) ndarray, float64
        On the selected device.
    """
    q = checks.check_array(quaternions, "quaternions", ndim=2, real=True).astype(float)
    if q.shape[1] != 4:
        raise ValueError(f"quaternions must be (n, 4) arrays (w, x, y, z), got shape {q.shape}")
    xp = backend.get_array_module(q)
    if not bool(xp.all(xp.linalg.norm(q, axis=-1) > 0)):
        raise ValueError("quaternions must be non-zero (each is normalised)")
    return _matrices(q, backend.get_array_module(q))


def random_rotations(n, *, seed=0):
    """Rotations drawn from the Haar (uniform) measure on SO(3).

    A 4D standard normal vector, normalised, is uniform on the unit sphere
    S³; the map from unit quaternions to rotations (a double cover) sends
    this measure to the Haar measure (Shoemake 1992). The rotation angle θ
    then has density ``(1 - cos θ) / π`` on [0, π] and every rotated axis is
    uniform on the sphere, which :func:`rotation_angles` lets one test.

    Parameters
    ----------
    n : int
        Number of rotations (>= 1).
    seed : int
        Seed of the draw (made on the host, then moved).

    Returns
    -------
    (n, 3, 3) ndarray, float64
        On the selected device.

    Raises
    ------
    MemoryError
        Before any draw, when the quaternions, the matrices and their temporaries (about 200 bytes per
        rotation) exceed the memory budget.
    """
    n = checks.check_count(n, "n")
    progress.plan_batches(n_items=1, bytes_per_item=200 * n)  # MemoryError with the numbers, before any work
    q = backend.asarray(checks.rng(seed).standard_normal((n, 4)))
    return _matrices(q, backend.get_array_module(q))


def rotation_angles(rotations):
    """Rotation angle of each matrix, ``θ = arccos((tr R - 1) / 2)`` [rad].

    Parameters
    ----------
    rotations : (n, 3, 3) or (3, 3) array_like

    Returns
    -------
    (n,) ndarray
        In [0, π], on the selected device.
    """
    rotations = check_rotations(rotations)
    xp = backend.get_array_module(rotations)
    trace = rotations[:, 0, 0] + rotations[:, 1, 1] + rotations[:, 2, 2]
    return xp.arccos(xp.clip((trace - 1) / 2, -1, 1))


def _axis_rotations(axes, angles, xp):
    """Rodrigues' formula for a batch: axes (..., 3) (normalised here), angles (...) [rad] -> (..., 3, 3)."""
    axes = axes / xp.linalg.norm(axes, axis=-1, keepdims=True)
    x, y, z = axes[..., 0], axes[..., 1], axes[..., 2]
    zero = xp.zeros_like(x)
    k = xp.stack([xp.stack([zero, -z, y], axis=-1), xp.stack([z, zero, -x], axis=-1),
                  xp.stack([-y, x, zero], axis=-1)], axis=-2)
    s, c = xp.sin(angles)[..., None, None], xp.cos(angles)[..., None, None]
    return xp.eye(3) + s * k + (1 - c) * (k @ k)


def axis_rotations(axes, angles):
    """Rotations by ``angles`` [rad] about ``axes`` (Rodrigues' formula), for a batch.

    Parameters
    ----------
    axes : (..., 3) array_like
        Rotation axes (normalised internally; must not be zero).
    angles : (...) array_like
        Angles [rad], broadcast against the axes' batch shape.

    Returns
    -------
    (..., 3, 3) ndarray
        On the selected device.
    """
    axes = checks.check_array(axes, "axes", min_ndim=1, real=True).astype(float)
    angles = checks.check_array(angles, "angles", real=True).astype(float)
    if axes.shape[-1] != 3:
        raise ValueError(f"axes must be (..., 3) vectors, got shape {axes.shape}")
    try:
        np.broadcast_shapes(tuple(angles.shape), tuple(axes.shape[:-1]))
    except ValueError:
        raise ValueError(f"angles must broadcast against the axes' batch shape {tuple(axes.shape[:-1])}, "
                         f"got shape {tuple(angles.shape)}") from None
    xp = backend.get_array_module(axes)
    if not bool(xp.all(xp.linalg.norm(axes, axis=-1) > 0)):
        raise ValueError("axes must be non-zero vectors")
    return _axis_rotations(axes, angles, xp)


def axis_rotation(axis, angle):
    """Rotation by ``angle`` [rad] about ``axis`` (Rodrigues' formula); (3, 3) ndarray on the selected device."""
    axis = checks.check_array(axis, "axis", ndim=1, real=True)
    if axis.shape != (3,) or not bool(backend.get_array_module(axis).linalg.norm(axis) > 0):
        raise ValueError(f"axis must be a non-zero 3-vector, got shape {axis.shape}")
    angle = checks.check_number(angle, "angle", units="rad")
    return axis_rotations(axis, angle)


def check_rotations(rotations, name: str = "rotations"):
    """Rotation matrices ``(n, 3, 3)`` (one ``(3, 3)`` matrix becomes a batch of one) on the selected
    device: :func:`mbook.core.checks.check_rotations` with ``single=True``."""
    return checks.check_rotations(rotations, name, single=True)


def _check_rotation_vectors(vectors, name):
    vectors = checks.check_array(vectors, name, min_ndim=1, real=True).astype(float)
    if vectors.shape[-1] != 3:
        raise ValueError(f"{name} must be (..., 3) rotation vectors, got shape {vectors.shape}")
    return vectors


def _sinc(x, xp):
    """sin(x)/x, 1 at 0 (series on the small branch)."""
    small = xp.abs(x) < 1e-4
    safe = xp.where(small, 1.0, x)
    return xp.where(small, 1 - x * x / 6, xp.sin(safe) / safe)


def _exp_vectors(omega, xp):
    """Exp of rotation vectors (..., 3) -> (..., 3, 3); exact at 0."""
    t = xp.linalg.norm(omega, axis=-1)
    x, y, z = omega[..., 0], omega[..., 1], omega[..., 2]
    zero = xp.zeros_like(x)
    k = xp.stack([xp.stack([zero, -z, y], axis=-1), xp.stack([z, zero, -x], axis=-1),
                  xp.stack([-y, x, zero], axis=-1)], axis=-2)
    a = _sinc(t, xp)[..., None, None]
    b = (0.5 * _sinc(t / 2, xp) ** 2)[..., None, None]  # (1 - cos t)/t², stable at 0
    return xp.eye(3) + a * k + b * (k @ k)


def _log_matrices(r, xp):
    """Log of rotation matrices (..., 3, 3) -> rotation vectors (..., 3), stable near 0 and near π."""
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    c = xp.clip((trace - 1) / 2, -1.0, 1.0)
    a = xp.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], axis=-1)
    s = xp.linalg.norm(a, axis=-1) / 2  # sin θ
    theta = xp.arctan2(s, c)
    generic = a / (2 * _sinc(theta, xp))[..., None]
    # Near θ = π, sin θ vanishes: the axis comes from the symmetric part, (R + Rᵀ)/2 - cos θ I = (1 - cos θ) n nᵀ.
    sym = (r + xp.swapaxes(r, -1, -2)) / 2 - c[..., None, None] * xp.eye(3)
    sym = sym / xp.maximum(1 - c, 1e-12)[..., None, None]
    diag = xp.stack([sym[..., 0, 0], sym[..., 1, 1], sym[..., 2, 2]], axis=-1)
    k = xp.argmax(diag, axis=-1)
    column = xp.take_along_axis(sym, xp.broadcast_to(k[..., None, None], k.shape + (3, 1)), axis=-1)[..., 0]
    length = xp.linalg.norm(column, axis=-1, keepdims=True)
    axis = column / xp.where(length > 0, length, 1.0)  # zero only far from π, where this branch is unused
    sign = xp.where(xp.sum(axis * a, axis=-1) < 0, -1.0, 1.0)
    near_pi = (theta * sign)[..., None] * axis
    return xp.where((theta > np.pi - 1e-3)[..., None], near_pi, generic)


def exp(base, tangent):
    """Exponential map ``exp_R(ω) = R Exp(ω)`` (body-frame rotation vectors).

    Parameters
    ----------
    base : (n, 3, 3) or (3, 3) array_like
        Rotation matrices.
    tangent : (..., 3) array_like
        Rotation vectors [rad], broadcast against ``base``'s batch.

    Returns
    -------
    (..., 3, 3) ndarray
        On the selected device.
    """
    base = check_rotations(base, "base rotations")
    tangent = _check_rotation_vectors(tangent, "tangent")
    return _exp_at(base, tangent, backend.get_array_module(base, tangent))


def log(base, rotations):
    """Logarithmic map ``log_R(Q) = Log(Rᵀ Q)``: body-frame rotation vectors ``(n, 3)`` [rad], norms in [0, π]."""
    base, rotations = check_rotations(base, "base rotations"), check_rotations(rotations)
    return _log_at(base, rotations, backend.get_array_module(base, rotations))


def distance(a, b):
    """Geodesic distance between rotations (broadcast): the angle of ``aᵀ b`` [rad], in [0, π]; ``(n,)``."""
    a, b = check_rotations(a, "a"), check_rotations(b, "b")
    return _distance_at(a, b, backend.get_array_module(a, b))


def transport(base, target, tangent):
    """Parallel transport of body-frame vectors from ``base`` to ``target`` along the minimising geodesic.

    With ``u = log_base(target)`` the transported vector is ``Exp(-u/2) ω``: the covariant derivative of
    the bi-invariant metric on left-invariant fields is ``∇_X Y = [X, Y]/2``.

    Returns
    -------
    (n, 3) ndarray
        On the selected device.
    """
    base, target = check_rotations(base, "base rotations"), check_rotations(target, "target")
    tangent = _check_rotation_vectors(tangent, "tangent")
    return _transport_at(base, target, tangent, backend.get_array_module(base, target, tangent))


def to_coordinates(base, tangent):
    """Coordinates of tangent vectors at ``base``: the body-frame rotation vectors themselves ``(..., 3)``."""
    check_rotations(base, "base rotations")
    return _check_rotation_vectors(tangent, "tangent")


def from_coordinates(base, coordinates):
    """Tangent vectors at ``base`` from coordinates: the identity on ``(..., 3)`` rotation vectors."""
    check_rotations(base, "base rotations")
    return _check_rotation_vectors(coordinates, "coordinates")


def jacobi_operator(base, coordinates):
    """The symmetric map ``J`` with ``d exp_R(v) = Γ_{R→exp_R(v)} ∘ J`` ``(..., 3, 3)``.

    ``J = v̂v̂ᵀ + (sin(|v|/2)/(|v|/2)) (I - v̂v̂ᵀ)``: the sectional curvature is 1/4 (RP³ of radius 2).
    """
    check_rotations(base, "base rotations")
    v = _check_rotation_vectors(coordinates, "coordinates")
    return _jacobi(base, v, backend.get_array_module(v))


def random_near(n, base, *, scales=0.3, seed=0):
    """Rotations ``R Exp(ω)`` with Gaussian body-frame vectors ``ω`` of standard deviations ``scales`` [rad].

    Parameters
    ----------
    n : int
        Number of rotations (>= 1).
    base : (3, 3) array_like
        Centre of the cloud.
    scales : float or (3,) array_like
        Standard deviation of each component [rad], >= 0 and < π/2.
    seed : int
        Seed of the draw (on the host, then moved).

    Returns
    -------
    (n, 3, 3) ndarray
        On the selected device.
    """
    checks.check_count(n, "n")
    base = check_rotations(base, "base rotations")
    if base.shape[0] != 1:
        raise ValueError(f"base must be one rotation (3, 3), got shape {base.shape}")
    try:
        np.asarray(scales, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"scales must be a number or an array of numbers, got {scales!r:.60}") from None
    scales = np.broadcast_to(np.asarray(scales, dtype=float), (3,)) if np.ndim(scales) == 0 else np.asarray(scales)
    if scales.shape != (3,):
        raise ValueError(f"scales must be a number or (3,) values, got shape {scales.shape}")
    for s in scales:
        checks.check_number(float(s), "scales", lower=0, upper=np.pi / 2, upper_inclusive=False, units="rad")
    omega = backend.asarray(checks.rng(seed).standard_normal((n, 3)) * scales)
    return base @ _exp_vectors(omega, backend.get_array_module(omega))


def _exp_at(base, v, xp):
    return base @ _exp_vectors(v, xp)


def _log_at(base, rotations, xp):
    return _log_matrices(xp.swapaxes(base, -1, -2) @ rotations, xp)


def _distance_at(a, b, xp):
    return xp.linalg.norm(_log_at(a, b, xp), axis=-1)


def _transport_at(base, target, v, xp):
    return (_exp_vectors(-_log_at(base, target, xp) / 2, xp) @ v[..., None])[..., 0]


def _identity(base, v, xp):
    return v


def _jacobi(base, v, xp):
    t = xp.linalg.norm(v, axis=-1, keepdims=True)
    vhat = v / xp.where(t > 0, t, 1.0)
    outer = vhat[..., :, None] * vhat[..., None, :]
    return outer + _sinc(t / 2, xp)[..., None] * (xp.eye(3) - outer)


#: The unchecked kernels ``f(..., xp)`` for solvers that validated their inputs once (:mod:`~mbook.geometry.means`,
#: :mod:`~mbook.geometry.lowrank`), with the point check of the entry.
KERNELS = {"check": check_rotations, "exp": _exp_at, "log": _log_at, "distance": _distance_at,
           "transport": _transport_at, "coordinates": _identity, "from_coordinates": _identity, "jacobi": _jacobi}
