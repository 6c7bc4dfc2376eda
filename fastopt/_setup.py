"""Turn ``method`` and ``options`` into the arrays the compiled loop reads.

Shared by :func:`fastopt.minimize` (one start) and :func:`fastopt.minimize_batch`
(N starts, where every numeric option may be an array of shape ``(N,)``).
"""

import difflib
import warnings
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeWarning

from . import _layout as L
from .objective import FORWARD
from .rules import RULES, Rule
from .schedules import as_schedule

LOOP_DEFAULTS = {"maxiter": 10_000, "gtol": 1e-5, "xtol": 0.0, "ftol": 0.0,
                 "clip_value": 0.0, "clip_norm": 0.0, "maxfun": np.inf}
HISTORY_MAX_BYTES = 1 << 30
OTHER_OPTIONS = ("schedule", "finite_diff_rel_step", "eps", "history", "history_max_bytes", "disp",
                 "line_search", "return_all", "norm", "workers")
# scipy's option names for a hyperparameter fastopt names as torch/optax do
OPTION_ALIASES = {"maxcor": "m"}  # L-BFGS-B's history size
LINE_SEARCHES = {None: 0, "none": 0, "strong-wolfe": 1, "wolfe": 1, "armijo": 2}


class Setup(NamedTuple):
    rule: Rule
    hyper: np.ndarray  # (N, n_hyper)
    controls: np.ndarray  # (N, N_CONTROLS)
    n_state: int
    history_every: int  # 0 = no history
    history_rows: int
    disp: bool
    return_all: bool  # scipy's res.allvecs (every iterate, x0 first)
    differences: str = None  # the jac to use for jac=None: '2-point' with scipy's eps
    matrices: dict = {}  # the rule's matrix options given (BFGS: hess_inv0), (d, d) each


DEFAULT_METHOD = "adam"  # minimize's and minimize_batch's ``method``

# scipy methods with no fastopt rule, and what to use instead
_SCIPY_ONLY = {
    "nelder-mead": "it is derivative-free; use scipy.optimize.minimize for it",
    "powell": "it is derivative-free; use scipy.optimize.minimize for it",
    "cobyla": "it handles constraints; use scipy.optimize.minimize for it",
    "cobyqa": "it handles constraints; use scipy.optimize.minimize for it",
    "slsqp": "it handles constraints; use scipy.optimize.minimize for it",
    "trust-constr": "it handles constraints; use scipy.optimize.minimize for it",
    "tnc": "it handles bounds; use scipy.optimize.minimize for it, or 'lbfgs' without bounds",
    "cg": "the nearest are 'lbfgs' and 'bfgs'",
    "newton-cg": "the nearest are 'newton' and 'damped-newton' (with hess) and 'lbfgs'",
    "dogleg": "the nearest is 'damped-newton' (regularized Newton, with hess)",
    "trust-ncg": "the nearest is 'damped-newton' (regularized Newton, with hess)",
    "trust-krylov": "the nearest is 'damped-newton' (regularized Newton, with hess)",
    "trust-exact": "the nearest is 'damped-newton' (regularized Newton, with hess)",
}


def get_rule(method):
    if method is None:  # scipy's "pick the default"
        method = DEFAULT_METHOD
    if not isinstance(method, str):
        raise TypeError(f"method must be a string; got {type(method).__name__}")
    key = method.lower()
    if key not in RULES:
        if key in _SCIPY_ONLY:
            hint = f" (a scipy method fastopt does not have: {_SCIPY_ONLY[key]})"
        else:
            close = difflib.get_close_matches(key.strip().replace("_", "-"), RULES, n=1,
                                              cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"Unknown method {method!r}{hint}; expected one of {sorted(RULES)}")
    return RULES[key]


def as_points(x0, name, batch):
    """``x0`` as a fresh C-contiguous float64 array: shape (d,) or, for a batch, (N, d)."""
    try:
        given = np.asarray(x0)
        if given.dtype.kind not in "biuf":  # strings, objects, complex
            raise TypeError
        arr = np.array(given, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be an array of real numbers; got {type(x0).__name__}"
        ) from exc
    if batch:
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{name} must have shape (N, d) with N, d >= 1; got shape {arr.shape}")
    else:
        if arr.ndim > 1:
            raise ValueError(f"'{name}' must only have one dimension (a scalar or a 1-D "
                             f"array); got shape {arr.shape}")
        arr = arr.reshape(-1)
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; it contains NaN or inf")
    return arr


def _numeric(name, value, n_starts):
    """A scalar option, or (batch only) one value per start, as a float array."""
    arr = np.asarray(value)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"Option {name!r} must be a real number; got {value!r}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        return arr
    if n_starts is not None and arr.shape == (n_starts,):
        return arr
    expected = "a scalar" if n_starts is None else f"a scalar or an array of shape ({n_starts},)"
    raise ValueError(f"Option {name!r} must be {expected}; got shape {arr.shape}")


_PARSED = {}


def parse(method, options, tol, d, n_starts=None, jac=None):
    """Validate ``options`` for ``method``; ``n_starts`` is None for a single start.

    Single-start setups with hashable options are memoized (a warm ``minimize`` call
    should cost microseconds); their arrays are never written to. Unknown options
    are warned about on every call, as scipy does.
    """
    key = None
    if n_starts is None and (options is None or isinstance(options, dict)):
        try:
            # types too: 1 == 1.0 == True, but not every option takes each of them
            key = (method, type(tol), tol, d, jac is None or jac is False,
                   tuple([(k, type(v), v) for k, v in sorted((options or {}).items())]))
            hash(key)
        except TypeError:
            key = None
    if key is not None and key in _PARSED:
        setup, unknown = _PARSED[key]
    else:
        setup, unknown = _parse(method, options, tol, d, n_starts, jac)
        if key is not None:
            if len(_PARSED) > 1024:
                _PARSED.clear()
            _PARSED[key] = (setup, unknown)
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(unknown)}", OptimizeWarning,
                      stacklevel=3)
    return setup


def _parse(method, options, tol, d, n_starts, jac):
    rule = get_rule(method)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict; got {type(options).__name__}")
    options = dict(options)
    requested = options.get("line_search")
    if isinstance(requested, str) and LINE_SEARCHES.get(requested, 0) and not rule.uses_line_search:
        if rule.with_line_search is None:
            raise ValueError(f"Invalid line_search: method {method!r} takes no line search")
        rule = rule.with_line_search
    if "betas" in options and "beta1" in rule.hyperparameters:
        betas = options.pop("betas")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)")
        options["beta1"], options["beta2"] = betas
    for alias, name in OPTION_ALIASES.items():
        if alias in options and name in rule.hyperparameters:
            if name in options:
                raise ValueError(f"Options {alias!r} and {name!r} are the same setting "
                                 f"(scipy's and fastopt's name); give one of them")
            options[name] = options.pop(alias)
    known = (set(rule.hyperparameters) | set(LOOP_DEFAULTS) | set(OTHER_OPTIONS)
             | set(rule.matrix_options))
    unknown = sorted(k for k in options if k not in known)
    n = 1 if n_starts is None else n_starts
    workers = options.get("workers")  # scipy's map for finite differences: fastopt's run in
    if workers is not None:  # the compiled loop, so any valid value is accepted and unused
        if n_starts is not None:
            raise ValueError("Invalid option 'workers': minimize_batch takes the number of "
                             "threads as its keyword argument workers=")
        if not (callable(workers) or (isinstance(workers, (int, np.integer))
                                      and not isinstance(workers, bool))):
            raise TypeError(f"Invalid workers: {workers!r}; expected an int or a map-like "
                            "callable (scipy's)")

    values = {}
    for name in rule.hyperparameters:
        values[name] = _numeric(name, options.get(name, rule.defaults[name]), n_starts)
    for name in rule.scalar_only:
        if values[name].ndim:
            raise ValueError(f"Option {name!r} must be a scalar (it sets the state's size)")
    rule.validate(values)

    loop = {}
    for name, default in {**LOOP_DEFAULTS, **(rule.loop_defaults or {})}.items():
        value = options.get(name)
        if value is None:  # absent, or None: scipy's "the default"
            value = default(d) if callable(default) else default
        if name in rule.tol_sets and options.get(name) is None and tol is not None:
            value = tol
        loop[name] = _numeric(name, value, n_starts)
    for name in ("gtol", "xtol", "ftol", "clip_value", "clip_norm"):
        if np.any(~(loop[name] >= 0)):
            got = options.get(name, tol)
            raise ValueError(f"Invalid {name}: expected a value >= 0; got {got!r}")
    # As in scipy, any number >= 0: the loop stops once nit >= maxiter (100.1 runs 101
    # iterations, inf never stops for it) and once nfev > maxfun.
    maxiter = loop["maxiter"]
    if np.any(~(maxiter >= 0)):
        raise ValueError(f"Invalid maxiter: {options.get('maxiter')!r}; expected a number >= 0 "
                         "(inf: no limit)")
    maxfun = loop["maxfun"]
    if np.any(~(maxfun >= 0)):
        raise ValueError(f"Invalid maxfun: {options.get('maxfun')!r}; expected a number >= 0 "
                         "(inf: no limit)")
    if options.get("maxfun") is not None and rule.advance is None:
        raise ValueError(f"Invalid maxfun: method {method!r} evaluates f a fixed number of "
                         "times per iteration (once, or 1 + 2d with finite differences); "
                         "use maxiter")

    schedule = as_schedule(options.get("schedule"))
    if rule.advance is not None:  # the rule evaluates f itself (line search, Newton)
        for name in ("clip_value", "clip_norm"):
            if np.any(loop[name] != 0):
                raise ValueError(f"Invalid {name}: method {method!r} evaluates f itself; "
                                 "gradient clipping is for first-order rules")
        if schedule.kind != 0 and not rule.has_lr:
            raise ValueError(f"Invalid schedule: method {method!r} has no learning rate")
    norm = options.get("norm", np.inf)  # scipy BFGS's order of the norm gtol bounds
    if not (isinstance(norm, (int, float, np.number)) and norm == np.inf):
        raise ValueError(f"Invalid norm: {norm!r}; fastopt's gtol bounds the infinity norm of "
                         "the gradient (norm=np.inf, scipy's default)")
    # the finite-difference step (objective.difference_step): 0 for scipy's default
    rel_step = options.get("finite_diff_rel_step")
    fd_step = 0.0 if rel_step is None else _numeric("finite_diff_rel_step", rel_step, n_starts)
    if rel_step is not None and np.any(~(fd_step > 0)):
        raise ValueError("Invalid finite_diff_rel_step: expected a value > 0")
    differences = None
    if "eps" not in rule.hyperparameters and options.get("eps") is not None:
        # scipy's eps (BFGS, L-BFGS-B, ...): with jac None, forward differences with this
        # absolute step; a jac of '2-point' or '3-point' takes the relative step instead
        abs_step = _numeric("eps", options["eps"], n_starts)
        if np.any(~((abs_step > 0) & np.isfinite(abs_step))):
            raise ValueError(f"Invalid eps: {options['eps']!r}; expected a finite step > 0 "
                             "(the absolute finite-difference step)")
        if jac is None or jac is False:
            fd_step, differences = -abs_step, FORWARD
    line_search = options.get("line_search", rule.default_line_search)
    if not isinstance(line_search, (str, type(None))) or line_search not in LINE_SEARCHES:
        raise ValueError(f"Invalid line_search: {line_search!r}; expected one of "
                         "None, 'strong-wolfe', 'armijo'")

    hyper = _table(n, [values[name] for name in rule.hyperparameters])
    columns = [0.0] * L.N_CONTROLS
    columns[L.GTOL] = loop["gtol"]
    columns[L.XTOL] = loop["xtol"]
    columns[L.FTOL] = loop["ftol"]
    columns[L.MAXITER] = maxiter
    columns[L.MAXFUN] = maxfun
    columns[L.CLIP_VALUE] = loop["clip_value"]
    columns[L.CLIP_NORM] = loop["clip_norm"]
    columns[L.FD_STEP] = fd_step
    columns[L.SCHEDULE_KIND] = schedule.kind
    columns[L.SCHEDULE_A] = schedule.a
    columns[L.SCHEDULE_B] = schedule.b
    columns[L.SCHEDULE_C] = schedule.c
    columns[L.LINE_SEARCH] = LINE_SEARCHES[line_search]
    controls = _table(n, columns)

    return_all = bool(options.get("return_all", False))
    if return_all:
        if options.get("history", True) is not True:
            raise ValueError(f"Invalid history: {options['history']!r} with return_all, which "
                             "keeps every iterate; drop one of them")
        options["history"] = True
    every, rows = _history(options, float(np.max(maxiter)), n, d)
    matrices = {}
    for name in rule.matrix_options:
        if options.get(name) is not None:
            matrix = np.asarray(options[name])
            if matrix.shape != (d, d) or matrix.dtype.kind not in "biuf":
                raise ValueError(f"Invalid {name}: expected a real matrix of shape ({d}, {d}); "
                                 f"got shape {matrix.shape}")
            matrices[name] = matrix.astype(np.float64)
    setup = Setup(rule, hyper, controls, int(rule.n_state(d, values)), every, rows,
                  bool(options.get("disp", False)), return_all, differences, matrices)
    return setup, unknown


def _table(n, columns):
    """An (n, len(columns)) float array whose column j is ``columns[j]``: a scalar, or an
    array of shape (n,) (a per-start option).

    Filled row-wise, then the per-start columns: writing each column of a large table
    on its own touches every cache line of it once per column (100,000 starts x 13
    controls: 4.8 against 0.5 ms).
    """
    row = np.array([c if np.ndim(c) == 0 else 0.0 for c in columns], dtype=np.float64)
    table = np.empty((n, row.size))
    table[:] = row
    for j, c in enumerate(columns):
        if np.ndim(c) != 0:
            table[:, j] = c
    return table


def _history(options, maxiter, n, d):
    history = options.get("history", False)
    limit = options.get("history_max_bytes", HISTORY_MAX_BYTES)
    if (not isinstance(limit, (int, float, np.integer, np.floating)) or isinstance(limit, bool)
            or not limit > 0):
        raise ValueError(f"Invalid history_max_bytes: {limit!r}; expected a number of bytes > 0")
    if history is False or history is None or history == 0:
        return 0, 0
    if history is True:
        every = 1
    elif isinstance(history, (int, np.integer)) and history > 0:
        every = int(history)
    else:
        raise ValueError(f"Invalid history: {history!r}; expected True, False or an integer k > 0 "
                         "(keep every k-th iterate)")
    if not np.isfinite(maxiter):
        raise ValueError("history needs a finite maxiter (it keeps up to maxiter + 1 rows)")
    maxiter = int(np.ceil(maxiter))  # the iterations the loop runs at most
    rows = maxiter // every + 1
    needed = n * rows * (d + 1) * 8
    if needed > limit:
        fitting = max(1, -(-n * (maxiter + 1) * (d + 1) * 8 // limit))
        raise ValueError(
            f"history would need {needed / 2**20:.1f} MiB for {n} start(s) x {rows} rows x "
            f"{d + 1} values (history_max_bytes={limit}); keep every k-th iterate with "
            f"options['history'] = k >= {fitting}, lower maxiter, or raise history_max_bytes"
        )
    return every, rows
