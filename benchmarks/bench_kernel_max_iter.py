"""How many steps does SAMKernelRegressor need to match Nystroem+Ridge and KernelRidge?

The default ``max_iter`` of :class:`sksam.SAMKernelRegressor` should reach the
accuracy a user compares against at default settings. For each ``n`` in
``--sizes`` (the data of ``bench_kernel_scale.py``: d=20, RBF with
``gamma=1/d``, noise 0.5) this script fits one path of ``--longest`` steps
(``learning_rate='auto'``) and reads the test RMSE after every step from
:meth:`~sksam.SAMKernelRegressor.staged_predict` (one fit gives them all),
side by side with ``Nystroem + Ridge`` (``alpha`` in ``--alphas``) on the same
centres count and, for ``n <= --exact-max``, the exact path and
``KernelRidge``. It also times fits with ``max_iter`` in ``--steps``: the
path's cost grows slowly with the number of steps (the Krylov basis grows as
``sqrt(max_iter)``; the data are read once).

Timings were taken on a busy shared machine: compare ratios within one run.

Run: ``python benchmarks/bench_kernel_max_iter.py [--quick]``.
"""

import argparse
import time

import numpy as np


def make_data(n, d, seed=0):
    """Smooth target of a few features plus noise, standard normal inputs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * rng.standard_normal(n)
    return X, y


def rmse(pred, y):
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def path_rmse(model, X_test, y_test, steps):
    """Test RMSE after each step in ``steps`` (one pass of staged_predict)."""
    wanted, out = set(steps), {}
    for t, pred in enumerate(model.staged_predict(X_test), start=1):
        if t in wanted:
            out[t] = rmse(pred, y_test)
    return out


def run_size(n, args):
    from sklearn.kernel_approximation import Nystroem
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    from sksam import SAMKernelRegressor

    gamma = 1.0 / args.d
    X, y = make_data(n, args.d)
    X_test, y_test = make_data(args.n_test, args.d, seed=1)
    steps = sorted(set(args.steps) | {args.longest})
    print(f"\nn={n}, d={args.d}, M={args.components}, solver={args.solver}, rho={args.rho}")
    configs = [("Nystroem", {"n_components": args.components, "random_state": 0})]
    if n <= args.exact_max:
        configs.append(("exact", {}))
    for name, params in configs:
        # the path of every step on all the rows (early_stopping='auto' would hold
        # out 10% and keep one iterate): the curve staged_predict reads
        common = dict(
            solver=args.solver,
            rho=args.rho,
            gamma=gamma,
            sharpness=None,
            early_stopping=False,
            **params,
        )
        model, t_long = timed(
            lambda: SAMKernelRegressor(max_iter=args.longest, **common).fit(X, y)  # noqa: B023
        )
        curve = path_rmse(model, X_test, y_test, steps)
        best = min(curve.values())
        print(f"  sksam {name}: path of {args.longest} steps (Krylov {model.krylov_size_})")
        print(f"    {'max_iter':>9} {'test RMSE':>10} {'fit s':>8}")
        for t in steps:
            fit_s = ""
            if t in args.steps:
                _, seconds = timed(
                    lambda: SAMKernelRegressor(max_iter=t, **common).fit(X, y)  # noqa: B023
                )
                fit_s = f"{seconds:8.2f}"
            print(f"    {t:>9} {curve[t]:>10.4f} {fit_s:>8}")
        print(f"    best along the path {best:.4f}; fit of {args.longest} steps {t_long:.2f} s")
        if name == "Nystroem":
            for alpha in args.alphas:
                ridge, seconds = timed(
                    lambda: make_pipeline(  # noqa: B023
                        Nystroem(gamma=gamma, n_components=args.components, random_state=0),
                        Ridge(alpha=alpha),  # noqa: B023
                    ).fit(X, y)
                )
                print(
                    f"  Nystroem+Ridge(alpha={alpha:g}): RMSE "
                    f"{rmse(ridge.predict(X_test), y_test):.4f}, fit {seconds:.2f} s"
                )
        else:
            for alpha in args.alphas:
                kr, seconds = timed(
                    lambda: KernelRidge(kernel="rbf", gamma=gamma, alpha=alpha).fit(X, y)  # noqa: B023
                )
                print(
                    f"  KernelRidge(alpha={alpha:g}): RMSE "
                    f"{rmse(kr.predict(X_test), y_test):.4f}, fit {seconds:.2f} s"
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 50000, 200000])
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--solver", default="sam")
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--longest", type=int, default=20000)
    parser.add_argument("--steps", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1.0])
    parser.add_argument("--exact-max", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.components, args.longest = [3000], 200, 5000
        args.steps = [500, 1000, 2000]
    print("timings on a busy shared machine: compare ratios within one run")
    for n in args.sizes:
        run_size(n, args)


if __name__ == "__main__":
    main()
