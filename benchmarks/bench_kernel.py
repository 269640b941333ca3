"""SAMKernelRegressor against scikit-learn's KernelRidge, timed side by side.

Prints, in one run:

(a) fit time at n=5000, d=20, RBF kernel, ``max_iter=1000``, ``solver='sam'``
    against ``KernelRidge.fit`` on the same data (the bar: <= 2x, aim <= 1x);
(b) ``GridSearchCV`` over 10 values of ``rho``, ``cv=5``, n=2000, against
    ``GridSearchCV(KernelRidge)`` over 10 values of ``alpha`` (aim <= 1.5x);
(c) the accuracy of the Krylov path at n=5000 against the naive loop of the
    SAM rule (two ``K v`` products per step, ``alpha`` updated in place), and
    against a second naive loop that only orders the same arithmetic
    differently, which measures how much rounding alone moves the answer.
    Skip it with ``--skip-accuracy`` (it takes about 2000 products ``K v``).

Run: ``python benchmarks/bench_kernel.py`` (``--help`` for the sizes).
BLAS runs on ``--threads`` threads (default 1) for both sides.
"""

import argparse
import os
import time


def _set_threads(threads):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def make_data(n, d, seed=0):
    """Smooth target of a few features plus noise, standard normal inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * rng.standard_normal(n)
    return X, y


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_fit(args):
    from sklearn.kernel_ridge import KernelRidge

    from sksam import SAMKernelRegressor

    X, y = make_data(args.n, args.d)
    sam = SAMKernelRegressor(solver="sam", rho=args.rho, max_iter=args.max_iter)
    krr = KernelRidge(kernel="rbf", alpha=1.0)
    t_sam = best_time(lambda: sam.fit(X, y), args.repeat)
    t_krr = best_time(lambda: krr.fit(X, y), args.repeat)
    print(f"(a) fit, n={args.n}, d={args.d}, rbf, max_iter={args.max_iter}, solver='sam'")
    print(f"    SAMKernelRegressor.fit  {t_sam:8.3f} s   (Krylov basis {sam.krylov_size_} columns)")
    print(f"    KernelRidge.fit         {t_krr:8.3f} s")
    print(f"    ratio SAM / KernelRidge {t_sam / t_krr:8.2f}x")
    return X, y, sam


def bench_grid(args):
    import numpy as np
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV

    from sksam import SAMKernelRegressor

    X, y = make_data(args.n_grid, args.d, seed=1)
    rhos = np.linspace(0.0, 0.5, 10)
    alphas = np.logspace(-3, 2, 10)
    sam = GridSearchCV(
        SAMKernelRegressor(solver="sam", max_iter=args.max_iter), {"rho": rhos}, cv=5
    )
    krr = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas}, cv=5)
    t_sam = best_time(lambda: sam.fit(X, y), args.repeat)
    t_krr = best_time(lambda: krr.fit(X, y), args.repeat)
    print(f"(b) GridSearchCV, n={args.n_grid}, cv=5, 10 candidates, max_iter={args.max_iter}")
    print(f"    over rho   (SAMKernelRegressor) {t_sam:8.3f} s   best rho={sam.best_params_['rho']:.3g}")
    print(f"    over alpha (KernelRidge)        {t_krr:8.3f} s   best alpha={krr.best_params_['alpha']:.3g}")
    print(f"    ratio                           {t_sam / t_krr:8.2f}x")


def naive_sam(K, y, *, lr, rho, max_iter, in_place):
    """The SAM rule on alpha with two products K v per step (the reference)."""
    import numpy as np

    from sksam._update_rules import perturbation_scale

    n = K.shape[0]
    alpha, K_alpha = np.zeros(n), np.zeros(n)
    for _ in range(max_iter):
        r = (K_alpha if in_place else K @ alpha) - y
        K_r = K @ r
        c = perturbation_scale("sam", rho, np.sqrt(max(r @ K_r, 0.0)) / n)
        step = (lr / n) * (r + (c / n) * K_r)
        alpha = alpha - step
        if in_place:
            K_alpha = K_alpha - K @ step
    return alpha


def bench_accuracy(args, X, y, model):
    import numpy as np

    K = model._get_kernel(X)
    settings = dict(lr=model.learning_rate_, rho=args.rho, max_iter=args.max_iter)
    start = time.perf_counter()
    reference = naive_sam(K, y, in_place=True, **settings)
    t_naive = time.perf_counter() - start
    other = naive_sam(K, y, in_place=False, **settings)

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    fit_krylov, fit_ref, fit_other = K @ model.dual_coef_, K @ reference, K @ other
    print(f"(c) accuracy at n={args.n}, solver='sam', learning_rate='auto', max_iter={args.max_iter}")
    print(f"    naive loop time                          {t_naive:8.3f} s")
    print(f"    Krylov vs naive loop:  dual_coef_ rel. error {rel(model.dual_coef_, reference):.2e}, "
          f"fitted values {rel(fit_krylov, fit_ref):.2e}")
    print(f"    naive vs naive (other order):  dual_coef_ {rel(other, reference):.2e}, "
          f"fitted values {rel(fit_other, fit_ref):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--n-grid", type=int, default=2000)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-grid", action="store_true")
    args = parser.parse_args()
    _set_threads(args.threads)  # before numpy loads its BLAS

    X, y, model = bench_fit(args)
    if not args.skip_grid:
        bench_grid(args)
    if not args.skip_accuracy:
        bench_accuracy(args, X, y, model)


if __name__ == "__main__":
    main()
