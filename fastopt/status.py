"""Termination status codes, as integers with a message table (as scipy.optimize has).

Codes 0-3 mean what they mean in scipy's BFGS: 0 success, 1 iteration limit,
2 precision loss / line-search failure, 3 NaN. 99 is scipy's "callback raised
StopIteration".
"""

from enum import IntEnum

import numpy as np


class Status(IntEnum):
    """Why a start stopped. ``success`` is true for GTOL, XTOL and FTOL."""

    NOT_STARTED = -2
    RUNNING = -1
    GTOL = 0
    MAXITER = 1
    LINE_SEARCH_FAILED = 2
    DIVERGED = 3
    XTOL = 4
    FTOL = 5
    NOT_POSITIVE_DEFINITE = 6
    SINGULAR = 7
    MAXFUN = 8
    CALLBACK = 99


# Plain ints for compiled code (numba freezes module globals as constants).
NOT_STARTED = int(Status.NOT_STARTED)
RUNNING = int(Status.RUNNING)
GTOL = int(Status.GTOL)
MAXITER = int(Status.MAXITER)
LINE_SEARCH_FAILED = int(Status.LINE_SEARCH_FAILED)
DIVERGED = int(Status.DIVERGED)
XTOL = int(Status.XTOL)
FTOL = int(Status.FTOL)
NOT_POSITIVE_DEFINITE = int(Status.NOT_POSITIVE_DEFINITE)
SINGULAR = int(Status.SINGULAR)
MAXFUN = int(Status.MAXFUN)
CALLBACK = int(Status.CALLBACK)

MESSAGES = {
    Status.NOT_STARTED: "Not started.",
    Status.RUNNING: "Stopped before convergence (still running).",
    Status.GTOL: "Optimization terminated successfully.",
    Status.MAXITER: "Maximum number of iterations has been exceeded.",
    Status.LINE_SEARCH_FAILED: "Desired error not necessarily achieved due to precision loss.",
    Status.DIVERGED: (
        "NaN result encountered: the function value, gradient or step became "
        "non-finite (diverged); x is the last finite point."
    ),
    Status.XTOL: "Optimization terminated successfully: the step is below xtol.",
    Status.FTOL: "Optimization terminated successfully: the relative change in f is below ftol.",
    Status.NOT_POSITIVE_DEFINITE: (
        "The Hessian is not positive definite and no damping was given."
    ),
    Status.SINGULAR: "Singular matrix encountered: the Newton system has no solution.",
    Status.MAXFUN: "Maximum number of function evaluations has been exceeded.",
    Status.CALLBACK: "`callback` raised `StopIteration`.",
}

SUCCESS_CODES = (GTOL, XTOL, FTOL)


def message(code):
    """Return the message for a status code."""
    return MESSAGES[Status(int(code))]


def scipy_status(code, scipy_statuses=None):
    """``(status, message)`` as ``minimize`` reports ``code``: the method's own scipy code
    and text where ``scipy_statuses`` (a rule's) has one, else ``code`` and its message."""
    if scipy_statuses is not None and int(code) in scipy_statuses:
        return scipy_statuses[int(code)]
    return int(code), message(code)


def is_success(codes):
    """Elementwise: did the start converge (gtol, xtol or ftol)?"""
    return np.isin(np.asarray(codes), SUCCESS_CODES)
