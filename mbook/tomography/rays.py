"""The kernels of the ray-driven projector: ray samples, trilinear gather and scatter, under a memory budget.

:func:`mbook.tomography.projector.project` and
:func:`mbook.tomography.projector.backproject` check their inputs once;
these kernels do the arithmetic on what they checked (device arrays on the
volume's device), with no checks of their own, so that solvers which project
inside their own iterations (pose refinement, CGLS) call them directly:

- the voxel coordinates of every ray sample for a batch of rotations, the
  rays long enough to cross the whole box (:func:`half_length`);
- the forward projection, a gather by ``map_coordinates`` of order 1 on the
  zero-padded volume (:func:`project_kernel`), and its exact adjoint, a
  scatter of the same trilinear weights by ``bincount``
  (:func:`backproject_kernel`);
- blocks of work (whole rotations, or a few detector rows of one) sized by
  :func:`mbook.core.progress.plan_batches`.

The geometry (frames, detector pixels, units) is that of
:mod:`mbook.tomography.projector`.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.tomography import projector, rays
>>> rays.half_length((16, 16, 16))  # the half-diagonal 13.9 voxels, rounded up, + 1
15
>>> volume = backend.asarray(np.ones((4, 4, 4)))
>>> p = rays.project_kernel(volume, projector.tilt_rotations([0.0]), sampling=0.5, detector_gpts=(4, 4))
>>> backend.asnumpy(p)[0, 0].tolist()  # 4 voxels of 0.5 Å along each ray
[2.0, 2.0, 2.0, 2.0]
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, fusion, progress, scatter

#: Peak bytes per ray sample of the gather/scatter (coordinates, floors, fractions, one corner's index,
#: weight and gathered value, accumulators), for float64; the budget scales it by the itemsize.
_BYTES_PER_SAMPLE = 160


def half_length(shape) -> int:
    """Samples each side of the centre that cover the whole box (its half-diagonal, in voxels, + 1).

    A kernel: ``shape`` is a tuple of counts its caller checked (the volume's, or a plane's ``(nz, nx)``).
    """
    return int(math.ceil(0.5 * math.sqrt(sum(n * n for n in shape)))) + 1


def _float_dtype(array):
    xp = backend.get_array_module(array)
    return array.dtype if array.dtype in (np.float32, np.float64) else xp.float64


# ----------------------------------------------------------------------------- the ray samples
def _ray_points(rotations, shape, detector_gpts, xp, dtype, rows, offset=0):
    """Voxel coordinates ``(3, B, rows, nu, nt)`` of every ray sample for the rotations ``(B, 3, 3)`` and the
    detector rows ``rows = (first, stop)``, plus ``offset`` (1: in the volume padded by one voxel)."""
    nv, nu = detector_gpts
    half = half_length(shape)
    t = xp.arange(-half, half + 1, dtype=dtype)
    v = xp.arange(rows[0], rows[1], dtype=dtype) - nv // 2
    u = xp.arange(nu, dtype=dtype) - nu // 2
    r = rotations.astype(dtype)
    # object coordinate d = (R^T)[d] · (t, v, u) = R[0, d] t + R[1, d] v + R[2, d] u, one kernel per axis
    return [_ray_coordinate(r[:, 0, d, None, None, None], t[None, None, None, :], r[:, 1, d, None, None, None],
                            v[None, :, None, None], r[:, 2, d, None, None, None], u[None, None, :, None],
                            shape[d] // 2, offset) for d in range(3)]


@fusion.elementwise
def _ray_coordinate(xp, r_t, t, r_v, v, r_u, u, centre, offset):
    """``((R_t t + R_v v + R_u u) + centre) + offset``, broadcast over the ray samples (one kernel on a GPU)."""
    return r_t * t + r_v * v + r_u * u + centre + offset


@fusion.elementwise
def _floor_and_fraction(xp, point):
    """The lower corner's coordinate (as a float) and the fraction of the way to the next."""
    floor = xp.floor(point)
    return floor, point - floor


@fusion.elementwise
def _corner_index(xp, lz, ly, lx, nz, ny, nx, last_z, last_y, last_x, stride_z, stride_y):
    """Flat index of each sample's lowest corner in the volume framed by one voxel of zeros (lower corners
    clipped into the frame), and whether all its corners lie in the frame or the volume. ``last_* = n_* - 1``,
    made on the host: inside cupy.fuse ``n - 1`` of two Python ints runs in int8 (see mbook.core.fusion)."""
    valid = (lz >= -1) & (lz < nz) & (ly >= -1) & (ly < ny) & (lx >= -1) & (lx < nx)
    # min(max()) for clip: plain ufuncs, which every CuPy fuses
    base = ((xp.minimum(xp.maximum(lz, -1), last_z) + 1) * stride_z + (xp.minimum(xp.maximum(ly, -1), last_y) + 1)
            * stride_y + (xp.minimum(xp.maximum(lx, -1), last_x) + 1))
    return base, valid


@fusion.elementwise
def _masked_values(xp, valid, projections, sampling):
    """Each sample's share ``p · sampling`` of its ray's projection, 0 where its corners leave the frame."""
    return xp.where(valid, projections * sampling, 0)


@fusion.elementwise
def _corner_weights(xp, values, wz, fy, fx):
    """The four trilinear weights ``values wz wy wx`` of one z corner (y, x each lower then upper)."""
    weights = []
    for wy in (1 - fy, fy):
        weight_zy = values * wz * wy
        for wx in (1 - fx, fx):
            weights.append(weight_zy * wx)
    return tuple(weights)


def _blocks(n_rotations, shape, detector_gpts, itemsize, batch_size):
    """Blocks of work ``(first rotation, stop, first detector row, stop)`` under the memory budget.

    The unit of work is one detector row of one rotation; blocks hold whole rotations when one
    fits (``batch_size`` of them at most), else a few rows of one rotation (a 256³ volume: one
    rotation's rays alone need ~2 GiB).
    """
    nv, nu = detector_gpts
    row_bytes = nu * (2 * half_length(shape) + 1) * _BYTES_PER_SAMPLE * itemsize // 8
    rows = progress.plan_batches(n_items=n_rotations * nv, bytes_per_item=row_bytes,
                                 fixed_bytes=2 * math.prod(shape) * itemsize)
    if rows >= nv:
        per_block = rows // nv if batch_size is None else min(batch_size, rows // nv)
        for start in range(0, n_rotations, per_block):
            yield start, min(start + per_block, n_rotations), 0, nv
    else:
        for k in range(n_rotations):
            for first in range(0, nv, rows):
                yield k, k + 1, first, min(first + rows, nv)


# ----------------------------------------------------------------------------- the operator pair's kernels
def project_kernel(volume, rotations, *, sampling: float, detector_gpts, batch_size: int | None = None):
    """:func:`mbook.tomography.projector.project` on inputs checked already: no checks, no copy to the host.

    For solvers that project inside their own iterations (pose refinement, CGLS): they check the volume
    and rotations once on entry; :func:`~mbook.tomography.projector.project` would check them again, with
    a copy to the host, on every call. ``volume`` and ``rotations`` (float64, orthogonal) must be device
    arrays, ``sampling`` a number > 0 and ``detector_gpts`` a pair of counts; parameters and result as
    :func:`~mbook.tomography.projector.project`.
    """
    xp = backend.get_array_module(volume)
    dtype = _float_dtype(volume)
    volume = volume.astype(dtype, copy=False)
    shape = tuple(volume.shape[-3:])
    detector_gpts = tuple(detector_gpts)
    n = rotations.shape[0]
    # The gather is SciPy's (or CuPy's) map_coordinates of order 1 on the volume padded with one layer
    # of zeros, in mode "constant": exactly the zero-padded trilinear interpolation that backproject
    # scatters (the adjoint tests check it), and several times faster than gathering 8 corners by hand.
    ndimage = backend.scipy_module("ndimage", volume)
    spatial = ((0, 0),) * (volume.ndim - 3) + ((1, 1),) * 3
    padded = xp.pad(volume, spatial)
    out = xp.empty((n,) + tuple(detector_gpts), dtype=dtype)
    for start, stop, first, last in _blocks(n, shape, detector_gpts, np.dtype(dtype).itemsize, batch_size):
        points = _ray_points(rotations[start:stop], shape, detector_gpts, xp, dtype, (first, last), offset=1)
        if volume.ndim == 4:  # each rotation reads its own volume: an exact integer coordinate
            points.insert(0, xp.broadcast_to(xp.arange(start, stop, dtype=dtype)[:, None, None, None],
                                             points[0].shape))
        coordinates = xp.stack([p.reshape(-1) for p in points])
        values = ndimage.map_coordinates(padded, coordinates, order=1, mode="constant", cval=0.0)
        out[start:stop, first:last] = values.reshape(points[-1].shape).sum(axis=-1) * sampling
    return out


def backproject_kernel(projections, rotations, *, shape, sampling: float, separate: bool = False,
                       batch_size: int | None = None):
    """:func:`mbook.tomography.projector.backproject` on inputs checked already: no checks, no copy to the host
    (see :func:`project_kernel`); parameters and result as :func:`~mbook.tomography.projector.backproject`."""
    xp = backend.get_array_module(projections)
    dtype = _float_dtype(projections)
    projections = projections.astype(dtype, copy=False)
    shape = tuple(shape)
    n, detector_gpts = projections.shape[0], tuple(projections.shape[1:])
    # The scatter goes into the volume framed by one voxel of zeros: a sample whose corners all lie
    # in the frame or the volume has all 8 at fixed offsets from its lowest corner, so each corner is
    # one bincount of the same index array, added in at its offset, and a sample further out is
    # dropped with one mask (not a clip and a mask per corner and axis: ~2x faster on the CPU).
    framed = tuple(size + 2 for size in shape)
    strides = (framed[1] * framed[2], framed[2], 1)
    frame_voxels = math.prod(framed)
    length = n * frame_voxels if separate else frame_voxels
    out = xp.zeros(length, dtype=xp.float64)  # the scatter-adds sum in float64
    for start, stop, first, last in _blocks(n, shape, detector_gpts, np.dtype(dtype).itemsize, batch_size):
        points = _ray_points(rotations[start:stop], shape, detector_gpts, xp, dtype, (first, last))
        lowers, fractions = [], []
        for point in points:
            floor, fraction = _floor_and_fraction(point)
            lowers.append(floor.astype(xp.int64))
            fractions.append(fraction.reshape(-1))
        base, valid = _corner_index(*lowers, *shape, *(n - 1 for n in shape), *strides[:2])
        if separate:
            base = base + (xp.arange(start, stop, dtype=xp.int64) * frame_voxels)[:, None, None, None]
        base = base.reshape(-1)
        values = _masked_values(valid, projections[start:stop, first:last, :, None], sampling).reshape(-1)
        fz, fy, fx = fractions
        for dz, wz in ((0, 1 - fz), (1, fz)):
            for corner, weight in enumerate(_corner_weights(values, wz, fy, fx)):  # (y, x): (0, 0), (0, 1), ...
                offset = dz * strides[0] + (corner // 2) * strides[1] + corner % 2
                scatter.add(out[offset:], base, weight, drop_outside=True)
    return out.reshape(((n,) if separate else ()) + framed)[..., 1:-1, 1:-1, 1:-1].astype(dtype)  # a copy
