"""The contrast transfer function of a cryo-EM image, with its B-factor envelope.

``H(k) = CTF(k; defocus) exp(-B |k|² / 4)``: the lens model of
:func:`mbook.electron.hrtem.contrast_transfer_function` (defocus positive for
underfocus, spherical aberration ``Cs``, amplitude contrast) times the
envelope of a B-factor (B in Å², k in 1/Å) that stands for the specimen's
motion, radiation damage and the microscope's partial coherence
(Rosenthal & Henderson 2003). :func:`ctf` tabulates it on an image grid,
one per defocus; :func:`ctf_profile` along one axis, finely, for plots.
Images are formed with it in :mod:`mbook.cryoem.image_formation`.

Examples
--------
>>> from mbook.core import backend, grids
>>> from mbook.cryoem import ctf
>>> h = ctf.ctf(grids.make_grid(gpts=(64, 64), sampling=1.5), defocus=1.5e4, B_factor=50.0)
>>> h.shape, round(float(backend.asnumpy(h)[0, 0]), 3)  # k = 0: only the amplitude contrast
((64, 64), -0.1)
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks, grids
from mbook.electron import hrtem, physics, waves

#: Default microscope: 300 kV, Cs = 2.7 mm, 10 % amplitude contrast.
MICROSCOPE = {"energy": 300e3, "Cs": 2.7e7, "amplitude_contrast": 0.1}


def check_defocus(defocus) -> np.ndarray:
    """Defocus values [Å] on the host (they key the CTF table): one small copy, then checked.

    Raises
    ------
    ValueError
        Naming ``defocus``, when a value is not a finite number or none is given.
    """
    if isinstance(defocus, (str, bytes)):
        raise ValueError(f"defocus must be finite numbers [Å], got {defocus!r}")
    try:
        values = np.asarray(backend.asnumpy(defocus) if backend.is_device_array(defocus) else defocus, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"defocus must be finite numbers [Å], got {defocus!r:.60}") from None
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"defocus must be finite [Å], got {defocus!r}")
    return values


def ctf_table(grid, defocus, B_factor, microscope, xp):
    """CTFs times the B-factor envelope for host defoci (b,) -> (b, nx, ny) on ``xp`` (a kernel: no checks).

    Images of one micrograph share a defocus: the lens model of
    :func:`mbook.electron.hrtem.contrast_transfer_function` is evaluated once
    per distinct value, all of them in one pass (the defoci an array axis:
    a few kernels on a GPU, not twenty per defocus), and gathered. Arguments
    as :func:`check_defocus`, :func:`check_b_factor` and
    :func:`check_microscope` return them.
    """
    envelope = xp.exp(-B_factor / 4 * grids.frequency_squared(grid, xp=xp))
    unique, inverse = np.unique(defocus.ravel(), return_inverse=True)
    # C10 = -defocus as an axis over the distinct values (placed where check_aberrations puts it)
    coefficients = waves.check_aberrations(defocus=1.0, Cs=microscope["Cs"])
    coefficients["C10"] = xp.asarray(-unique)[:, None, None]
    kx, ky = waves.frequency_axes(grid, xp)
    table = hrtem.contrast_transfer_kernel(kx, ky, physics.wavelength(microscope["energy"]), coefficients,
                                           microscope["amplitude_contrast"], None, 0.0, 0.0, xp) * envelope
    return table[xp.asarray(inverse.ravel())]


def check_microscope(microscope) -> dict:
    """The microscope keywords over :data:`MICROSCOPE`'s defaults; a TypeError names any unknown one."""
    unknown = set(microscope) - set(MICROSCOPE)
    if unknown:
        raise TypeError(f"unknown microscope parameters {sorted(unknown)}; valid: {sorted(MICROSCOPE)}")
    return {**MICROSCOPE, **microscope}


def check_b_factor(B_factor) -> float:
    """A B-factor >= 0 [Å²], or a ValueError naming ``B_factor``."""
    return checks.check_positive_number(B_factor, "B_factor", allow_zero=True)


def ctf(grid, *, defocus, B_factor=0.0, **microscope):
    """CTF of :func:`mbook.electron.hrtem.contrast_transfer_function` times ``exp(-B k² / 4)``.

    Parameters
    ----------
    grid : Grid
        2D image grid [Å].
    defocus : float or (b,) array_like
        Defocus, positive for underfocus [Å]; one CTF per value.
    B_factor : float
        B-factor of the envelope, >= 0 [Å²].
    **microscope
        ``energy`` [eV], ``Cs`` [Å], ``amplitude_contrast`` in [0, 1)
        (defaults :data:`MICROSCOPE`).

    Returns
    -------
    (nx, ny) or (b, nx, ny) ndarray, float64
        In FFT order, on the selected device.
    """
    B_factor = check_b_factor(B_factor)
    values = check_defocus(defocus)
    out = ctf_table(grid, values, B_factor, check_microscope(microscope), backend.xp)
    return out[0] if values.ndim == 0 else out


def ctf_profile(k_max, *, defocus, B_factor=0.0, num_samples=1000, **microscope):
    """The CTF along ``k_x`` (``k_y = 0``), finely sampled: for plotting its oscillations.

    The same lens model as :func:`ctf`, on a one-row grid whose frequency
    step is ``k_max / num_samples``.

    Parameters
    ----------
    k_max : float
        Largest frequency [1/Å].
    defocus : float or (b,) array_like
        [Å], positive for underfocus.
    B_factor : float
        [Å²].
    num_samples : int
        Frequencies in ``[0, k_max)``.
    **microscope
        As for :func:`ctf`.

    Returns
    -------
    k : (num_samples,) ndarray
        [1/Å], on the selected device.
    values : (num_samples,) or (b, num_samples) ndarray
        On the selected device.
    """
    k_max = checks.check_positive_number(k_max, "k_max")
    num_samples = checks.check_count(num_samples, "num_samples", minimum=2)
    B_factor = check_b_factor(B_factor)
    values = check_defocus(defocus)
    # gpts (2 N, 1) at sampling 1 / (2 k_max): k_x = j k_max / N for j < N (FFT order), k_y = 0
    grid = grids.make_grid(gpts=(2 * num_samples, 1), sampling=1 / (2 * k_max))
    xp = backend.xp
    table = ctf_table(grid, np.atleast_1d(values), B_factor, check_microscope(microscope), xp)[:, :num_samples, 0]
    k = grids.spatial_frequencies(grid, xp=xp)[0][:num_samples]
    return k, (table[0] if values.ndim == 0 else table)
