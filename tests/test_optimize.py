"""mbook.inverse.optimize: operators, proximal maps and solvers against closed-form solutions."""

import math

import numpy as np
import pytest

from mbook.core import backend
from mbook.inverse import optimize, solvers


def _step_image(n=16, height=1.0):
    image = np.zeros((n, n))
    image[n // 2:] = height
    return image


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_divergence_is_minus_the_adjoint_of_the_gradient(boundary, device, rng):
    u, p = rng.standard_normal((3, 9, 7)), rng.standard_normal((2, 3, 9, 7))
    lhs = np.vdot(backend.asnumpy(optimize.gradient(u, boundary=boundary)), p)
    rhs = -np.vdot(u, backend.asnumpy(optimize.divergence(p, boundary=boundary)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_gradient_of_a_linear_ramp_is_its_slope():
    u = np.add.outer(2.0 * np.arange(6), -0.5 * np.arange(5))
    g = optimize.gradient(u)
    assert np.all(g[0, :-1] == 2.0) and np.all(g[0, -1] == 0)  # Neumann: nothing across the edge
    assert np.all(g[1, :, :-1] == -0.5)


def test_operator_norm_of_the_periodic_gradient_is_sqrt8():
    # The periodic Laplacian of an even grid has the eigenvalue -8 (checkerboard) exactly.
    norm = solvers.operator_norm(lambda u: optimize.gradient(u, boundary="periodic"),
                                 lambda p: -optimize.divergence(p, boundary="periodic"), (16, 16),
                                 max_num_iter=2000, tol=1e-10, xp=np)
    assert norm == pytest.approx(math.sqrt(8), rel=1e-3)


def test_fourier_is_unitary(device, rng):
    x = rng.standard_normal((12, 10)) + 1j * rng.standard_normal((12, 10))
    assert np.linalg.norm(backend.asnumpy(optimize.fourier(x))) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(backend.asnumpy(optimize.inverse_fourier(optimize.fourier(x))), x, atol=1e-12)


def test_simplex_projection_satisfies_the_variational_inequality(device, rng):
    x = 2 * rng.standard_normal((6, 50))
    p = backend.asnumpy(optimize.project_simplex(x, axis=0))
    assert np.all(p >= 0) and np.allclose(p.sum(axis=0), 1)
    # p is the projection iff <x - p, q - p> <= 0 for every q in the simplex.
    for q in rng.dirichlet(np.ones(6), size=20):
        assert np.all(np.sum((x - p) * (q[:, None] - p), axis=0) <= 1e-12)


def test_soft_threshold_is_the_prox_of_the_absolute_value(device):
    t = np.linspace(-4, 4, 80001)
    for x in (-2.3, -0.2, 0.4, 3.1):
        brute = t[np.argmin(0.5 * (t - x) ** 2 + 0.7 * abs(t))]
        assert float(optimize.soft_threshold(np.array(x), 0.7)) == pytest.approx(brute, abs=2e-4)


def test_soft_threshold_keeps_zeros_of_single_precision(device):
    # a 0/0 guard of 1e-300 is 0 in float32: zeros came out as NaN
    for dtype in (np.float32, np.complex64):
        x = np.array([0.0, -0.5, 2.0], dtype)
        got = backend.asnumpy(optimize.soft_threshold(x, 1.0))
        assert got.dtype == dtype and np.array_equal(got, np.array([0.0, 0.0, 1.0], dtype))
    for dtype in (np.float16, np.float32, np.float64):  # no threshold: the identity, subnormal values included
        tiny = np.array([0.0, np.finfo(dtype).smallest_subnormal, np.finfo(dtype).tiny / 3], dtype)
        np.testing.assert_array_equal(backend.asnumpy(optimize.soft_threshold(tiny, 0.0)), tiny)


def test_ball_projection_and_shrinkage_split_the_vector(device, rng):
    p = rng.standard_normal((2, 40))
    projected = backend.asnumpy(optimize.project_ball(p, 0.5))
    assert np.all(np.hypot(*projected) <= 0.5 + 1e-12)
    small = 0.1 * p / np.hypot(*p)
    np.testing.assert_array_equal(backend.asnumpy(optimize.project_ball(small, 0.5)), small)
    np.testing.assert_allclose(projected + backend.asnumpy(optimize.shrink(p, 0.5)), p)


def test_rof_on_a_step_has_the_closed_form_solution(device):
    """Each half of a step moves by λ · (interface length) / (its area) = λ / (n/2)."""
    n, weight = 16, 0.8
    result = optimize.tv_denoise(_step_image(n), weight, tol=1e-7, max_num_iter=20000)
    gap = float(result.gaps[-1])
    assert result.converged and gap <= 1e-7
    exact = np.where(_step_image(n) > 0, 1 - weight / (n / 2), weight / (n / 2))
    # Strong convexity: ½‖u - u*‖² <= P(u) - P(u*) <= gap (absolute); the bound is tight
    # here (P is exactly quadratic along the error), so allow for rounding only.
    u = backend.asnumpy(result.x)
    primal = (0.5 * np.sum((u - _step_image(n)) ** 2)
              + weight * np.sum(np.hypot(*backend.asnumpy(optimize.gradient(u)))))
    assert 0.5 * np.sum((u - exact) ** 2) <= gap * primal * (1 + 1e-6)
    assert np.max(abs(u - exact)) < 2e-3


def test_rof_matches_a_long_run_reference_within_the_gap_bound(device, rng):
    f = rng.standard_normal((24, 24))
    reference = backend.asnumpy(optimize.tv_denoise(f, 0.4, tol=1e-10, max_num_iter=20000).x)
    result = optimize.tv_denoise(f, 0.4, tol=1e-4)
    assert result.converged and result.num_iter < 20000
    x = backend.asnumpy(result.x)
    primal = 0.5 * np.sum((x - f) ** 2) + 0.4 * np.sum(np.hypot(*backend.asnumpy(optimize.gradient(x))))
    assert 0.5 * np.sum((x - reference) ** 2) <= float(result.gaps[-1]) * primal * 1.001


def test_pdhg_without_objectives_runs_all_iterations():
    f = _step_image(8)
    result = solvers.pdhg(f, np.zeros((2, 8, 8)), K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p),
                          prox_g=lambda v, t: optimize.prox_squared_distance(v, f, t),
                          prox_fstar=lambda q, s: optimize.project_ball(q, 0.1), max_num_iter=37)
    assert result.num_iter == 37 and result.gaps.size == 0 and not result.converged


def test_accelerated_pdhg_follows_the_published_step_recurrence(device):
    """Algorithm 2 of Chambolle and Pock (2011) with K = 0: the dual does nothing, so the iterates have a closed
    form, x_N - f = (x_0 - f) ∏_{n<N} 1/(1 + τ_n) with τ_{n+1} = τ_n / sqrt(1 + 2 γ τ_n) (γ = 1); fixed steps
    would give (1 + τ_0)^-N instead."""
    f = np.random.default_rng(0).standard_normal(5)
    x0 = np.zeros(5)
    tau, factor = 0.35, 1.0
    for n in range(1, 6):
        factor /= 1 + tau
        tau /= math.sqrt(1 + 2 * tau)
        result = solvers.pdhg(x0, np.zeros(5), K=lambda x: 0 * x, K_adjoint=lambda y: 0 * y,
                              prox_g=lambda v, t: optimize.prox_squared_distance(v, f, t),
                              prox_fstar=lambda q, s: q, tau=0.35, sigma=0.35, gamma=1.0, max_num_iter=n)
        np.testing.assert_allclose(backend.asnumpy(result.x) - f, (x0 - f) * factor, rtol=0,
                                   atol=1e-14 * np.abs(f).max())


def test_pdhg_step_rule_from_the_operator_norm_converges(device):
    f = _step_image(8)
    result = solvers.pdhg(f, np.zeros((2, 8, 8)), K=optimize.gradient,
                          K_adjoint=lambda p: -optimize.divergence(p),
                          prox_g=lambda v, t: optimize.prox_squared_distance(v, f, t),
                          prox_fstar=lambda q, s: optimize.project_ball(q, 0.4), max_num_iter=3000)
    np.testing.assert_allclose(backend.asnumpy(result.x), np.where(f > 0, 0.9, 0.1), atol=1e-3)


@pytest.mark.parametrize("accelerate", [True, False])
def test_forward_backward_solves_an_orthogonal_lasso(accelerate, device, rng):
    """With A orthogonal, argmin ½‖Ax - b‖² + λ‖x‖₁ = soft(Aᵀb, λ)."""
    a, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    b = rng.standard_normal(30)
    matrix, target = backend.asarray(a), backend.asarray(b)  # grad_f computes on the device
    result = solvers.forward_backward(np.zeros(30), grad_f=lambda x: matrix.T @ (matrix @ x - target),
                                      prox_g=lambda v, s: optimize.soft_threshold(v, 0.5 * s), step=0.9,
                                      accelerate=accelerate, tol=1e-12)
    assert result.converged
    np.testing.assert_allclose(backend.asnumpy(result.x), backend.asnumpy(optimize.soft_threshold(a.T @ b, 0.5)),
                               atol=1e-9)


def test_projected_gradient_solves_nonnegative_least_squares(device, rng):
    a, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    b = rng.standard_normal(20)
    matrix, target = backend.asarray(a), backend.asarray(b)  # grad_f computes on the device
    result = solvers.projected_gradient(np.zeros(20), grad_f=lambda x: matrix.T @ (matrix @ x - target),
                                        project=lambda x: optimize.project_box(x, 0.0), step=1.0, tol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(result.x), np.maximum(a.T @ b, 0), atol=1e-9)


@pytest.mark.parametrize(
    "image, weight, match",
    [
        (np.full((8, 8), np.nan), 0.1, "non-finite"),
        (np.ones((8, 8)), 0.0, "weight must be a finite number > 0"),
        (np.ones((8, 8)), float("inf"), "weight must be a finite number > 0"),
        (np.ones(8), 0.1, "must be a 2D array"),
        (np.ones((8, 8), complex), 0.1, "must be real"),
    ],
)
def test_tv_denoise_refuses_bad_input(image, weight, match):
    with pytest.raises(ValueError, match=match):
        optimize.tv_denoise(image, weight)


def test_bad_boundary_and_iterations_are_refused():
    with pytest.raises(ValueError, match="boundary must be one of"):
        optimize.gradient(np.ones((4, 4)), boundary="mirror")
    with pytest.raises(ValueError, match="max_num_iter must be an integer >= 1"):
        optimize.tv_denoise(np.ones((4, 4)), 0.1, max_num_iter=0)


def test_tv_denoise_on_device_matches_cpu(device, rng, on_cpu):
    f = rng.standard_normal((32, 32))
    reference = on_cpu(lambda: optimize.tv_denoise(f, 0.3, tol=1e-6))
    result = optimize.tv_denoise(backend.asarray(f), 0.3, tol=1e-6)
    assert backend.get_array_module(result.x) is backend.xp
    assert backend.get_array_module(result.gaps) is backend.xp  # the history too
    np.testing.assert_allclose(backend.asnumpy(result.x), reference.x, atol=1e-5)
    assert result.num_iter == reference.num_iter and result.converged


def test_public_functions_given_numpy_return_arrays_on_the_device(device, rng):
    u = rng.standard_normal((9, 7))
    f = _step_image(8)
    results = [
        optimize.gradient(u), optimize.divergence(rng.standard_normal((2, 9, 7))), optimize.laplacian(u),
        optimize.fourier(u), optimize.inverse_fourier(u), optimize.apply_mask(u, u > 0),
        optimize.soft_threshold(u, 0.1), optimize.project_ball(rng.standard_normal((2, 9, 7)), 0.5),
        optimize.shrink(rng.standard_normal((2, 9, 7)), 0.5), optimize.project_box(u, 0.0),
        optimize.project_simplex(u), optimize.prox_squared_distance(u, u, 0.5),
        optimize.tv_denoise(u, 0.2, max_num_iter=20).x,
        solvers.pdhg(f, np.zeros((2, 8, 8)), K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p),
                     prox_g=lambda v, t: optimize.prox_squared_distance(v, f, t),
                     prox_fstar=lambda q, s: optimize.project_ball(q, 0.1), max_num_iter=5).x,
        solvers.forward_backward(u, grad_f=lambda x: x, prox_g=lambda v, s: v, step=0.5, max_num_iter=5).x,
    ]
    assert all(backend.get_array_module(r) is backend.xp for r in results)
    norm = solvers.operator_norm(optimize.gradient, lambda p: -optimize.divergence(p), (8, 8), max_num_iter=5)
    assert isinstance(norm, float)


def test_tol_zero_runs_every_iteration_and_tests_nothing(device, rng):
    f = rng.standard_normal((16, 16))
    result = optimize.tv_denoise(f, 0.3, tol=0, max_num_iter=37)
    assert result.num_iter == 37 and not result.converged
    assert result.gaps.shape == (4,)  # the gaps are still recorded at the checks (10, 20, 30, 37)
    assert np.all(np.diff(backend.asnumpy(result.gaps)) < 0)  # and they fall
    fb = solvers.forward_backward(np.ones(5), grad_f=lambda x: x, prox_g=lambda v, s: v, step=0.5, tol=0,
                                  accelerate=False, max_num_iter=23)
    assert fb.num_iter == 23 and not fb.converged
    # plain gradient steps on ½‖x‖²
    np.testing.assert_allclose(backend.asnumpy(fb.x), 0.5**23 * np.ones(5), rtol=1e-12)


def test_power_iteration_tested_every_check_stops_early():
    norm = solvers.operator_norm(lambda x: 3.0 * x, lambda y: 3.0 * y, (6, 5), tol=1e-9, max_num_iter=1000)
    assert norm == pytest.approx(3.0, rel=1e-12)


# --------------------------------------------------------------------------- no copies per iteration
def test_pdhg_copies_nothing_per_iteration(no_copies_per_iteration):
    f = _step_image(8)

    def run(n):  # the operator norm is estimated first (a fixed number of copies), then n iterations
        return solvers.pdhg(f, np.zeros((2, 8, 8)), K=optimize.gradient,
                            K_adjoint=lambda p: -optimize.divergence(p),
                            prox_g=lambda v, t: optimize.prox_squared_distance(v, f, t),
                            prox_fstar=lambda q, s: optimize.project_ball(q, 0.4), max_num_iter=n, tol=0)

    no_copies_per_iteration(run)


def test_tv_denoise_copies_nothing_per_iteration(no_copies_per_iteration, rng):
    f = rng.standard_normal((16, 16))
    no_copies_per_iteration(lambda n: optimize.tv_denoise(f, 0.3, max_num_iter=n, tol=0))


def test_tv_denoise_copies_one_number_per_check(host_copies, rng):
    f = rng.standard_normal((16, 16))
    few, many = (host_copies(lambda n=n: optimize.tv_denoise(f, 0.01, max_num_iter=n, tol=1e-12)) for n in (10, 30))
    assert many - few == 2  # checks at 20 and 30


@pytest.mark.parametrize("solver", ["forward_backward", "projected_gradient"])
def test_forward_backward_copies_nothing_per_iteration(solver, no_copies_per_iteration, rng):
    a, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    b = rng.standard_normal(30)

    def run(n):
        matrix, target = backend.asarray(a), backend.asarray(b)  # grad_f computes on the device
        grad_f = lambda x: matrix.T @ (matrix @ x - target)  # noqa: E731
        if solver == "forward_backward":
            return solvers.forward_backward(np.zeros(30), grad_f=grad_f, step=0.9, max_num_iter=n, tol=0,
                                            prox_g=lambda v, s: optimize.soft_threshold(v, 0.5 * s))
        return solvers.projected_gradient(np.zeros(30), grad_f=grad_f, step=0.9, max_num_iter=n, tol=0,
                                          project=lambda x: optimize.project_box(x, 0.0))

    no_copies_per_iteration(run)


def test_operator_norm_copies_nothing_per_iteration(no_copies_per_iteration):
    no_copies_per_iteration(lambda n: solvers.operator_norm(optimize.gradient, lambda p: -optimize.divergence(p),
                                                            (16, 16), max_num_iter=n, tol=0))


@pytest.mark.parametrize("name, value", [("tau", 0), ("tau", float("nan")), ("sigma", -1.0), ("theta", 1.5),
                                         ("gamma", 0.0), ("norm", float("inf")), ("x0", np.full(4, np.nan)),
                                         ("tau", np.array([1.0, 0.0, 1.0, 1.0]))])
def test_pdhg_refuses_bad_steps_and_starts_naming_them(name, value):
    kwargs = dict(K=lambda x: x, K_adjoint=lambda y: y, prox_g=lambda x, t: x, prox_fstar=lambda y, s: y,
                  tau=0.5, sigma=0.5, max_num_iter=3)
    start = {"x0": np.zeros(4), "y0": np.zeros(4)}
    (start if name in start else kwargs)[name] = value
    with pytest.raises(ValueError, match=name):
        solvers.pdhg(start["x0"], start["y0"], **kwargs)


def test_divergence_of_two_components_is_the_divergence_of_their_stack(rng, device):
    px, py = (backend.asarray(rng.standard_normal((3, 9, 7))) for _ in range(2))
    np.testing.assert_array_equal(backend.asnumpy(optimize.divergence_xy(px, py)),
                                  backend.asnumpy(optimize.divergence(backend.xp.stack([px, py]))))


def test_fista_follows_the_beck_teboulle_recurrence():
    """f = ½ xᵀ diag(a) x - bᵀx, g = 0, step 1: x_2 and x_4 against t_{k+1} = (1 + sqrt(1 + 4t_k²))/2 and
    y_{k+1} = x_k + ((t_k - 1)/t_{k+1})(x_k - x_{k-1}), written out here (x_2 is ISTA's: the first weight is 0)."""
    a, b = np.array([1.0, 0.1, 0.5]), np.array([1.0, 2.0, -1.0])
    x = y = np.zeros(3)
    t, expected = 1.0, []
    for _ in range(4):
        x_new = y - (a * y - b)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        expected.append(x.copy())
    for k in (2, 4):
        result = solvers.forward_backward(np.zeros(3), grad_f=lambda v: backend.asarray(a) * v - backend.asarray(b),
                                          prox_g=lambda v, step: v, step=1.0, tol=0, max_num_iter=k)
        np.testing.assert_allclose(backend.asnumpy(result.x), expected[k - 1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("given", [{}, {"tau": 0.05}, {"sigma": 0.05}])
def test_pdhg_default_steps_meet_the_convergence_condition(given):
    """Chambolle and Pock's condition τσ‖K‖² <= 1, for the steps pdhg hands its prox maps, with K = 3 I."""
    steps = {}

    def prox_g(v, tau):
        steps["tau"] = tau
        return v

    def prox_fstar(v, sigma):
        steps["sigma"] = sigma
        return v

    solvers.pdhg(np.ones(4), np.zeros(4), K=lambda x: 3 * x, K_adjoint=lambda y: 3 * y, prox_g=prox_g,
                 prox_fstar=prox_fstar, norm=3.0, tol=0, max_num_iter=1, **given)
    assert float(steps["tau"]) * float(steps["sigma"]) * 9.0 <= 1.0 + 1e-12


def test_weighted_prox_of_the_squared_distance_meets_its_optimality_condition(device):
    """argmin_z ½|z - x|² + (step w/2)|z - t|²: (z - x) + step w (z - t) = 0, with a weight other than one."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal(5), rng.standard_normal(5)
    z = backend.asnumpy(optimize.prox_squared_distance(x, t, 0.7, weight=3.0))
    np.testing.assert_allclose((z - x) + 0.7 * 3.0 * (z - t), 0, atol=1e-12)
