r"""Small dense linear algebra written as loops, for the second-order rules.

Every start of a batch solves its own d x d system once per iteration; at the
sizes these rules are meant for (d up to a few dozen) a plain loop that numba
inlines into the start's loop is faster than a LAPACK call (whose fixed cost
is microseconds) and allocates nothing.

* :func:`ldl_factor` / :func:`ldl_solve` -- square-root-free Cholesky
  :math:`A = L D L^T` of a symmetric matrix, in place. Succeeds exactly when
  ``A`` is (numerically) positive definite. For d = 1 the solve is ``b / a``, bit
  for bit, so Newton's step is the textbook :math:`g / h`.
* :func:`lu_solve` -- Gaussian elimination with partial pivoting, in place, for
  the symmetric indefinite systems of regularized Newton (and to tell a singular
  matrix from an indefinite one).
* :func:`lbfgs_two_loop` -- the L-BFGS two-loop recursion :math:`q \leftarrow H_k q`;
  :func:`lbfgs_new_pair` stores a new pair and the products the recursion needs.
* :func:`bfgs_inverse_update` -- the BFGS update of an inverse Hessian.

All are ``fastopt._jit.kernel``: cached, inlined into compiled callers, and
callable from Python and from user ``@njit`` code. ``tests/test_second_order.py``
checks each against a plain NumPy reference.
"""

import numpy as np

from ._jit import kernel

EPS = float(np.finfo(np.float64).eps)

# ldl_factor results
FACTOR_OK = 0
FACTOR_NOT_POSITIVE = 1  # a pivot below -tol: A is indefinite (or negative definite)
FACTOR_TINY_PIVOT = 2  # |pivot| <= tol: A is singular to working precision, or indefinite


@kernel
def dot(a, b):
    """``a @ b`` for 1-D arrays, as two interleaved partial sums (even and odd indices).

    Two sums halve the chain of dependent additions, which is what a short dot
    product's time is; the result differs from ``np.dot`` only by rounding.
    """
    n = a.size
    s0 = 0.0
    s1 = 0.0
    i = 0
    while i + 2 <= n:
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        i += 2
    if i < n:
        s0 += a[i] * b[i]
    return s0 + s1


@kernel
def symmetrize(A):
    """Replace ``A`` by ``(A + A.T) / 2`` in place (a no-op, bit for bit, if A is symmetric)."""
    n = A.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            s = 0.5 * (A[i, j] + A[j, i])
            A[i, j] = s
            A[j, i] = s


@kernel
def pivot_tolerance(A):
    """``n * eps * max_i |A_ii|``: a pivot this small (relative to the diagonal) counts as zero."""
    n = A.shape[0]
    scale = 0.0
    for i in range(n):
        a = abs(A[i, i])
        if a > scale:
            scale = a
    return n * EPS * scale


@kernel
def ldl_factor(A):
    r"""Factor a symmetric ``A`` as :math:`L D L^T` in place; return a ``FACTOR_*`` code.

    Only the lower triangle (with the diagonal) is read and overwritten: on
    success ``D`` is on the diagonal and the unit lower-triangular ``L`` below it;
    the strict upper triangle is untouched. The factorization fails (stopping at
    the first bad pivot) unless every pivot exceeds ``pivot_tolerance(A)``, i.e.
    unless ``A`` is positive definite to working precision.
    """
    n = A.shape[0]
    tol = pivot_tolerance(A)
    for j in range(n):
        djj = A[j, j]
        for k in range(j):
            ljk = A[j, k]
            djj -= ljk * ljk * A[k, k]
        if not djj > tol:
            A[j, j] = djj
            return FACTOR_NOT_POSITIVE if djj < -tol else FACTOR_TINY_PIVOT
        A[j, j] = djj
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k] * A[k, k]
            A[i, j] = s / djj
    return FACTOR_OK


@kernel
def ldl_solve(LD, b, out):
    """Solve ``A out = b`` given ``LD`` from :func:`ldl_factor`; ``out`` may be ``b``."""
    n = LD.shape[0]
    for i in range(n):  # L z = b
        s = b[i]
        for k in range(i):
            s -= LD[i, k] * out[k]
        out[i] = s
    for i in range(n):  # D w = z
        out[i] = out[i] / LD[i, i]
    for i in range(n - 1, -1, -1):  # L^T out = w
        s = out[i]
        for k in range(i + 1, n):
            s -= LD[k, i] * out[k]
        out[i] = s


@kernel
def lu_solve(A, b, out):
    """Solve ``A out = b`` by Gaussian elimination with partial pivoting; False if singular.

    ``A`` is overwritten; ``out`` receives the solution (it may be ``b``). A pivot
    of magnitude at most ``n * eps * max|A|`` counts as zero.
    """
    n = A.shape[0]
    scale = 0.0
    for i in range(n):
        out[i] = b[i]
        for j in range(n):
            a = abs(A[i, j])
            if a > scale:
                scale = a
    tol = n * EPS * scale
    for k in range(n):
        p = k
        big = abs(A[k, k])
        for i in range(k + 1, n):
            a = abs(A[i, k])
            if a > big:
                big = a
                p = i
        if not big > tol:
            return False
        if p != k:
            for j in range(k, n):
                t = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = t
            t = out[k]
            out[k] = out[p]
            out[p] = t
        for i in range(k + 1, n):
            m = A[i, k] / A[k, k]
            if m != 0.0:
                for j in range(k + 1, n):
                    A[i, j] -= m * A[k, j]
                out[i] -= m * out[k]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for j in range(i + 1, n):
            s -= A[i, j] * out[j]
        out[i] = s / A[i, i]
    return True


@kernel
def lbfgs_two_loop(q, pairs, coef, m, newest, count, gamma):
    r"""The L-BFGS two-loop recursion: :math:`q \leftarrow H_k q` in place.

    The memory is a ring of ``m`` slots holding the last ``count`` pairs
    :math:`s_i = x_{i+1} - x_i`, :math:`y_i = g_{i+1} - g_i`; the newest is in slot
    ``newest`` and the next older pair of slot ``i`` in slot ``i - 1`` (cyclically).
    Slot ``i`` is :math:`s_i` = ``pairs[i]`` and :math:`y_i` = ``pairs[m + i]`` (rows
    from ``2 m`` on are not read), and in ``coef.flat`` (``coef`` C-contiguous, of any
    shape): :math:`\rho_i = 1 / y_i^T s_i` at ``[i]``, work space at ``[m + i]``, and
    :math:`\mathrm{cross}_i = s_{i-1}^T y_i` (the product with the next older pair;
    unused for the oldest) at ``[2 m + i]``. L-BFGS passes its state and the 2-D
    rows of its scalar area as they are: at d = 10, five views of rows cost its loop
    ~13 ns per iteration, and a 1-D view (numba's reshape, a call to a C helper)
    ~15 ns. :math:`H_k` is the L-BFGS inverse-Hessian approximation with
    :math:`H_k^0 = \gamma I` (Nocedal & Wright, Algorithm 7.4):

    .. math::

        a_i = \rho_i s_i^T q,\ q \leftarrow q - a_i y_i \ \text{(newest to oldest)};
        \quad q \leftarrow \gamma q; \quad
        q \leftarrow q + (a_i - \rho_i y_i^T q)\, s_i \ \text{(oldest to newest)}.

    The recursion is a chain of dependent dot products, so their latency, not their
    arithmetic, sets its speed. It takes the pairs two at a time, a newer pair ``i``
    and the next older one ``k`` (in the second loop: ``k`` and then ``i``), with
    both dot products taken of the same ``q`` in one pass and ``q`` updated once:

    .. math::

        a_k = \rho_k s_k^T (q - a_i y_i) = \rho_k s_k^T q - a_i (\rho_k \mathrm{cross}_i),
        \qquad q \leftarrow (q - a_i y_i) - a_k y_k;

        c_k = a_k - \rho_k y_k^T q, \quad
        c_i = (a_i - \rho_i y_i^T q) - c_k (\rho_i \mathrm{cross}_i),
        \qquad q \leftarrow (q + c_k s_k) + c_i s_i.

    That halves the chain, and the second coefficient of a step waits on the first
    for one multiplication and one subtraction only (:math:`\rho_k s_k^T q` and
    :math:`\rho_k \mathrm{cross}_i` do not wait). The result differs from the
    one-pair-at-a-time recursion only by rounding. An odd last pair is taken alone.
    """
    d = q.size
    coef = coef.flat
    i = newest
    n = 0
    while n < count:  # newest to oldest: s rows i, k; y rows m + i, m + k
        k = i - 1 if i > 0 else m - 1
        si0 = 0.0
        si1 = 0.0
        sk0 = 0.0
        sk1 = 0.0
        j = 0
        while j + 2 <= d:
            si0 += pairs[i, j] * q[j]
            sk0 += pairs[k, j] * q[j]
            si1 += pairs[i, j + 1] * q[j + 1]
            sk1 += pairs[k, j + 1] * q[j + 1]
            j += 2
        if j < d:
            si0 += pairs[i, j] * q[j]
            sk0 += pairs[k, j] * q[j]
        a = coef[i] * (si0 + si1)
        coef[m + i] = a
        if n + 1 < count:
            b = coef[k] * (sk0 + sk1) - a * (coef[k] * coef[2 * m + i])
            coef[m + k] = b
            for j in range(d):
                q[j] = (q[j] - a * pairs[m + i, j]) - b * pairs[m + k, j]
            i = k - 1 if k > 0 else m - 1
            n += 2
        else:
            for j in range(d):
                q[j] -= a * pairs[m + i, j]
            i = k
            n += 1
    for j in range(d):
        q[j] *= gamma
    k = i + 1 if i < m - 1 else 0  # the oldest pair
    n = 0
    while n < count:  # oldest to newest: y rows m + k, m + i; s rows k, i
        i = k + 1 if k < m - 1 else 0
        yk0 = 0.0
        yk1 = 0.0
        yi0 = 0.0
        yi1 = 0.0
        j = 0
        while j + 2 <= d:
            yk0 += pairs[m + k, j] * q[j]
            yi0 += pairs[m + i, j] * q[j]
            yk1 += pairs[m + k, j + 1] * q[j + 1]
            yi1 += pairs[m + i, j + 1] * q[j + 1]
            j += 2
        if j < d:
            yk0 += pairs[m + k, j] * q[j]
            yi0 += pairs[m + i, j] * q[j]
        c = coef[m + k] - coef[k] * (yk0 + yk1)
        if n + 1 < count:
            e = (coef[m + i] - coef[i] * (yi0 + yi1)) - c * (coef[i] * coef[2 * m + i])
            for j in range(d):
                q[j] = (q[j] + c * pairs[k, j]) + e * pairs[i, j]
            k = i + 1 if i < m - 1 else 0
            n += 2
        else:
            for j in range(d):
                q[j] += c * pairs[k, j]
            k = i
            n += 1


@kernel
def lbfgs_new_pair(pairs, m, j, newest, alpha, p, g, gk):
    r"""Store :math:`s = \alpha p`, :math:`y = g - g_k` in slot ``j`` of ``pairs``.

    ``pairs`` as in :func:`lbfgs_two_loop` (:math:`s` into row ``j``, :math:`y` into
    row ``m + j``). Returns :math:`s^T y`, :math:`y^T y` and the cross product
    :math:`s_{\text{newest}}^T y` with the pair in slot ``newest``, each summed as
    :func:`dot` sums it, in the pass that writes the pair.
    """
    d = p.size
    sy0 = 0.0
    sy1 = 0.0
    yy0 = 0.0
    yy1 = 0.0
    sw0 = 0.0
    sw1 = 0.0
    i = 0
    while i + 2 <= d:
        s0 = alpha * p[i]
        s1 = alpha * p[i + 1]
        y0 = g[i] - gk[i]
        y1 = g[i + 1] - gk[i + 1]
        pairs[j, i] = s0
        pairs[j, i + 1] = s1
        pairs[m + j, i] = y0
        pairs[m + j, i + 1] = y1
        sy0 += s0 * y0
        sy1 += s1 * y1
        yy0 += y0 * y0
        yy1 += y1 * y1
        sw0 += pairs[newest, i] * y0
        sw1 += pairs[newest, i + 1] * y1
        i += 2
    if i < d:
        s0 = alpha * p[i]
        y0 = g[i] - gk[i]
        pairs[j, i] = s0
        pairs[m + j, i] = y0
        sy0 += s0 * y0
        yy0 += y0 * y0
        sw0 += pairs[newest, i] * y0
    return sy0 + sy1, yy0 + yy1, sw0 + sw1


@kernel
def bfgs_inverse_update(H, s, y, work):
    r"""The BFGS update of an inverse Hessian, in place; return False (no update) if s'y <= 0.

    .. math::

        H \leftarrow (I - \rho s y^T) H (I - \rho y s^T) + \rho s s^T, \qquad
        \rho = 1 / (y^T s),

    in scipy's order, in O(d^2): :math:`M = H (I - \rho y s^T) = H - \rho u s^T` with
    :math:`u = H y`, then :math:`M - \rho s w^T` with :math:`w = M^T y`, and
    :math:`\rho s s^T` added last. Expanded into
    :math:`H - \rho (u s^T + s u^T) + (\rho^2 y^T u + \rho) s s^T`, the terms of order 1
    cancel and leave rounding where :math:`\rho s s^T` is small (an objective scaled by
    1e50 from H = I: H went to 0 and BFGS took 43 iterations instead of scipy's 2).
    ``work`` holds u, then w.
    """
    d = s.size
    sy = 0.0
    for i in range(d):
        sy += s[i] * y[i]
    if not sy > 0.0:
        return False
    rho = 1.0 / sy
    for i in range(d):
        u = 0.0
        for j in range(d):
            u += H[i, j] * y[j]
        work[i] = u
    for i in range(d):
        for j in range(d):
            H[i, j] -= rho * work[i] * s[j]
    for j in range(d):
        work[j] = 0.0
    for i in range(d):
        for j in range(d):
            work[j] += H[i, j] * y[i]
    for i in range(d):
        for j in range(d):
            H[i, j] = (H[i, j] - rho * s[i] * work[j]) + rho * s[i] * s[j]
    return True


# The per-iteration checks below are boolean reductions: LLVM vectorizes them, while a
# float reduction (a sum or a max) would be a serial chain, since fastopt never lets
# LLVM reassociate floating-point arithmetic. At d = 1000 this halves the loop's cost.


@kernel
def all_abs_le(v, tol):
    """``max|v_i| <= tol`` (False if any element is NaN)."""
    ok = True
    for i in range(v.size):
        ok &= abs(v[i]) <= tol
    return ok


@kernel
def all_abs_diff_le(a, b, tol):
    """``max|a_i - b_i| <= tol``."""
    ok = True
    for i in range(a.size):
        ok &= abs(a[i] - b[i]) <= tol
    return ok
