"""An implicit whole-domain solver of the paraxial Schrödinger equation of fast electrons.

Multislice marches the wave through the specimen one slice at a time. Here
the wave in every slice is one unknown, and the paraxial equation

``∂ψ/∂z = (iλ/4π) ∇²ψ + iσ V ψ = D ψ``

(σ the interaction parameter, V the potential [V]; in Fourier space
``(iλ/4π)∇² = -iπλ|k|²``, the generator of :mod:`mbook.electron.multislice`'s
propagator ``exp(-iπλΔz|k|²)``) is discretised in z by the θ-scheme over the
whole volume. With ``D_n = Δz_n D`` over slice ``n``, whose potential is the
slice's projected potential ``v_n = ∫ V dz`` [V·Å],

``(I - θ D_n) ψ_n - (I + (1 - θ) D_n) ψ_{n-1} = 0,   n = 0 … N-1,``

``ψ_{-1}`` being the incident wave: θ = 1 is backward Euler (first order in
Δz), θ = 1/2 Crank-Nicolson (second order, and unitary). The N rows form one
block lower-bidiagonal linear system ``A Ψ = b`` for ``Ψ = (ψ_0, …, ψ_{N-1})``.

Solving it
----------
``A`` is not Hermitian, so conjugate gradients do not apply; the choice is
between GMRES (memory growing with the iterations, a restart to tune) and
BiCGSTAB (van der Vorst 1992: a fixed nine volumes, two products with
``A`` per iteration). BiCGSTAB is taken. Its scalars are 0-d device arrays,
so an iteration copies nothing to the host. It is right-preconditioned with
the same system for the free-space wave in the slice's mean potential,
``M``: that operator is diagonal in Fourier space, and ``M⁻¹`` is one sweep
along z of elementwise products. ``method="richardson"`` is the plain
preconditioned fixed point ``Ψ ← Ψ + M⁻¹(b - AΨ)`` (a Born series in the
fluctuating potential) for comparison. Both start from any volume ``x0``,
e.g. the solution for the previous frozen-phonon configuration. The min-max
form (a Lagrange multiplier for the equation, solved by the primal-dual
hybrid gradient method) converges at first order and needs ``‖A‖``;
:func:`operators` hands ``A``, ``A*``, ``M⁻¹`` and ``M⁻*`` to such outside
solvers.

The unknowns are kept as 2D Fourier coefficients of each slice (the
potential term costs one inverse and one forward FFT of the volume per
product with ``A``). With ``antialias`` (default, as in multislice) the
operator acts on waves band-limited to 2/3 of the Nyquist frequency:
``D = Π (-iπλΔz|k|² + iσ v) Π`` with Π that aperture, and the potential is
band-limited the same way. ``D`` is anti-Hermitian, so ``A*`` is the same
sweep with the roles of the two diagonals exchanged (:func:`operators`).
The operator, its adjoint, the preconditioner and the right-hand side are
the kernels of :mod:`mbook.electron.implicit_system`; this module checks,
plans the memory and iterates.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.electron import implicit
>>> grid = grids.make_grid(gpts=(16, 16), sampling=0.25)
>>> v = np.zeros((4, 16, 16))                                      # vacuum
>>> result = implicit.solve(np.ones((16, 16)), v, grid=grid, energy=200e3, slice_thickness=2.0)
>>> result.iterations, bool(np.allclose(backend.asnumpy(result.exit_wave), 1.0))
(0, True)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.electron import implicit_system, multislice, physics

#: θ of each scheme: the weight of the new slice in the generator's average.
SCHEMES = {"backward-euler": 1.0, "crank-nicolson": 0.5}
METHODS = ("bicgstab", "richardson")
#: Peak memory of :func:`solve` per incident wave, in volumes ``(n_slices, nx, ny)`` of the waves' dtype:
#: BiCGSTAB's nine (b, x, r, r̂, p, v, y, z, t) and the temporaries of a product with ``A`` (17 measured).
VOLUMES_IN_USE = 18
#: Peak memory of the operator's diagonals, whatever the number of waves (5 kept, 9 while they are made).
SYSTEM_VOLUMES = 10


class ImplicitResult(NamedTuple):
    """Solution of :func:`solve`.

    Attributes
    ----------
    waves : (n_slices, ..., nx, ny) ndarray, complex
        The wave at the exit of every slice (the whole-domain solution), on
        the selected device; pass it as ``x0`` to a solve with a perturbed
        potential.
    exit_wave : (..., nx, ny) ndarray, complex
        ``waves[-1]``.
    iterations : int
        Iterations run (the largest over memory batches).
    residual : float
        ``max ‖b - AΨ‖ / ‖b‖`` over the waves of the batch, recomputed from
        the returned solution.
    converged : bool
        Whether a check found the residual at most ``tol``.
    residuals : (n_checks,) ndarray, float
        The relative residual ``‖b - AΨ‖ / ‖b‖`` at the start and at each
        check (the largest over the waves), on the selected device.
    """

    waves: object
    exit_wave: object
    iterations: int
    residual: float
    converged: bool
    residuals: object


# ----------------------------------------------------------------------------- checks
def _check_system(waves, potential, grid, energy, slice_thickness, scheme):
    """Validate what defines the system; return the waves, the potential, thicknesses, θ."""
    physics.check_energy(energy)
    theta = SCHEMES[checks.check_choice(scheme, "scheme", tuple(SCHEMES))]
    potential = checks.check_array(potential, "potential", real=True)
    if potential.ndim != 3:
        raise ValueError(f"potential must be (n_slices, nx, ny) [V·Å], got shape {potential.shape}")
    waves = checks.check_field(waves, "waves")
    if not isinstance(grid, grids.Grid):
        raise TypeError(f"grid must be a mbook.core.grids.Grid, got {type(grid).__name__}")
    if waves.shape[-2:] != potential.shape[-2:] or tuple(grid.gpts) != potential.shape[-2:]:
        raise ValueError(
            f"waves {waves.shape[-2:]}, potential {potential.shape[-2:]} and grid {grid.gpts} must share (nx, ny)"
        )
    thicknesses = multislice.check_thicknesses(slice_thickness, len(potential))
    return waves, potential, thicknesses, theta


def _check_antialias(antialias):
    if not isinstance(antialias, (bool, np.bool_)):
        raise TypeError(f"antialias must be True or False, got {antialias!r}")


def _check_volume(volume, name, shape):
    volume = checks.check_field(volume, name)
    if volume.shape != shape:
        raise ValueError(f"{name} must have shape (n_slices, ..., nx, ny) = {shape}, got {volume.shape}")
    return volume


class ImplicitOperators(NamedTuple):
    """The linear maps of the whole-domain system, made once (see :func:`operators`).

    Each takes and returns real-space device arrays; ``forward``, ``adjoint``,
    ``precondition`` and ``precondition_adjoint`` act on volumes
    ``(n_slices, *batch_shape, nx, ny)``, ``right_hand_side`` on incident
    waves ``(*batch_shape, nx, ny)``. No checks, no host copies: for an
    iterative solver's inner loop (e.g. :func:`mbook.inverse.solvers.pdhg`).

    Attributes
    ----------
    forward, adjoint : callable
        ``Ψ ↦ AΨ`` and ``Y ↦ A*Y``.
    precondition, precondition_adjoint : callable
        ``R ↦ M⁻¹R`` and ``R ↦ M⁻*R`` (free space in each slice's mean potential).
    right_hand_side : callable
        ``ψ_in ↦ b``.
    """

    forward: object
    adjoint: object
    precondition: object
    precondition_adjoint: object
    right_hand_side: object


def operators(potential, *, grid, energy, slice_thickness, scheme="crank-nicolson", antialias=True,
              batch_shape=(), dtype=np.complex64):
    """The operators ``A``, ``A*``, ``M⁻¹``, ``M⁻*`` and ``b`` of the whole-domain system, validated once.

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential of each slice [V·Å].
    grid : Grid
        The 2D grid [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        [Å].
    scheme : {"crank-nicolson", "backward-euler"}
    antialias : bool
        Band-limit operator and potential to 2/3 of Nyquist.
    batch_shape : tuple of int
        Batch axes of the waves between the slice axis and (nx, ny).
    dtype : {numpy.complex64, numpy.complex128}
        Precision of the operators (inputs are cast to it).

    Returns
    -------
    ImplicitOperators
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.complex64, np.complex128):
        raise ValueError(f"dtype must be complex64 or complex128, got {dtype}")
    if not isinstance(batch_shape, tuple) or not all(isinstance(n, int) and n >= 1 for n in batch_shape):
        raise ValueError(f"batch_shape must be a tuple of integers >= 1, got {batch_shape!r}")
    _check_antialias(antialias)
    potential = checks.check_array(potential, "potential", real=True)
    xp = backend.get_array_module(potential)
    probe = xp.zeros(tuple(potential.shape[-2:]), dtype)  # stands in for the waves' (nx, ny) in the checks
    _, potential, thicknesses, theta = _check_system(probe, potential, grid, energy, slice_thickness, scheme)
    system = implicit_system.make_system(potential, grid, energy, thicknesses, theta, len(batch_shape), dtype,
                                         antialias)

    def in_fourier(kernel):
        def apply(volume):
            return backend.ifft2(kernel(system, backend.fft2(backend.asarray(volume).astype(dtype, copy=False))))
        return apply

    return ImplicitOperators(in_fourier(implicit_system.apply), in_fourier(implicit_system.apply_adjoint),
                             in_fourier(implicit_system.precondition), in_fourier(implicit_system.precondition_adjoint),
                             in_fourier(implicit_system.right_hand_side))


# ----------------------------------------------------------------------------- the solvers
def _dot(system, a, b):
    """``<a, b>`` per wave of the batch, kept as (1, ..., 1, 1) device arrays."""
    xp = backend.get_array_module(a)
    return xp.sum(xp.conj(a) * b, axis=system.axes, keepdims=True)


def _divide(numerator, denominator):
    """``numerator / denominator``, 0 where the denominator vanishes (a converged wave of the batch)."""
    xp = backend.get_array_module(denominator)
    # below tiny/eps, products of residuals have lost all their digits (~1e-31 in float32)
    info = np.finfo(denominator.real.dtype)
    zero = xp.abs(denominator) <= info.tiny / info.eps
    return xp.where(zero, 0, numerator / xp.where(zero, 1, denominator))


def _bicgstab(system, b, x, tol, max_num_iter, check_every):
    """Right-preconditioned BiCGSTAB (van der Vorst 1992, Alg. 2 with M on the right) on the device."""
    xp = backend.get_array_module(b)
    norm_b = xp.sqrt(_dot(system, b, b).real)
    norm_b = xp.where(norm_b == 0, 1, norm_b)
    r = b - implicit_system.apply(system, x)
    history = [xp.max(xp.sqrt(_dot(system, r, r).real) / norm_b)]
    if bool(history[0] <= tol):  # the starting volume solves the system already (one copy)
        return x, 0, True, history
    floor = 10 * np.finfo(norm_b.dtype).eps * norm_b
    shadow = r.copy()
    rho = alpha = omega = xp.ones_like(norm_b, dtype=b.dtype)
    v = xp.zeros_like(b)
    p = xp.zeros_like(b)
    converged, it = False, 0
    for it in range(1, max_num_iter + 1):
        rho_new = _dot(system, shadow, r)
        beta = _divide(rho_new, rho) * _divide(alpha, omega)
        p = r + beta * (p - omega * v)
        y = implicit_system.precondition(system, p)
        v = implicit_system.apply(system, y)
        alpha = _divide(rho_new, _dot(system, shadow, v))
        x = x + alpha * y
        r = r - alpha * v  # s of the algorithm
        z = implicit_system.precondition(system, r)
        t = implicit_system.apply(system, z)
        omega = _divide(_dot(system, t, r), _dot(system, t, t))
        # a wave whose residual is at rounding level stops moving: its next steps would divide noise by noise
        omega = xp.where(xp.sqrt(_dot(system, r, r).real) > floor, omega, 0)
        x = x + omega * z
        r = r - omega * t
        rho = rho_new
        if it % check_every == 0 or it == max_num_iter:
            # the true residual, not the recurrence's, which drifts from it in float32
            true = b - implicit_system.apply(system, x)
            history.append(xp.max(xp.sqrt(_dot(system, true, true).real) / norm_b))
            if it % check_every == 0 and bool(history[-1] <= tol):  # the one copy per check
                converged = True
                break
    return x, it, converged, history


def _richardson(system, b, x, tol, max_num_iter, check_every):
    """Preconditioned fixed point ``x ← x + M⁻¹(b - Ax)``: the Born series in ``v - mean v``."""
    xp = backend.get_array_module(b)
    norm_b = xp.sqrt(_dot(system, b, b).real)
    norm_b = xp.where(norm_b == 0, 1, norm_b)
    r = b - implicit_system.apply(system, x)
    history = [xp.max(xp.sqrt(_dot(system, r, r).real) / norm_b)]
    if bool(history[0] <= tol):  # the starting volume solves the system already (one copy)
        return x, 0, True, history
    converged, it = False, 0
    for it in range(1, max_num_iter + 1):
        x = x + implicit_system.precondition(system, r)
        r = b - implicit_system.apply(system, x)
        if it % check_every == 0 or it == max_num_iter:
            history.append(xp.max(xp.sqrt(_dot(system, r, r).real) / norm_b))
            if it % check_every == 0 and bool(history[-1] <= tol):
                converged = True
                break
    return x, it, converged, history


def _solve_batch(system, incident, x0, method, tol, max_num_iter, check_every):
    """Solve for one batch of incident waves (a kernel); return real-space volume and diagnostics."""
    xp = backend.get_array_module(incident)
    b = implicit_system.right_hand_side(system, backend.fft2(incident))
    x = implicit_system.precondition(system, b) if x0 is None else backend.fft2(x0)
    solver = _bicgstab if method == "bicgstab" else _richardson
    x, iterations, converged, history = solver(system, b, x, tol, max_num_iter, check_every)
    r = b - implicit_system.apply(system, x)
    residual = xp.max(xp.sqrt(_dot(system, r, r).real / xp.maximum(_dot(system, b, b).real, 1e-300)))
    return backend.ifft2(x), iterations, converged, history, residual


def solve(waves, potential, *, grid, energy, slice_thickness, scheme="crank-nicolson", x0=None,
          method="bicgstab", tol=1e-5, max_num_iter=200, check_every=5, antialias=True, budget=None):
    """Solve the implicit whole-domain system ``AΨ = b`` for incident ``waves``.

    Parameters
    ----------
    waves : (..., nx, ny) array_like, complex
        Incident wave(s) at the entrance surface: a plane wave, or probes
        (leading batch axes; each is its own system, solved together).
    potential : (n_slices, nx, ny) array_like
        Projected potential of each slice [V·Å].
    grid : Grid
        The 2D grid of ``waves`` [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        Δz of every slice, or of each [Å].
    scheme : {"crank-nicolson", "backward-euler"}
        Second- or first-order discretisation in z.
    x0 : (n_slices, ..., nx, ny) array_like, optional
        Starting volume, e.g. ``waves`` of an :class:`ImplicitResult` for a
        slightly different potential (warm start). Default: the free-space
        wave in the slices' mean potential, ``M⁻¹ b``.
    method : {"bicgstab", "richardson"}
        Preconditioned BiCGSTAB, or the preconditioned fixed point.
    tol : float
        Stop when ``‖b - AΨ‖ / ‖b‖ <= tol`` for every wave (computed anew,
        tested every ``check_every`` iterations); > 0. Rounding bounds what
        can be reached: about 1e-6 for complex64 waves (then the solver runs
        to ``max_num_iter``, its iterate staying finite), 1e-14 for complex128.
    max_num_iter, check_every : int
        Iteration limit; iterations between convergence tests (each test
        copies one number to the host, nothing else does).
    antialias : bool
        Band-limit to 2/3 of Nyquist, as :func:`mbook.electron.multislice.propagate_slices`.
    budget : int, optional
        Memory allowed [bytes]; default :func:`mbook.core.progress.memory_budget`.
        Waves are solved in batches that fit (:data:`VOLUMES_IN_USE` volumes
        each, a progress bar when there are several); one that does not fit
        is refused.

    Returns
    -------
    ImplicitResult
        Arrays on the selected device; plain numbers as Python types.

    Raises
    ------
    ValueError
        Unknown scheme or method, tol <= 0, iteration counts < 1, shapes
        that disagree, non-finite input.
    MemoryError
        When the volumes of one wave exceed the budget (the message gives
        the numbers).
    """
    waves, potential, thicknesses, theta = _check_system(waves, potential, grid, energy, slice_thickness, scheme)
    method = checks.check_choice(method, "method", METHODS)
    tol = checks.check_number(tol, "tol", lower=0, lower_inclusive=False, hint="e.g. 1e-5")
    max_num_iter = checks.check_iterations(max_num_iter, "max_num_iter")
    check_every = checks.check_iterations(check_every, "check_every")
    _check_antialias(antialias)
    n = len(potential)
    if x0 is not None:
        x0 = _check_volume(x0, "x0", (n,) + waves.shape).astype(waves.dtype, copy=False)
    batch_shape, gpts = waves.shape[:-2], waves.shape[-2:]
    n_waves = int(np.prod(batch_shape, dtype=np.int64))
    itemsize = np.dtype(waves.dtype).itemsize
    per_wave = VOLUMES_IN_USE * n * int(np.prod(gpts)) * itemsize
    fixed = SYSTEM_VOLUMES * n * int(np.prod(gpts)) * itemsize
    batch = progress.plan_batches(n_items=n_waves, bytes_per_item=per_wave, fixed_bytes=fixed, budget=budget)

    xp = backend.get_array_module(waves)
    flat = waves.reshape((n_waves,) + gpts)
    flat_x0 = None if x0 is None else x0.reshape((n, n_waves) + gpts)
    system = implicit_system.make_system(potential, grid, energy, thicknesses, theta, 1, waves.dtype, antialias)
    out = xp.empty((n, n_waves) + gpts, waves.dtype)
    iterations, converged, histories, residuals = 0, True, [], []
    starts = range(0, n_waves, batch)  # bounded: ceil(n_waves / batch) batches
    if len(starts) > 1:  # a bar only when the memory budget splits the waves
        starts = progress.progress(starts, desc="implicit solve", total=len(starts))
    for start in starts:
        stop = min(start + batch, n_waves)
        guess = None if flat_x0 is None else flat_x0[:, start:stop]
        volume, its, ok, history, residual = _solve_batch(system, flat[start:stop], guess, method, tol,
                                                         max_num_iter, check_every)
        out[:, start:stop] = volume
        iterations, converged = max(iterations, its), converged and ok
        histories.append(xp.stack(history))
        residuals.append(residual)
    history = histories[0]
    for other in histories[1:]:  # the largest estimate per check over the batches
        m = min(len(history), len(other))
        history = xp.concatenate([xp.maximum(history[:m], other[:m]), history[m:] if len(history) > m else other[m:]])
    volume = out.reshape((n,) + waves.shape)
    return ImplicitResult(volume, volume[-1], int(iterations), float(xp.max(xp.stack(residuals))),
                          bool(converged), history)
