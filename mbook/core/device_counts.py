"""What the strict stand-in counts: copies between host and device, and device operations.

On CuPy every copy of a value to the host waits for the device, and every
array operation is at least one kernel launch, which costs the host several
microseconds however small the array. :mod:`mbook.core.strict` counts both as
its arrays compute, in this thread, so that a test can show that an iterative
solver copies nothing to the host per iteration (:func:`count_transfers`), and
a benchmark can find the loops whose launches would set a GPU's time
(:func:`count_operations`, optionally by the ``mbook`` function that issued
them). A fused kernel (:mod:`mbook.core.fusion`) counts as one operation
(:func:`one_operation`).

Examples
--------
>>> from mbook.core import strict
>>> a = strict.xp.ones(8)
>>> with strict.count_operations() as ops:
...     b = (a * 2 + 1).sum()
>>> ops.operations
3
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading


class _Counts(threading.local):
    def __init__(self):
        self.to_host = 0
        self.to_device = 0
        self.operations = 0
        self.callers = None  # a Counter while count_operations(by_caller=True) runs in this thread
        self.host_callers = None  # the same for the copies to the host
        self.suspended = 0  # inside one_operation(): the block's operations are one kernel


_counts = _Counts()
#: Modules skipped when an operation is charged to the ``mbook`` function that issued it: the stand-in
#: itself and the thin wrappers every module goes through.
_PLUMBING = ("mbook.core.strict", "mbook.core.device_counts", "mbook.core.backend", "mbook.core.fft_plans",
             "mbook.core.fused_fft", "mbook.core.fusion")


def _snapshot():
    return _counts.operations, _counts.to_host, _counts.to_device


class Counted:
    """What the stand-in counted in this thread over a ``with`` block.

    Made by :func:`count_transfers` and :func:`count_operations`; read while
    the block runs or after it ends.
    """

    def __init__(self, by_caller=False):
        self._start = _snapshot()
        self._end = None
        self.by_caller = collections.Counter() if by_caller else None
        self.to_host_by_caller = collections.Counter() if by_caller else None

    def _since_start(self, which):
        return (self._end or _snapshot())[which] - self._start[which]

    @property
    def operations(self) -> int:
        """Device operations (each at least one kernel launch on CuPy) in the block."""
        return self._since_start(0)

    @property
    def to_host(self) -> int:
        """Device-to-host copies (``float``, ``.get()``, ``bool``, ...) in the block; each waits for the device."""
        return self._since_start(1)

    @property
    def to_device(self) -> int:
        """Host-to-device copies (``asarray`` of NumPy data, host values assigned into device arrays)."""
        return self._since_start(2)

    def __repr__(self):
        return f"Counted(operations={self.operations}, to_host={self.to_host}, to_device={self.to_device})"


def count_transfers():
    """Count the stand-in's host/device copies made in this thread inside the block (``to_host``, ``to_device``)."""
    return count_operations()


@contextlib.contextmanager
def count_operations(*, by_caller=False):
    """Count the stand-in's device operations (and copies) made in this thread inside the block.

    Parameters
    ----------
    by_caller : bool
        Also charge each operation to the innermost ``mbook`` function that
        issued it (``"module.function"``; ``"<page>"`` when no ``mbook`` frame
        is on the stack), in ``Counted.by_caller`` (a ``Counter``), and each
        copy to the host likewise in ``Counted.to_host_by_caller``. Walking
        the stack costs about a microsecond per operation.
    """
    counted = Counted(by_caller)
    previous = _counts.callers, _counts.host_callers
    if by_caller:
        _counts.callers, _counts.host_callers = counted.by_caller, counted.to_host_by_caller
    try:
        yield counted
    finally:
        counted._end = _snapshot()
        _counts.callers, _counts.host_callers = previous
        if by_caller and previous[0] is not None:
            previous[0].update(counted.by_caller)
            previous[1].update(counted.to_host_by_caller)


@contextlib.contextmanager
def one_operation():
    """Count the block's device operations as one, and its copies to the host as none: what a fused kernel
    costs (:mod:`mbook.core.fusion`)."""
    note_operation(depth=3)
    _counts.suspended += 1
    try:
        yield
    finally:
        _counts.suspended -= 1


def note_operation(depth=2):
    """Count one device operation, charged (when asked) to the ``mbook`` function ``depth`` frames up or above.

    Called by the stand-in's arrays and namespace (not by solvers): ``depth`` 2 is the caller of the
    array method that computes.
    """
    if _counts.suspended:
        return
    _counts.operations += 1
    if _counts.callers is not None:
        _counts.callers[_caller(depth + 1)] += 1


def _caller(depth):
    """``module.function`` of the innermost ``mbook`` frame ``depth`` frames up or above, else ``"<page>"``."""
    frame = sys._getframe(depth)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("mbook.") and not module.startswith(_PLUMBING):
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "<page>"


def note_to_host():
    """Count one copy from the stand-in's device to the host (called by its arrays).

    Not inside :func:`one_operation`: a block that is one kernel on a GPU copies nothing (e.g. the
    stand-in's ``bincount`` standing for :mod:`mbook.core.scatter`'s atomic kernel)."""
    if _counts.suspended:
        return
    _counts.to_host += 1
    if _counts.host_callers is not None:
        _counts.host_callers[_caller(3)] += 1


def note_to_device():
    """Count one copy from the host to the stand-in's device (called by its arrays and namespace)."""
    _counts.to_device += 1
