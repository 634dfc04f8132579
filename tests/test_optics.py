"""Free-space propagation and Gaussian beams against closed-form results, on every device."""

import numpy as np
import pytest

from mbook.core import backend, grids, propagation
from mbook.light import microscope

WAVELENGTH, WAIST, SAMPLING = 0.5, 4.0, 0.5  # µm
GRID = grids.make_grid(gpts=(256, 256), sampling=SAMPLING)


def test_rayleigh_range_value():
    assert microscope.rayleigh_range(WAIST, WAVELENGTH) == pytest.approx(np.pi * 16 / 0.5)


def test_fresnel_propagation_reproduces_the_analytic_beam(device):
    """Amplitude, curvature and Gouy phase of Siegman's formula, to rounding error."""
    beam = microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH)
    for z in (-150.0, 50.0, 300.0):
        simulated = propagation.propagate(beam, z, wavelength=WAVELENGTH, sampling=SAMPLING, paraxial=True)
        analytic = microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH, distance=z)
        assert np.max(abs(backend.asnumpy(simulated - analytic))) < 1e-9


def test_beam_radius_is_exact_for_a_sampled_gaussian(device):
    beam = microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH, distance=120.0)
    expected = microscope.gaussian_beam_radius(120.0, waist=WAIST, wavelength=WAVELENGTH)
    radius = microscope.beam_radius(abs(beam) ** 2, SAMPLING)
    assert all(isinstance(w, float) for w in radius)  # plain numbers, copied once
    np.testing.assert_allclose(radius, expected, rtol=1e-12)


def test_gaussian_beam_radius_of_an_array_is_on_the_device(device):
    distances = np.array([0.0, 50.0, 120.0])
    radii = microscope.gaussian_beam_radius(distances, waist=WAIST, wavelength=WAVELENGTH)
    assert backend.get_array_module(radii) is backend.xp
    expected = [microscope.gaussian_beam_radius(float(z), waist=WAIST, wavelength=WAVELENGTH) for z in distances]
    np.testing.assert_allclose(backend.asnumpy(radii), expected, rtol=1e-15)


def test_angular_spectrum_widening_matches_first_order_theory(device):
    beam = microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH)
    z = 3 * microscope.rayleigh_range(WAIST, WAVELENGTH)
    w = microscope.beam_radius(abs(propagation.propagate(beam, z, wavelength=WAVELENGTH, sampling=SAMPLING)) ** 2,
                               SAMPLING)
    paraxial = microscope.gaussian_beam_radius(z, waist=WAIST, wavelength=WAVELENGTH)
    corrected = microscope.gaussian_beam_radius(z, waist=WAIST, wavelength=WAVELENGTH, paraxial=False)
    theta0 = WAVELENGTH / (np.pi * WAIST)
    assert w[0] / paraxial - 1 > 0.4 * theta0**2  # the exact propagator really is wider...
    assert abs(w[0] / corrected - 1) < 0.01 * theta0**2  # ...by the predicted amount


@pytest.mark.parametrize("paraxial", [True, False])
def test_propagation_conserves_power_and_inverts(paraxial, rng, device):
    field = rng.standard_normal((2, 64, 48)) + 1j * rng.standard_normal((2, 64, 48))
    # sampling 0.5 µm > λ/2: every component propagates, none is evanescent.
    out = propagation.propagate(field, 37.0, wavelength=WAVELENGTH, sampling=SAMPLING, paraxial=paraxial)
    assert out.shape == field.shape
    assert float((abs(out) ** 2).sum()) == pytest.approx(np.sum(abs(field) ** 2), rel=1e-12)
    back = propagation.propagate(out, -37.0, wavelength=WAVELENGTH, sampling=SAMPLING, paraxial=paraxial)
    np.testing.assert_allclose(backend.asnumpy(back), field, atol=1e-12)


def test_evanescent_components_decay(device):
    field = np.zeros((32, 32), complex)
    field[12, 0] = 1.0  # frequency 12 / (32 * 0.1 µm) = 3.75 / µm > 1/λ = 2 / µm
    out = propagation.propagate(np.fft.ifft2(field), 1.0, wavelength=WAVELENGTH, sampling=0.1)
    decay = np.exp(-2 * np.pi * np.sqrt(3.75**2 - 2.0**2))
    power = float((abs(out) ** 2).sum())
    assert power == pytest.approx(decay**2 * np.sum(abs(np.fft.ifft2(field)) ** 2), rel=1e-9)


def test_precision_is_kept(device):
    field = np.ones((16, 16), np.complex64)
    assert propagation.propagate(field, 1.0, wavelength=WAVELENGTH, sampling=SAMPLING).dtype == np.complex64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"wavelength": 0.0}, "wavelength must be finite and > 0"),
        ({"wavelength": -0.5}, "wavelength must be finite and > 0"),
        ({"sampling": 0.0}, "sampling must be finite and > 0"),
        ({"distance": float("nan")}, "distance must be a finite number \\[length\\]"),
        ({"distance": 1j}, "distance must be a finite number \\[length\\]"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    args = {"distance": 1.0, "wavelength": WAVELENGTH, "sampling": SAMPLING} | kwargs
    distance = args.pop("distance")
    with pytest.raises(ValueError, match=match):
        propagation.propagate(np.ones((8, 8), complex), distance, **args)


def test_nan_field_is_refused():
    field = np.ones((8, 8), complex)
    field[3, 3] = np.nan
    with pytest.raises(ValueError, match="field holds non-finite values"):
        propagation.propagate(field, 1.0, wavelength=WAVELENGTH, sampling=SAMPLING)


def test_beam_radius_refuses_a_wrapped_beam():
    beam = microscope.gaussian_beam(GRID, waist=40.0, wavelength=WAVELENGTH, xp=np)
    with pytest.raises(ValueError, match="enlarge the extent"):
        microscope.beam_radius(abs(beam) ** 2, SAMPLING)


@pytest.mark.parametrize("bad, match", [(-1.0, "finite, non-negative"), (np.nan, "finite, non-negative"),
                                        (0.0, "zero total power")])
def test_beam_radius_refuses_bad_intensity(bad, match):
    with pytest.raises(ValueError, match=match):
        microscope.beam_radius(np.full((16, 16), bad), SAMPLING)


def test_cpu_and_gpu_agree_to_float32_precision(device, on_cpu):
    """The same call on each device, compared with the CPU's result."""
    beam = microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH, xp=np).astype(np.complex64)
    reference = on_cpu(propagation.propagate, beam, 200.0, wavelength=WAVELENGTH, sampling=SAMPLING)
    result = propagation.propagate(beam, 200.0, wavelength=WAVELENGTH, sampling=SAMPLING)
    assert backend.get_array_module(result) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result), reference, rtol=0, atol=2e-6)


def test_numpy_inputs_give_device_results_on_the_stand_in():
    """The device rule for mbook.core.propagation and the beams of mbook.light.microscope."""
    backend.set_device("strict")
    try:
        field = np.ones((16, 16), complex)
        results = [
            propagation.propagate(field, 1.0, wavelength=WAVELENGTH, sampling=SAMPLING),
            propagation.fresnel_propagator(grids.make_grid(gpts=(8, 8), sampling=0.5), 1.0, WAVELENGTH),
            propagation.angular_spectrum_propagator(grids.make_grid(gpts=(8, 8), sampling=0.5), 1.0, WAVELENGTH),
            microscope.gaussian_beam(GRID, waist=WAIST, wavelength=WAVELENGTH),
            microscope.gaussian_beam_radius(np.array([1.0, 2.0]), waist=WAIST, wavelength=WAVELENGTH),
        ]
        assert all(backend.get_array_module(r) is backend.xp for r in results)
    finally:
        backend.set_device("cpu")


def test_angular_spectrum_leaves_out_the_carrier_and_follows_a_gaussian_beam():
    """A Gaussian beam (w₀ = 4 µm, λ = 0.5 µm) after 100.1 µm, against the paraxial closed form (q0/q) exp(iπr²/λq),
    q = z - i z_R (Goodman): to 1 %; the transfer function is 1 at k = 0, the carrier exp(2πiz/λ) left out (kept in,
    it would turn the phase by 0.4π here)."""
    wavelength, w0, dx, n, z = 0.5, 4.0, 0.5, 128, 100.1
    grid = grids.make_grid(gpts=(n, n), sampling=dx)
    x, y = grids.coordinates(grid, centered=True, xp=np)
    r2 = x[:, None] ** 2 + y[None, :] ** 2
    zr = np.pi * w0**2 / wavelength
    exact = (-1j * zr / (z - 1j * zr)) * np.exp(1j * np.pi * r2 / (wavelength * (z - 1j * zr)))
    out = backend.asnumpy(propagation.propagate(np.exp(-r2 / w0**2).astype(np.complex128), z, wavelength=wavelength,
                                                sampling=dx))
    transfer = backend.asnumpy(propagation.angular_spectrum_propagator(grid, z, wavelength, xp=np))
    assert abs(complex(transfer[0, 0]) - 1) < 1e-12
    assert np.abs(out - exact).max() < 1e-2 * np.abs(exact).max()
