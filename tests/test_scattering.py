"""Thick samples: the analytic Mie series, Born, Rytov, BPM and the convergent Born series."""

import math

import numpy as np
import pytest

from mbook.core import backend
from mbook.light import cbs, mie, scattering

LAMBDA, N_B = 0.5, 1.33  # µm, water


def _disc(shape, sampling, radius):
    z, x = ((np.arange(n) - n // 2) * sampling for n in shape)
    return np.hypot(z[:, None], x[None, :]) < radius


def test_mie_coefficients_conserve_energy_without_absorption():
    """Each partial wave of a lossless cylinder only changes phase: |1 + 2 b_l| = 1, Re b_l = -|b_l|²."""
    b, _ = mie.coefficients(12.0, 1.2)
    np.testing.assert_allclose(b.real, -abs(b) ** 2, atol=1e-13)
    b_absorbing, _ = mie.coefficients(12.0, 1.2 + 0.05j)
    assert np.all(abs(1 + 2 * b_absorbing) < 1)


def test_mie_thin_cylinder_matches_rayleigh_limit():
    """Q_sca -> (π² x³ / 8) |m² - 1|² for x << 1 (Bohren & Huffman 1983, sec. 8.4)."""
    m = 1.5
    errors = [abs(mie.scattering_efficiency(x, m) / (math.pi**2 * x**3 / 8 * abs(m**2 - 1) ** 2) - 1)
              for x in (0.02, 0.01)]
    assert errors[0] < 3e-3  # the next terms are O(x² ln x)
    assert errors[1] < errors[0] / 3


def test_mie_field_is_continuous_across_the_surface():
    radius, dx = 1.0, 0.01
    field = mie.cylinder_field((3, 301), sampling=dx, wavelength=LAMBDA, radius=radius - dx / 2 + 1e-9,
                               n_cylinder=1.45, n_background=N_B, center=(dx, 150 * dx))
    row = field[1]
    jumps = abs(np.diff(row))
    edge = [149 - 100, 150 + 100 - 1]  # the two samples on either side of each crossing
    assert jumps[edge].max() < 3 * np.median(jumps)


def test_convergent_born_series_matches_mie_within_one_percent():
    dx, radius, n_c = LAMBDA / 1.43 / 8, 0.75, 1.43
    shape = (2 * int(round(1.5 * radius / dx)),) * 2
    n = mie.cylinder_index(shape, sampling=dx, radius=radius, n_cylinder=n_c, n_background=N_B)
    exact = mie.cylinder_field(shape, sampling=dx, wavelength=LAMBDA, radius=radius, n_cylinder=n_c,
                               n_background=N_B)
    solution = cbs.solve(n, wavelength=LAMBDA, sampling=dx, n_background=N_B, tol=1e-6)
    near = _disc(shape, dx, 1.5 * radius)
    error = np.linalg.norm((solution.field - exact)[near]) / np.linalg.norm(exact[near])
    assert error < 0.01
    assert solution.residual <= 1e-6 and solution.num_iter < 500


def test_convergent_born_series_in_3d_matches_the_scalar_sphere():
    dx, radius, n_s = LAMBDA / 1.38 / 5, 0.4, 1.38
    shape = (int(round(3 * radius / dx)),) * 3
    z = (np.arange(shape[0]) - shape[0] // 2) * dx
    r = np.sqrt(z[:, None, None] ** 2 + z[None, :, None] ** 2 + z[None, None, :] ** 2)
    n = np.where(r < radius, n_s, N_B)
    exact = mie.sphere_field(shape, sampling=dx, wavelength=LAMBDA, radius=radius, n_sphere=n_s, n_background=N_B)
    solution = cbs.solve(n, wavelength=LAMBDA, sampling=dx, n_background=N_B, boundary=1.5 * LAMBDA / N_B,
                         boundary_strength=0.8, tol=1e-5)
    near = r < 1.4 * radius
    # staircased sphere at 5 points per wavelength: a few per cent of the scattered wave
    assert np.linalg.norm((solution.field - exact)[near]) < 0.1 * np.linalg.norm((exact - 1)[near])


def test_born_error_vanishes_linearly_with_contrast():
    """The first Born approximation misses terms of second order in Δn."""
    dx, radius = LAMBDA / N_B / 8, 0.5
    shape = (48, 48)
    errors = []
    for dn in (0.02, 0.01):
        n = mie.cylinder_index(shape, sampling=dx, radius=radius, n_cylinder=N_B + dn, n_background=N_B)
        exact = cbs.solve(n, wavelength=LAMBDA, sampling=dx, n_background=N_B, tol=1e-8).field
        born = scattering.born(n, wavelength=LAMBDA, sampling=dx, n_background=N_B)
        errors.append(np.linalg.norm(born - exact) / np.linalg.norm(exact - 1))  # relative to the scattered wave
    assert errors[1] < 0.08  # phase delay k0 Δn d = 0.13 rad
    assert errors[1] / errors[0] == pytest.approx(0.5, abs=0.1)


def test_rytov_follows_the_phase_delay_that_breaks_born():
    dx, radius, n_c = LAMBDA / 1.36 / 8, 1.0, 1.36  # phase delay k0 Δn d = 0.75 rad
    shape = (80, 80)
    n = mie.cylinder_index(shape, sampling=dx, radius=radius, n_cylinder=n_c, n_background=N_B)
    exact = mie.cylinder_field(shape, sampling=dx, wavelength=LAMBDA, radius=radius, n_cylinder=n_c,
                               n_background=N_B)
    near = _disc(shape, dx, 1.5 * radius)
    error = {name: np.linalg.norm((f(n, wavelength=LAMBDA, sampling=dx, n_background=N_B) - exact)[near])
             / np.linalg.norm(exact[near]) for name, f in (("born", scattering.born), ("rytov", scattering.rytov))}
    assert error["born"] > 0.05
    assert error["rytov"] < error["born"] / 3


@pytest.mark.parametrize("wide_angle", [False, True])
def test_bpm_through_a_uniform_slab_gives_its_phase_delay(wide_angle):
    n = np.full((20, 32), N_B + 0.02 + 0.001j)
    exit_wave = scattering.bpm(n, wavelength=LAMBDA, sampling=0.05, n_background=N_B, wide_angle=wide_angle,
                               all_planes=False)
    expected = np.exp(1j * 2 * math.pi / LAMBDA * (0.02 + 0.001j) * 20 * 0.05)
    np.testing.assert_allclose(exit_wave, expected, rtol=1e-12)


def test_wide_angle_bpm_carries_a_tilted_plane_wave_exactly():
    shape, dx = (30, 64), 0.05
    tilt = 5 / (64 * dx)  # a lattice frequency, 1.56 /µm: 21° in water
    planes = scattering.bpm(np.full(shape, N_B), wavelength=LAMBDA, sampling=dx, n_background=N_B,
                            incident=np.exp(2j * math.pi * tilt * np.arange(64) * dx), wide_angle=True)
    grid = scattering.grids.make_grid(gpts=shape, sampling=dx)
    expected = scattering.plane_wave(grid, wavelength=LAMBDA, n_background=N_B, tilt=tilt, xp=np)
    # the entrance is half a slice before z = 0
    kz = math.sqrt((N_B / LAMBDA) ** 2 - tilt**2) - N_B / LAMBDA
    np.testing.assert_allclose(planes, expected * np.exp(1j * math.pi * kz * dx), atol=1e-12)


def test_cpu_and_gpu_agree_for_bpm(device):
    rng = np.random.default_rng(0)
    n = N_B + 0.05 * rng.random((16, 32, 32))
    reference = scattering.bpm(n, wavelength=LAMBDA, sampling=0.1, n_background=N_B, wide_angle=True)
    result = scattering.bpm(backend.asarray(n), wavelength=LAMBDA, sampling=0.1, n_background=N_B, wide_angle=True)
    np.testing.assert_allclose(backend.asnumpy(result), reference, atol=1e-10)


@pytest.mark.parametrize(
    "function", [scattering.born, scattering.rytov, cbs.solve,
                 lambda n, **kw: scattering.bpm(n, wide_angle=True, **kw)],
    ids=["born", "rytov", "cbs", "wide-angle bpm"],
)
def test_sampling_coarser_than_half_a_wavelength_is_refused(function):
    n = np.full((16, 16), 1.5)
    with pytest.raises(ValueError, match=r"coarser than λ0 / \(2 max Re n\) = 0.5 / \(2 × 1.5\) = 0.1667"):
        function(n, wavelength=0.5, sampling=0.2, n_background=1.33)


def test_paraxial_bpm_accepts_coarse_sampling():
    out = scattering.bpm(np.full((4, 16), 1.5), wavelength=0.5, sampling=0.5, n_background=1.33)
    assert out.shape == (4, 16)


@pytest.mark.parametrize(
    "n, match",
    [(np.full((8, 8), 1.4 - 0.01j), "negative imaginary part"),
     (np.full((8, 8), np.nan), "NaN or infinite"),
     (np.full((8, 8), -1.0), "real part > 0"),
     (np.full(8, 1.4), "2D .* or 3D")],
)
def test_bad_index_maps_are_refused(n, match):
    with pytest.raises(ValueError, match=match):
        scattering.born(n, wavelength=0.5, sampling=0.05, n_background=1.33)


def test_gain_is_refused_by_mie():
    with pytest.raises(ValueError, match="gain"):
        mie.cylinder_field((8, 8), sampling=0.05, wavelength=0.5, radius=0.1, n_cylinder=1.4 - 0.1j)


def test_cbs_refuses_an_epsilon_below_the_convergence_bound():
    n = np.full((16, 16), 1.4)
    with pytest.raises(ValueError, match=r"is not above max\|k\(r\)² - k0²\|"):
        cbs.solve(n, wavelength=0.5, sampling=0.05, n_background=1.33, epsilon=1.0)


def test_cbs_reports_failure_to_converge():
    n = mie.cylinder_index((32, 32), sampling=0.04, radius=0.3, n_cylinder=1.5, n_background=N_B)
    with pytest.raises(RuntimeError, match="did not reach tol=1e-06 in max_num_iter=3"):
        cbs.solve(n, wavelength=LAMBDA, sampling=0.04, n_background=N_B, max_num_iter=3)


def test_tilt_beyond_the_propagating_limit_is_refused():
    grid = scattering.grids.make_grid(gpts=(8, 8), sampling=0.05)
    with pytest.raises(ValueError, match="beyond the propagating limit"):
        scattering.plane_wave(grid, wavelength=0.5, n_background=1.0, tilt=2.5)
