"""One validation vocabulary for every public function of :mod:`mbook`.

A public function checks and converts its inputs with these, before any
work, then calls private kernels that assume clean input (scikit-image's
pattern). Each check raises a :class:`ValueError` (or :class:`TypeError` for
a value of the wrong kind) whose message names the parameter, the value and
the valid range.

The array checks are also where the device rule is applied: they return
the array on the selected device (:func:`mbook.core.backend.asarray`), so a
public function that checks its inputs has moved them, once.

Examples
--------
>>> from mbook.core import checks
>>> checks.check_positive_number(0.5, "sampling")
0.5
>>> checks.check_count(2.5, "num_iter")
Traceback (most recent call last):
...
ValueError: num_iter must be an integer >= 1, got 2.5
>>> checks.check_array([[1.0, float("nan")]], "image")
Traceback (most recent call last):
...
ValueError: image holds non-finite values (NaN or inf); clean or mask the data first
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mbook.core import backend


# ----------------------------------------------------------------------------- numbers
def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_scalar(value):
    """A 0-d real array (NumPy, CuPy or the stand-in's, e.g. ``3e5 / image.sum()``) as a Python float.

    One copy to the host: scalars are parameters, checked on entry."""
    if getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", "") in "iuf":
        return float(value)
    return value


def check_number(value, name: str, *, lower=None, upper=None, lower_inclusive: bool = True,
                 upper_inclusive: bool = True, units: str = "", hint: str = "") -> float:
    """A finite real number in the given range, as a float.

    Parameters
    ----------
    value : float
        The value to check.
    name : str
        The parameter's name, for the message.
    lower, upper : float, optional
        Bounds (None: unbounded).
    lower_inclusive, upper_inclusive : bool
        Whether the bounds themselves are allowed.
    units : str
        Units for the message, e.g. ``"Å"``.
    hint : str
        A typical value for the message, e.g. ``"e.g. 300e3 for 300 keV"``.
    """
    for bound_name, bound in (("lower", lower), ("upper", upper)):
        if bound is not None and not (_is_real_number(bound) and not math.isnan(bound)):
            raise ValueError(f"{bound_name} (a bound for {name}) must be a real number or None, got {bound!r}")
    value = _as_scalar(value)
    ok = _is_real_number(value) and math.isfinite(value)
    if ok and lower is not None:
        ok = value >= lower if lower_inclusive else value > lower
    if ok and upper is not None:
        ok = value <= upper if upper_inclusive else value < upper
    if not ok:
        bounds = []
        if lower is not None:
            bounds.append(f"{'>=' if lower_inclusive else '>'} {lower}")
        if upper is not None:
            bounds.append(f"{'<=' if upper_inclusive else '<'} {upper}")
        where = f" {' and '.join(bounds)}" if bounds else ""
        unit = f" [{units}]" if units else ""
        example = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be a finite number{where}{unit}{example}, got {value!r}")
    return float(value)


def check_positive_number(value, name: str, *, allow_zero: bool = False, upper=None) -> float:
    """A finite real number > 0 (or >= 0), optionally < ``upper``; else ValueError.

    0-d real arrays count as numbers (on any device: one copy to the host).
    """
    return check_number(value, name, lower=0, lower_inclusive=allow_zero, upper=upper, upper_inclusive=False)


def check_count(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (not a float such as 2.5 or 2.0, not a bool) in ``[minimum, maximum]``."""
    for bound_name, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, numbers.Integral)):
            raise ValueError(f"{bound_name} (a bound for {name}) must be an integer, got {bound!r}")
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return int(value)


def check_iterations(value, name: str = "max_num_iter") -> int:
    """A number of iterations: an integer >= 1; else ValueError."""
    return check_count(value, name)


def check_tolerance(value, name: str = "tol") -> float:
    """A stopping tolerance: finite and >= 0 (0 runs every iteration)."""
    return check_positive_number(value, name, allow_zero=True)


def check_client(client, name: str = "client"):
    """A Dask client to share work over (anything with ``scatter`` and ``map``), or None; else TypeError."""
    if client is not None and not (hasattr(client, "scatter") and hasattr(client, "map")):
        raise TypeError(f"{name} must be a dask.distributed.Client (or None), got {client!r:.60}")
    return client


def check_values(values, name: str, size: int, *, lower=None, upper=None, upper_inclusive: bool = True,
                 units: str = "") -> np.ndarray:
    """One number for all, or ``size`` numbers, each finite and in range: a host float64 array ``(size,)``.

    For per-axis parameters such as the spreads of a sampler.
    """
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {values!r:.60}") from None
    array = np.broadcast_to(array, (size,)) if array.ndim == 0 else array
    if array.shape != (size,):
        raise ValueError(f"{name} must be a number or ({size},) values, got shape {array.shape}")
    for value in array:
        check_number(float(value), name, lower=lower, upper=upper, upper_inclusive=upper_inclusive, units=units)
    return array


def check_seed(seed, name: str = "seed"):
    """A seed for :func:`numpy.random.default_rng`: an integer >= 0, a ``SeedSequence`` or a ``Generator``.

    NumPy's own error for ``seed=-1`` or ``seed=2.5`` names no parameter; this one does.
    """
    if isinstance(seed, (np.random.SeedSequence, np.random.Generator)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be an integer >= 0 (or a numpy SeedSequence or Generator), got {seed!r}")
    return int(seed)


def rng(seed, name: str = "seed") -> np.random.Generator:
    """``numpy.random.default_rng`` of a checked seed (:func:`check_seed`): random draws stay on the host."""
    return np.random.default_rng(check_seed(seed, name))


def check_choice(value, name: str, choices) -> str:
    """One of ``choices``; else ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- per-axis lengths
def as_tuple(value, name: str, ndim: int | None) -> tuple:
    """A scalar repeated ``ndim`` times, or a 1D sequence of ``ndim`` entries, as a tuple."""
    if ndim is not None:
        check_count(ndim, f"ndim (the number of axes of {name})")
    if np.ndim(value) == 0:
        values = (value,) * (ndim or 1)
    elif np.ndim(value) == 1:
        values = tuple(np.asarray(value).tolist())
    else:
        raise ValueError(f"{name} must be a scalar or a 1D sequence, got shape {np.shape(value)}")
    if ndim is not None and len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries (one per axis), got {len(values)}: {value!r}")
    if not values:
        raise ValueError(f"{name} must have at least one entry, got {value!r}")
    return values


def check_gpts(gpts, ndim: int | None = None, *, name: str = "gpts") -> tuple[int, ...]:
    """Validate a number of grid points (or an array shape): positive integers, one per axis.

    Raises
    ------
    ValueError
        Naming ``name`` (default ``gpts``), the value and the valid range.
    """
    if isinstance(gpts, (str, bytes)):
        raise ValueError(f"{name} must be positive integers (>= 1), got {gpts!r}")
    values = as_tuple(gpts, name, ndim)
    for n in values:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{name} must be positive integers (>= 1), got {gpts!r}")
    return tuple(int(n) for n in values)


def check_positive(value, name: str, ndim: int | None = None) -> tuple[float, ...]:
    """Validate a length such as ``sampling`` or ``extent``: finite and > 0 along every axis.

    Raises
    ------
    ValueError
        Naming the parameter, the value and the valid range (0, inf).
    """
    values = as_tuple(value, name, ndim)
    for v in values:
        if not _is_real_number(v) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be finite and > 0 along every axis, got {value!r}")
    return tuple(float(v) for v in values)


def check_axis(axis, name: str, ndim: int) -> int:
    """An axis of an array of ``ndim`` dimensions: an integer in ``[-ndim, ndim)``, as a non-negative int."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"{name} must be an integer axis in [-{ndim}, {ndim}) for a {ndim}D array, got {axis!r}")
    return int(axis) % ndim


def check_grid(grid, name: str = "grid", *, ndim: int | None = None):
    """A :class:`mbook.core.grids.Grid` (anything with ``gpts``, ``sampling`` and ``extent``), of ``ndim``
    dimensions if given; else TypeError."""
    kind = f"{ndim}D Grid" if ndim is not None else "Grid"
    fields_ok = all(hasattr(grid, field) for field in ("gpts", "sampling", "extent"))
    if not fields_ok or (ndim is not None and len(grid.gpts) != ndim):
        raise TypeError(f"{name} must be a {kind} (see mbook.core.grids.make_grid), got {type(grid).__name__} "
                        f"{grid!r}")
    return grid


def check_same_shape(name: str, array, reference_name: str, reference) -> None:
    """Refuse ``array`` unless its shape equals ``reference``'s; the message names both."""
    if tuple(array.shape) != tuple(reference.shape):
        raise ValueError(f"{name} must have the shape of {reference_name} {tuple(reference.shape)}, "
                         f"got {tuple(array.shape)}")


# ----------------------------------------------------------------------------- arrays
def check_rotations(rotations, name: str = "rotations", *, single: bool = False):
    """Rotation matrices ``(n, 3, 3)`` as float64 on the selected device: orthogonal, determinant +1.

    Parameters
    ----------
    rotations : (n, 3, 3) array_like, or (3, 3) with ``single``
        Rotation matrices.
    name : str
        The parameter's name, for the messages.
    single : bool
        Accept one (3, 3) matrix and return it as a batch of one.

    Returns
    -------
    (n, 3, 3) ndarray, float64
        On the selected device.

    Raises
    ------
    ValueError
        Naming ``name``: a wrong shape, matrices that are not orthogonal (``R Rᵀ = I`` to 1e-6: a
        shear or a scale would rotate into a distorted object) or reflections (determinant -1).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be the parameter's name (a str), got {type(name).__name__}")
    rotations = check_array(rotations, name, real=True)
    if single and rotations.ndim == 2:
        rotations = rotations[None]
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        shapes = "(n, 3, 3) or (3, 3)" if single else "(n, 3, 3)"
        raise ValueError(f"{name} must have shape {shapes}, got {rotations.shape}")
    xp = backend.get_array_module(rotations)
    rotations = rotations.astype(xp.float64)
    error = xp.max(xp.abs(xp.matmul(rotations, xp.swapaxes(rotations, 1, 2)) - xp.eye(3)))
    lowest = xp.min(xp.linalg.det(rotations))
    error, lowest = backend.asnumpy(xp.stack([error, lowest])).tolist()  # one copy on entry
    if not error < 1e-6:
        raise ValueError(f"{name} must be orthogonal matrices (R Rᵀ = I to 1e-6), got an error of {error:.3g}")
    if not lowest > 0:
        raise ValueError(f"{name} must have determinant +1 (rotations, not reflections), got {lowest:.3g}")
    return rotations


def check_array(array, name: str, *, ndim: int | None = None, min_ndim: int | None = None,
                real: bool = False, finite: bool = True):
    """``array`` on the selected device, checked: dimensions, real-valuedness, finiteness.

    This is how a public function takes an array input: it moves the array
    to the selected device (a no-op when it is there) and refuses bad
    values before any work. The finiteness check is one reduction and one
    scalar copy to the host.

    Parameters
    ----------
    array : array_like
        NumPy, CuPy or stand-in array, or anything :func:`numpy.asarray` takes.
    name : str
        The parameter's name, for the message.
    ndim : int, optional
        Exact number of dimensions.
    min_ndim : int, optional
        Least number of dimensions (leading axes are a batch).
    real : bool
        Refuse complex dtypes.
    finite : bool
        Refuse NaN and inf.

    Returns
    -------
    ndarray
        On the selected device.
    """
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"{name} must be an array, got {type(array).__name__} {array!r}")
    for option, value in (("ndim", ndim), ("min_ndim", min_ndim)):
        if value is not None:
            check_count(value, f"{option} (of {name})", minimum=0)
    array = backend.asarray(array)
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}D array, got shape {array.shape}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    xp = backend.get_array_module(array)
    if real and array.dtype.kind == "c":
        raise ValueError(f"{name} must be real, got dtype {array.dtype}")
    if finite:
        backend.refuse_non_finite(array, name)
    return array


def check_operand(array, name: str, *, ndim: int | None = None, min_ndim: int | None = None,
                  like=None, like_name: str = ""):
    """Cheap checks of an operator's input, for functions that also run inside iterations.

    Refuses what is not an array of numbers, an empty array, a wrong number of dimensions and (with
    ``like``) a shape other than ``like.shape``, naming the parameter. Moves the array with
    :func:`mbook.core.backend.asarray` (a no-op on device data). NaN and inf are refused only when
    the operator was called from outside mbook (:func:`mbook.core.backend.called_from_outside`):
    inside a solver's iterations the test would copy to the host on every call, and the solver
    checked its inputs once on entry. Call it from the public function's own body.
    """
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"{name} must be an array, got {type(array).__name__} {array!r:.60}")
    array = backend.asarray(array)
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}D array, got shape {array.shape}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {array.shape}")
    if like is not None and tuple(array.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(array.shape)}")
    if backend.called_from_outside(depth=2):
        backend.refuse_non_finite(array, name)
    return array


def check_operand_number(value, name: str, *, allow_zero: bool = True):
    """A step, weight or threshold of an operator: a Python or NumPy number is checked (finite, > 0 or >= 0);
    an array (per-element values, or a device scalar inside an iteration) passes unchanged, uncopied."""
    if hasattr(value, "ndim") and getattr(value, "ndim", 0) > 0 or backend.is_device_array(value):
        return value
    return check_positive_number(value, name, allow_zero=allow_zero)


def check_field(field, name: str = "field"):
    """A complex field ``(..., nx, ny)`` on the selected device: finite; real input becomes complex.

    float64 input becomes complex128, anything else complex64.
    """
    field = check_array(field, name, min_ndim=2)
    xp = backend.get_array_module(field)
    if field.dtype.kind != "c":
        field = field.astype(xp.complex128 if field.dtype == np.float64 else xp.complex64)
    return field
