"""The arrays of a run: N starts, each owning row i of every array.

``minimize`` uses a workspace with N = 1 and runs the loop on row 0, the very
code path a batch row takes.
"""

import numba
import numpy as np

from . import _layout as L
from . import status as st
from ._jit import parallel_lock
from .block import MAX_BLOCK_DIM, lanes_for, make_block_loop
from .loop import make_loop


class Workspace:
    def __init__(self, X0, setup):
        n, d = X0.shape
        self.X = X0
        self.G = np.empty((n, d))  # written by the first evaluation
        self.F = np.empty(n)
        self.state = np.zeros((n, setup.n_state, d))
        if setup.rule.init is not None:
            setup.rule.init(self.state, setup.hyper)
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

    def run_one(self, loop, args, max_steps, i=0):
        """Advance start ``i`` by at most ``max_steps`` iterations."""
        run_start, _ = loop
        run_start(args, self.X[i], self.G[i], self.F[i:i + 1],
             self.state[i], self.hyper[i], self.controls[i], self.counters[i], self.X_prev[i],
             self.G_prev[i], self.hyper_t[i], self.x_history[i], self.f_history[i], self.every,
             max_steps)

    def run_all(self, setup, objective, args, max_steps, workers=None):
        """Advance every start, on all cores (or ``workers`` threads).

        First-order rules at d <= MAX_BLOCK_DIM run in lockstep blocks
        (:mod:`fastopt.block`); everything else runs one start per task. Both give
        every start bit for bit the result of its single-start run. Above
        MAX_BLOCK_DIM the per-start loop vectorizes over d and wins (2.2x at
        d = 1000), even for a block objective, which it then calls with one column.
        """
        d = self.X.shape[1]
        blocked = (objective.compiled and setup.rule.update_block is not None
                   and not setup.history_every and d <= MAX_BLOCK_DIM)
        if blocked:
            run = make_block_loop(setup.rule, objective, d)
            launch_args = (args, self.X, self.G, self.F, self.state, self.hyper, self.controls,
                           self.counters, lanes_for(d), max_steps)
        else:
            loop = make_loop(setup.rule, objective, setup.history_every > 0, d)
            if not objective.compiled:
                for i in range(self.X.shape[0]):
                    self.run_one(loop, args, max_steps, i)
                return
            run = loop[1]
            launch_args = (args, self.X, self.G, self.F, self.state, self.hyper, self.controls,
                           self.counters, self.X_prev, self.G_prev, self.hyper_t, self.x_history,
                           self.f_history, self.every, max_steps)
        with parallel_lock:
            previous = numba.get_num_threads()
            if workers is not None:
                numba.set_num_threads(workers)
            try:
                run(*launch_args)
            except SystemError as exc:
                # numba reports an exception raised inside a parallel region (the user's
                # objective raising) as a SystemError caused by it: raise the user's own
                if exc.__cause__ is None:
                    raise
                raise exc.__cause__ from None
            finally:
                numba.set_num_threads(previous)

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
