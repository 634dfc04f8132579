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
:func:`mbook.core.progress.plan_batches`. :func:`project` and
:func:`backproject` check their inputs and hand them to the kernels of
:mod:`mbook.tomography.rays` (which solvers call directly inside their
iterations).

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

from mbook.core import backend, checks, progress, scatter
from mbook.tomography import rays

AXES = ("y", "x")
#: Float64 weights accumulated at once while building a TiltProjector's matrices [bytes].
BUILD_CHUNK_BYTES = 32 * 2**20


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
    return rays.project_kernel(volume, rotations, sampling=sampling, detector_gpts=detector_gpts, batch_size=batch_size)


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
    return rays.backproject_kernel(projections, rotations, shape=shape, sampling=sampling, separate=separate,
                                   batch_size=batch_size)


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
        n, half = angles.size, rays.half_length((nz, nx))
        dtype = xp.float64  # weights in float64, stored in self.dtype
        theta = xp.asarray(np.radians(angles))
        c, s = xp.cos(theta)[:, None, None], xp.sin(theta)[:, None, None]
        t = xp.arange(-half, half + 1, dtype=dtype)[None, None, :]
        u = (xp.arange(nx, dtype=dtype) - nx // 2)[None, :, None]
        # R^T (t, v, u) for R about y: z = cos θ t + sin θ u, x = -sin θ t + cos θ u (as rays.project_kernel samples)
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
            scatter.add(matrices, index.reshape(-1), weight.reshape(-1))
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
