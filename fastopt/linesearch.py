r"""Line searches along a descent direction, evaluating the objective in place.

Both searches look for a step :math:`\alpha > 0` along ``p`` from ``x0`` for
:math:`\phi(\alpha) = f(x_0 + \alpha p)`, with :math:`\phi'(0) = g_0^T p < 0`:

* :func:`wolfe_search` -- the Moré--Thuente search (MINPACK-2 ``dcsrch`` /
  ``dcstep``, the search behind scipy's ``line_search_wolfe1`` and L-BFGS-B),
  for the strong Wolfe conditions

  .. math::

      \phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0), \qquad
      |\phi'(\alpha)| \le c_2 |\phi'(0)|.

* :func:`armijo_search` -- backtracking for the sufficient-decrease (Armijo)
  condition alone, each trial at the minimizer of a quadratic (then cubic)
  interpolant, kept within [0.1, 0.5] of the previous trial.

Each evaluates ``f, g = fg(x)`` with ``x = x0 + alpha * p`` written into ``x``
(and the gradient into ``g``) and returns ``(f, alpha, ok)``; the accepted point
is always the last one evaluated, so ``x`` and ``g`` hold it on return. When
``ok`` is False they hold the last trial and the caller restores its start. A
trial with a non-finite value or slope is not accepted: the search steps back
halfway towards the best step so far (the usual remedy; MINPACK would stop).

Most quasi-Newton iterations accept the first trial step, so the rules evaluate
it themselves (:func:`trial`), test it with :func:`accepts_first_trial` and only
then call :func:`search_from_trial`, which goes on from that evaluated trial
exactly as the whole search would (:func:`line_search` is the three in one):
a search is a call of its own, and skipping it saved ~35 ns per L-BFGS iteration
at d = 10.

They take the objective as an argument, so they are
:func:`fastopt._jit.takes_functions`: plain Python when called from Python
(fastopt's Python fallback), and from numba code a copy compiled per objective,
which the loops' disk cache can hold. Only :func:`trial` is inlined into its caller;
the searches are compiled as functions of their own (inlining them too made each
loop's compile 3-18 s longer, for ~10 ns per L-BFGS iteration). :func:`dcstep`,
:func:`armijo_trial_step` and :func:`accepts_first_trial` take no function and are
cached kernels.
"""

import numpy as np
from numba.extending import register_jitable

from ._jit import kernel, takes_functions
from ._layout import RAISED
from .linalg import dot

NONE, STRONG_WOLFE, ARMIJO = 0, 1, 2  # controls[LINE_SEARCH]

# Moré-Thuente constants (MINPACK-2 dcsrch)
_P5, _P66, _XTRAPL, _XTRAPU = 0.5, 0.66, 1.1, 4.0


def _inlined_jitable(fn):
    """Inlined into its numba caller (a fresh decorator per function: ``register_jitable``
    pops ``inline`` from the options it is given)."""
    return register_jitable(error_model="numpy", nogil=True, inline="always")(fn)


@kernel
def dcstep(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step of the Moré--Thuente search (MINPACK-2 ``dcstep``).

    ``stx`` is the best step so far (value ``fx``, slope ``dx``), ``sty`` the other
    end of the interval of uncertainty, ``stp`` the trial just evaluated. Returns
    the updated ``(stx, fx, dx, sty, fy, dy, stp, brackt)`` where the new ``stp`` is
    the next trial: a cubic or quadratic interpolant's minimizer, safeguarded
    (Moré & Thuente 1994, section 4, cases 1-4).
    """
    sgnd = np.sign(dp) * np.sign(dx)
    if fp > fx:
        # Case 1: a higher value. The minimum is bracketed; the cubic step if it is
        # closer to stx than the quadratic one, else their midpoint.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * np.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + (p / q) * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        if abs(stpc - stx) <= abs(stpq - stx):
            stpf = stpc
        else:
            stpf = stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0.0:
        # Case 2: lower value, slopes of opposite sign: bracketed; the step farther
        # from stp of the cubic and the secant.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * np.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + (p / q) * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if abs(stpc - stp) > abs(stpq - stp):
            stpf = stpc
        else:
            stpf = stpq
        brackt = True
    elif abs(dp) < abs(dx):
        # Case 3: lower value, same-sign slope decreasing in magnitude. The cubic
        # step only if it lies beyond stp (towards the minimum), else an end.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * np.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0.0 and gamma != 0.0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:
            if abs(stpc - stp) < abs(stpq - stp):
                stpf = stpc
            else:
                stpf = stpq
            if stp > stx:
                stpf = min(stp + _P66 * (sty - stp), stpf)
            else:
                stpf = max(stp + _P66 * (sty - stp), stpf)
        else:
            if abs(stpc - stp) > abs(stpq - stp):
                stpf = stpc
            else:
                stpf = stpq
            stpf = min(max(stpf, stpmin), stpmax)
    else:
        # Case 4: lower value, slope not decreasing in magnitude: the cubic through
        # stp and sty if bracketed, else the end of the allowed range.
        if brackt:
            theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
            s = max(abs(theta), abs(dy), abs(dp))
            gamma = s * np.sqrt((theta / s) ** 2 - (dy / s) * (dp / s))
            if stp > sty:
                gamma = -gamma
            p = (gamma - dp) + theta
            q = ((gamma - dp) + gamma) + dy
            stpf = stp + (p / q) * (sty - stp)
        elif stp > stx:
            stpf = stpmax
        else:
            stpf = stpmin
    # Update the interval of uncertainty.
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0.0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


@kernel
def armijo_trial_step(stp, f0, dphi0, f1, stp_prev, f_prev):
    """Next backtracking trial after ``stp`` (value ``f1``) failed the Armijo condition.

    The minimizer of the quadratic through ``phi(0)``, ``phi'(0)`` and ``phi(stp)``
    on the first backtrack (``stp_prev <= 0``), else of the cubic that also passes
    through the previous trial ``(stp_prev, f_prev)`` (Nocedal & Wright, 3.5); kept
    in ``[0.1 stp, 0.5 stp]``, and ``0.5 stp`` when the value is not finite.
    """
    lo = 0.1 * stp
    hi = 0.5 * stp
    if not (f1 - f1 == 0.0):
        return hi
    if stp_prev <= 0.0:
        new = -dphi0 * stp * stp / (2.0 * (f1 - f0 - dphi0 * stp))
    else:
        r1 = f1 - f0 - dphi0 * stp
        r0 = f_prev - f0 - dphi0 * stp_prev
        denom = stp * stp * stp_prev * stp_prev * (stp - stp_prev)
        a = (stp_prev * stp_prev * r1 - stp * stp * r0) / denom
        b = (-stp_prev * stp_prev * stp_prev * r1 + stp * stp * stp * r0) / denom
        if a == 0.0:
            new = -dphi0 / (2.0 * b)
        else:
            disc = b * b - 3.0 * a * dphi0
            new = (-b + np.sqrt(disc)) / (3.0 * a) if disc >= 0.0 else hi
    if not (new >= lo):  # also NaN
        return lo if new < lo else hi
    return min(new, hi)


@_inlined_jitable
def trial(fg, args, fd_step, counters, x, g, x0, p, stp):
    """Evaluate at ``x = x0 + stp * p`` (into ``x`` and ``g``); return ``(f, phi'(stp))``.

    Once the objective has raised (``counters[RAISED]``: only a portable loop's call by
    address counts that), ``(nan, nan)`` without moving ``x``: the search fails, and
    the loop stops with ``x`` where the objective raised, to raise it there again.
    """
    if counters[RAISED] != 0:
        return np.nan, np.nan
    for i in range(x.size):
        x[i] = x0[i] + stp * p[i]
    f = fg(x, g, args, fd_step, counters)
    return f, dot(g, p)


@kernel
def accepts_first_trial(kind, f, dphi, f0, dphi0, stp, c1, c2):
    """True if the search ``kind`` ends at once at its first trial ``stp`` (value ``f``,
    slope ``dphi``), returning ``(f, stp, True)``; see :func:`search_from_trial`."""
    if kind == STRONG_WOLFE:
        return (f - f == 0.0 and dphi - dphi == 0.0 and f <= f0 + stp * (c1 * dphi0)
                and abs(dphi) <= c2 * -dphi0)
    if kind == ARMIJO:
        return f <= f0 + c1 * stp * dphi0 and f < f0
    return True


@takes_functions("fg")
def wolfe_search(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, c1, c2, xtol,
                 stpmin, stpmax, maxfev):
    r"""Moré--Thuente line search for the strong Wolfe conditions; ``(f, alpha, ok)``.

    Parameters
    ----------
    fg : compiled ``fg(x, g, args, fd_step, counters) -> f``
    args, fd_step : passed to ``fg``
    counters : int64 ndarray (``fastopt._layout.N_COUNTERS``,)
        The start's counters: ``fg`` counts evaluations there, and a raise in a portable
        loop is read from ``counters[RAISED]`` (see :func:`trial`).
    x, g : ndarray (d,)
        Receive every trial point and its gradient; on return the last one.
    x0, p : ndarray (d,)
        Start and direction; :math:`\phi'(0) =` ``dphi0`` must be negative.
    f0 : float
        :math:`\phi(0)`.
    stp : float
        First trial step, in ``[stpmin, stpmax]``.
    c1, c2 : float
        Sufficient-decrease and curvature constants, ``0 < c1 < c2 < 1``.
    xtol : float
        The search ends (with a warning) once the interval of uncertainty is
        narrower than ``xtol`` relative to its upper end (scipy's BFGS: 1e-14;
        L-BFGS-B: 0.1).
    stpmin, stpmax : float
        Bounds on the step.
    maxfev : int
        At most this many evaluations (at least 1).

    Returns
    -------
    f : float
        Value at the last trial (``x``).
    alpha : float
        Its step.
    ok : bool
        True if the strong Wolfe conditions hold there, or if MINPACK stopped with
        a warning (rounding errors, xtol, a bound on the step) at a point that
        still satisfies the sufficient-decrease condition and has ``f < f0``.
    """
    f, dphi = trial(fg, args, fd_step, counters, x, g, x0, p, stp)
    return _wolfe_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, dphi, c1, c2,
                       xtol, stpmin, stpmax, maxfev)


@takes_functions("fg")
def _wolfe_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, dphi, c1, c2, xtol,
                stpmin, stpmax, maxfev):
    """:func:`wolfe_search` from its first trial ``stp``, evaluated already (``f``, ``dphi``)."""
    gtest = c1 * dphi0
    brackt = False
    stage = 1
    width = stpmax - stpmin
    width1 = width / _P5
    stx, fx, gx = 0.0, f0, dphi0
    sty, fy, gy = 0.0, f0, dphi0
    stmin = 0.0
    stmax = stp + _XTRAPU * stp
    stcap = np.inf  # the smallest step found with a non-finite value
    for n in range(1, maxfev + 1):  # n evaluations so far; (f, dphi) at stp is the last
        if not (f - f == 0.0 and dphi - dphi == 0.0):
            # Overflow or NaN: step back halfway towards the best step (not MINPACK).
            stcap = min(stcap, stp)
            stp = stx + _P5 * (stp - stx)
            if stp <= stpmin or stp == stx:
                return f, stp, False
        else:
            ftest = f0 + stp * gtest
            if stage == 1 and f <= ftest and dphi >= 0.0:
                stage = 2
            warning = False
            if brackt and (stp <= stmin or stp >= stmax):
                warning = True  # rounding errors prevent progress
            if brackt and stmax - stmin <= xtol * stmax:
                warning = True  # the interval is below xtol
            if stp == stpmax and f <= ftest and dphi <= gtest:
                warning = True
            if stp == stpmin and (f > ftest or dphi >= gtest):
                warning = True
            if f <= ftest and abs(dphi) <= c2 * -dphi0:
                return f, stp, True
            if warning:  # accepted if f still decreased sufficiently (and at all)
                return f, stp, f <= ftest and f < f0
            # While no step with psi <= 0 and phi' >= 0 is known, work with the modified
            # function psi(a) = phi(a) - phi(0) - c1 a phi'(0) (shift = c1 phi'(0)).
            shift = gtest if (stage == 1 and f <= fx and f > ftest) else 0.0
            stx, fxm, gxm, sty, fym, gym, stp, brackt = dcstep(
                stx, fx - stx * shift, gx - shift, sty, fy - sty * shift, gy - shift, stp,
                f - stp * shift, dphi - shift, brackt, stmin, stmax)
            fx = fxm + stx * shift
            fy = fym + sty * shift
            gx = gxm + shift
            gy = gym + shift
            if brackt:
                if abs(sty - stx) >= _P66 * width1:
                    stp = stx + _P5 * (sty - stx)
                width1 = width
                width = abs(sty - stx)
                stmin = min(stx, sty)
                stmax = max(stx, sty)
            else:
                stmin = stp + _XTRAPL * (stp - stx)
                stmax = stp + _XTRAPU * (stp - stx)
            stp = min(max(stp, stpmin), stpmax)
            if stp >= stcap:
                stp = stx + _P5 * (stcap - stx)
            if brackt and (stp <= stmin or stp >= stmax or stmax - stmin <= xtol * stmax):
                stp = stx
            if not (stp - stp == 0.0):
                return f, stp, False
        if n < maxfev:
            f, dphi = trial(fg, args, fd_step, counters, x, g, x0, p, stp)
    return f, stp, False


@takes_functions("fg")
def armijo_search(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, c1, maxfev):
    r"""Backtracking line search for :math:`\phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0)`.

    Arguments as for :func:`wolfe_search`. Returns ``(f, alpha, ok)``; a step is
    accepted only if f also decreased (``f < f0``: the condition alone holds at
    steps too small to move ``x``). It fails after ``maxfev`` evaluations or once
    the step no longer moves ``x``.
    """
    f, _dphi = trial(fg, args, fd_step, counters, x, g, x0, p, stp)
    return _armijo_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, c1, maxfev)


@takes_functions("fg")
def _armijo_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, c1, maxfev):
    """:func:`armijo_search` from its first trial ``stp``, evaluated already (value ``f``)."""
    stp_prev = 0.0
    f_prev = f0
    for n in range(1, maxfev + 1):  # n evaluations so far; f at stp is the last
        if f <= f0 + c1 * stp * dphi0 and f < f0:  # False for NaN
            return f, stp, True
        moved = False
        for i in range(x.size):
            if x[i] != x0[i]:
                moved = True
                break
        if not moved:
            return f, stp, False
        new = armijo_trial_step(stp, f0, dphi0, f, stp_prev, f_prev)
        stp_prev = stp
        f_prev = f
        stp = new
        if n < maxfev:
            f, _dphi = trial(fg, args, fd_step, counters, x, g, x0, p, stp)
    return f, stp, False


@takes_functions("fg")
def search_from_trial(kind, fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, dphi,
                      c1, c2, xtol, stpmin, stpmax, maxfev):
    """The search ``kind`` (see :func:`line_search`) from its first trial, evaluated already.

    ``x``, ``g``, ``f`` and ``dphi`` hold :func:`trial` at ``stp``. Same result, and
    the same evaluations, as :func:`line_search` from ``stp``.
    """
    if kind == STRONG_WOLFE:
        return _wolfe_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, dphi, c1,
                           c2, xtol, stpmin, stpmax, maxfev)
    if kind == ARMIJO:
        return _armijo_from(fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f, c1,
                            maxfev)
    return f, stp, True


@takes_functions("fg")
def line_search(kind, fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, c1, c2, xtol,
                stpmin, stpmax, maxfev):
    """:func:`wolfe_search` (``kind`` 1) or :func:`armijo_search` (``kind`` 2).

    ``kind`` 0 takes the step ``stp`` as it is (one evaluation, always ``ok``). The
    rules call its three parts themselves: :func:`trial` at ``stp``, then
    :func:`search_from_trial` unless :func:`accepts_first_trial`.
    """
    f, dphi = trial(fg, args, fd_step, counters, x, g, x0, p, stp)
    if accepts_first_trial(kind, f, dphi, f0, dphi0, stp, c1, c2):
        return f, stp, True
    return search_from_trial(kind, fg, args, fd_step, counters, x, g, x0, p, f0, dphi0, stp, f,
                             dphi, c1, c2, xtol, stpmin, stpmax, maxfev)
