"""Speed of SAMTwoLayerRegressor/Classifier, side by side with what users would otherwise run.

Four ratios, measured in one run on the same data (full batch, one thread):

1. a SAM step over a GD step of :class:`sksam.SAMTwoLayerRegressor`
   (two gradients per step are the floor: target <= 2.05);
2. a GD step over a step of scikit-learn's
   ``MLPRegressor(solver='sgd', batch_size=n)`` with the same width, plain
   gradient descent (``momentum=0``) and no shuffling (which would only
   slow scikit-learn down): target <= 1.0;
3. computing ``sharpness_`` at the default settings (top Hessian
   eigenvalue by Lanczos) over the fit it follows, at the estimator's
   default settings: target <= 0.10;
4. a GD step of :class:`sksam.SAMTwoLayerClassifier` (softmax cross-entropy,
   ``--classes`` classes cut from the same targets by quantiles) over a step
   of ``MLPClassifier(solver='sgd', batch_size=n)``, set up as in 2:
   target <= 1.0.

Each timing is the best (the least disturbed, as :mod:`timeit` advises) of
``--repeats`` runs, interleaved so that a change in machine load hits every
side alike; medians are printed too.

Run::

    python benchmarks/bench_two_layer.py            # n=2000, d=20, 256 units

Timings taken on a shared machine vary from run to run; the ratios, measured
side by side, are what to compare.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from sksam import SAMTwoLayerClassifier, SAMTwoLayerRegressor
from sksam._two_layer_model import TrainingData
from sksam.datasets import make_teacher_student


def _time(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _sksam(solver, args, estimator=SAMTwoLayerRegressor, **params):
    return estimator(
        solver=solver,
        rho=0.05,
        n_hidden=args.hidden,
        max_iter=args.steps,
        tol=0.0,
        sharpness=None,
        random_state=0,
        n_threads=args.threads,
        **params,
    )


def _mlp(args, n, estimator=MLPRegressor):
    return estimator(
        hidden_layer_sizes=(args.hidden,),
        solver="sgd",
        batch_size=n,
        learning_rate_init=0.05,
        momentum=0.0,
        shuffle=False,
        max_iter=args.steps,
        tol=0.0,
        n_iter_no_change=args.steps + 1,
        random_state=0,
    )


def _sharpness_share(X, y):
    """Seconds of a default fit (without sharpness) and of its sharpness_."""
    reg = SAMTwoLayerRegressor(random_state=0, sharpness=None, n_threads=torch.get_num_threads())
    fit_time, _ = _time(lambda: reg.fit(X, y))
    params = [
        torch.as_tensor(v, dtype=torch.float32)
        for v in [reg.coefs_[0], reg.intercepts_[0], reg.coefs_[1], reg.intercepts_[1]]
    ]
    data = TrainingData(X, y.reshape(len(y), -1), None, "cpu")
    reg.set_params(sharpness="top_eigenvalue")  # the default
    sharp_time, value = _time(lambda: reg._measure_sharpness(params, data, check_random_state(0)))
    return fit_time, sharp_time, value, reg.n_iter_


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classes", type=int, default=3, help="classes of the classifier")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.quick:
        args.n_samples, args.hidden, args.steps, args.repeats = 100, 16, 5, 1
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS too, for scikit-learn's side
    warnings.simplefilter("ignore", ConvergenceWarning)

    X, y = make_teacher_student(
        n_samples=args.n_samples, n_features=args.n_features, random_state=0
    )
    n = args.n_samples
    labels = np.searchsorted(np.quantile(y, np.linspace(0, 1, args.classes + 1)[1:-1]), y)
    X32 = X.astype(np.float32)
    _sksam("sam", args).fit(X, y)  # warm-up: imports, allocator, thread pool
    _sksam("gd", args, SAMTwoLayerClassifier).fit(X, labels)
    times = {k: [] for k in ["gd", "sam", "mlp", "fit", "sharpness", "clf_gd", "mlp_clf"]}
    for _ in range(args.repeats):
        times["gd"].append(_time(lambda: _sksam("gd", args).fit(X, y))[0] / args.steps)
        times["sam"].append(_time(lambda: _sksam("sam", args).fit(X, y))[0] / args.steps)
        times["mlp"].append(_time(lambda: _mlp(args, n).fit(X, y))[0] / args.steps)
        classifier = _sksam("gd", args, SAMTwoLayerClassifier)
        times["clf_gd"].append(_time(lambda: classifier.fit(X, labels))[0] / args.steps)
        mlp_clf = _mlp(args, n, MLPClassifier)
        times["mlp_clf"].append(_time(lambda: mlp_clf.fit(X, labels))[0] / args.steps)
        fit_time, sharp_time, value, n_iter = _sharpness_share(X32, y)
        times["fit"].append(fit_time)
        times["sharpness"].append(sharp_time)
    med = {k: min(v) for k, v in times.items()}
    mid = {k: statistics.median(v) for k, v in times.items()}

    print(
        f"n={n} d={args.n_features} hidden={args.hidden} full batch, "
        f"{args.steps} steps per timed fit, best of {args.repeats}, "
        f"threads={torch.get_num_threads()} (torch and BLAS)"
    )
    print(f"sksam GD step        {1e3 * med['gd']:8.3f} ms")
    print(f"sksam SAM step       {1e3 * med['sam']:8.3f} ms")
    print(f"MLPRegressor step    {1e3 * med['mlp']:8.3f} ms  (sgd, batch_size=n, momentum=0)")
    print(f"classifier GD step   {1e3 * med['clf_gd']:8.3f} ms  ({args.classes} classes)")
    print(f"MLPClassifier step   {1e3 * med['mlp_clf']:8.3f} ms  (sgd, batch_size=n, momentum=0)")
    print(f"default fit          {med['fit']:8.3f} s   ({n_iter} iterations, solver='sam')")
    print(f"sharpness_ (default) {med['sharpness']:8.3f} s   (top eigenvalue {value:.4f})")
    for label, num, den, target in [
        ("SAM step / GD step         ", "sam", "gd", "2.05"),
        ("GD step / MLPRegressor step", "gd", "mlp", "1.0"),
        ("sharpness_ / fit           ", "sharpness", "fit", "0.10"),
        ("GD step / MLPClassifier step", "clf_gd", "mlp_clf", "1.0"),
    ]:
        print(
            f"ratio {label} = {med[num] / med[den]:.3f}  (target <= {target}; "
            f"ratio of medians {mid[num] / mid[den]:.3f})"
        )


if __name__ == "__main__":
    main()
