"""Built-in test functions with gradients, Hessians and known minima.

Each is a :class:`TestFunction` whose ``fun``, ``grad`` and ``hess`` are compiled
with numba (and callable from user ``@njit`` code), e.g.::

    from fastopt.functions import rosenbrock
    res = fastopt.minimize(rosenbrock.fun, [-1.2, 1.0], jac=rosenbrock.grad, method="adam")
    rosenbrock.minimizers(2)   # array([[1., 1.]])

``FUNCTIONS`` maps names to them. ``dim`` is None for functions of any dimension.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._jit import kernel


class TestFunction(NamedTuple):
    """A test function and what is known about it."""

    name: str
    fun: Callable  # fun(x) -> float
    grad: Callable  # grad(x) -> ndarray (d,)
    hess: Callable  # hess(x) -> ndarray (d, d)
    fmin: Callable  # fmin(d) -> the global minimum value
    minimizers: Callable  # minimizers(d) -> ndarray (k, d) of global minimizers
    bounds: tuple  # (low, high) of the usual search box, per coordinate
    dim: int = None  # fixed dimension, or None for any
    fg: Callable = None  # fg(x, g) -> f, writes the gradient into g (jac="inplace")
    block: Callable = None  # block(X, G, F) on (d, B) blocks of starts (jac="block")

    def minimize_kwargs(self):
        """``fun`` and ``jac`` for the fastest protocol for one start (``minimize``)."""
        if self.fg is not None:
            return {"fun": self.fg, "jac": "inplace"}
        return {"fun": self.fun, "jac": self.grad}

    def batch_kwargs(self, d=None):
        """``fun`` and ``jac`` for the fastest protocol for many starts (``minimize_batch``).

        The block form pays off where starts run in lockstep blocks
        (``d <= fastopt.block.MAX_BLOCK_DIM``); above that, pass ``d`` to get the point
        form, which vectorizes over coordinates.
        """
        from .block import MAX_BLOCK_DIM

        if self.block is not None and (d is None or d <= MAX_BLOCK_DIM):
            return {"fun": self.block, "jac": "block"}
        return self.minimize_kwargs()

    __test__ = False  # not a pytest class


# --- sphere -----------------------------------------------------------------------
@kernel
def sphere_fun(x):
    """f(x) = sum x_i^2."""
    s = 0.0
    for i in range(x.size):
        s += x[i] * x[i]
    return s


@kernel
def sphere_grad(x):
    return 2.0 * x


@kernel
def sphere_hess(x):
    return 2.0 * np.eye(x.size)


# --- Rosenbrock -------------------------------------------------------------------
# The value is a sum of d - 1 terms. Summed one after another, each add waits for the
# one before (~0.65 ns a term here); for more than VALUE_LANES terms it is summed in
# VALUE_LANES interleaved partial sums instead (term i into partial i % VALUE_LANES, then
# the partials in order), which LLVM vectorizes: 0.26 ns a term at d = 1000. Up to
# VALUE_LANES terms both orders are the same sum, bit for bit, so the lockstep block
# form (d <= 64) keeps its plain loop.
VALUE_LANES = 64


@kernel
def rosenbrock_term(x_i, x_next):
    """One term of the sum, :math:`100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`."""
    a = x_next - x_i * x_i
    b = 1.0 - x_i
    return 100.0 * a * a + b * b


@kernel
def rosenbrock_lane_value(x, partial):
    """Rosenbrock's value summed in ``VALUE_LANES`` partial sums, kept in ``partial``.

    ``partial`` is scratch of at least ``VALUE_LANES`` elements. Indices are unsigned:
    with a signed ``c * VALUE_LANES + j`` numba wraps negative indices around, LLVM
    cannot rule them out and gathers each load (2.6x slower). A slice of ``x`` per chunk
    would avoid that too, at the cost of reference counting each slice.
    """
    n_terms = x.size - 1
    for j in range(VALUE_LANES):
        partial[j] = 0.0
    n_chunks = n_terms // VALUE_LANES
    for c in range(n_chunks):
        first = np.uint64(c * VALUE_LANES)
        for j in range(VALUE_LANES):
            i = first + np.uint64(j)
            partial[j] += rosenbrock_term(x[i], x[i + np.uint64(1)])
    first = n_chunks * VALUE_LANES
    for j in range(n_terms - first):
        i = np.uint64(first + j)
        partial[j] += rosenbrock_term(x[i], x[i + np.uint64(1)])
    s = 0.0
    for j in range(VALUE_LANES):
        s += partial[j]
    return s


@kernel
def rosenbrock_fun(x):
    """f(x) = sum_{i<d-1} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2; minimum 0 at (1, ..., 1).

    Summed as :func:`rosenbrock_fg` sums it, so both give the same bits.
    """
    n_terms = x.size - 1
    s = 0.0
    if n_terms <= VALUE_LANES:
        for i in range(n_terms):
            s += rosenbrock_term(x[i], x[i + 1])
    else:
        s = rosenbrock_lane_value_unvectorized(x)
    return s


@kernel
def rosenbrock_lane_value_unvectorized(x):
    """:func:`rosenbrock_lane_value` without scratch: four partial sums at a time.

    The same bits, at the serial sum's speed (0.67 ns a term; the strided terms do not
    vectorize, four chains of adds keep the scalar units busy). Scratch for the
    vectorized form would be an allocation in :func:`rosenbrock_fun`, which, even in its
    branch not taken at 2-D, cost the 2-D loop two atomic reference counts.
    """
    n_terms = x.size - 1
    s = 0.0
    for lane in range(0, VALUE_LANES, 4):
        p0 = 0.0
        p1 = 0.0
        p2 = 0.0
        p3 = 0.0
        i = lane
        while i + 3 < n_terms:
            p0 += rosenbrock_term(x[i], x[i + 1])
            p1 += rosenbrock_term(x[i + 1], x[i + 2])
            p2 += rosenbrock_term(x[i + 2], x[i + 3])
            p3 += rosenbrock_term(x[i + 3], x[i + 4])
            i += VALUE_LANES
        if i < n_terms:  # the last terms of these lanes: fewer than four
            p0 += rosenbrock_term(x[i], x[i + 1])
        if i + 1 < n_terms:
            p1 += rosenbrock_term(x[i + 1], x[i + 2])
        if i + 2 < n_terms:
            p2 += rosenbrock_term(x[i + 2], x[i + 3])
        s += p0
        s += p1
        s += p2
        s += p3
    return s


@kernel
def rosenbrock_grad(x):
    n = x.size
    g = np.zeros(n)
    for i in range(n - 1):
        a = x[i + 1] - x[i] * x[i]
        g[i] += -400.0 * x[i] * a - 2.0 * (1.0 - x[i])
        g[i + 1] += 200.0 * a
    return g


@kernel
def rosenbrock_hess(x):
    n = x.size
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0
        H[i + 1, i + 1] += 200.0
        H[i, i + 1] += -400.0 * x[i]
        H[i + 1, i] += -400.0 * x[i]
    return H


@kernel
def rosenbrock_fg(x, g):
    """Rosenbrock value, with its gradient written into ``g`` (no allocation).

    With :math:`a_i = x_{i+1} - x_i^2`: :math:`g_i = 200 a_{i-1} - 400 x_i a_i - 2 (1 - x_i)`,
    each :math:`g_i` computed whole: no update of :math:`g_{i+1}` for the next iteration to
    wait for (d = 1000: 1.03 against 1.33 us). Above ``VALUE_LANES`` terms the value is
    summed in partial sums kept in ``g``, before the gradient overwrites it.

    The shape of the code is measured, not arbitrary: numba inlines this into the 2-D
    loop, where some shapes leave an atomic incref and decref of an array on every call
    that numba's reference-count pruning does not remove (60 instead of 29 ns an
    iteration). An early ``return`` did, and so did the serial sum moved into a helper;
    the serial sum written out in the first branch and the lanes as a helper in the
    second do not. Likewise in :func:`rosenbrock_fun`.
    """
    n = x.size
    s = 0.0
    if n - 1 <= VALUE_LANES:
        for i in range(n - 1):
            s += rosenbrock_term(x[i], x[i + 1])
    else:
        s = rosenbrock_lane_value(x, g)
    for i in range(n):
        xi = x[i]
        gi = 0.0
        if i > 0:
            gi += 200.0 * (xi - x[i - 1] * x[i - 1])
        if i < n - 1:
            gi += -400.0 * xi * (x[i + 1] - xi * xi) - 2.0 * (1.0 - xi)
        g[i] = gi
    return s


@kernel
def rosenbrock_block(X, G, F):
    """Rosenbrock for a block of starts: ``X``, ``G`` (d, B), ``F`` (B,); per start the same
    arithmetic, in the same order, as :func:`rosenbrock_fg` (rows outer, starts inner).

    Above ``VALUE_LANES`` terms, each of :func:`rosenbrock_lane_value`'s partial sums is
    accumulated in the last row of ``G`` (scratch until the gradient overwrites it).
    """
    d, B = X.shape
    for b in range(B):
        F[b] = 0.0
    if d - 1 <= VALUE_LANES:
        for i in range(d - 1):
            for b in range(B):
                F[b] += rosenbrock_term(X[i, b], X[i + 1, b])
    else:
        last = d - 1
        for lane in range(VALUE_LANES):
            for b in range(B):
                G[last, b] = 0.0
            for i in range(lane, d - 1, VALUE_LANES):
                for b in range(B):
                    G[last, b] += rosenbrock_term(X[i, b], X[i + 1, b])
            for b in range(B):
                F[b] += G[last, b]
    if d == 1:
        for b in range(B):
            G[0, b] = 0.0
    else:  # first row, middle rows, last row: no branch in the loops over starts
        for b in range(B):
            x0 = X[0, b]
            G[0, b] = 0.0 + (-400.0 * x0 * (X[1, b] - x0 * x0) - 2.0 * (1.0 - x0))
        for i in range(1, d - 1):
            for b in range(B):
                xp = X[i - 1, b]
                xi = X[i, b]
                a = X[i + 1, b] - xi * xi
                G[i, b] = (0.0 + 200.0 * (xi - xp * xp)) + (-400.0 * xi * a - 2.0 * (1.0 - xi))
        for b in range(B):
            xp = X[d - 2, b]
            G[d - 1, b] = 0.0 + 200.0 * (X[d - 1, b] - xp * xp)


@kernel
def sphere_block(X, G, F):
    d, B = X.shape
    for b in range(B):
        F[b] = 0.0
    for i in range(d):
        for b in range(B):
            F[b] += X[i, b] * X[i, b]
            G[i, b] = 2.0 * X[i, b]


@kernel
def sphere_fg(x, g):
    s = 0.0
    for i in range(x.size):
        s += x[i] * x[i]
        g[i] = 2.0 * x[i]
    return s


# --- Rastrigin --------------------------------------------------------------------
@kernel
def rastrigin_fun(x):
    """f(x) = 10 d + sum x_i^2 - 10 cos(2 pi x_i); minimum 0 at 0."""
    s = 10.0 * x.size
    for i in range(x.size):
        s += x[i] * x[i] - 10.0 * math.cos(2.0 * math.pi * x[i])
    return s


@kernel
def rastrigin_grad(x):
    g = np.empty(x.size)
    for i in range(x.size):
        g[i] = 2.0 * x[i] + 20.0 * math.pi * math.sin(2.0 * math.pi * x[i])
    return g


@kernel
def rastrigin_hess(x):
    H = np.zeros((x.size, x.size))
    for i in range(x.size):
        H[i, i] = 2.0 + 40.0 * math.pi * math.pi * math.cos(2.0 * math.pi * x[i])
    return H


@kernel
def rastrigin_fg(x, g):
    s = 10.0 * x.size
    for i in range(x.size):
        w = 2.0 * math.pi * x[i]
        s += x[i] * x[i] - 10.0 * math.cos(w)
        g[i] = 2.0 * x[i] + 20.0 * math.pi * math.sin(w)
    return s


@kernel
def rastrigin_block(X, G, F):
    d, B = X.shape
    for b in range(B):
        F[b] = 10.0 * d
    for i in range(d):
        for b in range(B):
            w = 2.0 * math.pi * X[i, b]
            F[b] += X[i, b] * X[i, b] - 10.0 * math.cos(w)
            G[i, b] = 2.0 * X[i, b] + 20.0 * math.pi * math.sin(w)


# --- Ackley -----------------------------------------------------------------------
@kernel
def ackley_fun(x):
    """f(x) = -20 exp(-0.2 sqrt(mean x^2)) - exp(mean cos 2 pi x) + 20 + e; minimum 0 at 0."""
    n = x.size
    s2 = 0.0
    sc = 0.0
    for i in range(n):
        s2 += x[i] * x[i]
        sc += math.cos(2.0 * math.pi * x[i])
    return -20.0 * math.exp(-0.2 * math.sqrt(s2 / n)) - math.exp(sc / n) + 20.0 + math.e


@kernel
def ackley_grad(x):
    n = x.size
    s2 = 0.0
    sc = 0.0
    for i in range(n):
        s2 += x[i] * x[i]
        sc += math.cos(2.0 * math.pi * x[i])
    r = math.sqrt(s2 / n)
    e1 = math.exp(-0.2 * r)
    e2 = math.exp(sc / n)
    g = np.zeros(n)
    for i in range(n):
        if r > 0.0:
            g[i] = 4.0 * e1 * x[i] / (n * r)
        g[i] += e2 * 2.0 * math.pi * math.sin(2.0 * math.pi * x[i]) / n
    return g


# --- Himmelblau -------------------------------------------------------------------
@kernel
def himmelblau_fun(x):
    """f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2; four minima of value 0."""
    a = x[0] * x[0] + x[1] - 11.0
    b = x[0] + x[1] * x[1] - 7.0
    return a * a + b * b


@kernel
def himmelblau_grad(x):
    a = x[0] * x[0] + x[1] - 11.0
    b = x[0] + x[1] * x[1] - 7.0
    return np.array([4.0 * x[0] * a + 2.0 * b, 2.0 * a + 4.0 * x[1] * b])


@kernel
def himmelblau_hess(x):
    a = x[0] * x[0] + x[1] - 11.0
    b = x[0] + x[1] * x[1] - 7.0
    h01 = 4.0 * x[0] + 4.0 * x[1]
    return np.array([[4.0 * a + 8.0 * x[0] * x[0] + 2.0, h01],
                     [h01, 2.0 + 4.0 * b + 8.0 * x[1] * x[1]]])


# --- Beale ------------------------------------------------------------------------
@kernel
def beale_fun(x):
    """f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2; 0 at (3, 0.5)."""
    t1 = 1.5 - x[0] + x[0] * x[1]
    t2 = 2.25 - x[0] + x[0] * x[1] ** 2
    t3 = 2.625 - x[0] + x[0] * x[1] ** 3
    return t1 * t1 + t2 * t2 + t3 * t3


@kernel
def beale_grad(x):
    u, v = x[0], x[1]
    t1 = 1.5 - u + u * v
    t2 = 2.25 - u + u * v**2
    t3 = 2.625 - u + u * v**3
    gu = 2.0 * (t1 * (v - 1.0) + t2 * (v**2 - 1.0) + t3 * (v**3 - 1.0))
    gv = 2.0 * (t1 * u + t2 * 2.0 * u * v + t3 * 3.0 * u * v**2)
    return np.array([gu, gv])


@kernel
def beale_hess(x):
    u, v = x[0], x[1]
    t1 = 1.5 - u + u * v
    t2 = 2.25 - u + u * v**2
    t3 = 2.625 - u + u * v**3
    huu = 2.0 * ((v - 1.0) ** 2 + (v**2 - 1.0) ** 2 + (v**3 - 1.0) ** 2)
    huv = 2.0 * (u * (v - 1.0) + t1 + 2.0 * u * v * (v**2 - 1.0) + 2.0 * v * t2
                 + 3.0 * u * v**2 * (v**3 - 1.0) + 3.0 * v**2 * t3)
    hvv = 2.0 * (u * u + 4.0 * u * u * v * v + 2.0 * u * t2 + 9.0 * u * u * v**4
                 + 6.0 * u * v * t3)
    return np.array([[huu, huv], [huv, hvv]])


# --- Styblinski-Tang --------------------------------------------------------------
@kernel
def styblinski_tang_fun(x):
    """f(x) = 0.5 sum x_i^4 - 16 x_i^2 + 5 x_i; minimum -39.16617 d at x_i = -2.903534."""
    s = 0.0
    for i in range(x.size):
        s += x[i] ** 4 - 16.0 * x[i] * x[i] + 5.0 * x[i]
    return 0.5 * s


@kernel
def styblinski_tang_grad(x):
    g = np.empty(x.size)
    for i in range(x.size):
        g[i] = 2.0 * x[i] ** 3 - 16.0 * x[i] + 2.5
    return g


@kernel
def styblinski_tang_hess(x):
    H = np.zeros((x.size, x.size))
    for i in range(x.size):
        H[i, i] = 6.0 * x[i] * x[i] - 16.0
    return H


@kernel
def styblinski_tang_fg(x, g):
    s = 0.0
    for i in range(x.size):
        s += x[i] ** 4 - 16.0 * x[i] * x[i] + 5.0 * x[i]
        g[i] = 2.0 * x[i] ** 3 - 16.0 * x[i] + 2.5
    return 0.5 * s


# --- the seeds' wavy 1-D function -------------------------------------------------
@kernel
def wavy_fun(x):
    """f(x) = (0.15 x)^2 + cos x + sin(3x)/3 + cos(5x)/5 + sin(7x)/7: steep walls, many minima."""
    t = x[0]
    return ((0.15 * t) ** 2 + math.cos(t) + math.sin(3.0 * t) / 3.0 + math.cos(5.0 * t) / 5.0
            + math.sin(7.0 * t) / 7.0)


@kernel
def wavy_grad(x):
    t = x[0]
    return np.array([2.0 * 0.0225 * t - math.sin(t) + math.cos(3.0 * t) - math.sin(5.0 * t)
                     + math.cos(7.0 * t)])


@kernel
def wavy_hess(x):
    t = x[0]
    return np.array([[0.045 - math.cos(t) - 3.0 * math.sin(3.0 * t) - 5.0 * math.cos(5.0 * t)
                      - 7.0 * math.sin(7.0 * t)]])


_ST_MIN = -2.903534027771177
_WAVY_MIN = -2.9344735061226963

sphere = TestFunction("sphere", sphere_fun, sphere_grad, sphere_hess, lambda d: 0.0,
                      lambda d: np.zeros((1, d)), (-5.0, 5.0), fg=sphere_fg,
                      block=sphere_block)
rosenbrock = TestFunction("rosenbrock", rosenbrock_fun, rosenbrock_grad, rosenbrock_hess,
                          lambda d: 0.0, lambda d: np.ones((1, d)), (-2.0, 2.0), fg=rosenbrock_fg,
                          block=rosenbrock_block)
rastrigin = TestFunction("rastrigin", rastrigin_fun, rastrigin_grad, rastrigin_hess,
                         lambda d: 0.0, lambda d: np.zeros((1, d)), (-5.12, 5.12), fg=rastrigin_fg,
                         block=rastrigin_block)
ackley = TestFunction("ackley", ackley_fun, ackley_grad, None, lambda d: 0.0,
                      lambda d: np.zeros((1, d)), (-32.768, 32.768))
himmelblau = TestFunction(
    "himmelblau", himmelblau_fun, himmelblau_grad, himmelblau_hess, lambda d: 0.0,
    lambda d: np.array([[3.0, 2.0], [-2.805118086952745, 3.131312518250573],
                        [-3.779310253377747, -3.283185991286170],
                        [3.584428340330492, -1.848126526964404]]),
    (-5.0, 5.0), dim=2)
beale = TestFunction("beale", beale_fun, beale_grad, beale_hess, lambda d: 0.0,
                     lambda d: np.array([[3.0, 0.5]]), (-4.5, 4.5), dim=2)
styblinski_tang = TestFunction(
    "styblinski_tang", styblinski_tang_fun, styblinski_tang_grad, styblinski_tang_hess,
    lambda d: d * styblinski_tang_fun(np.array([_ST_MIN])), lambda d: np.full((1, d), _ST_MIN),
    (-5.0, 5.0), fg=styblinski_tang_fg)
wavy = TestFunction("wavy", wavy_fun, wavy_grad, wavy_hess,
                    lambda d: wavy_fun(np.array([_WAVY_MIN])),
                    lambda d: np.array([[_WAVY_MIN]]), (-20.0, 20.0), dim=1)

FUNCTIONS = {f.name: f for f in (sphere, rosenbrock, rastrigin, ackley, himmelblau, beale,
                                 styblinski_tang, wavy)}
