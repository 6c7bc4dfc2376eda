r"""Learning-rate schedules, evaluated inside the compiled loop.

The learning rate of step :math:`k = 0, 1, \dots` (the ``k``-th update) is
:math:`\gamma_k = \gamma \cdot s(k)`, matching torch.optim.lr_scheduler when
``scheduler.step()`` is called after every ``optimizer.step()``:

=====================================  ==================================================  =========================
constructor                            :math:`\gamma_k`                                    torch / optax
=====================================  ==================================================  =========================
``constant()``                         :math:`\gamma`                                      ``optax.constant_schedule``
``exponential(gamma)``                 :math:`\gamma \cdot \text{gamma}^k`                 ``ExponentialLR``
``inverse_time(decay_rate, steps=1)``  :math:`\gamma / (1 + \text{decay\_rate}\,k/\text{steps})`  Keras ``InverseTimeDecay``
``cosine(T_max, eta_min=0)``           :math:`\eta_{min} + (\gamma-\eta_{min})(1+\cos(\pi k/T_{max}))/2`  ``CosineAnnealingLR`` (closed form)
``step(step_size, gamma=0.1)``         :math:`\gamma \cdot \text{gamma}^{\lfloor k / \text{step\_size} \rfloor}`  ``StepLR``
=====================================  ==================================================  =========================

Pass one as ``options={"schedule": fastopt.schedules.cosine(1000)}``.
"""

import math
from typing import NamedTuple

from ._jit import kernel

CONSTANT, EXPONENTIAL, INVERSE_TIME, COSINE, STEP = 0, 1, 2, 3, 4


class Schedule(NamedTuple):
    """A schedule kind and its (up to three) parameters."""

    kind: int
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0


def constant():
    """The learning rate stays at ``lr``."""
    return Schedule(CONSTANT)


def exponential(gamma):
    """``lr * gamma**k`` (torch ``ExponentialLR``)."""
    _positive("gamma", gamma)
    return Schedule(EXPONENTIAL, float(gamma))


def inverse_time(decay_rate, decay_steps=1):
    """``lr / (1 + decay_rate * k / decay_steps)``."""
    if not decay_rate >= 0:
        raise ValueError(f"Invalid decay_rate: {decay_rate!r}; expected >= 0")
    _positive("decay_steps", decay_steps)
    return Schedule(INVERSE_TIME, float(decay_rate), float(decay_steps))


def cosine(T_max, eta_min=0.0):  # noqa: N803 (torch's name)
    """``eta_min + (lr - eta_min) * (1 + cos(pi * k / T_max)) / 2`` (torch ``CosineAnnealingLR``)."""
    _positive("T_max", T_max)
    if not (eta_min >= 0 and math.isfinite(eta_min)):
        raise ValueError(f"Invalid eta_min: {eta_min!r}; expected a finite value >= 0")
    return Schedule(COSINE, float(T_max), float(eta_min))


def step(step_size, gamma=0.1):
    """``lr * gamma**(k // step_size)`` (torch ``StepLR``)."""
    _positive("step_size", step_size)
    _positive("gamma", gamma)
    return Schedule(STEP, float(step_size), float(gamma))


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number > 0")


def as_schedule(value):
    """Normalise the ``schedule`` option (None, a name of a parameterless schedule, or a Schedule)."""
    if value is None or (isinstance(value, str) and value == "constant"):
        return constant()
    if isinstance(value, Schedule):
        return value
    raise TypeError(
        f"Invalid schedule: {value!r}; expected None, 'constant' or a fastopt.schedules "
        "constructor such as fastopt.schedules.exponential(0.99)"
    )


@kernel
def scheduled_lr(lr, k, kind, a, b, c):
    """Learning rate of update ``k`` (0-based) for schedule ``kind`` with parameters a, b, c."""
    if kind == EXPONENTIAL:
        return lr * a ** float(k)
    if kind == INVERSE_TIME:
        return lr / (1.0 + a * k / b)
    if kind == COSINE:
        return b + (lr - b) * (1.0 + math.cos(math.pi * k / a)) / 2.0
    if kind == STEP:
        return lr * b ** float(k // int(a))
    return lr
