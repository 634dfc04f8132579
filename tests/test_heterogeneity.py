"""Heterogeneity (mbook.cryoem.heterogeneity): the hinged family, PPCA on per-image operators, metrics.

Tests whose result could depend on the device take the ``device`` fixture and compare on the host."""

import numpy as np
import pytest
from scipy import stats

from mbook.core import backend, grids
from mbook.cryoem import heterogeneity as het
from mbook.cryoem import metrics, micrographs, particles, volumes

PARTICLE = het.hinged_particle(seed=1)


def test_conformation_moves_only_the_moving_domain_rigidly(device):
    rest, bent = (backend.asnumpy(het.conformation(PARTICLE, z).positions) for z in ((0.0, 0.0), (0.6, 0.4)))
    n = len(PARTICLE.fixed.weights)
    np.testing.assert_allclose(bent[:n], rest[:n])
    pairwise = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(pairwise(bent[n:]), pairwise(rest[n:]), atol=1e-12)
    c0, c1 = rest[n:].mean(0), bent[n:].mean(0)
    angle = np.arctan2(c1[1], c1[0]) - np.arctan2(c0[1], c0[0])
    assert angle == pytest.approx(0.6)  # the hinge is at the origin, axis z; the twist keeps the centroid


def test_the_twist_turns_the_moving_domain_about_the_line_from_the_hinge_to_its_centre(device):
    """φ = 0.4: every moving atom keeps its coordinate along that axis and turns by exactly 0.4 rad about it."""
    n = len(PARTICLE.fixed.weights)
    rest, twisted = (backend.asnumpy(het.conformation(PARTICLE, z).positions)[n:] for z in ((0.0, 0.0), (0.0, 0.4)))
    centre = rest.mean(axis=0)
    axis = centre / np.linalg.norm(centre)  # the hinge is at the origin
    r0, r1 = rest - centre, twisted - centre
    np.testing.assert_allclose(r1 @ axis, r0 @ axis, rtol=0, atol=1e-12)
    p0, p1 = r0 - np.outer(r0 @ axis, axis), r1 - np.outer(r1 @ axis, axis)
    angles = np.arctan2(np.cross(p0, p1) @ axis, np.einsum("ij,ij->i", p0, p1))
    np.testing.assert_allclose(angles, 0.4, rtol=0, atol=1e-12)


def test_many_conformations_at_once_equal_one_at_a_time(device):
    latent = np.random.default_rng(7).uniform(-1, 1, (4, 2))
    batch = backend.asnumpy(het.conformations(PARTICLE, latent).positions)
    assert batch.shape == (4, len(PARTICLE.fixed.weights) + len(PARTICLE.moving.weights), 3)
    for z, positions in zip(latent, batch):
        np.testing.assert_allclose(positions, backend.asnumpy(het.conformation(PARTICLE, z).positions), atol=1e-12)


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


def test_consensus_recovers_the_mean(device):
    statistics, mean, *_ = _synthetic_statistics(k=1)
    estimate = backend.asnumpy(het.consensus(statistics, regularization=0))
    assert np.linalg.norm(estimate - mean) < 0.05 * np.linalg.norm(mean)


def test_ppca_recovers_the_subspace_and_the_latent(device):
    statistics, mean, w, z, _ = _synthetic_statistics()
    components, embedding = het.ppca(statistics, mean, n_components=2)
    components = backend.asnumpy(components)
    angles = np.linalg.svd(np.linalg.qr(components)[0].T @ np.linalg.qr(w)[0], compute_uv=False)
    assert angles.min() > 0.99  # cosines of the principal angles between estimated and true subspaces
    assert metrics.linear_alignment(embedding, z) > 0.95


def test_ppca_copies_nothing_to_the_host_per_iteration(no_copies_per_iteration):
    statistics, mean, *_ = _synthetic_statistics(n=50, d=6)
    no_copies_per_iteration(lambda n: het.ppca(statistics, mean, n_components=2, max_num_iter=n))
    no_copies_per_iteration(lambda n: het.ppca(statistics, mean, n_components=2, contrast_invariant=True,
                                               max_num_iter=n))


def test_contrast_invariant_embedding_ignores_the_contrast(device):
    statistics, mean, w, z, c = _synthetic_statistics(n=800, contrast_spread=0.3, seed=2)
    _, plain = het.ppca(statistics, mean, n_components=2)
    _, invariant = het.ppca(statistics, mean, n_components=2, contrast_invariant=True)
    contrast_in_plain = metrics.linear_alignment(plain, np.log(c))
    contrast_in_invariant = metrics.linear_alignment(invariant, np.log(c))
    assert contrast_in_plain > 0.3 > 0.05 > contrast_in_invariant
    assert metrics.linear_alignment(invariant, z) > metrics.linear_alignment(plain, z)


def test_metrics_rank_good_over_scrambled_embeddings(device):
    rng = np.random.default_rng(3)
    latent = rng.uniform(size=(400, 2))
    good = np.column_stack([np.sin(latent[:, 0]), latent[:, 1] ** 3, rng.normal(0, 0.01, 400)])  # monotone, 3D
    scrambled = good[rng.permutation(400)]
    assert metrics.neighbourhood_preservation(good, latent) > 0.5 > 0.1 > metrics.neighbourhood_preservation(scrambled, latent)
    assert metrics.linear_alignment(good, latent) > 0.9 > 0.1 > metrics.linear_alignment(scrambled, latent)
    assert np.all(backend.asnumpy(metrics.rank_correlation(good, latent)) > 0.95)
    assert np.all(np.abs(backend.asnumpy(metrics.rank_correlation(scrambled, latent))) < 0.2)
    np.testing.assert_allclose(backend.asnumpy(metrics.canonical_correlations(good @ rng.standard_normal((3, 3)), good)),
                               1, atol=1e-12)


def test_neighbourhoods_survive_similarity_transforms(device):
    points = np.random.default_rng(4).standard_normal((300, 3))
    rotation = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))[0]
    assert metrics.neighbourhood_preservation(2.5 * points @ rotation + 7, points) == 1.0


def test_the_mean_map_has_per_conformation_error_one(device):
    grid = grids.make_grid(gpts=(16, 16, 16), sampling=4.0)
    maps = het.family_volumes(PARTICLE, [(0.0, 0.0), (0.5, 0.0), (1.0, 0.3)], grid)
    mean = maps.mean(axis=0)
    np.testing.assert_allclose(backend.asnumpy(metrics.per_conformation_error(mean, maps)), 1.0)  # one map for all
    assert np.all(backend.asnumpy(metrics.per_conformation_error(maps, maps)) == 0)
    # half-way from each map to the mean: an error of one half (a norm, not a squared norm)
    halfway = maps + 0.5 * (mean - maps)
    np.testing.assert_allclose(backend.asnumpy(metrics.per_conformation_error(halfway, maps)), 0.5, rtol=1e-12)
    # against another reference map, the error's denominator is the distance to that map
    other = 0.8 * mean
    expected = [np.linalg.norm(backend.asnumpy(h - m)) / np.linalg.norm(backend.asnumpy(m - other))
                for h, m in zip(halfway, maps)]
    np.testing.assert_allclose(backend.asnumpy(metrics.per_conformation_error(halfway, maps, mean=other)), expected,
                               rtol=1e-12)
    mass = backend.asnumpy(maps.sum(axis=(1, 2, 3))) * 4.0**3
    np.testing.assert_allclose(mass, backend.asnumpy(PARTICLE.fixed.weights.sum() + PARTICLE.moving.weights.sum()),
                               rtol=1e-3)  # every conformation keeps its mass (the box clips a little)


def test_family_volumes_do_not_depend_on_the_memory_budget(device):
    grid = grids.make_grid(gpts=(16, 16, 16), sampling=4.0)
    latent = [(0.0, 0.0), (0.5, 0.0), (1.0, 0.3)]
    whole = backend.asnumpy(het.family_volumes(PARTICLE, latent, grid))
    pieces = backend.asnumpy(het.family_volumes(PARTICLE, latent, grid, budget=1_000_000))  # two per batch
    np.testing.assert_allclose(pieces, whole, rtol=1e-13, atol=1e-16)
    single = backend.asnumpy(particles.gaussian_volume(het.conformation(PARTICLE, latent[2]), grid))
    np.testing.assert_allclose(whole[2], single, rtol=1e-12, atol=1e-16)


def test_many_coefficient_maps_at_once_equal_one_at_a_time(device):
    grid = grids.make_grid(gpts=(20, 20, 20), sampling=5.0)  # 100 Å: the basis fits the box
    basis = het.pseudo_atom_basis(PARTICLE, [(0.0, 0.0)], spacing=8.0, sigma=4.0)
    coefficients = np.random.default_rng(2).standard_normal((3, len(basis.weights)))  # signed
    maps = backend.asnumpy(het.coefficient_volume(coefficients, basis, grid, budget=600_000))  # one map a batch
    for c, m in zip(coefficients, maps):
        np.testing.assert_allclose(m, backend.asnumpy(het.coefficient_volume(c, basis, grid)), rtol=1e-12,
                                   atol=1e-15)
    total = maps.sum(axis=(1, 2, 3)) * 5.0**3
    np.testing.assert_allclose(total, coefficients.sum(axis=1), rtol=1e-3, atol=1e-2)  # the weights' sum


def test_image_statistics_give_the_consensus_of_a_homogeneous_stack(device):
    """Noise-free images of one conformation: the statistics' least squares fit reproduces its projections."""
    grid2 = grids.make_grid(gpts=(24, 24), sampling=3.0)
    basis = het.pseudo_atom_basis(PARTICLE, [(0.0, 0.0)], spacing=6.0, sigma=3.0)
    params = micrographs.draw_parameters(120, seed=3)
    atoms = het.conformation(PARTICLE, (0.0, 0.0))
    statistics = het.image_statistics(micrographs.stream_images(atoms, params, grid2), params, grid2, basis,
                                      k_max=1 / 10, budget=2_000_000)
    d = len(basis.weights)
    assert statistics.gram.shape == (120, d, d) and statistics.projection.shape == (120, d)
    assert statistics.noise_variance == 0
    coefficients = het.consensus(statistics, regularization=1e-6)
    fitted = het.coefficient_volume(coefficients, basis, grids.make_grid(gpts=(24,) * 3, sampling=3.0))
    truth = particles.gaussian_volume(atoms, grids.make_grid(gpts=(24,) * 3, sampling=3.0))
    low = [volumes.lowpass(v, sampling=3.0, resolution=10.0) for v in (fitted, truth)]
    assert volumes.relative_error(*low) < 0.15  # (another conformation is 0.7 away)


def test_image_statistics_noise_variance_is_the_variance_of_one_data_coefficient(device):
    """Pure noise images: E[b bᵀ] = ν E[G], so trace(mean b bᵀ) / (ν trace(mean G)) is 1.

    The statistical error of the trace over 3000 images and 38 coordinates is below 1 %: 0.05 is a wide margin
    against a wrong power of the pixel size (h² off: a ratio of 9 at 3 Å)."""
    grid = grids.make_grid(gpts=(16, 16), sampling=3.0)
    basis = het.pseudo_atom_basis(het.hinged_particle(atoms_per_domain=10, seed=1), [(0.0, 0.0)], spacing=8.0,
                                  sigma=4.0)
    n, sigma = 3000, 0.7
    params = micrographs.draw_parameters(n, seed=2)
    noise = np.random.default_rng(3).normal(0, sigma, (n, 16, 16))
    statistics = het.image_statistics([micrographs.ImageBatch(0, noise, sigma)], params, grid, basis, k_max=1 / 8)
    b, gram = backend.asnumpy(statistics.projection), backend.asnumpy(statistics.gram)
    ratio = np.einsum("ni,ni->", b, b) / n / (float(statistics.noise_variance) * np.trace(gram.mean(axis=0)))
    assert ratio == pytest.approx(1.0, abs=0.05)


def test_metric_input_is_checked():
    with pytest.raises(ValueError, match="one row per image"):
        metrics.linear_alignment(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="n_neighbours"):
        metrics.neighbourhood_preservation(np.ones((5, 2)), np.ones((5, 2)), n_neighbours=5)
    with pytest.raises(ValueError, match="n_components"):
        het.ppca(_synthetic_statistics(n=20, d=4)[0], np.ones(4), n_components=5)


def test_rank_correlation_is_spearman_for_one_coordinate(device):
    x = np.random.default_rng(6).uniform(size=100)
    assert float(metrics.rank_correlation(x ** 3, x)[0]) == pytest.approx(stats.spearmanr(x ** 3, x)[0])


def test_rank_correlation_reads_the_latent_out_through_the_affine_fit(device):
    """z is exactly z + w minus w: the best linear read-out from both columns ranks like z (ρ = 1), though
    neither column alone does (Spearman about 0.73 and 0.02)."""
    rng = np.random.default_rng(0)
    z, w = rng.uniform(size=300), rng.uniform(size=300)
    embedding = np.column_stack([z + w, w])
    assert max(abs(stats.spearmanr(column, z)[0]) for column in embedding.T) < 0.8
    assert float(metrics.rank_correlation(embedding, z)[0]) == pytest.approx(1.0, abs=1e-12)


def test_numpy_inputs_give_results_on_the_selected_device():
    """On the strict stand-in, public functions given NumPy inputs return stand-in arrays (host-only steps too)."""
    backend.set_device("strict")
    try:
        on_device = lambda *arrays: all(backend.get_array_module(a) is backend.xp for a in arrays)  # noqa: E731
        particle = het.hinged_particle(atoms_per_domain=10, seed=2)
        assert on_device(*particle.fixed, *particle.moving, particle.hinge, particle.axis)
        assert on_device(*het.conformation(particle, (0.1, 0.2)), *het.conformations(particle, np.zeros((2, 2))))
        grid = grids.make_grid(gpts=(8,) * 3, sampling=6.0)
        basis = het.pseudo_atom_basis(particle, np.zeros((1, 2)))
        assert on_device(het.family_volumes(particle, np.zeros((2, 2)), grid), *basis,
                         het.coefficient_volume(np.ones(len(basis.weights)), basis, grid))
        statistics, mean, *_ = _synthetic_statistics(n=30, d=5)
        assert on_device(het.consensus(statistics), *het.ppca(statistics, mean, max_num_iter=2))
        a, b = np.random.default_rng(1).standard_normal((2, 30, 2))
        assert on_device(metrics.canonical_correlations(a, b), metrics.rank_correlation(a, b),
                         metrics.per_conformation_error(a, b))
        assert isinstance(metrics.neighbourhood_preservation(a, b), float) and isinstance(metrics.linear_alignment(a, b),
                                                                                       float)
    finally:
        backend.set_device("cpu")
