"""mbook.inverse.cdi and mbook.inverse.lifting: CDI algorithms and total variation on the circle S¹."""

import math

import numpy as np
import pytest

from mbook.core import backend
from mbook.inverse import cdi, circle, lifting, optimize, solvers, synthetic


@pytest.fixture(scope="module")
def weak_object():
    """The object and its support as NumPy arrays, whatever device the first test selected."""
    return tuple(backend.asnumpy(a) for a in synthetic.weak_phase_object((48, 48), max_phase=0.3, seed=2))


def _noisy(phase, sigma, seed):
    """``phase`` (on the device) plus Gaussian noise drawn on the host and moved there, wrapped."""
    return circle.wrap(phase + backend.asarray(sigma * np.random.default_rng(seed).standard_normal(phase.shape)))


# --------------------------------------------------------------------------- CDI
def test_intensity_obeys_parseval(device, weak_object):
    obj, _ = weak_object
    assert float(cdi.diffraction_intensity(obj).sum()) == pytest.approx(obj.size * np.sum(abs(obj) ** 2), rel=1e-12)


@pytest.mark.parametrize("method", ["hio", "raar"])
def test_hio_and_raar_recover_a_weak_phase_object_from_exact_data(method, weak_object):
    obj, support = weak_object
    result = cdi.retrieve_phase(cdi.diffraction_intensity(obj), support, method=method,
                                  max_num_iter=400, seed=1)
    assert cdi.phase_error(result.obj, obj, support) < 1e-3  # rad, for a 0.3 rad object
    assert result.errors[-1] < 1e-3


def test_error_reduction_stagnates_where_raar_converges(weak_object):
    obj, support = weak_object
    intensity = cdi.diffraction_intensity(obj)
    er = cdi.retrieve_phase(intensity, support, method="er", max_num_iter=400, seed=1)
    raar = cdi.retrieve_phase(intensity, support, method="raar", max_num_iter=400, seed=1)
    assert cdi.phase_error(er.obj, obj, support) > 10 * cdi.phase_error(raar.obj, obj, support)


def test_phase_error_grows_as_the_dose_falls(weak_object):
    obj, support = weak_object
    intensity = cdi.diffraction_intensity(obj)
    errors = []
    for dose in (1e8, 1e6, 1e4):
        counts = synthetic.poisson_noise(intensity, dose=dose / intensity.sum(), seed=4)
        result = cdi.retrieve_phase(counts, support, method="raar", max_num_iter=300, seed=1)
        errors.append(cdi.phase_error(result.obj, obj, support))
    assert errors[0] < errors[1] < errors[2]
    # Poisson noise: the error scales like dose^(-1/2), a factor ~10 per 100x in dose.
    assert 3 < errors[1] / errors[0] < 30


@pytest.mark.parametrize("method", ["er", "hio", "raar"])
def test_a_stack_of_patterns_is_the_patterns_one_at_a_time(device, method, weak_object):
    # Noise draws at three doses retrieved at once: each equals its own call with its own seed,
    # whether the stack runs whole or in batches of one pattern under a small budget.
    obj, support = weak_object
    intensity = backend.asnumpy(cdi.diffraction_intensity(obj))
    stack = np.stack([backend.asnumpy(synthetic.poisson_noise(intensity, dose=dose / intensity.sum(), seed=k))
                      for k, dose in enumerate((1e5, 1e6, 1e7))])
    alone = [cdi.retrieve_phase(pattern, support, method=method, max_num_iter=30, seed=7 + k)
             for k, pattern in enumerate(stack)]
    for result in (cdi.retrieve_phase(stack, support, method=method, max_num_iter=30, seed=7),
                   cdi.retrieve_phase(stack, support, method=method, max_num_iter=30, seed=[7, 8, 9],
                                      budget=support.size + 16 * support.size * 8)):
        assert result.obj.shape == (3,) + support.shape and result.errors.shape == (3, 30)
        assert backend.get_array_module(result.obj) is backend.xp
        for k, single in enumerate(alone):
            np.testing.assert_allclose(backend.asnumpy(result.obj[k]), backend.asnumpy(single.obj), rtol=0,
                                       atol=1e-12 * float(np.abs(backend.asnumpy(single.obj)).max()))
            np.testing.assert_allclose(backend.asnumpy(result.errors[k]), backend.asnumpy(single.errors),
                                       rtol=1e-10)


def test_a_stack_refuses_a_prior_and_a_wrong_number_of_seeds(weak_object):
    obj, support = weak_object
    stack = np.stack(2 * [backend.asnumpy(cdi.diffraction_intensity(obj))])
    with pytest.raises(ValueError, match="a prior takes one pattern"):
        cdi.retrieve_phase(stack, support, prior=cdi.phase_prior(0.1))
    with pytest.raises(ValueError, match="2 ints"):
        cdi.retrieve_phase(stack, support, seed=[1, 2, 3])


def test_alignment_removes_shift_global_phase_and_twin(device, weak_object):
    obj, support = weak_object
    ambiguous = np.roll(backend.asnumpy(cdi.twin(obj)), (3, -2), axis=(0, 1)) * np.exp(1.1j)
    np.testing.assert_allclose(backend.asnumpy(cdi.align_to_reference(ambiguous, obj)), obj, atol=1e-12)
    assert np.allclose(abs(np.fft.fft2(ambiguous)), abs(np.fft.fft2(obj)))


def test_a_prior_is_applied_inside_the_support(device, weak_object):
    obj, support = weak_object
    counts = synthetic.poisson_noise(cdi.diffraction_intensity(obj), dose=1e-3, seed=0)
    plain = cdi.retrieve_phase(counts, support, max_num_iter=50, seed=1)
    smooth = cdi.retrieve_phase(counts, support, max_num_iter=50, seed=1,
                                  prior=cdi.phase_prior(0.5, kind="tv-s1"))
    tv = [circle.total_variation_s1(np.angle(backend.asnumpy(r.obj)) * support) for r in (plain, smooth)]
    assert tv[1] < 0.7 * tv[0]
    assert np.all(backend.asnumpy(smooth.obj)[~support] == 0)


@pytest.mark.parametrize(
    "intensity, support, match",
    [
        (np.ones((16, 16)), np.zeros((16, 16), bool), "support is empty"),
        (np.ones((16, 16)), np.ones((16, 16), bool), "oversampling ratio 1.00 is below 2"),
        (-np.ones((16, 16)), np.eye(16, dtype=bool), "intensity must be >= 0"),
        (np.full((16, 16), np.nan), np.eye(16, dtype=bool), "non-finite"),
        (np.ones((16, 16)), np.eye(8, dtype=bool), "support shape"),
        (np.ones((16, 16)), 2 * np.eye(16), "support must be boolean"),
    ],
)
def test_bad_cdi_data_is_refused(intensity, support, match):
    with pytest.raises(ValueError, match=match):
        cdi.retrieve_phase(intensity, support)


def test_bad_cdi_options_are_refused():
    support = np.eye(16, dtype=bool)
    with pytest.raises(ValueError, match="method must be one of"):
        cdi.retrieve_phase(np.ones((16, 16)), support, method="gs")
    with pytest.raises(ValueError, match="beta must be a finite number > 0 and < 1"):
        cdi.retrieve_phase(np.ones((16, 16)), support, beta=1.5)


# --------------------------------------------------------------------------- TV on S¹
def test_two_way_shrinkage_is_the_prox_of_the_wrapped_absolute_value(device, rng, on_cpu):
    """S(d) = argmin_t ½(t - d)² + τ|W(t)| for 0 < τ < π, by brute force."""
    t = np.linspace(-12, 12, 240001)
    for d, tau in zip(rng.uniform(-9, 9, 25), rng.uniform(0.05, 3.0, 25)):
        objective = 0.5 * (t - d) ** 2 + tau * abs(on_cpu(circle.wrap, t))
        brute = t[np.argmin(objective)]
        assert float(circle.two_way_shrinkage(np.array(d), tau)) == pytest.approx(brute, abs=2e-4)


def test_two_way_shrinkage_moves_either_way_round_the_circle(device):
    d = np.array([0.5, 2 * math.pi - 0.5, -2 * math.pi + 0.3, 3.0, 3.3])
    out = backend.asnumpy(circle.two_way_shrinkage(d, 0.2))
    # 3.0 is nearer 0 than 2π and shrinks down; 3.3 is nearer 2π and grows towards it.
    np.testing.assert_allclose(out, [0.3, 2 * math.pi - 0.3, -2 * math.pi + 0.1, 2.8, 3.5])
    np.testing.assert_allclose(backend.asnumpy(circle.two_way_shrinkage(d + 2 * math.pi, 0.2)), out + 2 * math.pi)


def test_isotropic_two_way_shrinkage_is_the_prox_in_2d(device, on_cpu):
    grid = np.linspace(-math.pi, math.pi, 1257)
    for d, tau in (((0.9, 6.0), 0.4), ((-2.9, 3.0), 0.25), ((7.0, -0.2), 1.0)):
        tx, ty = np.meshgrid(d[0] + grid, d[1] + grid, indexing="ij")
        objective = (0.5 * ((tx - d[0]) ** 2 + (ty - d[1]) ** 2)
                     + tau * np.hypot(on_cpu(circle.wrap, tx), on_cpu(circle.wrap, ty)))
        k = np.unravel_index(np.argmin(objective), objective.shape)
        out = backend.asnumpy(circle.two_way_shrinkage(np.array(d, float), tau, axis=0))
        np.testing.assert_allclose(out, (tx[k], ty[k]), atol=6e-3)


def test_backward_euler_then_projection_is_the_prox_on_the_circle(rng):
    """For the chordal data term, projecting the planar BE solution onto S¹ is exact."""
    theta = np.linspace(-math.pi, math.pi, 200001)
    for z_tilde, f, step in zip(np.exp(1j * rng.uniform(-3, 3, 10)), np.exp(1j * rng.uniform(-3, 3, 10)),
                                rng.uniform(0.1, 3, 10)):
        z = np.exp(1j * theta)
        brute = theta[np.argmin(0.5 * abs(z - z_tilde) ** 2 + 0.5 * step * abs(z - f) ** 2)]
        planar = (z_tilde + step * f) / (1 + step)
        assert float(circle.wrap(np.angle(planar) - brute)) == pytest.approx(0, abs=1e-4)


def test_ordinary_tv_mode_matches_rof(device, rng):
    f = rng.standard_normal((24, 24))
    ours = circle.tv_s1_denoise(f, 0.3, cyclic=False, tol=1e-9, max_num_iter=5000)
    rof = optimize.tv_denoise(f, 0.3, tol=1e-8, max_num_iter=20000)
    np.testing.assert_allclose(backend.asnumpy(ours.phase), backend.asnumpy(rof.x), atol=2e-3)


def test_tv_s1_is_invariant_under_rotation_of_the_circle_and_tv_is_not(device):
    w = synthetic.wrapped_phase_object((32, 32), diameter=None, seed=1)
    noisy = _noisy(w.phase, 0.3, seed=0)
    shifted = circle.wrap(noisy + 1.3)
    for cyclic, bound in ((True, 1e-6), (False, None)):
        a = circle.tv_s1_denoise(noisy, 0.5, cyclic=cyclic, max_num_iter=200).phase
        b = circle.tv_s1_denoise(shifted, 0.5, cyclic=cyclic, max_num_iter=200).phase
        deviation = np.max(abs(backend.asnumpy(circle.wrap(b - a - 1.3))))
        assert deviation < bound if cyclic else deviation > 0.5


@pytest.mark.parametrize("solver", ["approach 1", "lifting"])
def test_a_jump_across_the_wrap_is_a_short_arc_on_s1(solver, device):
    """-3 rad and +3 rad are 0.28 rad apart on S¹: TV-S¹ merges them at ±π; ordinary TV keeps 5.5 rad."""
    phi = np.full((16, 16), -3.0)
    phi[8:] = 3.0
    if solver == "lifting":
        out = lifting.tv_s1_lifting(phi, 2.0, num_labels=16, tol=1e-4).phase
    else:
        out = circle.tv_s1_denoise(phi, 2.0).phase
    assert np.max(abs(backend.asnumpy(circle.wrap(out - math.pi)))) < 0.05
    ordinary = backend.asnumpy(circle.tv_s1_denoise(phi, 2.0, cyclic=False).phase)
    np.testing.assert_allclose(ordinary, np.where(phi > 0, 2.75, -2.75), atol=1e-2)


def test_tv_s1_beats_ordinary_tv_on_a_wrapped_object(device):
    w = synthetic.wrapped_phase_object((48, 48), diameter=None, seed=0)
    noisy = _noisy(w.phase, 0.5, seed=1)

    def error(estimate):
        return np.sqrt(np.mean(backend.asnumpy(circle.wrap(estimate - w.phase)) ** 2))

    s1 = error(circle.tv_s1_denoise(noisy, 0.6).phase)
    tv = error(circle.tv_s1_denoise(noisy, 0.6, cyclic=False).phase)
    assert s1 < 0.5 * error(noisy) and tv > 3 * s1


def test_lifting_converges_by_gap_to_the_energy_of_approach_1_with_more_memory(device):
    w = synthetic.wrapped_phase_object((32, 32), diameter=None, seed=0)
    noisy = _noisy(w.phase, 0.5, seed=1)
    one = circle.tv_s1_denoise(noisy, 0.6)
    two = lifting.tv_s1_lifting(noisy, 0.6, num_labels=16, tol=1e-3)
    assert two.converged and one.converged
    assert abs(two.energy / one.energy - 1) < 0.05  # labels cost a few per cent of energy
    assert two.iterate_bytes > 8 * one.iterate_bytes


def test_lifted_operator_norm_fits_the_diagonal_steps(device):
    """Pock-Chambolle steps: ‖Σ^½ K T^½‖ <= 1 for the lifted K."""
    L, shape = 8, (10, 9)
    tau = np.array([1 / 6] * (L - 1) + [1 / L] * 2)[:, None, None]
    sigma = np.array([0.5, 1 / 3, 1 / 3])[None, :, None, None]
    root_tau, root_sigma = backend.asarray(np.sqrt(tau)), backend.asarray(np.sqrt(sigma))  # used on the device
    norm = solvers.operator_norm(lambda x: root_sigma * lifting.lift_apply(root_tau * x, L),
                                 lambda y: root_tau * lifting.lift_adjoint(root_sigma * y, L),
                                 (L + 1,) + shape, max_num_iter=500)
    assert norm <= 1 + 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": 0.0}, "weight must be a finite number > 0"),
        ({"data_weight": -np.ones((8, 8))}, "data_weight must be >= 0"),
        ({"data_weight": np.ones((4, 4))}, "data_weight must be >= 0 with the shape"),
    ],
)
def test_tv_s1_refuses_bad_input(kwargs, match):
    args = {"weight": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        circle.tv_s1_denoise(np.zeros((8, 8)), args.pop("weight"), **args)
    with pytest.raises(ValueError, match="non-finite"):
        circle.tv_s1_denoise(np.full((8, 8), np.inf), 0.5)
    with pytest.raises(ValueError, match="num_labels must be >= 4"):
        lifting.tv_s1_lifting(np.zeros((8, 8)), 0.5, num_labels=3)


def test_tv_s1_on_device_matches_cpu(device, on_cpu):
    reference = on_cpu(lambda: circle.tv_s1_denoise(
        synthetic.wrapped_phase_object((32, 32), diameter=None, seed=3).phase, 0.4, max_num_iter=50))
    w = synthetic.wrapped_phase_object((32, 32), diameter=None, seed=3)
    result = circle.tv_s1_denoise(w.phase, 0.4, max_num_iter=50)
    assert backend.get_array_module(result.phase) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result.phase), reference.phase, atol=1e-5)
    assert result.energy == pytest.approx(reference.energy, rel=1e-9) and isinstance(result.energy, float)


def test_lifting_on_device_matches_cpu(device, on_cpu):
    phi = np.where(np.arange(12)[:, None] < 6, -3.0, 3.0) * np.ones((12, 10))
    reference = on_cpu(lambda: lifting.tv_s1_lifting(phi, 1.0, num_labels=8, max_num_iter=60))
    result = lifting.tv_s1_lifting(phi, 1.0, num_labels=8, max_num_iter=60)
    assert backend.get_array_module(result.phase) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result.phase), reference.phase, atol=1e-7)
    assert result.num_iter == reference.num_iter


def test_phase_retrieval_on_device_matches_cpu(device, weak_object, on_cpu):
    obj, support = weak_object

    def run():
        prior = cdi.phase_prior(0.2, kind="tv-s1", max_num_iter=10)
        return cdi.retrieve_phase(cdi.diffraction_intensity(obj), support, max_num_iter=20, seed=1, prior=prior)

    reference = on_cpu(run)
    result = run()
    assert all(backend.get_array_module(r) is backend.xp for r in (result.obj, result.errors))
    np.testing.assert_allclose(backend.asnumpy(result.obj), reference.obj, atol=1e-7)  # cuFFT rounding
    np.testing.assert_allclose(backend.asnumpy(result.errors), reference.errors, rtol=1e-6)
    assert cdi.phase_error(result.obj, obj, support) == pytest.approx(
        on_cpu(lambda: cdi.phase_error(reference.obj, obj, support)), rel=1e-6)


def test_public_functions_given_numpy_return_arrays_on_the_device(device):
    phi = np.random.default_rng(0).uniform(-3, 3, (12, 10))
    obj = np.zeros((16, 16), complex)
    obj[4:9, 5:10] = np.exp(0.2j)
    support = abs(obj) > 0
    intensity = backend.asnumpy(cdi.diffraction_intensity(obj))
    results = [
        circle.wrap(phi), circle.two_way_shrinkage(phi, 0.3), circle.tv_s1_denoise(phi, 0.3, max_num_iter=5).phase,
        lifting.tv_s1_lifting(phi, 0.3, num_labels=4, max_num_iter=5).phase, lifting.labels(6),
        lifting.lift_apply(np.ones((5, 4, 4)), 4), lifting.lift_adjoint(np.ones((4, 3, 4, 4)), 4),
        cdi.diffraction_intensity(obj), cdi.project_modulus(obj, np.sqrt(intensity))[0], cdi.twin(obj),
        cdi.align_to_reference(obj, obj), cdi.retrieve_phase(intensity, support, max_num_iter=3).obj,
        cdi.phase_prior(0.3)(obj),
    ]
    assert all(backend.get_array_module(r) is backend.xp for r in results)
    assert all(isinstance(x, float) for x in (circle.total_variation_s1(phi), circle.s1_energy(phi, phi, 0.3),
                                              cdi.phase_error(obj, obj, support)))


# --------------------------------------------------------------------------- no copies per iteration
def test_tv_s1_denoise_copies_nothing_per_iteration(no_copies_per_iteration):
    phi = np.random.default_rng(0).uniform(-3, 3, (16, 16))
    for cyclic in (True, False):
        no_copies_per_iteration(lambda n: circle.tv_s1_denoise(phi, 0.3, cyclic=cyclic, max_num_iter=n, tol=0))


def test_tol_zero_runs_every_iteration():
    phi = np.zeros((8, 8))  # already a minimiser: any convergence test would stop at the first check
    assert circle.tv_s1_denoise(phi, 0.3, tol=0, max_num_iter=33).num_iter == 33
    assert lifting.tv_s1_lifting(phi, 0.3, num_labels=4, tol=0, max_num_iter=33).num_iter == 33
    assert circle.tv_s1_denoise(phi, 0.3, max_num_iter=33).num_iter == 10


def test_lifting_copies_nothing_per_iteration(no_copies_per_iteration):
    phi = np.random.default_rng(0).uniform(-3, 3, (8, 8))
    no_copies_per_iteration(lambda n: lifting.tv_s1_lifting(phi, 0.3, num_labels=6, max_num_iter=n, tol=0))


@pytest.mark.parametrize("method", ["er", "hio", "raar"])
def test_phase_retrieval_copies_nothing_per_iteration(method, no_copies_per_iteration, weak_object):
    obj, support = weak_object
    intensity = backend.asnumpy(cdi.diffraction_intensity(obj))
    no_copies_per_iteration(lambda n: cdi.retrieve_phase(intensity, support, method=method, max_num_iter=n))


@pytest.mark.parametrize("kind", ["tv-s1", "lifting", "tv"])
def test_phase_retrieval_with_a_prior_copies_nothing_per_iteration(kind, no_copies_per_iteration, weak_object):
    obj, support = weak_object
    intensity = backend.asnumpy(cdi.diffraction_intensity(obj))

    def run(n):
        prior = cdi.phase_prior(0.1, kind=kind, max_num_iter=5, **({"num_labels": 4} if kind == "lifting" else {}))
        return cdi.retrieve_phase(intensity, support, method="er", max_num_iter=n, prior=prior)

    no_copies_per_iteration(run, iterations=(2, 6))


def test_prior_sees_the_support_box_and_keeps_the_modulus(device, weak_object):
    obj, support = weak_object
    seen = []

    def prior(estimate):
        seen.append(estimate.shape)
        return estimate

    cdi.retrieve_phase(cdi.diffraction_intensity(obj), support, max_num_iter=3, prior=prior)
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    assert seen == [(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)] * 4  # 3 iterations and the result
    noisy = obj * np.exp(0.3j * np.random.default_rng(1).standard_normal(obj.shape))
    smoothed = backend.asnumpy(cdi.phase_prior(0.5)(noisy))
    np.testing.assert_allclose(abs(smoothed), abs(noisy), rtol=1e-12)
    assert circle.total_variation_s1(np.angle(smoothed) * support) < 0.7 * circle.total_variation_s1(
        np.angle(noisy) * support)


def test_lifting_refuses_a_problem_over_the_memory_budget(monkeypatch):
    monkeypatch.setenv("MBOOK_MEMORY_GB", "0.01")
    with pytest.raises(MemoryError, match="budget is 10.2 MiB"):
        lifting.tv_s1_lifting(np.zeros((128, 128)), 0.5, num_labels=32)




@pytest.mark.parametrize("method", ["er", "hio", "raar"])
def test_the_last_error_describes_the_returned_object(method, weak_object):
    obj, support = weak_object
    intensity = cdi.diffraction_intensity(obj)
    result = cdi.retrieve_phase(intensity, support, method=method, max_num_iter=12, seed=2)
    assert result.errors.shape == (12,)
    # The returned object is the part of P_M ψ_N inside S; P_M ψ_N has the measured norm (Parseval), so
    # the part outside S, which errors[-1] measures, is what the returned object leaves of that norm.
    total = float(backend.xp.sum(intensity)) / intensity.size
    kept = float(backend.xp.sum(backend.xp.abs(result.obj) ** 2))
    assert float(result.errors[-1]) == pytest.approx(np.sqrt(1 - kept / total), rel=1e-9)


def test_twin_is_the_conjugate_of_the_point_reflection(device):
    """twin(o) = conj(o(-x)) on the periodic grid: index arithmetic, and its DFT is the conjugate of o's."""
    rng = np.random.default_rng(0)
    o = rng.standard_normal((12, 10)) + 1j * rng.standard_normal((12, 10))
    twin = backend.asnumpy(cdi.twin(o))
    i, j = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    np.testing.assert_array_equal(twin, np.conj(o[-i % 12, -j % 10]))
    np.testing.assert_allclose(np.fft.fft2(twin), np.conj(np.fft.fft2(o)), atol=1e-12)


def test_tv_s1_energy_and_the_minimiser_of_a_straight_step():
    """Closed forms. The energy of θ = 0 against φ = π/2 with no jumps is Σ(1 - cos π/2) = 30 on 6 x 5 pixels. A
    straight step (φ = 0 on rows 0..7, 2 on rows 8..15, Neumann edges): the minimiser of Σ(1 - cos(θ - φ)) + λΣ|∇θ|
    is θ = s above and 2 - s below with 8 sin s = λ (each column's edge costs λ(2 - 2s)), s = arcsin(1/8) at λ = 1
    (measured within 8e-7 rad; a sign error in the primal step lands 1.2e-2 rad away)."""
    assert circle.s1_energy(np.zeros((6, 5)), np.full((6, 5), math.pi / 2), 0.7) == pytest.approx(30.0, abs=1e-12)
    phi = np.zeros((16, 6))
    phi[8:] = 2.0
    theta = backend.asnumpy(circle.tv_s1_denoise(phi, 1.0, max_num_iter=5000, tol=0).phase)
    s = math.asin(1 / 8)
    np.testing.assert_allclose(theta[:8], s, rtol=0, atol=1e-4)
    np.testing.assert_allclose(theta[8:], 2.0 - s, rtol=0, atol=1e-4)


def test_lifting_gap_is_a_bound_on_the_primal_optimum(monkeypatch):
    """Weak duality: the dual value of every iterate (5 to 300 iterations) is at most the primal value of a long
    run's result, a feasible point; a 'gap' that is not a bound would stop the solver early at tol."""
    real, captured = lifting.pdhg_iterations, []

    def spy(*args, objectives=None, **kwargs):
        result = real(*args, objectives=objectives, **kwargs)
        captured.append((objectives, result))
        return result

    monkeypatch.setattr(lifting, "pdhg_iterations", spy)
    rng = np.random.default_rng(0)
    phi = np.zeros((12, 12))
    phi[6:] = 3.0
    phi = backend.asnumpy(circle.wrap(phi + 0.4 * rng.standard_normal(phi.shape)))
    for n in (5, 20, 80, 300):
        lifting.tv_s1_lifting(phi, 0.5, num_labels=8, tol=1e-14, max_num_iter=n, check_every=n)
    lifting.tv_s1_lifting(phi, 0.5, num_labels=8, tol=1e-14, max_num_iter=20000, check_every=1000)
    objectives, long_run = captured[-1]
    best_primal = float(objectives(long_run.x, long_run.y)[0])
    for objectives, result in captured[:-1]:
        assert float(objectives(result.x, result.y)[1]) <= best_primal + 1e-9 * abs(best_primal)
