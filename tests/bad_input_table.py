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


def _device_module():
    """The selected device's array module (the ``xp`` the unchecked kernels take)."""
    from mbook.core import backend

    return backend.xp


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
E("core.backend.synchronize", lambda: call())
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
E("core.backend.current_fft_workers", lambda: call())
E("core.backend.fft_kwargs", lambda: call(rand(4, 4)), array=FREE)  # keyword arguments for any array's FFT
E("core.backend.inside_iterations", lambda: call())
E("core.backend.called_from_outside", lambda: call(), depth=[0, -1, 2.5, "1", True])
E("core.backend.refuse_non_finite", lambda: call(rand(4, 4), "array"), array=[WITH_NAN, "abc", None],
  name=[3, None])
E("core.backend.fft2", lambda: call(crand(4, 4)), array=[EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc"],
  axes=[(0, 5), "a"])
E("core.backend.ifft2", lambda: call(crand(4, 4)), array=[EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc"],
  axes=[(0, 5), "a"])
E("core.backend.fftn", lambda: call(crand(4, 4)), array=[EMPTY, WITH_NAN, "abc"], axes=[(0, 5), "a"])
E("core.backend.ifftn", lambda: call(crand(4, 4)), array=[EMPTY, WITH_NAN, "abc"], axes=[(0, 5), "a"])
E("core.backend.set_fft_library", lambda: call("scipy"), library=CHOICE + [3])
E("core.backend.fft_library", lambda: call())
E("core.backend.cpu_fft_library", lambda: call())
E("core.fftw_wisdom.pyfftw_module", lambda: call())
E("core.fftw_wisdom.path", lambda: call())
E("core.fftw_wisdom.load", lambda: call(importlib.import_module("pyfftw")), pyfftw=FREE)  # the module itself
E("core.fftw_wisdom.save", lambda: call(importlib.import_module("pyfftw")), pyfftw=FREE)
E("core.fft_plans.fft2_plan", lambda: call((4, 8, 8), np.complex128, slot="bi-table"),
  shape=[(8,), (0, 8), (8, -1), (8, 2.5), "a"], dtype=[np.float64, "no-such-dtype"], xp=FREE, slot=[3, None])
# fused_fft: set_enabled is the switch; the others are kernels of FFT2Plan.forward_multiplied, which hands
# them its own buffer (on NumPy and the stand-in they answer False at once: no callbacks there)
E("core.fused_fft.set_enabled", lambda: call(True), enabled=["off", 1, None])
E("core.fused_fft.enabled", lambda: call())
E("core.fused_fft.status", lambda: call())
E("core.fused_fft.usable", lambda: call(np, np.fft, crand(2, 8, 8), crand(8, 8), crand(8, 8)),
  xp=FREE, fft=FREE, array=FREE, before=FREE, after=FREE)
E("core.fused_fft.forward_multiplied", lambda: call(np, np.fft, crand(2, 8, 8), crand(8, 8), crand(8, 8)),
  xp=FREE, fft=FREE, array=FREE, before=FREE, after=FREE)
# fusion: set_enabled is the switch; elementwise is a decorator (its function's arguments are the caller's)
E("core.fusion.set_enabled", lambda: call(True), enabled=["off", 1, None])
E("core.fusion.enabled", lambda: call())
E("core.fusion.status", lambda: call())
E("core.fusion.elementwise", lambda: call(lambda xp, x: x), function=[3, None])
E("core.fusion.hand_written", lambda: call(lambda xp, x: x), kernel=[3, None])
# scatter: kernels on inputs their callers checked (FREE: no refusals but an index outside the output)
E("core.scatter.add", lambda: call(np.zeros(4), np.array([0, 1, 3]), np.ones(3)), out=FREE, index=FREE,
  weights=FREE, drop_outside=FREE)
E("core.scatter.bincount", lambda: call(np.array([0, 1, 3]), np.ones(3), 4), index=FREE, weights=FREE, length=FREE)

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
E("core.checks.check_rotations", lambda: call(np.stack([np.eye(3), np.eye(3)[[1, 2, 0]]])),
  rotations=[EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc", np.eye(3), 1.1 * np.ones((2, 3, 3)), -np.ones((1, 3, 3)),
             np.diag([1.0, 1.0, -1.0])[None]],
  name=[1, None], single=FREE)
E("core.checks.check_array", lambda: call(rand(4, 4), "array", ndim=2), array=ARRAY + [None], name=FREE,
  ndim=[-1, 2.5, "2"], min_ndim=[-1, 2.5, "2"], real=FREE, finite=FREE)
E("core.checks.check_field", lambda: call(crand(4, 4), "field"), field=ARRAY, name=FREE)
E("core.checks.check_axis", lambda: call(1, "axis", 2), axis=[2, -3, 2.5, True, "0"], name=FREE, ndim=FREE)
E("core.checks.check_client", lambda: call(None), client=["not-a-client", 3], name=FREE)
E("core.checks.check_values", lambda: call([0.1, 0.2], "values", 2, lower=0, upper=1),
  values=[[0.1, NAN], [0.1, 2.0], [0.1, 0.2, 0.3], "abc"], name=FREE, size=FREE, lower=FREE, upper=FREE,
  upper_inclusive=FREE, units=FREE)
E("core.checks.check_grid", lambda: call(_grid(), ndim=2), grid=GRID, name=FREE, ndim=FREE)
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


E("core.device_counts.count_transfers", lambda: call())
E("core.device_counts.count_operations", lambda: call(), by_caller=FREE)  # any truth value
E("core.device_counts.one_operation", lambda: call())
E("core.device_counts.note_operation", lambda: call(), depth=FREE)  # the stand-in's own bookkeeping
E("core.device_counts.note_to_host", lambda: call())
E("core.device_counts.note_to_device", lambda: call())
E("core.strict.asarray", lambda: call(rand(4)), array=["abc", None], dtype=["no-such-dtype"])
E("core.strict.asnumpy", lambda: call(_strict(rand(4))), array=FREE)
E("core.strict.is_strict", lambda: call(rand(4)), array=FREE)  # a question

# progress
E("core.progress.progress", lambda: call(range(3), desc="x", total=3),
  iterable=[3, 2.5], desc=FREE, total=COUNT0, kwargs=FREE)
E("core.progress.memory_budget", lambda: call())
E("core.progress.client_threads", lambda: call(None), client=FREE)  # anything: 1 unless it counts threads
E("core.progress.one_blas_thread", lambda: call(), xp=FREE)  # any module: a no-op off NumPy
E("core.progress.run_batches", lambda: call(lambda start: None, range(0, 6, 2), threads=2), run=[3, None],
  starts=FREE, threads=COUNT, desc=FREE, show=["yes", 1, None])  # starts: any iterable of what run takes
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
E("core.grids.crop_spectrum", lambda: call(crand(16, 16), (8, 8)), spectrum=ARRAY,
  gpts=GPTS + [(32, 32)])
E("core.grids.pad_spectrum", lambda: call(crand(8, 8), (16, 16)), spectrum=ARRAY,
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

# Operators and proximal maps also run inside every solver's iterations: called from outside mbook
# (as here) they refuse NaN and inf; called by mbook's solvers they skip that test, which would copy to
# the host on every iteration (backend.called_from_outside; tests/test_backend.py shows both sides).
OPERAND = [EMPTY, WITH_NAN, "abc", None]

# optimize
E("inverse.optimize.gradient", lambda: call(rand(8, 8)), u=OPERAND, boundary=CHOICE)
E("inverse.optimize.divergence", lambda: call(rand(2, 8, 8)), p=OPERAND + [rand(3, 8, 8)], boundary=CHOICE)
E("inverse.optimize.laplacian", lambda: call(rand(8, 8)), u=OPERAND, boundary=CHOICE)
E("inverse.optimize.divergence_xy", lambda: call(rand(8, 8), rand(8, 8)), px=FREE, py=FREE)  # a kernel: no checks
E("inverse.optimize.fourier", lambda: call(crand(8, 8)), x=OPERAND + [ONE_AXIS_LESS])
E("inverse.optimize.inverse_fourier", lambda: call(crand(8, 8)), y=OPERAND + [ONE_AXIS_LESS])
E("inverse.optimize.apply_mask", lambda: call(crand(8, 8), disk(8)), x=OPERAND + [ONE_AXIS_LESS, rand(4, 4)],
  mask=[EMPTY, ONE_AXIS_LESS, "abc", disk(4)])
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
E("inverse.optimize.tv_denoise", lambda: call(rand(8, 8), 0.1, max_num_iter=10), image=ARRAY, weight=NONNEG,
  boundary=CHOICE, tol=TOL, max_num_iter=COUNT, check_every=COUNT)

# solvers
E("inverse.solvers.operator_norm", lambda: call(lambda x: 2 * x, lambda y: 2 * y, (8, 8), max_num_iter=20),
  forward=FREE, adjoint=FREE, shape=GPTS, dtype=["no-such-dtype"], max_num_iter=COUNT, tol=TOL,
  check_every=COUNT, seed=SEED, xp=FREE)
E("inverse.solvers.pdhg", lambda: call(rand(8, 8), np.zeros((2, 8, 8)), **_ops(), **_tv_proxes(rand(8, 8)),
                                        max_num_iter=10),
  x0=ARRAY_ANY_NDIM, y0=ARRAY_ANY_NDIM, K=FREE, K_adjoint=FREE, prox_g=FREE, prox_fstar=FREE, tau=LENGTH,
  sigma=LENGTH, norm=LENGTH, theta=FRACTION, gamma=NONNEG, objectives=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)
E("inverse.solvers.pdhg_iterations", lambda: call(dev(rand(8, 8)), dev(np.zeros((2, 8, 8))), **_ops(),
                                                   **_tv_proxes(dev(rand(8, 8))), max_num_iter=10),
  x=UNCHECKED, y=UNCHECKED, K=FREE, K_adjoint=FREE, prox_g=FREE, prox_fstar=FREE, tau=UNCHECKED,
  sigma=UNCHECKED, norm=UNCHECKED, theta=UNCHECKED, gamma=UNCHECKED, objectives=FREE, tol=UNCHECKED,
  max_num_iter=UNCHECKED, check_every=UNCHECKED)
E("inverse.solvers.forward_backward", lambda: call(rand(8, 8), grad_f=lambda x: x - 1.0,
                                                    prox_g=lambda x, t: x, step=0.5, max_num_iter=10),
  x0=ARRAY_ANY_NDIM, grad_f=FREE, prox_g=FREE, step=LENGTH, accelerate=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)
E("inverse.solvers.projected_gradient", lambda: call(rand(8, 8), grad_f=lambda x: x - 1.0,
                                                      project=lambda x: x, step=0.5, max_num_iter=10),
  x0=ARRAY_ANY_NDIM, grad_f=FREE, project=FREE, step=LENGTH, accelerate=FREE, tol=TOL, max_num_iter=COUNT,
  check_every=COUNT)


# cdi
def _cdi():
    obj = disk(16, 0.2) * np.exp(0.3j * rand(16, 16))
    intensity = np.abs(np.fft.fft2(obj)) ** 2
    return intensity, disk(16, 0.3)


E("inverse.cdi.diffraction_intensity", lambda: call(crand(8, 8)), obj=ARRAY)
E("inverse.cdi.check_cdi_data", lambda: call(*_cdi()), intensity=ARRAY + [-rand(16, 16), rand(2, 2, 16, 16)],
  support=[EMPTY, ONE_AXIS_LESS, "abc", disk(8), np.zeros((16, 16), bool)])
E("inverse.cdi.project_modulus", lambda: call(crand(8, 8), rand(8, 8)), field=ARRAY + [crand(4, 4)],
  amplitude=ARRAY + [rand(4, 4), -rand(8, 8)])
E("inverse.cdi.retrieve_phase", lambda: call(*_cdi(), max_num_iter=5),
  intensity=ARRAY + [-rand(16, 16), rand(2, 2, 16, 16)], support=[EMPTY, ONE_AXIS_LESS, "abc", disk(8)],
  method=CHOICE, beta=[0.0, -0.5, 1.5, NAN, "1"], max_num_iter=COUNT, seed=SEED + [[1, 2]],
  initial=ARRAY + [crand(8, 8)], prior=["not-a-prior", 3], prior_every=COUNT, budget=LENGTH)
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
E("inverse.circle.two_way_shrinkage", lambda: call(rand(8, 8) - 1.0, 0.1), difference=ARRAY_ANY_NDIM,
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
E("inverse.lifting.lift_apply", lambda: call(rand(9, 8, 8), 8), x=ARRAY + [rand(5, 8, 8)],
  num_labels=COUNT)
E("inverse.lifting.lift_adjoint", lambda: call(rand(8, 3, 8, 8), 8), y=ARRAY + [rand(5, 3, 8, 8)],
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


E("inverse.registration.total_displacement", lambda: call(*_fields()), fields=ARRAY + [rand(3, 2, 8, 8)],
  line_shifts=ARRAY + [rand(3, 8)])
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
E("inverse.synthetic.random_field", lambda: call((16, 16), correlation_length=3.0), gpts=GPTS,
  correlation_length=LENGTH, seed=SEED)
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

# warps: the public functions check (finite displacements and images); the registration's iterations call
# the *_kernel functions on inputs checked once.
E("inverse.warps.bilinear_corners", lambda: call((8, 8), 0.3 * rand(2, 8, 8)), shape=GPTS + [(4, 4)],
  displacement=ARRAY + [rand(2, 4, 4), np.full((2, 8, 8), INF)])
E("inverse.warps.warp", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)), image=ARRAY + [rand(4, 4)],
  displacement=ARRAY + [rand(2, 4, 4), np.full((2, 8, 8), INF)], corners=["abc", 3])
E("inverse.warps.warp_adjoint", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)), residual=ARRAY + [rand(4, 4)],
  displacement=ARRAY + [rand(2, 4, 4)], shape=GPTS + [(4, 4)], corners=["abc", 3])
E("inverse.warps.warp_derivative", lambda: call(rand(8, 8), 0.3 * rand(2, 8, 8)), image=ARRAY + [rand(4, 4)],
  displacement=ARRAY + [rand(2, 4, 4)])
E("inverse.warps.bilinear_corners_kernel", lambda: call((8, 8), dev(0.3 * rand(2, 8, 8))), shape=UNCHECKED,
  displacement=UNCHECKED)
E("inverse.warps.warp_kernel", lambda: call(dev(rand(8, 8)), dev(0.3 * rand(2, 8, 8))), image=UNCHECKED,
  displacement=UNCHECKED, corners=UNCHECKED)
E("inverse.warps.warp_adjoint_kernel", lambda: call(dev(rand(8, 8)), dev(0.3 * rand(2, 8, 8)), (8, 8)),
  residual=UNCHECKED, displacement=UNCHECKED, shape=UNCHECKED, corners=UNCHECKED)
E("inverse.warps.warp_derivative_kernel", lambda: call(dev(rand(8, 8)), dev(0.3 * rand(2, 8, 8))),
  image=UNCHECKED, displacement=UNCHECKED)


# ============================================================================= mbook.light
REFRACTIVE = [0, -1.0, NAN, INF, "1"]   # a refractive index (real part > 0)
NA = [-0.1, NAN, "0.1"]                 # a numerical aperture, >= 0


def _water():
    return dict(wavelength=0.5, n_background=1.33)


def _index2d(n=16):
    return 1.33 + 0.02 * disk(n, 0.25)


def _fp_setup(**kwargs):
    from mbook.light import led_geometry

    return led_geometry.make_setup((32, 32), sampling=0.5, wavelength=0.5, na=0.12, upsampling=2,
                                   illumination=led_geometry.led_array((3, 3), pitch=3.0, height=60.0), **kwargs)


def _fp_images():
    from mbook.light import fourier_ptychography as fp

    return fp.images(crand(32, 32), _fp_setup())


def _fp_spectrum(setup=None):
    from mbook.core import backend

    return backend.asnumpy(np.fft.fft2(crand(32, 32)) / 32**2)


def _fp_pupil():
    from mbook.light import led_geometry

    return led_geometry.pupil(_fp_setup())


E("light.cbs.boundary_profile", lambda: call(np.linspace(0.0, 1.0, 8), k=12.0, strength=0.5),
  depth=ARRAY_ANY_NDIM + [-np.ones(3)], k=LENGTH, strength=NONNEG, order=COUNT)
E("light.cbs.solve", lambda: call(_index2d(), sampling=0.1, max_num_iter=5, tol=0.0, **_water()),
  n=ARRAY_ANY_NDIM, wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, tilt=REAL, boundary=[0, -1, NAN, "a"],
  boundary_strength=NONNEG, epsilon=LENGTH, tol=TOL, max_num_iter=COUNT, check_every=COUNT)
E("light.epry.reconstruct", lambda: call(_fp_images(), _fp_setup(), max_num_iter=2),
  images_measured=ARRAY + [-np.ones((9, 16, 16))], setup=["not-a-setup", None], vignetting=FREE,
  recover_pupil=FREE, pupil_init=ARRAY + [np.ones((4, 4), complex)], max_num_iter=COUNT, alpha=LENGTH, beta=LENGTH)
E("light.epry.amplitude_loss", lambda: call(_fp_spectrum(), _fp_images(), _fp_pupil(), _fp_setup()),
  spectrum=ARRAY + [np.ones((4, 4), complex)], images_measured=ARRAY + [np.ones((9, 4, 4))],
  pupil_function=ARRAY + [np.ones((4, 4), complex)], setup=["not-a-setup", None], vignetting=FREE)
E("light.epry.align", lambda: call(crand(16, 16), crand(16, 16, seed=1)), estimate=ARRAY + [crand(8, 8)],
  reference=ARRAY + [crand(8, 8)])
E("light.epry.complex_error", lambda: call(crand(16, 16), crand(16, 16, seed=1), band=0.5, sampling=0.5),
  estimate=ARRAY + [crand(8, 8)], reference=ARRAY + [crand(8, 8)], band=LENGTH, sampling=LENGTH)
E("light.led_geometry.led_array", lambda: call((3, 3), pitch=4.0, height=40.0), shape=GPTS,
  pitch=LENGTH, height=LENGTH, center=[(NAN, 0.0), (0.0,), "a"])
E("light.led_geometry.make_setup",
  lambda: call((32, 32), sampling=0.5, wavelength=0.5, na=0.12, upsampling=2,
               illumination=_led()),
  gpts=GPTS, sampling=LENGTH, wavelength=LENGTH, na=NA, illumination=ARRAY + [np.ones((9, 2))], upsampling=COUNT,
  na_vignetting=NA, vignetting_slope=REAL)
E("light.led_geometry.select_leds", lambda: call(_fp_setup(), np.arange(9) < 5),
  setup=["not-a-setup", None], keep=[np.zeros(9, bool), np.ones(4, bool), "abc"])
E("light.led_geometry.pupil", lambda: call(_fp_setup(), defocus=1.0), setup=["not-a-setup", None],
  defocus=REAL, zernike_waves=[{(2, 0): NAN}, {(1, 5): 0.1}, "a"], xp=FREE)
E("light.led_geometry.effective_pupil", lambda: call(_fp_setup(), (0.0, 0.0)),
  setup=["not-a-setup", None], position=[(NAN, 0.0), (0.0,), "a"], xp=FREE)
E("light.led_geometry.window_indices", lambda: call(_fp_setup()), setup=["not-a-setup", None],
  vignetting=FREE, xp=FREE)
E("light.fourier_ptychography.vignetting_operator", lambda: call(_fp_setup(na_vignetting=0.15)),
  setup=["not-a-setup", None], xp=FREE)
E("light.fourier_ptychography.vignetting", lambda: call(np.ones((9, 16, 16), complex),
                                                        _fp_setup(na_vignetting=0.15)),
  window_spectrum=ARRAY + [np.ones((9, 4, 4))], setup=["not-a-setup", None])
E("light.led_geometry.check_setup", lambda: call(_fp_setup()), setup=["not-a-setup", None, (1, 2)],
  name=FREE)
E("light.fourier_ptychography.check_spectrum", lambda: call(crand(8, 8), (8, 8), "array"),
  array=[EMPTY, ONE_AXIS_LESS, WITH_NAN, "abc", crand(4, 4)], shape=FREE, name=FREE)
E("light.fourier_ptychography.camera_fields", lambda: call(_fp_spectrum(), _fp_pupil(), _fp_setup()),
  spectrum=ARRAY + [np.ones((4, 4), complex)], pupil_function=ARRAY + [np.ones((4, 4), complex)],
  setup=["not-a-setup", None], vignetting=FREE)
E("light.fourier_ptychography.camera_fields_adjoint", lambda: call(np.ones((9, 16, 16), complex), _fp_pupil(),
                                                                   _fp_setup()),
  fields=ARRAY + [np.ones((9, 4, 4))], pupil_function=ARRAY + [np.ones((4, 4), complex)],
  setup=["not-a-setup", None], vignetting=FREE)
E("light.fourier_ptychography.images", lambda: call(crand(32, 32), _fp_setup()),
  transmission=ARRAY + [crand(8, 8)], setup=["not-a-setup", None], pupil_function=ARRAY + [np.ones((4, 4))],
  vignetting=FREE)
E("light.fourier_ptychography.images_thick", lambda: call(1.0 + 0.01 * rand(2, 32, 32), _fp_setup(),
                                                          slice_thickness=1.0),
  index=ARRAY + [rand(2, 8, 8)], setup=["not-a-setup", None], slice_thickness=LENGTH,
  n_background=REFRACTIVE, pupil_function=ARRAY + [np.ones((4, 4))], vignetting=FREE, wide_angle=FREE)


def _led():
    from mbook.light import led_geometry

    return led_geometry.led_array((3, 3), pitch=3.0, height=60.0)


E("light.microscope.rayleigh_range", lambda: call(2.0, 0.5), waist=LENGTH, wavelength=LENGTH)
E("light.microscope.gaussian_beam_radius", lambda: call(3.0, waist=2.0, wavelength=0.5),
  distance=REAL, waist=LENGTH, wavelength=LENGTH, paraxial=FREE)
E("light.microscope.gaussian_beam", lambda: call(_grid((32, 32), 0.5), waist=3.0, wavelength=0.5),
  grid=GRID, waist=LENGTH, wavelength=LENGTH, distance=REAL, center=[(NAN, 0.0), (0.0,), "a"], xp=FREE)
E("light.microscope.beam_radius", lambda: call(np.exp(-((np.arange(32) - 16.0) ** 2)[:, None] / 8
                                                       - ((np.arange(32) - 16.0) ** 2)[None, :] / 8), 0.5),
  intensity=ARRAY + [-np.ones((8, 8))], sampling=LENGTH, edge_tolerance=LENGTH)
E("light.microscope.zernike", lambda: call(2, 0, np.linspace(0, 1, 5), np.zeros(5)),
  n=COUNT0 + [1], m=[2.5, "0", 3], rho=[EMPTY, WITH_NAN, "abc"],
  phi=[EMPTY, WITH_NAN, "abc", np.zeros(3)])
E("light.microscope.pupil", lambda: call(_grid((16, 16), 0.5), wavelength=0.5, na=0.3),
  grid=GRID, wavelength=LENGTH, na=NA, defocus=REAL, zernike_waves=[{(2, 0): NAN}, {(1, 5): 0.1}, "a"],
  n_medium=REFRACTIVE, xp=FREE)
E("light.microscope.source_points", lambda: call(_grid((16, 16), 0.5), wavelength=0.5, na_illumination=0.1),
  grid=GRID, wavelength=LENGTH, na_illumination=NA, max_points=COUNT)
E("light.microscope.partially_coherent_image",
  lambda: call(crand(16, 16), wavelength=0.5, sampling=0.5, na=0.3, na_illumination=0.1, max_points=20),
  transmission=ARRAY, wavelength=LENGTH, sampling=LENGTH, na=NA, na_illumination=NA, defocus=REAL,
  zernike_waves=[{(2, 0): NAN}, {(1, 5): 0.1}, "a"], max_points=COUNT)
E("light.mie.check_index_value", lambda: call(1.5 + 0.01j, "n_cylinder"),
  n=[0, -1.0, NAN, INF, "1", complex(NAN, 0)], name=FREE)
E("light.mie.coefficients", lambda: call(3.0, 1.2), size_parameter=LENGTH, relative_index=REFRACTIVE,
  l_max=COUNT0 + [10**9])
E("light.mie.cylinder_field", lambda: call((16, 16), sampling=0.2, radius=0.6, n_cylinder=1.4, **_water()),
  gpts=GPTS, sampling=LENGTH, wavelength=LENGTH, radius=LENGTH, n_cylinder=REFRACTIVE, n_background=REFRACTIVE,
  center=[(NAN, 0.0), (0.0,), "a"], angle=REAL)
E("light.mie.cylinder_index", lambda: call((16, 16), sampling=0.2, radius=0.6, n_cylinder=1.4),
  gpts=GPTS, sampling=LENGTH, radius=LENGTH, n_cylinder=REFRACTIVE, n_background=REFRACTIVE,
  center=[(NAN, 0.0), (0.0,), "a"], supersample=COUNT)
E("light.mie.scattering_efficiency", lambda: call(3.0, 1.2), size_parameter=LENGTH, relative_index=REFRACTIVE)
E("light.mie.sphere_field", lambda: call((8, 8, 8), sampling=0.2, radius=0.4, n_sphere=1.4, **_water()),
  gpts=GPTS, sampling=LENGTH, wavelength=LENGTH, radius=LENGTH, n_sphere=REFRACTIVE, n_background=REFRACTIVE,
  center=[(NAN, 0.0, 0.0), (0.0,), "a"])
E("light.mie.near_mask", lambda: call((16, 16), sampling=0.2, radius=0.6), gpts=GPTS, sampling=LENGTH,
  radius=LENGTH, margin=REAL, region=CHOICE, center=[(NAN, 0.0), (0.0,), "a"])
E("light.phantoms.cells", lambda: call((32, 32), sampling=0.5, seed=0, n_cells=2, radius=(2.0, 4.0), granules=3),
  gpts=GPTS, sampling=LENGTH, seed=SEED, n_cells=COUNT0, radius=[(0.0, 4.0), (4.0, 2.0), (NAN, 4.0), "a"],
  phase=REAL, absorption=NONNEG, granules=COUNT0)
E("light.phantoms.resolution_target", lambda: call((64, 64), sampling=0.25, periods=[4.0], contrast=0.6),
  gpts=GPTS, sampling=LENGTH, periods=[[], [0.0], [NAN], "a"], contrast=[-0.5, 1.5, NAN, "1"],
  patch=[0, -1.0, NAN, "1"])
E("light.phantoms.bar_contrast", lambda: call(rand(64, 64), _target_patch(), sampling=0.25),
  image=ARRAY, patch=["a", None, (1, 2)], sampling=LENGTH, upsampling=COUNT)


def _target_patch():
    from mbook.light import phantoms

    return phantoms.resolution_target((64, 64), sampling=0.25, periods=[4.0], contrast=0.6).patches[0]


E("light.scattering.check_index", lambda: call(_index2d(), sampling=0.1, **_water()),
  n=ARRAY_ANY_NDIM, wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, nonparaxial=FREE)
E("light.scattering.scattering_potential", lambda: call(_index2d(), **_water()), n=ARRAY_ANY_NDIM,
  wavelength=LENGTH, n_background=REFRACTIVE)
E("light.scattering.plane_wave", lambda: call(_grid((16, 16), 0.1), **_water()), grid=GRID, wavelength=LENGTH,
  n_background=REFRACTIVE, tilt=[NAN, "a", 10.0], xp=FREE)
E("light.scattering.born_scattered_field", lambda: call(crand(16, 16), sampling=0.1, **_water()),
  potential=ARRAY_ANY_NDIM, wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, tilt=[NAN, "a", 10.0])
E("light.scattering.born_scattered_field_adjoint", lambda: call(crand(16, 16), sampling=0.1, **_water()),
  field=ARRAY_ANY_NDIM, wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, tilt=[NAN, "a", 10.0])
E("light.scattering.born", lambda: call(_index2d(), sampling=0.1, **_water()), n=ARRAY_ANY_NDIM,
  wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, tilt=[NAN, "a", 10.0])
E("light.scattering.rytov", lambda: call(_index2d(), sampling=0.1, **_water()), n=ARRAY_ANY_NDIM,
  wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, tilt=[NAN, "a", 10.0])
E("light.scattering.bpm", lambda: call(_index2d(), sampling=0.1, **_water()), n=ARRAY_ANY_NDIM,
  wavelength=LENGTH, sampling=LENGTH, n_background=REFRACTIVE, incident=ARRAY + [np.ones(4, complex)],
  wide_angle=FREE, all_planes=FREE)
E("light.scattering.bpm_adjoint", lambda: call(crand(16), _index2d(), sampling=0.1, **_water()),
  exit_field=ARRAY_ANY_NDIM + [crand(4)], n=ARRAY_ANY_NDIM, wavelength=LENGTH, sampling=LENGTH,
  n_background=REFRACTIVE, wide_angle=FREE)


# ============================================================================= mbook.electron
ENERGY = [0, -1.0, NAN, INF, "1"]   # an electron energy [eV]
ATOMS = ["not-atoms", None, 3]      # an ase.Atoms


def _atom():
    from mbook.electron import structures

    return structures.isolated_atom("C", extent=4.0, thickness=2.0)


def _potential():
    from mbook.electron import potentials

    return potentials.projected_potential(_atom(), 0.2, 1.0, return_grid=True)


def _pot():
    return _potential()[0]


def _egrid():
    return _potential()[1]


def _k():
    from mbook.core import grids

    kx, ky = grids.spatial_frequencies(_egrid(), xp=np)
    return kx[:, None], ky[None, :]


def _prepared():
    from mbook.electron import multislice

    return multislice.prepare(np.ones((20, 20), complex), _pot(), _egrid(), 100e3, 1.0, True)


def _configurations():
    from mbook.electron import phonons

    return phonons.frozen_phonon_configurations(_atom(), 0.05, 2, 0)


BF = {"BF": (0.0, 20.0)}
E("electron.physics.check_energy", lambda: call(100e3), energy=ENERGY)
E("electron.physics.wavelength", lambda: call(100e3), energy=ENERGY)
E("electron.physics.relativistic_mass_ratio", lambda: call(100e3), energy=ENERGY)
E("electron.physics.interaction_parameter", lambda: call(100e3), energy=ENERGY)
E("electron.physics.scattering_angle", lambda: call(0.5, 100e3), spatial_frequency=[NAN, "a", np.array([NAN])],
  energy=ENERGY)
E("electron.scattering_factors.table_metadata", lambda: call("kirkland"), parametrization=CHOICE + [3])
E("electron.scattering_factors.check_parametrization", lambda: call("kirkland"), parametrization=CHOICE + [3])
E("electron.scattering_factors.element_symbol", lambda: call(6), element=[0, 200, "Xx", 2.5, None])
E("electron.scattering_factors.check_element", lambda: call("C", "kirkland"), element=[0, 200, "Xx", 2.5, None],
  parametrization=CHOICE)
# scattering_factor_of_k2 is the kernel (documented: no checks) that projected_potential calls on the
# grid's frequencies; scattering_factor is its checked entry.
E("electron.scattering_factors.scattering_factor_of_k2", lambda: call("C", np.linspace(0, 4, 5), "kirkland"),
  symbol=UNCHECKED, k2=UNCHECKED, parametrization=UNCHECKED)
E("electron.scattering_factors.scattering_factor", lambda: call("C", np.linspace(0, 2, 5)),
  element=[0, 200, "Xx", 2.5, None], k=[EMPTY, WITH_NAN, "abc", -np.ones(3)], parametrization=CHOICE)
E("electron.structures.srtio3", lambda: call((1, 1, 1)), repeat=[(0, 1, 1), (1, 1), (1.5, 1, 1), "a"])
E("electron.structures.silicon_110", lambda: call((1, 1, 1)), repeat=[(0, 1, 1), (1, 1), (1.5, 1, 1), "a"])
E("electron.structures.graphene", lambda: call((1, 1)), repeat=[(0, 1), (1,), (1.5, 1), "a"], thickness=LENGTH)
E("electron.structures.isolated_atom", lambda: call("C"), symbol=["Xx", 3, None], extent=LENGTH,
  thickness=LENGTH)
E("electron.structures.amorphous", lambda: call("C", extent=(5, 5, 5), density=2.0, min_distance=1.4, seed=0),
  symbol=["Xx", 3, None], extent=LENGTH + [(5, 5)], density=LENGTH, min_distance=LENGTH, seed=SEED,
  max_rounds=COUNT)
E("electron.structures.supported_particle", lambda: call("Au", length=4, extent=(12, 12), seed=0),
  symbol=["Xx", "Fe", 3, None], length=COUNT + [1, 31], extent=LENGTH + [(5, 5), (12,)], support_thickness=LENGTH,
  density=LENGTH, min_distance=LENGTH, seed=SEED)
E("electron.structures.column_positions", lambda: call(_atom()), atoms=ATOMS, decimals=[-1, 2.5, "2"])
E("electron.potentials.check_atoms", lambda: call(_atom()), atoms=ATOMS, orthorhombic=FREE)
E("electron.potentials.potential_grid", lambda: call(_atom(), 0.2), atoms=ATOMS, sampling=LENGTH)
E("electron.potentials.slice_thicknesses", lambda: call(_atom(), 1.0), atoms=ATOMS,
  slice_thickness=LENGTH + [(1.0, NAN)])
E("electron.potentials.projected_potential", lambda: call(_atom(), 0.2, 1.0), atoms=ATOMS, sampling=LENGTH,
  slice_thickness=LENGTH, parametrization=CHOICE, return_grid=FREE)
E("electron.phonons.displace_atoms", lambda: call(_atom(), 0.05, 0), atoms=ATOMS, sigmas=NONNEG + [{"Xx": 0.1}],
  seed=SEED)
E("electron.phonons.frozen_phonon_configurations", lambda: call(_atom(), 0.05, 2, 0), atoms=ATOMS,
  sigmas=NONNEG, num_configs=COUNT, seed=SEED)
E("electron.peaks.find_peaks", lambda: call(rand(16, 16), sampling=0.5, min_distance=1.0), image=ARRAY,
  sampling=LENGTH, min_distance=LENGTH, threshold=[-0.5, 1.5, NAN, "1"])
E("electron.peaks.match_positions", lambda: call(rand(5, 2), rand(4, 2, seed=1)),
  found=ARRAY + [rand(5, 3)], expected=ARRAY + [rand(4, 3)], extent=[(0.0, 1.0), (NAN, 1.0), (1.0,), "a"])
E("electron.peaks.profile_minima", lambda: call(np.linspace(0, 10, 50), np.cos(np.linspace(0, 10, 50))),
  x=[EMPTY, WITH_NAN, "abc", np.linspace(0, 1, 3)], y=[EMPTY, WITH_NAN, "abc", np.ones(3)], order=COUNT,
  smooth=NONNEG)
E("electron.waves.check_aberrations", lambda: call({"C12": 1.0}, defocus=10.0), aberrations=[{"C99": 1.0},
  {"C12": NAN}, "a"], defocus=REAL, Cs=REAL)
E("electron.waves.aberration_phase", lambda: call(*_k(), energy=100e3, defocus=10.0),
  kx=[EMPTY, WITH_NAN, "abc"], ky=[EMPTY, WITH_NAN, "abc"], energy=ENERGY, defocus=REAL, Cs=REAL,
  aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"])
E("electron.waves.aperture", lambda: call(*_k(), energy=100e3, semiangle_cutoff=20.0),
  kx=[EMPTY, WITH_NAN, "abc"], ky=[EMPTY, WITH_NAN, "abc"], energy=ENERGY, semiangle_cutoff=LENGTH)
E("electron.waves.temporal_envelope", lambda: call(*_k(), energy=100e3, focal_spread=20.0),
  kx=[EMPTY, WITH_NAN, "abc"], ky=[EMPTY, WITH_NAN, "abc"], energy=ENERGY, focal_spread=NONNEG)
E("electron.waves.spatial_envelope", lambda: call(*_k(), energy=100e3, angular_spread=0.5, defocus=10.0),
  kx=[EMPTY, WITH_NAN, "abc"], ky=[EMPTY, WITH_NAN, "abc"], energy=ENERGY, angular_spread=NONNEG, defocus=REAL,
  Cs=REAL, aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"])
E("electron.waves.lens_transfer", lambda: call(_egrid(), energy=100e3, defocus=10.0),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, defocus=REAL, Cs=REAL,
  aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], focal_spread=NONNEG, angular_spread=NONNEG, xp=FREE)
# The kernels of waves (no checks: lens_transfer, the probes and hrtem call them on checked inputs).
E("electron.waves.frequency_axes", lambda: call(_egrid(), np), grid=UNCHECKED, xp=FREE)
E("electron.waves.aberration_phase_kernel", lambda: call(*_k(), 0.037, {"C10": -10.0}, np), kx=UNCHECKED,
  ky=UNCHECKED, wavelength=UNCHECKED, coefficients=UNCHECKED, xp=FREE)
E("electron.waves.envelopes_kernel", lambda: call(*_k(), 0.037, {"C10": -10.0}, 20.0, 30.0, 0.5, np),
  kx=UNCHECKED, ky=UNCHECKED, wavelength=UNCHECKED, coefficients=UNCHECKED, semiangle_cutoff=UNCHECKED,
  focal_spread=UNCHECKED, angular_spread=UNCHECKED, xp=FREE)
E("electron.waves.plane_wave", lambda: call((8, 8)), gpts=GPTS, xp=FREE)
E("electron.waves.probe", lambda: call(_egrid(), energy=100e3, semiangle_cutoff=20.0, positions=[(1.0, 1.0)]),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, defocus=REAL, Cs=REAL,
  aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], positions=[[(NAN, 1.0)], [(1.0,)], "a"], xp=FREE)
E("electron.waves.probe_spectrum", lambda: call(_egrid(), energy=100e3, semiangle_cutoff=20.0),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, defocus=REAL, Cs=REAL,
  aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], xp=FREE)
E("electron.waves.place_probes", lambda: call(np.ones((20, 20), complex), _egrid(), [(1.0, 1.0), (2.0, 2.0)]),
  spectrum=ARRAY + [np.ones((4, 4), complex)], grid=GRID, positions=[[(1.0,)], "a", [], [(NAN, 1.0)]],
  plan=["not-a-plan", 3])
E("electron.hrtem.contrast_transfer_function", lambda: call(_egrid(), energy=100e3, defocus=10.0),
  grid=GRID, energy=ENERGY, defocus=REAL, Cs=REAL, aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"],
  amplitude_contrast=[-0.5, 1.5, NAN, "1"], focal_spread=NONNEG, angular_spread=NONNEG,
  semiangle_cutoff=LENGTH, xp=FREE)
E("electron.hrtem.contrast_transfer_kernel",
  lambda: call(np.fft.fftfreq(8, 0.5)[:, None], np.fft.fftfreq(8, 0.5)[None, :], 0.037, {"C10": -10.0}, 0.1, None,
               0.0, 0.0, np),
  kx=UNCHECKED, ky=UNCHECKED, wavelength=UNCHECKED, coefficients=UNCHECKED, amplitude_contrast=UNCHECKED,
  semiangle_cutoff=UNCHECKED, focal_spread=UNCHECKED, angular_spread=UNCHECKED, xp=FREE)
E("electron.hrtem.image_intensity", lambda: call(crand(20, 20), _egrid(), energy=100e3, defocus=10.0),
  exit_wave=ARRAY + [crand(4, 4)], grid=GRID, energy=ENERGY, defocus=REAL, Cs=REAL,
  aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], semiangle_cutoff=LENGTH, focal_spread=NONNEG,
  angular_spread=NONNEG)
E("electron.hrtem.ctf_zeros", lambda: call(energy=100e3, defocus=100.0, k_max=1.0, num_samples=200),
  energy=ENERGY, defocus=REAL, Cs=REAL, k_max=LENGTH, num_samples=COUNT)
E("electron.multislice.max_angle", lambda: call(_egrid(), 100e3), grid=GRID, energy=ENERGY, antialias=FREE)
E("electron.multislice.antialias_aperture", lambda: call(_egrid()), grid=GRID, xp=FREE)
E("electron.multislice.transmission_function", lambda: call(_pot()[0], energy=100e3, grid=_egrid()),
  potential=ARRAY,
  energy=ENERGY, grid=GRID, antialias=FREE)
E("electron.multislice.transmission_slices", lambda: call(_pot(), energy=100e3, grid=_egrid()), potential=ARRAY,
  energy=ENERGY, grid=GRID, antialias=FREE)
E("electron.multislice.slice_propagator", lambda: call(_egrid(), energy=100e3, slice_thickness=1.0), grid=GRID,
  energy=ENERGY, slice_thickness=LENGTH, antialias=FREE, xp=FREE)
E("electron.multislice.check_thicknesses", lambda: call(1.0, 3), slice_thickness=LENGTH + [(1.0, 2.0)],
  n_slices=COUNT)
E("electron.multislice.slice_propagators", lambda: call(_egrid(), energy=100e3, thicknesses=(1.0, 1.0)),
  grid=GRID, energy=ENERGY, thicknesses=[(), (1.0, NAN), (1.0, -1.0), "a"], antialias=FREE, xp=FREE)
E("electron.multislice.prepare", lambda: call(np.ones((20, 20), complex), _pot(), _egrid(), 100e3, 1.0, True),
  waves=ARRAY + [np.ones((4, 4), complex)], potential=ARRAY + [rand(2, 4, 4)], grid=GRID, energy=ENERGY,
  slice_thickness=LENGTH, antialias=FREE, transmissions=["abc", 3], lazy=FREE)
# iterate_slices is the kernel of the multislice loop: it runs on what prepare() checked and returns
# (device arrays, a plan); checking again would cost per call what the scan batches are meant to save.
E("electron.multislice.iterate_slices", lambda: call(*_prepared()), psi=UNCHECKED, transmissions=UNCHECKED,
  propagators=UNCHECKED, plan=UNCHECKED)
E("electron.multislice.propagate_slices", lambda: call(np.ones((20, 20), complex), _pot(), grid=_egrid(),
                                                       energy=100e3, slice_thickness=1.0),
  waves=ARRAY + [np.ones((4, 4), complex)], potential=ARRAY + [rand(2, 4, 4)], grid=GRID, energy=ENERGY,
  slice_thickness=LENGTH, antialias=FREE, transmissions=["abc", 3])
E("electron.multislice.exit_wave", lambda: call(_atom(), 100e3, 0.2, 1.0), atoms=ATOMS, energy=ENERGY,
  sampling=LENGTH, slice_thickness=LENGTH, parametrization=CHOICE, antialias=FREE, return_grid=FREE)
E("electron.multislice.weak_phase_exit_wave", lambda: call(_pot(), energy=100e3), potential=ARRAY,
  energy=ENERGY)
E("electron.multislice.thickness_series", lambda: call(np.ones((20, 20), complex), _pot(), grid=_egrid(),
                                                       energy=100e3, slice_thickness=1.0),
  waves=ARRAY + [np.ones((4, 4), complex)], potential=ARRAY + [rand(2, 4, 4)], grid=GRID, energy=ENERGY,
  slice_thickness=LENGTH, every=COUNT, antialias=FREE)
E("electron.stem.cpu_batch", lambda: call(_egrid()), grid=GRID)
E("electron.stem.nyquist_sampling", lambda: call(100e3, 20.0), energy=ENERGY, semiangle_cutoff=LENGTH)
E("electron.stem.scan_positions", lambda: call(start=(0, 0), end=(2, 2), sampling=0.5),
  start=[(NAN, 0), (0,), "a"], end=[(NAN, 2), (2,), "a", (0, 0)], sampling=LENGTH, energy=ENERGY,
  semiangle_cutoff=LENGTH, endpoint=FREE)
E("electron.stem.plan_scan", lambda: call(4, _egrid(), fixed_bytes=1000), n_probes=COUNT, grid=GRID,
  fixed_bytes=NONNEG, diffraction=FREE, budget=LENGTH, max_batch=COUNT, client=["not-a-client", 3])
E("electron.stem.check_positions", lambda: call(np.full((2, 2), 1.0), _egrid()), positions=ARRAY, grid=GRID)
# Packs the outputs of scans that checked their inputs (stem, prism, lma): nothing of its own to refuse.
E("electron.stem.scan_outputs", lambda: call(None, rand(4, 8, 8), {}, (2, 2), (8, 8)), signals=FREE, patterns=FREE,
  detectors=FREE, scan_shape=FREE, pattern_gpts=FREE)
E("electron.stem.scan", lambda: call(_pot(), grid=_egrid(), energy=100e3, slice_thickness=1.0,
                                     semiangle_cutoff=20.0, positions=np.array([[1.0, 1.0], [2.0, 2.0]]),
                                     detectors=BF),
  potential=ARRAY + [rand(2, 4, 4)], grid=GRID, energy=ENERGY, slice_thickness=LENGTH, semiangle_cutoff=LENGTH,
  positions=[EMPTY, WITH_NAN, "abc", np.ones((2, 3))], detectors=[{"BF": (20.0, 10.0)}, "a"], diffraction=FREE,
  defocus=REAL, Cs=REAL, aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], budget=LENGTH, max_batch=COUNT,
  client=["not-a-client", 3])
E("electron.stem.frozen_phonon_scan", lambda: call(_configurations(), sampling=0.2, slice_thickness=1.0,
                                                   energy=100e3, semiangle_cutoff=20.0,
                                                   positions=np.array([[1.0, 1.0]]), detectors=BF),
  configurations=[[], "abc", [3]], sampling=LENGTH, slice_thickness=LENGTH, parametrization=CHOICE,
  keep_each=FREE, scan_kwargs=FREE)
E("electron.stem.source_size_blur", lambda: call(rand(8, 8), sampling=0.5, source_size=0.5), image=ARRAY,
  sampling=LENGTH, source_size=NONNEG)
E("electron.stem_detectors.standard_detectors", lambda: call(20.0), semiangle_cutoff=LENGTH)
E("electron.stem_detectors.check_detectors", lambda: call(BF), allow_empty=FREE,
  detectors=[{"BF": (NAN, 10.0)}, {"BF": (-1.0, 10.0)}, {"BF": (1.0, 2.0, 3.0)}, {"BF": "ab"}, "a", {}])
E("electron.stem_detectors.scan_detectors", lambda: call(BF, 20.0), semiangle_cutoff=LENGTH,
  detectors=[{"BF": (NAN, 10.0)}, {"BF": (-1.0, 10.0)}, {"BF": "ab"}, "a", 3])
E("electron.stem_detectors.detector_masks", lambda: call(_egrid(), energy=100e3, detectors=BF), grid=GRID,
  energy=ENERGY, detectors=[{"BF": (20.0, 10.0)}, {"BF": (NAN, 10.0)}, {"BF": (-1.0, 10.0)}, "a", {}], xp=FREE)
E("electron.stem_detectors.virtual_image",
  lambda: call(rand(2, 20, 20), _egrid(), energy=100e3, inner=0.0, outer=20.0),
  patterns=ARRAY_ANY_NDIM + [rand(2, 4, 4)], grid=GRID, energy=ENERGY, inner=NONNEG + [30.0], outer=LENGTH)


# ============================================================================= mbook.cryoem
def _cgrid(gpts=(16, 16), sampling=3.0):
    from mbook.core import grids

    return grids.make_grid(gpts=gpts, sampling=sampling)


def _catoms():
    from mbook.cryoem import particles

    return particles.random_domains(2, atoms_per_domain=6, domain_radius=5.0, spread=7.0, seed=4)


def _rotations(n=2):
    from mbook.geometry import so3

    return so3.random_rotations(n, seed=1)


def _params(n=4):
    from mbook.cryoem import micrographs

    return micrographs.draw_parameters(n, seed=1)


def _batches(n=4):
    from mbook.cryoem import micrographs

    return micrographs.stream_images(_catoms(), _params(n), _cgrid(), seed=2)


def _exact_moments():
    from mbook.cryoem import moments

    return moments.analytic_moments(_catoms(), _cgrid(), k_max=1 / 12)


def _fitted():
    from mbook.cryoem import kam

    return kam.estimate_invariants(_exact_moments(), radius=20.0, l_max=4)


def _particle():
    from mbook.cryoem import heterogeneity

    return heterogeneity.hinged_particle(atoms_per_domain=6, seed=1)


def _basis():
    from mbook.cryoem import heterogeneity

    return heterogeneity.pseudo_atom_basis(_particle(), [(0.0, 0.0)], spacing=8.0, sigma=4.0)


def _statistics(n=20, d=4, q=6):
    from mbook.cryoem import heterogeneity

    g = np.random.default_rng(0)
    a = g.standard_normal((n, q, d))
    y = np.einsum("nqd,d->nq", a, g.standard_normal(d) + 3) + 0.1 * g.standard_normal((n, q))
    return heterogeneity.ImageStatistics(np.einsum("nqd,nqe->nde", a, a), np.einsum("nqd,nq->nd", a, y), 0.01)


def _table():
    from mbook.cryoem import wemd_family

    return wemd_family.precompute(rand(2, 8, 8, 8), sampling=2.0)


def _unit(density):
    return density / density.sum()


def _distances(n=6):
    x = np.random.default_rng(0).standard_normal((n, 2))
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


VOLUME = [EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc", rand(8, 8, 6)]  # a cubic volume
MOMENTS = ["not-moments", None]
ATOMS_C = ["not-atoms", None, 3]
STATISTICS = ["not-statistics", None]

E("cryoem.white_noise.uniforms_per_image", lambda: call((8, 8)), shape=GPTS)
E("cryoem.white_noise.standard_normal", lambda: call(3, (8, 8), seed=0), n_images=COUNT, shape=GPTS, seed=SEED,
  first_index=COUNT0)
E("cryoem.voxels.check_volume", lambda: call(rand(8, 8, 8)), volume=VOLUME, name=FREE)
E("cryoem.voxels.project_volume", lambda: call(rand(8, 8, 8), _rotations(), sampling=2.0), volume=VOLUME,
  rotations=[EMPTY, WITH_NAN, "abc", np.ones((2, 3, 3))], sampling=LENGTH, budget=LENGTH)
E("cryoem.voxels.backproject", lambda: call(rand(2, 8, 8), _rotations(), sampling=2.0),
  images=ARRAY + [rand(3, 8, 8)], rotations=[EMPTY, WITH_NAN, "abc", np.ones((2, 3, 3))], sampling=LENGTH,
  budget=LENGTH)
E("cryoem.wemd_family.linear_family", lambda: call(rand(6, 8, 8, 8), 2), volumes=ARRAY, k=COUNT + [10])
E("cryoem.wemd_family.precompute", lambda: call(rand(2, 8, 8, 8), sampling=2.0), basis=ARRAY, sampling=LENGTH,
  wavelet=["no-such-wavelet", 3], leaf_size=COUNT)
E("cryoem.wemd_family.distances", lambda: call(rand(3, 2), _table()), differences=ARRAY + [rand(3, 5)],
  table=["not-a-table", None], budget=LENGTH)
E("cryoem.wemd_family.pairwise", lambda: call(rand(4, 2), _table()), coordinates=ARRAY + [rand(4, 5)],
  table=["not-a-table", None], budget=LENGTH, client=["not-a-client", 3])
E("cryoem.kam.radial_nodes", lambda: call(20.0, 1 / 12), radius=LENGTH, k_max=LENGTH, oversampling=LENGTH)
E("cryoem.kam.estimate_invariants", lambda: call(_exact_moments(), radius=20.0, l_max=4),
  moments_=MOMENTS, radius=LENGTH, l_max=COUNT0 + [10**6], oversampling=LENGTH, regularization=NONNEG,
  chunk=COUNT)
E("cryoem.kam.invariants_on_shells", lambda: call(_fitted(), np.linspace(0.01, 0.08, 3)),
  invariants_=["not-invariants", None], radii=[EMPTY, WITH_NAN, "abc", -np.ones(2)])
E("cryoem.kam.reconstruct", lambda: call(_fitted(), _catoms(), k_max=1 / 12, n_radii=6),
  invariants_=["not-invariants", None], prior=ATOMS_C, k_max=LENGTH, n_radii=COUNT)
E("cryoem.kam.volume_from_coefficients",
  lambda: call(*_betas_nodes(), _cgrid((8, 8, 8)), k_max=1 / 12),
  betas=[[], "abc", [np.full((3, 1), NAN)]], nodes=[EMPTY, WITH_NAN, "abc"], grid=GRID + [_cgrid((8, 8))],
  k_max=LENGTH)


def _betas_nodes():
    from mbook.cryoem import kam

    nodes = kam.radial_nodes(20.0, 1 / 12)
    return [np.ones((len(nodes), 2 * l + 1)) for l in range(3)], nodes


E("cryoem.volumes.write_mrc", lambda: call(_tmp_mrc(), rand(8, 8, 8), sampling=2.0), path=[3, None],
  volume=ARRAY, sampling=LENGTH, overwrite=FREE)
E("cryoem.volumes.read_mrc", lambda: call(_tmp_mrc(write=True)), path=["/no/such/file.mrc", 3, None])


def _tmp_mrc(write=False):
    import tempfile

    from mbook.cryoem import volumes

    path = tempfile.mkdtemp() + "/v.mrc"
    if write:
        volumes.write_mrc(path, rand(8, 8, 8), sampling=2.0)
    return path


E("cryoem.volumes.fourier_shell_correlation", lambda: call(rand(8, 8, 8), rand(8, 8, 8, seed=1), sampling=2.0),
  volume1=VOLUME, volume2=VOLUME, sampling=LENGTH)
E("cryoem.volumes.resolution", lambda: call(np.linspace(0, 0.25, 5), np.linspace(1, 0, 5)),
  k=[EMPTY, WITH_NAN, "abc", np.linspace(0, 1, 3)], fsc=[EMPTY, WITH_NAN, "abc", np.ones(3)],
  threshold=[NAN, "1", 1.5, -0.5])
E("cryoem.volumes.lowpass", lambda: call(rand(8, 8, 8), sampling=2.0, resolution=6.0), volume=ARRAY_ANY_NDIM,
  sampling=LENGTH, resolution=LENGTH, ndim=[0, -1, 2.5, "3"])
E("cryoem.volumes.relative_error", lambda: call(rand(8, 8, 8), rand(8, 8, 8, seed=1)),
  estimate=ARRAY_ANY_NDIM + [rand(4, 4, 4)], truth=ARRAY_ANY_NDIM + [rand(4, 4, 4), np.zeros((8, 8, 8))])
E("cryoem.particles.make_atoms", lambda: call(rand(5, 3)), positions=ARRAY + [rand(5, 2)],
  weights=[NAN, "a", np.ones(3)], sigma=LENGTH)
E("cryoem.particles.check_atoms", lambda: call(_catoms()), atoms=ATOMS_C, name=FREE)
E("cryoem.particles.random_structure", lambda: call(5), n_atoms=COUNT, radii=[(0, 15, 12), (NAN, 1, 1), "a"],
  sigma=LENGTH, min_distance=NONNEG, seed=SEED)
E("cryoem.particles.random_domains", lambda: call(2, atoms_per_domain=5), n_domains=COUNT,
  atoms_per_domain=COUNT, domain_radius=LENGTH, spread=NONNEG, sigma=LENGTH, seed=SEED)
E("cryoem.particles.transform_atoms", lambda: call(_catoms(), np.eye(3)), atoms=ATOMS_C,
  rotation=[np.ones((3, 3)), np.full((3, 3), NAN), "abc"], translation=[(NAN, 0, 0), (0, 0), "a"],
  center=[(NAN, 0, 0), (0, 0), "a"])
E("cryoem.particles.concatenate_atoms", lambda: call(_catoms(), _catoms()), parts=FREE)
E("cryoem.particles.check_grid", lambda: call(_cgrid(), 2), grid=GRID + [_cgrid((8, 8, 8))], ndim=[0, 4, 2.5, "2"])
E("cryoem.particles.gaussian_volume", lambda: call(_catoms(), _cgrid((8, 8, 8))), atoms=ATOMS_C,
  grid=GRID + [_cgrid()], budget=LENGTH)
E("cryoem.particles.project_atoms", lambda: call(_catoms(), _rotations(), _cgrid()), atoms=ATOMS_C,
  rotations=[EMPTY, WITH_NAN, "abc", np.ones((2, 3, 3))], grid=GRID + [_cgrid((8, 8, 8))], budget=LENGTH)
E("cryoem.particles.project_atoms_kernel", lambda: call(_catoms(), dev(_rotations()), _cgrid()), atoms=UNCHECKED,
  rotations=UNCHECKED, grid=UNCHECKED, budget=UNCHECKED)
E("cryoem.micrographs.check_snr", lambda: call(0.5), snr=[0, -1.0, NAN, "1"])  # inf: no noise
E("cryoem.ctf.ctf", lambda: call(_cgrid(), defocus=15000.0), grid=GRID, defocus=REAL + [np.array([NAN])],
  B_factor=NONNEG, microscope=FREE)
E("cryoem.ctf.ctf_profile", lambda: call(0.1, defocus=15000.0, num_samples=50), k_max=LENGTH,
  defocus=REAL, B_factor=NONNEG, num_samples=COUNT, microscope=FREE)
E("cryoem.ctf.check_defocus", lambda: call([1.5e4, 2e4]), defocus=REAL + [[], [NAN]])
E("cryoem.ctf.check_b_factor", lambda: call(50.0), B_factor=NONNEG)
E("cryoem.ctf.check_microscope", lambda: call({"Cs": 1e7}), microscope=[{"no_such_lens": 1.0}])
E("cryoem.ctf.ctf_table", lambda: call(_cgrid(), np.array([1.5e4]), 0.0, {"energy": 300e3, "Cs": 2.7e7,
                                                                           "amplitude_contrast": 0.1},
                                         _device_module()),
  grid=UNCHECKED, defocus=UNCHECKED, B_factor=UNCHECKED, microscope=UNCHECKED, xp=UNCHECKED)
E("cryoem.micrographs.draw_parameters", lambda: call(4, seed=0), n_images=COUNT, seed=SEED,
  defocus_range=[(NAN, 1.0), (2.0, 1.0), (1.0,), "a"], max_shift=NONNEG, contrast_spread=NONNEG,
  images_per_micrograph=COUNT)
E("cryoem.micrographs.check_parameters", lambda: call(_params()), params=["not-params", None])
E("cryoem.image_formation.form_images", lambda: call(rand(4, 16, 16), _cgrid(), defocus=np.full(4, 15000.0)),
  projections=ARRAY + [rand(4, 8, 8)], grid=GRID, defocus=[EMPTY, WITH_NAN, "abc", np.ones(3)],
  shifts=[EMPTY, WITH_NAN, "abc", np.zeros((4, 3))], contrast=[EMPTY, WITH_NAN, "abc", np.ones(3)],
  B_factor=NONNEG, microscope=FREE)
E("cryoem.image_formation.form_images_adjoint",
  lambda: call(rand(4, 16, 16), _cgrid(), defocus=np.full(4, 15000.0)),
  images=ARRAY + [rand(4, 8, 8)], grid=GRID, defocus=[EMPTY, WITH_NAN, "abc", np.ones(3)],
  shifts=[EMPTY, WITH_NAN, "abc", np.zeros((4, 3))], contrast=[EMPTY, WITH_NAN, "abc", np.ones(3)],
  B_factor=NONNEG, microscope=FREE)
E("cryoem.image_formation.add_noise", lambda: call(rand(3, 8, 8), 0.5, seed=0), images=ARRAY_ANY_NDIM,
  sigma=NONNEG, seed=SEED, first_index=COUNT0)
# The kernels of image_formation (no checks: the streams of micrographs call them on checked input).
E("cryoem.image_formation.form_images_kernel",
  lambda: call(dev(rand(4, 16, 16)), _cgrid(), np.full(4, 15000.0), None, None, 0.0,
               {"energy": 300e3, "Cs": 2.7e7, "amplitude_contrast": 0.1}),
  projections=UNCHECKED, grid=UNCHECKED, defocus=UNCHECKED, shifts=UNCHECKED, contrast=UNCHECKED,
  B_factor=UNCHECKED, microscope=UNCHECKED, adjoint=FREE)
E("cryoem.image_formation.add_noise_kernel", lambda: call(dev(rand(3, 8, 8)), 0.5, 0, 0), images=UNCHECKED,
  sigma=UNCHECKED, seed=UNCHECKED, first_index=UNCHECKED)
E("cryoem.micrographs.noise_sigma", lambda: call(_catoms(), _params(), _cgrid(), snr=0.5, pilot=4),
  structure=ATOMS_C, params=["not-params", None], grid=GRID, snr=[0, -1.0, NAN, "1"], B_factor=NONNEG, pilot=COUNT,
  microscope=FREE)
E("cryoem.micrographs.stream_images", lambda: call(_catoms(), _params(), _cgrid(), snr=0.5, pilot=4),
  structure=ATOMS_C, params=["not-params", None], grid=GRID, snr=[0, -1.0, NAN, "1"], seed=SEED,
  B_factor=NONNEG, budget=LENGTH, pilot=COUNT, client=["not-a-client", 3], microscope=FREE)
E("cryoem.wasserstein.check_density", lambda: call(rand(8, 8)), density=ARRAY_ANY_NDIM + [-rand(8, 8)],
  name=FREE, allow_negative=FREE)
E("cryoem.wasserstein.levels", lambda: call((8, 8)), shape=GPTS)
E("cryoem.wasserstein.embedding_size", lambda: call((8, 8)), shape=GPTS, wavelet=["no-such-wavelet", 3])
E("cryoem.wasserstein.wavelet_embedding", lambda: call(rand(8, 8)), density=ARRAY_ANY_NDIM + [-rand(8, 8)],
  sampling=LENGTH, wavelet=["no-such-wavelet", 3], allow_negative=FREE)
# The device transform is a kernel: wasserstein's functions check its inputs and batch them.
E("cryoem.wavelet_transform.embed", lambda: call(rand(2, 8, 8), sampling=1.0, wavelet="db2", levels=5),
  densities=UNCHECKED, sampling=UNCHECKED, wavelet=UNCHECKED, levels=UNCHECKED)
E("cryoem.wavelet_transform.peak_bytes", lambda: call((8, 8), "db2", 5), shape=UNCHECKED, wavelet=UNCHECKED,
  levels=UNCHECKED, itemsize=UNCHECKED)
E("cryoem.wasserstein.wavelet_embedding_adjoint", lambda: call(rand(_embedding_size()), (8, 8)),
  coefficients=ARRAY_ANY_NDIM + [rand(5)], shape=GPTS, sampling=LENGTH, wavelet=["no-such-wavelet", 3])


def _embedding_size():
    from mbook.cryoem import wasserstein

    return wasserstein.embedding_size((8, 8))


E("cryoem.wasserstein.wemd", lambda: call(_unit(rand(8, 8)), _unit(rand(8, 8, seed=1))),
  p=ARRAY + [-rand(8, 8), rand(4, 4)],
  q=ARRAY + [-rand(8, 8), rand(4, 4)], sampling=LENGTH, wavelet=["no-such-wavelet", 3])
E("cryoem.wasserstein.pairwise_l1", lambda: call(rand(4, 10)), embedded=ARRAY, budget=LENGTH,
  client=["not-a-client", 3])
E("cryoem.wasserstein.pairwise_wemd", lambda: call(rand(3, 8, 8) / rand(3, 8, 8).sum(axis=(1, 2))[:, None, None]),
  densities=ARRAY + [-rand(3, 8, 8)],
  sampling=LENGTH, wavelet=["no-such-wavelet", 3], allow_negative=FREE, budget=LENGTH, client=["not-a-client", 3])
E("cryoem.wasserstein.exact_emd", lambda: call(_unit(rand(6, 6)), _unit(rand(6, 6, seed=1))),
  p=ARRAY + [-rand(6, 6), rand(4, 4)], q=ARRAY + [-rand(6, 6), rand(4, 4)], sampling=LENGTH, max_points=COUNT)
E("cryoem.wasserstein.diffusion_map", lambda: call(_distances()), distances=ARRAY + [rand(3, 4), -_distances()],
  n_components=COUNT + [10], epsilon=LENGTH, alpha=[NAN, "1", -1.0], t=COUNT0)



E("cryoem.moments.disk_frequencies", lambda: call(_cgrid(), k_max=1 / 12), grid=GRID + [_cgrid((8, 8, 8))],
  k_max=LENGTH)
E("cryoem.moments.check_frequencies", lambda: call(_frequencies()), frequencies=["not-frequencies", None])


def _frequencies():
    from mbook.cryoem import moments

    return moments.disk_frequencies(_cgrid(), k_max=1 / 12)


E("cryoem.moments.image_transform", lambda: call(rand(3, 16, 16), _frequencies()),
  images=ARRAY + [rand(3, 8, 8)], frequencies=["not-frequencies", None])
E("cryoem.moments.spherical_harmonics", lambda: call(4, rand(5, 3)), l_max=COUNT0 + [10**6],
  directions=[EMPTY, WITH_NAN, "abc", rand(5, 2)])  # a zero vector is taken as the z axis (atoms at the origin)
E("cryoem.moments.default_l_max", lambda: call(1 / 12, 20.0), k_max=LENGTH, radius=LENGTH)
E("cryoem.moments.sh_coefficients", lambda: call(_catoms(), np.linspace(0.01, 0.08, 3), l_max=4), atoms=ATOMS_C,
  radii=[EMPTY, WITH_NAN, "abc", -np.ones(2)], l_max=COUNT0 + [10**6])
E("cryoem.moments.invariants", lambda: call([np.ones((3, 2 * l + 1)) for l in range(3)]),
  coefficients=[[], "abc", [np.full((3, 1), NAN)]])
E("cryoem.moments.analytic_moments", lambda: call(_catoms(), _cgrid(), k_max=1 / 12), atoms=ATOMS_C,
  grid=GRID + [_cgrid((8, 8, 8))], k_max=LENGTH, l_max=COUNT0 + [10**6])
E("cryoem.moments.empirical_moments", lambda: call(_batches(), _params(), _cgrid(), k_max=1 / 12),
  batches=["abc", 3, []], params=["not-params", None], grid=GRID, k_max=LENGTH, B_factor=NONNEG,
  checkpoints=[[0], [-1], "a"], microscope=FREE)
E("cryoem.moments.covariance", lambda: call(_exact_moments()), moments_=MOMENTS)
E("cryoem.moments.relative_difference", lambda: call(_exact_moments(), _exact_moments()), a=MOMENTS, b=MOMENTS,
  fit_scale=FREE)
E("cryoem.moments.identify", lambda: call(_exact_moments(), [_exact_moments()]), empirical=MOMENTS,
  candidates=[[], "abc", [3]])
E("cryoem.heterogeneity.hinged_particle", lambda: call(atoms_per_domain=6), atoms_per_domain=COUNT,
  separation=LENGTH, sigma=LENGTH, seed=SEED)
E("cryoem.heterogeneity.conformations", lambda: call(_particle(), np.zeros((2, 2))),
  particle=["not-a-particle", None], latent=[EMPTY, WITH_NAN, "abc", np.zeros((2, 3))])
E("cryoem.heterogeneity.conformation", lambda: call(_particle(), (0.1, 0.2)), particle=["not-a-particle", None],
  z=[(NAN, 0.0), (0.0, 0.0, 0.0), "a"])
E("cryoem.heterogeneity.family_volumes", lambda: call(_particle(), np.zeros((2, 2)), _cgrid((8, 8, 8))),
  particle=["not-a-particle", None], latent=[EMPTY, WITH_NAN, "abc", np.zeros((2, 3))],
  grid=GRID + [_cgrid()], budget=LENGTH)
E("cryoem.heterogeneity.pseudo_atom_basis", lambda: call(_particle(), [(0.0, 0.0)], spacing=8.0, sigma=4.0),
  particle=["not-a-particle", None], latent=[EMPTY, WITH_NAN, "abc", np.zeros((2, 3))], spacing=LENGTH,
  sigma=LENGTH, margin=NONNEG)
E("cryoem.heterogeneity.coefficient_volume", lambda: call(np.ones(_nbasis()), _basis(), _cgrid((8, 8, 8))),
  coefficients=ARRAY_ANY_NDIM + [np.ones(3)], basis=ATOMS_C, grid=GRID + [_cgrid()], budget=LENGTH)


def _nbasis():
    return len(_basis().weights)


E("cryoem.heterogeneity.image_statistics",
  lambda: call(_batches(), _params(), _cgrid(), _basis(), k_max=1 / 12),
  batches=["abc", 3, []], params=["not-params", None], grid=GRID + [_cgrid((8, 8))], basis=ATOMS_C,
  k_max=LENGTH, B_factor=NONNEG, budget=LENGTH, microscope=FREE)
E("cryoem.heterogeneity.consensus", lambda: call(_statistics()), statistics=STATISTICS,
  regularization=NONNEG)
E("cryoem.heterogeneity.ppca", lambda: call(_statistics(), np.ones(4), max_num_iter=3),
  statistics=STATISTICS, mean=ARRAY + [np.ones(3)], n_components=COUNT + [5], contrast_invariant=FREE,
  max_num_iter=COUNT, seed=SEED)
E("cryoem.metrics.neighbourhood_preservation", lambda: call(rand(12, 2), rand(12, 2, seed=1), n_neighbours=3),
  embedding=ARRAY + [rand(5, 2)], reference=ARRAY + [rand(5, 2)], n_neighbours=COUNT + [20])
E("cryoem.metrics.linear_alignment", lambda: call(rand(12, 2), rand(12, 2, seed=1)),
  embedding=ARRAY + [rand(5, 2)], reference=ARRAY + [rand(5, 2)])
E("cryoem.metrics.canonical_correlations", lambda: call(rand(12, 2), rand(12, 2, seed=1)),
  embedding=ARRAY + [rand(5, 2)], reference=ARRAY + [rand(5, 2)])
E("cryoem.metrics.rank_correlation", lambda: call(rand(12, 2), rand(12, 2, seed=1)),
  embedding=ARRAY + [rand(5, 2)], latent=ARRAY + [rand(5, 2)])
E("cryoem.metrics.per_conformation_error", lambda: call(rand(3, 8, 8, 8), rand(3, 8, 8, 8, seed=1)),
  estimates=ARRAY + [rand(2, 8, 8, 8)], truths=ARRAY + [rand(2, 8, 8, 8)], mean=ARRAY + [rand(4, 4, 4)])


# ============================================================================= mbook.tomography
def _tilt():
    from mbook.tomography import projector

    return projector.TiltProjector((4, 4, 4), [0.0, 30.0, 60.0])


def _tomo_rotations(n=3):
    from mbook.tomography import projector

    return projector.tilt_rotations(np.linspace(0.0, 60.0, n))


def _space_time():
    from mbook.tomography import reconstruct

    return reconstruct.SpaceTimeProjector(_tilt(), np.full((3, 2), 0.5))


def _atom_projector():
    from mbook.tomography import refine

    return refine.AtomProjector(np.stack([np.eye(3)] * 3), np.ones((3, 1)), [np.ones(2)], gpts=(4, 4),
                                sampling=1.0, width=0.5)


def _atoms_volume():
    from mbook.tomography import specimens

    return specimens.atom_volume(np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]), [26, 78], shape=(8, 8, 8),
                                 sampling=0.5)


TILT_OP = ["not-an-operator", None]
ROTATIONS = [EMPTY, WITH_NAN, ONE_AXIS_LESS, "abc", rand(3, 3, 3)]  # (N, 3, 3) orthogonal
NUMBERS = [EMPTY, "abc", np.array([26]), np.array([26, 0])]  # atomic numbers, one per atom

# projector: the tilt geometry, the ray-driven projection and its adjoint
E("tomography.projector.tilt_rotations", lambda: call(np.array([0.0, 30.0])), angles=ARRAY, axis=CHOICE)
E("tomography.projector.check_rotations", lambda: call(_tomo_rotations()), rotations=ROTATIONS + [-_tomo_rotations()],
  name=[1, None])
E("tomography.projector.project", lambda: call(rand(4, 4, 4), _tomo_rotations(), sampling=1.0, detector_gpts=(4, 4),
                                               batch_size=2),
  volume=ARRAY, rotations=ROTATIONS, sampling=LENGTH, detector_gpts=GPTS, batch_size=COUNT)
E("tomography.projector.backproject", lambda: call(rand(3, 4, 4), _tomo_rotations(), shape=(4, 4, 4), batch_size=2),
  projections=ARRAY + [rand(2, 4, 4)], rotations=ROTATIONS, shape=GPTS + [(4, 4)], sampling=LENGTH,
  separate=FREE, batch_size=COUNT)
# rays: the ray-driven projector's kernels (documented: no checks) run inside the solvers' iterations on what
# their callers checked once; half_length on a shape its caller checked.
E("tomography.rays.half_length", lambda: call((4, 4, 4)), shape=UNCHECKED)
E("tomography.rays.project_kernel", lambda: call(dev(rand(4, 4, 4)), dev(_tomo_rotations()), sampling=1.0,
                                                 detector_gpts=(4, 4)),
  volume=UNCHECKED, rotations=UNCHECKED, sampling=UNCHECKED, detector_gpts=UNCHECKED, batch_size=UNCHECKED)
E("tomography.rays.backproject_kernel", lambda: call(dev(rand(3, 4, 4)), dev(_tomo_rotations()), shape=(4, 4, 4),
                                                     sampling=1.0),
  projections=UNCHECKED, rotations=UNCHECKED, shape=UNCHECKED, sampling=UNCHECKED, separate=UNCHECKED,
  batch_size=UNCHECKED)

# reconstruct: FBP, SIRT, PGD and the 4D reconstruction
E("tomography.reconstruct.fbp", lambda: call(rand(3, 4, 4), _tilt()),
  projections=ARRAY + [rand(2, 4, 4)], operator=TILT_OP, filter=CHOICE)
E("tomography.reconstruct.sirt", lambda: call(rand(3, 4, 4), _tilt(), max_num_iter=2, x0=rand(4, 4, 4)),
  projections=ARRAY + [rand(2, 4, 4)], operator=TILT_OP, max_num_iter=COUNT, relaxation=LENGTH + [2.0],
  nonnegative=FREE, x0=ARRAY + [rand(4, 4, 3)])
E("tomography.reconstruct.pgd", lambda: call(rand(3, 4, 4), _tilt(), max_num_iter=2, x0=rand(4, 4, 4)),
  projections=ARRAY + [rand(2, 4, 4)], operator=TILT_OP, l1=NONNEG, nonnegative=FREE, max_num_iter=COUNT,
  x0=ARRAY + [rand(4, 4, 3)], accelerate=FREE)
E("tomography.reconstruct.lipschitz_bound", lambda: call(_tilt()), operator=TILT_OP)
E("tomography.reconstruct.operator_norm", lambda: call(_tilt(), max_num_iter=3), operator=TILT_OP,
  max_num_iter=COUNT)
E("tomography.reconstruct.temporal_weights", lambda: call(np.linspace(0.0, 1.0, 5), np.array([0.0, 1.0]),
                                                          kind="gaussian", width=0.3),
  times=ARRAY, anchor_times=ARRAY + [np.array([1.0, 0.0])], kind=CHOICE, width=LENGTH)
# smooth_tv runs in pgd_4d's iterations: NaN refused only from outside mbook (OPERAND); pgd_4d checks on entry.
E("tomography.reconstruct.smooth_tv", lambda: call(rand(3, 3), axes=(0,), smoothing=0.3),
  u=OPERAND, axes=[(5,), "a"], smoothing=LENGTH)
E("tomography.reconstruct.pgd_4d", lambda: call(rand(3, 4, 4), _space_time(), rand(2, 4, 4, 4), smoothing=0.1,
                                                max_num_iter=2),
  projections=ARRAY + [rand(2, 4, 4)], operator=TILT_OP + [_tilt()], x0=ARRAY + [rand(3, 4, 4, 4)],
  tv_space=NONNEG, tv_time=NONNEG, smoothing=LENGTH, max_num_iter=COUNT, accelerate=FREE)

# refine: atom positions fitted to the projections
E("tomography.refine.refine_positions", lambda: call(rand(3, 4, 4), _atom_projector(), [np.zeros((2, 3))],
                                                     max_num_iter=2),
  projections=ARRAY + [rand(3, 4, 5)], operator=TILT_OP, positions=["abc", None, [np.zeros((3, 3))],
                                                                   [np.full((2, 3), NAN)]],
  max_num_iter=COUNT, step=LENGTH + [1.5])

# specimens: the FePt testbed
E("tomography.specimens.fept_nanoparticle", lambda: call(3.0), radius=LENGTH, ordering=CHOICE, seed=SEED)
def _fept_particle():
    """A 149-atom FePt particle on the host (radius 8 Å): paths need a lattice to hop through."""
    from mbook.core import backend
    from mbook.tomography import specimens

    return tuple(backend.asnumpy(a) for a in specimens.fept_nanoparticle(8.0))


E("tomography.specimens.diffusion_trajectories", lambda: call(*_fept_particle(), num_steps=5, num_moving=2),
  positions=ARRAY + [rand(149, 2)], numbers=NUMBERS, num_steps=COUNT + [1], num_moving=COUNT0 + [1000],
  core_fraction=FRACTION, min_travel=LENGTH, min_duration=LENGTH, seed=SEED)
E("tomography.specimens.tilt_series", lambda: call(5), num_projections=COUNT + [1], tilt_range=LENGTH + [90.0],
  order=CHOICE)
E("tomography.specimens.cross_sections", lambda: call(np.array([26, 78])), numbers=NUMBERS[:2] + NUMBERS[3:],
  platinum=NONNEG)
E("tomography.specimens.atom_volume", lambda: call(np.zeros((2, 3)), np.array([26, 78]), shape=(4, 4, 4),
                                                   sampling=1.0),
  positions=ARRAY + [np.zeros((2, 2))], numbers=NUMBERS, shape=GPTS + [(4, 4)], sampling=LENGTH, width=LENGTH,
  platinum=NONNEG)
E("tomography.specimens.project_atoms", lambda: call(np.zeros((2, 3)), np.array([26, 78]), _tomo_rotations(),
                                                     gpts=(4, 4), sampling=1.0),
  positions=ARRAY_ANY_NDIM + [np.zeros((2, 2))], numbers=NUMBERS, rotations=ROTATIONS + [-_tomo_rotations()], gpts=GPTS,
  sampling=LENGTH, width=LENGTH, platinum=NONNEG)
E("tomography.specimens.poisson_noise", lambda: call(rand(2, 4, 4), dose=100.0, sampling=1.0),
  projections=ARRAY_ANY_NDIM + [-rand(2, 4, 4)], dose=LENGTH, sampling=LENGTH, seed=SEED)

# tracing: atoms found, classified, matched and tracked
E("tomography.tracing.trace_atoms", lambda: call(_atoms_volume(), sampling=0.5),
  volume=ARRAY, sampling=LENGTH, min_distance=LENGTH, threshold=FRACTION, radius=LENGTH)
E("tomography.tracing.classify_species", lambda: call(rand(10), max_num_iter=3),
  intensities=ARRAY + [np.array([[1.0, 2.0]])], labels=[(1, 2, 3), "ab", None], max_num_iter=COUNT)
E("tomography.tracing.line_profiles", lambda: call(rand(6, 6, 6), np.array([[0.0, 0.0, 0.5]]), sampling=0.5,
                                                   half_length=1.0),
  volume=ARRAY, positions=ARRAY + [np.zeros((1, 2))], sampling=LENGTH, half_length=LENGTH)
E("tomography.tracing.local_moments", lambda: call(rand(8, 8, 8), np.array([[2.0, 2.0, 2.0]]), sampling=0.5,
                                                   radius=1.0),
  volume=ARRAY, positions=ARRAY + [np.zeros((1, 2))], sampling=LENGTH, radius=LENGTH)
E("tomography.tracing.match_atoms", lambda: call(rand(4, 3), rand(4, 3, seed=1)),
  found=ARRAY + [np.zeros((2, 2))], reference=ARRAY + [np.zeros((2, 2))], max_distance=LENGTH)
E("tomography.tracing.position_errors", lambda: call(rand(4, 3), rand(4, 3, seed=1)),
  found=ARRAY + [np.zeros((2, 2))], reference=ARRAY + [np.zeros((2, 2))], max_distance=LENGTH)
E("tomography.tracing.track_atoms", lambda: call([rand(2, 3), rand(2, 3, seed=1)], max_distance=0.8),
  positions=["abc", None, np.zeros((2, 3)), [np.full((2, 3), NAN)]], max_distance=LENGTH)


# ============================================================================= mbook.geometry
_NORTH = np.array([0.0, 0.0, 1.0])


def _sphere_points(n=4):
    from mbook.core import backend
    from mbook.geometry import sphere

    return backend.asnumpy(sphere.random_points(n, _NORTH, scales=0.3, seed=1))


def _sphere_tangents():
    from mbook.core import backend
    from mbook.geometry import sphere

    return backend.asnumpy(sphere.log(_NORTH, _sphere_points()))


def _so3_points(n=4):
    from mbook.geometry import so3

    return _host(so3.random_rotations(n, seed=1))


def _so3_tangents():
    from mbook.geometry import so3

    return _host(so3.log(np.eye(3), _so3_points()))


def _spd_points(n=4):
    from mbook.geometry import spd

    return _host(spd.random_near(n, np.eye(2), scales=0.3, seed=1))


def _spd_tangents():
    from mbook.geometry import spd

    return _host(spd.log(np.eye(2), _spd_points()))


SPHERE_POINT = ARRAY_ANY_NDIM + [2 * _NORTH]                              # unit vectors
SPHERE_POINTS = ARRAY_ANY_NDIM + [2 * np.ones((4, 3))]
SPHERE_TANGENT = ARRAY_ANY_NDIM + [np.ones(3), np.zeros(4)]               # orthogonal to the base point
SPHERE_COORDINATES = ARRAY_ANY_NDIM + [np.zeros(3)]                       # d - 1 per point
ROTATION = ARRAY_ANY_NDIM + [np.diag([1.0, 1.0, -1.0]), 1.1 * np.eye(3)]  # proper orthogonal
SO3_VECTOR = ARRAY_ANY_NDIM + [np.zeros(2)]                               # 3 per rotation
SPD_POINT = ARRAY_ANY_NDIM + [np.diag([1.0, -1.0]), np.array([[1.0, 0.5], [0.0, 1.0]])]  # symmetric positive
SPD_TANGENT = ARRAY_ANY_NDIM + [np.array([[0.0, 1.0], [0.0, 0.0]]), np.zeros((3, 3))]     # symmetric
SPD_COORDINATES = ARRAY_ANY_NDIM + [np.zeros(4)]                          # 3 per 2x2 matrix
MANIFOLD = CHOICE + [3]

# sphere
E("geometry.sphere.check_points", lambda: call(_sphere_points()), points=SPHERE_POINTS, name=FREE)
E("geometry.sphere.check_tangent", lambda: call(_NORTH, _sphere_tangents()), base=SPHERE_POINT,
  tangent=SPHERE_TANGENT, name=FREE)
E("geometry.sphere.distance", lambda: call(_NORTH, _sphere_points()), a=SPHERE_POINT, b=SPHERE_POINTS + [np.ones(1)])
E("geometry.sphere.exp", lambda: call(_NORTH, _sphere_tangents()), base=SPHERE_POINT, tangent=SPHERE_TANGENT)
E("geometry.sphere.log", lambda: call(_NORTH, _sphere_points()), base=SPHERE_POINT, points=SPHERE_POINTS)
E("geometry.sphere.transport", lambda: call(_NORTH, _sphere_points()[0], _sphere_tangents()[0]),
  base=SPHERE_POINT, target=SPHERE_POINT, tangent=SPHERE_TANGENT)
E("geometry.sphere.to_coordinates", lambda: call(_NORTH, _sphere_tangents()), base=SPHERE_POINT,
  tangent=SPHERE_TANGENT)
E("geometry.sphere.from_coordinates", lambda: call(_NORTH, np.ones((4, 2))), base=SPHERE_POINT,
  coordinates=SPHERE_COORDINATES)
E("geometry.sphere.jacobi_operator", lambda: call(_NORTH, np.ones(2)), base=SPHERE_POINT,
  coordinates=SPHERE_COORDINATES)
E("geometry.sphere.random_points", lambda: call(3, _NORTH), n=COUNT, base=SPHERE_POINT,
  scales=[-1.0, NAN, "a", 2.0], seed=SEED)

# so3
E("geometry.so3.check_rotations", lambda: call(_so3_points()), rotations=ROTATION, name=FREE)
E("geometry.so3.distance", lambda: call(np.eye(3), _so3_points()), a=ROTATION, b=ROTATION)
E("geometry.so3.exp", lambda: call(np.eye(3), _so3_tangents()), base=ROTATION, tangent=SO3_VECTOR)
E("geometry.so3.log", lambda: call(np.eye(3), _so3_points()), base=ROTATION, rotations=ROTATION)
E("geometry.so3.transport", lambda: call(np.eye(3), _so3_points()[0], _so3_tangents()[0]), base=ROTATION,
  target=ROTATION, tangent=SO3_VECTOR)
E("geometry.so3.to_coordinates", lambda: call(np.eye(3), _so3_tangents()), base=ROTATION, tangent=SO3_VECTOR)
E("geometry.so3.from_coordinates", lambda: call(np.eye(3), np.ones((4, 3))), base=ROTATION,
  coordinates=SO3_VECTOR)
E("geometry.so3.jacobi_operator", lambda: call(np.eye(3), np.ones(3)), base=ROTATION, coordinates=SO3_VECTOR)
E("geometry.so3.axis_rotation", lambda: call(np.array([0.0, 0.0, 1.0]), 0.3),
  axis=ARRAY_ANY_NDIM + [np.zeros(3), np.ones(2)], angle=REAL)
E("geometry.so3.axis_rotations", lambda: call(np.eye(3), np.array([0.1, 0.2, 0.3])),
  axes=ARRAY + [np.zeros((3, 3)), np.ones((3, 2))], angles=ARRAY_ANY_NDIM + [np.ones(2)])  # one angle: for all
E("geometry.so3.quaternions_to_matrices", lambda: call(np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])),
  quaternions=ARRAY_ANY_NDIM + [np.zeros((1, 4)), np.ones((1, 3))])
E("geometry.so3.random_near", lambda: call(3, np.eye(3)), n=COUNT, base=ROTATION,
  scales=[-1.0, NAN, "a", [0.1, 0.2]], seed=SEED)
E("geometry.so3.random_rotations", lambda: call(3), n=COUNT + [10**11], seed=SEED)
E("geometry.so3.rotation_angles", lambda: call(_so3_points()), rotations=ROTATION)

# spd
E("geometry.spd.check_points", lambda: call(_spd_points()), points=SPD_POINT, name=FREE)
E("geometry.spd.distance", lambda: call(np.eye(2), _spd_points()), a=SPD_POINT, b=SPD_POINT + [np.eye(3)])
E("geometry.spd.exp", lambda: call(np.eye(2), _spd_tangents()), base=SPD_POINT, tangent=SPD_TANGENT)
E("geometry.spd.log", lambda: call(np.eye(2), _spd_points()), base=SPD_POINT, points=SPD_POINT)
E("geometry.spd.transport", lambda: call(np.eye(2), _spd_points()[0], _spd_tangents()[0]), base=SPD_POINT,
  target=SPD_POINT, tangent=SPD_TANGENT)
E("geometry.spd.to_coordinates", lambda: call(np.eye(2), _spd_tangents()), base=SPD_POINT, tangent=SPD_TANGENT)
E("geometry.spd.from_coordinates", lambda: call(np.eye(2), np.ones((4, 3))), base=SPD_POINT,
  coordinates=SPD_COORDINATES)
E("geometry.spd.jacobi_operator", lambda: call(np.eye(2), np.ones(3)), base=SPD_POINT,
  coordinates=SPD_COORDINATES)
E("geometry.spd.random_near", lambda: call(3, np.eye(2)), n=COUNT, base=SPD_POINT,
  scales=[-1.0, NAN, "a", [1.0]], seed=SEED)

# means: the Fréchet mean on any of the three
E("geometry.means.check_manifold", lambda: call("sphere"), manifold=MANIFOLD)
E("geometry.means.check_cloud", lambda: call(_sphere_points(), "sphere"), points=SPHERE_POINTS + [_NORTH],
  manifold=MANIFOLD, name=FREE)
E("geometry.means.frechet_mean", lambda: call(_sphere_points(), "sphere", initial=_NORTH, max_num_iter=5),
  points=SPHERE_POINTS + [_NORTH], manifold=MANIFOLD, initial=SPHERE_POINT + [np.eye(3)], step=LENGTH + [2.5],
  max_num_iter=COUNT, tol=TOL, check_every=COUNT)
E("geometry.means.gradient", lambda: call(_sphere_points(), _NORTH, "sphere"), points=SPHERE_POINTS + [_NORTH],
  base=SPHERE_POINT, manifold=MANIFOLD)

# lowrank: tangent PCA, its curvature correction, the intrinsic optimum
E("geometry.lowrank.tangent_pca", lambda: call(_sphere_points(), 1, manifold="sphere", mean=_NORTH),
  points=SPHERE_POINTS + [_NORTH], rank=COUNT + [5], manifold=MANIFOLD, mean=SPHERE_POINT)
E("geometry.lowrank.curvature_corrected",
  lambda: call(_sphere_points(), 1, manifold="sphere", mean=_NORTH, max_num_iter=3),
  points=SPHERE_POINTS + [_NORTH], rank=COUNT + [5], manifold=MANIFOLD, mean=SPHERE_POINT, max_num_iter=COUNT,
  tol=TOL, check_every=COUNT)
E("geometry.lowrank.intrinsic_lowrank",
  lambda: call(_sphere_points(), 1, manifold="sphere", mean=_NORTH, max_num_iter=2, inner_num_iter=2),
  points=SPHERE_POINTS + [_NORTH], rank=COUNT + [5], manifold=MANIFOLD, mean=SPHERE_POINT, max_num_iter=COUNT,
  inner_num_iter=COUNT, tol=TOL, check_every=COUNT)
E("geometry.lowrank.intrinsic_error", lambda: call(_sphere_points(), _sphere_points(), manifold="sphere",
                                                   mean=_NORTH),
  points=SPHERE_POINTS + [_NORTH], approximation=SPHERE_POINTS + [_sphere_points(2)], manifold=MANIFOLD,
  mean=SPHERE_POINT)
E("geometry.lowrank.corrected_components", lambda: call(_sphere_points(), 1, manifold="sphere", mean=_NORTH),
  points=SPHERE_POINTS + [_NORTH], rank=COUNT + [5], manifold=MANIFOLD, mean=SPHERE_POINT)
E("geometry.lowrank.great_circle_signal", lambda: call(5, 2, noise=0.05, seed=0), num_points=COUNT + [10**12],
  dimension=COUNT, noise=NONNEG + [2.0], seed=SEED)
E("geometry.lowrank.spd_geodesic_signal", lambda: call(5, 3, spread=1.0, noise=0.05, seed=0),
  num_points=COUNT + [10**12], size=COUNT + [1], spread=NONNEG + [11.0], noise=NONNEG + [11.0],
  conjugated_noise=FREE, seed=SEED)
E("geometry.means.medoid", lambda: call(_sphere_points(), "sphere"), points=SPHERE_POINTS + [_NORTH],
  manifold=MANIFOLD)


def _blob():
    from mbook.geometry import tracking

    return _host(tracking.blob_sample(12, num_blobs=2, seed=1))


def _nominal(n=4):
    from mbook.geometry import tracking

    return _host(tracking.nominal_rotations(n))


def _frames(n=4):
    from mbook.geometry import tracking

    return _host(tracking.record_frames(_blob(), _nominal(n), noise=0.0))


def _coefficients():
    from mbook.geometry import trajectory

    return _host(trajectory.steady_coefficients(harmonics=1))


POSES = [EMPTY, WITH_NAN, "abc", 1.1 * np.stack([np.eye(3)] * 4)]  # (N, 3, 3) rotations, one per frame
BLOB = ARRAY + [np.zeros((12, 12, 10))]                               # a cubic volume
FRAMES = ARRAY + [np.zeros((4, 12, 10)), np.zeros((3, 12, 12))]      # one square frame per pose
AXIS = [(0.0, 0.0, 0.0), "abc", (1.0, 2.0), (NAN, 1.0, 0.0)]

# tracking: poses of a tumbling particle from its frames
E("geometry.tracking.blob_sample", lambda: call(12, num_blobs=2), gpts=COUNT + [4], num_blobs=COUNT, seed=SEED)
E("geometry.tracking.nominal_rotations", lambda: call(4), num_frames=COUNT + [1], revolutions=LENGTH + [3],
  axis=AXIS)
E("geometry.tracking.tumbling_rotations", lambda: call(4), num_frames=COUNT + [1], revolutions=LENGTH + [3],
  axis_drift=NONNEG + [60], speed_variation=FRACTION, seed=SEED)
E("geometry.tracking.record_frames", lambda: call(_blob(), _nominal()), volume=BLOB, rotations=POSES,
  sampling=LENGTH, noise=NONNEG, seed=SEED)
E("geometry.tracking.pose_errors", lambda: call(_nominal(), _nominal()), estimated=POSES + [_nominal(2)],
  truth=POSES)
E("geometry.tracking.pose_jacobian", lambda: call(_blob(), _nominal()), volume=BLOB, rotations=POSES,
  sampling=LENGTH)
E("geometry.tracking.reconstruct", lambda: call(_frames(), _nominal(), max_num_iter=2), frames=FRAMES,
  rotations=POSES, sampling=LENGTH, max_num_iter=COUNT)
E("geometry.tracking.refine_poses", lambda: call(_frames(), _blob(), _nominal(), max_num_iter=1), frames=FRAMES,
  volume=BLOB, rotations=POSES, sampling=LENGTH, smoothness=NONNEG, max_num_iter=COUNT, damping=LENGTH)
E("geometry.tracking.track", lambda: call(_frames(), _blob(), _nominal(), max_num_iter=1, volume_num_iter=1),
  frames=FRAMES, reference=BLOB, initial=POSES, sampling=LENGTH, smoothness=NONNEG, max_num_iter=COUNT,
  volume_num_iter=COUNT, damping=LENGTH)

# trajectory: a smooth trajectory fitted without a reference
E("geometry.trajectory.steady_coefficients", lambda: call(harmonics=1), revolutions=LENGTH + [3], axis=AXIS,
  harmonics=COUNT0)
E("geometry.trajectory.trajectory_rotations", lambda: call(_coefficients(), 4),
  coefficients=ARRAY_ANY_NDIM + [np.ones(5)], num_frames=COUNT + [1])
E("geometry.trajectory.trajectory_jacobian", lambda: call(_coefficients(), 4),
  coefficients=ARRAY_ANY_NDIM + [np.ones(5)], num_frames=COUNT + [1])
E("geometry.trajectory.align_gauge", lambda: call(_nominal(), _nominal()), estimated=POSES + [_nominal(2)],
  truth=POSES)
E("geometry.trajectory.fit_trajectory",
  lambda: call(_frames(10), harmonics=1, steps_per_stage=1, volume_num_iter=1, projection_num_iter=1, coarse=False),
  frames=ARRAY + [np.zeros((10, 12, 10))], revolutions=LENGTH + [3], axis=AXIS, harmonics=COUNT0 + [5],
  steps_per_stage=COUNT, sampling=LENGTH, volume_num_iter=COUNT, projection_num_iter=COUNT, damping=LENGTH,
  coarse=FREE)


# ============================================================================= mbook.learning
def _regression():
    from mbook.learning import implicit_bias

    return implicit_bias.sparse_regression(8, 12, sparsity=2, noise=0.1, seed=0)


def _unrolled_params():
    from mbook.learning import unrolled

    return unrolled.init_parameters(3, 2)


def _masks():
    masks = np.zeros((2, 8, 8))
    masks[:, :, :4] = 1.0
    return masks


XS = ARRAY + [rand(7, 12)]           # (n, d) design matrix
YS = ARRAY_ANY_NDIM + [rand(5)]      # (n,) targets
PARAMS_U = ["not-params", None, (1, 2, 3)]
FEATURES_U = ARRAY + [rand(2, 2, 8, 8)]  # (B, C, H, W), C channels as the parameters

# implicit_bias: the diagonal linear network and its implicit bias
E("learning.implicit_bias.sparse_regression", lambda: call(8, 12, sparsity=2), num_samples=COUNT,
  num_features=COUNT, sparsity=COUNT + [13], noise=NONNEG, seed=SEED)
E("learning.implicit_bias.train",
  lambda: call(_regression().X, _regression().y, scale=0.1, learning_rate=0.01, num_steps=5, batch_size=4),
  X=XS, y=YS, scale=LENGTH, learning_rate=LENGTH, num_steps=COUNT, batch_size=COUNT + [9],
  num_samples=COUNT + [9], seed=SEED, record_every=COUNT, tol=TOL, check_every=COUNT, show_progress=FREE)
E("learning.implicit_bias.loss_and_gradient",
  lambda: call(np.full(12, 0.1), np.full(12, 0.1), _regression().X, _regression().y),
  u=ARRAY_ANY_NDIM + [np.ones(5)], v=ARRAY_ANY_NDIM + [np.ones(5)], X=XS, y=YS, num_samples=COUNT + [9])
E("learning.implicit_bias.model_weights", lambda: call(np.full(12, 0.1), np.full(12, 0.2)),
  u=ARRAY_ANY_NDIM + [np.ones(5)], v=ARRAY_ANY_NDIM + [np.ones(5)])
E("learning.implicit_bias.min_norm_interpolant", lambda: call(_regression().X, _regression().y), X=XS, y=YS)
E("learning.implicit_bias.lasso", lambda: call(_regression().X, _regression().y, 0.1, max_num_iter=50),
  X=XS, y=YS, weight=LENGTH, tol=TOL, max_num_iter=COUNT, check_every=COUNT)
E("learning.implicit_bias.relative_error", lambda: call(rand(12), rand(12, seed=1)),
  w=ARRAY_ANY_NDIM + [np.ones(5)], w_true=ARRAY + [np.zeros(12), np.ones(5)])
E("learning.implicit_bias.relative_errors", lambda: call(rand(3, 12), rand(12, seed=1)),
  w=ARRAY_ANY_NDIM + [np.ones((3, 5))], w_true=ARRAY + [np.zeros(12), np.ones(5)])
E("learning.implicit_bias.stable_learning_rate", lambda: call(_regression().X, 0.1, batch_size=4),
  X=ARRAY, scale=LENGTH, signal=LENGTH, safety=LENGTH, batch_size=COUNT + [9], seed=SEED)

# unrolled: the unrolled PDHG segmentation network
E("learning.unrolled.init_parameters", lambda: call(3, 2, means=np.zeros((2, 3))), num_channels=COUNT,
  num_layers=COUNT, filter_size=COUNT + [4], means=ARRAY + [np.zeros((2, 2))],
  centre=["abc", np.zeros(5), np.array([NAN, 0.0, 0.0])], bias=REAL, weight=LENGTH, tau=LENGTH, sigma=LENGTH)
E("learning.unrolled.data_term", lambda: call(rand(2, 3, 8, 8), _unrolled_params()), features=FEATURES_U,
  params=PARAMS_U)
E("learning.unrolled.segment", lambda: call(rand(2, 3, 8, 8), _unrolled_params()), features=FEATURES_U,
  params=PARAMS_U, soft=FREE)
E("learning.unrolled.loss_and_gradient", lambda: call(rand(2, 3, 8, 8), _masks(), _unrolled_params()),
  features=FEATURES_U, masks=ARRAY + [np.zeros((2, 8, 7)), np.full((2, 8, 8), 0.5)], params=PARAMS_U)
E("learning.pdhg_baseline.intersection_over_union", lambda: call(_masks() > 0, _masks()),
  segmentation=[EMPTY, "abc", np.zeros((2, 8, 7))], masks=ARRAY_ANY_NDIM + [np.zeros((2, 8, 7))])
E("learning.pdhg_baseline.pdhg_segment", lambda: call(rand(2, 8, 8) - 1.0, weight=0.1, max_num_iter=5),
  cost=ARRAY_ANY_NDIM + [np.zeros(8)], weight=LENGTH + [[0.1, 0.2, 0.3]], tau=LENGTH, sigma=LENGTH,
  max_num_iter=COUNT, tol=TOL, check_every=COUNT)
def _unrolled_pass():
    from mbook.learning import unrolled_passes

    params, cost = _unrolled_params(), dev(rand(2, 8, 8) - 1.0)
    z, tape = unrolled_passes.forward(cost, params, True)
    return params, cost, z, tape


# unrolled_passes: the network's kernels (unrolled's functions check what they get)
E("learning.unrolled_passes.forward", lambda: call(dev(rand(2, 8, 8)), _unrolled_params(), True), cost=UNCHECKED,
  params=UNCHECKED, store=UNCHECKED)
E("learning.unrolled_passes.loss", lambda: call(_unrolled_pass()[2], dev(_masks())), z=UNCHECKED, masks=UNCHECKED)
E("learning.unrolled_passes.backward",
  lambda: call(*(lambda p, c, z, t: (c, p, t, dev(np.ones((2, 8, 8)))))(*_unrolled_pass())),
  cost=UNCHECKED, params=UNCHECKED, tape=UNCHECKED, grad_z=UNCHECKED)
E("learning.unrolled.train",
  lambda: call(rand(2, 3, 8, 8), _masks(), _unrolled_params(), num_steps=2, batch_size=2, show_progress=False),
  features=FEATURES_U, masks=ARRAY + [np.zeros((2, 8, 7)), np.full((2, 8, 8), 0.5)], params=PARAMS_U,
  num_steps=COUNT, learning_rate=LENGTH, batch_size=COUNT + [3], seed=SEED,
  betas=[(0.9, 1.0), "ab", (NAN, 0.9), None], show_progress=FREE)


# ============================================================================= mbook.segmentation
def _labels():
    labels = np.zeros((8, 8), int)
    labels[:, 4:] = 1
    return labels


FEATURES_S = ARRAY + [rand(2, 3, 8)]   # (B, C, H, W) feature maps
FREQUENCIES = [(0.1, 0.7), "ab", (0.3, 0.1), (NAN, 0.2)]
LABELS = [EMPTY, "abc", np.zeros((5, 8), int), np.zeros((8, 8))]  # integer labels of the truth's shape

# stm: the synthetic STM images
E("segmentation.stm.synthetic_stm", lambda: call(48, num_images=1, seed=1), gpts=GPTS + [8], num_images=COUNT,
  num_regions=COUNT + [1], lattices=[("graphene",), 3], sampling=LENGTH, spacing=[(0.5, 2.0), "ab", (NAN, 3.0)],
  boundary_scale=LENGTH, disorder_width=NONNEG, drift=NONNEG, tip_blur=NONNEG + [100.0], line_noise=NONNEG,
  noise=NONNEG, seed=SEED)
E("segmentation.stm.region_masks", lambda: call(_labels(), 2), labels=LABELS[:2] + [np.zeros((4, 4))],
  num_regions=COUNT)

# features: local Fourier features, PCA and k-means
E("segmentation.features.frequency_grid", lambda: call(num_radial=3, num_angles=4), frequencies=FREQUENCIES,
  num_radial=COUNT, num_angles=COUNT)
E("segmentation.features.local_fourier_features", lambda: call(rand(32, 32), num_radial=3, num_angles=4),
  image=ARRAY_ANY_NDIM + [np.zeros(32)], window=LENGTH + [10.0], frequencies=FREQUENCIES, num_radial=COUNT,
  num_angles=COUNT, rotation=CHOICE, smoothing=NONNEG)
# fit_pca and kmeans take one image's (C, H, W) maps as well as a batch
E("segmentation.features.fit_pca", lambda: call(rand(2, 3, 8, 8), 2), features=ARRAY,
  num_components=COUNT + [4], per_image=["yes"])
E("segmentation.features.apply_pca", lambda: call(rand(2, 3, 8, 8), _pca()), features=FEATURES_S + [rand(2, 2, 8, 8)],
  pca=["not-a-pca", None])
E("segmentation.features.kmeans", lambda: call(rand(2, 3, 8, 8), 2, max_num_iter=5), features=ARRAY,
  num_clusters=COUNT, max_num_iter=COUNT, tol=TOL, check_every=COUNT, seed=SEED)


def _pca():
    from mbook.segmentation import features

    return features.fit_pca(rand(2, 3, 8, 8), 2)


# chan_vese: the convex Chan-Vese segmentation
E("segmentation.chan_vese.region_costs", lambda: call(rand(2, 3, 8, 8), rand(2, 3)), features=FEATURES_S,
  means=ARRAY_ANY_NDIM + [rand(2, 2)], normalize=[1, "yes"])
E("segmentation.chan_vese.chan_vese", lambda: call(rand(2, 3, 8, 8), rand(2, 3), 1.0, max_num_iter=5),
  features=FEATURES_S, means=ARRAY_ANY_NDIM + [rand(2, 2)], weight=LENGTH, normalize=[1, "yes"], kwargs=FREE)
E("segmentation.chan_vese.chan_vese_binary", lambda: call(rand(2, 8, 8), 1.0, max_num_iter=5),
  costs=ARRAY_ANY_NDIM + [rand(3, 8, 8)], weight=LENGTH, tol=TOL, max_num_iter=COUNT, check_every=COUNT)
E("segmentation.chan_vese.chan_vese_multi", lambda: call(rand(3, 8, 8), 1.0, max_num_iter=5),
  costs=ARRAY_ANY_NDIM + [rand(1, 8, 8)], weight=LENGTH, tol=TOL, max_num_iter=COUNT, check_every=COUNT,
  relaxation=CHOICE, dykstra_sweeps=COUNT)
E("segmentation.chan_vese.iou", lambda: call(_labels(), _labels(), num_regions=2, where=np.ones((8, 8), bool)),
  labels=LABELS, truth=LABELS, num_regions=COUNT + [1], match=FREE, where=["abc", np.ones((3, 4), bool)],
  reduce=CHOICE)


# ============================================================================= mbook.multimodal
_AU_AG = ("Au", "Ag")
_DELTA = np.linspace(0.0, 2.0, 24)


def _nanoparticle():
    from mbook.multimodal import alloys

    return alloys.alloy_nanoparticle(_AU_AG, length=7, cutoff=2, seed=3)


def _edx_data():
    from mbook.multimodal import alloys

    return alloys.simulate(_nanoparticle(), dose=1e6, haadf_cross_sections=(0.037, 0.016), seed=1)


def _force_curves():
    from mbook.multimodal import afm

    return _host(afm.force_curves(np.full((4, 4), 2.0), np.full((4, 4), 5.0), indentations=_DELTA, seed=1))


PARTICLE = ["particle", None, 3]
EDX_DATA = ["data", None, {"edx": 1.0}]
PAIR = [(0.0, 1.0), "ab", (NAN, 1.0), (1.0, 2.0, 3.0)]  # two positive values, one per element
ELEMENTS = [("Au", "Xx"), "abc", None]

# upsampling: a coarse map made fine with a guide
E("multimodal.upsampling.downsample", lambda: call(rand(8, 8), 2), image=ARRAY + [rand(7, 8)], factor=COUNT + [3])
E("multimodal.upsampling.upsample_adjoint", lambda: call(rand(4, 4), 2), coarse=ARRAY, factor=COUNT)
E("multimodal.upsampling.bicubic", lambda: call(rand(4, 4), 2), coarse=ARRAY, factor=COUNT)
E("multimodal.upsampling.edge_weights", lambda: call(rand(8, 8)), guide=ARRAY, contrast=LENGTH, blur=NONNEG)
E("multimodal.upsampling.weighted_laplacian", lambda: call(rand(8, 8), rand(8, 8, seed=1)),
  image=ARRAY + [rand(8, 7)], weights=ARRAY + [rand(8, 7)])
E("multimodal.upsampling.guided_filter", lambda: call(rand(4, 4), rand(8, 8, seed=1), 2, radius=2),
  coarse=ARRAY, guide=ARRAY + [rand(6, 6)], factor=COUNT + [3], radius=COUNT, epsilon=LENGTH)
E("multimodal.upsampling.edge_aware", lambda: call(rand(4, 4), rand(8, 8, seed=1), 2, max_num_iter=5),
  coarse=ARRAY, guide=ARRAY + [rand(6, 6)], factor=COUNT + [3], weight=LENGTH, contrast=LENGTH, blur=NONNEG,
  max_num_iter=COUNT, tol=TOL, check_every=COUNT)
E("multimodal.upsampling.guided_tv", lambda: call(rand(4, 4), rand(8, 8, seed=1), 2, max_num_iter=5),
  coarse=ARRAY, guide=ARRAY + [rand(6, 6)], factor=COUNT + [3], weight=LENGTH, contrast=LENGTH, blur=NONNEG,
  max_num_iter=COUNT, nonnegative=FREE, start_from_filter=FREE)
E("multimodal.upsampling.relative_rmse", lambda: call(rand(8, 8), rand(8, 8, seed=1)),
  estimate=ARRAY_ANY_NDIM + [rand(4, 4)], truth=ARRAY_ANY_NDIM + [rand(4, 4), np.zeros((8, 8))])

# afm: the polymer blend and its force curves
E("multimodal.afm.polymer_blend", lambda: call(32, seed=1), gpts=COUNT + [8], extent=LENGTH, domain_size=LENGTH,
  interface_width=LENGTH, stiff_fraction=FRACTION + [1.0], moduli=PAIR, adhesions=PAIR, step_height=REAL,
  roughness=NONNEG, modulus_variation=NONNEG + [0.7], phase_noise=NONNEG, height_noise=NONNEG, seed=SEED)
E("multimodal.afm.force_curves", lambda: call(np.full((4, 4), 2.0), np.full((4, 4), 5.0), indentations=_DELTA),
  modulus=ARRAY + [np.ones((4, 5))], adhesion=ARRAY + [np.ones((4, 5))], indentations=ARRAY_ANY_NDIM + [-_DELTA],
  tip_radius=LENGTH, poisson_ratio=[-1.5, 0.5, NAN, "1"], noise=NONNEG, seed=SEED)
E("multimodal.afm.fit_dmt", lambda: call(_force_curves(), indentations=_DELTA),
  forces=ARRAY_ANY_NDIM + [np.ones((4, 23))], indentations=ARRAY_ANY_NDIM + [-_DELTA], tip_radius=LENGTH,
  poisson_ratio=[-1.5, 0.5, NAN, "1"])

# alloys: the nanoparticle and its EDX + HAADF data
E("multimodal.alloys.alloy_nanoparticle", lambda: call(_AU_AG, length=7, cutoff=2, seed=3),
  elements=[("Au", "Au"), ("Au", "Si"), "abc", None], length=COUNT, cutoff=[-1, 2.5, "3", 7], profile=CHOICE,
  core_fraction=FRACTION, shell_fraction=FRACTION, spread=NONNEG, seed=SEED)
E("multimodal.alloys.haadf_cross_sections", lambda: call(_AU_AG, gamma=1.8), elements=ELEMENTS,
  gamma=[3.0, 0.5, NAN, "1"], reference_element=["Xx", 3], reference_cross_section=LENGTH)
E("multimodal.alloys.x_ray_yields", lambda: call(_AU_AG, cross_sections=(100.0, 50.0)), elements=ELEMENTS,
  cross_sections=PAIR, solid_angle=LENGTH)
E("multimodal.alloys.absorption_factors",
  lambda: call(np.array([2.0, 3.0]), attenuation_lengths=(50.0, 100.0), layer_spacing=4.0),
  atoms_per_column=ARRAY_ANY_NDIM + [np.array([0.0])], attenuation_lengths=PAIR, layer_spacing=LENGTH,
  path_factor=LENGTH)
E("multimodal.alloys.simulate", lambda: call(_nanoparticle(), dose=1e6, haadf_cross_sections=(0.037, 0.016)),
  particle=PARTICLE, dose=LENGTH, haadf_cross_sections=PAIR, cross_sections=PAIR, solid_angle=LENGTH,
  model_error=[1.0, -0.1, NAN, "1"], absorption=["abc", np.ones((3, 2))], seed=SEED)
E("multimodal.alloys.check_data", lambda: call(_edx_data()), data=EDX_DATA)

# edx: compositions from EDX alone and fused with HAADF
E("multimodal.edx.estimate_edx", lambda: call(_edx_data()), data=EDX_DATA, prior=[0.5, NAN, "1"])
E("multimodal.edx.estimate_fused", lambda: call(_edx_data(), max_num_iter=3), data=EDX_DATA,
  model_error=[-0.1, NAN, "1"], prior=[0.5, NAN, "1"], calibration=CHOICE, max_num_iter=COUNT, tol=TOL,
  check_every=COUNT)
E("multimodal.edx.objective", lambda: call(np.full(69, 0.5), (0.037, 0.016), _edx_data()),
  composition=ARRAY_ANY_NDIM + [np.zeros(69), np.full(70, 0.5)], haadf_cross_sections=PAIR, data=EDX_DATA,
  model_error=[-0.1, NAN, "1"], prior=[0.5, NAN, "1"], haadf=FREE)
E("multimodal.edx.composition_rmse", lambda: call(rand(69), rand(69, seed=1)),
  estimate=ARRAY_ANY_NDIM + [np.ones(3)], truth=ARRAY_ANY_NDIM + [np.ones(3)])


def _nominal_scan():
    y, x = np.meshgrid(np.arange(4) * 2.0 + 1, np.arange(4) * 2.0 + 1, indexing="ij")
    return np.stack([y, x], -1)


def _gold():
    from mbook.multimodal import specimens

    return specimens.gold_cluster(3.0, centre=(5.0, 5.0, 5.0), cell=(10.0, 10.0, 10.0))


def _point_probe():
    probe = np.zeros((8, 8), complex)
    probe[4, 4] = 1.0
    return probe


def _drift_frames():
    from scipy.ndimage import gaussian_filter, shift

    image = gaussian_filter(np.random.default_rng(0).standard_normal((24, 24)), 1.5, mode="wrap")
    image = image - image.min() + 0.1  # counts-like: frame_shifts is a Poisson fit
    return np.stack([shift(image, (-s, s), order=3, mode="grid-wrap") for s in (-0.6, 0.0, 0.6)])[:, 4:20, 4:20]


def _drift_times():
    from mbook.multimodal import drift

    return drift.scan_times((16, 16), num_frames=3)


VECTOR2 = [(NAN, 0.0), "ab", (1.0,)]   # a 2-vector (y, x)
CELL3 = [(0.0, 10.0, 10.0), "abc", (10.0, 10.0), (NAN, 10.0, 10.0)]

# drift: scan times and drifted scan positions
E("multimodal.drift.scan_times", lambda: call((4, 4)), shape=GPTS, num_frames=COUNT, flyback=NONNEG)
E("multimodal.drift.drifted_positions",
  lambda: call(_nominal_scan(), velocity=(0.1, 0.0), jitter=0.1, line_jitter=0.1, seed=0, num_frames=2),
  nominal=ARRAY + [np.zeros((3, 2))], velocity=VECTOR2, jitter=NONNEG, line_jitter=NONNEG, seed=SEED,
  num_frames=COUNT, flyback=NONNEG)
E("multimodal.drift.rms_error", lambda: call(_nominal_scan() + 0.1, _nominal_scan()),
  positions=ARRAY_ANY_NDIM + [np.zeros((3, 2))], reference=ARRAY_ANY_NDIM + [np.zeros((3, 2))], remove_mean=FREE)

# specimens: ice, gold and protein for the cryo-ptychography pages
E("multimodal.specimens.vitreous_ice", lambda: call((10.0, 10.0, 10.0), seed=0), cell=CELL3, seed=SEED,
  density=LENGTH, min_distance=LENGTH)
E("multimodal.specimens.cryo_specimen", lambda: call(extent=(30.0, 30.0), thickness=20.0, radius=5.0, seed=0),
  extent=[(0.0, 30.0), "ab", (30.0,), (NAN, 30.0)], thickness=LENGTH + [10.0], radius=LENGTH, seed=SEED,
  ice_density=LENGTH, fiducials=COUNT0, fiducial_radius=LENGTH)
E("multimodal.specimens.gold_cluster", lambda: call(3.0, centre=(5.0, 5.0, 5.0), cell=(10.0, 10.0, 10.0)),
  radius=LENGTH, centre=[(NAN, 5.0, 5.0), "abc", (5.0, 5.0)], cell=CELL3)
E("multimodal.specimens.protein_cluster",
  lambda: call(3.0, centre=(5.0, 5.0, 5.0), cell=(10.0, 10.0, 10.0), seed=0),
  radius=LENGTH, centre=[(NAN, 5.0, 5.0), "abc", (5.0, 5.0)], cell=CELL3, seed=SEED, min_distance=LENGTH)
E("multimodal.specimens.mass_density", lambda: call(_gold()), atoms=ATOMS)

# positions: HAADF frames, their registration and the drift fitted to it
E("multimodal.positions.cross_section_map", lambda: call(_gold(), _grid((32, 32), 0.5)), atoms=ATOMS,
  grid=GRID, cross_section=LENGTH, exponent=REAL)
E("multimodal.positions.haadf_signal",
  lambda: call(rand(32, 32), np.array([[8.0, 8.0], [9.0, 8.0]]), probe=_point_probe(), sampling=0.5),
  sigma_map=ARRAY, positions=ARRAY_ANY_NDIM + [np.full((2, 2), 99.0)],
  probe=ARRAY_ANY_NDIM + [np.ones((40, 40))], sampling=LENGTH)
E("multimodal.positions.haadf_frames",
  lambda: call(rand(32, 32), np.full((2, 2, 2, 2), 8.0), probe=_point_probe(), sampling=0.5, electrons=100.0,
               seed=0),
  sigma_map=ARRAY, positions=ARRAY_ANY_NDIM + [np.full((2, 2, 2, 2), 99.0)],
  probe=ARRAY_ANY_NDIM + [np.ones((40, 40))], sampling=LENGTH, electrons=LENGTH, seed=SEED)
E("multimodal.positions.corrected_positions",
  lambda: call(_nominal_scan(), np.linspace(0.0, 1.0, 16).reshape(4, 4), offset=(0.0, 0.0), velocity=(0.1, 0.0)),
  nominal=ARRAY_ANY_NDIM, times=ARRAY_ANY_NDIM + [np.zeros((3, 3))], offset=VECTOR2, velocity=VECTOR2)
E("multimodal.positions.drift_fit", lambda: call(rand(4, 2), np.array([0.0, 1.0, 2.0, 3.0])),
  shifts=ARRAY + [np.zeros((3, 2))], frame_times=ARRAY + [np.zeros(3)])
E("multimodal.positions.frame_shifts",
  lambda: call(_drift_frames(), scan_step=2.0, times=_drift_times(), max_shift=4.0),
  frames=ARRAY + [np.ones((1, 16, 16)), -np.ones((3, 16, 16)), np.zeros((3, 16, 16))], scan_step=LENGTH,
  times=ARRAY + [np.zeros((3, 16, 15)), np.random.default_rng(0).random((3, 16, 16))], max_shift=LENGTH,
  smoothing=LENGTH)


_S2 = (0.5, 0.5)


def _ptycho_positions():
    return np.full((4, 2), 4.0) + np.arange(4)[:, None] * 0.5


def _ptycho_probe():
    from mbook.multimodal import ptychography

    return _host(ptychography.centred_probe(8, sampling=0.5, energy=300e3, semiangle_cutoff=15.0))


def _windows():
    from mbook.multimodal import ptychography

    corners, offsets = ptychography.window_corners(_ptycho_positions(), _S2, (8, 8), (16, 16))
    return corners, offsets, ptychography.window_indices(corners, (8, 8), (16, 16))


def _ptycho_counts():
    from mbook.multimodal import ptychography

    intensities = ptychography.diffraction_intensities(
        np.zeros((1, 16, 16)), grid=_grid((16, 16), 0.5), energy=300e3, slice_thickness=5.0, semiangle_cutoff=10.0,
        positions=_ptycho_positions(), gpts=8)
    return _host(ptychography.low_dose_counts(intensities, dose=100.0, scan_step=1.0, seed=0))


SAMPLING2 = [0, -1.0, NAN, "1", (0.5, 0.0)]

# ptychography: the forward model of single-slice and multislice ptychography
E("multimodal.ptychography.allowed_range", lambda: call((16, 16), _S2, (8, 8)), object_gpts=GPTS, sampling=SAMPLING2,
  gpts=GPTS + [(20, 20)])
E("multimodal.ptychography.check_positions", lambda: call(_ptycho_positions(), (16, 16), _S2, (8, 8)),
  positions=ARRAY + [np.full((4, 2), 99.0)], object_gpts=GPTS, sampling=SAMPLING2, gpts=GPTS + [(20, 20)])
E("multimodal.ptychography.centred_probe", lambda: call(8, sampling=0.5, energy=300e3, semiangle_cutoff=15.0),
  gpts=GPTS, sampling=LENGTH, energy=LENGTH, semiangle_cutoff=LENGTH, defocus=REAL, Cs=REAL, electrons=LENGTH)
E("multimodal.ptychography.detector_mask", lambda: call(8, sampling=0.5), gpts=GPTS, sampling=LENGTH)
E("multimodal.ptychography.diffraction_intensities",
  lambda: call(np.zeros((1, 16, 16)), grid=_grid((16, 16), 0.5), energy=300e3, slice_thickness=5.0,
               semiangle_cutoff=10.0, positions=_ptycho_positions(), gpts=8),
  potential=ARRAY + [np.zeros((1, 12, 16))], grid=GRID, energy=LENGTH, slice_thickness=LENGTH,
  semiangle_cutoff=LENGTH, positions=ARRAY + [np.array([[1.0, 4.0]])], gpts=GPTS + [32], defocus=REAL, Cs=REAL,
  budget=LENGTH, show_progress=FREE)
E("multimodal.ptychography.low_dose_counts", lambda: call(rand(4, 8, 8), dose=100.0, scan_step=1.0, seed=0),
  intensities=ARRAY_ANY_NDIM + [-rand(4, 8, 8)], dose=LENGTH, scan_step=LENGTH, seed=SEED)
# window_corners, window_indices and phase_ramps are kernels (documented): they run in the reconstruction's
# iterations on what check_positions and the operators checked once.
E("multimodal.ptychography.window_corners", lambda: call(_ptycho_positions(), _S2, (8, 8), (16, 16)),
  positions=UNCHECKED, sampling=UNCHECKED, gpts=UNCHECKED, object_gpts=UNCHECKED)
E("multimodal.ptychography.window_indices", lambda: call(_windows()[0], (8, 8), (16, 16)),
  corners=UNCHECKED, gpts=UNCHECKED, object_gpts=UNCHECKED)
E("multimodal.ptychography.phase_ramps", lambda: call(_windows()[1], (8, 8), _S2), offsets=UNCHECKED,
  gpts=UNCHECKED, sampling=UNCHECKED)
E("multimodal.ptychography.frequencies", lambda: call((8, 8), _S2, "<f8", np), gpts=UNCHECKED, sampling=UNCHECKED,
  dtype=UNCHECKED, xp=FREE)
E("multimodal.ptychography.gather_windows", lambda: call(rand(16, 16), _windows()[2]), image=OPERAND,
  index=OPERAND)
E("multimodal.ptychography.scatter_windows", lambda: call(rand(4, 8, 8), _windows()[2], (16, 16)),
  patches=OPERAND + [rand(3, 8, 8)], index=OPERAND, shape=GPTS)
E("multimodal.ptychography.shift_probes", lambda: call(_ptycho_probe(), _windows()[1], _S2), probe=OPERAND,
  offsets=OPERAND, sampling=SAMPLING2)
E("multimodal.ptychography.shift_probes_adjoint", lambda: call(crand(4, 8, 8), _windows()[1], _S2),
  shifted=OPERAND + [crand(3, 8, 8)], offsets=OPERAND, sampling=SAMPLING2)

# reconstruction: gradient-descent ptychography
E("multimodal.reconstruction.reconstruct",
  lambda: call(_ptycho_counts(), positions=_ptycho_positions(), probe=_ptycho_probe(), object_gpts=(16, 16),
               sampling=0.5, max_num_iter=2, batch_size=2),
  counts=ARRAY + [-np.ones((4, 8, 8)), np.ones((3, 8, 8))], positions=ARRAY + [_ptycho_positions() + 50.0],
  probe=ARRAY + [_ptycho_probe()[1:-1, 1:-1]], object_gpts=GPTS + [(6, 6)], sampling=SAMPLING2, max_num_iter=COUNT,
  batch_size=COUNT, n_slices=COUNT, energy=LENGTH, slice_thickness=LENGTH, object_step=NONNEG,
  momentum=[-0.1, 1.5, NAN, "1"], probe_step=NONNEG, position_step=NONNEG, probe_from=COUNT0,
  positions_from=COUNT0, max_position_step=LENGTH, position_groups=[[0, 1], "abc"], smoothness=NONNEG,
  detector=["abc", np.ones((5, 5))], dtype=["no-such-dtype", np.int32], seed=SEED, show_progress=FREE,
  callback=FREE, callback_every=COUNT)
E("multimodal.reconstruction.loss_and_gradients",
  lambda: call(np.zeros((1, 16, 16)), _ptycho_probe(), _ptycho_positions(), np.sqrt(_ptycho_counts()), sampling=0.5),
  phase=ARRAY + [np.zeros((1, 12, 16))], probe=ARRAY + [_ptycho_probe()[1:-1, 1:-1]],
  positions=ARRAY + [_ptycho_positions() + 50.0], amplitudes=ARRAY_ANY_NDIM + [np.ones((4, 6, 6))],
  sampling=SAMPLING2, energy=LENGTH, slice_thickness=LENGTH, smoothness=NONNEG, detector=["abc", np.ones((5, 5))])
E("multimodal.reconstruction.phase_error", lambda: call(rand(16, 16), rand(16, 16, seed=1), sampling=0.5),
  phase=ARRAY + [np.zeros((5, 4))], truth=ARRAY + [np.zeros((5, 4))], sampling=LENGTH, cutoff=LENGTH,
  region=["abc", np.ones((3, 3), bool)])


# ptycho_model: the model's kernels (documented: no checks) run on what reconstruction.reconstruct or
# loss_and_gradients checked once, batch by batch.
def _ptycho_kernel_args():
    return (dev(np.zeros((1, 16, 16), np.float32)), dev(_ptycho_probe().astype(np.complex64)),
            dev(_ptycho_positions().astype(np.float32)))


E("multimodal.ptycho_model.forward", lambda: call(*_ptycho_kernel_args(), None, _S2), phase=UNCHECKED,
  probe=UNCHECKED, positions=UNCHECKED, propagator=UNCHECKED, sampling=UNCHECKED, windows=UNCHECKED)
E("multimodal.ptycho_model.incident_windows", lambda: call(*_ptycho_kernel_args()[1:], _S2, (16, 16)),
  probe=UNCHECKED, positions=UNCHECKED, sampling=UNCHECKED, object_gpts=UNCHECKED)
E("multimodal.ptycho_model.illuminate",
  lambda: call(dev(crand(4, 8, 8).astype(np.complex64)), dev(_windows()[2]), 256), wave=UNCHECKED,
  index=UNCHECKED, n_pixels=UNCHECKED)
E("multimodal.ptycho_model.scan_illumination", lambda: call(*_ptycho_kernel_args(), None, _S2, 2), phase=UNCHECKED,
  probe=UNCHECKED, positions=UNCHECKED, propagator=UNCHECKED, sampling=UNCHECKED, batch_size=UNCHECKED)
E("multimodal.ptycho_model.batch_gradients",
  lambda: call(*_ptycho_kernel_args(), dev(np.sqrt(_ptycho_counts()).astype(np.float32)), None, _S2,
               dev(np.ones((8, 8), np.float32))),
  phase=UNCHECKED, probe=UNCHECKED, positions=UNCHECKED, amplitudes=UNCHECKED, propagator=UNCHECKED,
  sampling=UNCHECKED, detector=UNCHECKED, curvature=UNCHECKED, position_gradient=UNCHECKED,
  probe_gradient=UNCHECKED, windows=UNCHECKED, illumination=UNCHECKED)

# ============================================================================= mbook.electron: prism, lma, implicit
def _pgrid():
    from mbook.core import grids

    return grids.make_grid(gpts=(32, 32), sampling=0.2)


def _ppot():
    return np.full((2, 32, 32), 10.0, np.float32)


def _smatrix():
    from mbook.electron import prism

    return prism.build_smatrix(_ppot(), grid=_pgrid(), energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0,
                               interpolation=2)


_PPOS = np.array([[2.0, 2.0], [3.0, 3.0]])
SCAN_POSITIONS = [EMPTY, WITH_NAN, "abc", np.ones((2, 3)), np.array([[70.0, 1.0]])]

# prism: the PRISM S-matrix and its scan
E("electron.prism.beam_indices", lambda: call(_pgrid(), energy=200e3, semiangle_cutoff=20.0, interpolation=2),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, interpolation=COUNT + [16])
E("electron.prism.smatrix_bytes", lambda: call(_pgrid(), energy=200e3, semiangle_cutoff=20.0, interpolation=2),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, interpolation=COUNT + [16])
E("electron.prism.check_interpolation", lambda: call(2, _pgrid(), energy=200e3, semiangle_cutoff=20.0),
  interpolation=COUNT + [3, 16], grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH)
E("electron.prism.build_smatrix",
  lambda: call(_ppot(), grid=_pgrid(), energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0, interpolation=2),
  potential=ARRAY + [np.full((2, 16, 32), 10.0)], grid=GRID, energy=ENERGY, slice_thickness=LENGTH,
  semiangle_cutoff=LENGTH, interpolation=COUNT + [3, 16], budget=LENGTH, max_batch=COUNT,
  client=["not-a-client", 3])
E("electron.prism.scan", lambda: call(_smatrix(), positions=_PPOS, detectors=BF),
  smatrix=["S", None], positions=SCAN_POSITIONS, detectors=[{"BF": (20.0, 10.0)}, "a"], diffraction=FREE,
  defocus=REAL, Cs=REAL, aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], budget=LENGTH)


def _pweights():
    """Weights and frequencies ``(w_k, k_x, k_y)`` of three beams, on the device (as prism_scan.beam_weights)."""
    return dev(crand(3)), dev(rand(3, seed=1)), dev(rand(3, seed=2))


_PBEAMS = np.array([[0, 0], [0, 1], [1, 0]])
_PCENTRES = np.array([[10, 10], [15, 15]])

# prism_scan: the scan's kernels (documented: no checks) run on what prism.scan checked once, inside its
# batches; checking again would cost per batch what the batches are meant to save.
E("electron.prism_scan.beam_weights", lambda: call(dev(crand(32, 32)), dev(_PBEAMS), _pgrid(), (16, 16)),
  spectrum=UNCHECKED, beams=UNCHECKED, grid=UNCHECKED, window=UNCHECKED)
E("electron.prism_scan.coefficients", lambda: call(_pweights(), dev(_PPOS)), weights=UNCHECKED,
  positions=UNCHECKED)
E("electron.prism_scan.columns", lambda: call(_PBEAMS), beams=UNCHECKED)
E("electron.prism_scan.product", lambda: call(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 2.0], [0.0, 2.0]])),
  points=UNCHECKED)
E("electron.prism_scan.combine_on_grid",
  lambda: call(_pweights(), [(0, 2), (2, 3)], dev(rand(2)), np.array([0.0, 1.0]), np.array([0.0, 2.0]),
               dev(crand(3, 5).astype(np.complex64))),
  weights=UNCHECKED, columns=UNCHECKED, column_kx=UNCHECKED, xs=UNCHECKED, ys=UNCHECKED, matrix=UNCHECKED,
  padded=UNCHECKED)
E("electron.prism_scan.padded_columns", lambda: call([(0, 2), (2, 3)]), columns=UNCHECKED)
E("electron.prism_scan.window_centres", lambda: call(_PPOS, _pgrid()), positions=UNCHECKED, grid=UNCHECKED)
E("electron.prism_scan.tiles", lambda: call(_PCENTRES, (16, 16), (32, 32), 64), centres=UNCHECKED,
  window=UNCHECKED, gpts=UNCHECKED, batch=UNCHECKED)
E("electron.prism_scan.box_bytes", lambda: call([np.array([0, 1])], _PCENTRES, (16, 16), 3), batches=UNCHECKED,
  centres=UNCHECKED, window=UNCHECKED, n_beams=UNCHECKED)
E("electron.prism_scan.window_waves",
  lambda: call(dev(crand(3, 32, 32).astype(np.complex64)), lambda m: m[:2], _PCENTRES, (16, 16), (32, 32)),
  array=UNCHECKED, combine=UNCHECKED, centres=UNCHECKED, window=UNCHECKED, gpts=UNCHECKED)
E("electron.multislice.phase_factors", lambda: call(dev(rand(4, 4).astype(np.float32))), phase=UNCHECKED,
  out=UNCHECKED)
E("electron.prism_scan.far_fields", lambda: call(dev(crand(3, 8, 8).astype(np.complex64)), dev(np.arange(5))),
  array=UNCHECKED, pixels=UNCHECKED)


def _lattice_basis():
    from mbook.electron import lma

    return lma.build_basis(_ppot(), grid=_pgrid(), energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0,
                           lattice_step=2, patch_gpts=16)


BASIS = [None, "basis", 3]

# lma: the lattice basis of probes and its scan
E("electron.lma.probe_diameter", lambda: call(energy=200e3, semiangle_cutoff=20.0), energy=ENERGY,
  semiangle_cutoff=LENGTH)
E("electron.lma.check_lattice",
  lambda: call(_pgrid(), energy=200e3, semiangle_cutoff=20.0, lattice_step=2, patch_gpts=16),
  grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, lattice_step=COUNT + [3, 8], patch_gpts=COUNT + [4, 24.0, 48])
E("electron.lma.basis_function",
  lambda: call(_grid((16, 16), 0.2), energy=200e3, semiangle_cutoff=20.0, lattice_step=2),
  patch_grid=GRID, energy=ENERGY, semiangle_cutoff=LENGTH, lattice_step=COUNT + [8])
E("electron.lma.build_basis",
  lambda: call(_ppot(), grid=_pgrid(), energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0, lattice_step=2,
               patch_gpts=16),
  potential=ARRAY + [np.full((2, 16, 32), 10.0)], grid=GRID, energy=ENERGY, slice_thickness=LENGTH,
  semiangle_cutoff=LENGTH, lattice_step=COUNT + [3, 8], patch_gpts=COUNT + [4, 24.0, 48], budget=LENGTH,
  client=["not-a-client", 3])
E("electron.lma.scan", lambda: call(_lattice_basis(), positions=_PPOS, detectors=BF),
  basis=BASIS, positions=SCAN_POSITIONS, detectors=[{"BF": (20.0, 10.0)}, "a", [(0, 1)]], diffraction=FREE,
  defocus=REAL, Cs=REAL, aberrations=[{"C99": 1.0}, {"C12": NAN}, "a"], block=COUNT + [17], budget=LENGTH,
  max_batch=COUNT)
E("electron.lma.affected", lambda: call(_lattice_basis(), _PPOS, np.zeros((16, 16), bool)),
  basis=BASIS, positions=SCAN_POSITIONS, touched=[np.zeros((4, 4), bool), "abc", None], block=COUNT + [17])
E("electron.lma.update_basis", lambda: call(_lattice_basis(), 1.01 * _ppot()),
  basis=BASIS, potential=ARRAY + [_ppot()[:1]], tol=TOL + [0.0], overwrite=[1, "yes"], budget=LENGTH)

# lma_patches: the basis's kernels (documented: no checks) run on what lma.build_basis or lma.update_basis
# checked once, inside their batches.
def _patch_wave_call():
    from mbook.core import backend, grids
    from mbook.electron import lma, multislice

    basis = _lattice_basis()
    patch_grid = grids.make_grid(gpts=(16, 16), sampling=0.2)
    propagators = multislice.slice_propagators(patch_grid, energy=200e3, thicknesses=(1.0, 1.0))
    u = lma.basis_function(patch_grid, energy=200e3, semiangle_cutoff=20.0, lattice_step=2)
    return call(basis.array, backend.asarray(np.array([[0, 0], [3, 5]])), transmissions=basis.transmissions,
                propagators=propagators, u=u, step=2, gpts=(32, 32), budget=None, fixed=0)


E("electron.lma_patches.compute_waves", _patch_wave_call, array=UNCHECKED, points=UNCHECKED,
  transmissions=UNCHECKED, propagators=UNCHECKED, u=UNCHECKED, step=UNCHECKED, gpts=UNCHECKED, budget=UNCHECKED,
  fixed=UNCHECKED, client=UNCHECKED)
E("electron.lma_patches.bytes_per_point", lambda: call(16), patch=UNCHECKED)
E("electron.lma_patches.touched_points", lambda: call(_lattice_basis(), dev(1.01 * _ppot()), 1e-3),
  basis=UNCHECKED, potential=UNCHECKED, tol=UNCHECKED)
E("electron.lma_patches.local_transmissions",
  lambda: call(_lattice_basis(), dev(1.01 * _ppot()), np.arange(256).reshape(16, 16) == 7 * 16 + 7),
  basis=UNCHECKED, potential=UNCHECKED, touched_host=UNCHECKED)

# lma_scan: the scan's kernels (documented: no checks) run on what lma.scan (or lma.affected) checked once,
# inside its batches.
E("electron.lma_scan.nearest_points", lambda: call(dev(_PPOS), _lattice_basis()), positions=UNCHECKED,
  basis=UNCHECKED)
E("electron.lma_scan.coefficients", lambda: call(dev(crand(32, 32)), dev(_PBEAMS), dev(_PPOS), _lattice_basis(), 3),
  spectrum=UNCHECKED, beams=UNCHECKED, positions=UNCHECKED, basis=UNCHECKED, m=UNCHECKED, on_grid=UNCHECKED)
E("electron.lma_scan.beam_grid", lambda: call(dev(crand(32, 32)), _PBEAMS, _lattice_basis().grid),
  spectrum=UNCHECKED, beams=UNCHECKED, grid=UNCHECKED)
E("electron.lma_scan.window_shape", lambda: call(_lattice_basis(), 3), basis=UNCHECKED, m=UNCHECKED)
E("electron.lma_scan.window_waves",
  lambda: call(dev(crand(16, 16, 16, 16).astype(np.complex64)), dev(crand(2, 3, 3).astype(np.complex64)),
               dev(np.array([[0, 0], [1, 1]])), 2, (20, 20)),
  array=UNCHECKED, coefficients=UNCHECKED, first=UNCHECKED, step=UNCHECKED, shape=UNCHECKED)
E("electron.lma_scan.blocks", lambda: call(np.array([[0, 0], [1, 1], [0, 0]])), first=UNCHECKED)
E("electron.lma_scan.block_batches", lambda: call([3, 5, 2], 4), sizes=UNCHECKED, batch=UNCHECKED)
E("electron.lma_scan.placed_patches", lambda: call(dev(crand(16, 16, 16, 16).astype(np.complex64)), (0, 0), 3, 2,
                                                   (20, 20)),
  array=UNCHECKED, first=UNCHECKED, m=UNCHECKED, step=UNCHECKED, shape=UNCHECKED, out=UNCHECKED)
E("electron.lma_scan.shared_block_waves",
  lambda: call(dev(crand(2, 3, 3).astype(np.complex64)), dev(crand(9, 400).astype(np.complex64)), (20, 20)),
  coefficients=UNCHECKED, placed=UNCHECKED, shape=UNCHECKED)


def _ipot():
    return np.full((3, 16, 16), 5.0)


def _igrid():
    return _grid((16, 16), 0.25)


# implicit: the whole-domain implicit propagation
E("electron.implicit.operators", lambda: call(_ipot(), grid=_igrid(), energy=200e3, slice_thickness=2.0),
  potential=ARRAY + [np.full((3, 8, 8), 5.0)], grid=GRID + [_grid((8, 8), 1.0)], energy=ENERGY,
  slice_thickness=LENGTH + [[1.0, 2.0]], scheme=CHOICE, antialias=[1, "yes"], batch_shape=[[2], (0,), "a"],
  dtype=[np.float32, "no-such-dtype"])
E("electron.implicit.solve",
  lambda: call(np.ones((16, 16), complex), _ipot(), grid=_igrid(), energy=200e3, slice_thickness=2.0, max_num_iter=5),
  waves=ARRAY_ANY_NDIM + [np.ones((16, 8)), None], potential=ARRAY + [np.full((3, 8, 8), 5.0)],
  grid=GRID + [(16, 16)], energy=ENERGY, slice_thickness=LENGTH + [[1.0, 2.0]], scheme=CHOICE,
  x0=ARRAY_ANY_NDIM + [np.ones((5, 16, 16))], method=CHOICE, tol=TOL + [0], max_num_iter=COUNT,
  check_every=COUNT, antialias=[1, "yes"], budget=LENGTH)


# implicit_system: the system's kernels (documented: no checks) run on what implicit.solve and implicit.operators
# checked once, inside their iterations.
def _isystem():
    from mbook.electron import implicit_system

    return implicit_system.make_system(dev(_ipot()), _igrid(), 200e3, (2.0, 2.0, 2.0), 0.5, 0, np.complex128, True)


E("electron.implicit_system.make_system",
  lambda: call(dev(_ipot()), _igrid(), 200e3, (2.0, 2.0, 2.0), 0.5, 0, np.complex128, True), potential=UNCHECKED,
  grid=UNCHECKED, energy=UNCHECKED, thicknesses=UNCHECKED, theta=UNCHECKED, batch_ndim=UNCHECKED, dtype=UNCHECKED,
  antialias=UNCHECKED)
E("electron.implicit_system.apply", lambda: call(_isystem(), dev(crand(3, 16, 16))), system=UNCHECKED, x=UNCHECKED)
E("electron.implicit_system.apply_adjoint", lambda: call(_isystem(), dev(crand(3, 16, 16))), system=UNCHECKED,
  y=UNCHECKED)
E("electron.implicit_system.precondition", lambda: call(_isystem(), dev(crand(3, 16, 16))), system=UNCHECKED,
  r=UNCHECKED)
E("electron.implicit_system.precondition_adjoint", lambda: call(_isystem(), dev(crand(3, 16, 16))),
  system=UNCHECKED, r=UNCHECKED)
E("electron.implicit_system.right_hand_side", lambda: call(_isystem(), dev(crand(16, 16))), system=UNCHECKED,
  incident_hat=UNCHECKED)
