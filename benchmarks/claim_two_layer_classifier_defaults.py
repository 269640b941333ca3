"""SAMTwoLayerClassifier at its defaults against MLPClassifier and LogisticRegression.

What a newcomer's first fit gives: test accuracy, iterations and
``sharpness_`` of ``SAMTwoLayerClassifier(random_state=seed)`` with
``solver='gd'`` and the default SAM (``rho=0.05``, plus ``rho`` 0.1 and 0.2),
next to ``MLPClassifier(random_state=seed)`` and ``LogisticRegression`` at
their defaults, and, with ``--old``, the classifier at the regressor's step
and scale (``init_scale=0.1, learning_rate=0.05``, its defaults before it had
its own). Data, each split with ``random_state=0``:

* ``digits``: scaled to [0, 1] (``X / 16``);
* ``digits_noisy``: the same with 40 % of the training labels replaced by
  random classes (drawn from ``seed``, which also seeds the networks);
* ``cancer``, ``iris``, ``make_classification(n_samples=1000)``: standardized
  on the training part, split stratified.

A column ``warned`` counts the fits that gave one of sksam's warnings.

This is a measurement, not a test: run it and read the table::

    python benchmarks/claim_two_layer_classifier_defaults.py            # 3 seeds
    python benchmarks/claim_two_layer_classifier_defaults.py --old --datasets digits_noisy
"""

import argparse
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from sksam import SAMTwoLayerClassifier

DATASETS = ("digits", "digits_noisy", "cancer", "iris", "classification")


def load(name, seed):
    """``X_train, X_test, y_train, y_test`` of the dataset ``name``."""
    if name.startswith("digits"):
        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X / 16, y, random_state=0)
        if name == "digits_noisy":
            rng = np.random.RandomState(seed)
            noisy = rng.rand(len(y_train)) < 0.4
            y_train = y_train.copy()
            y_train[noisy] = rng.randint(0, 10, noisy.sum())
        return X_train, X_test, y_train, y_test
    loaders = {
        "cancer": lambda: load_breast_cancer(return_X_y=True),
        "iris": lambda: load_iris(return_X_y=True),
        "classification": lambda: make_classification(n_samples=1000, random_state=0),
    }
    X, y = loaders[name]()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def models(seed, old):
    """``(label, estimator)`` pairs to fit."""
    yield "MLPClassifier()", MLPClassifier(random_state=seed)
    yield "LogisticRegression()", LogisticRegression(max_iter=5000)
    settings = [{}]
    if old:
        settings.append({"init_scale": 0.1, "learning_rate": 0.05})
    for extra in settings:
        tag = " old" if extra else ""
        yield f"gd{tag}", SAMTwoLayerClassifier(solver="gd", random_state=seed, **extra)
        for rho in (0.05, 0.1, 0.2):
            yield (
                f"sam rho={rho}{tag}",
                SAMTwoLayerClassifier(rho=rho, random_state=seed, **extra),
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--old", action="store_true", help="also the regressor's step and scale")
    args = parser.parse_args()
    print(
        f"{'data':15s} {'model':22s} {'test accuracy per seed':28s} {'mean':>6s} "
        f"{'iterations':>14s} {'sharpness':>9s} warned"
    )
    for name in args.datasets.split(","):
        table = {}
        for seed in range(args.seeds):
            X_train, X_test, y_train, y_test = load(name, seed)
            for label, model in models(seed, args.old):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model.fit(X_train, y_train)
                warned = any(str(w.message).startswith("SAM") for w in caught)
                row = table.setdefault(label, {"acc": [], "it": [], "sharp": [], "warned": 0})
                row["acc"].append(model.score(X_test, y_test))
                n_iter = model.n_iter_
                row["it"].append(int(np.max(n_iter)))
                row["sharp"].append(getattr(model, "sharpness_", None) or np.nan)
                row["warned"] += warned
        for label, row in table.items():
            accs = " ".join(f"{a:.3f}" for a in row["acc"])
            its = ",".join(str(i) for i in row["it"])
            sharp = np.array(row["sharp"], dtype=float)
            sharp = np.nan if np.all(np.isnan(sharp)) else np.nanmean(sharp)
            print(
                f"{name:15s} {label:22s} {accs:28s} {np.mean(row['acc']):6.3f} {its:>14s} "
                f"{sharp:9.2f} "
                f"{row['warned']}/{args.seeds}"
            )


if __name__ == "__main__":
    main()
