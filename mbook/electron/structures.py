"""Specimens as :class:`ase.Atoms` in orthorhombic cells, ready for slicing.

The beam travels along +z. Every builder returns atoms wrapped into the cell
``[0, a) × [0, b) × [0, c)``, which is what :mod:`mbook.electron.potentials` expects.

Specimens are :class:`ase.Atoms`, host objects (rule 5 of :mod:`mbook`): ase
has no device arrays. They are built on the host, random positions included
(drawn from a seeded :func:`numpy.random.default_rng`, so a seed gives the same
specimen on every device); what is computed from them, the potential slices of
:func:`mbook.electron.potentials.projected_potential`, lands on the selected
device.

Examples
--------
>>> from mbook.electron import structures
>>> atoms = structures.srtio3(repeat=(2, 2, 1))
>>> len(atoms), atoms.cell.lengths().round(3).tolist()
(20, [7.81, 7.81, 3.905])
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.build import bulk, surface
from ase.data import atomic_masses, atomic_numbers

from mbook.core import checks

SRTIO3_LATTICE = 3.905  # Å, cubic perovskite at room temperature
SILICON_LATTICE = 5.431  # Å, diamond cubic
GRAPHENE_LATTICE = 2.46  # Å


def _repeat(atoms: Atoms, repeat) -> Atoms:
    repeat = checks.check_gpts(repeat, 3, name="repeat")  # positive integers, one per axis
    atoms = atoms.repeat(repeat)
    atoms.wrap()
    return atoms


def srtio3(repeat=(1, 1, 1)) -> Atoms:
    """SrTiO3 viewed along [001]: Sr and Ti-O columns alternate, O columns between.

    Parameters
    ----------
    repeat : (int, int, int)
        Unit cells along x, y, z (the cell is 3.905 Å cubic).
    """
    cell = Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[SRTIO3_LATTICE] * 3,
        pbc=True,
    )
    return _repeat(cell, repeat)


def silicon_110(repeat=(1, 1, 1)) -> Atoms:
    """Silicon viewed along [110]: the "dumbbell" projection, 1.36 Å pairs.

    The orthorhombic cell is a/√2 × a × a/√2 (x along [1-10], y along [001],
    z along [110]); ``repeat`` multiplies it.
    """
    atoms = surface(bulk("Si", "diamond", a=SILICON_LATTICE, cubic=True), (1, 1, 0), 1, periodic=True)
    return _repeat(atoms, repeat)


def graphene(repeat=(1, 1), *, thickness=2.0) -> Atoms:
    """A graphene sheet in the rectangular cell a × a√3 (4 atoms, C-C 1.42 Å), normal to z.

    Parameters
    ----------
    repeat : (int, int)
        Cells along x and y.
    thickness : float
        Cell length along z [Å]; the sheet sits at its middle.
    """
    a = GRAPHENE_LATTICE
    b = a * math.sqrt(3)
    z = checks.check_positive(thickness, "thickness", 1)[0] / 2
    xy = [(0, 0), (0, b / 3), (a / 2, b / 2), (a / 2, 5 * b / 6)]
    cell = Atoms("C4", positions=[(x, y, z) for x, y in xy], cell=[a, b, 2 * z], pbc=True)
    nx, ny = checks.check_gpts(repeat, 2, name="repeat")
    return _repeat(cell, (nx, ny, 1))


def isolated_atom(symbol: str, *, extent=8.0, thickness=2.0) -> Atoms:
    """One atom at the centre of an ``extent`` × ``extent`` × ``thickness`` Å cell."""
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element symbol {symbol!r}")
    extent = checks.check_positive(extent, "extent", 1)[0]
    thickness = checks.check_positive(thickness, "thickness", 1)[0]
    return Atoms(symbol, positions=[(extent / 2, extent / 2, thickness / 2)], cell=[extent, extent, thickness],
                 pbc=True)


#: Packing fraction (π/6) n d³ / V at which random sequential addition of hard spheres jams in 3D
#: (0.3841; Torquato, Uche and Stillinger, Phys. Rev. E 74, 061308, 2006): past it no placement can finish.
RSA_JAMMING = 0.384


def amorphous(symbol: str, *, extent, density, min_distance, seed, max_rounds: int = 10_000) -> Atoms:
    """Random atoms of one element at a given mass density, no two closer than ``min_distance``.

    Random sequential addition under periodic boundaries: a simple model of an amorphous film (e.g.
    carbon at 2.0 g/cm³, 1.4 Å). Candidates are drawn in batches and tested against the atoms placed so
    far with a periodic k-d tree, then against each other in the order drawn, so the result is the
    sequential process's with the batch's rejected draws skipped. Runs on the host (ase, SciPy k-d tree).

    Parameters
    ----------
    symbol : str
        Element.
    extent : (float, float, float)
        Cell size [Å].
    density : float
        Mass density [g/cm³].
    min_distance : float
        Smallest allowed interatomic distance [Å].
    seed : int
        Seed of the random positions.
    max_rounds : int
        Most batches of candidates to draw before giving up.

    Raises
    ------
    ValueError
        Before any work, when the packing fraction asked for, (π/6) n d³ / V, exceeds the jamming limit
        of random sequential addition (:data:`RSA_JAMMING`); and when ``max_rounds`` batches did not
        place every atom, with the number placed.
    """
    from scipy.spatial import cKDTree

    extent = np.asarray(checks.check_positive(extent, "extent", 3))
    density = checks.check_positive(density, "density", 1)[0]
    min_distance = checks.check_positive(min_distance, "min_distance", 1)[0]
    max_rounds = checks.check_count(max_rounds, "max_rounds")
    if symbol not in atomic_numbers:
        raise ValueError(f"symbol must be a chemical element, got {symbol!r}")
    mass = atomic_masses[atomic_numbers[symbol]]  # g/mol
    n_atoms = int(round(density * np.prod(extent) * 1e-24 / mass * 6.02214076e23))
    fraction = n_atoms * math.pi / 6 * min_distance**3 / float(np.prod(extent))
    if fraction > RSA_JAMMING:
        raise ValueError(
            f"{n_atoms} {symbol} atoms at density={density} g/cm³ with min_distance={min_distance} Å fill "
            f"{fraction:.3f} of the cell; random sequential addition jams at {RSA_JAMMING}: lower the density "
            f"or the minimum distance")
    rng = checks.rng(seed)
    placed = np.empty((0, 3))
    for _ in range(max_rounds):
        need = n_atoms - len(placed)
        if need == 0:
            break
        candidates = rng.uniform(0, extent, size=(max(2 * need, 256), 3)) % extent  # boxsize wants [0, L)
        if len(placed):
            nearest, _ = cKDTree(placed, boxsize=extent).query(candidates, distance_upper_bound=min_distance)
            candidates = candidates[np.isinf(nearest)]
        # In the order drawn: a candidate too close to an earlier accepted one is rejected.
        pairs = cKDTree(candidates, boxsize=extent).query_pairs(min_distance, output_type="ndarray")
        rejected = np.zeros(len(candidates), dtype=bool)
        for i, j in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]:
            if not rejected[i]:
                rejected[j] = True
        placed = np.concatenate([placed, candidates[~rejected][:need]])
    if len(placed) < n_atoms:
        raise ValueError(
            f"placed only {len(placed)} of {n_atoms} {symbol} atoms at min_distance={min_distance} Å in "
            f"max_rounds={max_rounds} batches; lower the density ({density} g/cm³) or the minimum distance")
    return Atoms(symbol * n_atoms if len(symbol) == 1 else [symbol] * n_atoms, positions=placed,
                 cell=extent, pbc=True)


def supported_particle(symbol: str = "Au", *, length: int, extent, support_thickness: float = 10.0,
                       density: float = 2.0, min_distance: float = 1.4, seed) -> Atoms:
    """An fcc nanoparticle resting on an amorphous carbon film: a specimen without a period.

    The particle is :func:`ase.cluster.Octahedron` with ``length`` atoms along each edge of the complete
    octahedron and its corners cut by ``(length - 1) // 3`` layers (a truncated octahedron, the shape of
    small gold and platinum particles), at the element's own lattice constant, seen down [001] and
    centred in x and y. Below it, along the beam, lies a film from :func:`amorphous` (carbon at
    ``density`` and ``min_distance``); the particle's lowest layer sits ``min_distance`` above the film's
    upper face (``z = support_thickness``). The cell is periodic in x and y as every specimen here is,
    but nothing in it repeats: the particle's periodic images are one cell apart, at least 3 Å (more
    than a metal-metal bond) beyond its width.

    Parameters
    ----------
    symbol : str
        An element whose ase reference state is fcc (Au, Pt, Ag, Pd, Cu, Ni, Al, ...).
    length : int
        Atoms along each edge of the complete octahedron (ase's ``length``), 2 to 30 (for gold, 4: 38
        atoms, 0.8 nm wide; 6: 140 atoms, 1.6 nm; 8: 314 atoms, 2.0 nm).
    extent : (float, float)
        Cell size in x and y [Å]; at least the particle's width plus 3 Å on each axis.
    support_thickness : float
        Thickness of the film [Å].
    density : float
        Mass density of the film [g/cm³].
    min_distance : float
        Smallest distance between the film's atoms, and the gap between film and particle [Å].
    seed : int
        Seed of the film's random atoms (the particle is not random).

    Returns
    -------
    ase.Atoms
        Film then particle, inside a cell ``extent[0] × extent[1] × (support_thickness +
        min_distance + particle height + min_distance)`` Å.

    Raises
    ------
    ValueError
        Before any work, for an element that is not fcc and for an ``extent`` too small for the particle,
        with the width it needs; as :func:`amorphous` for a film it cannot pack.

    Examples
    --------
    >>> atoms = supported_particle("Au", length=4, extent=(12.0, 12.0), seed=0)
    >>> sorted(set(atoms.get_chemical_symbols())), atoms.get_chemical_symbols().count("Au")
    (['Au', 'C'], 38)
    """
    from ase.cluster import Octahedron
    from ase.data import reference_states

    if not isinstance(symbol, str) or symbol not in atomic_numbers:
        raise ValueError(f"symbol must be a chemical element, got {symbol!r}")
    state = reference_states[atomic_numbers[symbol]]
    if state is None or state.get("symmetry") != "fcc":
        found = None if state is None else state.get("symmetry")
        raise ValueError(f"symbol must be an fcc element (Au, Pt, Ag, Pd, Cu, Ni, Al, ...), got {symbol!r} ({found})")
    length = checks.check_count(length, "length", minimum=2, maximum=30)
    extent = np.asarray(checks.check_positive(extent, "extent", 2))
    thickness = checks.check_positive(support_thickness, "support_thickness", 1)[0]
    min_distance = checks.check_positive(min_distance, "min_distance", 1)[0]
    particle = Octahedron(symbol, length=length, cutoff=(length - 1) // 3)
    positions = particle.positions - particle.positions.min(axis=0)
    width = np.ptp(positions, axis=0)
    if np.any(extent < width[:2] + 3.0):
        needed = np.round(width[:2] + 3.0, 2).tolist()
        raise ValueError(f"extent must be at least the particle's width plus 3 Å, {needed} Å for length={length} "
                         f"of {symbol}, got {extent.tolist()} Å")
    film = amorphous("C", extent=(extent[0], extent[1], thickness), density=density, min_distance=min_distance,
                     seed=seed)
    positions[:, :2] += (extent - width[:2]) / 2
    positions[:, 2] += thickness + min_distance
    height = thickness + 2 * min_distance + width[2]
    atoms = film + Atoms(particle.get_chemical_symbols(), positions=positions)
    atoms.set_cell([extent[0], extent[1], height])
    atoms.pbc = True
    return atoms


def column_positions(atoms: Atoms, *, decimals=2):
    """Distinct (x, y) positions of the atomic columns seen along z [Å], with their elements.

    Returns
    -------
    list of ((float, float), str)
        Column position and the element(s) in it, e.g. ``((1.95, 1.95), "Ti,O")``.
    """
    if not isinstance(atoms, Atoms):
        raise TypeError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    decimals = checks.check_count(decimals, "decimals", minimum=0)
    columns = {}
    for (x, y, _), symbol in zip(atoms.positions, atoms.get_chemical_symbols()):
        key = (round(float(x), decimals), round(float(y), decimals))
        columns.setdefault(key, set()).add(symbol)
    return [(key, ",".join(sorted(value))) for key, value in sorted(columns.items())]
