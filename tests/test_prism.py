"""PRISM and the Lattice Multislice Algorithm against multislice STEM, on every device."""

import numpy as np
import pytest

from mbook.core import backend, grids
from mbook.electron import lma, lma_patches, prism, stem
from mbook.electron import prism_scan as kernels  # prism_scan names the scan helper below

ENERGY, ALPHA = 200e3, 20.0
GRID = grids.make_grid(gpts=(64, 64), sampling=0.1)
DETECTORS = {"BF": (0.0, ALPHA), "DF": (50.0, 80.0)}
H = backend.asnumpy  # the one way to the host, for np.testing
POSITIONS = H(stem.scan_positions(start=(2.2, 2.2), end=(4.2, 4.2), sampling=0.25))
COMMON = dict(grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA)


def column_potential(n_slices=4, peak=400.0, width=0.15, centre=(3.2, 3.2), grid=GRID):
    """A Gaussian column [V·Å per slice]: a strong scatterer on the test grid (or another)."""
    x, y = grids.coordinates(grid, xp=np)
    r2 = (x[:, None] - centre[0]) ** 2 + (y[None, :] - centre[1]) ** 2
    return np.repeat((peak * np.exp(-r2 / (2 * width**2)))[None], n_slices, axis=0).astype(np.float32)


def on_host(result):
    assert all(backend.get_array_module(value) is backend.xp for value in result.values())  # the selected device
    return {name: H(value) for name, value in result.items()}


def multislice_scan(potential, **kwargs):
    return on_host(stem.scan(potential, positions=POSITIONS, detectors=DETECTORS, **COMMON, **kwargs))


def prism_scan(potential, interpolation, **kwargs):
    smatrix = prism.build_smatrix(potential, interpolation=interpolation, **COMMON)
    assert backend.get_array_module(smatrix.array) is backend.xp
    return on_host(prism.scan(smatrix, positions=POSITIONS, detectors=DETECTORS, **kwargs))


def lma_scan(potential, patch_gpts, lattice_step=4):
    basis = lma.build_basis(potential, lattice_step=lattice_step, patch_gpts=patch_gpts, **COMMON)
    assert backend.get_array_module(basis.array) is backend.xp
    return on_host(lma.scan(basis, positions=POSITIONS, detectors=DETECTORS))


def relative_error(signal, reference):
    return float(np.linalg.norm(signal - reference) / np.linalg.norm(reference))


def test_prism_f1_equals_multislice_to_float32_precision(device):
    """f = 1 keeps every beam of the aperture: by linearity, the multislice result, 4D patterns included."""
    potential = column_potential()
    reference = multislice_scan(potential, diffraction=True, defocus=20.0)
    result = prism_scan(potential, 1, diffraction=True, defocus=20.0)
    for name in ("BF", "DF", "diffraction"):
        np.testing.assert_allclose(result[name], reference[name], rtol=2e-5, atol=2e-7)


def test_prism_error_falls_as_the_interpolation_factor_falls(device):
    potential = column_potential()
    reference = multislice_scan(potential)["DF"]
    errors = [relative_error(prism_scan(potential, f)["DF"], reference) for f in (1, 2, 4)]
    assert errors[0] < 1e-5 < errors[1] < errors[2]


def test_lma_error_falls_as_the_patch_grows(device):
    potential = column_potential()
    reference = multislice_scan(potential)["DF"]
    errors = [relative_error(lma_scan(potential, patch)["DF"], reference) for patch in (16, 24, 32)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_lma_reproduces_the_probe_in_vacuum():
    """The block of translates loses only the probe's tails; the whole lattice (a window wrapped around
    the periodic cell) keeps the probe whole, up to u's tails beyond its patch."""
    basis = lma.build_basis(np.zeros((2, 64, 64), np.float32), lattice_step=4, patch_gpts=32, **COMMON)
    default = on_host(lma.scan(basis, positions=POSITIONS, detectors=DETECTORS))
    whole = on_host(lma.scan(basis, positions=POSITIONS, detectors=DETECTORS, block=16, diffraction=True))
    assert 0.9 < default["BF"].min() and default["BF"].max() < 1.0  # the block holds most of the current
    assert np.abs(whole["BF"] - 1).max() < np.abs(default["BF"] - 1).min()
    assert default["DF"].max() < 0.01 and whole["DF"].max() < 0.01
    assert whole["diffraction"].shape == POSITIONS.shape[:-1] + GRID.gpts  # the window is the cell


def test_devices_agree(device, on_cpu):
    potential = column_potential()
    expected = on_cpu(lma_scan, potential, 24)
    np.testing.assert_allclose(lma_scan(potential, 24)["DF"], expected["DF"], rtol=1e-5, atol=1e-8)
    expected = on_cpu(prism_scan, potential, 2)
    np.testing.assert_allclose(prism_scan(potential, 2)["DF"], expected["DF"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("interpolation", [1, 2])
def test_a_grid_of_probes_factorised_by_columns_equals_the_direct_sum(device, monkeypatch, interpolation):
    """The phase e^{-2πi(k_x x + k_y y)} of a grid of probes factorises: the sum over beams column by
    column is the direct one to float32 rounding (complex weights: defocus and Cs; 4D patterns too)."""
    smatrix = prism.build_smatrix(column_potential(), interpolation=interpolation, **COMMON)
    kwargs = dict(positions=POSITIONS, detectors=DETECTORS, diffraction=True, defocus=30.0, Cs=1e5)
    calls = []
    factorise = kernels.combine_on_grid
    monkeypatch.setattr(kernels, "combine_on_grid",
                        lambda *args, **kwargs: calls.append(1) or factorise(*args, **kwargs))
    monkeypatch.setattr(kernels, "FACTORISED_GAIN", 0)  # every grid of probes factorised
    factorised = on_host(prism.scan(smatrix, **kwargs))
    assert calls
    monkeypatch.setattr(kernels, "FACTORISED_GAIN", np.inf)  # none
    calls.clear()
    direct = on_host(prism.scan(smatrix, **kwargs))
    assert not calls
    for name in ("BF", "DF", "diffraction"):
        np.testing.assert_allclose(factorised[name], direct[name], rtol=2e-5, atol=2e-7)


def test_windows_across_the_cell_edge(device):
    """The cell is periodic: shifting the specimen by half a cell and the probes with it, so that their
    windows cross the cell's edges, gives the same image (f = 2: the box of beams wraps around)."""
    positions = H(stem.scan_positions(start=(2.2, 2.2), end=(4.2, 4.2), sampling=0.2))
    potential = column_potential()
    image = prism.scan(prism.build_smatrix(potential, interpolation=2, **COMMON), positions=positions,
                       detectors=DETECTORS)
    shifted = np.roll(potential, (32, 32), axis=(1, 2))  # 3.2 Å along x and y
    moved = prism.scan(prism.build_smatrix(shifted, interpolation=2, **COMMON),
                       positions=(positions + 3.2) % 6.4, detectors=DETECTORS)
    for name in DETECTORS:
        np.testing.assert_allclose(H(moved[name]), H(image[name]), rtol=2e-5, atol=2e-7)


@pytest.mark.parametrize("interpolation", [1, 2])
def test_batches_on_every_core_equal_one_after_another(monkeypatch, interpolation):
    """A scan of many tiles gives the same image whether its batches share the cores or not."""
    smatrix = prism.build_smatrix(column_potential(), interpolation=interpolation, **COMMON)
    positions = stem.scan_positions(start=(0.0, 0.0), end=(6.4, 6.4), sampling=0.2)  # 32 x 32: many tiles
    images = {}
    for threads in (1, 2):
        monkeypatch.setattr(backend, "cpu_threads", lambda: threads)
        images[threads] = on_host(prism.scan(smatrix, positions=positions, detectors=DETECTORS))
    for name in DETECTORS:
        np.testing.assert_allclose(images[2][name], images[1][name], rtol=2e-5, atol=2e-7)


def test_local_update_equals_a_full_rebuild(device):
    """Adding a column changes only the basis waves whose patches it touches, and those exactly."""
    before = column_potential()
    x, y = grids.coordinates(GRID, xp=np)
    r = np.hypot(x[:, None] - 1.0, y[None, :] - 1.0)
    after = before + (30.0 * np.exp(-(r**2) / (2 * 0.25**2)) * (r < 1.0)).astype(np.float32)[None]
    basis = lma.build_basis(before, lattice_step=4, patch_gpts=16, **COMMON)
    updated, touched = lma.update_basis(basis, after, tol=1e-9)  # every changed pixel counts
    rebuilt = lma.build_basis(after, lattice_step=4, patch_gpts=16, **COMMON)
    touched = H(touched)
    assert 0 < touched.sum() < touched.size / 2
    np.testing.assert_allclose(H(updated.array), H(rebuilt.array), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(H(updated.array)[~touched], H(basis.array)[~touched])
    everywhere = stem.scan_positions(start=(0.0, 0.0), end=(6.4, 6.4), sampling=0.4)
    hit = H(lma.affected(updated, everywhere, touched))
    assert hit.dtype == bool and hit.shape == (16, 16) and 0 < hit.sum() < hit.size
    assert hit[2, 2] and not hit[10, 10]  # next to the new column, and across the cell from it
    # In place: the same waves, written into the old basis's array (no second basis in memory).
    again = lma.build_basis(before, lattice_step=4, patch_gpts=16, **COMMON)
    in_place, _ = lma.update_basis(again, after, tol=1e-9, overwrite=True)
    assert in_place.array is again.array
    np.testing.assert_array_equal(H(in_place.array), H(updated.array))


def test_smatrix_batches_and_budget(device):
    """A budget for a few beams gives the same S-matrix; one for the S-matrix alone is refused."""
    potential = column_potential()
    whole = prism.build_smatrix(potential, interpolation=2, **COMMON)
    n_beams, n = len(whole.beams), 64 * 64
    fixed = n_beams * n * 8 + 4 * n * 8 + n * 8
    assert prism.smatrix_bytes(GRID, energy=ENERGY, semiangle_cutoff=ALPHA, interpolation=2) == n_beams * n * 8
    small = prism.build_smatrix(potential, interpolation=2, budget=fixed + 3 * 2 * n * 8, **COMMON)
    np.testing.assert_allclose(H(small.array), H(whole.array), rtol=1e-5, atol=1e-6)
    with pytest.raises(MemoryError, match=r"budget.*MBOOK_MEMORY_GB"):
        prism.build_smatrix(potential, interpolation=2, budget=fixed, **COMMON)
    with pytest.raises(MemoryError, match="budget"):
        lma.build_basis(potential, lattice_step=4, patch_gpts=24, budget=2**20, **COMMON)


def test_smatrix_over_dask_equals_serial():
    distributed = pytest.importorskip("distributed")
    potential = column_potential()
    serial = prism.build_smatrix(potential, interpolation=2, max_batch=4, **COMMON)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        shared = prism.build_smatrix(potential, interpolation=2, max_batch=4, client=client, **COMMON)
    np.testing.assert_array_equal(H(shared.array), H(serial.array))


def test_basis_over_dask_equals_serial(device):
    """The basis built in batches over a Dask cluster's workers is the one built here, to float32 rounding
    (the same batches; pyFFTW's measured plans in the workers' threads may round differently, ~1e-7)."""
    distributed = pytest.importorskip("distributed")
    potential = column_potential()
    # A budget for 64 of the 256 translates in flight: four batches to share out (and the same batches here).
    fixed = 16 * 16 * 16 * 16 * 8 + 3 * potential.nbytes
    budget = fixed + 64 * lma_patches.bytes_per_point(16)
    serial = lma.build_basis(potential, lattice_step=4, patch_gpts=16, budget=budget, **COMMON)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        with distributed.get_task_stream(client) as stream:
            shared = lma.build_basis(potential, lattice_step=4, patch_gpts=16, budget=budget, client=client,
                                     **COMMON)
    batches = [task for task in stream.data if "propagate_patches" in task["key"]]
    assert len(batches) == 4 and len({task["worker"] for task in batches}) == 2  # shared over both workers
    assert backend.get_array_module(shared.array) is backend.xp
    np.testing.assert_allclose(H(shared.array), H(serial.array), rtol=1e-6, atol=1e-6)  # |waves| <= ~1


# --------------------------------------------------------------------------- bad input
POTENTIAL = column_potential(n_slices=2)


def build(**kwargs):
    return prism.build_smatrix(**(dict(potential=POTENTIAL, interpolation=1) | COMMON | kwargs))


def basis(**kwargs):
    return lma.build_basis(**(dict(potential=POTENTIAL, lattice_step=4, patch_gpts=24) | COMMON | kwargs))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build(interpolation=0), "interpolation must be a positive integer"),
        (lambda: build(interpolation=2.0), "interpolation must be a positive integer"),
        (lambda: build(interpolation=True), "interpolation must be a positive integer"),
        (lambda: build(interpolation=3), r"interpolation=3 is too large.*divide both gpts"),
        (lambda: build(interpolation=8), r"interpolation=8 is too large.*<= 5"),
        (lambda: build(semiangle_cutoff=-1.0), "semiangle_cutoff"),
        (lambda: build(energy=0.0), "energy"),
        (lambda: build(potential=POTENTIAL[0]), "potential"),
        (lambda: build(potential=POTENTIAL[:, :32]), "potential"),
        (lambda: build(max_batch=0), "max_batch"),
        (lambda: prism.scan(build(), positions=[[7.0, 1.0]]), "positions span x 7.000"),
        (lambda: prism.scan(build(), positions=[1.0, 1.0, 1.0]), "positions must be"),
        (lambda: basis(lattice_step=0), "lattice_step must be a positive integer"),
        (lambda: basis(lattice_step=3), r"lattice_step=3 pixels must divide gpts"),
        (lambda: basis(lattice_step=8), r"lattice_step=8 .*<= 6"),
        (lambda: basis(patch_gpts=8), r"patch_gpts=8 must hold the probe"),
        (lambda: basis(patch_gpts=24.0), "patch_gpts must be an integer"),
        (lambda: basis(patch_gpts=48), r"patch_gpts=48 .*too large"),
        (lambda: lma.update_basis(basis(), POTENTIAL, tol=0.0), "tol must be"),
        (lambda: lma.update_basis(basis(), POTENTIAL[:1]), "potential has shape"),
        (lambda: lma.scan(basis(), positions=POSITIONS, max_batch=0), "max_batch"),
        (lambda: lma.scan(basis(), positions=POSITIONS, block=17), r"block must be an integer >= 1 and <= 16"),
        (lambda: lma.affected(basis(), POSITIONS, np.zeros((16, 16), bool), block=0), "block"),
        (lambda: build(budget=-1), "budget must be an integer"),
        (lambda: basis(budget=2.5), "budget must be an integer"),
        (lambda: prism.scan(build(), positions=POSITIONS, budget="1"), "budget must be an integer"),
        (lambda: lma.basis_function(GRID, energy=ENERGY, semiangle_cutoff=ALPHA, lattice_step=8), "too coarse"),
        (lambda: lma.basis_function(GRID, energy=ENERGY, semiangle_cutoff=ALPHA, lattice_step=0), "lattice_step"),
        (lambda: lma.probe_diameter(energy=ENERGY, semiangle_cutoff=0.0), "semiangle_cutoff"),
        (lambda: prism.beam_indices(GRID, energy=-1.0, semiangle_cutoff=ALPHA), "energy"),
        (lambda: prism.smatrix_bytes(GRID, energy=ENERGY, semiangle_cutoff=ALPHA, interpolation=16), "interpolation"),
        (lambda: lma.affected(basis(), POSITIONS, np.zeros((4, 4), bool)), "touched has shape"),
    ],
)
def test_bad_input_is_refused_naming_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [(lambda: lma.scan(None, positions=POSITIONS), "basis must be a LatticeBasis"),
                                         (lambda: lma.update_basis("basis", POTENTIAL), "basis must be a LatticeBasis"),
                                         (lambda: basis(client="not-a-client"), "client must be a dask"),
                                         (lambda: prism.scan("S", positions=POSITIONS), "smatrix must be an SMatrix"),
                                         (lambda: build(grid="grid"), "grid must be a 2D"),
                                         (lambda: basis(grid=None), "grid must be a 2D"),
                                         (lambda: stem.check_positions(POSITIONS, (64, 64)), "grid must be a 2D"),
                                         (lambda: prism.scan(build(), positions=POSITIONS, detectors="HAADF"),
                                          "detectors must be a dict"),
                                         (lambda: lma.scan(basis(), positions=POSITIONS, detectors=[(0, 1)]),
                                          "detectors must be a dict")])
def test_wrong_types_are_refused(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_probes_sharing_a_block_give_the_same_image_as_translate_by_translate(device, monkeypatch):
    """A dense scan (16 probes per lattice cell): each block placed once and its probes one matrix
    product, against the translate-by-translate sum; also with a block wider than the cell (wrapped)."""
    from mbook.electron import lma_scan

    basis = lma.build_basis(column_potential(), lattice_step=4, patch_gpts=24, **COMMON)
    dense = stem.scan_positions(start=(1.0, 1.0), end=(3.0, 3.0), sampling=0.1)
    for block in (None, 16):
        images = {}
        for grouped_min in (1, 10**9):  # every scan grouped; none
            monkeypatch.setattr(lma_scan, "GROUPED_MIN", grouped_min)
            images[grouped_min] = on_host(lma.scan(basis, positions=dense, detectors=DETECTORS, diffraction=True,
                                                   block=block))
        for name in images[1]:
            np.testing.assert_allclose(images[1][name], images[10**9][name], rtol=1e-5,
                                       atol=1e-6 * np.abs(images[1][name]).max())


def test_lma_coefficients_on_the_beams_grid_equal_the_sum_over_beams(device, rng):
    """The exponentials of the distinct k_x and k_y only, the beams summed as two products: the same
    coefficients to float32 rounding."""
    from mbook.electron import lma_scan, waves

    basis = lma.build_basis(column_potential(), lattice_step=4, patch_gpts=24, **COMMON)
    spectrum = waves.probe_spectrum(GRID, energy=ENERGY, semiangle_cutoff=ALPHA, defocus=30.0, xp=backend.xp)
    beams = prism.beam_indices(GRID, energy=ENERGY, semiangle_cutoff=ALPHA)
    positions = backend.asarray(rng.uniform(1.0, 5.0, (7, 2)))
    plain, first = lma_scan.coefficients(spectrum, backend.asarray(beams), positions, basis, 5)
    on_grid = lma_scan.coefficients(spectrum, backend.asarray(beams), positions, basis, 5,
                                    on_grid=lma_scan.beam_grid(spectrum, beams, GRID))
    assert len(np.unique(beams[:, 0])) < len(beams) / 4  # a grid of a few distinct frequencies per axis
    np.testing.assert_array_equal(H(on_grid[1]), H(first))
    np.testing.assert_allclose(H(on_grid[0]), H(plain), rtol=0, atol=1e-6 * np.abs(H(plain)).max())


@pytest.mark.parametrize("sizes, batch", [([3, 5, 2], 4), ([64] * 3, 64), ([10] * 7, 64), ([1], 1), ([130, 1], 64)])
def test_block_batches_cover_every_probe_once_without_mixing_blocks(sizes, batch):
    from mbook.electron import lma_scan

    batches = lma_scan.block_batches(sizes, batch)
    runs = [run for runs in batches for run in runs]
    assert [start for start, _ in runs] == [end for _, end in [(0, 0)] + runs[:-1]]  # contiguous, in order
    assert runs[-1][1] == sum(sizes)
    assert all(runs[-1][1] - runs[0][0] <= batch for runs in batches)
    edges = set(np.cumsum(sizes).tolist()) | {0}
    blocks = np.repeat(np.arange(len(sizes)), sizes)
    assert all(len(set(blocks[start:end])) == 1 for start, end in runs)  # a run is (part of) one block
    assert all(end in edges or end - start == batch for start, end in runs)  # split only when a block is larger


def test_an_update_in_place_needs_room_for_one_basis_not_two():
    before = column_potential()
    after = before.copy()
    after[:, 20:24, 20:24] += 30.0
    basis = lma.build_basis(before, lattice_step=4, patch_gpts=16, **COMMON)
    # one basis; the old and new potentials and transmissions (6 potentials' bytes); a few patches in flight
    budget = basis.nbytes + 6 * before.nbytes + 2**17
    with pytest.raises(MemoryError, match="budget"):
        lma.update_basis(basis, after, tol=1e-2, budget=budget)  # a copy of the basis as well: refused
    updated, touched = lma.update_basis(basis, after, tol=1e-2, overwrite=True, budget=budget)
    assert updated.array is basis.array and 0 < int(H(touched).sum()) < touched.size


def test_lma_basis_rebuilds_every_band_limited_wave_from_its_lattice_samples(device):
    """The LMA's identity Σ_j ψ(x_j) u(r - x_j) = ψ for waves band-limited to the aperture: an aberrated probe
    sampled on the lattice and convolved with the basis function is the probe again, to float32 rounding
    (measured 9e-8); a basis function 1.5 % too strong is 1.5e-2 off."""
    from mbook.electron import waves

    energy, alpha, step = 200e3, 20.0, 4
    grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
    u = backend.asnumpy(lma.basis_function(grid, energy=energy, semiangle_cutoff=alpha, lattice_step=step))
    u = np.roll(u.astype(complex), (-32, -32), axis=(0, 1))  # centred on pixel (0, 0)
    psi = backend.asnumpy(waves.probe(grid, energy=energy, semiangle_cutoff=alpha, defocus=40.0, Cs=1e5))
    samples = np.zeros(psi.shape, complex)
    samples[::step, ::step] = psi[::step, ::step]
    rebuilt = np.fft.ifft2(np.fft.fft2(samples) * np.fft.fft2(u))
    assert np.abs(rebuilt - psi).max() < 1e-5 * np.abs(psi).max()


def test_prism_f1_equals_multislice_on_a_grid_of_unequal_sides_and_spacings(device):
    """64 x 48 pixels of 0.09 x 0.1 Å: PRISM at f = 1 is multislice by linearity, on a grid like graphene's
    rectangular cell (the plane waves' and beams' frequencies differ along x and y)."""
    grid = grids.make_grid(gpts=(64, 48), sampling=(0.09, 0.1))
    common = dict(grid=grid, energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0)
    detectors = {"BF": (0.0, 20.0), "DF": (40.0, 70.0)}
    potential = column_potential(n_slices=3, centre=(3.2, 2.9), grid=grid)
    positions = stem.scan_positions(start=(2.2, 2.0), end=(4.2, 3.8), sampling=0.3)
    reference = stem.scan(potential, positions=positions, detectors=detectors, defocus=20.0, **common)
    smatrix = prism.build_smatrix(potential, interpolation=1, **common)
    result = prism.scan(smatrix, positions=positions, detectors=detectors, defocus=20.0)
    for name in detectors:
        expected = backend.asnumpy(reference[name])
        np.testing.assert_allclose(backend.asnumpy(result[name]), expected, rtol=2e-5,
                                   atol=2e-7 * np.abs(expected).max())


def test_window_centres_are_the_nearest_pixels_wrapped():
    grid = grids.make_grid(gpts=(40, 40), sampling=(0.1, 0.1))
    positions = np.array([[0.07, 0.21], [1.26, 3.94], [3.98, 0.0]])
    centres = backend.asnumpy(kernels.window_centres(positions, grid))
    np.testing.assert_array_equal(centres, [[1, 2], [13, 39], [0, 0]])  # 3.98 Å is pixel 39.8: 40, wrapped to 0
