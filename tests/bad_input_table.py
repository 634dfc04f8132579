"""The bad-input table: every public function, one valid call, and the bad values each parameter must refuse.

Data for ``tests/test_bad_input.py`` (which also fails when a public function is missing from here) and
for ``benchmarks/bad_input.py`` (which counts the outcomes per package).

An entry is ``E("package.module.function", factory, **parameters)``:

- ``factory`` returns one valid call ``(args, kwargs)`` with small inputs, fresh on every call (a function
  may write into its inputs);
- every parameter of the function is named, with the bad values it must refuse: a *kind* below, a list,
  or ``FREE`` (nothing to refuse: a flag, an ``xp`` module, a callable) -- so a new parameter is a
  decision, not an omission.

A bad value replaces that one argument of the valid call; the call must then raise ``ValueError``,
``TypeError`` or ``MemoryError`` whose message names the parameter, within a time limit.

Where a bad value is not refused today and the fix is not made yet, the value is left out with a comment
``# accepted today: <what happens>``: visible debt, never a value entered to pass.
"""

from __future__ import annotations

import importlib
import inspect
import math
import signal

import numpy as np

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------- derived bad arrays
class Derived:
    """A bad value made from the valid one (an empty array of the same ndim, one NaN, one axis less)."""

    def __init__(self, label, make, applies=lambda v: True):
        self.label, self.make, self.applies = label, make, applies

    def __repr__(self):
        return self.label


def _is_array(v):
    return isinstance(v, np.ndarray) or hasattr(v, "__array_namespace__") or hasattr(v, "__cuda_array_interface__")


def _host(v):
    from mbook.core import backend

    return np.array(backend.asnumpy(v))


def _with_nan(v):
    v = _host(v).copy()
    v.flat[v.size // 2] = np.nan
    return v


def _empty(v):
    v = _host(v)
    return np.zeros((0,) + v.shape[1:], v.dtype)


def _one_axis_less(v):
    v = _host(v)
    return v.ravel() if v.ndim >= 2 else v.reshape(-1)[0]


EMPTY = Derived("<empty array>", _empty, lambda v: _is_array(v))
WITH_NAN = Derived("<array with a NaN>", _with_nan, lambda v: _is_array(v) and _host(v).dtype.kind in "fc")
ONE_AXIS_LESS = Derived("<array with one axis less>", _one_axis_less, lambda v: _is_array(v))


# ----------------------------------------------------------------------------- kinds
FREE: list = []                                  # nothing to refuse (a flag, an xp module, a callable, ...)
LENGTH = [0, -1.0, NAN, INF, "1"]                # finite and > 0
NONNEG = [-1.0, NAN, INF, "1"]                   # finite and >= 0
REAL = [NAN, INF, "1"]                           # any finite real
COUNT = [0, -1, 2.5, True, "3"]                  # an integer >= 1
COUNT0 = [-1, 2.5, True, "3"]                    # an integer >= 0
SEED = [-1, 2.5, "a"]
CHOICE = ["no-such-option"]
TOL = [-1.0, NAN, INF, "1"]
FRACTION = [-0.5, 1.5, NAN, "1"]                 # in [0, 1]
ARRAY = [EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc"]  # finite, non-empty, of the right ndim
ARRAY_ANY_NDIM = [EMPTY, WITH_NAN, "abc"]        # finite, non-empty (batches or any ndim allowed)
GPTS = [0, -1, 2.5, (8, 0), "8"]
GRID = ["not-a-grid", None]


def arrays(*values):
    """Bad values for an array parameter: ARRAY_ANY_NDIM plus the given wrong-shaped arrays."""
    return ARRAY_ANY_NDIM + list(values)


# ----------------------------------------------------------------------------- the table
TABLE: dict = {}


class Entry:
    def __init__(self, key, factory, parameters):
        self.key, self.factory, self.parameters = key, factory, parameters
        module, _, name = ("mbook." + key).rpartition(".")
        self.module, self.name = module, name

    @property
    def function(self):
        return getattr(importlib.import_module(self.module), self.name)

    def bound(self):
        args, kwargs = self.factory()
        bound = inspect.signature(self.function).bind(*args, **kwargs)
        return bound

    def bad_values(self, parameter):
        """The bad values of one parameter, derived ones made from the valid call's value."""
        signature = inspect.signature(self.function)
        if parameter not in signature.parameters:  # a stale row: test_every_parameter_is_in_the_row says so
            return []
        bound = self.bound()
        valid = bound.arguments.get(parameter, signature.parameters[parameter].default)
        out = []
        for bad in self.parameters[parameter]:
            if isinstance(bad, Derived):
                if bad.applies(valid):
                    out.append((bad.label, lambda bad=bad, valid=valid: bad.make(valid)))
            else:
                out.append((_label(bad), lambda bad=bad: bad))
        return out

    def call_with(self, parameter, make_bad):
        bound = self.bound()
        bound.arguments[parameter] = make_bad()
        return self.function(*bound.args, **bound.kwargs)

    def call(self):
        args, kwargs = self.factory()
        return self.function(*args, **kwargs)


def _label(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def E(key, factory, **parameters):  # noqa: N802 (a table row)
    if key in TABLE:
        raise KeyError(f"{key} entered twice")
    TABLE[key] = Entry(key, factory, parameters)


def call(*args, **kwargs):
    return args, kwargs


# ----------------------------------------------------------------------------- running one bad call
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_bad_call(entry, parameter, make_bad, *, seconds=10):
    """Outcome of one bad call: ("clear" | "unclear" | "silent" | "hang", detail)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        entry.call_with(parameter, make_bad)
    except Hang:
        return "hang", f"no answer in {seconds} s"
    except (ValueError, TypeError, MemoryError) as error:
        if parameter in str(error):
            return "clear", f"{type(error).__name__}: {error}"
        return "unclear", f"{type(error).__name__} not naming {parameter}: {error}"
    except Exception as error:  # noqa: BLE001 (any other error is the measure's "unclear")
        return "unclear", f"{type(error).__name__}: {error}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return "silent", "returned without an error"


def public_functions(module):
    """Names of the public functions defined in ``module`` (classes and NamedTuples are not functions)."""
    return sorted(name for name, obj in vars(module).items()
                  if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_"))


# ----------------------------------------------------------------------------- small valid inputs
def rand(*shape, seed=0, low=0.5, high=1.5):
    """Positive random float64 values: a generic finite image or volume."""
    return np.random.default_rng(seed).uniform(low, high, shape)


def crand(*shape, seed=0):
    g = np.random.default_rng(seed)
    return g.uniform(0.5, 1.5, shape) * np.exp(1j * g.uniform(-1, 1, shape))


def disk(n, radius=0.3):
    y, x = np.mgrid[:n, :n] / n - 0.5
    return (x**2 + y**2) < radius**2


def dev(array):
    """``array`` on the selected device (for the unchecked kernels, which take device arrays only)."""
    from mbook.core import backend

    return backend.asarray(array)


def _grid(gpts=(16, 16), sampling=0.5):
    from mbook.core import grids

    return grids.make_grid(gpts=gpts, sampling=sampling)



# ============================================================================= mbook.core
def _device():
    from mbook.core import backend

    return backend.get_device()  # the valid call re-selects the device in use: no global change


# backend: device and FFT selection, array moves
E("core.backend.gpu_available", lambda: call())
E("core.backend.gpu_status", lambda: call())
E("core.backend.set_device", lambda: call(_device()), device=CHOICE + [3, None])
# A context manager: the device is checked by set_device on entering the ``with`` block, not on the call.
E("core.backend.use_device", lambda: call(_device()), device=FREE)
E("core.backend.get_device", lambda: call())
E("core.backend.gpu_code_path", lambda: call())
E("core.backend.describe", lambda: call())
E("core.backend.array_module", lambda: call())
E("core.backend.is_device_array", lambda: call(rand(4)), array=FREE)  # a question: anything may be asked
E("core.backend.get_array_module", lambda: call(rand(4)), arrays=FREE)  # non-arrays mean the host: NumPy
E("core.backend.scipy_module", lambda: call("ndimage", rand(4)), name=["no_such_submodule", 3], arrays=FREE)
E("core.backend.fft_module", lambda: call(rand(4)), arrays=FREE)
E("core.backend.asarray", lambda: call(rand(4)), array=["abc", None], dtype=["no-such-dtype"])
E("core.backend.asnumpy", lambda: call(rand(4)), array=FREE)  # anything NumPy can hold comes back as NumPy
E("core.backend.cpu_threads", lambda: call())
# A context manager: workers is read by the FFTs made inside the ``with`` block.
E("core.backend.fft_workers", lambda: call(1), workers=FREE)
E("core.backend.fft_kwargs", lambda: call(rand(4, 4)), array=FREE)  # keyword arguments for any array's FFT
# accepted today: NaN passes the FFTs (they run inside iterations everywhere; a finiteness check would copy
# to the host on every call; public functions check their inputs on entry).
E("core.backend.fft2", lambda: call(crand(4, 4)), array=[EMPTY, ONE_AXIS_LESS, "abc"], axes=[(0, 5), "a"])
E("core.backend.ifft2", lambda: call(crand(4, 4)), array=[EMPTY, ONE_AXIS_LESS, "abc"], axes=[(0, 5), "a"])
E("core.backend.fftn", lambda: call(crand(4, 4)), array=[EMPTY, "abc"], axes=[(0, 5), "a"])
E("core.backend.ifftn", lambda: call(crand(4, 4)), array=[EMPTY, "abc"], axes=[(0, 5), "a"])
E("core.backend.set_fft_library", lambda: call("scipy"), library=CHOICE + [3])
E("core.backend.fft_library", lambda: call())
E("core.backend.fft2_plan", lambda: call((4, 8, 8), np.complex128, slot="bi-table"),
  shape=[(8,), (0, 8), (8, -1), (8, 2.5), "a"], dtype=[np.float64, "no-such-dtype"], xp=FREE, slot=[3, None])

# checks: the vocabulary itself (its messages name the ``name`` given: "value" here)
E("core.checks.check_number", lambda: call(1.0, "value", lower=0.0, upper=2.0),
  value=[NAN, INF, "1", 3.0, -1.0, None], name=FREE, lower=[NAN, "0"], upper=[NAN, "2"],
  lower_inclusive=FREE, upper_inclusive=FREE, units=FREE, hint=FREE)
E("core.checks.check_positive_number", lambda: call(1.0, "value"),
  value=LENGTH, name=FREE, allow_zero=FREE, upper=[NAN, "2"])
E("core.checks.check_count", lambda: call(3, "value", maximum=5), value=COUNT + [6], name=FREE,
  minimum=[2.5, "1"], maximum=[2.5, "5"])
E("core.checks.check_iterations", lambda: call(3, "value"), value=COUNT, name=FREE)
E("core.checks.check_tolerance", lambda: call(1e-3, "value"), value=TOL, name=FREE)
E("core.checks.check_seed", lambda: call(3), seed=SEED + [True, None], name=FREE)
E("core.checks.rng", lambda: call(3), seed=SEED + [True, None], name=FREE)
E("core.checks.check_choice", lambda: call("a", "value", ("a", "b")), value=CHOICE + [3], name=FREE, choices=FREE)
E("core.checks.as_tuple", lambda: call((1.0, 2.0), "value", 2), value=[(1.0, 2.0, 3.0), [[1.0]], ()], name=FREE,
  ndim=[0, -1, 2.5, "2"])
E("core.checks.check_gpts", lambda: call((8, 8), 2), gpts=GPTS + [(8, 8, 8)], ndim=[0, -1, 2.5, "2"], name=FREE)
E("core.checks.check_positive", lambda: call((1.0, 2.0), "value", 2), value=LENGTH + [(1.0, 0.0)], name=FREE,
  ndim=[0, -1, 2.5, "2"])
E("core.checks.check_array", lambda: call(rand(4, 4), "array", ndim=2), array=ARRAY + [None], name=FREE,
  ndim=[-1, 2.5, "2"], min_ndim=[-1, 2.5, "2"], real=FREE, finite=FREE)
E("core.checks.check_field", lambda: call(crand(4, 4), "field"), field=ARRAY, name=FREE)
E("core.checks.check_axis", lambda: call(1, "axis", 2), axis=[2, -3, 2.5, True, "0"], name=FREE, ndim=FREE)
E("core.checks.check_grid", lambda: call(_grid()), grid=GRID, name=FREE)
E("core.checks.check_operand", lambda: call(rand(4, 4), "array", ndim=2, like=rand(4, 4)),
  array=[EMPTY, ONE_AXIS_LESS, "abc", None, rand(4, 3)], name=FREE, ndim=FREE, min_ndim=FREE, like=FREE,
  like_name=FREE)
E("core.checks.check_operand_number", lambda: call(0.5, "value"), value=NONNEG, name=FREE, allow_zero=FREE)
E("core.checks.check_same_shape", lambda: call("array", rand(4, 4), "reference", rand(4, 4)), name=FREE,
  array=[rand(4, 3)], reference_name=FREE, reference=FREE)

# strict: the stand-in device
def _strict(array):
    from mbook.core import strict

    return strict.asarray(array)


E("core.strict.count_transfers", lambda: call())
E("core.strict.asarray", lambda: call(rand(4)), array=["abc", None], dtype=["no-such-dtype"])
E("core.strict.asnumpy", lambda: call(_strict(rand(4))), array=FREE)
E("core.strict.is_strict", lambda: call(rand(4)), array=FREE)  # a question

# progress
E("core.progress.progress", lambda: call(range(3), desc="x", total=3),
  iterable=[3, 2.5], desc=FREE, total=COUNT0, kwargs=FREE)
E("core.progress.memory_budget", lambda: call())
E("core.progress.plan_batches", lambda: call(n_items=10, bytes_per_item=100, fixed_bytes=10, budget=10**6),
  n_items=COUNT, bytes_per_item=LENGTH, fixed_bytes=NONNEG, budget=LENGTH)


# plotting: figures only (drawing bad numbers is matplotlib's business); the numbers it reads are checked
def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plt.close(fig)
    return ax


E("core.plotting.nice_length", lambda: call(3.7), target=LENGTH)
E("core.plotting.add_scalebar", lambda: call(_axes(), 2.0), ax=["not-axes", None], length=LENGTH, units=FREE,
  color=FREE, location=CHOICE, fraction=[0, -1.0, NAN, INF, "1", 1.5])
# NaN is allowed in a figure: matplotlib shows it as a blank (masked) pixel.
E("core.plotting.show_image", lambda: call(rand(8, 8), 0.5, ax=_axes()), image=[EMPTY, ONE_AXIS_LESS, "abc"],
  sampling=LENGTH, ax=["not-axes"], units=FREE, cmap=FREE, title=FREE, colorbar=FREE, scalebar=FREE, centered=FREE,
  imshow_kwargs=FREE)
E("core.plotting.complex_to_rgb", lambda: call(crand(8, 8)), field=[EMPTY, "abc"], vmax=LENGTH)
E("core.plotting.show_complex", lambda: call(crand(8, 8), 0.5, ax=_axes()), field=[EMPTY, ONE_AXIS_LESS, "abc"],
  sampling=LENGTH,
  ax=["not-axes"], units=FREE, title=FREE, scalebar=FREE, centered=FREE, vmax=LENGTH)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.close(fig)
    return fig


# scrubber and explorer take callables (update, draw) whose arguments are the caller's: only the values are
# checked here.
E("core.plotting.scrubber", lambda: call(_figure(), lambda v: None, [1, 2]), fig=FREE, update=FREE,
  values=[[], "abc"], interval=[0, -1, NAN, "1"])
E("core.plotting.explorer", lambda: call(lambda fig, v: None, [1, 2]), draw=FREE, values=[[], "abc"],
  figsize=[(0, 3), (NAN, 3), "a"], live_values=FREE, description=FREE, interval=[0, -1, NAN, "1"])

# propagation
E("core.propagation.check_wavelength", lambda: call(0.5), wavelength=LENGTH)
E("core.propagation.check_distance", lambda: call(10.0), distance=REAL)
E("core.propagation.fresnel_propagator", lambda: call(_grid(), 10.0, 0.5), grid=GRID, distance=REAL,
  wavelength=LENGTH, xp=FREE)
E("core.propagation.angular_spectrum_propagator", lambda: call(_grid(), 10.0, 0.5), grid=GRID, distance=REAL,
  wavelength=LENGTH, xp=FREE)
E("core.propagation.propagate", lambda: call(crand(16, 16), 10.0, wavelength=0.5, sampling=0.5),
  field=ARRAY, distance=REAL, wavelength=LENGTH, sampling=LENGTH, paraxial=FREE)

# grids
E("core.grids.make_grid", lambda: call(gpts=(8, 8), sampling=0.5), gpts=GPTS, sampling=LENGTH,
  extent=LENGTH, ndim=[0, -1, 2.5, "2"])
E("core.grids.coordinates", lambda: call(_grid()), grid=GRID, centered=FREE, xp=FREE)
E("core.grids.spatial_frequencies", lambda: call(_grid()), grid=GRID, xp=FREE)
E("core.grids.frequency_squared", lambda: call(_grid()), grid=GRID, xp=FREE)
# accepted today: NaN in a spectrum passes (crop and pad run inside EPRY's and Fourier ptychography's
# iterations; a finiteness check would copy to the host on every call).
E("core.grids.crop_spectrum", lambda: call(crand(16, 16), (8, 8)), spectrum=[EMPTY, ONE_AXIS_LESS, "abc"],
  gpts=GPTS + [(32, 32)])
E("core.grids.pad_spectrum", lambda: call(crand(8, 8), (16, 16)), spectrum=[EMPTY, ONE_AXIS_LESS, "abc"],
  gpts=GPTS + [(4, 4)])
E("core.grids.fourier_crop", lambda: call(crand(16, 16), (8, 8)), field=ARRAY, gpts=GPTS + [(32, 32)])
E("core.grids.radial_average", lambda: call(rand(16, 16), _grid()), values=ARRAY + [rand(8, 8)],
  grid=GRID, num_bins=COUNT)
E("core.grids.radial_profile", lambda: call(rand(16, 16), sampling=0.5, bin_width=0.5), image=ARRAY,
  sampling=LENGTH, bin_width=LENGTH, max_radius=LENGTH)

# detection
E("core.detection.poisson_counts", lambda: call(rand(8, 8), seed=0), expected=ARRAY_ANY_NDIM + [-rand(4)],
  seed=SEED)
E("core.detection.apply_dose", lambda: call(rand(8, 8), dose=10.0, pixel_area=0.25, seed=0),
  intensity=ARRAY_ANY_NDIM + [-rand(4)], dose=NONNEG, pixel_area=LENGTH, seed=SEED)
E("core.detection.read_noise", lambda: call(rand(8, 8), sigma=1.0, seed=0), counts=ARRAY_ANY_NDIM,
  sigma=NONNEG, seed=SEED)
E("core.detection.camera", lambda: call(rand(8, 8), photons=100.0, bit_depth=12, seed=0),
  intensity=ARRAY_ANY_NDIM + [-rand(4)], photons=NONNEG, gain=LENGTH, offset=REAL, read_noise=NONNEG,
  bit_depth=COUNT + [64], seed=SEED)
E("core.detection.vignetting_falloff", lambda: call((8, 8), strength=0.3), shape=GPTS, strength=NONNEG, xp=FREE)
E("core.detection.mtf", lambda: call((8, 8), pixel_fill=0.9, blur=0.5), gpts=GPTS, pixel_fill=LENGTH + [1.5],
  blur=NONNEG, xp=FREE)
E("core.detection.apply_mtf", lambda: call(rand(8, 8), rand(8, 8)), image=ARRAY + [rand(4, 4)],
  transfer=ARRAY + [rand(4, 4)])
E("core.detection.detect", lambda: call(rand(8, 8), transfer=rand(8, 8), dqe=0.5, seed=0),
  expected=ARRAY + [-rand(8, 8)], transfer=ARRAY + [rand(4, 4)], dqe=[0.0, 1.5, NAN, "a"], seed=SEED)


# ============================================================================= mbook.inverse
def _ops():
    from mbook.inverse import optimize

    return dict(K=optimize.gradient, K_adjoint=lambda p: -optimize.divergence(p))


def _tv_proxes(image):
    from mbook.inverse import optimize

    return dict(prox_g=lambda x, t: optimize.prox_squared_distance(x, image, t),
                prox_fstar=lambda p, s: optimize.project_ball(p, 0.1))


# Unchecked kernels (``*_iterations``) run on inputs their callers checked once: checking them again on
# every call would copy to the host every time (the device rule). Their rows hold the valid call only.
UNCHECKED = FREE

# Operators and proximal maps run inside every solver's iterations: they refuse wrong types, empty arrays,
# wrong shapes and bad scalar parameters (no copy to the host), but
# accepted today: NaN/inf array entries pass through them (a finiteness test would copy to the host on every
# call; the solvers check their inputs once on entry). OPERAND below is ARRAY without the NaN.
OPERAND = [EMPTY, "abc", None]

# optimize
E("inverse.optimize.gradient", lambda: call(rand(8, 8)), u=OPERAND, boundary=CHOICE)
E("inverse.optimize.divergence", lambda: call(rand(2, 8, 8)), p=OPERAND + [rand(3, 8, 8)], boundary=CHOICE)
E("inverse.optimize.laplacian", lambda: call(rand(8, 8)), u=OPERAND, boundary=CHOICE)
E("inverse.optimize.fourier", lambda: call(crand(8, 8)), x=OPERAND + [ONE_AXIS_LESS])
E("inverse.optimize.inverse_fourier", lambda: call(crand(8, 8)), y=OPERAND + [ONE_AXIS_LESS])
E("inverse.optimize.apply_mask", lambda: call(crand(8, 8), disk(8)), x=OPERAND + [ONE_AXIS_LESS, rand(4, 4)],
  mask=[EMPTY, ONE_AXIS_LESS, "abc", disk(4)])
E("inverse.optimize.operator_norm", lambda: call(lambda x: 2 * x, lambda y: 2 * y, (8, 8), max_num_iter=20),
  forward=FREE, adjoint=FREE, shape=GPTS, dtype=["no-such-dtype"], max_num_iter=COUNT, tol=TOL,
  check_every=COUNT, seed=SEED, xp=FREE)
E("inverse.optimize.soft_threshold", lambda: call(rand(8, 8), 0.1), x=OPERAND, threshold=NONNEG)
E("inverse.optimize.project_ball", lambda: call(rand(2, 8, 8), 0.5), p=OPERAND, radius=LENGTH,
  axis=[3, 2.5, "0"])
E("inverse.optimize.shrink", lambda: call(rand(2, 8, 8), 0.5), p=OPERAND, threshold=NONNEG,
  axis=[3, 2.5, "0"])
E("inverse.optimize.project_box", lambda: call(rand(8, 8), 0.0, 1.0), x=OPERAND, lower=[NAN, "0", 2.0],
  upper=[NAN, "1", -1.0])
E("inverse.optimize.project_simplex", lambda: call(rand(3, 8, 8)), x=OPERAND, axis=[3, 2.5, "0"])
E("inverse.optimize.prox_squared_distance", lambda: call(rand(8, 8), rand(8, 8), 0.5),
  x=OPERAND, target=OPERAND + [rand(4, 4)], step=LENGTH, weight=NONNEG)
E("inverse.optimize.pdhg", lambda: call(rand(8, 8), np.zeros((2, 8, 8)), **_ops(), **_tv_proxes(rand(8, 8)),
                                         max_num_iter=10),
  x0=ARRAY_ANY_NDIM, y0=ARRAY_ANY_NDIM, K=FREE, K_adjoint=FREE, prox_g=FREE, prox_fstar=FREE, tau=LENGTH,
  sigma=LENGTH, norm=LENGTH, theta=FRACTION, gamma=NONNEG, objectives=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)
E("inverse.optimize.pdhg_iterations", lambda: call(dev(rand(8, 8)), dev(np.zeros((2, 8, 8))), **_ops(),
                                                    **_tv_proxes(dev(rand(8, 8))), max_num_iter=10),
  x=UNCHECKED, y=UNCHECKED, K=FREE, K_adjoint=FREE, prox_g=FREE, prox_fstar=FREE, tau=UNCHECKED,
  sigma=UNCHECKED, norm=UNCHECKED, theta=UNCHECKED, gamma=UNCHECKED, objectives=FREE, tol=UNCHECKED,
  max_num_iter=UNCHECKED, check_every=UNCHECKED)
E("inverse.optimize.forward_backward", lambda: call(rand(8, 8), grad_f=lambda x: x - 1.0,
                                                     prox_g=lambda x, t: x, step=0.5, max_num_iter=10),
  x0=ARRAY_ANY_NDIM, grad_f=FREE, prox_g=FREE, step=LENGTH, accelerate=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)
E("inverse.optimize.projected_gradient", lambda: call(rand(8, 8), grad_f=lambda x: x - 1.0,
                                                       project=lambda x: x, step=0.5, max_num_iter=10),
  x0=ARRAY_ANY_NDIM, grad_f=FREE, project=FREE, step=LENGTH, accelerate=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)
E("inverse.optimize.tv_denoise", lambda: call(rand(8, 8), 0.1, max_num_iter=10), image=ARRAY, weight=NONNEG,
  boundary=CHOICE, tol=TOL, max_num_iter=COUNT, check_every=COUNT)


# cdi
def _cdi():
    obj = disk(16, 0.2) * np.exp(0.3j * rand(16, 16))
    intensity = np.abs(np.fft.fft2(obj)) ** 2
    return intensity, disk(16, 0.3)


E("inverse.cdi.diffraction_intensity", lambda: call(crand(8, 8)), obj=ARRAY)
E("inverse.cdi.check_cdi_data", lambda: call(*_cdi()), intensity=ARRAY + [-rand(16, 16)],
  support=[EMPTY, ONE_AXIS_LESS, "abc", disk(8), np.zeros((16, 16), bool)])
E("inverse.cdi.project_modulus", lambda: call(crand(8, 8), rand(8, 8)), field=ARRAY + [crand(4, 4)],
  amplitude=ARRAY + [rand(4, 4), -rand(8, 8)])
E("inverse.cdi.retrieve_phase", lambda: call(*_cdi(), max_num_iter=5),
  intensity=ARRAY + [-rand(16, 16)], support=[EMPTY, ONE_AXIS_LESS, "abc", disk(8)], method=CHOICE,
  beta=[0.0, -0.5, 1.5, NAN, "1"], max_num_iter=COUNT, seed=SEED, initial=ARRAY + [crand(8, 8)],
  prior=["not-a-prior", 3], prior_every=COUNT)
E("inverse.cdi.twin", lambda: call(crand(8, 8)), obj=ARRAY)
E("inverse.cdi.align_to_reference", lambda: call(crand(8, 8), crand(8, 8, seed=1)),
  estimate=ARRAY + [crand(4, 4)], reference=ARRAY + [crand(4, 4)], allow_twin=FREE)
E("inverse.cdi.phase_error", lambda: call(crand(8, 8), crand(8, 8, seed=1), disk(8)),
  estimate=ARRAY + [crand(4, 4)], reference=ARRAY + [crand(4, 4)],
  support=[EMPTY, ONE_AXIS_LESS, "abc", disk(4), np.zeros((8, 8), bool)], align=FREE)
E("inverse.cdi.phase_prior", lambda: call(0.1, max_num_iter=5), weight=NONNEG, kind=CHOICE, max_num_iter=COUNT,
  options=FREE)

# circle: phase on S1
E("inverse.circle.wrap", lambda: call(rand(8, 8) * 5), phase=OPERAND)
E("inverse.circle.total_variation_s1", lambda: call(rand(8, 8) * 5), phase=ARRAY, cyclic=FREE)
E("inverse.circle.s1_energy", lambda: call(rand(8, 8), rand(8, 8, seed=1), 0.1),
  phase=ARRAY + [rand(4, 4)], data=ARRAY + [rand(4, 4)], weight=NONNEG,
  data_weight=ARRAY + [rand(4, 4), -rand(8, 8)], cyclic=FREE)
E("inverse.circle.two_way_shrinkage", lambda: call(rand(8, 8) - 1.0, 0.1), difference=OPERAND,
  threshold=NONNEG, axis=[3, 2.5, "0"])
E("inverse.circle.check_phase_data", lambda: call(rand(8, 8), 0.1, None), phase=ARRAY, weight=NONNEG,
  data_weight=ARRAY + [rand(4, 4), -rand(8, 8)])
E("inverse.circle.tv_s1_denoise", lambda: call(rand(8, 8), 0.1, max_num_iter=10), phase=ARRAY, weight=NONNEG,
  data_weight=ARRAY + [rand(4, 4), -rand(8, 8)], cyclic=FREE, max_num_iter=COUNT, tol=TOL, check_every=COUNT)
E("inverse.circle.tv_s1_iterations", lambda: call(dev(rand(8, 8)), 0.1, dev(np.ones((8, 8))), max_num_iter=10),
  phi=UNCHECKED, weight=UNCHECKED, data_weight=UNCHECKED, cyclic=FREE, max_num_iter=UNCHECKED, tol=UNCHECKED,
  check_every=UNCHECKED)

# lifting
E("inverse.lifting.labels", lambda: call(8), num_labels=COUNT + [1], xp=FREE)
E("inverse.lifting.lift_apply", lambda: call(rand(9, 8, 8), 8), x=OPERAND + [ONE_AXIS_LESS, rand(5, 8, 8)],
  num_labels=COUNT)
E("inverse.lifting.lift_adjoint", lambda: call(rand(8, 3, 8, 8), 8), y=OPERAND + [ONE_AXIS_LESS, rand(5, 3, 8, 8)],
  num_labels=COUNT)
E("inverse.lifting.tv_s1_lifting", lambda: call(rand(8, 8), 0.1, num_labels=4, max_num_iter=10),
  phase=ARRAY, weight=NONNEG, data_weight=ARRAY + [rand(4, 4), -rand(8, 8)], num_labels=COUNT + [1],
  max_num_iter=COUNT, tol=TOL, check_every=COUNT)
E("inverse.lifting.tv_s1_lifting_iterations", lambda: call(dev(rand(8, 8)), 0.1, dev(np.ones((8, 8))), num_labels=4,
                                                            max_num_iter=10),
  phi=UNCHECKED, weight=UNCHECKED, data_weight=UNCHECKED, num_labels=UNCHECKED, max_num_iter=UNCHECKED,
  tol=UNCHECKED, check_every=UNCHECKED)


# registration
def _series():
    from mbook.inverse import synthetic

    return synthetic.haadf_series((16, 16), 0.5, num_frames=3, seed=0)


def _fields(K=3, n=16):
    return 0.3 * (rand(K, 2, n, n) - 1.0), 0.2 * (rand(K, n) - 1.0)


E("inverse.registration.total_displacement", lambda: call(*_fields()),
  fields=OPERAND + [ONE_AXIS_LESS, rand(3, 2, 8, 8)], line_shifts=OPERAND + [ONE_AXIS_LESS, rand(3, 8)])
E("inverse.registration.distortion_energy",
  lambda: call(rand(16, 16), *_fields(), rand(3, 16, 16), alpha=0.1, beta=1.0, gamma=0.1),
  image=ARRAY + [rand(8, 8)], fields=ARRAY + [rand(3, 2, 8, 8)], line_shifts=ARRAY + [rand(3, 8)],
  frames=ARRAY + [rand(2, 16, 16)], alpha=NONNEG, beta=NONNEG, gamma=NONNEG)
E("inverse.registration.distortion_gradients",
  lambda: call(rand(16, 16), *_fields(), rand(3, 16, 16), alpha=0.1, beta=1.0, gamma=0.1),
  image=ARRAY + [rand(8, 8)], fields=ARRAY + [rand(3, 2, 8, 8)], line_shifts=ARRAY + [rand(3, 8)],
  frames=ARRAY + [rand(2, 16, 16)], alpha=NONNEG, beta=NONNEG, gamma=NONNEG)
E("inverse.registration.check_frames", lambda: call(rand(3, 16, 16)), frames=ARRAY + [rand(1, 16, 16)])
E("inverse.registration.rigid_shifts", lambda: call(rand(3, 16, 16), max_shift=3.0), frames=ARRAY,
  max_shift=LENGTH, num_iter=COUNT)
E("inverse.registration.rigid_average", lambda: call(rand(3, 16, 16), max_shift=3.0), frames=ARRAY,
  max_shift=LENGTH, num_iter=COUNT)
E("inverse.registration.joint_reconstruction", lambda: call(_series().frames, levels=1, max_num_iter=2, cg_iter=2),
  frames=ARRAY, alpha=NONNEG, beta=NONNEG, gamma=NONNEG, jitter=FREE, levels=COUNT, max_num_iter=COUNT,
  sobolev_length=NONNEG, cg_iter=COUNT, tol=TOL, check_every=COUNT, initial_shifts=ARRAY + [rand(2, 2)],
  max_shift=LENGTH)

# synthetic
E("inverse.synthetic.support_mask", lambda: call((16, 16)), gpts=GPTS, diameter=[0, -0.5, 1.5, NAN, "1"],
  irregularity=[-0.5, NAN, "1"], seed=SEED)
E("inverse.synthetic.weak_phase_object", lambda: call((16, 16)), gpts=GPTS, max_phase=REAL,
  diameter=[0, -0.5, 1.5, NAN, "1"], seed=SEED)
E("inverse.synthetic.wrapped_phase_object", lambda: call((16, 16)), gpts=GPTS, total_phase=REAL,
  num_terraces=COUNT, diameter=[0, -0.5, 1.5, NAN, "1"], seed=SEED)
E("inverse.synthetic.poisson_noise", lambda: call(rand(8, 8), dose=10.0), image=ARRAY_ANY_NDIM + [-rand(4, 4)],
  dose=LENGTH, seed=SEED)
E("inverse.synthetic.lattice_image", lambda: call((16, 16), 0.5),
  gpts=GPTS, sampling=LENGTH, lattice_vectors=[((0.0, 0.0), (0.0, 4.0)), ((NAN, 0.0), (0.0, 4.0)), "a"],
  basis=[((NAN, 0.0),), (), "a"], intensities=[(NAN,), (1.0, 2.0), "a"], widths=[(0.0,), (-1.0,), (NAN,), "a"],
  origin=[(NAN, 0.0), (0.0,), "a"], background=REAL, displacement=ARRAY_ANY_NDIM + [rand(2, 8, 8)])
E("inverse.synthetic.smooth_displacement", lambda: call((16, 16), rms=0.5, correlation_length=3.0),
  gpts=GPTS, rms=NONNEG, correlation_length=LENGTH, num_fields=COUNT, seed=SEED)
E("inverse.synthetic.scan_line_jitter", lambda: call((16, 16), rms=0.5), gpts=GPTS, rms=NONNEG,
  num_frames=COUNT, seed=SEED)
E("inverse.synthetic.haadf_series", lambda: call((16, 16), 0.5, num_frames=3), gpts=GPTS, sampling=LENGTH,
  num_frames=COUNT, distortion_rms=NONNEG, correlation_length=LENGTH, jitter_rms=NONNEG, drift_rms=NONNEG,
  dose=LENGTH, seed=SEED, lattice=FREE)

# warps: operators of the registration's iterations (OPERAND above: NaN and inf displacements pass)
# accepted today: a NaN or inf displacement ends in an IndexError (or, for huge finite ones, clamped samples)
E("inverse.warps.bilinear_corners", lambda: call((8, 8), 0.3 * rand(2, 8, 8)), shape=GPTS + [(4, 4)],
  displacement=OPERAND + [ONE_AXIS_LESS, rand(2, 4, 4)])
E("inverse.warps.warp", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)), image=OPERAND + [ONE_AXIS_LESS, rand(4, 4)],
  displacement=OPERAND + [ONE_AXIS_LESS, rand(2, 4, 4)], corners=["abc", 3])
E("inverse.warps.warp_adjoint", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)),
  residual=OPERAND + [ONE_AXIS_LESS, rand(4, 4)], displacement=OPERAND + [ONE_AXIS_LESS, rand(2, 4, 4)],
  shape=GPTS + [(4, 4)], corners=["abc", 3])
E("inverse.warps.warp_derivative", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)),
  image=OPERAND + [ONE_AXIS_LESS, rand(4, 4)], displacement=OPERAND + [ONE_AXIS_LESS, rand(2, 4, 4)])
