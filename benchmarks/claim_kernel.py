"""The paper's kernel-regression claim, measured: SAM's error is at most GD's.

Behdin & Mazumder (arXiv:2302.11836) show that for kernel regression trained
from zero with early stopping, SAM has a lower bias and a slightly higher
variance than GD along the iterations, so that at a well-chosen stopping time
its prediction error is at most GD's; the gain is small (convex case).

Setting: RBF kernel regression, target in the
kernel's function space (:func:`sksam.datasets.make_kernel_regression`),
n=400 training points, d=5, noise 0.5; the prediction error is measured
against the noiseless target on 2000 fresh points. For each seed and solver,
one fit gives the whole error-versus-iteration curve
(:meth:`~sksam.SAMKernelRegressor.staged_predict`), from which we report

* the *oracle* error: the minimum over the iterations (the paper's
  "well-chosen stopping time"), and
* the *validated* error: the iteration and rho picked on a 25% validation
  split of the training set, refit on the rest (what a user can do).

Usage::

    python benchmarks/claim_kernel.py [--seeds 10] [--rhos 0.025 0.05 0.1 0.2 0.4 0.8]
"""

import argparse
import time

import numpy as np

from sksam import SAMKernelRegressor
from sksam.datasets import make_kernel_regression

N_TRAIN, N_TEST, D, NOISE, GAMMA = 400, 2000, 5, 0.5, 0.5
LEARNING_RATE, MAX_ITER = 1.0, 400


def staged_errors(model, X_train, y_train, X_eval, f_eval):
    """Mean squared error against ``f_eval`` after every step."""
    model.fit(X_train, y_train)
    return np.array([np.mean((p - f_eval) ** 2) for p in model.staged_predict(X_eval)])


def make_model(solver, rho):
    return SAMKernelRegressor(
        solver=solver,
        rho=rho,
        gamma=GAMMA,
        learning_rate=LEARNING_RATE,
        max_iter=MAX_ITER,
        sharpness=None,
        early_stopping=False,
    )


def one_seed(seed, rhos):
    X, y, f = make_kernel_regression(
        return_y_true=True, n_samples=N_TRAIN + N_TEST, n_features=D, noise=NOISE, random_state=seed
    )
    X_train, y_train, X_test, f_test = X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], f[N_TRAIN:]
    n_fit = int(0.75 * N_TRAIN)  # validation on noisy labels: all a user has
    candidates = [("gd", 0.0)] + [("sam", rho) for rho in rhos]
    result = {}
    for solver in ("gd", "sam"):
        oracle, validated = np.inf, None
        best_validation = np.inf
        for cand_solver, rho in candidates:
            if cand_solver != solver:
                continue
            test_curve = staged_errors(make_model(solver, rho), X_train, y_train, X_test, f_test)
            oracle = min(oracle, test_curve.min())
            val_curve = staged_errors(
                make_model(solver, rho), X[:n_fit], y[:n_fit], X[n_fit:N_TRAIN], y[n_fit:N_TRAIN]
            )
            if val_curve.min() < best_validation:
                best_validation = val_curve.min()
                validated = (test_curve[val_curve.argmin()], rho, val_curve.argmin() + 1)
        result[solver] = (oracle, *validated)
    return result


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4, 0.8])
    args = parser.parse_args()

    start = time.perf_counter()
    print(
        f"RBF kernel regression: n={N_TRAIN}, d={D}, noise {NOISE}, gamma={GAMMA}, "
        f"lr={LEARNING_RATE}, {MAX_ITER} steps; SAM rho in {args.rhos}"
    )
    print("prediction error against the noiseless target on 2000 fresh points\n")
    header = (
        f"{'seed':>4} {'GD oracle':>10} {'SAM oracle':>11} {'ratio':>6}   "
        f"{'GD valid.':>10} {'(steps)':>7} {'SAM valid.':>11} {'(rho, steps)':>13}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for seed in range(args.seeds):
        r = one_seed(seed, args.rhos)
        (gd_o, gd_v, _, gd_t), (sam_o, sam_v, sam_rho, sam_t) = r["gd"], r["sam"]
        rows.append((gd_o, sam_o, gd_v, sam_v))
        print(
            f"{seed:4d} {gd_o:10.4f} {sam_o:11.4f} {sam_o / gd_o:6.3f}   "
            f"{gd_v:10.4f} {gd_t:7d} {sam_v:11.4f} {sam_rho:6.2f}, {sam_t:5d}"
        )
    gd_o, sam_o, gd_v, sam_v = np.array(rows).T
    print("-" * len(header))
    print(
        f"oracle stopping:    SAM <= GD on {np.sum(sam_o <= gd_o)}/{len(rows)} seeds; "
        f"mean error GD {gd_o.mean():.4f}, SAM {sam_o.mean():.4f} "
        f"(mean relative reduction {100 * np.mean(1 - sam_o / gd_o):.2f}%)"
    )
    print(
        f"validated stopping: SAM < GD on {np.sum(sam_v < gd_v)}/{len(rows)} seeds; "
        f"mean error GD {gd_v.mean():.4f}, SAM {sam_v.mean():.4f} "
        f"(mean relative reduction {100 * np.mean(1 - sam_v / gd_v):.2f}%)"
    )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
