"""STEM detectors: annular masks in the far field, the standard set, virtual detectors of 4D-STEM.

A STEM scan (:func:`mbook.electron.stem.scan`, :func:`mbook.electron.prism.scan`,
:func:`mbook.electron.lma.scan`) integrates the far-field intensity ``|F[ψ_exit]|^2``
over annuli ``inner <= α < outer`` of the scattering angle ``α = λ|k|``:
bright field, annular bright field, annular dark field, HAADF
(:func:`standard_detectors`), as masks in Fourier space (:func:`detector_masks`).
With the patterns kept (4D-STEM), any annulus can be applied after the scan
(:func:`virtual_image`).

Angles are in mrad; lengths in Å; masks in FFT order (:mod:`mbook.core.grids`).

Examples
--------
>>> from mbook.core import grids
>>> from mbook.electron import stem_detectors
>>> stem_detectors.standard_detectors(20.0)
{'BF': (0.0, 20.0), 'ABF': (10.0, 20.0), 'ADF': (20.0, 60.0), 'HAADF': (70.0, 200.0)}
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> stem_detectors.detector_masks(grid, energy=200e3, detectors={"BF": (0.0, 20.0)}).shape
(1, 64, 64)
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks, grids
from mbook.electron import multislice, physics


def standard_detectors(semiangle_cutoff: float) -> dict:
    """Bright field (0-α), annular bright field (α/2-α), ADF (α-3α) and HAADF (70-200 mrad).

    Parameters
    ----------
    semiangle_cutoff : float
        Probe semi-angle α [mrad].

    Returns
    -------
    dict
        ``{name: (inner, outer)}`` in mrad.
    """
    a = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    return {"BF": (0.0, a), "ABF": (a / 2, a), "ADF": (a, 3 * a), "HAADF": (70.0, 200.0)}


def check_detectors(detectors, allow_empty=False):
    """``{name: (inner, outer)}`` [mrad], finite and >= 0 (at least one unless ``allow_empty``); else an error
    naming ``detectors``.

    Shared by :func:`detector_masks` and :func:`scan_detectors` (which allows ``{}``: diffraction
    patterns only). The order ``inner < outer`` is :func:`detector_masks`'s test.

    Parameters
    ----------
    detectors : dict
        ``{name: (inner, outer)}`` [mrad].
    allow_empty : bool
        Accept ``{}``.

    Returns
    -------
    dict
        ``{name: (inner, outer)}`` with float angles, in the given order.

    Raises
    ------
    TypeError
        When ``detectors`` is not a dict.
    ValueError
        Naming ``detectors``: no detector (unless ``allow_empty``), a pair that is not two angles, an angle
        negative or not finite.
    """
    if not isinstance(detectors, dict):
        raise TypeError(f"detectors must be a dict {{name: (inner, outer)}} [mrad], got {detectors!r:.60}")
    if not detectors and not allow_empty:
        raise ValueError("detectors must name at least one detector {name: (inner, outer)} [mrad], got {}")
    out = {}
    for name, angles in detectors.items():
        if isinstance(angles, (str, bytes)) or np.ndim(angles) != 1 or len(angles) != 2:
            raise ValueError(f"detectors[{name!r}] must be (inner, outer) [mrad], got {angles!r}")
        out[name] = tuple(checks.check_number(a, f"detectors[{name!r}]", lower=0, units="mrad") for a in angles)
    return out


def scan_detectors(detectors, semiangle_cutoff) -> dict:
    """The detectors of a scan: ``detectors`` checked (:func:`check_detectors`; ``{}`` allowed, for
    diffraction patterns only), or :func:`standard_detectors` of the aperture when None.

    Shared by :func:`mbook.electron.stem.scan`, :func:`mbook.electron.prism.scan` and
    :func:`mbook.electron.lma.scan`.

    Parameters
    ----------
    detectors : dict or None
        ``{name: (inner, outer)}`` [mrad].
    semiangle_cutoff : float
        Probe semi-angle α [mrad], for the standard set.

    Returns
    -------
    dict
        ``{name: (inner, outer)}`` [mrad].
    """
    semiangle_cutoff = checks.check_positive_number(semiangle_cutoff, "semiangle_cutoff")
    if detectors is None:
        return standard_detectors(semiangle_cutoff)
    return check_detectors(detectors, allow_empty=True)


def detector_masks(grid, *, energy, detectors, xp=None):
    """Annular detector masks in Fourier space (FFT order).

    Parameters
    ----------
    grid : Grid
        Simulation grid [Å].
    energy : float
        [eV].
    detectors : dict
        ``{name: (inner, outer)}`` [mrad]; inner < outer.
    xp : module, optional
        Array module to make them with; default the selected device's.

    Returns
    -------
    (n_detectors, nx, ny) ndarray, float32
        On the selected device (or ``xp``'s).

    Raises
    ------
    ValueError
        When an outer angle exceeds what the grid represents after
        antialiasing (the message gives the largest angle and the sampling
        needed), or inner >= outer.
    """
    checks.check_grid(grid)
    xp = xp or backend.xp
    limit = multislice.max_angle(grid, energy)
    alpha = 1e3 * physics.wavelength(energy) * xp.sqrt(grids.frequency_squared(grid, xp=xp))
    masks = []
    for name, (inner, outer) in check_detectors(detectors).items():
        if not inner < outer:
            raise ValueError(f"detectors[{name!r}]: need 0 <= inner < outer [mrad], got ({inner}, {outer})")
        if outer > limit * (1 + 1e-9):
            needed = 1e3 * physics.wavelength(energy) * multislice.ANTIALIAS_FRACTION / (2 * outer)
            raise ValueError(
                f"detector {name!r} reaches {outer} mrad but the sampling {max(grid.sampling):.4f} Å reaches only "
                f"{limit:.1f} mrad after antialiasing at {energy:g} eV; use sampling <= {needed:.4f} Å"
            )
        masks.append(((alpha >= inner) & (alpha < outer)).astype(xp.float32))
    return xp.stack(masks)


def virtual_image(patterns, grid, *, energy, inner, outer):
    """Integrate 4D-STEM patterns over an annulus: any detector, after the fact.

    Parameters
    ----------
    patterns : (..., nx, ny) array_like
        Diffraction intensities in FFT order, as returned by :func:`mbook.electron.stem.scan`
        with ``diffraction=True``.
    grid : Grid
        The simulation grid [Å].
    energy : float
        [eV].
    inner, outer : float
        Detector angles [mrad].

    Returns
    -------
    (...) ndarray
        Fraction of the incident current on the detector at each position,
        on the selected device (a 0-d array for one pattern).
    """
    checks.check_grid(grid)
    patterns = checks.check_array(patterns, "patterns", min_ndim=2, real=True)
    if patterns.shape[-2:] != tuple(grid.gpts):
        raise ValueError(f"patterns end in {patterns.shape[-2:]}, the grid has gpts {grid.gpts}")
    xp = backend.get_array_module(patterns)
    inner = checks.check_number(inner, "inner", lower=0, units="mrad")
    outer = checks.check_number(outer, "outer", lower=0, units="mrad")
    if not inner < outer:
        raise ValueError(f"inner must be below outer [mrad], got inner={inner}, outer={outer}")
    mask = detector_masks(grid, energy=energy, detectors={"virtual": (inner, outer)}, xp=xp)[0]
    return xp.tensordot(patterns, mask.astype(patterns.dtype, copy=False), axes=([-2, -1], [-2, -1]))
