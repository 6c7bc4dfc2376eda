"""fastopt vs torch.optim in float64: trajectories of 200 steps from the same start.

Both sides see the same gradients: a NumPy function of the current parameters (so any
difference comes from the update rules, never from autograd). torch runs its single-tensor
("for-loop") implementations (``foreach=False``), which fastopt's kernels mirror operation
by operation; the only differences left are the fused multiply-adds of ATen's vectorised CPU
loops (an ulp here and there), hence ``rtol=1e-12``.

The starts and learning rates keep every run away from the noise floor of its optimum: there
Adam and (centered) RMSprop are sign-like and chaotic, and any two correct implementations
part ways at the level of rounding.
"""

import numpy as np
import pytest
from problems import N_STEPS, X0, grad, quadratic, quadratic_grad

import fastopt
from fastopt import clipping, schedules

torch = pytest.importorskip("torch")



@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run torch single-threaded: on 37 elements its thread pool only adds wake-up latency
    (the fused Adam kernel's parallel_for costs ~3 ms a step on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def neg_grad(x):
    """Gradient of the concave -f, for ``maximize=True`` runs (an ascent that converges)."""
    return -grad(x)


def assert_trajectories_match(actual, expected, rtol=1e-12, scale=None):
    """Equal to ``rtol``, relative to each element and to ``scale`` (default: the largest
    element of ``expected``).

    (A coordinate crossing zero has no relative precision of its own; the rounding errors
    it carries are those of its neighbours of size ~1. Observed: ~1e-16 of the scale, 5e-14
    for centered RMSprop with alpha=0.3, whose v - m^2 cancels.)
    """
    scale = np.max(np.abs(expected)) if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def torch_trajectory(name, kwargs, grad_fn, n_steps=N_STEPS, x0=X0, scheduler=None,
                     clip_value=0.0, clip_norm=0.0, **torch_options):
    """x_1..x_n of torch.optim.<name>, with an optional lr scheduler and gradient clipping."""
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs, **torch_options)
    sched = scheduler(opt) if scheduler is not None else None
    path = []
    for _ in range(n_steps):
        p.grad = torch.from_numpy(grad_fn(p.detach().numpy().copy()))
        if clip_value > 0:
            torch.nn.utils.clip_grad_value_([p], clip_value)
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_([p], clip_norm)
        opt.step()
        if sched is not None:
            sched.step()
        path.append(p.detach().numpy().copy())
    return np.array(path), opt.state[p]


def fastopt_trajectory(name, kwargs, grad_fn, n_steps=N_STEPS, x0=X0):
    opt = getattr(fastopt, name)(**kwargs)
    x = x0.copy()
    state = opt.init(x)
    path = []
    for _ in range(n_steps):
        opt.step(x, grad_fn(x), state)
        path.append(x.copy())
    return np.array(path), state


# Every rule and every option that changes its arithmetic, alone and together.
TORCH_CASES = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "maximize": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1,
             "maximize": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1,
             "maximize": True}),
    ("Adagrad", {"lr": 0.01}),
    ("Adagrad", {"lr": 0.01, "lr_decay": 0.01}),
    ("Adagrad", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.01, "initial_accumulator_value": 0.5}),
    ("Adagrad", {"lr": 0.01, "eps": 1e-2}),
    ("Adagrad", {"lr": 0.01, "maximize": True}),
    ("Adagrad", {"lr": 0.02, "lr_decay": 0.05, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.1, "eps": 1e-6, "maximize": True}),
    ("RMSprop", {"lr": 1e-3}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.9}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.3}),  # 1 - alpha > 0.5: torch.lerp's second formula
    ("RMSprop", {"lr": 1e-3, "eps": 1e-3}),
    ("RMSprop", {"lr": 1e-3, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.9}),
    ("RMSprop", {"lr": 1e-3, "centered": True}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.3, "centered": True}),
    ("RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.5}),
    ("RMSprop", {"lr": 1e-3, "maximize": True}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.95, "eps": 1e-6, "weight_decay": 0.1, "momentum": 0.5,
                 "centered": True, "maximize": True}),
    ("Adam", {"lr": 5e-3}),
    ("Adam", {"lr": 5e-3, "betas": (0.5, 0.9)}),
    ("Adam", {"lr": 5e-3, "betas": (0.3, 0.99)}),  # 1 - beta1 > 0.5: lerp's second formula
    ("Adam", {"lr": 5e-3, "betas": (0.0, 0.99)}),
    ("Adam", {"lr": 5e-3, "eps": 1e-3}),
    ("Adam", {"lr": 5e-3, "weight_decay": 0.1}),
    ("Adam", {"lr": 5e-3, "amsgrad": True}),
    ("Adam", {"lr": 5e-3, "maximize": True}),
    ("Adam", {"lr": 5e-3, "betas": (0.8, 0.95), "weight_decay": 0.1, "amsgrad": True,
              "maximize": True}),
    ("Adam", {"lr": 5e-3, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("Adam", {"lr": 5e-3, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True,
              "maximize": True}),
    ("AdamW", {"lr": 5e-3}),  # torch's default weight_decay 1e-2
    ("AdamW", {"lr": 5e-3, "weight_decay": 0.5}),
    ("AdamW", {"lr": 5e-3, "weight_decay": 0.0}),
    ("AdamW", {"lr": 5e-3, "amsgrad": True}),
    ("AdamW", {"lr": 5e-3, "maximize": True}),
    ("AdamW", {"lr": 5e-3, "betas": (0.3, 0.9), "weight_decay": 0.2, "amsgrad": True,
               "maximize": True}),
]


def case_id(name, kwargs):
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items() if k != "lr")


@pytest.mark.parametrize(("name", "kwargs"), TORCH_CASES,
                         ids=[case_id(*c) for c in TORCH_CASES])
def test_step_api_matches_torch(name, kwargs):
    grad_fn = neg_grad if kwargs.get("maximize") else grad
    expected, torch_state = torch_trajectory(name, kwargs, grad_fn, foreach=False)
    actual, state = fastopt_trajectory(name, kwargs, grad_fn)
    assert_trajectories_match(actual, expected)
    # the state too, under torch's names; momentum buffers and moments shrink with the
    # gradient, so they are compared on the scale of the first gradient
    assert int(state.step[0]) == int(torch_state.get("step", torch.tensor(N_STEPS)).item())
    g0 = np.max(np.abs(grad(X0)))
    for key, value in torch_state.items():
        if key != "step" and value is not None:
            scale = g0**2 if key in ("sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq") else g0
            assert_trajectories_match(getattr(state, key), value.numpy(), scale=scale)
    # and every run really moved, without reaching its optimum
    assert np.all(np.abs(actual[-1] - X0) > 1e-3)


FUSED_CASES = [c for c in TORCH_CASES if c[0] in ("Adam", "AdamW")]


@pytest.mark.parametrize(("name", "kwargs"), FUSED_CASES,
                         ids=[case_id(*c) for c in FUSED_CASES])
def test_step_api_matches_torch_fused_adam(name, kwargs):
    # ATen's fused CPU kernel computes in its own order (and in double throughout).
    grad_fn = neg_grad if kwargs.get("maximize") else grad
    expected, _ = torch_trajectory(name, kwargs, grad_fn, fused=True)
    actual, _ = fastopt_trajectory(name, kwargs, grad_fn)
    assert_trajectories_match(actual, expected, rtol=1e-10)


# ----------------------------------------------------------------------------- minimize

QUAD_D = 4
QUAD_C = np.array([1.0 if i % 2 == 0 else -2.0 for i in range(QUAD_D)])
QUAD_X0 = QUAD_C + np.array([-3.0, 3.0, -2.5, 2.5])


def quadratic_grad_numpy(x):
    """conftest.quadratic_grad in NumPy, same operation order (bit-identical)."""
    return 2.0 * (np.arange(x.size) + 1.0) * (x - QUAD_C)


def minimize_path(method, options, **loop_options):
    res = fastopt.minimize(quadratic, QUAD_X0, jac=quadratic_grad, method=method,
                           options={**options, **loop_options, "gtol": 0.0,
                                    "maxiter": N_STEPS, "history": True})
    assert res.nit == N_STEPS, res.message
    return res.x_history[1:]


# (method, torch class, options by torch's names)
MINIMIZE_CASES = [
    ("gd", "SGD", {"lr": 0.02}),
    ("sgd", "SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("sgd", "SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    ("adagrad", "Adagrad", {"lr": 0.02, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("rmsprop", "RMSprop", {"lr": 1e-3, "alpha": 0.9, "momentum": 0.5, "centered": True}),
    ("adam", "Adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True,
                      "weight_decay": 0.01}),
    ("adamw", "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
]


@pytest.mark.parametrize(("method", "name", "options"), MINIMIZE_CASES,
                         ids=[f"{m}-{case_id(n, o)}" for m, n, o in MINIMIZE_CASES])
def test_minimize_matches_torch(method, name, options):
    expected, _ = torch_trajectory(name, options, quadratic_grad_numpy, x0=QUAD_X0,
                                   foreach=False)
    assert_trajectories_match(minimize_path(method, options), expected)


# (method, torch class, options, fastopt schedule, torch scheduler)
SCHEDULER_CASES = [
    ("sgd", "SGD", {"lr": 0.01, "momentum": 0.9}, schedules.exponential(0.98),
     lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)),
    ("adam", "Adam", {"lr": 0.02}, schedules.step(30, 0.5),
     lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)),
    ("adagrad", "Adagrad", {"lr": 0.05}, schedules.step(50, 0.3),
     lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.3)),
    # T_max < 200 steps: past T_max torch's recursive form climbs back up, as the closed form
    ("rmsprop", "RMSprop", {"lr": 2e-3, "momentum": 0.5}, schedules.cosine(150, 1e-4),
     lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=150, eta_min=1e-4)),
    ("adamw", "AdamW", {"lr": 0.02, "weight_decay": 0.1}, schedules.cosine(200),
     lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)),
]


@pytest.mark.parametrize(("method", "name", "options", "schedule", "scheduler"),
                         SCHEDULER_CASES,
                         ids=["sgd-ExponentialLR", "adam-StepLR", "adagrad-StepLR",
                              "rmsprop-CosineAnnealingLR", "adamw-CosineAnnealingLR"])
def test_minimize_schedule_matches_torch_lr_scheduler(method, name, options, schedule,
                                                      scheduler):
    # torch's schedulers update group["lr"] recursively (lr *= gamma, cosine ratios), the
    # closed forms differ from them by a few ulps of lr.
    expected, _ = torch_trajectory(name, options, quadratic_grad_numpy, x0=QUAD_X0,
                                   scheduler=scheduler, foreach=False)
    actual = minimize_path(method, options, schedule=schedule)
    assert_trajectories_match(actual, expected)
    unscheduled = minimize_path(method, options)
    assert np.max(np.abs(unscheduled - actual)) > 1e-6  # the schedule mattered


@pytest.mark.parametrize(("method", "name", "options"), MINIMIZE_CASES[1:6:2],
                         ids=[m for m, _, _ in MINIMIZE_CASES[1:6:2]])
@pytest.mark.parametrize("clip", [{"clip_value": 1.5}, {"clip_norm": 4.0},
                                  {"clip_value": 3.0, "clip_norm": 4.0}],
                         ids=["value", "norm", "value-then-norm"])
def test_minimize_clipping_matches_torch_clip_grad(method, name, options, clip):
    expected, _ = torch_trajectory(name, options, quadratic_grad_numpy, x0=QUAD_X0,
                                   foreach=False, **clip)
    actual = minimize_path(method, options, **clip)
    assert_trajectories_match(actual, expected)
    assert np.max(np.abs(minimize_path(method, options) - actual)) > 1e-6  # clipping mattered


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_clip_kernels_match_torch_utils(scale):
    rng = np.random.default_rng(11)
    g = rng.standard_normal(1001) * scale
    g[::97] = np.inf
    g[1::97] = -np.inf
    for c in (1e-2, 1.0, 1e6):
        t = torch.zeros(g.size, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_value_([t], c)
        actual = g.copy()
        clipping.clip_by_value(actual, c)
        np.testing.assert_array_equal(actual, t.grad.numpy())
    finite = np.where(np.isfinite(g), g, 1.0)
    for data in (finite, g):  # an infinite norm: torch and fastopt both scale by 0
        for max_norm in (1e-2, 1.0, 1e6):
            t.grad = torch.from_numpy(data.copy())
            torch.nn.utils.clip_grad_norm_([t], max_norm)
            actual = data.copy()
            clipping.clip_by_norm(actual, max_norm)
            np.testing.assert_allclose(actual, t.grad.numpy(), rtol=1e-13, atol=0)


def test_clip_by_norm_nan_gradient_matches_torch():
    g = np.array([1.0, np.nan, 3.0])
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_([t], 1.0)
    clipping.clip_by_norm(g, 1.0)
    np.testing.assert_array_equal(g, t.grad.numpy())


@pytest.mark.parametrize(("name", "kwargs"), [
    ("SGD", {"foreach": True, "fused": False, "differentiable": False}),
    ("Adagrad", {"foreach": None, "fused": None}),
    ("RMSprop", {"capturable": False, "foreach": False}),
    ("Adam", {"foreach": False, "fused": True, "capturable": False}),
    ("AdamW", {"fused": True}),
])
def test_step_api_takes_torchs_implementation_choices(name, kwargs):
    # they choose among torch's implementations, which agree to rounding: no effect here
    expected, _ = fastopt_trajectory(name, {"lr": 1e-3}, grad)
    actual, _ = fastopt_trajectory(name, {"lr": 1e-3, **kwargs}, grad)
    np.testing.assert_array_equal(actual, expected)
    getattr(torch.optim, name)([torch.zeros(2, dtype=torch.float64)], lr=1e-3, **kwargs)


def test_step_api_refuses_differentiable():
    with pytest.raises(ValueError, match="differentiable"):
        fastopt.Adam(lr=1e-3, differentiable=True)
