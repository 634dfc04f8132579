"""The 4D testbed: a FePt nanoparticle whose Pt atoms diffuse, imaged one projection per time step.

White paper section 7.2-7.3: "several atomic models, of which a small fraction
of atoms move in three dimensions as a function of time ... projections from
each model at various angles and ... Poisson noise", for FePt nanoparticles
"where Pt atoms slowly diffuse from the center core to the shell".

The pieces:

- :func:`fept_nanoparticle`: a sphere cut from L1₀-ordered (or A1-disordered)
  FePt, built with ase (host-only);
- :func:`diffusion_trajectories`: a few core Pt atoms hop through chains of
  vacancies to the shell along smooth paths while every other atom stays put;
- :func:`tilt_series`: one tilt angle and one time per projection, the tilt
  range leaving a missing wedge (±70° by default), in sequential or
  golden-ratio order;
- :func:`atom_volume` and :func:`project_atoms`: the atoms as 3D Gaussians
  (the ground-truth volume) and their projections, computed analytically (the
  projection of an isotropic Gaussian is a 2D Gaussian at the rotated
  position), so the data owe nothing to the voxel projector that reconstructs
  them (no inverse crime);
- :func:`poisson_noise`: electron counts at a given dose.

The contrast model
------------------
AET tilt series are HAADF-STEM images, whose signal is incoherent and grows
with the atomic number roughly as ``Z^1.64`` :cite:`krivanek2010`; the
reconstruction is a map of that scattering, not of the electrostatic potential
(which a phase-contrast model, ``mbook.electron.potentials``, would give, with
``Z^~0.6`` contrast and dynamical effects that AET avoids). Each atom is
therefore a Gaussian of integrated weight ``σ_Z = σ_Pt (Z / 78)^1.64``, its
HAADF cross-section [Å²], with a width that lumps the probe size and thermal
vibration. A projection is the fraction of the dose scattered onto the
detector per pixel, ``p(v, u) = Σ_atoms σ_Z g(v - v_a, u - u_a)`` with ``g`` a
normalised 2D Gaussian [1/Å²]; the counts in a pixel of area ``s²`` at dose
``D`` [e/Å²] are Poisson with mean ``D s² p``.

Positions are ``(z, y, x)`` in Å about the volume's centre, the convention of
:mod:`mbook.tomography.projector`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.interpolate
import scipy.sparse
import scipy.sparse.csgraph
import scipy.spatial

from mbook.core import backend, checks, progress
from mbook.tomography import projector

#: L1₀ FePt lattice parameters [Å] (tetragonal, Fe and Pt planes alternating along c).
FEPT_L10 = {"a": 3.85, "c": 3.71}
#: A1 (chemically disordered fcc) FePt lattice parameter [Å].
FEPT_A1 = 3.81
#: Exponent of the HAADF contrast, intensity ∝ Z^n (Krivanek et al. 2010).
HAADF_EXPONENT = 1.64
ORDERINGS = ("L10", "A1")
ORDERS = ("sequential", "golden")
Z_FE, Z_PT = 26, 78


def fept_nanoparticle(radius: float, *, ordering: str = "L10", seed: int = 0):
    """Atoms of a spherical FePt nanoparticle (host-only: built with ase, then moved).

    Parameters
    ----------
    radius : float
        Radius of the sphere the particle is cut from [Å] (8 Å: 149 atoms, 10 Å: 321, 20 Å: 2411).
    ordering : {"L10", "A1"}
        ``L10``: chemically ordered, Fe and Pt layers alternating along ``z``
        (the tetragonal ``c`` axis); ``A1``: the disordered fcc alloy, species
        drawn at random 50/50.
    seed : int
        Seed of the A1 species draw (unused for L10).

    Returns
    -------
    positions : (n, 3) ndarray
        ``(z, y, x)`` [Å] about the particle's centre, on the selected device.
    numbers : (n,) ndarray of int
        Atomic numbers, 26 (Fe) or 78 (Pt), on the selected device.

    Examples
    --------
    >>> from mbook.core import backend
    >>> positions, numbers = fept_nanoparticle(8.0)
    >>> positions.shape[0], int(backend.asnumpy(numbers == 78).sum())
    (149, 72)
    """
    from ase import Atoms  # host-only

    radius = checks.check_number(radius, "radius", lower=2.0, upper=200.0, units="Å")
    checks.check_choice(ordering, "ordering", ORDERINGS)
    seed = checks.check_count(seed, "seed", minimum=0)
    if ordering == "L10":
        a, c = FEPT_L10["a"], FEPT_L10["c"]
        symbols = "Fe2Pt2"  # Fe on the z = 0 plane, Pt on z = c/2
    else:
        a = c = FEPT_A1
        symbols = "Fe4"
    cell = Atoms(symbols, scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
                 cell=[a, a, c], pbc=True)
    repeat = [2 * int(math.ceil(radius / length)) + 2 for length in (a, a, c)]
    crystal = cell.repeat(repeat)
    xyz = crystal.get_positions() - np.array([a, a, c]) * (np.array(repeat) // 2)
    numbers = crystal.get_atomic_numbers()
    keep = np.linalg.norm(xyz, axis=1) <= radius
    xyz, numbers = xyz[keep], numbers[keep]
    if ordering == "A1":
        numbers = np.where(np.random.default_rng(seed).random(numbers.size) < 0.5, Z_FE, Z_PT)
    order = np.lexsort(xyz.T)  # a reproducible order
    return backend.asarray(xyz[order][:, ::-1].copy()), backend.asarray(numbers[order].astype(np.int64))


def diffusion_trajectories(positions, numbers, *, num_steps: int, num_moving: int = 6,
                           core_fraction: float = 0.6, min_travel: float = 6.0, min_duration: float = 0.5,
                           seed: int = 0):
    """Positions at every time step: a few core Pt atoms hop through vacancies to the shell, the rest stay.

    Atoms in a crystal do not pass through each other: a Pt atom diffuses by
    hopping into vacant neighbouring sites. Each moving atom therefore starts on
    a Pt site within ``core_fraction`` of the particle's radius (the moving
    atoms at least 4 Å apart) and follows a chain of nearest-neighbour sites to
    a free surface site at least ``min_travel`` from its start; the sites of the
    chain are the vacancies it travels through and are removed from the
    particle (their number is the length of the chains: about 6 % of the atoms
    of a 2411-atom particle with 40 moving atoms, 15 of 149 with 5). The chain is the shortest
    path on the bond graph with every bond's length multiplied by a random
    factor in [1, 2) (tortuous, seeded paths), chains do not share sites, and
    the motion is the clamped cubic B-spline whose control points are the
    chain's sites: smooth, from the start site to the end site, staying about
    1.9 Å or more from every remaining atom (a straight hop between
    nearest-neighbour fcc sites keeps 0.61 a = 2.35 Å). Each atom moves during a
    random window of the acquisition (at least ``min_duration`` of it), the
    spline parameter following ``S(τ) = 3τ² - 2τ³`` with ``τ`` the time within
    its window: zero speed at both ends. Host-only (scipy's graph search and
    B-splines, a seeded generator); the results are moved to the device.

    Parameters
    ----------
    positions : (n, 3) array_like
        ``(z, y, x)`` [Å] (e.g. :func:`fept_nanoparticle`).
    numbers : (n,) array_like of int
        Atomic numbers.
    num_steps : int
        Time steps, one per projection (>= 2).
    num_moving : int
        Pt atoms that move.
    core_fraction : float
        Moving atoms start within this fraction of the radius, in (0, 1].
    min_travel : float
        Shortest distance from a moving atom's start to its end site [Å], > 0.
    min_duration : float
        Shortest move, as a fraction of the acquisition, in (0, 1]: the
        longer, the slower the atoms.
    seed : int

    Returns
    -------
    trajectories : (num_steps, m, 3) ndarray
        Positions of the ``m`` atoms left after the vacancies are removed, at
        every time step [Å], on the selected device.
    numbers : (m,) ndarray of int
        Their atomic numbers, on the selected device.
    moving : (m,) ndarray of bool
        The atoms that move, on the selected device.

    Examples
    --------
    >>> from mbook.core import backend
    >>> positions, numbers = fept_nanoparticle(10.0)
    >>> trajectories, kept, moving = diffusion_trajectories(positions, numbers, num_steps=5, num_moving=2)
    >>> trajectories.shape[:2] == (5, kept.shape[0]), int(backend.asnumpy(moving).sum())
    (True, 2)
    """
    positions = checks.check_array(positions, "positions", ndim=2, real=True)
    if positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {positions.shape}")
    numbers = checks.check_array(numbers, "numbers", ndim=1)
    if numbers.shape[0] != positions.shape[0]:
        raise ValueError(f"numbers holds {numbers.shape[0]} atoms but positions {positions.shape[0]}")
    num_steps = checks.check_count(num_steps, "num_steps", minimum=2)
    num_moving = checks.check_count(num_moving, "num_moving", minimum=0)
    core_fraction = checks.check_number(core_fraction, "core_fraction", lower=0, upper=1, lower_inclusive=False)
    min_travel = checks.check_number(min_travel, "min_travel", lower=0, lower_inclusive=False, units="Å")
    min_duration = checks.check_number(min_duration, "min_duration", lower=0, upper=1, lower_inclusive=False)
    seed = checks.check_count(seed, "seed", minimum=0)
    xyz, z = backend.asnumpy(positions).astype(np.float64), backend.asnumpy(numbers)
    n, r = xyz.shape[0], np.linalg.norm(xyz, axis=1)
    candidates = np.flatnonzero((z == Z_PT) & (r <= core_fraction * r.max()))
    if num_moving > candidates.size:
        raise ValueError(f"num_moving must be at most {candidates.size}, the Pt atoms within core_fraction="
                         f"{core_fraction} of the radius, got {num_moving}")
    rng = np.random.default_rng(seed)
    chosen = []
    for atom in rng.permutation(candidates):  # greedily, in random order, atoms >= 4 Å apart
        if len(chosen) < num_moving and all(np.linalg.norm(xyz[atom] - xyz[c]) >= 4.0 for c in chosen):
            chosen.append(atom)
    if len(chosen) < num_moving:
        raise ValueError(f"num_moving must be at most {len(chosen)}: the Pt atoms within core_fraction="
                         f"{core_fraction} of the radius that are at least 4 Å apart, got {num_moving}")
    chains = []
    if num_moving:
        tree = scipy.spatial.cKDTree(xyz)
        # Bonds: neighbours up to 1.2x the nearest-neighbour distance (2.7 Å in FePt; the next shell is at 3.7).
        bond = 1.2 * float(np.median(tree.query(xyz, k=2)[0][:, 1]))
        pairs = tree.query_pairs(bond, output_type="ndarray")
        length = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
        coordination = np.bincount(pairs.ravel(), minlength=n)
        surface = coordination < coordination.max()
        taken = np.zeros(n, dtype=bool)
        taken[chosen] = True
        for atom in chosen:
            open_site = ~taken
            open_site[atom] = True
            free = open_site[pairs[:, 0]] & open_site[pairs[:, 1]]
            weights = length[free] * rng.uniform(1.0, 2.0, int(free.sum()))
            graph = scipy.sparse.coo_matrix((weights, (pairs[free, 0], pairs[free, 1])), shape=(n, n)).tocsr()
            cost, previous = scipy.sparse.csgraph.dijkstra(graph, directed=False, indices=atom,
                                                           return_predecessors=True)
            ends = np.flatnonzero(surface & ~taken & np.isfinite(cost)
                                  & (np.linalg.norm(xyz - xyz[atom], axis=1) >= min_travel))
            if ends.size == 0:
                raise ValueError(f"num_moving={num_moving} with min_travel={min_travel} Å leaves no free surface "
                                 f"site reachable from a moving atom; use fewer moving atoms or a shorter travel")
            chain = [int(ends[np.argmin(cost[ends])])]
            while chain[-1] != atom and len(chain) <= n:  # bounded: a shortest path visits each site once
                chain.append(int(previous[chain[-1]]))
            chain = chain[::-1]
            taken[chain] = True
            chains.append(chain)
    vacancies = np.array([site for chain in chains for site in chain[1:]], dtype=np.int64)
    trajectories = np.broadcast_to(xyz, (num_steps,) + xyz.shape).copy()
    t = np.linspace(0.0, 1.0, num_steps)
    for atom, chain in zip(chosen, chains):
        control = xyz[chain]
        degree = min(3, len(chain) - 1)
        knots = np.concatenate([np.zeros(degree), np.linspace(0.0, 1.0, len(chain) - degree + 1),
                                np.ones(degree)])
        duration = rng.uniform(min_duration, 1.0)
        begin = rng.uniform(0.0, 1.0 - duration)
        tau = np.clip((t - begin) / duration, 0.0, 1.0)
        trajectories[:, atom] = scipy.interpolate.BSpline(knots, control, degree)(_smoothstep(tau))
    moving = np.zeros(n, dtype=bool)
    moving[chosen] = True
    keep = np.ones(n, dtype=bool)
    keep[vacancies] = False
    return (backend.asarray(trajectories[:, keep]), backend.asarray(z[keep].astype(np.int64)),
            backend.asarray(moving[keep]))


def tilt_series(num_projections: int, *, tilt_range: float = 70.0, order: str = "sequential"):
    """Tilt angles and acquisition times of a tilt series with a missing wedge.

    Parameters
    ----------
    num_projections : int
        Projections, one per time step (>= 2).
    tilt_range : float
        Largest tilt [degrees]: angles cover ``[-tilt_range, tilt_range]``
        evenly, leaving a missing wedge of ``180 - 2 tilt_range`` degrees;
        below 90.
    order : {"sequential", "golden"}
        Acquisition order: ``sequential`` from ``-tilt_range`` up, as most
        tilt series are taken; ``golden`` visits the same angles in golden-
        ratio order, so that every stretch of time sees the whole range.

    Returns
    -------
    angles : (N,) numpy.ndarray
        Tilt angle of each projection in acquisition order [degrees] (host:
        parameters).
    times : (N,) numpy.ndarray
        Acquisition time of each projection, from 0 to 1.
    """
    num_projections = checks.check_count(num_projections, "num_projections", minimum=2)
    tilt_range = checks.check_number(tilt_range, "tilt_range", lower=0, upper=90, lower_inclusive=False,
                                     upper_inclusive=False, units="degrees")
    checks.check_choice(order, "order", ORDERS)
    angles = np.linspace(-tilt_range, tilt_range, num_projections)
    if order == "golden":  # the k-th projection takes the angle at the fractional part of k φ
        golden = (math.sqrt(5) - 1) / 2
        ranks = np.argsort(np.argsort((np.arange(num_projections) * golden) % 1.0))
        angles = angles[ranks]
    return angles, np.linspace(0.0, 1.0, num_projections)


def cross_sections(numbers, *, platinum: float = 0.03):
    """HAADF cross-section of each atom, ``σ_Pt (Z / 78)^1.64`` [Å²], on the selected device."""
    numbers = checks.check_array(numbers, "numbers", ndim=1)
    if bool((numbers < 1).any()):
        raise ValueError(f"numbers must be atomic numbers (>= 1), got a minimum of {numbers.min()}")
    platinum = checks.check_positive_number(platinum, "platinum")
    return platinum * (numbers.astype(backend.get_array_module(numbers).float64) / Z_PT) ** HAADF_EXPONENT


def atom_volume(positions, numbers, *, shape, sampling: float, width: float = 0.5, platinum: float = 0.03):
    """The atoms as 3D Gaussians on a voxel grid: the ground truth a reconstruction aims at.

    Parameters
    ----------
    positions : (n, 3) or (T, n, 3) array_like
        ``(z, y, x)`` [Å] about the volume's centre; with a leading axis, one
        volume per time.
    numbers : (n,) array_like of int
    shape : (3,) int
        Volume shape ``(nz, ny, nx)``.
    sampling : float
        Voxel edge [Å].
    width : float
        Standard deviation of each Gaussian [Å] (probe size and thermal motion).
    platinum : float
        HAADF cross-section of Pt [Å²] (:func:`cross_sections`).

    Returns
    -------
    (nz, ny, nx) or (T, nz, ny, nx) ndarray
        Density ``Σ σ_Z G(r - r_a)`` [1/Å] sampled at the voxel centres, so
        that its projections approach :func:`project_atoms`; on the selected
        device.
    """
    positions, weights, shape, sampling, width = _check_atoms(positions, numbers, shape, sampling, width, platinum)
    axes = [_gaussians(positions[..., d], n, sampling, width) for d, n in enumerate(shape)]  # (..., n_atoms, n)
    return backend.get_array_module(positions).einsum("...a,...ai,...aj,...ak->...ijk", weights, *axes)


def project_atoms(positions, numbers, rotations, *, gpts, sampling: float, width: float = 0.5,
                  platinum: float = 0.03):
    """Exact projections of the Gaussian atoms, one per rotation (and per time).

    Parameters
    ----------
    positions : (n, 3) or (N, n, 3) array_like
        ``(z, y, x)`` [Å]; with a leading axis, the atoms at the time of each
        projection.
    numbers : (n,) array_like of int
    rotations : (N, 3, 3) array_like
        As for :func:`mbook.tomography.projector.project`.
    gpts : (2,) int
        Detector pixels ``(nv, nu)``.
    sampling : float
        Pixel size [Å].
    width, platinum : float
        As for :func:`atom_volume`.

    Returns
    -------
    (N, nv, nu) ndarray
        ``p = Σ σ_Z g(v - v_a, u - u_a)``: the fraction of the dose scattered
        onto the detector per pixel (dimensionless), on the selected device.
    """
    positions, weights, _, sampling, width = _check_atoms(positions, numbers, (1, 1, 1), sampling, width,
                                                          platinum)
    rotations = projector.check_rotations(rotations)  # a shear or a scale would distort the particle
    n = rotations.shape[0]
    if positions.ndim == 3 and positions.shape[0] != n:
        raise ValueError(f"positions holds {positions.shape[0]} times but rotations {n} rotations")
    gpts = checks.check_gpts(gpts, 2)
    xp = backend.get_array_module(positions)
    lab = xp.einsum("kde,...ae->k...ad", rotations, positions)  # (N, [N,] n, 3)
    if positions.ndim == 3:
        lab = xp.diagonal(lab, axis1=0, axis2=1)  # (n, 3, N): projection k sees the atoms at time k
        lab = xp.moveaxis(lab, -1, 0)
    size = progress.plan_batches(n_items=n, bytes_per_item=8 * lab.shape[1] * (gpts[0] + gpts[1]) * 2
                                 + 8 * gpts[0] * gpts[1])
    out = xp.empty((n,) + gpts)
    for start in range(0, n, size):
        part = lab[start:start + size]
        gv = _gaussians(part[..., 1], gpts[0], sampling, width)
        gu = _gaussians(part[..., 2], gpts[1], sampling, width)
        out[start:start + size] = xp.einsum("a,kav,kau->kvu", weights, gv, gu)
    return out


def poisson_noise(projections, *, dose: float, sampling: float, seed: int = 0):
    """Noisy projections at a dose: Poisson counts scaled back to the units of the projections.

    Parameters
    ----------
    projections : (..., nv, nu) array_like
        Scattered fraction per pixel (:func:`project_atoms`), >= 0.
    dose : float
        Electrons per projection [e/Å²], > 0.
    sampling : float
        Pixel size [Å].
    seed : int
        The counts are drawn on the host from this seed, then moved.

    Returns
    -------
    ndarray
        ``counts / (dose s²)``, an unbiased estimate of ``projections``, on
        the selected device.
    """
    projections = checks.check_array(projections, "projections", min_ndim=2, real=True)
    dose = checks.check_positive_number(dose, "dose")
    sampling = checks.check_positive_number(sampling, "sampling")
    seed = checks.check_count(seed, "seed", minimum=0)
    xp = backend.get_array_module(projections)
    if not bool(xp.all(projections >= 0)):
        raise ValueError("projections must be >= 0 (a scattered fraction) to draw counts from")
    scale = dose * sampling**2
    mean = backend.asnumpy(projections) * scale  # host: the seeded draw
    counts = np.random.default_rng(seed).poisson(mean)
    return backend.asarray(counts / scale)


# ----------------------------------------------------------------------------- private helpers
def _smoothstep(tau):
    """``3τ² - 2τ³``: from 0 to 1 with zero slope at both ends (NumPy or device arrays)."""
    return 3 * tau**2 - 2 * tau**3


def _gaussians(coordinates, n, sampling, width):
    """Normalised 1D Gaussians ``(..., n)`` [1/Å] about ``coordinates`` on the centred grid (the projector's):
    products of 2 or 3 of them are 2D or 3D densities."""
    xp = backend.get_array_module(coordinates)
    grid = (xp.arange(n, dtype=xp.float64) - n // 2) * sampling
    return xp.exp(-0.5 * ((grid - coordinates[..., None]) / width) ** 2) / (math.sqrt(2 * math.pi) * width)


def _check_atoms(positions, numbers, shape, sampling, width, platinum):
    positions = checks.check_array(positions, "positions", real=True)
    if positions.ndim not in (2, 3) or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n, 3) or (T, n, 3), got {positions.shape}")
    weights = cross_sections(numbers, platinum=platinum)
    if weights.shape[0] != positions.shape[-2]:
        raise ValueError(f"numbers holds {weights.shape[0]} atoms but positions {positions.shape[-2]}")
    shape = checks.check_gpts(shape, 3, name="shape (the volume's gpts)")
    sampling = checks.check_positive_number(sampling, "sampling")
    width = checks.check_positive_number(width, "width")
    return positions.astype(backend.get_array_module(positions).float64), weights, shape, sampling, width
