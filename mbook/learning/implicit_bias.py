"""The implicit bias of gradient descent on a diagonal linear network.

The model is linear in its input ``x`` and quadratic in its parameters,

    f(x) = <w, x>,   w = u ⊙ u - v ⊙ v,

the simplest overparameterised "network" in which the starting point decides
which of the many interpolating solutions gradient descent finds
(Woodworth et al. 2020; Vaškevičius, Kanade and Rebeschini 2019). From
``u = v = α 1`` (so ``w = 0``), with ``n < d`` noisy samples of a sparse
``w*``:

- small ``α`` (the *rich* regime): the iterates stay near the coordinate axes
  and converge towards the minimum-ℓ1 interpolant, a sparse solution close to
  ``w*``;
- large ``α`` (the *kernel* regime): the model is nearly linear in ``(u, v)``
  around its start, and gradient descent converges to the minimum-ℓ2
  interpolant ``X⁺ y``, which spreads the signal over all coordinates.

:func:`train` runs full-batch gradient descent or mini-batch SGD for several
runs at once (an array axis: one run per initialisation scale, step and number
of samples), with the hand-written gradient of :func:`loss_and_gradient`
written into fused update steps (a test checks one step of each kind against it).
The references it is compared with are :func:`lasso` (FISTA from
:mod:`mbook.inverse.optimize`, batched over regularisation weights) and
:func:`min_norm_interpolant`.

Device rule: the public functions move their arrays to the selected device
once; the training loop copies nothing to the host per step (the losses are
recorded on the device, and a stopping test, when asked for, reads one number
every ``check_every`` steps); random draws (data, mini-batches) are made on
the host from a seed and moved.

Examples
--------
>>> from mbook.core import backend
>>> from mbook.learning import implicit_bias
>>> data = implicit_bias.sparse_regression(40, 80, sparsity=3, noise=0.0, seed=1)
>>> run = implicit_bias.train(data.X, data.y, scale=1e-3, learning_rate=0.1, num_steps=3000)
>>> round(implicit_bias.relative_error(run.w[0], data.w_true), 2)
0.0
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion, progress
from mbook.inverse import optimize, solvers


class SparseRegression(NamedTuple):
    """A sparse linear regression problem ``y = X w* + noise``.

    Attributes
    ----------
    X : (n, d) array
        Design matrix, i.i.d. standard normal entries.
    y : (n,) array
        Responses.
    w_true : (d,) array
        The sparse ``w*``: ``sparsity`` entries of ±1 (random signs), zeros elsewhere.
    noise : float
        Standard deviation of the Gaussian noise added to ``y``.
    """

    X: object
    y: object
    w_true: object
    noise: float


class TrainResult(NamedTuple):
    """Result of :func:`train`, every array on the selected device.

    Attributes
    ----------
    w : (runs, d) array
        Final weights ``u⊙u - v⊙v`` per run.
    u, v : (runs, d) array
        Final parameters.
    losses : (records, runs) array
        Full training loss per run, every ``record_every`` steps (the first at step 0).
    steps : (records,) array of int
        The steps at which the losses were recorded (a host NumPy array: bookkeeping, not data).
    num_steps : int
        Steps run (fewer than asked when the stopping test was met).
    """

    w: object
    u: object
    v: object
    losses: object
    steps: np.ndarray
    num_steps: int


def sparse_regression(num_samples: int, num_features: int, *, sparsity: int, noise: float = 0.0,
                      seed: int = 0) -> SparseRegression:
    """Draw ``y = X w* + ε`` with a ``sparsity``-sparse ``w*`` of ±1 entries.

    Draws on the host from ``seed``, then moves the arrays to the selected
    device. The first ``m`` rows of a draw with ``num_samples = n`` equal the
    draw with ``num_samples = m`` only when ``noise = 0``; to compare sample
    sizes, draw the largest and take leading rows (``num_samples`` in :func:`train`).

    Parameters
    ----------
    num_samples : int
        Number of samples ``n``.
    num_features : int
        Dimension ``d``.
    sparsity : int
        Number of non-zero entries ``k`` of ``w*``, between 1 and ``d``.
    noise : float
        Standard deviation of the additive Gaussian noise (>= 0).
    seed : int

    Returns
    -------
    SparseRegression
    """
    num_samples = checks.check_count(num_samples, "num_samples")
    num_features = checks.check_count(num_features, "num_features")
    sparsity = checks.check_count(sparsity, "sparsity", maximum=num_features)
    noise = checks.check_positive_number(noise, "noise", allow_zero=True)
    rng = checks.rng(seed)
    w_true = np.zeros(num_features)
    support = rng.choice(num_features, sparsity, replace=False)
    w_true[support] = rng.choice([-1.0, 1.0], sparsity)
    X = rng.standard_normal((num_samples, num_features))
    y = X @ w_true + noise * rng.standard_normal(num_samples)
    return SparseRegression(backend.asarray(X), backend.asarray(y), backend.asarray(w_true), noise)


def _check_design(X, y):
    X = checks.check_array(X, "X", ndim=2, real=True)
    y = checks.check_array(y, "y", ndim=1, real=True)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got X {X.shape} and y {y.shape}")
    return X.astype(X.dtype if X.dtype.kind == "f" else np.float64), y.astype(X.dtype if X.dtype.kind == "f"
                                                                             else np.float64)


def _per_run(value, name, runs, *, positive=True, integer=False, maximum=None):
    """A scalar or a 1D sequence of per-run values as a host array of length ``runs`` (checked)."""
    values = np.atleast_1d(np.asarray(backend.asnumpy(value) if backend.is_device_array(value) else value))
    if values.ndim != 1 or values.size not in (1, runs):
        raise ValueError(f"{name} must be a number or one value per run ({runs}), got shape {values.shape}")
    for item in values.tolist():
        if integer:
            checks.check_count(item, name, maximum=maximum)
        elif positive:
            checks.check_positive_number(item, name)
    return np.broadcast_to(values, (runs,)).copy()


def model_weights(u, v):
    """The weights ``w = u⊙u - v⊙v`` of the diagonal network (any shape, on the selected device)."""
    u = checks.check_array(u, "u", real=True)
    v = checks.check_array(v, "v", real=True)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    return u * u - v * v


def _loss_and_gradient(u, v, X, y, weights):
    """Kernel of :func:`loss_and_gradient`: ``weights`` (runs, n) already hold ``1/n_r`` or 0."""
    w = u * u - v * v  # (runs, d)
    residual = w @ X.T - y  # (runs, n)
    loss = 0.5 * (weights * residual**2).sum(axis=-1)
    g_w = (weights * residual) @ X  # ∂L/∂w = X^T diag(weights) r
    return loss, 2.0 * u * g_w, -2.0 * v * g_w  # chain rule through w = u² - v²


def _sample_weights(num_samples, n, xp, dtype):
    """(runs, n) weights ``1/n_r`` on the first ``n_r`` samples of each run, 0 beyond."""
    counts = np.asarray(num_samples, dtype=float)
    host = (np.arange(n)[None, :] < counts[:, None]) / counts[:, None]
    return xp.asarray(host.astype(dtype))


def loss_and_gradient(u, v, X, y, *, num_samples=None):
    """Training loss and its gradient with respect to ``u`` and ``v``, for several runs at once.

    ``L(u, v) = 1/(2 n_r) Σ_{i < n_r} (<x_i, u⊙u - v⊙v> - y_i)²`` per run ``r``, and,
    with ``g = X^T r / n_r`` the gradient with respect to ``w``,
    ``∂L/∂u = 2 u ⊙ g`` and ``∂L/∂v = -2 v ⊙ g``.

    Parameters
    ----------
    u, v : (runs, d) or (d,) array
        Parameters of each run.
    X : (n, d) array
        Design matrix, shared by the runs.
    y : (n,) array
        Responses.
    num_samples : int or (runs,) sequence of int, optional
        Each run uses the first ``n_r`` samples (default all ``n``).

    Returns
    -------
    loss : (runs,) array
    grad_u, grad_v : (runs, d) array
    """
    X, y = _check_design(X, y)
    u = checks.check_array(u, "u", real=True)
    v = checks.check_array(v, "v", real=True)
    if u.shape != v.shape or u.shape[-1] != X.shape[1] or u.ndim > 2:
        raise ValueError(f"u and v must both have shape (runs, d) or (d,) with d = {X.shape[1]}, "
                         f"got {u.shape} and {v.shape}")
    u2, v2 = u.reshape(-1, X.shape[1]), v.reshape(-1, X.shape[1])
    counts = _per_run(X.shape[0] if num_samples is None else num_samples, "num_samples", u2.shape[0],
                      integer=True, maximum=X.shape[0])
    xp = backend.get_array_module(X)
    loss, gu, gv = _loss_and_gradient(u2, v2, X, y, _sample_weights(counts, X.shape[0], xp, X.dtype))
    if u.ndim == 1:
        return loss[0], gu[0], gv[0]
    return loss, gu, gv


def train(X, y, *, scale, learning_rate, num_steps: int, batch_size: int | None = None, num_samples=None,
          seed: int = 0, record_every: int = 10, tol: float = 0.0, check_every: int = 100,
          show_progress: bool = False) -> TrainResult:
    """Gradient descent (full batch) or mini-batch SGD on the diagonal network, several runs at once.

    Every run starts at ``u = v = α 1`` (so ``w = 0``) and takes steps
    ``(u, v) ← (u, v) - η ∇L`` with its own ``α`` (``scale``), ``η``
    (``learning_rate``) and number of samples ``n_r``. With ``batch_size = B``
    each step uses ``B`` samples drawn uniformly (with replacement) from the
    run's ``n_r``, and the gradient is the mean over them. Gradient descent on
    ``w = u² - v²`` is stable for ``η ≲ 1 / (4 max(α², |w|∞) λ_max(XᵀX/n))``:
    scale the step with ``1/α²`` in the kernel regime (:func:`stable_learning_rate`).
    Runs are independent and go in chunks that fit the memory budget
    (:func:`mbook.core.progress.plan_batches`); the result does not depend on the chunks.

    Parameters
    ----------
    X : (n, d) array
        Design matrix.
    y : (n,) array
        Responses.
    scale : float or (runs,) sequence
        Initialisation scale ``α`` > 0 per run.
    learning_rate : float or (runs,) sequence
        Step ``η`` > 0 per run.
    num_steps : int
        Number of steps (an upper bound with ``tol``).
    batch_size : int, optional
        Mini-batch size for SGD; None: full-batch gradient descent.
    num_samples : int or (runs,) sequence of int, optional
        Run ``r`` trains on the first ``n_r`` samples (default all).
    seed : int
        Seed of the mini-batch draws (made on the host, one block of steps at a time).
    record_every : int
        Steps between records of the full training loss.
    tol : float
        Stop when every run's training loss is at most ``tol`` (tested every
        ``check_every`` steps, one number copied to the host per test); 0 never stops early.
    check_every : int
    show_progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult
    """
    X, y = _check_design(X, y)
    n, d = X.shape
    scales = np.atleast_1d(np.asarray(backend.asnumpy(scale) if backend.is_device_array(scale) else scale))
    if scales.ndim != 1:
        raise ValueError(f"scale must be a number or a 1D sequence, got shape {scales.shape}")
    steps_host = np.atleast_1d(np.asarray(backend.asnumpy(learning_rate) if backend.is_device_array(learning_rate)
                                          else learning_rate))
    counts_host = np.atleast_1d(np.asarray(n if num_samples is None else num_samples))
    runs = max(scales.size, steps_host.size, counts_host.size)
    scales = _per_run(scales, "scale", runs)
    steps_host = _per_run(steps_host, "learning_rate", runs)
    counts = _per_run(counts_host, "num_samples", runs, integer=True, maximum=n)
    num_steps = checks.check_iterations(num_steps, "num_steps")
    if batch_size is not None:
        batch_size = checks.check_count(batch_size, "batch_size", maximum=n)
    seed = checks.check_seed(seed)
    record_every = checks.check_count(record_every, "record_every")
    check_every = checks.check_count(check_every, "check_every")
    tol = checks.check_tolerance(tol)
    # Runs are independent: they go in memory-budgeted chunks along the run axis.
    gather = _gather_steps(batch_size, num_steps)
    per_run = 8 * (6 * d + 2 * n + (batch_size or 0) * (d + 2) + _DRAW_BLOCK * (batch_size or 0)
                   + gather * (batch_size or 0) * (d + 1) + num_steps // record_every)
    chunk = progress.plan_batches(n_items=runs, bytes_per_item=per_run, fixed_bytes=8 * n * (d + 1))
    parts = [_train(X, y, scales, steps_host, counts, num_steps, batch_size, seed, record_every, tol, check_every,
                    show_progress, slice(start, start + chunk), gather) for start in range(0, runs, chunk)]
    if len(parts) == 1:
        return parts[0]
    xp = backend.get_array_module(X)
    records = min(len(part.steps) for part in parts)  # chunks stopped by ``tol`` may have run longer
    return TrainResult(*(xp.concatenate([getattr(part, name) for part in parts]) for name in ("w", "u", "v")),
                       xp.concatenate([part.losses[:records] for part in parts], axis=1), parts[0].steps[:records],
                       max(part.num_steps for part in parts))


@fusion.elementwise
def _weighted_residual(xp, predicted, y, weights):
    return weights * (predicted - y)


@fusion.elementwise
def _descent_step(xp, u, v, g_w, eta):
    """One gradient step on ``(u, v)`` given ``∂L/∂w``, and the new ``w = u² - v²`` (chain rule through w)."""
    u = u - eta * (2.0 * u * g_w)
    v = v - eta * (-2.0 * v * g_w)
    return u, v, u * u - v * v


@fusion.elementwise
def _sgd_step(xp, u, v, g_sum, eta, batch_size):
    """:func:`_descent_step` with ``∂L/∂w`` the mean of a mini-batch's sum ``g_sum`` (the division fused in)."""
    g_w = g_sum / batch_size
    u = u - eta * (2.0 * u * g_w)
    v = v - eta * (-2.0 * v * g_w)
    return u, v, u * u - v * v


#: Steps whose mini-batch indices are drawn on the host at once, and at most this many steps whose rows
#: of X are gathered on the device at once (one gather for many steps: on a GPU a step's cost is its
#: launches), and at most this many rows a gather (a large mini-batch gathers for fewer steps).
_DRAW_BLOCK, _GATHER_BLOCK, _GATHER_ROWS = 256, 32, 4096


def _gather_steps(batch_size, num_steps):
    """Steps gathered at once: a power of two (so that it divides the draw block) of at most
    ``_GATHER_BLOCK`` steps and ``_GATHER_ROWS`` rows, and no more than the run's steps (0 without SGD)."""
    if batch_size is None:
        return 0
    steps = 1
    while steps * 2 <= min(_GATHER_BLOCK, _GATHER_ROWS // batch_size):
        steps *= 2
    return min(steps, num_steps)


def _train(X, y, scales, steps_host, counts, num_steps, batch_size, seed, record_every, tol, check_every,
           show_progress, runs_slice, gather):
    """Train the runs ``runs_slice`` of the parameters; the mini-batch draws are those of all runs, sliced."""
    xp = backend.get_array_module(X)
    n, d = X.shape
    total_runs = scales.size
    scales, steps_host, counts = scales[runs_slice], steps_host[runs_slice], counts[runs_slice]
    dtype = X.dtype
    u = xp.asarray(np.repeat(scales[:, None], d, axis=1).astype(dtype))
    v = u.copy()
    eta = xp.asarray(steps_host[:, None].astype(dtype))
    weights = _sample_weights(counts, n, xp, dtype)
    rng = np.random.default_rng(seed)
    losses, recorded, indices, rows_X, rows_y = [], [], None, None, None
    size = None if batch_size is None else xp.asarray(dtype.type(batch_size))
    step = 0
    steps = range(num_steps)
    if show_progress:
        steps = progress.progress(steps, desc="gradient descent" if batch_size is None else "SGD")
    # A step is two products and one fused element-wise kernel (w = u² - v² carried from the last
    # update; SGD's: a subtraction more): on a GPU these small problems are bound by kernel launches.
    w = u * u - v * v
    for step in steps:
        if step % record_every == 0:
            losses.append(_loss_and_gradient(u, v, X, y, weights)[0])
            recorded.append(step)
        if tol > 0 and step > 0 and step % check_every == 0:
            if bool(xp.max(_loss_and_gradient(u, v, X, y, weights)[0]) <= tol):  # one copy per check
                break
        if batch_size is None:
            g_w = _weighted_residual(w @ X.T, y, weights) @ X  # X^T diag(weights) r
            u, v, w = _descent_step(u, v, g_w, eta)
        else:
            if step % _DRAW_BLOCK == 0:  # uniform draws among each run's own n_r samples
                draws = rng.random((min(_DRAW_BLOCK, num_steps - step), total_runs, batch_size))[:, runs_slice]
                indices = xp.asarray((draws * counts[None, :, None]).astype(np.int64))
            if step % gather == 0:
                first = step % _DRAW_BLOCK
                rows_X = rows_y = Xb = yb = None  # the last block's rows (and views of them) go first
                batches = indices[first:first + gather]  # (steps, runs, B)
                rows_X, rows_y = X[batches], y[batches]  # (steps, runs, B, d), (steps, runs, B)
            Xb, yb = rows_X[step % gather], rows_y[step % gather]
            residual = (Xb @ w[:, :, None])[:, :, 0] - yb  # (runs, B)
            u, v, w = _sgd_step(u, v, (residual[:, None, :] @ Xb)[:, 0, :], eta, size)
    else:
        step = num_steps
    if recorded[-1] != step:
        losses.append(_loss_and_gradient(u, v, X, y, weights)[0])
        recorded.append(step)
    return TrainResult(u * u - v * v, u, v, xp.stack(losses), np.asarray(recorded), int(step))


def lasso(X, y, weight, *, tol: float = 1e-8, max_num_iter: int = 5000, check_every: int = 20):
    """The Lasso ``min_w 1/(2n) ‖Xw - y‖² + λ ‖w‖₁`` by FISTA, for several ``λ`` at once.

    Solved by :func:`mbook.inverse.solvers.forward_backward` with the soft
    threshold as proximal map and the step ``1/L``, ``L = ‖X‖₂² / n``
    (:func:`~mbook.inverse.solvers.operator_norm`), all weights in one
    array (Tibshirani 1996; Beck and Teboulle 2009).

    Parameters
    ----------
    X : (n, d) array
    y : (n,) array
    weight : float or (m,) sequence
        Regularisation weights ``λ`` > 0.
    tol, max_num_iter, check_every
        Stopping rule of :func:`~mbook.inverse.solvers.forward_backward`.

    Returns
    -------
    (d,) or (m, d) array
        The minimiser per weight, on the selected device.
    """
    X, y = _check_design(X, y)
    if isinstance(weight, (str, bytes)):
        raise TypeError(f"weight must be a number or a 1D sequence of numbers, got {weight!r}")
    weights = np.atleast_1d(np.asarray(weight, dtype=float))
    if weights.ndim != 1:
        raise ValueError(f"weight must be a number or a 1D sequence, got shape {weights.shape}")
    for value in weights.tolist():
        checks.check_positive_number(value, "weight")
    tol = checks.check_tolerance(tol)
    max_num_iter = checks.check_iterations(max_num_iter)
    check_every = checks.check_count(check_every, "check_every")
    xp = backend.get_array_module(X)
    n, d = X.shape
    lipschitz = 1.01 * solvers.operator_norm(lambda w: X @ w, lambda r: X.T @ r, (d,), dtype=X.dtype,
                                             max_num_iter=500, tol=1e-9, xp=xp) ** 2 / n
    lam = xp.asarray(weights[:, None].astype(X.dtype))
    result = solvers.forward_backward(
        xp.zeros((weights.size, d), dtype=X.dtype),
        grad_f=lambda w: (w @ X.T - y) @ X / n,
        prox_g=lambda w, step: optimize.soft_threshold(w, step * lam),
        step=1.0 / lipschitz, tol=tol, max_num_iter=max_num_iter, check_every=check_every)
    return result.x[0] if np.ndim(weight) == 0 else result.x


def min_norm_interpolant(X, y):
    """The minimum-ℓ2 solution of ``X w = y``: ``X⁺ y = Xᵀ (X Xᵀ)⁻¹ y`` for ``n < d`` of full rank.

    Parameters
    ----------
    X : (n, d) array
    y : (n,) array

    Returns
    -------
    (d,) array
        On the selected device.
    """
    X, y = _check_design(X, y)
    xp = backend.get_array_module(X)
    return xp.linalg.pinv(X) @ y


def relative_error(w, w_true) -> float:
    """``‖w - w*‖ / ‖w*‖`` (a Python float; ``w`` may hold runs on its leading axes: use one run)."""
    w = checks.check_array(w, "w", real=True)
    w_true = checks.check_array(w_true, "w_true", ndim=1, real=True)
    if w.shape[-1] != w_true.shape[0]:
        raise ValueError(f"w and w_true must have the same length, got {w.shape} and {w_true.shape}")
    xp = backend.get_array_module(w)
    norm = float(xp.linalg.norm(w_true))
    if norm == 0:
        raise ValueError("w_true must not be zero: the relative error is undefined")
    return float(xp.linalg.norm(w - w_true)) / norm


def relative_errors(w, w_true):
    """``‖w_r - w*‖ / ‖w*‖`` for each row of ``w`` (runs, d), as a device array of shape (runs,)."""
    w = checks.check_array(w, "w", ndim=2, real=True)
    w_true = checks.check_array(w_true, "w_true", ndim=1, real=True)
    if w.shape[-1] != w_true.shape[0]:
        raise ValueError(f"w and w_true must have the same length, got {w.shape} and {w_true.shape}")
    xp = backend.get_array_module(w)
    norm = xp.linalg.norm(w_true)
    if not bool(norm > 0):
        raise ValueError("w_true must not be zero: the relative error is undefined")
    return xp.linalg.norm(w - w_true, axis=-1) / norm


def stable_learning_rate(X, scale, *, signal: float = 1.0, safety: float = 0.25, batch_size: int | None = None,
                         seed: int = 0):
    """A step for :func:`train` that is stable from start to convergence.

    ``η = safety / (4 max(α², signal) λ_max(XᵀX / n))``: the Hessian of the
    loss in ``(u, v)`` is ``4 diag(|u|, |v|) XᵀX/n diag(...)`` plus a term
    that vanishes at interpolation, and ``|u|², |v|²`` stay below
    ``max(α², |w|∞)``; ``signal`` bounds ``|w|∞`` of the solution.

    With ``batch_size = B`` (SGD) the curvature of a mini-batch loss counts:
    ``λ_max(X_bᵀX_b / B)`` is larger than the full batch's (about
    ``(1 + sqrt(d/B))²`` against ``(1 + sqrt(d/n))²`` for Gaussian data), so the
    step uses the largest of 64 random mini-batches (drawn from ``seed``) too.

    Parameters
    ----------
    X : (n, d) array
    scale : float or (runs,) sequence
        Initialisation scales ``α``.
    signal : float
        Bound on the largest weight of the solution (1 for ±1 entries).
    safety : float
        Factor in (0, 1].
    batch_size : int, optional
        Mini-batch size of SGD (at most n); None for full-batch gradient descent.
    seed : int
        Seed of the sampled mini-batches.

    Returns
    -------
    (runs,) ndarray
        Steps, a host NumPy array (parameters, like ``scale``).
    """
    X = checks.check_array(X, "X", ndim=2, real=True)
    if isinstance(scale, (str, bytes)):
        raise TypeError(f"scale must be a number or a 1D sequence of numbers, got {scale!r}")
    scales = np.atleast_1d(np.asarray(scale, dtype=float))
    for value in scales.tolist():
        checks.check_positive_number(value, "scale")
    seed = checks.check_seed(seed)
    signal = checks.check_positive_number(signal, "signal")
    safety = checks.check_number(safety, "safety", lower=0, lower_inclusive=False, upper=1)
    if batch_size is not None:
        batch_size = checks.check_count(batch_size, "batch_size", maximum=X.shape[0])
    xp = backend.get_array_module(X)
    top = solvers.operator_norm(lambda w: X @ w, lambda r: X.T @ r, (X.shape[1],), dtype=X.dtype,
                                max_num_iter=500, tol=1e-9, xp=xp) ** 2 / X.shape[0]
    if batch_size is not None:  # eigenvalues of the (B, B) Gram matrices of 64 mini-batches, all at once
        rows = xp.asarray(np.random.default_rng(seed).integers(X.shape[0], size=(64, batch_size)))
        batches = X[rows]  # (64, B, d)
        gram = batches @ xp.swapaxes(batches, -1, -2) / batch_size
        top = max(top, float(xp.max(xp.linalg.eigvalsh(gram))))
    return safety / (4.0 * np.maximum(scales**2, signal) * top)


__all__ = ["SparseRegression", "TrainResult", "sparse_regression", "model_weights", "loss_and_gradient",
           "train", "lasso", "min_norm_interpolant", "relative_error", "relative_errors",
           "stable_learning_rate"]
