"""scipy's tutorial problem through ``fastopt.minimize`` and ``scipy.optimize.minimize``.

``minimize(rosen, x0, method=..., jac=rosen_der)`` with scipy's own ``rosen`` and
``rosen_der`` (which fastopt compiles: ``fastopt.scipy_functions``), x0 the tutorial's
``[1.3, 0.7, 0.8, 1.9, 1.2]``; warm calls (compile excluded), side by side:

    pytest benchmarks/test_bench_scipy_tutorial.py --benchmark-enable --benchmark-group-by=group
    python benchmarks/test_bench_scipy_tutorial.py      # the ratio table

In ordinary test runs (``--benchmark-disable``) it checks that both libraries take the
same iterations and evaluations to the same point.
"""

import sys
import timeit

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import rosen, rosen_der

import fastopt

X0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])
METHODS = ("BFGS", "L-BFGS-B")
LIBRARIES = {"fastopt": fastopt.minimize, "scipy": scipy.optimize.minimize}


def prepare(library, method):
    minimize = LIBRARIES[library]

    def run():
        return minimize(rosen, X0, method=method, jac=rosen_der)

    run()  # compile (fastopt), warm up
    return run


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("method", METHODS)
def test_scipy_tutorial(benchmark, library, method):
    benchmark.group = f"scipy-tutorial rosen {method}"
    res = benchmark(prepare(library, method))

    expected = scipy.optimize.minimize(rosen, X0, method=method, jac=rosen_der)
    assert res.success
    assert (res.nit, res.nfev) == (expected.nit, expected.nfev)
    np.testing.assert_allclose(res.x, expected.x, atol=1e-4)


def best_time(run, seconds=1.0):
    """Best time per call, as ``timeit`` measures it (repeats of a loop of calls)."""
    timer = timeit.Timer(run)
    number, _ = timer.autorange()
    repeats = max(3, int(seconds / max(timer.timeit(number), 1e-9)))
    return min(timer.repeat(repeat=min(repeats, 20), number=number)) / number


def main():
    print("| method | fastopt | scipy | ratio (fastopt ÷ scipy) | nit, nfev (both) |")
    print("|---|---:|---:|---:|---|")
    for method in METHODS:
        runs = {library: prepare(library, method) for library in LIBRARIES}
        times = {library: best_time(run) for library, run in runs.items()}
        res = runs["fastopt"]()
        print(f"| {method} | {times['fastopt'] * 1e6:.1f} µs | {times['scipy'] * 1e6:.1f} µs "
              f"| {times['fastopt'] / times['scipy']:.3f} | {res.nit}, {res.nfev} |")


if __name__ == "__main__":
    sys.exit(main())
