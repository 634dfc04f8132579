"""Convex two-phase Chan-Vese segmentation by PDHG with fixed parameters, and the IoU score.

The convex relaxation of the two-phase piecewise-constant Mumford-Shah (Chan-Vese) model
(Chan, Esedoglu and Nikolova 2006; Chambolle, Cremers and Pock 2012),

    min_{u ∈ [0, 1]}  <u, c> + λ TV(u),

solved by :func:`mbook.inverse.solvers.pdhg_iterations` with hand-chosen steps and weight, to a
primal-dual gap or for a fixed number of iterations (:func:`pdhg_segment`): the baseline the
unrolled network of :mod:`mbook.learning.unrolled` is measured against (its layers with tied
parameters are these iterations), and the mean intersection over union of the two classes
(:func:`intersection_over_union`) both are scored by.

Device rule: the data term is moved once, the iterations stay on its device (one number copied to
the host per gap check), results come back on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.learning import pdhg_baseline
>>> masks = np.zeros((2, 16, 16)); masks[:, :, 8:] = 1
>>> cost = (1 - 2 * masks) + 0.8 * np.random.default_rng(0).standard_normal((2, 16, 16))
>>> result = pdhg_baseline.pdhg_segment(cost, weight=1.0, max_num_iter=2000, tol=1e-4)
>>> result.converged, round(pdhg_baseline.intersection_over_union(result.u, masks), 2)
(True, 1.0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks
from mbook.inverse import optimize, solvers


class SolverResult(NamedTuple):
    """Result of :func:`pdhg_segment`.

    Attributes
    ----------
    u : array
        The soft segmentation in [0, 1], shape of ``cost``, on the selected device.
    num_iter : int
        Iterations run.
    gaps : (M,) array
        Relative primal-dual gap, pooled over the images, at every ``check_every``-th iteration and
        the last, on the selected device.
    converged : bool
        Whether the gap reached ``tol`` before ``max_num_iter``.
    """

    u: object
    num_iter: int
    gaps: object
    converged: bool


def pdhg_segment(cost, *, weight: float, tau=None, sigma=None, max_num_iter: int = 1000, tol: float = 0.0,
                 check_every: int = 50) -> SolverResult:
    """Solve ``min_{u ∈ [0,1]} <u, c> + λ TV(u)`` by PDHG with fixed parameters: the hand-tuned baseline.

    Runs :func:`mbook.inverse.solvers.pdhg` (``K = ∇``, ``prox_g = clip(· - τ c, 0, 1)``, the dual
    projection onto ``|p| <= λ``) on all images at once, from ``u = 1/2``, as the network's layers do
    with tied parameters, for ``max_num_iter`` iterations or until the relative primal-dual gap is at
    most ``tol``.

    Steps: by default ``τ = 0.35/λ`` and ``σ = 0.35 λ`` (per image with per-image weights), so
    ``τσ‖∇‖² = 0.98``. That is PDHG with equal steps for the dual variable scaled to the unit ball,
    ``p/λ``: the dual iterate then crosses its ball in a number of iterations that does not grow with
    ``λ``; with ``τ = σ`` the dual needs about ``λ/σ`` iterations to reach the radius ``λ``, and the
    iterations to converge grow with the weight.

    Stopping: every ``check_every`` iterations the primal ``P = Σ_n <u_n, c_n> + λ_n TV(u_n)`` and
    dual ``D = Σ_n Σ_x min(0, c_n - div p_n)`` objectives (the inner minimum over ``u ∈ [0, 1]``,
    a lower bound for ``p`` in the ball), summed over the images, give the relative gap
    ``(P - D)/|P|``, one number copied to the host per check; ``tol = 0`` runs every iteration.

    Parameters
    ----------
    cost : (N, nx, ny) or (nx, ny) array
        Data term ``c`` (e.g. :func:`mbook.learning.unrolled.data_term`).
    weight : float or (N,) sequence
        TV weight ``λ`` > 0, or one per image (to compare weights in one run).
    tau, sigma : float, optional
        Step sizes (both or neither), ``τ σ 8 <= 1``; default scaled with ``λ`` as above.
    max_num_iter : int
        Most iterations.
    tol : float
        Relative primal-dual gap to stop at (>= 0; 0 runs ``max_num_iter`` iterations).
    check_every : int
        Iterations between gap evaluations.

    Returns
    -------
    SolverResult
        ``u`` on the selected device, the iterations run, the gaps, and whether ``tol`` was met.
    """
    cost = checks.check_array(cost, "cost", min_ndim=2, real=True)
    if isinstance(weight, (str, bytes)):
        raise TypeError(f"weight must be a number or one value per image, got {weight!r}")
    weights = np.asarray(backend.asnumpy(weight) if backend.is_device_array(weight) else weight, dtype=float)
    if weights.ndim > 1 or (weights.ndim == 1 and (cost.ndim != 3 or weights.size != cost.shape[0])):
        raise ValueError(f"weight must be a number or one value per image ({cost.shape[0] if cost.ndim == 3 else 1}),"
                         f" got shape {weights.shape}")
    for value in np.atleast_1d(weights).tolist():
        checks.check_positive_number(value, "weight")
    if (tau is None) != (sigma is None):
        raise ValueError(f"give both tau and sigma or neither, got tau={tau!r} and sigma={sigma!r}")
    if tau is not None:
        tau = checks.check_positive_number(tau, "tau")
        sigma = checks.check_positive_number(sigma, "sigma")
        if tau * sigma * 8.0 > 1.0 + 1e-12:
            raise ValueError(f"tau * sigma must be <= 1/8 for PDHG to converge (‖∇‖² <= 8), got {tau * sigma:.4g}")
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_iterations(check_every, "check_every")
    xp = backend.get_array_module(cost)
    cost = cost.astype(xp.float64)
    per_image = weights.ndim == 1
    radius = xp.asarray(weights[:, None, None]) if per_image else float(weights)
    if tau is None:  # 0.35/λ and 0.35 λ, on the host, then moved once
        tau, sigma = ((xp.asarray(0.35 * weights[:, None, None] ** power) if per_image
                       else 0.35 * float(weights) ** power) for power in (-1, 1))
    tau_cost = tau * cost  # the steps are fixed: the primal prox's shift made once

    def objectives(u, p):
        primal = xp.sum(u * cost) + xp.sum(radius * xp.sqrt(xp.sum(optimize.gradient(u) ** 2, axis=0)))
        return primal, xp.sum(xp.minimum(cost - optimize.divergence(p), 0.0))

    result = solvers.pdhg_iterations(
        xp.full(cost.shape, 0.5), xp.zeros((2,) + cost.shape),
        K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p),
        prox_g=lambda v, step: xp.clip(v - tau_cost, 0.0, 1.0),
        prox_fstar=lambda q, step: optimize.project_ball(q, radius),
        tau=tau, sigma=sigma, objectives=objectives, tol=tol, max_num_iter=max_num_iter,
        check_every=check_every)
    return SolverResult(result.x, result.num_iter, result.gaps, result.converged)


def intersection_over_union(segmentation, masks) -> float:
    """Mean intersection over union of the two classes (foreground and background), pooled over images.

    ``(IoU(A, B) + IoU(not A, not B)) / 2`` with ``IoU(A, B) = |A ∩ B| / |A ∪ B|``: symmetric in the
    two classes, so it does not matter which region is called the foreground.

    Parameters
    ----------
    segmentation, masks : (..., nx, ny) array
        Boolean masks, or values thresholded at 1/2.

    Returns
    -------
    float
        In [0, 1] (a class absent from both counts as 1).
    """
    segmentation = checks.check_array(segmentation, "segmentation", min_ndim=2, real=True)
    masks = checks.check_array(masks, "masks", min_ndim=2, real=True)
    if segmentation.shape != masks.shape:
        raise ValueError(f"segmentation and masks must have the same shape, got {segmentation.shape} and "
                         f"{masks.shape}")
    xp = backend.get_array_module(masks)
    a, b = segmentation > 0.5, masks > 0.5
    scores = []
    for x, y in ((a, b), (~a, ~b)):
        union = float(xp.sum(x | y))
        scores.append(1.0 if union == 0 else float(xp.sum(x & y)) / union)
    return 0.5 * (scores[0] + scores[1])


__all__ = ["SolverResult", "pdhg_segment", "intersection_over_union"]
