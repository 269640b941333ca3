"""The two-layer estimators at their defaults: they learn, or they say why not.

Regression tests for fits that used to end silently useless: the classifier
at the regressor's defaults stopped on the plateau around its near-zero
initialization after 12 iterations on digits (test accuracy 0.16), and SAM
with a large ``rho`` stayed at the zero function, a saddle, predicting one
class (or, for the regressor, its mean) without a word.
"""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksam import SAMTwoLayerClassifier, SAMTwoLayerRegressor
from sksam.datasets import make_teacher_student


def _digits(noise=0.4, seed=0):
    """Digits scaled to [0, 1]; ``noise`` of the training labels replaced by random classes."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, random_state=0)
    rng = np.random.RandomState(seed)
    noisy = rng.rand(len(y_train)) < noise
    y_train = y_train.copy()
    y_train[noisy] = rng.randint(0, 10, noisy.sum())
    return X_train, X_test, y_train, y_test


def _silent_fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return estimator.fit(X, y)


# --------------------------------------------------------------------------
# the classifier's defaults
# --------------------------------------------------------------------------


def test_classifier_defaults_learn_digits_and_sam_differs_from_gd():
    # at the regressor's step and scale (learning_rate=0.05, init_scale=0.1)
    # both solvers stopped after 12 iterations at test accuracy 0.16-0.21
    X_train, X_test, y_train, y_test = _digits()
    gd = _silent_fit(SAMTwoLayerClassifier(solver="gd", random_state=0), X_train, y_train)
    sam = _silent_fit(SAMTwoLayerClassifier(random_state=0), X_train, y_train)
    # LogisticRegression: 0.893, MLPClassifier(random_state=0): 0.889; SAM is
    # the more accurate here (0.924 against 0.896), but that order depends on
    # where the stopping rule ends each fit, so only the difference is pinned
    for clf in (gd, sam):
        assert clf.score(X_test, y_test) > 0.88
    assert sam.sharpness_ < 0.9 * gd.sharpness_
    assert np.mean(sam.predict(X_test) != gd.predict(X_test)) > 0.02


def test_classifier_defaults_learn_clean_data_silently():
    X_train, X_test, y_train, y_test = _digits(noise=0.0)
    clf = _silent_fit(SAMTwoLayerClassifier(random_state=0), X_train, y_train)
    assert clf.score(X_test, y_test) > 0.96  # MLPClassifier: 0.971, LogisticRegression 0.960
    for load in (load_iris, load_breast_cancer):
        X, y = load(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
        scaler = StandardScaler().fit(X_train)
        clf = _silent_fit(SAMTwoLayerClassifier(random_state=0), scaler.transform(X_train), y_train)
        assert clf.score(scaler.transform(X_test), y_test) > 0.94


# --------------------------------------------------------------------------
# loud, never silent
# --------------------------------------------------------------------------


def test_stop_on_the_initial_plateau_warns_naming_learning_rate():
    X_train, _, y_train, _ = _digits()
    clf = SAMTwoLayerClassifier(solver="gd", init_scale=0.1, learning_rate=0.05, random_state=0)
    with pytest.warns(ConvergenceWarning) as record:
        clf.fit(X_train, y_train)
    assert clf.n_iter_ == 12
    assert len(record) == 1  # the single class it predicts is not said twice
    message = str(record[0].message)
    assert message.startswith(
        "SAMTwoLayerClassifier: the stopping rule ended training at iteration 12 on the "
        "plateau around the initialization"
    )
    assert "learning_rate=0.05 is too small to leave the plateau" in message
    assert "set tol=None" in message
    assert record[0].filename == __file__


def test_sam_at_the_zero_function_saddle_warns_naming_rho():
    # rho=0.2 holds a network started at init_scale=0.1 at the zero function:
    # one class predicted after 19 iterations (test accuracy 0.107), while
    # gradient descent from the same start learns
    X_train, _, y_train, _ = _digits()
    clf = SAMTwoLayerClassifier(rho=0.2, init_scale=0.1, random_state=0)
    match = (
        r"rho=0\.2 is too large for this initialization \(init_scale=0\.1\), so SAM's "
        r"perturbation holds the network at the zero function, a saddle"
    )
    with pytest.warns(ConvergenceWarning, match=match):
        clf.fit(X_train, y_train)
    assert np.unique(clf.predict(X_train)).size == 1


def test_early_stopping_at_the_zero_function_saddle_names_rho():
    # with early stopping the plateau message advised n_iter_no_change even when
    # SAM's rho held the network at the saddle (gradient descent from there learns)
    X, y = make_teacher_student(n_samples=200, random_state=0)
    reg = SAMTwoLayerRegressor(
        n_hidden=20, rho=0.5, early_stopping=True, random_state=0, sharpness=None
    )
    with pytest.warns(ConvergenceWarning, match=r"sat on the plateau.*rho=0\.5 is too large"):
        reg.fit(X, y)


def test_single_class_without_the_stopping_rule_warns():
    X_train, _, y_train, _ = _digits()
    clf = SAMTwoLayerClassifier(rho=0.5, init_scale=0.1, tol=None, max_iter=100, random_state=0)
    with pytest.warns(ConvergenceWarning) as record:
        clf.fit(X_train, y_train)
    message = str(record[0].message)
    assert message.startswith(
        "SAMTwoLayerClassifier: the fitted network predicts a single class on training "
        "data of 10 classes."
    )
    assert "rho=0.5 is too large" in message
    # at a small step gradient descent from the same start is stuck too: the
    # step is named, not rho
    slow = clf.set_params(learning_rate=0.05, max_iter=200)
    with pytest.warns(ConvergenceWarning, match="learning_rate=0.05 is too small .* max_iter=200"):
        slow.fit(X_train, y_train)


@pytest.mark.parametrize("n_hidden", [20, 100])
def test_regressor_at_the_zero_function_saddle_warns_naming_rho(n_hidden):
    # rho=0.5 at the defaults: the fit learns the output intercept only and
    # stops after ~40 iterations with training R^2 below 0.03, silently
    X, y = make_teacher_student(n_samples=200, random_state=0)
    reg = SAMTwoLayerRegressor(n_hidden=n_hidden, rho=0.5, random_state=0, sharpness=None)
    with pytest.warns(ConvergenceWarning, match=r"rho=0\.5 is too large .* a saddle"):
        reg.fit(X, y)
    assert reg.score(X, y) < 0.05
    gd = _silent_fit(reg.set_params(solver="gd"), X, y)
    assert gd.score(X, y) > 0.8


def test_warm_start_after_a_good_fit_does_not_warn():
    # the plateau is measured against a constant's loss, not the call's start
    X, y = make_teacher_student(n_samples=200, random_state=0)
    reg = _silent_fit(SAMTwoLayerRegressor(n_hidden=20, random_state=0, sharpness=None), X, y)
    _silent_fit(reg.set_params(warm_start=True), X, y)
    assert reg.n_iter_ > 0 and reg.score(X, y) > 0.8
