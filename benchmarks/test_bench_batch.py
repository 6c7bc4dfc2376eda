"""Workloads 1 and 4: batch Adam on Rosenbrock for a fixed number of steps.

    pytest benchmarks/test_bench_batch.py --benchmark-enable --benchmark-group-by=group
    FASTOPT_BENCH_FULL=1 pytest benchmarks/test_bench_batch.py --benchmark-enable \\
        --benchmark-group-by=group

Each group is one shape (N, d): fastopt (built-in in-place objective), fastopt with the
built-in block objective (jac="block"), fastopt with a user's @njit fun + jac, JAX +
optax, NumPy (in place, and as array expressions), torch's fused Adam (gradient by
hand on 2 threads and on 1 thread -- on a busy machine OpenMP barriers make the
2-thread numbers erratic -- and gradient by autograd) and the issue's reference kernel
side by side. Compilation and warm-up are done before timing.
"""

import numpy as np
import pytest


def test_batch_adam(benchmark, workloads, batch_peer, batch_shape, numpy_reference):
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = f"batch-adam {workloads.shape_id(batch_shape)} T{steps}"
    benchmark.extra_info.update(peer=batch_peer, shape=list(batch_shape), steps=steps)
    X0 = workloads.starts(*batch_shape)
    run = workloads.BATCH_PEERS[batch_peer](X0, steps)

    X = np.asarray(benchmark(run))

    assert X.shape == X0.shape
    diff = float(np.max(np.abs(X - numpy_reference(batch_shape, steps))))
    benchmark.extra_info["max_abs_diff_vs_numpy"] = diff
    if steps <= workloads.CHECK_MAX_STEPS:
        assert diff <= workloads.ATOL, f"{batch_peer} disagrees with NumPy-batched Adam by {diff}"


def test_batch_adam_floor(benchmark, workloads, batch_floor, batch_shape):
    """Adam's arithmetic alone, in the same group: no implementation can beat it."""
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = f"batch-adam {workloads.shape_id(batch_shape)} T{steps}"
    benchmark.extra_info.update(peer=batch_floor, shape=list(batch_shape), steps=steps)
    X0 = workloads.starts(*batch_shape)
    X = benchmark(workloads.BATCH_FLOORS[batch_floor](X0, steps))
    assert np.all(np.isfinite(X)) and not np.array_equal(X, X0)


def test_batch_adam_issue_reference(benchmark, workloads, batch_shape, numpy_reference):
    """The issue's reference kernel, in the same group: it computes the same numbers."""
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = f"batch-adam {workloads.shape_id(batch_shape)} T{steps}"
    name = workloads.ISSUE_REFERENCE
    benchmark.extra_info.update(peer=name, shape=list(batch_shape), steps=steps)
    X0 = workloads.starts(*batch_shape)
    X = benchmark(workloads.BATCH_REFERENCES[name](X0, steps))
    diff = float(np.max(np.abs(X - numpy_reference(batch_shape, steps))))
    if steps <= workloads.CHECK_MAX_STEPS:
        assert diff <= workloads.ATOL, f"{name} disagrees with NumPy-batched Adam by {diff}"


@pytest.mark.parametrize("peer", ["fastopt", "fastopt-block"])
def test_batch_thread_scaling(benchmark, workloads, peer, batch_shape, workers):
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = f"batch-scaling {peer} {workloads.shape_id(batch_shape)} T{steps}"
    benchmark.extra_info.update(peer=peer, workers=workers, shape=list(batch_shape), steps=steps)
    X0 = workloads.starts(*batch_shape)
    prepare = workloads.BATCH_PEERS[peer]
    run = prepare(X0, steps, workers=workers)

    X = benchmark(run)

    # the same numbers whatever the number of threads
    np.testing.assert_array_equal(X, prepare(X0, steps, workers=1)())
