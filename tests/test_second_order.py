"""Second-order and quasi-Newton rules (issue #3): Newton, damped Newton, BFGS, L-BFGS.

Numba compiles the loop once per (rule, objective), so every test here uses ONE
objective, ``suite_fun`` / ``suite_grad`` / ``suite_hess``, whose extra argument
``k`` picks the function (``args=(k,)``): one compile per rule covers them all.
BFGS and L-BFGS are run without ``hess`` (passing one would build a second
objective and a second compile).
"""

import importlib
import warnings

import numba
import numpy as np
import pytest
import scipy.optimize as so
from scipy.optimize._dcsrch import DCSRCH

import fastopt
from fastopt import Status
from fastopt import linalg as la
from fastopt import linesearch as ls
from fastopt import status as st
from fastopt._layout import FTOL, MAXITER, N_COUNTERS
from fastopt._setup import parse
from fastopt.functions import (
    beale,
    beale_fun,
    beale_grad,
    beale_hess,
    himmelblau,
    himmelblau_fun,
    himmelblau_grad,
    himmelblau_hess,
    rosenbrock,
    rosenbrock_fun,
    rosenbrock_grad,
    rosenbrock_hess,
    sphere,
    styblinski_tang,
    styblinski_tang_fun,
    styblinski_tang_grad,
    styblinski_tang_hess,
    wavy,
    wavy_fun,
    wavy_grad,
    wavy_hess,
)

ROSENBROCK, HIMMELBLAU, BEALE, STYBLINSKI_TANG, WAVY, SADDLE, SINGULAR, LOG = range(8)


@numba.njit
def suite_fun(x, k):
    if k == ROSENBROCK:
        return rosenbrock_fun(x)
    if k == HIMMELBLAU:
        return himmelblau_fun(x)
    if k == BEALE:
        return beale_fun(x)
    if k == STYBLINSKI_TANG:
        return styblinski_tang_fun(x)
    if k == WAVY:
        return wavy_fun(x)
    if k == SADDLE:  # x^2 - y^2 + y^4/4: a saddle at 0, minima -1 at (0, +-sqrt 2)
        return x[0] ** 2 - x[1] ** 2 + x[1] ** 4 / 4.0
    if k == SINGULAR:  # the Hessian [[2, 2], [2, 2]] everywhere
        return (x[0] + x[1]) ** 2
    return x[0] - np.log(x[0])  # LOG: NaN for x < 0, minimum 1 at 1


@numba.njit
def suite_grad(x, k):
    if k == ROSENBROCK:
        return rosenbrock_grad(x)
    if k == HIMMELBLAU:
        return himmelblau_grad(x)
    if k == BEALE:
        return beale_grad(x)
    if k == STYBLINSKI_TANG:
        return styblinski_tang_grad(x)
    if k == WAVY:
        return wavy_grad(x)
    if k == SADDLE:
        return np.array([2.0 * x[0], -2.0 * x[1] + x[1] ** 3])
    if k == SINGULAR:
        s = 2.0 * (x[0] + x[1])
        return np.array([s, s])
    return np.array([1.0 - 1.0 / x[0]])


@numba.njit
def suite_hess(x, k):
    if k == ROSENBROCK:
        return rosenbrock_hess(x)
    if k == HIMMELBLAU:
        return himmelblau_hess(x)
    if k == BEALE:
        return beale_hess(x)
    if k == STYBLINSKI_TANG:
        return styblinski_tang_hess(x)
    if k == WAVY:
        return wavy_hess(x)
    if k == SADDLE:
        return np.array([[2.0, 0.0], [0.0, -2.0 + 3.0 * x[1] ** 2]])
    if k == SINGULAR:
        return np.array([[2.0, 2.0], [2.0, 2.0]])
    return np.array([[1.0 / x[0] ** 2]])


PY_FUNCTIONS = {ROSENBROCK: rosenbrock, HIMMELBLAU: himmelblau, BEALE: beale,
                STYBLINSKI_TANG: styblinski_tang}


def run(method, x0, k, **kwargs):
    """fastopt.minimize on suite function ``k`` (with ``hess`` for the Newton rules)."""
    if method in ("newton", "damped-newton"):
        kwargs.setdefault("hess", suite_hess)
    return fastopt.minimize(suite_fun, np.asarray(x0, dtype=float), args=(k,), jac=suite_grad,
                            method=method, **kwargs)


def run_batch(method, X0, k, **kwargs):
    if method in ("newton", "damped-newton"):
        kwargs.setdefault("hess", suite_hess)
    return fastopt.minimize_batch(suite_fun, np.asarray(X0, dtype=float), args=(k,),
                                  jac=suite_grad, method=method, **kwargs)


# --- kernels against plain NumPy references ------------------------------------------
def naive_ldl(A):
    """LDL^T of a symmetric positive definite A, textbook loops: (L, D)."""
    n = A.shape[0]
    L = np.eye(n)
    D = np.zeros(n)
    for j in range(n):
        D[j] = A[j, j] - np.sum(L[j, :j] ** 2 * D[:j])
        for i in range(j + 1, n):
            L[i, j] = (A[i, j] - np.sum(L[i, :j] * L[j, :j] * D[:j])) / D[j]
    return L, D


def naive_lbfgs_matrix(S, Y, gamma):
    """The L-BFGS inverse Hessian as a dense matrix: BFGS updates of gamma*I, oldest first."""
    d = S.shape[1]
    H = gamma * np.eye(d)
    for s, y in zip(S, Y, strict=True):
        rho = 1.0 / (y @ s)
        V = np.eye(d) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("d", [1, 2, 5, 17])
def test_ldl_factor_and_solve_match_numpy(d):
    rng = np.random.default_rng(d)
    B = rng.standard_normal((d, d))
    A = B @ B.T + 0.1 * np.eye(d)
    b = rng.standard_normal(d)
    LD = A.copy()
    assert la.ldl_factor(LD) == la.FACTOR_OK
    L, D = naive_ldl(A)
    np.testing.assert_allclose(np.tril(LD, -1) + np.eye(d), L, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.diag(LD), D, rtol=1e-10)
    np.testing.assert_array_equal(np.triu(LD, 1), np.triu(A, 1))  # upper triangle untouched
    x = np.empty(d)
    la.ldl_solve(LD, b, x)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-9, atol=1e-12)
    la.ldl_solve(LD, b, b)  # in place
    np.testing.assert_array_equal(b, x)


def test_ldl_one_by_one_is_a_division():
    for a, g in [(3.0, 0.7), (0.1 + 2.3, -1e-3), (7e-3, 5.0)]:
        LD = np.array([[a]])
        p = np.empty(1)
        assert la.ldl_factor(LD) == la.FACTOR_OK
        la.ldl_solve(LD, np.array([g]), p)
        assert p[0] == g / a


def test_ldl_rejects_indefinite_singular_and_nan():
    assert la.ldl_factor(np.array([[2.0, 0.0], [0.0, -1.0]])) == la.FACTOR_NOT_POSITIVE
    assert la.ldl_factor(np.array([[1.0, 1.0], [1.0, 1.0]])) == la.FACTOR_TINY_PIVOT
    assert la.ldl_factor(np.zeros((3, 3))) == la.FACTOR_TINY_PIVOT
    A = np.eye(3)
    A[1, 1] = np.nan
    assert la.ldl_factor(A) != la.FACTOR_OK
    A = np.eye(3)
    A[2, 0] = np.inf
    assert la.ldl_factor(A) != la.FACTOR_OK


@pytest.mark.parametrize("d", [1, 3, 8])
def test_lu_solve_matches_numpy_on_indefinite_systems(d):
    rng = np.random.default_rng(10 + d)
    B = rng.standard_normal((d, d))
    A = B + B.T
    b = rng.standard_normal(d)
    x = np.empty(d)
    assert la.lu_solve(A.copy(), b, x)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    assert not la.lu_solve(np.ones((3, 3)), np.ones(3), np.empty(3))
    A = np.eye(2)
    A[0, 0] = np.nan
    assert not la.lu_solve(A, np.ones(2), np.empty(2))


@pytest.mark.parametrize(("d", "m", "count", "newest"), [
    (1, 3, 3, 0), (4, 5, 3, 4), (6, 4, 4, 2), (10, 10, 10, 7), (3, 2, 0, 1), (5, 6, 5, 1),
    (2, 7, 6, 2), (3, 4, 1, 0), (3, 4, 2, 0), (7, 3, 2, 1)])
def test_two_loop_recursion_matches_dense_bfgs_matrix(d, m, count, newest):
    rng = np.random.default_rng(d * 100 + m)
    S = rng.standard_normal((m, d))
    Y = S + 0.3 * rng.standard_normal((m, d))
    Y[np.einsum("ij,ij->i", S, Y) <= 0] *= -1.0  # curvature condition s'y > 0
    rho = 1.0 / np.einsum("ij,ij->i", S, Y)
    cross = np.einsum("ij,ij->i", np.roll(S, 1, axis=0), Y)  # s_{i-1}'y_i, cyclically
    gamma = 0.7
    q = rng.standard_normal(d)
    pairs = np.vstack([S, Y, np.full((2, d), np.nan)])  # rows from 2m on are not read
    coef = np.concatenate([rho, np.full(m, np.nan), cross, [np.nan]])  # [m, 2m): work space
    out = q.copy()
    la.lbfgs_two_loop(out, pairs, coef, m, newest, count, gamma)
    order = [(newest - count + 1 + i) % m for i in range(count)]  # oldest to newest
    expected = naive_lbfgs_matrix(S[order], Y[order], gamma) @ q
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12)
    # Slots outside the memory, and cross of the oldest pair, are never used.
    unused = [i for i in range(m) if i not in order]
    pairs[unused] = pairs[[m + i for i in unused]] = np.nan
    coef[unused] = coef[[2 * m + i for i in unused]] = np.nan
    if count:
        coef[2 * m + order[0]] = np.nan
    again = q.copy()
    la.lbfgs_two_loop(again, pairs, coef, m, newest, count, gamma)
    np.testing.assert_array_equal(again, out)


@pytest.mark.parametrize("d", [1, 4, 7])
def test_lbfgs_new_pair_stores_the_pair_and_its_products(d):
    rng = np.random.default_rng(d)
    m, j, newest = 4, 2, 1
    pairs = rng.standard_normal((2 * m + 1, d))
    before = pairs.copy()
    alpha, p, g, gk = 0.3, rng.standard_normal(d), rng.standard_normal(d), rng.standard_normal(d)
    sy, yy, cross = la.lbfgs_new_pair(pairs, m, j, newest, alpha, p, g, gk)
    s, y = pairs[j], pairs[m + j]
    np.testing.assert_array_equal(s, alpha * p)
    np.testing.assert_array_equal(y, g - gk)
    others = [i for i in range(2 * m + 1) if i not in (j, m + j)]
    np.testing.assert_array_equal(pairs[others], before[others])
    assert sy == la.dot(s, y) and yy == la.dot(y, y)
    assert cross == la.dot(pairs[newest], y)


def test_bfgs_inverse_update_matches_formula():
    rng = np.random.default_rng(3)
    d = 6
    B = rng.standard_normal((d, d))
    H = B @ B.T + np.eye(d)
    s = rng.standard_normal(d)
    y = s + 0.2 * rng.standard_normal(d)
    rho = 1.0 / (y @ s)
    V = np.eye(d) - rho * np.outer(y, s)
    expected = V.T @ H @ V + rho * np.outer(s, s)
    Hk = H.copy()
    assert la.bfgs_inverse_update(Hk, s, y, np.empty(d))
    np.testing.assert_allclose(Hk, expected, rtol=1e-10, atol=1e-12)
    assert not la.bfgs_inverse_update(Hk, s, -y, np.empty(d))  # s'y < 0: no update


@pytest.mark.parametrize(("options", "status"), [
    ({"xrtol": 1e-3}, Status.XTOL), ({"xrtol": 0.1}, Status.XTOL),
    ({"hess_inv0": np.diag([1.0, 2.0, 3.0, 4.0, 5.0])}, Status.GTOL),
    ({"hess_inv0": 0.01 * np.eye(5), "xrtol": 1e-3}, Status.XTOL),
    ({"workers": 1}, Status.GTOL)])
def test_bfgs_scipy_options(options, status):
    # scipy's BFGS options: xrtol stops once ||s_k|| <= xrtol (xrtol + ||x_k+1||), counting
    # that iteration; hess_inv0 is H_0; workers (scipy's map for differences) changes nothing
    x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown option"
        ours = fastopt.minimize(so.rosen, x0, jac=so.rosen_der, method="BFGS", options=options)
    options = {k: v for k, v in options.items() if k != "workers"}  # the batch's is a keyword
    theirs = so.minimize(so.rosen, x0, jac=so.rosen_der, method="BFGS", options=options)
    assert (ours.nit, ours.nfev, ours.success) == (theirs.nit, theirs.nfev, theirs.success)
    assert ours.status == status
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6)
    batch = fastopt.minimize_batch(so.rosen, np.stack([x0, x0 + 0.1]), jac=so.rosen_der,
                                   method="BFGS", options=options)
    np.testing.assert_array_equal(batch.x[0], ours.x)


def test_bfgs_hess_inv0_is_checked():
    x0 = np.zeros(3)
    start = fastopt.minimize(so.rosen, x0, method="BFGS", jac=so.rosen_der,
                             options={"hess_inv0": 0.5 * np.eye(3), "maxiter": 0})
    np.testing.assert_array_equal(start.hess_inv, 0.5 * np.eye(3))  # H_0, as scipy's
    for bad, match in [(-np.eye(3), "positive definite"), (np.ones((3, 3)), "positive definite"),
                       (np.eye(3) + np.triu(np.full((3, 3), 1e-9), 1), "positive definite"),
                       (np.eye(2), "shape")]:
        with pytest.raises(ValueError, match=match):
            fastopt.minimize(so.rosen, x0, method="BFGS", options={"hess_inv0": bad})
    # a first search that fails ends the run from H_0, as scipy's (no restart from -g)
    h0 = np.diag([1.0, 2.0, 3.0])
    failed = fastopt.minimize(so.rosen, [-1.2, 1.0, 0.5], method="BFGS",
                              jac=lambda x: -so.rosen_der(x), options={"hess_inv0": h0})
    assert failed.status == Status.LINE_SEARCH_FAILED and failed.nit == 0
    np.testing.assert_array_equal(failed.hess_inv, h0)


def test_bfgs_badly_scaled_objective_as_scipy():
    # f scaled by 1e50 from H = I: rho s s' is 1e-50 next to terms of order 1, which an
    # expanded update cancels to rounding (H went to 0: 43 iterations for scipy's 2)
    def fun(x):
        return 1e50 * (x[0] - 1.0) ** 2

    def jac(x):
        return np.array([2e50 * (x[0] - 1.0)])

    ours = fastopt.minimize(fun, [-1.0], jac=jac, method="BFGS", options={"gtol": 1e42})
    theirs = so.minimize(fun, [-1.0], jac=jac, method="BFGS", options={"gtol": 1e42})
    np.testing.assert_allclose(ours.hess_inv, [[5e-51]], rtol=1e-12)  # 1 / f"(x)
    assert (ours.nit, ours.nfev) == (theirs.nit, theirs.nfev) == (2, 3)
    np.testing.assert_allclose(ours.hess_inv, theirs.hess_inv, rtol=1e-12)


# --- line searches -----------------------------------------------------------------
def _ray(fun, grad, x0, p):
    """``fg`` along a ray for the searches' plain-Python path, and scipy's phi / phi'."""
    def fg(x, g, args, fd_step, counters):
        g[:] = grad(x)
        counters[1] += 1
        return fun(x)

    def phi(a):
        return fun(x0 + a * p)

    def dphi(a):
        return grad(x0 + a * p) @ p

    return fg, phi, dphi


@pytest.mark.parametrize(("func", "x0", "stp"), [
    (rosenbrock, [-1.2, 1.0], 1.0), (rosenbrock, [-1.2, 1.0], 1e-3), (rosenbrock, [0.3, 2.0], 0.5),
    (himmelblau, [0.0, 0.0], 1.0), (beale, [1.0, 1.0], 0.2), (styblinski_tang, [0.5, 0.5], 2.0),
])
def test_wolfe_search_matches_scipy_dcsrch(func, x0, stp):
    x0 = np.array(x0)
    p = -func.grad(x0)
    fg, phi, dphi = _ray(func.fun, func.grad, x0, p)
    f0, dphi0 = phi(0.0), dphi(0.0)
    counters = np.zeros(N_COUNTERS, dtype=np.int64)
    x, g = np.empty(2), np.empty(2)
    f, alpha, ok = ls.wolfe_search(fg, (), 0.0, counters, x, g, x0, p, f0, dphi0, stp, 1e-4, 0.9,
                                   1e-14, 1e-100, 1e100, 100)
    expected, phi1, _, task = DCSRCH(phi, dphi, 1e-4, 0.9, 1e-14, 1e-100, 1e100)(
        stp, phi0=f0, derphi0=dphi0, maxiter=100)
    assert ok and task.startswith(b"CONV")
    assert alpha == expected and f == phi1
    np.testing.assert_array_equal(x, x0 + alpha * p)
    assert f <= f0 + 1e-4 * alpha * dphi0 and abs(g @ p) <= 0.9 * abs(dphi0)


@pytest.mark.parametrize("kind", [ls.NONE, ls.STRONG_WOLFE, ls.ARMIJO])
@pytest.mark.parametrize(("func", "x0", "stp"), [
    (rosenbrock, [-1.2, 1.0], 1.0), (rosenbrock, [-1.2, 1.0], 1e-3), (himmelblau, [0.0, 0.0], 1.0),
    (beale, [1.0, 1.0], 0.2)])
def test_first_trial_then_search_from_it_is_the_whole_search(kind, func, x0, stp):
    # What the rules do (evaluate the first trial, search on only if it is not accepted)
    # gives line_search's result with the same evaluations.
    x0 = np.array(x0)
    p = -func.grad(x0)
    fg, phi, dphi = _ray(func.fun, func.grad, x0, p)
    f0, dphi0 = phi(0.0), dphi(0.0)
    consts = (1e-4, 0.9, 1e-14, 1e-100, 1e100, 100)
    c_whole, x_whole, g_whole = np.zeros(N_COUNTERS, dtype=np.int64), np.empty(2), np.empty(2)
    whole = ls.line_search(kind, fg, (), 0.0, c_whole, x_whole, g_whole, x0, p, f0, dphi0, stp,
                           *consts)
    counters, x, g = np.zeros(N_COUNTERS, dtype=np.int64), np.empty(2), np.empty(2)
    f, slope = ls.trial(fg, (), 0.0, counters, x, g, x0, p, stp)
    if ls.accepts_first_trial(kind, f, slope, f0, dphi0, stp, *consts[:2]):
        split = (f, stp, True)
        assert c_whole[1] == 1
    else:
        split = ls.search_from_trial(kind, fg, (), 0.0, counters, x, g, x0, p, f0, dphi0, stp, f,
                                     slope, *consts)
    assert split == whole and whole[2]
    np.testing.assert_array_equal(counters, c_whole)
    np.testing.assert_array_equal(x, x_whole)
    np.testing.assert_array_equal(g, g_whole)


def test_armijo_search_gives_sufficient_decrease_and_backtracks():
    x0 = np.array([-1.2, 1.0])
    p = -rosenbrock.grad(x0)
    fg, phi, dphi = _ray(rosenbrock.fun, rosenbrock.grad, x0, p)
    f0, dphi0 = phi(0.0), dphi(0.0)
    counters = np.zeros(N_COUNTERS, dtype=np.int64)
    x, g = np.empty(2), np.empty(2)
    f, alpha, ok = ls.armijo_search(fg, (), 0.0, counters, x, g, x0, p, f0, dphi0, 1.0, 1e-4, 50)
    assert ok and 0 < alpha < 1 and counters[1] > 1
    assert f == phi(alpha) and f <= f0 + 1e-4 * alpha * dphi0
    # interpolation step: inside [0.1, 0.5] of the last trial, NaN value -> halve
    assert ls.armijo_trial_step(1.0, 0.0, -1.0, 1.0, 0.0, 0.0) == 0.25  # quadratic minimizer
    assert ls.armijo_trial_step(1.0, 0.0, -1.0, 10.0, 0.0, 0.0) == 0.1  # 1/22, kept >= 0.1
    assert ls.armijo_trial_step(1.0, 0.0, -1.0, np.nan, 0.0, 0.0) == 0.5


def test_wolfe_search_steps_back_from_overflow():
    # f = exp(x) - 2x overflows far out; the first trial step lands there.
    def fun(x):
        with np.errstate(over="ignore"):
            return float(np.exp(x[0]) - 2.0 * x[0])

    def grad(x):
        with np.errstate(over="ignore"):
            return np.array([np.exp(x[0]) - 2.0])

    x0 = np.array([0.0])
    p = np.array([1.0])
    fg, phi, dphi = _ray(fun, grad, x0, p)
    x, g = np.empty(1), np.empty(1)
    counters = np.zeros(N_COUNTERS, dtype=np.int64)
    f, alpha, ok = ls.wolfe_search(fg, (), 0.0, counters, x, g, x0, p, phi(0.0),
                                   dphi(0.0), 1e4, 1e-4, 0.9, 1e-14, 1e-100, 1e100, 100)
    assert ok and np.isfinite(f) and abs(alpha - np.log(2.0)) < 0.5


# --- agreement with scipy ----------------------------------------------------------
SCIPY_CASES = [
    (ROSENBROCK, [-1.2, 1.0]),
    (ROSENBROCK, [-1.2, 1.0, -1.2, 1.0, -1.2]),
    (ROSENBROCK, [-1.2, 1.0] * 5),
    (ROSENBROCK, [0.5, -0.3, 1.7, 0.1, -1.0, 0.9, 1.3, -0.6, 0.2, 1.1]),
    (HIMMELBLAU, [0.0, 0.0]),
    (HIMMELBLAU, [-1.0, -1.0]),
    (HIMMELBLAU, [4.0, -4.0]),
    (BEALE, [1.0, 1.0]),
    (BEALE, [2.0, 0.2]),
    (STYBLINSKI_TANG, [0.5, 0.5]),
    (STYBLINSKI_TANG, [-1.0, 2.0, 0.3, 4.0, -3.0]),
]


@pytest.mark.parametrize(("method", "scipy_method"), [("bfgs", "BFGS"), ("lbfgs", "L-BFGS-B")])
@pytest.mark.parametrize(("k", "x0"), SCIPY_CASES)
def test_quasi_newton_matches_scipy(method, scipy_method, k, x0):
    func = PY_FUNCTIONS[k]
    res = run(method, x0, k)
    ref = so.minimize(func.fun, np.array(x0), jac=func.grad, method=scipy_method,
                      options={"gtol": 1e-5})
    assert res.success and res.status == Status.GTOL, res.message
    assert np.max(np.abs(res.jac)) <= 1e-5
    np.testing.assert_allclose(res.x, ref.x, atol=2e-4)
    assert abs(res.fun - ref.fun) <= 1e-7 * max(1.0, abs(ref.fun))
    assert abs(res.nit - ref.nit) <= max(3, 0.15 * ref.nit), (res.nit, ref.nit)
    if method == "bfgs":
        # The same algorithm as scipy's, line search included: the same iterations.
        assert res.nit == ref.nit and res.nfev == ref.nfev


@pytest.mark.parametrize(("k", "x0"), SCIPY_CASES)
def test_l_bfgs_b_is_lbfgs_with_scipys_defaults(k, x0):
    # scipy's method name and defaults (line search c1 = 1e-3, ftol = factr * eps): the
    # same stopping test, so about the same iterations as scipy's L-BFGS-B
    func = PY_FUNCTIONS[k]
    res = run("L-BFGS-B", x0, k)
    ref = so.minimize(func.fun, np.array(x0), jac=func.grad, method="L-BFGS-B")
    assert res.success and ref.success, (res.message, ref.message)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-3)
    assert abs(res.fun - ref.fun) <= 1e-6 * max(1.0, abs(ref.fun))
    assert abs(res.nit - ref.nit) <= max(3, 0.15 * ref.nit), (res.nit, ref.nit)


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B"])
def test_forward_differences_take_scipys_step(method):
    # jac="2-point": relative step sqrt(eps), as scipy (the central step, eps**(1/3),
    # left the forward gradient 4.8e-3 off at x0 and L-BFGS-B stopping 2e-3 from x*)
    x0 = np.array([-1.2, 1.0])
    res = fastopt.minimize(rosenbrock.fun, x0, jac="2-point", method=method)
    ref = so.minimize(rosenbrock.fun, x0, jac="2-point", method=method)
    assert res.success and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=2e-5)
    assert res.fun < 1e-10
    assert abs(res.nfev - ref.nfev) <= 0.15 * ref.nfev, (res.nfev, ref.nfev)


def _unbounded_below(x):
    return x[0] + x[1]


def _unbounded_below_grad(x):
    return np.ones(2)


@pytest.mark.parametrize("options", [None, {"maxfun": 10}])
def test_l_bfgs_b_stops_at_maxfun_as_scipy(options):
    # default maxfun 15000: an objective unbounded below stops there, not at maxiter
    # after 270,000 evaluations; the same iterations and evaluations as scipy's
    fun, jac = ((_unbounded_below, _unbounded_below_grad) if options is None
                else (rosenbrock.fun, rosenbrock.grad))
    res = fastopt.minimize(fun, [-1.2, 1.0], jac=jac, method="L-BFGS-B", options=options)
    ref = so.minimize(fun, [-1.2, 1.0], jac=jac, method="L-BFGS-B", options=options)
    assert (res.status, res.success, res.message) == (1, False, ref.message)
    assert (res.nit, res.nfev) == (ref.nit, ref.nfev)
    batch = fastopt.minimize_batch(fun, [[-1.2, 1.0]], jac=jac, method="L-BFGS-B",
                                   options=options)
    assert batch.status[0] == Status.MAXFUN  # a batch keeps fastopt's codes


@pytest.mark.parametrize(("fun", "jac", "options"), [
    (rosenbrock.fun, rosenbrock.grad, None),  # the relative reduction of f
    (sphere.fun, sphere.grad, None),  # the projected gradient
    (rosenbrock.fun, rosenbrock.grad, {"maxiter": 5}),
    (rosenbrock.fun, rosenbrock.grad, {"maxfun": 4}),
], ids=["ftol", "gtol", "maxiter", "maxfun"])
def test_l_bfgs_b_reports_scipys_status_and_message(fun, jac, options):
    # scipy's L-BFGS-B has codes and texts of its own: 0 for either convergence test, 1
    # for either limit, with the Fortran code's messages
    x0 = [-1.2, 1.0, 0.5]
    res = fastopt.minimize(fun, x0, jac=jac, method="L-BFGS-B", options=options)
    ref = so.minimize(fun, x0, jac=jac, method="L-BFGS-B", options=options)
    assert (res.status, res.success, res.message, res.nit, res.nfev) == \
        (ref.status, ref.success, ref.message, ref.nit, ref.nfev)


@pytest.mark.parametrize("maxls", [3, 5])
def test_l_bfgs_b_maxls_bounds_its_line_search_as_scipy(maxls):
    x0 = [-1.2, 1.0, -1.2, 1.0, 0.5]
    res = fastopt.minimize(rosenbrock.fun, x0, jac=rosenbrock.grad, method="L-BFGS-B",
                           options={"maxls": maxls})
    ref = so.minimize(rosenbrock.fun, x0, jac=rosenbrock.grad, method="L-BFGS-B",
                      options={"maxls": maxls})
    assert res.success and (res.nit, res.nfev) == (ref.nit, ref.nfev)
    one = fastopt.minimize(rosenbrock.fun, x0, jac=rosenbrock.grad, method="L-BFGS-B",
                           options={"maxls": 1})
    assert one.status == Status.LINE_SEARCH_FAILED  # as scipy's (status 2)


def test_maxfun_is_for_methods_that_choose_how_often_they_evaluate():
    with pytest.raises(ValueError, match="maxfun: method 'adam'"):
        fastopt.minimize(rosenbrock.fun, [-1.2, 1.0], jac=rosenbrock.grad, method="adam",
                         options={"maxfun": 10})


@pytest.mark.parametrize(("method", "d", "maxiter", "ftol"), [
    ("bfgs", 3, 600, 0.0), ("BFGS", 10, 2000, 0.0), ("lbfgs", 3, 10_000, 0.0),
    ("L-BFGS-B", 3, 15_000, 1e7 * np.finfo(float).eps)])
def test_stopping_defaults_are_scipys_for_scipys_methods(method, d, maxiter, ftol):
    controls = parse(method, None, None, d).controls[0]
    assert controls[MAXITER] == maxiter and controls[FTOL] == ftol


def test_l_bfgs_b_tol_sets_ftol_and_gtol_as_in_scipy():
    x0 = [-1.2, 1.0]
    default = run("L-BFGS-B", x0, ROSENBROCK)
    tight = run("L-BFGS-B", x0, ROSENBROCK, tol=1e-14)
    assert default.message == "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH"
    assert tight.nit > default.nit and tight.fun < default.fun
    lbfgs = run("lbfgs", x0, ROSENBROCK, options={"c1": 1e-3, "ftol": 1e-14, "gtol": 1e-14})
    np.testing.assert_array_equal(tight.x, lbfgs.x)


@pytest.mark.parametrize("bounds", [[(None, None), (None, None)],
                                    so.Bounds([-np.inf, -np.inf], [np.inf, np.inf])])
def test_l_bfgs_b_takes_bounds_that_bound_nothing(bounds):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run("L-BFGS-B", [-1.2, 1.0], ROSENBROCK, bounds=bounds)
    assert res.success


@pytest.mark.parametrize("bounds", [[(0.0, 2.0), (None, None)], so.Bounds(-1.0, 1.0)])
def test_l_bfgs_b_refuses_bounds_it_cannot_keep(bounds):
    with pytest.raises(ValueError, match="bounds"):
        run("L-BFGS-B", [-1.2, 1.0], ROSENBROCK, bounds=bounds)


def test_maxcor_is_scipys_name_for_m():
    x0 = [-1.2, 1.0] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aliased = run("lbfgs", x0, ROSENBROCK, options={"maxcor": 3})
    np.testing.assert_array_equal(aliased.x, run("lbfgs", x0, ROSENBROCK, options={"m": 3}).x)
    assert aliased.hess_inv.sk.shape == (3, 6)
    with pytest.raises(ValueError, match="'maxcor' and 'm'"):
        run("lbfgs", x0, ROSENBROCK, options={"maxcor": 3, "m": 5})


@pytest.mark.parametrize(("x0", "maxiter"), [([-1.2, 1.0], 3), ([-1.2, 1.0], 15),
                                             ([-1.2, 1.0], 1000),
                                             ([-1.2, 1.0, -1.2, 1.0, -1.2], 8),
                                             ([-1.2, 1.0, -1.2, 1.0, -1.2], 1000)])
def test_bfgs_hess_inv_is_scipys(x0, maxiter):
    # converged runs too: the iteration that meets gtol updates H no more, as scipy's
    # (that update, from a step of ~1e-6, moved H by ~1% on Rosenbrock)
    res = run("bfgs", x0, ROSENBROCK, options={"maxiter": maxiter})
    ref = so.minimize(so.rosen, np.array(x0), jac=so.rosen_der, method="BFGS",
                      options={"maxiter": maxiter})
    assert res.nit == ref.nit and res.status == ref.status
    # to 1e-6 of its scale: scipy multiplies (I - rho s y') H (I - rho y s') as matrices
    # (BLAS sums), fastopt in O(d^2) (linalg.bfgs_inverse_update); measured 1.3e-7 at d = 5
    scale = np.max(np.abs(ref.hess_inv))
    np.testing.assert_allclose(res.hess_inv, ref.hess_inv, rtol=0, atol=1e-6 * scale)


def test_bfgs_hess_inv_before_any_iteration_is_the_identity():
    res = run("bfgs", [1.0, 1.0], ROSENBROCK)
    assert res.nit == 0
    np.testing.assert_array_equal(res.hess_inv, np.eye(2))


@pytest.mark.parametrize("maxiter", [0, 3, 25])
def test_lbfgs_hess_inv_holds_the_last_steps_and_gradient_changes(maxiter):
    # A NumPy reference from the iterates: s_k = x_{k+1} - x_k, y_k = g_{k+1} - g_k,
    # the last min(nit, m) of them, oldest first (no pair is skipped on this run).
    x0 = [-1.2, 1.0, -1.2, 1.0, -1.2]
    res = run("lbfgs", x0, ROSENBROCK, options={"maxiter": maxiter, "gtol": 0.0,
                                                "history": True})
    assert isinstance(res.hess_inv, so.LbfgsInvHessProduct)
    xs = res.x_history
    gs = np.array([rosenbrock.grad(x) for x in xs])
    kept = min(res.nit, 10)
    assert res.hess_inv.sk.shape == (kept, 5) and res.nit == maxiter
    S = np.diff(xs, axis=0)[len(xs) - 1 - kept:]
    Y = np.diff(gs, axis=0)[len(xs) - 1 - kept:]
    np.testing.assert_allclose(res.hess_inv.sk, S, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(res.hess_inv.yk, Y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["bfgs", "lbfgs"])
@pytest.mark.parametrize("n_starts", [3, 20])  # fewer starts than counters, and more
def test_batch_best_has_the_hess_inv_of_its_single_run(method, n_starts):
    X0 = np.random.default_rng(3).uniform(-2.0, 2.0, size=(n_starts, 3))
    X0[-1] = [0.9, 0.8, 0.6]  # the best start last: an index past the number of counters
    best = run_batch(method, X0, ROSENBROCK, options={"maxiter": 6}).best()
    assert best.index == n_starts - 1
    single = run(method, X0[best.index], ROSENBROCK, options={"maxiter": 6})
    if method == "bfgs":
        np.testing.assert_array_equal(best.hess_inv, single.hess_inv)
    else:
        np.testing.assert_array_equal(best.hess_inv.sk, single.hess_inv.sk)
        np.testing.assert_array_equal(best.hess_inv.yk, single.hess_inv.yk)


@pytest.mark.parametrize("method", ["bfgs", "lbfgs"])
def test_armijo_line_search_option(method):
    res = run(method, [-1.2, 1.0], ROSENBROCK, options={"line_search": "armijo"})
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)


@pytest.mark.parametrize("line_search", ["strong-wolfe", "armijo"])
def test_gradient_descent_with_line_search(line_search):
    values = []
    res = run("gd", [0.0, 0.0], HIMMELBLAU, options={"line_search": line_search},
              callback=lambda intermediate_result: values.append(intermediate_result.fun))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [3.0, 2.0], atol=1e-5)
    assert np.all(np.diff(values) <= 0.0)  # no step increases f


@pytest.mark.parametrize("method, options", [
    ("newton", {"damping": 1.0}), ("damped-newton", {}), ("bfgs", {}), ("lbfgs", {}),
    ("gd", {"line_search": "armijo"})])
def test_a_run_in_chunks_equals_one_resumed_every_iteration(method, options):
    # At d = 200 minimize's first chunk is 40 iterations, the next 640; with a callback
    # the loop returns to Python after every iteration. The rules' state (L-BFGS pairs,
    # BFGS matrix, damping) lives in arrays, so every bit agrees.
    x0 = np.tile([-1.2, 1.0], 100)
    options = {**options, "maxiter": 100, "gtol": 0.0}
    chunked = run(method, x0, ROSENBROCK, options=options)
    stepped = run(method, x0, ROSENBROCK, options=options, callback=lambda xk: None)
    assert chunked.nit > 40
    for name in ("x", "jac", "fun", "nit", "nfev", "njev", "status"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(stepped, name),
                                      err_msg=name)


def test_lbfgs_history_size_option():
    x0 = [-1.2, 1.0] * 5
    results = {m: run("lbfgs", x0, ROSENBROCK, options={"m": m}) for m in (1, 3, 10, 30)}
    for res in results.values():
        assert res.success
        np.testing.assert_allclose(res.x, np.ones(10), atol=1e-4)
    assert results[1].nit > results[10].nit


# --- Newton --------------------------------------------------------------------------
def test_newton_converges_quadratically():
    for x0 in ([0.8, 0.6], [1.3, 1.6], [-1.2, 1.0]):
        xs = [np.array(x0)]
        res = run("newton", x0, ROSENBROCK, options={"gtol": 1e-12},
                  callback=lambda x, xs=xs: xs.append(x.copy()))
        assert res.success and res.nhev == res.nit
        err = np.array([np.linalg.norm(x - 1.0) for x in xs])
        close = [k for k in range(len(err) - 1) if 1e-7 < err[k] < 0.1]
        assert len(close) >= 2
        for k in close:
            assert err[k + 1] <= 50.0 * err[k] ** 2, (x0, err)


def test_newton_in_one_dimension_is_x_minus_g_over_h():
    x0 = -0.5
    res = run("newton", [x0], WAVY, options={"maxiter": 1, "gtol": 0.0})
    x = np.array([x0])
    expected = x0 - wavy.grad(x)[0] / wavy.hess(x)[0, 0]
    assert res.x[0] == expected


def _seed_regularized_newton(alpha, x, maxiter, gtol):
    """The seeds' loop, transcribed: x <- x - g / (h + alpha) until |g| <= gtol.

    (The Hessian must be positive when alpha == 0; a zero h + alpha has no step.)
    """
    for k in range(maxiter):
        g = wavy.grad(np.array([x]))[0]
        if abs(g) <= gtol:
            return x, k, Status.GTOL
        h = wavy.hess(np.array([x]))[0, 0]
        if h + alpha == 0.0:
            return x, k, Status.SINGULAR
        if alpha == 0.0 and h < 0.0:
            return x, k, Status.NOT_POSITIVE_DEFINITE
        x_new = x - g / (h + alpha)
        if not (np.isfinite(x_new) and np.isfinite(wavy.fun(np.array([x_new])))):
            return x, k, Status.DIVERGED
        x = x_new
    return x, maxiter, Status.MAXITER


def test_seed_regularized_newton_sweep_on_wavy_is_one_batch_call():
    alphas = np.concatenate([[0.0], np.geomspace(0.05, 200.0, 30)])
    n = alphas.size
    res = run_batch("newton", np.full((n, 1), -20.0), WAVY,
                    options={"damping": alphas, "maxiter": 1000})
    for i, alpha in enumerate(alphas):
        x, nit, status = _seed_regularized_newton(alpha, -20.0, 1000, 1e-5)
        assert res.x[i, 0] == x, (alpha, res.x[i, 0], x)
        assert res.nit[i] == nit and res.status[i] == status, (alpha, res.status[i], status)
    # small damping follows h wherever it leads, large damping creeps downhill
    assert res.status[-1] == Status.GTOL
    assert len(set(np.round(res.x[res.success, 0], 6))) > 3  # different alphas, different minima
    single = run("newton", [-20.0], WAVY, options={"damping": alphas[7], "maxiter": 1000})
    np.testing.assert_array_equal(single.x, res.x[7])


def test_newton_fails_cleanly_without_damping():
    res = run("newton", [0.1, 0.1], SADDLE)  # H = diag(2, -1.97): not positive definite
    assert not res.success and res.status == Status.NOT_POSITIVE_DEFINITE
    assert "not positive definite" in res.message
    np.testing.assert_array_equal(res.x, [0.1, 0.1])
    res = run("newton", [0.3, -0.2], SINGULAR)
    assert not res.success and res.status == Status.SINGULAR
    assert "Singular" in res.message
    np.testing.assert_array_equal(res.x, [0.3, -0.2])
    # with damping the same systems are solvable (the second: x + y -> 0)
    res = run("newton", [0.3, -0.2], SINGULAR, options={"damping": 1.0})
    assert res.success


@pytest.mark.parametrize("method", ["damped-newton", "bfgs", "lbfgs"])
def test_rules_escape_the_saddle(method):
    starts = [[0.1, 0.01], [-0.05, -0.02], [1e-3, 1e-3], [0.3, -1e-4]]
    for x0 in starts:
        res = run(method, x0, SADDLE)
        assert res.success, (x0, res.message)
        assert res.fun == pytest.approx(-1.0, abs=1e-9), (x0, res.x)
        np.testing.assert_allclose(np.abs(res.x), [0.0, np.sqrt(2.0)], atol=1e-4)


def test_damped_newton_reaches_minima_from_generic_starts():
    X0 = np.random.default_rng(5).uniform(-5, 5, size=(400, 2))
    res = run_batch("damped-newton", X0, HIMMELBLAU)
    assert res.success.all()
    assert np.all(res.fun < 1e-10)  # all four minima have value 0 (no saddle, no maximum)
    pure = run_batch("newton", X0, HIMMELBLAU)
    assert not pure.success.all()  # pure Newton stops where H is indefinite
    assert set(np.unique(pure.status)) <= {Status.GTOL, Status.NOT_POSITIVE_DEFINITE}


def test_damped_newton_matches_newton_near_a_minimum():
    # damping 0 and a positive definite H all the way: the very same iterates
    a = run("newton", [0.9, 0.8], ROSENBROCK)
    b = run("damped-newton", [0.9, 0.8], ROSENBROCK)
    assert a.nit == b.nit
    np.testing.assert_array_equal(a.x, b.x)


def test_finite_difference_hessian():
    res = fastopt.minimize(suite_fun, np.array([-1.2, 1.0]), args=(ROSENBROCK,), jac=suite_grad,
                           method="damped-newton")
    exact = run("damped-newton", [-1.2, 1.0], ROSENBROCK)
    assert res.success and res.nit == exact.nit
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-6)
    assert res.nfev > exact.nfev  # each Hessian costs 2 d gradients


# --- batches ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("method", "options"), [
    ("bfgs", {}), ("lbfgs", {"m": 4}), ("lbfgs", {"line_search": "armijo"}),
    ("newton", {"damping": 0.5}), ("damped-newton", {}), ("gd", {"line_search": "strong-wolfe"}),
])
def test_batch_row_is_bit_identical_to_single_run(method, options, workers):
    X0 = np.random.default_rng(7).uniform(-2, 2, size=(40, 3))
    options = {**options, "maxiter": 200}
    res = run_batch(method, X0, ROSENBROCK, options=options, workers=workers)
    for i in (0, 13, 39):
        single = run(method, X0[i], ROSENBROCK, options=options)
        np.testing.assert_array_equal(res.x[i], single.x)
        assert res.fun[i] == single.fun
        assert (res.nit[i], res.nfev[i], res.status[i]) == (single.nit, single.nfev, single.status)


def test_batch_damping_per_start_matches_separate_runs():
    damping = np.array([0.0, 0.1, 1.0, 10.0])
    X0 = np.tile([-1.2, 1.0], (4, 1))
    res = run_batch("newton", X0, ROSENBROCK, options={"damping": damping, "maxiter": 100})
    for i in range(4):
        one = run("newton", X0[i], ROSENBROCK, options={"damping": damping[i], "maxiter": 100})
        np.testing.assert_array_equal(res.x[i], one.x)


def test_second_call_does_not_recompile():
    from fastopt.loop import _make_loop

    run("lbfgs", [0.0, 0.0], ROSENBROCK)
    before = _make_loop.cache_info()
    run("lbfgs", [1.5, 1.5], ROSENBROCK)
    after = _make_loop.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


@pytest.mark.parametrize("method, options", [("bfgs", {}), ("lbfgs", {}),
                                             ("gd", {"line_search": "armijo", "lr": 0.1})])
def test_first_calls_run_the_portable_loop_bit_identical_to_the_specialized_one(
        method, options, specialize_from_second_call, ran_portable):
    # Without extra args, a rule without Hessian runs the portable loop (cached on disk:
    # no compile for a new objective) until the loop specialized for the objective is.
    x0 = [-1.2, 1.0, 0.5]
    kwargs = dict(jac="inplace", method=method, options={**options, "maxiter": 200})
    first = fastopt.minimize(rosenbrock.fg, x0, **kwargs)
    second = fastopt.minimize(rosenbrock.fg, x0, **kwargs)
    assert ran_portable == [True, False]
    np.testing.assert_array_equal(first.x, second.x)
    for key in ("fun", "nit", "nfev", "njev", "status"):
        assert first[key] == second[key], key
    assert first.nit > 10


@pytest.mark.parametrize("method", ["bfgs", "L-BFGS-B", "damped-newton", "adam"])
def test_extra_args_run_the_portable_loop_bit_identical_to_the_specialized_one(
        method, specialize_from_second_call, ran_portable):
    # scipy-style args of plain data are passed through the portable loop to the
    # objective (and Hessian) by value: no loop is compiled around a new objective
    options = {"maxiter": 300, "lr": 1e-2} if method == "adam" else {"maxiter": 300}
    first = run(method, [-1.2, 1.0, 0.5], ROSENBROCK, options=options)
    second = run(method, [-1.2, 1.0, 0.5], ROSENBROCK, options=options)
    assert ran_portable == [True, False]
    np.testing.assert_array_equal(first.x, second.x)
    for key in ("fun", "nit", "nfev", "njev", "status"):
        assert first[key] == second[key], key
    assert first.nit > 10


@pytest.mark.filterwarnings("ignore::numba.NumbaPendingDeprecationWarning")  # reflected list
def test_extra_args_that_are_not_plain_data_run_the_specialized_loop(ran_portable):
    res = fastopt.minimize(lambda x, c: (x[0] - c[0]) ** 2 + (x[1] - c[1]) ** 2, [0.0, 0.0],
                           args=([1.0, 2.0],), method="bfgs")  # a list: reflected by numba
    np.testing.assert_allclose(res.x, [1.0, 2.0], atol=1e-6)
    assert ran_portable == [False]


def _undefined_beyond(x, limit):
    if x[0] > limit:
        raise ValueError("objective undefined beyond the limit")
    return (x[0] - 10.0) ** 2


def test_an_objective_with_args_raising_in_the_portable_loop_is_raised(monkeypatch):
    # raised from Python with the same args, without a loop compiled for the objective
    from fastopt._workspace import Workspace

    specialized = []
    monkeypatch.setattr(importlib.import_module("fastopt.minimize"), "make_loop",
                        lambda *a: specialized.append(a))
    run_all = Workspace.run_all

    def recording_run_all(self, *args, **kwargs):
        if not kwargs.get("portable", True):
            specialized.append("batch")
        return run_all(self, *args, **kwargs)

    monkeypatch.setattr(Workspace, "run_all", recording_run_all)
    with pytest.raises(ValueError, match="undefined beyond the limit"):
        fastopt.minimize(_undefined_beyond, [0.0], args=(5.0,), method="bfgs")
    with pytest.raises(ValueError, match="undefined beyond the limit"):
        fastopt.minimize_batch(_undefined_beyond, [[0.0], [1.0]], args=(5.0,), method="bfgs")
    assert specialized == []


def _hessian_undefined_for_x0_above_one(x):
    if x[0] > 1.0:
        raise ValueError("hessian undefined above 1")
    return np.array([[2.0]])


@pytest.mark.parametrize("run_in", ["minimize", "minimize_batch"])
def test_a_hessian_raising_in_the_portable_loop_is_raised_with_its_message(run_in,
                                                                           ran_portable):
    # The portable Newton loop calls hess by address too: an exception stops the start,
    # and hess is called from Python where it raised, so it propagates as the user wrote it.
    hess = numba.njit(_hessian_undefined_for_x0_above_one)
    kwargs = dict(jac="inplace", hess=hess, method="damped-newton", options={"damping": 10.0})
    with pytest.raises(ValueError, match="hessian undefined above 1"):
        if run_in == "minimize":
            fastopt.minimize(shifted_square_fg, [-3.0], **kwargs)
        else:
            fastopt.minimize_batch(shifted_square_fg, [[-3.0], [-2.0]], **kwargs)
    if run_in == "minimize":
        assert ran_portable == [True]  # raised from the portable run: no specialized loop


def _undefined_beyond_five(x):
    if x[0] > 5.0:
        raise ValueError("objective undefined beyond 5")
    return (x[0] - 10.0) ** 2 + (x[1] - 10.0) ** 2


@pytest.mark.parametrize("method, options", [("bfgs", {}), ("L-BFGS-B", {}),
                                             ("gd", {"line_search": "armijo", "lr": 0.1})])
def test_an_objective_raising_in_a_line_search_is_raised_from_the_portable_run(
        method, options, monkeypatch):
    # A failed search steps back to x_k, but not once the objective raised: x stays
    # where it did, so the error is raised from there, without compiling the loop
    # specialized for the objective (seconds, the first time) to rerun and find it.
    minimize_module = importlib.import_module("fastopt.minimize")
    specialized = []
    monkeypatch.setattr(minimize_module, "make_loop", lambda *a: specialized.append(a))
    with pytest.raises(ValueError, match="objective undefined beyond 5"):
        fastopt.minimize(_undefined_beyond_five, [0.0, 1.0], method=method, options=options)
    assert specialized == []


@numba.njit
def shifted_square_fg(x, g):
    """(x - 2)^2 in place: its minimum lies where the Hessian above is undefined."""
    g[0] = 2.0 * (x[0] - 2.0)
    return (x[0] - 2.0) ** 2


@numba.njit
def rosenbrock_nan_right_of_09(x):
    """Rosenbrock, 0/0 where x0 > 0.9: ZeroDivisionError in the function numba compiled
    (its default error model), NaN in the copy fastopt's loops inline."""
    z = 0.0
    if x[0] > 0.9:
        z = (x[0] - x[0]) / (x[0] - x[0])
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2 + z


@pytest.mark.parametrize("method", ["newton", "bfgs"])
def test_an_error_only_the_portable_loop_sees_ends_as_in_the_specialized_loop(
        method, specialize_from_second_call, ran_portable):
    # The portable loop calls the user's compiled function, which raises; the specialized
    # loop's inlined copy gives NaN, which a line search steps back from. The portable run
    # stops where it raised, finds no error there from Python, and reruns specialized:
    # the result is the specialized loop's, and the callback sees each iteration once.
    calls = []
    first = fastopt.minimize(rosenbrock_nan_right_of_09, [-1.2, 1.0], method=method,
                             callback=lambda x: calls.append(x.copy()))
    second = fastopt.minimize(rosenbrock_nan_right_of_09, [-1.2, 1.0], method=method)
    assert ran_portable == [True, False]  # the first call's rerun: not through loop_for
    np.testing.assert_array_equal(first.x, second.x)
    assert (first.status, first.nit) == (second.status, second.nit)
    assert len(calls) == first.nit > 0
    assert not any(np.array_equal(a, b) for a, b in zip(calls, calls[1:], strict=False))


PORTABLE_CACHE_SCRIPT = """
import numba
import numpy as np
import fastopt
from fastopt.loop import make_loop
from fastopt.objective import prepare
from fastopt.rules import RULES

@numba.njit
def fun(x):
    return ((x - 1.0) ** 2).sum()

def fun_of_data(x, scale, center):  # plain Python, scipy-style args
    return scale * np.sum((x - center) ** 2)

res = fastopt.minimize(fun, np.zeros(3), method="bfgs")
with_args = fastopt.minimize(fun_of_data, np.zeros(3), args=(2.0, np.full(3, 3.0)),
                             method="bfgs")
assert np.allclose(with_args.x, 3.0)
run_start = make_loop(RULES["bfgs"], prepare(fun, np.zeros(3), ())[0], portable=True)[0]
stats = run_start.stats
print(res.status, sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_a_new_objectives_first_bfgs_call_loads_its_loop_from_the_disk_cache(tmp_path):
    # The portable BFGS loop calls line searches that take the objective as an argument:
    # they must not embed the address of a Python object (numba then refuses to cache).
    # With scipy-style extra args of plain data, the loop compiled for their types loads.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run():
        out = subprocess.run([sys.executable, "-c", PORTABLE_CACHE_SCRIPT], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    # one loop per type of the extra args: (), and (float, 1-D array)
    assert run() == ["0", "0", "2"]  # compiled, and saved
    assert run() == ["0", "2", "0"]  # loaded


# --- bad input and failures ----------------------------------------------------------
def test_hessian_of_the_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="hess must return an array of shape \\(2, 2\\)"):
        fastopt.minimize(suite_fun, np.zeros(2), args=(ROSENBROCK,), jac=suite_grad,
                         hess=lambda x, k: np.eye(3), method="newton")


def test_non_callable_hess_is_reported():
    with pytest.raises(TypeError, match="hess must be callable"):
        fastopt.minimize(suite_fun, np.zeros(2), args=(ROSENBROCK,), jac=suite_grad,
                         hess=np.eye(2), method="newton")


@pytest.mark.parametrize(("method", "options", "match"), [
    ("newton", {"damping": -1.0}, "damping"),
    ("newton", {"damping": np.inf}, "damping"),
    ("damped-newton", {"damping": np.nan}, "damping"),
    ("lbfgs", {"m": 0}, "Invalid m"),
    ("L-BFGS-B", {"maxls": 0}, "Invalid maxls: 0.0"),
    ("lbfgs", {"maxls": 2.5}, "Invalid maxls: 2.5"),
    ("lbfgs", {"m": 2.5}, "Invalid m"),
    ("bfgs", {"c1": 0.95}, "'0 < c1 < c2 < 1'"),
    ("lbfgs", {"c2": 1.0}, "'0 < c1 < c2 < 1'"),
    ("bfgs", {"line_search": "exact"}, "line_search"),
    ("adam", {"line_search": "armijo"}, "takes no line search"),
    ("gd", {"line_search": "armijo", "lr": 0.0}, "lr"),
])
def test_bad_options_name_the_argument(method, options, match):
    with pytest.raises(ValueError, match=match):
        run(method, [0.0, 0.0], ROSENBROCK, options=options)


def test_history_size_must_be_scalar_in_a_batch():
    with pytest.raises(ValueError, match="'m' must be a scalar"):
        run_batch("lbfgs", np.zeros((2, 2)), ROSENBROCK, options={"m": np.array([3, 5])})


def test_non_finite_values_give_a_failed_status():
    # Newton on x - log x from 3 steps to -3, where f is NaN: the start stops there.
    res = run("newton", [3.0], LOG)
    assert res.status == Status.DIVERGED and not res.success
    assert "NaN" in res.message and res.x[0] == 3.0
    # The safeguarded rules never accept a non-finite trial point.
    for method in ("damped-newton", "bfgs", "lbfgs"):
        res = run(method, [3.0], LOG)
        assert res.success and res.x[0] == pytest.approx(1.0, abs=1e-5), (method, res.message)
    res = run("bfgs", [-1.0], LOG)  # NaN at the start
    assert res.status == Status.DIVERGED and res.nit == 0


def test_line_search_failure_is_a_status():
    # An inconsistent gradient (the negative of the true one): no step decreases f.
    res = fastopt.minimize(suite_fun, np.array([0.5, 0.5]), args=(SINGULAR,),
                           jac=lambda x, k: -suite_grad(x, k), method="bfgs")
    assert res.status == Status.LINE_SEARCH_FAILED and not res.success
    assert res.message == st.message(st.LINE_SEARCH_FAILED)
    np.testing.assert_array_equal(res.x, [0.5, 0.5])


def test_python_fallback_runs_the_same_rules():
    class Shift:
        c = 1.0

    def fun(x, shift):
        return float(np.sum((x - shift.c) ** 2) + x[0] ** 4)

    def grad(x, shift):
        g = 2.0 * (x - shift.c)
        g[0] += 4.0 * x[0] ** 3
        return g

    def hess(x, shift):
        H = 2.0 * np.eye(x.size)
        H[0, 0] += 12.0 * x[0] ** 2
        return H

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastopt.PythonSpeedWarning)
        for method in ("bfgs", "lbfgs", "newton", "damped-newton"):
            kwargs = {"hess": hess} if "newton" in method else {}
            res = fastopt.minimize(fun, np.zeros(3), args=(Shift(),), jac=grad, method=method,
                                   **kwargs)
            assert res.success, (method, res.message)
            np.testing.assert_allclose(res.x, [0.589754512301, 1.0, 1.0], atol=1e-5)
        res = fastopt.minimize(fun, np.zeros(3), args=(Shift(),), jac=grad, method="gd",
                               options={"line_search": "armijo"})
        assert res.success


def test_kernels_are_callable_from_user_njit_code():
    @numba.njit
    def newton_direction(H, g):
        LD = H.copy()
        p = np.empty(g.size)
        if la.ldl_factor(LD) != la.FACTOR_OK:
            return p, False
        la.ldl_solve(LD, g, p)
        return p, True

    H = np.array([[4.0, 1.0], [1.0, 3.0]])
    g = np.array([1.0, 2.0])
    p, ok = newton_direction(H, g)
    assert ok
    np.testing.assert_allclose(p, np.linalg.solve(H, g))


def test_builtin_hessian_kernels_can_be_passed_as_hess():
    res = fastopt.minimize(rosenbrock.fun, np.array([-1.2, 1.0]), jac=rosenbrock.grad,
                           hess=rosenbrock.hess, method="newton")
    assert res.success
