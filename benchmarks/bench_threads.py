"""Time a small two-layer fit with torch's default thread count and with one thread.

Optionally with one busy process competing for a core (``--busy``), the
situation of a laptop running something else, or of ``GridSearchCV(n_jobs=2)``.
Prints the median wall time of each setting and their ratio.

    python benchmarks/bench_threads.py --busy          # the measurement
    python benchmarks/bench_threads.py --quick         # smoke run
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def fit_time(n_threads, n_samples, n_features, n_hidden, max_iter, repeats):
    from sksam import SAMTwoLayerRegressor

    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_samples, n_features))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n_samples)
    times = []
    for _ in range(repeats):
        reg = SAMTwoLayerRegressor(
            n_hidden=n_hidden,
            max_iter=max_iter,
            tol=None,
            sharpness=None,
            random_state=0,
            n_threads=n_threads,  # explicit: bypasses the automatic policy
        )
        start = time.perf_counter()
        reg.fit(X, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--n-features", type=int, default=10)
    parser.add_argument("--n-hidden", type=int, default=100)
    parser.add_argument("--max-iter", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", action="store_true", help="run one busy process meanwhile")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.max_iter, args.repeats = [100], 20, 1
    import torch

    default = torch.get_num_threads()
    busy = None
    if args.busy:  # one process spinning on a core, stopped at the end
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print(f"cpus={os.cpu_count()} default_threads={default} busy={args.busy}")
        print(f"{'n_samples':>10} {'default (s)':>12} {'1 thread (s)':>13} {'ratio':>7}")
        for n in args.sizes:
            t_default = fit_time(
                default, n, args.n_features, args.n_hidden, args.max_iter, args.repeats
            )
            t_one = fit_time(1, n, args.n_features, args.n_hidden, args.max_iter, args.repeats)
            print(f"{n:>10} {t_default:>12.3f} {t_one:>13.3f} {t_default / t_one:>7.2f}")
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
