"""STEM: scans, detectors, batching under a memory budget, Dask, 4D-STEM."""

import numpy as np
import pytest

from mbook.core import backend, grids
from mbook.electron import physics, stem

ENERGY, ALPHA = 200e3, 20.0
GRID = grids.make_grid(gpts=(64, 64), sampling=0.1)
DETECTORS = {"BF": (0.0, ALPHA), "DF": (ALPHA, 80.0)}


def column_potential(n_slices=4, peak=40.0, width=0.3):
    x, y = grids.coordinates(GRID, xp=np)
    r2 = (x[:, None] - 3.2) ** 2 + (y[None, :] - 3.2) ** 2
    return np.repeat((peak * np.exp(-r2 / (2 * width**2)))[None], n_slices, axis=0).astype(np.float32)


def run(potential, positions, **kwargs):
    return stem.scan(potential, grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                     positions=positions, **kwargs)


POSITIONS = stem.scan_positions(start=(2.2, 2.2), end=(4.2, 4.2), sampling=0.25)


def test_vacuum_puts_all_current_in_bright_field():
    result = run(np.zeros((3, 64, 64), np.float32), POSITIONS, detectors=DETECTORS)
    np.testing.assert_allclose(result["BF"], 1.0, atol=1e-5)
    np.testing.assert_allclose(result["DF"], 0.0, atol=1e-6)


def test_dark_field_peaks_on_the_column_and_current_is_conserved():
    result = run(column_potential(), POSITIONS, detectors=DETECTORS, diffraction=True)
    peak = np.unravel_index(np.argmax(result["DF"]), result["DF"].shape)
    assert tuple(POSITIONS[peak]) == pytest.approx((3.2, 3.2))
    assert result["BF"][peak] == result["BF"].min()
    # Patterns sum to the transmitted current: 1 minus what the 2/3 aperture removed (tiny here).
    np.testing.assert_allclose(result["diffraction"].sum(axis=(-2, -1)), 1.0, atol=1e-3)
    assert result["diffraction"].shape == POSITIONS.shape[:-1] + GRID.gpts


def test_batches_under_a_small_budget_give_the_same_result():
    potential = column_potential()
    whole = run(potential, POSITIONS, detectors=DETECTORS)
    one_probe = 64 * 64 * 24
    fixed = 4 * 64 * 64 * 8 + 64 * 64 * 8 + 2 * 64 * 64 * 4
    small = run(potential, POSITIONS, detectors=DETECTORS, budget=fixed + 5 * one_probe)  # batches of 5
    np.testing.assert_allclose(small["DF"], whole["DF"], rtol=1e-6, atol=1e-9)
    with pytest.raises(MemoryError, match="budget"):
        run(potential, POSITIONS, detectors=DETECTORS, budget=fixed)


def test_cpu_batch_keeps_a_few_megabytes_of_waves():
    assert stem.cpu_batch(grids.make_grid(gpts=(64, 64), sampling=0.1)) == stem.CPU_BATCH  # small: the cap
    assert stem.cpu_batch(grids.make_grid(gpts=(324, 324), sampling=0.1)) == 4  # 4 x 0.84 MB <= 4 MiB
    assert stem.cpu_batch(grids.make_grid(gpts=(1024, 1024), sampling=0.1)) == 1  # 8 MB: one at a time


def test_scan_batch_size_does_not_change_the_result():
    """Batches of 1, 3 and all probes share plans and buffers differently; the signals must not move."""
    potential = column_potential()
    signals = [run(potential, POSITIONS, detectors=DETECTORS, max_batch=b)["DF"] for b in (1, 3, 64)]
    for other in signals[1:]:
        np.testing.assert_allclose(other, signals[0], rtol=1e-5, atol=1e-9)


def test_dask_gives_identical_results():
    distributed = pytest.importorskip("distributed")
    potential = column_potential()
    serial = run(potential, POSITIONS, detectors=DETECTORS, budget=10**9)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        parallel = run(potential, POSITIONS, detectors=DETECTORS, budget=64 * 64 * 8 * 8 + 64 * 64 * 24 * 4,
                       client=client)
    for name in DETECTORS:
        np.testing.assert_array_equal(parallel[name], serial[name])


def test_nyquist_sampling():
    assert stem.nyquist_sampling(ENERGY, ALPHA) == pytest.approx(physics.wavelength(ENERGY) / (4 * 0.02))
    positions = stem.scan_positions(start=(0, 0), end=(1.0, 1.0), energy=ENERGY, semiangle_cutoff=ALPHA)
    step = positions[1, 0, 0] - positions[0, 0, 0]
    assert step == pytest.approx(stem.nyquist_sampling(ENERGY, ALPHA))


def test_scan_outside_cell_is_refused():
    with pytest.raises(ValueError, match="outside the cell"):
        run(column_potential(), [[3.0, 7.0]])


def test_detector_beyond_reach_is_refused_with_the_limit():
    limit = 1e3 * physics.wavelength(ENERGY) * (2 / 3) / 0.2
    with pytest.raises(ValueError, match=rf"reaches only {limit:.1f} mrad"):
        run(column_potential(), POSITIONS, detectors={"HAADF": (70.0, 200.0)})


def test_source_size_blur_keeps_the_mean_and_lowers_contrast(rng):
    image = rng.random((32, 32))
    blurred = stem.source_size_blur(image, sampling=0.2, source_size=0.5)
    assert blurred.mean() == pytest.approx(image.mean())
    assert blurred.std() < 0.5 * image.std()


def test_cpu_gpu_agree(device):
    potential = column_potential()
    reference = stem.scan(potential, grid=GRID, energy=ENERGY, slice_thickness=1.0, semiangle_cutoff=ALPHA,
                          positions=POSITIONS[:2, :2], detectors=DETECTORS)
    result = stem.scan(backend.asarray(potential), grid=GRID, energy=ENERGY, slice_thickness=1.0,
                       semiangle_cutoff=ALPHA, positions=POSITIONS[:2, :2], detectors=DETECTORS)
    np.testing.assert_allclose(result["DF"], reference["DF"], rtol=1e-4, atol=1e-7)


def test_virtual_detector_equals_the_physical_one():
    result = run(column_potential(), POSITIONS, detectors=DETECTORS, diffraction=True)
    virtual = stem.virtual_image(result["diffraction"], GRID, energy=ENERGY, inner=ALPHA, outer=80.0)
    np.testing.assert_allclose(virtual, result["DF"], rtol=1e-5, atol=1e-8)


def test_4d_output_counts_against_the_budget():
    positions = stem.scan_positions(start=(0.5, 0.5), end=(6.0, 6.0), sampling=0.5)  # 121 positions
    output = positions.shape[0] * positions.shape[1] * 64 * 64 * 4
    with pytest.raises(MemoryError, match="budget"):
        run(column_potential(), positions, detectors=DETECTORS, diffraction=True, budget=output)
