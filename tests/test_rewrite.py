"""fastopt.rewrite: allocating gradients rewritten to write into fastopt's buffer."""

import functools

import numba
import numpy as np
import pytest
from numpy import zeros_like

import fastopt
from fastopt import rewrite
from fastopt.functions import rosenbrock
from fastopt.objective import prepare
from fastopt.rewrite import gradient_in_place

X = np.array([0.3, -1.2])


# A user's @njit gradient of the usual shape: the built-in Rosenbrock's source, compiled afresh
# (n = x.size; g = np.zeros(n); g[i] += ...; return g).
rosen_grad_loop = numba.njit(rosenbrock.grad.py_func)


def literal_grad(x, c):
    return np.array([2.0 * c * x[0], 4.0 * x[1] ** 3])


def literal_tuple_grad(x):
    return np.array((np.sin(x[0]), x[0] * x[1]), dtype=np.float64)


def empty_grad(x):
    g = np.empty(len(x))
    g[:] = 2.0 * x
    if g.size > 1:
        g[1] = -g[1]
    return g


def literal_size_grad(x):
    g = np.empty(2)  # the probe checks that the gradient has x's length
    g[0] = x[0]
    g[1] = x[1] * x[0]
    return g


def imported_name_grad(x):
    g = zeros_like(x)
    g[0] = 3.0 * x[0] ** 2
    return g


def value_and_grad(x):
    g = np.zeros(x.shape)
    g[0] = 2.0 * x[0]
    g[1] = 2.0 * x[1]
    return x[0] ** 2 + x[1] ** 2, g


def value_and_literal_grad(x):
    return np.cos(x[0]) + x[1] ** 2, np.array([-np.sin(x[0]), 2.0 * x[1]])


REWRITTEN = [(rosen_grad_loop.py_func, ()), (literal_grad, (1.5,)), (literal_tuple_grad, ()),
             (empty_grad, ()), (imported_name_grad, ()), (literal_size_grad, ())]


@pytest.mark.parametrize("func, args", REWRITTEN, ids=lambda f: getattr(f, "__name__", ""))
def test_rewritten_gradient_writes_the_same_bits(func, args):
    in_place = gradient_in_place(func)
    assert in_place is not None
    out = np.full(X.size, np.nan)
    assert in_place(X, out, *args) is None
    np.testing.assert_array_equal(out, func(X, *args))


@pytest.mark.parametrize("func", [value_and_grad, value_and_literal_grad])
def test_rewritten_value_and_gradient_returns_the_value(func):
    in_place = gradient_in_place(func, returns_value=True)
    out = np.full(X.size, np.nan)
    value, grad = func(X)
    assert in_place(X, out) == value
    np.testing.assert_array_equal(out, grad)


def _aliased(x):
    g = np.zeros_like(x)
    h = g
    h[0] = 1.0
    return g


def _reassigned(x):
    g = np.zeros_like(x)
    g = g + 1.0
    return g


def _passed_on(x):
    g = np.zeros_like(x)
    np.copyto(g, x)
    return g


def _assigned_in_branch(x):
    if x[0] > 0:
        g = np.zeros_like(x)
    else:
        g = np.ones_like(x)
    return g


def _lengths_differ(x):
    if x[0] > 0:
        return np.array([1.0, 2.0])
    return np.array([3.0])


def _other_array(x):
    return 2.0 * x


def _int_zeros(x):
    g = np.zeros_like(x, dtype=np.int64)
    return g


def _default_x(x=None):
    return np.array([1.0, 2.0])


def _falls_off_the_end(x):
    g = np.zeros_like(x)
    if x[0] > 0:
        g[0] = 2.0 * x[0]
        return g


def _literal_falls_off_the_end(x):
    if x[0] > 0:
        return np.array([1.0, 2.0])


def _x_rebound(x):
    x = x.astype(np.float32)
    g = np.zeros_like(x)
    g[0] = x[0]
    return g


def _read_through_a_view(x):
    g = np.zeros_like(x)
    flat = g[:].ravel()  # a view of a contiguous g, a copy of a strided out
    flat[0] = 3.0 * x[0]
    return g


def _size_rebound(x):
    n = x.size
    n = n + 1
    g = np.zeros(n)
    return g


def _dtype_is_a_parameter(x, float=np.float32):
    g = np.zeros(len(x), dtype=float)
    g[0] = x[0]
    return g


def _generator(x):
    yield np.array([x[0], x[1]])


def _make_closure():
    c = 2.0

    def closure(x):
        return np.array([c * x[0], x[1]])
    return closure


NOT_REWRITTEN = [_aliased, _reassigned, _passed_on, _assigned_in_branch, _lengths_differ,
                 _other_array, _int_zeros, _default_x, _falls_off_the_end,
                 _literal_falls_off_the_end, _x_rebound, _read_through_a_view, _size_rebound,
                 _dtype_is_a_parameter, _generator, _make_closure(),
                 functools.wraps(literal_tuple_grad)(lambda x: literal_tuple_grad(x) * 3.0),
                 lambda x: np.array([x[0], x[1]]), np.cos]


@pytest.mark.parametrize("func", NOT_REWRITTEN, ids=lambda f: getattr(f, "__name__", "?"))
def test_shapes_not_known_to_be_safe_are_left_alone(func):
    assert gradient_in_place(func) is None


def test_source_that_is_not_the_functions_code_is_not_used():
    # compiled under this file's name at literal_grad's line: the source found there is not
    # this function's
    first = literal_grad.__code__.co_firstlineno
    source = "\n" * (first - 1) + "def literal_grad(x):\n    return np.array([10.0 * x[0], 1.0])\n"
    namespace = {"np": np}
    exec(compile(source, __file__, "exec"), namespace)  # noqa: S102
    assert gradient_in_place(namespace["literal_grad"]) is None


def test_any_failure_while_rewriting_leaves_the_function_alone(monkeypatch):
    # e.g. a generated gradient with a sum too long for Python's AST tools (RecursionError)
    def too_deep(code):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rewrite, "_parse", too_deep)
    assert gradient_in_place(literal_tuple_grad) is None


def test_value_and_gradient_needs_a_tuple_return():
    assert gradient_in_place(literal_grad, returns_value=True) is None
    assert gradient_in_place(value_and_grad) is None  # returns a tuple, not a gradient


rosen = numba.njit(rosenbrock.fun.py_func)


def test_minimize_uses_the_rewritten_gradient_and_matches_the_plain_call():
    objective, _ = prepare(rosen, X, (), rosen_grad_loop)
    jac_called = objective.fg.py_func.__globals__["jac"]
    assert jac_called.py_func.__name__ == "rosenbrock_grad_in_place"

    X0 = np.random.default_rng(3).uniform(-2, 2, size=(6, 2))
    options = {"lr": 1e-2, "maxiter": 300}
    batch = fastopt.minimize_batch(rosen, X0, jac=rosen_grad_loop, method="adam",
                                   options=options)
    # compiled with boundscheck, the same gradient is called as the user wrote it
    called = numba.njit(boundscheck=True)(rosen_grad_loop.py_func)
    plain = fastopt.minimize_batch(rosen, X0, jac=called, method="adam", options=options)
    np.testing.assert_array_equal(batch.x, plain.x)
    np.testing.assert_array_equal(batch.nfev, plain.nfev)
    single = fastopt.minimize(rosen, X0[4], jac=rosen_grad_loop, method="adam", options=options)
    np.testing.assert_array_equal(single.x, batch.x[4])
