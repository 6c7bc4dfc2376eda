"""Which version of a plain Python objective fastopt compiles: keyed by the values it reads.

numba freezes the globals and closure variables a function reads into its compiled
code, as constants, when it compiles it. fastopt compiles a user's function several
times, at different moments (the check at the first call, the loop specialized for
it at the second, a batch's evaluation of a block), and memoizes each by the function
object. A global changed between two calls (``target = 5.0``, ``ydata[:] = new``) would
then be seen by some of those and not by others, and a result computed with the old
value returned as a success, where scipy, which calls the function in Python, sees
the new one.

:func:`current_version` stands a plain Python function in for itself *with the values
it reads now*: one function object per (code, values). While they are unchanged it is
the same object, so nothing is compiled again, and a new ``lambda`` with the same code
and values reuses what the last one compiled. When any of them changed it is a new
object, compiled afresh with the new values. Arrays are compared by content (a hash
of their bytes), numbers by value; modules, functions and other objects by identity.

The values the plain functions of the user's it calls read count too (fastopt compiles
those helpers with it, see :func:`is_helper`). Not covered: values read through an
attribute (``config.target``) or an object, and values changed while a run is under way.
``@numba.njit`` functions are the user's own compiled code, with numba's rules, and are
left as they are. Data that changes between calls is best passed through ``args=``: the
compiled code is then reused for any value.
"""

import builtins
import dis
import hashlib
import os
import site
import sysconfig
import types

import numba
import numba.core.registry
import numpy as np

# Versions kept; past this many the table starts afresh (numba keeps compiled code anyway).
MAX_VERSIONS = 1024
_VERSIONS = {}  # (id(code), id(globals), values key) -> version
_GLOBAL_NAMES = {}  # id(code) -> (code, the global names it reads)
_MAX_ITEMS = 64  # items of a tuple or list keyed by value; a longer one by identity
MISSING = object()  # a global name bound nowhere, or an empty closure cell


def current_version(func):
    """The function object fastopt compiles for ``func`` as it reads its values now.

    ``func`` itself if it is None, a numba dispatcher or not a plain Python function.
    """
    if not isinstance(func, types.FunctionType):  # None, a numba dispatcher, a builtin, ...
        return func
    # by identity (a code object hashes its bytecode: microseconds); the version keeps the
    # code and the globals alive, so their ids are not reused while it is in the table
    key = (id(func.__code__), id(func.__globals__),
           tuple(_value_key(value, (id(func),)) for value in values_read(func)))
    version = _VERSIONS.get(key)
    if version is None:
        if len(_VERSIONS) >= MAX_VERSIONS:
            _VERSIONS.clear()
        version = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                                     func.__defaults__, func.__closure__)
        version.__kwdefaults__ = func.__kwdefaults__
        version.__qualname__ = func.__qualname__
        _VERSIONS[key] = version
    return version


def values_read(func):
    """What the plain function ``func`` reads from outside, now: the values of the global
    names its code loads (builtins included), of its closure cells, and its defaults, in
    that order (their number is fixed by the code, but for the defaults); ``MISSING`` for
    an unbound name or an empty cell."""
    code = func.__code__
    entry = _GLOBAL_NAMES.get(id(code))
    if entry is None or entry[0] is not code:
        if len(_GLOBAL_NAMES) >= MAX_VERSIONS:
            _GLOBAL_NAMES.clear()
        entry = _GLOBAL_NAMES[id(code)] = (code, global_names(code))
    namespace = func.__globals__
    values = []
    for name in entry[1]:
        value = namespace.get(name, MISSING)
        values.append(getattr(builtins, name, MISSING) if value is MISSING else value)
    values.extend(cell_contents(cell) for cell in func.__closure__ or ())
    values.extend(func.__defaults__ or ())
    return values


def cell_contents(cell):
    """What a closure cell holds, ``MISSING`` if it is empty."""
    try:
        return cell.cell_contents
    except ValueError:
        return MISSING


def global_names(code):
    """The global names ``code`` reads, its nested code (comprehensions, lambdas) included."""
    names = {ins.argval for ins in dis.get_instructions(code)
             if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(global_names(const))
    return tuple(sorted(names))


def _value_key(value, calling=()):
    """A hashable key equal for equal values (arrays: same dtype, shape and bytes).

    A helper (:func:`is_helper`) is keyed by identity and by the values it reads, its
    own helpers' included, however deep (``calling``: the ids of the functions whose
    values are being keyed, so that recursion ends): fastopt compiles the helpers an
    objective calls (:func:`fastopt.objective.with_compiled_helpers`), freezing what
    they read too.
    """
    if value is MISSING:
        return ("missing",)
    if is_helper(value) and id(value) not in calling:
        calling = (*calling, id(value))
        return ("function", id(value),
                tuple(_value_key(item, calling) for item in values_read(value)))
    if isinstance(value, (types.ModuleType, type)) or callable(value):
        return ("object", id(value))
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return ("object", id(value))
        digest = hashlib.blake2b(np.ascontiguousarray(value), digest_size=16).digest()
        return ("array", value.dtype.str, value.shape, digest)
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None), np.generic)):
        return (type(value).__name__, repr(value))
    if isinstance(value, (tuple, list)) and len(value) <= _MAX_ITEMS:
        return (type(value).__name__, tuple(_value_key(item, calling) for item in value))
    return ("object", id(value))


def is_helper(value):
    """Whether ``value`` is a plain Python function of the user's that numba does not
    know: one fastopt compiles along with an objective that calls it. Functions of the
    Python installation (the standard library, site-packages: NumPy's ``np.ones`` is a
    plain function numba implements itself) and functions numba has an ``overload`` for
    are left to numba."""
    if not isinstance(value, types.FunctionType):
        return False
    code = value.__code__
    known = _HELPERS.get(code)
    if known is None:
        if len(_HELPERS) >= MAX_VERSIONS:
            _HELPERS.clear()
        path = os.path.realpath(code.co_filename)
        known = _HELPERS[code] = (not path.startswith(_LIBRARY_DIRS)
                                  and not _numba_implements(value))
    return known


def _numba_implements(func):
    typing_context = numba.core.registry.cpu_target.typing_context
    try:
        typing_context.resolve_value_type(func)
    except (ValueError, numba.core.errors.TypingError):
        return False
    return True


_HELPERS = {}  # code object -> is_helper
_LIBRARY_DIRS = tuple(sorted({
    os.path.join(os.path.realpath(path), "")
    for path in (*(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib",
                                                           "platlib")),
                 site.getusersitepackages())}))
