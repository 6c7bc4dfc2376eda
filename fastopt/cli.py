"""``fastopt``: a batched random-restart search on a built-in test function.

    fastopt                                   # Rosenbrock-2, 10,000 starts, Adam
    fastopt --function rastrigin --dim 5 --starts 100000 --method rmsprop --lr 0.01
"""

import argparse
import sys
import time

import numba
import numpy as np

from .batch import minimize_batch
from .functions import FUNCTIONS
from .rules import RULES


def _parser():
    p = argparse.ArgumentParser(prog="fastopt", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--function", default="rosenbrock", choices=sorted(FUNCTIONS))
    p.add_argument("--dim", type=int, default=2, help="dimension (ignored for fixed-d functions)")
    p.add_argument("--starts", type=int, default=10_000, help="number of random starts")
    p.add_argument("--method", default="adam", choices=sorted(RULES), type=str.lower)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the rule's)")
    p.add_argument("--maxiter", type=int, default=10_000)
    p.add_argument("--gtol", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    func = FUNCTIONS[args.function]
    d = func.dim or args.dim
    if d < 1 or args.starts < 1:
        print("fastopt: --dim and --starts must be >= 1", file=sys.stderr)
        return 2
    low, high = func.bounds
    X0 = np.random.default_rng(args.seed).uniform(low, high, size=(args.starts, d))
    options = {"maxiter": args.maxiter, "gtol": args.gtol}
    if args.lr is not None:
        options["lr"] = args.lr
    elif args.method in ("adam", "adamw"):
        options["lr"] = 0.01
    kwargs = func.batch_kwargs(d)

    t0 = time.perf_counter()
    minimize_batch(kwargs["fun"], X0[:1], jac=kwargs["jac"], method=args.method,
                   options={**options, "maxiter": 1}, workers=args.workers)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = minimize_batch(kwargs["fun"], X0, jac=kwargs["jac"], method=args.method,
                         options=options, workers=args.workers)
    run_s = time.perf_counter() - t0
    best = res.best()
    fmin = func.fmin(d)
    x_str = np.array2string(best.x, precision=6, max_line_width=72, threshold=8)
    rows = [
        ("function", f"{func.name} (d={d}, known minimum {fmin:.6g})"),
        ("method", f"{args.method} {options}"),
        ("starts", f"{args.starts:,} uniform in [{low}, {high}]^{d}"),
        ("best f", f"{best.fun:.10g}  (start {best.index})"),
        ("best x", x_str),
        ("converged", f"{res.success.mean():.1%}  (gtol {args.gtol:g})"),
        ("reached known min", f"{np.mean(res.fun <= fmin + 1e-6 * max(1, abs(fmin))):.1%}"),
        ("iterations", f"median {np.median(res.nit):.0f}, max {res.nit.max()}"),
        ("time", f"{run_s:.3f} s on {args.workers or numba.get_num_threads()} threads "
                 f"({run_s / args.starts * 1e6:.2f} us/start); compile {compile_s:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
