"""The device rule: one switch between NumPy, CuPy, and a strict CPU stand-in for the GPU.

The device is chosen once, from the environment variable ``MBOOK_DEVICE`` or
from code with :func:`set_device`:

- ``auto`` (default): CuPy when it imports and sees a working GPU, NumPy
  otherwise (the only mode that falls back silently);
- ``cpu``: NumPy and :mod:`scipy.fft`, always;
- ``gpu``: CuPy and :mod:`cupyx.scipy`, or a :class:`RuntimeError` that says
  how to install CuPy;
- ``strict``: the stand-in of :mod:`mbook.core.strict`: NumPy underneath,
  but refusing what CuPy refuses and counting host/device copies, so that
  tests on a machine without a GPU take and check the GPU code path.

The rule (see :mod:`mbook`): public functions move their array inputs to the
selected device once, with :func:`asarray`; private kernels take the array
module of their inputs with :func:`get_array_module` (and FFTs with
:func:`fft_module`, SciPy's submodules with :func:`scipy_module`); arrays come
back on the selected device; :func:`asnumpy` is the one way to the host.
Nothing else in :mod:`mbook` imports CuPy.

Examples
--------
>>> from mbook.core import backend
>>> backend.set_device("cpu")
'cpu'
>>> backend.xp.__name__
'numpy'
>>> x = backend.asarray([1.0, 2.0])
>>> backend.asnumpy(backend.fft2(x[None, :])).real.tolist()
[[3.0, -1.0]]
>>> backend.set_device("strict")
'strict'
>>> backend.asnumpy(backend.fft2(backend.asarray([[1.0, 2.0]]))).real.tolist()
[[3.0, -1.0]]
>>> backend.set_device("cpu")
'cpu'
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import numbers
import os
import sys
import threading
import types

import numpy as np
import scipy.fft

from mbook.core import fftw_wisdom, strict

DEVICES = ("auto", "cpu", "gpu", "strict")
ENV_VARIABLE = "MBOOK_DEVICE"
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install cupy-cuda12x`, "
    "or run on the CPU with MBOOK_DEVICE=cpu"
)

_requested: str | None = None  # what the user asked for; None until first use
_resolved: str | None = None  # "cpu", "gpu" or "strict"


def _check_device_name(device) -> str:
    if not isinstance(device, str) or device.strip().lower() not in DEVICES:
        raise ValueError(
            f"device must be one of {DEVICES} (from {ENV_VARIABLE} or set_device), got {device!r}"
        )
    return device.strip().lower()


@functools.lru_cache(maxsize=1)
def _probe_gpu() -> tuple[bool, str]:
    """Return (usable, reason). Cached: probing CUDA is slow and does not change."""
    try:
        import cupy
    except ImportError as err:
        return False, f"CuPy is not installed ({err}); {CUPY_INSTALL_HINT}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, f"CuPy found no CUDA device; {CUPY_INSTALL_HINT}"
        # A real allocation and kernel: a driver/toolkit mismatch only shows up here.
        float(cupy.arange(4, dtype=cupy.float32).sum())
    except Exception as err:  # CUDA errors come in many classes
        return False, f"CuPy cannot use the GPU ({type(err).__name__}: {err}); {CUPY_INSTALL_HINT}"
    return True, "CuPy sees a working GPU"


def gpu_available() -> bool:
    """True when CuPy imports and can run a kernel on a GPU."""
    return _probe_gpu()[0]


def gpu_status() -> str:
    """One sentence on why the GPU can or cannot be used (for skip reasons and notebooks)."""
    return _probe_gpu()[1]


def set_device(device: str = "auto") -> str:
    """Choose the array backend for everything in :mod:`mbook`.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu", "strict"}
        ``auto`` uses a GPU when CuPy can, else NumPy; ``gpu`` insists on one;
        ``strict`` is the CPU stand-in for the GPU (:mod:`mbook.core.strict`).

    Returns
    -------
    str
        The device in use afterwards, ``"cpu"``, ``"gpu"`` or ``"strict"``.

    Raises
    ------
    ValueError
        For an unknown device name.
    RuntimeError
        For ``"gpu"`` when CuPy or a GPU is missing; the message says how to
        install CuPy.
    """
    global _requested, _resolved
    device = _check_device_name(device)
    if device == "gpu" and not gpu_available():
        raise RuntimeError(f"{ENV_VARIABLE}/set_device asked for 'gpu', but {gpu_status()}")
    if device == "auto":
        resolved = "gpu" if gpu_available() else "cpu"
    else:
        resolved = device
    _requested, _resolved = device, resolved
    return resolved


@contextlib.contextmanager
def use_device(device: str):
    """Select ``device`` inside a ``with`` block, then restore the device selected before.

    For a reference computed on the CPU beside a GPU run, e.g.
    ``with backend.use_device("cpu"): reference = f(x)``.
    """
    previous = get_device()
    set_device(device)
    try:
        yield get_device()
    finally:
        set_device(previous)


def get_device() -> str:
    """The device in use, ``"cpu"``, ``"gpu"`` or ``"strict"`` (read from ``MBOOK_DEVICE`` on first call)."""
    if _resolved is None:
        set_device(os.environ.get(ENV_VARIABLE, "auto"))
    return _resolved


def gpu_code_path() -> bool:
    """True when mbook takes its GPU code path: on a GPU, or on the strict stand-in that checks it."""
    return get_device() != "cpu"


def describe() -> str:
    """A line for a notebook's first output: which device, and which libraries."""
    device = get_device()
    if device == "strict":
        # What the static book shows (its outputs come from the tests, run on the stand-in): say it is the CPU.
        return f"mbook on the CPU, through the strict GPU stand-in (NumPy {np.__version__}; MBOOK_DEVICE=strict)"
    if device == "gpu":
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        return f"mbook on GPU ({name}) with CuPy {cupy.__version__}"
    library = fft_library()
    fft = f"pyFFTW {fftw_wisdom.pyfftw_module().__version__}" if library == "pyfftw" else "scipy.fft"
    # "auto" lands here only without a usable GPU; say why in a few words (gpu_status() has the hint).
    why = "chosen with MBOOK_DEVICE=cpu" if _requested != "auto" else "no GPU: " + gpu_status().split(" (")[0].split(";")[0]
    # Short: the first line of every page in the static book. gpu_status() holds the install hint.
    return f"mbook on the CPU (NumPy {np.__version__}, SciPy {scipy.__version__}, FFTs by {fft}; {why})"


def array_module() -> types.ModuleType:
    """The array module of the selected device: :mod:`numpy`, :mod:`cupy` or the stand-in's.

    ``backend.xp`` is the same thing as an attribute.
    """
    device = get_device()
    if device == "gpu":
        import cupy

        return cupy
    return strict.xp if device == "strict" else np


def _is_cupy(array) -> bool:
    return type(array).__module__.startswith("cupy")


def is_device_array(array) -> bool:
    """True for an array that lives off the host: a CuPy array or one of the strict stand-in."""
    return _is_cupy(array) or strict.is_strict(array)


def get_array_module(*arrays) -> types.ModuleType:
    """The array module that owns ``arrays``: CuPy or the stand-in's if any lives there, else NumPy.

    For kernels, which follow their inputs; public functions first move their
    inputs to the selected device with :func:`asarray`.
    """
    for array in arrays:
        if _is_cupy(array):
            import cupy

            return cupy
        if strict.is_strict(array):
            return strict.xp
    return np


_SCIPY_SUBMODULES = frozenset({"fft", "ndimage", "signal", "special", "linalg", "sparse", "interpolate", "spatial",
                                "stats", "optimize", "integrate"})


def scipy_module(name: str, *arrays) -> types.ModuleType:
    """SciPy's submodule ``name`` (``"fft"``, ``"ndimage"``, ``"special"``, ...) for the device of ``arrays``.

    :mod:`scipy` for NumPy arrays, :mod:`cupyx.scipy` for CuPy arrays, and
    SciPy behind the stand-in's refusals for strict arrays.
    """
    if name not in _SCIPY_SUBMODULES:
        raise ValueError(f"name must be one of SciPy's submodules {sorted(_SCIPY_SUBMODULES)}, got {name!r}")
    xp = get_array_module(*arrays)
    if xp is np:
        return importlib.import_module(f"scipy.{name}")
    if xp is strict.xp:
        return _strict_scipy(name)
    return importlib.import_module(f"cupyx.scipy.{name}")


@functools.lru_cache(maxsize=None)
def _strict_scipy(name: str) -> types.ModuleType:
    return strict.Namespace(importlib.import_module(f"scipy.{name}"), f"mbook.strict.scipy.{name}")


def fft_module(*arrays) -> types.ModuleType:
    """:mod:`scipy.fft` for NumPy arrays, :mod:`cupyx.scipy.fft` for CuPy arrays (and the stand-in's)."""
    return scipy_module("fft", *arrays)


def asarray(array, dtype=None):
    """Put ``array`` on the selected device, once: a no-op when it is already there.

    Public functions call this on their array inputs: with the GPU selected,
    NumPy inputs move to the GPU; with the CPU selected, CuPy inputs come back.
    """
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"array must be an array or a sequence of numbers, got {type(array).__name__} {array!r}")
    device = get_device()
    if device == "cpu":
        return np.asarray(asnumpy(array) if is_device_array(array) else array, dtype=dtype)
    if device == "strict":  # a CuPy array (made while the GPU was selected) goes by the host, as on the CPU
        return strict.asarray(array.get() if _is_cupy(array) else array, dtype=dtype)
    import cupy

    return cupy.asarray(array, dtype=dtype)


def synchronize() -> None:
    """Wait until the GPU has finished the work queued so far (no-op on the CPU and the stand-in).

    CuPy returns from a call once its kernels are queued, so a clock read right after it measures the
    queueing, not the work: read clocks that time device work after this.
    """
    if get_device() == "gpu":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def asnumpy(array) -> np.ndarray:
    """Return ``array`` as a NumPy array, copying it off the device when needed: the one way to the host."""
    if is_device_array(array):
        return array.get()
    return np.asarray(array)


_local = threading.local()


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def fft_workers(workers: int):
    """Threads that scipy.fft may use for FFTs made in this thread (CPU only).

    Use ``fft_workers(1)`` inside a pool that already keeps every core busy;
    the default, ``-1``, lets one FFT use all cores.
    """
    previous = getattr(_local, "workers", -1)
    _local.workers = workers
    try:
        yield
    finally:
        _local.workers = previous


def current_fft_workers() -> int:
    """The threads :func:`fft_workers` set for FFTs made in this thread; ``-1`` (the default): all cores."""
    return getattr(_local, "workers", -1)


def fft_kwargs(array) -> dict:
    """Keyword arguments for an FFT of ``array`` from :func:`fft_module` (threads on the CPU)."""
    # scipy.fft parallelises over the batch axes with workers; cuFFT takes no such option.
    return {"workers": current_fft_workers()} if get_array_module(array) is np else {}


# ----------------------------------------------------------------------------- entry checks
# Operators (FFTs, gradients, proximal maps, spectrum crops) are public, and mbook's own solvers call
# them on every iteration. A finiteness test is one reduction and one scalar copy to the host: right
# when a user calls the operator, wrong on every iteration of a solver that checked its inputs once on
# entry. So the operators test finiteness only for calls from outside mbook, and not while one of
# mbook's iteration loops runs a user's callables (:func:`inside_iterations`).
_iterating = contextvars.ContextVar("mbook_iterating", default=False)


@contextlib.contextmanager
def inside_iterations():
    """Mark the iterations of a solver that runs user callables (PDHG's ``K``, a ``prox_g``...).

    Operators called from them skip their finiteness test (see :func:`called_from_outside`): the
    solver checked its inputs on entry, and the test would copy to the host on every iteration.
    """
    token = _iterating.set(True)
    try:
        yield
    finally:
        _iterating.reset(token)


def called_from_outside(depth: int = 1) -> bool:
    """Whether the public function ``depth`` frames above the caller was called from outside mbook.

    ``called_from_outside()`` inside a public function's body asks about that function's caller:
    user code, a test or a page (True), or mbook itself or one of its iteration loops (False).
    Reading the caller's module costs well under a microsecond; it copies nothing.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (frames above the caller), got {depth!r}")
    if _iterating.get():
        return False
    module = sys._getframe(depth + 1).f_globals.get("__name__", "")
    return not (module == "mbook" or module.startswith("mbook."))


def refuse_non_finite(array, name: str) -> None:
    """Refuse NaN or inf in ``array`` (one reduction and one scalar copy to the host), naming ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be the parameter's name (a str), got {name!r:.60}")
    if not hasattr(array, "dtype") or not hasattr(array, "ndim"):
        raise TypeError(f"array ({name}) must be a NumPy, CuPy or stand-in array, got {type(array).__name__}")
    xp = get_array_module(array)
    if array.dtype.kind in "fc" and not bool(xp.all(xp.isfinite(array))):
        raise ValueError(f"{name} holds non-finite values (NaN or inf); clean or mask the data first")


def _fft_input(array, axes, min_ndim):
    """Refuse what no FFT can take, naming the parameter: type, size and axes always; NaN and inf
    only when the FFT was called from outside mbook (see :func:`called_from_outside`)."""
    if isinstance(array, (str, bytes)) or array is None or not hasattr(array, "ndim"):
        raise TypeError(f"array must be a NumPy, CuPy or stand-in array, got {type(array).__name__}")
    if array.ndim < min_ndim or array.size == 0:
        raise ValueError(f"array must be non-empty with at least {min_ndim} axes, got shape {array.shape}")
    if axes is not None:
        if isinstance(axes, (str, bytes)) or not all(
                isinstance(a, numbers.Integral) and not isinstance(a, bool) and -array.ndim <= a < array.ndim
                for a in axes):
            raise ValueError(f"axes must be integer axes of a {array.ndim}D array, got {axes!r}")
    if called_from_outside(depth=2):
        refuse_non_finite(array, "array")


def fft2(array, axes=(-2, -1)):
    """Unnormalised forward 2D FFT over ``axes`` on the array's own device.

    Conventions are those of :mod:`mbook.core.grids`: no shift, no scaling, so
    ``ifft2(fft2(a)) == a`` and ``sum |a|^2 = sum |fft2(a)|^2 / N``.
    Called from outside mbook, it refuses NaN and inf (all four FFTs do; see
    :func:`called_from_outside`).
    """
    _fft_input(array, axes, 2)
    return fft_module(array).fft2(array, axes=axes, **fft_kwargs(array))


def ifft2(array, axes=(-2, -1)):
    """Inverse of :func:`fft2` (scaled by 1/N)."""
    _fft_input(array, axes, 2)
    return fft_module(array).ifft2(array, axes=axes, **fft_kwargs(array))


def fftn(array, axes=None):
    """Unnormalised forward N-dimensional FFT on the array's own device."""
    _fft_input(array, axes, 1)
    return fft_module(array).fftn(array, axes=axes, **fft_kwargs(array))


def ifftn(array, axes=None):
    """Inverse of :func:`fftn` (scaled by 1/N)."""
    _fft_input(array, axes, 1)
    return fft_module(array).ifftn(array, axes=axes, **fft_kwargs(array))


# ----------------------------------------------------------------------------- the CPU FFT library

#: CPU libraries for :func:`mbook.core.fft_plans.fft2_plan`: FFTW through pyFFTW (planned, in place) or
#: scipy.fft (pocketfft).
FFT_LIBRARIES = ("auto", "pyfftw", "scipy")
_fft_library = "auto"


class Switch:
    """An on/off setting of the GPU path: set from code, else from an environment variable.

    The variable takes ``auto`` or ``on`` (the default) or ``off``, read on first use; :meth:`set`
    overrides it. The cuFFT callbacks (:mod:`mbook.core.fused_fft`) and the fused kernels
    (:mod:`mbook.core.fusion`) each keep one, so that a benchmark can time both ways.
    """

    def __init__(self, variable: str):
        self.variable = variable
        self.value: bool | None = None  # None: from the environment on first use

    def set(self, enabled: bool) -> bool:
        """Turn on (``True``) or off (``False``) whatever the environment says; returns the setting."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self.value = enabled
        return enabled

    def __call__(self) -> bool:
        """Whether it is on: :meth:`set`, else the environment variable."""
        if self.value is None:
            value = os.environ.get(self.variable, "auto").strip().lower()
            if value not in ("auto", "on", "off"):
                raise ValueError(f"{self.variable} must be auto, on or off, got {value!r}")
            self.value = value != "off"
        return self.value


def set_fft_library(library: str = "auto") -> str:
    """Choose the CPU library behind :func:`mbook.core.fft_plans.fft2_plan` (benchmarks and tests compare them).

    Parameters
    ----------
    library : {"auto", "pyfftw", "scipy"}
        ``auto`` takes pyFFTW when it is installed (its measured FFTW plans
        run the multislice's batched 2D FFTs 1.6-2.3x faster than
        pocketfft), else :mod:`scipy.fft`.

    Returns
    -------
    str
        The library now in use on the CPU, ``"pyfftw"`` or ``"scipy"``.
    """
    global _fft_library
    if not isinstance(library, str) or library not in FFT_LIBRARIES:
        raise ValueError(f"library must be one of {FFT_LIBRARIES}, got {library!r}")
    if library == "pyfftw" and fftw_wisdom.pyfftw_module() is None:
        raise RuntimeError("set_fft_library('pyfftw'): pyFFTW is not installed; `pip install pyfftw`")
    _fft_library = library
    # The plans kept per thread need no clearing: their key holds the CPU library (cpu_fft_library()).
    return cpu_fft_library()


def fft_library() -> str:
    """The library :func:`mbook.core.fft_plans.fft2_plan` uses now: ``"pyfftw"`` or ``"scipy"``; ``"cupy"`` or
    ``"strict"`` off the CPU."""
    if gpu_code_path():
        return "cupy" if get_device() == "gpu" else "strict"
    return cpu_fft_library()


def cpu_fft_library() -> str:
    """The library CPU plans use now, whatever the device: ``"pyfftw"`` or ``"scipy"`` (see :func:`set_fft_library`)."""
    if _fft_library == "auto":
        return "pyfftw" if fftw_wisdom.pyfftw_module() is not None else "scipy"
    return _fft_library


def __getattr__(name):
    # `backend.xp` and `backend.fft` follow the current device, even after set_device().
    if name == "xp":
        return array_module()
    if name == "fft":
        return fft_module(array_module().zeros(1))
    raise AttributeError(f"module 'mbook.core.backend' has no attribute {name!r}")
