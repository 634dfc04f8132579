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

from mbook.core import backend, checks, progress, scatter
from mbook.geometry.so3 import check_rotations


def check_volume(volume, name="volume"):
    """Validate a real cubic volume ``(n, n, n)`` of finite values; return it on the selected device."""
    volume = checks.check_array(volume, name)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"{name} must be a cubic (n, n, n) array, got shape {volume.shape}")
    return volume


#: Peak bytes per rotation and voxel of :func:`project_volume`'s gather (and :func:`backproject`'s scatter): the rotated points, their floor and fraction (3 x 3 float64),
#: one corner's index, weight and temporaries (about 6 x 8 bytes) and the sum or the values scattered (8).
GATHER_BYTES_PER_VOXEL = 8 * (9 + 6 + 2)
# On the CPU, batches of a few 64³ rotations: larger ones spend their time faulting in fresh memory
# (100 rotations of 64³: 6.5 s in batches of 5, 14.8 s in batches of 58).
_CPU_BATCH_BYTES = 2**28


def _corners(rotations, n, xp):
    """Yield, for each of the 8 corners of the trilinear cell, the flat indices (b, n³) and weights
    (b, n³) of the samples at Rᵀ p, p on the centred grid (weight 0 outside the volume).

    ``rotations`` is a batch (b, 3, 3): every rotation of the batch in one pass over the arrays; one
    corner at a time, so that the 8 corners' arrays are never held together.
    """
    c = xp.arange(n, dtype=xp.float64) - n // 2
    px, py, pz = xp.meshgrid(c, c, c, indexing="ij")
    points = xp.stack([px.ravel(), py.ravel(), pz.ravel()])  # (3, n³) in voxels
    source = xp.matmul(xp.swapaxes(rotations, -1, -2), points) + n // 2  # Rᵀ p, in index units: (b, 3, n³)
    base = xp.floor(source)
    frac = source - base
    base = base.astype(xp.int64)
    for corner in range(8):  # the eight corners of the cell around each point: a fixed count, not items
        offset = [(corner >> axis) & 1 for axis in range(3)]
        idx = [base[:, a] + offset[a] for a in range(3)]
        w = [frac[:, a] if offset[a] else 1 - frac[:, a] for a in range(3)]
        inside = (idx[0] >= 0) & (idx[0] < n) & (idx[1] >= 0) & (idx[1] < n) & (idx[2] >= 0) & (idx[2] < n)
        flat = (idx[0] * n + idx[1]) * n + idx[2]
        yield xp.where(inside, flat, 0), xp.where(inside, w[0] * w[1] * w[2], 0.0)


def _rotation_batch(n_rotations, n, budget=None):
    """Rotations gathered at once under ``budget`` (default :func:`mbook.core.progress.memory_budget`;
    MemoryError with the numbers if one does not fit); on the CPU at most :data:`_CPU_BATCH_BYTES`."""
    batch = progress.plan_batches(n_items=n_rotations, bytes_per_item=GATHER_BYTES_PER_VOXEL * n**3, budget=budget)
    if not backend.gpu_code_path():
        batch = max(1, min(batch, _CPU_BATCH_BYTES // (GATHER_BYTES_PER_VOXEL * n**3)))
    return batch


def project_volume(volume, rotations, *, sampling, budget=None):
    """Projections of a voxel volume at given rotations (trilinear interpolation).

    ``P_R(x, y) = Δz Σ_z V(Rᵀ (x, y, z))``: the rotated volume is sampled by
    trilinear interpolation at the grid points and summed along z. Linear in
    the volume; :func:`backproject` is its exact adjoint. The rotations are an
    array axis: as many as the memory budget allows are gathered in one pass
    (:data:`GATHER_BYTES_PER_VOXEL`, 136 bytes per voxel and rotation), the
    rest in further batches.

    Parameters
    ----------
    volume : (n, n, n) array_like
        Density [weight/Å³], centred at index ``n // 2``.
    rotations : (b, 3, 3) array_like
    sampling : float
        Voxel size [Å].
    budget : int, optional
        Memory budget for the gathers [bytes]; default
        :func:`mbook.core.progress.memory_budget`.

    Returns
    -------
    (b, n, n) ndarray
        [weight/Å²], on the selected device.

    Raises
    ------
    ValueError
        For a non-cubic volume, non-orthogonal rotations or sampling <= 0.
    MemoryError
        When one rotation's gather does not fit the budget.
    """
    volume = check_volume(volume)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    rotations = check_rotations(rotations)
    budget = None if budget is None else checks.check_count(budget, "budget")
    n = volume.shape[0]
    batch = _rotation_batch(rotations.shape[0], n, budget)
    xp = backend.get_array_module(volume)
    flat = volume.ravel()
    out = xp.empty((rotations.shape[0], n, n), dtype=xp.result_type(flat.dtype, xp.float64))
    for start in range(0, rotations.shape[0], batch):
        part = rotations[start:start + batch]
        samples = 0.0
        for indices, weights in _corners(part, n, xp):
            samples = samples + weights * flat[indices]
        out[start:start + len(part)] = h * samples.reshape(-1, n, n, n).sum(axis=3)
    return out


def backproject(images, rotations, *, sampling, budget=None):
    """Adjoint of :func:`project_volume`: smear each image along z and rotate back.

    The images are an array axis, in batches under the memory budget as in
    :func:`project_volume`; each batch is scattered with one ``bincount``
    per corner of the interpolation cell.

    Parameters
    ----------
    images : (b, n, n) array_like
    rotations : (b, 3, 3) array_like
    sampling : float
        [Å].
    budget : int, optional
        Memory budget for the scatters [bytes]; default
        :func:`mbook.core.progress.memory_budget`.

    Returns
    -------
    (n, n, n) ndarray
        Sum of the back-projections, on the selected device.

    Raises
    ------
    MemoryError
        When one image's scatter does not fit the budget.
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
    budget = None if budget is None else checks.check_count(budget, "budget")
    n = images.shape[1]
    batch = _rotation_batch(len(rotations), n, budget)
    xp = backend.get_array_module(images)
    parts = [images.real, images.imag] if xp.iscomplexobj(images) else [images]
    totals = [xp.zeros(n**3) for _ in parts]
    for start in range(0, len(rotations), batch):
        stop = min(start + batch, len(rotations))
        values = [xp.broadcast_to((h * part[start:stop])[:, :, :, None], (stop - start, n, n, n)).reshape(
            stop - start, n**3) for part in parts]
        for indices, weights in _corners(rotations[start:stop], n, xp):
            for total, value in zip(totals, values):
                scatter.add(total, indices.ravel(), (weights * value).ravel())
    total = totals[0] if len(totals) == 1 else totals[0] + 1j * totals[1]
    return total.reshape(n, n, n)
