"""Workload 2: one Adam step on a large flat parameter vector (the step API).

fastopt's ``Adam.step`` against torch's fused Adam (float64) and against a numba
kernel with Adam's memory traffic (read x, g, m, v; write x, m, v) and trivial
arithmetic: at this size a step is memory-bound, so that kernel is the floor.
"""

import numpy as np


def test_adam_step(benchmark, workloads, step_peer):
    n = workloads.SIZES["step_params"]
    benchmark.group = f"adam-step {n} params"
    benchmark.extra_info.update(peer=step_peer, params=n,
                                bytes_moved=7 * 8 * n)  # 4 arrays read, 3 written
    run = workloads.STEP_PEERS[step_peer](n)
    if step_peer == "torch-fused":
        # both did one step from the same (x, g) in prepare; three more must agree
        ours = workloads.prepare_fastopt_step(n)
        for _ in range(3):
            np.testing.assert_allclose(ours(), run(), rtol=0, atol=1e-12)

    x = benchmark(run)

    assert np.all(np.isfinite(x))
