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
    repeat = checks.check_gpts(repeat, 3)  # positive integers, one per axis
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
    nx, ny = checks.check_gpts(repeat, 2)
    return _repeat(cell, (nx, ny, 1))


def isolated_atom(symbol: str, *, extent=8.0, thickness=2.0) -> Atoms:
    """One atom at the centre of an ``extent`` × ``extent`` × ``thickness`` Å cell."""
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element symbol {symbol!r}")
    extent = checks.check_positive(extent, "extent", 1)[0]
    thickness = checks.check_positive(thickness, "thickness", 1)[0]
    return Atoms(symbol, positions=[(extent / 2, extent / 2, thickness / 2)], cell=[extent, extent, thickness],
                 pbc=True)


def amorphous(symbol: str, *, extent, density, min_distance, seed) -> Atoms:
    """Random atoms of one element at a given mass density, no two closer than ``min_distance``.

    Random sequential addition with rejection under periodic boundaries: a
    simple model of an amorphous film (e.g. carbon at 2.0 g/cm³, 1.4 Å).

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

    Raises
    ------
    ValueError
        When the density cannot be reached with the minimum distance (the
        packing gets stuck), with the number of atoms placed.
    """
    extent = np.asarray(checks.check_positive(extent, "extent", 3))
    density = checks.check_positive(density, "density", 1)[0]
    min_distance = checks.check_positive(min_distance, "min_distance", 1)[0]
    mass = atomic_masses[atomic_numbers[symbol]]  # g/mol
    n_atoms = int(round(density * np.prod(extent) * 1e-24 / mass * 6.02214076e23))
    rng = np.random.default_rng(seed)
    positions = np.empty((n_atoms, 3))
    placed, attempts = 0, 0
    while placed < n_atoms:
        attempts += 1
        if attempts > 200 * n_atoms:
            raise ValueError(
                f"placed only {placed} of {n_atoms} {symbol} atoms at min_distance={min_distance} Å; "
                f"lower the density ({density} g/cm³) or the minimum distance"
            )
        trial = rng.uniform(0, extent)
        delta = positions[:placed] - trial
        delta -= extent * np.round(delta / extent)
        if placed == 0 or np.min(np.einsum("ij,ij->i", delta, delta)) >= min_distance**2:
            positions[placed] = trial
            placed += 1
    return Atoms(symbol * n_atoms if len(symbol) == 1 else [symbol] * n_atoms, positions=positions,
                 cell=extent, pbc=True)


def column_positions(atoms: Atoms, *, decimals=2):
    """Distinct (x, y) positions of the atomic columns seen along z [Å], with their elements.

    Returns
    -------
    list of ((float, float), str)
        Column position and the element(s) in it, e.g. ``((1.95, 1.95), "Ti,O")``.
    """
    columns = {}
    for (x, y, _), symbol in zip(atoms.positions, atoms.get_chemical_symbols()):
        key = (round(float(x), decimals), round(float(y), decimals))
        columns.setdefault(key, set()).add(symbol)
    return [(key, ",".join(sorted(value))) for key, value in sorted(columns.items())]
