"""Shared objectives and the table of first-order methods under test.

Numba compiles once per (rule, objective) pair, so tests reuse these few
module-level objectives instead of defining new ones.
"""

import numpy as np
import pytest

import fastopt
from fastopt.functions import rosenbrock, sphere, wavy

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


def quadratic(x):
    """Shifted anisotropic quadratic, minimum 0 at (1, -2, ...)."""
    s = 0.0
    for i in range(x.size):
        c = 1.0 if i % 2 == 0 else -2.0
        s += (i + 1.0) * (x[i] - c) ** 2
    return s


def quadratic_grad(x):
    g = np.empty(x.size)
    for i in range(x.size):
        c = 1.0 if i % 2 == 0 else -2.0
        g[i] = 2.0 * (i + 1.0) * (x[i] - c)
    return g


def quadratic_minimizer(d):
    return np.array([1.0 if i % 2 == 0 else -2.0 for i in range(d)])


@pytest.fixture(params=FIRST_ORDER, ids=lambda p: f"{p[0]}-{'-'.join(map(str, p[1].values()))}")
def first_order(request):
    return request.param


__all__ = ["fastopt", "rosenbrock", "sphere", "wavy", "quadratic", "quadratic_grad",
           "quadratic_minimizer", "FIRST_ORDER"]
