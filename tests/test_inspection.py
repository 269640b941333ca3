"""Displays: data kept, lines drawn, estimators fitted per solver."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

from sksam.inspection import SolverComparisonDisplay, TrainingCurveDisplay

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


class _ShrinkRegressor(RegressorMixin, BaseEstimator):
    """Predicts a shrunken mean: 'sam' shrinks more, so results differ by solver."""

    def __init__(self, solver="gd", rho=0.1):
        self.solver = solver
        self.rho = rho

    def fit(self, X, y):
        shrink = 1.0 if self.solver == "gd" else 1.0 / (1.0 + self.rho)
        self.mean_ = shrink * np.mean(y)
        self.loss_curve_ = np.geomspace(1.0, 1e-3 * shrink, num=5)
        self.sharpness_ = 2.0 * shrink
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 2)), rng.normal(loc=1.0, size=20)


def test_training_curves_drawn_with_solver_labels(data):
    X, y = data
    fits = [_ShrinkRegressor(solver=s).fit(X, y) for s in ("gd", "sam")]
    display = TrainingCurveDisplay.from_estimators(fits)
    assert [line.get_label() for line in display.lines_] == ["gd", "sam (rho=0.1)"]
    np.testing.assert_array_equal(display.lines_[1].get_ydata(), fits[1].loss_curve_)
    np.testing.assert_array_equal(display.lines_[0].get_xdata(), np.arange(1, 6))
    assert display.ax_.get_yscale() == "log"
    assert display.figure_ is display.ax_.figure


def test_training_curve_needs_fitted_estimator():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TrainingCurveDisplay.from_estimator(_ShrinkRegressor())


def test_solver_comparison_fits_one_clone_per_solver(data):
    X, y = data
    template = _ShrinkRegressor(rho=0.5)
    display = SolverComparisonDisplay.from_estimator(template, X, y, X, y)
    assert not hasattr(template, "mean_")  # the template itself is left unfitted
    assert [e.solver for e in display.estimators_] == ["gd", "sam"]
    expected = [np.mean((y - e.mean_) ** 2) for e in display.estimators_]
    np.testing.assert_allclose(display.test_errors, expected)
    np.testing.assert_allclose(display.sharpness, [2.0, 2.0 / 1.5])
    assert display.error_name == "test MSE"
    assert len(display.axes_) == 2 and len(display.bars_) == 2


def test_missing_sharpness_is_nan(data):
    X, y = data
    display = SolverComparisonDisplay(labels=["gd"], test_errors=[1.0], sharpness=[np.nan]).plot()
    assert np.isnan(display.sharpness[0])
