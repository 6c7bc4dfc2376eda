"""The step API: torch.optim's classes, names and defaults on flat NumPy arrays.

>>> import numpy as np, fastopt
>>> opt = fastopt.Adam(lr=1e-3)
>>> x = np.array([1.0, -2.0]); state = opt.init(x)
>>> opt.step(x, 2 * x, state)        # x and state are updated in place
>>> int(state.step[0])
1

State is an explicit NamedTuple of arrays (optax's style) with torch's state
names; ``step`` is a 1-element int64 array. Each ``step`` is one compiled call
(multithreaded for vectors of ``PARALLEL_THRESHOLD`` elements or more, with
identical numerics; serial in a process forked after its parent used GNU OpenMP, see
:func:`fastopt._jit.parallel_kernels_usable`). The kernels behind it
(``fastopt.rules.adam_update``, ...) are callable from user ``@njit`` code too.
"""

from typing import NamedTuple

import numpy as np

from ._jit import parallel_kernels_usable, parallel_lock
from .rules import RULES, adagrad, adam, rmsprop, sgd

PARALLEL_THRESHOLD = 1 << 18
_EMPTY = np.empty(0)


class SGDState(NamedTuple):
    step: np.ndarray
    momentum_buffer: np.ndarray


class AdagradState(NamedTuple):
    step: np.ndarray
    sum: np.ndarray


class RMSpropState(NamedTuple):
    step: np.ndarray
    square_avg: np.ndarray
    momentum_buffer: np.ndarray
    grad_avg: np.ndarray


class AdamState(NamedTuple):
    step: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    max_exp_avg_sq: np.ndarray


def _flat(array, name, size=None, writeable=False):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (updated in place); got "
                        f"{type(array).__name__}")
    if array.dtype != np.float64:
        raise TypeError(f"{name} must have dtype float64; got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable: step updates it in place")
    if size is not None and array.size != size:
        raise ValueError(f"{name} must have {size} elements like params; got {array.size}")
    return array.reshape(-1)


class Optimizer:
    """Base class: validated hyperparameters plus ``init`` and ``step``.

    Hyperparameters are attributes (``opt.lr``); assigning one (``opt.lr = 1e-4``, as a
    torch user sets ``param_groups[0]["lr"]``) validates it and takes effect at the next
    ``step``. Options that change the state's buffers (``momentum`` from 0, ``amsgrad``,
    ``centered``) need a new ``init``: ``step`` checks every buffer it will write.
    """

    method = None  # name in fastopt.rules.RULES

    def __init__(self, foreach=None, fused=None, capturable=False, differentiable=False,
                 **hyperparameters):
        # torch's choices of implementation, which give the same numbers to rounding:
        # fastopt has one (compiled, in float64), so they are taken and change nothing
        for name, value in (("foreach", foreach), ("fused", fused)):
            if value not in (None, True, False):
                raise TypeError(f"{name} must be None or a bool; got {value!r}")
        if capturable not in (True, False):
            raise TypeError(f"capturable must be a bool; got {capturable!r}")
        if differentiable:
            raise ValueError("differentiable=True: fastopt's step is not recorded by an "
                             "autograd; use torch.optim for that")
        self._set_hyperparameters(hyperparameters)

    def _set_hyperparameters(self, hyperparameters):
        rule = RULES[self.method]
        values = {}
        for name, value in hyperparameters.items():
            if np.ndim(value) or isinstance(value, (str, bytes)):
                raise TypeError(f"{name} must be a real number; got {value!r}")
            try:
                values[name] = np.asarray(float(value))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be a real number; got {value!r}") from exc
        rule.validate(values)
        object.__setattr__(self, "hyperparameters", {
            k: (bool(v) if isinstance(rule.defaults[k], bool) else float(v))
            for k, v in hyperparameters.items()})

    def __getattr__(self, name):
        hyper = self.__dict__.get("hyperparameters", {})
        if name in hyper:
            return hyper[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in self.__dict__.get("hyperparameters", ()):
            self._set_hyperparameters({**self.hyperparameters, name: value})
        else:  # a property's setter (Adam.betas), or a subclass's own attribute
            object.__setattr__(self, name, value)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"

    def _needed_buffers(self):
        """The names of the state's buffers ``step`` writes, given the hyperparameters."""
        raise NotImplementedError

    def step(self, params, grad, state):
        """Apply one update to ``params`` in place, given its gradient ``grad``."""
        p = _flat(params, "params", writeable=True)
        g = _flat(grad, "grad")
        if grad.shape != params.shape:
            raise ValueError(f"grad must have the shape of params {params.shape}; got "
                             f"{grad.shape}")
        self._check_state(state, p.size)
        if p.size >= PARALLEL_THRESHOLD and parallel_kernels_usable():
            with parallel_lock:
                self._apply(True, p, g, state)
        else:
            self._apply(False, p, g, state)

    def _check_state(self, state, size):
        if not isinstance(state, self._state_type):
            raise TypeError(f"state must be the {self._state_type.__name__} returned by "
                            f"init(); got {type(state).__name__}")
        step = state.step
        if not (isinstance(step, np.ndarray) and step.dtype == np.int64 and step.shape == (1,)
                and step.flags.writeable):
            raise ValueError("state.step must be a writeable int64 array of shape (1,), as "
                             "init() returns it")
        for name in self._needed_buffers():
            _flat(getattr(state, name), f"state.{name}", size, writeable=True)


class SGD(Optimizer):
    r"""Gradient descent with optional heavy-ball or Nesterov momentum (torch.optim.SGD).

    ``lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False``.
    Update rule: see :mod:`fastopt.rules.sgd`. optax: ``optax.sgd``.
    """

    method = "sgd"
    _state_type = SGDState

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None):
        super().__init__(lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=foreach, differentiable=differentiable, fused=fused)

    def init(self, params):
        """Fresh state for ``params``: step 0 and a momentum buffer (empty if momentum is 0)."""
        flat = _flat(params, "params")
        buf = np.zeros(flat.size) if self.momentum != 0 else _EMPTY
        return SGDState(np.zeros(1, dtype=np.int64), buf)

    def _needed_buffers(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _apply(self, parallel, p, g, s):
        kernel = sgd.sgd_update_parallel if parallel else sgd.sgd_update
        h = self.hyperparameters
        kernel(p, g, s.step, s.momentum_buffer, h["lr"], h["momentum"], h["dampening"],
               h["weight_decay"], h["nesterov"], h["maximize"])


class Adagrad(Optimizer):
    r"""AdaGrad (torch.optim.Adagrad).

    ``lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
    maximize=False``. Update rule: see :mod:`fastopt.rules.adagrad`. optax:
    ``optax.adagrad`` (different defaults).
    """

    method = "adagrad"
    _state_type = AdagradState

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused)

    def init(self, params):
        flat = _flat(params, "params")
        return AdagradState(np.zeros(1, dtype=np.int64),
                            np.full(flat.size, self.initial_accumulator_value))

    def _needed_buffers(self):
        return ("sum",)

    def _apply(self, parallel, p, g, s):
        kernel = adagrad.adagrad_update_parallel if parallel else adagrad.adagrad_update
        h = self.hyperparameters
        kernel(p, g, s.step, s.sum, h["lr"], h["lr_decay"], h["weight_decay"], h["eps"],
               h["maximize"])


class RMSprop(Optimizer):
    r"""RMSProp (torch.optim.RMSprop).

    ``lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
    maximize=False``. Update rule: see :mod:`fastopt.rules.rmsprop`. optax:
    ``optax.rmsprop`` (decay 0.9 by default, eps inside the square root).
    """

    method = "rmsprop"
    _state_type = RMSpropState

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize,
                         capturable=capturable, foreach=foreach, differentiable=differentiable)

    def init(self, params):
        n = _flat(params, "params").size
        return RMSpropState(np.zeros(1, dtype=np.int64), np.zeros(n),
                            np.zeros(n) if self.momentum > 0 else _EMPTY,
                            np.zeros(n) if self.centered else _EMPTY)

    def _needed_buffers(self):
        return (("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def _apply(self, parallel, p, g, s):
        kernel = rmsprop.rmsprop_update_parallel if parallel else rmsprop.rmsprop_update_vector
        h = self.hyperparameters
        kernel(p, g, s.step, s.square_avg, s.momentum_buffer, s.grad_avg, h["lr"], h["alpha"],
               h["eps"], h["weight_decay"], h["momentum"], h["centered"], h["maximize"])


class Adam(Optimizer):
    r"""Adam and AMSGrad (torch.optim.Adam).

    ``lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
    maximize=False, decoupled_weight_decay=False`` (True: AdamW's decay, as torch's).
    Update rule: see :mod:`fastopt.rules.adam`. optax: ``optax.adam`` /
    ``optax.amsgrad``. torch's ``foreach``, ``fused``, ``capturable`` choose among
    implementations that give the same numbers: taken, with no effect here.
    """

    method = "adam"
    _state_type = AdamState

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False,
                 fused=None, decoupled_weight_decay=False):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)")
        if decoupled_weight_decay not in (True, False):
            raise TypeError(f"decoupled_weight_decay must be a bool; got "
                            f"{decoupled_weight_decay!r}")
        object.__setattr__(self, "decoupled_weight_decay", bool(decoupled_weight_decay))
        super().__init__(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused)

    @property
    def betas(self):
        return (self.hyperparameters["beta1"], self.hyperparameters["beta2"])

    @betas.setter
    def betas(self, betas):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)")
        self._set_hyperparameters({**self.hyperparameters, "beta1": betas[0],
                                   "beta2": betas[1]})

    def _needed_buffers(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def init(self, params):
        n = _flat(params, "params").size
        return AdamState(np.zeros(1, dtype=np.int64), np.zeros(n), np.zeros(n),
                         np.zeros(n) if self.amsgrad else _EMPTY)

    def _apply(self, parallel, p, g, s):
        kernel = adam.adam_update_parallel if parallel else adam.adam_update_vector
        h = self.hyperparameters
        kernel(p, g, s.step, s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq, h["lr"], h["beta1"],
               h["beta2"], h["eps"], h["weight_decay"], h["amsgrad"], h["maximize"],
               self.decoupled_weight_decay)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (torch.optim.AdamW).

    ``lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
    maximize=False``. optax: ``optax.adamw`` (default weight decay 1e-4).
    """

    method = "adamw"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
