"""The relativistic electron: wavelength and interaction parameter.

Constants are CODATA values from :mod:`scipy.constants`. Energies are the
accelerating voltage times the electron charge, in eV (300 keV = 300e3).

Examples
--------
>>> from mbook.electron import physics
>>> round(physics.wavelength(300e3), 5)     # Å; Kirkland (2010), table 2.2: 0.01969
0.01969
>>> round(physics.interaction_parameter(300e3), 7)   # rad/(V·Å); Kirkland: 0.0006526
0.0006526
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import constants

from mbook.core import backend, checks

ELECTRON_REST_ENERGY = constants.m_e * constants.c**2 / constants.e  # eV


def check_energy(energy) -> float:
    """Validate an electron energy: a finite real number > 0 [eV].

    Raises
    ------
    ValueError
        Naming ``energy``, the value and the valid range.
    """
    return checks.check_number(energy, "energy", lower=0, lower_inclusive=False, units="eV",
                               hint="e.g. 300e3 for 300 keV")


def wavelength(energy) -> float:
    """Relativistic de Broglie wavelength of an electron.

    ``λ = h c / sqrt(E (2 m0 c² + E))`` (Kirkland 2010, eq. 2.5).

    Parameters
    ----------
    energy : float
        Kinetic energy [eV].

    Returns
    -------
    float
        Wavelength [Å].
    """
    energy = check_energy(energy)
    hc = constants.h * constants.c / constants.e * 1e10  # eV·Å
    return hc / math.sqrt(energy * (2 * ELECTRON_REST_ENERGY + energy))


def relativistic_mass_ratio(energy) -> float:
    """``γ = 1 + E / (m0 c²)``, the relativistic mass of the electron over its rest mass."""
    return 1.0 + check_energy(energy) / ELECTRON_REST_ENERGY


def interaction_parameter(energy) -> float:
    """Interaction parameter σ: phase shift per unit projected potential.

    ``σ = 2π m e λ / h² = (2π / (λ V)) (m0c² + eV) / (2 m0c² + eV)``
    (Kirkland 2010, eq. 5.6), so that a thin specimen transmits
    ``exp(i σ v(x, y))`` for a projected potential ``v`` in V·Å.

    Parameters
    ----------
    energy : float
        Kinetic energy [eV].

    Returns
    -------
    float
        σ [rad/(V·Å)].
    """
    energy = check_energy(energy)
    mc2 = ELECTRON_REST_ENERGY
    return 2 * math.pi / (wavelength(energy) * energy) * (mc2 + energy) / (2 * mc2 + energy)


def scattering_angle(spatial_frequency, energy):
    """Scattering angle of a spatial frequency, ``θ = λ k`` (small angles).

    Parameters
    ----------
    spatial_frequency : float or ndarray
        k [1/Å].
    energy : float
        [eV].

    Returns
    -------
    float or ndarray
        θ [mrad]: a float for a number, an array on the selected device for an array.
    """
    factor = wavelength(energy) * 1e3
    if isinstance(spatial_frequency, numbers.Real) and not isinstance(spatial_frequency, bool):
        return checks.check_number(spatial_frequency, "spatial_frequency", units="1/Å") * factor
    return checks.check_array(spatial_frequency, "spatial_frequency", real=True).astype(np.float64) * factor
