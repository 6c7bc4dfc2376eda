"""fastopt: JIT-compiled optimizer kernels for NumPy, one start or millions.

Three ways in:

* ``fastopt.minimize(fun, x0, method="adam", ...)`` -- scipy.optimize.minimize's
  interface, returns scipy's ``OptimizeResult``.
* ``fastopt.minimize_batch(fun, X0, ...)`` -- N independent starts on all cores.
* ``opt = fastopt.Adam(lr=1e-3); state = opt.init(x); opt.step(x, g, state)`` --
  torch.optim's names and numerics on NumPy arrays.
"""

from . import functions, rules, schedules
from .batch import BatchResult, minimize_batch
from .minimize import minimize
from .objective import PythonSpeedWarning
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from .status import Status

__version__ = "0.1.0"

__all__ = [
    "minimize", "minimize_batch", "BatchResult", "Status", "PythonSpeedWarning",
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    "functions", "rules", "schedules",
]
