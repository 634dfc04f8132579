"""The multislice method: transmission functions, propagation, exit waves.

A specimen is cut into slices of thickness Δz; each slice is a phase grating
``t(r) = exp(i σ v(r))`` (σ the interaction parameter, v the slice's projected
potential in V·Å), and the wave travels between slices in free space with the
Fresnel propagator ``p(k) = exp(-iπ λ Δz |k|^2)`` (Cowley & Moodie 1957;
Kirkland 2010, eq. 6.92):

``ψ_{n+1} = F^-1[ p · F[t_n ψ_n] ]``.

Both ``t`` and ``p`` are band-limited to 2/3 of the grid's Nyquist frequency,
so the products of the multislice never alias (Kirkland 2010, sec. 6.8). The
largest scattering angle a simulation can represent is therefore
``λ · (2/3) / (2 Δx)``; :func:`max_angle` gives it.

Waves may carry leading batch axes ``(..., nx, ny)`` (e.g. one probe per scan
position); they are propagated together. Public functions move their inputs to
the selected device and return their arrays there (:mod:`mbook`'s device rule).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.electron import multislice
>>> grid = grids.make_grid(gpts=(32, 32), sampling=0.2)
>>> v = np.zeros((4, 32, 32), np.float32)          # vacuum: nothing scatters
>>> psi = multislice.propagate_slices(np.ones((32, 32), np.complex64), v, grid=grid,
...                                   energy=200e3, slice_thickness=2.0)
>>> bool(np.allclose(backend.asnumpy(psi), 1.0, atol=1e-5))
True
"""

from __future__ import annotations

import math

from mbook.core import backend, checks, fft_plans, grids, progress, propagation
from mbook.electron import physics

ANTIALIAS_FRACTION = 2.0 / 3.0


def max_angle(grid: grids.Grid, energy: float, *, antialias: bool = True) -> float:
    """Largest scattering angle a multislice on ``grid`` represents [mrad].

    ``λ f / (2 max(sampling))`` with ``f = 2/3`` for the antialiasing aperture
    (the limit along the coarser axis; the aperture is round).
    """
    checks.check_grid(grid)
    fraction = ANTIALIAS_FRACTION if antialias else 1.0
    return 1e3 * physics.wavelength(energy) * fraction / (2 * max(grid.sampling))


def antialias_aperture(grid: grids.Grid, *, xp=None):
    """Round mask keeping ``|k| <= (2/3) k_Nyquist`` (coarser axis), FFT order, float32.

    On the selected device, or made with the array module ``xp`` (for a kernel
    that follows its inputs).
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    cutoff = ANTIALIAS_FRACTION / (2 * max(grid.sampling))
    return (grids.frequency_squared(grid, xp=xp) <= cutoff**2).astype(xp.float32)


def transmission_function(potential, *, energy, grid=None, antialias=True):
    """Phase gratings ``t = exp(i σ v)`` of potential slices, band-limited if ``antialias``.

    Parameters
    ----------
    potential : (..., nx, ny) array_like
        Projected potential of each slice [V·Å].
    energy : float
        [eV].
    grid : Grid, optional
        Needed for the antialiasing aperture.
    antialias : bool
        Band-limit ``t`` to 2/3 of Nyquist.

    Returns
    -------
    (..., nx, ny) ndarray, complex64
        On the selected device. On the GPU path the slices are an array
        axis, in memory-budgeted batches (:func:`mbook.core.progress.plan_batches`):
        one exponential and one pair of batched FFTs per batch. On the CPU
        one slice after another through the FFTW plan of one slice (a plan
        per batch shape would cost more planning than it saves).
    """
    if grid is not None:
        checks.check_grid(grid)
    potential = checks.check_array(potential, "potential", min_ndim=2, real=True)
    xp = backend.get_array_module(potential)
    potential = potential.astype(xp.float32, copy=False)
    stack = potential.reshape((-1,) + potential.shape[-2:])
    physics.check_energy(energy)
    if antialias and grid is None:
        raise ValueError("grid is needed to band-limit the transmission function (antialias=True)")
    t = xp.empty(stack.shape, xp.complex64)
    if backend.gpu_code_path():
        # The work of a batch (the stack and the result are the caller's): per slice its phase, cos and
        # sin (float32) and two spectra (complex64).
        batch = progress.plan_batches(n_items=stack.shape[0], bytes_per_item=(3 * 4 + 2 * 8) * stack[0].size)
        for start in range(0, stack.shape[0], batch):
            _transmission_batch(stack[start:start + batch], t[start:start + batch], energy, grid, antialias)
    else:
        for index, slice_t in enumerate(_transmission_slices(stack, energy, grid, antialias)):
            t[index] = slice_t
    return t.reshape(potential.shape)


def phase_factors(phase, out=None):
    """``exp(i φ)`` as complex64 from the real cos and sin of ``φ`` (a kernel: no checks).

    The two real functions into the two halves of the result: about 10x
    faster than a complex exp in NumPy.

    Parameters
    ----------
    phase : (...) ndarray, float32
        ``φ`` [rad].
    out : (...) ndarray, complex64, optional
        Written in place and returned; default a new array.

    Returns
    -------
    (...) ndarray, complex64
        On ``phase``'s device.
    """
    xp = backend.get_array_module(phase)
    if out is None:
        out = xp.empty(phase.shape, xp.complex64)
    out.real = xp.cos(phase)
    out.imag = xp.sin(phase)
    return out


def _transmission_batch(potential, out, energy, grid, antialias):
    """``out ← exp(i σ v)`` for a batch of slices ``(b, nx, ny)``, band-limited (a kernel: no checks).

    The same steps as :func:`_transmission_slices` on a batch: the forward FFT
    unnormalised, the aperture carrying ``1/N``, the inverse FFT without it.
    """
    xp = backend.get_array_module(potential)
    phase_factors(xp.float32(physics.interaction_parameter(energy)) * potential, out=out)
    if antialias:
        fft = backend.fft_module(out)
        kernel = antialias_aperture(grid, xp=xp) * xp.float32(1.0 / math.prod(out.shape[-2:]))
        spectrum = fft.fft2(out, axes=(-2, -1), **backend.fft_kwargs(out))
        spectrum *= kernel
        out[...] = fft.ifft2(spectrum, axes=(-2, -1), norm="forward", **backend.fft_kwargs(out))


def transmission_slices(potential, *, energy, grid=None, antialias=True):
    """Yield :func:`transmission_function` of one slice after another, made when needed.

    A plane-wave multislice needs each slice's grating once: making it just
    before use keeps one slice in memory instead of the whole stack.

    Parameters are those of :func:`transmission_function`, with ``potential``
    a stack ``(n_slices, nx, ny)`` [V·Å], moved to the selected device.

    Yields
    ------
    (nx, ny) ndarray, complex64
        ``t`` of the next slice, on the selected device, in a buffer that the
        next slice overwrites.
    """
    if grid is not None:
        checks.check_grid(grid)
    potential = checks.check_array(potential, "potential", ndim=3, real=True)
    physics.check_energy(energy)
    if antialias and grid is None:
        raise ValueError("grid is needed to band-limit the transmission function (antialias=True)")
    return _transmission_slices(potential, energy, grid, antialias)


def _transmission_slices(potential, energy, grid, antialias):
    """The generator of :func:`transmission_slices`, on checked inputs."""
    xp = backend.get_array_module(potential)
    sigma = xp.float32(physics.interaction_parameter(energy))
    shape = potential.shape[-2:]
    if antialias:
        plan = fft_plans.fft2_plan(shape, xp.complex64, xp=xp, slot="transmission")
        buffer = plan.array
        kernel = antialias_aperture(grid, xp=xp) * xp.float32(plan.scale)
    else:
        buffer = xp.empty(shape, xp.complex64)
    for v in potential:
        phase_factors(sigma * xp.asarray(v, dtype=xp.float32), out=buffer)
        if antialias:
            plan.forward()
            buffer *= kernel
            plan.backward()
        yield buffer


def slice_propagator(grid: grids.Grid, *, energy, slice_thickness, antialias=True, xp=None):
    """Fresnel propagator over one slice, ``exp(-iπ λ Δz |k|^2)`` × aperture, FFT order, complex64.

    On the selected device, or made with the array module ``xp``.
    """
    checks.check_grid(grid)
    slice_thickness = checks.check_positive_number(slice_thickness, "slice_thickness")
    xp = xp or backend.xp
    p = propagation.fresnel_propagator(grid, slice_thickness, physics.wavelength(energy), xp=xp)
    if antialias:
        p = p * antialias_aperture(grid, xp=xp)
    return p.astype(xp.complex64)


def check_thicknesses(slice_thickness, n_slices: int) -> tuple[float, ...]:
    """One thickness per slice [Å] from a number or a sequence of ``n_slices`` (plain floats).

    A device array is copied to the host first: thicknesses are parameters
    (Python floats), not data.

    Raises
    ------
    ValueError
        A non-positive or non-finite thickness, or a count other than ``n_slices``.
    """
    n_slices = checks.check_count(n_slices, "n_slices")
    if backend.is_device_array(slice_thickness):
        slice_thickness = backend.asnumpy(slice_thickness)
    return checks.check_positive(slice_thickness, "slice_thickness", n_slices)


def _check_inputs(waves, potential, grid, slice_thickness):
    """Validate a multislice call; return the arrays (on the selected device) and one thickness per slice [Å]."""
    potential = checks.check_array(potential, "potential", real=True)
    if potential.ndim != 3:
        raise ValueError(f"potential must be (n_slices, nx, ny), got shape {potential.shape}")
    waves = checks.check_field(waves, "waves")
    if waves.shape[-2:] != potential.shape[-2:] or tuple(grid.gpts) != potential.shape[-2:]:
        raise ValueError(
            f"waves {waves.shape[-2:]}, potential {potential.shape[-2:]} and grid {grid.gpts} must share (nx, ny)"
        )
    return waves, potential, check_thicknesses(slice_thickness, len(potential))


def slice_propagators(grid, *, energy, thicknesses, antialias=True, xp=None):
    """One propagator per slice, shared between slices of equal thickness (list of arrays).

    On the selected device, or made with the array module ``xp``.
    """
    thicknesses = checks.check_positive(thicknesses, "thicknesses", None)
    cache = {}
    for dz in thicknesses:
        if dz not in cache:
            cache[dz] = slice_propagator(grid, energy=energy, slice_thickness=dz, antialias=antialias, xp=xp)
    return [cache[dz] for dz in thicknesses]


def prepare(waves, potential, grid, energy, slice_thickness, antialias, transmissions=None, lazy=False):
    """Check a multislice call and build its operators.

    Returns
    -------
    (waves, transmissions, propagators)
        On the selected device: the incident waves as complex64, the
        transmission functions (the whole stack, or with ``lazy`` a generator
        that makes each when the loop reaches it: for one pass over the
        slices), and one propagator per slice, ready for :func:`iterate_slices`.
    """
    checks.check_grid(grid)
    physics.check_energy(energy)
    waves, potential, thicknesses = _check_inputs(waves, potential, grid, slice_thickness)
    xp = backend.get_array_module(waves)
    if transmissions is not None:
        transmissions = checks.check_operand(transmissions, "transmissions", like=potential, like_name="potential")
    elif lazy:
        transmissions = _transmission_slices(potential, energy, grid, antialias)
    else:
        transmissions = transmission_function(potential, energy=energy, grid=grid, antialias=antialias)
    propagators = slice_propagators(grid, energy=energy, thicknesses=thicknesses, antialias=antialias, xp=xp)
    return waves.astype(xp.complex64), transmissions, propagators


def propagate_slices(waves, potential, *, grid, energy, slice_thickness, antialias=True,
                     transmissions=None):
    """Run the multislice recursion through every slice.

    Parameters
    ----------
    waves : (..., nx, ny) array_like, complex
        Incident wave(s) at the entrance surface (not modified).
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å].
    grid : Grid
        The 2D grid of ``waves`` [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        Δz of every slice, or of each [Å] (e.g. a thinner last slice, from
        :func:`mbook.electron.potentials.slice_thicknesses`).
    antialias : bool
        Apply the 2/3 aperture to transmission and propagator. Without it the
        recursion is unitary (|ψ|² conserved) but may alias.
    transmissions : (n_slices, nx, ny) ndarray, optional
        Precomputed :func:`transmission_function` of ``potential`` (saves
        the exponentials when many batches share a specimen).

    Returns
    -------
    (..., nx, ny) ndarray, complex64
        Exit wave(s), on the selected device.
    """
    checks.check_grid(grid)
    psi, transmissions, propagators = prepare(waves, potential, grid, energy, slice_thickness, antialias,
                                               transmissions, lazy=True)
    for psi in iterate_slices(psi, transmissions, propagators):
        pass
    return psi.copy()  # the loop's work buffer is reused by the next call


def iterate_slices(psi, transmissions, propagators, plan=None):
    """Yield the wave after each slice: ``ψ ← F^-1[p_n · F[t_n ψ]]`` (no checks: a kernel).

    Parameters
    ----------
    psi : (..., nx, ny) ndarray, complex64
        Incident wave(s); copied into the plan's buffer (not modified), unless it is that buffer.
    transmissions, propagators : sequences of (nx, ny) ndarray, complex64
        From :func:`prepare`.
    plan : mbook.core.fft_plans.FFT2Plan, optional
        In-place FFT plan for ``psi.shape``; default this thread's
        (:func:`mbook.core.fft_plans.fft2_plan`).

    Yields
    ------
    (..., nx, ny) ndarray, complex64
        The wave after each slice, in the plan's work buffer: the next step
        overwrites it, so copy what you keep.
    """
    xp = backend.get_array_module(psi)
    plan = plan or fft_plans.fft2_plan(psi.shape, xp.complex64, xp=xp)
    buffer = plan.array
    if psi is not buffer:  # a scan makes its probes in the buffer already
        buffer[...] = psi
    scaled = {}  # the inverse FFT's 1/N folded into each distinct propagator: one pass fewer per slice
    for t, p in zip(transmissions, propagators):
        if id(p) not in scaled:
            scaled[id(p)] = p * xp.complex64(plan.scale)
        plan.forward_multiplied(t, scaled[id(p)])  # on a GPU one cuFFT pass with both products fused in
        plan.backward()
        yield buffer


def exit_wave(atoms, energy, sampling, slice_thickness, parametrization="kirkland", *, antialias=True,
              return_grid=False):
    """Exit wave of a specimen under unit-intensity plane-wave illumination.

    Atoms to potential slices (:func:`mbook.electron.potentials.projected_potential`,
    the last slice thinner when the cell is not a whole number of slices) to
    multislice (:func:`propagate_slices`).

    Parameters
    ----------
    atoms : ase.Atoms
        Specimen in an orthorhombic cell; the beam travels along +z.
    energy : float
        [eV].
    sampling : float
        Largest grid spacing allowed [Å] (see :func:`mbook.electron.potentials.potential_grid`).
    slice_thickness : float
        [Å]; e.g. ``lattice / n`` for ``n`` slices per unit cell along z.
    parametrization : {"kirkland", "lobato"}
        Atomic potential parametrisation.
    antialias : bool
        Band-limit to 2/3 of Nyquist (see :func:`propagate_slices`); without
        it the recursion conserves ``sum |ψ|^2``.
    return_grid : bool
        Also return the :class:`mbook.core.grids.Grid` of the wave.

    Returns
    -------
    psi : (nx, ny) ndarray, complex64
        On the selected device.
    grid : Grid
        Only with ``return_grid=True``: its grid (``sampling`` is the actual
        spacing, at most the one asked for) [Å].

    Examples
    --------
    >>> from mbook.electron import multislice, structures
    >>> psi, grid = multislice.exit_wave(structures.srtio3(), 300e3, 0.1, 3.905 / 2, return_grid=True)
    >>> psi.shape, grid.gpts
    ((40, 40), (40, 40))
    """
    from mbook.electron import potentials

    physics.check_energy(energy)
    potential, grid = potentials.projected_potential(
        atoms, sampling, slice_thickness, parametrization=parametrization, return_grid=True
    )
    xp = backend.get_array_module(potential)
    psi = propagate_slices(xp.ones(grid.gpts, xp.complex64), potential, grid=grid, energy=energy,
                           slice_thickness=potentials.slice_thicknesses(atoms, slice_thickness),
                           antialias=antialias)
    return (psi, grid) if return_grid else psi


def weak_phase_exit_wave(potential, *, energy):
    """First-order (weak-phase-object) exit wave ``1 + i σ Σ v`` [dimensionless].

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å].
    energy : float
        [eV].

    Returns
    -------
    (nx, ny) ndarray, complex
        On the selected device (complex64 for float32 slices).
    """
    potential = checks.check_array(potential, "potential", ndim=3, real=True)
    return 1 + 1j * physics.interaction_parameter(energy) * potential.sum(axis=0)


def thickness_series(waves, potential, *, grid, energy, slice_thickness, every=1, antialias=True):
    """Exit waves after every ``every`` slices, parameters as for :func:`propagate_slices`.

    Returns
    -------
    (n_out, ..., nx, ny) ndarray, complex64
        On the selected device; ``n_out = n_slices // every``.
    """
    checks.check_grid(grid)
    every = checks.check_count(every, "every")
    psi, transmissions, propagators = prepare(waves, potential, grid, energy, slice_thickness, antialias,
                                              lazy=True)
    if every > len(propagators):
        raise ValueError(f"every={every} exceeds the number of slices, {len(propagators)}: nothing to return")
    xp = backend.get_array_module(psi)
    out = xp.empty((len(propagators) // every,) + psi.shape, xp.complex64)
    for index, step in enumerate(iterate_slices(psi, transmissions, propagators), start=1):
        if index % every == 0:
            out[index // every - 1] = step  # a copy: the next slice overwrites the buffer
    return out
