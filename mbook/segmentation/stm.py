"""Synthetic scanning tunnelling micrographs: grains of periodic lattices, with their region masks.

Training and testing a segmentation needs images whose regions are known. This module draws them
(white paper, section 5.2.3): ``num_regions`` grains, each a periodic lattice of its own kind
(hexagonal, square, or a molecular lattice with a three-spot motif), spacing and orientation, meet
along random smooth boundaries; a strip of disordered (amorphous) contrast of random width runs along
every boundary; and the image carries the artefacts of a scanning probe:

- **drift**: the sample moves linearly during the frame, so the lattice is sheared along the slow
  scan axis (axis 0; the fast axis is axis 1);
- **tip blur**: the image is convolved with a Gaussian of width ``tip_blur`` [px];
- **scan-line offsets**: each line (row ``i``) carries its own offset, as the feedback loop shifts
  the height from line to line;
- **noise**: white noise on every pixel (tunnelling-current / preamplifier noise).

Every grain is standardised to zero mean and unit variance over its own pixels before the artefacts
are applied, so the grains differ by their *pattern* alone, not by their mean intensity or contrast:
a segmentation by pixel values cannot tell them apart (the point of the book's segmentation chapter).

How the pixels are drawn, without a loop over pixels or atoms: for every pixel the lattice
parameters of its grain are gathered from its label, its position is written in the lattice's
basis, rounded to the nearest lattice point, and the Gaussian spots of the 3 x 3 nearest cells are
summed (array axes for the images, the pixels and the 9 cells; a loop over the at most 3 spots of the
motif). The boundaries are the level sets of the largest of ``num_regions`` smooth Gaussian random
fields (one per region): ``labels = argmax_r field_r``; the distance to the boundary is estimated from
the gap between the two largest fields divided by its gradient.

All random numbers are drawn on the host from ``seed`` (the same images on every device), then moved;
the work runs on the selected device in batches of images that fit :func:`mbook.core.progress.memory_budget`.

Examples
--------
>>> from mbook.core import backend
>>> from mbook.segmentation import stm
>>> images = stm.synthetic_stm(64, num_images=2, num_regions=2, seed=0)
>>> images.image.shape, images.labels.shape, images.masks.shape
((2, 64, 64), (2, 64, 64), (2, 2, 64, 64))
>>> sorted(set(backend.asnumpy(images.labels).ravel().tolist()))
[0, 1]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress

#: Lattice kinds: a hexagonal (triangular) lattice of single spots, a square lattice, and a
#: molecular lattice (hexagonal cell 1.6x larger, holding a triangle of three spots).
LATTICES = ("hexagonal", "square", "molecular")

# Per kind: cell size relative to the drawn spacing, angle between the basis vectors [rad], the
# rotation period over which grains of one kind are spread [rad] (the lattice's symmetry), spot width relative to the cell size,
# motif positions (in units of the cell size, before rotation) and their weights (0: unused).
_CELL_SCALE = np.array([1.0, 1.0, 1.6])
_BASIS_ANGLE = np.array([math.pi / 3, math.pi / 2, math.pi / 3])
# The molecular pattern repeats after 120°, but a turn by 60° more is a turn by 180° of the pattern,
# which no Fourier magnitude sees (|F(-k)| = |F(k)|): its grains are spread over 60° too.
_PERIOD = np.array([math.pi / 3, math.pi / 2, math.pi / 3])
_SPOT_WIDTH = np.array([0.17, 0.17, 0.1])
_MOTIF_ANGLES = np.deg2rad([90.0, 210.0, 330.0])
_MOTIF = np.stack([
    np.zeros((3, 2)),
    np.zeros((3, 2)),
    0.28 * np.stack([np.cos(_MOTIF_ANGLES), np.sin(_MOTIF_ANGLES)], axis=-1) + np.array([0.5, 0.5 / math.sqrt(3)]),
])
_MOTIF_WEIGHT = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
# The 3 x 3 neighbouring cells of the nearest lattice point, whose spots reach a pixel.
_CELLS = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
_ARRAYS_PER_PIXEL = 60  # float64 arrays of one image alive at the peak of a batch (9 cells x ~5, plus fields)


class STMImages(NamedTuple):
    """Result of :func:`synthetic_stm`; arrays on the selected device.

    Attributes
    ----------
    image : (num_images, nx, ny) ndarray, float64
        The micrographs [arbitrary units: every grain has zero mean and unit variance before the
        artefacts].
    labels : (num_images, nx, ny) ndarray, int64
        The grain of every pixel, ``0 .. num_regions - 1`` (the disordered strips belong to the grain
        on their side of the boundary).
    masks : (num_images, num_regions, nx, ny) ndarray, bool
        One mask per grain (``labels == r``).
    disorder : (num_images, nx, ny) ndarray, float64
        Weight of the disordered contrast in ``[0, 1]`` (1 on the boundary, 0 deep in a grain).
    spacing : (num_images, num_regions) ndarray, float64
        Drawn lattice spacing of every grain [Å] (the molecular cell is 1.6x this).
    angle : (num_images, num_regions) ndarray, float64
        Orientation of every grain's first basis vector [rad].
    kinds : tuple of tuple of str
        Lattice kind of every grain, per image (from :data:`LATTICES`).
    sampling : float
        Pixel size [Å].
    """

    image: object
    labels: object
    masks: object
    disorder: object
    spacing: object
    angle: object
    kinds: tuple
    sampling: float


def synthetic_stm(gpts=128, *, num_images: int = 1, num_regions: int = 2, lattices=LATTICES,
                  sampling: float = 0.5, spacing=(3.0, 4.5), boundary_scale=None,
                  disorder_width: float = 3.0, drift: float = 2.0, tip_blur: float = 0.7,
                  line_noise: float = 0.1, noise: float = 0.3, seed: int = 0) -> STMImages:
    """Draw synthetic STM images of lattice grains with their region labels.

    Parameters
    ----------
    gpts : int or (int, int)
        Pixels ``(nx, ny)``; axis 0 is the slow scan axis, axis 1 the fast one. At least 16 each.
    num_images : int
        Images to draw (a leading batch axis, always present).
    num_regions : int
        Grains per image, 2 to 8 (a grain may be cut into several pieces by the boundaries).
    lattices : sequence of str
        Kinds the grains are drawn from (:data:`LATTICES`); with one kind, the grains differ by
        orientation and spacing only (rotational domains).
    sampling : float
        Pixel size [Å].
    spacing : (float, float)
        Range of the lattice spacing, drawn uniformly per grain [Å]; at least 3 pixels.
    boundary_scale : float, optional
        Correlation length of the random fields whose largest member sets the grain [px]; larger
        gives fewer, rounder grains. Default ``min(nx, ny) / 5``.
    disorder_width : float
        Mean half-width of the disordered strip along the boundaries [px]; 0 for none.
    drift : float
        Standard deviation of the drift over one frame, per axis [px].
    tip_blur : float
        Standard deviation of the Gaussian tip blur [px]; 0 for none.
    line_noise : float
        Standard deviation of the per-line offsets [units of the grain contrast].
    noise : float
        Standard deviation of the white noise [units of the grain contrast].
    seed : int
        Seed of every random draw.

    Returns
    -------
    STMImages

    Raises
    ------
    ValueError
        For a bad argument (named in the message), or MemoryError when one image does not fit the
        memory budget.
    """
    nx, ny = checks.check_gpts(gpts, 2)
    if min(nx, ny) < 16:
        raise ValueError(f"gpts must be at least 16 per axis, got {(nx, ny)}")
    num_images = checks.check_count(num_images, "num_images")
    num_regions = checks.check_count(num_regions, "num_regions", minimum=2, maximum=8)
    if isinstance(lattices, str):
        lattices = (lattices,)
    try:
        lattices = tuple(lattices)
    except TypeError:
        raise TypeError(f"lattices must be a name or a sequence of names from {LATTICES}, got {lattices!r}") from None
    lattices = tuple(checks.check_choice(kind, "lattices", LATTICES) for kind in lattices)
    if not lattices:
        raise ValueError(f"lattices must name at least one of {LATTICES}, got {lattices!r}")
    sampling = checks.check_positive_number(sampling, "sampling")
    low, high = checks.as_tuple(spacing, "spacing", 2)
    low = checks.check_number(low, "spacing", lower=3 * sampling, units="Å", hint="at least 3 pixels")
    high = checks.check_number(high, "spacing", lower=low, upper=min(nx, ny) * sampling / 4, units="Å")
    if boundary_scale is None:
        boundary_scale = min(nx, ny) / 5
    boundary_scale = checks.check_number(boundary_scale, "boundary_scale", lower=1.0, upper=max(nx, ny),
                                         units="px")
    disorder_width = checks.check_number(disorder_width, "disorder_width", lower=0, upper=min(nx, ny) / 4,
                                         units="px")
    drift = checks.check_positive_number(drift, "drift", allow_zero=True)
    tip_blur = checks.check_number(tip_blur, "tip_blur", lower=0, upper=min(nx, ny) / 4, units="px")
    line_noise = checks.check_positive_number(line_noise, "line_noise", allow_zero=True)
    noise = checks.check_positive_number(noise, "noise", allow_zero=True)
    seed = checks.check_count(seed, "seed", minimum=0)

    draws = _draw(np.random.default_rng(seed), num_images, num_regions, (nx, ny), lattices, (low, high), drift)
    batch = progress.plan_batches(n_items=num_images, bytes_per_item=_ARRAYS_PER_PIXEL * 8 * nx * ny)
    parts = []
    starts = range(0, num_images, batch)
    for start in progress.progress(starts, desc="STM images") if len(starts) > 1 else starts:
        chunk = {name: backend.asarray(value[start:start + batch]) for name, value in draws.items()}
        chunk["mean_spacing"] = 0.5 * (low + high)  # a number on the host: sets the amorphous grain size
        parts.append(_render(chunk, sampling=sampling, boundary_scale=boundary_scale,
                             disorder_width=disorder_width, tip_blur=tip_blur, line_noise=line_noise,
                             noise=noise))
    xp = backend.xp
    image, labels, disorder = (xp.concatenate([part[i] for part in parts]) for i in range(3))
    masks = labels[:, None] == xp.arange(num_regions)[None, :, None, None]
    kinds = tuple(tuple(lattices[k] for k in row) for row in draws["kind_index"].tolist())
    return STMImages(image, labels, masks, disorder, backend.asarray(draws["spacing"]),
                     backend.asarray(draws["angle"]), kinds, sampling)


def _draw(rng, num_images, num_regions, gpts, lattices, spacing_range, drift):
    """Every random number of the images, on the host, in a fixed order (device-independent)."""
    shape = (num_images, num_regions)
    kind_index = rng.integers(len(lattices), size=shape)
    kind = np.asarray([LATTICES.index(name) for name in lattices])[kind_index]  # index into LATTICES
    spacing = rng.uniform(*spacing_range, size=shape)
    # Grains of one kind are spread over its rotation period, with a random jitter of a quarter of
    # their separation, so that no two grains of one image share their orientation.
    same = kind[:, :, None] == kind[:, None, :]
    earlier = np.tril(np.ones((num_regions, num_regions), dtype=bool), k=-1)
    rank = np.sum(same & earlier, axis=2)
    count = np.sum(same, axis=2)
    jitter = rng.uniform(-0.25, 0.25, size=shape)
    base = rng.uniform(0, 2 * math.pi, size=(num_images, 1))
    angle = base + (rank + jitter) * _PERIOD[kind] / count
    origin = rng.uniform(0, 1, size=shape + (2,))
    return {
        "kind_index": kind_index,
        "kind": kind,
        "spacing": spacing,
        "angle": angle,
        "origin": origin,
        "fields": rng.standard_normal((num_images, num_regions) + gpts),
        "width_field": rng.standard_normal((num_images,) + gpts),
        "amorphous": rng.standard_normal((num_images,) + gpts),
        "drift": rng.normal(0.0, drift, size=(num_images, 2)),
        "lines": rng.standard_normal((num_images, gpts[0])),
        "noise": rng.standard_normal((num_images,) + gpts),
    }


def _smooth(field, sigma):
    """Gaussian smoothing of ``(..., nx, ny)`` with standard deviation ``sigma`` [px], periodic (by FFT)."""
    xp = backend.get_array_module(field)
    fft = backend.fft_module(field)
    kx = fft.fftfreq(field.shape[-2])[:, None]
    ky = fft.fftfreq(field.shape[-1])[None, :]
    kernel = xp.exp(-2 * math.pi**2 * sigma**2 * (kx**2 + ky**2))
    return backend.ifft2(backend.fft2(field) * kernel).real


def _standardise(field, axes=(-2, -1)):
    xp = backend.get_array_module(field)
    centred = field - field.mean(axis=axes, keepdims=True)
    return centred / xp.maximum(centred.std(axis=axes, keepdims=True), 1e-12)


def _gather(values, labels):
    """``values[b, labels[b, i, j]]`` for ``values`` of shape ``(B, R)``: per-pixel grain parameters."""
    xp = backend.get_array_module(values)
    b, nx, ny = labels.shape
    flat = xp.take_along_axis(values, labels.reshape(b, -1), axis=1)
    return flat.reshape(b, nx, ny)


def _render(draws, *, sampling, boundary_scale, disorder_width, tip_blur, line_noise, noise):
    """Images, labels and disorder weights of one batch (all inputs on one device)."""
    fields = draws["fields"]
    xp = backend.get_array_module(fields)
    b, num_regions, nx, ny = fields.shape
    fields = _standardise(_smooth(fields, boundary_scale))
    labels = xp.argmax(fields, axis=1)
    # Distance to the nearest boundary ≈ (largest - second largest field) / |its gradient|.
    top = -xp.sort(-fields, axis=1)
    gap = top[:, 0] - top[:, 1]
    gx = (xp.roll(gap, -1, axis=-2) - xp.roll(gap, 1, axis=-2)) / 2
    gy = (xp.roll(gap, -1, axis=-1) - xp.roll(gap, 1, axis=-1)) / 2
    distance = gap / xp.maximum(xp.sqrt(gx**2 + gy**2), 1e-6)
    if disorder_width > 0:
        # The strip's half-width varies along the boundary between 0.5x and 1.5x its mean.
        width = disorder_width * (0.5 + 1 / (1 + xp.exp(-2 * _standardise(_smooth(draws["width_field"],
                                                                                     boundary_scale / 2)))))
        t = xp.clip(distance / width, 0, 1)
        disorder = 1 - t * t * (3 - 2 * t)  # smoothstep: 1 on the boundary, 0 beyond the strip
    else:
        disorder = xp.zeros_like(distance)

    lattice = _lattice(draws, labels, sampling)
    # Equal mean and contrast in every grain: standardise each over its own pixels.
    onehot = (labels[:, None] == xp.arange(num_regions)[None, :, None, None]).astype(lattice.dtype)
    count = xp.maximum(onehot.sum(axis=(-2, -1)), 1)
    mean = (onehot * lattice[:, None]).sum(axis=(-2, -1)) / count
    variance = (onehot * (lattice[:, None] - mean[..., None, None]) ** 2).sum(axis=(-2, -1)) / count
    lattice = (lattice - _gather(mean, labels)) / xp.sqrt(xp.maximum(_gather(variance, labels), 1e-12))
    # Amorphous contrast: white noise smoothed to the size of a spot (0.17 of the mean spacing).
    spot = 0.17 * draws["mean_spacing"] / sampling
    amorphous = _standardise(_smooth(draws["amorphous"], spot))
    image = (1 - disorder) * lattice + disorder * amorphous

    if tip_blur > 0:
        image = _smooth(image, tip_blur)
    image = image + line_noise * draws["lines"][:, :, None] + noise * draws["noise"]
    return image, labels, disorder


def _lattice(draws, labels, sampling):
    """Sum of the Gaussian spots of every pixel's own grain, at the drifted pixel position."""
    xp = backend.get_array_module(labels)
    b, nx, ny = labels.shape
    kind = _gather(draws["kind"], labels)
    cell = _gather(draws["spacing"], labels) / sampling * xp.asarray(_CELL_SCALE)[kind]  # [px]
    theta = _gather(draws["angle"], labels)
    phi = theta + xp.asarray(_BASIS_ANGLE)[kind]
    a1x, a1y = cell * xp.cos(theta), cell * xp.sin(theta)
    a2x, a2y = cell * xp.cos(phi), cell * xp.sin(phi)
    det = a1x * a2y - a1y * a2x
    width = cell * xp.asarray(_SPOT_WIDTH)[kind]
    # Positions [px] at the time each pixel is scanned: linear drift over the frame, line by line.
    i = xp.arange(nx, dtype=xp.float64)[:, None]
    j = xp.arange(ny, dtype=xp.float64)[None, :]
    time = (i * ny + j) / (nx * ny)
    drift = draws["drift"]
    origin = draws["origin"]
    ox = _gather(origin[..., 0], labels) * a1x + _gather(origin[..., 1], labels) * a2x
    oy = _gather(origin[..., 0], labels) * a1y + _gather(origin[..., 1], labels) * a2y
    x = i + drift[:, 0, None, None] * time - ox
    y = j + drift[:, 1, None, None] * time - oy
    cos, sin = xp.cos(theta), xp.sin(theta)
    cells = xp.asarray(_CELLS)[:, :, None, None, None]  # (9, 2, 1, 1, 1)
    motif = xp.asarray(_MOTIF)
    weights = xp.asarray(_MOTIF_WEIGHT)
    intensity = xp.zeros((b, nx, ny))
    for m in range(_MOTIF.shape[1]):  # the at most 3 spots of a motif
        mx, my = motif[:, m, 0][kind] * cell, motif[:, m, 1][kind] * cell  # in the unrotated cell [px]
        rx = x - (cos * mx - sin * my)
        ry = y - (sin * mx + cos * my)
        # Fractional coordinates in the basis (a1, a2), rounded to the nearest lattice point.
        n1 = xp.round((a2y * rx - a2x * ry) / det) + cells[:, 0]
        n2 = xp.round((-a1y * rx + a1x * ry) / det) + cells[:, 1]
        dx = rx - n1 * a1x - n2 * a2x
        dy = ry - n1 * a1y - n2 * a2y
        spots = xp.exp(-(dx**2 + dy**2) / (2 * width**2)).sum(axis=0)
        intensity += weights[:, m][kind] * spots
    return intensity


def region_masks(labels, num_regions: int):
    """One boolean mask per region from integer labels.

    Parameters
    ----------
    labels : (..., nx, ny) array of int
        Region index of every pixel, ``0 .. num_regions - 1``.
    num_regions : int

    Returns
    -------
    (..., num_regions, nx, ny) ndarray, bool
        On the selected device.
    """
    labels = checks.check_array(labels, "labels", min_ndim=2, real=True)
    num_regions = checks.check_count(num_regions, "num_regions")
    xp = backend.get_array_module(labels)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must hold integers, got dtype {labels.dtype}")
    shape = (1,) * (labels.ndim - 2)
    return labels[..., None, :, :] == xp.arange(num_regions).reshape(shape + (num_regions, 1, 1))
