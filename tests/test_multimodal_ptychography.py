"""mbook.multimodal: cryo specimens, scan drift, the ptychographic forward model and reconstruction, HAADF positions."""

import numpy as np
import pytest

from mbook.core import backend, grids
from mbook.electron import multislice, potentials, stem
from mbook.multimodal import drift, positions, ptycho_model, ptychography, reconstruction, specimens

SAMPLING = 0.5
ENERGY = 300e3


def _phase_object(rng, n=32, smooth=2.0, amplitude=0.4):
    """A smooth random phase [rad] (n, n), its potential [V·Å] for one slice at 300 keV."""
    from scipy.ndimage import gaussian_filter

    phase = gaussian_filter(rng.standard_normal((n, n)), smooth, mode="wrap")
    phase *= amplitude / phase.std()
    from mbook.electron import physics

    return phase, (phase / physics.interaction_parameter(ENERGY))[None].astype(np.float32)


def _scan(n_side=5, start=4.0, step=1.5):
    nominal = stem.scan_positions(start=(start, start), end=(start + n_side * step,) * 2, sampling=step)
    return backend.asnumpy(nominal)


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("n_slices", [1, 2])
def test_gradients_match_finite_differences(n_slices, device, rng):
    phase = 0.3 * rng.standard_normal((n_slices, 24, 24))
    probe = backend.asnumpy(ptychography.centred_probe(12, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=15,
                                                       defocus=30.0, electrons=50.0)).astype(np.complex128)
    probe = probe * (1 + 0.1 * rng.standard_normal((12, 12)))
    where = rng.uniform(3.5, 8.5, (5, 2))
    amplitudes = rng.uniform(0, 3, (5, 12, 12))
    kw = dict(sampling=SAMPLING, energy=ENERGY, slice_thickness=5.0, smoothness=0.1)
    _, g_phase, g_probe, g_positions = reconstruction.loss_and_gradients(phase, probe, where, amplitudes, **kw)
    g_phase, g_probe, g_positions = map(backend.asnumpy, (g_phase, g_probe, g_positions))

    def loss(ph=phase, pr=probe, po=where):
        return reconstruction.loss_and_gradients(ph, pr, po, amplitudes, **kw)[0]

    h = 1e-6
    for index in [(0, 10, 10), (n_slices - 1, 8, 12), (0, 3, 5)]:
        e = np.zeros_like(phase)
        e[index] = h
        assert (loss(ph=phase + e) - loss(ph=phase - e)) / (2 * h) == pytest.approx(g_phase[index], rel=1e-6,
                                                                                    abs=1e-6)
    for index in [(6, 6), (4, 7)]:
        e = np.zeros_like(probe)
        e[index] = h
        assert (loss(pr=probe + e) - loss(pr=probe - e)) / (2 * h) == pytest.approx(g_probe[index].real, rel=1e-6)
        assert (loss(pr=probe + 1j * e) - loss(pr=probe - 1j * e)) / (2 * h) == pytest.approx(g_probe[index].imag,
                                                                                              rel=1e-6)
    for index in [(0, 0), (2, 1), (4, 0)]:
        e = np.zeros_like(where)
        e[index] = h
        assert (loss(po=where + e) - loss(po=where - e)) / (2 * h) == pytest.approx(g_positions[index], rel=1e-6)


@pytest.mark.parametrize("n_slices", [1, 2])
def test_position_curvature_is_the_gauss_newton_sum_of_amplitude_derivatives(n_slices, device, rng):
    """The curvature the position steps divide by is ``2 Σ_k (∂A_k/∂r)²``, with ``A = |Ψ|`` the model's
    amplitudes: checked against central differences of the amplitudes along x and y."""
    phase = 0.3 * rng.standard_normal((n_slices, 24, 24))
    probe = backend.asnumpy(ptychography.centred_probe(12, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=15,
                                                       defocus=30.0, electrons=50.0)).astype(np.complex128)
    where = rng.uniform(3.6, 8.4, (4, 2))  # sub-pixel offsets, away from a corner's rounding
    amplitudes = rng.uniform(0, 3, (4, 12, 12))
    window = grids.make_grid(gpts=(12, 12), sampling=SAMPLING)
    propagator = None if n_slices == 1 else multislice.slice_propagator(window, energy=ENERGY, slice_thickness=5.0,
                                                                        antialias=False)
    args = (backend.asarray(phase), backend.asarray(probe))
    extra = (propagator, (SAMPLING,) * 2)
    curvature = backend.asnumpy(ptycho_model.batch_gradients(*args, backend.asarray(where), backend.asarray(amplitudes),
                                                             *extra, backend.asarray(np.ones((12, 12))),
                                                             curvature=True)[5])

    def model_amplitudes(po):
        chi = ptycho_model.forward(*args, backend.asarray(po), *extra)[-1]
        return np.abs(np.fft.fft2(backend.asnumpy(chi), norm="ortho"))

    h = 1e-5
    for axis in range(2):
        e = np.zeros_like(where)
        e[:, axis] = h
        derivative = (model_amplitudes(where + e) - model_amplitudes(where - e)) / (2 * h)
        assert curvature[:, axis] == pytest.approx(2 * np.sum(derivative**2, axis=(1, 2)), rel=1e-6)


# ------------------------------------------------------------------------------------------ adjoints
def test_probe_shift_adjoint(device, rng):
    probe = rng.standard_normal((12, 10)) + 1j * rng.standard_normal((12, 10))
    shifted = rng.standard_normal((4, 12, 10)) + 1j * rng.standard_normal((4, 12, 10))
    offsets = rng.uniform(-0.3, 0.3, (4, 2))
    lhs = np.vdot(backend.asnumpy(ptychography.shift_probes(probe, offsets, SAMPLING)), shifted)
    rhs = np.vdot(probe, backend.asnumpy(ptychography.shift_probes_adjoint(shifted, offsets, SAMPLING)))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_window_gather_scatter_adjoint(device, rng):
    image, patches = rng.standard_normal((20, 18)), rng.standard_normal((6, 8, 8))
    corners, _ = ptychography.window_corners(backend.asarray(rng.uniform(2.0, 6.0, (6, 2))), (SAMPLING,) * 2,
                                             (8, 8), (20, 18))
    index = ptychography.window_indices(corners, (8, 8), (20, 18))
    lhs = np.vdot(backend.asnumpy(ptychography.gather_windows(image, index)), patches)
    rhs = np.vdot(image, backend.asnumpy(ptychography.scatter_windows(patches, index, (20, 18))))
    assert lhs == pytest.approx(rhs, rel=1e-12)


# ------------------------------------------------------------------------------------------ forward model
def test_vacuum_patterns_hold_every_electron(device):
    grid = grids.make_grid(gpts=(40, 40), sampling=SAMPLING)
    patterns = ptychography.diffraction_intensities(np.zeros((2, 40, 40), np.float32), grid=grid, energy=ENERGY,
                                                    slice_thickness=10.0, semiangle_cutoff=10.0, defocus=100.0,
                                                    positions=_scan(3, 8.0, 1.3).reshape(-1, 2), gpts=24)
    assert backend.get_array_module(patterns) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(patterns).sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_whole_cell_window_equals_stem_scan(rng):
    # With the window as large as the cell, the windowed multislice is the periodic STEM scan.
    grid = grids.make_grid(gpts=(32, 32), sampling=SAMPLING)
    _, potential = _phase_object(rng, 32)
    potential = np.concatenate([potential, potential[:, ::-1]])
    centre = np.array([[16 * SAMPLING, 16 * SAMPLING]])
    ours = ptychography.diffraction_intensities(potential, grid=grid, energy=ENERGY, slice_thickness=8.0,
                                                semiangle_cutoff=12.0, defocus=50.0, positions=centre, gpts=32)
    theirs = stem.scan(potential, grid=grid, energy=ENERGY, slice_thickness=8.0, semiangle_cutoff=12.0, defocus=50.0,
                       positions=centre, detectors={}, diffraction=True)["diffraction"]
    np.testing.assert_allclose(backend.asnumpy(ours), backend.asnumpy(theirs), atol=2e-6)


def test_low_dose_counts_have_the_dose(device):
    intensities = np.full((50, 8, 8), 1 / 64)
    counts = ptychography.low_dose_counts(intensities, dose=20.0, scan_step=1.5, seed=0)
    assert float(counts.sum(axis=(1, 2)).mean()) == pytest.approx(20.0 * 1.5**2, rel=0.05)


# ------------------------------------------------------------------------------------------ reconstruction
def _dataset(rng, *, jitter, dose=1e5, smooth=2.0):
    grid = grids.make_grid(gpts=(32, 32), sampling=SAMPLING)
    phase, potential = _phase_object(rng, 32, smooth=smooth, amplitude=0.5)
    nominal = _scan(6, 5.0, 1.0).reshape(-1, 2)
    true = nominal + jitter * rng.standard_normal(nominal.shape)
    kw = dict(energy=ENERGY, semiangle_cutoff=15.0, defocus=60.0)
    intensities = ptychography.diffraction_intensities(potential, grid=grid, slice_thickness=5.0, positions=true,
                                                       gpts=16, **kw)
    counts = ptychography.low_dose_counts(intensities, dose=dose, scan_step=1.0, seed=1)
    probe = ptychography.centred_probe(16, sampling=SAMPLING, **kw)
    return phase, counts, probe, nominal, true


DETECTOR = dict(detector=ptychography.detector_mask(16, sampling=SAMPLING))


def _region():
    region = np.zeros((32, 32), bool)
    region[12:22, 12:22] = True
    return region


def test_reconstruction_recovers_the_phase(rng):
    # Each pass is one full-gradient step (5 batches of 8): at 40 iterations the error is still 0.10;
    # at 100 it is 0.014-0.020 over noise seeds 0-4 at this dose (momentum 0.9; 0.8 needs 200).
    phase, counts, probe, nominal, _ = _dataset(rng, jitter=0.0)
    result = reconstruction.reconstruct(counts, positions=nominal, probe=probe, object_gpts=(32, 32),
                                        sampling=SAMPLING, max_num_iter=100, batch_size=8, positions_from=None,
                                        probe_from=None, momentum=0.9, **DETECTOR)
    error, _ = reconstruction.phase_error(result.phase[0], phase, sampling=SAMPLING, region=_region())
    assert error < 0.03
    loss = backend.asnumpy(result.loss)
    assert loss[-1] < 0.2 * loss[0]


def test_small_batches_reach_the_full_batch_result(rng):
    # A pass over 18 batches of 2 must land where one batch of all 36 positions does: each batch takes
    # its share of the whole scan's step. Normalising each batch by its own illumination (ePIE's step)
    # instead gave a phase error of 0.79 against 0.17 at this dose, and got worse the smaller the batches.
    phase, counts, probe, nominal, _ = _dataset(rng, jitter=0.0, dose=1e3)
    kw = dict(positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=100,
              positions_from=None, probe_from=None, **DETECTOR)
    errors = [reconstruction.phase_error(reconstruction.reconstruct(counts, batch_size=b, **kw).phase[0], phase,
                                         sampling=SAMPLING, region=_region())[0] for b in (36, 2)]
    assert errors[0] < 0.25
    assert errors[1] < 1.1 * errors[0]


def test_position_correction_reduces_the_rms_error(rng):
    # Positions are fixed by the object's features: a finer object (1 px smoothing) pins them better.
    phase, counts, probe, nominal, true = _dataset(rng, jitter=0.3, smooth=1.0)
    kw = dict(positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=40, batch_size=8,
              probe_from=None, **DETECTOR)
    fixed = reconstruction.reconstruct(counts, positions_from=None, **kw)
    moved = reconstruction.reconstruct(counts, positions_from=5, position_step=1.0, **kw)
    before = drift.rms_error(nominal, true)
    after = drift.rms_error(moved.positions, true)
    assert after < 0.5 * before
    errors = [reconstruction.phase_error(r.phase[0], phase, sampling=SAMPLING, region=_region())[0]
              for r in (fixed, moved)]
    assert errors[1] < errors[0]


def test_reconstruction_same_on_every_device(device, on_cpu, rng):
    _, counts, probe, nominal, _ = _dataset(rng, jitter=0.2, dose=1e3)
    kw = dict(positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=4,
              batch_size=12, probe_from=1, positions_from=2, dtype=np.float64, n_slices=2, energy=ENERGY,
              slice_thickness=5.0)
    result = reconstruction.reconstruct(counts, **kw)
    reference = on_cpu(reconstruction.reconstruct, backend.asnumpy(counts), **kw)
    assert backend.get_array_module(result.phase) is backend.xp
    for ours, theirs in zip(result, reference):
        np.testing.assert_allclose(backend.asnumpy(ours), backend.asnumpy(theirs), rtol=1e-9, atol=1e-9)


def test_single_precision_keeps_every_wave_in_single_precision(device, rng):
    # float32 phase and positions and a complex64 probe: the model's waves stay complex64, as cuFFT and
    # the GPU's memory budget expect (an int64 window corner times a float32 sampling once made the
    # offsets float64, and through the phase ramps every wave complex128: 1.7x slower on the CPU)
    phase = backend.asarray(rng.standard_normal((1, 32, 32)).astype(np.float32))
    probe = ptychography.centred_probe(16, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=15, defocus=30.0)
    where = backend.asarray(rng.uniform(6.0, 10.0, (6, 2)).astype(np.float32))
    _, offsets = ptychography.window_corners(where, (SAMPLING, SAMPLING), (16, 16), (32, 32))
    _, ramp, _, incident, gratings, chi = ptycho_model.forward(phase, probe, where, None, (SAMPLING, SAMPLING))
    assert probe.dtype == np.complex64 and offsets.dtype == np.float32
    assert {a.dtype for a in (ramp, chi, *incident, *gratings)} == {np.dtype(np.complex64)}


def test_reconstruction_copies_nothing_per_iteration(no_copies_per_iteration, rng):
    _, counts, probe, nominal, _ = _dataset(rng, jitter=0.0, dose=1e3)
    counts, probe, nominal = map(backend.asnumpy, (counts, probe, nominal))
    no_copies_per_iteration(lambda n: reconstruction.reconstruct(
        counts, positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=n,
        batch_size=36, probe_from=0, positions_from=0))


# ------------------------------------------------------------------------------------------ drift and HAADF
def test_linear_drift_and_line_jitter(device):
    nominal = _scan(4, 2.0, 1.0)
    true = drift.drifted_positions(nominal, velocity=(0.1, -0.05), jitter=0.0, line_jitter=0.0, seed=0, flyback=1.0)
    times = backend.asnumpy(drift.scan_times((4, 4), flyback=1.0))[0]
    np.testing.assert_allclose(backend.asnumpy(true) - nominal, times[..., None] * np.array([0.1, -0.05]))
    lines = backend.asnumpy(drift.drifted_positions(nominal, velocity=(0, 0), jitter=0.0, line_jitter=0.5,
                                                    seed=0)) - nominal
    assert np.all(lines[..., 1] == 0) and np.allclose(lines[..., 0], lines[:1, :, 0])  # one shift per scan line
    assert drift.rms_error(nominal + 3.0, nominal) == pytest.approx(0.0, abs=1e-12)


def test_frame_registration_recovers_a_linear_drift(device, rng):
    from scipy.ndimage import gaussian_filter, shift as nd_shift

    image = gaussian_filter(rng.standard_normal((24, 24)), 1.5, mode="wrap")
    image = image - image.min()  # an intensity: the fit is a Poisson likelihood
    truth = np.array([[-1.8, 1.2], [-0.6, 0.4], [0.6, -0.4], [1.8, -1.2]])  # scan pixels, mean 0
    frames = np.stack([nd_shift(image, -s, order=3, mode="grid-wrap") for s in truth])  # frame(x) = u(x + s)
    frames = np.maximum(frames, 0.0)  # the cubic spline undershoots by a hair
    # 16-pixel frames that drift by 3.6 pixels: a correlation of the frames themselves returned about
    # half of these shifts (what leaves and enters the field pulls it to 0); the search over the drift,
    # each frame predicted from the others, is within a fifth of a pixel (0.08 px here)
    shifts = backend.asnumpy(positions.frame_shifts(frames[:, 4:20, 4:20], scan_step=2.0))
    np.testing.assert_allclose(shifts, 2.0 * truth, atol=0.4)
    offset, velocity = positions.drift_fit(2.0 * truth, np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_allclose(backend.asnumpy(velocity), [2.4, -1.6], atol=1e-12)


def _haadf_page_setup(seed, dose=1000.0):
    """The HAADF page's specimen, drifting scan and HAADF frames (its default size, at a total dose
    [e/Å²], the page's 1000 by default) for a specimen seed."""
    atoms = specimens.cryo_specimen(extent=(48.0, 48.0), thickness=40.0, radius=8.0, seed=seed, fiducials=2,
                                    fiducial_radius=5.0)
    grid = potentials.potential_grid(atoms, SAMPLING)
    nominal = stem.scan_positions(start=(12.0, 12.0), end=(36.0, 36.0), sampling=2.0)
    frame_time = float(drift.scan_times(nominal.shape[:2]).max()) + 3
    true = drift.drifted_positions(nominal, velocity=(2.7 / frame_time, -2.0 / frame_time), jitter=0.05,
                                   line_jitter=0.1, seed=seed + 3, num_frames=4)
    true = true - (true - nominal).reshape(-1, 2).mean(axis=0)
    times = drift.scan_times(nominal.shape[:2], num_frames=4)
    probe = ptychography.centred_probe(24, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=10.0, defocus=300.0)
    frames = positions.haadf_frames(positions.cross_section_map(atoms, grid), true, probe=probe, sampling=SAMPLING,
                                    electrons=dose / 4 * 2.0**2, seed=seed + 5)
    return frames, times, backend.xp.broadcast_to(nominal, true.shape), true


@pytest.mark.parametrize("seed", range(6))
def test_haadf_positions_are_within_1p5_angstrom_for_every_specimen_of_the_page(device, seed):
    # The page's four frames at 1000 e/Å² (a few dozen counts each, two gold fiducials at the corners
    # of the field): the nominal raster is 3.9 Å off. The per-frame least-squares fit that preceded
    # the drift search gave 1.5, 1.7, 0.5, 6.7, 7.1 and 3.0 Å on these six draws.
    frames, times, nominal, true = _haadf_page_setup(seed)
    shifts = positions.frame_shifts(frames, scan_step=2.0, times=times)
    assert backend.get_array_module(shifts) is backend.xp
    offset, velocity = positions.drift_fit(shifts, times.mean(axis=(1, 2)))
    estimated = positions.corrected_positions(nominal, times, offset=offset, velocity=velocity)
    assert drift.rms_error(nominal, true) > 3.8
    assert drift.rms_error(estimated, true) < 1.5


@pytest.mark.parametrize("dose, seed, bound", [(1e5, 1, 0.25), (1e5, 3, 0.25), (2e4, 3, 0.4)])
def test_haadf_positions_at_high_dose_have_no_kernel_bias(device, dose, seed, bound):
    # At 20 and 100 times the page's dose the frames are nearly noise-free and the error should fall
    # to the jitter and scan-line shifts left uncorrected (0.11 Å). Scoring in the fine searches every
    # visit, also those that no other frame covers and that fall back to the mean count, left a bias
    # that grew with the dose: 0.31 and 0.64 Å (seeds 1 and 3) at 100x, 0.76 Å (seed 3) at 20x; scored
    # on the visits covered under every candidate, 0.19, 0.19 and 0.31 Å.
    frames, times, nominal, true = _haadf_page_setup(seed, dose=dose)
    shifts = positions.frame_shifts(frames, scan_step=2.0, times=times)
    offset, velocity = positions.drift_fit(shifts, times.mean(axis=(1, 2)))
    estimated = positions.corrected_positions(nominal, times, offset=offset, velocity=velocity)
    assert drift.rms_error(estimated, true) < bound


def test_frame_shifts_model_the_drift_within_frames():
    # A drift as fast within frames as between them shears each frame; with the visit times the
    # search recovers the velocity of a noise-free series within 3 % (1.6 % here; 4 % when the fine
    # searches scored also the visits no other frame covers; 6 and 7 % with the frames taken as rigid).
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    image = gaussian_filter(rng.random((64, 64)), 2.0, mode="wrap")
    image = (image - image.min()) * 100
    times = backend.asnumpy(drift.scan_times((16, 16), num_frames=4))
    velocity = np.array([1.2, -0.8]) / times[1, 0, 0]  # pixels per dwell: 1.2 and -0.8 pixels per frame
    grid = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij"), -1) + 24
    where = grid + (times - times.mean())[..., None] * velocity
    from scipy.ndimage import map_coordinates

    frames = np.stack([map_coordinates(image, np.moveaxis(w, -1, 0), order=3) for w in where]).clip(0)
    shifts = backend.asnumpy(positions.frame_shifts(frames, scan_step=1.0, times=times))
    np.testing.assert_allclose(np.diff(shifts, axis=0), np.tile([1.2, -0.8], (3, 1)), rtol=0.03)


def test_haadf_signal_of_one_atom_is_its_cross_section_times_the_probe_density(device):
    from ase import Atoms

    atoms = Atoms("Au", positions=[(8.0, 8.0, 1.0)], cell=[16.0, 16.0, 2.0])
    grid = grids.make_grid(gpts=(32, 32), sampling=SAMPLING)
    sigma = positions.cross_section_map(atoms, grid, cross_section=4e-3)
    probe = np.zeros((8, 8), complex)
    probe[4, 4] = 1.0  # all electrons in one pixel
    signal = positions.haadf_signal(sigma, np.array([[8.0, 8.0], [9.0, 8.0]]), probe=probe, sampling=SAMPLING)
    np.testing.assert_allclose(backend.asnumpy(signal), [4e-3 / SAMPLING**2, 0.0], atol=1e-12)
    # A second probe lobe 1 Å along +y: the probe at r sees the atom at r + (0, 1 Å) through it, so the signal is
    # a correlation, h(r) = Σ σ(x) ρ(x - r): half the electrons at y = 7 and 8 Å, none at 9 (a convolution would
    # give them at 8 and 9).
    probe[4, 6] = 1.0
    signal = positions.haadf_signal(sigma, np.array([[8.0, 7.0], [8.0, 8.0], [8.0, 9.0]]), probe=probe,
                                    sampling=SAMPLING)
    np.testing.assert_allclose(backend.asnumpy(signal) / (4e-3 / SAMPLING**2), [0.5, 0.5, 0.0], atol=1e-12)


def test_vitreous_ice_has_its_density_and_water_geometry():
    ice = specimens.vitreous_ice((16.0, 16.0, 16.0), seed=2)
    assert specimens.mass_density(ice) == pytest.approx(0.92, abs=0.01)
    n = len(ice) // 3
    bonds = np.linalg.norm(ice.positions[n:].reshape(n, 2, 3) - ice.positions[:n, None], axis=-1)
    inside = np.all(np.abs(ice.positions[n:].reshape(n, 2, 3) - ice.positions[:n, None]) < 2, axis=(1, 2))
    np.testing.assert_allclose(bonds[inside], specimens.OH_BOND, atol=1e-9)


# ------------------------------------------------------------------------------------------ bad input
def _bad_calls():
    probe = np.ones((8, 8), complex)
    counts = np.ones((4, 8, 8))
    inside = np.full((4, 2), 4.0)
    nominal = _scan(2, 3.0, 1.0)
    grid = grids.make_grid(gpts=(16, 16), sampling=SAMPLING)
    forward = dict(grid=grid, energy=ENERGY, slice_thickness=5.0, semiangle_cutoff=10.0, gpts=8)
    rec = dict(positions=inside, probe=probe, object_gpts=(16, 16), sampling=SAMPLING)
    return [
        ("dose", lambda: ptychography.low_dose_counts(np.ones((2, 4, 4)), dose=0.0, scan_step=1.0, seed=0)),
        ("dose", lambda: ptychography.low_dose_counts(np.ones((2, 4, 4)), dose=-5.0, scan_step=1.0, seed=0)),
        ("scan_step", lambda: ptychography.low_dose_counts(np.ones((2, 4, 4)), dose=5.0, scan_step=0.0, seed=0)),
        ("positions", lambda: ptychography.diffraction_intensities(np.zeros((1, 16, 16)),
                                                                   positions=[[1.0, 4.0]], **forward)),
        ("gpts", lambda: ptychography.diffraction_intensities(np.zeros((1, 16, 16)), positions=[[4.0, 4.0]],
                                                              **{**forward, "gpts": 32})),
        ("potential", lambda: ptychography.diffraction_intensities(np.zeros((1, 12, 16)), positions=[[4.0, 4.0]],
                                                                   **forward)),
        ("counts", lambda: reconstruction.reconstruct(-counts, **rec)),
        ("counts", lambda: reconstruction.reconstruct(counts[:3], **rec)),
        ("positions", lambda: reconstruction.reconstruct(counts, **{**rec, "positions": inside + 5.0})),
        ("gpts", lambda: reconstruction.reconstruct(counts, **{**rec, "object_gpts": (6, 6)})),
        ("max_num_iter", lambda: reconstruction.reconstruct(counts, max_num_iter=0, **rec)),
        ("batch_size", lambda: reconstruction.reconstruct(counts, batch_size=0, **rec)),
        ("object_step", lambda: reconstruction.reconstruct(counts, object_step=-1.0, **rec)),
        ("smoothness", lambda: reconstruction.reconstruct(counts, smoothness=-1.0, **rec)),
        ("position_groups", lambda: reconstruction.reconstruct(counts, position_groups=[0, 1], **rec)),
        ("energy", lambda: reconstruction.reconstruct(counts, n_slices=2, **rec)),
        ("amplitudes", lambda: reconstruction.loss_and_gradients(np.zeros((1, 16, 16)), probe, inside,
                                                                 np.ones((4, 6, 6)), sampling=SAMPLING)),
        ("phase", lambda: reconstruction.phase_error(np.zeros((4, 4)), np.zeros((5, 4)), sampling=SAMPLING)),
        ("velocity", lambda: drift.drifted_positions(nominal, velocity=(np.nan, 0), jitter=0, line_jitter=0,
                                                     seed=0)),
        ("jitter", lambda: drift.drifted_positions(nominal, velocity=(0, 0), jitter=-1, line_jitter=0, seed=0)),
        ("nominal", lambda: drift.drifted_positions(np.zeros((3, 2)), velocity=(0, 0), jitter=0, line_jitter=0,
                                                    seed=0)),
        ("reference", lambda: drift.rms_error(np.zeros((3, 2)), np.zeros((4, 2)))),
        ("electrons", lambda: positions.haadf_frames(np.ones((16, 16)), np.full((2, 2, 2, 2), 4.0), probe=probe,
                                                     sampling=SAMPLING, electrons=0.0, seed=0)),
        ("probe", lambda: positions.haadf_signal(np.ones((16, 16)), np.full((2, 2), 4.0), probe=np.ones((20, 20)),
                                                 sampling=SAMPLING)),
        ("positions", lambda: positions.haadf_signal(np.ones((16, 16)), np.full((2, 2), 9.0), probe=probe,
                                                     sampling=SAMPLING)),
        ("times", lambda: positions.corrected_positions(nominal, np.zeros((3, 3)), offset=[0, 0],
                                                        velocity=[0, 0])),
        ("frames", lambda: positions.frame_shifts(np.ones((1, 16, 16)), scan_step=1.0)),
        ("frames", lambda: positions.frame_shifts(-np.ones((2, 16, 16)), scan_step=1.0)),
        ("times", lambda: positions.frame_shifts(np.ones((2, 16, 16)), scan_step=1.0, times=np.ones((2, 16, 15)))),
        ("times", lambda: positions.frame_shifts(np.ones((2, 16, 16)), scan_step=1.0,
                                                 times=np.random.default_rng(0).random((2, 16, 16)))),
        ("smoothing", lambda: positions.frame_shifts(np.ones((2, 16, 16)), scan_step=1.0, smoothing=0.0)),
        ("shifts", lambda: positions.drift_fit(np.zeros((3, 2)), np.zeros(4))),
        ("thickness", lambda: specimens.cryo_specimen(extent=(30.0, 30.0), thickness=10.0, radius=8.0, seed=0)),
        ("density", lambda: specimens.vitreous_ice((10.0, 10.0, 10.0), seed=0, density=-1.0)),
    ]


@pytest.mark.parametrize("name, call", _bad_calls(), ids=lambda value: value if isinstance(value, str) else "")
def test_bad_input_is_refused_naming_the_parameter(name, call):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


# ------------------------------------------------------------------------------------------ measures and callbacks
def test_phase_snr_is_scale_free_and_follows_the_noise(rng):
    truth = rng.standard_normal((64, 64))
    noise = rng.standard_normal((64, 64))
    error, snr = reconstruction.phase_error(0.3 * truth, truth, sampling=1.0)
    assert error == pytest.approx(0.49, rel=1e-9) and snr > 1e10  # a scaled truth: error 0.7², infinite SNR
    _, snr = reconstruction.phase_error(truth + 2.0 * noise, truth, sampling=1.0)
    assert snr == pytest.approx(1 / 4, rel=0.15)  # signal power 1, noise power 4


def test_phase_error_compares_only_the_band_below_the_cutoff():
    """An error at 1/(2 Å), above a cutoff of 1/(4 Å), vanishes from the comparison; the truth at 1/(8 Å) stays.
    Both frequencies lie on the 64-pixel grid, so the low-pass removes the error exactly."""
    x = np.arange(64)[:, None] * np.ones(64)
    truth = np.cos(2 * np.pi * x / 16)  # 8 Å at 0.5 Å a pixel
    estimate = truth + 0.5 * np.cos(2 * np.pi * x / 4)  # plus 2 Å
    error, snr = reconstruction.phase_error(estimate, truth, sampling=0.5)
    assert error == pytest.approx(0.25, rel=1e-9) and snr == pytest.approx(4.0, rel=1e-9)
    error, snr = reconstruction.phase_error(estimate, truth, sampling=0.5, cutoff=1 / 4)
    assert error < 1e-12 and snr > 1e10


def test_callback_every_n_iterations(rng):
    _, counts, probe, nominal, _ = _dataset(rng, jitter=0.0, dose=1e3)
    seen = []
    reconstruction.reconstruct(counts, positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING,
                               max_num_iter=7, batch_size=36, callback_every=3,
                               callback=lambda i, r: seen.append((i, r.phase.shape)))
    assert seen == [(3, (1, 32, 32)), (6, (1, 32, 32)), (7, (1, 32, 32))]


def test_generation_is_memory_bounded(rng):
    grid = grids.make_grid(gpts=(32, 32), sampling=SAMPLING)
    _, potential = _phase_object(rng, 32)
    scan = _scan(4, 5.0, 1.0).reshape(-1, 2)
    kw = dict(grid=grid, energy=ENERGY, slice_thickness=5.0, semiangle_cutoff=12.0, positions=scan, gpts=16)
    whole = ptychography.diffraction_intensities(potential, **kw)
    # a budget for the output and about two positions at a time gives the same patterns, batch by batch
    fixed = 2 * 32 * 32 * 8 + 16 * 16 * 4 * len(scan) + 16 * 16 * 8
    small = ptychography.diffraction_intensities(potential, budget=fixed + 2 * 16 * 16 * 28, **kw)
    np.testing.assert_allclose(backend.asnumpy(small), backend.asnumpy(whole), atol=1e-7)
    with pytest.raises(MemoryError, match="MiB"):
        ptychography.diffraction_intensities(potential, budget=1000, **kw)


def test_probe_retrieval_recovers_from_a_wrong_defocus(rng):
    phase, counts, probe, nominal, _ = _dataset(rng, jitter=0.0, smooth=1.0)
    wrong = ptychography.centred_probe(16, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=15.0, defocus=30.0)
    # With the wrong probe held fixed the phase error stays at 0.17; retrieving it brings the error to
    # 0.067 after 150 iterations (0.017 with the true probe).
    kw = dict(positions=nominal, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=150, batch_size=8,
              positions_from=None, probe=wrong, momentum=0.9, **DETECTOR)
    fixed = reconstruction.reconstruct(counts, probe_from=None, **kw)
    retrieved = reconstruction.reconstruct(counts, probe_from=5, probe_step=1.0, **kw)
    errors = [reconstruction.phase_error(r.phase[0], phase, sampling=SAMPLING, region=_region())[0]
              for r in (fixed, retrieved)]
    assert errors[1] < 0.5 * errors[0]

    def amplitude_error(candidate):
        a, b = np.abs(backend.asnumpy(candidate)), np.abs(backend.asnumpy(probe))
        b = b * np.linalg.norm(a) / np.linalg.norm(b)
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    assert amplitude_error(retrieved.probe) < 0.7 * amplitude_error(fixed.probe)


def test_windows_made_once_give_the_same_reconstruction(device, rng, monkeypatch):
    # A fixed probe and fixed positions: every window and shifted probe made once for the scan (two
    # gathers a batch) or, over a tiny memory budget, batch by batch; the same floats either way.
    from mbook.core import progress

    _, counts, probe, nominal, _ = _dataset(rng, jitter=0.0, dose=1e3)
    options = dict(positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=4,
                   batch_size=9, probe_from=None, positions_from=None, smoothness=1.0)
    once = reconstruction.reconstruct(counts, **options)
    windows = len(nominal) * probe.size * (8 + 2 * 8)  # int64 indices, two complex64 arrays [bytes]
    assert progress.memory_budget() // 4 >= 2 * windows  # they and a pass's reordered copy
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(2 * windows / 2**30))  # room for the batches, not for these
    batched = reconstruction.reconstruct(counts, **options)
    tolerance = dict(rtol=1e-6, atol=1e-6) if device == "gpu" else dict(rtol=0, atol=0)  # cuFFT batch shapes
    np.testing.assert_allclose(backend.asnumpy(once.phase), backend.asnumpy(batched.phase), **tolerance)
    np.testing.assert_allclose(backend.asnumpy(once.loss), backend.asnumpy(batched.loss), **tolerance)


def test_windows_leave_no_probe_or_position_gradient():
    from mbook.multimodal import ptycho_model

    # a kernel takes its arrays on one device: the selected one (MBOOK_DEVICE may select the stand-in)
    phase = backend.asarray(np.zeros((1, 32, 32), np.float32))
    probe = ptychography.centred_probe(16, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=15.0, defocus=40.0)
    positions = backend.asarray(np.array([[8.0, 8.0], [8.5, 9.0]], np.float32))
    index, _, psi = ptycho_model.incident_windows(probe, positions, (SAMPLING,) * 2, (32, 32))
    amplitudes = backend.asarray(np.ones((2, 16, 16), np.float32))
    detector = backend.asarray(np.ones((16, 16), np.float32))
    with pytest.raises(ValueError, match="probe_gradient=False"):
        ptycho_model.batch_gradients(phase, probe, positions, amplitudes, None, (SAMPLING,) * 2, detector,
                                     windows=(index, psi))
    made = ptycho_model.batch_gradients(phase, probe, positions, amplitudes, None, (SAMPLING,) * 2, detector,
                                        position_gradient=False, probe_gradient=False)
    given = ptycho_model.batch_gradients(phase, probe, positions, amplitudes, None, (SAMPLING,) * 2, detector,
                                         position_gradient=False, probe_gradient=False, windows=(index, psi))
    for a, b in zip(made[:3], given[:3]):
        np.testing.assert_array_equal(backend.asnumpy(a), backend.asnumpy(b))
    assert given[3] is None and given[4] is None


def test_low_dose_counts_use_the_area_of_a_rectangular_scan_step():
    """Poisson(I D Δx Δy): I = 0.01, D = 1e4 e/Å², a step of 1 × 2 Å: 200 counts per pattern pixel on average
    (within 5 standard errors of the mean of 16 384 pixels)."""
    intensity = np.full((4, 64, 64), 0.01, dtype=np.float32)
    counts = backend.asnumpy(ptychography.low_dose_counts(intensity, dose=1e4, scan_step=(1.0, 2.0), seed=0))
    assert abs(counts.mean() - 200) < 5 * np.sqrt(200 / counts.size)


def test_cross_section_map_default_is_its_documented_power_law():
    """σ(Z) = 5e-3 (Z/79)^1.7 by default: one Si atom's map holds 5e-3 (14/79)^1.7 in all."""
    from ase import Atoms

    atoms = Atoms("Si", positions=[[2.0, 2.0, 1.0]], cell=[8.0, 8.0, 2.0])
    total = backend.asnumpy(positions.cross_section_map(atoms, grids.make_grid(gpts=(16, 16), extent=(8.0, 8.0))))
    assert total.sum() == pytest.approx(5e-3 * (14 / 79) ** 1.7, rel=1e-12)


def test_small_batches_with_the_smoothness_prior_reach_the_full_batch_result():
    """Each batch takes its share |batch|/n of the prior's gradient, so a pass applies the prior once whatever the
    batch size: with smoothness 2, batches of 4 reach the one-batch phase to 2 % (0.6 % measured; the prior applied
    n/|batch| times per pass gives 6.5 %)."""
    _, counts, probe, nominal, _ = _dataset(np.random.default_rng(0), jitter=0.0)
    kwargs = dict(positions=nominal, probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=150,
                  positions_from=None, probe_from=None, smoothness=2.0, **DETECTOR)
    full, small = (backend.asnumpy(reconstruction.reconstruct(counts, batch_size=b, **kwargs).phase[0])[10:24, 10:24]
                   for b in (len(nominal), 4))
    full, small = full - full.mean(), small - small.mean()
    assert np.linalg.norm(small - full) < 0.02 * np.linalg.norm(full)


def test_a_position_group_moves_as_one_recording():
    """Every pattern recorded twice at the same nominal position, each pair grouped: gradient, curvature and
    illumination all double, so the positions are those of the single recording ungrouped, to rounding (moving
    each member by the group's gradient over its own curvature goes twice as far)."""
    _, counts, probe, nominal, _ = _dataset(np.random.default_rng(0), jitter=0.3)
    counts = backend.asnumpy(counts)
    n = len(nominal)
    kwargs = dict(probe=probe, object_gpts=(32, 32), sampling=SAMPLING, max_num_iter=15, positions_from=0,
                  position_step=1.0, probe_from=None, momentum=0.0, dtype=np.float64, **DETECTOR)
    single = backend.asnumpy(reconstruction.reconstruct(counts, positions=nominal, batch_size=n, **kwargs).positions)
    double = backend.asnumpy(reconstruction.reconstruct(
        np.concatenate([counts, counts]), positions=np.concatenate([nominal, nominal]),
        position_groups=np.concatenate([np.arange(n), np.arange(n)]), batch_size=2 * n, **kwargs).positions)
    moved = np.abs(single - nominal).max()
    assert moved > 0.05
    np.testing.assert_allclose(double[:n], single, rtol=0, atol=1e-9 * max(moved, 1))
    np.testing.assert_allclose(double[n:], single, rtol=0, atol=1e-9 * max(moved, 1))
