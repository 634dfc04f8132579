"""Reconstruction from a tilt series: FBP, SIRT and projected gradient descent in 3D; anchor volumes in 4D.

3D (white paper 7.3, the baseline): minimise the data misfit over volumes
``x >= 0``, optionally with an ℓ1 penalty (atoms are sparse),

.. math::

    \\min_{x \\ge 0} \\tfrac12 \\|A x - b\\|^2 + \\lambda \\|x\\|_1,

by projected (accelerated) gradient descent, :func:`pgd`; for comparison the
filtered back-projection :func:`fbp` (ramp filter, then the adjoint) and the
simultaneous iterative reconstruction technique :func:`sirt`.

4D (7.3, anchor volumes): ``M`` anchor volumes ``x_1..x_M`` at times
``s_1..s_M`` (fewer than the projections); the specimen at the time ``t_k`` of
projection ``k`` is interpolated from them, ``Σ_m w_km x_m``, so every
projection is linear in the anchors (:class:`SpaceTimeProjector`),

.. math::

    b_k \\approx A_k \\sum_m w_{km} x_m ,

with linear (hat) or Gaussian weights (:func:`temporal_weights`).
:func:`pgd_4d` minimises the misfit plus smoothed total variation in space
and in time, over ``x >= 0``, starting from the 3D baseline.

The operators are a :class:`mbook.tomography.projector.TiltProjector` (any
object with ``forward``, ``adjoint``, ``shape`` and ``projection_shape``
would do); the solver is :func:`mbook.inverse.solvers.forward_backward`,
with steps from :func:`lipschitz_bound`. All iterates stay on the device;
nothing is copied to the host per iteration.

Examples
--------
>>> from mbook.core import backend
>>> from mbook.tomography import reconstruct
>>> w = reconstruct.temporal_weights([0.0, 0.25, 0.5, 1.0], [0.0, 1.0])  # two anchors, hat weights
>>> backend.asnumpy(w).round(2).tolist()
[[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.0, 1.0]]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks
from mbook.inverse import optimize, solvers
from mbook.tomography import projector as projector_module

KINDS = ("linear", "gaussian")
FILTERS = ("ramp", "hann")


class Reconstruction(NamedTuple):
    """A reconstruction (on the selected device) and the data residual ``‖A x - b‖ / ‖b‖`` per iteration
    (a device array; empty for FBP)."""

    x: object
    residuals: object


def _check_projector(operator):
    if not all(hasattr(operator, name) for name in ("forward", "adjoint", "shape", "projection_shape")):
        raise TypeError(f"operator must be a TiltProjector (forward, adjoint, shape, projection_shape), "
                        f"got {type(operator).__name__}")


def _check_operator(operator, projections):
    _check_projector(operator)
    projections = checks.check_array(projections, "projections", ndim=3, real=True)
    if tuple(projections.shape) != tuple(operator.projection_shape):
        raise ValueError(f"projections has shape {projections.shape} but the operator makes "
                         f"{operator.projection_shape}: one image per angle, on its detector")
    return projections.astype(operator.dtype, copy=False)


def _check_start(x0, shape, dtype, name="x0"):
    x0 = checks.check_array(x0, name, real=True)
    if tuple(x0.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {x0.shape}")
    return x0.astype(dtype)


# ----------------------------------------------------------------------------- 3D
def fbp(projections, operator, *, filter: str = "ramp"):
    """Filtered back-projection: ramp-filter every projection across the tilt axis, then back-project.

    The discrete inversion formula of parallel-beam tomography
    :cite:`kak1988`, ``x = Σ_k Δθ_k A_k^T (h * b_k) / s`` with ``h`` the ramp
    ``|ν|`` (zero-padded to twice the width; ``hann`` tapers it) and ``Δθ_k``
    the angular interval of projection ``k`` [rad]. The missing wedge is left
    empty: FBP shows its artefacts as they are.

    Parameters
    ----------
    projections : (N, ny, nx) array_like
        The tilt series, one image per angle of ``operator`` [unit × Å].
    operator : TiltProjector
    filter : {"ramp", "hann"}

    Returns
    -------
    Reconstruction
        ``x`` of shape ``operator.shape`` [unit]; no residuals.
    """
    b = _check_operator(operator, projections)
    checks.check_choice(filter, "filter", FILTERS)
    xp = backend.get_array_module(b)
    n = b.shape[-1]
    padded = 2 * n
    frequency = backend.asarray(np.abs(np.fft.rfftfreq(padded, d=operator.sampling)))  # [1/Å]
    if filter == "hann":
        frequency = frequency * 0.5 * (1 + xp.cos(math.pi * frequency / frequency[-1]))
    fft = backend.fft_module(b)
    filtered = fft.irfft(fft.rfft(b, n=padded, axis=-1) * frequency, n=padded, axis=-1)[..., :n]
    angles = np.sort(np.radians(operator.angles))
    order = np.argsort(np.radians(operator.angles))
    edges = np.concatenate([[angles[0] - (angles[1] - angles[0]) / 2], (angles[1:] + angles[:-1]) / 2,
                            [angles[-1] + (angles[-1] - angles[-2]) / 2]]) if angles.size > 1 else np.array([0, np.pi])
    widths = np.empty_like(angles)
    widths[order] = np.diff(edges)
    weights = backend.asarray(widths / operator.sampling).astype(b.dtype)[:, None, None]
    return Reconstruction(operator.adjoint(filtered.astype(b.dtype) * weights), xp.zeros(0))


def sirt(projections, operator, *, max_num_iter: int = 50, relaxation: float = 1.0, nonnegative: bool = True,
         x0=None):
    """SIRT: ``x ← x + λ C A^T R (b - A x)``, with ``R`` and ``C`` the inverse row and column sums of ``A``.

    The simultaneous iterative reconstruction technique (Gilbert 1972), which
    converges for ``0 < λ < 2`` to the ``R``-weighted least-squares solution.

    Parameters
    ----------
    projections : (N, ny, nx) array_like
    operator : TiltProjector
    max_num_iter : int
    relaxation : float
        ``λ``, in (0, 2).
    nonnegative : bool
        Clip negative voxels after every iteration.
    x0 : array_like, optional
        Start (default zeros), shape ``operator.shape``.

    Returns
    -------
    Reconstruction
        ``x`` and the relative residual of every iteration (before its update).
    """
    b = _check_operator(operator, projections)
    max_num_iter = checks.check_iterations(max_num_iter)
    relaxation = checks.check_number(relaxation, "relaxation", lower=0, upper=2, lower_inclusive=False,
                                     upper_inclusive=False)
    if not isinstance(nonnegative, bool):
        raise TypeError(f"nonnegative must be True or False, got {nonnegative!r}")
    xp = backend.get_array_module(b)
    x = xp.zeros(operator.shape, dtype=b.dtype) if x0 is None else _check_start(x0, operator.shape, b.dtype)
    rows = operator.forward(xp.ones(operator.shape, dtype=b.dtype))
    columns = operator.adjoint(xp.ones(operator.projection_shape, dtype=b.dtype))
    row_weights = xp.where(rows > 0, 1 / xp.where(rows > 0, rows, 1), 0)
    column_weights = xp.where(columns > 0, relaxation / xp.where(columns > 0, columns, 1), 0)
    norm_b = xp.linalg.norm(b)
    residuals = xp.empty(max_num_iter, dtype=b.dtype)
    for it in range(max_num_iter):
        r = b - operator.forward(x)
        residuals[it] = xp.linalg.norm(r) / norm_b
        x = x + column_weights * operator.adjoint(row_weights * r)
        if nonnegative:
            x = xp.maximum(x, 0)
    return Reconstruction(x, residuals)


def pgd(projections, operator, *, l1: float = 0.0, nonnegative: bool = True, max_num_iter: int = 50,
        x0=None, accelerate: bool = True):
    """Projected gradient descent for ``min_{x>=0} ½‖A x - b‖² + λ‖x‖₁``, the 3D baseline (7.3).

    Steps of ``1/L``, ``L`` >= ``‖A‖²`` from :func:`lipschitz_bound`, with the prox of the ℓ1
    term and the nonnegativity, ``x ← max(v - λ/L, 0)``; FISTA's extrapolation
    with ``accelerate`` (:func:`mbook.inverse.solvers.forward_backward`).

    Parameters
    ----------
    projections : (N, ny, nx) array_like
    operator : TiltProjector
    l1 : float
        ``λ`` >= 0 [unit of b² / unit of x].
    nonnegative : bool
    max_num_iter : int
    x0 : array_like, optional
        Start (default zeros).
    accelerate : bool

    Returns
    -------
    Reconstruction
        ``x`` and the relative residual ``‖A x - b‖/‖b‖`` at every gradient evaluation.
    """
    b = _check_operator(operator, projections)
    l1 = checks.check_number(l1, "l1", lower=0)
    max_num_iter = checks.check_iterations(max_num_iter)
    for name, value in (("nonnegative", nonnegative), ("accelerate", accelerate)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    xp = backend.get_array_module(b)
    x = xp.zeros(operator.shape, dtype=b.dtype) if x0 is None else _check_start(x0, operator.shape, b.dtype)
    lipschitz = lipschitz_bound(operator)
    norm_b = xp.linalg.norm(b)
    residuals = []

    def grad_f(v):
        r = operator.forward(v) - b
        residuals.append(xp.linalg.norm(r) / norm_b)  # stays on the device
        return operator.adjoint(r)

    def prox(v, step):  # prox of λ‖x‖₁ + the indicator of x >= 0
        if nonnegative:
            return xp.maximum(v - step * l1, 0)
        return optimize.soft_threshold(v, step * l1) if l1 > 0 else v

    result = solvers.forward_backward(x, grad_f=grad_f, prox_g=prox, step=1 / lipschitz, accelerate=accelerate,
                                      tol=0.0, max_num_iter=max_num_iter)
    return Reconstruction(result.x, xp.stack(residuals))


def lipschitz_bound(operator) -> float:
    """An upper bound of ``‖A‖²`` (the Lipschitz constant of the data term's gradient), cheaply.

    For a :class:`~mbook.tomography.projector.TiltProjector`,
    ``‖A‖² <= Σ_k ‖A_k‖²`` from the exact per-angle norms; for a
    :class:`SpaceTimeProjector` with weights ``w``,
    ``‖S‖² <= min(Σ_k ‖A_k‖² ‖w_k‖², max_k ‖A_k‖² ‖W‖₂²)``; for any other
    operator, 1.01 times the power-iteration estimate of :func:`operator_norm`.
    """
    _check_projector(operator)
    if isinstance(operator, projector_module.TiltProjector):
        return float(backend.get_array_module(operator.matrices).sum(operator.norms() ** 2))
    if isinstance(operator, SpaceTimeProjector):
        xp = backend.get_array_module(operator.weights)
        norms = operator.tilt.norms() ** 2
        w = operator.weights.astype(xp.float64)
        per_row = xp.sum(norms * xp.sum(w * w, axis=1))
        spectral = xp.max(norms) * xp.linalg.norm(w, ord=2) ** 2
        return float(xp.minimum(per_row, spectral))
    return 1.01 * operator_norm(operator) ** 2


def operator_norm(operator, *, max_num_iter: int = 30) -> float:
    """``‖A‖`` of a projector (``forward``/``adjoint``) by power iteration [Å], as a float."""
    _check_projector(operator)
    max_num_iter = checks.check_iterations(max_num_iter)
    dtype = getattr(operator, "dtype", np.float64)
    return solvers.operator_norm(operator.forward, operator.adjoint, tuple(operator.shape), dtype=dtype,
                                 max_num_iter=max_num_iter, tol=1e-3, check_every=5)


# ----------------------------------------------------------------------------- 4D
def temporal_weights(times, anchor_times, *, kind: str = "linear", width: float | None = None):
    """Interpolation weights ``w_km`` of the anchors at the projections' times; rows sum to 1.

    ``linear``: the hat functions of the anchors (each time between two
    anchors takes both, linearly; outside the anchors, the nearest one);
    ``gaussian``: ``exp(-(t_k - s_m)² / 2 w²)`` normalised over the anchors,
    which couples every anchor to every projection and makes the motion
    smooth in time (white paper 7.3).

    Parameters
    ----------
    times : (N,) array_like
        Time of each projection.
    anchor_times : (M,) array_like
        Times of the anchors, increasing, 1 <= M <= N.
    kind : {"linear", "gaussian"}
    width : float, optional
        Gaussian width ``w`` (default half the mean anchor spacing: halfway
        between two anchors both weigh the same, the next ones ~1 %).

    Returns
    -------
    (N, M) ndarray
        On the selected device.
    """
    t = backend.asnumpy(checks.check_array(times, "times", ndim=1, real=True)).astype(np.float64)
    s = backend.asnumpy(checks.check_array(anchor_times, "anchor_times", ndim=1, real=True)).astype(np.float64)
    checks.check_choice(kind, "kind", KINDS)
    if not 1 <= s.size <= t.size:
        raise ValueError(f"anchor_times must hold between 1 and {t.size} anchors (the number of projections), "
                         f"got {s.size}")
    if s.size > 1 and not np.all(np.diff(s) > 0):
        raise ValueError(f"anchor_times must increase, got {s.tolist()}")
    spacing = (s[-1] - s[0]) / (s.size - 1) if s.size > 1 else 1.0
    width = spacing / 2 if width is None else checks.check_positive_number(width, "width")
    if kind == "gaussian":
        w = np.exp(-0.5 * ((t[:, None] - s[None, :]) / width) ** 2)
    elif s.size == 1:
        w = np.ones((t.size, 1))
    else:
        w = np.stack([np.interp(t, s, np.eye(s.size)[m]) for m in range(s.size)], axis=1)  # hat functions
    return backend.asarray(w / w.sum(axis=1, keepdims=True))


class SpaceTimeProjector:
    """Projections of anchor volumes through temporal interpolation: ``b_k = A_k Σ_m w_km x_m``.

    Each anchor is projected only at the angles where its weight exceeds
    ``cutoff`` (its own slice of the tilt matrices, one matrix product per
    anchor), so linear weights cost about two 3D projections, not ``M``.

    Parameters
    ----------
    tilt : TiltProjector
        The tilt series, one angle per projection, in acquisition order.
    weights : (N, M) array_like
        :func:`temporal_weights`.
    cutoff : float
        Weights below ``cutoff`` times the largest are dropped (0 keeps all).

    Attributes
    ----------
    shape : tuple
        ``(M, nz, ny, nx)``, the anchors.
    projection_shape : tuple
        ``(N, ny, nx)``.
    """

    def __init__(self, tilt, weights, *, cutoff: float = 1e-4):
        if not isinstance(tilt, projector_module.TiltProjector):
            raise TypeError(f"tilt must be a TiltProjector, got {type(tilt).__name__}")
        weights = checks.check_array(weights, "weights", ndim=2, real=True)
        if weights.shape[0] != tilt.num_projections:
            raise ValueError(f"weights has {weights.shape[0]} rows but the tilt series {tilt.num_projections} "
                             f"projections: one row per projection")
        cutoff = checks.check_number(cutoff, "cutoff", lower=0, upper=1, upper_inclusive=False)
        self.tilt, self.dtype, self.sampling = tilt, tilt.dtype, tilt.sampling
        self.weights = weights.astype(tilt.dtype)
        self.shape = (weights.shape[1],) + tuple(tilt.shape)
        self.projection_shape = tilt.projection_shape
        w = backend.asnumpy(weights)  # host: the sparsity pattern is a parameter
        self._parts = []
        for m in range(w.shape[1]):
            rows = np.flatnonzero(np.abs(w[:, m]) > cutoff * np.abs(w).max())
            if rows.size:
                self._parts.append((m, backend.asarray(rows), tilt.subset(rows),
                                    self.weights[backend.asarray(rows), m][:, None, None]))

    def forward(self, anchors):
        """``(M, nz, ny, nx)`` anchors -> ``(N, ny, nx)`` projections."""
        anchors = backend.asarray(anchors)
        xp = backend.get_array_module(anchors)
        if tuple(anchors.shape) != self.shape:
            raise ValueError(f"anchors must have shape {self.shape}, got {anchors.shape}")
        out = xp.zeros(self.projection_shape, dtype=self.dtype)
        for m, rows, part, w in self._parts:  # one matrix product per anchor (M is small)
            out[rows] += w * part.forward(anchors[m])
        return out

    def adjoint(self, projections):
        """``(N, ny, nx)`` -> ``(M, nz, ny, nx)``, the exact adjoint of :meth:`forward`."""
        projections = backend.asarray(projections)
        xp = backend.get_array_module(projections)
        if tuple(projections.shape) != self.projection_shape:
            raise ValueError(f"projections must have shape {self.projection_shape}, got {projections.shape}")
        out = xp.zeros(self.shape, dtype=self.dtype)
        for m, rows, part, w in self._parts:
            out[m] = part.adjoint(w * projections[rows])
        return out


def _difference(u, axis):
    """Forward difference along ``axis``, 0 across the far edge (Neumann)."""
    xp = backend.get_array_module(u)
    d = xp.zeros_like(u)
    index = [slice(None)] * u.ndim
    index[axis] = slice(0, -1)
    d[tuple(index)] = xp.diff(u, axis=axis)
    return d


def _difference_adjoint(p, axis):
    """Adjoint of :func:`_difference`: ``-`` the backward-difference divergence along ``axis``."""
    xp = backend.get_array_module(p)
    head, tail = [slice(None)] * p.ndim, [slice(None)] * p.ndim
    head[axis], tail[axis] = slice(0, 1), slice(0, -1)
    q = xp.concatenate([xp.zeros_like(p[tuple(head)]), p[tuple(tail)]], axis=axis)
    return q - p


def smooth_tv(u, *, axes, smoothing: float):
    """Smoothed total variation ``Σ sqrt(|∇u|² + ε²) - ε`` over ``axes`` and its gradient.

    Parameters
    ----------
    u : array
        Any shape; ``axes`` are differenced (forward differences, Neumann).
    axes : tuple of int
        The axes of the gradient (e.g. ``(-3, -2, -1)`` for 3D space, ``(0,)``
        for time).
    smoothing : float
        ``ε`` > 0 [unit of u]: the Charbonnier smoothing that makes TV
        differentiable, with a gradient Lipschitz constant ``‖∇‖²/ε``.

    Returns
    -------
    value : 0-d array
        On ``u``'s device.
    gradient : array
        Same shape as ``u``.
    """
    u = checks.check_operand(u, "u")  # NaN refused only from outside mbook: smooth_tv runs in pgd_4d's loop
    smoothing = checks.check_positive_number(smoothing, "smoothing")
    axes = [checks.check_axis(axis, "axes", u.ndim) for axis in axes]
    xp = backend.get_array_module(u)
    differences = [_difference(u, axis) for axis in axes]
    magnitude = xp.sqrt(sum(d * d for d in differences) + smoothing**2)
    gradient = sum(_difference_adjoint(d / magnitude, axis) for d, axis in zip(differences, axes))
    return xp.sum(magnitude - smoothing), gradient


def pgd_4d(projections, operator, x0, *, tv_space: float = 0.0, tv_time: float = 0.0,
           smoothing: float | None = None, max_num_iter: int = 50, accelerate: bool = True):
    """Anchor volumes by projected gradient descent with spatial and temporal total variation (7.3).

    .. math::

        \\min_{x \\ge 0} \\tfrac12 \\|S x - b\\|^2
        + \\alpha \\sum_m \\mathrm{TV}_\\varepsilon(x_m)
        + \\beta \\sum_{\\rm voxels} \\mathrm{TV}_\\varepsilon(x_{1..M}),

    ``S`` the :class:`SpaceTimeProjector`, ``TV_ε`` the smoothed (Charbonnier)
    total variation of :func:`smooth_tv`; step ``1/L`` with
    ``L = ‖S‖² + (12 α + 4 β)/ε`` (``‖S‖²`` bounded by :func:`lipschitz_bound`).

    Parameters
    ----------
    projections : (N, ny, nx) array_like
    operator : SpaceTimeProjector
    x0 : (M, nz, ny, nx) array_like
        Start, e.g. the 3D baseline repeated for every anchor: from zeros the
        under-determined problem finds a poor local fit (white paper 7.3).
    tv_space, tv_time : float
        ``α``, ``β`` >= 0.
    smoothing : float, optional
        ``ε`` [unit of x]; default 5 % of ``x0``'s largest value.
    max_num_iter : int
    accelerate : bool

    Returns
    -------
    Reconstruction
        The anchors and the relative data residual at every gradient evaluation.
    """
    if not isinstance(operator, SpaceTimeProjector):
        raise TypeError(f"operator must be a SpaceTimeProjector, got {type(operator).__name__}")
    b = _check_operator(operator, projections)
    x = _check_start(x0, operator.shape, b.dtype)
    tv_space = checks.check_number(tv_space, "tv_space", lower=0)
    tv_time = checks.check_number(tv_time, "tv_time", lower=0)
    max_num_iter = checks.check_iterations(max_num_iter)
    if not isinstance(accelerate, bool):
        raise TypeError(f"accelerate must be True or False, got {accelerate!r}")
    xp = backend.get_array_module(b)
    if smoothing is None:
        smoothing = max(0.05 * float(xp.max(x)), 1e-12)  # one copy on entry
    smoothing = checks.check_positive_number(smoothing, "smoothing")
    lipschitz = lipschitz_bound(operator) + (12 * tv_space + 4 * tv_time) / smoothing
    norm_b = xp.linalg.norm(b)
    residuals = []

    def grad_f(v):
        r = operator.forward(v) - b
        residuals.append(xp.linalg.norm(r) / norm_b)
        g = operator.adjoint(r)
        if tv_space > 0:
            g = g + tv_space * smooth_tv(v, axes=(-3, -2, -1), smoothing=smoothing)[1]
        if tv_time > 0 and v.shape[0] > 1:
            g = g + tv_time * smooth_tv(v, axes=(0,), smoothing=smoothing)[1]
        return g

    result = solvers.forward_backward(x, grad_f=grad_f, prox_g=lambda v, s: xp.maximum(v, 0), step=1 / lipschitz,
                                      accelerate=accelerate, tol=0.0, max_num_iter=max_num_iter)
    return Reconstruction(result.x, xp.stack(residuals))
