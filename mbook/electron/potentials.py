"""Projected atomic potentials, sliced for the multislice.

The electrostatic potential of a neutral atom is the Fourier transform of its
electron scattering factor ``f_e(k)`` (first Born approximation; Kirkland 2010,
ch. 5 and appendix C): ``V(r) = 2π a0 e ∫ f_e(|k|) exp(-2πi k·r) d³k``, with ``a0`` the
Bohr radius and ``e`` the elementary charge written as ``e / (4π ε0)``
[V·Å], so that ``2π a0 e ≈ 47.878 V·Å²``. Projected along z, a slice of
atoms at ``(x_j, y_j)`` has the 2D Fourier transform

``v̂(kx, ky) = 2π a0 e Σ_species f_e(|k|) S_species(kx, ky)``,
``S_species(kx, ky) = Σ_j exp(-2πi (kx x_j + ky y_j))``,

computed here directly on the grid's frequencies and inverse-transformed. The
result is exactly band-limited to the grid (no real-space truncation of the
atoms, no aliasing) and its integral is exact: ``Σ v dx dy = 2π a0 e f_e(0)``
per atom. ``S`` is separable, ``S = Aᵀ B`` with ``A[j, m] = exp(-2πi kx_m
x_j)`` and ``B[j, n] = exp(-2πi ky_n y_j)``, one matrix product per slice and
species (``O(n_atoms · nx · ny)``, done by BLAS or cuBLAS). The slices are an
array axis: a memory-budgeted batch of them goes through one batched product
per species (each slice's atoms padded to the longest list, the padding
masked out) and one batched inverse FFT.

Band-limited is not the same as sampled: an atom between grid points shows
a weak ripple in real space (Gibbs; for Au at 0.05 Å sampling up to ~0.7 % of
the peak, falling as the sampling is refined), while its spectrum is exact
at every frequency of the grid. An atom on a grid point reproduces Kirkland's
closed-form projected potential to a few % at 0.3-1 Å from the nucleus
(second order in the sampling; tests/test_potentials.py).

Conventions: ``k = |k|`` is a spatial frequency in cycles per Å without a 2π
(``k = 2 sin(θ)/λ = 1/d``), as in :mod:`mbook.core.grids`. Arrays are
``(n_slices, nx, ny)``, axis 1 along the cell's x. The scattering factors
``f_e`` (Kirkland 2010 or Lobato & Van Dyck 2014, Z = 1..103) are in
:mod:`mbook.electron.scattering_factors`; :func:`scattering_factor` is here too.

Slicing (projection approximation): the cell is cut along z into
``n_slices = ceil(cell_z / slice_thickness)`` slices of ``slice_thickness``
(the last one thinner when the cell is not a whole number of slices, see
:func:`slice_thicknesses`); each atom's *whole* projected potential goes to
the slice that contains its z, none is shared with the neighbouring slices.

Frozen phonons (displaced configurations of the atoms) are in :mod:`mbook.electron.phonons`.

Examples
--------
>>> import numpy as np
>>> from ase import Atoms
>>> from mbook.electron import potentials, scattering_factors
>>> atoms = Atoms("Au", positions=[(2.0, 2.0, 1.0)], cell=[4.0, 4.0, 2.0])
>>> v, grid = potentials.projected_potential(atoms, 0.1, 2.0, return_grid=True)
>>> v.shape, grid.sampling
((1, 40, 40), (0.1, 0.1))
>>> integral = float(v.sum() * 0.1 * 0.1)          # V·Å²
>>> expected = potentials.POTENTIAL_PREFACTOR * scattering_factors.scattering_factor("Au", 0.0)
>>> bool(abs(integral / expected - 1) < 1e-5)
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.fft
from scipy import constants

from mbook.core import backend, checks, grids, progress
from mbook.electron import scattering_factors

#: ``2π a0 e`` [V·Å²] (Kirkland 2010, ch. 5), with e → e/(4π ε0) in V·Å (≈ 14.40 V·Å)
#: and a0 in Å (≈ 0.5292 Å); CODATA values from :mod:`scipy.constants`.
POTENTIAL_PREFACTOR = (
    2 * math.pi
    * constants.physical_constants["Bohr radius"][0] * 1e10
    * constants.e / (4 * math.pi * constants.epsilon_0) * 1e10
)

_POSITION_TOLERANCE = 1e-6  # Å: rounding noise such as z = -1e-17 still counts as z = 0
_MANY_SLICES = 20  # show a progress bar from this many slices on
_CPU_BATCH_BYTES = 2**20  # spectrum bytes of a batch on the CPU: near a core's cache, many batches to share


# --------------------------------------------------------------------------- atoms and grids


def check_atoms(atoms, *, orthorhombic: bool = True):
    """Validate an :class:`ase.Atoms`-like object for slicing (a host-only step: ase lives on the host).

    Parameters
    ----------
    atoms : ase.Atoms
        At least one atom, finite positions, a cell of non-zero volume.
    orthorhombic : bool
        Also require a diagonal cell (axes along x, y, z) of positive lengths,
        as :func:`projected_potential` does.

    Returns
    -------
    positions : (n, 3) numpy.ndarray, float64
        Atom positions [Å] (host: the slicing bookkeeping is done there).
    lengths : (3,) numpy.ndarray, float64
        Diagonal of the cell [Å].
    symbols : list of str
        Chemical symbols.

    Raises
    ------
    TypeError
        For an object that is not an ase.Atoms.
    ValueError
        Empty atoms, non-finite cell or positions, a skewed cell (the
        message gives the recipe to orthogonalize it), zero length or volume.
    """
    if not all(hasattr(atoms, name) for name in ("get_positions", "get_chemical_symbols", "cell")):
        raise TypeError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError("atoms is empty: give at least one atom")
    cell = np.asarray(atoms.cell, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(cell).all():
        raise ValueError(f"atoms.cell must be finite, got {cell.tolist()}")
    lengths = np.diag(cell).copy()
    off_diagonal = cell - np.diag(lengths)
    if orthorhombic and np.abs(off_diagonal).max() > 1e-9 * max(np.abs(cell).max(), 1.0):
        raise ValueError(
            f"atoms.cell must be orthorhombic with axes along x, y, z (a diagonal cell), got "
            f"{np.round(cell, 6).tolist()}. Orthogonalize it first: build an orthorhombic supercell with "
            "ase.build.make_supercell(atoms, P) and an integer matrix P that makes the cell rectangular "
            "(for a hexagonal cell with a 120° angle, P = [[1, 0, 0], [1, 2, 0], [0, 0, 1]]), or use "
            "abTEM's orthogonalize_cell(atoms); then atoms.wrap()"
        )
    if orthorhombic:
        for axis, length in zip("xyz", lengths):
            if not length > 0:
                raise ValueError(
                    f"atoms.cell has zero length along {axis} (cell lengths {lengths.tolist()} Å); give the "
                    "atoms a cell, e.g. atoms.center(vacuum=2.0) or atoms.set_cell([a, b, c])"
                )
    elif abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"atoms.cell has zero volume ({np.round(cell, 6).tolist()}); give the atoms a cell")
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    if not np.isfinite(positions).all():
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"atom {bad} has a non-finite position {positions[bad].tolist()}")
    return positions, lengths, atoms.get_chemical_symbols()


def _check_inside(positions, lengths):
    """Atoms must lie in [0, L) along every axis (periodic cell, projected slices)."""
    outside = (positions < -_POSITION_TOLERANCE) | (positions >= lengths)
    if outside.any():
        j, axis = (int(i) for i in np.argwhere(outside)[0])
        raise ValueError(
            f"atom {j} lies outside the cell: its {'xyz'[axis]} = {positions[j, axis]:.6g} Å is not in "
            f"[0, {lengths[axis]:.6g}) Å ({int(outside.any(axis=1).sum())} atoms outside in all); "
            "wrap them into the cell with atoms.wrap(), or enlarge the cell (atoms.center(vacuum=...))"
        )


def _check_sampling(sampling) -> tuple[float, float]:
    return checks.check_positive(sampling, "sampling", 2)


def _gpts(extent: float, sampling: float) -> int:
    # The smallest FFT-friendly number of points (factors 2, 3, 5, 7) whose spacing does not
    # exceed `sampling`: 245 points would cost ~1.5x the FFT time of 250 (round first:
    # 39.05 / (39.05 / 512) must give 512, not 513).
    return scipy.fft.next_fast_len(max(1, math.ceil(round(extent / sampling, 9))))


def potential_grid(atoms, sampling) -> grids.Grid:
    """The grid :func:`projected_potential` uses for ``atoms`` at ``sampling``.

    ``sampling`` is the *largest* spacing allowed: the cell's x and y lengths
    are rarely whole multiples of it, so ``gpts = ceil(extent / sampling)``
    and the actual spacing is ``extent / gpts <= sampling`` (shown by the
    returned grid; nothing is changed silently).

    Parameters
    ----------
    atoms : ase.Atoms
        Specimen in an orthorhombic cell.
    sampling : float or (float, float)
        Largest grid spacing along x and y [Å].

    Returns
    -------
    Grid
        ``gpts = (nx, ny)``, ``sampling = (dx, dy)`` [Å]; ``extent`` is the cell's (x, y) size.

    Examples
    --------
    >>> from ase import Atoms
    >>> from mbook.electron.potentials import potential_grid
    >>> grid = potential_grid(Atoms("C", cell=[3.905, 3.905, 3.905]), 0.1)
    >>> grid.gpts, round(grid.sampling[0], 6)
    ((40, 40), 0.097625)
    """
    _, lengths, _ = check_atoms(atoms)
    sampling = _check_sampling(sampling)
    gpts = tuple(_gpts(float(e), s) for e, s in zip(lengths[:2], sampling))
    return grids.make_grid(gpts=gpts, extent=tuple(float(e) for e in lengths[:2]))


def _check_slice_thickness(slice_thickness, cell_z: float) -> float:
    if (
        isinstance(slice_thickness, bool)
        or not isinstance(slice_thickness, numbers.Real)
        or not math.isfinite(slice_thickness)
        or not 0 < slice_thickness <= cell_z * (1 + 1e-9)
    ):
        raise ValueError(
            f"slice_thickness must be in (0, {cell_z:.6g}] Å (at most the cell's z length), "
            f"got {slice_thickness!r}"
        )
    return min(float(slice_thickness), cell_z)


def _num_slices(cell_z: float, slice_thickness: float) -> int:
    return max(1, math.ceil(round(cell_z / slice_thickness, 9)))


def slice_thicknesses(atoms, slice_thickness):
    """Thickness of each slice of :func:`projected_potential` [Å].

    All equal ``slice_thickness`` except the last, which is thinner when the
    cell's z length is not a whole number of slices.

    Returns
    -------
    tuple of float
        One thickness per slice [Å]: plain numbers, a parameter of the
        multislice (its ``slice_thickness``), not data for the device.

    Examples
    --------
    >>> from ase import Atoms
    >>> from mbook.electron.potentials import slice_thicknesses
    >>> slice_thicknesses(Atoms("C", cell=[4.0, 4.0, 5.0]), 2.0)
    (2.0, 2.0, 1.0)
    """
    _, lengths, _ = check_atoms(atoms)
    cell_z = float(lengths[2])
    slice_thickness = _check_slice_thickness(slice_thickness, cell_z)
    n = _num_slices(cell_z, slice_thickness)
    return (slice_thickness,) * (n - 1) + (cell_z - (n - 1) * slice_thickness,)


# --------------------------------------------------------------------------- the potential


def _separable_phases(coordinate, frequencies, spacing, n, xp, transposed=False):
    """``exp(-2πi k x)`` for atoms x (..., m) and frequencies k, complex64: ``(..., m, n_k)``, or
    ``(..., n_k, m)`` with ``transposed`` (the layout a matrix product takes without a copy).

    The Nyquist frequency of an even grid is its own negative, so the Hermitian
    part of its term, ``cos(π x / spacing)``, is used: the spectrum stays
    Hermitian and the inverse real FFT is exact.
    """
    if transposed:
        phase = coordinate[..., None, :] * frequencies[:, None]  # cycles, float64
    else:
        phase = coordinate[..., :, None] * frequencies
    phase -= xp.rint(phase)  # reduce before float32: exact phases up to any frequency
    angle = (phase * (-2 * np.pi)).astype(xp.float32)
    if xp is np:  # real cos and sin: ~6x faster than a complex exp on the CPU
        factor = np.empty(angle.shape, dtype=np.complex64)
        factor.real, factor.imag = np.cos(angle), np.sin(angle)
    else:
        factor = xp.exp(1j * angle).astype(xp.complex64)
    if n % 2 == 0:
        column = n // 2 if frequencies.size == n else frequencies.size - 1
        nyquist = xp.cos(np.pi * coordinate / spacing).astype(xp.complex64)
        if transposed:
            factor[..., column, :] = nyquist
        else:
            factor[..., column] = nyquist
    return factor


def _group_layout(species, slice_index, n_slices, n_species):
    """Host bookkeeping of the (slice, species) groups: atoms sorted by group, each group's first row
    in that order and its size (n_slices, n_species), and each sorted atom's rank in its group."""
    order = np.lexsort((species, slice_index))
    keys = slice_index[order] * n_species + species[order]
    counts = np.bincount(keys, minlength=n_slices * n_species)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(order.size) - first[keys]
    return order, keys, rank, counts.reshape(n_slices, n_species)


def _padded_rows(order, keys, rank, counts, lo, hi, sp, r0, r1, n_species):
    """The atoms of species ``sp`` with ranks ``r0..r1-1`` in those slices of ``lo..hi-1`` that hold
    any: the slices (positions in the batch, host), their atom indices ``(n, m)``, each slice's list
    padded to the longest, and the mask (1 for an atom, 0 for padding), host arrays."""
    holding = np.flatnonzero(counts[lo:hi, sp] > r0)
    m = min(int(counts[lo:hi, sp].max()), r1) - r0
    where = np.zeros(hi - lo, dtype=np.int64)
    where[holding] = np.arange(holding.size)
    rows = np.zeros((holding.size, m), dtype=np.int64)
    mask = np.zeros((holding.size, m), dtype=np.float32)
    # the batch's atoms are contiguous in the sorted order: look at them alone
    part = slice(np.searchsorted(keys, lo * n_species), np.searchsorted(keys, hi * n_species))
    key, grade = keys[part], rank[part]
    pick = (key % n_species == sp) & (grade >= r0) & (grade < r1)
    slots = (where[key[pick] // n_species - lo], grade[pick] - r0)
    rows[slots] = order[part][pick]
    mask[slots] = 1.0
    return holding, rows, mask


def _projected_potential_kernel(positions, species, slice_index, n_slices, tables, grid, batch, chunk, threads):
    """Slices ``v = irfft2(Σ_s f̂_s · A_sᵀ B_s)`` (no checks: a kernel, on the device of ``tables``).

    positions : (n, 2) float64 on the device; species, slice_index : (n,) int
    NumPy (host bookkeeping: which atoms go to which slice); tables :
    (n_species, nx, ny//2+1) float32 on the device, already holding
    ``2π a0 e f_e(|k|) / (dx dy)``; batch : slices built together, as an array
    axis (each slice's atoms of a species padded to the longest list, the
    padding masked out; one batched matrix product per species and one batched
    inverse FFT per batch); chunk : most atoms of one slice and species per
    product; threads : batches built at once (CPU only).
    """
    xp = backend.get_array_module(tables)
    (nx, ny), (dx, dy) = grid.gpts, grid.sampling
    n_species = tables.shape[0]
    kx = xp.fft.fftfreq(nx, dx)
    ky = xp.fft.rfftfreq(ny, dy)
    fft = backend.fft_module(kx)
    fft_kwargs = {"workers": 1} if threads > 1 else backend.fft_kwargs(kx)  # honours backend.fft_workers
    out = xp.zeros((n_slices, nx, ny), dtype=xp.float32)
    # Only slices that hold atoms are built (the others stay 0), numbered 0..n_filled-1 in a batch axis.
    filled = np.unique(slice_index)
    order, keys, rank, counts = _group_layout(species, np.searchsorted(filled, slice_index), filled.size, n_species)

    def one_batch(lo):
        hi = min(lo + batch, filled.size)
        spectrum = xp.zeros((hi - lo, nx, ky.size), dtype=xp.complex64)
        for sp in range(n_species):  # a few elements: the loop is over the table's species, not over data
            largest = int(counts[lo:hi, sp].max())
            for r0 in range(0, largest, chunk):  # one pass unless a slice holds more atoms than the budget allows
                holding, rows, mask = _padded_rows(order, keys, rank, counts, lo, hi, sp, r0, r0 + chunk, n_species)
                if holding.size == 0:
                    continue
                padded = not mask.all()
                rows = xp.asarray(rows)  # host bookkeeping moved once per pass
                # Aᵀ made as (b, nx, m) directly: NumPy's stacked matmul takes its BLAS path only for
                # contiguous operands (a transposed view ran ~25x slower)
                a_t = _separable_phases(positions[rows, 0], kx, dx, nx, xp, transposed=True)  # (b, nx, m)
                b = _separable_phases(positions[rows, 1], ky, dy, ny, xp)  # (b, m, ny//2+1)
                if padded:  # padding rows contribute 0: masked in place
                    b *= xp.asarray(mask)[:, :, None]
                # S(kx, ky) = Σ_j exp(-2πi (kx x_j + ky y_j)) for every slice of the batch at once
                structure = tables[sp] * xp.matmul(a_t, b)
                if holding.size == hi - lo:
                    spectrum += structure
                else:  # only the slices that hold this species (distinct indices: += adds each once)
                    spectrum[xp.asarray(holding)] += structure
        # v = F^-1[v̂] / (dx dy): the mbook inverse FFT carries 1/N, and N dx dy is the cell area.
        slices = filled[lo:hi]
        if slices[-1] - slices[0] == hi - lo - 1:  # consecutive slices: a view, no index array
            out[slices[0]:slices[-1] + 1] = fft.irfft2(spectrum, s=(nx, ny), axes=(-2, -1), **fft_kwargs)
        else:
            out[xp.asarray(slices)] = fft.irfft2(spectrum, s=(nx, ny), axes=(-2, -1), **fft_kwargs)

    with progress.one_blas_thread(xp):  # also when serial: run_batches pins BLAS only while its pool runs
        progress.run_batches(one_batch, range(0, filled.size, batch), threads=threads, desc="potential slices",
                             show=n_slices >= _MANY_SLICES)
    return out


def projected_potential(atoms, sampling, slice_thickness, parametrization="kirkland", *, return_grid=False):
    """Projected electrostatic potential of ``atoms``, cut into slices along z.

    Each slice is computed in Fourier space from the structure factors of
    its atoms, ``v̂(k) = 2π a0 e Σ_species f_e(|k|) S_species(k)`` (Kirkland
    2010, ch. 5), exactly band-limited to the grid, then transformed back:
    ``v = Re F^-1[v̂] / (dx dy)``. Each atom's whole projected potential goes to
    the slice containing its z (projection approximation).

    Parameters
    ----------
    atoms : ase.Atoms
        Specimen in an orthorhombic cell (``atoms.cell`` diagonal), every atom
        inside it (``0 <= x < a`` etc.); the beam travels along +z.
    sampling : float or (float, float)
        Largest grid spacing allowed along x and y [Å]. The grid has
        ``gpts = ceil(extent / sampling)`` points, so the actual spacing is at
        most this; get it from ``return_grid=True`` or :func:`potential_grid`.
    slice_thickness : float
        Slice thickness, in ``(0, cell_z]`` [Å]. There are
        ``ceil(cell_z / slice_thickness)`` slices; the last is thinner when the
        cell is not a whole number of slices (:func:`slice_thicknesses`).
    parametrization : {"kirkland", "lobato"}
        Electron scattering factors of Kirkland (2010) or Lobato & Van Dyck (2014).
    return_grid : bool
        Also return the :class:`mbook.core.grids.Grid` of the slices.

    Returns
    -------
    potential : (n_slices, nx, ny) ndarray, float32
        Projected potential of each slice [V·Å], on the selected device; axis
        1 runs along the cell's x. The atoms are read on the host (ase), and
        only their (x, y) positions are moved to the device.
    grid : Grid
        Only with ``return_grid=True``: ``gpts = (nx, ny)`` and the actual
        ``sampling = (dx, dy)`` [Å].

    Raises
    ------
    ValueError
        Non-orthorhombic or zero-length cell, atoms outside the cell, empty
        atoms, sampling <= 0, slice_thickness <= 0 or larger than the cell,
        unknown parameterisation or element.
    MemoryError
        When the output and work arrays exceed :func:`mbook.core.progress.memory_budget`.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from mbook.electron.potentials import projected_potential
    >>> silicon = bulk("Si", "diamond", a=5.431, cubic=True)
    >>> v, grid = projected_potential(silicon, 0.1, 5.431 / 4, return_grid=True)
    >>> v.shape, v.dtype.name
    ((4, 55, 55), 'float32')
    """
    parametrization = scattering_factors.check_parametrization(parametrization)
    positions, lengths, symbols = check_atoms(atoms)
    _check_inside(positions, lengths)
    cell_z = float(lengths[2])
    slice_thickness = _check_slice_thickness(slice_thickness, cell_z)
    grid = potential_grid(atoms, sampling)
    n_slices = _num_slices(cell_z, slice_thickness)

    species_names = sorted(set(symbols))
    for name in species_names:
        scattering_factors.check_element(name, parametrization)
    lookup = {name: i for i, name in enumerate(species_names)}
    species = np.array([lookup[name] for name in symbols], dtype=np.int64)
    # round first: an atom at z = 3 dz built as 1.9525 + 3.905 must land in slice 3, not 2
    slice_index = np.floor(np.round(positions[:, 2] / slice_thickness, 9)).astype(np.int64)
    slice_index = np.clip(slice_index, 0, n_slices - 1)

    # Memory: the output and one spectrum-sized table per species (fixed); per slice of a batch its
    # spectrum, one product and the inverse FFT's work (about 6 complex64 spectra); per atom row of a
    # pass its two phase rows (float64 phases, float32 angles, complex64 factors, the masked copy).
    nx, ny = grid.gpts
    nyh = ny // 2 + 1
    fixed = n_slices * nx * ny * 4 + (len(species_names) + 2) * 4 * nx * nyh
    per_slice = 6 * 8 * nx * nyh
    per_row = (nx + nyh) * 32
    largest_group = int(np.max(np.unique(slice_index * len(species_names) + species, return_counts=True)[1]))
    chunk = progress.plan_batches(n_items=largest_group, bytes_per_item=per_row, fixed_bytes=fixed + per_slice)
    n_filled = np.unique(slice_index).size  # the slices that hold atoms: the others stay 0
    batch = progress.plan_batches(n_items=n_filled, bytes_per_item=per_slice + min(chunk, largest_group) * per_row,
                                  fixed_bytes=fixed)

    xp = backend.xp
    # On the GPU path (and its stand-in) every slice of a batch in one product and one FFT, the batch as
    # large as the budget allows: few, large kernels. On the CPU the batches share the cores, one per
    # core at a time, each with single-threaded BLAS and FFT (the products are too small for BLAS to
    # split well, and the batches are independent), the budget shared between them, each batch's
    # spectra near a core's cache (larger batches ran slower there, not faster).
    threads = 1 if backend.gpu_code_path() else min(backend.cpu_threads(), n_slices)
    if not backend.gpu_code_path():
        batch = max(1, min(batch // threads, _CPU_BATCH_BYTES // (8 * nx * nyh)))
        n_batches = -(-n_filled // batch)
        batch = -(-n_filled // (-(-n_batches // threads) * threads))  # a whole number of batches per core
    (dx, dy) = grid.sampling
    kx = xp.fft.fftfreq(nx, dx)
    ky = xp.fft.rfftfreq(ny, dy)
    k2 = kx[:, None] ** 2 + ky[None, :] ** 2
    tables = xp.stack([
        (POTENTIAL_PREFACTOR / (dx * dy)) * scattering_factors.scattering_factor_of_k2(name, k2, parametrization)
        for name in species_names
    ]).astype(xp.float32)
    potential = _projected_potential_kernel(
        xp.asarray(positions[:, :2]), species, slice_index, n_slices, tables, grid, batch, chunk, threads
    )
    return (potential, grid) if return_grid else potential
