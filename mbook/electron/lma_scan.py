"""The kernels of an LMA scan: a probe written in the lattice basis and its exit wave on a window.

:func:`mbook.electron.lma.scan` checks its inputs once and plans the scan's
memory; these kernels do the arithmetic on what it checked (device arrays on
the basis's device), with no checks of their own.

A probe at ``r_0`` is ``ψ_0(r - r_0) = Σ_j ψ_0(x_j - r_0) u(r - x_j)``; its
exit wave is ``Σ_j ψ_0(x_j - r_0) M[u_j]``, kept to the ``m × m`` block of
lattice points nearest it (truncation 1 of the error model in
:mod:`mbook.electron.lma`):

- the lattice point nearest each probe (:func:`nearest_points`; also what
  :func:`mbook.electron.lma.affected` reads);
- the coefficients ``ψ_0(x_j - r_0)`` on each probe's block, summed over the
  aperture's beams (:func:`coefficients`);
- the window the block's patches cover (:func:`window_shape`) and the
  combined exit waves on it (:func:`window_waves`);
- probes that share a block (a dense scan puts many probes in each lattice
  cell): grouped (:func:`blocks`), their block's translates placed on the
  window once (:func:`placed_patches`), and all their waves one matrix
  product (:func:`shared_block_waves`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.electron import lma, lma_scan
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> basis = lma.build_basis(np.zeros((2, 64, 64), np.float32), grid=grid, energy=200e3, slice_thickness=1.0,
...                         semiangle_cutoff=20.0, lattice_step=4, patch_gpts=24)
>>> lma_scan.window_shape(basis, basis.block)
(48, 48)
>>> backend.asnumpy(lma_scan.nearest_points(backend.asarray([[0.5, 1.3], [3.1, 0.0]]), basis)).tolist()
[[1, 3], [8, 0]]
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mbook.core import backend, grids

#: Most probes combined at once on the CPU (:func:`mbook.electron.lma.scan`'s default there): a batch's
#: windows and the patches added to them stay near the cores' caches.
BATCH = 64
#: On a GPU (and on the strict stand-in, which takes its code path): each of a block's m² offsets is a
#: few kernels over the whole batch (289 offsets at p = 128), so batches are as large as the memory budget
#: allows, up to this many probes.
GPU_BATCH = 1024

#: Fewest probes per block, on average, for which a scan combines the probes that share a block with one
#: matrix product over the block's placed translates (:func:`shared_block_waves`) instead of translate by
#: translate (:func:`window_waves`). Placing a block costs about what one probe costs translate by
#: translate; the product then does (window/patch)² more multiply-adds than the translates need, at the
#: speed of a matrix product instead of that of the memory.
GROUPED_MIN = 4


def nearest_points(positions, basis):
    """Lattice point nearest each position ``(n, 2)`` (device ints, not wrapped).

    A kernel: no checks (on what :func:`mbook.electron.lma.scan` or
    :func:`mbook.electron.lma.affected` checked), on the positions' device.

    Parameters
    ----------
    positions : (n, 2) ndarray
        Probe positions [Å].
    basis : LatticeBasis
        The basis (its lattice step and grid).

    Returns
    -------
    (n, 2) ndarray, int64
        Lattice indices ``rint(r / h)``, not reduced modulo the lattice.
    """
    xp = backend.get_array_module(positions)
    h = xp.asarray([basis.lattice_step * s for s in basis.grid.sampling])
    return xp.rint(positions / h).astype(xp.int64)


def beam_grid(spectrum, beams, grid):
    """The aperture's beams on the grid of their distinct ``k_x`` and ``k_y``: ``(k_x, k_y, values)``.

    The beams of an aperture lie on a few tens of distinct frequencies per
    axis, so :func:`coefficients` takes the exponentials of those alone and
    sums the beams as two small matrix products. A kernel: no checks, on
    ``spectrum``'s device.

    Parameters
    ----------
    spectrum : (nx, ny) ndarray, complex
        The probe's aperture times its aberration phase on the full grid (FFT order).
    beams : (n_beams, 2) ndarray, int
        FFT-order indices ``(i, j)`` of the aperture's beams (host).
    grid : Grid
        The full grid [Å].

    Returns
    -------
    tuple
        The distinct ``k_x`` ``(n_x,)`` and ``k_y`` ``(n_y,)`` [1/Å], and the
        spectrum's values on their grid ``(n_x, n_y)`` complex, divided by the
        grid's pixels (0 where no beam), on ``spectrum``'s device.
    """
    xp = backend.get_array_module(spectrum)
    beams = np.asarray(beams)
    rows, row_of = np.unique(beams[:, 0], return_inverse=True)
    cols, col_of = np.unique(beams[:, 1], return_inverse=True)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    values = xp.zeros((len(rows), len(cols)), spectrum.dtype)
    values[backend.asarray(row_of.ravel()), backend.asarray(col_of.ravel())] = (
        spectrum[backend.asarray(beams[:, 0]), backend.asarray(beams[:, 1])] / (grid.gpts[0] * grid.gpts[1]))
    return kx[backend.asarray(rows)], ky[backend.asarray(cols)], values


def coefficients(spectrum, beams, positions, basis, m, on_grid=None):
    """``ψ_0(x_j - r_0)`` on each probe's block ``(n, m, m)`` and the block's first lattice point ``(n, 2)``.

    A kernel: no checks (on what :func:`mbook.electron.lma.scan` checked), on
    the inputs' device.

    Parameters
    ----------
    spectrum : (nx, ny) ndarray, complex
        The probe's aperture times its aberration phase on the full grid (FFT order).
    beams : (n_beams, 2) ndarray, int
        FFT-order indices ``(i, j)`` of the aperture's beams, on ``spectrum``'s device.
    positions : (n, 2) ndarray
        Probe positions ``r_0`` [Å], on ``spectrum``'s device.
    basis : LatticeBasis
        The basis (its lattice step and grid).
    m : int
        Lattice points per side of a probe's block.
    on_grid : tuple, optional
        :func:`beam_grid` of the same spectrum and beams: the exponentials of
        the distinct frequencies only, and the sum over beams as two products
        (the same coefficients, summed in another order; far fewer exponentials).

    Returns
    -------
    tuple
        The coefficients ``(n, m, m)`` complex64 and each block's first
        lattice point ``(n, 2)`` int64 (not wrapped).
    """
    xp = backend.get_array_module(spectrum)
    grid = basis.grid
    nx, ny = grid.gpts
    first = nearest_points(positions, basis) - m // 2
    q = xp.arange(m)
    hx, hy = (basis.lattice_step * s for s in grid.sampling)
    dx = (first[:, 0:1] + q[None]) * hx - positions[:, 0:1]  # (n, m) [Å]
    dy = (first[:, 1:2] + q[None]) * hy - positions[:, 1:2]
    # ψ_0(x_j - r_0) = Σ_k P_k e^{2πik·(x_j-r_0)} / N
    if on_grid is not None:
        bx, by, values = on_grid
        ex = xp.exp(2j * math.pi * dx[:, :, None] * bx[None, None, :])  # (n, m, n_x)
        ey = xp.exp(2j * math.pi * dy[:, :, None] * by[None, None, :])  # (n, m, n_y)
        return ((ex @ values) @ ey.transpose(0, 2, 1)).astype(xp.complex64), first
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    bx, by = kx[beams[:, 0]], ky[beams[:, 1]]
    values = spectrum[beams[:, 0], beams[:, 1]] / (nx * ny)  # the probe is F^-1 of the spectrum, 1/N
    ex = xp.exp(2j * math.pi * dx[:, :, None] * bx[None, None, :])  # (n, m, n_beams)
    ey = xp.exp(2j * math.pi * dy[:, :, None] * by[None, None, :])
    a = (ex * values[None, None, :]) @ ey.transpose(0, 2, 1)
    return a.astype(xp.complex64), first


def window_shape(basis, m):
    """Pixels of a probe's window per axis: ``(m - 1) h + patch``, at most the cell (then periodic).

    A kernel: no checks (on what :func:`mbook.electron.lma.scan` checked).

    Parameters
    ----------
    basis : LatticeBasis
        The basis (its lattice step, patch and grid).
    m : int
        Lattice points per side of a probe's block.

    Returns
    -------
    tuple of int
        ``(wx, wy)``.
    """
    nominal = (m - 1) * basis.lattice_step + basis.patch_gpts
    return tuple(min(nominal, n) for n in basis.grid.gpts)


def window_waves(array, coefficients, first, step, shape):
    """``Σ_j a_j M[u_j]`` on each probe's window ``(n, wx, wy)``: the block's patches added in place.

    A block wider than the cell wraps around the window, which is then the periodic cell itself.
    A kernel: no checks (on what :func:`mbook.electron.lma.scan` checked), on
    the inputs' device.

    Parameters
    ----------
    array : (n_lx, n_ly, patch, patch) ndarray, complex64
        The basis exit waves (:attr:`mbook.electron.lma.LatticeBasis.array`).
    coefficients : (n, m, m) ndarray, complex64
        Each probe's coefficients on its block (:func:`coefficients`).
    first : (n, 2) ndarray, int
        Each block's first lattice point (not wrapped), on ``array``'s device.
    step : int
        The lattice step ``h`` [pixels].
    shape : tuple of int
        The window ``(wx, wy)`` (:func:`window_shape`).

    Returns
    -------
    (n, wx, wy) ndarray, complex64
    """
    xp = backend.get_array_module(array)
    n, m = coefficients.shape[:2]
    lattice, patch = array.shape[:2], array.shape[-1]
    out = xp.zeros((n,) + tuple(shape), xp.complex64)
    wraps = (m - 1) * step + patch > min(shape)
    jx = (first[:, 0:1] + xp.arange(m)[None]) % lattice[0]
    jy = (first[:, 1:2] + xp.arange(m)[None]) % lattice[1]
    offsets = xp.arange(patch)
    for qx in range(m):  # m² block offsets (about (patch/h)²), each over the whole batch of probes
        for qy in range(m):
            term = coefficients[:, qx, qy, None, None] * array[jx[:, qx], jy[:, qy]]
            if wraps:  # a patch is at most the cell: its wrapped indices are distinct
                rows = ((qx * step + offsets) % shape[0])[:, None]
                cols = ((qy * step + offsets) % shape[1])[None, :]
                out[:, rows, cols] += term
            else:
                out[:, qx * step:qx * step + patch, qy * step:qy * step + patch] += term
    return out


def blocks(first):
    """The probes sorted by their block, and the length of each run of probes sharing one (host).

    Parameters
    ----------
    first : (n, 2) ndarray, int
        Each probe's block's first lattice point (host), as :func:`coefficients` returns it.

    Returns
    -------
    order : (n,) ndarray, int64
        Indices that sort the probes by block (stable: a block's probes keep their order).
    sizes : (n_blocks,) ndarray, int64
        The runs' lengths in that order.
    """
    first = np.asarray(first, np.int64).reshape(-1, 2)
    if not len(first):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((first[:, 1], first[:, 0]))
    change = np.flatnonzero(np.any(np.diff(first[order], axis=0) != 0, axis=1)) + 1
    return order, np.diff(np.concatenate([[0], change, [len(first)]])).astype(np.int64)


def block_batches(sizes, batch):
    """Batches of at most ``batch`` probes made of whole blocks where they fit (host).

    Parameters
    ----------
    sizes : (n_blocks,) sequence of int
        The runs of probes sharing a block, in order (:func:`blocks`).
    batch : int
        Most probes per batch; a block larger than that is split.

    Returns
    -------
    list of list of (int, int)
        Per batch, its runs ``(start, end)`` in the sorted order, each one block (or part of one).
    """
    ends = np.cumsum(np.asarray(sizes, np.int64))
    runs = [(start, min(start + batch, int(end))) for begin, end in zip(np.concatenate([[0], ends[:-1]]), ends)
            for start in range(int(begin), int(end), batch)]
    batches, current = [], []
    for run in runs:
        if current and run[1] - current[0][0] > batch:
            batches.append(current)
            current = []
        current.append(run)
    return batches + [current] if current else batches


def placed_patches(array, first, m, step, shape, out=None):
    """The exit waves of one block's ``m × m`` translates, each placed on the window: ``(m², wx wy)``.

    Row ``q = q_x m + q_y`` holds translate ``first + q``'s patch at pixel
    ``q h`` of the window (wrapped as :func:`window_waves` wraps it) and zeros
    elsewhere: one gather of the block's waves and one scatter onto the
    window. A kernel: no checks, on ``array``'s device.

    Parameters
    ----------
    array : (n_lx, n_ly, patch, patch) ndarray, complex64
        The basis exit waves.
    first : tuple of int
        The block's first lattice point (not wrapped).
    m : int
        Lattice points per side of the block.
    step : int
        The lattice step ``h`` [pixels].
    shape : tuple of int
        The window ``(wx, wy)`` (:func:`window_shape`).
    out : (m * m, wx * wy) ndarray, complex64, optional
        A previous result for the same ``m``, ``step``, ``shape`` and patch, overwritten: every block
        fills the same pixels, so the zeros elsewhere stay (no new zeroed buffer per block).

    Returns
    -------
    (m * m, wx * wy) ndarray, complex64
    """
    xp = backend.get_array_module(array)
    lattice, patch = array.shape[:2], array.shape[-1]
    q = np.arange(m)
    jx, jy = backend.asarray((first[0] + q) % lattice[0]), backend.asarray((first[1] + q) % lattice[1])
    placed = xp.zeros(m * m * shape[0] * shape[1], xp.complex64) if out is None else out.reshape(-1)
    placed[_placement(m, patch, step, tuple(shape), xp)] = array[jx[:, None], jy[None, :]].reshape(-1)
    return placed.reshape(m * m, -1)


@functools.lru_cache(maxsize=2)
def _placement(m, patch, step, shape, xp):
    """Flat window indices ``(m m patch patch,)`` of every translate's patch pixels: the same for every block.

    Kept for the next scan of the same geometry (int64, about 34 MB at m = 16 and a 128-pixel patch), on
    the device that was selected when it was made."""
    q = xp.arange(m)
    offsets = xp.arange(patch)
    # a patch is at most the cell, so its wrapped pixels are distinct: no two writes meet
    rows = (q[:, None] * step + offsets[None]) % shape[0]  # (m, patch)
    cols = (q[:, None] * step + offsets[None]) % shape[1]
    row = q[:, None, None, None] * m + q[None, :, None, None]  # the translate's row of the result
    return ((row * shape[0] + rows[:, None, :, None]) * shape[1] + cols[None, :, None, :]).reshape(-1)


def shared_block_waves(coefficients, placed, shape):
    """``Σ_j a_j M[u_j]`` on the window of probes that share one block: one matrix product ``(n, wx, wy)``.

    The same waves as :func:`window_waves` for these probes, summed in another order. A kernel: no
    checks, on the inputs' device.

    Parameters
    ----------
    coefficients : (n, m, m) ndarray, complex64
        The probes' coefficients on their shared block.
    placed : (m * m, wx * wy) ndarray, complex64
        The block's translates on the window (:func:`placed_patches`).
    shape : tuple of int
        The window ``(wx, wy)``.

    Returns
    -------
    (n, wx, wy) ndarray, complex64
    """
    n = coefficients.shape[0]
    return (coefficients.reshape(n, -1) @ placed).reshape((n,) + tuple(shape))
