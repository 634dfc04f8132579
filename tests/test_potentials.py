"""Projected atomic potentials and frozen phonons against published and analytic values."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, graphene, make_supercell
from scipy import constants
from scipy.special import k0

from mbook.core import backend, strict
from mbook.electron import phonons, potentials, scattering_factors

H = backend.asnumpy  # the one way to the host, for np.testing

A0 = constants.physical_constants["Bohr radius"][0] * 1e10  # Å

# Peng, Ren, Dudarev & Whelan (1996), Acta Cryst. A52, 257, table for 0 <= s <= 2 1/Å
# (= International Tables Vol. C, table 4.3.2.2): f_e(s) = Σ a_i exp(-b_i s²), so f_e(0) = Σ a_i [Å].
# The a_i as distributed, identically, in Lobato's MULTEM (atomic_data.hpp, v2.2.3) and in abTEM
# (peng_low.json). An independent fit of an independent calculation: the tables must agree at k = 0.
PENG_1996_A = {
    "C": (0.0893, 0.2563, 0.7570, 1.0487, 0.3575),
    "Si": (0.2519, 0.6372, 1.3795, 2.5082, 1.0500),
    "Ti": (0.3825, 1.2598, 2.0008, 3.0617, 2.0694),
    "Sr": (0.6703, 1.4926, 3.3368, 4.4600, 3.1501),
    "Au": (0.9674, 1.8916, 3.3993, 3.0524, 1.2607),
}


def single_atom(symbol, position, cell):
    return Atoms(symbol, positions=[position], cell=cell)


def kirkland_projected_potential(symbol, r):
    """Kirkland (2010), appendix C: the closed-form projected potential of his f_e fit [V·Å].

    v_z(r) = 4π² a0 e Σ a_i K0(2π r √b_i) + 2π² a0 e Σ (c_i / d_i) exp(-π² r² / d_i):
    an independent route (Bessel functions in real space, no FFT) to the same potential.
    """
    table = scattering_factors.load_table("kirkland")[symbol]
    a0e = potentials.POTENTIAL_PREFACTOR / (2 * np.pi)
    v = 0.0
    for a, b, c, d in zip(table["a"], table["b"], table["c"], table["d"]):
        v = v + 4 * np.pi**2 * a0e * a * k0(2 * np.pi * r * np.sqrt(b))
        v = v + 2 * np.pi**2 * a0e * c / d * np.exp(-np.pi**2 * r**2 / d)
    return v


# --------------------------------------------------------------------------- the tables


@pytest.mark.parametrize("name, key", [("kirkland", "kirkland2010"), ("lobato", "lobato2014")])
def test_tables_cover_hydrogen_to_lawrencium_and_cite_a_bib_entry(name, key):
    raw = json.loads((scattering_factors.DATA_DIR / f"{name}.json").read_text())
    assert [entry["Z"] for entry in raw["elements"].values()] == list(range(1, 104))
    assert list(raw["elements"])[0] == "H" and list(raw["elements"])[-1] == "Lr"
    bib = (Path(__file__).parents[1] / "references.bib").read_text()
    assert raw["bibtex_key"] == key and re.search(rf"@\w+\{{{key},", bib)


def test_table_spot_values():
    """A few parameters against the published tables (catches a shuffled column or element)."""
    # Kirkland (2010), table C.4, hydrogen: a1, b1, ..., d3.
    h = scattering_factors.load_table("kirkland")["H"]
    np.testing.assert_allclose(h["a"], [4.20298324e-3, 6.27762505e-2, 3.00907347e-2], rtol=1e-9)
    np.testing.assert_allclose(h["d"], [4.38854001, 4.03884823e-1, 1.44490166], rtol=1e-9)
    # Lobato & Van Dyck (2014), carbon: a1 and b5.
    c = scattering_factors.load_table("lobato")["C"]
    assert c["a"][0] == pytest.approx(124.466088621343, rel=1e-12)
    assert c["b"][4] == pytest.approx(0.0768976818478339, rel=1e-12)


def test_prefactor_is_kirklands_value():
    # Kirkland (2010): a0 = 0.5292 Å and e = 14.4 V·Å give 2π a0 e = 47.88 V·Å².
    assert potentials.POTENTIAL_PREFACTOR == pytest.approx(2 * np.pi * 0.5292 * 14.40, rel=2e-4)


# --------------------------------------------------------------------------- scattering factors


@pytest.mark.parametrize("parametrization", scattering_factors.PARAMETRIZATIONS)
def test_hydrogen_forward_scattering_factor_is_the_bohr_radius(parametrization):
    """f_e(0) = Z <r²> / (3 a0) (Ibers 1958; International Tables C, sec. 4.3.1); <r²> = 3 a0² for 1s."""
    assert scattering_factors.scattering_factor("H", 0.0, parametrization) == pytest.approx(A0, rel=2e-3)


@pytest.mark.parametrize("parametrization", scattering_factors.PARAMETRIZATIONS)
@pytest.mark.parametrize("symbol", sorted(PENG_1996_A))
def test_forward_scattering_factor_matches_peng_1996(symbol, parametrization):
    expected = sum(PENG_1996_A[symbol])
    assert scattering_factors.scattering_factor(symbol, 0.0, parametrization) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("symbol", ["H", "C", "Si", "Ti", "Cu", "Sr", "Au", "Pb"])
def test_kirkland_and_lobato_agree_up_to_two_inverse_angstrom(symbol, device):
    k = np.linspace(0.0, 2.0, 101)
    kirkland = H(scattering_factors.scattering_factor(symbol, k, "kirkland"))
    lobato = H(scattering_factors.scattering_factor(symbol, k, "lobato"))
    assert np.max(np.abs(kirkland / lobato - 1)) < 0.02
    assert np.all(np.diff(kirkland) < 0)  # and both fall monotonically with k


def test_scattering_factor_accepts_atomic_numbers_and_keeps_shape(device):
    k = np.linspace(0, 1, 6).reshape(2, 3)
    np.testing.assert_array_equal(H(scattering_factors.scattering_factor(14, k)), H(scattering_factors.scattering_factor("Si", k)))
    assert scattering_factors.scattering_factor("Si", k).shape == (2, 3)
    # A number gives a number, on every device; an array comes back on the selected device.
    assert isinstance(scattering_factors.scattering_factor("Si", 0.5), float)
    assert backend.get_array_module(scattering_factors.scattering_factor("Si", k)) is backend.xp


# --------------------------------------------------------------------------- one atom


@pytest.mark.parametrize("parametrization", scattering_factors.PARAMETRIZATIONS)
@pytest.mark.parametrize("symbol", ["C", "Si", "Sr", "Au"])
def test_single_atom_integrates_to_the_published_forward_scattering_factor(symbol, parametrization, device):
    """Σ v dx dy = 2π a0 e f_e(0): within 1 % of Peng's published f_e(0), to 1e-5 of the table's own."""
    atoms = single_atom(symbol, (3.1, 2.7, 1.0), cell=[6.0, 5.5, 2.0])
    v, grid = potentials.projected_potential(atoms, 0.1, 2.0, parametrization, return_grid=True)
    v = H(v)
    integral = float(np.sum(v, dtype=np.float64)) * grid.sampling[0] * grid.sampling[1]
    own = potentials.POTENTIAL_PREFACTOR * scattering_factors.scattering_factor(symbol, 0.0, parametrization)
    assert integral == pytest.approx(own, rel=1e-5)
    if symbol in PENG_1996_A:
        assert integral == pytest.approx(potentials.POTENTIAL_PREFACTOR * sum(PENG_1996_A[symbol]), rel=0.01)


@pytest.mark.parametrize("symbol", ["C", "Si", "Au"])
def test_matches_kirklands_closed_form_projected_potential_with_second_order_convergence(symbol, device):
    """An atom on a grid point against v_z(r) (with its periodic images) for 0.3 <= r <= 1 Å."""
    cell, errors = 8.0, []
    for sampling in (0.05, 0.025):
        atoms = single_atom(symbol, (4.0, 4.0, 1.0), cell=[cell, cell, 2.0])
        v = H(potentials.projected_potential(atoms, sampling, 2.0)[0]).astype(np.float64)
        x = np.arange(v.shape[0]) * sampling
        dx, dy = np.meshgrid(x - 4.0, x - 4.0, indexing="ij")
        reference = sum(
            kirkland_projected_potential(symbol, np.hypot(dx - i * cell, dy - j * cell))
            for i in range(-2, 3) for j in range(-2, 3)
        )
        ring = (np.hypot(dx, dy) >= 0.3) & (np.hypot(dx, dy) <= 1.0)
        errors.append(np.max(np.abs(v[ring] / reference[ring] - 1)))
    assert errors[0] < 0.03
    assert errors[0] / errors[1] > 3.0  # halving the spacing cuts the error ~4x


def test_off_centre_atom_peaks_at_the_atom_and_is_radially_symmetric(device):
    sampling = 0.05
    i0, j0 = 53, 47  # a grid point near, not at, the centre (80, 80)
    atoms = single_atom("Sr", (i0 * sampling, j0 * sampling, 1.0), cell=[8.0, 8.0, 2.0])
    v = H(potentials.projected_potential(atoms, sampling, 2.0)[0])
    assert np.unravel_index(np.argmax(v), v.shape) == (i0, j0)
    # The 8 symmetric images of one offset (the square grid's symmetries) agree to float32...
    offsets = [(3, 7), (-3, 7), (3, -7), (-3, -7), (7, 3), (-7, 3), (7, -3), (-7, -3)]
    images = [v[i0 + a, j0 + b] for a, b in offsets]
    np.testing.assert_allclose(images, images[0], rtol=1e-5)
    # ...and offsets of one length in different directions ((5, 0), (3, 4), (0, -5)) to 1 %.
    same_radius = [v[i0 + 5, j0], v[i0 + 3, j0 + 4], v[i0, j0 - 5], v[i0 - 4, j0 - 3]]
    np.testing.assert_allclose(same_radius, same_radius[0], rtol=0.01)
    # It falls monotonically away from the atom.
    assert np.all(np.diff(v[i0, j0:j0 + 30]) < 0)


def test_potential_moves_with_the_atom(device):
    """Moving the atom by whole pixels rolls the array; by a fraction, shifts the spectrum's phase."""
    cell, sampling = [6.4, 6.4, 2.0], 0.1
    v0 = H(potentials.projected_potential(single_atom("Ti", (2.0, 3.0, 1.0), cell), sampling, 2.0)[0])
    v1 = H(potentials.projected_potential(single_atom("Ti", (2.5, 2.7, 1.0), cell), sampling, 2.0)[0])
    np.testing.assert_allclose(v1, np.roll(v0, (5, -3), axis=(0, 1)), atol=1e-4 * v0.max())
    shift = (0.0123, 0.0371)
    moved = single_atom("Ti", (2.0 + shift[0], 3.0 + shift[1], 1.0), cell)
    v2 = H(potentials.projected_potential(moved, sampling, 2.0)[0])
    kx = np.fft.fftfreq(64, sampling)
    phase = np.exp(-2j * np.pi * (kx[:, None] * shift[0] + kx[None, :] * shift[1]))
    inner = (np.abs(kx[:, None]) < 4.9) & (np.abs(kx[None, :]) < 4.9)  # all but the Nyquist row/column
    f0, f2 = np.fft.fft2(v0.astype(np.float64)), np.fft.fft2(v2.astype(np.float64))
    np.testing.assert_allclose(f2[inner], (f0 * phase)[inner], atol=1e-5 * np.abs(f0).max())


# --------------------------------------------------------------------------- many atoms, slices


def test_potential_is_linear_in_the_atoms(device):
    cell = [7.0, 6.0, 3.0]
    one = H(potentials.projected_potential(single_atom("O", (1.3, 2.2, 0.5), cell), 0.1, 1.5))
    other = H(potentials.projected_potential(single_atom("Sr", (4.7, 3.9, 1.2), cell), 0.1, 1.5))
    both = H(potentials.projected_potential(
        Atoms("OSr", positions=[(1.3, 2.2, 0.5), (4.7, 3.9, 1.2)], cell=cell), 0.1, 1.5
    ))
    np.testing.assert_allclose(both, one + other, atol=1e-5 * float(both.max()))


def test_each_atom_goes_to_the_slice_that_contains_its_z(device):
    z = [0.0, 0.3, 1.99, 2.0, 4.5, 6.9]
    atoms = Atoms("C6", positions=[(1.0 + i, 2.0, zi) for i, zi in enumerate(z)], cell=[8.0, 4.0, 7.0])
    v, grid = potentials.projected_potential(atoms, 0.1, 2.0, return_grid=True)
    v = H(v)
    assert v.shape == (4, 80, 40)  # ceil(7 / 2) slices; axis 1 along x
    assert potentials.slice_thicknesses(atoms, 2.0) == (2.0, 2.0, 2.0, 1.0)  # plain numbers, on every device
    per_atom = potentials.POTENTIAL_PREFACTOR * scattering_factors.scattering_factor("C", 0.0)
    counts = np.sum(v, axis=(1, 2), dtype=np.float64) * grid.sampling[0] * grid.sampling[1] / per_atom
    np.testing.assert_allclose(counts, [3, 1, 1, 1], rtol=1e-5)


def test_sampling_is_the_largest_spacing_and_the_grid_is_reported():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    v, grid = potentials.projected_potential(atoms, (0.1, 0.2), 5.431, return_grid=True)
    assert grid.gpts == (55, 28) == v.shape[1:]
    assert grid.sampling[0] <= 0.1 and grid.sampling[1] <= 0.2
    assert grid.extent == pytest.approx((5.431, 5.431))
    assert potentials.potential_grid(atoms, (0.1, 0.2)) == grid


def test_perovskite_slices_hold_their_atoms(device):
    """SrTiO3 [001] cut at a/2: the SrO planes and the TiO2 planes alternate."""
    a = 3.905
    fractional = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    sto = Atoms("SrTiO3", scaled_positions=fractional, cell=[a, a, a]) * (2, 2, 2)
    v, grid = potentials.projected_potential(sto, 0.15, a / 2, return_grid=True)
    assert backend.get_array_module(v) is backend.xp  # on the selected device
    v = H(v)
    f0 = {s: potentials.POTENTIAL_PREFACTOR * scattering_factors.scattering_factor(s, 0.0) for s in ("Sr", "Ti", "O")}
    per_slice = np.sum(v, axis=(1, 2), dtype=np.float64) * grid.sampling[0] * grid.sampling[1]
    sro, tio2 = 4 * (f0["Sr"] + f0["O"]), 4 * (f0["Ti"] + 2 * f0["O"])
    np.testing.assert_allclose(per_slice, [sro, tio2] * 2, rtol=1e-5)


def test_slices_built_on_threads_equal_the_serial_ones(monkeypatch, device):
    """The CPU builds one slice per core (the GPU path one after another); the cores must not matter."""
    a = 3.905
    fractional = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    sto = Atoms("SrTiO3", scaled_positions=fractional, cell=[a, a, a]) * (2, 2, 3)
    monkeypatch.setattr(backend, "cpu_threads", lambda: 3)
    threaded = H(potentials.projected_potential(sto, 0.15, a / 2))
    monkeypatch.setattr(backend, "cpu_threads", lambda: 1)
    serial = H(potentials.projected_potential(sto, 0.15, a / 2))
    assert threaded.shape == (6,) + serial.shape[1:]
    np.testing.assert_allclose(threaded, serial, rtol=0, atol=1e-6 * np.abs(serial).max())


def test_slices_built_in_batches_equal_slices_built_one_at_a_time(monkeypatch, device):
    """The slices are an array axis (each slice's atoms padded, the padding masked out): the stack, built in
    one batch, in budget-sized batches, or with a slice's atoms split over passes, equals a per-slice
    reference built here, one call per slice on the atoms of that slice alone (a one-slice cell)."""
    a = 3.905
    fractional = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    sto = Atoms("SrTiO3", scaled_positions=fractional, cell=[a, a, a]) * (2, 2, 3)
    sto.positions[:, 2] += 0.2  # the slices: SrO, TiO2, ..., and two empty ones at the exit
    sto.set_cell([2 * a, 2 * a, 3 * a + 2.0])
    dz = a / 4
    monkeypatch.setattr(backend, "cpu_threads", lambda: 1)  # the batch sizes below, as the GPU path takes them
    plans, kernel = [], potentials._projected_potential_kernel

    def recording(*args):
        plans.append(args[-3:-1])  # (slices a batch, atoms a pass)
        return kernel(*args)

    monkeypatch.setattr(potentials, "_projected_potential_kernel", recording)
    whole = H(potentials.projected_potential(sto, 0.2, dz))
    slice_index = np.floor(np.round(sto.positions[:, 2] / dz, 9)).astype(int)
    reference = np.zeros_like(whole)
    for s in np.unique(slice_index):
        one = sto[slice_index == s]
        one.set_cell([2 * a, 2 * a, dz])
        one.positions[:, 2] = 0.0
        reference[s] = H(potentials.projected_potential(one, 0.2, dz))[0]
    assert whole.shape[0] == 15 and not reference[13:].any()  # 3 a + 2 Å in a/4: a slice in two holds no atoms
    np.testing.assert_allclose(whole, reference, rtol=0, atol=1e-6 * np.abs(reference).max())
    nx, ny = whole.shape[1:]
    nyh = ny // 2 + 1
    fixed = whole.size * 4 + 5 * 4 * nx * nyh  # the output, three tables and two work spectra
    per_slice = 6 * 8 * nx * nyh + 8 * (nx + nyh) * 32  # a slice and its largest group (4 O atoms)
    monkeypatch.setenv("MBOOK_MEMORY_GB", str((fixed + 2.5 * per_slice) / 2**30))  # two slices a batch
    np.testing.assert_allclose(H(potentials.projected_potential(sto, 0.2, dz)), reference, rtol=0,
                               atol=1e-6 * np.abs(reference).max())
    per_pass = 6 * 8 * nx * nyh + 2.5 * (nx + nyh) * 32  # one slice, two atoms a pass
    monkeypatch.setenv("MBOOK_MEMORY_GB", str((fixed + per_pass) / 2**30))
    np.testing.assert_allclose(H(potentials.projected_potential(sto, 0.2, dz)), reference, rtol=0,
                               atol=1e-6 * np.abs(reference).max())
    assert plans[0] == (6, 8) and plans[-2:] == [(2, 8), (1, 2)]  # one batch; batches of 2; passes of 2 atoms


def test_orthogonalized_hexagonal_cell_is_accepted():
    """The recipe the error message gives for a hexagonal cell works."""
    sheet = graphene(vacuum=2.0)
    with pytest.raises(ValueError, match="orthorhombic"):
        potentials.projected_potential(sheet, 0.1, 1.0)
    rectangular = make_supercell(sheet, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    rectangular.wrap()
    v = H(potentials.projected_potential(rectangular, 0.1, 4.0))
    assert v.shape[0] == 1 and np.isfinite(v).all()


def test_cpu_and_gpu_agree(device):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True) * (2, 2, 1)
    v = backend.asnumpy(potentials.projected_potential(atoms, 0.1, 5.431 / 4))
    backend.set_device("cpu")
    reference = potentials.projected_potential(atoms, 0.1, 5.431 / 4)
    np.testing.assert_allclose(v, reference, atol=1e-5 * float(reference.max()))


def test_numpy_inputs_on_the_stand_in_give_stand_in_arrays():
    """The device rule: whatever the caller passes, results land on the selected device."""
    backend.set_device("strict")
    try:
        atoms = bulk("Si", "diamond", a=5.431, cubic=True)
        v, grid = potentials.projected_potential(atoms, 0.2, 5.431 / 2, return_grid=True)
        assert backend.get_array_module(v) is strict.xp
        assert backend.get_array_module(scattering_factors.scattering_factor("Si", np.linspace(0, 1, 5))) is strict.xp
        assert all(isinstance(t, float) for t in potentials.slice_thicknesses(atoms, 5.431 / 2))
    finally:
        backend.set_device("cpu")


# --------------------------------------------------------------------------- frozen phonons


def _minimum_image(displacement, lengths):
    return displacement - lengths * np.round(displacement / lengths)


def test_phonon_displacements_have_the_requested_rms_per_element_and_axis():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (6, 6, 6)  # 864 atoms of each element
    sigmas = {"Na": 0.12, "Cl": 0.07}
    moved = phonons.displace_atoms(atoms, sigmas, seed=7)
    u = _minimum_image(moved.positions - atoms.positions, atoms.cell.lengths())
    symbols = np.array(atoms.get_chemical_symbols())
    for symbol, sigma in sigmas.items():
        rms = np.sqrt(np.mean(u[symbols == symbol] ** 2, axis=0))  # 864 draws per axis: ±2.4 % (1σ)
        np.testing.assert_allclose(rms, sigma, rtol=0.08)
        assert np.sqrt(np.mean(u[symbols == symbol] ** 2)) == pytest.approx(sigma, rel=0.05)
    assert np.all(moved.positions >= 0) and np.all(moved.positions < atoms.cell.lengths())


def test_phonons_are_seeded_and_configurations_independent():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    original = atoms.positions.copy()
    first = phonons.displace_atoms(atoms, 0.1, seed=3)
    np.testing.assert_array_equal(first.positions, phonons.displace_atoms(atoms, 0.1, seed=3).positions)
    assert not np.allclose(first.positions, phonons.displace_atoms(atoms, 0.1, seed=4).positions)
    np.testing.assert_array_equal(atoms.positions, original)  # the input is not touched

    configs = phonons.frozen_phonon_configurations(atoms, {"Cu": 0.1}, 4, seed=11)
    again = phonons.frozen_phonon_configurations(atoms, {"Cu": 0.1}, 4, seed=11)
    assert len(configs) == 4
    for c, d in zip(configs, again):
        np.testing.assert_array_equal(c.positions, d.positions)
    u = [_minimum_image(c.positions - original, atoms.cell.lengths()).ravel() for c in configs]
    correlation = np.corrcoef(u)[np.triu_indices(4, 1)]
    assert np.all(np.abs(correlation) < 0.15)  # 324 draws each: |r| < 0.15 is a 2.7σ bound


def test_zero_sigma_leaves_the_atoms_in_place():
    atoms = bulk("Au", "fcc", a=4.08, cubic=True)
    moved = phonons.displace_atoms(atoms, 0.0, seed=0)
    np.testing.assert_allclose(moved.positions, atoms.positions, atol=1e-12)


# --------------------------------------------------------------------------- bad input

CELL = [4.0, 4.0, 4.0]
GOOD = single_atom("Si", (1.0, 1.0, 1.0), CELL)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(atoms=Atoms("Si", positions=[(1, 1, 1)], cell=[[4, 0, 0], [2, 3.4, 0], [0, 0, 4]])),
         "orthorhombic.*make_supercell.*orthogonalize_cell"),
        (dict(atoms=single_atom("Si", (4.5, 1.0, 1.0), CELL)), r"atom 0 .*x = 4\.5.*atoms\.wrap\(\)"),
        (dict(atoms=single_atom("Si", (1.0, -0.2, 1.0), CELL)), r"atom 0 .*y = -0\.2"),
        (dict(atoms=Atoms("Si2", positions=[(1, 1, 1), (1, 1, 4.0)], cell=CELL)), r"atom 1 .*z = 4"),
        (dict(slice_thickness=0.0), r"slice_thickness must be in \(0, 4\]"),
        (dict(slice_thickness=-1.0), "slice_thickness"),
        (dict(slice_thickness=4.5), r"slice_thickness .*at most the cell's z length"),
        (dict(slice_thickness=float("nan")), "slice_thickness"),
        (dict(sampling=0.0), "sampling must be finite and > 0"),
        (dict(sampling=-0.1), "sampling"),
        (dict(parametrization="peng"), r"parametrization must be one of \('kirkland', 'lobato'\)"),
        (dict(atoms=single_atom("Rf", (1, 1, 1), CELL)), r"'Rf' \(Z = 104\).*Z = 1\.\.103"),
        (dict(atoms=Atoms(cell=CELL)), "atoms is empty"),
        (dict(atoms=single_atom("Si", (1, 1, 1), [4.0, 0.0, 4.0])), "zero length along y"),
        (dict(atoms=single_atom("Si", (1, 1, 1), [4.0, 4.0, 0.0])), "zero length along z"),
    ],
)
def test_bad_input_raises_a_helpful_value_error(kwargs, match):
    arguments = dict(atoms=GOOD, sampling=0.1, slice_thickness=2.0, parametrization="kirkland") | kwargs
    with pytest.raises(ValueError, match=match):
        potentials.projected_potential(**arguments)


def test_bad_scattering_factor_input():
    with pytest.raises(ValueError, match="parametrization must be one of"):
        scattering_factors.scattering_factor("C", 0.5, parametrization="doyle")
    with pytest.raises(ValueError, match="element must be a chemical symbol"):
        scattering_factors.scattering_factor("Xx", 0.5)
    with pytest.raises(ValueError, match=r"Z = 1\.\.103"):
        scattering_factors.scattering_factor(110, 0.5)
    with pytest.raises(ValueError, match="k must be finite and >= 0"):
        scattering_factors.scattering_factor("C", -0.5)
    with pytest.raises(TypeError, match="ase.Atoms"):
        potentials.projected_potential(np.zeros((3, 3)), 0.1, 1.0)


@pytest.mark.parametrize(
    "sigmas, match",
    [(-0.1, "sigmas must be a finite number >= 0 \\[Å\\] \\(an rms displacement\\)"), ({"Na": 0.1}, r"no rms displacement for \['Cl'\]"),
     ({"Na": 0.1, "Cl": math.inf}, r"sigmas\['Cl'\]")],
)
def test_bad_phonon_input(sigmas, match):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    with pytest.raises(ValueError, match=match):
        phonons.displace_atoms(atoms, sigmas, seed=0)


def test_bad_number_of_configurations():
    with pytest.raises(ValueError, match="num_configs must be an integer >= 1"):
        phonons.frozen_phonon_configurations(GOOD, 0.1, 0, seed=0)


def test_an_atom_and_its_mirror_image_have_mirrored_potentials_on_an_even_grid():
    """The projected potential of an atom depends on |k| only: an atom at x0 and one at L - x0 give potentials
    mirrored about x = 0 (v((-m) mod n)), along both axes, on an even grid, where the Nyquist row needs its own
    care (without it the mirror is off by 2.8 %)."""
    size = 4.0

    def potential(x, y):
        atoms = Atoms("Au", positions=[(x, y, 1.0)], cell=[size, size, 2.0])
        return backend.asnumpy(potentials.projected_potential(atoms, 0.2, 2.0)).astype(np.float64)[0]

    v = potential(1.13, 2.37)
    assert v.shape == (20, 20)
    np.testing.assert_allclose(np.roll(v[::-1], 1, axis=0), potential(size - 1.13, 2.37), rtol=0,
                               atol=1e-5 * np.abs(v).max())
    np.testing.assert_allclose(np.roll(v[:, ::-1], 1, axis=1), potential(1.13, size - 2.37), rtol=0,
                               atol=1e-5 * np.abs(v).max())


def test_projected_potential_integral_on_a_grid_with_unequal_spacings():
    """dx = 0.1 Å, dy = 0.15 Å: the integral of one atom's projected potential is 2π a₀ e f_e(0) [V Å²]
    (a₀ = 0.529177 Å, e/4πε₀ = 14.3996 V Å), whatever the pixel's shape."""
    atoms = Atoms("Au", positions=[(2.0, 2.25, 1.0)], cell=[4.0, 4.5, 2.0])
    v, grid = potentials.projected_potential(atoms, (0.1, 0.15), 2.0, return_grid=True)
    dx, dy = grid.sampling
    assert abs(dx - dy) > 0.04
    integral = float(backend.asnumpy(v).astype(np.float64).sum() * dx * dy)
    expected = 2 * math.pi * 0.529177211 * 14.3996454 * scattering_factors.scattering_factor("Au", 0.0)
    assert integral == pytest.approx(expected, rel=1e-4)


def test_frozen_phonons_in_a_skewed_cell_have_the_einstein_spread():
    """hcp Mg (a hexagonal, skewed cell): displacements measured with ASE's minimum-image convention have the rms
    σ per axis (288 atoms: the rms has a 4 % standard error; 15 % is 3.5 of them), none is a wrapped jump, and
    every atom lies inside the cell."""
    from ase.geometry import find_mic

    atoms = bulk("Mg", "hcp", a=3.21, c=5.21) * (6, 6, 4)
    assert abs(atoms.cell[1, 0]) > 1
    moved = phonons.displace_atoms(atoms, 0.1, seed=0)
    d, _ = find_mic(moved.positions - atoms.positions, atoms.cell, pbc=True)
    np.testing.assert_allclose(np.sqrt((d**2).mean(axis=0)), 0.1, rtol=0.15)
    assert np.abs(d).max() < 0.6
    fractions = moved.cell.scaled_positions(moved.positions)
    assert (fractions >= -1e-12).all() and (fractions < 1).all()
