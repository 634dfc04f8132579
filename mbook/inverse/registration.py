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
  (bilinear interpolation scattered back onto the grid);
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

from mbook.core import backend, progress
from mbook.core.checks import check_positive_number
from mbook.inverse.optimize import gradient, laplacian
from mbook.core.checks import check_finite_array, check_iterations


# ---------------------------------------------------------------------------------------
# the warp, its adjoint and its derivative
# ---------------------------------------------------------------------------------------
def _stencil(shape, displacement):
    """Corner indices, weights and in-range masks of bilinear interpolation at x + V."""
    xp = backend.get_array_module(displacement)
    nx, ny = shape
    px = xp.arange(nx, dtype=displacement.dtype)[:, None] + displacement[..., 0, :, :]
    py = xp.arange(ny, dtype=displacement.dtype)[None, :] + displacement[..., 1, :, :]
    inside_x = (px >= 0) & (px <= nx - 1)
    inside_y = (py >= 0) & (py <= ny - 1)
    px, py = xp.clip(px, 0, nx - 1), xp.clip(py, 0, ny - 1)  # constant extension past the edges
    i0 = xp.clip(xp.floor(px), 0, nx - 2).astype(xp.int64)
    j0 = xp.clip(xp.floor(py), 0, ny - 2).astype(xp.int64)
    return i0, j0, px - i0, py - j0, inside_x, inside_y


def warp(image, displacement):
    """The distortion ``D(u)(x) = u(x + V(x))`` by bilinear interpolation.

    Beyond the edges the image is extended by its edge values.

    Parameters
    ----------
    image : (nx, ny) array
        Image u [any unit].
    displacement : (..., 2, nx, ny) array
        Displacement fields V [pixels].

    Returns
    -------
    (..., nx, ny) array
    """
    i0, j0, fx, fy, _, _ = _stencil(image.shape, displacement)
    u = image
    return ((1 - fx) * (1 - fy) * u[i0, j0] + fx * (1 - fy) * u[i0 + 1, j0]
            + (1 - fx) * fy * u[i0, j0 + 1] + fx * fy * u[i0 + 1, j0 + 1])


def warp_adjoint(residual, displacement, shape=None):
    """Adjoint of :func:`warp` in the image, summed over the fields: ``Σ_k D_k*(r_k)``.

    Parameters
    ----------
    residual : (..., nx, ny) array
    displacement : (..., 2, nx, ny) array
        The fields of the forward warp [pixels].
    shape : (int, int), optional
        Image shape (default: that of the residual).

    Returns
    -------
    (nx, ny) array
    """
    xp = backend.get_array_module(residual)
    shape = tuple(shape or residual.shape[-2:])
    i0, j0, fx, fy, _, _ = _stencil(shape, displacement)
    out = xp.zeros(shape[0] * shape[1], dtype=residual.real.dtype)
    for di, dj, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        index = ((i0 + di) * shape[1] + (j0 + dj)).ravel()
        out += xp.bincount(index, weights=(weight * residual).real.ravel(), minlength=out.size)
    if xp.iscomplexobj(residual):  # keep the adjoint exact for complex inputs (dot-product test)
        imag = xp.zeros_like(out)
        for di, dj, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                               (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            index = ((i0 + di) * shape[1] + (j0 + dj)).ravel()
            imag += xp.bincount(index, weights=(weight * residual).imag.ravel(), minlength=out.size)
        out = out + 1j * imag
    return out.reshape(shape)


def warp_derivative(image, displacement):
    """Derivative of ``warp(image, V)`` with respect to V: ``(∇u)(x + V)`` of the interpolant.

    Exact for the bilinear interpolant (0 where the sample is clamped at an edge).

    Returns
    -------
    (..., 2, nx, ny) array
        ``∂/∂V_x`` and ``∂/∂V_y`` [unit of u per pixel].
    """
    xp = backend.get_array_module(displacement)
    i0, j0, fx, fy, inside_x, inside_y = _stencil(image.shape, displacement)
    u = image
    dx = (1 - fy) * (u[i0 + 1, j0] - u[i0, j0]) + fy * (u[i0 + 1, j0 + 1] - u[i0, j0 + 1])
    dy = (1 - fx) * (u[i0, j0 + 1] - u[i0, j0]) + fx * (u[i0 + 1, j0 + 1] - u[i0 + 1, j0])
    return xp.stack([dx * inside_x, dy * inside_y], axis=-3)


# ---------------------------------------------------------------------------------------
# the energy and its first variations
# ---------------------------------------------------------------------------------------
def total_displacement(fields, line_shifts):
    """``V_k = v_k + (s_k(y), 0)``: smooth fields (K, 2, nx, ny) plus line shifts (K, ny)."""
    out = fields.copy()
    out[:, 0] += line_shifts[:, None, :]
    return out


def distortion_energy(image, fields, line_shifts, frames, *, alpha: float, beta: float,
                      gamma: float) -> float:
    """``E(u, v, s)`` of the module docstring (frames and image in the same units)."""
    xp = backend.get_array_module(frames)
    residual = warp(image, total_displacement(fields, line_shifts)) - frames
    return float(0.5 * xp.sum(residual**2) + 0.5 * alpha * xp.sum(gradient(image) ** 2)
                 + 0.5 * beta * xp.sum(gradient(fields) ** 2) + 0.5 * gamma * xp.sum(line_shifts**2))


def distortion_gradients(image, fields, line_shifts, frames, *, alpha: float, beta: float,
                         gamma: float):
    """First variations of :func:`distortion_energy`: ``(δE/δu, δE/δv, δE/δs)``.

    Returns
    -------
    (nx, ny), (K, 2, nx, ny), (K, ny) arrays
    """
    displacement = total_displacement(fields, line_shifts)
    residual = warp(image, displacement) - frames
    grad_u = warp_adjoint(residual, displacement, image.shape) - alpha * laplacian(image)
    data = residual[:, None] * warp_derivative(image, displacement)
    grad_v = data - beta * laplacian(fields)
    grad_s = data[:, 0].sum(axis=1) + gamma * line_shifts
    return grad_u, grad_v, grad_s


# ---------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------
def check_frames(frames):
    """Validate a series: a finite real (K, nx, ny) stack, K >= 2, frames at least 8 × 8."""
    if isinstance(frames, (list, tuple)):
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}")
    frames = check_finite_array(frames, "frames", ndim=3, real=True)
    if frames.shape[0] < 2 or min(frames.shape[1:]) < 8:
        raise ValueError(f"frames must be a stack of at least 2 frames of at least 8 x 8 pixels, "
                         f"got shape {frames.shape}")
    return frames.astype(backend.get_array_module(frames).float64)


def _cross_correlation_shift(reference, frame, max_shift):
    """Shift s with frame(x) ≈ reference(x + s), |s| <= max_shift per axis, to sub-pixel
    by a parabola through the correlation peak."""
    xp = backend.get_array_module(frame)
    nx, ny = frame.shape
    window = xp.outer(xp.hanning(nx), xp.hanning(ny))
    a, b = (reference - reference.mean()) * window, (frame - frame.mean()) * window
    c = backend.ifft2(xp.conj(backend.fft2(b)) * backend.fft2(a)).real
    dx, dy = (xp.abs(xp.fft.fftfreq(n, 1 / n)) for n in (nx, ny))
    c = xp.where((dx[:, None] <= max_shift + 1) & (dy[None, :] <= max_shift + 1), c, -xp.inf)
    peak = np.unravel_index(int(xp.argmax(c)), c.shape)
    shift = []
    for axis, n in enumerate((nx, ny)):
        index = list(peak)
        values = []
        for d in (-1, 0, 1):
            index[axis] = (peak[axis] + d) % n
            values.append(float(c[tuple(index)]))
        denominator = values[0] - 2 * values[1] + values[2]
        finite = math.isfinite(denominator) and denominator < 0
        offset = 0.5 * (values[0] - values[2]) / denominator if finite else 0.0
        position = peak[axis] + offset
        shift.append(position - n if position > n / 2 else position)
    return shift


def rigid_shifts(frames, *, max_shift=None, num_iter: int = 3):
    """One rigid shift per frame, ``y_k(x) ≈ u(x + s_k)``, by cross-correlation.

    Frames are aligned to their running average; each of the ``num_iter``
    rounds measures the shift left after the previous ones (sub-pixel by a
    parabola through the correlation peak). The shifts have mean 0 over the
    series. The correlation of a crystal peaks at
    every lattice vector: keep ``max_shift`` below half the lattice spacing.

    Parameters
    ----------
    frames : (K, nx, ny) array
    max_shift : float, optional
        Largest shift searched per axis [pixels]; default a quarter of the frame.
    num_iter : int

    Returns
    -------
    (K, 2) ndarray
        Shifts [pixels].
    """
    frames = check_frames(frames)
    num_iter = check_iterations(num_iter, "num_iter")
    max_shift = min(frames.shape[1:]) / 4 if max_shift is None else check_positive_number(max_shift, "max_shift")
    xp = backend.get_array_module(frames)
    shifts = np.zeros((frames.shape[0], 2))
    aligned = frames
    for _ in range(num_iter):  # each round measures what is left: the sub-pixel bias shrinks
        reference = aligned.mean(axis=0)
        shifts += np.array([_cross_correlation_shift(reference, frame, max_shift) for frame in aligned])
        shifts -= shifts.mean(axis=0)
        aligned = _align(frames, xp.asarray(shifts))
    return shifts


def _align(frames, shifts):
    xp = backend.get_array_module(frames)
    fields = xp.ones((len(shifts), 2) + frames.shape[1:]) * -shifts[:, :, None, None]
    return xp.stack([warp(frame, field[None])[0] for frame, field in zip(frames, fields)])


def rigid_average(frames, *, max_shift=None, num_iter: int = 3):
    """The baseline: rigid registration by cross-correlation, then the average.

    ``max_shift`` [pixels] and ``num_iter`` as in :func:`rigid_shifts`.

    Returns
    -------
    average : (nx, ny) ndarray
    shifts : (K, 2) ndarray
        [pixels], as :func:`rigid_shifts`.
    """
    frames = check_frames(frames)
    shifts = rigid_shifts(frames, max_shift=max_shift, num_iter=num_iter)
    xp = backend.get_array_module(frames)
    return backend.asnumpy(_align(frames, xp.asarray(shifts)).mean(axis=0)), shifts


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
    """A few conjugate-gradient steps on ``(Σ D*D - αΔ) u = Σ D* y`` (gradient = δE/δu)."""
    xp = backend.get_array_module(frames)

    def apply(x):
        return warp_adjoint(warp(x, displacement), displacement, x.shape) - alpha * laplacian(x)

    r = warp_adjoint(frames, displacement, image.shape) - apply(image)
    d = r.copy()
    rr = float(xp.sum(r * r))
    for _ in range(num_iter):
        ad = apply(d)
        step = rr / max(float(xp.sum(d * ad)), 1e-300)
        image = image + step * d
        r = r - step * ad
        rr_new = float(xp.sum(r * r))
        d = r + (rr_new / max(rr, 1e-300)) * d
        rr = rr_new
    return image


class JointResult(NamedTuple):
    """Result of :func:`joint_reconstruction`: the image (NumPy, in the frames' units),
    the displacements ``V_k`` (K, 2, nx, ny) [pixels] and the line shifts (K, ny)
    [pixels], and the energy after each outer iteration of every level."""

    image: np.ndarray
    displacements: np.ndarray
    line_shifts: np.ndarray
    energies: list


def joint_reconstruction(frames, *, alpha: float = 0.05, beta: float = 20.0, gamma: float = 0.1,
                         jitter: bool = True, levels: int = 3, max_num_iter: int = 40,
                         sobolev_length: float = 6.0, cg_iter: int = 5, tol: float = 1e-5,
                         initial_shifts=None, max_shift=None) -> JointResult:
    """Joint estimate of an image and the smooth distortions (and scan-line jitter) of a series.

    Minimises :func:`distortion_energy` on the frames normalised to mean 1,
    coarse to fine over ``levels`` pyramid levels (factors ``2^(levels-1)``
    .. 1). At each level, each outer iteration takes

    1. one gradient step in (v, s) along ``-P δE/δ(v, s)``, with the Sobolev
       preconditioner ``P = (I - ℓ²Δ)⁻¹`` on v (ℓ = ``sobolev_length`` / factor),
       the frame-mean of the direction removed (the gauge ``Σ_k V_k = 0``), and
       a backtracking (Armijo) line search;
    2. ``cg_iter`` conjugate-gradient steps on the quadratic problem in u.

    The line shifts are estimated on the finest level only (a scan line does
    not survive block averaging). Stops a level when E decreases by less than
    ``tol`` relatively.

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
    sobolev_length = check_positive_number(sobolev_length, "sobolev_length")
    xp = backend.get_array_module(frames)
    K, nx, ny = frames.shape
    if min(nx, ny) // 2 ** (levels - 1) < 8:
        raise ValueError(f"levels={levels} leaves fewer than 8 pixels on the coarsest level of {nx} x {ny} frames")
    scale = float(frames.mean())
    frames = frames / scale
    shifts = rigid_shifts(frames, max_shift=max_shift) if initial_shifts is None else np.asarray(initial_shifts, float)
    if shifts.shape != (K, 2):
        raise ValueError(f"initial_shifts must have shape {(K, 2)}, got {shifts.shape}")
    shifts = shifts - shifts.mean(axis=0)
    factor = 2 ** (levels - 1)
    coarse = _downsample(frames, factor)
    fields = xp.ones((K, 2) + coarse.shape[1:]) * xp.asarray(shifts / factor)[:, :, None, None]
    energies = []
    for level in progress.progress(range(levels), desc="coarse to fine"):
        factor = 2 ** (levels - 1 - level)
        y = _downsample(frames, factor)
        if fields.shape[-2:] != y.shape[1:]:
            fields = 2.0 * _resample(fields, y.shape[1:])
        fine = factor == 1 and jitter
        s = xp.zeros((K, y.shape[2]))
        weights = dict(alpha=alpha, beta=beta, gamma=gamma)
        u = _solve_image(y.mean(axis=0), total_displacement(fields, s), y, alpha, 4 * cg_iter)
        energy = distortion_energy(u, fields, s, y, **weights)
        step, length = 1.0, sobolev_length / factor
        for _ in range(max_num_iter):
            _, grad_v, grad_s = distortion_gradients(u, fields, s, y, **weights)
            dv = -_sobolev(grad_v, length)
            ds = -grad_s / y.shape[1] if fine else xp.zeros_like(s)
            dv -= dv.mean(axis=0, keepdims=True)
            ds -= ds.mean(axis=0, keepdims=True)
            slope = float(xp.sum(grad_v * dv) + xp.sum(grad_s * ds))
            while step > 1e-8:
                trial_v, trial_s = fields + step * dv, s + step * ds
                trial = distortion_energy(u, trial_v, trial_s, y, **weights)
                if trial <= energy + 1e-4 * step * slope:
                    fields, s = trial_v, trial_s
                    step *= 2.0
                    break
                step *= 0.5
            u = _solve_image(u, total_displacement(fields, s), y, alpha, cg_iter)
            previous, energy = energy, distortion_energy(u, fields, s, y, **weights)
            energies.append(energy)
            if previous - energy <= tol * abs(energy):
                break
    displacement = total_displacement(fields, s)
    return JointResult(backend.asnumpy(u * scale), backend.asnumpy(displacement), backend.asnumpy(s), energies)
