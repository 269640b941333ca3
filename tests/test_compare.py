"""compare_solvers: paired outer splits, nested inner searches, joblib/Dask, the kernel paths."""

import warnings

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksam import (
    SAMKernelClassifier,
    SAMKernelRegressor,
    SAMKernelRegressorCV,
    SAMTwoLayerRegressor,
)
from sksam.model_selection import compare_solvers, corrected_paired_ttest


def _regression(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = np.sin(2 * X[:, 0]) + 0.3 * rng.standard_normal(n)
    return X, y


def _two_layer(**kwargs):
    params = dict(n_hidden=8, max_iter=30, tol=None, batch_size=16, sharpness=None)
    return SAMTwoLayerRegressor(**(params | kwargs))


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_same_split_seed_and_batches_for_every_solver():
    # two labels for the same solver: if splits, initialization or mini-batch
    # order differed between solvers, their scores would differ
    X, y = _regression()
    result = compare_solvers(
        _two_layer(random_state=None),
        X,
        y,
        solvers=["gd", ("gd again", {"solver": "gd"})],
        cv=KFold(3, shuffle=True, random_state=0),
        random_state=0,
    )
    assert_array_equal(result.differences("gd again"), 0.0)
    assert result.pvalue[0] == 1.0 and result.verdict("gd again") == "equivalent"
    # while each split got its own seed: the scores are not one fit repeated
    assert len(set(result.scores[:, 0])) == 3


def test_scores_are_outer_test_scores_of_the_tuned_model():
    # one (split, solver) record rebuilt by hand: an inner GridSearchCV on the
    # outer training part with the seed compare_solvers drew for that split,
    # refit, score on the outer test part
    X, y = _regression()
    cv = KFold(3, shuffle=True, random_state=1)
    result = compare_solvers(
        _two_layer(),
        X,
        y,
        solvers=["gd", "sam"],
        param_grid={"rho": [0.01, 0.3]},
        cv=cv,
        random_state=3,
    )
    train, test = next(cv.split(X, y))
    seed = int(np.random.RandomState(3).randint(np.iinfo(np.int32).max, size=3)[0])
    search = GridSearchCV(
        _two_layer(solver="sam", random_state=seed), {"rho": [0.01, 0.3]}, cv=3
    ).fit(X[train], y[train])
    assert result.chosen_params("sam")[0] == search.best_params_
    assert result.chosen_params("gd")[0] == {}
    assert result.scores[0, 1] == pytest.approx(search.score(X[test], y[test]), rel=1e-12)
    assert result.n_train[0] == len(train) and result.n_test[0] == len(test)
    expected = corrected_paired_ttest(result.differences("sam"), result.n_train, result.n_test)
    assert_allclose(result.statistic, [expected.statistic])
    assert_allclose(result.pvalue, [expected.pvalue])


def test_a_pipeline_sets_the_solver_by_its_step_name_and_runs_under_threads():
    X, y = _regression()
    pipe = make_pipeline(StandardScaler(), _two_layer(random_state=0))
    kwargs = dict(solvers=["gd", "sam"], param_grid={"rho": [0.05]}, cv=3, random_state=0)
    serial = compare_solvers(pipe, X, y, **kwargs)
    with joblib.parallel_config(backend="threading"):
        threaded = compare_solvers(pipe, X, y, n_jobs=2, **kwargs)
    assert_array_equal(serial.scores, threaded.scores)
    assert serial.chosen_params("sam")[0] == {"rho": 0.05}
    assert not np.allclose(serial.scores[:, 0], serial.scores[:, 1])


def test_runs_on_a_local_dask_cluster():
    distributed = pytest.importorskip("distributed")
    X, y = _regression(n=40)
    kwargs = dict(solvers=["gd", "sam"], param_grid={"rho": [0.05]}, cv=2, random_state=0)
    local = compare_solvers(SAMKernelRegressor(max_iter=20), X, y, **kwargs)
    # a threaded cluster in this process: in-process transport (no port opened),
    # no dashboard; the fits still go through the scheduler
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            with joblib.parallel_config(backend="dask"):
                remote = compare_solvers(SAMKernelRegressor(max_iter=20), X, y, n_jobs=-1, **kwargs)
    assert len(tasks.data) >= 1  # the fits ran on the cluster
    assert_allclose(remote.scores, local.scores, rtol=1e-12)


@pytest.mark.parametrize("max_iter", [20, 80])
def test_kernel_paths_fit_once_per_inner_fold_and_rho_whatever_the_steps(monkeypatch, max_iter):
    # the kernel's inner search is its CV twin: every number of steps of a
    # path is scored from one fit; a GridSearchCV over (rho, max_iter) would
    # fit inner_folds * n_rhos * max_iter models
    # (the CV twin runs a fold's paths through _fit, on the fold's shared
    # build; the refit goes through fit, which calls _fit)
    calls = []
    original = SAMKernelRegressor._fit

    def counting_fit(self, *args, **kwargs):
        calls.append(self.solver)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SAMKernelRegressor, "_fit", counting_fit)
    X, y = _regression()
    result = compare_solvers(
        SAMKernelRegressor(max_iter=max_iter),
        X,
        y,
        param_grid={"rho": [0.05, 0.2, 0.5]},
        cv=2,
        inner_cv=3,
    )
    # per outer split: GD 3 inner paths + 1 refit, SAM 3 x 3 paths + 1 refit
    assert calls.count("gd") == 2 * (3 + 1)
    assert calls.count("sam") == 2 * (3 * 3 + 1)
    for params in result.chosen_params("sam"):
        assert params["rho"] in (0.05, 0.2, 0.5) and 1 <= params["max_iter"] <= max_iter
    assert set(result.chosen_params("gd")[0]) == {"max_iter"}
    assert np.all(result.sharpness > 0)


def test_kernel_search_matches_the_cv_twin_on_the_outer_training_part():
    X, y = _regression()
    cv = ShuffleSplit(2, test_size=0.25, random_state=0)
    result = compare_solvers(
        make_pipeline(StandardScaler(), SAMKernelRegressor(max_iter=30)),
        X,
        y,
        param_grid={"rho": [0.1, 0.5]},
        cv=cv,
        inner_cv=3,
    )
    train, test = next(cv.split(X))
    twin = make_pipeline(
        StandardScaler(),
        SAMKernelRegressorCV(solvers=["sam"], rhos=[0.1, 0.5], max_iter=30, cv=3, selection="best"),
    ).fit(X[train], y[train])
    assert result.scores[0, 1] == pytest.approx(twin.score(X[test], y[test]), rel=1e-12)
    assert result.chosen_params("sam")[0] == {"max_iter": twin[-1].n_iter_, "rho": twin[-1].rho_}


def test_default_splits_are_repeated_stratified_for_classifiers():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2))
    y = (X[:, 0] + 0.5 * rng.standard_normal(50) > 0).astype(int)
    result = compare_solvers(
        SAMKernelClassifier(max_iter=10), X, y, param_grid={"rho": [0.1]}, random_state=0
    )
    assert len(result.n_train) == 10 and set(result.n_test) == {10}
    assert result.scoring == "accuracy"
    assert result.summary().splitlines()[0].startswith("Paired comparison of 2 solvers on 10")


def test_verbose_shows_progress(capsys):
    X, y = _regression(n=30)
    compare_solvers(
        SAMKernelRegressor(max_iter=5), X, y, param_grid={"rho": [0.1]}, cv=2, verbose=1
    )
    err = capsys.readouterr().err
    assert "compare_solvers" in err or "Done" in err  # tqdm's bar, or joblib's messages


def test_cheap_variants_search_their_period_by_default():
    X, y = _regression(n=40)
    result = compare_solvers(
        _two_layer(max_iter=10), X, y, solvers=["gd", "every_k"], cv=2, inner_cv=2, random_state=0
    )
    for params in result.chosen_params("every_k"):
        assert set(params) == {"rho", "sam_every"} and params["sam_every"] in (2, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solvers=["gd"]), "at least two distinct labels"),
        (dict(solvers=["gd", "gd"]), "at least two distinct labels"),
        (dict(solvers=["gd", 3]), "solver names or \\(label, params\\) pairs"),
        (dict(baseline="usam"), "baseline='usam' is not one of"),
        (dict(param_grid={"rho": [0.1], "max_iter": [5, 10]}), "can search only 'rho'"),
        (dict(param_grid=[{"rho": [0.1]}]), "'param_grid' parameter of compare_solvers must be"),
        (dict(rope=-0.1), "'rope' parameter of compare_solvers must be"),
        (dict(cv=[(np.arange(30), np.arange(30, 40))]), "at least 2"),
    ],
)
def test_errors_name_the_parameter(kwargs, match):
    X, y = _regression(n=40)
    with pytest.raises(ValueError, match=match):
        compare_solvers(SAMKernelRegressor(max_iter=5), X, y, **kwargs)


def test_an_estimator_without_a_solver_is_refused():
    X, y = _regression(n=20)
    with pytest.raises(ValueError, match="final step is Ridge"):
        compare_solvers(make_pipeline(StandardScaler(), Ridge()), X, y)


# --------------------------------------------------------------------------
# the kernel CV estimators' gain and the rule that keeps GD within noise
# --------------------------------------------------------------------------


def test_kernel_cv_keeps_gd_on_diabetes_where_sams_lead_is_negligible():
    X, y = load_diabetes(return_X_y=True)
    params = dict(rhos=[0.1, 0.5], max_iter=300, cv=5)
    best = SAMKernelRegressorCV(selection="best", **params).fit(X, y)
    assert best.solver_ == "sam"  # the old choice: SAM "wins" ...
    assert 0 < best.gain_ < 1e-3  # ... by a negligible margin
    kept = SAMKernelRegressorCV(**params).fit(X, y)  # default rule: rope
    assert kept.solver_ == "gd" and kept.best_params_["solver"] == "gd"
    assert kept.best_score_ == pytest.approx(best.best_score_ - best.gain_, abs=1e-12)
    assert kept.gain_test_.p_equivalent > 0.95
    # the gain and its corrected error are the paired test of the fold scores
    split = np.array([kept.cv_results_[f"split{k}_test_score"] for k in range(5)])
    d = split[:, best.best_index_] - split[:, kept.best_index_]
    test = corrected_paired_ttest(d, [353, 353, 354, 354, 354], [89, 89, 88, 88, 88])
    assert kept.gain_ == pytest.approx(test.statistic, rel=1e-12)
    assert kept.gain_std_error_ == pytest.approx(test.std_error, rel=1e-12)
    assert kept.refit_time_ > 0


def test_kernel_cv_keeps_sam_when_its_gain_is_clear():
    # constructed so that SAM's path is better at every step budget: a tiny
    # max_iter where GD underfits and SAM's larger steps in the top
    # directions fit more
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(120)
    search = SAMKernelRegressorCV(
        rhos=[5.0], max_iter=3, cv=4, gamma=1.0, learning_rate=0.05, selection="one_se"
    ).fit(X, y)
    assert search.gain_ > search.gain_std_error_ > 0
    assert search.solver_ == "sam"
    only_sam = SAMKernelRegressorCV(solvers=["sam"], rhos=[5.0], max_iter=3, cv=4).fit(X, y)
    assert only_sam.gain_ is None and only_sam.gain_test_ is None


def test_a_target_transformer_around_a_pipeline_and_several_contrasts():
    pd = pytest.importorskip("pandas")
    from sklearn.compose import TransformedTargetRegressor

    X, y = _regression()
    X = pd.DataFrame(X, columns=["a", "b", "c"])
    estimator = TransformedTargetRegressor(
        make_pipeline(StandardScaler(), SAMKernelRegressor(max_iter=30)),
        transformer=StandardScaler(),
    )
    result = compare_solvers(
        estimator, X, 100 * y, solvers=["gd", "sam", "usam"], param_grid={"rho": [0.1]}, cv=3
    )
    assert result.contrasts == ["sam", "usam"]
    assert result.confidence_interval().shape == (2, 2)
    assert all(p["rho"] == 0.1 for p in result.chosen_params("usam"))
    assert "max_iter" in result.summary() and len(result.to_frame()) == 9


@pytest.mark.parametrize("selection", ["rope", "one_se", "best"])
def test_kernel_classifier_cv_reports_the_gain_and_applies_the_rule(selection):
    from sklearn.datasets import make_moons

    from sksam import SAMKernelClassifierCV

    X, y = make_moons(90, noise=0.3, random_state=0)
    search = SAMKernelClassifierCV(
        rhos=[0.1, 0.5], gamma=2.0, max_iter=20, cv=3, selection=selection
    ).fit(X, y)
    results = search.cv_results_
    is_gd = np.asarray(results["param_solver"]) == "gd"
    mean = results["mean_test_score"]
    assert search.gain_ == pytest.approx(mean[~is_gd].max() - mean[is_gd].max(), abs=1e-12)
    test = search.gain_test_
    keep_sam = {
        "rope": test.p_better >= 0.95,
        "one_se": test.statistic > test.std_error,
        "best": mean[~is_gd].max() > mean[is_gd].max(),
    }[selection]
    assert search.solver_ == ("sam" if keep_sam else "gd")
    assert search.best_score_ == (mean[~is_gd] if keep_sam else mean[is_gd]).max()


def test_importing_the_comparison_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, sksam.model_selection, sksam._kernel_cv; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
