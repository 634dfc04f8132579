"""Cryo-EM image formation: CTF with a B-factor, shifts, contrast, and white noise.

The image of particle i (weak-phase model, e.g. Scheres 2012) is

``I_i = c_i F⁻¹[ H_i(k) exp(-2πi k·s_i) P̂_i(k) ] + n_i``,
``H_i(k) = CTF(k; defocus_i) exp(-B |k|² / 4)``,

with ``P_i`` the clean projection (:mod:`mbook.cryoem.particles`), ``s_i`` an in-plane
shift [Å], the CTF of :func:`mbook.electron.hrtem.contrast_transfer_function` (defocus
positive for underfocus) times a B-factor envelope (B in Å², k in 1/Å),
``c_i`` a per-image contrast and ``n_i`` white Gaussian noise of standard
deviation σ.

:func:`form_images` applies shifts, CTF and contrast (linear in the
projections; :func:`form_images_adjoint` is its adjoint) and :func:`add_noise`
adds ``n_i``: image i takes its own stretch of a counter-based (Philox) stream
keyed by the seed (:mod:`mbook.cryoem.white_noise`), so a stack's noise is the
same whatever the batching. :func:`form_images_kernel` and
:func:`add_noise_kernel` do the same on inputs checked already, for the streams
of :mod:`mbook.cryoem.micrographs`.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.cryoem import image_formation
>>> zeros = np.zeros((3, 16, 16))
>>> stack = backend.asnumpy(image_formation.add_noise(zeros, 1.0, seed=5))
>>> third = backend.asnumpy(image_formation.add_noise(zeros[:1], 1.0, seed=5, first_index=2))
>>> bool(np.array_equal(stack[2], third[0]))  # image 2's noise, whichever call makes it
True
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, grids
from mbook.cryoem import ctf, particles, white_noise


def _transfer(grid, defocus, shifts, B_factor, microscope, xp):
    """H(k) exp(-2πi k·s) per image: host defoci (b,), device shifts (b, 2) or None -> (b, nx, ny)."""
    transfer = ctf.ctf_table(grid, defocus, B_factor, microscope, xp)
    if shifts is not None:
        kx, ky = grids.spatial_frequencies(grid, xp=xp)
        transfer = transfer * xp.exp(-2j * math.pi * (kx[None, :, None] * shifts[:, 0, None, None]
                                                        + ky[None, None, :] * shifts[:, 1, None, None]))
    return transfer


def form_images_kernel(projections, grid, defocus, shifts, contrast, B_factor, microscope, adjoint=False):
    """:func:`form_images` (``adjoint=True``: :func:`form_images_adjoint`) on inputs checked already: no checks.

    For the streams of :mod:`mbook.cryoem.micrographs`, which check a stack's parameters once.
    ``projections`` (b, nx, ny) on the device; ``defocus`` (b,) on the host (the CTF table is keyed
    on it); ``shifts`` (b, 2) and ``contrast`` (b,) on the device, or None; ``B_factor`` and
    ``microscope`` as :func:`mbook.cryoem.ctf.check_b_factor` and
    :func:`~mbook.cryoem.ctf.check_microscope` return them. Result as :func:`form_images`.
    """
    xp = backend.get_array_module(projections)
    transfer = _transfer(grid, defocus, shifts, B_factor, microscope, xp)
    images = backend.ifft2(backend.fft2(projections) * (xp.conj(transfer) if adjoint else transfer))
    images = images if xp.iscomplexobj(projections) else images.real
    return images if contrast is None else images * contrast[:, None, None]


def _check_formation(array, name, grid, defocus, shifts, contrast, B_factor, microscope):
    grid = particles.check_grid(grid, 2)
    array = checks.check_array(array, name, ndim=3)
    if tuple(array.shape[1:]) != tuple(grid.gpts):
        raise ValueError(f"{name} must be (b, {grid.gpts[0]}, {grid.gpts[1]}) on the grid, got shape {array.shape}")
    b = array.shape[0]
    defocus = ctf.check_defocus(defocus)
    if defocus.shape not in ((), (1,), (b,)):
        raise ValueError(f"defocus must be one value or one per image ({b}), got shape {defocus.shape}")
    defocus = np.broadcast_to(defocus, (b,))
    if shifts is not None:
        shifts = checks.check_array(shifts, "shifts", real=True).astype(float)
        if shifts.shape != (b, 2):
            raise ValueError(f"shifts must be (b, 2) = ({b}, 2) [Å], got shape {shifts.shape}")
    if contrast is not None:
        contrast = checks.check_array(contrast, "contrast", real=True).astype(float)
        if contrast.shape != (b,):
            raise ValueError(f"contrast must hold one value per image ({b}), got shape {contrast.shape}")
    return array, defocus, shifts, contrast, ctf.check_b_factor(B_factor), ctf.check_microscope(microscope)


def form_images(projections, grid, *, defocus, shifts=None, contrast=None, B_factor=0.0, **microscope):
    """Apply shifts, CTF and contrast to clean projections (no noise).

    ``c F⁻¹[H(k) exp(-2πi k·s) P̂(k)]`` with the FFT of :mod:`mbook.core.backend`
    (periodic images). Linear in the projections; :func:`form_images_adjoint`
    is its adjoint.

    Parameters
    ----------
    projections : (b, nx, ny) array_like
        Real (or complex) projections.
    grid : Grid
        Image grid [Å].
    defocus : (b,) array_like
        [Å].
    shifts : (b, 2) array_like, optional
        [Å].
    contrast : (b,) array_like, optional
    B_factor : float
        [Å²].
    **microscope
        ``energy``, ``Cs``, ``amplitude_contrast`` for :func:`mbook.cryoem.ctf.ctf`.

    Returns
    -------
    (b, nx, ny) ndarray
        Real for real projections; on the selected device.
    """
    args = _check_formation(projections, "projections", grid, defocus, shifts, contrast, B_factor, microscope)
    return form_images_kernel(*args[:1], grid, *args[1:])


def form_images_adjoint(images, grid, *, defocus, shifts=None, contrast=None, B_factor=0.0, **microscope):
    """Adjoint of :func:`form_images`: ``c F⁻¹[conj(H e^{-2πik·s}) Î]`` (same parameters)."""
    args = _check_formation(images, "images", grid, defocus, shifts, contrast, B_factor, microscope)
    return form_images_kernel(*args[:1], grid, *args[1:], adjoint=True)


def add_noise(images, sigma, *, seed, first_index=0):
    """Add white Gaussian noise of standard deviation ``sigma``, the same for any batching.

    Image ``first_index + j`` of a stack always gets the same noise
    (:func:`mbook.cryoem.white_noise.standard_normal`: its own stretch of a
    counter-based stream keyed by ``seed``), drawn on the host in one call
    for the whole batch and moved to the device once.

    Parameters
    ----------
    images : (b, nx, ny) array_like
    sigma : float
        Noise standard deviation, >= 0 [image units].
    seed : int
    first_index : int
        Index of the first image in the whole stack (>= 0).

    Returns
    -------
    (b, nx, ny) ndarray
        On the selected device.
    """
    sigma = checks.check_positive_number(sigma, "sigma", allow_zero=True)
    images = checks.check_array(images, "images", ndim=3)
    return add_noise_kernel(images, sigma, seed, first_index)


def add_noise_kernel(images, sigma, seed, first_index):
    """:func:`add_noise` on inputs checked already: ``images`` (b, nx, ny) on the device, ``sigma`` >= 0.

    For the streams of :mod:`mbook.cryoem.micrographs`; ``seed`` and ``first_index`` as :func:`add_noise`
    (:func:`mbook.cryoem.white_noise.standard_normal` takes them).
    """
    if sigma == 0:
        return images
    return images + sigma * white_noise.standard_normal(images.shape[0], images.shape[1:], seed=seed,
                                                        first_index=first_index)
