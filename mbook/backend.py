"""One switch between NumPy on the CPU and CuPy on a GPU.

The device is chosen once, from the environment variable ``MBOOK_DEVICE``
(``auto``, ``cpu`` or ``gpu``; default ``auto``) or from code with
:func:`set_device`. Every other module of :mod:`mbook` gets its array module
from here, so a notebook runs unchanged on a laptop and on a GPU workstation:

- ``auto``: CuPy when it imports and sees a working GPU, NumPy otherwise
  (the only mode that falls back silently);
- ``cpu``: NumPy and :mod:`scipy.fft`, always;
- ``gpu``: CuPy and :mod:`cupyx.scipy.fft`, or a :class:`RuntimeError` that says
  how to install CuPy.

Kernels infer the module from their input with :func:`get_array_module`;
code that creates arrays uses ``backend.xp`` (the current module, looked up
at each access so it follows :func:`set_device`); FFTs come from
``backend.fft`` or :func:`fft2`; results meant for plotting or saving go
through :func:`asnumpy`.

Examples
--------
>>> from mbook import backend
>>> backend.set_device("cpu")
'cpu'
>>> backend.xp.__name__
'numpy'
>>> x = backend.asarray([1.0, 2.0])
>>> backend.asnumpy(backend.fft2(x[None, :])).real.tolist()
[[3.0, -1.0]]
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import types

import numpy as np
import scipy.fft

DEVICES = ("auto", "cpu", "gpu")
ENV_VARIABLE = "MBOOK_DEVICE"
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install cupy-cuda12x`, "
    "or run on the CPU with MBOOK_DEVICE=cpu"
)

_requested: str | None = None  # what the user asked for; None until first use
_resolved: str | None = None  # "cpu" or "gpu"


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
    device : {"auto", "cpu", "gpu"}
        ``auto`` uses a GPU when CuPy can, else NumPy; ``gpu`` insists on one.

    Returns
    -------
    str
        The device in use afterwards, ``"cpu"`` or ``"gpu"``.

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


def get_device() -> str:
    """The device in use, ``"cpu"`` or ``"gpu"`` (read from ``MBOOK_DEVICE`` on first call)."""
    if _resolved is None:
        set_device(os.environ.get(ENV_VARIABLE, "auto"))
    return _resolved


def describe() -> str:
    """A line for a notebook's first output: which device, and which libraries."""
    device = get_device()
    if device == "gpu":
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        return f"mbook on GPU ({name}) with CuPy {cupy.__version__}"
    return (
        f"mbook on CPU with NumPy {np.__version__} and SciPy {scipy.__version__} "
        f"({gpu_status() if _requested == 'auto' else 'device forced to cpu'})"
    )


def array_module() -> types.ModuleType:
    """The array module of the current device: :mod:`numpy` or :mod:`cupy`.

    ``backend.xp`` is the same thing as an attribute.
    """
    if get_device() == "gpu":
        import cupy

        return cupy
    return np


def get_array_module(*arrays) -> types.ModuleType:
    """The array module that owns ``arrays`` (CuPy if any is a CuPy array)."""
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def fft_module(*arrays) -> types.ModuleType:
    """:mod:`scipy.fft` for NumPy arrays, :mod:`cupyx.scipy.fft` for CuPy arrays."""
    if get_array_module(*arrays) is np:
        return scipy.fft
    import cupyx.scipy.fft

    return cupyx.scipy.fft


def asarray(array, dtype=None):
    """Put ``array`` on the current device (a no-op when it is already there)."""
    return array_module().asarray(array, dtype=dtype)


def asnumpy(array) -> np.ndarray:
    """Return ``array`` as a NumPy array, copying it off the GPU when needed."""
    if type(array).__module__.startswith("cupy"):
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


def fft_kwargs(array) -> dict:
    """Keyword arguments for an FFT of ``array`` from :func:`fft_module` (threads on the CPU)."""
    # scipy.fft parallelises over the batch axes with workers; cuFFT takes no such option.
    return {"workers": getattr(_local, "workers", -1)} if get_array_module(array) is np else {}


def fft2(array, axes=(-2, -1)):
    """Unnormalised forward 2D FFT over ``axes`` on the array's own device.

    Conventions are those of :mod:`mbook.grids`: no shift, no scaling, so
    ``ifft2(fft2(a)) == a`` and ``sum |a|^2 = sum |fft2(a)|^2 / N``.
    """
    return fft_module(array).fft2(array, axes=axes, **fft_kwargs(array))


def ifft2(array, axes=(-2, -1)):
    """Inverse of :func:`fft2` (scaled by 1/N)."""
    return fft_module(array).ifft2(array, axes=axes, **fft_kwargs(array))


def fftn(array, axes=None):
    """Unnormalised forward N-dimensional FFT on the array's own device."""
    return fft_module(array).fftn(array, axes=axes, **fft_kwargs(array))


def ifftn(array, axes=None):
    """Inverse of :func:`fftn` (scaled by 1/N)."""
    return fft_module(array).ifftn(array, axes=axes, **fft_kwargs(array))


def __getattr__(name):
    # `backend.xp` and `backend.fft` follow the current device, even after set_device().
    if name == "xp":
        return array_module()
    if name == "fft":
        return fft_module(array_module().zeros(1))
    raise AttributeError(f"module 'mbook.backend' has no attribute {name!r}")
