"""The kernels of a PRISM scan: the probes' coefficients, their windows, batches and combined waves.

:func:`mbook.electron.prism.scan` checks its inputs once and plans the scan's
memory; these kernels do the arithmetic on what it checked (device arrays on
the S-matrix's device, host index arrays), with no checks of their own.

- The combination: each beam's weight on the probe aperture
  (:func:`beam_weights`), each probe's coefficients
  ``c_k(r_0) = w_k e^{-2πi k·r_0}`` (:func:`coefficients`), and, for a grid of
  probes, the sum over beams factorised column by column
  (:func:`columns`, :func:`product`, :func:`combine_on_grid`).
- The windows (``f > 1``): the pixel each probe's window is centred on
  (:func:`window_centres`), the probes grouped into batches that lie close
  together (:func:`tiles`), the box of beams that holds a batch's windows
  (:func:`box_bytes`) and the combined waves on each window (:func:`window_waves`).
- The far field (``f = 1``): the beams' Fourier transforms on the pixels the
  detectors read (:func:`far_fields`), combined there instead of in real space.

Examples
--------
>>> import numpy as np
>>> from mbook.electron import prism_scan
>>> order, xs, ys = prism_scan.product(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 2.0], [0.0, 2.0]]))
>>> order.tolist(), xs.tolist(), ys.tolist()
([1, 3, 0, 2], [0.0, 1.0], [0.0, 2.0])
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, grids


#: Most probes combined at once on the CPU (a batch's windows lie close together: they share a compact box
#: of the S-matrix, which stays near the core's cache).
BATCH = 64
#: On a GPU: launch overhead, not cache, sets the size (~240 array operations per batch, each a kernel
#: launch), so batches are as large as the memory budget allows, up to this many probes.
GPU_BATCH = 1024

#: Fewest multiply-adds saved (a factor) for which a grid of probes is combined column by column
#: (:func:`combine_on_grid`): its products are short (a column's beams, a tile's rows) and run at a
#: fraction of BLAS's speed on one long product. Measured on the CPU: 2.3x faster at f = 1 (350 beams
#: in 21 columns, 8 x 8 probes: 5.4x fewer products), no faster at f = 2 (89 beams, 11 columns: 4x).
FACTORISED_GAIN = 5


def beam_weights(spectrum, beams, grid, window):
    """Each beam's weight ``A(k) e^{-iχ(k)} / norm`` and frequencies ``k_x, k_y`` [1/Å], ``(n_beams,)`` each.

    Normalised to unit current on the window. A kernel: no checks (on what
    :func:`mbook.electron.prism.scan` checked), on the inputs' device.

    Parameters
    ----------
    spectrum : (nx, ny) ndarray, complex
        The probe's aperture times its aberration phase on the full grid (FFT order).
    beams : (n_beams, 2) ndarray, int
        FFT-order indices ``(i, j)`` of the beams, on ``spectrum``'s device.
    grid : Grid
        The full grid [Å].
    window : tuple of int
        Gpts of the window ``(wx, wy)``.

    Returns
    -------
    tuple of (n_beams,) ndarray
        The weights ``w_k`` (complex) and the frequencies ``k_x``, ``k_y`` [1/Å].
    """
    xp = backend.get_array_module(spectrum)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    values = spectrum[beams[:, 0], beams[:, 1]]
    # Σ_window |Σ_k c_k e^{2πik·r}|^2 = n_window Σ_k |c_k|^2: the beams are orthogonal on the window.
    norm = xp.sqrt(xp.sum(xp.abs(values) ** 2) * (window[0] * window[1]))
    return values / norm, kx[beams[:, 0]], ky[beams[:, 1]]


def coefficients(weights, positions):
    """``c_k(r_0) = w_k e^{-2πi k·r_0}`` of each probe ``(n, n_beams)``, complex64.

    A kernel: no checks, on the inputs' device.

    Parameters
    ----------
    weights : tuple of (n_beams,) ndarray
        ``(w_k, k_x, k_y)`` from :func:`beam_weights`.
    positions : (n, 2) ndarray
        Probe positions ``r_0`` [Å], on the weights' device.

    Returns
    -------
    (n, n_beams) ndarray, complex64
    """
    values, bx, by = weights
    xp = backend.get_array_module(values)
    phase = positions[:, 0:1] * bx[None] + positions[:, 1:2] * by[None]
    return (values[None] * xp.exp(-2j * math.pi * phase)).astype(xp.complex64)


def columns(beams):
    """``(start, end)`` of each run of beams sharing their x index (host), or None if a run is split.

    Parameters
    ----------
    beams : (n_beams, 2) ndarray, int
        FFT-order beam indices (host), as :attr:`mbook.electron.prism.SMatrix.beams`.

    Returns
    -------
    list of (int, int) or None
        The columns' row ranges in ``beams``, None when beams of one x index are not consecutive.
    """
    change = np.flatnonzero(np.diff(beams[:, 0])) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [len(beams)]])
    if len(starts) != len(np.unique(beams[:, 0])):
        return None
    return list(zip(starts.tolist(), ends.tolist()))


def product(points):
    """``(order, xs, ys)`` when ``points`` ``(n, 2)`` are the grid ``xs × ys`` (``points[order]`` x-major).

    Parameters
    ----------
    points : (n, 2) ndarray
        Probe positions [Å] (host).

    Returns
    -------
    tuple of ndarray or None
        The order that sorts ``points`` x-major, and the sorted distinct ``xs`` and ``ys`` [Å]
        (host arrays); None when the points are not a full grid.
    """
    xs, ix = np.unique(points[:, 0], return_inverse=True)
    ys, iy = np.unique(points[:, 1], return_inverse=True)
    code = ix.ravel() * len(ys) + iy.ravel()
    if len(xs) * len(ys) != len(points) or len(np.unique(code)) != len(points):
        return None
    return np.argsort(code), xs, ys


def padded_columns(columns):
    """The beams' columns as one block padded to the longest (host): index and weight ``(n_columns, longest)``.

    ``index`` holds each column's beam rows, the padding pointing at beam 0, and ``weight`` is 1 on a
    beam and 0 on the padding: the sums over every column are then one batched matrix product
    (:func:`combine_on_grid` with ``padded``) instead of one per column.

    Parameters
    ----------
    columns : list of (int, int)
        From :func:`columns`.

    Returns
    -------
    index : (n_columns, longest) ndarray, int64
    weight : (n_columns, longest) ndarray, float32
    """
    longest = max(end - start for start, end in columns)
    index = np.zeros((len(columns), longest), np.int64)
    weight = np.zeros((len(columns), longest), np.float32)
    for c, (start, end) in enumerate(columns):
        index[c, :end - start] = np.arange(start, end)
        weight[c, :end - start] = 1.0
    return index, weight


def combine_on_grid(weights, columns, column_kx, xs, ys, matrix, padded=None):
    """``Σ_k c_k(x, y) M_k`` ``(n_x n_y, m)`` for the probes on the grid ``xs × ys`` (x-major).

    The phase ``e^{-2πi(k_x x + k_y y)}`` factorises, and the beams sharing a
    ``k_x`` form a column: first ``T_c(y) = Σ_{k in c} w_k e^{-2πi k_y y} M_k``
    per column, then ``Σ_c e^{-2πi k_x(c) x} T_c(y)``: ``n_y n_beams + n_x
    n_y n_columns`` products of length ``m`` instead of ``n_x n_y n_beams``.
    A kernel: no checks, on the inputs' device.

    Parameters
    ----------
    weights : tuple of (n_beams,) ndarray
        ``(w_k, k_x, k_y)`` from :func:`beam_weights`.
    columns : list of (int, int)
        The beams' columns, from :func:`columns`.
    column_kx : (n_columns,) ndarray
        ``k_x`` of each column [1/Å].
    xs, ys : (n_x,), (n_y,) ndarray
        The grid's coordinates [Å] (host), from :func:`product`.
    matrix : (n_beams, m) ndarray, complex64
        What each beam contributes (its wave on a box of pixels, or its far field on some pixels).
    padded : tuple of ndarray, optional
        :func:`padded_columns` on the matrix's device: every column's sum in one batched product
        (a few kernels on a GPU instead of about eight per column; it reads the matrix's rows once
        more, padding included). Without it, one product per column (the CPU's way: no copy).

    Returns
    -------
    (n_x n_y, m) ndarray, complex64
    """
    values, _, by = weights
    xp = backend.get_array_module(matrix)
    xs, ys = backend.asarray(xs), backend.asarray(ys)
    if padded is not None:
        index, weight = padded
        along_y = (values[None] * xp.exp(-2j * math.pi * ys[:, None] * by[None])).astype(xp.complex64)
        blocks = xp.moveaxis(along_y[:, index] * weight, 1, 0)  # (n_columns, n_y, longest)
        partial = blocks @ matrix[index]  # (n_columns, n_y, m)
    else:
        partial = xp.empty((len(columns), len(ys), matrix.shape[1]), xp.complex64)
        for c, (start, end) in enumerate(columns):
            along_y = values[None, start:end] * xp.exp(-2j * math.pi * ys[:, None] * by[None, start:end])
            partial[c] = along_y.astype(xp.complex64) @ matrix[start:end]
    along_x = xp.exp(-2j * math.pi * xs[:, None] * column_kx[None]).astype(xp.complex64)
    return (along_x @ partial.reshape(len(columns), -1)).reshape(len(xs) * len(ys), -1)


def window_centres(positions, grid):
    """Pixel ``(i, j)`` nearest each position ``(n, 2)`` [Å], mod gpts (host int64: where each window sits).

    Parameters
    ----------
    positions : (..., 2) array_like
        Probe positions [Å]; copied to the host.
    grid : Grid
        The full grid [Å].

    Returns
    -------
    (n, 2) ndarray, int64
    """
    pixels = np.rint(backend.asnumpy(positions).reshape(-1, 2) / np.asarray(grid.sampling)).astype(np.int64)
    return pixels % np.asarray(grid.gpts)


def tiles(centres, window, gpts, batch):
    """Host index arrays of the probes grouped into batches of at most ``batch`` that lie close together.

    The probes are sorted into square tiles of ``t`` pixels (``t`` from the
    scan's density, so that a tile holds about ``batch`` probes): the box that
    holds a batch's windows is then about a window and ``t - 1`` pixels wide
    instead of a raster row long, and a raster's tile is a small grid of
    probes (:func:`combine_on_grid`). ``t <= gpts - window + 1`` keeps the
    box inside one period of the cell, so that a window never wraps around it
    (with ``window`` None, as for the far-field combination, there is no box).

    Parameters
    ----------
    centres : (n, 2) ndarray, int
        The windows' centre pixels (host), from :func:`window_centres`.
    window : tuple of int or None
        Gpts of the window; None when there is none (``f = 1``).
    gpts : tuple of int
        Gpts of the cell.
    batch : int
        Most probes per batch.

    Returns
    -------
    list of ndarray
        Indices into ``centres`` of each batch (host int64).
    """
    n = len(centres)
    room = max(gpts) if window is None else min(g - w + 1 for g, w in zip(gpts, window))  # >= 1, f >= 2
    span = max(1, int(max(np.ptp(centres[:, 0]), np.ptp(centres[:, 1]))) + 1)
    side = int(min(room, max(1, round(span * math.sqrt(batch / n)))))
    tile = centres // side
    order = np.lexsort((tile[:, 1], tile[:, 0]))  # tile by tile, in raster order
    key = tile[order, 0] * (gpts[1] // side + 1) + tile[order, 1]
    ends = np.flatnonzero(np.diff(key)) + 1
    groups = np.split(order, ends)
    return [group[s:s + batch] for group in groups for s in range(0, len(group), batch)]


def _box(centres, window):
    """``(start, size)`` per axis of the box (start mod gpts) holding every window of a batch (host ints)."""
    box = []
    for axis in range(2):
        low = int(centres[:, axis].min())
        size = int(centres[:, axis].max()) - low + window[axis]
        box.append((low - window[axis] // 2, size))
    return box


def box_bytes(batches, centres, window, n_beams):
    """Bytes of the largest box of beams over ``batches`` (complex64) [bytes].

    Parameters
    ----------
    batches : list of ndarray
        Indices of each batch's probes, from :func:`tiles`.
    centres : (n, 2) ndarray, int
        The windows' centre pixels (host).
    window : tuple of int
        Gpts of the window.
    n_beams : int
        Beams in the S-matrix.

    Returns
    -------
    int
    """
    return max(math.prod(size for _, size in _box(centres[b], window)) for b in batches) * n_beams * 8


def _crop_beams(array, box, gpts):
    """The beams on ``box`` ``(n_beams, bx, by)``, C-contiguous, the box taken mod gpts.

    At most four block copies (the box split where it crosses the cell's
    edges): no index arrays, and only the box's pixels are read.
    """
    xp = backend.get_array_module(array)
    (x0, bx), (y0, by) = box
    out = xp.empty((len(array), bx, by), array.dtype)
    for ox, sx, lx in _segments(x0, bx, gpts[0]):
        for oy, sy, ly in _segments(y0, by, gpts[1]):
            out[:, ox:ox + lx, oy:oy + ly] = array[:, sx:sx + lx, sy:sy + ly]
    return out


def _segments(start, size, n):
    """``(offset in the box, start in the cell, length)`` of the runs of ``start .. start + size - 1`` mod ``n``."""
    runs, offset = [], 0
    while offset < size:
        begin = (start + offset) % n
        length = min(size - offset, n - begin)
        runs.append((offset, begin, length))
        offset += length
    return runs


def window_waves(array, combine, centres, window, gpts):
    """Exit waves ``(n, wx, wy)`` on each probe's window: ``Σ_k c_k S_k`` on the crop around its centre.

    ``combine`` maps the beams on the box that holds the batch's windows,
    ``(n_beams, m)``, to the probes' waves on it, ``(n, m)`` (BLAS products);
    each window is then a slice of the box, all cut out with one gather over
    a strided view (no index arrays of the windows' size). A kernel: no
    checks, on the S-matrix's device.

    Parameters
    ----------
    array : (n_beams, nx, ny) ndarray, complex64
        The S-matrix's exit waves.
    combine : callable
        ``(n_beams, m) -> (n, m)``: the sum over beams with each probe's coefficients.
    centres : (n, 2) ndarray, int
        The batch's window centres (host), from :func:`window_centres`.
    window : tuple of int
        Gpts of the window ``(wx, wy)``.
    gpts : tuple of int
        Gpts of the cell.

    Returns
    -------
    (n, wx, wy) ndarray, complex64
    """
    xp = backend.get_array_module(array)
    box = _box(centres, window)
    beams = _crop_beams(array, box, gpts)  # (n_beams, bx, by)
    combined = combine(beams.reshape(len(beams), -1)).reshape((len(centres),) + beams.shape[1:])
    # Every window of the box as a strided view (batch, box - window + 1 per axis, window): no copy.
    # (as_strided rather than sliding_window_view: CuPy has had it for much longer.)
    (n, bx, by), (sn, sx, sy) = combined.shape, combined.strides
    windows = xp.lib.stride_tricks.as_strided(combined, shape=(n, bx - window[0] + 1, by - window[1] + 1) + window,
                                              strides=(sn, sx, sy, sx, sy))
    offsets = backend.asarray(np.stack([np.arange(len(centres)), centres[:, 0] - centres[:, 0].min(),
                                        centres[:, 1] - centres[:, 1].min()]))
    return windows[offsets[0], offsets[1], offsets[2]]


def far_fields(array, pixels):
    """``F[S_k]`` at the flat ``pixels`` of the cell for every beam ``(n_beams, n_pixels)``, complex64.

    One FFT per beam, a few beams at a time (the transforms' buffer stays
    small). A kernel: no checks, on the S-matrix's device.

    Parameters
    ----------
    array : (n_beams, nx, ny) ndarray, complex64
        The S-matrix's exit waves.
    pixels : (n_pixels,) ndarray, int
        Flat indices of the pixels kept, on the S-matrix's device.

    Returns
    -------
    (n_beams, n_pixels) ndarray, complex64
    """
    xp = backend.get_array_module(array)
    n_beams, (nx, ny) = len(array), array.shape[1:]
    out = xp.empty((n_beams, len(pixels)), xp.complex64)
    step = max(1, min(n_beams, 8))
    for start in range(0, n_beams, step):
        far = backend.fft2(array[start:start + step])
        out[start:start + step] = far.reshape(len(far), nx * ny)[:, pixels]
    return out
