"""Convex optimisation for imaging: linear operators, proximal maps, and the ROF model.

The pieces every variational method of the book is built from; the
first-order solvers they are handed to (PDHG, forward-backward, the power
iteration for ``‖K‖``) are in :mod:`mbook.inverse.solvers`:

- **linear operators with their adjoints**: forward-difference
  :func:`gradient` and :func:`divergence` (``div = -∇*``), the unitary
  :func:`fourier` transform and :func:`inverse_fourier` (its adjoint), and
  masks (:func:`apply_mask`, self-adjoint for a real mask); every one is in
  the dot-product test of ``tests/test_adjoints.py``.
  :func:`mbook.inverse.solvers.operator_norm` estimates ``‖K‖`` by power
  iteration, for step sizes;
- **proximal operators**: soft thresholding, projections onto balls, boxes
  and the probability simplex, the prox of a squared distance;
- **total variation**: :func:`tv_denoise`, the ROF model solved by
  :func:`mbook.inverse.solvers.pdhg`.

Arrays are indexed ``[..., x, y]``; a gradient stacks its two components on
a new first axis, ``(2, ..., nx, ny)``. The device rule of :mod:`mbook`
holds: the operators move their array inputs to the selected device and
return device arrays; called from mbook's solvers (inside
:func:`mbook.core.backend.inside_iterations`) they copy nothing to the host.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.inverse import optimize
>>> step = np.zeros((8, 8)); step[4:] = 1.0
>>> result = optimize.tv_denoise(step, 0.5, tol=1e-6)
>>> x = backend.asnumpy(result.x)  # on the selected device: the one way to the host
>>> round(float(x[0, 0]), 3), round(float(x[7, 0]), 3)  # ±λ/4 per side
(0.125, 0.875)
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from mbook.core import backend, checks, fusion
from mbook.inverse import solvers

BOUNDARIES = ("neumann", "periodic")


# ---------------------------------------------------------------------------------------
# linear operators and their adjoints
# ---------------------------------------------------------------------------------------
def gradient(u, *, boundary: str = "neumann"):
    """Forward differences over the last two axes: ``(2, ..., nx, ny)``.

    ``neumann``: the difference across the far edge is 0 (Chambolle 2004);
    ``periodic``: the grid wraps around, as the FFT assumes. The adjoint is
    ``-divergence``.

    Parameters
    ----------
    u : (..., nx, ny) array
        Image(s) [any unit].
    boundary : {"neumann", "periodic"}

    Returns
    -------
    (2, ..., nx, ny) array
        ``(∂x u, ∂y u)`` per pixel [unit of u per pixel].
    """
    u = checks.check_operand(u, "u")  # NaN refused only from outside mbook: solvers call this every iteration
    xp = backend.get_array_module(u)
    checks.check_choice(boundary, "boundary", BOUNDARIES)
    if boundary == "periodic":
        return xp.stack([xp.roll(u, -1, axis=-2) - u, xp.roll(u, -1, axis=-1) - u])
    return _neumann_gradient(u)


def _forward_differences(u, out_x, out_y):
    """``u[i+1] - u[i]`` along x into ``out_x`` and along y into ``out_y`` (views: two kernels on a GPU)."""
    xp = backend.get_array_module(u)
    xp.subtract(u[..., 1:, :], u[..., :-1, :], out=out_x)
    xp.subtract(u[..., :, 1:], u[..., :, :-1], out=out_y)


def divergence(p, *, boundary: str = "neumann"):
    """Backward-difference divergence, the negative adjoint of :func:`gradient`.

    Parameters
    ----------
    p : (2, ..., nx, ny) array
        A vector field ``(p_x, p_y)``.
    boundary : {"neumann", "periodic"}

    Returns
    -------
    (..., nx, ny) array
        ``div p`` with ``<gradient(u), p> = -<u, div p>`` exactly.
    """
    p = checks.check_operand(p, "p", min_ndim=3)
    xp = backend.get_array_module(p)
    checks.check_choice(boundary, "boundary", BOUNDARIES)
    if p.shape[0] != 2:
        raise ValueError(f"p must have its 2 components on axis 0, got shape {p.shape}")
    px, py = p[0], p[1]
    if boundary == "periodic":
        return px - xp.roll(px, 1, axis=-2) + py - xp.roll(py, 1, axis=-1)
    return _neumann_divergence(px, py)


def divergence_xy(px, py):
    """:func:`divergence` (Neumann) of the field given by its two components (a kernel: no checks).

    For solvers that hold ``p_x`` and ``p_y`` apart (each the output of a fused step): no stacked
    copy of the field first. The same floats as ``divergence(stack([px, py]))``.

    Parameters
    ----------
    px, py : (..., nx, ny) ndarray
        The field's components along x and y, on one device.

    Returns
    -------
    (..., nx, ny) ndarray
    """
    return _neumann_divergence(px, py)


def laplacian(u, *, boundary: str = "neumann"):
    """Discrete Laplacian ``div(grad u)`` (negative semi-definite, self-adjoint).

    Parameters
    ----------
    u : (..., nx, ny) array
        Image(s) [any unit].
    boundary : {"neumann", "periodic"}

    Returns
    -------
    (..., nx, ny) array
        ``divergence(gradient(u))``, the same floats [unit of u per pixel²].
    """
    u = checks.check_operand(u, "u")
    checks.check_choice(boundary, "boundary", BOUNDARIES)
    if boundary == "periodic":
        return divergence(gradient(u, boundary=boundary), boundary=boundary)
    return _neumann_laplacian(u)


# Neumann's finite differences. On a GPU each is one hand-written kernel that reads a pixel's
# neighbours (cupy.fuse cannot); elsewhere, and where that kernel fails its first check, the plain
# operations below (3, 4 and 4 kernels on a GPU). Both do the same additions in the same order: the
# same floats.
_STENCIL_INDEX = "const long long r = (i / ny) % nx, c = i % ny;"


@functools.lru_cache(maxsize=None)
def _stencil(xp, name, inputs, body):
    return xp.ElementwiseKernel(f"{inputs}, int64 nx, int64 ny, int64 total", "raw T out",
                                _STENCIL_INDEX + body, f"mbook_{name}")


def _gradient_kernel(xp, u):
    u = xp.ascontiguousarray(u)
    out = xp.empty((2,) + u.shape, dtype=u.dtype)
    kernel = _stencil(xp, "gradient", "raw T u", """
        out[i] = r < nx - 1 ? (T)(u[i + ny] - u[i]) : T(0);
        out[i + total] = c < ny - 1 ? (T)(u[i + 1] - u[i]) : T(0);""")
    kernel(u, u.shape[-2], u.shape[-1], u.size, out, size=u.size)
    return out


@fusion.hand_written(_gradient_kernel)
def _neumann_gradient(xp, u):
    # Differences written straight into the result (out=): three kernels on a GPU instead of five.
    g = xp.zeros((2,) + u.shape, dtype=u.dtype)
    _forward_differences(u, g[0, ..., :-1, :], g[1, ..., :, :-1])
    return g


def _divergence_kernel(xp, px, py):
    px, py = xp.ascontiguousarray(px), xp.ascontiguousarray(py)
    out = xp.empty(px.shape, dtype=px.dtype)
    kernel = _stencil(xp, "divergence", "raw T px, raw T py", """
        T a = (r < nx - 1 ? px[i] : T(0)) - (r > 0 ? px[i - ny] : T(0));
        out[i] = (a + (c < ny - 1 ? py[i] : T(0))) - (c > 0 ? py[i - 1] : T(0));""")
    kernel(px, py, px.shape[-2], px.shape[-1], out.size, out, size=out.size)
    return out


@fusion.hand_written(_divergence_kernel)
def _neumann_divergence(xp, px, py):
    # The components copied into a buffer bordered by zeros (p_x's last row and p_y's last column left
    # out, as Neumann's adjoint asks), then the backward differences in one kernel over four shifted
    # views, as the Laplacian does: four kernels on a GPU, the same floats.
    nx, ny = px.shape[-2:]
    border = xp.zeros((2,) + px.shape[:-2] + (nx + 1, ny + 1), dtype=xp.result_type(px, py))
    border[0, ..., 1:nx, :ny] = px[..., :-1, :]
    border[1, ..., :nx, 1:ny] = py[..., :, :-1]
    bx, by = border[0, ..., :, :ny], border[1, ..., :nx, :]
    return _backward_differences(bx[..., 1:, :], bx[..., :-1, :], by[..., :, 1:], by[..., :, :-1])


def _laplacian_kernel(xp, u):
    u = xp.ascontiguousarray(u)
    out = xp.empty(u.shape, dtype=u.dtype)
    kernel = _stencil(xp, "laplacian", "raw T u", """
        T gx = r < nx - 1 ? (T)(u[i + ny] - u[i]) : T(0);
        T gx_before = r > 0 ? (T)(u[i] - u[i - ny]) : T(0);
        T gy = c < ny - 1 ? (T)(u[i + 1] - u[i]) : T(0);
        T gy_before = c > 0 ? (T)(u[i] - u[i - 1]) : T(0);
        out[i] = ((gx - gx_before) + gy) - gy_before;""")
    kernel(u, u.shape[-2], u.shape[-1], u.size, out, size=u.size)
    return out


@fusion.hand_written(_laplacian_kernel)
def _neumann_laplacian(xp, u):
    # The forward differences written into a buffer bordered by zeros, so that the backward
    # differences of the divergence are one kernel over four shifted views: four kernels on a GPU
    # instead of eight, and the same floats (adding or subtracting a border's 0 is exact).
    nx, ny = u.shape[-2:]
    border = xp.zeros((2,) + u.shape[:-2] + (nx + 1, ny + 1), dtype=u.dtype)
    _forward_differences(u, border[0, ..., 1:nx, :ny], border[1, ..., :nx, 1:ny])
    px, py = border[0, ..., :, :ny], border[1, ..., :nx, :]
    return _backward_differences(px[..., 1:, :], px[..., :-1, :], py[..., :, 1:], py[..., :, :-1])


@fusion.elementwise
def _backward_differences(xp, px, px_before, py, py_before):
    """``((p_x - p_x⁻) + p_y) - p_y⁻``, the divergence's order of operations, in one kernel."""
    return px - px_before + py - py_before


def fourier(x):
    """Unitary 2D DFT over the last two axes (``fft2 / sqrt(N)``); adjoint :func:`inverse_fourier`."""
    x = checks.check_operand(x, "x", min_ndim=2)
    n = x.shape[-1] * x.shape[-2]
    return backend.fft2(x) / math.sqrt(n)


def inverse_fourier(y):
    """Inverse (= adjoint) of :func:`fourier`: ``ifft2 * sqrt(N)``."""
    y = checks.check_operand(y, "y", min_ndim=2)
    n = y.shape[-1] * y.shape[-2]
    return backend.ifft2(y) * math.sqrt(n)


def apply_mask(x, mask):
    """Multiply by a mask (support, detector, missing data); self-adjoint when real.

    Parameters
    ----------
    x : (..., nx, ny) array
    mask : (nx, ny) array, bool or real
        Broadcast against ``x``.
    """
    x = checks.check_operand(x, "x", min_ndim=2)
    mask = checks.check_operand(mask, "mask", min_ndim=2)
    if mask.shape != x.shape[x.ndim - mask.ndim:]:
        raise ValueError(f"mask must have the shape of the last axes of x {x.shape}, got {mask.shape}")
    xp = backend.get_array_module(x)
    return x * backend.asarray(mask, dtype=x.real.dtype if xp.iscomplexobj(x) else None)


# ---------------------------------------------------------------------------------------
# proximal operators
# ---------------------------------------------------------------------------------------
def soft_threshold(x, threshold):
    """Prox of ``threshold·|x|`` elementwise: shrink magnitudes by ``threshold`` (complex too)."""
    x = checks.check_operand(x, "x")
    threshold = checks.check_operand_number(threshold, "threshold")
    return _soft_threshold(x, threshold)


@fusion.elementwise
def _soft_threshold(xp, x, threshold):
    magnitude = xp.abs(x)
    # 0/0 guarded by dividing zeros by 1: a floor such as 1e-300 is 0 in float32, and any normal floor
    # would shrink the subnormal values of a threshold of 0
    scale = xp.maximum(magnitude - threshold, 0) / xp.where(magnitude > 0, magnitude, 1.0)
    return x * scale


def project_ball(p, radius, *, axis: int = 0):
    """Project each vector (components along ``axis``) onto the ball ``|p| <= radius``.

    The prox of the indicator of the dual TV ball.
    """
    p = checks.check_operand(p, "p")
    radius = checks.check_operand_number(radius, "radius", allow_zero=False)
    axis = checks.check_axis(axis, "axis", p.ndim)
    return _project_ball(p, radius, axis)


def _project_ball(p, radius, axis):
    xp = backend.get_array_module(p)
    if p.shape[axis] == 2:  # a 2D field (TV's): |p_1|² + |p_2|² in one kernel, the sum's floats (a + b)
        first, second = (p[(slice(None),) * axis + (slice(k, k + 1),)] for k in (0, 1))
        squared = _sum_of_squares(first, second)
    else:
        squared = xp.sum(_squared_magnitude(p), axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # radius 0 (shrink by 0): every vector kept
        return _into_ball(p, squared, radius)


@fusion.elementwise
def _squared_magnitude(xp, p):
    return xp.abs(p) ** 2


@fusion.elementwise
def _sum_of_squares(xp, first, second):
    return xp.abs(first) ** 2 + xp.abs(second) ** 2


@fusion.elementwise
def _into_ball(xp, p, squared, radius):
    return p / xp.maximum(xp.sqrt(squared) / radius, 1.0)


def shrink(p, threshold, *, axis: int = 0):
    """Isotropic shrinkage, the prox of ``threshold·|p|_2`` (components along ``axis``)."""
    p = checks.check_operand(p, "p")
    threshold = checks.check_operand_number(threshold, "threshold")
    axis = checks.check_axis(axis, "axis", p.ndim)
    return p - _project_ball(p, threshold, axis)


def project_box(x, lower=-np.inf, upper=np.inf):
    """Project onto the box ``lower <= x <= upper`` (elementwise)."""
    x = checks.check_operand(x, "x")
    for name, bound in (("lower", lower), ("upper", upper)):
        if not (hasattr(bound, "ndim") and bound.ndim > 0 or backend.is_device_array(bound)):
            if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or math.isnan(bound):
                raise ValueError(f"{name} must be a real number (or -inf/inf) or an array, got {bound!r}")
    if isinstance(lower, numbers.Real) and isinstance(upper, numbers.Real) and lower > upper:
        raise ValueError(f"lower must not exceed upper, got lower={lower!r} and upper={upper!r}")
    xp = backend.get_array_module(x)
    return xp.clip(x, lower, upper)


def project_simplex(x, *, axis: int = 0):
    """Project each vector along ``axis`` onto the probability simplex {v >= 0, Σ v = 1}.

    Sort-based algorithm (Held, Wolfe and Crowder 1974; Duchi et al. 2008),
    vectorised over all other axes.
    """
    x = checks.check_operand(x, "x")
    axis = checks.check_axis(axis, "axis", x.ndim)
    xp = backend.get_array_module(x)
    v = xp.moveaxis(x, axis, 0)
    n = v.shape[0]
    s = -xp.sort(-v, axis=0)  # descending
    cumulative = xp.cumsum(s, axis=0) - 1
    index = xp.arange(1, n + 1, dtype=x.dtype).reshape((n,) + (1,) * (v.ndim - 1))
    active = s - cumulative / index > 0
    rho = xp.sum(active, axis=0, keepdims=True)  # >= 1 always
    theta = xp.take_along_axis(cumulative, rho - 1, axis=0) / rho
    return xp.moveaxis(xp.maximum(v - theta, 0), 0, axis)


def prox_squared_distance(x, target, step, *, weight=1.0):
    """Prox of ``(weight/2)‖z - target‖²``: ``(x + step·w·target) / (1 + step·w)``."""
    x = checks.check_operand(x, "x")
    target = checks.check_operand(target, "target", like=x, like_name="x")
    step = checks.check_operand_number(step, "step", allow_zero=False)
    weight = checks.check_operand_number(weight, "weight")
    sw = step * weight
    return (x + sw * target) / (1 + sw)


def tv_denoise(image, weight: float, *, boundary: str = "neumann", tol: float = 1e-4,
               max_num_iter: int = 2000, check_every: int = 10) -> solvers.PDHGResult:
    """ROF total-variation denoising, ``min_u ½‖u - f‖² + λ Σ |∇u|``, by PDHG.

    Isotropic TV with forward differences (Rudin, Osher and Fatemi 1992), solved
    by the accelerated PDHG (Chambolle and Pock 2011, Algorithm 2, γ = 1) and
    stopped by the relative primal-dual gap, with the dual
    ``D(p) = ½‖f‖² - ½‖f + div p‖²`` over ``|p| <= λ``.

    Parameters
    ----------
    image : (nx, ny) array, real
        Noisy image ``f`` [any unit].
    weight : float
        Regularisation weight ``λ`` > 0 [unit of f × pixel].
    boundary : {"neumann", "periodic"}
    tol : float
        Relative primal-dual gap to stop at; 0 runs every iteration.
    max_num_iter : int
    check_every : int
        Iterations between evaluations of the gap.

    Returns
    -------
    PDHGResult
        ``x`` is the denoised image, ``y`` the dual field ``p``, both on the
        selected device.
    """
    f = checks.check_array(image, "image", ndim=2, real=True)
    weight = checks.check_positive_number(weight, "weight")
    checks.check_choice(boundary, "boundary", BOUNDARIES)
    xp = backend.get_array_module(f)
    f = f.astype(xp.float64) if f.dtype.kind != "f" else f

    def objectives(u, p):  # 0-d device arrays: pdhg copies one number per check
        tv = xp.sum(xp.sqrt(xp.sum(gradient(u, boundary=boundary) ** 2, axis=0)))
        primal = 0.5 * xp.sum((u - f) ** 2) + weight * tv
        dual = 0.5 * xp.sum(f**2) - 0.5 * xp.sum((f + divergence(p, boundary=boundary)) ** 2)
        return primal, dual

    step = 1.0 / math.sqrt(8.0)  # ‖∇‖² <= 8 in 2D
    return solvers.pdhg(
        f.copy(), xp.zeros((2,) + f.shape, dtype=f.dtype),
        K=lambda u: gradient(u, boundary=boundary),
        K_adjoint=lambda p: -divergence(p, boundary=boundary),
        prox_g=lambda v, tau: prox_squared_distance(v, f, tau),
        prox_fstar=lambda q, sigma: project_ball(q, weight),
        tau=step, sigma=step, gamma=1.0, objectives=objectives, tol=tol,
        max_num_iter=max_num_iter, check_every=check_every,
    )
