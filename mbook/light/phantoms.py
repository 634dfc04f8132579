"""Synthetic samples for the optics pages: cells, gratings and a bar resolution target.

Every sample is a complex transmission ``t(r) = exp(i φ(r) - a(r))`` on a 2D
grid indexed ``[x, y]`` (:mod:`mbook.core.grids`), lengths in µm; random ones
take a ``seed``. Samples are made on the selected device; random layouts are
drawn on the host from the seed (the same sample on every device) and the
drawing is done on the device.

Examples
--------
>>> from mbook.light import phantoms
>>> t = phantoms.cells((64, 64), sampling=1.0, seed=0)
>>> bool((abs(t) <= 1 + 1e-12).all())
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, grids


def _smooth_disc(r, radius, edge):
    """1 inside, 0 outside, a tanh edge of width ``edge``."""
    xp = backend.get_array_module(r)
    return 0.5 * (1 - xp.tanh((r - radius) / edge))


def cells(gpts, *, sampling, seed, n_cells=10, radius=(6.0, 14.0), phase=1.2, absorption=0.15,
          granules=40):
    """Unstained cells: soft elliptical phase objects with nuclei and small granules.

    Parameters
    ----------
    gpts : (int, int)
        Grid points.
    sampling : float
        Pixel size [µm].
    seed : int
        Seed of the random layout.
    n_cells : int
        Number of cells.
    radius : (float, float)
        Range of cell radii [µm].
    phase : float
        Peak phase delay of a cell body [rad]; nuclei add half of it.
    absorption : float
        Peak amplitude attenuation ``a`` (``|t| = exp(-a)``) of the nuclei.
    granules : int
        Number of sub-micron granules (fine detail for resolution).

    Returns
    -------
    (nx, ny) ndarray, complex128
        On the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    n_cells = checks.check_count(n_cells, "n_cells", minimum=0)
    granules = checks.check_count(granules, "granules", minimum=0)
    radius = checks.check_positive(radius, "radius", 2)
    if radius[0] > radius[1]:
        raise ValueError(f"radius must be (smallest, largest) with smallest <= largest [µm], got {radius!r}")
    phase = checks.check_number(phase, "phase", units="rad")
    absorption = checks.check_positive_number(absorption, "absorption", allow_zero=True)
    rng = checks.rng(seed)  # the layout is drawn on the host: the same sample on every device
    xp = backend.xp
    x, y = grids.coordinates(grid, xp=xp)
    X, Y = x[:, None], y[None, :]
    extent = grid.extent
    phi = xp.zeros(grid.gpts)
    att = xp.zeros(grid.gpts)
    # A few dozen items, each a few passes over the grid: a loop of small kernels is cheaper on the CPU
    # than one batch with an item axis (its temporaries leave the cache), and cheap enough on a GPU.
    for _ in range(n_cells):
        cx, cy = rng.uniform(0.1, 0.9) * extent[0], rng.uniform(0.1, 0.9) * extent[1]
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, math.pi)
        u = (X - cx) * math.cos(angle) + (Y - cy) * math.sin(angle)
        v = -(X - cx) * math.sin(angle) + (Y - cy) * math.cos(angle)
        r = xp.hypot(u / a, v / b) * a
        body = _smooth_disc(r, a, 0.6)
        dome = xp.sqrt(xp.clip(1 - (r / a) ** 2, 0, 1))
        phi += phase * body * (0.4 + 0.6 * dome)
        nucleus = _smooth_disc(xp.hypot(u - 0.2 * a, v), 0.35 * a, 0.4)
        phi += 0.5 * phase * nucleus
        att += absorption * nucleus
    for _ in range(granules):
        cx, cy = rng.uniform(0, extent[0]), rng.uniform(0, extent[1])
        phi += 0.4 * phase * _smooth_disc(xp.hypot(X - cx, Y - cy), rng.uniform(0.3, 0.8), 0.15)
    return xp.exp(1j * phi - att)


class Patch(NamedTuple):
    """A group of bars in a resolution target: where it is, its period [µm], its direction."""

    x: slice
    y: slice
    period: float
    axis: int


class Target(NamedTuple):
    """A bar target: ``transmission`` (nx, ny), on the selected device, and its ``patches``."""

    transmission: object  # (nx, ny) complex128 on the selected device
    patches: list


def resolution_target(gpts, *, sampling, periods, contrast=0.7, patch=None):
    """Bar groups of given periods, each along x and along y (an amplitude target).

    Square-wave bars (duty cycle 1/2) of transmission ``1 - contrast`` on a
    clear background fill square patches laid out on a grid, one patch per
    period and direction.

    Parameters
    ----------
    gpts : (int, int)
        Grid points.
    sampling : float
        Pixel size [µm].
    periods : sequence of float
        Bar periods [µm].
    contrast : float
        Amplitude modulation of the bars, in (0, 1].
    patch : float, optional
        Side of a patch [µm]; default fills the field.

    Returns
    -------
    Target
        The transmission is on the selected device; the patches are slices.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    if isinstance(periods, (str, bytes)) or np.ndim(periods) != 1 or len(periods) == 0:
        raise ValueError(f"periods must be a non-empty sequence of bar periods [µm], got {periods!r}")
    periods = [checks.check_positive(p, "periods", 1)[0] for p in periods]
    contrast = checks.check_number(contrast, "contrast", lower=0, upper=1, lower_inclusive=False)
    if patch is not None:
        patch = checks.check_positive_number(patch, "patch")
    count = 2 * len(periods)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    size = patch or min(e / max(columns, rows) for e in grid.extent)
    pixels = int(size / grid.sampling[0] * 0.8)  # leave clear margins between patches
    xp = backend.xp
    t = xp.ones(grid.gpts, complex)
    x = xp.arange(pixels) * grid.sampling[0]
    patches = []
    for number in range(count):
        period, axis = periods[number // 2], number % 2
        row, column = divmod(number, columns)
        x0 = int((column + 0.1) * size / grid.sampling[0])
        y0 = int((row + 0.1) * size / grid.sampling[1])
        if x0 + pixels > grid.gpts[0] or y0 + pixels > grid.gpts[1]:
            raise ValueError(f"{count} patches of {size:g} µm do not fit in the field {grid.extent}")
        bars = xp.where((x / period) % 1 < 0.5, 1 - contrast, 1.0)
        block = bars[:, None] if axis == 0 else bars[None, :]  # broadcast over the patch
        region = Patch(slice(x0, x0 + pixels), slice(y0, y0 + pixels), period, axis)
        t[region.x, region.y] = block
        patches.append(region)
    return Target(t, patches)


def bar_contrast(image, patch: Patch, *, sampling, upsampling=1):
    """Modulation of an image at a patch's bar frequency: ``2 |<I e^{-2πi x/p}>| / <I>``.

    For square bars of transmission 1 and ``1 - c`` seen perfectly in
    amplitude this is ``(4/π) c / (2 - c)``; a period the system cannot resolve
    gives about 0.

    Parameters
    ----------
    image : (nx, ny) array_like, real
        An image of the target (intensity or amplitude).
    patch : Patch
        From :func:`resolution_target`, in the target's pixels.
    sampling : float
        Pixel size of the target [µm].
    upsampling : int
        Target pixels per image pixel (e.g. for a camera image).

    Returns
    -------
    float
    """
    image = checks.check_array(image, "image", ndim=2, real=True)
    if not isinstance(patch, Patch):
        raise TypeError(f"patch must be a Patch (from resolution_target(...).patches), got {patch!r:.60}")
    sampling = checks.check_positive_number(sampling, "sampling")
    xp = backend.get_array_module(image)
    f = checks.check_count(upsampling, "upsampling")
    region = image[patch.x.start // f:patch.x.stop // f, patch.y.start // f:patch.y.stop // f].astype(xp.float64)
    step = sampling * f
    whole = int(round(math.floor(region.shape[patch.axis] * step / patch.period) * patch.period / step))
    region = region[:whole] if patch.axis == 0 else region[:, :whole]  # a whole number of periods
    coordinate = xp.arange(region.shape[patch.axis]) * step
    wave = xp.exp(-2j * math.pi * coordinate / patch.period)
    wave = wave[:, None] if patch.axis == 0 else wave[None, :]
    return float(2 * abs(xp.mean(region * wave)) / xp.mean(region))
