"""Real- and reciprocal-space grids, with the book's conventions stated once.

Conventions (every module of :mod:`mbook` follows them)
--------------------------------------------------------
- A grid is ``gpts`` points (``(nx, ny)`` in 2D) spaced by ``sampling``
  [Å for electrons, any one length unit such as µm for light]; its
  ``extent`` is ``gpts * sampling``. Give any two of the three.
- Arrays are indexed ``[x, y]``: axis 0 runs along x. Plot with
  ``imshow(a.T, origin="lower")`` (:mod:`mbook.core.plotting` does this).
- Real-space coordinates start at the cell's corner: ``x_j = j * dx`` for
  ``j = 0 .. n-1``, as for atoms in a periodic cell. Centred coordinates
  (``centered=True``) put 0 at index ``n // 2``, the pixel that ``fftshift``
  moves the origin to.
- Everything is periodic with period ``extent`` (the FFT assumes it).
- Spatial frequencies ``k`` are in cycles per length [1/Å], without a 2π:
  a scattering angle is ``theta = wavelength * k``. Reciprocal arrays are kept
  in FFT order (zero frequency at index 0, as :func:`numpy.fft.fftfreq`);
  ``fftshift`` is for display only.
- The forward FFT is unnormalised and the inverse carries ``1/N``, so
  Parseval reads ``sum |psi|^2 = sum |fft(psi)|^2 / N``.

Examples
--------
>>> from mbook.core.grids import make_grid, spatial_frequencies
>>> grid = make_grid(gpts=(4, 8), extent=(2.0, 2.0))
>>> grid.sampling
(0.5, 0.25)
>>> [round(float(k), 3) for k in spatial_frequencies(grid)[0]]
[0.0, 0.5, -1.0, -0.5]
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks
from mbook.core.checks import check_gpts, check_positive


class Grid(NamedTuple):
    """A regular grid: number of points and spacing along each axis.

    Attributes
    ----------
    gpts : tuple of int
        Number of grid points along each axis.
    sampling : tuple of float
        Spacing of the points along each axis [length, e.g. Å].
    """

    gpts: tuple[int, ...]
    sampling: tuple[float, ...]

    @property
    def extent(self) -> tuple[float, ...]:
        """Size of the periodic cell along each axis, ``gpts * sampling`` [length]."""
        return tuple(n * d for n, d in zip(self.gpts, self.sampling))

    @property
    def ndim(self) -> int:
        return len(self.gpts)

    @property
    def reciprocal_sampling(self) -> tuple[float, ...]:
        """Spacing of the spatial frequencies, ``1 / extent`` [1/length]."""
        return tuple(1.0 / e for e in self.extent)


def make_grid(*, gpts=None, sampling=None, extent=None, ndim: int | None = None) -> Grid:
    """Build a :class:`Grid` from any two of ``gpts``, ``sampling`` and ``extent``.

    Parameters
    ----------
    gpts : int or sequence of int, optional
        Number of grid points per axis.
    sampling : float or sequence of float, optional
        Grid spacing per axis [length, e.g. Å].
    extent : float or sequence of float, optional
        Cell size per axis [length, e.g. Å].
    ndim : int, optional
        Number of axes when every given value is a scalar (default: the
        length of the first sequence given, else 2).

    Returns
    -------
    Grid

    Raises
    ------
    ValueError
        If fewer than two are given, a value is out of range, the three
        disagree, or ``extent / sampling`` is not a whole number of points
        (the grid is never resized silently: the message gives the nearest
        ``gpts`` to pass instead).
    """
    if ndim is not None:
        checks.check_count(ndim, "ndim")
    given = {k: v for k, v in (("gpts", gpts), ("sampling", sampling), ("extent", extent)) if v is not None}
    if len(given) < 2:
        raise ValueError(f"give two of gpts, sampling and extent; got only {sorted(given) or 'none'}")
    lengths = {name: len(v) for name, v in given.items() if np.ndim(v) == 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"gpts, sampling and extent must have the same number of axes, got {lengths}")
    if ndim is None:
        ndim = next(iter(lengths.values()), 2)
    if gpts is not None:
        gpts = check_gpts(gpts, ndim)
    if sampling is not None:
        sampling = check_positive(sampling, "sampling", ndim)
    if extent is not None:
        extent = check_positive(extent, "extent", ndim)

    if gpts is None:
        ratio = [e / d for e, d in zip(extent, sampling)]
        if any(abs(r - round(r)) > 1e-6 * max(r, 1.0) or round(r) < 1 for r in ratio):
            suggestion = tuple(max(1, math.ceil(r - 1e-9)) for r in ratio)
            raise ValueError(
                f"extent/sampling = {tuple(round(r, 4) for r in ratio)} is not a whole number of grid points; "
                f"pass gpts={suggestion} with extent={extent} "
                f"(sampling {tuple(round(e / n, 6) for e, n in zip(extent, suggestion))}) instead"
            )
        gpts = tuple(int(round(r)) for r in ratio)
    elif sampling is None:
        sampling = tuple(e / n for e, n in zip(extent, gpts))
    elif extent is not None:
        implied = tuple(n * d for n, d in zip(gpts, sampling))
        if not np.allclose(implied, extent, rtol=1e-9, atol=0):
            raise ValueError(f"gpts * sampling = {implied} disagrees with extent = {extent}; give two of the three")
    return Grid(gpts, sampling)


def coordinates(grid: Grid, *, centered: bool = False, xp=None) -> tuple:
    """Real-space coordinates of the grid points, one 1D array per axis [length].

    Parameters
    ----------
    grid : Grid
    centered : bool
        False: ``x_j = j * dx`` (origin at the corner). True: ``x_j = (j - n//2) * dx``
        (origin at index ``n // 2``).
    xp : module, optional
        Array module (default: the current backend's).

    Returns
    -------
    tuple of (n_i,) ndarray, float64
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    return tuple(
        (xp.arange(n, dtype=xp.float64) - (n // 2 if centered else 0)) * d
        for n, d in zip(grid.gpts, grid.sampling)
    )


def spatial_frequencies(grid: Grid, *, xp=None) -> tuple:
    """Spatial frequencies of the grid in FFT order, one 1D array per axis [1/length].

    ``k_j = fftfreq(n, dx)[j]``: cycles per unit length, no 2π. The largest
    frequency reached is ``1 / (2 dx)`` (Nyquist).

    Returns
    -------
    tuple of (n_i,) ndarray, float64
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    return tuple(xp.fft.fftfreq(n, d) for n, d in zip(grid.gpts, grid.sampling))


def frequency_squared(grid: Grid, *, xp=None):
    """``|k|^2`` on the full reciprocal grid, in FFT order [1/length^2].

    Returns
    -------
    (n_0, n_1, ...) ndarray, float64
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    k2 = None
    for axis, k in enumerate(spatial_frequencies(grid, xp=xp)):
        shape = [1] * grid.ndim
        shape[axis] = k.size
        term = k.reshape(shape) ** 2
        k2 = term if k2 is None else k2 + term
    return k2


def _centre_index(n: int, m: int, xp):
    """Indices of the ``m`` lowest frequencies of an FFT-ordered axis of ``n`` points (``m <= n``).

    ``fftfreq(m) m mod n``, made with the array module of the data so that a
    crop in a loop copies no index array over.
    """
    index = xp.arange(m)
    return xp.where(index < (m + 1) // 2, index, index - m) % n


@functools.lru_cache(maxsize=64)
def _crop_index(n: tuple, m: tuple, xp):
    """Index pair ``(rows[:, None], columns[None, :])`` of the ``m`` lowest frequencies of ``n`` (FFT order).

    Made once per shape and array module and kept on the device: a crop or
    pad in a loop (one per LED and iteration in EPRY) is then one gather or
    scatter, with no index array made or copied. Never written to.
    """
    rows, columns = (_centre_index(a, b, xp) for a, b in zip(n, m))
    return rows[:, None], columns[None, :]


def _crop_shape(gpts, shape, name):
    gpts = check_gpts(gpts, 2)
    if any(m > n for m, n in zip(gpts, shape[-2:])):
        raise ValueError(f"{name} {gpts} must not exceed the spectrum's last two axes {tuple(shape[-2:])}")
    return gpts


def crop_spectrum(spectrum, gpts):
    """The ``gpts`` lowest frequencies of FFT-ordered spectra: ``(..., nx, ny) -> (..., mx, my)``.

    Frequency ``k`` of the input is frequency ``k`` of the output (FFT order
    kept, zero frequency first). The adjoint of :func:`pad_spectrum`. Called
    from outside mbook it refuses NaN and inf; mbook's own iterations (EPRY,
    Fourier ptychography) skip that test, which would copy to the host.

    Parameters
    ----------
    spectrum : (..., nx, ny) array_like
        In FFT order.
    gpts : int or (int, int)
        Frequencies kept per axis, at most ``(nx, ny)``.

    Returns
    -------
    (..., mx, my) ndarray
        On the selected device.
    """
    spectrum = checks.check_array(spectrum, "spectrum", min_ndim=2, finite=backend.called_from_outside())
    mx, my = _crop_shape(gpts, spectrum.shape, "gpts")
    xp = backend.get_array_module(spectrum)
    return spectrum[(Ellipsis,) + _crop_index(tuple(spectrum.shape[-2:]), (mx, my), xp)]


def pad_spectrum(spectrum, gpts):
    """Zero-pad FFT-ordered spectra to ``gpts`` frequencies: ``(..., mx, my) -> (..., nx, ny)``.

    The adjoint of :func:`crop_spectrum` (and its right inverse). NaN and inf
    are refused as in :func:`crop_spectrum`.

    Parameters
    ----------
    spectrum : (..., mx, my) array_like
        In FFT order.
    gpts : int or (int, int)
        Frequencies of the result per axis, at least ``(mx, my)``.

    Returns
    -------
    (..., nx, ny) ndarray
        On the selected device.
    """
    spectrum = checks.check_array(spectrum, "spectrum", min_ndim=2, finite=backend.called_from_outside())
    nx, ny = check_gpts(gpts, 2)
    if spectrum.shape[-2] > nx or spectrum.shape[-1] > ny:
        raise ValueError(f"gpts {(nx, ny)} must not be smaller than the spectrum's last two axes "
                         f"{tuple(spectrum.shape[-2:])}")
    xp = backend.get_array_module(spectrum)
    out = xp.zeros(spectrum.shape[:-2] + (nx, ny), spectrum.dtype)
    out[(Ellipsis,) + _crop_index((nx, ny), tuple(spectrum.shape[-2:]), xp)] = spectrum
    return out


def fourier_crop(field, gpts):
    """Band-limited resampling onto fewer points: keep the ``gpts`` lowest frequencies of ``field``.

    The field on a coarser grid of the same extent, its values those of the
    band-limited interpolant (so fields computed on different grids can be
    compared on the band they share).

    Parameters
    ----------
    field : (..., nx, ny) array_like
        Real or complex samples.
    gpts : int or (int, int)
        Points of the result per axis, at most ``(nx, ny)``.

    Returns
    -------
    (..., mx, my) ndarray, complex
        On the selected device.
    """
    field = checks.check_array(field, "field", min_ndim=2)
    mx, my = _crop_shape(gpts, field.shape, "gpts")
    scale = (mx * my) / (field.shape[-2] * field.shape[-1])  # unnormalised FFTs: keep the values' scale
    return backend.ifft2(crop_spectrum(backend.fft2(field), (mx, my))) * scale


def radial_average(values, grid: Grid, *, num_bins=None):
    """Average of a 2D reciprocal-space array over rings of constant ``|k|``.

    Parameters
    ----------
    values : (nx, ny) array_like, real
        In FFT order (e.g. a power spectrum ``|fft2(image)|^2``).
    grid : Grid
        The real-space grid of the image.
    num_bins : int, optional
        Number of rings; default ``min(nx, ny) // 2``, each one reciprocal
        pixel wide, up to the Nyquist frequency of the finer axis.

    Returns
    -------
    k : (num_bins,) ndarray
        Ring centres [1/length], on the selected device.
    average : (num_bins,) ndarray
        Mean of ``values`` in each ring (NaN where a ring is empty), on the selected device.
    """
    values = checks.check_array(values, "values", ndim=2, real=True)
    checks.check_grid(grid)
    if values.shape != tuple(grid.gpts) or grid.ndim != 2:
        raise ValueError(f"values shape {values.shape} must equal the 2D grid's gpts {grid.gpts}")
    num_bins = min(grid.gpts) // 2 if num_bins is None else checks.check_count(num_bins, "num_bins")
    xp = backend.get_array_module(values)
    k_max = min(1 / (2 * d) for d in grid.sampling)
    edges = xp.linspace(0, k_max, num_bins + 1)
    total, count = _ring_sums(xp.sqrt(frequency_squared(grid, xp=xp)), values, edges)
    average = xp.where(count > 0, total / xp.maximum(count, 1), xp.nan)
    return 0.5 * (edges[1:] + edges[:-1]), average


def radial_profile(image, *, sampling, bin_width, max_radius=None):
    """Mean of a real-space image over rings about the field centre (pixel n // 2).

    Parameters
    ----------
    image : (N, N) array_like, real
    sampling : float
        Pixel size [length, e.g. µm or Å].
    bin_width : float
        Width of each ring [same unit].
    max_radius : float, optional
        Largest radius; default half the field (the inscribed circle).

    Returns
    -------
    radii, profile : (n_bins,) ndarray
        Ring centres and the mean of ``image`` in each (0 where a ring is
        empty), on the selected device.
    """
    image = checks.check_array(image, "image", ndim=2, real=True)
    grid = make_grid(gpts=image.shape, sampling=sampling)
    bin_width = checks.check_positive_number(bin_width, "bin_width")
    max_radius = min(grid.extent) / 2 if max_radius is None else checks.check_positive_number(max_radius, "max_radius")
    xp = backend.get_array_module(image)
    x, y = coordinates(grid, centered=True, xp=xp)
    edges = xp.arange(0, max_radius + 1e-9, bin_width)
    if edges.size < 2:
        raise ValueError(f"bin_width {bin_width} must be <= max_radius {max_radius}: no ring fits")
    sums, counts = _ring_sums(xp.hypot(x[:, None], y[None, :]), image, edges)
    return 0.5 * (edges[1:] + edges[:-1]), sums / xp.maximum(counts, 1)


def _ring_sums(radius, values, edges):
    """Sum of ``values`` and number of pixels in each ring ``edges[i] <= radius < edges[i + 1]``."""
    xp = backend.get_array_module(values)
    n_rings = len(edges) - 1
    # Pixels outside every ring go to an extra bin (index n_rings), dropped after: no boolean indexing,
    # which would make a GPU wait for the count.
    index = xp.digitize(radius.ravel(), edges) - 1
    index = xp.where((index < 0) | (index >= n_rings), n_rings, index)
    sums = xp.bincount(index, weights=values.ravel().astype(xp.float64), minlength=n_rings + 1)
    counts = xp.bincount(index, minlength=n_rings + 1)
    return sums[:n_rings], counts[:n_rings]
