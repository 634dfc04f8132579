"""Phase retrieval for coherent diffraction imaging (CDI): ER, HIO and RAAR.

Coherent diffraction imaging (Miao et al. 1999): a compact object ``o`` is
illuminated by a plane wave and only the far-field intensity
``I = |F o|²`` is recorded. Oversampling (the support covers at most half of
the array) makes the phase recoverable by alternating projections between
the set of fields with the measured Fourier modulus and the set of fields
vanishing outside the support: error reduction (ER), Fienup's hybrid
input-output (HIO, Fienup 1982) and relaxed averaged alternating
reflections (RAAR, Luke 2005).

A phase prior can act between projections (:func:`phase_prior`): total
variation on the circle S¹ by approach 1 (:func:`mbook.inverse.circle.tv_s1_denoise`)
or approach 2, functional lifting (:func:`mbook.inverse.lifting.tv_s1_lifting`),
or ordinary TV on the wrapped phase.

Examples
--------
>>> import numpy as np
>>> from mbook.inverse import cdi
>>> obj = np.zeros((32, 32), complex); obj[8:20, 10:18] = np.exp(0.3j)
>>> support = abs(obj) > 0
>>> result = cdi.retrieve_phase(cdi.diffraction_intensity(obj), support,
...                             method="raar", max_num_iter=200, seed=1)
>>> bool(result.errors[-1] < 1e-3)
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend
from mbook.core.checks import check_positive_number
from mbook.core.checks import check_finite_array, check_iterations
from mbook.inverse.circle import tv_s1_denoise, wrap
from mbook.inverse.lifting import tv_s1_lifting

METHODS = ("er", "hio", "raar")
PRIORS = ("tv-s1", "lifting", "tv")


def diffraction_intensity(obj):
    """Far-field intensity ``|F o|²`` of an exit wave (unnormalised FFT, :mod:`mbook.core.grids`).

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
        (:func:`mbook.inverse.lifting.tv_s1_lifting`), or ordinary TV on the wrapped phase.
    max_num_iter : int
        Iterations of the denoiser per call.
    **options
        Passed to the denoiser (e.g. ``num_labels`` for lifting).
    """
    weight = check_positive_number(weight, "weight")
    if kind not in PRIORS:
        raise ValueError(f"kind must be one of {PRIORS}, got {kind!r}")
    if kind == "lifting":
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
