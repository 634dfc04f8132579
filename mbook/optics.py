"""Scalar wave optics: free-space propagation and Gaussian beams.

Lengths may be in any one unit (µm for light, Å for electrons), as long as
``wavelength`` and ``sampling`` share it. Fields are complex arrays indexed
``[..., x, y]`` on a :class:`mbook.grids.Grid`; leading axes are a batch.

Sign convention: a plane wave travels as ``exp(+2πi (z/λ) - iωt)``. The
carrier phase ``exp(2πi z/λ)``, common to every plane-wave component, is left
out of every propagator and beam in this module.

Examples
--------
>>> import numpy as np
>>> from mbook import grids, optics
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.5)
>>> beam = optics.gaussian_beam(grid, waist=4.0, wavelength=0.5)
>>> out = optics.propagate(beam, 100.0, wavelength=0.5, sampling=0.5)
>>> bool(np.isclose(np.sum(abs(out) ** 2), np.sum(abs(beam) ** 2)))
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mbook import backend, grids


def check_wavelength(wavelength) -> float:
    """Validate a wavelength: finite and > 0 [length]."""
    return grids.check_positive(wavelength, "wavelength", 1)[0]


def _check_distance(distance) -> float:
    if isinstance(distance, bool) or not isinstance(distance, numbers.Real) or not math.isfinite(distance):
        raise ValueError(f"distance must be a finite real number [length], got {distance!r}")
    return float(distance)


def _check_field(field, name="field"):
    xp = backend.get_array_module(field)
    field = xp.asarray(field)
    if field.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., nx, ny), got shape {field.shape}")
    if not bool(xp.isfinite(field).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not xp.iscomplexobj(field):
        field = field.astype(xp.complex128 if field.dtype == xp.float64 else xp.complex64)
    return field


def fresnel_propagator(grid: grids.Grid, distance: float, wavelength: float, *, xp=None):
    """Paraxial (Fresnel) propagator in reciprocal space.

    ``H(k) = exp(-iπ λ z |k|^2)``: the small-angle expansion of the angular
    spectrum below, exact for the paraxial wave equation (Goodman 2005, eq. 4-21).

    Parameters
    ----------
    grid : Grid
        Transverse grid (2D).
    distance : float
        Propagation distance z [length]; negative propagates backwards.
    wavelength : float
        Wavelength in the medium [length].

    Returns
    -------
    (nx, ny) ndarray, complex128
        In FFT order.
    """
    xp = xp or backend.xp
    return xp.exp(-1j * math.pi * wavelength * distance * grids.frequency_squared(grid, xp=xp))


def angular_spectrum_propagator(grid: grids.Grid, distance: float, wavelength: float, *, xp=None):
    """Non-paraxial angular-spectrum propagator in reciprocal space.

    ``H(k) = exp(2πi z (sqrt(1/λ^2 - |k|^2) - 1/λ))``, the exact solution of
    the Helmholtz equation in a homogeneous medium (Goodman 2005, eq. 3-74),
    with the carrier removed. Evanescent components (``|k| > 1/λ``) decay as
    ``exp(-2π |z| sqrt(|k|^2 - 1/λ^2))`` in either direction.

    Parameters and returns as :func:`fresnel_propagator`.
    """
    xp = xp or backend.xp
    k2 = grids.frequency_squared(grid, xp=xp)
    kz2 = 1.0 / wavelength**2 - k2
    propagating = kz2 >= 0
    kz = xp.sqrt(xp.where(propagating, kz2, 0.0))
    decay = xp.sqrt(xp.where(propagating, 0.0, -kz2))
    phase = 2 * math.pi * distance * (kz - 1.0 / wavelength)
    return xp.exp(1j * phase - 2 * math.pi * abs(distance) * decay)


def propagate(field, distance, *, wavelength, sampling, paraxial=False):
    """Propagate a scalar field through a homogeneous medium.

    Parameters
    ----------
    field : (..., nx, ny) array_like, complex
        Field in the input plane; NumPy or CuPy (the result stays on the same
        device and in the same precision).
    distance : float
        Propagation distance z [length]; negative propagates backwards.
    wavelength : float
        Wavelength in the medium, ``λ0 / n`` [length].
    sampling : float or (float, float)
        Grid spacing [length].
    paraxial : bool
        True: Fresnel propagator; False (default): angular spectrum.

    Returns
    -------
    (..., nx, ny) ndarray, complex
        The field at distance z.

    Raises
    ------
    ValueError
        Non-finite field or distance, non-positive wavelength or sampling.
    """
    field = _check_field(field)
    distance = _check_distance(distance)
    wavelength = check_wavelength(wavelength)
    grid = grids.make_grid(gpts=field.shape[-2:], sampling=sampling)
    xp = backend.get_array_module(field)
    kernel = fresnel_propagator if paraxial else angular_spectrum_propagator
    transfer = kernel(grid, distance, wavelength, xp=xp).astype(field.dtype)
    return backend.ifft2(backend.fft2(field) * transfer)


def rayleigh_range(waist, wavelength) -> float:
    """Rayleigh range ``z_R = π w0^2 / λ`` of a Gaussian beam [length] (Siegman 1986, ch. 17)."""
    waist = grids.check_positive(waist, "waist", 1)[0]
    return math.pi * waist**2 / check_wavelength(wavelength)


def gaussian_beam_radius(distance, *, waist, wavelength, paraxial=True):
    """Second-moment (1/e² intensity) radius of a Gaussian beam at distance z.

    Paraxial: ``w(z) = w0 sqrt(1 + (z/z_R)^2)`` (Siegman 1986, eq. 17.6).

    Non-paraxial (``paraxial=False``): under the exact angular-spectrum
    propagator a plane-wave component of transverse frequency k walks off at
    slope ``λk / sqrt(1 - λ²k²)`` rather than ``λk``, which widens the far
    field: ``w(z)^2 = w0^2 + (w_par(z)^2 - w0^2) (1 + θ0^2)``, with the
    divergence ``θ0 = λ / (π w0)``. The factor ``1 + θ0^2`` is the
    leading-order term of ``<k_x^2 / (1 - λ²k²)> / <k_x^2>`` over the beam's
    angular spectrum, so the result is accurate to O(θ0^4).

    Parameters
    ----------
    distance : float or ndarray
        Distance from the waist z [length].
    waist : float
        Waist radius w0 [length].
    wavelength : float
        Wavelength in the medium [length].
    paraxial : bool
        Paraxial formula (True) or its leading non-paraxial correction (False).

    Returns
    -------
    float or ndarray
        w(z) [length], same shape as ``distance``.
    """
    z_r = rayleigh_range(waist, wavelength)
    spread2 = waist**2 * (np.asarray(distance, dtype=float) / z_r) ** 2
    if not paraxial:
        spread2 = spread2 * (1.0 + (wavelength / (math.pi * waist)) ** 2)
    return np.sqrt(waist**2 + spread2)


def gaussian_beam(grid: grids.Grid, *, waist, wavelength, distance=0.0, center=None, xp=None):
    """Complex field of a paraxial TEM00 Gaussian beam, unit amplitude at the waist centre.

    ``E = (w0/w) exp(-r^2/w^2) exp(iπ r^2/(λ R)) exp(-i atan(z/z_R))``, with
    ``R(z) = z (1 + (z_R/z)^2)`` and the Gouy phase ``atan(z/z_R)`` (Siegman
    1986, eq. 17.5). Carrier ``exp(2πi z/λ)`` left out.

    Parameters
    ----------
    grid : Grid
        Transverse 2D grid.
    waist : float
        Waist radius w0 at the 1/e² intensity level [length].
    wavelength : float
        Wavelength in the medium [length].
    distance : float
        Distance z from the waist [length].
    center : (float, float), optional
        Beam axis position [length]; default the grid centre (index n//2).

    Returns
    -------
    (nx, ny) ndarray, complex128
    """
    xp = xp or backend.xp
    wavelength = check_wavelength(wavelength)
    distance = _check_distance(distance)
    z_r = rayleigh_range(waist, wavelength)
    radius = float(gaussian_beam_radius(distance, waist=waist, wavelength=wavelength))
    x, y = grids.coordinates(grid, xp=xp)
    cx, cy = center if center is not None else (x[grid.gpts[0] // 2], y[grid.gpts[1] // 2])
    r2 = (x[:, None] - cx) ** 2 + (y[None, :] - cy) ** 2
    inverse_curvature = distance / (distance**2 + z_r**2)  # 1/R(z), finite at the waist
    phase = math.pi * r2 * inverse_curvature / wavelength - math.atan2(distance, z_r)
    return (waist / radius) * xp.exp(-r2 / radius**2 + 1j * phase)


def beam_radius(intensity, sampling, *, edge_tolerance=1e-6):
    """Second-moment (ISO 11146, "D4σ") beam radius along each axis [length].

    For a Gaussian ``I ∝ exp(-2 r^2/w^2)`` the result is exactly ``w``:
    ``w_x = 2 sqrt(<(x - <x>)^2>)``.

    Parameters
    ----------
    intensity : (nx, ny) array_like, real, >= 0
        Intensity on the grid.
    sampling : float or (float, float)
        Grid spacing [length].
    edge_tolerance : float
        Largest fraction of the power allowed in the outermost 5 % of the grid
        on each side; moments of a beam that wraps around the periodic cell
        are meaningless.

    Returns
    -------
    (2,) ndarray, float64
        ``(w_x, w_y)`` [length].

    Raises
    ------
    ValueError
        Negative or non-finite intensity, zero power, or a beam that reaches
        the edge of the grid.
    """
    intensity = backend.asnumpy(intensity).astype(np.float64)
    if intensity.ndim != 2 or not np.isfinite(intensity).all() or (intensity < 0).any():
        raise ValueError("intensity must be a finite, non-negative (nx, ny) array")
    total = intensity.sum()
    if total <= 0:
        raise ValueError("intensity has zero total power; no radius is defined")
    grid = grids.make_grid(gpts=intensity.shape, sampling=sampling)
    border = np.zeros(intensity.shape, dtype=bool)
    for axis, n in enumerate(intensity.shape):
        m = max(1, n // 20)
        index = [slice(None)] * 2
        index[axis] = np.r_[0:m, n - m : n]
        border[tuple(index)] = True
    if intensity[border].sum() > edge_tolerance * total:
        raise ValueError(
            f"{intensity[border].sum() / total:.2e} of the power lies in the outer 5 % of the grid "
            f"(edge_tolerance={edge_tolerance}); enlarge the extent so the beam does not wrap around"
        )
    radii = []
    for axis, x in enumerate(grids.coordinates(grid, centered=True, xp=np)):
        profile = intensity.sum(axis=1 - axis)
        mean = np.sum(profile * x) / total
        radii.append(2.0 * math.sqrt(np.sum(profile * (x - mean) ** 2) / total))
    return np.array(radii)
