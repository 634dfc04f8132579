"""The unrolled PDHG network's passes: forward through its K layers, the loss, and the reverse pass.

Kernels of :mod:`mbook.learning.unrolled`, which checks the inputs: no checks
here, everything on the inputs' device. Layer ``k`` is one PDHG iteration of
the convex relaxation of two-region segmentation with learned steps
``τ_k, σ_k`` and boundary weight ``λ_k``:

``q_k = p_{k-1} + σ_k ∇ū_{k-1}``, ``p_k = Π_{λ_k}(q_k)``,
``z_k = u_{k-1} - τ_k (c - div p_k)``, ``u_k = clip(z_k, 0, 1)``, ``ū_k = 2 u_k - u_{k-1}``.

The reverse pass differentiates each step by hand (checked against finite
differences in ``tests/test_learning.py``). On a GPU each layer's element-wise
work is a few fused kernels (:mod:`mbook.core.fusion`) around the finite
differences: the images are small, and a layer's twenty-odd separate
operations would spend the GPU's time launching kernels.
"""

from __future__ import annotations

from mbook.core import backend, fusion
from mbook.inverse import optimize

#: The logits of the loss are ``KAPPA (z_K - 1/2)``: z_K = 0 and 1 become logits of ∓KAPPA/2.
KAPPA = 8.0


def forward(cost, params, store):
    """The K layers: the last pre-projection step ``z_K`` and, with ``store``, the tape of iterates.

    A kernel (no checks): ``cost`` ``(n, nx, ny)`` and ``params`` (an :class:`UnrolledParameters` whose
    arrays are on ``cost``'s device) as :mod:`mbook.learning.unrolled` checked them.
    """
    xp = backend.get_array_module(cost)
    taus, sigmas, weights = xp.exp(params.log_tau), xp.exp(params.log_sigma), xp.exp(params.log_weight)
    u = xp.full(cost.shape, 0.5, dtype=cost.dtype)
    u_bar = u
    p0 = p1 = xp.zeros(cost.shape, dtype=cost.dtype)
    tape, z = [], None
    # A layer: the gradient and the divergence (one stencil kernel each on a GPU; the field's components
    # kept apart, not stacked) and two fused kernels for the element-wise rest.
    for k in range(params.log_tau.shape[0]):
        g = optimize.gradient(u_bar)
        q0, q1, p0, p1, _ = _dual_layer(p0, p1, g[0], g[1], sigmas[k], weights[k])
        z, u_new, u_bar_new = _primal_layer(u, cost, optimize.divergence_xy(p0, p1), taus[k])
        if store:
            tape.append((u, u_bar, (q0, q1), z))
        u_bar = u_bar_new
        u = u_new
    return z, tape


def _ball_projection(xp, q0, q1, weight):
    """Projection of each 2-vector ``(q0, q1)`` onto the ball of radius ``weight``, and ``|q|``."""
    norm = xp.sqrt(q0 ** 2 + q1 ** 2)
    scale = xp.maximum(norm / weight, 1.0)
    return q0 / scale, q1 / scale, norm


_ball = fusion.elementwise(_ball_projection)


@fusion.elementwise
def _dual_layer(xp, p0, p1, g0, g1, sigma, weight):
    """``q = p + σ ∇ū`` and its projection onto the ball of radius ``weight`` (per component), and ``|q|``."""
    q0 = p0 + sigma * g0
    q1 = p1 + sigma * g1
    return (q0, q1) + _ball_projection(xp, q0, q1, weight)


@fusion.elementwise
def _primal_layer(xp, u, cost, divergence_p, tau):
    """``z = u - τ (c - div p)``, ``u_new = clip(z, 0, 1)`` and ``ū = 2 u_new - u``."""
    z = u - tau * (cost - divergence_p)
    u_new = xp.minimum(xp.maximum(z, 0.0), 1.0)
    return z, u_new, 2.0 * u_new - u


@fusion.elementwise
def _clip_backward(xp, g_u, g_ubar, z):
    """``∂L/∂z_k`` through ``u_k = clip(z_k, 0, 1)`` and ``ū_k = 2 u_k - u_{k-1}``, and ``∂L/∂u_{k-1}``."""
    g_z = (g_u + 2.0 * g_ubar) * ((z > 0) & (z < 1))
    return g_z, -g_ubar + g_z


@fusion.elementwise
def _clip_backward_last(xp, g_u, g_ubar, z, grad_z):
    """:func:`_clip_backward` for the last layer, whose ``z_K`` the loss also reads."""
    g_z = (g_u + 2.0 * g_ubar) * ((z > 0) & (z < 1)) + grad_z
    return g_z, -g_ubar + g_z


@fusion.elementwise
def _times_difference(xp, g_z, cost, divergence_p):
    return g_z * (cost - divergence_p)


@fusion.elementwise
def _minus_scaled(xp, a, scale, b):
    return a - scale * b


@fusion.elementwise
def _ball_backward(xp, q0, q1, norm, gp0, gp1, grad0, grad1, tau, weight):
    """``∂L/∂q`` through ``p = Π_λ(q)`` (identity inside the ball, ``λ q/|q|`` outside), and the radial part.

    ``∂L/∂p`` is ``g_p - τ ∇(∂L/∂z)`` (``div* = -∇``), given by components.
    """
    g0 = gp0 - tau * grad0
    g1 = gp1 - tau * grad1
    outside = norm > weight
    safe = xp.where(outside, norm, 1.0)
    unit0 = q0 / safe
    unit1 = q1 / safe
    radial = unit0 * g0 + unit1 * g1
    scale = weight / safe
    return (xp.where(outside, scale * (g0 - unit0 * radial), g0),
            xp.where(outside, scale * (g1 - unit1 * radial), g1),
            xp.where(outside, radial, 0.0))


def loss(z, masks):
    """Mean binary cross-entropy of the logits ``KAPPA (z - 1/2)`` against ``masks``, and its gradient in z.

    A kernel (no checks): ``z`` and ``masks`` ``(n, nx, ny)`` on one device; returns a 0-d array and
    ``(n, nx, ny)``.
    """
    xp = backend.get_array_module(z)
    logits = KAPPA * (z - 0.5)
    softplus = xp.maximum(logits, 0) + xp.log1p(xp.exp(-xp.abs(logits)))  # log(1 + e^a), stably
    loss = xp.mean(softplus - masks * logits)
    probability = 1.0 / (1.0 + xp.exp(-logits))
    return loss, KAPPA * (probability - masks) / masks.size


def backward(cost, params, tape, grad_z):
    """Reverse pass through the layers: gradients of the loss in ``c`` and the per-layer logs.

    A kernel (no checks): ``tape`` from :func:`forward` with ``store``, ``grad_z`` the loss's gradient in
    ``z_K`` (:func:`loss`). Returns ``∂L/∂c`` ``(n, nx, ny)`` and the gradients in ``log τ``, ``log σ``
    and ``log λ`` ``(K,)``.
    """
    xp = backend.get_array_module(cost)
    taus, sigmas, weights = xp.exp(params.log_tau), xp.exp(params.log_sigma), xp.exp(params.log_weight)
    minus_sigmas = -sigmas  # once, not a negation a layer
    num_layers = len(tape)
    g_tau, g_sigma, g_weight = ([None] * num_layers for _ in range(3))
    g_u = xp.zeros_like(cost)  # ∂L/∂u_k, ∂L/∂ū_k, ∂L/∂p_k from the layers after k
    g_ubar = xp.zeros_like(cost)
    g_p = xp.zeros((2,) + cost.shape, dtype=cost.dtype)
    g_cost = xp.zeros_like(cost)
    for k in range(num_layers - 1, -1, -1):
        u_prev, ubar_prev, (q0, q1), z = tape[k]
        if k == num_layers - 1:
            g_z, g_u_prev = _clip_backward_last(g_u, g_ubar, z, grad_z)
        else:
            g_z, g_u_prev = _clip_backward(g_u, g_ubar, z)
        p0, p1, norm = _ball(q0, q1, weights[k])  # p_k = Π(q_k) again
        # z_k = u_{k-1} - τ (c - div p_k)
        g_tau[k] = xp.sum(_times_difference(g_z, cost, optimize.divergence_xy(p0, p1)))  # negated at the end
        g_cost = _minus_scaled(g_cost, taus[k], g_z)
        # p_k = Π_λ(q_k): the identity inside the ball, λ q/|q| outside
        grad_gz = optimize.gradient(g_z)
        g_q0, g_q1, radial = _ball_backward(q0, q1, norm, g_p[0], g_p[1], grad_gz[0], grad_gz[1], taus[k],
                                            weights[k])
        g_q = xp.stack([g_q0, g_q1])
        g_weight[k] = xp.sum(radial)
        # q_k = p_{k-1} + σ ∇ū_{k-1}
        g_sigma[k] = xp.sum(g_q * optimize.gradient(ubar_prev))
        g_p = g_q
        g_ubar = minus_sigmas[k] * optimize.divergence(g_q)  # ∇* = -div
        g_u = g_u_prev
    stack = xp.stack
    return g_cost, -stack(g_tau) * taus, stack(g_sigma) * sigmas, stack(g_weight) * weights
