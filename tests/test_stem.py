"""STEM: scans, detectors, batching under a memory budget, Dask, 4D-STEM, on every device."""

import numpy as np
import pytest

from mbook.core import backend, grids, strict
from mbook.electron import physics, stem, stem_detectors

ENERGY, ALPHA = 200e3, 20.0
GRID = grids.make_grid(gpts=(64, 64), sampling=0.1)
DETECTORS = {"BF": (0.0, ALPHA), "DF": (ALPHA, 80.0)}
H = backend.asnumpy  # the one way to the host, for np.testing


def column_potential(n_slices=4, peak=40.0, width=0.3):
    x, y = grids.coordinates(GRID, xp=np)
    r2 = (x[:, None] - 3.2) ** 2 + (y[None, :] - 3.2) ** 2
    return np.repeat((peak * np.exp(-r2 / (2 * width**2)))[None], n_slices, axis=0).astype(np.float32)


def run(potential, positions, **kwargs):
    """A scan of the test grid; the results on the host."""
    result = stem.scan(potential, grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                       positions=positions, **kwargs)
    assert all(backend.get_array_module(value) is backend.xp for value in result.values())  # the selected device
    return {name: H(value) for name, value in result.items()}


POSITIONS = backend.asnumpy(stem.scan_positions(start=(2.2, 2.2), end=(4.2, 4.2), sampling=0.25))
#: Bytes a scan of column_potential() with DETECTORS holds whatever its batches: 4 transmission functions,
#: one propagator and the probe (complex64), 2 masks and the signals of 64 positions (float32).
FIXED = 4 * 64 * 64 * 8 + 64 * 64 * 8 + 64 * 64 * 8 + 2 * 64 * 64 * 4 + 64 * 2 * 4
ONE_PROBE = 64 * 64 * 24


def test_vacuum_puts_all_current_in_bright_field(device):
    result = run(np.zeros((3, 64, 64), np.float32), POSITIONS, detectors=DETECTORS)
    np.testing.assert_allclose(result["BF"], 1.0, atol=1e-5)
    np.testing.assert_allclose(result["DF"], 0.0, atol=1e-6)


def test_dark_field_peaks_on_the_column_and_current_is_conserved(device):
    result = run(column_potential(), POSITIONS, detectors=DETECTORS, diffraction=True)
    peak = np.unravel_index(np.argmax(result["DF"]), result["DF"].shape)
    assert tuple(POSITIONS[peak]) == pytest.approx((3.2, 3.2))
    assert result["BF"][peak] == result["BF"].min()
    # Patterns sum to the transmitted current: 1 minus what the 2/3 aperture removed (tiny here).
    np.testing.assert_allclose(result["diffraction"].sum(axis=(-2, -1)), 1.0, atol=1e-3)
    assert result["diffraction"].shape == POSITIONS.shape[:-1] + GRID.gpts


def test_batches_under_a_small_budget_give_the_same_result(device):
    """A budget for 5 probes beside the fixed memory gives the same images; one for none is refused."""
    potential = column_potential()
    whole = run(potential, POSITIONS, detectors=DETECTORS)
    small = run(potential, POSITIONS, detectors=DETECTORS, budget=FIXED + 5 * ONE_PROBE)  # batches of <= 5
    np.testing.assert_allclose(small["DF"], whole["DF"], rtol=1e-6, atol=1e-9)
    with pytest.raises(MemoryError, match="budget"):
        run(potential, POSITIONS, detectors=DETECTORS, budget=FIXED + ONE_PROBE - 1)


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_batches_fit_the_budget_whatever_the_cores(device, monkeypatch, cores):
    """All batches in flight fit the budget; on the GPU path the batch ignores the host's cores."""
    monkeypatch.setattr(backend, "cpu_threads", lambda: cores)
    budget = FIXED + 5 * ONE_PROBE
    batch, threads = stem.plan_scan(81, GRID, fixed_bytes=FIXED, budget=budget)
    assert batch * threads <= 5
    if device == "cpu":
        assert threads == min(cores, 5)
    else:
        assert (batch, threads) == (5, 1)
    assert stem.plan_scan(81, GRID, fixed_bytes=FIXED, budget=budget, max_batch=2)[0] <= 2
    with pytest.raises(MemoryError, match="budget"):
        stem.plan_scan(81, GRID, fixed_bytes=FIXED, budget=FIXED + ONE_PROBE - 1)


def test_cpu_batch_keeps_a_few_megabytes_of_waves():
    assert stem.cpu_batch(grids.make_grid(gpts=(64, 64), sampling=0.1)) == stem.CPU_BATCH  # small: the cap
    assert stem.cpu_batch(grids.make_grid(gpts=(324, 324), sampling=0.1)) == 4  # 4 x 0.84 MB <= 4 MiB
    assert stem.cpu_batch(grids.make_grid(gpts=(1024, 1024), sampling=0.1)) == 1  # 8 MB: one at a time


def test_scan_batch_size_does_not_change_the_result(device):
    """Batches of 1, 3 and all probes share plans and buffers differently; the signals must not move."""
    potential = column_potential()
    signals = [run(potential, POSITIONS, detectors=DETECTORS, max_batch=b)["DF"] for b in (1, 3, 64)]
    for other in signals[1:]:
        np.testing.assert_allclose(other, signals[0], rtol=1e-5, atol=1e-9)


def test_dask_gives_identical_results(device):
    """The same batches, shared out by Dask, give bit-for-bit the serial result (and its 4D patterns)."""
    distributed = pytest.importorskip("distributed")
    potential = column_potential()
    serial = run(potential, POSITIONS, detectors=DETECTORS, diffraction=True, max_batch=4)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        parallel = run(potential, POSITIONS, detectors=DETECTORS, diffraction=True, max_batch=4, client=client)
    assert set(parallel) == set(serial)
    for name in serial:
        np.testing.assert_array_equal(parallel[name], serial[name])


def test_nyquist_sampling(device):
    assert stem.nyquist_sampling(ENERGY, ALPHA) == pytest.approx(physics.wavelength(ENERGY) / (4 * 0.02))
    positions = H(stem.scan_positions(start=(0, 0), end=(1.0, 1.0), energy=ENERGY, semiangle_cutoff=ALPHA))
    step = positions[1, 0, 0] - positions[0, 0, 0]
    assert step == pytest.approx(stem.nyquist_sampling(ENERGY, ALPHA))


def test_scan_outside_cell_is_refused(device):
    with pytest.raises(ValueError, match="outside the cell"):
        run(column_potential(), [[3.0, 7.0]])


def test_detector_beyond_reach_is_refused_with_the_limit():
    limit = 1e3 * physics.wavelength(ENERGY) * (2 / 3) / 0.2
    with pytest.raises(ValueError, match=rf"reaches only {limit:.1f} mrad"):
        run(column_potential(), POSITIONS, detectors={"HAADF": (70.0, 200.0)})


def test_source_size_blur_keeps_the_mean_and_lowers_contrast(rng, device):
    image = rng.random((32, 32))
    blurred = H(stem.source_size_blur(image, sampling=0.2, source_size=0.5))
    assert blurred.mean() == pytest.approx(image.mean())
    assert blurred.std() < 0.5 * image.std()
    np.testing.assert_allclose(H(stem.source_size_blur(image, sampling=0.2, source_size=0.0)), image, atol=1e-12)


def test_cpu_gpu_agree(device):
    potential = column_potential()
    result = stem.scan(backend.asarray(potential), grid=GRID, energy=ENERGY, slice_thickness=1.0,
                       semiangle_cutoff=ALPHA, positions=POSITIONS[:2, :2], detectors=DETECTORS)
    backend.set_device("cpu")
    reference = stem.scan(potential, grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                          positions=POSITIONS[:2, :2], detectors=DETECTORS)
    np.testing.assert_allclose(H(result["DF"]), reference["DF"], rtol=1e-4, atol=1e-7)


def test_virtual_detector_equals_the_physical_one(device):
    result = run(column_potential(), POSITIONS, detectors=DETECTORS, diffraction=True)
    virtual = H(stem_detectors.virtual_image(result["diffraction"], GRID, energy=ENERGY, inner=ALPHA, outer=80.0))
    np.testing.assert_allclose(virtual, result["DF"], rtol=1e-5, atol=1e-8)


def test_4d_output_counts_against_the_budget(device):
    positions = H(stem.scan_positions(start=(0.5, 0.5), end=(6.0, 6.0), sampling=0.5))  # 121 positions
    output = positions.shape[0] * positions.shape[1] * 64 * 64 * 4
    with pytest.raises(MemoryError, match="budget"):
        run(column_potential(), positions, detectors=DETECTORS, diffraction=True, budget=output)
    # The output plus what a scan holds anyway and one probe in flight is enough.
    enough = output + FIXED + 121 * 2 * 4 + 64 * 64 * (24 + 4)
    result = run(column_potential(), positions, detectors=DETECTORS, diffraction=True, budget=enough)
    assert result["diffraction"].shape == positions.shape[:-1] + GRID.gpts


def test_frozen_phonon_average_is_the_mean_of_the_configurations(device):
    from ase import Atoms

    configurations = [Atoms("Au", positions=[(3.2 + dx, 3.2, 1.0)], cell=[6.4, 6.4, 2.0]) for dx in (0.0, 0.3)]
    kwargs = dict(sampling=0.1, slice_thickness=2.0, energy=ENERGY, semiangle_cutoff=ALPHA,
                  positions=[[3.2, 3.2], [1.0, 1.0]], detectors=DETECTORS)
    average, each = stem.frozen_phonon_scan(configurations, **kwargs)
    assert len(each) == 2 and backend.get_array_module(average["DF"]) is backend.xp
    np.testing.assert_allclose(H(average["DF"]), (H(each[0]["DF"]) + H(each[1]["DF"])) / 2, rtol=1e-6)
    assert H(each[0]["DF"])[0] != pytest.approx(H(each[1]["DF"])[0], rel=1e-3)  # the atom moved
    alone, none = stem.frozen_phonon_scan(configurations, keep_each=False, **kwargs)
    assert none is None
    np.testing.assert_array_equal(H(alone["DF"]), H(average["DF"]))


def test_numpy_inputs_on_the_stand_in_give_stand_in_arrays():
    """The device rule: NumPy in, the selected device's arrays out."""
    backend.set_device("strict")
    try:
        patterns = np.ones((2,) + GRID.gpts, np.float32)
        results = [
            stem.scan_positions(start=(1.0, 1.0), end=(2.0, 2.0), sampling=0.5),
            stem_detectors.detector_masks(GRID, energy=ENERGY, detectors=DETECTORS),
            stem.source_size_blur(np.ones((8, 8)), sampling=0.2, source_size=0.3),
            stem_detectors.virtual_image(patterns, GRID, energy=ENERGY, inner=0.0, outer=ALPHA),
            *stem.scan(column_potential(), grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                       positions=POSITIONS[:1, :2], detectors=DETECTORS, diffraction=True).values(),
        ]
        assert all(backend.get_array_module(r) is strict.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_batches_copy_nothing_to_the_host(host_copies):
    """The scan's batch loop makes no host copy: 16 batches make as many copies as one (the input checks)."""
    def scan(max_batch):
        stem.scan(column_potential(), grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                  positions=POSITIONS[:4, :4], detectors=DETECTORS, diffraction=True, max_batch=max_batch)

    assert host_copies(scan, 1) == host_copies(scan, 16)


def test_a_scan_over_budget_is_refused_before_the_transmissions_are_built(monkeypatch):
    from mbook.electron import multislice as multislice_module

    def built(*args, **kwargs):
        raise AssertionError("the transmission functions were built before the memory was estimated")

    monkeypatch.setattr(multislice_module, "prepare", built)
    grid = grids.make_grid(gpts=(256, 256), sampling=0.1)
    potential = np.zeros((40, 256, 256), np.float32)
    positions = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij"), axis=-1)
    with pytest.raises(MemoryError, match=r"MiB fixed"):
        stem.scan(potential, grid=grid, energy=300e3, slice_thickness=2.0, semiangle_cutoff=20.0,
                  positions=positions, budget=10 * 2**20)


def test_detector_angles_are_scattering_angles(device):
    """In vacuum the probe's spectrum is flat inside its aperture, so a detector of half its angle catches the
    fraction of the aperture's pixels below that angle (counted here from the grid's frequencies and the
    wavelength), to float32 rounding; a detector edge off by one reciprocal pixel changes it by over 1e-2."""
    energy, alpha = 200e3, 20.0
    grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
    result = stem.scan(np.zeros((2, 64, 64), np.float32), grid=grid, energy=energy, slice_thickness=1.0,
                       semiangle_cutoff=alpha, positions=[[3.2, 3.2], [1.3, 4.9]],
                       detectors={"inner": (0.0, 10.0), "outer": (10.0, 40.0)})
    angle = 1e3 * physics.wavelength(energy) * np.sqrt(grids.frequency_squared(grid, xp=np))  # mrad
    inner = np.count_nonzero(angle < 10.0) / np.count_nonzero(angle <= alpha)
    np.testing.assert_allclose(backend.asnumpy(result["inner"]), inner, rtol=0, atol=1e-5)
    np.testing.assert_allclose(backend.asnumpy(result["outer"]), 1 - inner, rtol=0, atol=1e-5)


def test_source_size_blur_is_a_gaussian_of_the_source_size(device):
    """The blur of one bright pixel is the normalised Gaussian of standard deviation source_size, to rounding
    (its spectrum at Nyquist is e^-31: the sampled blur is exact)."""
    n, sampling, size = 64, 0.2, 0.5
    point = np.zeros((n, n))
    point[32, 32] = 1.0
    blurred = backend.asnumpy(stem.source_size_blur(point, sampling=sampling, source_size=size))
    x = (np.arange(n) - 32) * sampling
    gaussian = sampling**2 / (2 * np.pi * size**2) * np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * size**2))
    np.testing.assert_allclose(blurred, gaussian, rtol=0, atol=1e-12)


@pytest.mark.parametrize("endpoint, count", [(False, 2), (True, 3)])
def test_scan_positions_with_a_step_that_does_not_divide_the_field(endpoint, count):
    """A 1 Å field at 0.35 Å: positions j × 0.35 Å for j up to floor(1/0.35) - 1 (+1 with the endpoint), never past
    the end (rounding 1/0.35 = 2.86 would add one outside)."""
    positions = backend.asnumpy(stem.scan_positions(start=(0.0, 0.0), end=(1.0, 1.0), sampling=0.35,
                                                    endpoint=endpoint))
    assert positions.shape == (count, count, 2) and positions.max() <= 1.0 + 1e-12
    np.testing.assert_allclose(positions[:, 0, 0], 0.35 * np.arange(count))
