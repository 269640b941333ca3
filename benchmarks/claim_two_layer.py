"""The paper's claim for one hidden layer, measured: SAM predicts better than GD.

Behdin & Mazumder (arXiv:2302.11836) prove that in a network with one hidden
layer trained on noisy labels, gradient descent fits the noise while SAM does
not, so SAM's prediction error against the noiseless target is clearly lower,
and SAM's solution is flatter. This script checks both on the noisy
teacher-student problem of :func:`sksam.datasets.make_teacher_student`:

* n = 200 training points in d = 10 dimensions, a teacher of 4 ReLU units,
  label noise of standard deviation 0.5;
* a student of 200 ReLU units (``SAMTwoLayerRegressor``, default
  initialization ``init_scale=0.1``), full batch, learning rate 0.05, 4000
  steps, for GD and for SAM;
* SAM's ``rho`` picked on a validation split of the training set (a quarter
  of it, noisy labels), then SAM refitted on all 200 points;
* the prediction error is the mean squared difference to the *noiseless*
  teacher on 2000 fresh test points; ``sharpness_`` is the top Hessian
  eigenvalue of the training loss at the fitted weights.

For reference, two more columns stop early: GD at the step count (a multiple
of 250) that is best on the same validation split, and SAM at the best
(rho, step count) pair, both refitted on all points. Early stopping is GD's
own remedy against fitting noise, so this is the comparison a practitioner
would make.

This is a measurement, not a test: run it and read the table::

    python benchmarks/claim_two_layer.py              # 5 seeds, ~1-2 min
    python benchmarks/claim_two_layer.py --seeds 10
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sksam import SAMTwoLayerRegressor
from sksam.datasets import make_teacher_student

RHOS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def _model(args, seed, **params):
    settings = {
        "n_hidden": args.hidden,
        "learning_rate": args.lr,
        "max_iter": args.steps,
        "tol": 0.0,
        "init_scale": args.init_scale,
        "random_state": seed,
    }
    return SAMTwoLayerRegressor(**{**settings, **params})


def _mse(a, b):
    return float(np.mean((a - b) ** 2))


def _validation_path(args, seed, X_fit, y_fit, X_val, y_val, chunk=250, **params):
    """Validation MSE after every ``chunk`` steps, along one warm-started fit."""
    model = _model(args, seed, max_iter=chunk, warm_start=True, sharpness=None, **params)
    errors = {}
    for steps in range(chunk, args.steps + 1, chunk):
        model.fit(X_fit, y_fit)
        errors[steps] = _mse(model.predict(X_val), y_val)
    return errors


def _one_seed(args, seed):
    X, y, f = make_teacher_student(
        n_samples=args.n_train + args.n_test,
        n_features=args.n_features,
        n_teacher=args.teacher,
        noise=args.noise,
        return_y_true=True,
        random_state=seed,
    )
    X_tr, y_tr = X[: args.n_train], y[: args.n_train]
    X_te, f_te = X[args.n_train :], f[args.n_train :]
    X_fit, X_val, y_fit, y_val = train_test_split(X_tr, y_tr, test_size=0.25, random_state=seed)
    val = (X_fit, y_fit, X_val, y_val)

    # one validation path per candidate: its last point picks rho for the
    # full-length fits, its minimum picks (rho, steps) for early stopping
    paths = {rho: _validation_path(args, seed, *val, solver="sam", rho=rho) for rho in args.rhos}
    gd_path = _validation_path(args, seed, *val, solver="gd")
    rho = min(paths, key=lambda r: paths[r][args.steps])
    es_rho, es_steps = min(
        ((r, k) for r in paths for k in paths[r]), key=lambda rk: paths[rk[0]][rk[1]]
    )
    gd_steps = min(gd_path, key=gd_path.get)

    gd = _model(args, seed, solver="gd").fit(X_tr, y_tr)
    sam = _model(args, seed, solver="sam", rho=rho).fit(X_tr, y_tr)
    gd_es = _model(args, seed, solver="gd", max_iter=gd_steps, sharpness=None).fit(X_tr, y_tr)
    sam_es = _model(args, seed, solver="sam", rho=es_rho, max_iter=es_steps, sharpness=None).fit(
        X_tr, y_tr
    )
    return {
        "seed": seed,
        "rho": rho,
        "gd": _mse(gd.predict(X_te), f_te),
        "sam": _mse(sam.predict(X_te), f_te),
        "gd_es": _mse(gd_es.predict(X_te), f_te),
        "gd_steps": gd_steps,
        "sam_es": _mse(sam_es.predict(X_te), f_te),
        "sam_es_rho": es_rho,
        "sam_es_steps": es_steps,
        "gd_sharp": gd.sharpness_,
        "sam_sharp": sam.sharpness_,
        "gd_train": gd.loss_curve_[-1],
        "sam_train": sam.loss_curve_[-1],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--n-features", type=int, default=10)
    parser.add_argument("--teacher", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--init-scale", type=float, default=0.1)
    parser.add_argument("--rhos", type=float, nargs="+", default=list(RHOS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)  # fixed step counts, on purpose

    print(
        f"teacher-student: n={args.n_train}, d={args.n_features}, teacher {args.teacher} ReLU, "
        f"noise {args.noise}; student {args.hidden} ReLU, init_scale={args.init_scale}, "
        f"full batch, lr={args.lr}, {args.steps} steps; rho from {args.rhos} on a 25% "
        "validation split"
    )
    print("test MSE is against the noiseless teacher on", args.n_test, "fresh points\n")
    header = (
        f"{'seed':>4} {'rho':>5} {'GD MSE':>8} {'SAM MSE':>8} {'SAM/GD':>7} "
        f"{'GD-ES MSE':>9} {'(steps)':>7} {'SAM-ES MSE':>10} {'(rho, steps)':>12} "
        f"{'GD sharp':>9} {'SAM sharp':>9} "
        f"{'GD train':>9} {'SAM train':>9}"
    )
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        r = _one_seed(args, seed)
        rows.append(r)
        print(
            f"{r['seed']:>4} {r['rho']:>5.2f} {r['gd']:>8.4f} {r['sam']:>8.4f} "
            f"{r['sam'] / r['gd']:>7.3f} {r['gd_es']:>9.4f} {r['gd_steps']:>7d} "
            f"{r['sam_es']:>10.4f} {r['sam_es_rho']:>5.2f}, {r['sam_es_steps']:>5d} "
            f"{r['gd_sharp']:>9.3f} {r['sam_sharp']:>9.3f} {r['gd_train']:>9.4f} "
            f"{r['sam_train']:>9.4f}",
            flush=True,
        )
    _summary(rows)
    print(f"\n({time.perf_counter() - start:.0f} s)")


def _summary(rows):
    def col(key):
        return np.array([r[key] for r in rows])

    gd, sam, gd_es, sam_es = col("gd"), col("sam"), col("gd_es"), col("sam_es")
    print("-" * 10)
    for name, values in [
        ("GD", gd),
        ("SAM", sam),
        ("GD early-stopped", gd_es),
        ("SAM early-stopped", sam_es),
    ]:
        print(
            f"{name:<17} test MSE  mean {values.mean():.4f}  "
            f"range [{values.min():.4f}, {values.max():.4f}]"
        )
    print(
        f"SAM below GD on {np.sum(sam < gd)}/{len(rows)} seeds; "
        f"mean relative reduction {np.mean(1 - sam / gd):.1%} "
        f"(range {np.min(1 - sam / gd):.1%} to {np.max(1 - sam / gd):.1%})"
    )
    print(f"SAM below early-stopped GD on {np.sum(sam < gd_es)}/{len(rows)} seeds")
    print(
        f"early-stopped SAM below early-stopped GD on {np.sum(sam_es < gd_es)}/{len(rows)} "
        f"seeds; mean relative reduction {np.mean(1 - sam_es / gd_es):.1%}"
    )
    print(
        f"SAM flatter (smaller top Hessian eigenvalue) on "
        f"{np.sum(col('sam_sharp') < col('gd_sharp'))}/{len(rows)} seeds; mean sharpness "
        f"GD {col('gd_sharp').mean():.3f} vs SAM {col('sam_sharp').mean():.3f}"
    )


if __name__ == "__main__":
    main()
