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

import math
import numbers
from dataclasses import dataclass

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.electron import multislice, physics, stem, waves


#: Most probes combined at once: consecutive positions of a raster share a compact box of the S-matrix.
BATCH = 64


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


def _propagate_beams(beams, *, transmissions, propagators, grid):
    """Exit waves ``(n, nx, ny)`` of the plane waves of ``beams`` (a kernel, on the inputs' device)."""
    xp = backend.get_array_module(transmissions)
    plan = backend.fft2_plan((len(beams),) + tuple(grid.gpts), xp.complex64, xp=xp)
    psi = _plane_waves(beams, grid, plan)
    for psi in multislice.iterate_slices(psi, transmissions, propagators, plan=plan):
        pass
    return psi.copy()


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
    # in flight holds its wave (the plan's buffer) and the copy made on the way out.
    fixed = n_beams * n * 8 + potential.shape[0] * n * 8 + n * 8
    batch = progress.plan_batches(n_items=n_beams, bytes_per_item=2 * n * 8, fixed_bytes=fixed, budget=budget)
    batch = min(batch, max_batch or batch)
    threads = 1
    if not backend.gpu_code_path() and client is None:
        # On the CPU, as stem's scans: batches near the cache, one per core at once (single-threaded FFTs
        # in each), as many at once as the budget holds beside the S-matrix.
        in_memory = batch
        batch = max(1, min(batch, stem.cpu_batch(grid)))
        threads = max(1, min(backend.cpu_threads(), -(-n_beams // batch), in_memory // batch))

    xp = backend.get_array_module(potential)
    _, transmissions, propagators = multislice.prepare(xp.zeros(grid.gpts, xp.complex64), potential, grid, energy,
                                                        slice_thickness, antialias=True)
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
            array[start:start + batch] = _propagate_beams(beams[start:start + batch], **kwargs)

        progress.run_batches(run, starts, threads=threads, **bar)
    return SMatrix(array, beams_host, grid, float(energy), semiangle, int(interpolation))


def _coefficients(spectrum, beams, positions, grid, window):
    """``c_k(r_0)`` of each probe ``(n, n_beams)``, normalised to unit current on the window."""
    xp = backend.get_array_module(spectrum)
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    bx, by = kx[beams[:, 0]], ky[beams[:, 1]]
    values = spectrum[beams[:, 0], beams[:, 1]]
    # Σ_window |Σ_k c_k e^{2πik·r}|^2 = n_window Σ_k |c_k|^2: the beams are orthogonal on the window.
    norm = xp.sqrt(xp.sum(xp.abs(values) ** 2) * (window[0] * window[1]))
    phase = positions[:, 0:1] * bx[None] + positions[:, 1:2] * by[None]
    return (values[None] / norm * xp.exp(-2j * math.pi * phase)).astype(xp.complex64)


def _window_centres(positions, grid):
    """Pixel ``(i, j)`` nearest each position ``(n, 2)`` [Å] (host int64: where each probe's window sits)."""
    return np.rint(backend.asnumpy(positions).reshape(-1, 2) / np.asarray(grid.sampling)).astype(np.int64)


def _region(centres, window, gpts):
    """Host indices (mod gpts) of the smallest box holding every window of a batch, per axis."""
    region = []
    for axis in range(2):
        low = int(centres[:, axis].min()) - window[axis] // 2
        size = int(centres[:, axis].max()) - int(centres[:, axis].min()) + window[axis]
        region.append(np.arange(low, low + min(size, gpts[axis])) % gpts[axis])
    return region


def _window_waves(array, coefficients, centres, window, gpts):
    """Exit waves ``(n, wx, wy)`` on each probe's window: ``Σ_k c_k S_k`` on the crop around its centre.

    The combination is one matrix product over the box that holds the batch's
    windows (BLAS speed), then each window is cut out of it.
    """
    xp = backend.get_array_module(array)
    rx, ry = _region(centres, window, gpts)
    box = array[:, backend.asarray(rx)][:, :, backend.asarray(ry)]  # (n_beams, bx, by)
    combined = (coefficients @ box.reshape(len(box), -1)).reshape((len(coefficients),) + box.shape[1:])
    # Offsets of each window inside the box (the box starts at its first window's corner, mod gpts).
    ox = (centres[:, 0] - window[0] // 2 - rx[0]) % gpts[0]
    oy = (centres[:, 1] - window[1] // 2 - ry[0]) % gpts[1]
    # (mod the box: a box clipped to the whole cell is one period, and a window may wrap around it)
    ix = backend.asarray((ox[:, None] + np.arange(window[0])[None]) % len(rx))
    iy = backend.asarray((oy[:, None] + np.arange(window[1])[None]) % len(ry))
    rows = xp.take_along_axis(combined, ix[:, :, None], axis=1)
    return xp.take_along_axis(rows, iy[:, None, :], axis=2)


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
    probe's window (:func:`window_centres`); each batch then combines the
    beams over the box holding its windows with one matrix product.
    """
    if not isinstance(smatrix, SMatrix):
        raise TypeError(f"smatrix must be an SMatrix from prism.build_smatrix, got {type(smatrix).__name__}")
    grid, energy = smatrix.grid, smatrix.energy
    budget = _check_budget(budget)
    positions = stem.check_positions(positions, grid)
    detectors = _check_detectors(detectors, smatrix.semiangle_cutoff)
    xp = backend.get_array_module(smatrix.array)
    window = grids.make_grid(gpts=smatrix.window, sampling=grid.sampling)
    masks = stem.detector_masks(window, energy=energy, detectors=detectors, xp=xp) if detectors else None
    spectrum = waves.probe_spectrum(grid, energy=energy, semiangle_cutoff=smatrix.semiangle_cutoff, defocus=defocus,
                                    Cs=Cs, aberrations=aberrations, xp=xp)
    beams = backend.asarray(smatrix.beams)
    flat = positions.reshape(-1, 2)
    centres = _window_centres(positions, grid)  # host: where each window sits (one copy, on entry)
    n, n_beams, n_window = len(flat), len(smatrix.beams), window.gpts[0] * window.gpts[1]
    signals = xp.empty((n, len(detectors)), xp.float32) if masks is not None else None
    patterns = xp.empty((n,) + tuple(window.gpts), xp.float32) if diffraction else None
    fixed = smatrix.nbytes + sum(a.nbytes for a in (masks, signals, patterns, spectrum) if a is not None)
    # Per probe: its share of the box (at most the cell), its coefficients, window wave, spectrum and
    # intensity; the box of beams itself is at most a second S-matrix, counted as fixed.
    fixed += smatrix.nbytes
    per_probe = grid.gpts[0] * grid.gpts[1] * 8 + n_beams * 8 + n_window * (8 + 8 + 4)
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_probe, fixed_bytes=fixed, budget=budget)
    batch = min(batch, BATCH)  # consecutive positions of a raster: a compact box
    for start in progress.progress(range(0, n, batch), desc="PRISM scan"):
        chunk = flat[start:start + batch]
        coefficients = _coefficients(spectrum, beams, chunk, grid, window.gpts)
        psi = _window_waves(smatrix.array, coefficients, centres[start:start + batch], window.gpts, grid.gpts)
        far = backend.fft2(psi)
        intensity = ((far.real**2 + far.imag**2) / xp.float32(n_window)).astype(xp.float32)
        if signals is not None:
            signals[start:start + batch] = xp.tensordot(intensity, masks, axes=([-2, -1], [-2, -1]))
        if patterns is not None:
            patterns[start:start + batch] = intensity
    return stem.scan_outputs(signals, patterns, detectors, positions.shape[:-1], window.gpts)
