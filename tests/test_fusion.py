"""``fusion.elementwise``: one kernel on CuPy, the same arithmetic on NumPy and the stand-in.

On NumPy and the strict stand-in the function runs as written (the stand-in counts it as one device
operation). The CuPy side cannot run without a GPU: its Python side (the first-call check of each
argument signature against the plain operations, the fallback with one warning, the switch) is
exercised here against a stand-in for ``cupy.fuse``; the compiled kernels themselves are checked by the
``gpu`` parameter.
"""

import types
import warnings

import numpy as np
import pytest

from mbook.core import backend, fusion, strict
from mbook.multimodal import edx


@fusion.elementwise
def _step(xp, x, g, eta, floor):
    y = x - eta * g * x
    return xp.where(y > floor, y, floor), y * y


def _step_as_written(x, g, eta, floor):
    y = x - eta * g * x
    return np.where(y > floor, y, floor), y * y


def test_results_are_those_of_the_function_as_written(device, rng):
    x, g = rng.standard_normal((3, 50)), rng.standard_normal(50)
    got = _step(backend.asarray(x), backend.asarray(g), 0.3, -0.5)
    expected = _step_as_written(x, g, 0.3, -0.5)
    rtol = 1e-12 if device != "gpu" else 1e-9  # a GPU kernel may contract into fused multiply-adds
    for a, b in zip(got, expected):
        assert backend.is_device_array(a) == (device != "cpu")
        np.testing.assert_allclose(backend.asnumpy(a), b, rtol=rtol, atol=rtol)
    if device == "gpu":
        assert all(fusion.status().values())


def test_the_stand_in_counts_one_operation_for_the_whole_function(rng):
    backend.set_device("strict")
    try:
        x, g = backend.asarray(rng.standard_normal(8)), backend.asarray(rng.standard_normal(8))
        with strict.count_operations(by_caller=True) as fused:
            _step(x, g, 0.3, 0.0)
        with strict.count_operations() as plain:
            _step.__wrapped__(strict.xp, x, g, 0.3, 0.0)
    finally:
        backend.set_device("cpu")
    assert fused.operations == 1 and plain.operations == 6
    assert fused.by_caller == {"tests.test_fusion.test_the_stand_in_counts_one_operation_for_the_whole_function": 1} \
        or fused.by_caller == {"<page>": 1}


@fusion.elementwise
def _one_minus_twice(xp, x, beta):
    return (1 - 2 * beta) * x  # 1 - 2β of two Python numbers: float16 inside cupy.fuse


@fusion.elementwise
def _overflowing_index(xp, x, n):
    return xp.minimum(x, n - 1)  # n - 1 of two Python ints: int8 inside cupy.fuse (130 - 1 wraps)


@fusion.elementwise
def _number_from_the_host(xp, x, rest, last):
    return rest * x + xp.minimum(x, last) - 2.0 * x  # array-with-number operations only: fine


@fusion.elementwise
def _where_of_numbers(xp, x, beta):
    return xp.where(x > 1, beta, 0.5) * x  # the where's type from two Python numbers: float16


@pytest.mark.parametrize("function, args, match", [
    (_one_minus_twice, (0.9,), r"_one_minus_twice: 2 \* 0\.9 combines two Python numbers"),
    (_overflowing_index, (130,), r"_overflowing_index: 130 - 1 combines two Python numbers"),
    (_where_of_numbers, (0.9,), r"_where_of_numbers: xp.where of Python numbers alone"),
])
def test_the_stand_in_refuses_operations_between_two_python_numbers_in_a_fused_kernel(function, args, match):
    # On a GPU these kernels compile and run, in float16 or int8: wrong numbers, the integer ones silently
    x = strict.asarray(np.linspace(0.0, 200.0, 5))
    with pytest.raises(TypeError, match=match):
        function(x, *args)
    assert np.allclose(function(np.linspace(0.0, 200.0, 5), *args), function.__wrapped__(np, np.linspace(0, 200, 5),
                                                                                          *args))  # NumPy: as written


def test_numbers_made_on_the_host_pass_the_stand_in_check(rng):
    x = rng.standard_normal(6)
    got = _number_from_the_host(strict.asarray(x), 1 - 2 * 0.9, 129)
    np.testing.assert_array_equal(strict.asnumpy(got), (1 - 2 * 0.9) * x + np.minimum(x, 129) - 2.0 * x)


def test_the_edx_bisection_is_one_operation_on_the_stand_in(small_edx_data):
    data = small_edx_data
    backend.set_device("strict")
    try:
        data = edx.check_data(data)
        with strict.count_operations(by_caller=True) as ops:
            edx.estimate_edx(data)
    finally:
        backend.set_device("cpu")
    assert ops.by_caller["mbook.multimodal.edx._solve_columns"] <= 12  # 52 bisection steps, one kernel


# ----------------------------------------------------------------------------- the CuPy side, on a stand-in
class FakeCupy(types.ModuleType):
    """NumPy under another name, whose ``fuse`` traces the function as CuPy's would (or fails, or lies)."""

    def __init__(self, mode):
        super().__init__("fakecupy")
        self.mode, self.traced = mode, []

    def __getattr__(self, name):
        return getattr(np, name)

    def fuse(self, kernel_name=None):
        def decorate(function):
            self.traced.append(kernel_name)

            def kernel(*args):
                if self.mode == "fails":
                    raise RuntimeError("nvrtc: compilation failed")
                result = function(*args)
                if self.mode == "wrong":
                    return tuple(r + 1.0 for r in result)
                kernel.calls += 1
                return result

            kernel.calls = 0
            return kernel
        return decorate


@pytest.fixture
def fake_cupy(monkeypatch):
    def make(mode):
        fake = FakeCupy(mode)
        monkeypatch.setattr(fusion.backend, "get_array_module", lambda *args: fake)
        monkeypatch.setattr(fusion, "_checked", {})
        monkeypatch.setattr(fusion._switch, "value", True)
        return fake
    return make


def test_a_fused_kernel_that_agrees_is_used_from_the_second_call_on(fake_cupy, rng):
    fake = fake_cupy("agrees")

    @fusion.elementwise
    def step(xp, x, g, eta, floor):
        return _step.__wrapped__(xp, x, g, eta, floor)

    x, g = rng.standard_normal(10), rng.standard_normal(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            got = step(x, g, 0.3, 0.0)
    np.testing.assert_array_equal(got[0], _step_as_written(x, g, 0.3, 0.0)[0])
    [((function, signature), ok)] = fusion.status().items()
    assert function.endswith("test_a_fused_kernel_that_agrees_is_used_from_the_second_call_on.<locals>.step")
    assert signature == (("float64", 1), ("float64", 1), "float", "float") and ok
    assert fake.traced == ["mbook_step"]  # one fused function per array module, its kernels cached by CuPy


@pytest.mark.parametrize("mode, reason", [("fails", "nvrtc: compilation failed"), ("wrong", "relative error")])
def test_a_fused_kernel_that_fails_or_disagrees_falls_back_with_one_warning(fake_cupy, rng, mode, reason):
    fake_cupy(mode)

    @fusion.elementwise
    def step(xp, x, g, eta, floor):
        return _step.__wrapped__(xp, x, g, eta, floor)

    x, g = rng.standard_normal(10), rng.standard_normal(10)
    with pytest.warns(RuntimeWarning, match=reason):
        first = step(x, g, 0.3, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        second = step(x, g, 0.3, 0.0)
    expected = _step_as_written(x, g, 0.3, 0.0)
    for got in (first, second):
        np.testing.assert_array_equal(got[1], expected[1])
    assert list(fusion.status().values()) == [False]


def test_switched_off_no_kernel_is_traced(fake_cupy, rng, monkeypatch):
    fake = fake_cupy("fails")
    fusion.set_enabled(False)

    @fusion.elementwise
    def step(xp, x, g, eta, floor):
        return _step.__wrapped__(xp, x, g, eta, floor)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(rng.standard_normal(4), rng.standard_normal(4), 0.3, 0.0)
    assert fake.traced == [] and fusion.status() == {}


def test_bad_settings_are_refused(monkeypatch):
    with pytest.raises(TypeError, match="enabled must be True or False"):
        fusion.set_enabled("yes")
    with pytest.raises(TypeError, match="function must be callable"):
        fusion.elementwise(3)
    monkeypatch.setattr(fusion._switch, "value", None)
    monkeypatch.setenv("MBOOK_FUSE", "sometimes")
    with pytest.raises(ValueError, match="MBOOK_FUSE must be auto, on or off"):
        fusion.enabled()


def test_a_hand_written_kernel_stands_in_for_its_function_off_the_gpu(rng):
    # On NumPy the function runs as written (the kernel is for CuPy only); on the stand-in too, as one operation.
    def never(xp, x):
        raise AssertionError("the kernel runs on CuPy only")

    @fusion.hand_written(never)
    def shifted_difference(xp, x):
        return x[1:] - x[:-1] + x[1:]

    x = rng.standard_normal(10)
    np.testing.assert_array_equal(shifted_difference(x), x[1:] - x[:-1] + x[1:])
    backend.set_device("strict")
    try:
        with strict.count_operations() as ops:
            result = shifted_difference(backend.asarray(x))
        assert ops.operations == 1
        np.testing.assert_array_equal(result.get(), x[1:] - x[:-1] + x[1:])
    finally:
        backend.set_device("cpu")
    with pytest.raises(TypeError, match="kernel must be callable"):
        fusion.hand_written(None)
    with pytest.raises(TypeError, match="function must be callable"):
        fusion.hand_written(never)(3)


@pytest.mark.skipif(not backend.gpu_available(), reason=f"no GPU: {backend.gpu_status()}")
def test_the_library_kernels_fuse_and_agree_on_a_gpu(rng, small_edx_data):
    from mbook.inverse import cdi, circle, optimize
    from mbook.learning import implicit_bias
    from mbook.multimodal import ptychography, reconstruction
    from mbook.tomography import projector

    backend.set_device("gpu")
    fusion.set_enabled(True)
    try:
        image = rng.standard_normal((32, 32))
        optimize.soft_threshold(image, 0.5)
        optimize.tv_denoise(image, 0.1, max_num_iter=20)
        for cyclic in (True, False):
            circle.tv_s1_denoise(image, 0.2, cyclic=cyclic, max_num_iter=20)
        support = np.zeros((32, 32), bool)
        support[8:24, 8:24] = True
        intensity = np.abs(np.fft.fft2(rng.standard_normal((32, 32)) * support)) ** 2
        for method in ("er", "hio", "raar"):
            cdi.retrieve_phase(intensity, support, method=method, max_num_iter=10)
        edx.estimate_fused(small_edx_data, max_num_iter=3)
        X, y = rng.standard_normal((20, 50)), rng.standard_normal(20)
        for batch_size in (None, 5):
            implicit_bias.train(X, y, scale=0.1, learning_rate=0.01, num_steps=20, batch_size=batch_size)
        optimize.laplacian(rng.standard_normal((2, 16, 16)))
        for dtype in (np.float32, np.complex128):  # the stencils on other types than the solvers' float64
            optimize.divergence(optimize.gradient(rng.standard_normal((3, 9, 7)).astype(dtype)))
            optimize.laplacian(rng.standard_normal((9, 7)).astype(dtype))
        probe = ptychography.centred_probe(16, sampling=0.5, energy=300e3, semiangle_cutoff=15.0, defocus=40.0)
        axis = np.linspace(4.5, 11.5, 5)
        where = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        reconstruction.reconstruct(rng.poisson(5.0, (25, 16, 16)), positions=where, probe=probe, object_gpts=(32, 32),
                                   sampling=0.5, max_num_iter=3, batch_size=8, probe_from=0, positions_from=0,
                                   smoothness=0.1)
        reconstruction.reconstruct(rng.poisson(5.0, (25, 16, 16)), positions=where, probe=probe, object_gpts=(32, 32),
                                   sampling=0.5, max_num_iter=2, batch_size=8)  # fixed: the windows made once
        # a batch of 64 with the probe moving: 2 n = 128, which int8 arithmetic inside the kernel wraps; an
        # earlier call checked the kernel's signature, so against the CPU
        axis64 = np.linspace(4.5, 11.5, 8)
        where64 = np.stack(np.meshgrid(axis64, axis64, indexing="ij"), -1).reshape(-1, 2)
        counts64 = rng.poisson(5.0, (64, 16, 16))
        batch64 = dict(positions=where64, object_gpts=(32, 32), sampling=0.5, max_num_iter=2, batch_size=64,
                       probe_from=0)
        on_gpu = reconstruction.reconstruct(counts64, probe=probe, **batch64)
        with backend.use_device("cpu"):
            on_host = reconstruction.reconstruct(counts64, probe=backend.asnumpy(probe), **batch64)
        np.testing.assert_allclose(backend.asnumpy(on_gpu.probe), on_host.probe, rtol=1e-3,
                                   atol=1e-4 * np.abs(on_host.probe).max())
        reconstruction.reconstruct(rng.poisson(5.0, (64, 32, 32)), positions=where64 + 4.0, probe=ptychography.centred_probe(
            32, sampling=0.5, energy=300e3, semiangle_cutoff=15.0, defocus=40.0), object_gpts=(64, 64), sampling=0.5,
            max_num_iter=1, batch_size=8)  # windows smaller than the object: the grating and exit wave fused
        from mbook.learning import unrolled
        features = rng.standard_normal((4, 2, 16, 16))
        unrolled.train(features, rng.random((4, 16, 16)) > 0.5, unrolled.init_parameters(2, 3), num_steps=2,
                       batch_size=2)
        rotations = projector.tilt_rotations(np.linspace(0.0, 1.0, 5))
        for volume in (rng.standard_normal((12, 12, 12)), rng.standard_normal((12, 12, 12)).astype(np.float32)):
            projections = projector.project(volume, rotations, sampling=0.5, detector_gpts=(12, 12))
            projector.backproject(projections, rotations, shape=(12, 12, 12), sampling=0.5)
        # an axis of 130 voxels: n - 1 = 129 overflows int8 inside a kernel, and a signature checked on a
        # small volume first would not notice: against the CPU
        projections = projector.project(rng.standard_normal((130, 8, 8)), rotations, sampling=0.5, detector_gpts=(8, 8))
        back = backend.asnumpy(projector.backproject(projections, rotations, shape=(130, 8, 8), sampling=0.5))
        with backend.use_device("cpu"):
            expected = projector.backproject(backend.asnumpy(projections), rotations, shape=(130, 8, 8), sampling=0.5)
        np.testing.assert_allclose(back, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    finally:
        backend.set_device("cpu")
    checked = fusion.status()
    names = {name.rsplit(".", 1)[-1] for name, _ in checked}
    assert {"_soft_threshold", "_step", "_extrapolate", "_dual_ascent", "_dual_prox", "_primal_step_s1",
            "_primal_step_r", "_replace_modulus", "_er_step", "_hio_step", "_raar_step", "_bisection",
            "_weighted_residual", "_descent_step", "_sum_of_squares", "_neumann_gradient", "_neumann_divergence", "_neumann_laplacian",
            "_phasor", "_amplitude_residual",
            "_shift_weight", "_amplitude_curvature", "_momentum_step", "_momentum_step_with_prior", "_probe_step",
            "_position_step", "_sgd_step", "_grating_and_exit", "_add_scaled", "_adam_step",
            "_ray_coordinate", "_floor_and_fraction", "_corner_index", "_masked_values", "_corner_weights"} <= names
    assert all(checked.values()), {key: ok for key, ok in checked.items() if not ok}


def test_the_wrapped_function_shows_its_callers_signature():
    import inspect

    assert list(inspect.signature(_step).parameters) == ["x", "g", "eta", "floor"]


def test_fused_kernels_are_checked_to_the_precision_of_their_components():
    """complex64 is float32 per component: a relative difference of 1e-6 agrees there, not in complex128."""
    a = (np.arange(1, 65) * (1 + 1j)).astype(np.complex64)
    assert fusion._agree(np, a * np.complex64(1 + 1e-6), a)[0]
    b = a.astype(np.complex128)
    assert not fusion._agree(np, b * (1 + 1e-6), b)[0]
