"""The description every update rule provides to the drivers.

A rule is data plus compiled functions. A first-order rule gives

``update(x, g, state, hyper, counters)``
    Apply one update to ``x`` and ``state`` in place from the gradient ``g``
    (the loop then evaluates the objective at the new ``x``). Its step counter
    is ``counters[STEP]``. Being a ``kernel`` it is inlined into the loop.

A rule that evaluates the objective itself (line searches, Newton) gives instead

``advance(fg, hess, args, x, f, g, state, hyper, controls, counters) -> f_new``
    Take one iteration from ``x`` (value ``f``, gradient ``g``): update ``x`` and
    ``state`` in place, evaluate the objective at the new point, write its gradient
    into ``g`` and return its value. A rule that fails (a line search, a singular
    system) sets ``counters[STATUS]`` and leaves ``x``, ``g`` at the last good point.

Either may be paired with ``init(state, hyper, matrices)`` (NumPy), which fills fresh
state of shape ``(N, n_state, d)`` beyond its zero start; ``matrices`` maps each of
the rule's ``matrix_options`` that was given (BFGS: ``hess_inv0``) to its (d, d) array.

A quasi-Newton rule also gives ``inverse_hessian(state, hyper, step)`` (NumPy): its
approximation of the inverse Hessian from one start's final ``state``, returned as
scipy's ``res.hess_inv`` (an ndarray for BFGS, a ``LbfgsInvHessProduct`` for L-BFGS).

``hyper`` is one float64 row in the order of ``hyperparameters`` (booleans as
0.0/1.0), so a batch holds an ``(N, n_hyper)`` matrix and every start may use its
own values. ``hyper[0]`` is the learning rate for rules that have one: the
driver applies learning-rate schedules by rewriting it.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Rule(NamedTuple):
    name: str
    hyperparameters: tuple  # names, in the order of the hyper row
    defaults: dict
    validate: Callable  # validate(values: dict of arrays) -> None, raises ValueError
    n_state: Callable  # n_state(d, values) -> int rows of per-start state
    update: object = None  # compiled update(x, g, state, hyper, counters), first-order rules
    # update_block(X, G, S, H, step, active, scratch): the same rule for a block of starts
    # in lockstep, structure of arrays (coordinates by rows, starts by columns), scratch a
    # (block_scratch_rows, B) work array for per-lane scalars; the driver has already
    # counted this step in step[b] for the active lanes.
    update_block: object = None
    block_scratch_rows: int = 0
    advance: object = None  # compiled advance(fg, hess, args, ...), rules that evaluate f
    # init(state, hyper, matrices) on (N, n_state, d) zeros, matrices the options named in
    # matrix_options; or None
    init: Callable = None
    has_lr: bool = True
    scalar_only: tuple = ()  # hyperparameters that may not vary per start
    needs_hess: bool = False
    # The rule to use instead when options["line_search"] is set (e.g. gd with a Wolfe search).
    with_line_search: object = None
    uses_line_search: bool = False  # the rule reads controls[LINE_SEARCH] itself
    default_line_search: str = None  # e.g. "strong-wolfe" for BFGS
    inverse_hessian: Callable = None  # inverse_hessian(state, hyper, step) -> res.hess_inv
    # Stopping options whose defaults differ from minimize's for this method, as scipy's
    # (BFGS: maxiter 200 d, a function of d; L-BFGS-B: ftol, maxiter), and the options
    # ``tol`` sets (scipy: gtol; L-BFGS-B: both).
    loop_defaults: dict = None
    tol_sets: tuple = ("gtol",)
    matrix_options: tuple = ()  # options that are one (d, d) matrix for every start
    # fastopt.Status -> (status, message) that ``minimize`` reports instead, where the
    # method's scipy counterpart has codes and texts of its own (L-BFGS-B); or None
    scipy_statuses: dict = None


def check_range(name, value, low, high=np.inf, low_inclusive=True, high_inclusive=False):
    """Raise ValueError naming ``name`` unless every element of ``value`` lies in range."""
    arr = np.asarray(value, dtype=np.float64)
    ok = np.isfinite(arr) | (np.isinf(arr) & (high == np.inf) & (arr > 0))
    ok &= (arr >= low) if low_inclusive else (arr > low)
    ok &= (arr <= high) if high_inclusive else (arr < high)
    if not np.all(ok):
        bad = float(arr[~ok].flat[0] if arr.ndim else arr)
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(f"Invalid {name}: {bad!r}; expected a value in {lo}{low}, {high}{hi}")
