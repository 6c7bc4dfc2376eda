"""The lockstep driver: blocks of starts advanced together, structure of arrays.

At small d one start is a serial chain (x -> f, g -> update -> x) that leaves the
CPU idle between dependent operations, and each step pays the rule's per-step
scalars (Adam's two ``pow`` calls) for a handful of flops. A block of B starts
(``lanes``) is stored coordinates-by-rows, starts-by-columns (``Xb[i, b]``), so
every inner loop runs across starts: it vectorizes, independent starts fill the
pipeline, and per-step scalars are computed once per block when lanes share them.

Each lane follows exactly the per-start loop of :mod:`fastopt.loop` (same checks
in the same order, same clipping, schedule, divergence rollback and stopping),
and each update is the rule's per-coordinate function applied to the lane's own
values, so a lane is bit-identical to the single-start run of that start. Lanes
that stop are masked: their values are never written again.

The objective is evaluated per lane (the lane's column is gathered into a
contiguous vector for ``fg``), or, for the block protocol ``jac="block"``, once
per block: ``fun(X, G, F, *args)`` with ``X`` and ``G`` of shape (d, B).
"""

import functools

import numpy as np
from numba import prange

from . import status as st
from ._jit import driver, inlined, parallel_driver
from ._layout import (
    CLIP_NORM,
    CLIP_VALUE,
    FD_STEP,
    FTOL,
    GTOL,
    MAXITER,
    NFEV,
    NIT,
    NJEV,
    SCHEDULE_A,
    SCHEDULE_B,
    SCHEDULE_C,
    SCHEDULE_KIND,
    STATUS,
    STEP,
    XTOL,
)
from .clipping import clip_by_norm, clip_by_value
from .objective import call_block
from .schedules import scheduled_lr

MAX_BLOCK_DIM = 64  # above this the per-start loop vectorizes over d and is as fast


def lanes_for(d):
    """Starts per block for dimension ``d``.

    Wider blocks amortize the per-step bookkeeping (measured at d = 2: 16 lanes 22.5 ns,
    32 lanes 15.1 ns, 64 lanes 13.2 ns per start-step); a straggler keeps its whole block
    stepping, so blocks stay no wider than that gain.
    """
    if d <= 4:
        return 64
    return 32 if d <= 16 else 16


def make_block_loop(rule, objective):
    """Build ``run_blocks`` for a first-order rule and a compiled objective (memoized)."""
    return _make_block_loop(rule.update_block, objective.fg, objective.block_fun)


@functools.lru_cache(maxsize=256)
def _make_block_loop(update_block, fg, block_fun):
    blockwise = block_fun is not None

    @inlined
    def evaluate(args, Xb, Gb, Fb, mask, controls, counters, lo, xbuf, gbuf, Gs, Fs):
        """Objective and gradient of the lanes in ``mask``."""
        d, B = Xb.shape
        if blockwise:
            call_block(block_fun, Xb, Gs, Fs, args)
            for b in range(B):
                if mask[b]:
                    Fb[b] = Fs[b]
                    for i in range(d):
                        Gb[i, b] = Gs[i, b]
                    counters[lo + b, NFEV] += 1
                    counters[lo + b, NJEV] += 1
        else:
            for b in range(B):
                if mask[b]:
                    for i in range(d):
                        xbuf[i] = Xb[i, b]
                    Fb[b] = fg(xbuf, gbuf, args, controls[lo + b, FD_STEP], counters[lo + b])
                    for i in range(d):
                        Gb[i, b] = gbuf[i]

    @inlined
    def finite_lanes(flag, Fb, Gb, Xb):
        """``flag[b]``: f, g and x of lane b are finite (``v - v == 0`` exactly then).

        Rows outer, lanes inner: the inner loop vectorizes across lanes.
        """
        d, B = Xb.shape
        for b in range(B):
            flag[b] = Fb[b] - Fb[b] == 0.0
        for i in range(d):
            for b in range(B):
                flag[b] &= (Gb[i, b] - Gb[i, b] == 0.0) & (Xb[i, b] - Xb[i, b] == 0.0)

    @driver
    def run_block(args, X, G, F, state, hyper, controls, counters, lo, B, max_steps):
        d = X.shape[1]
        n_state = state.shape[1]
        n_hyper = hyper.shape[1]
        Xb = np.empty((d, B))
        Gb = np.empty((d, B))
        Xp = np.empty((d, B))
        Gp = np.empty((d, B))
        Sb = np.empty((n_state, d, B))
        Hb = np.empty((n_hyper, B))
        Ht = np.empty((n_hyper, B))
        Gs = np.empty((d, B))
        Fb = np.empty(B)
        Fp = np.empty(B)
        Fs = np.empty(B)
        status = np.empty(B, dtype=np.int64)
        nit = np.empty(B, dtype=np.int64)
        step = np.empty(B, dtype=np.int64)
        active = np.zeros(B, dtype=np.bool_)
        pending = np.zeros(B, dtype=np.bool_)
        scratch = np.empty((2, B))
        xbuf = np.empty(d)
        gbuf = np.empty(d)
        for b in range(B):
            r = lo + b
            for i in range(d):
                Xb[i, b] = X[r, i]
                Gb[i, b] = G[r, i]
                for k in range(n_state):
                    Sb[k, i, b] = state[r, k, i]
            for j in range(n_hyper):
                Hb[j, b] = hyper[r, j]
                Ht[j, b] = hyper[r, j]
            Fb[b] = F[r]
            status[b] = counters[r, STATUS]
            nit[b] = counters[r, NIT]
            step[b] = counters[r, STEP]
            pending[b] = status[b] == st.NOT_STARTED

        flag = np.empty(B, dtype=np.bool_)
        flag2 = np.empty(B, dtype=np.bool_)
        evaluate(args, Xb, Gb, Fb, pending, controls, counters, lo, xbuf, gbuf, Gs, Fs)
        finite_lanes(flag, Fb, Gb, Xb)
        for b in range(B):
            if pending[b]:
                status[b] = st.RUNNING if flag[b] else st.DIVERGED

        # Per-lane controls, read once; clipping and schedules only if some lane uses them.
        gtol = np.empty(B)
        maxiter = np.empty(B)
        xtol = np.empty(B)
        ftol = np.empty(B)
        any_clip_or_schedule = False
        any_xtol = False
        for b in range(B):
            r = lo + b
            gtol[b] = controls[r, GTOL]
            maxiter[b] = controls[r, MAXITER]
            xtol[b] = controls[r, XTOL]
            ftol[b] = controls[r, FTOL]
            any_xtol |= xtol[b] > 0.0
            any_clip_or_schedule |= (controls[r, CLIP_VALUE] > 0.0 or controls[r, CLIP_NORM] > 0.0
                                     or controls[r, SCHEDULE_KIND] != 0.0)

        steps = 0
        while True:
            # gtol test for every lane, rows outer so the inner loop runs across lanes
            for b in range(B):
                flag[b] = True
            for i in range(d):
                for b in range(B):
                    flag[b] &= abs(Gb[i, b]) <= gtol[b]
            n_active = 0
            for b in range(B):
                go = False
                if status[b] == st.RUNNING:
                    if flag[b]:
                        status[b] = st.GTOL
                    elif nit[b] >= maxiter[b]:
                        status[b] = st.MAXITER
                    elif steps < max_steps:
                        go = True
                active[b] = go
                n_active += go
            if n_active == 0:
                break
            for i in range(d):
                for b in range(B):
                    Xp[i, b] = Xb[i, b]
                    Gp[i, b] = Gb[i, b]
            for b in range(B):
                Fp[b] = Fb[b]
            if any_clip_or_schedule:
                for b in range(B):
                    if not active[b]:
                        continue
                    r = lo + b
                    if controls[r, CLIP_VALUE] > 0.0:
                        clip_by_value(Gb[:, b], controls[r, CLIP_VALUE])
                    if controls[r, CLIP_NORM] > 0.0:
                        clip_by_norm(Gb[:, b], controls[r, CLIP_NORM])
                    kind = int(controls[r, SCHEDULE_KIND])
                    if kind != 0:
                        Ht[0, b] = scheduled_lr(Hb[0, b], nit[b], kind, controls[r, SCHEDULE_A],
                                                controls[r, SCHEDULE_B], controls[r, SCHEDULE_C])
            for b in range(B):
                step[b] += active[b]  # the rule's step counter (torch's state["step"])
            update_block(Xb, Gb, Sb, Ht, step, active, scratch)
            evaluate(args, Xb, Gb, Fb, active, controls, counters, lo, xbuf, gbuf, Gs, Fs)
            steps += 1
            finite_lanes(flag, Fb, Gb, Xb)
            for b in range(B):
                flag2[b] = True
            if any_xtol:
                for i in range(d):
                    for b in range(B):
                        flag2[b] &= abs(Xb[i, b] - Xp[i, b]) <= xtol[b]
            for b in range(B):
                if not active[b]:
                    continue
                if not flag[b]:
                    Fb[b] = Fp[b]
                    for i in range(d):
                        Xb[i, b] = Xp[i, b]
                        Gb[i, b] = Gp[i, b]
                    status[b] = st.DIVERGED
                    continue
                nit[b] += 1
                if xtol[b] > 0.0 and flag2[b]:
                    status[b] = st.XTOL
                    continue
                f = Fb[b]
                f_prev = Fp[b]
                if ftol[b] > 0.0 and abs(f - f_prev) <= ftol[b] * max(abs(f), abs(f_prev), 1.0):
                    status[b] = st.FTOL

        for b in range(B):
            r = lo + b
            for i in range(d):
                X[r, i] = Xb[i, b]
                G[r, i] = Gb[i, b]
                for k in range(n_state):
                    state[r, k, i] = Sb[k, i, b]
            F[r] = Fb[b]
            counters[r, STATUS] = status[b]
            counters[r, NIT] = nit[b]
            counters[r, STEP] = step[b]

    @parallel_driver
    def run_blocks(args, X, G, F, state, hyper, controls, counters, lanes, max_steps):
        """Every block of ``lanes`` starts, blocks in parallel."""
        n = X.shape[0]
        n_blocks = (n + lanes - 1) // lanes
        for k in prange(n_blocks):
            lo = k * lanes
            run_block(args, X, G, F, state, hyper, controls, counters, lo, min(lanes, n - lo),
                      max_steps)

    return run_blocks
