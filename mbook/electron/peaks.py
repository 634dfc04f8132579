"""Peaks in images: atomic-column positions with sub-pixel precision.

Local maxima are found with a 3×3 maximum filter (periodic boundary, as for
a scan of a periodic cell), thinned to ``min_distance`` from the highest
down, and refined by fitting a quadratic to the 3×3
neighbourhood of each: along each axis the vertex of the parabola through
three samples, ``δ = (f₋ - f₊) / (2 (f₋ - 2f₀ + f₊))`` pixels.

The filters run on the device of the image (SciPy's or CuPy's
:mod:`~scipy.ndimage` and :mod:`~scipy.signal`, through
:func:`mbook.core.backend.scipy_module`); the thinning walks down the peaks one
at a time, a sequential step done on the host on the few candidates (their
positions and heights, one copy). Results come back on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.electron import peaks
>>> x = np.arange(32) * 0.2
>>> image = np.exp(-((x[:, None] - 2.13) ** 2 + (x[None, :] - 3.9) ** 2) / 0.18)
>>> backend.asnumpy(peaks.find_peaks(image, sampling=0.2, min_distance=1.0)).round(2).tolist()
[[2.13, 3.9]]
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks, grids


def find_peaks(image, *, sampling, min_distance, threshold=0.5):
    """Sub-pixel positions of the local maxima of a 2D image.

    Parameters
    ----------
    image : (nx, ny) array_like, real
        Image indexed [x, y].
    sampling : float or (float, float)
        Pixel size [Å].
    min_distance : float
        Peaks closer than this keep only the higher one [Å].
    threshold : float
        Keep peaks above ``min + threshold * (max - min)`` of the image.

    Returns
    -------
    (n, 2) ndarray, float64
        Peak positions [Å], x then y, sorted by x then y, on the selected device.

    Raises
    ------
    ValueError
        Non-finite or non-2D image, threshold outside [0, 1), min_distance <= 0.
    """
    image = checks.check_array(image, "image", ndim=2, real=True).astype(np.float64)
    threshold = checks.check_number(threshold, "threshold", lower=0, upper=1, upper_inclusive=False)
    grid = grids.make_grid(gpts=image.shape, sampling=sampling)
    min_distance = checks.check_positive(min_distance, "min_distance", 1)[0]
    xp = backend.get_array_module(image)
    ndimage = backend.scipy_module("ndimage", image)
    level = image.min() + threshold * (image.max() - image.min())
    is_peak = (image == ndimage.maximum_filter(image, size=3, mode="wrap")) & (image > level)
    i, j = xp.nonzero(is_peak)
    # Sub-pixel refinement of every candidate at once, on the device.
    position = xp.stack([i + _vertex(image, i, j, axis=0), j + _vertex(image, i, j, axis=1)], axis=-1)
    position = position * xp.asarray(grid.sampling)
    # Non-maximum suppression walks down in height, one peak after another: on the host (one copy).
    position, height = backend.asnumpy(position), backend.asnumpy(image[i, j])
    period = np.asarray(grid.extent)
    kept = []
    for index in np.argsort(-height, kind="stable"):
        candidate = position[index]
        if not kept or _distances(np.asarray(kept), candidate[None], period, np).min() >= min_distance:
            kept.append(candidate)
    found = np.array(kept).reshape(-1, 2)
    return backend.asarray(found[np.lexsort((found[:, 1], found[:, 0]))])


def _vertex(image, i, j, axis):
    """Offset of the parabola's vertex through the 3 samples around (i, j) along ``axis`` [pixels]."""
    n = image.shape[axis]
    f0 = image[i, j]
    if axis == 0:
        f_minus, f_plus = image[(i - 1) % n, j], image[(i + 1) % n, j]
    else:
        f_minus, f_plus = image[i, (j - 1) % n], image[i, (j + 1) % n]
    xp = backend.get_array_module(image)
    curvature = f_minus - 2 * f0 + f_plus
    # A flat top (curvature >= 0) has no vertex to move to: keep the pixel.
    return xp.where(curvature < 0, 0.5 * (f_minus - f_plus) / xp.where(curvature < 0, curvature, -1.0), 0.0)


def _distances(found, expected, period, xp):
    """Nearest-neighbour distance of each expected position to the found ones (minimum image if ``period``)."""
    delta = expected[:, None, :] - found[None, :, :]
    if period is not None:
        delta = delta - period * xp.round(delta / period)
    return xp.sqrt((delta**2).sum(-1)).min(axis=1)


def match_positions(found, expected, *, extent=None):
    """Distance from each expected position to the nearest found one [Å].

    Parameters
    ----------
    found, expected : (n, 2), (m, 2) array_like
        Positions [Å].
    extent : (float, float), optional
        Period of the cell: distances are taken with the minimum-image rule.

    Returns
    -------
    (m,) ndarray
        Nearest-neighbour distance for each expected position [Å], on the selected device.
    """
    found = checks.check_array(found, "found", ndim=2, real=True).astype(np.float64)
    expected = checks.check_array(expected, "expected", ndim=2, real=True).astype(np.float64)
    if found.shape[1] != 2 or expected.shape[1] != 2:
        raise ValueError(f"found and expected must be (n, 2) positions [Å], got {found.shape}, {expected.shape}")
    xp = backend.get_array_module(found)
    period = None if extent is None else xp.asarray(checks.check_positive(extent, "extent", 2))
    return _distances(found, expected, period, xp)


def profile_minima(x, y, *, order=3, smooth=1.0):
    """Local minima of a sampled 1D profile, refined by parabolic interpolation.

    Parameters
    ----------
    x : (n,) array_like
        Evenly spaced abscissae (e.g. spatial frequency [1/Å]).
    y : (n,) array_like
        Profile (e.g. the logarithm of a radially averaged power spectrum).
    order : int
        A minimum must be the lowest within ``order`` samples on each side.
    smooth : float
        Width of the Gaussian smoothing applied first [samples]; 0 for none.

    Returns
    -------
    ndarray
        Positions of the minima, in the units of ``x``, on the selected device.
    """
    x = checks.check_array(x, "x", ndim=1, real=True).astype(np.float64)
    y = checks.check_array(y, "y", ndim=1, real=True).astype(np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y must be finite 1D arrays of one length, got shapes {x.shape}, {y.shape}")
    order = checks.check_count(order, "order")
    smooth = checks.check_positive_number(smooth, "smooth", allow_zero=True)
    if smooth:
        y = backend.scipy_module("ndimage", y).gaussian_filter1d(y, smooth)
    found = backend.scipy_module("signal", y).argrelmin(y, order=order)[0]
    found = found[(found > 0) & (found < len(y) - 1)]
    f_minus, f0, f_plus = y[found - 1], y[found], y[found + 1]
    offset = 0.5 * (f_minus - f_plus) / (f_minus - 2 * f0 + f_plus)
    return x[found] + offset * (x[1] - x[0])
