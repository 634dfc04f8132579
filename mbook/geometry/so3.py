"""Rotations in SO(3): quaternions, Haar-uniform sampling, angles and axes.

Cryo-EM particles land in the ice at uniformly random orientations: draws
from the Haar measure of the rotation group SO(3). A standard normal vector
in R⁴, normalised, is uniform on the sphere S³ of unit quaternions, and the
quaternion-to-matrix map (a double cover) carries that measure to the Haar
measure (Shoemake 1992). Two checkable consequences: the rotation angle θ has
density ``(1 - cos θ) / π`` on [0, π], and the image of any fixed axis is
uniform on the sphere. Matrices act on column vectors (``r' = R r``).

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

from mbook.core import backend, checks


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
    """
    checks.check_count(n, "n")
    q = backend.asarray(np.random.default_rng(seed).standard_normal((n, 4)))
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
    rotations = checks.check_array(rotations, "rotations", real=True)
    rotations = rotations[None] if rotations.ndim == 2 else rotations
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
    xp = backend.get_array_module(axes)
    if not bool(xp.all(xp.linalg.norm(axes, axis=-1) > 0)):
        raise ValueError("axes must be non-zero vectors")
    return _axis_rotations(axes, angles, xp)


def axis_rotation(axis, angle):
    """Rotation by ``angle`` [rad] about ``axis`` (Rodrigues' formula); (3, 3) ndarray on the selected device."""
    return axis_rotations(axis, angle)


def check_rotations(rotations):
    """Validate rotation matrices and put them on the selected device.

    Parameters
    ----------
    rotations : (n, 3, 3) or (3, 3) array_like
        A single matrix is promoted to a batch of one.

    Returns
    -------
    (n, 3, 3) ndarray, float64
        On the selected device.

    Raises
    ------
    ValueError
        For a wrong shape or matrices that are not orthogonal (``R Rᵀ = I`` to 1e-6).
    """
    rotations = checks.check_array(rotations, "rotations", real=True).astype(float)
    if rotations.ndim == 2:
        rotations = rotations[None]
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be (n, 3, 3) matrices, got shape {rotations.shape}")
    xp = backend.get_array_module(rotations)
    error = float(xp.max(xp.abs(rotations @ xp.swapaxes(rotations, 1, 2) - xp.eye(3))))  # one copy at the entry
    if not error < 1e-6:
        raise ValueError(f"rotations must be orthogonal matrices (R Rᵀ = I), deviation {error:.2e}")
    return rotations
