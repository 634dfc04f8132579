"""The convergent Born series: a rigorous Helmholtz solver for large, strongly scattering samples.

Osnabrugge, Leedumrongwatthanakun & Vellekoop (2016) rewrite the Helmholtz
equation ``∇²u + k(r)² u = -S`` around a *damped* background
``k0² + iε``:

``∇²u + (k0² + iε) u = -S - V u``,  ``V(r) = k(r)² - k0² - iε``,

so that the background Green's function ``g0(p) = 1 / (|p|² - k0² - iε)``
(``p = 2πk``, applied by FFT) is short-ranged. With the preconditioner
``γ = (i/ε) V`` the Lippmann–Schwinger equation becomes

``u = M u + γ g0 S``,  ``M = γ g0 V - γ + 1``       (paper, eqs. 9–11),

and the series ``u = Σ_j M^j γ g0 S`` converges for any contrast as long as
``ε >= max |k(r)² - k0²|`` (their eq. 12 makes ``‖M‖ < 1``). ``k0²`` is
chosen midway between the smallest and largest ``Re k²`` to make ``ε``
small, since each iteration carries the wave over a "pseudo-propagation"
length of about ``2 k0 / ε``.

The incident plane wave is handled in scattered-field form: ``u = u_in + u_s``
with ``S = (k_obj² - k_b²) u_in``, which vanishes outside the sample, so only
the outgoing scattered wave meets the edges of the grid. There it enters an
**absorbing layer** of thickness ``boundary`` in which ``k²`` is raised by

``Δk²(d) = c^{N+2} d^N (N + 1 + (2i k_b - c) d) / ((N+1)! Σ_{j<=N+1} (c d)^j / j!)``

at depth ``d``: the exact profile for which a normally incident wave decays as
``e^{-cd} Σ_{j<=N+1} (cd)^j/j!``, smooth to order N at the inner edge so that
it barely reflects (the paper's boundary; N = 4 here).

Iterations stop when the update is small: ``‖u_{j+1} - u_j‖ <= tol ‖u_j‖`` over
the region of interest, tested every ``check_every`` iterations (the test is
the one copy to the host the loop makes; the norms stay on the device in
between). Running out of iterations first is an error, never a silent
result; ``tol=0`` runs every iteration and tests nothing.

Examples
--------
>>> from mbook.core import backend
>>> from mbook.light import cbs, mie
>>> n = mie.cylinder_index((48, 48), sampling=0.04, radius=0.3, n_cylinder=1.40, n_background=1.33)
>>> result = cbs.solve(n, wavelength=0.5, sampling=0.04, n_background=1.33, tol=1e-6)
>>> exact = mie.cylinder_field((48, 48), sampling=0.04, wavelength=0.5, radius=0.3,
...                            n_cylinder=1.40, n_background=1.33)
>>> difference = backend.asnumpy(result.field - exact)
>>> bool((abs(difference) ** 2).sum() < 0.02**2 * (abs(backend.asnumpy(exact)) ** 2).sum())
True
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import scipy.fft

from mbook.core import backend, checks, grids, progress
from mbook.light import scattering

BOUNDARY_ORDER = 4
EPSILON_MARGIN = 1.05


class Solution(NamedTuple):
    """Result of :func:`solve`.

    Attributes
    ----------
    field : ndarray, complex128
        Total field on the input grid, carrier left out, on the selected device.
    num_iter : int
        Iterations done.
    residual : float
        Relative size of the last update, ``‖Δu‖ / ‖u‖`` (at the last
        convergence test, or after the last iteration when ``tol=0``).
    epsilon : float
        Damping ε used [rad²/µm²].
    """

    field: object
    num_iter: int
    residual: float
    epsilon: float


def boundary_profile(depth, *, k, strength, order=BOUNDARY_ORDER):
    """``Δk²`` of the absorbing layer at ``depth`` [µm] into it [rad²/µm²].

    Parameters
    ----------
    depth : ndarray
        Distance into the layer, 0 at its inner edge [µm].
    k : float
        Wavenumber of the medium the layer continues, ``k_b`` [rad/µm].
    strength : float
        Decay rate ``c`` of the transmitted amplitude, in units of ``k``.
    order : int
        Smoothness N at the inner edge.

    Returns
    -------
    ndarray, complex128
        Same shape as ``depth``, on the selected device.
    """
    depth = checks.check_array(depth, "depth", real=True)
    k = checks.check_positive_number(k, "k")
    strength = checks.check_positive_number(strength, "strength", allow_zero=True)
    order = checks.check_count(order, "order")
    if bool((depth < 0).any()):
        raise ValueError("depth must be >= 0 everywhere (a distance into the absorbing layer) [µm]")
    c = strength * k
    cd = c * depth
    series = sum(cd**j / math.factorial(j) for j in range(order + 2))
    return c**2 * cd**order * (order + 1 + (2j * k - c) * depth) / (math.factorial(order + 1) * series)


def _padded_medium(k2, grid, boundary, k_b, strength, xp):
    """Pad ``k²`` with absorbing layers (to FFT-friendly sizes); return it and the ROI slices."""
    pads = [int(math.ceil(boundary / d)) for d in grid.sampling]
    shape = tuple(scipy.fft.next_fast_len(n + 2 * p) for n, p in zip(grid.gpts, pads))
    roi = tuple(slice(p, p + n) for p, n in zip(pads, grid.gpts))
    depth2 = 0.0
    for axis, (n_total, r, d) in enumerate(zip(shape, roi, grid.sampling)):
        index = xp.arange(n_total)
        outside = xp.maximum(r.start - index, 0) + xp.maximum(index - (r.stop - 1), 0)
        depth2 = depth2 + ((outside * d) ** 2).reshape([-1 if a == axis else 1 for a in range(grid.ndim)])
    padded = xp.full(shape, k_b**2, xp.complex128) + boundary_profile(xp.sqrt(depth2), k=k_b, strength=strength)
    padded[roi] = k2
    return padded, roi


def solve(n, *, wavelength, sampling, n_background=1.0, tilt=0.0, boundary=None, boundary_strength=0.5,
          epsilon=None, tol=1e-6, max_num_iter=5000, check_every=10):
    """Total field of a plane wave through an index map, by the convergent Born series.

    Parameters
    ----------
    n : (nz, nx) or (nz, nx, ny) array_like, complex
        Index map (``Im n >= 0``), axis 0 along the incident wave; it should be
        surrounded by some background so the source stays clear of the layers.
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or tuple
        Grid spacing [µm], at most ``λ0 / (2 max Re n)``.
    n_background : float
        Index of the medium (and of the absorbing layers).
    tilt : float or (float, float)
        Transverse frequency of the incident plane wave [1/µm].
    boundary : float, optional
        Thickness of the absorbing layer on every side [µm]; default four
        wavelengths in the medium (reflections below 1e-3 with the default strength).
    boundary_strength : float
        Amplitude decay rate in the layer, in units of ``k_b`` (0.05–1).
    epsilon : float, optional
        Damping ε [rad²/µm²], above ``max |k² - k0²|``; default 1.05 times that bound.
    tol : float
        Stop when the relative update falls below ``tol``, in [0, 1); 0 runs
        all ``max_num_iter`` iterations with no convergence test.
    max_num_iter : int
        Iteration cap.
    check_every : int
        Iterations between convergence tests (each copies one number to the
        host); the last iteration is always tested.

    Returns
    -------
    Solution
        ``field`` (on the selected device, carrier left out), ``num_iter``,
        ``residual``, ``epsilon``.

    Raises
    ------
    ValueError
        Bad index map or sampling (see :func:`mbook.light.scattering.check_index`), or
        ``epsilon`` below the convergence bound ``max |k(r)² - k0²|``.
    MemoryError
        When the padded grid does not fit the memory budget of :mod:`mbook.core.progress`.
    RuntimeError
        When ``max_num_iter`` is reached before ``tol`` (``tol > 0``).
    """
    n, grid, wavelength, n_b = scattering.check_index(n, wavelength=wavelength, sampling=sampling,
                                                      n_background=n_background)
    xp = backend.get_array_module(n)
    tol = checks.check_tolerance(tol)
    if tol >= 1:
        raise ValueError(f"tol must be a number in [0, 1), got {tol!r}")
    if isinstance(boundary_strength, bool) or not isinstance(boundary_strength, numbers.Real) or not (
            0.0 < boundary_strength < 5.0):
        raise ValueError(f"boundary_strength must be a number in (0.0, 5.0), got {boundary_strength!r}")
    max_num_iter = checks.check_iterations(max_num_iter)
    check_every = checks.check_count(check_every, "check_every")
    k0 = 2 * math.pi / wavelength
    k_b = k0 * n_b
    boundary = 4 * wavelength / n_b if boundary is None else checks.check_positive(boundary, "boundary", 1)[0]

    padded_size = math.prod(scipy.fft.next_fast_len(g + 2 * int(math.ceil(boundary / d)))
                            for g, d in zip(grid.gpts, grid.sampling))
    # about eight complex arrays of the padded grid live at once (medium, γ, g0, field, update, FFTs)
    progress.plan_batches(n_items=1, bytes_per_item=8 * 16 * padded_size)
    k2_object = k0**2 * n**2
    k2, roi = _padded_medium(k2_object, grid, boundary, k_b, boundary_strength, xp)
    # k0c² midway through the range of Re k²; ε covers the farthest point (paper, sec. 2.2)
    center = 0.5 * (k2.real.min() + k2.real.max())
    k2_center, bound = backend.asnumpy(xp.stack([center, abs(k2 - center).max()])).tolist()  # one copy
    if epsilon is None:
        # 5 % above the bound keeps γ = iV/ε away from 0 where |k² - k0²| peaks (in the layer), which
        # would freeze the field there into a reflecting wall.
        epsilon = EPSILON_MARGIN * max(bound, 1e-3 * k_b**2)
    elif not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) or epsilon <= bound:
        raise ValueError(
            f"epsilon = {epsilon!r} is not above max|k(r)² - k0²| = {bound:.6g} rad²/µm²: the series cannot be "
            "guaranteed to converge (Osnabrugge et al. 2016, eq. 12); leave epsilon=None"
        )
    epsilon = float(epsilon)

    padded_grid = grids.Grid(k2.shape, grid.sampling)
    p2 = (2 * math.pi) ** 2 * grids.frequency_squared(padded_grid, xp=xp)
    green = 1.0 / (p2 - k2_center - 1j * epsilon)
    potential = k2 - k2_center - 1j * epsilon
    gamma = (1j / epsilon) * potential

    incident = scattering.plane_wave(grid, wavelength=wavelength, n_background=n_b, tilt=tilt, xp=xp)
    z = grids.coordinates(grid, xp=xp)[0].reshape((-1,) + (1,) * (grid.ndim - 1))
    incident = incident * xp.exp(1j * k_b * z)  # the true incident wave, carrier included
    source = xp.zeros(k2.shape, xp.complex128)
    source[roi] = (k2_object - k_b**2) * incident

    field, residual, num_iter = _iterate(source, gamma, potential, green, roi, tol, max_num_iter, check_every)
    if tol > 0 and residual > tol:
        raise RuntimeError(
            f"the convergent Born series did not reach tol={tol:g} in max_num_iter={max_num_iter} iterations "
            f"(last relative update {residual:.2e}); raise max_num_iter"
        )
    total = (incident + field[roi]) * xp.exp(-1j * k_b * z)
    return Solution(total, num_iter, residual, epsilon)


def _squared_norm(array):
    """``‖array‖²`` as a 0-d array on the array's device (element-wise sums: no BLAS, no copy)."""
    return (array.real**2 + array.imag**2).sum()


def _iterate(source, gamma, potential, green, roi, tol, max_num_iter, check_every):
    """``u <- u + γ [g0 (V u + S) - u]`` until the relative update is below ``tol``.

    The norms of the update and of the field are computed, on the device,
    only on the iterations that test convergence (every ``check_every``, and
    the last); each test copies one number to the host. With ``tol == 0``
    only the last iteration's residual is copied, after the loop.
    """
    xp = backend.get_array_module(source)
    field = xp.zeros_like(source)
    residual = None
    num_iter = 0
    bar = progress.progress(total=max_num_iter, desc="convergent Born series", leave=False)
    for num_iter in range(1, max_num_iter + 1):
        update = gamma * (backend.ifftn(backend.fftn(potential * field + source) * green) - field)
        field += update
        bar.update()
        last = num_iter == max_num_iter
        if last or (tol > 0 and num_iter % check_every == 0):
            norm2 = _squared_norm(field[roi])
            # a zero field has converged: its update is zero too
            residual = xp.sqrt(_squared_norm(update[roi]) / xp.where(norm2 > 0, norm2, 1.0))
            if tol > 0 and not last:
                if float(residual) <= tol:  # the one copy to the host of a test
                    break
    bar.close()
    return field, float(residual), num_iter
