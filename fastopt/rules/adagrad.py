r"""AdaGrad: per-coordinate step sizes from the running sum of squared gradients.

Update rule (torch.optim.Adagrad, step :math:`t = 1, 2, \dots`):

.. math::

    g_t &\leftarrow -g_t \quad \text{if maximize}, \qquad g_t \leftarrow g_t + \lambda \theta_{t-1} \\
    \tilde\gamma &= \gamma / (1 + (t - 1) \eta) \\
    s_t &= s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
    \theta_t &= \theta_{t-1} - \tilde\gamma \, g_t / (\sqrt{s_t} + \epsilon)

with ``lr`` :math:`\gamma`, ``lr_decay`` :math:`\eta`, ``weight_decay`` :math:`\lambda`.

optax: ``optax.adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7)`` --
optax's defaults differ (torch: 0 and 1e-10) and optax puts eps inside the square
root, :math:`g_t / \sqrt{s_t + \epsilon}`. Its exact equivalent here is
``initial_accumulator_value=0.1 + 1e-7, eps=0.0`` (the accumulator started at optax's
initial value plus its eps); ``initial_accumulator_value=0.1, eps=1e-7`` is only close
(step sizes differ by a relative :math:`\sim\epsilon / \sqrt{s_t}`).
"""

import numpy as np
from numba import prange

from .._jit import kernel, parallel_kernel
from .._layout import STEP
from ._spec import Rule, check_range


@kernel
def adagrad_coord(p, g, state_sum, clr, weight_decay, eps, maximize):
    """The AdaGrad rule for one coordinate: returns the new ``(param, sum)``."""
    gi = -g if maximize else g
    if weight_decay != 0.0:
        gi = gi + weight_decay * p
    s = state_sum + gi * gi
    std = np.sqrt(s) + eps
    return p + (-clr) * gi / std, s


@kernel
def adagrad_clr(t, lr, lr_decay):
    """Learning rate of step ``t``: ``lr / (1 + (t - 1) lr_decay)``."""
    return lr / (1 + (t - 1) * lr_decay)


@kernel
def adagrad_elementwise(param, grad, state_sum, clr, weight_decay, eps, maximize):
    """Apply :func:`adagrad_coord` to every element with the decayed rate ``clr``."""
    for i in range(param.size):
        param[i], state_sum[i] = adagrad_coord(param[i], grad[i], state_sum[i], clr,
                                               weight_decay, eps, maximize)


@kernel
def adagrad_update(param, grad, step, state_sum, lr, lr_decay, weight_decay, eps, maximize):
    """One AdaGrad step in place; ``step`` is a 1-element int64 counter."""
    step[0] += 1
    clr = adagrad_clr(step[0], lr, lr_decay)
    adagrad_elementwise(param, grad, state_sum, clr, weight_decay, eps, maximize)


@parallel_kernel
def adagrad_update_parallel(param, grad, step, state_sum, lr, lr_decay, weight_decay, eps,
                            maximize):
    """Multithreaded :func:`adagrad_update`; identical numerics."""
    step[0] += 1
    clr = adagrad_clr(step[0], lr, lr_decay)
    for i in prange(param.size):
        param[i], state_sum[i] = adagrad_coord(param[i], grad[i], state_sum[i], clr,
                                               weight_decay, eps, maximize)


@kernel
def _update_block(X, G, S, H, step, active, scratch):
    """One step for a block of starts: ``X``, ``G`` (d, B), ``S`` (1, d, B), ``H`` (n_hyper, B)."""
    d, B = X.shape
    for b in range(B):
        scratch[0, b] = adagrad_clr(step[b], H[0, b], H[1, b])
    for i in range(d):
        for b in range(B):
            p, s = adagrad_coord(X[i, b], G[i, b], S[0, i, b], scratch[0, b], H[2, b], H[4, b],
                                 H[5, b] != 0.0)
            keep = active[b]
            X[i, b] = p if keep else X[i, b]
            S[0, i, b] = s if keep else S[0, i, b]


def _init(state, hyper, matrices):
    """Start the sum at initial_accumulator_value (state: (N, 1, d))."""
    state[:, 0, :] = hyper[:, 3, None]


@kernel
def _update(x, g, state, hyper, counters):
    adagrad_update(x, g, counters[STEP:STEP + 1], state[0], hyper[0], hyper[1], hyper[2],
                   hyper[4], hyper[5] != 0.0)


def _validate(v):
    check_range("learning rate lr", v["lr"], 0.0, low_inclusive=False)
    check_range("lr_decay", v["lr_decay"], 0.0)
    check_range("weight_decay", v["weight_decay"], 0.0)
    check_range("initial_accumulator_value", v["initial_accumulator_value"], 0.0)
    check_range("epsilon eps", v["eps"], 0.0)


ADAGRAD_RULE = Rule(
    name="adagrad",
    hyperparameters=("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                     "maximize"),
    defaults={"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
              "initial_accumulator_value": 0.0, "eps": 1e-10, "maximize": False},
    validate=_validate,
    n_state=lambda d, v: 1,
    init=_init,
    update=_update,
    update_block=_update_block,
    block_scratch_rows=1,
)
