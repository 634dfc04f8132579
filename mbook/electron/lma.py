"""The Lattice Multislice Algorithm: PRISM with a localized basis (Doberstein & Binev 2025).

PRISM writes a probe as a sum of plane waves, which fill the whole cell. The
LMA writes it in the span of the **lattice translates of one well-localized,
band-limited function** ``u``:

``ψ_0(r) = Σ_j ψ_0(x_j) u(r - x_j)``, ``x_j = h j`` on a square lattice of spacing ``h``.

This is exact for every wave band-limited to the aperture ``|k| <= K = α/λ``
when ``û(k) = h²`` (the area of a lattice cell) on the aperture and ``û = 0``
on its copies shifted by the reciprocal lattice ``1/h`` (the sampling theorem
with oversampling). Here ``û / h²`` falls smoothly from 1 at ``K`` to 0 at
``1/h - K`` (a C∞ step), so
``h < 1/(2K)`` and the finer the lattice, the wider the taper and the more
compact ``u``. The coefficients are the probe's own values at the lattice
points: no fit, no inversion.

Multislice is linear, so the exit wave is ``Σ_j ψ_0(x_j) M[u(· - x_j)]``. As
``u`` is localized and the wave spreads little through a thin specimen, each
**basis exit wave** ``M[u_j]`` is computed on a small **patch** of
``patch_gpts²`` pixels of the specimen around ``x_j`` (periodic on the
patch), and a probe is the combination of the translates of the
``m × m`` lattice points nearest it (``m ≈ patch/h``), on a window of
``(m - 1) h + patch`` pixels. The error model: three truncations, all
shrinking as the patch grows,

1. the probe's tails beyond the ``m × m`` block of translates (no periodic
   copies of the probe interfere, unlike PRISM's window);
2. ``u``'s tails beyond its patch;
3. the part of each basis wave scattered out of its patch through the
   specimen's thickness, which wraps around the patch.

The lattice spacing sets ``u``'s width (2 above), the patch all three.

A local change of the specimen (one column replaced) changes only the basis
waves whose patches it touches: :func:`update_basis` recomputes those alone,
and :func:`affected` says which probes need a new combination.

This module checks, builds and updates the basis and checks and plans the
scan; :mod:`mbook.electron.lma_patches` holds the basis's kernels (the
translates propagated on their patches in batches, the lattice points a change
touches, the changed box's transmissions), :mod:`mbook.electron.lma_scan` the
scan's (the nearest lattice points, a probe's coefficients on its block, the
combined waves on its window).

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.electron import lma
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> basis = lma.build_basis(np.zeros((2, 64, 64), np.float32), grid=grid, energy=200e3, slice_thickness=1.0,
...                         semiangle_cutoff=20.0, lattice_step=4, patch_gpts=24)
>>> basis.array.shape, basis.window
((16, 16, 24, 24), 48)
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.electron import lma_patches, lma_scan, multislice, physics, prism, stem, stem_detectors, waves


@dataclass
class LatticeBasis:
    """The exit waves of the lattice translates of ``u``, each on its patch.

    Attributes
    ----------
    array : (n_lx, n_ly, patch, patch) ndarray, complex64
        ``M[u(· - x_j)]`` on the patch centred on lattice point ``j``, on the
        selected device.
    potential : (n_slices, nx, ny) ndarray, float32
        The specimen it was computed for (for :func:`update_basis`) [V·Å].
    transmissions : (n_slices, nx, ny) ndarray, complex64
        Its band-limited transmission functions (kept so that an update
        changes them locally).
    thicknesses : tuple of float
        Slice thicknesses [Å].
    grid : Grid
        The simulation grid [Å].
    energy : float
        [eV].
    semiangle_cutoff : float
        The aperture ``u`` covers [mrad].
    lattice_step : int
        ``h`` in pixels.
    """

    array: object
    potential: object
    transmissions: object
    thicknesses: tuple
    grid: grids.Grid
    energy: float
    semiangle_cutoff: float
    lattice_step: int

    @property
    def patch_gpts(self) -> int:
        """Pixels per side of each patch."""
        return int(self.array.shape[-1])

    @property
    def block(self) -> int:
        """Lattice points per side of the block of translates that make one probe (odd)."""
        return _block(self.patch_gpts, self.lattice_step)

    @property
    def window(self) -> int:
        """Pixels per side of a probe's exit-wave window, ``(m - 1) h + patch``."""
        return (self.block - 1) * self.lattice_step + self.patch_gpts

    @property
    def nbytes(self) -> int:
        """Bytes of the basis exit waves (the potential and transmission functions kept besides are
        one full-cell wave per slice each)."""
        return int(self.array.nbytes)


def _block(patch_gpts, lattice_step):
    m = max(1, patch_gpts // lattice_step)
    return m + 1 - m % 2  # odd: centred on the lattice point nearest the probe


def probe_diameter(*, energy, semiangle_cutoff) -> float:
    """Diameter of the in-focus probe's first dark ring, ``1.22 λ / α`` [Å] (the patch's lower bound)."""
    physics.check_energy(energy)
    semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    return 1.22 * physics.wavelength(energy) / (semiangle_cutoff * 1e-3)


def check_lattice(grid, *, energy, semiangle_cutoff, lattice_step, patch_gpts) -> tuple[int, int]:
    """Check the lattice step and the patch against the grid and the probe; return both (pixels).

    Raises
    ------
    ValueError
        ``lattice_step`` not a positive integer, not dividing both gpts, or
        too coarse (``h >= 1/(2K)``: the aperture's copies would overlap);
        ``patch_gpts`` not an integer, smaller than the probe
        (:func:`probe_diameter`) or than two lattice steps, or so large that a
        probe's window exceeds the cell.
    """
    checks.check_grid(grid, ndim=2)
    physics.check_energy(energy)
    semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    nx, ny = grid.gpts
    spacing = max(grid.sampling)
    k_aperture = semiangle_cutoff * 1e-3 / physics.wavelength(energy)
    finest = int(math.ceil(1 / (2 * k_aperture * spacing))) - 1  # largest step with h < 1/(2K)
    if not isinstance(lattice_step, numbers.Integral) or isinstance(lattice_step, bool) or lattice_step < 1:
        raise ValueError(f"lattice_step must be a positive integer [pixels], got {lattice_step!r}")
    lattice_step = int(lattice_step)
    if nx % lattice_step or ny % lattice_step or lattice_step > finest:
        raise ValueError(
            f"lattice_step={lattice_step} pixels must divide gpts {grid.gpts} and be <= {finest} "
            f"(h < 1/(2K) = {1 / (2 * k_aperture):.3f} Å for a {semiangle_cutoff:g} mrad aperture at {energy:g} eV)"
        )
    if not isinstance(patch_gpts, numbers.Integral) or isinstance(patch_gpts, bool):
        raise ValueError(f"patch_gpts must be an integer number of pixels, got {patch_gpts!r}")
    smallest = max(2 * lattice_step, int(math.ceil(probe_diameter(energy=energy,
                                                                  semiangle_cutoff=semiangle_cutoff) / spacing)))
    window = (_block(int(patch_gpts), lattice_step) - 1) * lattice_step + int(patch_gpts)
    if patch_gpts < smallest or window > min(nx, ny):
        raise ValueError(
            f"patch_gpts={patch_gpts} must hold the probe and two lattice steps (>= {smallest} pixels: the probe's "
            f"first dark ring is {probe_diameter(energy=energy, semiangle_cutoff=semiangle_cutoff):.2f} Å) and "
            f"leave a probe window within the cell ({window} > {min(nx, ny)} pixels is too large)"
        )
    return lattice_step, int(patch_gpts)


def _taper(t, xp):
    """Raised-cosine step from 1 (t <= 0) to 0 (t >= 1): ``(1 + cos πt) / 2``."""
    t = xp.clip(t, 0.0, 1.0)
    return 0.5 * (1 + xp.cos(math.pi * t))


def basis_function(patch_grid, *, energy, semiangle_cutoff, lattice_step):
    """``u`` on a patch, centred on pixel ``(patch//2, patch//2)``, scaled so that ``Σ_j ψ(x_j) u(r - x_j) = ψ``.

    ``û = h²/Δx²`` (the lattice cell in pixels) on the aperture ``|k| <= K``,
    falling as a raised cosine to 0 at ``1/h - K`` (the aperture's nearest copy).

    Parameters
    ----------
    patch_grid : Grid
        The patch's grid [Å].
    energy : float
        [eV].
    semiangle_cutoff : float
        Aperture [mrad].
    lattice_step : int
        ``h`` [pixels].

    Returns
    -------
    (patch, patch) ndarray, complex64
        On the selected device.
    """
    checks.check_grid(patch_grid, "patch_grid", ndim=2)
    physics.check_energy(energy)
    semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    lattice_step = checks.check_count(lattice_step, "lattice_step")
    xp = backend.xp
    k_aperture = semiangle_cutoff * 1e-3 / physics.wavelength(energy)
    k_outer = 1 / (lattice_step * max(patch_grid.sampling)) - k_aperture
    if not k_outer > k_aperture:
        raise ValueError(f"lattice_step={lattice_step} pixels is too coarse: h must be < 1/(2K) = "
                         f"{1 / (2 * k_aperture):.3f} Å for a {semiangle_cutoff:g} mrad aperture at {energy:g} eV")
    k = xp.sqrt(grids.frequency_squared(patch_grid, xp=xp))
    spectrum = _taper((k - k_aperture) / (k_outer - k_aperture), xp) * lattice_step**2
    # Centre it on the middle pixel: the shift exp(-2πi k·r_c) with r_c at index patch//2.
    n = patch_grid.gpts[0]
    index = xp.fft.fftfreq(n) * n
    shift = xp.exp(-2j * math.pi * index * (n // 2) / n)
    u = backend.ifft2(spectrum * shift[:, None] * shift[None, :])
    return u.astype(xp.complex64)


def _compute(array, points, transmissions, thicknesses, grid, energy, semiangle, step, budget, fixed, client=None):
    """Fill ``array[points]`` with basis exit waves (:func:`mbook.electron.lma_patches.compute_waves`)."""
    xp = backend.get_array_module(array)
    propagators, u = _patch_operators(array.shape[-1], tuple(grid.sampling), energy,
                                      tuple(float(dz) for dz in np.atleast_1d(backend.asnumpy(thicknesses))),
                                      semiangle, step, xp, backend.get_device())
    lma_patches.compute_waves(array, points, transmissions=transmissions, propagators=propagators, u=u, step=step,
                              gpts=grid.gpts, budget=budget, fixed=fixed, client=client)


@functools.lru_cache(maxsize=4)
def _patch_operators(patch, sampling, energy, thicknesses, semiangle, step, xp, device):
    """The slices' propagators (made with ``xp``) and the basis function (on ``device``, the selected one)
    on a patch: made once for a basis and its updates (about sixty small operations, which a local
    update would otherwise spend again: on a GPU, launches). Read-only: the waves start from a copy of u."""
    patch_grid = grids.make_grid(gpts=(patch, patch), sampling=sampling)
    u = basis_function(patch_grid, energy=energy, semiangle_cutoff=semiangle, lattice_step=step)
    return multislice.slice_propagators(patch_grid, energy=energy, thicknesses=thicknesses, xp=xp), u


def build_basis(potential, *, grid, energy, slice_thickness, semiangle_cutoff, lattice_step, patch_gpts,
                budget=None, client=None):
    """Basis exit waves of every lattice translate of ``u``, each on its own patch of the specimen.

    Parameters
    ----------
    potential : (n_slices, nx, ny) array_like
        Projected potential per slice [V·Å].
    grid : Grid
        Its 2D grid [Å].
    energy : float
        [eV].
    slice_thickness : float or (n_slices,) array_like
        [Å].
    semiangle_cutoff : float
        The probe aperture [mrad].
    lattice_step : int
        Lattice spacing ``h`` [pixels]; divides both gpts, ``h < 1/(2K)``.
    patch_gpts : int
        Patch side [pixels]: at least the probe (:func:`probe_diameter`) and
        two lattice steps; a probe's window ``(m-1)h + patch`` within the cell.
    budget : int, optional
        Memory budget [bytes]; default :func:`mbook.core.progress.memory_budget`.
    client : dask.distributed.Client, optional
        Share the batches of translates out over a Dask cluster (the same
        basis as built here, see :func:`mbook.electron.lma_patches.compute_waves`).

    Returns
    -------
    LatticeBasis
        On the selected device.

    Raises
    ------
    MemoryError
        When the basis and one patch in flight exceed the budget (numbers in
        the message), before any propagation.
    """
    physics.check_energy(energy)
    semiangle = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    checks.check_grid(grid, ndim=2)
    budget = None if budget is None else checks.check_count(budget, "budget")
    checks.check_client(client)
    potential = checks.check_array(potential, "potential", ndim=3, real=True).astype(np.float32)
    if tuple(potential.shape[-2:]) != tuple(grid.gpts):
        raise ValueError(f"potential ends in {potential.shape[-2:]} but the grid has gpts {grid.gpts}")
    thicknesses = multislice.check_thicknesses(slice_thickness, len(potential))
    step, patch = check_lattice(grid, energy=energy, semiangle_cutoff=semiangle, lattice_step=lattice_step,
                                patch_gpts=patch_gpts)
    lattice = (grid.gpts[0] // step, grid.gpts[1] // step)
    basis_bytes = lattice[0] * lattice[1] * patch * patch * 8
    # Memory first: refuse before anything is allocated if the basis and one patch cannot fit.
    progress.plan_batches(n_items=1, bytes_per_item=lma_patches.bytes_per_point(patch),
                          fixed_bytes=basis_bytes + potential.nbytes * 3, budget=budget)
    xp = backend.get_array_module(potential)
    array = xp.empty(lattice + (patch, patch), xp.complex64)
    ax, ay = xp.meshgrid(xp.arange(lattice[0]), xp.arange(lattice[1]), indexing="ij")
    points = xp.stack([ax.ravel(), ay.ravel()], axis=-1)
    transmissions = multislice.transmission_function(potential, energy=energy, grid=grid)
    _compute(array, points, transmissions, thicknesses, grid, energy, semiangle, step, budget,
             fixed=basis_bytes + potential.nbytes * 3, client=client)
    return LatticeBasis(array, potential, transmissions, thicknesses, grid, float(energy), semiangle, step)


def update_basis(basis, potential, *, tol=1e-3, overwrite=False, budget=None):
    """Recompute only the basis waves whose patches a change of the specimen touches.

    Parameters
    ----------
    basis : LatticeBasis
        From :func:`build_basis` (or a previous update).
    potential : (n_slices, nx, ny) array_like
        The changed specimen (same grid and slices) [V·Å].
    tol : float
        A pixel counts as changed where ``max_z |Δv| > tol · max |Δv|``
        (the far tails of a replaced column's potential are ignored); in (0, 1).
    overwrite : bool
        Write the recomputed waves into ``basis``'s array instead of a copy of
        it: no second basis in memory, and no copy of its untouched waves
        (which costs more than the recomputation when few are touched).
        ``basis`` itself then mixes new waves with its old potential: use the
        returned basis only.
    budget : int, optional
        Memory budget [bytes].

    Returns
    -------
    (LatticeBasis, (n_lx, n_ly) ndarray of bool)
        The updated basis (a new array unless ``overwrite``), and which
        lattice points were recomputed, on the selected device.

    Notes
    -----
    The transmission functions change only on the box around the touched
    patches, band-limited on that box (see :func:`build_basis`); the
    touched lattice points are copied to the host once to find the box.
    """
    if not isinstance(basis, LatticeBasis):
        raise TypeError(f"basis must be a LatticeBasis from lma.build_basis, got {type(basis).__name__}")
    tol = checks.check_number(tol, "tol", lower=0, upper=1, lower_inclusive=False, upper_inclusive=False)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    budget = None if budget is None else checks.check_count(budget, "budget")
    potential = checks.check_array(potential, "potential", ndim=3, real=True).astype(np.float32)
    if potential.shape != basis.potential.shape:
        raise ValueError(f"potential has shape {potential.shape}, the basis was built for {basis.potential.shape}")
    xp = backend.get_array_module(potential)
    touched = lma_patches.touched_points(basis, potential, tol)
    points = xp.stack(xp.nonzero(touched), axis=-1)
    array = basis.array if overwrite else basis.array.copy()
    transmissions = basis.transmissions
    if len(points):
        transmissions = lma_patches.local_transmissions(basis, potential, backend.asnumpy(touched))  # host: box
        _compute(array, points, transmissions, basis.thicknesses, basis.grid, basis.energy, basis.semiangle_cutoff,
                 basis.lattice_step, budget, fixed=(1 if overwrite else 2) * basis.nbytes + potential.nbytes * 6)
    new = LatticeBasis(array, potential, transmissions, basis.thicknesses, basis.grid, basis.energy,
                       basis.semiangle_cutoff, basis.lattice_step)
    return new, touched


def affected(basis, positions, touched, *, block=None):
    """Which probes combine a recomputed basis wave: ``(...)`` bool, on the selected device.

    Parameters
    ----------
    basis : LatticeBasis
        The basis (its lattice and block).
    positions : (..., 2) array_like
        Probe positions [Å].
    touched : (n_lx, n_ly) array_like of bool
        The lattice points :func:`update_basis` recomputed.
    block : int, optional
        The block of translates the scan uses (see :func:`scan`).
    """
    if not isinstance(basis, LatticeBasis):
        raise TypeError(f"basis must be a LatticeBasis from lma.build_basis, got {type(basis).__name__}")
    positions = stem.check_positions(positions, basis.grid)
    touched = checks.check_array(touched, "touched", ndim=2)
    lattice = basis.array.shape[:2]
    if tuple(touched.shape) != tuple(lattice):
        raise ValueError(f"touched has shape {touched.shape}, the lattice is {lattice}")
    xp = backend.get_array_module(positions)
    m = basis.block if block is None else checks.check_count(block, "block", maximum=min(lattice))
    # Touched points within m//2 of a probe's nearest point, along both axes: a wrapped box maximum.
    ndimage = backend.scipy_module("ndimage", touched)
    near = ndimage.maximum_filter(touched.astype(xp.float32), size=m, mode="wrap") > 0
    centre = lma_scan.nearest_points(positions.reshape(-1, 2), basis)
    hit = near[centre[:, 0] % lattice[0], centre[:, 1] % lattice[1]]
    return hit.reshape(positions.shape[:-1])


def scan(basis, *, positions, detectors=None, diffraction=False, defocus=0.0, Cs=0.0, aberrations=None,
         block=None, budget=None, max_batch=None):
    """STEM signals (and 4D patterns) of probes at ``positions`` from a lattice basis.

    Parameters
    ----------
    basis : LatticeBasis
        From :func:`build_basis` or :func:`update_basis`.
    positions : (..., 2) array_like
        Probe positions [Å] inside the cell.
    detectors : dict, optional
        ``{name: (inner, outer)}`` [mrad]; default
        :func:`mbook.electron.stem_detectors.standard_detectors` of the basis's aperture.
    diffraction : bool
        Also return the patterns on the window's grid ``(w, w)`` (FFT order).
    defocus, Cs, aberrations
        Probe aberrations [Å], in the coefficients (the basis is unchanged).
    block : int, optional
        Translates per side that make a probe (default :attr:`LatticeBasis.block`,
        about patch/h), up to the whole lattice: a larger block keeps more of the
        probe's tails (truncation 1 of the error model). A window wider than the
        cell wraps around it, as multislice's periodic cell does.
    budget : int, optional
        Memory budget for the probes in flight [bytes].
    max_batch : int, optional
        Most probes combined at once (default :data:`mbook.electron.lma_scan.BATCH`
        on the CPU, :data:`mbook.electron.lma_scan.GPU_BATCH` on a GPU), within the budget.

    Returns
    -------
    dict
        As :func:`mbook.electron.stem.scan`: float32 signals (fraction of the
        incident current) shaped like ``positions[..., 0]``, plus
        ``"diffraction"`` ``(..., w, w)`` when asked, on the selected device.

    Notes
    -----
    The probes inside one lattice cell share their block of translates. When
    the scan averages at least :data:`mbook.electron.lma_scan.GROUPED_MIN`
    probes a block (a dense scan) and a block placed on the window fits a
    quarter of the budget, each block is placed once
    (:func:`mbook.electron.lma_scan.placed_patches`) and its probes are one
    matrix product (:func:`mbook.electron.lma_scan.shared_block_waves`);
    otherwise each probe adds its block's patches one by one
    (:func:`mbook.electron.lma_scan.window_waves`). Both give the same
    waves to float32 rounding.
    """
    if not isinstance(basis, LatticeBasis):
        raise TypeError(f"basis must be a LatticeBasis from lma.build_basis, got {type(basis).__name__}")
    if max_batch is None:  # few large batches on a GPU, where every block offset is a launch per batch
        max_batch = lma_scan.GPU_BATCH if backend.gpu_code_path() else lma_scan.BATCH
    max_batch = checks.check_count(max_batch, "max_batch")
    m = basis.block if block is None else checks.check_count(block, "block", maximum=min(basis.array.shape[:2]))
    grid, energy = basis.grid, basis.energy
    budget = None if budget is None else checks.check_count(budget, "budget")
    positions = stem.check_positions(positions, grid)
    detectors = stem_detectors.scan_detectors(detectors, basis.semiangle_cutoff)
    xp = backend.get_array_module(basis.array)
    window = grids.make_grid(gpts=lma_scan.window_shape(basis, m), sampling=grid.sampling)
    masks = stem_detectors.detector_masks(window, energy=energy, detectors=detectors, xp=xp) if detectors else None
    spectrum = waves.probe_spectrum(grid, energy=energy, semiangle_cutoff=basis.semiangle_cutoff, defocus=defocus,
                                    Cs=Cs, aberrations=aberrations, xp=xp)
    beams_host = prism.beam_indices(grid, energy=energy, semiangle_cutoff=basis.semiangle_cutoff)
    beams = backend.asarray(beams_host)
    on_grid = lma_scan.beam_grid(spectrum, beams_host, grid)  # a few tens of distinct frequencies per axis
    flat = positions.reshape(-1, 2)
    n, n_window = len(flat), window.gpts[0] * window.gpts[1]
    signals = xp.empty((n, len(detectors)), xp.float32) if masks is not None else None
    patterns = xp.empty((n,) + tuple(window.gpts), xp.float32) if diffraction else None
    fixed = basis.nbytes + sum(a.nbytes for a in (masks, signals, patterns, spectrum) if a is not None)
    per_probe = n_window * (8 + 8 + 8 + 4) + 2 * m * len(beams) * 16
    # A dense scan puts many probes in each lattice cell, and those share their block of translates: the
    # block is placed on the window once and their waves are one matrix product (one copy of the blocks
    # to the host, on entry, to group them).
    first = backend.asnumpy(lma_scan.nearest_points(flat, basis)) - m // 2
    order, sizes = lma_scan.blocks(first)
    placed_bytes = m * m * n_window * 8 + m * m * basis.patch_gpts**2 * 16  # the placed block, its indices
    room = budget or progress.memory_budget()
    # grouped only where the placed block leaves the plan room for a batch of GROUPED_MIN probes: a scan
    # that fits translate by translate is never refused for it
    grouped = (n >= lma_scan.GROUPED_MIN * len(sizes) and placed_bytes <= room // 4
               and fixed + placed_bytes + lma_scan.GROUPED_MIN * per_probe <= room)
    if grouped:
        fixed += placed_bytes
    batch = min(max_batch, progress.plan_batches(n_items=n, bytes_per_item=per_probe, fixed_bytes=fixed,
                                                 budget=budget))
    if grouped:
        batches = lma_scan.block_batches(sizes, batch)
    else:
        order = np.arange(n)
        batches = [[(start, min(start + batch, n))] for start in range(0, n, batch)]
    placed = None  # the block placed on the window: one buffer, refilled block after block
    for runs in progress.progress(batches, desc="LMA scan"):
        index = order[runs[0][0]:runs[-1][1]]
        rows = backend.asarray(index)
        coefficients, _ = lma_scan.coefficients(spectrum, beams, flat[rows], basis, m, on_grid=on_grid)
        if grouped:
            psi = xp.empty((len(index),) + tuple(window.gpts), xp.complex64)
            for start, end in runs:
                block = tuple(int(v) for v in first[order[start]])
                placed = lma_scan.placed_patches(basis.array, block, m, basis.lattice_step, window.gpts, out=placed)
                local = slice(start - runs[0][0], end - runs[0][0])
                psi[local] = lma_scan.shared_block_waves(coefficients[local], placed, window.gpts)
        else:
            psi = lma_scan.window_waves(basis.array, coefficients, backend.asarray(first[index]),
                                        basis.lattice_step, window.gpts)
        far = backend.fft2(psi)
        intensity = ((far.real**2 + far.imag**2) / xp.float32(n_window)).astype(xp.float32)
        if signals is not None:
            signals[rows] = xp.tensordot(intensity, masks, axes=([-2, -1], [-2, -1]))
        if patterns is not None:
            patterns[rows] = intensity
    return stem.scan_outputs(signals, patterns, detectors, positions.shape[:-1], window.gpts)
