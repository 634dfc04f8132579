"""HAADF tells ptychography where it was: scan positions from registered Z-contrast frames.

A dose-fractionated scan visits the same raster ``K`` times, fast, recording
a diffraction pattern (for ptychography) and the high-angle annular dark
field (HAADF) signal at every position. The specimen drifts while the frames
are scanned, so each HAADF frame is the same Z-contrast image shifted by the
drift at its time (and sheared by the drift during it). Registering the frames
(:func:`frame_shifts`, a search over the drift velocity for the one under
which every frame's counts are best predicted by the other frames') measures
each frame's shift; a straight line through them in time (:func:`drift_fit`)
gives the drift at every visit, within frames too; the corrected positions
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

from mbook.core import backend, checks, detection, progress
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


#: Weight of the prior guess (the mean count of the series) in the kernel estimate of a frame's
#: counts, in units of one neighbour at the kernel's centre: small, so that it matters only where no
#: other frame was (there the estimate is the mean count, and a bright pixel moved there pays for it).
_PRIOR_WEIGHT = 0.05


#: A visit is scored in the fine searches only where the other frames' kernel weight is at least this
#: fraction of one frame's interior weight under every candidate: see frame_shifts.
_COVERED = 0.5


def _raster_rates(times, shape):
    """Line and dwell periods in frame periods, from visit times ``(K, nx, ny)`` of a regular raster."""
    times = checks.check_array(times, "times", ndim=3, real=True).astype(np.float64)
    if times.shape != shape:
        raise ValueError(f"times must have the frames' shape {shape} (one time per visit), got {times.shape}")
    xp = backend.get_array_module(times)
    periods = [xp.mean(xp.diff(times, axis=axis)) for axis in (0, 2, 1)]  # frame, line (y), dwell (x)
    k, x, y = (xp.arange(n, dtype=np.float64) for n in shape)
    model = (times[0, 0, 0] + periods[0] * k[:, None, None] + periods[2] * x[None, :, None]
             + periods[1] * y[None, None, :])
    frame, line, dwell = (float(p) for p in periods)  # three numbers to the host, once
    deviation = float(xp.max(xp.abs(times - model)))
    if frame <= 0 or deviation > 1e-6 * frame * shape[0]:
        raise ValueError("times must be those of a regular raster scanned frame after frame (a constant frame, line "
                         f"and dwell period, e.g. drift.scan_times), got a frame period of {frame:.6g} and visits "
                         f"up to {deviation:.3g} off such a raster")
    return line / frame, dwell / frame


def _offsets(shape, xp):
    """Integer offsets ``(Δk, Δx, Δy)`` of a zero-padded ``(2K, 2nx, 2ny)`` grid, in FFT order."""
    grids = [(xp.arange(2 * n) + n) % (2 * n) - n for n in shape]
    return xp.meshgrid(*[g.astype(np.float64) for g in grids], indexing="ij")


def _kernel_sums(frames_hat, field_hat, shape, drifts, offsets, rates, smoothing):
    """Kernel sums of the other frames' counts and of their weights at every visit, ``(n, K, nx, ny)`` each,
    for each candidate drift ``(n, 2)`` [scan pixels per frame period] (a kernel: inputs on one device, checked)."""
    xp = backend.get_array_module(frames_hat)
    k, nx, ny = shape
    dk, dx, dy = offsets
    elapsed = dk + dy * rates[0] + dx * rates[1]  # time between two visits [frame periods]
    ax = dx + drifts[:, 0, None, None, None] * elapsed  # distance between the two visited points [pixels]
    ay = dy + drifts[:, 1, None, None, None] * elapsed
    kernel = xp.exp(-0.5 * (ax**2 + ay**2) / smoothing**2) * (dk != 0)  # other frames only
    kernel_hat = backend.fftn(kernel, axes=(1, 2, 3))
    counts = backend.ifftn(kernel_hat * frames_hat, axes=(1, 2, 3)).real[:, :k, :nx, :ny]
    weights = backend.ifftn(kernel_hat * field_hat, axes=(1, 2, 3)).real[:, :k, :nx, :ny]
    return counts, weights


def _drift_scores(frames_hat, field_hat, frames, drifts, offsets, rates, smoothing, scored):
    """Leave-one-out Poisson log-likelihood of the visits ``scored`` (weights ``(K, nx, ny)``) of the frames
    for each candidate drift ``(n, 2)`` [scan pixels per frame period] (a kernel: inputs on one device, checked)."""
    xp = backend.get_array_module(frames_hat)
    counts, weights = _kernel_sums(frames_hat, field_hat, frames.shape, drifts, offsets, rates, smoothing)
    mean = xp.mean(frames)
    rate = (xp.maximum(counts, 0.0) + _PRIOR_WEIGHT * mean) / (xp.maximum(weights, 0.0) + _PRIOR_WEIGHT)
    return xp.sum(scored * (frames * xp.log(rate) - rate), axis=(1, 2, 3))


def _covered(frames_hat, field_hat, shape, candidates, half, offsets, rates, smoothing, chunk):
    """Visits inside the other frames' field under every candidate largest shift ``(n, 2)``: 1 or 0,
    ``(K, nx, ny)`` (or all 1 where no visit is; a kernel: inputs on one device, checked).

    Inside means a kernel weight of the other frames of at least half that of one frame's interior
    (``2πσ²`` on the unit raster), that is, inside the edge of at least one other frame."""
    xp = backend.get_array_module(frames_hat)
    least = xp.full(shape, xp.inf)
    for s in range(0, candidates.shape[0], chunk):
        weights = _kernel_sums(frames_hat, field_hat, shape, candidates[s:s + chunk] / half, offsets, rates,
                               smoothing)[1]
        least = xp.minimum(least, weights.min(axis=0))
    inside = (least >= _COVERED * 2 * math.pi * smoothing**2).astype(np.float64)
    return xp.where(xp.any(inside > 0), inside, 1.0)


def frame_shifts(frames, *, scan_step, times=None, max_shift=None, smoothing=1.0):
    """Drift of each frame relative to the series' mean [Å], from the HAADF counts of all frames at once.

    The model is the page's and the scan's: the specimen drifts at a constant velocity ``b``
    over the series, so the visit at time ``t`` of raster point ``r⁰`` sees what is at
    ``r⁰ + b (t - t̄)``. Each frame is then its mean-time shift ``s_k = b (t̄_k - t̄)`` plus the
    drift within the frame, which is as large as between frames (a frame takes as long as the
    interval between frames) and shears it; with ``times`` both are modelled. ``b`` is found by
    maximising the leave-one-out Poisson likelihood of the counts: every visit's count is predicted
    from the counts of the *other* frames' visits, placed where ``b`` says they were, by a Gaussian
    kernel estimate (Nadaraya-Watson, width ``smoothing``) that falls back to the mean count
    where no other frame was,

    ``λ_q(b) = (Σ_{z ∉ frame(q)} g(p_q - p_z) F_z + ε F̄) / (Σ_{z ∉ frame(q)} g(p_q - p_z) + ε)``,
    ``L(b) = Σ_q F_q log λ_q - λ_q``,

    searched over every drift whose largest frame shift is at most ``max_shift`` on a grid of
    ``smoothing / 2``, then on two finer grids (to ``smoothing / 32``). With a regular raster the
    kernel sums are one 3D convolution (frame, x, y) of the zero-padded stack per candidate, by FFT.

    The two fine searches score the same visits for every candidate: those inside the field of
    another frame (a kernel weight of the other frames of at least half one frame's interior
    ``2πσ²``) under every candidate of the fine grids. Visits that no other frame covers are
    predicted by the mean count, and which visits those are changes with ``b``: scored, they
    pulled the optimum by a bias that grew with the dose (on the HAADF page's series at 100 times
    its dose 0.11-0.64 Å, and 0.4-0.5 Å on two specimens still at 1000 times, where the jitter
    left uncorrected is 0.11 Å). On a fixed set of visits the optimum for the six specimens'
    noise-free frames is within 0.06 pixel per frame of the true drift for kernel widths of 0.5,
    0.7 and 1 pixel (scoring every visit: up to 0.22, 0.11 and 0.17); the coarse search, over
    drifts too far apart for a common set, scores every visit.

    Why this and not a fit of each frame to the others: at a few dozen counts per frame, a
    least-squares fit of each frame's shift to the leave-one-out mean of the others, rebuilt from
    its own estimates, could settle on a wrong set of shifts that agreed with each other (and its
    squared reference counts carry their Poisson variance, a cost the fit can lower by moving
    bright pixels out of the overlap). On the HAADF page's series (six specimens, eight noise
    draws each, 1000 e/Å², nominal raster 3.9 Å off) it gave an RMS position error of 0.3-7.9 Å,
    median 1.6 Å, worse than no correction on five series; this search gives 0.16-2.43 Å, median
    0.76 Å. The search has two unknowns for the whole series and is global, and a predictive
    likelihood is not biased by the counting noise of what it predicts. Shifts refined per frame
    from the line (within a pixel of it) were measured to fit the noise (larger errors on 14 of 15
    draws, frames taken as rigid), so the shifts stay on the line. Modelling the shear matters at
    high dose (20 times the page's: 0.13-0.31 Å with ``times``, 0.20-0.64 Å without); at the page's
    dose the two agree within the noise. With the fine searches on a fixed set of visits, the six
    specimens' own draws give 0.41-1.21 Å at the page's dose (0.54-1.16 Å scoring every visit),
    0.13-0.31 Å at 20 times (0.12-0.76 Å) and 0.13-0.19 Å at 100 times (0.11-0.64 Å); over 48
    series at the page's dose (eight other noise draws per specimen), 0.16-2.43 Å, median 0.76 Å
    (0.16-2.57 Å, median 0.75 Å), and at 20 times (four draws each) median 0.20 Å, at most
    0.37 Å (median 0.23 Å, at most 0.76 Å).

    Parameters
    ----------
    frames : (K, nx, ny) array_like
        HAADF counts of the frames on the scan raster (:func:`haadf_frames`), >= 0, K >= 2.
    scan_step : float or (float, float)
        Raster step [Å].
    times : (K, nx, ny) array_like, optional
        Time of every visit [any unit], a regular raster scanned frame after frame
        (:func:`mbook.multimodal.drift.scan_times` with ``num_frames=K``): the drift within
        frames is modelled. Default: each frame taken at one instant, frames equally spaced.
    max_shift : float, optional
        Largest frame shift searched, per axis [scan pixels]; default a quarter of the frame.
    smoothing : float
        Width ``σ`` of the Gaussian kernel [scan pixels].

    Returns
    -------
    (K, 2) ndarray
        ``s_k`` [Å]: frame k saw at raster point ``r⁰`` what is at ``r⁰ + s_k`` (at its mean
        time); mean 0, on a line in time; on the selected device.

    Examples
    --------
    Two bright spots in four frames, drifting by one pixel along x per frame, at high dose:

    >>> import numpy as np
    >>> from mbook.multimodal import positions
    >>> x = np.arange(16.0)
    >>> def spot(cx, cy): return np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / 4)
    >>> frames = 50 * np.stack([spot(5 - k, 6) + spot(10 - k, 11) for k in range(4)])
    >>> positions.frame_shifts(frames, scan_step=1.0)[:, 0].round(1).tolist()
    [-1.5, -0.5, 0.5, 1.5]
    """
    step = checks.check_positive(scan_step, "scan_step", 2)
    frames = registration.check_frames(frames)
    xp = backend.get_array_module(frames)
    if bool(xp.any(frames < 0)) or not float(xp.sum(frames)) > 0:
        raise ValueError("frames must be counts (>= 0, not all 0): the fit is a Poisson likelihood")
    k, nx, ny = frames.shape
    rates = (0.0, 0.0) if times is None else _raster_rates(times, frames.shape)
    max_shift = (min(nx, ny) / 4 if max_shift is None else checks.check_positive_number(max_shift, "max_shift"))
    smoothing = checks.check_positive_number(smoothing, "smoothing")
    padded = (2 * k, 2 * nx, 2 * ny)
    stack, field = xp.zeros(padded), xp.zeros(padded)
    stack[:k, :nx, :ny] = frames
    field[:k, :nx, :ny] = 1.0
    frames_hat, field_hat = backend.fftn(stack), backend.fftn(field)
    offsets = _offsets((k, nx, ny), xp)
    half = (k - 1) / 2  # the largest |k - mean k|: a drift d per frame shifts the first frame by -half d
    # three grids of largest shifts S = half d: the whole range at σ/2, then ±σ/2 at σ/8, ±σ/8 at σ/32
    levels = [(max_shift, smoothing / 2), (smoothing / 2, smoothing / 8), (smoothing / 8, smoothing / 32)]
    sizes = [2 * int(math.floor(extent / spacing + 1e-9)) + 1 for extent, spacing in levels]
    chunk = progress.plan_batches(n_items=max(n * n for n in sizes), bytes_per_item=16 * 6 * 8 * k * nx * ny)
    best = xp.zeros(2)
    scored = xp.ones(frames.shape)
    for level, ((extent, spacing), size) in enumerate(zip(levels, sizes)):
        axis = (np.arange(size) - size // 2) * spacing
        grid = backend.asarray(np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2))
        candidates = xp.clip(best + grid, -max_shift, max_shift)
        if level == 1:  # the fine searches' visits: covered under every candidate of both fine grids
            scored = _covered(frames_hat, field_hat, frames.shape, xp.clip(best + grid * 1.25, -max_shift, max_shift),
                              half, offsets, rates, smoothing, chunk)
        scores = xp.concatenate([
            _drift_scores(frames_hat, field_hat, frames, candidates[s:s + chunk] / half, offsets, rates, smoothing,
                          scored)
            for s in range(0, candidates.shape[0], chunk)])
        best = candidates[xp.argmax(scores)]
    frame = backend.asarray(np.arange(k) - half)
    return frame[:, None] * (best / half)[None, :] * backend.asarray(step)


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

