"""Cryo-EM image formation (mbook.cryoem.particles, mbook.cryoem.micrographs, mbook.cryoem.volumes) against exact facts."""

import math

import mrcfile
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from mbook.core import backend, grids
from mbook.cryoem import micrographs, particles, so3, volumes
from mbook.electron import waves

ATOMS = particles.random_structure(60, radii=(12.0, 10.0, 8.0), sigma=2.0, seed=3)
GRID2 = grids.make_grid(gpts=(32, 32), sampling=2.0)
GRID3 = grids.make_grid(gpts=(32, 32, 32), sampling=2.0)


# --------------------------------------------------------------------------- rotations
def test_random_rotations_are_proper_rotations():
    r = so3.random_rotations(500, seed=1)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_rotations_are_haar_uniform():
    """Rotation angle density (1 - cos θ)/π and a uniform rotated axis, by Kolmogorov-Smirnov."""
    r = so3.random_rotations(20000, seed=2)
    theta = so3.rotation_angles(r)
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 0.01
    assert stats.kstest(r[:, 2, 2], "uniform", args=(-1, 2)).pvalue > 0.01  # cos of the tilt of z


def test_uniform_euler_angles_fail_the_haar_test():
    """The statistic has power: the classic mistake (uniform Euler angles) is rejected."""
    angles = np.random.default_rng(3).uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], (20000, 3))
    r = Rotation.from_euler("zyz", angles).as_matrix()
    assert stats.kstest(r[:, 2, 2], "uniform", args=(-1, 2)).pvalue < 1e-6


def test_quaternion_and_axis_rotation_agree():
    q = [math.cos(0.35), 0.0, 0.0, math.sin(0.35)]  # 0.7 rad about z
    np.testing.assert_allclose(so3.quaternions_to_matrices([q])[0], so3.axis_rotation([0, 0, 1], 0.7),
                               atol=1e-14)
    assert so3.rotation_angles(so3.axis_rotation([1, 2, 3], 2.1)[None])[0] == pytest.approx(2.1)


# --------------------------------------------------------------------------- volumes and projections
def test_gaussian_volume_keeps_mass_and_centre():
    volume = particles.gaussian_volume(ATOMS, GRID3, xp=np)
    assert volume.sum() * 2.0**3 == pytest.approx(ATOMS.weights.sum(), rel=1e-8)
    x = (np.arange(32) - 16) * 2.0
    centre = [np.sum(volume.sum(axis=tuple(a for a in range(3) if a != i)) * x) / volume.sum() for i in range(3)]
    np.testing.assert_allclose(centre, ATOMS.positions.mean(axis=0), atol=1e-6)  # Å; point sampling


def test_fourier_slice_theorem_holds_for_atom_projections():
    """The DFT of a projection equals the analytic 3D transform on the rotated central plane."""
    atoms = ATOMS._replace(sigma=np.full(60, 3.0))  # 1.5 pixels: aliasing below 1e-12
    rotation = so3.random_rotations(1, seed=4)
    image = particles.project_atoms(atoms, rotation, GRID2, xp=np)[0]
    k = np.fft.fftfreq(32, 2.0)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    dft = 4.0 * np.fft.fft2(np.fft.ifftshift(image))
    plane = np.stack([kx, ky, np.zeros_like(kx)], -1) @ rotation[0]  # Rᵀ k, row vectors
    analytic = np.einsum("a,...a->...", ATOMS.weights,
                         np.exp(-2 * np.pi**2 * 3.0**2 * np.sum(plane**2, -1))[..., None]
                         * np.exp(-2j * np.pi * plane @ ATOMS.positions.T))
    low = kx**2 + ky**2 < 0.15**2
    assert np.max(np.abs(dft - analytic)[low]) < 1e-10 * atoms.weights.sum()


def test_volume_projection_matches_exact_atom_projection():
    volume = particles.gaussian_volume(ATOMS, GRID3, xp=np)
    rotations = so3.random_rotations(3, seed=5)
    exact = particles.project_atoms(ATOMS, rotations, GRID2, xp=np)
    interpolated = particles.project_volume(volume, rotations, sampling=2.0)
    assert volumes.relative_error(interpolated, exact) < 0.03  # trilinear interpolation of σ = 1 voxel atoms
    np.testing.assert_allclose(particles.project_volume(volume, np.eye(3), sampling=2.0)[0], 2.0 * volume.sum(2),
                               rtol=1e-12)


def test_projection_runs_on_every_device(device):
    volume = backend.asarray(particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(16,) * 3, sampling=2.0), xp=np))
    rotations = so3.random_rotations(2, seed=6)
    result = backend.asnumpy(particles.project_volume(volume, rotations, sampling=2.0))
    reference = particles.project_volume(backend.asnumpy(volume), rotations, sampling=2.0)
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-7 * abs(reference).max())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: particles.project_volume(np.zeros((8, 8, 6)), np.eye(3), sampling=1.0), "cubic"),
        (lambda: particles.project_volume(np.zeros((8, 8, 8)), 2 * np.eye(3), sampling=1.0), "orthogonal"),
        (lambda: particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(8, 8, 6), sampling=1.0)), "cubic"),
        (lambda: particles.make_atoms(np.zeros((2, 3)), sigma=-1.0), "sigma"),
        (lambda: particles.make_atoms(np.zeros((2, 3)), weights=-1.0), "weights"),
        (lambda: particles.random_structure(500, radii=(5.0, 5.0, 5.0)), "could not place"),
        (lambda: so3.random_rotations(0), "n must be"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- image formation
def test_ctf_is_the_lens_model_times_the_b_factor_envelope():
    ctf = micrographs.ctf(GRID2, defocus=1.5e4, B_factor=80.0, xp=np)
    lens = waves.contrast_transfer_function(GRID2, energy=300e3, defocus=1.5e4, Cs=2.7e7, amplitude_contrast=0.1,
                                            xp=np)
    k2 = grids.frequency_squared(GRID2, xp=np)
    np.testing.assert_allclose(ctf, lens * np.exp(-20.0 * k2), rtol=1e-12)
    assert ctf[0, 0] == pytest.approx(-0.1)  # -A at k = 0


def test_integer_shifts_are_rolls():
    image = particles.project_atoms(ATOMS, np.eye(3), GRID2, xp=np)
    base = micrographs.form_images(image, GRID2, defocus=[1e4])
    shifted = micrographs.form_images(image, GRID2, defocus=[1e4], shifts=[[6.0, -4.0]])
    np.testing.assert_allclose(shifted[0], np.roll(base[0], (3, -2), axis=(0, 1)), atol=1e-12)


def test_noise_has_the_requested_snr():
    params = micrographs.draw_parameters(1024, seed=7, contrast_spread=0.3)
    noisy = np.concatenate([b.images for b in micrographs.stream_images(ATOMS, params, GRID2, snr=0.5, seed=8)])
    clean = np.concatenate([b.images for b in micrographs.stream_images(ATOMS, params, GRID2, seed=8)])
    snr = np.mean(np.var(clean, axis=(1, 2))) / np.var(noisy - clean)
    assert snr == pytest.approx(0.5, rel=0.06)  # σ from a 256-image pilot: a few % off over 1024 images


def test_stack_does_not_depend_on_the_memory_budget():
    params = micrographs.draw_parameters(40, seed=9, max_shift=5.0, contrast_spread=0.2)
    big = np.concatenate([b.images for b in micrographs.stream_images(ATOMS, params, GRID2, snr=0.1, seed=1)])
    small = [b.images for b in micrographs.stream_images(ATOMS, params, GRID2, snr=0.1, seed=1, budget=400_000)]
    assert len(small) > 1
    np.testing.assert_array_equal(big, np.concatenate(small))


def test_contrast_scales_images():
    params = micrographs.draw_parameters(5, seed=2, contrast_spread=0.5)
    scaled = np.concatenate([b.images for b in micrographs.stream_images(ATOMS, params, GRID2)])
    unit = np.concatenate([b.images for b in micrographs.stream_images(ATOMS, params._replace(
        contrast=np.ones(5)), GRID2)])
    np.testing.assert_allclose(scaled, unit * params.contrast[:, None, None], rtol=1e-12)
    assert np.mean(micrographs.draw_parameters(20000, seed=3, contrast_spread=0.3).contrast) == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize("snr", [0.0, -1.0, float("nan")])
def test_snr_must_be_positive(snr):
    with pytest.raises(ValueError, match="snr must be a number > 0"):
        next(micrographs.stream_images(ATOMS, micrographs.draw_parameters(2), GRID2, snr=snr))


def test_memory_budget_too_small_is_refused():
    with pytest.raises(MemoryError, match="budget"):
        next(micrographs.stream_images(ATOMS, micrographs.draw_parameters(2), GRID2, budget=1000))


# --------------------------------------------------------------------------- volumes
def test_mrc_round_trip_keeps_values_voxel_size_and_axes(tmp_path):
    volume = np.random.default_rng(0).standard_normal((6, 7, 8)).astype(np.float32)
    path = tmp_path / "map.mrc"
    volumes.write_mrc(path, volume, sampling=1.25)
    back, sampling = volumes.read_mrc(path)
    np.testing.assert_array_equal(back, volume)
    assert sampling == pytest.approx(1.25)
    with mrcfile.open(path) as mrc:  # the file itself: sections along z, columns along x
        assert mrc.data.shape == (8, 7, 6)
        assert mrc.data[5, 3, 1] == volume[1, 3, 5]


def test_fsc_of_a_map_with_itself_and_with_noise():
    rng = np.random.default_rng(1)
    a = particles.gaussian_volume(ATOMS, GRID3, xp=np)
    k, same = volumes.fourier_shell_correlation(a, a, sampling=2.0)
    np.testing.assert_allclose(same, 1.0, rtol=1e-12)
    k, independent = volumes.fourier_shell_correlation(rng.standard_normal(a.shape), rng.standard_normal(a.shape),
                                                       sampling=2.0)
    assert np.max(np.abs(independent[4:])) < 5 / np.sqrt(4 * np.pi * 4**2)  # ~1/sqrt(voxels in the shell)
    assert k[-1] == pytest.approx(1 / 4.0)  # Nyquist of 2 Å voxels


def test_resolution_interpolates_the_crossing():
    k = np.array([0.1, 0.2, 0.3])
    assert volumes.resolution(k, [0.9, 0.7, 0.3], threshold=0.5) == pytest.approx(1 / 0.25)
    assert volumes.resolution(k, [0.9, 0.8, 0.7]) == pytest.approx(1 / 0.3)


def test_lowpass_transfer_at_the_resolution():
    grid = grids.make_grid(gpts=(32, 32, 32), sampling=2.0)
    x = (np.arange(32) * 2.0)[:, None, None] * np.ones((1, 32, 32))
    wave = np.cos(2 * np.pi * 4 / 64.0 * x)  # k = 1/16 Å⁻¹
    out = volumes.lowpass(wave, sampling=grid.sampling[0], resolution=16.0)
    assert np.max(out) == pytest.approx(np.exp(-0.5), rel=1e-10)
