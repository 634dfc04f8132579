"""``FFT2Plan.forward_multiplied``: ``b · F[a · ψ]``, with the products fused into cuFFT callbacks on a GPU.

On NumPy, pyFFTW and the strict stand-in the three passes run in turn; the tests check that result
against the products and FFT written out. The CuPy path cannot run without a GPU: its Python side (the
info buffer of factor pointers, one callback context per thread, the self-check and the fallback with a
warning) is exercised here against a stand-in for CuPy's callback API that applies the callbacks the way
cuFFT does, reading the factors through the pointers in the info buffer. The CUDA source itself is
checked on a GPU (the ``gpu`` parameters, and the electron benchmark's fused/plain columns).
"""

import types
import warnings

import numpy as np
import pytest

from mbook.core import backend, fft_plans, fused_fft


def random_complex(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("library", ["scipy", "pyfftw"])
def test_forward_multiplied_is_the_products_around_the_fft(device, library, monkeypatch):
    monkeypatch.setattr(fused_fft, "MIN_ELEMENTS", 1)  # on a GPU: the callbacks themselves, compiled and run
    monkeypatch.setattr(fused_fft._switch, "value", True)
    if device == "cpu":
        backend.set_fft_library(library)
    elif library == "pyfftw":
        pytest.skip("pyFFTW serves the CPU only")
    try:
        waves, before, after = random_complex((3, 24, 20), 0), random_complex((24, 20), 1), random_complex((24, 20), 2)
        xp = backend.xp
        plan = fft_plans.fft2_plan(waves.shape, np.complex64, xp=xp, slot="test-fused")
        plan.array[...] = backend.asarray(waves)
        out = plan.forward_multiplied(backend.asarray(before), backend.asarray(after))
        assert out is plan.array
        expected = np.fft.fft2(waves * before) * after
        np.testing.assert_allclose(backend.asnumpy(out), expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())
        assert fused_fft.status().get((24, 20)) is (True if device == "gpu" else None)
    finally:
        backend.set_fft_library("auto")


# ----------------------------------------------------------------------------- the CuPy side, on a stand-in
class DeviceArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` like a CuPy array (the address of its first element)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


class FakeCallbacks:
    """CuPy's ``xp.fft.config.set_cufft_callbacks`` and ``xp.fft.fft2``, applying the callbacks in NumPy."""

    def __init__(self, fail=False):
        self.fail, self.ignored, self.active, self.compiled, self.arrays = fail, False, None, [], {}
        # cupy.fft (NumPy's signature: no overwrite_x) holds the callback config; cupyx.scipy.fft transforms
        self.xp = types.SimpleNamespace(
            uint64=np.uint64, linalg=np.linalg, asarray=self.asarray, zeros=self.zeros,
            fft=types.SimpleNamespace(fft2=lambda array: self.fft2(array), config=types.SimpleNamespace(
                set_cufft_callbacks=self.set_cufft_callbacks)))
        self.fft = types.SimpleNamespace(fft2=self.fft2)

    def register(self, array):
        array = np.ascontiguousarray(array).view(DeviceArray)
        self.arrays[array.data.ptr] = array
        return array

    def asarray(self, array):
        return self.register(np.array(array))

    def zeros(self, n, dtype):
        return self.register(np.zeros(n, dtype))

    def set_cufft_callbacks(self, **kwargs):
        if self.fail:
            raise RuntimeError("JIT callback support requires cuFFT from CUDA 12.8+")
        self.compiled.append(kwargs)
        fake = self

        class Context:
            def __enter__(self):
                fake.active = kwargs

            def __exit__(self, *exc):
                fake.active = None

        return Context()

    def fft2(self, array, overwrite_x=False):
        result = np.fft.fft2(np.asarray(array)).astype(np.complex64)
        if self.active is not None and not self.ignored:  # what cuFFT does with the load and store callbacks
            info = self.arrays[self.active["cb_load_data"].ptr]
            assert self.active["cb_store_data"].ptr == info.data.ptr
            load, store, n = self.arrays[int(info[0])], self.arrays[int(info[1])], int(info[2])
            assert n == array.shape[-1] * array.shape[-2]
            result = (np.fft.fft2(np.asarray(array) * load) * store).astype(np.complex64)
        if overwrite_x:
            array[...] = result
            return array
        return result.view(DeviceArray)


@pytest.fixture
def callbacks(monkeypatch):
    """Fresh module state, callbacks on, and a threshold small enough for test arrays."""
    monkeypatch.setattr(fused_fft, "_checked", {})
    monkeypatch.setattr(fused_fft, "_local", type(fused_fft._local)())
    monkeypatch.setattr(fused_fft, "MIN_ELEMENTS", 1000)
    monkeypatch.setattr(fused_fft._switch, "value", True)
    return FakeCallbacks()


def test_callbacks_multiply_on_load_and_store_through_the_info_buffer(callbacks):
    fake = callbacks
    waves = fake.asarray(random_complex((4, 16, 18), 3))
    host = np.array(waves)
    for seed in (4, 6):  # two slices: the info buffer is rewritten, the context reused
        before, after = fake.asarray(random_complex((16, 18), seed)), fake.asarray(random_complex((16, 18), seed + 1))
        assert fused_fft.forward_multiplied(fake.xp, fake.fft, waves, before, after)
        host = np.fft.fft2(host * np.asarray(before)) * np.asarray(after)
        np.testing.assert_allclose(np.asarray(waves), host, rtol=1e-4, atol=1e-4 * np.abs(host).max())
    assert fused_fft.status() == {(16, 18): True}
    # one context for the self-check and one for the waves, compiled once each
    assert len(fake.compiled) == 2
    for kwargs in fake.compiled:
        assert kwargs["cb_ver"] == "jit" and "INDEX" not in kwargs["cb_load"] + kwargs["cb_store"]
        assert kwargs["cb_load_name"] in kwargs["cb_load"] and kwargs["cb_store_name"] in kwargs["cb_store"]
        assert "unsigned int" in kwargs["cb_load"]  # 32-bit index arithmetic below 2**32 elements


def test_small_or_unsuitable_buffers_take_the_plain_passes(callbacks):
    fake = callbacks
    factor = fake.asarray(random_complex((16, 18), 0))
    few = fake.asarray(random_complex((2, 16, 18), 1))  # 576 elements, under the threshold of 1000
    assert not fused_fft.forward_multiplied(fake.xp, fake.fft, few, factor, factor)
    waves = fake.asarray(random_complex((4, 16, 18), 1))
    double = waves.astype(np.complex128).view(DeviceArray)
    assert not fused_fft.forward_multiplied(fake.xp, fake.fft, double, factor, factor)
    assert not fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor[:8], factor)
    fused_fft.set_enabled(False)
    assert not fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor, factor)
    assert fake.compiled == [] and fused_fft.status() == {}


def test_callbacks_that_fail_warn_once_and_fall_back(callbacks):
    fake = callbacks
    fake.fail = True
    waves, factor = fake.asarray(random_complex((4, 16, 18), 1)), fake.asarray(random_complex((16, 18), 2))
    with pytest.warns(RuntimeWarning, match=r"cuFFT callbacks unusable on a 16x18 grid \(RuntimeError: JIT"):
        assert not fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked once per grid: no second warning, no second attempt
        assert not fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor, factor)
    assert fused_fft.status() == {(16, 18): False}


def test_callbacks_that_disagree_are_not_used(callbacks):
    fake = callbacks
    fake.ignored = True  # compiled, but the transform leaves the products out
    waves, factor = fake.asarray(random_complex((4, 16, 18), 1)), fake.asarray(random_complex((16, 18), 2))
    with pytest.warns(RuntimeWarning, match="relative error"):
        assert not fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor, factor)


def test_the_switch_is_checked(monkeypatch):
    monkeypatch.setattr(fused_fft._switch, "value", None)
    with pytest.raises(TypeError, match="enabled must be True or False"):
        fused_fft.set_enabled("off")
    monkeypatch.setenv(fused_fft.ENV_VARIABLE, "sometimes")
    with pytest.raises(ValueError, match="MBOOK_FFT_CALLBACKS must be auto, on or off, got 'sometimes'"):
        fused_fft.enabled()
    monkeypatch.setenv(fused_fft.ENV_VARIABLE, "off")
    assert fused_fft.enabled() is False


def test_a_plan_that_fails_after_the_check_falls_back_once(callbacks):
    fake = callbacks
    waves, factor = fake.asarray(random_complex((4, 16, 18), 1)), fake.asarray(random_complex((16, 18), 2))
    assert fused_fft.forward_multiplied(fake.xp, fake.fft, waves, factor, factor)  # checked and used
    fake.fail = True  # e.g. cuFFT cannot make the plan for a new batch shape
    fused_fft._local.contexts.clear()
    more = fake.asarray(random_complex((6, 16, 18), 3))
    untouched = np.array(more)
    with pytest.warns(RuntimeWarning, match=r"cuFFT callbacks failed on a batch of shape \(6, 16, 18\)"):
        assert not fused_fft.forward_multiplied(fake.xp, fake.fft, more, factor, factor)
    assert fused_fft.status() == {(16, 18): False}  # the caller's plain passes start from the input
    np.testing.assert_array_equal(np.array(more), untouched)
