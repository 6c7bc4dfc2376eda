"""fastopt.minimize: scipy's interface, statuses, the seeds' experiments, bad input."""

import functools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.optimize as so
from ctrl_c import ENDLESS_RUN_SCRIPT, interrupted
from problems import quadratic, quadratic_grad, quadratic_minimizer, undefined_for_positive_x
from scipy.optimize import OptimizeResult, OptimizeWarning

import fastopt
from fastopt import Status
from fastopt.functions import rosenbrock, wavy

np_ones, np_sum = np.ones, np.sum  # NumPy functions read by name, as `from numpy import ones`


def test_returns_scipy_optimize_result():
    res = fastopt.minimize(quadratic, np.zeros(3), jac=quadratic_grad, method="adam",
                           options={"lr": 0.05, "maxiter": 20000})
    assert isinstance(res, OptimizeResult)
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "status", "success", "message"):
        assert key in res
    assert res.success and res.status == Status.GTOL
    np.testing.assert_allclose(res.x, quadratic_minimizer(3), atol=1e-5)
    assert np.max(np.abs(res.jac)) <= 1e-5
    assert res.nfev == res.nit + 1 and res.njev == res.nit + 1


def test_every_rule_reaches_quadratic_minimum(first_order):
    method, options = first_order
    res = fastopt.minimize(quadratic, np.zeros(4), jac=quadratic_grad, method=method,
                           options={**options, "maxiter": 200_000, "gtol": 1e-6})
    assert res.success, res.message
    np.testing.assert_allclose(res.x, quadratic_minimizer(4), atol=1e-5)


def assert_same_run(a, b):
    for name in ("x", "jac", "fun", "nit", "nfev", "njev", "status"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_a_run_in_chunks_equals_one_resumed_every_iteration(first_order):
    # minimize runs its start in chunks (2048 iterations at d = 4, then up to 16x longer);
    # with a callback it returns to Python after every iteration: the bits agree.
    method, options = first_order
    kwargs = dict(jac=quadratic_grad, method=method,
                  options={**options, "maxiter": 5000, "gtol": 0.0})
    x0 = np.full(4, 30.0)  # far: the step-size-bound rules do not arrive in 5000 steps
    chunked = fastopt.minimize(quadratic, x0, **kwargs)
    stepped = fastopt.minimize(quadratic, x0, callback=lambda xk: None, **kwargs)
    assert chunked.nit > 2048
    assert_same_run(chunked, stepped)


def test_every_rule_reaches_rosenbrock_minimum(first_order):
    method, options = first_order
    if method == "adagrad":
        options = {**options, "lr": 0.1}
    if method == "rmsprop":  # its step does not shrink with the gradient: anneal lr instead
        options = {**options, "schedule": fastopt.schedules.cosine(200_000)}
    res = fastopt.minimize(rosenbrock.fg, np.array([-1.2, 1.0]), jac="inplace", method=method,
                           options={**options, "maxiter": 200_000, "gtol": 1e-6})
    assert res.fun < 1e-7, (method, res.message, res.x)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-3)


def test_seed_gradient_descent_on_shifted_parabola():
    # x^2 + 1 from x = 10, lr 0.2, precision (gtol) 1e-6: x_k = 10 * 0.6^k.
    res = fastopt.minimize(lambda x: x**2 + 1, 10.0, jac=lambda x: 2 * x, method="gd",
                           options={"lr": 0.2, "gtol": 1e-6})
    assert res.success
    k = res.nit
    assert 2 * 10 * 0.6**k <= 1e-6 < 2 * 10 * 0.6 ** (k - 1)
    np.testing.assert_allclose(res.x, [10 * 0.6**k], rtol=1e-12)
    assert res.x.shape == (1,)


def test_seed_numerical_gradient_twenty_steps():
    res = fastopt.minimize(lambda x: x[0] ** 2 + x[1] ** 2, [-3.0, 4.0], method="gd",
                           options={"lr": 0.1, "maxiter": 20, "gtol": 0.0})
    assert res.status == Status.MAXITER and res.nit == 20
    np.testing.assert_allclose(res.x, [-3 * 0.8**20, 4 * 0.8**20], rtol=1e-8)
    np.testing.assert_allclose(res.x, [-0.0346, 0.0461], atol=1e-4)
    assert res.nfev == 21 * 5  # f plus 2 evaluations per coordinate, per gradient


def test_seed_large_learning_rate_diverges_with_status():
    res = fastopt.minimize(lambda x: x**2 + 1, 10.0, jac=lambda x: 2 * x, method="gd",
                           options={"lr": 10.0})
    assert not res.success and res.status == Status.DIVERGED
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    assert "NaN" in res.message


def test_seed_tiny_learning_rate_barely_moves():
    res = fastopt.minimize(lambda x: x**2 + 1, 10.0, jac=lambda x: 2 * x, method="gd",
                           options={"lr": 1e-10, "maxiter": 1000})
    assert res.status == Status.MAXITER and not res.success
    assert 10.0 - 1e-5 < res.x[0] < 10.0


def test_seed_linear_regression_loss_history():
    rng = np.random.default_rng(1)
    X = np.c_[np.ones(50), rng.uniform(0, 2, 50)]
    y = X @ np.array([4.0, 3.0]) + 0.1 * rng.standard_normal(50)

    def loss(theta, X, y):
        r = X @ theta - y
        return r @ r / (2 * len(y))

    def grad(theta, X, y):
        return X.T @ (X @ theta - y) / len(y)

    res = fastopt.minimize(loss, np.zeros(2), args=(X, y), jac=grad, method="gd",
                           options={"lr": 0.1, "maxiter": 2000, "history": True, "gtol": 1e-8})
    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(res.x, expected, atol=1e-6)
    assert res.x_history.shape == (res.nit + 1, 2) and res.f_history.shape == (res.nit + 1,)
    assert np.all(np.diff(res.f_history) <= 1e-15)  # the loss never rises
    np.testing.assert_array_equal(res.x_history[0], [0.0, 0.0])
    np.testing.assert_array_equal(res.x_history[-1], res.x)


def test_return_all_gives_scipys_allvecs():
    res = fastopt.minimize(quadratic, np.array([3.0, -4.0]), jac=quadratic_grad, method="sgd",
                           options={"lr": 0.1, "maxiter": 20, "gtol": 0.0, "return_all": True})
    assert isinstance(res.allvecs, list) and len(res.allvecs) == res.nit + 1 == 21
    np.testing.assert_array_equal(res.allvecs[0], [3.0, -4.0])
    np.testing.assert_array_equal(res.allvecs[-1], res.x)
    np.testing.assert_array_equal(np.array(res.allvecs), res.x_history)


def test_history_every_kth():
    res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                           options={"lr": 0.01, "maxiter": 100, "gtol": 0.0, "history": 10})
    assert res.x_history.shape == (11, 2)
    full = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                            options={"lr": 0.01, "maxiter": 100, "gtol": 0.0, "history": True})
    np.testing.assert_array_equal(res.x_history, full.x_history[::10])


def test_scalar_x0_and_wavy_function():
    res = fastopt.minimize(wavy.fun, -20.0, jac=wavy.grad, method="sgd",
                           options={"lr": 0.01, "momentum": 0.9})
    assert res.success and res.x.shape == (1,)


def test_stopping_on_xtol_and_ftol():
    res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                           options={"lr": 0.01, "gtol": 0.0, "xtol": 1e-6, "history": True})
    assert res.status == Status.XTOL and res.success
    steps = np.max(np.abs(np.diff(res.x_history, axis=0)), axis=1)
    assert steps[-1] <= 1e-6 < steps[-2]  # it stopped at the first step below xtol
    res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                           options={"lr": 0.01, "gtol": 0.0, "ftol": 1e-10})
    assert res.status == Status.FTOL and res.success


def test_jac_true_and_forward_differences_and_args():
    def fun_and_grad(x, a):
        return np.sum((x - a) ** 2), 2 * (x - a)

    res = fastopt.minimize(fun_and_grad, np.zeros(3), args=(1.5,), jac=True, method="adam",
                           options={"lr": 0.05, "maxiter": 20000})
    np.testing.assert_allclose(res.x, 1.5, atol=1e-5)
    res = fastopt.minimize(lambda x, a: np.sum((x - a) ** 2), np.zeros(3), args=(1.5,),
                           jac="2-point", method="adam", options={"lr": 0.05, "maxiter": 20000})
    np.testing.assert_allclose(res.x, 1.5, atol=1e-4)


def test_difference_steps_are_scipys():
    # scipy's approx_derivative: eps (BFGS, L-BFGS-B) with jac=None is forward differences
    # with that absolute step; '2-point' steps by sqrt(eps) * sign(x) * max(1, |x|), or
    # finite_diff_rel_step * sign(x) * |x| -- so the gradients are scipy's, bit for bit
    def fun(x):
        return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2 + np.exp(0.3 * x[2])

    x0 = np.array([-1.2, 1.0, 0.0])
    for jac, options in [(None, {"eps": 1e-3}), (None, {"eps": 1e-9}), ("2-point", {}),
                         ("2-point", {"finite_diff_rel_step": 1e-4}),
                         ("3-point", {"eps": 1e-3})]:
        ours = fastopt.minimize(fun, x0, method="bfgs", jac=jac, options={**options, "maxiter": 0})
        theirs = so.minimize(fun, x0, method="BFGS", jac=jac, options={**options, "maxiter": 0})
        np.testing.assert_array_equal(ours.jac, theirs.jac, err_msg=f"{jac} {options}")
    for jac, options in [(None, {"eps": 1e-4}), ("2-point", {})]:  # whole runs: scipy's
        run = fastopt.minimize(fun, x0, method="bfgs", jac=jac, options=options)
        expected = so.minimize(fun, x0, method="BFGS", jac=jac, options=options)
        assert run.success and expected.success
        assert (run.nit, run.nfev) == (expected.nit, expected.nfev), (jac, options)
    # central differences step by |h| (scipy's two-sided scheme): a zero slope is +0.0
    flat = fastopt.minimize(lambda x: (x[0] - 1.0) ** 2, np.array([0.5, -2.0]), method="bfgs",
                            options={"maxiter": 0}).jac
    assert flat[1] == 0.0 and not np.signbit(flat[1])
    # a step lost next to a large coordinate falls back to the default relative step
    far = fastopt.minimize(quadratic, np.array([3e9, 0.0, 0.0]), method="bfgs",
                           options={"eps": 1e-9, "maxiter": 0})
    assert np.all(np.isfinite(far.jac)) and far.jac[0] != 0.0
    with pytest.raises(ValueError, match="Invalid eps"):
        fastopt.minimize(quadratic, x0, method="bfgs", options={"eps": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Adam's eps is Adam's: no "unknown option"
        fastopt.minimize(quadratic, x0, method="adam", options={"eps": 1e-6, "maxiter": 3})


def test_limits_may_be_any_number_as_in_scipy():
    # scipy stops once nit >= maxiter and nfev > maxfun: 3.5 iterations run 4; inf, no limit
    from scipy.optimize import rosen, rosen_der

    x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])
    for method, options in [("BFGS", {"maxiter": 3.5}), ("L-BFGS-B", {"maxfun": 10.5}),
                            ("BFGS", {"maxiter": np.inf})]:
        ours = fastopt.minimize(rosen, x0, method=method, jac=rosen_der, options=options)
        theirs = so.minimize(rosen, x0, method=method, jac=rosen_der, options=options)
        assert (ours.nit, ours.nfev) == (theirs.nit, theirs.nfev), (method, options)
    with pytest.raises(ValueError, match="finite maxiter"):
        fastopt.minimize(quadratic, np.zeros(2), options={"maxiter": np.inf, "history": True})


def test_disp_prints_success_and_warns_failure(capsys):
    # scipy's _print_success_message_or_warn: a failure is an OptimizeWarning
    fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs",
                     options={"disp": True})
    printed = capsys.readouterr().out
    assert "Optimization terminated successfully." in printed and "Iterations:" in printed
    with pytest.warns(OptimizeWarning, match="Maximum number of iterations"):
        fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs",
                         options={"disp": True, "maxiter": 1})
    assert "Iterations: 1" in capsys.readouterr().out


def test_functions_that_modify_x_in_place_are_refused():
    # scipy passes fun a copy of x; fastopt passes its iterate, so a function that changes
    # x would corrupt the run (scipy's gh13740 test: x ran to 1e90 with res.fun f(x0))
    def overwrites(x):
        x -= 1.0
        return float(x @ x)

    def jac_overwrites(x):
        x *= 2.0
        return x

    with pytest.raises(ValueError, match="fun modified its argument x in place"):
        fastopt.minimize(overwrites, np.ones(3), method="bfgs")
    with pytest.raises(ValueError, match="jac modified its argument x in place"):
        fastopt.minimize(quadratic, np.ones(3), jac=jac_overwrites, method="bfgs")


class CountingProblem:
    """A scipy-test-style objective: bound methods (run at Python speed) that count calls."""

    def __init__(self):
        self.fun_calls = self.jac_calls = 0
        self.points = []

    def fun(self, x):
        self.fun_calls += 1
        self.points.append(x.copy())
        return float(np.sum((x - 1.0) ** 2) + 0.1 * np.sum(x**4))

    def jac(self, x):
        self.jac_calls += 1
        return 2.0 * (x - 1.0) + 0.4 * x**3


@pytest.mark.parametrize("jac", ["callable", None])
def test_python_speed_calls_match_nfev(jac):
    # the probe's evaluation at x0 is the loop's first: scipy evaluates x0 once, and a
    # user counting calls sees nfev and njev (scipy's test_minimize_l_bfgs_b)
    problem = CountingProblem()
    with pytest.warns(fastopt.PythonSpeedWarning):
        res = fastopt.minimize(problem.fun, np.zeros(3), method="L-BFGS-B",
                               jac=problem.jac if jac else None)
    assert res.success
    assert problem.fun_calls == res.nfev
    if jac:
        assert problem.jac_calls == res.njev
    points = problem.points
    repeats = [np.array_equal(a, b) for a, b in zip(points[:-1], points[1:], strict=True)]
    assert not any(repeats)  # no point evaluated twice in a row


def test_callback_receives_iterates_and_can_stop():
    seen = []

    def callback(intermediate_result):
        seen.append(intermediate_result.fun)
        if len(seen) == 5:
            raise StopIteration

    res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                           callback=callback, options={"lr": 0.01})
    assert res.status == Status.CALLBACK and res.nit == 5 and len(seen) == 5
    xs = []
    res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                           callback=xs.append, options={"lr": 0.01, "maxiter": 7, "gtol": 0})
    assert len(xs) == 7 and res.nit == 7
    np.testing.assert_array_equal(xs[-1], res.x)
    keyword_only = []  # scipy passes intermediate_result by keyword

    def callback_by_keyword(*, intermediate_result):
        keyword_only.append(intermediate_result.x)

    fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                     callback=callback_by_keyword, options={"lr": 0.01, "maxiter": 3})
    assert len(keyword_only) == 3


def test_scipys_norm_option_is_taken_as_the_infinity_norm_it_is():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not an unknown option
        res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs",
                               options={"norm": np.inf})
    assert res.success


def test_options_of_none_take_the_default_as_in_scipy():
    default = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs")
    nones = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs",
                             options={"maxiter": None, "gtol": None})
    assert (nones.nit, nones.status) == (default.nit, default.status)


def test_schedule_and_clipping_change_the_trajectory():
    base = {"lr": 0.01, "maxiter": 50, "gtol": 0.0}
    plain = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd", options=base)
    decayed = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                               options={**base, "schedule": fastopt.schedules.exponential(0.9)})
    clipped = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="gd",
                               options={**base, "clip_value": 0.1})
    # Clipping by value bounds every step: |dx| <= lr * clip_value.
    assert np.all(np.abs(clipped.x) <= 50 * 0.01 * 0.1 + 1e-15)
    assert quadratic(decayed.x) > quadratic(plain.x)


def test_nan_objective_fails_without_crash():
    res = fastopt.minimize(lambda x: np.nan * x[0], np.ones(2), method="adam")
    assert res.status == Status.DIVERGED and not res.success


def test_python_function_numba_cannot_compile_still_works():
    class Box:
        scale = 2.0

    def fun(x, box):
        return box.scale * float(np.sum((x - 1.0) ** 2))

    with pytest.warns(fastopt.PythonSpeedWarning, match="Python speed"):
        res = fastopt.minimize(fun, np.zeros(2), args=(Box(),), method="adam",
                               options={"lr": 0.05, "maxiter": 5000})
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)


class _Model:
    """A scipy user's class-based objective."""

    center = 3.0

    def loss(self, x):
        return float(np.sum((x - self.center) ** 2))

    def __call__(self, x):
        return self.loss(x)


_MODEL = _Model()


def _shifted_square(x, center):
    return float(np.sum((x - center) ** 2))


def _recursive(x, depth=2):
    return float(np.sum((x - 3.0) ** 2)) if depth == 0 else _recursive(x, depth - 1)


@pytest.mark.parametrize("make_kwargs, reason", [
    (lambda: {"fun": _Model().loss}, "not a function"),  # a bound method
    (lambda: {"fun": _Model()}, "not a function"),  # a callable instance
    (lambda: {"fun": functools.partial(_shifted_square, center=3.0)}, "not a function"),
    (lambda: {"fun": lambda x, model=_MODEL: model.loss(x)}, "Cannot determine Numba type"),
    (lambda: {"fun": _recursive}, "Untyped global name '_recursive'"),
    (lambda: (lambda memo: {"fun": memo, "jac": memo.derivative})(
        so._optimize.MemoizeJac(lambda x: (_shifted_square(x, 3.0), 2.0 * (x - 3.0)))),
     "not a function"),
], ids=["bound method", "callable instance", "partial", "object default", "recursive",
        "MemoizeJac"])
def test_callables_numba_refuses_run_in_python_as_scipy_runs_them(make_kwargs, reason):
    # numba compiles plain functions only; anything scipy takes still runs, and the
    # warning says numba's reason, not which of its passes failed
    kwargs = make_kwargs()
    with pytest.warns(fastopt.PythonSpeedWarning, match=reason):
        res = fastopt.minimize(x0=np.zeros(2), method="BFGS", **kwargs)
    expected = so.minimize(x0=np.zeros(2), method="BFGS", **kwargs)
    assert res.success
    np.testing.assert_allclose(res.x, expected.x, atol=1e-6)


HELPER_CENTER = 3.0


def _helper(x):
    return (x - HELPER_CENTER) ** 2


def _calls_a_python_helper(x):
    return float(np.sum(_helper(x)))


def _closure_over_a_helper(scale):
    def local_helper(x):
        return scale * (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2

    return lambda x: local_helper(x)


def test_plain_python_helpers_are_compiled_with_the_objective(monkeypatch):
    # a scipy objective often calls a model function: numba compiles it too, and a
    # global the helper reads is seen as it is at each call (as for the objective's own)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PythonSpeedWarning
        res = fastopt.minimize(_calls_a_python_helper, np.zeros(2), method="BFGS")
        np.testing.assert_allclose(res.x, 3.0, atol=1e-6)
        monkeypatch.setattr(sys.modules[__name__], "HELPER_CENTER", -1.0)
        res = fastopt.minimize(_calls_a_python_helper, np.zeros(2), method="BFGS")
        np.testing.assert_allclose(res.x, -1.0, atol=1e-6)
        res = fastopt.minimize(_closure_over_a_helper(2.0), np.zeros(2), method="BFGS")
        np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-6)


DEEP_CENTER = np.array([1.0])


def _deep4(x):
    return (x - DEEP_CENTER[0]) ** 2


def _deep3(x):
    return _deep4(x)


def _deep2(x):
    return _deep3(x)


def _deep1(x):
    return _deep2(x)


def _deep0(x):
    return _deep1(x)


def _five_calls_deep(x):
    return float(np.sum(_deep0(x)))


def _uses_numpy_functions_by_name(x):
    return float(np_sum((x - 2.0 * np_ones(x.size)) ** 2))


def test_helpers_are_the_users_functions_numba_does_not_know(monkeypatch):
    # NumPy's np.ones is a plain function numba implements itself: left to numba; a
    # global read five calls deep is seen when it changes
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastopt.PythonSpeedWarning)
        res = fastopt.minimize(_uses_numpy_functions_by_name, np.zeros(2), method="BFGS")
        np.testing.assert_allclose(res.x, 2.0, atol=1e-6)
        res = fastopt.minimize(_five_calls_deep, np.zeros(2), method="BFGS")
        np.testing.assert_allclose(res.x, 1.0, atol=1e-6)
        DEEP_CENTER[0] = 7.0
        try:
            res = fastopt.minimize(_five_calls_deep, np.zeros(2), method="BFGS")
        finally:
            DEEP_CENTER[0] = 1.0
        np.testing.assert_allclose(res.x, 7.0, atol=1e-6)


def _reciprocal_near_minus_one(x):
    return (x[0] - 1.0) ** 2 + x[1] ** 2 + 0.1 / (x[0] + 1.0)


def test_an_error_only_compiled_code_raises_at_x0_does_not_leave_python_speed():
    # numba's 1/0 raises where NumPy's gives inf: the function compiles all the same
    from fastopt.objective import prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's divide by zero, in Python
        warnings.simplefilter("error", fastopt.PythonSpeedWarning)
        objective, _ = prepare(_reciprocal_near_minus_one, np.array([-1.0, 0.0]), ())
    assert objective.compiled


def test_indexing_past_the_end_of_x0_raises_as_in_python():
    # numba's compiled code does not check bounds: the plain function runs in Python
    # first, as scipy runs it, and raises there
    def rosen_2d(x):
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    with pytest.raises(IndexError):
        fastopt.minimize(rosen_2d, [0.5], method="BFGS")
    with pytest.raises(IndexError):
        fastopt.minimize_batch(rosen_2d, [[0.5], [0.2]], method="adam")


def test_a_callable_whose_python_raises_raises_the_users_error():
    class Broken:
        def __call__(self, x):
            raise KeyError("from the user's code")

    with pytest.raises(KeyError, match="from the user's code"):
        fastopt.minimize(Broken(), np.zeros(2), method="BFGS")


def test_second_call_does_not_recompile(specialize_from_second_call):
    kwargs = dict(jac="inplace", method="adam", options={"lr": 0.01, "maxiter": 10})
    # the first call runs the portable loop, the second compiles the specialized one
    fastopt.minimize(rosenbrock.fg, np.zeros(2), **kwargs)
    fastopt.minimize(rosenbrock.fg, np.full(2, 0.5), **kwargs)
    from fastopt.loop import _make_loop

    before = _make_loop.cache_info()
    fastopt.minimize(rosenbrock.fg, np.ones(2), **kwargs)
    after = _make_loop.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    run_start, _ = fastopt.loop.make_loop(fastopt.rules.RULES["adam"],
                                          fastopt.objective.prepare(rosenbrock.fg, np.zeros(2),
                                                                    (), "inplace")[0])
    assert len(run_start.signatures) == 1


def test_first_call_runs_the_portable_loop_bit_identical_to_the_specialized_one(
        specialize_from_second_call):
    # new dispatchers: nothing is compiled for them yet
    fun, jac = numba.njit(quadratic), numba.njit(quadratic_grad)
    kwargs = dict(jac=jac, method="adam", options={"lr": 1e-2, "maxiter": 500, "gtol": 0.0})
    compiled_c_functions = fastopt.objective.native_fg.cache_info().misses
    first = fastopt.minimize(fun, [-1.2, 1.0, 3.0], **kwargs)  # portable: fg called by pointer
    assert fastopt.objective.native_fg.cache_info().misses == compiled_c_functions + 1
    second = fastopt.minimize(fun, [-1.2, 1.0, 3.0], **kwargs)  # the loop specialized for fun
    assert fastopt.objective.native_fg.cache_info().misses == compiled_c_functions + 1
    for key in ("x", "jac"):
        np.testing.assert_array_equal(first[key].view(np.uint64), second[key].view(np.uint64))
    for key in ("fun", "nit", "nfev", "njev", "status"):
        assert first[key] == second[key], key
    assert first.nit == 500


def test_the_specialized_loop_is_compiled_only_once_the_objective_is_hot(monkeypatch,
                                                                          ran_portable):
    # Compiling the specialized loop costs ~1 s: short calls keep to the portable loop until
    # they have run SPECIALIZE_AFTER_SECONDS there in all; from then on it is specialized.
    fun = numba.njit(quadratic)
    jac = numba.njit(quadratic_grad)
    monkeypatch.setattr(fastopt.loop, "SPECIALIZE_AFTER_SECONDS", 1e-3)
    monkeypatch.setattr(fastopt.loop, "_PORTABLE_SECONDS", {})  # what other tests ran
    short = dict(jac=jac, method="adam", options={"lr": 1e-2, "maxiter": 10})
    results = [fastopt.minimize(fun, [-1.2, 1.0, 3.0], **short) for _ in range(3)]
    assert ran_portable == [True, True, True]
    # ~30 ns an iteration: 10**5 iterations (far from converged) run longer than 1e-3 s
    fastopt.minimize(fun, [-1.2, 1.0, 3.0], jac=jac, method="adam",
                     options={"lr": 1e-7, "maxiter": 10**5, "gtol": 0.0})
    results.append(fastopt.minimize(fun, [-1.2, 1.0, 3.0], **short))
    monkeypatch.setattr(fastopt.loop, "SPECIALIZE_AFTER_SECONDS", 1e9)  # paid: stays specialized
    results.append(fastopt.minimize(fun, [-1.2, 1.0, 3.0], **short))
    assert ran_portable == [True, True, True, True, False, False]
    for res in results[1:]:
        np.testing.assert_array_equal(res.x, results[0].x)
        assert res.nfev == results[0].nfev


def _undefined_above_half(x):
    if x[0] > 0.5:
        raise ValueError("objective undefined above 0.5")
    return (x[0] - 2.0) ** 2


def test_callback_sees_each_iteration_once_when_the_objective_raises():
    seen = []
    with pytest.raises(ValueError, match="objective undefined above 0.5"):
        # from 0 towards the minimum at 2, past 0.5 after a dozen steps
        fastopt.minimize(numba.njit(_undefined_above_half), [0.0], method="gd",
                         options={"lr": 0.01}, callback=lambda xk: seen.append(xk[0]))
    assert len(seen) == len(set(seen)) > 5  # the rerun that raises calls no callback


def test_exception_in_objective_propagates_from_the_portable_loop(capsys):
    with pytest.raises(ValueError, match="objective undefined for positive x"):
        # gradient descent with lr 1.5 overshoots from -1 to +2 at the first step
        fastopt.minimize(undefined_for_positive_x, [-1.0], method="gd", options={"lr": 1.5})
    assert capsys.readouterr().err == ""  # nothing printed as "ignored" on the way


def test_concurrent_first_calls_leave_the_warnings_filters_as_they_were():
    # a first call (it compiles) turns numba's performance warnings into errors with a
    # process-wide filter; several at once must not interleave saving and restoring it
    import threading

    errors = []
    n_threads = 3
    together = threading.Barrier(n_threads)

    def first_calls():
        try:
            fun, jac = numba.njit(quadratic), numba.njit(quadratic_grad)  # new dispatchers
            kwargs = dict(jac=jac, method="adam", options={"maxiter": 3})
            together.wait()
            fastopt.minimize(fun, [0.5, 0.5], **kwargs)  # the portable loop
            together.wait()
            fastopt.minimize(fun, [0.5, 0.5], **kwargs)  # compiles the loop specialized for fun
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    with warnings.catch_warnings():
        # not the test suite's "error" filter, which a leaked one would look the same as
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
        filters = list(warnings.filters)
        threads = [threading.Thread(target=first_calls) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert warnings.filters == filters


PORTABLE_CACHE_SCRIPT = """
import numba, numpy as np, fastopt
from fastopt.loop import make_loop
from fastopt.objective import prepare

@numba.njit
def fun(x):
    return np.sum((x - 1.0) ** 2)

res = fastopt.minimize(fun, np.zeros(3), method="adam", options={"lr": 0.1, "maxiter": 7})
assert res.nit == 7
objective, _ = prepare(fun, np.zeros(3), ())
run_start, _ = make_loop(fastopt.rules.RULES["adam"], objective, False, 3, portable=True)
print(len(run_start.stats.cache_hits), len(run_start.stats.cache_misses))
"""


def _package_cache_files():
    package = Path(fastopt.__file__).parent
    return {(path, path.stat().st_mtime_ns) for pattern in ("*.nbi", "*.nbc")
            for path in package.rglob(pattern)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is Linux's")
def test_portable_loop_loads_from_the_disk_cache_in_a_new_process(tmp_path):
    # Without NUMBA_CACHE_DIR, fastopt caches in the user-wide cache directory, never in
    # the package folder (files pip does not own there outlive ``pip uninstall``).
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    in_package = _package_cache_files()

    def run():
        out = subprocess.run([sys.executable, "-c", PORTABLE_CACHE_SCRIPT], env=env,
                             capture_output=True, text=True, timeout=300, check=True)
        return out.stdout.split()

    assert run() == ["0", "1"]  # compiled and saved
    assert run() == ["1", "0"]  # a new process, a new user function: loaded
    assert any((tmp_path / "numba").rglob("*.nbi"))
    assert _package_cache_files() == in_package


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x0": np.ones((2, 2))}, ValueError, "x0"),
        ({"x0": [1.0, np.nan]}, ValueError, "x0 must be finite"),
        ({"x0": "abc"}, TypeError, "x0"),
        ({"x0": ["1", "2"]}, TypeError, "x0 must be an array of real numbers"),
        ({"method": "bfgs", "options": {"norm": 2}}, ValueError, "norm: 2; .* infinity norm"),
        ({"options": {"lr": 0.0}}, ValueError, "learning rate"),
        ({"options": {"lr": -1.0}}, ValueError, "learning rate"),
        ({"options": {"betas": (1.0, 0.999)}}, ValueError, "betas"),
        ({"options": {"betas": (0.9, -0.1)}}, ValueError, "betas"),
        ({"method": "sgd", "options": {"nesterov": True}}, ValueError, "nesterov"),
        ({"method": "nope"}, ValueError, "Unknown method"),
        ({"method": "Nelder-Mead"}, ValueError, "a scipy method .* derivative-free"),
        ({"method": "Newton-CG"}, ValueError, "nearest are 'newton' and 'damped-newton'"),
        ({"method": "damped_newton"}, ValueError, "did you mean 'damped-newton'"),
        ({"method": "L-BFGS"}, ValueError, "did you mean 'lbfgs'"),
        ({"options": {"return_all": True, "history": 10}}, ValueError, "history"),
        ({"method": 3}, TypeError, "method"),
        ({"jac": 5}, TypeError, "jac"),
        ({"fun": 5}, TypeError, "fun must be callable"),
        ({"options": {"maxiter": -1}}, ValueError, "maxiter"),
        ({"options": {"lr": [0.1, 0.2]}}, ValueError, "lr"),
        ({"options": {"lr": "fast"}}, TypeError, "lr"),
        ({"options": {"history": "yes"}}, ValueError, "history"),
        ({"options": {"schedule": "sometimes"}}, TypeError, "schedule"),
        ({"options": 3}, TypeError, "options"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    call = {"fun": quadratic, "x0": np.zeros(2), "jac": quadratic_grad, "method": "adam"}
    call.update(kwargs)
    with pytest.raises(error, match=match):
        fastopt.minimize(**call)


def test_wrong_gradient_shape_is_reported():
    with pytest.raises(ValueError, match="jac must return an array of shape"):
        fastopt.minimize(quadratic, np.zeros(3), jac=lambda x: np.zeros(2))
    with pytest.raises(ValueError, match="objective function must return a scalar value"):
        fastopt.minimize(lambda x: x, np.zeros(3))


def test_unknown_option_warns_like_scipy():
    with pytest.warns(OptimizeWarning, match="Unknown solver options: bogus"):
        fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad,
                         options={"bogus": 1, "maxiter": 1})


def test_hess_for_a_method_without_hessian_warns_like_scipy():
    with pytest.warns(RuntimeWarning, match="does not use Hessian information"):
        res = fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method="bfgs",
                               hess=lambda x: np.eye(2), options={"maxiter": 1})
    assert "nhev" not in res


def test_method_none_is_the_default_method():
    kwargs = dict(jac=quadratic_grad, options={"maxiter": 5})
    res = fastopt.minimize(quadratic, np.zeros(2), method=None, **kwargs)
    np.testing.assert_array_equal(res.x, fastopt.minimize(quadratic, np.zeros(2), **kwargs).x)


def test_options_are_validated_whatever_was_cached():
    # the memo of parsed options once took {"history": 1.0} for the {"history": 1} it had seen
    kwargs = dict(jac=quadratic_grad)
    fastopt.minimize(quadratic, np.zeros(2), options={"history": 1, "maxiter": 2}, **kwargs)
    with pytest.raises(ValueError, match="Invalid history"):
        fastopt.minimize(quadratic, np.zeros(2), options={"history": 1.0, "maxiter": 2}, **kwargs)
    with pytest.raises(ValueError, match="Invalid history_max_bytes"):
        fastopt.minimize(quadratic, np.zeros(2), **kwargs,
                         options={"history": 1, "maxiter": 2, "history_max_bytes": "1 GiB"})


def test_bounds_warn_like_scipy():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, bounds=[(0, 1)] * 2,
                         method="adam", options={"maxiter": 1})
    assert any("Method adam cannot handle constraints nor bounds" in str(w.message)
               for w in record)


@pytest.mark.parametrize("kwargs, match", [
    ({"bounds": [(0, 1)] * 2}, "bounds: .* scipy would pick L-BFGS-B"),
    ({"constraints": [{"type": "eq", "fun": lambda x: x[0] - x[1]}]}, "constraints: .* SLSQP"),
    ({"constraints": so.LinearConstraint(np.ones((1, 2)), 0.0, 1.0)}, "constraints"),
])
def test_bounds_or_constraints_without_a_method_raise(kwargs, match):
    # scipy's default method obeys them; fastopt's would ignore them and report success
    with pytest.raises(ValueError, match=match):
        fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, **kwargs)


@pytest.mark.parametrize(("method", "option"), [
    ("bfgs", {"clip_norm": 1.0}),
    ("newton", {"clip_value": 1.0}),
    ("newton", {"schedule": fastopt.schedules.step(10)}),
])
def test_second_order_rules_refuse_first_order_options(method, option):
    with pytest.raises(ValueError, match="clip|schedule"):
        fastopt.minimize(quadratic, np.zeros(2), jac=quadratic_grad, method=method,
                         options=option)


def test_cli_main_job_prints_table(capsys):
    from fastopt.cli import main

    assert main(["--function", "sphere", "--dim", "3", "--starts", "200", "--maxiter", "500",
                 "--method", "Adam", "--lr", "0.05"]) == 0  # any case, as minimize
    out = capsys.readouterr().out
    assert "best f" in out and "converged" in out and "100.0%" in out
    assert main(["--starts", "0"]) == 2


def test_ctrl_c_stops_minimize():
    # minimize runs its start in chunks of growing length; Python raises the
    # KeyboardInterrupt when a chunk returns
    assert interrupted(ENDLESS_RUN_SCRIPT, "minimize", timeout=30) == ["interrupted"]


def _bowl(x):
    return (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2


@pytest.mark.parametrize("jac", [
    lambda x: [2 * (x[0] - 1.0), 2 * (x[1] + 2.0)],
    lambda x: (2 * (x[0] - 1.0), 2 * (x[1] + 2.0)),
    lambda x: (0, 2 * (x[1] + 2.0)) if x[0] == 1.0 else (2 * (x[0] - 1.0), 2 * (x[1] + 2.0)),
], ids=["list", "tuple", "mixed-tuple"])
def test_a_gradient_returned_as_a_list_or_tuple_works_as_in_scipy(jac):
    for method in ("adam", "bfgs"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # compiled: no PythonSpeedWarning
            res = fastopt.minimize(_bowl, [0.0, 0.0], jac=jac, method=method,
                                   options={"gtol": 1e-6})
        assert res.success and res.jac.dtype == np.float64, (method, res.message)
        np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-5)


def test_fun_returning_its_gradient_as_a_list_works_as_in_scipy():
    def fun(x):
        return (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2, [2 * (x[0] - 1.0), 2 * (x[1] + 2.0)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled: no PythonSpeedWarning
        res = fastopt.minimize(fun, [0.0, 0.0], jac=True, method="bfgs")
    np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-5)
