"""Issue #3: multistart L-BFGS and (damped) Newton against scipy and optax, per start.

    pytest benchmarks/test_bench_second_order.py --benchmark-enable --benchmark-group-by=group
    FASTOPT_BENCH_FULL=1 pytest benchmarks/test_bench_second_order.py --benchmark-enable
    python benchmarks/test_bench_second_order.py          # the issue's sizes: ratio table
    python benchmarks/test_bench_second_order.py --quick  # smoke sizes

Workloads (starts uniform in [-2, 2]^d, gtol 1e-6 on the infinity norm of the gradient):

* ``lbfgs``: Rosenbrock-10, L-BFGS (m = 10). fastopt ``minimize_batch`` on every core
  (10,000 starts); scipy ``L-BFGS-B`` in a Python loop over a subset of the same
  starts (it costs milliseconds per start); optax ``lbfgs`` (zoom line search)
  under ``jax.jit(jax.vmap(...))`` with a ``lax.while_loop`` to the same tolerance
  (compile excluded; every start runs until the slowest is done, finished ones frozen).
* ``newton``: Rosenbrock-d (d = 2 and 10), fastopt ``damped-newton`` and ``newton``
  against scipy ``trust-exact`` and ``Newton-CG`` (exact Hessians everywhere).

Each prepare function does all set-up (JIT compilation and a warm-up call
included) and returns ``run`` -> ``Outcome``; ``per_start`` is the wall time
divided by the number of starts the peer solved. scipy's BLAS is held to one
thread while it runs (its fastest setting for these tiny LAPACK calls; several
OpenBLAS threads spinning on a busy machine made each L-BFGS-B step milliseconds
slower). The global-minimum hit rate counts final values below 1e-8.

In pytest the sizes are small (smoke test; ``--benchmark-disable`` runs each body
once) unless ``FASTOPT_BENCH_FULL=1``.
"""

import contextlib
import ctypes
import os
import sys
import time
from typing import NamedTuple

import numba
import numpy as np
import pytest
import scipy.optimize as so

import fastopt
from fastopt.functions import rosenbrock

FULL = os.environ.get("FASTOPT_BENCH_FULL", "0").strip() not in ("", "0")
SEED = 3
GTOL = 1e-6
HIT = 1e-8  # f below this: the global minimum (0 at (1, ..., 1))
MAXITER = 10_000


def sizes(full=FULL):
    """Starts for fastopt/optax, and for the scipy loop (a subset of the same starts)."""
    if full:
        return {"lbfgs_starts": 10_000, "lbfgs_scipy_starts": 200, "newton_starts": 10_000,
                "newton_scipy_starts": 100}
    return {"lbfgs_starts": 400, "lbfgs_scipy_starts": 10, "newton_starts": 400,
            "newton_scipy_starts": 5}


def starts(n, d, seed=SEED):
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(n, d))


class Outcome(NamedTuple):
    """What a peer found from its starts."""

    fun: np.ndarray  # (n,) final values
    nit: np.ndarray  # (n,) iterations
    nfev: np.ndarray  # (n,) objective evaluations
    success: np.ndarray  # (n,) converged (gtol) per the peer


@contextlib.contextmanager
def single_threaded_blas():
    """Hold OpenBLAS (numpy's and scipy's) to one thread, restoring it afterwards."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1):
            yield
        return
    calls = []
    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for suffix in ("", "64_"):
                for prefix in ("scipy_openblas", "openblas"):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None:
                        calls.append((setter, getter()))
                        setter(1)
    try:
        yield
    finally:
        for setter, previous in calls:
            setter(previous)


# --- fastopt -----------------------------------------------------------------------------
def prepare_fastopt(X0, method, workers=None):
    """``fastopt.minimize_batch`` over every start (all threads unless ``workers``)."""
    if method == "lbfgs":
        kwargs = rosenbrock.minimize_kwargs()  # in-place fun(x, g) -> f
    else:
        kwargs = {"fun": rosenbrock.fun, "jac": rosenbrock.grad, "hess": rosenbrock.hess}
    options = {"gtol": GTOL, "maxiter": MAXITER}
    fastopt.minimize_batch(X0=X0[:2], method=method, options=options, workers=workers,
                           **kwargs)  # compile (not timed)

    def run():
        res = fastopt.minimize_batch(X0=X0, method=method, options=options, workers=workers,
                                     **kwargs)
        return Outcome(res.fun, res.nit, res.nfev, res.success)

    return run


# --- scipy -------------------------------------------------------------------------------
def prepare_scipy(X0, method, objective="compiled"):
    """``scipy.optimize.minimize`` in a Python loop over the starts.

    ``objective="compiled"``: fastopt's compiled Rosenbrock (a ~0.3 us call from
    Python), so the time is scipy's own. ``"numpy"``: scipy's ``rosen``,
    ``rosen_der``, ``rosen_hess``, as a scipy user would call it.
    """
    if objective == "numpy":
        fun, jac, hess = so.rosen, so.rosen_der, so.rosen_hess
    else:
        fun, jac, hess = rosenbrock.fun, rosenbrock.grad, rosenbrock.hess
    if method == "L-BFGS-B":
        options = {"gtol": GTOL, "ftol": 0.0, "maxiter": MAXITER}
        kwargs = {}
    elif method == "trust-exact":
        options = {"gtol": GTOL, "maxiter": MAXITER}
        kwargs = {"hess": hess}
    else:  # Newton-CG stops on the step size (xtol), not on the gradient
        options = {"xtol": 1e-10, "maxiter": MAXITER}
        kwargs = {"hess": hess}
    fun(X0[0])
    jac(X0[0])
    hess(X0[0])

    def run():
        out = []
        with single_threaded_blas():
            for x0 in X0:
                out.append(so.minimize(fun, x0, jac=jac, method=method, options=options,
                                       **kwargs))
        return Outcome(np.array([r.fun for r in out]), np.array([r.nit for r in out]),
                       np.array([r.nfev for r in out]), np.array([r.success for r in out]))

    return run


# --- optax -------------------------------------------------------------------------------
def _optax_lbfgs_solver(memory_size=10):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(rosen)

    def one_start(x0):
        def step(carry):
            x, state = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=rosen)
            return optax.apply_updates(x, updates), state

        def running(carry):
            _, state = carry
            count = optax.tree.get(state, "count")
            grad = optax.tree.get(state, "grad")
            return (count == 0) | ((count < MAXITER) & (jnp.max(jnp.abs(grad)) > GTOL))

        x, state = jax.lax.while_loop(running, step, (x0, opt.init(x0)))
        count = optax.tree.get(state, "count")
        return rosen(x), count, jnp.max(jnp.abs(jax.grad(rosen)(x))) <= GTOL

    return jax, jax.jit(jax.vmap(one_start))


def prepare_optax(X0):
    """``optax.lbfgs`` under ``jax.jit(jax.vmap(...))``, float64, compiled before timing."""
    jax, solve = _optax_lbfgs_solver()
    X0_device = jax.device_put(jax.numpy.asarray(X0, dtype=jax.numpy.float64))
    compiled = solve.lower(X0_device).compile()
    jax.block_until_ready(compiled(X0_device))  # warm-up (not timed)

    def run():
        fun, nit, success = jax.block_until_ready(compiled(X0_device))
        nit = np.asarray(nit)
        # optax's L-BFGS evaluates f and g once per iteration plus its line search
        return Outcome(np.asarray(fun), nit, np.full(nit.shape, -1), np.asarray(success))

    return run


LBFGS_PEERS = {
    "fastopt": lambda X0: prepare_fastopt(X0, "lbfgs"),
    "scipy-L-BFGS-B": lambda X0: prepare_scipy(X0, "L-BFGS-B"),
    "scipy-L-BFGS-B-numpy-rosen": lambda X0: prepare_scipy(X0, "L-BFGS-B", "numpy"),
    "optax-lbfgs-vmap": prepare_optax,
}
NEWTON_PEERS = {
    "fastopt-damped-newton": lambda X0: prepare_fastopt(X0, "damped-newton"),
    "fastopt-newton": lambda X0: prepare_fastopt(X0, "newton"),
    "scipy-trust-exact": lambda X0: prepare_scipy(X0, "trust-exact"),
    "scipy-trust-exact-numpy-rosen": lambda X0: prepare_scipy(X0, "trust-exact", "numpy"),
    "scipy-Newton-CG": lambda X0: prepare_scipy(X0, "Newton-CG"),
}


def workload_starts(workload, peer, d, size):
    """The starts a peer solves: scipy gets the first rows of the same matrix."""
    n = size[f"{workload}_starts"]
    if peer.startswith("scipy"):
        n = size[f"{workload}_scipy_starts"]
    return starts(size[f"{workload}_starts"], d)[:n]


# --- pytest-benchmark ---------------------------------------------------------------------
SIZES = sizes()


def _check(outcome, X0, peer):
    assert outcome.fun.shape == (X0.shape[0],)
    assert np.all(np.isfinite(outcome.fun))
    if peer != "fastopt-newton":  # pure Newton stops where H is indefinite (status 6)
        assert outcome.success.mean() >= 0.8, peer


@pytest.mark.parametrize("peer", list(LBFGS_PEERS))
def test_lbfgs_multistart_rosenbrock10(benchmark, peer):
    X0 = workload_starts("lbfgs", peer, 10, SIZES)
    benchmark.group = f"lbfgs rosenbrock-10 gtol {GTOL:g}"
    run = LBFGS_PEERS[peer](X0)
    outcome = benchmark(run)
    _check(outcome, X0, peer)
    benchmark.extra_info.update(peer=peer, starts=X0.shape[0], hit_rate=float(np.mean(
        outcome.fun < HIT)), mean_nit=float(outcome.nit.mean()))


@pytest.mark.parametrize("d", [2, 10])
@pytest.mark.parametrize("peer", list(NEWTON_PEERS))
def test_newton_multistart_rosenbrock(benchmark, peer, d):
    X0 = workload_starts("newton", peer, d, SIZES)
    benchmark.group = f"newton rosenbrock-{d} gtol {GTOL:g}"
    run = NEWTON_PEERS[peer](X0)
    outcome = benchmark(run)
    _check(outcome, X0, peer)
    benchmark.extra_info.update(peer=peer, starts=X0.shape[0], hit_rate=float(np.mean(
        outcome.fun < HIT)), mean_nit=float(outcome.nit.mean()))


def test_lbfgs_fastopt_rows_do_not_depend_on_threads():
    X0 = starts(64, 10)
    one = prepare_fastopt(X0, "lbfgs", workers=1)()
    two = prepare_fastopt(X0, "lbfgs", workers=2)()
    np.testing.assert_array_equal(one.fun, two.fun)
    np.testing.assert_array_equal(one.nit, two.nit)


# --- the full-size comparison ---------------------------------------------------------------
def measure(prepare, X0, repeats):
    """Best-of-``repeats`` wall time per start (s) and the outcome."""
    run = prepare(X0)
    best = np.inf
    outcome = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        outcome = run()
        best = min(best, time.perf_counter() - t0)
    return best / X0.shape[0], outcome


def compare(workload, peers, d, size, reference, repeats=3):
    """Rows of (peer, starts, us per start, speed-up of the reference, ...) for one workload."""
    rows = []
    results = {}
    for peer, prepare in peers.items():
        X0 = workload_starts(workload, peer, d, size)
        try:
            per_start, outcome = measure(prepare, X0, 1 if peer.startswith("scipy") else repeats)
        except pytest.skip.Exception as exc:
            rows.append((peer, 0, None, None, None, None, None, None, f"n/a ({exc})"))
            continue
        results[peer] = (per_start, outcome, X0.shape[0])
    ref_time, ref_outcome, _ = results[reference]
    for peer, (per_start, outcome, n) in results.items():
        ratio = per_start / ref_time
        same = float(np.mean(ref_outcome.fun[:n] < HIT))  # the reference on the same starts
        rows.append((peer, n, per_start * 1e6, ratio, float(np.mean(outcome.fun < HIT)), same,
                     float(outcome.nit.mean()), float(outcome.success.mean()), ""))
    return rows


def print_table(title, rows, reference):
    print(f"\n### {title}\n")
    print(f"| peer | starts | us / start | x slower than {reference} | hit rate | "
          f"{reference} hit rate on the same starts | mean nit | converged |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for peer, n, us, ratio, hit, same, nit, conv, note in rows:
        if us is None:
            print(f"| {peer} | - | {note} | | | | | |")
            continue
        print(f"| {peer} | {n} | {us:,.1f} | {ratio:,.1f} | {hit:.3f} | {same:.3f} | {nit:.1f} "
              f"| {conv:.3f} |")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    size = sizes(full="--quick" not in argv)
    print(f"fastopt {fastopt.__version__}, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), scipy {so.__name__.split('.')[0]} "
          f"{__import__('scipy').__version__}; gtol {GTOL:g}, starts uniform in [-2, 2]^d")
    rows = compare("lbfgs", LBFGS_PEERS, 10, size, "fastopt")
    print_table(f"L-BFGS (m = 10), Rosenbrock-10, {size['lbfgs_starts']} starts", rows,
                "fastopt")
    for d in (2, 10):
        rows = compare("newton", NEWTON_PEERS, d, size, "fastopt-damped-newton")
        print_table(f"Newton, Rosenbrock-{d}, {size['newton_starts']} starts", rows,
                    "fastopt-damped-newton")


if __name__ == "__main__":
    main()
