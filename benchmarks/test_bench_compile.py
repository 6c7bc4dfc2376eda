"""Workloads 5 and 6: compile time and cold start, each measured on its own.

* ``compile``: the first ``minimize_batch``, and the first ``minimize`` of each of
  ``COMPILE_METHODS``, with objective functions nobody has compiled yet (new ``@njit``
  dispatchers every round), in this process; JAX's trace + XLA compile of the batch
  workload for scale.
* ``cold-start``: a fresh interpreter imports fastopt and calls ``minimize`` with a
  new user function, with ``NUMBA_CACHE_DIR`` pointing at a cache warmed by one
  earlier run (kernels that take no function arguments load from disk). The
  timings of the parts are in ``extra_info``.
"""

import numpy as np

ROUNDS_FULL = 3


def _rounds(workloads):
    return ROUNDS_FULL if workloads.FULL else 1


def test_compile_first_minimize_batch(benchmark, workloads, compile_kind):
    benchmark.group = "compile first batch call"
    benchmark.extra_info["objective"] = compile_kind
    res = benchmark.pedantic(workloads.first_batch_call, args=(compile_kind,),
                             rounds=_rounds(workloads), iterations=1)
    assert np.all(res.nit == 1)


def test_compile_first_minimize(benchmark, workloads, compile_method):
    benchmark.group = "compile first minimize call"
    benchmark.extra_info["method"] = compile_method
    workloads.first_minimize_call(compile_method)  # the rule's loop loaded (not timed)
    res = benchmark.pedantic(workloads.first_minimize_call, args=(compile_method,),
                             rounds=_rounds(workloads), iterations=1)
    assert res.nit == 1


def test_compile_jax_batch(benchmark, workloads):
    shape = workloads.SIZES["batch_shapes"][0]
    steps = workloads.SIZES["batch_steps"]
    benchmark.group = "compile first batch call"
    benchmark.extra_info.update(peer="jax-optax", shape=list(shape), steps=steps)
    run = workloads.prepare_jax_compile(workloads.starts(*shape), steps)
    benchmark.pedantic(run, rounds=_rounds(workloads), iterations=1)


def test_cold_start(benchmark, workloads, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("numba_cache")
    workloads.cold_start(cache_dir)  # warms the cache (not timed)
    benchmark.group = "cold-start"
    parts = []

    def run():
        parts.append(workloads.cold_start(cache_dir))

    benchmark.pedantic(run, rounds=_rounds(workloads), iterations=1)

    best = min(parts, key=lambda p: p["total"])
    benchmark.extra_info.update(best)
    assert best["first_minimize"] > 0
