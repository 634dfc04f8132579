"""Gradient-based ptychographic reconstruction: object phase, probe and scan positions.

The model (single slice for ``n_slices = 1``, multislice otherwise) of the
amplitude at scan position ``j`` is

``ψ_0 = S_j P``,  ``χ_s = ψ_s · exp(i φ_s[W_j])``,  ``ψ_{s+1} = F^-1[p · F[χ_s]]``,
``A_j = |F_o[χ_{S-1}]|``,

with ``S_j`` the sub-pixel Fourier shift of the probe ``P`` (a complex
``(wx, wy)`` window), ``φ_s[W_j]`` the window of slice ``s`` of the object
phase at the position's nearest pixel, ``p`` the Fresnel propagator over a
slice (:func:`mbook.electron.multislice.slice_propagator`, without
antialiasing: the reconstruction has its own band limit) and ``F_o`` the
unitary FFT. The object is a phase grating per slice (a cryo specimen of
light atoms absorbs next to nothing at 300 keV). The loss is the amplitude
(square-root-Poisson) misfit with an optional smoothness prior,

``L = Σ_j Σ_k (A_j(k) - √n_j(k))² + λ Σ_s ‖∇φ_s‖²``,

robust at low counts (the square root of a Poisson count has a variance
near 1/4 once its mean is several counts, 0.14-0.40 below; Thibault &
Guizar-Sicairos 2012). The gradients
are written by hand (checked against finite differences in the tests), with
``g_z = ∂L/∂Re z + i ∂L/∂Im z`` for a complex ``z``:

- ``g_χ = 2 F_o^-1[(A - √n) F_o χ / A]`` at the exit;
- back through slice ``s``: ``∂L/∂φ_s = Im(g_χ conj(χ_s))`` scattered back
  onto the object, ``g_ψ_s = conj(e^{iφ_s}) g_χ``, and through the propagator
  ``g_χ_{s-1} = F^-1[conj(p) F[g_ψ_s]]``;
- probe: ``g_P = Σ_j S_j^* g_ψ_0,j``;
- positions: ``∂L/∂r_j = (2π/N) Σ_k k Im(conj(G_j) P̂ e_j)`` with
  ``G_j = F[g_ψ_0,j]``, ``e_j`` the shift's phase ramp.

:func:`reconstruct` takes mini-batches of positions (all of a batch at once on
the device) and steps each unknown along its gradient with the usual
normalisations (Maiden & Rodenburg 2009; Odstrčil et al. 2018): the object by
the illumination ``Σ_j |ψ_s,j|²`` of the whole scan scattered onto it (plus the
prior's curvature), each batch taking its share of the prior's gradient, so that
one pass over the batches is one Newton-like step of the whole loss; the probe by
the batch size; each position by the Gauss-Newton curvature ``2 Σ_k (∂A_j/∂x)²``
of its own loss (the tangent of the exit wave is carried through the slices), capped at
``max_position_step``. The gauge: a common shift of object and positions,
and a constant phase, are not determined by the data.

Nothing is copied to the host inside the loop (with ``show_progress=False``
and no callback); the progress bar shows the loss every ``callback_every``
iterations, where ``callback`` may draw a figure.

Examples
--------
A weak phase grating seen by 9 probe positions, reconstructed from noise-free patterns:

>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.multimodal import ptychography, reconstruction
>>> grid = grids.make_grid(gpts=(32, 32), sampling=0.5)
>>> x = np.arange(32) * 0.5
>>> phase = 0.2 * np.cos(2 * np.pi * x / 4.0)[:, None] * np.cos(2 * np.pi * x / 5.0)[None, :]
>>> potential = (phase / 6.526e-4)[None].astype(np.float32)      # σ at 300 keV [rad/(V·Å)]
>>> kw = dict(energy=300e3, semiangle_cutoff=15.0, defocus=60.0)
>>> scan = np.stack(np.meshgrid(*2 * [np.arange(6.0, 10.5, 1.5)], indexing="ij"), -1).reshape(-1, 2)
>>> patterns = ptychography.diffraction_intensities(potential, grid=grid, slice_thickness=5.0,
...                                                 positions=scan, gpts=16, **kw)
>>> result = reconstruction.reconstruct(1e4 * patterns, positions=scan, object_gpts=(32, 32), sampling=0.5,
...     probe=ptychography.centred_probe(16, sampling=0.5, **kw), max_num_iter=30, batch_size=4,
...     probe_from=None, positions_from=None, detector=ptychography.detector_mask(16, sampling=0.5))
>>> result.phase.shape, bool(result.loss[-1] < 0.05 * result.loss[0])
((1, 32, 32), True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion, grids, progress, scatter
from mbook.electron import multislice
from mbook.inverse import optimize
from mbook.multimodal import ptycho_model, ptychography


#: Regularisation of the object step: the illumination is floored at this fraction of its maximum.
FLOOR = 0.1


class PtychographyResult(NamedTuple):
    """What :func:`reconstruct` returns, on the selected device.

    Attributes
    ----------
    phase : (n_slices, nx, ny) ndarray
        Object phase per slice [rad].
    probe : (wx, wy) ndarray, complex
        The (retrieved) probe, ``Σ |P|²`` in electrons per position.
    positions : (n, 2) ndarray
        The (corrected) positions [Å].
    loss : (max_num_iter,) ndarray
        Loss after each iteration (sum over the positions of the batches).
    """

    phase: object
    probe: object
    positions: object
    loss: object


def _check_inputs(phase, probe, positions, amplitudes, sampling):
    phase = checks.check_array(phase, "phase", ndim=3, real=True)
    probe = checks.check_field(probe, "probe")
    if probe.ndim != 2:
        raise ValueError(f"probe must be a 2D (wx, wy) array, got shape {probe.shape}")
    sampling = checks.check_positive(sampling, "sampling", 2)
    amplitudes = checks.check_array(amplitudes, "amplitudes", ndim=3, real=True)
    _check_probe_shape(probe, amplitudes, "amplitudes")
    try:
        positions = ptychography.check_positions(positions, phase.shape[1:], sampling, probe.shape)
    except ValueError as error:  # the windows fall outside: the object (phase) may be the wrong size
        raise ValueError(f"{error} (the object is phase, of shape {phase.shape})") from None
    if len(amplitudes) != len(positions):
        raise ValueError(f"amplitudes must have shape (n_positions, wx, wy) = {(len(positions),) + probe.shape}, "
                         f"got {amplitudes.shape}")
    return phase, probe, positions, amplitudes, sampling


def _check_probe_shape(probe, patterns, name):
    """The probe's window is the detector's: one pixel per pixel of each pattern in ``name``."""
    if probe.shape != patterns.shape[1:]:
        raise ValueError(f"probe of shape {probe.shape} and {name} of patterns {patterns.shape[1:]} differ: the "
                         f"probe's window must have the shape of each pattern (n_positions, wx, wy)")


def _check_multislice(energy, slice_thickness, n_slices):
    """``energy`` [eV] and ``slice_thickness`` [Å]: None or a positive number, checked whatever ``n_slices``;
    both needed with more than one slice."""
    energy = None if energy is None else checks.check_positive_number(energy, "energy")
    slice_thickness = None if slice_thickness is None else checks.check_positive_number(slice_thickness,
                                                                                         "slice_thickness")
    if n_slices > 1 and (energy is None or slice_thickness is None):
        raise ValueError(f"a multislice object (n_slices = {n_slices} > 1) needs energy [eV] and slice_thickness "
                         f"[Å], got energy={energy}, slice_thickness={slice_thickness}")
    return energy, slice_thickness


def _check_detector(detector, gpts, dtype):
    if detector is None:
        return backend.xp.ones(gpts, dtype)
    detector = checks.check_array(detector, "detector", ndim=2, real=True)
    if detector.shape != tuple(gpts):
        raise ValueError(f"detector must have the probe's shape {tuple(gpts)}, got {detector.shape}")
    return detector.astype(dtype)


def _propagator(gpts, sampling, energy, slice_thickness, n_slices, xp, dtype):
    if n_slices == 1:
        return None
    window = grids.make_grid(gpts=gpts, sampling=sampling)
    p = multislice.slice_propagator(window, energy=energy, slice_thickness=slice_thickness, antialias=False, xp=xp)
    return p.astype(dtype)


def loss_and_gradients(phase, probe, positions, amplitudes, *, sampling, energy=None, slice_thickness=None,
                       smoothness=0.0, detector=None):
    """The reconstruction's loss and its gradients with respect to phase, probe and positions.

    Parameters
    ----------
    phase : (n_slices, nx, ny) array_like
        Object phase per slice [rad].
    probe : (wx, wy) array_like, complex
        Probe centred at pixel ``(wx // 2, wy // 2)`` of its window.
    positions : (n, 2) array_like
        [Å]; every window must fit the object.
    amplitudes : (n, wx, wy) array_like
        Measured amplitudes ``√counts``, FFT order.
    sampling : float or (float, float)
        Object pixel [Å].
    energy : float, optional
        [eV]; needed with more than one slice.
    slice_thickness : float, optional
        Distance between slices [Å]; needed with more than one slice.
    smoothness : float
        λ of the prior ``λ Σ_s ‖∇φ_s‖²`` (Neumann boundaries).
    detector : (wx, wy) array_like, optional
        Weight of each detector pixel in the loss, FFT order: 1 where measured, 0 where not
        (e.g. :func:`mbook.multimodal.ptychography.detector_mask`); default every pixel.

    Returns
    -------
    loss : float
    g_phase : (n_slices, nx, ny) ndarray
        ``∂L/∂φ``.
    g_probe : (wx, wy) ndarray, complex
        ``∂L/∂Re P + i ∂L/∂Im P``.
    g_positions : (n, 2) ndarray
        ``∂L/∂r`` [1/Å].

    The arrays are on the selected device; float64 inputs give float64 results.
    """
    phase, probe, positions, amplitudes, sampling = _check_inputs(phase, probe, positions, amplitudes, sampling)
    energy, slice_thickness = _check_multislice(energy, slice_thickness, len(phase))
    smoothness = checks.check_positive_number(smoothness, "smoothness", allow_zero=True)
    xp = backend.get_array_module(phase)
    probe = probe.astype(xp.complex128 if phase.dtype == xp.float64 else xp.complex64)
    propagator = _propagator(probe.shape, sampling, energy, slice_thickness, len(phase), xp, probe.dtype)
    detector = _check_detector(detector, probe.shape, phase.dtype)
    loss, g_phase, _, g_probe, g_positions, _ = ptycho_model.batch_gradients(
        phase, probe, positions.astype(phase.dtype), amplitudes, propagator, sampling, detector)
    if smoothness:
        loss = loss + smoothness * xp.sum(optimize.gradient(phase) ** 2)
        g_phase = g_phase - 2 * smoothness * optimize.laplacian(phase)
    return float(loss), g_phase, g_probe, g_positions


@fusion.elementwise
def _momentum_step(xp, velocity, phase, g_phase, momentum, step):
    """Heavy-ball step of the object: ``v ← μ v - s g``, ``φ ← φ + v`` (one kernel on a GPU)."""
    velocity = momentum * velocity - step * g_phase
    return velocity, phase + velocity


@fusion.elementwise
def _momentum_step_with_prior(xp, velocity, phase, g_phase, laplacian, weight, momentum, step):
    """:func:`_momentum_step` with the prior's gradient ``-weight Δφ`` added to ``g``."""
    g_phase = g_phase - weight * laplacian
    velocity = momentum * velocity - step * g_phase
    return velocity, phase + velocity


# Numbers such as 2n and -s are made on the host and passed in: inside cupy.fuse an operation between
# two Python numbers runs in int8 or float16 (2 * 64 is -128), see mbook.core.fusion.
@fusion.elementwise
def _probe_step(xp, probe, g_probe, step, twice_n):
    """``P ← P - s g / (2 n)`` in one kernel (``twice_n = 2 n``)."""
    return probe - step * g_probe / twice_n


@fusion.elementwise
def _position_step(xp, positions, g_positions, curvature, mean_curvature, minus_step, max_step, minus_max_step,
                   low, high):
    """Gauss-Newton move ``-s g / (H + 10⁻³ mean H)`` (featureless windows: no division by ~0), clipped to
    ``max_step`` per axis, then the positions clipped to the object; one kernel (``minus_step = -s``,
    ``minus_max_step = -max_step``)."""
    move = xp.minimum(xp.maximum(minus_step * g_positions / (curvature + 1e-3 * mean_curvature), minus_max_step),
                      max_step)
    return xp.minimum(xp.maximum(positions + move, low), high)  # clip: plain ufuncs, which every CuPy fuses


def _group_sums(members, values, n_groups):
    """Sums of ``values`` (n, 2) over the positions of each group, (n_groups, 2) (a kernel)."""
    xp = backend.get_array_module(values)
    return xp.stack([scatter.bincount(members, values[:, a], n_groups) for a in range(2)], axis=1)


def _check_schedule(value, name, max_num_iter):
    """An iteration from which an unknown is updated: an integer in [0, max_num_iter], or None (never)."""
    return None if value is None else checks.check_count(value, name, minimum=0)


def reconstruct(counts, *, positions, probe, object_gpts, sampling, max_num_iter=50, batch_size=64,
                n_slices=1, energy=None, slice_thickness=None, object_step=1.0, momentum=0.8, probe_step=0.5,
                position_step=0.5, probe_from=5, positions_from=10, max_position_step=None, position_groups=None,
                smoothness=0.0, detector=None, dtype=np.float32, seed=0, show_progress=False, callback=None,
                callback_every=10):
    """Reconstruct object phase, probe and positions from 4D-STEM counts by mini-batch gradient descent.

    Parameters
    ----------
    counts : (n, wx, wy) array_like
        Detector counts per position (FFT order), >= 0.
    positions : (n, 2) array_like
        Starting (nominal or estimated) positions [Å]; windows inside the object.
    probe : (wx, wy) array_like, complex
        Starting probe, centred at pixel ``(wx // 2, wy // 2)`` (e.g.
        :func:`mbook.multimodal.ptychography.centred_probe`); rescaled so that
        its intensity on the detector equals the mean counts per pattern.
    object_gpts : (int, int)
        Object pixels (at least the window).
    sampling : float or (float, float)
        Object pixel [Å] (the detector covers ``±1 / (2 sampling)``).
    max_num_iter : int
        Passes over all positions.
    batch_size : int
        Positions per gradient step, all at once on the device.
    n_slices : int
        1: single-slice (projection) ptychography; more: multislice, which
        needs ``energy`` [eV] and ``slice_thickness`` [Å].
    object_step, probe_step, position_step : float
        Step sizes, relative to the normalisations (1 is a full Newton-like step; for the
        object, one per pass over the batches).
    momentum : float
        Heavy-ball momentum of the object's steps (one per batch), in [0, 1): the
        low spatial frequencies, which many overlapping positions share, converge
        much faster with it (as in momentum-accelerated ePIE, Maiden et al. 2017).
    probe_from, positions_from : int or None
        Iteration from which the probe, the positions are updated (None: never);
        the object settles first.
    max_position_step : float, optional
        Largest position update per step [Å]; default one pixel.
    position_groups : (n,) array_like of int, optional
        Positions with the same label move together (one Gauss-Newton step from the sum of
        their gradients and curvatures): e.g. the scan line of each position, for scan-line
        distortions, which averages the noise of low-dose gradients over a line. Default: each
        position moves on its own.
    smoothness : float
        λ of the smoothness prior ``λ Σ_s ‖∇φ_s‖²``, >= 0 (helps at low dose).
    detector : (wx, wy) array_like, optional
        Weight of each detector pixel (FFT order), 0 where nothing is measured (e.g.
        :func:`mbook.multimodal.ptychography.detector_mask`); default every pixel.
    dtype : numpy dtype
        float32 (fast) or float64.
    seed : int
        Seed of the order of the positions in the mini-batches.
    show_progress : bool
        A progress bar showing the loss every ``callback_every`` iterations.
    callback : callable, optional
        ``callback(iteration, result)`` every ``callback_every`` iterations with a
        :class:`PtychographyResult` so far (e.g. to draw the phase).
    callback_every : int

    Returns
    -------
    PtychographyResult
        On the selected device.

    Raises
    ------
    ValueError
        Negative counts, positions outside the object, a probe larger than
        the object, mismatched shapes, bad step sizes.
    """
    counts = checks.check_array(counts, "counts", ndim=3, real=True)
    xp = backend.get_array_module(counts)
    probe = checks.check_field(probe, "probe")
    if probe.ndim != 2:
        raise ValueError(f"probe must be a 2D (wx, wy) array, got shape {probe.shape}")
    _check_probe_shape(probe, counts, "counts")
    object_gpts = checks.check_gpts(object_gpts, 2, name="object_gpts")
    sampling = checks.check_positive(sampling, "sampling", 2)
    positions = ptychography.check_positions(positions, object_gpts, sampling, probe.shape)
    if counts.shape != (len(positions),) + probe.shape:
        raise ValueError(f"counts must have shape (n_positions, wx, wy) = {(len(positions),) + probe.shape}, "
                         f"got {counts.shape}")
    low_count = float(counts.min())  # one copy, on entry
    if low_count < 0:
        raise ValueError(f"counts must be >= 0 (detected electrons), got min {low_count:g}")
    max_num_iter = checks.check_iterations(max_num_iter)
    batch_size = checks.check_count(batch_size, "batch_size")
    n_slices = checks.check_count(n_slices, "n_slices")
    energy, slice_thickness = _check_multislice(energy, slice_thickness, n_slices)
    steps = [checks.check_positive_number(v, name, allow_zero=True) for v, name in
             ((object_step, "object_step"), (probe_step, "probe_step"), (position_step, "position_step"))]
    momentum = checks.check_number(momentum, "momentum", lower=0, upper=1, upper_inclusive=False)
    probe_from = _check_schedule(probe_from, "probe_from", max_num_iter)
    positions_from = _check_schedule(positions_from, "positions_from", max_num_iter)
    max_position_step = (min(sampling) if max_position_step is None
                         else checks.check_positive_number(max_position_step, "max_position_step"))
    smoothness = checks.check_positive_number(smoothness, "smoothness", allow_zero=True)
    groups, n_groups = None, 0
    if position_groups is not None:
        groups = checks.check_array(position_groups, "position_groups", ndim=1, real=True)
        if groups.shape != (len(positions),) or groups.dtype.kind not in "iu" or float(groups.min()) < 0:
            raise ValueError(f"position_groups must be {len(positions)} integer labels >= 0, one per position, "
                             f"got shape {groups.shape} and dtype {groups.dtype}")
        n_groups = int(groups.max()) + 1  # one copy, on entry
    callback_every = checks.check_count(callback_every, "callback_every")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    complex_dtype = np.complex64 if dtype == np.float32 else np.complex128

    n = len(positions)
    # the object's slices and work arrays, the counts, their amplitudes and a pass's reordered amplitudes
    fixed = ((n_slices + 2) * object_gpts[0] * object_gpts[1] + 2 * counts.size) * dtype.itemsize + counts.nbytes
    per_position = probe.size * 16 * (2 * n_slices + 6)  # complex work arrays of the model per position
    batch_size = min(batch_size, progress.plan_batches(n_items=n, bytes_per_item=per_position, fixed_bytes=fixed))
    amplitudes = xp.sqrt(counts).astype(dtype)
    electrons = float(counts.sum()) / n  # one copy, on entry: the probe's intensity
    probe = probe.astype(complex_dtype)
    propagator = _propagator(probe.shape, sampling, energy, slice_thickness, n_slices, xp, complex_dtype)
    detector = _check_detector(detector, probe.shape, dtype)
    # the counts are what the detector saw of the probe: scale the probe's part inside it to them
    seen = xp.sum(detector * xp.abs(backend.fft_module(probe).fft2(probe, norm="ortho")) ** 2)
    probe = probe * (xp.asarray(math.sqrt(electrons), dtype=dtype) / xp.sqrt(seen))
    phase = xp.zeros((n_slices,) + object_gpts, dtype)
    positions = positions.astype(dtype)
    low, high = ptychography.allowed_range(object_gpts, sampling, probe.shape)
    low, high = xp.asarray(low, dtype=dtype), xp.asarray(high, dtype=dtype)
    rng = checks.rng(seed)
    orders = backend.asarray(np.stack([rng.permutation(n) for _ in range(max_num_iter)]))  # drawn once, moved once
    history = xp.zeros(max_num_iter, dtype)
    velocity = xp.zeros_like(phase)
    # With the probe and the positions fixed throughout, every window and shifted probe is made once
    # for the scan (five kernels fewer a batch), when they and a pass's reordered copy fit a quarter of
    # the memory budget (else they are made batch by batch, as when they move).
    windows = None
    if probe_from is None and positions_from is None and (
            2 * n * probe.size * (8 + 2 * np.dtype(complex_dtype).itemsize) <= progress.memory_budget() // 4):
        index_all, _, psi_all = ptycho_model.incident_windows(probe, positions, sampling, object_gpts)
        windows = (index_all, psi_all)

    def result():
        return PtychographyResult(phase, probe, positions, history)

    # Each batch steps the object by its share of the whole scan's gradient over the whole scan's
    # curvature (illumination + the prior's at most 8 λ per pixel): a pass then takes one full
    # Newton-like step, however many batches. Dividing by the batch's own illumination instead
    # (ePIE's step) fits each batch's noise in turn and never averages the overlaps: on a 36 x 36
    # scan in batches of 24 the phase SNR fell as the iterations went on.
    illumination = ptycho_model.scan_illumination(phase, probe, positions, propagator, sampling, batch_size)
    # One slice lit by a fixed probe at fixed positions: the illumination does not depend on the object,
    # so this one serves every pass and the batches skip theirs.
    lit_once = probe_from is None and positions_from is None and n_slices == 1

    iterations = range(max_num_iter)
    bar = progress.progress(iterations, desc="ptychography") if show_progress else None
    for iteration in bar if bar is not None else iterations:
        total = xp.zeros((), dtype)
        if iteration == 0 or not lit_once:
            floor = FLOOR * xp.max(illumination, axis=(1, 2), keepdims=True)
            step = steps[0] / (2 * (illumination + 8 * smoothness + floor))
        if not lit_once:
            illumination = xp.zeros_like(phase)  # this pass's, for the next (probe and positions move)
        move_positions = positions_from is not None and iteration >= positions_from
        move_probe = probe_from is not None and iteration >= probe_from
        # A pass's data in its order, one gather each (not one a batch): each batch reads a slice.
        order = orders[iteration]
        amplitudes_pass = windows_pass = None  # the last pass's copies go before this pass's are made
        amplitudes_pass = amplitudes[order]
        windows_pass = None if windows is None else (windows[0][order], windows[1][order])
        for start in range(0, n, batch_size):
            batch, rows = order[start:start + batch_size], slice(start, start + batch_size)
            loss, g_phase, batch_illumination, g_probe, g_positions, curvature = ptycho_model.batch_gradients(
                phase, probe, positions[batch] if windows is None else None, amplitudes_pass[rows], propagator,
                sampling, detector, curvature=move_positions, position_gradient=move_positions,
                probe_gradient=move_probe, illumination=not lit_once,
                windows=None if windows_pass is None else (windows_pass[0][rows], windows_pass[1][rows]))
            total = total + loss
            if not lit_once:
                illumination += batch_illumination
            if smoothness:  # the batch's share of the prior's gradient, in the same fused step
                velocity, phase = _momentum_step_with_prior(velocity, phase, g_phase, optimize.laplacian(phase),
                                                            2 * smoothness * len(batch) / n, momentum, step)
            else:
                velocity, phase = _momentum_step(velocity, phase, g_phase, momentum, step)
            if move_probe:
                probe = _probe_step(probe, g_probe, steps[1], 2 * len(batch))
            if move_positions:
                if groups is not None:  # one move per group: Σ g / Σ H over its positions
                    members = groups[batch]
                    g_positions = _group_sums(members, g_positions, n_groups)[members]
                    curvature = _group_sums(members, curvature, n_groups)[members]
                positions[batch] = _position_step(positions[batch], g_positions, curvature, xp.mean(curvature),
                                                  -steps[2], max_position_step, -max_position_step, low, high)
        history[iteration] = total
        if (iteration + 1) % callback_every == 0 or iteration + 1 == max_num_iter:
            if bar is not None:
                bar.set_postfix(loss=f"{float(total):.4g}")  # one number every callback_every iterations
            if callback is not None:
                callback(iteration + 1, result())
    return result()


def phase_error(phase, truth, *, sampling, cutoff=None, region=None):
    """Relative error and signal-to-noise ratio of a reconstructed phase against the truth.

    Both are reduced to the same band and region: their means over the
    region removed (a constant phase is not determined), low-passed to
    ``|k| <= cutoff``; then over the region ``error = ‖φ - φ_true‖² / ‖φ_true‖²``
    and, from their correlation coefficient ``c``, the SNR of the estimate
    as a measurement of the truth, ``snr = c² / (1 - c²)`` (Frank & Al-Ali
    1975), which does not depend on the estimate's scale (a timid estimate
    near zero has an error near 1 whatever its quality).

    Parameters
    ----------
    phase, truth : (nx, ny) array_like
        [rad].
    sampling : float or (float, float)
        [Å].
    cutoff : float, optional
        Spatial frequency [1/Å] (e.g. ``1 / resolution``); default all.
    region : (nx, ny) array_like of bool, optional
        Where to compare (e.g. the scanned area); default everywhere.

    Returns
    -------
    (error, snr) : (float, float)
    """
    phase = checks.check_array(phase, "phase", ndim=2, real=True).astype(np.float64)
    truth = checks.check_array(truth, "truth", ndim=2, real=True).astype(np.float64)
    if phase.shape != truth.shape:
        raise ValueError(f"phase {phase.shape} and truth {truth.shape} must have the same shape")
    sampling = checks.check_positive(sampling, "sampling", 2)
    xp = backend.get_array_module(phase)
    mask = xp.ones(phase.shape, bool) if region is None else checks.check_array(region, "region", ndim=2) > 0
    if mask.shape != phase.shape:
        raise ValueError(f"region {mask.shape} must have the shape of phase {phase.shape}")
    weight = mask.astype(np.float64)
    difference, reference = (a - xp.sum(a * weight) / xp.sum(weight) for a in (phase - truth, truth))
    if cutoff is not None:
        cutoff = checks.check_positive_number(cutoff, "cutoff")
        grid = grids.make_grid(gpts=phase.shape, sampling=sampling)
        keep = grids.frequency_squared(grid, xp=xp) <= cutoff**2
        difference, reference = (backend.ifft2(backend.fft2(a) * keep).real for a in (difference, reference))
    estimate = difference + reference
    error, product, power = (float(v) for v in backend.asnumpy(xp.stack([
        xp.sum(difference**2 * weight), xp.sum(estimate * reference * weight), xp.sum(estimate**2 * weight)])))
    truth_power = float(xp.sum(reference**2 * weight))
    correlation = product / math.sqrt(power * truth_power) if power > 0 else 0.0
    # the estimate as a measurement of the truth: SNR = c² / (1 - c²) (Frank & Al-Ali 1975)
    return error / truth_power, correlation**2 / max(1 - correlation**2, 1e-300)
