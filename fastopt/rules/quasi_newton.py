r"""BFGS, L-BFGS and gradient descent with a line search.

Each iteration picks a descent direction :math:`p_k`, finds a step
:math:`\alpha_k` by a line search (``options["line_search"]``: ``"strong-wolfe"``,
the default, or ``"armijo"``; see :mod:`fastopt.linesearch`) and moves to
:math:`x_{k+1} = x_k + \alpha_k p_k`. With :math:`s_k = x_{k+1} - x_k`,
:math:`y_k = g_{k+1} - g_k`:

``"bfgs"`` (scipy ``minimize(method="BFGS")``)
    :math:`p_k = -H_k g_k` with the inverse-Hessian approximation
    :math:`H_0 = I` and

    .. math::

        H_{k+1} = (I - \rho_k s_k y_k^T) H_k (I - \rho_k y_k s_k^T) + \rho_k s_k s_k^T,
        \qquad \rho_k = 1 / y_k^T s_k,

    skipped when :math:`y_k^T s_k \le 0`. As scipy: no scaling of :math:`H_0`, a
    first trial step :math:`\min(1, 2.02 (f_k - f_{k-1}) / g_k^T p_k)` (``1.01 /
    ||g_0||`` on the first iteration), the Moré--Thuente search with
    ``c1 = 1e-4``, ``c2 = 0.9``, ``xtol = 1e-14`` and at most 100 evaluations. O(d²)
    memory and work per iteration.

``"lbfgs"`` (scipy ``minimize(method="L-BFGS-B")`` without bounds)
    :math:`p_k = -H_k g_k` by the two-loop recursion over the last ``m`` pairs
    (default 10) with :math:`H_k^0 = \gamma_k I`,
    :math:`\gamma_k = s_{k-1}^T y_{k-1} / y_{k-1}^T y_{k-1}`; a pair is kept only
    if :math:`s^T y > \epsilon_{mach} (-\alpha g_k^T p_k)`. As L-BFGS-B: first trial
    step ``1 / ||p_0||`` then 1, Moré--Thuente with ``xtol = 0.1`` and at most 20
    evaluations. O(m d) memory and work per iteration.

``"gd"`` with ``options["line_search"]``
    :math:`p_k = -g_k`; the first trial step of every search is ``lr`` (default 1).

A search that fails (no acceptable step) restarts once from steepest descent
with the memory cleared (as L-BFGS-B does); if that fails too the start stops
with status 2 (``LINE_SEARCH_FAILED``, scipy's "precision loss" message) at its
last point. A direction that is not a descent direction (rounding) also clears
the memory. Hyperparameters ``c1`` and ``c2`` (``0 < c1 < c2 < 1``) may be set per
start; L-BFGS-B itself uses ``c1 = 1e-3``.

optax: ``optax.lbfgs(memory_size=m)`` (with its zoom line search);
``optax.scale_by_lbfgs`` for the direction alone.
"""

import numpy as np
from scipy.optimize import LbfgsInvHessProduct

from .. import status as st
from .._jit import inlined, kernel, takes_functions
from .._layout import FD_STEP, GTOL, LINE_SEARCH, RAISED, STATUS, STEP
from ..linalg import all_abs_le, bfgs_inverse_update, dot, lbfgs_new_pair, lbfgs_two_loop
from ..linesearch import accepts_first_trial, line_search, search_from_trial, trial
from ._spec import Rule, check_range

EPS = float(np.finfo(np.float64).eps)

# scipy's BFGS (line_search_wolfe1 -> MINPACK dcsrch)
BFGS_XTOL, BFGS_STPMIN, BFGS_STPMAX, BFGS_MAXFEV = 1e-14, 1e-100, 1e100, 100
# L-BFGS-B's lnsrlb
LBFGS_XTOL, LBFGS_STPMIN, LBFGS_STPMAX, LBFGS_MAXLS = 0.1, 0.0, 1e10, 20


@kernel
def _set_identity(H):
    n = H.shape[0]
    for i in range(n):
        for j in range(n):
            H[i, j] = 0.0
        H[i, i] = 1.0


@kernel
def _end_failed_search(x, g, xk, gk, f_new, counters):
    """A rule's line search failed: back to ``x_k``, ``g_k``, and the status says why
    (``DIVERGED`` if the last trial value is not finite). Not once the portable loop's
    ``fg`` raised: ``x`` then stays where it did, to raise it there again."""
    if counters[RAISED] == 0:
        for i in range(x.size):
            x[i] = xk[i]
            g[i] = gk[i]
    counters[STATUS] = st.LINE_SEARCH_FAILED if f_new - f_new == 0.0 else st.DIVERGED


@kernel
def _bfgs_initial_step(f, f_old, dphi0):
    """scipy's first trial: ``min(1, 1.01 * 2 (f - f_old) / phi'(0))``, or 1 if not positive."""
    alpha = min(1.0, 1.01 * 2.0 * (f - f_old) / dphi0)
    return alpha if alpha > 0.0 else 1.0


# ---------------------------------------------------------------------------------
# BFGS. state rows: [0, d) inverse Hessian H; d: direction p; d+1: x_k; d+2: g_k, then
# y_k; d+3: work (H y); then the scalar area (flat): [f_{k-1}, updates since the reset,
# 1.0 if H_0 was given (hess_inv0)].
H0_GIVEN = 2  # index in the scalar area


def _bfgs_n_state(d, values):
    return d + 4 + -(-3 // d)


def _h0_given_position(d):
    """(row, column) of the scalar area's H0_GIVEN entry in a start's (n_state, d) state."""
    return d + 4 + H0_GIVEN // d, H0_GIVEN % d


def _bfgs_init(state, hyper, matrices):
    """``hess_inv0`` (scipy's option) as every start's :math:`H_0`; it must be symmetric
    (exactly) and positive definite (Cholesky), as scipy checks."""
    h0 = matrices.get("hess_inv0")
    if h0 is None:
        return
    try:
        np.linalg.cholesky(h0)
        positive_definite = np.array_equal(h0, h0.T)  # exactly symmetric, as scipy asks
    except np.linalg.LinAlgError:
        positive_definite = False
    if not positive_definite:
        raise ValueError("Invalid hess_inv0: 'hess_inv0' matrix isn't positive definite.")
    d = h0.shape[0]
    state[:, :d] = h0
    state[(slice(None), *_h0_given_position(d))] = 1.0


@takes_functions("fg", "hess")
def bfgs_advance(fg, hess, args, x, f, g, state, hyper, controls, counters):
    """One BFGS iteration (see the module docstring); callable from ``@njit`` code."""
    d = x.size
    H = state[0:d]
    p = state[d]
    xk = state[d + 1]
    gk = state[d + 2]
    work = state[d + 3]
    scalars = state[d + 4:].flat  # indexable like a 1-D view, without numba's reshape call
    c1 = hyper[0]
    c2 = hyper[1]
    kind = int(controls[LINE_SEARCH])
    fd_step = controls[FD_STEP]
    if counters[STEP] == 0:
        given = scalars[H0_GIVEN] != 0.0  # H_0 from hess_inv0, else the identity
        if not given:
            _set_identity(H)
        scalars[0] = f + np.sqrt(dot(g, g)) / 2.0  # scipy: the first trial step is ~1/||g||
        scalars[1] = 0.0  # a failed first search ends the run, as scipy's (from H_0 too)
    n_updates = scalars[1]
    for i in range(d):
        xk[i] = x[i]
        gk[i] = g[i]
        p[i] = -g[i]
    ok = False
    f_new = f
    alpha = 0.0
    for attempt in range(2):
        for i in range(d):
            s = 0.0
            for j in range(d):
                s -= H[i, j] * gk[j]
            p[i] = s
        dphi0 = dot(gk, p)
        if not dphi0 < 0.0 or attempt == 1:  # not a descent direction, or a restart
            if attempt == 1 and n_updates == 0.0:
                break  # steepest descent has failed already
            _set_identity(H)
            n_updates = 0.0
            for i in range(d):
                p[i] = -gk[i]
            dphi0 = dot(gk, p)
            scalars[0] = f + np.sqrt(-dphi0) / 2.0
        alpha = _bfgs_initial_step(f, scalars[0], dphi0)
        f_new, alpha, ok = line_search(kind, fg, args, fd_step, counters, x, g, xk, p, f, dphi0,
                                       alpha, c1, c2, BFGS_XTOL, BFGS_STPMIN, BFGS_STPMAX,
                                       BFGS_MAXFEV)
        if ok:
            break
    if not ok:
        _end_failed_search(x, g, xk, gk, f_new, counters)
        return f
    counters[STEP] += 1
    for i in range(d):
        p[i] = alpha * p[i]  # s_k
        gk[i] = g[i] - gk[i]  # y_k
    # scipy stops before its update once max|g_{k+1}| <= gtol (so does res.hess_inv),
    # or once ||s_k|| <= xrtol (xrtol + ||x_{k+1}||) (2-norms): the loop counts the
    # iteration and stops with XTOL
    if not all_abs_le(g, controls[GTOL]):
        xrtol = hyper[2]
        if xrtol > 0.0 and np.sqrt(dot(p, p)) <= xrtol * (xrtol + np.sqrt(dot(x, x))):
            counters[STATUS] = st.XTOL
        elif bfgs_inverse_update(H, p, gk, work):
            n_updates += 1.0
    scalars[0] = f
    scalars[1] = n_updates
    return f_new


# ---------------------------------------------------------------------------------
# L-BFGS. state rows: [0, m) s pairs; [m, 2m) y pairs (the ``pairs`` of lbfgs_two_loop);
# 2m: direction p; 2m+1: x_k; 2m+2: g_k; then the scalar area (flat): the ``coef`` of
# lbfgs_two_loop (rho (m), work (m), cross (m)), then [newest, count, gamma].
def _lbfgs_scalar_rows(d, m):
    return -(-(3 * m + 3) // d)


def _lbfgs_n_state(d, values):
    m = int(values["m"])
    return 2 * m + 3 + _lbfgs_scalar_rows(d, m)


@inlined
def lbfgs_advance(fg, hess, args, x, f, g, state, hyper, controls, counters):
    """One L-BFGS iteration (see the module docstring); callable from ``@njit`` code.

    Inlined into the compiled loop (the loop has no other call boundary per
    iteration to pay: ~20 ns at d = 10). ``state`` itself is the kernels' ``pairs``
    and its scalar rows their ``coef`` (see :func:`~fastopt.linalg.lbfgs_two_loop`),
    indexed here through ``.flat``.
    """
    d = x.size
    c1 = hyper[0]
    c2 = hyper[1]
    m = int(hyper[2])
    maxls = int(hyper[3])
    p = state[2 * m]
    xk = state[2 * m + 1]
    gk = state[2 * m + 2]
    area = state[2 * m + 3:]
    flat = area.flat  # indexable like area.reshape(-1), without numba's reshape call
    kind = int(controls[LINE_SEARCH])
    fd_step = controls[FD_STEP]
    newest = int(flat[3 * m])
    count = int(flat[3 * m + 1])
    if counters[STEP] == 0:
        newest = m - 1
        count = 0
    for i in range(d):
        xk[i] = x[i]
        gk[i] = g[i]
        p[i] = -g[i]
    ok = False
    f_new = f
    alpha = 0.0
    dphi0 = 0.0
    for attempt in range(2):
        if attempt == 1:
            if count == 0:
                break  # steepest descent has failed already
            count = 0  # restart from steepest descent with an empty memory
            for i in range(d):
                p[i] = -gk[i]
        if count > 0:
            lbfgs_two_loop(p, state, area, m, newest, count, flat[3 * m + 2])
        dphi0 = dot(gk, p)
        if not dphi0 < 0.0 and count > 0:
            count = 0
            for i in range(d):
                p[i] = -gk[i]
            dphi0 = dot(gk, p)
        if count == 0:
            alpha = min(1.0 / np.sqrt(dot(p, p)), LBFGS_STPMAX)
        else:
            alpha = 1.0
        # line_search, with the first trial here: most iterations accept it.
        f_new, dphi = trial(fg, args, fd_step, counters, x, g, xk, p, alpha)
        ok = accepts_first_trial(kind, f_new, dphi, f, dphi0, alpha, c1, c2)
        if not ok:
            f_new, alpha, ok = search_from_trial(kind, fg, args, fd_step, counters, x, g, xk, p, f,
                                                 dphi0, alpha, f_new, dphi, c1, c2, LBFGS_XTOL,
                                                 LBFGS_STPMIN, LBFGS_STPMAX, maxls)
        if ok:
            break
    if not ok:
        flat[3 * m] = newest
        flat[3 * m + 1] = count
        _end_failed_search(x, g, xk, gk, f_new, counters)
        return f
    counters[STEP] += 1
    # The new pair goes to the next row of the ring (its rows are only written here).
    j = newest + 1 if newest < m - 1 else 0
    sy, yy, cross = lbfgs_new_pair(state, m, j, newest, alpha, p, g, gk)
    if sy > EPS * (-alpha * dphi0):
        flat[j] = 1.0 / sy  # rho
        flat[2 * m + j] = cross  # with the pair before it (unused if there is none)
        flat[3 * m + 2] = sy / yy  # gamma = s'y / y'y of the newest pair
        newest = j
        if count < m:
            count += 1
    elif count == m:
        # The skipped pair overwrote the oldest one: drop it from the memory.
        count -= 1
    flat[3 * m] = newest
    flat[3 * m + 1] = count
    return f_new


# ---------------------------------------------------------------------------------
# Gradient descent with a line search. state rows: 0: x_k; 1: g_k; 2: direction p.
@takes_functions("fg", "hess")
def gd_line_search_advance(fg, hess, args, x, f, g, state, hyper, controls, counters):
    """One steepest-descent iteration with a line search from the trial step ``lr``."""
    d = x.size
    xk = state[0]
    gk = state[1]
    p = state[2]
    for i in range(d):
        xk[i] = x[i]
        gk[i] = g[i]
        p[i] = -g[i]
    dphi0 = -dot(g, g)
    kind = int(controls[LINE_SEARCH])
    f_new, alpha, ok = line_search(kind, fg, args, controls[FD_STEP], counters, x, g, xk, p, f,
                                   dphi0, hyper[0], hyper[1], hyper[2], BFGS_XTOL, BFGS_STPMIN,
                                   BFGS_STPMAX, BFGS_MAXFEV)
    if not ok:
        _end_failed_search(x, g, xk, gk, f_new, counters)
        return f
    counters[STEP] += 1
    return f_new


# ---------------------------------------------------------------------------------
# The final approximation, as scipy returns it in ``res.hess_inv``.
def bfgs_inverse_hessian(state, hyper, step):
    """BFGS's :math:`H_k` after the last iteration, shape (d, d) (scipy's ``hess_inv``).

    :math:`H_0` if no iteration was taken: the identity, or ``hess_inv0``, as scipy's.
    """
    d = state.shape[1]
    if step == 0 and state[_h0_given_position(d)] == 0.0:
        return np.eye(d)
    return state[:d].copy()


def lbfgs_inverse_hessian(state, hyper, step):
    r"""The kept pairs as scipy's ``LbfgsInvHessProduct`` (L-BFGS-B's ``hess_inv``).

    Rows ``sk[i]``, ``yk[i]`` are the stored pairs :math:`(s, y)`, oldest first. As
    scipy's, the operator applies the two-loop recursion from :math:`H^0 = I` (the
    iterations themselves scale it by :math:`\gamma_k`); ``.todense()`` gives the matrix.
    """
    d = state.shape[1]
    m = int(hyper[2])
    area = state[2 * m + 3:].reshape(-1)
    newest = int(area[3 * m])
    count = int(area[3 * m + 1]) if step > 0 else 0
    rows = (newest - count + 1 + np.arange(count)) % m
    if count == 0:
        return LbfgsInvHessProduct(np.empty((0, d)), np.empty((0, d)))
    return LbfgsInvHessProduct(state[rows].copy(), state[m + rows].copy())


# ---------------------------------------------------------------------------------
def _check_wolfe_constants(v):
    c1 = np.asarray(v["c1"])
    c2 = np.asarray(v["c2"])
    if not np.all((c1 > 0) & (c1 < c2) & (c2 < 1)):
        raise ValueError(f"Invalid c1={v['c1']!r}, c2={v['c2']!r}: 'c1' and 'c2' do not satisfy "
                         "'0 < c1 < c2 < 1'")


def _validate_lbfgs(v):
    m = v["m"]
    if not (m >= 1 and m == np.round(m) and m <= 1000):
        raise ValueError(f"Invalid m: {float(m)!r}; expected an integer history size in [1, 1000]")
    maxls = np.asarray(v["maxls"], dtype=np.float64)
    bad = maxls[~((maxls >= 1) & (maxls == np.round(maxls)) & (maxls <= 10**6))]
    if bad.size:
        raise ValueError(f"Invalid maxls: {float(bad.flat[0])!r}; expected an integer >= 1 "
                         "(the evaluations a line search may take)")
    _check_wolfe_constants(v)


def _validate_gd(v):
    check_range("learning rate lr (the first trial step)", v["lr"], 0.0, low_inclusive=False)
    _check_wolfe_constants(v)


_WOLFE_DEFAULTS = {"c1": 1e-4, "c2": 0.9}


def _scipy_bfgs_maxiter(d):
    """scipy's BFGS default: 200 iterations per dimension."""
    return 200 * d


def _validate_bfgs(v):
    _check_wolfe_constants(v)
    check_range("xrtol", v["xrtol"], 0.0)


BFGS_RULE = Rule(
    name="bfgs",
    hyperparameters=("c1", "c2", "xrtol"),
    defaults={**_WOLFE_DEFAULTS, "xrtol": 0.0},
    validate=_validate_bfgs,
    n_state=_bfgs_n_state,
    init=_bfgs_init,
    matrix_options=("hess_inv0",),
    advance=bfgs_advance,
    has_lr=False,
    uses_line_search=True,
    default_line_search="strong-wolfe",
    inverse_hessian=bfgs_inverse_hessian,
    loop_defaults={"maxiter": _scipy_bfgs_maxiter},
)

LBFGS_RULE = Rule(
    name="lbfgs",
    # c1 first: hyper[0] is what a learning-rate schedule rewrites (lbfgs has none)
    hyperparameters=("c1", "c2", "m", "maxls"),
    defaults={"m": 10, "maxls": LBFGS_MAXLS, **_WOLFE_DEFAULTS},
    validate=_validate_lbfgs,
    n_state=_lbfgs_n_state,
    advance=lbfgs_advance,
    has_lr=False,
    scalar_only=("m",),
    uses_line_search=True,
    default_line_search="strong-wolfe",
    inverse_hessian=lbfgs_inverse_hessian,
)

# scipy's minimize(method="L-BFGS-B") without bounds: the same rule (and compiled loops)
# with L-BFGS-B's defaults: its line search's c1 = 1e-3, ftol = factr * eps = 1e7 * eps,
# maxiter and maxfun 15000, and ``tol`` setting both ftol and gtol.
# scipy's L-BFGS-B reports 0 for either convergence test and 1 for either limit, with the
# texts of the original Fortran code (scipy.optimize._lbfgsb_py); its 2 (abnormal: the
# line search failed) and 99 (callback) are fastopt's codes already
LBFGSB_SCIPY_STATUSES = {
    st.GTOL: (0, "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL"),
    st.FTOL: (0, "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH"),
    st.MAXITER: (1, "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"),
    st.MAXFUN: (1, "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT"),
}

LBFGSB_RULE = LBFGS_RULE._replace(
    defaults={**LBFGS_RULE.defaults, "c1": 1e-3},
    loop_defaults={"ftol": 1e7 * EPS, "maxiter": 15000, "maxfun": 15000},
    tol_sets=("ftol", "gtol"),
    scipy_statuses=LBFGSB_SCIPY_STATUSES,
)

GD_LINE_SEARCH_RULE = Rule(
    name="gd-line-search",
    hyperparameters=("lr", "c1", "c2"),
    defaults={"lr": 1.0, **_WOLFE_DEFAULTS},
    validate=_validate_gd,
    n_state=lambda d, v: 3,
    advance=gd_line_search_advance,
    uses_line_search=True,
    default_line_search="strong-wolfe",
)
