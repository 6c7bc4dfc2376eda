"""``fastopt.minimize``: scipy.optimize.minimize's interface on fastopt's compiled loop."""

import inspect
import time
import warnings

import numpy as np
from scipy.optimize import Bounds, OptimizeResult, OptimizeWarning

from . import _layout as L
from . import status as st
from ._setup import DEFAULT_METHOD, as_points, parse
from ._workspace import Workspace
from .loop import loop_for, make_loop, record_portable_run
from .objective import prepare, run_with_fallback

MAX_STEPS = np.iinfo(np.int64).max


def minimize(fun, x0, args=(), method=None, jac=None, hess=None, hessp=None, bounds=None,
             constraints=(), tol=None, callback=None, options=None):
    """Minimize a scalar function of one or more variables, as ``scipy.optimize.minimize``.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float``; ``x`` is a 1-D float64 array. A ``@numba.njit``
        function runs fastest; a plain Python/NumPy function is compiled with numba
        automatically, or runs at Python speed (with a warning) if it cannot be.
    x0 : array_like, shape (d,) or scalar
        Starting point.
    args : tuple
        Extra arguments passed to ``fun``, ``jac`` and ``hess``.
    method : str, optional
        ``"sgd"`` (``"gd"``), ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``,
        and the second-order rules (see ``fastopt.rules.RULES``). None (the default) is
        ``"adam"``, where scipy's is BFGS (or, with bounds or constraints, a method
        that obeys them: fastopt then raises a ``ValueError``).
    jac : callable, bool or None
        ``jac(x, *args) -> ndarray (d,)``; ``True`` if ``fun`` returns ``(f, g)``;
        None (or ``"3-point"``) for central finite differences evaluated inside the
        compiled loop, ``"2-point"`` for forward differences (``"cs"``, scipy's
        complex step, runs central differences: the loop is real).
    hess : callable, optional
        ``hess(x, *args) -> ndarray (d, d)``, for Newton-type methods.
    hessp, bounds, constraints
        Not supported; a warning is given if set (as scipy does for methods that
        cannot use them).
    tol : float, optional
        Sets ``gtol`` unless ``options`` sets it.
    callback : callable, optional
        ``callback(intermediate_result)`` (an ``OptimizeResult`` with ``x`` and
        ``fun``) or ``callback(xk)``, after every iteration; raise
        ``StopIteration`` to stop (status 99). With a callback the loop returns to
        Python every iteration.
    options : dict, optional
        The rule's hyperparameters by torch.optim's names (``lr``, ``momentum``,
        ``betas``, ...) and ``maxiter`` (10000; BFGS: 200 d, as scipy), ``gtol``
        (1e-5, infinity norm of the gradient), ``xtol`` (0 = off, infinity norm of
        the step), ``ftol`` (0 = off, relative change in f), ``schedule`` (a ``fastopt.schedules``
        schedule), ``clip_value``, ``clip_norm``, ``finite_diff_rel_step``, ``eps``
        (scipy's: with ``jac`` None, forward differences with this absolute step; for
        the rules without an ``eps`` of their own),
        ``history`` (True, or k to keep every k-th iterate), ``return_all`` (scipy's:
        ``res.allvecs``, every iterate), ``disp``, and for the rules with a line search
        or Newton steps ``maxfun`` (stop after more evaluations of f, status 8).
        Second-order rules take ``damping`` (newton, damped-newton), ``m`` (lbfgs;
        scipy's ``maxcor`` too), ``maxls`` (lbfgs), ``c1``, ``c2`` and ``line_search``
        (``"strong-wolfe"`` or ``"armijo"``; with ``"gd"`` it turns on a line search,
        ``lr`` being the first trial step).
        ``method="L-BFGS-B"`` is ``"lbfgs"`` with scipy's L-BFGS-B defaults (``c1``
        1e-3, ``ftol`` 2.2e-9, ``maxiter`` and ``maxfun`` 15000; ``tol`` sets ``ftol`` and
        ``gtol``); it takes no ``bounds``.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x, fun, jac, nit, nfev, njev, status, success, message`` (and ``nhev``
        for Newton rules; ``hess_inv`` for BFGS, an ndarray, and L-BFGS, a
        ``scipy.optimize.LbfgsInvHessProduct``, as scipy's; ``x_history``,
        ``f_history`` when ``history`` is set, and ``allvecs`` with ``return_all``).

    Examples
    --------
    >>> import fastopt
    >>> res = fastopt.minimize(lambda x: (x[0] - 3.0) ** 2, [0.0], method="adam",
    ...                        options={"lr": 0.1, "maxiter": 5000})
    >>> bool(res.success), round(float(res.x[0]), 4)
    (True, 3.0)
    """
    if hessp is not None:
        warnings.warn(f"Method {method or DEFAULT_METHOD} does not use Hessian-vector product "
                      "information (hessp).",
                      RuntimeWarning, stacklevel=2)
    bounded = bounds is not None and not _unbounded(bounds)
    if bounded and _names_lbfgsb(method):
        raise ValueError("bounds: fastopt's 'L-BFGS-B' is L-BFGS without bounds; for a "
                         "bounded problem use scipy.optimize.minimize(method='L-BFGS-B')")
    constrained = constraints is not None and not (isinstance(constraints, (list, tuple))
                                                   and len(constraints) == 0)
    if method is None and (bounded or constrained):  # scipy would pick a method that obeys them
        raise ValueError(f"{'constraints' if constrained else 'bounds'}: fastopt's methods are "
                         "unconstrained, and without a method scipy would pick "
                         f"{'SLSQP' if constrained else 'L-BFGS-B'}; use scipy.optimize.minimize "
                         "for a constrained or bounded problem")
    if bounded or constrained:
        warnings.warn(f"Method {method or DEFAULT_METHOD} cannot handle constraints nor bounds.",
                      RuntimeWarning, stacklevel=2)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    x0 = as_points(x0, "x0", batch=False)
    setup = parse(method, options, tol, x0.size, jac=jac)
    objective, args = prepare(fun, x0, args, setup.differences or jac, hess, setup.rule.needs_hess)
    work = run_with_fallback(
        objective, lambda obj, call: _minimize(x0, setup, obj, args, callback, call))
    return _result(work, setup)


def _names_lbfgsb(method):
    return isinstance(method, str) and method.lower() == "l-bfgs-b"


def _unbounded(bounds):
    """Whether scipy ``bounds`` (a ``Bounds`` or (min, max) pairs, None for no bound)
    leave every coordinate free."""
    if isinstance(bounds, Bounds):
        pairs = np.stack(np.broadcast_arrays(bounds.lb, bounds.ub), axis=-1)
    else:
        try:
            pairs = np.array([(-np.inf if lo is None else lo, np.inf if hi is None else hi)
                              for lo, hi in bounds], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise TypeError("bounds must be a scipy.optimize.Bounds or a sequence of "
                            f"(min, max) pairs; got {bounds!r}") from exc
    return bool(np.all(np.isneginf(pairs[..., 0])) and np.all(np.isposinf(pairs[..., 1])))


def _minimize(x0, setup, objective, args, callback, call):
    history = setup.history_every > 0
    loop, loop_args, native = loop_for(setup.rule, objective, args, history, x0.size)
    if native is None:
        return _run(x0, setup, loop, args, callback, call)[0]
    work, seconds = _run(x0, setup, loop, loop_args, callback, call)  # ``native`` owns its code
    record_portable_run(setup.rule, objective, seconds)
    if work.counters[0, L.RAISED]:
        # the objective raised inside the portable loop: raise it from where it did, else
        # rerun where it propagates. Evaluated as the specialized loop evaluates it: the
        # portable loop called the user's functions as compiled, where 1/0 raises; their
        # inlined copies give inf (and a line search steps back from it). The rerun's
        # iterations equal the portable run's up to the raise: the callback sees the
        # iterations after those it has seen.
        seen = int(work.counters[0, L.NIT])
        work.raise_where_it_raised(objective, args)
        loop = make_loop(setup.rule, objective, history, x0.size)
        call.again()
        work = _run(x0, setup, loop, args, callback, call, seen)[0]
    return work


def _run(x0, setup, loop, args, callback, call, seen=0):
    """Run the start from ``x0``: ``(work, seconds)``, the time it ran once compiled.
    ``callback`` is called from iteration ``seen + 1`` on."""
    work = Workspace(x0[None, :].copy(), setup)
    if not _is_compiled(loop):
        call(work.run_one, loop, args, 0)  # compiles (or loads): not run time; evaluates x0 only
    started = time.perf_counter()
    if callback is None:
        _run_in_chunks(work, loop, args)
    else:
        _run_with_callback(work, loop, args, callback, call, seen)
    return work, time.perf_counter() - started


# The first chunk of a start's iterations (in coordinate-iterations: 4096 iterations at d = 2,
# ~0.1 ms of Adam on Rosenbrock), and how long a chunk may grow to take.
FIRST_CHUNK_SIZE = 2**13
CHUNK_SECONDS = 0.1


def _run_in_chunks(work, loop, args):
    """Run start 0 to its end, in chunks between which Python can raise a Ctrl-C.

    Compiled code does not take KeyboardInterrupt; Python raises it when a chunk returns.
    The first chunk is short (most runs end in it: one call, as without chunks); each next
    one is up to 16 times longer, until one takes about ``CHUNK_SECONDS``: a long run costs
    a call (~3 µs) per 0.1 s. ``run_start`` resumes exactly where it stopped, so the chunks
    change no bit of the result.
    """
    counters = work.counters[0]
    steps = max(1, FIRST_CHUNK_SIZE // work.X.shape[1])
    started = time.perf_counter()
    while True:
        work.run_one(loop, args, steps)
        if counters[L.STATUS] != st.RUNNING:
            return
        now = time.perf_counter()
        steps = int(min(16 * steps, max(steps, steps * CHUNK_SECONDS / max(now - started, 1e-9))))
        started = now


def _is_compiled(loop):
    """Whether the loop's ``run_start`` has been compiled (for some argument types)."""
    return bool(getattr(loop[0], "overloads", None))


def _run_with_callback(work, loop, args, callback, call, seen):
    wants_result = _wants_intermediate_result(callback)
    counters = work.counters[0]
    while True:
        nit_before = counters[L.NIT]
        call(work.run_one, loop, args, 1, compiled=_is_compiled(loop))
        if counters[L.NIT] > max(nit_before, seen):
            x = work.X[0].copy()
            try:
                if wants_result:
                    callback(intermediate_result=OptimizeResult(x=x, fun=float(work.F[0])))
                else:
                    callback(x)
            except StopIteration:
                counters[L.STATUS] = st.CALLBACK
                return
        if counters[L.STATUS] != st.RUNNING:
            return


def _wants_intermediate_result(callback):
    try:
        params = inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return False
    return list(params) == ["intermediate_result"]


def _result(work, setup):
    counters = work.counters[0]
    code = int(counters[L.STATUS])
    status, message = st.scipy_status(code, setup.rule.scipy_statuses)
    result = OptimizeResult(
        x=work.X[0],
        fun=float(work.F[0]),
        jac=work.G[0],
        nit=int(counters[L.NIT]),
        nfev=int(counters[L.NFEV]),
        njev=int(counters[L.NJEV]),
        status=status,
        success=code in st.SUCCESS_CODES,
        message=message,
    )
    if setup.rule.needs_hess:
        result.nhev = int(counters[L.NHEV])
    if setup.rule.inverse_hessian is not None:
        result.hess_inv = setup.rule.inverse_hessian(work.state[0], work.hyper[0],
                                                     int(counters[L.STEP]))
    if setup.history_every:
        result.x_history, result.f_history = work.history_rows(0)
        if setup.return_all:
            result.allvecs = list(result.x_history)
    if setup.disp:  # as scipy: the message printed, or for a failure given as a warning
        if result.success:
            print(result.message)
        else:
            warnings.warn(result.message, OptimizeWarning, stacklevel=3)
        print(f"         Current function value: {result.fun:.6g}\n"
              f"         Iterations: {result.nit}\n         Function evaluations: {result.nfev}")
    return result
