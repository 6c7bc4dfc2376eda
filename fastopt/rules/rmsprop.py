r"""RMSProp: gradient scaled by a running root-mean-square, optional momentum and centering.

Update rule (torch.optim.RMSprop, step :math:`t = 1, 2, \dots`):

.. math::

    g_t &\leftarrow -g_t \quad \text{if maximize}, \qquad g_t \leftarrow g_t + \lambda \theta_{t-1} \\
    v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
    \bar g_t &= \bar g_{t-1} + (1 - \alpha)(g_t - \bar g_{t-1}) \quad \text{(centered)} \\
    a_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}, \qquad a_t = \sqrt{v_t} + \epsilon \\
    b_t &= \mu b_{t-1} + g_t / a_t, \quad \theta_t = \theta_{t-1} - \gamma b_t \quad (\mu > 0) \\
    \theta_t &= \theta_{t-1} - \gamma g_t / a_t \quad (\mu = 0)

optax: ``optax.rmsprop(learning_rate, decay=0.9, eps=1e-8, centered, momentum)``;
optax's default decay is 0.9 (torch's alpha 0.99), and optax puts eps inside the
square root by default (``eps_in_sqrt=True``); ``eps_in_sqrt=False`` is this rule.
"""

import numpy as np
from numba import prange

from .._jit import called_kernel, kernel, parallel_kernel
from .._layout import STEP
from ._spec import Rule, check_range


@kernel
def rmsprop_coord(p, g, square_avg, buf, grad_avg, lr, alpha, eps, weight_decay, momentum,
                  centered, maximize):
    """The RMSProp rule for one coordinate: returns ``(param, square_avg, buf, grad_avg)``."""
    one_minus_alpha = 1.0 - alpha
    gi = -g if maximize else g
    if weight_decay != 0.0:
        gi = gi + weight_decay * p
    sq = square_avg * alpha + one_minus_alpha * gi * gi
    if centered:
        ga = grad_avg
        if one_minus_alpha < 0.5:  # torch.lerp's two formulas
            ga = ga + one_minus_alpha * (gi - ga)
        else:
            ga = gi - (gi - ga) * (1.0 - one_minus_alpha)
        grad_avg = ga
        avg = np.sqrt(sq + (-1.0 * ga) * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    # torch divides g by avg with momentum and (-lr) g without: one division, whichever
    # (a vector loop computes both sides of a branch, and the divider bounds it)
    quotient = (gi if momentum > 0.0 else (-lr) * gi) / avg
    if momentum > 0.0:
        buf = buf * momentum + quotient
        p = p + (-lr) * buf
    else:
        p = p + quotient
    return p, sq, buf, grad_avg


@kernel
def rmsprop_elementwise(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha,
                        eps, weight_decay, momentum, centered, maximize):
    """Apply :func:`rmsprop_coord` to every element (unused buffers may be empty)."""
    for i in range(param.size):
        buf = momentum_buffer[i] if momentum > 0.0 else 0.0
        ga = grad_avg[i] if centered else 0.0
        param[i], square_avg[i], buf, ga = rmsprop_coord(
            param[i], grad[i], square_avg[i], buf, ga, lr, alpha, eps, weight_decay, momentum,
            centered, maximize)
        if momentum > 0.0:
            momentum_buffer[i] = buf
        if centered:
            grad_avg[i] = ga


@kernel
def rmsprop_update(param, grad, step, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                   weight_decay, momentum, centered, maximize):
    """One RMSProp step in place; unused buffers may be empty arrays."""
    step[0] += 1
    rmsprop_elementwise(param, grad, square_avg, momentum_buffer, grad_avg, lr,
                        alpha, eps, weight_decay, momentum, centered, maximize)


@kernel
def rmsprop_loops(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                  weight_decay, momentum, centered, maximize):
    """:func:`rmsprop_coord` over every element in one ``prange`` per buffer layout
    (unused buffers may be empty): a ``range`` in a serial caller.

    A buffer read under a condition, as in :func:`rmsprop_elementwise`, leaves it to
    LLVM whether to unswitch the loop on that condition before vectorizing it, which it
    does or not as the loop's size and the options go: with momentum, that loop ran at
    3.9 against 1.3 ns per element.
    """
    if momentum > 0.0 and centered:
        for i in prange(param.size):
            param[i], square_avg[i], momentum_buffer[i], grad_avg[i] = rmsprop_coord(
                param[i], grad[i], square_avg[i], momentum_buffer[i], grad_avg[i], lr, alpha,
                eps, weight_decay, momentum, True, maximize)
    elif momentum > 0.0:
        for i in prange(param.size):
            param[i], square_avg[i], momentum_buffer[i], _ = rmsprop_coord(
                param[i], grad[i], square_avg[i], momentum_buffer[i], 0.0, lr, alpha, eps,
                weight_decay, momentum, False, maximize)
    elif centered:
        for i in prange(param.size):
            param[i], square_avg[i], _, grad_avg[i] = rmsprop_coord(
                param[i], grad[i], square_avg[i], 0.0, grad_avg[i], lr, alpha, eps,
                weight_decay, 0.0, True, maximize)
    else:
        for i in prange(param.size):
            param[i], square_avg[i], _, _ = rmsprop_coord(
                param[i], grad[i], square_avg[i], 0.0, 0.0, lr, alpha, eps, weight_decay, 0.0,
                False, maximize)


@called_kernel
def rmsprop_update_vector(param, grad, step, square_avg, momentum_buffer, grad_avg, lr, alpha,
                          eps, weight_decay, momentum, centered, maximize):
    """:func:`rmsprop_update` for a long vector, called from Python (the step API); the
    same bits. One loop per buffer layout (:func:`rmsprop_loops`). A user's ``@njit``
    loop over short vectors wants :func:`rmsprop_update`, which is inlined: inlined, the
    four loops here keep numba from pruning the arrays' reference counting (a 2-D step
    with momentum: 52 against 17 ns).
    """
    step[0] += 1
    rmsprop_loops(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                  weight_decay, momentum, centered, maximize)


@parallel_kernel
def rmsprop_update_parallel(param, grad, step, square_avg, momentum_buffer, grad_avg, lr,
                            alpha, eps, weight_decay, momentum, centered, maximize):
    """Multithreaded :func:`rmsprop_update`; identical numerics. One ``prange`` per buffer
    layout (:func:`rmsprop_loops`): a load under a condition inside numba's parallel loop
    keeps LLVM from vectorizing it (see :func:`fastopt.rules.adam.adam_update_parallel`).
    """
    step[0] += 1
    rmsprop_loops(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                  weight_decay, momentum, centered, maximize)


@kernel
def _update(x, g, state, hyper, counters):
    """The rule's step in the loops: one loop that reads and writes all three buffers
    (``state`` = square_avg, momentum_buffer, grad_avg; an unused one is written back
    unchanged), so that no load sits under a condition (see :func:`rmsprop_loops`)."""
    counters[STEP] += 1
    lr, alpha, eps, weight_decay, momentum = hyper[0], hyper[1], hyper[2], hyper[3], hyper[4]
    centered, maximize = hyper[5] != 0.0, hyper[6] != 0.0
    square_avg, momentum_buffer, grad_avg = state[0], state[1], state[2]
    for i in range(x.size):
        x[i], square_avg[i], momentum_buffer[i], grad_avg[i] = rmsprop_coord(
            x[i], g[i], square_avg[i], momentum_buffer[i], grad_avg[i], lr, alpha, eps,
            weight_decay, momentum, centered, maximize)


@kernel
def _update_block(X, G, S, H, step, active, scratch):
    """One step for a block of starts: ``X``, ``G`` (d, B), ``S`` (3, d, B), ``H`` (n_hyper, B)."""
    d, B = X.shape
    for i in range(d):
        for b in range(B):
            p, sq, buf, ga = rmsprop_coord(X[i, b], G[i, b], S[0, i, b], S[1, i, b], S[2, i, b],
                                           H[0, b], H[1, b], H[2, b], H[3, b], H[4, b],
                                           H[5, b] != 0.0, H[6, b] != 0.0)
            keep = active[b]
            X[i, b] = p if keep else X[i, b]
            S[0, i, b] = sq if keep else S[0, i, b]
            S[1, i, b] = buf if keep else S[1, i, b]
            S[2, i, b] = ga if keep else S[2, i, b]


def _validate(v):
    check_range("learning rate lr", v["lr"], 0.0, low_inclusive=False)
    check_range("alpha", v["alpha"], 0.0, 1.0, high_inclusive=True)
    check_range("epsilon eps", v["eps"], 0.0)
    check_range("weight_decay", v["weight_decay"], 0.0)
    check_range("momentum", v["momentum"], 0.0)


RMSPROP_RULE = Rule(
    name="rmsprop",
    hyperparameters=("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    defaults={"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
              "centered": False, "maximize": False},
    validate=_validate,
    n_state=lambda d, v: 3,
    update=_update,
    update_block=_update_block,
)
