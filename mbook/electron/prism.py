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

This module builds the S-matrix and checks and plans the scan;
:mod:`mbook.electron.prism_scan` holds the scan's kernels (the probes'
coefficients, their windows and batches, the factorised sum over a grid of
probes, the ``f = 1`` far-field combination).

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

import math
import numbers
from dataclasses import dataclass

import numpy as np

from mbook.core import backend, checks, fft_plans, grids, progress
from mbook.electron import multislice, physics, prism_scan, stem, stem_detectors, waves


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
    plan = fft_plans.fft2_plan((len(beams),) + tuple(grid.gpts), xp.complex64, xp=xp)
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
        shared = {k: client.scatter(v, broadcast=True, hash=False) if k != "grid" else v for k, v in kwargs.items()}
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
        :func:`mbook.electron.stem_detectors.standard_detectors` of the S-matrix's aperture.
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
    detectors = stem_detectors.scan_detectors(detectors, smatrix.semiangle_cutoff)
    xp = backend.get_array_module(smatrix.array)
    window = grids.make_grid(gpts=smatrix.window, sampling=grid.sampling)
    spectrum = waves.probe_spectrum(grid, energy=energy, semiangle_cutoff=smatrix.semiangle_cutoff, defocus=defocus,
                                    Cs=Cs, aberrations=aberrations, xp=xp)
    # Masks made on the host (the pixels they cover choose the Fourier path's columns), moved once.
    masks_host = stem_detectors.detector_masks(window, energy=energy, detectors=detectors, xp=np) if detectors else None
    beams = backend.asarray(smatrix.beams)
    flat = positions.reshape(-1, 2)
    flat_host = backend.asnumpy(flat)  # host: where each window sits, and the scan's grid (one copy, on entry)
    centres = prism_scan.window_centres(flat_host, grid)
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
    columns = prism_scan.columns(smatrix.beams)
    gain = prism_scan.FACTORISED_GAIN
    if columns is not None and gain * (1 + len(columns)) < n_beams:
        # A grid of n_x x n_y probes factorised only if n_beams / n_x + n_columns < n_beams / GAIN: its
        # partial sums, n_columns / n_x rows of the box (or of the pixels) per probe, stay below this.
        length = len(pixels) if fourier else grid.gpts[0] * grid.gpts[1]
        per_probe += int(len(columns) * length * 8 / max(gain, 1))
    padded, copies = None, 1.0  # copies of the beams (or their box) held per batch
    if columns is not None and backend.gpu_code_path():
        # On a GPU every column's sum in one batched product, over the beams' rows gathered into a block
        # padded to the longest column: that copy, index.size / n_beams times the beams, is held too.
        index, weight = prism_scan.padded_columns(columns)
        padded = backend.asarray(index), backend.asarray(weight)
        copies += index.size / n_beams
        fixed += int((copies - 1) * (n_beams * len(pixels) * 8 if fourier else smatrix.nbytes))
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_probe, fixed_bytes=fixed, budget=budget)
    batch = min(batch, prism_scan.GPU_BATCH if backend.gpu_code_path() else prism_scan.BATCH)
    if fourier:
        batches = prism_scan.tiles(centres, None, grid.gpts, batch)
        far_beams = prism_scan.far_fields(smatrix.array, backend.asarray(pixels)) if len(pixels) else None
        working = batch * per_probe
    else:
        batches = prism_scan.tiles(centres, window.gpts, grid.gpts, batch)
        fixed -= int(copies * smatrix.nbytes)  # the largest box, now known, instead
        working = batch * per_probe + int(copies * prism_scan.box_bytes(batches, centres, window.gpts, n_beams))
    threads = 1
    if not backend.gpu_code_path():
        # CPU: one batch per core (single-threaded FFTs and BLAS in each), as many as the budget holds.
        room = (budget or progress.memory_budget()) - fixed
        threads = max(1, min(backend.cpu_threads(), len(batches), room // working))

    weights = prism_scan.beam_weights(spectrum, beams, grid, window.gpts)
    column_kx = None if columns is None else weights[1][backend.asarray([start for start, _ in columns])]

    largest = max(len(index) for index in batches)

    def run(k):
        index = batches[k]
        grid_scan = None if columns is None else prism_scan.product(flat_host[index])
        if grid_scan is not None and gain * (n_beams / len(grid_scan[1]) + len(columns)) < n_beams:
            order, xs, ys = grid_scan  # the factorised sum pays: reorder the batch x-major
            index = index[order]

            def combine(matrix):
                return prism_scan.combine_on_grid(weights, columns, column_kx, xs, ys, matrix, padded=padded)
        else:
            coefficients = prism_scan.coefficients(weights, flat[backend.asarray(index)])

            def combine(matrix):
                return coefficients @ matrix
        rows = backend.asarray(index)
        if fourier:
            if far_beams is None:
                return
            amplitudes = combine(far_beams)  # (batch, pixels)
        else:
            psi = prism_scan.window_waves(smatrix.array, combine, centres[index], window.gpts, grid.gpts)
            if len(index) == largest:  # this thread's planned in-place FFT: one shape per scan
                plan = fft_plans.fft2_plan(psi.shape, xp.complex64, xp=xp)
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

    progress.run_batches(run, range(len(batches)), threads=threads, desc="PRISM scan")
    return stem.scan_outputs(signals, patterns, detectors, positions.shape[:-1], window.gpts)


