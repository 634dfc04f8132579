"""Scalar free-space propagation: Fresnel and angular-spectrum propagators.

Lengths may be in any one unit (µm for light, Å for electrons), as long as
``wavelength`` and ``sampling`` share it. Fields are complex arrays indexed
``[..., x, y]`` on a :class:`mbook.core.grids.Grid`; leading axes are a batch.

Sign convention: a plane wave travels as ``exp(+2πi (z/λ) - iωt)``. The
carrier phase ``exp(2πi z/λ)``, common to every plane-wave component, is left
out of every propagator in this module. The electron multislice
(:mod:`mbook.electron.multislice`) and the light microscope
(:mod:`mbook.light.microscope`) both propagate with these kernels.

In a homogeneous medium a coarse grid only represents fewer angles, each of
them exactly, so :func:`propagate` needs no samples-per-wavelength bound (the
full-wave methods of :mod:`mbook.light.scattering` do).

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids, propagation
>>> from mbook.light import microscope
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.5)
>>> beam = microscope.gaussian_beam(grid, waist=4.0, wavelength=0.5)
>>> out = propagation.propagate(beam, 100.0, wavelength=0.5, sampling=0.5)
>>> bool(np.isclose(float((abs(out) ** 2).sum()), float((abs(beam) ** 2).sum())))
True

Results are on the selected device (:mod:`mbook.core.backend`), whatever the
input's: :func:`propagate` moves its field there first; the propagators are
made there (or with the array module ``xp`` given).
"""

from __future__ import annotations

import math

from mbook.core import backend, checks, grids


def check_wavelength(wavelength) -> float:
    """Validate a wavelength: finite and > 0 [length]."""
    return checks.check_positive(wavelength, "wavelength", 1)[0]


def check_distance(distance) -> float:
    """Validate a propagation distance: a finite real number [length], any sign; return it as a float."""
    return checks.check_number(distance, "distance", units="length")


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

    xp : module, optional
        Array module to build it with; default the selected device's.

    Returns
    -------
    (nx, ny) ndarray, complex128
        In FFT order, on the selected device (or made with ``xp``).
    """
    checks.check_grid(grid)
    distance, wavelength = check_distance(distance), check_wavelength(wavelength)
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
    checks.check_grid(grid)
    distance, wavelength = check_distance(distance), check_wavelength(wavelength)
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
        Field in the input plane; NumPy or CuPy: it is moved to the selected
        device, and keeps its precision (complex64 stays complex64).
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
        The field at distance z, on the selected device.

    Raises
    ------
    ValueError
        Non-finite field or distance, non-positive wavelength or sampling.
    """
    field = checks.check_field(field)
    distance = check_distance(distance)
    wavelength = check_wavelength(wavelength)
    grid = grids.make_grid(gpts=field.shape[-2:], sampling=sampling)
    xp = backend.get_array_module(field)
    kernel = fresnel_propagator if paraxial else angular_spectrum_propagator
    transfer = kernel(grid, distance, wavelength, xp=xp).astype(field.dtype)
    return backend.ifft2(backend.fft2(field) * transfer)
