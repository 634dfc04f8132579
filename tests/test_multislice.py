"""The multislice recursion: vacuum, weak-phase limit, unitarity, convergence, devices."""

import numpy as np
import pytest

from mbook.core import backend, fftw_wisdom, grids, strict
from mbook.electron import multislice, physics, structures

ENERGY = 200e3
GRID = grids.make_grid(gpts=(64, 64), sampling=0.1)
H = backend.asnumpy  # the one way to the host, for np.testing


def gaussian_slices(n_slices, peak, width=0.4):
    """Smooth test potential [V·Å]: one Gaussian column per slice at the cell centre."""
    x, y = grids.coordinates(GRID, xp=np)
    r2 = (x[:, None] - 3.2) ** 2 + (y[None, :] - 3.2) ** 2
    return np.repeat((peak * np.exp(-r2 / (2 * width**2)))[None], n_slices, axis=0).astype(np.float32)


def run(potential, slice_thickness=1.0, **kwargs):
    """Exit wave of a unit plane wave, on the host."""
    return H(multislice.propagate_slices(np.ones(GRID.gpts, np.complex64), potential, grid=GRID, energy=ENERGY,
                                         slice_thickness=slice_thickness, **kwargs))


def test_vacuum_leaves_a_plane_wave_unchanged(device):
    np.testing.assert_allclose(run(np.zeros((5, 64, 64), np.float32)), 1.0, atol=1e-6)


def test_weak_phase_limit(device):
    """A thin, weak slab: ψ ≈ 1 + iσv to first order; the error is second order in σv."""
    potential = gaussian_slices(1, peak=2.0)
    psi = run(potential, slice_thickness=0.01, antialias=False)
    weak = H(multislice.weak_phase_exit_wave(potential, energy=ENERGY))
    sigma_v = physics.interaction_parameter(ENERGY) * potential.max()
    error = np.max(abs(psi - weak))
    assert error < sigma_v**2  # second order ...
    assert error > 0.1 * sigma_v**2  # ... and not smaller: the phase grating is not linear


def test_unitary_without_aperture(rng, device):
    potential = (50 * rng.random((8, 64, 64))).astype(np.float32)
    wave = (rng.standard_normal((3, 64, 64)) + 1j * rng.standard_normal((3, 64, 64))).astype(np.complex64)
    psi = H(multislice.propagate_slices(wave, potential, grid=GRID, energy=ENERGY, slice_thickness=2.0,
                                        antialias=False))
    power = [np.sum(abs(w.astype(np.complex128)) ** 2, axis=(1, 2)) for w in (psi, wave)]
    # float32: ~1e-7 per FFT pair, 8 slices; cuFFT's rounding gave 2.4e-6 on an H200 (2026-11-30)
    np.testing.assert_allclose(power[0], power[1], rtol=5e-6)


def test_intensity_conserved_when_nothing_is_cut(device):
    """A smooth, weak potential scatters well inside the 2/3 aperture: |ψ|² kept to 1e-6."""
    psi = run(gaussian_slices(10, peak=1.0, width=0.6), slice_thickness=2.0)
    assert np.sum(abs(psi) ** 2) / psi.size == pytest.approx(1.0, abs=1e-6)


def test_slice_thickness_convergence(device):
    """Halving Δz at fixed total thickness: the error to a fine reference falls ~ Δz (or faster)."""
    total = 8.0
    potential_per_length = gaussian_slices(1, peak=20.0)[0] / 1.0  # V·Å per Å of thickness

    def exit_for(n):
        dz = total / n
        return run(np.repeat(potential_per_length[None] * dz, n, axis=0), slice_thickness=dz)

    reference = exit_for(256)
    errors = [np.max(abs(exit_for(n) - reference)) for n in (4, 8, 16)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] / errors[2] > 1.8


def test_max_angle_and_aperture(device):
    lam = physics.wavelength(ENERGY)
    assert multislice.max_angle(GRID, ENERGY) == pytest.approx(1e3 * lam * (2 / 3) / 0.2)
    aperture = H(multislice.antialias_aperture(GRID))
    k2 = grids.frequency_squared(GRID, xp=np)
    assert aperture[k2 <= (2 / 3 * 5.0) ** 2].all() and not aperture[k2 > (2 / 3 * 5.0) ** 2].any()


@pytest.mark.parametrize(
    "potential, match",
    [(np.zeros((2, 32, 32), np.float32), "must share"), (np.full((2, 64, 64), np.nan, np.float32), "NaN"),
     (np.zeros((64, 64), np.float32), r"\(n_slices, nx, ny\)")],
)
def test_bad_input(potential, match, device):
    with pytest.raises(ValueError, match=match):
        run(potential)


def test_cpu_gpu_agree(device):
    potential = gaussian_slices(6, peak=30.0)
    reference = run(potential)
    result = multislice.propagate_slices(backend.asarray(np.ones(GRID.gpts, np.complex64)),
                                         backend.asarray(potential), grid=GRID, energy=ENERGY, slice_thickness=1.0)
    np.testing.assert_allclose(backend.asnumpy(result), reference, atol=2e-5)


def test_transmission_stack_in_batches_equals_one_slice_at_a_time(rng, monkeypatch, device):
    """On the GPU path the slices of :func:`transmission_function` are an array axis in memory-budgeted
    batches; the stack equals the per-slice reference made here with :func:`transmission_slices` (one
    slice after another), in one batch and in batches of two slices."""
    potential = rng.uniform(0, 40, (5, 64, 64)).astype(np.float32)  # V·Å: phases up to ~0.3 rad
    reference = np.stack([backend.asnumpy(t).copy()
                          for t in multislice.transmission_slices(potential, energy=ENERGY, grid=GRID)])
    batches, kernel = [], multislice._transmission_batch
    monkeypatch.setattr(multislice, "_transmission_batch", lambda v, *args: batches.append(len(v)) or kernel(v, *args))
    whole = multislice.transmission_function(potential, energy=ENERGY, grid=GRID)
    assert backend.get_array_module(whole) is backend.xp
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(2.5 * (3 * 4 + 2 * 8) * 64 * 64 / 2**30))  # two slices a batch
    pieces = multislice.transmission_function(potential, energy=ENERGY, grid=GRID)
    assert batches == ([5, 2, 2, 1] if backend.gpu_code_path() else [])
    for stack in (whole, pieces):
        np.testing.assert_allclose(backend.asnumpy(stack), reference, rtol=0, atol=1e-6)
    plain = multislice.transmission_function(potential, energy=ENERGY, antialias=False)
    np.testing.assert_allclose(backend.asnumpy(plain), np.exp(1j * physics.interaction_parameter(ENERGY)
                                                              * potential.astype(np.float64)), rtol=0, atol=1e-6)


def test_slices_of_different_thickness_add_up(rng, device):
    """Vacuum slices of 1, 2 and 3 Å propagate like one Fresnel step of 6 Å."""
    from mbook.core import propagation

    wave = (rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))).astype(np.complex64)
    thicknesses = backend.asarray([1.0, 2.0, 3.0])  # a device array of thicknesses is accepted too
    psi = multislice.propagate_slices(wave, np.zeros((3, 64, 64), np.float32), grid=GRID, energy=ENERGY,
                                      slice_thickness=thicknesses, antialias=False)
    direct = propagation.propagate(wave, 6.0, wavelength=physics.wavelength(ENERGY), sampling=0.1, paraxial=True)
    np.testing.assert_allclose(H(psi), H(direct), atol=1e-4)


def test_slice_thickness_count_must_match():
    with pytest.raises(ValueError, match="slice_thickness must have 3 entries"):
        run(np.zeros((3, 64, 64), np.float32), slice_thickness=[1.0, 2.0])


@pytest.mark.skipif(fftw_wisdom.pyfftw_module() is None, reason="pyFFTW is not installed: only scipy.fft to compare")
def test_fft_libraries_agree_to_float32_rounding(rng):
    """FFTW plans and pocketfft give the same exit wave: only their rounding differs."""
    potential = (30 * rng.random((12, 64, 64))).astype(np.float32)
    try:
        waves = {library: (backend.set_fft_library(library), run(potential))[1] for library in ("scipy", "pyfftw")}
    finally:
        backend.set_fft_library("auto")
    difference = np.linalg.norm(waves["pyfftw"] - waves["scipy"]) / np.linalg.norm(waves["scipy"])
    assert difference < 1e-5


def test_results_do_not_share_the_work_buffer(rng, device):
    """The loop runs in a reused buffer; what a call returns must survive the next call."""
    first = multislice.propagate_slices(np.ones(GRID.gpts, np.complex64), gaussian_slices(3, peak=5.0), grid=GRID,
                                        energy=ENERGY, slice_thickness=1.0)
    kept = H(first)
    run(gaussian_slices(3, peak=50.0))
    np.testing.assert_array_equal(H(first), kept)
    incident = backend.asarray(np.ones(GRID.gpts, np.complex64))
    steps = H(multislice.thickness_series(incident, gaussian_slices(3, peak=5.0), grid=GRID, energy=ENERGY,
                                          slice_thickness=1.0))
    assert steps.shape == (3,) + GRID.gpts
    assert not np.allclose(steps[0], steps[-1])  # one copy per slice, not three views of one buffer
    np.testing.assert_array_equal(H(incident), 1.0)  # the incident wave is not modified
    np.testing.assert_allclose(steps[-1], kept, atol=1e-6)  # the last step is the exit wave


def test_thickness_series_every_other_slice(device):
    series = H(multislice.thickness_series(np.ones(GRID.gpts, np.complex64), gaussian_slices(5, peak=20.0),
                                           grid=GRID, energy=ENERGY, slice_thickness=1.0, every=2))
    assert series.shape == (2,) + GRID.gpts  # after slices 2 and 4
    np.testing.assert_allclose(series[1], run(gaussian_slices(4, peak=20.0)), atol=1e-6)
    with pytest.raises(ValueError, match="every=6 exceeds the number of slices, 5"):
        multislice.thickness_series(np.ones(GRID.gpts, np.complex64), gaussian_slices(5, peak=20.0), grid=GRID,
                                    energy=ENERGY, slice_thickness=1.0, every=6)


def test_exit_wave_of_atoms(device):
    """exit_wave = potential + multislice; its options (antialias, grid) are those a page needs."""
    atoms = structures.srtio3(repeat=(1, 1, 2))
    psi, grid = multislice.exit_wave(atoms, ENERGY, 0.1, 3.905 / 2, return_grid=True)
    assert backend.get_array_module(psi) is backend.xp and psi.shape == grid.gpts
    unitary = H(multislice.exit_wave(atoms, ENERGY, 0.1, 3.905 / 2, antialias=False))
    assert np.mean(abs(unitary.astype(np.complex128)) ** 2) == pytest.approx(1.0, abs=1e-6)
    lost = 1 - np.mean(abs(H(psi).astype(np.complex128)) ** 2)
    assert lost > 1e-6  # the 2/3 aperture removes what the grid cannot represent


def test_numpy_inputs_on_the_stand_in_give_stand_in_arrays():
    """The device rule: NumPy in, the selected device's arrays out."""
    backend.set_device("strict")
    try:
        potential = gaussian_slices(2, peak=5.0)
        plane = np.ones(GRID.gpts, np.complex64)
        results = [
            multislice.propagate_slices(plane, potential, grid=GRID, energy=ENERGY, slice_thickness=1.0),
            multislice.thickness_series(plane, potential, grid=GRID, energy=ENERGY, slice_thickness=1.0),
            multislice.transmission_function(potential, energy=ENERGY, grid=GRID),
            next(multislice.transmission_slices(potential, energy=ENERGY, grid=GRID)),
            multislice.weak_phase_exit_wave(potential, energy=ENERGY),
            multislice.slice_propagator(GRID, energy=ENERGY, slice_thickness=1.0),
            multislice.antialias_aperture(GRID),
            multislice.exit_wave(structures.srtio3(), ENERGY, 0.2, 3.905),
        ]
        assert all(backend.get_array_module(r) is strict.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_slices_copy_nothing_to_the_host(host_copies):
    """The recursion's loop makes no host copy: more slices, the same copies (the input checks)."""
    def propagate(n):
        multislice.propagate_slices(np.ones(GRID.gpts, np.complex64), gaussian_slices(n, peak=5.0), grid=GRID,
                                    energy=ENERGY, slice_thickness=1.0)

    assert host_copies(propagate, 2) == host_copies(propagate, 12)


def test_antialias_aperture_on_unequal_spacings_is_the_disc_of_the_coarser_axis():
    """dx = 0.1 Å, dy = 0.2 Å: the aperture keeps |k| <= (2/3) of the coarser axis's Nyquist frequency, a disc that
    fits both bands (the frequencies written out here with fftfreq); the coarse axis's Nyquist column is empty."""
    grid = grids.make_grid(gpts=(64, 32), sampling=(0.1, 0.2))
    aperture = backend.asnumpy(multislice.antialias_aperture(grid, xp=np))
    k = np.hypot(np.fft.fftfreq(64, 0.1)[:, None], np.fft.fftfreq(32, 0.2)[None, :])
    np.testing.assert_array_equal(aperture, (k <= 2 / 3 * min(1 / 0.2, 1 / 0.4) + 1e-9).astype(aperture.dtype))
    assert aperture[:, 16].sum() == 0
