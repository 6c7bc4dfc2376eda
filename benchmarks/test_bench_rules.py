"""Workload 5: every rule and option set, side by side with the rule's plain form.

    pytest benchmarks/test_bench_rules.py --benchmark-enable --benchmark-group-by=group
    python benchmarks/report.py --sections rules

A step of the step API on ``SIZES["rule_step_params"]`` parameters (the serial kernels) against
torch.optim's step (fused where torch has a fused CPU kernel), and ``minimize_batch`` on
Rosenbrock at ``SIZES["rule_batch_shapes"]`` (the block form at d = 10, the point form at
d = 1000). An option that turns a rule's vector loop into a scalar one, or makes it
compute both sides of a branch, shows as a row slower than its rule's plain row.
"""

import numpy as np


def test_rule_step(benchmark, workloads, rule_case):
    n = workloads.SIZES["rule_step_params"]
    benchmark.group = f"rule-step {n} params"
    benchmark.extra_info.update(case=workloads.rule_case_id(rule_case), params=n)
    run = workloads.prepare_rule_step(rule_case, n)

    x = benchmark(run)

    assert np.all(np.isfinite(x))


def test_rule_step_torch(benchmark, workloads, rule_case):
    n = workloads.SIZES["rule_step_params"]
    benchmark.group = f"rule-step {n} params"
    benchmark.extra_info.update(case=workloads.rule_case_id(rule_case), params=n, peer="torch")
    ours, theirs = workloads.prepare_rule_step(rule_case, n), \
        workloads.prepare_torch_rule_step(rule_case, n)
    for _ in range(3):  # both took one step in prepare; three more must agree
        np.testing.assert_allclose(ours(), theirs(), rtol=1e-12, atol=1e-15)

    x = benchmark(theirs)

    assert np.all(np.isfinite(x))


def test_rule_batch(benchmark, workloads, rule_case, rule_batch_shape):
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = f"rule-batch {workloads.shape_id(rule_batch_shape)} T{steps}"
    benchmark.extra_info.update(case=workloads.rule_case_id(rule_case),
                                shape=list(rule_batch_shape), steps=steps)
    run = workloads.prepare_rule_batch(rule_case, workloads.starts(*rule_batch_shape), steps)

    res = benchmark(run)

    # every start ran every step (the timing is per coordinate-step)
    assert np.all(res.nit == steps) and np.all(np.isfinite(res.fun))
