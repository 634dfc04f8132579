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
>>> from mbook.inverse import circle
>>> rng = np.random.default_rng(0)
>>> clean = np.where(np.arange(32)[:, None] < 16, 3.0, -3.0) * np.ones((32, 32))
>>> noisy = circle.wrap(clean + 0.4 * rng.standard_normal(clean.shape))
>>> result = circle.tv_s1_denoise(noisy, 0.5, max_num_iter=300)
>>> error = lambda p: float(np.sqrt(np.mean(circle.wrap(p - clean) ** 2)))
>>> bool(error(result.phase) < 0.5 * error(noisy))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend
from mbook.core.checks import check_positive_number
from mbook.inverse.optimize import divergence, gradient, project_ball
from mbook.core.checks import check_finite_array, check_iterations

TWO_PI = 2 * math.pi


def wrap(phase):
    """Wrap angles to [-π, π) [rad]."""
    xp = backend.get_array_module(phase)
    return xp.mod(phase + math.pi, TWO_PI) - math.pi


def total_variation_s1(phase, *, cyclic: bool = True) -> float:
    """Isotropic TV of a phase map with wrapped differences, ``Σ |W(∇θ)|`` [rad]."""
    xp = backend.get_array_module(phase)
    g = gradient(phase)
    g = wrap(g) if cyclic else g
    return float(xp.sum(xp.sqrt(xp.sum(g**2, axis=0))))


def s1_energy(phase, data, weight, *, data_weight=None, cyclic: bool = True) -> float:
    """``Σ a (1 - cos(θ - φ)) + λ TV_S1(θ)`` (``cyclic``) or ``Σ a/2 (θ - φ)² + λ TV(θ)``."""
    xp = backend.get_array_module(phase)
    a = 1.0 if data_weight is None else data_weight
    fidelity = a * (1 - xp.cos(phase - data)) if cyclic else 0.5 * a * (phase - data) ** 2
    return float(xp.sum(fidelity)) + weight * total_variation_s1(phase, cyclic=cyclic)


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
        Same shape as ``difference``.
    """
    xp = backend.get_array_module(difference)
    turns = xp.round(difference / TWO_PI)
    w = difference - TWO_PI * turns
    if axis is None:
        shrunk = xp.sign(w) * xp.maximum(xp.abs(w) - threshold, 0)
    else:
        shrunk = w - project_ball(w, threshold, axis=axis)
    return TWO_PI * turns + shrunk


class TVS1Result(NamedTuple):
    """Result of a TV-S¹ solver: the phase in [-π, π) (NumPy), iterations used,
    the bytes held by the iterates and data during the iteration, the energy
    ``E(θ)`` of the result and whether the stopping rule was met."""

    phase: np.ndarray
    num_iter: int
    iterate_bytes: int
    energy: float
    converged: bool


def check_phase_data(phase, weight, data_weight):
    phase = check_finite_array(phase, "phase", ndim=2, real=True)
    xp = backend.get_array_module(phase)
    phase = phase.astype(xp.float64)
    weight = check_positive_number(weight, "weight")
    if data_weight is None:
        data_weight = xp.ones_like(phase)
    else:
        data_weight = check_finite_array(data_weight, "data_weight", ndim=2, real=True).astype(xp.float64)
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
    difference onto another branch. The energy is not convex, so there is no
    duality gap to stop by (and a difference sitting at ±π may flip branch
    for ever): the iteration stops when ``E`` changes by less than ``tol``,
    relatively, over ``check_every`` iterations. ``cyclic=False`` runs the same
    iteration on ``Σ a/2 (θ - φ)² + λ TV(θ)`` (plain differences and
    shrinkage): ordinary TV on the wrapped phase, the baseline.

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
        Relative change of the energy over ``check_every`` iterations to stop at.
    check_every : int

    Returns
    -------
    TVS1Result
    """
    phi, weight, a = check_phase_data(phase, weight, data_weight)
    max_num_iter = check_iterations(max_num_iter)
    check_every = check_iterations(check_every, "check_every")
    xp = backend.get_array_module(phi)
    sigma = max(1 / math.sqrt(8), 8 * weight / math.pi)
    tau = 0.99 / (8 * sigma)
    data = xp.exp(1j * phi)
    theta = phi.copy()
    theta_bar = theta.copy()
    p = xp.zeros((2,) + phi.shape)
    held = theta.nbytes + theta_bar.nbytes + p.nbytes + data.nbytes + phi.nbytes + a.nbytes
    energy = s1_energy(theta, phi, weight, data_weight=a, cyclic=cyclic)
    converged, it = False, 0
    for it in range(1, max_num_iter + 1):
        y = p + sigma * gradient(theta_bar)
        if cyclic:
            p = y - sigma * two_way_shrinkage(y / sigma, weight / sigma, axis=0)
        else:
            p = project_ball(y, weight)
        theta_tilde = theta + tau * divergence(p)
        if cyclic:
            z_tilde = xp.exp(1j * theta_tilde)
            z = (z_tilde + tau * a * data) / (1 + tau * a)  # backward Euler in R²
            theta_new = theta_tilde + xp.angle(z * xp.conj(z_tilde))  # projection onto S¹
        else:
            theta_new = (theta_tilde + tau * a * phi) / (1 + tau * a)
        theta_bar = 2 * theta_new - theta
        theta = theta_new
        if it % check_every == 0:
            previous, energy = energy, s1_energy(theta, phi, weight, data_weight=a, cyclic=cyclic)
            if abs(previous - energy) <= tol * max(abs(energy), 1e-30):
                converged = True
                break
    energy = s1_energy(theta, phi, weight, data_weight=a, cyclic=cyclic)
    out = wrap(theta) if cyclic else theta
    return TVS1Result(backend.asnumpy(out), it, int(held), energy, converged)

