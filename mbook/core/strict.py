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

import numbers
import types

import numpy as np

from mbook.core.device_counts import (  # noqa: F401 (the counters, reached as strict.count_*)
    Counted, count_operations, count_transfers, note_operation, note_to_device, note_to_host, one_operation)

IMPLICIT_CONVERSION = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)
#: Functions of the namespace that take host data, as CuPy's creation functions do.
HOST_INPUT_FUNCTIONS = frozenset({"asarray", "array", "asanyarray", "ascontiguousarray", "asfortranarray"})


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
        note_to_device()
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


#: Array methods and functions that run no kernel on CuPy: views, questions, memory from the pool.
_NO_KERNEL = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "moveaxis", "expand_dims",
                        "broadcast_to", "broadcast_arrays", "atleast_1d", "atleast_2d", "atleast_3d", "shape", "ndim",
                        "result_type", "iscomplexobj", "isrealobj", "may_share_memory", "shares_memory", "real", "imag",
                        "empty", "empty_like"})  # empty: memory from the pool, no kernel


def _refuse_iterated_morphology(function):
    """cupyx.scipy.ndimage's binary erosion and dilation iterate only by brute force: with ``iterations``
    other than 1 and ``brute_force=False`` (SciPy's default) CuPy 14 raises NotImplementedError."""
    def checked(input, structure=None, iterations=1, *args, brute_force=False, **kwargs):
        if iterations != 1 and not brute_force:
            raise NotImplementedError("only brute_force iteration has been implemented (cupyx.scipy.ndimage: "
                                      f"pass brute_force=True with iterations={iterations})")
        return function(input, structure, iterations, *args, brute_force=brute_force, **kwargs)
    return checked


#: Functions of a SciPy submodule that CuPy's counterpart refuses for some arguments: (module, name) -> wrapper.
_CUPY_LIMITS = {("scipy.ndimage", name): _refuse_iterated_morphology
                for name in ("binary_erosion", "binary_dilation", "binary_opening", "binary_closing")}


def _advanced(key) -> bool:
    """True when an index holds arrays or lists (a gather on the device, not a view)."""
    if isinstance(key, tuple):
        return any(_advanced(k) for k in key)
    return isinstance(key, (np.ndarray, list))


def _boolean_mask(key) -> bool:
    """True when an index holds a boolean array: CuPy copies its count of True to the host to size the result."""
    if isinstance(key, tuple):
        return any(_boolean_mask(k) for k in key)
    return isinstance(key, np.ndarray) and key.dtype == bool and key.ndim > 0


#: CuPy functions that copy numbers to the host inside (a wait for the device), and how many: bincount
#: checks for negative indices and sizes its output from the largest; the others size their outputs
#: from a count. The stand-in counts those copies as it counts a ``float()``.
HIDDEN_COPIES = {"bincount": 2, "nonzero": 1, "flatnonzero": 1, "argwhere": 1, "unique": 1, "extract": 1,
                 "compress": 1}


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

    def __del__(self):
        # Releasing a large array takes the host time (its pages go back to the system; 0.3 ms for
        # 50 MB). Done here, in the stand-in, that time is the stand-in's, as the device work it stands
        # for (a GPU's memory pool makes it nearly free), not the host work of the caller that let go.
        try:
            del self._data
        except AttributeError:
            pass

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
        note_operation()
        return _wrap(getattr(ufunc, method)(*raw, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in _NO_KERNEL:
            note_operation()
        return _wrap(func(*_unwrap(args, allow_host=False), **_unwrap(kwargs, allow_host=False)))

    # -- copies to the host, counted -----------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        """Copy to a NumPy array (CuPy's ``ndarray.get``)."""
        note_to_host()
        return np.array(self._data, order=order, copy=True)

    def item(self, *args):
        note_to_host()
        return self._data.item(*args)

    def tolist(self):
        note_to_host()
        return self._data.tolist()

    def tobytes(self, order="C"):
        note_to_host()
        return self._data.tobytes(order)

    def __float__(self):
        note_to_host()
        return float(self._data)

    def __int__(self):
        note_to_host()
        return int(self._data)

    def __complex__(self):
        note_to_host()
        return complex(self._data)

    def __bool__(self):
        note_to_host()
        return bool(self._data)

    def __index__(self):
        note_to_host()
        return self._data.__index__()

    def __format__(self, spec):
        note_to_host()
        return format(self._data[()] if self._data.ndim == 0 else self._data, spec)

    def __repr__(self):
        note_to_host()
        return "strict." + repr(self._data)

    def __str__(self):
        note_to_host()
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
            note_operation()
            if _boolean_mask(key):
                note_to_host()
        return _wrap(self._data[key])

    def __setitem__(self, key, value):
        note_operation()
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
                if name not in _NO_KERNEL:
                    note_operation()
                for _ in range(HIDDEN_COPIES.get(name, 0)):  # x.nonzero() waits as xp.nonzero(x) does
                    note_to_host()
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
            note_operation()
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
            limit = _CUPY_LIMITS.get((self._module.__name__, name))
            if limit is not None:
                attribute = limit(attribute)

            copies = HIDDEN_COPIES.get(name, 0) if self._module is np else 0

            def value(*args, **kwargs):
                if name not in _NO_KERNEL:
                    note_operation()
                for _ in range(copies):
                    note_to_host()
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
    note_to_device()
    return StrictArray(np.array(array, dtype=dtype, copy=True))


def asnumpy(array) -> np.ndarray:
    """Copy a StrictArray to the host (counted)."""
    return array.get()


def is_strict(array) -> bool:
    """True for an array on the stand-in device."""
    return type(array) is StrictArray
