"""Projection of voxel volumes by trilinear interpolation, and its exact adjoint.

``P_R(x, y) = Δz Σ_z V(Rᵀ (x, y, z))``: the volume, rotated by sampling it
trilinearly at ``Rᵀ p`` for every grid point p (origin at index ``n // 2``),
summed along z. :func:`backproject` is its adjoint (checked by the shared
dot-product test). Gaussian-atom particles have exact projections instead
(:func:`mbook.cryoem.particles.project_atoms`); these operators are what a
reconstruction from voxels uses. Inputs move to the selected device; results
stay there.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.cryoem import voxels
>>> volume = np.zeros((8, 8, 8)); volume[4, 4, 4] = 1.0
>>> image = backend.asnumpy(voxels.project_volume(volume, np.eye(3), sampling=2.0))
>>> float(image.sum()), image.shape
(2.0, (1, 8, 8))
"""

from __future__ import annotations

from mbook.core import backend, checks
from mbook.geometry.so3 import check_rotations


def check_volume(volume, name="volume"):
    """Validate a real cubic volume ``(n, n, n)`` of finite values; return it on the selected device."""
    volume = checks.check_array(volume, name)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"{name} must be a cubic (n, n, n) array, got shape {volume.shape}")
    return volume


def _trilinear(rotation, n, xp):
    """Indices (8, n³) and weights (8, n³) of the trilinear samples at Rᵀ p, p on the centred grid."""
    c = xp.arange(n, dtype=xp.float64) - n // 2
    px, py, pz = xp.meshgrid(c, c, c, indexing="ij")
    points = xp.stack([px.ravel(), py.ravel(), pz.ravel()])  # (3, n³) in voxels
    source = rotation.T @ points + n // 2  # Rᵀ p, in index units
    base = xp.floor(source)
    frac = source - base
    base = base.astype(xp.int64)
    indices, weights = [], []
    for corner in range(8):
        offset = [(corner >> axis) & 1 for axis in range(3)]
        idx = xp.stack([base[a] + offset[a] for a in range(3)])
        w = xp.prod(xp.stack([frac[a] if offset[a] else 1 - frac[a] for a in range(3)]), axis=0)
        inside = xp.all((idx >= 0) & (idx < n), axis=0)
        flat = (idx[0] * n + idx[1]) * n + idx[2]
        indices.append(xp.where(inside, flat, 0))
        weights.append(xp.where(inside, w, 0.0))
    return xp.stack(indices), xp.stack(weights)


def project_volume(volume, rotations, *, sampling):
    """Projections of a voxel volume at given rotations (trilinear interpolation).

    ``P_R(x, y) = Δz Σ_z V(Rᵀ (x, y, z))``: the rotated volume is sampled by
    trilinear interpolation at the grid points and summed along z. Linear in
    the volume; :func:`backproject` is its exact adjoint. One rotation at a
    time: each is a gather over all n³ voxels, large enough to keep a GPU busy.

    Parameters
    ----------
    volume : (n, n, n) array_like
        Density [weight/Å³], centred at index ``n // 2``.
    rotations : (b, 3, 3) array_like
    sampling : float
        Voxel size [Å].

    Returns
    -------
    (b, n, n) ndarray
        [weight/Å²], on the selected device.

    Raises
    ------
    ValueError
        For a non-cubic volume, non-orthogonal rotations or sampling <= 0.
    """
    volume = check_volume(volume)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    rotations = check_rotations(rotations)
    xp = backend.get_array_module(volume)
    n = volume.shape[0]
    flat = volume.ravel()
    out = []
    for rotation in rotations:
        indices, weights = _trilinear(rotation, n, xp)
        samples = xp.sum(weights * flat[indices], axis=0).reshape(n, n, n)
        out.append(h * samples.sum(axis=2))
    return xp.stack(out)


def backproject(images, rotations, *, sampling):
    """Adjoint of :func:`project_volume`: smear each image along z and rotate back.

    Parameters
    ----------
    images : (b, n, n) array_like
    rotations : (b, 3, 3) array_like
    sampling : float
        [Å].

    Returns
    -------
    (n, n, n) ndarray
        Sum of the back-projections, on the selected device.
    """
    images = checks.check_array(images, "images")
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be a (b, n, n) stack of square images, got shape {images.shape}")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    rotations = check_rotations(rotations)
    if len(rotations) != len(images):
        raise ValueError(f"got {len(images)} images but {len(rotations)} rotations")
    xp = backend.get_array_module(images)
    n = images.shape[1]
    parts = [images.real, images.imag] if xp.iscomplexobj(images) else [images]
    totals = [xp.zeros(n**3) for _ in parts]
    for b, rotation in enumerate(rotations):
        indices, weights = _trilinear(rotation, n, xp)
        for total, part in zip(totals, parts):
            values = xp.broadcast_to((h * part[b])[:, :, None], (n, n, n)).ravel()
            total += xp.bincount(indices.ravel(), (weights * values[None]).ravel(), minlength=n**3)
    total = totals[0] if len(totals) == 1 else totals[0] + 1j * totals[1]
    return total.reshape(n, n, n)
