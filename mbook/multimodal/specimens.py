"""Cryo specimens: a protein-like cluster of C, N, O and S atoms in vitreous ice.

A frozen-hydrated biological specimen is a weak phase object: light atoms
(Z = 6-16) of a macromolecule, mass density about 1.35 g/cm³, embedded in
amorphous (vitreous) ice of mass density about 0.92 g/cm³ (Dubochet et al.
1988). The contrast comes from the difference of the two: a few % of the
phase the ice alone gives.

- :func:`protein_cluster`: a globular blob (a union of a few overlapping
  spheres, seeded) filled at random with non-hydrogen atoms at a protein's
  number density and composition. Hydrogens are left out of the protein
  (their mass is folded into the density; they scatter weakly).
- :func:`vitreous_ice`: oxygens by random sequential addition
  (:func:`mbook.electron.structures.amorphous`, O-O at least 2.5 Å) at the
  ice's mass density, each with two hydrogens at 0.957 Å and 104.5°, randomly
  oriented.
- :func:`cryo_specimen`: the protein in the middle of an ice slab of the
  given thickness, with the ice taken away where the protein is.

Atoms are :class:`ase.Atoms` on the host (rule 5 of :mod:`mbook`: ase has no
device arrays); random draws come from seeded :func:`numpy.random.default_rng`.
The potential slices computed from them
(:func:`mbook.electron.potentials.projected_potential`) land on the device.

Examples
--------
>>> from mbook.multimodal import specimens
>>> atoms = specimens.cryo_specimen(extent=(24.0, 24.0), thickness=16.0, radius=6.0, seed=0)
>>> sorted(set(atoms.get_chemical_symbols()))
['C', 'H', 'N', 'O']
>>> round(specimens.mass_density(specimens.vitreous_ice((20.0, 20.0, 20.0), seed=1)), 2)
0.92
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_masses, atomic_numbers

from mbook.core import checks
from mbook.electron import structures

AVOGADRO = 6.02214076e23  # 1/mol
ICE_DENSITY = 0.92  # g/cm³, vitreous (low-density amorphous) ice
WATER_MASS = 18.015  # g/mol
PROTEIN_DENSITY = 1.35  # g/cm³, a typical protein's (Fischer et al. 2004)
#: Non-hydrogen composition of an average protein, by number (C5 N1.4 O1.5 S0.04 per 8 H).
PROTEIN_COMPOSITION = {"C": 5.0, "N": 1.4, "O": 1.5, "S": 0.04}
#: Mass per non-hydrogen atom of a protein, its hydrogens included [g/mol].
PROTEIN_MASS_PER_ATOM = (5.0 * 12.011 + 8 * 1.008 + 1.4 * 14.007 + 1.5 * 15.999 + 0.04 * 32.06) / 7.94
OH_BOND, HOH_ANGLE = 0.957, np.deg2rad(104.5)  # Å, rad: the water molecule


def mass_density(atoms: Atoms) -> float:
    """Mass density of ``atoms`` in their cell [g/cm³] (a host computation on ase's arrays)."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    volume = abs(np.linalg.det(np.asarray(atoms.cell, float)))  # Å³
    return float(np.sum(atoms.get_masses()) / AVOGADRO / (volume * 1e-24))


def _blob_centres(radius, seed):
    """Centres and radii of 4 spheres whose union is a globular, not quite round, blob [Å]."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(scale=0.25 * radius, size=(4, 3))
    offsets -= offsets.mean(axis=0)
    radii = radius * rng.uniform(0.7, 0.85, size=4)
    return offsets, radii


def _inside_blob(points, centre, offsets, radii, margin=0.0):
    distance = np.linalg.norm(points[:, None, :] - (centre + offsets)[None], axis=-1)
    return np.any(distance < radii[None] + margin, axis=1)


def protein_cluster(radius, *, centre, cell, seed, min_distance=1.4) -> Atoms:
    """A globular protein-like cluster of C, N, O and S atoms (no hydrogens).

    Parameters
    ----------
    radius : float
        Overall radius of the blob [Å] (a union of four spheres of 0.7-0.85
        this radius, offsets of about a quarter of it).
    centre : (float, float, float)
        Its centre [Å].
    cell : (float, float, float)
        Orthorhombic cell [Å]; the blob must fit in it.
    seed : int
        Seed of the shape, positions and elements.
    min_distance : float
        Closest approach of two atoms [Å] (a covalent bond is ~1.5 Å).

    Returns
    -------
    ase.Atoms
        At :data:`PROTEIN_DENSITY` (hydrogen mass included), elements drawn by
        :data:`PROTEIN_COMPOSITION`.
    """
    radius = checks.check_positive_number(radius, "radius")
    cell = np.asarray(checks.check_positive(cell, "cell", 3))
    centre = np.array([checks.check_number(c, "centre") for c in checks.as_tuple(centre, "centre", 3)])
    seed = checks.check_seed(seed)
    if np.any(centre - radius < 0) or np.any(centre + radius > cell):
        raise ValueError(f"the protein of radius {radius} Å at centre {centre.tolist()} does not fit the "
                         f"cell {cell.tolist()} Å")
    offsets, radii = _blob_centres(radius, seed)
    box = np.full(3, 2.0 * radius)
    density = PROTEIN_DENSITY * 12.011 / PROTEIN_MASS_PER_ATOM  # carbon stand-ins at the atom number density
    filler = structures.amorphous("C", extent=tuple(box), density=density, min_distance=min_distance, seed=seed)
    points = filler.positions - radius + centre
    keep = _inside_blob(points, centre, offsets, radii)
    rng = np.random.default_rng([seed, 1])
    names = list(PROTEIN_COMPOSITION)
    weights = np.array(list(PROTEIN_COMPOSITION.values()))
    symbols = rng.choice(names, size=int(keep.sum()), p=weights / weights.sum())
    return Atoms(list(symbols), positions=points[keep], cell=cell, pbc=True)


def _rotations(n, rng):
    """``n`` uniformly random rotation matrices (from unit quaternions), host arrays."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def vitreous_ice(cell, *, seed, density=ICE_DENSITY, min_distance=2.5) -> Atoms:
    """Amorphous water of the given mass density filling ``cell``.

    Oxygens by random sequential addition (no two closer than
    ``min_distance``; liquid water's first O-O peak is at 2.8 Å), then two
    hydrogens per oxygen in a randomly rotated water molecule. A host
    computation (ase, NumPy).

    Parameters
    ----------
    cell : (float, float, float)
        Orthorhombic cell [Å].
    seed : int
        Seed of the positions and orientations.
    density : float
        Mass density [g/cm³]; 0.92 for vitreous ice.
    min_distance : float
        Closest approach of two oxygens [Å].

    Returns
    -------
    ase.Atoms
        Periodic, every atom wrapped into the cell.
    """
    cell = checks.check_positive(cell, "cell", 3)
    density = checks.check_number(density, "density", lower=0, lower_inclusive=False, upper=2.0, units="g/cm³",
                                  hint="0.92 for vitreous ice")
    oxygen_density = density * atomic_masses[atomic_numbers["O"]] / WATER_MASS
    oxygens = structures.amorphous("O", extent=cell, density=oxygen_density, min_distance=min_distance, seed=seed)
    n = len(oxygens)
    rng = np.random.default_rng([seed, 2])
    half = HOH_ANGLE / 2
    local = OH_BOND * np.array([[np.sin(half), 0.0, np.cos(half)], [-np.sin(half), 0.0, np.cos(half)]])
    hydrogens = oxygens.positions[:, None, :] + np.einsum("nij,hj->nhi", _rotations(n, rng), local)
    atoms = Atoms(["O"] * n + ["H"] * (2 * n), positions=np.concatenate([oxygens.positions,
                                                                           hydrogens.reshape(-1, 3)]),
                  cell=cell, pbc=True)
    atoms.wrap()
    return atoms


GOLD_LATTICE = 4.078  # Å, fcc


def gold_cluster(radius, *, centre, cell) -> Atoms:
    """A roughly spherical fcc gold cluster (a fiducial marker, as in cryo-electron tomography).

    Parameters
    ----------
    radius : float
        [Å]; atoms of bulk gold within it are kept.
    centre : (float, float, float)
        [Å].
    cell : (float, float, float)
        The cell to put it in [Å].

    Returns
    -------
    ase.Atoms
    """
    radius = checks.check_positive_number(radius, "radius")
    centre = np.array([checks.check_number(c, "centre") for c in checks.as_tuple(centre, "centre", 3)])
    n = int(np.ceil(radius / GOLD_LATTICE)) + 1
    crystal = bulk("Au", "fcc", a=GOLD_LATTICE, cubic=True).repeat((2 * n,) * 3)
    points = crystal.positions - n * GOLD_LATTICE
    keep = np.linalg.norm(points, axis=1) <= radius
    return Atoms(["Au"] * int(keep.sum()), positions=points[keep] + centre, cell=checks.check_positive(cell, "cell", 3),
                 pbc=True)


def cryo_specimen(*, extent, thickness, radius, seed, ice_density=ICE_DENSITY, fiducials=0,
                  fiducial_radius=4.0) -> Atoms:
    """A protein-like cluster in the middle of a slab of vitreous ice.

    Parameters
    ----------
    extent : (float, float)
        Lateral cell size [Å].
    thickness : float
        Ice thickness, the cell's z length [Å]; at least ``2 * radius + 2``.
    radius : float
        Protein radius [Å] (:func:`protein_cluster`).
    seed : int
        Seed of the protein and of the ice.
    ice_density : float
        [g/cm³].
    fiducials : int
        Gold clusters (:func:`gold_cluster`) placed at random beside the
        protein, in the middle half of the cell (where a scan sees them) at
        mid-depth: strong Z-contrast markers for HAADF.
    fiducial_radius : float
        Their radius [Å].

    Returns
    -------
    ase.Atoms
        The protein's atoms, the fiducials', then the ice's, whose molecules
        are removed where their oxygen lies within 1.5 Å of the protein's
        blob or of a fiducial. A host object.

    Raises
    ------
    ValueError
        When the protein does not fit the slab or the cell.
    """
    extent = checks.check_positive(extent, "extent", 2)
    thickness = checks.check_positive_number(thickness, "thickness")
    radius = checks.check_positive_number(radius, "radius")
    seed = checks.check_seed(seed)
    ice_density = checks.check_number(ice_density, "ice_density", lower=0, lower_inclusive=False, upper=2.0,
                                      units="g/cm³")
    if thickness < 2 * radius + 2 or min(extent) < 2 * radius + 2:
        raise ValueError(f"thickness ({thickness} Å) and extent ({extent} Å) must exceed the protein's diameter "
                         f"+ 2 Å = {2 * radius + 2} Å")
    cell = (*extent, thickness)
    centre = np.array(cell) / 2
    protein = protein_cluster(radius, centre=centre, cell=cell, seed=seed)
    ice = vitreous_ice(cell, seed=seed + 1, density=ice_density)
    offsets, radii = _blob_centres(radius, seed)
    fiducials = checks.check_count(fiducials, "fiducials", minimum=0)
    fiducial_radius = checks.check_positive_number(fiducial_radius, "fiducial_radius")
    rng = np.random.default_rng([seed, 3])
    markers, centres = [], []
    # rejection: beside the protein, inside the cell, apart from each other; enough draws for a protein
    # that fills the middle (the HAADF page's: 2.8 % of the middle half is free, and 200 draws missed)
    for _ in range(1000 * fiducials):
        if len(centres) == fiducials:
            break
        trial = np.array([*rng.uniform(np.array(extent) / 4, 3 * np.array(extent) / 4), centre[2]])
        others = [centre] + centres
        gaps = [radius + fiducial_radius + 2] + [2 * fiducial_radius + 2] * len(centres)
        if all(np.linalg.norm(trial - o) > g for o, g in zip(others, gaps)):
            centres.append(trial)
            markers.append(gold_cluster(fiducial_radius, centre=trial, cell=cell))
    if len(centres) < fiducials:
        raise ValueError(f"placed only {len(centres)} of {fiducials} fiducials of radius {fiducial_radius} Å "
                         f"beside the protein in a cell of {extent} Å: enlarge the cell")
    n = int(np.sum(np.array(ice.get_chemical_symbols()) == "O"))
    clash = _inside_blob(ice.positions[:n], centre, offsets, radii, margin=1.5)
    for c in centres:
        clash |= np.linalg.norm(ice.positions[:n] - c, axis=1) < fiducial_radius + 1.5
    keep = np.concatenate([~clash, np.repeat(~clash, 2)])  # the molecule's two H follow their O
    specimen = protein
    for marker in markers:
        specimen = specimen + marker
    return specimen + ice[keep]
