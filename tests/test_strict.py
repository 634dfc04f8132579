"""The strict stand-in refuses what CuPy refuses, counts copies, and computes what NumPy computes."""

import copy
import pickle

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.ndimage  # noqa: E402

from mbook.core import backend, checks, strict  # noqa: E402
from mbook.inverse import optimize  # noqa: E402

xp = strict.xp


@pytest.fixture(autouse=True)
def on_the_stand_in():
    backend.set_device("strict")
    yield
    backend.set_device("cpu")


@pytest.fixture
def a(rng):
    return xp.asarray(rng.standard_normal((4, 6)))


@pytest.mark.parametrize("convert", [
    np.asarray,
    np.array,
    lambda x: np.testing.assert_allclose(x, 0),
    lambda x: plt.plot(x[0]),
    lambda x: plt.imshow(x),
    lambda x: scipy.ndimage.gaussian_filter(x, 1.0),
    lambda x: np.concatenate([np.zeros((1, 6)), x]),
], ids=["asarray", "array", "np.testing", "plot", "imshow", "scipy", "concatenate-mixed"])
def test_implicit_conversion_to_numpy_is_refused(a, convert):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed|Unsupported type"):
        convert(a)
    plt.close("all")


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h,
    lambda a, h: h * a,
    lambda a, h: np.exp(a) - h,
    lambda a, h: xp.where(a > 0, h, 0.0),
    lambda a, h: xp.fft.fft2(h),
    lambda a, h: backend.fft2(h[None] * a),
    lambda a, h: xp.stack([a, h]),
], ids=["add", "rmul", "ufunc", "where", "fft", "backend.fft2", "stack"])
def test_host_arrays_mixed_with_device_arrays_are_refused(a, mix):
    with pytest.raises(TypeError, match="Unsupported type"):
        mix(a, np.ones(a.shape))


def test_scalars_and_creation_functions_take_host_values(a):
    b = 2.0 * a + np.float32(1.0)
    assert strict.is_strict(b)
    c = xp.asarray(np.ones(3))
    assert strict.is_strict(c)
    a[0] = np.zeros(6)  # assignment copies host values over, as CuPy's does
    assert float(abs(a[0]).sum()) == 0.0


def test_results_equal_numpy(rng):
    host = rng.standard_normal((3, 8, 8)) + 1j * rng.standard_normal((3, 8, 8))
    device = backend.asarray(host)
    expected = np.fft.ifft2(np.fft.fft2(host) * np.exp(-np.abs(host))).sum(axis=0).real
    got = xp.fft.ifft2(xp.fft.fft2(device) * xp.exp(-abs(device))).sum(axis=0).real
    assert np.array_equal(backend.asnumpy(got), expected)


def test_keyword_arguments_are_device_arrays_too(rng):
    index = xp.asarray(rng.integers(0, 4, 20))
    weights = xp.asarray(rng.standard_normal(20))
    counts = xp.bincount(index, weights=weights, minlength=4)
    expected = np.bincount(backend.asnumpy(index), weights=backend.asnumpy(weights), minlength=4)
    np.testing.assert_allclose(backend.asnumpy(counts), expected)
    with pytest.raises(TypeError, match="Unsupported type"):
        xp.bincount(index, weights=np.ones(20))


def test_reductions_and_indexing_give_device_scalars(a):
    assert strict.is_strict(a.sum()) and a.sum().ndim == 0
    assert strict.is_strict(a[0, 0])
    assert strict.is_strict(np.linalg.norm(a))  # NumPy functions dispatch to the device


def test_copies_to_the_host_are_counted(a):
    with strict.count_transfers() as copies:
        float(a.sum())
        bool(a[0, 0] > 0)
        f"{a.max():.3f}"
        backend.asnumpy(a)
    assert copies.to_host == 4
    with strict.count_transfers() as copies:
        b = (a * 2).sum(axis=0)
        b = xp.sqrt(abs(b))
    assert copies.to_host == 0


def test_scipy_through_the_backend_works_on_the_device(a):
    ndimage = backend.scipy_module("ndimage", a)
    smooth = ndimage.gaussian_filter(a, 1.0)
    assert strict.is_strict(smooth)
    np.testing.assert_allclose(backend.asnumpy(smooth), scipy.ndimage.gaussian_filter(backend.asnumpy(a), 1.0))


def test_iterated_binary_morphology_is_refused_as_cupy_refuses_it():
    # cupyx.scipy.ndimage iterates an erosion or dilation only with brute_force=True (NotImplementedError else)
    mask = strict.asarray(np.eye(8, dtype=bool))
    ndimage = backend.scipy_module("ndimage", mask)
    with pytest.raises(NotImplementedError, match="brute_force"):
        ndimage.binary_dilation(mask, iterations=2)
    dilated = ndimage.binary_dilation(mask, iterations=2, brute_force=True)
    np.testing.assert_array_equal(dilated.get(), scipy.ndimage.binary_dilation(np.eye(8, dtype=bool), iterations=2))
    assert int(ndimage.binary_erosion(mask).sum()) == 0  # one iteration: as SciPy


def test_cupy_functions_that_wait_for_the_device_count_their_copies(rng):
    # CuPy's bincount copies two numbers to the host (a negative-index check, the largest index), a
    # boolean mask its count of True, nonzero its count: each is a wait for the device, counted as one.
    from mbook.core import device_counts

    index = strict.asarray(rng.integers(0, 5, 20))
    values = strict.asarray(rng.standard_normal(20))
    with strict.count_operations() as counts:
        strict.xp.bincount(index, values, 5)
    assert counts.to_host == 2
    with strict.count_operations() as counts:
        values[values > 0]
        strict.xp.nonzero(values > 0)
        (values > 0).nonzero()
    assert counts.to_host == 3
    with strict.count_operations() as counts:
        values[1:3], values[index]  # a view and a gather by integers: no count needed
    assert counts.to_host == 0
    with strict.count_operations() as counts, device_counts.one_operation():  # one kernel copies nothing
        strict.xp.bincount(index, values, 5)
    assert counts.to_host == 0 and counts.operations == 1


def test_special_ufuncs_need_the_backend(a):
    import scipy.special

    with pytest.raises(TypeError):
        scipy.special.j0(a)
    assert strict.is_strict(backend.scipy_module("special", a).j0(a))


def test_arrays_pickle_and_copy(a):
    for b in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), copy.copy(a)):
        assert strict.is_strict(b)
        assert np.array_equal(backend.asnumpy(b), backend.asnumpy(a))


def test_a_kernel_that_converts_to_numpy_fails_on_the_stand_in(monkeypatch, rng):
    """What CI catches: a kernel with a stray np.asarray works on the CPU and breaks on a GPU."""
    def gradient_with_a_host_copy(u, *, boundary="neumann"):
        u = np.asarray(u)  # the bug: fine on NumPy, refused by CuPy
        return np.stack([np.diff(u, axis=-2, append=u[..., -1:, :]), np.diff(u, axis=-1, append=u[..., -1:])])

    image = rng.standard_normal((16, 16))
    optimize.tv_denoise(image, 0.1, max_num_iter=5)  # the library's own kernel passes on the stand-in
    monkeypatch.setattr(optimize, "gradient", gradient_with_a_host_copy)
    backend.set_device("cpu")
    optimize.tv_denoise(image, 0.1, max_num_iter=5)  # no error on the CPU
    backend.set_device("strict")
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        optimize.tv_denoise(image, 0.1, max_num_iter=5)


def test_host_copies_helper_counts_on_the_stand_in(host_copies):
    assert host_copies(lambda: float(backend.asarray(np.ones(3)).sum())) == 1
    assert backend.get_device() == "strict"  # restored to what it was


def test_describe_names_the_stand_in():
    assert "strict GPU stand-in" in backend.describe()


def test_scalar_parameters_may_be_0d_device_arrays():
    from mbook.core import checks

    image = xp.ones((4, 4))
    assert checks.check_positive_number(3.0 / image.sum(), "dose") == 3.0 / 16
    assert checks.check_number(image.sum(), "total", lower=0) == 16.0
    with pytest.raises(ValueError, match="dose must be a finite number > 0"):
        checks.check_positive_number(-image.sum(), "dose")
    with pytest.raises(ValueError, match="must be a finite number"):
        checks.check_number(image, "total")  # an image is not a number


def test_device_operations_are_counted_and_views_are_not(a):
    with strict.count_operations() as ops:
        b = a * 2.0          # a ufunc
        b += 1.0             # an in-place ufunc
        c = xp.fft.fft2(b)   # a function of the namespace
        d = c.reshape(-1)    # a view: no kernel
        e = b[1:3]           # basic slicing: a view
        f = b[xp.asarray([0, 2])]  # a copy to the device, then a gather
        b[0] = 0.0           # an assignment
        total = float(f.sum())     # a method, then a copy to the host
    assert (ops.operations, ops.to_host) == (7, 1)
    assert d.shape == (24,) and e.shape == (2, 6) and np.isfinite(total)


def test_a_loop_over_items_shows_in_the_counts_and_its_caller(rng):
    images = xp.asarray(rng.standard_normal((16, 8, 8)))

    def counted(run):
        with strict.count_operations(by_caller=True) as ops:
            run()
        return ops

    looped = counted(lambda: [optimize.soft_threshold(image, 0.5) for image in images])
    batched = counted(lambda: optimize.soft_threshold(images, 0.5))
    assert looped.operations == 16 * batched.operations > 0
    assert "mbook.inverse.optimize.soft_threshold" in looped.by_caller  # and its input checks
    assert counted(lambda: xp.sqrt((images**2).sum(axis=(1, 2)))).by_caller == {"<page>": 3}
    # nested blocks: the outer one sees the inner one's operations, charged alike
    with strict.count_operations(by_caller=True) as outer:
        inner = counted(lambda: optimize.soft_threshold(images, 0.5))
    assert outer.operations == inner.operations > 0 and outer.by_caller == inner.by_caller


def test_copies_to_the_host_are_charged_to_their_caller(rng):
    """A copy waits for the device: the counter says which function made it (a page's own, or mbook's)."""
    images = xp.asarray(rng.standard_normal((4, 8, 8)))
    with strict.count_operations(by_caller=True) as outer:
        checks.check_array(images, "images")  # called from here: a NaN test, one copy in mbook.core.checks
        with strict.count_operations(by_caller=True) as inner:
            float(images.sum())
            images.get()
    assert inner.to_host_by_caller == {"<page>": 2}
    assert outer.to_host_by_caller == {"<page>": 2, "mbook.core.checks.check_array": 1} and outer.to_host == 3
    with strict.count_operations() as plain:
        float(images.sum())
    assert plain.to_host == 1 and plain.to_host_by_caller is None
