"""fastopt and its peers on the workloads of GitHub issue #2, in one table.

Every workload here is a ``prepare_*`` function that does all the set-up
(imports, allocation, JIT compilation and a warm-up call) and returns ``run``,
a no-argument callable whose every call does the timed work once from the same
inputs and returns the result. The pytest-benchmark files and
``benchmarks/report.py`` time the very same ``run`` callables, so the numbers
of both agree.

Sizes: small by default, so that ``pytest benchmarks`` (``--benchmark-disable``)
is a quick smoke test that runs every body once; the issue's sizes with
``FASTOPT_BENCH_FULL=1``.

Peers that are not installed are skipped (``pytest.importorskip``; report.py
catches the skip and prints "n/a").

Only fastopt's public API is used: ``fastopt.minimize``, ``fastopt.minimize_batch``,
``fastopt.Adam`` and ``fastopt.functions``.
"""

import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from numba import prange

import fastopt
from fastopt.functions import rosenbrock, rosenbrock_hess

FULL = os.environ.get("FASTOPT_BENCH_FULL", "0").strip() not in ("", "0")

# --- sizes --------------------------------------------------------------------------
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
SEED = 0

BATCH_SHAPES_FULL = [(10_000, 10), (100_000, 2), (100, 1000)]
BATCH_STEPS_FULL = 1000
BATCH_SHAPES_SMOKE = [(n // 10, d) for n, d in BATCH_SHAPES_FULL]
BATCH_STEPS_SMOKE = 50
STEP_PARAMS_FULL = 10_000_000
STEP_PARAMS_SMOKE = 1_000_000  # still above fastopt's PARALLEL_THRESHOLD (2**18)
MINIMIZE_ITERS_FULL = 100_000
MINIMIZE_ITERS_SMOKE = 10_000
RULE_STEP_PARAMS_FULL = 100_000  # below PARALLEL_THRESHOLD: the serial kernels
RULE_STEP_PARAMS_SMOKE = 10_000
RULE_BATCH_SHAPES_FULL = [(10_000, 10), (100, 1000)]  # the block form; the point form
RULE_BATCH_SHAPES_SMOKE = [(n // 10, d) for n, d in RULE_BATCH_SHAPES_FULL]
# steps per timed call of a rule's step: the arrays warm in cache after the first, as in
# a training loop, whatever else the report interleaves
RULE_STEPS_PER_CALL = 10


def sizes(full=FULL):
    """The sizes of every workload: the issue's (``full``) or the smoke test's."""
    if full:
        return {"batch_shapes": BATCH_SHAPES_FULL, "batch_steps": BATCH_STEPS_FULL,
                "step_params": STEP_PARAMS_FULL, "minimize_iters": MINIMIZE_ITERS_FULL,
                "rule_step_params": RULE_STEP_PARAMS_FULL,
                "rule_batch_shapes": RULE_BATCH_SHAPES_FULL}
    return {"batch_shapes": BATCH_SHAPES_SMOKE, "batch_steps": BATCH_STEPS_SMOKE,
            "step_params": STEP_PARAMS_SMOKE, "minimize_iters": MINIMIZE_ITERS_SMOKE,
            "rule_step_params": RULE_STEP_PARAMS_SMOKE,
            "rule_batch_shapes": RULE_BATCH_SHAPES_SMOKE}


SIZES = sizes()

# Final points after T Adam steps agree to ATOL between fastopt, NumPy, torch and
# JAX for T <= CHECK_MAX_STEPS: all four implement torch's formula and the same
# gradient, and differ only in rounding (fastopt and NumPy: not even that). Over
# 1000 steps a few starts amplify rounding differences (seen: 1e-4 for JAX and
# torch at N=100_000), so at full size agreement is reported, not asserted.
ATOL = 1e-9
CHECK_MAX_STEPS = 50


def starts(n, d, seed=SEED):
    """The starting points every peer uses: uniform in Rosenbrock's box [-2, 2]^d."""
    low, high = rosenbrock.bounds
    return np.random.default_rng(seed).uniform(low, high, size=(n, d))


def batch_options(steps):
    """Adam for exactly ``steps`` iterations (gtol 0 never stops earlier)."""
    return {"lr": LR, "betas": BETAS, "eps": EPS, "maxiter": steps, "gtol": 0.0}


# --- a user's own per-point objective, written as a user would write it --------------
@numba.njit
def user_rosenbrock(x):
    s = 0.0
    for i in range(x.size - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


@numba.njit
def user_rosenbrock_grad(x):
    g = np.zeros_like(x)
    for i in range(x.size - 1):
        a = x[i + 1] - x[i] ** 2
        g[i] += -400.0 * x[i] * a - 2.0 * (1.0 - x[i])
        g[i + 1] += 200.0 * a
    return g


@numba.njit
def user_rosenbrock_inplace(x, g):
    """The same, written in place: fun(x, g) -> f fills g (jac="inplace"), no allocation."""
    g[:] = 0.0
    s = 0.0
    for i in range(x.size - 1):
        a = x[i + 1] - x[i] ** 2
        s += 100.0 * a**2 + (1.0 - x[i]) ** 2
        g[i] += -400.0 * x[i] * a - 2.0 * (1.0 - x[i])
        g[i + 1] += 200.0 * a
    return s


OBJECTIVES = {
    # fastopt's built-in in-place objective: fun(x, g) -> f with jac="inplace"
    "builtin-inplace": rosenbrock.minimize_kwargs(),
    # a user's @njit pair fun(x) -> f, jac(x) -> g (jac returns a new g, which fastopt
    # rewrites to write into its own buffer: fastopt.rewrite)
    "user-njit-fun+jac": {"fun": user_rosenbrock, "jac": user_rosenbrock_grad},
    # the same user's @njit objective in fastopt's in-place protocol
    "user-njit-inplace": {"fun": user_rosenbrock_inplace, "jac": "inplace"},
}
# minimize_batch also takes the built-in block objective, fun(X, G, F) on (d, B) blocks
# of starts with jac="block", where this fastopt has it (TestFunction.batch_kwargs).
BATCH_OBJECTIVES = dict(OBJECTIVES)
if hasattr(rosenbrock, "batch_kwargs") and rosenbrock.batch_kwargs().get("jac") == "block":
    BATCH_OBJECTIVES["builtin-block"] = rosenbrock.batch_kwargs()


# --- workload 1: batch Adam on Rosenbrock, T fixed ------------------------------------
def _prepare_fastopt_batch(objective, X0, steps, workers):
    if objective not in BATCH_OBJECTIVES:
        pytest.skip(f"this fastopt has no {objective} objective for minimize_batch")
    kwargs = BATCH_OBJECTIVES[objective]
    options = batch_options(steps)
    # compile (not timed): the loop is compiled per (rule, objective), not per shape
    fastopt.minimize_batch(X0=X0[:2], method="adam", options={**options, "maxiter": 1},
                           workers=workers, **kwargs)

    def run():
        return fastopt.minimize_batch(X0=X0, method="adam", options=options, workers=workers,
                                      **kwargs).x

    return run


def prepare_fastopt_batch(X0, steps, workers=None):
    """``fastopt.minimize_batch`` with the built-in in-place Rosenbrock."""
    return _prepare_fastopt_batch("builtin-inplace", X0, steps, workers)


def prepare_fastopt_block_batch(X0, steps, workers=None):
    """``fastopt.minimize_batch`` with the built-in block objective (``jac="block"``)."""
    return _prepare_fastopt_batch("builtin-block", X0, steps, workers)


def prepare_fastopt_user_batch(X0, steps, workers=None):
    """``fastopt.minimize_batch`` with a user's per-point ``@njit`` fun + jac."""
    return _prepare_fastopt_batch("user-njit-fun+jac", X0, steps, workers)


def prepare_fastopt_user_inplace_batch(X0, steps, workers=None):
    """``fastopt.minimize_batch`` with a user's per-point ``@njit`` in-place objective."""
    return _prepare_fastopt_batch("user-njit-inplace", X0, steps, workers)


def numpy_rosenbrock_grad(X, G):
    """Gradient of Rosenbrock at every row of ``X``, written into ``G`` (vectorized)."""
    head = X[:, :-1]
    a = X[:, 1:] - head**2
    np.multiply(-400.0 * head, a, out=G[:, :-1])
    G[:, :-1] -= 2.0 * (1.0 - head)
    G[:, -1] = 0.0
    G[:, 1:] += 200.0 * a


def numpy_adam(X0, steps, lr=LR, betas=BETAS, eps=EPS):
    """Adam (torch's formula) on all starts at once: (N, d) arrays, a Python loop over T."""
    beta1, beta2 = betas
    X = X0.copy()
    m = np.zeros_like(X)
    v = np.zeros_like(X)
    G = np.empty_like(X)
    denom = np.empty_like(X)
    for t in range(1, steps + 1):
        numpy_rosenbrock_grad(X, G)
        m += (1.0 - beta1) * (G - m)
        v *= beta2
        v += (1.0 - beta2) * G * G
        step_size = lr / (1.0 - beta1**t)
        bias_correction2_sqrt = (1.0 - beta2**t) ** 0.5
        np.sqrt(v, out=denom)
        denom /= bias_correction2_sqrt
        denom += eps
        X -= step_size * m / denom
    return X


def prepare_numpy_batch(X0, steps, workers=None):
    """NumPy, vectorized over the starts, every operation in place (``out=``)."""
    def run():
        return numpy_adam(X0, steps)

    return run


def numpy_rosenbrock_grad_expressions(X):
    """Gradient of Rosenbrock at every row of ``X``, as array expressions (new arrays)."""
    head, tail = X[:, :-1], X[:, 1:]
    a = tail - head**2
    G = np.zeros_like(X)
    G[:, :-1] = -400.0 * head * a - 2.0 * (1.0 - head)
    G[:, 1:] += 200.0 * a
    return G


def numpy_adam_expressions(X0, steps, lr=LR, betas=BETAS, eps=EPS):
    """Adam on all starts at once, written as array expressions, as the textbook has it.

    Kingma and Ba's formula (the bias corrections applied to ``m`` and ``v``), each
    line a new array: the NumPy most users write. It rounds differently from torch's
    formula, within the benchmarks' tolerance.
    """
    beta1, beta2 = betas
    X = X0.copy()
    m = np.zeros_like(X)
    v = np.zeros_like(X)
    for t in range(1, steps + 1):
        G = numpy_rosenbrock_grad_expressions(X)
        m = beta1 * m + (1.0 - beta1) * G
        v = beta2 * v + (1.0 - beta2) * G**2
        m_hat = m / (1.0 - beta1**t)
        v_hat = v / (1.0 - beta2**t)
        X = X - lr * m_hat / (np.sqrt(v_hat) + eps)
    return X


def prepare_numpy_expressions_batch(X0, steps, workers=None):
    """NumPy, vectorized over the starts, written as array expressions."""
    def run():
        return numpy_adam_expressions(X0, steps)

    return run


def _jax_solver(steps):
    """``optax.adam`` for ``steps`` steps under ``jax.jit(jax.vmap(...))``, in float64."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    opt = optax.adam(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS)
    grad = jax.grad(rosen)

    def one_start(x0):
        def body(_, carry):
            x, state = carry
            updates, state = opt.update(grad(x), state, x)
            return optax.apply_updates(x, updates), state

        return jax.lax.fori_loop(0, steps, body, (x0, opt.init(x0)))[0]

    return jax, jax.jit(jax.vmap(one_start))


def prepare_jax_batch(X0, steps, workers=None):
    """``optax.adam`` under ``jax.jit(jax.vmap(...))`` with ``lax.fori_loop``, float64."""
    jax, solve = _jax_solver(steps)
    X0_device = jax.device_put(jax.numpy.asarray(X0, dtype=jax.numpy.float64))
    solve(X0_device).block_until_ready()  # compile (not timed)

    def run():
        return solve(X0_device).block_until_ready()

    return run


TORCH_THREADS = 2


def prepare_torch_batch(X0, steps, workers=None, threads=TORCH_THREADS):
    """``torch.optim.Adam(fused=True)`` on one (N, d) float64 tensor, gradient by hand."""
    _torch_batch(X0[:2], 2, threads)()  # warm-up (not timed)
    return _torch_batch(X0, steps, threads)


def prepare_torch_batch_1thread(X0, steps, workers=None):
    """As ``prepare_torch_batch`` on one thread: immune to OpenMP barrier stalls under load."""
    return prepare_torch_batch(X0, steps, threads=1)


def _torch_batch(X0, steps, threads):
    torch = pytest.importorskip("torch")
    X0_tensor = torch.from_numpy(X0)

    def run():
        torch.set_num_threads(threads)  # process-wide: set on every run, peers interleave
        p = torch.nn.Parameter(X0_tensor.clone())
        p.grad = torch.empty_like(p)
        opt = torch.optim.Adam([p], lr=LR, betas=BETAS, eps=EPS, fused=True)
        x, g = p.detach(), p.grad
        a = torch.empty_like(x[:, 1:])
        with torch.no_grad():
            for _ in range(steps):
                head = x[:, :-1]
                torch.mul(head, head, out=a)
                torch.sub(x[:, 1:], a, out=a)  # a = x[1:] - x[:-1]^2
                torch.mul(head, a, out=g[:, :-1])
                g[:, :-1].mul_(-400.0).add_(head, alpha=2.0).sub_(2.0)
                g[:, -1].zero_()
                g[:, 1:].add_(a, alpha=200.0)
                opt.step()
        return x.numpy()

    return run


def prepare_torch_autograd_batch(X0, steps, workers=None, threads=TORCH_THREADS):
    """``torch.optim.Adam(fused=True)`` on one (N, d) float64 tensor, gradient by autograd."""
    _torch_autograd_batch(X0[:2], 2, threads)()  # warm-up (not timed)
    return _torch_autograd_batch(X0, steps, threads)


def _torch_autograd_batch(X0, steps, threads):
    torch = pytest.importorskip("torch")
    X0_tensor = torch.from_numpy(X0)

    def run():
        torch.set_num_threads(threads)
        p = torch.nn.Parameter(X0_tensor.clone())
        opt = torch.optim.Adam([p], lr=LR, betas=BETAS, eps=EPS, fused=True)
        for _ in range(steps):
            opt.zero_grad()
            loss = (100.0 * (p[:, 1:] - p[:, :-1] ** 2) ** 2 + (1.0 - p[:, :-1]) ** 2).sum()
            loss.backward()
            opt.step()
        return p.detach().numpy()

    return run


@numba.njit(nogil=True, error_model="numpy")
def _adam_tile(x, g, m, v, step_size, bias_correction2_sqrt, beta1, beta2, eps):
    for i in range(x.size):
        gi = g[i]
        mi = m[i] + (1.0 - beta1) * (gi - m[i])
        vi = v[i] * beta2 + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        x[i] = x[i] + (-step_size) * mi / (np.sqrt(vi) / bias_correction2_sqrt + eps)


@numba.njit(parallel=True, nogil=True, error_model="numpy")
def adam_arithmetic_floor(X, G, steps, lr, beta1, beta2, eps, tile):
    """Adam's update alone, ``steps`` times on every element of ``X`` with a fixed gradient.

    torch's formula (two divisions and a square root per element), each thread keeping
    its tiles of ``tile`` elements in cache for all the steps, and no gradient, no checks:
    a lower bound for any batch Adam that computes torch's numbers. (The tile's loop is
    a function of its own: written inline in the ``prange`` body, LLVM does not vectorize
    it and it runs at half the speed.)
    """
    x, g = X.reshape(-1), G.reshape(-1)
    n = x.size
    for k in prange((n + tile - 1) // tile):
        lo, hi = k * tile, min(n, (k + 1) * tile)
        m = np.zeros(hi - lo)
        v = np.zeros(hi - lo)
        for t in range(1, steps + 1):
            _adam_tile(x[lo:hi], g[lo:hi], m, v, lr / (1.0 - beta1**t),
                       np.sqrt(1.0 - beta2**t), beta1, beta2, eps)


@numba.njit(parallel=True)
def numba_per_start_adam(X, steps, lr, beta1, beta2, eps):
    """The issue's reference: a straightforward numba kernel, ``prange`` over the starts.

    Each task runs one start's ``steps`` Adam steps (torch's formula) on Rosenbrock, with
    numba's default options (``error_model="python"``), as the issue measured it: the
    "numba per-start" column, 1.00, of the issue's table.
    """
    n, d = X.shape
    for s in prange(n):
        x = X[s]
        g = np.zeros(d)
        m = np.zeros(d)
        v = np.zeros(d)
        for t in range(1, steps + 1):
            g[:] = 0.0
            for i in range(d - 1):
                a = x[i + 1] - x[i] * x[i]
                g[i] += -400.0 * x[i] * a - 2.0 * (1.0 - x[i])
                g[i + 1] += 200.0 * a
            step_size = lr / (1.0 - beta1**t)
            bias_correction2_sqrt = np.sqrt(1.0 - beta2**t)
            for i in range(d):
                m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
                x[i] -= step_size * m[i] / (np.sqrt(v[i]) / bias_correction2_sqrt + eps)


def prepare_numba_per_start_batch(X0, steps, workers=None):
    """The issue's reference kernel (:func:`numba_per_start_adam`) on the starts."""
    numba_per_start_adam(X0[:2].copy(), 1, LR, *BETAS, EPS)  # compile (not timed)

    def run():
        X = X0.copy()
        numba_per_start_adam(X, steps, LR, *BETAS, EPS)
        return X

    return run


FLOOR_TILE = 512  # 4 arrays x 4 KiB: in L1 (measured: 512 and 2048 the same, 0.85 ns)


def prepare_adam_floor_batch(X0, steps, workers=None):
    """The floor: :func:`adam_arithmetic_floor` on the starts, gradient fixed at the start's."""
    G = np.empty_like(X0)
    numpy_rosenbrock_grad(X0, G)
    adam_arithmetic_floor(X0.copy(), G, 1, LR, *BETAS, EPS, FLOOR_TILE)  # compile (not timed)

    def run():
        X = X0.copy()
        adam_arithmetic_floor(X, G, steps, LR, *BETAS, EPS, FLOOR_TILE)
        return X

    return run


# Not an implementation of the workload: its result differs, and it is timed beside the
# peers to show what no implementation of torch's Adam can beat on this machine.
BATCH_FLOORS = {"adam-arithmetic-floor": prepare_adam_floor_batch}

# The issue states its targets as ratios to peers it timed against this kernel (1.00):
# JAX + optax 1.12 / 0.18 / 2.1, NumPy batched 10.2 / 2.3 / 20.4, torch fused 3.3 /
# 0.54 / 7.2 at 10,000 x 10, 100,000 x 2 and 100 x 1000. Timing it beside the peers
# shows which implementation of each peer the targets were set against.
ISSUE_REFERENCE = "numba-per-start"
ISSUE_TABLE = {
    "jax-optax": (1.12, 0.18, 2.1),
    "numpy": (10.2, 2.3, 20.4),
    "torch-fused": (3.3, 0.54, 7.2),
}
BATCH_REFERENCES = {ISSUE_REFERENCE: prepare_numba_per_start_batch}

BATCH_PEERS = {
    "fastopt": prepare_fastopt_batch,
    "fastopt-block": prepare_fastopt_block_batch,
    "fastopt-user-njit": prepare_fastopt_user_batch,
    "fastopt-user-inplace": prepare_fastopt_user_inplace_batch,
    "jax-optax": prepare_jax_batch,
    "numpy": prepare_numpy_batch,
    "numpy-expressions": prepare_numpy_expressions_batch,
    "torch-fused": prepare_torch_batch,
    "torch-fused-1thread": prepare_torch_batch_1thread,
    "torch-fused-autograd": prepare_torch_autograd_batch,
}


# --- workload 2: one Adam step on a large parameter vector -----------------------------
def _step_arrays(n):
    rng = np.random.default_rng(SEED)
    return rng.standard_normal(n), rng.standard_normal(n)


def prepare_fastopt_step(n):
    """``fastopt.Adam.step`` (in place; multithreaded above 2**18 elements)."""
    x, g = _step_arrays(n)
    opt = fastopt.Adam(lr=LR, betas=BETAS, eps=EPS)
    state = opt.init(x)
    opt.step(x, g, state)  # compile / load from cache (not timed)

    def run():
        opt.step(x, g, state)
        return x

    return run


def prepare_torch_step(n, threads=TORCH_THREADS):
    """``torch.optim.Adam(fused=True).step()`` on one float64 tensor."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    x, g = _step_arrays(n)
    p = torch.nn.Parameter(torch.from_numpy(x))
    p.grad = torch.from_numpy(g)
    opt = torch.optim.Adam([p], lr=LR, betas=BETAS, eps=EPS, fused=True)
    opt.step()  # allocates the state (not timed)

    def run():
        torch.set_num_threads(threads)
        opt.step()
        return x

    return run


@numba.njit(parallel=True, nogil=True, error_model="numpy")
def adam_traffic_floor(x, g, m, v, c):
    """Adam's memory traffic (read x, g, m, v; write x, m, v) with trivial arithmetic."""
    for i in prange(x.size):
        gi = g[i]
        mi = 0.5 * (m[i] + gi)
        vi = 0.5 * (v[i] + gi)
        m[i] = mi
        v[i] = vi
        x[i] = x[i] - c * (mi + vi)


def prepare_floor_step(n):
    """A numba ``prange`` kernel with Adam's memory traffic: the speed limit of a step."""
    x, g = _step_arrays(n)
    m, v = np.zeros(n), np.zeros(n)
    adam_traffic_floor(x, g, m, v, LR)

    def run():
        adam_traffic_floor(x, g, m, v, LR)
        return x

    return run


STEP_PEERS = {
    "fastopt": prepare_fastopt_step,
    "torch-fused": prepare_torch_step,
    "memory-floor": prepare_floor_step,
}


# --- workload 3: fastopt.minimize per iteration and per call ---------------------------
X0_2D = np.array([-1.2, 1.0])


MINIMIZE_LOOPS = ("specialized", "portable")


def prepare_minimize(objective, maxiter, loop="specialized"):
    """``fastopt.minimize``: 2-D Adam on Rosenbrock for exactly ``maxiter`` iterations.

    ``loop``: "specialized" times the loop compiled for the objective, which a long job
    runs (fastopt compiles it once the objective has run ``SPECIALIZE_AFTER_SECONDS``);
    "portable" the loop cached on disk, which a new objective's short calls run.
    """
    if loop not in MINIMIZE_LOOPS:
        raise ValueError(f"loop must be one of {MINIMIZE_LOOPS}; got {loop!r}")
    kwargs = OBJECTIVES[objective]
    options = {"lr": LR, "maxiter": maxiter, "gtol": 0.0}
    # 0: specialized from the second call (the first, here, may run the portable loop)
    after = 0.0 if loop == "specialized" else np.inf

    def run():
        default = fastopt.loop.SPECIALIZE_AFTER_SECONDS
        fastopt.loop.SPECIALIZE_AFTER_SECONDS = after
        try:
            return fastopt.minimize(x0=X0_2D, method="adam", options=options, **kwargs)
        finally:
            fastopt.loop.SPECIALIZE_AFTER_SECONDS = default

    run()
    run()
    return run


# --- workload 6: compile time of a first call with a new objective ----------------------
def new_objective(kind):
    """Fresh ``@njit`` functions (new dispatchers, so nothing is reused from earlier calls)."""
    if kind == "user-njit-fun+jac":
        fun = numba.njit(user_rosenbrock.py_func)
        jac = numba.njit(user_rosenbrock_grad.py_func)
        return {"fun": fun, "jac": jac}
    if kind == "user-njit-inplace":
        return {"fun": numba.njit(user_rosenbrock_inplace.py_func), "jac": "inplace"}
    raise ValueError(kind)


COMPILE_KINDS = ("user-njit-fun+jac", "user-njit-inplace")


def first_batch_call(kind):
    """One ``minimize_batch`` (4 starts, 1 iteration) with objective functions nobody compiled."""
    kwargs = new_objective(kind)
    return fastopt.minimize_batch(X0=starts(4, 2), method="adam",
                                  options={"lr": LR, "maxiter": 1}, **kwargs)


COMPILE_METHODS = ("adam", "bfgs", "lbfgs", "newton")


def first_minimize_call(method):
    """One ``minimize`` (1 iteration) of ``method`` with functions nobody compiled: a
    user's @njit fun + jac (+ hess for Newton). Compiles those; the rule's loop is the
    portable one, loaded from the disk cache (in memory after the first call here)."""
    kwargs = new_objective("user-njit-fun+jac")
    if method == "newton":
        kwargs["hess"] = numba.njit(rosenbrock_hess.py_func)
    return fastopt.minimize(x0=X0_2D, method=method, options={"maxiter": 1}, **kwargs)


def prepare_jax_compile(X0, steps):
    """JAX's trace + XLA compile of the batch workload (XLA compiles per shape)."""
    jax, _ = _jax_solver(steps)
    X0_device = jax.device_put(jax.numpy.asarray(X0, dtype=jax.numpy.float64))

    def run():
        _, solve = _jax_solver(steps)  # a new function: nothing reused from earlier calls
        return solve.lower(X0_device).compile()

    return run


# --- workload 5: cold start in a fresh interpreter --------------------------------------
COLD_START_SCRIPT = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import numba
    t1 = time.perf_counter()
    import fastopt
    t2 = time.perf_counter()
    import numpy as np

    @numba.njit
    def fun(x):
        return (x[0] - 1.0) ** 2 + 10.0 * (x[1] - x[0] ** 2) ** 2

    @numba.njit
    def jac(x):
        a = x[1] - x[0] ** 2
        return np.array([2.0 * (x[0] - 1.0) - 40.0 * x[0] * a, 20.0 * a])

    x0 = np.array([-1.2, 1.0])
    t3 = time.perf_counter()
    fun(x0), jac(x0)  # numba compiles the user's own functions (lazily, as in any program)
    t4 = time.perf_counter()
    res = fastopt.minimize(fun, x0, jac=jac, method="adam", options={"lr": 1e-2, "maxiter": 100})
    t5 = time.perf_counter()
    assert res.nit == 100, res
    print(json.dumps({"import_numba": t1 - t0, "import_fastopt": t2 - t1,
                      "user_compile": t4 - t3, "first_minimize": t5 - t4}))
""")


def cold_start(cache_dir):
    """Run COLD_START_SCRIPT in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``.

    Returns its timings in seconds: ``import_numba``, ``import_fastopt`` (beyond
    numba), ``user_compile`` (numba compiling the user's new fun and jac, which any
    program using them pays), ``first_minimize`` (fastopt's part of the first call:
    its loop compiled around the user functions; kernels without function arguments
    may load from the cache), ``total`` (the sum of those four) and ``process``
    (the whole subprocess, interpreter start-up included).
    """
    import time

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD_START_SCRIPT], env=env, check=True,
                         capture_output=True, text=True, timeout=600)
    process = time.perf_counter() - t0
    timings = json.loads(out.stdout.strip().splitlines()[-1])
    timings["total"] = sum(timings.values())
    timings["process"] = process
    return timings


# --- workload 5: every rule and option set, step API and batch ---------------------------
# (method, options): each rule plain and with each option that changes its loop's buffers
# or arithmetic. lr keeps every Rosenbrock start in [-2, 2]^d finite for the batch steps.
RULE_CASES = [
    ("sgd", {"lr": 1e-4}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9, "nesterov": True}),
    ("adagrad", {"lr": 1e-2}),
    ("rmsprop", {"lr": 1e-4}),
    ("rmsprop", {"lr": 1e-4, "momentum": 0.9}),
    ("rmsprop", {"lr": 1e-4, "centered": True}),
    ("rmsprop", {"lr": 1e-4, "momentum": 0.9, "centered": True}),
    ("adam", {"lr": 1e-3}),
    ("adam", {"lr": 1e-3, "amsgrad": True}),
    ("adamw", {"lr": 1e-3}),
]
# the step API's optimizers by method name; torch.optim's classes have the same names
_STEP_API = {cls.method: cls for cls in (fastopt.SGD, fastopt.Adagrad, fastopt.RMSprop,
                                         fastopt.Adam, fastopt.AdamW)}


def rule_case_id(case):
    method, options = case
    return method + "".join(f"-{k}" if v is True else f"-{k}={v}" for k, v in options.items()
                            if k != "lr")


def prepare_rule_step(case, n):
    """``RULE_STEPS_PER_CALL`` steps of fastopt's step API (``opt.step``) for ``case`` on
    ``n`` parameters (the serial kernels)."""
    method, options = case
    x, g = _step_arrays(n)
    g *= 1e-3
    opt = _STEP_API[method](**options)
    state = opt.init(x)
    opt.step(x, g, state)  # compile / load from cache (not timed)

    def run():
        for _ in range(RULE_STEPS_PER_CALL):
            opt.step(x, g, state)
        return x

    return run


def prepare_torch_rule_step(case, n, threads=TORCH_THREADS):
    """torch.optim's optimizer for ``case`` on one float64 tensor of ``n`` parameters,
    fused where torch has a fused CPU kernel (all but RMSprop): ``RULE_STEPS_PER_CALL``
    calls of ``step()`` with a fixed gradient."""
    import inspect

    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    method, options = case
    x, g = _step_arrays(n)
    g *= 1e-3
    p = torch.nn.Parameter(torch.from_numpy(x))
    p.grad = torch.from_numpy(g)
    optimizer = getattr(torch.optim, _STEP_API[method].__name__)
    fused = {"fused": True} if "fused" in inspect.signature(optimizer).parameters else {}
    opt = optimizer([p], **options, **fused)
    opt.step()  # allocates the state (not timed)

    def run():
        torch.set_num_threads(threads)
        for _ in range(RULE_STEPS_PER_CALL):
            opt.step()
        return x

    return run


def prepare_rule_batch(case, X0, steps):
    """``minimize_batch`` with ``case`` on Rosenbrock for ``steps`` steps, in the form
    ``rosenbrock.batch_kwargs(d)`` picks (block form up to d = 64, point form above);
    ``run()`` returns the result, whose ``nit`` gives the coordinate-steps taken."""
    method, options = case
    kwargs = rosenbrock.batch_kwargs(X0.shape[1])
    opts = {**options, "maxiter": steps, "gtol": 0.0}
    fastopt.minimize_batch(X0=X0[:2], method=method, options=opts, **kwargs)  # compile

    def run():
        return fastopt.minimize_batch(X0=X0, method=method, options=opts, **kwargs)

    return run


# --- pytest plumbing ---------------------------------------------------------------------
# The benchmark files take everything above from the ``workloads`` fixture and are
# parametrized here, so they never ``import conftest`` (ambiguous next to tests/conftest.py).
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def workloads():
    """This module: the workload table every benchmark file uses."""
    return _THIS_MODULE


def shape_id(shape):
    n, d = shape
    return f"N{n}-d{d}"


def pytest_generate_tests(metafunc):
    params = {
        "batch_peer": (list(BATCH_PEERS), None),
        "batch_floor": (list(BATCH_FLOORS), None),
        "batch_shape": (SIZES["batch_shapes"], shape_id),
        "step_peer": (list(STEP_PEERS), None),
        "objective": (list(OBJECTIVES), None),
        "compile_kind": (list(COMPILE_KINDS), None),
        "compile_method": (list(COMPILE_METHODS), None),
        "workers": ([1, 2], lambda w: f"workers{w}"),
        "rule_case": (RULE_CASES, rule_case_id),
        "rule_batch_shape": (SIZES["rule_batch_shapes"], shape_id),
    }
    for name, (values, ids) in params.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=ids)


@pytest.fixture(scope="session")
def numpy_reference():
    """NumPy-batched Adam's final points per (shape, steps): the reference for agreement."""
    cache = {}

    def get(shape, steps):
        key = (*shape, steps)
        if key not in cache:
            cache[key] = numpy_adam(starts(*shape), steps)
        return cache[key]

    return get
