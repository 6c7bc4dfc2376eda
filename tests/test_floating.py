"""fastopt.floating: division by a constant with fused multiply-adds, bit for bit IEEE's.

Inputs: the divisors Adam divides by (sqrt(1 - beta2**t)), log-uniform divisors over the
whole exact range, log-uniform dividends, dividends whose quotient lies within about
2^-53 of an ulp of a midpoint between two floats (the hardest to round), and the values
outside the exact range that the function still divides exactly (0, inf, NaN).
"""

import math

import numba
import numpy as np

from fastopt.floating import C_RANGE, X_RANGE, divide_by_constant, fma, reciprocal_pair


@numba.njit(error_model="numpy")
def _quotients(xs, c):
    hi, lo = reciprocal_pair(c)
    out = np.empty_like(xs)
    for i in range(xs.size):
        out[i] = divide_by_constant(xs[i], c, hi, lo)
    return out


@numba.njit(error_model="numpy")
def _ieee_quotients(xs, c):
    return xs / c


def _assert_divides_exactly(xs, cs):
    for c in cs:
        got, expected = _quotients(xs, c), _ieee_quotients(xs, c)
        nan = np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"c={c!r}")
        bad = got[~nan].view(np.uint64) != expected[~nan].view(np.uint64)
        assert not bad.any(), (f"c={c!r}: x={xs[~nan][bad][:3]!r} gives "
                               f"{got[~nan][bad][:3]!r}, x / c={expected[~nan][bad][:3]!r}")


def _log_uniform(rng, low, high, n):
    signs = rng.choice([-1.0, 1.0], n)
    return signs * np.exp2(rng.uniform(math.log2(low), math.log2(high), n))


def near_midpoint_dividends(c, rng):
    """Dividends x in ``X_RANGE`` whose quotient x / c lies within about 2^-53 ulp of the
    midpoint between two floats. With c = C 2^u (C odd) and x = X 2^t: X is chosen so that
    2^(s+1) X = k C + r, k and r odd, r small, so X 2^s / C = k/2 + r/(2C), with X 2^s / C
    in [2^52, 2^53) (53 bits before the point: the quotient's ulp is 1 there)."""
    mantissa, exponent = math.frexp(abs(c))
    C = int(mantissa * 2**53)
    while C % 2 == 0:
        C //= 2
    xs = []
    for s in range(52, 52 + C.bit_length() + 1):
        low, high = -(-(C << 52) >> s), min(2**53, (C << 53) >> s)  # X 2^s / C in [2^52, 2^53)
        for r in (1, -1, 3, -3):
            X = (r * pow(2, -(s + 1), C)) % C
            X += C * max(0, -(-(low - X) // C))  # the first X >= low in its class mod C
            if X < high:
                t = int(rng.integers(-800, 800))
                xs.append(math.ldexp(float(X), t) * rng.choice([-1.0, 1.0]))
    return xs


@numba.njit
def _fma(a, b, c):
    return fma(a, b, c)


def test_fma_rounds_once():
    a = 1.0 + 2.0**-30
    # a*a = 1 + 2^-29 + 2^-60: rounded first, the 2^-60 is lost
    assert _fma(a, a, -1.0) == 2.0**-29 + 2.0**-60
    assert a * a - 1.0 == 2.0**-29


def test_divides_by_adams_bias_corrections_exactly():
    rng = np.random.default_rng(0)
    xs = np.concatenate([_log_uniform(rng, 2.0**-537, 2.0**512, 200_000),  # sqrt of a float
                         [0.0, -0.0, np.inf, -np.inf, np.nan]])
    cs = {math.sqrt(1.0 - beta**t) for beta in (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1 - 2**-53)
          for t in (*range(1, 60), *rng.integers(60, 40_000, 20).tolist())}
    _assert_divides_exactly(xs, sorted(cs))


def test_divides_exactly_over_its_whole_range():
    rng = np.random.default_rng(1)
    xs = np.concatenate([_log_uniform(rng, *X_RANGE, 200_000), X_RANGE, -np.array(X_RANGE)])
    cs = np.concatenate([_log_uniform(rng, *C_RANGE, 200), C_RANGE, -np.array(C_RANGE),
                         [1.0, 3.0, 0.1, 2.0 - 2.0**-52, 1.0 + 2.0**-52]])
    _assert_divides_exactly(xs, cs)


def test_divides_exactly_where_the_quotient_is_nearly_a_midpoint():
    rng = np.random.default_rng(2)
    cs = np.concatenate([_log_uniform(rng, *C_RANGE, 300),
                         [math.sqrt(1.0 - 0.999**t) for t in range(1, 200)]])
    n_tested = 0
    for c in cs:
        xs = np.array(near_midpoint_dividends(c, rng))
        if xs.size:
            _assert_divides_exactly(xs, [c])
            n_tested += xs.size
    assert n_tested > 1000


def test_divides_exactly_by_zero_inf_and_nan_and_keeps_signed_zeros():
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -3.5, 2.0**-900, 1e300])
    _assert_divides_exactly(specials, [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -0.3])


def test_fma_counts_as_hardware_unless_numba_targets_a_cpu_without_it(monkeypatch):
    import platform

    import fastopt.floating as floating

    if platform.machine().lower() in ("aarch64", "arm64"):
        assert floating._fma_in_hardware()
        return
    for name, features, expected in [("generic", "", False), ("x86-64", None, False),
                                      ("generic", "+sse2,+fma", True),
                                      ("skylake", "", True), ("skylake", "-fma", False)]:
        monkeypatch.setattr(numba.config, "CPU_NAME", name)
        monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
        assert floating._fma_in_hardware() is expected, (name, features)
