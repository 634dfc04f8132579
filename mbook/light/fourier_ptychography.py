"""Fourier ptychography: LED-array microscope, vignetting, and reconstruction with pupil recovery.

Forward model (Zheng et al. 2013). LED ``i`` lights the sample with a plane
wave of transverse frequency ``q_i = NA_ill,i / λ0``. A thin sample ``o(r)``
then sends the spectrum ``Ô(k - q_i)`` to the objective, whose pupil
``P(k)`` (NA, defocus, aberrations) passes ``|k| <= NA / λ0``; the camera
records ``I_i = |F^-1[P(k) Ô(k - q_i)]|²`` on a grid ``upsampling`` times
coarser than the object's. A thick sample replaces ``Ô(k - q_i)`` by the
spectrum of the exit wave of the beam propagation method
(:func:`mbook.light.scattering.bpm`), refocused to the sample's middle.

Vignetting: cascaded apertures
------------------------------
Real objectives hold more stops than the pupil. A second aperture of radius
``NA_v`` (in NA units) at a distance ``d`` from the pupil plane of a lens of
focal length ``f`` is not conjugate to it: in the Fresnel approximation,
propagating the pupil-plane field over ``d`` is the same as multiplying the
*image* field by the chirp ``exp(-iπ κ |x|² / λ0)`` with ``κ = d / f²``
[1/µm]. The obstruction therefore acts as

``V = F C* F^-1 A_v F C F^-1``,  ``C = exp(-iπ κ |x|² / λ0)``, ``A_v = circ(λ0 |k| <= NA_v)``,

a projection (``V^H = V = V²``) applied before the pupil. By stationary phase
(a ray at field position ``x`` crosses the second aperture displaced by
``κ x``), a point at ``x`` sees the *field-dependent pupil*

``P_x(k) = P(k) · circ(|λ0 k - κ x| <= NA_v)``               (:func:`effective_pupil`),

the "cat's eye" that cuts off-axis LEDs differently across the field (Pan et
al. 2017). Why cascaded apertures rather than patches with their own pupils:
``V`` is exact within Fresnel optics, continuous across the field (no seams
between patches, no patch size to tune), diffracts at the stop's edge as real
light does, costs four FFTs per image on a small grid, and has an exact
adjoint for reconstruction; the patch model is its geometric limit
(:func:`effective_pupil`), used here only for illustration. LEDs whose
direct beam lies just inside the pupil (the bright-field/dark-field
transition) give "semi-bright, semi-dark" images under ``V``, which no single
pupil can explain.

Reconstruction
--------------
EPRY (Ou et al. 2014): sequential updates, LED by LED in order of increasing
illumination NA, of the object spectrum and the pupil from the
amplitude-corrected camera field, ``ψ' = sqrt(I) ψ / |ψ|``,

``Ô <- Ô + α V[P* Δψ] / max|P|²``,  ``P <- P + β (V Ô_i)* Δψ / max|V Ô_i|²``,

with ``V`` the identity when vignetting is ignored (plain EPRY) and the
cascaded-aperture projection when it is modelled.

Arrays are ``[x, y]`` (:mod:`mbook.core.grids`); lengths in µm; ``wavelength`` is λ0.

Examples
--------
>>> import numpy as np
>>> from mbook.light import fourier_ptychography as fp
>>> leds = fp.led_array((3, 3), pitch=4.0, height=60.0)
>>> setup = fp.make_setup((64, 64), sampling=0.5, wavelength=0.5, na=0.1, illumination=leds,
...                       upsampling=2)
>>> images = fp.images(np.ones((64, 64), complex), setup)
>>> bool(np.allclose(images[0], 1.0))          # the central LED sees an empty slide
True
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import scipy.fft

from mbook.core import backend, checks, grids, progress, propagation
from mbook.light import microscope, scattering


class Setup(NamedTuple):
    """Geometry of a Fourier ptychographic microscope (see :func:`make_setup`).

    Attributes
    ----------
    gpts : (int, int)
        Object (high-resolution) grid.
    sampling : float
        Object pixel [µm].
    wavelength : float
        Vacuum wavelength [µm].
    na : float
        Objective NA.
    upsampling : int
        Camera pixel / object pixel (camera grid ``gpts // upsampling``).
    illumination : (n, 2) ndarray
        Illumination NA ``(sin θx, sin θy)`` of each LED, as given.
    shifts : (n, 2) ndarray, int
        The same on the frequency lattice: ``q = shifts / extent``.
    na_vignetting : float or None
        Radius of the second aperture [NA]; None: no vignetting.
    vignetting_slope : float
        κ, displacement of the second aperture per µm of field [NA/µm].
    window : int
        Side of the frequency window the vignetting operator works on.
    """

    gpts: tuple
    sampling: float
    wavelength: float
    na: float
    upsampling: int
    illumination: np.ndarray
    shifts: np.ndarray
    na_vignetting: float | None
    vignetting_slope: float
    window: int

    @property
    def camera_gpts(self):
        return tuple(n // self.upsampling for n in self.gpts)

    @property
    def extent(self):
        return self.gpts[0] * self.sampling

    @property
    def na_synthetic(self):
        """Objective NA plus the largest illumination NA along x (lattice-rounded)."""
        on_axis = self.shifts[self.shifts[:, 1] == 0, 0]
        reach = np.abs(on_axis if on_axis.size else self.shifts[:, 0]).max()
        return self.na + float(reach) * self.wavelength / self.extent


def led_array(shape=(9, 9), *, pitch, height, center=(0.0, 0.0)):
    """Illumination NA of a planar LED grid below the sample, sorted by NA.

    LED ``(i, j)`` at ``(x, y) = ((i - (nx-1)/2) p + cx, (j - (ny-1)/2) p + cy)`` and
    height ``h`` gives ``sin θx = x / sqrt(x² + y² + h²)`` (same for y).

    Parameters
    ----------
    shape : (int, int)
        LEDs along x and y.
    pitch, height : float
        LED spacing and distance to the sample [any one unit, e.g. mm].
    center : (float, float)
        Offset of the array's centre from the optical axis [same unit].

    Returns
    -------
    (nx · ny, 2) ndarray, float64
        ``(sin θx, sin θy)``, the central LED first.
    """
    shape = checks.check_gpts(shape, 2)
    pitch = checks.check_positive(pitch, "pitch", 1)[0]
    height = checks.check_positive(height, "height", 1)[0]
    i, j = (np.arange(n) - (n - 1) / 2 for n in shape)
    x = (i[:, None] * pitch + center[0]) * np.ones(shape[1])[None, :]
    y = (j[None, :] * pitch + center[1]) * np.ones(shape[0])[:, None]
    r = np.sqrt(x**2 + y**2 + height**2)
    sines = np.stack([(x / r).ravel(), (y / r).ravel()], axis=1)
    return sines[np.argsort(np.hypot(*sines.T), kind="stable")]


def make_setup(gpts, *, sampling, wavelength, na, illumination, upsampling=4, na_vignetting=None,
               vignetting_slope=0.0):
    """Validate a Fourier ptychography geometry and put the LEDs on the frequency lattice.

    Parameters
    ----------
    gpts : (int, int)
        Object grid (square).
    sampling : float
        Object pixel [µm].
    wavelength : float
        Vacuum wavelength [µm].
    na : float
        Objective NA.
    illumination : (n, 2) array_like
        Illumination NA of each LED (:func:`led_array`).
    upsampling : int
        Object pixels per camera pixel (the camera grid must sample NA/λ0).
    na_vignetting : float, optional
        Radius of the second (vignetting) aperture [NA]; None for none.
    vignetting_slope : float
        κ = d / f² [1/µm]: how far the second aperture moves, in NA, per µm
        of field position.

    Returns
    -------
    Setup

    Raises
    ------
    ValueError
        Camera pixels too coarse for the NA, or an LED whose frequencies
        (pupil and vignetting margin included) leave the object grid's band.
    """
    gpts = checks.check_gpts(gpts, 2)
    if gpts[0] != gpts[1]:
        raise ValueError(f"gpts must be square, got {gpts}")
    sampling = checks.check_positive(sampling, "sampling", 1)[0]
    wavelength = propagation.check_wavelength(wavelength)
    na = checks.check_positive_number(na, "na")
    if isinstance(upsampling, bool) or not isinstance(upsampling, numbers.Integral) or upsampling < 1 or (
            gpts[0] % upsampling):
        raise ValueError(f"upsampling must be a positive integer dividing gpts {gpts}, got {upsampling!r}")
    illumination = np.asarray(illumination, dtype=float)
    if illumination.ndim != 2 or illumination.shape[1] != 2 or not np.isfinite(illumination).all():
        raise ValueError(f"illumination must be a finite (n, 2) array of NA, got shape {illumination.shape}")
    extent = gpts[0] * sampling
    camera = gpts[0] // upsampling
    cutoff = na * extent / wavelength  # pupil radius in lattice steps
    if camera < 2 * cutoff:
        raise ValueError(
            f"camera pixels of {sampling * upsampling:g} µm undersample NA/λ0 = {na / wavelength:.3g} 1/µm; "
            f"use upsampling <= {int(gpts[0] / (2 * cutoff))}"
        )
    slope = float(vignetting_slope)
    if na_vignetting is not None:
        na_vignetting = checks.check_positive_number(na_vignetting, "na_vignetting")
        reach = na_vignetting + abs(slope) * extent / math.sqrt(2)  # farthest frequency the chirp visits
        window = scipy.fft.next_fast_len(int(math.ceil(2 * max(reach, na) * extent / wavelength)) + 2)
        window += window % 2
        window = max(window, camera)
    else:
        window = camera
    shifts = np.rint(illumination * extent / wavelength).astype(int)
    half = window / 2 if na_vignetting is not None else cutoff
    limit = gpts[0] // 2 - half
    bad = np.nonzero(np.abs(shifts).max(axis=1) > limit)[0]
    if bad.size:
        worst = bad[np.argmax(np.abs(shifts[bad]).max(axis=1))]
        raise ValueError(
            f"LED {worst} (illumination NA ({illumination[worst][0]:.3f}, {illumination[worst][1]:.3f})) is beyond the grid's "
            f"bandwidth: its frequencies reach past the object grid's Nyquist {1 / (2 * sampling):.3g} 1/µm; "
            f"the largest illumination NA per axis is {limit * wavelength / extent:.3g} "
            f"(use a finer sampling or fewer LEDs)"
        )
    return Setup(gpts, sampling, wavelength, na, int(upsampling), illumination, shifts, na_vignetting, slope,
                 int(window))


def pupil(setup: Setup, *, defocus=0.0, zernike_waves=None, xp=None):
    """Objective pupil on the camera's frequency grid (FFT order), see :func:`mbook.light.microscope.pupil`."""
    grid = grids.make_grid(gpts=setup.camera_gpts, extent=setup.extent)
    return microscope.pupil(grid, wavelength=setup.wavelength, na=setup.na, defocus=defocus,
                        zernike_waves=zernike_waves, xp=xp)


def effective_pupil(setup: Setup, position, *, xp=None):
    """Geometric (stationary-phase) pupil seen from field position ``(x, y)`` [µm from the centre]."""
    xp = xp or backend.xp
    grid = grids.make_grid(gpts=setup.camera_gpts, extent=setup.extent)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    lam = setup.wavelength
    inside = (lam * kx[:, None]) ** 2 + (lam * ky[None, :]) ** 2 <= setup.na**2
    if setup.na_vignetting is not None:
        sx, sy = (setup.vignetting_slope * p for p in position)
        inside &= (lam * kx[:, None] - sx) ** 2 + (lam * ky[None, :] - sy) ** 2 <= setup.na_vignetting**2
    return inside.astype(float)


# ---------------------------------------------------------------------------- linear pieces

def _window_indices(n, size, shift):
    """Object-spectrum indices of a camera window of ``size`` frequencies centred on ``-shift``."""
    return (np.fft.fftfreq(size, 1.0 / size).astype(int) - shift) % n


def _vignetting(window_spectrum, setup: Setup, xp):
    """``V = F C* F^-1 A_v F C F^-1`` on the window grid (self-adjoint projection)."""
    size = window_spectrum.shape[-1]
    grid = grids.make_grid(gpts=(size, size), extent=setup.extent)
    x, y = grids.coordinates(grid, centered=True, xp=xp)
    chirp = xp.exp(-1j * math.pi * setup.vignetting_slope * (x[:, None] ** 2 + y[None, :] ** 2)
                   / setup.wavelength)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    stop = (setup.wavelength**2 * (kx[:, None] ** 2 + ky[None, :] ** 2) <= setup.na_vignetting**2)
    field = backend.ifft2(window_spectrum) * chirp
    field = backend.ifft2(backend.fft2(field) * stop) * xp.conj(chirp)
    return backend.fft2(field)


def _crop(spectrum, size):
    """Central ``size`` frequencies of an FFT-ordered spectrum (or zero-pad, for the adjoint)."""
    index = np.fft.fftfreq(size, 1.0 / size).astype(int)
    if spectrum.shape[-1] >= size:
        return spectrum[..., index[:, None] % spectrum.shape[-2], index[None, :] % spectrum.shape[-1]]
    raise ValueError("internal: window smaller than the camera grid")


def _pad(spectrum, size, xp):
    out = xp.zeros(spectrum.shape[:-2] + (size, size), spectrum.dtype)
    index = np.fft.fftfreq(spectrum.shape[-1], 1.0 / spectrum.shape[-1]).astype(int) % size
    out[..., index[:, None], index[None, :]] = spectrum
    return out


def _check_linear_input(array, shape, name, xp):
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    if not bool(xp.isfinite(array).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _use_vignetting(setup, vignetting):
    return vignetting and setup.na_vignetting is not None


def camera_fields(spectrum, pupil_function, setup: Setup, *, vignetting=True):
    """Complex camera fields of every LED: the linear part of the forward model.

    Parameters
    ----------
    spectrum : (N, N) array_like, complex
        Normalised object spectrum ``fft2(o) / N²`` (FFT order; its DC term is
        the mean transmission).
    pupil_function : (m, m) array_like, complex
        Pupil on the camera grid (:func:`pupil`).
    setup : Setup
    vignetting : bool
        Apply the cascaded-aperture obstruction (when the setup has one).

    Returns
    -------
    (n_leds, m, m) ndarray, complex
        ``|.|²`` are the camera images.
    """
    xp = backend.get_array_module(spectrum)
    _check_linear_input(spectrum, setup.gpts, "spectrum", xp)
    _check_linear_input(pupil_function, setup.camera_gpts, "pupil_function", xp)
    use = _use_vignetting(setup, vignetting)
    size = setup.window if use else setup.camera_gpts[0]
    m = setup.camera_gpts[0]
    out = xp.empty((len(setup.shifts), m, m), xp.complex128)
    for i, (sx, sy) in enumerate(setup.shifts):
        window = spectrum[np.ix_(_window_indices(setup.gpts[0], size, sx), _window_indices(setup.gpts[1], size, sy))]
        if use:
            window = _vignetting(window, setup, xp)
        out[i] = backend.ifft2(_crop(window, m) * pupil_function) * m * m
    return out


def camera_fields_adjoint(fields, pupil_function, setup: Setup, *, vignetting=True):
    """Adjoint of :func:`camera_fields` in the object spectrum: ``(n, m, m) -> (N, N)``."""
    xp = backend.get_array_module(fields)
    _check_linear_input(fields, (len(setup.shifts),) + setup.camera_gpts, "fields", xp)
    _check_linear_input(pupil_function, setup.camera_gpts, "pupil_function", xp)
    use = _use_vignetting(setup, vignetting)
    size = setup.window if use else setup.camera_gpts[0]
    out = xp.zeros(setup.gpts, xp.complex128)
    for i, (sx, sy) in enumerate(setup.shifts):
        window = _pad(xp.conj(pupil_function) * backend.fft2(fields[i]), size, xp)
        if use:
            window = _vignetting(window, setup, xp)
        out[np.ix_(_window_indices(setup.gpts[0], size, sx), _window_indices(setup.gpts[1], size, sy))] += window
    return out


def images(transmission, setup: Setup, *, pupil_function=None, vignetting=True):
    """Camera images of a thin sample, one per LED (intensity 1 for an empty bright field).

    Parameters
    ----------
    transmission : (N, N) array_like, complex
        Sample transmission ``o(r)``.
    setup : Setup
    pupil_function : (m, m) array_like, optional
        Default: the aberration-free pupil.
    vignetting : bool
        Include the second aperture.

    Returns
    -------
    (n_leds, m, m) ndarray, float64 (NumPy)
    """
    transmission = checks.check_field(transmission, "transmission")
    if transmission.shape != setup.gpts:
        raise ValueError(f"transmission must have shape {setup.gpts}, got {transmission.shape}")
    xp = backend.get_array_module(transmission)
    pupil_function = pupil(setup, xp=xp) if pupil_function is None else xp.asarray(pupil_function)
    spectrum = backend.fft2(transmission.astype(xp.complex128)) / transmission.size
    return backend.asnumpy(abs(camera_fields(spectrum, pupil_function, setup, vignetting=vignetting)) ** 2)


def images_thick(index, setup: Setup, *, slice_thickness, n_background=1.0, pupil_function=None,
                 vignetting=True, wide_angle=False):
    """Camera images of a thick sample: BPM per LED, refocused to the sample's middle.

    Parameters
    ----------
    index : (n_slices, N, N) array_like, complex
        Refractive index of each slice (``Im n >= 0``).
    setup : Setup
    slice_thickness : float
        Thickness of a slice [µm].
    n_background : float
        Index around the sample (and between slices).
    pupil_function, vignetting
        As :func:`images`.
    wide_angle : bool
        Wide-angle BPM (needs ``sampling <= λ0 / (2 max n)``).

    Returns
    -------
    (n_leds, m, m) ndarray, float64
    """
    xp = backend.get_array_module(index)
    index = xp.asarray(index)
    if index.ndim != 3 or index.shape[1:] != setup.gpts:
        raise ValueError(f"index must have shape (n_slices, {setup.gpts[0]}, {setup.gpts[1]}), got {index.shape}")
    pupil_function = pupil(setup, xp=xp) if pupil_function is None else xp.asarray(pupil_function)
    grid = grids.make_grid(gpts=setup.gpts, sampling=setup.sampling)
    x, y = grids.coordinates(grid, xp=xp)
    thickness = index.shape[0] * slice_thickness
    use = _use_vignetting(setup, vignetting)
    size = setup.window if use else setup.camera_gpts[0]
    m = setup.camera_gpts[0]
    out = xp.empty((len(setup.shifts), m, m))
    for i, (sx, sy) in enumerate(progress.progress(setup.shifts, desc="LEDs")):
        tilt = xp.exp(2j * math.pi * (sx * x[:, None] + sy * y[None, :]) / setup.extent)
        exit_wave = scattering.bpm(index, wavelength=setup.wavelength,
                                   sampling=(slice_thickness, setup.sampling, setup.sampling),
                                   n_background=n_background, incident=tilt, wide_angle=wide_angle,
                                   all_planes=False)
        # back to the middle of the sample, the plane the objective is focused on
        focused = propagation.propagate(exit_wave, -thickness / 2, wavelength=setup.wavelength / n_background,
                                   sampling=setup.sampling, paraxial=not wide_angle)
        spectrum = backend.fft2(focused) / focused.size
        window = spectrum[np.ix_(_window_indices(setup.gpts[0], size, 0), _window_indices(setup.gpts[1], size, 0))]
        if use:
            window = _vignetting(window, setup, xp)
        out[i] = abs(backend.ifft2(_crop(window, m) * pupil_function) * m * m) ** 2
    return backend.asnumpy(out)


# ---------------------------------------------------------------------------- reconstruction

class Reconstruction(NamedTuple):
    """Result of :func:`reconstruct`: ``transmission`` (N, N), ``pupil`` (m, m), ``residuals`` per epoch."""

    transmission: np.ndarray
    pupil: np.ndarray
    residuals: np.ndarray


def reconstruct(images_measured, setup: Setup, *, vignetting=True, recover_pupil=True, pupil_init=None,
                max_num_iter=20, alpha=1.0, beta=1.0):
    """EPRY reconstruction of the object and the pupil, with or without the vignetting model.

    Parameters
    ----------
    images_measured : (n_leds, m, m) array_like, float
        Camera images, in the units of :func:`images` (1 = empty bright field).
    setup : Setup
    vignetting : bool
        Model the second aperture (cascaded-aperture projection ``V``), or
        ignore it (plain EPRY, one pupil for the whole field).
    recover_pupil : bool
        Update the pupil (EPRY) or keep ``pupil_init``.
    pupil_init : (m, m) array_like, optional
        Starting pupil; default the aberration-free one. Its support (where it
        is non-zero) is kept.
    max_num_iter : int
        Passes over all LEDs.
    alpha, beta : float
        Step sizes of the object and pupil updates, in (0, 2).

    Returns
    -------
    Reconstruction
        ``transmission`` (NumPy), ``pupil`` (NumPy) and the relative amplitude
        residual ``‖|ψ| - sqrt(I)‖ / ‖sqrt(I)‖`` of each pass.
    """
    xp = backend.xp
    measured = xp.asarray(np.asarray(backend.asnumpy(images_measured), dtype=np.float64))
    if measured.shape != (len(setup.shifts),) + setup.camera_gpts:
        raise ValueError(f"images must have shape {(len(setup.shifts),) + setup.camera_gpts}, got {measured.shape}")
    if not bool(xp.isfinite(measured).all()) or bool((measured < 0).any()):
        raise ValueError("images must be finite and >= 0")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 2:
            raise ValueError(f"{name} must be in (0, 2), got {value!r}")
    if isinstance(max_num_iter, bool) or not isinstance(max_num_iter, numbers.Integral) or max_num_iter < 1:
        raise ValueError(f"max_num_iter must be an integer >= 1, got {max_num_iter!r}")
    amplitude = xp.sqrt(measured)
    m, n_obj = setup.camera_gpts[0], setup.gpts[0]
    p = pupil(setup, xp=xp) if pupil_init is None else xp.asarray(pupil_init).astype(xp.complex128)
    support = abs(p) > 0
    use = _use_vignetting(setup, vignetting)
    size = setup.window if use else m
    order = np.argsort(np.hypot(*setup.shifts.T), kind="stable")
    # start from the upsampled amplitude of the most central LED's image, flat phase
    spectrum = _pad(backend.fft2(amplitude[order[0]].astype(xp.complex128)) / (m * m), n_obj, xp)
    residuals = []
    for _ in progress.progress(range(max_num_iter), desc="EPRY"):
        misfit = 0.0
        for i in order:
            sx, sy = setup.shifts[i]
            index = np.ix_(_window_indices(n_obj, size, sx), _window_indices(n_obj, size, sy))
            window = spectrum[index]
            seen = _crop(_vignetting(window, setup, xp) if use else window, m)
            field = backend.ifft2(p * seen) * (m * m)
            modulus = abs(field)
            misfit += float(xp.sum((modulus - amplitude[i]) ** 2))
            corrected = amplitude[i] * field / xp.maximum(modulus, 1e-12)
            delta = backend.fft2(corrected - field) / (m * m)
            update = xp.conj(p) * delta / float(xp.max(abs(p)) ** 2)
            if recover_pupil:
                p = xp.where(support, p + beta * xp.conj(seen) * delta / float(xp.max(abs(seen)) ** 2), 0)
            update = _pad(update, size, xp)
            spectrum[index] += alpha * (_vignetting(update, setup, xp) if use else update)
        residuals.append(math.sqrt(misfit / float(xp.sum(measured))))
    return Reconstruction(backend.asnumpy(backend.ifft2(spectrum) * n_obj * n_obj), backend.asnumpy(p),
                          np.array(residuals))


def amplitude_loss(spectrum, images_measured, pupil_function, setup: Setup, *, vignetting=True):
    """Amplitude loss of an object spectrum and its Wirtinger gradient.

    ``L = Σ_i ‖ |ψ_i| - sqrt(I_i) ‖²`` with ``ψ = A Ô`` (:func:`camera_fields`), and
    ``∂L/∂Ô* = A^H (ψ - sqrt(I) ψ / |ψ|)``, so that ``L(Ô + δ) ≈ L + 2 Re⟨∂L/∂Ô*, δ⟩``.
    The EPRY object update of :func:`reconstruct` is this gradient for one
    LED at a time, scaled by ``1 / max|P|²``.

    Parameters
    ----------
    spectrum : (N, N) array_like, complex
        Normalised object spectrum (as in :func:`camera_fields`).
    images_measured : (n_leds, m, m) array_like
        Camera images.
    pupil_function : (m, m) array_like
    setup : Setup
    vignetting : bool

    Returns
    -------
    loss : float
    gradient : (N, N) ndarray, complex
    """
    xp = backend.get_array_module(spectrum)
    amplitude = xp.sqrt(xp.asarray(images_measured, dtype=xp.float64))
    fields = camera_fields(spectrum, pupil_function, setup, vignetting=vignetting)
    modulus = abs(fields)
    residual = fields - amplitude * fields / xp.maximum(modulus, 1e-300)
    loss = float(xp.sum((modulus - amplitude) ** 2))
    return loss, camera_fields_adjoint(residual, pupil_function, setup, vignetting=vignetting)


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
    estimate, reference = (np.asarray(backend.asnumpy(a), dtype=complex) for a in (estimate, reference))
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {estimate.shape} and {reference.shape}")
    if band is not None:
        grid = grids.make_grid(gpts=reference.shape, sampling=sampling)
        keep = grids.frequency_squared(grid, xp=np) <= band**2
        estimate, reference = (np.fft.ifft2(np.fft.fft2(a) * keep) for a in (estimate, reference))
    c = np.vdot(estimate, reference) / np.vdot(estimate, estimate)
    return float(np.linalg.norm(c * estimate - reference) / np.linalg.norm(reference))
