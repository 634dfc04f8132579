"""Aberrations, transfer functions and probes against closed forms, on every device."""

import math

import numpy as np
import pytest

from mbook.core import backend, fft_plans, grids, strict
from mbook.electron import hrtem, physics, waves

ENERGY = 300e3
GRID = grids.make_grid(gpts=(128, 128), sampling=0.1)
H = backend.asnumpy  # the one way to the host, for np.testing


def test_round_aberrations_match_kirkland_formula(device):
    """χ(k) = π λ k² (Cs λ² k² / 2 - Δf) (Kirkland 2010, eq. 10.9)."""
    k = np.linspace(0, 1.0, 50)
    lam = physics.wavelength(ENERGY)
    chi = H(waves.aberration_phase(k, 0 * k, energy=ENERGY, defocus=700.0, Cs=1.3e7))
    np.testing.assert_allclose(chi, np.pi * lam * k**2 * (0.5 * 1.3e7 * lam**2 * k**2 - 700.0), atol=1e-12)


def test_twofold_astigmatism_has_twofold_symmetry(device):
    phi = np.linspace(0, 2 * np.pi, 37)
    kx, ky = 0.5 * np.cos(phi), 0.5 * np.sin(phi)
    chi = H(waves.aberration_phase(kx, ky, energy=ENERGY, aberrations={"C12": 50.0, "phi12": 0.4}))
    rotated = H(waves.aberration_phase(-kx, -ky, energy=ENERGY, aberrations={"C12": 50.0, "phi12": 0.4}))
    np.testing.assert_allclose(chi, rotated, atol=1e-12)
    assert np.argmax(chi[:18]) == pytest.approx(round(0.4 / (2 * np.pi) * 36), abs=1)


def test_ctf_zeros_match_analytic_defocus_zeros(device):
    """With Cs = 0, sin χ = 0 at k_n = sqrt(n / (λ Δf))."""
    lam = physics.wavelength(ENERGY)
    grid = grids.make_grid(gpts=(1024, 4), sampling=0.1)
    ctf = H(hrtem.contrast_transfer_function(grid, energy=ENERGY, defocus=500.0))
    kx = grids.spatial_frequencies(grid, xp=np)[0][1:512]
    profile = ctf[1:512, 0]
    crossings = kx[np.nonzero(np.diff(np.sign(profile)))[0]]
    expected = np.sqrt(np.arange(1, 4) / (lam * 500.0))
    np.testing.assert_allclose(crossings[:3], expected, atol=kx[0])


def test_envelopes_damp_and_limit(device):
    lam = physics.wavelength(ENERGY)
    k = np.array([0.0, 0.5])
    et = H(waves.temporal_envelope(k, 0 * k, energy=ENERGY, focal_spread=30.0))
    assert et[0] == 1 and et[1] == pytest.approx(math.exp(-0.5 * (math.pi * lam * 30 * 0.25) ** 2))
    es = H(waves.spatial_envelope(k, 0 * k, energy=ENERGY, angular_spread=0.5, defocus=400.0, Cs=1e7))
    expected = math.exp(-((math.pi * 0.5e-3 / lam) ** 2) * (1e7 * lam**3 * 0.125 - 400 * lam * 0.5) ** 2)
    assert es[1] == pytest.approx(expected, rel=1e-6)


def test_ctf_carries_the_envelopes_and_the_aperture(device):
    """The CTF with envelopes and aperture is the product of the separate factors."""
    kwargs = dict(energy=ENERGY, defocus=400.0, Cs=1e7)
    kx, ky = (k[:, None] if axis == 0 else k[None, :]
              for axis, k in enumerate(grids.spatial_frequencies(GRID, xp=np)))
    full = H(hrtem.contrast_transfer_function(GRID, focal_spread=30.0, angular_spread=0.3, semiangle_cutoff=20.0,
                                              **kwargs))
    parts = (H(hrtem.contrast_transfer_function(GRID, **kwargs))
             * H(waves.temporal_envelope(kx, ky, energy=ENERGY, focal_spread=30.0))
             * H(waves.spatial_envelope(kx, ky, angular_spread=0.3, **kwargs))
             * H(waves.aperture(kx, ky, energy=ENERGY, semiangle_cutoff=20.0)))
    np.testing.assert_allclose(full, parts, atol=1e-12)
    assert np.count_nonzero(full) < 0.5 * full.size  # the 20 mrad aperture cuts most of the grid


def test_probe_is_normalised_centred_and_band_limited(device):
    psi = H(waves.probe(GRID, energy=ENERGY, semiangle_cutoff=25.0, positions=[[3.0, 4.5], [6.4, 6.4]]))
    assert psi.shape == (2, 128, 128) and psi.dtype == np.complex64
    np.testing.assert_allclose(np.sum(abs(psi) ** 2, axis=(1, 2)), 1.0, rtol=1e-5)
    peak = np.unravel_index(np.argmax(abs(psi[0])), psi[0].shape)
    assert peak == (30, 45)
    spectrum = np.fft.fft2(psi[1])
    outside = waves.aperture(*waves.frequency_axes(GRID, np), energy=ENERGY, semiangle_cutoff=25.0) == 0
    assert np.sum(abs(spectrum[H(outside)]) ** 2) < 1e-10 * np.sum(abs(spectrum) ** 2)


def test_probes_made_in_a_plan_buffer_equal_the_plain_ones(device):
    """A scan builds its probes in the FFT plan's buffer; they must be the probes of waves.probe."""
    positions = [[3.0, 4.5], [6.4, 6.4], [0.05, 12.7]]
    kwargs = dict(energy=ENERGY, semiangle_cutoff=25.0, defocus=50.0, Cs=1e5)
    spectrum = waves.probe_spectrum(GRID, **kwargs)
    plan = fft_plans.fft2_plan((3,) + GRID.gpts)
    placed = waves.place_probes(H(spectrum), GRID, positions, plan=plan)  # host input: moved to the device
    assert placed is plan.array
    np.testing.assert_allclose(H(placed), H(waves.probe(GRID, positions=positions, **kwargs)), atol=2e-7)
    with pytest.raises(ValueError, match=r"plan of shape \(3, 128, 128\) cannot hold 2 probes"):
        waves.place_probes(spectrum, GRID, positions[:2], plan=plan)


def test_probe_refuses_aperture_beyond_sampling():
    coarse = grids.make_grid(gpts=(32, 32), sampling=0.5)
    with pytest.raises(ValueError, match="semiangle_cutoff=30 mrad exceeds the largest angle"):
        waves.probe(coarse, energy=ENERGY, semiangle_cutoff=30)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"aberrations": {"C99": 1.0}}, "unknown aberration"),
     ({"defocus": 10.0, "aberrations": {"C10": 1.0}}, "not both"),
     ({"Cs": float("nan")}, "Cs must be a finite number")],
)
def test_bad_aberrations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        waves.aberration_phase(np.zeros(3), np.zeros(3), energy=ENERGY, **kwargs)


def test_probe_cpu_gpu_agree(device):
    reference = waves.probe(GRID, energy=ENERGY, semiangle_cutoff=20.0, defocus=30.0, xp=np)
    result = waves.probe(GRID, energy=ENERGY, semiangle_cutoff=20.0, defocus=30.0)
    assert backend.get_array_module(reference) is np  # xp= makes it with that module
    np.testing.assert_allclose(backend.asnumpy(result), reference, atol=2e-6)


def test_weak_phase_image_follows_the_ctf(device):
    """Image of a weak phase object = 1 + 2σv ⊛ F^-1[CTF] to first order (no envelopes)."""
    grid = grids.make_grid(gpts=(64, 64), sampling=0.2)
    rng = np.random.default_rng(5)
    phase = 1e-3 * rng.standard_normal(grid.gpts)
    image = H(hrtem.image_intensity(np.exp(1j * phase), grid, energy=ENERGY, defocus=300.0, Cs=1e6))
    ctf = H(hrtem.contrast_transfer_function(grid, energy=ENERGY, defocus=300.0, Cs=1e6))
    linear = 1 + 2 * np.real(np.fft.ifft2(np.fft.fft2(phase) * ctf))
    assert np.max(abs(image - linear)) < 1e-5  # second order in a phase of ~1e-3, float32
    assert np.std(image - 1) > 1e-4  # and the contrast itself is first order


def test_vacuum_image_is_one(device):
    image = hrtem.image_intensity(np.ones((32, 32), complex), grids.make_grid(gpts=(32, 32), sampling=0.2),
                                  energy=ENERGY, defocus=100.0, focal_spread=20.0)
    np.testing.assert_allclose(H(image), 1.0, rtol=1e-6)


def test_ctf_zeros_with_spherical_aberration(device):
    zeros = H(hrtem.ctf_zeros(energy=ENERGY, defocus=600.0, Cs=1.2e7, k_max=1.0))
    chi = H(waves.aberration_phase(zeros, 0 * zeros, energy=ENERGY, defocus=600.0, Cs=1.2e7))
    np.testing.assert_allclose(np.sin(chi), 0, atol=1e-9)
    np.testing.assert_allclose(chi / np.pi, np.round(chi / np.pi), atol=1e-9)  # χ = nπ
    assert np.all(np.diff(zeros) > 0) and len(zeros) >= 3


def test_numpy_inputs_on_the_stand_in_give_stand_in_arrays():
    """The device rule: NumPy in, the selected device's arrays out, from every public function."""
    backend.set_device("strict")
    try:
        k = np.linspace(0, 1, 8)
        grid = grids.make_grid(gpts=(32, 32), sampling=0.2)
        results = [
            waves.aberration_phase(k, k, energy=ENERGY, defocus=100.0),
            waves.aperture(k, k, energy=ENERGY, semiangle_cutoff=10.0),
            waves.temporal_envelope(k, k, energy=ENERGY, focal_spread=20.0),
            waves.spatial_envelope(k, k, energy=ENERGY, angular_spread=0.5, defocus=100.0),
            hrtem.contrast_transfer_function(grid, energy=ENERGY, defocus=100.0),
            waves.lens_transfer(grid, energy=ENERGY, defocus=100.0),
            waves.plane_wave(grid.gpts),
            waves.probe(grid, energy=ENERGY, semiangle_cutoff=20.0),
            waves.probe_spectrum(grid, energy=ENERGY, semiangle_cutoff=20.0),
            waves.place_probes(np.ones(grid.gpts, np.complex64), grid, [[1.0, 2.0]]),
            hrtem.image_intensity(np.ones(grid.gpts, np.complex64), grid, energy=ENERGY, defocus=50.0),
            hrtem.ctf_zeros(energy=ENERGY, defocus=600.0, k_max=0.5),
        ]
        assert all(backend.get_array_module(r) is strict.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_a_probe_makes_one_host_copy_at_most(host_copies):
    """The probe's normalisation stays on the device: only the positions' check copies to the host."""
    assert host_copies(lambda: waves.probe_spectrum(GRID, energy=ENERGY, semiangle_cutoff=20.0)) == 0
    assert host_copies(lambda: waves.probe(GRID, energy=ENERGY, semiangle_cutoff=20.0)) <= 1


def test_spatial_envelope_uses_the_gradient_of_chi(device):
    """E_s = exp(-(α_s/2λ)² |∇_k χ|²), with |∇_k χ|² written by hand for every Krivanek term: recovered from the
    envelope, it must equal the central differences of χ itself, with non-round aberrations of orders 1 to 3
    (measured 5e-10; the differences' truncation is ~1e-12, their rounding ~1e-10)."""
    energy, spread = 300e3, 0.5  # eV, mrad
    aberrations = {"C12": 40.0, "phi12": 0.4, "C21": 2e3, "phi21": -0.7, "C23": 1.5e3, "phi23": 1.1,
                   "C32": 4e4, "phi32": 0.3}
    kwargs = dict(energy=energy, defocus=120.0, Cs=2e5, aberrations=aberrations)
    rng = np.random.default_rng(0)
    kx, ky = rng.uniform(-0.6, 0.6, 50), rng.uniform(-0.6, 0.6, 50)
    h = 1e-6

    def chi(a, b):
        return backend.asnumpy(waves.aberration_phase(a, b, **kwargs))

    gradient_squared = (((chi(kx + h, ky) - chi(kx - h, ky)) / (2 * h)) ** 2
                        + ((chi(kx, ky + h) - chi(kx, ky - h)) / (2 * h)) ** 2)
    envelope = backend.asnumpy(waves.spatial_envelope(kx, ky, angular_spread=spread, **kwargs))
    recovered = -np.log(envelope) / (spread * 1e-3 / (2 * physics.wavelength(energy))) ** 2
    np.testing.assert_allclose(recovered, gradient_squared, rtol=1e-6)


@pytest.mark.parametrize("name, m, azimuth", [("12", 2, 0.4), ("23", 3, 1.1)])
def test_non_round_aberrations_peak_at_their_azimuth(device, name, m, azimuth):
    """Krivanek's convention, C_nm cos(m(φ - φ_nm)): on a ring, χ is largest at φ_nm + 2πj/m, to half of the
    3600 samples' spacing (the other convention, cos(mφ - φ_nm), is 0.2 and 0.7 rad away)."""
    phi = np.linspace(0, 2 * np.pi, 3600, endpoint=False)
    chi = backend.asnumpy(waves.aberration_phase(0.5 * np.cos(phi), 0.5 * np.sin(phi), energy=300e3,
                                                 aberrations={f"C{name}": 50.0, f"phi{name}": azimuth}))
    top = phi[np.argmax(chi)]
    offset = (top - azimuth + np.pi / m) % (2 * np.pi / m) - np.pi / m
    assert abs(offset) < np.pi / 3600


def test_weak_object_image_with_amplitude_contrast_follows_the_ctf(device):
    """A weak object exp(iσv - a), a = Aσv/sqrt(1-A²), at A = 0.3: the image is 1 + 2σv ⊛ F⁻¹[CTF]/sqrt(1-A²) to
    first order (the rest is second order in σv ~ 1e-3: 0.6 % of the contrast measured); leaving out the
    sqrt(1-A²) weighting of sin χ, or the 1/sqrt(1-A²), errs by 5 % or more."""
    energy, amplitude = 300e3, 0.3
    grid = grids.make_grid(gpts=(64, 64), sampling=0.2)
    phase = 1e-3 * np.random.default_rng(5).standard_normal(grid.gpts)
    absorption = amplitude * phase / np.sqrt(1 - amplitude**2)
    image = backend.asnumpy(hrtem.image_intensity(np.exp(1j * phase - absorption), grid, energy=energy,
                                                  defocus=300.0, Cs=1e6))
    ctf = backend.asnumpy(hrtem.contrast_transfer_function(grid, energy=energy, defocus=300.0, Cs=1e6,
                                                           amplitude_contrast=amplitude))
    linear = 2 * np.real(np.fft.ifft2(np.fft.fft2(phase) * ctf)) / np.sqrt(1 - amplitude**2)
    contrast = image - 1
    assert np.abs(contrast - linear).max() < 0.02 * contrast.std()


def test_ctf_zeros_without_cs_are_the_closed_form_rings():
    """Cs = 0: χ = -πλΔf k², so sin χ = 0 at k_n = sqrt(n/(λΔf)), n = 1 .. floor(λΔf k_max²): every ring, to 1e-9
    (Δf = 1 µm at 200 keV: 25 rings to 1/Å, more than a fixed coarse search grid resolves)."""
    wavelength = physics.wavelength(200e3)
    zeros = backend.asnumpy(hrtem.ctf_zeros(energy=200e3, defocus=1e4, k_max=1.0))
    n = np.arange(1, int(np.floor(wavelength * 1e4)) + 1)
    np.testing.assert_allclose(zeros, np.sqrt(n / (wavelength * 1e4)), rtol=0, atol=1e-9)
