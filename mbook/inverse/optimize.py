"""Convex optimisation for imaging: linear operators, proximal maps, PDHG, forward-backward.

The pieces every variational method of the book is built from:

- **linear operators with their adjoints**: forward-difference
  :func:`gradient` and :func:`divergence` (``div = -∇*``), the unitary
  :func:`fourier` transform and :func:`inverse_fourier` (its adjoint), and
  masks (:func:`apply_mask`, self-adjoint for a real mask); every one is in
  the dot-product test of ``tests/test_adjoints.py``. :func:`operator_norm`
  estimates ``‖K‖`` by power iteration, for step sizes;
- **proximal operators**: soft thresholding, projections onto balls, boxes
  and the probability simplex, the prox of a squared distance;
- **solvers**: :func:`pdhg`, the primal-dual hybrid gradient method of
  Chambolle and Pock (2011) with its step-size rules and stopping by the
  primal-dual gap; :func:`forward_backward` (ISTA/FISTA) and
  :func:`projected_gradient`; :func:`tv_denoise`, the ROF model solved by PDHG.

Arrays are indexed ``[..., x, y]``; a gradient stacks its two components on
a new first axis, ``(2, ..., nx, ny)``. The device rule of :mod:`mbook`
holds: the operators and solvers move their array inputs to the selected
device and return device arrays; the solvers copy nothing to the host
inside their iterations but for a convergence test every ``check_every``
iterations (none with ``tol=0``), and their histories (``gaps``) are device
arrays. The functions handed to a solver (``K``, ``prox_g``, ``grad_f``,
...) are called on device arrays and should keep them there.

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
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks

BOUNDARIES = ("neumann", "periodic")


def _runs_callables(function):
    """Run a solver that calls user callables (``K``, ``prox_g``, ``grad_f``...) inside
    :func:`mbook.core.backend.inside_iterations`: operators called from those callables then skip
    their finiteness test, which would copy to the host on every iteration."""
    @functools.wraps(function)
    def solver(*args, **kwargs):
        with backend.inside_iterations():
            return function(*args, **kwargs)
    return solver


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
    g = xp.zeros((2,) + u.shape, dtype=u.dtype)
    g[0, ..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    g[1, ..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return g


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
    d = xp.zeros(px.shape, dtype=p.dtype)
    d[..., :-1, :] += px[..., :-1, :]
    d[..., 1:, :] -= px[..., :-1, :]
    d[..., :, :-1] += py[..., :, :-1]
    d[..., :, 1:] -= py[..., :, :-1]
    return d


def laplacian(u, *, boundary: str = "neumann"):
    """Discrete Laplacian ``div(grad u)`` (negative semi-definite, self-adjoint)."""
    u = checks.check_operand(u, "u")
    return divergence(gradient(u, boundary=boundary), boundary=boundary)


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


@_runs_callables
def operator_norm(forward, adjoint, shape, *, dtype=np.float64, max_num_iter: int = 100,
                  tol: float = 1e-6, check_every: int = 10, seed: int = 0, xp=None) -> float:
    """``‖K‖``, the largest singular value, by power iteration on ``K* K``.

    The iterate and the norms stay on the device; every ``check_every``
    iterations one number comes to the host to test convergence (none with
    ``tol=0``), and one at the end.

    Parameters
    ----------
    forward, adjoint : callable
        ``K`` and ``K*``, called on device arrays.
    shape : tuple of int
        Shape of the input of ``K``.
    dtype : dtype
        Of the start vector (complex for a complex operator).
    max_num_iter : int
        Iteration cap.
    tol : float
        Stop when the estimate changes from one iteration to the next by
        less than this, relatively (tested every ``check_every``
        iterations); 0 runs every iteration.
    check_every : int
        Iterations between convergence tests.
    seed : int
        Seed of the random start vector (drawn on the host, then moved).
    xp : module, optional
        Array module of the start vector: default the selected device's
        (a solver passes that of its own iterate).

    Returns
    -------
    float
        Estimate of ``‖K‖`` (from below; multiply by ~1.01 for a safe step).
    """
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_iterations(check_every, "check_every")
    shape = checks.check_gpts(shape, name="shape")
    start = checks.rng(seed).standard_normal(shape).astype(dtype)
    x = backend.asarray(start) if xp is None else xp.asarray(start)
    xp = backend.get_array_module(x)
    x /= xp.linalg.norm(x)
    norm = previous = xp.zeros((), dtype=x.real.dtype)
    for it in range(1, max_num_iter + 1):
        y = adjoint(forward(x))
        previous, norm = norm, xp.linalg.norm(y)  # ‖K*K x‖ → ‖K‖² as x → the top singular vector
        x = y / xp.where(norm > 0, norm, 1)  # K = 0: x stays 0 and the estimate is 0
        if tol > 0 and it % check_every == 0 and it < max_num_iter:
            estimate, before = xp.sqrt(norm), xp.sqrt(previous)
            if bool(abs(estimate - before) <= tol * estimate):  # one copy per check
                break
    return float(xp.sqrt(norm))


# ---------------------------------------------------------------------------------------
# proximal operators
# ---------------------------------------------------------------------------------------
def soft_threshold(x, threshold):
    """Prox of ``threshold·|x|`` elementwise: shrink magnitudes by ``threshold`` (complex too)."""
    x = checks.check_operand(x, "x")
    threshold = checks.check_operand_number(threshold, "threshold")
    xp = backend.get_array_module(x)
    magnitude = xp.abs(x)
    scale = xp.maximum(magnitude - threshold, 0) / xp.maximum(magnitude, 1e-300)
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
    norm = xp.sqrt(xp.sum(xp.abs(p) ** 2, axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):  # radius 0 (shrink by 0): every vector kept
        return p / xp.maximum(norm / radius, 1.0)


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


# ---------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------
class PDHGResult(NamedTuple):
    """Result of :func:`pdhg` (and :func:`tv_denoise`).

    Attributes
    ----------
    x, y : array
        Primal and dual points, on the selected device.
    num_iter : int
        Iterations run.
    gaps : (num_checks,) array
        Relative primal-dual gap at each check, on the selected device
        (empty without ``objectives``).
    converged : bool
        Whether a check found the gap at most ``tol`` (never with ``tol=0``).
    """

    x: object
    y: object
    num_iter: int
    gaps: object
    converged: bool


def _device_scalar(value, xp):
    """A value returned by a user's callable as a 0-d array of ``xp`` (floats are accepted)."""
    return value if backend.is_device_array(value) or isinstance(value, np.ndarray) else xp.asarray(value)


def _relative_gap(primal, dual, xp):
    """``(P - D) / max(|P|, 1e-30)`` as a 0-d device array: nothing copied to the host."""
    primal, dual = _device_scalar(primal, xp), _device_scalar(dual, xp)
    return (primal - dual) / xp.maximum(abs(primal), 1e-30)


def _stacked(values, xp):
    """A history of 0-d device arrays as one device array (one stack, at the end)."""
    return xp.stack(values) if values else xp.zeros(0)


def _check_step(step, name):
    """A step size: None (chosen from ‖K‖), a number > 0, or an array of steps > 0 (diagonal preconditioning)."""
    if step is None:
        return None
    if isinstance(step, numbers.Real) or np.ndim(step) == 0 and not backend.is_device_array(step):
        return checks.check_positive_number(step, name)
    steps = checks.check_array(step, name, real=True)
    if not bool(backend.get_array_module(steps).all(steps > 0)):  # once, on entry
        raise ValueError(f"{name} must hold step sizes > 0 (diagonal preconditioning), got a minimum of "
                         f"{float(steps.min())}")
    return steps


def pdhg(x0, y0, *, K, K_adjoint, prox_g, prox_fstar, tau=None, sigma=None, norm=None,
         theta: float = 1.0, gamma=None, objectives=None, tol: float = 1e-4,
         max_num_iter: int = 1000, check_every: int = 10) -> PDHGResult:
    """Primal-dual hybrid gradient (Chambolle and Pock 2011) for ``min_x g(x) + f(Kx)``.

    Solves the saddle-point problem ``min_x max_y <Kx, y> + g(x) - f*(y)``:

    ``y ← prox_{σf*}(y + σ K x̄)``, ``x_new ← prox_{τg}(x - τ K* y)``,
    ``x̄ ← x_new + θ (x_new - x)`` (Algorithm 1 of the paper). With
    ``gamma`` (``g`` is γ-strongly convex) the steps adapt as in Algorithm 2:
    ``θ = 1/sqrt(1 + 2γτ)``, ``τ ← θτ``, ``σ ← σ/θ``, for an O(1/N²) rate.

    Step-size rules: convergence needs ``τσ‖K‖² <= 1``. Give both ``tau``
    and ``sigma`` (scalars, or arrays for diagonal preconditioning,
    Pock and Chambolle 2011), or neither (then ``τ = σ = 0.99/‖K‖``), or one
    (the other is ``0.99/(‖K‖² step)``). ``‖K‖`` is ``norm`` if given, else
    estimated by :func:`operator_norm`.

    Stopping: every ``check_every`` iterations ``objectives(x, y)`` returns
    the primal and dual objective values ``(P(x), D(y))`` (0-d device arrays,
    or floats) and the relative gap ``(P - D) / max(|P|, 1e-30)`` is recorded
    on the device; iterations stop when it is at most ``tol``. That test is
    the only copy to the host in the loop, one number per check; with
    ``tol=0`` the gaps are recorded but never tested, and without
    ``objectives`` the solver runs ``max_num_iter`` iterations.

    Parameters
    ----------
    x0, y0 : array
        Starting primal and dual points (moved to the selected device).
    K, K_adjoint : callable
        The linear operator and its adjoint.
    prox_g, prox_fstar : callable
        ``prox_g(v, tau)`` and ``prox_fstar(v, sigma)``.
    tau, sigma : float or array, optional
        Primal and dual steps.
    norm : float, optional
        ``‖K‖`` if known (e.g. ``sqrt(8)`` for the 2D gradient).
    theta : float
        Extrapolation parameter in [0, 1] (Algorithm 1).
    gamma : float, optional
        Strong-convexity modulus of ``g`` (turns on Algorithm 2).
    objectives : callable, optional
        ``objectives(x, y) -> (primal, dual)``.
    tol : float
        Relative primal-dual gap to stop at; 0 runs every iteration.
    max_num_iter, check_every : int

    Returns
    -------
    PDHGResult
    """
    max_num_iter = checks.check_iterations(max_num_iter)
    check_every = checks.check_iterations(check_every, "check_every")
    tol = checks.check_tolerance(tol)
    x, y = checks.check_array(x0, "x0"), checks.check_array(y0, "y0")
    tau, sigma = (_check_step(step, name) for step, name in ((tau, "tau"), (sigma, "sigma")))
    if norm is not None:
        norm = checks.check_positive_number(norm, "norm")
    theta = checks.check_number(theta, "theta", lower=0.0, upper=1.0)
    if gamma is not None:
        gamma = checks.check_positive_number(gamma, "gamma")
    return pdhg_iterations(x, y, K=K, K_adjoint=K_adjoint, prox_g=prox_g, prox_fstar=prox_fstar, tau=tau,
                           sigma=sigma, norm=norm, theta=theta, gamma=gamma, objectives=objectives, tol=tol,
                           max_num_iter=max_num_iter, check_every=check_every)


@_runs_callables
def pdhg_iterations(x, y, *, K, K_adjoint, prox_g, prox_fstar, tau=None, sigma=None, norm=None,
                    theta: float = 1.0, gamma=None, objectives=None, tol: float = 1e-4,
                    max_num_iter: int = 1000, check_every: int = 10) -> PDHGResult:
    """The iterations of :func:`pdhg` on inputs it has checked: device arrays ``x``, ``y`` and valid
    steps and counts.

    For solvers that call PDHG inside their own iterations (functional lifting as a proximal step of
    phase retrieval): their inputs were checked once on entry, and checking again on every call would
    copy to the host every time. Parameters and result as :func:`pdhg`.
    """
    xp = backend.get_array_module(x)
    if tau is None or sigma is None:
        if norm is None:
            norm = 1.01 * operator_norm(K, K_adjoint, x.shape, dtype=x.dtype, xp=xp)
        if tau is None and sigma is None:
            tau = sigma = 0.99 / norm
        elif tau is None:
            tau = 0.99 / (norm**2 * sigma)
        else:
            sigma = 0.99 / (norm**2 * tau)
    x_bar = x
    gaps, converged, it = [], False, 0
    for it in range(1, max_num_iter + 1):
        y = prox_fstar(y + sigma * K(x_bar), sigma)
        x_new = prox_g(x - tau * K_adjoint(y), tau)
        if gamma is not None:
            theta = 1.0 / math.sqrt(1.0 + 2.0 * gamma * tau)
            tau, sigma = theta * tau, sigma / theta
        x_bar = x_new + theta * (x_new - x)
        x = x_new
        if objectives is not None and (it % check_every == 0 or it == max_num_iter):
            gaps.append(_relative_gap(*objectives(x, y), xp))
            if tol > 0 and bool(gaps[-1] <= tol):  # the one copy per check
                converged = True
                break
    return PDHGResult(x, y, it, _stacked(gaps, xp), converged)


class FBResult(NamedTuple):
    """Result of :func:`forward_backward`: the minimiser (on the selected device),
    iterations used, and whether the stopping test was met."""

    x: object
    num_iter: int
    converged: bool


@_runs_callables
def forward_backward(x0, *, grad_f, prox_g, step: float, accelerate: bool = True, tol: float = 1e-6,
                     max_num_iter: int = 500, check_every: int = 10) -> FBResult:
    """Forward-backward splitting for ``min_x f(x) + g(x)``, ``f`` smooth.

    ``x ← prox_{s g}(x - s ∇f(x))`` (ISTA); with ``accelerate`` the
    Nesterov/FISTA extrapolation of Beck and Teboulle (2009). Converges for
    ``step <= 1/L`` with ``L`` the Lipschitz constant of ``∇f``. Every
    ``check_every`` iterations, stops when that iteration changed ``x`` by
    ``‖x_new - x‖ <= tol · max(‖x‖, 1e-30)``: one number copied to the host
    per check, none with ``tol=0``.

    Parameters
    ----------
    x0 : array
        Starting point (moved to the selected device).
    grad_f : callable
        ``∇f(x)``, called on device arrays.
    prox_g : callable
        ``prox_g(v, step)``.
    step : float
        Step size, at most ``1/L``.
    accelerate : bool
        FISTA (True) or plain ISTA.
    tol : float
        Relative change of ``x`` to stop at; 0 runs every iteration.
    max_num_iter, check_every : int

    Returns
    -------
    FBResult
    """
    step = checks.check_positive_number(step, "step")
    max_num_iter = checks.check_iterations(max_num_iter)
    check_every = checks.check_iterations(check_every, "check_every")
    tol = checks.check_tolerance(tol)
    x = checks.check_array(x0, "x0")
    xp = backend.get_array_module(x)
    z, t = x, 1.0
    for it in range(1, max_num_iter + 1):
        x_new = prox_g(z - step * grad_f(z), step)
        if tol > 0 and it % check_every == 0:
            change = xp.linalg.norm(x_new - x) <= tol * xp.maximum(xp.linalg.norm(x), 1e-30)
        else:
            change = None
        if accelerate:
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = x_new + ((t - 1) / t_new) * (x_new - x)
            t = t_new
        else:
            z = x_new
        x = x_new
        if change is not None and bool(change):  # the one copy per check
            return FBResult(x, it, True)
    return FBResult(x, max_num_iter, False)


def projected_gradient(x0, *, grad_f, project, step: float, accelerate: bool = True,
                       tol: float = 1e-6, max_num_iter: int = 500, check_every: int = 10) -> FBResult:
    """Projected gradient descent for ``min_{x ∈ C} f(x)``: forward-backward with ``prox = project``."""
    return forward_backward(x0, grad_f=grad_f, prox_g=lambda v, s: project(v), step=step,
                            accelerate=accelerate, tol=tol, max_num_iter=max_num_iter,
                            check_every=check_every)


def tv_denoise(image, weight: float, *, boundary: str = "neumann", tol: float = 1e-4,
               max_num_iter: int = 2000, check_every: int = 10) -> PDHGResult:
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
    return pdhg(
        f.copy(), xp.zeros((2,) + f.shape, dtype=f.dtype),
        K=lambda u: gradient(u, boundary=boundary),
        K_adjoint=lambda p: -divergence(p, boundary=boundary),
        prox_g=lambda v, tau: prox_squared_distance(v, f, tau),
        prox_fstar=lambda q, sigma: project_ball(q, weight),
        tau=step, sigma=step, gamma=1.0, objectives=objectives, tol=tol,
        max_num_iter=max_num_iter, check_every=check_every,
    )
