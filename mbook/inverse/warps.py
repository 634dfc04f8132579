"""Distortions of an image by displacement fields: the bilinear warp, its adjoint and its derivative.

``D(u)(x) = u(x + V(x))`` samples an image at displaced positions by
bilinear interpolation, the image extended by its edge values beyond the
grid. It is linear in ``u``: :func:`warp_adjoint` scatters values back onto
the four pixels each sample was interpolated from (the dot-product test of
``tests/test_adjoints.py`` checks it), and :func:`warp_derivative` is the
exact derivative of the interpolant with respect to the displacement. They
are the operators of the distortion model of :mod:`mbook.inverse.registration`.

Displacements are in pixels; arrays are indexed ``[x, y]``
(:mod:`mbook.core.grids`). Inputs are moved to the selected device and the
results stay there. A solver that applies the warp and its adjoint many
times with one displacement computes the interpolation corners once
(:func:`bilinear_corners`) and passes them as ``corners=``.

Examples
--------
>>> import numpy as np
>>> from mbook.inverse import warps
>>> u = np.add.outer(np.arange(6.0), np.zeros(5))  # u(x, y) = x
>>> v = np.full((1, 2, 6, 5), 0.25)  # shift everything by a quarter pixel
>>> float(warps.warp(u, v)[0, 2, 2])
2.25
"""

from __future__ import annotations

import math

from mbook.core import backend, checks, scatter


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


def _check_displacement(displacement, shape, of="shape"):
    """A finite ``(..., 2, nx, ny)`` displacement on the selected device (one copy to test finiteness: the
    registration's iterations call the ``*_kernel`` functions instead)."""
    displacement = checks.check_array(displacement, "displacement", min_ndim=3, real=True)
    if displacement.shape[-3] != 2 or tuple(displacement.shape[-2:]) != tuple(shape):
        raise ValueError(f"displacement must be (..., 2, nx, ny) with (nx, ny) = {tuple(shape)} of {of}, "
                         f"got shape {displacement.shape}")
    return displacement


def _check_corners(corners):
    if corners is not None and (not isinstance(corners, tuple) or len(corners) != 4):
        raise TypeError(f"corners must be the 4 (index, weight) pairs of bilinear_corners, got {corners!r:.60}")
    return corners


def bilinear_corners(shape, displacement):
    """The four corners of bilinear interpolation at ``x + V``, for warps that reuse one displacement.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(nx, ny)``.
    displacement : (..., 2, nx, ny) array
        Displacement fields V [pixels].

    Returns
    -------
    tuple of 4 (index, weight) pairs
        Flat pixel indices into an ``(nx, ny)`` image and their weights,
        each ``(..., nx, ny)``, on the selected device.
    """
    shape = checks.check_gpts(shape, 2, name="shape")
    return bilinear_corners_kernel(shape, _check_displacement(displacement, shape))


def bilinear_corners_kernel(shape, displacement):
    """:func:`bilinear_corners` on checked inputs (a device array, a tuple shape): no checks, no copy.

    For solvers that warp in every iteration, after checking once on entry.
    """
    i0, j0, fx, fy, _, _ = _stencil(shape, displacement)
    ny = shape[1]
    base = i0 * ny + j0
    return ((base, (1 - fx) * (1 - fy)), (base + ny, fx * (1 - fy)),
            (base + 1, (1 - fx) * fy), (base + ny + 1, fx * fy))


def warp(image, displacement, *, corners=None):
    """The distortion ``D(u)(x) = u(x + V(x))`` by bilinear interpolation.

    Beyond the edges the image is extended by its edge values.

    Parameters
    ----------
    image : (nx, ny) or (..., nx, ny) array
        Image u [any unit]; a stack holds one image per field.
    displacement : (..., 2, nx, ny) array
        Displacement fields V [pixels].
    corners : optional
        :func:`bilinear_corners` of ``displacement``, when already computed.

    Returns
    -------
    (..., nx, ny) array
        On the selected device.
    """
    u = checks.check_array(image, "image", min_ndim=2)
    displacement = _check_displacement(displacement, u.shape[-2:], "image")
    return warp_kernel(u, displacement, corners=_check_corners(corners))


def warp_kernel(image, displacement, *, corners=None):
    """:func:`warp` on checked device inputs: no checks, no copy (solvers call it every iteration)."""
    u = image
    xp = backend.get_array_module(u)
    corners = corners or bilinear_corners_kernel(tuple(u.shape[-2:]), displacement)
    flat = u.reshape(-1)
    offset = 0
    if u.ndim > 2:  # one image per field: each field samples its own image
        batch = u.shape[:-2]
        offset = (xp.arange(math.prod(batch)) * (u.shape[-2] * u.shape[-1])).reshape(batch + (1, 1))
    out = None
    for index, weight in corners:
        term = weight * xp.take(flat, index + offset)
        out = term if out is None else out + term
    return out


def warp_adjoint(residual, displacement, shape=None, *, corners=None):
    """Adjoint of :func:`warp` (of one image) in the image, summed over the fields: ``Σ_k D_k*(r_k)``.

    Parameters
    ----------
    residual : (..., nx, ny) array
    displacement : (..., 2, nx, ny) array
        The fields of the forward warp [pixels].
    shape : (int, int), optional
        Image shape (default: that of the residual).
    corners : optional
        :func:`bilinear_corners` of ``displacement``, when already computed.

    Returns
    -------
    (nx, ny) array
        On the selected device.
    """
    residual = checks.check_array(residual, "residual", min_ndim=2)
    shape = residual.shape[-2:] if shape is None else checks.check_gpts(shape, 2, name="shape")
    if tuple(shape) != tuple(residual.shape[-2:]):
        raise ValueError(f"shape must be the residual's last two axes {tuple(residual.shape[-2:])}, got {shape}")
    displacement = _check_displacement(displacement, residual.shape[-2:], "residual")
    return warp_adjoint_kernel(residual, displacement, tuple(shape), corners=_check_corners(corners))


def warp_adjoint_kernel(residual, displacement, shape, *, corners=None):
    """:func:`warp_adjoint` on checked device inputs and a tuple ``shape``: no checks, no copy."""
    xp = backend.get_array_module(residual)
    corners = corners or bilinear_corners_kernel(shape, displacement)
    size = shape[0] * shape[1]
    out = xp.zeros(size, dtype=residual.real.dtype)
    for index, weight in corners:
        scatter.add(out, index.ravel(), (weight * residual).real.ravel())
    if xp.iscomplexobj(residual):  # keep the adjoint exact for complex inputs (dot-product test)
        imag = xp.zeros_like(out)
        for index, weight in corners:
            scatter.add(imag, index.ravel(), (weight * residual).imag.ravel())
        out = out + 1j * imag
    return out.reshape(shape)


def warp_derivative(image, displacement):
    """Derivative of ``warp(image, V)`` with respect to V: ``(∇u)(x + V)`` of the interpolant.

    Exact for the bilinear interpolant (0 where the sample is clamped at an edge).

    Parameters
    ----------
    image : (nx, ny) array
    displacement : (..., 2, nx, ny) array
        [pixels].

    Returns
    -------
    (..., 2, nx, ny) array
        ``∂/∂V_x`` and ``∂/∂V_y`` [unit of u per pixel], on the selected device.
    """
    image = checks.check_array(image, "image", ndim=2)
    return warp_derivative_kernel(image, _check_displacement(displacement, image.shape, "image"))


def warp_derivative_kernel(image, displacement):
    """:func:`warp_derivative` on checked device inputs: no checks, no copy."""
    xp = backend.get_array_module(displacement)
    i0, j0, fx, fy, inside_x, inside_y = _stencil(image.shape, displacement)
    u = image
    dx = (1 - fy) * (u[i0 + 1, j0] - u[i0, j0]) + fy * (u[i0 + 1, j0 + 1] - u[i0, j0 + 1])
    dy = (1 - fx) * (u[i0, j0 + 1] - u[i0, j0]) + fx * (u[i0 + 1, j0 + 1] - u[i0 + 1, j0])
    return xp.stack([dx * inside_x, dy * inside_y], axis=-3)
