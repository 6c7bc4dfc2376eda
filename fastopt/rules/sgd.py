r"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

Update rule (torch.optim.SGD, step :math:`t = 1, 2, \dots`):

.. math::

    g_t &\leftarrow -g_t \quad \text{if maximize} \\
    g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
    b_t &= g_t \ (t = 1), \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t \ (t > 1) \\
    g_t &\leftarrow g_t + \mu b_t \ \text{(nesterov)}, \qquad g_t \leftarrow b_t \ \text{(momentum} \ne 0) \\
    \theta_t &= \theta_{t-1} - \gamma g_t

with learning rate :math:`\gamma` (``lr``), momentum :math:`\mu`, dampening
:math:`\tau` and weight decay :math:`\lambda`.

optax: ``optax.sgd(learning_rate, momentum, nesterov)``. optax's trace starts from
zero, so its first momentum step is :math:`g_1` as torch's; it has no dampening.
"""

import numpy as np
from numba import prange

from .._jit import kernel, parallel_kernel
from .._layout import STEP
from ._spec import Rule, check_range


@kernel
def sgd_coord(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    """The SGD rule for one coordinate: returns the new ``(param, momentum_buffer)``."""
    d_p = -g if maximize else g
    if weight_decay != 0.0:
        d_p = d_p + weight_decay * p
    if momentum != 0.0:
        if first_step:
            buf = d_p
        else:
            buf = momentum * buf + (1.0 - dampening) * d_p
        if nesterov:
            d_p = d_p + momentum * buf
        else:
            d_p = buf
    return p + (-lr) * d_p, buf


@kernel
def sgd_elementwise(param, grad, momentum_buffer, lr, momentum, dampening,
                    weight_decay, nesterov, maximize, first_step):
    """Apply :func:`sgd_coord` to every element."""
    for i in range(param.size):
        buf = momentum_buffer[i] if momentum != 0.0 else 0.0
        param[i], buf = sgd_coord(param[i], grad[i], buf, lr, momentum, dampening,
                                  weight_decay, nesterov, maximize, first_step)
        if momentum != 0.0:
            momentum_buffer[i] = buf


@kernel
def sgd_update(param, grad, step, momentum_buffer, lr, momentum, dampening, weight_decay,
               nesterov, maximize):
    """One SGD step on ``param`` in place.

    ``step`` is a 1-element int64 counter (incremented here); ``momentum_buffer``
    may be empty when ``momentum == 0``. Callable from user ``@njit`` code.
    """
    step[0] += 1
    sgd_elementwise(param, grad, momentum_buffer, lr, momentum, dampening,
                    weight_decay, nesterov, maximize, step[0] == 1)


@parallel_kernel
def sgd_update_parallel(param, grad, step, momentum_buffer, lr, momentum, dampening,
                        weight_decay, nesterov, maximize):
    """Multithreaded :func:`sgd_update` for large vectors; identical numerics.

    One ``prange`` over the elements per buffer layout: a load under a condition
    inside numba's parallel loop keeps LLVM from vectorizing it (see
    :func:`fastopt.rules.adam.adam_update_parallel`).
    """
    step[0] += 1
    first = step[0] == 1
    if momentum != 0.0:
        for i in prange(param.size):
            param[i], momentum_buffer[i] = sgd_coord(
                param[i], grad[i], momentum_buffer[i], lr, momentum, dampening, weight_decay,
                nesterov, maximize, first)
    else:
        for i in prange(param.size):
            param[i], _ = sgd_coord(param[i], grad[i], 0.0, lr, 0.0, dampening, weight_decay,
                                    nesterov, maximize, first)


@kernel
def _update(x, g, state, hyper, counters):
    sgd_update(x, g, counters[STEP:STEP + 1], state[0], hyper[0], hyper[1], hyper[2],
               hyper[3], hyper[4] != 0.0, hyper[5] != 0.0)


@kernel
def _update_block(X, G, S, H, step, active, scratch):
    """One step for a block of starts: ``X``, ``G`` (d, B), ``S`` (1, d, B), ``H`` (n_hyper, B)."""
    d, B = X.shape
    for i in range(d):
        for b in range(B):
            p, buf = sgd_coord(X[i, b], G[i, b], S[0, i, b], H[0, b], H[1, b], H[2, b], H[3, b],
                               H[4, b] != 0.0, H[5, b] != 0.0, step[b] == 1)
            keep = active[b]
            X[i, b] = p if keep else X[i, b]
            S[0, i, b] = buf if keep else S[0, i, b]


def _validate(v):
    check_range("learning rate lr", v["lr"], 0.0, low_inclusive=False)
    check_range("momentum", v["momentum"], 0.0)
    check_range("dampening", v["dampening"], 0.0, 1.0, high_inclusive=True)
    check_range("weight_decay", v["weight_decay"], 0.0)
    if np.any((v["nesterov"] != 0) & ((v["momentum"] <= 0) | (v["dampening"] != 0))):
        raise ValueError(
            "Invalid nesterov=True: Nesterov momentum requires a momentum > 0 and zero dampening"
        )


SGD_RULE = Rule(
    name="sgd",
    hyperparameters=("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    defaults={"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
              "nesterov": False, "maximize": False},
    validate=_validate,
    n_state=lambda d, v: 1,
    update=_update,
    update_block=_update_block,
)
