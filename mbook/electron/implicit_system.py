"""The kernels of the implicit whole-domain system: the θ-scheme operator, its adjoint, the preconditioner.

:func:`mbook.electron.implicit.solve` and :func:`mbook.electron.implicit.operators`
check their inputs once and plan the memory; these kernels do the arithmetic on
what they checked (device arrays on the potential's device), with no checks of
their own.

The system (see :mod:`mbook.electron.implicit` for its derivation) is, for
slices ``n = 0 … N-1`` with ``D_n = Π(-iπλΔz_n|k|² + iσ v_n)Π``,

``(A Ψ)_n = ψ_n - ψ_{n-1} - D_n(θ ψ_n + (1-θ) ψ_{n-1})``,

acting on the 2D Fourier coefficients of each slice's wave (the kinetic term
is diagonal there, the potential term one inverse and one forward FFT of the
volume away):

- its diagonals, made once (:func:`make_system`);
- ``Ψ ↦ AΨ`` and ``Y ↦ A*Y`` (:func:`apply`, :func:`apply_adjoint`);
- the preconditioner ``M``, the same system for the free-space wave in each
  slice's mean potential: ``M⁻¹`` and ``M⁻*`` are one sweep along z of
  elementwise products (:func:`precondition`, :func:`precondition_adjoint`);
- the right-hand side ``b`` of incident waves (:func:`right_hand_side`).

Lengths in Å, potentials in V·Å, energies in eV.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.electron import implicit_system
>>> grid = grids.make_grid(gpts=(16, 16), sampling=0.25)
>>> system = implicit_system.make_system(backend.asarray(np.zeros((4, 16, 16))), grid, 200e3, (2.0,) * 4, 0.5,
...                                      0, np.complex128, True)
>>> incident = backend.fft2(backend.asarray(np.ones((16, 16), complex)))  # a plane wave, in vacuum
>>> b = implicit_system.right_hand_side(system, incident)
>>> residual = b - implicit_system.apply(system, implicit_system.precondition(system, b))
>>> float(backend.asnumpy(abs(residual).max())) < 1e-12  # in vacuum M is A: M⁻¹b solves the system
True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mbook.core import backend, grids
from mbook.electron import multislice, physics


class System(NamedTuple):
    """The operator's diagonals, made once per solve by :func:`make_system` (all on the device of the waves).

    ``1..`` below: one axis of length 1 per batch axis of the waves.
    """

    theta: float
    aperture: object  # (nx, ny) real: Π, or ones
    kinetic: object  # (n, 1.., nx, ny) complex: Π(-iπλΔz_n|k|²), Fourier diagonal
    phase: object  # (n, 1.., nx, ny) complex: iσ v_n (band-limited), real space
    gain: object  # (n, 1.., nx, ny): g_n = 1 / (1 - θ d_n), d_n = Π(-iπλΔz_n|k|² + iσ mean v_n)
    step: object  # (n, 1.., nx, ny): g_n h_n, h_n = 1 + (1 - θ) d_n: M⁻¹'s slice-to-slice factor
    step_back: object  # (n, 1.., nx, ny): conj(g_n h_{n+1}), 0 for the last slice: M⁻*'s factor
    axes: tuple  # the axes an inner product sums over: slices and (nx, ny)


def make_system(potential, grid, energy, thicknesses, theta, batch_ndim, dtype, antialias):
    """Diagonals of ``A`` and of the preconditioner ``M`` (a kernel: follows the potential's device).

    Parameters
    ----------
    potential : (n_slices, nx, ny) ndarray, real
        Projected potential of each slice [V·Å], on the device the system is made on.
    grid : Grid
        The 2D grid [Å].
    energy : float
        [eV].
    thicknesses : (n_slices,) sequence of float
        Δz of each slice [Å].
    theta : float
        θ of the scheme (:data:`mbook.electron.implicit.SCHEMES`).
    batch_ndim : int
        Batch axes of the waves between the slice axis and (nx, ny).
    dtype : {numpy.complex64, numpy.complex128}
        Precision of the waves (and of the diagonals).
    antialias : bool
        Band-limit operator and potential to 2/3 of Nyquist.

    Returns
    -------
    System
    """
    xp = backend.get_array_module(potential)
    real = np.float64 if dtype == np.complex128 else np.float32
    n = len(thicknesses)
    if antialias:
        aperture = multislice.antialias_aperture(grid, xp=xp).astype(real)
        potential = backend.ifft2(backend.fft2(potential.astype(dtype)) * aperture).real
    else:
        aperture = xp.ones(grid.gpts, real)
    shape = (n,) + (1,) * batch_ndim + tuple(grid.gpts)
    # everything in the waves' precision: float64 intermediates would double the peak memory
    dz = xp.asarray(np.asarray(thicknesses, real)).reshape((n,) + (1,) * (batch_ndim + 2))
    unit = xp.asarray(1j, dtype=dtype)
    # -iπλΔz|k|²: the generator of multislice's exp(-iπλΔz|k|²) (Kirkland 2010, eq. 6.92)
    k2 = (grids.frequency_squared(grid, xp=xp) * aperture * (np.pi * physics.wavelength(energy))).astype(real)
    kinetic = -unit * (dz * k2)
    sigma = real(physics.interaction_parameter(energy))
    phase = (unit * sigma) * potential.astype(real).reshape(shape)
    mean = (unit * sigma) * potential.astype(real).mean(axis=(-2, -1)).reshape(dz.shape)
    diagonal = kinetic + mean * aperture
    gain = 1 / (1 - real(theta) * diagonal)
    carry = 1 + real(1 - theta) * diagonal
    step_back = xp.conj(gain) * xp.concatenate([xp.conj(carry[1:]), xp.zeros_like(carry[:1])], axis=0)
    axes = (0,) + tuple(range(-2, 0))
    return System(theta, aperture, kinetic, phase, gain, gain * carry, step_back, axes)


def _generator(system, x):
    """``D_n x_n`` for every slice, in Fourier coefficients: ``Π(-iπλΔz|k|² + F iσv F⁻¹)Π x``."""
    scattered = backend.fft2(system.phase * backend.ifft2(system.aperture * x))
    return system.kinetic * x + system.aperture * scattered


def _shift_down(x):
    """``y_n = x_{n-1}``, ``y_0 = 0``: the previous slice's wave."""
    xp = backend.get_array_module(x)
    return xp.concatenate([xp.zeros_like(x[:1]), x[:-1]], axis=0)


def _shift_up(x):
    """``y_n = x_{n+1}``, ``y_{N-1} = 0``: the next slice's row."""
    xp = backend.get_array_module(x)
    return xp.concatenate([x[1:], xp.zeros_like(x[:1])], axis=0)


def apply(system, x):
    """``(A x)_n = x_n - x_{n-1} - D_n(θ x_n + (1-θ) x_{n-1})``: one FFT pair of the volume (a kernel).

    ``x`` holds the 2D Fourier coefficients of each slice, ``(n_slices, ..., nx, ny)``, as ``A x`` does.
    """
    previous = _shift_down(x)
    theta = system.theta
    return x - previous - _generator(system, theta * x + (1 - theta) * previous)


def apply_adjoint(system, y):
    """``(A* y)_n = y_n - y_{n+1} + θ D_n y_n + (1-θ) D_{n+1} y_{n+1}`` (``D* = -D``; a kernel, in Fourier
    coefficients as :func:`apply`)."""
    generated = _generator(system, y)
    theta = system.theta
    return y - _shift_up(y) + theta * generated + (1 - theta) * _shift_up(generated)


def _linear_recurrence(factor, term):
    """``x_n = factor_n x_{n-1} + term_n`` along axis 0 (``x_{-1} = 0``).

    On the CPU, a loop over the slices: N small operations. Elsewhere (a GPU,
    and the strict stand-in that checks that path), recursive doubling
    (Hillis & Steele 1986), ceil(log2 N) whole-volume steps after each of
    which every entry holds the recurrence over its last ``2d`` slices: one
    kernel launch per slice and operation would cost a GPU more than the
    FFTs, while the doubling's N log N work would cost a CPU more than the
    loop. ``|factor| <= 1`` here, so the running products cannot overflow.
    """
    xp = backend.get_array_module(term)
    if xp is np:
        x = np.empty_like(term)
        previous = np.zeros_like(term[0])
        for n in range(len(term)):  # bounded by the number of slices
            previous = term[n] + factor[n] * previous
            x[n] = previous
        return x
    factor = xp.array(factor, copy=True)
    x = xp.array(term, copy=True)
    offset = 1
    while offset < len(x):  # bounded: ceil(log2 n_slices) steps
        x[offset:] += factor[offset:] * x[:-offset]  # the right side is made before x changes
        factor[offset:] = factor[offset:] * factor[:-offset]
        offset *= 2
    return x


def precondition(system, r):
    """``M⁻¹ r``: ``x_n = g_n (r_n + h_n x_{n-1})`` along z (free space in each slice's mean potential; a
    kernel, in Fourier coefficients)."""
    return _linear_recurrence(system.step, system.gain * r)


def precondition_adjoint(system, r):
    """``M⁻* r``: ``y_n = conj(g_n) (r_n + conj(h_{n+1}) y_{n+1})``, the recurrence run backwards (M* is upper;
    a kernel, in Fourier coefficients)."""
    xp = backend.get_array_module(r)
    return _linear_recurrence(system.step_back[::-1], xp.conj(system.gain[::-1]) * r[::-1])[::-1]


def right_hand_side(system, incident_hat):
    """``b_0 = (I + (1-θ) D_0) ψ_in``, zero below: the incident wave enters the first row only (a kernel).

    ``incident_hat``: the Fourier coefficients of the incident waves ``(..., nx, ny)``.
    """
    xp = backend.get_array_module(incident_hat)
    b = xp.zeros(system.kinetic.shape[:1] + incident_hat.shape, incident_hat.dtype)
    first = system._replace(kinetic=system.kinetic[:1], phase=system.phase[:1])
    b[0] = incident_hat + (1 - system.theta) * _generator(first, incident_hat[None])[0]
    return b
