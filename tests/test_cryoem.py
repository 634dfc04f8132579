"""Cryo-EM images (mbook.cryoem.particles, .image_formation, .micrographs, .voxels, .volumes) against exact facts.

Every test whose result could depend on the device takes the ``device`` fixture (cpu, the strict
GPU stand-in, a GPU when present) and compares through ``backend.asnumpy``.
"""

import math

import mrcfile
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from mbook.core import backend, grids
from mbook.cryoem import ctf, image_formation, micrographs, particles, volumes, voxels, white_noise
from mbook.geometry import so3
from mbook.electron import hrtem

ATOMS = particles.random_structure(60, radii=(12.0, 10.0, 8.0), sigma=2.0, seed=3)
POSITIONS, WEIGHTS = backend.asnumpy(ATOMS.positions), backend.asnumpy(ATOMS.weights)  # host copies for checks
GRID2 = grids.make_grid(gpts=(32, 32), sampling=2.0)
GRID3 = grids.make_grid(gpts=(32, 32, 32), sampling=2.0)


def _stack(batches):
    return np.concatenate([backend.asnumpy(b.images) for b in batches])


# --------------------------------------------------------------------------- rotations
def test_random_rotations_are_proper_rotations(device):
    r = backend.asnumpy(so3.random_rotations(500, seed=1))
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_rotations_are_haar_uniform(device):
    """Rotation angle density (1 - cos θ)/π and a uniform rotated axis, by Kolmogorov-Smirnov."""
    r = so3.random_rotations(20000, seed=2)
    theta = backend.asnumpy(so3.rotation_angles(r))
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 0.01
    assert stats.kstest(backend.asnumpy(r[:, 2, 2]), "uniform", args=(-1, 2)).pvalue > 0.01  # cos of the tilt of z


def test_a_seed_gives_the_same_rotations_on_every_device(device):
    r = backend.asnumpy(so3.random_rotations(50, seed=7))
    backend.set_device("cpu")
    np.testing.assert_allclose(r, so3.random_rotations(50, seed=7), rtol=1e-14, atol=1e-15)


def test_uniform_euler_angles_fail_the_haar_test():
    """The statistic has power: the classic mistake (uniform Euler angles) is rejected."""
    angles = np.random.default_rng(3).uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], (20000, 3))
    r = Rotation.from_euler("zyz", angles).as_matrix()
    assert stats.kstest(r[:, 2, 2], "uniform", args=(-1, 2)).pvalue < 1e-6


def test_quaternion_and_axis_rotation_agree(device):
    q = [math.cos(0.35), 0.0, 0.0, math.sin(0.35)]  # 0.7 rad about z
    np.testing.assert_allclose(backend.asnumpy(so3.quaternions_to_matrices([q])[0]),
                               backend.asnumpy(so3.axis_rotation([0, 0, 1], 0.7)), atol=1e-14)
    assert float(so3.rotation_angles(so3.axis_rotation([1, 2, 3], 2.1))[0]) == pytest.approx(2.1)


def test_batched_axis_rotations_equal_single_ones(device):
    rng = np.random.default_rng(8)
    axes, angles = rng.standard_normal((5, 3)), rng.uniform(-3, 3, 5)
    batch = backend.asnumpy(so3.axis_rotations(axes, angles))
    for axis, angle, matrix in zip(axes, angles, batch):
        np.testing.assert_allclose(matrix, backend.asnumpy(so3.axis_rotation(axis, angle)), atol=1e-14)
        np.testing.assert_allclose(matrix @ axis, axis, atol=1e-12)  # the axis is fixed


# --------------------------------------------------------------------------- volumes and projections
def test_gaussian_volume_keeps_mass_and_centre(device):
    volume = backend.asnumpy(particles.gaussian_volume(ATOMS, GRID3))
    assert volume.sum() * 2.0**3 == pytest.approx(WEIGHTS.sum(), rel=1e-8)
    x = (np.arange(32) - 16) * 2.0
    centre = [np.sum(volume.sum(axis=tuple(a for a in range(3) if a != i)) * x) / volume.sum() for i in range(3)]
    np.testing.assert_allclose(centre, POSITIONS.mean(axis=0), atol=1e-6)  # Å; point sampling


def test_fourier_slice_theorem_holds_for_atom_projections(device):
    """The DFT of a projection equals the analytic 3D transform on the rotated central plane."""
    atoms = ATOMS._replace(sigma=np.full(60, 3.0))  # 1.5 pixels: aliasing below 1e-12
    rotation = backend.asnumpy(so3.random_rotations(1, seed=4))
    image = backend.asnumpy(particles.project_atoms(atoms, rotation, GRID2))[0]
    k = np.fft.fftfreq(32, 2.0)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    dft = 4.0 * np.fft.fft2(np.fft.ifftshift(image))
    plane = np.stack([kx, ky, np.zeros_like(kx)], -1) @ rotation[0]  # Rᵀ k, row vectors
    analytic = np.einsum("a,...a->...", WEIGHTS,
                         np.exp(-2 * np.pi**2 * 3.0**2 * np.sum(plane**2, -1))[..., None]
                         * np.exp(-2j * np.pi * plane @ POSITIONS.T))
    low = kx**2 + ky**2 < 0.15**2
    assert np.max(np.abs(dft - analytic)[low]) < 1e-10 * WEIGHTS.sum()


def test_volume_projection_matches_exact_atom_projection(device):
    volume = particles.gaussian_volume(ATOMS, GRID3)
    rotations = so3.random_rotations(3, seed=5)
    exact = particles.project_atoms(ATOMS, rotations, GRID2)
    interpolated = voxels.project_volume(volume, rotations, sampling=2.0)
    assert volumes.relative_error(interpolated, exact) < 0.03  # trilinear interpolation of σ = 1 voxel atoms
    np.testing.assert_allclose(backend.asnumpy(voxels.project_volume(volume, np.eye(3), sampling=2.0)[0]),
                               2.0 * backend.asnumpy(volume).sum(2), rtol=1e-12)


def test_projection_runs_on_every_device(device):
    volume = particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(16,) * 3, sampling=2.0))
    rotations = so3.random_rotations(2, seed=6)
    result = backend.asnumpy(voxels.project_volume(volume, rotations, sampling=2.0))
    host_volume, host_rotations = backend.asnumpy(volume), backend.asnumpy(rotations)
    backend.set_device("cpu")
    reference = voxels.project_volume(host_volume, host_rotations, sampling=2.0)
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-7 * abs(reference).max())


def test_batched_volume_projection_equals_one_rotation_at_a_time(monkeypatch, device):
    """The rotations are an array axis: a stack, in one batch or in budget-sized ones, equals a per-rotation
    reference computed here with SciPy's trilinear interpolation (map_coordinates, order 1), and the
    back-projection of a stack equals the sum of one-image back-projections."""
    from scipy import ndimage

    volume = backend.asnumpy(particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(16,) * 3, sampling=2.0)))
    rotations = backend.asnumpy(so3.random_rotations(5, seed=12))
    n = 16
    c = np.arange(n) - n // 2
    points = np.stack(np.meshgrid(c, c, c, indexing="ij")).reshape(3, -1)
    reference = np.stack([2.0 * ndimage.map_coordinates(volume, r.T @ points + n // 2, order=1, mode="grid-constant")
                          .reshape(n, n, n).sum(2) for r in rotations])
    whole = voxels.project_volume(volume, rotations, sampling=2.0)
    two = str(2.5 * voxels.GATHER_BYTES_PER_VOXEL * n**3 / 2**30)  # a budget of two rotations a batch
    monkeypatch.setenv("MBOOK_MEMORY_GB", two)
    assert voxels._rotation_batch(5, n) == 2
    pieces = voxels.project_volume(volume, rotations, sampling=2.0)
    assert backend.get_array_module(whole) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(whole), reference, rtol=1e-12, atol=1e-12 * abs(reference).max())
    np.testing.assert_array_equal(backend.asnumpy(pieces), backend.asnumpy(whole))
    images = np.random.default_rng(13).standard_normal((5, n, n))
    stacked = backend.asnumpy(voxels.backproject(images, rotations, sampling=2.0))
    one_by_one = sum(backend.asnumpy(voxels.backproject(image[None], r[None], sampling=2.0))
                     for image, r in zip(images, rotations))
    np.testing.assert_allclose(stacked, one_by_one, rtol=1e-12, atol=1e-12 * abs(one_by_one).max())


def test_stacked_conformations_equal_one_at_a_time(device):
    """Atoms with a batch axis (one conformation per image) give each conformation's own projection and volume."""
    rng = np.random.default_rng(9)
    moved = POSITIONS[None] + rng.normal(0, 2.0, (3, 60, 3))
    stacked = ATOMS._replace(positions=moved)
    rotations = so3.random_rotations(3, seed=10)
    images = backend.asnumpy(particles.project_atoms(stacked, rotations, GRID2))
    maps = backend.asnumpy(particles.gaussian_volume(stacked, grids.make_grid(gpts=(16,) * 3, sampling=3.0)))
    for j in range(3):
        one = ATOMS._replace(positions=moved[j])
        np.testing.assert_allclose(images[j], backend.asnumpy(particles.project_atoms(one, rotations[j], GRID2))[0],
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(maps[j], backend.asnumpy(particles.gaussian_volume(
            one, grids.make_grid(gpts=(16,) * 3, sampling=3.0))), rtol=1e-12, atol=1e-15)


def test_projections_do_not_depend_on_the_memory_budget(device):
    rotations = so3.random_rotations(7, seed=11)
    whole = backend.asnumpy(particles.project_atoms(ATOMS, rotations, GRID2))
    pieces = backend.asnumpy(particles.project_atoms(ATOMS, rotations, GRID2, budget=200_000))  # 2 per batch
    np.testing.assert_allclose(pieces, whole, rtol=1e-13, atol=1e-16)
    assert whole[0].sum() * 4.0 == pytest.approx(WEIGHTS.sum(), rel=1e-6)  # mass kept


def test_transform_and_concatenate_keep_shapes_and_distances(device):
    rotation = so3.axis_rotation([0, 1, 1], 0.8)
    moved = particles.transform_atoms(ATOMS, rotation, translation=(1.0, 2.0, 3.0), center=(5.0, 0.0, 0.0))
    p = backend.asnumpy(moved.positions)
    pairwise = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(pairwise(p), pairwise(POSITIONS), atol=1e-11)  # rigid
    both = particles.concatenate_atoms(ATOMS, moved)
    assert both.positions.shape == (120, 3) and both.weights.shape == (120,)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: voxels.project_volume(np.zeros((8, 8, 6)), np.eye(3), sampling=1.0), "cubic"),
        (lambda: voxels.project_volume(np.zeros((8, 8, 8)), 2 * np.eye(3), sampling=1.0), "orthogonal"),
        (lambda: particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(8, 8, 6), sampling=1.0)), "cubic"),
        (lambda: particles.make_atoms(np.zeros((2, 3)), sigma=-1.0), "sigma"),
        (lambda: particles.make_atoms(np.zeros((2, 3)), weights=-1.0), "weights"),
        (lambda: particles.make_atoms(np.zeros((2, 2))), r"\(n, 3\)"),
        (lambda: particles.random_structure(500, radii=(5.0, 5.0, 5.0)), "could not place"),
        (lambda: particles.project_atoms(ATOMS._replace(positions=np.zeros((2, 60, 3))), so3.random_rotations(3),
                                         GRID2), "conformations"),
        (lambda: so3.random_rotations(0), "n must be"),
        (lambda: so3.axis_rotations([0.0, 0.0, 0.0], 1.0), "non-zero"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- image formation
def test_ctf_is_the_lens_model_times_the_b_factor_envelope(device):
    transfer = backend.asnumpy(ctf.ctf(GRID2, defocus=1.5e4, B_factor=80.0))
    lens = backend.asnumpy(hrtem.contrast_transfer_function(GRID2, energy=300e3, defocus=1.5e4, Cs=2.7e7,
                                                            amplitude_contrast=0.1))
    k2 = backend.asnumpy(grids.frequency_squared(GRID2))
    np.testing.assert_allclose(transfer, lens * np.exp(-20.0 * k2), rtol=1e-12)
    assert transfer[0, 0] == pytest.approx(-0.1)  # -A at k = 0


def test_ctf_profile_is_the_ctf_finely_sampled(device):
    """On the image grid's frequencies the profile equals the 2D CTF; finely sampled it resolves every ripple."""
    defoci = [1.0e4, 2.5e4]
    k, profile = (backend.asnumpy(a) for a in ctf.ctf_profile(0.25, defocus=defoci, B_factor=50.0,
                                                                      num_samples=16))
    np.testing.assert_allclose(k, np.arange(16) / 64.0, rtol=1e-14)
    grid_ctf = backend.asnumpy(ctf.ctf(GRID2, defocus=defoci, B_factor=50.0))
    np.testing.assert_allclose(profile, grid_ctf[:, :16, 0], rtol=1e-12, atol=1e-15)

    def sign_changes(n):
        return int(np.sum(np.diff(np.sign(backend.asnumpy(ctf.ctf_profile(
            0.25, defocus=2.5e4, num_samples=n)[1]))) != 0))
    assert sign_changes(4000) == sign_changes(8000)  # converged: every zero resolved
    assert sign_changes(4000) > sign_changes(16) + 5  # the image grid's 16 samples miss most of them


def test_integer_shifts_are_rolls(device):
    image = particles.project_atoms(ATOMS, np.eye(3), GRID2)
    base = backend.asnumpy(image_formation.form_images(image, GRID2, defocus=[1e4]))
    shifted = backend.asnumpy(image_formation.form_images(image, GRID2, defocus=[1e4], shifts=[[6.0, -4.0]]))
    np.testing.assert_allclose(shifted[0], np.roll(base[0], (3, -2), axis=(0, 1)), atol=1e-12)


def test_noise_has_the_requested_snr(device):
    params = micrographs.draw_parameters(1024, seed=7, contrast_spread=0.3)
    noisy = _stack(micrographs.stream_images(ATOMS, params, GRID2, snr=0.5, seed=8))
    clean = _stack(micrographs.stream_images(ATOMS, params, GRID2, seed=8))
    snr = np.mean(np.var(clean, axis=(1, 2))) / np.var(noisy - clean)
    assert snr == pytest.approx(0.5, rel=0.06)  # σ from a 256-image pilot: a few % off over 1024 images


def test_noise_is_white_standard_normal_and_per_image(device):
    """add_noise gives N(0, σ²) pixels, and image i gets the same noise whichever call makes it."""
    zeros = np.zeros((6, 16, 15))  # 240 pixels: not a multiple of the 4 uniforms of a Philox block
    noise = backend.asnumpy(image_formation.add_noise(zeros, 2.0, seed=3))
    assert stats.kstest(noise.ravel() / 2.0, "norm").pvalue > 0.01
    assert abs(np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]) < 0.1  # white
    later = backend.asnumpy(image_formation.add_noise(zeros[:2], 2.0, seed=3, first_index=4))
    np.testing.assert_array_equal(later, noise[4:])
    other = backend.asnumpy(image_formation.add_noise(zeros[:1], 2.0, seed=4))
    assert not np.allclose(other[0], noise[0])


def test_a_volume_stack_keeps_its_gathers_within_the_budget(device, monkeypatch):
    """For a voxel volume the stream counts each image's gather (GATHER_BYTES_PER_VOXEL per voxel) and hands
    project_volume the batch's share of the budget, so a small budget gives more batches, the same images."""
    volume = particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(GRID2.gpts[0],) * 3, sampling=GRID2.sampling[0]))
    params = micrographs.draw_parameters(6, seed=3)
    gather = voxels.GATHER_BYTES_PER_VOXEL * GRID2.gpts[0] ** 3
    budgets = []
    project = voxels.project_volume
    monkeypatch.setattr(voxels, "project_volume", lambda *a, budget=None, **k: budgets.append(budget) or project(
        *a, budget=budget, **k))
    whole = _stack(micrographs.stream_images(volume, params, GRID2, seed=1))
    small = _stack(micrographs.stream_images(volume, params, GRID2, seed=1, budget=3 * gather))
    assert budgets[0] >= 6 * gather and all(b <= 3 * gather for b in budgets[1:]) and len(budgets) > 2
    np.testing.assert_array_equal(whole, small)
    with pytest.raises(MemoryError, match="budget"):
        next(micrographs.stream_images(volume, params, GRID2, seed=1, budget=gather // 2))


def test_stack_does_not_depend_on_the_memory_budget(device):
    params = micrographs.draw_parameters(40, seed=9, max_shift=5.0, contrast_spread=0.2)
    big = _stack(micrographs.stream_images(ATOMS, params, GRID2, snr=0.1, seed=1))
    small = [backend.asnumpy(b.images) for b in micrographs.stream_images(ATOMS, params, GRID2, snr=0.1, seed=1,
                                                                        budget=400_000)]
    assert len(small) > 1
    np.testing.assert_array_equal(big, np.concatenate(small))


def test_contrast_scales_images(device):
    params = micrographs.draw_parameters(5, seed=2, contrast_spread=0.5)
    scaled = _stack(micrographs.stream_images(ATOMS, params, GRID2))
    unit = _stack(micrographs.stream_images(ATOMS, params._replace(contrast=np.ones(5)), GRID2))
    np.testing.assert_allclose(scaled, unit * backend.asnumpy(params.contrast)[:, None, None], rtol=1e-12)
    contrast = backend.asnumpy(micrographs.draw_parameters(20000, seed=3, contrast_spread=0.3).contrast)
    assert np.mean(contrast) == pytest.approx(1, abs=0.01)


def test_one_conformation_per_image_streams_like_a_function_of_the_image(device):
    """Stacked conformations (batched projections) give the stack a per-image function gives."""
    params = micrographs.draw_parameters(6, seed=4)
    moved = POSITIONS[None] + np.random.default_rng(5).normal(0, 1.5, (6, 60, 3))
    stacked = _stack(micrographs.stream_images(ATOMS._replace(positions=moved), params, GRID2, snr=1.0, seed=2))
    called = _stack(micrographs.stream_images(lambda i: ATOMS._replace(positions=moved[i]), params, GRID2, snr=1.0,
                                              seed=2))
    np.testing.assert_allclose(stacked, called, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("snr", [0.0, -1.0, float("nan")])
def test_snr_must_be_positive(snr):
    with pytest.raises(ValueError, match="snr must be a number > 0"):
        next(micrographs.stream_images(ATOMS, micrographs.draw_parameters(2), GRID2, snr=snr))


def test_memory_budget_too_small_is_refused():
    with pytest.raises(MemoryError, match="budget"):
        next(micrographs.stream_images(ATOMS, micrographs.draw_parameters(2), GRID2, budget=1000))


def test_parameters_of_different_lengths_are_refused():
    params = micrographs.draw_parameters(4)
    with pytest.raises(ValueError, match="one entry per image"):
        next(micrographs.stream_images(ATOMS, params._replace(defocus=np.ones(3)), GRID2))


# --------------------------------------------------------------------------- volumes
def test_mrc_round_trip_keeps_values_voxel_size_and_axes(tmp_path, device):
    volume = np.random.default_rng(0).standard_normal((6, 7, 8)).astype(np.float32)
    path = tmp_path / "map.mrc"
    volumes.write_mrc(path, backend.asarray(volume), sampling=1.25)  # a device volume: copied at the edge
    back, sampling = volumes.read_mrc(path)
    assert backend.get_array_module(back) is backend.xp
    np.testing.assert_array_equal(backend.asnumpy(back), volume)
    assert sampling == pytest.approx(1.25)
    with mrcfile.open(path) as mrc:  # the file itself: sections along z, columns along x
        assert mrc.data.shape == (8, 7, 6)
        assert mrc.data[5, 3, 1] == volume[1, 3, 5]


def test_fsc_of_a_map_with_itself_and_with_noise(device):
    rng = np.random.default_rng(1)
    a = particles.gaussian_volume(ATOMS, GRID3)
    k, same = volumes.fourier_shell_correlation(a, a, sampling=2.0)
    np.testing.assert_allclose(backend.asnumpy(same), 1.0, rtol=1e-12)
    k, independent = volumes.fourier_shell_correlation(rng.standard_normal(a.shape), rng.standard_normal(a.shape),
                                                       sampling=2.0)
    assert np.max(np.abs(backend.asnumpy(independent)[4:])) < 5 / np.sqrt(4 * np.pi * 4**2)  # ~1/sqrt(voxels)
    assert float(k[-1]) == pytest.approx(1 / 4.0)  # Nyquist of 2 Å voxels


def test_fsc_bins_each_frequency_into_its_nearest_shell(device):
    """Negating exactly the coefficients with round(|k|/Δk) = 5 (a Hermitian-symmetric set: the map stays real)
    gives an FSC of -1 in shell 5 and +1 in every other: any other binning mixes shells."""
    a = np.random.default_rng(0).standard_normal((24, 24, 24))
    f = np.fft.fftfreq(24) * 24
    shell = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2))
    spectrum = np.fft.fftn(a)
    spectrum[shell == 5] *= -1
    b = np.fft.ifftn(spectrum).real
    fsc = backend.asnumpy(volumes.fourier_shell_correlation(a, b, sampling=2.0)[1])
    expected = np.ones_like(fsc)
    expected[4] = -1  # the curve starts at shell 1
    np.testing.assert_allclose(fsc, expected, rtol=0, atol=1e-12)


def test_resolution_interpolates_the_crossing():
    k = np.array([0.1, 0.2, 0.3])
    assert volumes.resolution(k, [0.9, 0.7, 0.3], threshold=0.5) == pytest.approx(1 / 0.25)
    assert volumes.resolution(k, [0.9, 0.8, 0.7]) == pytest.approx(1 / 0.3)


def test_lowpass_transfer_at_the_resolution(device):
    grid = grids.make_grid(gpts=(32, 32, 32), sampling=2.0)
    x = (np.arange(32) * 2.0)[:, None, None] * np.ones((1, 32, 32))
    wave = np.cos(2 * np.pi * 4 / 64.0 * x)  # k = 1/16 Å⁻¹
    out = volumes.lowpass(wave, sampling=grid.sampling[0], resolution=16.0)
    assert float(out.max()) == pytest.approx(np.exp(-0.5), rel=1e-10)


# --------------------------------------------------------------------------- the device rule
def test_numpy_inputs_give_results_on_the_selected_device():
    """On the strict stand-in, every public function given NumPy inputs returns stand-in arrays."""
    backend.set_device("strict")
    try:
        on_device = lambda *arrays: all(backend.get_array_module(a) is backend.xp for a in arrays)  # noqa: E731
        host_atoms = particles.Atoms(POSITIONS, WEIGHTS, np.full(60, 2.0))
        rotations = np.eye(3)[None]
        assert on_device(so3.random_rotations(2), so3.rotation_angles(rotations), so3.axis_rotation([0, 0, 1], 1.0),
                         so3.quaternions_to_matrices([[1.0, 0, 0, 0]]), so3.check_rotations(rotations))
        atoms = particles.random_structure(10, radii=(8.0, 8.0, 8.0), seed=1)
        assert on_device(*atoms, *particles.random_domains(2, atoms_per_domain=5, seed=2))
        assert on_device(*particles.make_atoms(POSITIONS), *particles.transform_atoms(host_atoms, np.eye(3)),
                         *particles.concatenate_atoms(host_atoms, host_atoms))
        small3 = grids.make_grid(gpts=(8,) * 3, sampling=4.0)
        volume = np.ones((8, 8, 8))
        assert on_device(particles.gaussian_volume(host_atoms, small3), particles.project_atoms(host_atoms, rotations,
                                                                                                 GRID2),
                         voxels.project_volume(volume, rotations, sampling=4.0),
                         voxels.backproject(np.ones((1, 8, 8)), rotations, sampling=4.0))
        params = micrographs.draw_parameters(3)
        assert on_device(*params, *micrographs.check_parameters(params._replace(defocus=np.ones(3) * 1e4)))
        images = np.ones((1, 32, 32))
        assert on_device(ctf.ctf(GRID2, defocus=1e4), *ctf.ctf_profile(0.2, defocus=1e4),
                         image_formation.form_images(images, GRID2, defocus=[1e4], shifts=[[1.0, 0.0]], contrast=[2.0]),
                         image_formation.form_images_adjoint(images, GRID2, defocus=[1e4]),
                         image_formation.add_noise(images, 1.0, seed=0),
                         white_noise.standard_normal(2, (4, 4), seed=0),
                         next(micrographs.stream_images(host_atoms, params, GRID2, snr=1.0)).images)
        assert isinstance(micrographs.noise_sigma(host_atoms, params, GRID2, snr=1.0), float)
        assert on_device(*volumes.fourier_shell_correlation(volume, volume, sampling=4.0),
                         volumes.lowpass(volume, sampling=4.0, resolution=10.0))
        assert isinstance(volumes.relative_error(volume, volume), float)
    finally:
        backend.set_device("cpu")


def test_images_of_one_micrograph_share_its_defocus():
    """images_per_micrograph consecutive images share one defocus, drawn within the documented 1-2.5 µm."""
    defocus = backend.asnumpy(micrographs.draw_parameters(120, seed=3, images_per_micrograph=50).defocus)
    for group in (defocus[:50], defocus[50:100], defocus[100:]):
        assert np.all(group == group[0])
    assert np.unique(defocus).size == 3 and np.all((defocus >= 1.0e4) & (defocus <= 2.5e4))


def test_resolution_interpolates_an_uneven_crossing():
    """0.5 crossed between 0.6 at k = 0.2 and 0.2 at k = 0.3: a quarter of the way, at k = 0.225 (a crossing half-way
    between shells cannot tell t from 1 - t)."""
    assert volumes.resolution(np.array([0.1, 0.2, 0.3]), [0.9, 0.6, 0.2], threshold=0.5) == pytest.approx(1 / 0.225,
                                                                                                         rel=1e-12)
