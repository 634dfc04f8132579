"""Electron ptychography: the forward model of low-dose 4D-STEM data through the multislice.

A convergent, usually defocused, probe ``P`` is placed at scan positions
``r_j``; the specimen's slices (phase gratings ``t_s = exp(i σ v_s)``, from
:func:`mbook.electron.multislice.transmission_function`) act on it one after
another with Fresnel propagation between them (the multislice,
:func:`mbook.electron.multislice.iterate_slices`), and a pixelated detector
in the far field records

``I_j(k) = |F[ψ_exit,j](k)|²``,   ``Σ_k I_j(k) = 1`` for an empty specimen,

a fraction of the incident electrons per detector pixel. At a dose ``D``
[e/Å²] and a scan step ``Δ`` [Å], ``D Δ²`` electrons hit each position and
the counts are Poisson (:func:`low_dose_counts`).

The detector sees a *window*: ``gpts`` pixels of the specimen's sampling
around each probe position, so its pixels are ``1 / (gpts · sampling)``
apart in spatial frequency and reach the specimen grid's Nyquist frequency.
The wave is propagated on the window (periodic on it), cut from the whole
specimen at each position: the probe must fit the window
(:func:`window_corners`). Positions need not be on the grid: each
window's corner is the nearest pixel, and the probe is shifted by the
remaining sub-pixel offset in Fourier space (:func:`mbook.electron.waves.place_probes`).

Patterns are in FFT order (zero frequency at index 0, as :func:`mbook.electron.stem.scan`);
``numpy.fft.fftshift`` centres them for display. Positions are ``[x, y]`` in Å.
The reconstruction is in :mod:`mbook.multimodal.reconstruction`; drift in
:mod:`mbook.multimodal.drift`.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.multimodal import ptychography
>>> grid = grids.make_grid(gpts=(48, 48), sampling=0.5)
>>> potential = np.zeros((2, 48, 48), np.float32)                 # vacuum
>>> positions = np.array([[12.0, 12.0], [12.3, 12.6]])
>>> patterns = ptychography.diffraction_intensities(
...     potential, grid=grid, energy=300e3, slice_thickness=10.0, semiangle_cutoff=10.0,
...     defocus=200.0, positions=positions, gpts=32)
>>> patterns.shape, round(float(patterns[0].sum()), 3)
((2, 32, 32), 1.0)
"""

from __future__ import annotations

import functools

import numpy as np

from mbook.core import backend, checks, detection, fusion, grids, progress, scatter
from mbook.electron import multislice, physics, waves


def check_positions(positions, object_gpts, sampling, gpts):
    """Scan positions ``(n, 2)`` [Å] on the selected device, float64, whose windows fit the object.

    A window of ``gpts`` pixels is centred at each position (the probe at its
    pixel ``gpts // 2``); every window must lie inside the object's
    ``object_gpts`` pixels. One copy of the extremes to the host.

    Raises
    ------
    ValueError
        Naming ``positions``, the range they span and the allowed range [Å];
        or when ``gpts`` exceeds the object (a probe larger than the grid).
    """
    object_gpts = checks.check_gpts(object_gpts, 2, name="object_gpts")
    gpts = checks.check_gpts(gpts, 2)
    sampling = checks.check_positive(sampling, "sampling", 2)
    if gpts[0] > object_gpts[0] or gpts[1] > object_gpts[1]:
        raise ValueError(f"the probe's window (gpts={gpts}) is larger than the object grid (object_gpts={object_gpts}): "
                         "use a smaller window or a larger object")
    positions = checks.check_array(positions, "positions", ndim=2, real=True).astype(np.float64)
    if positions.shape[1] != 2:
        raise ValueError(f"positions must be an (n, 2) array of x, y [Å], got shape {positions.shape}")
    low, high = allowed_range(object_gpts, sampling, gpts)
    xp = backend.get_array_module(positions)
    extremes = backend.asnumpy(xp.concatenate([positions.min(axis=0), positions.max(axis=0)])).tolist()
    if any(extremes[a] < low[a] or extremes[2 + a] > high[a] for a in range(2)):
        raise ValueError(
            f"positions span x {extremes[0]:.3f}..{extremes[2]:.3f} Å, y {extremes[1]:.3f}..{extremes[3]:.3f} Å, "
            f"outside the object: a window of {gpts} pixels fits only for x in [{low[0]:.3f}, {high[0]:.3f}] "
            f"and y in [{low[1]:.3f}, {high[1]:.3f}] Å"
        )
    return positions


def allowed_range(object_gpts, sampling, gpts):
    """Lowest and highest position [Å] per axis whose window (centred at pixel ``gpts // 2``) fits the object.

    Returns
    -------
    (low, high) : tuple of (float, float)
    """
    object_gpts = checks.check_gpts(object_gpts, 2, name="object_gpts")
    sampling = checks.check_positive(sampling, "sampling", 2)
    gpts = checks.check_gpts(gpts, 2)
    if any(g > n for g, n in zip(gpts, object_gpts)):
        raise ValueError(f"gpts {gpts} (the probe's window) must not exceed object_gpts {object_gpts}")
    low = tuple(g // 2 * d for g, d in zip(gpts, sampling))
    high = tuple((n - g + g // 2) * d for n, g, d in zip(object_gpts, gpts, sampling))
    return low, high


def window_corners(positions, sampling, gpts, object_gpts):
    """Integer corner of each window and the probe's sub-pixel offset from the window's centre (a kernel).

    Parameters
    ----------
    positions : (n, 2) ndarray
        [Å], on any device.
    sampling : (float, float)
        [Å].
    gpts, object_gpts : (int, int)
        Window and object pixels.

    Returns
    -------
    corners : (n, 2) ndarray, int64
        First pixel of each window, clipped into the object.
    offsets : (n, 2) ndarray, the dtype of ``positions``
        ``r - (corner + gpts // 2) · sampling`` [Å], within half a pixel unless clipped.
    """
    xp = backend.get_array_module(positions)
    d, half, high = _window_constants(tuple(sampling), tuple(gpts), tuple(object_gpts), positions.dtype.str, xp)
    # Whole pixel numbers held exactly in the positions' precision (int64 times float32 would promote
    # the offsets, and with them the phase ramps and every wave of the reconstruction, to double
    # precision); one kernel on a GPU, then the cast of the corners to integers.
    corners, offsets = _corners_and_offsets(positions, d, half, high)
    return corners.astype(xp.int64), offsets


@fusion.elementwise
def _corners_and_offsets(xp, positions, sampling, half, high):
    corners = xp.minimum(xp.maximum(xp.rint(positions / sampling) - half, 0), high)
    return corners, positions - (corners + half) * sampling


@functools.lru_cache(maxsize=32)
def _window_constants(sampling, gpts, object_gpts, dtype, xp):
    """``sampling``, ``gpts // 2`` and the highest corner as device arrays of the positions' dtype, made once
    per scan geometry: three copies to the device per batch otherwise. Never written to."""
    return (xp.asarray(np.asarray(sampling, dtype=dtype)), xp.asarray(np.asarray([g // 2 for g in gpts], dtype)),
            xp.asarray(np.asarray([n - g for n, g in zip(object_gpts, gpts)], dtype)))


@functools.lru_cache(maxsize=32)
def _aranges(gpts, xp):
    """``arange(w)[None]`` per axis of a window, on the device once (never written to)."""
    return tuple(xp.arange(g)[None] for g in gpts)


@functools.lru_cache(maxsize=32)
def frequencies(gpts, sampling, dtype, xp):
    """FFT-order spatial frequencies ``k_x``, ``k_y`` [1/Å] of a window on ``xp``'s device, made once per
    window (a kernel's constant: never written to).

    Parameters
    ----------
    gpts : (int, int)
    sampling : (float, float)
        [Å].
    dtype : str
        NumPy dtype string of the result, e.g. ``"<f4"``.
    xp : module
        Array module of the device.

    Returns
    -------
    tuple of (wx,), (wy,) ndarray
    """
    return (xp.asarray(np.fft.fftfreq(gpts[0], sampling[0]).astype(dtype)),
            xp.asarray(np.fft.fftfreq(gpts[1], sampling[1]).astype(dtype)))


def window_indices(corners, gpts, object_gpts):
    """Flat indices ``(n, wx, wy)`` into the object's ``(nx, ny)`` pixels of each window (a kernel)."""
    xp = backend.get_array_module(corners)
    rows, cols = _aranges(tuple(gpts), xp)
    return _flat_index(corners[:, 0, None, None], rows[:, :, None], corners[:, 1, None, None], cols[:, None, :],
                       object_gpts[1])


@fusion.elementwise
def _flat_index(xp, row, rows, column, columns, width):
    """``(row + rows) · width + column + columns``, broadcast: one kernel on a GPU."""
    return (row + rows) * width + (column + columns)


def centred_probe(gpts, *, sampling, energy, semiangle_cutoff, defocus=0.0, Cs=0.0, electrons=1.0):
    """A probe centred at pixel ``gpts // 2`` of its window, ``Σ |P|² = electrons``.

    Parameters
    ----------
    gpts : int or (int, int)
        Window [pixels].
    sampling : float or (float, float)
        [Å].
    energy : float
        [eV].
    semiangle_cutoff : float
        [mrad].
    defocus, Cs : float
        [Å] (positive defocus: underfocus, as :func:`mbook.electron.waves.aberration_phase`).
    electrons : float
        Electrons per position, the probe's total intensity.

    Returns
    -------
    (wx, wy) ndarray, complex64
        On the selected device.
    """
    gpts = checks.check_gpts(gpts, 2)
    sampling = checks.check_positive(sampling, "sampling", 2)
    physics.check_energy(energy)
    electrons = checks.check_positive_number(electrons, "electrons")
    window = grids.make_grid(gpts=gpts, sampling=sampling)
    spectrum = waves.probe_spectrum(window, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus,
                                    Cs=Cs)
    centre = backend.asarray([[g // 2 * d for g, d in zip(gpts, sampling)]])
    return waves.place_probes(spectrum, window, centre)[0] * np.float32(np.sqrt(electrons))


def detector_mask(gpts, *, sampling):
    """The detector pixels the forward model fills, 1 inside ``|k| <= (2/3) k_Nyquist``, 0 outside (FFT order).

    The multislice band-limits every slice and propagator to 2/3 of the
    Nyquist frequency (:func:`mbook.electron.multislice.antialias_aperture`),
    so :func:`diffraction_intensities` records nothing beyond: a reconstruction
    fits only these pixels (``detector`` of :func:`mbook.multimodal.reconstruction.reconstruct`).

    Parameters
    ----------
    gpts : int or (int, int)
        Detector pixels.
    sampling : float or (float, float)
        Object pixel [Å].

    Returns
    -------
    (gx, gy) ndarray, float32
        On the selected device.
    """
    window = grids.make_grid(gpts=checks.check_gpts(gpts, 2), sampling=checks.check_positive(sampling, "sampling", 2))
    return multislice.antialias_aperture(window)


def _bytes_per_position(gpts, n_slices):
    # the probe, its FFT work buffer, the gathered slices (complex64 each), the float32 pattern
    n = gpts[0] * gpts[1]
    return n * (8 * (2 + n_slices) + 4)


def diffraction_intensities(potential, *, grid, energy, slice_thickness, semiangle_cutoff, positions, gpts,
                            defocus=0.0, Cs=0.0, budget=None, show_progress=False):
    """Noise-free 4D-STEM patterns of a probe scanned over a sliced specimen (memory-bounded).

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å], e.g. from
        :func:`mbook.electron.potentials.projected_potential`.
    grid : Grid
        Its grid [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        [Å].
    semiangle_cutoff : float
        Probe-forming aperture [mrad].
    positions : (n, 2) array_like
        Probe positions [Å] (e.g. the true, drifted ones of
        :func:`mbook.multimodal.drift.drifted_positions`, flattened); every window must fit the specimen.
    gpts : int or (int, int)
        Detector (and window) pixels.
    defocus, Cs : float
        Probe aberrations [Å].
    budget : int, optional
        Memory budget [bytes]; default :func:`mbook.core.progress.memory_budget`.
    show_progress : bool
        A progress bar over the batches.

    Returns
    -------
    (n, gx, gy) ndarray, float32
        Fraction of the incident electrons per detector pixel, FFT order, on the selected device.

    Raises
    ------
    ValueError
        Positions outside the specimen, a window larger than the grid, bad parameters.
    MemoryError
        When the output and one position exceed the budget.
    """
    physics.check_energy(energy)
    grid = checks.check_grid(grid, ndim=2)
    potential = checks.check_array(potential, "potential", ndim=3, real=True)
    gpts = checks.check_gpts(gpts, 2)
    if potential.shape[1:] != tuple(grid.gpts):
        raise ValueError(f"potential slices {potential.shape[1:]} do not match grid gpts {grid.gpts}")
    positions = check_positions(positions, grid.gpts, grid.sampling, gpts)
    thicknesses = multislice.check_thicknesses(slice_thickness, len(potential))
    xp = backend.get_array_module(potential)
    n, n_slices = len(positions), len(potential)
    transmissions = multislice.transmission_function(potential, energy=energy, grid=grid).reshape(n_slices, -1)
    window = grids.make_grid(gpts=gpts, sampling=grid.sampling)
    propagators = multislice.slice_propagators(window, energy=energy, thicknesses=thicknesses, xp=xp)
    spectrum = waves.probe_spectrum(window, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus,
                                    Cs=Cs, xp=xp)
    patterns = xp.empty((n,) + gpts, xp.float32)
    fixed = transmissions.nbytes + patterns.nbytes + len(propagators) * propagators[0].nbytes
    batch = progress.plan_batches(n_items=n, bytes_per_item=_bytes_per_position(gpts, n_slices), fixed_bytes=fixed,
                                  budget=budget)
    centre = xp.asarray([g // 2 * d for g, d in zip(gpts, grid.sampling)])
    starts = range(0, n, batch)
    for start in progress.progress(starts, desc="4D-STEM", disable=not show_progress) if show_progress else starts:
        corners, offsets = window_corners(positions[start:start + batch], grid.sampling, gpts, grid.gpts)
        index = window_indices(corners, gpts, grid.gpts)
        psi = waves.place_probes(spectrum, window, centre + offsets)
        for psi in multislice.iterate_slices(psi, transmissions[:, index], propagators):
            pass
        spectrum_out = backend.fft2(psi)
        patterns[start:start + batch] = (spectrum_out.real**2 + spectrum_out.imag**2) / (gpts[0] * gpts[1])
    return patterns


def low_dose_counts(intensities, *, dose, scan_step, seed):
    """Poisson counts of patterns at a dose: ``Poisson(I · D · Δ²)`` electrons per detector pixel.

    Parameters
    ----------
    intensities : (n, gx, gy) array_like
        Fractions of the incident electrons (:func:`diffraction_intensities`), >= 0.
    dose : float
        Electron dose [e/Å²], > 0 (cryo-EM: 5-100).
    scan_step : float or (float, float)
        Scan step [Å]: each position receives ``dose · step_x · step_y`` electrons.
    seed : int
        Seed of the draw (on the host, :func:`mbook.core.detection.poisson_counts`).

    Returns
    -------
    (n, gx, gy) ndarray, float32
        Counts, on the selected device.
    """
    dose = checks.check_number(dose, "dose", lower=0, lower_inclusive=False, units="e/Å²", hint="e.g. 20")
    step = checks.check_positive(scan_step, "scan_step", 2)
    intensities = checks.check_array(intensities, "intensities", ndim=3, real=True)
    counts = detection.apply_dose(intensities, dose=dose, pixel_area=step[0] * step[1], seed=seed)
    return counts.astype(backend.get_array_module(counts).float32)


# ----------------------------------------------------------------------------- the linear pieces of the model
def phase_ramps(offsets, gpts, sampling):
    """Fourier shift factors ``e_j(k) = exp(-2πi k·s_j)``, ``(n, wx, wy)`` (a kernel, on the device of ``offsets``).

    Parameters
    ----------
    offsets : (n, 2) ndarray
        Shifts ``s_j`` [Å].
    gpts : (int, int)
        Window.
    sampling : (float, float)
        [Å].
    """
    xp = backend.get_array_module(offsets)
    kx, ky = frequencies(tuple(gpts), tuple(sampling), offsets.dtype.str, xp)
    return _ramps(kx[None, :, None], offsets[:, 0, None, None], ky[None, None, :], offsets[:, 1, None, None],
                  -2j * np.pi)


@fusion.elementwise
def _ramps(xp, kx, x, ky, y, factor):
    """``exp(factor k_x x) exp(factor k_y y)``, broadcast: one kernel on a GPU (seven otherwise)."""
    return xp.exp(factor * kx * x) * xp.exp(factor * ky * y)


def shift_probes(probe, offsets, sampling):
    """Copies of ``probe`` shifted by ``offsets``: ``S_j P = F^-1[e_j F[P]]`` (linear in ``probe``).

    Parameters
    ----------
    probe : (wx, wy) array_like, complex
    offsets : (n, 2) array_like
        [Å].
    sampling : float or (float, float)
        [Å].

    Returns
    -------
    (n, wx, wy) ndarray, complex
        On the selected device.
    """
    probe = checks.check_field(probe, "probe")
    offsets = checks.check_array(offsets, "offsets", ndim=2, real=True).astype(np.float64)
    sampling = checks.check_positive(sampling, "sampling", 2)
    return backend.ifft2(backend.fft2(probe) * phase_ramps(offsets, probe.shape[-2:], sampling))


def shift_probes_adjoint(shifted, offsets, sampling):
    """The adjoint of :func:`shift_probes`: ``Σ_j S_j^* w_j = F^-1[Σ_j conj(e_j) F[w_j]]``.

    Parameters
    ----------
    shifted : (n, wx, wy) array_like, complex
    offsets : (n, 2) array_like
        [Å].
    sampling : float or (float, float)
        [Å].

    Returns
    -------
    (wx, wy) ndarray, complex
        On the selected device.
    """
    shifted = checks.check_field(shifted, "shifted")
    offsets = checks.check_array(offsets, "offsets", ndim=2, real=True).astype(np.float64)
    sampling = checks.check_positive(sampling, "sampling", 2)
    if shifted.ndim != 3 or shifted.shape[0] != offsets.shape[0]:
        raise ValueError(f"shifted must be (n, wx, wy) with one window per offset ({offsets.shape[0]}), "
                         f"got shape {tuple(shifted.shape)}")
    xp = backend.get_array_module(shifted)
    ramps = phase_ramps(offsets, shifted.shape[-2:], sampling)
    return backend.ifft2(xp.sum(xp.conj(ramps) * backend.fft2(shifted), axis=0))


def gather_windows(image, index):
    """Windows of a real image at flat indices (:func:`window_indices`): ``image.ravel()[index]``.

    Parameters
    ----------
    image : (nx, ny) array_like, real
    index : (n, wx, wy) array_like, int

    Returns
    -------
    (n, wx, wy) ndarray
        On the selected device.
    """
    image = checks.check_array(image, "image", ndim=2, real=True)
    index = checks.check_array(index, "index", ndim=3, real=True)
    return image.reshape(-1)[index]


def scatter_windows(patches, index, shape):
    """The adjoint of :func:`gather_windows`: each window's values added back onto the image.

    Parameters
    ----------
    patches : (n, wx, wy) array_like, real
    index : (n, wx, wy) array_like, int
    shape : (int, int)
        The image's.

    Returns
    -------
    (nx, ny) ndarray, float64
        On the selected device.
    """
    patches = checks.check_array(patches, "patches", ndim=3, real=True)
    index = checks.check_array(index, "index", ndim=3, real=True)
    if tuple(patches.shape) != tuple(index.shape):
        raise ValueError(f"patches must have the shape of index {tuple(index.shape)}, got {tuple(patches.shape)}")
    shape = checks.check_gpts(shape, 2, name="shape")
    return scatter.bincount(index.reshape(-1), patches.reshape(-1), shape[0] * shape[1]).reshape(shape)
