"""The user's functions inlined into fastopt's loops, and the functions that are called instead."""

import numba
import numpy as np
import pytest
from numba import objmode
from problems import undefined_for_positive_x

import fastopt
from fastopt.functions import rosenbrock
from fastopt.objective import inline_copy, prepare

# A user's @njit in-place objective: the built-in Rosenbrock's Python source, compiled afresh.
inlinable = numba.njit(rosenbrock.fg.py_func)
# Bounds checks change no number, but the option is one an inlined copy would lose: called.
called = numba.njit(boundscheck=True)(rosenbrock.fg.py_func)


@numba.njit
def through_object_mode(x, g):
    """numba cannot inline a function with an object-mode block: the loop calls it."""
    with objmode(s="float64"):
        s = 0.0
    return s + inlinable(x, g)


KW = dict(jac="inplace", method="adam", options={"lr": 0.01, "maxiter": 300})
X0 = np.random.default_rng(3).uniform(-2, 2, size=(40, 3))


def _is_plain(fun, jac):
    """Whether fastopt now builds ``fun`` without inlining (no fallback left)."""
    return prepare(fun, X0[0], (), jac=jac)[0].plain is None


def test_which_functions_are_inlined():
    assert inline_copy(inlinable) is not inlinable
    assert inline_copy(called) is called
    assert inline_copy(numba.njit(fastmath=True)(rosenbrock.fg.py_func)).targetoptions["fastmath"]
    with_locals = numba.njit(locals={"s": numba.float32})(inlinable.py_func)
    assert inline_copy(with_locals) is with_locals  # the copy would lose the locals' types
    objective, _ = prepare(inlinable, X0[0], (), jac="inplace")
    assert objective.plain is not None and objective.fg is not objective.plain.fg
    objective, _ = prepare(called, X0[0], (), jac="inplace")
    assert objective.plain is None


@pytest.mark.parametrize("run", ["minimize", "minimize_batch"])
def test_inlined_and_called_functions_give_the_same_bits(run, specialize_from_second_call):
    if run == "minimize":
        # twice each: the first call runs the portable loop, the second the specialized one
        for _ in range(2):
            a = fastopt.minimize(inlinable, X0[0], **KW)
            b = fastopt.minimize(called, X0[0], **KW)
            np.testing.assert_array_equal(a.x, b.x)
            assert a.fun == b.fun and a.nit == b.nit
    else:
        a = fastopt.minimize_batch(inlinable, X0, **KW)
        b = fastopt.minimize_batch(called, X0, **KW)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.nit, b.nit)


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning")  # object mode, no nogil
def test_a_function_numba_cannot_inline_is_called():
    res = fastopt.minimize_batch(through_object_mode, X0, **KW)
    assert _is_plain(through_object_mode, jac="inplace")  # remembered for later calls
    np.testing.assert_array_equal(res.x, fastopt.minimize_batch(inlinable, X0, **KW).x)
    single = fastopt.minimize(through_object_mode, X0[5], **KW)
    np.testing.assert_array_equal(single.x, res.x[5])


def _raise_python_error(value):
    raise RuntimeError(f"raised in object mode at {value}")


def raises_in_object_mode(x):
    if x[0] > 0.0:
        with objmode():
            _raise_python_error(x[0])
    return x[0] * x[0]


def test_python_exception_in_object_mode_propagates_as_itself():
    # a Python exception raised in the objective's object-mode code is pending when the
    # portable loops' native call returns: cleared there, raised again by the rerun
    X0 = np.array([[-1.0], [-2.0]])
    options = {"lr": 1.5, "maxiter": 5}
    calls = [lambda f: fastopt.minimize(f, [-1.0], method="gd", options=options),
             lambda f: fastopt.minimize_batch(f, X0, method="gd", options=options),
             lambda f: fastopt.minimize_batch(f, X0, method="gd",
                                              options={**options, "history": True})]
    for call in calls:
        with pytest.raises(RuntimeError, match="raised in object mode at"):
            call(numba.njit(raises_in_object_mode))  # a new objective: the portable loop


def test_exception_in_objective_propagates_from_a_batch(capsys):
    # gd: the portable block loop, and with history the portable per-start loop (both call
    # the objective by address, stop, and have the batch rerun in the specialized loop);
    # bfgs: the per-start loop specialized for the objective
    for method, options in [("gd", {"lr": 1.5}), ("gd", {"lr": 1.5, "history": True}),
                            ("bfgs", None)]:
        with pytest.raises(ValueError, match="objective undefined for positive x"):
            fastopt.minimize_batch(undefined_for_positive_x, np.array([[-1.0], [-2.0]]),
                                   method=method, options=options)
    assert capsys.readouterr().err == ""  # nothing printed as "ignored" on the way


@numba.njit
def _square_undefined_for_positive_x(x):
    if x[0] > 0.0:
        raise ValueError("objective undefined for positive x")
    return x[0] * x[0]


@numba.njit
def _square_grad(x):
    return 2.0 * x


@pytest.mark.parametrize("history", [False, True])
def test_an_exception_in_a_portable_loop_stops_the_batch_where_it_was_raised(history):
    # Start 0 raises at its first step (lr 1.5 takes -1 to +2; the others, lr 0.1, stay
    # negative): its row keeps the point where it raised, and no later start (or block of
    # starts) runs.
    from fastopt import _layout as L
    from fastopt import status as st
    from fastopt._setup import parse
    from fastopt._workspace import Workspace
    from fastopt.block import lanes_for

    X0 = np.full((1000, 1), -1.0)
    lr = np.full(1000, 0.1)
    lr[0] = 1.5
    setup = parse("gd", {"lr": lr, "maxiter": 1000, "history": history}, None, 1,
                  n_starts=1000)
    objective, args = prepare(_square_undefined_for_positive_x, X0[0], (), _square_grad, None,
                              False)
    work = Workspace(X0.copy(), setup)
    assert work.run_all(setup, objective, args, 10**9, workers=1, portable=True)
    assert work.counters[0, L.RAISED] == 1
    assert work.X[0, 0] == 2.0  # -1 - 1.5 * (-2): where the objective raised
    ran = 1 if history else lanes_for(1)  # the start, or its block
    assert np.all(work.counters[ran:, L.STATUS] == st.NOT_STARTED)
    assert np.all(work.counters[:ran, L.STATUS] != st.NOT_STARTED)
    with pytest.raises(ValueError, match="objective undefined for positive x"):
        work.raise_where_it_raised(objective, args)


def test_an_exception_in_a_portable_batch_is_raised_without_the_specialized_loop(monkeypatch):
    # Raised again from Python where it was raised (0.1 s), instead of rerunning the batch
    # in a loop compiled for the objective (5 s, the first time).
    from fastopt._workspace import Workspace

    portable = []
    run_all = Workspace.run_all

    def recording_run_all(self, *args, **kwargs):
        portable.append(kwargs.get("portable", True))
        return run_all(self, *args, **kwargs)

    monkeypatch.setattr(Workspace, "run_all", recording_run_all)
    X0 = np.zeros((300, 1))
    X0[250] = -1.0
    with pytest.raises(ValueError, match="objective undefined for positive x"):
        fastopt.minimize_batch(numba.njit(undefined_for_positive_x), X0, method="gd",
                               options={"lr": 1.5})
    assert portable == [True]


def _reciprocal_plus_square(x):
    return 1.0 / x[0] + x[0] * x[0]


def _reciprocal_plus_square_grad(x):
    return np.array([-1.0 / (x[0] * x[0]) + 2.0 * x[0]])


def test_a_division_by_zero_ends_diverged_on_the_first_call_too(specialize_from_second_call):
    # The user's functions as compiled (numba's Python error model) raise ZeroDivisionError,
    # and the first call's portable loop calls them so; fastopt's loops use inlined copies,
    # where 1/0 is inf and the start ends DIVERGED. Every call must agree.
    kw = dict(method="gd", options={"lr": 1.0 / 3.0, "maxiter": 5})  # -1 + 3 / 3 = 0
    fun = numba.njit(_reciprocal_plus_square)
    jac = numba.njit(_reciprocal_plus_square_grad)
    for _ in range(2):
        res = fastopt.minimize(fun, [-1.0], jac=jac, **kw)
        assert res.status == fastopt.Status.DIVERGED and res.x[0] == -1.0
    res = fastopt.minimize_batch(fun, np.array([[-1.0]]), jac=jac, **kw)
    assert res.status[0] == fastopt.Status.DIVERGED


@numba.njit
def sphere_dot(x):
    return x @ x  # numba's @ takes contiguous arrays only


@numba.njit
def sphere_dot_grad(x):
    return 2.0 * x


def test_an_objective_for_contiguous_arrays_only_runs_on_copies_in_a_batch():
    kw = dict(jac=sphere_dot_grad, method="adam", options={"lr": 0.05, "maxiter": 200})
    res = fastopt.minimize_batch(sphere_dot, X0, **kw)
    remembered = prepare(sphere_dot, X0[0], (), jac=sphere_dot_grad)[0]
    assert remembered.plain is not None and not remembered.lane_views  # still inlined
    for i in (0, 39):
        single = fastopt.minimize(sphere_dot, X0[i], **kw)
        np.testing.assert_array_equal(res.x[i], single.x)
        assert res.nit[i] == single.nit


def test_a_callback_raising_a_numba_error_is_not_taken_for_a_compile_failure(
        specialize_from_second_call):
    calls = []

    def callback(x):
        calls.append(x.copy())
        if len(calls) == 3:
            raise numba.core.errors.TypingError("raised by the callback")

    fastopt.minimize(inlinable, X0[1], **KW)  # the portable loop: the next call compiles
    with pytest.raises(numba.core.errors.TypingError, match="raised by the callback"):
        fastopt.minimize(inlinable, X0[1], callback=callback, **KW)
    assert len(calls) == 3  # not rerun from the start with the plain objective
    assert not _is_plain(inlinable, jac="inplace")
