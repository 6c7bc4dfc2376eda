"""A plain Python objective sees the values of its globals and closure variables as of
each call, as in scipy, though numba freezes them when it compiles (fastopt.snapshot)."""

import numpy as np

import fastopt
from fastopt.objective import prepare
from fastopt.snapshot import current_version

TARGET = 1.0
OFFSETS = np.zeros(2)
OPTIONS = {"lr": 0.1, "maxiter": 3000, "gtol": 1e-8}


def tracking(x):
    return ((x - TARGET - OFFSETS) ** 2).sum()


def test_a_changed_global_is_seen_by_the_next_call():
    # The second call compiles the loop specialized for the function: without a version
    # per value it froze TARGET = 1.0 and kept it for the third.
    global TARGET
    for target in (1.0, 1.0, 5.0):
        TARGET = target
        res = fastopt.minimize(tracking, np.zeros(2), options=OPTIONS)
        np.testing.assert_allclose(res.x, [target, target], atol=1e-6)
    OFFSETS[:] = [1.0, -1.0]  # changed in place: compared by content
    try:
        res = fastopt.minimize(tracking, np.zeros(2), options=OPTIONS)
        np.testing.assert_allclose(res.x, [6.0, 4.0], atol=1e-6)
        batch = fastopt.minimize_batch(tracking, np.zeros((3, 2)), options=OPTIONS)
        np.testing.assert_allclose(batch.x, [[6.0, 4.0]] * 3, atol=1e-6)
    finally:
        OFFSETS[:] = 0.0
        TARGET = 1.0


def test_a_changed_closure_variable_is_seen_by_the_next_call():
    center = 1.0

    def fun(x):
        return ((x - center) ** 2).sum()

    for value in (1.0, 1.0, -2.0):
        center = value
        res = fastopt.minimize(fun, np.zeros(2), options=OPTIONS)
        np.testing.assert_allclose(res.x, [value, value], atol=1e-6)


def test_new_lambdas_with_the_same_code_and_values_share_their_compiled_code():
    x0 = np.zeros(2)
    made = [prepare(lambda x, c=c: ((x - c) ** 2).sum(), x0, ())[0] for c in (2.0, 3.0, 2.0)]
    assert made[0].fg is made[2].fg and made[0].fg is not made[1].fg


def test_compiled_and_foreign_callables_are_left_as_they_are():
    assert current_version(fastopt.functions.rosenbrock.fun) is fastopt.functions.rosenbrock.fun
    assert current_version(np.sum) is np.sum
    assert current_version(None) is None
