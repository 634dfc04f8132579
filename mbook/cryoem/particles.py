"""Cryo-EM image formation: Gaussian atoms, random rotations, projections, CTF, noise.

A particle is a set of Gaussian (pseudo-)atoms, the density

``ρ(r) = Σ_a w_a (2π σ_a²)^(-3/2) exp(-|r - r_a|² / (2 σ_a²))``,

with positions r_a [Å] relative to the centre of rotation, integrated weights
w_a and widths σ_a [Å] (a blur that stands for atomic size, thermal motion and
a B-factor). Its 3D Fourier transform is analytic,
``F(k) = Σ_a w_a exp(-2π² σ_a² |k|²) exp(-2πi k·r_a)``.

An image is the projection of the rotated particle along z, seen through the
microscope (weak-phase model, e.g. Frank 2006; Scheres 2012):

``I_i = c_i F⁻¹[ H_i(k) exp(-2πi k·s_i) P̂_{R_i}(k) ] + n_i``,

- ``P_R(x, y) = ∫ ρ(Rᵀ r) dz`` is the projection at rotation R, drawn from the
  Haar (uniform) measure on SO(3) (:mod:`mbook.cryoem.so3`); by the Fourier slice theorem
  ``P̂_R(k) = F(Rᵀ (k_x, k_y, 0))``;
- ``s_i`` is an in-plane shift [Å];
- ``H_i = CTF(k; defocus_i) exp(-B |k|² / 4)`` is the contrast transfer
  function of :func:`mbook.electron.waves.contrast_transfer_function` times a
  B-factor envelope;
- ``c_i > 0`` is a per-image contrast (ice thickness, dose);
- ``n_i`` is white Gaussian noise whose variance makes the mean signal
  variance over noise variance equal a set SNR.

Volumes and images are indexed ``[x, y, z]`` and ``[x, y]`` with the origin at
index ``n // 2`` (centred coordinates of :mod:`mbook.core.grids`). Image stacks are
generated in batches under a memory budget by :mod:`mbook.cryoem.micrographs` (CTF,
contrast, noise); volumes are written as MRC files and compared by Fourier
shell correlation in :mod:`mbook.cryoem.volumes`.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.cryoem import particles, so3
>>> atoms = particles.random_structure(50, radii=(12.0, 10.0, 8.0), seed=1)
>>> grid = grids.make_grid(gpts=(32, 32), sampling=2.0)
>>> rotations = so3.random_rotations(3, seed=2)
>>> images = particles.project_atoms(atoms, rotations, grid)
>>> images.shape
(3, 32, 32)
>>> total = float(images[0].sum() * 2.0**2)      # every projection keeps the mass
>>> bool(np.isclose(total, atoms.weights.sum(), rtol=1e-6))
True
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, grids
from mbook.cryoem.so3 import check_rotations


# --------------------------------------------------------------------------- structures
class Atoms(NamedTuple):
    """Gaussian (pseudo-)atoms of one particle.

    Attributes
    ----------
    positions : (n, 3) ndarray
        Centres relative to the centre of rotation [Å].
    weights : (n,) ndarray
        Integrated density of each atom [any one unit, e.g. V·Å³].
    sigma : (n,) ndarray
        Gaussian standard deviation of each atom [Å].
    """

    positions: np.ndarray
    weights: np.ndarray
    sigma: np.ndarray


def make_atoms(positions, *, weights=1.0, sigma=2.0) -> Atoms:
    """Validate and broadcast Gaussian atoms.

    Parameters
    ----------
    positions : (n, 3) array_like
        Atom centres [Å].
    weights : float or (n,) array_like
        Integrated densities, finite and >= 0 [density·Å³].
    sigma : float or (n,) array_like
        Gaussian widths, finite and > 0 [Å].

    Returns
    -------
    Atoms

    Raises
    ------
    ValueError
        Bad shapes, non-finite values, negative weights or sigma <= 0.
    """
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) == 0:
        raise ValueError(f"positions must be a non-empty (n, 3) array [Å], got shape {positions.shape}")
    if not np.isfinite(positions).all():
        raise ValueError("positions contain NaN or infinite values")
    n = len(positions)
    weights = np.broadcast_to(np.asarray(weights, dtype=float), (n,)).copy()
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (n,)).copy()
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError(f"weights must be finite and >= 0, got min {weights.min()!r}")
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"sigma must be finite and > 0 [Å], got min {sigma.min()!r}")
    return Atoms(positions, weights, sigma)


def random_structure(n_atoms, *, radii=(20.0, 15.0, 12.0), sigma=2.5, min_distance=3.8, seed=0) -> Atoms:
    """A random compact particle: pseudo-atoms spread inside an ellipsoid.

    Points are thrown uniformly into the ellipsoid and kept when no kept
    point is closer than ``min_distance`` (a hard-core process, the spacing of
    Cα atoms along a chain); the result is centred on its centre of mass.
    Different seeds give particles of the same size and envelope but
    different internal arrangement, a test of how much detail a method sees.

    Parameters
    ----------
    n_atoms : int
        Number of pseudo-atoms (>= 1).
    radii : (3,) float
        Semi-axes of the ellipsoid [Å].
    sigma : float
        Gaussian width of every atom [Å].
    min_distance : float
        Smallest distance between two atoms [Å].
    seed : int
        Seed of the random draw.

    Returns
    -------
    Atoms
        Unit weights.

    Raises
    ------
    ValueError
        When ``n_atoms`` atoms do not fit the ellipsoid at ``min_distance``.
    """
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, numbers.Integral) or n_atoms < 1:
        raise ValueError(f"n_atoms must be an integer >= 1, got {n_atoms!r}")
    radii = np.asarray(checks.check_positive(radii, "radii", 3))
    if not (isinstance(min_distance, numbers.Real) and min_distance >= 0):
        raise ValueError(f"min_distance must be a number >= 0 [Å], got {min_distance!r}")
    rng = np.random.default_rng(seed)
    kept = np.empty((0, 3))
    for _ in range(200):
        candidates = rng.uniform(-1, 1, (4 * n_atoms, 3))
        candidates = candidates[np.sum(candidates**2, axis=1) <= 1] * radii
        for point in candidates:
            if len(kept) == 0 or np.min(np.sum((kept - point) ** 2, axis=1)) >= min_distance**2:
                kept = np.vstack([kept, point])
                if len(kept) == n_atoms:
                    return make_atoms(kept - kept.mean(axis=0), sigma=sigma)
    raise ValueError(
        f"could not place {n_atoms} atoms {min_distance} Å apart in an ellipsoid of semi-axes "
        f"{tuple(float(r) for r in radii)} Å; enlarge radii or lower n_atoms or min_distance"
    )


def random_domains(n_domains, *, atoms_per_domain=30, domain_radius=9.0, spread=14.0, sigma=2.5, seed=0) -> Atoms:
    """A random multi-domain particle: compact blobs at random, non-overlapping places.

    Domain centres are drawn in a ball of radius ``spread`` at least
    ``1.8 domain_radius`` apart; each domain is a :func:`random_structure` of
    ``atoms_per_domain`` atoms in a ball of radius ``domain_radius``. Unlike
    single blobs, such particles differ already at low resolution (their
    overall shape), as different proteins do.

    Parameters
    ----------
    n_domains : int
    atoms_per_domain : int
    domain_radius, spread, sigma : float
        [Å].
    seed : int

    Returns
    -------
    Atoms
        Centred on its centre of mass.
    """
    if isinstance(n_domains, bool) or not isinstance(n_domains, numbers.Integral) or n_domains < 1:
        raise ValueError(f"n_domains must be an integer >= 1, got {n_domains!r}")
    rng = np.random.default_rng(seed)
    for _ in range(100):  # random sequential placement, restarted when it jams
        centres = np.zeros((0, 3))
        for _ in range(2000):
            c = rng.uniform(-spread, spread, 3)
            if np.linalg.norm(c) <= spread and (len(centres) == 0 or
                                                 np.min(np.linalg.norm(centres - c, axis=1)) >= 1.8 * domain_radius):
                centres = np.vstack([centres, c])
            if len(centres) == n_domains:
                break
        if len(centres) == n_domains:
            break
    else:
        raise ValueError(f"could not place {n_domains} domains of radius {domain_radius} Å within {spread} Å")
    parts = [transform_atoms(random_structure(atoms_per_domain, radii=(domain_radius,) * 3, sigma=sigma,
                                              seed=int(rng.integers(2**31))), translation=c) for c in centres]
    atoms = concatenate_atoms(*parts)
    return Atoms(atoms.positions - atoms.positions.mean(axis=0), atoms.weights, atoms.sigma)


def transform_atoms(atoms: Atoms, rotation=None, *, translation=(0.0, 0.0, 0.0), center=(0.0, 0.0, 0.0)) -> Atoms:
    """Rigidly move atoms: ``r -> R (r - center) + center + translation``.

    Parameters
    ----------
    atoms : Atoms
    rotation : (3, 3) array_like, optional
        Rotation matrix (default identity).
    translation, center : (3,) array_like
        [Å].

    Returns
    -------
    Atoms
    """
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    center = np.asarray(center, dtype=float)
    positions = (atoms.positions - center) @ rotation.T + center + np.asarray(translation, dtype=float)
    return Atoms(positions, atoms.weights, atoms.sigma)


def concatenate_atoms(*parts: Atoms) -> Atoms:
    """One particle made of several sets of atoms (e.g. domains)."""
    return Atoms(*(np.concatenate([getattr(p, f) for p in parts]) for f in Atoms._fields))


# --------------------------------------------------------------------------- volumes and projections
def _gaussian_profiles(centres, atoms: Atoms, coordinates, xp):
    """exp(-(x - c)² / 2σ²) / sqrt(2π σ²) per atom and coordinate: (..., n_atoms, n_x)."""
    sigma = xp.asarray(atoms.sigma)[:, None]
    d = coordinates[None, :] - centres[..., None]
    return xp.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def _check_grid(grid, ndim):
    if not isinstance(grid, grids.Grid) or grid.ndim != ndim:
        raise ValueError(f"grid must be a {ndim}D mbook.core.grids.Grid, got {grid!r}")
    if len(set(grid.sampling)) != 1 or len(set(grid.gpts)) != 1:
        raise ValueError(f"grid must be cubic/square with one sampling, got gpts {grid.gpts}, sampling {grid.sampling}")
    return grid


def gaussian_volume(atoms: Atoms, grid, *, xp=None):
    """Sample the density of Gaussian atoms on a 3D grid.

    Parameters
    ----------
    atoms : Atoms
    grid : Grid
        Cubic 3D grid [Å]; the origin of the atoms is at index ``n // 2``.

    Returns
    -------
    (n, n, n) ndarray, float64
        Density [weight/Å³], point-sampled at the voxel centres, so that
        ``volume.sum() * sampling³`` is the total weight when the atoms lie
        well inside the box.
    """
    xp = xp or backend.xp
    _check_grid(grid, 3)
    x = grids.coordinates(grid, centered=True, xp=xp)[0]
    centres = xp.asarray(atoms.positions)
    gx, gy, gz = (_gaussian_profiles(centres[:, i], atoms, x, xp) for i in range(3))
    gx = gx * xp.asarray(atoms.weights)[:, None]
    return xp.einsum("ax,ay,az->xyz", gx, gy, gz, optimize=True)


def project_atoms(atoms: Atoms, rotations, grid, *, xp=None):
    """Exact projections of rotated Gaussian atoms, ``∫ ρ(Rᵀ r) dz``.

    Each atom projects to a 2D Gaussian centred at ``(R r_a)_{x,y}``.

    Parameters
    ----------
    atoms : Atoms
    rotations : (b, 3, 3) array_like
        Rotation matrices applied to the particle.
    grid : Grid
        Square 2D image grid [Å]; the origin at index ``n // 2``.

    Returns
    -------
    (b, nx, ny) ndarray, float64
        Projected density [weight/Å²], point-sampled at the pixel centres.
    """
    xp = xp or backend.xp
    _check_grid(grid, 2)
    rotations = check_rotations(rotations)
    x = grids.coordinates(grid, centered=True, xp=xp)[0]
    moved = xp.asarray(np.einsum("bij,aj->bai", rotations, atoms.positions))  # (b, n_atoms, 3)
    gx = _gaussian_profiles(moved[..., 0], atoms, x, xp) * xp.asarray(atoms.weights)[:, None]
    gy = _gaussian_profiles(moved[..., 1], atoms, x, xp)
    return xp.matmul(xp.swapaxes(gx, 1, 2), gy)


def check_volume(volume, name="volume"):
    """Validate a real cubic volume ``(n, n, n)`` of finite values; return it on its device."""
    xp = backend.get_array_module(volume)
    volume = xp.asarray(volume)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"{name} must be a cubic (n, n, n) array, got shape {volume.shape}")
    if not bool(xp.isfinite(volume).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return volume


def _trilinear(rotation, n, xp):
    """Indices (8, n³) and weights (8, n³) of the trilinear samples at Rᵀ p, p on the centred grid."""
    c = xp.arange(n, dtype=xp.float64) - n // 2
    px, py, pz = xp.meshgrid(c, c, c, indexing="ij")
    points = xp.stack([px.ravel(), py.ravel(), pz.ravel()])  # (3, n³) in voxels
    source = xp.asarray(rotation.T) @ points + n // 2  # Rᵀ p, in index units
    base = xp.floor(source)
    frac = source - base
    base = base.astype(xp.int64)
    indices, weights = [], []
    for corner in range(8):
        offset = [(corner >> axis) & 1 for axis in range(3)]
        idx = base + xp.asarray(offset)[:, None]
        w = xp.prod(xp.stack([frac[a] if offset[a] else 1 - frac[a] for a in range(3)]), axis=0)
        inside = xp.all((idx >= 0) & (idx < n), axis=0)
        flat = (idx[0] * n + idx[1]) * n + idx[2]
        indices.append(xp.where(inside, flat, 0))
        weights.append(xp.where(inside, w, 0.0))
    return xp.stack(indices), xp.stack(weights)


def project_volume(volume, rotations, *, sampling):
    """Projections of a voxel volume at given rotations (trilinear interpolation).

    ``P_R(x, y) = Δz Σ_z V(Rᵀ (x, y, z))``: the rotated volume is sampled by
    trilinear interpolation at the grid points and summed along z. Linear in
    the volume; :func:`backproject` is its exact adjoint.

    Parameters
    ----------
    volume : (n, n, n) array_like
        Density [weight/Å³], centred at index ``n // 2``.
    rotations : (b, 3, 3) array_like
    sampling : float
        Voxel size [Å].

    Returns
    -------
    (b, n, n) ndarray
        [weight/Å²].

    Raises
    ------
    ValueError
        For a non-cubic volume, non-orthogonal rotations or sampling <= 0.
    """
    volume = check_volume(volume)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    rotations = check_rotations(rotations)
    xp = backend.get_array_module(volume)
    n = volume.shape[0]
    flat = volume.ravel()
    out = []
    for rotation in rotations:
        indices, weights = _trilinear(rotation, n, xp)
        samples = xp.sum(weights * flat[indices], axis=0).reshape(n, n, n)
        out.append(h * samples.sum(axis=2))
    return xp.stack(out)


def backproject(images, rotations, *, sampling):
    """Adjoint of :func:`project_volume`: smear each image along z and rotate back.

    Parameters
    ----------
    images : (b, n, n) array_like
    rotations : (b, 3, 3) array_like
    sampling : float
        [Å].

    Returns
    -------
    (n, n, n) ndarray
        Sum of the back-projections.
    """
    xp = backend.get_array_module(images)
    images = xp.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be a (b, n, n) stack of square images, got shape {images.shape}")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    rotations = check_rotations(rotations)
    if len(rotations) != len(images):
        raise ValueError(f"got {len(images)} images but {len(rotations)} rotations")
    n = images.shape[1]
    parts = [images.real, images.imag] if xp.iscomplexobj(images) else [images]
    totals = [xp.zeros(n**3) for _ in parts]
    for b, rotation in enumerate(rotations):
        indices, weights = _trilinear(rotation, n, xp)
        for total, part in zip(totals, parts):
            values = xp.broadcast_to((h * part[b])[:, :, None], (n, n, n)).ravel()
            total += xp.bincount(indices.ravel(), (weights * values[None]).ravel(), minlength=n**3)
    total = totals[0] if len(totals) == 1 else totals[0] + 1j * totals[1]
    return total.reshape(n, n, n)
