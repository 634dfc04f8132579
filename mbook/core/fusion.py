"""Chains of element-wise operations as one GPU kernel (``cupy.fuse``), the same arithmetic elsewhere.

An iterative method on a small problem (a bisection over a few thousand
columns, a gradient step on a few hundred weights, one LED of a Fourier
ptychography sweep) issues a dozen element-wise operations per step on
arrays too small to keep a GPU busy: each is a kernel launch, a few
microseconds of host time, and the launches, not the arithmetic, set the
time. ``cupy.fuse`` traces a Python function of arrays and scalars once per
argument signature and compiles its operations into one kernel.

:func:`elementwise` wraps such a function, written against an array module
passed as its first argument (``function(xp, *args)``: ufuncs, operators,
``xp.where``; no indexing, no reductions, no Python branches on array
values). On CuPy it runs fused; on NumPy it runs as written; on the strict
stand-in it runs as written and counts as one device operation
(:func:`mbook.core.strict.count_operations`), what it costs on the GPU.

The first call of each argument signature (dtypes, dimensions, scalar types)
on CuPy runs both the fused and the plain function and compares them; if the
fused one fails to compile or disagrees (relative error above
:data:`CHECK_RTOL` of the output's dtype), a :class:`RuntimeWarning` says so
once and the plain operations are used for that signature from then on.
``MBOOK_FUSE=off`` (or :func:`set_enabled`) turns fusion off, so that a
benchmark can time both. :func:`status` lists the signatures checked.

Inside ``cupy.fuse`` a Python number is *weak*: an operation between two of
them (``1 - beta`` with ``beta`` an argument, ``-step``, ``n - 1``) takes the
first loop that fits, float16 or int8, so ``1 - 2 * 0.9`` comes out as
``-0.7998`` and ``2 * 64`` as ``-128``. The check on first call catches the
float cases by their error, not the integer ones that only overflow later.
So on the strict stand-in the first call of each signature also traces the
function with its Python-number arguments wrapped, and refuses (``TypeError``)
any operation between two numbers: compute such values on the host and pass
them in.

This module never imports CuPy: it takes ``fuse`` from the array module of
the arguments (:func:`mbook.core.backend.get_array_module`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import fusion
>>> @fusion.elementwise
... def damped(xp, x, step, floor):
...     return xp.maximum(x - step * x * x, floor)
>>> damped(np.array([0.5, 2.0]), 0.5, 0.0).tolist()
[0.375, 0.0]
"""

from __future__ import annotations

import functools
import inspect
import numbers
import operator
import threading
import warnings

import numpy as np

from mbook.core import backend, device_counts, strict

ENV_VARIABLE = "MBOOK_FUSE"
#: Largest relative difference (to the output's largest magnitude) between the fused and the plain
#: function on the first call of a signature: float32 rounding, or float64's, after a chain of tens of
#: operations that the compiler may contract into fused multiply-adds.
CHECK_RTOL = {4: 1e-4, 8: 1e-9}

_lock = threading.Lock()
_switch = backend.Switch(ENV_VARIABLE)
_checked: dict = {}  # (function name, signature) -> True (fused agrees) or False (plain operations)
_traced: set = set()  # (function name, signature) traced on the strict stand-in for number-number operations


def set_enabled(enabled: bool) -> bool:
    """Fuse on CuPy (``True``, the default) or never (``False``); returns the setting.

    Overrides ``MBOOK_FUSE`` (``auto``/``on`` or ``off``).
    """
    return _switch.set(enabled)


def enabled() -> bool:
    """Whether CuPy runs the fused kernels: :func:`set_enabled`, else ``MBOOK_FUSE`` (default on)."""
    return _switch()


def status() -> dict:
    """Signatures checked so far on CuPy and whether the fused kernel passed: ``{(function, signature): bool}``.

    ``function`` is the decorated function's ``module.qualname``.
    """
    return {(name, _readable(signature)): ok for (name, signature), ok in _checked.items()}


def _signature(args):
    """The key of the arguments' signature: ``(dtype, ndim)`` of each array, the type of each scalar. Every
    call on CuPy builds it, so it is kept cheap (a microsecond for five arguments, where the dtypes' names
    took ten): a launch costs only a few."""
    return tuple((a.dtype, a.ndim) if hasattr(a, "ndim") else type(a) for a in args)


def _readable(signature):
    """``(("float32", 2), "float", ...)``: a signature as :func:`status` and the warnings show it."""
    return tuple((str(s[0]), s[1]) if isinstance(s, tuple) else s.__name__ for s in signature)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _agree(xp, fused, plain) -> tuple[bool, str]:
    """Whether the fused outputs equal the plain ones to the dtype's tolerance (and a reason if not)."""
    fused, plain = _outputs(fused), _outputs(plain)
    if len(fused) != len(plain):
        return False, f"{len(fused)} outputs instead of {len(plain)}"
    for got, expected in zip(fused, plain):
        if got.shape != expected.shape or got.dtype != expected.dtype:
            return False, f"{got.dtype}{got.shape} instead of {expected.dtype}{expected.shape}"
        if expected.size == 0:
            continue
        expected_float = expected.astype(np.float64) if expected.dtype.kind in "biu" else expected
        got_float = got.astype(np.float64) if got.dtype.kind in "biu" else got
        scale = float(xp.max(xp.abs(expected_float))) or 1.0
        error = float(xp.max(xp.abs(got_float - expected_float))) / scale
        tolerance = CHECK_RTOL.get(np.dtype(expected.dtype).itemsize // (2 if expected.dtype.kind == "c" else 1),
                                   CHECK_RTOL[8])
        if not error <= tolerance:
            return False, f"relative error {error:.1e} > {tolerance:.0e}"
    return True, ""


def elementwise(function):
    """Decorate ``function(xp, *args)`` (element-wise operations only) to run as one kernel on CuPy.

    Parameters
    ----------
    function : callable
        ``function(xp, *args) -> array or tuple of arrays``: ``xp`` the array
        module of the arguments, ``args`` arrays (broadcast together) and
        Python or NumPy scalars. Only ufuncs, arithmetic and comparison
        operators and ``xp.where``; a Python loop with a fixed count is
        unrolled into the kernel.

    Returns
    -------
    callable
        ``wrapped(*args)``, with the same results as ``function(xp, *args)``
        (to the dtype's rounding on CuPy).
    """
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    name = function.__name__
    fused_by_module = {}

    def fused_for(xp):
        if id(xp) not in fused_by_module:
            def traced(*args):
                return function(xp, *args)

            traced.__name__ = traced.__qualname__ = name
            fused_by_module[id(xp)] = xp.fuse(kernel_name=f"mbook_{name}")(traced)
        return fused_by_module[id(xp)]

    return _checked_on_cupy(function, fused_for)


def hand_written(kernel):
    """Decorate ``function(xp, *args)`` to run as ``kernel(xp, *args)`` on CuPy, checked as :func:`elementwise` is.

    For what ``cupy.fuse`` cannot express, e.g. a stencil that reads a pixel's neighbours: ``kernel``
    launches one hand-written kernel (``xp.ElementwiseKernel``) where ``function`` issues several
    operations. The first call of each argument signature on CuPy compares the two and keeps
    ``function``'s operations, with a warning, if they disagree or the kernel fails to compile; on
    NumPy ``function`` runs, and on the strict stand-in it runs counted as one operation.

    Parameters
    ----------
    kernel : callable
        ``kernel(xp, *args)`` on CuPy arrays, the same results as ``function(xp, *args)``.

    Returns
    -------
    callable
        The decorator.
    """
    if not callable(kernel):
        raise TypeError(f"kernel must be callable, got {type(kernel).__name__}")

    def decorate(function):
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        return _checked_on_cupy(function, lambda xp: functools.partial(kernel, xp))

    return decorate


def _checked_on_cupy(function, fused_for):
    """``wrapped(*args)``: ``fused_for(xp)(*args)`` on CuPy once checked against ``function(xp, *args)``."""
    name = function.__name__
    qualified = f"{function.__module__}.{function.__qualname__}"  # the key of its checks: names repeat

    @functools.wraps(function)
    def wrapped(*args):
        xp = backend.get_array_module(*args)
        if xp is strict.xp:
            with device_counts.one_operation():
                key = (qualified, _signature(args))
                if key not in _traced:
                    _refuse_number_operations(function, qualified, args)
                    _traced.add(key)
                return function(xp, *args)
        if xp is np or not enabled():
            return function(xp, *args)
        key = (qualified, _signature(args))
        ok = _checked.get(key)
        if ok is None:
            with _lock:
                plain = function(xp, *args)
                try:
                    ok, reason = _agree(xp, fused_for(xp)(*args), plain)
                except Exception as exc:  # noqa: BLE001 - any tracing or compile failure: the plain operations
                    ok, reason = False, f"{type(exc).__name__}: {exc}"
                _checked[key] = ok
                if not ok:
                    warnings.warn(f"the fused kernel of {name} is unusable for arguments {_readable(key[1])} "
                                  f"({reason}); its operations run one kernel each ({ENV_VARIABLE}=off skips this "
                                  "check)",
                                  RuntimeWarning, stacklevel=2)
                return plain
        return fused_for(xp)(*args) if ok else function(xp, *args)

    signature = inspect.signature(function)
    wrapped.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # no xp
    return wrapped


def _is_number(value) -> bool:
    """A Python number (weak inside ``cupy.fuse``), not a NumPy scalar (typed) or an array."""
    return isinstance(value, (numbers.Number, _Number)) and not isinstance(value, np.generic)


class _Number:
    """A Python-number argument of a fused function, while it is traced: refuses to meet another number."""

    __array_ufunc__ = None  # NumPy hands array-with-number operations to the reflected methods here

    def __init__(self, value, name):
        self.value, self.name = value, name

    def _meet(self, other, symbol, function, reflected):
        if _is_number(other):
            left, right = (other, self) if reflected else (self, other)
            raise TypeError(f"{self.name}: {_show(left)} {symbol} {_show(right)} combines two Python numbers, "
                            "which cupy.fuse computes in float16 or int8 on a GPU; compute it on the host and "
                            "pass the result in")
        return function(other, self.value) if reflected else function(self.value, other)

    def __neg__(self):
        raise TypeError(f"{self.name}: -{_show(self)} negates a Python number, which cupy.fuse computes in float16 "
                        "or int8 on a GPU; compute it on the host and pass the result in")

    def __abs__(self):
        raise TypeError(f"{self.name}: abs({_show(self)}) of a Python number, which cupy.fuse computes in float16 "
                        "or int8 on a GPU; compute it on the host and pass the result in")

    def __bool__(self):
        raise TypeError(f"{self.name}: a Python branch on the number {_show(self)}, which cupy.fuse cannot trace")


def _show(value):
    return repr(value.value) if isinstance(value, _Number) else repr(value)


for _symbol, _function in (("+", operator.add), ("-", operator.sub), ("*", operator.mul), ("/", operator.truediv),
                           ("//", operator.floordiv), ("%", operator.mod), ("**", operator.pow), ("<", operator.lt),
                           ("<=", operator.le), (">", operator.gt), (">=", operator.ge), ("==", operator.eq),
                           ("!=", operator.ne), ("&", operator.and_), ("|", operator.or_)):
    _name = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "//": "floordiv", "%": "mod", "**": "pow",
             "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne", "&": "and", "|": "or"}[_symbol]
    setattr(_Number, f"__{_name}__", lambda self, other, s=_symbol, f=_function: self._meet(other, s, f, False))
    if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(_Number, f"__r{_name}__", lambda self, other, s=_symbol, f=_function: self._meet(other, s, f, True))
_Number.__hash__ = None


class _TracingNamespace:
    """NumPy for a traced fused function: numbers unwrapped, a call on numbers alone refused."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attribute):
        value = getattr(np, attribute)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args, **kwargs):
            # where(mask, a, b) takes its type from a and b alone
            values = args[1:] if attribute == "where" and len(args) == 3 else args
            if values and all(_is_number(a) for a in values) and (values is not args or any(
                    isinstance(a, _Number) for a in args)):
                raise TypeError(f"{self.name}: xp.{attribute} of Python numbers alone, which cupy.fuse computes in "
                                "float16 or int8 on a GPU; compute it on the host and pass the result in")
            return value(*(a.value if isinstance(a, _Number) else a for a in args), **kwargs)

        return call


def _refuse_number_operations(function, name, args):
    """Run ``function`` once on host copies with its Python numbers wrapped (:class:`_Number`): a TypeError
    names any operation between two Python numbers (see the module's notes)."""
    traced = [_Number(a, name) if _is_number(a) else strict.asnumpy(a) if strict.is_strict(a) else a for a in args]
    with np.errstate(all="ignore"):
        function(_TracingNamespace(name), *traced)
