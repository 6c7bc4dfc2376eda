"""Update rules: one module per family, each a compiled kernel plus its :class:`Rule`.

The kernels (``sgd_update``, ``adam_update``, ...) take flat float64 arrays and
explicit hyperparameters; they are callable from Python and from user ``@njit``
code. ``RULES`` maps a method name (as used by :func:`fastopt.minimize`) to its
:class:`Rule`.
"""

from ._spec import Rule
from .adagrad import ADAGRAD_RULE, adagrad_update, adagrad_update_parallel
from .adam import ADAM_RULE, ADAMW_RULE, adam_update, adam_update_parallel
from .newton import DAMPED_NEWTON_RULE, NEWTON_RULE, damped_newton_advance, newton_advance
from .quasi_newton import (
    BFGS_RULE,
    GD_LINE_SEARCH_RULE,
    LBFGS_RULE,
    LBFGSB_RULE,
    bfgs_advance,
    gd_line_search_advance,
    lbfgs_advance,
)
from .rmsprop import RMSPROP_RULE, rmsprop_update, rmsprop_update_parallel
from .sgd import SGD_RULE, sgd_update, sgd_update_parallel

# Plain gradient descent takes a line search through options["line_search"].
SGD_RULE = SGD_RULE._replace(with_line_search=GD_LINE_SEARCH_RULE)

RULES = {
    "sgd": SGD_RULE,
    "gd": SGD_RULE,
    "adagrad": ADAGRAD_RULE,
    "rmsprop": RMSPROP_RULE,
    "adam": ADAM_RULE,
    "adamw": ADAMW_RULE,
    "newton": NEWTON_RULE,
    "damped-newton": DAMPED_NEWTON_RULE,
    "bfgs": BFGS_RULE,
    "lbfgs": LBFGS_RULE,
    "l-bfgs-b": LBFGSB_RULE,  # scipy's name; bounds are not supported
}

__all__ = [
    "RULES", "Rule",
    "sgd_update", "sgd_update_parallel",
    "adagrad_update", "adagrad_update_parallel",
    "rmsprop_update", "rmsprop_update_parallel",
    "adam_update", "adam_update_parallel",
    "newton_advance", "damped_newton_advance", "bfgs_advance", "lbfgs_advance",
    "gd_line_search_advance",
]
