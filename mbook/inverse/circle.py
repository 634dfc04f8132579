"""Total variation on the circle S¹: phases denoised as points of S¹, not of R.

A phase is a point of the circle S¹, not of R: total variation on the phase
must measure jumps by the wrapped difference ``W(θ_i - θ_j)`` in (-π, π].
:func:`tv_s1_denoise` minimises

``E(θ) = Σ a (1 - cos(θ - φ)) + λ Σ |W(∇θ)|``

by a primal-dual iteration that alternates between Rⁿ and S¹ (white paper
§3.2.2, approach 1): the primal step solves the backward-Euler equation in
the plane R² ⊃ S¹ and projects the solution onto S¹; the dual step uses the
two-way shrinkage operator (:func:`two_way_shrinkage`), the proximal map of
the wrapped absolute difference. Approach 2, functional lifting, is in
:mod:`mbook.inverse.lifting`. Both serve as the phase prior of phase retrieval
(:func:`mbook.inverse.cdi.phase_prior`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, checks
>>> from mbook.inverse import circle
>>> rng = np.random.default_rng(0)  # drawn on the host, moved to the selected device
>>> clean = backend.asarray(np.where(np.arange(32)[:, None] < 16, 3.0, -3.0) * np.ones((32, 32)))
>>> noisy = circle.wrap(clean + backend.asarray(0.4 * rng.standard_normal((32, 32))))
>>> result = circle.tv_s1_denoise(noisy, 0.5, max_num_iter=300)
>>> error = lambda p: float((circle.wrap(p - clean) ** 2).mean() ** 0.5)
>>> bool(error(result.phase) < 0.5 * error(noisy))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

from mbook.core import backend, checks, fusion
from mbook.core.checks import (check_array, check_iterations, check_positive_number,
                               check_tolerance)
from mbook.inverse.optimize import divergence, gradient, project_ball

TWO_PI = 2 * math.pi


def wrap(phase):
    """Wrap angles to [-π, π) [rad], on the selected device."""
    phase = checks.check_operand(phase, "phase")  # NaN refused only from outside mbook: solvers wrap often
    xp = backend.get_array_module(phase)
    return xp.mod(phase + math.pi, TWO_PI) - math.pi


def _total_variation_s1(phase, cyclic):
    """``Σ |W(∇θ)|`` as a 0-d device array (kernel: nothing copied to the host)."""
    xp = backend.get_array_module(phase)
    g = gradient(phase)
    g = wrap(g) if cyclic else g
    return xp.sum(xp.sqrt(xp.sum(g**2, axis=0)))


def _s1_energy(phase, data, weight, data_weight, cyclic):
    """The energy of :func:`s1_energy` as a 0-d device array (kernel)."""
    xp = backend.get_array_module(phase)
    fidelity = data_weight * (1 - xp.cos(phase - data)) if cyclic else 0.5 * data_weight * (phase - data) ** 2
    return xp.sum(fidelity) + weight * _total_variation_s1(phase, cyclic)


def total_variation_s1(phase, *, cyclic: bool = True) -> float:
    """Isotropic TV of a phase map with wrapped differences, ``Σ |W(∇θ)|`` [rad]."""
    return float(_total_variation_s1(check_array(phase, "phase", ndim=2, real=True), cyclic))


def s1_energy(phase, data, weight, *, data_weight=None, cyclic: bool = True) -> float:
    """``Σ a (1 - cos(θ - φ)) + λ TV_S1(θ)`` (``cyclic``) or ``Σ a/2 (θ - φ)² + λ TV(θ)``."""
    phase = check_array(phase, "phase", ndim=2, real=True)
    data = check_array(data, "data", ndim=2, real=True)
    checks.check_same_shape("data", data, "phase", phase)
    weight = check_positive_number(weight, "weight", allow_zero=True)
    a = 1.0
    if data_weight is not None:
        a = check_array(data_weight, "data_weight", ndim=2, real=True)
        if a.shape != phase.shape or float(a.min()) < 0:
            raise ValueError(f"data_weight must be >= 0 with the shape of phase {phase.shape}")
    return float(_s1_energy(phase, data, weight, a, cyclic))


def two_way_shrinkage(difference, threshold, *, axis=None):
    """Shrink a wrapped difference towards the nearest multiple of 2π, either way round.

    With ``d = 2πk + w``, ``w = W(d)`` in [-π, π): ``S(d) = 2πk + shrink(w)``,
    the shrinkage acting on the short arc between the two phases, whichever
    way round the circle it runs. For ``0 < threshold < π`` it is the proximal
    map of the wrapped absolute difference:
    ``S(d) = argmin_t ½|t - d|² + threshold·|W(t)|``.

    Parameters
    ----------
    difference : array
        Phase differences [rad], any real values.
    threshold : float
        Shrinkage [rad], in (0, π).
    axis : int, optional
        Axis holding vector components (isotropic shrinkage of ``|W(d)|₂``);
        None shrinks each element (anisotropic).

    Returns
    -------
    array
        Same shape as ``difference``, on the selected device.
    """
    difference = check_array(difference, "difference", real=True)
    threshold = checks.check_operand_number(threshold, "threshold")
    if axis is not None:
        axis = checks.check_axis(axis, "axis", difference.ndim)
    return _two_way_shrinkage(difference, threshold, axis)


@fusion.elementwise
def _dual_ascent(xp, p, gradient_theta, sigma):
    """``y = p + σ ∇θ̄``, and ``y/σ`` split into whole turns and its wrapped part ``w`` (and ``w²``)."""
    y = p + sigma * gradient_theta
    difference = y / sigma
    turns = xp.rint(difference / TWO_PI)
    w = difference - TWO_PI * turns
    return y, turns, w, w * w


@fusion.elementwise
def _dual_prox(xp, y, turns, w, w_squared, sigma, threshold):
    """``p = y - σ · shrink(y/σ)`` with the two-way shrinkage of :func:`two_way_shrinkage` (|w|² given)."""
    shrunk = w - w / xp.maximum(xp.sqrt(w_squared) / threshold, 1.0)
    return y - sigma * (TWO_PI * turns + shrunk)


@fusion.elementwise
def _primal_step_s1(xp, theta, divergence_p, a, phi, tau):
    """The primal step on S¹ and the extrapolation: ``(θ_new, 2 θ_new - θ)``.

    ``θ̃ = θ + τ div p``; backward Euler on the data term in R², ``z = (e^{iθ̃} + τ a e^{iφ}) / (1 + τ a)``,
    projected back onto S¹: ``θ_new = θ̃ + arg(z e^{-iθ̃}) = θ̃ + atan2(τ a sin(φ - θ̃), 1 + τ a cos(φ - θ̃))``,
    in real arithmetic.
    """
    theta_tilde = theta + tau * divergence_p
    c = tau * a
    d = phi - theta_tilde
    theta_new = theta_tilde + xp.arctan2(c * xp.sin(d), 1.0 + c * xp.cos(d))
    return theta_new, 2 * theta_new - theta


@fusion.elementwise
def _primal_step_r(xp, theta, divergence_p, a, phi, tau):
    """The primal step on R (no wrapping) and the extrapolation: ``(θ_new, 2 θ_new - θ)``."""
    theta_new = (theta + tau * divergence_p + tau * a * phi) / (1 + tau * a)
    return theta_new, 2 * theta_new - theta


def _two_way_shrinkage(difference, threshold, axis):
    """The kernel of :func:`two_way_shrinkage` (checked inputs; the TV-S¹ PDHG runs it every iteration)."""
    xp = backend.get_array_module(difference)
    turns = xp.round(difference / TWO_PI)
    w = difference - TWO_PI * turns
    if axis is None:
        shrunk = xp.sign(w) * xp.maximum(xp.abs(w) - threshold, 0)
    else:
        shrunk = w - project_ball(w, threshold, axis=axis)
    return TWO_PI * turns + shrunk


class TVS1Result(NamedTuple):
    """Result of a TV-S¹ solver.

    Attributes
    ----------
    phase : (nx, ny) array
        The phase in [-π, π) [rad] (unwrapped values for ``cyclic=False``),
        on the selected device.
    num_iter : int
        Iterations used.
    iterate_bytes : int
        Bytes held by the iterates and data during the iteration.
    energy : float
        ``E(θ)`` of the result.
    converged : bool
        Whether the stopping rule was met (never with ``tol=0``).
    """

    phase: object
    num_iter: int
    iterate_bytes: int
    energy: float
    converged: bool


def check_phase_data(phase, weight, data_weight):
    """Validate a phase map, a weight and a data weight for the TV-S¹ solvers.

    Returns
    -------
    phase : (nx, ny) float64 array
        On the selected device.
    weight : float
    data_weight : (nx, ny) float64 array
        On the selected device (ones when None was given).

    Raises
    ------
    ValueError
        A non-finite or non-2D phase, a weight that is not > 0, a data weight
        of another shape or with negative values.
    """
    phase = check_array(phase, "phase", ndim=2, real=True)
    xp = backend.get_array_module(phase)
    phase = phase.astype(xp.float64)
    weight = check_positive_number(weight, "weight")
    if data_weight is None:
        data_weight = xp.ones_like(phase)
    else:
        data_weight = check_array(data_weight, "data_weight", ndim=2, real=True).astype(xp.float64)
        if data_weight.shape != phase.shape or float(data_weight.min()) < 0:
            raise ValueError(f"data_weight must be >= 0 with the shape of phase {phase.shape}")
    return phase, weight, data_weight


def tv_s1_denoise(phase, weight: float, *, data_weight=None, cyclic: bool = True,
                  max_num_iter: int = 500, tol: float = 1e-5, check_every: int = 10) -> TVS1Result:
    """TV denoising of a phase map on the circle S¹ by PDHG between Rⁿ and S¹ (approach 1).

    Minimises ``E(θ) = Σ a (1 - cos(θ - φ)) + λ Σ |W(∇θ)|``. The iterate θ lives
    in Rⁿ (unwrapped); each iteration

    1. dual step: ``y = p + σ ∇θ̄``, ``p ← y - σ S_{λ/σ}(y/σ)`` (Moreau's identity
       with the two-way shrinkage ``S`` of :func:`two_way_shrinkage`), i.e. the
       dual TV step on the *wrapped* differences;
    2. primal step: ``θ̃ = θ + τ div p``; the backward-Euler equation
       ``z - e^{iθ̃} + τa (z - e^{iφ}) = 0`` is solved in R² ≅ C,
       ``z = (e^{iθ̃} + τa e^{iφ}) / (1 + τa)``, and ``z`` is projected onto S¹,
       ``θ ← θ̃ + arg(z e^{-iθ̃})``;
    3. extrapolation ``θ̄ = 2θ_new - θ``.

    Step rule: ``τσ‖∇‖² <= 1`` (``‖∇‖² <= 8``) with ``σ = max(1/√8, 8λ/π)``,
    so that ``|p/σ| <= π/8``: the dual variable never pushes a wrapped
    difference onto another branch. The energy is not convex, so a
    primal-dual gap would certify nothing (and a difference sitting at ±π may
    flip branch for ever): the iteration stops when ``E`` changes by less than ``tol``,
    relatively, over ``check_every`` iterations. ``cyclic=False`` runs the same
    iteration on ``Σ a/2 (θ - φ)² + λ TV(θ)`` (plain differences and
    shrinkage): ordinary TV on the wrapped phase, the baseline.

    The iteration runs on the selected device and copies one number to the
    host per check (none with ``tol=0``).

    Parameters
    ----------
    phase : (nx, ny) array, real
        Noisy phase φ [rad], any branch.
    weight : float
        λ > 0 [relative to the data term, per pixel edge].
    data_weight : (nx, ny) array, optional
        Per-pixel confidence ``a >= 0`` (e.g. the amplitude); default 1.
    cyclic : bool
        TV on S¹ (True) or on R (False).
    max_num_iter : int
    tol : float
        Relative change of the energy over ``check_every`` iterations to stop
        at; 0 runs every iteration and evaluates no energy on the way.
    check_every : int

    Returns
    -------
    TVS1Result
    """
    phi, weight, a = check_phase_data(phase, weight, data_weight)
    max_num_iter = check_iterations(max_num_iter)
    check_every = check_iterations(check_every, "check_every")
    tol = check_tolerance(tol)
    theta, held, it, converged = tv_s1_iterations(phi, weight, a, cyclic=cyclic, max_num_iter=max_num_iter,
                                                  tol=tol, check_every=check_every)
    energy = float(_s1_energy(theta, phi, weight, a, cyclic))
    return TVS1Result(theta, it, held, energy, converged)


def tv_s1_iterations(phi, weight: float, data_weight, *, cyclic: bool = True, max_num_iter: int = 500,
                     tol: float = 0.0, check_every: int = 10):
    """The iteration of :func:`tv_s1_denoise` on data already checked: no validation, no final energy.

    For callers that run the denoiser inside their own loop (the phase
    prior of :func:`mbook.inverse.cdi.phase_prior`): with ``tol=0`` it
    copies nothing to the host.

    Parameters
    ----------
    phi : (nx, ny) float array
        Phase [rad], on the device (as :func:`check_phase_data` returns it).
    weight : float
        λ > 0.
    data_weight : (nx, ny) float array
        ``a >= 0``, on the same device.
    cyclic : bool
    max_num_iter, check_every : int
    tol : float
        As in :func:`tv_s1_denoise`.

    Returns
    -------
    phase : (nx, ny) array
        Wrapped to [-π, π) when ``cyclic`` [rad].
    iterate_bytes : int
    num_iter : int
    converged : bool
    """
    xp = backend.get_array_module(phi)
    a = data_weight
    sigma = max(1 / math.sqrt(8), 8 * weight / math.pi)
    tau = 0.99 / (8 * sigma)
    theta = phi.copy()
    theta_bar = theta.copy()
    p = xp.zeros((2,) + phi.shape)
    held = theta.nbytes + theta_bar.nbytes + p.nbytes + phi.nbytes + a.nbytes
    energy = _s1_energy(theta, phi, weight, a, cyclic) if tol > 0 else None
    converged, it = False, 0
    # Each iteration: the gradient and the divergence (3 and 5 kernels on a GPU), one reduction, and
    # three fused kernels for everything element-wise: 12 kernels on a GPU (49 before).
    for it in range(1, max_num_iter + 1):
        if cyclic:
            y, turns, w, w_squared = _dual_ascent(p, gradient(theta_bar), sigma)
            p = _dual_prox(y, turns, w, w_squared.sum(axis=0, keepdims=True), sigma, weight / sigma)
        else:
            p = project_ball(p + sigma * gradient(theta_bar), weight)
        theta, theta_bar = (_primal_step_s1 if cyclic else _primal_step_r)(theta, divergence(p), a, phi, tau)
        if tol > 0 and it % check_every == 0:
            previous, energy = energy, _s1_energy(theta, phi, weight, a, cyclic)
            if bool(abs(previous - energy) <= tol * xp.maximum(abs(energy), 1e-30)):  # one copy per check
                converged = True
                break
    return (wrap(theta) if cyclic else theta), int(held), it, converged
