"""Heterogeneity (mbook.cryoem.heterogeneity): the hinged family, PPCA on per-image operators, metrics."""

import numpy as np
import pytest
from scipy import stats

from mbook.core import grids
from mbook.cryoem import heterogeneity as het

PARTICLE = het.hinged_particle(seed=1)


def test_conformation_moves_only_the_moving_domain_rigidly():
    rest, bent = het.conformation(PARTICLE, (0.0, 0.0)), het.conformation(PARTICLE, (0.6, 0.4))
    n = len(PARTICLE.fixed.weights)
    np.testing.assert_allclose(bent.positions[:n], rest.positions[:n])
    pairwise = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(pairwise(bent.positions[n:]), pairwise(rest.positions[n:]), atol=1e-12)
    c0, c1 = rest.positions[n:].mean(0), bent.positions[n:].mean(0)
    angle = np.arctan2(c1[1], c1[0]) - np.arctan2(c0[1], c0[0])
    assert angle == pytest.approx(0.6)  # the hinge is at the origin, axis z; the twist keeps the centroid


def test_bad_latent_is_refused():
    with pytest.raises(ValueError, match="z must be"):
        het.conformation(PARTICLE, (0.1, 0.2, 0.3))


def _synthetic_statistics(n=600, d=12, k=2, q=40, contrast_spread=0.0, seed=0):
    """Images y_i = c_i A_i (m + W z_i) + noise with random A_i: exact sufficient statistics."""
    rng = np.random.default_rng(seed)
    mean, w = rng.standard_normal(d) + 3, rng.standard_normal((d, k))
    z = rng.standard_normal((n, k))
    c = np.exp(contrast_spread * rng.standard_normal(n))
    a = rng.standard_normal((n, q, d))
    y = c[:, None] * np.einsum("nqd,nd->nq", a, mean + z @ w.T) + 0.1 * rng.standard_normal((n, q))
    statistics = het.ImageStatistics(np.einsum("nqd,nqe->nde", a, a).astype(np.float32),
                                     np.einsum("nqd,nq->nd", a, y), 0.01)
    return statistics, mean, w, z, c


def test_consensus_recovers_the_mean():
    statistics, mean, *_ = _synthetic_statistics(k=1)
    assert np.linalg.norm(het.consensus(statistics, regularization=0) - mean) < 0.05 * np.linalg.norm(mean)


def test_ppca_recovers_the_subspace_and_the_latent():
    statistics, mean, w, z, _ = _synthetic_statistics()
    components, embedding = het.ppca(statistics, mean, n_components=2)
    angles = np.linalg.svd(np.linalg.qr(components)[0].T @ np.linalg.qr(w)[0], compute_uv=False)
    assert angles.min() > 0.99  # cosines of the principal angles between estimated and true subspaces
    assert het.linear_alignment(embedding, z) > 0.95


def test_contrast_invariant_embedding_ignores_the_contrast():
    statistics, mean, w, z, c = _synthetic_statistics(n=800, contrast_spread=0.3, seed=2)
    _, plain = het.ppca(statistics, mean, n_components=2)
    _, invariant = het.ppca(statistics, mean, n_components=2, contrast_invariant=True)
    contrast_in_plain = het.linear_alignment(plain, np.log(c))
    contrast_in_invariant = het.linear_alignment(invariant, np.log(c))
    assert contrast_in_plain > 0.3 > 0.05 > contrast_in_invariant
    assert het.linear_alignment(invariant, z) > het.linear_alignment(plain, z)


def test_metrics_rank_good_over_scrambled_embeddings():
    rng = np.random.default_rng(3)
    latent = rng.uniform(size=(400, 2))
    good = np.column_stack([np.sin(latent[:, 0]), latent[:, 1] ** 3, rng.normal(0, 0.01, 400)])  # monotone, 3D
    scrambled = good[rng.permutation(400)]
    assert het.neighbourhood_preservation(good, latent) > 0.5 > 0.1 > het.neighbourhood_preservation(scrambled, latent)
    assert het.linear_alignment(good, latent) > 0.9 > 0.1 > het.linear_alignment(scrambled, latent)
    assert np.all(het.rank_correlation(good, latent) > 0.95)
    assert np.all(np.abs(het.rank_correlation(scrambled, latent)) < 0.2)
    np.testing.assert_allclose(het.canonical_correlations(good @ rng.standard_normal((3, 3)), good), 1, atol=1e-12)


def test_neighbourhoods_survive_similarity_transforms():
    points = np.random.default_rng(4).standard_normal((300, 3))
    rotation = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))[0]
    assert het.neighbourhood_preservation(2.5 * points @ rotation + 7, points) == 1.0


def test_the_mean_map_has_per_conformation_error_one():
    grid = grids.make_grid(gpts=(16, 16, 16), sampling=4.0)
    volumes = het.family_volumes(PARTICLE, [(0.0, 0.0), (0.5, 0.0), (1.0, 0.3)], grid)
    mean = volumes.mean(axis=0)
    np.testing.assert_allclose(het.per_conformation_error(np.broadcast_to(mean, volumes.shape), volumes), 1.0)
    assert np.all(het.per_conformation_error(volumes, volumes) == 0)


def test_metric_input_is_checked():
    with pytest.raises(ValueError, match="one row per image"):
        het.linear_alignment(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="n_neighbours"):
        het.neighbourhood_preservation(np.ones((5, 2)), np.ones((5, 2)), n_neighbours=5)
    with pytest.raises(ValueError, match="n_components"):
        het.ppca(_synthetic_statistics(n=20, d=4)[0], np.ones(4), n_components=5)


def test_rank_correlation_is_spearman_for_one_coordinate():
    x = np.random.default_rng(6).uniform(size=100)
    assert het.rank_correlation(x ** 3, x)[0] == pytest.approx(stats.spearmanr(x ** 3, x)[0])
