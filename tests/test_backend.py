"""The device switch: names, fallbacks, errors, and transfers."""

import numpy as np
import pytest
import scipy.fft

from mbook.core import backend, fft_plans, fftw_wisdom


@pytest.fixture(autouse=True)
def restore_device():
    yield
    backend.set_device("cpu")


@pytest.mark.parametrize("name", ["tpu", "", "GPU0", None, 1])
def test_unknown_device_is_refused(name):
    with pytest.raises(ValueError, match=r"device must be one of \('auto', 'cpu', 'gpu', 'strict'\)"):
        backend.set_device(name)


def test_names_are_case_insensitive():
    assert backend.set_device(" CPU ") == "cpu"


def test_cpu_uses_numpy_and_scipy_fft():
    backend.set_device("cpu")
    assert backend.get_device() == "cpu"
    assert backend.xp is np
    assert backend.fft is scipy.fft
    assert isinstance(backend.asarray([1, 2]), np.ndarray)


def test_auto_resolves_to_what_is_available():
    assert backend.set_device("auto") == ("gpu" if backend.gpu_available() else "cpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is usable here, so 'gpu' must not raise")
def test_gpu_without_cupy_says_how_to_install():
    before = backend.get_device()
    with pytest.raises(RuntimeError, match="pip install cupy-cuda12x"):
        backend.set_device("gpu")
    assert backend.get_device() == before  # a refused switch leaves the device as it was


def test_environment_variable_is_read_on_first_use(monkeypatch):
    monkeypatch.setattr(backend, "_resolved", None)
    monkeypatch.setenv("MBOOK_DEVICE", "cpu")
    assert backend.get_device() == "cpu"
    monkeypatch.setattr(backend, "_resolved", None)
    monkeypatch.setenv("MBOOK_DEVICE", "quantum")
    with pytest.raises(ValueError, match="MBOOK_DEVICE"):
        backend.get_device()


def test_fft_conventions_unnormalised_forward(device, rng):
    a = backend.asarray(rng.standard_normal((3, 8, 6)) + 1j * rng.standard_normal((3, 8, 6)))
    spectrum = backend.fft2(a)
    assert backend.asnumpy(spectrum[:, 0, 0]) == pytest.approx(backend.asnumpy(a.sum(axis=(-2, -1))))
    np.testing.assert_allclose(backend.asnumpy(backend.ifft2(spectrum)), backend.asnumpy(a), atol=1e-12)
    parseval = float((abs(spectrum) ** 2).sum()) / 48
    assert parseval == pytest.approx(float((abs(a) ** 2).sum()), rel=1e-12)


def test_asnumpy_returns_host_arrays(device):
    x = backend.asarray(np.arange(5.0))
    assert type(backend.asnumpy(x)) is np.ndarray
    assert backend.get_array_module(x) is backend.xp


# ----------------------------------------------------------------------------- in-place FFT plans

CPU_LIBRARIES = ["scipy"] + (["pyfftw"] if fftw_wisdom.pyfftw_module() is not None else [])


@pytest.fixture
def fft_library(request):
    yield backend.set_fft_library(request.param)
    backend.set_fft_library("auto")


@pytest.mark.parametrize("fft_library", CPU_LIBRARIES, indirect=True)
@pytest.mark.parametrize("dtype, tolerance", [(np.complex64, 2e-6), (np.complex128, 1e-13)])
def test_fft2_plan_matches_scipy_fft_in_place(fft_library, dtype, tolerance, rng):
    backend.set_device("cpu")
    a = (rng.standard_normal((3, 24, 20)) + 1j * rng.standard_normal((3, 24, 20))).astype(dtype)
    plan = fft_plans.fft2_plan(a.shape, dtype)
    assert plan.library == fft_library and plan.array.dtype == dtype
    plan.array[...] = a
    buffer = plan.array
    spectrum = plan.forward()
    assert spectrum is buffer  # in place: no new array per transform
    expected = scipy.fft.fft2(a.astype(np.complex128))
    assert np.abs(spectrum - expected).max() < tolerance * np.abs(expected).max()
    restored = plan.backward() * plan.scale  # backward leaves out 1/N
    assert np.abs(restored - a).max() < tolerance * 10 * np.abs(a).max()


def test_fft2_plan_is_kept_per_thread_and_shape():
    import threading

    first = fft_plans.fft2_plan((2, 16, 16))
    assert fft_plans.fft2_plan((2, 16, 16)) is first
    assert fft_plans.fft2_plan((1, 16, 16)) is not first
    other = []
    thread = threading.Thread(target=lambda: other.append(fft_plans.fft2_plan((2, 16, 16))))
    thread.start()
    thread.join()
    assert other[0] is not first and other[0].array is not first.array  # threads never share a buffer


def test_large_fft2_plans_are_not_kept(monkeypatch):
    """A big buffer (a GPU batch of probes) must not stay allocated after the call that used it."""
    monkeypatch.setattr(fft_plans, "CACHED_PLAN_BYTES", 16 * 16 * 8)
    assert fft_plans.fft2_plan((16, 16)) is fft_plans.fft2_plan((16, 16))  # 2 kB: kept
    assert fft_plans.fft2_plan((2, 16, 16)) is not fft_plans.fft2_plan((2, 16, 16))  # 4 kB: made per call


def test_fft2_plan_refuses_real_dtype_and_unknown_library():
    with pytest.raises(ValueError, match="complex dtype"):
        fft_plans.fft2_plan((8, 8), np.float32)
    with pytest.raises(ValueError, match=r"library must be one of \('auto', 'pyfftw', 'scipy'\), got 'mkl'"):
        backend.set_fft_library("mkl")


def test_use_device_selects_and_restores():
    backend.set_device("cpu")
    with backend.use_device("strict") as device:
        assert device == "strict" and backend.get_device() == "strict"
    assert backend.get_device() == "cpu"
    with pytest.raises(RuntimeError), backend.use_device("cpu"):
        raise RuntimeError("inside")
    assert backend.get_device() == "cpu"  # restored after an error too


def test_asarray_moves_to_the_selected_device_and_back(device):
    x = backend.asarray(np.arange(3.0))
    assert backend.get_array_module(x) is backend.xp
    with backend.use_device("cpu"):
        assert type(backend.asarray(x)) is np.ndarray  # a device array comes back to the host
    assert backend.is_device_array(x) == (device != "cpu")


# Operators refuse NaN from their callers outside mbook, and skip the test (a copy to the host) when
# mbook's own code or iterations call them.
def _with_nan(shape=(8, 8)):
    a = np.ones(shape)
    a[..., 1, 1] = np.nan  # kept by a crop to 4 x 4 (frequencies 0, 1, -2, -1)
    return a


@pytest.mark.parametrize("operator, argument", [
    ("backend.fft2", "array"), ("backend.ifftn", "array"), ("grids.crop_spectrum", "spectrum"),
    ("optimize.gradient", "u"), ("optimize.laplacian", "u"), ("optimize.soft_threshold", "x"),
    ("optimize.project_ball", "p"), ("circle.wrap", "phase"), ("reconstruct.smooth_tv", "u"),
])
def test_operators_refuse_nan_from_outside_mbook(operator, argument):
    from mbook.core import grids
    from mbook.inverse import circle, optimize
    from mbook.tomography import reconstruct

    modules = {"backend": backend, "grids": grids, "optimize": optimize, "circle": circle,
               "reconstruct": reconstruct}
    module, name = operator.split(".")
    function = getattr(modules[module], name)
    extra = {"crop_spectrum": ((4, 4),), "soft_threshold": (0.1,), "project_ball": (1.0,)}.get(name, ())
    keywords = {"axes": (0, 1), "smoothing": 0.1} if name == "smooth_tv" else {}
    data = _with_nan((2, 8, 8)) if name == "project_ball" else _with_nan()
    with pytest.raises(ValueError, match=f"{argument} holds non-finite"):
        function(data, *extra, **keywords)
    with backend.inside_iterations():  # a solver's iterations: no test, NaN propagates
        result = function(data, *extra, **keywords)
    result = result[1] if isinstance(result, tuple) else result
    assert np.isnan(backend.asnumpy(result)).any()


def test_operators_called_by_mbook_skip_the_finiteness_copy(host_copies):
    from mbook.inverse import optimize

    x = np.ones((8, 8), complex)
    # optimize.fourier tests x (one copy) and calls backend.fft2 from mbook: no second copy
    assert host_copies(lambda: optimize.fourier(backend.asarray(x))) == 1
    assert host_copies(lambda: backend.fft2(backend.asarray(x))) == 1
    with backend.inside_iterations():
        assert host_copies(lambda: optimize.fourier(backend.asarray(x))) == 0


def test_user_operators_inside_pdhg_copy_nothing_per_iteration(no_copies_per_iteration):
    from mbook.inverse import optimize, solvers

    image = np.random.default_rng(0).random((16, 16))

    def run(n):
        # K written by the user (a lambda outside mbook) around mbook's operators
        solvers.pdhg(backend.asarray(image), backend.asarray(np.zeros((2, 16, 16))),
                     K=lambda u: optimize.gradient(u), K_adjoint=lambda p: -optimize.divergence(p),
                     prox_g=lambda v, t: optimize.prox_squared_distance(v, backend.asarray(image), t),
                     prox_fstar=lambda p, s: optimize.project_ball(p, 0.1), norm=8 ** 0.5,
                     max_num_iter=n, tol=0)

    no_copies_per_iteration(run)


def test_called_from_outside_reads_the_callers_module():
    assert backend.called_from_outside()  # this test module is outside mbook
    with backend.inside_iterations():
        assert not backend.called_from_outside()
    assert backend.called_from_outside()


def test_fftw_wisdom_is_kept_for_the_next_process(tmp_path):
    """A plan measured in one process is in the wisdom file, and the next process plans it from there:
    FFTW_WISDOM_ONLY refuses any problem it has no wisdom for."""
    pytest.importorskip("pyfftw")
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    wisdom = tmp_path / "wisdom"
    env = dict(os.environ, MBOOK_FFTW_WISDOM=str(wisdom), MBOOK_DEVICE="cpu")
    plan = ("from mbook.core import backend, fft_plans; import numpy as np; backend.set_fft_library('pyfftw'); "
            "p = fft_plans.fft2_plan({}, np.complex64, slot='w'); ")
    subprocess.run([sys.executable, "-c", plan.format((3, 40, 36))], env=env, check=True, cwd=root)
    assert wisdom.stat().st_size > 200
    # another shape first (the file is read on the first plan), then the first shape from wisdom only
    reuse = plan.format((2, 16, 16)) + (
        "import pyfftw; a = pyfftw.empty_aligned((3, 40, 36), 'complex64', n=64); "
        "pyfftw.FFTW(a, a, axes=(-2, -1), flags=('FFTW_MEASURE', 'FFTW_WISDOM_ONLY'), "
        "threads=backend.cpu_threads()); print('from wisdom')")
    done = subprocess.run([sys.executable, "-c", reuse], env=env, capture_output=True, text=True, cwd=root)
    assert done.stdout.strip() == "from wisdom", done.stderr
    off = subprocess.run([sys.executable, "-c", reuse], env=dict(env, MBOOK_FFTW_WISDOM=""),
                         capture_output=True, text=True, cwd=root)
    assert off.returncode != 0 and "RuntimeError" in off.stderr  # no file: no wisdom for that problem
