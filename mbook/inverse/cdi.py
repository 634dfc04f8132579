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

Everything runs on the selected device (:mod:`mbook.core.backend`): inputs
are moved there once, the estimate and the error history come back there,
and the iterations copy nothing to the host.

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

from mbook.core import backend, checks, fusion, progress
from mbook.core.checks import (check_array, check_choice, check_iterations, check_positive_number,
                               check_tolerance)
from mbook.inverse.circle import tv_s1_iterations, wrap
from mbook.inverse.lifting import tv_s1_lifting_iterations

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
        Intensity in FFT order [counts up to a scale], on the selected device.
    """
    obj = check_array(obj, "obj", ndim=2)
    return backend.get_array_module(obj).abs(backend.fft2(obj)) ** 2


def check_cdi_data(intensity, support):
    """Validate CDI data: finite non-negative intensities and an oversampled support.

    ``intensity`` is one pattern ``(nx, ny)`` or a stack ``(b, nx, ny)`` of
    patterns of objects that share the ``(nx, ny)`` support.

    Returns
    -------
    (intensity, support) : (float64 array, bool array)
        On the selected device.

    Raises
    ------
    ValueError
        Non-finite or negative intensities, mismatched shapes, an empty support,
        or a support larger than half the array (oversampling ratio below 2,
        the limit for a unique solution in 2D, Miao et al. 1999).
    """
    intensity = check_array(intensity, "intensity", min_ndim=2, real=True)
    if intensity.ndim > 3:
        raise ValueError(f"intensity must be one pattern (nx, ny) or a stack (b, nx, ny), got shape {intensity.shape}")
    xp = backend.get_array_module(intensity)
    minimum = float(intensity.min())
    if minimum < 0:
        raise ValueError(
            f"intensity must be >= 0 everywhere, got a minimum of {minimum:.3g}; "
            "clip the background-subtracted data at 0 before phase retrieval"
        )
    support = check_array(support, "support", real=True)
    if support.shape != intensity.shape[-2:]:
        raise ValueError(f"support shape {support.shape} must match the patterns' shape {intensity.shape[-2:]}")
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


def _modulus_projection(field, amplitude):
    """``P_M ψ`` and ``|Fψ|`` (kernel: device arrays in and out)."""
    replaced, modulus = _replace_modulus(backend.fft2(field), amplitude)
    return backend.ifft2(replaced), modulus


@fusion.elementwise
def _replace_modulus(xp, spectrum, amplitude):
    """``amplitude · Fψ/|Fψ|`` (phase 1 where ``Fψ = 0``) and ``|Fψ|``: one kernel on a GPU."""
    modulus = xp.abs(spectrum)
    phase_factor = xp.where(modulus > 0, spectrum / xp.maximum(modulus, 1e-300), 1.0)
    return amplitude * phase_factor, modulus


@fusion.elementwise
def _outside_power(xp, pm, outside):
    return xp.abs(pm * outside) ** 2


def _hio_outside(psi, pm, beta):
    """HIO outside the support: ``ψ - β P_M ψ``."""
    return psi - beta * pm


def _raar_outside(psi, pm, beta, weight):
    """RAAR outside the support: ``β ψ + (1 - 2β) P_M ψ``, ``weight = 1 - 2β`` computed on the host.

    Written in the kernel, ``1 - 2β`` of two Python numbers runs in float16 inside ``cupy.fuse``
    (see :mod:`mbook.core.fusion`): CuPy 14.2's fused RAAR step differed from the plain operations by
    1e-4 on an H200 (2026-11-30), where the HIO step, which lacks that term, agreed."""
    return beta * psi + weight * pm


@fusion.elementwise
def _er_step(xp, psi, pm, support, beta, weight):
    return pm * support


@fusion.elementwise
def _hio_step(xp, psi, pm, support, beta, weight):
    return xp.where(support, pm * support, _hio_outside(psi, pm, beta))


@fusion.elementwise
def _raar_step(xp, psi, pm, support, beta, weight):
    return xp.where(support, pm * support, _raar_outside(psi, pm, beta, weight))


# with a prior, the part inside the support is the prior's, computed before the step
@fusion.elementwise
def _hio_step_inside(xp, psi, pm, inside, support, beta, weight):
    return xp.where(support, inside, _hio_outside(psi, pm, beta))


@fusion.elementwise
def _raar_step_inside(xp, psi, pm, inside, support, beta, weight):
    return xp.where(support, inside, _raar_outside(psi, pm, beta, weight))


_STEPS = {"er": _er_step, "hio": _hio_step, "raar": _raar_step}
_STEPS_INSIDE = {"hio": _hio_step_inside, "raar": _raar_step_inside}


def project_modulus(field, amplitude):
    """Projection onto the fields whose Fourier modulus is ``amplitude``.

    ``P_M ψ = F⁻¹[ amplitude · Fψ / |Fψ| ]`` (phase 1 where ``Fψ = 0``).

    Returns
    -------
    projected : (nx, ny) complex array
        On the selected device.
    error : float
        Relative Fourier error ``‖|Fψ| - amplitude‖ / ‖amplitude‖``.
    """
    field = check_array(field, "field", ndim=2)
    amplitude = check_array(amplitude, "amplitude", ndim=2, real=True)
    checks.check_same_shape("amplitude", amplitude, "field", field)
    xp = backend.get_array_module(field)
    if bool(xp.any(amplitude < 0)):
        raise ValueError("amplitude must be >= 0 everywhere (a Fourier modulus)")
    projected, modulus = _modulus_projection(field, amplitude)
    return projected, float(xp.linalg.norm(modulus - amplitude) / xp.linalg.norm(amplitude))


class CDIResult(NamedTuple):
    """Result of :func:`retrieve_phase`.

    Attributes
    ----------
    obj : (nx, ny) or (b, nx, ny) complex array
        The object estimate (one per pattern of a stack), on the selected device.
    errors : (max_num_iter,) or (b, max_num_iter) float array
        The support error ``‖P_M ψ_k outside S‖ / ‖P_M ψ_k‖`` of the iterate
        ``ψ_k`` after each of the ``k = 1..max_num_iter`` steps (0 at an exact
        solution); ``errors[..., -1]`` is that of the returned object. On the
        selected device.
    method : str
        The method used.
    """

    obj: object
    errors: object
    method: str


def _bounding_box(support):
    """Slices of the smallest box holding the support (one copy to the host, once per call)."""
    rows, cols = (np.flatnonzero(backend.asnumpy(support.any(axis=k))) for k in (1, 0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def retrieve_phase(intensity, support, *, method: str = "raar", beta: float = 0.9,
                   max_num_iter: int = 300, seed=0, initial=None, prior=None,
                   prior_every: int = 1, budget=None) -> CDIResult:
    """Phase retrieval from an oversampled far-field intensity and a support.

    With ``P_M`` the modulus projection and ``P_S`` the support projection:

    - ER: ``ψ ← P_S P_M ψ``;
    - HIO (Fienup 1982): ``ψ ← P_M ψ`` inside S, ``ψ - β P_M ψ`` outside;
    - RAAR (Luke 2005): ``ψ ← β/2 (R_S R_M + I) ψ + (1 - β) P_M ψ`` with
      reflections ``R = 2P - I``; inside S this is ``P_M ψ``, outside
      ``β ψ + (1 - 2β) P_M ψ``.

    A stack of patterns (noise draws, doses, objects sharing a support) is
    retrieved at once, each pattern an independent problem along the leading
    axis: the same result as one call per pattern with its own seed, in a
    fraction of the kernel launches on a GPU. The stack runs in batches under
    the memory ``budget``.

    A ``prior`` (e.g. from :func:`phase_prior`) replaces the values inside the
    support by ``prior(P_S P_M ψ)`` every ``prior_every`` iterations: a
    proximal step of the regulariser in place of the plain support projection.
    The prior sees the estimate cropped to the bounding box of the support
    (computed once per call), as a device array; it takes one pattern.

    The iterations run on the selected device and copy nothing to the host:
    the errors are kept there and stacked once at the end.

    Parameters
    ----------
    intensity : (nx, ny) or (b, nx, ny) array
        Measured far-field intensity in FFT order [counts], >= 0; a stack of b
        patterns shares the support.
    support : (nx, ny) array, bool
        Where the object may be non-zero; at most half the array.
    method : {"er", "hio", "raar"}
    beta : float
        Feedback (HIO) or relaxation (RAAR) parameter in (0, 1).
    max_num_iter : int
    seed : int or sequence of int
        Seed of the random initial phases (drawn on the host, then moved); for
        a stack, one seed per pattern, or one int ``s`` for the seeds ``s, s + 1, ...``.
    initial : (nx, ny) or (b, nx, ny) array, optional
        Starting field(s) instead of random phases on the support.
    prior : callable, optional
        ``prior(obj) -> obj`` applied to the support-projected estimate,
        cropped to the support's bounding box (one pattern only).
    prior_every : int
    budget : int, optional
        Memory budget [bytes] for the patterns retrieved at once (default
        :func:`mbook.core.progress.memory_budget`).

    Returns
    -------
    CDIResult
        ``obj`` is ``P_S P_M ψ`` of the last iterate (with the prior, if any).
    """
    intensity, support = check_cdi_data(intensity, support)
    check_choice(method, "method", METHODS)
    beta = check_positive_number(beta, "beta", upper=1.0)
    max_num_iter = check_iterations(max_num_iter)
    prior_every = check_iterations(prior_every, "prior_every")
    if prior is not None and not callable(prior):
        raise TypeError(f"prior must be callable as prior(obj) -> obj (see phase_prior), got {prior!r}")
    single = intensity.ndim == 2
    stack = intensity[None] if single else intensity
    n = stack.shape[0]
    if prior is not None and not single:
        raise ValueError(f"a prior takes one pattern: intensity must be (nx, ny) with a prior, got {intensity.shape}")
    if np.ndim(seed) == 0:
        seed = checks.check_seed(seed)
        if n > 1 and not isinstance(seed, int):
            raise ValueError(f"seed must be an int, or {n} ints (one per pattern of the stack), got {seed!r}")
        seeds = [seed] if n == 1 else [seed + i for i in range(n)]
    else:
        seeds = [checks.check_seed(s) for s in np.asarray(seed, dtype=object).ravel()]
        if single or len(seeds) != n:
            raise ValueError(f"seed must be an int, or {n} ints (one per pattern of the stack), got {seed!r}")
    if initial is not None:
        initial = check_array(initial, "initial", min_ndim=2)
        if initial.shape != intensity.shape:
            raise ValueError(f"initial shape {initial.shape} must match intensity shape {intensity.shape}")
        initial = initial.reshape(stack.shape)
    per_pattern = 16 * support.size * 8  # complex fields: ψ, P_M ψ, spectra and the update's temporaries
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_pattern, fixed_bytes=support.size, budget=budget)
    xp = backend.get_array_module(intensity)
    parts = [_retrieve(stack[start:start + batch], support, method, beta, max_num_iter, seeds[start:start + batch],
                       None if initial is None else initial[start:start + batch], prior, prior_every)
             for start in range(0, n, batch)]
    obj = xp.concatenate([o for o, _ in parts])
    errors = xp.concatenate([e for _, e in parts])
    return CDIResult(obj[0], errors[0], method) if single else CDIResult(obj, errors, method)


def _retrieve(intensity, support, method, beta, max_num_iter, seeds, initial, prior, prior_every):
    """The iterations on a checked stack ``(b, nx, ny)`` (a kernel): objects and errors ``(b, max_num_iter)``."""
    xp = backend.get_array_module(intensity)
    amplitude = xp.sqrt(intensity)
    total = intensity.sum(axis=(-2, -1)) / support.size  # ‖P_M ψ‖² by Parseval, per pattern
    if initial is None:
        # One draw per pattern from its own seed: the stack gives what one call per pattern gives.
        scale = np.sqrt(backend.asnumpy(total) / int(support.sum()))[:, None, None]  # one copy, before the loop
        phases = np.stack([checks.rng(s).random(support.shape) for s in seeds])
        psi = backend.asarray(scale * np.exp(2j * np.pi * phases)) * support
    else:
        psi = initial.astype(xp.complex128)
    box = _bounding_box(support) if prior is not None else None
    outside = ~support
    weight = 1.0 - 2.0 * float(beta)  # RAAR's weight of P_M ψ outside the support, a host number
    errors = []  # (b,) device arrays, stacked once at the end

    def support_error(pm):
        # A product, not pm[outside]: boolean indexing makes a GPU wait for the count of pixels.
        return xp.sqrt(xp.sum(_outside_power(pm, outside), axis=(-2, -1)) / total)

    # An iteration: two FFTs, two fused kernels and the error's reduction (15 to 19 kernels on a GPU before).
    for it in range(max_num_iter):
        pm, _ = _modulus_projection(psi, amplitude)
        if it > 0:  # the error of the iterate the previous step made (not of the random start)
            errors.append(support_error(pm))
        if prior is not None and (it + 1) % prior_every == 0:
            inside = pm * support
            with backend.inside_iterations():  # a user's prior may call mbook's operators
                inside[0][box] = prior(inside[0][box]) * support[box]
            psi = inside if method == "er" else _STEPS_INSIDE[method](psi, pm, inside, support, beta, weight)
        else:
            psi = _STEPS[method](psi, pm, support, beta, weight)
    pm, _ = _modulus_projection(psi, amplitude)
    errors.append(support_error(pm))  # errors[-1] describes the returned object's P_M ψ
    obj = pm * support
    if prior is not None:
        obj[0][box] = prior(obj[0][box]) * support[box]
    return obj, xp.stack(errors, axis=-1)


def twin(obj):
    """The twin image ``conj(o(-x))`` on the periodic grid: same Fourier modulus as ``o``.

    Returns
    -------
    (nx, ny) complex array
        On the selected device.
    """
    obj = check_array(obj, "obj", ndim=2)
    xp = backend.get_array_module(obj)
    return xp.conj(xp.roll(obj[::-1, ::-1], 1, axis=(0, 1)))


def align_to_reference(estimate, reference, *, allow_twin: bool = True):
    """Remove the trivial ambiguities of phase retrieval before comparing with the truth.

    ``o``, ``e^{ic} o``, ``o(x - s)`` and the twin ``conj(o(-x))`` all have the
    same Fourier modulus. Returns the candidate (twin or not, shifted by the
    integer cross-correlation peak of the moduli, global phase fitted by least
    squares) closest to ``reference``. Computed on the selected device; the
    peak positions and distances (a few numbers per candidate) come to the host.

    Returns
    -------
    (nx, ny) complex array
        On the selected device.
    """
    estimate, reference = check_array(estimate, "estimate", ndim=2), check_array(reference, "reference", ndim=2)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate shape {estimate.shape} must match reference shape {reference.shape}")
    xp = backend.get_array_module(estimate)
    best, best_distance = None, math.inf
    reference_spectrum = backend.fft2(xp.abs(reference))
    for candidate in ([estimate, twin(estimate)] if allow_twin else [estimate]):
        correlation = backend.ifft2(reference_spectrum * xp.conj(backend.fft2(xp.abs(candidate))))
        shift = np.unravel_index(int(xp.argmax(correlation.real)), correlation.shape)
        candidate = xp.roll(candidate, tuple(int(k) for k in shift), axis=(0, 1))
        candidate = candidate * xp.exp(1j * xp.angle(xp.vdot(candidate, reference)))
        distance = float(xp.linalg.norm(candidate - reference))
        if distance < best_distance:
            best, best_distance = candidate, distance
    return best


def phase_error(estimate, reference, support, *, align: bool = True) -> float:
    """RMS wrapped phase difference over the support [rad], after :func:`align_to_reference`."""
    reference = check_array(reference, "reference", ndim=2)
    estimate = check_array(estimate, "estimate", ndim=2)
    checks.check_same_shape("estimate", estimate, "reference", reference)
    support = check_array(support, "support", ndim=2, real=True)
    checks.check_same_shape("support", support, "reference", reference)
    support = support.astype(bool)
    if not bool(support.any()):
        raise ValueError("support must mark at least one pixel")
    estimate = align_to_reference(estimate, reference) if align else estimate
    xp = backend.get_array_module(reference)
    difference = wrap(xp.angle(estimate) - xp.angle(reference))
    return float(xp.sqrt(xp.sum(difference**2 * support) / xp.sum(support)))


def phase_prior(weight: float, *, kind: str = "tv-s1", max_num_iter: int = 30, **options):
    """A phase regulariser for :func:`retrieve_phase`: denoise the phase, keep the modulus.

    Returns ``prior(obj)`` that denoises ``arg obj`` with the modulus
    (normalised to RMS 1 over its non-zero pixels) as data weight, and
    returns ``|obj| e^{iθ}``. :func:`retrieve_phase` hands it the estimate
    cropped to the support's bounding box. The prior runs ``max_num_iter``
    iterations of the denoiser as a fixed proximal step (``tol=0`` unless
    ``options`` say otherwise): it copies nothing to the host.

    Parameters
    ----------
    weight : float
        Regularisation weight λ > 0.
    kind : {"tv-s1", "lifting", "tv"}
        Approach 1 (:func:`mbook.inverse.circle.tv_s1_denoise`), approach 2
        (:func:`mbook.inverse.lifting.tv_s1_lifting`), or ordinary TV on the wrapped phase.
    max_num_iter : int
        Iterations of the denoiser per call.
    **options
        Passed to the denoiser (e.g. ``num_labels`` for lifting, ``tol``).
    """
    weight = check_positive_number(weight, "weight")
    check_choice(kind, "kind", PRIORS)
    max_num_iter = check_iterations(max_num_iter)
    # The prior calls the solvers' kernels, which check nothing: check their options once, here.
    options = {"tol": 0.0} | options
    options["tol"] = check_tolerance(options["tol"])
    if "check_every" in options:
        options["check_every"] = check_iterations(options["check_every"], "check_every")
    if kind == "lifting":
        options["num_labels"] = check_iterations(options.get("num_labels", 16), "num_labels")
        if options["num_labels"] < 4:
            raise ValueError(f"num_labels must be >= 4, got {options['num_labels']}")
        def denoise(phi, a):
            return tv_s1_lifting_iterations(phi, weight, a, max_num_iter=max_num_iter, **options)[0]
    else:
        def denoise(phi, a):
            return tv_s1_iterations(phi, weight, a, cyclic=kind == "tv-s1", max_num_iter=max_num_iter,
                                    **options)[0]

    def prior(obj):
        obj = backend.asarray(obj)
        xp = backend.get_array_module(obj)
        modulus = xp.abs(obj)
        # RMS over the non-zero pixels, on the device (m[m > 0] would make a GPU wait for a count).
        count = xp.maximum(xp.sum(modulus > 0), 1)
        rms = xp.sqrt(xp.sum(modulus**2) / count)
        a = modulus / xp.where(rms > 0, rms, 1.0)
        return modulus * xp.exp(1j * denoise(xp.angle(obj), a))

    return prior
