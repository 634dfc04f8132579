"""mbook: the library behind the Computational Microscopy book.

Layout
------
Domain subpackages mirror the book, over a shared core::

    pages (book/)
      |
    inverse methods   mbook.inverse (solvers, phase retrieval, registration)
      |                 ... later tomography, learning, segmentation, geometry
    forward models    mbook.electron   mbook.light   mbook.cryoem (-> electron: the CTF)
      |
    mbook.core        backend, strict, checks, grids, progress, plotting,
                      propagation, detection

A layer imports only from the layers below it; forward models draw no
figures; solvers know no physics (operators come in as functions); no
module imports a private name of another (shared checks live in
:mod:`mbook.core.checks`).

The device rule
---------------
``MBOOK_DEVICE=auto|cpu|gpu|strict`` (or :func:`mbook.core.backend.set_device`)
selects one device for everything:

1. **Entry points move their inputs, once.** Every public function puts its
   array inputs on the selected device (:func:`mbook.core.checks.check_array`
   or :func:`mbook.core.backend.asarray`) before any work, whatever the caller
   passed: with the GPU selected, NumPy inputs go to the GPU; with the CPU
   selected, CuPy inputs come back.
2. **Kernels follow their inputs.** Private functions take the array module
   of what they are given (:func:`mbook.core.backend.get_array_module`,
   :func:`~mbook.core.backend.fft_module`,
   :func:`~mbook.core.backend.scipy_module`) and never move data. Hot loops
   copy nothing to the host: no ``float()``, ``.item()`` or ``if`` on a device
   value per iteration (convergence is tested every ``check_every``
   iterations), no ``np.asarray`` of device data, no Python loop over atoms,
   images, LEDs or rotations where an array axis and a memory-budgeted batch
   do.
3. **Results come back on the selected device.** Arrays, and the arrays
   inside result tuples (histories included), are device arrays: NumPy on the
   CPU, CuPy on the GPU. Plain numbers (an error, a resolution, a count) are
   Python floats and ints. :mod:`mbook.core.plotting` accepts device arrays;
   :func:`mbook.core.backend.asnumpy` is the one way to the host, for a
   figure, a file or ``np.testing``.
4. **Random draws are made on the host** from a seeded
   :func:`numpy.random.default_rng`, so a seed gives the same numbers on every
   device, and then moved. Producers of test objects (phantoms, synthetic
   data, structures) follow rules 1-3 like everything else.
5. **Host-only steps say so.** Where a step has no device implementation
   (ase's structures, SciPy's KD-trees, POT's exact transport), the function
   copies to the host, computes there, says so in its docstring, and still
   returns its arrays on the selected device.

``strict`` is a CPU stand-in for the GPU (:mod:`mbook.core.strict`): NumPy
underneath, but it refuses implicit conversion to NumPy and host arrays mixed
into device arithmetic, as CuPy does, and counts host/device copies. The tests
and every page run on it, so code that would break on a GPU fails on any
machine.

Sizes
-----
``MBOOK_SIZE=small|full``: ``small`` (default) runs every page on a laptop CPU
in seconds; ``full`` is the research-size run meant for a GPU.
"""

from __future__ import annotations

import os

from mbook.core import backend, grids

__version__ = "0.1.0"

SIZES = ("small", "full")


def size() -> str:
    """The problem size asked for by ``MBOOK_SIZE`` (``"small"`` unless set).

    Raises
    ------
    ValueError
        When ``MBOOK_SIZE`` is set to anything but ``small`` or ``full``.
    """
    value = os.environ.get("MBOOK_SIZE", "small").strip().lower()
    if value not in SIZES:
        raise ValueError(f"MBOOK_SIZE must be one of {SIZES}, got {value!r}")
    return value


def by_size(*, small, full):
    """Pick a parameter by the size knob: ``by_size(small=128, full=1024)``.

    Examples
    --------
    >>> import os
    >>> os.environ.pop("MBOOK_SIZE", None) and None
    >>> by_size(small=128, full=1024)
    128
    """
    return full if size() == "full" else small


__all__ = ["backend", "grids", "size", "by_size", "SIZES"]
