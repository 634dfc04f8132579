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

Every random draw takes a ``seed`` and is made on the host by
:func:`numpy.random.default_rng` (the same numbers on every device), then
moved; arrays come back on the selected device (:mod:`mbook.core.backend`),
indexed ``[x, y]`` (:mod:`mbook.core.grids`). The small masks and phase maps
(supports, weak and wrapped phase objects, jitter) are built on the host
with their draws and moved once; the smooth random fields and the lattice
images, the costly parts at research size, are computed on the device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.inverse import synthetic
>>> obj, support = synthetic.weak_phase_object((64, 64), max_phase=0.3, seed=0)
>>> obj, support = backend.asnumpy(obj), backend.asnumpy(support)  # for NumPy's boolean indexing
>>> round(float(abs(np.angle(obj[support])).max()), 3)
0.3
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.core.checks import check_array, check_iterations, check_positive_number


def _rng(seed):
    return checks.rng(seed)


def _smooth_noise(shape, correlation_length, rng):
    """Zero-mean Gaussian random field with unit RMS, on the selected device: white noise
    (drawn on the host) smoothed by a Gaussian of standard deviation ``correlation_length``
    [px] (periodic)."""
    noise = backend.asarray(rng.standard_normal(shape))
    xp = backend.get_array_module(noise)
    kx, ky = xp.fft.fftfreq(shape[-2])[:, None], xp.fft.fftfreq(shape[-1])[None, :]
    kernel = xp.exp(-2 * (math.pi * correlation_length) ** 2 * (kx**2 + ky**2))
    # The mean goes in Fourier space, not after the inverse FFT: with a correlation length near the grid's
    # size the fluctuation is ~1e-7 of the mean, so subtracting the mean there would leave the mean's
    # rounding (which differs between FFT libraries: cuFFT, pocketfft, FFTW) magnified ~1e7 in the field.
    kernel[0, 0] = 0.0
    field = backend.ifft2(backend.fft2(noise) * kernel).real
    field -= field.mean(axis=(-2, -1), keepdims=True)
    return field / field.std(axis=(-2, -1), keepdims=True)


def random_field(gpts, *, correlation_length: float, seed=0):
    """Zero-mean Gaussian random field of unit RMS ``(nx, ny)``, smooth on ``correlation_length`` (periodic).

    White noise drawn on the host from ``seed``, smoothed on the device by a
    Gaussian of standard deviation ``correlation_length`` in Fourier space,
    whose zero frequency is dropped there (the mean removed before the
    inverse FFT, so that its rounding is not magnified in a field much
    smoother than the grid).

    Parameters
    ----------
    gpts : int or (int, int)
        Grid points.
    correlation_length : float
        Standard deviation of the smoothing Gaussian [px], > 0.
    seed : int or numpy.random.Generator
        A generator is drawn from in place (successive fields differ).

    Returns
    -------
    (nx, ny) array
        On the selected device.
    """
    gpts = checks.check_gpts(gpts, 2)
    correlation_length = check_positive_number(correlation_length, "correlation_length")
    return _smooth_noise(gpts, correlation_length, _rng(seed))


def support_mask(gpts, *, diameter: float = 0.45, irregularity: float = 0.12, seed=0):
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
    (nx, ny) bool array
        On the selected device.
    """
    nx, ny = checks.check_gpts(gpts, 2)
    check_positive_number(diameter, "diameter", upper=1.0)
    check_positive_number(irregularity, "irregularity", allow_zero=True, upper=0.3 + 1e-12)
    rng = _rng(seed)
    xp = backend.xp
    x = xp.arange(nx)[:, None] - nx // 2
    y = xp.arange(ny)[None, :] - ny // 2
    angle, radius = xp.arctan2(y, x), xp.hypot(x, y)
    boundary = xp.ones_like(angle)
    for m in range(1, 5):  # four Fourier terms of the boundary, two host draws each
        boundary += irregularity * rng.uniform(0.5, 1.0) * xp.cos(m * angle + rng.uniform(0, 2 * np.pi))
    return radius <= 0.5 * diameter * min(nx, ny) * boundary


def _random_pixel(support_host, rng):
    """A pixel of the support drawn uniformly: ``(cx, cy)`` as Python ints."""
    inside = np.argwhere(support_host)
    cx, cy = inside[rng.integers(len(inside))]
    return int(cx), int(cy)


def _range_over(values, support):
    """``(min, max)`` of ``values`` over ``support`` as 0-d device arrays (no boolean indexing)."""
    xp = backend.get_array_module(values)
    return xp.where(support, values, xp.inf).min(), xp.where(support, values, -xp.inf).max()


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
    obj : (nx, ny) complex array
        On the selected device.
    support : (nx, ny) bool array
        On the selected device.
    """
    max_phase = check_positive_number(max_phase, "max_phase", upper=math.pi)
    support = support_mask(gpts, diameter=diameter, seed=seed)
    support_host = backend.asnumpy(support)  # the disc centres are drawn among its pixels
    rng = _rng(seed + 1)
    shape = support.shape
    phase = _smooth_noise(shape, 0.06 * min(shape), rng)
    xp = backend.get_array_module(phase)
    x, y = xp.arange(shape[0])[:, None], xp.arange(shape[1])[None, :]
    for _ in range(3):
        cx, cy = _random_pixel(support_host, rng)
        r = rng.uniform(0.04, 0.08) * min(shape)
        disc = xp.hypot(x - cx, y - cy) <= r
        phase += float(rng.choice([-1.5, 1.5])) * disc
    lo, hi = _range_over(phase, support)
    phase = max_phase * (phase - lo) / (hi - lo)
    return xp.where(support, xp.exp(1j * phase), 0), support


class WrappedPhaseObject(NamedTuple):
    """A phase object whose phase wraps: the field, its support and the unwrapped phase [rad]
    (arrays on the selected device)."""

    obj: object
    support: object
    phase: object


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
    xp = backend.xp
    support = xp.ones((nx, ny), bool) if diameter is None else support_mask(gpts, diameter=diameter, seed=seed)
    support_host = backend.asnumpy(support)  # the disc centres are drawn among its pixels
    rng = _rng(seed + 2)
    direction = rng.uniform(0, 2 * np.pi)
    x, y = xp.arange(nx)[:, None], xp.arange(ny)[None, :]
    t = x * math.cos(direction) + y * math.sin(direction)
    lo, hi = _range_over(t, support)
    t = (t - lo) / (hi - lo)
    if num_terraces is not None:
        t = xp.minimum(xp.floor(t * num_terraces), num_terraces - 1) / (num_terraces - 1)
    phase = total_phase * t - total_phase / 2
    for sign in (1.0, -1.0):
        cx, cy = _random_pixel(support_host, rng)
        phase = phase + sign * (xp.hypot(x - cx, y - cy) <= 0.08 * min(nx, ny))
    return WrappedPhaseObject(xp.where(support, xp.exp(1j * phase), 0), support, phase)


def poisson_noise(image, *, dose: float, seed=0):
    """Counts drawn from ``Poisson(dose · image)`` (float array).

    The draw is made on the host from the seed (the same counts on every
    device): the image is copied there, and the counts come back on the
    selected device.

    Parameters
    ----------
    image : array, real, >= 0
        Expected signal [any unit].
    dose : float
        Expected counts per unit of ``image`` [counts / unit], > 0.
    seed : int

    Returns
    -------
    array
        Counts, float64, on the selected device.
    """
    image = check_array(image, "image", real=True)
    if image.size and float(image.min()) < 0:
        raise ValueError(f"image must be >= 0 for Poisson noise, got a minimum of {float(image.min()):.3g}")
    dose = check_positive_number(dose, "dose")
    host = backend.asnumpy(image).astype(np.float64)
    return backend.asarray(_rng(seed).poisson(dose * host).astype(np.float64))


#: Columns farther than this many widths from a pixel are left out of its sum: their share,
#: exp(-50) ≈ 2e-22 of a peak each, is below the rounding of the sum.
CUTOFF_WIDTHS = 10.0

#: Most Gaussian terms :func:`lattice_image` sums (images × pixels × neighbouring cells, over the basis
#: sites): about a minute on one CPU core (3.6·10⁷ terms per second measured at 4000² pixels, where a
#: default lattice takes 2.6·10⁸ terms, 7 s).
MAX_COLUMN_TERMS = 2 * 10**9

# Bytes per pixel and image of a batch of lattice_image: eighteen float64 work arrays.
_LATTICE_BYTES = 18 * 8


def _check_lattice_work(images, pixels, cells, widths):
    """Refuse a lattice image whose Gaussian terms exceed :data:`MAX_COLUMN_TERMS`, with the numbers."""
    terms = images * pixels * sum(cells)
    if terms > MAX_COLUMN_TERMS:
        raise ValueError(
            f"lattice_image would sum {terms:.3g} Gaussian terms: {images} image(s) × {pixels} pixels (gpts, "
            f"displacement) × {sum(cells)} neighbouring cells per pixel (widths {list(map(float, widths))} Å "
            f"reach {CUTOFF_WIDTHS:g} widths, over lattice_vectors), beyond the limit of {MAX_COLUMN_TERMS:.3g} "
            "(about a minute on one CPU core); use fewer pixels or narrower columns"
        )


def _host_numbers(value, name, shape=None):
    """A parameter given as numbers (a vector, a table of positions) as a finite float array on the host."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold real numbers, got {value!r}") from None
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be non-empty and finite, got {value!r}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def lattice_image(gpts, sampling, *, lattice_vectors=((4.0, 0.0), (0.0, 4.0)), basis=((0.0, 0.0),),
                  intensities=(1.0,), widths=(0.4,), origin=(0.0, 0.0), background: float = 0.0,
                  displacement=None):
    """An atomic-resolution HAADF-like image: Gaussian columns on a lattice.

    ``I(x) = background + Σ_columns I_b exp(-|x + v(x) - r|² / (2 w_b²))`` with
    ``r = origin + n₁ a₁ + n₂ a₂ + b`` for every basis site ``b`` and the
    frame's displacement ``v`` (the frame shows the specimen at ``x + v(x)``).
    The columns are those inside the box of all sample positions widened by
    5 widths; each pixel sums the columns of its neighbouring cells (within
    :data:`CUTOFF_WIDTHS` widths), found from its lattice coordinates, so the
    cost grows with the pixels, not with pixels × columns. Computed on the
    selected device, in memory-budgeted batches of pixels.

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
    displacement : (2, nx, ny) or (K, 2, nx, ny) array, optional
        Displacement field v [Å]; a stack gives one image per field.

    Returns
    -------
    (nx, ny) or (K, nx, ny) float array
        On the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    a = _host_numbers(lattice_vectors, "lattice_vectors", (2, 2))
    basis = np.atleast_2d(_host_numbers(basis, "basis"))
    if basis.shape[1:] != (2,):
        raise ValueError(f"basis must hold 2D positions (n, 2) [Å], got {basis.shape}")
    intensities, widths = (_host_numbers(v, name) for v, name in ((intensities, "intensities"), (widths, "widths")))
    for name, values in (("intensities", intensities), ("widths", widths)):
        if values.ndim > 1 or values.size not in (1, len(basis)):
            raise ValueError(f"{name} must hold 1 or len(basis) = {len(basis)} values, got shape {values.shape}")
    intensities = np.broadcast_to(intensities, (len(basis),))
    widths = np.broadcast_to(widths, (len(basis),))
    origin = _host_numbers(origin, "origin", (2,))
    background = checks.check_number(background, "background")
    if a.shape != (2, 2) or abs(np.linalg.det(a)) < 1e-12:
        raise ValueError(f"lattice_vectors must be two independent 2D vectors [Å], got {lattice_vectors!r}")
    if not np.all(widths > 0) or not np.all(np.isfinite(intensities)):
        raise ValueError(f"widths must be > 0 [Å] and intensities finite, got {widths}, {intensities}")
    xp = backend.xp
    nx, ny = grid.gpts
    if displacement is not None:
        displacement = check_array(displacement, "displacement", real=True)
        if displacement.ndim not in (3, 4) or displacement.shape[-3:] != (2,) + grid.gpts:
            raise ValueError(f"displacement must have shape {(2,) + grid.gpts} (or a stack of them), "
                             f"got {displacement.shape}")
    stack_shape = () if displacement is None else displacement.shape[:-3]
    to_lattice = np.linalg.inv(a.T)  # lattice coordinates n of a position r: n = (aᵀ)⁻¹ r
    # Cells within the cutoff of a pixel: |n_i - f_i| <= cutoff · |row i of (aᵀ)⁻¹|, per basis site.
    offsets = []
    for width in widths:
        reach = [math.floor(min(CUTOFF_WIDTHS * width * np.linalg.norm(row), 2.0**20)) for row in to_lattice]
        offsets.append((reach, (2 * reach[0] + 2) * (2 * reach[1] + 2)))
    _check_lattice_work(math.prod(stack_shape), nx * ny, [cells for _, cells in offsets], widths)
    images = math.prod(stack_shape)
    # the image, and with a displacement its float64 copy and the displaced positions, per pixel
    fixed = 8 * images * nx * ny * (1 if displacement is None else 5)
    batch = progress.plan_batches(n_items=nx * ny, bytes_per_item=_LATTICE_BYTES * images, fixed_bytes=fixed)
    batch = max(1, min(batch, 2**28 // (_LATTICE_BYTES * images)))  # batches of 256 MiB stay fast on a CPU
    px = xp.broadcast_to((xp.arange(nx) * grid.sampling[0])[:, None], (nx, ny))
    py = xp.broadcast_to((xp.arange(ny) * grid.sampling[1])[None, :], (nx, ny))
    if displacement is not None:
        displacement = displacement.astype(xp.float64)
        px, py = px + displacement[..., 0, :, :], py + displacement[..., 1, :, :]
    px, py = px.reshape(-1, nx * ny), py.reshape(-1, nx * ny)  # (images, pixels)
    # The columns taken: inside the box of each image's sample positions, widened by 5 widths.
    margin = 5 * widths.max()
    lo_x, hi_x = px.min(axis=1, keepdims=True) - margin, px.max(axis=1, keepdims=True) + margin
    lo_y, hi_y = py.min(axis=1, keepdims=True) - margin, py.max(axis=1, keepdims=True) + margin
    image = xp.full(px.shape, float(background))
    for site, peak, width, (reach, _) in zip(basis, intensities, widths, offsets):
        centre = origin + site
        for start in range(0, nx * ny, batch):
            part = np.s_[:, start:start + batch]
            qx, qy = px[part] - centre[0], py[part] - centre[1]  # relative to the column n = 0
            n1 = xp.floor(to_lattice[0, 0] * qx + to_lattice[0, 1] * qy)
            n2 = xp.floor(to_lattice[1, 0] * qx + to_lattice[1, 1] * qy)
            # the pixel relative to the column of its own cell n; the column of cell n + d is d₁a₁ + d₂a₂ away
            rx, ry = qx - (n1 * a[0, 0] + n2 * a[1, 0]), qy - (n1 * a[0, 1] + n2 * a[1, 1])
            # that column (at the pixel minus (rx, ry) - (d₁a₁ + d₂a₂)) is taken while inside the box:
            # px - hi <= rx - cx <= px - lo, and likewise in y
            above_x, below_x = px[part] - hi_x, px[part] - lo_x
            above_y, below_y = py[part] - hi_y, py[part] - lo_y
            total = xp.zeros(qx.shape)
            for d1 in range(-reach[0], reach[0] + 2):  # a few neighbouring cells, every pixel at once
                for d2 in range(-reach[1], reach[1] + 2):
                    dx = rx - (d1 * a[0, 0] + d2 * a[1, 0])
                    dy = ry - (d1 * a[0, 1] + d2 * a[1, 1])
                    kept = (dx >= above_x) & (dx <= below_x) & (dy >= above_y) & (dy <= below_y)
                    total += xp.where(kept, xp.exp((dx * dx + dy * dy) * (-0.5 / width**2)), 0.0)
            image[part] += peak * total
    return image.reshape(stack_shape + (nx, ny))


def smooth_displacement(gpts, *, rms: float, correlation_length: float, num_fields: int = 1,
                        seed=0):
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
    (num_fields, 2, nx, ny) array
        On the selected device (white noise drawn on the host, smoothed on the device).
    """
    gpts = checks.check_gpts(gpts, 2)
    rms = check_positive_number(rms, "rms", allow_zero=True)
    correlation_length = check_positive_number(correlation_length, "correlation_length")
    num_fields = check_iterations(num_fields, "num_fields")
    return rms * _smooth_noise((num_fields, 2) + gpts, correlation_length, _rng(seed))


def scan_line_jitter(gpts, *, rms: float, num_frames: int = 1, seed=0):
    """Scan-line jitter: each scan line (fixed y, fast scan along x) shifted along x.

    Returns
    -------
    (num_frames, 2, nx, ny) array
        On the selected device: x-component constant along each line, drawn
        N(0, rms²) per line [unit of ``rms``]; y-component 0.
    """
    nx, ny = checks.check_gpts(gpts, 2)
    rms = check_positive_number(rms, "rms", allow_zero=True)
    num_frames = check_iterations(num_frames, "num_frames")
    field = np.zeros((num_frames, 2, nx, ny))
    field[:, 0] = rms * _rng(seed).standard_normal((num_frames, 1, ny))
    return backend.asarray(field)


class Series(NamedTuple):
    """A distorted image series (arrays on the selected device): noisy ``frames`` (K, nx, ny)
    [counts], the undistorted ``image`` (nx, ny) [expected counts], the ``displacements``
    (K, 2, nx, ny) [Å] that made each frame (mean over frames 0), the scan-line jitter part
    of them ``line_shifts`` (K, ny) [Å] (also mean 0 over frames), and the ``sampling`` [Å]."""

    frames: object
    image: object
    displacements: object
    line_shifts: object
    sampling: float


def haadf_series(gpts, sampling: float, *, num_frames: int = 8, distortion_rms: float = 0.4,
                 correlation_length: float = 6.0, jitter_rms: float = 0.15, drift_rms: float = 0.5,
                 dose: float = 20.0, seed=0, **lattice) -> Series:
    """A series of HAADF-like frames of one lattice, each distorted differently.

    Frame k shows ``u(x + v_k(x))`` with ``v_k`` = a smooth non-rigid field
    (:func:`smooth_displacement`) + a rigid drift + scan-line jitter
    (:func:`scan_line_jitter`); the mean of ``v_k`` over the frames is removed
    so the undistorted image is the series' mean frame of reference. Counts are
    Poisson with ``dose`` expected counts at a column's peak. The frames are
    imaged together on the device (:func:`lattice_image` of the stack of
    fields); the counts are drawn on the host, one seed per frame, and moved.

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
    dose = check_positive_number(dose, "dose")
    rng = _rng(seed)
    seeds = rng.integers(2**31, size=3)
    v = smooth_displacement(gpts, rms=distortion_rms, correlation_length=correlation_length / sampling,
                            num_fields=num_frames, seed=seeds[0])
    jitter = scan_line_jitter(gpts, rms=jitter_rms, num_frames=num_frames, seed=seeds[1])
    v += jitter
    v += backend.asarray(drift_rms * _rng(seeds[2]).standard_normal((num_frames, 2, 1, 1)))
    v -= v.mean(axis=0, keepdims=True)
    image = dose * lattice_image(gpts, sampling, **lattice)
    expected = backend.asnumpy(lattice_image(gpts, sampling, displacement=v, **lattice))
    # One seeded host draw per frame (rule 4): the same counts on every device, as before batching.
    frames = np.stack([_rng(int(seeds[0]) + 1 + k).poisson(dose * expected[k]).astype(np.float64)
                       for k in range(num_frames)])
    line_shifts = jitter[:, 0, 0, :] - jitter[:, 0, 0, :].mean(axis=0)
    return Series(backend.asarray(frames), image, v, line_shifts, sampling)
