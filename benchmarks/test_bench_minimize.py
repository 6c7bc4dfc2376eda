"""Workload 3: ``fastopt.minimize`` -- cost per iteration and per call.

2-D Adam on Rosenbrock from (-1.2, 1) with ``gtol=0``, so it runs exactly
``maxiter`` iterations: ``maxiter=SIZES["minimize_iters"]`` gives the cost per
iteration (time / iterations, or better the difference of the two groups),
``maxiter=1`` the fixed cost of a warm call. Each objective of ``OBJECTIVES``, in
the loop specialized for it (a long job's) and in the portable loop (short calls').
"""

import pytest


@pytest.mark.parametrize("loop", ["specialized", "portable"])
@pytest.mark.parametrize("kind", ["iterations", "call"])
def test_minimize_adam_2d(benchmark, workloads, objective, kind, loop):
    maxiter = workloads.SIZES["minimize_iters"] if kind == "iterations" else 1
    benchmark.group = (f"minimize-per-iteration adam-2d maxiter={maxiter}" if kind == "iterations"
                       else "minimize-call-overhead adam-2d maxiter=1")
    benchmark.extra_info.update(objective=objective, maxiter=maxiter, loop=loop)
    run = workloads.prepare_minimize(objective, maxiter, loop)

    res = benchmark(run)

    assert res.nit == maxiter
    assert res.status == 1  # fastopt.Status MAXITER: gtol=0 never stops earlier
