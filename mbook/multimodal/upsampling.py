"""Guided upsampling: a coarse map lifted to the grid of a high-resolution guide.

For the AFM's mechanical maps (:mod:`mbook.multimodal.afm`), measured on a grid ``factor`` times
coarser than the topography and phase:

- :func:`downsample` (the forward operator ``D``: a box average over ``factor × factor`` fine pixels,
  the coarse pixel's force curve averaging the response over its area) and :func:`upsample_adjoint`,
  its adjoint;
- ways up: :func:`bicubic` (``scipy.ndimage.zoom``, order 3), :func:`guided_filter` (He, Sun and
  Tang 2013, local linear model in the guide), :func:`edge_aware` (the variational model: data
  consistency ``½‖D u - m‖²`` plus a quadratic smoothness weighted by the guide's edges,
  :func:`edge_weights` and :func:`weighted_laplacian`, solved by conjugate gradients) and
  :func:`guided_tv` (the same with a weighted total variation, by PDHG; see :func:`edge_aware` for
  why the quadratic smoothness is the default).

Device rule: all arrays on the selected device; the iterations copy nothing to the host but one number
per convergence check.

Examples
--------
>>> import numpy as np
>>> from mbook.multimodal import upsampling
>>> upsampling.downsample(np.ones((16, 16)), 8).shape
(2, 2)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress
from mbook.inverse import optimize, solvers


# ----------------------------------------------------------------------------- the operators
def _check_factor(factor):
    return checks.check_count(factor, "factor", minimum=1)


def downsample(image, factor: int):
    """Box average over ``factor × factor`` blocks: ``(n, n) -> (n/factor, n/factor)``.

    The forward operator ``D`` of the mechanical maps: a coarse pixel's force curve averages the
    sample's response over the pixel's area. Its adjoint is :func:`upsample_adjoint`; ``D D* = I/factor²``.

    Parameters
    ----------
    image : (..., nx, ny) array_like
        ``nx`` and ``ny`` multiples of ``factor``.
    factor : int

    Returns
    -------
    (..., nx/factor, ny/factor) ndarray
    """
    image = checks.check_array(image, "image", min_ndim=2, real=True)
    factor = _check_factor(factor)
    nx, ny = image.shape[-2:]
    if nx % factor or ny % factor:
        raise ValueError(f"image's shape {image.shape[-2:]} must be a multiple of factor {factor}")
    return _downsample(image, factor)


def _downsample(image, factor):
    nx, ny = image.shape[-2:]
    blocks = image.reshape(*image.shape[:-2], nx // factor, factor, ny // factor, factor)
    return blocks.mean(axis=(-3, -1))


def upsample_adjoint(coarse, factor: int):
    """Adjoint of :func:`downsample`: each value spread over its block, divided by ``factor²``.

    Parameters
    ----------
    coarse : (..., mx, my) array_like
    factor : int

    Returns
    -------
    (..., mx factor, my factor) ndarray
    """
    coarse = checks.check_array(coarse, "coarse", min_ndim=2, real=True)
    factor = _check_factor(factor)
    return _upsample_adjoint(coarse, factor)


def _upsample_adjoint(coarse, factor):
    xp = backend.get_array_module(coarse)
    spread = xp.repeat(xp.repeat(coarse, factor, axis=-2), factor, axis=-1)
    return spread / factor**2


# ----------------------------------------------------------------------------- the ways up
def _check_pair(coarse, guide, factor):
    coarse = checks.check_array(coarse, "coarse", ndim=2, real=True).astype(np.float64)
    factor = _check_factor(factor)
    if guide is not None:
        guide = checks.check_array(guide, "guide", min_ndim=2, real=True).astype(np.float64)
        guide = guide if guide.ndim == 3 else guide[None]
        if guide.ndim != 3 or guide.shape[-2:] != tuple(factor * s for s in coarse.shape):
            raise ValueError(f"guide must be (n, n) or (channels, n, n) with n = factor x coarse's shape "
                             f"{tuple(factor * s for s in coarse.shape)}, got shape {guide.shape}")
        # The guided filter holds C² + 4C + 20 fine float64 images at once (the solvers fewer).
        channels, pixels = guide.shape[0], guide.shape[-1] * guide.shape[-2]
        progress.plan_batches(n_items=1, bytes_per_item=8 * pixels * (channels**2 + 4 * channels + 20))
    return coarse, guide, factor


def bicubic(coarse, factor: int):
    """Cubic-spline interpolation of a coarse map onto the fine grid (``scipy.ndimage.zoom``, order 3).

    Pixel centres are aligned (``grid_mode``): the coarse pixel's value sits at the centre of its block.

    Parameters
    ----------
    coarse : (m, m) array_like
    factor : int

    Returns
    -------
    (m factor, m factor) ndarray
    """
    coarse, _, factor = _check_pair(coarse, None, factor)
    return _cubic_zoom(coarse, factor)


def _cubic_zoom(coarse, factor):
    """``ndimage.zoom(coarse, factor, order=3, mode="reflect", grid_mode=True)``, its spline prefilter done here.

    The prefilter's recursion in ``mode="reflect"`` reads ``c[0]`` after updating it (CuPy 14's
    ``_causal_init_code``, SciPy up to 1.17; SciPy 1.18 fixed it, scipy/scipy#24615), an error of
    about ``z^(2m) = 0.268^(2m)`` (7e-10 for m = 8 coarse pixels, 3e-5 for 4): the GPU and the CPU
    would differ by it. The exact coefficients solve ``B c = coarse`` along each axis, ``B`` the cubic
    B-spline's sampling matrix with reflected edges; ``B`` is built and inverted on the host (m x m,
    condition number <= 3), the same numbers on every device.
    """
    ndimage = backend.scipy_module("ndimage", coarse)
    rows, columns = (backend.asarray(_reflect_spline_inverse(size)) for size in coarse.shape)
    coefficients = rows @ coarse @ columns.T
    return ndimage.zoom(coefficients, factor, order=3, mode="reflect", grid_mode=True, prefilter=False)


def _reflect_spline_inverse(size):
    """Inverse of the ``(size, size)`` matrix ``f_i = (c_{i-1} + 4 c_i + c_{i+1}) / 6`` with
    ``c_{-1} = c_0`` and ``c_size = c_{size-1}`` (reflect), on the host."""
    sampling = (np.diag(np.full(size, 4.0)) + np.diag(np.ones(size - 1), 1) + np.diag(np.ones(size - 1), -1))
    sampling[0, 0] += 1.0
    sampling[-1, -1] += 1.0
    return np.linalg.inv(sampling / 6.0)


def _normalised(guide):
    """Each guide channel scaled to zero mean and unit RMS."""
    xp = backend.get_array_module(guide)
    centred = guide - guide.mean(axis=(-2, -1), keepdims=True)
    return centred / xp.maximum(centred.std(axis=(-2, -1), keepdims=True), 1e-30)


def guided_filter(coarse, guide, factor: int, *, radius: int = 8, epsilon: float = 0.01):
    """He, Sun and Tang's guided filter of the bicubic map, with a (multi-channel) guide.

    In each window the output is a linear function of the guide, ``q = a·I + b``, fitted to the
    bicubic map ``p`` by ridge regression (``epsilon`` the ridge on ``a``, for guide channels scaled
    to unit RMS); the coefficients are averaged over the windows covering a pixel.

    Parameters
    ----------
    coarse : (m, m) array_like
        The low-resolution map.
    guide : (n, n) or (C, n, n) array_like
        High-resolution guide(s), ``n = m factor``, e.g. the phase and the topography.
    factor : int
    radius : int
        Window half-width [fine px] (the coarse pixel's size, ``factor``, is a good choice).
    epsilon : float
        Ridge regularisation > 0.

    Returns
    -------
    (n, n) ndarray
    """
    coarse, guide, factor = _check_pair(coarse, guide, factor)
    radius = checks.check_count(radius, "radius")
    epsilon = checks.check_positive_number(epsilon, "epsilon")
    return _guided_filter(coarse, guide, factor, radius=radius, epsilon=epsilon)


def _guided_filter(coarse, guide, factor, *, radius, epsilon):
    xp = backend.get_array_module(coarse)
    ndimage = backend.scipy_module("ndimage", coarse)
    p = _cubic_zoom(coarse, factor)
    guide = _normalised(guide)
    c = guide.shape[0]
    size = 2 * radius + 1

    def mean(x):
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    mean_i = xp.stack([mean(g) for g in guide])
    mean_p = mean(p)
    cov_ip = xp.stack([mean(g * p) for g in guide]) - mean_i * mean_p
    # Channel covariance per pixel, (n, n, C, C), plus the ridge.
    var_i = xp.stack([xp.stack([mean(guide[i] * guide[j]) - mean_i[i] * mean_i[j] for j in range(c)], axis=-1)
                      for i in range(c)], axis=-2)
    var_i = var_i + epsilon * xp.eye(c)
    a = xp.linalg.solve(var_i, xp.moveaxis(cov_ip, 0, -1)[..., None])[..., 0]  # (n, n, C)
    a = xp.moveaxis(a, -1, 0)
    b = mean_p - xp.sum(a * mean_i, axis=0)
    return xp.sum(xp.stack([mean(ak) for ak in a]) * guide, axis=0) + mean(b)


def edge_weights(guide, *, contrast: float = 0.1, blur: float = 1.0):
    """Edge-stopping weights ``w = 1 / (1 + |∇g|² / κ²)`` of a (multi-channel) guide.

    Each channel is scaled to unit RMS and smoothed by a Gaussian of ``blur`` pixels (so that the
    guide's noise draws no edges); ``|∇g|²`` sums over channels; ``κ`` is ``contrast`` times the RMS of
    ``|∇g|``. Near 1 in flat regions, small across the guide's edges.

    Parameters
    ----------
    guide : (n, n) or (C, n, n) array_like
    contrast : float
        ``κ`` in units of the RMS gradient, > 0.
    blur : float
        Standard deviation of the smoothing [px], >= 0.

    Returns
    -------
    (n, n) ndarray
    """
    guide = checks.check_array(guide, "guide", min_ndim=2, real=True).astype(np.float64)
    contrast = checks.check_positive_number(contrast, "contrast")
    blur = checks.check_positive_number(blur, "blur", allow_zero=True)
    guide = guide if guide.ndim == 3 else guide[None]
    if guide.ndim != 3:
        raise ValueError(f"guide must be (n, n) or (channels, n, n), got shape {guide.shape}")
    return _edge_weights(_normalised(guide), contrast, blur)


def _edge_weights(guide, contrast, blur):
    xp = backend.get_array_module(guide)
    if blur > 0:
        ndimage = backend.scipy_module("ndimage", guide)
        guide = ndimage.gaussian_filter(guide, (0, blur, blur), mode="reflect")
    squared = xp.sum(optimize.gradient(guide) ** 2, axis=(0, 1))
    kappa2 = contrast**2 * squared.mean()
    return 1.0 / (1.0 + squared / kappa2)


def weighted_laplacian(image, weights):
    """``-div(w ∇u)``: the edge-aware smoothness operator (self-adjoint, positive semi-definite).

    The gradient of ``½ Σ_x w(x) |∇u(x)|²``, with the forward differences and Neumann boundary of
    :func:`mbook.inverse.optimize.gradient`.

    Parameters
    ----------
    image : (n, n) array_like
    weights : (n, n) array_like
        ``w >= 0``.

    Returns
    -------
    (n, n) ndarray
    """
    image = checks.check_array(image, "image", ndim=2, real=True)
    weights = checks.check_array(weights, "weights", ndim=2, real=True)
    if weights.shape != image.shape:
        raise ValueError(f"weights must have the image's shape {image.shape}, got {weights.shape}")
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0")
    return _weighted_laplacian(image, weights)


def _weighted_laplacian(u, w):
    return -optimize.divergence(w * optimize.gradient(u))


class EdgeAwareResult(NamedTuple):
    """Result of :func:`edge_aware`.

    Attributes
    ----------
    image : (n, n) ndarray
        The fine map, on the selected device.
    num_iter : int
        Conjugate-gradient iterations run.
    converged : bool
        Whether the relative residual fell below ``tol`` at a check.
    residuals : (num_checks,) ndarray
        Relative residual ``‖b - A u‖ / ‖b‖`` at each check, on the selected device.
    """

    image: object
    num_iter: int
    converged: bool
    residuals: object


def edge_aware(coarse, guide, factor: int, *, weight: float = 0.01, contrast: float = 0.1, blur: float = 1.0,
               max_num_iter: int = 500, tol: float = 1e-6, check_every: int = 10) -> EdgeAwareResult:
    """Edge-aware variational upsampling: ``min_u ½‖D u - m‖² + (λ/2) Σ_x w(x) |∇u(x)|²``.

    ``D`` is :func:`downsample`: the result reproduces the measured coarse map up to the smoothing;
    ``w`` (:func:`edge_weights` of the guide) is small across the topography's and phase's edges, so
    the map may jump there, at the guide's resolution, and is smooth elsewhere. The objective is
    quadratic: its minimiser solves ``(D*D + λ (-div w ∇)) u = D* m``, a symmetric positive definite
    system, solved by conjugate gradients from the guided filter's result.

    Why not total variation? TV suits piecewise-constant maps, but it charges a ramp and a staircase
    of the same height alike and favours flat patches, so nothing in it prefers a smooth variation
    inside a phase when the data fix only block means; the quadratic smoothness prefers the ramp,
    and the weights still let the edges through. (:func:`guided_tv` solves the TV model by PDHG for
    comparison.)

    Parameters
    ----------
    coarse : (m, m) array_like
        The low-resolution map ``m`` [any unit].
    guide : (n, n) or (C, n, n) array_like
        High-resolution guide(s), ``n = m factor``, e.g. the phase and the topography.
    factor : int
    weight : float
        ``λ`` > 0 (dimensionless: the data term is a mean over each block).
    contrast, blur : float
        Of :func:`edge_weights`.
    max_num_iter : int
    tol : float
        Relative residual to stop at; 0 runs every iteration. The result is then within about
        ``cond(A) tol`` of the minimiser (0.4 % for a 64² blend at 1e-6, ``cond ~ 1e4``), and where in that
        ball depends on the rounding of every sum: another device or another NumPy gives another point
        (up to 2e-3 apart on a GPU). For results that agree across devices to ~1e-10, pass ``tol=1e-14``
        (about three times the iterations).
    check_every : int

    Returns
    -------
    EdgeAwareResult
    """
    coarse, guide, factor = _check_pair(coarse, guide, factor)
    weight = checks.check_positive_number(weight, "weight")
    contrast = checks.check_positive_number(contrast, "contrast")
    blur = checks.check_positive_number(blur, "blur", allow_zero=True)
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_iterations(check_every, "check_every")
    xp = backend.get_array_module(coarse)
    w = _edge_weights(_normalised(guide), contrast, blur)

    def apply(u):
        return _upsample_adjoint(_downsample(u, factor), factor) + weight * _weighted_laplacian(u, w)

    b = _upsample_adjoint(coarse, factor)
    norm_b = xp.sqrt(xp.sum(b * b))
    u = _guided_filter(coarse, guide, factor, radius=factor, epsilon=0.01)
    r = b - apply(u)
    p = r
    rr = xp.sum(r * r)
    residuals, converged, it = [], False, 0
    for it in range(1, max_num_iter + 1):  # conjugate gradients (Hestenes and Stiefel 1952)
        ap = apply(p)
        alpha = rr / xp.sum(p * ap)
        u = u + alpha * p
        r = r - alpha * ap
        rr_new = xp.sum(r * r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        if it % check_every == 0 or it == max_num_iter:
            residuals.append(xp.sqrt(rr) / norm_b)
            if tol > 0 and bool(residuals[-1] <= tol):  # the one copy per check
                converged = True
                break
    return EdgeAwareResult(u, it, converged, xp.stack(residuals))


class GuidedTVResult(NamedTuple):
    """Result of :func:`guided_tv`: the fine map and the objective ``½‖Du - m‖² + λ Σ w|∇u|`` at the end."""

    image: object
    objective: float
    num_iter: int


def guided_tv(coarse, guide, factor: int, *, weight: float = 0.005, contrast: float = 0.1, blur: float = 1.0,
              max_num_iter: int = 300, nonnegative: bool = True, start_from_filter: bool = True) -> GuidedTVResult:
    """Edge-aware variational upsampling: ``min_u ½‖D u - m‖² + λ Σ_x w(x) |∇u(x)|`` (u >= 0).

    ``D`` is :func:`downsample`, so the result reproduces the measured coarse map (up to the noise the
    TV removes); the weights :func:`edge_weights` of the guide make jumps cheap where the guide has
    edges, so the map's edges go where the topography and phase put them, at fine resolution. Solved
    by PDHG (:func:`mbook.inverse.solvers.pdhg`) with ``K u = (D u, ∇u)``, both dual blocks by their
    closed-form prox maps (the data term's conjugate and the projection onto ``|p| <= λ w``), with
    diagonally preconditioned steps, from the guided filter's result. It runs ``max_num_iter``
    iterations (the objective has no cheap dual bound to stop on), and converges slowly, as O(1/N):
    on the AFM page's 96² sample (factor 8) the objective is 0.54, 0.23, 0.11, 0.083 and 0.072 after
    100, 300, 1000, 4000 and 16 000 iterations, the modulus error 0.140, 0.122, 0.111, 0.104 and
    0.100. The default is a quick look; ask for thousands where the minimiser matters.

    Parameters
    ----------
    coarse : (m, m) array_like
        The low-resolution map ``m`` [any unit].
    guide : (n, n) or (C, n, n) array_like
        High-resolution guide(s), ``n = m factor``.
    factor : int
    weight : float
        ``λ`` [unit of the map × fine px], > 0; scale it with the map's values.
    contrast, blur : float
        Of :func:`edge_weights`.
    max_num_iter : int
    nonnegative : bool
        Constrain ``u >= 0`` (moduli and adhesions are).
    start_from_filter : bool
        Start from :func:`guided_filter` (window radius ``factor``), already close to the solution;
        else from :func:`bicubic`.

    Returns
    -------
    GuidedTVResult
    """
    coarse, guide, factor = _check_pair(coarse, guide, factor)
    weight = checks.check_positive_number(weight, "weight")
    contrast = checks.check_positive_number(contrast, "contrast")
    blur = checks.check_positive_number(blur, "blur", allow_zero=True)
    max_num_iter = checks.check_iterations(max_num_iter)
    xp = backend.get_array_module(coarse)
    w = _edge_weights(_normalised(guide), contrast, blur)
    n = guide.shape[-1] * guide.shape[-2]
    m = coarse.size

    def K(u):
        return xp.concatenate([_downsample(u, factor).ravel(), optimize.gradient(u).ravel()])

    def K_adjoint(y):
        data, field = y[:m].reshape(coarse.shape), y[m:].reshape((2,) + guide.shape[-2:])
        return _upsample_adjoint(data, factor) - optimize.divergence(field)

    def prox_fstar(y, sigma):
        # data block: f(z) = ½‖z - m‖², prox of σ f* is (y - σ m) / (1 + σ); TV block: projection.
        s_data = sigma[:m]  # the data block's steps (sigma is the preconditioned step vector)
        data = (y[:m] - s_data * coarse.ravel()) / (1.0 + s_data)
        field = optimize.project_ball(y[m:].reshape((2,) + guide.shape[-2:]), weight * w)
        return xp.concatenate([data, field.ravel()])

    def prox_g(u, tau):
        return xp.maximum(u, 0.0) if nonnegative else u

    # Diagonal preconditioning (Pock and Chambolle 2011, α = 1): σ_i = 1 / Σ_j |K_ij| per dual entry
    # (1 for the block means, 1/2 for the differences), τ = 1 / max_j Σ_i |K_ij| = 1 / (4 + 1/factor²).
    tau = 1.0 / (4.0 + 1.0 / factor**2)
    sigma = xp.concatenate([xp.ones(m), xp.full(2 * n, 0.5)])
    start = _guided_filter(coarse, guide, factor, radius=factor, epsilon=0.01) if start_from_filter \
        else bicubic(coarse, factor)
    result = solvers.pdhg(start, xp.zeros(m + 2 * n), K=K, K_adjoint=K_adjoint, prox_g=prox_g,
                          prox_fstar=prox_fstar, tau=tau, sigma=sigma, tol=0, max_num_iter=max_num_iter)
    u = result.x
    objective = (0.5 * xp.sum((_downsample(u, factor) - coarse) ** 2)
                 + weight * xp.sum(w * xp.sqrt(xp.sum(optimize.gradient(u) ** 2, axis=0))))
    return GuidedTVResult(u, float(objective), result.num_iter)


def relative_rmse(estimate, truth) -> float:
    """``‖estimate - truth‖ / ‖truth - mean(truth)‖``: RMS error relative to the truth's own contrast."""
    estimate = checks.check_array(estimate, "estimate", min_ndim=1, real=True)
    truth = checks.check_array(truth, "truth", min_ndim=1, real=True)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {estimate.shape} and {truth.shape}")
    xp = backend.get_array_module(truth)
    spread = float(xp.sum((truth - truth.mean()) ** 2))
    if not spread > 0:
        raise ValueError("truth must not be constant: the relative RMSE divides by its variance")
    return float(xp.sqrt(xp.sum((estimate - truth) ** 2)) / np.sqrt(spread))
