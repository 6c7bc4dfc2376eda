"""fastopt vs its peers on the workloads of GitHub issue #2: markdown tables of times and ratios.

    python benchmarks/report.py            # the issue's sizes (several minutes)
    python benchmarks/report.py --quick    # the smoke-test sizes (about a minute)

Times the very ``run`` callables the pytest-benchmark files time (from
``benchmarks/conftest.py``) with ``time.perf_counter``: each number is the best
of k repeats, and the peers of a table are interleaved round by round, so that a
burst of load from other processes does not fall on one peer only. Compilation
and warm-up are excluded everywhere except in the compile and cold-start tables.
Ratios are fastopt's time over the peer's (below 1: fastopt is faster); each
target of the issue is listed with the measured value. The "other load" line of
each section is the CPU time other processes used meanwhile, in cores: anything
well above 0 means the numbers of that section are noisy.
"""

import argparse
import gc
import importlib.util
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def load_workloads():
    spec = importlib.util.spec_from_file_location("fastopt_bench_workloads", HERE / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


W = load_workloads()
NA = "n/a"


# --- measuring -----------------------------------------------------------------------------
def timed(fn):
    """Seconds one call of ``fn`` takes (garbage collection off, as timeit does)."""
    return timed_result(fn)[0]


def timed_result(fn, collect=True):
    """``(seconds, result)`` of one call of ``fn``; ``collect``: a garbage collection first."""
    if collect:
        gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result
    finally:
        gc.enable()


def best_of(runs, repeats, budget_s, min_repeats=2):
    """Best time of each callable in ``runs`` (a dict), measured round-robin.

    Stops after ``repeats`` rounds, or earlier once ``budget_s`` seconds have
    passed and every callable ran ``min_repeats`` times. Returns the best times,
    the number of repeats and the result of each callable's first call.
    """
    times = {name: [] for name in runs}
    first = {}
    start = time.perf_counter()
    for r in range(repeats):
        for name, fn in runs.items():
            seconds, result = timed_result(fn)
            times[name].append(seconds)
            first.setdefault(name, result)
        if r + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return ({name: min(ts) for name, ts in times.items()},
            {name: len(ts) for name, ts in times.items()}, first)


def best_of_many(fn, seconds, max_calls=100_000):
    """Best time of a call taking microseconds: as many calls as fit in ``seconds``."""
    best = float("inf")
    end = time.perf_counter() + seconds
    calls = 0
    gc.disable()
    try:
        while calls < max_calls and (calls < 10 or time.perf_counter() < end):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
            calls += 1
    finally:
        gc.enable()
    return best


def prepare(factory, *args, **kwargs):
    """``factory(*args)``, or None if it skips (a peer that is not installed)."""
    try:
        return factory(*args, **kwargs)
    except pytest.skip.Exception:
        return None


class OtherLoad:
    """CPU time used by other processes while a section runs, in cores (from /proc/stat)."""

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        wall = end[0] - self.start[0]
        busy = end[1] - self.start[1]
        own = end[2] - self.start[2]
        self.cores = max(0.0, (busy - own) / wall) if wall > 0 and busy >= 0 else None

    @staticmethod
    def _sample():
        busy = float("nan")
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        return time.perf_counter(), busy, own

    def line(self):
        if self.cores is None or self.cores != self.cores:
            return "_other load: unknown_"
        return f"_other load during this section: {self.cores:.2f} cores of {os.cpu_count()}_"


QUIET = {"max_wait": 0.0, "threshold": 0.25}


def wait_for_quiet():
    """Wait (up to ``QUIET["max_wait"]`` s) until other processes use < 0.25 cores for 1 s."""
    deadline = time.perf_counter() + QUIET["max_wait"]
    while time.perf_counter() < deadline:
        with OtherLoad() as load:
            time.sleep(1.0)
        if load.cores is None or load.cores < QUIET["threshold"]:
            return


# --- formatting ----------------------------------------------------------------------------
def fmt_time(seconds):
    if seconds is None:
        return NA
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_ratio(value):
    return NA if value is None else f"{value:.2f}x"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Targets:
    """The issue's targets and what was measured, for the summary table."""

    def __init__(self):
        self.rows = []

    def add(self, what, value, goal, le, unit="x", load=None):
        if value is None:
            shown, met = NA, NA
        else:
            shown = f"{value:.2f}{unit}" if unit == "x" else f"{value:.3g} {unit}"
            met = "yes" if (value <= goal if le else value >= goal) else "**no**"
        goal_str = ("≤ " if le else "≥ ") + (f"{goal}x" if unit == "x" else f"{goal} {unit}")
        cores = getattr(load, "cores", None)
        noise = NA if cores is None else f"{cores:.2f}" + (" (noisy)" if cores > 0.25 else "")
        self.rows.append((what, shown, goal_str, met, noise))

    def markdown(self):
        return table(["target", "measured", "goal", "met", "other load (cores)"], self.rows)


def out(text=""):
    print(text, flush=True)


# --- sections ------------------------------------------------------------------------------
def machine_info(full, repeats):
    import numba
    import scipy

    def version(name):
        try:
            return __import__(name).__version__
        except ImportError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    dirty = git("status", "--porcelain", "--", "fastopt")
    rows = [
        ("date (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("fastopt commit", git("rev-parse", "--short", "HEAD")
         + (" + uncommitted changes in fastopt/" if dirty else "")),
        ("sizes", "full (the issue's)" if full else "quick (smoke-test sizes)"),
        ("timing", f"best of up to {repeats} repeats, peers interleaved; waits up to "
                   f"{QUIET['max_wait']:.0f} s for other load < {QUIET['threshold']} cores"),
        ("CPU", f"{cpu}, {os.cpu_count()} logical CPUs"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("python", platform.python_version()),
        ("numpy / scipy / numba", f"{np.__version__} / {scipy.__version__} / {numba.__version__}"),
        ("numba threads", f"{numba.get_num_threads()}"),
        ("jax / jaxlib / optax", f"{version('jax')} / {version('jaxlib')} / {version('optax')}"),
        ("torch", f"{version('torch')} (set_num_threads(2))"),
        ("env", ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                          if k.startswith(("OMP_", "NUMBA_", "XLA_", "MKL_"))) or "-"),
    ]
    return table(["", ""], rows)


def section_batch(S, repeats, targets):
    steps = S["batch_steps"]
    out(f"## 1. Batch Adam on Rosenbrock, T = {steps} steps\n")
    out("`minimize_batch(..., method='adam', options={'lr': 1e-3, 'maxiter': T, 'gtol': 0.0})`; "
        "peers run the same starts. fastopt = built-in in-place objective "
        "(`rosenbrock.minimize_kwargs()`), fastopt-block = built-in block objective "
        "(`rosenbrock.batch_kwargs()`, jac='block'), fastopt-user-njit = a user's per-point "
        "@njit fun + jac (jac returns a new array; fastopt rewrites it to write in place), "
        "fastopt-user-inplace = the same user's per-point @njit objective written in place "
        "(jac='inplace'). numpy = every operation in place (`out=`); numpy-expressions = "
        "array expressions, as most NumPy code is written. torch-fused = the gradient by "
        "hand with in-place ops; torch-fused-autograd = the gradient by `loss.backward()`, "
        "as most torch code gets it. numba-per-start = the issue's reference kernel "
        "(its table's 1.00 column): the last column compares each peer's time relative "
        "to it with the issue's. adam-arithmetic-floor = "
        "torch's Adam update alone (fixed gradient, no checks, tiles in cache): a lower bound "
        "for any implementation of the workload, not one. Ratios < 1: fastopt is "
        "faster. |Δx| = max difference of the final points from fastopt's.\n")
    goals = {"jax-optax": 0.75, "numpy": 0.1, "numpy-expressions": 0.1, "torch-fused": 0.3,
             "torch-fused-autograd": 0.3}
    bases = ("fastopt", "fastopt-block")
    issue_column = {name: values for name, values in W.ISSUE_TABLE.items()}
    issue_column.update({"numpy-expressions": W.ISSUE_TABLE["numpy"],
                         "torch-fused-autograd": W.ISSUE_TABLE["torch-fused"],
                         W.ISSUE_REFERENCE: (1.0, 1.0, 1.0)})
    for shape in S["batch_shapes"]:
        X0 = W.starts(*shape)
        runs = {}
        wait_for_quiet()
        implementations = {**W.BATCH_PEERS, **W.BATCH_REFERENCES, **W.BATCH_FLOORS}
        for name, factory in implementations.items():
            run = prepare(factory, X0, steps)
            if run is not None:
                runs[name] = run
        with OtherLoad() as load:
            best, counts, results = best_of(runs, repeats, budget_s=60.0)
        results = {name: np.asarray(x) for name, x in results.items()}
        reference = best.get(W.ISSUE_REFERENCE)
        issue_shape = W.BATCH_SHAPES_FULL.index(shape) if shape in W.BATCH_SHAPES_FULL else None
        rows = []
        for name in implementations:
            t = best.get(name)
            diff = (float(np.max(np.abs(results[name] - results["fastopt"])))
                    if name in results and name not in W.BATCH_FLOORS else None)
            issue = (f" (issue: {issue_column[name][issue_shape]:.2f})"
                     if name in issue_column and issue_shape is not None else "")
            rows.append((name, fmt_time(t), counts.get(name, 0),
                         f"{t / (shape[0] * shape[1] * steps) * 1e9:.2f}" if t else NA,
                         *(fmt_ratio(ratio(best.get(b), t)) for b in bases),
                         NA if diff is None else f"{diff:.1e}",
                         fmt_ratio(ratio(t, reference)) + issue))
        out(f"### N = {shape[0]:,}, d = {shape[1]:,}\n")
        out(table(["implementation", "time", "repeats", "ns / (start·dim·step)",
                   *(f"{b} / peer" for b in bases), "|Δx|",
                   f"time / {W.ISSUE_REFERENCE}"], rows))
        out(load.line() + "\n")
        for base in bases:
            for name, goal in goals.items():
                targets.add(f"batch {shape}: {base} / {name}",
                            ratio(best.get(base), best.get(name)), goal, le=True, load=load)
        for floor in W.BATCH_FLOORS:  # where even the floor misses a goal, so must fastopt
            for name, goal in goals.items():
                targets.add(f"batch {shape}: {floor} / {name}",
                            ratio(best.get(floor), best.get(name)), goal, le=True, load=load)
        for user in ("fastopt-user-njit", "fastopt-user-inplace"):
            targets.add(f"batch {shape}: {user} / jax-optax",
                        ratio(best.get(user), best.get("jax-optax")), 1.0, le=True, load=load)


def section_step(S, repeats, targets):
    n = S["step_params"]
    out(f"## 2. Step API: one Adam step on {n:,} float64 parameters\n")
    out("memory-floor: a numba `prange` kernel with Adam's memory traffic (read x, g, m, v; "
        "write x, m, v) and trivial arithmetic. GB/s counts those 7 arrays.\n")
    runs = {}
    wait_for_quiet()
    for name, factory in W.STEP_PEERS.items():
        run = prepare(factory, n)
        if run is not None:
            runs[name] = run
    with OtherLoad() as load:
        best, counts, _ = best_of(runs, max(repeats, 20), budget_s=30.0)
    base = best["fastopt"]
    rows = [(name, fmt_time(best.get(name)), counts.get(name, 0),
             f"{7 * 8 * n / best[name] / 1e9:.1f}" if name in best else NA,
             fmt_ratio(ratio(base, best.get(name))))
            for name in W.STEP_PEERS]
    out(table(["implementation", "time", "repeats", "GB/s", "fastopt / peer"], rows))
    out(load.line() + "\n")
    targets.add("step: fastopt / torch-fused", ratio(base, best.get("torch-fused")), 1.0, le=True,
                load=load)
    targets.add("step: fastopt speed / memory-floor speed", ratio(best.get("memory-floor"), base),
                0.9, le=False, load=load)


def section_minimize(S, targets):
    maxiter = S["minimize_iters"]
    out("## 3. `minimize`: 2-D Adam on Rosenbrock, per iteration and per call\n")
    out(f"ns/iteration = (time(maxiter={maxiter:,}) − time(maxiter=1)) / {maxiter - 1:,}, "
        "each the best of many calls timed as timeit does (garbage collector off); "
        "call overhead = a whole warm call with maxiter=1 (one iteration, two evaluations).\n")
    out("Loop: the one specialized for the objective (compiled once the objective has run "
        "`fastopt.loop.SPECIALIZE_AFTER_SECONDS` in the portable loop: a long job's), and the "
        "portable loop (cached on disk: a new objective's short calls). The issue's targets "
        "are for the specialized loop.\n")
    rows, pending = [], []
    wait_for_quiet()
    with OtherLoad() as load:
        for loop in W.MINIMIZE_LOOPS:
            for objective in W.OBJECTIVES:
                many = W.prepare_minimize(objective, maxiter, loop)
                one = W.prepare_minimize(objective, 1, loop)
                t_one = best_of_many(one, seconds=2.0)
                # no gc.collect() right before each run, as timeit: one just before costs the
                # next 3 ms run ~0.4 ms (measured; 4 ns per iteration), the collection evicting
                # its data
                t_many = min(timed_result(many, collect=False)[0] for _ in range(20))
                per_iter = (t_many - t_one) / (maxiter - 1)
                rows.append((objective, loop, fmt_time(t_many), f"{per_iter * 1e9:.1f}",
                             f"{t_one * 1e6:.1f}"))
                if loop == "specialized":
                    pending.append((f"minimize ns/iteration ({objective})", per_iter * 1e9, 30,
                                    True, "ns"))
                    pending.append((f"minimize warm call overhead ({objective})", t_one * 1e6,
                                    20, True, "µs"))
    for entry in pending:
        targets.add(*entry, load=load)
    out(table(["objective", "loop", f"time, maxiter={maxiter:,}", "ns / iteration",
               "µs / call (maxiter=1)"], rows))
    out(load.line() + "\n")


def section_scaling(S, repeats, targets):
    steps = S["batch_steps"]
    out(f"## 4. Thread scaling: fastopt batch Adam, T = {steps}, workers=1 vs workers=2\n")
    rows = []
    for shape in S["batch_shapes"]:
        X0 = W.starts(*shape)
        for name in ("fastopt", "fastopt-block"):
            factory = W.BATCH_PEERS[name]
            runs = {w: prepare(factory, X0, steps, workers=w) for w in (1, 2)}
            if runs[1] is None:
                continue
            wait_for_quiet()
            with OtherLoad() as load:
                best, _, _ = best_of(runs, repeats, budget_s=30.0)
            speedup = ratio(best[1], best[2])
            rows.append((f"N = {shape[0]:,}, d = {shape[1]:,}", name, fmt_time(best[1]),
                         fmt_time(best[2]), fmt_ratio(speedup), f"{load.cores:.2f}"))
            targets.add(f"scaling {shape} {name}: workers=1 / workers=2", speedup, 1.8,
                        le=False, load=load)
    out(table(["shape", "objective", "workers=1", "workers=2", "speedup (target ≥ 1.8x)",
               "other load (cores)"], rows))
    out()


def section_cold_start(repeats, targets):
    out("## 5. Cold start: fresh interpreter, `import fastopt`, first `minimize` with a new "
        "user @njit fun + jac\n")
    out("`NUMBA_CACHE_DIR` is a cache warmed by one earlier identical run, so kernels that "
        "take no function arguments can load from disk. 'user fun+jac compile' is numba "
        "compiling the user's two functions (called once before `minimize`); 'first minimize' "
        "is fastopt's part. Best of the repeats by total.\n")
    wait_for_quiet()
    with tempfile.TemporaryDirectory(prefix="fastopt-bench-cache-") as cache_dir, \
            OtherLoad() as load:
        W.cold_start(cache_dir)
        runs = [W.cold_start(cache_dir) for _ in range(repeats)]
        cached = sum(1 for p in Path(cache_dir).rglob("*.nbi"))
    best = min(runs, key=lambda r: r["total"])
    out(table(["import numba", "import fastopt (beyond numba)", "user fun+jac compile",
               "first minimize", "total", "whole process", "kernels in the cache"],
              [(fmt_time(best["import_numba"]), fmt_time(best["import_fastopt"]),
                fmt_time(best["user_compile"]), fmt_time(best["first_minimize"]),
                fmt_time(best["total"]), fmt_time(best["process"]), cached)]))
    out(load.line() + "\n")
    targets.add("cold start: import + first minimize (total)", best["total"], 1.0, le=True,
                unit="s", load=load)


def section_compile(S, repeats):
    out("## 6. Compile time: first `minimize_batch` (4 starts, 1 iteration) and first "
        "`minimize` (1 iteration) with a new objective\n")
    out("In this process, after everything above, so fastopt's leaf kernels are loaded; new "
        "@njit dispatchers every repeat. JAX row: trace + XLA compile of workload 1's "
        "first shape, for scale.\n")
    rows = []
    wait_for_quiet()
    with OtherLoad() as load:
        for kind in W.COMPILE_KINDS:
            t = min(timed(lambda k=kind: W.first_batch_call(k)) for _ in range(repeats))
            rows.append((f"fastopt, {kind}", fmt_time(t)))
        for method in W.COMPILE_METHODS:
            W.first_minimize_call(method)  # the rule's portable loop loaded from disk
            t = min(timed(lambda m=method: W.first_minimize_call(m)) for _ in range(repeats))
            rows.append((f"fastopt `minimize`, {method}, user-njit-fun+jac"
                         + (" + hess" if method == "newton" else ""), fmt_time(t)))
        shape = S["batch_shapes"][0]
        run = prepare(W.prepare_jax_compile, W.starts(*shape), S["batch_steps"])
        t = None if run is None else min(timed(run) for _ in range(repeats))
        rows.append((f"jax-optax jit, shape {shape}", fmt_time(t)))
    out(table(["first call", "time (best)"], rows))
    out(load.line() + "\n")


def section_rules(S, repeats):
    n, steps = S["rule_step_params"], S["batch_steps"]
    out("## 7. Every rule and option set\n")
    out(f"Step API: `opt.step` on {n:,} parameters (the serial kernels), "
        f"{W.RULE_STEPS_PER_CALL} steps a call, against "
        "torch.optim's step on one float64 tensor, fused where torch has a fused CPU kernel "
        f"(all but RMSprop). Batch: `minimize_batch` on Rosenbrock, T = {steps}, in the form "
        "`rosenbrock.batch_kwargs(d)` picks (block form at d = 10, point form at d = 1000); "
        "ns per coordinate-step. \"÷ plain\" is a row's time over its rule's first row: an "
        "option that turns a vector loop into a scalar one shows there.\n")
    shapes = S["rule_batch_shapes"]
    step_runs, batch_runs = {}, {shape: {} for shape in shapes}
    wait_for_quiet()
    for case in W.RULE_CASES:
        name = W.rule_case_id(case)
        for key, factory in ((name, W.prepare_rule_step),
                             (f"{name} torch", W.prepare_torch_rule_step)):
            run = prepare(factory, case, n)
            if run is not None:
                step_runs[key] = run
        for shape in shapes:
            run = prepare(W.prepare_rule_batch, case, W.starts(*shape), steps)
            if run is not None:
                batch_runs[shape][name] = run
    with OtherLoad() as load:
        step_best, _, _ = best_of(step_runs, max(repeats, 20), budget_s=30.0)
        batch = {shape: best_of(runs, repeats, budget_s=60.0)
                 for shape, runs in batch_runs.items()}
    batch_best = {shape: result[0] for shape, result in batch.items()}
    for shape, (_, _, results) in batch.items():  # ns per coordinate-step: all T steps taken
        for name, res in results.items():
            if not np.all(res.nit == steps):
                raise RuntimeError(f"{name} at {shape}: a start stopped before step {steps}")
    plain = {}
    rows = []
    for method, options in W.RULE_CASES:
        name = W.rule_case_id((method, options))
        plain.setdefault(method, name)
        t, torch_t = step_best.get(name), step_best.get(f"{name} torch")
        per_step = n * W.RULE_STEPS_PER_CALL
        row = [name, f"{t / per_step * 1e9:.2f}" if t else NA,
               fmt_ratio(ratio(t, step_best.get(plain[method]))),
               f"{torch_t / per_step * 1e9:.2f}" if torch_t else NA,
               fmt_ratio(ratio(t, torch_t))]
        for shape in shapes:
            b = batch_best[shape].get(name)
            row += [f"{b / (shape[0] * shape[1] * steps) * 1e9:.2f}" if b else NA,
                    fmt_ratio(ratio(b, batch_best[shape].get(plain[method])))]
        rows.append(row)
    header = ["rule, options", "step ns/param", "÷ plain", "torch ns/param",
              "fastopt / torch"]
    for N, d in shapes:
        header += [f"batch {N:,}×{d} ns", "÷ plain"]
    out(table(header, rows))
    out(load.line() + "\n")


SECTIONS = ("batch", "step", "minimize", "scaling", "cold", "compile", "rules")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats per measurement (default 5, --quick 3)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS",
                        help="before each measurement wait up to this long for other "
                             "processes to go quiet (default 30, --quick 0)")
    args = parser.parse_args(argv)
    QUIET["max_wait"] = args.wait_quiet if args.wait_quiet is not None else (
        0.0 if args.quick else 30.0)
    full = not args.quick
    repeats = args.repeats or (3 if args.quick else 5)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    S = W.sizes(full)
    targets = Targets()

    started = time.perf_counter()
    out("# fastopt benchmark report (GitHub issue #2)\n")
    out(f"`{' '.join([Path(sys.executable).name, *sys.argv])}`\n")
    out(machine_info(full, repeats) + "\n")
    if "batch" in sections:
        section_batch(S, repeats, targets)
    if "step" in sections:
        section_step(S, repeats, targets)
    if "minimize" in sections:
        section_minimize(S, targets)
    if "scaling" in sections:
        section_scaling(S, repeats, targets)
    if "cold" in sections:
        section_cold_start(repeats if full else 1, targets)
    if "compile" in sections:
        section_compile(S, 3 if full else 1)
    if "rules" in sections:
        section_rules(S, repeats)
    out("## Targets of the issue\n")
    if not full:
        out("_quick sizes: the targets are for the full sizes; shown for orientation only._\n")
    out(targets.markdown() + "\n")
    import numba

    out(f"_numba threading layer: {numba.threading_layer()}; report took "
        f"{time.perf_counter() - started:.0f} s._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
