"""The first-order kernels, schedules and clipping against the NumPy reference in ``naive.py``.

* every ``*_update`` kernel vs naive on random inputs, with NaN/inf substituted into grads;
* every ``*_update_parallel`` equals ``*_update`` bit for bit (1 and 2 threads);
* the step API (``fastopt.SGD``, ...) over many steps, and hypothesis-drawn hyperparameters;
* bad input to the step API;
* equivalences between rules (optax's ``test_rms_match_adam`` style);
* schedules and clipping vs naive, and ``minimize`` vs a hand-written naive loop.

Compilation: every kernel is called with one signature only (float64 C arrays, Python floats,
Python bools), so the whole module compiles each kernel once.
"""

import math
import zlib

import naive
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import quadratic, quadratic_grad

import fastopt
from fastopt import clipping, rules, schedules

METHODS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")

# One table of kernel cases: (method, hyperparameters beyond naive.RULES' defaults). Together
# they take every branch of every kernel: momentum/dampening/nesterov, lr_decay, centered,
# both torch.lerp formulas (weight < 0.5 and >= 0.5), AMSGrad, decoupled decay, maximize.
KERNEL_CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05,
             "maximize": True}),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1, "eps": 1e-3,
                 "maximize": True}),
    ("rmsprop", {"lr": 0.1}),
    ("rmsprop", {"lr": 0.1, "alpha": 0.3, "momentum": 0.9, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.1, "alpha": 0.9, "centered": True, "maximize": True}),
    ("rmsprop", {"lr": 0.1, "alpha": 0.3, "centered": True, "momentum": 0.5,
                 "weight_decay": 0.1}),
    ("adam", {"lr": 0.1}),
    ("adam", {"lr": 0.1, "beta1": 0.3, "beta2": 0.5, "weight_decay": 0.1, "amsgrad": True}),
    ("adam", {"lr": 0.1, "amsgrad": True, "maximize": True}),
    ("adamw", {"lr": 0.1}),
    ("adamw", {"lr": 0.1, "beta1": 0.0, "weight_decay": 0.3, "amsgrad": True,
               "maximize": True}),
]


def case_id(case):
    method, hyper = case
    return method + "".join(f"-{k}={v}" for k, v in hyper.items() if k != "lr")


def full_hyper(method, hyper):
    """Every hyperparameter of ``method``, floats as float and flags as bool (one signature)."""
    h = {**naive.RULES[method][2], **hyper}
    return {k: (bool(v) if isinstance(naive.RULES[method][2][k], bool) else float(v))
            for k, v in h.items()}


def call_kernel(method, param, grad, step, state, hyper, parallel=False):
    """One in-place kernel update: ``param``, ``step`` (int64[1]) and ``state`` arrays change."""
    h = full_hyper(method, hyper)
    if method == "sgd":
        kernel = rules.sgd_update_parallel if parallel else rules.sgd_update
        kernel(param, grad, step, state["momentum_buffer"], h["lr"], h["momentum"],
               h["dampening"], h["weight_decay"], h["nesterov"], h["maximize"])
    elif method == "adagrad":
        kernel = rules.adagrad_update_parallel if parallel else rules.adagrad_update
        kernel(param, grad, step, state["sum"], h["lr"], h["lr_decay"], h["weight_decay"],
               h["eps"], h["maximize"])
    elif method == "rmsprop":
        kernel = rules.rmsprop_update_parallel if parallel else rules.rmsprop_update
        kernel(param, grad, step, state["square_avg"], state["momentum_buffer"],
               state["grad_avg"], h["lr"], h["alpha"], h["eps"], h["weight_decay"],
               h["momentum"], h["centered"], h["maximize"])
    else:
        kernel = rules.adam_update_parallel if parallel else rules.adam_update
        kernel(param, grad, step, state["exp_avg"], state["exp_avg_sq"],
               state["max_exp_avg_sq"], h["lr"], h["beta1"], h["beta2"], h["eps"],
               h["weight_decay"], h["amsgrad"], h["maximize"], method == "adamw")


def random_state(method, n, rng):
    """State arrays as a run would leave them: second moments >= 0, |grad_avg| <= sqrt(v)."""
    state = {}
    for name in naive.RULES[method][1]:
        if name in ("sum", "square_avg", "exp_avg_sq"):
            state[name] = rng.exponential(1.0, n)
        else:
            state[name] = rng.standard_normal(n)
    if "grad_avg" in state:
        state["grad_avg"] = np.sqrt(state["square_avg"]) * rng.uniform(-0.9, 0.9, n)
    if "max_exp_avg_sq" in state:  # below exp_avg_sq half the time
        state["max_exp_avg_sq"] = state["exp_avg_sq"] * rng.uniform(0.5, 1.5, n)
    return state


def with_nonfinite(grad, rng, fraction=0.1):
    """A copy of ``grad`` with NaN, +inf and -inf at random positions."""
    g = grad.copy()
    idx = rng.choice(g.size, int(fraction * g.size), replace=False)
    g[idx] = rng.choice([np.nan, np.inf, -np.inf], idx.size)
    return g


def assert_same(actual, expected):
    """Equal to rounding (rtol 1e-13), with NaN and inf in the same places."""
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=0.0, equal_nan=True)


def assert_bitwise_equal(actual, expected):
    """Identical bits (so -0.0 != 0.0), NaN in the same places (a NaN's sign is not data)."""
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    np.testing.assert_array_equal(actual[~nan].view(np.uint64), expected[~nan].view(np.uint64))


# ----------------------------------------------------------------------------- kernels vs naive


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan-inf"])
# 40,000 steps: Adam's bias corrections are exactly 1.0, so the kernel skips its pow() calls
@pytest.mark.parametrize("step_before", [0, 6, 40_000])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_kernel_matches_naive(case, step_before, nonfinite):
    method, hyper = case
    rng = np.random.default_rng(zlib.crc32(f"{case_id(case)}-{step_before}".encode()))
    n = 257
    param = rng.standard_normal(n)
    grad = rng.standard_normal(n) * 3.0
    if nonfinite:
        grad = with_nonfinite(grad, rng)
    state = random_state(method, n, rng)

    p, g, s = param.copy(), grad.copy(), {k: v.copy() for k, v in state.items()}
    step = np.array([step_before], dtype=np.int64)
    call_kernel(method, p, g, step, s, hyper)
    expected_p, expected_s = naive.step(method, param, grad, state, step_before + 1,
                                        **full_hyper(method, hyper))

    assert step[0] == step_before + 1
    np.testing.assert_array_equal(g, grad)  # the gradient is read only
    assert_bitwise_equal(p, expected_p)
    for name in expected_s:
        assert_bitwise_equal(s[name], expected_s[name])
    if nonfinite:  # the NaN/inf really reached the parameters
        assert not np.all(np.isfinite(p))



@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999])
def test_bias_correction_equals_torch_formula_also_where_pow_is_skipped(beta):
    saturated = math.ceil(rules.adam.SATURATED_STEPS / (1.0 - beta))
    steps = [*range(1, 50), *range(saturated - 600, saturated + 600)]
    for t in (float(t) for t in steps if t >= 1):
        assert rules.adam.bias_correction(t, beta) == 1.0 - beta**t, (beta, t)
    assert rules.adam.bias_correction(float(saturated), beta) == 1.0  # no pow() from here on

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_parallel_kernel_equals_serial_bit_for_bit(case, threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} numba threads")
    method, hyper = case
    rng = np.random.default_rng(7)
    n = 100_003  # odd, so the threads' ranges and the vector loops have ragged ends
    param = rng.standard_normal(n)
    state = random_state(method, n, rng)
    serial = (param.copy(), {k: v.copy() for k, v in state.items()}, np.zeros(1, np.int64))
    threaded = (param.copy(), {k: v.copy() for k, v in state.items()}, np.zeros(1, np.int64))
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for _ in range(3):
            grad = with_nonfinite(rng.standard_normal(n), rng, fraction=1e-3)
            call_kernel(method, serial[0], grad, serial[2], serial[1], hyper)
            call_kernel(method, threaded[0], grad, threaded[2], threaded[1], hyper,
                        parallel=True)
    finally:
        numba.set_num_threads(previous)
    assert threaded[2][0] == serial[2][0] == 3
    assert_bitwise_equal(threaded[0], serial[0])
    for name in state:
        assert_bitwise_equal(threaded[1][name], serial[1][name])


ADAM_CASES = [case for case in KERNEL_CASES if case[0] in ("adam", "adamw")]


@pytest.mark.parametrize("n", [7, 16, 1001])
@pytest.mark.parametrize("case", ADAM_CASES, ids=case_id)
def test_adam_loop_kernels_equal_the_public_kernel_bit_for_bit(case, n):
    # The loops' Adam kernels divide by sqrt(1 - beta2**t) with multiplies
    # (fastopt.floating) where they run as vectors: the rule's update, the per-lane
    # update_block and the step API's adam_update_vector, from 16 elements or lanes on.
    # The public kernel divides. Over the first steps and those where the bias
    # correction's square root reaches exactly 1.0, with NaN and inf gradients, all give
    # the same bits.
    from fastopt._layout import N_COUNTERS, STEP

    method, hyper = case
    rule = rules.adam.ADAM_RULE if method == "adam" else rules.adam.ADAMW_RULE
    h = full_hyper(method, hyper)
    hyper_row = np.array([float(h[name]) for name in rule.hyperparameters])
    rng = np.random.default_rng(n)
    state = random_state(method, n, rng)
    param = rng.standard_normal(n)
    names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    public = (param.copy(), {k: v.copy() for k, v in state.items()}, np.zeros(1, np.int64))
    x, S = param.copy(), np.stack([state[k] for k in names])
    counters = np.zeros(N_COUNTERS, np.int64)
    X, SB = param.copy()[None, :], np.stack([state[k] for k in names])[:, None, :]
    lane_steps = np.zeros(n, np.int64)
    H = np.repeat(hyper_row[:, None], n, axis=1)
    vector = (param.copy(), {k: v.copy() for k, v in state.items()}, np.zeros(1, np.int64))
    # the last step where sqrt(1 - beta2**t) < 1 (torch's arithmetic; 36,313 for 0.999)
    last, after = 1, math.ceil(rules.adam.SATURATED_STEPS / (1.0 - h["beta2"]))
    while after - last > 1:
        middle = (last + after) // 2
        last, after = (middle, after) if (1.0 - h["beta2"]**middle)**0.5 < 1.0 else (last, middle)
    for step in (*range(1, 40), *range(last - 5, last + 5)):
        public[2][0] = vector[2][0] = counters[STEP] = step - 1
        lane_steps[:] = step  # update_block takes the step it is at
        grad = with_nonfinite(rng.standard_normal(n), rng, fraction=0.02) if step > 30 else \
            rng.standard_normal(n)
        call_kernel(method, public[0], grad, public[2], public[1], hyper)
        v = vector[1]
        rules.adam.adam_update_vector(
            vector[0], grad, vector[2], v["exp_avg"], v["exp_avg_sq"], v["max_exp_avg_sq"],
            h["lr"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"], h["amsgrad"],
            h["maximize"], method == "adamw")
        rule.update(x, grad, S, hyper_row, counters)
        rule.update_block(X, grad[None, :].copy(), SB, H, lane_steps, np.ones(n, np.bool_),
                          np.full((6, n), np.nan))
        assert counters[STEP] == public[2][0] == step
        vector_buffers = np.stack([vector[1][name] for name in names])
        for got, buffers in ((x, S), (X[0], SB[:, 0, :]), (vector[0], vector_buffers)):
            assert_bitwise_equal(got, public[0])
            for k, name in enumerate(names[:2] + (names[2:] if h["amsgrad"] else ())):
                assert_bitwise_equal(buffers[k], public[1][name])


# every combination of the options that choose RMSprop's loop or change its arithmetic
RMSPROP_CASES = [
    ("rmsprop", {"lr": 0.1, "alpha": alpha, "momentum": momentum, "centered": centered,
                 "maximize": maximize, "weight_decay": weight_decay})
    for momentum in (0.0, 0.9) for centered in (False, True) for maximize in (False, True)
    for weight_decay, alpha in ((0.0, 0.9), (0.1, 0.3))  # alpha: both torch.lerp formulas
]


@pytest.mark.parametrize("case", RMSPROP_CASES, ids=case_id)
def test_rmsprop_loop_kernels_equal_the_public_kernel_bit_for_bit(case):
    # RMSprop's loops read every buffer unconditionally (the rule's update), branch on the
    # options outside the loop (the step API's rmsprop_update_vector), or take each lane's
    # momentum as it comes (update_block: lanes here alternate between the case's momentum
    # and the other choice). All give the bits of the public kernel and of the plain-NumPy
    # reference (torch's formula in torch's order), NaN and inf included.
    from fastopt._layout import N_COUNTERS, STEP

    method, hyper = case
    rule = rules.rmsprop.RMSPROP_RULE
    other = {**hyper, "momentum": 0.0 if hyper["momentum"] > 0.0 else 0.7}
    names = naive.RULES[method][1]
    n = 1001
    rng = np.random.default_rng(n)
    state = random_state(method, n, rng)
    param = rng.standard_normal(n)
    runs = {key: (param.copy(), {k: v.copy() for k, v in state.items()}, np.zeros(1, np.int64))
            for key in ("public", "other", "vector", "naive", "naive-other")}
    hyper_row, other_row = (np.array([float(full_hyper(method, h)[k])
                                      for k in rule.hyperparameters]) for h in (hyper, other))
    x, S = param.copy(), np.stack([state[k] for k in names])
    counters = np.zeros(N_COUNTERS, np.int64)
    mixed = np.arange(n) % 2 == 1  # lanes that take the other momentum
    X, SB = param.copy()[None, :], np.stack([state[k] for k in names])[:, None, :]
    H = np.where(mixed, other_row[:, None], hyper_row[:, None])
    lane_steps = np.zeros(n, np.int64)
    h = full_hyper(method, hyper)
    for step in range(1, 40):
        grad = with_nonfinite(rng.standard_normal(n), rng, fraction=0.02) if step > 30 else \
            rng.standard_normal(n)
        call_kernel(method, runs["public"][0], grad, runs["public"][2], runs["public"][1], hyper)
        call_kernel(method, runs["other"][0], grad, runs["other"][2], runs["other"][1], other)
        for key, options in (("naive", hyper), ("naive-other", other)):
            p0, s0, _ = runs[key]
            p0[:], *buffers = naive.rmsprop(p0, grad, *(s0[k] for k in names), step,
                                            **full_hyper(method, options))
            for k, buffer in zip(names, buffers, strict=True):
                s0[k][:] = buffer
        p, s, t = runs["vector"]
        rules.rmsprop.rmsprop_update_vector(
            p, grad, t, s["square_avg"], s["momentum_buffer"], s["grad_avg"], h["lr"],
            h["alpha"], h["eps"], h["weight_decay"], h["momentum"], h["centered"],
            h["maximize"])
        rule.update(x, grad, S, hyper_row, counters)
        lane_steps[:] = step
        rule.update_block(X, grad[None, :].copy(), SB, H, lane_steps, np.ones(n, np.bool_),
                          np.full((0, n), np.nan))
        assert counters[STEP] == t[0] == step
        public, other_run = runs["public"], runs["other"]
        lanes = (np.where(mixed, other_run[0], public[0]),
                 {k: np.where(mixed, other_run[1][k], public[1][k]) for k in names})
        lane_momentum = np.where(mixed, other["momentum"], h["momentum"]) > 0.0
        momentum = np.full(n, h["momentum"] > 0.0)
        for got, buffers, expected, uses_momentum in (
                (public[0], public[1], runs["naive"], momentum),
                (other_run[0], other_run[1], runs["naive-other"], ~momentum),
                (x, dict(zip(names, S, strict=True)), public, momentum),
                (p, s, public, momentum),
                (X[0], dict(zip(names, SB[:, 0, :], strict=True)), lanes, lane_momentum)):
            assert_bitwise_equal(got, expected[0])
            # an unused buffer may be written back unchanged or left alone
            used = {"square_avg": np.full(n, True), "momentum_buffer": uses_momentum,
                    "grad_avg": np.full(n, h["centered"])}
            for name in names:
                assert_bitwise_equal(buffers[name][used[name]], expected[1][name][used[name]])


FORKED_STEP_SCRIPT = """
import multiprocessing
import numpy as np
import fastopt
from fastopt.optimizers import PARALLEL_THRESHOLD

def adam_steps(x):
    opt = fastopt.Adam(lr=1e-3)
    state = opt.init(x)
    for _ in range(3):
        opt.step(x, np.cos(3 * x), state)
    return x

x0 = np.linspace(-1, 1, PARALLEL_THRESHOLD)
parent = adam_steps(x0.copy())  # a parallel kernel: numba launches its threading layer
with multiprocessing.get_context("fork").Pool(1) as pool:
    child = pool.apply_async(adam_steps, (x0.copy(),)).get(timeout=30)
print("same" if np.array_equal(parent, child) else "different")
"""


def test_step_api_works_in_a_process_forked_after_a_parallel_step():
    # With GNU OpenMP as numba's threading layer, a forked child that launches a parallel
    # kernel is terminated and the pool waits forever: the child runs the serial kernel.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FORKED_STEP_SCRIPT], capture_output=True,
                         text=True, timeout=180)
    assert out.stdout.split() == ["same"], out.stderr[-2000:]


def test_amsgrad_max_propagates_nan_like_torch_maximum():
    # Regression: the kernel used Python's max(), which drops a NaN second argument, so
    # max_exp_avg_sq stayed finite after a NaN gradient while torch.maximum makes it NaN.
    p, g = np.zeros(2), np.array([np.nan, 1.0])
    s = {"exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(2), "max_exp_avg_sq": np.ones(2)}
    call_kernel("adam", p, g, np.zeros(1, np.int64), s, {"lr": 0.1, "amsgrad": True})
    assert np.isnan(s["max_exp_avg_sq"][0]) and s["max_exp_avg_sq"][1] == 1.0


# ----------------------------------------------------------------------------- step API


D = 11
A = np.linspace(0.5, 4.0, D)
C = np.where(np.arange(D) % 2 == 0, 1.0, -1.0) * np.linspace(0.5, 1.5, D)


def smooth_grad(x):
    """Gradient of sum(a (x - c)^2 / 2 - cos(x) / 4): anisotropic, mildly nonlinear."""
    return A * (x - C) + 0.25 * np.sin(x)


# (fastopt class, keyword arguments by torch's names)
STEP_API_CASES = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.5}),
    ("Adagrad", {"lr": 0.1, "eps": 1e-3, "maximize": True}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.4, "centered": True, "maximize": True}),
    ("Adam", {"lr": 0.02}),
    ("Adam", {"lr": 0.02, "betas": (0.3, 0.8), "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 0.02, "eps": 1e-4, "amsgrad": True, "maximize": True}),
    ("AdamW", {"lr": 0.02}),
    ("AdamW", {"lr": 0.02, "betas": (0.0, 0.99), "weight_decay": 0.5, "amsgrad": True}),
]


def naive_method(cls_name):
    return cls_name.lower()


def run_step_api(cls_name, kwargs, x0, grad_fn, n_steps):
    opt = getattr(fastopt, cls_name)(**kwargs)
    x = x0.copy()
    state = opt.init(x)
    path = [x.copy()]
    for _ in range(n_steps):
        opt.step(x, grad_fn(x), state)
        path.append(x.copy())
    return np.array(path), state


@pytest.mark.parametrize(("cls_name", "kwargs"), STEP_API_CASES,
                         ids=[f"{c}-{'-'.join(map(str, k.values()))}" for c, k in STEP_API_CASES])
def test_step_api_matches_naive_over_many_steps(cls_name, kwargs):
    grad_fn = (lambda x: -smooth_grad(x)) if kwargs.get("maximize") else smooth_grad
    x0 = C + np.linspace(-2.0, 2.0, D)
    path, state = run_step_api(cls_name, kwargs, x0, grad_fn, 150)
    expected, ref_state = naive.run(naive_method(cls_name), x0, grad_fn, 150, **kwargs)
    assert_bitwise_equal(path, expected)
    assert int(state.step[0]) == 150
    # the final state too (buffers a configuration does not use are empty in fastopt)
    for name, value in ref_state.items():
        actual = getattr(state, name)
        if actual.size:
            assert_bitwise_equal(actual, value)


def test_step_api_accepts_any_c_contiguous_shape_and_updates_in_place():
    x = np.arange(6.0).reshape(2, 3)
    opt = fastopt.Adam(lr=0.1)
    state = opt.init(x)
    expected, _ = naive.step("adam", x.ravel(), np.ones(6), naive.init_state("adam", x.ravel()),
                             1, lr=0.1)
    opt.step(x, np.ones((2, 3)), state)
    assert x.shape == (2, 3)
    assert_bitwise_equal(x.ravel(), expected)


def test_step_api_compiles_each_kernel_once():
    # optax's "no recompile on the second call": the step API always passes the same types.
    for cls_name, kwargs in [("SGD", {"lr": 0.1, "momentum": 0.5}), ("Adagrad", {}),
                             ("RMSprop", {"centered": True}), ("Adam", {"amsgrad": True}),
                             ("AdamW", {})]:
        kernel = getattr(rules, f"{'adam' if cls_name == 'AdamW' else cls_name.lower()}_update")
        x = np.ones(5)
        opt = getattr(fastopt, cls_name)(**kwargs)
        opt.step(x, np.ones(5), opt.init(x))
        n_signatures = len(kernel.signatures)
        other = getattr(fastopt, cls_name)(lr=0.3)  # other values, unused buffers empty
        state = other.init(x)
        other.step(x, np.ones(5), state)
        other.step(x, np.ones(5), state)
        assert len(kernel.signatures) == n_signatures


class GradFeed:
    """A gradient "function" returning the rows of ``grads`` in turn (independent of x)."""

    def __init__(self, grads):
        self.grads, self.i = grads, 0

    def __call__(self, x):
        g = self.grads[self.i].copy()
        self.i += 1
        return g


# Hyperparameters drawn anywhere in their valid ranges.
_UNIT = st.floats(0.0, 1.0, exclude_max=True)
_LR = st.floats(1e-4, 1.0)
_WD = st.one_of(st.just(0.0), st.floats(0.0, 1.0))
_FLAG = st.booleans()


@st.composite
def sgd_kwargs(draw):
    nesterov = draw(_FLAG)
    momentum = draw(st.floats(0.01, 0.99) if nesterov else st.one_of(st.just(0.0), _UNIT))
    dampening = 0.0 if nesterov else draw(st.floats(0.0, 1.0))
    return {"lr": draw(_LR), "momentum": momentum, "dampening": dampening,
            "weight_decay": draw(_WD), "nesterov": nesterov, "maximize": draw(_FLAG)}


HYPER_STRATEGIES = {
    "SGD": sgd_kwargs(),
    "Adagrad": st.fixed_dictionaries({
        "lr": _LR, "lr_decay": st.floats(0.0, 1.0), "weight_decay": _WD,
        "initial_accumulator_value": st.floats(0.0, 2.0), "eps": st.floats(1e-12, 1e-2),
        "maximize": _FLAG}),
    "RMSprop": st.fixed_dictionaries({
        "lr": _LR, "alpha": st.floats(0.0, 1.0), "eps": st.floats(1e-12, 1e-2),
        "weight_decay": _WD, "momentum": st.one_of(st.just(0.0), _UNIT), "centered": _FLAG,
        "maximize": _FLAG}),
    "Adam": st.fixed_dictionaries({
        "lr": _LR, "betas": st.tuples(_UNIT, _UNIT), "eps": st.floats(1e-12, 1e-2),
        "weight_decay": _WD, "amsgrad": _FLAG, "maximize": _FLAG}),
}
HYPER_STRATEGIES["AdamW"] = HYPER_STRATEGIES["Adam"]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_step_api_matches_naive_for_drawn_hyperparameters(data):
    cls_name = data.draw(st.sampled_from(sorted(HYPER_STRATEGIES)), label="optimizer")
    kwargs = data.draw(HYPER_STRATEGIES[cls_name], label="kwargs")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    grads = rng.standard_normal((12, 9)) * rng.exponential(1.0, (12, 1))
    x0 = rng.standard_normal(9)
    path, _ = run_step_api(cls_name, kwargs, x0, GradFeed(grads), 12)
    expected, _ = naive.run(naive_method(cls_name), x0, GradFeed(grads), 12, **kwargs)
    assert_bitwise_equal(path, expected)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: fastopt.SGD(lr=0.0), ValueError, "lr"),
        (lambda: fastopt.Adam(lr=-1e-3), ValueError, "lr"),
        (lambda: fastopt.RMSprop(lr=float("nan")), ValueError, "lr"),
        (lambda: fastopt.Adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
        (lambda: fastopt.Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
        (lambda: fastopt.AdamW(betas=(-0.1, 0.999)), ValueError, r"betas\[0\]"),
        (lambda: fastopt.Adam(betas=0.9), ValueError, "betas"),
        (lambda: fastopt.SGD(lr=0.1, nesterov=True), ValueError, "nesterov"),
        (lambda: fastopt.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
         ValueError, "nesterov"),
        (lambda: fastopt.SGD(momentum=-0.5), ValueError, "momentum"),
        (lambda: fastopt.SGD(dampening=1.5), ValueError, "dampening"),
        (lambda: fastopt.Adagrad(lr_decay=-1.0), ValueError, "lr_decay"),
        (lambda: fastopt.Adagrad(initial_accumulator_value=-1.0), ValueError,
         "initial_accumulator_value"),
        (lambda: fastopt.RMSprop(alpha=1.5), ValueError, "alpha"),
        (lambda: fastopt.RMSprop(eps=-1e-8), ValueError, "eps"),
        (lambda: fastopt.Adam(weight_decay=-0.1), ValueError, "weight_decay"),
    ],
)
def test_step_api_bad_hyperparameters_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("lr", ["fast", [0.1, 0.2], np.array([0.1, 0.2])],
                         ids=["str", "list", "array"])
def test_step_api_non_numeric_lr_names_the_argument(lr):
    with pytest.raises((TypeError, ValueError), match="lr"):
        fastopt.SGD(lr=lr)


@pytest.mark.parametrize(
    ("params", "grad", "error", "match"),
    [
        (np.ones(3, dtype=np.float32), np.ones(3), TypeError, "params.*float64"),
        (np.ones(3, dtype=np.int64), np.ones(3), TypeError, "params.*float64"),
        ([1.0, 2.0, 3.0], np.ones(3), TypeError, "params.*numpy.ndarray"),
        (np.ones(3), np.ones(4), ValueError, "grad.*shape of params"),
        (np.ones(3), np.ones(2), ValueError, "grad.*shape of params"),
        (np.ones(3), np.ones((3, 1)), ValueError, "grad.*shape of params"),
        (np.ones(3), np.ones(3, dtype=np.float32), TypeError, "grad.*float64"),
        (np.ones((3, 2)).T, np.ones(6), ValueError, "params.*C-contiguous"),
    ],
)
def test_step_api_bad_arrays_name_the_argument(params, grad, error, match):
    opt = fastopt.Adam(lr=0.1)
    state = opt.init(np.ones(3))
    with pytest.raises(error, match=match):
        opt.step(params, grad, state)


def test_step_api_wrong_state_type_is_rejected():
    x = np.ones(3)
    with pytest.raises(TypeError, match="state must be the AdamState"):
        fastopt.Adam().step(x, x.copy(), fastopt.SGD().init(x))


@pytest.mark.parametrize(("make", "init_with", "match"), [
    (lambda: fastopt.Adam(), lambda: fastopt.Adam().init(np.ones(4)), "state.exp_avg.*6"),
    (lambda: fastopt.Adam(amsgrad=True), lambda: fastopt.Adam().init(np.ones(6)),
     "state.max_exp_avg_sq.*6"),
    (lambda: fastopt.SGD(momentum=0.9), lambda: fastopt.SGD().init(np.ones(6)),
     "state.momentum_buffer.*6"),
    (lambda: fastopt.RMSprop(centered=True), lambda: fastopt.RMSprop().init(np.ones(6)),
     "state.grad_avg.*6"),
    (lambda: fastopt.Adagrad(), lambda: fastopt.Adagrad().init(np.ones(7)), "state.sum.*6"),
])
def test_step_api_state_that_does_not_fit_params_is_rejected(make, init_with, match):
    # The kernels do not check bounds: a smaller buffer used to be written past its end.
    x = np.ones(6)
    state = init_with()
    with pytest.raises(ValueError, match=match):
        make().step(x, np.ones(6), state)
    assert np.all(x == 1.0) and state.step[0] == 0


def test_step_api_read_only_arrays_are_rejected():
    opt = fastopt.Adam()
    x = np.ones(3)
    state = opt.init(x)
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="params must be writeable"):
        opt.step(frozen, np.ones(3), state)
    state.exp_avg.flags.writeable = False
    with pytest.raises(ValueError, match="state.exp_avg must be writeable"):
        opt.step(x, np.ones(3), state)


def test_step_api_hyperparameters_can_be_assigned():
    # as a torch user sets param_groups[0]["lr"]: the next step uses the new value
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
    opt, ref = fastopt.Adam(lr=0.1), fastopt.Adam(lr=0.1)
    state, ref_state = opt.init(x), ref.init(y)
    opt.step(x, np.cos(x), state)
    ref.step(y, np.cos(y), ref_state)
    opt.lr, opt.betas = 0.01, (0.5, 0.6)
    ref = fastopt.Adam(lr=0.01, betas=(0.5, 0.6))
    opt.step(x, np.cos(x), state)
    ref.step(y, np.cos(y), ref_state)
    assert_bitwise_equal(x, y)
    assert opt.lr == 0.01 and opt.betas == (0.5, 0.6)
    with pytest.raises(ValueError, match="learning rate"):
        opt.lr = -1.0
    with pytest.raises(ValueError, match="betas"):
        opt.betas = (1.5, 0.9)
    assert opt.lr == 0.01 and opt.betas == (0.5, 0.6)  # a rejected value changes nothing


def test_step_api_subclasses_keep_their_own_attributes():
    class CountingAdam(fastopt.Adam):
        def __init__(self, **kwargs):
            self.n_steps = 0  # before the hyperparameters exist
            super().__init__(**kwargs)

        def step(self, params, grad, state):
            self.n_steps += 1
            super().step(params, grad, state)

    opt = CountingAdam(lr=0.1)
    x = np.ones(3)
    opt.step(x, np.ones(3), opt.init(x))
    assert opt.n_steps == 1 and opt.lr == 0.1


# ----------------------------------------------------------------------------- equivalences


def test_sgd_without_momentum_is_plain_gradient_descent():
    x0 = C + 1.0
    sgd, _ = run_step_api("SGD", {"lr": 0.05}, x0, smooth_grad, 60)
    heavy, _ = run_step_api("SGD", {"lr": 0.05, "momentum": 0.0, "dampening": 0.7}, x0,
                            smooth_grad, 60)
    x, gd = x0.copy(), [x0.copy()]
    for _ in range(60):
        x = x - 0.05 * smooth_grad(x)
        gd.append(x)
    np.testing.assert_array_equal(sgd, np.array(gd))
    np.testing.assert_array_equal(heavy, np.array(gd))  # dampening is inert without momentum
    # with momentum, the first step is still a plain gradient step (torch: buf_1 = g_1)
    first, _ = run_step_api("SGD", {"lr": 0.05, "momentum": 0.9}, x0, smooth_grad, 1)
    np.testing.assert_array_equal(first[1], gd[1])


def test_rmsprop_not_centered_is_the_textbook_rule():
    # theta <- theta - lr g / (sqrt(v) + eps), v <- alpha v + (1 - alpha) g^2 (Hinton's lecture)
    lr, alpha, eps = 0.01, 0.9, 1e-6
    x0 = C + 2.0
    path, state = run_step_api("RMSprop", {"lr": lr, "alpha": alpha, "eps": eps}, x0,
                               smooth_grad, 80)
    x, v = x0.copy(), np.zeros(D)
    for k in range(80):
        g = smooth_grad(x)
        v = alpha * v + (1 - alpha) * g**2
        x = x - lr * g / (np.sqrt(v) + eps)
        np.testing.assert_allclose(path[k + 1], x, rtol=1e-13)
    np.testing.assert_allclose(state.square_avg, v, rtol=1e-13)
    assert state.momentum_buffer.size == 0 and state.grad_avg.size == 0


def test_adam_with_beta1_zero_is_rmsprop_with_bias_corrected_lr_and_eps():
    # Adam with beta1 = 0 has m_t = g_t and the same v_t as RMSprop with alpha = beta2, so
    #   theta -= lr g / (sqrt(v_t) / s_t + eps) = (lr s_t) g / (sqrt(v_t) + eps s_t),
    # s_t = sqrt(1 - beta2^t): RMSprop with the per-step lr_t = lr s_t and eps_t = eps s_t.
    lr, beta2, eps = 0.02, 0.95, 1e-3
    x0 = C + 2.0
    adam_path, adam_state = run_step_api("Adam", {"lr": lr, "betas": (0.0, beta2), "eps": eps},
                                         x0, smooth_grad, 100)
    x = x0.copy()
    square_avg, empty = np.zeros(D), np.empty(0)
    step = np.zeros(1, dtype=np.int64)
    for t in range(1, 101):
        s_t = math.sqrt(1.0 - beta2**t)
        rules.rmsprop_update(x, smooth_grad(x), step, square_avg, empty, empty, lr * s_t, beta2,
                             eps * s_t, 0.0, 0.0, False, False)
        np.testing.assert_allclose(adam_path[t], x, rtol=1e-12)
    np.testing.assert_allclose(adam_state.exp_avg_sq, square_avg, rtol=1e-12)


def test_adamw_without_weight_decay_is_adam():
    kwargs = {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6}
    for amsgrad in (False, True):
        adam, s1 = run_step_api("Adam", {**kwargs, "amsgrad": amsgrad}, C + 1.5, smooth_grad, 50)
        adamw, s2 = run_step_api("AdamW", {**kwargs, "amsgrad": amsgrad, "weight_decay": 0.0},
                                 C + 1.5, smooth_grad, 50)
        np.testing.assert_array_equal(adam, adamw)
        for a, b in zip(s1, s2, strict=True):
            np.testing.assert_array_equal(a, b)


def test_adam_weight_decay_is_l2_regularisation_adamw_is_not():
    # Adam's weight_decay adds wd * theta to the gradient: the same as Adam on f + wd |x|^2 / 2.
    wd = 0.3
    adam, _ = run_step_api("Adam", {"lr": 0.02, "weight_decay": wd}, C + 1.0, smooth_grad, 40)
    l2, _ = run_step_api("Adam", {"lr": 0.02}, C + 1.0, lambda x: smooth_grad(x) + wd * x, 40)
    np.testing.assert_array_equal(adam, l2)
    adamw, _ = run_step_api("AdamW", {"lr": 0.02, "weight_decay": wd}, C + 1.0, smooth_grad, 40)
    assert np.max(np.abs(adamw - adam)) > 1e-3


# ----------------------------------------------------------------------------- schedules


SCHEDULE_CASES = [
    (schedules.constant(), lambda lr, k: naive.constant_lr(lr, k)),
    (schedules.exponential(0.97), lambda lr, k: naive.exponential_lr(lr, k, 0.97)),
    (schedules.inverse_time(0.5, 10), lambda lr, k: naive.inverse_time_lr(lr, k, 0.5, 10)),
    (schedules.cosine(120, 1e-3), lambda lr, k: naive.cosine_lr(lr, k, 120, 1e-3)),
    (schedules.step(25, 0.5), lambda lr, k: naive.step_lr(lr, k, 25, 0.5)),
]


def fastopt_lr(schedule, lr, k):
    return schedules.scheduled_lr(float(lr), int(k), int(schedule.kind), float(schedule.a),
                                  float(schedule.b), float(schedule.c))


@pytest.mark.parametrize(("schedule", "reference"), SCHEDULE_CASES,
                         ids=["constant", "exponential", "inverse_time", "cosine", "step"])
def test_schedule_matches_naive(schedule, reference):
    ks = np.arange(300)
    actual = np.array([fastopt_lr(schedule, 0.1, k) for k in ks])
    np.testing.assert_allclose(actual, reference(0.1, ks), rtol=1e-13)
    assert actual[0] == 0.1  # update 0 uses the base rate


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-6, 10.0), k=st.integers(0, 10_000), gamma=st.floats(0.5, 1.0),
       period=st.integers(1, 5000), eta_frac=st.floats(0.0, 1.0))
def test_schedules_match_naive_for_drawn_parameters(lr, k, gamma, period, eta_frac):
    eta_min = eta_frac * lr
    pairs = [
        (schedules.exponential(gamma), naive.exponential_lr(lr, k, gamma)),
        (schedules.inverse_time(gamma, period), naive.inverse_time_lr(lr, k, gamma, period)),
        (schedules.cosine(period, eta_min), naive.cosine_lr(lr, k, period, eta_min)),
        (schedules.step(period, gamma), naive.step_lr(lr, k, period, gamma)),
    ]
    for schedule, expected in pairs:
        # cosine's absolute error is an ulp of lr (the cos term cancels near 0)
        np.testing.assert_allclose(fastopt_lr(schedule, lr, k), expected, rtol=1e-13,
                                   atol=4e-16 * lr)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: schedules.exponential(0.0), "gamma"),
        (lambda: schedules.exponential(float("nan")), "gamma"),
        (lambda: schedules.inverse_time(-1.0), "decay_rate"),
        (lambda: schedules.inverse_time(0.1, 0), "decay_steps"),
        (lambda: schedules.cosine(0), "T_max"),
        (lambda: schedules.cosine(10, -1.0), "eta_min"),
        (lambda: schedules.step(0), "step_size"),
        (lambda: schedules.step(10, -0.5), "gamma"),
    ],
)
def test_schedule_bad_parameters_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan-inf"])
@pytest.mark.parametrize("clip_value", [0.5, 1e9])
def test_clip_by_value_matches_naive(clip_value, nonfinite):
    rng = np.random.default_rng(3)
    g = rng.standard_normal(301) * 2
    if nonfinite:
        g = with_nonfinite(g, rng)
    expected = naive.clip_by_value(g, clip_value)
    clipping.clip_by_value(g, float(clip_value))
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("max_norm", [0.5, 10.0, 1e9])
def test_clip_by_norm_matches_naive(max_norm):
    rng = np.random.default_rng(4)
    g = rng.standard_normal(301)
    expected = naive.clip_by_norm(g, max_norm)
    clipping.clip_by_norm(g, float(max_norm))
    assert_same(g, expected)  # the norm's summation order differs: an ulp
    if max_norm < 17:  # clipped: the new norm is max_norm (up to the 1e-6 in the formula)
        np.testing.assert_allclose(np.linalg.norm(g), max_norm, rtol=1e-5)


def test_clip_by_norm_with_inf_matches_naive():
    g = np.array([1.0, np.inf, -2.0, 0.0])
    expected = naive.clip_by_norm(g, 1.0)  # coef = 0: inf * 0 = NaN, the rest 0
    clipping.clip_by_norm(g, 1.0)
    np.testing.assert_array_equal(g, expected)


def test_clip_by_norm_with_nan_matches_torch_formula():
    g = np.array([1.0, np.nan, -2.0])
    expected = naive.clip_by_norm(g, 1.0)
    clipping.clip_by_norm(g, 1.0)
    np.testing.assert_array_equal(g, expected)


# ----------------------------------------------------------------------------- minimize


QUAD_D = 5
QUAD_C = np.array([1.0 if i % 2 == 0 else -2.0 for i in range(QUAD_D)])


def quadratic_grad_numpy(x):
    """conftest.quadratic_grad, vectorised in the same operation order (bit-identical)."""
    return 2.0 * (np.arange(x.size) + 1.0) * (x - QUAD_C)


# (method, options, schedule, the naive schedule, loop options)
MINIMIZE_CASES = [
    ("sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": True}, schedules.exponential(0.99),
     lambda k: naive.exponential_lr(0.01, k, 0.99), {}),
    ("adagrad", {"lr": 0.5, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
     schedules.inverse_time(0.05, 10), lambda k: naive.inverse_time_lr(0.5, k, 0.05, 10), {}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "centered": True, "momentum": 0.5},
     schedules.cosine(150, 1e-3), lambda k: naive.cosine_lr(0.01, k, 150, 1e-3), {}),
    ("adam", {"lr": 0.05, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.01},
     schedules.step(40, 0.5), lambda k: naive.step_lr(0.05, k, 40, 0.5), {"clip_norm": 5.0}),
    ("adamw", {"lr": 0.05, "weight_decay": 0.1}, schedules.constant(), None,
     {"clip_value": 1.0}),
]


@pytest.mark.parametrize(("method", "options", "schedule", "lr_at", "loop"), MINIMIZE_CASES,
                         ids=[c[0] for c in MINIMIZE_CASES])
def test_minimize_reproduces_naive_loop(method, options, schedule, lr_at, loop):
    x0 = np.zeros(QUAD_D)
    res = fastopt.minimize(quadratic, x0, jac=quadratic_grad, method=method,
                           options={**options, **loop, "schedule": schedule, "gtol": 0.0,
                                    "maxiter": 200, "history": True})
    assert res.nit == 200 and res.status == fastopt.Status.MAXITER
    expected, _ = naive.run(method, x0, quadratic_grad_numpy, 200, lr_at=lr_at, **loop,
                            **options)
    assert_bitwise_equal(res.x_history, expected)
    np.testing.assert_allclose(res.jac, quadratic_grad_numpy(res.x), rtol=1e-13)
