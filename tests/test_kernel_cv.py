"""SAMKernelRegressorCV: the same choice as GridSearchCV over the same grid."""

import warnings

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneOut
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksam import SAMKernelRegressor, SAMKernelRegressorCV


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = np.sin(2 * X[:, 0]) + 0.8 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize("n_components", [None, 15])
def test_best_choice_and_scores_equal_grid_search(n_components):
    X, y = _data()
    cv = KFold(3, shuffle=True, random_state=0)
    common = dict(gamma=2.0, n_components=n_components, random_state=0)
    search = SAMKernelRegressorCV(
        solvers=["gd", "sam"], rhos=[0.05, 0.5], max_iter=10, cv=cv, selection="best", **common
    ).fit(X, y)
    grid = GridSearchCV(
        SAMKernelRegressor(sharpness=None, **common),
        {"solver": ["gd", "sam"], "rho": [0.05, 0.5], "max_iter": list(range(1, 11))},
        cv=cv,
    ).fit(X, y)
    assert search.best_params_ == grid.best_params_
    assert search.best_score_ == pytest.approx(grid.best_score_, rel=1e-9)
    assert search.cv_results_["params"] == grid.cv_results_["params"]
    assert_allclose(
        search.cv_results_["mean_test_score"], grid.cv_results_["mean_test_score"], rtol=1e-8
    )
    assert_allclose(
        search.cv_results_["split2_test_score"], grid.cv_results_["split2_test_score"], rtol=1e-8
    )
    assert list(search.cv_results_["param_solver"]) == list(grid.cv_results_["param_solver"])
    assert (search.cv_results_["rank_test_score"] == grid.cv_results_["rank_test_score"]).all()
    assert_allclose(search.predict(X), grid.best_estimator_.predict(X), rtol=1e-10)
    assert search.n_iter_ == grid.best_params_["max_iter"] == search.estimator_.n_iter_


def test_parallel_fits_equal_sequential():
    X, y = _data()
    one = SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=3).fit(X, y)
    with joblib.parallel_config(backend="threading"):  # no process start-up in the test
        two = SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=3, n_jobs=2).fit(X, y)
    assert_allclose(two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"])


def test_sample_weight_reaches_the_fits():
    X, y = _data()
    w = np.random.default_rng(0).integers(1, 3, size=60).astype(float)
    search = SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=3).fit(X, y, sample_weight=w)
    direct = SAMKernelRegressor(
        solver=search.solver_, rho=search.rho_, max_iter=search.n_iter_
    ).fit(X, y, sample_weight=w)
    assert_allclose(search.predict(X), direct.predict(X), rtol=1e-12)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solvers": ["adam"]}, "solvers must be a non-empty list"),
        ({"solvers": []}, "solvers must be a non-empty list"),
        ({"rhos": [-0.1]}, "rhos must be a non-empty list of finite floats"),
        ({"max_iter": 0}, "'max_iter' parameter"),
    ],
)
def test_bad_grids_are_named(params, match):
    X, y = _data(n=20)
    with pytest.raises(ValueError, match=match):
        SAMKernelRegressorCV(**params).fit(X, y)


def _expected_failures(estimator):
    reason = (
        "the folds split rows: repeated rows can fall in several folds, a weighted "
        "row in one (as in GridSearchCV)"
    )
    return {
        "check_sample_weight_equivalence_on_dense_data": reason,
        "check_sample_weight_equivalence_on_sparse_data": reason,
    }


@parametrize_with_checks(
    [SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=2, selection="best")],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("cv", [LeaveOneOut(), 12, 7])
def test_a_test_fold_of_one_sample_is_an_error(cv):
    # R^2 of one sample is undefined (GridSearchCV scores it NaN); the path's
    # R^2 read 0 there and picked max_iter=1 with best_score_=0.0, silently
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=12)
    with pytest.raises(ValueError, match="test fold of 1 sample; R\\^2 needs at least 2"):
        SAMKernelRegressorCV(max_iter=5, cv=cv).fit(
            X[: 8 if cv == 7 else 12], y[: 8 if cv == 7 else 12]
        )


def _constant_first_fold(n=30, seed=0):
    """Rows whose first third (KFold(3)'s first test fold) has the target -0.7."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(n)
    y[: n // 3] = -0.7  # r2_score's mean of ten -0.7 is exact; ten (1 / 10) * -0.7 summed is not
    return X, y


def test_a_constant_test_fold_scores_as_r2_score_and_grid_search():
    # before: the fold's total sum of squares was the rounding of its mean (~1e-32),
    # its R^2 about -3e31, and the search chose max_iter=1 where GridSearchCV
    # (r2_score: 0 for an imperfect prediction of a constant target) chose 26
    X, y = _constant_first_fold()
    grid_params = {"solver": ["gd", "sam"], "rho": [0.05], "max_iter": list(range(1, 31))}
    search = SAMKernelRegressorCV(
        solvers=["gd", "sam"], rhos=[0.05], max_iter=30, cv=3, selection="best"
    )
    search.fit(X, y)
    grid = GridSearchCV(SAMKernelRegressor(sharpness=None, early_stopping=False), grid_params, cv=3)
    grid.fit(X, y)
    assert_allclose(search.cv_results_["split0_test_score"], 0.0)
    assert_allclose(grid.cv_results_["split0_test_score"], 0.0)
    assert search.best_params_ == grid.best_params_
    assert search.n_iter_ > 1
    assert_allclose(
        search.cv_results_["mean_test_score"], grid.cv_results_["mean_test_score"], rtol=1e-8
    )


# ------------------------------------------------- one build per fold, shared


def _separate_fits_split_scores(search, X, y, folds, common):
    """``split{k}_test_score`` from one SAMKernelRegressor fit per fold and (solver, rho)."""
    split = np.empty((len(folds), len(search.cv_results_["params"])))
    for k, (train, test) in enumerate(folds):
        paths = {}
        for i, p in enumerate(search.cv_results_["params"]):
            key = (p["solver"], 0.0 if p["solver"] == "gd" else p["rho"])
            if key not in paths:
                model = SAMKernelRegressor(
                    solver=key[0],
                    rho=key[1],
                    max_iter=search.max_iter,
                    early_stopping=False,
                    sharpness=None,
                    **common,
                ).fit(X[train], y[train])
                paths[key] = [
                    search._stage_score(pred, y[test]) for pred in model.staged_predict(X[test])
                ]
            split[k, i] = paths[key][p["max_iter"] - 1]
    return split


@pytest.mark.parametrize(
    "n, y_factor, common",
    [
        (300, 1.0, {"gamma": 0.5}),  # the Krylov basis (n_train = 200)
        (300, 0.01, {"gamma": 0.5}),  # y scaled differently per rho (rho > |y|)
        (60, 1.0, {"gamma": 2.0}),  # one dense eigh (small n_train)
        (120, 0.01, {"gamma": 1.0, "n_components": 20, "random_state": 0}),  # Nystroem
        (120, 1.0, {"kernel": "linear"}),  # the primal linear path
    ],
)
@pytest.mark.filterwarnings("ignore::sksam.exceptions.DivergenceWarning")
def test_shared_fold_build_equals_separate_fits_per_rho(n, y_factor, common):
    # one build per fold for every (solver, rho) path gives each path's own fit;
    # rho = 1 on y of 1e-2 bounces (the loss rises): a path sensitive to rounding
    X, y = _data(n=n)
    y = y * y_factor
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    search = SAMKernelRegressorCV(
        solvers=["gd", "sam", "usam"],
        rhos=[0.01, 0.3, 1.0],
        max_iter=40,
        cv=folds,
        selection="best",
        **common,
    ).fit(X, y)
    expected = _separate_fits_split_scores(search, X, y, folds, common)
    for k in range(len(folds)):
        assert_allclose(search.cv_results_[f"split{k}_test_score"], expected[k], rtol=1e-10)
    best = int(np.argmax(expected.mean(axis=0)))
    assert search.best_params_ == search.cv_results_["params"][best]
    p = search.best_params_
    refit = SAMKernelRegressor(
        solver=p["solver"], rho=p["rho"], max_iter=p["max_iter"], early_stopping=False, **common
    ).fit(X, y)
    assert_allclose(search.predict(X), refit.predict(X), rtol=1e-10)


@pytest.mark.parametrize(
    "n, common, route",
    [
        (300, {"gamma": 0.5}, "krylov"),
        (60, {"gamma": 2.0}, "eigh"),
        (120, {"gamma": 1.0, "n_components": 20, "random_state": 0}, "eigh"),
    ],
)
def test_one_build_and_one_basis_per_fold_whatever_the_grid(monkeypatch, n, common, route):
    # the kernel matrix (or A, b) and the Krylov basis or eigendecomposition of a
    # fold depend on neither the solver nor rho: built once per fold, plus the refit
    from sksam import _kernel_models, _kernel_path

    counts = {"build": 0, "krylov": 0, "eigh": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for cls in (_kernel_models.ExactDual, _kernel_models._FeatureSpace):
        monkeypatch.setattr(cls, "build", counting("build", cls.build))
    monkeypatch.setattr(
        _kernel_path.KrylovBasis, "__init__", counting("krylov", _kernel_path.KrylovBasis.__init__)
    )
    original_eigh = _kernel_path.symmetric_eigh

    def counting_eigh(M, *, driver="evd"):
        counts["eigh"] += driver == "evd"  # the eigendecomposition of the matrix itself
        return original_eigh(M, driver=driver)

    monkeypatch.setattr(_kernel_path, "symmetric_eigh", counting_eigh)
    X, y = _data(n=n)
    n_folds = 3
    SAMKernelRegressorCV(
        solvers=["gd", "sam", "usam"],
        rhos=[0.01, 0.1, 0.3, 1.0],
        max_iter=30,
        cv=n_folds,
        sharpness=None,
        **common,
    ).fit(X, y)
    # 9 paths per fold: before, each built its own model and basis
    assert counts["build"] == n_folds + 1
    assert counts[route] == n_folds + 1
    assert counts["krylov" if route == "eigh" else "eigh"] == 0
