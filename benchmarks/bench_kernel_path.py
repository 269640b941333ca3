"""Fit time of the exact kernel path with many output columns.

``SAMKernelRegressor`` (exact rbf kernel) on

* ``load_digits`` with the one-hot targets coded ``+-1`` (1347 training rows,
  10 columns);
* a synthetic regression problem with ``--n`` rows and 10 outputs;

for each solver and ``max_iter``, against ``KernelRidge`` on the same data
(the ratio line). The test R^2 is printed to show the fits are the ones the
path gives. Run the script in two checkouts to compare versions of the path
solver. BLAS runs on ``--threads`` threads (default 1). On a machine shared
with other jobs the times are noisy: read the ratios, not the seconds.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _set_threads(threads):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _problems(n):
    import numpy as np
    from sklearn.datasets import load_digits, make_regression
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    Y = np.where(y[:, None] == np.arange(10), 1.0, -1.0)
    yield "digits one-hot (+-1), gamma=0.02", X / 16.0, Y, 0.02
    X, Y = make_regression(n_samples=n, n_features=10, n_targets=10, noise=5.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    Y = np.tanh(Y / Y.std())
    yield f"synthetic n={n}, 10 outputs, gamma=0.05", X, Y, 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="rows of the synthetic problem")
    parser.add_argument("--max-iters", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _set_threads(args.threads)
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import train_test_split

    from sksam import SAMKernelRegressor

    print(
        f"threads={args.threads}, best of {args.repeat} fits; timings taken on a machine "
        "shared with other jobs: read the ratios."
    )
    for label, X, Y, gamma in _problems(args.n):
        X_tr, X_te, Y_tr, Y_te = train_test_split(X, Y, test_size=0.25, random_state=0)
        ridge = KernelRidge(kernel="rbf", gamma=gamma, alpha=0.01)
        ref = best_time(lambda: ridge.fit(X_tr, Y_tr), args.repeat)
        print(
            f"{label} (n_train={len(X_tr)}): KernelRidge(alpha=0.01) {ref:.3f} s, "
            f"R^2 {ridge.score(X_te, Y_te):.4f}"
        )
        for solver in ("gd", "sam"):
            for max_iter in args.max_iters:
                model = SAMKernelRegressor(
                    solver=solver,
                    rho=args.rho,
                    gamma=gamma,
                    max_iter=max_iter,
                    sharpness=None,
                    early_stopping=False,
                )
                seconds = best_time(lambda m=model: m.fit(X_tr, Y_tr), args.repeat)
                print(
                    f"    solver={solver!r:6} max_iter={max_iter:<7} {seconds:7.3f} s "
                    f"({seconds / ref:6.1f}x KernelRidge), R^2 {model.score(X_te, Y_te):.4f}"
                )


if __name__ == "__main__":
    main()
