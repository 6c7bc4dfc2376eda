"""The table of first-order methods under test, as a fixture.

Numba compiles once per (rule, objective) pair, so tests reuse the few module-level
objectives of ``problems.py`` instead of defining new ones.
"""

import importlib

import pytest

# One table of first-order optimizers for every test: (method, options).
FIRST_ORDER = [
    ("sgd", {"lr": 1e-3, "momentum": 0.9}),
    ("sgd", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    ("adagrad", {"lr": 0.5}),
    ("rmsprop", {"lr": 1e-3, "momentum": 0.5}),
    ("adam", {"lr": 1e-2}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.0}),
    ("adam", {"lr": 1e-2, "amsgrad": True}),
]


@pytest.fixture(params=FIRST_ORDER, ids=lambda p: f"{p[0]}-{'-'.join(map(str, p[1].values()))}")
def first_order(request):
    return request.param




@pytest.fixture
def specialize_from_second_call(monkeypatch):
    """``minimize`` compiles the loop specialized for an objective at its second call.

    By default it does so only once the objective has run ``SPECIALIZE_AFTER_SECONDS``
    in the portable loop; tests that compare the two loops ask for it at once.
    """
    import fastopt.loop

    monkeypatch.setattr(fastopt.loop, "SPECIALIZE_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(fastopt.loop, "_PORTABLE_SECONDS", {})  # no pair specialized for good


@pytest.fixture
def ran_portable(monkeypatch):
    """The loops ``minimize`` runs, in order: True for the portable loop, False for the
    one specialized for the objective."""
    minimize_module = importlib.import_module("fastopt.minimize")  # fastopt.minimize: the function
    loop_for = minimize_module.loop_for
    ran = []

    def spy(*args):
        loop, loop_args, native = loop_for(*args)
        ran.append(native is not None)
        return loop, loop_args, native

    monkeypatch.setattr(minimize_module, "loop_for", spy)
    return ran
