"""mbook.learning: the diagonal network's implicit bias, and the unrolled PDHG network's hand-written gradients."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.learning import implicit_bias as ib


# ----------------------------------------------------------------------------- implicit bias
def test_gradient_matches_finite_differences(rng):
    X, y = rng.standard_normal((12, 7)), rng.standard_normal(12)
    u, v = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    counts = [12, 9, 5]
    _, gu, gv = (backend.asnumpy(a) for a in ib.loss_and_gradient(u, v, X, y, num_samples=counts))
    eps = 1e-6
    for r in range(3):
        for j in range(7):
            for which, grad in ((0, gu), (1, gv)):
                plus, minus = [u.copy(), v.copy()], [u.copy(), v.copy()]
                plus[which][r, j] += eps
                minus[which][r, j] -= eps
                lp = backend.asnumpy(ib.loss_and_gradient(*plus, X, y, num_samples=counts)[0])[r]
                lm = backend.asnumpy(ib.loss_and_gradient(*minus, X, y, num_samples=counts)[0])[r]
                assert (lp - lm) / (2 * eps) == pytest.approx(grad[r, j], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_one_training_step_is_the_checked_gradient_step(device, batch_size):
    """train's fused steps (full batch and mini-batch) against -η times loss_and_gradient's gradient.

    Every row of X is the same, so every mini-batch's mean gradient is the full batch's: one step of either
    path is u0 - η ∂L/∂u exactly (up to rounding), with the gradient the finite-difference test checks."""
    X = np.tile(np.random.default_rng(0).standard_normal(7), (5, 1))
    y = np.full(5, 0.8)
    scale, eta = 0.6, 0.05
    u0 = np.full(7, scale)
    _, gu, gv = (backend.asnumpy(a) for a in ib.loss_and_gradient(u0, u0, X, y))
    run = ib.train(X, y, scale=scale, learning_rate=eta, num_steps=1, batch_size=batch_size)
    assert np.abs(eta * gu).max() > 0.05  # a step that a wrong factor would visibly change
    np.testing.assert_allclose(backend.asnumpy(run.u)[0], u0 - eta * gu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(run.v)[0], u0 - eta * gv, rtol=0, atol=1e-12)


def test_small_scale_recovers_the_sparse_vector_and_large_scale_the_minimum_norm_interpolant():
    data = ib.sparse_regression(40, 80, sparsity=3, noise=0.0, seed=3)
    scales = np.array([1e-4, 10.0])
    run = ib.train(data.X, data.y, scale=scales, learning_rate=ib.stable_learning_rate(data.X, scales, safety=0.5),
                   num_steps=6000)
    errors = backend.asnumpy(ib.relative_errors(run.w, data.w_true))
    w_l2 = ib.min_norm_interpolant(data.X, data.y)
    to_l2 = backend.asnumpy(ib.relative_errors(run.w, w_l2))
    assert errors[0] < 1e-2  # rich regime: exact recovery, up to the slow last coordinates
    assert to_l2[1] < 1e-3  # kernel regime: the minimum-ℓ2 interpolant ...
    assert ib.relative_error(w_l2, data.w_true) > 0.3  # ... which is far from w*


def test_sgd_interpolates_and_recovers_the_sparse_vector():
    data = ib.sparse_regression(40, 80, sparsity=3, noise=0.0, seed=4)
    lr = ib.stable_learning_rate(data.X, 1e-3, safety=0.25)
    run = ib.train(data.X, data.y, scale=1e-3, learning_rate=lr, num_steps=6000, batch_size=5, seed=2,
                   record_every=500)
    losses = backend.asnumpy(run.losses[:, 0])
    assert losses[-1] < 1e-4 * losses[0]
    assert ib.relative_error(run.w[0], data.w_true) < 2e-2


def test_min_norm_interpolant_interpolates_and_lies_in_the_row_space(rng):
    X, y = rng.standard_normal((6, 15)), rng.standard_normal(6)
    w = backend.asnumpy(ib.min_norm_interpolant(X, y))
    np.testing.assert_allclose(X @ w, y, atol=1e-10)
    coefficients = np.linalg.lstsq(X.T, w, rcond=None)[0]
    np.testing.assert_allclose(X.T @ coefficients, w, atol=1e-10)


def test_lasso_satisfies_its_optimality_conditions(rng):
    X, y = rng.standard_normal((30, 50)), rng.standard_normal(30)
    weights = [0.05, 0.2]
    w = backend.asnumpy(ib.lasso(X, y, weights, tol=1e-12, max_num_iter=20000))
    for lam, wi in zip(weights, w):
        correlation = X.T @ (y - X @ wi) / 30  # KKT: = λ sign(w) on the support, |.| <= λ off it
        support = np.abs(wi) > 1e-8
        assert support.any() and not support.all()
        np.testing.assert_allclose(correlation[support], lam * np.sign(wi[support]), atol=1e-6)
        assert np.all(np.abs(correlation[~support]) <= lam + 1e-6)


def test_training_on_device_matches_cpu(device, on_cpu):
    def run():
        data = ib.sparse_regression(20, 30, sparsity=2, noise=0.1, seed=0)
        return ib.train(data.X, data.y, scale=[1e-2, 1.0], learning_rate=[0.02, 0.01], num_steps=300,
                        batch_size=4, num_samples=[20, 15], seed=1)

    reference, result = on_cpu(run), run()
    assert backend.get_array_module(result.w) is backend.xp
    assert backend.get_array_module(result.losses) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result.w), reference.w, atol=1e-12)
    data = ib.sparse_regression(20, 30, sparsity=2, seed=0)
    assert backend.get_array_module(ib.lasso(data.X, data.y, 0.1)) is backend.xp
    assert backend.get_array_module(ib.min_norm_interpolant(data.X, data.y)) is backend.xp


@pytest.mark.parametrize("batch_size", [None, 4])
def test_training_copies_nothing_to_the_host_per_step(no_copies_per_iteration, batch_size):
    data = ib.sparse_regression(20, 30, sparsity=2, noise=0.1, seed=0)
    X, y = backend.asnumpy(data.X), backend.asnumpy(data.y)
    no_copies_per_iteration(lambda steps: ib.train(X, y, scale=0.1, learning_rate=0.01, num_steps=steps,
                                                   batch_size=batch_size, record_every=5))


X_GOOD, Y_GOOD = np.ones((4, 6)), np.ones(4)
TRAIN = dict(scale=0.1, learning_rate=0.01, num_steps=10)


@pytest.mark.parametrize("call, match", [
    (lambda: ib.sparse_regression(0, 10, sparsity=2), "num_samples"),
    (lambda: ib.sparse_regression(5, 10, sparsity=11), "sparsity"),
    (lambda: ib.sparse_regression(5, 10, sparsity=2, noise=-1.0), "noise"),
    (lambda: ib.train(X_GOOD, np.ones(5), **TRAIN), "same number of samples"),
    (lambda: ib.train(np.ones(4), Y_GOOD, **TRAIN), "X must be a 2D array"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **(TRAIN | {"scale": 0.0})), "scale"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **(TRAIN | {"learning_rate": -0.1})), "learning_rate"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **(TRAIN | {"learning_rate": [0.1, 0.2, 0.3]}),
                      scale=[0.1, 0.2]), "learning_rate|scale"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **(TRAIN | {"num_steps": 0})), "num_steps"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **TRAIN, batch_size=0), "batch_size"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **TRAIN, num_samples=5), "num_samples"),
    (lambda: ib.train(X_GOOD, Y_GOOD, **TRAIN, tol=-1.0), "tol"),
    (lambda: ib.loss_and_gradient(np.ones(5), np.ones(5), X_GOOD, Y_GOOD), "u and v"),
    (lambda: ib.model_weights(np.ones(3), np.ones(4)), "u and v"),
    (lambda: ib.lasso(X_GOOD, Y_GOOD, 0.0), "weight"),
    (lambda: ib.lasso(X_GOOD, np.ones(3), 0.1), "same number of samples"),
    (lambda: ib.min_norm_interpolant(X_GOOD, np.full(4, np.nan)), "y holds non-finite"),
    (lambda: ib.relative_error(np.ones(3), np.zeros(3)), "w_true"),
    (lambda: ib.relative_errors(np.ones((2, 3)), np.ones(4)), "same length"),
    (lambda: ib.stable_learning_rate(X_GOOD, -1.0), "scale"),
    (lambda: ib.stable_learning_rate(X_GOOD, 1.0, safety=2.0), "safety"),
    (lambda: ib.stable_learning_rate(X_GOOD, 1.0, batch_size=5), "batch_size"),
])
def test_implicit_bias_refuses_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------- unrolled PDHG
from mbook.learning import pdhg_baseline, unrolled  # noqa: E402


def _two_region_problem(n=4, size=16, noise=0.8, seed=0):
    """Feature maps of noisy half-planes at random angles: channel 0 = the signal, channel 1 = pure noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(size) - size / 2 + 0.5, np.arange(size) - size / 2 + 0.5, indexing="ij")
    angles = rng.uniform(0, 2 * np.pi, n)
    masks = (np.cos(angles)[:, None, None] * x + np.sin(angles)[:, None, None] * y > 0).astype(float)
    signal = 1 - 2 * masks + noise * rng.standard_normal(masks.shape)
    return np.stack([signal, rng.standard_normal(masks.shape)], axis=1), masks


def _perturbed_parameters(rng, channels=2, layers=5):
    p = unrolled.init_parameters(channels, layers, means=[[0.5, -0.2], [-0.3, 0.4]], weight=0.3)
    move = backend.asarray  # the parameters live on the selected device
    return unrolled.UnrolledParameters(
        p.filters + move(0.3 * rng.standard_normal(p.filters.shape)), p.bias + 0.1,
        p.log_tau + move(0.2 * rng.standard_normal(layers)), p.log_sigma + move(0.2 * rng.standard_normal(layers)),
        p.log_weight + move(0.3 * rng.standard_normal(layers)))


def test_unrolled_gradient_matches_finite_differences(rng):
    features, masks = rng.standard_normal((2, 2, 10, 9)), (rng.random((2, 10, 9)) > 0.5).astype(float)
    params = _perturbed_parameters(rng)
    _, gradient = unrolled.loss_and_gradient(features, masks, params)
    eps = 1e-6
    for i, name in enumerate(params._fields):
        direction = rng.standard_normal(np.shape(params[i]))
        plus, minus = list(params), list(params)
        step = backend.asarray(eps * direction)
        plus[i], minus[i] = params[i] + step, params[i] - step
        numeric = (float(unrolled.loss_and_gradient(features, masks, unrolled.UnrolledParameters(*plus))[0])
                   - float(unrolled.loss_and_gradient(features, masks, unrolled.UnrolledParameters(*minus))[0]))
        analytic = float(np.sum(backend.asnumpy(gradient[i]) * direction))
        assert numeric / (2 * eps) == pytest.approx(analytic, rel=1e-6, abs=1e-10), name


def test_unrolled_gradient_is_the_same_in_memory_budgeted_chunks(rng, monkeypatch):
    features, masks = rng.standard_normal((5, 2, 10, 9)), (rng.random((5, 10, 9)) > 0.5).astype(float)
    params = _perturbed_parameters(rng)
    whole = unrolled.loss_and_gradient(features, masks, params)
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(2.5 * 8 * 90 * (6 * 5 + 2 * 10 + 8) / 2**30))  # two images a chunk
    chunked = unrolled.loss_and_gradient(features, masks, params)
    assert float(chunked[0]) == pytest.approx(float(whole[0]), rel=1e-12)
    for a, b in zip(whole[1], chunked[1]):
        np.testing.assert_allclose(backend.asnumpy(b), backend.asnumpy(a), rtol=1e-10, atol=1e-14)


def test_network_with_tied_layers_is_pdhg(rng):
    features, _ = _two_region_problem(n=3, seed=1)
    params = unrolled.init_parameters(2, 60, centre=[-1.0, 0.0], weight=0.4)
    network = backend.asnumpy(unrolled.segment(features, params, soft=True))
    solver = backend.asnumpy(pdhg_baseline.pdhg_segment(unrolled.data_term(features, params), weight=0.4,
                                                        tau=0.35, sigma=0.35, max_num_iter=60).u)
    np.testing.assert_allclose(network, solver, atol=1e-12)


def test_total_variation_segments_what_thresholding_cannot():
    features, masks = _two_region_problem(n=4, size=24, noise=1.2, seed=2)
    params = unrolled.init_parameters(2, 1, centre=[1.0, 0.0])  # c = channel 0: negative on the foreground
    cost = unrolled.data_term(features, params)
    pixelwise = pdhg_baseline.intersection_over_union(cost < 0, masks)
    segmented = pdhg_baseline.pdhg_segment(cost, weight=1.0, max_num_iter=800).u
    assert pixelwise < 0.75
    assert pdhg_baseline.intersection_over_union(segmented, masks) > 0.9
    # The relaxation is nearly binary at the solution (Chan, Esedoglu and Nikolova 2006).
    assert float(backend.xp.mean((segmented > 0.05) & (segmented < 0.95))) < 0.05
    per_image = pdhg_baseline.pdhg_segment(cost, weight=[1.0, 1.0, 0.01, 1.0], max_num_iter=800).u
    np.testing.assert_allclose(backend.asnumpy(per_image[[0, 1, 3]]), backend.asnumpy(segmented[[0, 1, 3]]))


def test_pdhg_stops_at_the_gap_and_scaled_steps_converge_faster():
    features, masks = _two_region_problem(n=4, size=24, noise=1.2, seed=2)
    cost = unrolled.data_term(features, unrolled.init_parameters(2, 1, centre=[1.0, 0.0]))
    scaled = pdhg_baseline.pdhg_segment(cost, weight=3.0, max_num_iter=3000, tol=1e-5, check_every=20)
    equal = pdhg_baseline.pdhg_segment(cost, weight=3.0, tau=0.35, sigma=0.35, max_num_iter=3000, tol=1e-5,
                                       check_every=20)
    gaps = backend.asnumpy(scaled.gaps)
    assert scaled.converged and gaps[-1] <= 1e-5 and scaled.num_iter == 20 * len(gaps)
    assert gaps.min() >= -1e-12  # weak duality: D is a lower bound of the optimum, P an upper one
    assert not equal.converged or equal.num_iter > 1.5 * scaled.num_iter
    # Both reach the same segmentation: the equal-step run after all its iterations.
    assert int(backend.xp.sum((scaled.u > 0.5) != (equal.u > 0.5))) == 0
    assert pdhg_baseline.intersection_over_union(scaled.u, masks) > 0.95


def test_training_lowers_the_loss_and_raises_the_iou():
    features, masks = _two_region_problem(n=12, size=16, noise=1.2, seed=3)
    params = unrolled.init_parameters(2, 6, filter_size=3, centre=[0.1, 0.3], weight=0.05)
    before = float(unrolled.loss_and_gradient(features, masks, params)[0])
    result = unrolled.train(features, masks, params, num_steps=60, learning_rate=0.05, batch_size=6, seed=0,
                            show_progress=False)
    after = float(unrolled.loss_and_gradient(features, masks, result.params)[0])
    assert after < 0.7 * before
    assert (pdhg_baseline.intersection_over_union(unrolled.segment(features, result.params), masks)
            > pdhg_baseline.intersection_over_union(unrolled.segment(features, params), masks) + 0.05)


def test_first_adam_step_is_the_bias_corrected_sign_step(device):
    """With bias correction, Adam's first step from zero moments is -η g/(|g| + ε), whatever the gradient's scale.

    A batch of all three images is a permutation of them, and the mean loss does not depend on their order."""
    rng = np.random.default_rng(0)
    features, masks = rng.standard_normal((3, 2, 10, 9)), (rng.random((3, 10, 9)) > 0.5).astype(float)
    params = unrolled.init_parameters(2, 3, means=[[0.5, -0.2], [-0.3, 0.4]], weight=0.3)
    _, gradient = unrolled.loss_and_gradient(features, masks, params)
    eta = 0.01
    result = unrolled.train(features, masks, params, num_steps=1, learning_rate=eta, batch_size=3,
                            show_progress=False)
    for name, before, after, g in zip(params._fields, params, result.params, gradient):
        g = backend.asnumpy(g)
        expected = backend.asnumpy(before) - eta * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(backend.asnumpy(after), expected, rtol=0, atol=1e-12, err_msg=name)


def test_unrolled_on_device_matches_cpu(device, on_cpu):
    features, masks = _two_region_problem(n=4, size=12, seed=4)

    def run():
        params = unrolled.init_parameters(2, 4, centre=[-1.0, 0.0], weight=0.2)
        return unrolled.train(features, masks, params, num_steps=5, batch_size=2, show_progress=False)

    reference, result = on_cpu(run), run()
    assert backend.get_array_module(result.losses) is backend.xp
    assert all(backend.get_array_module(a) is backend.xp for a in result.params)
    for a, b in zip(reference.params, result.params):
        np.testing.assert_allclose(backend.asnumpy(b), a, atol=1e-12)
    params = result.params
    assert backend.get_array_module(unrolled.segment(features, params)) is backend.xp
    solved = pdhg_baseline.pdhg_segment(unrolled.data_term(features, params), weight=0.1, max_num_iter=3)
    assert backend.get_array_module(solved.u) is backend.xp
    assert backend.get_array_module(solved.gaps) is backend.xp


def test_unrolled_training_and_pdhg_copy_nothing_to_the_host_per_step(no_copies_per_iteration):
    features, masks = _two_region_problem(n=4, size=12, seed=5)
    params = unrolled.init_parameters(2, 3, centre=[-1.0, 0.0], weight=0.2)
    no_copies_per_iteration(lambda n: unrolled.train(features, masks, params, num_steps=n, batch_size=2,
                                                     show_progress=False))
    cost = backend.asnumpy(unrolled.data_term(features, params))
    no_copies_per_iteration(lambda n: pdhg_baseline.pdhg_segment(cost, weight=0.2, max_num_iter=n))
    no_copies_per_iteration(lambda n: pdhg_baseline.pdhg_segment(cost, weight=0.2, max_num_iter=n, tol=1e-30,
                                                                 check_every=n))


FEATURES, MASKS = np.zeros((2, 3, 8, 8)), np.zeros((2, 8, 8))
PARAMS = unrolled.init_parameters(3, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: unrolled.init_parameters(3, 0), "num_layers"),
    (lambda: unrolled.init_parameters(0, 2), "num_channels"),
    (lambda: unrolled.init_parameters(3, 2, filter_size=4), "filter_size"),
    (lambda: unrolled.init_parameters(3, 2, weight=0.0), "weight"),
    (lambda: unrolled.init_parameters(3, 2, tau=-1.0), "tau"),
    (lambda: unrolled.init_parameters(3, 2, means=np.zeros((2, 2))), "means"),
    (lambda: unrolled.init_parameters(3, 2, centre=np.zeros(2)), "centre"),
    (lambda: unrolled.segment(np.zeros((3, 8, 8)), PARAMS), "features"),
    (lambda: unrolled.segment(np.zeros((2, 2, 8, 8)), PARAMS), "channels"),
    (lambda: unrolled.segment(FEATURES, (1, 2, 3)), "params"),
    (lambda: unrolled.data_term(FEATURES, PARAMS._replace(bias=np.zeros(2))), "params.bias"),
    (lambda: unrolled.loss_and_gradient(FEATURES, np.zeros((2, 8, 7)), PARAMS), "masks"),
    (lambda: unrolled.loss_and_gradient(FEATURES, np.full((2, 8, 8), 0.5), PARAMS), "masks"),
    (lambda: unrolled.train(FEATURES, MASKS, PARAMS, num_steps=5, learning_rate=0.0), "learning_rate"),
    (lambda: unrolled.train(FEATURES, MASKS, PARAMS, num_steps=0), "num_steps"),
    (lambda: unrolled.train(FEATURES, MASKS, PARAMS, num_steps=5, batch_size=3), "batch_size"),
    (lambda: unrolled.train(FEATURES, MASKS, PARAMS, num_steps=5, batch_size=2, betas=(0.9, 1.0)), "betas"),
])
def test_unrolled_refuses_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=0.0), "weight"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=[0.1, 0.2, 0.3]), "weight"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=0.1, tau=1.0, sigma=1.0), "tau \\* sigma"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros(8), weight=0.1), "cost"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=0.1, tau=0.3), "tau and sigma"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=0.1, tol=-1.0), "tol"),
    (lambda: pdhg_baseline.pdhg_segment(np.zeros((2, 8, 8)), weight=0.1, check_every=0), "check_every"),
    (lambda: pdhg_baseline.intersection_over_union(np.zeros((8, 8)), np.zeros((8, 7))), "same shape"),
])
def test_pdhg_baseline_refuses_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_training_in_memory_budgeted_chunks_of_runs_gives_the_same_result(monkeypatch):
    data = ib.sparse_regression(20, 30, sparsity=2, noise=0.1, seed=0)
    kwargs = dict(scale=[1e-2, 0.1, 1.0], learning_rate=0.01, num_steps=50, batch_size=4, seed=3)
    whole = ib.train(data.X, data.y, **kwargs)
    per_run = 8 * (6 * 30 + 2 * 20 + 4 * 32 + 256 * 4 + 32 * 4 * 31 + 50 // 10)  # 32 steps' rows of X and y
    monkeypatch.setenv("MBOOK_MEMORY_GB", str((8 * 20 * 31 + 1.5 * per_run) / 2**30))  # one run a chunk
    chunked = ib.train(data.X, data.y, **kwargs)
    np.testing.assert_allclose(backend.asnumpy(chunked.w), backend.asnumpy(whole.w), rtol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(chunked.losses), backend.asnumpy(whole.losses), rtol=1e-12)


def test_sgd_step_accounts_for_the_curvature_of_mini_batches():
    data = ib.sparse_regression(40, 200, sparsity=3, seed=6)
    full = ib.stable_learning_rate(data.X, 10.0)[0]
    sgd = ib.stable_learning_rate(data.X, 10.0, batch_size=4)[0]
    assert sgd < full / 3  # (1 + sqrt(50))² ≈ 63 against (1 + sqrt(5))² ≈ 10.5
    # At the edge of stability (safety 1): the mini-batch step converges, the full-batch one blows up.
    run = ib.train(data.X, data.y, scale=10.0, learning_rate=4 * sgd, num_steps=3000, batch_size=4, seed=1)
    assert np.isfinite(backend.asnumpy(run.losses)).all() and float(run.losses[-1, 0]) < 1e-6
    with np.errstate(all="ignore"):
        run = ib.train(data.X, data.y, scale=10.0, learning_rate=4 * full, num_steps=3000, batch_size=4, seed=1)
    assert not float(run.losses[-1, 0]) < 1e-6


def test_a_run_with_fewer_samples_sees_only_its_first_rows():
    """num_samples = m: the loss is ½ mean over the first m rows; SGD never draws a later row (poisoned rows of
    1e3 would blow the weights up)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 4)), rng.standard_normal(10)
    u, v = rng.standard_normal(4), rng.standard_normal(4)
    loss = float(backend.asnumpy(ib.loss_and_gradient(u, v, X, y, num_samples=6)[0]))
    assert loss == pytest.approx(0.5 * np.mean((X[:6] @ (u * u - v * v) - y[:6]) ** 2), rel=1e-12)
    X, y = rng.standard_normal((12, 5)), rng.standard_normal(12)
    X[6:], y[6:] = 1e3, -1e3
    w = backend.asnumpy(ib.train(X, y, num_samples=6, scale=0.1, learning_rate=1e-3, num_steps=50, batch_size=2,
                                 seed=3).w)
    assert np.isfinite(w).all() and np.abs(w).max() < 10


def test_unrolled_data_term_of_the_class_means_and_of_a_uniform_image():
    """With means μ₀, μ₁ and a 1 x 1 identity filter the data term is |f - μ₁|² - |f - μ₀|² (positive where f is
    nearer μ₀); a 3 x 3 mean filter of a uniform image is uniform, with no border from the padding."""
    rng = np.random.default_rng(0)
    f, means = rng.random((2, 3, 6, 6)), rng.random((2, 3))
    cost = backend.asnumpy(unrolled.data_term(f, unrolled.init_parameters(3, 2, filter_size=1, means=means)))
    expected = (((f - means[1][None, :, None, None]) ** 2).sum(1) - ((f - means[0][None, :, None, None]) ** 2).sum(1))
    np.testing.assert_allclose(cost, expected, atol=1e-12)
    params = unrolled.init_parameters(1, 2, filter_size=3)
    params = params._replace(filters=backend.asarray(np.full((1, 3, 3), 1 / 9)))
    np.testing.assert_allclose(backend.asnumpy(unrolled.data_term(np.full((1, 1, 8, 8), 2.0), params)), 2.0,
                               atol=1e-12)


def test_pdhg_segment_defaults_are_its_documented_steps_and_iou_averages_both_classes():
    """The default steps are τ = 0.35/λ, σ = 0.35λ (τσ‖∇‖² = 0.98 <= 1); the IoU is the mean of the foreground's
    (4/8) and the background's (8/12)."""
    cost = np.random.default_rng(0).standard_normal((16, 16))
    default = pdhg_baseline.pdhg_segment(cost, weight=0.8, max_num_iter=30)
    explicit = pdhg_baseline.pdhg_segment(cost, weight=0.8, tau=0.35 / 0.8, sigma=0.35 * 0.8, max_num_iter=30)
    np.testing.assert_allclose(backend.asnumpy(default.u), backend.asnumpy(explicit.u), atol=1e-12)
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    segmentation = np.zeros((4, 4), bool)
    segmentation[:, :1] = True
    assert pdhg_baseline.intersection_over_union(segmentation, mask) == pytest.approx(0.5 * (4 / 8 + 8 / 12))
