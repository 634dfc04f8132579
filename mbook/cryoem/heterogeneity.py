"""Conformational heterogeneity: a hinged two-domain family, a linear-subspace method, metrics.

The family ``V(z)``: a fixed domain and a moving domain joined at a hinge.
``z = (θ, φ)``: θ rotates the moving domain about the hinge axis through the
hinge point, φ twists it about its own long axis (hinge to centroid). Any
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

Embeddings from different methods live in different spaces; the metrics
compare them without assuming a common frame: neighbourhood preservation
(overlap of k-nearest-neighbour sets), linear alignment (R² of the best
affine map, a Procrustes/CCA-type score), rank correlation with the true
latent, and the per-conformation reconstruction error.

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import heterogeneity
>>> rng = np.random.default_rng(0)
>>> latent = rng.uniform(size=(200, 2))
>>> good = latent @ [[2.0, 0.1], [0.3, -1.0]] + 5      # a linear image of the latent
>>> bad = rng.permutation(good)                          # scrambled
>>> heterogeneity.neighbourhood_preservation(good, latent) > heterogeneity.neighbourhood_preservation(bad, latent)
True
>>> round(heterogeneity.linear_alignment(good, latent), 6)
1.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import spatial, stats

from mbook.core import backend, progress
from mbook.cryoem import micrographs, moments, particles, so3


# --------------------------------------------------------------------------- the family
class HingedParticle(NamedTuple):
    """Two rigid domains joined at a hinge.

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
    that a twist about its long axis x changes its shape, at
    ``(+separation/2, 0, 0)``. The hinge is at the origin, with axis z.

    Returns
    -------
    HingedParticle
    """
    rng = np.random.default_rng(seed)
    half = separation / 2
    fixed, moving = (particles.transform_atoms(
        particles.random_structure(atoms_per_domain, radii=radii, sigma=sigma, seed=int(rng.integers(2**31))),
        translation=(x, 0.0, 0.0)) for x, radii in ((-half, (10.0, 8.0, 7.0)), (half, (8.0, 14.0, 6.0))))
    return HingedParticle(fixed, moving, np.zeros(3), np.array([0.0, 0.0, 1.0]))


def conformation(particle: HingedParticle, z) -> particles.Atoms:
    """The particle at latent ``z = (θ, φ)`` [rad]: hinge angle and twist of the moving domain."""
    z = np.asarray(z, dtype=float).ravel()
    if z.size not in (1, 2) or not np.isfinite(z).all():
        raise ValueError(f"z must be one or two finite angles (θ, φ) [rad], got {z!r}")
    theta, phi = z[0], (z[1] if z.size > 1 else 0.0)
    centroid = particle.moving.positions.mean(axis=0)
    twisted = particles.transform_atoms(particle.moving, so3.axis_rotation(centroid - particle.hinge, phi),
                                     center=centroid)
    moved = particles.transform_atoms(twisted, so3.axis_rotation(particle.axis, theta), center=particle.hinge)
    return particles.concatenate_atoms(particle.fixed, moved)


def family_volumes(particle: HingedParticle, latent, grid, *, xp=None):
    """Volumes ``V(z_i)`` on a cubic grid, one per row of ``latent``; (n, N, N, N) NumPy."""
    return np.stack([backend.asnumpy(particles.gaussian_volume(conformation(particle, z), grid, xp=xp))
                     for z in np.atleast_2d(latent)])


# --------------------------------------------------------------------------- pseudo-atom basis and statistics
def pseudo_atom_basis(particle: HingedParticle, latent, *, spacing=7.0, sigma=4.0, margin=4.0) -> particles.Atoms:
    """Gaussian basis functions on a cubic lattice, kept near the atoms of sample conformations.

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
    atoms = np.concatenate([conformation(particle, z).positions for z in np.atleast_2d(latent)])
    low, high = atoms.min(axis=0) - margin, atoms.max(axis=0) + margin
    axes = [np.arange(math.floor(a / spacing), math.ceil(b / spacing) + 1) * spacing for a, b in zip(low, high)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    near = spatial.cKDTree(atoms).query(lattice, distance_upper_bound=spacing / 2 + margin)[0] < np.inf
    return particles.make_atoms(lattice[near], sigma=sigma)


def coefficient_volume(coefficients, basis: particles.Atoms, grid):
    """``Σ_j x_j φ_j`` on a cubic grid (signed coefficients allowed); (N, N, N) ndarray."""
    return particles.gaussian_volume(particles.Atoms(basis.positions, np.asarray(coefficients, float), basis.sigma), grid)


class ImageStatistics(NamedTuple):
    """Per-image sufficient statistics of the linear model.

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
                     B_factor=0.0, **microscope) -> ImageStatistics:
    """Stream a stack and keep the d×d statistics of each image (poses and CTFs known).

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

    Returns
    -------
    ImageStatistics
    """
    frequencies = moments.disk_frequencies(grid, k_max=k_max)
    # Real images: Î(-k) = Î(k)*, so a half disk (ky > 0, or ky = 0 and kx >= 0) carries everything;
    # the other half doubles each term except at k = 0.
    half = (frequencies.ky > 0) | ((frequencies.ky == 0) & (frequencies.kx >= 0))
    kx, ky = frequencies.kx[half], frequencies.ky[half]
    double = np.where((kx == 0) & (ky == 0), 1.0, 2.0)
    envelope = np.exp(-2 * math.pi**2 * basis.sigma[None, :] ** 2 * (kx**2 + ky**2)[:, None])  # (q, d)
    grams, projections, sigma = [], [], 0.0
    for batch in batches:
        images = backend.asnumpy(batch.images)
        b = images.shape[0]
        part = slice(batch.start, batch.start + b)
        sigma = batch.noise_sigma
        transfer = backend.asnumpy(micrographs.ctf(grid, defocus=params.defocus[part], B_factor=B_factor, xp=np,
                                                   **{**micrographs.MICROSCOPE, **microscope}))
        transfer = transfer.reshape(b, -1)[:, frequencies.index[half]]  # (b, q)
        centres = np.einsum("bij,dj->bdi", params.rotations[part], basis.positions)[..., :2]  # (b, d, 2)
        phase = np.exp(-2j * math.pi * (kx[None, :, None] * centres[:, None, :, 0]
                                        + ky[None, :, None] * centres[:, None, :, 1]))
        operator = (transfer * np.sqrt(double))[:, :, None] * envelope[None] * phase  # (b, q, d)
        spectra = moments.image_transform(images, frequencies)[:, half] * np.sqrt(double)
        # Re(Aᴴ A) and Re(Aᴴ Î) in real arithmetic (NumPy's batched complex matmul is slow).
        stacked = np.concatenate([operator.real, operator.imag], axis=1)  # (b, 2q, d)
        data = np.concatenate([spectra.real, spectra.imag], axis=1)[:, :, None]
        grams.append(np.matmul(stacked.transpose(0, 2, 1), stacked).astype(np.float32))
        projections.append(np.matmul(stacked.transpose(0, 2, 1), data)[:, :, 0])
    h, n = grid.sampling[0], grid.gpts[0]
    return ImageStatistics(np.concatenate(grams), np.concatenate(projections), sigma**2 * h**4 * n**2)


def consensus(statistics: ImageStatistics, *, regularization=1e-3):
    """Homogeneous least-squares reconstruction ``(Σ G_i + λ I) m = Σ b_i``; (d,) coefficients."""
    gram = statistics.gram.sum(axis=0, dtype=float)
    lam = regularization * np.trace(gram) / len(gram)
    return np.linalg.solve(gram + lam * np.eye(len(gram)), statistics.projection.sum(axis=0))


def ppca(statistics: ImageStatistics, mean, *, n_components=2, contrast_invariant=False, max_num_iter=40,
         seed=0):
    """Probabilistic PCA of the volumes behind the images (EM on the sufficient statistics).

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
    seed : int
        Of the random initial W.

    Returns
    -------
    components : (d, k) ndarray
        W.
    embedding : (n, k) ndarray
        Posterior means of the latent coordinates.
    """
    gram = statistics.gram.astype(float)
    n, d, _ = gram.shape
    k = int(n_components)
    if not 1 <= k <= d:
        raise ValueError(f"n_components must be in [1, {d}] (the basis size), got {n_components!r}")
    nu = statistics.noise_variance if statistics.noise_variance > 0 else 1e-12 * np.trace(gram.mean(0)) / d
    residual = statistics.projection - gram @ mean  # b_i - G_i m
    rng = np.random.default_rng(seed)
    w = 0.1 * np.linalg.norm(mean) / math.sqrt(d) * rng.standard_normal((d, k))
    extra = 1 if contrast_invariant else 0
    prior = np.ones(k + extra)
    if contrast_invariant:
        prior[0] = 1e-6  # a nearly flat prior on δ = c - 1
    gram_flat = gram.reshape(n, d * d)
    gram_mean = gram @ mean  # (n, d)
    for _ in progress.progress(range(int(max_num_iter)), desc="PPCA EM"):
        full = np.column_stack([mean, w]) if contrast_invariant else w  # (d, k+extra)
        precision = np.matmul(full.T[None], gram @ full) / nu + np.diag(prior)
        cov = np.linalg.inv(precision)
        ez = np.matmul(cov, (residual @ full / nu)[:, :, None])[:, :, 0]
        ezz = cov + ez[:, :, None] * ez[:, None, :]
        zz = ezz[:, extra:, extra:]  # second moments of the free latent
        rhs = residual.T @ ez[:, extra:]
        if contrast_invariant:  # the fixed column's part moves to the right-hand side
            rhs -= gram_mean.T @ ezz[:, 0, 1:]
        # Σ_i G_i W S_i = R  <=>  K vec(W) = vec(R), K[(a,p),(b,q)] = Σ_i G_i[a,b] S_i[q,p]
        system = (gram_flat.T @ zz.reshape(n, k * k)).reshape(d, d, k, k).transpose(0, 3, 1, 2).reshape(d * k, d * k)
        w = np.linalg.solve(system + 1e-9 * np.trace(system) / (d * k) * np.eye(d * k), rhs.ravel()).reshape(d, k)
    if contrast_invariant:
        return w, ez[:, 1:] / (1 + ez[:, :1])
    return w, ez


# --------------------------------------------------------------------------- metrics
def _check_embeddings(a, b):
    a, b = np.atleast_2d(np.asarray(a, float).T).T, np.atleast_2d(np.asarray(b, float).T).T
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"embeddings must have one row per image, got {a.shape[0]} and {b.shape[0]} rows")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    return a, b


def neighbourhood_preservation(embedding, reference, *, n_neighbours=10) -> float:
    """Mean overlap of the k-nearest-neighbour sets in two embeddings of the same images.

    ``(1/n) Σ_i |N_k^a(i) ∩ N_k^b(i)| / k``: 1 when neighbourhoods agree, about
    ``k / n`` for unrelated embeddings. Invariant to any similarity
    transform of either embedding; the dimensions may differ.
    """
    a, b = _check_embeddings(embedding, reference)
    k = int(n_neighbours)
    if not 1 <= k < len(a):
        raise ValueError(f"n_neighbours must be in [1, {len(a) - 1}], got {n_neighbours!r}")
    na = spatial.cKDTree(a).query(a, k + 1)[1][:, 1:]
    nb = spatial.cKDTree(b).query(b, k + 1)[1][:, 1:]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


def linear_alignment(embedding, reference) -> float:
    """R² of the best affine map from ``embedding`` to ``reference`` (least squares).

    ``1 - ||B - [A 1] X||² / ||B - mean B||²``: 1 when the reference is an
    affine image of the embedding (any rotation, scaling, shear: a
    Procrustes/CCA-type alignment), 0 when nothing linear is shared.
    """
    a, b = _check_embeddings(embedding, reference)
    design = np.column_stack([a, np.ones(len(a))])
    fit, *_ = np.linalg.lstsq(design, b, rcond=None)
    centred = b - b.mean(axis=0)
    return float(1 - np.sum((b - design @ fit) ** 2) / np.sum(centred**2))


def canonical_correlations(embedding, reference):
    """Canonical correlations between two embeddings (CCA), largest first; (min(p, q),) ndarray."""
    a, b = _check_embeddings(embedding, reference)
    qa, _ = np.linalg.qr(a - a.mean(axis=0))
    qb, _ = np.linalg.qr(b - b.mean(axis=0))
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0, 1)


def rank_correlation(embedding, latent):
    """Spearman correlation of each true latent coordinate with its best linear read-out.

    For each column of ``latent`` the embedding is mapped affinely onto it
    (least squares) and the rank correlation of the two is taken.

    Returns
    -------
    (latent_dim,) ndarray
    """
    a, b = _check_embeddings(embedding, latent)
    design = np.column_stack([a, np.ones(len(a))])
    fit, *_ = np.linalg.lstsq(design, b, rcond=None)
    readout = design @ fit
    return np.array([stats.spearmanr(readout[:, j], b[:, j])[0] for j in range(b.shape[1])])


def per_conformation_error(estimates, truths, *, mean=None):
    """``||V̂_i - V_i|| / ||V_i - V̄||`` for every conformation.

    The error relative to the heterogeneity: 0 for a perfect per-image
    reconstruction, about 1 for a method that returns the mean map ``V̄``
    for every image (which may nonetheless have a good FSC).

    Parameters
    ----------
    estimates, truths : (n, ...) array_like
    mean : (...) array_like, optional
        V̄ (default: the mean of ``truths``).

    Returns
    -------
    (n,) ndarray
    """
    estimates, truths = (np.asarray(backend.asnumpy(x), float) for x in (estimates, truths))
    if estimates.shape != truths.shape:
        raise ValueError(f"estimates and truths must have one shape, got {estimates.shape} and {truths.shape}")
    mean = truths.mean(axis=0) if mean is None else np.asarray(mean, float)
    axes = tuple(range(1, truths.ndim))
    return np.sqrt(np.sum((estimates - truths) ** 2, axis=axes) / np.sum((truths - mean) ** 2, axis=axes))

