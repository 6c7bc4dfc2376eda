"""Index layout of the small per-start arrays the compiled loop reads and writes.

``counters`` (int64, one row per start) and ``controls`` (float64, one row per
start) are plain arrays so that a batch of N starts is two matrices, each start
owning its row.
"""

# counters[i]
NIT = 0  # iterations taken
NFEV = 1  # objective evaluations
NJEV = 2  # gradient evaluations
NHEV = 3  # Hessian evaluations
STATUS = 4  # fastopt.status code
STEP = 5  # the rule's own step counter (torch's state["step"])
RAISED = 6  # exceptions the objective raised inside the portable loop (its native call)
N_COUNTERS = 7

# controls[i]
GTOL = 0
XTOL = 1
FTOL = 2
MAXITER = 3
CLIP_VALUE = 4  # 0 = off
CLIP_NORM = 5  # 0 = off
FD_STEP = 6  # finite-difference step: 0 the default, > 0 relative, < 0 minus an absolute step
SCHEDULE_KIND = 7  # fastopt.schedules kind code, 0 = constant
SCHEDULE_A = 8
SCHEDULE_B = 9
SCHEDULE_C = 10
LINE_SEARCH = 11  # 0 none, 1 strong Wolfe, 2 backtracking Armijo
MAXFUN = 12  # objective evaluations after which a start stops (inf = off)
N_CONTROLS = 13
