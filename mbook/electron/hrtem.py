"""Phase-contrast (HRTEM) imaging: the weak-object CTF, bright-field images, the CTF's zeros.

The objective lens of :mod:`mbook.electron.waves` (aberrations χ(k) in
Krivanek's notation, aperture, partial-coherence envelopes) transfers an exit
wave to the image. For a weak object the image contrast is linear in the
projected potential, with the contrast transfer function
``CTF(k) = E(k) [sqrt(1 - A^2) sin χ(k) - A cos χ(k)]``
(:func:`contrast_transfer_function`; Kirkland 2010, eq. 3.37); for any exit
wave the image is ``|F^-1[F[ψ] · H]|^2`` with the lens's wave transfer
function ``H`` (:func:`image_intensity`); the Thon rings sit between the
zeros of ``sin χ`` (:func:`ctf_zeros`).

Lengths in Å, spatial frequencies in 1/Å (FFT order, :mod:`mbook.core.grids`),
angles in mrad, energies in eV. Arrays come back on the selected device (or
made with ``xp`` when one is given).

Examples
--------
>>> from mbook.core import grids
>>> from mbook.electron import hrtem
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> ctf = hrtem.contrast_transfer_function(grid, energy=200e3, defocus=500.0)
>>> ctf.shape, float(ctf[0, 0])  # no contrast at k = 0 without amplitude contrast
((64, 64), 0.0)
>>> zeros = hrtem.ctf_zeros(energy=200e3, defocus=600.0, Cs=1.2e7, k_max=1.0)
>>> round(float(zeros[0]), 4)
0.3987
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks
from mbook.electron import physics, waves


def contrast_transfer_function(grid, *, energy, defocus=0.0, Cs=0.0, aberrations=None,
                               amplitude_contrast=0.0, focal_spread=0.0, angular_spread=0.0,
                               semiangle_cutoff=None, xp=None):
    """Linear (weak-object) contrast transfer function on a grid, in FFT order.

    For an object ``exp(i σ v - a)`` with small σv and absorption ``a`` in the
    fixed ratio ``a = A σ v / sqrt(1 - A^2)``, the image intensity is
    ``1 + 2 σ v ⊛ F^-1[CTF] / sqrt(1 - A^2)`` (to first order in σv) with

    ``CTF(k) = E_t E_s [sqrt(1 - A^2) sin χ(k) - A cos χ(k)]``

    (A = ``amplitude_contrast``; Kirkland 2010, eq. 3.37; for cryo-EM the
    usual 0.07-0.1). With positive (under-)focus, sin χ < 0 at low k.

    Parameters
    ----------
    grid : Grid
        2D grid [Å].
    energy : float
        [eV].
    defocus, Cs, aberrations
        See :func:`mbook.electron.waves.aberration_phase` [Å].
    amplitude_contrast : float
        Fraction A in [0, 1).
    focal_spread : float
        rms focal spread [Å] (0: none).
    angular_spread : float
        Illumination angular spread [mrad] (0: none).
    semiangle_cutoff : float, optional
        Objective aperture [mrad].
    xp : module, optional
        Array module to make it with; default the selected device's.

    Returns
    -------
    (nx, ny) ndarray, float64
        On the selected device (or ``xp``'s).
    """
    checks.check_number(amplitude_contrast, "amplitude_contrast", lower=0, upper=1, upper_inclusive=False)
    focal_spread = checks.check_positive_number(focal_spread, "focal_spread", allow_zero=True)
    angular_spread = checks.check_positive_number(angular_spread, "angular_spread", allow_zero=True)
    wavelength = physics.wavelength(energy)
    coefficients = waves.check_aberrations(aberrations, defocus=defocus, Cs=Cs)
    xp = xp or backend.xp
    kx, ky = waves.frequency_axes(grid, xp)
    return contrast_transfer_kernel(kx, ky, wavelength, coefficients, amplitude_contrast, semiangle_cutoff,
                                    focal_spread, angular_spread, xp)


def contrast_transfer_kernel(kx, ky, wavelength, coefficients, amplitude_contrast, semiangle_cutoff, focal_spread,
                             angular_spread, xp):
    """The CTF of :func:`contrast_transfer_function` from checked inputs (a kernel: no checks).

    ``kx, ky`` [1/Å] of :func:`mbook.electron.waves.frequency_axes`, ``wavelength`` [Å],
    ``coefficients`` of :func:`mbook.electron.waves.check_aberrations`. A coefficient may be an array
    broadcasting against the grid, e.g. ``C10`` of shape ``(b, 1, 1)``: the CTFs of ``b`` defoci
    ``(b, nx, ny)`` in one pass (the same arithmetic per value as one at a time).
    """
    chi = waves.aberration_phase_kernel(kx, ky, wavelength, coefficients, xp)
    ctf = math.sqrt(1 - amplitude_contrast**2) * xp.sin(chi) - amplitude_contrast * xp.cos(chi)
    return ctf * waves.envelopes_kernel(kx, ky, wavelength, coefficients, semiangle_cutoff, focal_spread,
                                        angular_spread, xp)


def image_intensity(exit_wave, grid, *, energy, defocus=0.0, Cs=0.0, aberrations=None, semiangle_cutoff=None,
                    focal_spread=0.0, angular_spread=0.0):
    """Bright-field (HRTEM) image of an exit wave: ``|F^-1[F[ψ] · H]|^2``.

    ``H`` is :func:`mbook.electron.waves.lens_transfer`; partial coherence enters through its
    envelopes (the quasi-coherent approximation, accurate for weak
    scattering; Kirkland 2010, sec. 3.3.2).

    Parameters
    ----------
    exit_wave : (..., nx, ny) array_like, complex
        Exit wave(s) on ``grid``.
    grid : Grid
        [Å].
    energy, defocus, Cs, aberrations, semiangle_cutoff, focal_spread, angular_spread
        See :func:`mbook.electron.waves.lens_transfer` [eV, Å, mrad].

    Returns
    -------
    (..., nx, ny) ndarray, float32
        Intensity, 1 for vacuum under unit plane-wave illumination, on the
        selected device.
    """
    checks.check_grid(grid)
    exit_wave = checks.check_field(exit_wave, "exit_wave")
    xp = backend.get_array_module(exit_wave)
    if exit_wave.shape[-2:] != tuple(grid.gpts):
        raise ValueError(f"exit_wave shape {exit_wave.shape[-2:]} does not match grid gpts {grid.gpts}")
    transfer = waves.lens_transfer(grid, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus,
                                   Cs=Cs, aberrations=aberrations, focal_spread=focal_spread,
                                   angular_spread=angular_spread, xp=xp).astype(xp.complex64)
    return (xp.abs(backend.ifft2(backend.fft2(exit_wave.astype(xp.complex64)) * transfer)) ** 2).astype(xp.float32)


def ctf_zeros(*, energy, defocus=0.0, Cs=0.0, k_max, num_samples=20000):
    """Spatial frequencies where the round-lens CTF ``sin χ(k)`` vanishes, up to ``k_max``.

    Sign changes of ``sin χ`` on a fine grid of ``|k|``, refined by Brent's
    method (only round aberrations: defocus and Cs). A host-only step
    (rule 5 of :mod:`mbook`): :func:`scipy.optimize.brentq` runs on the host,
    on a few thousand scalars; the zeros are then moved to the selected device.

    Parameters
    ----------
    energy : float
        [eV].
    defocus, Cs : float
        [Å].
    k_max : float
        Largest frequency searched [1/Å].

    Returns
    -------
    ndarray, float64
        Zeros ``k_n`` [1/Å], increasing, excluding ``k = 0``, on the selected device.
    """
    from scipy.optimize import brentq

    k_max = checks.check_positive(k_max, "k_max", 1)[0]
    num_samples = checks.check_count(num_samples, "num_samples", minimum=2)
    wavelength = physics.wavelength(energy)
    coefficients = waves.check_aberrations(defocus=defocus, Cs=Cs)

    def sin_chi(k):  # on the host: brentq calls it with one float at a time
        return np.sin(waves.aberration_phase_kernel(np.asarray(k), np.zeros(()), wavelength, coefficients, np))

    k = np.linspace(k_max / num_samples, k_max, num_samples)
    values = sin_chi(k)
    brackets = np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]
    zeros = [brentq(lambda q: float(sin_chi(q)), k[i], k[i + 1], xtol=1e-12) for i in brackets]
    return backend.asarray(np.array(zeros, dtype=np.float64))
