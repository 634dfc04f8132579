"""Peaks in images: atomic-column positions with sub-pixel precision.

Local maxima are found with a 3×3 maximum filter (periodic boundary, as for
a scan of a periodic cell), thinned to ``min_distance`` from the highest
down, and refined by fitting a quadratic to the 3×3
neighbourhood of each: along each axis the vertex of the parabola through
three samples, ``δ = (f₋ - f₊) / (2 (f₋ - 2f₀ + f₊))`` pixels.

Examples
--------
>>> import numpy as np
>>> from mbook.electron import peaks
>>> x = np.arange(32) * 0.2
>>> image = np.exp(-((x[:, None] - 2.13) ** 2 + (x[None, :] - 3.9) ** 2) / 0.18)
>>> peaks.find_peaks(image, sampling=0.2, min_distance=1.0).round(2).tolist()
[[2.13, 3.9]]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mbook.core import backend, checks, grids


def find_peaks(image, *, sampling, min_distance, threshold=0.5):
    """Sub-pixel positions of the local maxima of a 2D image.

    Parameters
    ----------
    image : (nx, ny) array_like, real
        Image indexed [x, y] (NumPy or CuPy).
    sampling : float or (float, float)
        Pixel size [Å].
    min_distance : float
        Peaks closer than this keep only the higher one [Å].
    threshold : float
        Keep peaks above ``min + threshold * (max - min)`` of the image.

    Returns
    -------
    (n, 2) ndarray, float64
        Peak positions [Å], x then y, sorted by x then y.

    Raises
    ------
    ValueError
        Non-finite or non-2D image, threshold outside [0, 1), min_distance <= 0.
    """
    image = np.asarray(backend.asnumpy(image), dtype=float)
    if image.ndim != 2 or not np.isfinite(image).all():
        raise ValueError(f"image must be a finite 2D array, got shape {image.shape}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    grid = grids.make_grid(gpts=image.shape, sampling=sampling)
    min_distance = checks.check_positive(min_distance, "min_distance", 1)[0]
    level = image.min() + threshold * (image.max() - image.min())
    is_peak = (image == ndimage.maximum_filter(image, size=3, mode="wrap")) & (image > level)
    candidates = np.argwhere(is_peak)
    candidates = candidates[np.argsort(-image[tuple(candidates.T)], kind="stable")]
    # Non-maximum suppression: walk down in height, keep a peak unless a kept one is too close.
    kept = []
    for index in candidates:
        position = _refine(image, *index) * np.asarray(grid.sampling)
        if not kept or match_positions(kept, position[None], extent=grid.extent)[0] >= min_distance:
            kept.append(position)
    found = np.array(kept).reshape(-1, 2)
    return found[np.lexsort((found[:, 1], found[:, 0]))]


def _refine(image, i, j):
    """Vertex of the parabolas through the 3 samples around (i, j) along x and y [pixels]."""
    nx, ny = image.shape
    offsets = []
    for f_minus, f0, f_plus in (
        (image[(i - 1) % nx, j], image[i, j], image[(i + 1) % nx, j]),
        (image[i, (j - 1) % ny], image[i, j], image[i, (j + 1) % ny]),
    ):
        curvature = f_minus - 2 * f0 + f_plus
        offsets.append(0.5 * (f_minus - f_plus) / curvature if curvature < 0 else 0.0)
    return np.array([i + offsets[0], j + offsets[1]])


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
        Nearest-neighbour distance for each expected position [Å].
    """
    found, expected = np.asarray(found, float), np.asarray(expected, float)
    if found.size == 0:
        raise ValueError("no peaks were found to match")
    delta = expected[:, None, :] - found[None, :, :]
    if extent is not None:
        period = np.asarray(extent, float)
        delta -= period * np.round(delta / period)
    return np.sqrt((delta**2).sum(-1)).min(axis=1)


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
        Positions of the minima, in the units of ``x``.
    """
    from scipy.signal import argrelmin

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"x and y must be finite 1D arrays of one length, got shapes {x.shape}, {y.shape}")
    if smooth:
        y = ndimage.gaussian_filter1d(y, smooth)
    found = argrelmin(y, order=order)[0]
    found = found[(found > 0) & (found < len(y) - 1)]
    f_minus, f0, f_plus = y[found - 1], y[found], y[found + 1]
    offset = 0.5 * (f_minus - f_plus) / (f_minus - 2 * f0 + f_plus)
    return x[found] + offset * (x[1] - x[0])
