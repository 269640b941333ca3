"""SAMKernelClassifier(CV): the regressor's path on +-1-coded classes."""

import pickle
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksam import SAMKernelClassifier, SAMKernelClassifierCV, SAMKernelRegressor
from sksam._base import validation_split
from sksam._kernel_models import AccuracyScore


def _data(n=90, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    score = X[:, 0] + 0.5 * np.sin(2 * X[:, 1]) + 0.3 * rng.standard_normal(n)
    edges = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    return X, np.digitize(score, edges)


def _coded(y):
    return LabelBinarizer(neg_label=-1, pos_label=1).fit_transform(y).astype(float)


_MODES = [
    {},
    {"n_components": 25, "random_state": 0},
    {"kernel": "linear"},
    {"kernel": "poly", "degree": 2, "rho": 0.01},
]


# --------------------------------------------------------------------------
# equations first: the regressor on the coded targets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("params", _MODES)
@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
def test_decision_function_is_the_regressor_on_the_coded_classes(n_classes, params, solver):
    X, y = _data(n_classes=n_classes)
    common = dict(solver=solver, max_iter=60, sharpness="rho", **params)
    clf = SAMKernelClassifier(**common).fit(X, y)
    reg = SAMKernelRegressor(**common).fit(X, _coded(y))
    scores = clf.decision_function(X)
    expected = reg.predict(X)
    if n_classes == 2:  # one column, positive for classes_[1]
        assert scores.shape == (len(X),) and expected.shape == (len(X), 1)
        expected = expected[:, 0]
    assert_array_equal(scores, expected)
    assert clf.sharpness_ == reg.sharpness_
    assert clf.loss_curve_ == reg.loss_curve_
    winners = (scores > 0).astype(int) if n_classes == 2 else scores.argmax(axis=1)
    assert_array_equal(clf.predict(X), clf.classes_[winners])


def test_two_classes_have_one_column_like_ridge_classifier():
    X, y = _data(n_classes=2)
    exact = SAMKernelClassifier(max_iter=20).fit(X, y)
    assert exact.dual_coef_.shape == (len(X), 1)
    linear = SAMKernelClassifier(kernel="linear", max_iter=20).fit(X, y)
    assert linear.coef_.shape == (1, X.shape[1])  # as RidgeClassifier.coef_
    assert linear.decision_function(X).shape == (len(X),)
    three = SAMKernelClassifier(kernel="linear", max_iter=20).fit(*_data(n_classes=3))
    assert three.coef_.shape == (3, X.shape[1])


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["b", "a", "c"]),
        np.array([2.0, -1.0, 7.0]),  # integral floats (others are continuous targets)
        np.array([10, 3, 5]),
        np.array(["x", "y", "z"], dtype=object),
    ],
)
def test_classes_of_any_sortable_type(labels):
    X, y = _data()
    ref = SAMKernelClassifier(max_iter=30).fit(X, y)
    y_labels = labels[y]
    clf = SAMKernelClassifier(max_iter=30).fit(X, y_labels)
    assert_array_equal(clf.classes_, np.sort(labels))
    # the columns follow the sorted labels (the block Krylov basis sees them in
    # another order: equal up to rounding)
    order = np.argsort(np.argsort(labels))  # column of each integer class
    assert_allclose(
        clf.decision_function(X)[:, order], ref.decision_function(X), rtol=1e-9, atol=1e-12
    )
    assert_array_equal(clf.predict(X), labels[ref.predict(X)])
    assert clf.predict(X).dtype == clf.classes_.dtype


def test_precomputed_kernel_is_the_rbf_fit():
    from sklearn.metrics.pairwise import rbf_kernel

    X, y = _data()
    X_test = X[:15] + 0.1
    rbf = SAMKernelClassifier(gamma=0.5, max_iter=30).fit(X, y)
    pre = SAMKernelClassifier(kernel="precomputed", max_iter=30)
    pre.fit(rbf_kernel(X, gamma=0.5), y)
    assert_allclose(
        pre.decision_function(rbf_kernel(X_test, X, gamma=0.5)),
        rbf.decision_function(X_test),
        rtol=1e-10,
        atol=1e-12,
    )


def test_staged_outputs_end_at_the_fitted_model():
    X, y = _data()
    clf = SAMKernelClassifier(max_iter=25).fit(X, y)
    scores = list(clf.staged_decision_function(X))
    labels = list(clf.staged_predict(X))
    assert len(scores) == len(labels) == clf.n_iter_ == 25
    assert_allclose(scores[-1], clf.decision_function(X), rtol=1e-12, atol=1e-14)
    assert_array_equal(labels[-1], clf.predict(X))
    shorter = SAMKernelClassifier(max_iter=7).fit(X, y)
    assert_allclose(scores[6], shorter.decision_function(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("class_weight", ["balanced", {0: 3.0, 1: 0.5, 2: 1.0}])
@pytest.mark.parametrize("params", _MODES[:3])
def test_class_weight_multiplies_the_sample_weights(class_weight, params):
    X, y = _data()
    sw = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    clf = SAMKernelClassifier(class_weight=class_weight, max_iter=40, **params)
    clf.fit(X, y, sample_weight=sw)
    weights = sw * compute_sample_weight(class_weight, y)
    ref = SAMKernelClassifier(max_iter=40, **params).fit(X, y, sample_weight=weights)
    assert_array_equal(clf.decision_function(X), ref.decision_function(X))
    unweighted = SAMKernelClassifier(max_iter=40, **params).fit(X, y)
    assert not np.allclose(clf.decision_function(X), unweighted.decision_function(X))


def test_balanced_class_weight_lifts_the_minority_class():
    X, y = _data(n=200, n_classes=2)
    keep = (y == 0) | (np.arange(len(y)) % 6 == 0)  # class 1 becomes rare
    X, y = X[keep], y[keep]
    plain = SAMKernelClassifier(gamma=0.5, max_iter=200).fit(X, y)
    balanced = SAMKernelClassifier(gamma=0.5, max_iter=200, class_weight="balanced").fit(X, y)
    assert np.mean(balanced.predict(X) == 1) > np.mean(plain.predict(X) == 1)


@pytest.mark.parametrize("params", _MODES[:3])
def test_early_stopping_keeps_the_best_validation_accuracy(params):
    X, y = _data(n=120)
    params = {**params, "random_state": 0}
    clf = SAMKernelClassifier(
        max_iter=150, early_stopping=True, validation_fraction=0.25, **params
    ).fit(X, y)
    train, val = validation_split(len(y), 0.25, check_random_state(0), stratify=y)
    # stratified: the validation rows keep the class proportions
    assert_array_equal(np.bincount(y[val]), [10, 10, 10])
    accuracy = np.mean(clf.predict(X[val]) == y[val])
    assert clf.best_validation_score_ == pytest.approx(accuracy, abs=1e-12)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    first_best = int(np.argmax(clf.validation_scores_))
    assert clf.n_iter_ == 150
    stages = list(clf.staged_predict(X[val]))
    assert len(stages) == first_best + 1  # the model kept is the first best step
    # the training part alone, stopped at that step, is the same model
    ref = SAMKernelClassifier(max_iter=first_best + 1, **params).fit(X[train], y[train])
    assert_allclose(clf.decision_function(X), ref.decision_function(X), rtol=1e-8, atol=1e-10)


def test_accuracy_score_object_against_sklearn():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    pred = rng.standard_normal((40, 3))
    w = rng.uniform(0, 2, 40)
    got = AccuracyScore().rows(pred, _coded(y), w)
    assert got == pytest.approx(accuracy_score(y, pred.argmax(1), sample_weight=w), rel=1e-14)
    # unit weights: the fraction of correct rows exactly (1.0, not 0.9999999999999999)
    Y7 = _coded(y[:7])  # sum(ones(7) / 7) is 0.9999999999999999
    assert AccuracyScore().rows(Y7, Y7) == 1.0
    assert AccuracyScore().rows(pred, _coded(y)) == np.mean(pred.argmax(1) == y)
    y2 = rng.integers(0, 2, 40)
    got = AccuracyScore().rows(pred[:, :1], _coded(y2))
    assert got == pytest.approx(accuracy_score(y2, pred[:, 0] > 0), rel=1e-14)


def test_rho_zero_sam_takes_gd_steps():
    X, y = _data()
    gd = SAMKernelClassifier(solver="gd", max_iter=40).fit(X, y)
    for solver in ("sam", "usam"):
        same = SAMKernelClassifier(solver=solver, rho=0.0, max_iter=40).fit(X, y)
        assert_allclose(same.decision_function(X), gd.decision_function(X), rtol=1e-12)


@pytest.mark.parametrize("measure", ["average", "adaptive_rho", "adaptive_average"])
def test_new_sharpness_measures_are_the_regressors_on_the_codes(measure):
    X, y = _data(n=40)
    clf = SAMKernelClassifier(max_iter=30, sharpness=measure).fit(X, y)
    reg = SAMKernelRegressor(max_iter=30, sharpness=measure).fit(X, _coded(y))
    assert clf.sharpness_ == pytest.approx(reg.sharpness_, rel=1e-12)


# --------------------------------------------------------------------------
# back ends: torch, dask
# --------------------------------------------------------------------------


def test_torch_cpu_equals_numpy():
    pytest.importorskip("torch")
    X, y = _data()
    common = dict(n_components=20, random_state=0, max_iter=40)
    ref = SAMKernelClassifier(**common).fit(X, y)
    on_torch = SAMKernelClassifier(device="cpu", **common).fit(X, y)
    assert_allclose(on_torch.decision_function(X), ref.decision_function(X), rtol=1e-9)
    assert_array_equal(on_torch.predict(X), ref.predict(X))


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 20, "random_state": 0},
        {"kernel": "linear"},
        {"n_components": 20, "random_state": 0, "early_stopping": True},
    ],
)
def test_dask_equals_numpy(params):
    dask = pytest.importorskip("dask")
    import dask.array as da

    X, y = _data()
    labels = np.array(["lo", "mid", "hi"])[y]
    with dask.config.set(scheduler="synchronous"):
        ref = SAMKernelClassifier(max_iter=40, **params).fit(X, labels)
        lazy = SAMKernelClassifier(max_iter=40, **params)
        lazy.fit(da.from_array(X, chunks=(25, 3)), da.from_array(labels, chunks=25))
        assert_allclose(lazy.decision_function(X), ref.decision_function(X), rtol=1e-10)
        predicted = lazy.predict(da.from_array(X, chunks=(20, 3)))
        assert_array_equal(predicted.compute(), ref.predict(X))
    if params.get("early_stopping"):
        assert_allclose(lazy.validation_scores_, ref.validation_scores_, rtol=1e-12)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, y, match",
    [
        ({}, np.zeros(20), "needs samples of at least 2 classes.*only one class: 0.0"),
        ({}, np.linspace(0, 1, 20), "Unknown label type"),
        ({"sharpness": "adaptive_rho_logitnorm"}, None, r"'sharpness' parameter.*Got"),
        ({"class_weight": "even"}, None, "'class_weight' parameter"),
    ],
)
def test_errors_are_named(params, y, match):
    X, y_ok = _data(n=20)
    with pytest.raises(ValueError, match=match):
        SAMKernelClassifier(max_iter=5, **params).fit(X, y_ok if y is None else y)


@pytest.mark.parametrize("weight", [-1, np.inf, -np.inf, np.nan, "heavy"])
@pytest.mark.parametrize("estimator", [SAMKernelClassifier, SAMKernelClassifierCV])
def test_a_bad_class_weight_is_named_with_its_class(estimator, weight):
    # before: -1 and nan were reported as "The sample weights of the training (or
    # validation) part sum to 0", inf as numpy's "array must not contain infs or NaNs"
    X, y = _data(n=20)
    match = rf"class_weight gives class 0 the weight {re.escape(repr(weight))}.*finite"
    with pytest.raises(ValueError, match=match):
        estimator(max_iter=5, class_weight={0: weight, 1: 1.0}).fit(X, y)


def test_a_failed_refit_leaves_the_earlier_fit():
    X, y = _data()
    clf = SAMKernelClassifier(max_iter=20).fit(X, y)
    scores, classes = clf.decision_function(X), clf.classes_
    with pytest.raises(ValueError, match="only one class"):
        clf.fit(X[:10], np.zeros(10))
    assert_array_equal(clf.decision_function(X), scores)
    assert_array_equal(clf.classes_, classes)


def test_predict_before_fit_is_not_fitted():
    with pytest.raises(NotFittedError):
        SAMKernelClassifier().predict(np.ones((2, 3)))
    with pytest.raises(NotFittedError):
        SAMKernelClassifierCV().predict(np.ones((2, 3)))


# --------------------------------------------------------------------------
# scikit-learn's tools
# --------------------------------------------------------------------------


def test_pickle_round_trip():
    X, y = _data()
    clf = SAMKernelClassifier(n_components=20, random_state=0, max_iter=30).fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.sharpness_ == clf.sharpness_
    search = SAMKernelClassifierCV(rhos=[0.1], max_iter=10, cv=3).fit(X, y)
    assert_array_equal(pickle.loads(pickle.dumps(search)).predict(X), search.predict(X))


def test_pipeline_and_grid_search_over_rho_with_a_classification_scorer():
    X, y = _data(n=120)
    pipe = make_pipeline(StandardScaler(), SAMKernelClassifier(max_iter=50))
    search = GridSearchCV(
        pipe,
        {"samkernelclassifier__rho": [0.0, 0.05, 0.5]},
        scoring="balanced_accuracy",
        cv=StratifiedKFold(3),
    ).fit(X, y)
    assert search.best_params_["samkernelclassifier__rho"] in (0.0, 0.05, 0.5)
    assert search.best_score_ > 0.6
    assert search.predict(X).shape == (120,)
    assert search.best_estimator_[-1].sharpness_ >= 0


def test_clone_keeps_parameters_only():
    X, y = _data(n=30)
    clf = SAMKernelClassifier(class_weight="balanced", max_iter=5).fit(X, y)
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params()
    assert not hasattr(fresh, "classes_")


# --------------------------------------------------------------------------
# the CV twin
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_components", [None, 15])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_cv_choice_and_scores_equal_grid_search(n_components, class_weight):
    X, y = _data(n=75)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    common = dict(gamma=0.5, n_components=n_components, random_state=0, class_weight=class_weight)
    search = SAMKernelClassifierCV(
        solvers=["gd", "sam"], rhos=[0.05, 0.5], max_iter=12, cv=cv, selection="best", **common
    ).fit(X, y)
    grid = GridSearchCV(
        SAMKernelClassifier(sharpness=None, **common),
        {"solver": ["gd", "sam"], "rho": [0.05, 0.5], "max_iter": list(range(1, 13))},
        cv=cv,
        scoring="accuracy",
    ).fit(X, y)
    assert search.best_params_ == grid.best_params_
    assert search.best_score_ == grid.best_score_
    assert search.cv_results_["params"] == grid.cv_results_["params"]
    for key in ("mean_test_score", "std_test_score", "split0_test_score", "split2_test_score"):
        assert_allclose(search.cv_results_[key], grid.cv_results_[key], rtol=1e-12)
    assert (search.cv_results_["rank_test_score"] == grid.cv_results_["rank_test_score"]).all()
    assert_array_equal(search.predict(X), grid.best_estimator_.predict(X))
    assert_allclose(
        search.decision_function(X), grid.best_estimator_.decision_function(X), rtol=1e-10
    )
    assert_array_equal(search.classes_, np.unique(y))
    assert search.score(X, y) == grid.score(X, y)


@pytest.mark.filterwarnings("ignore::sksam.exceptions.DivergenceWarning")
@pytest.mark.parametrize(
    "n, common",
    [
        (300, {"gamma": 0.5}),  # the Krylov basis, three class columns
        (300, {"gamma": 0.5, "class_weight": "balanced"}),
        (90, {"n_components": 25, "random_state": 0}),
    ],
)
def test_cv_shared_fold_build_gives_each_paths_own_fit(n, common):
    # the CV twin fits a fold's (solver, rho) paths on one build: each path's
    # outputs at every step are its own fit's (rho=4 scales the codes by 4)
    from sksam.kernel import SharedBuild

    X, y = _data(n=n)
    train, test = next(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    shared = SharedBuild()
    for solver, rho in [("gd", 0.0), ("sam", 0.05), ("sam", 4.0), ("usam", 0.5)]:
        params = dict(solver=solver, rho=rho, max_iter=25, early_stopping=False, **common)
        on_shared = SAMKernelClassifier(**params)
        on_shared._fit(X[train], y[train], None, shared=shared)
        alone = SAMKernelClassifier(**params).fit(X[train], y[train])
        for a, b in zip(
            on_shared.staged_decision_function(X[test]), alone.staged_decision_function(X[test])
        ):
            assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
        assert on_shared.krylov_size_ == alone.krylov_size_
    assert shared.n_builds == 1


def test_cv_sample_weight_reaches_the_fits():
    X, y = _data()
    w = np.random.default_rng(0).integers(1, 3, size=len(y)).astype(float)
    search = SAMKernelClassifierCV(rhos=[0.1], max_iter=10, cv=3).fit(X, y, sample_weight=w)
    direct = SAMKernelClassifier(
        solver=search.solver_, rho=search.rho_, max_iter=search.n_iter_
    ).fit(X, y, sample_weight=w)
    assert_array_equal(search.decision_function(X), direct.decision_function(X))


# --------------------------------------------------------------------------
# scikit-learn's estimator checks
# --------------------------------------------------------------------------


#: Why the checks' class-weight test fails: the model has no intercept.
_NO_INTERCEPT = (
    "the model has no intercept (as the regressor and KernelRidge): away from the "
    "training rows every output decays to 0 (rbf) or follows a line through the "
    "origin (linear), where the check's class weights {0: 1000, others: 1e-4} cannot "
    "favour class 0; on its unscaled blobs (cluster_std=20) 40-50% of the test rows "
    "are predicted 0 where the check asks for 87%. RidgeClassifier passes through "
    "its intercept"
)


def _expected_failures(estimator):
    failures = {"check_class_weight_classifiers": _NO_INTERCEPT}
    # early_stopping='auto' is off on the checks' small data sets
    if not isinstance(estimator, SAMKernelClassifierCV) and estimator.early_stopping is True:
        reason = (
            "the validation split draws rows: repeated rows can fall on both sides of "
            "it, while a weighted row is on one side (as in MLPClassifier)"
        )
        failures["check_sample_weight_equivalence_on_dense_data"] = reason
        failures["check_sample_weight_equivalence_on_sparse_data"] = reason
    return failures


@parametrize_with_checks(
    [
        SAMKernelClassifier(max_iter=50),
        SAMKernelClassifier(
            solver="gd", max_iter=50, early_stopping=True, validation_fraction=0.2, random_state=0
        ),
        SAMKernelClassifier(max_iter=200, n_components=40, random_state=0),
        SAMKernelClassifier(kernel="linear", solver="gd", max_iter=50),
        SAMKernelClassifierCV(rhos=[0.1], max_iter=10, cv=2),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.filterwarnings("ignore", "n_components=40 is larger", UserWarning)
        check(estimator)
