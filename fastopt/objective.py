"""Turn a user's ``fun`` / ``jac`` / ``hess`` into the compiled callables the loop uses.

The loop calls ``fg(x, g, args, fd_step, counters) -> f``: it returns the value at
``x``, writes the gradient into ``g`` and counts evaluations in ``counters``.
Second-order rules also call ``hess(x, H, args, fd_step, counters)``, which
writes the Hessian into ``H``.

User functions are compiled with numba (``@njit`` functions are used as they
are), with the plain Python functions of the user's they call
(:func:`with_compiled_helpers`); a plain function runs once in Python first, at
``x0``, so that errors Python raises there are raised as scipy would. A function
numba cannot compile (or a bound method, a callable object, a ``functools.partial``)
still works: fastopt then runs the same loop as plain Python (the ``.py_func`` of
every compiled piece) and warns once, so a valid scipy objective is never refused.

Inside fastopt's loops the user's ``fun`` and ``jac`` are inlined (see
:func:`inline_copy`): a call across numba's function boundary counts references
to every array argument with atomic instructions, ~25 ns per call, ten times a
2-D Adam update. A function numba cannot inline runs through an ordinary call
(:func:`run_with_fallback`). A gradient that allocates its result is, where its
source allows, rewritten to write into the loop's buffer (:mod:`fastopt.rewrite`).
"""

import functools
import os
import re
import types
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba.core.compiler_lock import global_compiler_lock
from numba.core.errors import NumbaError, NumbaPerformanceWarning
from numba.extending import intrinsic, is_jitted, overload

from ._jit import driver, inlined
from ._layout import N_COUNTERS, NFEV, NHEV, NJEV
from .rewrite import gradient_in_place
from .scipy_functions import compiled_equivalent
from .snapshot import cell_contents, current_version, global_names, is_helper, values_read

CENTRAL, FORWARD, JAC, FUN_AND_JAC = "3-point", "2-point", "jac", "fun_and_jac"
JAC_IN_PLACE = "jac_in_place"  # jac rewritten to write into g (fastopt.rewrite); not a user mode
INPLACE, BLOCK = "inplace", "block"
HESS_REL_STEP = float(np.finfo(float).eps ** (1 / 3))
CENTRAL_REL_STEP = float(np.finfo(float).eps ** (1 / 3))
FORWARD_REL_STEP = float(np.finfo(float).eps ** 0.5)


class PythonSpeedWarning(UserWarning):
    """A user function could not be compiled with numba and runs at Python speed."""


def to_float(value):
    """The objective's value as a float (it may return a scalar or a size-1 array)."""
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


@overload(to_float)
def _to_float_numba(value):
    if isinstance(value, numba.types.Array):
        return lambda value: float(value.ravel()[0])
    if isinstance(value, (numba.types.Number, numba.types.Boolean)):
        return lambda value: float(value)
    return None


def store_vector(out, value):
    """Copy a gradient (array, or scalar for 1-D problems) into ``out``."""
    out[:] = np.asarray(value, dtype=np.float64).reshape(-1)


@overload(store_vector)
def _store_vector_numba(out, value):
    if isinstance(value, numba.types.Array):
        def impl(out, value):
            flat = value.ravel()
            for i in range(out.size):
                out[i] = flat[i]
        return impl
    if isinstance(value, (numba.types.Number, numba.types.Boolean)):
        def impl_scalar(out, value):
            out[0] = value
        return impl_scalar
    if isinstance(value, numba.types.List):  # scipy accepts a list as a gradient
        def impl_list(out, value):
            for i in range(out.size):
                out[i] = value[i]
        return impl_list
    if isinstance(value, numba.types.BaseTuple):  # or a tuple, of mixed number types too
        def impl_tuple(out, value):
            i = 0
            for item in numba.literal_unroll(value):
                out[i] = item
                i += 1
        return impl_tuple
    return None


def store_matrix(out, value):
    """Copy a Hessian (2-D array, or scalar for 1-D problems) into ``out``."""
    out[:, :] = np.asarray(value, dtype=np.float64).reshape(out.shape)


@overload(store_matrix)
def _store_matrix_numba(out, value):
    if isinstance(value, numba.types.Array):
        def impl(out, value):
            flat = value.ravel()
            n = out.shape[1]
            for i in range(out.shape[0]):
                for j in range(n):
                    out[i, j] = flat[i * n + j]
        return impl
    if isinstance(value, (numba.types.Number, numba.types.Boolean)):
        def impl_scalar(out, value):
            out[0, 0] = value
        return impl_scalar
    return None


_FG_SOURCE = {
    JAC: """
def fg(x, g, args, fd_step, counters):
    f = to_float(fun(x{a}))
    store_vector(g, jac(x{a}))
    counters[NFEV] += 1
    counters[NJEV] += 1
    return f
""",
    JAC_IN_PLACE: """
def fg(x, g, args, fd_step, counters):
    f = to_float(fun(x{a}))
    jac(x, g{a})
    counters[NFEV] += 1
    counters[NJEV] += 1
    return f
""",
    FUN_AND_JAC: """
def fg(x, g, args, fd_step, counters):
    out = fun(x{a})
    f = to_float(out[0])
    store_vector(g, out[1])
    counters[NFEV] += 1
    counters[NJEV] += 1
    return f
""",
    BLOCK: """
def fg(x, g, args, fd_step, counters):
    out = np.empty(1)
    fun(x.reshape((x.size, 1)), g.reshape((g.size, 1)), out{a})
    counters[NFEV] += 1
    counters[NJEV] += 1
    return out[0]
""",
    INPLACE: """
def fg(x, g, args, fd_step, counters):
    f = to_float(fun(x, g{a}))
    counters[NFEV] += 1
    counters[NJEV] += 1
    return f
""",
    CENTRAL: """
def fg(x, g, args, fd_step, counters):
    f = to_float(fun(x{a}))
    for i in range(x.size):
        xi = x[i]
        h = abs(difference_step(fd_step, xi, CENTRAL_REL_STEP))  # scipy: two-sided, |h|
        x[i] = xi + h
        x_plus = x[i]
        f_plus = to_float(fun(x{a}))
        x[i] = xi - h
        x_minus = x[i]
        f_minus = to_float(fun(x{a}))
        x[i] = xi
        g[i] = (f_plus - f_minus) / (x_plus - x_minus)
    counters[NFEV] += 1 + 2 * x.size
    counters[NJEV] += 1
    return f
""",
    FORWARD: """
def fg(x, g, args, fd_step, counters):
    f = to_float(fun(x{a}))
    for i in range(x.size):
        xi = x[i]
        h = difference_step(fd_step, xi, FORWARD_REL_STEP)
        x[i] = xi + h
        x_plus = x[i]
        f_plus = to_float(fun(x{a}))
        x[i] = xi
        g[i] = (f_plus - f) / (x_plus - xi)
    counters[NFEV] += 1 + x.size
    counters[NJEV] += 1
    return f
""",
}

# Calls with up to this many extra arguments are written out (args[0], args[1], ...):
# numba cannot inline a function whose body calls a closure variable with *args.
MAX_EXPANDED_ARGS = 8


def _expanded(n_args):
    if n_args > MAX_EXPANDED_ARGS:
        return ", *args"
    return "".join(f", args[{i}]" for i in range(n_args))


@inlined
def copy_vector(out, value):
    """``out[:] = value`` for a 1-D ``value`` (what ``store_vector`` does, typed in no time)."""
    for i in range(out.size):
        out[i] = value[i]


class Returns(NamedTuple):
    """What the user's functions returned when probed, for templates that need no overloads."""

    scalar_value: bool = False  # fun returned a number: ``float(...)``, not ``to_float``
    vector_grad: bool = False  # jac returned a 1-D array: ``copy_vector``, not ``store_vector``


GENERAL_RETURNS = Returns()  # unknown: the general templates


def _returns(value, grad):
    scalar = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_))
    vector = isinstance(grad, np.ndarray) and grad.ndim == 1
    return Returns(scalar, vector)


@inlined
def difference_step(fd_step, xi, default_rel_step):
    """The finite-difference step at coordinate value ``xi``, as scipy's
    ``approx_derivative`` takes it.

    ``fd_step == 0``: the default, ``default_rel_step * sign(xi) * max(1, |xi|)``;
    ``fd_step > 0``: a relative step (scipy's ``finite_diff_rel_step``),
    ``fd_step * sign(xi) * |xi|``; ``fd_step < 0``: the absolute step ``-fd_step``
    (scipy's ``eps`` option). Either of the last two, where ``xi + h`` rounds back to
    ``xi`` (``xi = 0`` for a relative step), falls back to the default. ``sign(0)`` is 1.
    """
    sign = 1.0 if xi >= 0.0 else -1.0
    default = default_rel_step * sign * max(1.0, abs(xi))
    if fd_step == 0.0:
        return default
    h = fd_step * sign * abs(xi) if fd_step > 0.0 else -fd_step
    if (xi + h) - xi == 0.0:
        return default
    return h


def _make_fg(fun, jac, mode, n_args, returns=GENERAL_RETURNS):
    """Build ``fg`` for ``mode`` as plain Python, from a template with ``args`` written out.

    The user's functions are globals of the generated code (not arguments), so a
    compiled ``fg`` calls them directly and numba can inline ``fg`` into the loop.
    Where the probe saw a number and a 1-D gradient (``returns``), the template
    calls ``float`` and ``copy_vector`` instead of the general ``to_float`` and
    ``store_vector``, whose overloads take numba ~0.18 s to type: half the
    compile of a new objective's first ``minimize``.
    """
    source = _FG_SOURCE[mode].format(a=_expanded(n_args))
    if returns.scalar_value:
        source = source.replace("to_float(", "float(")
    if returns.vector_grad:
        source = source.replace("store_vector(", "copy_vector(")
    namespace = {"fun": fun, "jac": jac, "to_float": to_float, "store_vector": store_vector,
                 "copy_vector": copy_vector, "NFEV": NFEV, "NJEV": NJEV, "np": np,
                 "difference_step": difference_step, "CENTRAL_REL_STEP": CENTRAL_REL_STEP,
                 "FORWARD_REL_STEP": FORWARD_REL_STEP}
    exec(source, namespace)  # noqa: S102 - fixed template
    return namespace["fg"]


_HESS_SOURCE = """
def hess_eval(x, H, args, fd_step, counters):
    store_matrix(H, hess(x{a}))
    counters[NHEV] += 1
"""


def _make_hess(hess, fg, n_args):
    """Build ``hess_eval``: the user's ``hess``, or central differences of the gradient."""
    if hess is not None:
        namespace = {"hess": hess, "store_matrix": store_matrix, "NHEV": NHEV}
        exec(_HESS_SOURCE.format(a=_expanded(n_args)), namespace)  # noqa: S102 - fixed template
        hess_eval = namespace["hess_eval"]
    else:
        def hess_eval(x, H, args, fd_step, counters):
            n = x.size
            g_plus = np.empty(n)
            g_minus = np.empty(n)
            for j in range(n):
                xj = x[j]
                h = HESS_REL_STEP * max(1.0, abs(xj))
                x[j] = xj + h
                x_plus = x[j]
                fg(x, g_plus, args, fd_step, counters)
                x[j] = xj - h
                x_minus = x[j]
                fg(x, g_minus, args, fd_step, counters)
                x[j] = xj
                for i in range(n):
                    H[i, j] = (g_plus[i] - g_minus[i]) / (x_plus - x_minus)
            for i in range(n):
                for j in range(i + 1, n):
                    s = 0.5 * (H[i, j] + H[j, i])
                    H[i, j] = s
                    H[j, i] = s
            counters[NHEV] += 1
    return hess_eval


def _no_hess(x, H, args, fd_step, counters):
    """Placeholder passed to rules that never evaluate a Hessian."""
    return None


no_hess_compiled = driver(_no_hess)


class Objective(NamedTuple):
    """The callables the loop uses, and whether they are compiled."""

    fg: Callable
    hess: Callable
    compiled: bool
    block_fun: Callable = None  # the user's block function (jac="block"), compiled
    plain: "Objective" = None  # the same with the user's functions called, not inlined
    lane_views: bool = False  # the batch driver may evaluate fg on a lane's strided column


# Compile options of a user's @njit function under which an inlined copy computes the
# same numbers: anything else (fastmath, parallel, boundscheck=True, ...) is kept by
# calling the user's own compiled function.
_INLINE_SAFE_OPTIONS = {"nopython": True, "boundscheck": None, "nogil": True,
                        "error_model": "python", "inline": "always"}


def inline_copy(f):
    """``f`` (a numba dispatcher) recompiled for numba to inline into fastopt's loops.

    numba inlines it at the IR level (``inline="always"``), under the loop's own
    options: the same arithmetic (no fastmath either way), no reference counting
    of its arguments, and a division by zero gives inf or NaN (numpy's rule; the
    start then ends as diverged) instead of raising ZeroDivisionError. A function
    compiled with other options (``fastmath``, ``parallel``, ``boundscheck``, ...)
    is returned unchanged, so it is called as the user compiled it.
    """
    options = getattr(f, "targetoptions", None)
    if options is None or not hasattr(f, "py_func") or getattr(f, "locals", None):
        return f  # not a dispatcher, or with locals= types the copy would not keep
    for name, value in options.items():
        if name not in _INLINE_SAFE_OPTIONS or value not in (_INLINE_SAFE_OPTIONS[name], None,
                                                             False, "numpy", "never"):
            return f
    return inlined(f.py_func)


# Objectives numba could not compile as built -> the fallback that worked: prepare returns
# the fallback from then on.
_FALLBACK = {}


class FirstCall:
    """Make calls into compiled code; the first one (which compiles) under the fallback's rules.

    numba's performance warnings are errors during the first call only, and
    :func:`run_with_fallback` falls back only on errors raised before the first call
    returned: a user's callback that raises later is never mistaken for a compile failure.
    The first call holds numba's compiler lock: the warnings filter is process-wide, and
    so no other thread compiles (and has its warnings turned into errors) while it is
    installed, nor saves and restores the filter list interleaved with this one. Callers
    keep the first call short (it compiles, and runs no more than one step).
    """

    def __init__(self, strict=True):
        self.strict = strict
        self.done = not strict

    def again(self):
        """Treat the next call as a first one (it compiles a new loop)."""
        self.done = not self.strict

    def __call__(self, fn, *args, compiled=False):
        """``fn(*args)``; ``compiled``: the caller knows its loop is compiled already, so
        this call compiles nothing (and skips the warnings filter, ~1.2 us)."""
        if self.done or compiled:
            self.done = True
            return fn(*args)
        with global_compiler_lock, warnings.catch_warnings():
            warnings.simplefilter("error", NumbaPerformanceWarning)
            out = fn(*args)
        self.done = True
        return out


def run_with_fallback(objective, run, lane_views=False):
    """``run(objective, call)``, falling back to simpler forms of the objective if numba
    cannot compile it: with ``lane_views`` (the batch driver) first the same functions on
    contiguous copies of the lanes, then ``objective.plain``, the user's functions called
    rather than inlined. The form that worked is remembered (:func:`prepare` returns it).

    ``run`` makes its calls into compiled code through ``call`` (a :class:`FirstCall`).
    A compile error is raised before the compiled code runs, so nothing has been
    changed when the call is repeated. numba's performance warning counts as one: it
    says the user's code wants contiguous arrays (``x @ y`` on a lane's column, which
    numba computes differently, so the batch row would not match the single run).
    """
    forms = [objective]
    if lane_views and objective.lane_views:
        forms.append(objective._replace(lane_views=False))
    if objective.plain is not None:
        forms.append(objective.plain)
    for form in forms:
        last = form is forms[-1]
        first = FirstCall(strict=not last)
        try:
            out = run(form, first)
        except (NumbaError, NumbaPerformanceWarning):
            if last or first.done:
                raise
            continue
        if form is not objective:
            _FALLBACK[objective] = form
        return out


@driver
def call_block(fun, X, G, F, args):
    """``fun(X, G, F, *args)``: evaluate a block objective (called once per block step)."""
    fun(X, G, F, *args)


def _compile(f):
    """``f`` as a numba dispatcher (memoized, so a function is compiled once)."""
    if f is None or is_jitted(f):
        return f
    equivalent = compiled_equivalent(f)  # scipy.optimize.rosen and its kin
    if equivalent is not None:
        return equivalent
    try:
        return _compile_cached(f)
    except TypeError:  # unhashable callable
        return numba.njit(f)


@functools.lru_cache(maxsize=256)
def _compile_cached(f):
    return numba.njit(with_compiled_helpers(f))


def with_compiled_helpers(f):
    """``f`` reading compiled versions of the plain Python functions it calls.

    numba compiles a call only to a function it knows: a plain helper read from the
    globals or a closure (``def fun(x): return model(x, data)``) fails to type, and the
    objective would run at Python speed. This copy of ``f`` reads, instead of each such
    helper, the helper compiled the same way (recursively; numba's error, if it cannot
    be, leaves the objective in Python). Each helper is taken as the version of it that
    reads the values it reads now (:func:`fastopt.snapshot.current_version`), which
    ``f``'s own version key covers (``_value_key`` of a function includes them).
    """
    if not isinstance(f, types.FunctionType) or f.__code__ in _HELPERS_IN_PROGRESS:
        return f  # (recursion: left to numba, whose error leaves the objective in Python)
    _HELPERS_IN_PROGRESS.add(f.__code__)
    try:
        return _with_compiled_helpers(f)
    finally:
        _HELPERS_IN_PROGRESS.discard(f.__code__)


_HELPERS_IN_PROGRESS = set()  # code objects whose helpers are being compiled


def _with_compiled_helpers(f):
    names = [name for name in global_names(f.__code__) if is_helper(f.__globals__.get(name))]
    cells = f.__closure__ or ()
    helper_cells = [i for i, cell in enumerate(cells) if is_helper(cell_contents(cell))]
    if not names and not helper_cells:
        return f
    namespace = dict(f.__globals__)
    for name in names:
        namespace[name] = _compile(current_version(namespace[name]))
    closure = tuple(types.CellType(_compile(current_version(cell.cell_contents)))
                    if i in helper_cells else cell for i, cell in enumerate(cells)) or None
    copy = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, closure)
    copy.__kwdefaults__ = f.__kwdefaults__
    copy.__qualname__ = f.__qualname__
    return copy


@functools.lru_cache(maxsize=256)
def _build(fun, jac, hess, mode, needs_hess, compiled, n_args, inline=False,
           returns=GENERAL_RETURNS):
    if inline:
        plain = _build(fun, jac, hess, mode, needs_hess, compiled, n_args, returns=returns)
        return _with_inlined_fg(plain, fun, jac, mode, n_args, returns)
    if compiled:
        fun, jac, hess = _compile(fun), _compile(jac), _compile(hess)
    else:
        fun, jac, hess = (getattr(f, "py_func", f) if f is not None else None
                          for f in (fun, jac, hess))
    fg = _make_fg(fun, jac, mode, n_args, returns if compiled else GENERAL_RETURNS)
    if compiled:
        fg = inlined(fg) if n_args <= MAX_EXPANDED_ARGS else driver(fg)
    if needs_hess:
        hess_eval = _make_hess(hess, fg, n_args)
        hess_eval = driver(hess_eval) if compiled else hess_eval
    else:
        hess_eval = no_hess_compiled if compiled else _no_hess
    return Objective(fg, hess_eval, compiled, fun if mode == BLOCK else None)


def _with_inlined_fg(plain, fun, jac, mode, n_args, returns):
    """``plain`` (compiled) with ``fg`` built around inlined copies of ``fun`` and ``jac``,
    and ``plain`` kept as its fallback; ``plain`` itself if there is nothing to inline."""
    if mode == BLOCK or n_args > MAX_EXPANDED_ARGS:
        return plain
    fun, jac = _compile(fun), _compile(jac)
    fun_inlined, jac_inlined = inline_copy(fun), inline_copy(jac)
    if fun_inlined is fun and jac_inlined is jac:
        return plain
    if returns.vector_grad:  # the gradient is a 1-D array: write it into g, if the source allows
        if mode == JAC and jac_inlined is not jac:
            in_place = gradient_in_place(jac_inlined.py_func)
            if in_place is not None:
                mode, jac_inlined = JAC_IN_PLACE, inlined(in_place)
        elif mode == FUN_AND_JAC and fun_inlined is not fun:
            in_place = gradient_in_place(fun_inlined.py_func, returns_value=True)
            if in_place is not None:
                mode, fun_inlined = INPLACE, inlined(in_place)
    fg = inlined(_make_fg(fun_inlined, jac_inlined, mode, n_args, returns))
    return plain._replace(fg=fg, plain=plain, lane_views=True)


def launches_parallel_code(*functions, depth=4):
    """Whether any of the user's functions is, or calls, a numba dispatcher compiled with
    ``parallel=True``: itself, or a function it reads from its globals or closure, to
    ``depth`` calls deep."""
    seen = set()

    def reaches(f, depth):
        if f is None or id(f) in seen or depth < 0:
            return False
        seen.add(id(f))
        options = getattr(f, "targetoptions", None)
        if isinstance(options, dict) and options.get("parallel"):
            return True
        py_func = getattr(f, "py_func", f)
        if not isinstance(py_func, types.FunctionType):
            return False
        return any(callable(v) and reaches(v, depth - 1) for v in values_read(py_func))

    return any(reaches(f, depth) for f in functions if callable(f))


def calls_by_address(objective, args):
    """Whether a portable loop can call ``objective`` by address: compiled by numba, with
    extra ``args`` (if any) that are plain data (see :func:`plain_data`)."""
    return objective.compiled and plain_data(args) and not numba.config.DISABLE_JIT


def plain_data(value):
    """Numbers, NumPy arrays of numbers, and tuples of them: the extra ``args`` a portable
    loop passes through to the objective by value. Their numba types are part of the loop's
    signature, under which numba caches it on disk; other objects (lists, dicts, jitclass
    instances) run in the loop specialized for the objective."""
    if isinstance(value, tuple):
        return all(plain_data(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biufc" and value.ndim > 0
    return isinstance(value, (bool, int, float, complex, np.bool_, np.number))


class NativeFunction(NamedTuple):
    """A compiled function's address, and the dispatcher that keeps its code alive."""

    address: int
    dispatcher: Callable


def compile_native(py_func, argument_types):
    """``py_func`` compiled for ``argument_types``, returning a float: a :class:`NativeFunction`.

    Portable loops, compiled once and cached on disk, call such a function by address
    with :func:`native_caller`, in numba's own calling convention: its return status
    reports an exception, which a C function (``numba.cfunc``) cannot, and a ``try``
    inside one doubled this compile.
    """
    signature = numba.types.float64(*argument_types)
    dispatcher = numba.njit(signature, nogil=True, error_model="numpy",
                            no_cpython_wrapper=True, no_cfunc_wrapper=True)(py_func)
    compiled = dispatcher.overloads[signature.args]
    address = compiled.library.get_pointer_to_function(compiled.fndesc.mangled_name)
    return NativeFunction(address, dispatcher)


def native_caller(argument_types):
    """An intrinsic ``call(address, arguments, args) -> (ok, value)`` for native functions
    of ``argument_types`` and the user's extra ``args``: ``arguments`` is a tuple whose
    arrays (C-contiguous) are passed as pointers to their data, the other values as they
    are; then ``args``, a tuple passed as one argument of its numba type (the function's
    last parameter, which it hands to the user's functions). ``ok`` is False when the
    function raised (its return status, read instead of propagated); ``value`` is then
    meaningless. A Python exception (raised in the function's ``numba.objmode`` code) is
    cleared: the caller calls the function again where it propagates. Arguments of other types
    than ``argument_types`` do not compile.
    """
    argument_types = tuple(argument_types)

    @intrinsic
    def call(typingctx, address, arguments, args):
        passed = tuple(numba.types.CPointer(t.dtype) if isinstance(t, numba.types.Array) else t
                       for t in arguments)
        contiguous = all(t.layout == "C" for t in arguments if isinstance(t, numba.types.Array))
        if passed != argument_types or not contiguous:
            raise numba.core.errors.TypingError(
                f"native call with arguments {passed}, expected {argument_types}")
        signature = numba.types.Tuple((numba.types.boolean, numba.types.float64))(
            address, arguments, args)
        parameter_types = (*argument_types, args)

        def codegen(context, builder, signature, llvm_args):
            address_value, tuple_value, args_value = llvm_args
            values = []
            for i, argument_type in enumerate(signature.args[1]):
                value = builder.extract_value(tuple_value, i)
                if isinstance(argument_type, numba.types.Array):
                    value = context.make_array(argument_type)(context, builder, value).data
                values.append(value)
            values.append(args_value)
            function_type = context.call_conv.get_function_type(numba.types.float64,
                                                                parameter_types)
            function = builder.inttoptr(address_value, function_type.as_pointer())
            status, value = context.call_conv.call_function(
                builder, function, numba.types.float64, parameter_types, values)
            with builder.if_then(status.is_python_exc, likely=False):
                python = context.get_python_api(builder)
                gil = python.gil_ensure()
                python.err_clear()
                python.gil_release(gil)
            return context.make_tuple(builder, signature.return_type, (status.is_ok, value))

        return signature, codegen

    return call


_POINTER = numba.types.CPointer
# fg as a native function for the portable loop: (x, g, counters, d, fd_step, args) -> f, x, g
# and counters pointers to the start's rows. Its type is the same for every objective, but
# for the last parameter: the type of the user's extra args.
NATIVE_FG_ARGUMENTS = (_POINTER(numba.types.float64), _POINTER(numba.types.float64),
                       _POINTER(numba.types.int64), numba.types.intp, numba.types.float64)
call_native_fg = native_caller(NATIVE_FG_ARGUMENTS)
EMPTY_ARGS = numba.typeof(())


def args_type(args):
    """The numba type of the extra ``args`` (``numba.typeof`` builds a tuple type anew
    each call, ~20 us for a nested one: a warm call without args skips it)."""
    return numba.typeof(args) if args else EMPTY_ARGS


@functools.lru_cache(maxsize=256)
def native_fg(fg, args_type):
    """``fg`` as a :class:`NativeFunction`, for extra args of numba type ``args_type``.

    The portable loop (:func:`fastopt.loop.make_loop` with ``portable=True``) calls
    it with ``call_native_fg(address, (x, g, counters, x.size, fd_step), args)``, so that
    loop is compiled once per type of ``args`` and cached on disk, and a new objective
    costs only this small compile (~0.1 s instead of 1-8 s for the loop built around it).
    """
    def fg_native(x_ptr, g_ptr, counters_ptr, d, fd_step, args):
        x = numba.carray(x_ptr, (d,))
        g = numba.carray(g_ptr, (d,))
        counters = numba.carray(counters_ptr, (N_COUNTERS,))
        return fg(x, g, args, fd_step, counters)

    return compile_native(fg_native, (*NATIVE_FG_ARGUMENTS, args_type))


@functools.lru_cache(maxsize=256)
def native_hess(hess, args_type):
    """``hess`` as a :class:`NativeFunction` of the same type as :func:`native_fg`'s:
    ``(x, H, counters, d, fd_step, args) -> 0.0``, ``H`` a pointer to the C-contiguous
    (d, d) Hessian it writes."""
    def hess_native(x_ptr, h_ptr, counters_ptr, d, fd_step, args):
        x = numba.carray(x_ptr, (d,))
        H = numba.carray(h_ptr, (d, d))
        counters = numba.carray(counters_ptr, (N_COUNTERS,))
        hess(x, H, args, fd_step, counters)
        return 0.0

    return compile_native(hess_native, (*NATIVE_FG_ARGUMENTS, args_type))


def raise_where_it_raised(fg, points, fd_steps, hess=None, args=()):
    """Evaluate ``fg`` from Python at ``points``, where a portable loop's call raised.

    A call by address (:func:`native_caller`) learns that the objective raised, not
    what: the portable loops count it in ``counters[RAISED]``, stop with ``x`` at the
    point where it raised, and stop the batch. Evaluating the same ``fg`` there again,
    through numba's Python entry point, raises the exception itself, with its message,
    after compiling ``fg`` alone (0.1-0.3 s, against 1-5 s for the loop specialized for
    the objective, where it would propagate too). Returns if no point raises (an
    objective whose exceptions depend on more than ``x``), or if ``fg`` does not compile
    on its own: the caller then reruns in that specialized loop. ``fg`` is the form that
    loop evaluates, so an error this raises is one the rerun would raise. ``hess``: the
    Hessian a Newton rule's portable loop evaluated too, called after ``fg`` at each point;
    ``args`` the user's extra arguments.
    """
    counters = np.zeros(N_COUNTERS, dtype=np.int64)
    for x, fd_step in zip(points, fd_steps, strict=True):
        try:
            g = np.empty(len(x))
            f = fg(np.array(x, dtype=np.float64), g, args, float(fd_step), counters)
            # the loops evaluate the Hessian only at a point where f and g are finite
            if hess is not None and np.isfinite(f) and np.all(np.isfinite(g)):
                hess(np.array(x, dtype=np.float64), np.empty((len(x), len(x))), args,
                     float(fd_step), counters)
        except NumbaError:  # numba's, compiling fg: the user's functions never raise these
            return


def jac_mode(jac):
    """Classify ``jac``: callable, True (fun returns (f, g)), a protocol name, or differences."""
    if callable(jac):
        return JAC
    if jac is True:
        return FUN_AND_JAC
    if isinstance(jac, str) and jac == "inplace":
        return INPLACE
    if isinstance(jac, str) and jac == "block":
        return BLOCK
    if jac is None or jac is False or (isinstance(jac, str) and jac in ("3-point", "cs")):
        return CENTRAL
    if isinstance(jac, str) and jac == "2-point":
        return FORWARD
    raise TypeError(
        f"Invalid jac: {jac!r}; expected a callable, True (fun returns (f, g)), 'inplace' "
        "(fun(x, g, *args) writes g and returns f), 'block' (fun(X, G, F, *args) on (d, B) "
        "blocks), None, '2-point' or '3-point'"
    )


def _probe(fun, jac, hess, mode, x, args, compile_first):
    """Evaluate the user functions once at ``x``: check what they return; report compile failure.

    Returns ``(returns, value, grad)``: what they returned (:class:`Returns`), and the
    value and gradient themselves (``grad`` None in the finite-difference modes).
    """
    def call(name, f, point, *a):
        if compile_first:
            f = _compile(f)
        elif is_jitted(f):
            f = f.py_func
        before = point.copy()
        out = f(point, *a)
        if not np.array_equal(point, before, equal_nan=True):
            raise ValueError(f"{name} modified its argument x in place: fastopt passes its own "
                             "iterate (scipy passes a copy), which this would corrupt; work on "
                             "a copy in the function (x = x.copy())")
        return out

    if mode == INPLACE:
        grad = np.full(x.size, np.nan)
        out = call("fun", fun, x.copy(), grad, *args)
    elif mode == BLOCK:
        out = None
    else:
        out = call("fun", fun, x.copy(), *args)
    if mode == BLOCK:
        X = np.ascontiguousarray(x.reshape(-1, 1))
        grad = np.full((x.size, 1), np.nan)
        values = np.full(1, np.nan)
        call("fun", fun, X, grad, values, *args)
        value = values[0]
        if not np.isfinite(value) and np.all(np.isnan(grad)):
            raise ValueError("jac='block' requires fun(X, G, F, *args) to write F (B,) and "
                             "G (d, B) for X of shape (d, B)")
    elif mode == INPLACE:
        value = out
    elif mode == FUN_AND_JAC:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("jac=True requires fun to return a tuple (f, g)")
        value, grad = out
    else:
        value, grad = out, (call("jac", jac, x.copy(), *args) if mode == JAC else None)
    value_arr = np.asarray(value)
    if value_arr.size != 1 or not np.issubdtype(value_arr.dtype, np.number):
        raise ValueError(
            "The user-provided objective function must return a scalar value (or an array "
            f"of size 1): fun returned {type(value).__name__} of shape {value_arr.shape}"
        )
    if grad is not None and np.asarray(grad).size != x.size:
        raise ValueError(
            f"jac must return an array of shape ({x.size},); got shape {np.asarray(grad).shape}"
        )
    if hess is not None:
        h = np.asarray(call("hess", hess, x.copy(), *args))
        if h.size != x.size * x.size:
            raise ValueError(
                f"hess must return an array of shape ({x.size}, {x.size}); got shape {h.shape}"
            )
    return _returns(value, grad), value, grad


def prepare(fun, x0, args, jac=None, hess=None, needs_hess=False):
    """Validate the user functions at ``x0`` and return an :class:`Objective`.

    Plain Python functions run in Python first (their errors are the user's and
    propagate unchanged), then compiled; if numba cannot compile a function, the
    objective runs in Python, with a :class:`PythonSpeedWarning` giving numba's reason.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable; got {type(fun).__name__}")
    mode = jac_mode(jac)
    jac_fun = jac if mode == JAC else None
    if hess is not None and not callable(hess):
        raise TypeError(f"hess must be callable or None; got {type(hess).__name__}")
    if hess is not None and not needs_hess:
        warnings.warn("The method does not use Hessian information (hess).", RuntimeWarning,
                      stacklevel=3)  # as scipy warns
        hess = None
    if not isinstance(args, tuple):
        args = (args,)
    # plain Python functions: one object per value of the globals they read (see snapshot)
    fun, jac_fun, hess = current_version(fun), current_version(jac_fun), current_version(hess)
    key = (fun, jac_fun, hess, mode, needs_hess, x0.size, _signature(args))
    try:
        validated = _VALIDATED.get(key)
    except TypeError:  # unhashable callable or argument
        key, validated = None, None
    first = None  # the Python probe's (value, grad) at x0, for an objective run in Python
    if validated is None:
        validated, first = _validate(fun, jac_fun, hess, mode, x0, args)
        if key is not None:
            if len(_VALIDATED) > 1024:
                _VALIDATED.clear()
            _VALIDATED[key] = validated
    compiled, returns = validated
    if first is not None and mode != BLOCK:
        # at Python speed, just probed at x0: the loop's first evaluation takes those values
        fun, jac_fun = answering_first_call(fun, jac_fun, mode, x0, *first)
        return _build.__wrapped__(fun, jac_fun, hess, mode, needs_hess, False, len(args),
                                  returns=returns), args
    try:
        objective = _build(fun, jac_fun, hess, mode, needs_hess, compiled, len(args), compiled,
                           returns)
    except TypeError:  # unhashable callables: build without the cache (nor inlining)
        return _build.__wrapped__(fun, jac_fun, hess, mode, needs_hess, compiled, len(args),
                                  returns=returns), args
    return _FALLBACK.get(objective, objective), args


def answering_first_call(fun, jac, mode, x0, value, grad):
    """``fun`` and ``jac`` whose first calls, at ``x0``, return the probe's results there.

    For functions run in Python: the probe has just called them at ``x0``, and the
    loop's first evaluation is at ``x0`` again. scipy evaluates ``x0`` once, and a user
    who counts or records the calls sees them match ``nfev`` and ``njev``. (Compiled
    code runs its own first evaluation: it may round differently from Python.)
    """
    x0 = x0.copy()
    if grad is not None:
        grad = np.array(grad, dtype=np.float64)
    pending = {"fun": True, "jac": True}

    def first_call(name, x):
        if pending[name]:
            pending[name] = False
            return np.array_equal(x, x0)
        return False

    def fun_first(x, *args):
        if not first_call("fun", x):
            return fun(x, *args)
        if mode == INPLACE:  # fun(x, g, *args) writes g
            args[0][:] = grad
        return (value, grad) if mode == FUN_AND_JAC else value

    def jac_first(x, *args):
        return grad if first_call("jac", x) else jac(x, *args)

    return fun_first, (jac_first if mode == JAC else jac)


_VALIDATED = {}  # (functions, mode, d, argument types) -> (compiled?, Returns)


def _signature(args):
    return tuple((type(a), getattr(a, "dtype", None), getattr(a, "ndim", None)) for a in args)


def _validate(fun, jac_fun, hess, mode, x0, args):
    """Probe compiled; on a numba error, probe in Python and warn.

    Returns ``((compiled, returns), first)``: whether numba compiled the functions, what
    they returned (:class:`Returns`), and for functions left in Python the value and
    gradient the Python probe computed at ``x0`` (else None).
    """
    python_probe = None
    if not any(is_jitted(f) for f in (fun, jac_fun, hess)):
        # plain Python, as scipy runs it, first: what numba compiles skips some of Python's
        # checks (an index past the end of x reads memory instead of raising IndexError)
        python_probe = _probe(fun, jac_fun, hess, mode, x0, args, compile_first=False)
    try:
        return (True, _probe(fun, jac_fun, hess, mode, x0, args, compile_first=True)[0]), None
    except Exception as exc:
        if not _raised_compiling(exc):
            # the compiled code raised running, where Python did not (numba's 1/0 raises):
            # it compiles, and the loops stop where it raises (or the user's own compiled
            # function raised: the user's error)
            if python_probe is None:
                raise
            return (True, python_probe[0]), None
        # numba refuses more than NumbaError says: a bound method, a callable instance or
        # a functools.partial (TypeError), an argument of a type it cannot handle
        # (ValueError). The functions run in Python (checked above, or now).
        if python_probe is None:
            python_probe = _probe(fun, jac_fun, hess, mode, x0, args, compile_first=False)
        warnings.warn(
            "fastopt could not compile the objective with numba, so it runs at Python "
            f"speed (numba said: {_numba_reason(exc)}). Decorate it with @numba.njit (and "
            "any Python function it calls), or make it numba-compatible, for full speed.",
            PythonSpeedWarning,
            stacklevel=4,
        )
        return (False, GENERAL_RETURNS), python_probe[1:]


def _raised_compiling(exc):
    """Whether numba raised ``exc`` compiling (a ``NumbaError``, or raised in numba's own
    Python code), not the compiled code running (which has no Python frames)."""
    if isinstance(exc, NumbaError):
        return True
    frame = exc.__traceback__
    while frame is not None:
        if os.path.realpath(frame.tb_frame.f_code.co_filename).startswith(_NUMBA_DIR):
            return True
        frame = frame.tb_next
    return False


_NUMBA_DIR = os.path.join(os.path.realpath(os.path.dirname(numba.__file__)), "")


def _numba_reason(exc):
    """The line of numba's error that says why, not which compiler pass failed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # numba's highlighting
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reasons = [line for line in lines if not line.startswith("Failed in")] or lines
    return reasons[0].rstrip(".")
