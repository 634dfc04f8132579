"""A CPU stand-in for the GPU that refuses what CuPy refuses (``MBOOK_DEVICE=strict``).

Code that runs on NumPy often breaks on CuPy in the same few ways: an array
is handed to something that converts it to NumPy (``np.asarray``,
matplotlib, ``np.testing``, SciPy), or a host NumPy array is mixed into
arithmetic, an FFT or a ufunc with a device array. CuPy raises on both.
NumPy does not, so a test suite run on the CPU alone misses them, and a
GPU is needed to find them. This module gives CI that GPU's refusals
without a GPU: its arrays hold NumPy data and compute with NumPy, so their
results equal the CPU's, but

- implicit conversion to NumPy raises ``TypeError`` with CuPy's message
  (``np.asarray(a)``, ``np.testing.assert_allclose(a, ...)``,
  ``plt.plot(a)``, any SciPy function that is not reached through
  :func:`mbook.core.backend.scipy_module`);
- a ufunc, an operator or a function of the :data:`xp` namespace that gets
  a host ``numpy.ndarray`` among device arrays raises ``TypeError``
  ("Unsupported type"), as CuPy's kernels do; Python and NumPy scalars mix
  freely, and the creation functions (``asarray``, ``array``) take host data
  as CuPy's do;
- reductions and scalar indexing return 0-d device arrays, as CuPy's do, so
  a ``float()`` or ``if`` on them is a device-to-host copy;
- every device-to-host copy is counted (``get``, ``item``, ``tolist``,
  ``float``, ``int``, ``bool``, formatting), and so is every host-to-device
  copy: :func:`count_transfers` measures them over a block, e.g. to show
  that an iterative solver copies nothing to the host per iteration;
- every device operation is counted too (a ufunc, a function of the
  namespace, an array method, an indexed read with index arrays, an
  assignment, a random draw): on CuPy each is at least one kernel launch,
  which costs the host several microseconds however small the array, so a
  loop over items that should be an array axis shows as a count that grows
  with the items (:func:`count_operations`, optionally by the ``mbook``
  function that issued them).

What only a real GPU can show: speed and memory, asynchronous execution,
float rounding of cuFFT and of GPU reductions, NumPy functions that CuPy
lacks (the stand-in implements them all), and kernels that CuPy compiles.

Examples
--------
>>> import numpy as np
>>> from mbook.core import strict
>>> a = strict.xp.arange(4.0)
>>> float((a * 2).sum())
12.0
>>> np.asarray(a)
Traceback (most recent call last):
...
TypeError: Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly.
>>> a + np.ones(4)
Traceback (most recent call last):
...
TypeError: Unsupported type <class 'numpy.ndarray'> mixed with a device array: move it with backend.asarray first
>>> with strict.count_transfers() as copies:
...     total = float(a.sum())
>>> copies.to_host
1
"""

from __future__ import annotations

import collections
import contextlib
import numbers
import sys
import threading
import types

import numpy as np

IMPLICIT_CONVERSION = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)
#: Functions of the namespace that take host data, as CuPy's creation functions do.
HOST_INPUT_FUNCTIONS = frozenset({"asarray", "array", "asanyarray", "ascontiguousarray", "asfortranarray"})


class _Counts(threading.local):
    def __init__(self):
        self.to_host = 0
        self.to_device = 0
        self.operations = 0
        self.callers = None  # a Counter while count_operations(by_caller=True) runs in this thread
        self.suspended = 0  # inside one_operation(): the block's operations are one kernel


_counts = _Counts()
#: Modules skipped when an operation is charged to the ``mbook`` function that issued it: the stand-in
#: itself and the thin wrappers every module goes through.
_PLUMBING = ("mbook.core.strict", "mbook.core.backend", "mbook.core.fft_plans", "mbook.core.fused_fft",
             "mbook.core.fusion")


class Transfers:
    """Copies between host and stand-in device counted over a ``with`` block (see :func:`count_transfers`)."""

    def __init__(self):
        self._start = (_counts.to_host, _counts.to_device)
        self._end = None

    @property
    def to_host(self) -> int:
        """Device-to-host copies (``float``, ``.get()``, ``bool``, ...) in the block."""
        return (self._end or (_counts.to_host, _counts.to_device))[0] - self._start[0]

    @property
    def to_device(self) -> int:
        """Host-to-device copies (``asarray`` of NumPy data, host values assigned into device arrays)."""
        return (self._end or (_counts.to_host, _counts.to_device))[1] - self._start[1]

    def __repr__(self):
        return f"Transfers(to_host={self.to_host}, to_device={self.to_device})"


@contextlib.contextmanager
def count_transfers():
    """Count the stand-in's host/device copies made in this thread inside the block."""
    transfers = Transfers()
    try:
        yield transfers
    finally:
        transfers._end = (_counts.to_host, _counts.to_device)


class Operations:
    """Device operations counted over a ``with`` block (see :func:`count_operations`)."""

    def __init__(self, by_caller):
        self._start = (_counts.operations, _counts.to_host)
        self._end = None
        self.by_caller = collections.Counter() if by_caller else None

    @property
    def operations(self) -> int:
        """Device operations (each at least one kernel launch on CuPy) in the block."""
        return (self._end or (_counts.operations, _counts.to_host))[0] - self._start[0]

    @property
    def to_host(self) -> int:
        """Device-to-host copies in the block (each waits for the device on CuPy)."""
        return (self._end or (_counts.operations, _counts.to_host))[1] - self._start[1]

    def __repr__(self):
        return f"Operations(operations={self.operations}, to_host={self.to_host})"


@contextlib.contextmanager
def count_operations(*, by_caller=False):
    """Count the stand-in's device operations made in this thread inside the block.

    Parameters
    ----------
    by_caller : bool
        Also charge each operation to the innermost ``mbook`` function that
        issued it (``"module.function"``; ``"<page>"`` when no ``mbook`` frame
        is on the stack), in ``Operations.by_caller`` (a ``Counter``). Walking
        the stack costs about a microsecond per operation.

    Examples
    --------
    >>> from mbook.core import strict
    >>> a = strict.xp.ones(8)
    >>> with strict.count_operations() as ops:
    ...     b = (a * 2 + 1).sum()
    >>> ops.operations
    3
    """
    counted = Operations(by_caller)
    previous = _counts.callers
    if by_caller:
        _counts.callers = counted.by_caller
    try:
        yield counted
    finally:
        counted._end = (_counts.operations, _counts.to_host)
        _counts.callers = previous
        if by_caller and previous is not None:
            previous.update(counted.by_caller)


@contextlib.contextmanager
def one_operation():
    """Count the block's device operations as one: what a fused kernel costs (:mod:`mbook.core.fusion`)."""
    _operation(depth=3)
    _counts.suspended += 1
    try:
        yield
    finally:
        _counts.suspended -= 1


def _operation(depth=2):
    if _counts.suspended:
        return
    _counts.operations += 1
    if _counts.callers is not None:
        frame = sys._getframe(depth)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("mbook.") and not module.startswith(_PLUMBING):
                _counts.callers[f"{module}.{frame.f_code.co_name}"] += 1
                return
            frame = frame.f_back
        _counts.callers["<page>"] += 1


def _to_host():
    _counts.to_host += 1


def _to_device():
    _counts.to_device += 1


def _refuse_host_array(value):
    raise TypeError(
        f"Unsupported type {type(value)} mixed with a device array: move it with backend.asarray first"
    )


def _unwrap(value, *, allow_host: bool):
    """Replace StrictArrays by their data, recursively through lists and tuples; refuse host arrays."""
    if type(value) is StrictArray:
        return value._data
    if isinstance(value, np.ndarray):
        if not allow_host:
            _refuse_host_array(value)
        _to_device()
        return value
    if isinstance(value, (list, tuple)):
        items = [_unwrap(v, allow_host=allow_host) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):  # keyword arguments
        return {key: _unwrap(v, allow_host=allow_host) for key, v in value.items()}
    return value


def _wrap(value):
    """NumPy results become StrictArrays (scalars as 0-d arrays, as CuPy's reductions give)."""
    if isinstance(value, np.ndarray):
        return StrictArray(value)
    if isinstance(value, np.generic):
        return StrictArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


#: Array methods and functions that make a view or answer a question, without a kernel on CuPy.
_VIEWS = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "moveaxis", "expand_dims",
                    "broadcast_to", "broadcast_arrays", "atleast_1d", "atleast_2d", "atleast_3d", "shape", "ndim",
                    "result_type", "iscomplexobj", "isrealobj", "may_share_memory", "shares_memory", "real", "imag"})


def _advanced(key) -> bool:
    """True when an index holds arrays or lists (a gather on the device, not a view)."""
    if isinstance(key, tuple):
        return any(_advanced(k) for k in key)
    return isinstance(key, (np.ndarray, list))


def _index(key):
    """Indices may be device arrays, or host arrays and lists (CuPy copies those over)."""
    if type(key) is StrictArray:
        return key._data
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


class StrictArray:
    """An array on the stand-in device: NumPy data that behaves like a CuPy array where code breaks."""

    __slots__ = ("_data",)
    __array_priority__ = 100  # NumPy defers operators to __array_ufunc__ below

    def __init__(self, data):
        if type(data) is StrictArray:
            data = data._data
        if not isinstance(data, np.ndarray):
            raise TypeError(f"StrictArray holds a numpy.ndarray, got {type(data)}")
        self._data = data

    # -- what CuPy refuses ---------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if getattr(np, ufunc.__name__, None) is not ufunc:
            # CuPy's ndarray dispatches NumPy's own ufuncs only (scipy.special's need cupyx).
            raise TypeError(f"{ufunc.__name__} is not a NumPy ufunc: reach it through backend.scipy_module")
        raw = []
        for value in inputs:
            if type(value) is StrictArray:
                raw.append(value._data)
            elif isinstance(value, (numbers.Number, np.generic)) or value is None:
                raw.append(value)
            elif isinstance(value, np.ndarray):
                _refuse_host_array(value)
            else:
                raise TypeError(f"Unsupported type {type(value)}")
        kwargs = {key: _unwrap(value, allow_host=False) for key, value in kwargs.items()}  # out=, where=
        _operation()
        return _wrap(getattr(ufunc, method)(*raw, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in _VIEWS:
            _operation()
        return _wrap(func(*_unwrap(args, allow_host=False), **_unwrap(kwargs, allow_host=False)))

    # -- copies to the host, counted -----------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        """Copy to a NumPy array (CuPy's ``ndarray.get``)."""
        _to_host()
        return np.array(self._data, order=order, copy=True)

    def item(self, *args):
        _to_host()
        return self._data.item(*args)

    def tolist(self):
        _to_host()
        return self._data.tolist()

    def tobytes(self, order="C"):
        _to_host()
        return self._data.tobytes(order)

    def __float__(self):
        _to_host()
        return float(self._data)

    def __int__(self):
        _to_host()
        return int(self._data)

    def __complex__(self):
        _to_host()
        return complex(self._data)

    def __bool__(self):
        _to_host()
        return bool(self._data)

    def __index__(self):
        _to_host()
        return self._data.__index__()

    def __format__(self, spec):
        _to_host()
        return format(self._data[()] if self._data.ndim == 0 else self._data, spec)

    def __repr__(self):
        _to_host()
        return "strict." + repr(self._data)

    def __str__(self):
        _to_host()
        return str(self._data)

    # -- plain array behaviour -----------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    T = property(lambda self: StrictArray(self._data.T))
    mT = property(lambda self: StrictArray(self._data.mT))

    @property
    def real(self):
        return StrictArray(self._data.real)

    @real.setter
    def real(self, value):
        self._data.real = _unwrap(value, allow_host=True)

    @property
    def imag(self):
        return StrictArray(self._data.imag)

    @imag.setter
    def imag(self, value):
        self._data.imag = _unwrap(value, allow_host=True)

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return (_wrap(row) for row in self._data)

    def __getitem__(self, key):
        key = _index(key)
        if _advanced(key):  # a gather kernel; basic slicing makes a view on the host alone
            _operation()
        return _wrap(self._data[key])

    def __setitem__(self, key, value):
        _operation()
        self._data[_index(key)] = _unwrap(value, allow_host=True)  # CuPy copies host values over

    def __getattr__(self, name):
        if name == "_data" or name.startswith("__"):
            # No __array_interface__, buffer or dlpack: NumPy must go through __array__ (and be refused).
            # _data is missing only while unpickling: no recursion.
            raise AttributeError(name)
        # Methods (sum, reshape, astype, conj, ...) act on the data; their results stay on the device.
        attribute = getattr(self._data, name)
        if callable(attribute):
            def method(*args, **kwargs):
                if name not in _VIEWS:
                    _operation()
                return _wrap(attribute(*_unwrap(args, allow_host=False), **_unwrap(kwargs, allow_host=False)))
            return method
        return _wrap(attribute)

    def __copy__(self):
        return StrictArray(self._data.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._data.copy())

    def __reduce__(self):
        return (StrictArray, (self._data,))

    __hash__ = None


def _operator(ufunc, reflected=False):
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


def _inplace(ufunc):
    def operator(self, other):
        ufunc(self, other, out=(self,))
        return self
    return operator


for _name, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                      ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                      ("matmul", np.matmul), ("and", np.bitwise_and), ("or", np.bitwise_or),
                      ("xor", np.bitwise_xor), ("lshift", np.left_shift), ("rshift", np.right_shift)):
    setattr(StrictArray, f"__{_name}__", _operator(_ufunc))
    setattr(StrictArray, f"__r{_name}__", _operator(_ufunc, reflected=True))
    setattr(StrictArray, f"__i{_name}__", _inplace(_ufunc))
for _name, _ufunc in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)):
    setattr(StrictArray, f"__{_name}__", _operator(_ufunc))
for _name, _ufunc in (("neg", np.negative), ("pos", np.positive), ("abs", np.absolute), ("invert", np.invert)):
    setattr(StrictArray, f"__{_name}__", lambda self, _u=_ufunc: _u(self))


class _Generator:
    """``numpy.random.Generator`` whose draws land on the stand-in device."""

    def __init__(self, generator):
        self._generator = generator

    def __getattr__(self, name):
        attribute = getattr(self._generator, name)
        if not callable(attribute):
            return attribute

        def draw(*args, **kwargs):
            _operation()
            return _wrap(attribute(*_unwrap(args, allow_host=False), **_unwrap(kwargs, allow_host=False)))
        return draw


class Namespace(types.ModuleType):
    """A NumPy-like module (``numpy``, ``numpy.fft``, ``scipy.fft``, ``scipy.ndimage``, ...) on the stand-in.

    Its functions take StrictArrays and scalars, refuse host arrays (but for
    the creation functions), and return StrictArrays, like CuPy's modules.
    """

    def __init__(self, module: types.ModuleType, name: str):
        super().__init__(name)
        self._module = module

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "ndarray":
            return StrictArray
        attribute = getattr(self._module, name)
        if isinstance(attribute, types.ModuleType):
            value = Namespace(attribute, f"{self.__name__}.{name}")
        elif isinstance(attribute, type) or not callable(attribute):
            value = attribute  # dtypes, constants, finfo, errstate
        elif name == "default_rng":
            def value(*args, **kwargs):
                return _Generator(attribute(*args, **kwargs))
        else:
            allow_host = name in HOST_INPUT_FUNCTIONS

            def value(*args, **kwargs):
                if name not in _VIEWS:
                    _operation()
                return _wrap(attribute(*_unwrap(args, allow_host=allow_host),
                                       **_unwrap(kwargs, allow_host=allow_host)))
            value.__name__ = name
            value.__doc__ = getattr(attribute, "__doc__", None)
        setattr(self, name, value)  # looked up once per name
        return value


#: The stand-in's array module, as ``cupy`` is the GPU's.
xp = Namespace(np, "mbook.strict")


def asarray(array, dtype=None) -> StrictArray:
    """Put host data (or a StrictArray) on the stand-in device; a host copy is counted."""
    if type(array) is StrictArray:
        return array if dtype is None or array.dtype == dtype else StrictArray(array._data.astype(dtype))
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"array must be an array or a sequence of numbers, got {type(array).__name__} {array!r}")
    _to_device()
    return StrictArray(np.array(array, dtype=dtype, copy=True))


def asnumpy(array) -> np.ndarray:
    """Copy a StrictArray to the host (counted)."""
    return array.get()


def is_strict(array) -> bool:
    """True for an array on the stand-in device."""
    return type(array) is StrictArray
