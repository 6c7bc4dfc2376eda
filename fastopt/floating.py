r"""Exact floating-point building blocks: a fused multiply-add, and division by a constant.

Division and square root share one unit of the CPU, which on x86 completes a
256-bit vector of doubles only every several cycles; multiplies and fused
multiply-adds issue two per cycle. Adam in torch's arithmetic divides every
coordinate by the step's :math:`\sqrt{1 - \beta_2^t}`, the same for all of them, so
that division can be done with fused multiply-adds and the reciprocal of the
divisor, computed once, and still give the correctly rounded quotient, bit for bit
what ``x / c`` gives (:func:`divide_by_constant`).
"""

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._jit import inlined


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM's ``llvm.fma``: the CPU's instruction, or
    the C library's ``fma`` where there is none)."""
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
    computed exactly, and Markstein's theorem (``hi`` is 1/c to a relative error below
    2^-53, and ``q`` within an ulp) makes ``q'`` the correctly rounded quotient when
    nothing underflows or overflows: for ``|x|`` in ``X_RANGE`` and ``|c|`` in
    ``C_RANGE``. Otherwise the result is ``x * hi``, which is ``x / c`` for x = 0, inf
    or NaN, and for c = 0, inf or NaN; exact therefore for every ``x`` in ``X_RANGE``
    or not finite or zero, and every ``c`` in ``C_RANGE`` or not finite or zero.
    (Outside those, a finite x or c, the product can be an ulp off.)
    """
    q = fma(x, hi, x * lo)
    q = fma(fma(-q, c, x), hi, q)
    in_range = (abs(x) >= X_RANGE[0]) & (abs(x) <= X_RANGE[1]) & (lo == lo)
    return q if in_range else x * hi
