"""The kernel estimator's parts used without the estimator: build -> solve -> finish."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from sksam import SAMKernelRegressor
from sksam._kernel_features import make_ops
from sksam._kernel_models import (
    ExactDual,
    InMemoryRows,
    KernelFunction,
    LinearPrimal,
    NystroemFeatures,
    R2Score,
)
from sksam._kernel_path import (
    PathResult,
    PathSettings,
    StoppingCriterion,
    resolve_learning_rate,
    solve_path,
)


def _data(n=80, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.2 * rng.standard_normal(n)
    return X, y


class _RowsOnlyR2:
    """A score without the moments shortcut, as a classifier's accuracy would be."""

    def scorer(self, Y, w=None):
        return R2Score().scorer(Y, w)


def _models(kernel):
    source = InMemoryRows(make_ops(None, None))
    return {
        "exact": ExactDual(kernel),
        "nystroem": NystroemFeatures(kernel, source, 20, None, 0),
        "linear": LinearPrimal(KernelFunction("linear"), source),
    }


@pytest.mark.parametrize("name", ["exact", "nystroem", "linear"])
def test_the_parts_alone_give_the_estimators_fit(name):
    X, y = _data()
    Y, sw = y[:, None], np.ones(len(y))
    train, val = np.arange(64), np.arange(64, 80)
    params = {"n_components": 20, "random_state": 0} if name == "nystroem" else {}
    kernel = "linear" if name == "linear" else "rbf"
    estimator = SAMKernelRegressor(rho=0.1, max_iter=40, kernel=kernel, **params)
    estimator.fit(X[train], y[train])
    for split_val in (None, val):
        model = _models(KernelFunction("rbf"))[name]
        problem = model.build(X, Y, sw, train, split_val, R2Score())
        lr = resolve_learning_rate("auto", "sam", 0.1, problem.s_max)
        settings = PathSettings("sam", 0.1, lr, 40)
        result = solve_path(problem, settings, StoppingCriterion(None, 10))
        assert isinstance(result, PathResult) and result.n_iter == 40
        model.finish(result, result.coef, one_output=True)
        if split_val is None:  # the last iterate: the estimator's
            pred = model.features(X) @ (model.basis @ result.coef)
            assert_allclose(pred[:, 0], estimator.predict(X), rtol=1e-9, atol=1e-12)
        else:  # the validation score of every step, and the best iterate kept
            stages = estimator.staged_predict(X[val])
            expected = [R2Score().rows(p[:, None], Y[val]) for p in stages]
            assert_allclose(result.validation_scores, expected, rtol=1e-8, atol=1e-10)
            assert result.best_validation_score == max(result.validation_scores)
            assert len(result.scales) == 1 + int(np.argmax(result.validation_scores))


@pytest.mark.parametrize("name", ["exact", "nystroem", "linear"])
def test_a_score_without_moments_scores_validation_rows(name):
    # the feature models fall back on the validation rows' features: same scores
    X, y = _data()
    Y, sw = y[:, None], np.ones(len(y))
    train, val = np.arange(60), np.arange(60, 80)
    scores = []
    for metric in (R2Score(), _RowsOnlyR2()):
        model = _models(KernelFunction("rbf"))[name]
        problem = model.build(X, Y, sw, train, val, metric)
        lr = resolve_learning_rate("auto", "gd", 0.0, problem.s_max)
        settings = PathSettings("gd", 0.0, lr, 30)
        scores.append(solve_path(problem, settings, StoppingCriterion(None, 10)).validation_scores)
    assert_allclose(scores[1], scores[0], rtol=1e-9, atol=1e-12)


def test_the_stopping_rule_is_an_object_handed_in():
    X, y = _data()
    model = ExactDual(KernelFunction("rbf"))
    problem = model.build(X, y[:, None], np.ones(len(y)), np.arange(len(y)), None, R2Score())
    lr = resolve_learning_rate("auto", "gd", 0.0, problem.s_max)
    settings = PathSettings("gd", 0.0, lr, 5000)
    free = solve_path(problem, settings, StoppingCriterion(None, 10))
    stopped = solve_path(problem, settings, StoppingCriterion(1e-4, 3))
    assert free.n_iter == 5000 and not free.stopped
    assert stopped.stopped and stopped.n_iter < 5000
    estimator = SAMKernelRegressor(solver="gd", max_iter=5000, tol=1e-4, n_iter_no_change=3)
    assert estimator.fit(X, y).n_iter_ == stopped.n_iter


def test_r2_score_follows_r2_score_bit_for_bit_and_its_constant_target_rule():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    Y, pred, w = rng.standard_normal((12, 2)), rng.standard_normal((12, 2)), rng.uniform(0, 2, 12)
    assert R2Score().rows(pred, Y) == r2_score(Y, pred)
    assert R2Score().rows(pred, Y, w) == r2_score(Y, pred, sample_weight=w)
    # a constant target: 1 for a perfect prediction, else 0 (force_finite=True);
    # before: 1 - ss_res / (rounding of the mean) ~ -1e29 for ten rows of 0.1
    for value in (0.1, -0.7, 3.3, 1e5 + 0.1):
        Y = np.full((10, 1), value)
        assert R2Score().rows(Y + 0.01, Y) == 0.0
        assert R2Score().rows(Y.copy(), Y) == 1.0
        assert R2Score().rows(Y + 0.01, Y, w[:10]) == 0.0
    # a constant output next to a varying one: the mean of 0 and the other's R^2
    Y = np.column_stack([np.full(12, 0.1), rng.standard_normal(12)])
    pred = Y + 0.1 * rng.standard_normal((12, 2))
    assert R2Score().rows(pred, Y) == pytest.approx(r2_score(Y[:, 1], pred[:, 1]) / 2)


@pytest.mark.parametrize("params", [{}, {"n_components": 20}])
def test_early_stopping_scores_a_constant_validation_target_as_r2_score(params):
    # the validation part (and the training part) have the target 0.1: R^2 is
    # 0 at every step (no step predicts 0.1 exactly); before: about -1e29
    X, _ = _data(100)
    model = SAMKernelRegressor(early_stopping=True, max_iter=30, random_state=0, **params)
    model.fit(X, np.full(100, 0.1))
    assert model.validation_scores_ == [0.0] * 30
    assert model.best_validation_score_ == 0.0
