"""Parallel-beam projection of a 3D volume for any rotations, and its exact adjoint.

Geometry
--------
A volume ``f`` of shape ``(nz, ny, nx)`` with cubic voxels of edge ``sampling``
[Å] has its voxel ``(i, j, k)`` at the position ``((i - nz//2), (j - ny//2),
(k - nx//2)) * sampling`` in its own frame (the FFT-centred convention). A
rotation ``R`` (a 3x3 matrix acting on ``(z, y, x)`` column vectors) takes the
object's frame to the laboratory's, whose ``z`` axis is the beam. The
projection for ``R`` is the line integral along the beam,

.. math::

    p_R(v, u) = \\sum_{m=-M}^{M} \\Delta t \\; f_{\\rm lin}\\big(R^T (m \\Delta t, v, u)\\big),
    \\qquad \\Delta t = \\text{sampling},

where ``f_lin`` is the trilinear interpolation of the voxels (zero outside the
volume) and ``M`` is large enough for every ray to cross the whole volume.
Detector pixel ``(a, b)`` of a ``(nv, nu)`` detector sits at ``v = (a - nv//2)
sampling``, ``u = (b - nu//2) sampling``. Projections carry the unit of the
volume times Å: a potential in V gives projected potentials in V·Å.

This is a ray-driven projector: each sample of each ray gathers from the 8
voxels around it with trilinear weights (``map_coordinates`` of order 1), and
:func:`backproject` scatters the same weights back (with ``bincount``), so
the pair is adjoint to rounding,
``<P f, p> = <f, P* p>``, for any set of rotations. Work is batched over
rotations on the device, with batches sized by
:func:`mbook.core.progress.plan_batches`.

For a tilt series about the ``y`` axis (:func:`tilt_rotations`), rays stay in
planes of constant ``y``, and the same discrete operator is a small matrix per
tilt angle acting on every ``(z, x)`` plane at once: :class:`TiltProjector`
stores those matrices and applies the projection and its adjoint as batched
matrix products (BLAS on the CPU, cuBLAS on a GPU), many times faster than the
gather; iterative reconstructions use it.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.tomography import projector
>>> z, y, x = np.mgrid[-8:8, -8:8, -8:8]
>>> volume = np.exp(-(z**2 + y**2 + x**2) / 8.0)  # a smooth blob, 2 voxels wide
>>> rotations = projector.tilt_rotations([-30.0, 0.0, 30.0])
>>> p = projector.project(volume, rotations, sampling=0.5)
>>> p.shape
(3, 16, 16)
>>> [round(float(s / (0.5 * volume.sum())), 2) for s in backend.asnumpy(p).sum(axis=(1, 2))]  # mass kept to 0.1 %
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, progress

AXES = ("y", "x")
#: Float64 weights accumulated at once while building a TiltProjector's matrices [bytes].
BUILD_CHUNK_BYTES = 32 * 2**20
#: Peak bytes per ray sample of the gather/scatter (coordinates, floors, fractions, one corner's index,
#: weight and gathered value, accumulators), for float64; the budget scales it by the itemsize.
_BYTES_PER_SAMPLE = 160


# ----------------------------------------------------------------------------- rotations
def tilt_rotations(angles, *, axis: str = "y"):
    """Rotation matrices of a single-axis tilt series.

    Parameters
    ----------
    angles : (N,) array_like
        Tilt angles [degrees], any order, spanning less than 180° (a parallel
        beam sees ``θ`` and ``θ + 180°`` as mirror images: such a series is
        redundant, and usually a units mistake).
    axis : {"y", "x"}
        The tilt axis, an axis of the ``(z, y, x)`` volume.

    Returns
    -------
    (N, 3, 3) ndarray, float64
        ``R`` per angle, acting on ``(z, y, x)`` vectors (object to laboratory
        frame), on the selected device. For ``axis="y"``:
        ``R = [[cos θ, 0, -sin θ], [0, 1, 0], [sin θ, 0, cos θ]]``.

    Examples
    --------
    >>> from mbook.core import backend
    >>> r = backend.asnumpy(tilt_rotations([90.0]))
    >>> r.round(6).tolist()[0]
    [[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """
    theta = _check_angles(angles)
    checks.check_choice(axis, "axis", AXES)
    c, s = np.cos(np.radians(theta)), np.sin(np.radians(theta))
    zero, one = np.zeros_like(c), np.ones_like(c)
    if axis == "y":  # rotation in the (z, x) plane
        rows = [[c, zero, -s], [zero, one, zero], [s, zero, c]]
    else:  # rotation in the (z, y) plane
        rows = [[c, s, zero], [-s, c, zero], [zero, zero, one]]
    rotations = np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)
    return backend.asarray(rotations)


def _check_angles(angles) -> np.ndarray:
    """Tilt angles as a host float64 array: 1D, finite, spanning < 180°. Angles are parameters."""
    theta = backend.asnumpy(checks.check_array(angles, "angles", ndim=1, real=True)).astype(np.float64)
    span = float(theta.max() - theta.min())
    if span >= 180.0:
        raise ValueError(f"angles must span less than 180 degrees (a parallel-beam tilt range), "
                         f"got {theta.min():g} to {theta.max():g} (span {span:g} degrees)")
    return theta


def check_rotations(rotations, name: str = "rotations"):
    """Object-to-laboratory rotations ``(N, 3, 3)`` as float64 on the selected device, orthogonal with
    determinant +1: :func:`mbook.core.checks.check_rotations`."""
    return checks.check_rotations(rotations, name)


def _half_length(shape) -> int:
    """Samples each side of the centre that cover the whole box (its half-diagonal, in voxels, + 1)."""
    return int(math.ceil(0.5 * math.sqrt(sum(n * n for n in shape)))) + 1


def _float_dtype(array):
    xp = backend.get_array_module(array)
    return array.dtype if array.dtype in (np.float32, np.float64) else xp.float64


# ----------------------------------------------------------------------------- the ray samples
def _ray_points(rotations, shape, detector_gpts, xp, dtype, rows):
    """Voxel coordinates ``(3, B, rows, nu, nt)`` of every ray sample for the rotations ``(B, 3, 3)`` and the
    detector rows ``rows = (first, stop)``."""
    nv, nu = detector_gpts
    half = _half_length(shape)
    t = xp.arange(-half, half + 1, dtype=dtype)
    v = xp.arange(rows[0], rows[1], dtype=dtype) - nv // 2
    u = xp.arange(nu, dtype=dtype) - nu // 2
    r = rotations.astype(dtype)
    points = []
    for d in range(3):  # object coordinate d = (R^T)[d] · (t, v, u) = R[0, d] t + R[1, d] v + R[2, d] u
        coordinate = (r[:, 0, d, None, None, None] * t[None, None, None, :]
                      + r[:, 1, d, None, None, None] * v[None, :, None, None]
                      + r[:, 2, d, None, None, None] * u[None, None, :, None])
        points.append(coordinate + shape[d] // 2)
    return points


def _corners(points, shape, xp):
    """The 8 trilinear corners: yields (flat index, weight) with out-of-volume corners at weight 0."""
    per_axis = []
    for point, n in zip(points, shape):
        floor = xp.floor(point)
        fraction = point - floor
        lower = floor.astype(xp.int64)
        pair = []
        for step, weight in ((0, 1 - fraction), (1, fraction)):
            position = lower + step
            inside = (position >= 0) & (position < n)
            pair.append((xp.clip(position, 0, n - 1), xp.where(inside, weight, 0)))
        per_axis.append(pair)
    (z_pairs, y_pairs, x_pairs), (_, ny, nx) = per_axis, shape
    for iz, wz in z_pairs:
        for iy, wy in y_pairs:
            index_zy, weight_zy = (iz * ny + iy) * nx, wz * wy
            for ix, wx in x_pairs:
                yield index_zy + ix, weight_zy * wx


def _blocks(n_rotations, shape, detector_gpts, itemsize, batch_size):
    """Blocks of work ``(first rotation, stop, first detector row, stop)`` under the memory budget.

    The unit of work is one detector row of one rotation; blocks hold whole rotations when one
    fits (``batch_size`` of them at most), else a few rows of one rotation (a 256³ volume: one
    rotation's rays alone need ~2 GiB).
    """
    nv, nu = detector_gpts
    row_bytes = nu * (2 * _half_length(shape) + 1) * _BYTES_PER_SAMPLE * itemsize // 8
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


# ----------------------------------------------------------------------------- the operator pair
def project(volume, rotations, *, sampling: float = 1.0, detector_gpts=None, batch_size: int | None = None):
    """Parallel-beam projections of a volume for a batch of rotations (ray-driven, trilinear).

    Parameters
    ----------
    volume : (nz, ny, nx) or (N, nz, ny, nx) array_like, real
        The object [any unit, e.g. V]; with a leading axis, one volume per
        rotation (a specimen that changes during the acquisition).
    rotations : (N, 3, 3) array_like
        Orthogonal matrices acting on ``(z, y, x)`` vectors, object to
        laboratory frame (e.g. :func:`tilt_rotations`); the beam is the
        laboratory ``z`` axis.
    sampling : float
        Voxel edge and detector pixel size, also the step along the rays [Å].
    detector_gpts : (2,) int, optional
        Detector pixels ``(nv, nu)``; default ``(ny, nx)``.
    batch_size : int, optional
        Rotations per batch at most; batches are the largest that fit the
        memory budget (:func:`mbook.core.progress.plan_batches`), down to a
        few detector rows of one rotation for large volumes.

    Returns
    -------
    (N, nv, nu) ndarray
        Projections [unit of volume × Å], float32 for float32 volumes, else
        float64, on the selected device.
    """
    volume = checks.check_array(volume, "volume", real=True)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be (nz, ny, nx) or (N, nz, ny, nx), got shape {volume.shape}")
    rotations = check_rotations(rotations)
    sampling = checks.check_positive_number(sampling, "sampling")
    shape = tuple(volume.shape[-3:])
    detector_gpts = shape[1:] if detector_gpts is None else checks.check_gpts(detector_gpts, 2, name="detector_gpts")
    if volume.ndim == 4 and volume.shape[0] != rotations.shape[0]:
        raise ValueError(f"volume holds {volume.shape[0]} volumes but rotations {rotations.shape[0]} rotations: "
                         f"give one volume per rotation, or one volume")
    if batch_size is not None:
        batch_size = checks.check_count(batch_size, "batch_size")
    return project_kernel(volume, rotations, sampling=sampling, detector_gpts=detector_gpts, batch_size=batch_size)


def project_kernel(volume, rotations, *, sampling: float, detector_gpts, batch_size: int | None = None):
    """:func:`project` on inputs checked already: no checks, no copy to the host.

    For solvers that project inside their own iterations (pose refinement, CGLS): they check the volume
    and rotations once on entry; :func:`project` would check them again, with a copy to the host, on
    every call. ``volume`` and ``rotations`` (float64, orthogonal) must be device arrays, ``sampling`` a
    number > 0 and ``detector_gpts`` a pair of counts; parameters and result as :func:`project`.
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
        points = [p + 1 for p in _ray_points(rotations[start:stop], shape, detector_gpts, xp, dtype, (first, last))]
        if volume.ndim == 4:  # each rotation reads its own volume: an exact integer coordinate
            points.insert(0, xp.broadcast_to(xp.arange(start, stop, dtype=dtype)[:, None, None, None],
                                             points[0].shape))
        coordinates = xp.stack([p.reshape(-1) for p in points])
        values = ndimage.map_coordinates(padded, coordinates, order=1, mode="constant", cval=0.0)
        out[start:stop, first:last] = values.reshape(points[-1].shape).sum(axis=-1) * sampling
    return out


def backproject(projections, rotations, *, shape, sampling: float = 1.0, separate: bool = False,
                batch_size: int | None = None):
    """The exact adjoint of :func:`project`: smear each projection back along its rays.

    Parameters
    ----------
    projections : (N, nv, nu) array_like, real
        One image per rotation [any unit].
    rotations : (N, 3, 3) array_like
        As for :func:`project`.
    shape : (3,) int
        Volume shape ``(nz, ny, nx)``.
    sampling : float
        Voxel edge [Å], as for :func:`project`.
    separate : bool
        Return one volume per projection, ``(N, nz, ny, nx)`` (the adjoint of
        :func:`project` with one volume per rotation), instead of their sum.
    batch_size : int, optional
        Rotations per batch; default from the memory budget.

    Returns
    -------
    (nz, ny, nx) or (N, nz, ny, nx) ndarray
        ``P* p`` [unit of projections × Å], on the selected device, so that
        ``<project(f), p> = <f, backproject(p)>`` to rounding.
    """
    projections = checks.check_array(projections, "projections", ndim=3, real=True)
    rotations = check_rotations(rotations)
    shape = checks.check_gpts(shape, 3, name="shape (the volume's gpts)")
    sampling = checks.check_positive_number(sampling, "sampling")
    if not isinstance(separate, bool):
        raise TypeError(f"separate must be True or False, got {separate!r}")
    if projections.shape[0] != rotations.shape[0]:
        raise ValueError(f"projections holds {projections.shape[0]} images but rotations {rotations.shape[0]} "
                         f"rotations: one rotation per projection")
    if batch_size is not None:
        batch_size = checks.check_count(batch_size, "batch_size")
    return backproject_kernel(projections, rotations, shape=shape, sampling=sampling, separate=separate,
                              batch_size=batch_size)


def backproject_kernel(projections, rotations, *, shape, sampling: float, separate: bool = False,
                       batch_size: int | None = None):
    """:func:`backproject` on inputs checked already: no checks, no copy to the host (see
    :func:`project_kernel`); parameters and result as :func:`backproject`."""
    xp = backend.get_array_module(projections)
    dtype = _float_dtype(projections)
    projections = projections.astype(dtype, copy=False)
    shape = tuple(shape)
    n, detector_gpts = projections.shape[0], tuple(projections.shape[1:])
    nvox = math.prod(shape)
    length = n * nvox if separate else nvox
    out = xp.zeros(length, dtype=xp.float64)  # bincount sums in float64
    for start, stop, first, last in _blocks(n, shape, detector_gpts, np.dtype(dtype).itemsize, batch_size):
        points = _ray_points(rotations[start:stop], shape, detector_gpts, xp, dtype, (first, last))
        values = projections[start:stop, first:last, :, None] * sampling
        offset = 0
        if separate:
            offset = (xp.arange(start, stop, dtype=xp.int64) * nvox)[:, None, None, None]
        for index, weight in _corners(points, shape, xp):
            out += xp.bincount((index + offset).reshape(-1), weights=(weight * values).reshape(-1),
                               minlength=length)
    out = out.astype(dtype, copy=False)
    return out.reshape(((n,) if separate else ()) + tuple(shape))


# ----------------------------------------------------------------------------- single-axis tilt series
class TiltProjector:
    """The projector of :func:`project` for a tilt series about ``y``, as matrices: fast and exact.

    About the ``y`` axis every ray stays in one ``(z, x)`` plane and samples
    it at integer ``y``, so the trilinear projector reduces to a bilinear one
    per plane: a matrix ``A_k`` of shape ``(nu, nz nx)`` per angle, the same
    for every ``y``. The projections are then batched matrix products and the
    adjoint uses the transposed matrices: ``<A f, p> = <f, A* p>`` to rounding,
    and ``A f`` equals ``project(f, tilt_rotations(angles), ...)``.

    The matrices take ``N nx nz nx`` numbers (35 MB in float64 for 40 angles
    at 48³, 1 GB in float32 for 120 angles at 128³); the constructor checks
    them against the memory budget and refuses with the numbers
    (:func:`project` batches instead).

    Parameters
    ----------
    shape : (3,) int
        Volume shape ``(nz, ny, nx)``; the detector is ``(ny, nx)``.
    angles : (N,) array_like
        Tilt angles about ``y`` [degrees], spanning less than 180°.
    sampling : float
        Voxel edge [Å].
    dtype : {numpy.float32, numpy.float64}
        Precision of the matrices and of the results.

    Attributes
    ----------
    shape : tuple of int
    angles : (N,) numpy.ndarray
        The angles [degrees], on the host (parameters).
    rotations : (N, 3, 3) ndarray
        :func:`tilt_rotations` of the angles, on the selected device.
    matrices : (N, nx, nz nx) ndarray
        ``A_k`` [Å], on the selected device.

    Examples
    --------
    >>> import numpy as np
    >>> from mbook.core import backend
    >>> volume = np.random.default_rng(0).random((6, 5, 6))
    >>> tilt = TiltProjector(volume.shape, [-40.0, 10.0, 55.0], sampling=0.5)
    >>> fast = tilt.forward(volume)
    >>> slow = project(volume, tilt.rotations, sampling=0.5)
    >>> float(abs(backend.asnumpy(fast) - backend.asnumpy(slow)).max()) < 1e-12
    True
    """

    def __init__(self, shape, angles, *, sampling: float = 1.0, dtype=np.float64):
        self.shape = checks.check_gpts(shape, 3)
        self.angles = _check_angles(angles)
        self.sampling = checks.check_positive_number(sampling, "sampling")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        nz, ny, nx = self.shape
        n = self.angles.size
        bytes_per_angle = nx * nz * nx * self.dtype.itemsize
        fits = progress.plan_batches(n_items=n, bytes_per_item=bytes_per_angle, fixed_bytes=0)
        if fits < n:
            raise MemoryError(f"TiltProjector needs {n * bytes_per_angle / 2**20:.1f} MiB of matrices for {n} "
                              f"angles at shape {self.shape}, over the budget of {progress.memory_budget() / 2**20:.1f}"
                              f" MiB; raise MBOOK_MEMORY_GB or use project/backproject, which batch")
        self.rotations = tilt_rotations(self.angles)
        self.matrices = self._build(backend.get_array_module(self.rotations))

    def _build(self, xp):
        """Accumulate the bilinear weights of every ray sample into the dense matrices, on the device.

        In chunks of angles of at most :data:`BUILD_CHUNK_BYTES` of float64 weights each, so that the
        peak memory stays near the matrices' own (and the sums stay in cache-sized arrays)."""
        nz, ny, nx = self.shape
        n = self.angles.size
        matrices = xp.empty((n, nx, nz * nx), dtype=self.dtype)
        chunk = max(1, BUILD_CHUNK_BYTES // (8 * nx * nz * nx))
        for start in range(0, n, chunk):
            angles = self.angles[start:start + chunk]
            matrices[start:start + angles.size] = self._build_chunk(xp, angles).astype(self.dtype)
        return matrices

    def _build_chunk(self, xp, angles):
        nz, ny, nx = self.shape
        n, half = angles.size, _half_length((nz, nx))
        dtype = xp.float64  # weights in float64, stored in self.dtype
        theta = xp.asarray(np.radians(angles))
        c, s = xp.cos(theta)[:, None, None], xp.sin(theta)[:, None, None]
        t = xp.arange(-half, half + 1, dtype=dtype)[None, None, :]
        u = (xp.arange(nx, dtype=dtype) - nx // 2)[None, :, None]
        # R^T (t, v, u) for R about y: z = cos θ t + sin θ u, x = -sin θ t + cos θ u (as _ray_points computes)
        z = c * t + s * u + nz // 2
        x = -s * t + c * u + nx // 2
        z0, x0 = xp.floor(z), xp.floor(x)
        fz, fx = z - z0, x - x0
        z0, x0 = z0.astype(xp.int64), x0.astype(xp.int64)
        row = (xp.arange(n, dtype=xp.int64)[:, None, None] * nx + xp.arange(nx, dtype=xp.int64)[None, :, None])
        row = row * (nz * nx)
        length = n * nx * nz * nx
        matrices = xp.zeros(length, dtype=dtype)
        for dz, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            zi, xi = z0 + dz, x0 + dx
            weight = (fz if dz else 1 - fz) * (fx if dx else 1 - fx)
            inside = (zi >= 0) & (zi < nz) & (xi >= 0) & (xi < nx)
            weight = xp.where(inside, weight, 0) * self.sampling
            index = row + xp.clip(zi, 0, nz - 1) * nx + xp.clip(xi, 0, nx - 1)
            matrices += xp.bincount(index.reshape(-1), weights=weight.reshape(-1), minlength=length)
        return matrices.reshape(n, nx, nz * nx)

    def subset(self, indices) -> "TiltProjector":
        """The projector of some of the angles, sharing nothing but copies of their matrices (no rebuild).

        Parameters
        ----------
        indices : (M,) array_like of int
            Indices into :attr:`angles`.
        """
        indices = backend.asnumpy(indices)  # host: indices are parameters
        if indices.ndim != 1 or indices.size == 0 or indices.dtype.kind not in "iu" \
                or indices.min() < 0 or indices.max() >= self.num_projections:
            raise ValueError(f"indices must be a non-empty 1D array of integers in [0, {self.num_projections}), "
                             f"got {indices!r}")
        part = object.__new__(TiltProjector)
        part.shape, part.sampling, part.dtype = self.shape, self.sampling, self.dtype
        part.angles = self.angles[indices]
        part.rotations = self.rotations[backend.asarray(indices)]
        part.matrices = self.matrices[backend.asarray(indices)]
        return part

    def norms(self):
        """Operator norm of each angle's projection, ``‖A_k‖`` [Å], exactly: ``(N,)`` on the device.

        ``A_k`` acts on every ``y`` plane alike, so its norm is the largest
        singular value of its ``(nx, nz nx)`` matrix: the square root of the
        largest eigenvalue of the small ``(nx, nx)`` Gram matrix. Bounds for
        step sizes follow: ``‖A‖² <= Σ_k ‖A_k‖²`` for the whole series.
        """
        xp = backend.get_array_module(self.matrices)
        gram = xp.matmul(self.matrices, xp.swapaxes(self.matrices, 1, 2)).astype(xp.float64)
        return xp.sqrt(xp.maximum(xp.linalg.eigvalsh(gram)[:, -1], 0))

    @property
    def num_projections(self) -> int:
        """Number of tilt angles ``N``."""
        return int(self.angles.size)

    @property
    def projection_shape(self) -> tuple:
        """``(N, ny, nx)``."""
        return (self.num_projections, self.shape[1], self.shape[2])

    def forward(self, volume):
        """Projections of a volume at every angle: ``(..., nz, ny, nx)`` -> ``(..., N, ny, nx)``.

        Leading axes are a batch of volumes (e.g. the anchor volumes of a
        space-time model), each projected at every angle, in one matrix
        product [unit of volume × Å]; on the selected device.
        """
        volume = backend.asarray(volume)  # a no-op on device data: solvers call this every iteration
        xp = backend.get_array_module(volume)
        nz, ny, nx = self.shape
        if volume.ndim < 3 or tuple(volume.shape[-3:]) != self.shape:
            raise ValueError(f"volume must have shape (..., {nz}, {ny}, {nx}), got {volume.shape}")
        batch = tuple(volume.shape[:-3])
        b = math.prod(batch)
        volume = volume.astype(self.dtype, copy=False).reshape(b, nz, ny, nx)
        planes = xp.transpose(volume, (1, 3, 0, 2)).reshape(nz * nx, b * ny)  # every y plane a column
        flat = self.matrices.reshape(-1, nz * nx)
        projections = xp.matmul(flat, planes).reshape(self.num_projections, nx, b, ny)
        return xp.ascontiguousarray(xp.transpose(projections, (2, 0, 3, 1))).reshape(
            batch + self.projection_shape)

    def adjoint(self, projections):
        """Back-projection, the adjoint of :meth:`forward`: ``(..., N, ny, nx)`` -> ``(..., nz, ny, nx)``
        [unit of projections × Å]; on the selected device."""
        projections = backend.asarray(projections)
        xp = backend.get_array_module(projections)
        nz, ny, nx = self.shape
        if projections.ndim < 3 or tuple(projections.shape[-3:]) != self.projection_shape:
            raise ValueError(f"projections must have shape (..., {', '.join(map(str, self.projection_shape))}), "
                             f"got {projections.shape}")
        batch = tuple(projections.shape[:-3])
        b = math.prod(batch)
        p = projections.astype(self.dtype, copy=False).reshape((b,) + self.projection_shape)
        columns = xp.transpose(p, (1, 3, 0, 2)).reshape(self.num_projections * nx, b * ny)
        flat = self.matrices.reshape(-1, nz * nx)
        planes = xp.matmul(flat.T, columns).reshape(nz, nx, b, ny)
        return xp.ascontiguousarray(xp.transpose(planes, (2, 0, 3, 1))).reshape(batch + self.shape)
