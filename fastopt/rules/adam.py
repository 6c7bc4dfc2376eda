r"""Adam, AdamW and AMSGrad.

Update rule (torch.optim.Adam / torch.optim.AdamW, step :math:`t = 1, 2, \dots`):

.. math::

    g_t &\leftarrow -g_t \quad \text{if maximize} \\
    g_t &\leftarrow g_t + \lambda \theta_{t-1} \ \text{(Adam)}, \qquad
        \theta_{t-1} \leftarrow (1 - \gamma\lambda)\,\theta_{t-1} \ \text{(AdamW)} \\
    m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}) \\
    v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \qquad \hat v_t = v_t \ \text{(otherwise)} \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
        \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

optax: ``optax.adam(learning_rate, b1, b2, eps)`` (AMSGrad: ``optax.amsgrad``, AdamW:
``optax.adamw(learning_rate, b1, b2, eps, weight_decay)``; optax's adamw default
weight decay is 1e-4, torch's 1e-2). optax's AMSGrad takes the maximum of the
bias-corrected second moment, torch (and fastopt) of the raw one.
"""

import numpy as np
from numba import prange

from .._jit import kernel, parallel_kernel
from .._layout import STEP
from ._spec import Rule, check_range

PARALLEL_CHUNK = 1 << 15


@kernel
def adam_elementwise(lo, hi, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1,
                     beta2, eps, weight_decay, amsgrad, maximize, decoupled, step_size,
                     bias_correction2_sqrt):
    """Apply the Adam rule to elements ``lo:hi`` given the step's bias corrections."""
    one_minus_beta1 = 1.0 - beta1
    one_minus_beta2 = 1.0 - beta2
    decay_factor = 1.0 - lr * weight_decay
    for i in range(lo, hi):
        gi = -grad[i] if maximize else grad[i]
        p = param[i]
        if weight_decay != 0.0:
            if decoupled:
                p = p * decay_factor
            else:
                gi = gi + weight_decay * p
        m = exp_avg[i]
        if one_minus_beta1 < 0.5:  # torch.lerp's two formulas
            m = m + one_minus_beta1 * (gi - m)
        else:
            m = gi - (gi - m) * (1.0 - one_minus_beta1)
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * gi * gi
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        denom = np.sqrt(v) / bias_correction2_sqrt + eps
        param[i] = p + (-step_size) * m / denom


@kernel
def adam_step_sizes(t, lr, beta1, beta2):
    """Return ``(lr / (1 - beta1**t), sqrt(1 - beta2**t))`` as torch computes them."""
    bias_correction1 = 1.0 - beta1 ** float(t)
    bias_correction2 = 1.0 - beta2 ** float(t)
    return lr / bias_correction1, bias_correction2**0.5


@kernel
def adam_update(param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
                weight_decay, amsgrad, maximize, decoupled):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place.

    ``step`` is a 1-element int64 counter; ``max_exp_avg_sq`` may be empty unless
    ``amsgrad``. Callable from user ``@njit`` code.
    """
    step[0] += 1
    step_size, bc2_sqrt = adam_step_sizes(step[0], lr, beta1, beta2)
    adam_elementwise(0, param.size, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1,
                     beta2, eps, weight_decay, amsgrad, maximize, decoupled, step_size, bc2_sqrt)


@parallel_kernel
def adam_update_parallel(param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1,
                         beta2, eps, weight_decay, amsgrad, maximize, decoupled):
    """Multithreaded :func:`adam_update`; identical numerics."""
    step[0] += 1
    step_size, bc2_sqrt = adam_step_sizes(step[0], lr, beta1, beta2)
    n = param.size
    for c in prange((n + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        adam_elementwise(c * PARALLEL_CHUNK, min(n, (c + 1) * PARALLEL_CHUNK), param, grad,
                         exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
                         weight_decay, amsgrad, maximize, decoupled, step_size, bc2_sqrt)


@kernel
def _update_adam(x, g, state, hyper, counters):
    adam_update(x, g, counters[STEP:STEP + 1], state[0], state[1], state[2], hyper[0],
                hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, False)


@kernel
def _update_adamw(x, g, state, hyper, counters):
    adam_update(x, g, counters[STEP:STEP + 1], state[0], state[1], state[2], hyper[0],
                hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, True)


def _validate(v):
    check_range("learning rate lr", v["lr"], 0.0, low_inclusive=False)
    check_range("epsilon eps", v["eps"], 0.0)
    check_range("beta parameter at index 0 (betas[0])", v["beta1"], 0.0, 1.0)
    check_range("beta parameter at index 1 (betas[1])", v["beta2"], 0.0, 1.0)
    check_range("weight_decay", v["weight_decay"], 0.0)


_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize")
_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": False, "maximize": False}

ADAM_RULE = Rule(name="adam", hyperparameters=_HYPER, defaults=_DEFAULTS, validate=_validate,
                 n_state=lambda d, v: 3, update=_update_adam)
ADAMW_RULE = ADAM_RULE._replace(name="adamw", defaults={**_DEFAULTS, "weight_decay": 1e-2},
                                update=_update_adamw)
