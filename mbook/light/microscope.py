"""The light microscope: Gaussian beams, pupils with Zernike aberrations, partial coherence.

Lengths may be in any one unit (µm for light), as long as ``wavelength`` and
``sampling`` share it; fields are indexed ``[..., x, y]`` on a
:class:`mbook.core.grids.Grid` and propagate with :mod:`mbook.core.propagation`
(same sign convention, carrier phase left out).

Microscope imaging: :func:`pupil` (NA, defocus, Zernike aberrations),
:func:`source_points` (an incoherent condenser source sampled on the
frequency lattice) and :func:`partially_coherent_image` (Abbe's sum over
source points). Samples with an index map, rather than a thin transmission,
go through :mod:`mbook.light.scattering` and :mod:`mbook.light.cbs`.

Arrays come back on the selected device (:mod:`mbook.core.backend`), whatever
the inputs' device; plain summaries (a Rayleigh range, a beam radius) are
Python floats.

Examples
--------
>>> from mbook.light import microscope
>>> round(microscope.rayleigh_range(4.0, 0.5), 2)        # π w0² / λ [µm]
100.53
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.core.propagation import angular_spectrum_propagator, check_distance, check_wavelength

#: Bytes of work per batch of source points on the CPU (see :func:`partially_coherent_image`).
CPU_BATCH_BYTES = 32 * 2**20

# Bytes per pixel of partially_coherent_image: fixed (the complex transmission, its spectrum and the pupil,
# complex128, and the float64 image), per source point of a batch (the gathered pupil, its product with the
# spectrum, the inverse FFT and its intensity), and while the pupil is built (the transmission beside the
# pupil's frequencies, angle, Zernike phase, exponential and defocus propagator: 113 bytes per pixel
# measured with tracemalloc, at the peak of the whole call with one point per batch).
_IMAGE_BYTES = (3 * 16 + 8, 4 * 16, 16 + 7 * 16)


def rayleigh_range(waist, wavelength) -> float:
    """Rayleigh range ``z_R = π w0^2 / λ`` of a Gaussian beam [length] (Siegman 1986, ch. 17)."""
    waist = checks.check_positive(waist, "waist", 1)[0]
    return math.pi * waist**2 / check_wavelength(wavelength)


def gaussian_beam_radius(distance, *, waist, wavelength, paraxial=True):
    """Second-moment (1/e² intensity) radius of a Gaussian beam at distance z.

    Paraxial: ``w(z) = w0 sqrt(1 + (z/z_R)^2)`` (Siegman 1986, eq. 17.6).

    Non-paraxial (``paraxial=False``): under the exact angular-spectrum
    propagator a plane-wave component of transverse frequency k walks off at
    slope ``λk / sqrt(1 - λ²k²)`` rather than ``λk``, which widens the far
    field: ``w(z)^2 = w0^2 + (w_par(z)^2 - w0^2) (1 + θ0^2)``, with the
    divergence ``θ0 = λ / (π w0)``. The factor ``1 + θ0^2`` is the
    leading-order term of ``<k_x^2 / (1 - λ²k²)> / <k_x^2>`` over the beam's
    angular spectrum, so the result is accurate to O(θ0^4).

    Parameters
    ----------
    distance : float or ndarray
        Distance from the waist z [length].
    waist : float
        Waist radius w0 [length].
    wavelength : float
        Wavelength in the medium [length].
    paraxial : bool
        Paraxial formula (True) or its leading non-paraxial correction (False).

    Returns
    -------
    float or ndarray
        w(z) [length]: a float for a number ``distance``, else an array of
        its shape on the selected device.
    """
    z_r = rayleigh_range(waist, wavelength)
    factor = 1.0 + (wavelength / (math.pi * waist)) ** 2 if not paraxial else 1.0
    if isinstance(distance, numbers.Real) and not isinstance(distance, bool):
        distance = check_distance(distance)
        return math.sqrt(waist**2 + factor * waist**2 * (float(distance) / z_r) ** 2)
    distance = checks.check_array(distance, "distance", real=True)
    xp = backend.get_array_module(distance)
    return xp.sqrt(waist**2 + factor * waist**2 * (distance.astype(xp.float64) / z_r) ** 2)


def gaussian_beam(grid: grids.Grid, *, waist, wavelength, distance=0.0, center=None, xp=None):
    """Complex field of a paraxial TEM00 Gaussian beam, unit amplitude at the waist centre.

    ``E = (w0/w) exp(-r^2/w^2) exp(iπ r^2/(λ R)) exp(-i atan(z/z_R))``, with
    ``R(z) = z (1 + (z_R/z)^2)`` and the Gouy phase ``atan(z/z_R)`` (Siegman
    1986, eq. 17.5). Carrier ``exp(2πi z/λ)`` left out.

    Parameters
    ----------
    grid : Grid
        Transverse 2D grid.
    waist : float
        Waist radius w0 at the 1/e² intensity level [length].
    wavelength : float
        Wavelength in the medium [length].
    distance : float
        Distance z from the waist [length].
    center : (float, float), optional
        Beam axis position [length]; default the grid centre (index n//2).
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    (nx, ny) ndarray, complex128
        On the selected device.
    """
    xp = xp or backend.xp
    wavelength = check_wavelength(wavelength)
    distance = check_distance(distance)
    z_r = rayleigh_range(waist, wavelength)
    radius = gaussian_beam_radius(distance, waist=waist, wavelength=wavelength)
    x, y = grids.coordinates(grid, xp=xp)
    if center is not None:
        center = tuple(checks.check_number(c, "center", units="length")
                       for c in checks.as_tuple(center, "center", 2))
    cx, cy = center if center is not None else (grid.gpts[0] // 2 * grid.sampling[0],
                                                grid.gpts[1] // 2 * grid.sampling[1])
    r2 = (x[:, None] - cx) ** 2 + (y[None, :] - cy) ** 2
    inverse_curvature = distance / (distance**2 + z_r**2)  # 1/R(z), finite at the waist
    phase = math.pi * r2 * inverse_curvature / wavelength - math.atan2(distance, z_r)
    return (waist / radius) * xp.exp(-r2 / radius**2 + 1j * phase)


def beam_radius(intensity, sampling, *, edge_tolerance=1e-6):
    """Second-moment (ISO 11146, "D4σ") beam radius along each axis [length].

    For a Gaussian ``I ∝ exp(-2 r^2/w^2)`` the result is exactly ``w``:
    ``w_x = 2 sqrt(<(x - <x>)^2>)``.

    Parameters
    ----------
    intensity : (nx, ny) array_like, real, >= 0
        Intensity on the grid.
    sampling : float or (float, float)
        Grid spacing [length].
    edge_tolerance : float
        Largest fraction of the power allowed in the outermost 5 % of the grid
        on each side; moments of a beam that wraps around the periodic cell
        are meaningless.

    Returns
    -------
    (float, float)
        ``(w_x, w_y)`` [length].

    Raises
    ------
    ValueError
        Negative or non-finite intensity, zero power, or a beam that reaches
        the edge of the grid.
    """
    intensity = checks.check_array(intensity, "intensity", ndim=2, real=True, finite=False)
    edge_tolerance = checks.check_positive_number(edge_tolerance, "edge_tolerance", allow_zero=True)
    xp = backend.get_array_module(intensity)
    intensity = intensity.astype(xp.float64)
    grid = grids.make_grid(gpts=intensity.shape, sampling=sampling)
    border = xp.zeros(intensity.shape, dtype=bool)
    for axis, n in enumerate(intensity.shape):
        m = max(1, n // 20)
        index = [slice(None)] * 2
        for part in (slice(0, m), slice(n - m, n)):
            index[axis] = part
            border[tuple(index)] = True
    total = intensity.sum()
    sums = [xp.all(xp.isfinite(intensity)), intensity.min(), total, xp.sum(intensity * border)]
    for axis, x in enumerate(grids.coordinates(grid, centered=True, xp=xp)):
        profile = intensity.sum(axis=1 - axis)
        mean = xp.sum(profile * x) / xp.where(total > 0, total, 1.0)  # on the device: no copy between passes
        sums.append(xp.sum(profile * (x - mean) ** 2))
    # one copy to the host for every number the checks and the radii need
    finite, low, total, edge, *second = backend.asnumpy(xp.stack(sums).astype(xp.float64)).tolist()
    if not finite or low < 0:
        raise ValueError("intensity must be a finite, non-negative (nx, ny) array")
    if total <= 0:
        raise ValueError("intensity has zero total power; no radius is defined")
    if edge > edge_tolerance * total:
        raise ValueError(
            f"{edge / total:.2e} of the power lies in the outer 5 % of the grid "
            f"(edge_tolerance={edge_tolerance}); enlarge the extent so the beam does not wrap around"
        )
    return tuple(2.0 * math.sqrt(moment / total) for moment in second)


# ---------------------------------------------------------------------------- microscope imaging

def zernike(n: int, m: int, rho, phi):
    """Zernike polynomial ``Z_n^m(ρ, φ)``, 1 at the pupil edge, 0 outside (Born & Wolf 1999, ch. 9).

    ``R_n^|m|(ρ) cos(mφ)`` for ``m >= 0`` and ``R_n^|m|(ρ) sin(|m|φ)`` for
    ``m < 0``, with the radial polynomial
    ``R_n^m(ρ) = Σ_s (-1)^s (n-s)! / (s! ((n+m)/2-s)! ((n-m)/2-s)!) ρ^(n-2s)``.
    Defocus is ``(2, 0)``, astigmatism ``(2, ±2)``, coma ``(3, ±1)``,
    spherical aberration ``(4, 0)``.

    Parameters
    ----------
    n, m : int
        Radial and azimuthal indices, ``n >= |m|``, ``n - m`` even.
    rho : array_like
        Radius in the pupil, 1 at its edge [dimensionless].
    phi : array_like
        Azimuth [rad], broadcastable with ``rho``.

    Returns
    -------
    ndarray, float64
        On the selected device.

    Examples
    --------
    >>> from mbook.light import microscope
    >>> float(microscope.zernike(2, 0, 1.0, 0.0)), float(microscope.zernike(2, 0, 0.0, 0.0))
    (1.0, -1.0)
    """
    integers = all(isinstance(i, int) and not isinstance(i, bool) for i in (n, m))  # True is not an order
    if not (integers and n >= 0 and abs(m) <= n and (n - m) % 2 == 0):
        raise ValueError(f"Zernike indices need integers n >= |m| with n - m even, got (n, m) = ({n!r}, {m!r})")
    rho, phi = checks.check_array(rho, "rho", real=True), checks.check_array(phi, "phi", real=True)
    try:
        np.broadcast_shapes(rho.shape, phi.shape)
    except ValueError:
        raise ValueError(f"rho and phi must broadcast together, got shapes {rho.shape} and phi {phi.shape}") from None
    return _zernike(n, m, rho, phi)


def _zernike(n, m, rho, phi):
    """The kernel of :func:`zernike`, on the device of ``rho``."""
    xp = backend.get_array_module(rho, phi)
    radial = 0.0
    for s in range((n - abs(m)) // 2 + 1):
        coefficient = (-1) ** s * math.factorial(n - s) / (
            math.factorial(s) * math.factorial((n + abs(m)) // 2 - s) * math.factorial((n - abs(m)) // 2 - s))
        radial = radial + coefficient * rho ** (n - 2 * s)
    angular = xp.cos(m * phi) if m >= 0 else xp.sin(-m * phi)
    return xp.where(rho <= 1, radial * angular, 0.0)


def _check_zernike_waves(zernike_waves):
    """``{(n, m): coefficient [waves]}`` with Zernike indices and finite coefficients, else ValueError."""
    if zernike_waves is None:
        return {}
    if not isinstance(zernike_waves, dict):
        raise TypeError(f"zernike_waves must be a dict {{(n, m): waves}}, got {zernike_waves!r:.60}")
    out = {}
    for key, coefficient in zernike_waves.items():
        n, m = key if isinstance(key, tuple) and len(key) == 2 else (None, None)
        integers = all(isinstance(i, int) and not isinstance(i, bool) for i in (n, m))  # True is not an order
        if not (integers and n >= 0 and abs(m) <= n and (n - m) % 2 == 0):
            raise ValueError(f"zernike_waves keys must be Zernike indices (n, m), n >= |m|, n - m even, "
                             f"got {key!r}")
        out[(n, m)] = checks.check_number(coefficient, f"zernike_waves[{key!r}]", units="waves")
    return out


def pupil(grid: grids.Grid, *, wavelength, na, defocus=0.0, zernike_waves=None, n_medium=1.0, xp=None):
    """Coherent transfer function of an objective: aperture, defocus and aberrations.

    ``P(k) = circ(λ0 |k| <= NA) · exp(2πi Σ c_nm Z_n^m(λ0|k|/NA, φ)) · H_z(k)``,
    where ``c_nm`` are Zernike coefficients in waves and ``H_z`` is the
    angular-spectrum propagator over ``defocus`` in the medium (exact at any NA).

    Parameters
    ----------
    grid : Grid
        Transverse 2D grid of the image field.
    wavelength : float
        Vacuum wavelength λ0 [µm].
    na : float
        Numerical aperture ``n sin θ``.
    defocus : float
        Distance from the focal plane to the sample plane [µm]; the field is
        propagated by this distance before the lens.
    zernike_waves : dict, optional
        ``{(n, m): coefficient}``, wavefront error in waves at the pupil edge.
    n_medium : float
        Index of the immersion medium (for the defocus term).
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    (nx, ny) ndarray, complex128, FFT order
        On the selected device.
    """
    checks.check_grid(grid)
    zernike_waves = _check_zernike_waves(zernike_waves)
    xp = xp or backend.xp
    wavelength = check_wavelength(wavelength)
    na = checks.check_positive_number(na, "na")
    defocus = checks.check_number(defocus, "defocus", units="length")
    n_medium = checks.check_number(n_medium, "n_medium", lower=1.0)
    if na > n_medium:
        raise ValueError(f"na = {na} cannot exceed the index of the medium n_medium = {n_medium}")
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    k = xp.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    rho = wavelength * k / na
    phase = xp.zeros(grid.gpts)
    for (n, m), coefficient in zernike_waves.items():
        phase = phase + coefficient * _zernike(n, m, rho, xp.arctan2(ky[None, :], kx[:, None]))
    result = xp.where(rho <= 1, xp.exp(2j * math.pi * phase), 0.0)
    if defocus:
        result = result * angular_spectrum_propagator(grid, defocus, wavelength / n_medium, xp=xp)
    return result


def source_points(grid: grids.Grid, *, wavelength, na_illumination, max_points=None):
    """Plane-wave directions that sample an incoherent disc source (Köhler illumination).

    A source filling the condenser aperture ``na_illumination`` lights the
    sample with plane waves of transverse frequency ``|q| <= NA_ill / λ0``,
    mutually incoherent. On a periodic cell of size ``L`` only frequencies on
    the lattice ``q = (i, j) / L`` are periodic, and two directions closer
    than ``1/L`` give images that differ by less than the cell can show; so
    the source is sampled by every lattice point inside the disc:
    about ``π (NA_ill L / λ0)²`` points, set by the source's angular size.
    With ``max_points``, a coarser sub-lattice (step ``s`` pixels) keeps the
    count below it.

    Parameters
    ----------
    grid : Grid
        Transverse 2D grid.
    wavelength : float
        Vacuum wavelength [µm].
    na_illumination : float
        Condenser (source) numerical aperture; 0 is coherent illumination.
    max_points : int, optional
        Upper bound on the number of points.

    Returns
    -------
    (n_points, 2) ndarray, int64
        Lattice offsets ``(i, j)``: ``q = (i / extent_x, j / extent_y)``, on
        the selected device. (The disc is found on the host: a few thousand
        integers at most.)
    """
    checks.check_grid(grid)
    wavelength = check_wavelength(wavelength)
    na_illumination = checks.check_positive_number(na_illumination, "na_illumination", allow_zero=True)
    if max_points is not None:
        max_points = checks.check_count(max_points, "max_points")
    return backend.asarray(_source_points(grid, wavelength, na_illumination, max_points))


def _source_points(grid, wavelength, na_illumination, max_points):
    """The lattice points of :func:`source_points`, on the host."""
    radius = [na_illumination / wavelength * e for e in grid.extent]  # in lattice steps
    nyquist = [n // 2 for n in grid.gpts]
    if any(r > q for r, q in zip(radius, nyquist)):
        raise ValueError(f"na_illumination = {na_illumination} reaches beyond the grid's bandwidth; "
                         f"the largest is {min(q / e for q, e in zip(nyquist, grid.extent)) * wavelength:.3g}")
    step = 1
    while True:
        i = np.arange(-math.floor(radius[0] / step), math.floor(radius[0] / step) + 1) * step
        j = np.arange(-math.floor(radius[1] / step), math.floor(radius[1] / step) + 1) * step
        ii, jj = np.meshgrid(i, j, indexing="ij")
        inside = (ii / max(radius[0], 1e-12)) ** 2 + (jj / max(radius[1], 1e-12)) ** 2 <= 1 + 1e-12
        inside |= (ii == 0) & (jj == 0)
        if max_points is None or inside.sum() <= max_points:
            return np.stack([ii[inside], jj[inside]], axis=1).astype(np.int64)
        step += 1


def partially_coherent_image(transmission, *, wavelength, sampling, na, na_illumination, defocus=0.0,
                             zernike_waves=None, max_points=None):
    """Bright-field image of a thin sample under an incoherent disc source (Abbe's method).

    ``I(r) = (1/N) Σ_q |F^-1[P(k) T(k - q)]|²`` over the source points
    ``q`` of :func:`source_points` (Abbe's method; Born & Wolf 1999, ch. 10):
    each point of the source is one coherent image, and intensities add.

    Parameters
    ----------
    transmission : (nx, ny) array_like, complex
        Sample transmission ``t(r)`` (1 where the sample is empty).
    wavelength : float
        Vacuum wavelength [µm].
    sampling : float or (float, float)
        Pixel size [µm].
    na : float
        Objective numerical aperture.
    na_illumination : float
        Condenser numerical aperture (0: coherent).
    defocus, zernike_waves
        As :func:`pupil`.
    max_points : int, optional
        Cap on the number of source points (see :func:`source_points`).

    Returns
    -------
    (nx, ny) ndarray, float64
        Intensity, 1 for an empty sample at any source size, on the
        selected device.

    Raises
    ------
    MemoryError
        When the work on one source point exceeds the memory budget
        (``MBOOK_MEMORY_GB``), estimated from the shape on entry, before the
        pupil or the spectrum is built; the message gives both numbers.

    Notes
    -----
    Illumination ``e^{2πi q·r}`` shifts the spectrum, and
    ``F^-1[P(k) T(k - q)] = e^{2πi q·r} F^-1[P(k + q) T(k)]``: the phase ramp
    does not change the intensity, so each source point costs one inverse FFT
    of ``P(k + q) T(k)``, the pupil shifted by ``q`` on the periodic lattice.
    The shifted pupils of a batch of source points are gathered at once (one
    index array per batch, no loop over points), with the batch sized by
    :func:`mbook.core.progress.plan_batches`.
    """
    transmission = checks.check_field(transmission, "transmission")
    if transmission.ndim != 2:
        raise ValueError(f"transmission must be 2D (nx, ny), got shape {transmission.shape}")
    xp = backend.get_array_module(transmission)
    grid = grids.make_grid(gpts=transmission.shape, sampling=sampling)
    # the memory, from the shape, before the pupil and the spectrum are built
    fixed, per_point, pupil_work = (bytes_per_pixel * transmission.size for bytes_per_pixel in _IMAGE_BYTES)
    try:
        progress.plan_batches(n_items=1, bytes_per_item=max(pupil_work, per_point + fixed))
    except MemoryError as error:
        raise MemoryError(f"transmission of shape {transmission.shape}: the image {error}") from None
    _check_zernike_waves(zernike_waves)
    wavelength = check_wavelength(wavelength)
    na_illumination = checks.check_positive_number(na_illumination, "na_illumination", allow_zero=True)
    na = checks.check_positive_number(na, "na")
    defocus = checks.check_number(defocus, "defocus", units="length")
    if max_points is not None:
        max_points = checks.check_count(max_points, "max_points")
    points = xp.asarray(_source_points(grid, wavelength, na_illumination, max_points))
    transfer = pupil(grid, wavelength=wavelength, na=na, defocus=defocus, zernike_waves=zernike_waves, xp=xp)
    spectrum = backend.fft2(transmission.astype(xp.complex128))
    nx, ny = grid.gpts
    # On the CPU, batches of ~32 MiB keep the gather and the FFTs in cache (2x faster than one huge batch);
    # a GPU takes the whole memory budget.
    budget = progress.memory_budget()
    if not backend.gpu_code_path():
        budget = min(budget, max(CPU_BATCH_BYTES, fixed + per_point))
    batch = progress.plan_batches(n_items=len(points), bytes_per_item=per_point, fixed_bytes=fixed, budget=budget)
    rows, columns = xp.arange(nx), xp.arange(ny)
    image = xp.zeros(grid.gpts)
    for start in progress.progress(range(0, len(points), batch), desc="source points"):
        chunk = points[start:start + batch]
        # P(k + q) on the periodic lattice, for every q of the batch: (batch, nx, ny)
        i = (rows[None, :] + chunk[:, 0:1]) % nx
        j = (columns[None, :] + chunk[:, 1:2]) % ny
        field = backend.ifft2(transfer[i[:, :, None], j[:, None, :]] * spectrum)
        image += (field.real**2 + field.imag**2).sum(axis=0)
    return image / len(points)
