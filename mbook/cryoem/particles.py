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
  Haar (uniform) measure on SO(3) (:mod:`mbook.geometry.so3`); by the Fourier slice theorem
  ``P̂_R(k) = F(Rᵀ (k_x, k_y, 0))``;
- ``s_i`` is an in-plane shift [Å];
- ``H_i = CTF(k; defocus_i) exp(-B |k|² / 4)`` is the contrast transfer
  function of :func:`mbook.electron.hrtem.contrast_transfer_function` times a
  B-factor envelope;
- ``c_i > 0`` is a per-image contrast (ice thickness, dose);
- ``n_i`` is white Gaussian noise whose variance makes the mean signal
  variance over noise variance equal a set SNR.

Volumes and images are indexed ``[x, y, z]`` and ``[x, y]`` with the origin at
index ``n // 2`` (centred coordinates of :mod:`mbook.core.grids`). Image stacks are
generated in batches under a memory budget by :mod:`mbook.cryoem.micrographs` (CTF,
contrast, noise: :mod:`mbook.cryoem.image_formation`); voxel volumes are projected
by :mod:`mbook.cryoem.voxels`; volumes are written as MRC files and compared by
Fourier shell correlation in :mod:`mbook.cryoem.volumes`.

Device rule: atoms, volumes and images live on the selected device
(:mod:`mbook.core.backend`); public functions move their inputs there. Random
particles are drawn on the host (a sequential hard-core process) from their
seed, then moved. Many particles -- one conformation per image -- are one
:class:`Atoms` whose positions carry a leading batch axis, projected and
sampled in memory-budgeted batches (:func:`mbook.core.progress.plan_batches`)
rather than one at a time.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.cryoem import particles
>>> from mbook.geometry import so3
>>> atoms = particles.random_structure(50, radii=(12.0, 10.0, 8.0), seed=1)
>>> grid = grids.make_grid(gpts=(32, 32), sampling=2.0)
>>> rotations = so3.random_rotations(3, seed=2)
>>> images = particles.project_atoms(atoms, rotations, grid)
>>> images.shape
(3, 32, 32)
>>> total = float(images[0].sum() * 2.0**2)      # every projection keeps the mass
>>> bool(np.isclose(total, float(atoms.weights.sum()), rtol=1e-6))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, grids, progress
from mbook.geometry.so3 import check_rotations


# --------------------------------------------------------------------------- structures
class Atoms(NamedTuple):
    """Gaussian (pseudo-)atoms of one particle, or of a stack of conformations.

    Attributes
    ----------
    positions : (n, 3) or (b, n, 3) ndarray
        Centres relative to the centre of rotation [Å]; a leading axis holds
        one conformation per image (same atoms, moved).
    weights : (n,) or (b, n) ndarray
        Integrated density of each atom [any one unit, e.g. V·Å³]; with a
        batch of conformations, optionally one set per conformation (e.g.
        the coefficients of many maps in one basis).
    sigma : (n,) ndarray
        Gaussian standard deviation of each atom [Å].

    All three on the selected device.
    """

    positions: np.ndarray
    weights: np.ndarray
    sigma: np.ndarray


def make_atoms(positions, *, weights=1.0, sigma=2.0) -> Atoms:
    """Validate and broadcast Gaussian atoms, on the selected device.

    Parameters
    ----------
    positions : (n, 3) or (b, n, 3) array_like
        Atom centres [Å] (a leading axis: one conformation per image).
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
    positions = checks.check_array(positions, "positions", real=True).astype(float)
    if positions.ndim not in (2, 3) or positions.shape[-1] != 3 or positions.shape[-2] == 0:
        raise ValueError(f"positions must be a non-empty (n, 3) or (b, n, 3) array [Å], got shape {positions.shape}")
    xp = backend.get_array_module(positions)
    n = positions.shape[-2]
    weights = checks.check_array(weights, "weights", real=True).astype(float)
    per_conformation = weights.ndim == 2 and positions.ndim == 3  # one set of weights per conformation
    try:
        weights = xp.broadcast_to(weights, positions.shape[:2] if per_conformation else (n,)).copy()
    except ValueError:
        raise ValueError(f"weights must be a number or one per atom ({n}), got shape {weights.shape}") from None
    sigma = xp.broadcast_to(checks.check_array(sigma, "sigma", real=True).astype(float), (n,)).copy()
    if not bool(xp.all(weights >= 0)):
        raise ValueError(f"weights must be finite and >= 0, got min {float(weights.min())!r}")
    if not bool(xp.all(sigma > 0)):
        raise ValueError(f"sigma must be finite and > 0 [Å], got min {float(sigma.min())!r}")
    return Atoms(positions, weights, sigma)


def check_atoms(atoms, name: str = "atoms") -> Atoms:
    """``atoms`` on the selected device, with consistent shapes (values were checked by :func:`make_atoms`).

    Moves each field with :func:`mbook.core.backend.asarray` (a no-op when it
    is there) and copies nothing to the host.

    Raises
    ------
    TypeError
        For anything but :class:`Atoms`.
    ValueError
        For inconsistent shapes.
    """
    if not isinstance(atoms, Atoms):
        raise TypeError(f"{name} must be mbook.cryoem.particles.Atoms (see make_atoms), got {type(atoms).__name__}")
    positions, weights, sigma = (backend.asarray(field, dtype=float) for field in atoms)
    n = positions.shape[-2] if positions.ndim >= 2 else -1
    weight_shapes = ((n,), positions.shape[:-1]) if positions.ndim == 3 else ((n,),)
    if positions.ndim not in (2, 3) or positions.shape[-1] != 3 or weights.shape not in weight_shapes \
            or sigma.shape != (n,):
        raise ValueError(f"{name} must have positions (n, 3) or (b, n, 3), weights (n,) or (b, n) and sigma (n,); "
                         f"got shapes {positions.shape}, {weights.shape}, {sigma.shape}")
    return Atoms(positions, weights, sigma)


def _hard_core_positions(n_atoms, radii, min_distance, seed):
    """Host-only: a sequential hard-core process in an ellipsoid, centred; (n_atoms, 3) NumPy."""
    rng = checks.rng(seed)
    kept = np.empty((0, 3))
    for _ in range(200):
        candidates = rng.uniform(-1, 1, (4 * n_atoms, 3))
        candidates = candidates[np.sum(candidates**2, axis=1) <= 1] * radii
        for point in candidates:  # sequential by nature: each point is tested against the kept ones
            if len(kept) == 0 or np.min(np.sum((kept - point) ** 2, axis=1)) >= min_distance**2:
                kept = np.vstack([kept, point])
                if len(kept) == n_atoms:
                    return kept - kept.mean(axis=0)
    raise ValueError(
        f"could not place {n_atoms} atoms {min_distance} Å apart in an ellipsoid of semi-axes "
        f"{tuple(float(r) for r in radii)} Å; enlarge radii or lower n_atoms or min_distance"
    )


def random_structure(n_atoms, *, radii=(20.0, 15.0, 12.0), sigma=2.5, min_distance=3.8, seed=0) -> Atoms:
    """A random compact particle: pseudo-atoms spread inside an ellipsoid.

    Points are thrown uniformly into the ellipsoid and kept when no kept
    point is closer than ``min_distance`` (a hard-core process, the spacing of
    Cα atoms along a chain); the result is centred on its centre of mass.
    Different seeds give particles of the same size and envelope but
    different internal arrangement, a test of how much detail a method sees.
    Host-only step: the sequential draw runs on the host (a few ms for a
    hundred atoms), then the atoms move to the selected device.

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
        Unit weights, on the selected device.

    Raises
    ------
    ValueError
        When ``n_atoms`` atoms do not fit the ellipsoid at ``min_distance``.
    """
    checks.check_count(n_atoms, "n_atoms")
    radii = np.asarray(checks.check_positive(radii, "radii", 3))
    min_distance = checks.check_positive_number(min_distance, "min_distance", allow_zero=True)
    return make_atoms(_hard_core_positions(n_atoms, radii, min_distance, seed), sigma=sigma)


def random_domains(n_domains, *, atoms_per_domain=30, domain_radius=9.0, spread=14.0, sigma=2.5, seed=0) -> Atoms:
    """A random multi-domain particle: compact blobs at random, non-overlapping places.

    Domain centres are drawn in a ball of radius ``spread`` at least
    ``1.8 domain_radius`` apart; each domain is a :func:`random_structure` of
    ``atoms_per_domain`` atoms in a ball of radius ``domain_radius``. Unlike
    single blobs, such particles differ already at low resolution (their
    overall shape), as different proteins do. Host-only step, as
    :func:`random_structure`.

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
        Centred on its centre of mass, on the selected device.
    """
    checks.check_count(n_domains, "n_domains")
    checks.check_count(atoms_per_domain, "atoms_per_domain")
    domain_radius = checks.check_positive_number(domain_radius, "domain_radius")
    spread = checks.check_positive_number(spread, "spread")
    rng = checks.rng(seed)
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
    positions = np.concatenate([
        _hard_core_positions(atoms_per_domain, np.full(3, domain_radius), 3.8, int(rng.integers(2**31))) + c
        for c in centres])
    return make_atoms(positions - positions.mean(axis=0), sigma=sigma)


def transform_atoms(atoms: Atoms, rotation=None, *, translation=(0.0, 0.0, 0.0), center=(0.0, 0.0, 0.0)) -> Atoms:
    """Rigidly move atoms: ``r -> R (r - center) + center + translation``.

    Parameters
    ----------
    atoms : Atoms
    rotation : (3, 3) or (b, 3, 3) array_like, optional
        Rotation matrix (default identity); a batch gives one moved copy per
        matrix, positions ``(b, n, 3)``.
    translation, center : (3,) or (b, 3) array_like
        [Å].

    Returns
    -------
    Atoms
        On the selected device.
    """
    atoms = check_atoms(atoms)
    xp = backend.get_array_module(atoms.positions)
    if rotation is None:
        rotation = xp.eye(3)
    else:
        rotation = checks.check_array(rotation, "rotation", real=True).astype(float)
        if rotation.shape[-2:] != (3, 3) or rotation.ndim > 3:
            raise ValueError(f"rotation must be (3, 3) or (b, 3, 3), got shape {rotation.shape}")
        # orthogonal (a mirror, det -1, is allowed: it makes the enantiomer); one small copy to check
        deviation = float(abs(rotation @ rotation.swapaxes(-1, -2) - xp.eye(3)).max())
        if deviation > 1e-6:
            raise ValueError(f"rotation must be orthogonal (R Rᵀ = I), deviation {deviation:.2e}")
    center, translation = (checks.check_array(v, name, real=True).astype(float)
                           for v, name in ((center, "center"), (translation, "translation")))
    for name, value in (("center", center), ("translation", translation)):
        if value.shape[-1:] != (3,):
            raise ValueError(f"{name} must be (3,) or (b, 3) [Å], got shape {value.shape}")
    return atoms._replace(positions=_move(atoms.positions, rotation, center, translation))


def _move(positions, rotation, center, translation):
    """R (r - c) + c + t with batches: positions (..., n, 3), rotation (..., 3, 3), c and t (..., 3)."""
    center, translation = center[..., None, :], translation[..., None, :]
    return (positions - center) @ rotation.swapaxes(-1, -2) + center + translation


def concatenate_atoms(*parts: Atoms) -> Atoms:
    """One particle made of several sets of atoms (e.g. domains).

    Parts with a batch of conformations ``(b, n, 3)`` and single parts
    ``(n, 3)`` mix: the single ones are repeated over the batch.
    """
    parts = [check_atoms(p) for p in parts]
    xp = backend.get_array_module(parts[0].positions)
    batch = max((p.positions.shape[:-2] for p in parts), key=len)
    positions = [xp.broadcast_to(p.positions, batch + p.positions.shape[-2:]) for p in parts]
    weights = [p.weights for p in parts]
    if any(w.ndim == 2 for w in weights):  # per-conformation weights: repeat the shared ones
        weights = [xp.broadcast_to(w, batch + w.shape[-1:]) for w in weights]
    return Atoms(xp.concatenate(positions, axis=-2), xp.concatenate(weights, axis=-1),
                 xp.concatenate([p.sigma for p in parts]))


# --------------------------------------------------------------------------- volumes and projections
def _gaussian_profiles(centres, sigma, coordinates, xp):
    """exp(-(x - c)² / 2σ²) / sqrt(2π σ²) per atom and coordinate: centres (..., a) -> (..., a, n_x)."""
    sigma = sigma[:, None]
    d = coordinates - centres[..., None]
    return xp.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def check_grid(grid, ndim):
    """A square (2D) or cubic (3D) :class:`mbook.core.grids.Grid` with one sampling; else ValueError.

    Parameters
    ----------
    grid : Grid
    ndim : int
        2 for images, 3 for volumes.

    Returns
    -------
    Grid
    """
    if ndim not in (2, 3) or isinstance(ndim, bool):
        raise ValueError(f"ndim must be 2 or 3 (images or volumes), got {ndim!r}")
    if not isinstance(grid, grids.Grid) or grid.ndim != ndim:
        raise ValueError(f"grid must be a {ndim}D mbook.core.grids.Grid, got {grid!r}")
    if len(set(grid.sampling)) != 1 or len(set(grid.gpts)) != 1:
        raise ValueError(f"grid must be cubic/square with one sampling, got gpts {grid.gpts}, sampling {grid.sampling}")
    return grid


def _batches(n_items, bytes_per_item, budget):
    """Slices of at most the planned batch size covering ``range(n_items)``."""
    size = progress.plan_batches(n_items=n_items, bytes_per_item=bytes_per_item, budget=budget)
    return [slice(start, min(start + size, n_items)) for start in range(0, n_items, size)]


def gaussian_volume(atoms: Atoms, grid, *, budget=None):
    """Sample the density of Gaussian atoms on a 3D grid.

    Parameters
    ----------
    atoms : Atoms
        One particle (positions ``(n, 3)``) or a stack of conformations
        (``(b, n, 3)``: one volume each, made in batches under the budget).
    grid : Grid
        Cubic 3D grid [Å]; the origin of the atoms is at index ``n // 2``.
    budget : int, optional
        Memory budget [bytes] (default :func:`mbook.core.progress.memory_budget`).

    Returns
    -------
    (N, N, N) or (b, N, N, N) ndarray, float64
        Density [weight/Å³] on the selected device, point-sampled at the voxel
        centres, so that ``volume.sum() * sampling³`` is the total weight when
        the atoms lie well inside the box.
    """
    atoms = check_atoms(atoms)
    grid = check_grid(grid, 3)
    xp = backend.get_array_module(atoms.positions)
    x = grids.coordinates(grid, centered=True, xp=xp)[0]
    positions = atoms.positions if atoms.positions.ndim == 3 else atoms.positions[None]
    b, a, n = positions.shape[0], positions.shape[1], x.size
    out = xp.empty((b, n, n, n))
    for part in _batches(b, 8 * (2 * a * n * n + n**3 + 3 * a * n), budget):
        weights = atoms.weights[part] if atoms.weights.ndim == 2 else atoms.weights
        gx, gy, gz = (_gaussian_profiles(positions[part, :, i], atoms.sigma, x, xp) for i in range(3))
        plane = (gx * weights[..., None])[..., :, None] * gy[..., None, :]  # (b, a, n, n)
        # Σ_a gx gy gz as one batched matrix product over the atoms
        out[part] = (plane.reshape(-1, a, n * n).swapaxes(1, 2) @ gz).reshape(-1, n, n, n)
    return out if atoms.positions.ndim == 3 else out[0]


def project_atoms(atoms: Atoms, rotations, grid, *, budget=None):
    """Exact projections of rotated Gaussian atoms, ``∫ ρ(Rᵀ r) dz``.

    Each atom projects to a 2D Gaussian centred at ``(R r_a)_{x,y}``. All
    rotations are one array axis, processed in batches under the memory budget.

    Parameters
    ----------
    atoms : Atoms
        One particle (``(n, 3)`` positions), or one conformation per
        rotation (``(b, n, 3)``).
    rotations : (b, 3, 3) array_like
        Rotation matrices applied to the particle.
    grid : Grid
        Square 2D image grid [Å]; the origin at index ``n // 2``.
    budget : int, optional
        Memory budget [bytes] (default :func:`mbook.core.progress.memory_budget`).

    Returns
    -------
    (b, nx, ny) ndarray, float64
        Projected density [weight/Å²] on the selected device, point-sampled
        at the pixel centres.
    """
    atoms = check_atoms(atoms)
    grid = check_grid(grid, 2)
    rotations = check_rotations(rotations)
    if atoms.positions.ndim == 3 and atoms.positions.shape[0] != rotations.shape[0]:
        raise ValueError(f"got {atoms.positions.shape[0]} conformations but {rotations.shape[0]} rotations")
    return project_atoms_kernel(atoms, rotations, grid, budget)


def project_atoms_kernel(atoms, rotations, grid, budget=None):
    """Kernel of :func:`project_atoms`: inputs as its checks return them, on one device (no checks).

    For callers that checked a whole stack once and project it batch by batch
    (:func:`mbook.cryoem.micrographs.stream_images`): the checks copy to the
    host, which a GPU would wait for at every batch.
    """
    xp = backend.get_array_module(atoms.positions, rotations)
    x = grids.coordinates(grid, centered=True, xp=xp)[0]
    b, a, n = rotations.shape[0], atoms.weights.shape[0], x.size
    out = xp.empty((b, n, n))
    for part in _batches(b, 8 * (3 * a * n + n * n + 6 * a), budget):
        positions = atoms.positions[part] if atoms.positions.ndim == 3 else atoms.positions
        weights = atoms.weights[part] if atoms.weights.ndim == 2 else atoms.weights
        moved = positions @ rotations[part, :2].swapaxes(1, 2)  # (b, a, 2): x and y of R r
        gx = _gaussian_profiles(moved[..., 0], atoms.sigma, x, xp) * weights[..., None]
        gy = _gaussian_profiles(moved[..., 1], atoms.sigma, x, xp)
        out[part] = gx.swapaxes(1, 2) @ gy
    return out
