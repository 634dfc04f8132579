"""Light through thick samples: the beam propagation method, Born and Rytov.

A sample is a map of the refractive index ``n(r)`` (complex: ``Im n >= 0`` is
absorption) in a homogeneous medium of real index ``n_background``. The scalar
field obeys the Helmholtz equation

``(∇² + k0² n(r)²) u = 0``,  ``k0 = 2π / λ0``,

with λ0 the vacuum wavelength. Writing ``k_b = k0 n_b`` and the scattering
potential ``V = k0² (n² - n_b²)`` [rad²/µm²] turns it into
``(∇² + k_b²) u = -V u``, whose outgoing solution is the Lippmann–Schwinger
equation ``u = u_in + G * (V u)``, with ``G = (i/4) H0^(1)(k_b r)`` in 2D and
``exp(i k_b r) / (4π r)`` in 3D.

Conventions (shared with :mod:`mbook.light.cbs` and :mod:`mbook.light.mie`)
-----------------------------------------------------------------
- Lengths in one unit (µm), ``wavelength`` is the vacuum wavelength.
- Arrays are ``(nz, nx)`` or ``(nz, nx, ny)``: **axis 0 is the optical axis z**,
  as the slices of :mod:`mbook.electron.multislice`; the transverse axes follow
  :mod:`mbook.core.grids`. ``sampling`` is ``(dz, dx[, dy])`` or one number.
- The plane wave ``exp(2πi n_b z / λ0)`` travels along +z; every field is
  returned with this carrier left out (an empty sample gives 1), as in
  :mod:`mbook.light.microscope`.
- Methods that solve the full wave equation (Born, Rytov, wide-angle BPM, the
  convergent Born series) need at least two samples per wavelength in the
  densest medium: ``sampling <= λ0 / (2 max Re n)`` along every axis, or the
  propagating waves do not fit on the grid. Coarser grids are refused.
  Paraxial BPM has no such bound (it only represents small angles).

Approximations
--------------
- **First Born**: ``u ≈ u_in + G * (V u_in)``; valid while the phase delay
  ``k0 Δn d`` through the object stays well below 1 (Chen & Stamnes 1998).
- **First Rytov**: ``u ≈ u_in exp(u_B / u_in)`` with ``u_B`` the Born scattered
  field; follows the phase delay of smooth objects, fails with large Δn.
- **BPM** (split-step, multislice): thin phase screens
  ``exp(i k0 (n - n_b) Δz)`` alternated with free propagation in the
  background, paraxial (Fresnel) or wide-angle (angular spectrum); forward
  scattering only: no reflection (Feit & Fleck 1978).

Devices
-------
Every public function moves its arrays to the selected device on entry and
returns its fields there (:mod:`mbook.core.backend`); the Green's function is
sampled on the device too (``H_0^(1) = J_0 + i Y_0`` from
:func:`~mbook.core.backend.scipy_module`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.light import scattering
>>> n = np.full((32, 64), 1.33)                 # empty water, 32 x 64 grid
>>> u = scattering.born(n, wavelength=0.5, sampling=0.1, n_background=1.33)
>>> bool(np.allclose(backend.asnumpy(u), 1.0))
True
"""

from __future__ import annotations

import math

from scipy import special

from mbook.core import backend, checks, grids, progress, propagation
from mbook.light import mie


# ---------------------------------------------------------------------------- validation

def check_index(n, *, wavelength, sampling, n_background, nonparaxial=True):
    """Validate an index map and its grid; return ``(n, grid, wavelength, n_background)``.

    Parameters
    ----------
    n : (nz, nx) or (nz, nx, ny) array_like, complex
        Refractive index map.
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or tuple
        Grid spacing [µm].
    n_background : float
        Real index of the surrounding medium.
    nonparaxial : bool
        Enforce the two-samples-per-wavelength bound of full-wave methods.

    Returns
    -------
    n : ndarray, complex128
        On the selected device.
    grid : Grid
    wavelength, n_background : float

    Raises
    ------
    ValueError
        Non-finite values, ``Re n <= 0``, gain (``Im n < 0``), a map that is not
        2D or 3D, or (``nonparaxial``) a sampling coarser than ``λ0 / (2 max Re n)``.
    """
    n = checks.check_array(n, "n", finite=False)
    if n.ndim not in (2, 3):
        raise ValueError(f"n must be a 2D (nz, nx) or 3D (nz, nx, ny) index map, got shape {n.shape}")
    xp = backend.get_array_module(n)
    n = n.astype(xp.complex128)
    # one copy to the host for the four numbers the checks need
    finite, real_min, imag_min, real_max = backend.asnumpy(xp.stack(
        [xp.all(xp.isfinite(n)), n.real.min(), n.imag.min(), n.real.max()]).astype(xp.float64)).tolist()
    if not finite:
        raise ValueError("n contains NaN or infinite values")
    if real_min <= 0:
        raise ValueError(f"n must have a real part > 0 everywhere, got min {real_min}")
    if imag_min < 0:
        raise ValueError(
            f"n has a negative imaginary part (min {imag_min:.3g}): that is gain; with the "
            "exp(-iωt) convention an absorbing sample has Im n >= 0"
        )
    grid, wavelength, n_b = _check_grid(n.shape, wavelength, sampling, n_background, real_max, nonparaxial)
    return n, grid, wavelength, n_b


def _check_grid(shape, wavelength, sampling, n_background, n_max, nonparaxial=True):
    """Grid, wavelength and real background index of a map of ``shape`` whose largest ``Re n`` is ``n_max``."""
    wavelength = propagation.check_wavelength(wavelength)
    n_b = mie.check_index_value(n_background, "n_background")
    if n_b.imag != 0:
        raise ValueError(f"n_background must be real, got {n_background!r}")
    grid = grids.make_grid(gpts=shape, sampling=sampling, ndim=len(shape))
    if nonparaxial:
        n_max = max(n_max, n_b.real)
        limit = wavelength / (2 * n_max)
        if max(grid.sampling) > limit * (1 + 1e-9):
            raise ValueError(
                f"sampling {grid.sampling} is coarser than λ0 / (2 max Re n) = {wavelength:g} / (2 × {n_max:g}) "
                f"= {limit:.4g}: the waves in the sample do not fit on the grid; use sampling <= {limit:.4g}"
            )
    return grid, wavelength, n_b.real


def _check_tilt(tilt, ndim):
    return tuple(checks.check_number(v, "tilt", units="1/µm, a transverse frequency")
                 for v in checks.as_tuple(tilt, "tilt", ndim - 1))


# ---------------------------------------------------------------------------- shared pieces

def scattering_potential(n, *, wavelength, n_background=1.0):
    """``V = k0² (n² - n_b²)`` [rad²/length²], the source term of the Lippmann–Schwinger equation.

    ``n`` (any shape) is moved to the selected device; so is the result.
    """
    k0 = 2 * math.pi / propagation.check_wavelength(wavelength)
    n = checks.check_array(n, "n")
    n_background = _check_background(n_background)
    return k0**2 * (n**2 - n_background**2)


def _check_background(n_background):
    n_b = mie.check_index_value(n_background, "n_background")
    if n_b.imag != 0:
        raise ValueError(f"n_background must be real, got {n_background!r}")
    return n_b.real


def plane_wave(grid: grids.Grid, *, wavelength, n_background=1.0, tilt=0.0, xp=None):
    """Envelope of a plane wave in the background medium, carrier ``exp(i k_b z)`` left out.

    ``exp(2πi (k_t · r_t + (k_z - n_b/λ0) z))`` with ``k_z = sqrt((n_b/λ0)² - |k_t|²)``.

    Parameters
    ----------
    grid : Grid
        (z, x) or (z, x, y) grid.
    wavelength : float
        Vacuum wavelength [µm].
    n_background : float
        Index of the medium.
    tilt : float or (float, float)
        Transverse spatial frequency ``k_t`` (cycles per µm, no 2π); the angle
        from z is ``asin(λ0 k_t / n_b)``.
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    ndarray, complex128, shape ``grid.gpts``
        On the selected device.
    """
    checks.check_grid(grid)
    wavelength = propagation.check_wavelength(wavelength)
    n_background = _check_background(n_background)
    xp = xp or backend.xp
    tilt = _check_tilt(tilt, grid.ndim)
    k_b = n_background / wavelength
    kz2 = k_b**2 - sum(t**2 for t in tilt)
    if kz2 <= 0:
        raise ValueError(f"tilt {tilt} [1/µm] is beyond the propagating limit n_b/λ0 = {k_b:.4g} 1/µm")
    coords = grids.coordinates(grid, xp=xp)
    phase = (math.sqrt(kz2) - k_b) * coords[0].reshape((-1,) + (1,) * (grid.ndim - 1))
    for axis, t in enumerate(tilt, start=1):
        shape = [1] * grid.ndim
        shape[axis] = -1
        phase = phase + t * coords[axis].reshape(shape)
    return xp.exp(2j * math.pi * phase)


def _green_spectrum(grid, k, xp):
    """FFT of the outgoing Green's function sampled on the doubled grid, on the device of ``xp``.

    Pixels away from the origin take the point value; the origin takes the
    average over a disc (2D) or ball (3D) of the pixel's area or volume, which
    removes the singularity to the order of the quadrature (a number, computed
    on the host).
    """
    ndim = grid.ndim
    axes = [xp.fft.fftfreq(2 * n, 1.0 / (2 * n)) * d for n, d in zip(grid.gpts, grid.sampling)]  # FFT order
    r = xp.sqrt(sum(a.reshape([-1 if i == j else 1 for j in range(ndim)]) ** 2 for i, a in enumerate(axes)))
    cell = math.prod(grid.sampling)
    r_safe = xp.where(r > 0, r, 1.0)
    if ndim == 2:
        bessel = backend.scipy_module("special", r)
        kernel = 0.25j * (bessel.j0(k * r_safe) + 1j * bessel.y0(k * r_safe))  # (i/4) H0^(1)(k r)
        a = math.sqrt(cell / math.pi)
        # (1/A) ∫_disc (i/4) H0(k r) dA = (i/4)(2π/A) [a H1(ka)/k + 2i/(π k²)]
        origin = 0.25j * 2 * math.pi / cell * (a * complex(special.hankel1(1, k * a)) / k + 2j / (math.pi * k**2))
    else:
        kernel = xp.exp(1j * k * r_safe) / (4 * math.pi * r_safe)
        a = (3 * cell / (4 * math.pi)) ** (1 / 3)
        # (1/V) ∫_ball e^{ikr}/(4πr) dV = (1/V) [e^{ika} (a/(ik) + 1/k²) - 1/k²]
        origin = (complex(math.cos(k * a), math.sin(k * a)) * (a / (1j * k) + 1 / k**2) - 1 / k**2) / cell
    kernel = xp.where(r > 0, kernel, origin) * cell  # the quadrature weight of each source pixel
    return backend.fftn(kernel)


def _check_born_memory(shape, name):
    """Refuse a Born or Rytov field on a grid of ``shape`` whose work exceeds the memory budget, before any.

    The peak holds five complex128 arrays of the grid (the index or potential, the incident wave, the
    source, the scattered field and the result) and four of the grid doubled along every axis (the
    Green's function's spectrum, the zero-padded source, its FFT and their product):
    ``16 (5 + 4 · 2^ndim)`` bytes per grid point, 336 in 2D (the peak measured with tracemalloc).

    Parameters
    ----------
    shape : tuple of int
        The grid, ``(nz, nx)`` or ``(nz, nx, ny)``.
    name : str
        The parameter the grid comes from, for the message.

    Raises
    ------
    MemoryError
        Naming ``name``, its shape, the estimate and the budget
        (:func:`mbook.core.progress.memory_budget`, ``MBOOK_MEMORY_GB``).
    """
    try:
        progress.plan_batches(n_items=1, bytes_per_item=16 * (5 + 4 * 2 ** len(shape)) * math.prod(shape))
    except MemoryError as error:
        raise MemoryError(f"{name} of shape {shape}: the Born field {error}") from None


def _green_convolve(source, grid, k, *, adjoint=False):
    """``∫ G(r - r') s(r') dr'`` on the grid, aperiodic (zero padding to twice the size)."""
    xp = backend.get_array_module(source)
    # kernel spectrum, padded source and its FFT: three complex arrays of 2^ndim times the grid (the callers
    # estimated their whole work on entry, _check_born_memory; this guards the kernel alone)
    progress.plan_batches(n_items=1, bytes_per_item=3 * 16 * 2**grid.ndim * math.prod(grid.gpts))
    spectrum = _green_spectrum(grid, k, xp)
    if adjoint:  # G is symmetric, G(-r) = G(r): its adjoint convolves with conj(G)
        spectrum = xp.conj(spectrum)
    padded = xp.zeros(tuple(2 * n for n in grid.gpts), xp.complex128)
    crop = tuple(slice(0, n) for n in grid.gpts)
    padded[crop] = source
    return backend.ifftn(backend.fftn(padded) * spectrum)[crop]


# ---------------------------------------------------------------------------- Born and Rytov

def born_scattered_field(potential, *, wavelength, sampling, n_background=1.0, tilt=0.0):
    """First-Born scattered field ``G * (V u_in)``: linear in the potential.

    Parameters
    ----------
    potential : (nz, nx) or (nz, nx, ny) array_like, complex
        Scattering potential ``V = k0² (n² - n_b²)`` [rad²/µm²]
        (:func:`scattering_potential`).
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or tuple
        Grid spacing (dz, dx[, dy]) [µm], at most ``λ0 / (2 n_b)``.
    n_background : float
        Index of the medium.
    tilt : float or (float, float)
        Transverse frequency of the incident plane wave [1/µm].

    Returns
    -------
    ndarray, complex128, same shape
        Scattered field, carrier left out, on the selected device.
    """
    potential, grid, k_b, incident, xp = _born_setup(potential, wavelength, sampling, n_background, tilt,
                                                     "potential")
    return _green_convolve(potential * incident, grid, k_b) / _carrier(grid, k_b, xp)


def born_scattered_field_adjoint(field, *, wavelength, sampling, n_background=1.0, tilt=0.0):
    """Adjoint of :func:`born_scattered_field`: ``conj(u_in) G^H field`` [same units], on the selected device."""
    field, grid, k_b, incident, xp = _born_setup(field, wavelength, sampling, n_background, tilt, "field")
    return xp.conj(incident) * _green_convolve(field * _carrier(grid, k_b, xp), grid, k_b, adjoint=True)


def _carrier(grid, k_b, xp):
    z = grids.coordinates(grid, xp=xp)[0]
    return xp.exp(1j * k_b * z).reshape((-1,) + (1,) * (grid.ndim - 1))


def _born_setup(array, wavelength, sampling, n_background, tilt, name):
    array = checks.check_array(array, name)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a finite 2D or 3D array, got shape {array.shape}")
    _check_born_memory(array.shape, name)  # before the copies below
    xp = backend.get_array_module(array)
    array = array.astype(xp.complex128)
    grid, wavelength, n_b = _check_grid(array.shape, wavelength, sampling, n_background, 0.0)
    k_b = 2 * math.pi * n_b / wavelength
    incident = plane_wave(grid, wavelength=wavelength, n_background=n_b, tilt=tilt, xp=xp)
    return array, grid, k_b, incident * _carrier(grid, k_b, xp), xp


def born(n, *, wavelength, sampling, n_background=1.0, tilt=0.0):
    """Total field in the first Born approximation, carrier left out.

    Parameters
    ----------
    n : (nz, nx) or (nz, nx, ny) array_like, complex
        Refractive index map (``Im n >= 0``).
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or tuple
        Grid spacing [µm], at most ``λ0 / (2 max Re n)``.
    n_background : float
        Index of the medium around the sample.
    tilt : float or (float, float)
        Transverse frequency of the incident plane wave [1/µm].

    Returns
    -------
    ndarray, complex128
        ``u_in + G * (V u_in)``, on the selected device.

    Raises
    ------
    MemoryError
        When the work, ``16 (5 + 4 · 2^ndim)`` bytes per grid point (the grid
        doubled for the aperiodic convolution), exceeds the memory budget
        (``MBOOK_MEMORY_GB``): estimated from the shape of ``n`` before any copy.
    """
    n = checks.check_array(n, "n", finite=False)  # moved once; the copies come after the estimate
    if n.ndim in (2, 3):
        _check_born_memory(n.shape, "n")
    n, grid, wavelength, n_b = check_index(n, wavelength=wavelength, sampling=sampling, n_background=n_background)
    potential = scattering_potential(n, wavelength=wavelength, n_background=n_b)
    scattered = born_scattered_field(potential, wavelength=wavelength, sampling=grid.sampling, n_background=n_b,
                                     tilt=tilt)
    xp = backend.get_array_module(n)
    return plane_wave(grid, wavelength=wavelength, n_background=n_b, tilt=tilt, xp=xp) + scattered


def rytov(n, *, wavelength, sampling, n_background=1.0, tilt=0.0):
    """Total field in the first Rytov approximation, ``u_in exp(u_B / u_in)``, carrier left out.

    Parameters and returns as :func:`born`.
    """
    n = checks.check_array(n, "n", finite=False)  # moved once; the copies come after the estimate
    if n.ndim in (2, 3):
        _check_born_memory(n.shape, "n")
    n, grid, wavelength, n_b = check_index(n, wavelength=wavelength, sampling=sampling, n_background=n_background)
    potential = scattering_potential(n, wavelength=wavelength, n_background=n_b)
    scattered = born_scattered_field(potential, wavelength=wavelength, sampling=grid.sampling, n_background=n_b,
                                     tilt=tilt)
    xp = backend.get_array_module(n)
    incident = plane_wave(grid, wavelength=wavelength, n_background=n_b, tilt=tilt, xp=xp)
    return incident * xp.exp(scattered / incident)


# ---------------------------------------------------------------------------- beam propagation

def _bpm_setup(n, wavelength, sampling, n_background, wide_angle, field, name):
    n, grid, wavelength, n_b = check_index(n, wavelength=wavelength, sampling=sampling,
                                           n_background=n_background, nonparaxial=wide_angle)
    xp = backend.get_array_module(n)
    transverse = grids.Grid(grid.gpts[1:], grid.sampling[1:])
    if field is None:
        field = xp.ones(transverse.gpts, xp.complex128)
    field = checks.check_array(field, name, finite=False).astype(xp.complex128)
    if field.shape[field.ndim - len(transverse.gpts):] != transverse.gpts or not bool(xp.all(xp.isfinite(field))):
        raise ValueError(f"{name} must be a finite array of shape (..., {', '.join(map(str, transverse.gpts))}), "
                         f"got {field.shape}")
    dz = grid.sampling[0]
    kernel = propagation.angular_spectrum_propagator if wide_angle else propagation.fresnel_propagator
    transfer = kernel(transverse, dz, wavelength / n_b, xp=xp)
    half_step = kernel(transverse, dz / 2, wavelength / n_b, xp=xp)
    half_screen = xp.exp(0.5j * (2 * math.pi / wavelength) * (n - n_b) * dz)  # exp(i k0 (n - n_b) dz / 2)
    return field, half_screen, transfer, half_step


def _apply_transfer(field, transfer):
    """``F^-1[transfer · F[field]]`` over the transverse (trailing) axes of ``transfer``."""
    axes = tuple(range(-transfer.ndim, 0))
    return backend.ifftn(backend.fftn(field, axes=axes) * transfer, axes=axes)


def bpm(n, *, wavelength, sampling, n_background=1.0, incident=None, wide_angle=False, all_planes=True):
    """Beam propagation method: the field through an index map, slice by slice along z.

    Each slab ``j`` (thickness ``dz``, centred on ``z_j = j dz``) is a phase
    screen ``t_j = exp(i k0 (n_j - n_b) dz)`` split in two halves around its
    centre, and free propagation over ``dz`` in the background medium joins
    the slabs (symmetric split-step, second order in ``dz``; Feit & Fleck 1978):

    ``u(z_{j+1}) = t_{j+1}^{1/2} P(dz) t_j^{1/2} u(z_j)``.

    Parameters
    ----------
    n : (nz, nx) or (nz, nx, ny) array_like, complex
        Index map (``Im n >= 0``); axis 0 is z.
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or tuple
        Grid spacing (dz, dx[, dy]) [µm]; ``dz`` is the slice thickness.
    n_background : float
        Index of the medium.
    incident : (..., nx) or (..., nx, ny) array_like, complex, optional
        Envelope at the entrance face ``z = -dz/2`` (default a plane wave, 1).
        Leading axes are a batch of incident fields (e.g. one per
        illumination angle), propagated together through the same sample.
    wide_angle : bool
        Angular-spectrum propagator (exact in a homogeneous medium; needs
        ``sampling <= λ0/(2 max Re n)``) instead of the paraxial Fresnel one.
    all_planes : bool
        Return the field at every slab centre (True) or only at the exit face
        ``z = (nz - 1/2) dz`` (False).

    Returns
    -------
    (..., nz, nx[, ny]) or (..., nx[, ny]) ndarray, complex128
        Envelope(s), carrier left out, on the selected device; the batch
        axes of ``incident`` come first.
    """
    field, half_screen, transfer, half_step = _bpm_setup(n, wavelength, sampling, n_background, wide_angle,
                                                         incident, "incident")
    xp = backend.get_array_module(field)
    nz = half_screen.shape[0]
    batch = field.shape[:field.ndim - transfer.ndim]
    planes = xp.empty(batch + half_screen.shape, xp.complex128) if all_planes else None
    field = _apply_transfer(field, half_step)
    for j in range(nz):  # the slices are sequential: each needs the field the previous one made
        field = field * half_screen[j]
        if all_planes:
            planes[(Ellipsis, j) + (slice(None),) * transfer.ndim] = field
        field = field * half_screen[j]
        field = _apply_transfer(field, transfer if j < nz - 1 else half_step)
    return planes if all_planes else field


def bpm_adjoint(exit_field, n, *, wavelength, sampling, n_background=1.0, wide_angle=False):
    """Adjoint of ``bpm(..., all_planes=False)`` as a linear map of the incident field.

    Runs the slices backwards with conjugated screens and propagators;
    ``exit_field`` may carry leading batch axes as ``incident`` does. Returns
    on the selected device.
    """
    field, half_screen, transfer, half_step = _bpm_setup(n, wavelength, sampling, n_background, wide_angle,
                                                         exit_field, "exit_field")
    xp = backend.get_array_module(field)
    for j in reversed(range(half_screen.shape[0])):
        field = _apply_transfer(field, xp.conj(transfer if j < half_screen.shape[0] - 1 else half_step))
        field = field * xp.conj(half_screen[j]) ** 2
    return _apply_transfer(field, xp.conj(half_step))
