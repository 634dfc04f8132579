"""Conformational heterogeneity: a hinged two-domain family, a linear-subspace method, metrics.

The family ``V(z)``: a fixed domain and a moving domain joined at a hinge.
``z = (θ, φ)``: θ rotates the moving domain about the hinge axis through the
hinge point, φ twists it about the line from the hinge to its centroid (x). Any
image of the data set shows ``V(z_i)`` at a random pose.

The baseline method is linear (Katsevich, Katsevich & Singer 2015; the 3D
variability analysis of Punjani & Fleet 2021): with poses and CTFs known
(as after a consensus refinement), volumes live in a basis of d Gaussian
"pseudo-atoms" Φ, ``V_i = Φ (m + W z_i)``, and the image of particle i in
Fourier space is ``Î_i = c_i A_i (m + W z_i) + noise`` with
``A_i = H_i · F[project_{R_i} Φ]`` known analytically. Probabilistic PCA
(Tipping & Bishop 1999) with these per-image operators is solved by EM on
the sufficient statistics ``G_i = Re A_iᴴ A_i`` and ``b_i = Re A_iᴴ Î_i``:

- E-step: ``M_i = I + Wᵀ G_i W / ν``, ``E z_i = M_i⁻¹ Wᵀ (b_i - G_i m) / ν``,
  ``E z zᵀ = M_i⁻¹ + E z E zᵀ``;
- M-step: ``Σ_i G_i W E[z zᵀ]_i = Σ_i (b_i - G_i m) E[z_i]ᵀ``, a linear
  system of size dk;

with ν the noise variance of one Fourier coefficient. The *contrast-invariant*
variant adds the mean itself as a column of W with a free coefficient:
``Î_i - A_i m = A_i (δ_i m + W z'_i)``, ``δ_i = c_i - 1``, ``z'_i = c_i z_i``,
and reports ``z'_i / (1 + δ_i)``, which does not change when an image is
scaled (the analogue of the contrast-invariant network of the white paper).

The embeddings it gives are scored by :mod:`mbook.cryoem.metrics`.

Device rule: conformations, volumes, the per-image statistics and the EM
iterations run on the selected device, with no host copy per iteration; the
pseudo-atom basis is placed with SciPy's KD-tree, a host-only step.

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import heterogeneity
>>> particle = heterogeneity.hinged_particle(atoms_per_domain=10, seed=0)
>>> atoms = heterogeneity.conformations(particle, np.array([[0.0, 0.0], [0.5, 0.2]]))
>>> atoms.positions.shape  # two conformations of 20 atoms, x y z [Å]
(2, 20, 3)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import spatial

from mbook.core import backend, checks, progress
from mbook.cryoem import ctf, micrographs, moments, particles
from mbook.geometry import so3


# --------------------------------------------------------------------------- the family
class HingedParticle(NamedTuple):
    """Two rigid domains joined at a hinge (arrays on the selected device).

    Attributes
    ----------
    fixed, moving : Atoms
    hinge : (3,) ndarray
        Hinge point [Å].
    axis : (3,) ndarray
        Unit hinge axis.
    """

    fixed: particles.Atoms
    moving: particles.Atoms
    hinge: np.ndarray
    axis: np.ndarray


def hinged_particle(*, atoms_per_domain=35, separation=24.0, sigma=2.5, seed=0):
    """Two random compact domains side by side, hinged between them.

    The fixed domain (an ellipsoid of semi-axes 10, 8, 7 Å) is centred at
    ``(-separation/2, 0, 0)``; the moving one, flat (semi-axes 8, 14, 6 Å) so
    that a twist about the hinge-to-centroid axis x (its short in-plane axis)
    changes its shape, at
    ``(+separation/2, 0, 0)``. The hinge is at the origin, with axis z. The
    domains are drawn on the host (:func:`mbook.cryoem.particles.random_structure`,
    a few ms), then moved to the selected device.

    Returns
    -------
    HingedParticle
    """
    separation = checks.check_positive_number(separation, "separation")
    atoms_per_domain = checks.check_count(atoms_per_domain, "atoms_per_domain")
    rng = checks.rng(seed)
    half = separation / 2
    fixed, moving = (particles.transform_atoms(
        particles.random_structure(atoms_per_domain, radii=radii, sigma=sigma, seed=int(rng.integers(2**31))),
        translation=(x, 0.0, 0.0)) for x, radii in ((-half, (10.0, 8.0, 7.0)), (half, (8.0, 14.0, 6.0))))
    return HingedParticle(fixed, moving, backend.asarray(np.zeros(3)), backend.asarray(np.array([0.0, 0.0, 1.0])))


def _check_particle(particle) -> HingedParticle:
    if not isinstance(particle, HingedParticle):
        raise TypeError(f"particle must be a HingedParticle (see hinged_particle), got {type(particle).__name__}")
    return HingedParticle(particles.check_atoms(particle.fixed), particles.check_atoms(particle.moving),
                          backend.asarray(particle.hinge, dtype=float), backend.asarray(particle.axis, dtype=float))


def conformations(particle: HingedParticle, latent) -> particles.Atoms:
    """The particle at many latent points at once: one conformation per row of ``latent``.

    Parameters
    ----------
    particle : HingedParticle
    latent : (n, 2) or (n, 1) array_like
        Rows ``(θ, φ)`` [rad]: hinge angle and twist of the moving domain
        (one column: no twist).

    Returns
    -------
    Atoms
        Positions ``(n, n_atoms, 3)`` (fixed domain first), on the selected
        device; pass them to :func:`~mbook.cryoem.micrographs.stream_images`
        (one conformation per image) or
        :func:`~mbook.cryoem.particles.gaussian_volume` (one volume each).
    """
    particle = _check_particle(particle)
    latent = checks.check_array(latent, "latent", real=True).astype(float)
    latent = latent[None] if latent.ndim == 1 else latent
    if latent.ndim != 2 or latent.shape[1] not in (1, 2):
        raise ValueError(f"latent must be rows of one or two angles (θ, φ) [rad], got shape {latent.shape}")
    xp = backend.get_array_module(latent)
    theta = latent[:, 0]
    phi = latent[:, 1] if latent.shape[1] > 1 else xp.zeros_like(theta)
    centroid = particle.moving.positions.mean(axis=0)
    twisted = particles.transform_atoms(particle.moving, so3.axis_rotations(centroid - particle.hinge, phi),
                                        center=centroid)
    moved = particles.transform_atoms(twisted, so3.axis_rotations(particle.axis, theta), center=particle.hinge)
    return particles.concatenate_atoms(particle.fixed, moved)


def conformation(particle: HingedParticle, z) -> particles.Atoms:
    """The particle at latent ``z = (θ, φ)`` [rad]: hinge angle and twist of the moving domain."""
    try:
        z = np.asarray(backend.asnumpy(z) if backend.is_device_array(z) else z, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"z must be (θ,) or (θ, φ) [rad], got {z!r}") from None
    if z.size not in (1, 2) or not np.isfinite(z).all():
        raise ValueError(f"z must be one or two finite angles (θ, φ) [rad], got {z!r}")
    atoms = conformations(particle, z[None])
    return atoms._replace(positions=atoms.positions[0])


def family_volumes(particle: HingedParticle, latent, grid, *, budget=None):
    """Volumes ``V(z_i)`` on a cubic grid, one per row of ``latent``, made in batches under a memory budget.

    Returns
    -------
    (n, N, N, N) ndarray
        Density [weight/Å³], on the selected device.
    """
    latent = checks.check_array(latent, "latent", real=True)
    return particles.gaussian_volume(conformations(particle, latent[None] if latent.ndim == 1 else latent), grid,
                                     budget=budget)


# --------------------------------------------------------------------------- pseudo-atom basis and statistics
def pseudo_atom_basis(particle: HingedParticle, latent, *, spacing=7.0, sigma=4.0, margin=4.0) -> particles.Atoms:
    """Gaussian basis functions on a cubic lattice, kept near the atoms of sample conformations.

    Host-only step: the lattice points near the atoms are found with
    :class:`scipy.spatial.cKDTree` on the host; the basis comes back on the
    selected device.

    Parameters
    ----------
    particle : HingedParticle
    latent : (s, 2) array_like
        Conformations whose atoms define the envelope.
    spacing, sigma, margin : float
        Lattice spacing, width of each basis Gaussian, and distance to the
        nearest atom within which lattice points are kept [Å].

    Returns
    -------
    Atoms
        Unit weights; a volume is ``Σ_j x_j φ_j``.
    """
    spacing = checks.check_positive_number(spacing, "spacing")
    margin = checks.check_positive_number(margin, "margin", allow_zero=True)
    atoms = backend.asnumpy(conformations(particle, latent).positions).reshape(-1, 3)
    low, high = atoms.min(axis=0) - margin, atoms.max(axis=0) + margin
    axes = [np.arange(math.floor(a / spacing), math.ceil(b / spacing) + 1) * spacing for a, b in zip(low, high)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    near = spatial.cKDTree(atoms).query(lattice, distance_upper_bound=spacing / 2 + margin)[0] < np.inf
    return particles.make_atoms(lattice[near], sigma=sigma)


def coefficient_volume(coefficients, basis: particles.Atoms, grid, *, budget=None):
    """``Σ_j x_j φ_j`` on a cubic grid (signed coefficients allowed), for one or many coefficient vectors.

    Parameters
    ----------
    coefficients : (d,) or (n, d) array_like
        One map's coefficients, or n maps' (made in batches under the budget).
    basis : Atoms
        The d basis functions (positions ``(d, 3)``).
    grid : Grid
        Cubic 3D grid [Å].
    budget : int, optional
        Memory budget [bytes] (default :func:`mbook.core.progress.memory_budget`).

    Returns
    -------
    (N, N, N) or (n, N, N, N) ndarray
        On the selected device.
    """
    basis = particles.check_atoms(basis, "basis")
    coefficients = checks.check_array(coefficients, "coefficients", real=True).astype(float)
    d = basis.weights.shape[-1]
    if coefficients.ndim not in (1, 2) or coefficients.shape[-1] != d or basis.positions.ndim != 2:
        raise ValueError(f"coefficients must be (d,) or (n, d) for a basis of d = {d} functions, got shape "
                         f"{coefficients.shape}")
    if coefficients.ndim == 2:  # many maps: one weight set per map on the same functions
        xp = backend.get_array_module(coefficients)
        basis = basis._replace(positions=xp.broadcast_to(basis.positions, (coefficients.shape[0], d, 3)))
    return particles.gaussian_volume(basis._replace(weights=coefficients), grid, budget=budget)


class ImageStatistics(NamedTuple):
    """Per-image sufficient statistics of the linear model (arrays on the selected device).

    Attributes
    ----------
    gram : (n, d, d) ndarray, float32
        ``G_i = Re A_iᴴ A_i``.
    projection : (n, d) ndarray
        ``b_i = Re A_iᴴ Î_i``.
    noise_variance : float
        ν, of one Fourier coefficient.
    """

    gram: np.ndarray
    projection: np.ndarray
    noise_variance: float


def image_statistics(batches, params: micrographs.ImageParameters, grid, basis: particles.Atoms, *, k_max,
                     B_factor=0.0, budget=None, **microscope) -> ImageStatistics:
    """Stream a stack and keep the d×d statistics of each image (poses and CTFs known), on the device.

    Parameters
    ----------
    batches : iterable of ImageBatch
    params : ImageParameters
        Rotations and defoci (the contrast is *not* used: it is unknown).
    grid : Grid
        Image grid [Å].
    basis : Atoms
        Pseudo-atom basis.
    k_max : float
        Fourier-space cut-off of the fit [1/Å] (a low-pass).
    B_factor : float
        [Å²].
    budget : int, optional
        Memory budget for the per-image operators [bytes] (default
        :func:`mbook.core.progress.memory_budget`).

    Returns
    -------
    ImageStatistics
    """
    frequencies = moments.disk_frequencies(grid, k_max=k_max)
    params = micrographs.check_parameters(params)
    basis = particles.check_atoms(basis, "basis")
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of ImageBatch (see stream_images), got {batches!r:.60}")
    defocus = backend.asnumpy(params.defocus)  # CTFs are keyed on the host: one copy for the stack
    kx, ky, index = (backend.asnumpy(a) for a in (frequencies.kx, frequencies.ky, frequencies.index))
    # Real images: Î(-k) = Î(k)*, so a half disk (ky > 0, or ky = 0 and kx >= 0) carries everything;
    # the other half doubles each term except at k = 0.
    half = np.nonzero((ky > 0) | ((ky == 0) & (kx >= 0)))[0]
    kx, ky = kx[half], ky[half]
    root = backend.asarray(np.sqrt(np.where((kx == 0) & (ky == 0), 1.0, 2.0)))
    half, index, kx, ky = (backend.asarray(a) for a in (half, index[half], kx, ky))
    xp = backend.get_array_module(root)
    envelope = xp.exp(-2 * math.pi**2 * basis.sigma[None, :] ** 2 * (kx**2 + ky**2)[:, None])  # (q, d)
    q, d = kx.shape[0], basis.weights.shape[0]
    per_image = 8 * (6 * q * d + 2 * d * d + 4 * q) + 16 * grid.gpts[0] * grid.gpts[1]
    grams, projections, sigma = [], [], 0.0
    for batch in batches:
        if not hasattr(batch, "images"):
            raise TypeError(f"batches must hold ImageBatch (see stream_images), got {type(batch).__name__}")
        images = backend.asarray(batch.images)
        if tuple(images.shape[-2:]) != tuple(grid.gpts):
            raise ValueError(f"grid {grid.gpts} does not match the images {tuple(images.shape[-2:])}")
        sigma = batch.noise_sigma
        size = progress.plan_batches(n_items=images.shape[0], bytes_per_item=per_image, budget=budget)
        for first in range(0, images.shape[0], size):
            b = min(size, images.shape[0] - first)
            part = slice(batch.start + first, batch.start + first + b)
            transfer = ctf.ctf(grid, defocus=defocus[part], B_factor=B_factor, **microscope)
            transfer = transfer.reshape(b, -1)[:, index]  # (b, q)
            centres = basis.positions @ params.rotations[part, :2].swapaxes(1, 2)  # (b, d, 2): x, y of R r
            phase = xp.exp(-2j * math.pi * (kx[None, :, None] * centres[:, None, :, 0]
                                            + ky[None, :, None] * centres[:, None, :, 1]))
            operator = (transfer * root)[:, :, None] * envelope[None] * phase  # (b, q, d)
            spectra = moments.image_transform(images[first:first + b], frequencies)[:, half] * root
            # Re(Aᴴ A) and Re(Aᴴ Î) in real arithmetic (batched complex matmuls are slow on the CPU).
            stacked = xp.concatenate([operator.real, operator.imag], axis=1)  # (b, 2q, d)
            data = xp.concatenate([spectra.real, spectra.imag], axis=1)[:, :, None]
            grams.append((stacked.swapaxes(1, 2) @ stacked).astype(xp.float32))
            projections.append((stacked.swapaxes(1, 2) @ data)[:, :, 0])
    if not grams:
        raise ValueError("batches is empty: give at least one ImageBatch")
    h, n = grid.sampling[0], grid.gpts[0]
    return ImageStatistics(xp.concatenate(grams), xp.concatenate(projections), sigma**2 * h**4 * n**2)


def _check_statistics(statistics) -> ImageStatistics:
    if not isinstance(statistics, ImageStatistics):
        raise TypeError(f"statistics must be ImageStatistics, got {type(statistics).__name__}")
    gram = checks.check_array(statistics.gram, "gram", ndim=3, real=True)
    projection = checks.check_array(statistics.projection, "projection", ndim=2, real=True).astype(float)
    if projection.shape != gram.shape[:2] or gram.shape[1] != gram.shape[2]:
        raise ValueError(f"statistics must hold gram (n, d, d) and projection (n, d), got {gram.shape} and "
                         f"{projection.shape}")
    return ImageStatistics(gram, projection, checks.check_positive_number(statistics.noise_variance,
                                                                         "noise_variance", allow_zero=True))


def consensus(statistics: ImageStatistics, *, regularization=1e-3):
    """Homogeneous least-squares reconstruction ``(Σ G_i + λ I) m = Σ b_i``.

    Returns
    -------
    (d,) ndarray
        The coefficients m, on the selected device.
    """
    statistics = _check_statistics(statistics)
    regularization = checks.check_positive_number(regularization, "regularization", allow_zero=True)
    xp = backend.get_array_module(statistics.gram)
    gram = statistics.gram.sum(axis=0, dtype=xp.float64)
    lam = regularization * xp.trace(gram) / gram.shape[0]
    return xp.linalg.solve(gram + lam * xp.eye(gram.shape[0]), statistics.projection.sum(axis=0))


def ppca(statistics: ImageStatistics, mean, *, n_components=2, contrast_invariant=False, max_num_iter=40,
         seed=0):
    """Probabilistic PCA of the volumes behind the images (EM on the sufficient statistics).

    Runs on the selected device; the iterations copy nothing to the host.

    Parameters
    ----------
    statistics : ImageStatistics
    mean : (d,) ndarray
        Consensus coefficients m.
    n_components : int
        k.
    contrast_invariant : bool
        Model a free per-image scale of the mean (see the module docstring)
        and return ``z' / (1 + δ)``.
    max_num_iter : int
        EM iterations (all are run: there is no convergence test).
    seed : int
        Of the random initial W (drawn on the host, then moved).

    Returns
    -------
    components : (d, k) ndarray
        W, on the selected device.
    embedding : (n, k) ndarray
        Posterior means of the latent coordinates, on the selected device.
    """
    statistics = _check_statistics(statistics)
    max_num_iter = checks.check_iterations(max_num_iter)
    gram = statistics.gram.astype(float)
    n, d, _ = gram.shape
    k = checks.check_count(n_components, "n_components", maximum=d)  # at most the basis size
    mean = checks.check_array(mean, "mean", ndim=1, real=True).astype(float)
    if mean.shape != (d,):
        raise ValueError(f"mean must have one value per basis function ({d}), got shape {mean.shape}")
    xp = backend.get_array_module(gram)
    nu = statistics.noise_variance if statistics.noise_variance > 0 else 1e-12 * xp.trace(gram.mean(0)) / d
    residual = statistics.projection - gram @ mean  # b_i - G_i m
    w = backend.asarray(checks.rng(seed).standard_normal((d, k))) * (
        0.1 * xp.linalg.norm(mean) / math.sqrt(d))
    extra = 1 if contrast_invariant else 0
    prior = np.ones(k + extra)
    if contrast_invariant:
        prior[0] = 1e-6  # a nearly flat prior on δ = c - 1
    prior = xp.diag(backend.asarray(prior))
    gram_flat = gram.reshape(n, d * d)
    gram_mean = gram @ mean  # (n, d)
    identity = xp.eye(d * k)
    for _ in progress.progress(range(max_num_iter), desc="PPCA EM"):
        full = xp.concatenate([mean[:, None], w], axis=1) if contrast_invariant else w  # (d, k+extra)
        precision = full.T[None] @ (gram @ full) / nu + prior
        cov = xp.linalg.inv(precision)
        ez = (cov @ (residual @ full / nu)[:, :, None])[:, :, 0]
        ezz = cov + ez[:, :, None] * ez[:, None, :]
        zz = ezz[:, extra:, extra:]  # second moments of the free latent
        rhs = residual.T @ ez[:, extra:]
        if contrast_invariant:  # the fixed column's part moves to the right-hand side
            rhs = rhs - gram_mean.T @ ezz[:, 0, 1:]
        # Σ_i G_i W S_i = R  <=>  K vec(W) = vec(R), K[(a,p),(b,q)] = Σ_i G_i[a,b] S_i[q,p]
        system = (gram_flat.T @ zz.reshape(n, k * k)).reshape(d, d, k, k).transpose(0, 3, 1, 2).reshape(d * k, d * k)
        w = xp.linalg.solve(system + 1e-9 * xp.trace(system) / (d * k) * identity, rhs.reshape(-1)).reshape(d, k)
    if contrast_invariant:
        return w, ez[:, 1:] / (1 + ez[:, :1])
    return w, ez
