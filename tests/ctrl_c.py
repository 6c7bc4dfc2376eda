"""Pressing Ctrl-C in a fresh interpreter (imported as ``from ctrl_c import interrupted``)."""

import os
import signal
import subprocess
import sys
import time

# A run that never ends by itself: a linear objective (gradient 1, never below gtol = 0),
# whose starts move by lr per iteration for 10**12 iterations: hours. argv[1] is "minimize",
# or "batch" and a thread count (d = 100: the per-start loop, one start per task).
ENDLESS_RUN_SCRIPT = """
import sys
import numba
import numpy as np
import fastopt

@numba.njit
def linear(x):
    return x.sum()

@numba.njit
def linear_grad(x):
    return np.ones_like(x)

def run(maxiter):
    options = {"maxiter": maxiter, "gtol": 0.0}
    if sys.argv[1] == "minimize":
        fastopt.minimize(linear, np.zeros(2), jac=linear_grad, options=options)
    else:
        fastopt.minimize_batch(linear, np.zeros((4, 100)), jac=linear_grad, options=options,
                               workers=int(sys.argv[2]))

fastopt.loop.SPECIALIZE_AFTER_SECONDS = 0.0  # the loop specialized for it from the 2nd call
run(2)  # compiles
run(2)  # and the specialized loop
print("ready", flush=True)
try:
    run(10**12)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def interrupted(script, *argv, timeout):
    """Run ``script`` in a fresh interpreter, press Ctrl-C once it prints "ready", and return
    what it prints after; the process is killed if it has not ended within ``timeout`` s."""
    # Python takes SIGINT as KeyboardInterrupt only if SIGINT was not ignored when it
    # started, and a shell starts background jobs (a CI run in the background) ignoring it
    script = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + script
    process = subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()  # not left running (for hours) if the test fails
    assert process.returncode == 0, err[-2000:]
    return out.split()
