"""Numba decorators shared by every compiled function in fastopt.

All kernels use ``error_model="numpy"``: division by zero gives ``inf``/``nan``
instead of raising, and LLVM may vectorise division and ``sqrt`` (numba's default
``error_model="python"`` prevents that). No ``fastmath`` flags are used anywhere:
they would let LLVM assume away the NaN/inf values that signal divergence, and
would reassociate sums, breaking bit-for-bit reproducibility.

* ``kernel`` -- leaf kernels that take no function arguments: cached on disk
  for calls from Python, and inlined at the numba-IR level into compiled
  callers (``inline="always"``). At small d numba's call boundary (reference
  counting of every array argument) costs ~40 ns, ten times a 2-D update.
* ``parallel_kernel`` -- multithreaded kernels (``prange``), cached, not inlined.
* ``driver`` / ``parallel_driver`` -- the loops, built per (rule, objective) by
  ``fastopt.loop.make_loop``; they close over user functions, so they are not
  cached on disk (numba cannot cache closures over other dispatchers).
"""

import threading

import numba

_COMMON = {"nogil": True, "error_model": "numpy"}

kernel = numba.njit(cache=True, inline="always", **_COMMON)
parallel_kernel = numba.njit(cache=True, parallel=True, **_COMMON)
driver = numba.njit(**_COMMON)
inlined = numba.njit(inline="always", **_COMMON)
parallel_driver = numba.njit(parallel=True, **_COMMON)

# numba's default "workqueue" threading layer aborts the process when two Python threads
# launch parallel kernels at once. Every parallel launch in fastopt holds this lock, so
# concurrent calls from user threads queue up instead (each already uses every core).
parallel_lock = threading.Lock()
