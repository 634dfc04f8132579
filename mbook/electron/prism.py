"""PRISM: STEM from a scattering matrix of plane waves (Ophus 2017).

Multislice is linear in the incident wave. A probe is a sum of plane waves
inside its aperture,

``ψ_0(r; r_0) = Σ_k c_k(r_0) exp(2πi k·r)``, ``c_k(r_0) = A(k) e^{-iχ(k)} e^{-2πi k·r_0} / n``,

so its exit wave is the same sum of the plane waves' exit waves
``S_k(r) = M[exp(2πi k·r)]`` (``M`` the multislice). PRISM propagates each
plane wave once, keeps the **scattering matrix** ``S`` (one exit wave per
beam), and forms the exit wave of every scan position as the combination
``Σ_k c_k(r_0) S_k(r)``: a few multislice runs instead of one per probe.

With the **interpolation factor** ``f`` only the beams on every ``f``-th
reciprocal lattice point are kept (``f^2`` fewer beams). Those beams make a
probe periodic with period ``L/f``: PRISM keeps a window of ``(nx/f, ny/f)``
pixels around each probe (the real-space crop) and takes its far field on
that coarser reciprocal grid. ``f = 1`` is exact (multislice to float32
rounding); for ``f > 1`` the probe's tails beyond the window are lost and its
periodic copies interfere with it (Ophus 2017, sec. "PRISM algorithm").

Detectors, 4D-STEM and outputs are those of :func:`mbook.electron.stem.scan`
(the patterns of ``f > 1`` on the window's grid). The S-matrix's memory is
estimated before it is built (:func:`smatrix_bytes`), the beams propagated in
batches under the budget (:func:`mbook.core.progress.plan_batches`), and a
build that cannot fit is refused with the numbers.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.electron import prism
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> s = prism.build_smatrix(np.zeros((2, 64, 64), np.float32), grid=grid, energy=200e3,
...                         slice_thickness=1.0, semiangle_cutoff=20.0, interpolation=2)
>>> s.array.shape, s.window
((21, 64, 64), (32, 32))
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass

import numpy as np
import threadpoolctl

from mbook.core import backend, checks, grids, progress
from mbook.electron import multislice, physics, stem, waves


#: Most probes combined at once (a batch's windows lie close together: they share a compact box of the S-matrix).
BATCH = 64

#: Fewest multiply-adds saved (a factor) for which a grid of probes is combined column by column
#: (:func:`_combine_on_grid`): its products are short (a column's beams, a tile's rows) and run at a
#: fraction of BLAS's speed on one long product. Measured on the CPU: 2.3x faster at f = 1 (350 beams
#: in 21 columns, 8 x 8 probes: 5.4x fewer products), no faster at f = 2 (89 beams, 11 columns: 4x).
FACTORISED_GAIN = 5


@dataclass
class SMatrix:
    """A PRISM scattering matrix.

    Attributes
    ----------
    array : (n_beams, nx, ny) ndarray, complex64
        Exit wave of each plane wave, on the selected device.
    beams : (n_beams, 2) ndarray, int64
        FFT-order indices ``(i, j)`` of each beam on the full grid (host).
    grid : Grid
        The simulation grid [Å].
    energy : float
        [eV].
    semiangle_cutoff : float
        The aperture the beams fill [mrad].
    interpolation : int
        ``f``.
    """

    array: object
    beams: np.ndarray
    grid: grids.Grid
    energy: float
    semiangle_cutoff: float
    interpolation: int

    @property
    def window(self) -> tuple[int, int]:
        """Gpts of the real-space crop around each probe, ``(nx/f, ny/f)``."""
        return tuple(n // self.interpolation for n in self.grid.gpts)

    @property
    def nbytes(self) -> int:
        """Bytes of the S-matrix array."""
        return int(self.array.nbytes)


def _check_budget(budget):
    """A memory budget [bytes]: None (the default budget) or an integer >= 1."""
    return None if budget is None else checks.check_count(budget, "budget")


def _check_detectors(detectors, semiangle_cutoff):
    """``{name: (inner, outer)}`` [mrad] as a dict; default :func:`mbook.electron.stem.standard_detectors`."""
    if detectors is None:
        return stem.standard_detectors(semiangle_cutoff)
    if not isinstance(detectors, dict):
        raise TypeError(f"detectors must be a dict {{name: (inner, outer)}} [mrad], got {detectors!r}")
    return dict(detectors)


def check_interpolation(interpolation, grid, *, energy, semiangle_cutoff) -> int:
    """The interpolation factor ``f``: a positive integer dividing both gpts, small enough for a probe.

    ``f`` too large leaves no beam but the central one inside the aperture
    along an axis (``f > L α / λ``): the "probe" would be a plane wave.

    Raises
    ------
    ValueError
        Naming ``interpolation``, its value and the valid values.
    """
    checks.check_grid(grid, ndim=2)
    physics.check_energy(energy)
    semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    if not isinstance(interpolation, numbers.Integral) or isinstance(interpolation, bool) or interpolation < 1:
        raise ValueError(f"interpolation must be a positive integer (the PRISM factor f), got {interpolation!r}")
    interpolation = int(interpolation)
    nx, ny = grid.gpts
    k_aperture = semiangle_cutoff * 1e-3 / physics.wavelength(energy)  # [1/Å]
    largest = int(math.floor(min(e * k_aperture for e in grid.extent)))
    divisors = [f for f in range(1, max(1, largest) + 1) if nx % f == 0 and ny % f == 0]
    if nx % interpolation or ny % interpolation or interpolation > largest:
        raise ValueError(
            f"interpolation={interpolation} is too large for gpts {grid.gpts} and a {semiangle_cutoff:g} mrad "
            f"aperture: f must divide both gpts and be <= {largest} (extent x aperture radius) so that the "
            f"aperture holds a beam besides the central one; valid here: {divisors}"
        )
    return interpolation


def beam_indices(grid, *, energy, semiangle_cutoff, interpolation=1) -> np.ndarray:
    """FFT-order indices ``(i, j)`` of the beams inside the aperture on every ``f``-th lattice point.

    A parameter of the grid (host, int64, shape ``(n_beams, 2)``): the same
    aperture test as :func:`mbook.electron.waves.aperture` (``α <= α_max``).
    """
    f = check_interpolation(interpolation, grid, energy=energy, semiangle_cutoff=semiangle_cutoff)
    semiangle = float(semiangle_cutoff)
    kx, ky = grids.spatial_frequencies(grid, xp=np)
    ix, iy = np.arange(0, grid.gpts[0], f), np.arange(0, grid.gpts[1], f)
    alpha = physics.wavelength(energy) * np.sqrt(kx[ix][:, None] ** 2 + ky[iy][None, :] ** 2)
    inside = np.nonzero(alpha <= semiangle * 1e-3)
    return np.stack([ix[inside[0]], iy[inside[1]]], axis=-1).astype(np.int64)


def smatrix_bytes(grid, *, energy, semiangle_cutoff, interpolation=1) -> int:
    """Bytes of the S-matrix (complex64 exit waves, one per beam) [bytes], before building it."""
    n_beams = len(beam_indices(grid, energy=energy, semiangle_cutoff=semiangle_cutoff, interpolation=interpolation))
    return n_beams * grid.gpts[0] * grid.gpts[1] * 8


def _plane_waves(beams, grid, plan):
    """Plane waves ``exp(2πi k·r)`` of ``beams`` (device int array ``(n, 2)``) into ``plan``'s buffer."""
    xp = backend.get_array_module(plan.array)
    nx, ny = grid.gpts
    x = xp.arange(nx, dtype=xp.float64)
    y = xp.arange(ny, dtype=xp.float64)
    # k·r = (i/nx)·m + (j/ny)·n in grid units: the wave is exactly periodic on the cell.
    ex = xp.exp(2j * math.pi * beams[:, 0:1].astype(xp.float64) * x[None] / nx).astype(xp.complex64)
    ey = xp.exp(2j * math.pi * beams[:, 1:2].astype(xp.float64) * y[None] / ny).astype(xp.complex64)
    xp.multiply(ex[:, :, None], ey[:, None, :], plan.array)
    return plan.array


def _propagate_beams(beams, *, transmissions, propagators, grid, out=None):
    """Exit waves ``(n, nx, ny)`` of the plane waves of ``beams`` (a kernel, on the inputs' device).

    Written into ``out`` when given (the S-matrix's rows: no copy on the way), else returned as a copy
    of the plan's buffer.
    """
    xp = backend.get_array_module(transmissions)
    plan = backend.fft2_plan((len(beams),) + tuple(grid.gpts), xp.complex64, xp=xp)
    psi = _plane_waves(beams, grid, plan)
    for psi in multislice.iterate_slices(psi, transmissions, propagators, plan=plan):
        pass
    if out is None:
        return psi.copy()
    out[...] = psi
    return out


def _propagate_beams_one_thread(beams, **kwargs):
    """:func:`_propagate_beams` with single-threaded FFTs (for a Dask worker)."""
    with backend.fft_workers(1):
        return _propagate_beams(beams, **kwargs)


def build_smatrix(potential, *, grid, energy, slice_thickness, semiangle_cutoff, interpolation=1, budget=None,
                  max_batch=None, client=None):
    """Propagate every beam of the aperture on the ``f``-sub-lattice through the specimen.

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å].
    grid : Grid
        Its 2D grid [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        Thickness of every slice, or of each [Å].
    semiangle_cutoff : float
        The probe aperture the beams fill [mrad]; scans may use it or smaller.
    interpolation : int
        PRISM's factor ``f`` >= 1, dividing both gpts (:func:`check_interpolation`).
    budget : int, optional
        Memory budget [bytes] for the S-matrix, the slices and the beams in
        flight; default :func:`mbook.core.progress.memory_budget`.
    max_batch : int, optional
        Most beams propagated at once.
    client : dask.distributed.Client, optional
        Share the beam batches out over a Dask cluster (same result).

    Returns
    -------
    SMatrix
        With its array on the selected device.

    Raises
    ------
    MemoryError
        When the S-matrix and one beam in flight exceed the budget (the
        numbers are in the message), before any propagation.
    """
    physics.check_energy(energy)
    semiangle = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    checks.check_grid(grid, ndim=2)
    budget = _check_budget(budget)
    potential = checks.check_array(potential, "potential", ndim=3, real=True)
    if tuple(potential.shape[-2:]) != tuple(grid.gpts):
        raise ValueError(f"potential ends in {potential.shape[-2:]} but the grid has gpts {grid.gpts}")
    max_batch = None if max_batch is None else checks.check_count(max_batch, "max_batch")
    checks.check_client(client)
    beams_host = beam_indices(grid, energy=energy, semiangle_cutoff=semiangle, interpolation=interpolation)
    n_beams, n = len(beams_host), grid.gpts[0] * grid.gpts[1]
    # Memory first: the S-matrix itself, the transmission functions and propagators are fixed; each beam
    # in flight holds its wave (the plan's buffer) and, over Dask, the copy sent back.
    fixed = n_beams * n * 8 + potential.shape[0] * n * 8 + n * 8
    batch = progress.plan_batches(n_items=n_beams, bytes_per_item=2 * n * 8, fixed_bytes=fixed, budget=budget)
    batch = min(batch, max_batch or batch)
    threads = 1
    if not backend.gpu_code_path() and client is None:
        # On the CPU, as stem's scans: batches near the cache, one per core at once (single-threaded FFTs
        # in each), as many at once as the budget holds beside the S-matrix.
        # A few beams (large f) are split over the cores too, rather than one batch with threaded FFTs.
        in_memory = batch
        batch = max(1, min(batch, stem.cpu_batch(grid), -(-n_beams // backend.cpu_threads())))
        at_once = -(-n_beams // batch) if in_memory >= n_beams else in_memory // batch  # batches the budget holds
        threads = max(1, min(backend.cpu_threads(), -(-n_beams // batch), at_once))

    xp = backend.get_array_module(potential)
    with backend.fft_workers(1):  # one slice at a time: small FFTs, faster on one thread than on a busy pool
        _, transmissions, propagators = multislice.prepare(xp.zeros(grid.gpts, xp.complex64), potential, grid,
                                                            energy, slice_thickness, antialias=True)
    beams = backend.asarray(beams_host)
    array = xp.empty((n_beams,) + tuple(grid.gpts), xp.complex64)
    starts = range(0, n_beams, batch)
    kwargs = dict(transmissions=transmissions, propagators=propagators, grid=grid)
    bar = dict(desc="S-matrix")
    if client is not None:
        shared = {k: client.scatter(v, broadcast=True) if k != "grid" else v for k, v in kwargs.items()}
        futures = client.map(_propagate_beams_one_thread, [beams[s:s + batch] for s in starts], pure=False,
                             **shared)
        for start, future in zip(starts, progress.progress(futures, **bar)):
            array[start:start + batch] = future.result()
            future.release()
    else:
        def run(start):
            _propagate_beams(beams[start:start + batch], out=array[start:start + batch], **kwargs)

        progress.run_batches(run, starts, threads=threads, **bar)
    return SMatrix(array, beams_host, grid, float(energy), semiangle, int(interpolation))


def _beam_weights(spectrum, beams, grid, window):
    """Each beam's weight ``A(k) e^{-iχ(k)} / norm`` and frequencies ``k_x, k_y`` [1/Å], ``(n_beams,)`` each.

    Normalised to unit current on the window.
    """
    xp = backend.get_array_module(spectrum)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    values = spectrum[beams[:, 0], beams[:, 1]]
    # Σ_window |Σ_k c_k e^{2πik·r}|^2 = n_window Σ_k |c_k|^2: the beams are orthogonal on the window.
    norm = xp.sqrt(xp.sum(xp.abs(values) ** 2) * (window[0] * window[1]))
    return values / norm, kx[beams[:, 0]], ky[beams[:, 1]]


def _coefficients(weights, positions):
    """``c_k(r_0) = w_k e^{-2πi k·r_0}`` of each probe ``(n, n_beams)``, complex64."""
    values, bx, by = weights
    xp = backend.get_array_module(values)
    phase = positions[:, 0:1] * bx[None] + positions[:, 1:2] * by[None]
    return (values[None] * xp.exp(-2j * math.pi * phase)).astype(xp.complex64)


def _columns(beams):
    """``(start, end)`` of each run of beams sharing their x index (host), or None if a run is split."""
    change = np.flatnonzero(np.diff(beams[:, 0])) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [len(beams)]])
    if len(starts) != len(np.unique(beams[:, 0])):
        return None
    return list(zip(starts.tolist(), ends.tolist()))


def _product(points):
    """``(order, xs, ys)`` when ``points`` ``(n, 2)`` are the grid ``xs × ys`` (``points[order]`` x-major).

    None when they are not (host arrays).
    """
    xs, ix = np.unique(points[:, 0], return_inverse=True)
    ys, iy = np.unique(points[:, 1], return_inverse=True)
    code = ix.ravel() * len(ys) + iy.ravel()
    if len(xs) * len(ys) != len(points) or len(np.unique(code)) != len(points):
        return None
    return np.argsort(code), xs, ys


def _combine_on_grid(weights, columns, column_kx, xs, ys, matrix):
    """``Σ_k c_k(x, y) M_k`` ``(n_x n_y, m)`` for the probes on the grid ``xs × ys`` (x-major).

    The phase ``e^{-2πi(k_x x + k_y y)}`` factorises, and the beams sharing a
    ``k_x`` form a column: first ``T_c(y) = Σ_{k in c} w_k e^{-2πi k_y y} M_k``
    per column, then ``Σ_c e^{-2πi k_x(c) x} T_c(y)``: ``n_y n_beams + n_x
    n_y n_columns`` products of length ``m`` instead of ``n_x n_y n_beams``.
    """
    values, _, by = weights
    xp = backend.get_array_module(matrix)
    xs, ys = backend.asarray(xs), backend.asarray(ys)
    partial = xp.empty((len(columns), len(ys), matrix.shape[1]), xp.complex64)
    for c, (start, end) in enumerate(columns):
        along_y = values[None, start:end] * xp.exp(-2j * math.pi * ys[:, None] * by[None, start:end])
        partial[c] = along_y.astype(xp.complex64) @ matrix[start:end]
    along_x = xp.exp(-2j * math.pi * xs[:, None] * column_kx[None]).astype(xp.complex64)
    return (along_x @ partial.reshape(len(columns), -1)).reshape(len(xs) * len(ys), -1)


def _window_centres(positions, grid):
    """Pixel ``(i, j)`` nearest each position ``(n, 2)`` [Å], mod gpts (host int64: where each window sits)."""
    pixels = np.rint(backend.asnumpy(positions).reshape(-1, 2) / np.asarray(grid.sampling)).astype(np.int64)
    return pixels % np.asarray(grid.gpts)


def _tiles(centres, window, gpts, batch):
    """Host index arrays of the probes grouped into batches of at most ``batch`` that lie close together.

    The probes are sorted into square tiles of ``t`` pixels (``t`` from the
    scan's density, so that a tile holds about ``batch`` probes): the box that
    holds a batch's windows is then about a window and ``t - 1`` pixels wide
    instead of a raster row long, and a raster's tile is a small grid of
    probes (:func:`_combine_on_grid`). ``t <= gpts - window + 1`` keeps the
    box inside one period of the cell, so that a window never wraps around it
    (with ``window`` None, as for the far-field combination, there is no box).
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


def _box_bytes(batches, centres, window, n_beams):
    """Bytes of the largest box of beams over ``batches`` (complex64)."""
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


def _window_waves(array, combine, centres, window, gpts):
    """Exit waves ``(n, wx, wy)`` on each probe's window: ``Σ_k c_k S_k`` on the crop around its centre.

    ``combine`` maps the beams on the box that holds the batch's windows,
    ``(n_beams, m)``, to the probes' waves on it, ``(n, m)`` (BLAS products);
    each window is then a slice of the box, all cut out with one gather over
    a strided view (no index arrays of the windows' size).
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


def scan(smatrix, *, positions, detectors=None, diffraction=False, defocus=0.0, Cs=0.0, aberrations=None,
         budget=None):
    """STEM signals (and 4D patterns) of probes at ``positions`` from an S-matrix.

    Parameters
    ----------
    smatrix : SMatrix
        From :func:`build_smatrix`.
    positions : (..., 2) array_like
        Probe positions [Å] inside the cell.
    detectors : dict, optional
        ``{name: (inner, outer)}`` [mrad]; default
        :func:`mbook.electron.stem.standard_detectors` of the S-matrix's aperture.
    diffraction : bool
        Also return each position's diffraction pattern, on the window's grid
        ``(nx/f, ny/f)`` (FFT order; ``f = 1``: that of :func:`mbook.electron.stem.scan`).
    defocus, Cs, aberrations
        Probe aberrations [Å] (:func:`mbook.electron.waves.aberration_phase`):
        applied to the coefficients, no new multislice.
    budget : int, optional
        Memory budget for the probes in flight [bytes].

    Returns
    -------
    dict
        As :func:`mbook.electron.stem.scan`: ``{name: (...) ndarray}`` float32
        signals (fraction of the incident current), plus ``"diffraction"``
        ``(..., wx, wy)`` float32 when asked, on the selected device.

    Notes
    -----
    The positions are copied to the host once, on entry, to place each
    probe's window; the probes are then taken in batches whose windows lie
    close together, and each batch combines the beams over the box holding
    its windows with one complex64 matrix product. With ``f = 1`` the window
    is the whole cell, where cropping is a circular shift that leaves the far
    field's intensity unchanged: the beams are then combined in Fourier space,
    ``F[Σ_k c_k S_k] = Σ_k c_k F[S_k]``, on the detectors' pixels only (every
    pixel with ``diffraction``), with one FFT per beam instead of one per
    probe. On the CPU the batches run on every core
    (:func:`mbook.core.progress.run_batches`).
    """
    if not isinstance(smatrix, SMatrix):
        raise TypeError(f"smatrix must be an SMatrix from prism.build_smatrix, got {type(smatrix).__name__}")
    grid, energy = smatrix.grid, smatrix.energy
    budget = _check_budget(budget)
    positions = stem.check_positions(positions, grid)
    detectors = _check_detectors(detectors, smatrix.semiangle_cutoff)
    xp = backend.get_array_module(smatrix.array)
    window = grids.make_grid(gpts=smatrix.window, sampling=grid.sampling)
    spectrum = waves.probe_spectrum(grid, energy=energy, semiangle_cutoff=smatrix.semiangle_cutoff, defocus=defocus,
                                    Cs=Cs, aberrations=aberrations, xp=xp)
    # Masks made on the host (the pixels they cover choose the Fourier path's columns), moved once.
    masks_host = stem.detector_masks(window, energy=energy, detectors=detectors, xp=np) if detectors else None
    beams = backend.asarray(smatrix.beams)
    flat = positions.reshape(-1, 2)
    flat_host = backend.asnumpy(flat)  # host: where each window sits, and the scan's grid (one copy, on entry)
    centres = _window_centres(flat_host, grid)
    n, n_beams, n_window = len(flat), len(smatrix.beams), window.gpts[0] * window.gpts[1]
    fourier = smatrix.interpolation == 1
    if fourier:
        pixels = np.arange(n_window) if diffraction or masks_host is None else np.flatnonzero(masks_host.any(0))
    else:
        pixels = np.arange(n_window)
    masks = None if masks_host is None else backend.asarray(masks_host.reshape(len(masks_host), -1)[:, pixels].T)
    signals = xp.empty((n, len(detectors)), xp.float32) if masks is not None else None
    patterns = xp.empty((n,) + tuple(window.gpts), xp.float32) if diffraction else None
    fixed = smatrix.nbytes + sum(a.nbytes for a in (masks, signals, patterns, spectrum) if a is not None)
    if fourier:
        # The beams' far fields on the pixels kept; per probe its coefficients, amplitudes and intensity.
        fixed += n_beams * len(pixels) * 8
        per_probe = n_beams * 8 + len(pixels) * (8 + 4 + 4)
    else:
        # The box of beams (at most the cell), and per probe its share of the combined box (at most the
        # cell), its coefficients, window wave, spectrum and intensity.
        fixed += smatrix.nbytes
        per_probe = grid.gpts[0] * grid.gpts[1] * 8 + n_beams * 8 + n_window * (8 + 8 + 4)
    columns = _columns(smatrix.beams)
    if columns is not None and FACTORISED_GAIN * (1 + len(columns)) < n_beams:
        # A grid of n_x x n_y probes factorised only if n_beams / n_x + n_columns < n_beams / GAIN: its
        # partial sums, n_columns / n_x rows of the box (or of the pixels) per probe, stay below this.
        length = len(pixels) if fourier else grid.gpts[0] * grid.gpts[1]
        per_probe += int(len(columns) * length * 8 / max(FACTORISED_GAIN, 1))
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_probe, fixed_bytes=fixed, budget=budget)
    batch = min(batch, BATCH)
    if fourier:
        batches = _tiles(centres, None, grid.gpts, batch)
        far_beams = _far_fields(smatrix.array, backend.asarray(pixels)) if len(pixels) else None
        working = batch * per_probe
    else:
        batches = _tiles(centres, window.gpts, grid.gpts, batch)
        fixed -= smatrix.nbytes  # the largest box, now known, for each batch in flight
        working = batch * per_probe + _box_bytes(batches, centres, window.gpts, n_beams)
    threads = 1
    if not backend.gpu_code_path():
        # CPU: one batch per core (single-threaded FFTs and BLAS in each), as many as the budget holds.
        room = (budget or progress.memory_budget()) - fixed
        threads = max(1, min(backend.cpu_threads(), len(batches), room // working))

    weights = _beam_weights(spectrum, beams, grid, window.gpts)
    column_kx = None if columns is None else weights[1][backend.asarray([start for start, _ in columns])]

    largest = max(len(index) for index in batches)

    def run(k):
        index = batches[k]
        grid_scan = None if columns is None else _product(flat_host[index])
        if grid_scan is not None and FACTORISED_GAIN * (n_beams / len(grid_scan[1]) + len(columns)) < n_beams:
            order, xs, ys = grid_scan  # the factorised sum pays: reorder the batch x-major
            index = index[order]

            def combine(matrix):
                return _combine_on_grid(weights, columns, column_kx, xs, ys, matrix)
        else:
            coefficients = _coefficients(weights, flat[backend.asarray(index)])

            def combine(matrix):
                return coefficients @ matrix
        rows = backend.asarray(index)
        if fourier:
            if far_beams is None:
                return
            amplitudes = combine(far_beams)  # (batch, pixels)
        else:
            psi = _window_waves(smatrix.array, combine, centres[index], window.gpts, grid.gpts)
            if len(index) == largest:  # this thread's planned in-place FFT: one shape per scan
                plan = backend.fft2_plan(psi.shape, xp.complex64, xp=xp)
                plan.array[...] = psi
                amplitudes = plan.forward().reshape(len(index), -1)
            else:  # a smaller batch (the scan's edge): no plan made for a shape seen a few times
                amplitudes = backend.fft2(psi).reshape(len(index), -1)
        intensity = amplitudes.real**2
        intensity += amplitudes.imag**2
        intensity /= xp.float32(n_window)
        if signals is not None:
            signals[rows] = intensity @ masks
        if patterns is not None:
            patterns[rows] = intensity.reshape((len(index),) + tuple(window.gpts))

    with _one_blas_thread(threads > 1):
        progress.run_batches(run, range(len(batches)), threads=threads, desc="PRISM scan")
    return stem.scan_outputs(signals, patterns, detectors, positions.shape[:-1], window.gpts)


def _far_fields(array, pixels):
    """``F[S_k]`` at the flat ``pixels`` of the cell for every beam ``(n_beams, n_pixels)``, complex64.

    One FFT per beam, a few beams at a time (the transforms' buffer stays small).
    """
    xp = backend.get_array_module(array)
    n_beams, (nx, ny) = len(array), array.shape[1:]
    out = xp.empty((n_beams, len(pixels)), xp.complex64)
    step = max(1, min(n_beams, 8))
    for start in range(0, n_beams, step):
        far = backend.fft2(array[start:start + step])
        out[start:start + step] = far.reshape(len(far), nx * ny)[:, pixels]
    return out


@contextlib.contextmanager
def _one_blas_thread(pooled):
    """Single-threaded BLAS while the scan's batches share the cores (a no-op otherwise)."""
    if not pooled:
        yield
        return
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield
