r"""Newton's method: fixed (regularized) damping and Levenberg--Marquardt-style damping.

Both evaluate the Hessian :math:`H_k` of ``hess(x, *args)`` (or, with
``hess=None``, central differences of the gradient) once per iteration and solve
the d x d system with an in-loop Cholesky (:func:`fastopt.linalg.ldl_factor`).

``"newton"``, option ``damping`` :math:`\alpha \ge 0` (default 0, may differ per start)
    .. math::

        x_{k+1} = x_k - p_k, \qquad (H_k + \alpha I)\, p_k = g_k.

    In 1-D this is exactly :math:`x - g / h` (:math:`\alpha = 0`) and
    :math:`x - g / (h + \alpha)`. With :math:`\alpha = 0` a Hessian that is not
    positive definite stops the start with status 6 (``NOT_POSITIVE_DEFINITE``;
    status 7, ``SINGULAR``, if it is singular): the step would head for a saddle
    or a maximum. With :math:`\alpha > 0` the step is taken as the formula says
    even where :math:`H_k + \alpha I` is indefinite (Gaussian elimination with
    pivoting); only a singular :math:`H_k + \alpha I` stops the start (status 7).
    No line search: use ``"damped-newton"`` for a safeguarded method. scipy has no
    undamped Newton; ``minimize(method="Newton-CG")`` adds a line search.

``"damped-newton"``, option ``damping`` :math:`\mu_0 \ge 0` (the initial damping, default 0)
    The same step with a damping :math:`\mu_k` adapted as in Levenberg--Marquardt
    (Nielsen's rule): a trial :math:`x_k - p` with :math:`(H_k + \mu I) p = g_k` is
    accepted if :math:`H_k + \mu I` is positive definite and :math:`f` decreases;
    then :math:`\mu \leftarrow \mu \max(1/3, 1 - (2\varrho - 1)^3)` with the gain ratio

    .. math::

        \varrho = \frac{f(x_k) - f(x_k - p)}{g_k^T p - \tfrac12 p^T H_k p}.

    Otherwise :math:`\mu \leftarrow \max(\nu \mu, 10^{-3} \max_i |H_{ii}|)`,
    :math:`\nu \leftarrow 2 \nu` (:math:`\nu = 2` at each iteration's start), and
    the trial is repeated (a new factorization, no new Hessian). Every accepted
    step lowers f and :math:`H_k + \mu I` is positive definite, so from a generic
    start it reaches a minimum, not a saddle or a maximum. Near a minimum
    :math:`\mu` decays to 0 (it is set to 0 below :math:`\epsilon_{mach} \max_i
    |H_{ii}|`) and the method becomes Newton's, quadratically convergent. After 64
    rejected trials (or once the trial no longer moves x) the start stops with
    status 2 at its last point. scipy: ``minimize(method="trust-exact")`` is the
    trust-region counterpart.
"""

import numpy as np

from .. import status as st
from .._jit import kernel, takes_functions
from .._layout import FD_STEP, RAISED, STATUS, STEP
from ..linalg import (
    EPS,
    FACTOR_OK,
    dot,
    ldl_factor,
    ldl_solve,
    lu_solve,
    symmetrize,
)
from ._spec import Rule, check_range

MAX_TRIALS = 64
MU_FLOOR = 1e-3  # relative to max |H_ii|: the first nonzero damping


@kernel
def finite_matrix(A):
    acc = 0.0
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            acc += A[i, j] - A[i, j]
    return acc == 0.0


@kernel
def max_abs_diagonal(A):
    m = 0.0
    for i in range(A.shape[0]):
        a = abs(A[i, i])
        if a > m:
            m = a
    return m


@kernel
def regularized_newton_step(H, g, p, diag, alpha):
    """Solve ``(H + alpha I) p = g`` in place of ``H``; return a status code.

    ``st.RUNNING`` on success; for ``alpha == 0`` and ``H`` not positive definite
    ``st.NOT_POSITIVE_DEFINITE`` (``st.SINGULAR`` if ``H`` is singular); for
    ``alpha > 0`` the indefinite system is solved by pivoted elimination and only a
    singular one fails (``st.SINGULAR``). ``diag`` (d,) is work space.
    """
    n = H.shape[0]
    symmetrize(H)
    for i in range(n):
        H[i, i] += alpha
        diag[i] = H[i, i]
    if ldl_factor(H) == FACTOR_OK:
        ldl_solve(H, g, p)
        return st.RUNNING
    # Rebuild H + alpha I from its untouched upper triangle and the saved diagonal.
    for i in range(n):
        H[i, i] = diag[i]
        for j in range(i):
            H[i, j] = H[j, i]
    solvable = lu_solve(H, g, p)
    if not solvable:
        return st.SINGULAR
    if alpha == 0.0:
        return st.NOT_POSITIVE_DEFINITE
    return st.RUNNING


# ---------------------------------------------------------------------------------
# Newton. state rows: [0, d) Hessian (then its factor); d: p; d+1: work.
@takes_functions("fg", "hess")
def newton_advance(fg, hess, args, x, f, g, state, hyper, controls, counters):
    """One (regularized) Newton iteration; callable from ``@njit`` code."""
    d = x.size
    H = state[0:d]
    p = state[d]
    work = state[d + 1]
    fd_step = controls[FD_STEP]
    hess(x, H, args, fd_step, counters)
    if not finite_matrix(H):
        counters[STATUS] = st.DIVERGED
        return f
    code = regularized_newton_step(H, g, p, work, hyper[0])
    if code != st.RUNNING:
        counters[STATUS] = code
        return f
    for i in range(d):
        x[i] = x[i] - p[i]
    counters[STEP] += 1
    return fg(x, g, args, fd_step, counters)


# ---------------------------------------------------------------------------------
# Damped Newton. state rows: [0, d) Hessian; [d, 2d) factor of H + mu I; 2d: p;
# 2d+1: x_k; 2d+2: g_k; 2d+3: scalars [mu] (d >= 1 columns).
@takes_functions("fg", "hess")
def damped_newton_advance(fg, hess, args, x, f, g, state, hyper, controls, counters):
    """One Levenberg--Marquardt-damped Newton iteration; callable from ``@njit`` code."""
    d = x.size
    H = state[0:d]
    M = state[d:2 * d]
    p = state[2 * d]
    xk = state[2 * d + 1]
    gk = state[2 * d + 2]
    scalars = state[2 * d + 3]
    fd_step = controls[FD_STEP]
    if counters[STEP] == 0:
        scalars[0] = hyper[0]
    mu = scalars[0]
    hess(x, H, args, fd_step, counters)
    if not finite_matrix(H):
        counters[STATUS] = st.DIVERGED
        return f
    symmetrize(H)
    scale = max_abs_diagonal(H)
    floor = MU_FLOOR * scale if scale > 0.0 else MU_FLOOR
    for i in range(d):
        xk[i] = x[i]
        gk[i] = g[i]
    nu = 2.0
    for _ in range(MAX_TRIALS):
        for i in range(d):
            for j in range(d):
                M[i, j] = H[i, j]
            M[i, i] += mu
        if ldl_factor(M) == FACTOR_OK:
            ldl_solve(M, gk, p)
            moved = False
            for i in range(d):
                xi = xk[i] - p[i]
                moved = moved or xi != xk[i]
                x[i] = xi
            if not moved:
                break
            f_new = fg(x, g, args, fd_step, counters)
            if counters[RAISED] != 0:  # the portable loop's fg raised: x stays where it did
                return f_new
            if f_new < f:  # False for NaN
                # predicted decrease g'p - p'Hp/2 = (g'p + mu p'p) / 2 > 0
                predicted = 0.5 * (dot(gk, p) + mu * dot(p, p))
                ratio = (f - f_new) / predicted
                t = 2.0 * ratio - 1.0
                mu = mu * max(1.0 / 3.0, 1.0 - t * t * t)
                if mu < EPS * scale:
                    mu = 0.0
                scalars[0] = mu
                counters[STEP] += 1
                return f_new
        mu = max(nu * mu, floor)
        nu = 2.0 * nu
    for i in range(d):
        x[i] = xk[i]
        g[i] = gk[i]
    scalars[0] = mu
    counters[STATUS] = st.LINE_SEARCH_FAILED
    return f


def _validate_damping(v):
    check_range("damping", v["damping"], 0.0)
    if not np.all(np.isfinite(v["damping"])):
        raise ValueError(f"Invalid damping: {v['damping']!r}; expected a finite value >= 0")


NEWTON_RULE = Rule(
    name="newton",
    hyperparameters=("damping",),
    defaults={"damping": 0.0},
    validate=_validate_damping,
    n_state=lambda d, v: d + 2,
    advance=newton_advance,
    has_lr=False,
    needs_hess=True,
)

DAMPED_NEWTON_RULE = Rule(
    name="damped-newton",
    hyperparameters=("damping",),
    defaults={"damping": 0.0},
    validate=_validate_damping,
    n_state=lambda d, v: 2 * d + 4,
    advance=damped_newton_advance,
    has_lr=False,
    needs_hess=True,
)

__all__ = ["NEWTON_RULE", "DAMPED_NEWTON_RULE", "newton_advance", "damped_newton_advance",
           "regularized_newton_step"]
