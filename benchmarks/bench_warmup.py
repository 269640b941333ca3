"""Where the first fit's extra time goes: import, first fit and second fit, each in a fresh process.

For each case a new Python process is started (so nothing is imported yet),
and it times, with ``time.perf_counter``:

1. ``import`` of the estimator's module (``from sksam import ...``);
2. the first ``fit``;
3. a second, identical ``fit`` of a fresh estimator (the steady state).

"first - second" is the warm-up a newcomer timing SAM against GD pays on
whichever solver runs first. The script also lists which heavy modules
(torch, skorch, sympy, torch's symbolic shapes, scipy.sparse.linalg) were
first imported *during* the first fit rather than at import time: those are
the warm-up's known sources.

Cases:

* ``two_layer``: ``SAMTwoLayerRegressor(solver='gd')`` on a small
  teacher-student problem (n=200, d=5, 32 units, 100 steps, default
  ``sharpness``);
* ``net``: ``SAMNetClassifier`` on digits (X / 16), 2 epochs, default
  ``sharpness``;
* ``kernel``: ``SAMKernelRegressor`` on diabetes (for reference: numpy only).

Run::

    python benchmarks/bench_warmup.py --repeats 3
    python benchmarks/bench_warmup.py --root /path/to/other/checkout   # before/after

Timings taken on a shared, busy machine vary from run to run; the medians of
``--repeats`` fresh processes are printed, and the difference first - second
is what to compare before and after a change.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HEAVY = (
    "torch",
    "skorch",
    "sympy",
    "torch.fx.experimental.symbolic_shapes",
    "scipy.sparse.linalg",
)

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
HEAVY = {heavy!r}
case = {case!r}
t0 = time.perf_counter()
if case == "two_layer":
    from sksam import SAMTwoLayerRegressor
    from sksam.datasets import make_teacher_student
elif case == "net":
    from sksam import SAMNetClassifier
    from sklearn.datasets import load_digits
else:
    from sksam import SAMKernelRegressor
    from sklearn.datasets import load_diabetes
t1 = time.perf_counter()
before = {{m for m in HEAVY if m in sys.modules}}


def make():
    if case == "two_layer":
        X, y = make_teacher_student(n_samples=200, n_features=5, random_state=0)
        est = SAMTwoLayerRegressor(solver="gd", n_hidden=32, max_iter=100, tol=None,
                                   random_state=0)
    elif case == "net":
        X, y = load_digits(return_X_y=True)
        X = (X / 16).astype("float32")
        est = SAMNetClassifier(max_epochs=2, random_state=0)
    else:
        X, y = load_diabetes(return_X_y=True)
        est = SAMKernelRegressor(random_state=0)
    return est, X, y


est, X, y = make()
t2 = time.perf_counter()
est.fit(X, y)
t3 = time.perf_counter()
during = sorted({{m for m in HEAVY if m in sys.modules}} - before)
est, X, y = make()
t4 = time.perf_counter()
est.fit(X, y)
t5 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first": t3 - t2, "second": t5 - t4,
                   "imported_during_first_fit": during}}))
"""


def _run(case, cwd, threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads:
            env[name] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(heavy=HEAVY, case=case)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["two_layer", "net", "kernel"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP/MKL threads of the timed process (0: unset, the libraries' default pool)",
    )
    parser.add_argument(
        "--root",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="the checkout whose sksam is timed (default: this one); another for a before/after",
    )
    args = parser.parse_args()
    root = args.root
    print(
        f"timings on a shared machine; medians of {args.repeats} fresh processes; "
        f"threads={args.threads or 'default'}"
    )
    print(f"{'case':<10} {'import s':>9} {'1st fit s':>10} {'2nd fit s':>10} {'warm-up s':>10}")
    for case in args.cases:
        runs = [_run(case, root, args.threads) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("import", "first", "second")}
        warm = statistics.median(r["first"] - r["second"] for r in runs)
        print(
            f"{case:<10} {med['import']:>9.3f} {med['first']:>10.3f} "
            f"{med['second']:>10.3f} {warm:>10.3f}   "
            f"imported during 1st fit: {runs[0]['imported_during_first_fit'] or 'none'}"
        )


if __name__ == "__main__":
    main()
