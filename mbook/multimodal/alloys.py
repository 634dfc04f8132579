"""Alloy nanoparticles seen column by column, and their simultaneous EDX and HAADF measurements.

The specimen is an fcc nanoparticle of two elements A and B seen down [001], so its atoms stand in
columns; column ``c`` holds ``N_c`` atoms, ``n_c`` of them of element A, a fraction ``f_c = n_c / N_c``
that varies from column to column. The probe is scanned over the column's cell (area ``a_c``, the column
spacing squared) with a dose ``D`` [e/Å²], so ``E_c = D a_c`` electrons pass it. Each atom meets them at
the fluence ``D``: a signal of cross-section ``σ`` [Å²] per atom is ``D σ = E_c (σ / a_c)``.

- **EDX** counts X-rays of each element's line, Poisson with mean
  ``μ_cA = E_c y_A A_cA N_c f_c`` and ``μ_cB = E_c y_B A_cB N_c (1 - f_c)``, where ``y = σ_x Ω / (4π a_c)``
  is the yield per electron through the cell per atom (:func:`x_ray_yields` gives ``σ_x Ω / 4π``, the
  X-ray production cross-section times the detector's solid angle over 4π) and ``A`` the fraction that
  escapes absorption in the particle (:func:`absorption_factors`). At atomic resolution this is a handful
  of counts per column;
- **HAADF** integrates the electrons scattered to high angles, ``m_c = E_c N_c (s_B + (s_A - s_B) f_c)``
  with per-atom signals ``s ∝ Z^γ`` (:func:`haadf_cross_sections`; γ ≈ 1.8, the single-atom fit of the
  STEM page), each the fraction of the cell's electrons that one atom scatters onto the detector (its
  HAADF cross-section over ``a_c``: the probe averaged over the cell, not held on the atom), the column
  "scattering cross-section" picture of Van Aert et al. (2009). Its counts are
  large, so its error is the model's (channelling, cross-talk between columns): a relative
  ``model_error`` per column on top of Poisson noise.

The estimators are in :mod:`mbook.multimodal.edx`. Device rule: the particle is built on the host with
ase (rule 5: a host-only step); its arrays and the measurements live on the selected device, and the
random draws are made on the host from a seed, then moved.

Examples
--------
>>> from mbook.multimodal import alloys
>>> particle = alloys.alloy_nanoparticle(("Au", "Ag"), length=5, seed=0)
>>> data = alloys.simulate(particle, dose=4e6, haadf_cross_sections=(1.9e-3, 7e-4), seed=1)
>>> int(data.edx.shape[0]) == int(particle.counts.shape[0])
True
"""


from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from ase.cluster import Octahedron
from ase.data import atomic_numbers, reference_states

from mbook.core import backend, checks

#: Effective X-ray production cross-sections of the Lα lines used for each element at 200-300 keV
#: [barn = 1e-8 Å²]: L3-subshell ionisation cross-section (distorted-wave Born values of Bote and Salvat,
#: reviewed by Llovet et al. 2014) times the L3 fluorescence yield (Krause 1979) times the Lα fraction.
#: Estimates to within a factor of about 2; what matters for the estimators is the resulting count level,
#: which the book's page sweeps.
CROSS_SECTIONS = {"Au": 110.0, "Ag": 70.0, "Pt": 105.0, "Pd": 65.0, "Cu": 40.0, "Ni": 35.0}
#: Collection solid angle of a modern four-quadrant EDX detector [sr] (0.7-0.9 sr for Super-X type systems).
SOLID_ANGLE = 0.7


class Nanoparticle(NamedTuple):
    """A binary alloy nanoparticle seen down [001], column by column.

    Attributes
    ----------
    atoms : ase.Atoms
        The particle (host object).
    positions : (K, 2) ndarray
        Column positions (x, y) [Å], on the selected device.
    counts : (K, 2) ndarray, int
        Atoms of element A and of element B in each column.
    composition : (K,) ndarray
        Fraction of A in each column, ``counts[:, 0] / counts.sum(1)``.
    elements : tuple of str
        ``(A, B)``.
    column_area : float
        Area per column [Å²].
    """

    atoms: object
    positions: object
    counts: object
    composition: object
    elements: tuple
    column_area: float


class EDXHAADFData(NamedTuple):
    """Simultaneous EDX and HAADF measurements of the columns of a particle.

    Attributes
    ----------
    edx : (K, 2) ndarray
        X-ray counts of the lines of A and B per column.
    haadf : (K,) ndarray
        HAADF signal per column [electrons scattered onto the detector].
    atoms_per_column : (K,) ndarray
        ``N_c``, known from the particle's shape.
    electrons : (K,) ndarray
        Electrons through each column, ``dose × column area``.
    yields : (2,) ndarray
        X-ray counts per electron through the column's cell, per atom, of A and B (cross-section × solid
        angle / 4π, divided by the column area).
    absorption : (K, 2) ndarray
        Fraction of each line's X-rays that leave the particle (1 without absorption).
    elements : tuple of str
    """

    edx: object
    haadf: object
    atoms_per_column: object
    electrons: object
    yields: object
    absorption: object
    elements: tuple


def _check_elements(elements):
    if (not isinstance(elements, (tuple, list)) or len(elements) != 2
            or not all(isinstance(e, str) and e in atomic_numbers for e in elements) or elements[0] == elements[1]):
        raise ValueError(f"elements must be two different chemical symbols (A, B), e.g. ('Au', 'Ag'), got {elements!r}")
    return tuple(elements)


def _lattice_constant(symbol):
    state = reference_states[atomic_numbers[symbol]] or {}
    if state.get("symmetry") != "fcc":
        raise ValueError(f"elements must be fcc metals (the particle is an fcc octahedron), got {symbol!r}")
    return float(state["a"])


# ----------------------------------------------------------------------------- the specimen
def alloy_nanoparticle(elements=("Au", "Ag"), *, length: int = 7, cutoff: int = 2, profile: str = "core-shell",
                       core_fraction: float = 0.8, shell_fraction: float = 0.2, spread: float = 0.1,
                       seed: int = 0) -> Nanoparticle:
    """A truncated-octahedron alloy nanoparticle whose composition varies column by column.

    Built with :func:`ase.cluster.Octahedron` (host-only: ase) with the mean lattice constant of the two
    elements (Vegard's law). Each column's fraction of A follows ``profile`` plus a seeded random
    deviation of standard deviation ``spread``; each atom of the column is then A with that probability,
    so the counts are integers.

    Parameters
    ----------
    elements : (str, str)
        Elements A and B, fcc metals, e.g. ``("Au", "Ag")`` or ``("Pt", "Ni")``.
    length, cutoff : int
        Octahedron size and corner truncation, in atomic layers (ase's parameters); ``cutoff < length / 2``.
    profile : {"core-shell", "gradient"}
        ``core-shell``: A-rich (``core_fraction``) at the centre, falling to ``shell_fraction`` at the rim;
        ``gradient``: from ``shell_fraction`` to ``core_fraction`` across the particle along x.
    core_fraction, shell_fraction : float
        Fractions of A in [0, 1].
    spread : float
        Standard deviation of the random column-to-column deviation of the fraction, in [0, 0.5].
    seed : int, SeedSequence or Generator
        Seed of the draws.

    Returns
    -------
    Nanoparticle
    """
    elements = _check_elements(elements)
    length = checks.check_count(length, "length", minimum=2, maximum=30)
    cutoff = checks.check_count(cutoff, "cutoff", minimum=0)
    if 2 * cutoff >= length:
        raise ValueError(f"cutoff must be < length / 2 = {length / 2}, got {cutoff}")
    checks.check_choice(profile, "profile", ("core-shell", "gradient"))
    core_fraction = checks.check_number(core_fraction, "core_fraction", lower=0, upper=1)
    shell_fraction = checks.check_number(shell_fraction, "shell_fraction", lower=0, upper=1)
    spread = checks.check_number(spread, "spread", lower=0, upper=0.5)
    seed = checks.check_seed(seed)
    a = 0.5 * (_lattice_constant(elements[0]) + _lattice_constant(elements[1]))
    atoms = Octahedron(elements[1], length=length, cutoff=cutoff, latticeconstant=a)
    # Columns down [001]: atoms with the same (x, y) on the fcc lattice (spacing a/2).
    xy = np.round(atoms.positions[:, :2] / (a / 2)).astype(np.int64)
    keys, column_of_atom = np.unique(xy, axis=0, return_inverse=True)
    column_of_atom = column_of_atom.ravel()
    positions = keys * (a / 2)
    positions = positions - positions.mean(axis=0)
    radius = np.hypot(*positions.T)
    if profile == "core-shell":
        t = radius / max(radius.max(), 1e-12)
        mean = core_fraction + (shell_fraction - core_fraction) * t**2
    else:
        x = positions[:, 0]
        t = (x - x.min()) / max(np.ptp(x), 1e-12)
        mean = shell_fraction + (core_fraction - shell_fraction) * t
    rng = np.random.default_rng(seed)
    probability = np.clip(mean + spread * rng.standard_normal(len(keys)), 0.0, 1.0)
    is_a = rng.random(len(atoms)) < probability[column_of_atom]
    symbols = np.where(is_a, elements[0], elements[1])
    atoms.set_chemical_symbols(symbols.tolist())
    n_a = np.bincount(column_of_atom, weights=is_a, minlength=len(keys)).astype(np.int64)
    n = np.bincount(column_of_atom, minlength=len(keys)).astype(np.int64)
    counts = np.stack([n_a, n - n_a], axis=1)
    return Nanoparticle(atoms, backend.asarray(positions), backend.asarray(counts),
                        backend.asarray(n_a / n), elements, float((a / 2) ** 2))


# ----------------------------------------------------------------------------- the measurements
def x_ray_yields(elements, *, cross_sections=None, solid_angle: float = SOLID_ANGLE):
    """Detected X-ray cross-section per atom of each element's line: ``σ_x Ω / 4π`` [Å²].

    Times the dose [e/Å²], the mean number of X-rays one atom sends into the detector.

    Parameters
    ----------
    elements : (str, str)
    cross_sections : (float, float), optional
        X-ray production cross-sections [barn]; default from :data:`CROSS_SECTIONS`.
    solid_angle : float
        Detector collection solid angle [sr], in (0, 4π].

    Returns
    -------
    (2,) ndarray
        On the selected device [Å²: counts per atom per e/Å² of dose].
    """
    elements = _check_elements(elements)
    solid_angle = checks.check_number(solid_angle, "solid_angle", lower=0, lower_inclusive=False,
                                      upper=4 * math.pi, units="sr")
    if cross_sections is None:
        missing = [e for e in elements if e not in CROSS_SECTIONS]
        if missing:
            raise ValueError(f"cross_sections: no default for {missing}; pass cross_sections=(σ_A, σ_B) [barn]")
        cross_sections = tuple(CROSS_SECTIONS[e] for e in elements)
    values = checks.as_tuple(cross_sections, "cross_sections", 2)
    values = [checks.check_positive_number(v, "cross_sections") for v in values]
    return backend.asarray(np.array(values) * 1e-8 * solid_angle / (4 * math.pi))


def absorption_factors(atoms_per_column, *, attenuation_lengths, layer_spacing: float,
                       path_factor: float = 1.0):
    """Fraction of X-rays that leave the particle, per column and line: ``(1 - exp(-x)) / x``.

    X-rays made uniformly along a column of length ``t = N_c × layer_spacing`` travel on average a path
    ``path_factor × t`` through the metal towards the detector; a line with attenuation length ``λ``
    (1 / linear attenuation coefficient) escapes with ``(1 - e^{-x}) / x``, ``x = path_factor t / λ``.

    Parameters
    ----------
    atoms_per_column : (K,) array_like
        ``N_c`` >= 1.
    attenuation_lengths : (float, float)
        Attenuation length of each line in the particle [Å] (e.g. about 3e3 Å for Ag Lα in gold).
    layer_spacing : float
        Distance between atoms along a column [Å] (``a`` for fcc [001]).
    path_factor : float
        Mean exit path per unit column length (geometry and take-off angle), > 0.

    Returns
    -------
    (K, 2) ndarray
        In (0, 1], on the selected device.
    """
    n = checks.check_array(atoms_per_column, "atoms_per_column", ndim=1, real=True)
    if bool((n < 1).any()):
        raise ValueError("atoms_per_column must be >= 1 in every column")
    lengths = [checks.check_positive_number(v, "attenuation_lengths")
               for v in checks.as_tuple(attenuation_lengths, "attenuation_lengths", 2)]
    layer_spacing = checks.check_positive_number(layer_spacing, "layer_spacing")
    path_factor = checks.check_positive_number(path_factor, "path_factor")
    xp = backend.get_array_module(n)
    x = path_factor * layer_spacing * n[:, None] / xp.asarray(lengths)[None, :]
    return -xp.expm1(-x) / x


def haadf_cross_sections(elements, *, gamma: float = 1.8, reference_element: str = "Au",
                         reference_cross_section: float = 1.9e-3):
    """Per-atom HAADF signals ``s_Z = s_ref (Z / Z_ref)^γ`` of the two elements.

    A signal is the fraction of the electrons scanned over a column's cell that one atom scatters onto the
    detector: its HAADF cross-section [Å²] divided by the cell's area (the probe averaged over the cell,
    far less than with the probe held on the atom).

    Parameters
    ----------
    elements : (str, str)
    gamma : float
        Z-exponent in [1, 2] (2: bare Rutherford scattering; screening lowers it; the single-atom
        multislice fit of the STEM page gives about 1.8).
    reference_element : str
        Element whose signal is known.
    reference_cross_section : float
        Its HAADF signal [fraction of the cell's electrons per atom], in (0, 1) (about 1.9e-3 for Au at
        300 keV, 25 mrad, 70-200 mrad detector, over a 2.04 Å cell: the edx-haadf page's multislice;
        0.037 with the probe held on the atom).

    Returns
    -------
    (float, float)
        ``(s_A, s_B)`` [fraction of the electrons through the column's cell, per atom].
    """
    elements = _check_elements(elements)
    gamma = checks.check_number(gamma, "gamma", lower=1, upper=2, hint="about 1.8 for HAADF")
    if not isinstance(reference_element, str) or reference_element not in atomic_numbers:
        raise ValueError(f"reference_element must be a chemical symbol, got {reference_element!r}")
    s_ref = checks.check_positive_number(reference_cross_section, "reference_cross_section", upper=1.0)
    z_ref = atomic_numbers[reference_element]
    return tuple(s_ref * (atomic_numbers[e] / z_ref) ** gamma for e in elements)


def simulate(particle: Nanoparticle, *, dose: float, haadf_cross_sections, cross_sections=None,
             solid_angle: float = SOLID_ANGLE, model_error: float = 0.03, absorption=None,
             seed: int = 0) -> EDXHAADFData:
    """EDX counts and HAADF signals of every column at ``dose``: Poisson draws, seeded.

    Parameters
    ----------
    particle : Nanoparticle
    dose : float
        Electron dose [e/Å²] > 0 (EDX at atomic resolution needs 1e7-1e9 e/Å²).
    haadf_cross_sections : (float, float)
        Per-atom HAADF signal ``(s_A, s_B)`` [fraction of the electrons through the column's cell, per
        atom], e.g. single-atom multislice values ``∝ Z^γ`` averaged over probe positions in the cell.
    cross_sections : (float, float), optional
        X-ray production cross-sections [barn] (see :func:`x_ray_yields`).
    solid_angle : float
        EDX collection solid angle [sr].
    model_error : float
        Relative standard deviation of the HAADF column signal beyond counting noise (channelling,
        cross-talk), in [0, 1).
    absorption : (K, 2) array_like, optional
        Escape fractions from :func:`absorption_factors`; None: no absorption.
    seed : int, SeedSequence or Generator

    Returns
    -------
    EDXHAADFData
    """
    if not isinstance(particle, Nanoparticle):
        raise TypeError(f"particle must be a Nanoparticle (alloy_nanoparticle), got {type(particle).__name__}")
    dose = checks.check_positive_number(dose, "dose")
    s = [checks.check_positive_number(v, "haadf_cross_sections", upper=1.0)
         for v in checks.as_tuple(haadf_cross_sections, "haadf_cross_sections", 2)]
    model_error = checks.check_number(model_error, "model_error", lower=0, upper=1, upper_inclusive=False)
    seed = checks.check_seed(seed)
    # per electron through the cell: each atom sees the cell's electrons at the fluence dose = E_c / a_c
    yields = x_ray_yields(particle.elements, cross_sections=cross_sections,
                          solid_angle=solid_angle) / particle.column_area
    counts = backend.asarray(particle.counts).astype(np.float64)
    k = counts.shape[0]
    absorption = _check_absorption(absorption, k)
    xp = backend.get_array_module(counts)
    electrons = dose * particle.column_area
    edx_mean = electrons * yields[None, :] * absorption * counts
    haadf_mean = electrons * (counts[:, 0] * s[0] + counts[:, 1] * s[1])
    rng = np.random.default_rng(seed)  # drawn on the host, then moved (device rule 4)
    edx = rng.poisson(backend.asnumpy(edx_mean)).astype(np.float64)
    scatter = 1.0 + model_error * rng.standard_normal(k)
    haadf = rng.poisson(np.maximum(backend.asnumpy(haadf_mean) * scatter, 0.0)).astype(np.float64)
    return EDXHAADFData(backend.asarray(edx), backend.asarray(haadf), counts.sum(axis=1),
                        xp.full(k, electrons), yields, absorption, particle.elements)


def _check_absorption(absorption, k):
    if absorption is None:
        return backend.xp.ones((k, 2))
    absorption = checks.check_array(absorption, "absorption", ndim=2, real=True)
    if absorption.shape != (k, 2):
        raise ValueError(f"absorption must have shape ({k}, 2) (columns, lines), got {absorption.shape}")
    if bool(((absorption <= 0) | (absorption > 1)).any()):
        raise ValueError("absorption must hold escape fractions in (0, 1]")
    return absorption.astype(np.float64)


def check_data(data):
    """``data`` (:class:`EDXHAADFData`) checked, as float64 arrays on the selected device: shapes agree
    between the modalities, counts are >= 0; else ValueError/TypeError naming the field."""
    if not isinstance(data, EDXHAADFData):
        raise TypeError(f"data must be EDXHAADFData (from simulate), got {type(data).__name__}")
    edx = checks.check_array(data.edx, "data.edx", ndim=2, real=True)
    k = edx.shape[0]
    if edx.shape[1] != 2:
        raise ValueError(f"data.edx must have shape (K, 2), got {edx.shape}")
    if bool((edx < 0).any()):
        raise ValueError("data.edx holds negative counts: X-ray counts are >= 0")
    haadf = checks.check_array(data.haadf, "data.haadf", ndim=1, real=True)
    n = checks.check_array(data.atoms_per_column, "data.atoms_per_column", ndim=1, real=True)
    electrons = checks.check_array(data.electrons, "data.electrons", ndim=1, real=True)
    for name, array in (("data.haadf", haadf), ("data.atoms_per_column", n), ("data.electrons", electrons)):
        if array.shape != (k,):
            raise ValueError(f"{name} must have one value per column ({k}, as data.edx), got shape {array.shape}")
    if bool((haadf < 0).any()):
        raise ValueError("data.haadf holds negative values: HAADF counts are >= 0")
    if bool((n < 1).any()) or bool((electrons <= 0).any()):
        raise ValueError("data.atoms_per_column must be >= 1 and data.electrons > 0 in every column")
    yields = checks.check_array(data.yields, "data.yields", ndim=1, real=True)
    if yields.shape != (2,) or bool((yields <= 0).any()):
        raise ValueError(f"data.yields must be two positive yields, got {backend.asnumpy(yields)!r}")
    absorption = _check_absorption(data.absorption, k)
    elements = _check_elements(data.elements)
    return EDXHAADFData(edx.astype(np.float64), haadf.astype(np.float64), n.astype(np.float64),
                        electrons.astype(np.float64), yields.astype(np.float64), absorption, elements)
