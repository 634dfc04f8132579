"""One pass instead of three: ``b · F[a · ψ]`` as a single cuFFT transform with load and store callbacks.

The multislice spends each slice on ``ψ ← F^-1[p · F[t · ψ]]``: two FFTs and
two element-wise products. On a GPU every product is one more read and write
of the whole wave batch; the transforms themselves take two or three such
passes each, so the products cost about half as much again as the FFTs (the
electron benchmark measured 1.85x the FFTs alone). cuFFT can apply a
function to every element as it loads the input and as it stores the output
(*callbacks*, linked into its kernels just in time, cuFFT 11.3+/CUDA 12.8+);
with ``t`` multiplied on load and ``p`` on store the forward transform does
the products for free, and each slice costs its two FFTs.

:meth:`mbook.core.fft_plans.FFT2Plan.forward_multiplied` calls
:func:`forward_multiplied` here on CuPy buffers and does the three passes
itself otherwise (NumPy, pyFFTW, the strict stand-in), so the CPU and the
stand-in compute the same thing the callbacks do.

When the callbacks are used
---------------------------
Only on CuPy, for ``complex64`` buffers of at least :data:`MIN_ELEMENTS`
elements: linking a callback into cuFFT's kernels costs about a second for
each new transform shape, which small problems would not win back. The
first time a grid shape is met the callbacks are checked against the three
plain passes on two random waves; if they fail to compile or disagree, a
:class:`RuntimeWarning` says so once and the plain passes are used from then
on. ``MBOOK_FFT_CALLBACKS=off`` (or :func:`set_enabled`) turns them off, so
that a benchmark can time both.

This module never imports CuPy: :class:`~mbook.core.fft_plans.FFT2Plan` hands it
the array module of its buffer (``xp.fft.config``), as the device rule asks.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from mbook.core import backend

ENV_VARIABLE = "MBOOK_FFT_CALLBACKS"
#: Smallest buffer (elements) worth the callbacks' one-off linking: 2^23 complex64 values (64 MiB),
#: e.g. 29 probes on a 540² grid.
MIN_ELEMENTS = 2**23
#: Relative error of the self-check: float32 FFTs of random data agree to ~1e-6.
CHECK_RTOL = 1e-4

# What both callbacks share: the factors' pointers (the caller's info buffer) and the complex product
# of the element with the factor at its pixel, the same for every wave of the batch.
_COMMON = r"""
#include <cufftXt.h>

struct mbook_factors { const cufftComplex* load; const cufftComplex* store; unsigned long long n; };

// static: the load and the store modules each carry a copy, linked into one kernel without a clash
static __device__ __forceinline__ cufftComplex mbook_times(cufftComplex a, const cufftComplex* factor,
                                                           unsigned long long offset, unsigned long long n)
{
    cufftComplex b = factor[(INDEX)offset % (INDEX)n];
    cufftComplex x;
    x.x = a.x * b.x - a.y * b.y;
    x.y = a.x * b.y + a.y * b.x;
    return x;
}
"""

_LOAD = _COMMON + r"""
__device__ cufftComplex cufftJITCallbackLoadComplex(
    void* dataIn, unsigned long long offset, void* callerInfo, void* sharedPtr)
{
    const mbook_factors* f = (const mbook_factors*)callerInfo;
    return mbook_times(((cufftComplex*)dataIn)[offset], f->load, offset, f->n);
}

__device__ cufftJITCallbackLoadC d_loadCallbackPtr = cufftJITCallbackLoadComplex;
"""

_STORE = _COMMON + r"""
__device__ void cufftJITCallbackStoreComplex(
    void* dataOut, unsigned long long offset, cufftComplex element, void* callerInfo, void* sharedPointer)
{
    const mbook_factors* f = (const mbook_factors*)callerInfo;
    ((cufftComplex*)dataOut)[offset] = mbook_times(element, f->store, offset, f->n);
}

__device__ cufftJITCallbackStoreC d_storeCallbackPtr = cufftJITCallbackStoreComplex;
"""

_lock = threading.Lock()
_switch = backend.Switch(ENV_VARIABLE)
_checked: dict = {}  # (nx, ny) -> True (callbacks agree) or False (failed: plain passes)
_local = threading.local()  # per thread: its callers' info buffers and callback contexts


def set_enabled(enabled: bool) -> bool:
    """Use the callbacks where they pay (``True``, the default) or never (``False``); returns the setting.

    Overrides ``MBOOK_FFT_CALLBACKS`` (``auto``/``on`` or ``off``).
    """
    return _switch.set(enabled)


def enabled() -> bool:
    """Whether the callbacks may be used: :func:`set_enabled`, else ``MBOOK_FFT_CALLBACKS`` (default on)."""
    return _switch()


def status() -> dict:
    """Grid shapes checked so far and whether the callbacks passed there: ``{(nx, ny): bool}``."""
    return dict(_checked)


def _context(xp, info, index):
    """The callback context of one info buffer (compiled once per index type, entered per transform)."""
    contexts = _local.__dict__.setdefault("contexts", {})
    key = (int(info.data.ptr), index)
    if key not in contexts:
        contexts[key] = xp.fft.config.set_cufft_callbacks(
            cb_load=_LOAD.replace("INDEX", index), cb_load_name="cufftJITCallbackLoadComplex",
            cb_store=_STORE.replace("INDEX", index), cb_store_name="cufftJITCallbackStoreComplex",
            cb_load_data=info.data, cb_store_data=info.data, cb_ver="jit")
    return contexts[key]


def _info(xp, key):
    """This thread's factor-pointer buffer ``[load, store, n]`` (uint64, on the device) for one use.

    Rewritten before every transform (on the stream, so in order), it serves
    every buffer of the thread: cuFFT plans are cached per info buffer and
    shape, and each new plan costs a just-in-time link.
    """
    infos = _local.__dict__.setdefault("infos", {})
    if key not in infos:
        infos[key] = xp.zeros(3, dtype=xp.uint64)
    return infos[key]


def _transform(xp, fft, array, before, after, info, index):
    info[0] = before.data.ptr  # device-side fills: ordered on the stream, no host synchronisation
    info[1] = after.data.ptr
    info[2] = array.shape[-1] * array.shape[-2]
    with _context(xp, info, index):
        result = fft.fft2(array, overwrite_x=True)  # cupyx.scipy.fft: cupy.fft has no overwrite_x
    if result is not array:  # overwrite_x is a hint; keep the one buffer either way
        array[...] = result


def _self_check(xp, fft, gpts):
    """Compile and check the callbacks on two random waves of ``gpts``: (agree, relative error)."""
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((2, 2) + gpts) + 1j * rng.standard_normal((2, 2) + gpts)).astype(np.complex64)
    wave, before, after = xp.asarray(host[0]), xp.asarray(host[1, 0]), xp.asarray(host[1, 1])
    expected = xp.fft.fft2(wave * before) * after
    _transform(xp, fft, wave, before, after, _info(xp, ("check", gpts)), "unsigned int")
    error = float(xp.linalg.norm(wave - expected) / xp.linalg.norm(expected))
    return error <= CHECK_RTOL, error


def usable(xp, fft, array, before, after) -> bool:
    """Whether :func:`forward_multiplied` would use the callbacks for these CuPy arrays (checks them on first use)."""
    if not enabled() or array.size < MIN_ELEMENTS:
        return False
    if not all(a.dtype == np.complex64 and a.flags.c_contiguous for a in (array, before, after)):
        return False
    gpts = tuple(int(n) for n in array.shape[-2:])
    if before.shape != gpts or after.shape != gpts:
        return False
    with _lock:
        if gpts not in _checked:
            try:
                ok, error = _self_check(xp, fft, gpts)
                reason = f"relative error {error:.1e} > {CHECK_RTOL:.0e}"
            except Exception as exc:  # noqa: BLE001 - any compile or link failure means: use the plain passes
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            _checked[gpts] = ok
            if not ok:
                warnings.warn(f"cuFFT callbacks unusable on a {gpts[0]}x{gpts[1]} grid ({reason}); the "
                              f"products run as separate passes ({ENV_VARIABLE}=off skips this check)",
                              RuntimeWarning, stacklevel=4)
    return _checked[gpts]


def forward_multiplied(xp, fft, array, before, after) -> bool:
    """``array ← after · F[before · array]`` in one cuFFT transform, where the callbacks are usable.

    Parameters
    ----------
    xp, fft : modules
        CuPy and :mod:`cupyx.scipy.fft` (:func:`mbook.core.backend.get_array_module`
        and :func:`~mbook.core.backend.fft_module` of the arrays).
    array : (..., nx, ny) cupy.ndarray, complex64, C-contiguous
        The plan's buffer, transformed in place.
    before, after : (nx, ny) cupy.ndarray, complex64, C-contiguous
        Factors applied on load and on store, the same for every wave of the batch.

    Returns
    -------
    bool
        True if done here; False if the caller must do the three plain passes
        (not CuPy, not complex64, too small, callbacks off, or failed their check).
    """
    if not usable(xp, fft, array, before, after):
        return False
    index = "unsigned int" if array.size < 2**32 else "unsigned long long"  # 64-bit modulo is slow on a GPU
    try:
        _transform(xp, fft, array, before, after, _info(xp, ("waves", index)), index)
    except Exception as exc:  # noqa: BLE001 - a plan for this batch shape failed (it fails before it runs)
        gpts = tuple(int(n) for n in array.shape[-2:])
        with _lock:
            _checked[gpts] = False
        warnings.warn(f"cuFFT callbacks failed on a batch of shape {array.shape} ({type(exc).__name__}: {exc}); "
                      f"the products run as separate passes from now on", RuntimeWarning, stacklevel=3)
        return False
    return True
