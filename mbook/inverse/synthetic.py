"""Synthetic test objects with known ground truth, for every inverse-problem chapter.

- :func:`support_mask`: an irregular, non-centrosymmetric blob (a CDI support);
- :func:`weak_phase_object`: a phase object with a small maximum phase
  (0.1-0.5 rad is the weak-phase regime of electron and X-ray imaging);
- :func:`wrapped_phase_object`: a phase that runs over more than 2π, so its
  wrapped representation jumps by ~2π where the true phase is continuous;
- :func:`lattice_image`: an atomic-resolution HAADF-like image, Gaussian
  columns on a 2D lattice, evaluated at arbitrarily displaced positions;
- :func:`smooth_displacement` and :func:`scan_line_jitter`: distortion fields;
- :func:`haadf_series`: a series of frames of one lattice, each with its own
  smooth non-rigid distortion, drift and scan-line jitter, with Poisson noise;
- :func:`poisson_noise`: counting noise at a given dose.

Every random draw takes a ``seed``; arrays come back as NumPy (they are
ground truth and figures), indexed ``[x, y]`` (:mod:`mbook.core.grids`).

Examples
--------
>>> import numpy as np
>>> from mbook.inverse import synthetic
>>> obj, support = synthetic.weak_phase_object((64, 64), max_phase=0.3, seed=0)
>>> round(float(abs(np.angle(obj[support])).max()), 3)
0.3
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import checks, grids, progress
from mbook.core.checks import check_positive_number
from mbook.core.checks import check_finite_array, check_iterations


def _rng(seed):
    return np.random.default_rng(seed)


def _smooth_noise(shape, correlation_length, rng):
    """Zero-mean Gaussian random field with unit RMS: white noise smoothed by a
    Gaussian of standard deviation ``correlation_length`` [px] (periodic)."""
    noise = rng.standard_normal(shape)
    kx, ky = np.fft.fftfreq(shape[-2])[:, None], np.fft.fftfreq(shape[-1])[None, :]
    kernel = np.exp(-2 * (np.pi * correlation_length) ** 2 * (kx**2 + ky**2))
    field = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    field -= field.mean(axis=(-2, -1), keepdims=True)
    return field / field.std(axis=(-2, -1), keepdims=True)


def support_mask(gpts, *, diameter: float = 0.45, irregularity: float = 0.12, seed=0) -> np.ndarray:
    """An irregular blob centred at index ``n // 2``: a non-centrosymmetric support.

    Its radius is ``R (1 + Σ_m c_m cos(m φ + φ_m))`` for m = 1..4 with random
    ``c_m`` of size ``irregularity``; the odd terms break the centre symmetry
    that would let the twin image share the support.

    Parameters
    ----------
    gpts : (int, int)
        Array size.
    diameter : float
        Mean diameter as a fraction of the smaller side, in (0, 1).
    irregularity : float
        Relative amplitude of the boundary's wiggles, in [0, 0.3].
    seed : int

    Returns
    -------
    (nx, ny) ndarray, bool
    """
    nx, ny = checks.check_gpts(gpts, 2)
    check_positive_number(diameter, "diameter", upper=1.0)
    check_positive_number(irregularity, "irregularity", allow_zero=True, upper=0.3 + 1e-12)
    rng = _rng(seed)
    x = np.arange(nx)[:, None] - nx // 2
    y = np.arange(ny)[None, :] - ny // 2
    angle, radius = np.arctan2(y, x), np.hypot(x, y)
    boundary = np.ones_like(angle)
    for m in range(1, 5):
        boundary += irregularity * rng.uniform(0.5, 1.0) * np.cos(m * angle + rng.uniform(0, 2 * np.pi))
    return radius <= 0.5 * diameter * min(nx, ny) * boundary


def weak_phase_object(gpts, *, max_phase: float = 0.3, diameter: float = 0.45, seed=0):
    """A pure phase object ``S e^{iφ}`` with ``0 <= φ <= max_phase`` on an irregular support.

    The phase is a smooth random field plus three discs of constant extra
    phase, rescaled to span exactly [0, max_phase] inside the support.

    Parameters
    ----------
    gpts : (int, int)
    max_phase : float
        Largest phase [rad], in (0, π); 0.1-0.5 rad is the weak-phase regime.
    diameter : float
        Support diameter as a fraction of the array (see :func:`support_mask`).
    seed : int

    Returns
    -------
    obj : (nx, ny) ndarray, complex
    support : (nx, ny) ndarray, bool
    """
    max_phase = check_positive_number(max_phase, "max_phase", upper=math.pi)
    support = support_mask(gpts, diameter=diameter, seed=seed)
    rng = _rng(seed + 1)
    shape = support.shape
    phase = _smooth_noise(shape, 0.06 * min(shape), rng)
    inside = np.argwhere(support)
    for _ in range(3):
        cx, cy = inside[rng.integers(len(inside))]
        r = rng.uniform(0.04, 0.08) * min(shape)
        disc = np.hypot(np.arange(shape[0])[:, None] - cx, np.arange(shape[1])[None, :] - cy) <= r
        phase += rng.choice([-1.5, 1.5]) * disc
    lo, hi = phase[support].min(), phase[support].max()
    phase = max_phase * (phase - lo) / (hi - lo)
    return np.where(support, np.exp(1j * phase), 0), support


class WrappedPhaseObject(NamedTuple):
    """A phase object whose phase wraps: the field, its support and the unwrapped phase [rad]."""

    obj: np.ndarray
    support: np.ndarray
    phase: np.ndarray


def wrapped_phase_object(gpts, *, total_phase: float = 2.5 * math.pi, num_terraces: int | None = 5,
                         diameter: float | None = 0.45, seed=0) -> WrappedPhaseObject:
    """A phase ramp over more than 2π, made of flat terraces, plus two discs.

    The phase climbs by ``total_phase`` across the support along a random
    direction, in ``num_terraces`` flat steps (or smoothly when None), and
    two discs add ±1 rad. Where the true phase passes ±π its wrapped value
    jumps by ~2π although nothing happens on the circle. With the defaults
    every true step, ``total_phase / (num_terraces - 1) + 1`` rad at most, is
    shorter than π: the short arc on S¹ is the true step.

    Parameters
    ----------
    gpts : (int, int)
    total_phase : float
        Height of the ramp [rad], > 0 (> 2π to wrap).
    num_terraces : int or None
        Number of flat steps (>= 2), or None for a smooth ramp.
    diameter : float or None
        Support diameter as a fraction of the array; None fills the array
        (a phase map for denoising rather than a CDI object).
    seed : int

    Returns
    -------
    WrappedPhaseObject
    """
    total_phase = check_positive_number(total_phase, "total_phase")
    if num_terraces is not None and (check_iterations(num_terraces, "num_terraces") < 2):
        raise ValueError(f"num_terraces must be >= 2 or None, got {num_terraces!r}")
    nx, ny = checks.check_gpts(gpts, 2)
    support = np.ones((nx, ny), bool) if diameter is None else support_mask(gpts, diameter=diameter, seed=seed)
    rng = _rng(seed + 2)
    direction = rng.uniform(0, 2 * np.pi)
    x, y = np.arange(nx)[:, None], np.arange(ny)[None, :]
    t = x * np.cos(direction) + y * np.sin(direction)
    t = (t - t[support].min()) / (t[support].max() - t[support].min())
    if num_terraces is not None:
        t = np.minimum(np.floor(t * num_terraces), num_terraces - 1) / (num_terraces - 1)
    phase = total_phase * t - total_phase / 2
    inside = np.argwhere(support)
    for sign in (1.0, -1.0):
        cx, cy = inside[rng.integers(len(inside))]
        phase = phase + sign * (np.hypot(x - cx, y - cy) <= 0.08 * min(nx, ny))
    return WrappedPhaseObject(np.where(support, np.exp(1j * phase), 0), support, phase)


def poisson_noise(image, *, dose: float, seed=0) -> np.ndarray:
    """Counts drawn from ``Poisson(dose · image)`` (float array).

    Parameters
    ----------
    image : array, real, >= 0
        Expected signal [any unit].
    dose : float
        Expected counts per unit of ``image`` [counts / unit], > 0.
    seed : int
    """
    image = np.asarray(check_finite_array(np.asarray(image), "image", real=True), dtype=np.float64)
    if image.size and image.min() < 0:
        raise ValueError(f"image must be >= 0 for Poisson noise, got a minimum of {image.min():.3g}")
    dose = check_positive_number(dose, "dose")
    return _rng(seed).poisson(dose * image).astype(np.float64)


def lattice_image(gpts, sampling, *, lattice_vectors=((4.0, 0.0), (0.0, 4.0)), basis=((0.0, 0.0),),
                  intensities=(1.0,), widths=(0.4,), origin=(0.0, 0.0), background: float = 0.0,
                  displacement=None) -> np.ndarray:
    """An atomic-resolution HAADF-like image: Gaussian columns on a lattice.

    ``I(x) = background + Σ_columns I_b exp(-|x + v(x) - r|² / (2 w_b²))`` with
    ``r = origin + n₁ a₁ + n₂ a₂ + b`` for every basis site ``b`` and the
    frame's displacement ``v`` (the frame shows the specimen at ``x + v(x)``).

    Parameters
    ----------
    gpts : (int, int)
    sampling : float or (float, float)
        Pixel size [Å].
    lattice_vectors : ((float, float), (float, float))
        a₁, a₂ [Å].
    basis : sequence of (float, float)
        Column positions in the cell [Å].
    intensities, widths : sequence of float
        Peak intensity [a.u.] and Gaussian width σ [Å] per basis site.
    origin : (float, float)
        Position of the lattice point n = 0 [Å].
    background : float
        Constant added everywhere [a.u.].
    displacement : (2, nx, ny) array, optional
        Displacement field v [Å].

    Returns
    -------
    (nx, ny) ndarray, float
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    a = np.asarray(lattice_vectors, dtype=float)
    basis = np.atleast_2d(np.asarray(basis, dtype=float))
    intensities = np.broadcast_to(np.asarray(intensities, float), (len(basis),))
    widths = np.broadcast_to(np.asarray(widths, float), (len(basis),))
    if a.shape != (2, 2) or abs(np.linalg.det(a)) < 1e-12:
        raise ValueError(f"lattice_vectors must be two independent 2D vectors [Å], got {lattice_vectors!r}")
    if not np.all(widths > 0) or not np.all(np.isfinite(intensities)):
        raise ValueError(f"widths must be > 0 [Å] and intensities finite, got {widths}, {intensities}")
    x, y = (np.arange(n) * d for n, d in zip(grid.gpts, grid.sampling))
    px, py = np.meshgrid(x, y, indexing="ij")
    if displacement is not None:
        displacement = np.asarray(check_finite_array(np.asarray(displacement, float), "displacement", real=True))
        if displacement.shape != (2,) + grid.gpts:
            raise ValueError(f"displacement must have shape {(2,) + grid.gpts}, got {displacement.shape}")
        px, py = px + displacement[0], py + displacement[1]
    points = np.stack([px.ravel(), py.ravel()], axis=1)
    margin = 5 * widths.max()
    lo, hi = points.min(axis=0) - margin, points.max(axis=0) + margin
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]]) - np.asarray(origin)
    n_range = np.linalg.solve(a.T, corners.T)  # lattice coordinates of the corners
    n1 = np.arange(math.floor(n_range[0].min()) - 1, math.ceil(n_range[0].max()) + 2)
    n2 = np.arange(math.floor(n_range[1].min()) - 1, math.ceil(n_range[1].max()) + 2)
    cells = (n1[:, None, None] * a[0] + n2[None, :, None] * a[1]).reshape(-1, 2) + np.asarray(origin)
    image = np.full(points.shape[0], float(background))
    batch = progress.plan_batches(n_items=points.shape[0], bytes_per_item=24 * len(cells),
                                  budget=min(progress.memory_budget(), 2**28))
    for b, (site, peak, width) in enumerate(zip(basis, intensities, widths)):
        columns = cells + site
        keep = np.all((columns >= lo) & (columns <= hi), axis=1)
        columns = columns[keep]
        for start in range(0, points.shape[0], batch):
            chunk = points[start:start + batch]
            d2 = (chunk[:, :1] - columns[:, 0]) ** 2 + (chunk[:, 1:] - columns[:, 1]) ** 2
            image[start:start + batch] += peak * np.exp(-d2 / (2 * width**2)).sum(axis=1)
    return image.reshape(grid.gpts)


def smooth_displacement(gpts, *, rms: float, correlation_length: float, num_fields: int = 1,
                        seed=0) -> np.ndarray:
    """Smooth random displacement fields: Gaussian-correlated, ``rms`` per component.

    Parameters
    ----------
    gpts : (int, int)
    rms : float
        RMS of each component [any length unit, e.g. Å or px], >= 0.
    correlation_length : float
        Gaussian correlation length [px], > 0.
    num_fields : int
    seed : int

    Returns
    -------
    (num_fields, 2, nx, ny) ndarray
    """
    gpts = checks.check_gpts(gpts, 2)
    rms = check_positive_number(rms, "rms", allow_zero=True)
    correlation_length = check_positive_number(correlation_length, "correlation_length")
    num_fields = check_iterations(num_fields, "num_fields")
    return rms * _smooth_noise((num_fields, 2) + gpts, correlation_length, _rng(seed))


def scan_line_jitter(gpts, *, rms: float, num_frames: int = 1, seed=0) -> np.ndarray:
    """Scan-line jitter: each scan line (fixed y, fast scan along x) shifted along x.

    Returns
    -------
    (num_frames, 2, nx, ny) ndarray
        x-component constant along each line, drawn N(0, rms²) per line
        [unit of ``rms``]; y-component 0.
    """
    nx, ny = checks.check_gpts(gpts, 2)
    rms = check_positive_number(rms, "rms", allow_zero=True)
    num_frames = check_iterations(num_frames, "num_frames")
    field = np.zeros((num_frames, 2, nx, ny))
    field[:, 0] = rms * _rng(seed).standard_normal((num_frames, 1, ny))
    return field


class Series(NamedTuple):
    """A distorted image series: noisy ``frames`` (K, nx, ny) [counts], the undistorted
    ``image`` (nx, ny) [expected counts], the ``displacements`` (K, 2, nx, ny) [Å] that
    made each frame (mean over frames 0), the scan-line jitter part of them
    ``line_shifts`` (K, ny) [Å] (also mean 0 over frames), and the ``sampling`` [Å]."""

    frames: np.ndarray
    image: np.ndarray
    displacements: np.ndarray
    line_shifts: np.ndarray
    sampling: float


def haadf_series(gpts, sampling: float, *, num_frames: int = 8, distortion_rms: float = 0.4,
                 correlation_length: float = 6.0, jitter_rms: float = 0.15, drift_rms: float = 0.5,
                 dose: float = 20.0, seed=0, **lattice) -> Series:
    """A series of HAADF-like frames of one lattice, each distorted differently.

    Frame k shows ``u(x + v_k(x))`` with ``v_k`` = a smooth non-rigid field
    (:func:`smooth_displacement`) + a rigid drift + scan-line jitter
    (:func:`scan_line_jitter`); the mean of ``v_k`` over the frames is removed
    so the undistorted image is the series' mean frame of reference. Counts are
    Poisson with ``dose`` expected counts at a column's peak.

    Parameters
    ----------
    gpts : (int, int)
    sampling : float
        Pixel size [Å].
    num_frames : int
    distortion_rms : float
        RMS of each component of the smooth field [Å].
    correlation_length : float
        Its correlation length [Å].
    jitter_rms : float
        RMS scan-line shift [Å].
    drift_rms : float
        RMS rigid shift per frame [Å].
    dose : float
        Expected counts at the peak of a column of intensity 1 [counts].
    seed : int
    **lattice
        Passed to :func:`lattice_image` (lattice_vectors, basis, intensities,
        widths, origin, background).

    Returns
    -------
    Series
    """
    gpts = checks.check_gpts(gpts, 2)
    sampling = check_positive_number(sampling, "sampling")
    num_frames = check_iterations(num_frames, "num_frames")
    for name, value in (("distortion_rms", distortion_rms), ("jitter_rms", jitter_rms),
                        ("drift_rms", drift_rms)):
        check_positive_number(value, name, allow_zero=True)
    check_positive_number(correlation_length, "correlation_length")
    check_positive_number(dose, "dose")
    rng = _rng(seed)
    seeds = rng.integers(2**31, size=3)
    v = smooth_displacement(gpts, rms=distortion_rms, correlation_length=correlation_length / sampling,
                            num_fields=num_frames, seed=seeds[0])
    jitter = scan_line_jitter(gpts, rms=jitter_rms, num_frames=num_frames, seed=seeds[1])
    v += jitter
    v += drift_rms * _rng(seeds[2]).standard_normal((num_frames, 2, 1, 1))
    v -= v.mean(axis=0, keepdims=True)
    image = dose * lattice_image(gpts, sampling, **lattice)
    frames = np.stack([
        poisson_noise(lattice_image(gpts, sampling, displacement=v[k], **lattice), dose=dose,
                      seed=int(seeds[0]) + 1 + k)
        for k in range(num_frames)
    ])
    line_shifts = jitter[:, 0, 0, :] - jitter[:, 0, 0, :].mean(axis=0)
    return Series(frames, image, v, line_shifts, sampling)
