"""Electron scattering factors of neutral atoms, ``f_e(k)``: the Kirkland and Lobato tables.

``f_e(k)`` is the Fourier transform of an atom's electrostatic potential, in
the first Born approximation (Kirkland 2010, ch. 5 and appendix C); the
projected potentials of :mod:`mbook.electron.potentials` are built from it.
Two parameterisations ship as data in ``mbook/electron/data/``, both for
Z = 1..103:

- Kirkland (2010, appendix C): 3 Lorentzians + 3 Gaussians in ``k``;
- Lobato & Van Dyck (2014): 5 hydrogen-like terms.

``k = |k|`` is a spatial frequency in cycles per Å without a 2π
(``k = 2 sin(θ)/λ = 1/d``), as in :mod:`mbook.core.grids`.

Examples
--------
>>> from mbook.electron import scattering_factors
>>> round(scattering_factors.scattering_factor("C", 0.0), 3)          # Å
2.511
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from pathlib import Path

import numpy as np

from mbook.core import backend, checks

PARAMETRIZATIONS = ("kirkland", "lobato")
DATA_DIR = Path(__file__).resolve().parent / "data"


@functools.lru_cache(maxsize=None)
def load_table(parametrization: str) -> dict:
    """The parameter table of one parameterisation: symbol -> dict of float64 NumPy arrays.

    Parameters
    ----------
    parametrization : {"kirkland", "lobato"}

    Returns
    -------
    dict
        ``{"H": {"a": array, "b": array, ...}, ...}``: the published
        coefficients (host data, read once and cached).
    """
    parametrization = check_parametrization(parametrization)
    with open(DATA_DIR / f"{parametrization}.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    return {
        symbol: {key: np.asarray(value, dtype=np.float64) for key, value in entry.items() if key != "Z"}
        for symbol, entry in raw["elements"].items()
    }


def table_metadata(parametrization: str = "kirkland") -> dict:
    """The header of a parameter table: citation, bibtex key, formula, units, provenance."""
    parametrization = check_parametrization(parametrization)
    with open(DATA_DIR / f"{parametrization}.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    return {key: value for key, value in raw.items() if key != "elements"}


def check_parametrization(parametrization) -> str:
    """``"kirkland"`` or ``"lobato"`` (any case, stripped); else a ValueError listing them."""
    if not isinstance(parametrization, str) or parametrization.strip().lower() not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return parametrization.strip().lower()


def element_symbol(element) -> str:
    """Chemical symbol of ``element``: a symbol such as ``"Si"`` or an atomic number (1-103).

    Raises
    ------
    ValueError
        For anything else, naming the value.

    Examples
    --------
    >>> from mbook.electron.scattering_factors import element_symbol
    >>> element_symbol(14), element_symbol("Sr")
    ('Si', 'Sr')
    """
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(element, numbers.Integral) and not isinstance(element, bool):
        if 1 <= element < len(chemical_symbols):
            return chemical_symbols[int(element)]
    elif isinstance(element, str) and element in atomic_numbers and element != "X":
        return element
    raise ValueError(f"element must be a chemical symbol ('Si') or an atomic number (1-103), got {element!r}")


def check_element(element, parametrization: str) -> str:
    """The chemical symbol of ``element``, which the table of ``parametrization`` must cover.

    Raises
    ------
    ValueError
        An unknown element, or one beyond the table (Z > 103), naming it.
    """
    from ase.data import atomic_numbers

    symbol = element_symbol(element)
    if symbol not in load_table(parametrization):
        raise ValueError(
            f"element {symbol!r} (Z = {atomic_numbers[symbol]}) is not in the {parametrization} table, "
            f"which covers Z = 1..103 (H..Lr)"
        )
    return symbol


def scattering_factor_of_k2(symbol: str, k2, parametrization: str):
    """``f_e`` [Å] at squared frequencies ``k2`` [1/Å²]: a kernel, on the device of ``k2``.

    No checks (``symbol`` and ``parametrization`` already checked,
    ``k2 >= 0``): :func:`mbook.electron.potentials.projected_potential` calls
    it on the grid's frequencies; :func:`scattering_factor` is the checked
    public form.

    Parameters
    ----------
    symbol : str
        Chemical symbol in the table.
    k2 : ndarray or float
        ``|k|²`` [1/Å²], any array module.
    parametrization : {"kirkland", "lobato"}

    Returns
    -------
    ndarray or numpy.float64
        ``f_e`` with the shape and device of ``k2``.
    """
    return _kernel(load_table(parametrization)[symbol], k2, parametrization)


def _kernel(params: dict, k2, parametrization: str):
    xp = backend.get_array_module(k2)
    f = xp.zeros_like(k2)
    if parametrization == "kirkland":
        # Kirkland (2010), appendix C: 3 Lorentzians + 3 Gaussians in k = 1/d.
        for a, b, c, d in zip(params["a"], params["b"], params["c"], params["d"]):
            f += a / (k2 + b) + c * xp.exp(-d * k2)
    else:
        # Lobato & Van Dyck (2014): f_e = Σ a (2 + b k²) / (1 + b k²)², hydrogen-like terms.
        for a, b in zip(params["a"], params["b"]):
            bk2 = b * k2
            f += a * (2 + bk2) / (1 + bk2) ** 2
    return f


def scattering_factor(element, k, parametrization: str = "kirkland"):
    """Electron scattering factor of a neutral atom, ``f_e(k)``.

    Parameters
    ----------
    element : str or int
        Chemical symbol (``"Sr"``) or atomic number (1-103).
    k : float or array_like
        Spatial frequency ``|k| = 2 sin(θ)/λ`` in cycles per Å, no 2π
        (the convention of :mod:`mbook.core.grids`) [1/Å]. An array is moved
        to the selected device.
    parametrization : {"kirkland", "lobato"}
        Kirkland (2010) or Lobato & Van Dyck (2014).

    Returns
    -------
    float or ndarray, float64
        ``f_e`` [Å]: a float for a number ``k``; for an array, an array of its
        shape on the selected device.

    Raises
    ------
    ValueError
        Unknown element or parameterisation; negative or non-finite ``k``.

    Examples
    --------
    >>> from mbook.electron.scattering_factors import scattering_factor
    >>> round(float(scattering_factor("C", 0.0)), 3)          # Å
    2.511
    >>> round(float(scattering_factor(6, 0.0, parametrization="lobato")), 3)
    2.51
    """
    parametrization = check_parametrization(parametrization)
    symbol = check_element(element, parametrization)
    if isinstance(k, numbers.Real) and not isinstance(k, bool):  # a number: computed on the host
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"k must be finite and >= 0 [1/Å] (a magnitude |k|), got {k!r}")
        return float(scattering_factor_of_k2(symbol, np.float64(k) ** 2, parametrization))
    k = checks.check_array(k, "k", real=True, finite=False).astype(np.float64)
    xp = backend.get_array_module(k)
    if not bool(xp.all(xp.isfinite(k) & (k >= 0))):  # one copy to the host, to refuse bad input
        raise ValueError("k must be finite and >= 0 [1/Å] (a magnitude |k|), got an array with negative or "
                         "non-finite values")
    return scattering_factor_of_k2(symbol, k * k, parametrization)
