"""EDX meets HAADF: the per-column composition of an alloy nanoparticle from few X-rays and Z-contrast.

The measurements are those of :mod:`mbook.multimodal.alloys`: per column, Poisson X-ray counts of the
two elements' lines, and a HAADF signal ``m_c = E_c N_c (s_B + (s_A - s_B) f_c)`` whose per-atom
signals ``s ∝ Z^γ`` are not known in advance. EDX alone estimates ``f_c`` from its few counts
(:func:`estimate_edx`). HAADF alone is precise but needs its calibration ``(s_A, s_B)``, i.e. γ and a
scale. The fused estimate (:func:`estimate_fused`) minimises the EDX Poisson negative log-likelihood
plus the HAADF weighted least squares (:func:`objective`, with its hand-written gradient): the EDX
counts of all columns pooled fix the calibration, and the HAADF then fixes each column.

Device rule: everything runs on the selected device; the solver copies one number to the host per
convergence check.

Examples
--------
>>> from mbook.multimodal import alloys, edx
>>> particle = alloys.alloy_nanoparticle(("Au", "Ag"), length=5, seed=0)
>>> data = alloys.simulate(particle, dose=4e6, haadf_cross_sections=(1.9e-3, 7e-4), seed=1)
>>> fused = edx.estimate_fused(data)
>>> edx.composition_rmse(fused.composition, particle.composition) < 0.1
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from ase.data import atomic_numbers

from mbook.core import backend, checks, fusion, progress
from mbook.multimodal.alloys import EDXHAADFData, check_data


class FusionResult(NamedTuple):
    """Result of :func:`estimate_fused`.

    Attributes
    ----------
    composition : (K,) ndarray
        MAP fraction of A per column, on the selected device.
    haadf_cross_sections : tuple of float
        Fitted per-atom HAADF signals ``(s_A, s_B)`` [fraction of the electrons through the column's cell,
        per atom] (:func:`mbook.multimodal.alloys.haadf_cross_sections`).
    gamma : float
        Fitted Z-exponent, ``log(s_A / s_B) / log(Z_A / Z_B)``.
    num_iter : int
        Newton iterations run.
    converged : bool
        Whether the relative change of the objective fell below ``tol`` at a check.
    objectives : (num_checks,) ndarray
        The objective at each check, on the selected device.
    """

    composition: object
    haadf_cross_sections: tuple
    gamma: float
    num_iter: int
    converged: bool
    objectives: object


# ----------------------------------------------------------------------------- the objective
_FLOOR = 1e-9  # fractions are kept in [_FLOOR, 1 - _FLOOR] so that log f stays finite


def _edx_rates(data):
    """X-ray counts per unit fraction: μ_A = r_A f, μ_B = r_B (1 - f)."""
    scale = data.electrons[:, None] * data.atoms_per_column[:, None] * data.yields[None, :] * data.absorption
    return scale[:, 0], scale[:, 1]


def _haadf_weights(data, model_error):
    """1 / variance of each HAADF signal, from the data: Poisson plus the relative model error."""
    return 1.0 / (data.haadf + (model_error * data.haadf) ** 2 + 1.0)


def _terms(f, s, data, weights, prior):
    """Objective per column and its derivative in f, and the HAADF residual (for the gradient in s).

    ``f`` is ``(..., K)`` and ``s`` ``(..., 2)``: leading axes are candidate calibrations.
    """
    xp = backend.get_array_module(f)
    r_a, r_b = _edx_rates(data)
    k_a, k_b = data.edx[:, 0], data.edx[:, 1]
    g = 1.0 - f
    value = r_a * f - k_a * xp.log(r_a * f) + r_b * g - k_b * xp.log(r_b * g)
    derivative = r_a - k_a / f - r_b + k_b / g
    # Beta(prior, prior) prior on f: -(prior - 1) (log f + log(1 - f)).
    value = value - (prior - 1.0) * (xp.log(f) + xp.log(g))
    derivative = derivative - (prior - 1.0) * (1.0 / f - 1.0 / g)
    base = data.electrons * data.atoms_per_column
    residual = None
    if weights is not None:
        s_a, s_b = s[..., 0, None], s[..., 1, None]
        residual = base * (s_b + (s_a - s_b) * f) - data.haadf
        value = value + 0.5 * weights * residual**2
        derivative = derivative + weights * residual * base * (s_a - s_b)
    return value, derivative, residual, base


def objective(composition, haadf_cross_sections, data: EDXHAADFData, *, model_error: float = 0.03,
              prior: float = 1.0, haadf: bool = True):
    """The joint negative log-posterior and its gradient (hand-written).

    ``J(f, s) = Σ_c [μ_cA - k_cA log μ_cA + μ_cB - k_cB log μ_cB]
    + ½ Σ_c w_c (E_c N_c (s_B + (s_A - s_B) f_c) - h_c)² - (prior - 1) Σ_c log(f_c (1 - f_c))``,
    with ``w_c = 1 / (h_c + (model_error h_c)² + 1)`` (the HAADF variance estimated from the data).

    Parameters
    ----------
    composition : (K,) array_like
        Fractions ``f_c`` in (0, 1).
    haadf_cross_sections : (float, float)
        ``(s_A, s_B)`` [fraction of the electrons through the column's cell, per atom].
    data : EDXHAADFData
    model_error : float
        Relative HAADF model error in [0, 1).
    prior : float
        Beta(prior, prior) prior on each fraction, >= 1 (1: flat).
    haadf : bool
        Include the HAADF term (False: EDX alone).

    Returns
    -------
    value : float
    gradient_composition : (K,) ndarray
        ``∂J/∂f_c``, on the selected device.
    gradient_cross_sections : (2,) ndarray
        ``(∂J/∂s_A, ∂J/∂s_B)``, on the selected device.
    """
    data = check_data(data)
    f = checks.check_array(composition, "composition", ndim=1, real=True).astype(np.float64)
    if f.shape != data.haadf.shape:
        raise ValueError(f"composition must have one value per column {data.haadf.shape}, got {f.shape}")
    if bool(((f <= 0) | (f >= 1)).any()):
        raise ValueError("composition must lie in (0, 1) in every column")
    s = _check_cross_sections(haadf_cross_sections)
    model_error = checks.check_number(model_error, "model_error", lower=0, upper=1, upper_inclusive=False)
    prior = checks.check_number(prior, "prior", lower=1)
    xp = backend.get_array_module(f)
    weights = _haadf_weights(data, model_error) if haadf else None
    value, derivative, residual, base = _terms(f, xp.asarray(s), data, weights, prior)
    if residual is None:
        grad_s = xp.zeros(2)
    else:
        wr = weights * residual * base
        grad_s = xp.stack([xp.sum(wr * f), xp.sum(wr * (1.0 - f))])
    return float(xp.sum(value)), derivative, grad_s


def _check_cross_sections(value):
    return tuple(checks.check_positive_number(v, "haadf_cross_sections")
                 for v in checks.as_tuple(value, "haadf_cross_sections", 2))


# ----------------------------------------------------------------------------- the estimators
#: Bisection steps: 52 halvings of [0, 1] reach float64's resolution.
_BISECTION_STEPS = 52


@fusion.elementwise
def _bisection(xp, a, b, p, q):
    """Root in (0, 1) of the increasing ``a + b f - p / f + q / (1 - f)`` (clamped to the floor), per element.

    The whole bisection, unrolled, is one kernel on a GPU (:mod:`mbook.core.fusion`): 52 steps of a
    few operations on a few thousand columns are otherwise 600 kernel launches per solve.
    """
    lower = a * 0.0 + _FLOOR  # broadcast to the shape of the coefficients
    upper = lower * 0.0 + (1.0 - _FLOOR)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (lower + upper)
        positive = a + b * middle - p / middle + q / (1.0 - middle) > 0
        upper = xp.where(positive, middle, upper)
        lower = xp.where(positive, lower, middle)
    return 0.5 * (lower + upper)


def _solve_columns(s, data, weights, prior):
    """Per-column minimiser of the (convex) objective in f, by bisection on its derivative.

    Each column's objective is convex in f (Poisson terms and a least-squares term), so its derivative
    is increasing: bisection on [_FLOOR, 1 - _FLOOR] halves the bracket each step, 52 steps reach
    machine precision; every column (and every candidate calibration ``s``, ``(..., 2)``) at once,
    nothing copied to the host.
    """
    xp = backend.get_array_module(data.edx)
    # ∂J/∂f of _terms gathered into a + b f - p / f + q / (1 - f), its coefficients made once: a bisection
    # step is then ten element-wise operations instead of forty (on a GPU, each a kernel launch).
    r_a, r_b = _edx_rates(data)
    a = r_a - r_b
    p = data.edx[:, 0] + (prior - 1.0)
    q = data.edx[:, 1] + (prior - 1.0)
    b = 0.0
    if weights is not None:
        base = data.electrons * data.atoms_per_column
        delta = s[..., 0, None] - s[..., 1, None]
        # w (base (s_B + δ f) - h) base δ = w base δ (base s_B - h) + w base² δ² f
        a = a + weights * base * delta * (base * s[..., 1, None] - data.haadf)
        b = weights * (base * delta) ** 2
    shape = s.shape[:-1] + data.haadf.shape
    zeros = xp.zeros(shape)  # every argument of the kernel at the result's shape: no broadcast left to it
    return _bisection(a + zeros, b + zeros, p + zeros, q + zeros)


def _fit_cross_sections(f, data, weights):
    """Weighted least squares of the HAADF model in (s_A, s_B) for fixed f: 2 x 2 normal equations."""
    xp = backend.get_array_module(f)
    base = data.electrons * data.atoms_per_column
    u, v = base * f, base * (1.0 - f)  # m = s_A u + s_B v
    a11, a12, a22 = xp.sum(weights * u * u), xp.sum(weights * u * v), xp.sum(weights * v * v)
    b1, b2 = xp.sum(weights * u * data.haadf), xp.sum(weights * v * data.haadf)
    det = a11 * a22 - a12 * a12
    return xp.stack([(a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det])


def _curvature(f, s, data, weights, prior):
    """``∂²J/∂f_c²`` per column (``f`` ``(..., K)``, ``s`` ``(..., 2)``)."""
    base = data.electrons * data.atoms_per_column
    k_a, k_b = data.edx[:, 0], data.edx[:, 1]
    delta = s[..., 0, None] - s[..., 1, None]
    return (k_a / f**2 + k_b / (1.0 - f) ** 2 + (prior - 1.0) * (1.0 / f**2 + 1.0 / (1.0 - f) ** 2)
            + weights * (base * delta) ** 2)


def _laplace(f, s, data, weights, prior):
    """The Laplace approximation's correction per column: ``½ log ∂²J/∂f_c²``.

    ``-log ∫ exp(-J) df_c ≈ J(f_c*) + ½ log J_cc - ½ log 2π``: integrating each column's fraction out
    instead of maximising over it. Without it the calibration is biased (many nuisance parameters, a
    few counts each: the incidental-parameter problem of Neyman and Scott): the HAADF term alone
    favours a large ``s_A - s_B``, which squeezes every fraction towards the middle.
    """
    xp = backend.get_array_module(f)
    return 0.5 * xp.log(_curvature(f, s, data, weights, prior))


def _newton_direction(f, s, data, weights, prior, marginal):
    """Newton direction of the profile ``P(s) = min_f J(f, s)`` (the fractions eliminated).

    By the envelope theorem ``∇P = ∂J/∂s`` at the per-column minimiser, and its Hessian is the Schur
    complement ``J_ss - Σ_c J_sc J_cs / J_cc`` (``J_ff`` is diagonal: the columns only meet through
    ``s``); columns held at a bound of [0, 1] do not move with ``s`` and drop out of the correction.
    With ``marginal`` the gradient of the Laplace term (:func:`_laplace`) is added; the Hessian stays the
    profile's (positive definite), and the line search on the full objective keeps the descent.
    """
    xp = backend.get_array_module(f)
    base = data.electrons * data.atoms_per_column
    delta = s[0] - s[1]
    residual = base * (s[1] + delta * f) - data.haadf
    u, v = base * f, base * (1.0 - f)
    gradient = xp.stack([xp.sum(weights * residual * u), xp.sum(weights * residual * v)])
    j_ss = xp.stack([xp.stack([xp.sum(weights * u * u), xp.sum(weights * u * v)]),
                     xp.stack([xp.sum(weights * u * v), xp.sum(weights * v * v)])])
    j_ff = _curvature(f, s, data, weights, prior)
    if marginal:  # the explicit gradient of Σ ½ log J_cc in s (its change through f is left out)
        slope = xp.sum(weights * base**2 * delta / j_ff)
        gradient = gradient + xp.stack([slope, -slope])
    active = (f > 2 * _FLOOR) & (f < 1.0 - 2 * _FLOOR)
    j_sf = xp.stack([weights * base * (base * delta * f + residual),
                     weights * base * (base * delta * (1.0 - f) - residual)])  # (2, K)
    j_sf = xp.where(active, j_sf, 0.0)
    hessian = j_ss - (j_sf / j_ff) @ j_sf.T
    det = hessian[0, 0] * hessian[1, 1] - hessian[0, 1] * hessian[1, 0]
    step = xp.stack([hessian[1, 1] * gradient[0] - hessian[0, 1] * gradient[1],
                     hessian[0, 0] * gradient[1] - hessian[1, 0] * gradient[0]]) / det
    return -step


#: Step lengths tried along each Newton direction; 0 keeps the current point, so the objective never rises.
_STEPS = (1.0, 0.5, 0.25, 0.1, 0.0)


def estimate_edx(data: EDXHAADFData, *, prior: float = 1.0):
    """Per-column MAP fraction of A from the EDX counts alone.

    Minimises the Poisson negative log-likelihood of both lines (with a Beta(prior, prior) prior) in each
    column, exactly, by bisection. With equal rates and a flat prior this is ``k_A / (k_A + k_B)``.

    Parameters
    ----------
    data : EDXHAADFData
    prior : float
        Beta prior parameter, >= 1 (1: flat, the maximum-likelihood estimate).

    Returns
    -------
    (K,) ndarray
        On the selected device.
    """
    data = check_data(data)
    prior = checks.check_number(prior, "prior", lower=1)
    return _solve_columns(backend.get_array_module(data.edx).zeros(2), data, None, prior)


def estimate_fused(data: EDXHAADFData, *, model_error: float = 0.03, prior: float = 1.0,
                   calibration: str = "marginal", max_num_iter: int = 100, tol: float = 1e-12,
                   check_every: int = 5) -> FusionResult:
    """Per-column composition and HAADF calibration from EDX and HAADF together.

    The fractions are the per-column MAP of :func:`objective` given the calibration ``(s_A, s_B)``: each
    column's problem is convex in ``f_c`` and solved exactly by bisection. The calibration is

    - ``"marginal"`` (default, Bayesian): the maximiser of the marginal posterior of ``s``, each column's
      fraction integrated out by Laplace's approximation (:func:`objective` at the per-column optimum
      plus ``½ Σ_c log ∂²J/∂f_c²``). At about one X-ray per column it is far less biased than the joint
      MAP, though not unbiased (Laplace's approximation of a column's integral is coarse at so few counts):
      on a 3 nm Au-Ag particle at 4e6 e/Å², γ comes out 0.08 high over 30 draws (± 0.007), the joint
      MAP's 0.27;
    - ``"joint"``: the joint MAP over fractions and calibration, which at low counts overestimates
      ``s_A - s_B`` (and γ): with one nuisance parameter per column the joint maximum is not consistent
      (Neyman and Scott's incidental-parameter problem).

    Either is found by a damped Newton iteration on the profile ``P(s) = min_f J(f, s)`` (gradient by
    the envelope theorem, Hessian by the Schur complement of the diagonal fraction block), trying the
    step lengths 1, 1/2, 1/4, 1/10 and 0 at once and keeping the best, so the objective never increases.
    (Alternating the two blocks instead crawls along the valley in which the HAADF alone cannot tell a
    change of calibration from a change of every fraction.) Starts from the calibration that fits the
    EDX-alone fractions. Stops when the objective changes by less than ``tol`` (relative) between
    checks.

    Parameters
    ----------
    data : EDXHAADFData
    model_error : float
        Relative HAADF model error assumed, in [0, 1).
    prior : float
        Beta prior parameter, >= 1.
    calibration : {"marginal", "joint"}
    max_num_iter : int
    tol : float
        Relative change of the objective between checks to stop at; 0 runs every iteration.
    check_every : int

    Returns
    -------
    FusionResult
    """
    data = check_data(data)
    model_error = checks.check_number(model_error, "model_error", lower=0, upper=1, upper_inclusive=False)
    prior = checks.check_number(prior, "prior", lower=1)
    marginal = checks.check_choice(calibration, "calibration", ("marginal", "joint")) == "marginal"
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_iterations(check_every, "check_every")
    # Every candidate step holds about a dozen per-column arrays during the bisection.
    progress.plan_batches(n_items=1, bytes_per_item=8 * 12 * len(_STEPS) * int(data.haadf.shape[0]))
    xp = backend.get_array_module(data.edx)
    weights = _haadf_weights(data, model_error)
    f = _solve_columns(xp.zeros(2), data, None, prior)
    s = _fit_cross_sections(f, data, weights)  # the calibration that fits the EDX-alone fractions
    f = _solve_columns(s, data, weights, prior)
    steps = xp.asarray(_STEPS)[:, None]
    history, converged, it, previous = [], False, 0, None
    for it in range(1, max_num_iter + 1):
        # Damped Newton on the profile: every step length at once, the best one kept (on the device).
        candidates = s[None, :] + steps * _newton_direction(f, s, data, weights, prior, marginal)[None, :]
        candidates = xp.maximum(candidates, 1e-300)
        fractions = _solve_columns(candidates, data, weights, prior)
        values = xp.sum(_terms(fractions, candidates, data, weights, prior)[0], axis=-1)
        if marginal:
            values = values + xp.sum(_laplace(fractions, candidates, data, weights, prior), axis=-1)
        best = xp.argmin(values)
        s, f, value = candidates[best], fractions[best], values[best]
        if it % check_every == 0 or it == max_num_iter:
            history.append(value)
            if tol > 0 and previous is not None and bool(xp.abs(previous - value) <= tol * xp.abs(value)):
                converged = True  # the one copy per check
                break
            previous = value
    s_a, s_b = (float(v) for v in s)
    z_a, z_b = atomic_numbers[data.elements[0]], atomic_numbers[data.elements[1]]
    gamma = math.log(s_a / s_b) / math.log(z_a / z_b) if s_a > 0 and s_b > 0 else float("nan")
    return FusionResult(f, (s_a, s_b), gamma, it, converged, xp.stack(history) if history else xp.zeros(0))


def composition_rmse(estimate, truth) -> float:
    """Root-mean-square difference of two per-column compositions (fractions)."""
    estimate = checks.check_array(estimate, "estimate", ndim=1, real=True)
    truth = checks.check_array(truth, "truth", ndim=1, real=True)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {estimate.shape} and {truth.shape}")
    xp = backend.get_array_module(estimate)
    return float(xp.sqrt(xp.mean((estimate - truth) ** 2)))
