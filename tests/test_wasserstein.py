"""Wavelet EMD (mbook.cryoem.wasserstein), its fast linear-family version (mbook.cryoem.wemd_family), diffusion maps.

Tests whose result could depend on the device take the ``device`` fixture and compare on the host."""

import warnings

import numpy as np
import pytest
from scipy import stats

from mbook.core import backend
from mbook.cryoem import wasserstein, wemd_family


def _blob(shape, centre, width=1.5):
    grid = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * width**2))


def test_exact_emd_of_a_translation_is_the_distance():
    p = _blob((20, 20), (6.0, 7.0))
    q = np.roll(p, (3, 4), axis=(0, 1))
    assert wasserstein.exact_emd(p, q, sampling=0.5) == pytest.approx(0.5 * 5.0 * p.sum(), rel=1e-6)  # 3-4-5


def test_wavelet_emd_is_equivalent_to_the_emd_on_translations():
    """Shirdhonkar & Jacobs: WEMD / EMD stays between two constants (here within a factor 3)."""
    p = _blob((32, 32), (10.0, 10.0))
    ratios = [wasserstein.wemd(p, np.roll(p, (d, d // 2), axis=(0, 1))) / wasserstein.exact_emd(
        p, np.roll(p, (d, d // 2), axis=(0, 1))) for d in (1, 2, 4, 8, 12)]
    assert max(ratios) / min(ratios) < 3


def test_wavelet_emd_is_a_metric():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((12, 12, 12)) for _ in range(3))
    a, b, c = (x / x.sum() for x in (a, b, c))
    assert wasserstein.wemd(a, a) == 0
    assert wasserstein.wemd(a, b) == pytest.approx(wasserstein.wemd(b, a))
    assert wasserstein.wemd(a, c) <= wasserstein.wemd(a, b) + wasserstein.wemd(b, c)


def test_embedding_is_linear_and_pairwise_matches_pairs(device):
    rng = np.random.default_rng(1)
    x, y = rng.random((2, 10, 9))
    np.testing.assert_allclose(backend.asnumpy(wasserstein.wavelet_embedding(2 * x - y, allow_negative=True)),
                               backend.asnumpy(2 * wasserstein.wavelet_embedding(x) - wasserstein.wavelet_embedding(y)),
                               atol=1e-12)
    stack = rng.random((4, 10, 9))
    stack /= stack.sum(axis=(1, 2), keepdims=True)
    d = backend.asnumpy(wasserstein.pairwise_wemd(backend.asarray(stack), sampling=2.0))
    assert d[1, 3] == pytest.approx(wasserstein.wemd(stack[1], stack[3], sampling=2.0), rel=1e-12)
    np.testing.assert_array_equal(d, d.T)
    two_rows = 2 * 2 * wasserstein.embedding_size((10, 9)) * 8  # two rows of differences per batch [bytes]
    small = backend.asnumpy(wasserstein.pairwise_wemd(stack, sampling=2.0, budget=two_rows))
    np.testing.assert_allclose(small, d, rtol=1e-14)



@pytest.mark.parametrize("shape", [(17,), (16, 16), (12, 20), (9, 10, 11)])
@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym5", "coif3"])
def test_the_device_transform_gives_pywavelets_embedding(shape, wavelet):
    """One matrix product per axis and level (mbook.cryoem.wavelet_transform) against PyWavelets' wavedecn."""
    from mbook.cryoem import wavelet_transform

    batch = np.random.default_rng(2).random((3,) + shape)
    got = wavelet_transform.embed(batch, sampling=1.5, wavelet=wavelet, levels=wasserstein.levels(shape))
    expected = np.stack([backend.asnumpy(wasserstein.wavelet_embedding(x, sampling=1.5, wavelet=wavelet))
                         for x in batch])  # on the CPU: PyWavelets
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_the_device_embeddings_are_batched_under_the_budget(monkeypatch):
    """On the stand-in the embeddings are made on the device in batches: a budget of two densities gives
    the distances of one batch, and both equal the CPU's (PyWavelets'); the l1 distances keep their own
    budget."""
    stack = np.random.default_rng(3).random((5, 12, 12, 12))
    stack /= stack.sum(axis=(1, 2, 3), keepdims=True)
    on_cpu = backend.asnumpy(wasserstein.pairwise_wemd(stack, sampling=2.0))
    backend.set_device("strict")
    try:
        whole = backend.asnumpy(wasserstein.pairwise_wemd(stack, sampling=2.0))
        from mbook.cryoem import wavelet_transform

        per_density = wavelet_transform.peak_bytes((12, 12, 12), wasserstein.WAVELET, wasserstein.levels((12,) * 3))
        monkeypatch.setenv("MBOOK_MEMORY_GB", str(2.5 * per_density / 2**30))
        batched = backend.asnumpy(wasserstein.pairwise_wemd(stack, sampling=2.0, budget=2**27))  # l1's own
    finally:
        backend.set_device("cpu")
    np.testing.assert_allclose(whole, on_cpu, rtol=1e-12)
    np.testing.assert_array_equal(batched, whole)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: wasserstein.wemd(-np.ones((4, 4)), np.ones((4, 4))), "negative values"),
        (lambda: wasserstein.wemd(np.ones((4, 4)), 2 * np.ones((4, 4))), "equal mass"),
        (lambda: wasserstein.wemd(np.ones((4, 4)), np.ones((4, 5))), "same shape"),
        (lambda: wasserstein.exact_emd(np.ones((4, 4)), np.full((4, 4), np.nan)), "NaN"),
        (lambda: wasserstein.pairwise_wemd([np.ones((4, 4)), 2 * np.ones((4, 4))]), "equal masses"),
        (lambda: wemd_family.linear_family(np.ones((3, 4, 4)), 3), "k must be an integer in"),
        (lambda: wemd_family.pairwise(np.ones((3, 3)), wemd_family.precompute(np.ones((2, 4, 4)))), "(n, 2)"),
        (lambda: wasserstein.diffusion_map(np.array([[0.0, 1.0], [2.0, 0.0]]), n_components=1), "symmetric"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("shape", [(16, 16), (10, 10, 10)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_fast_family_distances_equal_the_direct_ones(shape, k, device):
    rng = np.random.default_rng(k)
    basis = np.stack([_blob(shape, rng.uniform(3, 7, len(shape))) - _blob(shape, rng.uniform(3, 7, len(shape)))
                      for _ in range(k)])
    mean = 3 * _blob(shape, (5.0,) * len(shape), width=3.0)
    z = rng.uniform(-1, 1, (25, k))
    fast = backend.asnumpy(wemd_family.pairwise(z, wemd_family.precompute(basis, sampling=1.5)))
    family = mean + np.einsum("nk,k...->n...", z, basis)
    direct = backend.asnumpy(wasserstein.pairwise_wemd(family, sampling=1.5, allow_negative=True))
    off = ~np.eye(25, dtype=bool)
    assert np.max(np.abs(fast - direct)[off] / direct[off]) < 1e-9


def test_fast_family_distances_with_vanishing_tails(device):
    # Coefficients near 1e-200 (the far tails of a volume) square to 0: their points on the unit
    # sphere must still be finite (no division of 0 by 0), and the distances unchanged.
    rng = np.random.default_rng(3)
    basis = np.stack([_blob((16, 16), rng.uniform(3, 8, 2), width=0.5) - _blob((16, 16), rng.uniform(3, 8, 2), 0.5)
                      for _ in range(3)])
    basis[np.abs(basis) < 1e-30] = 0  # compact maps, then isolated specks far from them
    basis[:, 14, 14] = 1e-200 * np.array([1.0, -2.0, 3.0])
    basis[:, 13, 2] = 3e-190 * np.array([2.0, 1.0, -1.0])
    mean = 3 * _blob((16, 16), (5.0, 5.0), width=3.0)
    z = rng.uniform(-1, 1, (25, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = wemd_family.precompute(basis, sampling=1.5)
    boxes = [backend.asnumpy(bound) for level in table.points for bound in level]  # per level: (lower, upper)
    assert all(np.all(np.isfinite(bound)) for bound in boxes)
    fast = backend.asnumpy(wemd_family.pairwise(z, table))
    family = mean + np.einsum("nk,k...->n...", z, basis)
    direct = backend.asnumpy(wasserstein.pairwise_wemd(family, sampling=1.5, allow_negative=True))
    off = ~np.eye(25, dtype=bool)
    assert np.max(np.abs(fast - direct)[off] / direct[off]) < 1e-9


def test_linear_family_reconstructs_a_low_rank_set(device):
    rng = np.random.default_rng(2)
    mean, basis = rng.random((6, 6)), rng.standard_normal((2, 6, 6))
    volumes = mean + np.einsum("nk,kxy->nxy", rng.standard_normal((9, 2)), basis)
    m, b, z = (backend.asnumpy(a) for a in wemd_family.linear_family(volumes, 2))
    np.testing.assert_allclose(m + np.einsum("nk,kxy->nxy", z, b), volumes, atol=1e-12)


def test_diffusion_map_orders_points_along_a_curve(device):
    t = np.sort(np.random.default_rng(3).uniform(0, 3 * np.pi / 2, 120))
    points = np.column_stack([np.cos(t), np.sin(t)]) * (1 + t[:, None] / 5)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    _, coordinates = wasserstein.diffusion_map(distances, n_components=1, epsilon=0.05)
    assert abs(stats.spearmanr(backend.asnumpy(coordinates)[:, 0], t)[0]) > 0.99


def _circle_sampled_unevenly(n=400, seed=0):
    """Points on the unit circle at angles 2π u², dense near 0 and sparse near 2π, and their distances."""
    theta = np.sort(2 * np.pi * np.random.default_rng(seed).uniform(size=n) ** 2)
    points = np.column_stack([np.cos(theta), np.sin(theta)])
    return theta, np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_diffusion_map_coordinates_are_eigenvectors_of_the_normalised_markov_matrix(device):
    """The docstring's P = D⁻¹ K_α with K_α = K / (q qᵀ)^α, built here explicitly: P ψ = λ ψ, and the
    coordinates at time t are λ^t ψ."""
    _, distances = _circle_sampled_unevenly()
    kernel = np.exp(-distances ** 2 / 0.02)
    q = kernel.sum(axis=1)
    normalised = kernel / np.outer(q, q)  # α = 1
    markov = normalised / normalised.sum(axis=1)[:, None]
    values, psi = (backend.asnumpy(a) for a in wasserstein.diffusion_map(distances, n_components=2, epsilon=0.02,
                                                                          t=0))
    assert np.abs(markov @ psi - psi * values).max() < 1e-10 * np.abs(psi).max()
    values2, coordinates2 = (backend.asnumpy(a) for a in wasserstein.diffusion_map(distances, n_components=2,
                                                                                    epsilon=0.02, t=2))
    np.testing.assert_allclose(values2, values, rtol=1e-12)
    np.testing.assert_allclose(coordinates2, psi * values ** 2, rtol=1e-10, atol=1e-14)


def test_diffusion_map_with_alpha_one_does_not_see_the_sampling_density(device):
    """On a circle sampled unevenly, α = 1 gives two coordinates that are an affine image of (cos θ, sin θ)
    (R² 0.996 measured); without the normalisation (α = 0) the density bends them (R² 0.970)."""
    from mbook.cryoem import metrics

    theta, distances = _circle_sampled_unevenly()
    circle = np.column_stack([np.cos(theta), np.sin(theta)])
    fit = {alpha: metrics.linear_alignment(
        backend.asnumpy(wasserstein.diffusion_map(distances, n_components=2, epsilon=0.02, alpha=alpha)[1]), circle)
        for alpha in (1.0, 0.0)}
    assert fit[1.0] > 0.99 > 0.98 > fit[0.0]


def test_numpy_inputs_give_results_on_the_selected_device():
    """On the strict stand-in, public functions given NumPy inputs return stand-in arrays (host-only steps too)."""
    backend.set_device("strict")
    try:
        on_device = lambda *arrays: all(backend.get_array_module(a) is backend.xp for a in arrays)  # noqa: E731
        rng = np.random.default_rng(5)
        stack = rng.random((3, 6, 6))
        assert on_device(wasserstein.check_density(stack[0]), wasserstein.wavelet_embedding(stack[0]),
                         wasserstein.wavelet_embedding_adjoint(np.ones(wasserstein.embedding_size((6, 6))), (6, 6)),
                         wasserstein.pairwise_wemd(stack / stack.sum(axis=(1, 2), keepdims=True)),
                         wasserstein.pairwise_l1(stack.reshape(3, -1)),
                         *wasserstein.diffusion_map(np.abs(np.subtract.outer(np.arange(5.0), np.arange(5.0))),
                                                    n_components=1))
        assert isinstance(wasserstein.wemd(stack[0], stack[0]), float)
        assert isinstance(wasserstein.exact_emd(stack[0], stack[0]), float)
        mean, basis, z = wemd_family.linear_family(stack, 2)
        table = wemd_family.precompute(basis)
        assert on_device(mean, basis, z, table.axis, table.total, table.points, table.sums,
                         wemd_family.distances(np.ones((2, 2)), table), wemd_family.pairwise(np.ones((3, 2)), table))
    finally:
        backend.set_device("cpu")


def _gaussian(shape, centre, width=1.5):
    grid = np.indices(shape).astype(float)
    density = np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * width**2))
    return density / density.sum()


@pytest.mark.parametrize("shape, direction", [((32, 32), (1, 0)), ((32, 32), (1, 1)), ((20, 20, 20), (1, 0, 0)),
                                              ((20, 20, 20), (1, 1, 1))])
def test_the_wavelet_emd_orders_translations(shape, direction):
    # The EMD of a density and its copy moved by k steps grows with k: so must its wavelet approximation,
    # on lattice and diagonal paths, up to shifts of half the box (a transform on a torus fails this).
    start = [n // 5 for n in shape]
    p = _gaussian(shape, start)
    distances = [wasserstein.wemd(p, _gaussian(shape, [s + k * d for s, d in zip(start, direction)]))
                 for k in range(1, min(shape) // 2 + 1)]
    assert np.all(np.diff(distances) > 0), np.round(distances, 1)


def test_the_wavelet_emd_in_angstrom_barely_depends_on_the_pixel_size():
    # The same two blobs 6 Å apart, drawn with 1 Å and with 0.5 Å pixels: the EMD is 6 Å either way.
    coarse = [_gaussian((32, 32), (8 + dx, 10), width=1.5) for dx in (0, 6)]
    fine = [_gaussian((64, 64), (16 + dx, 20), width=3.0) for dx in (0, 12)]
    ratio = wasserstein.wemd(*fine, sampling=0.5) / wasserstein.wemd(*coarse, sampling=1.0)
    assert 0.8 < ratio < 1.25, ratio
