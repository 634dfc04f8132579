"""Scanning transmission electron microscopy: scans, detectors, 4D-STEM.

A focused probe (:func:`mbook.electron.waves.probe`) is placed at each scan position,
propagated through the specimen by multislice, and its far-field intensity
``|F[ψ_exit]|^2`` is integrated over annular detectors (bright field,
annular bright field, annular dark field, HAADF: :mod:`mbook.electron.stem_detectors`)
or kept whole (4D-STEM).
Probes are propagated in batches sized to a memory budget
(:func:`mbook.core.progress.plan_batches`); a Dask client may share the batches
out, with results identical to the serial run.

Angles are in mrad; positions and lengths in Å.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.electron import stem
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> positions = stem.scan_positions(start=(1.0, 1.0), end=(2.0, 2.0), sampling=0.5)
>>> positions.shape
(2, 2, 2)
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, fft_plans, grids, progress
from mbook.electron import multislice, physics, stem_detectors, waves

#: Bytes of waves per batch on the CPU: a batch that stays near the core's cache runs faster per probe
#: (measured on a 2-core Xeon with 2 MiB L2: 4 probes of 324² beat 8 by 8-18 %, 128 of 216² were 2x slower).
CPU_BATCH_BYTES = 4 * 2**20
#: Most probes per batch on the CPU, whatever their size.
CPU_BATCH = 8


def cpu_batch(grid) -> int:
    """Probes per batch on the CPU: as many complex64 waves as fit :data:`CPU_BATCH_BYTES`, 1 to :data:`CPU_BATCH`."""
    checks.check_grid(grid)
    return int(min(CPU_BATCH, max(1, CPU_BATCH_BYTES // (8 * grid.gpts[0] * grid.gpts[1]))))


def nyquist_sampling(energy, semiangle_cutoff) -> float:
    """Scan step that samples a probe's image at Nyquist, ``λ / (4 α)`` [Å].

    The incoherent image of a probe of semi-angle α holds frequencies up to
    ``2α/λ``; Nyquist needs half that period.
    """
    semiangle = checks.check_positive(semiangle_cutoff, "semiangle_cutoff", 1)[0]
    return physics.wavelength(energy) / (4 * semiangle * 1e-3)


def scan_positions(*, start, end, sampling=None, energy=None, semiangle_cutoff=None, endpoint=False):
    """A raster of probe positions from ``start`` to ``end`` with step ``sampling``.

    Parameters
    ----------
    start, end : (float, float)
        Corners of the scanned rectangle [Å].
    sampling : float or (float, float), optional
        Scan step [Å]; default the probe's Nyquist step :func:`nyquist_sampling`,
        which needs ``energy`` [eV] and ``semiangle_cutoff`` [mrad].
    endpoint : bool
        Include ``end`` (False: the raster tiles a periodic cell seamlessly).

    Returns
    -------
    (n_x, n_y, 2) ndarray, float64
        Positions [Å], x then y, on the selected device.
    """
    start, end = (np.asarray([checks.check_number(v, name, units="Å") for v in checks.as_tuple(value, name, 2)])
                  for value, name in ((start, "start"), (end, "end")))
    if np.any(end <= start):
        raise ValueError(f"end must exceed start along both axes, got start={start.tolist()}, end={end.tolist()}")
    if energy is not None:
        physics.check_energy(energy)
    if semiangle_cutoff is not None:
        semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    if sampling is None:
        if energy is None or semiangle_cutoff is None:
            raise ValueError("give the scan sampling [Å], or energy and semiangle_cutoff for the Nyquist step")
        sampling = nyquist_sampling(energy, semiangle_cutoff)
    step = np.asarray(checks.check_positive(sampling, "sampling", 2))
    n = np.floor((end - start) / step + 1e-9).astype(int) + (1 if endpoint else 0)
    axes = [s + d * np.arange(max(k, 1)) for s, d, k in zip(start, step, n)]
    return backend.asarray(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1))


def check_positions(positions, grid):
    """Scan positions ``(..., 2)`` [Å] on the selected device, float64, inside the cell (one copy to check).

    Shared by every scan of the package (:func:`scan`, :func:`mbook.electron.prism.scan`,
    :func:`mbook.electron.lma.scan`).

    Raises
    ------
    TypeError
        When ``grid`` is not a 2D grid.
    ValueError
        Naming ``positions``: a wrong shape, or positions outside ``[0, extent)``.
    """
    checks.check_grid(grid, ndim=2)
    positions = checks.check_array(positions, "positions", min_ndim=1, real=True).astype(np.float64)
    if positions.shape[-1] != 2:
        raise ValueError(f"positions must be a finite (..., 2) array [Å], got shape {positions.shape}")
    xp = backend.get_array_module(positions)
    flat = positions.reshape(-1, 2)
    (low_x, low_y), (high_x, high_y) = backend.asnumpy(xp.stack([flat.min(axis=0), flat.max(axis=0)])).tolist()
    if min(low_x, low_y) < 0 or high_x >= grid.extent[0] or high_y >= grid.extent[1]:
        raise ValueError(
            f"scan positions span x {low_x:.3f}..{high_x:.3f} Å, y {low_y:.3f}..{high_y:.3f} Å, outside the "
            f"cell [0, {grid.extent[0]:.3f}) x [0, {grid.extent[1]:.3f}) Å"
        )
    return positions


def _bytes_per_probe(grid, diffraction):
    # ψ, its FFT and one product (complex64 each), plus a float32 pattern in flight if kept (the
    # patterns' output array is counted apart, in full).
    n = grid.gpts[0] * grid.gpts[1]
    return n * (3 * 8 + (4 if diffraction else 0))


def plan_scan(n_probes, grid, *, fixed_bytes, diffraction=False, budget=None, max_batch=None, client=None):
    """Probes per batch and batches run at once for a scan, under a memory budget.

    All batches in flight together hold at most the budget. On the GPU path
    (a GPU, or the strict stand-in that checks it) and with a Dask client, one
    batch runs at a time in this process, as large as the budget allows (up
    to ``max_batch``): the batch size does not depend on the host's cores. On
    the CPU one batch runs per core, each of at most :func:`cpu_batch`
    probes (or ``max_batch``); with a budget too small for that, fewer probes
    per batch, then fewer batches at once.

    Parameters
    ----------
    n_probes : int
        Scan positions.
    grid : Grid
        Simulation grid [Å].
    fixed_bytes : int
        Memory held whatever the batch size: slices, propagators, masks,
        the output patterns [bytes].
    diffraction : bool
        Whether patterns are kept (a pattern in flight per probe).
    budget : int, optional
        [bytes]; default :func:`mbook.core.progress.memory_budget`.
    max_batch : int, optional
        Most probes per batch.
    client : dask.distributed.Client, optional
        Batches go to a Dask cluster (no threads here).

    Returns
    -------
    (batch, threads) : (int, int)

    Raises
    ------
    MemoryError
        When not even one probe fits beside the fixed memory.
    """
    checks.check_grid(grid)
    checks.check_client(client)
    n_probes = checks.check_count(n_probes, "n_probes")
    max_batch = None if max_batch is None else checks.check_count(max_batch, "max_batch")
    in_memory = progress.plan_batches(n_items=n_probes, bytes_per_item=_bytes_per_probe(grid, diffraction),
                                      fixed_bytes=fixed_bytes, budget=budget)
    if backend.gpu_code_path() or client is not None:
        return min(in_memory, max_batch or in_memory), 1
    cores = backend.cpu_threads()
    batch = max(1, min(max_batch or cpu_batch(grid), in_memory // cores or 1))
    threads = max(1, min(cores, in_memory // batch, math.ceil(n_probes / batch)))
    return batch, threads


def _scan_batch(positions, *, transmissions, propagators, masks, grid, probe, diffraction):
    """Signals ``(n, n_detectors)`` and patterns ``(n, nx, ny)`` (or None) of one batch, on its device."""
    xp = backend.get_array_module(transmissions)
    plan = fft_plans.fft2_plan((len(positions),) + tuple(grid.gpts), xp.complex64, xp=xp)
    psi = waves.place_probes(probe, grid, positions, plan=plan)
    for psi in multislice.iterate_slices(psi, transmissions, propagators, plan=plan):
        pass
    spectrum = plan.forward()
    intensity = (spectrum.real**2 + spectrum.imag**2) * xp.float32(plan.scale)  # sums to 1 per probe
    signals = xp.tensordot(intensity, masks, axes=([-2, -1], [-2, -1])) if masks is not None else None
    return signals, (intensity.astype(xp.float32, copy=False) if diffraction else None)


def _scan_batch_one_thread(positions, **kwargs):
    """:func:`_scan_batch` with single-threaded CPU FFTs: the batches themselves run in parallel
    (threads here, or Dask workers), and every batch gets the same FFT plans, so the result does
    not depend on where it ran."""
    with backend.fft_workers(1):
        return _scan_batch(positions, **kwargs)


def scan(potential, *, grid, energy, slice_thickness, semiangle_cutoff, positions, detectors=None,
         diffraction=False, defocus=0.0, Cs=0.0, aberrations=None, budget=None, max_batch=None, client=None):
    """Simulate a STEM scan through a sliced potential.

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å] (e.g. :func:`mbook.electron.potentials.projected_potential`).
    grid : Grid
        Its 2D grid [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        Thickness of every slice, or of each [Å].
    semiangle_cutoff : float
        Probe-forming aperture [mrad].
    positions : (..., 2) array_like
        Probe positions [Å], inside the cell (e.g. :func:`scan_positions`).
    detectors : dict, optional
        ``{name: (inner, outer)}`` [mrad]; default :func:`mbook.electron.stem_detectors.standard_detectors`.
    diffraction : bool
        Also return the full diffraction pattern at each position (4D-STEM).
    defocus, Cs, aberrations
        Probe aberrations, see :func:`mbook.electron.waves.aberration_phase` [Å].
    budget : int, optional
        Memory budget [bytes] of the device that computes (with the 4D
        output counted in full); default :func:`mbook.core.progress.memory_budget`.
    max_batch : int, optional
        Most probes propagated at once; default :func:`cpu_batch` on the CPU
        (larger batches fall out of cache and run slower per probe), where one
        batch runs on each core at a time, and no limit but the budget on a GPU
        (see :func:`plan_scan`).
    client : dask.distributed.Client, optional
        Share the batches out over a Dask cluster (same results as a serial
        run with the same batches); the results are fetched one batch at a
        time into the output.

    Returns
    -------
    dict
        On the selected device: ``{name: (...) ndarray}`` detector signals
        (float32, fraction of the incident current, shaped like
        ``positions[..., 0]``), plus ``"diffraction"``: ``(..., nx, ny)``
        float32 patterns in FFT order when requested.
    """
    checks.check_grid(grid)
    physics.check_energy(energy)
    potential = checks.check_array(potential, "potential", real=True)
    positions = check_positions(positions, grid)
    detectors = stem_detectors.scan_detectors(detectors, semiangle_cutoff)  # {}: diffraction patterns only
    checks.check_client(client)
    xp = backend.get_array_module(potential)
    # Refuse from the shapes, before building the transmission functions (which the plan below counts):
    # complex64 transmissions per slice, a propagator and the probe, detector masks, outputs.
    n_positions, pixels = math.prod(positions.shape[:-1]), math.prod(grid.gpts)
    estimate = 8 * pixels * (potential.shape[0] + 2) + 4 * pixels * len(detectors)
    estimate += 4 * n_positions * (len(detectors) + (pixels if diffraction else 0))
    plan_scan(n_positions, grid, fixed_bytes=estimate, diffraction=diffraction, budget=budget,
              max_batch=max_batch, client=client)
    masks = stem_detectors.detector_masks(grid, energy=energy, detectors=detectors, xp=xp) if detectors else None
    _, transmissions, propagators = multislice.prepare(xp.zeros(grid.gpts, xp.complex64), potential, grid,
                                                        energy, slice_thickness, antialias=True)
    probe = waves.probe_spectrum(grid, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus, Cs=Cs,
                                 aberrations=aberrations, xp=xp)

    flat = positions.reshape(-1, 2)
    n = len(flat)
    signals = xp.empty((n, len(detectors)), xp.float32) if masks is not None else None
    patterns = xp.empty((n,) + tuple(grid.gpts), xp.float32) if diffraction else None
    fixed = transmissions.nbytes + sum({id(p): p.nbytes for p in propagators}.values()) + probe.nbytes
    fixed += sum(a.nbytes for a in (masks, signals, patterns) if a is not None)  # the 4D output in full
    batch, threads = plan_scan(n, grid, fixed_bytes=fixed, diffraction=diffraction, budget=budget,
                               max_batch=max_batch, client=client)
    starts = range(0, n, batch)
    kwargs = dict(transmissions=transmissions, propagators=propagators, masks=masks, grid=grid, probe=probe,
                  diffraction=diffraction)

    def store(start, result):  # into the outputs: no list of batches to concatenate (and hold twice)
        stop = min(start + batch, n)
        if signals is not None:
            signals[start:stop] = result[0]
        if patterns is not None:
            patterns[start:stop] = result[1]

    if client is not None:
        # hash=False: each call's copies under their own keys, so releasing one call's copies cannot take
        # an equal array from under a later call's batches
        shared = {k: client.scatter(v, broadcast=True, hash=False)
                  if k in ("transmissions", "propagators", "masks", "probe") else v
                  for k, v in kwargs.items()}
        futures = client.map(_scan_batch_one_thread, [flat[start:start + batch] for start in starts], pure=False,
                             **shared)
        for start, future in zip(starts, progress.progress(futures, desc="STEM scan")):
            store(start, future.result())
            future.release()  # its result is in the output now
    else:
        progress.run_batches(lambda start: store(start, _scan_batch(flat[start:start + batch], **kwargs)), starts,
                             threads=threads, desc="STEM scan")

    return scan_outputs(signals, patterns, detectors, positions.shape[:-1], grid.gpts)


def scan_outputs(signals, patterns, detectors, scan_shape, pattern_gpts) -> dict:
    """What a scan returns: one image per detector, and the diffraction patterns when recorded.

    Parameters
    ----------
    signals : (n, n_detectors) array or None
        Detector signals, one row per position in scan order.
    patterns : (n, px, py) array or None
        Diffraction patterns in scan order.
    detectors : dict
        The detectors, in the order of the signals' columns.
    scan_shape : tuple of int
        Shape of the scan (the positions' shape without its last axis).
    pattern_gpts : (int, int)
        Pixels of a pattern.

    Returns
    -------
    dict
        ``{name: image of scan_shape}`` per detector, and ``"diffraction"``: ``scan_shape + pattern_gpts``.
    """
    out = {}
    if signals is not None:
        for index, name in enumerate(detectors):
            out[name] = signals[:, index].reshape(tuple(scan_shape))
    if patterns is not None:
        out["diffraction"] = patterns.reshape(tuple(scan_shape) + tuple(pattern_gpts))
    return out


def frozen_phonon_scan(configurations, *, sampling, slice_thickness, parametrization="kirkland", keep_each=True,
                       **scan_kwargs):
    """Average of :func:`scan` over frozen-phonon configurations (incoherent sum).

    Parameters
    ----------
    configurations : iterable of ase.Atoms
        Displaced copies of one specimen (:func:`mbook.electron.phonons.frozen_phonon_configurations`).
    sampling, slice_thickness, parametrization
        Passed to :func:`mbook.electron.potentials.projected_potential`.
    keep_each : bool
        Keep each configuration's result. With ``diffraction=True`` that is
        one 4D array per configuration, beside what each :func:`scan`'s
        budget counts; ``False`` keeps the running sum alone.
    **scan_kwargs
        Passed to :func:`scan` (energy, semiangle_cutoff, positions, ...).

    Returns
    -------
    (dict, list of dict or None)
        The configuration average, and each configuration's result (to follow
        the convergence of the average; None without ``keep_each``), on the
        selected device.
    """
    from ase import Atoms

    from mbook.electron import potentials

    if isinstance(configurations, (str, bytes)) or not hasattr(configurations, "__iter__"):
        raise TypeError(f"configurations must be an iterable of ase.Atoms, got {configurations!r:.60}")
    configurations = list(configurations)  # a few small Atoms: checked before any scan
    for atoms in configurations:
        if not isinstance(atoms, Atoms):
            raise TypeError(f"configurations must hold ase.Atoms, got {type(atoms).__name__}")
    if not configurations:
        raise ValueError("configurations is empty: give at least one frozen-phonon configuration")
    total, each, count = None, [] if keep_each else None, 0
    for atoms in configurations:
        potential, grid = potentials.projected_potential(atoms, sampling, slice_thickness,
                                                         parametrization=parametrization, return_grid=True)
        result = scan(potential, grid=grid, slice_thickness=potentials.slice_thicknesses(atoms, slice_thickness),
                      **scan_kwargs)
        if total is None:
            total = {key: value.copy() for key, value in result.items()}
        else:
            for key, value in result.items():
                total[key] += value
        count += 1
        if keep_each:
            each.append(result)
    if total is None:
        raise ValueError("configurations is empty: give at least one frozen-phonon configuration")
    return {key: value / count for key, value in total.items()}, each


def source_size_blur(image, *, sampling, source_size):
    """Partial spatial coherence in STEM: blur the image by a Gaussian source.

    Parameters
    ----------
    image : (n_x, n_y) array_like
        STEM image on a regular scan.
    sampling : float or (float, float)
        Scan step [Å].
    source_size : float
        Standard deviation of the demagnified source [Å] (≈ 0.3-0.6 Å for a
        cold field emitter; Kirkland 2010, sec. 5.3 style).

    Returns
    -------
    (n_x, n_y) ndarray, float64
        The blurred image (periodic boundary, computed by FFT), on the selected device.
    """
    image = checks.check_array(image, "image", ndim=2, real=True).astype(np.float64)
    source_size = checks.check_positive_number(source_size, "source_size", allow_zero=True)
    xp = backend.get_array_module(image)
    grid = grids.make_grid(gpts=image.shape, sampling=sampling)
    k2 = grids.frequency_squared(grid, xp=xp)
    return backend.ifft2(backend.fft2(image) * xp.exp(-2 * math.pi**2 * source_size**2 * k2)).real
