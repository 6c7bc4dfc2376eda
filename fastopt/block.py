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
values, so a lane is bit-identical to the single-start run of that start.

Two ways to update a block:

* lanes with the same settings (hyperparameters, step, clipping, schedule: the
  usual case) go through the rule's own ``update``, the per-start loop's kernel,
  applied to the whole block as one flat vector with one row of hyperparameters.
  Lanes that have stopped step along uselessly: their x is put back after each
  update, and their state was saved when they stopped.
* otherwise (a sweep of per-start options) the rule's ``update_block`` reads each
  lane's own column of hyperparameters and leaves stopped lanes untouched.

The objective is evaluated per lane (on the lane's column of ``Xb`` in place, or
on a contiguous copy when the function needs one), or, for the block protocol
``jac="block"``, once per block: ``fun(X, G, F, *args)`` with ``X`` and ``G`` of
shape (d, B).

Without extra ``args`` the driver is the portable one: it calls the objective's
evaluation of a block (:func:`native_evaluate`, compiled alone for each objective) by
address, depends on no user code, and is cached on disk (:func:`block_loop_for`).

After each step one pass over the block checks the new values (finite, gtol) and
keeps them as the last finite point. The per-lane status pass runs only after a
step in which some lane stopped or diverged (or could have: xtol, ftol, a lane's
maxiter): on the other steps every stepping lane moved and steps again, and the
iterations are counted at the next status pass.
"""

import functools

import numba
import numpy as np

from . import status as st
from ._jit import closure_driver, inlined, kernel
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
    RAISED,
    SCHEDULE_A,
    SCHEDULE_B,
    SCHEDULE_C,
    SCHEDULE_KIND,
    STATUS,
    STEP,
    XTOL,
)
from .clipping import clip_by_norm, clip_by_value
from .loop import STOP_CHECK_STEPS, called_update
from .objective import (
    args_type,
    call_block,
    calls_by_address,
    compile_native,
    native_caller,
)
from .schedules import scheduled_lr

MAX_BLOCK_DIM = 64  # above this the per-start loop vectorizes over d and is as fast
MAX_FIXED_DIM = 16  # up to this d, the loop is compiled for its d


def lanes_for(d):
    """Starts per block for dimension ``d``.

    Wider blocks amortize the per-row loop overheads and the per-step call of the
    rule's update (measured, Adam on Rosenbrock, ns per start-step: d = 2: 64 lanes
    8.2, 128 lanes 7.3; d = 10: 32 lanes 35.6, 64 lanes 32.9, 128 lanes 37.5;
    d = 32: 16 lanes 162, 32 lanes 109). A straggler keeps its whole block stepping,
    so blocks stay no wider than that gain.
    """
    if d <= 2:
        return 128
    return 64 if d <= 16 else 32


def make_block_loop(rule, objective, d, portable=False):
    """Build ``run_blocks`` for a first-order rule and a compiled objective (memoized).

    ``portable`` builds the loop that evaluates the objective through the address of its
    :func:`native_evaluate`, passed as ``args = (address,)``: it depends on no user code,
    so numba caches it on disk (see :func:`block_loop_for`).
    """
    blockwise = objective.block_fun is not None
    if portable:
        return _make_block_loop(rule.update, rule.update_block, rule.block_scratch_rows,
                                evaluate_by_address, blockwise,
                                cache_key=("block", rule.name, blockwise))
    evaluate = make_evaluate(objective.fg, objective.block_fun, objective.lane_views)
    return _make_block_loop(rule.update, rule.update_block, rule.block_scratch_rows, evaluate,
                            blockwise, _fixed_dim(d))


def _fixed_dim(d):
    """``d`` where code is compiled for its d (loops over d then have a known length), or 0."""
    return d if d <= MAX_FIXED_DIM else 0


def block_loop_for(rule, objective, args, d, compile_with, portable=True):
    """``(run_blocks, run_args, native)`` for a batch of ``objective`` in blocks.

    An objective without extra ``args`` runs the portable loop (``portable`` False asks
    for the specialized one): the loop is compiled once and cached on disk, and a new
    objective compiles only its :func:`native_evaluate`, ~0.3 s, where the loop
    specialized for it takes ~4.5 s. It runs as fast (measured 0.92-1.0 of the
    specialized loop's time, Adam on Rosenbrock at 10,000 x 10 and 100,000 x 2, four
    objective forms), and gives the same numbers bit for bit. ``native`` is the
    :class:`~fastopt.objective.NativeFunction` it calls (keep it while the loop runs: it
    owns the code at the address), or None. ``compile_with(fn, *args)`` makes the call
    that compiles the objective's part (see :meth:`fastopt._workspace.Workspace.run_all`).
    """
    if portable and calls_by_address(objective, args):
        native = compile_with(native_evaluate, objective.fg, objective.block_fun,
                              objective.lane_views, _fixed_dim(d), args_type(args))
        return (make_block_loop(rule, objective, d, portable=True), ((native.address,), args),
                native)
    return make_block_loop(rule, objective, d), args, None


@functools.lru_cache(maxsize=256)
def make_evaluate(fg, block_fun, lane_views):
    """``evaluate(args, Xb, Gb, Fb, mask, controls, counters, lo, xbuf, gbuf, Gs, Fs) -> True``.

    The objective and its gradient: per lane in ``mask`` into ``Fb``, ``Gb`` (on the
    lane's column in place with ``lane_views``, else on a contiguous copy), or, for a
    block objective, of every lane into ``Fs``, ``Gs`` (the caller takes the masked lanes).
    """
    blockwise = block_fun is not None

    @inlined
    def evaluate(args, Xb, Gb, Fb, mask, controls, counters, lo, xbuf, gbuf, Gs, Fs):
        d, B = Xb.shape
        if blockwise:
            call_block(block_fun, Xb, Gs, Fs, args)
        elif lane_views:
            for b in range(B):
                if mask[b]:
                    Fb[b] = fg(Xb[:, b], Gb[:, b], args, controls[lo + b, FD_STEP],
                               counters[lo + b])
        else:
            for b in range(B):
                if mask[b]:
                    for i in range(d):
                        xbuf[i] = Xb[i, b]
                    Fb[b] = fg(xbuf, gbuf, args, controls[lo + b, FD_STEP], counters[lo + b])
                    for i in range(d):
                        Gb[i, b] = gbuf[i]
        return True

    return evaluate


_F64 = numba.types.CPointer(numba.types.float64)
# evaluate as a native function: (Xb, Gb, Fb, mask, controls, counters, xbuf, gbuf, Gs, Fs,
# d, B, lo, rows, controls' columns, counters' columns), the arrays as pointers.
NATIVE_EVALUATE_ARGUMENTS = (
    _F64, _F64, _F64, numba.types.CPointer(numba.types.boolean), _F64,
    numba.types.CPointer(numba.types.int64), _F64, _F64, _F64, _F64,
    *(numba.types.intp,) * 6)
call_native_evaluate = native_caller(NATIVE_EVALUATE_ARGUMENTS)


@kernel
def evaluate_by_address(args, Xb, Gb, Fb, mask, controls, counters, lo, xbuf, gbuf, Gs, Fs):
    """The portable loop's ``evaluate``: ``args`` is ``((address,), the user's args)``, the
    address that of a :func:`native_evaluate`.

    False when the objective raised (the caller stops, leaving the block's points where
    it raised; see :func:`fastopt.objective.raise_where_it_raised`).
    """
    d, B = Xb.shape
    ok, _ = call_native_evaluate(args[0][0], (Xb, Gb, Fb, mask, controls, counters, xbuf, gbuf,
                                              Gs, Fs, d, B, lo, controls.shape[0],
                                              controls.shape[1], counters.shape[1]), args[1])
    return ok


@functools.lru_cache(maxsize=256)
def native_evaluate(fg, block_fun, lane_views, fixed_dim, args_type):
    """:func:`make_evaluate`'s ``evaluate`` as a native function, for extra args of numba
    type ``args_type``, compiled for blocks of ``fixed_dim`` rows if it is not 0."""
    evaluate = make_evaluate(fg, block_fun, lane_views)

    def evaluate_native(X_ptr, G_ptr, F_ptr, mask_ptr, controls_ptr, counters_ptr, xbuf_ptr,
                        gbuf_ptr, Gs_ptr, Fs_ptr, d, B, lo, rows, n_controls, n_counters,
                        args):
        d = fixed_dim if fixed_dim > 0 else d
        Xb = numba.carray(X_ptr, (d, B))
        Gb = numba.carray(G_ptr, (d, B))
        Fb = numba.carray(F_ptr, (B,))
        mask = numba.carray(mask_ptr, (B,))
        controls = numba.carray(controls_ptr, (rows, n_controls))
        counters = numba.carray(counters_ptr, (rows, n_counters))
        xbuf = numba.carray(xbuf_ptr, (d,))
        gbuf = numba.carray(gbuf_ptr, (d,))
        Gs = numba.carray(Gs_ptr, (d, B))
        Fs = numba.carray(Fs_ptr, (B,))
        evaluate(args, Xb, Gb, Fb, mask, controls, counters, lo, xbuf, gbuf, Gs, Fs)
        return 0.0

    return compile_native(evaluate_native, (*NATIVE_EVALUATE_ARGUMENTS, args_type))


@inlined
def lanes_share_settings(hyper, controls, counters, lo, live, first):
    """True if every live lane of the block has the same hyperparameters, step, nit,
    clipping and schedule as row ``first``: they can then be advanced as one flat vector."""
    for b in range(live.size):
        r = lo + b
        if not live[b] or r == first:
            continue
        if counters[r, STEP] != counters[first, STEP] or counters[r, NIT] != counters[first, NIT]:
            return False
        for j in range(hyper.shape[1]):
            if hyper[r, j] != hyper[first, j]:
                return False
        for j in (CLIP_VALUE, CLIP_NORM, SCHEDULE_KIND, SCHEDULE_A, SCHEDULE_B, SCHEDULE_C):
            if controls[r, j] != controls[first, j]:
                return False
    return True


@functools.lru_cache(maxsize=256)
def _make_block_loop(update, update_block, scratch_rows, evaluate, blockwise, fixed_dim=0,
                     cache_key=None):
    update_flat = called_update(update)  # called, not inlined: see called_update

    # The passes over lanes below are written to vectorize across lanes: rows outer,
    # lanes inner, no branches (selects between values already loaded: a load inside a
    # conditional stops LLVM vectorizing the loop), and one pass doing as much as it can.

    @inlined
    def take_evaluated(mask, Fb, Gb, Fs, Gs, evals):
        """Block objective: lanes in ``mask`` take the new values (the caller's first pass)."""
        d, B = Gb.shape
        for b in range(B):
            new, old = Fs[b], Fb[b]
            Fb[b] = new if mask[b] else old
            evals[b] += mask[b]
        for i in range(d):
            for b in range(B):
                new, old = Gs[i, b], Gb[i, b]
                Gb[i, b] = new if mask[b] else old

    def run_block(args, X, G, F, state, hyper, controls, counters, lo, B, max_steps, stop):
        d = fixed_dim if fixed_dim > 0 else X.shape[1]
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
        evals = np.zeros(B, dtype=np.int64)
        active = np.zeros(B, dtype=np.bool_)
        pending = np.zeros(B, dtype=np.bool_)
        live = np.zeros(B, dtype=np.bool_)
        saved = np.zeros(B, dtype=np.bool_)
        flag = np.empty(B, dtype=np.bool_)
        flag2 = np.empty(B, dtype=np.bool_)
        scratch = np.empty((scratch_rows, B))  # per-lane scalars for update_block
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
            live[b] = pending[b] or status[b] == st.RUNNING
            saved[b] = not live[b]  # a lane that will not step keeps its state as it is

        # Shared settings: the live lanes advance as one flat vector through the rule's own
        # ``update`` (the per-start loop's kernel) with one row of hyperparameters; lanes
        # that stop are frozen (x restored after each update) and their state saved as
        # they stop. Otherwise each lane reads its own column of hyperparameters.
        first = lo
        for b in range(B):
            if live[b]:
                first = lo + b
                break
        shared = lanes_share_settings(hyper, controls, counters, lo, live, first)
        h_shared = hyper[first].copy()
        shared_counters = counters[first].copy()
        X_flat = Xb.reshape(d * B)
        G_flat = Gb.reshape(d * B)
        S_flat = Sb.reshape((n_state, d * B))

        raised = not evaluate(args, Xb, Gb, Fb, pending, controls, counters, lo, xbuf, gbuf,
                              Gs, Fs)
        if blockwise:
            take_evaluated(pending, Fb, Gb, Fs, Gs, evals)
        for b in range(B):
            flag[b] = Fb[b] - Fb[b] == 0.0
        for i in range(d):
            for b in range(B):
                flag[b] &= (Gb[i, b] - Gb[i, b] == 0.0) & (Xb[i, b] - Xb[i, b] == 0.0)
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
        any_ftol = False
        for b in range(B):
            r = lo + b
            gtol[b] = controls[r, GTOL]
            maxiter[b] = controls[r, MAXITER]
            xtol[b] = controls[r, XTOL]
            ftol[b] = controls[r, FTOL]
            any_xtol |= xtol[b] > 0.0
            any_ftol |= ftol[b] > 0.0
            any_clip_or_schedule |= (controls[r, CLIP_VALUE] > 0.0 or controls[r, CLIP_NORM] > 0.0
                                     or controls[r, SCHEDULE_KIND] != 0.0)

        # The last finite point (kept for a rollback, and for xtol and ftol) and the gtol test
        # are taken in the pass that checks a step's new values: into (Xq, Gq, Fq), which then
        # swap with (Xp, Gp, Fp).
        Xq = np.empty((d, B))
        Gq = np.empty((d, B))
        Fq = np.empty(B)
        small_grad = np.empty(B, dtype=np.bool_)
        for b in range(B):
            small_grad[b] = True
            Fp[b] = Fb[b]
        for i in range(d):
            for b in range(B):
                g = Gb[i, b]
                small_grad[b] &= abs(g) <= gtol[b]
                Gp[i, b] = g
                Xp[i, b] = Xb[i, b]

        # Quiet steps: while no lane stops or diverges, a step needs no status pass, and the
        # steps are counted in ``nit`` and ``step`` at the next review. Only when nothing reads
        # those counts in between: shared settings, no schedule, no xtol or ftol.
        quiet_allowed = shared and not (any_clip_or_schedule or any_xtol or any_ftol)
        quiet = 0  # quiet steps not yet counted
        quiet_until = 0.0  # a lane runs out of iterations at this many steps
        steps = 0
        n_running = B + 1
        review = True
        while not raised:
            if review:
                # another start raised, or Ctrl-C: stop as at the end of a chunk of steps
                in_budget = steps < max_steps and stop[0] == 0
                n_active = 0
                n_now_running = 0
                iterations_left = np.inf
                for b in range(B):
                    s = status[b]
                    running = s == st.RUNNING
                    converged = running & small_grad[b]
                    exhausted = running & (not converged) & (nit[b] >= maxiter[b])
                    s = st.GTOL if converged else s
                    status[b] = st.MAXITER if exhausted else s
                    go = running & (not converged) & (not exhausted)
                    n_now_running += go
                    go &= in_budget
                    active[b] = go
                    n_active += go
                    step[b] += go  # the rule's step counter (torch's state["step"])
                    left = maxiter[b] - nit[b]
                    iterations_left = min(iterations_left, left if go else np.inf)
                # at most STOP_CHECK_STEPS quiet steps between reviews, which read ``stop``
                quiet_until = steps + min(iterations_left, STOP_CHECK_STEPS)
                if n_now_running < n_running:  # some lanes stopped: keep their state
                    n_running = n_now_running
                    for b in range(B):
                        if not saved[b] and status[b] != st.RUNNING:
                            saved[b] = True
                            for k in range(n_state):
                                for i in range(d):
                                    state[lo + b, k, i] = Sb[k, i, b]
                if n_active == 0:
                    break
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
                        h_shared[0] = Ht[0, b]
            if shared:
                update_flat(X_flat, G_flat, S_flat, h_shared, shared_counters)
                if n_active < B:  # put stopped lanes back
                    for i in range(d):
                        for b in range(B):
                            new, old = Xb[i, b], Xp[i, b]
                            Xb[i, b] = new if active[b] else old
            else:
                update_block(Xb, Gb, Sb, Ht, step, active, scratch)
            if not evaluate(args, Xb, Gb, Fb, active, controls, counters, lo, xbuf, gbuf, Gs,
                            Fs):
                raised = True
                break
            steps += 1

            # After a step: take the new values, check them and keep them (gtol is tested here
            # for the next step), then xtol and ftol. A block objective wrote every lane's into
            # (Gs, Fs): when every lane stepped they are swapped in, else the stepping lanes'
            # are copied (a select in the check pass cost 6% at 10,000 x 10).
            if blockwise:
                if n_active == B:
                    Gb, Gs = Gs, Gb
                    Fb, Fs = Fs, Fb
                    G_flat = Gb.reshape(d * B)
                    for b in range(B):
                        evals[b] += 1
                else:
                    take_evaluated(active, Fb, Gb, Fs, Gs, evals)
            for b in range(B):
                f = Fb[b]
                Fq[b] = f
                flag[b] = f - f == 0.0
                small_grad[b] = True
                flag2[b] = any_xtol
            for i in range(d):
                for b in range(B):
                    g = Gb[i, b]
                    x = Xb[i, b]
                    flag[b] &= (g - g == 0.0) & (x - x == 0.0)
                    small_grad[b] &= abs(g) <= gtol[b]
                    Gq[i, b] = g
                    Xq[i, b] = x
            if any_xtol:
                for i in range(d):
                    for b in range(B):
                        flag2[b] &= abs(Xb[i, b] - Xp[i, b]) <= xtol[b]

            review = not quiet_allowed or steps >= max_steps or steps >= quiet_until
            for b in range(B):
                review |= active[b] & (small_grad[b] | (not flag[b]))
            if not review:
                quiet += 1
            else:
                n_diverged = 0
                for b in range(B):
                    nit[b] += quiet * active[b]
                    step[b] += quiet * active[b]
                    f, f_prev = Fb[b], Fp[b]
                    finite = flag[b]
                    moved = active[b] & finite
                    diverged = active[b] & (not finite)
                    nit[b] += moved
                    s = status[b]
                    if any_ftol or any_xtol:
                        x_converged = moved & flag2[b] & (xtol[b] > 0.0)
                        scale = max(abs(f), abs(f_prev), 1.0)
                        f_converged = (moved & (ftol[b] > 0.0)
                                       & (abs(f - f_prev) <= ftol[b] * scale))
                        s = st.FTOL if f_converged else s
                        s = st.XTOL if x_converged else s
                    status[b] = st.DIVERGED if diverged else s
                    flag[b] = diverged
                    n_diverged += diverged
                quiet = 0
                if n_diverged > 0:  # back to the last finite point
                    for b in range(B):
                        if flag[b]:
                            Fb[b] = Fq[b] = Fp[b]
                            for i in range(d):
                                Xb[i, b] = Xq[i, b] = Xp[i, b]
                                Gb[i, b] = Gq[i, b] = Gp[i, b]
            Xp, Xq = Xq, Xp
            Gp, Gq = Gq, Gp
            Fp, Fq = Fq, Fp

        for b in range(B):
            r = lo + b
            for i in range(d):
                X[r, i] = Xb[i, b]
                G[r, i] = Gb[i, b]
            if not saved[b]:
                for k in range(n_state):
                    for i in range(d):
                        state[r, k, i] = Sb[k, i, b]
            F[r] = Fb[b]
            counters[r, STATUS] = status[b]
            counters[r, NIT] = nit[b]
            counters[r, STEP] = step[b]
            counters[r, NFEV] += evals[b]
            counters[r, NJEV] += evals[b]
        if raised:
            counters[lo, RAISED] += 1

    run_block = closure_driver(run_block, cache_key)

    def run_blocks(args, X, G, F, state, hyper, controls, counters, lanes, max_steps, stop,
                   first, end):
        """Blocks ``first`` to ``end - 1`` of ``lanes`` starts each (a thread's share); as
        :func:`fastopt.loop.make_loop`'s ``run_batch``, stops early once ``stop[0]`` is set,
        which each block also reads at least every ``STOP_CHECK_STEPS`` steps."""
        n = X.shape[0]
        for k in range(first, end):
            if stop[0] != 0:
                break
            lo = k * lanes
            run_block(args, X, G, F, state, hyper, controls, counters, lo, min(lanes, n - lo),
                      max_steps, stop)
            if counters[lo, RAISED] != 0:
                stop[0] = 1

    return closure_driver(run_blocks, cache_key)
