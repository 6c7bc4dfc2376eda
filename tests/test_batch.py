"""fastopt.minimize_batch: independence of starts, bit-identity, per-start options."""

import numpy as np
import pytest
from ctrl_c import ENDLESS_RUN_SCRIPT, interrupted
from problems import quadratic, quadratic_grad

import fastopt
from fastopt import Status
from fastopt.functions import rosenbrock, wavy


def _rows_equal_single_runs(res, X0, indices, **kwargs):
    for i in indices:
        single = fastopt.minimize(x0=X0[i], **kwargs)
        np.testing.assert_array_equal(res.x[i], single.x)
        assert res.fun[i] == single.fun or (np.isnan(res.fun[i]) and np.isnan(single.fun))
        assert res.nit[i] == single.nit and res.status[i] == single.status
        assert res.nfev[i] == single.nfev


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_row_is_bit_identical_to_single_run(workers, first_order):
    method, options = first_order
    X0 = np.random.default_rng(0).uniform(-2, 2, size=(64, 3))
    options = {**options, "maxiter": 300}
    kwargs = dict(fun=rosenbrock.fg, jac="inplace", method=method, options=options)
    res = fastopt.minimize_batch(X0=X0, workers=workers, **kwargs)
    _rows_equal_single_runs(res, X0, [0, 17, 63], **kwargs)


def test_thread_count_does_not_change_results():
    X0 = np.random.default_rng(1).uniform(-2, 2, size=(257, 4))
    kw = dict(jac="inplace", method="adam", options={"lr": 0.01, "maxiter": 2000})
    one = fastopt.minimize_batch(rosenbrock.fg, X0, workers=1, **kw)
    two = fastopt.minimize_batch(rosenbrock.fg, X0, workers=2, **kw)
    np.testing.assert_array_equal(one.x, two.x)
    np.testing.assert_array_equal(one.nit, two.nit)
    np.testing.assert_array_equal(one.status, two.status)


def test_each_start_stops_on_its_own():
    X0 = np.array([[0.0, 0.0], [1.0, -2.0], [50.0, 50.0]])  # the 2nd starts at the minimum
    res = fastopt.minimize_batch(quadratic, X0, jac=quadratic_grad, method="gd",
                                 options={"lr": 0.05})
    assert res.nit[1] == 0 and res.status[1] == Status.GTOL
    assert res.nit[0] < res.nit[2]
    assert res.success.all()


def test_diverging_start_touches_no_other():
    X0 = np.array([[0.5, 0.5], [0.1, -0.3], [-1.0, 2.0]])
    lr = np.array([0.01, 10.0, 0.01])  # the middle start diverges
    kw = dict(jac=quadratic_grad, method="gd")
    res = fastopt.minimize_batch(quadratic, X0, options={"lr": lr}, **kw)
    assert res.status[1] == Status.DIVERGED and not res.success[1]
    assert np.all(np.isfinite(res.x[1]))
    for i in (0, 2):
        alone = fastopt.minimize(quadratic, X0[i], options={"lr": 0.01}, **kw)
        np.testing.assert_array_equal(res.x[i], alone.x)
        assert res.success[i]


def test_per_start_hyperparameter_arrays_match_separate_runs():
    lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2])
    momenta = np.array([0.0, 0.5, 0.9, 0.0])
    X0 = np.tile([-1.2, 1.0], (4, 1))
    opts = {"lr": lrs, "momentum": momenta, "maxiter": 500}
    res = fastopt.minimize_batch(rosenbrock.fg, X0, jac="inplace", method="sgd", options=opts)
    for i in range(4):
        one = fastopt.minimize(rosenbrock.fg, X0[i], jac="inplace", method="sgd",
                               options={"lr": lrs[i], "momentum": momenta[i], "maxiter": 500})
        np.testing.assert_array_equal(res.x[i], one.x)


def test_seed_wavy_sweeps_are_one_batch_call_each():
    # The seeds' experiment: from x = -20 on the wavy function, sweep lr (and momentum).
    lrs = np.geomspace(1e-3, 0.5, 12)
    x0 = np.full((12, 1), -20.0)
    for method, extra in [("gd", {}), ("sgd", {"momentum": 0.9}), ("adagrad", {}),
                          ("rmsprop", {})]:
        res = fastopt.minimize_batch(wavy.fun, x0, jac=wavy.grad, method=method,
                                     options={"lr": lrs, "maxiter": 3000, **extra})
        assert res.x.shape == (12, 1)
        # each row is an independent run: larger lr travels at least as far on the first step
        assert np.all(np.isfinite(res.x))
    momenta = np.linspace(0.0, 0.95, 8)
    res = fastopt.minimize_batch(wavy.fun, np.full((8, 1), -20.0), jac=wavy.grad, method="sgd",
                                 options={"lr": 0.01, "momentum": momenta, "maxiter": 3000})
    # With enough momentum the search escapes the first local minima and gets lower.
    assert res.fun[-1] < res.fun[0]
    plain = fastopt.minimize(wavy.fun, -20.0, jac=wavy.grad, method="sgd",
                             options={"lr": 0.01, "momentum": momenta[3], "maxiter": 3000})
    np.testing.assert_array_equal(res.x[3], plain.x)


def test_best_returns_optimize_result_of_lowest_start():
    X0 = np.random.default_rng(2).uniform(-5, 5, size=(200, 2))
    from fastopt.functions import himmelblau

    res = fastopt.minimize_batch(himmelblau.fun, X0, jac=himmelblau.grad, method="adam",
                                 options={"lr": 0.05, "maxiter": 5000})
    best = res.best()
    assert best.fun == res.fun.min() and best.index == int(np.argmin(res.fun))
    mins = himmelblau.minimizers(2)
    assert np.min(np.linalg.norm(mins - best.x, axis=1)) < 1e-4
    assert set(res.messages) == {int(s) for s in np.unique(res.status)}
    assert res.message.shape == (200,)
    np.testing.assert_allclose(res.grad_norm, np.max(np.abs(res.jac), axis=1))


def test_batch_history_is_bounded():
    X0 = np.zeros((1000, 10))
    with pytest.raises(ValueError, match="history would need .* options\\['history'\\] = k >= "):
        fastopt.minimize_batch(quadratic, X0, jac=quadratic_grad,
                               options={"history": True, "maxiter": 100_000})
    res = fastopt.minimize_batch(quadratic, X0[:3, :2], jac=quadratic_grad, method="gd",
                                 options={"history": 5, "maxiter": 50, "lr": 0.01, "gtol": 0})
    assert res.x_history.shape == (3, 11, 2)
    np.testing.assert_array_equal(res.x_history[:, 0], X0[:3, :2])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X0": np.zeros((0, 2))}, ValueError, "X0 must have shape"),
        ({"X0": np.zeros((2, 2, 2))}, ValueError, "X0 must have shape"),
        ({"X0": [[0.0, np.inf]]}, ValueError, "X0 must be finite"),
        ({"options": {"lr": np.ones(3)}}, ValueError, "lr.*shape \\(2,\\)"),
        ({"options": {"lr": np.array([0.1, -1.0])}}, ValueError, "learning rate"),
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": 1.5}, ValueError, "workers"),
    ],
)
def test_batch_bad_input(kwargs, error, match):
    call = {"fun": quadratic, "X0": np.zeros((2, 2)), "jac": quadratic_grad}
    call.update(kwargs)
    with pytest.raises(error, match=match):
        fastopt.minimize_batch(**call)


def test_nan_start_region_fails_cleanly_in_batch():
    def fun(x):
        return np.sqrt(x[0]) + x[1] ** 2  # NaN for x[0] < 0

    res = fastopt.minimize_batch(fun, np.array([[1.0, 1.0], [-1.0, 1.0]]), method="adam",
                                 options={"maxiter": 50})
    assert res.status[1] == Status.DIVERGED and res.status[0] != Status.DIVERGED


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_block_protocol_matches_point_protocol_bit_for_bit(method):
    # jac="block" evaluates a whole block of starts at once (X of shape (d, B)); each start
    # must still get exactly the arithmetic of its single-start run with the point form.
    X0 = np.random.default_rng(3).uniform(-2, 2, size=(45, 3))
    options = {"lr": 1e-3, "maxiter": 400}
    block = fastopt.minimize_batch(rosenbrock.block, X0, jac="block", method=method,
                                   options=options)
    point = fastopt.minimize_batch(rosenbrock.fg, X0, jac="inplace", method=method,
                                   options=options)
    np.testing.assert_array_equal(block.x, point.x)
    np.testing.assert_array_equal(block.fun, point.fun)
    single = fastopt.minimize(rosenbrock.block, X0[7], jac="block", method=method,
                              options=options)
    np.testing.assert_array_equal(block.x[7], single.x)
    assert block.nfev[7] == single.nfev


def test_concurrent_calls_from_python_threads_are_safe():
    # numba's default threading layer aborts on concurrent parallel launches; fastopt
    # serializes them, so threads get correct results instead of a dead interpreter.
    from concurrent.futures import ThreadPoolExecutor

    X0 = np.random.default_rng(4).uniform(-2, 2, size=(300, 2))
    kw = dict(jac="inplace", method="adam", options={"lr": 0.01, "maxiter": 300})
    expected = fastopt.minimize_batch(rosenbrock.fg, X0, **kw).x
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fastopt.minimize_batch(rosenbrock.fg, X0, **kw).x,
                                range(4)))
    for x in results:
        np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("extra", [
    {"clip_value": 0.5},
    {"clip_norm": 0.3},
    {"schedule": fastopt.schedules.cosine(200)},
    {"xtol": 1e-4, "gtol": 0.0},
    {"ftol": 1e-9, "gtol": 0.0},
], ids=["clip_value", "clip_norm", "schedule", "xtol", "ftol"])
def test_block_lanes_follow_single_run_with_loop_options(extra):
    # The lockstep driver re-implements the loop's clipping, schedules and stopping tests
    # per lane; each lane must still be its single-start run, bit for bit.
    X0 = np.random.default_rng(5).uniform(-2, 2, size=(40, 2))
    kw = dict(fun=rosenbrock.fg, jac="inplace", method="adam",
              options={"lr": 1e-2, "maxiter": 400, **extra})
    res = fastopt.minimize_batch(X0=X0, **kw)
    stopped_by = {"xtol": Status.XTOL, "ftol": Status.FTOL}
    for name, code in stopped_by.items():
        if name in extra:  # the option must actually stop some lanes, which are then checked
            lanes = np.flatnonzero(res.status == code)
            assert lanes.size > 0
            _rows_equal_single_runs(res, X0, lanes[:3], **kw)
    if "clip_value" in extra or "clip_norm" in extra:  # clipping changes the trajectory
        plain = fastopt.minimize_batch(X0=X0, fun=rosenbrock.fg, jac="inplace", method="adam",
                                       options={"lr": 1e-2, "maxiter": 400})
        assert not np.array_equal(plain.x, res.x)
    _rows_equal_single_runs(res, X0, [0, 13, 39], **kw)


@pytest.mark.parametrize("lr", [1e-2, np.linspace(5e-3, 2e-2, 70)], ids=["shared", "per-start"])
def test_block_driver_resumes_in_chunks_exactly(lr):
    # Lanes that stop keep their state as it was when they stopped, also while the rest of
    # their block goes on (with shared settings the block steps as one flat vector):
    # a run in chunks of 37 iterations ends bit for bit where one uninterrupted run does.
    from fastopt._setup import parse
    from fastopt._workspace import Workspace
    from fastopt.objective import prepare

    X0 = np.random.default_rng(8).uniform(-2, 2, size=(70, 2))
    X0[5] = [1e200, 1e200]  # diverges at once
    options = {"lr": lr, "maxiter": 600, "gtol": 1e-3}
    runs = []
    for chunk in (10**9, 37):
        setup = parse("adam", options, None, 2, n_starts=70)
        objective, args = prepare(rosenbrock.block, X0[0], (), "block", None, False)
        work = Workspace(X0.copy(), setup)
        for _ in range(600 // chunk + 2):
            work.run_all(setup, objective, args, chunk)
        runs.append(work)
    one, chunked = runs
    statuses = one.counters[:, 4]
    assert len(set(statuses.tolist())) >= 3  # some converge, some run out, one diverges
    np.testing.assert_array_equal(one.X, chunked.X)
    np.testing.assert_array_equal(one.state, chunked.state)
    np.testing.assert_array_equal(one.counters, chunked.counters)


def test_lanes_stopping_at_different_steps_follow_single_runs():
    # With shared settings the lockstep driver skips its status pass on steps where no lane
    # stops or diverges; lanes that stop by gtol, by their own maxiter, or by diverging,
    # at scattered steps, must still end as their single runs do.
    rng = np.random.default_rng(11)
    X0 = rng.uniform(-2, 2, size=(300, 2))
    X0[::7] *= 8.0  # these diverge after a few steps
    maxiter = rng.integers(50, 400, size=300).astype(float)
    options = {"lr": 1e-3, "gtol": 1e-2}
    res = fastopt.minimize_batch(rosenbrock.fg, X0, jac="inplace", method="sgd",
                                 options={**options, "maxiter": maxiter})
    for code in (Status.GTOL, Status.MAXITER, Status.DIVERGED):
        lanes = np.flatnonzero(res.status == code)
        assert lanes.size > 0
        for i in lanes[:3]:
            single = fastopt.minimize(rosenbrock.fg, X0[i], jac="inplace", method="sgd",
                                      options={**options, "maxiter": maxiter[i]})
            np.testing.assert_array_equal(res.x[i], single.x)
            assert (res.fun[i], res.nit[i], res.nfev[i]) == (single.fun, single.nit, single.nfev)
            assert res.status[i] == single.status


@pytest.mark.parametrize("form", ["inplace", "block", "fun+jac"])
def test_portable_block_loop_matches_the_specialized_one_bit_for_bit(form):
    # Batches without extra args run the portable block loop (cached on disk; the objective
    # called by address); the loop specialized for the objective must give the same bits.
    from fastopt._setup import parse
    from fastopt._workspace import Workspace
    from fastopt.objective import prepare

    fun, jac = {"inplace": (rosenbrock.fg, "inplace"), "block": (rosenbrock.block, "block"),
                "fun+jac": (rosenbrock.fun, rosenbrock.grad)}[form]
    X0 = np.random.default_rng(12).uniform(-2, 2, size=(150, 3))
    X0[4] = [1e200, 1e200, 1e200]  # diverges at once
    lr = np.linspace(1e-2, 5e-2, 150)  # per-start settings: the rule's block update
    runs = []
    for options, portable in [({"lr": 3e-2}, True), ({"lr": 3e-2}, False),
                              ({"lr": lr}, True), ({"lr": lr}, False)]:
        options = {**options, "maxiter": 3000, "gtol": 1e-3}
        setup = parse("adam", options, None, 3, n_starts=150)
        objective, args = prepare(fun, X0[0], (), jac, None, False)
        work = Workspace(X0.copy(), setup)
        assert work.run_all(setup, objective, args, 10**9, portable=portable) == portable
        runs.append(work)
    for a, b in (runs[:2], runs[2:]):
        assert len(set(a.counters[:, 4].tolist())) >= 3  # converged, out of iterations, diverged
        for name in ("X", "G", "F", "state", "counters"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_portable_per_start_loop_matches_the_specialized_one_bit_for_bit():
    # One start per task (here because of the history) also runs the portable loop when
    # there are no extra args: the objective called by address.
    from fastopt._setup import parse
    from fastopt._workspace import Workspace
    from fastopt.objective import prepare

    X0 = np.random.default_rng(13).uniform(-2, 2, size=(40, 5))
    X0[3] = 1e200
    options = {"lr": np.linspace(1e-2, 5e-2, 40), "maxiter": 3000, "gtol": 1e-3,
               "history": 7}
    runs = []
    for portable in (True, False):
        setup = parse("adam", options, None, 5, n_starts=40)
        objective, args = prepare(rosenbrock.fun, X0[0], (), rosenbrock.grad, None, False)
        work = Workspace(X0.copy(), setup)
        assert work.run_all(setup, objective, args, 10**9, portable=portable) == portable
        runs.append(work)
    a, b = runs
    assert len(set(a.counters[:, 4].tolist())) >= 3  # converged, out of iterations, diverged
    for name in ("X", "G", "F", "state", "counters", "x_history", "f_history"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


BATCH_CACHE_SCRIPT = """
import sys, numpy as np, fastopt
from fastopt.functions import rosenbrock
X0 = np.random.default_rng(0).uniform(-2, 2, size=(64, 3))
for method in sys.argv[1:]:
    kw = dict(fun=rosenbrock.fg, jac="inplace", method=method, options={"maxiter": 50})
    res = fastopt.minimize_batch(X0=X0, **kw)
    single = fastopt.minimize(x0=X0[9], **kw)
    assert np.array_equal(res.x[9], single.x), (method, res.x[9], single.x)
print("ok")
"""


def test_closures_linked_into_cached_loops_have_names_of_their_own():
    # numba names a closure's code after its qualified name and a per-process counter; two
    # rules' outlined updates compiled in two processes once got one symbol, and a process
    # loading both cached block loops ran the first rule's update in the second loop.
    from fastopt.loop import called_update
    from fastopt.rules import RULES

    methods = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
    names = {called_update(RULES[m].update).py_func.__qualname__ for m in methods}
    assert len(names) == len(methods)


def test_kernel_cache_entries_are_keyed_by_all_of_fastopts_sources(monkeypatch):
    # A kernel inlines kernels of other modules (Adam's fastopt.floating); numba keys a
    # cache entry by the kernel's own file only, so an edit elsewhere must change the key.
    from fastopt import _jit
    from fastopt.rules.adam import adam_update_vector

    cache, codegen = adam_update_vector._cache, adam_update_vector.targetctx.codegen()
    key = cache._index_key(("a signature",), codegen)
    monkeypatch.setattr(_jit, "PACKAGE_SOURCE_HASH", "after an edit of another module")
    assert cache._index_key(("a signature",), codegen) != key


def test_portable_loops_cached_by_two_processes_load_into_a_third(tmp_path):
    # Each process compiles one rule's portable block loop into the shared disk cache; a
    # third loads both, and each must run its own rule.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run(*methods):
        out = subprocess.run([sys.executable, "-c", BATCH_CACHE_SCRIPT, *methods], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    assert run("sgd") == ["ok"]
    assert run("adam") == ["ok"]
    assert run("sgd", "adam") == ["ok"]


@pytest.mark.parametrize("n_tasks, threads", [(0, 2), (1, 2), (7, 2), (100, 2), (1000, 3)])
def test_run_in_threads_runs_every_task_exactly_once(n_tasks, threads):
    import threading

    from fastopt._workspace import run_in_threads

    runs = np.zeros(n_tasks, dtype=int)
    lock = threading.Lock()

    def run_range(first, end):
        with lock:
            runs[first:end] += 1

    run_in_threads(run_range, n_tasks, threads, np.zeros(1, dtype=np.int64))
    assert np.all(runs == 1)


CTRL_C_SCRIPT = """
import sys
import time
import numba
import numpy as np
from fastopt._workspace import run_in_threads

@numba.njit(nogil=True)
def run_tasks(first, end, stop, ran):  # as the compiled loops: stop read before each task
    for task in range(first, end):
        if stop[0]:
            return
        s = 0.0
        for k in range(2_000_000):  # a few ms of dependent adds, without the GIL
            s += k * 1e-9
        ran[task] = s

stop = np.zeros(1, dtype=np.int64)
ran = np.zeros(100_000)
run_tasks(0, 1, stop, ran)  # compile
print("ready", flush=True)
try:
    run_in_threads(lambda first, end: run_tasks(first, end, stop, ran), ran.size,
                   int(sys.argv[1]), stop)  # minutes of tasks
except KeyboardInterrupt:
    n_ran = np.count_nonzero(ran)
    time.sleep(0.1)  # a helper still running a task would add one
    print("interrupted", n_ran, np.count_nonzero(ran), flush=True)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_batch_within_a_task(threads):
    # a task takes ms; all of them, minutes
    # and raises the KeyboardInterrupt once every helper thread has stopped
    word, n_ran, n_ran_later = interrupted(CTRL_C_SCRIPT, str(threads), timeout=20)
    assert word == "interrupted" and 1 < int(n_ran) == int(n_ran_later) < 100_000


CTRL_C_BATCH_SCRIPT = """
import sys
import numpy as np
import fastopt
from fastopt.functions import rosenbrock

X0 = np.random.default_rng(0).uniform(-2, 2, size=(20_000, 2))
kw = dict(method="adam", workers=int(sys.argv[1]), **rosenbrock.batch_kwargs(2))
fastopt.minimize_batch(X0=X0, options={"maxiter": 2}, **kw)  # compile, or load the cache
print("ready", flush=True)
try:  # a block of starts runs until all its starts converge, some never do: for hours
    fastopt.minimize_batch(X0=X0, options={"maxiter": 10**9, "gtol": 0.0}, **kw)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_stops_a_batch_inside_its_blocks():
    # The block driver reads the stop flag at its reviews of the lanes, at least every
    # STOP_CHECK_STEPS steps, not only between blocks.
    assert interrupted(CTRL_C_BATCH_SCRIPT, "2", timeout=30) == ["interrupted"]


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_batch_inside_its_starts(threads):
    # The per-start loop (d > 64) runs a start in chunks of STOP_CHECK_STEPS iterations and
    # reads the stop flag between them, not only between starts.
    assert interrupted(ENDLESS_RUN_SCRIPT, "batch", str(threads), timeout=30) == ["interrupted"]


PARALLEL_OBJECTIVE_SCRIPT = """
import numba
import numpy as np
import fastopt

@numba.njit(parallel=True)
def fun(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += (x[i] - 1.0) ** 2
    return s

@numba.njit
def jac(x):
    return 2.0 * (x - 1.0)

def plain_wrapper(x):
    return fun(x)

njit_wrapper = numba.njit(lambda x: fun(x))

X0 = np.random.default_rng(0).uniform(-2, 2, size=(40, 100))
for objective in (fun, plain_wrapper, njit_wrapper):
    res = fastopt.minimize_batch(objective, X0, jac=jac, options={"lr": 0.1, "maxiter": 200},
                                 workers=2)
    print(numba.threading_layer(), bool(np.all(np.abs(res.x - 1.0) < 1e-2)))
"""


def test_a_parallel_objective_runs_under_numbas_workqueue_threading_layer():
    # workqueue aborts the process when two threads launch parallel code at once: a
    # batch of a parallel=True objective, or of one that calls it, runs on one thread
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PARALLEL_OBJECTIVE_SCRIPT], capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["workqueue", "True"] * 3



def test_a_start_reads_the_stop_flag_after_a_bounded_amount_of_work():
    # a fixed 4096 iterations between reads took 25 s to take a Ctrl-C at d = 1e6
    from fastopt.loop import STOP_CHECK_STEPS, stop_check_steps
    from fastopt.rules import RULES

    adam, bfgs = RULES["adam"], RULES["bfgs"]
    assert stop_check_steps(adam, 2) == stop_check_steps(bfgs, 2) == STOP_CHECK_STEPS
    assert stop_check_steps(adam, 1000) == 1048 and stop_check_steps(bfgs, 100) == 104
    assert stop_check_steps(adam, 10**6) == stop_check_steps(bfgs, 1000) == 1
