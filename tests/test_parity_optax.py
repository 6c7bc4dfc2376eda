"""fastopt vs optax in float64, with hyperparameters mapped as the rule docstrings say.

Both run 200 steps from the same start on the same NumPy gradient of the current parameters.
optax composes its rules from transformations (``scale_by_adam`` then ``scale_by_learning_rate``)
and so rounds in another order than torch: where the formulas coincide the trajectories agree
to ``rtol=1e-12``. Where optax's formula genuinely differs the test says how, and either picks
settings under which the two coincide or bounds the difference it expects.
"""

import numpy as np
import pytest
from problems import N_STEPS, X0, grad

import fastopt

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy


def optax_trajectory(tx):
    params = jnp.asarray(X0)
    assert params.dtype == jnp.float64
    state = tx.init(params)
    update = jax.jit(tx.update)
    apply = jax.jit(optax.apply_updates)
    path = []
    for _ in range(N_STEPS):
        g = jnp.asarray(grad(np.asarray(params)))
        updates, state = update(g, state, params)
        params = apply(params, updates)
        path.append(np.asarray(params))
    return np.array(path)


def fastopt_trajectory(name, kwargs):
    opt = getattr(fastopt, name)(**kwargs)
    x = X0.copy()
    state = opt.init(x)
    path = []
    for _ in range(N_STEPS):
        opt.step(x, grad(x), state)
        path.append(x.copy())
    return np.array(path)


def assert_trajectories_match(actual, expected, rtol=1e-12):
    """Relative to each element and to the trajectory's scale (see test_parity_torch)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * np.max(np.abs(expected)))


# (optax transformation, fastopt class, its keyword arguments): formulas that coincide.
MATCHING = [
    ("sgd", lambda: optax.sgd(0.05), "SGD", {"lr": 0.05}),
    # optax's trace starts at 0, so its first momentum step is g_1, as torch's buf_1 = g_1
    ("sgd-momentum", lambda: optax.sgd(0.05, momentum=0.9), "SGD",
     {"lr": 0.05, "momentum": 0.9}),
    ("sgd-nesterov", lambda: optax.sgd(0.05, momentum=0.9, nesterov=True), "SGD",
     {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adam", lambda: optax.adam(5e-3), "Adam", {"lr": 5e-3}),
    ("adam-betas-eps", lambda: optax.adam(5e-3, b1=0.5, b2=0.9, eps=1e-3), "Adam",
     {"lr": 5e-3, "betas": (0.5, 0.9), "eps": 1e-3}),
    # optax.adamw(weight_decay=wd) updates x - lr (adam + wd x) = x (1 - lr wd) - lr adam
    ("adamw", lambda: optax.adamw(5e-3, weight_decay=0.5), "AdamW",
     {"lr": 5e-3, "weight_decay": 0.5}),
    ("adamw-defaults", lambda: optax.adamw(5e-3), "AdamW",
     {"lr": 5e-3, "weight_decay": 1e-4}),  # optax's default decay is 1e-4, torch's 1e-2
    # optax.rmsprop: decay = torch's alpha; eps_in_sqrt=False is torch's sqrt(v) + eps
    ("rmsprop", lambda: optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False),
     "RMSprop", {"lr": 1e-3}),
    ("rmsprop-decay", lambda: optax.rmsprop(1e-3, eps_in_sqrt=False), "RMSprop",
     {"lr": 1e-3, "alpha": 0.9}),  # optax's default decay is 0.9
    ("rmsprop-centered-momentum",
     lambda: optax.rmsprop(1e-3, decay=0.9, eps=1e-6, eps_in_sqrt=False, centered=True,
                           momentum=0.5),
     "RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "centered": True, "momentum": 0.5}),
    # eps = 0: rsqrt(v + 0) is 1 / (sqrt(v) + 0), eps's place no longer matters
    ("rmsprop-eps-in-sqrt-eps0", lambda: optax.rmsprop(1e-3, decay=0.9, eps=0.0), "RMSprop",
     {"lr": 1e-3, "alpha": 0.9, "eps": 0.0}),
    # optax.adagrad divides by sqrt(s + eps) with s from initial_accumulator_value: that is
    # fastopt with the accumulator started at initial_accumulator_value + eps and eps = 0
    ("adagrad", lambda: optax.adagrad(0.01), "Adagrad",
     {"lr": 0.01, "initial_accumulator_value": 0.1 + 1e-7, "eps": 0.0}),
    ("adagrad-settings", lambda: optax.adagrad(0.01, initial_accumulator_value=0.5, eps=1e-3),
     "Adagrad", {"lr": 0.01, "initial_accumulator_value": 0.5 + 1e-3, "eps": 0.0}),
]


@pytest.mark.parametrize(("make_tx", "name", "kwargs"), [m[1:] for m in MATCHING],
                         ids=[m[0] for m in MATCHING])
def test_fastopt_matches_optax(make_tx, name, kwargs):
    expected = optax_trajectory(make_tx())
    actual = fastopt_trajectory(name, kwargs)
    assert_trajectories_match(actual, expected)
    assert np.all(np.abs(actual[-1] - X0) > 1e-3)  # every coordinate moved


def test_rmsprop_eps_inside_sqrt_is_a_small_genuine_difference():
    # optax's default eps_in_sqrt=True divides by sqrt(v + eps), torch by sqrt(v) + eps. With
    # v ~ g^2 >= ~1e-2 here, the two denominators differ by a relative ~eps / sqrt(v) <= 1e-7
    # per step: the trajectories agree to ~1e-7, and measurably not to rounding.
    expected = optax_trajectory(optax.rmsprop(1e-3, decay=0.9, eps=1e-8))
    actual = fastopt_trajectory("RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-8})
    assert_trajectories_match(actual, expected, rtol=1e-7)
    assert np.max(np.abs(actual - expected)) > 1e-13


def test_adagrad_same_settings_are_close_not_equal():
    # The same numbers in both places: optax's eps (1e-7) sits inside the sqrt, fastopt's
    # outside, a relative difference of ~eps / sqrt(s) <= 1e-6 in each step's size.
    expected = optax_trajectory(optax.adagrad(0.01, initial_accumulator_value=0.1, eps=1e-7))
    actual = fastopt_trajectory("Adagrad", {"lr": 0.01, "initial_accumulator_value": 0.1,
                                            "eps": 1e-7})
    assert_trajectories_match(actual, expected, rtol=1e-6)
    assert np.max(np.abs(actual - expected)) > 1e-12


def test_amsgrad_differs_from_optax_which_maxes_the_bias_corrected_moment():
    # torch/fastopt keep max(v_t) and divide by sqrt(max v) / sqrt(1 - b2^t); optax keeps
    # max(v_t / (1 - b2^t)). Early on v_t / (1 - b2^t) falls while v_t rises, so they part.
    expected = optax_trajectory(optax.amsgrad(5e-3))
    actual = fastopt_trajectory("Adam", {"lr": 5e-3, "amsgrad": True})
    assert np.max(np.abs(actual - expected)) > 1e-6
    plain = fastopt_trajectory("Adam", {"lr": 5e-3})
    assert_trajectories_match(optax_trajectory(optax.adam(5e-3)), plain)
