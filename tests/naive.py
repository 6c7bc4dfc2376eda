r"""Plain-NumPy reference implementations of fastopt's first-order rules, schedules and clipping.

The pattern of stumpy's ``tests/naive.py``: slow, obvious, vectorised NumPy written from the
torch.optim documentation (the "Algorithm" box of each optimizer and its single-tensor
implementation) and the element-wise definitions of the ATen ops that implementation calls.
Nothing here imports fastopt or numba. Every function is pure: it returns new arrays and never
writes into its arguments.

The operations are written in torch's order, so that a correct kernel agrees with them to the
last bit (or within an ulp where a libm function is involved):

============================================  =========================================
torch                                         element-wise definition (ATen, CPU)
============================================  =========================================
``p.add_(t, alpha=a)``                        ``p + a * t``
``p.mul_(b).addcmul_(t1, t2, value=v)``       ``p * b + v * t1 * t2``
``p.addcdiv_(t1, t2, value=v)``               ``p + v * t1 / t2``
``p.lerp_(end, w)``                           ``p + w * (end - p)`` if ``|w| < 0.5`` else
                                              ``end - (end - p) * (1 - w)``
``torch.maximum(a, b)``                       NaN if either is NaN (``np.maximum``)
``torch.clamp(t, max=c)``                     NaN stays NaN (``np.minimum``)
============================================  =========================================

(ATen's vectorised CPU loops evaluate ``add``/``lerp`` with a fused multiply-add, so torch itself
differs from these by an ulp now and then; fastopt's kernels, like NumPy, never fuse.)

Rules take the state arrays by torch's names and ``step``, the 1-based number of the update
being made (torch's ``state["step"]`` after its increment), and return ``(param, *state)``.
"""

import functools
import math

import numpy as np

# ----------------------------------------------------------------------------- helpers


def _quiet(fn):
    """Run ``fn`` without NumPy's warnings: NaN and inf are inputs here, not accidents."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def lerp(start, end, weight):
    """``torch.lerp(start, end, weight)`` with ATen's two formulas (exact at both ends)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _signed(grad, maximize):
    return -grad if maximize else grad


# ----------------------------------------------------------------------------- rules


@_quiet
def sgd(param, grad, momentum_buffer, step, lr, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False):
    """torch.optim.SGD; returns ``(param, momentum_buffer)``.

    ``b_1 = g_1``; ``b_t = mu b_{t-1} + (1 - tau) g_t``; the step is along ``g + mu b``
    (Nesterov) or ``b`` (heavy ball), or ``g`` when ``momentum == 0``.
    """
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    buf = momentum_buffer
    if momentum != 0:
        if step == 1:
            buf = g.copy()
        else:
            buf = momentum_buffer * momentum + (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return param - lr * g, buf


@_quiet
def adagrad(param, grad, state_sum, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False):
    """torch.optim.Adagrad; returns ``(param, sum)``.

    ``lr_t = lr / (1 + (t - 1) lr_decay)``, ``s_t = s_{t-1} + g^2``,
    ``theta -= lr_t g / (sqrt(s_t) + eps)``.
    """
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    s = state_sum + g * g
    std = np.sqrt(s) + eps
    return param - clr * g / std, s


@_quiet
def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, step, lr, alpha=0.99, eps=1e-8,
            weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    """torch.optim.RMSprop; returns ``(param, square_avg, momentum_buffer, grad_avg)``.

    ``v_t = alpha v + (1 - alpha) g^2``; centered: ``m_t = lerp(m, g, 1 - alpha)`` and the
    denominator is ``sqrt(v_t - m_t^2) + eps``, else ``sqrt(v_t) + eps``; with momentum
    ``b_t = mu b + g / denom`` and ``theta -= lr b_t``, else ``theta -= lr g / denom``.
    ``step`` is unused (RMSprop has no bias correction); it is taken for a uniform signature.
    """
    del step
    g = _signed(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    v = square_avg * alpha + (1.0 - alpha) * g * g
    ga = grad_avg
    if centered:
        ga = lerp(grad_avg, g, 1.0 - alpha)
        denom = np.sqrt(v - ga * ga) + eps
    else:
        denom = np.sqrt(v) + eps
    buf = momentum_buffer
    if momentum > 0:
        buf = momentum_buffer * momentum + g / denom
        return param - lr * buf, v, buf, ga
    return param - lr * g / denom, v, buf, ga


@_quiet
def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1=0.9, beta2=0.999,
         eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False):
    """torch.optim.Adam (``decoupled=False``) / AdamW (``decoupled=True``), with AMSGrad.

    Returns ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq)``. Adam adds ``wd * theta`` to the
    gradient; AdamW first shrinks ``theta`` by ``1 - lr wd``. Then
    ``m_t = lerp(m, g, 1 - b1)``, ``v_t = b2 v + (1 - b2) g^2``, ``v_hat = max(v_hat, v_t)``
    (AMSGrad, on the raw moment) and
    ``theta -= lr / (1 - b1^t) * m_t / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)``.
    """
    g = _signed(grad, maximize)
    p = param
    if weight_decay != 0:
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = lerp(exp_avg, g, 1.0 - beta1)
    v = exp_avg_sq * beta2 + (1.0 - beta2) * g * g
    v_hat = v
    v_max = max_exp_avg_sq
    if amsgrad:
        v_max = np.maximum(max_exp_avg_sq, v)
        v_hat = v_max
    bias_correction1 = 1.0 - beta1 ** float(step)
    bias_correction2 = 1.0 - beta2 ** float(step)
    step_size = lr / bias_correction1
    denom = np.sqrt(v_hat) / bias_correction2**0.5 + eps
    return p - step_size * m / denom, m, v, v_max


def adamw(*args, **kwargs):
    """torch.optim.AdamW: :func:`adam` with decoupled weight decay."""
    return adam(*args, **kwargs, decoupled=True)


# Per rule: the function, its state arrays (torch's names, in the order the function takes
# and returns them) and its hyperparameters with torch's defaults.
RULES = {
    "sgd": (sgd, ("momentum_buffer",),
            {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
             "nesterov": False, "maximize": False}),
    "adagrad": (adagrad, ("sum",),
                {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "eps": 1e-10,
                 "maximize": False}),
    "rmsprop": (rmsprop, ("square_avg", "momentum_buffer", "grad_avg"),
                {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                 "centered": False, "maximize": False}),
    "adam": (adam, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
             {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
              "amsgrad": False, "maximize": False}),
    "adamw": (adamw, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
              {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2,
               "amsgrad": False, "maximize": False}),
}


def init_state(method, param, initial_accumulator_value=0.0):
    """Fresh state as torch creates it: zeros, Adagrad's sum at ``initial_accumulator_value``."""
    names = RULES[method][1]
    state = {name: np.zeros_like(param) for name in names}
    if method == "adagrad":
        state["sum"] = np.full_like(param, initial_accumulator_value)
    return state


def step(method, param, grad, state, t, **hyper):
    """Update number ``t`` (1-based) of ``method``: returns ``(param, new_state_dict)``.

    Hyperparameters not given take torch's defaults (``RULES``). ``hyper`` may hold
    Adagrad's ``initial_accumulator_value`` (used by :func:`init_state` only; ignored
    here) and ``betas`` for the Adam family.
    """
    fn, names, defaults = RULES[method]
    hyper = {**defaults, **hyper}
    hyper.pop("initial_accumulator_value", None)
    if "betas" in hyper:
        hyper["beta1"], hyper["beta2"] = hyper.pop("betas")
    out = fn(param, grad, *(state[name] for name in names), t, **hyper)
    return out[0], dict(zip(names, out[1:], strict=True))


def run(method, x0, grad_fn, n_steps, lr_at=None, clip_value=0.0, clip_norm=0.0, **hyper):
    """``n_steps`` updates from ``x0`` with gradients ``grad_fn(x)``.

    Returns the path, shape (n_steps + 1, d), and the final state dict.

    The hand-written driver loop: clip (by value, then by norm), set the learning rate of
    update ``k`` (``lr_at(k)``, 0-based, or the constant ``hyper["lr"]``), update.
    """
    x = np.array(x0, dtype=np.float64)
    state = init_state(method, x, hyper.get("initial_accumulator_value", 0.0))
    path = [x]
    for k in range(n_steps):
        g = grad_fn(x)
        if clip_value > 0:
            g = clip_by_value(g, clip_value)
        if clip_norm > 0:
            g = clip_by_norm(g, clip_norm)
        if lr_at is not None:
            hyper["lr"] = lr_at(k)
        x, state = step(method, x, g, state, k + 1, **hyper)
        path.append(x)
    return np.array(path), state


# ----------------------------------------------------------------------------- schedules


def constant_lr(lr, k):
    """The learning rate of update ``k`` (0-based, array or int) is ``lr``."""
    return np.full(np.shape(k), lr, dtype=np.float64)[()]


def exponential_lr(lr, k, gamma):
    """torch ExponentialLR in closed form: ``lr * gamma**k``."""
    return lr * np.power(gamma, np.asarray(k, dtype=np.float64))


def inverse_time_lr(lr, k, decay_rate, decay_steps=1.0):
    """Keras InverseTimeDecay: ``lr / (1 + decay_rate * k / decay_steps)``."""
    return lr / (1.0 + decay_rate * np.asarray(k, dtype=np.float64) / decay_steps)


def cosine_lr(lr, k, T_max, eta_min=0.0):
    """torch CosineAnnealingLR in closed form (SGDR without restarts)."""
    k = np.asarray(k, dtype=np.float64)
    return eta_min + (lr - eta_min) * (1.0 + np.cos(math.pi * k / T_max)) / 2.0


def step_lr(lr, k, step_size, gamma=0.1):
    """torch StepLR: ``lr * gamma**(k // step_size)``."""
    k = np.asarray(k, dtype=np.int64)
    return lr * np.power(gamma, (k // int(step_size)).astype(np.float64))


# ----------------------------------------------------------------------------- clipping


def clip_by_value(grad, clip_value):
    """torch.nn.utils.clip_grad_value_: clamp to ``[-c, c]`` (NaN stays NaN)."""
    return np.clip(grad, -clip_value, clip_value)


@_quiet
def clip_by_norm(grad, max_norm):
    """torch.nn.utils.clip_grad_norm_ on one tensor.

    ``coef = max_norm / (||g||_2 + 1e-6)``, clamped at 1 (a NaN norm gives a NaN
    coefficient), and the gradient is always multiplied by it.
    """
    norm = np.sqrt(np.sum(grad * grad))
    coef = np.minimum(max_norm / (norm + 1e-6), 1.0)
    return grad * coef
