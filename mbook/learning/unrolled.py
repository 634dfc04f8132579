"""An unrolled PDHG network for binary segmentation, with its backward pass written by hand.

The convex relaxation of the two-phase piecewise-constant Mumford-Shah (Chan-Vese) model
(Chan, Esedoglu and Nikolova 2006; Chambolle, Cremers and Pock 2012) is

    min_{u ∈ [0, 1]}  <u, c> + λ TV(u),

with a data term ``c`` per pixel (negative where the pixel looks like the foreground) and the
isotropic total variation ``TV(u) = Σ |∇u|``. Its saddle-point form
``min_u max_{|p| <= λ} <∇u, p> + <u, c> + δ_[0,1](u)`` is solved by PDHG (Chambolle and Pock 2011):

    p ← Π_{|p| <= λ}(p + σ ∇ū),   u_new ← clip(u - τ (c - div p), 0, 1),   ū ← 2 u_new - u.

The network (Adler and Öktem 2018; Monga, Li and Eldar 2021) runs ``K`` of these iterations, each
a *layer* with its own learned step sizes ``τ_k``, ``σ_k`` and its own TV weight ``λ_k`` (the
threshold of the dual projection, the proximal parameter of ``f*``), all stored as logarithms so
they stay positive. The data term comes from feature maps ``F`` (``C`` channels per pixel) through
a learned filter bank ``h`` (``C`` filters of ``s × s`` taps) and a bias ``b``,

    c(x) = Σ_k Σ_{a,b} h_k[a, b] F_k(x + (a, b) - s//2) + b,

which contains the Chan-Vese data term ``|F - μ₁|² - |F - μ₀|² = -2 <F, μ₁ - μ₀> + |μ₁|² - |μ₀|²``
as the filters with only a centre tap (:func:`init_parameters` starts there). The output is the
last primal step before its projection, ``z_K``; the segmentation is ``z_K > 1/2`` (the same as
``clip(z_K, 0, 1) > 1/2``) and the loss the binary cross-entropy of ``κ (z_K - 1/2)`` as logits
against the masks, whose gradient does not vanish where the projection saturates.

:func:`loss_and_gradient` runs the layers forward storing their iterates, then the reverse pass
through every layer (the chain rule for the projections, the clip and the linear steps, with
``∇* = -div``), checked against finite differences in the tests. :func:`train` is Adam
(Kingma and Ba 2015) written out, on mini-batches drawn from a seed. The hand-tuned baseline, the
same problem solved with fixed parameters to a primal-dual gap, and the score both are compared by
are in :mod:`mbook.learning.pdhg_baseline`.

The module is generic: inputs are feature stacks ``(N, C, nx, ny)`` and masks ``(N, nx, ny)``,
whatever produced them. Device rule: inputs moved once, parameters and results on the selected
device, no host copy inside the layers or the training steps; the mini-batch draws are made on
the host from ``seed``; images are processed in memory-budgeted chunks
(:func:`mbook.core.progress.plan_batches`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.learning import pdhg_baseline, unrolled
>>> masks = np.zeros((2, 16, 16)); masks[:, :, 8:] = 1
>>> features = (1 - 2 * masks)[:, None] + 0.3 * np.random.default_rng(0).standard_normal((2, 1, 16, 16))
>>> params = unrolled.init_parameters(1, 10, means=[[1.0], [-1.0]], weight=0.5)
>>> segmentation = unrolled.segment(features, params)
>>> round(pdhg_baseline.intersection_over_union(segmentation, masks), 2)
1.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, fusion, progress
from mbook.learning import unrolled_passes

#: The logits of the loss are ``KAPPA (z_K - 1/2)``: z_K = 0 and 1 become logits of ∓KAPPA/2.
KAPPA = unrolled_passes.KAPPA
_ARRAYS_PER_LAYER = 6  # float arrays of one image stored per layer: u, ū, q (2), z, and one spare


class UnrolledParameters(NamedTuple):
    """Parameters of the network, on the selected device.

    Attributes
    ----------
    filters : (C, s, s) array
        Filter bank applied to the features (one ``s × s`` filter per channel, summed).
    bias : () array
        Bias of the data term.
    log_tau, log_sigma : (K,) array
        Logarithms of the primal and dual step sizes per layer.
    log_weight : (K,) array
        Logarithms of the TV weights ``λ_k`` per layer.
    """

    filters: object
    bias: object
    log_tau: object
    log_sigma: object
    log_weight: object

    @property
    def num_layers(self) -> int:
        """Number of layers ``K``."""
        return int(self.log_tau.shape[0])


class TrainResult(NamedTuple):
    """Result of :func:`train`.

    Attributes
    ----------
    params : UnrolledParameters
        The trained parameters.
    losses : (num_steps,) array
        Mini-batch loss per step, on the selected device.
    """

    params: UnrolledParameters
    losses: object


def init_parameters(num_channels: int, num_layers: int, *, filter_size: int = 3, means=None, centre=None,
                    bias: float = 0.0, weight: float = 0.1, tau: float = 0.35,
                    sigma: float = 0.35) -> UnrolledParameters:
    """Parameters that make the network ``K`` iterations of plain PDHG for Chan-Vese.

    Parameters
    ----------
    num_channels : int
        Feature channels ``C``.
    num_layers : int
        Layers ``K`` >= 1.
    filter_size : int
        Taps ``s`` of each filter (odd).
    means : (2, C) array_like, optional
        Feature means of the background (row 0) and the foreground (row 1), e.g. from K-means: the
        filters start as the Chan-Vese data term (a centre tap ``-2 (μ₁ - μ₀)``, bias
        ``|μ₁|² - |μ₀|²``); overrides ``centre`` and ``bias``.
    centre : (C,) array_like, optional
        Centre taps of the filters, the others 0 (default all 0). For features that are already
        squared distances to the two means, ``(d₀, d₁)``, the Chan-Vese term is ``centre = (-1, 1)``.
    bias : float
        Bias of the data term.
    weight : float
        TV weight ``λ`` of every layer.
    tau, sigma : float
        Step sizes of every layer; PDHG converges for ``τ σ ‖∇‖² <= 1`` with ``‖∇‖² <= 8``.

    Returns
    -------
    UnrolledParameters
    """
    num_channels = checks.check_count(num_channels, "num_channels")
    num_layers = checks.check_count(num_layers, "num_layers")
    filter_size = checks.check_count(filter_size, "filter_size")
    if filter_size % 2 == 0:
        raise ValueError(f"filter_size must be odd (a centre tap), got {filter_size}")
    weight = checks.check_positive_number(weight, "weight")
    tau = checks.check_positive_number(tau, "tau")
    sigma = checks.check_positive_number(sigma, "sigma")
    bias = checks.check_number(bias, "bias")
    filters = np.zeros((num_channels, filter_size, filter_size))
    r = filter_size // 2
    if centre is not None:
        centre = backend.asnumpy(checks.check_array(centre, "centre", ndim=1, real=True))
        if centre.shape != (num_channels,):
            raise ValueError(f"centre must have shape (num_channels,) = ({num_channels},), got {centre.shape}")
        filters[:, r, r] = centre
    if means is not None:
        means = backend.asnumpy(checks.check_array(means, "means", ndim=2, real=True))
        if means.shape != (2, num_channels):
            raise ValueError(f"means must have shape (2, num_channels) = (2, {num_channels}), got {means.shape}")
        filters[:, r, r] = -2.0 * (means[1] - means[0])
        bias = float(means[1] @ means[1] - means[0] @ means[0])
    ones = np.ones(num_layers)
    return UnrolledParameters(backend.asarray(filters), backend.asarray(np.asarray(bias)),
                              backend.asarray(math.log(tau) * ones), backend.asarray(math.log(sigma) * ones),
                              backend.asarray(math.log(weight) * ones))


def _check_parameters(params, num_channels=None):
    if not isinstance(params, UnrolledParameters):
        raise TypeError(f"params must be UnrolledParameters (see init_parameters), got {type(params).__name__}")
    arrays = [checks.check_array(a, f"params.{name}", real=True) for name, a in zip(params._fields, params)]
    filters, bias, log_tau, log_sigma, log_weight = arrays
    if filters.ndim != 3 or filters.shape[1] != filters.shape[2] or filters.shape[1] % 2 == 0:
        raise ValueError(f"params.filters must have shape (C, s, s) with s odd, got {filters.shape}")
    if num_channels is not None and filters.shape[0] != num_channels:
        raise ValueError(f"params.filters has {filters.shape[0]} channels but the features have {num_channels}")
    if bias.ndim != 0:
        raise ValueError(f"params.bias must be a scalar (0-d array), got shape {bias.shape}")
    if not (log_tau.ndim == log_sigma.ndim == log_weight.ndim == 1
            and log_tau.shape == log_sigma.shape == log_weight.shape):
        raise ValueError("params.log_tau, log_sigma and log_weight must be 1D arrays of one length (the layers), "
                         f"got {log_tau.shape}, {log_sigma.shape}, {log_weight.shape}")
    return UnrolledParameters(*arrays)


def _check_features(features, masks=None):
    features = checks.check_array(features, "features", ndim=4, real=True)
    xp = backend.get_array_module(features)
    features = features.astype(xp.float64)
    if masks is None:
        return features
    masks = checks.check_array(masks, "masks", ndim=3, real=True)
    n, _, nx, ny = features.shape
    if masks.shape != (n, nx, ny):
        raise ValueError(f"masks must have shape (N, nx, ny) = {(n, nx, ny)} to match the features "
                         f"{features.shape}, got {masks.shape}")
    if not bool(xp.all((masks == 0) | (masks == 1))):
        raise ValueError("masks must hold 0 and 1 only (background and foreground)")
    return features, masks.astype(xp.float64)


# ---------------------------------------------------------------------------------------
# kernels: follow their inputs
# ---------------------------------------------------------------------------------------
def _shifted(features, size):
    """(N, C, s, s, nx, ny) stack of the features shifted by every tap (edges repeated)."""
    xp = backend.get_array_module(features)
    r = size // 2
    nx, ny = features.shape[-2:]
    padded = xp.pad(features, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    rows = [xp.stack([padded[:, :, a:a + nx, b:b + ny] for b in range(size)], axis=2) for a in range(size)]
    return xp.stack(rows, axis=2)


def _data_term(shifted, filters, bias):
    xp = backend.get_array_module(shifted)
    return xp.einsum("nkabxy,kab->nxy", shifted, filters) + bias


def _bytes_per_image(features, params):
    nx, ny = features.shape[-2:]
    size = params.filters.shape[-1]
    return 8 * nx * ny * (_ARRAYS_PER_LAYER * params.log_tau.shape[0] + features.shape[1] * (size * size + 1) + 8)


def _loss_and_gradient(features, masks, params, chunk):
    xp = backend.get_array_module(features)
    n = features.shape[0]
    total = xp.zeros((), dtype=features.dtype)
    grads = [xp.zeros_like(a) for a in params]
    for start in range(0, n, chunk):
        part, part_masks = features[start:start + chunk], masks[start:start + chunk]
        weight = part.shape[0] / n  # the mean over all images from chunk means
        shifted = _shifted(part, params.filters.shape[-1])
        cost = _data_term(shifted, params.filters, params.bias)
        z, tape = unrolled_passes.forward(cost, params, store=True)
        loss, grad_z = unrolled_passes.loss(z, part_masks)
        g_cost, g_tau, g_sigma, g_weight = unrolled_passes.backward(cost, params, tape, grad_z)
        total = total + weight * loss
        for i, g in enumerate((xp.einsum("nxy,nkabxy->kab", g_cost, shifted), xp.sum(g_cost), g_tau,
                               g_sigma, g_weight)):
            grads[i] = _add_scaled(grads[i], weight, g)
    return total, UnrolledParameters(*grads)


@fusion.elementwise
def _add_scaled(xp, total, weight, g):
    return total + weight * g


@fusion.elementwise
def _adam_step(xp, value, first, second, g, beta1, rest1, beta2, rest2, learning_rate, correction1, correction2):
    """Adam's moments and step for one parameter array (one kernel on a GPU, the same floats elsewhere).

    ``rest1 = 1 - β₁`` and ``rest2 = 1 - β₂`` come from the host: inside cupy.fuse an operation between
    two Python numbers runs in float16 (see :mod:`mbook.core.fusion`)."""
    first = beta1 * first + rest1 * g
    second = beta2 * second + rest2 * g * g
    return first, second, value - learning_rate * (first / correction1) / (xp.sqrt(second / correction2) + 1e-8)


# ---------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------
def data_term(features, params):
    """The data term ``c`` of every pixel: the filter bank applied to the features, plus the bias.

    Parameters
    ----------
    features : (N, C, nx, ny) array
        Feature maps.
    params : UnrolledParameters

    Returns
    -------
    (N, nx, ny) array
        On the selected device.
    """
    features = _check_features(features)
    params = _check_parameters(params, features.shape[1])
    chunk = progress.plan_batches(n_items=features.shape[0], bytes_per_item=_bytes_per_image(features, params))
    xp = backend.get_array_module(features)
    return xp.concatenate([_data_term(_shifted(features[s:s + chunk], params.filters.shape[-1]), params.filters,
                                      params.bias) for s in range(0, features.shape[0], chunk)])


def segment(features, params, *, soft: bool = False):
    """Run the network: the segmentation of every image.

    Parameters
    ----------
    features : (N, C, nx, ny) array
        Feature maps.
    params : UnrolledParameters
    soft : bool
        Return the soft segmentation ``clip(z_K, 0, 1)`` instead of the mask ``z_K > 1/2``.

    Returns
    -------
    (N, nx, ny) array
        Boolean masks (or values in [0, 1]), on the selected device.
    """
    features = _check_features(features)
    params = _check_parameters(params, features.shape[1])
    xp = backend.get_array_module(features)
    chunk = progress.plan_batches(n_items=features.shape[0], bytes_per_item=_bytes_per_image(features, params))
    parts = []
    for start in range(0, features.shape[0], chunk):
        part = features[start:start + chunk]
        cost = _data_term(_shifted(part, params.filters.shape[-1]), params.filters, params.bias)
        z, _ = unrolled_passes.forward(cost, params, store=False)
        parts.append(xp.clip(z, 0.0, 1.0) if soft else z > 0.5)
    return xp.concatenate(parts)


def loss_and_gradient(features, masks, params):
    """The training loss and its gradient in every parameter, by the reverse pass through the layers.

    The loss is the mean binary cross-entropy of the logits ``KAPPA (z_K - 1/2)`` against the
    masks. The forward pass stores the iterates of every layer (``u``, ``ū``, the dual step before
    projection, ``z``); the reverse pass applies the transposed Jacobian of each step. Images are
    processed in chunks that fit the memory budget.

    Parameters
    ----------
    features : (N, C, nx, ny) array
        Feature maps.
    masks : (N, nx, ny) array of 0 and 1 (or bool)
        Foreground masks.
    params : UnrolledParameters

    Returns
    -------
    loss : () array
        On the selected device.
    gradient : UnrolledParameters
        ``∂loss/∂`` each parameter (``log_tau`` etc.: with respect to the logarithms).
    """
    features, masks = _check_features(features, masks)
    params = _check_parameters(params, features.shape[1])
    chunk = progress.plan_batches(n_items=features.shape[0], bytes_per_item=_bytes_per_image(features, params))
    return _loss_and_gradient(features, masks, params, chunk)


def train(features, masks, params, *, num_steps: int, learning_rate: float = 0.02, batch_size: int = 8,
          seed: int = 0, betas=(0.9, 0.999), show_progress: bool = True) -> TrainResult:
    """Train the network by Adam on mini-batches of images.

    Adam (Kingma and Ba 2015) with bias correction, the same step for every parameter array:
    ``m ← β₁ m + (1 - β₁) g``, ``v ← β₂ v + (1 - β₂) g²``,
    ``θ ← θ - η m̂ / (sqrt(v̂) + 1e-8)``. Each step draws ``batch_size`` images without
    replacement (host draws from ``seed``, moved as indices); the losses are recorded on the device.

    Parameters
    ----------
    features : (N, C, nx, ny) array
        Training feature maps.
    masks : (N, nx, ny) array
        Training masks (0/1).
    params : UnrolledParameters
        Starting point (e.g. :func:`init_parameters`).
    num_steps : int
        Adam steps.
    learning_rate : float
        Adam's step ``η`` > 0.
    batch_size : int
        Images per step (at most N).
    seed : int
        Seed of the mini-batch draws.
    betas : (float, float)
        Adam's decay rates, in [0, 1).
    show_progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult
    """
    features, masks = _check_features(features, masks)
    params = _check_parameters(params, features.shape[1])
    num_steps = checks.check_iterations(num_steps, "num_steps")
    learning_rate = checks.check_positive_number(learning_rate, "learning_rate")
    batch_size = checks.check_count(batch_size, "batch_size", maximum=features.shape[0])
    beta1, beta2 = (checks.check_number(b, "betas", lower=0, upper=1, upper_inclusive=False)
                    for b in checks.as_tuple(betas, "betas", 2))
    xp = backend.get_array_module(features)
    chunk = progress.plan_batches(n_items=batch_size, bytes_per_item=_bytes_per_image(features, params))
    rng = checks.rng(seed)
    order = xp.asarray(np.stack([rng.choice(features.shape[0], batch_size, replace=False)
                                 for _ in range(num_steps)]))
    first = [xp.zeros_like(a) for a in params]
    second = [xp.zeros_like(a) for a in params]
    values = list(params)
    losses = []
    steps = progress.progress(range(num_steps), desc="training") if show_progress else range(num_steps)
    for step in steps:
        batch = order[step]
        loss, grads = _loss_and_gradient(features[batch], masks[batch], UnrolledParameters(*values), chunk)
        losses.append(loss)
        correction1, correction2 = 1.0 - beta1 ** (step + 1), 1.0 - beta2 ** (step + 1)
        for i, g in enumerate(grads):
            first[i], second[i], values[i] = _adam_step(values[i], first[i], second[i], g, beta1, 1.0 - beta1, beta2,
                                                        1.0 - beta2, learning_rate, correction1, correction2)
    return TrainResult(UnrolledParameters(*values), xp.stack(losses))


__all__ = ["KAPPA", "UnrolledParameters", "TrainResult", "init_parameters", "data_term", "segment",
           "loss_and_gradient", "train"]
