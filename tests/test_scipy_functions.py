"""scipy.optimize's Rosenbrock functions, compiled (fastopt.scipy_functions): scipy's
numbers bit for bit, and compiled wherever scipy's functions are passed or called."""

import warnings

import numba
import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

import fastopt
from fastopt import scipy_functions

# every branch of NumPy's pairwise sum: < 8 terms, 8..128 (with and without a remainder),
# one halving (129..256 terms), several (1000, 4099)
DIMS = [2, 3, 8, 9, 10, 16, 17, 129, 130, 136, 137, 257, 1000, 4099]


def _points(d, count=5, seed=0):
    rng = np.random.default_rng(seed + d)
    points = [rng.standard_normal(d) * 10.0 ** rng.integers(-3, 3) for _ in range(count)]
    zeros = rng.standard_normal(d)  # exact zeros of both signs: the signs of zero in H
    zeros[::3], zeros[1::3] = 0.0, -0.0
    return [*points, zeros]


@pytest.mark.parametrize("d", DIMS)
def test_values_are_scipys_bit_for_bit(d):
    for x in _points(d):
        p = np.random.default_rng(d).standard_normal(d)
        assert scipy_functions.rosen(x) == rosen(x)
        assert np.array_equal(scipy_functions.rosen_der(x), rosen_der(x))
        assert np.array_equal(scipy_functions.rosen_hess_prod(x, p), rosen_hess_prod(x, p))
        if d <= 137:
            ours, theirs = scipy_functions.rosen_hess(x), rosen_hess(x)
            assert np.array_equal(ours, theirs)
            assert np.array_equal(np.signbit(ours), np.signbit(theirs))  # zeros' signs too


def test_scalar_squares_are_numpys_pow():
    # scipy's x[0]**2 is a NumPy scalar power (C pow), which differs from x[0] * x[0] in the
    # last bit here; numba's x ** 2.0 would be folded into x * x
    rng = np.random.default_rng(1)
    candidates = rng.standard_normal(20_000) * 10.0 ** rng.integers(-3, 4, 20_000)
    differing = [v for v in candidates if np.float64(v) ** 2 != v * v][:20]
    assert len(differing) >= 5
    for v in differing:
        x = np.array([v, 0.5, v])
        assert np.array_equal(scipy_functions.rosen_der(x), rosen_der(x))
        assert np.array_equal(scipy_functions.rosen_hess(x), rosen_hess(x))
        assert np.array_equal(scipy_functions.rosen_hess_prod(x, x), rosen_hess_prod(x, x))


def test_one_dimension_as_scipy():
    x = np.array([0.3])
    assert scipy_functions.rosen(x) == rosen(x) == 0.0
    for ours, theirs in [(scipy_functions.rosen_der, rosen_der),
                         (scipy_functions.rosen_hess, rosen_hess)]:
        with pytest.raises(IndexError):
            theirs(x)
        with pytest.raises(IndexError):
            ours(x)


def test_hess_prod_checks_lengths():
    with pytest.raises(ValueError, match="broadcast"):
        scipy_functions.rosen_hess_prod(np.ones(4), np.ones(2))


def test_njit_code_may_call_scipys_functions():
    @numba.njit
    def fun(x):
        return rosen(x) + rosen_der(x)[0] + rosen_hess(x)[0, 1] + rosen_hess_prod(x, x)[1]

    x = np.array([0.1, -0.7, 1.3])
    assert fun(x) == rosen(x) + rosen_der(x)[0] + rosen_hess(x)[0, 1] + rosen_hess_prod(x, x)[1]


def test_minimize_compiles_scipys_functions():
    x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])  # scipy's tutorial
    assert scipy_functions.compiled_equivalent(scipy.optimize.rosen) is scipy_functions.rosen
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PythonSpeedWarning
        res = fastopt.minimize(rosen, x0, method="BFGS", jac=rosen_der)
        newton = fastopt.minimize(rosen, [0.8, 0.6], method="damped-newton", jac=rosen_der,
                                  hess=rosen_hess)
    expected = scipy.optimize.minimize(rosen, x0, method="BFGS", jac=rosen_der)
    assert res.success and expected.success
    np.testing.assert_allclose(res.x, expected.x, atol=1e-5)
    assert (res.nit, res.nfev) == (expected.nit, expected.nfev)
    assert newton.success and np.allclose(newton.x, 1.0)


def test_batch_rows_are_single_runs():
    X0 = np.random.default_rng(2).uniform(-2, 2, size=(8, 3))
    options = {"lr": 0.01, "maxiter": 300}
    batch = fastopt.minimize_batch(rosen, X0, method="adam", jac=rosen_der, options=options)
    for i in (0, 5):
        single = fastopt.minimize(rosen, X0[i], method="adam", jac=rosen_der, options=options)
        assert np.array_equal(batch.x[i], single.x) and batch.fun[i] == single.fun
