"""Low-rank approximation of manifold-valued data: tangent PCA and its curvature correction.

Data ``y₁ … y_N`` on a manifold are summarised by a rank-``r`` subspace of the tangent space at their
Fréchet mean ``m``: each point is approximated by ``ŷᵢ = exp_m(U aᵢ)``, with ``U`` ``(D, r)`` orthonormal
in the coordinates of ``T_m M`` and ``aᵢ`` ``(r,)``. What is minimised decides the method:

- **tangent PCA** (Fletcher et al. 2004) minimises ``Σ ‖Xᵢ - U aᵢ‖²`` with ``Xᵢ = log_m(yᵢ)``: ordinary PCA
  of the logarithms, blind to curvature;
- the **intrinsic** error is ``Σ d(yᵢ, exp_m(U aᵢ))²``. To first order around ``Xᵢ``,
  ``d(exp_m Xᵢ, exp_m X̂ᵢ) ≈ ‖Jᵢ (Xᵢ - X̂ᵢ)‖`` where ``d exp_m(Xᵢ) = Γ ∘ Jᵢ`` and, on a symmetric space, ``Jᵢ``
  is diagonal in the eigenbasis of the curvature operator ``R(·, Xᵢ)Xᵢ`` with the Jacobi-field factors
  ``sin√κ/√κ`` (κ > 0) or ``sinh√-κ/√-κ`` (κ < 0). The **curvature-corrected** approximation
  (Diepeveen, Chew and Needell 2023) minimises ``Σ ‖Jᵢ (Xᵢ - U aᵢ)‖²``: a weighted low-rank problem,
  solved here by alternating least squares from the tangent-PCA solution;
- the intrinsic optimum itself is reached by Gauss-Newton: linearise ``exp_m`` at the current ``X̂ᵢ``
  instead of at ``Xᵢ`` and solve the same weighted problem again (:func:`intrinsic_lowrank`). The
  curvature-corrected approximation is its first step from the data.

The paper's own correction keeps tangent PCA's scores and refits only the components, in one linear
solve (:func:`corrected_components`); :func:`great_circle_signal` and :func:`spd_geodesic_signal` draw
its two synthetic test signals.

Everything is batched over the points on the selected device; the alternating and Gauss-Newton loops
copy one number to the host every ``check_every`` iterations.

Examples
--------
>>> import numpy as np
>>> from mbook.geometry import lowrank, sphere
>>> north = np.eye(4)[0]
>>> points = sphere.random_points(100, north, scales=[0.6, 0.4, 0.05], seed=1)
>>> pca = lowrank.tangent_pca(points, 2, manifold="sphere")
>>> cc = lowrank.curvature_corrected(points, 2, manifold="sphere", mean=pca.mean)
>>> cc.error <= pca.error
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

from mbook.core import backend, checks, progress
from mbook.geometry import means, spd, sphere


class LowRank(NamedTuple):
    """A rank-``r`` approximation ``ŷᵢ = exp_m(U aᵢ)`` of manifold-valued data."""

    #: The base point ``m`` (the Fréchet mean unless given), on the selected device.
    mean: object
    #: ``(D, r)`` orthonormal basis ``U`` of the subspace, in coordinates of ``T_m M``.
    basis: object
    #: ``(N, r)`` coefficients ``aᵢ``.
    coefficients: object
    #: ``(N, ...)`` the approximating points ``ŷᵢ``.
    reconstruction: object
    #: Relative intrinsic error ``Σ d(yᵢ, ŷᵢ)² / Σ d(yᵢ, m)²``.
    error: float
    #: Iterations run (0 for tangent PCA).
    num_iter: int


def _setup(points, rank, manifold, mean):
    """Checked points, kernels, base point and the data's tangent coordinates (N, D) at it."""
    points = means.check_cloud(points, manifold)
    kernels = means.MANIFOLDS[manifold]
    size = points.shape[-1]
    dimension = {"sphere": size - 1, "so3": 3, "spd": size * (size + 1) // 2}[manifold]
    checks.check_count(rank, "rank", maximum=dimension)
    if mean is not None:
        mean = kernels["check"](mean, "mean").reshape(points.shape[1:])
    else:
        mean = means.frechet_mean(points, manifold).mean
    xp = backend.get_array_module(points, mean)
    coordinates = kernels["coordinates"](mean, kernels["log"](mean, points, xp), xp)
    # Peak memory: weights (N, D, D) a few times over and the (D r)² normal equations.
    n = points.shape[0]
    progress.plan_batches(n_items=1, bytes_per_item=8 * (6 * n * dimension * dimension + (dimension * rank) ** 2))
    return points, kernels, mean, coordinates, xp


def _finish(points, kernels, mean, basis, coefficients, num_iter, xp):
    tangent = kernels["from_coordinates"](mean, coefficients @ basis.T, xp)
    reconstruction = kernels["exp"](mean, tangent, xp).reshape(points.shape)
    error = xp.sum(kernels["distance"](points, reconstruction, xp) ** 2)
    total = xp.sum(kernels["distance"](mean, points, xp) ** 2)
    return LowRank(mean, basis, coefficients, reconstruction, float(error / total), num_iter)


def _principal(coordinates, rank, xp):
    """Leading right singular vectors (D, r) of the (N, D) coordinates: PCA without re-centring (the tangent
    mean vanishes at the Fréchet mean)."""
    _, _, vt = xp.linalg.svd(coordinates, full_matrices=False)
    return vt[:rank].T


def tangent_pca(points, rank, *, manifold: str, mean=None) -> LowRank:
    """Tangent PCA: principal components of ``log_m(yᵢ)`` at the Fréchet mean ``m``.

    Parameters
    ----------
    points : (N, ...) array_like
        Points on the manifold: unit vectors ``(N, d + 1)``, rotations ``(N, 3, 3)`` or SPD ``(N, n, n)``.
    rank : int
        Rank ``r``, 1 <= r <= D (the manifold's dimension).
    manifold : {"sphere", "so3", "spd"}
    mean : array_like, optional
        Base point; default the Fréchet mean (:func:`mbook.geometry.means.frechet_mean`).

    Returns
    -------
    LowRank
    """
    points, kernels, mean, x, xp = _setup(points, rank, manifold, mean)
    basis = _principal(x, rank, xp)
    return _finish(points, kernels, mean, basis, x @ basis, 0, xp)


def _coefficients(targets, weights, basis, xp):
    """aᵢ = (Uᵀ Wᵢ U)⁻¹ Uᵀ Wᵢ Tᵢ for every point at once."""
    wu = weights @ basis  # (N, D, r)
    gram = xp.swapaxes(wu, -1, -2) @ basis  # (N, r, r)
    rhs = (xp.swapaxes(wu, -1, -2) @ targets[..., None])  # (N, r, 1)
    return xp.linalg.solve(gram, rhs)[..., 0]


def _components(targets, weights, coefficients, xp):
    """U minimising Σ (Tᵢ - U aᵢ)ᵀ Wᵢ (Tᵢ - U aᵢ) for fixed aᵢ: normal equations in vec(U), (D r)²."""
    n, d = targets.shape
    r = coefficients.shape[1]
    system = xp.einsum("njk,nr,ns->jrks", weights, coefficients, coefficients).reshape(d * r, d * r)
    rhs = xp.einsum("nj,nr->jr", (weights @ targets[..., None])[..., 0], coefficients).reshape(d * r)
    return xp.linalg.solve(system, rhs).reshape(d, r)


def _basis_step(targets, weights, coefficients, xp):
    q, _ = xp.linalg.qr(_components(targets, weights, coefficients, xp))
    return q  # the span is what matters; the coefficient step absorbs the change of basis


def _objective(targets, weights, basis, coefficients, xp):
    residual = targets - coefficients @ basis.T
    return xp.sum(residual * (weights @ residual[..., None])[..., 0])


def _weighted_lowrank(targets, weights, basis, max_num_iter, tol, check_every, xp):
    """Alternating least squares for min Σ (Tᵢ - U aᵢ)ᵀ Wᵢ (Tᵢ - U aᵢ); returns U, a, iterations."""
    coefficients = _coefficients(targets, weights, basis, xp)
    previous = _objective(targets, weights, basis, coefficients, xp)
    k = 0
    for k in range(1, max_num_iter + 1):
        basis = _basis_step(targets, weights, coefficients, xp)
        coefficients = _coefficients(targets, weights, basis, xp)
        if tol > 0 and k % check_every == 0:
            value = _objective(targets, weights, basis, coefficients, xp)
            if float(xp.abs(previous - value) <= tol * value):
                break
            previous = value
    return basis, coefficients, k


def _check_loop(max_num_iter, tol, check_every):
    return checks.check_iterations(max_num_iter), checks.check_tolerance(tol), checks.check_count(check_every,
                                                                                                   "check_every")


def curvature_corrected(points, rank, *, manifold: str, mean=None, max_num_iter: int = 50, tol: float = 1e-10,
                        check_every: int = 5) -> LowRank:
    """Curvature-corrected low-rank approximation: minimise ``Σ ‖Jᵢ (Xᵢ - U aᵢ)‖²``.

    ``Xᵢ = log_m(yᵢ)`` in coordinates and ``Jᵢ`` the Jacobi operator of ``exp_m`` at ``Xᵢ``
    (``d exp_m(Xᵢ) = Γ ∘ Jᵢ``), so the weighted residual is the first-order intrinsic error
    ``d(yᵢ, exp_m(U aᵢ))`` (Diepeveen, Chew and Needell 2023). Alternating least squares from the
    tangent-PCA basis.

    Parameters
    ----------
    points : (N, ...) array_like
        Points on the manifold.
    rank : int
        Rank ``r``, 1 <= r <= D.
    manifold : {"sphere", "so3", "spd"}
    mean : array_like, optional
        Base point; default the Fréchet mean.
    max_num_iter : int
        Largest number of alternating sweeps.
    tol : float
        Stop when the weighted objective changes by less than ``tol`` relative between checks.
    check_every : int
        Sweeps between checks (one host copy each).

    Returns
    -------
    LowRank
    """
    max_num_iter, tol, check_every = _check_loop(max_num_iter, tol, check_every)
    points, kernels, mean, x, xp = _setup(points, rank, manifold, mean)
    jacobi = kernels["jacobi"](mean, x, xp)
    weights = jacobi @ jacobi  # J symmetric: JᵀJ = J²
    basis, coefficients, k = _weighted_lowrank(x, weights, _principal(x, rank, xp), max_num_iter, tol,
                                               check_every, xp)
    return _finish(points, kernels, mean, basis, coefficients, k, xp)


def corrected_components(points, rank, *, manifold: str, mean=None) -> LowRank:
    """The one-solve curvature correction of Diepeveen, Chew and Needell (2023) (their CC-tSVD).

    Tangent PCA's scores ``aᵢ`` are kept and only the ``r`` tangent components are refit, minimising
    ``Σ ‖Jᵢ (Xᵢ - U aᵢ)‖²`` over a free ``(D, r)`` matrix ``U``: one linear system of size ``D r``.
    :func:`curvature_corrected` instead alternates between scores and components, from tangent PCA,
    until the weighted objective stops changing. The result is returned with an orthonormal
    basis (``U = Q R``, coefficients ``aᵢ Rᵀ``: the same approximation).

    Parameters
    ----------
    points : (N, ...) array_like
        Points on the manifold.
    rank : int
        Rank ``r``, 1 <= r <= D.
    manifold : {"sphere", "so3", "spd"}
    mean : array_like, optional
        Base point; default the Fréchet mean.

    Returns
    -------
    LowRank
        With ``num_iter`` 1.
    """
    points, kernels, mean, x, xp = _setup(points, rank, manifold, mean)
    scores = x @ _principal(x, rank, xp)
    jacobi = kernels["jacobi"](mean, x, xp)
    q, r = xp.linalg.qr(_components(x, jacobi @ jacobi, scores, xp))
    return _finish(points, kernels, mean, q, scores @ r.T, 1, xp)


def intrinsic_lowrank(points, rank, *, manifold: str, mean=None, max_num_iter: int = 20, inner_num_iter: int = 20,
                      tol: float = 1e-10, check_every: int = 2) -> LowRank:
    """The rank-``r`` approximation minimising the intrinsic error ``Σ d(yᵢ, exp_m(U aᵢ))²``, by Gauss-Newton.

    At the current approximation ``X̂ᵢ = U aᵢ`` with ``ẑᵢ = exp_m(X̂ᵢ)``, the residual is linearised as
    ``d(yᵢ, exp_m(X̂ᵢ + δ)) ≈ ‖cᵢ - Jᵢ δ‖`` with ``cᵢ = Γ_{ẑᵢ→m} log_{ẑᵢ}(yᵢ)`` (coordinates) and ``Jᵢ`` the
    Jacobi operator at ``X̂ᵢ``; the step is the weighted low-rank fit of the targets ``X̂ᵢ + Jᵢ⁻¹ cᵢ`` with
    weights ``Jᵢ²``. It starts from :func:`curvature_corrected`, which is this step taken at the data.
    Without a line search a step can overshoot where the Jacobi factors are small (points near the cut
    locus, ``sin t / t`` at ``t`` near π on the sphere): the iterate with the smallest intrinsic error among
    the start and the checked ones is returned, and the iteration stops at the first increase.

    Parameters
    ----------
    points : (N, ...) array_like
        Points on the manifold, concentrated enough that ``exp_m`` has no conjugate points on the way
        (on the unit sphere: tangent vectors shorter than π).
    rank : int
        Rank ``r``, 1 <= r <= D.
    manifold : {"sphere", "so3", "spd"}
    mean : array_like, optional
        Base point; default the Fréchet mean.
    max_num_iter, inner_num_iter : int
        Gauss-Newton steps, and alternating sweeps within each.
    tol : float
        Stop when the intrinsic error changes by less than ``tol`` relative between checks.
    check_every : int
        Gauss-Newton steps between checks.

    Returns
    -------
    LowRank
    """
    max_num_iter, tol, check_every = _check_loop(max_num_iter, tol, check_every)
    inner_num_iter = checks.check_iterations(inner_num_iter, "inner_num_iter")
    start = curvature_corrected(points, rank, manifold=manifold, mean=mean)
    points, kernels, mean, x, xp = _setup(points, rank, manifold, start.mean)
    basis, coefficients = start.basis, start.coefficients
    previous, k = start.error, 0
    best = start
    for k in range(1, max_num_iter + 1):
        fit = coefficients @ basis.T
        nearest = kernels["exp"](mean, kernels["from_coordinates"](mean, fit, xp), xp).reshape(points.shape)
        pulled = kernels["transport"](nearest, mean, kernels["log"](nearest, points, xp), xp)
        residual = kernels["coordinates"](mean, pulled, xp)
        jacobi = kernels["jacobi"](mean, fit, xp)
        targets = fit + xp.linalg.solve(jacobi, residual[..., None])[..., 0]
        basis, coefficients, _ = _weighted_lowrank(targets, jacobi @ jacobi, basis, inner_num_iter, 0.0, 1, xp)
        if tol > 0 and k % check_every == 0:
            current = _finish(points, kernels, mean, basis, coefficients, k, xp)  # one host copy
            if current.error > best.error:
                break  # an overshoot: keep the best checked iterate
            best = current
            if abs(previous - current.error) <= tol * current.error:
                break
            previous = current.error
    final = _finish(points, kernels, mean, basis, coefficients, k, xp)
    return final if final.error <= best.error else best._replace(num_iter=k)


def intrinsic_error(points, approximation, *, manifold: str, mean):
    """Relative intrinsic error ``Σ d(yᵢ, ŷᵢ)² / Σ d(yᵢ, m)²`` of an approximation ``ŷ`` (a float)."""
    points = means.check_cloud(points, manifold)
    approximation = means.check_cloud(approximation, manifold, "approximation")
    if approximation.shape != points.shape:
        raise ValueError(f"approximation must have the points' shape {points.shape}, got {approximation.shape}")
    kernels = means.MANIFOLDS[manifold]
    mean = kernels["check"](mean, "mean").reshape(points.shape[1:])
    xp = backend.get_array_module(points, approximation, mean)
    total = xp.sum(kernels["distance"](mean, points, xp) ** 2)
    return float(xp.sum(kernels["distance"](points, approximation, xp) ** 2) / total)


# ----------------------------------------------------------------------------- test signals
def _plan(nbytes, n):
    """MemoryError naming num_points, with the numbers, before any draw."""
    try:
        progress.plan_batches(n_items=1, bytes_per_item=nbytes)
    except MemoryError as error:
        raise MemoryError(f"num_points={n} is too many: {error}") from None


def great_circle_signal(num_points: int, dimension: int, *, noise: float = 0.05, seed: int = 0):
    """Noisy points round a great circle of ``S^d``: the synthetic sphere signal of Diepeveen et al. (2023).

    ``yᵢ = exp_{cᵢ}(εᵢ)`` with ``cᵢ = (cos θᵢ, sin θᵢ, 0, …, 0)``, ``θᵢ = 2π i / N``, and ``εᵢ`` the projection
    onto ``T_{cᵢ}S^d`` of an isotropic Gaussian of ``R^{d+1}`` (standard deviation ``noise`` [rad] along every
    tangent direction). The paper uses ``d = 6``, ``N = 100``, ``noise = 0.05``. The Fréchet mean of such a
    cloud is ill-posed (every point of the great sphere orthogonal to the circle is nearly one).

    Parameters
    ----------
    num_points : int
        ``N`` >= 1.
    dimension : int
        ``d`` >= 1 (points in ``R^{d+1}``).
    noise : float
        Standard deviation of the tangent noise [rad], in [0, π/2).
    seed : int
        Seed of the draw (made on the host, then moved).

    Returns
    -------
    (N, d + 1) ndarray
        On the selected device.

    Raises
    ------
    MemoryError
        Before any draw, when the points and their temporaries exceed the memory budget.
    """
    n = checks.check_count(num_points, "num_points")
    d = checks.check_count(dimension, "dimension")
    noise = checks.check_number(noise, "noise", lower=0, upper=math.pi / 2, upper_inclusive=False)
    rng = checks.rng(seed)
    _plan(8 * 4 * n * (d + 1), n)
    xp = backend.xp
    theta = 2 * xp.pi * xp.arange(n) / n
    centres = xp.concatenate([xp.cos(theta)[:, None], xp.sin(theta)[:, None], xp.zeros((n, d - 1))], axis=1)
    draw = backend.asarray(rng.standard_normal((n, d + 1)) * noise)
    tangent = draw - xp.sum(draw * centres, axis=1, keepdims=True) * centres
    return sphere.exp(centres, tangent)


def spd_geodesic_signal(num_points: int, size: int, *, spread: float = 2 ** 0.5, noise: float = 0.05,
                        conjugated_noise: bool = False, seed: int = 0):
    """Noisy SPD matrices along a geodesic through the identity: the SPD signal of Diepeveen et al. (2023).

    ``Pᵢ = exp_I(tᵢ E₁₁) = diag(e^{tᵢ}, 1, …, 1)`` with ``tᵢ ~ N(0, spread²)``, then
    ``yᵢ = exp_{Pᵢ}(Pᵢ^{1/2} Wᵢ Pᵢ^{1/2})`` with ``Wᵢ`` symmetric, its coordinates in the orthonormal basis
    (:func:`mbook.geometry.spd.to_coordinates`) Gaussian of standard deviation ``noise``: noise isotropic in
    the affine-invariant metric at ``Pᵢ``. The paper uses ``n = 3``, ``N = 100``, ``spread = √2``,
    ``noise = 0.05`` (along its second diagonal entry; the same by symmetry).

    With ``conjugated_noise``, ``Wᵢ`` is replaced by ``Pᵢ^{1/2} Wᵢ Pᵢ^{1/2}``: the noise that the Gaussian
    tangent sampler of Manifolds.jl 0.8 (``random_tangent``) draws, an orthonormal basis at ``Pᵢ`` carried
    once more from the identity, so the noise grows as ``e^{tᵢ}`` along the geodesic and ``e^{tᵢ/2}`` in the
    entries coupled to it.

    Parameters
    ----------
    num_points : int
        ``N`` >= 1.
    size : int
        ``n`` >= 2 (matrices ``n × n``).
    spread : float
        Standard deviation of ``tᵢ`` (log-eigenvalue), in [0, 10].
    noise : float
        Standard deviation of each noise coordinate, in [0, 10].
    conjugated_noise : bool
        Draw the noise as Manifolds.jl 0.8 does (see above).
    seed : int
        Seed of the draw (made on the host, then moved).

    Returns
    -------
    (N, n, n) ndarray
        On the selected device.

    Raises
    ------
    MemoryError
        Before any draw, when the points and their temporaries exceed the memory budget.
    """
    n = checks.check_count(num_points, "num_points")
    m = checks.check_count(size, "size", minimum=2)
    spread = checks.check_number(spread, "spread", lower=0, upper=10)
    noise = checks.check_number(noise, "noise", lower=0, upper=10)
    rng = checks.rng(seed)
    _plan(8 * 8 * n * m * m, n)
    xp = backend.xp
    t = backend.asarray(rng.standard_normal(n) * spread)
    whitened = spd.from_coordinates(xp.eye(m), backend.asarray(rng.standard_normal((n, m * (m + 1) // 2)) * noise))
    diagonal = xp.concatenate([xp.exp(t / 2)[:, None], xp.ones((n, m - 1))], axis=1)
    root = diagonal[:, :, None] * xp.eye(m)  # Pᵢ^{1/2}
    if conjugated_noise:
        whitened = root @ whitened @ root
    return spd.exp(root @ root, root @ whitened @ root)
