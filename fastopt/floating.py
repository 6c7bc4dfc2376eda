r"""Exact floating-point building blocks: a fused multiply-add, and division by a constant.

Division and square root share one unit of the CPU, which on x86 completes a
256-bit vector of doubles only every several cycles; multiplies and fused
multiply-adds issue two per cycle. Adam in torch's arithmetic divides every
coordinate by the step's :math:`\sqrt{1 - \beta_2^t}`, the same for all of them, so
that division can be done with fused multiply-adds and the reciprocal of the
divisor, computed once, and still give the correctly rounded quotient, bit for bit
what ``x / c`` gives (:func:`divide_by_constant`).
"""

import platform

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._jit import inlined


def _fma_in_hardware():
    """Whether numba compiles for a CPU with a fused multiply-add instruction.

    Without one (``NUMBA_CPU_NAME=generic`` on x86-64, as set for a portable cache)
    :func:`fma` is a call to the C library's ``fma``, ~6x slower than a division.
    """
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True  # in AArch64's base instruction set
    name, features = numba.config.CPU_NAME, numba.config.CPU_FEATURES
    if name in (None, "host"):
        features = llvmlite.binding.get_host_cpu_features().flatten()
    flags = (features or "").split(",")
    if "+fma" in flags or "-fma" in flags:
        return "+fma" in flags
    return name not in ("generic", "x86-64", "x86-64-v2")


FMA_IN_HARDWARE = _fma_in_hardware()


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM's ``llvm.fma``: the CPU's instruction, or
    the C library's ``fma`` where there is none; see ``FMA_IN_HARDWARE``)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):
        double = ir.DoubleType()
        function = builder.module.declare_intrinsic(
            "llvm.fma", [double], ir.FunctionType(double, [double, double, double]))
        return builder.call(function, args)

    return signature, codegen


# divide_by_constant is exact for |x| and |c| in these ranges (no underflow or overflow)
X_RANGE = (2.0**-900, 2.0**900)
C_RANGE = (2.0**-60, 2.0**60)


@inlined
def reciprocal_pair(c):
    r"""``(hi, lo)`` for :func:`divide_by_constant`: ``hi`` = RN(1/c), ``lo`` ~ 1/c - hi.

    ``1 - c \cdot hi`` is exact in a fused multiply-add (the remainder of a correctly
    rounded reciprocal is a float), so ``hi + lo`` is 1/c to about 2^-106. For ``|c|``
    outside ``C_RANGE`` (0, inf and NaN among them) ``lo`` is NaN, which makes
    :func:`divide_by_constant` multiply by ``hi`` alone.
    """
    hi = 1.0 / c
    if not C_RANGE[0] <= abs(c) <= C_RANGE[1]:
        return hi, np.nan
    return hi, fma(-c, hi, 1.0) / c


@inlined
def divide_by_constant(x, c, hi, lo):
    r"""``x / c`` bit for bit as IEEE division gives it, from ``(hi, lo) =
    reciprocal_pair(c)``: four multiplies and fused multiply-adds, no division.

    .. math::

        q = \mathrm{RN}(x\,hi + \mathrm{RN}(x\,lo)), \qquad
        r = x - q c \ \text{(exact)}, \qquad
        q' = \mathrm{RN}(q + r\,hi) = \mathrm{RN}(x / c)

    ``q`` is within an ulp of x/c (``hi + lo`` is 1/c to 2^-106), so ``r`` is a float,
    computed exactly, and Markstein's theorem (``hi`` within half an ulp of 1/c, ``q``
    within an ulp of x/c) makes ``q'`` the correctly rounded quotient when nothing
    underflows or overflows: for ``|x|`` in ``X_RANGE`` and ``|c|`` in ``C_RANGE``.
    Otherwise the result is ``x * hi``. That is ``x / c`` for x = 0, inf or NaN when
    ``|c|`` is in ``C_RANGE``, and for c = 0, inf or NaN when x is in ``X_RANGE`` or
    is 0, inf or NaN: exact, therefore, for every such pair of x and c. Elsewhere (a
    finite c or x outside its range) it can be off by ulps, or be inf or NaN where x / c
    is finite.
    """
    q = fma(x, hi, x * lo)
    q = fma(fma(-q, c, x), hi, q)
    in_range = (abs(x) >= X_RANGE[0]) & (abs(x) <= X_RANGE[1]) & (lo == lo)
    return q if in_range else x * hi
