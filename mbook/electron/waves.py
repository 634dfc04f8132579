"""Electron waves and the objective lens: aberrations, envelopes, lens transfer, probes.

Aberrations use Krivanek's notation (lengths in Å, angles in rad):

``χ(α, φ) = (2π/λ) Σ C_nm α^(n+1)/(n+1) cos(m (φ - φ_nm))``, with the
scattering angle ``α = λ|k|`` and azimuth ``φ = atan2(k_y, k_x)``
(Krivanek et al. 1999; Kirkland 2010, eq. 10.9 for the round terms).
``defocus = -C10`` (positive defocus is underfocus, Kirkland's convention)
and ``Cs = C30``. Reciprocal arrays are in FFT order (:mod:`mbook.core.grids`).

Public functions move their array inputs to the selected device and return
their arrays there; the functions of a grid (transfer functions, probes) make
them there, or with the array module ``xp`` when one is given. The kernels
(:func:`frequency_axes`, :func:`aberration_phase_kernel`,
:func:`envelopes_kernel`) check nothing: they serve this module and the
phase-contrast image of :mod:`mbook.electron.hrtem` (CTF, images, CTF zeros).

Examples
--------
>>> from mbook.core import grids
>>> from mbook.electron import waves
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> psi = waves.probe(grid, energy=200e3, semiangle_cutoff=20.0, defocus=50.0)
>>> round(float((abs(psi) ** 2).sum()), 6)
1.0
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, fft_plans, grids
from mbook.electron import physics

#: Aberration coefficients accepted, with the azimuth that goes with each non-round one.
ABERRATIONS = {
    "C10": None, "C12": "phi12",
    "C21": "phi21", "C23": "phi23",
    "C30": None, "C32": "phi32", "C34": "phi34",
    "C41": "phi41", "C43": "phi43", "C45": "phi45",
    "C50": None,
}
_ANGLES = {angle for angle in ABERRATIONS.values() if angle}


def check_aberrations(aberrations=None, *, defocus=0.0, Cs=0.0) -> dict:
    """Merge ``defocus``/``Cs`` into a validated dict of Krivanek coefficients.

    Parameters
    ----------
    aberrations : dict, optional
        ``{"C12": 20.0, "phi12": 0.3, ...}`` [Å and rad].
    defocus : float
        Defocus [Å], positive is underfocus; same as ``C10 = -defocus``.
    Cs : float
        Spherical aberration [Å]; same as ``C30``.

    Returns
    -------
    dict
        Coefficients by name, zeros left out.

    Raises
    ------
    ValueError
        Unknown names, non-finite values, or ``defocus``/``Cs`` given together
        with ``C10``/``C30``.
    """
    if aberrations is not None and not isinstance(aberrations, dict):
        raise TypeError(f"aberrations must be a dict {{name: value}} (e.g. {{'C12': 20.0}}), got {aberrations!r:.60}")
    merged = dict(aberrations or {})
    for name, value in merged.items():
        if name not in ABERRATIONS and name not in _ANGLES:
            raise ValueError(f"unknown aberration {name!r} in aberrations; valid names are "
                             f"{sorted(ABERRATIONS) + sorted(_ANGLES)}")
        checks.check_number(value, f"aberrations[{name!r}]", units="Å or rad")
    defocus = checks.check_number(defocus, "defocus", units="Å")
    Cs = checks.check_number(Cs, "Cs", units="Å")
    for alias, name, value in (("defocus", "C10", -defocus), ("Cs", "C30", Cs)):
        if value != 0:
            if name in merged:
                raise ValueError(f"give either {alias} or {name} in aberrations, not both")
            merged[name] = float(value)
    return {k: float(v) for k, v in merged.items() if v != 0}


def _frequency_pair(kx, ky):
    """Public inputs ``kx, ky`` on the selected device, as float64, and their array module."""
    kx = checks.check_array(kx, "kx", real=True).astype(np.float64)
    ky = checks.check_array(ky, "ky", real=True).astype(np.float64)
    try:
        np.broadcast_shapes(kx.shape, ky.shape)
    except ValueError:
        raise ValueError(f"kx and ky must broadcast together, got shapes {kx.shape} and ky {ky.shape}") from None
    return kx, ky, backend.get_array_module(kx)


def _polar(kx, ky, wavelength, xp):
    alpha = wavelength * xp.sqrt(kx**2 + ky**2)
    phi = xp.arctan2(ky, kx)
    return alpha, phi


def _chi(alpha, phi, wavelength, coefficients, xp):
    chi = xp.zeros_like(alpha * phi)  # broadcast shape
    for name, value in coefficients.items():
        if name in _ANGLES:
            continue
        n, m = int(name[1]), int(name[2])
        term = value * alpha ** (n + 1) / (n + 1)
        if m:
            term = term * xp.cos(m * (phi - coefficients.get(ABERRATIONS[name], 0.0)))
        chi = chi + term
    return 2 * math.pi / wavelength * chi


def aberration_phase(kx, ky, *, energy, defocus=0.0, Cs=0.0, aberrations=None):
    """Phase error χ(k) of the objective lens [rad].

    Parameters
    ----------
    kx, ky : array_like
        Spatial frequencies [1/Å], broadcastable (e.g. ``kx[:, None], ky[None, :]``).
    energy : float
        Electron energy [eV].
    defocus : float
        Defocus [Å], positive is underfocus.
    Cs : float
        Spherical aberration C30 [Å] (1 mm = 1e7 Å).
    aberrations : dict, optional
        Further Krivanek coefficients [Å] and azimuths [rad], see :data:`ABERRATIONS`.

    Returns
    -------
    ndarray, float64
        χ, broadcast shape of ``kx`` and ``ky``, on the selected device [rad].
    """
    kx, ky, xp = _frequency_pair(kx, ky)
    return aberration_phase_kernel(kx, ky, physics.wavelength(energy),
                                   check_aberrations(aberrations, defocus=defocus, Cs=Cs), xp)


def aberration_phase_kernel(kx, ky, wavelength, coefficients, xp):
    """χ(k) [rad] of :func:`aberration_phase` from checked inputs (a kernel: no checks).

    ``kx, ky`` [1/Å] broadcastable arrays of the module ``xp``, ``wavelength``
    [Å], ``coefficients`` a dict of :func:`check_aberrations`.
    """
    alpha, phi = _polar(kx, ky, wavelength, xp)
    return _chi(alpha, phi, wavelength, coefficients, xp)


def aperture(kx, ky, *, energy, semiangle_cutoff):
    """Hard objective or condenser aperture: 1 inside ``semiangle_cutoff``, 0 outside.

    Parameters
    ----------
    kx, ky : array_like
        Spatial frequencies [1/Å], broadcastable.
    energy : float
        [eV].
    semiangle_cutoff : float
        Aperture semi-angle [mrad].

    Returns
    -------
    ndarray, float64
        On the selected device.
    """
    semiangle = checks.check_positive(semiangle_cutoff, "semiangle_cutoff", 1)[0]
    kx, ky, xp = _frequency_pair(kx, ky)
    return _aperture(kx, ky, physics.wavelength(energy), semiangle, xp)


def _aperture(kx, ky, wavelength, semiangle, xp):
    alpha = wavelength * xp.sqrt(kx**2 + ky**2)
    return (alpha <= semiangle * 1e-3).astype(xp.float64)


def temporal_envelope(kx, ky, *, energy, focal_spread):
    """Partial temporal coherence: ``E_t = exp(-(π λ Δ)^2 |k|^4 / 2)``.

    ``focal_spread`` Δ is the rms spread of defocus from the energy spread
    and lens current instabilities [Å] (Kirkland 2010, eq. 3.41). ``kx, ky``
    [1/Å] are broadcastable; the envelope comes back on the selected device.
    """
    focal_spread = checks.check_positive_number(focal_spread, "focal_spread", allow_zero=True)
    kx, ky, xp = _frequency_pair(kx, ky)
    return _temporal_envelope(kx, ky, physics.wavelength(energy), focal_spread, xp)


def _temporal_envelope(kx, ky, wavelength, focal_spread, xp):
    k2 = kx**2 + ky**2
    return xp.exp(-0.5 * (math.pi * wavelength * focal_spread) ** 2 * k2**2)


def _chi_gradient_squared(alpha, phi, wavelength, coefficients, xp):
    """|∇_k χ|^2 from the analytic derivatives of each Krivanek term."""
    d_alpha = xp.zeros_like(alpha * phi)
    d_phi = xp.zeros_like(alpha * phi)  # (1/α) ∂χ/∂φ
    for name, value in coefficients.items():
        if name in _ANGLES:
            continue
        n, m = int(name[1]), int(name[2])
        angle = m * (phi - coefficients.get(ABERRATIONS[name], 0.0)) if m else 0.0 * phi
        d_alpha = d_alpha + value * alpha**n * xp.cos(angle)
        d_phi = d_phi - value * alpha**n * m / (n + 1) * xp.sin(angle)
    return (2 * math.pi) ** 2 * (d_alpha**2 + d_phi**2)  # dα/dk = λ cancels the 1/λ of χ


def spatial_envelope(kx, ky, *, energy, angular_spread, defocus=0.0, Cs=0.0, aberrations=None):
    """Partial spatial coherence from a finite illumination angle.

    ``E_s = exp(-(α_s / (2λ))^2 |∇_k χ|^2)`` with ``α_s`` the angular spread
    of the illumination [mrad]; for round aberrations this is Kirkland (2010),
    eq. 3.44, ``exp(-(π α_s/λ)^2 (Cs λ^3 k^3 - Δf λ k)^2)``. ``kx, ky``
    [1/Å] are broadcastable; the envelope comes back on the selected device.
    """
    angular_spread = checks.check_positive_number(angular_spread, "angular_spread", allow_zero=True)
    kx, ky, xp = _frequency_pair(kx, ky)
    return _spatial_envelope(kx, ky, physics.wavelength(energy), angular_spread,
                             check_aberrations(aberrations, defocus=defocus, Cs=Cs), xp)


def _spatial_envelope(kx, ky, wavelength, angular_spread, coefficients, xp):
    alpha, phi = _polar(kx, ky, wavelength, xp)
    gradient2 = _chi_gradient_squared(alpha, phi, wavelength, coefficients, xp)
    spread = angular_spread * 1e-3
    return xp.exp(-((spread / (2 * wavelength)) ** 2) * gradient2)


def frequency_axes(grid, xp):
    """``kx`` as ``(nx, 1)`` and ``ky`` as ``(1, ny)`` [1/Å] of a 2D grid, in FFT order, made with ``xp``
    (a kernel: no checks).

    Broadcast together they give the grid's frequencies: what the transfer
    functions of this module and :mod:`mbook.electron.hrtem` are evaluated on.
    """
    kx, ky = grids.spatial_frequencies(grid, xp=xp)
    return kx[:, None], ky[None, :]


def envelopes_kernel(kx, ky, wavelength, coefficients, semiangle_cutoff, focal_spread, angular_spread, xp):
    """Aperture times temporal and spatial envelopes (1 where absent), broadcast to the grid (a kernel).

    Inputs as checked by :func:`lens_transfer` (``kx, ky`` [1/Å] of
    :func:`frequency_axes`, ``wavelength`` [Å], ``coefficients`` of
    :func:`check_aberrations`, ``focal_spread`` [Å] and ``angular_spread``
    [mrad] >= 0); only ``semiangle_cutoff`` [mrad] (None: no aperture) is
    checked here.
    """
    envelope = 1.0
    if semiangle_cutoff is not None:
        semiangle = checks.check_positive(semiangle_cutoff, "semiangle_cutoff", 1)[0]
        envelope = envelope * _aperture(kx, ky, wavelength, semiangle, xp)
    if focal_spread:
        envelope = envelope * _temporal_envelope(kx, ky, wavelength, focal_spread, xp)
    if angular_spread:
        envelope = envelope * _spatial_envelope(kx, ky, wavelength, angular_spread, coefficients, xp)
    return envelope


def lens_transfer(grid, *, energy, semiangle_cutoff=None, defocus=0.0, Cs=0.0, aberrations=None,
                  focal_spread=0.0, angular_spread=0.0, xp=None):
    """Coherent wave transfer function of a lens, ``A(k) E(k) exp(-i χ(k))``, in FFT order.

    Multiply the Fourier transform of an exit wave by it to form the image
    wave. The envelopes are the quasi-coherent approximation (Kirkland 2010,
    sec. 3.3.2); omit them for a fully coherent lens.

    Returns
    -------
    (nx, ny) ndarray, complex128
        On the selected device (or ``xp``'s).
    """
    focal_spread = checks.check_positive_number(focal_spread, "focal_spread", allow_zero=True)
    angular_spread = checks.check_positive_number(angular_spread, "angular_spread", allow_zero=True)
    wavelength = physics.wavelength(energy)
    coefficients = check_aberrations(aberrations, defocus=defocus, Cs=Cs)
    xp = xp or backend.xp
    kx, ky = frequency_axes(grid, xp)
    transfer = xp.exp(-1j * aberration_phase_kernel(kx, ky, wavelength, coefficients, xp))
    return transfer * envelopes_kernel(kx, ky, wavelength, coefficients, semiangle_cutoff, focal_spread,
                                       angular_spread, xp)


def plane_wave(gpts, *, xp=None):
    """A unit-amplitude plane wave at normal incidence, ``(nx, ny)`` complex64, on the selected device."""
    xp = xp or backend.xp
    return xp.ones(checks.check_gpts(gpts, 2), dtype=xp.complex64)


def probe(grid, *, energy, semiangle_cutoff, defocus=0.0, Cs=0.0, aberrations=None, positions=None,
          xp=None):
    """Convergent-beam (STEM) probe(s), normalised to ``sum |ψ|^2 = 1``.

    ``ψ(r) = F^-1[A(k) exp(-i χ(k)) exp(-2πi k·r0)]``: the probe-forming
    aperture with aberrations, centred at ``r0``.

    Parameters
    ----------
    grid : Grid
        2D grid [Å]; its Nyquist angle must exceed the aperture.
    energy : float
        [eV].
    semiangle_cutoff : float
        Probe-forming aperture semi-angle [mrad].
    defocus, Cs, aberrations
        See :func:`aberration_phase` [Å].
    positions : (n, 2) array_like, optional
        Probe centres [Å]; default one probe at the grid's centre (index n//2).
    xp : module, optional
        Array module to make it with; default the selected device's.

    Returns
    -------
    (nx, ny) or (n, nx, ny) ndarray, complex64
        On the selected device (or ``xp``'s).

    Raises
    ------
    ValueError
        When the grid cannot hold the aperture (``semiangle_cutoff`` above the
        largest angle the sampling reaches, ``λ / (2 max(sampling))``).
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    spectrum = probe_spectrum(grid, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus, Cs=Cs,
                              aberrations=aberrations, xp=xp)
    single = positions is None
    positions = [[e / 2 for e in grid.extent]] if single else positions
    positions = checks.check_array(positions, "positions", ndim=2, real=True)  # finite: one copy to check
    if positions.shape[1] != 2:
        raise ValueError(f"positions must be a finite (n, 2) array of x, y [Å], got shape {positions.shape}")
    positions = positions.astype(np.float64)
    if xp is not backend.get_array_module(positions):  # made with another module than the selected one
        positions = xp.asarray(backend.asnumpy(positions))
    psi = _place_probes(spectrum, positions, grid)
    return psi[0] if single else psi


def probe_spectrum(grid, *, energy, semiangle_cutoff, defocus=0.0, Cs=0.0, aberrations=None, xp=None):
    """A probe at the origin in Fourier space, ``A(k) exp(-i χ(k)) / sqrt(N Σ A²)`` (FFT order, complex64).

    Scaled so that ``ifft2`` of it has ``sum |ψ|^2 = 1``; make it once per
    scan and place copies with :func:`place_probes`. Parameters as for
    :func:`probe`; on the selected device (or ``xp``'s).
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    semiangle_cutoff = checks.check_positive(semiangle_cutoff, "semiangle_cutoff", 1)[0]
    wavelength = physics.wavelength(energy)
    max_angle = 1e3 * wavelength / (2 * max(grid.sampling))
    if semiangle_cutoff > max_angle:
        raise ValueError(
            f"semiangle_cutoff={semiangle_cutoff:g} mrad exceeds the largest angle the sampling reaches, "
            f"{max_angle:.1f} mrad at {energy:g} eV; use sampling <= {1e3 * wavelength / (2 * semiangle_cutoff):.4f} Å"
        )
    transfer = lens_transfer(grid, energy=energy, semiangle_cutoff=semiangle_cutoff, defocus=defocus, Cs=Cs,
                             aberrations=aberrations, xp=xp)
    # Parseval: sum |ifft2(T)|^2 = sum |T|^2 / N, the same for every shift of the probe
    # (the norm stays on the device: no copy to the host).
    n = grid.gpts[0] * grid.gpts[1]
    return (transfer / xp.sqrt(xp.sum(xp.abs(transfer) ** 2) / n)).astype(xp.complex64)


def place_probes(spectrum, grid, positions, *, plan=None):
    """Probes centred at ``positions``: ``ψ_j = F^-1[S(k) exp(-2πi k·r_j)]``.

    Parameters
    ----------
    spectrum : (nx, ny) array_like, complex
        :func:`probe_spectrum` (or any wave at the origin, in Fourier space).
    grid : Grid
        Its grid [Å].
    positions : (n, 2) array_like
        Centres [Å], x then y.
    plan : mbook.core.fft_plans.FFT2Plan, optional
        In-place plan of shape ``(n, nx, ny)`` on the selected device
        (:func:`mbook.core.fft_plans.fft2_plan`): the probes are made in its
        buffer (saving a copy in a scan's inner loop).

    Returns
    -------
    (n, nx, ny) ndarray, complex64
        A new array on the selected device, or the plan's buffer.

    Notes
    -----
    Shapes are always checked; NaN and inf only when called from outside
    mbook (:func:`mbook.core.backend.called_from_outside`): a scan calls
    this once per batch, where the test would copy to the host each time,
    and :func:`mbook.electron.stem.scan` and :func:`probe` check their
    positions once.
    """
    checks.check_grid(grid)
    spectrum = checks.check_operand(spectrum, "spectrum")
    xp = backend.get_array_module(spectrum)
    if spectrum.shape != tuple(grid.gpts):
        raise ValueError(f"spectrum of shape {spectrum.shape} does not match grid gpts {grid.gpts}")
    positions = checks.check_operand(positions, "positions").astype(np.float64, copy=False)
    if plan is not None and not isinstance(plan, fft_plans.FFT2Plan):
        raise TypeError(f"plan must be an fft_plans.FFT2Plan (see fft_plans.fft2_plan), got {plan!r:.60}")
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be a finite (n, 2) array of x, y [Å], got shape {positions.shape}")
    shape = (len(positions),) + tuple(grid.gpts)
    if plan is not None and plan.shape != shape:
        raise ValueError(f"plan of shape {plan.shape} cannot hold {len(positions)} probes on gpts {grid.gpts}")
    if plan is not None and backend.get_array_module(plan.array) is not xp:
        raise ValueError("plan lives on another device than the selected one: make it with fft_plans.fft2_plan")
    return _place_probes(spectrum, positions, grid, plan)


def _place_probes(spectrum, positions, grid, plan=None):
    """:func:`place_probes` without checks: a kernel, on the device of ``spectrum`` and ``positions``."""
    xp = backend.get_array_module(spectrum)
    kx, ky = frequency_axes(grid, xp)
    # The shift exp(-2πi k·r0) is separable: two small exponentials per probe, not nx·ny.
    x0 = positions[:, 0][:, None, None]
    y0 = positions[:, 1][:, None, None]
    shift_x = xp.exp(-2j * math.pi * kx[None] * x0).astype(xp.complex64)
    shift_y = xp.exp(-2j * math.pi * ky[None] * y0).astype(xp.complex64)
    if plan is None:
        return backend.ifft2(spectrum.astype(xp.complex64) * shift_x * shift_y)
    # out given positionally: the same in NumPy and CuPy. backward() leaves out the 1/N.
    xp.multiply(shift_x, shift_y * xp.complex64(plan.scale), plan.array)
    plan.array *= spectrum
    return plan.backward()
