"""The LED-array microscope of Fourier ptychography: its geometry on the frequency lattice.

An LED array below the sample lights it with plane waves, one direction per
LED (:func:`led_array`: the illumination NA ``(sin θx, sin θy)`` of each).
On a periodic object grid of extent ``L`` only frequencies ``q = shift / L``
with integer shifts are periodic, so :func:`make_setup` rounds every LED to
the lattice and checks the microscope samples what it must: camera pixels
fine enough for ``NA / λ0``, and every LED's window of frequencies (pupil and
vignetting margin included) inside the object grid's band. The result is a
:class:`Setup`, the configuration every function of the forward model
(:mod:`mbook.light.fourier_ptychography`) and of its reconstruction
(:mod:`mbook.light.epry`) takes.

From a setup: :func:`select_leds` (a subset of the LEDs), :func:`pupil` (the
objective pupil on the camera's frequency grid), :func:`effective_pupil`
(the stationary-phase "cat's eye" pupil a field point sees through a second
aperture) and :func:`window_indices` (where in the object spectrum each LED's
window of frequencies lies).

Devices
-------
The geometry (LED angles, their lattice shifts) is configuration kept on the
host: a few hundred numbers that index the spectra. Pupils and window
indices come back on the selected device (:mod:`mbook.core.backend`).

Examples
--------
>>> from mbook.light import led_geometry
>>> leds = led_geometry.led_array((3, 3), pitch=4.0, height=60.0)
>>> setup = led_geometry.make_setup((64, 64), sampling=0.5, wavelength=0.5, na=0.1, illumination=leds,
...                                 upsampling=2)
>>> setup.camera_gpts, setup.shifts.tolist()[:3]
((32, 32), [[0, 0], [-4, 0], [0, -4]])
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import scipy.fft

from mbook.core import backend, checks, grids, propagation
from mbook.light import microscope


class Setup(NamedTuple):
    """Geometry of a Fourier ptychographic microscope (see :func:`make_setup`).

    The geometry is configuration, kept on the host (NumPy): it indexes the
    spectra, whose arrays live on the selected device.

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
        Illumination NA ``(sin θx, sin θy)`` of each LED, as given (host).
    shifts : (n, 2) ndarray, int
        The same on the frequency lattice: ``q = shifts / extent`` (host).
    na_vignetting : float or None
        Radius of the second aperture [NA]; None: no vignetting.
    vignetting_slope : float
        κ, displacement of the second aperture per µm of field [NA/µm].
    window : int
        Side of the frequency window the vignetting operator works on: by
        :func:`make_setup`, twice the farthest frequency the chirp visits.
        The hard stop's diffraction tails reach beyond it, so the images
        converge slowly with the window: on the Fourier-ptychography page's
        setup (128² object pixels of 0.5 µm, 5 × 5 LEDs, second aperture
        NA 0.11, κ = 2e-3 NA/µm) the default 54 leaves them 2.6 % from the
        full object grid's, 64 1.7 %, 80 0.9 %, 112 0.2 %; take a wider one
        with ``setup._replace(window=...)`` where that matters.
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

    def uses_vignetting(self, vignetting=True) -> bool:
        """Whether the vignetting model applies: asked for, and the setup has a second aperture."""
        return bool(vignetting) and self.na_vignetting is not None

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
        ``(sin θx, sin θy)``, the central LED first, on the selected device.
    """
    shape = checks.check_gpts(shape, 2, name="shape")
    pitch = checks.check_positive(pitch, "pitch", 1)[0]
    height = checks.check_positive(height, "height", 1)[0]
    center = [checks.check_number(c, "center") for c in checks.as_tuple(center, "center", 2)]
    # a few hundred numbers, sorted on the host (a stable sort keeps the grid's order among equals)
    i, j = (np.arange(n) - (n - 1) / 2 for n in shape)
    x = (i[:, None] * pitch + center[0]) * np.ones(shape[1])[None, :]
    y = (j[None, :] * pitch + center[1]) * np.ones(shape[0])[:, None]
    r = np.sqrt(x**2 + y**2 + height**2)
    sines = np.stack([(x / r).ravel(), (y / r).ravel()], axis=1)
    return backend.asarray(sines[np.argsort(np.hypot(*sines.T), kind="stable")])


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
        Illumination NA of each LED (:func:`led_array`); copied to the host.
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
    try:
        illumination = np.asarray(backend.asnumpy(illumination), dtype=float)  # configuration: on the host
    except (TypeError, ValueError):
        raise ValueError(f"illumination must be a finite (n, 2) array of NA, got {illumination!r:.60}") from None
    if (illumination.ndim != 2 or illumination.shape[1] != 2 or illumination.shape[0] < 1
            or not np.isfinite(illumination).all()):
        raise ValueError(f"illumination must be a finite (n, 2) array of NA, got shape {illumination.shape}")
    extent = gpts[0] * sampling
    camera = gpts[0] // upsampling
    cutoff = na * extent / wavelength  # pupil radius in lattice steps
    if camera < 2 * cutoff:
        raise ValueError(
            f"camera pixels of {sampling * upsampling:g} µm undersample NA/λ0 = {na / wavelength:.3g} 1/µm; "
            f"use upsampling <= {int(gpts[0] / (2 * cutoff))}"
        )
    slope = checks.check_number(vignetting_slope, "vignetting_slope")
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
            f"LED {worst} (illumination NA ({illumination[worst][0]:.3f}, {illumination[worst][1]:.3f})) is beyond "
            f"the grid's bandwidth: its frequencies reach past the object grid's Nyquist {1 / (2 * sampling):.3g} "
            f"1/µm; the largest illumination NA per axis is {limit * wavelength / extent:.3g} "
            f"(use a finer sampling or fewer LEDs)"
        )
    return Setup(gpts, sampling, wavelength, na, int(upsampling), illumination, shifts, na_vignetting, slope,
                 int(window))


def select_leds(setup: Setup, keep) -> Setup:
    """The same microscope with only some of its LEDs (e.g. to drop the transition ones).

    Parameters
    ----------
    setup : Setup
    keep : (n,) array_like of bool, or sequence of int
        A mask over the LEDs of ``setup``, or the indices of those to keep
        (in that order).

    Returns
    -------
    Setup
    """
    check_setup(setup)
    keep = np.asarray(backend.asnumpy(keep))
    if keep.dtype == bool:
        if keep.shape != (len(setup.shifts),):
            raise ValueError(f"keep must be a mask of {len(setup.shifts)} LEDs, got shape {keep.shape}")
        keep = np.nonzero(keep)[0]
    if keep.ndim != 1 or keep.dtype.kind not in "iu" or not keep.size or (
            keep.min() < -len(setup.shifts) or keep.max() >= len(setup.shifts)):
        raise ValueError(f"keep must select at least one of the {len(setup.shifts)} LEDs, got {keep!r}")
    return setup._replace(illumination=setup.illumination[keep], shifts=setup.shifts[keep])


def pupil(setup: Setup, *, defocus=0.0, zernike_waves=None, xp=None):
    """Objective pupil on the camera's frequency grid (FFT order), see :func:`mbook.light.microscope.pupil`.

    Returns an ``(m, m)`` complex128 array on the selected device (or made with ``xp``).
    """
    check_setup(setup)
    grid = grids.make_grid(gpts=setup.camera_gpts, extent=setup.extent)
    return microscope.pupil(grid, wavelength=setup.wavelength, na=setup.na, defocus=defocus,
                            zernike_waves=zernike_waves, xp=xp)


def effective_pupil(setup: Setup, position, *, xp=None):
    """Geometric (stationary-phase) pupil seen from field position ``(x, y)`` [µm from the centre].

    Returns an ``(m, m)`` float array (1 inside, 0 outside), FFT order, on the
    selected device (or made with ``xp``).
    """
    check_setup(setup)
    xp = xp or backend.xp
    position = [checks.check_number(p, "position") for p in checks.as_tuple(position, "position", 2)]
    grid = grids.make_grid(gpts=setup.camera_gpts, extent=setup.extent)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    lam = setup.wavelength
    inside = (lam * kx[:, None]) ** 2 + (lam * ky[None, :]) ** 2 <= setup.na**2
    if setup.na_vignetting is not None:
        sx, sy = (setup.vignetting_slope * p for p in position)
        inside &= (lam * kx[:, None] - sx) ** 2 + (lam * ky[None, :] - sy) ** 2 <= setup.na_vignetting**2
    return inside.astype(xp.float64)


def check_setup(setup, name: str = "setup"):
    """Refuse anything but a :class:`Setup` (from :func:`make_setup`), naming the parameter."""
    if not isinstance(setup, Setup):
        raise TypeError(f"{name} must be a Setup (see make_setup), got {type(setup).__name__} {setup!r:.60}")
    return setup


def window_indices(setup: Setup, *, vignetting=True, xp=None):
    """Object-spectrum indices of every LED's frequency window.

    LED ``i`` sees the object spectrum about ``-q_i``: the window of ``w``
    frequencies (the camera's ``m``, or ``setup.window`` with vignetting)
    centred there, in FFT order, is ``spectrum[rows[i][:, None], columns[i][None, :]]``.

    Parameters
    ----------
    setup : Setup
    vignetting : bool
        Windows for the vignetting model (``setup.window`` wide, when the
        setup has a second aperture) or for the camera alone.
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    rows, columns : (n_leds, w) ndarray, int
        On the selected device.
    """
    check_setup(setup)
    xp = xp or backend.xp
    size = setup.window if setup.uses_vignetting(vignetting) else setup.camera_gpts[0]
    frequencies = np.fft.fftfreq(size, 1.0 / size).astype(int)
    rows, columns = ((frequencies[None, :] - setup.shifts[:, axis:axis + 1]) % n
                     for axis, n in enumerate(setup.gpts))
    return xp.asarray(rows), xp.asarray(columns)
