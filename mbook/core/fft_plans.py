"""In-place 2D FFT plans, one per thread and wave shape: where the multislice spends its time.

:func:`fft2_plan` hands out an :class:`FFT2Plan`: a work buffer and its
forward and unnormalised inverse transforms, made on first use and kept for
this thread (up to :data:`CACHED_PLAN_BYTES` per buffer). On the CPU the
transforms are FFTW's through pyFFTW, planned by measurement and kept in
:mod:`mbook.core.fftw_wisdom`, or :mod:`scipy.fft`'s, as
:func:`mbook.core.backend.set_fft_library` chose; on a GPU cuFFT's, with the
multislice's products fused into the forward transform where that pays
(:mod:`mbook.core.fused_fft`).
"""

from __future__ import annotations

import math
import numbers
import threading
import time

import numpy as np

from mbook.core import backend, fftw_wisdom, fused_fft, strict

_plan_lock = threading.Lock()  # FFTW's planner is not thread-safe; executing distinct plans is
_PLANS_PER_THREAD = 4  # buffers kept per thread: a scan uses one or two batch shapes
#: Larger work buffers are made per call and freed after it, so that no big array (a GPU batch of
#: probes) stays allocated behind the user's back; making one costs little next to its FFTs.
CACHED_PLAN_BYTES = 64 * 2**20
_local = threading.local()  # per thread: its plans, by shape, dtype, device, workers, library and slot


class FFT2Plan:
    """Forward and unnormalised inverse 2D FFTs of one work buffer, in place.

    The multislice does two FFTs per slice per wave; planning them once and
    transforming in place (no new array per FFT) is where its time goes. Get
    plans from :func:`fft2_plan`, which keeps one per thread and shape.

    With pyFFTW the plans are chosen by FFTW_MEASURE, i.e. by timing
    candidate algorithms, and kept in a wisdom file (:func:`mbook.core.fftw_wisdom.path`)
    that later processes on the machine reuse; two machines (or a fresh
    wisdom file) may pick different algorithms whose float32 rounding differs
    (~1e-7 relative). ``backend.set_fft_library("scipy")`` gives bit-for-bit
    repeatable runs, at pocketfft's speed.

    Attributes
    ----------
    array : (..., nx, ny) ndarray, complex64 or complex128
        The buffer both transforms act on (NumPy, 64-byte aligned for FFTW;
        or CuPy). Fill it, then call :meth:`forward` / :meth:`backward`.
    scale : float
        ``1 / (nx ny)``: :meth:`backward` leaves it out, so ``scale *
        backward(forward(a)) == a``. Fold it into a kernel (e.g. the Fresnel
        propagator) to save a pass over the data.
    """

    def __init__(self, shape, dtype, xp):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.scale = 1.0 / (self.shape[-1] * self.shape[-2])
        self.library = backend.cpu_fft_library() if xp is np else ("strict" if xp is strict.xp else "cupy")
        if self.library == "pyfftw":
            pyfftw = fftw_wisdom.pyfftw_module()
            self.array = pyfftw.empty_aligned(self.shape, self.dtype, n=64)
            workers = backend.current_fft_workers()
            threads = backend.cpu_threads() if workers == -1 else max(1, workers)
            with _plan_lock:  # MEASURE: FFTW times candidate algorithms once per shape (wisdom is kept)
                fftw_wisdom.load(pyfftw)
                start = time.perf_counter()
                self._forward, self._backward = (
                    pyfftw.FFTW(self.array, self.array, axes=(-2, -1), direction=direction,
                                flags=("FFTW_MEASURE",), threads=threads, planning_timelimit=10.0)
                    for direction in ("FFTW_FORWARD", "FFTW_BACKWARD"))
                if time.perf_counter() - start > 0.01:  # measured, not taken from the wisdom: keep it
                    fftw_wisdom.save(pyfftw)
            self.array[...] = 0  # planning with MEASURE scribbles on the buffer
        else:
            self.array = xp.zeros(self.shape, self.dtype)

    def forward(self):
        """``array ← F[array]`` (unnormalised, FFT order); returns ``array``."""
        if self.library == "pyfftw":
            self._forward.execute()
        else:
            self._store(backend.fft_module(self.array).fft2(self.array, overwrite_x=True,
                                                            **backend.fft_kwargs(self.array)))
        return self.array

    def forward_multiplied(self, before, after):
        """``array ← after · F[before · array]`` (``before``, ``after``: ``(nx, ny)``, shared by the batch).

        A multislice step's product with the transmission, forward FFT and
        product with the propagator. On a GPU, for large batches, the two
        products ride in the transform as cuFFT load and store callbacks
        (:mod:`mbook.core.fused_fft`): one pass over the data instead of three.
        Elsewhere the three passes run in turn; the result is the same.
        """
        if self.library == "cupy" and fused_fft.forward_multiplied(
                backend.get_array_module(self.array), backend.fft_module(self.array), self.array, before, after):
            return self.array
        self.array *= before
        self.forward()
        self.array *= after
        return self.array

    def backward(self):
        """``array ← N F^-1[array]``: the inverse FFT without its ``1/N``; returns ``array``."""
        if self.library == "pyfftw":
            self._backward.execute()
        else:
            self._store(backend.fft_module(self.array).ifft2(self.array, overwrite_x=True, norm="forward",
                                                             **backend.fft_kwargs(self.array)))
        return self.array

    def _store(self, result):
        if result is not self.array:  # overwrite_x is a hint; keep the one buffer either way
            self.array[...] = result


def fft2_plan(shape, dtype=np.complex64, *, xp=None, slot="waves") -> FFT2Plan:
    """This thread's :class:`FFT2Plan` for waves of ``shape`` (made on first use, then reused).

    The plan's buffer is shared by every call from this thread with this
    shape: copy a result out of it before the next transform you want to keep.
    Plans whose buffer exceeds :data:`CACHED_PLAN_BYTES` are not kept: each
    call gets a new one.
    FFTW threads follow :func:`mbook.core.backend.fft_workers` at the time the plan is made.

    Parameters
    ----------
    shape : tuple of int
        ``(..., nx, ny)``; the FFTs run over the last two axes.
    dtype : complex dtype
        ``complex64`` (the multislice's) or ``complex128``.
    xp : module, optional
        NumPy or CuPy; default the current device's.
    slot : str
        Name of the buffer's use: two loops that interleave transforms of
        one shape (the waves, and the transmission functions built slice by
        slice) take different slots so that neither overwrites the other.
    """
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise ValueError(f"shape must be a sequence of positive integers, got {shape!r}")
    if not isinstance(slot, str):
        raise TypeError(f"slot must be a str naming the plan's buffer, got {slot!r}")
    xp = xp or backend.array_module()
    dtype = np.dtype(dtype)
    if dtype.kind != "c" or len(shape) < 2:
        raise ValueError(f"fft2_plan needs a complex dtype and at least 2 axes, got {dtype} and shape {shape}")
    if math.prod(shape) * dtype.itemsize > CACHED_PLAN_BYTES:
        return FFT2Plan(tuple(int(n) for n in shape), dtype, xp)
    plans = _local.__dict__.setdefault("plans", {})
    key = (tuple(int(n) for n in shape), dtype.str, xp.__name__, backend.current_fft_workers(),
           backend.cpu_fft_library(), slot)
    if key not in plans:
        while len(plans) >= _PLANS_PER_THREAD:  # drop the oldest buffer
            plans.pop(next(iter(plans)))
        plans[key] = FFT2Plan(key[0], dtype, xp)
    return plans[key]
