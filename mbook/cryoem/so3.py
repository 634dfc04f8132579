"""Rotations in SO(3): quaternions, Haar-uniform sampling, angles and axes.

Cryo-EM particles land in the ice at uniformly random orientations: draws
from the Haar measure of the rotation group SO(3). A standard normal vector
in R⁴, normalised, is uniform on the sphere S³ of unit quaternions, and the
quaternion-to-matrix map (a double cover) carries that measure to the Haar
measure (Shoemake 1992). Two checkable consequences: the rotation angle θ has
density ``(1 - cos θ) / π`` on [0, π], and the image of any fixed axis is
uniform on the sphere. Matrices act on column vectors (``r' = R r``).

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import so3
>>> r = so3.random_rotations(1000, seed=0)
>>> bool(np.allclose(r @ r.transpose(0, 2, 1), np.eye(3)))
True
>>> round(float(so3.rotation_angles(so3.axis_rotation([0, 0, 1], 0.5)[None])[0]), 6)
0.5
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def quaternions_to_matrices(quaternions):
    """Rotation matrices of unit quaternions ``(w, x, y, z)``.

    Parameters
    ----------
    quaternions : (n, 4) array_like
        Normalised internally.

    Returns
    -------
    (n, 3, 3) ndarray
    """
    q = np.asarray(quaternions, dtype=float)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


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

    Returns
    -------
    (n, 3, 3) ndarray, float64
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return quaternions_to_matrices(np.random.default_rng(seed).standard_normal((n, 4)))


def rotation_angles(rotations):
    """Rotation angle of each matrix, ``θ = arccos((tr R - 1) / 2)`` [rad].

    Parameters
    ----------
    rotations : (n, 3, 3) array_like

    Returns
    -------
    (n,) ndarray, in [0, π]
    """
    trace = np.trace(np.asarray(rotations, dtype=float), axis1=-2, axis2=-1)
    return np.arccos(np.clip((trace - 1) / 2, -1, 1))


def axis_rotation(axis, angle):
    """Rotation by ``angle`` [rad] about ``axis`` (Rodrigues' formula); (3, 3) ndarray."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def check_rotations(rotations):
    """Validate (n, 3, 3) rotation matrices (a single (3, 3) is promoted); raise ValueError otherwise."""
    rotations = np.asarray(rotations, dtype=float)
    if rotations.ndim == 2:
        rotations = rotations[None]
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be (n, 3, 3) matrices, got shape {rotations.shape}")
    error = np.max(np.abs(rotations @ np.swapaxes(rotations, 1, 2) - np.eye(3)))
    if not error < 1e-6:
        raise ValueError(f"rotations must be orthogonal matrices (R Rᵀ = I), deviation {error:.2e}")
    return rotations
