"""SAMKernelRegressor against scikit-learn's KernelRidge, timed side by side.

Prints, in one run:

(a) fit time at n=5000, d=20, RBF kernel, ``max_iter=1000``, ``solver='sam'``
    against ``KernelRidge.fit`` on the same data (the bar: <= 2x, aim <= 1x);
(b) ``GridSearchCV`` over 10 values of ``rho``, ``cv=5``, n=2000, against
    ``GridSearchCV(KernelRidge)`` over 10 values of ``alpha`` (aim <= 1.5x),
    and ``SAMKernelRegressorCV`` over the same 10 values of ``rho`` (every step
    up to ``max_iter`` scored; each fold's kernel matrix and Krylov basis
    built once for its 10 paths);
(c) the accuracy of the Krylov path at n=5000: for ``solver='sam'`` against
    the exact spectral path (dense ``eigh``, every residual component updated
    by its own factor) and against the naive loop of the rule on ``alpha``
    (two ``K v`` products per step), with the naive loop's own distance to the
    exact path and to a second naive loop that only orders the arithmetic
    differently (SAM's path is sensitive to rounding where it "bounces" along
    the top eigenvector, see ``sksam._kernel_path``); for ``solver='gd'``
    against the naive loop. Skip it with ``--skip-accuracy`` (a dense
    ``eigh`` and about 5000 products ``K v``: a minute or so).

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
    sam = SAMKernelRegressor(
        solver="sam", rho=args.rho, max_iter=args.max_iter, early_stopping=False
    )
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

    from sksam import SAMKernelRegressor, SAMKernelRegressorCV

    X, y = make_data(args.n_grid, args.d, seed=1)
    rhos = np.linspace(0.0, 0.5, 10)
    alphas = np.logspace(-3, 2, 10)
    sam = GridSearchCV(
        SAMKernelRegressor(solver="sam", max_iter=args.max_iter, early_stopping=False),
        {"rho": rhos},
        cv=5,
    )
    krr = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas}, cv=5)
    t_sam = best_time(lambda: sam.fit(X, y), args.repeat)
    t_krr = best_time(lambda: krr.fit(X, y), args.repeat)
    print(f"(b) GridSearchCV, n={args.n_grid}, cv=5, 10 candidates, max_iter={args.max_iter}")
    best_rho, best_alpha = sam.best_params_["rho"], krr.best_params_["alpha"]
    print(f"    over rho   (SAMKernelRegressor) {t_sam:8.3f} s   best rho={best_rho:.3g}")
    print(f"    over alpha (KernelRidge)        {t_krr:8.3f} s   best alpha={best_alpha:.3g}")
    print(f"    ratio                           {t_sam / t_krr:8.2f}x")
    path_cv = SAMKernelRegressorCV(
        solvers=["sam"], rhos=rhos, max_iter=args.max_iter, cv=5, sharpness=None
    )
    t_cv = best_time(lambda: path_cv.fit(X, y), args.repeat)
    best = path_cv.best_params_
    print(
        f"    SAMKernelRegressorCV, same rhos, every step  {t_cv:8.3f} s   "
        f"best rho={best['rho']:.3g} at {best['max_iter']} steps"
    )
    print(f"    ratio SAMKernelRegressorCV / KernelRidge grid {t_cv / t_krr:8.2f}x")


def naive_loop(K, y, *, solver, lr, rho, max_iter, in_place):
    """The rule on alpha with two products K v per step (one for 'gd')."""
    import numpy as np

    from sksam._update_rules import perturbation_scale

    n = K.shape[0]
    alpha, K_alpha = np.zeros(n), np.zeros(n)
    for _ in range(max_iter):
        r = (K_alpha if in_place else K @ alpha) - y
        if solver == "gd":
            step = (lr / n) * r
        else:
            K_r = K @ r
            c = perturbation_scale(solver, rho, np.sqrt(max(r @ K_r, 0.0)) / n)
            step = (lr / n) * (r + (c / n) * K_r)
        alpha = alpha - step
        if in_place:
            K_alpha = K_alpha - K @ step
    return alpha


def exact_spectral_sam(lam, U, y, *, lr, rho, max_iter):
    """SAM in K's full eigenbasis (dense eigh), residual components updated by
    their factors, so none is floored at eps |y|: the exact-arithmetic path."""
    import numpy as np

    from sksam._update_rules import perturbation_scale

    n = len(y)
    z = U.T @ y
    a, r = np.zeros(n), -z
    for _ in range(max_iter):
        c = perturbation_scale("sam", rho, np.sqrt(max(lam @ r**2, 0.0)) / n)
        d = (lr / n) * (1 + c * lam / n)
        a, r = a - d * r, r * (1 - lam * d)
    return U @ a


def bench_accuracy(args, X, y, model):
    import numpy as np

    from sksam import SAMKernelRegressor

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    def line(label, a, b):
        print(f"    {label:<44} dual_coef_ {rel(a, b):.1e}   fitted values {rel(K @ a, K @ b):.1e}")

    K = model._get_kernel(X)
    lr = model.learning_rate_
    settings = dict(lr=lr, rho=args.rho, max_iter=args.max_iter)
    start = time.perf_counter()
    lam, U = np.linalg.eigh(K)
    t_eigh = time.perf_counter() - start
    exact = exact_spectral_sam(lam, U, y, **settings)
    start = time.perf_counter()
    naive = naive_loop(K, y, solver="sam", in_place=True, **settings)
    t_naive = time.perf_counter() - start
    naive_other = naive_loop(K, y, solver="sam", in_place=False, **settings)
    print(
        f"(c) accuracy at n={args.n}, learning_rate='auto', max_iter={args.max_iter} "
        f"(numpy eigh {t_eigh:.1f} s, naive SAM loop {t_naive:.1f} s)"
    )
    print(f"    solver='sam', rho={args.rho}:")
    line("Krylov vs exact spectral path (dense eigh)", model.dual_coef_, exact)
    line("Krylov vs naive loop", model.dual_coef_, naive)
    line("naive loop vs exact spectral path", naive, exact)
    line("naive loop vs naive loop (other order)", naive_other, naive)
    gd = SAMKernelRegressor(solver="gd", max_iter=args.max_iter, early_stopping=False).fit(X, y)
    naive_gd = naive_loop(K, y, solver="gd", in_place=False, **settings)
    print(f"    solver='gd' (Krylov basis {gd.krylov_size_} columns):")
    line("Krylov vs naive loop", gd.dual_coef_, naive_gd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--n-grid", type=int, default=2000)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
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
