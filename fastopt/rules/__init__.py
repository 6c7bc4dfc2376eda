"""Update rules: one module per family, each a compiled kernel plus its :class:`Rule`.

The kernels (``sgd_update``, ``adam_update``, ...) take flat float64 arrays and
explicit hyperparameters; they are callable from Python and from user ``@njit``
code. ``RULES`` maps a method name (as used by :func:`fastopt.minimize`) to its
:class:`Rule`.
"""

from ._spec import Rule
from .adagrad import ADAGRAD_RULE, adagrad_update, adagrad_update_parallel
from .adam import ADAM_RULE, ADAMW_RULE, adam_update, adam_update_parallel
from .rmsprop import RMSPROP_RULE, rmsprop_update, rmsprop_update_parallel
from .sgd import SGD_RULE, sgd_update, sgd_update_parallel

RULES = {
    "sgd": SGD_RULE,
    "gd": SGD_RULE,
    "adagrad": ADAGRAD_RULE,
    "rmsprop": RMSPROP_RULE,
    "adam": ADAM_RULE,
    "adamw": ADAMW_RULE,
}

__all__ = [
    "RULES", "Rule",
    "sgd_update", "sgd_update_parallel",
    "adagrad_update", "adagrad_update_parallel",
    "rmsprop_update", "rmsprop_update_parallel",
    "adam_update", "adam_update_parallel",
]
