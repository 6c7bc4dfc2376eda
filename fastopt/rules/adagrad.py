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
root; pass ``initial_accumulator_value=0.1, eps=1e-7`` here for a close match.
"""

import numpy as np
from numba import prange

from .._jit import kernel, parallel_kernel
from .._layout import STEP
from ._spec import Rule, check_range

PARALLEL_CHUNK = 1 << 15


@kernel
def adagrad_elementwise(lo, hi, param, grad, state_sum, clr, weight_decay, eps, maximize):
    """Apply the AdaGrad rule to elements ``lo:hi`` with the decayed rate ``clr``."""
    for i in range(lo, hi):
        gi = -grad[i] if maximize else grad[i]
        if weight_decay != 0.0:
            gi = gi + weight_decay * param[i]
        s = state_sum[i] + gi * gi
        state_sum[i] = s
        std = np.sqrt(s) + eps
        param[i] = param[i] + (-clr) * gi / std


@kernel
def adagrad_update(param, grad, step, state_sum, lr, lr_decay, weight_decay, eps, maximize):
    """One AdaGrad step in place; ``step`` is a 1-element int64 counter."""
    step[0] += 1
    clr = lr / (1 + (step[0] - 1) * lr_decay)
    adagrad_elementwise(0, param.size, param, grad, state_sum, clr, weight_decay, eps, maximize)


@parallel_kernel
def adagrad_update_parallel(param, grad, step, state_sum, lr, lr_decay, weight_decay, eps,
                            maximize):
    """Multithreaded :func:`adagrad_update`; identical numerics."""
    step[0] += 1
    clr = lr / (1 + (step[0] - 1) * lr_decay)
    n = param.size
    for c in prange((n + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        adagrad_elementwise(c * PARALLEL_CHUNK, min(n, (c + 1) * PARALLEL_CHUNK), param, grad,
                            state_sum, clr, weight_decay, eps, maximize)


def _init(state, hyper):
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
)
