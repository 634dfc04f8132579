"""Fourier ptychography reconstruction: EPRY with pupil recovery, its loss and gradient, and errors.

EPRY (Ou et al. 2014) updates, LED by LED in order of increasing
illumination NA, the object spectrum and the pupil from the
amplitude-corrected camera field, ``ψ' = sqrt(I) ψ / |ψ|``:

``Ô <- Ô + α V[P* Δψ] / max|P|²``,  ``P <- P + β (V Ô_i)* Δψ / max|V Ô_i|²``,

with ``V`` the identity when vignetting is ignored (plain EPRY) and the
cascaded-aperture projection of
:func:`mbook.light.fourier_ptychography.vignetting_operator` when it is
modelled. The forward model and its adjoint live in :mod:`mbook.light.fourier_ptychography`, the
microscope's geometry (:class:`~mbook.light.led_geometry.Setup`) in :mod:`mbook.light.led_geometry`.

Devices: inputs are moved to the selected device and results come back
there; the passes over the LEDs copy nothing to the host (step
normalisations and residuals stay on the device as 0-d arrays, the
residual history is stacked once at the end).

Examples
--------
>>> from mbook.light import epry, phantoms
>>> from mbook.light import fourier_ptychography as fp
>>> from mbook.light import led_geometry
>>> setup = led_geometry.make_setup((64, 64), sampling=0.5, wavelength=0.5, na=0.1, upsampling=2,
...                                 illumination=led_geometry.led_array((3, 3), pitch=4.0, height=40.0))
>>> sample = phantoms.cells((64, 64), sampling=0.5, seed=0, n_cells=2, radius=(4.0, 6.0))
>>> result = epry.reconstruct(fp.images(sample, setup), setup, max_num_iter=5)
>>> bool(result.residuals[-1] < result.residuals[0])
True
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion, grids, progress
from mbook.light import fourier_ptychography as fp
from mbook.light import led_geometry


class Reconstruction(NamedTuple):
    """Result of :func:`reconstruct`, on the selected device.

    Attributes
    ----------
    transmission : (N, N) ndarray, complex128
    pupil : (m, m) ndarray, complex128
    residuals : (max_num_iter,) ndarray, float64
        Relative amplitude residual of each pass over the LEDs.
    """

    transmission: object
    pupil: object
    residuals: object


@fusion.elementwise
def _modulus_constraint(xp, unscaled, amplitude, scale):
    """For ``ψ = scale · unscaled``: ``ψ'- ψ`` (the modulus replaced by the measured amplitude) and ``(|ψ| - a)²``."""
    field = unscaled * scale
    modulus = xp.abs(field)
    corrected = amplitude * field / xp.maximum(modulus, 1e-12)
    return corrected - field, (modulus - amplitude) ** 2


@fusion.elementwise
def _conj_times(xp, factor, delta, norm):
    """``conj(factor) · δ / norm``: the object's update through the pupil (or the pupil's through the object)."""
    return xp.conj(factor) * delta / norm


@fusion.elementwise
def _pupil_step(xp, pupil, support, seen, delta, beta, norm):
    """``P + β conj(O) δ / norm`` inside the pupil's support, 0 outside."""
    return xp.where(support, pupil + beta * xp.conj(seen) * delta / norm, 0)


def reconstruct(images_measured, setup: led_geometry.Setup, *, vignetting=True, recover_pupil=True, pupil_init=None,
                max_num_iter=20, alpha=1.0, beta=1.0):
    """EPRY reconstruction of the object and the pupil, with or without the vignetting model.

    Parameters
    ----------
    images_measured : (n_leds, m, m) array_like, float
        Camera images, in the units of :func:`mbook.light.fourier_ptychography.images` (1 = empty bright field).
    setup : mbook.light.led_geometry.Setup
    vignetting : bool
        Model the second aperture (cascaded-aperture projection ``V``), or
        ignore it (plain EPRY, one pupil for the whole field).
    recover_pupil : bool
        Update the pupil (EPRY) or keep ``pupil_init``.
    pupil_init : (m, m) array_like, optional
        Starting pupil; default the aberration-free one. Its support (where it
        is non-zero) is kept.
    max_num_iter : int
        Passes over all LEDs (a fixed number: there is no stopping test).
    alpha, beta : float
        Step sizes of the object and pupil updates, in (0, 2).

    Returns
    -------
    Reconstruction
        ``transmission``, ``pupil`` and the relative amplitude residual
        ``‖|ψ| - sqrt(I)‖ / ‖sqrt(I)‖`` of each pass, all on the selected
        device. The passes copy nothing to the host: the step normalisations
        and the residual stay on the device.
    """
    led_geometry.check_setup(setup)
    measured = checks.check_array(images_measured, "images_measured", real=True, finite=False)
    if measured.shape != (len(setup.shifts),) + setup.camera_gpts:
        raise ValueError(f"images_measured must have shape {(len(setup.shifts),) + setup.camera_gpts}, "
                         f"got {measured.shape}")
    xp = backend.get_array_module(measured)
    measured = measured.astype(xp.float64)
    finite, low = backend.asnumpy(xp.stack([xp.all(xp.isfinite(measured)), measured.min()])).tolist()
    if not finite or low < 0:
        raise ValueError("images_measured must be finite and >= 0")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 2:
            raise ValueError(f"{name} must be in (0, 2), got {value!r}")
    max_num_iter = checks.check_iterations(max_num_iter)
    amplitude = xp.sqrt(measured)
    m, n_obj = setup.camera_gpts[0], setup.gpts[0]
    p = led_geometry.pupil(setup, xp=xp) if pupil_init is None else fp.check_spectrum(pupil_init, setup.camera_gpts,
                                                                               "pupil_init")
    support = abs(p) > 0
    use = vignetting and setup.na_vignetting is not None
    size = setup.window if use else m
    rows, columns = led_geometry.window_indices(setup, vignetting=use, xp=xp)
    vignette = fp.vignetting_operator(setup, xp=xp) if use else (lambda spectrum: spectrum)
    order = np.argsort(np.hypot(*setup.shifts.T), kind="stable")  # host: the LEDs' order, by NA
    # start from the upsampled amplitude of the most central LED's image, flat phase
    spectrum = grids.pad_spectrum(backend.fft2(amplitude[int(order[0])].astype(xp.complex128)) / (m * m), n_obj)
    total = measured.sum()
    residuals = []
    for _ in progress.progress(range(max_num_iter), desc="EPRY"):
        misfit = xp.zeros((), xp.float64)  # accumulated on the device
        for i in order.tolist():
            index = rows[i][:, None], columns[i][None, :]
            window = spectrum[index]
            seen = grids.crop_spectrum(vignette(window), m)
            # the element-wise work between the transforms in three fused kernels: on a GPU, small windows
            # taken one LED after another make this loop launch-bound, so each launch saved counts
            change, squared = _modulus_constraint(backend.ifft2(p * seen), amplitude[i], m * m)
            misfit = misfit + xp.sum(squared)
            delta = backend.fft2(change) / (m * m)
            update = _conj_times(p, delta, xp.max(abs(p)) ** 2)  # normalisations: 0-d device arrays
            if recover_pupil:
                p = _pupil_step(p, support, seen, delta, beta, xp.max(abs(seen)) ** 2)
            spectrum[index] += alpha * vignette(grids.pad_spectrum(update, size))
        residuals.append(xp.sqrt(misfit / total))
    return Reconstruction(backend.ifft2(spectrum) * n_obj * n_obj, p, xp.stack(residuals))


def amplitude_loss(spectrum, images_measured, pupil_function, setup: led_geometry.Setup, *, vignetting=True):
    """Amplitude loss of an object spectrum and its Wirtinger gradient.

    ``L = Σ_i ‖ |ψ_i| - sqrt(I_i) ‖²`` with ``ψ = A Ô``
    (:func:`mbook.light.fourier_ptychography.camera_fields`), and
    ``∂L/∂Ô* = A^H (ψ - sqrt(I) ψ / |ψ|)``, so that ``L(Ô + δ) ≈ L + 2 Re⟨∂L/∂Ô*, δ⟩``.
    The EPRY object update of :func:`reconstruct` is this gradient for one
    LED at a time, scaled by ``1 / max|P|²``.

    Parameters
    ----------
    spectrum : (N, N) array_like, complex
        Normalised object spectrum (as in :func:`mbook.light.fourier_ptychography.camera_fields`).
    images_measured : (n_leds, m, m) array_like
        Camera images.
    pupil_function : (m, m) array_like
    setup : mbook.light.led_geometry.Setup
    vignetting : bool

    Returns
    -------
    loss : float
    gradient : (N, N) ndarray, complex
        On the selected device.
    """
    led_geometry.check_setup(setup)
    spectrum = fp.check_spectrum(spectrum, setup.gpts, "spectrum")
    pupil_function = fp.check_spectrum(pupil_function, setup.camera_gpts, "pupil_function")
    measured = checks.check_array(images_measured, "images_measured", real=True)
    if measured.shape != (len(setup.shifts),) + tuple(setup.camera_gpts):
        raise ValueError(f"images_measured must have shape {(len(setup.shifts),) + tuple(setup.camera_gpts)}, "
                         f"got {measured.shape}")
    xp = backend.get_array_module(measured)
    amplitude = xp.sqrt(measured.astype(xp.float64))
    fields = fp.camera_fields(spectrum, pupil_function, setup, vignetting=vignetting)
    modulus = abs(fields)
    residual = fields - amplitude * fields / xp.maximum(modulus, 1e-300)
    loss = float(xp.sum((modulus - amplitude) ** 2))
    return loss, fp.camera_fields_adjoint(residual, pupil_function, setup, vignetting=vignetting)


def _band_limit(array, band, sampling):
    grid = grids.make_grid(gpts=array.shape, sampling=sampling)
    keep = grids.frequency_squared(grid, xp=backend.get_array_module(array)) <= band**2
    return backend.ifft2(backend.fft2(array) * keep)


def _check_pair(estimate, reference):
    estimate, reference = (checks.check_array(a, name).astype(np.complex128)
                           for a, name in ((estimate, "estimate"), (reference, "reference")))
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must have one shape, got {estimate.shape} and {reference.shape}")
    return estimate, reference


def align(estimate, reference):
    """``c · estimate`` with the complex factor ``c`` that brings it closest to ``reference``.

    ``c = ⟨estimate, reference⟩ / ‖estimate‖²`` (least squares): phase
    retrieval recovers an object up to such a global factor.

    Returns
    -------
    ndarray, complex128
        On the selected device.
    """
    estimate, reference = _check_pair(estimate, reference)
    return _align(estimate, reference)


def _align(estimate, reference):
    xp = backend.get_array_module(estimate)
    return estimate * (xp.sum(xp.conj(estimate) * reference) / _squared_norm(estimate))


def complex_error(estimate, reference, *, band=None, sampling=None):
    """Relative error ``min_c ‖c·estimate - reference‖ / ‖reference‖`` over a global complex factor.

    Parameters
    ----------
    estimate, reference : (N, N) array_like, complex
    band : float, optional
        Compare only spatial frequencies ``|k| <= band`` [1/µm] (what an
        aperture of that cutoff can recover); needs ``sampling``.
    sampling : float, optional
        Pixel size [µm].

    Returns
    -------
    float
    """
    estimate, reference = _check_pair(estimate, reference)
    if band is not None:
        band = checks.check_positive_number(band, "band")
        if sampling is None:
            raise ValueError("complex_error with a band needs the pixel size: pass sampling")
        estimate, reference = (_band_limit(a, band, sampling) for a in (estimate, reference))
    difference = _align(estimate, reference) - reference
    return float(_squared_norm(difference) / _squared_norm(reference)) ** 0.5


def _squared_norm(array):
    """``‖array‖²`` as a 0-d array on the array's device (element-wise sums: no BLAS)."""
    return (array.real**2 + array.imag**2).sum()
