"""Objectives shared by the test modules (imported as ``from problems import ...``).

They live here, not in conftest.py: tests/ and benchmarks/ both have a conftest.py, and
both are collected in one run, so ``import conftest`` would be ambiguous.
"""

import numpy as np


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


def undefined_for_positive_x(x):
    """x0^2, raising for x0 > 0: an objective that fails part-way through a run."""
    if x[0] > 0.0:
        raise ValueError("objective undefined for positive x")
    return x[0] * x[0]


def quadratic_minimizer(d):
    return np.array([1.0 if i % 2 == 0 else -2.0 for i in range(d)])


# The parity problem for torch and optax trajectories: the gradient of
# sum(a (x - c)^2 / 2 - cos(x) / 4), anisotropic, mildly nonlinear, convex. D = 37 is more
# than two AVX vectors, so vectorised loops and their scalar tails both run.
N_STEPS = 200
D = 37
_A = np.linspace(0.5, 4.0, D)
_SIGN = np.where(np.arange(D) % 2 == 0, 1.0, -1.0)
_C = _SIGN * np.linspace(0.5, 1.5, D)
X0 = _C - _SIGN * np.linspace(1.5, 3.0, D)


def grad(x):
    """Gradient of the parity problem."""
    return _A * (x - _C) + 0.25 * np.sin(x)
