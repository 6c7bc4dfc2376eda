"""The arrays of a run: N starts, each owning row i of every array.

``minimize`` uses a workspace with N = 1 and runs the loop on row 0, the very
code path a batch row takes.
"""

import math
import threading

import numba
import numpy as np

from . import _layout as L
from . import status as st
from .block import MAX_BLOCK_DIM, block_loop_for, lanes_for
from .loop import batch_loop_for, make_loop, stop_check_steps
from .objective import raise_where_it_raised


def _call(fn, *args):
    return fn(*args)


# Arrays from this size on are written when made (see Workspace.__init__); smaller ones come
# from the heap, already written, and np.empty / np.zeros cost less (~1.5 us a minimize call)
WRITE_WHEN_MADE_BYTES = 1 << 16


def _new_array(shape, zeros=False):
    """A new float array (of zeros if ``zeros``), each page of it written if it is large."""
    if math.prod(shape) * 8 < WRITE_WHEN_MADE_BYTES:
        return np.zeros(shape) if zeros else np.empty(shape)
    array = np.empty(shape)
    array.fill(0.0 if zeros else np.nan)
    return array


class Workspace:
    def __init__(self, X0, setup):
        n, d = X0.shape
        self.X = X0
        # Written here, not left to the loops: a page of a fresh array that a loop reads
        # before writing is mapped to the kernel's zero page, and the write that follows
        # copies it and flushes the other cores' TLBs (measured: most of a 100,000-start
        # batch's fixed cost, ~30 ms, on this KVM guest).
        self.G = _new_array((n, d))  # written by the first evaluation
        self.F = _new_array((n,))
        self.state = _new_array((n, setup.n_state, d), zeros=True)
        if setup.rule.init is not None:
            setup.rule.init(self.state, setup.hyper, setup.matrices)
        self.hyper = setup.hyper
        self.controls = setup.controls
        self.counters = np.zeros((n, L.N_COUNTERS), dtype=np.int64)
        self.counters[:, L.STATUS] = st.NOT_STARTED
        self.X_prev = np.empty((n, d))
        self.G_prev = np.empty((n, d))
        self.hyper_t = np.empty_like(setup.hyper)
        rows = setup.history_rows
        if rows:
            self.x_history = np.full((n, rows, d), np.nan)
            self.f_history = np.full((n, rows), np.nan)
        else:
            self.x_history = np.empty((n, 0, d))
            self.f_history = np.empty((n, 0))
        self.every = max(1, setup.history_every)
        self.needs_hess = setup.rule.needs_hess
        self.rows_per_task = 1  # starts a compiled task advances: a block's lanes, or 1

    def run_one(self, loop, args, max_steps, i=0):
        """Advance start ``i`` by at most ``max_steps`` iterations."""
        run_start, _ = loop
        run_start(args, self.X[i], self.G[i], self.F[i:i + 1],
             self.state[i], self.hyper[i], self.controls[i], self.counters[i], self.X_prev[i],
             self.G_prev[i], self.hyper_t[i], self.x_history[i], self.f_history[i], self.every,
             max_steps)

    def run_all(self, setup, objective, args, max_steps, workers=None, compile_with=None,
                portable=True):
        """Advance every start, on all of numba's threads (or ``workers`` threads).

        ``compile_with(fn, *args)`` makes the calls that compile (they run nothing):
        :func:`fastopt.objective.run_with_fallback` passes its
        :class:`~fastopt.objective.FirstCall`, so that only compilation runs under its rules.
        Returns True if the starts ran in a portable loop, which calls the objective by
        address (:func:`fastopt.block.block_loop_for`, :func:`fastopt.loop.batch_loop_for`;
        ``portable`` False: never):
        an exception of the objective then only stopped its block or start, counted in
        ``counters[:, RAISED]``, and the batch: the caller raises it from Python at
        :meth:`raise_where_it_raised`, or
        reruns with ``portable=False``, where it propagates.

        First-order rules at d <= MAX_BLOCK_DIM run in lockstep blocks
        (:mod:`fastopt.block`); everything else runs one start per task. Both give
        every start bit for bit the result of its single-start run. Above
        MAX_BLOCK_DIM the per-start loop vectorizes over d and wins (2.2x at
        d = 1000), even for a block objective, which it then calls with one column.
        """
        compile_with = compile_with or _call
        n, d = self.X.shape
        blocked = (objective.compiled and setup.rule.update_block is not None
                   and not setup.history_every and d <= MAX_BLOCK_DIM)
        native = None
        if blocked:
            run, run_args, native = block_loop_for(setup.rule, objective, args, d, compile_with,
                                                   portable)
            lanes = self.rows_per_task = lanes_for(d)
            n_tasks = (n + lanes - 1) // lanes
            launch_args = (run_args, self.X, self.G, self.F, self.state, self.hyper,
                           self.controls, self.counters, lanes, max_steps)
        else:
            history = setup.history_every > 0
            if not objective.compiled:
                loop = make_loop(setup.rule, objective, history, d)
                for i in range(n):
                    self.run_one(loop, args, max_steps, i)
                return False
            run, run_args, native = batch_loop_for(setup.rule, objective, args, history, d,
                                                   compile_with, portable)
            n_tasks = n
            launch_args = (run_args, self.X, self.G, self.F, self.state, self.hyper,
                           self.controls, self.counters, self.X_prev, self.G_prev, self.hyper_t,
                           self.x_history, self.f_history, self.every, max_steps,
                           stop_check_steps(setup.rule, d))
        stop = np.zeros(1, dtype=np.int64)  # set: no thread starts another task
        launch_args += (stop,)
        compile_with(run, *launch_args, 0, 0)  # compiles, in the caller's thread; runs nothing
        threads = workers if workers is not None else numba.get_num_threads()
        run_in_threads(lambda first, end: run(*launch_args, first, end), n_tasks, threads, stop)
        return native is not None  # ``native`` owns the code at run_args[0] until here

    def raise_where_it_raised(self, objective, args):
        """After a portable loop counted an exception of the objective (``counters[:,
        RAISED]``), raise it: ``objective.fg`` (and for a Newton rule ``objective.hess``)
        evaluated from Python where the run stopped, on the start's row or every row of
        its block (see
        :func:`fastopt.objective.raise_where_it_raised`). Returns if it does not raise."""
        n = self.X.shape[0]
        rows = [row for first in np.flatnonzero(self.counters[:, L.RAISED])
                for row in range(first, min(n, first + self.rows_per_task))]
        raise_where_it_raised(objective.fg, self.X[rows], self.controls[rows, L.FD_STEP],
                              objective.hess if self.needs_hess else None, args)

    def history_rows(self, i):
        """Rows of start ``i``'s history that were filled (iterations 0, k, 2k, ...)."""
        filled = self.counters[i, L.NIT] // self.every + 1
        return self.x_history[i, :filled], self.f_history[i, :filled]


def check_workers(workers):
    if workers is None or workers == -1:
        return None
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"Invalid workers: {workers!r}; expected None, -1 or an integer >= 1")
    return int(min(workers, numba.config.NUMBA_NUM_THREADS))


def run_in_threads(run_range, n_tasks, threads, stop):
    """``run_range(first, end)`` over chunks of ``range(n_tasks)``, on ``threads`` threads.

    ``run_range`` is compiled code that releases the GIL (``nogil``), so the threads run
    in parallel. Tasks are independent (a start or a block of starts): which thread
    runs which chunk changes no result. Chunks shrink as the work runs out (guided
    scheduling: a thread takes 1/(2 threads) of what is left), so threads finish within
    about one task of each other even when starts stop early.

    ``stop`` is a 1-element array the compiled loops read (before each task, and inside
    one every few ms of work: see :func:`fastopt.loop.stop_check_steps`); they set it when an
    objective raised in a portable loop. It is set here as well when a chunk raises (the
    user's objective, in a specialized loop), and on Ctrl-C: the threads stop, take no new
    chunk, and the exception is raised here once they have ended. The tasks run on helper
    threads while the caller's thread waits for them, so that it can take the
    KeyboardInterrupt (compiled code does not).
    """
    lock = threading.Lock()
    position = 0
    errors = []

    def next_chunk():
        nonlocal position
        with lock:
            first = position
            if first >= n_tasks or errors or stop[0]:
                return None
            position = min(n_tasks, first + max(1, (n_tasks - first) // (2 * threads)))
            return first, position

    def work(done):
        try:
            while (chunk := next_chunk()) is not None:
                run_range(*chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            with lock:
                errors.append(exc)
                stop[0] = 1
        finally:
            done.set()

    # Each helper sets its own event when it ends. Thread.join is not used: a join that
    # Ctrl-C interrupts marks its thread as ended while it still runs (CPython 3.11's
    # Thread._wait_for_tstate_lock), so a second join would return at once.
    finished = [threading.Event() for _ in range(max(1, min(threads, n_tasks)))]
    for done in finished:
        threading.Thread(target=work, args=(done,), daemon=True).start()
    try:
        for done in finished:
            # in short waits: Ctrl-C may be delivered to a helper thread, which leaves a
            # wait without timeout blocked; the main thread raises it when a wait ends
            while not done.wait(0.05):
                pass
    except KeyboardInterrupt:
        with lock:
            stop[0] = 1
        for done in finished:
            done.wait()
        raise
    if errors:
        raise errors[0]
