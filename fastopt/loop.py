"""The compiled loop that drives any update rule, for one start or a batch.

:func:`make_loop` builds two functions for a (rule, objective) pair.
``run_start`` advances one start until it stops (or ``max_steps`` iterations,
so Python callbacks can run between chunks). ``run_batch`` runs ``run_start``
on a range of rows of a batch (:func:`fastopt._workspace.run_in_threads` gives each
thread its ranges): a batch row
executes exactly the code of a single-start run on exactly its own data, so it
is bit-identical to it whatever the number of threads, and a start that stops
or diverges costs the others nothing.

Per iteration ``k`` (from ``x_k`` with value ``f_k`` and gradient ``g_k``):

1. stop with ``GTOL`` if ``max|g_k| <= gtol``, ``MAXITER`` if ``k == maxiter``,
   ``MAXFUN`` if the objective has been evaluated more than ``maxfun`` times;
2. clip the gradient (by value, then by norm) and set the scheduled learning rate;
3. the rule's ``advance`` computes ``x_{k+1}``, ``f_{k+1}``, ``g_{k+1}``;
4. if any of them is non-finite, restore ``x_k`` (the last finite point) and stop
   with ``DIVERGED``;
5. stop with ``XTOL`` if ``max|x_{k+1} - x_k| <= xtol`` (or the rule's own test of
   its step says so: BFGS's ``xrtol``) or with ``FTOL`` if
   ``|f_{k+1} - f_k| <= ftol * max(|f_k|, |f_{k+1}|, 1)`` (each only if > 0).
"""

import functools

import numpy as np

from . import status as st
from ._jit import closure_driver, driver, inlined, kernel, unique_qualname
from ._layout import (
    CLIP_NORM,
    CLIP_VALUE,
    FD_STEP,
    FTOL,
    GTOL,
    MAXFUN,
    MAXITER,
    NFEV,
    NIT,
    RAISED,
    SCHEDULE_A,
    SCHEDULE_B,
    SCHEDULE_C,
    SCHEDULE_KIND,
    STATUS,
    XTOL,
)
from .clipping import clip_by_norm, clip_by_value
from .linalg import all_abs_diff_le, all_abs_le
from .objective import (
    args_type,
    call_native_fg,
    calls_by_address,
    native_fg,
    native_hess,
    no_hess_compiled,
)
from .schedules import scheduled_lr


@kernel
def all_finite(v):
    """True if every element of ``v`` is finite.

    ``v - v`` is 0 for a finite value and NaN for inf or NaN (exact in IEEE
    arithmetic, which fastopt never relaxes).
    """
    ok = True
    for i in range(v.size):
        ok &= v[i] - v[i] == 0.0
    return ok


@kernel
def is_finite(a):
    """``math.isfinite`` for a float, as ``a - a == 0``."""
    return a - a == 0.0


@kernel
def record(x_history, f_history, every, nit, x, f):
    """Store ``x`` and ``f`` as history row ``nit // every`` if ``every`` divides ``nit``."""
    if f_history.size > 0 and nit % every == 0:
        row = nit // every
        if row < f_history.size:
            for i in range(x.size):
                x_history[row, i] = x[i]
            f_history[row] = f


# From this dimension on, a first-order rule's update is called, not inlined (see make_loop).
OUTLINE_UPDATE_DIM = 32

# A batch's start (or block of starts) reads the shared ``stop`` flag (another start raised,
# or Ctrl-C) at least this often: a few ms at small d, far less than a long start.
STOP_CHECK_STEPS = 4096
# ... and a start of the per-start loop after about this much work (see stop_check_steps).
STOP_CHECK_WORK = 2**20


def stop_check_steps(rule, d):
    """Iterations a start of the per-start batch loop runs between reads of ``stop``.

    About ``STOP_CHECK_WORK`` operations: an iteration of a first-order rule costs ~d,
    of a quasi-Newton or Newton rule ~d**2 or more, so that Ctrl-C is taken within a few
    ms to tens of ms at any d (at most ``STOP_CHECK_STEPS``, at least 1).
    """
    work = d if rule.update is not None else d * d
    return max(1, min(STOP_CHECK_STEPS, STOP_CHECK_WORK // work))


@kernel
def call_fg_address(x, g, args, fd_step, counters):
    """The portable loop's objective: ``args`` is ``(addresses, the user's args)``,
    ``addresses[0]`` that of a :func:`fastopt.objective.native_fg`.

    An exception it raises is counted in ``counters[RAISED]`` and the value is NaN,
    so the loop stops, leaving ``x`` where it was raised; the caller evaluates the
    objective there again from Python, where the exception propagates with its message
    (:func:`fastopt.objective.raise_where_it_raised`).
    """
    ok, f = call_native_fg(args[0][0], (x, g, counters, x.size, fd_step), args[1])
    if not ok:
        counters[RAISED] += 1
        f = np.nan
    return f


@kernel
def call_hess_address(x, H, args, fd_step, counters):
    """The portable loop's Hessian: ``args[0][1]`` is a :func:`fastopt.objective.native_hess`
    address. If it raises, ``H`` is NaN (the Newton rules stop there, ``x`` unmoved), and
    the exception is counted as :func:`call_fg_address` counts the objective's."""
    ok, _ = call_native_fg(args[0][1], (x, H, counters, x.size, fd_step), args[1])
    if not ok:
        counters[RAISED] += 1
        H[:, :] = np.nan


def portable_natives(rule, objective, args, compile_with=None):
    """The compiled functions a portable loop of ``rule`` calls for ``objective`` and the
    extra ``args``, and the ``args`` to pass the loop: ``((native_fg, [native_hess]),
    ((addresses...), args))``. Keep the first while the loop runs: it owns the code at
    the addresses. ``compile_with(native_fg, fg, args_type)`` compiles (default: a plain
    call)."""
    compile_with = compile_with or (lambda make, *arguments: make(*arguments))
    types = args_type(args)
    natives = (compile_with(native_fg, objective.fg, types),)
    if rule.needs_hess:
        natives += (compile_with(native_hess, objective.hess, types),)
    return natives, (tuple(native.address for native in natives), args)


def make_loop(rule, objective, history=False, d=1, portable=False):
    """Build ``(run_start, run_batch)`` for one rule and one objective.

    The rule's ``update`` (or ``advance``) and the objective's ``fg`` are closed
    over rather than passed as arguments, so numba inlines them into the loop: at
    small d the call boundary would otherwise cost more than the update itself.
    From ``d = OUTLINE_UPDATE_DIM`` on, the variant built calls a first-order update
    (:func:`called_update`) instead.
    ``history`` builds the variant that records iterates: the recording code,
    even never executed, costs a 2-D iteration ~20 ns, so the plain loop has none
    (closure variables are compile-time constants in numba).
    ``portable`` builds the loop that calls the objective (and a Newton rule's Hessian)
    through its address, passed as ``args`` (see :func:`portable_natives`): it depends on
    no user code, so numba caches it on disk and a new objective starts without
    compiling a loop (see :func:`loop_for`).
    Memoized: the second call with the same rule and objective compiles nothing.
    In Python mode (an objective numba cannot compile) the same code runs
    uncompiled, calling the compiled kernels.
    """
    step = rule.update if rule.update is not None else rule.advance
    outline = rule.update is not None and objective.compiled and d >= OUTLINE_UPDATE_DIM
    fg = call_fg_address if portable else objective.fg
    if portable:
        hess = call_hess_address if rule.needs_hess else no_hess_compiled
    else:
        hess = objective.hess
    return _make_loop(step, rule.update is not None, fg, hess, objective.compiled,
                      bool(history), outline,
                      (rule.name, bool(history), outline) if portable else None)


# A loop specialized for an objective inlines it: 2-D Adam on the built-in Rosenbrock costs
# 29 ns an iteration there against 35-53 ns in the portable loop, and 39 against 62 ns with
# a user's @njit fun and jac. But it costs 1-2 s to compile, the time of 20,000 or more
# short calls. So, as a JIT compiles only hot code, a (rule, objective) pair is specialized
# only once its portable runs have taken SPECIALIZE_AFTER_SECONDS in all: a script that
# calls minimize a few times never pays the compile, a long job pays it once it has run
# this long, when the compile costs at most about what the job has already run.
SPECIALIZE_AFTER_SECONDS = 1.0
# Seconds each (objective's fg, rule name) has run in the portable loop (see loop_for).
_PORTABLE_SECONDS = {}


def loop_for(rule, objective, args, history, d):
    """The loop for one start of ``objective``, and the ``args`` to pass it.

    A compiled objective without extra arguments runs the portable loop (cached on
    disk): its first call compiles only the objective's
    :func:`~fastopt.objective.native_fg` (and :func:`~fastopt.objective.native_hess`),
    ~0.1 s instead of 1-6 s for the loop specialized for it. Once its calls
    have run longer than ``SPECIALIZE_AFTER_SECONDS`` there (the caller reports each
    run's time to :func:`record_portable_run`), the loop specialized for it is compiled
    and used from the next call on. Both loops give the same bits.
    Returns ``(loop, loop_args, natives)``: ``natives`` are the
    :class:`~fastopt.objective.NativeFunction` the portable loop calls (keep them while
    the loop runs: they own the code at the addresses), or None for any other loop.
    """
    if calls_by_address(objective, args):
        key = (objective.fg, rule.name)
        seconds = _PORTABLE_SECONDS.get(key, 0.0)
        if seconds > SPECIALIZE_AFTER_SECONDS:
            _PORTABLE_SECONDS[key] = np.inf  # specialized for good (its compile is paid)
        else:  # a new pair has run 0 s: portable
            # the user's functions called as they are: inlined copies, or a rewritten
            # gradient, would cost compile time, which is what this loop saves
            natives, loop_args = portable_natives(rule, objective.plain or objective, args)
            return make_loop(rule, objective, history, d, portable=True), loop_args, natives
    return make_loop(rule, objective, history, d), args, None


def record_portable_run(rule, objective, seconds):
    """Count ``seconds`` more of ``objective`` run by ``rule`` in the portable loop
    (the time of a whole ``minimize`` run there, Python callbacks included)."""
    if len(_PORTABLE_SECONDS) > 4096:  # a bound on what the table keeps alive
        _PORTABLE_SECONDS.clear()
    key = (objective.fg, rule.name)
    _PORTABLE_SECONDS[key] = _PORTABLE_SECONDS.get(key, 0.0) + seconds


def batch_loop_for(rule, objective, args, history, d, compile_with, portable=True):
    """``(run_batch, run_args, native)`` for a batch of ``objective``, one start per task.

    As :func:`fastopt.block.block_loop_for`: an objective without extra ``args`` runs
    the portable loop (``portable`` False asks for the specialized one), its ``fg``
    compiled alone by ``compile_with(native_fg, fg)`` (1.0-1.03 of the
    specialized loop's time at 100 x 1000, the same bits).
    """
    if portable and calls_by_address(objective, args):
        natives, loop_args = portable_natives(rule, objective, args, compile_with)
        return make_loop(rule, objective, history, d, portable=True)[1], loop_args, natives
    return make_loop(rule, objective, history, d)[1], args, None


@functools.lru_cache(maxsize=64)
def called_update(update):
    """A first-order ``update`` compiled as a function of its own, for loops to call.

    Inlined into a large loop (this one at large d, or the block driver), LLVM leaves the
    rule's option branches inside the vectorized loop; compiled alone it vectorizes fully
    (Adam at d = 1000: 3.6 against 1.8 ns per coordinate). A call costs ~40 ns.
    """
    def outlined_update(x, g, state, hyper, counters):
        update(x, g, state, hyper, counters)

    # linked into cached loops: a name of its own per rule (see unique_qualname)
    rule_function = getattr(update, "py_func", update)
    return driver(unique_qualname(outlined_update,
                                  (rule_function.__module__, rule_function.__qualname__)))


@functools.lru_cache(maxsize=256)
def _make_loop(step, is_update, fg, hess, compiled, history, outline=False, cache_key=None):
    if is_update:
        update = step if compiled else step.py_func
        if outline:
            update = called_update(update)

        def advance(args, x, f, g, state, hyper, controls, counters):
            update(x, g, state, hyper, counters)
            return fg(x, g, args, controls[FD_STEP], counters)
    else:
        rule_advance = step if compiled else step.py_func

        def advance(args, x, f, g, state, hyper, controls, counters):
            return rule_advance(fg, hess, args, x, f, g, state, hyper, controls, counters)

    if compiled:
        advance = inlined(advance)

    def run_start(args, x, g, f_out, state, hyper, controls, counters, x_prev,
                  g_prev, hyper_t, x_history, f_history, every, max_steps):
        """Advance one start by at most ``max_steps`` iterations (see the module docstring).

        All arrays belong to this start and are updated in place: ``x``, ``g``,
        ``f_out`` (1 element), ``state`` (the rule's), ``counters`` (see
        ``fastopt._layout``), the work arrays ``x_prev``, ``g_prev``, ``hyper_t``, and
        the history rows.
        """
        if counters[STATUS] == st.NOT_STARTED:
            f = fg(x, g, args, controls[FD_STEP], counters)
            f_out[0] = f
            if history:
                record(x_history, f_history, every, 0, x, f)
            if not (is_finite(f) and all_finite(g)):
                counters[STATUS] = st.DIVERGED
                return
            counters[STATUS] = st.RUNNING
        if counters[STATUS] != st.RUNNING:
            return
        f = f_out[0]
        gtol = controls[GTOL]
        xtol = controls[XTOL]
        ftol = controls[FTOL]
        maxiter = controls[MAXITER]
        maxfun = controls[MAXFUN]
        clip_value = controls[CLIP_VALUE]
        clip_norm = controls[CLIP_NORM]
        schedule = int(controls[SCHEDULE_KIND])
        for j in range(hyper.size):
            hyper_t[j] = hyper[j]
        status = st.RUNNING
        steps = 0
        while True:
            if all_abs_le(g, gtol):
                status = st.GTOL
                break
            nit = counters[NIT]
            if nit >= maxiter:
                status = st.MAXITER
                break
            if counters[NFEV] > maxfun:
                status = st.MAXFUN
                break
            if steps >= max_steps:
                break
            for i in range(x.size):
                x_prev[i] = x[i]
                g_prev[i] = g[i]
            f_prev = f
            if clip_value > 0.0:
                clip_by_value(g, clip_value)
            if clip_norm > 0.0:
                clip_by_norm(g, clip_norm)
            if schedule != 0:
                hyper_t[0] = scheduled_lr(hyper[0], nit, schedule, controls[SCHEDULE_A],
                                          controls[SCHEDULE_B], controls[SCHEDULE_C])
            f = advance(args, x, f, g, state, hyper_t, controls, counters)
            steps += 1
            if counters[RAISED] != 0:
                # the portable loop's objective (or Hessian) raised: stop, x where it did (a
                # rule's later trials, see fastopt.linesearch.trial, leave x there)
                status = st.DIVERGED
                break
            rule_status = counters[STATUS]  # XTOL: the rule's own test after its step met
            if rule_status != st.RUNNING and rule_status != st.XTOL:
                # the rule itself failed, x is its last good point
                status = rule_status
                if not (is_finite(f) and all_finite(x) and all_finite(g)):
                    f = f_prev
                    for i in range(x.size):
                        x[i] = x_prev[i]
                        g[i] = g_prev[i]
                break
            if not (is_finite(f) and all_finite(g) and all_finite(x)):
                f = f_prev
                for i in range(x.size):
                    x[i] = x_prev[i]
                    g[i] = g_prev[i]
                status = st.DIVERGED
                break
            nit += 1
            counters[NIT] = nit
            if history:
                record(x_history, f_history, every, nit, x, f)
            if rule_status == st.XTOL or (xtol > 0.0 and all_abs_diff_le(x, x_prev, xtol)):
                status = st.XTOL
                break
            if ftol > 0.0 and abs(f - f_prev) <= ftol * max(abs(f), abs(f_prev), 1.0):
                status = st.FTOL
                break
        f_out[0] = f
        counters[STATUS] = status

    if compiled:
        run_start = closure_driver(run_start, cache_key)

    def run_batch(args, X, G, F, state, hyper, controls, counters, X_prev, G_prev, hyper_t,
                  x_history, f_history, every, max_steps, check_steps, stop, first, end):
        """``run_start`` on rows ``first`` to ``end - 1`` of a batch (a thread's share).

        Stops early once ``stop[0]`` is set: by a start whose objective raised (here or in
        another thread), or by the caller when another thread's call raised or on Ctrl-C.
        A start runs in chunks of ``check_steps`` iterations (:func:`stop_check_steps`),
        reading ``stop`` between them; ``run_start`` resumes exactly where it stopped, so
        the chunks change no bit.
        """
        for i in range(first, end):
            if stop[0] != 0:
                break
            steps_left = max_steps
            while True:
                chunk = min(steps_left, check_steps)
                run_start(args, X[i], G[i], F[i:i + 1], state[i], hyper[i], controls[i],
                          counters[i], X_prev[i], G_prev[i], hyper_t[i], x_history[i],
                          f_history[i], every, chunk)
                steps_left -= chunk
                if (steps_left == 0 or counters[i, STATUS] != st.RUNNING
                        or counters[i, RAISED] != 0 or stop[0] != 0):
                    break
            if counters[i, RAISED] != 0:
                stop[0] = 1

    if compiled:
        run_batch = closure_driver(run_batch, cache_key)
    return run_start, run_batch
