"""Scores for conformational landscapes: how well an embedding of the images matches the truth.

Embeddings from different methods live in different spaces (a linear
subspace method's coordinates, a network's latent space, a Wasserstein
map's diffusion coordinates); these metrics compare them with the true
latent of a synthetic family (:mod:`mbook.cryoem.heterogeneity`) without
assuming a common frame:

- :func:`neighbourhood_preservation`: the overlap of k-nearest-neighbour sets;
- :func:`linear_alignment`: R² of the best affine map, a Procrustes/CCA-type score,
  and :func:`canonical_correlations`, the cosines of the principal angles;
- :func:`rank_correlation`: Spearman's correlation of each latent coordinate with
  its affine readout;
- :func:`per_conformation_error`: the relative error of reconstructed volumes.

Device rule: the neighbourhood and rank metrics use SciPy's KD-tree and
Spearman correlation, host-only steps that copy the embeddings to the host;
arrays come back on the selected device, plain scores as floats.

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import metrics
>>> rng = np.random.default_rng(0)
>>> latent = rng.uniform(size=(200, 2))
>>> good = latent @ [[2.0, 0.1], [0.3, -1.0]] + 5      # a linear image of the latent
>>> bad = rng.permutation(good)                          # scrambled
>>> metrics.neighbourhood_preservation(good, latent) > metrics.neighbourhood_preservation(bad, latent)
True
>>> round(metrics.linear_alignment(good, latent), 6)
1.0
"""

from __future__ import annotations

import numpy as np
from scipy import spatial, stats

from mbook.core import backend, checks

def _check_embeddings(a, b, names=("embedding", "reference")):
    a, b = (checks.check_array(x, name, real=True).astype(float) for x, name in zip((a, b), names))
    a, b = (x[:, None] if x.ndim == 1 else x for x in (a, b))
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{names[0]} and {names[1]} must be (n,) or (n, p) arrays, got shapes {a.shape} and "
                         f"{b.shape}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have one row per image, got {a.shape[0]} and "
                         f"{b.shape[0]} rows")
    return a, b


def neighbourhood_preservation(embedding, reference, *, n_neighbours=10) -> float:
    """Mean overlap of the k-nearest-neighbour sets in two embeddings of the same images.

    ``(1/n) Σ_i |N_k^a(i) ∩ N_k^b(i)| / k``: 1 when neighbourhoods agree, about
    ``k / n`` for unrelated embeddings. Invariant to any similarity
    transform of either embedding; the dimensions may differ. Host-only
    step: :class:`scipy.spatial.cKDTree` on host copies of the embeddings.
    """
    a, b = (backend.asnumpy(x) for x in _check_embeddings(embedding, reference))
    k = checks.check_count(n_neighbours, "n_neighbours", maximum=len(a) - 1)
    na = spatial.cKDTree(a).query(a, k + 1)[1][:, 1:]
    nb = spatial.cKDTree(b).query(b, k + 1)[1][:, 1:]
    shared = (na[:, :, None] == nb[:, None, :]).any(axis=2).sum(axis=1)  # |N^a(i) ∩ N^b(i)| for every i
    return float(shared.mean() / k)


def _affine_fit(a, b, xp):
    design = xp.concatenate([a, xp.ones((a.shape[0], 1))], axis=1)
    fit = xp.linalg.lstsq(design, b, rcond=None)[0]
    return design @ fit


def linear_alignment(embedding, reference) -> float:
    """R² of the best affine map from ``embedding`` to ``reference`` (least squares).

    ``1 - ||B - [A 1] X||² / ||B - mean B||²``: 1 when the reference is an
    affine image of the embedding (any rotation, scaling, shear: a
    Procrustes/CCA-type alignment), 0 when nothing linear is shared.
    """
    a, b = _check_embeddings(embedding, reference)
    xp = backend.get_array_module(a)
    centred = b - b.mean(axis=0)
    return float(1 - xp.sum((b - _affine_fit(a, b, xp)) ** 2) / xp.sum(centred**2))


def canonical_correlations(embedding, reference):
    """Canonical correlations between two embeddings (CCA), largest first.

    Returns
    -------
    (min(p, q),) ndarray
        On the selected device.
    """
    a, b = _check_embeddings(embedding, reference)
    xp = backend.get_array_module(a)
    qa, _ = xp.linalg.qr(a - a.mean(axis=0))
    qb, _ = xp.linalg.qr(b - b.mean(axis=0))
    return xp.clip(xp.linalg.svd(qa.T @ qb, compute_uv=False), 0, 1)


def rank_correlation(embedding, latent):
    """Spearman correlation of each true latent coordinate with its best linear read-out.

    For each column of ``latent`` the embedding is mapped affinely onto it
    (least squares, on the device) and the rank correlation of the two is
    taken (:func:`scipy.stats.spearmanr`: a host-only step).

    Returns
    -------
    (latent_dim,) ndarray
        On the selected device.
    """
    a, b = _check_embeddings(embedding, latent, ("embedding", "latent"))
    readout = backend.asnumpy(_affine_fit(a, b, backend.get_array_module(a)))
    b = backend.asnumpy(b)
    return backend.asarray(np.array([stats.spearmanr(readout[:, j], b[:, j])[0] for j in range(b.shape[1])]))


def per_conformation_error(estimates, truths, *, mean=None):
    """``||V̂_i - V_i|| / ||V_i - V̄||`` for every conformation.

    The error relative to the heterogeneity: 0 for a perfect per-image
    reconstruction, about 1 for a method that returns the mean map ``V̄``
    for every image (which may nonetheless have a good FSC).

    Parameters
    ----------
    estimates : (n, ...) or (...) array_like
        One map per conformation, or one map for all (broadcast).
    truths : (n, ...) array_like
    mean : (...) array_like, optional
        V̄ (default: the mean of ``truths``).

    Returns
    -------
    (n,) ndarray
        On the selected device.
    """
    estimates, truths = (checks.check_array(x, name, min_ndim=1, real=True).astype(float)
                         for x, name in ((estimates, "estimates"), (truths, "truths")))
    xp = backend.get_array_module(truths)
    if estimates.shape == truths.shape[1:]:  # one map for every conformation
        estimates = estimates[None]
    if estimates.shape[1:] != truths.shape[1:] or estimates.shape[0] not in (1, truths.shape[0]):
        raise ValueError(f"estimates and truths must have one shape, got {estimates.shape} and {truths.shape}")
    mean = truths.mean(axis=0) if mean is None else checks.check_array(mean, "mean", real=True).astype(float)
    if mean.shape != truths.shape[1:]:
        raise ValueError(f"mean must have the shape of one map {truths.shape[1:]}, got {mean.shape}")
    axes = tuple(range(1, truths.ndim))
    return xp.sqrt(xp.sum((estimates - truths) ** 2, axis=axes) / xp.sum((truths - mean) ** 2, axis=axes))
