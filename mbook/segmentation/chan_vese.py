"""Convex Chan-Vese segmentation by PDHG, binary and multi-region, and the IoU of a segmentation.

The piecewise-constant Mumford-Shah model (Mumford and Shah 1989) with known region means, in the
form of Chan and Vese (2001), splits the image into regions ``Ω_k`` whose features ``F(x)`` stay close
to their region's mean ``c_k`` and whose boundaries are short:

    E(Ω_1..Ω_K) = Σ_k ∫_{Ω_k} d_k(x) dx + λ · (length of the boundaries),   d_k(x) = |F(x) - c_k|².

It is not convex in the regions, but it has exact or near-exact convex relaxations:

- **two regions** (Chan, Esedoglu and Nikolova 2006): with ``u ∈ [0, 1]`` a soft indicator of
  region 1, ``min_u Σ_x d_0 + u (d_1 - d_0) + λ TV(u)`` is convex, and thresholding a minimiser at any
  level in ``(0, 1)`` gives a minimiser of the two-region problem (the coarea formula);
- **K regions** (Zach et al. 2008; Chambolle, Cremers and Pock 2012): with ``u(x)`` on the
  probability simplex, ``min_u Σ_k <u_k, d_k> + (λ/2) Σ_k TV(u_k)``; a boundary between two regions
  is counted by both indicators, hence ``λ/2``. The relaxation is no longer exact, and the labels
  are the largest ``u_k``. Chambolle, Cremers and Pock's tighter relaxation replaces the dual balls
  ``|p_k| <= λ/2`` by the larger set ``|p_i - p_j| <= λ`` (``relaxation="ccp"``, its projection by
  Dykstra's alternating projections).

Both are ``min_u g(u) + f(∇u)`` and are solved by :func:`mbook.inverse.solvers.pdhg` with ``K = ∇``
(forward differences, Neumann boundary; ``‖∇‖² <= 8``), the primal prox a projection of
``u - τ d`` onto ``[0, 1]`` or onto the simplex per pixel, and the dual prox a projection of the dual
field onto balls of radius ``λ`` (``λ/2``). The iteration stops on the relative primal-dual gap, with
the dual objective in closed form: ``D(p) = Σ_x min(d_0, d_1 - div p)`` (binary) and
``D(p) = Σ_x min_k (d_k - div p_k)`` (multi-region). Nothing is copied to the host but one number per
``check_every`` iterations.

Arrays: costs ``(..., K, nx, ny)``, the region axis third from last, leading axes a batch of
images segmented together (one PDHG on the whole batch; the gap is that of the summed energy).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.segmentation import chan_vese
>>> image = np.zeros((32, 32)); image[8:24, 8:24] = 1.0
>>> noisy = image + 0.4 * np.random.default_rng(0).standard_normal(image.shape)
>>> costs = chan_vese.region_costs(noisy[None], np.array([[0.0], [1.0]]))
>>> result = chan_vese.chan_vese_binary(costs, 1.0)
>>> result.converged, chan_vese.iou(result.labels, image.astype(int)) > 0.95
(True, True)
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion, progress
from mbook.inverse import optimize, solvers

#: Step of PDHG with K = ∇ in 2D: τ = σ = 0.99 / sqrt(8), since ‖∇‖² <= 8.
STEP = 0.99 / math.sqrt(8.0)
#: Relaxations of the multi-region model: Zach et al. (2008) and Chambolle, Cremers and Pock (2012).
RELAXATIONS = ("zach", "ccp")


class ChanVeseResult(NamedTuple):
    """Result of :func:`chan_vese_binary` and :func:`chan_vese_multi`; arrays on the selected device.

    Attributes
    ----------
    labels : (..., nx, ny) ndarray, int64
        Region of every pixel.
    u : (..., nx, ny) or (..., K, nx, ny) ndarray
        The relaxed solution: the soft indicator of region 1 (binary), or the point of the simplex
        of every pixel (multi-region).
    p : ndarray
        The dual field ``(2, ...)``, for a warm start.
    num_iter : int
        PDHG iterations run.
    gaps : (num_checks,) ndarray
        Relative primal-dual gap at every check.
    converged : bool
        Whether the gap fell to ``tol``.
    energy : float
        The relaxed energy ``P(u)`` at the end.
    """

    labels: object
    u: object
    p: object
    num_iter: int
    gaps: object
    converged: bool
    energy: float


def region_costs(features, means, *, normalize: bool = False):
    """Squared distances ``d_k(x) = |F(x) - c_k|²`` of every pixel's features to every region mean.

    Parameters
    ----------
    features : (..., C, nx, ny) array, real
        Feature maps (``C = 1`` for a plain image: pass ``image[..., None, :, :]``).
    means : (K, C) or (..., K, C) array, real
        Region means, shared by the batch or one set per image (e.g. from
        :func:`mbook.segmentation.features.kmeans`).
    normalize : bool
        Divide the costs of each image by the mean squared distance between its region means
        ``mean_{k<l} |c_k - c_l|²``. A pixel deep inside a region then gains about 1 by joining it,
        so the weight ``λ`` of the segmentation becomes a length [px], the same for every image: a
        disk-shaped region survives when its radius exceeds about ``2λ``.

    Returns
    -------
    (..., K, nx, ny) ndarray
        On the selected device.
    """
    features = checks.check_array(features, "features", min_ndim=3, real=True)
    means = checks.check_array(means, "means", min_ndim=2, real=True)
    channels = features.shape[-3]
    if means.shape[-1] != channels:
        raise ValueError(f"means must have the features' {channels} channels on their last axis, got means of "
                         f"shape {tuple(means.shape)} for features of shape {tuple(features.shape)}")
    if means.ndim > 2 and means.shape[:-2] != features.shape[:-3]:
        raise ValueError(f"means of shape {tuple(means.shape)} must share the features' batch axes "
                         f"{tuple(features.shape[:-3])} (or be (K, C))")
    xp = backend.get_array_module(features)
    # |F - c|² = |F|² - 2 F·c + |c|², contracted over the channels without a (K, C, nx, ny) temporary.
    cross = xp.einsum("...kc,...cxy->...kxy", means, features)
    squared = (features**2).sum(axis=-3)[..., None, :, :]
    costs = xp.maximum(squared - 2 * cross + (means**2).sum(axis=-1)[..., None, None], 0)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    if normalize:
        k = means.shape[-2]
        if k < 2:
            raise ValueError(f"normalize needs at least 2 region means, got means of shape {tuple(means.shape)}")
        pairs = ((means[..., :, None, :] - means[..., None, :, :]) ** 2).sum(axis=-1)  # (..., K, K)
        spread = pairs.sum(axis=(-2, -1)) / (k * (k - 1))
        costs = costs / xp.maximum(spread, 1e-300)[..., None, None, None]
    return costs


def _check_costs(costs, minimum):
    costs = checks.check_array(costs, "costs", min_ndim=3, real=True)
    if costs.shape[-3] < minimum:
        raise ValueError(f"costs must hold at least {minimum} regions on axis -3, got shape {tuple(costs.shape)}")
    xp = backend.get_array_module(costs)
    return costs.astype(xp.float64)


def _check_solver(weight, tol, max_num_iter, check_every):
    return (checks.check_positive_number(weight, "weight"), checks.check_tolerance(tol),
            checks.check_iterations(max_num_iter), checks.check_iterations(check_every, "check_every"))


def _total_variation(u, xp):
    return xp.sum(xp.sqrt(xp.sum(optimize.gradient(u) ** 2, axis=0)))


def chan_vese_binary(costs, weight: float, *, tol: float = 1e-3, max_num_iter: int = 1000,
                     check_every: int = 10) -> ChanVeseResult:
    """Two-region convex Chan-Vese: ``min_{u ∈ [0,1]} Σ d_0 + u (d_1 - d_0) + λ TV(u)`` by PDHG.

    Parameters
    ----------
    costs : (..., 2, nx, ny) array, real
        ``d_0`` and ``d_1`` per pixel (e.g. :func:`region_costs`) [cost per pixel].
    weight : float
        ``λ`` > 0, the cost of a boundary per pixel of length [cost per pixel × px].
    tol : float
        Relative primal-dual gap to stop at; 0 runs every iteration.
    max_num_iter, check_every : int
        Iteration cap; iterations between gap evaluations.

    Returns
    -------
    ChanVeseResult
        ``labels = (u >= 1/2)``: 1 in region 1.
    """
    costs = _check_costs(costs, 2)
    if costs.shape[-3] != 2:
        raise ValueError(f"costs must hold 2 regions on axis -3 for the binary model, got shape "
                         f"{tuple(costs.shape)}; use chan_vese_multi")
    weight, tol, max_num_iter, check_every = _check_solver(weight, tol, max_num_iter, check_every)
    xp = backend.get_array_module(costs)
    d0, d1 = costs[..., 0, :, :], costs[..., 1, :, :]
    r = d1 - d0
    base = xp.sum(d0)

    def objectives(u, p):  # 0-d device arrays: the energy and its dual, closed form
        primal = base + xp.sum(u * r) + weight * _total_variation(u, xp)
        dual = base + xp.sum(xp.minimum(0, r - optimize.divergence(p)))
        return primal, dual

    u0 = (r < 0).astype(xp.float64)
    result = solvers.pdhg(
        u0, xp.zeros((2,) + u0.shape), K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p),
        prox_g=lambda v, tau: xp.clip(v - tau * r, 0, 1),
        prox_fstar=lambda q, sigma: optimize.project_ball(q, weight),
        tau=STEP, sigma=STEP, objectives=objectives, tol=tol, max_num_iter=max_num_iter,
        check_every=check_every)
    u = result.x
    energy = float(objectives(u, result.y)[0])
    return ChanVeseResult((u >= 0.5).astype(xp.int64), u, result.y, result.num_iter, result.gaps,
                          result.converged, energy)


@fusion.elementwise
def _pair_step(xp, pix, piy, pjx, pjy, iix, iiy, ijx, ijy, radius):
    """One Dykstra step on the pair ``(i, j)``: with ``y = p + increment``, move ``y_i`` and ``y_j`` towards
    each other by half the excess of ``|y_i - y_j|`` over ``radius``; returns the new ``p_i``, ``p_j`` and
    increments ``y - p`` (by components)."""
    yix, yiy, yjx, yjy = pix + iix, piy + iiy, pjx + ijx, pjy + ijy
    dx, dy = yix - yjx, yiy - yjy
    norm = xp.sqrt(dx**2 + dy**2)
    factor = 0.5 * xp.maximum(norm - radius, 0.0) / xp.maximum(norm, 1e-300)
    new_ix, new_iy = yix - factor * dx, yiy - factor * dy
    new_jx, new_jy = yjx + factor * dx, yjy + factor * dy
    return (new_ix, new_iy, new_jx, new_jy,
            yix - new_ix, yiy - new_iy, yjx - new_jx, yjy - new_jy)


def _project_pairwise(q, radius, sweeps):
    """Every pixel's K dual vectors ``q`` ``(2, ..., K, nx, ny)`` into ``{|p_i - p_j| <= radius, i < j}``.

    Dykstra's alternating projections (Boyle and Dykstra 1986) over the ``K(K-1)/2`` pair constraints,
    each in closed form (move ``p_i`` and ``p_j`` towards each other by half the excess), for ``sweeps``
    sweeps: the projection when they converge. A last step makes the result feasible whatever the
    sweeps reached: the vectors are shrunk about their mean until their largest pairwise distance is at
    most ``radius`` (the set holds the mean alone and is convex), so the dual objective stays a lower
    bound. Memory: the increments of a pair's two vectors, per pair (Dykstra's increment is zero on
    the other vectors).

    Each pair's step is one fused kernel on a GPU (:mod:`mbook.core.fusion`) over the two components of
    its two vectors and their increments: the vectors are kept as separate ``(x, y)`` component arrays
    during the sweeps and stacked once at the end.
    """
    xp = backend.get_array_module(q)
    num_regions = q.shape[-3]
    pairs = list(itertools.combinations(range(num_regions), 2))
    rows = [[q[0, ..., k, :, :], q[1, ..., k, :, :]] for k in range(num_regions)]  # views: no copy
    zero = xp.zeros_like(q[0, ..., 0, :, :])
    increments = [[zero] * 4 for _ in pairs]  # (i_x, i_y, j_x, j_y)
    for _ in range(sweeps):  # bounded: a fixed number of sweeps, nothing copied to the host
        for n, (i, j) in enumerate(pairs):
            out = _pair_step(*rows[i], *rows[j], *increments[n], radius)
            rows[i], rows[j], increments[n] = list(out[0:2]), list(out[2:4]), list(out[4:8])
    p = xp.stack([xp.stack([row[c] for row in rows], axis=-3) for c in range(2)])
    mean = p.mean(axis=-3, keepdims=True)
    spread = xp.zeros(p.shape[1:-3] + (1,) + p.shape[-2:], dtype=p.dtype)[None]
    for i, j in pairs:
        d = p[..., i:i + 1, :, :] - p[..., j:j + 1, :, :]
        spread = xp.maximum(spread, xp.sqrt(xp.sum(d**2, axis=0, keepdims=True)))
    return mean + (p - mean) / xp.maximum(spread / radius, 1.0)


def _pairwise_upper_bound(u, weight, xp):
    """An upper bound of the CCP regulariser ``sup_{p ∈ K} Σ_k <∇u_k, p_k>``.

    Where ``Σ_k u_k = 1`` the gradients sum to 0, so every ``p_k`` may be shifted by ``p_a`` of an anchor
    region ``a``; then ``|p_k| <= λ`` and the sup is at most ``λ Σ_{k≠a} |∇u_k|``: the least over the
    anchors per pixel. Equal to the regulariser where at most two regions meet.
    """
    norms = xp.sqrt(xp.sum(optimize.gradient(u) ** 2, axis=0))  # (..., K, nx, ny)
    return weight * xp.sum(xp.sum(norms, axis=-3) - xp.max(norms, axis=-3))


def chan_vese_multi(costs, weight: float, *, tol: float = 1e-3, max_num_iter: int = 1000,
                    check_every: int = 10, relaxation: str = "zach",
                    dykstra_sweeps: int = 5) -> ChanVeseResult:
    """K-region convex Chan-Vese on the simplex by PDHG, with the relaxation of Zach or of CCP.

    ``relaxation="zach"`` (Zach et al. 2008): ``min_u Σ_k <u_k, d_k> + (λ/2) Σ_k TV(u_k)``, the dual
    vectors ``p_k`` each in the ball ``|p_k| <= λ/2``. ``relaxation="ccp"`` (Chambolle, Cremers and
    Pock 2012): the regulariser ``sup_{p ∈ K} Σ_k <∇u_k, p_k>`` over the larger set
    ``K = {|p_i - p_j| <= λ for all i < j}`` (it contains Zach's balls), so the relaxed energy is
    larger for every ``u``, closer to the Potts energy, and its minimum a tighter lower bound of the
    Potts minimum; the dual projection is :func:`_project_pairwise` (``dykstra_sweeps`` Dykstra sweeps,
    then made exactly feasible). Both equal the Potts energy on labellings where at most two regions
    meet. For CCP the stopping gap uses an upper bound of the regulariser (:func:`_pairwise_upper_bound`),
    so it is conservative where three regions meet; the dual objective ``Σ_x min_k (d_k - div p_k)`` is
    exact for both.

    Parameters
    ----------
    costs : (..., K, nx, ny) array, real
        ``d_k`` per pixel, K >= 2 [cost per pixel].
    weight : float
        ``λ`` > 0, the cost of a boundary between two regions per pixel of length.
    tol : float
        Relative primal-dual gap to stop at; 0 runs every iteration.
    max_num_iter, check_every : int
    relaxation : {"zach", "ccp"}
    dykstra_sweeps : int
        Dykstra sweeps of the CCP dual projection per PDHG iteration (each over the K(K-1)/2 pairs).

    Returns
    -------
    ChanVeseResult
        ``labels = argmax_k u_k``; ``u`` of shape ``(..., K, nx, ny)``, on the simplex per pixel;
        ``energy`` the primal objective (for CCP its upper bound).

    Raises
    ------
    MemoryError
        When the estimated peak memory (``8 (12 + 2 P) B`` bytes for ``B`` cost values and ``P``
        Dykstra pairs, 0 for Zach) exceeds the budget of :mod:`mbook.core.progress`.
    """
    costs = _check_costs(costs, 2)
    weight, tol, max_num_iter, check_every = _check_solver(weight, tol, max_num_iter, check_every)
    checks.check_choice(relaxation, "relaxation", RELAXATIONS)
    dykstra_sweeps = checks.check_count(dykstra_sweeps, "dykstra_sweeps")
    xp = backend.get_array_module(costs)
    half = weight / 2
    # Peak memory: u, the costs and about five dual-sized temporaries (2 values per region and pixel);
    # CCP adds one dual-sized Dykstra increment per pair of regions. Refused over budget, with the numbers.
    num_pairs = costs.shape[-3] * (costs.shape[-3] - 1) // 2 if relaxation == "ccp" else 0
    progress.plan_batches(n_items=1, bytes_per_item=8 * costs.size * (2 + 2 * (5 + num_pairs)))

    def objectives(u, p):
        if relaxation == "zach":
            regulariser = half * _total_variation(u, xp)
        else:
            regulariser = _pairwise_upper_bound(u, weight, xp)
        primal = xp.sum(u * costs) + regulariser
        dual = xp.sum(xp.min(costs - optimize.divergence(p), axis=-3))
        return primal, dual

    if relaxation == "zach":
        def prox_fstar(q, sigma):
            return optimize.project_ball(q, half)
    else:
        def prox_fstar(q, sigma):
            return _project_pairwise(q, weight, dykstra_sweeps)

    num_regions = costs.shape[-3]
    nearest = xp.argmin(costs, axis=-3)
    u0 = (nearest[..., None, :, :] == xp.arange(num_regions).reshape(num_regions, 1, 1)).astype(xp.float64)
    result = solvers.pdhg(
        u0, xp.zeros((2,) + u0.shape), K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p),
        prox_g=lambda v, tau: optimize.project_simplex(v - tau * costs, axis=-3),
        prox_fstar=prox_fstar,
        tau=STEP, sigma=STEP, objectives=objectives, tol=tol, max_num_iter=max_num_iter,
        check_every=check_every)
    u = result.x
    energy = float(objectives(u, result.y)[0])
    return ChanVeseResult(xp.argmax(u, axis=-3), u, result.y, result.num_iter, result.gaps, result.converged,
                          energy)


def chan_vese(features, means, weight: float, *, normalize: bool = False, **kwargs) -> ChanVeseResult:
    """Convex Chan-Vese on feature maps with known region means: binary for 2 means, else multi-region.

    ``chan_vese(F, c, λ)`` is ``chan_vese_binary(region_costs(F, c, normalize=...), λ)`` for two means
    and ``chan_vese_multi(...)`` for more; ``kwargs`` go to the solver (``tol``, ``max_num_iter``,
    ``check_every``).
    """
    costs = region_costs(features, means, normalize=normalize)
    solver = chan_vese_binary if costs.shape[-3] == 2 else chan_vese_multi
    return solver(costs, weight, **kwargs)


def iou(labels, truth, *, num_regions: int | None = None, match: bool = True, where=None, reduce: str = "mean"):
    """Intersection over union of a segmentation with the true regions, averaged over the regions.

    Region numbers of a clustering are arbitrary, so with ``match`` each image's labels are renamed
    by the permutation of the regions that gives the largest mean IoU (all permutations are tried:
    at most 8 regions). Regions that are empty in both the truth and the labels are left out.

    Parameters
    ----------
    labels, truth : (..., nx, ny) array of int
        Region numbers ``0 .. num_regions - 1``, of the same shape; leading axes are images.
    num_regions : int, optional
        Default: one more than the largest number in either.
    match : bool
        Rename the labels of each image by the best permutation (True), or compare as they are.
    where : (..., nx, ny) array of bool, optional
        Count only these pixels (e.g. leave out the disordered strips between grains, whose pixels
        belong to no lattice); default all.
    reduce : {"mean", "none"}
        A float, the mean over the images; or the IoU of every image as an array on the selected
        device.

    Returns
    -------
    float or (...,) ndarray
    """
    labels = checks.check_array(labels, "labels", min_ndim=2, real=True)
    truth = checks.check_array(truth, "truth", min_ndim=2, real=True)
    for name, array in (("labels", labels), ("truth", truth)):
        if array.dtype.kind not in "iub":
            raise TypeError(f"{name} must hold integers (region numbers), got dtype {array.dtype}")
    if labels.shape != truth.shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match truth of shape {tuple(truth.shape)}")
    checks.check_choice(reduce, "reduce", ("mean", "none"))
    xp = backend.get_array_module(labels)
    if where is not None:
        where = checks.check_array(where, "where", real=True)
        if where.shape != labels.shape:
            raise ValueError(f"where of shape {tuple(where.shape)} does not match labels of shape "
                             f"{tuple(labels.shape)}")
        where = where.astype(bool)
    largest = int(xp.maximum(labels.max(), truth.max())) + 1  # one copy: the region count
    if num_regions is None:
        num_regions = largest
    num_regions = checks.check_count(num_regions, "num_regions", maximum=8)
    if largest > num_regions or int(xp.minimum(labels.min(), truth.min())) < 0:
        raise ValueError(f"labels and truth must lie in 0 .. num_regions - 1 = {num_regions - 1}")
    batch_shape = labels.shape[:-2]
    m = max(1, math.prod(batch_shape))
    k = num_regions
    image = xp.arange(m).reshape(m, 1)
    code = (image * k + truth.reshape(m, -1).astype(xp.int64)) * k + labels.reshape(m, -1).astype(xp.int64)
    weights = None if where is None else where.reshape(-1).astype(xp.float64)
    counts = xp.bincount(code.ravel(), weights=weights, minlength=m * k * k)
    confusion = backend.asnumpy(counts).reshape(m, k, k)  # to the host: (images, k, k) numbers
    # IoU of truth region i with label j, for every pair: |i ∩ j| / (|i| + |j| - |i ∩ j|).
    union = confusion.sum(axis=2)[:, :, None] + confusion.sum(axis=1)[:, None, :] - confusion
    pairwise = np.where(union > 0, confusion / np.maximum(union, 1), np.nan)
    perms = np.array(list(itertools.permutations(range(k)))) if match else np.arange(k)[None]
    scores = pairwise[:, np.arange(k)[None, :], perms]  # (m, P, k): truth i against label perm[i]
    # A pair empty in both (union 0) is NaN and left out of the mean.
    per_image = np.nanmax(np.nanmean(scores, axis=2), axis=1)
    if reduce == "mean":
        return float(per_image.mean())
    return backend.asarray(per_image.reshape(batch_shape))
