"""Recovering an image and its unknown distortions from a series (white paper §3.3).

Model: frame k of a series shows the same image ``u`` through an unknown
distortion, ``y_k = D_k(u) + noise`` with ``D_k(u)(x) = u(x + V_k(x))``. The
displacement ``V_k = v_k + (s_k(y), 0)`` is a smooth non-rigid field ``v_k``
plus, as a special case, scan-line jitter: a shift ``s_k(y)`` along the fast
scan axis x, one per scan line y. The joint estimate minimises

``E(u, {v_k, s_k}) = ½ Σ_k ‖D_k(u) - y_k‖² + (α/2) ‖∇u‖² + Σ_k [(β/2) ‖∇v_k‖² + (γ/2) ‖s_k‖²]``

(Berkels et al. 2014, Yankovich et al. 2014, generalised), with the gauge
``Σ_k V_k = 0``: the image is reconstructed in the series' mean frame of
reference. Its first variations, with ``r_k = D_k(u) - y_k``, are

- ``δE/δu = Σ_k D_k*(r_k) - α Δu``, where ``D_k*`` is the adjoint of the warp
  (bilinear interpolation scattered back onto the grid; the warp, its adjoint
  and its derivative are in :mod:`mbook.inverse.warps`, re-exported here);
- ``δE/δv_k = r_k · (∇u)(x + V_k) - β Δv_k``, with ``(∇u)(x + V_k)`` the exact
  derivative of the bilinear interpolant with respect to the sample position;
- ``δE/δs_k(y) = Σ_x r_k (∂_x u)(x + V_k) + γ s_k(y)``, the x-component summed
  along the scan line.

:func:`joint_reconstruction` alternates conjugate-gradient steps on the
quadratic problem in u with Sobolev-preconditioned, line-searched gradient
steps in the displacements, coarse to fine over an image pyramid.
:func:`rigid_average` is the baseline: one shift per frame by cross-
correlation, then the average.

Displacements are in pixels; arrays are indexed ``[x, y]`` (:mod:`mbook.core.grids`).
Everything runs on the selected device (:mod:`mbook.core.backend`) and
returns device arrays; the solvers' inner loops (cross-correlation peaks,
conjugate gradients, line searches) copy nothing to the host, and the
stopping test of :func:`joint_reconstruction` copies one number every
``check_every`` iterations.

Examples
--------
>>> import numpy as np
>>> from mbook.inverse import registration
>>> u = np.add.outer(np.arange(6.0), np.zeros(5))  # u(x, y) = x
>>> v = np.full((1, 2, 6, 5), 0.25)  # shift everything by a quarter pixel
>>> float(registration.warp(u, v)[0, 2, 2])
2.25
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress
from mbook.core.checks import (check_array, check_iterations, check_positive_number,
                               check_tolerance)
from mbook.inverse.optimize import gradient, laplacian
from mbook.inverse.warps import (bilinear_corners_kernel, warp, warp_adjoint, warp_adjoint_kernel, warp_derivative,
                                 warp_derivative_kernel, warp_kernel)

__all__ = ["warp", "warp_adjoint", "warp_derivative", "total_displacement", "distortion_energy",
           "distortion_gradients", "check_frames", "rigid_shifts", "rigid_average", "joint_reconstruction",
           "JointResult", "LINE_SEARCH_STEPS"]


# ---------------------------------------------------------------------------------------
# the energy and its first variations
# ---------------------------------------------------------------------------------------
def total_displacement(fields, line_shifts):
    """``V_k = v_k + (s_k(y), 0)``: smooth fields (K, 2, nx, ny) plus line shifts (K, ny), on the device."""
    fields = checks.check_array(fields, "fields", ndim=4, real=True)
    line_shifts = checks.check_array(line_shifts, "line_shifts", ndim=2, real=True)
    if fields.shape[1] != 2 or line_shifts.shape != (fields.shape[0], fields.shape[3]):
        raise ValueError(f"fields must be (K, 2, nx, ny) and line_shifts (K, ny), got {fields.shape} and "
                         f"line_shifts {line_shifts.shape}")
    return _total_displacement(fields, line_shifts)


def _total_displacement(fields, line_shifts):
    """The kernel of :func:`total_displacement` (checked device inputs; called every iteration)."""
    out = fields.copy()
    out[:, 0] += line_shifts[:, None, :]
    return out


def _energy(image, fields, line_shifts, frames, alpha, beta, gamma):
    """``E(u, v, s)`` as a 0-d device array (kernel: nothing copied to the host)."""
    xp = backend.get_array_module(frames)
    residual = warp_kernel(image, _total_displacement(fields, line_shifts)) - frames
    return (0.5 * xp.sum(residual**2) + 0.5 * alpha * xp.sum(gradient(image) ** 2)
            + 0.5 * beta * xp.sum(gradient(fields) ** 2) + 0.5 * gamma * xp.sum(line_shifts**2))


def distortion_energy(image, fields, line_shifts, frames, *, alpha: float, beta: float,
                      gamma: float) -> float:
    """``E(u, v, s)`` of the module docstring (frames and image in the same units).

    Parameters
    ----------
    image : (nx, ny) array
    fields : (K, 2, nx, ny) array
        Smooth displacements v [pixels].
    line_shifts : (K, ny) array
        Scan-line shifts s [pixels].
    frames : (K, nx, ny) array
    alpha, beta, gamma : float
        Weights of the regularisers.
    """
    image, fields, line_shifts, frames, alpha, beta, gamma = _check_energy_inputs(
        image, fields, line_shifts, frames, alpha, beta, gamma)
    return float(_energy(image, fields, line_shifts, frames, alpha, beta, gamma))


def distortion_gradients(image, fields, line_shifts, frames, *, alpha: float, beta: float,
                         gamma: float):
    """First variations of :func:`distortion_energy`: ``(δE/δu, δE/δv, δE/δs)``.

    Returns
    -------
    (nx, ny), (K, 2, nx, ny), (K, ny) arrays
        On the selected device.
    """
    return _gradients(*_check_energy_inputs(image, fields, line_shifts, frames, alpha, beta, gamma))


def _check_energy_inputs(image, fields, line_shifts, frames, alpha, beta, gamma):
    image = check_array(image, "image", ndim=2, real=True)
    frames = check_array(frames, "frames", ndim=3, real=True)
    fields = check_array(fields, "fields", ndim=4, real=True)
    line_shifts = check_array(line_shifts, "line_shifts", ndim=2, real=True)
    K, nx, ny = frames.shape
    if image.shape != (nx, ny):
        raise ValueError(f"image must have the shape of one frame {(nx, ny)}, got {image.shape}")
    if fields.shape != (K, 2, nx, ny):
        raise ValueError(f"fields must have shape (K, 2, nx, ny) = {(K, 2, nx, ny)} for frames {frames.shape}, "
                         f"got {fields.shape}")
    if line_shifts.shape != (K, ny):
        raise ValueError(f"line_shifts must have shape (K, ny) = {(K, ny)} for frames {frames.shape}, "
                         f"got {line_shifts.shape}")
    weights = (checks.check_positive_number(value, name, allow_zero=True)
               for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)))
    return (image, fields, line_shifts, frames, *weights)


def _gradients(image, fields, line_shifts, frames, alpha, beta, gamma):
    """The kernel of :func:`distortion_gradients` on checked device inputs (called per iteration)."""
    displacement = _total_displacement(fields, line_shifts)
    corners = bilinear_corners_kernel(image.shape, displacement)
    residual = warp_kernel(image, displacement, corners=corners) - frames
    grad_u = warp_adjoint_kernel(residual, displacement, image.shape, corners=corners) - alpha * laplacian(image)
    data = residual[:, None] * warp_derivative_kernel(image, displacement)
    grad_v = data - beta * laplacian(fields)
    grad_s = data[:, 0].sum(axis=1) + gamma * line_shifts
    return grad_u, grad_v, grad_s


# ---------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------
def check_frames(frames):
    """Validate a series: a finite real (K, nx, ny) stack, K >= 2, frames at least 8 × 8.

    Returns
    -------
    (K, nx, ny) float64 array
        On the selected device.
    """
    if isinstance(frames, (list, tuple)):
        shapes = {tuple(f.shape) if hasattr(f, "shape") else np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}")
        frames = backend.xp.stack([backend.asarray(f) for f in frames])
    frames = check_array(frames, "frames", ndim=3, real=True)
    if frames.shape[0] < 2 or min(frames.shape[1:]) < 8:
        raise ValueError(f"frames must be a stack of at least 2 frames of at least 8 x 8 pixels, "
                         f"got shape {frames.shape}")
    return frames.astype(backend.get_array_module(frames).float64)


def _cross_correlation_shifts(reference, frames, max_shift):
    """Shifts s_k with frame_k(x) ≈ reference(x + s_k), |s| <= max_shift per axis, to sub-pixel
    by a parabola through each correlation peak: (K, 2), all frames at once, on the device."""
    xp = backend.get_array_module(frames)
    K, nx, ny = frames.shape
    window = xp.outer(xp.hanning(nx), xp.hanning(ny))
    a = (reference - reference.mean()) * window
    b = (frames - frames.mean(axis=(-2, -1), keepdims=True)) * window
    c = backend.ifft2(xp.conj(backend.fft2(b)) * backend.fft2(a)).real
    dx, dy = (xp.abs(xp.fft.fftfreq(n, 1 / n)) for n in (nx, ny))
    c = xp.where((dx[:, None] <= max_shift + 1) & (dy[None, :] <= max_shift + 1), c, -xp.inf)
    flat = xp.argmax(c.reshape(K, -1), axis=1)  # the peaks stay on the device
    peak = (flat // ny, flat % ny)
    frame = xp.arange(K)
    shifts = []
    for axis, n in enumerate((nx, ny)):
        def value(d):
            index = list(peak)
            index[axis] = (peak[axis] + d) % n
            return c[frame, index[0], index[1]]

        before, at, after = value(-1), value(0), value(1)
        # A neighbour outside the searched window is -inf: no parabola there, offset 0.
        finite = xp.isfinite(before) & xp.isfinite(after)
        before, after = xp.where(finite, before, 0.0), xp.where(finite, after, 0.0)
        denominator = before - 2 * at + after
        curved = finite & (denominator < 0)
        offset = xp.where(curved, 0.5 * (before - after) / xp.where(curved, denominator, -1.0), 0.0)
        position = peak[axis] + offset
        shifts.append(xp.where(position > n / 2, position - n, position))
    return xp.stack(shifts, axis=1)


def rigid_shifts(frames, *, max_shift=None, num_iter: int = 3):
    """One rigid shift per frame, ``y_k(x) ≈ u(x + s_k)``, by cross-correlation.

    Frames are aligned to their running average; each of the ``num_iter``
    rounds measures the shift left after the previous ones (sub-pixel by a
    parabola through the correlation peak), for all frames at once on the
    device. The shifts have mean 0 over the series. The correlation of a
    crystal peaks at every lattice vector: keep ``max_shift`` below half the
    lattice spacing.

    Parameters
    ----------
    frames : (K, nx, ny) array
    max_shift : float, optional
        Largest shift searched per axis [pixels]; default a quarter of the frame.
    num_iter : int

    Returns
    -------
    (K, 2) array
        Shifts [pixels], on the selected device.
    """
    frames = check_frames(frames)
    num_iter = check_iterations(num_iter, "num_iter")
    max_shift = min(frames.shape[1:]) / 4 if max_shift is None else check_positive_number(max_shift, "max_shift")
    xp = backend.get_array_module(frames)
    shifts = xp.zeros((frames.shape[0], 2))
    aligned = frames
    for _ in range(num_iter):  # each round measures what is left: the sub-pixel bias shrinks
        reference = aligned.mean(axis=0)
        shifts = shifts + _cross_correlation_shifts(reference, aligned, max_shift)
        shifts = shifts - shifts.mean(axis=0)
        aligned = _align(frames, shifts)
    return shifts


def _align(frames, shifts):
    """Each frame warped by minus its rigid shift (bilinear, edges extended), all at once."""
    xp = backend.get_array_module(frames)
    fields = xp.ones((len(shifts), 2) + frames.shape[1:]) * -shifts[:, :, None, None]
    return warp_kernel(frames, fields)  # per round: checked inputs, no copy


def rigid_average(frames, *, max_shift=None, num_iter: int = 3):
    """The baseline: rigid registration by cross-correlation, then the average.

    ``max_shift`` [pixels] and ``num_iter`` as in :func:`rigid_shifts`.

    Returns
    -------
    average : (nx, ny) array
        On the selected device.
    shifts : (K, 2) array
        [pixels], as :func:`rigid_shifts`, on the selected device.
    """
    frames = check_frames(frames)
    shifts = rigid_shifts(frames, max_shift=max_shift, num_iter=num_iter)
    return _align(frames, shifts).mean(axis=0), shifts


def _downsample(array, factor):
    """Block-average the last two axes by ``factor`` (cropping a remainder)."""
    if factor == 1:
        return array
    nx, ny = (n // factor * factor for n in array.shape[-2:])
    a = array[..., :nx, :ny]
    return a.reshape(a.shape[:-2] + (nx // factor, factor, ny // factor, factor)).mean(axis=(-3, -1))


def _resample(array, shape):
    """Bilinear resampling of (..., mx, my) onto (..., nx, ny) covering the same area."""
    xp = backend.get_array_module(array)
    (mx, my), (nx, ny) = array.shape[-2:], shape
    px = xp.clip((xp.arange(nx) + 0.5) * mx / nx - 0.5, 0, mx - 1)
    py = xp.clip((xp.arange(ny) + 0.5) * my / ny - 0.5, 0, my - 1)
    i0 = xp.clip(xp.floor(px), 0, max(mx - 2, 0)).astype(xp.int64)
    j0 = xp.clip(xp.floor(py), 0, max(my - 2, 0)).astype(xp.int64)
    fx, fy = (px - i0)[:, None], (py - j0)[None, :]
    i1, j1 = xp.minimum(i0 + 1, mx - 1), xp.minimum(j0 + 1, my - 1)
    a = array
    return ((1 - fx) * (1 - fy) * a[..., i0[:, None], j0[None, :]] + fx * (1 - fy) * a[..., i1[:, None], j0[None, :]]
            + (1 - fx) * fy * a[..., i0[:, None], j1[None, :]] + fx * fy * a[..., i1[:, None], j1[None, :]])


def _sobolev(field, length):
    """Apply ``(I - length² Δ)⁻¹`` (periodic, by FFT) over the last two axes."""
    xp = backend.get_array_module(field)
    nx, ny = field.shape[-2:]
    kx, ky = xp.fft.fftfreq(nx)[:, None], xp.fft.fftfreq(ny)[None, :]
    symbol = 1 + length**2 * (4 * xp.sin(math.pi * kx) ** 2 + 4 * xp.sin(math.pi * ky) ** 2)
    return backend.ifft2(backend.fft2(field) / symbol).real


def _solve_image(image, displacement, frames, alpha, num_iter):
    """A few conjugate-gradient steps on ``(Σ D*D - αΔ) u = Σ D* y`` (gradient = δE/δu).

    The step lengths are 0-d device arrays: no copy to the host per step.
    """
    xp = backend.get_array_module(frames)
    corners = bilinear_corners_kernel(image.shape, displacement)

    def apply(x):
        warped = warp_kernel(x, displacement, corners=corners)
        return warp_adjoint_kernel(warped, displacement, x.shape, corners=corners) - alpha * laplacian(x)

    r = warp_adjoint_kernel(frames, displacement, image.shape, corners=corners) - apply(image)
    d = r.copy()
    rr = xp.sum(r * r)
    for _ in range(num_iter):
        ad = apply(d)
        step = rr / xp.maximum(xp.sum(d * ad), 1e-300)
        image = image + step * d
        r = r - step * ad
        rr_new = xp.sum(r * r)
        d = r + (rr_new / xp.maximum(rr, 1e-300)) * d
        rr = rr_new
    return image


#: Step lengths a line search tries at once: the step of the last iteration (doubled) halved 0..3 times.
LINE_SEARCH_STEPS = 4


def _trial_energies(image, fields, line_shifts, frames, dv, ds, steps, alpha, beta, gamma):
    """``E(u, v + t dv, s + t ds)`` for each step t of ``steps``, as a device array.

    The regularisers are quadratic in t: their three coefficients are summed once, so that
    each step costs one warp of the frames (the data term) and no more.
    """
    xp = backend.get_array_module(frames)
    g, dg = gradient(fields), gradient(dv)
    fields_terms = (xp.sum(g**2), 2 * xp.sum(g * dg), xp.sum(dg**2))
    shift_terms = (xp.sum(line_shifts**2), 2 * xp.sum(line_shifts * ds), xp.sum(ds**2))
    image_term = 0.5 * alpha * xp.sum(gradient(image) ** 2)
    energies = []
    for j in range(steps.shape[0]):
        t = steps[j]
        residual = warp_kernel(image, _total_displacement(fields + t * dv, line_shifts + t * ds)) - frames
        regularisers = (0.5 * beta * (fields_terms[0] + t * (fields_terms[1] + t * fields_terms[2]))
                        + 0.5 * gamma * (shift_terms[0] + t * (shift_terms[1] + t * shift_terms[2])))
        energies.append(0.5 * xp.sum(residual**2) + image_term + regularisers)
    return xp.stack(energies)


def _line_search(trial_energies, energy, slope, step, xp):
    """Backtracking (Armijo) on the device: the largest of ``step · 2^-j``, j < LINE_SEARCH_STEPS,
    with ``E(step) <= E + 1e-4 step slope``, or 0 if none (then the next search starts lower).

    All candidates are evaluated (``trial_energies(steps)``) and the choice is made with array
    operations, so that nothing comes to the host; steps below 1e-8 are never taken.

    Returns
    -------
    chosen, next_step : 0-d device arrays
    """
    steps = step * 0.5 ** xp.arange(LINE_SEARCH_STEPS)
    accepted = (trial_energies(steps) <= energy + 1e-4 * steps * slope) & (steps > 1e-8)
    found = xp.any(accepted)
    chosen = xp.where(found, steps[xp.argmax(accepted)], 0.0)
    return chosen, xp.where(found, 2.0 * chosen, 0.5 * steps[-1])


class JointResult(NamedTuple):
    """Result of :func:`joint_reconstruction` (arrays on the selected device).

    Attributes
    ----------
    image : (nx, ny) array
        The image, in the frames' units.
    displacements : (K, 2, nx, ny) array
        The displacements ``V_k`` [pixels].
    line_shifts : (K, ny) array
        The scan-line shifts [pixels].
    energies : (num_iter,) array
        The energy after each outer iteration of every level.
    """

    image: object
    displacements: object
    line_shifts: object
    energies: object


def joint_reconstruction(frames, *, alpha: float = 0.05, beta: float = 20.0, gamma: float = 0.1,
                         jitter: bool = True, levels: int = 3, max_num_iter: int = 40,
                         sobolev_length: float = 6.0, cg_iter: int = 5, tol: float = 1e-5,
                         check_every: int = 5, initial_shifts=None, max_shift=None) -> JointResult:
    """Joint estimate of an image and the smooth distortions (and scan-line jitter) of a series.

    Minimises :func:`distortion_energy` on the frames normalised to mean 1,
    coarse to fine over ``levels`` pyramid levels (factors ``2^(levels-1)``
    .. 1). At each level, each outer iteration takes

    1. one gradient step in (v, s) along ``-P δE/δ(v, s)``, with the Sobolev
       preconditioner ``P = (I - ℓ²Δ)⁻¹`` on v (ℓ = ``sobolev_length`` / factor),
       the frame-mean of the direction removed (the gauge ``Σ_k V_k = 0``), and
       a backtracking (Armijo) line search over :data:`LINE_SEARCH_STEPS`
       halvings evaluated at once (the energy never increases);
    2. ``cg_iter`` conjugate-gradient steps on the quadratic problem in u.

    The line shifts are estimated on the finest level only (a scan line does
    not survive block averaging). Every ``check_every`` iterations a level
    stops when its last iteration decreased E by less than ``tol``
    relatively: that test is the only copy to the host in the iterations
    (none with ``tol=0``).

    Parameters
    ----------
    frames : (K, nx, ny) array
        The series [counts].
    alpha, beta, gamma : float
        Weights of ``‖∇u‖²``, ``‖∇v_k‖²`` and ``‖s_k‖²`` (frames normalised to mean 1).
    jitter : bool
        Estimate scan-line shifts (True) or smooth fields only.
    levels : int
        Pyramid levels.
    max_num_iter : int
        Outer iterations per level.
    sobolev_length : float
        Smoothing length of the preconditioner at full resolution [pixels].
    cg_iter : int
        CG steps on u per outer iteration.
    tol : float
        Relative decrease of E to stop a level at; 0 runs every iteration.
    check_every : int
        Outer iterations between stopping tests.
    initial_shifts : (K, 2) array, optional
        Rigid shifts to start from [pixels] (default: :func:`rigid_shifts`).
    max_shift : float, optional
        Passed to :func:`rigid_shifts` when ``initial_shifts`` is not given [pixels].

    Returns
    -------
    JointResult
    """
    frames = check_frames(frames)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        check_positive_number(value, name, allow_zero=name == "gamma")
    levels, max_num_iter = check_iterations(levels, "levels"), check_iterations(max_num_iter)
    cg_iter = check_iterations(cg_iter, "cg_iter")
    check_every = check_iterations(check_every, "check_every")
    tol = check_tolerance(tol)
    sobolev_length = check_positive_number(sobolev_length, "sobolev_length")
    xp = backend.get_array_module(frames)
    K, nx, ny = frames.shape
    if min(nx, ny) // 2 ** (levels - 1) < 8:
        raise ValueError(f"levels={levels} leaves fewer than 8 pixels on the coarsest level of {nx} x {ny} frames")
    if initial_shifts is not None:
        initial_shifts = check_array(initial_shifts, "initial_shifts", real=True).astype(xp.float64)
        if initial_shifts.shape != (K, 2):
            raise ValueError(f"initial_shifts must have shape {(K, 2)}, got {initial_shifts.shape}")
    scale = float(frames.mean())
    frames = frames / scale
    shifts = rigid_shifts(frames, max_shift=max_shift) if initial_shifts is None else initial_shifts
    shifts = shifts - shifts.mean(axis=0)
    factor = 2 ** (levels - 1)
    coarse = _downsample(frames, factor)
    fields = xp.ones((K, 2) + coarse.shape[1:]) * (shifts / factor)[:, :, None, None]
    energies = []  # 0-d device arrays, stacked once at the end
    weights = dict(alpha=alpha, beta=beta, gamma=gamma)
    for level in progress.progress(range(levels), desc="coarse to fine"):
        factor = 2 ** (levels - 1 - level)
        y = _downsample(frames, factor)
        if fields.shape[-2:] != y.shape[1:]:
            fields = 2.0 * _resample(fields, y.shape[1:])
        fine = factor == 1 and jitter
        s = xp.zeros((K, y.shape[2]))
        u = _solve_image(y.mean(axis=0), _total_displacement(fields, s), y, alpha, 4 * cg_iter)
        energy = _energy(u, fields, s, y, **weights)
        step, length = xp.asarray(1.0), sobolev_length / factor
        for it in range(1, max_num_iter + 1):
            _, grad_v, grad_s = _gradients(u, fields, s, y, **weights)
            dv = -_sobolev(grad_v, length)
            ds = -grad_s / y.shape[1] if fine else xp.zeros_like(s)
            dv -= dv.mean(axis=0, keepdims=True)
            ds -= ds.mean(axis=0, keepdims=True)
            slope = xp.sum(grad_v * dv) + xp.sum(grad_s * ds)
            chosen, step = _line_search(
                lambda steps: _trial_energies(u, fields, s, y, dv, ds, steps, alpha, beta, gamma),
                energy, slope, step, xp)
            fields, s = fields + chosen * dv, s + chosen * ds  # chosen = 0: no move
            u = _solve_image(u, _total_displacement(fields, s), y, alpha, cg_iter)
            previous, energy = energy, _energy(u, fields, s, y, **weights)
            energies.append(energy)
            if tol > 0 and it % check_every == 0 and bool(previous - energy <= tol * abs(energy)):
                break  # the one copy per check
    displacement = _total_displacement(fields, s)
    return JointResult(u * scale, displacement, s, xp.stack(energies))
