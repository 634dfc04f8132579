"""mbook.geometry: the sphere, SO(3) and SPD(n) as Riemannian manifolds, Fréchet means, low-rank approximation."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.geometry import lowrank, means, so3, spd, sphere

A = backend.asnumpy
NORTH = np.eye(4)[0]


def _skew(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def _clouds():
    """(name, base, points, tangent coordinates at base of other vectors) per manifold, on the selected device."""
    rng = np.random.default_rng(3)
    p = A(sphere.random_points(1, NORTH, scales=0.5, seed=1))[0]
    r = A(so3.random_rotations(1, seed=3))[0]
    s = A(spd.random_near(1, np.eye(3), scales=0.5, seed=5))[0]
    return [
        ("sphere", p, sphere.random_points(6, p, scales=0.7, seed=2), rng.standard_normal((6, 3))),
        ("so3", r, so3.random_rotations(6, seed=4), rng.standard_normal((6, 3))),
        ("spd", s, spd.random_near(6, s, scales=0.8, seed=6), rng.standard_normal((6, 6))),
    ]


MODULES = {"sphere": sphere, "so3": so3, "spd": spd}


def test_exp_inverts_log_and_distances_are_symmetric(device):
    for name, base, points, _ in _clouds():
        module = MODULES[name]
        v = module.log(base, points)
        np.testing.assert_allclose(A(module.exp(base, v)).reshape(A(points).shape), A(points), atol=1e-12,
                                   err_msg=name)
        d = A(module.distance(base, points))
        np.testing.assert_allclose(d, A(module.distance(points, base)), atol=1e-12, err_msg=name)
        # |log_p(q)| in the metric is the distance
        np.testing.assert_allclose(np.linalg.norm(A(module.to_coordinates(base, v)), axis=-1), d, rtol=1e-12,
                                   err_msg=name)
        assert backend.get_array_module(v) is backend.xp


def test_parallel_transport_is_an_isometry_and_carries_the_geodesic(device):
    for name, base, points, coordinates in _clouds():
        module = MODULES[name]
        v, w = module.log(base, points), module.from_coordinates(base, coordinates)
        tv, tw = module.transport(base, points, v), module.transport(base, points, w)
        # inner products at the targets (coordinates there are orthonormal) equal those at the base
        cv0, cw0 = A(module.to_coordinates(base, v)), coordinates
        for i, target in enumerate(A(points)):
            cv = A(module.to_coordinates(target, A(tv)[i]))
            cw = A(module.to_coordinates(target, A(tw)[i]))
            assert cv @ cw == pytest.approx(cv0[i] @ cw0[i], abs=1e-10), name
            assert cw @ cw == pytest.approx(cw0[i] @ cw0[i], rel=1e-10), name
        # the geodesic's velocity is transported into minus the log back
        np.testing.assert_allclose(A(tv), -A(module.log(points, base)), atol=1e-12, err_msg=name)


def test_the_jacobi_operator_is_the_differential_of_exp(device):
    """d exp_m(v)[δ] = Γ_{m→exp_m v}(J δ): central differences to 1e-7 (Jacobi fields of symmetric spaces)."""
    h, rng = 1e-5, np.random.default_rng(7)
    for name, base, points, _ in _clouds():
        module = MODULES[name]
        c = A(module.to_coordinates(base, module.log(base, points)))
        delta = rng.standard_normal(c.shape)
        plus = A(module.exp(base, module.from_coordinates(base, c + h * delta)))
        minus = A(module.exp(base, module.from_coordinates(base, c - h * delta)))
        numeric = (plus - minus) / (2 * h)
        jd = np.einsum("nij,nj->ni", A(module.jacobi_operator(base, c)), delta)
        target = A(module.exp(base, module.from_coordinates(base, c))).reshape(A(points).shape)
        moved = A(module.transport(np.broadcast_to(base, A(points).shape), target,
                                   module.from_coordinates(base, jd)))
        if name == "so3":  # body-frame vectors at the target: d/dt R(t) = R ω^
            moved = np.stack([t @ _skew(m) for t, m in zip(target, moved)])
        np.testing.assert_allclose(numeric.reshape(moved.shape), moved, atol=1e-7, err_msg=name)


def test_log_of_so3_is_accurate_near_pi():
    angles = np.array([np.pi - 1e-9, np.pi - 1e-4, np.pi - 1e-2, 1e-9, 0.0])
    axes = np.random.default_rng(1).standard_normal((5, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    v = A(so3.log(np.eye(3), so3.axis_rotations(axes, angles)))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), angles, atol=1e-7)
    np.testing.assert_allclose(np.abs(np.sum(v * axes, axis=1)), angles, atol=1e-7)


def test_the_karcher_gradient_matches_finite_differences(device):
    """grad f = -(1/N) Σ log_m(yᵢ) for f = (1/2N) Σ d(m, yᵢ)²: compare along exp_m(t ξ)."""
    h, rng = 1e-5, np.random.default_rng(11)
    for name, base, points, _ in _clouds():
        module = MODULES[name]
        grad = A(module.to_coordinates(base, means.gradient(points, base, name)))
        xi = rng.standard_normal(grad.shape)

        def f(t):
            m = A(module.exp(base, module.from_coordinates(base, t * xi))).reshape(np.shape(base))
            return 0.5 * float(np.mean(A(module.distance(m, points)) ** 2))

        assert (f(h) - f(-h)) / (2 * h) == pytest.approx(grad @ xi, abs=1e-8), name


def test_karcher_mean_of_symmetric_data_is_the_centre(device):
    """Points placed in ± pairs about a centre (exp_c(±v)) have that centre as their Fréchet mean."""
    rng = np.random.default_rng(5)
    for name, centre, _, _ in _clouds():
        module = MODULES[name]
        dim = {"sphere": 3, "so3": 3, "spd": 6}[name]
        c = 0.4 * rng.standard_normal((10, dim))
        points = A(module.exp(centre, module.from_coordinates(centre, np.concatenate([c, -c]))))
        start = A(module.exp(centre, module.from_coordinates(centre, 0.3 * rng.standard_normal(dim))))
        result = means.frechet_mean(points, name, initial=start.reshape(np.shape(centre)), tol=1e-12)
        assert result.converged, name
        assert float(module.distance(result.mean, centre).max()) < 1e-9, name
        assert backend.get_array_module(result.mean) is backend.xp


def test_frechet_mean_copies_nothing_per_iteration(no_copies_per_iteration):
    points = sphere.random_points(50, NORTH, scales=0.3, seed=1)
    no_copies_per_iteration(lambda n: means.frechet_mean(points, "sphere", max_num_iter=n, tol=0))


def test_results_agree_on_cpu_and_strict(device, on_cpu):
    points = spd.random_near(40, np.eye(3), scales=[1.0, 0.5, 0.3, 0.2, 0.1, 0.1], seed=4)
    run = lambda: lowrank.curvature_corrected(points, 2, manifold="spd")  # noqa: E731
    result, reference = run(), on_cpu(run)
    np.testing.assert_allclose(A(result.reconstruction), A(reference.reconstruction), rtol=1e-10, atol=1e-12)
    assert backend.get_array_module(result.reconstruction) is backend.xp


def test_tangent_pca_of_data_on_a_totally_geodesic_subsphere_is_exact():
    """Points on a great 2-sphere of S⁵ through the mean: rank-2 tangent PCA reconstructs them exactly."""
    y = sphere.random_points(60, np.eye(6)[0], scales=[0.8, 0.5, 0, 0, 0], seed=2)
    result = lowrank.tangent_pca(y, 2, manifold="sphere")
    assert result.error < 1e-20
    assert np.allclose(A(result.reconstruction), A(y), atol=1e-10)


def test_tangent_pca_is_euclidean_pca_of_the_logs_by_hand():
    """A hand check: the rank-1 basis is the leading eigenvector of Σ XᵢXᵢᵀ of the logs at the mean."""
    y = sphere.random_points(80, NORTH, scales=[0.6, 0.3, 0.1], seed=3)
    result = lowrank.tangent_pca(y, 1, manifold="sphere")
    x = A(sphere.to_coordinates(result.mean, sphere.log(result.mean, y)))
    w, v = np.linalg.eigh(x.T @ x)
    assert abs(v[:, -1] @ A(result.basis)[:, 0]) == pytest.approx(1, abs=1e-12)
    np.testing.assert_allclose(A(result.coefficients)[:, 0] ** 2 @ np.ones(80), w[-1], rtol=1e-10)


def test_curvature_correction_approaches_the_intrinsic_optimum_where_tangent_pca_does_not():
    """SPD(3), signal along one log-eigenvalue with spread 2.5: the tangent residual that couples the spread
    eigenvalue is stretched by sinh (negative curvature), which tangent PCA does not see."""
    y = spd.random_near(200, np.eye(3), scales=[2.5, 0.2, 0.05, 0.18, 0.05, 0.05], seed=2)
    pca = lowrank.tangent_pca(y, 2, manifold="spd")
    cc = lowrank.curvature_corrected(y, 2, manifold="spd", mean=pca.mean)
    best = lowrank.intrinsic_lowrank(y, 2, manifold="spd", mean=pca.mean)
    assert best.error <= cc.error <= 1.01 * best.error
    assert pca.error > 1.2 * best.error
    assert lowrank.intrinsic_error(y, cc.reconstruction, manifold="spd", mean=pca.mean) == pytest.approx(cc.error)


def test_weighted_lowrank_copies_nothing_per_iteration(no_copies_per_iteration):
    y = spd.random_near(30, np.eye(3), scales=0.5, seed=1)
    mean = means.frechet_mean(y, "spd").mean
    no_copies_per_iteration(lambda n: lowrank.curvature_corrected(y, 2, manifold="spd", mean=mean,
                                                                  max_num_iter=n, tol=0))


_P = A(sphere.random_points(5, NORTH, scales=0.2, seed=1))
_SPD = A(spd.random_near(5, np.eye(2), scales=0.2, seed=1))


@pytest.mark.parametrize("call, match", [
    (lambda: sphere.exp(2 * NORTH, np.zeros(4)), "base"),
    (lambda: sphere.log(NORTH, np.ones(4)), "points"),
    (lambda: sphere.distance(NORTH, np.array([1.0])), "b"),
    (lambda: sphere.exp(NORTH, np.ones(4)), "tangent"),
    (lambda: sphere.transport(NORTH, NORTH, np.ones(3)), "tangent"),
    (lambda: sphere.to_coordinates(_P, np.zeros(4)), "base"),
    (lambda: sphere.from_coordinates(NORTH, np.zeros(4)), "coordinates"),
    (lambda: sphere.jacobi_operator(NORTH, np.zeros(5)), "coordinates"),
    (lambda: sphere.random_points(0, NORTH), "n"),
    (lambda: sphere.random_points(3, NORTH, scales=2.0), "scales"),
    (lambda: sphere.random_points(3, NORTH, seed=-1), "seed"),
    (lambda: so3.random_near(2, np.eye(3), seed=1.5), "seed"),
    (lambda: spd.random_near(2, np.eye(2), seed="a"), "seed"),
    (lambda: so3.exp(np.diag([1.0, 1, -1]), np.zeros(3)), "rotations"),
    (lambda: so3.exp(np.eye(3) * 1.1, np.zeros(3)), "rotations"),
    (lambda: so3.exp(np.eye(3), np.zeros(2)), "tangent"),
    (lambda: so3.transport(np.eye(3), np.eye(3), np.zeros((2, 4))), "tangent"),
    (lambda: so3.random_near(2, np.eye(3), scales=[0.1, 0.2]), "scales"),
    (lambda: spd.exp(np.diag([1.0, -1.0]), np.zeros((2, 2))), "base"),
    (lambda: spd.log(np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]])), "points"),
    (lambda: spd.exp(np.eye(2), np.array([[0.0, 1.0], [0.0, 0.0]])), "tangent"),
    (lambda: spd.distance(np.eye(2), np.eye(3)), "b"),
    (lambda: spd.transport(np.eye(2), np.eye(2), np.zeros((3, 3))), "tangent"),
    (lambda: spd.from_coordinates(np.eye(2), np.zeros(4)), "coordinates"),
    (lambda: spd.jacobi_operator(_SPD, np.zeros(3)), "base"),
    (lambda: spd.random_near(2, np.eye(2), scales=[1.0]), "scales"),
    (lambda: means.frechet_mean(_P, "torus"), "manifold"),
    (lambda: means.frechet_mean(_P[0], "sphere"), "points"),
    (lambda: means.frechet_mean(_P, "sphere", step=2.5), "step"),
    (lambda: means.frechet_mean(_P, "sphere", max_num_iter=0), "max_num_iter"),
    (lambda: means.frechet_mean(_P, "sphere", tol=-1), "tol"),
    (lambda: means.frechet_mean(_P, "sphere", initial=np.eye(3)[0]), "initial"),
    (lambda: means.gradient(_P, 2 * NORTH, "sphere"), "base"),
    (lambda: lowrank.tangent_pca(_P, 4, manifold="sphere"), "rank"),
    (lambda: lowrank.tangent_pca(_P, 0, manifold="sphere"), "rank"),
    (lambda: lowrank.curvature_corrected(_SPD, 4, manifold="spd"), "rank"),
    (lambda: lowrank.curvature_corrected(_SPD, 1, manifold="spd", check_every=0), "check_every"),
    (lambda: lowrank.intrinsic_lowrank(_P, 1, manifold="sphere", inner_num_iter=0), "inner_num_iter"),
    (lambda: lowrank.tangent_pca(_P, 1, manifold="sphere", mean=2 * NORTH), "mean"),
    (lambda: lowrank.intrinsic_error(_P, _P[:3], manifold="sphere", mean=NORTH), "approximation"),
])
def test_bad_input_is_refused_with_the_parameter_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_random_near_spreads_in_the_body_frame(device):
    """R Exp(ω) with ω ~ N(0, diag(scales²)) in the body frame: log_R of the draws has the requested standard
    deviation per component (5 %: the standard error of a standard deviation over 20 000 draws is 0.5 %); drawn in
    the lab frame, Exp(ω) R, the anisotropic spread lands on other axes (0.12, 0.03, 0.27)."""
    base = backend.asnumpy(so3.axis_rotation([1.0, 2.0, 0.5], 1.3))
    scales = np.array([0.3, 0.02, 0.02])
    draws = so3.random_near(20000, base, scales=scales, seed=1)
    np.testing.assert_allclose(backend.asnumpy(so3.log(base, draws)).std(axis=0), scales, rtol=0.05)
