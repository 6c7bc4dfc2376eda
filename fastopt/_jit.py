"""Numba decorators shared by every compiled function in fastopt.

All kernels use ``error_model="numpy"``: division by zero gives ``inf``/``nan``
instead of raising, and LLVM may vectorise division and ``sqrt`` (numba's default
``error_model="python"`` prevents that). No ``fastmath`` flags are used anywhere:
they would let LLVM assume away the NaN/inf values that signal divergence, and
would reassociate sums, breaking bit-for-bit reproducibility.

* ``kernel`` -- leaf kernels that take no function arguments: cached on disk
  (outside the package folder, see :class:`PackageCache`) for calls from Python,
  and inlined at the numba-IR level into compiled callers (``inline="always"``).
  At small d numba's call boundary (reference counting of every array argument)
  costs ~40 ns, ten times a 2-D update.
* ``called_kernel`` -- a leaf kernel cached on disk and called, not inlined (a loop
  too large to inline everywhere: :func:`fastopt.scipy_functions.rosen_pairwise_sum`).
* ``parallel_kernel`` -- multithreaded kernels (``prange``), cached, not inlined.
* ``driver`` -- the loops, built per (rule, objective) by ``fastopt.loop.make_loop``
  and ``fastopt.block.make_block_loop``; they close over the user's functions
  (generated code with no source file), so they are not cached on disk. Batches
  run them on Python threads (``nogil``; see ``fastopt._workspace.run_in_threads``),
  not in numba ``prange`` regions, whose compile costs ~3 s per new objective.
* ``takes_functions`` -- a driver that takes the objective's compiled functions as
  arguments (the line searches, the second-order rules): numba code calling it gets
  a copy compiled for those functions, which calls them as constants, so the loops
  around them can be cached on disk.
* ``cached_closure`` -- a driver closure over fastopt's own kernels only (the
  portable loops of ``minimize`` and of the block driver, which take the address of
  the objective's compiled part), cached on disk under a key given explicitly (see
  :class:`ClosureCache`).
"""

import ast
import functools
import hashlib
import inspect
import os
import sys
import textwrap
import threading
from pathlib import Path

import numba
import numba.core.types
import numba.extending
from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    InTreeCacheLocator,
    UserProvidedCacheLocator,
    UserWideCacheLocator,
)

_COMMON = {"nogil": True, "error_model": "numpy"}

driver = numba.njit(**_COMMON)
inlined = numba.njit(inline="always", **_COMMON)


def _package_source_hash():
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


PACKAGE_SOURCE_HASH = _package_source_hash()


class _OutOfTreeCacheImpl(CompileResultCacheImpl):
    # numba's order, with the user-wide directory before the source's own __pycache__
    _locator_classes = [UserProvidedCacheLocator, UserWideCacheLocator, InTreeCacheLocator]


class PackageCache(FunctionCache):
    """numba's on-disk cache for fastopt's own functions, kept out of the package folder.

    In ``NUMBA_CACHE_DIR`` if it is set, else in the user-wide cache directory
    (``~/.cache/numba`` on Linux), as numba does for a read-only install; never, as
    numba's default would, in ``__pycache__`` next to the installed sources. Files
    there are not pip's: ``pip uninstall`` leaves them, and the folder left behind in
    site-packages is then imported as an empty namespace package that hides a later
    editable install (``pip install .`` then ``pip install -e .``).

    An entry is keyed, besides numba's key (the function's bytecode, its file's time
    stamp), by ``PACKAGE_SOURCE_HASH``: a kernel inlines kernels of other modules
    (Adam's :mod:`fastopt.floating`, Newton's :mod:`fastopt.linalg`), and numba would
    load it unchanged after an edit there.
    """

    _impl_class = _OutOfTreeCacheImpl

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), PACKAGE_SOURCE_HASH)


def _cached(**options):
    def decorate(py_func):
        dispatcher = numba.njit(**options, **_COMMON)(py_func)
        dispatcher._cache = PackageCache(py_func)  # what ``cache=True`` does, elsewhere
        return dispatcher
    return decorate


kernel = _cached(inline="always")
called_kernel = _cached()  # a leaf kernel called, not inlined
parallel_kernel = _cached(parallel=True)


class ClosureCache(PackageCache):
    """numba's on-disk cache for a closure, keyed by ``key`` instead of its cells.

    numba keys a cached closure by its cells pickled, and a dispatcher pickles with
    a per-process id, so a closure over kernels never hits the cache in a new
    process. ``key`` names what the cells hold (for the portable loop: the rule,
    the history and outline flags); ``PACKAGE_SOURCE_HASH`` invalidates entries
    when any fastopt source changes (numba itself only watches the closure's file).
    """

    def __init__(self, py_func, key):
        super().__init__(py_func)
        self._closure_key = (key, PACKAGE_SOURCE_HASH)

    def _index_key(self, sig, codegen):
        return (sig, codegen.magic_tuple(), self._closure_key)


def unique_qualname(py_func, key):
    """Give ``py_func`` a name of its own for ``key`` (numba's symbol names come from it).

    numba names a closure's compiled code after its qualified name and a per-process
    counter, and links a callee into its caller's library with a one-definition-rule
    linkage. Two closures of the same source with different cells, compiled in two
    processes, can then get one symbol name; loaded from the disk cache into one process,
    both callers call whichever definition was loaded first. A name that includes a
    digest of ``key`` keeps different closures apart.
    """
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    py_func.__qualname__ = f"{py_func.__qualname__}_{digest}"
    return py_func


def takes_functions(*names):
    """A driver whose arguments ``names`` are compiled functions: one copy per those functions.

    Numba compiles a call ``search(fg, x, ...)`` from compiled code, where ``fg`` is a
    dispatcher, by passing the address of the Python dispatcher object: a "dynamic
    global", and numba refuses to cache a library that holds one. So a loop that hands
    the objective to a line search could not be cached, and each new objective of
    BFGS compiled its loop: ~6 s. Here the call from compiled code is an inlined stub
    that calls the copy of the function for those very dispatchers: its source without
    those parameters, compiled once per them with the dispatchers as globals, which
    numba calls directly. (Inlining the function's body into such a copy instead
    tripled the compile.)
    From Python (an objective numba cannot compile) the function runs as written.
    """
    def decorate(py_func):
        params = list(inspect.signature(py_func).parameters)
        if not set(names) <= set(params):
            raise ValueError(f"{py_func.__name__} has no parameters {names}")
        rest = ", ".join(p for p in params if p not in names)
        everything = ", ".join(params)
        source = ast.parse(textwrap.dedent(inspect.getsource(py_func)))
        definition = source.body[0]
        definition.decorator_list = []
        definition.args.args = [a for a in definition.args.args if a.arg not in names]
        ast.increment_lineno(source, py_func.__code__.co_firstlineno - 1)
        code = compile(source, py_func.__code__.co_filename, "exec")
        copies = {}

        def copy_for(dispatchers):
            """``py_func`` without the parameters ``names``: globals bound to ``dispatchers``."""
            if dispatchers not in copies:
                namespace = {**py_func.__globals__, **dict(zip(names, dispatchers, strict=True))}
                exec(code, namespace)
                key = tuple(f"{d.py_func.__module__}.{d.py_func.__qualname__}"
                            for d in dispatchers)
                copy = unique_qualname(namespace[py_func.__name__],
                                       (py_func.__module__, py_func.__qualname__, key))
                copies[dispatchers] = driver(copy)
            return copies[dispatchers]

        def implementation(*function_types):
            if not all(isinstance(t, numba.core.types.Dispatcher) for t in function_types):
                return None
            return make_impl(copy_for(tuple(t.dispatcher for t in function_types)))

        def stub(*args):
            return py_func(*args)

        namespace = {"implementation": implementation}
        exec(f"def typer({everything}):\n    return implementation({', '.join(names)})\n"
             f"def make_impl(copy):\n    def impl({everything}):\n"
             f"        return copy({rest})\n    return impl\n", namespace)
        make_impl = namespace["make_impl"]
        numba.extending.overload(stub, inline="always", jit_options=_COMMON)(namespace["typer"])
        functools.update_wrapper(stub, py_func)
        stub.py_func = py_func
        return stub

    return decorate


def cached_closure(py_func, key):
    """``driver(py_func)`` cached on disk under ``key`` (see :class:`ClosureCache`)."""
    dispatcher = driver(unique_qualname(py_func, key))
    dispatcher._cache = ClosureCache(py_func, key)
    return dispatcher


def closure_driver(py_func, cache_key=None):
    """A driver closure: cached on disk under ``cache_key`` and its name if a key is given
    (the portable loops), else compiled in each process (loops around user code)."""
    if cache_key is None:
        return driver(py_func)
    return cached_closure(py_func, (*cache_key, py_func.__name__))

# numba's default "workqueue" threading layer aborts the process when two Python threads
# launch parallel kernels at once. The step API's parallel kernels hold this lock, so
# concurrent calls from user threads queue up instead (each already uses every core).
parallel_lock = threading.Lock()


def parallel_kernels_usable():
    """False in a process forked after its parent ran a parallel kernel on GNU OpenMP.

    numba's "omp" threading layer on Linux is GNU OpenMP, which does not survive a
    ``fork``: numba terminates a child that launches a parallel kernel ("fork() called
    from a process already using GNU OpenMP"), and a ``multiprocessing`` pool (whose
    default start method is fork on Linux before Python 3.14) then waits for it forever.
    In such a child the step API runs its serial kernels instead, as torch does after a
    fork; they give the same numbers.
    """
    return not _forked_after_gnu_openmp


_forked_after_gnu_openmp = False


def _after_fork_in_child():
    global _forked_after_gnu_openmp
    try:
        layer = numba.threading_layer()
    except ValueError:  # the parent never launched a parallel kernel
        return
    if layer == "omp" and sys.platform.startswith("linux"):
        _forked_after_gnu_openmp = True


os.register_at_fork(after_in_child=_after_fork_in_child)
