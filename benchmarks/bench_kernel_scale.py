"""SAMKernelRegressor past the n x n wall: Nystroem path against Nystroem + Ridge.

Prints three tables:

(a) **scale**: for every n in ``--sizes`` and M in ``--components`` (d=20, RBF
    kernel, ``solver='sam'``, ``max_iter`` steps): fit time, peak memory
    (``tracemalloc``: every numpy allocation) and test RMSE of
    ``SAMKernelRegressor(n_components=M)`` side by side with
    ``make_pipeline(Nystroem(n_components=M), Ridge())``, and, where the
    n x n matrix fits (``n <= --exact-max``), the exact path and
    ``KernelRidge``; once per thread count in ``--threads``. A method whose
    planned memory does not fit is reported as such, not run.
(b) **accuracy**: at n = ``--accuracy-n`` (2*10^4), the relative distance of
    the Nystroem model's test predictions to the exact path's, and both test
    RMSEs, over M in ``--accuracy-components``.
(c) **model selection**: ``SAMKernelRegressorCV`` (every step of each
    (solver, rho) path scored) against ``GridSearchCV`` over the same
    (solver, rho, max_iter) grid, time and best choice.

``--quick`` runs all three on small sizes (a smoke test, about a minute).
``--device cuda`` runs the Nystroem fits in torch on the GPU.

Run: ``python benchmarks/bench_kernel_scale.py`` (``--help`` for the sizes).
"""

import argparse
import os
import time
import tracemalloc


def make_data(n, d, seed=0):
    """Smooth target of a few features plus noise, standard normal inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * rng.standard_normal(n)
    return X, y


def available_bytes():
    from sksam._kernel_features import available_memory

    return available_memory() or 0


def measure(fit, X_test, y_test):
    """Fit time, tracemalloc peak (bytes) and test RMSE of ``fit()``'s model."""
    import numpy as np

    tracemalloc.start()
    start = time.perf_counter()
    model = fit()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
    return elapsed, peak, rmse


def methods(n, d, M, args):
    """(name, planned bytes, fit factory) for every method at (n, M)."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    from sksam import SAMKernelRegressor

    gamma = 1.0 / d
    sam = dict(
        solver="sam",
        rho=args.rho,
        gamma=gamma,
        max_iter=args.max_iter,
        sharpness=None,
        early_stopping=False,  # all the rows, as the Ridge pipeline
    )
    out = [
        (
            f"SAM Nystroem M={M}",
            8 * 6 * M * M,
            lambda X, y: SAMKernelRegressor(
                n_components=M, random_state=0, device=args.device, **sam
            ).fit(X, y),
        ),
        (
            f"Nystroem+Ridge M={M}",
            8 * 3 * n * M,  # the n x M features, the kernel block, Ridge's copy
            lambda X, y: make_pipeline(
                Nystroem(gamma=gamma, n_components=M, random_state=0), Ridge(alpha=args.alpha)
            ).fit(X, y),
        ),
    ]
    if n <= args.exact_max:
        out += [
            (
                "SAM exact",
                8 * 3 * n * n,
                lambda X, y: SAMKernelRegressor(**sam).fit(X, y),
            ),
            (
                "KernelRidge",
                8 * 2 * n * n,
                lambda X, y: KernelRidge(kernel="rbf", gamma=gamma, alpha=args.alpha).fit(X, y),
            ),
        ]
    return out


def bench_scale(args):
    from threadpoolctl import threadpool_limits

    print(
        f"\n(a) scale: d={args.d}, rbf, solver='sam', rho={args.rho}, max_iter={args.max_iter}, "
        f"device={args.device}"
    )
    header = f"{'threads':>7} {'n':>9} {'method':<24} {'fit s':>9} {'peak MiB':>9} {'RMSE':>8}"
    print(header)
    print("-" * len(header))
    X_test, y_test = make_data(args.n_test, args.d, seed=1)
    for threads in args.threads:
        with threadpool_limits(threads):
            _set_torch_threads(threads, args.device)
            for n in args.sizes:
                X, y = make_data(n, args.d)
                done = set()
                for M in args.components:
                    for name, planned, fit in methods(n, args.d, M, args):
                        if name in done:
                            continue  # the exact methods do not depend on M
                        done.add(name)
                        if planned > 0.7 * available_bytes():
                            print(f"{threads:>7} {n:>9} {name:<24} {'does not fit':>28}")
                            continue
                        t, peak, rmse = measure(lambda: fit(X, y), X_test, y_test)
                        print(
                            f"{threads:>7} {n:>9} {name:<24} {t:>9.2f} {peak / 2**20:>9.0f} "
                            f"{rmse:>8.4f}",
                            flush=True,
                        )


def bench_accuracy(args):
    import numpy as np

    from sksam import SAMKernelRegressor

    n = args.accuracy_n
    print(f"\n(b) accuracy against the exact path at n={n}, d={args.d}, max_iter={args.max_iter}")
    X, y = make_data(n, args.d)
    X_test, y_test = make_data(args.n_test, args.d, seed=1)
    common = dict(
        solver="sam",
        rho=args.rho,
        gamma=1.0 / args.d,
        max_iter=args.max_iter,
        early_stopping=False,  # the same rows and steps as the Ridge fits
    )
    if 8 * 3 * n * n > 0.8 * available_bytes():
        print(f"the exact path at n={n} does not fit in memory; skipped")
        return
    start = time.perf_counter()
    exact = SAMKernelRegressor(**common).fit(X, y)
    t_exact = time.perf_counter() - start
    ref = exact.predict(X_test)
    rmse_exact = np.sqrt(np.mean((ref - y_test) ** 2))
    print(f"exact path: fit {t_exact:.1f} s, test RMSE {rmse_exact:.4f}")
    print(f"{'M':>6} {'fit s':>8} {'rel. dist. to exact':>20} {'RMSE':>8} {'RMSE - exact':>13}")
    for M in args.accuracy_components:
        start = time.perf_counter()
        model = SAMKernelRegressor(n_components=M, random_state=0, **common).fit(X, y)
        elapsed = time.perf_counter() - start
        pred = model.predict(X_test)
        dist = np.linalg.norm(pred - ref) / np.linalg.norm(ref)
        rmse = np.sqrt(np.mean((pred - y_test) ** 2))
        print(f"{M:>6} {elapsed:>8.2f} {dist:>20.2e} {rmse:>8.4f} {rmse - rmse_exact:>13.2e}")


def bench_cv(args):
    from sklearn.model_selection import GridSearchCV, KFold

    from sksam import SAMKernelRegressor, SAMKernelRegressorCV

    n, steps = args.cv_n, args.cv_max_iter
    grid_steps = sorted({max(1, int(round(steps * f))) for f in (0.05, 0.1, 0.2, 0.5, 1.0)})
    print(
        f"\n(c) model selection at n={n}, cv=5, solvers (gd, sam), rhos {args.cv_rhos}, "
        f"max_iter {grid_steps} (GridSearchCV) or every step up to {steps} (CV)"
    )
    X, y = make_data(n, args.d)
    cv = KFold(5, shuffle=True, random_state=0)
    common = dict(gamma=1.0 / args.d, n_components=args.cv_components, random_state=0)
    start = time.perf_counter()
    path_cv = SAMKernelRegressorCV(
        solvers=["gd", "sam"], rhos=args.cv_rhos, max_iter=steps, cv=cv, **common
    ).fit(X, y)
    t_path = time.perf_counter() - start
    start = time.perf_counter()
    grid = GridSearchCV(
        SAMKernelRegressor(sharpness=None, early_stopping=False, **common),
        {"solver": ["gd", "sam"], "rho": args.cv_rhos, "max_iter": grid_steps},
        cv=cv,
    ).fit(X, y)
    t_grid = time.perf_counter() - start
    print(
        f"GridSearchCV ({len(grid.cv_results_['params'])} candidates): {t_grid:.2f} s, "
        f"best {grid.best_params_}, R^2 {grid.best_score_:.4f}"
    )
    print(
        f"SAMKernelRegressorCV ({len(path_cv.cv_results_['params'])} candidates): "
        f"{t_path:.2f} s, best {path_cv.best_params_}, R^2 {path_cv.best_score_:.4f}"
    )
    print(f"time ratio CV / GridSearchCV: {t_path / t_grid:.2f}")


def _set_torch_threads(threads, device):
    if device is not None:
        import torch

        torch.set_num_threads(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--components", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, os.cpu_count() or 1],
        help="BLAS (and torch) thread counts to run the scale table with",
    )
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=1.0, help="Ridge / KernelRidge penalty")
    parser.add_argument("--n-test", type=int, default=10**4)
    parser.add_argument("--exact-max", type=int, default=2 * 10**4)
    parser.add_argument("--device", default=None, help="torch device of the Nystroem fits")
    parser.add_argument("--accuracy-n", type=int, default=2 * 10**4)
    parser.add_argument(
        "--accuracy-components", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000]
    )
    parser.add_argument("--cv-n", type=int, default=5000)
    parser.add_argument("--cv-components", type=int, default=500)
    parser.add_argument("--cv-max-iter", type=int, default=1000)
    parser.add_argument("--cv-rhos", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--skip", nargs="*", default=[], choices=["scale", "accuracy", "cv"])
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.components, args.max_iter = [2000, 5000], [100, 200], 200
        args.n_test, args.exact_max = 1000, 5000
        args.accuracy_n, args.accuracy_components = 2000, [50, 100, 200]
        args.cv_n, args.cv_components, args.cv_max_iter = 500, 50, 100
        args.threads = args.threads[:1]
    if "scale" not in args.skip:
        bench_scale(args)
    if "accuracy" not in args.skip:
        bench_accuracy(args)
    if "cv" not in args.skip:
        bench_cv(args)


if __name__ == "__main__":
    main()
