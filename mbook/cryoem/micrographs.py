"""Cryo-EM particle images: CTF with a B-factor, shifts, contrast, noise, streaming.

The image of particle i (weak-phase model, e.g. Scheres 2012) is

``I_i = c_i F⁻¹[ H_i(k) exp(-2πi k·s_i) P̂_i(k) ] + n_i``,
``H_i(k) = CTF(k; defocus_i) exp(-B |k|² / 4)``,

with ``P_i`` the clean projection (:mod:`mbook.cryoem.particles`), ``s_i`` an in-plane
shift [Å], the CTF of :func:`mbook.electron.waves.contrast_transfer_function` (defocus
positive for underfocus) times a B-factor envelope (B in Å², k in 1/Å),
``c_i`` a per-image contrast and ``n_i`` white Gaussian noise of standard
deviation σ. The SNR is the mean over images of the variance of the clean
image ``c_i F⁻¹[...]`` over the box, divided by σ²; σ is fixed from a pilot
of images spread through the stack, so it does not depend on the batching.

Stacks are produced by :func:`stream_images` in batches that fit a memory
budget (:func:`mbook.core.progress.plan_batches`); every image draws its noise
from its own generator ``default_rng([seed, i])``, so the stack is the same
whatever the batch size.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.cryoem import micrographs, particles
>>> atoms = particles.random_structure(40, radii=(10.0, 8.0, 8.0), seed=0)
>>> grid = grids.make_grid(gpts=(32, 32), sampling=2.0)
>>> params = micrographs.draw_parameters(10, seed=1)
>>> batches = micrographs.stream_images(atoms, params, grid, snr=0.1, seed=2)
>>> stack = np.concatenate([b.images for b in batches])
>>> stack.shape
(10, 32, 32)
"""

from __future__ import annotations

import math
import numbers
from typing import Iterator, NamedTuple

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.cryoem import particles, so3
from mbook.electron import waves

#: Images per batch on the CPU: larger batches only add memory traffic.
CPU_BATCH = 256
#: Default microscope: 300 kV, Cs = 2.7 mm, 10 % amplitude contrast.
MICROSCOPE = {"energy": 300e3, "Cs": 2.7e7, "amplitude_contrast": 0.1}


def check_snr(snr) -> float:
    """Validate a signal-to-noise ratio: a number > 0 (``inf`` means no noise).

    Raises
    ------
    ValueError
        Naming ``snr``, the value and the valid range (0, inf].
    """
    if isinstance(snr, bool) or not isinstance(snr, numbers.Real) or math.isnan(snr) or snr <= 0:
        raise ValueError(f"snr must be a number > 0 (inf for no noise), got {snr!r}")
    return float(snr)


def ctf(grid, *, defocus, B_factor=0.0, energy=MICROSCOPE["energy"], Cs=MICROSCOPE["Cs"],
        amplitude_contrast=MICROSCOPE["amplitude_contrast"], xp=None):
    """CTF of :func:`mbook.electron.waves.contrast_transfer_function` times ``exp(-B k² / 4)``.

    Parameters
    ----------
    grid : Grid
        2D image grid [Å].
    defocus : float or (b,) array_like
        Defocus, positive for underfocus [Å]; one CTF per value.
    B_factor : float
        B-factor of the envelope, >= 0 [Å²].
    energy : float
        [eV].
    Cs : float
        Spherical aberration [Å].
    amplitude_contrast : float
        In [0, 1).

    Returns
    -------
    (nx, ny) or (b, nx, ny) ndarray, float64
        In FFT order.
    """
    xp = xp or backend.xp
    if not (isinstance(B_factor, numbers.Real) and math.isfinite(B_factor) and B_factor >= 0):
        raise ValueError(f"B_factor must be a finite number >= 0 [Å²], got {B_factor!r}")
    values = np.asarray(defocus, dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(f"defocus must be finite [Å], got {defocus!r}")
    envelope = xp.exp(-B_factor / 4 * grids.frequency_squared(grid, xp=xp))
    unique, inverse = np.unique(values.ravel(), return_inverse=True)
    table = xp.stack([
        waves.contrast_transfer_function(grid, energy=energy, defocus=float(d), Cs=Cs,
                                         amplitude_contrast=amplitude_contrast, xp=xp)
        for d in unique
    ]) * envelope
    out = table[xp.asarray(inverse)]
    return out[0] if values.ndim == 0 else out


class ImageParameters(NamedTuple):
    """Per-image nuisance parameters of a stack.

    Attributes
    ----------
    rotations : (n, 3, 3) ndarray
        Haar-uniform rotations applied to the particle.
    shifts : (n, 2) ndarray
        In-plane shifts [Å].
    defocus : (n,) ndarray
        [Å], positive for underfocus.
    contrast : (n,) ndarray
        Per-image contrast factors (mean 1).
    """

    rotations: np.ndarray
    shifts: np.ndarray
    defocus: np.ndarray
    contrast: np.ndarray


def draw_parameters(n_images, *, seed=0, defocus_range=(1.0e4, 2.5e4), max_shift=0.0, contrast_spread=0.0,
                    images_per_micrograph=50):
    """Draw rotations, shifts, defoci and contrasts for ``n_images`` images.

    Images come from micrographs of ``images_per_micrograph`` particles each,
    which share one defocus, as in a real data set.

    Parameters
    ----------
    n_images : int
    seed : int
    defocus_range : (float, float)
        Defocus drawn uniformly in this range [Å] (1-2.5 µm by default).
    max_shift : float
        Shifts drawn uniformly in ``[-max_shift, max_shift]²`` [Å].
    contrast_spread : float
        Standard deviation of ``log c``; ``c`` is log-normal with mean 1
        (0: every contrast is 1).
    images_per_micrograph : int
        Consecutive images that share a defocus (1: every image its own).

    Returns
    -------
    ImageParameters
    """
    if isinstance(n_images, bool) or not isinstance(n_images, numbers.Integral) or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    low, high = (float(d) for d in defocus_range)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"defocus_range must be two finite values low <= high [Å], got {defocus_range!r}")
    checks.check_positive_number(max_shift, "max_shift", allow_zero=True)
    checks.check_positive_number(contrast_spread, "contrast_spread", allow_zero=True)
    if isinstance(images_per_micrograph, bool) or not isinstance(images_per_micrograph, numbers.Integral) \
            or images_per_micrograph < 1:
        raise ValueError(f"images_per_micrograph must be an integer >= 1, got {images_per_micrograph!r}")
    rng = np.random.default_rng(seed)
    rotations = so3.quaternions_to_matrices(rng.standard_normal((n_images, 4)))
    shifts = rng.uniform(-max_shift, max_shift, (n_images, 2))
    n_micrographs = -(-n_images // images_per_micrograph)
    defocus = np.repeat(rng.uniform(low, high, n_micrographs), images_per_micrograph)[:n_images]
    contrast = rng.lognormal(-contrast_spread**2 / 2, contrast_spread, n_images)
    return ImageParameters(rotations, shifts, defocus, contrast)


def _clean_projections(structure, rotations, indices, grid, xp):
    """Noise-free projections of the particle(s) for the images ``indices``."""
    if isinstance(structure, particles.Atoms):
        return particles.project_atoms(structure, rotations, grid, xp=xp)
    if callable(structure):  # one particle per image (heterogeneity)
        return xp.concatenate([
            particles.project_atoms(structure(int(i)), r[None], grid, xp=xp) for i, r in zip(indices, rotations)
        ])
    volume = particles.check_volume(structure)
    if volume.shape[0] != grid.gpts[0]:
        raise ValueError(f"volume of {volume.shape[0]}³ voxels does not match the image grid {grid.gpts}")
    return particles.project_volume(xp.asarray(volume), rotations, sampling=grid.sampling[0])


def _transfer(grid, b, defocus, shifts, B_factor, microscope, xp):
    transfer = ctf(grid, defocus=np.broadcast_to(np.asarray(defocus, float), (b,)), B_factor=B_factor,
                   xp=xp, **{**MICROSCOPE, **microscope})
    if shifts is not None:
        kx, ky = grids.spatial_frequencies(grid, xp=xp)
        s = xp.asarray(np.asarray(shifts, dtype=float).reshape(b, 2))
        transfer = transfer * xp.exp(-2j * math.pi * (kx[None, :, None] * s[:, 0, None, None]
                                                        + ky[None, None, :] * s[:, 1, None, None]))
    return transfer


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
        ``energy``, ``Cs``, ``amplitude_contrast`` for :func:`ctf`.

    Returns
    -------
    (b, nx, ny) ndarray
        Real for real projections.
    """
    xp = backend.get_array_module(projections)
    projections = xp.asarray(projections)
    b = projections.shape[0]
    transfer = _transfer(grid, b, defocus, shifts, B_factor, microscope, xp)
    images = backend.ifft2(backend.fft2(projections) * transfer)
    images = images if xp.iscomplexobj(projections) else images.real
    if contrast is not None:
        images = images * xp.asarray(np.asarray(contrast, dtype=float).reshape(b, 1, 1))
    return images


def form_images_adjoint(images, grid, *, defocus, shifts=None, contrast=None, B_factor=0.0, **microscope):
    """Adjoint of :func:`form_images`: ``c F⁻¹[conj(H e^{-2πik·s}) Î]`` (same parameters)."""
    xp = backend.get_array_module(images)
    images = xp.asarray(images)
    b = images.shape[0]
    transfer = _transfer(grid, b, defocus, shifts, B_factor, microscope, xp)
    out = backend.ifft2(backend.fft2(images) * xp.conj(transfer))
    out = out if xp.iscomplexobj(images) else out.real
    if contrast is not None:
        out = out * xp.asarray(np.asarray(contrast, dtype=float).reshape(b, 1, 1))
    return out


def add_noise(images, sigma, *, seed, first_index=0):
    """Add white Gaussian noise; image ``first_index + j`` uses ``default_rng([seed, first_index + j])``.

    Parameters
    ----------
    images : (b, nx, ny) array_like
    sigma : float
        Noise standard deviation, >= 0 [image units].
    seed : int
    first_index : int
        Index of the first image in the whole stack.

    Returns
    -------
    (b, nx, ny) ndarray
    """
    if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    xp = backend.get_array_module(images)
    if sigma == 0:
        return xp.asarray(images)
    shape = images.shape[1:]
    noise = np.stack([np.random.default_rng([seed, first_index + j]).standard_normal(shape)
                      for j in range(images.shape[0])])
    return images + sigma * xp.asarray(noise)


def noise_sigma(structure, params: ImageParameters, grid, *, snr, B_factor=0.0, pilot=256, **microscope) -> float:
    """Noise standard deviation that gives ``snr`` for this stack.

    ``σ² = mean_i var(clean image i) / snr`` over ``pilot`` images spread evenly
    through the stack (so that every range of defocus is represented).

    Returns
    -------
    float
        σ [image units]; 0 for ``snr = inf``.
    """
    snr = check_snr(snr)
    if math.isinf(snr):
        return 0.0
    xp = backend.xp
    n = len(params.defocus)
    indices = np.unique(np.linspace(0, n - 1, min(int(pilot), n)).round().astype(int))  # spread over micrographs
    clean = form_images(_clean_projections(structure, params.rotations[indices], indices, grid, xp), grid,
                        defocus=params.defocus[indices], shifts=params.shifts[indices],
                        contrast=params.contrast[indices], B_factor=B_factor, **microscope)
    return math.sqrt(float(xp.mean(xp.var(clean, axis=(1, 2)))) / snr)


class ImageBatch(NamedTuple):
    """One batch of a simulated stack.

    Attributes
    ----------
    start : int
        Index of the first image of the batch in the stack.
    images : (b, nx, ny) ndarray
        On the current device.
    noise_sigma : float
        Noise standard deviation of the whole stack.
    """

    start: int
    images: object
    noise_sigma: float


def stream_images(structure, params: ImageParameters, grid, *, snr=math.inf, seed=0, B_factor=0.0,
                  budget=None, pilot=256, **microscope) -> Iterator[ImageBatch]:
    """Generate a particle stack batch by batch under a memory budget.

    Parameters
    ----------
    structure : Atoms, callable or (n, n, n) array_like
        The particle: Gaussian atoms (exact projections); a function
        ``structure(i) -> Atoms`` giving the particle of image i (for
        heterogeneous data); or a voxel volume on the image's sampling
        (projected by trilinear interpolation).
    params : ImageParameters
        From :func:`draw_parameters`.
    grid : Grid
        Square image grid [Å].
    snr : float
        Signal-to-noise ratio, > 0 (``inf``: no noise).
    seed : int
        Seed of the noise.
    B_factor : float
        [Å²].
    budget : int, optional
        Memory budget [bytes] (default :func:`mbook.core.progress.memory_budget`).
    pilot : int
        Number of images used to fix σ from the SNR.
    **microscope
        ``energy`` [eV], ``Cs`` [Å], ``amplitude_contrast``.

    Yields
    ------
    ImageBatch

    Raises
    ------
    ValueError
        For snr <= 0, a non-square grid, or parameters of different lengths.
    MemoryError
        When not even one image fits the budget.
    """
    snr = check_snr(snr)
    grid = particles._check_grid(grid, 2)
    n = len(params.defocus)
    if any(len(field) != n for field in params):
        raise ValueError(f"params fields must all have one entry per image, got lengths {[len(f) for f in params]}")
    sigma = noise_sigma(structure, params, grid, snr=snr, B_factor=B_factor, pilot=pilot, **microscope)
    n_atoms = len(structure.weights) if isinstance(structure, particles.Atoms) else 0
    npix = grid.gpts[0] * grid.gpts[1]
    per_image = 8 * (6 * npix + 4 * n_atoms * grid.gpts[0]) + 16 * 3 * npix
    fixed = 8 * int(np.prod(np.shape(structure))) if not (isinstance(structure, particles.Atoms)
                                                          or callable(structure)) else 0
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_image, fixed_bytes=fixed, budget=budget)
    xp = backend.xp
    if xp is np:
        batch = min(batch, CPU_BATCH)
    for start in progress.progress(range(0, n, batch), desc="images", total=-(-n // batch)):
        stop = min(start + batch, n)
        part = slice(start, stop)
        clean = form_images(_clean_projections(structure, params.rotations[part], np.arange(start, stop), grid, xp),
                            grid, defocus=params.defocus[part], shifts=params.shifts[part],
                            contrast=params.contrast[part], B_factor=B_factor, **microscope)
        yield ImageBatch(start, add_noise(clean, sigma, seed=seed, first_index=start), sigma)
