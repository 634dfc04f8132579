"""Specimen builders: geometry and density."""

import numpy as np
import pytest
from ase.geometry import get_distances

from mbook.electron import structures


def test_silicon_110_dumbbells_are_1_36_angstrom_apart():
    columns = [xy for xy, _ in structures.column_positions(structures.silicon_110())]
    xy = np.array(columns)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 99
    assert d.min() == pytest.approx(5.431 / 4, abs=0.01)  # a/4: the dumbbell spacing along [001]


def test_srtio3_columns():
    columns = dict((xy, el) for xy, el in structures.column_positions(structures.srtio3()))
    assert columns[(0.0, 0.0)] == "Sr" and columns[(1.95, 1.95)] == "O,Ti" and columns[(1.95, 0.0)] == "O"


def test_amorphous_density_and_spacing():
    atoms = structures.amorphous("C", extent=(15, 15, 8), density=2.0, min_distance=1.4, seed=3)
    mass_density = atoms.get_masses().sum() / 6.02214076e23 / (15 * 15 * 8 * 1e-24)
    assert mass_density == pytest.approx(2.0, rel=0.01)
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)
    assert d[np.triu_indices(len(atoms), 1)].min() >= 1.4
    again = structures.amorphous("C", extent=(15, 15, 8), density=2.0, min_distance=1.4, seed=3)
    np.testing.assert_array_equal(atoms.positions, again.positions)


def test_impossible_packing_is_refused_before_any_work():
    # 54 atoms of 2 Å fill 1.05 of the cell: past the jamming limit of random sequential addition.
    with pytest.raises(ValueError, match=r"fill 1\.047 of the cell.* jams at 0\.384"):
        structures.amorphous("C", extent=(6, 6, 6), density=5.0, min_distance=2.0, seed=0)
    with pytest.raises(ValueError, match="density=1000000.0"):  # no hang: refused from the numbers
        structures.amorphous("C", extent=(10, 10, 10), density=1e6, min_distance=1.4, seed=0)


def test_amorphous_gives_up_after_max_rounds_with_the_count():
    with pytest.raises(ValueError, match=r"placed only \d+ of \d+ C atoms .* max_rounds=1 "):
        structures.amorphous("C", extent=(10, 10, 10), density=4.0, min_distance=1.4, seed=0, max_rounds=1)


def test_supported_particle_is_a_gold_octahedron_on_the_film():
    atoms = structures.supported_particle("Au", length=6, extent=(22.0, 20.0), support_thickness=8.0, seed=1)
    gold = np.array(atoms.get_chemical_symbols()) == "Au"
    assert gold.sum() == 140  # the octahedron of 6 atoms an edge with one layer cut from each corner
    # fcc gold at ase's reference lattice constant, 4.08 Å: nearest neighbours at a/√2 = 2.885 Å.
    _, d = get_distances(atoms.positions[gold])
    assert d[np.triu_indices(gold.sum(), 1)].min() == pytest.approx(4.08 / np.sqrt(2), rel=1e-9)
    # Centred in x and y, the film below it by at least min_distance, nothing outside the cell.
    centre = (atoms.positions[gold, :2].min(axis=0) + atoms.positions[gold, :2].max(axis=0)) / 2
    np.testing.assert_allclose(centre, [11.0, 10.0], atol=1e-9)
    film = atoms.positions[~gold]
    assert film[:, 2].max() < 8.0 and atoms.positions[gold, 2].min() == pytest.approx(8.0 + 1.4)
    np.testing.assert_allclose(np.ptp(atoms.positions[gold], axis=0), 4 * 4.08)  # 16.32 Å: not wrapped
    mass_density = atoms.get_masses()[~gold].sum() / 6.02214076e23 / (22 * 20 * 8 * 1e-24)
    assert mass_density == pytest.approx(2.0, rel=0.01)
    assert np.all(atoms.positions >= 0) and np.all(atoms.positions < atoms.cell.lengths())
    again = structures.supported_particle("Au", length=6, extent=(22.0, 20.0), support_thickness=8.0, seed=1)
    np.testing.assert_array_equal(atoms.positions, again.positions)


def test_supported_particle_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match=r"symbol must be an fcc element.*'Fe' \(bcc\)"):
        structures.supported_particle("Fe", length=4, extent=(20.0, 20.0), seed=0)
    # 6 atoms an edge of gold are 16.3 Å wide: a 19 Å cell leaves less than 3 Å between its images.
    with pytest.raises(ValueError, match=r"at least .*19\.32.* length=6 of Au, got \[19\.0, 30\.0\]"):
        structures.supported_particle("Au", length=6, extent=(19.0, 30.0), seed=0)


def test_graphene_bonds_are_1_42_angstrom():
    atoms = structures.graphene((2, 2))
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)
    nearest = np.sort(d + np.eye(len(atoms)) * 99, axis=1)[:, :3]
    np.testing.assert_allclose(nearest, 2.46 / np.sqrt(3), atol=1e-9)  # three neighbours each


def test_specimens_are_host_objects_the_same_on_every_device(device):
    """Rule 5: ase.Atoms live on the host, and a seed gives the same specimen whatever the device."""
    from ase import Atoms

    from mbook.core import backend

    atoms = structures.amorphous("C", extent=(8, 8, 4), density=2.0, min_distance=1.4, seed=3)
    assert isinstance(atoms, Atoms) and isinstance(atoms.positions, np.ndarray)
    backend.set_device("cpu")
    again = structures.amorphous("C", extent=(8, 8, 4), density=2.0, min_distance=1.4, seed=3)
    np.testing.assert_array_equal(atoms.positions, again.positions)
