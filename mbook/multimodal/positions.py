"""HAADF tells ptychography where it was: scan positions from registered Z-contrast frames.

A dose-fractionated scan visits the same raster ``K`` times, fast, recording
a diffraction pattern (for ptychography) and the high-angle annular dark
field (HAADF) signal at every position. The specimen drifts between frames
far more than within one, so each HAADF frame is the same Z-contrast image
shifted by that frame's drift. Registering the frames
(:func:`frame_shifts`, a least-squares fit of each frame to the others
placed on a larger canvas) measures the shifts;
a straight line through them in time (:func:`drift_fit`) gives the drift at
every visit, within frames too; the corrected positions
(:func:`corrected_positions`) are handed to the ptychographic reconstruction
(:func:`mbook.multimodal.reconstruction.reconstruct`) instead of the nominal raster
(white paper, section 6.2).

The HAADF signal is modelled in the incoherent-imaging approximation: the
fraction of the electrons of a probe at ``r`` scattered onto the detector is

``h(r) = Σ_atoms σ(Z_a) |P|²(r_a - r) / (Σ |P|² ΔxΔy)``,   ``σ(Z) = σ_Au (Z / 79)^γ``,

with ``γ ≈ 1.7`` (Z-contrast; Pennycook & Jesson 1991) and ``σ_Au`` the
HAADF cross-section of a gold atom, an order of magnitude (10⁻³-10⁻² Å² for
70-200 mrad at 300 keV) to be set from a calibration. Counts are Poisson.
Light atoms give almost nothing at cryo doses: gold fiducials
(:func:`mbook.multimodal.specimens.cryo_specimen`) carry the registration.

Positions are in Å, arrays indexed ``[x, y]`` (:mod:`mbook.multimodal.drift`);
shifts are measured relative to the mean over the frames (the gauge of
:func:`mbook.multimodal.drift.rms_error`).

Examples
--------
Four frame shifts on a line in time give the drift velocity:

>>> import numpy as np
>>> from mbook.multimodal import positions
>>> times = np.array([84.0, 252.0, 420.0, 588.0])          # mean time of each frame [dwell]
>>> shifts = np.outer(times - times.mean(), [0.016, -0.012])  # [Å]
>>> offset, velocity = positions.drift_fit(shifts, times)
>>> [round(float(v), 4) for v in velocity]
[0.016, -0.012]
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, detection
from mbook.electron import potentials
from mbook.inverse import registration

GOLD_Z = 79


def cross_section_map(atoms, grid, *, cross_section=5e-3, exponent=1.7):
    """HAADF cross-sections of the atoms deposited on a grid, ``Σ_a σ(Z_a)`` per pixel [Å²].

    Each atom's ``σ(Z) = cross_section (Z / 79)^exponent`` is shared between
    the four nearest pixels (bilinear weights, periodic). A host step: the
    atoms are ase's; the map is returned on the selected device.

    Parameters
    ----------
    atoms : ase.Atoms
        Specimen in an orthorhombic cell, atoms inside it.
    grid : Grid
        2D grid of the cell's (x, y) [Å].
    cross_section : float
        ``σ_Au`` [Å²].
    exponent : float
        γ of the Z-contrast, in [1, 2].

    Returns
    -------
    (nx, ny) ndarray, float64
        [Å²] per pixel, on the selected device.
    """
    positions, lengths, symbols = potentials.check_atoms(atoms)
    grid = checks.check_grid(grid, ndim=2)
    cross_section = checks.check_positive_number(cross_section, "cross_section")
    exponent = checks.check_number(exponent, "exponent", lower=1.0, upper=2.0)
    numbers = np.asarray(atoms.get_atomic_numbers(), float)
    sigma = cross_section * (numbers / GOLD_Z) ** exponent
    nx, ny = grid.gpts
    u = positions[:, 0] / grid.sampling[0]
    v = positions[:, 1] / grid.sampling[1]
    i, j = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - i, v - j
    image = np.zeros((nx, ny))
    for di, dj, w in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        np.add.at(image, ((i + di) % nx, (j + dj) % ny), sigma * w)
    return backend.asarray(image)


def haadf_signal(sigma_map, positions, *, probe, sampling):
    """Fraction of the electrons scattered onto the HAADF detector at each position (incoherent imaging).

    Parameters
    ----------
    sigma_map : (nx, ny) array_like
        :func:`cross_section_map` [Å² per pixel].
    positions : (..., 2) array_like
        Probe positions [Å], inside the map.
    probe : (wx, wy) array_like, complex
        The probe, centred at pixel ``(wx // 2, wy // 2)``, any normalisation.
    sampling : float or (float, float)
        [Å].

    Returns
    -------
    (...) ndarray, float64
        On the selected device.
    """
    sigma_map = checks.check_array(sigma_map, "sigma_map", ndim=2, real=True).astype(np.float64)
    probe = checks.check_field(probe, "probe")
    sampling = checks.check_positive(sampling, "sampling", 2)
    positions = checks.check_array(positions, "positions", min_ndim=1, real=True).astype(np.float64)
    if positions.shape[-1] != 2:
        raise ValueError(f"positions must be an (..., 2) array [Å], got shape {positions.shape}")
    if probe.ndim != 2 or probe.shape[0] > sigma_map.shape[0] or probe.shape[1] > sigma_map.shape[1]:
        raise ValueError(f"probe {probe.shape} must be a 2D window no larger than the map {sigma_map.shape}")
    xp = backend.get_array_module(sigma_map)
    extent = [n * d for n, d in zip(sigma_map.shape, sampling)]
    low, high = (backend.asnumpy(xp.stack([positions.reshape(-1, 2).min(axis=0), positions.reshape(-1, 2).max(axis=0)]))
                 .tolist())  # one copy, to check
    if min(low) < 0 or high[0] >= extent[0] or high[1] >= extent[1]:
        raise ValueError(f"positions span x {low[0]:.3f}..{high[0]:.3f} Å, y {low[1]:.3f}..{high[1]:.3f} Å, outside "
                         f"the map [0, {extent[0]:.3f}) x [0, {extent[1]:.3f}) Å")
    intensity = xp.abs(probe) ** 2
    density = intensity / (xp.sum(intensity) * sampling[0] * sampling[1])  # [1/Å²]
    kernel = xp.zeros(sigma_map.shape)
    kernel[:probe.shape[0], :probe.shape[1]] = density
    kernel = xp.roll(kernel, (-(probe.shape[0] // 2), -(probe.shape[1] // 2)), axis=(0, 1))
    # h(r) = Σ_x σ(x) ρ(x - r): a correlation, by FFT on the periodic cell
    image = backend.ifft2(backend.fft2(sigma_map) * xp.conj(backend.fft2(kernel))).real
    ndimage = backend.scipy_module("ndimage", image)
    flat = positions.reshape(-1, 2)
    coordinates = xp.stack([flat[:, 0] / sampling[0], flat[:, 1] / sampling[1]])
    values = ndimage.map_coordinates(image, coordinates, order=1, mode="grid-wrap")
    return values.reshape(positions.shape[:-1])


def haadf_frames(sigma_map, positions, *, probe, sampling, electrons, seed):
    """Poisson HAADF counts of the frames of a scan, ``Poisson(electrons · h(r))``.

    Parameters
    ----------
    sigma_map, probe, sampling
        As :func:`haadf_signal`.
    positions : (K, nx, ny, 2) array_like
        True positions of every frame [Å] (:func:`mbook.multimodal.drift.drifted_positions`).
    electrons : float
        Electrons per position and frame, > 0.
    seed : int
        Seed of the draw (on the host).

    Returns
    -------
    (K, nx, ny) ndarray, float64
        Counts, on the selected device.
    """
    electrons = checks.check_positive_number(electrons, "electrons")
    positions = checks.check_array(positions, "positions", ndim=4, real=True)
    signal = haadf_signal(sigma_map, positions, probe=probe, sampling=sampling)
    return detection.poisson_counts(signal * electrons, seed=seed).astype(np.float64)


def _peaks(cross, upsample, max_shift):
    """Maximum of the correlations whose spectra are ``cross`` ``(k, nx, ny)`` [pixels, mean-free axes
    in FFT order], upsampled ``upsample`` times by zero-padding the spectrum and refined by a parabola
    (a kernel)."""
    xp = backend.get_array_module(cross)
    k, nx, ny = cross.shape
    mx, my = nx * upsample, ny * upsample
    spectrum = xp.zeros((k, mx, my), cross.dtype)
    hx, hy = nx // 2, ny // 2
    for a, b in ((slice(0, hx), slice(0, hy)), (slice(0, hx), slice(-hy, None)),
                 (slice(-hx, None), slice(0, hy)), (slice(-hx, None), slice(-hy, None))):
        spectrum[:, a, b] = cross[:, a, b]  # the corners of a larger spectrum: zero-padding
    correlation = backend.ifft2(spectrum).real
    dx, dy = (xp.abs(xp.fft.fftfreq(m, 1 / m)) for m in (mx, my))
    near = (dx[:, None] <= (max_shift + 1) * upsample) & (dy[None, :] <= (max_shift + 1) * upsample)
    correlation = xp.where(near, correlation, -xp.inf)
    flat = xp.argmax(correlation.reshape(k, -1), axis=1)
    peak = (flat // my, flat % my)
    frame = xp.arange(k)
    shifts = []
    for axis, m in enumerate((mx, my)):
        def value(step, axis=axis, m=m):
            index = list(peak)
            index[axis] = (peak[axis] + step) % m
            return correlation[frame, index[0], index[1]]

        before, at, after = value(-1), value(0), value(1)
        finite = xp.isfinite(before) & xp.isfinite(after)
        before, after = xp.where(finite, before, 0.0), xp.where(finite, after, 0.0)
        curve = xp.where(finite, before - 2 * at + after, 0.0)
        offset = xp.where(curve < 0, 0.5 * (before - after) / xp.where(curve < 0, curve, -1.0), 0.0)
        position = peak[axis] + offset
        shifts.append(xp.where(position > m / 2, position - m, position) / upsample)
    return xp.stack(shifts, axis=1)


def frame_shifts(frames, *, scan_step, max_shift=None, num_iter=10, upsample=8):
    """Drift of each frame relative to the series' mean [Å], by registering HAADF frames.

    A frame of a few dozen scan pixels that drifts by a few pixels shows a
    different part of the specimen at each edge: a cross-correlation of two
    frames, tapered or not, then prefers small shifts (where the frames
    overlap most), and was measured here to return half the true drift. So
    each frame k is fitted by least squares, over its own field only, to a
    reference ``R_k`` that is larger than it: the mean of the *other* frames,
    each placed where its shift says, on a canvas ``max_shift`` wider on every
    side (a pixel seen by no other frame is 0, the mean). The shift minimises
    ``Σ_x w_k(x) (F_k(x) - R_k(x + s))²`` (``w_k``: 1 on the frame's field),
    that is, maximises ``2 (F_k ⋆ R_k)(s) - (w_k ⋆ R_k²)(s)``: the second
    correlation removes the pull towards where the reference holds more signal.
    A pixel of the frame that lands where no other frame was costs its own
    ``F_k²``, which keeps the shifts where the frames overlap: at a few counts
    per pixel this is what makes the fit stable (measured on the HAADF page's
    frames at 1000 e/Å²: RMS position error 0.1-1.3 Å over eight noise draws,
    against 1.1-4.6 Å for a correlation of tapered frames, and 1.0-3.0 Å when
    the misfit is averaged over the overlap alone); on noise-free frames it
    leaves shifts of a pixel or two about 10 % short.
    Both are computed for every shift by FFT on a zero-padded canvas, upsampled
    ``upsample`` times (zero-padded spectrum), and the best refined by a parabola.
    The canvas is rebuilt from the new shifts ``num_iter`` times (the placing
    uses :func:`mbook.inverse.registration.warp`). At a few counts per pixel, a
    reference that held the frame itself would pull its shift towards zero:
    hence the leave-one-out mean. The frames have their common mean removed.

    Parameters
    ----------
    frames : (K, nx, ny) array_like
        HAADF frames on the scan raster (:func:`haadf_frames`), K >= 2.
    scan_step : float or (float, float)
        Raster step [Å].
    max_shift : float, optional
        Largest shift searched per axis [scan pixels]; default a quarter of the frame.
    num_iter : int
        Rounds of place-and-fit.
    upsample : int
        Upsampling of the correlation (precision ``1 / upsample`` pixel before the parabola).

    Returns
    -------
    (K, 2) ndarray
        ``s_k`` [Å]: frame k saw at raster point ``r⁰`` what is at ``r⁰ + s_k``; mean 0.
    """
    step = checks.check_positive(scan_step, "scan_step", 2)
    frames = registration.check_frames(frames)
    num_iter = checks.check_iterations(num_iter, "num_iter")
    upsample = checks.check_count(upsample, "upsample")
    max_shift = (min(frames.shape[1:]) / 4 if max_shift is None
                 else checks.check_positive_number(max_shift, "max_shift"))
    xp = backend.get_array_module(frames)
    k, nx, ny = frames.shape
    margin = int(math.ceil(max_shift)) + 1
    # the canvas (frame plus margins), zero-padded to twice its size: no wrap-around in the correlations
    px, py = 2 * (nx + 2 * margin), 2 * (ny + 2 * margin)

    def place(values):
        out = xp.zeros((k, px, py))
        out[:, margin:margin + nx, margin:margin + ny] = values
        return out

    placed, field = place(frames - frames.mean()), place(xp.ones((k, nx, ny)))
    placed_hat, field_hat = backend.fft2(placed), backend.fft2(field)
    shifts = xp.zeros((k, 2))
    for _ in range(num_iter):
        fields = xp.ones((k, 2, px, py)) * -shifts[:, :, None, None]
        moved, covered = registration.warp(placed, fields), registration.warp(field, fields)
        weight = covered.sum(axis=0) - covered  # how much of the other frames covers each canvas pixel
        reference = xp.where(weight > 0.5, (moved.sum(axis=0) - moved) / xp.maximum(weight, 0.5), 0.0)
        cross = 2 * xp.conj(placed_hat) * backend.fft2(reference) - xp.conj(field_hat) * backend.fft2(reference**2)
        shifts = _peaks(cross, upsample, max_shift)
        shifts = shifts - shifts.mean(axis=0)
    return shifts * backend.asarray(step)


def drift_fit(shifts, frame_times):
    """A straight line through the frames' shifts in time: ``s(t) = a + b t`` (least squares).

    Parameters
    ----------
    shifts : (K, 2) array_like
        [Å] (:func:`frame_shifts`).
    frame_times : (K,) array_like
        Mean time of each frame [dwell times] (e.g. the mean over each frame of
        :func:`mbook.multimodal.drift.scan_times`).

    Returns
    -------
    (offset, velocity) : ((2,) ndarray, (2,) ndarray)
        ``a`` [Å] and ``b`` [Å per dwell time], on the selected device.
    """
    shifts = checks.check_array(shifts, "shifts", ndim=2, real=True).astype(np.float64)
    times = checks.check_array(frame_times, "frame_times", ndim=1, real=True).astype(np.float64)
    if shifts.shape != (len(times), 2) or len(times) < 2:
        raise ValueError(f"shifts must be (K, 2) and frame_times (K,) with K >= 2, got {shifts.shape} and "
                         f"{times.shape}")
    centred = times - times.mean()
    velocity = (centred[:, None] * (shifts - shifts.mean(axis=0))).sum(axis=0) / (centred**2).sum()
    offset = shifts.mean(axis=0) - velocity * times.mean()
    return offset, velocity


def corrected_positions(nominal, times, *, offset, velocity):
    """Positions corrected by a linear drift: ``r = r⁰ + a + b t``.

    Parameters
    ----------
    nominal : (..., 2) array_like
        Nominal raster, repeated per frame [Å].
    times : (...) array_like
        Time of each visit [dwell times] (:func:`mbook.multimodal.drift.scan_times`).
    offset, velocity : (2,) array_like
        From :func:`drift_fit` [Å], [Å per dwell time].

    Returns
    -------
    (..., 2) ndarray
        [Å], on the selected device.
    """
    nominal = checks.check_array(nominal, "nominal", min_ndim=1, real=True).astype(np.float64)
    times = checks.check_array(times, "times", real=True).astype(np.float64)
    if nominal.shape[:-1] != times.shape or nominal.shape[-1] != 2:
        raise ValueError(f"nominal must be (..., 2) and times (...), got {nominal.shape} and {times.shape}")
    offset = checks.check_array(offset, "offset", ndim=1, real=True)
    velocity = checks.check_array(velocity, "velocity", ndim=1, real=True)
    for name, value in (("offset", offset), ("velocity", velocity)):
        if value.shape != (2,):
            raise ValueError(f"{name} must be a (2,) vector (y, x), got shape {value.shape}")
    return nominal + offset + times[..., None] * velocity

