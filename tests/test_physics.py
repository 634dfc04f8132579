"""Electron wavelength and interaction parameter against Kirkland (2010), table 2.2 and eq. 5.6."""

import pytest

from mbook.electron import physics

# (energy [eV], wavelength [Å], sigma [rad/(V·Å)]) as tabulated by Kirkland (2010).
KIRKLAND = [(80e3, 0.04176, None), (100e3, 0.03701, 0.0009244), (200e3, 0.02508, 0.0007288),
            (300e3, 0.01969, 0.0006526)]


@pytest.mark.parametrize("energy, expected, _", KIRKLAND)
def test_wavelength_matches_kirkland(energy, expected, _):
    assert physics.wavelength(energy) == pytest.approx(expected, abs=0.5e-5)


@pytest.mark.parametrize("energy, _, expected", [k for k in KIRKLAND if k[2]])
def test_interaction_parameter_matches_kirkland(energy, _, expected):
    assert physics.interaction_parameter(energy) == pytest.approx(expected, abs=0.5e-7)


def test_non_relativistic_limit():
    # At 10 eV, λ = h / sqrt(2 m e E) = 3.878 Å to 5e-6 relative.
    assert physics.wavelength(10.0) == pytest.approx(3.8783, rel=1e-4)


@pytest.mark.parametrize("energy", [0, -300e3, float("nan"), float("inf"), "300kV", True])
def test_bad_energy(energy):
    with pytest.raises(ValueError, match=r"energy must be a finite number > 0 \[eV\] \(e.g. 300e3 for 300 keV\)"):
        physics.wavelength(energy)


def test_scattering_angle_of_numbers_and_arrays(device):
    """θ = λ k: a float for a number; for an array, an array on the selected device."""
    import numpy as np

    from mbook.core import backend

    angle = physics.scattering_angle(0.5, 300e3)
    # Kirkland's λ = 0.01969 Å at 300 keV, to its 4 digits
    assert isinstance(angle, float) and angle == pytest.approx(0.5 * 0.01969 * 1e3, abs=0.5 * 0.5e-5 * 1e3)
    angles = physics.scattering_angle(np.array([0.0, 0.5, 1.0]), 300e3)
    assert backend.get_array_module(angles) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(angles), [0.0, angle, 2 * angle])


@pytest.mark.parametrize("energy, gamma", [(100e3, 1.1957), (200e3, 1.3914), (300e3, 1.5871)])
def test_relativistic_mass_ratio_is_kirklands_and_the_wavelengths(energy, gamma):
    """Kirkland (2010), table 2.2, to its four decimals; γ = 1 + E/m₀c² (m₀c² = 510.99895 keV, CODATA 2018); and
    the wavelength's γ, sqrt(1 + (hc/λm₀c²)²)."""
    assert physics.relativistic_mass_ratio(energy) == pytest.approx(gamma, abs=2e-4)
    assert physics.relativistic_mass_ratio(energy) == pytest.approx(1 + energy / 510998.95, abs=1e-7)
    hc = 12398.419843320026  # eV Å
    from_wavelength = (1 + (hc / (physics.wavelength(energy) * 510998.95)) ** 2) ** 0.5
    assert physics.relativistic_mass_ratio(energy) == pytest.approx(from_wavelength, abs=1e-7)
