"""Calibration of ``compare_solvers``' corrected t-test with real fits.

Two measurements on many independent data sets drawn from one fixed
teacher-student distribution (a ReLU teacher of 4 units in 5 dimensions,
label noise 0.5), each compared by ``compare_solvers`` on 5-fold CV repeated
twice (10 paired differences):

* **type-I error** -- GD against GD with another initialization (an
  unseeded ``random_state``): the two are the same random algorithm, so the
  true mean difference is 0 and the test at ``alpha`` should reject in a
  fraction ``alpha`` of the data sets;
* **coverage** -- SAM (``rho`` fixed) against GD: the true gain, the expected
  difference of test MSE between the two trained on ``n_train`` points, is
  estimated by Monte Carlo on fresh training sets and a large fresh test
  set; the 95% corrected interval should cover it in 95% of the data sets.

The score is the negative MSE (unbiased for the expected MSE, unlike R^2
on a small test part). Run it and read the two lines::

    python benchmarks/calibration_compare.py                 # ~10 min on one core
    python benchmarks/calibration_compare.py --datasets 400  # tighter estimates

Measured with ``--datasets 100 --truth-draws 200`` (one core)::

    type-I error at alpha=0.05: 0.010 +/- 0.010 (100 data sets, GD vs GD with another init)
    coverage of the 95% interval: 0.960 +/- 0.020 (SAM rho=0.2 vs GD, true gain in -MSE
    -0.0209 +/- 0.0012; 100 data sets)

The test is conservative here (the correction assumes a correlation between
splits of ``n_test / n``, larger than these networks' seems to be); the
interval covers at its nominal rate.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import RepeatedKFold

from sksam import SAMTwoLayerRegressor
from sksam.model_selection import compare_solvers


def _teacher(n_features, n_units, seed=0):
    w = np.random.default_rng(seed).standard_normal((n_features, n_units))
    return w / np.linalg.norm(w, axis=0)


def _draw(teacher, n, rng, noise):
    X = rng.standard_normal((n, teacher.shape[0]))
    f = np.maximum(X @ teacher, 0).sum(axis=1)
    return X, f + noise * rng.standard_normal(n)


def _model(args, **params):
    return SAMTwoLayerRegressor(
        n_hidden=args.hidden,
        learning_rate=0.05,
        max_iter=args.steps,
        tol=None,
        sharpness=None,
        **params,
    )


def _type_one_error(args, teacher, rng):
    pvalues = []
    for i in range(args.datasets):
        X, y = _draw(teacher, args.n, rng, args.noise)
        result = compare_solvers(
            _model(args, solver="gd"),
            X,
            y,
            solvers=["gd", ("gd, other init", {"solver": "gd", "random_state": None})],
            cv=RepeatedKFold(n_splits=5, n_repeats=2, random_state=i),
            scoring="neg_mean_squared_error",
            random_state=i,
        )
        pvalues.append(result.pvalue[0])
    return np.asarray(pvalues)


def _true_gain(args, teacher, rng, n_train):
    """E[MSE_gd - MSE_sam] at n_train points, by Monte Carlo (fresh sets)."""
    X_test, y_test = _draw(teacher, 20000, rng, args.noise)
    gains = []
    for i in range(args.truth_draws):
        X, y = _draw(teacher, n_train, rng, args.noise)
        mse = [
            np.mean(
                (
                    _model(args, solver=s, rho=args.rho, random_state=i).fit(X, y).predict(X_test)
                    - y_test
                )
                ** 2
            )
            for s in ("gd", "sam")
        ]
        gains.append(mse[0] - mse[1])  # negative MSE of sam minus that of gd
    return float(np.mean(gains)), float(np.std(gains, ddof=1) / np.sqrt(len(gains)))


def _coverage(args, teacher, rng, gain):
    covered = []
    for i in range(args.datasets):
        X, y = _draw(teacher, args.n, rng, args.noise)
        result = compare_solvers(
            _model(args),
            X,
            y,
            solvers=["gd", "sam"],
            param_grid={"rho": [args.rho]},
            cv=RepeatedKFold(n_splits=5, n_repeats=2, random_state=i),
            scoring="neg_mean_squared_error",
            random_state=i,
        )
        low, high = result.confidence_interval()[0]
        covered.append(low <= gain <= high)
    return np.asarray(covered)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=150)
    parser.add_argument("--n", type=int, default=100, help="points per data set")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rho", type=float, default=0.2)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--truth-draws", type=int, default=300)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    teacher = _teacher(5, 4)
    rng = np.random.default_rng(12345)

    start = time.perf_counter()
    pvalues = _type_one_error(args, teacher, rng)
    rate = np.mean(pvalues < args.alpha)
    se = np.sqrt(rate * (1 - rate) / len(pvalues))
    print(
        f"type-I error at alpha={args.alpha}: {rate:.3f} +/- {se:.3f} "
        f"({len(pvalues)} data sets, GD vs GD with another init; "
        f"{time.perf_counter() - start:.0f} s)"
    )

    start = time.perf_counter()
    gain, gain_se = _true_gain(args, teacher, rng, n_train=args.n * 4 // 5)
    covered = _coverage(args, teacher, rng, gain)
    rate = covered.mean()
    se = np.sqrt(rate * (1 - rate) / len(covered))
    print(
        f"coverage of the 95% interval: {rate:.3f} +/- {se:.3f} "
        f"(SAM rho={args.rho} vs GD, true gain in -MSE {gain:+.4f} +/- {gain_se:.4f}; "
        f"{len(covered)} data sets; {time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
