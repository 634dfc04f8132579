"""Phase retrieval (CDI) with ER, HIO and RAAR, and total variation on the circle S¹.

Coherent diffraction imaging (Miao et al. 1999): a compact object ``o`` is
illuminated by a plane wave and only the far-field intensity
``I = |F o|²`` is recorded. Oversampling (the support covers at most half of
the array) makes the phase recoverable by alternating projections between
the set of fields with the measured Fourier modulus and the set of fields
vanishing outside the support: error reduction (ER), Fienup's hybrid
input-output (HIO, Fienup 1982) and relaxed averaged alternating
reflections (RAAR, Luke 2005).

A phase is a point of the circle S¹, not of R: total variation on the phase
must measure jumps by the wrapped difference ``W(θ_i - θ_j)`` in (-π, π].
:func:`tv_s1_denoise` minimises

``E(θ) = Σ a (1 - cos(θ - φ)) + λ Σ |W(∇θ)|``

by a primal-dual iteration that alternates between Rⁿ and S¹ (white paper
§3.2.2, approach 1): the primal step solves the backward-Euler equation in
the plane R² ⊃ S¹ and projects the solution onto S¹; the dual step uses the
two-way shrinkage operator (:func:`two_way_shrinkage`), the proximal map of
the wrapped absolute difference. Approach 2, functional lifting, is in
:mod:`mbook.lifting`. Both serve as the phase prior inside
:func:`retrieve_phase` through :func:`phase_prior`.

Examples
--------
>>> import numpy as np
>>> from mbook import phase
>>> obj = np.zeros((32, 32), complex); obj[8:20, 10:18] = np.exp(0.3j)
>>> support = abs(obj) > 0
>>> result = phase.retrieve_phase(phase.diffraction_intensity(obj), support,
...                               method="raar", max_num_iter=200, seed=1)
>>> bool(result.errors[-1] < 1e-3)
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook import backend
from mbook.grids import check_positive_number
from mbook.optimize import check_finite_array, check_iterations, divergence, gradient, project_ball

METHODS = ("er", "hio", "raar")
PRIORS = ("tv-s1", "lifting", "tv")
TWO_PI = 2 * math.pi


# ---------------------------------------------------------------------------------------
# CDI: forward model, projections, iterative algorithms
# ---------------------------------------------------------------------------------------
def diffraction_intensity(obj):
    """Far-field intensity ``|F o|²`` of an exit wave (unnormalised FFT, :mod:`mbook.grids`).

    Parameters
    ----------
    obj : (nx, ny) array, complex
        Exit wave, zero outside the object's support, in an array at least
        twice the support's area (oversampling).

    Returns
    -------
    (nx, ny) array, float
        Intensity in FFT order [counts up to a scale].
    """
    obj = check_finite_array(obj, "obj", ndim=2)
    return backend.get_array_module(obj).abs(backend.fft2(obj)) ** 2


def check_cdi_data(intensity, support):
    """Validate CDI data: finite non-negative intensities and an oversampled support.

    Returns
    -------
    (intensity, support) : (float array, bool array)

    Raises
    ------
    ValueError
        Non-finite or negative intensities, mismatched shapes, an empty support,
        or a support larger than half the array (oversampling ratio below 2,
        the limit for a unique solution in 2D, Miao et al. 1999).
    """
    intensity = check_finite_array(intensity, "intensity", ndim=2, real=True)
    xp = backend.get_array_module(intensity)
    minimum = float(intensity.min())
    if minimum < 0:
        raise ValueError(
            f"intensity must be >= 0 everywhere, got a minimum of {minimum:.3g}; "
            "clip the background-subtracted data at 0 before phase retrieval"
        )
    support = xp.asarray(support)
    if support.shape != intensity.shape:
        raise ValueError(f"support shape {support.shape} must match intensity shape {intensity.shape}")
    if support.dtype != bool:
        if not bool(xp.all((support == 0) | (support == 1))):
            raise ValueError("support must be boolean (or 0/1 valued)")
        support = support.astype(bool)
    count = int(support.sum())
    if count == 0:
        raise ValueError("support is empty: it must mark at least one pixel of the object")
    ratio = support.size / count
    if ratio < 2:
        raise ValueError(
            f"support covers {count} of {support.size} pixels: oversampling ratio {ratio:.2f} is below 2, "
            "the minimum for a unique 2D phase retrieval; pad the object or tighten the support"
        )
    return intensity.astype(xp.float64), support


def project_modulus(field, amplitude):
    """Projection onto the fields whose Fourier modulus is ``amplitude``.

    ``P_M ψ = F⁻¹[ amplitude · Fψ / |Fψ| ]`` (phase 1 where ``Fψ = 0``).

    Returns
    -------
    (projected field, relative Fourier error ``‖|Fψ| - amplitude‖ / ‖amplitude‖``)
    """
    xp = backend.get_array_module(field)
    spectrum = backend.fft2(field)
    modulus = xp.abs(spectrum)
    error = float(xp.linalg.norm(modulus - amplitude) / xp.linalg.norm(amplitude))
    phase_factor = xp.where(modulus > 0, spectrum / xp.maximum(modulus, 1e-300), 1.0)
    return backend.ifft2(amplitude * phase_factor), error


class CDIResult(NamedTuple):
    """Result of :func:`retrieve_phase`: the object estimate (NumPy), the support
    error ``‖P_M ψ outside S‖ / ‖P_M ψ‖`` at each iteration (0 at an exact
    solution), and the method used."""

    obj: np.ndarray
    errors: np.ndarray
    method: str


def retrieve_phase(intensity, support, *, method: str = "raar", beta: float = 0.9,
                   max_num_iter: int = 300, seed: int = 0, initial=None, prior=None,
                   prior_every: int = 1) -> CDIResult:
    """Phase retrieval from an oversampled far-field intensity and a support.

    With ``P_M`` the modulus projection and ``P_S`` the support projection:

    - ER: ``ψ ← P_S P_M ψ``;
    - HIO (Fienup 1982): ``ψ ← P_M ψ`` inside S, ``ψ - β P_M ψ`` outside;
    - RAAR (Luke 2005): ``ψ ← β/2 (R_S R_M + I) ψ + (1 - β) P_M ψ`` with
      reflections ``R = 2P - I``; inside S this is ``P_M ψ``, outside
      ``β ψ + (1 - 2β) P_M ψ``.

    A ``prior`` (e.g. from :func:`phase_prior`) replaces the values inside the
    support by ``prior(P_S P_M ψ)`` every ``prior_every`` iterations: a
    proximal step of the regulariser in place of the plain support projection.

    Parameters
    ----------
    intensity : (nx, ny) array
        Measured far-field intensity in FFT order [counts], >= 0.
    support : (nx, ny) array, bool
        Where the object may be non-zero; at most half the array.
    method : {"er", "hio", "raar"}
    beta : float
        Feedback (HIO) or relaxation (RAAR) parameter in (0, 1).
    max_num_iter : int
    seed : int
        Seed of the random initial phases.
    initial : (nx, ny) array, optional
        Starting field instead of random phases on the support.
    prior : callable, optional
        ``prior(obj) -> obj`` applied to the support-projected estimate.
    prior_every : int

    Returns
    -------
    CDIResult
        ``obj`` is ``P_S P_M ψ`` of the last iterate (with the prior, if any).
    """
    intensity, support = check_cdi_data(intensity, support)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    beta = check_positive_number(beta, "beta", upper=1.0)
    max_num_iter = check_iterations(max_num_iter)
    prior_every = check_iterations(prior_every, "prior_every")
    xp = backend.get_array_module(intensity)
    amplitude = xp.sqrt(intensity)
    if initial is None:
        rng = np.random.default_rng(seed)
        scale = math.sqrt(float(intensity.sum()) / intensity.size / int(support.sum()))
        psi = xp.asarray(scale * np.exp(2j * np.pi * rng.random(support.shape))) * support
    else:
        psi = check_finite_array(initial, "initial", ndim=2).astype(complex)
        if psi.shape != support.shape:
            raise ValueError(f"initial shape {psi.shape} must match intensity shape {support.shape}")
    errors = []
    total = float(intensity.sum()) / intensity.size  # ‖P_M ψ‖² by Parseval
    for it in range(max_num_iter):
        pm, _ = project_modulus(psi, amplitude)
        inside = pm * support
        errors.append(math.sqrt(float(xp.sum(xp.abs(pm[~support]) ** 2)) / total))
        if prior is not None and (it + 1) % prior_every == 0:
            inside = prior(inside) * support
        if method == "er":
            psi = inside
        elif method == "hio":
            psi = xp.where(support, inside, psi - beta * pm)
        else:
            psi = xp.where(support, inside, beta * psi + (1 - 2 * beta) * pm)
    pm, _ = project_modulus(psi, amplitude)
    obj = pm * support
    if prior is not None:
        obj = prior(obj) * support
    return CDIResult(backend.asnumpy(obj), np.asarray(errors), method)


def twin(obj):
    """The twin image ``conj(o(-x))`` on the periodic grid: same Fourier modulus as ``o``."""
    xp = backend.get_array_module(obj)
    return xp.conj(xp.roll(obj[::-1, ::-1], 1, axis=(0, 1)))


def align_to_reference(estimate, reference, *, allow_twin: bool = True):
    """Remove the trivial ambiguities of phase retrieval before comparing with the truth.

    ``o``, ``e^{ic} o``, ``o(x - s)`` and the twin ``conj(o(-x))`` all have the
    same Fourier modulus. Returns the candidate (twin or not, shifted by the
    integer cross-correlation peak of the moduli, global phase fitted by least
    squares) closest to ``reference``.

    Returns
    -------
    (nx, ny) ndarray, complex (NumPy)
    """
    estimate, reference = backend.asnumpy(estimate), backend.asnumpy(reference)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate shape {estimate.shape} must match reference shape {reference.shape}")
    best, best_distance = None, np.inf
    for candidate in ([estimate, twin(estimate)] if allow_twin else [estimate]):
        correlation = np.fft.ifft2(np.fft.fft2(abs(reference)) * np.conj(np.fft.fft2(abs(candidate))))
        shift = np.unravel_index(np.argmax(correlation.real), correlation.shape)
        candidate = np.roll(candidate, shift, axis=(0, 1))
        candidate = candidate * np.exp(1j * np.angle(np.vdot(candidate, reference)))
        distance = np.linalg.norm(candidate - reference)
        if distance < best_distance:
            best, best_distance = candidate, distance
    return best


def phase_error(estimate, reference, support, *, align: bool = True) -> float:
    """RMS wrapped phase difference over the support [rad], after :func:`align_to_reference`."""
    support = backend.asnumpy(support).astype(bool)
    estimate = align_to_reference(estimate, reference) if align else backend.asnumpy(estimate)
    difference = wrap(np.angle(estimate) - np.angle(backend.asnumpy(reference)))
    return float(np.sqrt(np.mean(difference[support] ** 2)))


# ---------------------------------------------------------------------------------------
# total variation on the circle, approach 1: PDHG between Rⁿ and S¹
# ---------------------------------------------------------------------------------------
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


def _check_phase_data(phase, weight, data_weight):
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
    phi, weight, a = _check_phase_data(phase, weight, data_weight)
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


def phase_prior(weight: float, *, kind: str = "tv-s1", max_num_iter: int = 30, **options):
    """A phase regulariser for :func:`retrieve_phase`: denoise the phase, keep the modulus.

    Returns ``prior(obj)`` that crops ``obj`` to the bounding box of its
    non-zero pixels, denoises ``arg obj`` with the modulus (normalised to RMS 1)
    as data weight, and returns ``|obj| e^{iθ}``.

    Parameters
    ----------
    weight : float
        Regularisation weight λ > 0.
    kind : {"tv-s1", "lifting", "tv"}
        Approach 1 (:func:`tv_s1_denoise`), approach 2
        (:func:`mbook.lifting.tv_s1_lifting`), or ordinary TV on the wrapped phase.
    max_num_iter : int
        Iterations of the denoiser per call.
    **options
        Passed to the denoiser (e.g. ``num_labels`` for lifting).
    """
    weight = check_positive_number(weight, "weight")
    if kind not in PRIORS:
        raise ValueError(f"kind must be one of {PRIORS}, got {kind!r}")
    if kind == "lifting":
        from mbook.lifting import tv_s1_lifting

        def denoise(phi, a):
            return tv_s1_lifting(phi, weight, data_weight=a, max_num_iter=max_num_iter, **options).phase
    else:
        def denoise(phi, a):
            return tv_s1_denoise(phi, weight, data_weight=a, cyclic=kind == "tv-s1",
                                 max_num_iter=max_num_iter, **options).phase

    def prior(obj):
        xp = backend.get_array_module(obj)
        modulus = xp.abs(obj)
        rows, cols = (backend.asnumpy(xp.nonzero(xp.any(modulus > 0, axis=k))[0]) for k in (1, 0))
        if rows.size == 0:
            return obj
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        m = modulus[box]
        a = m / math.sqrt(float(xp.mean(m[m > 0] ** 2)))
        out = obj.copy()
        out[box] = m * xp.exp(1j * xp.asarray(denoise(xp.angle(obj[box]), a)))
        return out

    return prior
