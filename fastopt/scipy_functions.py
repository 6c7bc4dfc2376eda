r"""scipy.optimize's Rosenbrock functions, compiled: ``rosen``, ``rosen_der``, ``rosen_hess``
and ``rosen_hess_prod``, bit for bit.

.. math::

    f(x) = \sum_{i=0}^{d-2} 100\,(x_{i+1} - x_i^2)^2 + (1 - x_i)^2

scipy's tutorial minimizes ``rosen`` with ``jac=rosen_der`` and ``hess=rosen_hess``, and
many a drop-in test does the same. scipy writes them for any array library
(``array_namespace``), which numba cannot compile, so they would run at Python speed.
This module writes each for the 1-D float64 arrays fastopt passes, with scipy's
arithmetic operation for operation, and so returns the very same numbers:

* ``rosen`` sums its terms as ``xp.sum`` does, in NumPy's pairwise order
  (:func:`rosen_pairwise_sum`);
* a scalar square such as scipy's ``x[0]**2`` is a NumPy scalar power, which calls the C
  library's ``pow``: it differs from ``x[0] * x[0]`` in the last bit for ~0.1% of x, so
  it is computed with that ``pow`` (:func:`c_pow`); an array square (``x[1:-1]**2``) is
  NumPy's ``square``, ``x * x``.

``tests/test_scipy_functions.py`` compares every function with scipy's, bit for bit.

Each takes a 1-D float64 array (``rosen_hess_prod`` two of the same length), the
only input fastopt gives them. Importing fastopt registers each as numba's
implementation of scipy's function for such arrays
(``numba.extending.overload``): a user's ``@numba.njit`` code may call
``scipy.optimize.rosen`` itself, and :func:`fastopt.minimize` compiles scipy's functions
to these (:func:`compiled_equivalent`).
"""

import ctypes
import ctypes.util

import numpy as np
import scipy.optimize
from numba import types
from numba.extending import overload

from ._jit import _COMMON, called_kernel, driver, inlined


def _c_library_pow():
    # NumPy's scalar power calls pow() from the C math library the process has loaded
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c") or "ucrtbase"
    try:
        function = ctypes.CDLL(name).pow
    except (OSError, AttributeError):  # no C library found: x ** y, to the last bit or so
        return _power
    function.restype = ctypes.c_double
    function.argtypes = (ctypes.c_double, ctypes.c_double)
    return function


@driver
def _power(x, y):
    return x**y


c_pow = _c_library_pow()
"""The C library's ``pow(x, y)``, as NumPy's ``np.float64(x) ** y`` computes it.

numba's ``x ** 2.0`` would be folded by LLVM into ``x * x``; a call through this
ctypes pointer is not."""

# NumPy's pairwise summation: up to this many terms, 8 running partial sums
PAIRWISE_BLOCK = 128
MAX_HALVINGS = 64  # a range of n > 128 terms is halved fewer than log2(n) < 64 times


@inlined
def _rosen_term(x, i):
    a = x[i + 1] - x[i] * x[i]
    b = 1.0 - x[i]
    return 100.0 * (a * a) + b * b


@inlined
def _block_sum(x, first, n):
    """Rosenbrock's terms ``first`` to ``first + n - 1``, ``n <= 128``, in NumPy's order."""
    if n < 8:
        total = 0.0
        for i in range(first, first + n):
            total += _rosen_term(x, i)
        return total
    r0, r1 = _rosen_term(x, first), _rosen_term(x, first + 1)
    r2, r3 = _rosen_term(x, first + 2), _rosen_term(x, first + 3)
    r4, r5 = _rosen_term(x, first + 4), _rosen_term(x, first + 5)
    r6, r7 = _rosen_term(x, first + 6), _rosen_term(x, first + 7)
    end = first + n - n % 8
    for i in range(first + 8, end, 8):
        r0 += _rosen_term(x, i)
        r1 += _rosen_term(x, i + 1)
        r2 += _rosen_term(x, i + 2)
        r3 += _rosen_term(x, i + 3)
        r4 += _rosen_term(x, i + 4)
        r5 += _rosen_term(x, i + 5)
        r6 += _rosen_term(x, i + 6)
        r7 += _rosen_term(x, i + 7)
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, first + n):
        total += _rosen_term(x, i)
    return total


@called_kernel
def rosen_pairwise_sum(x, first, n):
    """The sum of Rosenbrock's terms ``first`` to ``first + n - 1`` in NumPy's order.

    NumPy's ``add.reduce`` of a contiguous float64 array (``pairwise_sum`` in NumPy's
    ``loops_utils.h``) sums fewer than 8 terms one after the other; up to 128 in 8
    running partial sums (term ``j`` into sum ``j mod 8``), added as
    ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the last ``n mod 8``
    terms one by one; more, split at ``n // 2`` rounded down to a multiple of 8, each
    half summed the same way and the two sums added. That recursion is walked here with
    a stack of the halves (a recursive function, loaded from numba's disk cache, crashed
    the process).
    """
    if n <= PAIRWISE_BLOCK:
        return _block_sum(x, first, n)
    firsts = np.empty(MAX_HALVINGS, dtype=np.int64)
    counts = np.empty(MAX_HALVINGS, dtype=np.int64)
    left_sums = np.empty(MAX_HALVINGS)
    right_to_do = np.empty(MAX_HALVINGS, dtype=np.bool_)
    depth = 0
    firsts[0], counts[0] = first, n
    while True:
        while counts[depth] > PAIRWISE_BLOCK:  # down the left halves
            half = counts[depth] // 2
            half -= half % 8
            right_to_do[depth] = True
            firsts[depth + 1], counts[depth + 1] = firsts[depth], half
            depth += 1
        total = _block_sum(x, firsts[depth], counts[depth])
        while True:  # up, adding each finished right half to its left half's sum
            if depth == 0:
                return total
            depth -= 1
            if right_to_do[depth]:
                right_to_do[depth] = False
                left_sums[depth] = total
                half = counts[depth] // 2
                half -= half % 8
                firsts[depth + 1] = firsts[depth] + half
                counts[depth + 1] = counts[depth] - half
                depth += 1
                break
            total = left_sums[depth] + total


@driver
def _index_error(d):
    # NumPy's message for scipy's x[1] (or, for an empty x, x[0])
    if d == 0:
        raise IndexError("index 0 is out of bounds for axis 0 with size 0")
    raise IndexError("index 1 is out of bounds for axis 0 with size 1")


@called_kernel
def rosen(x):
    r"""scipy.optimize.rosen: :math:`\sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`."""
    return rosen_pairwise_sum(x, 0, max(x.size - 1, 0))


@driver
def rosen_der(x):
    r"""scipy.optimize.rosen_der, the gradient:

    .. math::

        g_0 = -400 x_0 (x_1 - x_0^2) - 2 (1 - x_0), \quad
        g_{d-1} = 200 (x_{d-1} - x_{d-2}^2), \\
        g_i = 200 (x_i - x_{i-1}^2) - 400 (x_{i+1} - x_i^2) x_i - 2 (1 - x_i).
    """
    d = x.size
    if d < 2:
        _index_error(d)
    der = np.zeros_like(x)
    for i in range(1, d - 1):
        xm = x[i]
        der[i] = (200.0 * (xm - x[i - 1] * x[i - 1]) - 400.0 * (x[i + 1] - xm * xm) * xm
                  - 2.0 * (1.0 - xm))
    der[0] = -400.0 * x[0] * (x[1] - c_pow(x[0], 2.0)) - 2.0 * (1.0 - x[0])
    der[d - 1] = 200.0 * (x[d - 1] - c_pow(x[d - 2], 2.0))
    return der


@driver
def _hessian_diagonal(x, i):
    d = x.size
    if i == 0:
        return 1200.0 * c_pow(x[0], 2.0) - 400.0 * x[1] + 2.0
    if i == d - 1:
        return 200.0
    return 202.0 + 1200.0 * (x[i] * x[i]) - 400.0 * x[i + 1]


@driver
def rosen_hess(x):
    r"""scipy.optimize.rosen_hess, the Hessian: tridiagonal, with
    :math:`H_{i,i+1} = H_{i+1,i} = -400 x_i` and
    :math:`H_{ii} = 202 + 1200 x_i^2 - 400 x_{i+1}` (:math:`1200 x_0^2 - 400 x_1 + 2` and
    200 at the ends).

    scipy builds it as ``upper - lower + diagonal`` of three dense matrices, and so does
    this, entry by entry (the signs of zeros included).
    """
    d = x.size
    if d < 2:
        _index_error(d)
    H = np.empty((d, d))
    for i in range(d):
        diagonal = _hessian_diagonal(x, i)
        for j in range(d):
            upper = -400.0 * x[i] if j == i + 1 else 0.0
            lower = 400.0 * x[j] if i == j + 1 else 0.0
            H[i, j] = (upper - lower) + (diagonal if i == j else 0.0)
    return H


@driver
def rosen_hess_prod(x, p):
    """scipy.optimize.rosen_hess_prod: the Hessian at ``x`` times the vector ``p``."""
    d = x.size
    if d < 2:
        _index_error(d)
    if p.size != d:
        raise ValueError("operands could not be broadcast together: p must have x's shape")
    Hp = np.zeros(d)
    Hp[0] = (1200.0 * c_pow(x[0], 2.0) - 400.0 * x[1] + 2.0) * p[0] - 400.0 * x[0] * p[1]
    for i in range(1, d - 1):
        Hp[i] = (-400.0 * x[i - 1] * p[i - 1]
                 + (202.0 + 1200.0 * (x[i] * x[i]) - 400.0 * x[i + 1]) * p[i]
                 - 400.0 * x[i] * p[i + 1])
    Hp[d - 1] = -400.0 * x[d - 2] * p[d - 2] + 200.0 * p[d - 1]
    return Hp


def _is_float64_vector(value):
    return isinstance(value, types.Array) and value.ndim == 1 and value.dtype == types.float64


@overload(scipy.optimize.rosen, jit_options=_COMMON)
def _overload_rosen(x):
    if _is_float64_vector(x):
        return lambda x: rosen(x)


@overload(scipy.optimize.rosen_der, jit_options=_COMMON)
def _overload_rosen_der(x):
    if _is_float64_vector(x):
        return lambda x: rosen_der(x)


@overload(scipy.optimize.rosen_hess, jit_options=_COMMON)
def _overload_rosen_hess(x):
    if _is_float64_vector(x):
        return lambda x: rosen_hess(x)


@overload(scipy.optimize.rosen_hess_prod, jit_options=_COMMON)
def _overload_rosen_hess_prod(x, p):
    if _is_float64_vector(x) and _is_float64_vector(p):
        return lambda x, p: rosen_hess_prod(x, p)


_EQUIVALENTS = {
    scipy.optimize.rosen.__code__: rosen,
    scipy.optimize.rosen_der.__code__: rosen_der,
    scipy.optimize.rosen_hess.__code__: rosen_hess,
    scipy.optimize.rosen_hess_prod.__code__: rosen_hess_prod,
}


def compiled_equivalent(func):
    """This module's compiled version of ``func`` if it is one of scipy's functions (or a
    copy of one, as :func:`fastopt.snapshot.current_version` makes), else None."""
    return _EQUIVALENTS.get(getattr(func, "__code__", None))
