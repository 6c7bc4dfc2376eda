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


def quadratic_minimizer(d):
    return np.array([1.0 if i % 2 == 0 else -2.0 for i in range(d)])
