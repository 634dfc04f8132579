"""Fourier ptychography: vignetting by cascaded apertures, the forward model and its adjoint.

The microscope's geometry (the LED array, the :class:`Setup` on the frequency
lattice, pupils, each LED's window of frequencies) is in
:mod:`mbook.light.led_geometry`.

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

``P_x(k) = P(k) · circ(|λ0 k - κ x| <= NA_v)``               (:func:`~mbook.light.led_geometry.effective_pupil`),

the "cat's eye" that cuts off-axis LEDs differently across the field (Pan et
al. 2017). Why cascaded apertures rather than patches with their own pupils:
``V`` is exact within Fresnel optics, continuous across the field (no seams
between patches, no patch size to tune), diffracts at the stop's edge as real
light does, costs four FFTs per image on a small grid, and has an exact
adjoint for reconstruction; the patch model is its geometric limit
(:func:`~mbook.light.led_geometry.effective_pupil`), used here only for illustration. LEDs whose
direct beam lies just inside the pupil (the bright-field/dark-field
transition) give "semi-bright, semi-dark" images under ``V``, which no single
pupil can explain.

Reconstruction
--------------
EPRY (Ou et al. 2014), with and without the vignetting model, its amplitude
loss and the error measures are in :mod:`mbook.light.epry`; it builds on the
public pieces here: :func:`~mbook.light.led_geometry.window_indices`,
:func:`vignetting_operator`, and the Fourier crops of :mod:`mbook.core.grids`.

Arrays are ``[x, y]`` (:mod:`mbook.core.grids`); lengths in µm; ``wavelength`` is λ0.

Devices
-------
Images, fields, spectra and pupils are moved to the selected device on entry
and come back there. The geometry of a :class:`~mbook.light.led_geometry.Setup`
(LED angles, their lattice shifts) is configuration kept on the host: a few
hundred numbers that index the spectra. The forward model and its adjoint treat the LEDs as
an array axis, in batches sized by :func:`mbook.core.progress.plan_batches`;
EPRY's updates are sequential by design (each LED sees the previous one's
update) and copy nothing to the host.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.light import fourier_ptychography as fp, led_geometry
>>> leds = led_geometry.led_array((3, 3), pitch=4.0, height=60.0)
>>> setup = led_geometry.make_setup((64, 64), sampling=0.5, wavelength=0.5, na=0.1, illumination=leds,
...                                 upsampling=2)
>>> images = fp.images(np.ones((64, 64), complex), setup)
>>> bool(np.allclose(backend.asnumpy(images[0]), 1.0))          # the central LED sees an empty slide
True
"""

from __future__ import annotations

import math

from mbook.core import backend, checks, grids, progress, propagation, scatter
from mbook.light import scattering
from mbook.light.led_geometry import Setup, check_setup, pupil, window_indices

#: Bytes of work per batch of LEDs in :func:`images_thick` on the CPU (a GPU takes the memory budget).
CPU_BATCH_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------- the forward model

def vignetting_operator(setup: Setup, *, xp=None):
    """The cascaded-aperture projection ``V = F C* F^-1 A_v F C F^-1`` as a function of window spectra.

    Its chirp ``C`` and stop ``A_v`` are made once, so that applying it in a
    loop (EPRY's updates) costs four FFTs and no set-up.

    Parameters
    ----------
    setup : Setup
        With a second aperture (``na_vignetting``).
    xp : module, optional
        Array module of the kernels; default the selected device's.

    Returns
    -------
    callable
        ``V(window_spectrum)`` for ``(..., w, w)`` FFT-ordered spectra on the
        window grid (``w = setup.window``); a kernel: it follows its input's
        device, which must be that of ``xp``.
    """
    check_setup(setup)
    if setup.na_vignetting is None:
        raise ValueError("setup has no second aperture (na_vignetting=None): there is no vignetting to apply")
    xp = xp or backend.xp
    size = setup.window
    grid = grids.make_grid(gpts=(size, size), extent=setup.extent)
    x, y = grids.coordinates(grid, centered=True, xp=xp)
    chirp = xp.exp(-1j * math.pi * setup.vignetting_slope * (x[:, None] ** 2 + y[None, :] ** 2)
                   / setup.wavelength)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    stop = setup.wavelength**2 * (kx[:, None] ** 2 + ky[None, :] ** 2) <= setup.na_vignetting**2
    conj_chirp = xp.conj(chirp)

    def apply(window_spectrum):
        field = backend.ifft2(window_spectrum) * chirp
        field = backend.ifft2(backend.fft2(field) * stop) * conj_chirp
        return backend.fft2(field)

    return apply


def vignetting(window_spectrum, setup: Setup):
    """Apply the cascaded-aperture projection of :func:`vignetting_operator` once.

    Self-adjoint and idempotent (``V^H = V = V²``).

    Parameters
    ----------
    window_spectrum : (..., w, w) array_like, complex
        Spectra on the window grid (``setup.window``, FFT order); leading
        axes are a batch.
    setup : Setup
        With a second aperture (``na_vignetting``).

    Returns
    -------
    (..., w, w) ndarray, complex128
        On the selected device.
    """
    check_setup(setup)
    window_spectrum = checks.check_array(window_spectrum, "window_spectrum", min_ndim=2)
    if window_spectrum.shape[-2:] != (setup.window, setup.window):
        raise ValueError(f"window_spectrum must end with the window's shape {(setup.window, setup.window)}, "
                         f"got {window_spectrum.shape}")
    xp = backend.get_array_module(window_spectrum)
    return vignetting_operator(setup, xp=xp)(window_spectrum.astype(xp.complex128))


def check_spectrum(array, shape, name):
    """``array`` on the selected device as complex128, checked to have ``shape`` and finite values.

    The check of :func:`camera_fields` and its kin for spectra, pupils and fields.
    """
    array = checks.check_array(array, name, finite=False)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    xp = backend.get_array_module(array)
    if not bool(xp.all(xp.isfinite(array))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(xp.complex128)


def _led_batch(setup, size):
    """LEDs per batch of the forward model: a window, its vignetting FFTs and a camera field each."""
    return progress.plan_batches(n_items=len(setup.shifts), bytes_per_item=6 * 16 * size * size)


def _camera_fields(spectrum, pupil_function, setup, use):
    """The kernel of :func:`camera_fields`: LEDs as an array axis, in batches."""
    xp = backend.get_array_module(spectrum)
    size = setup.window if use else setup.camera_gpts[0]
    m = setup.camera_gpts[0]
    rows, columns = window_indices(setup, vignetting=use, xp=xp)
    vignette = vignetting_operator(setup, xp=xp) if use else None
    out = xp.empty((len(setup.shifts), m, m), xp.complex128)
    batch = _led_batch(setup, size)
    for start in range(0, len(setup.shifts), batch):
        leds = slice(start, start + batch)
        window = spectrum[rows[leds][:, :, None], columns[leds][:, None, :]]
        if use:
            window = vignette(window)
        out[leds] = backend.ifft2(grids.crop_spectrum(window, m) * pupil_function) * (m * m)
    return out


def camera_fields(spectrum, pupil_function, setup: Setup, *, vignetting=True):
    """Complex camera fields of every LED: the linear part of the forward model.

    Parameters
    ----------
    spectrum : (N, N) array_like, complex
        Normalised object spectrum ``fft2(o) / N²`` (FFT order; its DC term is
        the mean transmission).
    pupil_function : (m, m) array_like, complex
        Pupil on the camera grid (:func:`~mbook.light.led_geometry.pupil`).
    setup : Setup
    vignetting : bool
        Apply the cascaded-aperture obstruction (when the setup has one).

    Returns
    -------
    (n_leds, m, m) ndarray, complex128
        ``|.|²`` are the camera images; on the selected device.
    """
    check_setup(setup)
    spectrum = check_spectrum(spectrum, setup.gpts, "spectrum")
    pupil_function = check_spectrum(pupil_function, setup.camera_gpts, "pupil_function")
    return _camera_fields(spectrum, pupil_function, setup, setup.uses_vignetting(vignetting))


def camera_fields_adjoint(fields, pupil_function, setup: Setup, *, vignetting=True):
    """Adjoint of :func:`camera_fields` in the object spectrum: ``(n, m, m) -> (N, N)``, on the selected device.

    The windows of neighbouring LEDs overlap: their contributions are summed
    with one weighted ``bincount`` per batch of LEDs.
    """
    check_setup(setup)
    fields = check_spectrum(fields, (len(setup.shifts),) + setup.camera_gpts, "fields")
    pupil_function = check_spectrum(pupil_function, setup.camera_gpts, "pupil_function")
    xp = backend.get_array_module(fields)
    use = setup.uses_vignetting(vignetting)
    size = setup.window if use else setup.camera_gpts[0]
    rows, columns = window_indices(setup, vignetting=use, xp=xp)
    vignette = vignetting_operator(setup, xp=xp) if use else None
    n_obj = setup.gpts[0]
    real, imag = xp.zeros(n_obj * setup.gpts[1]), xp.zeros(n_obj * setup.gpts[1])
    batch = _led_batch(setup, size)
    for start in range(0, len(setup.shifts), batch):
        leds = slice(start, start + batch)
        window = grids.pad_spectrum(xp.conj(pupil_function) * backend.fft2(fields[leds]), size)
        if use:
            window = vignette(window)
        flat = (rows[leds][:, :, None] * setup.gpts[1] + columns[leds][:, None, :]).ravel()
        scatter.add(real, flat, window.real.ravel())
        scatter.add(imag, flat, window.imag.ravel())
    return (real + 1j * imag).reshape(setup.gpts)


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
    (n_leds, m, m) ndarray, float64
        On the selected device.
    """
    check_setup(setup)
    transmission = checks.check_field(transmission, "transmission")
    if transmission.shape != setup.gpts:
        raise ValueError(f"transmission must have shape {setup.gpts}, got {transmission.shape}")
    xp = backend.get_array_module(transmission)
    pupil_function = (pupil(setup, xp=xp) if pupil_function is None
                      else check_spectrum(pupil_function, setup.camera_gpts, "pupil_function"))
    spectrum = backend.fft2(transmission.astype(xp.complex128)) / transmission.size
    fields = _camera_fields(spectrum, pupil_function, setup, setup.uses_vignetting(vignetting))
    return fields.real**2 + fields.imag**2


def images_thick(index, setup: Setup, *, slice_thickness, n_background=1.0, pupil_function=None,
                 vignetting=True, wide_angle=False):
    """Camera images of a thick sample: BPM per LED, refocused to the sample's middle.

    The LEDs' tilted plane waves go through the sample together, as a batch
    of :func:`mbook.light.scattering.bpm` (batches sized by
    :func:`mbook.core.progress.plan_batches`).

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
        On the selected device.
    """
    check_setup(setup)
    index = checks.check_array(index, "index")
    if index.ndim != 3 or index.shape[1:] != setup.gpts:
        raise ValueError(f"index must have shape (n_slices, {setup.gpts[0]}, {setup.gpts[1]}), got {index.shape}")
    slice_thickness = checks.check_positive_number(slice_thickness, "slice_thickness")
    xp = backend.get_array_module(index)
    pupil_function = (pupil(setup, xp=xp) if pupil_function is None
                      else check_spectrum(pupil_function, setup.camera_gpts, "pupil_function"))
    grid = grids.make_grid(gpts=setup.gpts, sampling=setup.sampling)
    x, y = grids.coordinates(grid, xp=xp)
    thickness = index.shape[0] * slice_thickness
    use = setup.uses_vignetting(vignetting)
    size = setup.window if use else setup.camera_gpts[0]
    m = setup.camera_gpts[0]
    vignette = vignetting_operator(setup, xp=xp) if use else None
    shifts = xp.asarray(setup.shifts)
    out = xp.empty((len(setup.shifts), m, m))
    # per LED: its incident wave, the BPM field and its FFTs, the refocused wave, its spectrum and window
    n_obj = math.prod(setup.gpts)
    budget = progress.memory_budget()
    if not backend.gpu_code_path():  # on the CPU, moderate batches run ~20 % faster than one huge one
        budget = min(budget, 3 * 16 * index.size + max(CPU_BATCH_BYTES, 8 * 16 * n_obj))
    batch = progress.plan_batches(n_items=len(setup.shifts), bytes_per_item=8 * 16 * n_obj,
                                  fixed_bytes=3 * 16 * index.size, budget=budget)
    for start in progress.progress(range(0, len(setup.shifts), batch), desc="LED batches"):
        leds = slice(start, start + batch)
        sx, sy = shifts[leds, 0, None, None], shifts[leds, 1, None, None]
        tilts = xp.exp(2j * math.pi * (sx * x[None, :, None] + sy * y[None, None, :]) / setup.extent)
        exit_waves = scattering.bpm(index, wavelength=setup.wavelength,
                                    sampling=(slice_thickness, setup.sampling, setup.sampling),
                                    n_background=n_background, incident=tilts, wide_angle=wide_angle,
                                    all_planes=False)
        # back to the middle of the sample, the plane the objective is focused on
        focused = propagation.propagate(exit_waves, -thickness / 2, wavelength=setup.wavelength / n_background,
                                        sampling=setup.sampling, paraxial=not wide_angle)
        window = grids.crop_spectrum(backend.fft2(focused) / n_obj, size)  # about k = 0: the tilt is in the wave
        if use:
            window = vignette(window)
        fields = backend.ifft2(grids.crop_spectrum(window, m) * pupil_function) * (m * m)
        out[leds] = fields.real**2 + fields.imag**2
    return out
