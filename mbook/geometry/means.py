"""The Fréchet (Karcher) mean on the sphere, SO(3) and SPD(n), by Riemannian gradient descent.

The Fréchet mean of points ``y₁ … y_N`` minimises ``f(m) = (1/2N) Σ d(m, yᵢ)²``. Where the logarithm is
defined, the Riemannian gradient is ``grad f(m) = -(1/N) Σ log_m(yᵢ)`` (Karcher 1977), and the descent step
``m ← exp_m(τ (1/N) Σ log_m(yᵢ))`` with ``τ = 1`` is the classical fixed-point iteration: exact in one step
in flat space, linearly convergent for concentrated data (Afsari 2011). The iteration runs on the device;
the gradient norm is copied to the host every ``check_every`` iterations only.

Examples
--------
>>> import numpy as np
>>> from mbook.geometry import means, sphere
>>> north = np.array([0.0, 0.0, 1.0])
>>> points = sphere.random_points(200, north, scales=0.2, seed=0)
>>> result = means.frechet_mean(points, "sphere")
>>> result.converged and float(sphere.distance(result.mean, north)) < 0.05
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

from mbook.core import backend, checks, progress
from mbook.geometry import so3, spd, sphere

#: The manifolds by name, each with its unchecked kernels.
MANIFOLDS = {"sphere": sphere.KERNELS, "so3": so3.KERNELS, "spd": spd.KERNELS}


class FrechetMean(NamedTuple):
    """Result of :func:`frechet_mean`."""

    #: The mean: ``(d + 1,)``, ``(3, 3)`` or ``(n, n)``, on the selected device.
    mean: object
    #: Norm of the Riemannian gradient at each iteration, ``(num_iter,)`` on the device.
    gradient_norms: object
    #: Iterations run.
    num_iter: int
    #: Whether the gradient norm fell below ``tol`` at a check.
    converged: bool


def check_manifold(manifold: str) -> dict:
    """The kernels of ``manifold`` (``"sphere"``, ``"so3"`` or ``"spd"``); ValueError naming it else."""
    checks.check_choice(manifold, "manifold", tuple(MANIFOLDS))
    return MANIFOLDS[manifold]


def check_cloud(points, manifold: str, name: str = "points"):
    """Points of ``manifold`` as a batch ``(N, ...)`` with ``N >= 1``, on the selected device."""
    kernels = check_manifold(manifold)
    points = kernels["check"](points, name)
    single = {"sphere": 1, "so3": 2, "spd": 2}[manifold]
    if points.ndim != single + 1:
        raise ValueError(f"{name} must be a batch of points (N, ...) on {manifold}, got shape {points.shape}")
    return points


def gradient(points, base, manifold: str):
    """Riemannian gradient of ``f(m) = (1/2N) Σ d(m, yᵢ)²`` at ``m = base``: ``-(1/N) Σ log_m(yᵢ)``.

    Parameters
    ----------
    points : (N, ...) array_like
        Points of the manifold.
    base : array_like
        One point: ``(d + 1,)``, ``(3, 3)`` or ``(n, n)``.
    manifold : {"sphere", "so3", "spd"}

    Returns
    -------
    ndarray
        A tangent vector at ``base`` (the manifold's representation), on the selected device.
    """
    points = check_cloud(points, manifold)
    kernels = MANIFOLDS[manifold]
    base = kernels["check"](base, "base")
    xp = backend.get_array_module(points, base)
    return -xp.mean(kernels["log"](base, points, xp), axis=0)


def frechet_mean(points, manifold: str, *, initial=None, step: float = 1.0, max_num_iter: int = 100,
                 tol: float = 1e-10, check_every: int = 5) -> FrechetMean:
    """The Fréchet (Karcher) mean by Riemannian gradient descent ``m ← exp_m(-τ grad f(m))``.

    Parameters
    ----------
    points : (N, ...) array_like
        Points of the manifold (unit vectors, rotation matrices or SPD matrices).
    manifold : {"sphere", "so3", "spd"}
    initial : array_like, optional
        Starting point; default the first point.
    step : float
        Step ``τ`` in (0, 2); 1 is the fixed-point iteration.
    max_num_iter : int
        Largest number of iterations.
    tol : float
        Stop when the gradient norm (the metric's) falls below it; 0 runs every iteration.
    check_every : int
        Iterations between the host copies of the gradient norm.

    Returns
    -------
    FrechetMean
    """
    points = check_cloud(points, manifold)
    kernels = MANIFOLDS[manifold]
    step = checks.check_number(step, "step", lower=0, upper=2, lower_inclusive=False, upper_inclusive=False)
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_count(check_every, "check_every")
    mean = points[0] if initial is None else kernels["check"](initial, "initial")
    if manifold == "so3":
        mean = mean.reshape(3, 3)
    if mean.shape != points.shape[1:]:
        raise ValueError(f"initial must be one point of shape {points.shape[1:]}, got {mean.shape}")
    return _descend(points, mean, kernels, step, max_num_iter, tol, check_every)


def _descend(points, mean, kernels, step, max_num_iter, tol, check_every):
    xp = backend.get_array_module(points, mean)
    norms, converged, k = [], False, 0
    for k in range(1, max_num_iter + 1):
        direction = xp.mean(kernels["log"](mean, points, xp), axis=0)  # -grad f
        norms.append(xp.linalg.norm(kernels["coordinates"](mean, direction, xp)))
        mean = kernels["exp"](mean, step * direction, xp).reshape(mean.shape)
        if tol > 0 and k % check_every == 0 and float(norms[-1]) < tol:
            converged = True
            break
    return FrechetMean(mean, xp.stack(norms), k, converged)


def medoid(points, manifold: str):
    """The data point with the smallest sum of squared distances to all points (a medoid).

    A base point that is always a data point, where the Fréchet mean is ill-posed (points spread round a
    great circle: every point of the orthogonal great sphere is then nearly a mean). Diepeveen, Chew and
    Needell (2023) use it as their second base point on the sphere. The ``(N, N)`` distances are computed at
    once on the device, after a memory estimate.

    Parameters
    ----------
    points : (N, ...) array_like
        Points of the manifold.
    manifold : {"sphere", "so3", "spd"}

    Returns
    -------
    ndarray
        One point (the manifold's representation), on the selected device.

    Raises
    ------
    MemoryError
        Before the distances, when they exceed the memory budget.
    """
    points = check_cloud(points, manifold)
    kernels = MANIFOLDS[manifold]
    n = points.shape[0]
    # Peak memory: the (N, N, ...) broadcast pair of point arrays a few times over.
    try:
        progress.plan_batches(n_items=1, bytes_per_item=8 * 4 * n * n * math.prod(points.shape[1:]))
    except MemoryError as error:
        raise MemoryError(f"points: {n} points are too many for the (N, N) distances: {error}") from None
    xp = backend.get_array_module(points)
    squared = kernels["distance"](points[:, None], points[None, :], xp) ** 2
    return points[xp.argmin(xp.sum(squared, axis=1))]
