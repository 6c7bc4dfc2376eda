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

from .._jit import called_kernel, kernel, parallel_kernel
from .._layout import STEP
from ..floating import FMA_IN_HARDWARE, divide_by_constant, reciprocal_pair
from ._spec import Rule, check_range


@kernel
def adam_coord(p, g, m, v, v_max, beta1, beta2, eps, param_scale, grad_decay, amsgrad, maximize,
               step_size, bias_correction2_sqrt, bias_correction2_reciprocal):
    """The Adam rule for one coordinate: returns ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq)``.

    ``param_scale`` and ``grad_decay`` come from :func:`adam_weight_decay`,
    ``step_size`` and ``bias_correction2_sqrt`` from :func:`adam_step_sizes`.
    ``bias_correction2_reciprocal`` is :func:`fastopt.floating.reciprocal_pair` of
    ``bias_correction2_sqrt``, or ``(0.0, 0.0)``: with the pair, the division by
    ``bias_correction2_sqrt`` is done with multiplies (:func:`~fastopt.floating.divide_by_constant`,
    torch's quotient bit for bit), which leaves the CPU's divider, the bound of a
    vectorized loop, to the square root and the other division (Adam on a long vector:
    1.4 against 1.9 ns per element on one core). A serial chain (a 2-D start) divides:
    the multiplies have the longer latency.
    """
    one_minus_beta1 = 1.0 - beta1
    gi = -g if maximize else g
    p = p * param_scale  # exact identity unless AdamW decays
    if grad_decay != 0.0:
        gi = gi + grad_decay * p
    if one_minus_beta1 < 0.5:  # torch.lerp's two formulas
        m = m + one_minus_beta1 * (gi - m)
    else:
        m = gi - (gi - m) * (1.0 - one_minus_beta1)
    v = v * beta2 + (1.0 - beta2) * gi * gi
    v_hat = v
    if amsgrad:
        # torch.maximum: the larger value, and a NaN in either propagates (a NaN v stays in
        # v_hat, since v_max > NaN is False; Python's max() would drop it)
        if v_max > v or v_max != v_max:
            v_hat = v_max
        v_max = v_hat
    denom = np.sqrt(v_hat)
    if bias_correction2_sqrt != 1.0:  # x / 1.0 == x: off the 2-D loop's latency chain
        hi, lo = bias_correction2_reciprocal
        if hi != 0.0:
            denom = divide_by_constant(denom, bias_correction2_sqrt, hi, lo)
        else:
            denom = denom / bias_correction2_sqrt
    denom = denom + eps
    return p + (-step_size) * m / denom, m, v, v_max


@kernel
def adam_weight_decay(lr, weight_decay, decoupled):
    """Return ``(param_scale, grad_decay)`` for :func:`adam_coord`.

    AdamW (``decoupled``) scales the parameters by ``1 - lr * weight_decay``; Adam
    adds ``weight_decay * param`` to the gradient. The unused one is the identity
    (a scale of exactly 1.0, a decay of 0.0), so the loops carry no branch on
    ``decoupled``: measured at 10^7 elements on 2 threads, that branch cost 12%.
    """
    if weight_decay != 0.0 and decoupled:
        return 1.0 - lr * weight_decay, 0.0
    return 1.0, weight_decay


# adam_coord's bias_correction2_reciprocal that makes it divide
DIVIDE = (0.0, 0.0)
# from this many elements on, a loop of adam_coord is throughput-bound, and divides with
# multiplies (a 2-D start's loop, latency-bound, would take ~3 ns more per iteration)
MULTIPLY_FROM_SIZE = 16


@kernel
def reciprocal_or_divide(bias_correction2_sqrt, size):
    """:func:`adam_coord`'s ``bias_correction2_reciprocal`` for a loop over ``size``
    elements: the reciprocal pair where the loop is a vector loop and the CPU has a fused
    multiply-add (``fastopt.floating.FMA_IN_HARDWARE``), ``DIVIDE`` otherwise."""
    if size >= MULTIPLY_FROM_SIZE and FMA_IN_HARDWARE:
        return reciprocal_pair(bias_correction2_sqrt)
    return DIVIDE


@kernel
def adam_elementwise(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2,
                     eps, param_scale, grad_decay, amsgrad, maximize, step_size,
                     bias_correction2_sqrt):
    """Apply :func:`adam_coord` to every element (``max_exp_avg_sq`` may be empty), dividing."""
    for i in range(param.size):
        v_max = max_exp_avg_sq[i] if amsgrad else 0.0
        param[i], exp_avg[i], exp_avg_sq[i], v_max = adam_coord(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], v_max, beta1, beta2, eps, param_scale,
            grad_decay, amsgrad, maximize, step_size, bias_correction2_sqrt, DIVIDE)
        if amsgrad:
            max_exp_avg_sq[i] = v_max


# Once t (1 - beta) >= SATURATED_STEPS, beta**t <= exp(-38) < 2**-54 whatever beta in
# [0, 1), so 1 - beta**t rounds to exactly 1.0 (and its square root is 1.0): the pow()
# calls can be skipped with bit-identical results (54 ln 2 = 37.43, plus margin).
SATURATED_STEPS = 38.0


@kernel
def bias_correction(t, beta):
    """``1 - beta**t`` as torch computes it (``t`` a float), skipping ``pow`` once it is 1.0.

    ``-log(beta) >= 1 - beta`` gives ``beta**t <= exp(-t (1 - beta))``: from
    ``t (1 - beta) >= 38`` on, ``beta**t`` (correct to an ulp) is below ``2**-54``,
    half the spacing of floats below 1.0, so ``1 - beta**t`` is exactly 1.0. With
    torch's default betas that is from step 380 (beta1) and 38,000 (beta2) on.
    Each ``pow`` costs ~8 ns, a third of a 2-D Adam iteration.
    """
    if t * (1.0 - beta) >= SATURATED_STEPS:
        return 1.0
    return 1.0 - beta**t


@kernel
def adam_step_sizes(t, lr, beta1, beta2):
    """Return ``(lr / (1 - beta1**t), sqrt(1 - beta2**t))`` as torch computes them."""
    step = float(t)
    bias_correction2 = bias_correction(step, beta2)
    return lr / bias_correction(step, beta1), bias_correction2**0.5


@kernel
def adam_update(param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
                weight_decay, amsgrad, maximize, decoupled):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place.

    ``step`` is a 1-element int64 counter; ``max_exp_avg_sq`` may be empty unless
    ``amsgrad``. Callable from user ``@njit`` code.
    """
    step[0] += 1
    step_size, bc2_sqrt = adam_step_sizes(step[0], lr, beta1, beta2)
    param_scale, grad_decay = adam_weight_decay(lr, weight_decay, decoupled)
    adam_elementwise(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1,
                     beta2, eps, param_scale, grad_decay, amsgrad, maximize, step_size, bc2_sqrt)


@kernel
def adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
               param_scale, grad_decay, amsgrad, maximize, step_size, bias_correction2_sqrt,
               bias_correction2_reciprocal):
    """:func:`adam_coord` over every element in one ``prange`` per value of ``amsgrad``
    (``max_exp_avg_sq`` may be empty without it) and per way of dividing by
    ``sqrt(1 - beta2**t)``: a ``range`` in a serial caller.

    Taken inside the loop, the branch between dividing and multiplying is left to LLVM
    to unswitch; where it does not, the vector loop computes both ways and the divider
    bounds it again (AMSGrad's loop: 1.9 against 1.4 ns per element).
    """
    if bias_correction2_reciprocal[0] != 0.0:
        _adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                    param_scale, grad_decay, amsgrad, maximize, step_size,
                    bias_correction2_sqrt, bias_correction2_reciprocal)
    else:
        _adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                    param_scale, grad_decay, amsgrad, maximize, step_size,
                    bias_correction2_sqrt, DIVIDE)


@kernel
def _adam_option_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                       param_scale, grad_decay, amsgrad, maximize, step_size,
                       bias_correction2_sqrt, bias_correction2_reciprocal):
    """:func:`_adam_loops` with the plain options (no weight decay, not maximize) as
    constants where they are those: their selects, a multiply by 1.0 and an add of
    0.0 that must be skipped (``0 * inf`` is NaN) are then compiled away. A step on
    10^7 parameters is memory-bound, and yet those few operations took it from 0.93-0.95
    to 0.85-0.92 of the speed of a loop with Adam's memory traffic and no arithmetic.
    (Where the loop is compute-bound, as in :func:`adam_update_vector`, they cost
    nothing measurable, and the second set of loops would double its compile time.)"""
    # The arrays go one by one, not as a tuple: unpacked from a tuple in a parallel
    # kernel, the prange loop's writes to them are lost (numba issues 5872 and 10338).
    if param_scale == 1.0 and grad_decay == 0.0 and not maximize:
        _adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                    1.0, 0.0, amsgrad, False, step_size, bias_correction2_sqrt,
                    bias_correction2_reciprocal)
    else:
        _adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                    param_scale, grad_decay, amsgrad, maximize, step_size,
                    bias_correction2_sqrt, bias_correction2_reciprocal)


@kernel
def _adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                param_scale, grad_decay, amsgrad, maximize, step_size, bias_correction2_sqrt,
                bias_correction2_reciprocal):
    if amsgrad:
        for i in prange(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = adam_coord(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], beta1, beta2,
                eps, param_scale, grad_decay, True, maximize, step_size, bias_correction2_sqrt,
                bias_correction2_reciprocal)
    else:
        for i in prange(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], _ = adam_coord(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], 0.0, beta1, beta2, eps,
                param_scale, grad_decay, False, maximize, step_size, bias_correction2_sqrt,
                bias_correction2_reciprocal)


@called_kernel
def adam_update_vector(param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2,
                       eps, weight_decay, amsgrad, maximize, decoupled):
    """:func:`adam_update` for a long vector, called from Python (the step API); the same bits.

    One loop per value of ``amsgrad`` and way of dividing (:func:`adam_loops`), dividing by
    ``sqrt(1 - beta2**t)`` with multiplies (1.4 against 1.9 ns per element on one core).
    A user's ``@njit`` loop over short vectors wants :func:`adam_update`, which is
    inlined (~11 ns a step at 2 elements): this one is a call (~40 ns), and inlined, its
    two loops would keep numba from pruning the arrays' reference counting (~50 ns).
    """
    step[0] += 1
    step_size, bc2_sqrt = adam_step_sizes(step[0], lr, beta1, beta2)
    scale, decay = adam_weight_decay(lr, weight_decay, decoupled)
    adam_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, scale, decay,
               amsgrad, maximize, step_size, bc2_sqrt,
               reciprocal_or_divide(bc2_sqrt, param.size))


@parallel_kernel
def adam_update_parallel(param, grad, step, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1,
                         beta2, eps, weight_decay, amsgrad, maximize, decoupled):
    """Multithreaded :func:`adam_update`; identical numerics.

    One ``prange`` over the elements, with the branches on the optional buffer and on
    the plain options taken outside it (:func:`_adam_option_loops`). A load under a
    condition inside numba's parallel loop (as in :func:`adam_elementwise`, which LLVM
    unswitches in a plain function) keeps LLVM from vectorizing it: 1.8 against 1.0 ns
    per element on 2 threads, which at 10^7 elements turns a memory-bound step into a
    compute-bound one. It divides: there, memory-bound, the multiplies that replace the
    division cost 4%.
    """
    step[0] += 1
    step_size, bc2_sqrt = adam_step_sizes(step[0], lr, beta1, beta2)
    scale, decay = adam_weight_decay(lr, weight_decay, decoupled)
    # not adam_loops: its branch on how to divide would compile both ways
    _adam_option_loops(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                       scale, decay, amsgrad, maximize, step_size, bc2_sqrt, DIVIDE)


def _make_update(decoupled):
    def update(x, g, state, hyper, counters):
        """The rule's step in the loops: :func:`adam_update` on ``state`` = (exp_avg,
        exp_avg_sq, max_exp_avg_sq), hyperparameters ``hyper`` in ``ADAM_RULE.hyperparameters``.

        One loop reads and writes all three buffers whatever the options (AMSGrad's is
        written back unchanged without amsgrad). A buffer read under a condition, as in
        :func:`adam_elementwise`, makes LLVM's vectorized loop check at run time that the
        buffer overlaps nothing, a check it fails against itself; LLVM avoids it only by
        unswitching the loop on amsgrad, which it stops doing as the loop grows.
        """
        counters[STEP] += 1
        lr, beta1, beta2, eps = hyper[0], hyper[1], hyper[2], hyper[3]
        step_size, bc2_sqrt = adam_step_sizes(counters[STEP], lr, beta1, beta2)
        reciprocal = reciprocal_or_divide(bc2_sqrt, x.size)
        scale, decay = adam_weight_decay(lr, hyper[4], decoupled)
        amsgrad, maximize = hyper[5] != 0.0, hyper[6] != 0.0
        exp_avg, exp_avg_sq, max_exp_avg_sq = state[0], state[1], state[2]
        for i in range(x.size):
            x[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = adam_coord(
                x[i], g[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], beta1, beta2, eps,
                scale, decay, amsgrad, maximize, step_size, bc2_sqrt, reciprocal)

    # a name of its own per rule: loops call the rule's update by a symbol named after it
    # (see fastopt.loop.called_update)
    update.__name__ = update.__qualname__ = "_update_adamw" if decoupled else "_update_adam"
    return kernel(update)


_update_adam = _make_update(False)
_update_adamw = _make_update(True)


def _make_update_block(decoupled):
    @kernel
    def update_block(X, G, S, H, step, active, scratch):
        """One step for a block of starts: ``X``, ``G`` (d, B), ``S`` (3, d, B), ``H`` (7, B)."""
        d, B = X.shape
        for b in range(B):
            # Lanes of a block usually share step and betas: compute torch's pow() once.
            if (b > 0 and step[b] == step[b - 1] and H[0, b] == H[0, b - 1]
                    and H[1, b] == H[1, b - 1] and H[2, b] == H[2, b - 1]):
                for k in range(4):
                    scratch[k, b] = scratch[k, b - 1]
            else:
                scratch[0, b], scratch[1, b] = adam_step_sizes(step[b], H[0, b], H[1, b], H[2, b])
                scratch[2, b], scratch[3, b] = reciprocal_or_divide(scratch[1, b], B)
            scratch[4, b], scratch[5, b] = adam_weight_decay(H[0, b], H[4, b], decoupled)
        for i in range(d):
            for b in range(B):
                p, m, v, vm = adam_coord(X[i, b], G[i, b], S[0, i, b], S[1, i, b], S[2, i, b],
                                         H[1, b], H[2, b], H[3, b], scratch[4, b], scratch[5, b],
                                         H[5, b] != 0.0, H[6, b] != 0.0, scratch[0, b],
                                         scratch[1, b], (scratch[2, b], scratch[3, b]))
                keep = active[b]
                X[i, b] = p if keep else X[i, b]
                S[0, i, b] = m if keep else S[0, i, b]
                S[1, i, b] = v if keep else S[1, i, b]
                S[2, i, b] = vm if keep else S[2, i, b]

    return update_block


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
                 n_state=lambda d, v: 3, update=_update_adam,
                 update_block=_make_update_block(False), block_scratch_rows=6)
ADAMW_RULE = ADAM_RULE._replace(name="adamw", defaults={**_DEFAULTS, "weight_decay": 1e-2},
                                update=_update_adamw, update_block=_make_update_block(True))
