"""mbook.segmentation: synthetic STM images, local Fourier features, K-means, convex Chan-Vese by PDHG."""

import functools
import math

import numpy as np
import pytest
from scipy import ndimage

from mbook.core import backend
from mbook.inverse import optimize
from mbook.segmentation import chan_vese, features, stm

CLEAN = dict(drift=0.0, tip_blur=0.0, line_noise=0.0, noise=0.0, disorder_width=0.0)


# ----------------------------------------------------------------------------- synthetic STM images
def test_stm_images_have_labels_masks_and_equal_grain_statistics(device):
    images = stm.synthetic_stm(64, num_images=3, num_regions=3, seed=4, **CLEAN)
    for array in (images.image, images.labels, images.masks, images.disorder, images.spacing, images.angle):
        assert backend.get_array_module(array) is backend.xp
    image, labels, masks = (backend.asnumpy(a) for a in (images.image, images.labels, images.masks))
    assert image.shape == labels.shape == (3, 64, 64) and masks.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(masks.sum(axis=1), 1)  # every pixel in exactly one grain
    np.testing.assert_array_equal(np.argmax(masks, axis=1), labels)
    # Without artefacts, every grain has zero mean and unit variance: equal intensity, by construction.
    for b in range(3):
        for r in range(3):
            values = image[b][labels[b] == r]
            if values.size > 50:
                assert abs(values.mean()) < 1e-9 and values.std() == pytest.approx(1.0, rel=1e-9)


def test_stm_images_are_the_same_on_every_device(device, on_cpu):
    kwargs = dict(num_images=2, num_regions=2, seed=7)
    images = stm.synthetic_stm((48, 40), **kwargs)
    reference = on_cpu(stm.synthetic_stm, (48, 40), **kwargs)
    np.testing.assert_allclose(backend.asnumpy(images.image), reference.image, atol=1e-10)
    np.testing.assert_array_equal(backend.asnumpy(images.labels), reference.labels)
    assert images.kinds == reference.kinds


def test_rotational_domains_of_one_lattice_differ_in_orientation():
    images = stm.synthetic_stm(64, num_images=20, num_regions=3, lattices="hexagonal", seed=1)
    angle = backend.asnumpy(images.angle)
    # Hexagonal: period 60°; three grains spread over it, each jittered by at most a quarter step.
    difference = np.abs((angle[:, :, None] - angle[:, None, :] + math.pi / 6) % (math.pi / 3) - math.pi / 6)
    off_diagonal = difference[:, ~np.eye(3, dtype=bool)]
    assert off_diagonal.min() >= math.pi / 3 / 3 / 2 - 1e-12
    assert all(set(kinds) == {"hexagonal"} for kinds in images.kinds)


def test_a_hexagonal_grain_has_its_bragg_peak_at_2_over_sqrt3_a():
    images = stm.synthetic_stm(96, num_images=1, num_regions=2, lattices="hexagonal", seed=5, **CLEAN)
    radius, _ = features.frequency_grid(frequencies=(0.05, 0.45), num_radial=81, num_angles=24)
    maps = backend.asnumpy(features.local_fourier_features(images.image, window=6.0, frequencies=(0.05, 0.45),
                                                           num_radial=81, num_angles=24, smoothing=0))
    labels = backend.asnumpy(images.labels)[0]
    spacing_px = backend.asnumpy(images.spacing)[0] / images.sampling
    for r in range(2):
        depth = ndimage.distance_transform_edt(labels == r)  # the pixel deepest inside grain r
        i, j = np.unravel_index(np.argmax(depth), depth.shape)
        profile = maps[0, :, i, j].reshape(81, 24).max(axis=1)
        # The windowed spectrum of a lattice is a sum of ŵ(k - G) over the reciprocal lattice vectors G:
        # largest at |G| = 2/(√3 a), to within the radial step (0.005) and the angular one (7.5°).
        assert radius[np.argmax(profile)] == pytest.approx(2 / (math.sqrt(3) * spacing_px[r]), abs=0.005)


def test_region_masks_of_labels():
    labels = np.array([[0, 2], [1, 1]])
    masks = backend.asnumpy(stm.region_masks(labels, 3))
    assert masks.shape == (3, 2, 2) and masks[2, 0, 1] and masks[1].sum() == 2 and masks.sum() == 4


# ----------------------------------------------------------------------------- features
def test_features_peak_at_the_wave_vector_of_a_plane_wave(device):
    k = (0.12, 0.16)  # |k| = 0.2 cycles/px, direction atan2(0.16, 0.12)
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    wave = np.cos(2 * np.pi * (k[0] * x + k[1] * y))
    radius, angle = features.frequency_grid(frequencies=(0.1, 0.3), num_radial=21, num_angles=36)
    maps = features.local_fourier_features(wave, window=5.0, frequencies=(0.1, 0.3), num_radial=21,
                                           num_angles=36)
    assert backend.get_array_module(maps) is backend.xp
    best = int(np.argmax(backend.asnumpy(maps[:, 32, 32])))
    assert radius[best // 36] == pytest.approx(0.2, abs=1e-9)
    assert angle[best % 36] == pytest.approx(math.atan2(0.16, 0.12), abs=math.pi / 36 / 2 + 1e-9)


def test_invariant_features_do_not_change_under_a_quarter_turn_and_covariant_ones_shift(rng):
    image = rng.standard_normal((47, 47))  # odd: the FFT grid is symmetric (no lone Nyquist row)
    kwargs = dict(window=3.0, num_radial=3, num_angles=8)
    turned = np.rot90(image)
    # rot90 sends the pixel (i, j) to (n - 1 - j, i); compare the features at matching pixels.
    for rotation in ("invariant", "covariant"):
        a = backend.asnumpy(features.local_fourier_features(image, rotation=rotation, **kwargs))
        b = backend.asnumpy(features.local_fourier_features(turned, rotation=rotation, **kwargs))
        b_back = np.rot90(b, k=-1, axes=(-2, -1))
        if rotation == "invariant":
            np.testing.assert_allclose(b_back, a, atol=1e-10)
        else:
            a, b_back = a.reshape(3, 8, 47, 47), b_back.reshape(3, 8, 47, 47)
            assert not np.allclose(a, b_back)
            # A quarter turn is 4 of the 8 directions in [0, π): a cyclic shift of the direction axis.
            assert any(np.allclose(np.roll(a, s, axis=1), b_back, atol=1e-10) for s in (4, -4))


def test_features_separate_two_lattices_of_equal_mean_intensity(device):
    images = stm.synthetic_stm(96, num_images=2, num_regions=2, lattices="hexagonal", seed=11)
    image, labels = backend.asnumpy(images.image), backend.asnumpy(images.labels)
    for b in range(2):  # equal intensity: pixel values do not tell the grains apart
        assert abs(image[b][labels[b] == 0].mean() - image[b][labels[b] == 1].mean()) < 0.05
    maps = features.local_fourier_features(images.image, num_radial=6, num_angles=8, smoothing=0)
    scores = features.apply_pca(maps, features.fit_pca(maps, 3))
    clusters = features.kmeans(scores, 2, seed=0)
    assert backend.get_array_module(clusters.labels) is backend.xp and clusters.means.shape == (2, 2, 3)
    found = backend.asnumpy(clusters.labels)
    for b in range(2):
        agreement = np.mean(found[b] == labels[b])
        assert max(agreement, 1 - agreement) >= 0.9


def test_pca_components_are_orthonormal_with_the_variance_of_the_scores(rng):
    mixing = rng.standard_normal((5, 5))
    maps = np.einsum("ij,jxy->ixy", mixing, rng.standard_normal((5, 30, 20)) * np.arange(1, 6)[:, None, None])
    pca = features.fit_pca(maps, 3)
    components = backend.asnumpy(pca.components)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-12)
    scores = backend.asnumpy(features.apply_pca(maps, pca)) * pca.scale
    np.testing.assert_allclose(scores.reshape(3, -1).var(axis=1, ddof=1), backend.asnumpy(pca.variance), rtol=1e-10)
    assert np.all(np.diff(backend.asnumpy(pca.variance)) <= 0)


def test_pca_per_image_is_the_pca_of_each_image(device, rng):
    maps = rng.standard_normal((3, 5, 12, 10)) * np.arange(1, 6)[None, :, None, None]
    batched = features.fit_pca(maps, 2, per_image=True)
    scores = backend.asnumpy(features.apply_pca(maps, batched))
    assert scores.shape == (3, 2, 12, 10) and backend.get_array_module(batched.components) is backend.xp
    for b in range(3):
        alone = features.fit_pca(maps[b], 2)
        np.testing.assert_allclose(backend.asnumpy(batched.components[b]), backend.asnumpy(alone.components),
                                   atol=1e-10)
        np.testing.assert_allclose(scores[b], backend.asnumpy(features.apply_pca(maps[b], alone)), atol=1e-10)
    with pytest.raises(ValueError, match="per image"):
        features.apply_pca(maps[:2], batched)


def test_kmeans_finds_separated_clusters_on_every_device(device, on_cpu, rng):
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = rng.integers(3, size=(2, 20, 20))
    points = np.moveaxis(centres[truth] + 0.3 * rng.standard_normal((2, 20, 20, 2)), -1, -3)  # (2, 2, 20, 20)
    result = features.kmeans(points, 3, seed=1)
    found = backend.asnumpy(result.labels)
    for b in range(2):  # the same partition, whatever the cluster numbers
        pairs = set(zip(truth[b].ravel().tolist(), found[b].ravel().tolist()))
        assert len(pairs) == 3
    reference = on_cpu(features.kmeans, points, 3, seed=1)
    np.testing.assert_allclose(backend.asnumpy(result.means), reference.means, atol=1e-10)
    assert result.inertia == pytest.approx(reference.inertia, rel=1e-10)


def test_kmeans_copies_nothing_per_iteration(no_copies_per_iteration, rng):
    points = rng.standard_normal((2, 16, 16))
    no_copies_per_iteration(lambda n: features.kmeans(points, 3, max_num_iter=n, tol=0))


# ----------------------------------------------------------------------------- convex Chan-Vese
def _disk(n=40, radius=10.0):
    x, y = np.meshgrid(np.arange(n) - n / 2 + 0.5, np.arange(n) - n / 2 + 0.5, indexing="ij")
    return (x**2 + y**2 <= radius**2).astype(np.int64)


def test_the_gradient_on_region_stacks_is_minus_the_adjoint_of_the_divergence(device, rng):
    # The operator of the multi-region model: the gradient of every u_k of a batch, (B, K, nx, ny).
    u, p = rng.standard_normal((2, 3, 9, 7)), rng.standard_normal((2, 2, 3, 9, 7))
    lhs = np.vdot(backend.asnumpy(optimize.gradient(u)), p)
    rhs = -np.vdot(u, backend.asnumpy(optimize.divergence(p)))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_region_costs_are_squared_distances(device, rng):
    maps, means = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 4, 3))  # 2 images, 4 regions
    costs = backend.asnumpy(chan_vese.region_costs(maps, means))
    expected = ((maps[:, None] - means[:, :, :, None, None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(costs, expected, atol=1e-12)


def test_normalized_costs_put_the_region_means_one_apart(rng):
    means = rng.standard_normal((2, 3, 4))  # 2 images, 3 regions, 4 channels
    maps = rng.standard_normal((2, 4, 5, 5))
    costs = backend.asnumpy(chan_vese.region_costs(maps, means, normalize=True))
    raw = backend.asnumpy(chan_vese.region_costs(maps, means))
    for b in range(2):
        spread = np.mean([((means[b, k] - means[b, l]) ** 2).sum() for k in range(3) for l in range(3) if k != l])
        np.testing.assert_allclose(costs[b], raw[b] / spread, rtol=1e-12)


def test_the_simplex_projection_is_the_nearest_point_of_the_simplex(device, rng):
    v = 2 * rng.standard_normal((4, 30))
    p = backend.asnumpy(optimize.project_simplex(v, axis=0))
    assert np.all(p >= 0) and np.allclose(p.sum(axis=0), 1)
    # Against brute force: random points of the simplex are never closer.
    for q in rng.dirichlet(np.ones(4), size=200):
        assert np.all(((v - q[:, None]) ** 2).sum(axis=0) >= ((v - p) ** 2).sum(axis=0) - 1e-12)


@pytest.mark.parametrize("solver", [chan_vese.chan_vese_binary, chan_vese.chan_vese_multi])
def test_chan_vese_recovers_a_noisy_disk(solver, device, rng):
    truth = _disk()
    noisy = truth + 0.6 * rng.standard_normal(truth.shape)
    costs = chan_vese.region_costs(noisy[None], np.array([[0.0], [1.0]]))
    result = solver(costs, 1.5, tol=1e-4, max_num_iter=3000)
    assert result.converged and float(result.gaps[-1]) <= 1e-4
    assert backend.get_array_module(result.labels) is backend.xp
    assert chan_vese.iou(result.labels, truth, match=False) >= 0.97
    nearest = backend.asnumpy(chan_vese.region_costs(noisy[None], np.array([[0.0], [1.0]]))).argmin(axis=0)
    assert chan_vese.iou(result.labels, truth, match=False) > chan_vese.iou(nearest, truth, match=False) + 0.1


@pytest.mark.parametrize("weight, kept", [(4.5, True), (5.5, False)])
def test_a_disk_survives_when_its_radius_exceeds_twice_the_weight(weight, kept):
    """Clean disk of radius ρ = 10 with a cost gain of 1 per pixel: keeping it gains πρ² and costs
    λ·2πρ in boundary, so it survives iff ρ > 2λ, i.e. λ < 5 (the thresholding theorem makes the
    relaxation exact). On the grid the forward-difference TV overcharges the staircase of the
    digital circle a little, which shaves a few of its corner pixels: at least 95 % survive."""
    truth = _disk(radius=10.0)
    costs = np.stack([truth, 1 - truth]).astype(float)  # d_0 = 1 inside (region 1 is the disk)
    result = chan_vese.chan_vese_binary(costs, weight, tol=1e-4, max_num_iter=3000)
    area = int(backend.asnumpy(result.labels).sum())
    if kept:
        assert 0.95 * truth.sum() <= area <= truth.sum()
    else:
        assert area == 0


def test_multi_region_chan_vese_stays_on_the_simplex_and_recovers_three_regions(device, rng):
    truth = np.zeros((36, 36), dtype=np.int64)
    truth[:, 12:24], truth[:, 24:] = 1, 2
    truth[4:14, 4:10] = 2
    levels = np.array([0.0, 1.0, 2.0])
    noisy = levels[truth] + 0.5 * rng.standard_normal(truth.shape)
    result = chan_vese.chan_vese_multi(chan_vese.region_costs(noisy[None], levels[:, None]), 1.0, tol=1e-4,
                                       max_num_iter=3000)
    u = backend.asnumpy(result.u)
    assert u.shape == (3, 36, 36) and u.min() >= 0 and np.allclose(u.sum(axis=0), 1)
    assert result.converged and chan_vese.iou(result.labels, truth, match=False) >= 0.95


def _triple_junction(size=16, noise=0.8, seed=0):
    """Costs of three noisy sectors meeting at the centre, where the two relaxations differ."""
    x, y = np.meshgrid(np.arange(size) - size / 2 + 0.5, np.arange(size) - size / 2 + 0.5, indexing="ij")
    truth = ((np.arctan2(y, x) + np.pi) // (2 * np.pi / 3)).astype(np.int64) % 3
    levels = np.array([0.0, 1.0, 2.0])
    noisy = levels[truth] + noise * np.random.default_rng(seed).standard_normal(truth.shape)
    return chan_vese.region_costs(noisy[None], levels[:, None]), truth


def test_ccp_relaxation_is_a_tighter_lower_bound_than_zach():
    costs, truth = _triple_junction()
    xp = backend.xp

    def dual(result):  # Σ_x min_k (d_k - div p_k): a lower bound of the Potts minimum for a feasible p
        return float(xp.sum(xp.min(costs - optimize.divergence(result.p), axis=-3)))

    zach = chan_vese.chan_vese_multi(costs, 1.0, tol=0, max_num_iter=400)
    ccp = chan_vese.chan_vese_multi(costs, 1.0, tol=0, max_num_iter=400, relaxation="ccp")
    assert dual(ccp) > dual(zach) + 0.05  # the larger dual set: strictly tighter at the junction
    # Both bounds lie below the energy of CCP's own labelling (its relaxed energy at the one-hot u).
    # Anchored at the region of largest |∇u_k| per pixel, sup_{p ∈ K} Σ_k <∇u_k, p_k> <= λ Σ_{k≠a} |∇u_k|.
    onehot = (ccp.labels[None] == xp.arange(3).reshape(3, 1, 1)).astype(float)
    norms = xp.sqrt(xp.sum(optimize.gradient(onehot) ** 2, axis=0))
    energy = float(xp.sum(onehot * costs) + xp.sum(xp.sum(norms, axis=0) - xp.max(norms, axis=0)))
    assert dual(zach) <= dual(ccp) <= energy
    assert ccp.energy >= dual(ccp)  # weak duality with the upper bound the solver reports
    p = backend.asnumpy(ccp.p)  # feasible: every pair of dual vectors at most λ apart
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert np.sqrt(((p[:, i] - p[:, j]) ** 2).sum(axis=0)).max() <= 1.0 + 1e-12
    assert chan_vese.iou(ccp.labels, truth, match=False) >= 0.8


def test_ccp_refuses_a_problem_over_the_memory_budget(monkeypatch):
    costs = np.zeros((10, 64, 64))  # 45 pairs of regions: 45 Dykstra increments of the dual's size
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(40 * 8 * costs.size / 2**30))
    chan_vese.chan_vese_multi(costs, 1.0, max_num_iter=1)  # Zach's fits
    with pytest.raises(MemoryError, match="budget"):
        chan_vese.chan_vese_multi(costs, 1.0, max_num_iter=1, relaxation="ccp")


def test_chan_vese_is_the_same_on_every_device(device, on_cpu, rng):
    costs = rng.random((2, 3, 20, 20))
    result = chan_vese.chan_vese_multi(costs, 0.3, tol=0, max_num_iter=50)
    reference = on_cpu(chan_vese.chan_vese_multi, costs, 0.3, tol=0, max_num_iter=50)
    np.testing.assert_allclose(backend.asnumpy(result.u), reference.u, atol=1e-12)
    assert result.energy == pytest.approx(reference.energy, rel=1e-12)


@pytest.mark.parametrize("solver", [chan_vese.chan_vese_binary, chan_vese.chan_vese_multi,
                                    functools.partial(chan_vese.chan_vese_multi, relaxation="ccp")])
def test_chan_vese_copies_nothing_per_iteration(solver, no_copies_per_iteration, rng):
    costs = rng.random((2, 16, 16))
    no_copies_per_iteration(lambda n: solver(costs, 0.5, max_num_iter=n, tol=0, check_every=5))


def test_iou_matches_permuted_labels_and_counts_only_where_asked():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    assert chan_vese.iou(1 - truth, truth) == 1.0
    assert chan_vese.iou(1 - truth, truth, match=False) == 0.0
    labels = np.array([[0, 1, 1, 1], [0, 0, 1, 1]])  # one pixel wrong
    assert chan_vese.iou(labels, truth) == pytest.approx((3 / 4 + 4 / 5) / 2)
    where = np.ones_like(truth, dtype=bool)
    where[0, 1] = False
    assert chan_vese.iou(labels, truth, where=where) == 1.0
    per_image = chan_vese.iou(np.stack([labels, truth]), np.stack([truth, truth]), reduce="none")
    assert backend.asnumpy(per_image).tolist() == pytest.approx([(3 / 4 + 4 / 5) / 2, 1.0])


def test_features_and_convex_chan_vese_segment_synthetic_lattices():
    images = stm.synthetic_stm(96, num_images=2, num_regions=2, seed=3)
    maps = features.local_fourier_features(images.image, window=6.0, num_angles=8, smoothing=0)
    clusters = features.kmeans(maps, 2, seed=0)
    result = chan_vese.chan_vese(maps, clusters.means, 1.0, normalize=True)
    ordered = images.disorder < 0.5
    assert chan_vese.iou(result.labels, images.labels, where=ordered) >= 0.9


# ----------------------------------------------------------------------------- bad input
IMAGE = np.zeros((32, 32))
BAD_INPUT = [
    (stm.synthetic_stm, (8,), {}, "gpts"),
    (stm.synthetic_stm, (64,), {"num_images": 0}, "num_images"),
    (stm.synthetic_stm, (64,), {"num_regions": 1}, "num_regions"),
    (stm.synthetic_stm, (64,), {"lattices": ("graphene",)}, "lattices"),
    (stm.synthetic_stm, (64,), {"spacing": (0.5, 2.0)}, "spacing"),
    (stm.synthetic_stm, (64,), {"sampling": -1.0}, "sampling"),
    (stm.synthetic_stm, (64,), {"noise": -0.1}, "noise"),
    (stm.synthetic_stm, (64,), {"tip_blur": 100.0}, "tip_blur"),
    (stm.synthetic_stm, (64,), {"seed": -1}, "seed"),
    (stm.region_masks, (np.zeros((4, 4)), 2), {}, "labels"),
    (stm.region_masks, (np.zeros((4, 4), int), 0), {}, "num_regions"),
    (features.local_fourier_features, (IMAGE,), {"window": 10.0}, "window"),
    (features.local_fourier_features, (np.zeros(32),), {}, "image"),
    (features.local_fourier_features, (IMAGE,), {"frequencies": (0.1, 0.7)}, "frequencies"),
    (features.local_fourier_features, (IMAGE,), {"num_angles": 0}, "num_angles"),
    (features.local_fourier_features, (IMAGE,), {"rotation": "sorted"}, "rotation"),
    (features.fit_pca, (np.zeros((3, 4, 4)), 4), {}, "num_components"),
    (features.fit_pca, (np.zeros((3, 4, 4)), 2), {"per_image": "yes"}, "per_image"),
    (features.apply_pca, (np.zeros((2, 4, 4)), None), {}, "pca"),
    (features.kmeans, (np.zeros((2, 4, 4)), 0), {}, "num_clusters"),
    (features.kmeans, (np.zeros((2, 4, 4)), -3), {}, "num_clusters"),
    (features.kmeans, (np.zeros((2, 4, 4)), 2), {"max_num_iter": 0}, "max_num_iter"),
    (features.kmeans, (np.zeros((4, 4)), 2), {}, "features"),
    (chan_vese.region_costs, (np.zeros((3, 4, 4)), np.zeros((2, 2))), {}, "means"),
    (chan_vese.region_costs, (np.zeros((5, 3, 4, 4)), np.zeros((4, 2, 3))), {}, "means"),
    (chan_vese.region_costs, (np.zeros((3, 4, 4)), np.zeros((2, 3))), {"normalize": 1}, "normalize"),
    (chan_vese.region_costs, (np.zeros((3, 4, 4)), np.zeros((1, 3))), {"normalize": True}, "normalize"),
    (chan_vese.chan_vese_binary, (np.zeros((3, 4, 4)), 1.0), {}, "costs"),
    (chan_vese.chan_vese_binary, (np.zeros((2, 4, 4)), 0.0), {}, "weight"),
    (chan_vese.chan_vese_multi, (np.zeros((1, 4, 4)), 1.0), {}, "costs"),
    (chan_vese.chan_vese_multi, (np.zeros((3, 4, 4)), 1.0), {"tol": -1.0}, "tol"),
    (chan_vese.chan_vese_multi, (np.zeros((3, 4, 4)), 1.0), {"check_every": 0}, "check_every"),
    (chan_vese.chan_vese_multi, (np.zeros((3, 4, 4)), 1.0), {"relaxation": "potts"}, "relaxation"),
    (chan_vese.chan_vese_multi, (np.zeros((3, 4, 4)), 1.0), {"dykstra_sweeps": 0}, "dykstra_sweeps"),
    (chan_vese.iou, (np.zeros((4, 4), int), np.zeros((5, 4), int)), {}, "labels"),
    (chan_vese.iou, (np.zeros((4, 4)), np.zeros((4, 4), int)), {}, "labels"),
    (chan_vese.iou, (np.zeros((4, 4), int), np.zeros((4, 4), int)), {"where": np.ones((3, 4), bool)}, "where"),
    (chan_vese.iou, (np.zeros((4, 4), int), np.full((4, 4), 3)), {"num_regions": 2}, "num_regions"),
]


@pytest.mark.parametrize("function, args, kwargs, name", BAD_INPUT,
                         ids=[f"{f.__name__}-{name}" for f, _, _, name in BAD_INPUT])
def test_bad_input_is_refused_naming_the_parameter(function, args, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        function(*args, **kwargs)


def test_apply_pca_refuses_features_of_another_size():
    pca = features.fit_pca(np.random.default_rng(0).standard_normal((4, 8, 8)), 2)
    with pytest.raises(ValueError, match="channels"):
        features.apply_pca(np.zeros((5, 8, 8)), pca)


def test_feature_smoothing_is_a_gaussian_of_its_stated_width():
    """smoothing = s smooths the feature magnitudes by a Gaussian of s·window pixels: against SciPy's
    gaussian_filter of the unsmoothed features, away from the padded edges, to 5e-3 of the largest value."""
    image = np.random.default_rng(1).standard_normal((96, 96))
    kwargs = dict(window=3.0, num_radial=2, num_angles=4)
    raw = backend.asnumpy(features.local_fourier_features(image, smoothing=0, **kwargs))
    smooth = backend.asnumpy(features.local_fourier_features(image, smoothing=1.0, **kwargs))
    reference = ndimage.gaussian_filter(raw, sigma=(0, 3.0, 3.0), mode="reflect", truncate=6.0)
    core = (slice(None), slice(24, 72), slice(24, 72))
    assert np.abs(smooth[core] - reference[core]).max() < 5e-3 * np.abs(reference[core]).max()


def test_pca_scores_are_whitened_along_the_covariance_eigenvectors():
    """The variances are np.cov's leading eigenvalues and the first score has unit variance, as documented."""
    rng = np.random.default_rng(2)
    mix = rng.standard_normal((6, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])
    f = np.einsum("cd,dxy->cxy", mix, rng.standard_normal((6, 20, 24)))
    pca = features.fit_pca(f, 3)
    scores = backend.asnumpy(features.apply_pca(f, pca))
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(f.reshape(6, -1))))[::-1][:3]
    np.testing.assert_allclose(backend.asnumpy(pca.variance), eigenvalues, rtol=1e-10)
    assert scores[0].var(ddof=1) == pytest.approx(1.0, abs=1e-10)


def test_stm_smoothing_is_a_gaussian_of_sigma_pixels():
    """The tip blur and the boundary scale are standard deviations in pixels: a delta smoothed with σ = 3 has the
    periodic second moment σ² (the Gaussian's spectrum is exact; the wrap-around at 21σ is negligible)."""
    n, sigma = 128, 3.0
    delta = np.zeros((n, n))
    delta[0, 0] = 1.0
    smoothed = backend.asnumpy(stm._smooth(delta, sigma))
    distance = np.minimum(np.arange(n), n - np.arange(n)).astype(float)
    assert np.sum(smoothed.sum(axis=1) * distance**2) / smoothed.sum() == pytest.approx(sigma**2, rel=1e-6)


def test_stm_drift_grows_along_the_slow_scan_axis():
    """Axis 0 is the slow scan axis: with the noise off, switching the drift on barely changes the first rows
    (scanned first) and changes the first columns (scanned throughout the frame)."""
    kwargs = dict(num_images=1, num_regions=2, lattices="hexagonal", disorder_width=0.0, tip_blur=0.0,
                  line_noise=0.0, noise=0.0, seed=3)
    still = backend.asnumpy(stm.synthetic_stm(96, drift=0.0, **kwargs).image)[0]
    drifting = backend.asnumpy(stm.synthetic_stm(96, drift=6.0, **kwargs).image)[0]
    change = np.abs(still - drifting)
    assert change[:4].mean() < 0.25 * change[:, :4].mean()
