"""First-order solvers for convex problems: PDHG, forward-backward (ISTA/FISTA), and the norm of ``K``.

The iterations that :mod:`mbook.inverse.optimize`'s operators and proximal
maps are handed to; they know nothing of images, only of the callables they
are given:

- :func:`pdhg`, the primal-dual hybrid gradient method of Chambolle and
  Pock (2011) for ``min_x g(x) + f(Kx)``, with its step-size rules and
  stopping by the primal-dual gap, and :func:`pdhg_iterations`, its loop on
  inputs checked already (for solvers that call PDHG inside their own
  iterations);
- :func:`forward_backward` (ISTA/FISTA, Beck and Teboulle 2009) for
  ``min_x f(x) + g(x)`` with ``f`` smooth, and :func:`projected_gradient`;
- :func:`operator_norm`, ``‖K‖`` by power iteration, for step sizes.

The device rule of :mod:`mbook` holds: the solvers move their array inputs
to the selected device and copy nothing to the host inside their iterations
but for a convergence test every ``check_every`` iterations (none with
``tol=0``); their histories (``gaps``) are device arrays. The functions
handed to a solver (``K``, ``prox_g``, ``grad_f``, ...) are called on device
arrays, inside :func:`mbook.core.backend.inside_iterations`, and should keep
them there.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.inverse import solvers
>>> round(solvers.operator_norm(lambda x: 2 * x, lambda y: 2 * y, (8, 8)), 6)  # ‖2 I‖
2.0
>>> target = np.arange(4.0)
>>> result = solvers.forward_backward(np.zeros(4), grad_f=lambda x: x - backend.asarray(target),
...                                   prox_g=lambda v, step: v, step=1.0)  # min ½‖x - target‖²
>>> backend.asnumpy(result.x).tolist(), result.converged
([0.0, 1.0, 2.0, 3.0], True)
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion


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
# the norm of K, for step sizes
# ---------------------------------------------------------------------------------------
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
# solvers
# ---------------------------------------------------------------------------------------
class PDHGResult(NamedTuple):
    """Result of :func:`pdhg` (and :func:`mbook.inverse.optimize.tv_denoise`).

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
        y = prox_fstar(_step(y, sigma, K(x_bar)), sigma)
        x_new = prox_g(_step(x, -tau, K_adjoint(y)), tau)
        if gamma is not None:
            theta = 1.0 / math.sqrt(1.0 + 2.0 * gamma * tau)
            tau, sigma = theta * tau, sigma / theta
        x_bar = _extrapolate(x_new, x, theta)
        x = x_new
        if objectives is not None and (it % check_every == 0 or it == max_num_iter):
            gaps.append(_relative_gap(*objectives(x, y), xp))
            if tol > 0 and bool(gaps[-1] <= tol):  # the one copy per check
                converged = True
                break
    return PDHGResult(x, y, it, _stacked(gaps, xp), converged)


@fusion.elementwise
def _step(xp, x, step, direction):
    """``x + step · direction``, one kernel on a GPU."""
    return x + step * direction


@fusion.elementwise
def _extrapolate(xp, x_new, x, theta):
    """``x_new + θ (x_new - x)``, one kernel on a GPU."""
    return x_new + theta * (x_new - x)


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
