"""The kernels of the ptychographic model: exit waves, illumination, loss and gradients of a batch.

:func:`mbook.multimodal.reconstruction.reconstruct` and
:func:`mbook.multimodal.reconstruction.loss_and_gradients` check their inputs once; these
kernels do the work on what they checked (arrays on one device, the positions' windows
inside the object), with no checks of their own. The model and its gradients are written
out in :mod:`mbook.multimodal.reconstruction`.

- :func:`incident_windows`: the windows' object pixels and the probes shifted into them;
- :func:`forward`: the waves incident on each slice and the exit waves of a batch of positions;
- :func:`illuminate`: a batch's ``Σ_j |ψ_j|²`` scattered onto the object's pixels;
- :func:`scan_illumination`: the same over the whole scan, batch by batch;
- :func:`batch_gradients`: a batch's loss and its gradients with respect to phase, probe and
  positions (and the positions' Gauss-Newton curvature).

Examples
--------
>>> import numpy as np
>>> from mbook.multimodal import ptychography, ptycho_model
>>> phase = np.zeros((1, 32, 32), np.float32)                     # one slice, no specimen
>>> probe = ptychography.centred_probe(16, sampling=0.5, energy=300e3, semiangle_cutoff=15.0, defocus=60.0)
>>> positions = np.array([[8.0, 8.0], [8.5, 9.0]], np.float32)
>>> lit = ptycho_model.scan_illumination(phase, probe, positions, None, (0.5, 0.5), batch_size=1)
>>> round(float(lit.sum()), 3)                                    # two probes of one electron each
2.0
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mbook.core import backend, fusion, scatter
from mbook.multimodal import ptychography


def incident_windows(probe, positions, sampling, object_gpts):
    """The windows of ``positions`` and the probe shifted into each (a kernel: inputs checked, on one device).

    A reconstruction with a fixed probe and fixed positions makes these once for the whole scan
    and gathers each batch's rows (:func:`forward`'s ``windows``): two gathers a batch instead
    of the five kernels that make them.

    Parameters
    ----------
    probe : (wx, wy) ndarray, complex
        The probe on its window.
    positions : (n, 2) ndarray
        Probe positions [Å], inside the object (checked by the caller).
    sampling : tuple of float
        Pixel size ``(dx, dy)`` [Å].
    object_gpts : tuple of int
        The object's ``(nx, ny)``.

    Returns
    -------
    index : (n, wx, wy) ndarray, int64
        Flat indices of each window's pixels in the object's ``object_gpts``.
    ramp : (n, wx, wy) ndarray, complex
        The Fourier shift factors of the probes' sub-pixel offsets.
    psi : (n, wx, wy) ndarray, complex
        The probe shifted to each position, ``F⁻¹[F[probe] ramp]``.
    """
    index, ramp, _, psi = _windows(probe, positions, sampling, object_gpts)
    return index, ramp, psi


def _windows(probe, positions, sampling, object_gpts):
    """:func:`incident_windows` and the probe's spectrum: ``(index, ramp, probe_hat, psi)``."""
    fft = backend.fft_module(probe)
    gpts = probe.shape
    corners, offsets = ptychography.window_corners(positions, sampling, gpts, object_gpts)
    index = ptychography.window_indices(corners, gpts, object_gpts)
    ramp = ptychography.phase_ramps(offsets, gpts, sampling)
    probe_hat = fft.fft2(probe)
    return index, ramp, probe_hat, fft.ifft2(probe_hat * ramp)


def forward(phase, probe, positions, propagator, sampling, windows=None):
    """The exit waves of one batch and what the gradients need (a kernel: inputs checked, on one device).

    Returns ``index`` (the windows' object pixels), ``ramp``, ``probe_hat``, the waves
    incident on each slice, the slices' gratings (lists over slices) and the exit waves ``chi``.
    ``windows``, the batch's ``(index, psi)`` from :func:`incident_windows`, skips making them
    (``positions`` is then unused, and ``ramp`` and ``probe_hat`` are None: no probe or position
    gradient can follow).
    """
    xp = backend.get_array_module(phase)
    fft = backend.fft_module(phase)
    n_slices, nx, ny = phase.shape
    if windows is None:
        index, ramp, probe_hat, psi = _windows(probe, positions, sampling, (nx, ny))
    else:
        (index, psi), ramp, probe_hat = windows, None, None
    flat = phase.reshape(n_slices, -1)
    incident, gratings = [], []
    # Each object pixel lies in many windows (256 of them for 64² windows at a 4-pixel step): the
    # exponential on the object's pixels, then the windows' gather, takes that many times fewer
    # complex exponentials than the other order (they were most of this kernel's time); same values.
    on_object = flat.shape[1] < index.size
    for s in range(n_slices):  # a few slices: the loop is over the specimen's depth, not over data
        if on_object:
            grating = _phasor(flat[s], 1j)[index]
            chi = psi * grating
        else:
            grating, chi = _grating_and_exit(flat[s][index], psi, 1j)
        incident.append(psi)
        gratings.append(grating)
        if s < n_slices - 1:
            psi = fft.ifft2(propagator * fft.fft2(chi))
    return index, ramp, probe_hat, incident, gratings, chi


@fusion.elementwise
def _phasor(xp, phase, i):
    """``exp(i φ)`` (``i`` passed in: the imaginary unit as a kernel argument)."""
    return xp.exp(i * phase)


@fusion.elementwise
def _grating_and_exit(xp, phase, psi, i):
    """The grating ``exp(i φ)`` on the windows and the exit wave ``ψ exp(i φ)``: one kernel."""
    grating = xp.exp(i * phase)
    return grating, psi * grating


@fusion.elementwise
def _amplitude_residual(xp, exit_hat, amplitudes, detector):
    """Squared amplitude residuals, ``∂L/∂Ψ*`` of the amplitude loss, and ``|Ψ|`` (1 where 0); one kernel.

    Unmeasured pixels (``detector`` 0) add nothing.
    """
    amplitude = xp.abs(exit_hat)
    residual = (amplitude - amplitudes) * detector
    safe = xp.where(amplitude > 0, amplitude, 1)
    return residual**2, 2 * residual / safe * exit_hat, safe


@fusion.elementwise
def _back_weight(xp, g, incident, grating):
    """``g conj(ψ t)``: its imaginary part is the phase gradient of the slice at each window pixel."""
    return g * xp.conj(incident * grating)


@fusion.elementwise
def _power(xp, real, imag):
    """``re² + im²`` of a complex array given by its two (strided) parts: one kernel on a GPU."""
    return real**2 + imag**2


@fusion.elementwise
def _conj_times(xp, a, b):
    """``conj(a) b`` in one kernel."""
    return xp.conj(a) * b


@fusion.elementwise
def _shift_weight(xp, g_hat, shifted):
    """``Im(conj(ĝ) P̂ₛ)``, the position gradient's weight of each frequency, in one kernel."""
    return xp.imag(xp.conj(g_hat) * shifted)


@fusion.elementwise
def _amplitude_curvature(xp, exit_hat, tangent_hat, safe):
    """``2 (∂A)²`` with ``∂A = Re(conj(Ψ) ∂Ψ) / A``, the Gauss-Newton curvature's terms, in one kernel."""
    d_amplitude = xp.real(xp.conj(exit_hat) * tangent_hat) / safe
    return 2 * d_amplitude * d_amplitude


def _window_frequencies(gpts, sampling):
    """``(k_x, k_y)`` of each pixel of the window, ``(2, wx, wy)`` float64 on the host [1/Å]."""
    kx, ky = (np.fft.fftfreq(g, d) for g, d in zip(gpts, sampling))
    return np.stack([np.broadcast_to(kx[:, None], gpts), np.broadcast_to(ky[None, :], gpts)])


@functools.lru_cache(maxsize=32)
def _gradient_frequencies(gpts, sampling, dtype, xp):
    """``(2π / (wx wy)) (k_x, k_y)`` of each window pixel, ``(wx wy, 2)`` (a constant, made once): a batch's
    position gradients are its weights ``(n, wx wy)`` times this, one matrix product."""
    table = _window_frequencies(gpts, sampling).reshape(2, -1).T
    return xp.asarray((table * (2 * math.pi / len(table))).astype(dtype))


@functools.lru_cache(maxsize=32)
def _shift_derivatives(gpts, sampling, dtype, xp):
    """``-2πi k_x`` and ``-2πi k_y`` on the window, ``(2, 1, wx, wy)`` complex (a constant, made once):
    the derivatives of a shifted spectrum along x and y, both from one product."""
    table = _window_frequencies(gpts, sampling)[:, None]
    return xp.asarray((-2j * math.pi * table).astype(np.result_type(dtype, np.complex64)))


def illuminate(wave, index, n_pixels):
    """``Σ_j |ψ_j|²`` of a batch's waves ``(n, wx, wy)`` scattered onto the object's pixels (a kernel)."""
    return scatter.bincount(index.reshape(-1), _power(wave.real, wave.imag).reshape(-1), n_pixels)


def scan_illumination(phase, probe, positions, propagator, sampling, batch_size):
    """The illumination of every slice by the whole scan, ``(n_slices, nx, ny)`` (a kernel)."""
    xp = backend.get_array_module(phase)
    n_slices, nx, ny = phase.shape
    total = xp.zeros((n_slices, nx * ny), phase.dtype)
    for start in range(0, len(positions), batch_size):
        index, _, _, incident, _, _ = forward(phase, probe, positions[start:start + batch_size], propagator,
                                               sampling)
        for s in range(n_slices):
            total[s] += illuminate(incident[s], index, nx * ny)
    return total.reshape(phase.shape)


def batch_gradients(phase, probe, positions, amplitudes, propagator, sampling, detector, curvature=False,
                    position_gradient=True, probe_gradient=True, windows=None, illumination=True):
    """Loss and gradients of one batch (a kernel: inputs checked, on one device).

    Returns ``loss`` (0-d), ``g_phase`` (like ``phase``), ``illumination`` (like ``phase``),
    ``g_probe`` (None without ``probe_gradient``), ``g_positions`` (n, 2) (None without
    ``position_gradient``: a reconstruction with a fixed probe or fixed positions skips their
    passes over the batch, five kernels when both are fixed) and, with ``curvature``, the
    Gauss-Newton curvature of the loss along each position's x and y, ``2 Σ_k (∂A/∂r)²`` (n, 2)
    (else None). ``windows`` (the batch's rows of :func:`incident_windows`) needs all three off.
    ``illumination=False`` skips the batch's illumination (returned as None): with one slice, a
    fixed probe and fixed positions it is the same every pass (four kernels fewer a batch).
    """
    if windows is not None and (probe_gradient or position_gradient or curvature):
        raise ValueError("windows (made once for a fixed probe and fixed positions) leave no probe, position "
                         "or curvature gradient to compute: pass probe_gradient=False, position_gradient=False")
    xp = backend.get_array_module(phase)
    fft = backend.fft_module(phase)
    n_slices, nx, ny = phase.shape
    gpts = probe.shape
    n_pix = gpts[0] * gpts[1]
    index, ramp, probe_hat, incident, gratings, chi = forward(phase, probe, positions, propagator, sampling, windows)
    exit_hat = fft.fft2(chi, norm="ortho")
    squared, g_exit, safe = _amplitude_residual(exit_hat, amplitudes, detector)
    loss = xp.sum(squared)
    g = fft.ifft2(g_exit, norm="ortho")
    g_phase = xp.empty((n_slices, nx * ny), phase.dtype)
    lit = xp.empty((n_slices, nx * ny), phase.dtype) if illumination else None
    flat_index = index.reshape(-1)
    # the gradient with respect to the incident wave of the first slice feeds only the probe's and the
    # positions' gradients: without them the backward pass stops at the first slice's grating
    to_incident = probe_gradient or position_gradient
    for s in reversed(range(n_slices)):
        g_phase[s] = scatter.bincount(flat_index, _back_weight(g, incident[s], gratings[s]).imag.reshape(-1), nx * ny)
        if lit is not None:
            lit[s] = illuminate(incident[s], index, nx * ny)
        if s > 0 or to_incident:
            g = _conj_times(gratings[s], g)
        if s > 0:
            g = fft.ifft2(xp.conj(propagator) * fft.fft2(g))
    g_hat = fft.fft2(g) if to_incident else None
    g_probe = fft.ifft2(xp.sum(_conj_times(ramp, g_hat), axis=0)) if probe_gradient else None
    shifted = probe_hat * ramp if position_gradient or curvature else None  # the shifted probes' spectra
    g_positions = None
    if position_gradient:
        weights = _shift_weight(g_hat, shifted).reshape(len(shifted), n_pix)
        g_positions = weights @ _gradient_frequencies(tuple(gpts), tuple(sampling), np.dtype(phase.dtype).str, xp)
    hessian = None
    if curvature:
        # The tangent of the exit wave along x and y (forward mode through the slices): only its
        # part along the amplitude, ∂A = Re(conj(Ψ) ∂Ψ) / A, changes the loss (Gauss-Newton).
        tangent = fft.ifft2(shifted * _shift_derivatives(tuple(gpts), tuple(sampling), np.dtype(phase.dtype).str, xp))
        for s in range(n_slices):
            tangent = tangent * gratings[s]
            if s < n_slices - 1:
                tangent = fft.ifft2(propagator * fft.fft2(tangent))
        hessian = xp.sum(_amplitude_curvature(exit_hat, fft.fft2(tangent, norm="ortho"), safe), axis=(2, 3)).T
    return (loss, g_phase.reshape(phase.shape), None if lit is None else lit.reshape(phase.shape), g_probe,
            g_positions, hessian)
