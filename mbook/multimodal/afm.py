"""AFM: a polymer blend seen by tapping mode (topography, phase) and by force spectroscopy (mechanics).

In tapping mode an AFM records the topography and the phase lag at high resolution quickly; force
spectroscopy records a force curve per pixel, slowly, so Young's modulus and the adhesion come on a
coarser grid (:mod:`mbook.multimodal.upsampling` lifts them to the fine grid):

- :func:`polymer_blend`: two phases in smooth random domains (seeded), a stiff and a soft polymer,
  with the topography [nm], the tapping phase [deg], the modulus [GPa] and the adhesion [nN] on the
  fine grid;
- :func:`force_curves` and :func:`fit_dmt`: approach curves of the DMT model
  ``F(δ) = 4/3 E* √R δ^{3/2} - F_adh`` (Hertz's contact plus a constant adhesion, Derjaguin, Muller and
  Toporov 1975), one per coarse pixel, with force noise, and their linear least-squares fit.

Device rule: all arrays on the selected device; random draws on the host from a seed, then moved.

Examples
--------
>>> from mbook.multimodal import afm
>>> sample = afm.polymer_blend(64, seed=0)
>>> round(float(sample.fraction.mean()), 1)
0.5
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress
from mbook.inverse import optimize, synthetic


class BlendSample(NamedTuple):
    """A synthetic two-phase polymer blend on a square grid.

    Attributes
    ----------
    topography : (n, n) ndarray
        Height [nm].
    phase : (n, n) ndarray
        Tapping-mode phase lag [deg].
    modulus : (n, n) ndarray
        Young's modulus [GPa] (ground truth).
    adhesion : (n, n) ndarray
        Adhesion force [nN] (ground truth).
    fraction : (n, n) ndarray
        Local fraction of the stiff phase, in [0, 1].
    sampling : float
        Pixel size [nm].
    """

    topography: object
    phase: object
    modulus: object
    adhesion: object
    fraction: object
    sampling: float


def polymer_blend(gpts: int = 512, *, extent: float = 2000.0, domain_size: float = 40.0,
                  interface_width: float = 6.0, stiff_fraction: float = 0.5, moduli=(2.5, 0.3),
                  adhesions=(4.0, 12.0), step_height: float = 8.0, roughness: float = 1.5,
                  modulus_variation: float = 0.05, phase_noise: float = 0.3, height_noise: float = 0.1,
                  seed: int = 0) -> BlendSample:
    """A polymer-blend-like sample: stiff domains in a soft matrix (or the reverse), smooth and seeded.

    A Gaussian random field of correlation length ``domain_size`` is thresholded at the quantile that
    leaves ``stiff_fraction`` of the area to the stiff phase, through a ``tanh`` profile of width
    ``interface_width``. The modulus and adhesion interpolate between the two phases' values, with a
    smooth relative variation ``modulus_variation`` inside the phases that no guide shows. The soft
    phase stands ``step_height`` higher (it swells or relaxes after spin coating), on a smooth substrate
    ``roughness`` that has nothing to do with the mechanics. The tapping phase lag grows with the soft
    fraction (more dissipation) and picks up the topography's slope (a known cross-talk).

    Parameters
    ----------
    gpts : int
        Pixels per side (>= 16).
    extent : float
        Side of the field of view [nm].
    domain_size : float
        Correlation length of the domains [nm].
    interface_width : float
        Width of the interfaces [nm].
    stiff_fraction : float
        Area fraction of the stiff phase, in (0, 1).
    moduli : (float, float)
        Young's moduli of the stiff and the soft phase [GPa] (e.g. polystyrene about 2.5-3 GPa,
        polyolefin elastomers 0.01-0.5 GPa).
    adhesions : (float, float)
        Adhesion forces on the stiff and the soft phase [nN].
    step_height : float
        Height of the soft phase above the stiff one [nm].
    roughness : float
        RMS of the substrate's height variation [nm].
    modulus_variation : float
        Relative RMS variation of modulus and adhesion inside the phases, in [0, 0.5).
    phase_noise, height_noise : float
        Noise of the phase image [deg] and of the topography [nm], >= 0.
    seed : int, SeedSequence or Generator

    Returns
    -------
    BlendSample
        Arrays on the selected device.
    """
    n = checks.check_count(gpts, "gpts", minimum=16)
    extent = checks.check_positive_number(extent, "extent")
    sampling = extent / n
    domain_size = checks.check_positive_number(domain_size, "domain_size")
    interface_width = checks.check_positive_number(interface_width, "interface_width")
    stiff_fraction = checks.check_number(stiff_fraction, "stiff_fraction", lower=0, upper=1,
                                         lower_inclusive=False, upper_inclusive=False)
    e_stiff, e_soft = (checks.check_positive_number(v, "moduli") for v in checks.as_tuple(moduli, "moduli", 2))
    a_stiff, a_soft = (checks.check_positive_number(v, "adhesions")
                       for v in checks.as_tuple(adhesions, "adhesions", 2))
    step_height = checks.check_number(step_height, "step_height")
    roughness = checks.check_positive_number(roughness, "roughness", allow_zero=True)
    modulus_variation = checks.check_number(modulus_variation, "modulus_variation", lower=0, upper=0.5,
                                            upper_inclusive=False)
    phase_noise = checks.check_positive_number(phase_noise, "phase_noise", allow_zero=True)
    height_noise = checks.check_positive_number(height_noise, "height_noise", allow_zero=True)
    seed = checks.check_seed(seed)
    # About 16 images of up to 16 bytes a pixel (fields, their spectra, the maps) live at once.
    progress.plan_batches(n_items=1, bytes_per_item=16 * 16 * n * n)
    rng = np.random.default_rng(seed)

    def random_field(scale):  # smooth on scale domains, drawn in turn from rng
        return synthetic.random_field(n, correlation_length=scale * domain_size / sampling, seed=rng)

    field = random_field(1)
    xp = backend.get_array_module(field)
    threshold = xp.quantile(field, 1.0 - stiff_fraction)
    # The field's slope at a level crossing is about 1 / correlation length: scale it to a distance [nm].
    slope = xp.sqrt(xp.mean(optimize.gradient(field) ** 2) * 2) / sampling
    fraction = 0.5 * (1.0 + xp.tanh((field - threshold) / (slope * interface_width)))
    variation = 1.0 + modulus_variation * random_field(2)
    modulus = (e_soft + (e_stiff - e_soft) * fraction) * variation
    adhesion = (a_soft + (a_stiff - a_soft) * fraction) * (
        1.0 + modulus_variation * random_field(2))
    substrate = roughness * random_field(3)
    height = substrate + step_height * (1.0 - fraction)
    topography = height + height_noise * backend.asarray(rng.standard_normal((n, n)))
    gx, gy = optimize.gradient(height) / sampling
    phase = (60.0 + 25.0 * (1.0 - fraction) + 20.0 * (gx + gy)
             + phase_noise * backend.asarray(rng.standard_normal((n, n))))
    return BlendSample(topography, phase, modulus, adhesion, fraction, float(sampling))


# ----------------------------------------------------------------------------- force curves
def force_curves(modulus, adhesion, *, indentations, tip_radius: float = 10.0, poisson_ratio: float = 0.35,
                 noise: float = 0.5, seed: int = 0):
    """DMT approach curves, one per pixel: ``F(δ) = 4/3 E/(1-ν²) √R δ^{3/2} - F_adh`` plus noise.

    The tip is rigid next to a polymer, so the reduced modulus is ``E* = E / (1 - ν²)``. With ``E`` in
    GPa and lengths in nm the force comes out in nN.

    Parameters
    ----------
    modulus, adhesion : (nx, ny) array_like
        Young's modulus [GPa] and adhesion [nN] per pixel (e.g. :func:`downsample` of a sample's maps).
    indentations : (M,) array_like
        Indentation depths ``δ`` [nm], >= 0.
    tip_radius : float
        Tip radius ``R`` [nm].
    poisson_ratio : float
        Sample's Poisson ratio ``ν`` in [0, 0.5).
    noise : float
        Standard deviation of the force noise [nN], >= 0.
    seed : int, SeedSequence or Generator

    Returns
    -------
    (nx, ny, M) ndarray
        Forces [nN], on the selected device.
    """
    modulus = checks.check_array(modulus, "modulus", ndim=2, real=True)
    adhesion = checks.check_array(adhesion, "adhesion", ndim=2, real=True)
    if modulus.shape != adhesion.shape:
        raise ValueError(f"modulus and adhesion must have the same shape, got {modulus.shape} and {adhesion.shape}")
    delta = _check_indentations(indentations)
    tip_radius = checks.check_positive_number(tip_radius, "tip_radius")
    poisson_ratio = checks.check_number(poisson_ratio, "poisson_ratio", lower=0, upper=0.5, upper_inclusive=False)
    noise = checks.check_positive_number(noise, "noise", allow_zero=True)
    seed = checks.check_seed(seed)
    shape = (*modulus.shape, delta.shape[0])
    hertz = 4.0 / 3.0 * math.sqrt(tip_radius) * delta**1.5
    reduced = modulus / (1.0 - poisson_ratio**2)
    forces = reduced[..., None] * hertz - adhesion[..., None]
    draws = np.random.default_rng(seed).standard_normal(shape)
    return forces + noise * backend.asarray(draws)


def _check_indentations(indentations):
    delta = checks.check_array(indentations, "indentations", ndim=1, real=True).astype(np.float64)
    if delta.shape[0] < 2 or bool((delta < 0).any()):
        raise ValueError(f"indentations must hold at least 2 depths >= 0 [nm], got shape {delta.shape}")
    return delta


def fit_dmt(forces, *, indentations, tip_radius: float = 10.0, poisson_ratio: float = 0.35):
    """Young's modulus and adhesion of every curve, by linear least squares on the DMT model.

    ``F = E* h(δ) - F_adh`` with ``h = 4/3 √R δ^{3/2}`` is linear in ``(E*, F_adh)``: the 2 x 2 normal
    equations are the same for every pixel, so the fit is one matrix product.

    Parameters
    ----------
    forces : (..., M) array_like
        Approach curves [nN].
    indentations : (M,) array_like
        Their indentation depths [nm].
    tip_radius : float
        [nm].
    poisson_ratio : float
        In [0, 0.5).

    Returns
    -------
    modulus : (...) ndarray
        Young's modulus [GPa].
    adhesion : (...) ndarray
        Adhesion [nN].
    """
    forces = checks.check_array(forces, "forces", min_ndim=1, real=True)
    delta = _check_indentations(indentations)
    if forces.shape[-1] != delta.shape[0]:
        raise ValueError(f"forces must have one value per indentation ({delta.shape[0]}) on the last axis, "
                         f"got shape {forces.shape}")
    tip_radius = checks.check_positive_number(tip_radius, "tip_radius")
    poisson_ratio = checks.check_number(poisson_ratio, "poisson_ratio", lower=0, upper=0.5, upper_inclusive=False)
    xp = backend.get_array_module(forces)
    design = xp.stack([4.0 / 3.0 * math.sqrt(tip_radius) * delta**1.5, -xp.ones_like(delta)], axis=1)
    solution = forces @ xp.linalg.pinv(design).T  # (..., 2): E*, F_adh
    return solution[..., 0] * (1.0 - poisson_ratio**2), solution[..., 1]
