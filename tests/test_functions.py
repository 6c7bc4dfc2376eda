"""The built-in test functions: minima, gradients, and their forms agreeing with each other."""

import numpy as np
import pytest

from fastopt.functions import FUNCTIONS, VALUE_LANES, rosenbrock


def _dims(function):
    return [function.dim] if function.dim is not None else [1, 2, 5]


CASES = [(f, d) for f in FUNCTIONS.values() for d in _dims(f)]
IDS = [f"{f.name}-{d}" for f, d in CASES]


@pytest.mark.parametrize(("function", "d"), CASES, ids=IDS)
def test_known_minimizers_have_the_known_value_and_no_gradient(function, d):
    for x in function.minimizers(d):
        assert function.fun(x) == pytest.approx(function.fmin(d), abs=1e-9)
        np.testing.assert_allclose(function.grad(x), 0.0, atol=1e-6)


@pytest.mark.parametrize(("function", "d"), CASES, ids=IDS)
def test_gradient_and_in_place_forms_agree_with_the_value(function, d):
    low, high = function.bounds
    rng = np.random.default_rng(len(function.name) + d)
    for x in rng.uniform(low, high, size=(4, d)):
        h = 1e-6 * np.maximum(1.0, np.abs(x))
        central = [(function.fun(x + h[i] * e) - function.fun(x - h[i] * e)) / (2 * h[i])
                   for i, e in enumerate(np.eye(d))]
        g = function.grad(x)
        np.testing.assert_allclose(g, central, rtol=1e-5, atol=1e-5 * (1 + np.abs(g).max()))
        if function.fg is not None:
            g_in_place = np.full(d, np.nan)
            assert function.fg(x, g_in_place) == pytest.approx(function.fun(x), rel=1e-14)
            np.testing.assert_allclose(g_in_place, g, rtol=1e-13, atol=1e-12)


def rosenbrock_reference(x):
    """Rosenbrock's value in plain NumPy and Python floats, summed in fastopt's documented
    order: term after term up to VALUE_LANES terms, else VALUE_LANES partial sums (term i
    into partial i % VALUE_LANES) added in order."""
    a = x[1:] - x[:-1] * x[:-1]
    b = 1.0 - x[:-1]
    terms = 100.0 * a * a + b * b
    lanes = 1 if terms.size <= VALUE_LANES else VALUE_LANES
    total = 0.0
    for lane in range(lanes):
        partial = 0.0
        for term in terms[lane::lanes]:
            partial += float(term)
        total += partial
    return total


def rosenbrock_gradient_reference(x):
    a = x[1:] - x[:-1] * x[:-1]
    g = np.zeros_like(x)
    g[:-1] += -400.0 * x[:-1] * a - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * a
    return g


@pytest.mark.parametrize("d", [1, 2, 3, 64, 65, 66, 67, 68, 69, 129, 130, 131, 1000, 1001])
def test_rosenbrock_forms_give_the_same_bits_as_the_reference_order(d):
    # Above VALUE_LANES terms the sum runs in partial sums (vectorized in the point form);
    # every form must keep the one order, or a batch of block-form starts and a single
    # start with the point form would part ways in the last bits.
    X = np.random.default_rng(d).uniform(-2, 2, size=(d, 5))
    G = np.full_like(X, np.nan)
    F = np.full(5, np.nan)
    rosenbrock.block(X, G, F)
    for b in range(5):
        x = X[:, b].copy()
        g = np.full(d, np.nan)
        expected = rosenbrock_reference(x)
        assert rosenbrock.fg(x, g) == expected
        assert rosenbrock.fun(x) == expected
        assert F[b] == expected
        np.testing.assert_array_equal(G[:, b], g)
        np.testing.assert_allclose(g, rosenbrock_gradient_reference(x), rtol=1e-14, atol=1e-12)
