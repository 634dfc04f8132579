"""Analytic scattering by a circular cylinder: the 2D Mie (Bessel/Hankel) series.

A dielectric cylinder of radius ``a`` and index ``n_cylinder`` in a medium of
index ``n_background``, lit by a plane wave with its electric field along the
cylinder axis (TM, or *E* polarisation), is a scalar 2D problem: the axial field
``u`` obeys ``(∇² + k0² n(r)²) u = 0`` exactly, the equation solved by the
numerical methods of :mod:`mbook.light.scattering`. With ``k_b = k0 n_b`` and the
relative index ``m = n_cylinder / n_background`` (Bohren & Huffman 1983, sec. 8.4):

- incident ``u_i = exp(i k_b r cos φ) = Σ i^l J_l(k_b r) e^{ilφ}`` (Jacobi–Anger);
- scattered ``u_s = Σ i^l b_l H_l^(1)(k_b r) e^{ilφ}`` outside;
- inside ``u = Σ i^l c_l J_l(m k_b r) e^{ilφ}``;

and continuity of ``u`` and ``∂u/∂r`` at ``r = a`` gives, with ``x = k_b a``,

``b_l = [m J_l'(mx) J_l(x) - J_l'(x) J_l(mx)] / [H_l'(x) J_l(mx) - m J_l'(mx) H_l(x)]``,
``c_l = [J_l(x) + b_l H_l(x)] / J_l(mx)``.

``H^(1)`` is the outgoing wave for the time dependence ``exp(-iωt)`` of
:mod:`mbook.light.microscope`. The series is cut at ``l_max = |m| x + 4 (|m| x)^(1/3) + 2``
terms (Wiscombe 1980), past which the coefficients fall faster than
exponentially.

Grids follow :mod:`mbook.light.scattering`: axis 0 is the optical axis z, axis 1 is x;
fields are returned with the carrier ``exp(2πi n_b z / λ0)`` left out, so an
empty grid gives 1 everywhere.

Devices. The coefficients ``b_l``, ``c_l`` are a few dozen numbers computed on
the host with :mod:`scipy.special` (Bessel and Hankel functions of complex
argument, which CuPy lacks): the one host step, on small 1D arrays. Every
field on a grid is evaluated on the selected device: outside the cylinder
from ``J_0, J_1, Y_0, Y_1`` (which :mod:`cupyx.scipy.special` has) and the
upward recurrence of ``H_l``, inside from Bessel's integral as a sum of plane
waves (see :func:`cylinder_field`). The 3D sphere (:func:`sphere_field`) is
evaluated on the host (spherical Bessel functions and Legendre polynomials
have no device implementation) and returned on the device. Arrays come back
on the selected device.

Examples
--------
>>> from mbook.core import backend
>>> from mbook.light import mie
>>> u = mie.cylinder_field((64, 64), sampling=0.05, wavelength=0.5, radius=0.5,
...                        n_cylinder=1.0, n_background=1.0)
>>> bool(abs(backend.asnumpy(u) - 1).max() < 1e-5)          # the series is cut at l_max
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import special

from mbook.core import backend, checks, grids, progress


def _check_real(value, name, *, positive=True):
    return checks.check_number(value, name, lower=0 if positive else None, lower_inclusive=False)


def check_index_value(n, name="n_cylinder"):
    """Validate one refractive index: finite, real part > 0, no gain (imaginary part >= 0)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Number) or not np.isfinite(n):
        raise ValueError(f"{name} must be a finite (complex) number, got {n!r}")
    n = complex(n)
    if n.real <= 0:
        raise ValueError(f"{name} must have a real part > 0, got {n!r}")
    if n.imag < 0:
        raise ValueError(
            f"{name} = {n!r} has a negative imaginary part, i.e. gain; with the exp(-iωt) convention an "
            "absorbing medium has Im n >= 0"
        )
    return n


def coefficients(size_parameter: float, relative_index: complex, *, l_max: int | None = None):
    """Mie coefficients ``b_l`` (scattered) and ``c_l`` (inside) for ``l = 0..l_max``.

    Computed on the host with :mod:`scipy.special` (a few dozen Bessel and
    Hankel functions of complex argument, which CuPy lacks), returned on the
    selected device.

    Parameters
    ----------
    size_parameter : float
        ``x = k_b a = 2π n_b a / λ0`` [dimensionless].
    relative_index : complex
        ``m = n_cylinder / n_background``, ``Im m >= 0``.
    l_max : int, optional
        Last order kept; default the Wiscombe criterion above.

    Returns
    -------
    b, c : (l_max + 1,) ndarray, complex128
        The coefficients for ``l >= 0``; ``b_{-l} = b_l`` and ``c_{-l} = c_l``.
        On the selected device.
    """
    x = _check_real(size_parameter, "size_parameter")
    m = check_index_value(relative_index, "relative_index")
    if l_max is not None:
        # Past Wiscombe's order the terms are below rounding; far past it the Bessel functions underflow
        # and the coefficients turn into NaN: refuse before computing.
        most = 10 * _wiscombe(abs(m) * x) + 100
        l_max = checks.check_count(l_max, "l_max", minimum=0, maximum=most)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # underflow is reported below
        b, c = _coefficients(x, m, l_max)
    if not (np.isfinite(b).all() and np.isfinite(c).all()):
        first = int(np.flatnonzero(~(np.isfinite(b) & np.isfinite(c)))[0])
        raise ValueError(
            f"l_max={l_max} reaches orders where the Bessel functions of m x = {m * x:.4g} underflow (first at "
            f"l = {first}); keep l_max below {first} or leave it to Wiscombe's criterion "
            f"({_wiscombe(abs(m) * x)})")
    return backend.asarray(b), backend.asarray(c)


def _coefficients(x, m, l_max=None):
    """The coefficients of :func:`coefficients` as host NumPy arrays."""
    if l_max is None:
        l_max = _wiscombe(abs(m) * x)
    order = np.arange(l_max + 1)
    j_x, jp_x = special.jv(order, x), special.jvp(order, x)
    h_x, hp_x = special.hankel1(order, x), special.h1vp(order, x)
    j_mx, jp_mx = special.jv(order, m * x), special.jvp(order, m * x)
    b = (m * jp_mx * j_x - jp_x * j_mx) / (hp_x * j_mx - m * jp_mx * h_x)
    c = (j_x + b * h_x) / j_mx
    return b, c


def _wiscombe(mx):
    """Orders to keep in a Mie series of size ``|m| x`` (Wiscombe 1980)."""
    return int(math.ceil(mx + 4 * mx ** (1 / 3) + 2))


def cylinder_field(gpts, *, sampling, wavelength, radius, n_cylinder, n_background=1.0, center=None,
                   angle=0.0):
    """Total field of a plane wave scattered by a cylinder, on a (z, x) grid, carrier left out.

    Outside the cylinder the incident wave is exact and only the scattered
    series ``Σ i^l b_l H_l(k_b r) e^{ilφ}`` is summed, with ``H_0, H_1`` from
    ``J_0 + i Y_0`` and ``J_1 + i Y_1`` and the upward recurrence
    ``H_{l+1} = (2l/x) H_l - H_{l-1}``, stable for this dominant solution.
    Inside, Bessel's integral ``J_l(z) = (1/2π) ∫ exp(i(z sin τ - lτ)) dτ``
    turns the series into a superposition of plane waves of the medium,

    ``u = (1/2π) ∫ C(θ) exp(i m k_b (x' cos θ - z' sin θ)) dθ``,
    ``C(θ) = Σ_l i^l c_l e^{ilθ}``,

    evaluated by the trapezoidal rule, exact (to rounding) once it has more
    nodes than the orders of ``C`` and of ``exp(i z sin θ)`` together; it holds
    for complex ``m`` (absorption), where upward recurrence of ``J_l`` would
    not. Both run on the selected device; only the coefficients are computed
    on the host (see the module's notes).

    Parameters
    ----------
    gpts : (int, int)
        Grid points along z (axis 0, the direction of incidence) and x.
    sampling : float or (float, float)
        Grid spacing (dz, dx) [µm, or any length shared with ``wavelength``].
    wavelength : float
        Vacuum wavelength λ0 [µm].
    radius : float
        Cylinder radius a [µm].
    n_cylinder : complex
        Index of the cylinder (imaginary part >= 0: absorption).
    n_background : float
        Real index of the surrounding medium.
    center : (float, float), optional
        Cylinder axis (z, x) [µm]; default the grid centre (index n // 2).
    angle : float
        Angle of incidence from the z axis towards +x [rad].

    Returns
    -------
    (nz, nx) ndarray, complex128
        ``u(z, x) exp(-2πi n_b z / λ0)`` with ``z = j dz`` from the grid's
        corner, on the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    wavelength = _check_real(wavelength, "wavelength")
    radius = _check_real(radius, "radius")
    n_b = check_index_value(n_background, "n_background")
    if n_b.imag != 0:
        raise ValueError(f"n_background must be real, got {n_background!r}")
    n_c = check_index_value(n_cylinder)
    angle = _check_real(angle, "angle", positive=False)
    zc, xc = _center(grid, center)
    z, x = grids.coordinates(grid, xp=backend.xp)
    k_b = 2 * math.pi * n_b.real / wavelength
    field = _kernel(z[:, None] - zc, x[None, :] - xc, k_b, radius, n_c / n_b.real, angle)
    return field * backend.xp.exp(1j * k_b * (zc * math.cos(angle) + xc * math.sin(angle)) - 1j * k_b * z[:, None])


def _center(grid, center):
    """The axis (z, x[, y]) as floats: given, or the grid point n // 2 of every axis."""
    if center is None:
        return tuple(n // 2 * d for n, d in zip(grid.gpts, grid.sampling))
    values = checks.as_tuple(center, "center", grid.ndim)
    return tuple(_check_real(v, "center", positive=False) for v in values)


def cylinder_index(gpts, *, sampling, radius, n_cylinder, n_background=1.0, center=None, supersample=8):
    """Refractive-index map of a cylinder, edge pixels area-weighted in permittivity.

    A pixel cut by the boundary gets ``n = sqrt(f n_c² + (1 - f) n_b²)``, with ``f``
    the fraction of its area inside the circle (estimated on a ``supersample²``
    sub-grid). Averaging the permittivity rather than staircasing makes the
    field error of the grid first order smaller at the same sampling.

    Parameters
    ----------
    gpts : (int, int)
        Grid points along z and x.
    sampling : float or (float, float)
        Grid spacing [µm].
    radius : float
        Cylinder radius [µm].
    n_cylinder, n_background : complex, float
        Indices inside and outside.
    center : (float, float), optional
        Axis position (z, x) [µm]; default the grid centre (index n // 2).
    supersample : int
        Sub-samples per pixel and axis.

    Returns
    -------
    (nz, nx) ndarray, complex128
        On the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    radius = _check_real(radius, "radius")
    n_c, n_b = check_index_value(n_cylinder), check_index_value(n_background, "n_background")
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be an integer >= 1, got {supersample!r}")
    xp = backend.xp
    zc, xc = _center(grid, center)
    z, x = grids.coordinates(grid, xp=xp)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    dz, dx = grid.sampling
    fraction = xp.zeros(grid.gpts)
    for oz in offsets:  # sub-pixel quadrature: supersample² passes over the grid
        for ox in offsets:
            fraction += xp.hypot(z[:, None] + oz * dz - zc, x[None, :] + ox * dx - xc) < radius
    fraction /= supersample**2
    return xp.sqrt(fraction * n_c**2 + (1 - fraction) * n_b**2)


def _kernel(dz, dx, k_b, radius, m, angle):
    """Mie series about the cylinder's axis, phase referenced to the axis, on the device of ``dz``."""
    xp = backend.get_array_module(dz, dx)
    special_xp = backend.scipy_module("special", dz)
    dz, dx = xp.broadcast_arrays(dz, dx)
    r = xp.hypot(dz, dx)
    phi = xp.arctan2(dx, dz) - angle
    b, c = _coefficients(k_b * radius, m)  # host: a few dozen numbers
    inside = r < radius
    outside = ~inside
    field = xp.exp(1j * k_b * r * xp.cos(phi))
    kr, phi_out = k_b * r[outside], phi[outside]
    h_prev = special_xp.j0(kr) + 1j * special_xp.y0(kr)
    h = special_xp.j1(kr) + 1j * special_xp.y1(kr)
    scattered = complex(b[0]) * h_prev
    for order in range(1, b.size):
        scattered += complex(2 * 1j**order * b[order]) * h * xp.cos(order * phi_out)
        h_prev, h = h, (2 * order / kr) * h - h_prev
    field[outside] += scattered
    # inside: coordinates in the frame of the incident wave (z' along it), then the plane waves
    along = dz[inside] * math.cos(angle) + dx[inside] * math.sin(angle)
    across = dx[inside] * math.cos(angle) - dz[inside] * math.sin(angle)
    field[inside] = _interior(along, across, m * k_b, c, abs(m) * k_b * radius)
    return field


def _interior(along, across, wavenumber, c, reach):
    """``Σ_l i^l c_l J_l(k r) e^{ilφ}`` at points ``(z', x')`` as a trapezoidal sum of plane waves.

    ``reach`` bounds ``|k| r`` over the points: the plane-wave factor has
    significant orders up to about ``reach + 8 reach^(1/3)``.
    """
    xp = backend.get_array_module(along)
    orders = c.size - 1
    nodes = orders + int(math.ceil(reach + 8 * reach ** (1 / 3) + 16)) + 1
    theta = 2 * math.pi * np.arange(nodes) / nodes
    l = np.arange(1, orders + 1)
    # C(θ) = c_0 + 2 Σ_{l>0} c_l cos(l (θ + π/2)), since c_{-l} = c_l and i^l e^{ilθ} = e^{il(θ + π/2)}
    weights = (c[0] + 2 * np.sum(c[1:, None] * np.cos(l[:, None] * (theta[None, :] + math.pi / 2)), axis=0)) / nodes
    cos, sin, weights = (xp.asarray(a) for a in (np.cos(theta), np.sin(theta), weights))
    out = xp.empty(along.shape, xp.complex128)
    batch = progress.plan_batches(n_items=max(along.size, 1), bytes_per_item=3 * 16 * nodes)
    for start in range(0, along.size, batch):
        part = slice(start, start + batch)
        waves = xp.exp(1j * wavenumber * (across[part, None] * cos[None, :] - along[part, None] * sin[None, :]))
        out[part] = waves @ weights
    return out


def scattering_efficiency(size_parameter, relative_index):
    """Scattering efficiency ``Q_sca = (2/x) Σ_l |b_l|^2`` (sum over all l, ±l counted twice).

    The scattered power per unit length is ``Q_sca · 2a`` times the incident
    intensity (Bohren & Huffman 1983, eq. 8.36). Computed on the host (a sum
    over the coefficients); a Python float.

    Examples
    --------
    >>> from mbook.light import mie
    >>> round(mie.scattering_efficiency(1e-3, 1.0), 12)
    0.0
    """
    x = _check_real(size_parameter, "size_parameter")
    b, _ = _coefficients(x, check_index_value(relative_index, "relative_index"))
    return float((2 / x) * (abs(b[0]) ** 2 + 2 * np.sum(abs(b[1:]) ** 2)))


def sphere_field(gpts, *, sampling, wavelength, radius, n_sphere, n_background=1.0, center=None):
    """Scalar wave scattered by a sphere, on a (z, x, y) grid, carrier left out.

    The 3D scalar analogue of :func:`cylinder_field` (a sound wave on a fluid
    sphere of the same density; for light it is the scalar model the solvers
    of :mod:`mbook.light.scattering` use, not Maxwell's vector Mie solution):
    ``u = Σ_l (2l+1) i^l [j_l(k_b r) + b_l h_l(k_b r)] P_l(cos θ)`` outside and
    ``Σ_l (2l+1) i^l c_l j_l(m k_b r) P_l(cos θ)`` inside, with spherical
    Bessel and Hankel functions in the coefficients of :func:`coefficients`.

    Host-only: spherical Bessel functions of complex argument and Legendre
    polynomials have no device implementation, so the field is evaluated on
    the host with :mod:`scipy.special` and returned on the selected device
    (a reference solution for tests, on small grids).

    Parameters
    ----------
    gpts : (int, int, int)
        Grid points along z (the direction of incidence), x and y.
    sampling : float or tuple
        Grid spacing [µm].
    wavelength, radius, n_sphere, n_background, center
        As :func:`cylinder_field`, in 3D.

    Returns
    -------
    (nz, nx, ny) ndarray, complex128
        On the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=3)
    wavelength, radius = _check_real(wavelength, "wavelength"), _check_real(radius, "radius")
    n_b, n_s = check_index_value(n_background, "n_background").real, check_index_value(n_sphere, "n_sphere")
    coords = grids.coordinates(grid, xp=np)
    center = _center(grid, center)
    z, x, y = np.meshgrid(*(c - c0 for c, c0 in zip(coords, center)), indexing="ij")
    k_b, m = 2 * math.pi * n_b / wavelength, n_s / n_b
    x_size = k_b * radius
    order = np.arange(_wiscombe(abs(m) * x_size) + 1)
    j_x, jp_x = special.spherical_jn(order, x_size), special.spherical_jn(order, x_size, derivative=True)
    h_x = j_x + 1j * special.spherical_yn(order, x_size)
    hp_x = jp_x + 1j * special.spherical_yn(order, x_size, derivative=True)
    j_mx = special.spherical_jn(order, m * x_size)
    jp_mx = special.spherical_jn(order, m * x_size, derivative=True)
    b = (m * jp_mx * j_x - jp_x * j_mx) / (hp_x * j_mx - m * jp_mx * h_x)
    c = (j_x + b * h_x) / j_mx
    r = np.sqrt(z**2 + x**2 + y**2)
    cos_theta = np.where(r > 0, z / np.where(r > 0, r, 1), 1.0)
    inside = r < radius
    field = np.exp(1j * k_b * z)
    kr = k_b * r[~inside]
    for l in order:
        weight = (2 * l + 1) * 1j**l * special.eval_legendre(l, cos_theta)
        h = special.spherical_jn(l, kr) + 1j * special.spherical_yn(l, kr)
        field[~inside] += weight[~inside] * b[l] * h
    field[inside] = sum((2 * l + 1) * 1j**l * c[l] * special.spherical_jn(l, m * k_b * r[inside])
                        * special.eval_legendre(l, cos_theta[inside]) for l in order)
    return backend.asarray(field * np.exp(1j * k_b * (center[0] - coords[0][:, None, None])))


def near_mask(gpts, *, sampling, radius, margin=0.5, region="near", center=None):
    """Where to compare fields near a cylinder: a disc of radius ``1.5 a + margin``, or part of it.

    Parameters
    ----------
    gpts : (int, int)
        Grid points (z, x).
    sampling : float or (float, float)
        Grid spacing [µm].
    radius : float
        Cylinder radius a [µm].
    margin : float
        Extra radius of the disc [µm].
    region : {"near", "front", "back"}
        The whole disc, its part before the cylinder (``z < -a``: light
        scattered backwards only), or behind it (``z > a``).
    center : (float, float), optional
        Cylinder axis (default the grid centre).

    Returns
    -------
    (nz, nx) ndarray, bool
        On the selected device.
    """
    grid = grids.make_grid(gpts=gpts, sampling=sampling, ndim=2)
    region = checks.check_choice(region, "region", ("near", "front", "back"))
    radius = _check_real(radius, "radius")
    margin = _check_real(margin, "margin", positive=False)
    z, x = grids.coordinates(grid, xp=backend.xp)
    zc, xc = _center(grid, center)
    dz, dx = z[:, None] - zc, x[None, :] - xc
    disc = backend.xp.hypot(dz, dx) < 1.5 * radius + margin
    if region == "near":
        return disc
    if region == "front":
        return disc & (dz < -radius)
    return disc & (dz > radius)
